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

typedef struct {
    int32_t max_batch;  /* tokens processed per internal step (larger batches are split) */
    int32_t n_threads;  /* compute threads (>= 1) */
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
 * here (HR_ERR_LIMIT if the cache is full: then nothing was computed). */
hr_status hr_engine_forward(hr_engine *e, hr_kv *kv, const hr_batch *b, float *logits, hr_err *err);

#endif
