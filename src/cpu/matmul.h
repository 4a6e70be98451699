/* matmul.h - y = W x for a batch of tokens, on the SIMD kernels and a pool.
 *
 * W is N rows of K elements of GGML type wtype, row r at w + r*w_row_bytes.
 * x is n_tok rows of K floats (row t at x + t*K); y is n_tok rows of N floats
 * (y[t*N + r] = dot(W row r, x row t)).
 *
 * Every output is exactly one call of the selected vec_dot on the same
 * quantised activation row, so results are bit-identical whatever the thread
 * count and however tokens are batched ("same output alone or in a batch").
 * They depend on the ISA path (hr_cpu_isa()) only for the float types and
 * the 32-element block types, by float rounding. */
#ifndef HR_CPU_MATMUL_H
#define HR_CPU_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/pool.h"

/* Bytes of act_scratch hr_matmul needs: n_tok rows of K elements in the
 * weight type's vec_dot_type (0 for F32 weights, which read x directly, and
 * for unsupported types). At most n_tok * (K*4 + 64): the engine's existing
 * act buffer is large enough. */
size_t hr_matmul_scratch_bytes(uint32_t wtype, int64_t K, int32_t n_tok);

/* pool may be NULL (single thread). act_scratch needs
 * hr_matmul_scratch_bytes(wtype, K, n_tok) bytes, any alignment. K must be a
 * multiple of wtype's block size and wtype supported (the model loader checks;
 * otherwise hr_matmul does nothing). Not reentrant on one pool. */
void hr_matmul(hr_pool *pool, const void *w, uint32_t wtype, size_t w_row_bytes, int64_t K, int64_t N,
               const float *x, int32_t n_tok, float *y, void *act_scratch);

#endif
