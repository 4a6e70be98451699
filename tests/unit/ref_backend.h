/* ref_backend.h - a second, deliberately simple backend behind
 * src/backend/backend.h, for the tests only (test_backend_ref).
 *
 * Every operation is a plain loop written from the formulas in the headers
 * (model.h, backend.h), sharing no code with src/cpu/ or src/backend/cpu.c:
 * weights are dequantised once at upload with src/quant's scalar to_float,
 * dot products and reductions are accumulated in double, attention is a
 * two-pass softmax over the visible positions read through hr_kv_k /
 * hr_kv_v, RoPE angles come straight from hr_rope_cfg's formula.
 *
 * Its memory is not host memory the engine could touch: alloc returns an
 * address in a reserved PROT_NONE range (a stand-in for a device address
 * space), so any dereference outside the backend faults; the bytes live in a
 * separate allocation with canaries either side. Every operation translates
 * and bounds-checks each pointer it is given (live allocation, whole extent
 * inside it); read / write are the only copies between the two. A misuse
 * (host pointer where backend memory is due, out-of-range extent, released
 * memory, an expert id out of range) skips the operation and is reported by
 * check (HR_ERR_INVALID) and counted. After a failure (misuse or out of
 * memory) every operation is skipped until check reports it: the forward is
 * void, and garbage (expert ids a skipped route never wrote) is not read. */
#ifndef HR_TESTS_REF_BACKEND_H
#define HR_TESTS_REF_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/backend.h"

typedef struct {
    /* Round each matmul input row through the weight type's dot-product
     * partner (quant.h vec_dot_type: Q8_0, Q8_K, F16, ...) as the CPU
     * backend and llama.cpp do, then multiply exactly. false: exact
     * products of the dequantised weights with the float activations. */
    bool quantize_acts;
} ref_backend_opts;

hr_status ref_backend_new(const ref_backend_opts *o, hr_backend **out, hr_err *err);

typedef struct {
    size_t live_allocs;   /* alloc'd and not released */
    size_t live_weights;  /* uploaded and not freed */
    size_t misuses;       /* since creation */
    size_t canary_breaks; /* allocations found with a damaged canary at release */
    size_t faults;        /* allocations failed by ref_backend_fail_alloc */
    bool saw_quantized;   /* a weight with vec_dot_type != F32 was uploaded */
} ref_backend_stats;

void ref_backend_get_stats(hr_backend *b, ref_backend_stats *s);

/* Fault injection: the n-th allocation from now (alloc, upload, an op's
 * scratch; n >= 1) fails; 0 disarms. */
void ref_backend_fail_alloc(hr_backend *b, long n);

#endif
