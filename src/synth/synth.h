/* synth.h - synthetic GGUF models with the exact shapes of real ones.
 *
 * `hearth synth` writes a file with the tensor shapes and metadata of a
 * published model (from its config: hidden size, layers, heads, KV heads,
 * head size, FFN size, vocabulary, tied output, RoPE base and scaling,
 * RMS epsilon, context length, Q/K/V biases, Q/K norms; for the MoE and
 * sliding-window families also experts, shared experts, the MoE/dense
 * interleave, sliding windows, attention sinks and biases, fused QKV and
 * gate-up, sandwich norms and LongRoPE factors) and random
 * weights, quantised per tensor the way llama-quantize picks types for the
 * requested file type. Benchmarks use these files so nobody needs to
 * download a model; llama.cpp loads them as well.
 *
 * Weights are N(0, 1/fan_in) (approximated by a sum of four uniforms), norm
 * weights 1 + N(0, 0.05^2), biases N(0, 0.05^2): activations stay O(1) and
 * logits have a standard deviation of about 1. Every row has its own RNG
 * stream (seeded from the seed, the tensor name and the row), so the bytes
 * depend only on (model, type, seed, vocabulary), not on the thread count. */
#ifndef HR_SYNTH_SYNTH_H
#define HR_SYNTH_SYNTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct {
    const char *name;       /* "Qwen2.5-0.5B" */
    const char *arch;       /* GGUF architecture: "llama", "qwen2", "qwen3" */
    const char *size_label; /* general.size_label, e.g. "0.5B" */
    int32_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx;
    bool tied;     /* output matrix is the token embedding (no output.weight) */
    bool qkv_bias; /* attn_{q,k,v}.bias (qwen2) */
    bool qk_norm;  /* attn_{q,k}_norm.weight (qwen3) */
    float rope_theta, rms_eps;
    /* RoPE scaling factor (0 = none): llama3 scaling (rope_scaling NULL),
     * written as a rope_freqs tensor, or the rope.scaling.factor of
     * rope_scaling "yarn" / "linear" */
    float rope_factor, rope_low_freq, rope_high_freq;
    int32_t rope_orig_ctx; /* rope.scaling.original_context_length (written when rope_scaling or longrope) */
    /* the families of issue 13 (all zero for the dense llama / qwen shapes) */
    const char *rope_scaling;             /* rope.scaling.type: "yarn", "linear" or NULL */
    float yarn_beta_fast, yarn_beta_slow; /* rope.scaling.yarn_beta_* (yarn) */
    float rope_attn_factor;               /* rope.scaling.attn_factor (0 = not written) */
    float rope_theta_swa;                 /* rope.freq_base_swa (0 = not written) */
    int32_t rope_dim;                     /* rope.dimension_count (0 = head_dim) */
    bool longrope;                        /* rope_factors_long / _short tensors of rope_dim / 2 (phi3) */
    int32_t n_swa;                        /* attention.sliding_window (0 = not written) */
    int32_t n_expert, n_expert_used;      /* 0 experts = dense FFN in every layer */
    int32_t n_ff_exp;                     /* expert (and shared-expert) FFN size */
    int32_t moe_step;                     /* interleave_moe_layer_step (llama4): layer i is MoE iff (i + 1) % step == 0;
                                             0 = every layer is MoE (key not written) */
    bool shared_expert;                   /* ffn_{gate,up,down}_shexp (llama4) */
    bool attn_bias;                       /* attn_{q,k,v,output}.bias (gpt-oss) */
    bool sinks;                           /* attn_sinks, one per head (gpt-oss) */
    bool moe_bias;                        /* router and expert biases (gpt-oss) */
    bool fused;                           /* attn_qkv, and ffn_up holding gate and up (phi3) */
    bool post_norms;                      /* post_attention_norm + post_ffw_norm (gemma3) */
    bool post_attn_ffn_norm;              /* post_attention_norm is the pre-FFN norm, no ffn_norm (gpt-oss) */
} hr_synth_model;

size_t hr_synth_n_models(void);
const hr_synth_model *hr_synth_model_at(size_t i);
/* By name, case-insensitive; NULL if unknown. */
const hr_synth_model *hr_synth_find(const char *name);

/* File types, numbered as GGUF's general.file_type (llama.cpp's ftype). */
typedef enum {
    HR_FTYPE_F32 = 0,
    HR_FTYPE_F16 = 1,
    HR_FTYPE_Q4_0 = 2,
    HR_FTYPE_Q8_0 = 7,
    HR_FTYPE_Q5_0 = 8,
    HR_FTYPE_Q4_K_M = 15,
    HR_FTYPE_Q5_K_M = 17,
    HR_FTYPE_Q6_K = 18,
    HR_FTYPE_MXFP4_MOE = 38, /* 3-D expert tensors MXFP4, every other matrix Q8_0 */
} hr_ftype;

/* GGML type id of MXFP4 (E8M0 scale + 32 FP4 values, 17 bytes per block). */
#define HR_SYNTH_TYPE_MXFP4 39u

/* "Q4_K_M" -> HR_FTYPE_Q4_K_M (case-insensitive); false if synth cannot
 * write that type. */
bool hr_ftype_from_name(const char *name, hr_ftype *out);
/* Short name of any general.file_type value llama.cpp defines ("Q4_K_M",
 * "Q8_0", ...), or NULL if unknown. */
const char *hr_ftype_name(uint32_t file_type);
/* A GGML tensor type by name ("Q8_0", "MXFP4", case-insensitive), for
 * --expert-type; false if unknown. */
bool hr_synth_type_from_name(const char *name, uint32_t *out);
/* The file types synth writes, space separated. */
const char *hr_synth_ftype_list(void);

/* The GGML type llama-quantize (default options, no imatrix) gives a tensor
 * in a file of type ft: `name` as in GGUF ("blk.3.ffn_down.weight"), ne0 its
 * row length, n_layer the model's layer count, has_output whether the model
 * has a separate output.weight, n_expert the model's expert count (0 for a
 * dense model). 1-D tensors, tensors whose name does not end in ".weight"
 * (biases) and the router ffn_gate_inp are F32. MXFP4_MOE: 3-D tensors
 * (experts) MXFP4, every other matrix Q8_0. Rules: the output
 * matrix (or the token embedding of a tied model) is Q6_K unless the type is
 * Q8_0 (or F16/F32), and Q8_0 if its rows are not a multiple of 256; Q4_K_M
 * and Q5_K_M give attn_v and ffn_down Q6_K in the first and last eighth of
 * the layers and every third layer between (attn_qkv counts as attn_v,
 * ffn_down_exps / _shexp as ffn_down); a model with exactly 8 experts gets
 * attn_k and attn_v Q8_0 and attn_output Q5_K; a K-quant whose row length is
 * not a multiple of 256 falls back to Q5_0 (Q4_K), Q5_1 (Q5_K) or Q8_0 (Q6_K). */
uint32_t hr_synth_tensor_type(hr_ftype ft, const char *name, uint32_t n_dims, int64_t ne0, int32_t n_layer,
                              bool has_output, int32_t n_expert);

/* Bytes of tensor data a synthetic file of (m, ft) holds (no padding), all
 * layers, experts typed by the file type's rule. */
uint64_t hr_synth_tensor_bytes(const hr_synth_model *m, hr_ftype ft);
uint64_t hr_synth_n_params(const hr_synth_model *m);

typedef struct {
    const hr_synth_model *model;
    hr_ftype ftype;
    const char *vocab_path; /* GGUF whose tokenizer.* metadata is copied; NULL = minimal byte-level vocabulary */
    uint64_t seed;
    const char *out_path;   /* written as out_path + ".tmp", then renamed */
    int32_t n_layers;       /* > 0: only the first n_layers layers (a cut with the real per-layer shapes and
                               pattern; block_count = n_layers); 0: all of the model's */
    bool expert_type_set;   /* type the 3-D expert tensors expert_type (a GGML type id) instead of by the rule */
    uint32_t expert_type;
    bool metadata_only;     /* write the metadata and no tensors (tests read the keys of big shapes) */
    int n_threads;          /* generation threads (>= 1) */
    /* optional progress report after each chunk: bytes of tensor data done of total */
    void (*progress)(void *ud, uint64_t done, uint64_t total);
    void *progress_ud;
} hr_synth_params;

/* One tensor of a synthetic file, in file order. */
typedef struct {
    char name[48];
    uint32_t n_dims; /* 1..3 */
    int64_t ne[3];   /* ne[0] fastest; unused dims 1 */
    uint32_t type;   /* GGML type id */
} hr_synth_tensor;

/* The tensors hr_synth_write(p) writes: fills out[0..cap) and returns the
 * count (call with out NULL, cap 0 to size it). */
size_t hr_synth_plan(const hr_synth_params *p, hr_synth_tensor *out, size_t cap);

/* Bytes of tensor data hr_synth_write(p) writes (layer cut and expert type
 * applied); 0 if a tensor's rows do not fit its type. */
uint64_t hr_synth_params_bytes(const hr_synth_params *p);

/* Writes the file. A type whose quantiser this build lacks (hr_quantize_row
 * returns false, e.g. MXFP4 before src/quant/ has it) fails with an error
 * naming the tensor and the type. */
hr_status hr_synth_write(const hr_synth_params *p, hr_err *err);

#endif
