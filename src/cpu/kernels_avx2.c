/* kernels_avx2.c - AVX2 + FMA + F16C bodies of the dot products and the
 * activation quantisers. Compiled with -mavx2 -mfma -mf16c (CMakeLists.txt);
 * only reached after dispatch.c has checked the host. Empty off x86.
 *
 * What each kernel computes is defined by src/quant (see docs/QUANT.md):
 * integer products are summed exactly inside a block (or per sub-block scale),
 * so only the float accumulation across blocks differs from the reference
 * (eight lanes with FMA instead of one running sum). The quantisers produce
 * the reference's bytes exactly: same products, same round-to-nearest-even
 * (vcvtps2dq under the default MXCSR is rintf).
 *
 * maddubs (u8 x s8 -> saturating s16 pair sums) never saturates here: the
 * unsigned side is at most 128 (|q8| incl. -128) or 63 (6-bit quants) and the
 * activation side at most 127 in magnitude (the quantisers clamp), so a pair
 * is below 2*128*127 = 32512. Blocks are read with unaligned loads/memcpy. */
#include "cpu/kernels.h"

#ifdef HR_CPU_X86

#include <immintrin.h>
#include <string.h>

#include "quant/quant_impl.h"

/* ---- helpers ---- */

static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

static inline int hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline float ld_f16(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static inline float ld_f32(const uint8_t *p)
{
    float f;
    memcpy(&f, p, 4);
    return f;
}

static inline __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m128i ld128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

static inline __m256i join128(__m128i lo, __m128i hi)
{
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high. */
static inline __m256i unpack_nibbles(const uint8_t *p)
{
    const __m128i raw = ld128(p);
    const __m256i m = _mm256_set1_epi8(0x0f);
    return _mm256_and_si256(join128(raw, _mm_srli_epi16(raw, 4)), m);
}

/* Eight int32 sums of pairs-of-pairs of u8 x s8 products. */
static inline __m256i dot_u8s8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* The same for two signed operands (sign moved onto the second). */
static inline __m256i dot_s8s8(__m256i x, __m256i y)
{
    return dot_u8s8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}

/* Byte j of the result is 0xff if bit j of `bits` is set, else 0. */
static inline __m256i bits_to_mask(uint32_t bits)
{
    const __m256i v = _mm256_set1_epi32((int)bits);
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    return _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, shuf), bit), bit);
}

static inline uint32_t ld_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Q4_K/Q5_K: the 8 six-bit scales and mins of a 12-byte scales array. */
static inline void k4_scales(const uint8_t *s, uint8_t sc[8], uint8_t mn[8])
{
    const uint32_t a0 = ld_u32(s), a1 = ld_u32(s + 4), a2 = ld_u32(s + 8);
    const uint32_t v[4] = {
        a0 & 0x3f3f3f3fu,
        (a2 & 0x0f0f0f0fu) | ((a0 >> 6) & 0x03030303u) << 4,
        a1 & 0x3f3f3f3fu,
        ((a2 >> 4) & 0x0f0f0f0fu) | ((a1 >> 6) & 0x03030303u) << 4,
    };
    memcpy(sc, &v[0], 8);
    memcpy(mn, &v[2], 8);
}

/* int16 scale vector: s0 in the low 8 lanes, s1 in the high 8. */
static inline __m256i scale_pair(int s0, int s1)
{
    return join128(_mm_set1_epi16((short)s0), _mm_set1_epi16((short)s1));
}

/* ---- 32-element blocks against Q8_0 ---- */

/* One body per weight type: LOADQ(pw_block) yields 32 signed int8 values,
 * WSCALE(pw_block) the block's float scale. */
#define DOT_Q8_0_BODY(WSIZE, WSCALE, LOADQ)                                           \
    const uint8_t *pw = w, *pa = a;                                                   \
    const int64_t nb = n / HR_QK32;                                                   \
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                    \
    int64_t i = 0;                                                                    \
    for (; i + 1 < nb; i += 2) {                                                      \
        const uint8_t *x0 = pw + i * (WSIZE), *x1 = x0 + (WSIZE);                     \
        const uint8_t *y0 = pa + i * 34, *y1 = y0 + 34;                               \
        const __m256i p0 = dot_s8s8(LOADQ(x0), ld256(y0 + 2));                        \
        const __m256i p1 = dot_s8s8(LOADQ(x1), ld256(y1 + 2));                        \
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(WSCALE(x0) * ld_f16(y0)),               \
                               _mm256_cvtepi32_ps(p0), acc0);                         \
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(WSCALE(x1) * ld_f16(y1)),               \
                               _mm256_cvtepi32_ps(p1), acc1);                         \
    }                                                                                 \
    for (; i < nb; i++) {                                                             \
        const uint8_t *x0 = pw + i * (WSIZE), *y0 = pa + i * 34;                      \
        const __m256i p0 = dot_s8s8(LOADQ(x0), ld256(y0 + 2));                        \
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(WSCALE(x0) * ld_f16(y0)),               \
                               _mm256_cvtepi32_ps(p0), acc0);                         \
    }                                                                                 \
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));

static inline __m256i q8_0_q(const uint8_t *x) { return ld256(x + 2); }

static inline __m256i q4_0_q(const uint8_t *x)
{
    return _mm256_sub_epi8(unpack_nibbles(x + 2), _mm256_set1_epi8(8));
}

static inline __m256i q5_0_q(const uint8_t *x)
{
    /* (nibble | bit << 4) - 16 == nibble - (bit ? 0 : 16) */
    const __m256i hb = bits_to_mask(ld_u32(x + 2));
    return _mm256_sub_epi8(unpack_nibbles(x + 6), _mm256_andnot_si256(hb, _mm256_set1_epi8(16)));
}

static inline __m256i iq4_nl_q(const uint8_t *x)
{
    const __m256i table = _mm256_broadcastsi128_si256(ld128(hr_iq4nl_values));
    return _mm256_shuffle_epi8(table, unpack_nibbles(x + 2));
}

/* MXFP4: the doubled E2M1 values by table lookup (|v| <= 12, so maddubs
 * stays far from saturation), the scale 2^(e-128) from the exponent byte. */
static inline __m256i mxfp4_q(const uint8_t *x)
{
    const __m256i table = _mm256_broadcastsi128_si256(ld128(hr_mxfp4_values));
    return _mm256_shuffle_epi8(table, unpack_nibbles(x + 1));
}

static inline float ld_e8m0_half(const uint8_t *x) { return hr_e8m0_half(x[0]); }

static void vd_q8_0(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(34, ld_f16, q8_0_q) }
static void vd_q4_0(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(18, ld_f16, q4_0_q) }
static void vd_q5_0(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(22, ld_f16, q5_0_q) }
static void vd_iq4_nl(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(18, ld_f16, iq4_nl_q) }
static void vd_mxfp4(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(17, ld_e8m0_half, mxfp4_q) }

/* ---- Q4_1 / Q5_1 against Q8_1: unsigned quants, offset m through s ---- */

static inline __m256i q4_1_q(const uint8_t *x) { return unpack_nibbles(x + 4); }

static inline __m256i q5_1_q(const uint8_t *x)
{
    const __m256i hb = bits_to_mask(ld_u32(x + 4));
    return _mm256_or_si256(unpack_nibbles(x + 8), _mm256_and_si256(hb, _mm256_set1_epi8(16)));
}

#define DOT_Q8_1_BODY(WSIZE, LOADQ)                                                   \
    const uint8_t *pw = w, *pa = a;                                                   \
    const int64_t nb = n / HR_QK32;                                                   \
    __m256 acc = _mm256_setzero_ps();                                                 \
    float macc = 0.0f;                                                                \
    for (int64_t i = 0; i < nb; i++) {                                                \
        const uint8_t *x = pw + i * (WSIZE), *y = pa + i * 36;                        \
        const __m256i p = dot_u8s8(LOADQ(x), ld256(y + 4));                           \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(x) * ld_f16(y)),                  \
                              _mm256_cvtepi32_ps(p), acc);                            \
        macc += ld_f16(x + 2) * ld_f16(y + 2);                                        \
    }                                                                                 \
    *s = hsum_ps(acc) + macc;

static void vd_q4_1(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_1_BODY(20, q4_1_q) }
static void vd_q5_1(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_1_BODY(24, q5_1_q) }

/* ---- K-quants against Q8_K (d float at 0, qs at 4, bsums at 260) ----
 * One super-block is 256 elements, so its integer sum is reduced to a scalar
 * and scaled exactly as the reference does (same float products, same order,
 * no FMA): the K-quant kernels reproduce the reference bit for bit. */

static inline void ld_bsums(const uint8_t *y, int16_t bs[16]) { memcpy(bs, y + 260, 32); }

static void vd_q4_k(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const uint8_t *x = pw + i * 144, *y = pa + i * 292;
        uint8_t sc[8], mn[8];
        k4_scales(x + 4, sc, mn);
        const uint8_t *q = x + 16, *yq = y + 4;
        __m256i isum = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i raw = ld256(q + 32 * c);
            const __m256i lo = _mm256_and_si256(raw, m4);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            __m256i p0 = _mm256_maddubs_epi16(lo, ld256(yq + 64 * c));
            __m256i p1 = _mm256_maddubs_epi16(hi, ld256(yq + 64 * c + 32));
            p0 = _mm256_madd_epi16(p0, _mm256_set1_epi16(sc[2 * c]));
            p1 = _mm256_madd_epi16(p1, _mm256_set1_epi16(sc[2 * c + 1]));
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
        }
        int16_t bs[16];
        ld_bsums(y, bs);
        int msum = 0;
        for (int g = 0; g < 8; g++)
            msum += mn[g] * (bs[2 * g] + bs[2 * g + 1]);
        const float d = ld_f16(x) * ld_f32(y), dmin = ld_f16(x + 2) * ld_f32(y);
        sum += d * (float)hsum_epi32(isum) - dmin * (float)msum;
    }
    *s = sum;
}

static void vd_q5_k(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const uint8_t *x = pw + i * 176, *y = pa + i * 292;
        uint8_t sc[8], mn[8];
        k4_scales(x + 4, sc, mn);
        const __m256i qh = ld256(x + 16);
        const uint8_t *q = x + 48, *yq = y + 4;
        __m256i isum = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i raw = ld256(q + 32 * c);
            const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one);
            const __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one);
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_slli_epi16(h0, 4));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4),
                                               _mm256_slli_epi16(h1, 4));
            __m256i p0 = _mm256_maddubs_epi16(lo, ld256(yq + 64 * c));
            __m256i p1 = _mm256_maddubs_epi16(hi, ld256(yq + 64 * c + 32));
            p0 = _mm256_madd_epi16(p0, _mm256_set1_epi16(sc[2 * c]));
            p1 = _mm256_madd_epi16(p1, _mm256_set1_epi16(sc[2 * c + 1]));
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(p0, p1));
        }
        int16_t bs[16];
        ld_bsums(y, bs);
        int msum = 0;
        for (int g = 0; g < 8; g++)
            msum += mn[g] * (bs[2 * g] + bs[2 * g + 1]);
        const float d = ld_f16(x) * ld_f32(y), dmin = ld_f16(x + 2) * ld_f32(y);
        sum += d * (float)hsum_epi32(isum) - dmin * (float)msum;
    }
    *s = sum;
}

static void vd_q6_k(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const uint8_t *x = pw + i * 210, *y = pa + i * 292;
        int8_t sc[16];
        memcpy(sc, x + 192, 16);
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = ld256(x + 64 * h), l1 = ld256(x + 64 * h + 32);
            const __m256i qh = ld256(x + 128 + 32 * h);
            __m256i q[4];
            q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
            q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
            q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
            q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
            for (int k = 0; k < 4; k++) {
                const int g = 8 * h + 2 * k;
                const __m256i p = _mm256_maddubs_epi16(q[k], ld256(y + 4 + 128 * h + 32 * k));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale_pair(sc[g], sc[g + 1])));
            }
        }
        /* the stored quants are q + 32: take 32 * sum(scale * bsum) back out */
        int16_t bs[16];
        ld_bsums(y, bs);
        int corr = 0;
        for (int g = 0; g < 16; g++)
            corr += sc[g] * bs[g];
        sum += ld_f16(x + 208) * ld_f32(y) * (float)(hsum_epi32(isum) - 32 * corr);
    }
    *s = sum;
}

static void vd_q2_k(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    const __m256i m2 = _mm256_set1_epi8(3);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const uint8_t *x = pw + i * 84, *y = pa + i * 292;
        const uint8_t *sc = x;
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qv = ld256(x + 16 + 32 * h);
            for (int j = 0; j < 4; j++) {
                const int g = 8 * h + 2 * j;
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * j), m2);
                const __m256i p = _mm256_maddubs_epi16(q, ld256(y + 4 + 128 * h + 32 * j));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale_pair(sc[g] & 0x0f, sc[g + 1] & 0x0f)));
            }
        }
        int16_t bs[16];
        ld_bsums(y, bs);
        int msum = 0;
        for (int g = 0; g < 16; g++)
            msum += (sc[g] >> 4) * bs[g];
        const float dall = ld_f32(y) * ld_f16(x + 80), dmin = ld_f32(y) * ld_f16(x + 82);
        sum += dall * (float)hsum_epi32(isum) - dmin * (float)msum;
    }
    *s = sum;
}

static void vd_q3_k(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    const __m256i m2 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const uint8_t *x = pw + i * 110, *y = pa + i * 292;
        int8_t sc[16];
        hr_k3_scales(x + 96, sc);
        const __m256i hm = ld256(x);
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qv = ld256(x + 32 + 32 * h);
            for (int j = 0; j < 4; j++) {
                const int g = 8 * h + 2 * j;
                const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * j), m2);
                const __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + j), one);
                const __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2)); /* value + 4 */
                const __m256i p = _mm256_maddubs_epi16(q, ld256(y + 4 + 128 * h + 32 * j));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, scale_pair(sc[g], sc[g + 1])));
            }
        }
        int16_t bs[16];
        ld_bsums(y, bs);
        int corr = 0;
        for (int g = 0; g < 16; g++)
            corr += sc[g] * bs[g];
        sum += ld_f16(x + 108) * ld_f32(y) * (float)(hsum_epi32(isum) - 4 * corr);
    }
    *s = sum;
}

/* ---- float types: 32 elements per step in four accumulators ---- */

#define DOT_FLOAT_BODY(ESIZE, LOAD8, SCALAR)                                          \
    const uint8_t *pw = w, *pa = a;                                                   \
    __m256 acc[4] = { _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),  \
                      _mm256_setzero_ps() };                                          \
    int64_t i = 0;                                                                    \
    for (; i + 32 <= n; i += 32)                                                      \
        for (int k = 0; k < 4; k++)                                                   \
            acc[k] = _mm256_fmadd_ps(LOAD8(pw + (i + 8 * k) * (ESIZE)),               \
                                     LOAD8(pa + (i + 8 * k) * (ESIZE)), acc[k]);      \
    for (; i + 8 <= n; i += 8)                                                        \
        acc[0] = _mm256_fmadd_ps(LOAD8(pw + i * (ESIZE)), LOAD8(pa + i * (ESIZE)), acc[0]); \
    float tail = 0.0f;                                                                \
    for (; i < n; i++)                                                                \
        tail += SCALAR(pw + i * (ESIZE)) * SCALAR(pa + i * (ESIZE));                  \
    *s = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) + tail;

static inline __m256 f32x8(const uint8_t *p) { return _mm256_loadu_ps((const float *)p); }
static inline __m256 f16x8(const uint8_t *p) { return _mm256_cvtph_ps(ld128(p)); }
static inline __m256 bf16x8(const uint8_t *p)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(ld128(p)), 16));
}
static inline float bf16_1(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return hr_bf16_to_f32(h);
}

static void vd_f32(int64_t n, float *s, const void *w, const void *a) { DOT_FLOAT_BODY(4, f32x8, ld_f32) }
static void vd_f16(int64_t n, float *s, const void *w, const void *a) { DOT_FLOAT_BODY(2, f16x8, ld_f16) }
static void vd_bf16(int64_t n, float *s, const void *w, const void *a) { DOT_FLOAT_BODY(2, bf16x8, bf16_1) }

/* ---- activation quantisers ---- */

static inline float hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

static inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

/* Four int32x8 (elements 0..31 in order) -> 32 int8, saturating. */
static inline __m256i pack_i32x32(__m256i q0, __m256i q1, __m256i q2, __m256i q3)
{
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* One 32-element block: int8 quants at qs, returns d = amax/127 and the sum
 * of the quants. */
static inline float q8_block32(const float *x, uint8_t *qs, int *qsum)
{
    __m256 v[4];
    __m256 mx = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        mx = _mm256_max_ps(mx, abs_ps(v[k]));
    }
    const float amax = hmax_ps(mx);
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    __m256i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id));
    if (qsum)
        *qsum = hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    _mm256_storeu_si256((__m256i *)qs, pack_i32x32(q[0], q[1], q[2], q[3]));
    return amax / 127.0f;
}

static void ff_q8_0(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        uint8_t *b = p + i * 34;
        const hr_f16 d = hr_f32_to_f16(q8_block32(src + i * HR_QK32, b + 2, NULL));
        memcpy(b, &d, 2);
    }
}

static void ff_q8_1(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        uint8_t *b = p + i * 36;
        int sum;
        const float d = q8_block32(src + i * HR_QK32, b + 4, &sum);
        const hr_f16 h[2] = { hr_f32_to_f16(d), hr_f32_to_f16(d * (float)sum) };
        memcpy(b, h, 4);
    }
}

static void ff_q8_k(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const float *x = src + i * HR_QK_K;
        uint8_t *b = p + i * 292;
        __m256 mx = _mm256_setzero_ps();
        for (int k = 0; k < 32; k++)
            mx = _mm256_max_ps(mx, abs_ps(_mm256_loadu_ps(x + 8 * k)));
        const float amax = hmax_ps(mx);
        if (amax == 0.0f) {
            memset(b, 0, 292);
            continue;
        }
        /* the first element of largest magnitude gives the sign */
        const __m256 va = _mm256_set1_ps(amax);
        float m = 0.0f;
        for (int k = 0; k < 32; k++) {
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + 8 * k)), va, _CMP_EQ_OQ));
            if (hit) {
                m = x[8 * k + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = -127.0f / m;
        const __m256 vs = _mm256_set1_ps(iscale);
        int16_t bsums[16];
        for (int g = 0; g < 8; g++) {
            __m256i q[4];
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + 32 * g + 8 * k)));
            bsums[2 * g] = (int16_t)hsum_epi32(_mm256_add_epi32(q[0], q[1]));
            bsums[2 * g + 1] = (int16_t)hsum_epi32(_mm256_add_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(b + 4 + 32 * g), pack_i32x32(q[0], q[1], q[2], q[3]));
        }
        const float d = 1.0f / iscale;
        memcpy(b, &d, 4);
        memcpy(b + 260, bsums, 32);
    }
}

static void ff_f16(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(p + 2 * i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) {
        const hr_f16 h = hr_f32_to_f16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

static void ff_bf16(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    int64_t i = 0;
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff), quiet = _mm256_set1_epi32(64);
    for (; i + 8 <= n; i += 8) {
        const __m256 f = _mm256_loadu_ps(src + i);
        const __m256i u = _mm256_castps_si256(f);
        const __m256i top = _mm256_srli_epi32(u, 16);
        const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(top, one))), 16);
        const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q));
        const __m256i v = _mm256_blendv_epi8(r, _mm256_or_si256(top, quiet), nan);
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08);
        _mm_storeu_si128((__m128i *)(p + 2 * i), _mm256_castsi256_si128(packed));
    }
    for (; i < n; i++) {
        const hr_bf16 h = hr_f32_to_bf16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

/* ---- tables ---- */

hr_vec_dot_fn hr_avx2_vec_dot(uint32_t type)
{
    switch (type) {
    case HR_TYPE_F32: return vd_f32;
    case HR_TYPE_F16: return vd_f16;
    case HR_TYPE_BF16: return vd_bf16;
    case HR_TYPE_Q8_0: return vd_q8_0;
    case HR_TYPE_Q4_0: return vd_q4_0;
    case HR_TYPE_Q5_0: return vd_q5_0;
    case HR_TYPE_IQ4_NL: return vd_iq4_nl;
    case HR_TYPE_MXFP4: return vd_mxfp4;
    case HR_TYPE_Q4_1: return vd_q4_1;
    case HR_TYPE_Q5_1: return vd_q5_1;
    case HR_TYPE_Q2_K: return vd_q2_k;
    case HR_TYPE_Q3_K: return vd_q3_k;
    case HR_TYPE_Q4_K: return vd_q4_k;
    case HR_TYPE_Q5_K: return vd_q5_k;
    case HR_TYPE_Q6_K: return vd_q6_k;
    default: return NULL;
    }
}

hr_from_float_fn hr_avx2_from_float(uint32_t act_type)
{
    switch (act_type) {
    case HR_TYPE_Q8_0: return ff_q8_0;
    case HR_TYPE_Q8_1: return ff_q8_1;
    case HR_TYPE_Q8_K: return ff_q8_k;
    case HR_TYPE_F16: return ff_f16;
    case HR_TYPE_BF16: return ff_bf16;
    default: return NULL;
    }
}

#endif /* HR_CPU_X86 */
