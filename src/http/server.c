/* server.c - libmicrohttpd front end: routing, auth, body caps, streaming. */
#include "http/server.h"
#include "base/clock.h"
#include "route/router.h"
#include "store/usage.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#if MHD_VERSION < 0x00097002
typedef int mhd_result;
#else
typedef enum MHD_Result mhd_result;
#endif

enum route {
    R_NONE = 0,
    R_HEALTH,
    R_METRICS,
    R_MODELS,
    R_MODEL_ONE,
    R_CHAT,
    R_COMPLETIONS,
    R_TOKENIZE,
    R_DETOKENIZE,
};

typedef struct conn conn;

#define HR_HTTP_PREP_THREADS 2 /* threads parsing, rendering and tokenizing request bodies */

enum prep_state { PREP_NONE = 0, PREP_QUEUED, PREP_DONE, PREP_USED };
/* Open connections per client address (IPv4 as v4-mapped IPv6). */
#define IP_BUCKETS 1024
typedef struct ip_count {
    unsigned char a[16];
    unsigned n;
    struct ip_count *next;
} ip_count;

/* Per TCP connection (MHD's socket context). */
typedef struct {
    unsigned char a[16];
    bool has_ip;
    bool counted; /* in n_conns and its address's count */
    bool over; /* accepted past a limit: answered 503 and closed */
    bool per_ip; /* ... the per-address limit (else the global one) */
} sock_ctx;

struct hr_http {
    struct MHD_Daemon *d;
    hr_http_params p;
    atomic_int port;
    bool loopback;      /* bound to a loopback address: Host is checked */
    bool host_any;      /* --allow-host '*' */
    bool cors_any;      /* --cors '*' */
    unsigned per_ip;    /* 0: no per-address limit */
    pthread_mutex_t cmu; /* connection counts */
    unsigned n_conns;
    ip_count *ipt[IP_BUCKETS];
    atomic_uint_fast64_t conns_refused;
    _Atomic(hr_sched *) sched;
    _Atomic(const hr_api_model *) api;
    atomic_bool stopping;
    atomic_bool closing; /* final phase of stop: everything fails fast */
    atomic_uint_fast64_t rng;
    atomic_uint_fast64_t by_status[600];
    atomic_uint_fast64_t cancelled_by_client;
    atomic_int n_gen;      /* generation connections alive */
    pthread_t ticker;
    bool ticker_started;
    pthread_mutex_t mu; /* the list of generation connections */
    conn *gens;
    /* request preparation (JSON, template, tokenizer) off the event thread */
    pthread_mutex_t prep_mu;
    pthread_cond_t prep_cv;
    conn *prep_head, *prep_tail;
    bool prep_quit;
    pthread_t prep_thr[HR_HTTP_PREP_THREADS];
    int n_prep_thr;
};

struct conn {
    hr_http *h;
    struct MHD_Connection *mc;
    enum route route;
    bool post;
    bool responded;
    bool too_big;
    bool body_oom;  /* too_big because an allocation failed, not the limit */
    hr_api_buf body;
    double t0;
    int64_t t0_ms;       /* wall clock at the request's start, for the usage log */
    char req_id[64];     /* the response id */
    char key_id[24];     /* hash of the bearer key, "" without one */
    /* generation */
    hr_api_request *rq;
    hr_api_resp *resp;
    hr_req *reqs[HR_API_MAX_PROMPTS];
    bool fin[HR_API_MAX_PROMPTS];
    int nreq;
    bool all_done, failed, end_written;
    atomic_bool streaming;     /* read by the ticker: set before list_add */
    bool http11;
    bool probed;               /* the ticker sent a 102 to tell a half-close from a dead peer */
    const char *cors_origin;   /* Access-Control-Allow-Origin to send; NULL: none */
    char origin[256];
    hr_api_buf out;
    size_t out_off;
    double last_write;
    int status;
    /* routing (--config) */
    const hr_route *rt;        /* the route `model` named; NULL: the local model directly */
    int order[HR_ROUTE_MAX_TARGETS], n_order, cur;
    int backend;               /* the target now serving: HR_ROUTE_LOCAL or an upstream index */
    bool busy_counted;
    hr_up_call *call;          /* the upstream call of the current target */
    double call_t0;
    bool up_active;            /* connection driven by an upstream call */
    bool up_committed;         /* bytes of the upstream answer went to the client */
    const char *endpoint;      /* "/chat/completions" or "/completions" */
    bool client_stream, client_usage;
    int32_t inject_max;        /* max_tokens set on forwarded requests that have none (budgets) */
    /* the body parsed once, on a preparation thread */
    enum prep_state prep;
    conn *prep_next;
    hr_api_doc *doc;
    hr_api_head head;          /* what routing and budgets need */
    bool doc_failed;           /* the body is not a valid request (doc_err) */
    hr_api_error doc_err;
    hr_api_request *lrq;       /* the request for the local engine, when a target may be local */
    bool lrq_failed;           /* the local parse failed (lrq_err, answered if the local engine is tried) */
    hr_api_error lrq_err;
    char *tok_out;             /* /tokenize, /detokenize: the answer (NULL: doc_err) */
    char *up_base;             /* the body for upstream targets, without "model" (NULL: none needed) */
    size_t up_base_len;
    hr_budget_hold hold;
    bool unauthenticated;      /* refused 401: no usage row */
    int last_fail_status;      /* of the last failed target, for the final error */
    bool last_fail_timeout;
    char last_fail[300];
    hr_api_buf ptext;          /* first choice's text of a local answer (pilot) */
    /* suspend / resume handshake (mu) */
    pthread_mutex_t mu;
    bool suspended, pending, tick;
    bool client_gone;          /* the ticker saw the peer close a non-streamed request */
    bool listed;
    conn *prev, *next;
};

static uint64_t next_rand(hr_http *h)
{
    uint64_t z = atomic_fetch_add(&h->rng, 0x9E3779B97F4A7C15ull) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- responses -------------------------------------------------------- */

static void count_status(hr_http *h, int status)
{
    if (status >= 100 && status < 600)
        atomic_fetch_add(&h->by_status[status], 1);
}

static void add_cors(conn *c, struct MHD_Response *r)
{
    if (!c->cors_origin)
        return;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", c->cors_origin);
    if (strcmp(c->cors_origin, "*"))
        MHD_add_response_header(r, "Vary", "Origin");
}

/* Queues `body` (malloc'd, taken over; NULL: empty). */
static mhd_result reply(conn *c, int status, char *body, const char *ctype, bool close)
{
    size_t len = body ? strlen(body) : 0;
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body ? body : (void *)"",
                                                             body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype ? ctype : "application/json");
    if (status == 429 || status == 503)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (close)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    add_cors(c, r);
    mhd_result ret = MHD_queue_response(c->mc, (unsigned)status, r);
    MHD_destroy_response(r);
    c->responded = true;
    c->status = status;
    count_status(c->h, status);
    return ret;
}

static mhd_result reply_oom_static(struct MHD_Connection *mc);

static mhd_result reply_error(conn *c, const hr_api_error *e, bool close)
{
    char *j = hr_api_error_json(e);
    if (!j) { /* out of memory: a static body rather than an empty one */
        c->responded = true;
        c->status = 503;
        count_status(c->h, 503);
        return reply_oom_static(c->mc);
    }
    return reply(c, e->status, j, NULL, close);
}

static mhd_result vfail(conn *c, int status, const char *code, bool close, const char *fmt, va_list ap)
{
    hr_api_error e;
    char msg[sizeof e.message];
    vsnprintf(msg, sizeof msg, fmt, ap);
    hr_api_error_set(&e, status, NULL, code, "%s", msg);
    return reply_error(c, &e, close);
}

static mhd_result fail(conn *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static mhd_result fail(conn *c, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mhd_result r = vfail(c, status, code, status == 413, fmt, ap);
    va_end(ap);
    return r;
}

/* An error after which the connection is closed (framing in doubt, or a
 * connection over a limit). */
static mhd_result fail_close(conn *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static mhd_result fail_close(conn *c, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mhd_result r = vfail(c, status, code, true, fmt, ap);
    va_end(ap);
    return r;
}

/* ---- auth ------------------------------------------------------------- */

static bool key_eq(const char *a, size_t al, const char *b)
{
    size_t bl = strlen(b);
    unsigned char d = (unsigned char)(al != bl);
    for (size_t i = 0; i < al; i++)
        d |= (unsigned char)(a[i] ^ b[i % (bl ? bl : 1)]);
    return d == 0 && bl > 0;
}

static bool authorized(conn *c)
{
    hr_http *h = c->h;
    if (h->p.n_api_keys <= 0)
        return true;
    if (c->route == R_HEALTH || (c->route == R_METRICS && !h->p.metrics_need_key))
        return true;
    const char *a = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!a || strncasecmp(a, "Bearer ", 7))
        return false;
    a += 7;
    while (*a == ' ')
        a++;
    size_t al = strlen(a);
    while (al && a[al - 1] == ' ')
        al--;
    char key[512];
    if (al < sizeof key) {
        memcpy(key, a, al);
        key[al] = 0;
        hr_usage_key_id(key, c->key_id);
    }
    bool ok = false;
    for (int i = 0; i < h->p.n_api_keys; i++)
        ok |= key_eq(a, al, h->p.api_keys[i]);
    return ok;
}

/* ---- generation connections ------------------------------------------ */

static void list_add(conn *c)
{
    hr_http *h = c->h;
    if (c->listed)
        return;
    pthread_mutex_lock(&h->mu);
    c->next = h->gens;
    if (h->gens)
        h->gens->prev = c;
    h->gens = c;
    c->listed = true;
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_add(&h->n_gen, 1);
}

static void list_del(conn *c)
{
    hr_http *h = c->h;
    if (!c->listed)
        return;
    pthread_mutex_lock(&h->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->gens = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->listed = false;
    pthread_mutex_unlock(&h->mu);
    atomic_fetch_sub(&h->n_gen, 1);
}

/* Called by the scheduler thread when events are ready. */
static void on_notify(void *ctx)
{
    conn *c = ctx;
    pthread_mutex_lock(&c->mu);
    c->pending = true;
    if (c->suspended) {
        c->suspended = false;
        MHD_resume_connection(c->mc);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Suspends unless something arrived meanwhile; true if suspended. */
static bool try_suspend(conn *c)
{
    pthread_mutex_lock(&c->mu);
    bool s = !c->pending && !atomic_load(&c->h->closing);
    if (s) {
        c->suspended = true;
        MHD_suspend_connection(c->mc);
    }
    pthread_mutex_unlock(&c->mu);
    return s;
}

static void cancel_all(conn *c)
{
    for (int i = 0; i < c->nreq; i++)
        if (!c->fin[i])
            hr_req_cancel(c->reqs[i]);
}

/* Moves every ready event into the response. */
static void drain(conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->pending = false;
    pthread_mutex_unlock(&c->mu);
    hr_event evs[32];
    bool all = true;
    for (int i = 0; i < c->nreq; i++) {
        if (c->fin[i])
            continue;
        size_t n;
        while ((n = hr_req_poll(c->reqs[i], evs, 32)) > 0)
            for (size_t k = 0; k < n; k++) {
                if (!c->failed && !hr_api_resp_event(c->resp, i, &evs[k], &c->out)) {
                    c->failed = true;
                    cancel_all(c);
                }
                if (i == 0 && c->rt && c->rt->has_shadow && evs[k].kind == HR_EV_TEXT && evs[k].index == 0 &&
                    c->ptext.len < HR_UP_MAX_TEXT) {
                    size_t l = evs[k].len;
                    if (l > HR_UP_MAX_TEXT - c->ptext.len)
                        l = HR_UP_MAX_TEXT - c->ptext.len;
                    hr_api_buf_put(&c->ptext, evs[k].text, l);
                }
            }
        if (hr_req_finished(c->reqs[i]))
            c->fin[i] = true;
        else
            all = false;
    }
    c->all_done = all;
}

static hr_req_usage total_usage(conn *c)
{
    hr_req_usage u = {0};
    for (int i = 0; i < c->nreq; i++) {
        hr_req_usage x = hr_req_usage_of(c->reqs[i]);
        hr_api_usage_add(&u, &x);
    }
    return u;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    conn *c = cls;
    (void)pos;
    for (;;) {
        if (c->out_off < c->out.len) {
            size_t n = c->out.len - c->out_off;
            if (n > max)
                n = max;
            memcpy(buf, c->out.p + c->out_off, n);
            c->out_off += n;
            if (c->out_off == c->out.len)
                c->out.len = c->out_off = 0;
            c->last_write = hr_now_s();
            return (ssize_t)n;
        }
        if (c->end_written)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (atomic_load(&c->h->closing))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        drain(c);
        if (c->failed && !c->end_written) {
            /* out of memory or a cap: end the stream with an error event */
            c->out.len = c->out_off = 0;
            hr_api_error e;
            hr_api_error_set(&e, 500, NULL, NULL, "the response could not be built (too large)");
            char *s = hr_api_error_json(&e);
            if (s && hr_api_buf_puts(&c->out, "data: ") && hr_api_buf_puts(&c->out, s))
                hr_api_buf_puts(&c->out, "\n\ndata: [DONE]\n\n");
            free(s);
            c->end_written = true;
            continue;
        }
        if (c->all_done && !c->end_written) {
            hr_req_usage u = total_usage(c);
            if (!hr_api_resp_stream_end(c->resp, &u, &c->out))
                return MHD_CONTENT_READER_END_WITH_ERROR;
            c->end_written = true;
            continue;
        }
        if (c->out.len)
            continue;
        pthread_mutex_lock(&c->mu);
        bool tick = c->tick;
        c->tick = false;
        pthread_mutex_unlock(&c->mu);
        if (tick && hr_now_s() - c->last_write >= 0.2) {
            hr_api_buf_puts(&c->out, ": keep-alive\n\n");
            continue;
        }
        if (try_suspend(c))
            return 0;
    }
}

static mhd_result finish_nonstream(conn *c)
{
    hr_api_error e;
    if (hr_api_resp_failed(c->resp, &e)) /* the cap (400), a cancelled or failed completion */
        return reply_error(c, &e, false);
    if (c->failed) {
        hr_api_error_set(&e, 500, NULL, NULL, "out of memory building the response");
        return reply_error(c, &e, false);
    }
    hr_req_usage u = total_usage(c);
    char *s = hr_api_resp_json(c->resp, &u);
    if (!s && hr_api_resp_failed(c->resp, &e))
        return reply_error(c, &e, false);
    if (!s)
        return fail(c, 500, NULL, "out of memory");
    return reply(c, 200, s, NULL, false);
}

/* Non-streamed: resumed by notify; answer once every request finished. */
static mhd_result nonstream_step(conn *c)
{
    if (atomic_load(&c->h->closing))
        return MHD_NO;
    for (;;) {
        drain(c);
        if (c->all_done)
            return finish_nonstream(c);
        if (try_suspend(c))
            return MHD_YES;
        if (atomic_load(&c->h->closing))
            return MHD_NO;
    }
}

/* Starts a local generation. With `busy` set, a full scheduler queue
 * answers nothing and sets *busy (the caller tries the next target). */
static mhd_result start_generation(conn *c, hr_sched *s, const hr_api_model *m, bool *busy)
{
    hr_http *h = c->h;
    hr_api_kind kind = c->route == R_CHAT ? HR_API_CHAT : HR_API_COMPLETION;
    hr_api_error e;
    if (c->lrq_failed)
        return reply_error(c, &c->lrq_err, false);
    if (!c->lrq)
        return fail(c, 503, "model_loading", "the model is loading; retry shortly");
    c->rq = c->lrq; /* parsed on a preparation thread */
    c->lrq = NULL;
    if (c->inject_max)
        hr_api_request_default_max(c->rq, m, c->inject_max);
    char id[64];
    snprintf(id, sizeof id, "%s-%016llx%08llx", kind == HR_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)next_rand(h), (unsigned long long)(next_rand(h) & 0xffffffffu));
    snprintf(c->req_id, sizeof c->req_id, "%s", id);
    c->resp = hr_api_resp_new(m, c->rq, id, (int64_t)time(NULL));
    if (!c->resp)
        return fail(c, 500, NULL, "out of memory");
    c->out.max = 16u << 20;
    for (int i = 0; i < c->rq->n_prompts; i++) {
        hr_gen_params gp = hr_api_gen_for(c->rq, i);
        hr_err err = {0};
        hr_status st = hr_sched_submit(s, &gp, on_notify, c, &c->reqs[i], &err);
        if (st) {
            for (int j = 0; j < c->nreq; j++)
                hr_req_release(c->reqs[j]);
            c->nreq = 0;
            if (st == HR_ERR_LIMIT && busy) {
                *busy = true;
                c->lrq = c->rq; /* kept for another local target */
                hr_api_resp_free(c->resp);
                c->rq = NULL;
                c->resp = NULL;
                snprintf(c->last_fail, sizeof c->last_fail, "local: %.200s", err.msg);
                c->last_fail_status = 429;
                return MHD_YES;
            }
            if (st == HR_ERR_LIMIT)
                return fail(c, 429, "rate_limit_exceeded", "the server is at capacity (%s); retry later",
                            err.msg);
            if (st == HR_ERR_INVALID) {
                hr_api_error_set(&e, 400, NULL, NULL, "%s", err.msg);
                return reply_error(c, &e, false);
            }
            return fail(c, 500, NULL, "cannot start the request: %s", err.msg);
        }
        c->nreq++;
    }
    c->streaming = c->rq->stream;
    list_add(c);
    if (!c->streaming)
        return nonstream_step(c);
    c->last_write = hr_now_s();
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, stream_read, c, NULL);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    add_cors(c, r);
    mhd_result ret = MHD_queue_response(c->mc, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    c->responded = true;
    c->status = 200;
    count_status(h, 200);
    return ret;
}

/* ---- routed requests (--config) --------------------------------------- */

static const char *fail_code_type(int status)
{
    return status == 429 ? "rate_limit_exceeded" : status == 504 ? "upstream_timeout" : "upstream_error";
}

/* Token counts of an upstream answer: the provider's, else estimated
 * (4 bytes per token of the request body and of the answer text). */
static void up_tokens(conn *c, const hr_up_state *st, int32_t *prompt, int32_t *completion, bool *estimated)
{
    if (st->have_usage) {
        *prompt = st->prompt_tokens;
        *completion = st->completion_tokens;
        *estimated = false;
        return;
    }
    *estimated = true;
    *prompt = (int32_t)((c->body.len + 3) / 4);
    char *t = c->call ? hr_up_call_text(c->call) : NULL;
    *completion = t ? (int32_t)((strlen(t) + 3) / 4) : 0;
    free(t);
}

/* A usage row for an upstream attempt (the answer, or a failed try). */
static void meter_upstream(conn *c, int status, const char *finish)
{
    hr_http *h = c->h;
    if (!h->p.usage || !c->call)
        return;
    hr_up_state st;
    hr_up_call_state(c->call, &st);
    int32_t pt = 0, ct = 0;
    bool est = false;
    if (status >= 200 && status < 300)
        up_tokens(c, &st, &pt, &ct, &est);
    const hr_target *t = &c->rt->targets[c->order[c->cur]];
    hr_usage_row row = {
        .ts_ms = c->t0_ms,
        .request_id = c->req_id,
        .key_id = c->key_id,
        .model = t->model,
        .backend = hr_router_backend_name(h->p.router, t->backend),
        .prompt_tokens = pt,
        .cached_tokens = st.have_usage ? st.cached_tokens : 0,
        .completion_tokens = ct,
        .reasoning_tokens = st.have_usage ? st.reasoning_tokens : 0,
        .ttft_s = st.ttft_s >= 0 ? st.ttft_s + (c->call_t0 - c->t0) : -1.0,
        .duration_s = hr_now_s() - c->t0,
        .status = status,
        .finish_reason = finish ? finish : st.done && !st.complete ? "error" : st.finish_reason,
        .stream = c->client_stream,
#if HR_USAGE_SCHEMA_VERSION >= 3
        .estimated = est,
#endif
    };
    (void)est;
    hr_usage_record(h->p.usage, &row);
}

static void release_call(conn *c)
{
    if (c->busy_counted) {
        hr_router_busy(c->h->p.router, c->backend, -1);
        c->busy_counted = false;
    }
    hr_up_call_release(c->call);
    c->call = NULL;
}

static mhd_result up_step(conn *c);

/* All targets failed before answering. */
static mhd_result routed_fail(conn *c)
{
    int status = c->last_fail_status == 429 ? 429 : c->last_fail_timeout ? 504 : 502;
    hr_api_error e;
    hr_api_error_set(&e, status, NULL, fail_code_type(status), "route '%.100s': no target could answer; last: %.300s",
                     c->rt->name, c->last_fail[0] ? c->last_fail : "(none)");
    return reply_error(c, &e, false);
}

/* Tries the targets from c->cur + 1 on. */
static mhd_result next_target(conn *c)
{
    hr_http *h = c->h;
    hr_router *r = h->p.router;
    while (++c->cur < c->n_order) {
        const hr_target *t = &c->rt->targets[c->order[c->cur]];
        bool last = c->cur == c->n_order - 1;
        c->backend = t->backend;
        if (t->backend == HR_ROUTE_LOCAL) {
            hr_sched *s = atomic_load(&h->sched);
            const hr_api_model *m = atomic_load(&h->api);
            if (!s || !m) {
                snprintf(c->last_fail, sizeof c->last_fail, "local: the model is loading");
                c->last_fail_status = 503;
                hr_router_count(r, HR_ROUTE_LOCAL, true, !last);
                continue;
            }
            bool busy = false;
            hr_router_busy(r, HR_ROUTE_LOCAL, 1);
            c->busy_counted = true;
            mhd_result ret = start_generation(c, s, m, last ? NULL : &busy);
            if (busy) {
                hr_router_busy(r, HR_ROUTE_LOCAL, -1);
                c->busy_counted = false;
                hr_router_count(r, HR_ROUTE_LOCAL, true, true);
                continue;
            }
            hr_router_count(r, HR_ROUTE_LOCAL, c->status >= 400, false);
            return ret;
        }
        const hr_backend *b = hr_router_backend(r, t->backend);
        char url[1200];
        hr_router_url(r, t, c->endpoint, url, sizeof url);
        size_t blen = 0;
        char *body = c->up_base ? hr_router_body_model(c->up_base, c->up_base_len, t->model, &blen) : NULL;
        if (!body)
            return fail(c, 500, NULL, "out of memory");
        hr_up_req rq = {
            .url = url,
            .api_key = b->api_key,
            .body = body,
            .body_len = blen,
            .stream = c->client_stream,
            .drop_usage_chunk = c->client_stream && !c->client_usage,
            .connect_timeout_s = b->connect_timeout_s,
            .first_byte_timeout_s = b->first_byte_timeout_s,
            .timeout_s = b->timeout_s,
            .notify = on_notify,
            .ctx = c,
        };
        c->call_t0 = hr_now_s();
        c->call = hr_upstream_start(hr_router_upstream(r), &rq);
        free(body);
        if (!c->call)
            return fail(c, 503, "shutting_down", "cannot start the upstream call");
        hr_router_busy(r, t->backend, 1);
        c->busy_counted = true;
        c->up_active = true;
        list_add(c);
        return up_step(c);
    }
    return routed_fail(c);
}

static ssize_t up_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    conn *c = cls;
    (void)pos;
    for (;;) {
        if (c->out_off < c->out.len) {
            size_t n = c->out.len - c->out_off;
            if (n > max)
                n = max;
            memcpy(buf, c->out.p + c->out_off, n);
            c->out_off += n;
            if (c->out_off == c->out.len)
                c->out.len = c->out_off = 0;
            c->last_write = hr_now_s();
            return (ssize_t)n;
        }
        if (c->end_written)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (atomic_load(&c->h->closing))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        pthread_mutex_lock(&c->mu);
        c->pending = false;
        pthread_mutex_unlock(&c->mu);
        size_t n = hr_up_call_read(c->call, buf, max);
        if (n) {
            c->last_write = hr_now_s();
            return (ssize_t)n;
        }
        hr_up_state st;
        hr_up_call_state(c->call, &st);
        if (st.done && st.n_avail == 0) {
            if (!st.complete) {
                /* a mid-stream failure: an error event, never a clean end */
                if (!st.error_event) {
                    hr_api_error e;
                    hr_api_error_set(&e, st.timed_out ? 504 : 502, NULL, fail_code_type(st.timed_out ? 504 : 502),
                                     "the upstream failed mid-stream: %.300s", st.error);
                    char *j = hr_api_error_json(&e);
                    if (j && hr_api_buf_puts(&c->out, "data: ") && hr_api_buf_puts(&c->out, j))
                        hr_api_buf_puts(&c->out, "\n\n");
                    free(j);
                }
                if (!st.saw_done)
                    hr_api_buf_puts(&c->out, "data: [DONE]\n\n");
                hr_router_count(c->h->p.router, c->backend, true, false);
            }
            c->end_written = true;
            continue;
        }
        if (st.n_avail)
            continue;
        pthread_mutex_lock(&c->mu);
        bool tick = c->tick;
        c->tick = false;
        pthread_mutex_unlock(&c->mu);
        if (tick && hr_now_s() - c->last_write >= 0.2) {
            hr_api_buf_puts(&c->out, ": keep-alive\n\n");
            continue;
        }
        if (try_suspend(c))
            return 0;
    }
}

/* Drives an upstream call until it is committed (streaming), answered,
 * passed through (a client error) or failed (next target). */
static mhd_result up_step(conn *c)
{
    hr_http *h = c->h;
    if (atomic_load(&h->closing))
        return MHD_NO;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        c->pending = false;
        pthread_mutex_unlock(&c->mu);
        hr_up_state st;
        hr_up_call_state(c->call, &st);
        bool ok = st.status >= 200 && st.status < 300;
        if (st.id[0] && (ok || st.done))
            snprintf(c->req_id, sizeof c->req_id, "%s", st.id);
        if (c->client_stream && ok && st.n_avail > 0) {
            /* first bytes: commit to this target and stream */
            c->up_committed = true;
            c->streaming = true;
            c->last_write = hr_now_s();
            c->out.max = 1u << 20;
            struct MHD_Response *r =
                MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, up_stream_read, c, NULL);
            if (!r)
                return MHD_NO;
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
            MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
            MHD_add_response_header(r, "X-Accel-Buffering", "no");
            add_cors(c, r);
            mhd_result ret = MHD_queue_response(c->mc, MHD_HTTP_OK, r);
            MHD_destroy_response(r);
            c->responded = true;
            c->status = 200;
            count_status(h, 200);
            hr_router_count(h->p.router, c->backend, false, false);
            return ret;
        }
        if (st.done) {
            bool retriable = st.status == 0 || st.status == 408 || st.status == 429 || st.status >= 500 ||
                             (ok && (st.failed || st.n_avail == 0));
            if (!retriable || (ok && !st.failed)) {
                /* the answer (non-streamed) or a client error passed through */
                char *b = malloc(st.n_avail + 1);
                if (!b)
                    return fail(c, 500, NULL, "out of memory");
                size_t n = hr_up_call_read(c->call, b, st.n_avail);
                b[n] = 0;
                c->up_committed = true;
                hr_router_count(h->p.router, c->backend, !ok, false);
                return reply(c, st.status, b, NULL, false);
            }
            /* failed before the first byte: meter the try, go on */
            const hr_target *t = &c->rt->targets[c->order[c->cur]];
            snprintf(c->last_fail, sizeof c->last_fail, "%s (%s): %s", hr_router_backend_name(h->p.router, t->backend),
                     t->model, st.error);
            c->last_fail_status = st.status;
            c->last_fail_timeout = st.timed_out;
            int mstatus = st.status && !ok ? st.status : st.timed_out ? 504 : 502;
            meter_upstream(c, mstatus, "error");
            hr_router_count(h->p.router, c->backend, true, c->cur + 1 < c->n_order);
            release_call(c);
            c->up_active = false;
            return next_target(c);
        }
        if (try_suspend(c))
            return MHD_YES;
        if (atomic_load(&h->closing))
            return MHD_NO;
    }
}

/* Generation requests when a router is configured: route lookup, budget
 * reservation, then the route's targets in policy order. */
static mhd_result routed_generation(conn *c, hr_sched *s, const hr_api_model *m)
{
    hr_http *h = c->h;
    hr_router *r = h->p.router;
    const char *model = c->head.model;
    int32_t max_tokens = c->head.max_tokens;
    int64_t n = (int64_t)c->head.n * c->head.n_prompts;
    c->client_stream = c->head.stream;
    c->client_usage = c->head.include_usage;
    c->endpoint = c->route == R_CHAT ? "/chat/completions" : "/completions";
    c->rt = hr_router_find(r, model);
    bool local_direct = !c->rt;
    if (local_direct && model[0] && strcmp(model, m->id) && !(m->alt_id && !strcmp(model, m->alt_id))) {
        hr_api_error e;
        hr_api_error_set(&e, 404, "model", "model_not_found",
                         "The model '%.200s' does not exist (neither the local model nor a route)", model);
        return reply_error(c, &e, false);
    }
    snprintf(c->req_id, sizeof c->req_id, "%s-%016llx%08llx", c->route == R_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)next_rand(h), (unsigned long long)(next_rand(h) & 0xffffffffu));
    if (local_direct && c->lrq_failed) /* the parser's precise error, nothing reserved */
        return reply_error(c, &c->lrq_err, false);
    if (!local_direct && c->head.n > HR_API_MAX_N_ROUTED) {
        hr_api_error e;
        hr_api_error_set(&e, 400, "n", NULL, "'n' must be between 1 and %d (got %d)", HR_API_MAX_N_ROUTED,
                         c->head.n);
        return reply_error(c, &e, false);
    }
    /* budget: the worst case of the parsed request. Local: its prompt
     * tokens + n x max_tokens per prompt; a route: prompt (body bytes / 2)
     * + max_tokens x n x prompts. Without max_tokens, the key's default. */
    hr_budget *bg = hr_router_budget(r);
    int32_t def_max = hr_budget_default_max_tokens(bg, c->key_id);
    if (def_max > 0) {
        if (!max_tokens) {
            c->inject_max = def_max;
            max_tokens = def_max;
        }
        int64_t prompt = (int64_t)(c->body.len / 2) + 1, out = (int64_t)max_tokens * n;
        if (local_direct && c->lrq) {
            hr_api_request_default_max(c->lrq, m, c->inject_max);
            prompt = 0;
            out = hr_api_request_tokens(c->lrq);
        }
        double usd = c->rt ? hr_router_max_cost(r, c->rt, prompt, out) : 0;
        char msg[400];
        hr_budget_verdict bv = hr_budget_reserve_ex(bg, c->key_id, prompt + out, usd, &c->hold, msg, sizeof msg);
        if (bv == HR_BUDGET_UNAVAILABLE) { /* the shared ledger is down: fail closed */
            hr_api_error e;
            hr_api_error_set(&e, 503, NULL, "budget_unavailable", "%s", msg);
            return reply_error(c, &e, false);
        }
        if (bv != HR_BUDGET_OK) {
            hr_router_count_budget_refusal(r);
            hr_api_error e;
            hr_api_error_set(&e, 429, NULL, "budget_exceeded", "%s", msg);
            snprintf(e.type, sizeof e.type, "insufficient_quota");
            return reply_error(c, &e, false);
        }
    }
    if (local_direct) {
        c->backend = HR_ROUTE_LOCAL;
        return start_generation(c, s, m, NULL);
    }
    c->n_order = hr_router_order(r, c->rt, c->order);
    c->cur = -1;
    return next_target(c);
}

/* ---- preparation threads --------------------------------------------- */

/* Parses the body once (JSON, head); when a local target may serve it,
 * also the full request: template rendering and tokenizing. Runs on a
 * preparation thread: a multi-megabyte prompt never stalls the event
 * thread (health checks, streams). */
static void prepare(conn *c)
{
    hr_http *h = c->h;
    if (c->route == R_TOKENIZE || c->route == R_DETOKENIZE) {
        const hr_api_model *m = atomic_load(&h->api);
        const char *b = c->body.p ? c->body.p : "";
        c->tok_out = c->route == R_TOKENIZE ? hr_api_tokenize(m, b, c->body.len, &c->doc_err)
                                            : hr_api_detokenize(m, b, c->body.len, &c->doc_err);
        c->doc_failed = !c->tok_out;
        return;
    }
    hr_api_kind kind = c->route == R_CHAT ? HR_API_CHAT : HR_API_COMPLETION;
    if (hr_api_doc_parse(kind, c->body.p ? c->body.p : "", c->body.len, &c->doc, &c->head, &c->doc_err)) {
        c->doc_failed = true;
        return;
    }
    const hr_api_model *m = atomic_load(&h->api);
    bool any_model = false, local = true, upstream = false;
    if (h->p.router) {
        const hr_route *rt = hr_router_find(h->p.router, c->head.model);
        if (rt) {
            any_model = true; /* the route chose the local engine, whatever `model` says */
            local = false;
            for (int i = 0; i < rt->n_targets; i++) {
                local |= rt->targets[i].backend == HR_ROUTE_LOCAL;
                upstream |= rt->targets[i].backend != HR_ROUTE_LOCAL;
            }
        }
    }
    if (local && m && hr_api_parse_doc(m, c->doc, next_rand(h), any_model, &c->lrq, &c->lrq_err))
        c->lrq_failed = true;
    if (upstream) {
        /* the same default max_tokens routed_generation reserves for */
        int32_t def_max = hr_budget_default_max_tokens(hr_router_budget(h->p.router), c->key_id);
        c->up_base = hr_api_doc_forward(c->doc, c->head.stream, c->head.max_tokens ? 0 : def_max, &c->up_base_len);
    }
    hr_api_doc_free(c->doc); /* all that is needed of it was taken */
    c->doc = NULL;
}

static void *prep_main(void *arg)
{
    hr_http *h = arg;
    pthread_mutex_lock(&h->prep_mu);
    for (;;) {
        while (!h->prep_head && !h->prep_quit)
            pthread_cond_wait(&h->prep_cv, &h->prep_mu);
        conn *c = h->prep_head;
        if (!c)
            break;
        h->prep_head = c->prep_next;
        if (!h->prep_head)
            h->prep_tail = NULL;
        pthread_mutex_unlock(&h->prep_mu);
        if (atomic_load(&h->closing)) {
            c->doc_failed = true;
            hr_api_error_set(&c->doc_err, 503, NULL, "shutting_down", "the server is shutting down");
        } else {
            prepare(c);
        }
        /* hand it back to the event thread; c is not touched after this */
        pthread_mutex_lock(&c->mu);
        c->prep = PREP_DONE;
        c->pending = true;
        if (c->suspended) {
            c->suspended = false;
            MHD_resume_connection(c->mc);
        }
        pthread_mutex_unlock(&c->mu);
        pthread_mutex_lock(&h->prep_mu);
    }
    pthread_mutex_unlock(&h->prep_mu);
    return NULL;
}

/* The generation, once the body was prepared. */
static mhd_result generate(conn *c)
{
    hr_http *h = c->h;
    c->prep = PREP_USED;
    if (atomic_load(&h->closing))
        return MHD_NO;
    if (c->doc_failed)
        return reply_error(c, &c->doc_err, false);
    if (c->tok_out) {
        char *out = c->tok_out;
        c->tok_out = NULL;
        return reply(c, 200, out, NULL, false);
    }
    if (atomic_load(&h->stopping))
        return fail(c, 503, "shutting_down", "the server is shutting down");
    hr_sched *s = atomic_load(&h->sched);
    const hr_api_model *m = atomic_load(&h->api);
    if (!s || !m)
        return fail(c, 503, "model_loading", "the model is loading; retry shortly");
    return h->p.router ? routed_generation(c, s, m) : start_generation(c, s, m, NULL);
}

/* Suspends until the preparation thread is done with c, then generates. */
static mhd_result prep_wait(conn *c)
{
    for (;;) {
        if (try_suspend(c))
            return MHD_YES;
        pthread_mutex_lock(&c->mu);
        bool done = c->prep == PREP_DONE;
        c->pending = done; /* left set: the generation's first drain clears it */
        pthread_mutex_unlock(&c->mu);
        if (done)
            return generate(c);
        if (atomic_load(&c->h->closing))
            return MHD_NO;
    }
}

static mhd_result prep_start(conn *c)
{
    hr_http *h = c->h;
    if (h->n_prep_thr == 0) { /* no thread could be started: prepare here */
        prepare(c);
        return generate(c);
    }
    c->prep = PREP_QUEUED;
    pthread_mutex_lock(&h->prep_mu);
    c->prep_next = NULL;
    if (h->prep_tail)
        h->prep_tail->prep_next = c;
    else
        h->prep_head = c;
    h->prep_tail = c;
    pthread_cond_signal(&h->prep_cv);
    pthread_mutex_unlock(&h->prep_mu);
    return prep_wait(c);
}

/* ---- metrics ---------------------------------------------------------- */

static void put_hist(hr_api_buf *b, const char *name, const char *help, const hr_hist *x)
{
    char line[256];
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    hr_api_buf_puts(b, line);
    /* Prometheus buckets are cumulative; accept per-bucket counts too
     * (they add up to n) and sum them here. */
    uint64_t sum = 0, acc = 0;
    for (int i = 0; i <= HR_HIST_BUCKETS; i++)
        sum += x->counts[i];
    bool per_bucket = sum == x->n;
    for (int i = 0; i <= HR_HIST_BUCKETS; i++) {
        acc = per_bucket ? acc + x->counts[i] : x->counts[i];
        if (i < HR_HIST_BUCKETS)
            snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %llu\n", name, hr_hist_bounds[i],
                     (unsigned long long)acc);
        else
            snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)acc);
        hr_api_buf_puts(b, line);
    }
    snprintf(line, sizeof line, "%s_sum %.6f\n%s_count %llu\n", name, x->sum, name, (unsigned long long)x->n);
    hr_api_buf_puts(b, line);
}

static void put_metric(hr_api_buf *b, const char *name, const char *type, const char *help, double v)
{
    char line[384];
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
    hr_api_buf_puts(b, line);
}

static void put_line(void *ctx, const char *line) { hr_api_buf_puts(ctx, line); }

static char *metrics_text(hr_http *h)
{
    hr_api_buf b = {.max = 1u << 20};
    char line[256];
    hr_api_buf_puts(&b, "# HELP hearth_http_requests_total HTTP responses by status code.\n"
                        "# TYPE hearth_http_requests_total counter\n");
    for (int s = 100; s < 600; s++) {
        uint64_t n = atomic_load(&h->by_status[s]);
        if (n) {
            snprintf(line, sizeof line, "hearth_http_requests_total{code=\"%d\"} %llu\n", s, (unsigned long long)n);
            hr_api_buf_puts(&b, line);
        }
    }
    put_metric(&b, "hearth_http_client_disconnects_total", "counter",
               "Generations cancelled because the client went away.",
               (double)atomic_load(&h->cancelled_by_client));
    put_metric(&b, "hearth_http_generations_open", "gauge", "Generation requests with an open connection.",
               (double)atomic_load(&h->n_gen));
    pthread_mutex_lock(&h->cmu);
    unsigned nc = h->n_conns;
    pthread_mutex_unlock(&h->cmu);
    put_metric(&b, "hearth_http_connections_open", "gauge", "Open client connections (not counting refused ones).", nc);
    put_metric(&b, "hearth_http_connections_refused_total", "counter",
               "Connections answered 503 for being over --max-conns or --max-conns-per-ip.",
               (double)atomic_load(&h->conns_refused));
    if (h->p.router)
        hr_router_metrics(h->p.router, put_line, &b);
    hr_usage_metrics(h->p.usage, put_line, &b);
    if (h->p.router)
        hr_budget_metrics(hr_router_budget(h->p.router), put_line, &b);
    hr_sched *s = atomic_load(&h->sched);
    put_metric(&b, "hearth_ready", "gauge", "1 once the model is loaded.", s ? 1 : 0);
    if (s) {
        hr_sched_stats st;
        hr_sched_stats_of(s, &st);
        put_metric(&b, "hearth_prompt_tokens_total", "counter", "Prompt tokens processed.",
                   (double)st.prompt_tokens);
        put_metric(&b, "hearth_prompt_tokens_cached_total", "counter", "Prompt tokens served from the prefix cache.",
                   (double)st.cached_prompt_tokens);
        put_metric(&b, "hearth_generation_tokens_total", "counter", "Tokens generated.",
                   (double)st.generated_tokens);
        put_metric(&b, "hearth_requests_finished_total", "counter", "Generation requests finished.",
                   (double)st.requests_done);
        put_metric(&b, "hearth_preemptions_total", "counter", "Sequences preempted for lack of KV blocks.",
                   (double)st.preemptions);
        put_metric(&b, "hearth_prefix_waits_total", "counter",
                   "Requests held back until a running sequence finished computing their shared prefix.",
                   (double)st.prefix_waits);
        put_metric(&b, "hearth_scheduler_steps_total", "counter", "Scheduler steps.", (double)st.steps);
        put_metric(&b, "hearth_queue_depth", "gauge", "Requests waiting for admission.", st.waiting);
        put_metric(&b, "hearth_running_sequences", "gauge", "Sequences in the running batch.", st.running);
        put_metric(&b, "hearth_kv_blocks_total", "gauge", "KV cache blocks in the pool.", st.kv_blocks_total);
        put_metric(&b, "hearth_kv_blocks_used", "gauge", "KV blocks referenced by a sequence.", st.kv_blocks_used);
        put_metric(&b, "hearth_kv_blocks_free", "gauge", "KV blocks not referenced by any sequence.",
                   st.kv_blocks_total - st.kv_blocks_used);
        put_metric(&b, "hearth_kv_blocks_cached", "gauge", "Free KV blocks holding a reusable prefix.",
                   st.kv_blocks_cached);
        put_metric(&b, "hearth_kv_block_bytes", "gauge", "Bytes per KV block.", (double)st.kv_bytes_per_block);
        put_metric(&b, "hearth_kv_bytes_used", "gauge", "Bytes of KV cache referenced by a sequence.",
                   (double)st.kv_blocks_used * (double)st.kv_bytes_per_block);
        put_metric(&b, "hearth_prefix_cache_hit_ratio", "gauge", "Cached prompt tokens / prompt tokens.",
                   st.prompt_tokens ? (double)st.cached_prompt_tokens / (double)st.prompt_tokens : 0.0);
        hr_hist ttft, itl;
        hr_sched_hists(s, &ttft, &itl);
        put_hist(&b, "hearth_time_to_first_token_seconds", "Submit to first generated token.", &ttft);
        put_hist(&b, "hearth_inter_token_latency_seconds", "Time between generated tokens of a sequence.", &itl);
    }
    return b.p;
}

/* /v1/models with the routes appended (owned_by "hearth-route"). */
static char *add_routes(hr_http *h, char *models_json)
{
    json_t *j = json_loads(models_json, 0, NULL);
    json_t *data = json_object_get(j, "data");
    if (!json_is_array(data)) {
        json_decref(j);
        return models_json;
    }
    const hr_route_config *cfg = hr_router_config(h->p.router);
    for (int i = 0; i < cfg->n_routes; i++)
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s}", "id", cfg->routes[i].name, "object", "model",
                                              "created", (json_int_t)0, "owned_by", "hearth-route"));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return models_json;
    free(models_json);
    return s;
}

/* ---- routing ---------------------------------------------------------- */

static enum route route_of(const char *url, bool *post_route)
{
    static const struct {
        const char *path;
        enum route r;
        bool post;
    } tab[] = {
        {"/health", R_HEALTH, false},
        {"/metrics", R_METRICS, false},
        {"/v1/models", R_MODELS, false},
        {"/v1/chat/completions", R_CHAT, true},
        {"/chat/completions", R_CHAT, true},
        {"/v1/completions", R_COMPLETIONS, true},
        {"/completions", R_COMPLETIONS, true},
        {"/tokenize", R_TOKENIZE, true},
        {"/detokenize", R_DETOKENIZE, true},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(url, tab[i].path)) {
            *post_route = tab[i].post;
            return tab[i].r;
        }
    if (!strncmp(url, "/v1/models/", 11)) {
        *post_route = false;
        return R_MODEL_ONE;
    }
    return R_NONE;
}

static mhd_result handle(conn *c, const char *url)
{
    hr_http *h = c->h;
    hr_sched *s = atomic_load(&h->sched);
    const hr_api_model *m = atomic_load(&h->api);
    if (c->route == R_HEALTH) {
        if (!s)
            return fail(c, 503, "model_loading", "the model is loading");
        return reply(c, 200, strdup("{\"status\":\"ok\"}"), NULL, false);
    }
    if (c->route == R_METRICS) {
        char *t = metrics_text(h);
        return t ? reply(c, 200, t, "text/plain; version=0.0.4", false) : fail(c, 500, NULL, "out of memory");
    }
    if (!s || !m)
        return fail(c, 503, "model_loading", "the model is loading; retry shortly");
    if (atomic_load(&h->stopping))
        return fail(c, 503, "shutting_down", "the server is shutting down");
    hr_api_error e;
    char *out = NULL;
    switch (c->route) {
    case R_MODELS:
        out = hr_api_models_json(m, false);
        if (out && h->p.router)
            out = add_routes(h, out);
        break;
    case R_MODEL_ONE:
        if (strcmp(url + 11, m->id) && !(m->alt_id && !strcmp(url + 11, m->alt_id))) {
            hr_api_error_set(&e, 404, "model", "model_not_found", "The model '%.200s' does not exist", url + 11);
            return reply_error(c, &e, false);
        }
        out = hr_api_models_json(m, true);
        break;
    case R_TOKENIZE:
    case R_DETOKENIZE: /* tokenizing a big body is work for a preparation thread */
    case R_CHAT:
    case R_COMPLETIONS:
        return prep_start(c);
    default:
        break;
    }
    return out ? reply(c, 200, out, NULL, false) : fail(c, 500, NULL, "out of memory");
}

/* Stands for a connection whose state could not be allocated: it got a
 * static 503 and the rest of its upload is dropped. */
static char oom_conn;

static mhd_result reply_oom_static(struct MHD_Connection *mc)
{
    static const char body[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
                               "\"param\":null,\"code\":null}}";
    struct MHD_Response *r =
        MHD_create_response_from_buffer(sizeof body - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    mhd_result ret = MHD_queue_response(mc, 503, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- connection-level checks ----------------------------------------- */

static unsigned ip_hash(const unsigned char *a)
{
    uint32_t x = 2166136261u;
    for (int i = 0; i < 16; i++)
        x = (x ^ a[i]) * 16777619u;
    return x % IP_BUCKETS;
}

/* Counts connections in all and per client address; one past a limit is
 * not counted (so a flood from one address cannot push the others over the
 * global cap), is marked to be answered 503 at its first request, and is
 * given 2 s to send one, so that it frees its socket soon. */
static void on_connection(void *cls, struct MHD_Connection *mc, void **sctx, enum MHD_ConnectionNotificationCode code)
{
    hr_http *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        sock_ctx *k = calloc(1, sizeof *k);
        if (!k)
            return; /* not counted (and never over) */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = ci ? ci->client_addr : NULL;
        if (sa && sa->sa_family == AF_INET) {
            memset(k->a + 10, 0xff, 2);
            memcpy(k->a + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
            k->has_ip = true;
        } else if (sa && sa->sa_family == AF_INET6) {
            memcpy(k->a, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
            k->has_ip = true;
        }
        pthread_mutex_lock(&h->cmu);
        ip_count *e = NULL;
        if (k->has_ip) {
            unsigned b = ip_hash(k->a);
            e = h->ipt[b];
            while (e && memcmp(e->a, k->a, 16))
                e = e->next;
            if (!e && (e = calloc(1, sizeof *e)) != NULL) {
                memcpy(e->a, k->a, 16);
                e->next = h->ipt[b];
                h->ipt[b] = e;
            }
            if (!e)
                k->has_ip = false; /* out of memory: counted in all only */
        }
        k->per_ip = e && h->per_ip && e->n + 1 > h->per_ip;
        k->over = k->per_ip || h->n_conns + 1 > h->p.max_conns;
        if (!k->over) {
            h->n_conns++;
            if (e)
                e->n++;
            k->counted = true;
        } else if (e && e->n == 0) { /* created above for nothing */
            h->ipt[ip_hash(k->a)] = e->next;
            free(e);
        }
        pthread_mutex_unlock(&h->cmu);
        *sctx = k;
        if (k->over)
            MHD_set_connection_option(mc, MHD_CONNECTION_OPTION_TIMEOUT,
                                      h->p.idle_timeout_s < 2 ? h->p.idle_timeout_s : 2u);
        return;
    }
    sock_ctx *k = *sctx;
    if (!k)
        return;
    *sctx = NULL;
    if (!k->counted) {
        free(k);
        return;
    }
    pthread_mutex_lock(&h->cmu);
    h->n_conns--;
    if (k->has_ip) {
        ip_count **pe = &h->ipt[ip_hash(k->a)];
        while (*pe && memcmp((*pe)->a, k->a, 16))
            pe = &(*pe)->next;
        if (*pe && --(*pe)->n == 0) {
            ip_count *e = *pe;
            *pe = e->next;
            free(e);
        }
    }
    pthread_mutex_unlock(&h->cmu);
    free(k);
}

typedef struct {
    int n;
    const char *first;
    bool conflict;
} cl_scan;

static mhd_result scan_cl(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    cl_scan *x = cls;
    (void)kind;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
        return MHD_YES;
    if (x->n++ == 0)
        x->first = value;
    else if (!value || !x->first || strcmp(value, x->first))
        x->conflict = true;
    return MHD_YES;
}

static bool name_is(const char *s, size_t n, const char *name)
{
    return strlen(name) == n && !strncasecmp(s, name, n);
}

/* On a loopback bind only these Host names reach the server (a web page
 * whose name was rebound to 127.0.0.1 sends its own name): localhost, the
 * loopback addresses, the bound address and --allow-host names, with no
 * port or the bound one. */
static bool host_ok(hr_http *h, const char *host)
{
    if (!h->loopback || h->host_any || !host)
        return true; /* no Host at all: HTTP/1.0 (MHD answers 400 for 1.1) */
    size_t nl;
    const char *port = NULL;
    if (host[0] == '[') {
        const char *rb = strchr(host, ']');
        if (!rb || (rb[1] && rb[1] != ':'))
            return false;
        nl = (size_t)(rb - host) + 1;
        if (rb[1])
            port = rb + 2;
    } else {
        const char *col = strchr(host, ':');
        nl = col ? (size_t)(col - host) : strlen(host);
        if (col)
            port = col + 1;
    }
    if (port) {
        char *e;
        errno = 0;
        long v = strtol(port, &e, 10);
        if (!*port || *e || errno || v != atomic_load(&h->port))
            return false;
    }
    if (name_is(host, nl, "localhost") || name_is(host, nl, "127.0.0.1") || name_is(host, nl, "[::1]"))
        return true;
    char bound[72];
    snprintf(bound, sizeof bound, strchr(h->p.host, ':') ? "[%s]" : "%s", h->p.host);
    if (name_is(host, nl, bound))
        return true;
    for (int i = 0; i < h->p.n_allow_hosts; i++)
        if (name_is(host, nl, h->p.allow_hosts[i]))
            return true;
    return false;
}

/* A request with an Origin header comes from a web page: allowed for a
 * --cors origin (or '*'), and for the server's own origin. */
static bool origin_ok(conn *c, const char *origin)
{
    hr_http *h = c->h;
    if (!origin)
        return true;
    if (h->cors_any) {
        c->cors_origin = "*";
        return true;
    }
    for (int i = 0; i < h->p.n_cors; i++)
        if (!strcasecmp(origin, h->p.cors[i])) {
            snprintf(c->origin, sizeof c->origin, "%s", origin);
            c->cors_origin = c->origin;
            return true;
        }
    const char *host = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    return host && !strncasecmp(origin, "http://", 7) && !strcasecmp(origin + 7, host);
}

/* A CORS preflight (OPTIONS from an allowed origin). */
static mhd_result preflight(conn *c)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    add_cors(c, r);
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    const char *pna = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "Access-Control-Request-Private-Network");
    if (pna && !strcasecmp(pna, "true"))
        MHD_add_response_header(r, "Access-Control-Allow-Private-Network", "true");
    mhd_result ret = MHD_queue_response(c->mc, 204, r);
    MHD_destroy_response(r);
    c->responded = true;
    c->status = 204;
    count_status(c->h, 204);
    return ret;
}

/* JSON endpoints take application/json (parameters such as charset
 * allowed): a form or text/plain POST is what a page can send without a
 * preflight. */
static bool json_ctype(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return name_is(ct, n, "application/json");
}

/* Checks made once the headers are in, before any body is read; answers
 * (and returns true) when the request is refused. */
static bool refuse_early(conn *c, const char *url, const char *method, mhd_result *ret)
{
    hr_http *h = c->h;
    struct MHD_Connection *mc = c->mc;
    const union MHD_ConnectionInfo *si = MHD_get_connection_info(mc, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const sock_ctx *k = si ? si->socket_context : NULL;
    if (k && k->over) {
        atomic_fetch_add(&h->conns_refused, 1);
        *ret = k->per_ip ? fail_close(c, 503, "too_many_connections",
                                      "too many connections from this address (limit %u); retry later", h->per_ip)
                         : fail_close(c, 503, "too_many_connections",
                                      "too many connections (limit %u); retry later", h->p.max_conns);
        return true;
    }
    cl_scan cl = {0};
    MHD_get_connection_values(mc, MHD_HEADER_KIND, scan_cl, &cl);
    if (cl.conflict) {
        *ret = fail_close(c, 400, NULL, "conflicting Content-Length headers");
        return true;
    }
    if (!host_ok(h, MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST))) {
        *ret = fail(c, 421, "misdirected_request",
                    "this server only answers to localhost on this port (Host header; see --allow-host)");
        return true;
    }
    if (!origin_ok(c, MHD_lookup_connection_value(mc, MHD_HEADER_KIND, "Origin"))) {
        *ret = fail(c, 403, "cross_origin_forbidden",
                    "cross-origin requests are not allowed (Origin header); see --cors");
        return true;
    }
    bool post_route = false;
    c->route = route_of(url, &post_route);
    if (c->route != R_NONE && c->cors_origin && !strcmp(method, MHD_HTTP_METHOD_OPTIONS)) {
        *ret = preflight(c);
        return true;
    }
    if (c->route == R_NONE) {
        *ret = fail(c, 404, NULL, "Invalid URL (%.16s %.200s)", method, url);
        return true;
    }
    if (post_route != c->post && !(c->route == R_HEALTH && !strcmp(method, MHD_HTTP_METHOD_HEAD))) {
        *ret = fail(c, 405, NULL, "%.200s needs %s, not %.16s", url, post_route ? "POST" : "GET", method);
        return true;
    }
    if (!authorized(c)) {
        c->unauthenticated = true;
        hr_api_error e;
        hr_api_error_set(&e, 401, NULL, "invalid_api_key",
                         "Incorrect or missing API key; send 'Authorization: Bearer <key>'");
        *ret = reply_error(c, &e, false);
        return true;
    }
    const char *cls = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cls && strtoull(cls, NULL, 10) > h->p.max_body) {
        *ret = fail(c, 413, NULL, "the request body is larger than the limit of %zu bytes", h->p.max_body);
        return true;
    }
    const char *ct = MHD_lookup_connection_value(mc, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (c->post && !json_ctype(ct)) {
        *ret = fail(c, 415, NULL, "Content-Type must be application/json, not '%.100s'", ct ? ct : "(none)");
        return true;
    }
    return false;
}

static mhd_result on_request(void *cls, struct MHD_Connection *mc, const char *url, const char *method,
                             const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
    hr_http *h = cls;
    conn *c = *con_cls;
    if (c == (void *)&oom_conn) {
        *upload_size = 0;
        return MHD_YES;
    }
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c) {
            count_status(h, 503);
            *con_cls = &oom_conn;
            return reply_oom_static(mc);
        }
        c->h = h;
        c->mc = mc;
        c->t0 = hr_now_s();
        struct timespec wall;
        clock_gettime(CLOCK_REALTIME, &wall);
        c->t0_ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
        pthread_mutex_init(&c->mu, NULL);
        c->body.max = h->p.max_body;
        *con_cls = c;
        c->post = !strcmp(method, MHD_HTTP_METHOD_POST);
        c->http11 = version && !strcmp(version, MHD_HTTP_VERSION_1_1);
        mhd_result ret;
        if (refuse_early(c, url, method, &ret))
            return ret;
        return MHD_YES;
    }
    if (c->responded) {
        *upload_size = 0; /* an early answer went out; drop the rest */
        return MHD_YES;
    }
    if (*upload_size) {
        if (!c->too_big && !hr_api_buf_put(&c->body, upload_data, *upload_size)) {
            c->too_big = true;
            c->body_oom = c->body.len + *upload_size <= c->body.max;
            hr_api_buf_free(&c->body);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->prep == PREP_QUEUED || c->prep == PREP_DONE) /* resumed: the body was prepared */
        return prep_wait(c);
    if (c->up_active && !c->up_committed) /* resumed: waiting for an upstream */
        return up_step(c);
    if (c->rq) /* resumed: a non-streamed generation */
        return nonstream_step(c);
    if (c->too_big && c->body_oom)
        return fail(c, 503, NULL, "out of memory while reading the request body");
    if (c->too_big)
        return fail(c, 413, NULL, "the request body is larger than the limit of %zu bytes", h->p.max_body);
    return handle(c, url);
}

/* One usage-log row per generation request, answered or not, streamed or
 * not: the token counts are those the response's usage object reports. */
static void meter(hr_http *h, conn *c, bool unfinished)
{
    if (!h->p.usage || (c->route != R_CHAT && c->route != R_COMPLETIONS) || !c->post)
        return;
    if (c->unauthenticated) { /* counted, not stored: anonymous clients must not grow the log */
        hr_usage_skip_unauthenticated(h->p.usage);
        return;
    }
    if (c->call) {
        meter_upstream(c, c->status ? c->status : 499, unfinished ? "cancelled" : NULL);
        return;
    }
    const hr_api_model *m = atomic_load(&h->api);
    hr_req_usage u = total_usage(c);
    int32_t reasoning = 0;
    const char *finish = "";
    if (c->resp)
        hr_api_resp_summary(c->resp, &reasoning, &finish);
    if (unfinished)
        finish = "cancelled";
    hr_usage_row row = {
        .ts_ms = c->t0_ms,
        .request_id = c->req_id,
        .key_id = c->key_id,
        .model = m ? m->id : "",
        .backend = "local",
        .prompt_tokens = u.prompt_tokens,
        .cached_tokens = u.cached_tokens,
        .completion_tokens = u.completion_tokens,
        .reasoning_tokens = reasoning,
        .ttft_s = c->nreq && u.completion_tokens ? u.ttft_s : -1.0,
        .duration_s = hr_now_s() - c->t0,
        .status = c->status,
        .finish_reason = finish,
        .stream = c->rq ? c->rq->stream : false,
    };
    hr_usage_record(h->p.usage, &row);
}

/* The end of a generation request under a router: settle its budget
 * reservation with the real usage, start the pilot's shadow, let the
 * upstream call go. */
static void routed_end(hr_http *h, conn *c, bool unfinished)
{
    hr_router *r = h->p.router;
    int32_t pt = 0, ct = 0;
    double ttft = -1;
    bool est = false;
    const char *backend = "local", *model = "";
    char *text = NULL;
    const hr_api_model *m = atomic_load(&h->api);
    if (c->call) {
        hr_up_state st;
        hr_up_call_state(c->call, &st);
        if (c->status >= 200 && c->status < 300)
            up_tokens(c, &st, &pt, &ct, &est);
        ttft = st.ttft_s >= 0 ? st.ttft_s + (c->call_t0 - c->t0) : -1;
        const hr_target *t = &c->rt->targets[c->order[c->cur]];
        backend = hr_router_backend_name(r, t->backend);
        model = t->model;
        double usd = hr_budget_cost(hr_backend_price(hr_router_backend(r, t->backend), model), pt,
                                    st.have_usage ? st.cached_tokens : 0, ct);
        hr_budget_settle(hr_router_budget(r), &c->hold, (int64_t)pt + ct, usd);
        if (!unfinished && st.complete && c->rt->has_shadow)
            text = hr_up_call_text(c->call);
    } else {
        hr_req_usage u = total_usage(c);
        pt = u.prompt_tokens;
        ct = u.completion_tokens;
        ttft = c->nreq && u.completion_tokens ? u.ttft_s : -1.0;
        model = m ? m->id : "";
        hr_budget_settle(hr_router_budget(r), &c->hold, (int64_t)pt + ct, 0);
        if (!unfinished && c->rt && c->rt->has_shadow && !c->failed)
            text = strdup(c->ptext.p ? c->ptext.p : "");
    }
    if (text) {
        hr_pilot_primary pp = {
            .ts_ms = c->t0_ms,
            .request_id = c->req_id,
            .key_id = c->key_id,
            .endpoint = c->endpoint,
            .body = c->body.p ? c->body.p : "",
            .body_len = c->body.len,
            .backend = backend,
            .model = model,
            .text = text,
            .ttft_s = ttft,
            .total_s = hr_now_s() - c->t0,
            .prompt_tokens = pt,
            .completion_tokens = ct,
            .status = c->status,
        };
        hr_router_pilot(r, c->rt, &pp);
        free(text);
    }
    if (c->call)
        release_call(c);
    else if (c->busy_counted) {
        hr_router_busy(r, HR_ROUTE_LOCAL, -1);
        c->busy_counted = false;
    }
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    hr_http *h = cls;
    conn *c = *con_cls;
    (void)mc;
    if (!c || c == (void *)&oom_conn) {
        *con_cls = NULL;
        return;
    }
    *con_cls = NULL;
    list_del(c);
    bool unfinished = c->client_gone;
    for (int i = 0; i < c->nreq; i++)
        if (!hr_req_finished(c->reqs[i]))
            unfinished = true;
    if (c->call) {
        hr_up_state st;
        hr_up_call_state(c->call, &st);
        unfinished = !st.done;
    }
    meter(h, c, unfinished);
    if (h->p.router && (c->route == R_CHAT || c->route == R_COMPLETIONS) && c->post)
        routed_end(h, c, unfinished);
    for (int i = 0; i < c->nreq; i++) {
        hr_req_cancel(c->reqs[i]);
        hr_req_release(c->reqs[i]);
    }
    if (unfinished && toe != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN)
        atomic_fetch_add(&h->cancelled_by_client, 1);
    if (!h->p.quiet && c->nreq) {
        fprintf(stderr, "hearth serve: %s %d %s%s %.3f s\n", c->route == R_CHAT ? "chat" : "completion",
                c->status, c->streaming ? "stream" : "", unfinished ? " (client gone, cancelled)" : "",
                hr_now_s() - c->t0);
    }
    hr_api_request_free(c->rq);
    hr_api_resp_free(c->resp);
    hr_api_buf_free(&c->body);
    hr_api_buf_free(&c->out);
    hr_api_buf_free(&c->ptext);
    pthread_mutex_lock(&c->mu); /* a preparation thread's hand-back has let go */
    pthread_mutex_unlock(&c->mu);
    hr_api_doc_free(c->doc);
    hr_api_request_free(c->lrq);
    free(c->up_base);
    free(c->tok_out);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* The client's side of a non-streamed generation's socket: PEER_OPEN,
 * PEER_EOF (it sent FIN: a half-close, after which it still reads, or a
 * close; TCP cannot tell them apart until we write) or PEER_GONE (reset,
 * an error, or the connection closed). Peeks, so a pipelined next
 * request stays in the socket for libmicrohttpd. */
enum { PEER_OPEN, PEER_EOF, PEER_GONE };

static int peer_state(conn *c, int *fd)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return PEER_OPEN;
    *fd = ci->connect_fd;
    char b;
    ssize_t n = recv(*fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return PEER_GONE;
    struct tcp_info ti;
    socklen_t tl = sizeof ti;
    if (getsockopt(*fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 && ti.tcpi_state == TCP_CLOSE)
        return PEER_GONE;
    return n == 0 ? PEER_EOF : PEER_OPEN;
}

/* After a FIN on a non-streamed request, writes an interim "102
 * Processing" (HTTP/1.1 clients must accept 1xx before the answer): a
 * half-closed client reads it and goes on waiting, a closed one answers
 * with a reset, which the next look sees. Only while the connection is
 * suspended (c->mu held, so it cannot be resumed meanwhile): then
 * libmicrohttpd writes nothing to the socket. */
static void probe_peer(conn *c, int fd)
{
    static const char msg[] = "HTTP/1.1 102 Processing\r\n\r\n";
    pthread_mutex_lock(&c->mu);
    if (c->suspended && !c->probed) {
        c->probed = true;
        if (send(fd, msg, sizeof msg - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno != EAGAIN &&
            errno != EWOULDBLOCK)
            c->client_gone = true;
    }
    pthread_mutex_unlock(&c->mu);
}

/* Every 250 ms: resumes every suspended stream (keep-alive comments, which
 * find dead streams) and checks the sockets of non-streamed generations, which
 * send nothing until the answer: a client that went away is cancelled then,
 * not when the whole answer has been computed. */
static void *ticker_main(void *arg)
{
    hr_http *h = arg;
    while (!atomic_load(&h->closing)) {
        struct timespec ts = {0, 250 * 1000 * 1000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&h->mu);
        for (conn *c = h->gens; c; c = c->next) {
            if (!c->streaming) {
                if (c->nreq == 0 || c->client_gone)
                    continue;
                int fd = -1, ps = peer_state(c, &fd);
                /* an HTTP/1.0 client that half-closed cannot be sent a 102: it just waits */
                if (ps == PEER_EOF && c->http11 && !c->probed)
                    probe_peer(c, fd);
                if (ps == PEER_GONE || c->client_gone) {
                    c->client_gone = true;
                    for (int i = 0; i < c->nreq; i++)
                        hr_req_cancel(c->reqs[i]);
                }
                continue;
            }
            pthread_mutex_lock(&c->mu);
            c->tick = true;
            if (c->suspended) {
                c->suspended = false;
                MHD_resume_connection(c->mc);
            }
            pthread_mutex_unlock(&c->mu);
        }
        pthread_mutex_unlock(&h->mu);
    }
    return NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    hr_http *h = cls;
    if (h->p.quiet)
        return;
    fprintf(stderr, "hearth serve: http: ");
    vfprintf(stderr, fmt, ap);
}

hr_status hr_http_start(const hr_http_params *p, hr_http **out, hr_err *err)
{
    *out = NULL;
    hr_http *h = calloc(1, sizeof *h);
    if (!h)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    h->p = *p;
    if (!h->p.host)
        h->p.host = "127.0.0.1";
    if (!h->p.max_body)
        h->p.max_body = 8u << 20;
    if (!h->p.max_conns)
        h->p.max_conns = 4096;
    if (!h->p.idle_timeout_s)
        h->p.idle_timeout_s = 60;
    if (!h->p.n_threads)
        h->p.n_threads = 1;
    if (h->p.max_conns_per_ip > 0)
        h->per_ip = (unsigned)h->p.max_conns_per_ip;
    else if (h->p.max_conns_per_ip == 0)
        h->per_ip = h->p.max_conns / 4 ? h->p.max_conns / 4 : 1;
    for (int i = 0; i < h->p.n_cors; i++)
        h->cors_any |= !strcmp(h->p.cors[i], "*");
    for (int i = 0; i < h->p.n_allow_hosts; i++)
        h->host_any |= !strcmp(h->p.allow_hosts[i], "*");
    atomic_store(&h->rng, (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid() << 20 ^ (uintptr_t)h);
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->prep_mu, NULL);
    pthread_cond_init(&h->prep_cv, NULL);
    pthread_mutex_init(&h->cmu, NULL);

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, h->p.host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)h->p.port);
        h->loopback = (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, h->p.host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)h->p.port);
        flags |= MHD_USE_IPv6;
        h->loopback = IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
    } else {
        pthread_mutex_destroy(&h->mu);
        pthread_mutex_destroy(&h->cmu);
        free(h);
        return hr_err_set(err, HR_ERR_INVALID, "--host '%s' is not an IPv4 or IPv6 address", p->host);
    }
    struct MHD_OptionItem opts[16];
    int n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &ss};
    /* past max_conns (or the per-address limit) connections are still taken,
     * to be answered 503 (on_connection); the library closes any past this */
    unsigned hard = h->p.max_conns + h->p.max_conns / 8 + 16;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, hard, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, h->p.idle_timeout_s, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 128 * 1024, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL};
    if (h->p.n_threads > 1)
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, h->p.n_threads, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    h->d = MHD_start_daemon(flags, (uint16_t)h->p.port, NULL, NULL, on_request, h, MHD_OPTION_ARRAY, opts,
                            MHD_OPTION_END);
    if (!h->d) {
        pthread_mutex_destroy(&h->mu);
        pthread_mutex_destroy(&h->cmu);
        free(h);
        return hr_err_set(err, HR_ERR_IO, "cannot listen on %s port %d: %s", p->host, p->port,
                          errno ? strerror(errno) : "libmicrohttpd failed to start");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    atomic_store(&h->port, di ? di->port : p->port);
    if (pthread_create(&h->ticker, NULL, ticker_main, h) == 0)
        h->ticker_started = true;
    while (h->n_prep_thr < HR_HTTP_PREP_THREADS && pthread_create(&h->prep_thr[h->n_prep_thr], NULL, prep_main, h) == 0)
        h->n_prep_thr++;
    *out = h;
    return HR_OK;
}

int hr_http_port(const hr_http *h) { return atomic_load(&((hr_http *)h)->port); }

void hr_http_set_ready(hr_http *h, hr_sched *s, const hr_api_model *m)
{
    atomic_store(&h->api, m);
    atomic_store(&h->sched, s);
}

void hr_http_stop(hr_http *h, double grace_s)
{
    if (!h)
        return;
    atomic_store(&h->stopping, true);
    MHD_socket ls = MHD_quiesce_daemon(h->d);
    if (ls != MHD_INVALID_SOCKET)
        close(ls);
    /* cancel every generation; their final events end the streams */
    pthread_mutex_lock(&h->mu);
    for (conn *c = h->gens; c; c = c->next)
        for (int i = 0; i < c->nreq; i++)
            hr_req_cancel(c->reqs[i]);
    pthread_mutex_unlock(&h->mu);
    double t0 = hr_now_s();
    while (atomic_load(&h->n_gen) > 0 && hr_now_s() - t0 < grace_s) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* whatever is left fails fast: resume it so MHD can close it */
    atomic_store(&h->closing, true);
    if (h->ticker_started)
        pthread_join(h->ticker, NULL);
    /* the preparation threads hand back what they hold (failing fast now) */
    pthread_mutex_lock(&h->prep_mu);
    h->prep_quit = true;
    pthread_cond_broadcast(&h->prep_cv);
    pthread_mutex_unlock(&h->prep_mu);
    for (int i = 0; i < h->n_prep_thr; i++)
        pthread_join(h->prep_thr[i], NULL);
    pthread_mutex_lock(&h->mu);
    for (conn *c = h->gens; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        if (c->suspended) {
            c->suspended = false;
            MHD_resume_connection(c->mc);
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&h->mu);
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->prep_mu);
    pthread_cond_destroy(&h->prep_cv);
    pthread_mutex_destroy(&h->cmu);
    free(h);
}
