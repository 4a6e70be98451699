/* synth.c - synthetic GGUF models: shape tables, llama-quantize's per-tensor
 * type rules, a seeded per-row RNG and a streamed, multi-threaded writer. */
#include "synth/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cpu/pool.h"
#include "gguf/gguf.h"
#include "gguf/gguf_write.h"
#include "quant/quant.h"

/* ---- shape tables --------------------------------------------------------- */

/* From the models' published config.json (Hugging Face). Context lengths are
 * max_position_embeddings of the instruct releases. */
static const hr_synth_model k_models[] = {
    /* name            arch     label   embd  lay  hd  kv  hdim   ff    vocab   ctx    tied   bias   qkn    theta   eps */
    {"Qwen2.5-0.5B", "qwen2", "0.5B", 896, 24, 14, 2, 64, 4864, 151936, 32768, true, true, false, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    {"Qwen2.5-1.5B", "qwen2", "1.5B", 1536, 28, 12, 2, 128, 8960, 151936, 32768, true, true, false, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    {"Qwen2.5-3B", "qwen2", "3B", 2048, 36, 16, 2, 128, 11008, 151936, 32768, true, true, false, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    {"Qwen2.5-7B", "qwen2", "7B", 3584, 28, 28, 4, 128, 18944, 152064, 32768, false, true, false, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    {"Llama-3.2-1B", "llama", "1B", 2048, 16, 32, 8, 64, 8192, 128256, 131072, true, false, false, 5e5f, 1e-5f, 32.0f, 1.0f, 4.0f, 8192, .rope_scaling = NULL},
    {"Llama-3.2-3B", "llama", "3B", 3072, 28, 24, 8, 128, 8192, 128256, 131072, true, false, false, 5e5f, 1e-5f, 32.0f, 1.0f, 4.0f, 8192, .rope_scaling = NULL},
    {"Llama-3.1-8B", "llama", "8B", 4096, 32, 32, 8, 128, 14336, 128256, 131072, false, false, false, 5e5f, 1e-5f, 8.0f, 1.0f, 4.0f, 8192, .rope_scaling = NULL},
    {"Qwen3-0.6B", "qwen3", "0.6B", 1024, 28, 16, 8, 128, 3072, 151936, 40960, true, false, true, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    {"Qwen3-1.7B", "qwen3", "1.7B", 2048, 28, 16, 8, 128, 6144, 151936, 40960, true, false, true, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    {"Qwen3-4B", "qwen3", "4B", 2560, 36, 32, 8, 128, 9728, 151936, 40960, true, false, true, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    {"Qwen3-8B", "qwen3", "8B", 4096, 36, 32, 8, 128, 12288, 151936, 40960, false, false, true, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    /* tiny shapes for tests: tiny-qwen2 has rows that are not a multiple of 256
     * (K-quant fallbacks), tiny-qwen3 a head size != n_embd / n_head */
    {"tiny-llama", "llama", "3M", 256, 2, 4, 2, 64, 768, 512, 512, false, false, false, 5e5f, 1e-5f, 32.0f, 1.0f, 4.0f, 8192, .rope_scaling = NULL},
    {"tiny-qwen2", "qwen2", "1M", 192, 2, 6, 2, 32, 512, 512, 512, true, true, false, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    {"tiny-qwen3", "qwen3", "2M", 256, 2, 4, 2, 128, 768, 512, 512, true, false, true, 1e6f, 1e-6f, 0, 0, 0, 0, .rope_scaling = NULL},
    /* The MoE / sliding-window families, from the published config.json
     * (text model) as llama.cpp's converter writes them. gpt-oss-20b: 24
     * layers alternating sliding window 128 (even layers) and full, 64 heads
     * of 64, sinks, biases, 32 experts top-4, YaRN 32 over 4096. */
    {.name = "gpt-oss-20b", .arch = "gpt-oss", .size_label = "20B", .n_embd = 2880, .n_layer = 24, .n_head = 64,
     .n_head_kv = 8, .head_dim = 64, .n_ff = 2880, .n_vocab = 201088, .n_ctx = 131072, .rope_theta = 150000.0f,
     .rms_eps = 1e-5f, .rope_factor = 32.0f, .rope_orig_ctx = 4096, .rope_scaling = "yarn", .yarn_beta_fast = 32.0f,
     .yarn_beta_slow = 1.0f, .n_swa = 128, .n_expert = 32, .n_expert_used = 4, .n_ff_exp = 2880, .attn_bias = true,
     .sinks = true, .moe_bias = true, .post_attn_ffn_norm = true},
    /* Qwen3-30B-A3B: 48 MoE layers, 128 experts of 768 top-8, Q/K norms */
    {.name = "Qwen3-30B-A3B", .arch = "qwen3moe", .size_label = "30B-A3B", .n_embd = 2048, .n_layer = 48,
     .n_head = 32, .n_head_kv = 4, .head_dim = 128, .n_ff = 6144, .n_vocab = 151936, .n_ctx = 40960,
     .qk_norm = true, .rope_theta = 1e6f, .rms_eps = 1e-6f, .n_expert = 128, .n_expert_used = 8, .n_ff_exp = 768},
    /* Gemma-3-4B (text): 34 layers, 5 local (window 1024, base 1e4) : 1
     * global (base 1e6, linear x8), head 256, sandwich norms, tied; the
     * embedding rows the converter keeps (262144, the SentencePiece vocabulary) */
    {.name = "Gemma-3-4B", .arch = "gemma3", .size_label = "4B", .n_embd = 2560, .n_layer = 34, .n_head = 8,
     .n_head_kv = 4, .head_dim = 256, .n_ff = 10240, .n_vocab = 262144, .n_ctx = 131072, .tied = true,
     .qk_norm = true, .rope_theta = 1e6f, .rms_eps = 1e-6f, .rope_factor = 8.0f, .rope_scaling = "linear",
     .rope_theta_swa = 10000.0f, .n_swa = 1024, .post_norms = true},
    /* Phi-4-mini: fused QKV and gate-up, partial rotary 0.75 (96 of 128),
     * LongRoPE over 4096 (factors: a synthetic ramp, not the published values) */
    {.name = "Phi-4-mini", .arch = "phi3", .size_label = "3.8B", .n_embd = 3072, .n_layer = 32, .n_head = 24,
     .n_head_kv = 8, .head_dim = 128, .n_ff = 8192, .n_vocab = 200064, .n_ctx = 131072, .tied = true,
     .rope_theta = 10000.0f, .rms_eps = 1e-5f, .rope_orig_ctx = 4096, .rope_attn_factor = 1.1902381f,
     .rope_dim = 96, .longrope = true, .n_swa = 262144, .fused = true},
    /* Llama-4-Scout-17B-16E: 48 layers, all MoE (interleave step 1), 16
     * experts top-1 + a shared expert of 8192, dense FFN 16384 (written, as
     * the converter does), llama3 RoPE x16 over 8192; chunked attention and
     * NoPE every 4th layer are llama.cpp's defaults (no keys) */
    {.name = "Llama-4-Scout", .arch = "llama4", .size_label = "17B-16E", .n_embd = 5120, .n_layer = 48,
     .n_head = 40, .n_head_kv = 8, .head_dim = 128, .n_ff = 16384, .n_vocab = 202048, .n_ctx = 10485760,
     .rope_theta = 5e5f, .rms_eps = 1e-5f, .rope_factor = 16.0f, .rope_low_freq = 1.0f, .rope_high_freq = 1.0f,
     .rope_orig_ctx = 8192, .n_expert = 16, .n_expert_used = 1, .n_ff_exp = 8192, .moe_step = 1,
     .shared_expert = true},
    /* tiny versions of those for tests (fast to write, every feature; tiny-llama4
     * interleaves dense and MoE layers as Maverick does; not "tiny-phi3":
     * llama.cpp gives a general.name containing "phi3" Phi-3's special tokens) */
    {.name = "tiny-gpt-oss", .arch = "gpt-oss", .size_label = "4M", .n_embd = 256, .n_layer = 2, .n_head = 4,
     .n_head_kv = 2, .head_dim = 64, .n_ff = 128, .n_vocab = 512, .n_ctx = 4096, .rope_theta = 150000.0f,
     .rms_eps = 1e-5f, .rope_factor = 32.0f, .rope_orig_ctx = 4096, .rope_scaling = "yarn", .yarn_beta_fast = 32.0f,
     .yarn_beta_slow = 1.0f, .n_swa = 16, .n_expert = 4, .n_expert_used = 2, .n_ff_exp = 128, .attn_bias = true,
     .sinks = true, .moe_bias = true, .post_attn_ffn_norm = true},
    {.name = "tiny-qwen3moe", .arch = "qwen3moe", .size_label = "3M", .n_embd = 256, .n_layer = 2, .n_head = 4,
     .n_head_kv = 2, .head_dim = 64, .n_ff = 768, .n_vocab = 512, .n_ctx = 4096, .qk_norm = true,
     .rope_theta = 1e6f, .rms_eps = 1e-6f, .n_expert = 4, .n_expert_used = 2, .n_ff_exp = 256},
    {.name = "tiny-gemma3", .arch = "gemma3", .size_label = "2M", .n_embd = 256, .n_layer = 6, .n_head = 2,
     .n_head_kv = 1, .head_dim = 64, .n_ff = 256, .n_vocab = 512, .n_ctx = 4096, .tied = true, .qk_norm = true,
     .rope_theta = 1e6f, .rms_eps = 1e-6f, .rope_factor = 8.0f, .rope_scaling = "linear",
     .rope_theta_swa = 10000.0f, .n_swa = 16, .post_norms = true},
    {.name = "tiny-phi4", .arch = "phi3", .size_label = "2M", .n_embd = 256, .n_layer = 2, .n_head = 4,
     .n_head_kv = 2, .head_dim = 64, .n_ff = 512, .n_vocab = 512, .n_ctx = 131072, .tied = true,
     .rope_theta = 10000.0f, .rms_eps = 1e-5f, .rope_orig_ctx = 4096, .rope_attn_factor = 1.1902381f,
     .rope_dim = 48, .longrope = true, .n_swa = 262144, .fused = true},
    {.name = "tiny-llama4", .arch = "llama4", .size_label = "4M", .n_embd = 256, .n_layer = 4, .n_head = 4,
     .n_head_kv = 1, .head_dim = 64, .n_ff = 512, .n_vocab = 512, .n_ctx = 4096, .rope_theta = 5e5f,
     .rms_eps = 1e-5f, .rope_factor = 16.0f, .rope_low_freq = 1.0f, .rope_high_freq = 1.0f, .rope_orig_ctx = 8192,
     .n_expert = 4, .n_expert_used = 1, .n_ff_exp = 256, .moe_step = 2, .shared_expert = true},
};

bool hr_synth_type_from_name(const char *name, uint32_t *out)
{
    for (uint32_t id = 0; id < HR_TYPE_COUNT; id++) {
        const hr_type_traits *t = hr_type_get(id);
        if (t && t->name && !strcasecmp(t->name, name)) {
            *out = id;
            return true;
        }
    }
    return false;
}

size_t hr_synth_n_models(void) { return sizeof k_models / sizeof k_models[0]; }

const hr_synth_model *hr_synth_model_at(size_t i) { return i < hr_synth_n_models() ? &k_models[i] : NULL; }

const hr_synth_model *hr_synth_find(const char *name)
{
    for (size_t i = 0; i < hr_synth_n_models(); i++)
        if (!strcasecmp(k_models[i].name, name))
            return &k_models[i];
    return NULL;
}

/* ---- file types ------------------------------------------------------------ */

static const struct {
    uint32_t id;
    const char *name;
} k_ftype_names[] = {
    {0, "F32"},     {1, "F16"},     {2, "Q4_0"},    {3, "Q4_1"},    {7, "Q8_0"},     {8, "Q5_0"},
    {9, "Q5_1"},    {10, "Q2_K"},   {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"},  {14, "Q4_K_S"},
    {15, "Q4_K_M"}, {16, "Q5_K_S"}, {17, "Q5_K_M"}, {18, "Q6_K"},   {19, "IQ2_XXS"}, {20, "IQ2_XS"},
    {21, "Q2_K_S"}, {22, "IQ3_XS"}, {23, "IQ3_XXS"}, {24, "IQ1_S"}, {25, "IQ4_NL"},  {26, "IQ3_S"},
    {27, "IQ3_M"},  {28, "IQ2_S"},  {29, "IQ2_M"},  {30, "IQ4_XS"}, {31, "IQ1_M"},   {32, "BF16"},
    {36, "TQ1_0"},  {37, "TQ2_0"},  {38, "MXFP4_MOE"},
};

static const hr_ftype k_synth_ftypes[] = {HR_FTYPE_F32,  HR_FTYPE_F16,  HR_FTYPE_Q8_0,   HR_FTYPE_Q6_K,
                                          HR_FTYPE_Q5_0, HR_FTYPE_Q4_0, HR_FTYPE_Q5_K_M, HR_FTYPE_Q4_K_M,
                                          HR_FTYPE_MXFP4_MOE};

const char *hr_ftype_name(uint32_t file_type)
{
    for (size_t i = 0; i < sizeof k_ftype_names / sizeof k_ftype_names[0]; i++)
        if (k_ftype_names[i].id == file_type)
            return k_ftype_names[i].name;
    return NULL;
}

bool hr_ftype_from_name(const char *name, hr_ftype *out)
{
    for (size_t i = 0; i < sizeof k_synth_ftypes / sizeof k_synth_ftypes[0]; i++)
        if (!strcasecmp(hr_ftype_name(k_synth_ftypes[i]), name)) {
            *out = k_synth_ftypes[i];
            return true;
        }
    return false;
}

const char *hr_synth_ftype_list(void) { return "F32 F16 Q8_0 Q6_K Q5_0 Q4_0 Q5_K_M Q4_K_M MXFP4_MOE"; }

/* ---- llama-quantize's type choices ----------------------------------------- */

static uint32_t default_type(hr_ftype ft)
{
    switch (ft) {
    case HR_FTYPE_F32: return HR_TYPE_F32;
    case HR_FTYPE_F16: return HR_TYPE_F16;
    case HR_FTYPE_Q4_0: return HR_TYPE_Q4_0;
    case HR_FTYPE_Q8_0: return HR_TYPE_Q8_0;
    case HR_FTYPE_Q5_0: return HR_TYPE_Q5_0;
    case HR_FTYPE_Q4_K_M: return HR_TYPE_Q4_K;
    case HR_FTYPE_Q5_K_M: return HR_TYPE_Q5_K;
    case HR_FTYPE_Q6_K: return HR_TYPE_Q6_K;
    case HR_FTYPE_MXFP4_MOE: return HR_TYPE_Q8_0;
    }
    return HR_TYPE_F32;
}

/* The layers that get more bits: the first and last eighth, and every third
 * one in between. */
static bool more_bits(int32_t i, int32_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* Layer index of "blk.N.", or -1. */
static int32_t layer_of(const char *name)
{
    if (strncmp(name, "blk.", 4))
        return -1;
    char *end;
    long v = strtol(name + 4, &end, 10);
    return end != name + 4 && *end == '.' ? (int32_t)v : -1;
}

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

uint32_t hr_synth_tensor_type(hr_ftype ft, const char *name, uint32_t n_dims, int64_t ne0, int32_t n_layer,
                              bool has_output, int32_t n_expert)
{
    /* llama-quantize leaves 1-D tensors, biases and the router as the
     * converter wrote them: F32 */
    if (n_dims < 2 || !has_suffix(name, ".weight") || strstr(name, "ffn_gate_inp.weight"))
        return HR_TYPE_F32;
    uint32_t t = default_type(ft);
    if (t == HR_TYPE_F32 || t == HR_TYPE_F16)
        return t;
    bool km = ft == HR_FTYPE_Q4_K_M || ft == HR_FTYPE_Q5_K_M;
    bool is_output = !strcmp(name, "output.weight") || (!has_output && !strcmp(name, "token_embd.weight"));
    if (ft == HR_FTYPE_MXFP4_MOE) {
        if (!is_output && n_dims >= 3)
            return HR_SYNTH_TYPE_MXFP4;
        t = HR_TYPE_Q8_0;
    } else if (is_output) {
        if (ne0 % 256)
            t = HR_TYPE_Q8_0;
        else if (t != HR_TYPE_Q8_0)
            t = HR_TYPE_Q6_K;
    } else if (has_suffix(name, ".attn_v.weight") || has_suffix(name, ".attn_qkv.weight")) {
        int32_t il = layer_of(name);
        if (km && il >= 0 && more_bits(il, n_layer))
            t = HR_TYPE_Q6_K;
        if (n_expert == 8)
            t = HR_TYPE_Q8_0;
    } else if (has_suffix(name, ".attn_k.weight")) {
        if (n_expert == 8)
            t = HR_TYPE_Q8_0;
    } else if (strstr(name, ".ffn_down")) {
        int32_t il = layer_of(name);
        if (km && il >= 0 && more_bits(il, n_layer))
            t = HR_TYPE_Q6_K;
    } else if (has_suffix(name, ".attn_output.weight")) {
        if (n_expert == 8 && ft == HR_FTYPE_Q4_K_M)
            t = HR_TYPE_Q5_K;
    }
    /* a type whose blocks do not divide the rows falls back to a 32-block one */
    const hr_type_traits *tr = hr_type_get(t);
    if (tr && ne0 % tr->block_size) {
        switch (t) {
        case HR_TYPE_Q4_K: t = HR_TYPE_Q5_0; break;
        case HR_TYPE_Q5_K: t = HR_TYPE_Q5_1; break;
        case HR_TYPE_Q6_K: t = HR_TYPE_Q8_0; break;
        default: break;
        }
        tr = hr_type_get(t);
        if (ne0 % tr->block_size)
            t = HR_TYPE_F16;
    }
    return t;
}

/* ---- the tensor list --------------------------------------------------------- */

enum { K_WEIGHT, K_NORM, K_BIAS, K_ROPE, K_ROPE_LONG, K_ROPE_SHORT };

typedef struct {
    char name[48];
    uint32_t n_dims;
    int64_t ne[3];
    int kind;
    uint32_t type;
    size_t row_bytes;
} stensor;

/* What a file holds: the shape, the file type, the layer cut, the expert type. */
typedef struct {
    const hr_synth_model *m;
    hr_ftype ft;
    int32_t n_layer;
    bool expert_type_set;
    uint32_t expert_type;
} plan_cfg;

static plan_cfg cfg_of(const hr_synth_params *p)
{
    plan_cfg c = {.m = p->model, .ft = p->ftype, .n_layer = p->model->n_layer,
                  .expert_type_set = p->expert_type_set, .expert_type = p->expert_type};
    if (p->n_layers > 0 && p->n_layers < c.n_layer)
        c.n_layer = p->n_layers;
    return c;
}

/* Bytes of n values of a type; MXFP4's size is known even before src/quant/ has the type. */
static size_t row_size(uint32_t type, int64_t n)
{
    if (type == HR_SYNTH_TYPE_MXFP4 && !hr_type_get(type))
        return n > 0 && n % 32 == 0 ? (size_t)(n / 32) * 17 : 0;
    return hr_row_size(type, n);
}

static bool is_moe_layer(const hr_synth_model *m, int32_t il)
{
    return m->n_expert > 0 && (m->moe_step <= 1 || (il + 1) % m->moe_step == 0);
}

static int32_t rope_dim_of(const hr_synth_model *m) { return m->rope_dim > 0 ? m->rope_dim : m->head_dim; }

/* Fills out[] (if not NULL) and returns the count; names and shapes as llama.cpp's converter writes them. */
static size_t tensor_list(const plan_cfg *c, stensor *out)
{
    const hr_synth_model *m = c->m;
    size_t n = 0;
    int64_t q_out = (int64_t)m->n_head * m->head_dim, kv_out = (int64_t)m->n_head_kv * m->head_dim;
    int64_t E = m->n_embd, X = m->n_expert;
#define ADD3(kind_, ne0_, ne1_, ne2_, ...)                                                                    \
    do {                                                                                                        \
        if (out) {                                                                                              \
            stensor *t_ = &out[n];                                                                              \
            snprintf(t_->name, sizeof t_->name, __VA_ARGS__);                                                   \
            t_->kind = kind_;                                                                                   \
            t_->ne[0] = ne0_;                                                                                   \
            t_->ne[1] = ne1_ > 0 ? ne1_ : 1;                                                                    \
            t_->ne[2] = ne2_ > 0 ? ne2_ : 1;                                                                    \
            t_->n_dims = ne2_ > 0 ? 3 : ne1_ > 0 ? 2 : 1;                                                       \
            t_->type = hr_synth_tensor_type(c->ft, t_->name, t_->n_dims, t_->ne[0], c->n_layer, !m->tied,     \
                                            m->n_expert);                                                       \
            if (t_->n_dims == 3 && c->expert_type_set)                                                          \
                t_->type = c->expert_type;                                                                      \
            t_->row_bytes = row_size(t_->type, t_->ne[0]);                                                      \
        }                                                                                                       \
        n++;                                                                                                    \
    } while (0)
#define ADD(kind_, ne0_, ne1_, ...) ADD3(kind_, ne0_, ne1_, 0, __VA_ARGS__)
    ADD(K_WEIGHT, E, m->n_vocab, "token_embd.weight");
    if (m->rope_factor > 0 && !m->rope_scaling)
        ADD(K_ROPE, rope_dim_of(m) / 2, 0, "rope_freqs.weight");
    if (m->longrope) {
        ADD(K_ROPE_LONG, rope_dim_of(m) / 2, 0, "rope_factors_long.weight");
        ADD(K_ROPE_SHORT, rope_dim_of(m) / 2, 0, "rope_factors_short.weight");
    }
    for (int32_t i = 0; i < c->n_layer; i++) {
        bool bias = m->qkv_bias || m->attn_bias;
        ADD(K_NORM, E, 0, "blk.%d.attn_norm.weight", i);
        if (m->fused) {
            ADD(K_WEIGHT, E, q_out + 2 * kv_out, "blk.%d.attn_qkv.weight", i);
        } else {
            ADD(K_WEIGHT, E, q_out, "blk.%d.attn_q.weight", i);
            if (bias)
                ADD(K_BIAS, q_out, 0, "blk.%d.attn_q.bias", i);
            ADD(K_WEIGHT, E, kv_out, "blk.%d.attn_k.weight", i);
            if (bias)
                ADD(K_BIAS, kv_out, 0, "blk.%d.attn_k.bias", i);
            ADD(K_WEIGHT, E, kv_out, "blk.%d.attn_v.weight", i);
            if (bias)
                ADD(K_BIAS, kv_out, 0, "blk.%d.attn_v.bias", i);
        }
        ADD(K_WEIGHT, q_out, E, "blk.%d.attn_output.weight", i);
        if (m->attn_bias)
            ADD(K_BIAS, E, 0, "blk.%d.attn_output.bias", i);
        if (m->qk_norm) {
            ADD(K_NORM, m->head_dim, 0, "blk.%d.attn_q_norm.weight", i);
            ADD(K_NORM, m->head_dim, 0, "blk.%d.attn_k_norm.weight", i);
        }
        if (m->sinks)
            ADD(K_BIAS, m->n_head, 0, "blk.%d.attn_sinks.weight", i);
        if (m->post_norms || m->post_attn_ffn_norm)
            ADD(K_NORM, E, 0, "blk.%d.post_attention_norm.weight", i);
        if (!m->post_attn_ffn_norm)
            ADD(K_NORM, E, 0, "blk.%d.ffn_norm.weight", i);
        if (is_moe_layer(m, i)) {
            int64_t F = m->n_ff_exp;
            ADD(K_WEIGHT, E, X, "blk.%d.ffn_gate_inp.weight", i);
            if (m->moe_bias)
                ADD(K_BIAS, X, 0, "blk.%d.ffn_gate_inp.bias", i);
            ADD3(K_WEIGHT, E, F, X, "blk.%d.ffn_gate_exps.weight", i);
            if (m->moe_bias)
                ADD(K_BIAS, F, X, "blk.%d.ffn_gate_exps.bias", i);
            ADD3(K_WEIGHT, E, F, X, "blk.%d.ffn_up_exps.weight", i);
            if (m->moe_bias)
                ADD(K_BIAS, F, X, "blk.%d.ffn_up_exps.bias", i);
            ADD3(K_WEIGHT, F, E, X, "blk.%d.ffn_down_exps.weight", i);
            if (m->moe_bias)
                ADD(K_BIAS, E, X, "blk.%d.ffn_down_exps.bias", i);
            if (m->shared_expert) {
                ADD(K_WEIGHT, E, F, "blk.%d.ffn_gate_shexp.weight", i);
                ADD(K_WEIGHT, E, F, "blk.%d.ffn_up_shexp.weight", i);
                ADD(K_WEIGHT, F, E, "blk.%d.ffn_down_shexp.weight", i);
            }
        } else if (m->fused) {
            ADD(K_WEIGHT, E, 2 * (int64_t)m->n_ff, "blk.%d.ffn_up.weight", i);
            ADD(K_WEIGHT, m->n_ff, E, "blk.%d.ffn_down.weight", i);
        } else {
            ADD(K_WEIGHT, E, m->n_ff, "blk.%d.ffn_gate.weight", i);
            ADD(K_WEIGHT, E, m->n_ff, "blk.%d.ffn_up.weight", i);
            ADD(K_WEIGHT, m->n_ff, E, "blk.%d.ffn_down.weight", i);
        }
        if (m->post_norms)
            ADD(K_NORM, E, 0, "blk.%d.post_ffw_norm.weight", i);
    }
    ADD(K_NORM, E, 0, "output_norm.weight");
    if (!m->tied)
        ADD(K_WEIGHT, E, m->n_vocab, "output.weight");
#undef ADD
#undef ADD3
    return n;
}

static stensor *make_list(const plan_cfg *c, size_t *n)
{
    *n = tensor_list(c, NULL);
    stensor *t = calloc(*n, sizeof *t);
    if (t)
        tensor_list(c, t);
    return t;
}

static uint64_t n_rows(const stensor *t) { return (uint64_t)t->ne[1] * (uint64_t)t->ne[2]; }

static uint64_t list_bytes(const plan_cfg *c)
{
    size_t n;
    stensor *t = make_list(c, &n);
    uint64_t sum = 0;
    for (size_t i = 0; t && i < n; i++) {
        if (!t[i].row_bytes) {
            sum = 0;
            break;
        }
        sum += (uint64_t)t[i].row_bytes * n_rows(&t[i]);
    }
    free(t);
    return sum;
}

uint64_t hr_synth_tensor_bytes(const hr_synth_model *m, hr_ftype ft)
{
    plan_cfg c = {.m = m, .ft = ft, .n_layer = m->n_layer};
    return list_bytes(&c);
}

uint64_t hr_synth_params_bytes(const hr_synth_params *p)
{
    plan_cfg c = cfg_of(p);
    return list_bytes(&c);
}

size_t hr_synth_plan(const hr_synth_params *p, hr_synth_tensor *out, size_t cap)
{
    plan_cfg c = cfg_of(p);
    size_t n;
    stensor *t = make_list(&c, &n);
    if (!t)
        return 0;
    for (size_t i = 0; out && i < n && i < cap; i++) {
        memcpy(out[i].name, t[i].name, sizeof out[i].name);
        out[i].n_dims = t[i].n_dims;
        memcpy(out[i].ne, t[i].ne, sizeof out[i].ne);
        out[i].type = t[i].type;
    }
    free(t);
    return n;
}

uint64_t hr_synth_n_params(const hr_synth_model *m)
{
    plan_cfg c = {.m = m, .ft = HR_FTYPE_F32, .n_layer = m->n_layer};
    size_t n;
    stensor *t = make_list(&c, &n);
    uint64_t sum = 0;
    for (size_t i = 0; t && i < n; i++)
        sum += (uint64_t)t[i].ne[0] * n_rows(&t[i]);
    free(t);
    return sum;
}

/* ---- random numbers ---------------------------------------------------------- */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Fills x[0..n) with approximately standard normal values: the sum of four
 * 16-bit uniforms, centred and scaled to unit variance (|x| <= 3.46). */
static void normal_row(uint64_t state, float *x, int64_t n)
{
    const float scale = (float)(1.0 / (65536.0 * sqrt(1.0 / 3.0)));
    for (int64_t i = 0; i < n; i++) {
        state += 0x9E3779B97F4A7C15ull;
        uint64_t r = mix64(state);
        int64_t s = (int64_t)(r & 0xffff) + (int64_t)((r >> 16) & 0xffff) + (int64_t)((r >> 32) & 0xffff) +
                    (int64_t)(r >> 48) - 131070;
        x[i] = (float)s * scale;
    }
}

/* llama3 RoPE frequency factors (divisors of each dimension pair's frequency). */
static void rope_factors(const hr_synth_model *m, float *out)
{
    int32_t n = rope_dim_of(m) / 2;
    double lo_wavelen = m->rope_orig_ctx / m->rope_low_freq, hi_wavelen = m->rope_orig_ctx / m->rope_high_freq;
    for (int32_t i = 0; i < n; i++) {
        double freq = pow(m->rope_theta, -2.0 * i / rope_dim_of(m));
        double wavelen = 2.0 * M_PI / freq;
        double f;
        if (wavelen < hi_wavelen)
            f = 1.0;
        else if (wavelen > lo_wavelen)
            f = m->rope_factor;
        else {
            double smooth = (m->rope_orig_ctx / wavelen - m->rope_low_freq) / (m->rope_high_freq - m->rope_low_freq);
            f = 1.0 / ((1.0 - smooth) / m->rope_factor + smooth);
        }
        out[i] = (float)f;
    }
}

/* LongRoPE factors (phi3): a smooth ramp over the dimension pairs from 1 to
 * `top` (the published short factors rise to about 4, the long ones to about
 * 60; these are synthetic, the shape is what matters here). */
static void longrope_factors(const hr_synth_model *m, float top, float *out)
{
    int32_t n = rope_dim_of(m) / 2;
    for (int32_t i = 0; i < n; i++) {
        double u = n > 1 ? (double)i / (n - 1) : 0.0;
        out[i] = (float)(1.0 + (top - 1.0) * u * u);
    }
}

/* ---- generation --------------------------------------------------------------- */

typedef struct {
    const hr_synth_model *m;
    const stensor *t;
    uint64_t tseed;
    int64_t row0, nrows;
    uint8_t *dst;
    float *scratch; /* nth x max_ne0 */
    int64_t max_ne0;
    int bad;
} gen_job;

static void gen_rows(void *ctx, int ith, int nth)
{
    gen_job *j = ctx;
    const stensor *t = j->t;
    float *x = j->scratch + (size_t)ith * (size_t)j->max_ne0;
    int64_t a = j->nrows * ith / nth, b = j->nrows * (ith + 1) / nth;
    for (int64_t r = a; r < b; r++) {
        int64_t row = j->row0 + r;
        if (t->kind == K_ROPE) {
            rope_factors(j->m, x);
        } else if (t->kind == K_ROPE_LONG || t->kind == K_ROPE_SHORT) {
            longrope_factors(j->m, t->kind == K_ROPE_LONG ? 60.0f : 4.0f, x);
        } else {
            normal_row(mix64(j->tseed ^ mix64((uint64_t)row + 1)), x, t->ne[0]);
            float sd = t->kind == K_WEIGHT ? (float)(1.0 / sqrt((double)t->ne[0])) : 0.05f;
            float add = t->kind == K_NORM ? 1.0f : 0.0f;
            for (int64_t i = 0; i < t->ne[0]; i++)
                x[i] = add + sd * x[i];
        }
        if (!hr_quantize_row(t->type, x, j->dst + (size_t)r * t->row_bytes, t->ne[0]))
            j->bad = 1;
    }
}

/* Token list of a minimal byte-level BPE vocabulary: the 256 byte tokens in
 * GPT-2's byte-to-unicode spelling, <|endoftext|>, then [PADn] fillers. */
static hr_status minimal_vocab(hr_gguf_writer *w, int32_t n_vocab, hr_err *err)
{
    if (n_vocab < 257)
        return hr_err_set(err, HR_ERR_INVALID, "a byte-level vocabulary needs at least 257 tokens, the model has %d",
                          n_vocab);
    char **tok = calloc((size_t)n_vocab, sizeof *tok);
    int32_t *type = calloc((size_t)n_vocab, sizeof *type);
    hr_status st = HR_OK;
    if (!tok || !type)
        goto nomem;
    uint32_t extra = 256;
    for (int32_t b = 0; b < 256; b++) {
        uint32_t cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255) ? (uint32_t)b
                                                                                                 : extra++;
        char s[4];
        if (cp < 0x80) {
            s[0] = (char)cp;
            s[1] = 0;
        } else {
            s[0] = (char)(0xC0 | (cp >> 6));
            s[1] = (char)(0x80 | (cp & 0x3F));
            s[2] = 0;
        }
        tok[b] = strdup(s);
        type[b] = 1; /* normal */
    }
    tok[256] = strdup("<|endoftext|>");
    type[256] = 3; /* control */
    for (int32_t i = 257; i < n_vocab; i++) {
        char s[32];
        snprintf(s, sizeof s, "[PAD%d]", i);
        tok[i] = strdup(s);
        type[i] = 5; /* unused */
    }
    for (int32_t i = 0; i < n_vocab; i++)
        if (!tok[i])
            goto nomem;
    if ((st = hr_gguf_writer_str(w, "tokenizer.ggml.model", "gpt2")) ||
        (st = hr_gguf_writer_str(w, "tokenizer.ggml.pre", "default")) ||
        (st = hr_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, (uint64_t)n_vocab)) ||
        (st = hr_gguf_writer_arr(w, "tokenizer.ggml.token_type", HR_GGUF_I32, type, (uint64_t)n_vocab)) ||
        (st = hr_gguf_writer_arr_str(w, "tokenizer.ggml.merges", NULL, 0)) ||
        (st = hr_gguf_writer_u32(w, "tokenizer.ggml.bos_token_id", 256)) ||
        (st = hr_gguf_writer_u32(w, "tokenizer.ggml.eos_token_id", 256)) ||
        (st = hr_gguf_writer_bool(w, "tokenizer.ggml.add_bos_token", 0)))
        goto nomem;
    goto done;
nomem:
    st = hr_err_set(err, HR_ERR_NOMEM, "out of memory building the vocabulary");
done:
    if (tok)
        for (int32_t i = 0; i < n_vocab; i++)
            free(tok[i]);
    free(tok);
    free(type);
    return st;
}

/* Copies tokenizer.* from a vocabulary GGUF, padding the per-token arrays
 * with [PADn] (type UNUSED, score 0) up to the model's n_vocab. */
static hr_status copy_vocab(hr_gguf_writer *w, const char *path, int32_t n_vocab, hr_err *err)
{
    hr_gguf *g;
    hr_status st = hr_gguf_open(path, &g, err);
    if (st)
        return st;
    const hr_gguf_value *toks = hr_gguf_get_arr(g, "tokenizer.ggml.tokens", HR_GGUF_STRING);
    if (!toks) {
        hr_gguf_close(g);
        return hr_err_set(err, HR_ERR_FORMAT, "%s: no tokenizer.ggml.tokens", path);
    }
    uint64_t n_tok = toks->v.arr.n;
    if (n_tok > (uint64_t)n_vocab) {
        hr_gguf_close(g);
        return hr_err_set(err, HR_ERR_INVALID, "%s has %llu tokens, more than the model's %d embedding rows", path,
                          (unsigned long long)n_tok, n_vocab);
    }
    void *arr = NULL;
    for (uint64_t i = 0; i < hr_gguf_n_kv(g) && !st; i++) {
        hr_gguf_str k = hr_gguf_key_at(g, i);
        const hr_gguf_value *v = hr_gguf_value_at(g, i);
        char key[256];
        if (k.len < 10 || k.len >= sizeof key || memcmp(k.ptr, "tokenizer.", 10))
            continue;
        hr_gguf_str_copy(k, key, sizeof key);
        bool per_token = v->type == HR_GGUF_ARRAY && v->v.arr.n == n_tok &&
                         (!strcmp(key, "tokenizer.ggml.tokens") || !strcmp(key, "tokenizer.ggml.token_type") ||
                          !strcmp(key, "tokenizer.ggml.scores"));
        if (!per_token || n_tok == (uint64_t)n_vocab) {
            if (hr_gguf_writer_value(w, key, v))
                st = hr_err_set(err, HR_ERR_NOMEM, "out of memory copying the vocabulary");
            continue;
        }
        if (v->v.arr.elem == HR_GGUF_STRING) {
            char **strs = calloc((size_t)n_vocab, sizeof *strs);
            if (!strs) {
                st = hr_err_set(err, HR_ERR_NOMEM, "out of memory copying the vocabulary");
                break;
            }
            for (uint64_t t = 0; t < (uint64_t)n_vocab; t++) {
                if (t < n_tok) {
                    hr_gguf_str s = v->v.arr.items[t].v.s;
                    strs[t] = malloc(s.len + 1);
                    if (strs[t]) {
                        memcpy(strs[t], s.ptr, s.len);
                        strs[t][s.len] = 0;
                    }
                } else {
                    char s[32];
                    snprintf(s, sizeof s, "[PAD%llu]", (unsigned long long)t);
                    strs[t] = strdup(s);
                }
                if (!strs[t])
                    st = HR_ERR_NOMEM;
            }
            if (!st && hr_gguf_writer_arr_str(w, key, (const char *const *)strs, (uint64_t)n_vocab))
                st = HR_ERR_NOMEM;
            if (st)
                st = hr_err_set(err, HR_ERR_NOMEM, "out of memory copying the vocabulary");
            for (int32_t t = 0; t < n_vocab; t++)
                free(strs[t]);
            free(strs);
        } else if (!strcmp(key, "tokenizer.ggml.token_type")) {
            int32_t *ty = malloc((size_t)n_vocab * sizeof *ty);
            if (!ty) {
                st = hr_err_set(err, HR_ERR_NOMEM, "out of memory copying the vocabulary");
                break;
            }
            for (uint64_t t = 0; t < (uint64_t)n_vocab; t++)
                ty[t] = t < n_tok ? (int32_t)hr_gguf_arr_i64(v, t) : 5 /* unused */;
            arr = ty;
            st = hr_gguf_writer_arr(w, key, HR_GGUF_I32, ty, (uint64_t)n_vocab);
        } else {
            float *sc = malloc((size_t)n_vocab * sizeof *sc);
            if (!sc) {
                st = hr_err_set(err, HR_ERR_NOMEM, "out of memory copying the vocabulary");
                break;
            }
            for (uint64_t t = 0; t < (uint64_t)n_vocab; t++)
                sc[t] = t < n_tok ? (float)hr_gguf_arr_f64(v, t) : 0.0f;
            arr = sc;
            st = hr_gguf_writer_arr(w, key, HR_GGUF_F32, sc, (uint64_t)n_vocab);
        }
        if (arr && st)
            st = hr_err_set(err, HR_ERR_NOMEM, "out of memory copying the vocabulary");
        free(arr);
        arr = NULL;
    }
    hr_gguf_close(g);
    return st;
}

static hr_status write_metadata(hr_gguf_writer *w, const hr_synth_params *p, int32_t n_layer, hr_err *err)
{
    const hr_synth_model *m = p->model;
    char key[128], name[96];
    hr_status st = HR_OK;
#define KEY(s) (snprintf(key, sizeof key, "%s.%s", m->arch, s), key)
    if (n_layer != m->n_layer)
        snprintf(name, sizeof name, "hearth-synth %s (%d of %d layers)", m->name, n_layer, m->n_layer);
    else
        snprintf(name, sizeof name, "hearth-synth %s", m->name);
    if ((st = hr_gguf_writer_str(w, "general.architecture", m->arch)) ||
        (st = hr_gguf_writer_str(w, "general.type", "model")) || (st = hr_gguf_writer_str(w, "general.name", name)) ||
        (st = hr_gguf_writer_str(w, "general.size_label", m->size_label)) ||
        (st = hr_gguf_writer_u32(w, "general.file_type", (uint32_t)p->ftype)) ||
        (st = hr_gguf_writer_u32(w, "general.quantization_version", 2)) ||
        (st = hr_gguf_writer_str(w, "hearth.synth.model", m->name)) ||
        (st = hr_gguf_writer_u64(w, "hearth.synth.seed", p->seed)) ||
        (st = hr_gguf_writer_u32(w, KEY("block_count"), (uint32_t)n_layer)) ||
        (st = hr_gguf_writer_u32(w, KEY("context_length"), (uint32_t)m->n_ctx)) ||
        (st = hr_gguf_writer_u32(w, KEY("embedding_length"), (uint32_t)m->n_embd)) ||
        (st = hr_gguf_writer_u32(w, KEY("feed_forward_length"), (uint32_t)m->n_ff)) ||
        (st = hr_gguf_writer_u32(w, KEY("attention.head_count"), (uint32_t)m->n_head)) ||
        (st = hr_gguf_writer_u32(w, KEY("attention.head_count_kv"), (uint32_t)m->n_head_kv)) ||
        (st = hr_gguf_writer_f32(w, KEY("rope.freq_base"), m->rope_theta)) ||
        (st = hr_gguf_writer_f32(w, KEY("attention.layer_norm_rms_epsilon"), m->rms_eps)) ||
        (st = hr_gguf_writer_u32(w, KEY("attention.key_length"), (uint32_t)m->head_dim)) ||
        (st = hr_gguf_writer_u32(w, KEY("attention.value_length"), (uint32_t)m->head_dim)) ||
        (st = hr_gguf_writer_u32(w, KEY("rope.dimension_count"), (uint32_t)rope_dim_of(m))) ||
        (st = hr_gguf_writer_u32(w, KEY("vocab_size"), (uint32_t)m->n_vocab)))
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory writing metadata");
    if (n_layer != m->n_layer && (st = hr_gguf_writer_u32(w, "hearth.synth.layers_of", (uint32_t)m->n_layer)))
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory writing metadata");
    if (m->n_expert > 0 &&
        ((st = hr_gguf_writer_u32(w, KEY("expert_count"), (uint32_t)m->n_expert)) ||
         (st = hr_gguf_writer_u32(w, KEY("expert_used_count"), (uint32_t)m->n_expert_used)) ||
         (st = hr_gguf_writer_u32(w, KEY("expert_feed_forward_length"), (uint32_t)m->n_ff_exp)) ||
         (m->moe_step > 0 &&
          (st = hr_gguf_writer_u32(w, KEY("interleave_moe_layer_step"), (uint32_t)m->moe_step)))))
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory writing metadata");
    if ((m->n_swa > 0 && (st = hr_gguf_writer_u32(w, KEY("attention.sliding_window"), (uint32_t)m->n_swa))) ||
        (m->rope_theta_swa > 0 && (st = hr_gguf_writer_f32(w, KEY("rope.freq_base_swa"), m->rope_theta_swa))) ||
        (m->rope_scaling &&
         ((st = hr_gguf_writer_str(w, KEY("rope.scaling.type"), m->rope_scaling)) ||
          (st = hr_gguf_writer_f32(w, KEY("rope.scaling.factor"), m->rope_factor)))) ||
        ((m->rope_scaling || m->longrope) && m->rope_orig_ctx > 0 &&
         (st = hr_gguf_writer_u32(w, KEY("rope.scaling.original_context_length"), (uint32_t)m->rope_orig_ctx))) ||
        (m->yarn_beta_fast > 0 &&
         ((st = hr_gguf_writer_f32(w, KEY("rope.scaling.yarn_beta_fast"), m->yarn_beta_fast)) ||
          (st = hr_gguf_writer_f32(w, KEY("rope.scaling.yarn_beta_slow"), m->yarn_beta_slow)))) ||
        (m->rope_attn_factor > 0 &&
         (st = hr_gguf_writer_f32(w, KEY("rope.scaling.attn_factor"), m->rope_attn_factor))))
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory writing metadata");
#undef KEY
    return p->vocab_path ? copy_vocab(w, p->vocab_path, m->n_vocab, err) : minimal_vocab(w, m->n_vocab, err);
}

hr_status hr_synth_write(const hr_synth_params *p, hr_err *err)
{
    const hr_synth_model *m = p->model;
    plan_cfg cfg = cfg_of(p);
    size_t n_t = 0;
    stensor *ts = make_list(&cfg, &n_t);
    if (p->metadata_only)
        n_t = 0;
    hr_gguf_writer *w = hr_gguf_writer_new();
    hr_pool *pool = hr_pool_new(p->n_threads > 0 ? p->n_threads : 1);
    char *tmp = malloc(strlen(p->out_path) + 8);
    uint8_t *chunk = NULL;
    float *scratch = NULL;
    hr_status st = HR_OK;
    bool opened = false;
    if (!ts || !w || !pool || !tmp) {
        st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
        goto done;
    }
    sprintf(tmp, "%s.tmp", p->out_path);
    if ((st = write_metadata(w, p, cfg.n_layer, err)))
        goto done;

    uint64_t total = 0;
    int64_t max_ne0 = 1;
    size_t max_row = 0;
    for (size_t i = 0; i < n_t; i++) {
        const stensor *t = &ts[i];
        if (!t->row_bytes) {
            st = hr_err_set(err, HR_ERR_INVALID, "tensor '%s': %lld columns do not fit type %s", t->name,
                            (long long)t->ne[0], hr_type_name(t->type));
            goto done;
        }
        /* a type the quantiser lacks fails here, before gigabytes are generated */
        static const float zeros[256];
        uint8_t probe[1024];
        if (!hr_quantize_row(t->type, zeros, probe, 256)) {
            if (t->type == HR_SYNTH_TYPE_MXFP4)
                st = hr_err_set(err, HR_ERR_UNSUPPORTED,
                                "tensor '%s' is MXFP4 (type 39), which this build's quantiser cannot write yet "
                                "(choose another expert type, e.g. --expert-type Q8_0)",
                                t->name);
            else
                st = hr_err_set(err, HR_ERR_UNSUPPORTED, "tensor '%s': this build cannot quantise type %s",
                                t->name, hr_type_name(t->type));
            goto done;
        }
        size_t size = t->row_bytes * (size_t)n_rows(t);
        if (hr_gguf_writer_tensor_decl(w, t->name, t->type, t->n_dims, t->ne, size)) {
            st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
            goto done;
        }
        total += size;
        if (t->ne[0] > max_ne0)
            max_ne0 = t->ne[0];
        if (t->row_bytes > max_row)
            max_row = t->row_bytes;
    }
    int nth = hr_pool_n_threads(pool);
    const size_t chunk_cap = (size_t)16 << 20;
    size_t chunk_size = chunk_cap > max_row ? chunk_cap : max_row;
    chunk = malloc(chunk_size);
    scratch = malloc((size_t)nth * (size_t)max_ne0 * sizeof *scratch);
    if (!chunk || !scratch) {
        st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((st = hr_gguf_writer_stream_open(w, tmp, err)))
        goto done;
    opened = true;
    uint64_t done_bytes = 0;
    for (size_t i = 0; i < n_t; i++) {
        const stensor *t = &ts[i];
        gen_job j = {.m = m, .t = t, .tseed = mix64(p->seed ^ hash_str(t->name)), .dst = chunk,
                     .scratch = scratch, .max_ne0 = max_ne0};
        int64_t rows_per = (int64_t)(chunk_size / t->row_bytes);
        int64_t rows = (int64_t)n_rows(t);
        for (int64_t r = 0; r < rows; r += rows_per) {
            j.row0 = r;
            j.nrows = rows - r < rows_per ? rows - r : rows_per;
            hr_pool_run(j.nrows >= 4 * nth ? pool : NULL, gen_rows, &j);
            if (j.bad) {
                if (t->type == HR_SYNTH_TYPE_MXFP4)
                    st = hr_err_set(err, HR_ERR_UNSUPPORTED,
                                    "quantising '%s' to MXFP4 (type 39) failed: this build's quantiser has no MXFP4 "
                                    "(choose another expert type, e.g. --expert-type Q8_0)",
                                    t->name);
                else
                    st = hr_err_set(err, HR_ERR_INVALID, "quantising '%s' to %s failed", t->name,
                                    hr_type_name(t->type));
                goto done;
            }
            size_t n = (size_t)j.nrows * t->row_bytes;
            if ((st = hr_gguf_writer_stream_data(w, chunk, n, err)))
                goto done;
            done_bytes += n;
            if (p->progress)
                p->progress(p->progress_ud, done_bytes, total);
        }
    }
    opened = false;
    if ((st = hr_gguf_writer_stream_close(w, err)))
        goto done;
    if (rename(tmp, p->out_path))
        st = hr_err_set(err, HR_ERR_IO, "cannot rename '%s' to '%s'", tmp, p->out_path);
done:
    if (opened)
        hr_gguf_writer_stream_close(w, NULL);
    if (st && tmp)
        remove(tmp);
    free(chunk);
    free(scratch);
    free(tmp);
    hr_pool_free(pool);
    hr_gguf_writer_free(w);
    free(ts);
    return st;
}
