/* kernels_avx512.c - AVX-512 (F/BW/VL/DQ + VNNI) bodies of the hot dot
 * products. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni
 * -mavx512dq (CMakeLists.txt); only reached after dispatch.c has checked the
 * host. Empty off x86. Types without a body here use the AVX2 one (every
 * AVX-512 host dispatch accepts also has AVX2/FMA/F16C).
 *
 * Same arithmetic contract as kernels_avx2.c: exact integer sums inside a
 * block; the K-quant kernels scale each super-block's integer total exactly
 * as the reference does and so match it bit for bit; the 32-element block
 * types and the float types accumulate in 16 float lanes with FMA. */
#include "cpu/kernels.h"

#ifdef HR_CPU_X86

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu/pack.h"
#include "quant/quant_impl.h"

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

static inline uint32_t ld_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline __m512i ld512(const void *p) { return _mm512_loadu_si512(p); }
static inline __m256i ld256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
static inline __m128i ld128(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

static inline __m512i join256(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

static inline __m512 join_ps(float lo, float hi)
{
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi), 1);
}

/* int16 vector: s0 in the low 16 lanes, s1 in the high 16. */
static inline __m512i scale_pair16(int s0, int s1)
{
    return join256(_mm256_set1_epi16((short)s0), _mm256_set1_epi16((short)s1));
}

/* 16 int32 sums of 4 products each of two signed int8 vectors (VNNI):
 * |x| is unsigned (|-128| = 128 fits), x's sign moves onto y. */
static inline __m512i dot_s8s8(__m512i x, __m512i y)
{
    const __mmask64 neg = _mm512_movepi8_mask(x);
    const __m512i sy = _mm512_mask_sub_epi8(y, neg, _mm512_setzero_si512(), y);
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(x), sy);
}

/* ---- 32-element blocks against Q8_0 (MXFP4 too): two blocks per register ---- */

static inline __m256i unpack_nibbles(const uint8_t *p)
{
    const __m128i raw = ld128(p);
    return _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1),
                            _mm256_set1_epi8(0x0f));
}

static inline __m256i q8_0_q(const uint8_t *x) { return ld256(x + 2); }
static inline __m256i q4_0_q(const uint8_t *x) { return _mm256_sub_epi8(unpack_nibbles(x + 2), _mm256_set1_epi8(8)); }
static inline __m256i iq4_nl_q(const uint8_t *x)
{
    const __m256i table = _mm256_broadcastsi128_si256(ld128(hr_iq4nl_values));
    return _mm256_shuffle_epi8(table, unpack_nibbles(x + 2));
}
static inline __m256i mxfp4_q(const uint8_t *x)
{
    const __m256i table = _mm256_broadcastsi128_si256(ld128(hr_mxfp4_values));
    return _mm256_shuffle_epi8(table, unpack_nibbles(x + 1));
}
static inline float ld_e8m0_half(const uint8_t *x) { return hr_e8m0_half(x[0]); }
static inline __m256i q5_0_q(const uint8_t *x)
{
    /* the 32 fifth bits as a mask: (nibble | bit<<4) - 16 = nibble - 16 where clear */
    const __mmask32 clear = (__mmask32)~ld_u32(x + 2);
    const __m256i nib = unpack_nibbles(x + 6);
    return _mm256_mask_sub_epi8(nib, clear, nib, _mm256_set1_epi8(16));
}

#define DOT_Q8_0_BODY(WSIZE, WSCALE, LOADQ)                                           \
    const uint8_t *pw = w, *pa = a;                                                   \
    const int64_t nb = n / HR_QK32;                                                   \
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();                    \
    int64_t i = 0;                                                                    \
    for (; i + 3 < nb; i += 4) {                                                      \
        const uint8_t *x = pw + i * (WSIZE), *y = pa + i * 34;                        \
        const __m512i p0 = dot_s8s8(join256(LOADQ(x), LOADQ(x + (WSIZE))),           \
                                    join256(ld256(y + 2), ld256(y + 36)));            \
        const __m512i p1 = dot_s8s8(join256(LOADQ(x + 2 * (WSIZE)), LOADQ(x + 3 * (WSIZE))), \
                                    join256(ld256(y + 70), ld256(y + 104)));          \
        acc0 = _mm512_fmadd_ps(join_ps(WSCALE(x) * ld_f16(y), WSCALE(x + (WSIZE)) * ld_f16(y + 34)), \
                               _mm512_cvtepi32_ps(p0), acc0);                         \
        acc1 = _mm512_fmadd_ps(join_ps(WSCALE(x + 2 * (WSIZE)) * ld_f16(y + 68),      \
                                       WSCALE(x + 3 * (WSIZE)) * ld_f16(y + 102)),    \
                               _mm512_cvtepi32_ps(p1), acc1);                         \
    }                                                                                 \
    for (; i < nb; i++) {                                                             \
        const uint8_t *x = pw + i * (WSIZE), *y = pa + i * 34;                        \
        const __m512i p = dot_s8s8(_mm512_zextsi256_si512(LOADQ(x)),                  \
                                   _mm512_zextsi256_si512(ld256(y + 2)));             \
        acc0 = _mm512_mask3_fmadd_ps(_mm512_set1_ps(WSCALE(x) * ld_f16(y)),           \
                                     _mm512_cvtepi32_ps(p), acc0, 0x00ff);            \
    }                                                                                 \
    *s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));

static void vd_q8_0(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(34, ld_f16, q8_0_q) }
static void vd_q4_0(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(18, ld_f16, q4_0_q) }
static void vd_q5_0(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(22, ld_f16, q5_0_q) }
static void vd_iq4_nl(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(18, ld_f16, iq4_nl_q) }
static void vd_mxfp4(int64_t n, float *s, const void *w, const void *a) { DOT_Q8_0_BODY(17, ld_e8m0_half, mxfp4_q) }

/* ---- K-quants against Q8_K ---- */

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

static inline int k4_min_sum(const uint8_t *y, const uint8_t mn[8])
{
    int16_t bs[16];
    memcpy(bs, y + 260, 32);
    int msum = 0;
    for (int g = 0; g < 8; g++)
        msum += mn[g] * (bs[2 * g] + bs[2 * g + 1]);
    return msum;
}

/* One 64-element chunk c of Q4_K/Q5_K: the low nibbles are group 2c (y bytes
 * 64c..64c+31), the high nibbles group 2c+1 (the next 32): one register. */
static void vd_q4_k(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const uint8_t *x = pw + i * 144, *y = pa + i * 292;
        uint8_t sc[8], mn[8];
        k4_scales(x + 4, sc, mn);
        __m512i isum = _mm512_setzero_si512();
        for (int c = 0; c < 4; c++) {
            const __m256i raw = ld256(x + 16 + 32 * c);
            const __m512i q = join256(_mm256_and_si256(raw, m4), _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4));
            const __m512i p = _mm512_maddubs_epi16(q, ld512(y + 4 + 64 * c));
            isum = _mm512_dpwssd_epi32(isum, p, scale_pair16(sc[2 * c], sc[2 * c + 1]));
        }
        const float d = ld_f16(x) * ld_f32(y), dmin = ld_f16(x + 2) * ld_f32(y);
        sum += d * (float)_mm512_reduce_add_epi32(isum) - dmin * (float)k4_min_sum(y, mn);
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
        __m512i isum = _mm512_setzero_si512();
        for (int c = 0; c < 4; c++) {
            const __m256i raw = ld256(x + 48 + 32 * c);
            const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4);
            const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4);
            const __m512i q = join256(_mm256_or_si256(_mm256_and_si256(raw, m4), h0),
                                      _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), h1));
            const __m512i p = _mm512_maddubs_epi16(q, ld512(y + 4 + 64 * c));
            isum = _mm512_dpwssd_epi32(isum, p, scale_pair16(sc[2 * c], sc[2 * c + 1]));
        }
        const float d = ld_f16(x) * ld_f32(y), dmin = ld_f16(x + 2) * ld_f32(y);
        sum += d * (float)_mm512_reduce_add_epi32(isum) - dmin * (float)k4_min_sum(y, mn);
    }
    *s = sum;
}

/* Q6_K: ql[64h..64h+63] holds the low nibbles of elements 128h+0..63 (low
 * nibble) and 128h+64..127 (high nibble), so one 64-byte load covers two
 * 64-element runs; the 2-bit highs come from qh[32h..32h+31] at shifts 0,2 /
 * 4,6. The stored quant is q+32; 32*sum(scale*bsum) is taken out after. */
static void vd_q6_k(int64_t n, float *s, const void *w, const void *a)
{
    const uint8_t *pw = w, *pa = a;
    const __m512i m4 = _mm512_set1_epi8(0x0f), m2 = _mm512_set1_epi8(3);
    /* lane j of 32 int16 -> scale (j / 8) of a run of four */
    const __m512i idx0 = _mm512_set_epi16(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2,
                                          1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const uint8_t *x = pw + i * 210, *y = pa + i * 292;
        const __m512i sc16 = _mm512_cvtepi8_epi16(_mm256_castsi128_si256(ld128(x + 192)));
        __m512i isum = _mm512_setzero_si512();
        for (int h = 0; h < 2; h++) {
            const __m512i l = ld512(x + 64 * h);
            const __m256i qh = ld256(x + 128 + 32 * h);
            const __m512i h01 = join256(qh, _mm256_srli_epi16(qh, 2));
            const __m512i h23 = join256(_mm256_srli_epi16(qh, 4), _mm256_srli_epi16(qh, 6));
            const __m512i q01 = _mm512_or_si512(_mm512_and_si512(l, m4),
                                                _mm512_slli_epi16(_mm512_and_si512(h01, m2), 4));
            const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                                _mm512_slli_epi16(_mm512_and_si512(h23, m2), 4));
            const __m512i s01 = _mm512_permutexvar_epi16(_mm512_add_epi16(idx0, _mm512_set1_epi16((short)(8 * h))), sc16);
            const __m512i s23 = _mm512_permutexvar_epi16(_mm512_add_epi16(idx0, _mm512_set1_epi16((short)(8 * h + 4))), sc16);
            isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q01, ld512(y + 4 + 128 * h)), s01);
            isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(q23, ld512(y + 4 + 128 * h + 64)), s23);
        }
        int8_t sc[16];
        int16_t bs[16];
        memcpy(sc, x + 192, 16);
        memcpy(bs, y + 260, 32);
        int corr = 0;
        for (int g = 0; g < 16; g++)
            corr += sc[g] * bs[g];
        sum += ld_f16(x + 208) * ld_f32(y) * (float)(_mm512_reduce_add_epi32(isum) - 32 * corr);
    }
    *s = sum;
}

/* ---- float types: 64 elements per step in four accumulators ---- */

#define DOT_FLOAT_BODY(ESIZE, LOAD16, SCALAR)                                         \
    const uint8_t *pw = w, *pa = a;                                                   \
    __m512 acc[4] = { _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),  \
                      _mm512_setzero_ps() };                                          \
    int64_t i = 0;                                                                    \
    for (; i + 64 <= n; i += 64)                                                      \
        for (int k = 0; k < 4; k++)                                                   \
            acc[k] = _mm512_fmadd_ps(LOAD16(pw + (i + 16 * k) * (ESIZE)),             \
                                     LOAD16(pa + (i + 16 * k) * (ESIZE)), acc[k]);    \
    for (; i + 16 <= n; i += 16)                                                      \
        acc[0] = _mm512_fmadd_ps(LOAD16(pw + i * (ESIZE)), LOAD16(pa + i * (ESIZE)), acc[0]); \
    float tail = 0.0f;                                                                \
    for (; i < n; i++)                                                                \
        tail += SCALAR(pw + i * (ESIZE)) * SCALAR(pa + i * (ESIZE));                  \
    *s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))) + tail;

static inline __m512 f32x16(const uint8_t *p) { return _mm512_loadu_ps(p); }
static inline __m512 f16x16(const uint8_t *p) { return _mm512_cvtph_ps(ld256(p)); }
static inline __m512 bf16x16(const uint8_t *p)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(ld256(p)), 16));
}
static inline float bf16_1(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return hr_bf16_to_f32(h);
}

static void vd_f32(int64_t n, float *s, const void *w, const void *a) { DOT_FLOAT_BODY(4, f32x16, ld_f32) }
static void vd_f16(int64_t n, float *s, const void *w, const void *a) { DOT_FLOAT_BODY(2, f16x16, ld_f16) }
static void vd_bf16(int64_t n, float *s, const void *w, const void *a) { DOT_FLOAT_BODY(2, bf16x16, bf16_1) }

/* ---- activation quantisers ---- */

/* Q8_0: 32 floats -> d = amax/127, quants rounded to nearest even. */
static void ff_q8_0(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK32; i++) {
        const float *x = src + i * HR_QK32;
        uint8_t *b = p + i * 34;
        const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
        _mm_storeu_si128((__m128i *)(b + 2), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(b + 18), _mm512_cvtsepi32_epi8(q1));
        const hr_f16 d = hr_f32_to_f16(amax / 127.0f);
        memcpy(b, &d, 2);
    }
}

/* Q8_K: the signed value of largest magnitude (first on ties) maps to -127. */
static void ff_q8_k(const float *src, void *dst, int64_t n)
{
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / HR_QK_K; i++) {
        const float *x = src + i * HR_QK_K;
        uint8_t *b = p + i * 292;
        __m512 mx = _mm512_setzero_ps();
        for (int k = 0; k < 16; k++)
            mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(x + 16 * k)));
        const float amax = _mm512_reduce_max_ps(mx);
        if (amax == 0.0f) {
            memset(b, 0, 292);
            continue;
        }
        const __m512 va = _mm512_set1_ps(amax);
        float m = 0.0f;
        for (int k = 0; k < 16; k++) {
            const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + 16 * k)), va, _CMP_EQ_OQ);
            if (hit) {
                m = x[16 * k + __builtin_ctz((unsigned)hit)];
                break;
            }
        }
        const float iscale = -127.0f / m;
        const __m512 vs = _mm512_set1_ps(iscale);
        int16_t bsums[16];
        for (int g = 0; g < 16; g++) {
            const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(vs, _mm512_loadu_ps(x + 16 * g)));
            bsums[g] = (int16_t)_mm512_reduce_add_epi32(q);
            _mm_storeu_si128((__m128i *)(b + 4 + 16 * g), _mm512_cvtsepi32_epi8(q));
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
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(p + 2 * i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) {
        const hr_f16 h = hr_f32_to_f16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

/* ---- packed 16-row GEMM for the 32-element block types (see pack.h) ----
 *
 * One call computes y[t][r] for 16 rows (one packed group) and T tokens.
 * For each block, lane r of a register holds 4 consecutive weight bytes of
 * row r, and the activation's matching 4 bytes are broadcast, so vpdpbusd
 * accumulates row r's whole 32-element integer sum in lane r: no horizontal
 * sums. dpbusd multiplies unsigned by signed bytes; the packed weights are
 * stored unsigned (quant + off) and the accumulator starts at -off * sum(a),
 * which makes the lane total exactly the reference's integer block sum.
 * Each output then gets the reference's float operations in the reference's
 * order (isum*dw*da, or dw*da*isum for IQ4_NL, added block by block), so the
 * results are bit-identical to src/quant's vec_dot whatever T is. */

#ifndef HR_PF_DIST
#define HR_PF_DIST 4096
#endif

static inline __attribute__((always_inline)) void gemm_x16_t(int kind, int64_t nb, const uint8_t *wg,
                                                             const uint8_t *a, size_t a_row,
                                                             const float *da, const int32_t *as,
                                                             size_t side_row, const int T, float *y,
                                                             size_t y_row, __mmask16 valid)
{
    const size_t bb = hr_pack_block_bytes(kind);
    const int off = hr_pack_offset(kind);
    const __m512i m4 = _mm512_set1_epi8(0x0f), s16 = _mm512_set1_epi8(16);
    const __m512i tbl = _mm512_broadcast_i32x4(_mm_add_epi8(ld128(hr_iq4nl_values), _mm_set1_epi8((char)0x80)));
    __m512 facc[8];
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        facc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = wg + (size_t)b * bb;
        if (T == 1) /* decode streams the weights once: fetch a few blocks ahead */
            for (size_t o = 0; o < bb; o += 64)
                _mm_prefetch((const char *)(wb + HR_PF_DIST + o), _MM_HINT_T0);
        __m512i acc[8];
        #pragma GCC unroll 8
        for (int t = 0; t < T; t++)
            acc[t] = _mm512_set1_epi32(-off * as[(size_t)t * side_row + (size_t)b]);
        const uint8_t *ab = a + (size_t)b * 34 + 2;
        if (kind == HR_PACK_Q8_0) {
            #pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                const __m512i w = ld512(wb + 32 + 64 * j);
                #pragma GCC unroll 8
                for (int t = 0; t < T; t++)
                    acc[t] = _mm512_dpbusd_epi32(acc[t], w, _mm512_set1_epi32((int)ld_u32(ab + (size_t)t * a_row + 4 * j)));
            }
        } else {
            #pragma GCC unroll 8
            for (int j = 0; j < 4; j++) {
                const __m512i raw = ld512(wb + 32 + 64 * j);
                __m512i lo = _mm512_and_si512(raw, m4), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
                if (kind == HR_PACK_Q5_0) {
                    __mmask64 mlo, mhi;
                    memcpy(&mlo, wb + 288 + 16 * j, 8);
                    memcpy(&mhi, wb + 288 + 16 * j + 8, 8);
                    lo = _mm512_mask_add_epi8(lo, mlo, lo, s16);
                    hi = _mm512_mask_add_epi8(hi, mhi, hi, s16);
                } else if (kind == HR_PACK_IQ4_NL) {
                    lo = _mm512_shuffle_epi8(tbl, lo);
                    hi = _mm512_shuffle_epi8(tbl, hi);
                }
                #pragma GCC unroll 8
                for (int t = 0; t < T; t++) {
                    const uint8_t *at = ab + (size_t)t * a_row + 4 * j;
                    acc[t] = _mm512_dpbusd_epi32(acc[t], lo, _mm512_set1_epi32((int)ld_u32(at)));
                    acc[t] = _mm512_dpbusd_epi32(acc[t], hi, _mm512_set1_epi32((int)ld_u32(at + 16)));
                }
            }
        }
        const __m512 dw = _mm512_cvtph_ps(ld256(wb));
        #pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            const __m512 d_a = _mm512_set1_ps(da[(size_t)t * side_row + (size_t)b]);
            __m512 p;
            if (kind == HR_PACK_IQ4_NL)
                p = _mm512_mul_ps(_mm512_mul_ps(dw, d_a), _mm512_cvtepi32_ps(acc[t]));
            else
                p = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[t]), dw), d_a);
            facc[t] = _mm512_add_ps(facc[t], p);
        }
    }
    #pragma GCC unroll 8
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * y_row, valid, facc[t]);
}

#define GEMM_X16_KIND(KIND, NAME)                                                                      \
    static void NAME(int64_t nb, const uint8_t *wg, const uint8_t *a, size_t a_row, const float *da,   \
                     const int32_t *as, size_t side_row, int T, float *y, size_t y_row, int n_valid)   \
    {                                                                                                  \
        const __mmask16 valid = (__mmask16)((1u << n_valid) - 1u);                                     \
        while (T > 0) {                                                                                \
            const int tt = T >= 8 ? 8 : T;                                                             \
            switch (tt) {                                                                              \
            case 8: gemm_x16_t(KIND, nb, wg, a, a_row, da, as, side_row, 8, y, y_row, valid); break;   \
            case 7: gemm_x16_t(KIND, nb, wg, a, a_row, da, as, side_row, 7, y, y_row, valid); break;   \
            case 6: gemm_x16_t(KIND, nb, wg, a, a_row, da, as, side_row, 6, y, y_row, valid); break;   \
            case 5: gemm_x16_t(KIND, nb, wg, a, a_row, da, as, side_row, 5, y, y_row, valid); break;   \
            case 4: gemm_x16_t(KIND, nb, wg, a, a_row, da, as, side_row, 4, y, y_row, valid); break;   \
            case 3: gemm_x16_t(KIND, nb, wg, a, a_row, da, as, side_row, 3, y, y_row, valid); break;   \
            case 2: gemm_x16_t(KIND, nb, wg, a, a_row, da, as, side_row, 2, y, y_row, valid); break;   \
            default: gemm_x16_t(KIND, nb, wg, a, a_row, da, as, side_row, 1, y, y_row, valid); break;  \
            }                                                                                          \
            a += (size_t)tt * a_row;                                                                   \
            da += (size_t)tt * side_row;                                                               \
            as += (size_t)tt * side_row;                                                               \
            y += (size_t)tt * y_row;                                                                   \
            T -= tt;                                                                                   \
        }                                                                                              \
    }

GEMM_X16_KIND(HR_PACK_Q8_0, gemm_q8_0_x16)
GEMM_X16_KIND(HR_PACK_Q4_0, gemm_q4_0_x16)
GEMM_X16_KIND(HR_PACK_Q5_0, gemm_q5_0_x16)
GEMM_X16_KIND(HR_PACK_IQ4_NL, gemm_iq4_nl_x16)

/* Q4_K / Q6_K against Q8_K, 16 rows x T (<= 4) tokens per call. The
 * integer super-block totals are formed exactly as the reference does
 * (sum over sub-blocks of scale * integer dot, mins through the bsums), then
 * scaled with the reference's float operations in its order: bit-identical
 * to src/quant. as holds, per token and super-block, Q4_K's four int16
 * pairs of 32-element activation sums (pack.h); Q6_K reads the bsums. */
static inline __attribute__((always_inline)) void gemm_q4_k_t(int64_t nb, const uint8_t *wg, const uint8_t *a,
                                                              size_t a_row, const int32_t *as, size_t side_row,
                                                              const int T, float *y, size_t y_row, __mmask16 valid)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 facc[4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
        facc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = wg + (size_t)b * 2368, *ab = a + (size_t)b * 292;
        if (T == 1)
            for (size_t o = 0; o < 2368; o += 64)
                _mm_prefetch((const char *)(wb + HR_PF_DIST + o), _MM_HINT_T0);
        __m512i isum[4], msum[4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            isum[t] = msum[t] = _mm512_setzero_si512();
        for (int c = 0; c < 4; c++) {
            __m512i lo_acc[4], hi_acc[4];
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                lo_acc[t] = hi_acc[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                const __m512i raw = ld512(wb + 320 + 512 * c + 64 * j);
                const __m512i lo = _mm512_and_si512(raw, m4), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
#pragma GCC unroll 4
                for (int t = 0; t < T; t++) {
                    const uint8_t *at = ab + (size_t)t * a_row + 4 + 64 * c + 4 * j;
                    lo_acc[t] = _mm512_dpbusd_epi32(lo_acc[t], lo, _mm512_set1_epi32((int)ld_u32(at)));
                    hi_acc[t] = _mm512_dpbusd_epi32(hi_acc[t], hi, _mm512_set1_epi32((int)ld_u32(at + 32)));
                }
            }
            const __m512i sc_lo = _mm512_cvtepu8_epi32(ld128(wb + 64 + 32 * c));
            const __m512i sc_hi = _mm512_cvtepu8_epi32(ld128(wb + 64 + 32 * c + 16));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(lo_acc[t], sc_lo),
                                                                     _mm512_mullo_epi32(hi_acc[t], sc_hi)));
        }
#pragma GCC unroll 4
        for (int p = 0; p < 4; p++) {
            const __m512i mn = _mm512_cvtepu8_epi16(ld256(wb + 192 + 32 * p));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                msum[t] = _mm512_dpwssd_epi32(msum[t], mn, _mm512_set1_epi32(as[(size_t)t * side_row + 4 * (size_t)b + (size_t)p]));
        }
        const __m512 dw = _mm512_cvtph_ps(ld256(wb)), dmw = _mm512_cvtph_ps(ld256(wb + 32));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m512 da = _mm512_set1_ps(ld_f32(ab + (size_t)t * a_row));
            const __m512 d = _mm512_mul_ps(dw, da), dmin = _mm512_mul_ps(dmw, da);
            facc[t] = _mm512_add_ps(facc[t], _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(isum[t])),
                                                           _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(msum[t]))));
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * y_row, valid, facc[t]);
}

static inline __attribute__((always_inline)) void gemm_q6_k_t(int64_t nb, const uint8_t *wg, const uint8_t *a,
                                                              size_t a_row, const int T, float *y, size_t y_row,
                                                              __mmask16 valid)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    __m512 facc[4];
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
        facc[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = wg + (size_t)b * 3360, *ab = a + (size_t)b * 292;
        if (T == 1)
            for (size_t o = 0; o < 3360; o += 64)
                _mm_prefetch((const char *)(wb + HR_PF_DIST + o), _MM_HINT_T0);
        __m512i isum[4];
#pragma GCC unroll 4
        for (int t = 0; t < T; t++)
            isum[t] = _mm512_setzero_si512();
        for (int s4 = 0; s4 < 8; s4++) {
            __m512i acc1[4], acc2[4];
#pragma GCC unroll 4
            for (int t = 0; t < T; t++) { /* the stored quant is q + 32: start at -32 * bsum */
                int16_t bs1, bs2;
                memcpy(&bs1, ab + (size_t)t * a_row + 260 + 2 * s4, 2);
                memcpy(&bs2, ab + (size_t)t * a_row + 260 + 2 * (8 + s4), 2);
                acc1[t] = _mm512_set1_epi32(-32 * bs1);
                acc2[t] = _mm512_set1_epi32(-32 * bs2);
            }
#pragma GCC unroll 2
            for (int v = 2 * s4; v < 2 * s4 + 2; v++) {
                const __m512i h = ld512(wb + 2336 + 64 * v);
#pragma GCC unroll 2
                for (int w = 0; w < 2; w++) {
                    const int u = 2 * v + w;
                    const __m512i n4 = ld512(wb + 288 + 64 * u);
                    const __m512i h1 = w ? h : _mm512_slli_epi16(h, 4);
                    const __m512i h2 = w ? _mm512_srli_epi16(h, 2) : _mm512_slli_epi16(h, 2);
                    const __m512i q1 = _mm512_or_si512(_mm512_and_si512(n4, m4), _mm512_and_si512(h1, m30));
                    const __m512i q2 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(n4, 4), m4),
                                                       _mm512_and_si512(h2, m30));
#pragma GCC unroll 4
                    for (int t = 0; t < T; t++) {
                        const uint8_t *at = ab + (size_t)t * a_row + 4 + 4 * u;
                        acc1[t] = _mm512_dpbusd_epi32(acc1[t], q1, _mm512_set1_epi32((int)ld_u32(at)));
                        acc2[t] = _mm512_dpbusd_epi32(acc2[t], q2, _mm512_set1_epi32((int)ld_u32(at + 128)));
                    }
                }
            }
            const __m512i sc1 = _mm512_cvtepi8_epi32(ld128(wb + 32 + 16 * s4));
            const __m512i sc2 = _mm512_cvtepi8_epi32(ld128(wb + 32 + 16 * (8 + s4)));
#pragma GCC unroll 4
            for (int t = 0; t < T; t++)
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(acc1[t], sc1),
                                                                     _mm512_mullo_epi32(acc2[t], sc2)));
        }
        const __m512 dw = _mm512_cvtph_ps(ld256(wb));
#pragma GCC unroll 4
        for (int t = 0; t < T; t++) {
            const __m512 da = _mm512_set1_ps(ld_f32(ab + (size_t)t * a_row));
            facc[t] = _mm512_add_ps(facc[t], _mm512_mul_ps(_mm512_mul_ps(dw, da), _mm512_cvtepi32_ps(isum[t])));
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < T; t++)
        _mm512_mask_storeu_ps(y + (size_t)t * y_row, valid, facc[t]);
}

#define GEMM_K_DRIVER(NAME, CALL)                                                                      \
    static void NAME(int64_t nb, const uint8_t *wg, const uint8_t *a, size_t a_row, const float *da,   \
                     const int32_t *as, size_t side_row, int T, float *y, size_t y_row, int n_valid)   \
    {                                                                                                  \
        (void)da;                                                                                      \
        const __mmask16 valid = (__mmask16)((1u << n_valid) - 1u);                                     \
        while (T > 0) {                                                                                \
            const int tt = T >= 4 ? 4 : T;                                                             \
            switch (tt) {                                                                              \
            case 4: CALL(4); break;                                                                    \
            case 3: CALL(3); break;                                                                    \
            case 2: CALL(2); break;                                                                    \
            default: CALL(1); break;                                                                   \
            }                                                                                          \
            a += (size_t)tt * a_row;                                                                   \
            as += (size_t)tt * side_row;                                                               \
            y += (size_t)tt * y_row;                                                                   \
            T -= tt;                                                                                   \
        }                                                                                              \
    }

#define CALL_Q4_K(TT) gemm_q4_k_t(nb, wg, a, a_row, as, side_row, TT, y, y_row, valid)
#define CALL_Q6_K(TT) ((void)as, gemm_q6_k_t(nb, wg, a, a_row, TT, y, y_row, valid))
GEMM_K_DRIVER(gemm_q4_k_x16, CALL_Q4_K)
GEMM_K_DRIVER(gemm_q6_k_x16, CALL_Q6_K)

hr_gemm_x16_fn hr_avx512_gemm_x16(int kind)
{
    switch (kind) {
    case HR_PACK_Q8_0: return gemm_q8_0_x16;
    case HR_PACK_Q4_0: return gemm_q4_0_x16;
    case HR_PACK_Q5_0: return gemm_q5_0_x16;
    case HR_PACK_IQ4_NL: return gemm_iq4_nl_x16;
    case HR_PACK_Q4_K: return gemm_q4_k_x16;
    case HR_PACK_Q6_K: return gemm_q6_k_x16;
    default: return NULL;
    }
}

/* ---- streaming attention (see attn.h) ---- */

/* e^x for x <= 0 (x = -inf gives a tiny positive value: callers mask). */
static inline __m512 exp_nonpos(__m512 x)
{
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
    /* Taylor series to r^7 on |r| <= ln2/2: relative error below 1e-8 */
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#define ATTN_MAX_GROUP 16
#define ATTN_MAX_ROWS (ATTN_MAX_GROUP * HR_ATTN_MAX_TOKENS)

/* r[j] = row j of a 16x16 tile on entry, column j on exit. */
static inline void transpose16(__m512 r[16])
{
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4G + c], 128-bit lane L: rows 4G..4G+3 of column 4L + c */
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 2]);
        const __m512d c = _mm512_castps_pd(t[4 * g + 1]), d = _mm512_castps_pd(t[4 * g + 3]);
        r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        const __m512 vlo = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), vhi = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);
        const __m512 wlo = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        const __m512 whi = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
        t[c] = _mm512_shuffle_f32x4(vlo, wlo, 0x88);      /* column c      */
        t[8 + c] = _mm512_shuffle_f32x4(vlo, wlo, 0xDD);  /* column 8 + c  */
        t[4 + c] = _mm512_shuffle_f32x4(vhi, whi, 0x88);  /* column 4 + c  */
        t[12 + c] = _mm512_shuffle_f32x4(vhi, whi, 0xDD); /* column 12 + c */
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        r[i] = t[i];
}

/* Scores of up to 4 query rows against a transposed K tile (kt[i] = dim i
 * of the tile's 16 positions): one sequential FMA chain per row, the rows
 * interleaved only to hide latency, so a row's bits never depend on which
 * rows share the call. */
static inline __attribute__((always_inline)) void scores4(const int D, const float *const qr[4], int nr,
                                                          const __m512 *kt, __m512 out[4])
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    if (nr == 4) {
        for (int i = 0; i < D; i++) {
            const __m512 k = kt[i];
            s0 = _mm512_fmadd_ps(_mm512_set1_ps(qr[0][i]), k, s0);
            s1 = _mm512_fmadd_ps(_mm512_set1_ps(qr[1][i]), k, s1);
            s2 = _mm512_fmadd_ps(_mm512_set1_ps(qr[2][i]), k, s2);
            s3 = _mm512_fmadd_ps(_mm512_set1_ps(qr[3][i]), k, s3);
        }
    } else if (nr == 3) {
        for (int i = 0; i < D; i++) {
            const __m512 k = kt[i];
            s0 = _mm512_fmadd_ps(_mm512_set1_ps(qr[0][i]), k, s0);
            s1 = _mm512_fmadd_ps(_mm512_set1_ps(qr[1][i]), k, s1);
            s2 = _mm512_fmadd_ps(_mm512_set1_ps(qr[2][i]), k, s2);
        }
    } else if (nr == 2) {
        for (int i = 0; i < D; i++) {
            const __m512 k = kt[i];
            s0 = _mm512_fmadd_ps(_mm512_set1_ps(qr[0][i]), k, s0);
            s1 = _mm512_fmadd_ps(_mm512_set1_ps(qr[1][i]), k, s1);
        }
    } else {
        for (int i = 0; i < D; i++)
            s0 = _mm512_fmadd_ps(_mm512_set1_ps(qr[0][i]), kt[i], s0);
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* Tiles of at most 16 positions inside one block, outer. Each K tile is
 * transposed once (dims x positions) for every query row of the call (the
 * group's heads times the tokens), so a row's scores for the tile are D
 * broadcast-FMAs with no horizontal sums; V rows are then accumulated per
 * row. Per row: an online softmax, state kept in L1. */
static inline __attribute__((always_inline)) void attn_t(const int D, const float *q, size_t q_stride, int32_t n_tok,
                                                         const int32_t *n_pos, int32_t group, float scale,
                                                         const hr_attn_kv *kv, float *out, size_t out_stride)
{
    const int C = D / 16;
    const int32_t rows = group * n_tok;
    float m[ATTN_MAX_ROWS], l[ATTN_MAX_ROWS];
    _Alignas(64) float accm[ATTN_MAX_ROWS * 128];
    _Alignas(64) float ktb[128 * 16];
    __m512 *kt = (__m512 *)ktb;
    int32_t max_pos = 0;
    for (int32_t t = 0; t < n_tok; t++)
        max_pos = n_pos[t] > max_pos ? n_pos[t] : max_pos;
    for (int32_t r = 0; r < rows; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(accm, 0, (size_t)rows * (size_t)D * sizeof(float));
    for (int32_t p0 = 0, n; p0 < max_pos; p0 += n) {
        const int32_t blk = p0 / kv->block_tokens, in = p0 % kv->block_tokens;
        n = max_pos - p0 < 16 ? max_pos - p0 : 16;
        if (in + n > kv->block_tokens)
            n = kv->block_tokens - in;
        const float *kb = kv->k[blk] + (size_t)in * kv->k_stride;
        const float *vb = kv->v[blk] + (size_t)in * kv->v_stride;
        if (p0 + n < max_pos) { /* the next tile's rows: usually the next block, elsewhere in memory */
            const int32_t nb = (p0 + n) / kv->block_tokens, ni = (p0 + n) % kv->block_tokens;
            for (int j = 0; j < 16 && p0 + n + j < max_pos && ni + j < kv->block_tokens; j += 2) {
                _mm_prefetch((const char *)(kv->k[nb] + (size_t)(ni + j) * kv->k_stride), _MM_HINT_T0);
                _mm_prefetch((const char *)(kv->v[nb] + (size_t)(ni + j) * kv->v_stride), _MM_HINT_T0);
            }
        }
        /* transpose the tile: kt[i] = dim i of positions p0..p0+15 (zero past n) */
#pragma GCC unroll 8
        for (int c = 0; c < C; c++) {
            __m512 r[16];
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++)
                r[j] = j < n ? _mm512_loadu_ps(kb + (size_t)j * kv->k_stride + 16 * c) : _mm512_setzero_ps();
            transpose16(r);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++)
                kt[16 * c + j] = r[j];
        }
        /* the rows that see this tile, four at a time */
        int32_t act[ATTN_MAX_ROWS], n_act = 0;
        for (int32_t r = 0; r < rows; r++)
            if (n_pos[r / group] > p0)
                act[n_act++] = r;
        for (int32_t a0 = 0; a0 < n_act; a0 += 4) {
            const int nr = n_act - a0 < 4 ? n_act - a0 : 4;
            const float *qr[4];
            for (int i = 0; i < nr; i++) {
                const int32_t r = act[a0 + i];
                qr[i] = q + (size_t)(r / group) * q_stride + (size_t)(r % group) * (size_t)D;
            }
            __m512 sc[4];
            scores4(D, qr, nr, kt, sc);
            for (int i = 0; i < nr; i++) {
                const int32_t r = act[a0 + i];
                const int32_t nv = n_pos[r / group] - p0 < n ? n_pos[r / group] - p0 : n;
                const __mmask16 valid = (__mmask16)((1u << nv) - 1u);
                const __m512 sv = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), valid,
                                                     _mm512_mul_ps(sc[i], _mm512_set1_ps(scale)));
                const float mt = _mm512_reduce_max_ps(sv);
                float *o = accm + (size_t)r * (size_t)D;
                __m512 acc[8];
#pragma GCC unroll 8
                for (int c = 0; c < C; c++)
                    acc[c] = _mm512_load_ps(o + 16 * c);
                if (mt > m[r]) {
                    const float cf = expf(m[r] - mt);
                    l[r] *= cf;
#pragma GCC unroll 8
                    for (int c = 0; c < C; c++)
                        acc[c] = _mm512_mul_ps(acc[c], _mm512_set1_ps(cf));
                    m[r] = mt;
                }
                const __m512 p = _mm512_maskz_mov_ps(valid, exp_nonpos(_mm512_sub_ps(sv, _mm512_set1_ps(m[r]))));
                l[r] += _mm512_reduce_add_ps(p);
                _Alignas(64) float pv[16];
                _mm512_store_ps(pv, p);
                for (int32_t j = 0; j < nv; j++) {
                    const float *vr = vb + (size_t)j * kv->v_stride;
                    const __m512 w = _mm512_set1_ps(pv[j]);
#pragma GCC unroll 8
                    for (int c = 0; c < C; c++)
                        acc[c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(vr + 16 * c), acc[c]);
                }
#pragma GCC unroll 8
                for (int c = 0; c < C; c++)
                    _mm512_store_ps(o + 16 * c, acc[c]);
            }
        }
    }
    for (int32_t r = 0; r < rows; r++) {
        const __m512 inv = _mm512_set1_ps(l[r] > 0.0f ? 1.0f / l[r] : 0.0f);
        float *dst = out + (size_t)(r / group) * out_stride + (size_t)(r % group) * (size_t)D;
        for (int c = 0; c < C; c++)
            _mm512_storeu_ps(dst + 16 * c, _mm512_mul_ps(_mm512_load_ps(accm + (size_t)r * D + 16 * c), inv));
    }
}

/* Runs longer than HR_ATTN_MAX_TOKENS go in pieces (the stack state is
 * sized for that many rows). */
static inline __attribute__((always_inline)) void attn_runs(const int D, const float *q, size_t q_stride,
                                                            int32_t n_tok, const int32_t *n_pos, int32_t group,
                                                            float scale, const hr_attn_kv *kv, float *out,
                                                            size_t out_stride)
{
    for (int32_t t0 = 0; t0 < n_tok; t0 += HR_ATTN_MAX_TOKENS) {
        const int32_t nt = n_tok - t0 < HR_ATTN_MAX_TOKENS ? n_tok - t0 : HR_ATTN_MAX_TOKENS;
        attn_t(D, q + (size_t)t0 * q_stride, q_stride, nt, n_pos + t0, group, scale, kv,
               out + (size_t)t0 * out_stride, out_stride);
    }
}

static void attn_64(const float *q, size_t q_stride, int32_t n_tok, const int32_t *n_pos, int32_t group, int32_t d,
                    int32_t dv, float scale, const hr_attn_kv *kv, float *out, size_t out_stride)
{
    (void)d;
    (void)dv;
    attn_runs(64, q, q_stride, n_tok, n_pos, group, scale, kv, out, out_stride);
}

static void attn_128(const float *q, size_t q_stride, int32_t n_tok, const int32_t *n_pos, int32_t group, int32_t d,
                     int32_t dv, float scale, const hr_attn_kv *kv, float *out, size_t out_stride)
{
    (void)d;
    (void)dv;
    attn_runs(128, q, q_stride, n_tok, n_pos, group, scale, kv, out, out_stride);
}

hr_attn_fn hr_avx512_attn(int32_t group, int32_t d, int32_t dv)
{
    if (group < 1 || group > ATTN_MAX_GROUP || d != dv)
        return NULL;
    return d == 64 ? attn_64 : d == 128 ? attn_128 : NULL;
}

/* ---- element-wise ---- */

/* e^x on [-87, 88] (clamped outside): 2^n times a Taylor series in r. */
static inline __m512 exp_clamped(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

void hr_avx512_silu_mul(float *g, const float *u, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 x = _mm512_loadu_ps(g + i);
        const __m512 den = _mm512_add_ps(_mm512_set1_ps(1.0f), exp_clamped(_mm512_sub_ps(_mm512_setzero_ps(), x)));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(x, den), _mm512_loadu_ps(u + i)));
    }
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        const __m512 x = _mm512_maskz_loadu_ps(m, g + i);
        const __m512 den = _mm512_add_ps(_mm512_set1_ps(1.0f), exp_clamped(_mm512_sub_ps(_mm512_setzero_ps(), x)));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(_mm512_div_ps(x, den), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

hr_vec_dot_fn hr_avx512_vec_dot(uint32_t type)
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
    case HR_TYPE_Q4_K: return vd_q4_k;
    case HR_TYPE_Q5_K: return vd_q5_k;
    case HR_TYPE_Q6_K: return vd_q6_k;
    default: return NULL;
    }
}

hr_from_float_fn hr_avx512_from_float(uint32_t act_type)
{
    switch (act_type) {
    case HR_TYPE_Q8_0: return ff_q8_0;
    case HR_TYPE_Q8_K: return ff_q8_k;
    case HR_TYPE_F16: return ff_f16;
    default: return NULL;
    }
}

#endif /* HR_CPU_X86 */
