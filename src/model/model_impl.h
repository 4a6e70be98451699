/* model_impl.h - the model's internals, shared with the engine only. */
#ifndef HR_MODEL_MODEL_IMPL_H
#define HR_MODEL_MODEL_IMPL_H

#include "model/model.h"

/* A 2-D weight matrix view into the mapping: ne0 = columns (input size),
 * ne1 = rows (output size); rows are hr_row_size(type, ne0) bytes apart. */
typedef struct {
    const void *data;
    uint32_t type;
    int64_t ne0, ne1;
    size_t row_bytes;
} hr_weight;

typedef struct {
    const float *attn_norm;        /* (n_embd) */
    hr_weight wq, wk, wv, wo;      /* (n_embd -> n_head*head_dim), ..., (n_head*head_dim_v -> n_embd) */
    const float *bq, *bk, *bv;     /* optional biases (qwen2) */
    const float *q_norm, *k_norm;  /* optional per-head norms (head_dim) (qwen3) */
    const float *ffn_norm;         /* (n_embd) */
    hr_weight ffn_gate, ffn_up;    /* (n_embd -> n_ff) */
    hr_weight ffn_down;            /* (n_ff -> n_embd) */
} hr_layer_weights;

struct hr_model {
    hr_gguf *gguf;
    struct hr_vocab *vocab;
    hr_hparams hp;
    hr_weight tok_embd;            /* (n_embd x n_vocab): row i = embedding of token i */
    hr_weight output;              /* (n_embd -> n_vocab); == tok_embd when tied */
    const float *output_norm;      /* (n_embd) */
    const float *rope_freqs;       /* (rope_dim/2) or NULL */
    hr_layer_weights *layers;      /* (n_layer) */
    float *f32_arena;              /* owns every float copy above */
};

#endif
