/* The engine on a second backend (tests/unit/ref_backend.c: scalar loops in
 * double, memory the engine cannot touch) for every reference model of the
 * fixtures (models/synth and models/arch), checked two ways:
 *   - against llama.cpp's teacher-forced reference logits with the JSON
 *     tolerances (as test_model_ref does for the CPU backend): the seam
 *     carries every architecture, on a backend that shares no code with
 *     src/cpu/;
 *   - against the CPU backend on the same tokens, the reference backend
 *     rounding matmul inputs through the weights' dot-product types as the
 *     CPU does: then the two differ by float rounding only (bound below).
 * Plus: every backend buffer and weight the engine takes is given back,
 * allocation failures anywhere fail the forward with HR_ERR_NOMEM and leave
 * the engine usable, and misuse of backend memory is caught.
 * Files that must not load yet are listed in one place (tu_arch_not_yet). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/engine.h"
#include "model/model.h"
#include "quant/quant.h"
#include "ref_backend.h"
#include "sample/sampler.h"
#include "testutil.h"

/* Teacher-forced logits of ids (sequence 0 from position 0) on backend bk
 * (NULL: the engine's own CPU backend), max_batch tokens per step. */
static float *run_engine(const hr_model *m, hr_backend *bk, int32_t max_batch, const int32_t *ids, size_t n)
{
    hr_err err = {0};
    hr_kv *kv = NULL;
    hr_engine *e = NULL;
    const hr_kv_params kp = {.n_blocks = 64, .block_tokens = 16, .max_seqs = 2};
    const hr_engine_params ep = {.max_batch = max_batch, .n_threads = 1, .n_ctx = 256, .backend = bk};
    if (hr_kv_new(hr_model_hparams(m), &kp, &kv, &err) || hr_engine_new(m, &ep, &e, &err))
        fail_msg("%s", err.msg);
    const int32_t nv = hr_model_hparams(m)->n_vocab;
    float *lg = malloc(n * (size_t)nv * sizeof *lg);
    int32_t *pos = malloc(n * sizeof *pos), *seq = calloc(n, sizeof *seq);
    assert_true(lg && pos && seq);
    for (size_t i = 0; i < n; i++)
        pos[i] = (int32_t)i;
    const hr_batch b = {.n_tokens = (int32_t)n, .token = ids, .pos = pos, .seq = seq};
    if (hr_engine_forward(e, kv, &b, lg, &err))
        fail_msg("%s", err.msg);
    free(pos);
    free(seq);
    hr_engine_free(e);
    hr_kv_free(kv);
    if (bk) { /* the engine gave back everything it took, and misused nothing */
        ref_backend_stats s;
        ref_backend_get_stats(bk, &s);
        assert_int_equal(s.live_allocs, 0);
        assert_int_equal(s.live_weights, 0);
        assert_int_equal(s.misuses, 0);
        assert_int_equal(s.canary_breaks, 0);
    }
    return lg;
}

static double nmse(const float *x, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)x[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return num / den;
}

static int32_t *json_ids(json_t *a, size_t *n)
{
    *n = json_array_size(a);
    int32_t *ids = malloc(*n * sizeof *ids);
    assert_non_null(ids);
    for (size_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

/* The bound on NMSE(reference backend, CPU backend) for a model whose
 * weights are all F32 (no activation rounding on either side).
 *
 * With u = 2^-24 (float32 unit roundoff), each float32 result carries a
 * relative rounding error of at most u; the CPU backend's dot products of
 * length K add up K such errors of random sign (the reference backend's, in
 * double, none worth counting), a relative error of rms sqrt(K / 3) u per
 * output (the probabilistic model of Higham and Mary). Counting generously,
 * a layer chains S = 16 rounded steps (norm, Q/K/V, RoPE, scores, softmax,
 * values, output projection, residual add, norm, gate/up, GLU, down, expert
 * sum, add, ...) whose errors a residual block passes on with a gain of at
 * most G = 2 each, so the squared relative error of the logits is at most
 *   n_layer * S * G^2 * (K_max / 3) * u^2,    K_max = max(n_embd, n_ff, n_vocab),
 * with a factor 10 on top: 2.3e-9 for the 4-layer synth models, 2.4e-8 for
 * the 62-layer gemma3_27b. Measured: 1e-13..6e-12. */
static double f32_bound(const hr_hparams *hp)
{
    const double u = ldexp(1.0, -24);
    int32_t K = hp->n_embd > hp->n_vocab ? hp->n_embd : hp->n_vocab;
    for (int32_t i = 0; i < hp->n_layer; i++)
        K = hp->layer[i].n_ff > K ? hp->layer[i].n_ff : K;
    return 10.0 * hp->n_layer * 16.0 * 4.0 * (K / 3.0) * u * u;
}

/* With quantised weights both backends round every matmul input to Q8_0 /
 * Q8_K / F16 / BF16, and float rounding cannot be kept out of that: an input
 * that differs by a rounding error from the other backend's lands on the
 * other side of a rounding midpoint with probability about its difference
 * over the quantum (~1e-5 per value here, so a forward of ~1e5 quantised
 * values sees a few). A flipped value moves by a whole quantum, which changes
 * the next layers' inputs by far more than rounding and flips many of their
 * quanta in turn, so after the first flip the two runs carry two independent
 * draws of activation-quantisation noise (measured: one quantum added to one
 * input moves these logits by an NMSE of 3e-5..3e-4). Two independent draws
 * differ by twice the noise of one, E_q = NMSE(exact, activations rounded),
 * which the test measures on the reference backend for the same tokens; the
 * bound is 3 E_q (the spread of one draw). Real divergences cost more than
 * that (test_model_ref bounds each backend against llama.cpp by nmse_max;
 * the F32 files pin the kernels down to rounding). */

/* Which files are checked by default: the F32 ones and the Q4_K_M mix of
 * each architecture (Q4_K, Q5_0/Q5_1, Q6_K, Q8_0 weights; gpt-oss: its
 * MXFP4_MOE mix); HEARTH_REF_ALL=1
 * checks every file (a few minutes). */
static bool checked_by_default(const char *json_name)
{
    return strstr(json_name, "-F32.") || strstr(json_name, "-Q4_K_M.") || strstr(json_name, "-MXFP4_MOE.");
}

static int check_model(const char *sub, const char *name, const char *json_path)
{
    json_error_t je;
    json_t *d = json_load_file(json_path, 0, &je);
    if (!d)
        fail_msg("cannot parse %s: %s", json_path, je.text);
    const char *model = json_string_value(json_object_get(d, "model"));
    char path[4096];
    snprintf(path, sizeof path, "%s/models/%s/%s", tu_fixtures(), sub, model);
    hr_model *m = NULL;
    hr_err err = {0};
    const hr_status st = hr_model_load(path, &m, &err);
    const char *missing = tu_arch_not_yet(name);
    if (missing) {
        const int ok = st == HR_ERR_UNSUPPORTED;
        printf("  %-25s not loadable yet (%s): %s %s\n", model, missing,
               st ? err.msg : "it loads now: take it off tu_arch_not_yet (testutil.c)", ok ? "ok" : "FAIL");
        hr_model_free(m);
        json_decref(d);
        return !ok;
    }
    if (st) {
        printf("  %-24s FAIL: %s\n", model, err.msg);
        json_decref(d);
        return 1;
    }
    const hr_hparams *hp = hr_model_hparams(m);
    const int32_t nv = hp->n_vocab;
    json_t *tol = json_object_get(d, "tolerance");
    const double nmse_max = json_real_value(json_object_get(tol, "nmse_max"));
    const double top1_min = json_real_value(json_object_get(tol, "top1_min"));
    int failures = 0;

    hr_backend *exact = NULL, *quant = NULL;
    assert_int_equal(ref_backend_new(&(ref_backend_opts){.quantize_acts = false}, &exact, &err), HR_OK);
    assert_int_equal(ref_backend_new(&(ref_backend_opts){.quantize_acts = true}, &quant, &err), HR_OK);
    for (int s = 0; s < 2; s++) {
        size_t n;
        int32_t *ids = json_ids(json_object_get(d, s ? "sequence_B" : "sequence_A"), &n);
        json_t *lf = json_object_get(d, s ? "logits_B" : "logits_A");
        snprintf(path, sizeof path, "%s/models/%s/%s", tu_fixtures(), sub, json_string_value(json_object_get(lf, "file")));
        size_t rsize;
        float *ref = tu_read_file(path, &rsize);
        assert_non_null(ref);
        assert_int_equal(rsize, n * (size_t)nv * sizeof(float));
        const size_t N = n * (size_t)nv;

        /* exact arithmetic against llama.cpp, 20 tokens per step (the
         * later steps attend to cache rows the earlier ones wrote) */
        float *x = run_engine(m, exact, 20, ids, n);
        size_t top = 0;
        for (size_t p = 0; p < n; p++)
            top += hr_argmax(x + p * nv, nv) == hr_argmax(ref + p * nv, nv);
        const double e_ref = nmse(x, ref, N), top1 = (double)top / (double)n;
        int ok = e_ref <= nmse_max && top1 >= top1_min;

        /* the CPU backend against the reference backend rounding as it does */
        ref_backend_stats bs;
        ref_backend_get_stats(exact, &bs);
        float *xq = bs.saw_quantized ? run_engine(m, quant, 20, ids, n) : x;
        float *c = run_engine(m, NULL, 64, ids, n);
        const double e_cpu = nmse(c, xq, N), bound = bs.saw_quantized ? 3.0 * nmse(x, xq, N) : f32_bound(hp);
        ok = ok && e_cpu <= bound;
        printf("  %-25s %c vs llama.cpp nmse %.2e (max %.1e) top1 %.3f (min %.2f); vs cpu nmse %.2e (max %.1e) %s\n",
               model, 'A' + s, e_ref, nmse_max, top1, top1_min, e_cpu, bound, ok ? "ok" : "FAIL");
        failures += !ok;
        if (xq != x)
            free(xq);
        free(x);
        free(c);
        free(ref);
        free(ids);
    }
    hr_backend_free(exact);
    hr_backend_free(quant);
    hr_model_free(m);
    json_decref(d);
    return failures;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void check_dir(const char *sub, int min_models)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models/%s/reference", tu_fixtures(), sub);
    DIR *dp = opendir(dir);
    if (!dp)
        TU_SKIP_OR_FAIL("fixture folder %s missing", dir);
    char *names[256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dp)) && n < 256) {
        const size_t len = strlen(de->d_name);
        if (len > 5 && !strcmp(de->d_name + len - 5, ".json"))
            names[n++] = strdup(de->d_name);
    }
    closedir(dp);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    assert_true(n >= min_models);
    const char *all = getenv("HEARTH_REF_ALL");
    int failures = 0, checked = 0;
    for (int i = 0; i < n; i++) {
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if ((all && *all == '1') || checked_by_default(names[i]) || tu_arch_not_yet(names[i])) {
            failures += check_model(sub, names[i], path);
            checked++;
        }
        free(names[i]);
    }
    printf("%d of %d reference models of models/%s on the ref backend, %d failures\n", checked, n, sub, failures);
    assert_int_equal(failures, 0);
}

static void test_synth_models(void **state)
{
    (void)state;
    check_dir("synth", 30);
}

static void test_arch_models(void **state)
{
    (void)state;
    check_dir("arch", 20);
}

/* Fails the n-th allocation (n = 1, 2, ...) of the engine's life on the
 * reference backend until none is left to fail: hr_engine_new or the forward
 * must fail with HR_ERR_NOMEM having given back every buffer it took (and a
 * failed forward leaves the engine usable: the next one gives the logits of
 * an unfaulted run, bit for bit). */
static void test_alloc_failures(void **state)
{
    (void)state;
    hr_model *m = NULL;
    hr_err err = {0};
    if (hr_model_load(tu_fixture("models/arch/qwen3moe-Q8_0.gguf"), &m, &err))
        fail_msg("%s", err.msg);
    const hr_hparams *hp = hr_model_hparams(m);
    const int32_t ids[] = { 1, 7, 42, 99, 3, 250 }, pos[] = { 0, 1, 2, 3, 4, 5 }, seq[6] = { 0 };
    const hr_batch bt = {.n_tokens = 6, .token = ids, .pos = pos, .seq = seq};
    const size_t nl = 6 * (size_t)hp->n_vocab;
    float *want = malloc(nl * sizeof *want), *got = malloc(nl * sizeof *got);
    assert_true(want && got);
    const hr_kv_params kp = {.n_blocks = 8, .block_tokens = 16, .max_seqs = 1};
    int new_fails = 0, fwd_fails = 0;
    for (long nth = 0;; nth++) {
        hr_backend *bk = NULL;
        hr_kv *kv = NULL;
        hr_engine *e = NULL;
        assert_int_equal(ref_backend_new(NULL, &bk, &err), HR_OK);
        assert_int_equal(hr_kv_new(hp, &kp, &kv, &err), HR_OK);
        ref_backend_fail_alloc(bk, nth);
        const hr_engine_params ep = {.max_batch = 4, .n_threads = 1, .n_ctx = 256, .backend = bk};
        hr_status st = hr_engine_new(m, &ep, &e, &err);
        ref_backend_stats s;
        ref_backend_get_stats(bk, &s);
        bool fired = s.faults > 0;
        if (st) {
            assert_int_equal(st, HR_ERR_NOMEM);
            assert_true(fired);
            new_fails++;
        } else {
            assert_false(fired); /* a failed allocation was not swallowed */
            st = hr_engine_forward(e, kv, &bt, nth ? got : want, &err);
            ref_backend_get_stats(bk, &s);
            fired = s.faults > 0;
            if (st) {
                assert_int_equal(st, HR_ERR_NOMEM);
                assert_true(fired);
                fwd_fails++;
                hr_kv_seq_clear(kv, 0);
                assert_int_equal(hr_engine_forward(e, kv, &bt, got, &err), HR_OK);
            } else
                assert_false(fired);
            if (nth)
                assert_memory_equal(got, want, nl * sizeof *got);
            hr_engine_free(e);
        }
        ref_backend_get_stats(bk, &s);
        assert_int_equal(s.live_allocs, 0);
        assert_int_equal(s.live_weights, 0);
        assert_int_equal(s.misuses, 0);
        hr_kv_free(kv);
        hr_backend_free(bk);
        if (nth && !fired)
            break; /* the n-th allocation never came: every one was failed once */
    }
    printf("  %d failed engine creations, %d failed forwards, all HR_ERR_NOMEM and clean\n", new_fails, fwd_fails);
    assert_true(new_fails > 0 && fwd_fails > 0);
    free(want);
    free(got);
    hr_model_free(m);
}

/* The backend's memory checks themselves: a host pointer, an extent past the
 * end, released memory are refused (reported by check), and the handles
 * alloc returns cannot be dereferenced outside the backend. */
static void test_misuse_caught(void **state)
{
    (void)state;
    hr_backend *bk = NULL;
    hr_err err = {0};
    assert_int_equal(ref_backend_new(NULL, &bk, &err), HR_OK);
    const hr_backend_ops *op = bk->ops;
    float host[16] = { 1, 2, 3, 4 }, back[16] = { 0 };
    float *a = op->alloc(bk, sizeof host), *c = op->alloc(bk, sizeof host);
    assert_true(a && c);
    op->write(bk, a, host, sizeof host);
    op->write(bk, c, host, sizeof host);
    op->add(bk, a, c, 16);
    assert_int_equal(op->check(bk, &err), HR_OK);
    op->read(bk, back, a, sizeof back);
    assert_true(back[0] == 2.0f && back[3] == 8.0f);

    op->add(bk, a, host, 16); /* host memory where backend memory is due */
    assert_int_equal(op->check(bk, &err), HR_ERR_INVALID);
    assert_non_null(strstr(err.msg, "not backend memory"));
    op->add(bk, a, c + 1, 16); /* one float past the end */
    assert_int_equal(op->check(bk, &err), HR_ERR_INVALID);
    op->release(bk, c);
    op->read(bk, back, c, sizeof back); /* after release */
    assert_int_equal(op->check(bk, &err), HR_ERR_INVALID);
    assert_non_null(strstr(err.msg, "released"));
    assert_int_equal(op->check(bk, &err), HR_OK); /* check clears */

    fflush(stdout);
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (!pid) {
        signal(SIGSEGV, SIG_DFL); /* not cmocka's handler: die */
        volatile float f = *a; /* must fault */
        (void)f;
        _exit(0);
    }
    int wst = 0;
    assert_int_equal(waitpid(pid, &wst, 0), pid);
    assert_false(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    op->release(bk, a);
    ref_backend_stats s;
    ref_backend_get_stats(bk, &s);
    assert_int_equal(s.live_allocs, 0);
    assert_int_equal(s.misuses, 3);
    hr_backend_free(bk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_misuse_caught),
        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_synth_models),
        cmocka_unit_test(test_arch_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
