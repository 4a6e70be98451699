/* engine.h - the forward pass over a batch of tokens from many sequences.
 *
 * A batch is a list of (token, position, sequence id) triples; tokens of
 * different sequences may be mixed freely and a sequence may contribute
 * several consecutive positions (prefill) or one (decode). K/V rows are
 * written to the paged cache at (seq, pos) and each token attends to
 * positions 0..pos of its own sequence, so the caller decides what a
 * sequence's history is by what it has written. The engine owns only
 * scratch buffers; the caller owns the model and the KV cache, and calls
 * from one thread. */
#ifndef HR_ENGINE_ENGINE_H
#define HR_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/kvcache.h"
#include "model/model.h"

typedef struct hr_engine hr_engine;
struct hr_backend;

typedef struct {
    int32_t max_batch;  /* tokens processed per internal step (larger batches are split) */
    int32_t n_threads;  /* compute threads (>= 1) */
    int32_t n_ctx;      /* the context the caller serves (chooses LongRoPE factors); 0 = the training context */
    struct hr_backend *backend; /* where to run (not owned; must outlive the engine); NULL = a CPU backend
                                 * of n_threads, owned by the engine */
} hr_engine_params;

typedef struct {
    int32_t n_tokens;
    const int32_t *token;  /* (n_tokens) */
    const int32_t *pos;    /* (n_tokens) */
    const int32_t *seq;    /* (n_tokens) */
    const bool *logits;    /* (n_tokens) whether to output logits; NULL = every token */
} hr_batch;

hr_status hr_engine_new(const hr_model *m, const hr_engine_params *p, hr_engine **out, hr_err *err);
void hr_engine_free(hr_engine *e);

/* Runs the batch. `logits` receives n_vocab floats for each token that asked
 * for them, in batch order. The KV rows for every (seq, pos) are reserved
 * here (HR_ERR_LIMIT if the cache is full: then nothing was computed).
 * On failure no logits are valid and K/V rows of the batch may be partly
 * written (rows at positions the caller does not count as computed yet);
 * hr_engine_failed_seq says whom the failure concerns. */
hr_status hr_engine_forward(hr_engine *e, hr_kv *kv, const hr_batch *b, float *logits, hr_err *err);

/* The engine's compute pool (NULL when single-threaded), for the caller's
 * own parallel work between forwards (hr_pool_run from the calling thread). */
struct hr_pool *hr_engine_pool(const hr_engine *e);

/* Bytes the backend holds for weights beyond the file mapping (repacked
 * copies). */
size_t hr_engine_weight_bytes(const hr_engine *e);

/* After a failed hr_engine_forward: the sequence id the failure concerns
 * (a bad token, position or sequence id, its KV rows not fitting), or -1
 * when it concerns the whole batch (out of memory). The other sequences'
 * tokens may be submitted again. */
int32_t hr_engine_failed_seq(const hr_engine *e);

/* Test hook (fault injection): when set, fn runs at the start of every
 * hr_engine_forward of every engine in the process; a non-zero status it
 * returns fails that forward with its status and message, before anything
 * is computed, and *seq (preset to -1) names the sequence it concerns as
 * hr_engine_failed_seq reports it. NULL clears it. Not for production. */
typedef hr_status (*hr_engine_fault_fn)(void *ctx, const hr_batch *b, int32_t *seq, hr_err *err);
void hr_engine_set_fault(hr_engine_fault_fn fn, void *ctx);

#endif
