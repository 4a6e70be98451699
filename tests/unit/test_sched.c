/* The scheduler: a request alone reproduces the golden greedy text; many
 * concurrent requests (mixed prompts, n > 1, preemption under a tiny KV
 * pool, prefix-cache hits) each produce exactly what they produce alone;
 * stop strings, cancellation, logprobs, admission errors. */
#include <setjmp.h>
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

static hr_sched *mk(int32_t max_running, int64_t kv_tokens)
{
    hr_sched_params p = hr_sched_defaults();
    p.max_running = max_running;
    p.n_ctx = 512;
    p.step_tokens = 64;
    p.max_queue = 64;
    if (kv_tokens)
        p.kv_bytes = kv_tokens * (int64_t)hr_kv_bytes_per_token(hr_model_hparams(model));
    hr_sched *s;
    hr_err err = {0};
    if (hr_sched_new(model, &p, &s, &err))
        fail_msg("%s", err.msg);
    return s;
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
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
