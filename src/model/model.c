/* model.c - binds GGUF metadata and tensors to a model description.
 *
 * Validation happens here, once, so the forward pass can trust every shape:
 * each tensor the architecture needs must exist with the expected shape and
 * a supported type, and the vocabulary must match the embedding and output
 * matrices. This file reads what every family shares and provides the
 * binding helpers; each family's own keys and tensors are read by its file
 * in src/model/arch_*.c, listed in `families` below (the one place to add a
 * family). */
#include "model/model_impl.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/quant.h"
#include "tok/vocab.h"

static const hr_arch_family *const families[] = {
    &hr_arch_llama, &hr_arch_qwen2, &hr_arch_qwen3, &hr_arch_qwen3moe,
    &hr_arch_gptoss, &hr_arch_gemma3, &hr_arch_phi3, &hr_arch_llama4,
};
#define N_FAMILIES (sizeof families / sizeof families[0])

static const hr_arch_family *family_of(const char *name)
{
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (!strcmp(families[i]->name, name))
            return families[i];
    return NULL;
}

/* "llama, qwen2, ...": the names with a loader. */
static void arch_list(char *buf, size_t cap)
{
    buf[0] = 0;
    for (size_t i = 0, n = 0; i < N_FAMILIES && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", families[i]->name);
}

/* Float copies live in chunks freed with the model. */
struct hr_arena_chunk {
    struct hr_arena_chunk *next;
    float data[];
};

struct hr_loader {
    hr_model *m;
    hr_err *err;
};

hr_status hr_ld_fail(hr_loader *l, const char *fmt, ...)
{
    char msg[HR_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return hr_err_set(l->err, HR_ERR_FORMAT, "%s", msg);
}

static void full_key(hr_loader *l, const char *key, char *full, size_t cap)
{
    snprintf(full, cap, "%s.%s", l->m->hp.arch_name, key);
}

bool hr_ld_has(hr_loader *l, const char *key)
{
    char full[128];
    full_key(l, key, full, sizeof full);
    return hr_gguf_find(l->m->gguf, full) != NULL;
}

hr_status hr_ld_int(hr_loader *l, const char *key, int32_t *out, bool required, int32_t min, int32_t max)
{
    char full[128];
    full_key(l, key, full, sizeof full);
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

hr_status hr_ld_float(hr_loader *l, const char *key, float *out, bool required)
{
    char full[128];
    full_key(l, key, full, sizeof full);
    float v;
    if (!hr_gguf_get_f32(l->m->gguf, full, &v)) {
        if (required || hr_gguf_find(l->m->gguf, full))
            return hr_err_set(l->err, HR_ERR_FORMAT, "missing or non-numeric metadata '%s'", full);
        return HR_OK;
    }
    if (!isfinite(v))
        return hr_err_set(l->err, HR_ERR_FORMAT, "metadata '%s' is not finite", full);
    *out = v;
    return HR_OK;
}

hr_status hr_ld_rope_scaling(hr_loader *l, hr_rope_cfg *cfg)
{
    char key[128];
    hr_gguf_str scaling;
    hr_status st;
    full_key(l, "rope.scaling.type", key, sizeof key);
    if (!hr_gguf_get_str(l->m->gguf, key, &scaling) || hr_gguf_str_eq(scaling, "none"))
        return HR_OK;
    char sname[32];
    hr_gguf_str_copy(scaling, sname, sizeof sname);
    const bool yarn = hr_gguf_str_eq(scaling, "yarn");
    if (!yarn && !hr_gguf_str_eq(scaling, "linear"))
        return hr_err_set(l->err, HR_ERR_UNSUPPORTED, "rope scaling type '%s' is not supported", sname);
    float factor = 1.0f;
    if ((st = hr_ld_float(l, "rope.scaling.factor", &factor, false)))
        return st;
    if (!(factor > 0.0f))
        return hr_err_set(l->err, HR_ERR_FORMAT, "invalid rope scaling factor %g", factor);
    cfg->freq_scale = 1.0f / factor;
    if (yarn) {
        cfg->ext_factor = 1.0f;
        cfg->beta_fast = 32.0f;
        cfg->beta_slow = 1.0f;
        cfg->n_ctx_orig = l->m->hp.n_ctx_train;
        if ((st = hr_ld_float(l, "rope.scaling.yarn_beta_fast", &cfg->beta_fast, false)) ||
            (st = hr_ld_float(l, "rope.scaling.yarn_beta_slow", &cfg->beta_slow, false)) ||
            (st = hr_ld_int(l, "rope.scaling.original_context_length", &cfg->n_ctx_orig, false, 1, 1 << 30)))
            return st;
    }
    return HR_OK;
}

bool hr_ld_has_tensor(hr_loader *l, const char *name) { return hr_gguf_find_tensor(l->m->gguf, name) != NULL; }

static const hr_gguf_tensor *find_tensor(hr_loader *l, const char *name, bool required, hr_status *st)
{
    const hr_gguf_tensor *t = hr_gguf_find_tensor(l->m->gguf, name);
    if (!t && required)
        *st = hr_err_set(l->err, HR_ERR_FORMAT, "missing tensor '%s'", name);
    return t;
}

static hr_status check_type(hr_loader *l, const char *name, uint32_t type)
{
    const hr_type_traits *tr = hr_type_get(type);
    if (!tr || !tr->supported)
        return hr_err_set(l->err, HR_ERR_UNSUPPORTED, "tensor '%s' has unsupported type %s", name,
                          hr_type_name(type));
    return HR_OK;
}

static hr_status check_shape(hr_loader *l, const hr_gguf_tensor *t, const char *name, uint32_t nd, int64_t n0,
                             int64_t n1, int64_t n2)
{
    const int64_t want[3] = { n0, n1, n2 };
    bool ok = t->n_dims == nd;
    for (uint32_t d = 0; ok && d < nd; d++)
        ok = t->ne[d] == want[d];
    if (!ok)
        return hr_err_set(l->err, HR_ERR_FORMAT,
                          "tensor '%s' has shape [%lld, %lld, %lld] (%u-D), expected [%lld, %lld, %lld] (%u-D)", name,
                          (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], t->n_dims, (long long)n0,
                          (long long)n1, (long long)n2, nd);
    return HR_OK;
}

hr_status hr_ld_matrix(hr_loader *l, hr_weight *w, const char *name, int64_t ne0, int64_t ne1, bool required)
{
    hr_status st = HR_OK;
    const hr_gguf_tensor *t = find_tensor(l, name, required, &st);
    if (!t)
        return st;
    if ((st = check_shape(l, t, name, 2, ne0, ne1, 1)) || (st = check_type(l, name, t->type)))
        return st;
    if (!hr_row_size(t->type, ne0))
        return hr_err_set(l->err, HR_ERR_FORMAT, "tensor '%s': rows of %lld are not whole %s blocks", name,
                          (long long)ne0, hr_type_name(t->type));
    *w = (hr_weight){ .data = t->data, .type = t->type, .ne0 = ne0, .ne1 = ne1,
                      .row_bytes = hr_row_size(t->type, ne0) };
    return HR_OK;
}

hr_status hr_ld_matrix_rows(hr_loader *l, hr_weight *w, const char *name, int64_t ne0, int64_t total_rows,
                            int64_t row0, int64_t rows)
{
    hr_status st = hr_ld_matrix(l, w, name, ne0, total_rows, true);
    if (st)
        return st;
    w->data = (const char *)w->data + (size_t)row0 * w->row_bytes;
    w->ne1 = rows;
    return HR_OK;
}

hr_status hr_ld_experts(hr_loader *l, hr_weight *w, const char *name, int64_t ne0, int64_t ne1, int32_t n_expert,
                        bool required)
{
    hr_status st = HR_OK;
    const hr_gguf_tensor *t = find_tensor(l, name, required, &st);
    if (!t)
        return st;
    if ((st = check_shape(l, t, name, 3, ne0, ne1, n_expert)) || (st = check_type(l, name, t->type)))
        return st;
    if (!hr_row_size(t->type, ne0))
        return hr_err_set(l->err, HR_ERR_FORMAT, "tensor '%s': rows of %lld are not whole %s blocks", name,
                          (long long)ne0, hr_type_name(t->type));
    const size_t rb = hr_row_size(t->type, ne0);
    *w = (hr_weight){ .data = t->data, .type = t->type, .ne0 = ne0, .ne1 = ne1, .row_bytes = rb,
                      .n_expert = n_expert, .expert_bytes = rb * (size_t)ne1 };
    return HR_OK;
}

hr_status hr_ld_floats(hr_loader *l, const float **out, const char *name, int64_t n0, int64_t n1, bool required)
{
    hr_status st = HR_OK;
    *out = NULL;
    const hr_gguf_tensor *t = find_tensor(l, name, required, &st);
    if (!t)
        return st;
    if ((st = check_shape(l, t, name, n1 > 1 ? 2 : 1, n0, n1, 1)) || (st = check_type(l, name, t->type)))
        return st;
    const int64_t n = n0 * n1;
    if (!hr_row_size(t->type, n))
        return hr_err_set(l->err, HR_ERR_FORMAT, "tensor '%s' is not whole %s blocks", name, hr_type_name(t->type));
    struct hr_arena_chunk *c = malloc(sizeof *c + (size_t)n * sizeof(float));
    if (!c)
        return hr_err_set(l->err, HR_ERR_NOMEM, "out of memory");
    c->next = l->m->arena;
    l->m->arena = c;
    hr_type_get(t->type)->to_float(t->data, c->data, n);
    *out = c->data;
    return HR_OK;
}

hr_status hr_ld_llama_layer(hr_loader *l, hr_model *m, int32_t il, bool dense_ffn, const char *ffn_norm)
{
    const hr_layer_desc *d = &m->desc[il];
    hr_layer_weights *L = &m->layers[il];
    const int64_t D = m->hp.n_embd;
    const int64_t q_out = (int64_t)d->n_head * d->head_dim, k_out = (int64_t)d->n_head_kv * d->head_dim;
    const int64_t v_out = (int64_t)d->n_head_kv * d->head_dim_v, a_out = (int64_t)d->n_head * d->head_dim_v;
    char n[96];
    hr_status st;
#define NAME(s) (snprintf(n, sizeof n, "blk.%d." s, il), n)
    if ((st = hr_ld_floats(l, &L->attn_norm, NAME("attn_norm.weight"), D, 1, true)))
        return st;
    if (hr_ld_has_tensor(l, NAME("attn_qkv.weight"))) { /* fused: q rows, then k, then v */
        const int64_t tot = q_out + k_out + v_out;
        if ((st = hr_ld_matrix_rows(l, &L->wq, n, D, tot, 0, q_out)) ||
            (st = hr_ld_matrix_rows(l, &L->wk, n, D, tot, q_out, k_out)) ||
            (st = hr_ld_matrix_rows(l, &L->wv, n, D, tot, q_out + k_out, v_out)))
            return st;
    } else if ((st = hr_ld_matrix(l, &L->wq, NAME("attn_q.weight"), D, q_out, true)) ||
               (st = hr_ld_matrix(l, &L->wk, NAME("attn_k.weight"), D, k_out, true)) ||
               (st = hr_ld_matrix(l, &L->wv, NAME("attn_v.weight"), D, v_out, true)))
        return st;
    if ((st = hr_ld_matrix(l, &L->wo, NAME("attn_output.weight"), a_out, D, true)) ||
        (st = hr_ld_floats(l, &L->bq, NAME("attn_q.bias"), q_out, 1, false)) ||
        (st = hr_ld_floats(l, &L->bk, NAME("attn_k.bias"), k_out, 1, false)) ||
        (st = hr_ld_floats(l, &L->bv, NAME("attn_v.bias"), v_out, 1, false)) ||
        (st = hr_ld_floats(l, &L->bo, NAME("attn_output.bias"), D, 1, false)))
        return st;
    if (d->qk_norm == HR_QKNORM_RMS &&
        ((st = hr_ld_floats(l, &L->q_norm, NAME("attn_q_norm.weight"), d->head_dim, 1, true)) ||
         (st = hr_ld_floats(l, &L->k_norm, NAME("attn_k_norm.weight"), d->head_dim, 1, true))))
        return st;
    snprintf(n, sizeof n, "blk.%d.%s", il, ffn_norm ? ffn_norm : "ffn_norm.weight");
    if ((st = hr_ld_floats(l, &L->ffn_norm, n, D, 1, true)))
        return st;
    if (!dense_ffn)
        return HR_OK;
    if (!hr_ld_has_tensor(l, NAME("ffn_gate.weight"))) { /* fused gate+up: gate rows first */
        if ((st = hr_ld_matrix_rows(l, &L->ffn_gate, NAME("ffn_up.weight"), D, 2 * (int64_t)d->n_ff, 0, d->n_ff)) ||
            (st = hr_ld_matrix_rows(l, &L->ffn_up, n, D, 2 * (int64_t)d->n_ff, d->n_ff, d->n_ff)))
            return st;
    } else if ((st = hr_ld_matrix(l, &L->ffn_gate, NAME("ffn_gate.weight"), D, d->n_ff, true)) ||
               (st = hr_ld_matrix(l, &L->ffn_up, NAME("ffn_up.weight"), D, d->n_ff, true)))
        return st;
    return hr_ld_matrix(l, &L->ffn_down, NAME("ffn_down.weight"), d->n_ff, D, true);
#undef NAME
}

hr_status hr_ld_moe_counts(hr_loader *l, hr_model *m, int32_t *n_ff_exp)
{
    hr_status st;
    if ((st = hr_ld_int(l, "expert_count", &m->hp.n_expert, true, 1, HR_MAX_EXPERTS)) ||
        (st = hr_ld_int(l, "expert_used_count", &m->hp.n_expert_used, true, 1, HR_MAX_EXPERTS_USED)) ||
        (st = hr_ld_int(l, "expert_feed_forward_length", n_ff_exp, true, 1, 1 << 24)))
        return st;
    return HR_OK;
}

hr_status hr_ld_moe_layer(hr_loader *l, hr_model *m, int32_t il, bool biases, bool shared)
{
    const hr_layer_desc *d = &m->desc[il];
    hr_layer_weights *L = &m->layers[il];
    const int64_t D = m->hp.n_embd, F = d->n_ff, E = m->hp.n_expert;
    char n[96];
    hr_status st;
#define NAME(s) (snprintf(n, sizeof n, "blk.%d." s, il), n)
    if ((st = hr_ld_matrix(l, &L->router, NAME("ffn_gate_inp.weight"), D, E, true)) ||
        (st = hr_ld_experts(l, &L->gate_exps, NAME("ffn_gate_exps.weight"), D, F, (int32_t)E, true)) ||
        (st = hr_ld_experts(l, &L->up_exps, NAME("ffn_up_exps.weight"), D, F, (int32_t)E, true)) ||
        (st = hr_ld_experts(l, &L->down_exps, NAME("ffn_down_exps.weight"), F, D, (int32_t)E, true)))
        return st;
    if (biases && ((st = hr_ld_floats(l, &L->router_bias, NAME("ffn_gate_inp.bias"), E, 1, true)) ||
                   (st = hr_ld_floats(l, &L->gate_exps_b, NAME("ffn_gate_exps.bias"), F, E, true)) ||
                   (st = hr_ld_floats(l, &L->up_exps_b, NAME("ffn_up_exps.bias"), F, E, true)) ||
                   (st = hr_ld_floats(l, &L->down_exps_b, NAME("ffn_down_exps.bias"), D, E, true))))
        return st;
    if (shared && ((st = hr_ld_matrix(l, &L->gate_shexp, NAME("ffn_gate_shexp.weight"), D, d->n_ff_shexp, true)) ||
                   (st = hr_ld_matrix(l, &L->up_shexp, NAME("ffn_up_shexp.weight"), D, d->n_ff_shexp, true)) ||
                   (st = hr_ld_matrix(l, &L->down_shexp, NAME("ffn_down_shexp.weight"), d->n_ff_shexp, D, true))))
        return st;
    return HR_OK;
#undef NAME
}

/* What every family shares: sizes, eps, the base RoPE, embeddings, output. */
static hr_status load_common(hr_loader *l, const hr_arch_family **fam)
{
    hr_model *m = l->m;
    hr_hparams *hp = &m->hp;
    hr_gguf_str arch;
    hr_status st;
    if (!hr_gguf_get_str(m->gguf, "general.architecture", &arch))
        return hr_err_set(l->err, HR_ERR_FORMAT, "missing metadata 'general.architecture'");
    hr_gguf_str_copy(arch, hp->arch_name, sizeof hp->arch_name);
    *fam = arch.len < sizeof hp->arch_name ? family_of(hp->arch_name) : NULL;
    if (!*fam) {
        char names[256];
        arch_list(names, sizeof names);
        return hr_err_set(l->err, HR_ERR_UNSUPPORTED, "unknown architecture '%s' (supported: %s)", hp->arch_name,
                          names);
    }

    const int32_t big = 1 << 24;
    if ((st = hr_ld_int(l, "embedding_length", &hp->n_embd, true, 1, big)) ||
        (st = hr_ld_int(l, "block_count", &hp->n_layer, true, 1, 4096)) ||
        (st = hr_ld_int(l, "feed_forward_length", &hp->n_ff, false, 1, big)) ||
        (st = hr_ld_int(l, "attention.head_count", &hp->n_head, true, 1, 4096)))
        return st;
    hp->n_head_kv = hp->n_head;
    hp->n_ctx_train = 2048;
    if ((st = hr_ld_int(l, "attention.head_count_kv", &hp->n_head_kv, false, 1, 4096)) ||
        (st = hr_ld_int(l, "context_length", &hp->n_ctx_train, false, 1, 1 << 30)))
        return st;
    if (hp->n_head % hp->n_head_kv)
        return hr_err_set(l->err, HR_ERR_FORMAT, "head count %d is not a multiple of the KV head count %d",
                          hp->n_head, hp->n_head_kv);
    if (!hr_ld_has(l, "attention.key_length") && hp->n_embd % hp->n_head)
        return hr_err_set(l->err, HR_ERR_FORMAT, "embedding length %d is not a multiple of the head count %d",
                          hp->n_embd, hp->n_head);
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((st = hr_ld_int(l, "attention.key_length", &hp->head_dim, false, 1, 65536)))
        return st;
    hp->head_dim_v = hp->head_dim;
    hp->rope_dim = hp->head_dim;
    if ((st = hr_ld_int(l, "attention.value_length", &hp->head_dim_v, false, 1, 65536)) ||
        (st = hr_ld_int(l, "rope.dimension_count", &hp->rope_dim, false, 2, 65536)))
        return st;
    if (hp->rope_dim > hp->head_dim || hp->rope_dim % 2)
        return hr_err_set(l->err, HR_ERR_FORMAT, "rope dimension %d does not fit head size %d", hp->rope_dim,
                          hp->head_dim);

    hp->rms_eps = 1e-5f;
    hr_rope_cfg *r0 = &hp->rope[0];
    *r0 = (hr_rope_cfg){ .base = 10000.0f, .freq_scale = 1.0f, .attn_factor = 1.0f, .n_ctx_orig = hp->n_ctx_train };
    hp->n_rope = 1;
    if ((st = hr_ld_float(l, "attention.layer_norm_rms_epsilon", &hp->rms_eps, true)) ||
        (st = hr_ld_float(l, "rope.freq_base", &r0->base, false)) || (st = hr_ld_rope_scaling(l, r0)))
        return st;
    if (!(hp->rms_eps > 0.0f) || !(r0->base > 0.0f))
        return hr_err_set(l->err, HR_ERR_FORMAT, "invalid rms epsilon %g or rope base %g", hp->rms_eps, r0->base);
    hp->embd_scale = 1.0f;

    const hr_gguf_tensor *emb = hr_gguf_find_tensor(m->gguf, "token_embd.weight");
    if (!emb)
        return hr_err_set(l->err, HR_ERR_FORMAT, "missing tensor 'token_embd.weight'");
    if (emb->n_dims != 2 || emb->ne[0] != hp->n_embd || emb->ne[1] < 1 || emb->ne[1] > (1 << 24))
        return hr_err_set(l->err, HR_ERR_FORMAT, "tensor 'token_embd.weight' has shape [%lld, %lld], expected [%d, n_vocab]",
                          (long long)emb->ne[0], (long long)emb->ne[1], hp->n_embd);
    hp->n_vocab = (int32_t)emb->ne[1];
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    m->desc = calloc((size_t)hp->n_layer, sizeof *m->desc);
    if (!m->layers || !m->desc)
        return hr_err_set(l->err, HR_ERR_NOMEM, "out of memory");
    hp->layer = m->desc;
    if ((st = hr_ld_matrix(l, &m->tok_embd, "token_embd.weight", hp->n_embd, hp->n_vocab, true)) ||
        (st = hr_ld_floats(l, &m->output_norm, "output_norm.weight", hp->n_embd, 1, true)))
        return st;
    if (hr_gguf_find_tensor(m->gguf, "output.weight")) {
        if ((st = hr_ld_matrix(l, &m->output, "output.weight", hp->n_embd, hp->n_vocab, true)))
            return st;
    } else {
        m->output = m->tok_embd;
        hp->tied_output = true;
    }
    if ((st = hr_ld_floats(l, &m->rope_freqs, "rope_freqs.weight", hp->rope_dim / 2, 1, false)))
        return st;
    /* every layer starts as a plain llama layer; the family changes what differs */
    for (int32_t i = 0; i < hp->n_layer; i++)
        m->desc[i] = (hr_layer_desc){ .n_head = hp->n_head, .n_head_kv = hp->n_head_kv, .head_dim = hp->head_dim,
                                      .head_dim_v = hp->head_dim_v, .rope = 0,
                                      .q_scale = 1.0f / sqrtf((float)hp->head_dim), .n_ff = hp->n_ff };
    return HR_OK;
}

/* What the forward pass relies on, whatever the family wrote. */
static hr_status check_desc(hr_loader *l)
{
    hr_hparams *hp = &l->m->hp;
    hp->has_rope_freqs = l->m->rope_freqs != NULL;
    if (hp->n_expert_used > hp->n_expert || hp->n_expert_used > HR_MAX_EXPERTS_USED)
        return hr_ld_fail(l, "%d experts used of %d (at most %d)", hp->n_expert_used, hp->n_expert,
                          HR_MAX_EXPERTS_USED);
    for (int32_t i = 0; i < hp->n_layer; i++) {
        const hr_layer_desc *d = &hp->layer[i];
        if (d->n_head < 1 || d->n_head_kv < 1 || d->n_head % d->n_head_kv)
            return hr_ld_fail(l, "layer %d: head count %d is not a multiple of the KV head count %d", i, d->n_head,
                              d->n_head_kv);
        if (d->rope >= hp->n_rope || (d->rope >= 0 && hp->rope_dim > d->head_dim))
            return hr_ld_fail(l, "layer %d: bad RoPE configuration", i);
        if ((d->attn != HR_ATTN_CAUSAL && d->window < 1) || d->n_ff < 1)
            return hr_ld_fail(l, "layer %d: window %d / FFN %d out of range", i, d->window, d->n_ff);
        if (d->ffn == HR_FFN_MOE && (hp->n_expert < 1 || hp->n_expert_used < 1))
            return hr_ld_fail(l, "layer %d is a mixture of experts but the expert counts are missing", i);
    }
    return HR_OK;
}

/* The tokenizer's vocabulary must match the embedding and output rows. */
static hr_status check_vocab(hr_loader *l)
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
    hr_loader l = {.m = m, .err = err};
    const hr_arch_family *fam = NULL;
    hr_status st = hr_gguf_open(path, &m->gguf, err);
    if (!st && (st = load_common(&l, &fam)) == HR_OK && (st = fam->fill(&l, m)) == HR_OK &&
        (st = check_desc(&l)) == HR_OK)
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
    free(m->desc);
    while (m->arena) {
        struct hr_arena_chunk *n = m->arena->next;
        free(m->arena);
        m->arena = n;
    }
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

uint64_t hr_model_active_bytes(const hr_model *m)
{
    const hr_hparams *hp = &m->hp;
    uint64_t sum = hr_model_weight_bytes(m);
    if (!hp->tied_output) /* the embedding table: one row per token */
        sum -= (uint64_t)m->tok_embd.row_bytes * (uint64_t)(m->tok_embd.ne1 - 1);
    for (int32_t i = 0; i < hp->n_layer; i++) {
        if (hp->layer[i].ffn != HR_FFN_MOE)
            continue;
        const hr_layer_weights *L = &m->layers[i];
        const uint64_t per = L->gate_exps.expert_bytes + L->up_exps.expert_bytes + L->down_exps.expert_bytes;
        sum -= per * (uint64_t)(hp->n_expert - hp->n_expert_used);
    }
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

static void describe_layer(const hr_hparams *hp, const hr_layer_desc *d, char *buf, size_t cap)
{
    static const char *const attn[] = { "causal", "window", "chunked" };
    static const char *const qkn[] = { "", " qk-norm", " qk-l2norm" };
    char rope[96] = "NoPE";
    if (d->rope >= 0) {
        const hr_rope_cfg *r = &hp->rope[d->rope];
        snprintf(rope, sizeof rope, "rope %s base %g%s%s", hp->rope_style == HR_ROPE_NEOX ? "neox" : "norm", r->base,
                 r->ext_factor != 0.0f ? " yarn" : r->freq_scale != 1.0f ? " linear" : "",
                 r->attn_factor != 1.0f ? " mscale" : "");
    }
    char win[24] = "";
    if (d->attn != HR_ATTN_CAUSAL)
        snprintf(win, sizeof win, " %d", d->window);
    char ffn[96];
    if (d->ffn == HR_FFN_MOE)
        snprintf(ffn, sizeof ffn, "moe %d of %d x %d%s", hp->n_expert_used, hp->n_expert, d->n_ff,
                 d->n_ff_shexp ? " + shared" : "");
    else
        snprintf(ffn, sizeof ffn, "dense %d", d->n_ff);
    snprintf(buf, cap, "attn %s%s, %d/%d heads x %d/%d, %s%s%s, scale %.4g | ffn %s", attn[d->attn], win, d->n_head,
             d->n_head_kv, d->head_dim, d->head_dim_v, rope, qkn[d->qk_norm], d->sinks ? " sinks" : "", d->q_scale,
             ffn);
}

void hr_model_describe(const hr_model *m, char *buf, size_t cap)
{
    const hr_hparams *hp = &m->hp;
    size_t n = 0;
    buf[0] = 0;
    static const char *const act[] = { "silu", "gelu-tanh", "swiglu-clamp" };
    static const char *const route[] = { "softmax-topk", "topk-softmax", "sigmoid-topk" };
    n += (size_t)snprintf(buf + n, cap - n, "act %s, embd scale %g, softcap %g%s%s", act[hp->act], hp->embd_scale,
                          hp->final_softcap, hp->post_norms ? ", sandwich norms" : "",
                          hp->tied_output ? ", tied output" : "");
    if (hp->n_expert && n < cap)
        n += (size_t)snprintf(buf + n, cap - n, ", router %s%s%s", route[hp->router],
                              hp->router_renorm ? " renorm" : "", hp->route_scales_input ? " (scales input)" : "");
    for (int32_t i = 0; i < hp->n_layer && n < cap;) {
        char a[256], b[256];
        describe_layer(hp, &hp->layer[i], a, sizeof a);
        int32_t j = i + 1;
        for (; j < hp->n_layer; j++) {
            describe_layer(hp, &hp->layer[j], b, sizeof b);
            if (strcmp(a, b))
                break;
        }
        if (j - i > 1)
            n += (size_t)snprintf(buf + n, cap - n, "\nlayers %d-%d: %s", i, j - 1, a);
        else
            n += (size_t)snprintf(buf + n, cap - n, "\nlayer %d: %s", i, a);
        i = j;
    }
}
