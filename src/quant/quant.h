/* quant.h - tensor element types (GGML numbering, as stored in GGUF) and
 * their scalar reference implementations.
 *
 * Every weight type has
 *   - to_float: dequantise n elements (n a multiple of the block size);
 *   - vec_dot_type: the activation format its dot product consumes
 *     (F32 for F32, F16 for F16, BF16 for BF16, Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL/MXFP4,
 *     Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants) - the same pairing as
 *     llama.cpp, so results land close to its reference logits;
 *   - vec_dot: the dot product of one weight row with one activation row in
 *     vec_dot_type, accumulated in float.
 * Activation types (F32, F16, BF16, Q8_0, Q8_1, Q8_K) also have from_float.
 *
 * These scalar functions are the test oracle for the SIMD kernels (src/cpu/).
 * They are pure: no allocation, no locks, no global state. */
#ifndef HR_QUANT_QUANT_H
#define HR_QUANT_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    HR_TYPE_F32 = 0,
    HR_TYPE_F16 = 1,
    HR_TYPE_Q4_0 = 2,
    HR_TYPE_Q4_1 = 3,
    HR_TYPE_Q5_0 = 6,
    HR_TYPE_Q5_1 = 7,
    HR_TYPE_Q8_0 = 8,
    HR_TYPE_Q8_1 = 9,
    HR_TYPE_Q2_K = 10,
    HR_TYPE_Q3_K = 11,
    HR_TYPE_Q4_K = 12,
    HR_TYPE_Q5_K = 13,
    HR_TYPE_Q6_K = 14,
    HR_TYPE_Q8_K = 15,
    HR_TYPE_IQ4_NL = 20,
    HR_TYPE_BF16 = 30,
    HR_TYPE_MXFP4 = 39, /* E8M0 scale + 32 E2M1 codes (gpt-oss experts) */
    HR_TYPE_COUNT = 42 /* ids below this may be named even if unsupported */
} hr_type;

typedef void (*hr_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*hr_from_float_fn)(const float *src, void *dst, int64_t n);
/* *s = dot(w[0..n), a[0..n)); w in the weight type, a in vec_dot_type. */
typedef void (*hr_vec_dot_fn)(int64_t n, float *s, const void *w, const void *a);

typedef struct {
    const char *name;         /* "Q4_K"; NULL for ids GGML never defined */
    int64_t block_size;       /* elements per block */
    size_t type_size;         /* bytes per block */
    bool supported;           /* hearth can compute with it */
    hr_type vec_dot_type;     /* activation format for vec_dot */
    hr_to_float_fn to_float;  /* NULL if unsupported */
    hr_from_float_fn from_float; /* activation types only, else NULL */
    hr_vec_dot_fn vec_dot;    /* NULL if unsupported */
} hr_type_traits;

/* Traits of a GGML type id, or NULL when id is not a known GGML type. */
const hr_type_traits *hr_type_get(uint32_t id);

/* "Q4_K", or "type-<id>" for ids GGML never defined. Never NULL. */
const char *hr_type_name(uint32_t id);

/* Bytes of a row of n elements; 0 if n is not a multiple of the block size
 * or the type is unknown. */
size_t hr_row_size(uint32_t id, int64_t n);

/* Quantise n floats (a multiple of the block size) into a weight type with a
 * simple round-to-nearest quantiser (for writing test/synthetic files, not
 * for serving). Types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4 (MXFP4: llama.cpp's quantiser, byte
 * for byte). Returns false (writing nothing) for other types or a bad n. dst
 * holds hr_row_size(type, n) bytes. */
bool hr_quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

#endif
