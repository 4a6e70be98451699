/* The scheduler: a request alone reproduces the golden greedy text; many
 * concurrent requests (mixed prompts, n > 1, preemption under a tiny KV
 * pool, prefix-cache hits) each produce exactly what they produce alone;
 * stop strings, cancellation, logprobs, admission errors; admission past a
 * request that does not fit, without starving it; notify without locks;
 * parallel sampling equal to sequential; injected engine failures reaching
 * the requests they concern. */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"
#include "engine/engine.h"
#include "engine/kvcache.h"
#include "sched/sched.h"
#include "testutil.h"

static hr_model *model;

typedef struct {
    char *text[4];
    size_t len[4];
    hr_finish finish[4];
    int n_tok_info;
    float min_lp, max_lp;
} result;

static void collect(hr_req *r, result *res)
{
    memset(res, 0, sizeof *res);
    res->min_lp = 1e9f;
    res->max_lp = -1e9f;
    hr_event ev[16];
    int spins = 0;
    while (!hr_req_finished(r)) {
        size_t n = hr_req_poll(r, ev, 16);
        if (!n) {
            usleep(200);
            assert_true(++spins < 600000); /* 2 minutes */
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            int c = ev[i].index;
            assert_true(c >= 0 && c < 4);
            if (ev[i].kind == HR_EV_TEXT) {
                res->text[c] = realloc(res->text[c], res->len[c] + ev[i].len + 1);
                memcpy(res->text[c] + res->len[c], ev[i].text, ev[i].len);
                res->len[c] += ev[i].len;
                res->text[c][res->len[c]] = 0;
                for (int32_t k = 0; k < ev[i].n_tokens; k++) {
                    res->n_tok_info++;
                    float lp = ev[i].tokens[k].logprob;
                    if (lp < res->min_lp)
                        res->min_lp = lp;
                    if (lp > res->max_lp)
                        res->max_lp = lp;
                }
            } else {
                res->finish[c] = ev[i].finish;
            }
        }
    }
}

static void free_result(result *res)
{
    for (int i = 0; i < 4; i++)
        free(res->text[i]);
}

static hr_gen_params greedy(const int32_t *prompt, int32_t n, int32_t max_tokens)
{
    hr_gen_params g = {0};
    g.prompt = prompt;
    g.n_prompt = n;
    g.max_tokens = max_tokens;
    g.n = 1;
    g.sample = hr_sample_defaults();
    g.sample.temperature = 0;
    g.logprobs = -1;
    g.ignore_eos = true;
    return g;
}

static hr_sched_params mk_params(int32_t max_running, int64_t kv_tokens)
{
    hr_sched_params p = hr_sched_defaults();
    p.max_running = max_running;
    p.n_ctx = 512;
    p.step_tokens = 64;
    p.max_queue = 64;
    if (kv_tokens)
        p.kv_bytes = kv_tokens * (int64_t)hr_kv_bytes_per_token(hr_model_hparams(model));
    return p;
}

static hr_sched *mk_with(const hr_sched_params *p)
{
    hr_sched *s;
    hr_err err = {0};
    if (hr_sched_new(model, p, &s, &err))
        fail_msg("%s", err.msg);
    return s;
}

static hr_sched *mk(int32_t max_running, int64_t kv_tokens)
{
    hr_sched_params p = mk_params(max_running, kv_tokens);
    return mk_with(&p);
}

/* Polls r until every completion is done, recording each one's finish
 * (and the first error message) without keeping the text. */
static void wait_done(hr_req *r, hr_finish *fin, int n, char *errmsg, size_t errcap)
{
    hr_event ev[16];
    int spins = 0;
    while (!hr_req_finished(r)) {
        size_t got = hr_req_poll(r, ev, 16);
        if (!got) {
            usleep(200);
            assert_true(++spins < 600000);
            continue;
        }
        for (size_t i = 0; i < got; i++)
            if (ev[i].kind == HR_EV_DONE) {
                assert_true(ev[i].index >= 0 && ev[i].index < n);
                fin[ev[i].index] = ev[i].finish;
                if (ev[i].finish == HR_FINISH_ERROR && errmsg && !errmsg[0])
                    snprintf(errmsg, errcap, "%s", ev[i].error ? ev[i].error : "(none)");
            }
    }
}

/* Waits until nothing runs and every KV block is free again. */
static void wait_idle(hr_sched *s, hr_sched_stats *st)
{
    for (int k = 0; k < 2000; k++) {
        hr_sched_stats_of(s, st);
        if (st->running == 0 && st->waiting == 0 && st->kv_blocks_used == 0)
            return;
        usleep(1000);
    }
}

static void test_golden_alone(void **state)
{
    (void)state;
    json_error_t je;
    json_t *d = json_load_file(tu_fixture("models/stories260K.golden.json"), 0, &je);
    assert_non_null(d);
    hr_sched *s = mk(4, 0);
    int32_t bos = 1;
    hr_gen_params g = greedy(&bos, 1, 200);
    hr_req *r;
    hr_err err = {0};
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_OK);
    result res;
    collect(r, &res);
    assert_string_equal(res.text[0], json_string_value(json_object_get(d, "generated_text")));
    assert_int_equal(res.finish[0], HR_FINISH_LENGTH);
    hr_req_usage u = hr_req_usage_of(r);
    assert_int_equal(u.prompt_tokens, 1);
    assert_int_equal(u.completion_tokens, 200);
    hr_req_release(r);
    free_result(&res);
    hr_sched_free(s);
    json_decref(d);
}

#define NREQ 24

/* prompts: BOS + a few story tokens, some identical, different lengths */
static int32_t prompts[NREQ][40];
static int32_t plen[NREQ];

static void make_prompts(void)
{
    static const int32_t story[] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317,
                                    426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282,
                                    295, 433, 426, 385, 328, 432, 358, 394, 261, 370};
    for (int i = 0; i < NREQ; i++) {
        prompts[i][0] = 1;
        plen[i] = 1 + (i * 7) % 37 + (i % 5 == 0 ? 0 : 1);
        for (int j = 1; j < plen[i]; j++)
            prompts[i][j] = story[(j - 1 + (i % 3)) % 38];
    }
}

static void run_alone(int i, int32_t max_tokens, result *out)
{
    hr_sched *s = mk(1, 0);
    hr_gen_params g = greedy(prompts[i], plen[i], max_tokens);
    hr_req *r;
    hr_err err = {0};
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_OK);
    collect(r, out);
    hr_req_release(r);
    hr_sched_free(s);
}

static void concurrent(int32_t max_running, int64_t kv_tokens, bool expect_preempt)
{
    make_prompts();
    result alone[NREQ];
    for (int i = 0; i < NREQ; i++)
        run_alone(i, 48 + i % 7, &alone[i]);
    hr_sched *s = mk(max_running, kv_tokens);
    hr_req *r[NREQ];
    hr_err err = {0};
    for (int i = 0; i < NREQ; i++) {
        hr_gen_params g = greedy(prompts[i], plen[i], 48 + i % 7);
        assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r[i], &err), HR_OK);
    }
    for (int i = 0; i < NREQ; i++) {
        result res;
        collect(r[i], &res);
        if (strcmp(res.text[0], alone[i].text[0]))
            fail_msg("request %d differs in a batch:\n  alone: %s\n  batch: %s", i, alone[i].text[0], res.text[0]);
        free_result(&res);
        free_result(&alone[i]);
        hr_req_release(r[i]);
    }
    hr_sched_stats st;
    usleep(10000);
    hr_sched_stats_of(s, &st);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.kv_blocks_used, 0);
    if (expect_preempt)
        assert_true(st.preemptions > 0);
    assert_true(st.cached_prompt_tokens > 0); /* identical prompts shared blocks */
    hr_sched_free(s);
}

static void test_concurrent_equals_alone(void **state)
{
    (void)state;
    concurrent(12, 0, false);
}

static void test_preemption_equals_alone(void **state)
{
    (void)state;
    concurrent(12, 512, true); /* room for about 5 sequences of ~100 tokens */
}

static void test_n_choices_and_seeds(void **state)
{
    (void)state;
    make_prompts();
    hr_sched *s = mk(8, 0);
    hr_gen_params g = greedy(prompts[3], plen[3], 30);
    g.n = 3;
    hr_req *r;
    hr_err err = {0};
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_OK);
    result res;
    collect(r, &res);
    assert_string_equal(res.text[0], res.text[1]); /* greedy: all equal */
    assert_string_equal(res.text[0], res.text[2]);
    assert_int_equal(hr_req_usage_of(r).completion_tokens, 90);
    hr_req_release(r);
    free_result(&res);

    /* sampled: same seed reproduces, completions differ from each other */
    g.sample.temperature = 1.0f;
    g.sample.top_k = 0;
    g.sample.top_p = 1.0f;
    g.sample.min_p = 0.0f;
    g.sample.seed = 42;
    result a, b;
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_OK);
    collect(r, &a);
    hr_req_release(r);
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_OK);
    collect(r, &b);
    hr_req_release(r);
    for (int c = 0; c < 3; c++)
        assert_string_equal(a.text[c], b.text[c]);
    assert_true(strcmp(a.text[0], a.text[1]) || strcmp(a.text[1], a.text[2]));
    free_result(&a);
    free_result(&b);
    hr_sched_free(s);
}

static void test_stop_strings(void **state)
{
    (void)state;
    hr_sched *s = mk(2, 0);
    int32_t bos = 1;
    hr_gen_params g = greedy(&bos, 1, 200);
    const char *stops[] = {"zzz", "girl named"};
    g.stop = stops;
    g.n_stop = 2;
    hr_req *r;
    hr_err err = {0};
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_OK);
    result res;
    collect(r, &res);
    assert_string_equal(res.text[0], "Once upon a time, there was a little ");
    assert_int_equal(res.finish[0], HR_FINISH_STOP);
    hr_req_release(r);
    free_result(&res);
    hr_sched_free(s);
}

static void test_cancel_frees_blocks(void **state)
{
    (void)state;
    hr_sched *s = mk(4, 0);
    int32_t bos = 1;
    hr_req *r[4];
    hr_err err = {0};
    for (int i = 0; i < 4; i++) {
        hr_gen_params g = greedy(&bos, 1, 500);
        assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r[i], &err), HR_OK);
    }
    hr_event ev[8];
    while (hr_req_poll(r[0], ev, 8) == 0)
        usleep(100);
    for (int i = 0; i < 4; i++)
        hr_req_release(r[i]); /* release cancels */
    hr_sched_stats st;
    for (int k = 0; k < 1000; k++) {
        hr_sched_stats_of(s, &st);
        if (st.running == 0 && st.kv_blocks_used == 0)
            break;
        usleep(1000);
    }
    assert_int_equal(st.running, 0);
    assert_int_equal(st.kv_blocks_used, 0);
    hr_sched_free(s);
}

static void test_prefix_cache_hit(void **state)
{
    (void)state;
    make_prompts();
    hr_sched *s = mk(2, 0);
    int i = 1; /* a prompt of several blocks */
    while (plen[i] < 34)
        i++;
    hr_gen_params g = greedy(prompts[i], plen[i], 20);
    hr_req *r;
    hr_err err = {0};
    result a, b;
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_OK);
    collect(r, &a);
    assert_int_equal(hr_req_usage_of(r).cached_tokens, 0);
    hr_req_release(r);
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_OK);
    collect(r, &b);
    /* whole blocks shared, then the rest of the last one copied: all but
     * the one token that must be computed */
    assert_int_equal(hr_req_usage_of(r).cached_tokens, plen[i] - 1);
    assert_string_equal(a.text[0], b.text[0]);
    hr_req_release(r);
    free_result(&a);
    free_result(&b);
    hr_sched_free(s);
}

/* Requests that arrive together with a long shared prefix: one computes it,
 * the others wait for its blocks instead of computing them again, then
 * copy the shared part of the block where they diverge. Outputs equal a
 * run alone. */
static void test_prefix_in_flight(void **state)
{
    (void)state;
    enum { N = 4, LEN = 120, SHARED = 107 };
    static const int32_t story[] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395};
    int32_t p[N][LEN];
    for (int i = 0; i < N; i++) {
        p[i][0] = 1;
        for (int j = 1; j < LEN; j++)
            p[i][j] = j < SHARED ? story[(j * 5) % 13] : story[(j + 3 * i) % 13];
    }
    result alone[N], res[N];
    for (int i = 0; i < N; i++) {
        hr_sched *s1 = mk(1, 0);
        hr_gen_params g = greedy(p[i], LEN, 12);
        hr_req *r;
        hr_err err = {0};
        assert_int_equal(hr_sched_submit(s1, &g, NULL, NULL, &r, &err), HR_OK);
        collect(r, &alone[i]);
        hr_req_release(r);
        hr_sched_free(s1);
    }
    hr_sched *s = mk(N, 0); /* step budget 64: the prefix takes two steps */
    hr_req *r[N];
    hr_err err = {0};
    for (int i = 0; i < N; i++) {
        hr_gen_params g = greedy(p[i], LEN, 12);
        assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r[i], &err), HR_OK);
    }
    for (int i = 0; i < N; i++) {
        collect(r[i], &res[i]);
        assert_string_equal(res[i].text[0], alone[i].text[0]);
    }
    hr_sched_stats st;
    hr_sched_stats_of(s, &st);
    assert_true(st.prefix_waits >= N - 1);
    int32_t cached = 0;
    for (int i = 0; i < N; i++)
        cached += hr_req_usage_of(r[i]).cached_tokens;
    assert_int_equal(cached, (N - 1) * SHARED); /* 96 in whole blocks, 11 copied */
    assert_int_equal(st.cached_prompt_tokens, (uint64_t)cached);
    for (int i = 0; i < N; i++) {
        hr_req_release(r[i]);
        free_result(&alone[i]);
        free_result(&res[i]);
    }
    hr_sched_free(s);
}

static void test_logprobs_and_errors(void **state)
{
    (void)state;
    hr_sched *s = mk(2, 0);
    int32_t bos = 1;
    hr_gen_params g = greedy(&bos, 1, 10);
    g.logprobs = 3;
    hr_req *r;
    hr_err err = {0};
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_OK);
    result res;
    collect(r, &res);
    assert_int_equal(res.n_tok_info, 10);
    assert_true(res.max_lp <= 0.0f && res.min_lp > -100.0f);
    hr_req_release(r);
    free_result(&res);

    g = greedy(&bos, 1, 600);
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_ERR_INVALID);
    assert_non_null(strstr(err.msg, "601 tokens (1 prompt + 600 max_tokens) but the context is 512"));
    g = greedy(&bos, 1, 0);
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_ERR_INVALID);
    int32_t bad = 100000;
    g = greedy(&bad, 1, 5);
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &r, &err), HR_ERR_INVALID);
    hr_sched_free(s);

    /* a full queue says so */
    hr_sched_params p = hr_sched_defaults();
    p.max_running = 1;
    p.max_queue = 2;
    p.n_ctx = 512;
    assert_int_equal(hr_sched_new(model, &p, &s, &err), HR_OK);
    hr_req *many[8];
    int ok = 0, limited = 0;
    for (int i = 0; i < 8; i++) {
        g = greedy(&bos, 1, 300);
        hr_status st = hr_sched_submit(s, &g, NULL, NULL, &many[ok], &err);
        if (st == HR_OK)
            ok++;
        else if (st == HR_ERR_LIMIT)
            limited++;
    }
    assert_true(limited >= 8 - 3);
    for (int i = 0; i < ok; i++)
        hr_req_release(many[i]);
    hr_sched_free(s);
}

/* ---- admission: head-of-line blocking (audit finding 5) ---- */

/* true once r has finished; polls (and drops) whatever is pending, noting
 * completion 0's finish in *f0 */
static bool drained(hr_req *r, hr_finish *f0)
{
    hr_event ev[16];
    size_t got;
    while ((got = hr_req_poll(r, ev, 16)))
        for (size_t i = 0; i < got; i++)
            if (ev[i].kind == HR_EV_DONE && ev[i].index == 0 && f0)
                *f0 = ev[i].finish;
    return hr_req_finished(r);
}

/* A request with n = 16 waiting for 16 free slots while one is busy does
 * not hold back a 1-completion request queued behind it: that one runs
 * while the load is still going, and the n = 16 request runs once the
 * load ends. */
static void test_admission_passes_blocked(void **state)
{
    (void)state;
    hr_sched_params p = mk_params(16, 0);
    p.bypass_s = 600; /* no aging here */
    hr_sched *s = mk_with(&p);
    int32_t bos = 1;
    hr_req *load, *big, *small;
    hr_err err = {0};
    hr_gen_params g = greedy(&bos, 1, 400);
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &load, &err), HR_OK);
    hr_sched_stats st;
    for (int k = 0; k < 10000; k++) {
        hr_sched_stats_of(s, &st);
        if (st.running == 1)
            break;
        usleep(100);
    }
    assert_int_equal(st.running, 1);
    g = greedy(&bos, 1, 8);
    g.n = 16;
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &big, &err), HR_OK);
    g = greedy(&bos, 1, 4);
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &small, &err), HR_OK);
    hr_finish f[16] = {0};
    wait_done(small, f, 1, NULL, 0);
    assert_int_equal(f[0], HR_FINISH_LENGTH);
    if (hr_req_usage_of(load).total_s != 0)
        fail_msg("the 1-completion request waited behind the n = 16 one until the load ended");
    assert_int_equal(hr_req_usage_of(small).completion_tokens, 4);
    wait_done(big, f, 16, NULL, 0);
    for (int i = 0; i < 16; i++)
        assert_int_equal(f[i], HR_FINISH_LENGTH);
    assert_int_equal(hr_req_usage_of(big).completion_tokens, 16 * 8);
    assert_true(hr_req_usage_of(load).total_s > 0); /* it could only start once the load was done */
    wait_done(load, f, 1, NULL, 0);
    hr_req_release(load);
    hr_req_release(big);
    hr_req_release(small);
    wait_idle(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    hr_sched_free(s);
}

/* ... without starving it: under a steady stream of small requests (which
 * alone would never leave 16 slots free at once) the n = 16 request is
 * admitted once it has been passed over for bypass_s seconds. */
static void test_admission_no_starvation(void **state)
{
    (void)state;
    enum { INFLIGHT = 6, LIMIT = 200 };
    make_prompts();
    hr_sched_params p = mk_params(16, 0);
    p.bypass_s = 0.05;
    hr_sched *s = mk_with(&p);
    hr_err err = {0};
    hr_req *sm[INFLIGHT];
    int submitted = 0, done = 0, big_done_at = -1;
    for (int i = 0; i < INFLIGHT; i++, submitted++) {
        int k = 1 + submitted % (NREQ - 1);
        hr_gen_params g = greedy(prompts[k], plen[k], 12 + 5 * i);
        assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &sm[i], &err), HR_OK);
    }
    int32_t bos = 1;
    hr_gen_params g = greedy(&bos, 1, 6);
    g.n = 16;
    hr_req *big;
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &big, &err), HR_OK);
    bool any = true;
    for (long spins = 0; any || big_done_at < 0; spins++) {
        assert_true(spins < 1200000); /* 2 minutes */
        any = false;
        for (int i = 0; i < INFLIGHT; i++) {
            if (!sm[i])
                continue;
            any = true;
            hr_finish f0 = HR_FINISH_NONE;
            if (!drained(sm[i], &f0))
                continue;
            assert_int_equal(f0, HR_FINISH_LENGTH);
            hr_req_release(sm[i]);
            sm[i] = NULL;
            done++;
            if (submitted < LIMIT) {
                int k = 1 + submitted % (NREQ - 1);
                hr_gen_params gs = greedy(prompts[k], plen[k], 12 + 5 * i);
                assert_int_equal(hr_sched_submit(s, &gs, NULL, NULL, &sm[i], &err), HR_OK);
                submitted++;
            }
        }
        if (big_done_at < 0 && drained(big, NULL))
            big_done_at = done;
        usleep(100);
    }
    assert_int_equal(done, LIMIT);
    print_message("the n = 16 request finished after %d of %d small requests\n", big_done_at, LIMIT);
    if (big_done_at > LIMIT / 4)
        fail_msg("the n = 16 request finished only after %d of %d small requests: starved", big_done_at, LIMIT);
    assert_int_equal(hr_req_usage_of(big).completion_tokens, 16 * 6);
    hr_req_release(big);
    hr_sched_stats st;
    wait_idle(s, &st);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.kv_blocks_used, 0);
    hr_sched_free(s);
}

/* ---- notify runs without the request lock ---- */

typedef struct {
    _Atomic(hr_req *) r;
    atomic_int calls;
    atomic_bool inside, done, release_in_notify, released;
    char text[8192];
    size_t len;
    hr_finish finish;
    int nap_us;
} notify_ctx;

/* A consumer that drains its request from inside notify (hr_req_poll takes
 * the request's lock: this deadlocks if notify is called with it held). */
static void notify_polls(void *arg)
{
    notify_ctx *c = arg;
    atomic_fetch_add(&c->calls, 1);
    hr_req *r = atomic_load(&c->r);
    if (!r || atomic_load(&c->released))
        return;
    if (atomic_load(&c->release_in_notify)) {
        atomic_store(&c->released, true);
        hr_req_release(r); /* from inside notify: also takes the lock */
        return;
    }
    hr_event ev[16];
    size_t n;
    while ((n = hr_req_poll(r, ev, 16)))
        for (size_t i = 0; i < n; i++) {
            if (ev[i].kind == HR_EV_TEXT && c->len + ev[i].len < sizeof c->text) {
                memcpy(c->text + c->len, ev[i].text, ev[i].len);
                c->len += ev[i].len;
                c->text[c->len] = 0;
            } else if (ev[i].kind == HR_EV_DONE) {
                c->finish = ev[i].finish;
            }
        }
    if (hr_req_finished(r))
        atomic_store(&c->done, true);
}

/* A notify that takes a while, flagging when it runs. */
static void notify_naps(void *arg)
{
    notify_ctx *c = arg;
    atomic_store(&c->inside, true);
    atomic_fetch_add(&c->calls, 1);
    usleep((useconds_t)c->nap_us);
    atomic_store(&c->inside, false);
}

static bool wait_flag(atomic_bool *f, int seconds)
{
    for (int k = 0; k < seconds * 1000 && !atomic_load(f); k++)
        usleep(1000);
    return atomic_load(f);
}

static void test_notify_without_lock(void **state)
{
    (void)state;
    json_error_t je;
    json_t *d = json_load_file(tu_fixture("models/stories260K.golden.json"), 0, &je);
    assert_non_null(d);
    hr_sched *s = mk(1, 0);
    int32_t bos = 1;
    hr_err err = {0};
    /* a blocker keeps the one slot busy so the request below is queued
     * (and its handle stored) before its first event */
    hr_gen_params g = greedy(&bos, 1, 100);
    hr_req *blocker, *r;
    assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &blocker, &err), HR_OK);
    static notify_ctx c;
    memset(&c, 0, sizeof c);
    g = greedy(&bos, 1, 200);
    assert_int_equal(hr_sched_submit(s, &g, notify_polls, &c, &r, &err), HR_OK);
    atomic_store(&c.r, r);
    if (!wait_flag(&c.done, 20))
        fail_msg("a notify callback that polls its request never finished (called with the request lock held?)");
    assert_string_equal(c.text, json_string_value(json_object_get(d, "generated_text")));
    assert_int_equal(c.finish, HR_FINISH_LENGTH);
    assert_true(atomic_load(&c.calls) > 1);
    hr_req_release(r);
    result res;
    collect(blocker, &res);
    free_result(&res);
    hr_req_release(blocker);

    /* hr_req_release from inside notify: no deadlock, no call after it */
    static notify_ctx c2;
    memset(&c2, 0, sizeof c2);
    atomic_store(&c2.release_in_notify, true);
    g = greedy(&bos, 1, 300);
    assert_int_equal(hr_sched_submit(s, &g, notify_polls, &c2, &r, &err), HR_OK);
    atomic_store(&c2.r, r);
    if (!wait_flag(&c2.released, 20))
        fail_msg("hr_req_release from inside notify did not return");
    hr_sched_stats st;
    wait_idle(s, &st); /* release cancelled it */
    assert_int_equal(st.running, 0);
    int calls = atomic_load(&c2.calls);
    usleep(20000);
    assert_int_equal(atomic_load(&c2.calls), calls);

    /* hr_req_release from another thread waits for a notify in progress:
     * none runs once it returns */
    static notify_ctx c3;
    memset(&c3, 0, sizeof c3);
    c3.nap_us = 2000;
    assert_int_equal(hr_sched_submit(s, &g, notify_naps, &c3, &r, &err), HR_OK);
    for (int k = 0; k < 20000 && atomic_load(&c3.calls) < 3; k++)
        usleep(100);
    assert_true(atomic_load(&c3.calls) >= 3);
    hr_req_release(r);
    assert_false(atomic_load(&c3.inside));
    calls = atomic_load(&c3.calls);
    usleep(30000);
    assert_int_equal(atomic_load(&c3.calls), calls);
    wait_idle(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    hr_sched_free(s);
    json_decref(d);
}

/* ---- sampling on the compute pool ---- */

/* Many concurrent sampled requests (n > 1, logprobs, penalties) sampled in
 * parallel on a 4-thread pool produce exactly what each produces alone on
 * one thread. */
static void test_sampled_parallel_equals_alone(void **state)
{
    (void)state;
    enum { N = 12 };
    make_prompts();
    hr_gen_params g[N];
    for (int i = 0; i < N; i++) {
        g[i] = greedy(prompts[i + 1], plen[i + 1], 40);
        g[i].sample.temperature = 0.7f + 0.05f * (float)(i % 5);
        g[i].sample.top_k = i % 3 ? 40 : 0;
        g[i].sample.top_p = i % 2 ? 0.95f : 1.0f;
        g[i].sample.min_p = i % 4 ? 0.02f : 0.0f;
        g[i].sample.repetition_penalty = i % 2 ? 1.1f : 1.0f;
        g[i].sample.seed = 1000 + 17 * (uint64_t)i;
        g[i].n = i % 4 == 0 ? 2 : 1;
        g[i].logprobs = i % 3 == 0 ? 2 : -1;
    }
    result alone[N];
    hr_err err = {0};
    for (int i = 0; i < N; i++) {
        hr_sched_params p = mk_params(2, 0);
        p.n_threads = 1;
        hr_sched *s1 = mk_with(&p);
        hr_req *r;
        assert_int_equal(hr_sched_submit(s1, &g[i], NULL, NULL, &r, &err), HR_OK);
        collect(r, &alone[i]);
        hr_req_release(r);
        hr_sched_free(s1);
    }
    hr_sched_params p = mk_params(16, 0);
    p.n_threads = 4;
    hr_sched *s = mk_with(&p);
    hr_req *r[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(hr_sched_submit(s, &g[i], NULL, NULL, &r[i], &err), HR_OK);
    for (int i = 0; i < N; i++) {
        result res;
        collect(r[i], &res);
        for (int c = 0; c < g[i].n; c++)
            if (strcmp(res.text[c], alone[i].text[c]))
                fail_msg("request %d completion %d differs when sampled in parallel:\n  alone: %s\n  batch: %s", i, c,
                         alone[i].text[c], res.text[c]);
        assert_int_equal(res.n_tok_info, alone[i].n_tok_info);
        if (g[i].logprobs >= 0) {
            assert_memory_equal(&res.min_lp, &alone[i].min_lp, sizeof res.min_lp);
            assert_memory_equal(&res.max_lp, &alone[i].max_lp, sizeof res.max_lp);
        }
        free_result(&res);
        free_result(&alone[i]);
        hr_req_release(r[i]);
    }
    hr_sched_free(s);
}

/* ---- engine failures reach the requests they concern ---- */

#define POISON 500 /* at position 1: no other prompt here has it there */

typedef struct {
    int mode; /* 0 off, 1: fail the sequence with POISON at position 1, 2: fail every forward as a whole */
    atomic_int fired;
} fault_state;

static hr_status inject(void *arg, const hr_batch *b, int32_t *seq, hr_err *err)
{
    fault_state *f = arg;
    if (f->mode == 1)
        for (int32_t t = 0; t < b->n_tokens; t++)
            if (b->pos[t] == 1 && b->token[t] == POISON) {
                *seq = b->seq[t];
                atomic_fetch_add(&f->fired, 1);
                return hr_err_set(err, HR_ERR_FORMAT, "injected fault at token %d of sequence %d", t, b->seq[t]);
            }
    if (f->mode == 2) {
        atomic_fetch_add(&f->fired, 1);
        return hr_err_set(err, HR_ERR_NOMEM, "injected: out of memory for the whole batch");
    }
    return HR_OK;
}

static void test_engine_error_reaches_request(void **state)
{
    (void)state;
    enum { N = 3 };
    make_prompts();
    result alone[N];
    for (int i = 0; i < N; i++)
        run_alone(i + 1, 30, &alone[i]);
    static fault_state f;
    memset(&f, 0, sizeof f);
    f.mode = 1;
    hr_engine_set_fault(inject, &f);
    hr_sched *s = mk(8, 0);
    hr_err err = {0};
    hr_req *r[N], *bad;
    int32_t poison[12] = {1, POISON};
    for (int j = 2; j < 12; j++)
        poison[j] = prompts[5][j];
    hr_gen_params g = greedy(poison, 12, 30);
    g.n = 2;
    for (int i = 0; i < N; i++) {
        hr_gen_params gi = greedy(prompts[i + 1], plen[i + 1], 30);
        assert_int_equal(hr_sched_submit(s, &gi, NULL, NULL, &r[i], &err), HR_OK);
        if (i == 1)
            assert_int_equal(hr_sched_submit(s, &g, NULL, NULL, &bad, &err), HR_OK);
    }
    hr_finish fin[2] = {0};
    char msg[HR_ERR_MSG_MAX] = "";
    wait_done(bad, fin, 2, msg, sizeof msg);
    assert_int_equal(fin[0], HR_FINISH_ERROR);
    assert_int_equal(fin[1], HR_FINISH_ERROR);
    if (!strstr(msg, "injected fault at token"))
        fail_msg("the failed request says \"%s\", not the engine's error", msg);
    assert_true(atomic_load(&f.fired) >= 1);
    for (int i = 0; i < N; i++) {
        result res;
        collect(r[i], &res);
        if (res.finish[0] != HR_FINISH_LENGTH || strcmp(res.text[0], alone[i].text[0]))
            fail_msg("request %d, batched with the failing one, did not continue: finish %s, text \"%s\"", i,
                     hr_finish_name(res.finish[0]), res.text[0] ? res.text[0] : "");
        free_result(&res);
        hr_req_release(r[i]);
    }
    hr_req_release(bad);

    /* a failure of the whole batch reaches every request with its message */
    f.mode = 2;
    for (int i = 0; i < 2; i++) {
        hr_gen_params gi = greedy(prompts[i + 1], plen[i + 1], 30);
        assert_int_equal(hr_sched_submit(s, &gi, NULL, NULL, &r[i], &err), HR_OK);
    }
    for (int i = 0; i < 2; i++) {
        hr_finish f1[1] = {0};
        char m1[HR_ERR_MSG_MAX] = "";
        wait_done(r[i], f1, 1, m1, sizeof m1);
        assert_int_equal(f1[0], HR_FINISH_ERROR);
        if (!strstr(m1, "injected: out of memory for the whole batch"))
            fail_msg("request %d says \"%s\", not the engine's error", i, m1);
        hr_req_release(r[i]);
    }

    /* not poisoned: every block free, later requests come out right */
    hr_engine_set_fault(NULL, NULL);
    hr_sched_stats st;
    wait_idle(s, &st);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.kv_blocks_used, 0);
    for (int i = 0; i < N; i++) {
        hr_gen_params gi = greedy(prompts[i + 1], plen[i + 1], 30);
        assert_int_equal(hr_sched_submit(s, &gi, NULL, NULL, &r[i], &err), HR_OK);
    }
    for (int i = 0; i < N; i++) {
        result res;
        collect(r[i], &res);
        assert_int_equal(res.finish[0], HR_FINISH_LENGTH);
        assert_string_equal(res.text[0], alone[i].text[0]);
        free_result(&res);
        free_result(&alone[i]);
        hr_req_release(r[i]);
    }
    wait_idle(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    hr_sched_free(s);
}

static int setup(void **state)
{
    (void)state;
    hr_err err = {0};
    return hr_model_load(tu_fixture("models/stories260K.gguf"), &model, &err) == HR_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    hr_model_free(model);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_alone),
        cmocka_unit_test(test_concurrent_equals_alone),
        cmocka_unit_test(test_preemption_equals_alone),
        cmocka_unit_test(test_n_choices_and_seeds),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_cancel_frees_blocks),
        cmocka_unit_test(test_prefix_cache_hit),
        cmocka_unit_test(test_prefix_in_flight),
        cmocka_unit_test(test_logprobs_and_errors),
        cmocka_unit_test(test_admission_passes_blocked),
        cmocka_unit_test(test_admission_no_starvation),
        cmocka_unit_test(test_notify_without_lock),
        cmocka_unit_test(test_sampled_parallel_equals_alone),
        cmocka_unit_test(test_engine_error_reaches_request),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
