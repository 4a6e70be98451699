/* model_impl.h - the model's internals, shared with the architecture loaders
 * (src/model/arch_*.c) and the engine only. */
#ifndef HR_MODEL_MODEL_IMPL_H
#define HR_MODEL_MODEL_IMPL_H

#include "model/model.h"

/* A 2-D weight matrix view into the mapping: ne0 = columns (input size),
 * ne1 = rows (output size); rows are hr_row_size(type, ne0) bytes apart. A
 * 3-D expert tensor is n_expert such matrices, expert_bytes apart. A view
 * may be a range of rows of a fused tensor (attn_qkv, gate+up). */
typedef struct {
    const void *data;
    uint32_t type;
    int64_t ne0, ne1;
    size_t row_bytes;
    int32_t n_expert;    /* 0 for a plain matrix */
    size_t expert_bytes; /* 3-D: bytes between experts */
} hr_weight;

typedef struct {
    const float *attn_norm;        /* (n_embd) */
    hr_weight wq, wk, wv, wo;      /* (n_embd -> n_head*head_dim), ..., (n_head*head_dim_v -> n_embd) */
    const float *bq, *bk, *bv, *bo; /* optional biases */
    const float *q_norm, *k_norm;  /* HR_QKNORM_RMS: per-head norms (head_dim) */
    const float *sinks;            /* (n_head) when the layer has sinks */
    const float *post_attn_norm;   /* sandwich norm of the attention output (n_embd) */
    const float *ffn_norm;         /* (n_embd) */
    /* dense FFN */
    hr_weight ffn_gate, ffn_up;    /* (n_embd -> n_ff) */
    hr_weight ffn_down;            /* (n_ff -> n_embd) */
    const float *post_ffn_norm;    /* sandwich norm of the FFN output (n_embd) */
    /* MoE */
    hr_weight router;              /* (n_embd -> n_expert) */
    const float *router_bias;      /* (n_expert) */
    hr_weight gate_exps, up_exps;  /* n_expert x (n_embd -> n_ff) */
    hr_weight down_exps;           /* n_expert x (n_ff -> n_embd) */
    const float *gate_exps_b, *up_exps_b, *down_exps_b; /* (n_expert, rows) */
    hr_weight gate_shexp, up_shexp, down_shexp;       /* shared expert */
} hr_layer_weights;

struct hr_model {
    hr_gguf *gguf;
    struct hr_vocab *vocab;
    hr_hparams hp;
    hr_layer_desc *desc;           /* (n_layer), hp.layer points here */
    hr_weight tok_embd;            /* (n_embd x n_vocab): row i = embedding of token i */
    hr_weight output;              /* (n_embd -> n_vocab); == tok_embd when tied */
    const float *output_norm;      /* (n_embd) */
    const float *rope_freqs;       /* (rope_dim/2) frequency divisors, or NULL */
    const float *rope_freqs_long;  /* LongRoPE: the factors used past the original context, or NULL */
    int32_t rope_long_ctx;         /* LongRoPE: contexts above this use rope_freqs_long */
    hr_layer_weights *layers;      /* (n_layer) */
    struct hr_arena_chunk *arena;  /* owns every float copy above */
};

/* ---- what an architecture loader (src/model/arch_*.c) works with ---- */

typedef struct hr_loader hr_loader;

/* An architecture family: its GGUF name(s) and the function that fills the
 * hyperparameters, the layer descriptors and the layer weights. Common
 * values (sizes, norms eps, RoPE base, token embedding, output) are already
 * read when fill() runs; fill() reads what its family adds. */
typedef struct {
    const char *name;
    hr_status (*fill)(hr_loader *l, hr_model *m);
} hr_arch_family;

/* Metadata "<arch>.<key>": optional unless required; range-checked. */
hr_status hr_ld_int(hr_loader *l, const char *key, int32_t *out, bool required, int32_t min, int32_t max);
hr_status hr_ld_float(hr_loader *l, const char *key, float *out, bool required);
bool hr_ld_has(hr_loader *l, const char *key);
/* Reads the rope.scaling.* keys into cfg (linear or YaRN; "none" leaves it). */
hr_status hr_ld_rope_scaling(hr_loader *l, hr_rope_cfg *cfg);

bool hr_ld_has_tensor(hr_loader *l, const char *name);
/* Binds a 2-D weight of shape (ne0, ne1). Absent and optional: w->data stays NULL. */
hr_status hr_ld_matrix(hr_loader *l, hr_weight *w, const char *name, int64_t ne0, int64_t ne1, bool required);
/* Binds rows [row0, row0 + rows) of a 2-D weight of shape (ne0, total_rows). */
hr_status hr_ld_matrix_rows(hr_loader *l, hr_weight *w, const char *name, int64_t ne0, int64_t total_rows,
                            int64_t row0, int64_t rows);
/* Binds a 3-D expert tensor of shape (ne0, ne1, n_expert). */
hr_status hr_ld_experts(hr_loader *l, hr_weight *w, const char *name, int64_t ne0, int64_t ne1, int32_t n_expert,
                        bool required);
/* A float copy of a tensor of n0 x n1 elements (n1 = 1: 1-D); NULL if absent and optional. */
hr_status hr_ld_floats(hr_loader *l, const float **out, const char *name, int64_t n0, int64_t n1, bool required);
/* Sets the error (format) and returns its status. */
hr_status hr_ld_fail(hr_loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Binds the tensors every llama-shaped layer has (attn_norm, attn_q/k/v or
 * a fused attn_qkv, attn_output, optional q/k/v/output biases, the q/k norms
 * when desc says so, the pre-FFN norm named ffn_norm (NULL:
 * "ffn_norm.weight")) with the layer's sizes from m->desc[il]; dense_ffn:
 * also ffn_gate/up/down (or a fused gate+up ffn_up). */
hr_status hr_ld_llama_layer(hr_loader *l, hr_model *m, int32_t il, bool dense_ffn, const char *ffn_norm);
/* Reads expert_count, expert_used_count (into m->hp) and
 * expert_feed_forward_length (into *n_ff_exp), all required. */
hr_status hr_ld_moe_counts(hr_loader *l, hr_model *m, int32_t *n_ff_exp);
/* Binds an MoE FFN (router, 3-D experts, optional biases / shared expert). */
hr_status hr_ld_moe_layer(hr_loader *l, hr_model *m, int32_t il, bool biases, bool shared);

/* The families (src/model/arch_*.c). */
extern const hr_arch_family hr_arch_llama, hr_arch_qwen2, hr_arch_qwen3, hr_arch_qwen3moe,
    hr_arch_gptoss, hr_arch_gemma3, hr_arch_phi3, hr_arch_llama4;

#endif
