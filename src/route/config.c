/* config.c - parsing and validating the routing configuration (jansson). */
#include "route/config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "store/usage.h"

static char *dup_s(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Fails unless every key of `o` is in `allowed` (catches typos). */
static hr_status only_keys(json_t *o, const char *where, const char *const *allowed, hr_err *err)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok |= !strcmp(k, *a);
        if (!ok)
            return hr_err_set(err, HR_ERR_FORMAT, "%s: unknown field '%.64s'", where, k);
    }
    return HR_OK;
}

static hr_status get_str(json_t *o, const char *key, const char *where, bool required, const char **out,
                         hr_err *err)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v) {
        if (required)
            return hr_err_set(err, HR_ERR_FORMAT, "%s: missing \"%s\"", where, key);
        return HR_OK;
    }
    if (!json_is_string(v) || !*json_string_value(v) || json_string_length(v) > 1024)
        return hr_err_set(err, HR_ERR_FORMAT, "%s: \"%s\" must be a non-empty string", where, key);
    *out = json_string_value(v);
    return HR_OK;
}

static hr_status get_num(json_t *o, const char *key, const char *where, double lo, double hi, double *out,
                         hr_err *err)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return HR_OK;
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return hr_err_set(err, HR_ERR_FORMAT, "%s: \"%s\" must be a number in [%g, %g]", where, key, lo, hi);
    *out = json_number_value(v);
    return HR_OK;
}

static bool valid_url(const char *u)
{
    if (strncmp(u, "http://", 7) && strncmp(u, "https://", 8))
        return false;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '"' || (unsigned char)*p >= 0x7f)
            return false;
    return strlen(u) > 8;
}

/* True when the URL's authority has userinfo ("user:pass@host"). */
static bool has_userinfo(const char *u)
{
    const char *a = strstr(u, "://");
    a = a ? a + 3 : u;
    size_t n = strcspn(a, "/?#");
    return memchr(a, '@', n) != NULL;
}

static hr_status parse_backend(json_t *o, int idx, hr_backend *b, hr_err *err)
{
    char where[96];
    snprintf(where, sizeof where, "backends[%d]", idx);
    if (!json_is_object(o))
        return hr_err_set(err, HR_ERR_FORMAT, "%s must be an object", where);
    static const char *const keys[] = {"name", "base_url", "api_key_env", "connect_timeout_s",
                                       "first_byte_timeout_s", "timeout_s", "models", "api_key", NULL};
    if (json_object_get(o, "api_key"))
        return hr_err_set(err, HR_ERR_FORMAT,
                          "%s: \"api_key\" is not allowed in the file; name an environment variable with "
                          "\"api_key_env\"", where);
    const char *name, *url, *env;
    if (only_keys(o, where, keys, err) || get_str(o, "name", where, true, &name, err) ||
        get_str(o, "base_url", where, true, &url, err) || get_str(o, "api_key_env", where, false, &env, err))
        return err->status;
    snprintf(where, sizeof where, "backend '%.64s'", name);
    if (!strcmp(name, "local") || !strcmp(name, "self") || strchr(name, '/'))
        return hr_err_set(err, HR_ERR_FORMAT, "%s: the name is reserved or contains '/'", where);
    if (!valid_url(url))
        return hr_err_set(err, HR_ERR_FORMAT, "%s: base_url '%.200s' must be an http:// or https:// URL", where,
                          url);
    if (has_userinfo(url))
        return hr_err_set(err, HR_ERR_FORMAT,
                          "%s: base_url must not carry credentials (user:password@); name an environment "
                          "variable with \"api_key_env\"", where);
    b->name = dup_s(name);
    b->base_url = dup_s(url);
    size_t ul = strlen(b->base_url);
    while (ul > 8 && b->base_url[ul - 1] == '/')
        b->base_url[--ul] = 0;
    b->connect_timeout_s = 5;
    b->first_byte_timeout_s = 30;
    b->timeout_s = 600;
    if (get_num(o, "connect_timeout_s", where, 0.001, 3600, &b->connect_timeout_s, err) ||
        get_num(o, "first_byte_timeout_s", where, 0.001, 86400, &b->first_byte_timeout_s, err) ||
        get_num(o, "timeout_s", where, 0.001, 86400, &b->timeout_s, err))
        return err->status;
    if (env) {
        b->api_key_env = dup_s(env);
        const char *k = getenv(env);
        if (!k || !*k)
            return hr_err_set(err, HR_ERR_INVALID, "%s: environment variable %s (api_key_env) is not set", where,
                              env);
        b->api_key = dup_s(k);
    }
    json_t *models = json_object_get(o, "models");
    if (models) {
        if (!json_is_object(models))
            return hr_err_set(err, HR_ERR_FORMAT, "%s: \"models\" must be an object of model -> prices", where);
        size_t n = json_object_size(models);
        if (n > 256)
            return hr_err_set(err, HR_ERR_LIMIT, "%s: at most 256 models", where);
        b->prices = calloc(n ? n : 1, sizeof *b->prices);
        if (!b->prices)
            return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
        const char *m;
        json_t *p;
        json_object_foreach(models, m, p) {
            char w2[200];
            snprintf(w2, sizeof w2, "%s model '%.64s'", where, m);
            if (!*m || strlen(m) > 200)
                return hr_err_set(err, HR_ERR_FORMAT, "%s: bad model name", where);
            if (!json_is_object(p))
                return hr_err_set(err, HR_ERR_FORMAT, "%s: prices must be an object {input, cached_input, output}",
                                  w2);
            static const char *const pk[] = {"input", "cached_input", "output", NULL};
            hr_price *pr = &b->prices[b->n_prices];
            pr->cached_input = -1;
            if (only_keys(p, w2, pk, err) || get_num(p, "input", w2, 0, 1e6, &pr->input, err) ||
                get_num(p, "cached_input", w2, 0, 1e6, &pr->cached_input, err) ||
                get_num(p, "output", w2, 0, 1e6, &pr->output, err))
                return err->status;
            if (pr->cached_input < 0)
                pr->cached_input = pr->input;
            pr->model = dup_s(m);
            b->n_prices++;
        }
    }
    return HR_OK;
}

static hr_status parse_target(hr_route_config *c, json_t *o, const char *where, hr_target *t, bool weight_ok,
                              hr_err *err)
{
    if (!json_is_object(o))
        return hr_err_set(err, HR_ERR_FORMAT, "%s must be an object {backend, model}", where);
    static const char *const keys[] = {"backend", "model", "weight", "sample", NULL};
    const char *be, *model;
    if (only_keys(o, where, keys, err) || get_str(o, "backend", where, true, &be, err) ||
        get_str(o, "model", where, false, &model, err))
        return err->status;
    if (!strcmp(be, "local")) {
        t->backend = HR_ROUTE_LOCAL;
        c->uses_local = true;
    } else {
        t->backend = hr_route_config_backend(c, be);
        if (t->backend < 0)
            return hr_err_set(err, HR_ERR_FORMAT, "%s: no backend named '%.64s'", where, be);
        if (!model)
            return hr_err_set(err, HR_ERR_FORMAT, "%s: missing \"model\" (the upstream model name)", where);
    }
    t->weight = 1;
    if (get_num(o, "weight", where, 0, 1e6, &t->weight, err))
        return err->status;
    if (json_object_get(o, "weight") && !weight_ok)
        return hr_err_set(err, HR_ERR_FORMAT, "%s: \"weight\" only applies to targets", where);
    t->model = dup_s(model); /* last: a target refused above owns nothing */
    return HR_OK;
}

static hr_status parse_route(hr_route_config *c, json_t *o, int idx, hr_route *r, hr_err *err)
{
    char where[128];
    snprintf(where, sizeof where, "routes[%d]", idx);
    if (!json_is_object(o))
        return hr_err_set(err, HR_ERR_FORMAT, "%s must be an object", where);
    static const char *const keys[] = {"name", "policy", "targets", "shadow", "judge", NULL};
    const char *name, *policy;
    if (only_keys(o, where, keys, err) || get_str(o, "name", where, true, &name, err) ||
        get_str(o, "policy", where, false, &policy, err))
        return err->status;
    snprintf(where, sizeof where, "route '%.64s'", name);
    if (hr_route_config_find(c, name))
        return hr_err_set(err, HR_ERR_FORMAT, "%s: defined twice", where);
    r->name = dup_s(name);
    if (!policy || !strcmp(policy, "priority") || !strcmp(policy, "fallback"))
        r->policy = HR_POLICY_PRIORITY;
    else if (!strcmp(policy, "weighted"))
        r->policy = HR_POLICY_WEIGHTED;
    else if (!strcmp(policy, "least_busy"))
        r->policy = HR_POLICY_LEAST_BUSY;
    else
        return hr_err_set(err, HR_ERR_FORMAT, "%s: policy '%.32s' is not priority, weighted or least_busy", where,
                          policy);
    json_t *ts = json_object_get(o, "targets");
    if (!json_is_array(ts) || json_array_size(ts) == 0)
        return hr_err_set(err, HR_ERR_FORMAT, "%s: \"targets\" must be a non-empty array", where);
    if (json_array_size(ts) > HR_ROUTE_MAX_TARGETS)
        return hr_err_set(err, HR_ERR_LIMIT, "%s: at most %d targets", where, HR_ROUTE_MAX_TARGETS);
    double wsum = 0;
    for (size_t i = 0; i < json_array_size(ts); i++) {
        char w2[160];
        snprintf(w2, sizeof w2, "%s targets[%zu]", where, i);
        if (parse_target(c, json_array_get(ts, i), w2, &r->targets[i], true, err))
            return err->status;
        r->n_targets++;
        wsum += r->targets[i].weight;
    }
    if (r->policy == HR_POLICY_WEIGHTED && !(wsum > 0))
        return hr_err_set(err, HR_ERR_FORMAT, "%s: the weights add up to 0", where);
    json_t *sh = json_object_get(o, "shadow");
    if (sh) {
        char w2[160];
        snprintf(w2, sizeof w2, "%s shadow", where);
        if (parse_target(c, sh, w2, &r->shadow, false, err))
            return err->status;
        r->has_shadow = true;
        r->shadow_sample = 1;
        if (get_num(sh, "sample", w2, 0, 1, &r->shadow_sample, err))
            return err->status;
    }
    json_t *j = json_object_get(o, "judge");
    if (j) {
        char w2[160];
        snprintf(w2, sizeof w2, "%s judge", where);
        static const char *const jk[] = {"route", "sample", NULL};
        const char *jr;
        if (!json_is_object(j))
            return hr_err_set(err, HR_ERR_FORMAT, "%s must be an object {route, sample}", w2);
        if (only_keys(j, w2, jk, err) || get_str(j, "route", w2, true, &jr, err))
            return err->status;
        if (!sh)
            return hr_err_set(err, HR_ERR_FORMAT, "%s: a judge needs a shadow", w2);
        r->judge_route = dup_s(jr);
        r->judge_sample = 1;
        if (get_num(j, "sample", w2, 0, 1, &r->judge_sample, err))
            return err->status;
    }
    return HR_OK;
}

static hr_status parse_budget(json_t *o, int idx, hr_budget_rule *b, hr_err *err)
{
    char where[96];
    snprintf(where, sizeof where, "budgets[%d]", idx);
    if (!json_is_object(o))
        return hr_err_set(err, HR_ERR_FORMAT, "%s must be an object", where);
    static const char *const keys[] = {"key_env", "key_id", "tokens_per_day", "tokens_per_month",
                                       "usd_per_day", "usd_per_month", "default_max_tokens", NULL};
    const char *env, *kid;
    if (only_keys(o, where, keys, err) || get_str(o, "key_env", where, false, &env, err) ||
        get_str(o, "key_id", where, false, &kid, err))
        return err->status;
    if (!env == !kid)
        return hr_err_set(err, HR_ERR_FORMAT, "%s: give exactly one of \"key_env\" and \"key_id\"", where);
    if (env) {
        const char *k = getenv(env);
        if (!k || !*k)
            return hr_err_set(err, HR_ERR_INVALID, "%s: environment variable %s (key_env) is not set", where, env);
        char id[HR_USAGE_KEY_ID_LEN];
        b->key_id = dup_s(hr_usage_key_id(k, id));
        b->label = dup_s(env);
    } else {
        b->key_id = dup_s(kid);
        b->label = dup_s(kid);
    }
    double tpd = 0, tpm = 0, mt = 4096;
    if (get_num(o, "tokens_per_day", where, 0, 9e15, &tpd, err) ||
        get_num(o, "tokens_per_month", where, 0, 9e15, &tpm, err) ||
        get_num(o, "usd_per_day", where, 0, 1e12, &b->usd_per_day, err) ||
        get_num(o, "usd_per_month", where, 0, 1e12, &b->usd_per_month, err) ||
        get_num(o, "default_max_tokens", where, 1, 1 << 24, &mt, err))
        return err->status;
    b->tokens_per_day = (int64_t)tpd;
    b->tokens_per_month = (int64_t)tpm;
    b->default_max_tokens = (int32_t)mt;
    if (!b->tokens_per_day && !b->tokens_per_month && !b->usd_per_day && !b->usd_per_month)
        return hr_err_set(err, HR_ERR_FORMAT, "%s: no limit given (tokens_per_day, tokens_per_month, "
                                               "usd_per_day, usd_per_month)", where);
    return HR_OK;
}

static hr_status add_implicit(hr_route_config *c, const char *name, int backend, const char *model, hr_err *err)
{
    if (hr_route_config_find(c, name))
        return HR_OK;
    if (c->n_routes >= HR_ROUTE_MAX_ROUTES)
        return hr_err_set(err, HR_ERR_LIMIT, "more than %d routes (counting BACKEND/MODEL names)",
                          HR_ROUTE_MAX_ROUTES);
    hr_route *r = &c->routes[c->n_routes++];
    r->name = dup_s(name);
    r->policy = HR_POLICY_PRIORITY;
    r->n_targets = 1;
    r->targets[0] = (hr_target){.backend = backend, .model = dup_s(model), .weight = 1};
    return r->name && r->targets[0].model ? HR_OK : hr_err_set(err, HR_ERR_NOMEM, "out of memory");
}

static hr_status parse_doc(hr_route_config *c, json_t *root, hr_err *err)
{
    if (!json_is_object(root))
        return hr_err_set(err, HR_ERR_FORMAT, "the top level must be an object");
    static const char *const keys[] = {"backends", "routes", "budgets", "shadow_queue", "$schema", "comment",
                                       NULL};
    if (only_keys(root, "config", keys, err))
        return err->status;
    json_t *bs = json_object_get(root, "backends");
    if (bs && !json_is_array(bs))
        return hr_err_set(err, HR_ERR_FORMAT, "\"backends\" must be an array");
    if (json_array_size(bs) > HR_ROUTE_MAX_BACKENDS)
        return hr_err_set(err, HR_ERR_LIMIT, "at most %d backends", HR_ROUTE_MAX_BACKENDS);
    for (size_t i = 0; i < json_array_size(bs); i++) {
        json_t *nm = json_object_get(json_array_get(bs, i), "name");
        if (json_is_string(nm) && hr_route_config_backend(c, json_string_value(nm)) >= 0)
            return hr_err_set(err, HR_ERR_FORMAT, "backend '%.64s' is defined twice", json_string_value(nm));
        hr_status st = parse_backend(json_array_get(bs, i), (int)i, &c->backends[c->n_backends], err);
        c->n_backends++;
        if (st)
            return st;
    }
    json_t *rs = json_object_get(root, "routes");
    if (rs && !json_is_array(rs))
        return hr_err_set(err, HR_ERR_FORMAT, "\"routes\" must be an array");
    if (json_array_size(rs) > HR_ROUTE_MAX_ROUTES)
        return hr_err_set(err, HR_ERR_LIMIT, "at most %d routes", HR_ROUTE_MAX_ROUTES);
    for (size_t i = 0; i < json_array_size(rs); i++) {
        hr_status st = parse_route(c, json_array_get(rs, i), (int)i, &c->routes[c->n_routes], err);
        c->n_routes++;
        if (st)
            return st;
    }
    int n_explicit = c->n_routes;
    c->n_explicit = n_explicit;
    for (int i = 0; i < n_explicit; i++) {
        const hr_route *r = &c->routes[i];
        if (r->judge_route) {
            bool found = false;
            for (int k = 0; k < c->n_backends && !found; k++)
                for (int m = 0; m < c->backends[k].n_prices && !found; m++)
                    found = !strcmp(c->backends[k].prices[m].model, r->judge_route);
            if (!found && !hr_route_config_find(c, r->judge_route) && strchr(r->judge_route, '/') == NULL)
                return hr_err_set(err, HR_ERR_FORMAT, "route '%.64s': judge route '%.64s' is not defined "
                                                       "(nor a model listed under a backend)", r->name,
                                  r->judge_route);
        }
    }
    for (int k = 0; k < c->n_backends; k++) {
        const hr_backend *b = &c->backends[k];
        for (int m = 0; m < b->n_prices; m++) {
            char name[300];
            snprintf(name, sizeof name, "%s/%s", b->name, b->prices[m].model);
            if (add_implicit(c, name, k, b->prices[m].model, err) ||
                add_implicit(c, b->prices[m].model, k, b->prices[m].model, err))
                return err->status;
        }
    }
    json_t *bu = json_object_get(root, "budgets");
    if (bu && !json_is_array(bu))
        return hr_err_set(err, HR_ERR_FORMAT, "\"budgets\" must be an array");
    if (json_array_size(bu) > HR_ROUTE_MAX_BUDGETS)
        return hr_err_set(err, HR_ERR_LIMIT, "at most %d budgets", HR_ROUTE_MAX_BUDGETS);
    for (size_t i = 0; i < json_array_size(bu); i++) {
        hr_status st = parse_budget(json_array_get(bu, i), (int)i, &c->budgets[c->n_budgets], err);
        c->n_budgets++;
        if (st)
            return st;
        for (int k = 0; k < c->n_budgets - 1; k++)
            if (!strcmp(c->budgets[k].key_id, c->budgets[c->n_budgets - 1].key_id))
                return hr_err_set(err, HR_ERR_FORMAT, "budgets[%zu]: a second budget for %s (budgets[%d] has it)",
                                  i, strcmp(c->budgets[k].key_id, "*") ? c->budgets[k].label : "'*'", k);
    }
    double sq = 64;
    if (get_num(root, "shadow_queue", "config", 0, 1e6, &sq, err))
        return err->status;
    c->shadow_queue = (int32_t)sq;
    return HR_OK;
}

hr_status hr_route_config_parse(const char *json, size_t len, hr_route_config **out, hr_err *err)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return hr_err_set(err, HR_ERR_FORMAT, "line %d column %d: %s", je.line, je.column, je.text);
    hr_route_config *c = calloc(1, sizeof *c);
    if (!c) {
        json_decref(root);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }
    hr_status st = parse_doc(c, root, err);
    json_decref(root);
    if (st) {
        hr_route_config_free(c);
        return st;
    }
    *out = c;
    return HR_OK;
}

hr_status hr_route_config_load(const char *path, hr_route_config **out, hr_err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return hr_err_set(err, HR_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = malloc(HR_ROUTE_CONFIG_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, HR_ROUTE_CONFIG_MAX_BYTES + 1, f) : 0;
    fclose(f);
    if (!buf)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    if (n > HR_ROUTE_CONFIG_MAX_BYTES) {
        free(buf);
        return hr_err_set(err, HR_ERR_LIMIT, "%s: larger than %u bytes", path, HR_ROUTE_CONFIG_MAX_BYTES);
    }
    hr_status st = hr_route_config_parse(buf, n, out, err);
    free(buf);
    if (st)
        hr_err_prefix(err, "%s", path);
    return st;
}

void hr_route_config_free(hr_route_config *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_backends; i++) {
        hr_backend *b = &c->backends[i];
        free(b->name);
        free(b->base_url);
        free(b->api_key_env);
        free(b->api_key);
        for (int k = 0; k < b->n_prices; k++)
            free(b->prices[k].model);
        free(b->prices);
    }
    for (int i = 0; i < c->n_routes; i++) {
        hr_route *r = &c->routes[i];
        free(r->name);
        for (int k = 0; k < r->n_targets; k++)
            free(r->targets[k].model);
        free(r->shadow.model);
        free(r->judge_route);
    }
    for (int i = 0; i < c->n_budgets; i++) {
        free(c->budgets[i].key_id);
        free(c->budgets[i].label);
    }
    free(c);
}

hr_status hr_route_config_check_local(const hr_route_config *c, const char *id, const char *alt_id, hr_err *err)
{
    for (int i = 0; i < c->n_routes; i++) {
        const char *n = c->routes[i].name;
        if (!n || !((id && !strcmp(n, id)) || (alt_id && !strcmp(n, alt_id))))
            continue;
        const hr_route *r = &c->routes[i];
        bool implicit = r->n_targets == 1 && r->targets[0].backend >= 0 && r->targets[0].model &&
                        !strcmp(r->targets[0].model, n) && i >= c->n_explicit;
        return hr_err_set(err, HR_ERR_FORMAT,
                          "%s '%.64s' has the name of the local model; requests for the model would be routed "
                          "elsewhere (rename it, or serve the model under another --alias)",
                          implicit ? "backend model" : "route", n);
    }
    return HR_OK;
}

const hr_route *hr_route_config_find(const hr_route_config *c, const char *name)
{
    for (int i = 0; i < c->n_routes; i++)
        if (c->routes[i].name && !strcmp(c->routes[i].name, name))
            return &c->routes[i];
    return NULL;
}

int hr_route_config_backend(const hr_route_config *c, const char *name)
{
    for (int i = 0; i < c->n_backends; i++)
        if (c->backends[i].name && !strcmp(c->backends[i].name, name))
            return i;
    return -1;
}

const hr_price *hr_backend_price(const hr_backend *b, const char *model)
{
    for (int i = 0; b && model && i < b->n_prices; i++)
        if (!strcmp(b->prices[i].model, model))
            return &b->prices[i];
    return NULL;
}
