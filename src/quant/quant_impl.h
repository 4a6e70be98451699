/* quant_impl.h - block layouts and per-type kernels shared by the src/quant sources
 * files. Internal to src/quant/.
 *
 * Every block struct mirrors the on-disk GGUF layout byte for byte (all
 * multi-byte fields little-endian; fp16 scales kept as raw bits). The
 * kernels never dereference a block pointer directly: each block is copied
 * into a local struct with memcpy, so rows at any alignment are fine. */
#ifndef HR_QUANT_QUANT_IMPL_H
#define HR_QUANT_QUANT_IMPL_H

#include "base/half.h"
#include "quant/quant.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Keep a*b+c as two roundings (the GGML reference is not fused); clang
 * would otherwise contract within an expression when FMA is available.
 * GCC in ISO mode (-std=c11) already defaults to -ffp-contract=off. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define HR_QK32 32
#define HR_QK_K 256

/* ---- 32-element blocks ---- */
typedef struct { hr_f16 d; uint8_t qs[16]; } hr_block_q4_0;                  /* (q-8)*d */
typedef struct { hr_f16 d, m; uint8_t qs[16]; } hr_block_q4_1;               /* q*d+m */
typedef struct { hr_f16 d; uint8_t qh[4]; uint8_t qs[16]; } hr_block_q5_0;   /* (q-16)*d */
typedef struct { hr_f16 d, m; uint8_t qh[4]; uint8_t qs[16]; } hr_block_q5_1;/* q*d+m */
typedef struct { hr_f16 d; int8_t qs[32]; } hr_block_q8_0;                   /* q*d */
typedef struct { hr_f16 d, s; int8_t qs[32]; } hr_block_q8_1;                /* s = d*sum(q) */
typedef struct { hr_f16 d; uint8_t qs[16]; } hr_block_iq4_nl;                /* d*table[q] */
typedef struct { uint8_t e; uint8_t qs[16]; } hr_block_mxfp4;                /* fp4[q] * 2^(e-127) */

/* ---- 256-element super-blocks ---- */
typedef struct {
    uint8_t scales[16]; /* per 16: low nibble scale, high nibble min */
    uint8_t qs[64];     /* 2-bit quants */
    hr_f16 d, dmin;
} hr_block_q2_k;
typedef struct {
    uint8_t hmask[32];  /* high bit of the 3-bit quants */
    uint8_t qs[64];     /* low 2 bits */
    uint8_t scales[12]; /* 16 x 6-bit scales, biased by 32 */
    hr_f16 d;
} hr_block_q3_k;
typedef struct {
    hr_f16 d, dmin;
    uint8_t scales[12]; /* 8 x (6-bit scale, 6-bit min) */
    uint8_t qs[128];    /* 4-bit quants */
} hr_block_q4_k;
typedef struct {
    hr_f16 d, dmin;
    uint8_t scales[12];
    uint8_t qh[32];     /* fifth bits */
    uint8_t qs[128];    /* low 4 bits */
} hr_block_q5_k;
typedef struct {
    uint8_t ql[128];    /* low 4 bits */
    uint8_t qh[64];     /* high 2 bits */
    int8_t scales[16];  /* per 16 */
    hr_f16 d;
} hr_block_q6_k;
typedef struct {
    float d;
    int8_t qs[256];
    int16_t bsums[16];  /* sum of each 16 consecutive qs */
} hr_block_q8_k;

_Static_assert(sizeof(hr_block_q4_0) == 18, "q4_0 size");
_Static_assert(sizeof(hr_block_q4_1) == 20, "q4_1 size");
_Static_assert(sizeof(hr_block_q5_0) == 22, "q5_0 size");
_Static_assert(sizeof(hr_block_q5_1) == 24, "q5_1 size");
_Static_assert(sizeof(hr_block_q8_0) == 34, "q8_0 size");
_Static_assert(sizeof(hr_block_q8_1) == 36, "q8_1 size");
_Static_assert(sizeof(hr_block_iq4_nl) == 18, "iq4_nl size");
_Static_assert(sizeof(hr_block_mxfp4) == 17, "mxfp4 size");
_Static_assert(sizeof(hr_block_q2_k) == 84, "q2_k size");
_Static_assert(sizeof(hr_block_q3_k) == 110, "q3_k size");
_Static_assert(sizeof(hr_block_q4_k) == 144, "q4_k size");
_Static_assert(sizeof(hr_block_q5_k) == 176, "q5_k size");
_Static_assert(sizeof(hr_block_q6_k) == 210, "q6_k size");
_Static_assert(sizeof(hr_block_q8_k) == 292, "q8_k size");

/* IQ4_NL's non-linear code book (a property of the format). */
extern const int8_t hr_iq4nl_values[16];

/* MXFP4's FP4 (E2M1) code values, doubled so that they are integers: code
 * c (bit 3 the sign, bits 2..0 the magnitude) is worth table[c] / 2. */
extern const int8_t hr_mxfp4_values[16];

/* Half the value of an E8M0 scale byte: 2^(e - 128), as float (e = 0 and 1
 * give the subnormals 2^-128 and 2^-127; e = 255, NaN in the OCP format, is
 * taken as 2^127 as GGML does). With the doubled code values this is the
 * whole scale: element = hr_mxfp4_values[c] * hr_e8m0_half(e), exactly. */
static inline float hr_e8m0_half(uint8_t e)
{
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest, ties to even (the default FP environment), as int. The
 * caller keeps |x| well inside int range (quantisers clamp first). */
static inline int hr_nearest_int(float x) { return (int)rintf(x); }

static inline float hr_load_f16(hr_f16 h) { return hr_f16_to_f32(h); }

/* Signed value of largest magnitude in x[0..k) (the first one on ties). */
static inline float hr_signed_absmax(const float *x, int k)
{
    float amax = 0.0f, m = 0.0f;
    for (int j = 0; j < k; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            m = x[j];
        }
    return m;
}

/* Unpack the j-th (0..7) 6-bit scale and min of a Q4_K/Q5_K scales array. */
static inline void hr_k4_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *mn)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
        *mn = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* Unpack Q3_K's 16 biased 6-bit scales into signed values (-32..31). */
static inline void hr_k3_scales(const uint8_t *s, int8_t out[16])
{
    for (int i = 0; i < 16; i++) {
        int lo = i < 8 ? (s[i] & 0x0f) : (s[i - 8] >> 4);
        int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
        out[i] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

/* ---- kernels (n a multiple of the block size) ---- */
#define HR_DECL_TYPE(t) \
    void hr_##t##_to_float(const void *src, float *dst, int64_t n); \
    void hr_##t##_vec_dot(int64_t n, float *s, const void *w, const void *a); \
    void hr_##t##_quantize(const float *src, void *dst, int64_t n);

HR_DECL_TYPE(f32)
HR_DECL_TYPE(f16)
HR_DECL_TYPE(bf16)
HR_DECL_TYPE(q4_0)
HR_DECL_TYPE(q4_1)
HR_DECL_TYPE(q5_0)
HR_DECL_TYPE(q5_1)
HR_DECL_TYPE(q8_0)
HR_DECL_TYPE(iq4_nl)
HR_DECL_TYPE(mxfp4)
HR_DECL_TYPE(q2_k)
HR_DECL_TYPE(q3_k)
HR_DECL_TYPE(q4_k)
HR_DECL_TYPE(q5_k)
HR_DECL_TYPE(q6_k)
#undef HR_DECL_TYPE

/* Activation-only formats. */
void hr_q8_1_to_float(const void *src, float *dst, int64_t n);
void hr_q8_1_from_float(const float *src, void *dst, int64_t n);
void hr_q8_k_to_float(const void *src, float *dst, int64_t n);
void hr_q8_k_from_float(const float *src, void *dst, int64_t n);
/* Q8_0 as an activation (amax/127 scale, nearest-even rounding). */
void hr_q8_0_from_float(const float *src, void *dst, int64_t n);

#endif
