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

#include <stdbool.h>
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

/* ---- repacked weights (GEMM micro-kernels) ----
 *
 * On the avx512 path the 32-element block types (Q8_0, Q4_0, Q5_0, IQ4_NL)
 * have an interleaved layout (src/cpu/pack.h) that one kernel uses for a
 * token tile of 1..8: 16 rows x T tokens per call, one weight load serving
 * T tokens. Every output is computed with the scalar reference's integer
 * block sums and float operations in its order, so hr_matmul_packed is
 * bit-identical to src/quant's vec_dot, for any batch and thread count.
 *
 * hr_matmul_packed_bytes: bytes of the packed copy for the path in use (the
 * same as the original rows, rounded up to 16 rows), 0 when there is none
 * (other types, other paths): then use hr_matmul on the original. */
size_t hr_matmul_packed_bytes(uint32_t wtype, int64_t K, int64_t N);

/* Writes the packed copy of W to dst (hr_matmul_packed_bytes bytes, any
 * alignment; 64 is best). pool may be NULL. */
void hr_matmul_pack(hr_pool *pool, const void *w, uint32_t wtype, size_t w_row_bytes, int64_t K, int64_t N,
                    void *dst);

/* As hr_matmul, on a packed copy. act_scratch needs
 * hr_matmul_scratch_bytes(wtype, K, n_tok). The packed copy must have been
 * made on a path that has one (the host keeps it). */
void hr_matmul_packed(hr_pool *pool, const void *packed, uint32_t wtype, int64_t K, int64_t N, const float *x,
                      int32_t n_tok, float *y, void *act_scratch);

/* Several packed matrices of one type and K applied to the same x (Q/K/V,
 * gate/up): the activations are quantised once and all rows share one pool
 * run. Each y[i] gets exactly what hr_matmul_packed would write. At most 3. */
void hr_matmul_packed_multi(hr_pool *pool, int n_mats, const void *const *packed, const int64_t *N, float *const *y,
                            uint32_t wtype, int64_t K, const float *x, int32_t n_tok, void *act_scratch);

/* ---- expert matmul (mixture-of-experts, "mul_mat_id") ----
 *
 * W is a 3-D tensor of n_expert matrices, each N rows of K elements of wtype;
 * expert e's row r is at w + e*expert_bytes + r*w_row_bytes. For n_tok tokens
 * with n_used slots each, ids[t*n_used + s] names the expert of slot s of
 * token t (0..n_expert-1; -1 = no expert: that output row is left untouched;
 * any other value out of range is treated as -1). Input rows: when x_per_slot
 * is false, x row t (K floats at x + t*K) serves every slot of token t; when
 * true, slot (t, s) reads x + (t*n_used + s)*K. Output: slot (t, s) writes N
 * floats at y + (t*n_used + s)*N. Every output row is bit-identical to
 * hr_matmul of that expert's matrix on that input row (the same vec_dot on
 * the same quantised activation row), whatever the batch, the grouping and
 * the threads. Work is grouped by expert so each chosen expert's rows are
 * read once per call for all the tokens that chose it; experts nobody chose
 * are never touched, nor are input rows no slot uses. pool may be NULL. Not
 * reentrant on one pool.
 *
 * scratch needs hr_matmul_id_scratch_bytes(wtype, K, n_tok, n_used,
 * n_expert) bytes, any alignment (activation rows for every slot, whichever
 * x_per_slot, plus the per-expert lists; enough for hr_matmul_id_packed
 * too). 0 for unsupported types or bad counts; then hr_matmul_id does
 * nothing. */
size_t hr_matmul_id_scratch_bytes(uint32_t wtype, int64_t K, int32_t n_tok, int32_t n_used, int32_t n_expert);
void hr_matmul_id(hr_pool *pool, const void *w, uint32_t wtype, size_t w_row_bytes, size_t expert_bytes,
                  int64_t K, int64_t N, int32_t n_expert, const float *x, bool x_per_slot, int32_t n_tok,
                  int32_t n_used, const int32_t *ids, float *y, void *scratch);

/* As hr_matmul_id, on packed experts: expert e's packed copy (hr_matmul_pack
 * of its N x K matrix, hr_matmul_packed_bytes(wtype, K, N) bytes) starts at
 * packed + e*packed_expert_bytes. Every output row is bit-identical to
 * hr_matmul_packed of that expert on that input row. Only where
 * hr_matmul_packed_bytes(wtype, K, N) > 0 (the avx512 path; otherwise it
 * does nothing: use hr_matmul_id). scratch: hr_matmul_id_scratch_bytes. */
void hr_matmul_id_packed(hr_pool *pool, const void *packed, uint32_t wtype, size_t packed_expert_bytes, int64_t K,
                         int64_t N, int32_t n_expert, const float *x, bool x_per_slot, int32_t n_tok, int32_t n_used,
                         const int32_t *ids, float *y, void *scratch);

#endif
