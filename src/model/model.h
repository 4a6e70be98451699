/* model.h - a loaded model: hyperparameters, the per-layer architecture
 * descriptor and weights bound from a GGUF.
 *
 * Loading is O(metadata): the file is mmapped and weight tensors point into
 * the mapping; only 1-D tensors (norm weights, biases, rope factors, sinks)
 * and small F32 bias tables are converted to float copies, since every kernel
 * wants them that way. Everything the forward pass needs is read from
 * metadata by one loader file per architecture family (src/model/arch_*.c):
 * the forward pass (src/engine/) knows no architecture by name, only the
 * descriptor below. */
#ifndef HR_MODEL_MODEL_H
#define HR_MODEL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "gguf/gguf.h"

typedef struct hr_model hr_model;
struct hr_vocab;

typedef enum {
    HR_ROPE_NORM = 0, /* rotate adjacent pairs (x[2i], x[2i+1]) - llama */
    HR_ROPE_NEOX = 2, /* rotate (x[i], x[i + d/2]) - qwen2, qwen3, gemma3, ... */
} hr_rope_style;

/* Which positions a query at position i sees (besides i itself). */
typedef enum {
    HR_ATTN_CAUSAL = 0, /* every j <= i */
    HR_ATTN_WINDOW,     /* sliding window: 0 <= i - j < window */
    HR_ATTN_CHUNKED,    /* j in i's chunk: floor(j / window) == floor(i / window), j <= i */
} hr_attn_span;

typedef enum {
    HR_QKNORM_NONE = 0,
    HR_QKNORM_RMS, /* per-head RMSNorm of Q and K with weights, before RoPE */
    HR_QKNORM_L2,  /* weightless RMSNorm of Q and K after RoPE (llama4) */
} hr_qk_norm;

typedef enum {
    HR_FFN_DENSE = 0, /* down(act(gate x) * up x) */
    HR_FFN_MOE,       /* k of E experts of that shape, optional shared expert */
} hr_ffn_kind;

typedef enum {
    HR_ACT_SILU = 0,     /* silu(g) * u */
    HR_ACT_GELU_TANH,    /* gelu_tanh(g) * u */
    HR_ACT_SWIGLU_CLAMP, /* min(g, L) * sigmoid(a min(g, L)) * (clamp(u, -L, L) + 1) (gpt-oss) */
} hr_act;

typedef enum {
    HR_ROUTE_SOFTMAX_TOPK = 0, /* softmax over all experts, top-k, optionally renormalised */
    HR_ROUTE_TOPK_SOFTMAX,     /* top-k of the logits, softmax over the k chosen */
    HR_ROUTE_SIGMOID_TOPK,     /* top-k of the logits, weight sigmoid(logit), no renormalisation */
} hr_moe_router;

/* One RoPE configuration (a model has 1..HR_MAX_ROPE; layers name theirs).
 * Pair i of position p turns by
 *   theta_e = p * base^(-2i/rope_dim) / factor[i],   theta_i = freq_scale * theta_e,
 *   theta = theta_i (1 - r_i) + theta_e r_i,  r_i = ext_factor * ramp_i (YaRN),
 * and cos/sin are multiplied by mscale = attn_factor (* (1 + 0.1 ln(1/freq_scale)) with YaRN). */
typedef struct {
    float base;
    float freq_scale;  /* 1 / linear (or YaRN) factor */
    float ext_factor;  /* YaRN ramp mix; 0 = plain */
    float attn_factor; /* multiplies cos and sin */
    float beta_fast, beta_slow;
    int32_t n_ctx_orig;
} hr_rope_cfg;

#define HR_MAX_ROPE 2
/* Limits the loader enforces (metadata beyond them is refused). */
#define HR_MAX_EXPERTS 4096
#define HR_MAX_EXPERTS_USED 256

/* The descriptor of one layer. */
typedef struct {
    int32_t n_head, n_head_kv, head_dim, head_dim_v;
    hr_attn_span attn;
    int32_t window;       /* window or chunk size in positions (HR_ATTN_WINDOW / CHUNKED) */
    int8_t rope;          /* index into hp->rope[], -1: no RoPE on this layer */
    hr_qk_norm qk_norm;
    bool sinks;           /* per-head sink logit joins the softmax denominator */
    float q_scale;        /* scale of q.k */
    float temp_scale;     /* llama4 NoPE: q *= 1 + temp_scale ln(floor((p + 1) / temp_floor) + 1); 0 = off */
    int32_t temp_floor;
    hr_ffn_kind ffn;
    int32_t n_ff;         /* dense FFN width, or each expert's width */
    int32_t n_ff_shexp;   /* shared expert width; 0 = none */
} hr_layer_desc;

typedef struct {
    char arch_name[32];
    int32_t n_vocab;
    int32_t n_embd;
    int32_t n_layer;
    /* the common values of the layers (each layer's own are in layer[]) */
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;   /* key/query length per head */
    int32_t head_dim_v; /* value length per head */
    int32_t n_ff;
    int32_t n_ctx_train;
    int32_t rope_dim;   /* dimensions rotated per head (<= head_dim) */
    hr_rope_style rope_style;
    hr_rope_cfg rope[HR_MAX_ROPE];
    int32_t n_rope;
    float rms_eps;
    float embd_scale;      /* token embeddings are multiplied by it (1 = none) */
    float final_softcap;   /* logits = c tanh(logits / c); 0 = none */
    bool post_norms;       /* sandwich norms: post_attention_norm / post_ffw_norm on the branch outputs */
    hr_act act;
    float act_alpha, act_limit; /* HR_ACT_SWIGLU_CLAMP */
    /* mixture of experts (layers with ffn == HR_FFN_MOE) */
    int32_t n_expert, n_expert_used;
    hr_moe_router router;
    bool router_renorm;    /* HR_ROUTE_SOFTMAX_TOPK: the k weights renormalised to sum 1 */
    bool route_scales_input; /* the expert weight multiplies the expert's input, not its output */
    bool tied_output;      /* output matrix is the token embedding */
    bool has_rope_freqs;   /* per-dimension frequency factors (rope_freqs or LongRoPE) */
    const hr_layer_desc *layer; /* (n_layer) */
} hr_hparams;

/* Opens and validates a model file. Errors name the problem: unknown
 * architecture, missing tensor, wrong shape, unsupported tensor type,
 * vocabulary size not matching the output matrix, ... */
hr_status hr_model_load(const char *path, hr_model **out, hr_err *err);
void hr_model_free(hr_model *m);

const hr_hparams *hr_model_hparams(const hr_model *m);
const hr_gguf *hr_model_gguf(const hr_model *m);
const struct hr_vocab *hr_model_vocab(const hr_model *m);

/* Total bytes of all tensors in the file, and parameter count. */
uint64_t hr_model_weight_bytes(const hr_model *m);
uint64_t hr_model_n_params(const hr_model *m);
/* Bytes of weights one token reads: everything but the experts it is not
 * routed to (each MoE layer: n_expert_used of n_expert) and the embedding
 * table (one row). Equal to the weight bytes for a dense model. */
uint64_t hr_model_active_bytes(const hr_model *m);

/* A human-readable description of the layers (one line per run of equal
 * layers), for `hearth inspect`; writes at most cap bytes, NUL-terminated. */
void hr_model_describe(const hr_model *m, char *buf, size_t cap);

#endif
