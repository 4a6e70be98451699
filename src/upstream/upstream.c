/* upstream.c - the libcurl multi I/O thread (see upstream.h). */
#include "upstream/upstream.h"
#include "base/clock.h"
#include "upstream/sse.h"
#include "upstream/upstream_impl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

typedef struct {
    char *p;
    size_t len, off, cap;
} ubuf;

static bool ubuf_put(ubuf *b, const char *s, size_t n, size_t max)
{
    if (b->len + n > max)
        return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

enum cmd_op { CMD_START, CMD_CANCEL, CMD_UNPAUSE };

typedef struct cmd {
    enum cmd_op op;
    hr_up_call *call;
    struct cmd *next;
} cmd;

struct hr_up_call {
    hr_upstream *u;
    atomic_int refs;
    /* fixed at start */
    char *url, *body, *auth;
    size_t body_len;
    bool stream, drop_usage;
    double connect_s, first_byte_s, timeout_s;
    size_t max_buffer;
    double t0;
    /* notify (nmu) */
    pthread_mutex_t nmu;
    void (*notify)(void *);
    void *ctx;
    /* shared state (mu) */
    pthread_mutex_t mu;
    hr_up_state st;
    ubuf out;
    ubuf text;
    bool paused, unpause_asked, released;
    /* I/O thread only */
    CURL *e;
    struct curl_slist *hdrs;
    char errbuf[CURL_ERROR_SIZE];
    bool active, got_headers, raw, saw_done, fatal;
    char fatal_msg[200];
    hr_sse sse;  /* the stream's event reader */
    ubuf body_in; /* raw body (non-stream or error status) */
    hr_up_call *prev, *next;
};

struct hr_upstream {
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t mu; /* cmds, stopping */
    cmd *head, *tail;
    bool stopping;
    hr_up_call *active;
    atomic_uint_fast64_t n_started, n_failed, n_timeouts, n_paused;
    atomic_int n_in_flight;
};

static void call_unref(hr_up_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    free(c->url);
    free(c->body);
    free(c->auth);
    free(c->out.p);
    free(c->text.p);
    hr_sse_free(&c->sse);
    free(c->body_in.p);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->nmu);
    free(c);
}

static void notify(hr_up_call *c)
{
    pthread_mutex_lock(&c->nmu);
    if (c->notify)
        c->notify(c->ctx);
    pthread_mutex_unlock(&c->nmu);
}

static bool push_cmd(hr_upstream *u, enum cmd_op op, hr_up_call *c)
{
    cmd *m = malloc(sizeof *m);
    if (!m)
        return false;
    *m = (cmd){.op = op, .call = c};
    pthread_mutex_lock(&u->mu);
    if (u->stopping && op == CMD_START) {
        pthread_mutex_unlock(&u->mu);
        free(m);
        return false;
    }
    if (u->tail)
        u->tail->next = m;
    else
        u->head = m;
    u->tail = m;
    pthread_mutex_unlock(&u->mu);
    curl_multi_wakeup(u->multi);
    return true;
}

/* ---- response parsing (I/O thread) ------------------------------------ */

static int32_t get_i32(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v))
        return 0;
    json_int_t x = json_integer_value(v);
    return x < 0 ? 0 : x > INT32_MAX ? INT32_MAX : (int32_t)x;
}

static void read_usage(hr_up_call *c, json_t *u)
{
    if (!json_is_object(u))
        return;
    c->st.have_usage = true;
    c->st.prompt_tokens = get_i32(u, "prompt_tokens");
    c->st.completion_tokens = get_i32(u, "completion_tokens");
    c->st.cached_tokens = get_i32(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
    c->st.reasoning_tokens = get_i32(json_object_get(u, "completion_tokens_details"), "reasoning_tokens");
}

static void read_id(hr_up_call *c, json_t *j)
{
    json_t *id = json_object_get(j, "id");
    if (!c->st.id[0] && json_is_string(id))
        snprintf(c->st.id, sizeof c->st.id, "%s", json_string_value(id));
}

static void add_text(hr_up_call *c, const char *s, size_t n)
{
    if (c->text.len + n > HR_UP_MAX_TEXT)
        n = HR_UP_MAX_TEXT - c->text.len;
    if (n)
        ubuf_put(&c->text, s, n, HR_UP_MAX_TEXT);
}

/* The first choice (index 0) of a chunk or a whole response; true if it
 * carried text. Called with mu. */
static bool read_choice(hr_up_call *c, json_t *choices, bool delta)
{
    size_t i;
    json_t *ch;
    json_array_foreach(choices, i, ch) {
        json_t *ix = json_object_get(ch, "index");
        if (json_is_integer(ix) ? json_integer_value(ix) != 0 : i != 0)
            continue;
        json_t *msg = json_object_get(ch, delta ? "delta" : "message");
        json_t *t = json_object_get(msg, "content");
        if (!json_is_string(t))
            t = json_object_get(ch, "text");
        bool got = json_is_string(t) && json_string_length(t);
        if (got)
            add_text(c, json_string_value(t), json_string_length(t));
        json_t *f = json_object_get(ch, "finish_reason");
        if (json_is_string(f))
            snprintf(c->st.finish_reason, sizeof c->st.finish_reason, "%s", json_string_value(f));
        return got;
    }
    return false;
}

static void set_fatal(hr_up_call *c, const char *msg)
{
    if (!c->fatal) {
        c->fatal = true;
        snprintf(c->fatal_msg, sizeof c->fatal_msg, "%s", msg);
    }
}

/* One SSE event's data (its data lines joined). Called with mu. */
static void sse_event(hr_up_call *c, const char *d, size_t dlen)
{
    bool forward = true;
    if (!strcmp(d, "[DONE]")) {
        c->saw_done = true;
    } else {
        json_t *j = json_loadb(d, dlen, 0, NULL);
        if (!json_is_object(j)) {
            json_decref(j);
            set_fatal(c, "the upstream sent an event that is not a JSON object");
            return;
        }
        json_t *e = json_object_get(j, "error");
        if (e && !json_is_null(e)) {
            c->st.error_event = true;
            json_t *m = json_object_get(e, "message");
            snprintf(c->st.error, sizeof c->st.error, "upstream error event: %.200s",
                     json_is_string(m) ? json_string_value(m) : "(no message)");
        }
        json_t *u = json_object_get(j, "usage");
        if (json_is_object(u))
            read_usage(c, u);
        read_id(c, j);
        json_t *ch = json_object_get(j, "choices");
        if (json_is_array(ch)) {
            if (json_array_size(ch) == 0 && json_is_object(u) && c->drop_usage)
                forward = false;
            if (read_choice(c, ch, true) && c->st.ttft_s < 0)
                c->st.ttft_s = hr_now_s() - c->t0;
        }
        json_decref(j);
    }
    if (forward) {
        if (!ubuf_put(&c->out, "data: ", 6, SIZE_MAX) || !ubuf_put(&c->out, d, dlen, SIZE_MAX) ||
            !ubuf_put(&c->out, "\n\n", 2, SIZE_MAX))
            set_fatal(c, "out of memory forwarding an upstream event");
        else
            c->st.n_total += dlen + 8;
    }
}

static bool on_event(void *ud, const char *d, size_t len)
{
    hr_up_call *c = ud;
    pthread_mutex_lock(&c->mu);
    sse_event(c, d, len);
    pthread_mutex_unlock(&c->mu);
    return !c->fatal;
}

/* Feeds stream bytes to the event reader (upstream/sse.h). */
static void sse_feed(hr_up_call *c, const char *p, size_t n)
{
    hr_err err;
    hr_status st = hr_sse_feed(&c->sse, p, n, on_event, c, &err);
    if (st == HR_ERR_LIMIT)
        set_fatal(c, "an upstream event is larger than 1 MiB");
    else if (st)
        set_fatal(c, "out of memory reading an upstream event");
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    hr_up_call *c = ud;
    (void)p;
    c->got_headers = true;
    return sz * n;
}

static size_t on_write(char *p, size_t sz, size_t n, void *ud)
{
    hr_up_call *c = ud;
    size_t len = sz * n;
    if (c->fatal)
        return 0;
    pthread_mutex_lock(&c->mu);
    if (c->st.status == 0) {
        long code = 0;
        curl_easy_getinfo(c->e, CURLINFO_RESPONSE_CODE, &code);
        c->st.status = (int)code;
        c->raw = !c->stream || code < 200 || code >= 300;
    }
    if (!c->raw && c->out.len - c->out.off >= c->max_buffer) {
        c->paused = true;
        c->unpause_asked = false;
        pthread_mutex_unlock(&c->mu);
        atomic_fetch_add(&c->u->n_paused, 1);
        return CURL_WRITEFUNC_PAUSE;
    }
    pthread_mutex_unlock(&c->mu);
    uint64_t before = c->st.n_total;
    if (c->raw) {
        size_t cap = c->st.status >= 200 && c->st.status < 300 ? HR_UP_MAX_BODY : (64u << 10);
        if (!ubuf_put(&c->body_in, p, len, cap)) {
            if (cap == HR_UP_MAX_BODY) {
                set_fatal(c, "the upstream response is larger than 64 MiB");
                return 0;
            }
            /* an error body: keep the first 64 KiB, drop the rest */
        }
    } else {
        sse_feed(c, p, len);
        if (c->fatal)
            return 0;
    }
    if (c->st.n_total != before)
        notify(c);
    return len;
}

/* ---- the I/O thread --------------------------------------------------- */

static void active_add(hr_upstream *u, hr_up_call *c)
{
    c->next = u->active;
    c->prev = NULL;
    if (u->active)
        u->active->prev = c;
    u->active = c;
    c->active = true;
}

static void active_del(hr_upstream *u, hr_up_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        u->active = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->active = false;
}

/* Ends a call: parses a collected body, sets the final state, notifies,
 * drops the I/O thread's reference. */
static void finish(hr_upstream *u, hr_up_call *c, CURLcode rc, const char *why, bool timed_out)
{
    if (c->active) {
        active_del(u, c);
        curl_multi_remove_handle(u->multi, c->e);
        atomic_fetch_sub(&u->n_in_flight, 1);
    }
    long code = 0;
    if (c->e)
        curl_easy_getinfo(c->e, CURLINFO_RESPONSE_CODE, &code);
    pthread_mutex_lock(&c->mu);
    hr_up_state *st = &c->st;
    if (!st->status)
        st->status = (int)code;
    st->done = true;
    st->total_s = hr_now_s() - c->t0;
    if (why) {
        st->failed = true;
        st->timed_out = timed_out;
        snprintf(st->error, sizeof st->error, "%s", why);
    } else if (c->fatal) {
        st->failed = true;
        snprintf(st->error, sizeof st->error, "%s", c->fatal_msg);
    } else if (rc != CURLE_OK) {
        st->failed = true;
        st->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
        snprintf(st->error, sizeof st->error, "%s%s%.180s", curl_easy_strerror(rc), c->errbuf[0] ? ": " : "",
                 c->errbuf);
    } else if (c->raw || st->status == 0) {
        /* a whole body: the answer of a non-streamed call, or an error */
        if (st->status >= 200 && st->status < 300) {
            json_t *j = json_loadb(c->body_in.p ? c->body_in.p : "", c->body_in.len, 0, NULL);
            if (!json_is_object(j)) {
                st->failed = true;
                snprintf(st->error, sizeof st->error, "the upstream answered %d with a body that is not JSON",
                         st->status);
            } else {
                read_usage(c, json_object_get(j, "usage"));
                read_id(c, j);
                json_t *ch = json_object_get(j, "choices");
                if (json_is_array(ch))
                    read_choice(c, ch, false);
                st->complete = true;
                st->ttft_s = st->total_s;
            }
            json_decref(j);
        } else {
            st->failed = true;
            snprintf(st->error, sizeof st->error, "the upstream answered HTTP %d", st->status);
        }
        /* hand the body over as the output */
        free(c->out.p);
        c->out = c->body_in;
        c->body_in = (ubuf){0};
        st->n_total = c->out.len;
    } else if (!c->saw_done) {
        st->failed = true;
        snprintf(st->error, sizeof st->error, "the upstream stream ended before [DONE] (cut)");
    } else {
        st->complete = !st->error_event;
        st->failed = st->error_event;
    }
    st->saw_done = c->saw_done;
    st->n_avail = c->out.len - c->out.off;
    pthread_mutex_unlock(&c->mu);
    if (st->failed)
        atomic_fetch_add(&u->n_failed, 1);
    if (st->timed_out)
        atomic_fetch_add(&u->n_timeouts, 1);
    if (c->e) {
        curl_easy_cleanup(c->e);
        c->e = NULL;
    }
    curl_slist_free_all(c->hdrs);
    c->hdrs = NULL;
    notify(c);
    call_unref(c);
}

static bool setup(hr_upstream *u, hr_up_call *c)
{
    c->e = curl_easy_init();
    if (!c->e)
        return false;
    CURL *e = c->e;
    c->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    c->hdrs = curl_slist_append(c->hdrs, "Expect:");
    c->hdrs = curl_slist_append(c->hdrs, c->stream ? "Accept: text/event-stream" : "Accept: application/json");
    if (c->auth)
        c->hdrs = curl_slist_append(c->hdrs, c->auth);
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_s * 1000));
    if (c->timeout_s > 0)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(c->timeout_s * 1000));
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    curl_easy_setopt(e, CURLOPT_USERAGENT, "hearth");
    return curl_multi_add_handle(u->multi, e) == CURLM_OK;
}

static void run_cmds(hr_upstream *u)
{
    pthread_mutex_lock(&u->mu);
    cmd *m = u->head;
    u->head = u->tail = NULL;
    pthread_mutex_unlock(&u->mu);
    while (m) {
        cmd *next = m->next;
        hr_up_call *c = m->call;
        switch (m->op) {
        case CMD_START: {
            pthread_mutex_lock(&c->mu);
            bool released = c->released;
            pthread_mutex_unlock(&c->mu);
            if (released) {
                finish(u, c, CURLE_OK, "cancelled", false);
            } else if (!setup(u, c)) {
                finish(u, c, CURLE_OK, "cannot start the upstream call (curl)", false);
            } else {
                active_add(u, c);
                atomic_fetch_add(&u->n_in_flight, 1);
                atomic_fetch_add(&u->n_started, 1);
            }
            break;
        }
        case CMD_CANCEL:
            if (c->active)
                finish(u, c, CURLE_OK, "cancelled", false);
            call_unref(c);
            break;
        case CMD_UNPAUSE:
            if (c->active && c->e) {
                pthread_mutex_lock(&c->mu);
                bool was = c->paused;
                c->paused = false;
                pthread_mutex_unlock(&c->mu);
                if (was)
                    curl_easy_pause(c->e, CURLPAUSE_CONT);
            }
            call_unref(c);
            break;
        }
        free(m);
        m = next;
    }
}

static void *io_main(void *arg)
{
    hr_upstream *u = arg;
    for (;;) {
        run_cmds(u);
        pthread_mutex_lock(&u->mu);
        bool stop = u->stopping;
        pthread_mutex_unlock(&u->mu);
        if (stop)
            break;
        int running = 0;
        curl_multi_perform(u->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(u->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            hr_up_call *c = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
            if (c)
                finish(u, c, msg->data.result, NULL, false);
        }
        /* first-byte deadlines */
        double now = hr_now_s(), wait = 1.0;
        for (hr_up_call *c = u->active, *next; c; c = next) {
            next = c->next;
            if (c->got_headers)
                continue;
            double left_s = c->t0 + c->first_byte_s - now;
            if (left_s <= 0) {
                char why[96];
                snprintf(why, sizeof why, "no response from the upstream within %.3g s", c->first_byte_s);
                finish(u, c, CURLE_OK, why, true);
            } else if (left_s < wait) {
                wait = left_s;
            }
        }
        int ms = (int)(wait * 1000) + 1;
        curl_multi_poll(u->multi, NULL, 0, ms, NULL);
    }
    /* stopping: fail whatever is left */
    while (u->active)
        finish(u, u->active, CURLE_OK, "the server is shutting down", false);
    run_cmds(u);
    while (u->active)
        finish(u, u->active, CURLE_OK, "the server is shutting down", false);
    return NULL;
}

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static void global_init(void) { curl_global_init(CURL_GLOBAL_ALL); }

hr_status hr_upstream_new(hr_upstream **out, hr_err *err)
{
    pthread_once(&global_once, global_init);
    hr_upstream *u = calloc(1, sizeof *u);
    if (!u)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    u->multi = curl_multi_init();
    if (!u->multi) {
        free(u);
        return hr_err_set(err, HR_ERR_NOMEM, "curl_multi_init failed");
    }
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, 1024L);
    pthread_mutex_init(&u->mu, NULL);
    if (pthread_create(&u->thread, NULL, io_main, u)) {
        curl_multi_cleanup(u->multi);
        pthread_mutex_destroy(&u->mu);
        free(u);
        return hr_err_set(err, HR_ERR_IO, "cannot start the upstream I/O thread");
    }
    *out = u;
    return HR_OK;
}

void hr_upstream_free(hr_upstream *u)
{
    if (!u)
        return;
    pthread_mutex_lock(&u->mu);
    u->stopping = true;
    pthread_mutex_unlock(&u->mu);
    curl_multi_wakeup(u->multi);
    pthread_join(u->thread, NULL);
    curl_multi_cleanup(u->multi);
    pthread_mutex_destroy(&u->mu);
    free(u);
}

hr_up_call *hr_upstream_start(hr_upstream *u, const hr_up_req *r)
{
    hr_up_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->u = u;
    atomic_init(&c->refs, 2);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE); /* notify may release its own call */
    pthread_mutex_init(&c->nmu, &ma);
    pthread_mutexattr_destroy(&ma);
    c->url = strdup(r->url);
    c->body = malloc(r->body_len + 1);
    if (r->api_key) {
        size_t n = strlen(r->api_key) + 32;
        c->auth = malloc(n);
        if (c->auth)
            snprintf(c->auth, n, "Authorization: Bearer %s", r->api_key);
    }
    if (!c->url || !c->body || (r->api_key && !c->auth)) {
        atomic_store(&c->refs, 1);
        call_unref(c);
        return NULL;
    }
    memcpy(c->body, r->body, r->body_len);
    c->body[r->body_len] = 0;
    c->body_len = r->body_len;
    c->stream = r->stream;
    c->drop_usage = r->drop_usage_chunk;
    c->connect_s = r->connect_timeout_s > 0 ? r->connect_timeout_s : 5;
    c->first_byte_s = r->first_byte_timeout_s > 0 ? r->first_byte_timeout_s : 30;
    c->timeout_s = r->timeout_s;
    c->max_buffer = r->max_buffer ? r->max_buffer : (1u << 20);
    c->notify = r->notify;
    c->ctx = r->ctx;
    c->st.ttft_s = -1;
    c->st.total_s = -1;
    c->t0 = hr_now_s();
    hr_sse_init(&c->sse, HR_UP_MAX_EVENT);
    if (!push_cmd(u, CMD_START, c)) {
        atomic_store(&c->refs, 1);
        call_unref(c);
        return NULL;
    }
    return c;
}

void hr_up_call_state(hr_up_call *c, hr_up_state *st)
{
    pthread_mutex_lock(&c->mu);
    *st = c->st;
    st->n_avail = c->out.len - c->out.off;
    pthread_mutex_unlock(&c->mu);
}

size_t hr_up_call_read(hr_up_call *c, char *buf, size_t max)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->out.len - c->out.off;
    if (n > max)
        n = max;
    if (n) {
        memcpy(buf, c->out.p + c->out.off, n);
        c->out.off += n;
        if (c->out.off == c->out.len)
            c->out.off = c->out.len = 0;
    }
    bool unpause = c->paused && !c->unpause_asked && c->out.len - c->out.off < c->max_buffer / 2;
    if (unpause) {
        c->unpause_asked = true;
        atomic_fetch_add(&c->refs, 1);
    }
    pthread_mutex_unlock(&c->mu);
    if (unpause && !push_cmd(c->u, CMD_UNPAUSE, c))
        call_unref(c);
    return n;
}

char *hr_up_call_text(hr_up_call *c)
{
    pthread_mutex_lock(&c->mu);
    char *s = malloc(c->text.len + 1);
    if (s) {
        if (c->text.len)
            memcpy(s, c->text.p, c->text.len);
        s[c->text.len] = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return s;
}

void hr_up_call_release(hr_up_call *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->nmu);
    c->notify = NULL;
    pthread_mutex_unlock(&c->nmu);
    pthread_mutex_lock(&c->mu);
    bool done = c->st.done;
    c->released = true;
    pthread_mutex_unlock(&c->mu);
    if (!done) {
        /* the command carries the caller's reference to the I/O thread */
        if (push_cmd(c->u, CMD_CANCEL, c))
            return;
    }
    call_unref(c);
}

void hr_upstream_stats_of(hr_upstream *u, hr_upstream_stats *out)
{
    out->started = atomic_load(&u->n_started);
    out->failed = atomic_load(&u->n_failed);
    out->timeouts = atomic_load(&u->n_timeouts);
    out->paused = atomic_load(&u->n_paused);
    out->in_flight = atomic_load(&u->n_in_flight);
}

/* ---- without a network (upstream_impl.h) ------------------------------ */

hr_status hr_up_parse_stream(const char *p, size_t n, const size_t *cuts, size_t ncuts, bool drop_usage,
                             hr_up_parsed *out, hr_err *err)
{
    memset(out, 0, sizeof *out);
    hr_up_call *c = calloc(1, sizeof *c);
    if (!c)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->nmu, NULL);
    c->stream = true;
    c->drop_usage = drop_usage;
    c->st.status = 200;
    c->st.ttft_s = -1;
    c->st.total_s = -1;
    c->t0 = hr_now_s();
    hr_sse_init(&c->sse, HR_UP_MAX_EVENT);
    size_t at = 0;
    for (size_t k = 0; k <= ncuts && !c->fatal; k++) {
        size_t end = k < ncuts && cuts[k] >= at && cuts[k] <= n ? cuts[k] : n;
        sse_feed(c, p + at, end - at);
        at = end;
    }
    hr_up_call_state(c, &out->st);
    out->fatal = c->fatal;
    snprintf(out->fatal_msg, sizeof out->fatal_msg, "%s", c->fatal_msg);
    out->out_len = c->out.len - c->out.off;
    out->out = malloc(out->out_len + 1);
    out->text = hr_up_call_text(c);
    hr_status st = HR_OK;
    if (!out->out || !out->text) {
        hr_up_parsed_free(out);
        st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    } else {
        if (out->out_len)
            memcpy(out->out, c->out.p + c->out.off, out->out_len);
        out->out[out->out_len] = 0;
    }
    call_unref(c);
    return st;
}

void hr_up_parsed_free(hr_up_parsed *r)
{
    free(r->out);
    free(r->text);
    r->out = r->text = NULL;
}
