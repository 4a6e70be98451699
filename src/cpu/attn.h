/* attn.h - attention over a paged KV cache, streaming.
 *
 * hr_attn computes, for the `group` query heads that share one KV head,
 *   out[g] = sum_p softmax_p(scale * q[g] . k[p]) v[p]   over p = 0..n_pos-1
 * with an online softmax over tiles of at most 16 positions: no buffer that
 * grows with the context, each K/V row read once for the whole group.
 * Positions live in blocks of block_tokens consecutive rows (the paged KV
 * cache): k[b] points at the first K row of block b for this KV head, rows
 * k_stride floats apart (likewise v). Tiles never cross a block, so the
 * arithmetic of an output depends only on its own sequence's positions and
 * the block size: bit-identical whatever the batch or the thread count. The
 * path (avx512 or the portable C version) changes results by roundings. */
#ifndef HR_CPU_ATTN_H
#define HR_CPU_ATTN_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const float *const *k; /* per block */
    const float *const *v;
    int32_t block_tokens;
    size_t k_stride, v_stride;
} hr_attn_kv;

/* Queries of one sequence against one KV head: n_tok tokens, token t with
 * `group` heads at q + t*q_stride + g*d attending positions 0..n_pos[t]-1,
 * output (group x dv floats) at out + t*out_stride. The arithmetic of a
 * token's output never depends on the other tokens of the call: computing
 * a prompt's tokens together or one at a time gives the same bits. */
typedef void (*hr_attn_fn)(const float *q, size_t q_stride, int32_t n_tok, const int32_t *n_pos, int32_t group,
                           int32_t d, int32_t dv, float scale, const hr_attn_kv *kv, float *out, size_t out_stride);

/* Most tokens one call may take (the engine splits longer runs). */
#define HR_ATTN_MAX_TOKENS 8

/* The kernel for the path in use and these head sizes (never NULL). */
hr_attn_fn hr_cpu_attn(int32_t group, int32_t d, int32_t dv);

/* The portable version (any path, any sizes). */
void hr_attn_ref(const float *q, size_t q_stride, int32_t n_tok, const int32_t *n_pos, int32_t group, int32_t d,
                 int32_t dv, float scale, const hr_attn_kv *kv, float *out, size_t out_stride);

/* The portable version with what some architectures add: token t sees only
 * positions lo[t]..n_pos[t]-1 (a sliding window or an attention chunk; lo
 * NULL: from 0), and sinks (group logits, or NULL) join each head's softmax
 * denominator without a value row. Tiles start at lo[t], so a token's
 * arithmetic still depends only on its own positions. */
void hr_attn_ref_ex(const float *q, size_t q_stride, int32_t n_tok, const int32_t *lo, const int32_t *n_pos,
                    const float *sinks, int32_t group, int32_t d, int32_t dv, float scale, const hr_attn_kv *kv,
                    float *out, size_t out_stride);

#endif
