/* test_cpu_kernels.c - the SIMD kernels (src/cpu) against the scalar
 * reference (src/quant), on every ISA path the host supports:
 *  - vec_dot on random rows of several lengths and on the fixture rows;
 *  - the activation quantisers byte for byte;
 *  - hr_matmul: bit-identical for 1, 2, 3 and 8 threads and to one call per
 *    token, and each output equal to one dispatched vec_dot call;
 *  - the GEMM the engine runs on this host (packed where the path has a
 *    layout, hr_matmul otherwise) against the scalar reference;
 *  - streaming attention against a softmax in double;
 *  - dispatch: forcing paths, names, lookups of non-types.
 *
 * Every tolerance is a forward-error bound of the float arithmetic (u = 2^-24,
 * gamma(k) = k u / (1 - k u): the worst relative error of k chained float
 * roundings, Higham, "Accuracy and Stability of Numerical Algorithms", 3.1),
 * the same formula for every path, never a figure measured on one machine.
 *
 * vec_dot, |simd - ref| <= tol * S' with S' the sum of |terms| (see dot_bound):
 *  - K-quants (Q2_K..Q6_K): 0 - their kernels reduce each super-block to the
 *    same integer and scale it with the same float operations as the
 *    reference, so the bits match;
 *  - 32-element block types (MXFP4 included: its scale is 2^(e-128) and its
 *    doubled E2M1 codes are integers): integer block sums are exact
 *    (|sum| < 2^24); each block adds at most two terms (d_w d_a isum, and
 *    m s for Q4_1/Q5_1),
 *    each product rounded at most twice, and any order of summing the 2 nb
 *    terms (lanes, then a tree of at most 4 levels) passes each term through
 *    at most 2 nb + 8 roundings: |x - exact| <= gamma(2 nb + 8) S' for the
 *    kernel and for the reference alike, so tol = 2 gamma(2 nb + 8);
 *  - F32/F16/BF16: products rounded at most once (F16 and BF16 products are
 *    exact in float), n - 1 additions in any order: gamma(n + 1) S' for the
 *    kernel; the reference sums in double and rounds once: (2u + n 2^-53) S'.
 * S' = sum |w_i a_i| of the dequantised operands, plus for the types with a
 * block minimum m (Q4_1, Q5_1, whose kernels sum d q_i a_i and m s apart) the
 * larger terms |m| (sum_block |a_i| + |s|). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/half.h"
#include "cpu/attn.h"
#include "cpu/cpu.h"
#include "cpu/matmul.h"
#include "cpu/pool.h"
#include "gguf/gguf.h"
#include "quant/quant.h"
#include "testutil.h"

static const uint32_t weight_types[] = {
    HR_TYPE_F32, HR_TYPE_F16, HR_TYPE_BF16, HR_TYPE_Q4_0, HR_TYPE_Q4_1, HR_TYPE_Q5_0,
    HR_TYPE_Q5_1, HR_TYPE_Q8_0, HR_TYPE_Q2_K, HR_TYPE_Q3_K, HR_TYPE_Q4_K, HR_TYPE_Q5_K,
    HR_TYPE_Q6_K, HR_TYPE_IQ4_NL, HR_TYPE_MXFP4,
};
#define N_WEIGHT_TYPES (sizeof weight_types / sizeof weight_types[0])

static const uint32_t act_types[] = { HR_TYPE_F16, HR_TYPE_BF16, HR_TYPE_Q8_0, HR_TYPE_Q8_1, HR_TYPE_Q8_K };
#define N_ACT_TYPES (sizeof act_types / sizeof act_types[0])

/* ---- seeded random numbers ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static double rng_uniform(void) { return ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0; }

static float rng_normal(void)
{
    double u = rng_uniform(), v = rng_uniform();
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* Normal data with a few outliers and, now and then, a zero block. */
static void fill_data(float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * rng_normal();
    for (int64_t i = 0; i < n / 97; i++)
        x[rng_next() % (uint64_t)n] *= 8.0f;
    if (n >= 512 && rng_next() % 2)
        memset(x + 256, 0, 32 * sizeof(float));
}

static const hr_type_traits *traits(uint32_t t)
{
    const hr_type_traits *tt = hr_type_get(t);
    assert_non_null(tt);
    return tt;
}

/* ---- error bounds (see the header) ---- */

static const double U = 0x1p-24; /* unit roundoff of float */

static double gamma_k(double k) { return k * U / (1.0 - k * U); }

static bool exact_type(uint32_t type)
{
    switch (type) {
    case HR_TYPE_Q2_K: case HR_TYPE_Q3_K: case HR_TYPE_Q4_K: case HR_TYPE_Q5_K: case HR_TYPE_Q6_K:
        return true;
    default:
        return false;
    }
}

/* The relative bound of |simd - ref| / S' for a dot of n elements. */
static double dot_tol(uint32_t type, int64_t n)
{
    const hr_type_traits *wt = hr_type_get(type);
    if (exact_type(type))
        return 0.0;
    if (wt->block_size == 1)
        return gamma_k((double)n + 1) + 2 * U + (double)n * 0x1p-53;
    const double nb = (double)(n / wt->block_size);
    return 2 * gamma_k(2 * nb + 8);
}

static float f16_at(const void *p)
{
    hr_f16 h;
    memcpy(&h, p, sizeof h);
    return hr_f16_to_f32(h);
}

/* S' of the header: wf/af are the dequantised rows, w/a the raw ones. */
static double dot_terms(uint32_t type, const void *w, const void *a, const float *wf, const float *af, int64_t n)
{
    double S = 0.0;
    for (int64_t i = 0; i < n; i++)
        S += fabs((double)wf[i] * (double)af[i]);
    if (type == HR_TYPE_Q4_1 || type == HR_TYPE_Q5_1) { /* d, m at 0, 2; Q8_1: d, s at 0, 2 */
        const hr_type_traits *wt = hr_type_get(type), *at = hr_type_get(HR_TYPE_Q8_1);
        for (int64_t b = 0; b < n / 32; b++) {
            const double m = fabs(f16_at((const char *)w + b * (int64_t)wt->type_size + 2));
            const double s = fabs(f16_at((const char *)a + b * (int64_t)at->type_size + 2));
            double sa = 0.0;
            for (int64_t i = 0; i < 32; i++)
                sa += fabs(af[b * 32 + i]);
            S += m * (sa + s);
        }
    }
    return S;
}

/* Per path and type: dots checked, and the largest fraction of the bound
 * used (test_report asserts on them). */
static int checked[HR_ISA_COUNT][HR_TYPE_COUNT];
static double worst[HR_ISA_COUNT][HR_TYPE_COUNT];

/* got (a kernel's dot of weight row w, activation row a, n elements, both raw)
 * against the reference's ref, within the bound; records the use. */
static void check_dot_value(hr_isa isa, uint32_t type, const void *w, const void *a, int64_t n, float got, float ref)
{
    const hr_type_traits *wt = traits(type), *at = traits(wt->vec_dot_type);
    float *wf = malloc((size_t)n * sizeof(float)), *af = malloc((size_t)n * sizeof(float));
    assert_non_null(wf);
    assert_non_null(af);
    wt->to_float(w, wf, n);
    at->to_float(a, af, n);
    const double S = dot_terms(type, w, a, wf, af, n);
    free(wf);
    free(af);
    const double err = fabs((double)got - (double)ref);
    /* the 2^-149 per element: rounding below the smallest normal */
    const double bound = dot_tol(type, n) * S + (double)n * 0x1p-149;
    checked[isa][type]++;
    if (exact_type(type) ? memcmp(&got, &ref, sizeof got) != 0 : !(err <= bound))
        fail_msg("%s %s n=%lld: simd %.9g ref %.9g err %.3g S' %.6g bound %.3g", hr_isa_name(isa),
                 hr_type_name(type), (long long)n, (double)got, (double)ref, err, S, bound);
    if (bound > 0 && err / bound > worst[isa][type])
        worst[isa][type] = err / bound;
}

/* Compares the ISA's vec_dot of weight row w with activation row a against the
 * reference; both rows hold n elements. */
static void check_dot(hr_isa isa, uint32_t type, const void *w, const void *a, int64_t n)
{
    const hr_type_traits *wt = traits(type);
    hr_vec_dot_fn f = hr_cpu_vec_dot_isa(type, isa);
    assert_non_null(f);
    float ref = NAN, got = NAN, again = NAN;
    wt->vec_dot(n, &ref, w, a);
    f(n, &got, w, a);
    f(n, &again, w, a);
    assert_memory_equal(&got, &again, sizeof got); /* deterministic */
    check_dot_value(isa, type, w, a, n, got, ref);
}

static int n_isas(void) { return (int)hr_cpu_host_isa() + 1; }

/* ---- vec_dot on random rows ---- */

static void test_vec_dot_random(void **state)
{
    (void)state;
    static const int64_t lens32[] = { 32, 96, 256, 896, 4864 };
    static const int64_t lens256[] = { 256, 768, 4864 };
    static const int64_t lens1[] = { 1, 7, 33, 64, 100, 896, 4867 };
    for (int isa = 1; isa < n_isas(); isa++) {
        int bodies = 0;
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            const uint32_t type = weight_types[ti];
            if (!hr_cpu_vec_dot_isa(type, (hr_isa)isa))
                continue;
            bodies++;
            const hr_type_traits *wt = traits(type), *at = traits(wt->vec_dot_type);
            const int64_t *lens = wt->block_size == 256 ? lens256 : wt->block_size == 32 ? lens32 : lens1;
            const size_t nl = wt->block_size == 256 ? 3 : wt->block_size == 32 ? 5 : 7;
            for (size_t li = 0; li < nl; li++) {
                const int64_t n = lens[li];
                for (int rep = 0; rep < 8; rep++) {
                    float *xw = malloc((size_t)n * sizeof(float)), *xa = malloc((size_t)n * sizeof(float));
                    void *w = malloc(hr_row_size(type, n)), *a = malloc(hr_row_size(wt->vec_dot_type, n));
                    assert_true(xw && xa && w && a);
                    fill_data(xw, n, rep % 2 ? 0.02f : 1.0f);
                    fill_data(xa, n, rep % 3 ? 3.0f : 0.1f);
                    assert_true(hr_quantize_row(type, xw, w, n));
                    at->from_float(xa, a, n);
                    check_dot((hr_isa)isa, type, w, a, n);
                    free(xw);
                    free(xa);
                    free(w);
                    free(a);
                }
            }
        }
        assert_true(bodies >= 6);
    }
}

/* Weight rows that use the full code range: random bytes with sane scales
 * (the weight quantisers never produce, e.g., Q8_0's -128 or large 6-bit
 * scales), built by overwriting random blocks' scale fields. */
static void test_vec_dot_random_bytes(void **state)
{
    (void)state;
    for (int isa = 1; isa < n_isas(); isa++) {
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            const uint32_t type = weight_types[ti];
            const hr_type_traits *wt = traits(type), *at = traits(wt->vec_dot_type);
            if (wt->block_size == 1 || !hr_cpu_vec_dot_isa(type, (hr_isa)isa))
                continue;
            const int64_t n = 1024;
            const size_t wb = hr_row_size(type, n);
            unsigned char *w = malloc(wb);
            float *xa = malloc(n * sizeof(float));
            void *a = malloc(hr_row_size(wt->vec_dot_type, n));
            assert_true(w && xa && a);
            for (int rep = 0; rep < 16; rep++) {
                for (size_t i = 0; i < wb; i++)
                    w[i] = (unsigned char)rng_next();
                /* fp16 scales: small positive/negative normals; they sit at
                 * type-specific offsets */
                const int64_t nb = n / wt->block_size;
                for (int64_t b = 0; b < nb; b++) {
                    unsigned char *blk = w + (size_t)b * wt->type_size;
                    size_t offs[2] = { 0, 0 };
                    int k = 0;
                    switch (type) {
                    case HR_TYPE_Q2_K: offs[k++] = 80; offs[k++] = 82; break;
                    case HR_TYPE_Q3_K: offs[k++] = 108; break;
                    case HR_TYPE_Q6_K: offs[k++] = 208; break;
                    case HR_TYPE_Q4_K: case HR_TYPE_Q5_K: case HR_TYPE_Q4_1: case HR_TYPE_Q5_1:
                        offs[k++] = 0; offs[k++] = 2; break;
                    case HR_TYPE_MXFP4: /* E8M0 byte: scales 2^-28 .. 2^11 */
                        blk[0] = (unsigned char)(100 + rng_next() % 40); break;
                    default: offs[k++] = 0; break;
                    }
                    for (int j = 0; j < k; j++) {
                        hr_f16 h = hr_f32_to_f16((float)(rng_normal() * 0.01));
                        memcpy(blk + offs[j], &h, 2);
                    }
                }
                fill_data(xa, n, 1.0f);
                at->from_float(xa, a, n);
                check_dot((hr_isa)isa, type, w, a, n);
            }
            free(w);
            free(xa);
            free(a);
        }
    }
}

/* ---- vec_dot on the fixture rows (real GGUF blocks) ---- */

/* The fixture rows of a type: quant/<TYPE>.blocks.bin (8 rows of 256), or,
 * for MXFP4, which that folder lacks, the first 64 rows (160 columns) of
 * gpt-oss's blk.0.ffn_gate_exps.weight as llama-quantize wrote them. */
static unsigned char *fixture_rows(uint32_t type, size_t *size, int64_t *cols)
{
    if (type == HR_TYPE_MXFP4) {
        const char *path = tu_fixture("models/arch/gpt-oss-MXFP4_F32.gguf");
        hr_gguf *g = NULL;
        hr_err err;
        if (hr_gguf_open(path, &g, &err) != HR_OK)
            fail_msg("cannot open fixture %s: %s", path, err.msg);
        const hr_gguf_tensor *t = hr_gguf_find_tensor(g, "blk.0.ffn_gate_exps.weight");
        assert_non_null(t);
        assert_int_equal(t->type, HR_TYPE_MXFP4);
        *cols = t->ne[0];
        const size_t rb = hr_row_size(type, *cols);
        assert_true(rb > 0 && t->size >= 64 * rb);
        *size = 64 * rb;
        unsigned char *b = malloc(*size);
        assert_non_null(b);
        memcpy(b, t->data, *size);
        hr_gguf_close(g);
        return b;
    }
    char rel[64];
    snprintf(rel, sizeof rel, "quant/%s.blocks.bin", hr_type_name(type));
    unsigned char *b = tu_read_file(tu_fixture(rel), size);
    if (!b)
        fail_msg("cannot read fixture %s", tu_fixture(rel));
    *cols = 256;
    return b;
}

static void test_vec_dot_fixtures(void **state)
{
    (void)state;
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
        const uint32_t type = weight_types[ti];
        const hr_type_traits *wt = traits(type), *at = traits(wt->vec_dot_type);
        size_t size = 0;
        int64_t cols = 0;
        unsigned char *blocks = fixture_rows(type, &size, &cols);
        const size_t rb = hr_row_size(type, cols);
        assert_true(rb > 0 && size % rb == 0);
        float *wf = malloc((size_t)cols * sizeof(float)), *xa = malloc((size_t)cols * sizeof(float));
        void *a = malloc(hr_row_size(wt->vec_dot_type, cols));
        assert_true(wf && xa && a);
        for (size_t r = 0; r < size / rb; r++) {
            /* against random activations and against the row itself */
            wt->to_float(blocks + r * rb, wf, cols);
            for (int which = 0; which < 2; which++) {
                if (which == 0)
                    fill_data(xa, cols, 1.0f);
                else
                    memcpy(xa, wf, (size_t)cols * sizeof(float));
                at->from_float(xa, a, cols);
                for (int isa = 1; isa < n_isas(); isa++)
                    if (hr_cpu_vec_dot_isa(type, (hr_isa)isa))
                        check_dot((hr_isa)isa, type, blocks + r * rb, a, cols);
            }
        }
        free(blocks);
        free(wf);
        free(xa);
        free(a);
    }
}

/* ---- activation quantisers: byte-identical ---- */

static void check_quantiser(hr_isa isa, uint32_t act, const float *x, int64_t n)
{
    const hr_type_traits *at = traits(act);
    hr_from_float_fn f = hr_cpu_from_float_isa(act, isa);
    if (!f)
        return;
    const size_t rb = hr_row_size(act, n);
    unsigned char *ref = malloc(rb), *got = malloc(rb);
    assert_true(ref && got);
    memset(got, 0xa5, rb);
    at->from_float(x, ref, n);
    f(x, got, n);
    if (memcmp(ref, got, rb) != 0) {
        size_t i = 0;
        while (ref[i] == got[i])
            i++;
        fail_msg("%s from_float %s n=%lld: byte %zu differs (%02x vs ref %02x)", hr_isa_name(isa),
                 hr_type_name(act), (long long)n, i, got[i], ref[i]);
    }
    free(ref);
    free(got);
}

static void test_quantisers(void **state)
{
    (void)state;
    const int64_t n = 2048;
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    for (int isa = 1; isa < n_isas(); isa++) {
        for (size_t ai = 0; ai < N_ACT_TYPES; ai++) {
            const uint32_t act = act_types[ai];
            for (int rep = 0; rep < 20; rep++) {
                fill_data(x, n, rep % 2 ? 1e-3f : 5.0f);
                if (rep == 3) /* ties: x * 127/amax lands on .5 often */
                    for (int64_t i = 0; i < n; i++)
                        x[i] = (float)((int)(rng_next() % 255) - 127) * 0.5f;
                if (rep == 4) /* +m and -m of the same magnitude: first one wins */
                    for (int64_t i = 0; i < n; i += 16) {
                        x[i] = -7.0f;
                        x[i + 3] = 7.0f;
                    }
                if (rep == 5) /* tiny values: F16 subnormals, bf16 rounding */
                    for (int64_t i = 0; i < n; i++)
                        x[i] = (float)(rng_normal() * 1e-6);
                if (rep == 6)
                    memset(x, 0, n * sizeof(float));
                const int64_t bs = traits(act)->block_size;
                check_quantiser((hr_isa)isa, act, x, n);
                check_quantiser((hr_isa)isa, act, x, bs == 1 ? 13 : bs); /* one block / tails */
            }
        }
    }
    free(x);
}

/* ---- hr_matmul ---- */

static void test_matmul_threads_and_batching(void **state)
{
    (void)state;
    static const int threads[] = { 1, 2, 3, 8 };
    hr_pool *pools[4];
    for (int i = 0; i < 4; i++)
        assert_non_null(pools[i] = hr_pool_new(threads[i]));
    const int64_t N = 37;
    const int32_t T = 5;
    for (int isa = 0; isa < n_isas(); isa++) {
        assert_int_equal(hr_cpu_force((hr_isa)isa), isa);
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            const uint32_t type = weight_types[ti];
            const hr_type_traits *wt = traits(type);
            const int64_t K = wt->block_size == 256 ? 768 : 320;
            const size_t rb = hr_row_size(type, K);
            float *xw = malloc((size_t)K * sizeof(float));
            unsigned char *w = malloc(rb * (size_t)N);
            float *x = malloc((size_t)T * K * sizeof(float));
            float *y[4], *y1 = malloc((size_t)T * N * sizeof(float));
            void *scratch = malloc(hr_matmul_scratch_bytes(type, K, T) + 1);
            assert_true(xw && w && x && y1 && scratch);
            assert_true(hr_matmul_scratch_bytes(type, K, T) <= (size_t)T * ((size_t)K * 4 + 64));
            for (int64_t r = 0; r < N; r++) {
                fill_data(xw, K, 0.5f);
                assert_true(hr_quantize_row(type, xw, w + r * rb, K));
            }
            fill_data(x, (int64_t)T * K, 1.0f);
            for (int p = 0; p < 4; p++) {
                y[p] = malloc((size_t)T * N * sizeof(float));
                assert_non_null(y[p]);
                hr_matmul(pools[p], w, type, rb, K, N, x, T, y[p], scratch);
                if (p > 0)
                    assert_memory_equal(y[p], y[0], (size_t)T * N * sizeof(float));
            }
            /* one token at a time, and a NULL pool */
            for (int32_t t = 0; t < T; t++)
                hr_matmul(t % 2 ? NULL : pools[3], w, type, rb, K, N, x + (size_t)t * K, 1, y1 + (size_t)t * N, scratch);
            assert_memory_equal(y1, y[0], (size_t)T * N * sizeof(float));
            /* each output is one dispatched vec_dot, and close to the reference */
            const hr_type_traits *at = traits(wt->vec_dot_type);
            const size_t ab = wt->vec_dot_type == HR_TYPE_F32 ? (size_t)K * 4 : hr_row_size(wt->vec_dot_type, K);
            void *arow = malloc(ab);
            assert_non_null(arow);
            for (int32_t t = 0; t < T; t++) {
                at->from_float(x + (size_t)t * K, arow, K);
                for (int64_t r = 0; r < N; r++) {
                    float v;
                    hr_cpu_vec_dot(type)(K, &v, w + r * rb, arow);
                    assert_memory_equal(&v, &y[0][(size_t)t * N + r], sizeof v);
                    if (isa > 0)
                        check_dot((hr_isa)isa == HR_ISA_AVX512 && !hr_cpu_vec_dot_isa(type, HR_ISA_AVX512)
                                      ? HR_ISA_AVX2 : (hr_isa)isa,
                                  type, w + r * rb, arow, K);
                }
            }
            free(arow);
            for (int p = 0; p < 4; p++)
                free(y[p]);
            free(xw);
            free(w);
            free(x);
            free(y1);
            free(scratch);
        }
    }
    hr_cpu_force(hr_cpu_host_isa());
    for (int i = 0; i < 4; i++)
        hr_pool_free(pools[i]);
}

/* A bigger product with many tokens (token tiling, uneven chunks). */
static void test_matmul_large(void **state)
{
    (void)state;
    const int64_t K = 896, N = 301;
    const int32_t T = 70;
    const uint32_t type = HR_TYPE_Q4_K;
    const size_t rb = hr_row_size(type, K / 256 * 256);
    (void)rb;
    /* Q4_K needs K % 256 == 0: use 1024 */
    const int64_t Kq = 1024;
    const size_t rbq = hr_row_size(type, Kq);
    unsigned char *w = malloc(rbq * (size_t)N);
    float *xw = malloc(Kq * sizeof(float)), *x = malloc((size_t)T * Kq * sizeof(float));
    float *y2 = malloc((size_t)T * N * sizeof(float)), *y8 = malloc((size_t)T * N * sizeof(float));
    void *scratch = malloc(hr_matmul_scratch_bytes(type, Kq, T));
    assert_true(w && xw && x && y2 && y8 && scratch);
    for (int64_t r = 0; r < N; r++) {
        fill_data(xw, Kq, 1.0f);
        hr_quantize_row(type, xw, w + r * rbq, Kq);
    }
    fill_data(x, (int64_t)T * Kq, 1.0f);
    hr_pool *p2 = hr_pool_new(2), *p8 = hr_pool_new(8);
    hr_matmul(p2, w, type, rbq, Kq, N, x, T, y2, scratch);
    hr_matmul(p8, w, type, rbq, Kq, N, x, T, y8, scratch);
    assert_memory_equal(y2, y8, (size_t)T * N * sizeof(float));
    /* token 69 alone */
    float *yt = malloc(N * sizeof(float));
    assert_non_null(yt);
    hr_matmul(p8, w, type, rbq, Kq, N, x + (size_t)69 * Kq, 1, yt, scratch);
    assert_memory_equal(yt, y2 + (size_t)69 * N, N * sizeof(float));
    hr_pool_free(p2);
    hr_pool_free(p8);
    free(yt);
    free(w);
    free(xw);
    free(x);
    free(y2);
    free(y8);
    free(scratch);
    (void)K;
}

/* The GEMM the engine runs (src/engine/engine.c, matmul()): the packed copy
 * where the path in use has a layout for the type (avx512: Q8_0, Q4_0, Q5_0,
 * IQ4_NL, Q4_K, Q6_K), hr_matmul on the original rows otherwise (every type
 * on avx2 and scalar hosts). Checked on every path the host has, for every
 * weight type, against the scalar reference: one src/quant vec_dot per
 * output on the reference-quantised activation row. The packed kernels and
 * the K-quants are bit-identical to it; the others within dot_tol. Also: 1, 2,
 * 3 and 8 threads give the same bits, as do uneven batches (T = 1..21 covers
 * the tails of the 8-token tile; N = 53 is not a multiple of 16), and where
 * packed, the pack size and Q/K/V-style multi products. The avx512 layouts
 * run only on an avx512 host; elsewhere this is the hr_matmul path. */
static void test_matmul_engine_path(void **state)
{
    (void)state;
    static const int threads[] = { 1, 2, 3, 8 };
    hr_pool *pools[4];
    for (int i = 0; i < 4; i++)
        assert_non_null(pools[i] = hr_pool_new(threads[i]));
    const int64_t N = 53;
    const int32_t T = 21;
    int n_packed = 0;
    for (int isa = 0; isa < n_isas(); isa++) {
        assert_int_equal(hr_cpu_force((hr_isa)isa), isa);
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            const uint32_t type = weight_types[ti];
            const uint32_t atype = traits(type)->vec_dot_type;
            const int64_t K = traits(type)->block_size == 256 ? 768 : 352;
            const size_t rb = hr_row_size(type, K), pb = hr_matmul_packed_bytes(type, K, N);
            const size_t ab = atype == HR_TYPE_F32 ? (size_t)K * 4 : hr_row_size(atype, K);
            float *xw = malloc((size_t)K * sizeof(float)), *x = malloc((size_t)T * K * sizeof(float));
            unsigned char *w = malloc(rb * (size_t)N), *pk = pb ? aligned_alloc(64, (pb + 63) / 64 * 64) : NULL;
            float *y = malloc((size_t)T * N * sizeof(float)), *y0 = malloc((size_t)T * N * sizeof(float));
            float *yref = malloc((size_t)T * N * sizeof(float));
            void *scratch = malloc(hr_matmul_scratch_bytes(type, K, T) + 1);
            unsigned char *arow = malloc((size_t)T * ab);
            assert_true(xw && x && w && (pk || !pb) && y && y0 && yref && scratch && arow);
            assert_true(hr_matmul_scratch_bytes(type, K, T) <= (size_t)T * ((size_t)K * 4 + 64));
            for (int64_t r = 0; r < N; r++) {
                fill_data(xw, K, 0.5f);
                assert_true(hr_quantize_row(type, xw, w + r * rb, K));
            }
            fill_data(x, (int64_t)T * K, 1.0f);
            for (int32_t t = 0; t < T; t++) {
                traits(atype)->from_float(x + (size_t)t * K, arow + (size_t)t * ab, K);
                for (int64_t r = 0; r < N; r++)
                    traits(type)->vec_dot(K, &yref[(size_t)t * N + r], w + r * rb, arow + (size_t)t * ab);
            }
            if (pb) {
                n_packed++;
                /* the size of the original rows, padded to 16 (Q4_K: 148 bytes per 144) */
                assert_int_equal(pb, (size_t)(N + 15) / 16 * 16 * (type == HR_TYPE_Q4_K ? rb / 144 * 148 : rb));
                hr_matmul_pack(pools[1], w, type, rb, K, N, pk);
            }
            /* as the engine calls it, unaligned scratch */
#define ENGINE_GEMM(pool, xs, nt, ys, scr)                                                                  \
    (pb ? hr_matmul_packed((pool), pk, type, K, N, (xs), (nt), (ys), (scr))                              \
        : hr_matmul((pool), w, type, rb, K, N, (xs), (nt), (ys), (scr)))
            for (int p = 0; p < 4; p++) {
                memset(y, 0, (size_t)T * N * sizeof(float));
                ENGINE_GEMM(pools[p], x, T, y, (char *)scratch + 1);
                if (p == 0)
                    memcpy(y0, y, (size_t)T * N * sizeof(float));
                else
                    assert_memory_equal(y, y0, (size_t)T * N * sizeof(float));
            }
            if (pb)
                assert_memory_equal(y0, yref, (size_t)T * N * sizeof(float));
            for (int32_t t = 0; t < T; t++)
                for (int64_t r = 0; r < N; r++)
                    check_dot_value((hr_isa)isa, type, w + r * rb, arow + (size_t)t * ab, K,
                                    y0[(size_t)t * N + r], yref[(size_t)t * N + r]);
            memset(y, 0, (size_t)T * N * sizeof(float));
            for (int32_t t0 = 0, n = 1; t0 < T; t0 += n, n++) { /* uneven batches */
                const int32_t nt = t0 + n <= T ? n : T - t0;
                ENGINE_GEMM(t0 % 2 ? NULL : pools[2], x + (size_t)t0 * K, nt, y + (size_t)t0 * N, scratch);
            }
            assert_memory_equal(y, y0, (size_t)T * N * sizeof(float));
#undef ENGINE_GEMM
            if (pb) { /* the same matrix three times in one multi call: each its own result */
                float *ym = malloc((size_t)3 * T * N * sizeof(float));
                assert_non_null(ym);
                const void *pks[3] = { pk, pk, pk };
                const int64_t Ns[3] = { N, N, N };
                float *const ys[3] = { ym, ym + (size_t)T * N, ym + (size_t)2 * T * N };
                hr_matmul_packed_multi(pools[3], 3, pks, Ns, ys, type, K, x, T, scratch);
                for (int m = 0; m < 3; m++)
                    assert_memory_equal(ys[m], y0, (size_t)T * N * sizeof(float));
                free(ym);
            }
            free(xw);
            free(x);
            free(w);
            free(pk);
            free(y);
            free(y0);
            free(yref);
            free(scratch);
            free(arow);
        }
    }
    print_message("engine GEMM: %d type/path pairs on packed layouts; the rest on hr_matmul (host %s)\n", n_packed,
                  hr_isa_name(hr_cpu_host_isa()));
    if (hr_cpu_host_isa() >= HR_ISA_AVX512)
        assert_true(n_packed >= 6);
    hr_cpu_force(hr_cpu_host_isa());
    for (int i = 0; i < 4; i++)
        hr_pool_free(pools[i]);
}

/* ---- streaming attention ---- */

/* The tiles attn.h promises: at most 16 positions, never across a block. */
static int32_t attn_tiles(int32_t n, int32_t bt)
{
    int32_t tiles = 0;
    for (int32_t p0 = 0, k; p0 < n; p0 += k, tiles++) {
        k = n - p0 < 16 ? n - p0 : 16;
        if (p0 % bt + k > bt)
            k = bt - p0 % bt;
    }
    return tiles;
}

/* The attention error bound, one formula for every path (hr_attn_ref and the
 * avx512 kernel alike). One query row: exact scores s_p = scale q.k_p,
 * weights w_p = softmax(s)_p, output o_i = sum_p w_p v_pi over n positions,
 * computed in T tiles (attn_tiles) with an online softmax.
 *  1. A score is a d-term float dot (any order, FMA or not) times scale:
 *     |s^_p - s_p| <= gamma(d + 1) |scale| sum_i |q_i k_pi| =: e_p <= E.
 *  2. Position p is weighted by exp(s^_p - m_tile) times one rescale
 *     exp(m_old - m_new) per later tile whose maximum is higher. The shifts
 *     telescope to s^_p - m_final, common to every position, which cancels
 *     in the ratio; what remains is the rounding of each subtraction,
 *     u |s^_p - m_tile| + u sum |m_old - m_new| <= 4 u M, M = max |s^_p|.
 *  3. Each exponential (expf: within 1 ulp; the avx512 polynomial: 1e-8
 *     plus its Horner roundings) is within eta = 4u relative, and a weight
 *     meets at most T of them. So the computed weight is p_j (1 + alpha_j),
 *     |alpha_j| <= A = exp(E + 4 u M) (1 + eta)^T - 1.
 *  4. sum p^_j v_j / sum p^_j differs from o by at most
 *     2A / (1 - A) S_i, S_i = sum_p w_p |v_pi| (a common factor cancels; the
 *     deviations from their weighted mean are at most 2A).
 *  5. Numerator and denominator each take, per term, a product, at most n
 *     additions (in sequence, or a 16-wide tree of 4 levels and then a
 *     running sum) and T rescale multiplications: gamma(n + T + 5) of their
 *     sums of |terms|; 1/l and the last multiply: gamma(2).
 * |o^_i - o_i| <= [2A/(1-A) + (2 g + gamma(2)) (1+A)/(1-A) (1+g)/(1-g)] S_i
 *                 + n 2^-125 max |v|,    g = gamma(n + T + 5),
 * the last term for exponentials below the normal range (avx512 clamps its
 * argument at -87: e^-87 < 2^-125). The reference in double is exact to
 * ~n 2^-53, far inside this. */

/* hr_cpu_attn (every path) and hr_attn_ref against a plain two-pass softmax
 * in double, within the bound above, over blocks of several sizes and
 * lengths that end mid-tile, for runs of query tokens at consecutive
 * positions (as in a prefill) and more tokens than one kernel call takes;
 * each token's output must be bit-identical to computing it alone. */
static void test_attention(void **state)
{
    (void)state;
    static const int32_t bts[] = { 16, 5, 32 }, lens[] = { 1, 15, 16, 17, 100, 333 }, dims[] = { 64, 128 };
    static const int32_t groups[] = { 1, 4, 7 };
    enum { NT = HR_ATTN_MAX_TOKENS + 3 };
    const int32_t max_len = 333, max_d = 128, max_g = 7;
    const size_t qs = (size_t)max_g * max_d; /* floats between tokens, in and out */
    float *k = malloc((size_t)max_len * max_d * 2 * sizeof(float)), *v = malloc((size_t)max_len * max_d * 2 * sizeof(float));
    float *q = malloc(NT * qs * sizeof(float)), *out = malloc(NT * qs * sizeof(float)), *one = malloc(qs * sizeof(float));
    double *want = malloc(NT * qs * sizeof(double)), *bnd = malloc(NT * qs * sizeof(double));
    double *sc = malloc((size_t)max_len * sizeof(double));
    const float **kb = malloc((size_t)max_len * sizeof *kb), **vb = malloc((size_t)max_len * sizeof *vb);
    assert_true(k && v && q && out && one && want && bnd && sc && kb && vb);
    double worst_attn = 0.0;
    for (int isa = 0; isa < n_isas(); isa++) {
        hr_cpu_force((hr_isa)isa);
        for (size_t di = 0; di < 2; di++)
            for (size_t gi = 0; gi < 3; gi++)
                for (size_t bi = 0; bi < 3; bi++)
                    for (size_t li = 0; li < 6; li++) {
                        const int32_t d = dims[di], g = groups[gi], bt = bts[bi], n = lens[li];
                        const size_t stride = (size_t)d * 2; /* a second KV head interleaved */
                        const int32_t nt = n >= NT ? NT : n;  /* tokens at positions n-nt .. n-1 */
                        int32_t n_pos[NT];
                        for (int32_t t = 0; t < nt; t++)
                            n_pos[t] = n - nt + 1 + t;
                        fill_data(k, (int64_t)n * (int64_t)stride, 1.0f);
                        fill_data(v, (int64_t)n * (int64_t)stride, 1.0f);
                        fill_data(q, (int64_t)(NT * qs), 2.0f);
                        for (int32_t b = 0; b * bt < n; b++) { /* blocks: rows of this head, stride apart */
                            kb[b] = k + (size_t)b * bt * stride + (size_t)d;
                            vb[b] = v + (size_t)b * bt * stride + (size_t)d;
                        }
                        const hr_attn_kv kv = { kb, vb, bt, stride, stride };
                        const float scale = 0.125f;
                        for (int32_t t = 0; t < nt; t++)
                            for (int32_t h = 0; h < g; h++) {
                                const float *qh = q + (size_t)t * qs + (size_t)h * d;
                                double mx = -1e300, sum = 0, E = 0, M = 0, vmax = 0;
                                for (int32_t p = 0; p < n_pos[t]; p++) {
                                    double s = 0, sa = 0;
                                    for (int32_t i = 0; i < d; i++) {
                                        s += (double)qh[i] * k[(size_t)p * stride + d + i];
                                        sa += fabs((double)qh[i] * k[(size_t)p * stride + d + i]);
                                    }
                                    sc[p] = s * scale;
                                    mx = sc[p] > mx ? sc[p] : mx;
                                    E = fmax(E, gamma_k(d + 1) * fabs(scale) * sa);
                                    M = fmax(M, fabs(sc[p]));
                                }
                                M += E;
                                for (int32_t p = 0; p < n_pos[t]; p++)
                                    sum += (sc[p] = exp(sc[p] - mx));
                                const double T = attn_tiles(n_pos[t], bt);
                                const double A = exp(E + 4 * U * M) * pow(1 + 4 * U, T) - 1;
                                const double gs = gamma_k(n_pos[t] + T + 5);
                                const double fac = 2 * A / (1 - A) + (2 * gs + gamma_k(2)) * (1 + A) / (1 - A) *
                                                                         (1 + gs) / (1 - gs);
                                for (int32_t i = 0; i < d; i++) {
                                    double o = 0, S = 0;
                                    for (int32_t p = 0; p < n_pos[t]; p++) {
                                        const double vp = v[(size_t)p * stride + d + i];
                                        o += sc[p] / sum * vp;
                                        S += sc[p] / sum * fabs(vp);
                                        vmax = fmax(vmax, fabs(vp));
                                    }
                                    want[(size_t)t * qs + (size_t)h * d + i] = o;
                                    bnd[(size_t)t * qs + (size_t)h * d + i] = fac * S;
                                }
                                for (int32_t i = 0; i < d; i++)
                                    bnd[(size_t)t * qs + (size_t)h * d + i] += n_pos[t] * 0x1p-125 * vmax;
                            }
                        for (int impl = 0; impl < 2; impl++) {
                            const hr_attn_fn f = impl ? hr_attn_ref : hr_cpu_attn(g, d, d);
                            f(q, qs, nt, n_pos, g, d, d, scale, &kv, out, qs);
                            for (int32_t t = 0; t < nt; t++) {
                                for (int32_t i = 0; i < g * d; i++) {
                                    const size_t o = (size_t)t * qs + (size_t)i;
                                    const double err = fabs(out[o] - want[o]);
                                    if (!(err <= bnd[o]))
                                        fail_msg("%s attention d=%d group=%d block=%d len=%d token %d [%d]: %.9g vs "
                                                 "%.9g, err %.3g > bound %.3g",
                                                 impl ? "reference" : hr_cpu_isa_name(), d, g, bt, n_pos[t], t, i,
                                                 (double)out[o], want[o], err, bnd[o]);
                                    worst_attn = fmax(worst_attn, err / bnd[o]);
                                }
                                /* alone: the same bits */
                                f(q + (size_t)t * qs, qs, 1, n_pos + t, g, d, d, scale, &kv, one, qs);
                                assert_memory_equal(one, out + (size_t)t * qs, (size_t)(g * d) * sizeof(float));
                            }
                        }
                    }
    }
    hr_cpu_force(hr_cpu_host_isa());
    print_message("attention: largest error %.3g of its bound\n", worst_attn);
    free(k);
    free(v);
    free(q);
    free(out);
    free(one);
    free(want);
    free(bnd);
    free(sc);
    free(kb);
    free(vb);
}

/* ---- dispatch ---- */

static void test_dispatch(void **state)
{
    (void)state;
    const hr_isa host = hr_cpu_host_isa();
    print_message("host ISA: %s\n", hr_isa_name(host));
    assert_int_equal(hr_cpu_force(HR_ISA_SCALAR), HR_ISA_SCALAR);
    assert_string_equal(hr_cpu_isa_name(), "scalar");
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++)
        assert_ptr_equal(hr_cpu_vec_dot(weight_types[ti]), traits(weight_types[ti])->vec_dot);
    assert_int_equal(hr_cpu_force(HR_ISA_AVX512), host);
    assert_int_equal(hr_cpu_isa(), host);
    for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++)
        assert_non_null(hr_cpu_vec_dot(weight_types[ti]));
    for (size_t ai = 0; ai < N_ACT_TYPES; ai++)
        assert_non_null(hr_cpu_from_float(act_types[ai]));
    assert_non_null(hr_cpu_from_float(HR_TYPE_F32));
    assert_null(hr_cpu_vec_dot(HR_TYPE_Q8_K));  /* activation-only */
    assert_null(hr_cpu_vec_dot(HR_TYPE_Q8_1));
    assert_null(hr_cpu_vec_dot(16));            /* IQ2_XXS: unsupported */
    assert_null(hr_cpu_vec_dot(4));             /* never defined */
    assert_null(hr_cpu_vec_dot(1000));
    assert_null(hr_cpu_from_float(HR_TYPE_Q4_K)); /* not an activation type */
    hr_isa v;
    assert_true(hr_isa_parse("AVX2", &v));
    assert_int_equal(v, HR_ISA_AVX2);
    assert_true(hr_isa_parse("scalar", &v));
    assert_int_equal(v, HR_ISA_SCALAR);
    assert_true(hr_isa_parse("avx512", &v));
    assert_int_equal(v, HR_ISA_AVX512);
    assert_false(hr_isa_parse("avx", &v));
    assert_false(hr_isa_parse("avx5120", &v));
    assert_false(hr_isa_parse("", &v));
    assert_string_equal(hr_isa_name((hr_isa)7), "unknown");
}

/* What the dot checks above saw, per path with kernels of its own: every
 * type with a SIMD body was checked (at least the fixture rows and the random
 * rows), its body is not the reference itself, the K-quants matched bit for
 * bit, and the largest error stayed within the derived bound. Relies on the
 * tests above having run first (cmocka runs them in order). */
static void test_report(void **state)
{
    (void)state;
    for (int isa = 1; isa < n_isas(); isa++) {
        int bodies = 0;
        for (size_t ti = 0; ti < N_WEIGHT_TYPES; ti++) {
            const uint32_t type = weight_types[ti];
            const hr_vec_dot_fn f = hr_cpu_vec_dot_isa(type, (hr_isa)isa);
            if (!f)
                continue;
            bodies++;
            print_message("%-6s %-6s %5d dots, max |err| = %.3g of the bound\n", hr_isa_name((hr_isa)isa),
                          hr_type_name(type), checked[isa][type], worst[isa][type]);
            assert_ptr_not_equal(f, traits(type)->vec_dot);
            if (checked[isa][type] < 40)
                fail_msg("%s %s: only %d dots checked", hr_isa_name((hr_isa)isa), hr_type_name(type),
                         checked[isa][type]);
            assert_true(worst[isa][type] <= 1.0);
            if (exact_type(type))
                assert_true(worst[isa][type] == 0.0);
        }
        assert_true(bodies >= 6);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_vec_dot_random),
        cmocka_unit_test(test_vec_dot_random_bytes),
        cmocka_unit_test(test_vec_dot_fixtures),
        cmocka_unit_test(test_quantisers),
        cmocka_unit_test(test_matmul_threads_and_batching),
        cmocka_unit_test(test_matmul_large),
        cmocka_unit_test(test_matmul_engine_path),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
