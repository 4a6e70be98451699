/* Batching: tokens of several sequences in one batch, in any split, give
 * exactly the logits each sequence gets alone; the paged cache hands blocks
 * out and takes them back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "model/model.h"
#include "testutil.h"

#define NA 21
#define NB 13

static const int32_t seq_a[NA] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                                  315, 421, 395, 317, 426, 338, 401, 396, 267, 337};
static const int32_t seq_b[NB] = {1, 244, 401, 438, 344, 55, 123, 365, 94, 435, 179, 17, 80};

static void run_alone(hr_engine *e, hr_kv *kv, const int32_t *ids, int n, int32_t sid, float *out)
{
    int32_t pos[32], seq[32];
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        seq[i] = sid;
    }
    hr_batch b = {.n_tokens = n, .token = ids, .pos = pos, .seq = seq};
    hr_err err = {0};
    assert_int_equal(hr_engine_forward(e, kv, &b, out, &err), HR_OK);
}

static void check_model(const char *rel)
{
    hr_model *m;
    hr_err err = {0};
    assert_int_equal(hr_model_load(tu_fixture(rel), &m, &err), HR_OK);
    const int32_t nv = hr_model_hparams(m)->n_vocab;
    hr_kv *kv;
    hr_kv_params kp = {.n_blocks = 16, .block_tokens = 4, .max_seqs = 4};
    assert_int_equal(hr_kv_new(hr_model_hparams(m), &kp, &kv, &err), HR_OK);
    hr_engine *e;
    hr_engine_params ep = {.max_batch = 7, .n_threads = 1}; /* forces internal splits */
    assert_int_equal(hr_engine_new(m, &ep, &e, &err), HR_OK);

    float *ra = malloc((size_t)NA * nv * sizeof(float)), *rb = malloc((size_t)NB * nv * sizeof(float));
    run_alone(e, kv, seq_a, NA, 0, ra);
    run_alone(e, kv, seq_b, NB, 1, rb);
    assert_int_equal(hr_kv_blocks_free(kv), 16 - 6 - 4);
    hr_kv_seq_clear(kv, 0);
    hr_kv_seq_clear(kv, 1);
    assert_int_equal(hr_kv_blocks_free(kv), 16);

    /* Interleave: first 5 of A and 3 of B as one prefill batch (seq ids 2, 3),
     * then the rest one step at a time, mixed, with a decode of each per step. */
    float *out = malloc((size_t)(NA + NB) * nv * sizeof(float));
    int32_t tok[NA + NB], pos[NA + NB], seq[NA + NB];
    int n = 0;
    for (int i = 0; i < 5; i++, n++) {
        tok[n] = seq_a[i], pos[n] = i, seq[n] = 2;
    }
    for (int i = 0; i < 3; i++, n++) {
        tok[n] = seq_b[i], pos[n] = i, seq[n] = 3;
    }
    hr_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq};
    assert_int_equal(hr_engine_forward(e, kv, &b, out, &err), HR_OK);
    for (int i = 0; i < 5; i++)
        assert_memory_equal(out + (size_t)i * nv, ra + (size_t)i * nv, (size_t)nv * sizeof(float));
    for (int i = 0; i < 3; i++)
        assert_memory_equal(out + (size_t)(5 + i) * nv, rb + (size_t)i * nv, (size_t)nv * sizeof(float));
    int ia = 5, ib = 3;
    while (ia < NA || ib < NB) {
        n = 0;
        if (ib < NB) {
            tok[n] = seq_b[ib], pos[n] = ib, seq[n] = 3, n++;
        }
        if (ia < NA) {
            tok[n] = seq_a[ia], pos[n] = ia, seq[n] = 2, n++;
        }
        b.n_tokens = n;
        assert_int_equal(hr_engine_forward(e, kv, &b, out, &err), HR_OK);
        int k = 0;
        if (ib < NB) {
            assert_memory_equal(out, rb + (size_t)ib * nv, (size_t)nv * sizeof(float));
            ib++, k++;
        }
        if (ia < NA) {
            assert_memory_equal(out + (size_t)k * nv, ra + (size_t)ia * nv, (size_t)nv * sizeof(float));
            ia++;
        }
    }

    /* a full cache is an error, not a crash, and nothing leaks */
    int32_t big_tok[1] = {5}, big_pos[1] = {1000}, big_seq[1] = {0};
    hr_batch big = {.n_tokens = 1, .token = big_tok, .pos = big_pos, .seq = big_seq};
    assert_int_equal(hr_engine_forward(e, kv, &big, out, &err), HR_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "KV cache full"));
    assert_int_equal(hr_engine_failed_seq(e), 0); /* the failure names its sequence */
    big_tok[0] = 100000;
    assert_int_equal(hr_engine_forward(e, kv, &big, out, &err), HR_ERR_INVALID);
    assert_int_equal(hr_engine_failed_seq(e), 0);
    big_tok[0] = 5;
    big_seq[0] = 9;
    assert_int_equal(hr_engine_forward(e, kv, &big, out, &err), HR_ERR_INVALID);
    assert_int_equal(hr_engine_failed_seq(e), -1); /* no such sequence: the batch as a whole */

    /* a threaded engine computes the same bits */
    hr_engine *e3;
    hr_engine_params ep3 = {.max_batch = 5, .n_threads = 3};
    assert_int_equal(hr_engine_new(m, &ep3, &e3, &err), HR_OK);
    hr_kv_seq_clear(kv, 1);
    run_alone(e3, kv, seq_b, NB, 1, out);
    assert_memory_equal(out, rb, (size_t)NB * nv * sizeof(float));
    hr_engine_free(e3);

    /* truncation releases whole blocks past the kept length */
    hr_kv_seq_truncate(kv, 2, 8);
    assert_int_equal(hr_kv_seq_capacity(kv, 2), 8);

    free(out);
    free(ra);
    free(rb);
    hr_engine_free(e);
    hr_kv_free(kv);
    hr_model_free(m);
}

static void test_batch_llama_q8(void **state) { (void)state; check_model("models/synth/llama-Q8_0.gguf"); }
static void test_batch_qwen3_q4km(void **state) { (void)state; check_model("models/synth/qwen3-Q4_K_M.gguf"); }
static void test_batch_qwen2_f32(void **state) { (void)state; check_model("models/synth/qwen2-F32.gguf"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_llama_q8),
        cmocka_unit_test(test_batch_qwen3_q4km),
        cmocka_unit_test(test_batch_qwen2_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
