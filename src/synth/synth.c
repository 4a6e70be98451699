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
    {"Qwen2.5-0.5B", "qwen2", "0.5B", 896, 24, 14, 2, 64, 4864, 151936, 32768, true, true, false, 1e6f, 1e-6f, 0, 0, 0, 0},
    {"Qwen2.5-1.5B", "qwen2", "1.5B", 1536, 28, 12, 2, 128, 8960, 151936, 32768, true, true, false, 1e6f, 1e-6f, 0, 0, 0, 0},
    {"Qwen2.5-3B", "qwen2", "3B", 2048, 36, 16, 2, 128, 11008, 151936, 32768, true, true, false, 1e6f, 1e-6f, 0, 0, 0, 0},
    {"Qwen2.5-7B", "qwen2", "7B", 3584, 28, 28, 4, 128, 18944, 152064, 32768, false, true, false, 1e6f, 1e-6f, 0, 0, 0, 0},
    {"Llama-3.2-1B", "llama", "1B", 2048, 16, 32, 8, 64, 8192, 128256, 131072, true, false, false, 5e5f, 1e-5f, 32.0f, 1.0f, 4.0f, 8192},
    {"Llama-3.2-3B", "llama", "3B", 3072, 28, 24, 8, 128, 8192, 128256, 131072, true, false, false, 5e5f, 1e-5f, 32.0f, 1.0f, 4.0f, 8192},
    {"Llama-3.1-8B", "llama", "8B", 4096, 32, 32, 8, 128, 14336, 128256, 131072, false, false, false, 5e5f, 1e-5f, 8.0f, 1.0f, 4.0f, 8192},
    {"Qwen3-0.6B", "qwen3", "0.6B", 1024, 28, 16, 8, 128, 3072, 151936, 40960, true, false, true, 1e6f, 1e-6f, 0, 0, 0, 0},
    {"Qwen3-1.7B", "qwen3", "1.7B", 2048, 28, 16, 8, 128, 6144, 151936, 40960, true, false, true, 1e6f, 1e-6f, 0, 0, 0, 0},
    {"Qwen3-4B", "qwen3", "4B", 2560, 36, 32, 8, 128, 9728, 151936, 40960, true, false, true, 1e6f, 1e-6f, 0, 0, 0, 0},
    {"Qwen3-8B", "qwen3", "8B", 4096, 36, 32, 8, 128, 12288, 151936, 40960, false, false, true, 1e6f, 1e-6f, 0, 0, 0, 0},
    /* tiny shapes for tests: tiny-qwen2 has rows that are not a multiple of 256
     * (K-quant fallbacks), tiny-qwen3 a head size != n_embd / n_head */
    {"tiny-llama", "llama", "3M", 256, 2, 4, 2, 64, 768, 512, 512, false, false, false, 5e5f, 1e-5f, 32.0f, 1.0f, 4.0f, 8192},
    {"tiny-qwen2", "qwen2", "1M", 192, 2, 6, 2, 32, 512, 512, 512, true, true, false, 1e6f, 1e-6f, 0, 0, 0, 0},
    {"tiny-qwen3", "qwen3", "2M", 256, 2, 4, 2, 128, 768, 512, 512, true, false, true, 1e6f, 1e-6f, 0, 0, 0, 0},
};

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
    {36, "TQ1_0"},  {37, "TQ2_0"},  {38, "MXFP4"},
};

static const hr_ftype k_synth_ftypes[] = {HR_FTYPE_F32,  HR_FTYPE_F16,    HR_FTYPE_Q8_0,   HR_FTYPE_Q6_K,
                                          HR_FTYPE_Q5_0, HR_FTYPE_Q4_0,   HR_FTYPE_Q5_K_M, HR_FTYPE_Q4_K_M};

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

const char *hr_synth_ftype_list(void) { return "F32 F16 Q8_0 Q6_K Q5_0 Q4_0 Q5_K_M Q4_K_M"; }

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
                              bool has_output)
{
    if (n_dims < 2)
        return HR_TYPE_F32;
    uint32_t t = default_type(ft);
    if (t == HR_TYPE_F32 || t == HR_TYPE_F16)
        return t;
    bool km = ft == HR_FTYPE_Q4_K_M || ft == HR_FTYPE_Q5_K_M;
    if (!strcmp(name, "output.weight") || (!has_output && !strcmp(name, "token_embd.weight"))) {
        if (ne0 % 256)
            t = HR_TYPE_Q8_0;
        else if (t != HR_TYPE_Q8_0)
            t = HR_TYPE_Q6_K;
    } else if (km && (has_suffix(name, ".attn_v.weight") || has_suffix(name, ".ffn_down.weight"))) {
        int32_t il = layer_of(name);
        if (il >= 0 && more_bits(il, n_layer))
            t = HR_TYPE_Q6_K;
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

enum { K_WEIGHT, K_NORM, K_BIAS, K_ROPE };

typedef struct {
    char name[48];
    uint32_t n_dims;
    int64_t ne[2];
    int kind;
    uint32_t type;
    size_t row_bytes;
} stensor;

/* Fills out[] (if not NULL) and returns the count; order as llama.cpp's converter writes them. */
static size_t tensor_list(const hr_synth_model *m, hr_ftype ft, stensor *out)
{
    size_t n = 0;
    int64_t q_out = (int64_t)m->n_head * m->head_dim, kv_out = (int64_t)m->n_head_kv * m->head_dim;
#define ADD(kind_, ne0_, ne1_, ...)                                                                           \
    do {                                                                                                        \
        if (out) {                                                                                              \
            stensor *t_ = &out[n];                                                                              \
            snprintf(t_->name, sizeof t_->name, __VA_ARGS__);                                                   \
            t_->kind = kind_;                                                                                   \
            t_->ne[0] = ne0_;                                                                                   \
            t_->ne[1] = ne1_;                                                                                   \
            t_->n_dims = ne1_ > 0 ? 2 : 1;                                                                      \
            if (t_->ne[1] <= 0)                                                                                 \
                t_->ne[1] = 1;                                                                                  \
            t_->type = hr_synth_tensor_type(ft, t_->name, t_->n_dims, t_->ne[0], m->n_layer, !m->tied);         \
            t_->row_bytes = hr_row_size(t_->type, t_->ne[0]);                                                   \
        }                                                                                                       \
        n++;                                                                                                    \
    } while (0)
    ADD(K_WEIGHT, m->n_embd, m->n_vocab, "token_embd.weight");
    if (m->rope_factor > 0)
        ADD(K_ROPE, m->head_dim / 2, 0, "rope_freqs.weight");
    for (int32_t i = 0; i < m->n_layer; i++) {
        ADD(K_NORM, m->n_embd, 0, "blk.%d.attn_norm.weight", i);
        ADD(K_WEIGHT, m->n_embd, q_out, "blk.%d.attn_q.weight", i);
        if (m->qkv_bias)
            ADD(K_BIAS, q_out, 0, "blk.%d.attn_q.bias", i);
        ADD(K_WEIGHT, m->n_embd, kv_out, "blk.%d.attn_k.weight", i);
        if (m->qkv_bias)
            ADD(K_BIAS, kv_out, 0, "blk.%d.attn_k.bias", i);
        ADD(K_WEIGHT, m->n_embd, kv_out, "blk.%d.attn_v.weight", i);
        if (m->qkv_bias)
            ADD(K_BIAS, kv_out, 0, "blk.%d.attn_v.bias", i);
        ADD(K_WEIGHT, q_out, m->n_embd, "blk.%d.attn_output.weight", i);
        if (m->qk_norm) {
            ADD(K_NORM, m->head_dim, 0, "blk.%d.attn_q_norm.weight", i);
            ADD(K_NORM, m->head_dim, 0, "blk.%d.attn_k_norm.weight", i);
        }
        ADD(K_NORM, m->n_embd, 0, "blk.%d.ffn_norm.weight", i);
        ADD(K_WEIGHT, m->n_embd, m->n_ff, "blk.%d.ffn_gate.weight", i);
        ADD(K_WEIGHT, m->n_embd, m->n_ff, "blk.%d.ffn_up.weight", i);
        ADD(K_WEIGHT, m->n_ff, m->n_embd, "blk.%d.ffn_down.weight", i);
    }
    ADD(K_NORM, m->n_embd, 0, "output_norm.weight");
    if (!m->tied)
        ADD(K_WEIGHT, m->n_embd, m->n_vocab, "output.weight");
#undef ADD
    return n;
}

static stensor *make_list(const hr_synth_model *m, hr_ftype ft, size_t *n)
{
    *n = tensor_list(m, ft, NULL);
    stensor *t = calloc(*n, sizeof *t);
    if (t)
        tensor_list(m, ft, t);
    return t;
}

uint64_t hr_synth_tensor_bytes(const hr_synth_model *m, hr_ftype ft)
{
    size_t n;
    stensor *t = make_list(m, ft, &n);
    uint64_t sum = 0;
    for (size_t i = 0; t && i < n; i++)
        sum += (uint64_t)t[i].row_bytes * (uint64_t)t[i].ne[1];
    free(t);
    return sum;
}

uint64_t hr_synth_n_params(const hr_synth_model *m)
{
    size_t n;
    stensor *t = make_list(m, HR_FTYPE_F32, &n);
    uint64_t sum = 0;
    for (size_t i = 0; t && i < n; i++)
        sum += (uint64_t)t[i].ne[0] * (uint64_t)t[i].ne[1];
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
    int32_t n = m->head_dim / 2;
    double lo_wavelen = m->rope_orig_ctx / m->rope_low_freq, hi_wavelen = m->rope_orig_ctx / m->rope_high_freq;
    for (int32_t i = 0; i < n; i++) {
        double freq = pow(m->rope_theta, -2.0 * i / m->head_dim);
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

static hr_status write_metadata(hr_gguf_writer *w, const hr_synth_params *p, hr_err *err)
{
    const hr_synth_model *m = p->model;
    char key[128], name[96];
    hr_status st = HR_OK;
#define KEY(s) (snprintf(key, sizeof key, "%s.%s", m->arch, s), key)
    snprintf(name, sizeof name, "hearth-synth %s", m->name);
    if ((st = hr_gguf_writer_str(w, "general.architecture", m->arch)) ||
        (st = hr_gguf_writer_str(w, "general.type", "model")) || (st = hr_gguf_writer_str(w, "general.name", name)) ||
        (st = hr_gguf_writer_str(w, "general.size_label", m->size_label)) ||
        (st = hr_gguf_writer_u32(w, "general.file_type", (uint32_t)p->ftype)) ||
        (st = hr_gguf_writer_u32(w, "general.quantization_version", 2)) ||
        (st = hr_gguf_writer_str(w, "hearth.synth.model", m->name)) ||
        (st = hr_gguf_writer_u64(w, "hearth.synth.seed", p->seed)) ||
        (st = hr_gguf_writer_u32(w, KEY("block_count"), (uint32_t)m->n_layer)) ||
        (st = hr_gguf_writer_u32(w, KEY("context_length"), (uint32_t)m->n_ctx)) ||
        (st = hr_gguf_writer_u32(w, KEY("embedding_length"), (uint32_t)m->n_embd)) ||
        (st = hr_gguf_writer_u32(w, KEY("feed_forward_length"), (uint32_t)m->n_ff)) ||
        (st = hr_gguf_writer_u32(w, KEY("attention.head_count"), (uint32_t)m->n_head)) ||
        (st = hr_gguf_writer_u32(w, KEY("attention.head_count_kv"), (uint32_t)m->n_head_kv)) ||
        (st = hr_gguf_writer_f32(w, KEY("rope.freq_base"), m->rope_theta)) ||
        (st = hr_gguf_writer_f32(w, KEY("attention.layer_norm_rms_epsilon"), m->rms_eps)) ||
        (st = hr_gguf_writer_u32(w, KEY("attention.key_length"), (uint32_t)m->head_dim)) ||
        (st = hr_gguf_writer_u32(w, KEY("attention.value_length"), (uint32_t)m->head_dim)) ||
        (st = hr_gguf_writer_u32(w, KEY("rope.dimension_count"), (uint32_t)m->head_dim)) ||
        (st = hr_gguf_writer_u32(w, KEY("vocab_size"), (uint32_t)m->n_vocab)))
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory writing metadata");
#undef KEY
    return p->vocab_path ? copy_vocab(w, p->vocab_path, m->n_vocab, err) : minimal_vocab(w, m->n_vocab, err);
}

hr_status hr_synth_write(const hr_synth_params *p, hr_err *err)
{
    const hr_synth_model *m = p->model;
    size_t n_t = 0;
    stensor *ts = make_list(m, p->ftype, &n_t);
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
    if ((st = write_metadata(w, p, err)))
        goto done;

    uint64_t total = 0;
    int64_t max_ne0 = 0;
    size_t max_row = 0;
    for (size_t i = 0; i < n_t; i++) {
        const stensor *t = &ts[i];
        if (!t->row_bytes) {
            st = hr_err_set(err, HR_ERR_INVALID, "tensor '%s': %lld columns do not fit type %s", t->name,
                            (long long)t->ne[0], hr_type_name(t->type));
            goto done;
        }
        size_t size = t->row_bytes * (size_t)t->ne[1];
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
        for (int64_t r = 0; r < t->ne[1]; r += rows_per) {
            j.row0 = r;
            j.nrows = t->ne[1] - r < rows_per ? t->ne[1] - r : rows_per;
            hr_pool_run(j.nrows >= 4 * nth ? pool : NULL, gen_rows, &j);
            if (j.bad) {
                st = hr_err_set(err, HR_ERR_INVALID, "quantising '%s' to %s failed", t->name, hr_type_name(t->type));
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
