/* test_quant.c - scalar reference kernels of the GGML element types:
 * bit-exact dequantisation against the fixtures, dot products against the
 * float dot of the dequantised operands, activation and weight quantisers,
 * the type table, and MXFP4 against a real llama-quantize file (gpt-oss
 * fixture: the quantiser byte for byte, dequantisation, dot products). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/half.h"
#include "gguf/gguf.h"
#include "quant/quant.h"
#include "testutil.h"

#define FIX_ROWS 8
#define FIX_COLS 256

static const char *const fixture_types[] = {
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL",
};
#define N_FIXTURE_TYPES (sizeof fixture_types / sizeof fixture_types[0])

static const uint32_t weight_types[] = {
    HR_TYPE_F32, HR_TYPE_F16, HR_TYPE_BF16, HR_TYPE_Q4_0, HR_TYPE_Q4_1, HR_TYPE_Q5_0,
    HR_TYPE_Q5_1, HR_TYPE_Q8_0, HR_TYPE_Q2_K, HR_TYPE_Q3_K, HR_TYPE_Q4_K, HR_TYPE_Q5_K,
    HR_TYPE_Q6_K, HR_TYPE_IQ4_NL, HR_TYPE_MXFP4,
};
#define N_WEIGHT_TYPES (sizeof weight_types / sizeof weight_types[0])

/* ---- small helpers: seeded normal numbers, SHA-256 ---- */

static uint64_t rng_state;

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

static void fill_normal(float *x, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * rng_normal();
}

static uint32_t rotr(uint32_t x, int r) { return x >> r | x << (32 - r); }

static void sha256_hex(const unsigned char *msg, size_t len, char out[65])
{
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    };
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t total = ((len + 9 + 63) / 64) * 64;
    for (size_t off = 0; off < total; off += 64) {
        unsigned char blk[64];
        for (size_t i = 0; i < 64; i++) {
            size_t p = off + i;
            if (p < len)
                blk[i] = msg[p];
            else if (p == len)
                blk[i] = 0x80;
            else if (p >= total - 8)
                blk[i] = (unsigned char)((uint64_t)len * 8 >> (8 * (total - 1 - p)));
            else
                blk[i] = 0;
        }
        uint32_t w[64];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)blk[4 * i] << 24 | (uint32_t)blk[4 * i + 1] << 16 |
                   (uint32_t)blk[4 * i + 2] << 8 | blk[4 * i + 3];
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
            uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    for (int i = 0; i < 8; i++)
        snprintf(out + 8 * i, 9, "%08x", (unsigned)h[i]);
}

/* ---- fixtures ---- */

typedef struct {
    const char *name;
    uint32_t id;
    size_t bytes_per_row;
    unsigned char *blocks;
    size_t blocks_size;
    float *f32;
} fixture;

static void load_fixture(const char *name, fixture *fx)
{
    char rel[128];
    memset(fx, 0, sizeof *fx);
    fx->name = name;
    snprintf(rel, sizeof rel, "quant/%s.json", name);
    json_error_t jerr;
    json_t *j = json_load_file(tu_fixture(rel), 0, &jerr);
    if (!j)
        fail_msg("%s: cannot read %s: %s", name, tu_fixture(rel), jerr.text);
    fx->id = (uint32_t)json_integer_value(json_object_get(j, "ggml_type_id"));
    fx->bytes_per_row = (size_t)json_integer_value(json_object_get(j, "bytes_per_row"));
    assert_int_equal(json_integer_value(json_object_get(j, "rows")), FIX_ROWS);
    assert_int_equal(json_integer_value(json_object_get(j, "cols")), FIX_COLS);
    char sha[65];
    const char *want_sha = json_string_value(json_object_get(j, "blocks_sha256"));
    assert_non_null(want_sha);

    snprintf(rel, sizeof rel, "quant/%s.blocks.bin", name);
    fx->blocks = tu_read_file(tu_fixture(rel), &fx->blocks_size);
    assert_non_null(fx->blocks);
    sha256_hex(fx->blocks, fx->blocks_size, sha);
    if (strcmp(sha, want_sha) != 0)
        fail_msg("%s: blocks sha256 %s, json says %s", name, sha, want_sha);
    json_decref(j);

    size_t fsize = 0;
    snprintf(rel, sizeof rel, "quant/%s.f32.bin", name);
    fx->f32 = tu_read_file(tu_fixture(rel), &fsize);
    assert_non_null(fx->f32);
    assert_int_equal(fsize, FIX_ROWS * FIX_COLS * sizeof(float));
}

static void free_fixture(fixture *fx)
{
    free(fx->blocks);
    free(fx->f32);
}

/* ---- dot product oracle ---- */

/* Quantises a (n floats) into the activation format of weight type wt, runs
 * vec_dot, and compares with the float dot of the dequantised operands:
 * |err| <= 1e-4 * sum|w_i a_i| + 1e-6. */
static void check_dot(uint32_t wt, const void *wrow, int64_t n, const float *a, const char *what)
{
    const hr_type_traits *tw = hr_type_get(wt);
    assert_non_null(tw);
    const hr_type_traits *ta = hr_type_get(tw->vec_dot_type);
    assert_non_null(ta);
    assert_non_null(ta->from_float);
    assert_non_null(tw->vec_dot);
    size_t asize = hr_row_size(tw->vec_dot_type, n);
    assert_true(asize > 0);
    void *aq = malloc(asize);
    float *wf = malloc((size_t)n * sizeof(float));
    float *af = malloc((size_t)n * sizeof(float));
    assert_true(aq && wf && af);
    ta->from_float(a, aq, n);
    ta->to_float(aq, af, n);
    tw->to_float(wrow, wf, n);
    double ref = 0.0, mag = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ref += (double)wf[i] * (double)af[i];
        mag += fabs((double)wf[i] * (double)af[i]);
    }
    float got = NAN;
    tw->vec_dot(n, &got, wrow, aq);
    double err = fabs((double)got - ref);
    double tol = 1e-4 * mag + 1e-6;
    /* Q8_1 carries s = fp16(d * sum(q)) next to fp16(d); the weights' min m
     * multiplies s, which the dequantised activations cannot show. Allow for
     * exactly that representational difference, block by block. */
    if (tw->vec_dot_type == HR_TYPE_Q8_1) {
        const unsigned char *pw = wrow, *pa = aq;
        for (int64_t b = 0; b < n / 32; b++) {
            uint16_t mh, dh, sh;
            int8_t qs[32];
            memcpy(&mh, pw + b * tw->type_size + 2, 2); /* Q4_1/Q5_1: d, m, ... */
            memcpy(&dh, pa + b * 36, 2);
            memcpy(&sh, pa + b * 36 + 2, 2);
            memcpy(qs, pa + b * 36 + 4, 32);
            int sum = 0;
            for (int j = 0; j < 32; j++)
                sum += qs[j];
            tol += fabs((double)hr_f16_to_f32(mh)) *
                   fabs((double)hr_f16_to_f32(sh) - (double)hr_f16_to_f32(dh) * sum);
        }
    }
    if (!(err <= tol))
        fail_msg("%s %s n=%lld: vec_dot %.9g, float dot %.9g, err %.3g > tol %.3g", tw->name, what,
                 (long long)n, (double)got, ref, err, tol);
    free(aq);
    free(wf);
    free(af);
}

/* ---- tests ---- */

static void test_fixture_dequant_bit_exact(void **state)
{
    (void)state;
    for (size_t t = 0; t < N_FIXTURE_TYPES; t++) {
        fixture fx;
        load_fixture(fixture_types[t], &fx);
        const hr_type_traits *tr = hr_type_get(fx.id);
        assert_non_null(tr);
        assert_string_equal(tr->name, fx.name);
        assert_string_equal(hr_type_name(fx.id), fx.name);
        assert_true(tr->supported);
        /* sizes: the table, hr_row_size, the json and the file agree */
        assert_int_equal(hr_row_size(fx.id, FIX_COLS), fx.bytes_per_row);
        assert_int_equal(fx.blocks_size, FIX_ROWS * fx.bytes_per_row);
        assert_int_equal(fx.bytes_per_row, (FIX_COLS / tr->block_size) * tr->type_size);

        float *out = malloc(FIX_ROWS * FIX_COLS * sizeof(float));
        assert_non_null(out);
        /* row by row, as a loader would use it */
        for (int r = 0; r < FIX_ROWS; r++)
            tr->to_float(fx.blocks + (size_t)r * fx.bytes_per_row, out + r * FIX_COLS, FIX_COLS);
        if (memcmp(out, fx.f32, FIX_ROWS * FIX_COLS * sizeof(float)) != 0) {
            for (int i = 0; i < FIX_ROWS * FIX_COLS; i++)
                if (memcmp(&out[i], &fx.f32[i], sizeof(float)) != 0)
                    fail_msg("%s: element %d (row %d col %d): got %.9g want %.9g", fx.name, i,
                             i / FIX_COLS, i % FIX_COLS, (double)out[i], (double)fx.f32[i]);
        }
        /* the whole tensor in one call gives the same */
        memset(out, 0, FIX_ROWS * FIX_COLS * sizeof(float));
        tr->to_float(fx.blocks, out, FIX_ROWS * FIX_COLS);
        assert_memory_equal(out, fx.f32, FIX_ROWS * FIX_COLS * sizeof(float));
        free(out);
        free_fixture(&fx);
    }
}

static void test_fixture_vec_dot(void **state)
{
    (void)state;
    rng_state = 0x9e3779b97f4a7c15ull;
    float a[FIX_COLS];
    for (size_t t = 0; t < N_FIXTURE_TYPES; t++) {
        fixture fx;
        load_fixture(fixture_types[t], &fx);
        for (int r = 0; r < FIX_ROWS; r++) {
            fill_normal(a, FIX_COLS, 1.0f);
            check_dot(fx.id, fx.blocks + (size_t)r * fx.bytes_per_row, FIX_COLS, a, "fixture row");
        }
        free_fixture(&fx);
    }
}

static void test_random_vec_dot(void **state)
{
    (void)state;
    static const int64_t lens[] = {256, 512, 4096};
    rng_state = 0x0123456789abcdefull;
    for (size_t li = 0; li < 3; li++) {
        int64_t n = lens[li];
        float *w = malloc((size_t)n * sizeof(float));
        float *a = malloc((size_t)n * sizeof(float));
        assert_true(w && a);
        for (size_t t = 0; t < N_WEIGHT_TYPES; t++) {
            uint32_t wt = weight_types[t];
            void *wq = malloc(hr_row_size(wt, n));
            assert_non_null(wq);
            for (int rep = 0; rep < 3; rep++) {
                /* activations with outliers and a scale far from 1 */
                fill_normal(w, n, 0.05f);
                fill_normal(a, n, rep == 2 ? 30.0f : 1.0f);
                if (rep == 1)
                    a[n / 3] = 40.0f;
                assert_true(hr_quantize_row(wt, w, wq, n));
                check_dot(wt, wq, n, a, "random");
            }
            /* random bytes as weights exercise every bit pattern (float
             * types excluded: random bits are NaNs) */
            if (wt != HR_TYPE_F32 && wt != HR_TYPE_F16 && wt != HR_TYPE_BF16) {
                unsigned char *b = wq;
                size_t sz = hr_row_size(wt, n);
                const hr_type_traits *tr = hr_type_get(wt);
                for (size_t i = 0; i < sz; i++)
                    b[i] = (unsigned char)rng_next();
                /* keep the fp16 scales finite and moderate by clearing the
                 * top two exponent bits (|scale| < 2^-7) */
                for (size_t blk = 0; blk < sz / tr->type_size; blk++) {
                    unsigned char *p = b + blk * tr->type_size;
                    size_t off[2] = {0, 2};
                    int nscale = 2;
                    if (wt == HR_TYPE_Q2_K) { off[0] = 80; off[1] = 82; }
                    else if (wt == HR_TYPE_Q3_K) { off[0] = 108; nscale = 1; }
                    else if (wt == HR_TYPE_Q6_K) { off[0] = 208; nscale = 1; }
                    else if (wt == HR_TYPE_Q4_0 || wt == HR_TYPE_Q5_0 || wt == HR_TYPE_Q8_0 ||
                             wt == HR_TYPE_IQ4_NL) nscale = 1;
                    else if (wt == HR_TYPE_MXFP4) nscale = 0;
                    for (int s = 0; s < nscale; s++)
                        p[off[s] + 1] &= 0x9f;
                    if (wt == HR_TYPE_MXFP4) /* E8M0 byte: scales 2^-28 .. 2^11 */
                        p[0] = (unsigned char)(100 + p[0] % 40);
                }
                fill_normal(a, n, 1.0f);
                check_dot(wt, wq, n, a, "random bytes");
            }
            free(wq);
        }
        free(w);
        free(a);
    }
}

static void test_activation_q8(void **state)
{
    (void)state;
    enum { N = 512 };
    float x[N], y[N];
    rng_state = 42;
    static const uint32_t acts[] = {HR_TYPE_Q8_0, HR_TYPE_Q8_1, HR_TYPE_Q8_K};
    for (int rep = 0; rep < 4; rep++) {
        fill_normal(x, N, rep == 3 ? 1e-3f : 2.0f);
        if (rep == 1)
            x[7] = -25.0f; /* negative extreme: Q8_K's d turns positive */
        if (rep == 2)
            x[300] = 25.0f;
        for (size_t k = 0; k < 3; k++) {
            const hr_type_traits *t = hr_type_get(acts[k]);
            assert_non_null(t->from_float);
            if (acts[k] != HR_TYPE_Q8_0) /* activation-only formats */
                assert_true(t->vec_dot == NULL);
            unsigned char buf[2048];
            assert_true(hr_row_size(acts[k], N) <= sizeof buf);
            t->from_float(x, buf, N);
            t->to_float(buf, y, N);
            for (int b = 0; b < N / t->block_size; b++) {
                int bs = (int)t->block_size;
                float amax = 0.0f;
                for (int j = 0; j < bs; j++)
                    amax = fmaxf(amax, fabsf(x[b * bs + j]));
                /* half a step, plus the fp16 rounding of d (Q8_0/Q8_1) */
                float step = amax / 127.0f;
                /* fp16 d: relative 2^-11 when normal, absolute 2^-25 when subnormal */
                float dround = fmaxf(step / 2048.0f, 1.0f / 33554432.0f);
                float tol = acts[k] == HR_TYPE_Q8_K ? 0.5f * step * 1.0001f : 0.5f * step + 127.0f * dround;
                for (int j = 0; j < bs; j++) {
                    float e = fabsf(x[b * bs + j] - y[b * bs + j]);
                    if (!(e <= tol))
                        fail_msg("%s rep %d elem %d: |%g - %g| > %g", t->name, rep, b * bs + j,
                                 (double)x[b * bs + j], (double)y[b * bs + j], (double)tol);
                }
                /* the extreme element is represented (to fp16 precision) */
                float mxd = 0.0f;
                for (int j = 0; j < bs; j++)
                    mxd = fmaxf(mxd, fabsf(y[b * bs + j]));
                assert_true(fabsf(mxd - amax) <= amax * 1e-3f + 127.0f * dround);
            }
            if (acts[k] == HR_TYPE_Q8_K) {
                for (int b = 0; b < N / 256; b++) {
                    const unsigned char *p = buf + (size_t)b * 292;
                    int8_t qs[256];
                    int16_t bs[16];
                    memcpy(qs, p + 4, 256);
                    memcpy(bs, p + 260, 32);
                    for (int g = 0; g < 16; g++) {
                        int s = 0;
                        for (int l = 0; l < 16; l++)
                            s += qs[16 * g + l];
                        assert_int_equal(bs[g], s);
                    }
                    /* llama.cpp's sign trick: the largest-magnitude value is -127 */
                    int has_m127 = 0;
                    for (int j = 0; j < 256; j++)
                        has_m127 |= qs[j] == -127;
                    assert_true(has_m127);
                }
            }
            if (acts[k] == HR_TYPE_Q8_1) {
                for (int b = 0; b < N / 32; b++) {
                    const unsigned char *p = buf + (size_t)b * 36;
                    uint16_t dh, sh;
                    int8_t qs[32];
                    memcpy(&dh, p, 2);
                    memcpy(&sh, p + 2, 2);
                    memcpy(qs, p + 4, 32);
                    int s = 0;
                    for (int j = 0; j < 32; j++)
                        s += qs[j];
                    /* s = fp16(d * sum) with d the unrounded amax/127 */
                    float d = hr_f16_to_f32(dh), sv = hr_f16_to_f32(sh);
                    assert_true(fabsf(sv - d * (float)s) <= fabsf(d * (float)s) * 2e-3f + 1e-30f);
                }
            }
        }
    }
    /* zero rows: zeros out, no NaN */
    memset(x, 0, sizeof x);
    for (size_t k = 0; k < 3; k++) {
        const hr_type_traits *t = hr_type_get(acts[k]);
        unsigned char buf[2048];
        memset(buf, 0xa5, sizeof buf);
        t->from_float(x, buf, N);
        /* every byte zero: d = +0, s = +0, quants and bsums 0 */
        for (size_t i = 0; i < hr_row_size(acts[k], N); i++)
            assert_int_equal(buf[i], 0);
        t->to_float(buf, y, N);
        for (int i = 0; i < N; i++) {
            assert_false(isnan(y[i]));
            assert_true(y[i] == 0.0f);
        }
        if (acts[k] == HR_TYPE_Q8_K) {
            int16_t bs[16];
            memcpy(bs, buf + 260, 32);
            for (int g = 0; g < 16; g++)
                assert_int_equal(bs[g], 0);
        }
        /* dot of a zero activation row with real weights is 0 */
        float w[N], s = NAN;
        fill_normal(w, N, 1.0f);
        for (size_t t2 = 0; t2 < N_WEIGHT_TYPES; t2++) {
            const hr_type_traits *tw = hr_type_get(weight_types[t2]);
            if (tw->vec_dot_type != acts[k])
                continue;
            unsigned char wq[4096];
            assert_true(hr_quantize_row(weight_types[t2], w, wq, N));
            tw->vec_dot(N, &s, wq, buf);
            assert_true(s == 0.0f);
        }
    }
}

/* Hand-checked values: with amax = 127 the scale is exactly 1, so the
 * quants are x rounded to nearest with ties to even. */
static void test_activation_rounding(void **state)
{
    (void)state;
    float x[256] = {0};
    x[0] = 127.0f; x[1] = 0.5f; x[2] = 1.5f; x[3] = 2.5f; x[4] = -63.5f; x[5] = -0.49f;
    unsigned char b[292];
    hr_type_get(HR_TYPE_Q8_0)->from_float(x, b, 32);
    static const int8_t want0[6] = {127, 0, 2, 2, -64, 0};
    uint16_t dh;
    memcpy(&dh, b, 2);
    assert_true(hr_f16_to_f32(dh) == 1.0f);
    assert_memory_equal(b + 2, want0, 6);
    /* Q8_K: the signed extreme maps to -127; here it is +127, so d = -1 */
    hr_type_get(HR_TYPE_Q8_K)->from_float(x, b, 256);
    float d;
    memcpy(&d, b, 4);
    assert_true(d == -1.0f);
    static const int8_t wantk[6] = {-127, 0, -2, -2, 64, 0};
    assert_memory_equal(b + 4, wantk, 6);
    int16_t bs0;
    memcpy(&bs0, b + 260, 2);
    assert_int_equal(bs0, -127 - 2 - 2 + 64);
}

static void test_float_activations(void **state)
{
    (void)state;
    enum { N = 256 };
    float x[N], y[N];
    rng_state = 7;
    fill_normal(x, N, 3.0f);
    const struct { uint32_t id; float rel; } ft[] = {
        {HR_TYPE_F32, 0.0f}, {HR_TYPE_F16, 1.0f / 2048.0f}, {HR_TYPE_BF16, 1.0f / 256.0f},
    };
    for (size_t k = 0; k < 3; k++) {
        const hr_type_traits *t = hr_type_get(ft[k].id);
        assert_int_equal(t->vec_dot_type, ft[k].id);
        unsigned char buf[N * 4];
        t->from_float(x, buf, N);
        t->to_float(buf, y, N);
        for (int i = 0; i < N; i++)
            assert_true(fabsf(x[i] - y[i]) <= fabsf(x[i]) * ft[k].rel);
    }
}

static void test_type_table(void **state)
{
    (void)state;
    /* never-defined and out-of-range ids */
    static const uint32_t unknown[] = {4, 5, 42, 43, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        char want[32];
        snprintf(want, sizeof want, "type-%lu", (unsigned long)unknown[i]);
        assert_null(hr_type_get(unknown[i]));
        assert_string_equal(hr_type_name(unknown[i]), want);
        assert_int_equal(hr_row_size(unknown[i], 256), 0);
        float f[256] = {0};
        unsigned char d[1024];
        assert_false(hr_quantize_row(unknown[i], f, d, 256));
    }
    /* two unknown names stay valid together */
    const char *n1 = hr_type_name(4), *n2 = hr_type_name(5);
    assert_string_equal(n1, "type-4");
    assert_string_equal(n2, "type-5");

    /* defined but unsupported */
    static const struct { uint32_t id; const char *name; } unsup[] = {
        {16, "IQ2_XXS"}, {17, "IQ2_XS"}, {18, "IQ3_XXS"}, {19, "IQ1_S"}, {21, "IQ3_S"},
        {22, "IQ2_S"}, {23, "IQ4_XS"}, {24, "I8"}, {25, "I16"}, {26, "I32"}, {27, "I64"},
        {28, "F64"}, {29, "IQ1_M"}, {34, "TQ1_0"}, {35, "TQ2_0"},
        {40, "NVFP4"}, {41, "Q1_0"},
    };
    for (size_t i = 0; i < sizeof unsup / sizeof unsup[0]; i++) {
        const hr_type_traits *t = hr_type_get(unsup[i].id);
        assert_non_null(t);
        assert_string_equal(t->name, unsup[i].name);
        assert_string_equal(hr_type_name(unsup[i].id), unsup[i].name);
        assert_false(t->supported);
        assert_null(t->to_float);
        assert_null(t->vec_dot);
        assert_null(t->from_float);
        assert_true(t->block_size > 0 && t->type_size > 0);
    }
    assert_int_equal(hr_row_size(16, 256), 66);   /* IQ2_XXS */
    assert_int_equal(hr_row_size(39, 64), 34);    /* MXFP4 */

    /* supported types: sizes and pairings */
    static const struct { uint32_t id; int64_t bs; size_t ts; uint32_t vdt; } sup[] = {
        {HR_TYPE_F32, 1, 4, HR_TYPE_F32},      {HR_TYPE_F16, 1, 2, HR_TYPE_F16},
        {HR_TYPE_BF16, 1, 2, HR_TYPE_BF16},    {HR_TYPE_Q4_0, 32, 18, HR_TYPE_Q8_0},
        {HR_TYPE_Q4_1, 32, 20, HR_TYPE_Q8_1},  {HR_TYPE_Q5_0, 32, 22, HR_TYPE_Q8_0},
        {HR_TYPE_Q5_1, 32, 24, HR_TYPE_Q8_1},  {HR_TYPE_Q8_0, 32, 34, HR_TYPE_Q8_0},
        {HR_TYPE_Q2_K, 256, 84, HR_TYPE_Q8_K}, {HR_TYPE_Q3_K, 256, 110, HR_TYPE_Q8_K},
        {HR_TYPE_Q4_K, 256, 144, HR_TYPE_Q8_K}, {HR_TYPE_Q5_K, 256, 176, HR_TYPE_Q8_K},
        {HR_TYPE_Q6_K, 256, 210, HR_TYPE_Q8_K}, {HR_TYPE_IQ4_NL, 32, 18, HR_TYPE_Q8_0},
        {HR_TYPE_MXFP4, 32, 17, HR_TYPE_Q8_0},
    };
    for (size_t i = 0; i < sizeof sup / sizeof sup[0]; i++) {
        const hr_type_traits *t = hr_type_get(sup[i].id);
        assert_non_null(t);
        assert_true(t->supported);
        assert_int_equal(t->block_size, sup[i].bs);
        assert_int_equal(t->type_size, sup[i].ts);
        assert_int_equal(t->vec_dot_type, sup[i].vdt);
        assert_non_null(t->to_float);
        assert_non_null(t->vec_dot);
        const hr_type_traits *a = hr_type_get(t->vec_dot_type);
        assert_non_null(a->from_float);
        /* non-multiples of the block size */
        if (sup[i].bs > 1) {
            assert_int_equal(hr_row_size(sup[i].id, sup[i].bs + 1), 0);
            assert_int_equal(hr_row_size(sup[i].id, sup[i].bs - 1), 0);
        }
        assert_int_equal(hr_row_size(sup[i].id, -sup[i].bs), 0);
        assert_int_equal(hr_row_size(sup[i].id, 4096), (size_t)(4096 / sup[i].bs) * sup[i].ts);
    }
    assert_int_equal(hr_row_size(HR_TYPE_Q4_K, 255), 0);
    assert_int_equal(hr_row_size(HR_TYPE_Q4_K, 512), 288);
    assert_int_equal(hr_row_size(HR_TYPE_F32, 3), 12);
    /* activation formats */
    assert_int_equal(hr_row_size(HR_TYPE_Q8_1, 64), 72);
    assert_int_equal(hr_row_size(HR_TYPE_Q8_K, 512), 584);
    assert_non_null(hr_type_get(HR_TYPE_Q8_K)->from_float);
    assert_non_null(hr_type_get(HR_TYPE_Q8_1)->from_float);
    /* weight formats keep from_float NULL (activation-only field) */
    assert_null(hr_type_get(HR_TYPE_Q4_K)->from_float);
    assert_null(hr_type_get(HR_TYPE_IQ4_NL)->from_float);
    assert_null(hr_type_get(HR_TYPE_MXFP4)->from_float);
    assert_int_equal(HR_TYPE_MXFP4, 39); /* GGML's id */
    assert_string_equal(hr_type_name(HR_TYPE_MXFP4), "MXFP4");
    /* removed repacked layouts are named */
    assert_string_equal(hr_type_name(31), "Q4_0_4_4");
    assert_string_equal(hr_type_name(38), "IQ4_NL_8_8");
}

static void test_weight_quantizers(void **state)
{
    (void)state;
    enum { N = 4096 };
    /* NMSE bounds for normal data with one outlier, about 1.5x what these
     * round-to-nearest quantisers measure (F16 4e-8, BF16 3e-6, Q8_0 3.1e-5,
     * Q4_0 9.6e-3, Q4_1 6.6e-3, Q5_0 2.3e-3, Q5_1 1.5e-3, IQ4_NL 6.6e-3,
     * Q2_K 0.118, Q3_K 2.6e-2, Q4_K 6.3e-3, Q5_K 1.6e-3, Q6_K 3.9e-4, MXFP4 1.5e-2). */
    static const struct { uint32_t id; double nmse_max; } q[] = {
        {HR_TYPE_F32, 0.0},     {HR_TYPE_F16, 1e-7},    {HR_TYPE_BF16, 1e-5},
        {HR_TYPE_Q8_0, 5e-5},   {HR_TYPE_Q4_0, 1.4e-2}, {HR_TYPE_Q4_1, 1.0e-2},
        {HR_TYPE_Q5_0, 3.4e-3}, {HR_TYPE_Q5_1, 2.3e-3}, {HR_TYPE_IQ4_NL, 1.0e-2},
        {HR_TYPE_Q2_K, 1.6e-1}, {HR_TYPE_Q3_K, 4.0e-2}, {HR_TYPE_Q4_K, 1.0e-2},
        {HR_TYPE_Q5_K, 2.5e-3}, {HR_TYPE_Q6_K, 6.0e-4}, {HR_TYPE_MXFP4, 2.3e-2},
    };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
    unsigned char *buf = malloc(N * 4);
    assert_true(x && y && buf);
    rng_state = 1234567;
    for (size_t k = 0; k < sizeof q / sizeof q[0]; k++) {
        fill_normal(x, N, 0.02f);
        x[5] = 0.3f; /* an outlier */
        assert_true(hr_quantize_row(q[k].id, x, buf, N));
        hr_type_get(q[k].id)->to_float(buf, y, N);
        double num = 0.0, den = 0.0;
        for (int i = 0; i < N; i++) {
            num += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
            den += (double)x[i] * x[i];
        }
        double nmse = num / den;
        print_message("    quantise %-6s nmse %.3g (bound %.3g)\n", hr_type_name(q[k].id), nmse, q[k].nmse_max);
        if (!(nmse <= q[k].nmse_max))
            fail_msg("%s: round-trip nmse %.4g > %.4g", hr_type_name(q[k].id), nmse, q[k].nmse_max);
        /* the dequantised outlier keeps its sign and rough size */
        assert_true(y[5] > 0.15f);
        /* all-zero input quantises to zeros, no NaN */
        memset(x, 0, N * sizeof(float));
        assert_true(hr_quantize_row(q[k].id, x, buf, N));
        hr_type_get(q[k].id)->to_float(buf, y, N);
        for (int i = 0; i < N; i++)
            assert_true(y[i] == 0.0f);
    }
    /* refused: activation-only types, unsupported types, bad lengths */
    assert_false(hr_quantize_row(HR_TYPE_Q8_K, x, buf, 256));
    assert_false(hr_quantize_row(HR_TYPE_Q8_1, x, buf, 32));
    assert_false(hr_quantize_row(16, x, buf, 256));
    assert_false(hr_quantize_row(HR_TYPE_Q4_K, x, buf, 100));
    assert_false(hr_quantize_row(HR_TYPE_Q4_0, x, buf, -32));
    free(x);
    free(y);
    free(buf);
}


/* ---- MXFP4 ---- */

/* An E2M1 code's value, doubled (an integer), decoded from its bits as the
 * OCP MX spec defines them: bit 3 sign, bits 2-1 exponent (bias 1), bit 0
 * mantissa; exponent 0 is subnormal (0 or 0.5). Independent of src/quant's
 * table. */
static int e2m1_doubled(unsigned code)
{
    const int ex = (int)(code >> 1 & 3), m = (int)(code & 1);
    const int mag2 = ex == 0 ? m : (2 + m) << (ex - 1); /* 2 * 2^(ex-1) * (1 + m/2) */
    return code & 8 ? -mag2 : mag2;
}

/* Hand-worked blocks: with amax 6 (here 7.9) the exponent is 127 and an
 * element is code value / 2; llama.cpp's search keeps the first of two
 * equally near codes, so halfway values go to the smaller magnitude (not to
 * even). */
static void test_mxfp4_hand(void **state)
{
    (void)state;
    float x[32] = {0};
    const float in[] = {6.0f, 5.0f, -2.5f, 0.25f, 0.75f, -0.25f, 7.9f, 1.25f, -6.5f, 3.2f, -0.0f, 1.74f};
    /* 5 -> 4 (tie 4|6), -2.5 -> -2 (tie), 0.25 -> 0 (tie, +0), 0.75 -> 0.5 (tie), -0.25 -> +0 (code 0),
     * 7.9 -> 6 (clip), 1.25 -> 1 (tie), -6.5 -> -6, 3.2 -> 3, -0 -> 0, 1.74 -> 1.5 */
    const unsigned want[] = {7, 6, 12, 0, 1, 0, 7, 2, 15, 5, 0, 3};
    memcpy(x, in, sizeof in);
    x[16] = -4.0f;  /* -> code 14 */
    x[31] = 0.4f;   /* -> 0.5, code 1 */
    unsigned char b[17];
    assert_true(hr_quantize_row(HR_TYPE_MXFP4, x, b, 32));
    assert_int_equal(b[0], 127);
    for (size_t j = 0; j < sizeof want / sizeof want[0]; j++)
        if ((b[1 + j] & 15) != want[j])
            fail_msg("element %zu (%g): code %u, want %u", j, (double)in[j], b[1 + j] & 15u, want[j]);
    assert_int_equal(b[1] >> 4, 14);
    assert_int_equal(b[16] >> 4, 1);
    float y[32];
    hr_type_get(HR_TYPE_MXFP4)->to_float(b, y, 32);
    assert_true(y[0] == 6.0f && y[1] == 4.0f && y[2] == -2.0f && y[8] == -6.0f && y[16] == -4.0f && y[31] == 0.5f);
    /* the same block times 2^-110: e = 17, below the quantiser's threshold shortcut (e >= 32), so its
     * code search runs and must agree */
    for (int j = 0; j < 32; j++)
        x[j] = ldexpf(x[j], -110);
    assert_true(hr_quantize_row(HR_TYPE_MXFP4, x, b, 32));
    assert_int_equal(b[0], 17);
    for (size_t j = 0; j < sizeof want / sizeof want[0]; j++)
        if ((b[1 + j] & 15) != want[j])
            fail_msg("scaled element %zu (%g): code %u, want %u", j, (double)x[j], b[1 + j] & 15u, want[j]);
    assert_int_equal(b[1] >> 4, 14);
    assert_int_equal(b[16] >> 4, 1);
    /* amax 1: e = 0 + 125, so -1 is -8 * 2^(125-128), code 14 */
    memset(x, 0, sizeof x);
    x[3] = -1.0f;
    assert_true(hr_quantize_row(HR_TYPE_MXFP4, x, b, 32));
    assert_int_equal(b[0], 125);
    assert_int_equal(b[4] & 15, 14);
    /* below the normal range the exponent is clamped to 0 (GGML's cast is undefined there) */
    x[3] = 1e-39f;
    assert_true(hr_quantize_row(HR_TYPE_MXFP4, x, b, 32));
    assert_int_equal(b[0], 0);
    hr_type_get(HR_TYPE_MXFP4)->to_float(b, y, 32);
    for (int j = 0; j < 32; j++)
        assert_true(isfinite(y[j]) && fabsf(y[j] - x[j]) <= 0x1p-128f);
    /* an infinite amax: clamped to 254 (255 is NaN in the OCP format), codes 0 */
    x[3] = INFINITY;
    assert_true(hr_quantize_row(HR_TYPE_MXFP4, x, b, 32));
    assert_int_equal(b[0], 254);
    /* every scale byte decodes to 2^(e-128) times the code value */
    for (int e = 0; e < 256; e++) {
        b[0] = (unsigned char)e;
        for (int j = 0; j < 16; j++)
            b[1 + j] = (unsigned char)(j | (15 - j) << 4);
        hr_type_get(HR_TYPE_MXFP4)->to_float(b, y, 32);
        const double s = ldexp(1.0, e - 128); /* 255 too: GGML reads it as 2^127 */
        for (int j = 0; j < 32; j++) {
            const double wv = e2m1_doubled((unsigned)(j < 16 ? j : 31 - j)) * s; /* exact in double */
            if (fabs(wv) > FLT_MAX ? !(isinf(y[j]) && (y[j] > 0) == (wv > 0)) : (double)y[j] != wv)
                fail_msg("e %d element %d: %.9g, want %.9g", e, j, (double)y[j], wv);
        }
    }
}

typedef struct {
    hr_gguf *q, *f;       /* the MXFP4_F32 file and the F32 file */
} mx_files;

static void open_mx_files(mx_files *m)
{
    hr_err err;
    const char *pq = tu_fixture("models/arch/gpt-oss-MXFP4_F32.gguf");
    if (hr_gguf_open(pq, &m->q, &err) != HR_OK)
        fail_msg("cannot open %s: %s (set HEARTH_FIXTURES)", pq, err.msg);
    const char *pf = tu_fixture("models/arch/gpt-oss-F32.gguf");
    if (hr_gguf_open(pf, &m->f, &err) != HR_OK)
        fail_msg("cannot open %s: %s (set HEARTH_FIXTURES)", pf, err.msg);
}

/* The F32 twin of an MXFP4 tensor: same name and shape, type F32. */
static const hr_gguf_tensor *f32_twin(const mx_files *m, const hr_gguf_tensor *t, char *name, size_t cap)
{
    hr_gguf_str_copy(t->name, name, cap);
    const hr_gguf_tensor *f = hr_gguf_find_tensor(m->f, name);
    if (!f)
        fail_msg("%s: not in the F32 file", name);
    assert_int_equal(f->type, HR_TYPE_F32);
    assert_int_equal(f->n_dims, t->n_dims);
    for (int d = 0; d < 4; d++)
        assert_int_equal(f->ne[d], t->ne[d]);
    return f;
}

/* The files are one model: every tensor other than the MXFP4 experts is
 * byte-identical in both, and the experts are exactly blk.*.ffn_{gate,up,
 * down}_exps.weight of both layers. (a) Quantising the F32 experts row by
 * row gives the MXFP4 file's bytes, every row of every expert tensor. */
static void test_mxfp4_file_quantiser(void **state)
{
    (void)state;
    mx_files m;
    open_mx_files(&m);
    assert_int_equal(hr_gguf_n_tensors(m.q), hr_gguf_n_tensors(m.f));
    int n_mx = 0;
    int64_t rows_checked = 0;
    for (uint64_t i = 0; i < hr_gguf_n_tensors(m.q); i++) {
        const hr_gguf_tensor *t = hr_gguf_tensor_at(m.q, i);
        char name[128];
        const hr_gguf_tensor *f = f32_twin(&m, t, name, sizeof name);
        if (t->type != HR_TYPE_MXFP4) {
            assert_int_equal(t->type, HR_TYPE_F32);
            assert_int_equal(t->size, f->size);
            if (memcmp(t->data, f->data, t->size) != 0)
                fail_msg("%s: differs between the F32 and MXFP4_F32 files", name);
            continue;
        }
        n_mx++;
        assert_non_null(strstr(name, "_exps.weight"));
        const int64_t K = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
        const size_t rb = hr_row_size(HR_TYPE_MXFP4, K);
        assert_true(rb > 0);
        assert_int_equal(t->size, rb * (size_t)rows);
        unsigned char *q = malloc(rb);
        assert_non_null(q);
        for (int64_t r = 0; r < rows; r++) {
            const float *src = (const float *)f->data + r * K;
            assert_true(hr_quantize_row(HR_TYPE_MXFP4, src, q, K));
            const unsigned char *want = (const unsigned char *)t->data + (size_t)r * rb;
            if (memcmp(q, want, rb) != 0) {
                size_t k = 0;
                while (q[k] == want[k])
                    k++;
                fail_msg("%s row %lld: byte %zu (block %zu) is %02x, the file has %02x", name, (long long)r, k,
                         k / 17, q[k], want[k]);
            }
            rows_checked++;
        }
        free(q);
    }
    print_message("    MXFP4: %d expert tensors, %lld rows quantised byte-exact\n", n_mx, (long long)rows_checked);
    assert_int_equal(n_mx, 6); /* 2 layers x gate, up, down */
    hr_gguf_close(m.q);
    hr_gguf_close(m.f);
}

/* (b) Dequantising the file's rows: each element is exactly its code's
 * E2M1 value (decoded from the bits) times 2^(e-128) (doubled values), the
 * block's e is floor(log2(amax)) + 125 of the F32 block (computed with
 * frexp, not log2f), and each element is a nearest grid point to the F32
 * value: |deq - x| <= min over the grid (clipped at +-6 scales) of
 * |g - x|, up to one float rounding of the quantiser's error comparison
 * (relative 2^-24, and 2^-149 absolute below the normal range).
 * (c) The scalar vec_dot of each row with Q8_0 activations against the
 * float64 dot of the dequantised operands: each block adds one term
 * fl(fl(d_a 2^(e-128)) isum), exact but for the last rounding, and nb terms
 * are summed in nb - 1 float additions, so every term passes at most nb + 1
 * roundings: |err| <= gamma(nb + 1) S, S = sum |w_i a_i|, plus n 2^-53 S for
 * the double sum and 2^-149 per block for products below the normal range. */
static void test_mxfp4_file_values(void **state)
{
    (void)state;
    mx_files m;
    open_mx_files(&m);
    const hr_type_traits *tm = hr_type_get(HR_TYPE_MXFP4), *t8 = hr_type_get(HR_TYPE_Q8_0);
    rng_state = 0x5eed5eedull;
    double worst_dot = 0.0;
    int64_t elems = 0, clipped = 0, dots = 0;
    for (uint64_t i = 0; i < hr_gguf_n_tensors(m.q); i++) {
        const hr_gguf_tensor *t = hr_gguf_tensor_at(m.q, i);
        if (t->type != HR_TYPE_MXFP4)
            continue;
        char name[128];
        const hr_gguf_tensor *f = f32_twin(&m, t, name, sizeof name);
        const int64_t K = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3], nb = K / 32;
        const size_t rb = hr_row_size(HR_TYPE_MXFP4, K);
        float *deq = malloc((size_t)K * sizeof(float)), *a = malloc((size_t)K * sizeof(float));
        float *af = malloc((size_t)K * sizeof(float));
        unsigned char *aq = malloc(hr_row_size(HR_TYPE_Q8_0, K));
        assert_true(deq && a && af && aq);
        for (int64_t r = 0; r < rows; r++) {
            const unsigned char *row = (const unsigned char *)t->data + (size_t)r * rb;
            const float *x = (const float *)f->data + r * K;
            tm->to_float(row, deq, K);
            for (int64_t b = 0; b < nb; b++) {
                const unsigned char *blk = row + b * 17;
                const float *xb = x + b * 32;
                double amax = 0.0;
                for (int j = 0; j < 32; j++)
                    amax = fmax(amax, fabs((double)xb[j]));
                int ex = 0;
                if (amax > 0.0)
                    (void)frexp(amax, &ex); /* amax = f 2^ex, f in [0.5, 1): floor(log2) = ex - 1 */
                const int e_want = amax > 0.0 ? ex - 1 + 125 : 0;
                if (blk[0] != e_want)
                    fail_msg("%s row %lld block %lld: e = %d, floor(log2(amax %g)) + 125 = %d", name, (long long)r,
                             (long long)b, blk[0], amax, e_want);
                const double s = ldexp(1.0, blk[0] - 128);
                for (int j = 0; j < 32; j++) {
                    const unsigned code = j < 16 ? blk[1 + j] & 15u : blk[1 + j - 16] >> 4;
                    const double v = (double)deq[b * 32 + j], xv = (double)xb[j];
                    if (v != e2m1_doubled(code) * s)
                        fail_msg("%s row %lld elem %lld: %.9g, code %u times 2^%d is %.9g", name, (long long)r,
                                 (long long)(b * 32 + j), v, code, blk[0] - 128, e2m1_doubled(code) * s);
                    double best = INFINITY;
                    for (unsigned c = 0; c < 16; c++)
                        best = fmin(best, fabs(e2m1_doubled(c) * s - xv));
                    const double err = fabs(v - xv);
                    if (!(err <= best * (1.0 + 0x1p-23) + 0x1p-149))
                        fail_msg("%s row %lld elem %lld: x %.9g -> %.9g (err %.3g), the grid has %.3g", name,
                                 (long long)r, (long long)(b * 32 + j), xv, v, err, best);
                    clipped += fabs(xv) > 12.0 * s;
                    elems++;
                }
            }
            /* (c) */
            for (int64_t j = 0; j < K; j++)
                a[j] = rng_normal();
            t8->from_float(a, aq, K);
            t8->to_float(aq, af, K);
            double ref = 0.0, S = 0.0;
            for (int64_t j = 0; j < K; j++) {
                ref += (double)deq[j] * (double)af[j];
                S += fabs((double)deq[j] * (double)af[j]);
            }
            float got = NAN;
            tm->vec_dot(K, &got, row, aq);
            const double g = (double)(nb + 1) * 0x1p-24 / (1.0 - (double)(nb + 1) * 0x1p-24);
            const double bound = g * S + (double)K * 0x1p-53 * S + (double)nb * 0x1p-149;
            const double err = fabs((double)got - ref);
            if (!(err <= bound))
                fail_msg("%s row %lld: vec_dot %.9g, float64 %.9g, err %.3g > %.3g", name, (long long)r, (double)got,
                         ref, err, bound);
            if (bound > 0.0)
                worst_dot = fmax(worst_dot, err / bound);
            dots++;
        }
        free(deq);
        free(a);
        free(af);
        free(aq);
    }
    print_message("    MXFP4: %lld elements on the grid (%lld clipped at 6 scales), %lld dots, worst %.3g of the "
                  "bound\n", (long long)elems, (long long)clipped, (long long)dots, worst_dot);
    assert_true(elems > 0 && dots > 0);
    hr_gguf_close(m.q);
    hr_gguf_close(m.f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_table),
        cmocka_unit_test(test_fixture_dequant_bit_exact),
        cmocka_unit_test(test_fixture_vec_dot),
        cmocka_unit_test(test_random_vec_dot),
        cmocka_unit_test(test_activation_q8),
        cmocka_unit_test(test_activation_rounding),
        cmocka_unit_test(test_float_activations),
        cmocka_unit_test(test_weight_quantizers),
        cmocka_unit_test(test_mxfp4_hand),
        cmocka_unit_test(test_mxfp4_file_quantiser),
        cmocka_unit_test(test_mxfp4_file_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
