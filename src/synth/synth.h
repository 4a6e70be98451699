/* synth.h - synthetic GGUF models with the exact shapes of real ones.
 *
 * `hearth synth` writes a file with the tensor shapes and metadata of a
 * published model (from its config: hidden size, layers, heads, KV heads,
 * head size, FFN size, vocabulary, tied output, RoPE base and llama3
 * scaling, RMS epsilon, context length, Q/K/V biases, Q/K norms) and random
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
    /* llama3 RoPE scaling, written as a rope_freqs tensor; factor 0 = none */
    float rope_factor, rope_low_freq, rope_high_freq;
    int32_t rope_orig_ctx;
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
} hr_ftype;

/* "Q4_K_M" -> HR_FTYPE_Q4_K_M (case-insensitive); false if synth cannot
 * write that type. */
bool hr_ftype_from_name(const char *name, hr_ftype *out);
/* Short name of any general.file_type value llama.cpp defines ("Q4_K_M",
 * "Q8_0", ...), or NULL if unknown. */
const char *hr_ftype_name(uint32_t file_type);
/* The file types synth writes, space separated. */
const char *hr_synth_ftype_list(void);

/* The GGML type llama-quantize (default options, no imatrix) gives a tensor
 * in a file of type ft: `name` as in GGUF ("blk.3.ffn_down.weight"), ne0 its
 * row length, n_layer the model's layer count, has_output whether the model
 * has a separate output.weight. 1-D tensors are F32. Rules: the output
 * matrix (or the token embedding of a tied model) is Q6_K unless the type is
 * Q8_0 (or F16/F32), and Q8_0 if its rows are not a multiple of 256; Q4_K_M
 * and Q5_K_M give attn_v and ffn_down Q6_K in the first and last eighth of
 * the layers and every third layer between; a K-quant whose row length is
 * not a multiple of 256 falls back to Q5_0 (Q4_K), Q5_1 (Q5_K) or Q8_0 (Q6_K). */
uint32_t hr_synth_tensor_type(hr_ftype ft, const char *name, uint32_t n_dims, int64_t ne0, int32_t n_layer,
                              bool has_output);

/* Bytes of tensor data a synthetic file of (m, ft) holds (no padding). */
uint64_t hr_synth_tensor_bytes(const hr_synth_model *m, hr_ftype ft);
uint64_t hr_synth_n_params(const hr_synth_model *m);

typedef struct {
    const hr_synth_model *model;
    hr_ftype ftype;
    const char *vocab_path; /* GGUF whose tokenizer.* metadata is copied; NULL = minimal byte-level vocabulary */
    uint64_t seed;
    const char *out_path;   /* written as out_path + ".tmp", then renamed */
    int n_threads;          /* generation threads (>= 1) */
    /* optional progress report after each chunk: bytes of tensor data done of total */
    void (*progress)(void *ud, uint64_t done, uint64_t total);
    void *progress_ud;
} hr_synth_params;

hr_status hr_synth_write(const hr_synth_params *p, hr_err *err);

#endif
