/* catalog.c - loads and validates data/models.json, data/gpus.json and
 * data/prices.json (built in), merging optional user files over them. */
#include "report/catalog.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* generated from the data folder by cmake/embed_data.cmake */
const char *hr_data_embedded(const char *name, size_t *len);

const char *hr_data_builtin(const char *name, size_t *len)
{
    return hr_data_embedded(name, len);
}

struct hr_catalog {
    hr_model_spec *models;
    size_t n_models;
    hr_gpu_spec *gpus;
    size_t n_gpus;
    hr_api_price *apis;
    size_t n_apis;
    char names_buf[3][4096];
};

/* ---- field readers: each fails with a message naming file, entry, field ---- */

typedef struct {
    const char *file;
    const char *entry;
    hr_err *err;
    bool failed;
} ctx_t;

static void fail(ctx_t *c, const char *field, const char *what)
{
    if (!c->failed)
        hr_err_set(c->err, HR_ERR_FORMAT, "%s: entry '%s': field '%s' %s", c->file, c->entry, field, what);
    c->failed = true;
}

static void get_str(ctx_t *c, json_t *o, const char *key, char *dst, size_t cap, bool required)
{
    json_t *v = json_object_get(o, key);
    dst[0] = 0;
    if (!v) {
        if (required)
            fail(c, key, "is missing");
        return;
    }
    if (json_is_array(v)) { /* arrays of strings are joined with "; " */
        size_t used = 0;
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_string(e)) {
                fail(c, key, "must be a string or an array of strings");
                return;
            }
            int n = snprintf(dst + used, cap - used, "%s%s", i ? "; " : "", json_string_value(e));
            if (n < 0 || (size_t)n >= cap - used)
                break;
            used += (size_t)n;
        }
        return;
    }
    if (!json_is_string(v)) {
        fail(c, key, "must be a string");
        return;
    }
    snprintf(dst, cap, "%s", json_string_value(v));
}

static double get_num(ctx_t *c, json_t *o, const char *key, double min, double max, bool required, double dflt)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            fail(c, key, "is missing");
        return dflt;
    }
    if (!json_is_number(v)) {
        fail(c, key, "must be a number");
        return dflt;
    }
    double d = json_number_value(v);
    if (!isfinite(d) || d < min || d > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "is out of range [%g, %g]", min, max);
        fail(c, key, msg);
        return dflt;
    }
    return d;
}

static int32_t get_int(ctx_t *c, json_t *o, const char *key, int32_t min, int32_t max, bool required)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) {
        if (required)
            fail(c, key, "is missing");
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be an integer in [%d, %d]", min, max);
        fail(c, key, msg);
        return 0;
    }
    return (int32_t)json_integer_value(v);
}

static bool get_bool(ctx_t *c, json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return false;
    if (!json_is_boolean(v)) {
        fail(c, key, "must be true or false");
        return false;
    }
    return json_is_true(v);
}

static bool valid_name(const char *s)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_'))
            return false;
    return true;
}

static void parse_model(ctx_t *c, json_t *o, void *out)
{
    hr_model_spec *m = out;
    memset(m, 0, sizeof *m);
    get_str(c, o, "name", m->name, sizeof m->name, true);
    c->entry = m->name;
    if (!c->failed && !valid_name(m->name))
        fail(c, "name", "must be lowercase letters, digits, '-', '.' or '_'");
    get_str(c, o, "display", m->display, sizeof m->display, false);
    if (!m->display[0])
        snprintf(m->display, sizeof m->display, "%s", m->name);
    get_str(c, o, "arch", m->arch, sizeof m->arch, true);
    get_str(c, o, "license", m->license, sizeof m->license, true);
    get_str(c, o, "license_class", m->license_class, sizeof m->license_class, true);
    if (!c->failed && strcmp(m->license_class, "apache-2.0") && strcmp(m->license_class, "mit") &&
        strcmp(m->license_class, "custom"))
        fail(c, "license_class", "must be apache-2.0, mit or custom");
    get_str(c, o, "source", m->source, sizeof m->source, false);
    get_str(c, o, "default_quant", m->default_quant, sizeof m->default_quant, false);
    get_str(c, o, "note", m->note, sizeof m->note, false);
    get_str(c, o, "gguf", m->gguf, sizeof m->gguf, false);
    m->params_total = get_num(c, o, "params_total", 1e6, 1e14, true, 0);
    m->params_active = get_num(c, o, "params_active", 1e6, 1e14, false, m->params_total);
    if (!c->failed && m->params_active > m->params_total)
        fail(c, "params_active", "exceeds params_total");
    m->layers = get_int(c, o, "layers", 1, 10000, true);
    m->hidden = get_int(c, o, "hidden", 1, 1 << 20, false);
    m->heads = get_int(c, o, "heads", 1, 1 << 16, false);
    m->ffn = get_int(c, o, "ffn", 1, 1 << 24, false);
    m->vocab = get_int(c, o, "vocab", 1, 1 << 24, false);
    m->context = (int64_t)get_num(c, o, "context", 1, 1e9, true, 0);
    m->tied = get_bool(c, o, "tied");
    char attn[16];
    get_str(c, o, "attention", attn, sizeof attn, false);
    if (!attn[0] || !strcmp(attn, "gqa"))
        m->attn = HR_ATTN_GQA;
    else if (!strcmp(attn, "mla"))
        m->attn = HR_ATTN_MLA;
    else
        fail(c, "attention", "must be gqa or mla");
    if (m->attn == HR_ATTN_GQA) {
        m->kv_heads = get_int(c, o, "kv_heads", 1, 1 << 16, true);
        m->head_dim = get_int(c, o, "head_dim", 1, 1 << 16, true);
        m->head_dim_v = get_int(c, o, "head_dim_v", 1, 1 << 16, false);
    } else {
        m->kv_heads = get_int(c, o, "kv_heads", 1, 1 << 16, false);
        m->head_dim = get_int(c, o, "head_dim", 1, 1 << 16, false);
        m->kv_lora_rank = get_int(c, o, "kv_lora_rank", 1, 1 << 16, true);
        m->rope_dim = get_int(c, o, "rope_dim", 0, 1 << 16, true);
        m->indexer_dim = get_int(c, o, "indexer_dim", 0, 1 << 16, false);
    }
    m->swa_layers = get_int(c, o, "swa_layers", 0, 10000, false);
    m->swa_window = get_int(c, o, "swa_window", 0, 1 << 30, false);
    if (!c->failed && m->swa_layers > 0 && m->swa_window <= 0)
        fail(c, "swa_window", "is needed with swa_layers");
    json_t *kl = json_object_get(o, "kv_layers");
    m->kv_layers = kl ? get_int(c, o, "kv_layers", 0, 10000, false) : m->layers - m->swa_layers;
    if (!c->failed && (m->kv_layers < 0 || m->kv_layers + m->swa_layers > m->layers))
        fail(c, "kv_layers", "plus swa_layers exceeds layers");
    m->experts = get_int(c, o, "experts", 0, 1 << 20, false);
    m->experts_active = get_int(c, o, "experts_active", 0, 1 << 20, false);
    if (!c->failed && m->experts > 0 && (m->experts_active < 1 || m->experts_active > m->experts))
        fail(c, "experts_active", "must be in [1, experts]");
}

static void parse_gpu(ctx_t *c, json_t *o, void *out)
{
    hr_gpu_spec *g = out;
    memset(g, 0, sizeof *g);
    get_str(c, o, "name", g->name, sizeof g->name, true);
    c->entry = g->name;
    if (!c->failed && !valid_name(g->name))
        fail(c, "name", "must be lowercase letters, digits, '-', '.' or '_'");
    if (!c->failed && !strcmp(g->name, "cpu"))
        fail(c, "name", "'cpu' is reserved for this machine");
    get_str(c, o, "display", g->display, sizeof g->display, false);
    if (!g->display[0])
        snprintf(g->display, sizeof g->display, "%s", g->name);
    g->memory_gb = get_num(c, o, "memory_gb", 0.1, 1e6, true, 0);
    g->bandwidth_gbs = get_num(c, o, "bandwidth_gbs", 0.1, 1e7, true, 0);
    g->fp16_tflops = get_num(c, o, "fp16_tflops", 0.001, 1e7, true, 0);
    g->price_per_hour = get_num(c, o, "price_per_hour", 0, 1e5, false, 0);
    get_str(c, o, "price_note", g->price_note, sizeof g->price_note, false);
}

static void parse_api(ctx_t *c, json_t *o, void *out)
{
    hr_api_price *a = out;
    memset(a, 0, sizeof *a);
    get_str(c, o, "name", a->name, sizeof a->name, true);
    c->entry = a->name;
    if (!c->failed && !valid_name(a->name))
        fail(c, "name", "must be lowercase letters, digits, '-', '.' or '_'");
    get_str(c, o, "provider", a->provider, sizeof a->provider, false);
    a->input = get_num(c, o, "input", 0, 1e5, true, 0);
    a->output = get_num(c, o, "output", 0, 1e5, true, 0);
    a->cached_input = get_num(c, o, "cached_input", 0, 1e5, false, a->input);
    a->is_default = get_bool(c, o, "default");
    get_str(c, o, "source", a->source, sizeof a->source, true);
    get_str(c, o, "date", a->date, sizeof a->date, true);
    get_str(c, o, "note", a->note, sizeof a->note, false);
}

/* Loads one file's array under `key` and merges it into *items (elem_size
 * bytes each, name at offset 0). */
static hr_status merge_file(const char *label, const char *text, size_t len, const char *key, size_t elem_size,
                            void (*parse)(ctx_t *, json_t *, void *), void **items, size_t *n, hr_err *err)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return hr_err_set(err, HR_ERR_FORMAT, "%s: invalid JSON at line %d: %s", label, je.line, je.text);
    hr_status st = HR_OK;
    json_t *arr = json_is_object(root) ? json_object_get(root, key) : NULL;
    if (!json_is_array(arr)) {
        st = hr_err_set(err, HR_ERR_FORMAT, "%s: expected an object with an array '%s'", label, key);
        goto out;
    }
    if (json_array_size(arr) > 100000) {
        st = hr_err_set(err, HR_ERR_FORMAT, "%s: too many entries", label);
        goto out;
    }
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        char idx[32];
        snprintf(idx, sizeof idx, "#%zu", i);
        ctx_t c = {.file = label, .entry = idx, .err = err};
        if (!json_is_object(o)) {
            st = hr_err_set(err, HR_ERR_FORMAT, "%s: entry %s is not an object", label, idx);
            goto out;
        }
        char *tmp = calloc(1, elem_size);
        if (!tmp) {
            st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
            goto out;
        }
        parse(&c, o, tmp);
        if (c.failed) {
            free(tmp);
            st = HR_ERR_FORMAT;
            goto out;
        }
        const char *name = tmp; /* every spec starts with char name[] */
        size_t at = *n;
        for (size_t k = 0; k < *n; k++)
            if (!strcasecmp((const char *)*items + k * elem_size, name))
                at = k;
        if (at == *n) {
            void *grown = realloc(*items, (*n + 1) * elem_size);
            if (!grown) {
                free(tmp);
                st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
                goto out;
            }
            *items = grown;
            (*n)++;
        }
        memcpy((char *)*items + at * elem_size, tmp, elem_size);
        free(tmp);
    }
out:
    json_decref(root);
    return st;
}

static hr_status merge_user(const char *path, const char *key, size_t elem_size,
                            void (*parse)(ctx_t *, json_t *, void *), void **items, size_t *n, hr_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return hr_err_set(err, HR_ERR_IO, "cannot open '%s'", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 > cap) {
            if (cap > (64u << 20)) {
                free(buf);
                fclose(f);
                return hr_err_set(err, HR_ERR_FORMAT, "%s: file too large", path);
            }
            cap = cap ? cap * 2 : 65536 * 2;
            char *t = realloc(buf, cap);
            if (!t) {
                free(buf);
                fclose(f);
                return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
            }
            buf = t;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    bool rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(buf);
        return hr_err_set(err, HR_ERR_IO, "cannot read '%s'", path);
    }
    hr_status s = merge_file(path, buf, len, key, elem_size, parse, items, n, err);
    free(buf);
    return s;
}

typedef void (*parse_fn)(ctx_t *, json_t *, void *);

static hr_status load_kind(const char *builtin, const char *user, const char *key, size_t elem_size, parse_fn parse,
                           void **items, size_t *n, hr_err *err)
{
    size_t len = 0;
    const char *text = hr_data_builtin(builtin, &len);
    if (!text)
        return hr_err_set(err, HR_ERR_NOT_FOUND, "built-in data file %s is missing", builtin);
    char label[64];
    snprintf(label, sizeof label, "built-in %s", builtin);
    hr_status s = merge_file(label, text, len, key, elem_size, parse, items, n, err);
    if (s == HR_OK && user)
        s = merge_user(user, key, elem_size, parse, items, n, err);
    return s;
}

hr_status hr_catalog_load(const char *models_file, const char *gpus_file, const char *prices_file, hr_catalog **out,
                          hr_err *err)
{
    *out = NULL;
    hr_catalog *c = calloc(1, sizeof *c);
    if (!c)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    hr_status s = load_kind("models.json", models_file, "models", sizeof(hr_model_spec), parse_model,
                            (void **)&c->models, &c->n_models, err);
    if (s == HR_OK)
        s = load_kind("gpus.json", gpus_file, "gpus", sizeof(hr_gpu_spec), parse_gpu,
                      (void **)&c->gpus, &c->n_gpus, err);
    if (s == HR_OK)
        s = load_kind("prices.json", prices_file, "apis", sizeof(hr_api_price), parse_api,
                      (void **)&c->apis, &c->n_apis, err);
    if (s != HR_OK) {
        hr_catalog_free(c);
        return s;
    }
    *out = c;
    return HR_OK;
}

void hr_catalog_free(hr_catalog *c)
{
    if (!c)
        return;
    free(c->models);
    free(c->gpus);
    free(c->apis);
    free(c);
}

size_t hr_catalog_n_models(const hr_catalog *c) { return c->n_models; }
const hr_model_spec *hr_catalog_model_at(const hr_catalog *c, size_t i) { return i < c->n_models ? &c->models[i] : NULL; }
size_t hr_catalog_n_gpus(const hr_catalog *c) { return c->n_gpus; }
const hr_gpu_spec *hr_catalog_gpu_at(const hr_catalog *c, size_t i) { return i < c->n_gpus ? &c->gpus[i] : NULL; }
size_t hr_catalog_n_apis(const hr_catalog *c) { return c->n_apis; }
const hr_api_price *hr_catalog_api_at(const hr_catalog *c, size_t i) { return i < c->n_apis ? &c->apis[i] : NULL; }

const hr_model_spec *hr_catalog_find_model(const hr_catalog *c, const char *name)
{
    for (size_t i = 0; name && i < c->n_models; i++)
        if (!strcasecmp(c->models[i].name, name))
            return &c->models[i];
    return NULL;
}

const hr_gpu_spec *hr_catalog_find_gpu(const hr_catalog *c, const char *name)
{
    for (size_t i = 0; name && i < c->n_gpus; i++)
        if (!strcasecmp(c->gpus[i].name, name))
            return &c->gpus[i];
    return NULL;
}

const hr_api_price *hr_catalog_find_api(const hr_catalog *c, const char *name)
{
    for (size_t i = 0; name && i < c->n_apis; i++)
        if (!strcasecmp(c->apis[i].name, name))
            return &c->apis[i];
    return NULL;
}

static const char *join_names(char *buf, size_t cap, const void *items, size_t n, size_t elem_size)
{
    size_t used = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n; i++) {
        int w = snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", (const char *)items + i * elem_size);
        if (w < 0 || (size_t)w >= cap - used)
            break;
        used += (size_t)w;
    }
    return buf;
}

const char *hr_catalog_model_names(const hr_catalog *c)
{
    return join_names(((hr_catalog *)c)->names_buf[0], sizeof c->names_buf[0], c->models, c->n_models,
                      sizeof *c->models);
}

const char *hr_catalog_gpu_names(const hr_catalog *c)
{
    return join_names(((hr_catalog *)c)->names_buf[1], sizeof c->names_buf[1], c->gpus, c->n_gpus, sizeof *c->gpus);
}

const char *hr_catalog_api_names(const hr_catalog *c)
{
    return join_names(((hr_catalog *)c)->names_buf[2], sizeof c->names_buf[2], c->apis, c->n_apis, sizeof *c->apis);
}
