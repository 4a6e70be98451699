/* router.c - route selection, upstream request bodies, the parallel pilot
 * (see router.h). */
#include "route/router.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "route/pair.h"
#include "route/score.h"
#include "store/usage.h"

#define MAX_QUESTION (16u << 10)

typedef struct {
    atomic_int busy;
    atomic_uint_fast64_t requests, failures, fallbacks;
} backend_stats;

struct hr_router {
    hr_route_config *cfg;
    hr_usage_db *usage;
    hr_upstream *up;
    hr_budget *budget;
    atomic_uint_fast64_t rng;
    backend_stats local;
    backend_stats be[HR_ROUTE_MAX_BACKENDS];
    char self_url[256];
    char *self_key;
    char local_id[256];
    /* pilot */
    atomic_int shadows_in_flight;
    atomic_uint_fast64_t shadows_started, shadows_dropped, pairs, pairs_unstored, judged, budget_refusals;
    pthread_mutex_t score_mu;
    double sum_exact, sum_f1, sum_json, sum_judge;
    uint64_t n_json, n_judge;
};

static uint64_t rnd(hr_router *r)
{
    uint64_t z = atomic_fetch_add(&r->rng, 0x9E3779B97F4A7C15ull) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rnd01(hr_router *r) { return (double)(rnd(r) >> 11) * (1.0 / 9007199254740992.0); }

hr_status hr_router_new(const hr_router_params *p, hr_router **out, hr_err *err)
{
    *out = NULL;
    hr_router *r = calloc(1, sizeof *r);
    if (!r) {
        hr_route_config_free(p->cfg);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }
    r->cfg = p->cfg;
    r->usage = p->usage;
    atomic_store(&r->rng, p->seed ? p->seed : (uint64_t)time(NULL));
    pthread_mutex_init(&r->score_mu, NULL);
    snprintf(r->self_url, sizeof r->self_url, "http://127.0.0.1:8080");
    if (hr_budget_new(r->cfg, &r->budget, err) ||
        (p->usage_path && hr_budget_seed_sqlite(r->budget, p->usage_path, err)) ||
        hr_upstream_new(&r->up, err)) {
        hr_router_free(r);
        return err->status;
    }
    *out = r;
    return HR_OK;
}

void hr_router_set_self(hr_router *r, const char *base_url, const char *api_key, const char *local_id)
{
    snprintf(r->self_url, sizeof r->self_url, "%s", base_url);
    free(r->self_key);
    r->self_key = api_key ? strdup(api_key) : NULL;
    snprintf(r->local_id, sizeof r->local_id, "%s", local_id ? local_id : "");
}

void hr_router_free(hr_router *r)
{
    if (!r)
        return;
    hr_upstream_free(r->up); /* finishes every call: pending pilots end here */
    hr_budget_free(r->budget);
    hr_route_config_free(r->cfg);
    pthread_mutex_destroy(&r->score_mu);
    free(r->self_key);
    free(r);
}

const hr_route_config *hr_router_config(const hr_router *r) { return r->cfg; }
hr_upstream *hr_router_upstream(hr_router *r) { return r->up; }
hr_budget *hr_router_budget(hr_router *r) { return r->budget; }

const hr_route *hr_router_find(const hr_router *r, const char *model)
{
    return model ? hr_route_config_find(r->cfg, model) : NULL;
}

static backend_stats *stats_of(hr_router *r, int backend)
{
    return backend == HR_ROUTE_LOCAL ? &r->local : &r->be[backend];
}

void hr_router_busy(hr_router *r, int backend, int delta) { atomic_fetch_add(&stats_of(r, backend)->busy, delta); }

void hr_router_count(hr_router *r, int backend, bool failed, bool fell_back)
{
    backend_stats *s = stats_of(r, backend);
    atomic_fetch_add(&s->requests, 1);
    if (failed)
        atomic_fetch_add(&s->failures, 1);
    if (fell_back)
        atomic_fetch_add(&s->fallbacks, 1);
}

void hr_router_count_budget_refusal(hr_router *r) { atomic_fetch_add(&r->budget_refusals, 1); }

int hr_router_order(hr_router *r, const hr_route *rt, int order[HR_ROUTE_MAX_TARGETS])
{
    int n = rt->n_targets;
    for (int i = 0; i < n; i++)
        order[i] = i;
    if (rt->policy == HR_POLICY_WEIGHTED && n > 1) {
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += rt->targets[i].weight;
        double x = rnd01(r) * sum;
        int pick = n - 1;
        for (int i = 0; i < n; i++) {
            if (x < rt->targets[i].weight) {
                pick = i;
                break;
            }
            x -= rt->targets[i].weight;
        }
        /* the pick first, the rest in the listed order (fallback) */
        for (int i = pick; i > 0; i--)
            order[i] = order[i - 1];
        order[0] = pick;
    } else if (rt->policy == HR_POLICY_LEAST_BUSY && n > 1) {
        int busy[HR_ROUTE_MAX_TARGETS];
        for (int i = 0; i < n; i++)
            busy[i] = atomic_load(&stats_of(r, rt->targets[i].backend)->busy);
        /* stable insertion sort by in-flight count; ties keep the listed order */
        for (int i = 1; i < n; i++) {
            int k = order[i], j = i - 1;
            while (j >= 0 && busy[order[j]] > busy[k]) {
                order[j + 1] = order[j];
                j--;
            }
            order[j + 1] = k;
        }
    }
    return n;
}

const char *hr_router_backend_name(const hr_router *r, int backend)
{
    return backend == HR_ROUTE_LOCAL ? "local" : r->cfg->backends[backend].name;
}

const hr_backend *hr_router_backend(const hr_router *r, int backend)
{
    return backend == HR_ROUTE_LOCAL ? NULL : &r->cfg->backends[backend];
}

void hr_router_url(const hr_router *r, const hr_target *t, const char *endpoint, char *buf, size_t cap)
{
    if (t->backend == HR_ROUTE_LOCAL)
        snprintf(buf, cap, "%s/v1%s", r->self_url, endpoint);
    else
        snprintf(buf, cap, "%s%s", r->cfg->backends[t->backend].base_url, endpoint);
}

double hr_router_max_cost(const hr_router *r, const hr_route *rt, int64_t prompt_tokens, int64_t completion_tokens)
{
    double m = 0;
    for (int i = 0; i < rt->n_targets; i++) {
        const hr_target *t = &rt->targets[i];
        if (t->backend == HR_ROUTE_LOCAL)
            continue;
        double c = hr_budget_cost(hr_backend_price(&r->cfg->backends[t->backend], t->model), prompt_tokens, 0,
                                  completion_tokens);
        if (c > m)
            m = c;
    }
    return m;
}

char *hr_router_body(const char *client_body, size_t len, const char *model, bool stream, int32_t max_tokens,
                     bool single, size_t *out_len)
{
    json_t *j = json_loadb(client_body, len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    json_object_set_new(j, "model", json_string(model));
    if (stream) {
        json_object_set_new(j, "stream", json_true());
        json_t *so = json_object_get(j, "stream_options");
        if (!json_is_object(so)) {
            so = json_object();
            json_object_set_new(j, "stream_options", so);
        }
        json_object_set_new(so, "include_usage", json_true());
    }
    if (max_tokens > 0 && !json_object_get(j, "max_tokens") && !json_object_get(j, "max_completion_tokens"))
        json_object_set_new(j, "max_tokens", json_integer(max_tokens));
    if (single)
        json_object_set_new(j, "n", json_integer(1));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s)
        *out_len = strlen(s);
    return s;
}

char *hr_router_body_model(const char *base, size_t len, const char *model, size_t *out_len)
{
    if (len < 2 || base[0] != '{')
        return NULL;
    json_t *m = json_string(model);
    char *ms = m ? json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(m);
    if (!ms)
        return NULL;
    size_t ml = strlen(ms);
    bool empty = len == 2; /* "{}" */
    size_t n = 1 + 8 + ml + (empty ? 0 : 1) + (len - 1);
    char *s = malloc(n + 1);
    if (s) {
        char *p = s;
        memcpy(p, "{\"model\":", 9);
        p += 9;
        memcpy(p, ms, ml);
        p += ml;
        if (!empty)
            *p++ = ',';
        memcpy(p, base + 1, len - 1);
        p += len - 1;
        *p = 0;
        *out_len = (size_t)(p - s);
    }
    free(ms);
    return s;
}

/* ---- the parallel pilot ---------------------------------------------- */

typedef struct {
    hr_router *r;
    hr_pilot_pair pair;
    char *request_id, *route, *key_id, *pb, *pm, *sb, *sm, *ptext, *stext, *question, *judge_route;
    hr_up_call *shadow;
    hr_up_call *judge[2];
    int verdict[2];
    int judges_left;
    pthread_mutex_t mu;
} pilot;

static char *dup0(const char *s) { return strdup(s ? s : ""); }

static void pilot_free(pilot *p)
{
    free(p->request_id);
    free(p->route);
    free(p->key_id);
    free(p->pb);
    free(p->pm);
    free(p->sb);
    free(p->sm);
    free(p->ptext);
    free(p->stext);
    free(p->question);
    free(p->judge_route);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static void pilot_record(pilot *p)
{
    hr_router *r = p->r;
    hr_pilot_pair *x = &p->pair;
    x->request_id = p->request_id;
    x->route = p->route;
    x->key_id = p->key_id;
    x->primary_backend = p->pb;
    x->primary_model = p->pm;
    x->shadow_backend = p->sb;
    x->shadow_model = p->sm;
    x->primary_text = p->ptext;
    x->shadow_text = p->stext ? p->stext : "";
    int n = 0;
    double s = 0;
    for (int i = 0; i < 2; i++)
        if (p->verdict[i] >= 0) {
            s += p->verdict[i];
            n++;
        }
    x->score_judge = n ? s / n : -1;
    pthread_mutex_lock(&r->score_mu);
    r->sum_exact += x->score_exact;
    r->sum_f1 += x->score_f1;
    if (x->score_json >= 0) {
        r->sum_json += x->score_json;
        r->n_json++;
    }
    if (x->score_judge >= 0) {
        r->sum_judge += x->score_judge;
        r->n_judge++;
    }
    pthread_mutex_unlock(&r->score_mu);
    atomic_fetch_add(&r->pairs, 1);
    if (!hr_pilot_record(r->usage, x))
        atomic_fetch_add(&r->pairs_unstored, 1);
    atomic_fetch_sub(&r->shadows_in_flight, 1);
    pilot_free(p);
}

/* 1 when the shadow is at least as good, 0 when the primary wins, -1 unclear. */
static int shadow_as_good(int verdict, bool shadow_is_a)
{
    if (verdict == 'T')
        return 1;
    if (verdict == 'A')
        return shadow_is_a ? 1 : 0;
    if (verdict == 'B')
        return shadow_is_a ? 0 : 1;
    return -1;
}

static void judge_done(pilot *p, int i)
{
    hr_up_state st;
    hr_up_call_state(p->judge[i], &st);
    if (!st.done)
        return;
    char *reply = st.complete && st.status == 200 ? hr_up_call_text(p->judge[i]) : NULL;
    int v = reply ? hr_score_judge_verdict(reply) : 0;
    free(reply);
    p->verdict[i] = shadow_as_good(v, i == 1);
    hr_up_call_release(p->judge[i]);
    p->judge[i] = NULL;
    pthread_mutex_lock(&p->mu);
    bool last = --p->judges_left == 0;
    pthread_mutex_unlock(&p->mu);
    if (last)
        pilot_record(p);
}

static void judge_notify0(void *ctx) { judge_done(ctx, 0); }
static void judge_notify1(void *ctx) { judge_done(ctx, 1); }

/* Two judge calls, A/B then B/A, through the server itself. */
static bool start_judges(pilot *p)
{
    hr_router *r = p->r;
    char url[320];
    snprintf(url, sizeof url, "%s/v1/chat/completions", r->self_url);
    p->judges_left = 2;
    for (int i = 0; i < 2; i++) {
        const char *a = i == 0 ? p->ptext : p->stext, *b = i == 0 ? p->stext : p->ptext;
        char *prompt = hr_score_judge_prompt(p->question, a, b);
        json_t *j = json_pack("{s:s, s:[{s:s, s:s}], s:i, s:f}", "model", p->judge_route, "messages", "role",
                              "user", "content", prompt ? prompt : "", "max_tokens", 8, "temperature", 0.0);
        free(prompt);
        char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!body) {
            if (i == 0)
                return false; /* nothing started: the caller records */
            p->verdict[1] = -1;
            pthread_mutex_lock(&p->mu);
            bool last = --p->judges_left == 0;
            pthread_mutex_unlock(&p->mu);
            if (last)
                pilot_record(p);
            return true;
        }
        hr_up_req rq = {.url = url, .api_key = r->self_key, .body = body, .body_len = strlen(body),
                        .timeout_s = 120, .first_byte_timeout_s = 120,
                        .notify = i == 0 ? judge_notify0 : judge_notify1, .ctx = p};
        /* this runs on the I/O thread, so neither judge can notify before
         * both are started */
        p->judge[i] = hr_upstream_start(r->up, &rq);
        free(body);
        if (!p->judge[i]) {
            /* this one and the ones after it never start */
            for (int k = i; k < 2; k++)
                p->verdict[k] = -1;
            pthread_mutex_lock(&p->mu);
            p->judges_left -= 2 - i;
            bool last = p->judges_left == 0;
            pthread_mutex_unlock(&p->mu);
            if (last)
                pilot_record(p);
            return true;
        }
    }
    return true;
}

static void shadow_notify(void *ctx)
{
    pilot *p = ctx;
    pthread_mutex_lock(&p->mu); /* wait until hr_router_pilot has stored p->shadow */
    pthread_mutex_unlock(&p->mu);
    hr_up_state st;
    hr_up_call_state(p->shadow, &st);
    /* discard forwarded bytes: only the parsed text and usage matter */
    char sink[16384];
    while (hr_up_call_read(p->shadow, sink, sizeof sink) > 0) {
    }
    if (!st.done)
        return;
    hr_pilot_pair *x = &p->pair;
    p->stext = hr_up_call_text(p->shadow);
    x->shadow_status = st.status;
    if (!st.complete && st.status >= 200 && st.status < 300)
        x->shadow_status = 0; /* failed mid-way: not a usable answer */
    x->shadow_ttft_s = st.ttft_s;
    x->shadow_total_s = st.total_s;
    x->shadow_prompt_tokens = st.prompt_tokens;
    x->shadow_completion_tokens = st.completion_tokens;
    hr_up_call_release(p->shadow);
    p->shadow = NULL;
    bool ok = x->shadow_status >= 200 && x->shadow_status < 300 && p->stext;
    if (ok) {
        x->score_exact = hr_score_exact(p->ptext, p->stext);
        x->score_f1 = hr_score_f1(p->ptext, p->stext);
        x->score_json = hr_score_json(p->ptext, p->stext);
    } else {
        x->score_exact = 0;
        x->score_f1 = 0;
        x->score_json = -1;
    }
    p->verdict[0] = p->verdict[1] = -1;
    if (ok && p->judge_route && rnd01(p->r) < p->pair.score_judge /* judge sample, stashed */) {
        atomic_fetch_add(&p->r->judged, 1);
        if (start_judges(p))
            return;
    }
    pilot_record(p);
}

static char *question_of(const char *body, size_t len)
{
    json_t *j = json_loadb(body, len, 0, NULL);
    json_t *q = json_object_get(j, "messages");
    if (!q)
        q = json_object_get(j, "prompt");
    char *s = NULL;
    if (json_is_string(q))
        s = strdup(json_string_value(q));
    else if (q)
        s = json_dumps(q, JSON_COMPACT);
    json_decref(j);
    if (s && strlen(s) > MAX_QUESTION)
        s[MAX_QUESTION] = 0;
    return s ? s : strdup("");
}

void hr_router_pilot(hr_router *r, const hr_route *rt, const hr_pilot_primary *pp)
{
    if (!rt || !rt->has_shadow || !(pp->status >= 200 && pp->status < 300))
        return;
    if (!(rnd01(r) < rt->shadow_sample))
        return;
    if (atomic_fetch_add(&r->shadows_in_flight, 1) >= r->cfg->shadow_queue) {
        atomic_fetch_sub(&r->shadows_in_flight, 1);
        atomic_fetch_add(&r->shadows_dropped, 1);
        return;
    }
    pilot *p = calloc(1, sizeof *p);
    const hr_target *t = &rt->shadow;
    const char *smodel = t->backend == HR_ROUTE_LOCAL ? r->local_id : t->model;
    size_t blen = 0;
    char *body = p ? hr_router_body(pp->body, pp->body_len, smodel, true, 0, true, &blen) : NULL;
    if (p) {
        pthread_mutex_init(&p->mu, NULL);
        p->r = r;
        p->request_id = dup0(pp->request_id);
        p->route = dup0(rt->name);
        p->key_id = dup0(pp->key_id);
        p->pb = dup0(pp->backend);
        p->pm = dup0(pp->model);
        p->sb = dup0(hr_router_backend_name(r, t->backend));
        p->sm = dup0(smodel);
        p->ptext = dup0(pp->text);
        p->judge_route = rt->judge_route ? strdup(rt->judge_route) : NULL;
        p->question = p->judge_route ? question_of(pp->body, pp->body_len) : NULL;
        hr_pilot_pair *x = &p->pair;
        x->ts_ms = pp->ts_ms;
        x->primary_ttft_s = pp->ttft_s;
        x->primary_total_s = pp->total_s;
        x->primary_prompt_tokens = pp->prompt_tokens;
        x->primary_completion_tokens = pp->completion_tokens;
        x->primary_status = pp->status;
        x->shadow_ttft_s = x->shadow_total_s = -1;
        x->score_judge = rt->judge_sample; /* stashed until the shadow ends */
    }
    if (!p || !body || !p->request_id || !p->ptext) {
        free(body);
        atomic_fetch_add(&r->shadows_dropped, 1);
        atomic_fetch_sub(&r->shadows_in_flight, 1);
        if (p)
            pilot_free(p);
        return;
    }
    char url[512];
    hr_router_url(r, t, pp->endpoint, url, sizeof url);
    const hr_backend *b = hr_router_backend(r, t->backend);
    hr_up_req rq = {
        .url = url,
        .api_key = b ? b->api_key : r->self_key,
        .body = body,
        .body_len = blen,
        .stream = true,
        .connect_timeout_s = b ? b->connect_timeout_s : 5,
        .first_byte_timeout_s = b ? b->first_byte_timeout_s : 600,
        .timeout_s = b ? b->timeout_s : 600,
        .notify = shadow_notify,
        .ctx = p,
    };
    /* the call may notify before hr_upstream_start returns: shadow_notify
     * takes p->mu first, so it sees p->shadow set */
    pthread_mutex_lock(&p->mu);
    hr_up_call *call = hr_upstream_start(r->up, &rq);
    p->shadow = call;
    pthread_mutex_unlock(&p->mu);
    free(body);
    /* from here on the I/O thread may finish and free the pilot */
    if (!call) {
        atomic_fetch_add(&r->shadows_dropped, 1);
        atomic_fetch_sub(&r->shadows_in_flight, 1);
        pilot_free(p);
        return;
    }
    atomic_fetch_add(&r->shadows_started, 1);
}

/* ---- metrics ---------------------------------------------------------- */

void hr_router_metrics(hr_router *r, void (*put)(void *ctx, const char *line), void *ctx)
{
    char line[512];
    put(ctx, "# HELP hearth_route_backend_requests_total Routed attempts per backend.\n"
             "# TYPE hearth_route_backend_requests_total counter\n");
    for (int i = -1; i < r->cfg->n_backends; i++) {
        backend_stats *s = stats_of(r, i);
        snprintf(line, sizeof line, "hearth_route_backend_requests_total{backend=\"%s\"} %llu\n",
                 hr_router_backend_name(r, i), (unsigned long long)atomic_load(&s->requests));
        put(ctx, line);
    }
    put(ctx, "# HELP hearth_route_backend_failures_total Attempts that failed (status, timeout, transport, cut).\n"
             "# TYPE hearth_route_backend_failures_total counter\n");
    for (int i = -1; i < r->cfg->n_backends; i++) {
        snprintf(line, sizeof line, "hearth_route_backend_failures_total{backend=\"%s\"} %llu\n",
                 hr_router_backend_name(r, i), (unsigned long long)atomic_load(&stats_of(r, i)->failures));
        put(ctx, line);
    }
    put(ctx, "# HELP hearth_route_fallbacks_total Failures before the first byte that moved to the next target.\n"
             "# TYPE hearth_route_fallbacks_total counter\n");
    for (int i = -1; i < r->cfg->n_backends; i++) {
        snprintf(line, sizeof line, "hearth_route_fallbacks_total{backend=\"%s\"} %llu\n",
                 hr_router_backend_name(r, i), (unsigned long long)atomic_load(&stats_of(r, i)->fallbacks));
        put(ctx, line);
    }
    put(ctx, "# HELP hearth_route_in_flight Requests in flight per backend.\n"
             "# TYPE hearth_route_in_flight gauge\n");
    for (int i = -1; i < r->cfg->n_backends; i++) {
        snprintf(line, sizeof line, "hearth_route_in_flight{backend=\"%s\"} %d\n", hr_router_backend_name(r, i),
                 atomic_load(&stats_of(r, i)->busy));
        put(ctx, line);
    }
#define SIMPLE(name, type, help, value)                                                                    \
    do {                                                                                                   \
        snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, \
                 (double)(value));                                                                         \
        put(ctx, line);                                                                                    \
    } while (0)
    SIMPLE("hearth_budget_refusals_total", "counter", "Requests refused with 429 by a budget.",
           atomic_load(&r->budget_refusals));
    SIMPLE("hearth_pilot_shadows_started_total", "counter", "Shadow requests started.",
           atomic_load(&r->shadows_started));
    SIMPLE("hearth_pilot_shadows_dropped_total", "counter", "Sampled shadows dropped because the queue was full.",
           atomic_load(&r->shadows_dropped));
    SIMPLE("hearth_pilot_shadows_in_flight", "gauge", "Shadow pairs not finished yet.",
           atomic_load(&r->shadows_in_flight));
    SIMPLE("hearth_pilot_pairs_total", "counter", "Pairs scored.", atomic_load(&r->pairs));
    SIMPLE("hearth_pilot_pairs_unstored_total", "counter", "Pairs the usage log could not store.",
           atomic_load(&r->pairs_unstored));
    SIMPLE("hearth_pilot_judged_total", "counter", "Pairs sent to the judge.", atomic_load(&r->judged));
    pthread_mutex_lock(&r->score_mu);
    uint64_t n = atomic_load(&r->pairs);
    double e = n ? r->sum_exact / (double)n : 0, f = n ? r->sum_f1 / (double)n : 0;
    double js = r->n_json ? r->sum_json / (double)r->n_json : 0, jd = r->n_judge ? r->sum_judge / (double)r->n_judge : 0;
    pthread_mutex_unlock(&r->score_mu);
    SIMPLE("hearth_pilot_score_exact_mean", "gauge", "Mean exact-match score of the pairs.", e);
    SIMPLE("hearth_pilot_score_f1_mean", "gauge", "Mean token F1 of the pairs.", f);
    SIMPLE("hearth_pilot_score_json_mean", "gauge", "Mean JSON key/value agreement (pairs where both are JSON).", js);
    SIMPLE("hearth_pilot_score_judge_mean", "gauge", "Mean judge score (1 = shadow as good).", jd);
#undef SIMPLE
    hr_upstream_stats us;
    hr_upstream_stats_of(r->up, &us);
    snprintf(line, sizeof line,
             "# HELP hearth_upstream_calls_in_flight Upstream calls on the I/O thread.\n"
             "# TYPE hearth_upstream_calls_in_flight gauge\nhearth_upstream_calls_in_flight %d\n"
             "# HELP hearth_upstream_timeouts_total Upstream calls that timed out.\n"
             "# TYPE hearth_upstream_timeouts_total counter\nhearth_upstream_timeouts_total %llu\n",
             us.in_flight, (unsigned long long)us.timeouts);
    put(ctx, line);
}
