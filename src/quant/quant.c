/* quant.c - type table, names, row sizes, the float types and the weight
 * quantiser dispatch. See quant_legacy.c (32-element block types) and
 * quant_k.c (256-element super-block types). */
#include "quant/quant_impl.h"

#include <stdio.h>

/* ---- F32 ---- */

void hr_f32_to_float(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void hr_f32_quantize(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

/* The float dot products accumulate in double, then round once: that is the
 * GGML scalar reference's definition and the most accurate oracle. */
void hr_f32_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const unsigned char *pw = w, *pa = a;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) {
        float x, y;
        memcpy(&x, pw + i * 4, 4);
        memcpy(&y, pa + i * 4, 4);
        acc += (double)(x * y);
    }
    *s = (float)acc;
}

/* ---- F16 ---- */

static hr_f16 load_u16(const unsigned char *p)
{
    hr_f16 h;
    memcpy(&h, p, 2);
    return h;
}

void hr_f16_to_float(const void *src, float *dst, int64_t n)
{
    const unsigned char *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = hr_f16_to_f32(load_u16(p + 2 * i));
}

void hr_f16_quantize(const float *src, void *dst, int64_t n)
{
    unsigned char *p = dst;
    for (int64_t i = 0; i < n; i++) {
        hr_f16 h = hr_f32_to_f16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

void hr_f16_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const unsigned char *pw = w, *pa = a;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++)
        acc += (double)(hr_f16_to_f32(load_u16(pw + 2 * i)) * hr_f16_to_f32(load_u16(pa + 2 * i)));
    *s = (float)acc;
}

/* ---- BF16 ---- */

void hr_bf16_to_float(const void *src, float *dst, int64_t n)
{
    const unsigned char *p = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = hr_bf16_to_f32(load_u16(p + 2 * i));
}

void hr_bf16_quantize(const float *src, void *dst, int64_t n)
{
    unsigned char *p = dst;
    for (int64_t i = 0; i < n; i++) {
        hr_bf16 h = hr_f32_to_bf16(src[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}

void hr_bf16_vec_dot(int64_t n, float *s, const void *w, const void *a)
{
    const unsigned char *pw = w, *pa = a;
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++)
        acc += (double)(hr_bf16_to_f32(load_u16(pw + 2 * i)) * hr_bf16_to_f32(load_u16(pa + 2 * i)));
    *s = (float)acc;
}

/* ---- the table ---- */

#define UNSUP(nm, bs, ts) { nm, bs, ts, false, HR_TYPE_F32, NULL, NULL, NULL }

static const hr_type_traits type_table[HR_TYPE_COUNT] = {
    [HR_TYPE_F32] = { "F32", 1, 4, true, HR_TYPE_F32,
                      hr_f32_to_float, hr_f32_quantize, hr_f32_vec_dot },
    [HR_TYPE_F16] = { "F16", 1, 2, true, HR_TYPE_F16,
                      hr_f16_to_float, hr_f16_quantize, hr_f16_vec_dot },
    [HR_TYPE_Q4_0] = { "Q4_0", 32, sizeof(hr_block_q4_0), true, HR_TYPE_Q8_0,
                       hr_q4_0_to_float, NULL, hr_q4_0_vec_dot },
    [HR_TYPE_Q4_1] = { "Q4_1", 32, sizeof(hr_block_q4_1), true, HR_TYPE_Q8_1,
                       hr_q4_1_to_float, NULL, hr_q4_1_vec_dot },
    [HR_TYPE_Q5_0] = { "Q5_0", 32, sizeof(hr_block_q5_0), true, HR_TYPE_Q8_0,
                       hr_q5_0_to_float, NULL, hr_q5_0_vec_dot },
    [HR_TYPE_Q5_1] = { "Q5_1", 32, sizeof(hr_block_q5_1), true, HR_TYPE_Q8_1,
                       hr_q5_1_to_float, NULL, hr_q5_1_vec_dot },
    [HR_TYPE_Q8_0] = { "Q8_0", 32, sizeof(hr_block_q8_0), true, HR_TYPE_Q8_0,
                       hr_q8_0_to_float, hr_q8_0_from_float, hr_q8_0_vec_dot },
    /* Q8_1 and Q8_K are activation formats: no vec_dot of their own. */
    [HR_TYPE_Q8_1] = { "Q8_1", 32, sizeof(hr_block_q8_1), true, HR_TYPE_Q8_1,
                       hr_q8_1_to_float, hr_q8_1_from_float, NULL },
    [HR_TYPE_Q2_K] = { "Q2_K", 256, sizeof(hr_block_q2_k), true, HR_TYPE_Q8_K,
                       hr_q2_k_to_float, NULL, hr_q2_k_vec_dot },
    [HR_TYPE_Q3_K] = { "Q3_K", 256, sizeof(hr_block_q3_k), true, HR_TYPE_Q8_K,
                       hr_q3_k_to_float, NULL, hr_q3_k_vec_dot },
    [HR_TYPE_Q4_K] = { "Q4_K", 256, sizeof(hr_block_q4_k), true, HR_TYPE_Q8_K,
                       hr_q4_k_to_float, NULL, hr_q4_k_vec_dot },
    [HR_TYPE_Q5_K] = { "Q5_K", 256, sizeof(hr_block_q5_k), true, HR_TYPE_Q8_K,
                       hr_q5_k_to_float, NULL, hr_q5_k_vec_dot },
    [HR_TYPE_Q6_K] = { "Q6_K", 256, sizeof(hr_block_q6_k), true, HR_TYPE_Q8_K,
                       hr_q6_k_to_float, NULL, hr_q6_k_vec_dot },
    [HR_TYPE_Q8_K] = { "Q8_K", 256, sizeof(hr_block_q8_k), true, HR_TYPE_Q8_K,
                       hr_q8_k_to_float, hr_q8_k_from_float, NULL },
    [16] = UNSUP("IQ2_XXS", 256, 66),
    [17] = UNSUP("IQ2_XS", 256, 74),
    [18] = UNSUP("IQ3_XXS", 256, 98),
    [19] = UNSUP("IQ1_S", 256, 50),
    [HR_TYPE_IQ4_NL] = { "IQ4_NL", 32, sizeof(hr_block_iq4_nl), true, HR_TYPE_Q8_0,
                         hr_iq4_nl_to_float, NULL, hr_iq4_nl_vec_dot },
    [21] = UNSUP("IQ3_S", 256, 110),
    [22] = UNSUP("IQ2_S", 256, 82),
    [23] = UNSUP("IQ4_XS", 256, 136),
    [24] = UNSUP("I8", 1, 1),
    [25] = UNSUP("I16", 1, 2),
    [26] = UNSUP("I32", 1, 4),
    [27] = UNSUP("I64", 1, 8),
    [28] = UNSUP("F64", 1, 8),
    [29] = UNSUP("IQ1_M", 256, 56),
    [HR_TYPE_BF16] = { "BF16", 1, 2, true, HR_TYPE_BF16,
                       hr_bf16_to_float, hr_bf16_quantize, hr_bf16_vec_dot },
    /* 31-33 and 36-38: interleaved (repacked) layouts GGML has since removed
     * from GGUF files; sizes as they were written (Q4_0/IQ4_NL blocks). */
    [31] = UNSUP("Q4_0_4_4", 32, 18),
    [32] = UNSUP("Q4_0_4_8", 32, 18),
    [33] = UNSUP("Q4_0_8_8", 32, 18),
    [34] = UNSUP("TQ1_0", 256, 54),
    [35] = UNSUP("TQ2_0", 256, 66),
    [36] = UNSUP("IQ4_NL_4_4", 32, 18),
    [37] = UNSUP("IQ4_NL_4_8", 32, 18),
    [38] = UNSUP("IQ4_NL_8_8", 32, 18),
    [HR_TYPE_MXFP4] = { "MXFP4", 32, sizeof(hr_block_mxfp4), true, HR_TYPE_Q8_0,
                        hr_mxfp4_to_float, NULL, hr_mxfp4_vec_dot },
    [40] = UNSUP("NVFP4", 64, 36),
    [41] = UNSUP("Q1_0", 128, 18),
    /* 4 and 5 (Q4_2, Q4_3) were never stored in GGUF: left empty. */
};

const hr_type_traits *hr_type_get(uint32_t id)
{
    if (id >= HR_TYPE_COUNT || type_table[id].name == NULL)
        return NULL;
    return &type_table[id];
}

const char *hr_type_name(uint32_t id)
{
    const hr_type_traits *t = hr_type_get(id);
    if (t)
        return t->name;
    /* Unknown id: a per-thread rotating buffer, so a few names can appear in
     * one printf. The only mutable state in this module. */
    static _Thread_local char bufs[4][24];
    static _Thread_local unsigned slot;
    char *b = bufs[slot++ & 3];
    snprintf(b, sizeof bufs[0], "type-%lu", (unsigned long)id);
    return b;
}

size_t hr_row_size(uint32_t id, int64_t n)
{
    const hr_type_traits *t = hr_type_get(id);
    if (!t || t->block_size <= 0 || n < 0 || n % t->block_size != 0)
        return 0;
    uint64_t blocks = (uint64_t)(n / t->block_size);
    if (blocks > SIZE_MAX / t->type_size)
        return 0;
    return (size_t)blocks * t->type_size;
}

bool hr_quantize_row(uint32_t type, const float *src, void *dst, int64_t n)
{
    const hr_type_traits *t = hr_type_get(type);
    if (!t || !t->supported || !src || !dst || n < 0 || n % t->block_size != 0)
        return false;
    switch (type) {
    case HR_TYPE_F32: hr_f32_quantize(src, dst, n); return true;
    case HR_TYPE_F16: hr_f16_quantize(src, dst, n); return true;
    case HR_TYPE_BF16: hr_bf16_quantize(src, dst, n); return true;
    case HR_TYPE_Q4_0: hr_q4_0_quantize(src, dst, n); return true;
    case HR_TYPE_Q4_1: hr_q4_1_quantize(src, dst, n); return true;
    case HR_TYPE_Q5_0: hr_q5_0_quantize(src, dst, n); return true;
    case HR_TYPE_Q5_1: hr_q5_1_quantize(src, dst, n); return true;
    case HR_TYPE_Q8_0: hr_q8_0_quantize(src, dst, n); return true;
    case HR_TYPE_IQ4_NL: hr_iq4_nl_quantize(src, dst, n); return true;
    case HR_TYPE_MXFP4: hr_mxfp4_quantize(src, dst, n); return true;
    case HR_TYPE_Q2_K: hr_q2_k_quantize(src, dst, n); return true;
    case HR_TYPE_Q3_K: hr_q3_k_quantize(src, dst, n); return true;
    case HR_TYPE_Q4_K: hr_q4_k_quantize(src, dst, n); return true;
    case HR_TYPE_Q5_K: hr_q5_k_quantize(src, dst, n); return true;
    case HR_TYPE_Q6_K: hr_q6_k_quantize(src, dst, n); return true;
    default: return false; /* Q8_1, Q8_K: activation-only */
    }
}
