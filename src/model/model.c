/* model.c - binds GGUF metadata and tensors to a model description.
 *
 * Validation happens here, once, so the forward pass can trust every shape:
 * each tensor the architecture needs must exist with the expected shape and
 * a supported type, and the vocabulary must match the embedding and output
 * matrices. */
#include "model/model_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "tok/vocab.h"

static const struct {
    const char *name;
    hr_arch arch;
    hr_rope_style rope;
} arch_table[] = {
    {"llama", HR_ARCH_LLAMA, HR_ROPE_NORM},
    {"qwen2", HR_ARCH_QWEN2, HR_ROPE_NEOX},
    {"qwen3", HR_ARCH_QWEN3, HR_ROPE_NEOX},
};

hr_arch hr_arch_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof arch_table / sizeof arch_table[0]; i++)
        if (!strcmp(arch_table[i].name, name))
            return arch_table[i].arch;
    return 0;
}

typedef struct {
    hr_model *m;
    hr_err *err;
    size_t arena_used, arena_cap;
} loader;

/* Reads a required (or optional) integer hyperparameter "<arch>.<key>". */
static hr_status hp_int(loader *l, const char *key, int32_t *out, bool required, int32_t min, int32_t max)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", l->m->hp.arch_name, key);
    int64_t v;
    if (!hr_gguf_get_i64(l->m->gguf, full, &v)) {
        if (hr_gguf_find(l->m->gguf, full))
            return hr_err_set(l->err, HR_ERR_FORMAT, "metadata '%s' is not an integer", full);
        if (required)
            return hr_err_set(l->err, HR_ERR_FORMAT, "missing metadata '%s'", full);
        return HR_OK;
    }
    if (v < min || v > max)
        return hr_err_set(l->err, HR_ERR_FORMAT, "metadata '%s' = %lld is out of range [%d, %d]", full,
                          (long long)v, min, max);
    *out = (int32_t)v;
    return HR_OK;
}

static hr_status hp_float(loader *l, const char *key, float *out, bool required)
{
    char full[128];
    snprintf(full, sizeof full, "%s.%s", l->m->hp.arch_name, key);
    if (!hr_gguf_get_f32(l->m->gguf, full, out)) {
        if (required || hr_gguf_find(l->m->gguf, full))
            return hr_err_set(l->err, HR_ERR_FORMAT, "missing or non-numeric metadata '%s'", full);
    }
    return HR_OK;
}

static const hr_gguf_tensor *find_tensor(loader *l, const char *name, bool required, hr_status *st)
{
    const hr_gguf_tensor *t = hr_gguf_find_tensor(l->m->gguf, name);
    if (!t && required)
        *st = hr_err_set(l->err, HR_ERR_FORMAT, "missing tensor '%s'", name);
    return t;
}

static hr_status check_type(loader *l, const char *name, uint32_t type)
{
    const hr_type_traits *tr = hr_type_get(type);
    if (!tr || !tr->supported)
        return hr_err_set(l->err, HR_ERR_UNSUPPORTED, "tensor '%s' has unsupported type %s", name,
                          hr_type_name(type));
    return HR_OK;
}

/* Binds a 2-D weight of shape (ne0, ne1). */
static hr_status bind_matrix(loader *l, hr_weight *w, const char *name, int64_t ne0, int64_t ne1, bool required)
{
    hr_status st = HR_OK;
    const hr_gguf_tensor *t = find_tensor(l, name, required, &st);
    if (!t)
        return st;
    if (t->n_dims != 2 || t->ne[0] != ne0 || t->ne[1] != ne1)
        return hr_err_set(l->err, HR_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld], expected [%lld, %lld]",
                          name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)ne0,
                          (long long)ne1);
    if ((st = check_type(l, name, t->type)))
        return st;
    w->data = t->data;
    w->type = t->type;
    w->ne0 = ne0;
    w->ne1 = ne1;
    w->row_bytes = hr_row_size(t->type, ne0);
    return HR_OK;
}

/* Binds a 1-D tensor of n elements as a float copy (NULL if absent and optional). */
static hr_status bind_vector(loader *l, const float **out, const char *name, int64_t n, bool required)
{
    hr_status st = HR_OK;
    *out = NULL;
    const hr_gguf_tensor *t = find_tensor(l, name, required, &st);
    if (!t)
        return st;
    if (t->n_dims != 1 || t->ne[0] != n)
        return hr_err_set(l->err, HR_ERR_FORMAT, "tensor '%s' has %lld elements, expected %lld", name,
                          (long long)t->ne[0], (long long)n);
    if ((st = check_type(l, name, t->type)))
        return st;
    if (l->arena_used + (size_t)n > l->arena_cap)
        return hr_err_set(l->err, HR_ERR_INVALID, "internal: float arena too small");
    float *dst = l->m->f32_arena + l->arena_used;
    l->arena_used += (size_t)n;
    hr_type_get(t->type)->to_float(t->data, dst, n);
    *out = dst;
    return HR_OK;
}

static hr_status load_hparams(loader *l)
{
    hr_model *m = l->m;
    hr_hparams *hp = &m->hp;
    hr_gguf_str arch;
    hr_status st;
    if (!hr_gguf_get_str(m->gguf, "general.architecture", &arch))
        return hr_err_set(l->err, HR_ERR_FORMAT, "missing metadata 'general.architecture'");
    hr_gguf_str_copy(arch, hp->arch_name, sizeof hp->arch_name);
    for (size_t i = 0; i < sizeof arch_table / sizeof arch_table[0]; i++)
        if (hr_gguf_str_eq(arch, arch_table[i].name)) {
            hp->arch = arch_table[i].arch;
            hp->rope_style = arch_table[i].rope;
        }
    if (!hp->arch || arch.len >= sizeof hp->arch_name)
        return hr_err_set(l->err, HR_ERR_UNSUPPORTED, "unknown architecture '%s' (supported: llama, qwen2, qwen3)",
                          hp->arch_name);

    const int32_t big = 1 << 24;
    if ((st = hp_int(l, "embedding_length", &hp->n_embd, true, 1, big)) ||
        (st = hp_int(l, "block_count", &hp->n_layer, true, 1, 4096)) ||
        (st = hp_int(l, "feed_forward_length", &hp->n_ff, true, 1, big)) ||
        (st = hp_int(l, "attention.head_count", &hp->n_head, true, 1, 4096)))
        return st;
    hp->n_head_kv = hp->n_head;
    hp->n_ctx_train = 2048;
    if ((st = hp_int(l, "attention.head_count_kv", &hp->n_head_kv, false, 1, 4096)) ||
        (st = hp_int(l, "context_length", &hp->n_ctx_train, false, 1, 1 << 30)))
        return st;
    if (hp->n_embd % hp->n_head)
        return hr_err_set(l->err, HR_ERR_FORMAT, "embedding length %d is not a multiple of the head count %d",
                          hp->n_embd, hp->n_head);
    if (hp->n_head % hp->n_head_kv)
        return hr_err_set(l->err, HR_ERR_FORMAT, "head count %d is not a multiple of the KV head count %d",
                          hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((st = hp_int(l, "attention.key_length", &hp->head_dim, false, 1, 65536)))
        return st;
    hp->head_dim_v = hp->head_dim;
    hp->rope_dim = hp->head_dim;
    if ((st = hp_int(l, "attention.value_length", &hp->head_dim_v, false, 1, 65536)) ||
        (st = hp_int(l, "rope.dimension_count", &hp->rope_dim, false, 2, 65536)))
        return st;
    if (hp->rope_dim > hp->head_dim || hp->rope_dim % 2)
        return hr_err_set(l->err, HR_ERR_FORMAT, "rope dimension %d does not fit head size %d", hp->rope_dim,
                          hp->head_dim);

    hp->rms_eps = 1e-5f;
    hp->rope_theta = 10000.0f;
    hp->rope_freq_scale = 1.0f;
    if ((st = hp_float(l, "attention.layer_norm_rms_epsilon", &hp->rms_eps, true)) ||
        (st = hp_float(l, "rope.freq_base", &hp->rope_theta, false)))
        return st;
    if (!(hp->rms_eps > 0.0f) || !(hp->rope_theta > 0.0f))
        return hr_err_set(l->err, HR_ERR_FORMAT, "invalid rms epsilon %g or rope base %g", hp->rms_eps,
                          hp->rope_theta);

    char key[128];
    hr_gguf_str scaling;
    snprintf(key, sizeof key, "%s.rope.scaling.type", hp->arch_name);
    if (hr_gguf_get_str(m->gguf, key, &scaling) && !hr_gguf_str_eq(scaling, "none")) {
        char sname[32];
        hr_gguf_str_copy(scaling, sname, sizeof sname);
        if (!hr_gguf_str_eq(scaling, "linear"))
            return hr_err_set(l->err, HR_ERR_UNSUPPORTED, "rope scaling type '%s' is not supported yet", sname);
        float factor = 1.0f;
        if ((st = hp_float(l, "rope.scaling.factor", &factor, false)))
            return st;
        if (!(factor > 0.0f))
            return hr_err_set(l->err, HR_ERR_FORMAT, "invalid rope scaling factor %g", factor);
        hp->rope_freq_scale = 1.0f / factor;
    }
    return HR_OK;
}

static hr_status load_tensors(loader *l)
{
    hr_model *m = l->m;
    hr_hparams *hp = &m->hp;
    hr_status st;
    int64_t q_out = (int64_t)hp->n_head * hp->head_dim;
    int64_t k_out = (int64_t)hp->n_head_kv * hp->head_dim;
    int64_t v_out = (int64_t)hp->n_head_kv * hp->head_dim_v;
    int64_t attn_out = (int64_t)hp->n_head * hp->head_dim_v;

    const hr_gguf_tensor *emb = hr_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!emb)
        return hr_err_set(l->err, HR_ERR_FORMAT, "missing tensor 'token_embd.weight'");
    if (emb->n_dims != 2 || emb->ne[0] != hp->n_embd || emb->ne[1] < 1 || emb->ne[1] > (1 << 24))
        return hr_err_set(l->err, HR_ERR_FORMAT, "tensor 'token_embd.weight' has shape [%lld, %lld], expected [%d, n_vocab]",
                          (long long)emb->ne[0], (long long)emb->ne[1], hp->n_embd);
    hp->n_vocab = (int32_t)emb->ne[1];

    /* float copies: norms, biases, rope factors */
    size_t per_layer = 2 * (size_t)hp->n_embd + (size_t)(q_out + k_out + v_out) + 2 * (size_t)hp->head_dim;
    l->arena_cap = per_layer * (size_t)hp->n_layer + (size_t)hp->n_embd + (size_t)hp->rope_dim;
    m->f32_arena = malloc(l->arena_cap * sizeof(float));
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->f32_arena || !m->layers)
        return hr_err_set(l->err, HR_ERR_NOMEM, "out of memory");

    if ((st = bind_matrix(l, &m->tok_embd, "token_embd.weight", hp->n_embd, hp->n_vocab, true)) ||
        (st = bind_vector(l, &m->output_norm, "output_norm.weight", hp->n_embd, true)))
        return st;
    if (hr_gguf_find_tensor(m->gguf, "output.weight")) {
        if ((st = bind_matrix(l, &m->output, "output.weight", hp->n_embd, hp->n_vocab, true)))
            return st;
    } else {
        m->output = m->tok_embd;
        hp->tied_output = true;
    }
    if ((st = bind_vector(l, &m->rope_freqs, "rope_freqs.weight", hp->rope_dim / 2, false)))
        return st;
    hp->has_rope_freqs = m->rope_freqs != NULL;

    for (int32_t i = 0; i < hp->n_layer; i++) {
        hr_layer_weights *L = &m->layers[i];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d." s, i), n)
        if ((st = bind_vector(l, &L->attn_norm, NAME("attn_norm.weight"), hp->n_embd, true)) ||
            (st = bind_matrix(l, &L->wq, NAME("attn_q.weight"), hp->n_embd, q_out, true)) ||
            (st = bind_matrix(l, &L->wk, NAME("attn_k.weight"), hp->n_embd, k_out, true)) ||
            (st = bind_matrix(l, &L->wv, NAME("attn_v.weight"), hp->n_embd, v_out, true)) ||
            (st = bind_matrix(l, &L->wo, NAME("attn_output.weight"), attn_out, hp->n_embd, true)) ||
            (st = bind_vector(l, &L->ffn_norm, NAME("ffn_norm.weight"), hp->n_embd, true)) ||
            (st = bind_matrix(l, &L->ffn_gate, NAME("ffn_gate.weight"), hp->n_embd, hp->n_ff, true)) ||
            (st = bind_matrix(l, &L->ffn_up, NAME("ffn_up.weight"), hp->n_embd, hp->n_ff, true)) ||
            (st = bind_matrix(l, &L->ffn_down, NAME("ffn_down.weight"), hp->n_ff, hp->n_embd, true)))
            return st;
        bool biases = hp->arch == HR_ARCH_QWEN2;
        if ((st = bind_vector(l, &L->bq, NAME("attn_q.bias"), q_out, biases)) ||
            (st = bind_vector(l, &L->bk, NAME("attn_k.bias"), k_out, biases)) ||
            (st = bind_vector(l, &L->bv, NAME("attn_v.bias"), v_out, biases)))
            return st;
        bool qk_norm = hp->arch == HR_ARCH_QWEN3;
        if ((st = bind_vector(l, &L->q_norm, NAME("attn_q_norm.weight"), hp->head_dim, qk_norm)) ||
            (st = bind_vector(l, &L->k_norm, NAME("attn_k_norm.weight"), hp->head_dim, qk_norm)))
            return st;
#undef NAME
    }
    return HR_OK;
}

/* The tokenizer's vocabulary must match the embedding and output rows. */
static hr_status check_vocab(loader *l)
{
    hr_model *m = l->m;
    const hr_gguf_value *toks = hr_gguf_get_arr(m->gguf, "tokenizer.ggml.tokens", HR_GGUF_STRING);
    if (!toks)
        return hr_err_set(l->err, HR_ERR_FORMAT, "missing vocabulary 'tokenizer.ggml.tokens'");
    if (toks->v.arr.n != (uint64_t)m->hp.n_vocab)
        return hr_err_set(l->err, HR_ERR_FORMAT,
                          "vocabulary has %llu tokens but the embedding/output matrices have %d rows",
                          (unsigned long long)toks->v.arr.n, m->hp.n_vocab);
    hr_status st = hr_vocab_load(m->gguf, &m->vocab, l->err);
    if (st)
        return hr_err_prefix(l->err, "tokenizer");
    return HR_OK;
}

hr_status hr_model_load(const char *path, hr_model **out, hr_err *err)
{
    *out = NULL;
    hr_model *m = calloc(1, sizeof *m);
    if (!m)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    loader l = {.m = m, .err = err};
    hr_status st = hr_gguf_open(path, &m->gguf, err);
    if (!st && (st = load_hparams(&l)) == HR_OK && (st = load_tensors(&l)) == HR_OK)
        st = check_vocab(&l);
    if (st) {
        if (m->gguf)
            hr_err_prefix(err, "%s", path);
        hr_model_free(m);
        return st;
    }
    *out = m;
    return HR_OK;
}

void hr_model_free(hr_model *m)
{
    if (!m)
        return;
    hr_vocab_free(m->vocab);
    free(m->layers);
    free(m->f32_arena);
    hr_gguf_close(m->gguf);
    free(m);
}

const hr_hparams *hr_model_hparams(const hr_model *m) { return &m->hp; }
const hr_gguf *hr_model_gguf(const hr_model *m) { return m->gguf; }
const struct hr_vocab *hr_model_vocab(const hr_model *m) { return m->vocab; }

uint64_t hr_model_weight_bytes(const hr_model *m)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < hr_gguf_n_tensors(m->gguf); i++)
        sum += hr_gguf_tensor_at(m->gguf, i)->size;
    return sum;
}

uint64_t hr_model_n_params(const hr_model *m)
{
    uint64_t sum = 0;
    for (uint64_t i = 0; i < hr_gguf_n_tensors(m->gguf); i++) {
        const hr_gguf_tensor *t = hr_gguf_tensor_at(m->gguf, i);
        uint64_t n = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            n *= (uint64_t)t->ne[d];
        sum += n;
    }
    return sum;
}
