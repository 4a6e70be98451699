/* test_matmul_id.c - hr_matmul_id (the expert matmul of MoE layers).
 *
 * The oracle is hr_matmul (itself checked against the scalar reference in
 * test_cpu_kernels) on the chosen expert's matrix and the slot's input row:
 * every output row of hr_matmul_id must equal it bit for bit, for every
 * weight type hr_quantize_row makes, both input modes, batches of 1, 3 and
 * 17 tokens (and a large one whose experts get more slots than one
 * activation tile), threads 1, 2 and 3. Slots with no expert (-1, or out of
 * range) keep a sentinel. The experts nobody chose and the input rows no
 * slot reads sit in PROT_NONE pages during the call, so touching one is a
 * SIGSEGV. The ISA path is the process default (ctest runs this again with
 * HEARTH_CPU=scalar and avx2). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "cpu/cpu.h"
#include "cpu/matmul.h"
#include "cpu/pool.h"
#include "quant/quant.h"

#define N_EXPERT 8
#define N_ROWS 37 /* odd, several chunks per expert */

static const uint32_t types[] = { HR_TYPE_F32,  HR_TYPE_F16,  HR_TYPE_BF16, HR_TYPE_Q4_0, HR_TYPE_Q4_1,
                                  HR_TYPE_Q5_0, HR_TYPE_Q5_1, HR_TYPE_Q8_0, HR_TYPE_Q2_K, HR_TYPE_Q3_K,
                                  HR_TYPE_Q4_K, HR_TYPE_Q5_K, HR_TYPE_Q6_K, HR_TYPE_IQ4_NL };
#define N_TYPES (sizeof types / sizeof types[0])

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float frand(void)
{
    return (float)rnd() / 4294967296.0f * 2.0f - 1.0f;
}

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* K so that one row of K floats is exactly one page (1024 on 4 KiB pages):
 * an input row can then be made unreadable on its own. */
static int64_t test_k(void)
{
    return (int64_t)(page_size() / sizeof(float));
}

static void *map_rw(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

/* The experts' tensor: N_EXPERT matrices of N_ROWS rows, rows padded by 16
 * bytes (w_row_bytes != the row's size) and each expert rounded up to whole
 * pages (expert_bytes != N * w_row_bytes). */
typedef struct {
    uint32_t type;
    int64_t K;
    size_t row_bytes, expert_bytes;
    unsigned char *w;
    /* with experts_pack: each expert's hr_matmul_pack copy, page-rounded */
    size_t pk_bytes;
    unsigned char *pw;
} experts;

static void experts_make(experts *ex, uint32_t type, int64_t K)
{
    const size_t pg = page_size();
    ex->type = type;
    ex->K = K;
    ex->row_bytes = hr_row_size(type, K) + 16;
    ex->expert_bytes = ((size_t)N_ROWS * ex->row_bytes + pg - 1) / pg * pg;
    ex->w = map_rw(ex->expert_bytes * N_EXPERT);
    float *row = malloc((size_t)K * sizeof(float));
    assert_non_null(row);
    for (int e = 0; e < N_EXPERT; e++)
        for (int r = 0; r < N_ROWS; r++) {
            for (int64_t k = 0; k < K; k++)
                row[k] = frand() * (float)(1 + e);
            unsigned char *dst = ex->w + (size_t)e * ex->expert_bytes + (size_t)r * ex->row_bytes;
            assert_true(hr_quantize_row(type, row, dst, K));
            memset(dst + ex->row_bytes - 16, 0xA5, 16);
        }
    free(row);
    ex->pk_bytes = 0;
    ex->pw = NULL;
}

/* False when this path has no packed layout for the type. */
static bool experts_pack(experts *ex)
{
    const size_t pb = hr_matmul_packed_bytes(ex->type, ex->K, N_ROWS), pg = page_size();
    if (!pb)
        return false;
    ex->pk_bytes = (pb + pg - 1) / pg * pg;
    ex->pw = map_rw(ex->pk_bytes * N_EXPERT);
    for (int e = 0; e < N_EXPERT; e++)
        hr_matmul_pack(NULL, ex->w + (size_t)e * ex->expert_bytes, ex->type, ex->row_bytes, ex->K, N_ROWS,
                       ex->pw + (size_t)e * ex->pk_bytes);
    return true;
}

static void experts_free(experts *ex)
{
    munmap(ex->w, ex->expert_bytes * N_EXPERT);
    if (ex->pw)
        munmap(ex->pw, ex->pk_bytes * N_EXPERT);
}

static const uint32_t SENTINEL = 0x7FC0BEEFu; /* a NaN nobody computes */

/* One call of hr_matmul_id against hr_matmul per slot (with ex->pw:
 * hr_matmul_id_packed against hr_matmul_packed). ids are drawn from a
 * random subset of the experts (at least one never chosen), with repeats
 * within a token and -1 / out-of-range slots. */
static void check_case(const experts *ex, hr_pool *pool, bool x_per_slot, int32_t n_tok, int32_t n_used,
                       int minus_one_in_8, int32_t max_experts_used)
{
    const int64_t K = ex->K, N = N_ROWS;
    const int32_t n_slots = n_tok * n_used;
    const int32_t n_in = x_per_slot ? n_slots : n_tok;
    const size_t pg = page_size();

    /* which experts may be chosen */
    bool allowed[N_EXPERT] = { false };
    int n_allowed = 0;
    while (n_allowed < max_experts_used) {
        const int e = (int)(rnd() % N_EXPERT);
        if (!allowed[e]) {
            allowed[e] = true;
            n_allowed++;
        }
    }
    int32_t *ids = malloc((size_t)n_slots * sizeof(int32_t));
    assert_non_null(ids);
    for (int32_t i = 0; i < n_slots; i++) {
        if ((int)(rnd() % 8) < minus_one_in_8) {
            const int32_t bad[] = { -1, -1, -1, N_EXPERT, -7, INT32_MAX };
            ids[i] = bad[rnd() % 6];
            continue;
        }
        int e;
        do
            e = (int)(rnd() % N_EXPERT);
        while (!allowed[e]);
        ids[i] = e;
    }
    bool chosen[N_EXPERT] = { false };
    for (int32_t i = 0; i < n_slots; i++)
        if (ids[i] >= 0 && ids[i] < N_EXPERT)
            chosen[ids[i]] = true;

    /* input rows, one page each; the ones no slot reads become unreadable */
    float *x = map_rw((size_t)n_in * pg);
    for (int64_t i = 0; i < (int64_t)n_in * K; i++)
        x[i] = frand();
    bool *row_used = calloc((size_t)n_in, 1);
    assert_non_null(row_used);
    for (int32_t i = 0; i < n_slots; i++)
        if (ids[i] >= 0 && ids[i] < N_EXPERT)
            row_used[x_per_slot ? i : i / n_used] = true;

    float *y = malloc((size_t)n_slots * N * sizeof(float));
    assert_non_null(y);
    for (size_t i = 0; i < (size_t)n_slots * N; i++)
        memcpy(&y[i], &SENTINEL, 4);
    const size_t sb = hr_matmul_id_scratch_bytes(ex->type, K, n_tok, n_used, N_EXPERT);
    assert_true(sb > 0);
    char *scratch_buf = malloc(sb + 1);
    assert_non_null(scratch_buf);

    unsigned char *wbase = ex->pw ? ex->pw : ex->w;
    const size_t estride = ex->pw ? ex->pk_bytes : ex->expert_bytes;
    for (int e = 0; e < N_EXPERT; e++)
        if (!chosen[e])
            assert_int_equal(mprotect(wbase + (size_t)e * estride, estride, PROT_NONE), 0);
    for (int32_t r = 0; r < n_in; r++)
        if (!row_used[r])
            assert_int_equal(mprotect((char *)x + (size_t)r * pg, pg, PROT_NONE), 0);
    /* odd scratch alignment: any alignment must do */
    if (ex->pw)
        hr_matmul_id_packed(pool, ex->pw, ex->type, ex->pk_bytes, K, N, N_EXPERT, x, x_per_slot, n_tok, n_used, ids, y,
                            scratch_buf + 1);
    else
        hr_matmul_id(pool, ex->w, ex->type, ex->row_bytes, ex->expert_bytes, K, N, N_EXPERT, x, x_per_slot, n_tok,
                     n_used, ids, y, scratch_buf + 1);
    assert_int_equal(mprotect(wbase, estride * N_EXPERT, PROT_READ | PROT_WRITE), 0);
    assert_int_equal(mprotect(x, (size_t)n_in * pg, PROT_READ | PROT_WRITE), 0);

    /* the oracle: hr_matmul of that expert's matrix on that row, alone */
    float *yr = malloc((size_t)N * sizeof(float));
    void *rs = malloc(hr_matmul_scratch_bytes(ex->type, K, 1) + 1);
    assert_true(yr && rs);
    for (int32_t i = 0; i < n_slots; i++) {
        const float *yi = y + (size_t)i * N;
        if (ids[i] < 0 || ids[i] >= N_EXPERT) {
            for (int64_t r = 0; r < N; r++)
                if (memcmp(&yi[r], &SENTINEL, 4) != 0)
                    fail_msg("%s: slot %d (id %d) was written (row %lld)", hr_type_name(ex->type), (int)i,
                             (int)ids[i], (long long)r);
            continue;
        }
        const float *xi = x + (size_t)(x_per_slot ? i : i / n_used) * (size_t)K;
        if (ex->pw)
            hr_matmul_packed(NULL, ex->pw + (size_t)ids[i] * ex->pk_bytes, ex->type, K, N, xi, 1, yr, rs);
        else
            hr_matmul(NULL, ex->w + (size_t)ids[i] * ex->expert_bytes, ex->type, ex->row_bytes, K, N, xi, 1, yr, rs);
        if (memcmp(yi, yr, (size_t)N * sizeof(float)) != 0) {
            int64_t r = 0;
            while (memcmp(&yi[r], &yr[r], 4) == 0)
                r++;
            fail_msg("%s%s %s n_tok %d threads %d: slot %d (expert %d) row %lld: %.9g, oracle %.9g",
                     hr_type_name(ex->type), ex->pw ? " packed" : "", x_per_slot ? "x per slot" : "x per token", (int)n_tok,
                     hr_pool_n_threads(pool), (int)i, (int)ids[i], (long long)r, (double)yi[r], (double)yr[r]);
        }
    }
    free(yr);
    free(rs);
    free(scratch_buf);
    free(y);
    free(row_used);
    munmap(x, (size_t)n_in * pg);
    free(ids);
}

static void test_matches_matmul(void **state)
{
    (void)state;
    hr_pool *pools[4] = { NULL, hr_pool_new(1), hr_pool_new(2), hr_pool_new(3) };
    assert_true(pools[1] && pools[2] && pools[3]);
    static const int32_t n_toks[] = { 1, 3, 17 };
    const int64_t K = test_k();
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        experts ex;
        experts_make(&ex, types[ti], K);
        for (int p = 0; p < 4; p++)
            for (int xs = 0; xs < 2; xs++)
                for (size_t ni = 0; ni < 3; ni++) {
                    /* decode-like: every expert but a few; and a narrow choice */
                    check_case(&ex, pools[p], xs, n_toks[ni], 4, 1, 6);
                    check_case(&ex, pools[p], xs, n_toks[ni], 2, 2, 2);
                }
        experts_free(&ex);
    }
    for (int p = 1; p < 4; p++)
        hr_pool_free(pools[p]);
}

/* Many slots on few experts: more than one activation tile per expert
 * (F32 rows tile 64 at a time, Q8_0's 240), several chunks per expert. */
static void test_large_batch(void **state)
{
    (void)state;
    hr_pool *p2 = hr_pool_new(2);
    assert_non_null(p2);
    const int64_t K = test_k();
    static const uint32_t big_types[] = { HR_TYPE_F32, HR_TYPE_Q8_0, HR_TYPE_Q4_K };
    for (size_t ti = 0; ti < 3; ti++) {
        experts ex;
        experts_make(&ex, big_types[ti], K);
        check_case(&ex, p2, false, 300, 2, 1, 2);
        check_case(&ex, NULL, false, 300, 2, 1, 2);
        check_case(&ex, p2, true, 150, 3, 1, 3);
        experts_free(&ex);
    }
    hr_pool_free(p2);
}

/* No slot with an expert: nothing written, no weight read. Bad shapes and
 * types: scratch size 0 and no write. */
static void test_nothing_to_do(void **state)
{
    (void)state;
    const int64_t K = test_k();
    experts ex;
    experts_make(&ex, HR_TYPE_Q8_0, K);
    assert_int_equal(mprotect(ex.w, ex.expert_bytes * N_EXPERT, PROT_NONE), 0);
    const int32_t ids[6] = { -1, -1, -1, -1, N_EXPERT, -2 };
    float *x = calloc((size_t)3 * K, sizeof(float)), y[6 * N_ROWS];
    assert_non_null(x);
    for (size_t i = 0; i < 6 * N_ROWS; i++)
        memcpy(&y[i], &SENTINEL, 4);
    const size_t sb = hr_matmul_id_scratch_bytes(HR_TYPE_Q8_0, K, 3, 2, N_EXPERT);
    void *s = malloc(sb);
    assert_non_null(s);
    hr_matmul_id(NULL, ex.w, HR_TYPE_Q8_0, ex.row_bytes, ex.expert_bytes, K, N_ROWS, N_EXPERT, x, false, 3, 2, ids,
                 y, s);
    for (size_t i = 0; i < 6 * N_ROWS; i++)
        assert_memory_equal(&y[i], &SENTINEL, 4);
    assert_int_equal(mprotect(ex.w, ex.expert_bytes * N_EXPERT, PROT_READ | PROT_WRITE), 0);

    assert_int_equal(hr_matmul_id_scratch_bytes(HR_TYPE_Q4_K, 100, 3, 2, N_EXPERT), 0); /* K % 256 */
    assert_int_equal(hr_matmul_id_scratch_bytes(4, K, 3, 2, N_EXPERT), 0); /* an id GGML dropped */
    assert_int_equal(hr_matmul_id_scratch_bytes(HR_TYPE_Q8_0, K, 0, 2, N_EXPERT), 0);
    assert_int_equal(hr_matmul_id_scratch_bytes(HR_TYPE_Q8_0, K, 3, 0, N_EXPERT), 0);
    assert_int_equal(hr_matmul_id_scratch_bytes(HR_TYPE_Q8_0, K, 3, 2, 0), 0);
    /* a bad K does nothing, even with valid ids */
    const int32_t ok[6] = { 0, 1, 2, 3, 4, 5 };
    hr_matmul_id(NULL, ex.w, HR_TYPE_Q4_K, ex.row_bytes, ex.expert_bytes, 100, N_ROWS, N_EXPERT, x, false, 3, 2, ok,
                 y, s);
    for (size_t i = 0; i < 6 * N_ROWS; i++)
        assert_memory_equal(&y[i], &SENTINEL, 4);
    free(s);
    free(x);
    experts_free(&ex);
}

/* The packed variant where this path has packed layouts (avx512: Q8_0,
 * Q4_0, Q5_0, IQ4_NL, Q4_K, Q6_K), against hr_matmul_packed per slot.
 * Elsewhere hr_matmul_id_packed must leave every output alone (the engine
 * uses hr_matmul_id there). */
static void test_packed(void **state)
{
    (void)state;
    static const uint32_t pk_types[] = { HR_TYPE_Q8_0, HR_TYPE_Q4_0, HR_TYPE_Q5_0,
                                         HR_TYPE_IQ4_NL, HR_TYPE_Q4_K, HR_TYPE_Q6_K };
    hr_pool *pools[3] = { NULL, hr_pool_new(2), hr_pool_new(3) };
    assert_true(pools[1] && pools[2]);
    const int64_t K = test_k();
    int n_packed = 0;
    for (size_t ti = 0; ti < sizeof pk_types / sizeof pk_types[0]; ti++) {
        experts ex;
        experts_make(&ex, pk_types[ti], K);
        if (!experts_pack(&ex)) {
            assert_true(hr_cpu_isa() < HR_ISA_AVX512);
            const int32_t ids[4] = { 0, 1, 2, 3 };
            float *x = calloc((size_t)2 * K, sizeof(float)), y[4 * N_ROWS];
            void *s = malloc(hr_matmul_id_scratch_bytes(ex.type, K, 2, 2, N_EXPERT));
            assert_true(x && s);
            for (size_t i = 0; i < 4 * N_ROWS; i++)
                memcpy(&y[i], &SENTINEL, 4);
            hr_matmul_id_packed(pools[1], ex.w, ex.type, ex.expert_bytes, K, N_ROWS, N_EXPERT, x, false, 2, 2, ids,
                                y, s);
            for (size_t i = 0; i < 4 * N_ROWS; i++)
                assert_memory_equal(&y[i], &SENTINEL, 4);
            free(x);
            free(s);
            experts_free(&ex);
            continue;
        }
        n_packed++;
        for (int p = 0; p < 3; p++)
            for (int xs = 0; xs < 2; xs++) {
                check_case(&ex, pools[p], xs, 1, 4, 1, 6);
                check_case(&ex, pools[p], xs, 17, 4, 1, 6);
                check_case(&ex, pools[p], xs, 90, 2, 1, 1); /* one expert, slots > one kernel tile */
            }
        experts_free(&ex);
    }
    print_message("packed layouts on this path: %d of 6 types%s\n", n_packed,
                  n_packed ? "" : " (not an avx512 path: checked that nothing is written)");
    for (int p = 1; p < 3; p++)
        hr_pool_free(pools[p]);
}

int main(void)
{
    printf("path %s\n", hr_cpu_isa_name());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_matmul),
        cmocka_unit_test(test_large_batch),
        cmocka_unit_test(test_nothing_to_do),
        cmocka_unit_test(test_packed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
