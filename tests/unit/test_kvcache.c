/* Paged KV cache: reservation and release, prefix attach / commit / LRU
 * eviction, fork (full blocks shared, partial block copied). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "engine/kvcache.h"

static hr_hparams hp = {.n_layer = 2, .n_head_kv = 1, .head_dim = 4, .head_dim_v = 4};

static hr_kv *mk(int32_t blocks)
{
    hr_kv *kv;
    hr_kv_params p = {.n_blocks = blocks, .block_tokens = 4, .max_seqs = 4};
    hr_err err = {0};
    assert_int_equal(hr_kv_new(&hp, &p, &kv, &err), HR_OK);
    return kv;
}

static void fill(hr_kv *kv, int32_t seq, int32_t n, float base)
{
    for (int32_t p = 0; p < n; p++)
        for (int32_t l = 0; l < 2; l++)
            for (int i = 0; i < 4; i++) {
                hr_kv_k(kv, l, seq, p)[i] = base + p * 10 + l + i * 0.1f;
                hr_kv_v(kv, l, seq, p)[i] = -(base + p * 10 + l + i * 0.1f);
            }
}

static void test_reserve_release(void **state)
{
    (void)state;
    hr_kv *kv = mk(8);
    hr_err err = {0};
    assert_int_equal(hr_kv_seq_reserve(kv, 0, 9, &err), HR_OK); /* 3 blocks */
    assert_int_equal(hr_kv_blocks_free(kv), 5);
    assert_int_equal(hr_kv_seq_capacity(kv, 0), 12);
    assert_int_equal(hr_kv_seq_reserve(kv, 1, 40, &err), HR_ERR_LIMIT);
    assert_int_equal(hr_kv_blocks_free(kv), 5); /* nothing taken on failure */
    hr_kv_seq_truncate(kv, 0, 4);
    assert_int_equal(hr_kv_blocks_free(kv), 7);
    hr_kv_seq_clear(kv, 0);
    assert_int_equal(hr_kv_blocks_free(kv), 8);
    assert_int_equal(hr_kv_seq_reserve(kv, 9, 1, &err), HR_ERR_INVALID);
    hr_kv_free(kv);
}

static void test_prefix_and_eviction(void **state)
{
    (void)state;
    hr_kv *kv = mk(6);
    hr_err err = {0};
    int32_t toks[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    assert_int_equal(hr_kv_seq_reserve(kv, 0, 10, &err), HR_OK);
    fill(kv, 0, 10, 100);
    hr_kv_prefix_commit(kv, 0, toks, 10); /* two full blocks registered */
    hr_kv_seq_clear(kv, 0);
    assert_int_equal(hr_kv_blocks_free(kv), 6);
    assert_int_equal(hr_kv_blocks_cached(kv), 2);

    /* same prefix: both blocks attach, contents intact */
    assert_int_equal(hr_kv_prefix_attach(kv, 1, toks, 12), 8);
    assert_int_equal(hr_kv_blocks_cached(kv), 0);
    assert_true(hr_kv_k(kv, 1, 1, 7)[2] == 100 + 70 + 1 + 0.2f);
    hr_kv_seq_clear(kv, 1);
    /* never all of the tokens: of 8 tokens, 7 come from the cache (one
     * block shared, three positions of the next copied) */
    assert_int_equal(hr_kv_prefix_probe(kv, toks, 8), 7);
    assert_int_equal(hr_kv_prefix_attach(kv, 1, toks, 8), 7);
    hr_kv_seq_clear(kv, 1);
    /* a second block that diverges at its fourth token: the first block is
     * shared, the second copied into a private block for its first three */
    int32_t other[12] = {1, 2, 3, 4, 5, 6, 7, 99, 9, 10, 11, 12};
    assert_int_equal(hr_kv_prefix_probe(kv, other, 12), 7);
    int32_t cached = hr_kv_blocks_cached(kv), free_before = hr_kv_blocks_free(kv);
    assert_int_equal(hr_kv_prefix_attach(kv, 2, other, 12), 7);
    assert_int_equal(hr_kv_seq_capacity(kv, 2), 8);
    assert_int_equal(hr_kv_blocks_free(kv), free_before - 2);
    assert_int_equal(hr_kv_blocks_cached(kv), cached - 1); /* the copied source stays cached */
    for (int32_t p = 4; p < 7; p++)
        for (int32_t l = 0; l < 2; l++) {
            assert_true(hr_kv_k(kv, l, 2, p)[3] == 100 + p * 10 + l + 0.3f);
            assert_true(hr_kv_v(kv, l, 2, p)[1] == -(100 + p * 10 + l + 0.1f));
        }
    hr_kv_k(kv, 0, 2, 7)[0] = 4242.0f; /* the copy is private */
    hr_kv_seq_clear(kv, 2);
    assert_int_equal(hr_kv_prefix_attach(kv, 2, toks, 12), 8);
    assert_true(hr_kv_k(kv, 0, 2, 7)[0] == 100 + 70 + 0);
    hr_kv_seq_clear(kv, 2);
    /* a different first block: nothing */
    int32_t third[12] = {0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    assert_int_equal(hr_kv_prefix_attach(kv, 2, third, 12), 0);

    /* filling the pool evicts cached blocks, oldest first */
    assert_int_equal(hr_kv_seq_reserve(kv, 3, 24, &err), HR_OK); /* all 6 blocks */
    assert_int_equal(hr_kv_blocks_cached(kv), 0);
    hr_kv_seq_clear(kv, 3);
    assert_int_equal(hr_kv_prefix_attach(kv, 1, toks, 12), 0);
    hr_kv_free(kv);
}

/* The block a partial copy reads from is never the one evicted to make
 * room for the copy; with no room, the copy is skipped. */
static void test_partial_copy_full_pool(void **state)
{
    (void)state;
    hr_kv *kv = mk(3);
    hr_err err = {0};
    int32_t toks[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(hr_kv_seq_reserve(kv, 0, 8, &err), HR_OK);
    fill(kv, 0, 8, 5);
    hr_kv_prefix_commit(kv, 0, toks, 8);
    hr_kv_seq_clear(kv, 0);
    assert_int_equal(hr_kv_blocks_cached(kv), 2);
    assert_int_equal(hr_kv_seq_reserve(kv, 1, 4, &err), HR_OK); /* takes the free block */
    int32_t other[8] = {1, 2, 3, 4, 5, 6, 9, 9};
    /* the first block attaches; copying the second would need a block,
     * and the only one left is the source itself */
    assert_int_equal(hr_kv_prefix_attach(kv, 2, other, 8), 4);
    hr_kv_seq_clear(kv, 2);
    hr_kv_seq_clear(kv, 1);
    assert_int_equal(hr_kv_prefix_attach(kv, 2, other, 8), 6);
    assert_true(hr_kv_k(kv, 1, 2, 5)[0] == 5 + 50 + 1);
    hr_kv_free(kv);
}

static void test_fork(void **state)
{
    (void)state;
    hr_kv *kv = mk(8);
    hr_err err = {0};
    assert_int_equal(hr_kv_seq_reserve(kv, 0, 6, &err), HR_OK);
    fill(kv, 0, 6, 7);
    assert_int_equal(hr_kv_seq_fork(kv, 0, 1, 6, &err), HR_OK);
    assert_int_equal(hr_kv_blocks_free(kv), 5); /* one shared, one copied */
    for (int32_t p = 0; p < 6; p++)
        assert_memory_equal(hr_kv_k(kv, 1, 1, p), hr_kv_k(kv, 1, 0, p), 4 * sizeof(float));
    assert_ptr_equal(hr_kv_k(kv, 0, 1, 1), hr_kv_k(kv, 0, 0, 1)); /* shared */
    assert_ptr_not_equal(hr_kv_k(kv, 0, 1, 5), hr_kv_k(kv, 0, 0, 5)); /* copied */
    hr_kv_k(kv, 0, 1, 5)[0] = 12345.0f;
    assert_true(hr_kv_k(kv, 0, 0, 5)[0] != 12345.0f);
    hr_kv_seq_clear(kv, 0);
    assert_true(hr_kv_k(kv, 1, 1, 2)[1] == 7 + 20 + 1 + 0.1f); /* still held by seq 1 */
    hr_kv_seq_clear(kv, 1);
    assert_int_equal(hr_kv_blocks_free(kv), 8);
    assert_int_equal(hr_kv_seq_fork(kv, 2, 2, 1, &err), HR_ERR_INVALID);
    hr_kv_free(kv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_release),
        cmocka_unit_test(test_prefix_and_eviction),
        cmocka_unit_test(test_partial_copy_full_pool),
        cmocka_unit_test(test_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
