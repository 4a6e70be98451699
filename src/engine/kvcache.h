/* kvcache.h - the paged key/value cache.
 *
 * Memory is one pool of fixed-size blocks allocated up front; each block
 * holds `block_tokens` consecutive positions of one sequence for every
 * layer. A sequence owns a block table (position p lives in block
 * table[p / block_tokens] at row p % block_tokens), so memory grows with the
 * tokens a sequence actually has, never with the maximum context, and no
 * context is divided between slots.
 *
 * Blocks carry a reference count so that the scheduler can later share
 * full prefix blocks between sequences. Only one thread (the scheduler, or
 * the CLI) may call these functions; the engine reads and writes K/V rows
 * through hr_kv_k / hr_kv_v during a forward pass on that same thread. */
#ifndef HR_ENGINE_KVCACHE_H
#define HR_ENGINE_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "model/model.h"

typedef struct hr_kv hr_kv;

typedef struct {
    int32_t n_blocks;     /* blocks in the pool */
    int32_t block_tokens; /* positions per block (e.g. 16) */
    int32_t max_seqs;     /* sequence ids are 0..max_seqs-1 */
} hr_kv_params;

/* Bytes of cache per token for a model (all layers, K and V, float32). */
size_t hr_kv_bytes_per_token(const hr_hparams *hp);

hr_status hr_kv_new(const hr_hparams *hp, const hr_kv_params *p, hr_kv **out, hr_err *err);
void hr_kv_free(hr_kv *kv);

/* Makes room for positions [0, n_tokens) of seq. HR_ERR_LIMIT when the pool
 * has too few free blocks (nothing is allocated then). */
hr_status hr_kv_seq_reserve(hr_kv *kv, int32_t seq, int32_t n_tokens, hr_err *err);
/* Capacity currently reserved for seq (a multiple of block_tokens). */
int32_t hr_kv_seq_capacity(const hr_kv *kv, int32_t seq);
/* Drops positions >= n_tokens, releasing whole blocks past them. */
void hr_kv_seq_truncate(hr_kv *kv, int32_t seq, int32_t n_tokens);
/* Releases every block of seq. */
void hr_kv_seq_clear(hr_kv *kv, int32_t seq);

int32_t hr_kv_max_seqs(const hr_kv *kv);
int32_t hr_kv_block_tokens(const hr_kv *kv);
int32_t hr_kv_blocks_total(const hr_kv *kv);
int32_t hr_kv_blocks_free(const hr_kv *kv);

/* K row (n_head_kv * head_dim floats) and V row (n_head_kv * head_dim_v) of
 * (layer, seq, pos); pos must be within the reserved capacity. */
float *hr_kv_k(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos);
float *hr_kv_v(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos);

#endif
