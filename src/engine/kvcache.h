/* kvcache.h - the paged key/value cache.
 *
 * Memory is one pool of fixed-size blocks allocated up front; each block
 * holds `block_tokens` consecutive positions of one sequence for every
 * layer. A sequence owns a block table (position p lives in block
 * table[p / block_tokens] at row p % block_tokens), so memory grows with the
 * tokens a sequence actually has, never with the maximum context, and no
 * context is divided between slots.
 *
 * Prefix caching: a full block is identified by a hash of its tokens and of
 * every token before it (a chain over the blocks). Sequences that share a
 * prefix share its full blocks (reference-counted, read-only); a block whose
 * last user lets go keeps its contents and hash on an LRU list, so a later
 * prompt with the same prefix picks it up without recomputing, until the
 * block is needed for something else (least recently released first).
 *
 * Only one thread (the scheduler, or the CLI) may call these functions; the
 * engine reads and writes K/V rows through hr_kv_k / hr_kv_v during a
 * forward pass on that same thread. */
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
 * has too few free blocks (nothing is allocated then). Free blocks include
 * cached ones, which are evicted as needed. */
hr_status hr_kv_seq_reserve(hr_kv *kv, int32_t seq, int32_t n_tokens, hr_err *err);
/* Capacity currently reserved for seq (a multiple of block_tokens). */
int32_t hr_kv_seq_capacity(const hr_kv *kv, int32_t seq);
/* Drops positions >= n_tokens, releasing whole blocks past them. */
void hr_kv_seq_truncate(hr_kv *kv, int32_t seq, int32_t n_tokens);
/* Releases every block of seq. */
void hr_kv_seq_clear(hr_kv *kv, int32_t seq);

/* Blocks seq would need to cover n_tokens positions beyond what it has. */
int32_t hr_kv_seq_blocks_needed(const hr_kv *kv, int32_t seq, int32_t n_tokens);

/* For an empty seq: attaches the cached blocks that hold a prefix of
 * tokens[0, n_tokens), then, where the next cached block agrees with the
 * tokens only for a while, copies it into a private block and keeps the
 * agreeing positions. Never all of the tokens: at least one is left to
 * compute. Returns the positions covered (not always a whole block). */
int32_t hr_kv_prefix_attach(hr_kv *kv, int32_t seq, const int32_t *tokens, int32_t n_tokens);
/* The positions hr_kv_prefix_attach would cover now, changing nothing. */
int32_t hr_kv_prefix_probe(const hr_kv *kv, const int32_t *tokens, int32_t n_tokens);

/* Registers seq's blocks that are full within tokens[0, n_tokens) (whose
 * K/V are computed) in the prefix cache. Cheap when nothing is new. */
void hr_kv_prefix_commit(hr_kv *kv, int32_t seq, const int32_t *tokens, int32_t n_tokens);

/* Makes dst (empty) a copy of the first n_tokens positions of src: full
 * blocks are shared, a partial last block is copied. HR_ERR_LIMIT when no
 * block is free for the copy. */
hr_status hr_kv_seq_fork(hr_kv *kv, int32_t src, int32_t dst, int32_t n_tokens, hr_err *err);

/* Drops every cached (unreferenced) block from the prefix cache. */
void hr_kv_prefix_clear(hr_kv *kv);

int32_t hr_kv_max_seqs(const hr_kv *kv);
int32_t hr_kv_block_tokens(const hr_kv *kv);
int32_t hr_kv_blocks_total(const hr_kv *kv);
/* Blocks not referenced by any sequence (including cached ones). */
int32_t hr_kv_blocks_free(const hr_kv *kv);
/* Unreferenced blocks that still hold a reusable prefix. */
int32_t hr_kv_blocks_cached(const hr_kv *kv);
size_t hr_kv_block_bytes(const hr_kv *kv);

/* Floats of one position's K (V) row in layer `layer`. */
size_t hr_kv_k_dim(const hr_kv *kv, int32_t layer);
size_t hr_kv_v_dim(const hr_kv *kv, int32_t layer);

/* K row (n_head_kv * head_dim floats) and V row (n_head_kv * head_dim_v) of
 * (layer, seq, pos); pos must be within the reserved capacity. */
float *hr_kv_k(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos);
float *hr_kv_v(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos);

#endif
