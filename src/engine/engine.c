/* engine.c - the transformer forward pass of every architecture, written
 * once against the layer descriptor (model/model.h) and the backend
 * interface (backend/backend.h).
 *
 * Reads top to bottom like the math: embed (times embd_scale), then per layer
 *   a  = attn(rope(norm_q(Wq n + bq)), rope(norm_k(Wk n + bk)), Wv n + bv),  n = rms(x)
 *   x += post_norm(Wo a + bo)
 *   x += post_norm(ffn(rms(x)))
 * where attn sees the positions the layer's kind allows (causal, sliding
 * window, chunk), with optional sinks, and ffn is a dense GLU or k of E
 * experts chosen by the router (plus an optional shared expert); then
 * logits = softcap(Wout rms(x)) for the tokens that want them.
 *
 * The engine holds no architecture knowledge beyond the descriptor and
 * touches no activation memory itself: every step is a backend operation,
 * so a backend (CPU today, CUDA later) carries every architecture. Each
 * output is computed the same way whatever the batch and thread count, so
 * a sequence's results do not depend on what it is batched with. */
#include "engine/engine.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "model/model_impl.h"

/* A layer's weights as the backend holds them. */
typedef struct {
    hr_bweight *wq, *wk, *wv, *wo;
    hr_bweight *gate, *up, *down;
    hr_bweight *router, *gate_exps, *up_exps, *down_exps;
    hr_bweight *gate_sh, *up_sh, *down_sh;
    float *attn_norm, *bq, *bk, *bv, *bo, *q_norm, *k_norm, *sinks, *post_attn_norm, *ffn_norm, *post_ffn_norm;
    float *router_bias, *gate_exps_b, *up_exps_b, *down_exps_b;
} dev_layer;

struct hr_engine {
    const hr_model *m;
    hr_engine_params p;
    hr_backend *bk;
    bool own_bk;
    const hr_backend_ops *op;
    dev_layer *L;
    hr_bweight *tok_embd, *output;
    float *output_norm, *rope_factors;
    void **owned; /* backend buffers to release */
    int32_t n_owned, cap_owned;
    /* scratch in backend memory, all (max_batch, dim) unless noted */
    float *x, *xn, *ffo, *q, *k, *v, *att, *gate, *up;
    float *rlog;      /* router logits (max_batch, n_expert) */
    int32_t *ids;     /* chosen experts (max_batch, k) */
    float *rw;        /* their weights (max_batch, k) */
    float *ein;       /* per-slot expert input (max_batch * k, n_embd) */
    float *eg, *eu;   /* per-slot expert gate / up (max_batch * k, n_ff) */
    float *ed;        /* per-slot expert output (max_batch * k, n_embd) */
    float *logits;    /* (max_batch, n_vocab) */
    int32_t *rows;    /* host: tokens that want logits */
    int32_t failed_seq; /* of the last failed forward, -1: the whole batch */
    uint64_t chunk_id;
};

static void *own(hr_engine *e, size_t bytes, bool *ok)
{
    if (!*ok)
        return NULL;
    if (e->n_owned == e->cap_owned) {
        int32_t cap = e->cap_owned ? e->cap_owned * 2 : 64;
        void **p = realloc(e->owned, (size_t)cap * sizeof *p);
        if (!p) {
            *ok = false;
            return NULL;
        }
        e->owned = p;
        e->cap_owned = cap;
    }
    void *p = e->op->alloc(e->bk, bytes ? bytes : 1);
    if (!p) {
        *ok = false;
        return NULL;
    }
    e->owned[e->n_owned++] = p;
    return p;
}

/* A backend copy of a host float vector (NULL stays NULL). */
static float *dev_floats(hr_engine *e, const float *host, size_t n, bool *ok)
{
    if (!host || !*ok)
        return NULL;
    float *d = own(e, n * sizeof(float), ok);
    if (d)
        e->op->write(e->bk, d, host, n * sizeof(float));
    return d;
}

static hr_status upload(hr_engine *e, const hr_weight *w, bool still_read, hr_bweight **out, hr_err *err)
{
    *out = NULL;
    if (!w->data)
        return HR_OK;
    return e->op->upload(e->bk, w->data, w->type, w->ne0, w->ne1, w->row_bytes, w->n_expert, w->expert_bytes,
                         still_read, out, err);
}

static hr_status upload_layer(hr_engine *e, int32_t il, hr_err *err)
{
    const hr_model *m = e->m;
    const hr_layer_weights *W = &m->layers[il];
    const hr_layer_desc *d = &m->hp.layer[il];
    dev_layer *L = &e->L[il];
    const size_t D = (size_t)m->hp.n_embd, E = (size_t)m->hp.n_expert;
    hr_status st;
    if ((st = upload(e, &W->wq, false, &L->wq, err)) || (st = upload(e, &W->wk, false, &L->wk, err)) ||
        (st = upload(e, &W->wv, false, &L->wv, err)) || (st = upload(e, &W->wo, false, &L->wo, err)) ||
        (st = upload(e, &W->ffn_gate, false, &L->gate, err)) || (st = upload(e, &W->ffn_up, false, &L->up, err)) ||
        (st = upload(e, &W->ffn_down, false, &L->down, err)) || (st = upload(e, &W->router, false, &L->router, err)) ||
        (st = upload(e, &W->gate_exps, false, &L->gate_exps, err)) ||
        (st = upload(e, &W->up_exps, false, &L->up_exps, err)) ||
        (st = upload(e, &W->down_exps, false, &L->down_exps, err)) ||
        (st = upload(e, &W->gate_shexp, false, &L->gate_sh, err)) ||
        (st = upload(e, &W->up_shexp, false, &L->up_sh, err)) ||
        (st = upload(e, &W->down_shexp, false, &L->down_sh, err)))
        return st;
    bool ok = true;
    const size_t QD = (size_t)d->n_head * (size_t)d->head_dim, KD = (size_t)d->n_head_kv * (size_t)d->head_dim;
    const size_t VD = (size_t)d->n_head_kv * (size_t)d->head_dim_v;
    L->attn_norm = dev_floats(e, W->attn_norm, D, &ok);
    L->bq = dev_floats(e, W->bq, QD, &ok);
    L->bk = dev_floats(e, W->bk, KD, &ok);
    L->bv = dev_floats(e, W->bv, VD, &ok);
    L->bo = dev_floats(e, W->bo, D, &ok);
    L->q_norm = dev_floats(e, W->q_norm, (size_t)d->head_dim, &ok);
    L->k_norm = dev_floats(e, W->k_norm, (size_t)d->head_dim, &ok);
    L->sinks = dev_floats(e, W->sinks, (size_t)d->n_head, &ok);
    L->post_attn_norm = dev_floats(e, W->post_attn_norm, D, &ok);
    L->ffn_norm = dev_floats(e, W->ffn_norm, D, &ok);
    L->post_ffn_norm = dev_floats(e, W->post_ffn_norm, D, &ok);
    L->router_bias = dev_floats(e, W->router_bias, E, &ok);
    L->gate_exps_b = dev_floats(e, W->gate_exps_b, E * (size_t)d->n_ff, &ok);
    L->up_exps_b = dev_floats(e, W->up_exps_b, E * (size_t)d->n_ff, &ok);
    L->down_exps_b = dev_floats(e, W->down_exps_b, E * D, &ok);
    return ok ? HR_OK : hr_err_set(err, HR_ERR_NOMEM, "out of memory for layer %d's vectors", il);
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

hr_status hr_engine_new(const hr_model *m, const hr_engine_params *p, hr_engine **out, hr_err *err)
{
    *out = NULL;
    const hr_hparams *hp = hr_model_hparams(m);
    hr_engine *e = calloc(1, sizeof *e);
    if (!e)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    e->m = m;
    e->p = *p;
    if (e->p.max_batch < 1)
        e->p.max_batch = 512;
    if (e->p.n_threads < 1)
        e->p.n_threads = 1;
    if (e->p.n_ctx < 1)
        e->p.n_ctx = hp->n_ctx_train;
    hr_status st = HR_OK;
    if (p->backend)
        e->bk = p->backend;
    else if ((st = hr_backend_cpu_new(e->p.n_threads, &e->bk, err))) {
        free(e);
        return st;
    } else
        e->own_bk = true;
    e->op = e->bk->ops;
    e->L = calloc((size_t)hp->n_layer, sizeof *e->L);
    if (!e->L) {
        hr_engine_free(e);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }

    /* weights: the embedding table is read row by row on the host too when it
     * is also the output matrix */
    if ((st = upload(e, &m->tok_embd, true, &e->tok_embd, err)) ||
        (!hp->tied_output && (st = upload(e, &m->output, false, &e->output, err)))) {
        hr_engine_free(e);
        return st;
    }
    if (hp->tied_output)
        e->output = e->tok_embd;
    for (int32_t i = 0; i < hp->n_layer; i++)
        if ((st = upload_layer(e, i, err))) {
            hr_engine_free(e);
            return st;
        }
    bool ok = true;
    e->output_norm = dev_floats(e, m->output_norm, (size_t)hp->n_embd, &ok);
    /* LongRoPE: the long factors once the context exceeds the original one */
    const float *factors = m->rope_freqs_long && e->p.n_ctx > m->rope_long_ctx ? m->rope_freqs_long : m->rope_freqs;
    e->rope_factors = dev_floats(e, factors, (size_t)(hp->rope_dim / 2), &ok);

    /* scratch: the widest layer decides */
    size_t B = (size_t)e->p.max_batch, D = (size_t)hp->n_embd, QD = 0, KD = 0, VD = 0, AD = 0, F = 1, FE = 1;
    for (int32_t i = 0; i < hp->n_layer; i++) {
        const hr_layer_desc *d = &hp->layer[i];
        QD = max_sz(QD, (size_t)d->n_head * (size_t)d->head_dim);
        KD = max_sz(KD, (size_t)d->n_head_kv * (size_t)d->head_dim);
        VD = max_sz(VD, (size_t)d->n_head_kv * (size_t)d->head_dim_v);
        AD = max_sz(AD, (size_t)d->n_head * (size_t)d->head_dim_v);
        if (d->ffn == HR_FFN_MOE)
            FE = max_sz(FE, (size_t)d->n_ff);
        else
            F = max_sz(F, (size_t)d->n_ff);
        F = max_sz(F, (size_t)d->n_ff_shexp);
    }
    const size_t K = hp->n_expert ? (size_t)hp->n_expert_used : 0;
    const size_t f = sizeof(float);
    e->x = own(e, B * D * f, &ok);
    e->xn = own(e, B * D * f, &ok);
    e->ffo = own(e, B * D * f, &ok);
    e->q = own(e, B * QD * f, &ok);
    e->k = own(e, B * KD * f, &ok);
    e->v = own(e, B * VD * f, &ok);
    e->att = own(e, B * AD * f, &ok);
    e->gate = own(e, B * F * f, &ok);
    e->up = own(e, B * F * f, &ok);
    e->logits = own(e, B * (size_t)hp->n_vocab * f, &ok);
    if (K) {
        e->rlog = own(e, B * (size_t)hp->n_expert * f, &ok);
        e->ids = own(e, B * K * sizeof(int32_t), &ok);
        e->rw = own(e, B * K * f, &ok);
        if (hp->route_scales_input)
            e->ein = own(e, B * K * D * f, &ok);
        e->eg = own(e, B * K * FE * f, &ok);
        e->eu = own(e, B * K * FE * f, &ok);
        e->ed = own(e, B * K * D * f, &ok);
    }
    e->rows = malloc(B * sizeof *e->rows);
    if (!ok || !e->rows) {
        hr_engine_free(e);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory for engine scratch (batch %zu)", B);
    }
    *out = e;
    return HR_OK;
}

void hr_engine_free(hr_engine *e)
{
    if (!e)
        return;
    if (e->bk) {
        if (e->L)
            for (int32_t i = 0; i < e->m->hp.n_layer; i++) {
                hr_bweight *const w[] = { e->L[i].wq, e->L[i].wk, e->L[i].wv, e->L[i].wo, e->L[i].gate,
                                          e->L[i].up, e->L[i].down, e->L[i].router, e->L[i].gate_exps,
                                          e->L[i].up_exps, e->L[i].down_exps, e->L[i].gate_sh, e->L[i].up_sh,
                                          e->L[i].down_sh };
                for (size_t j = 0; j < sizeof w / sizeof w[0]; j++)
                    e->op->weight_free(e->bk, w[j]);
            }
        if (e->output != e->tok_embd)
            e->op->weight_free(e->bk, e->output);
        e->op->weight_free(e->bk, e->tok_embd);
        for (int32_t i = 0; i < e->n_owned; i++)
            e->op->release(e->bk, e->owned[i]);
        if (e->own_bk)
            hr_backend_free(e->bk);
    }
    free(e->owned);
    free(e->L);
    free(e->rows);
    free(e);
}

/* The FFN of layer il on e->xn (n rows), into e->ffo. */
static void ffn(hr_engine *e, int32_t il, int32_t n)
{
    const hr_hparams *hp = &e->m->hp;
    const hr_layer_desc *d = &hp->layer[il];
    const dev_layer *L = &e->L[il];
    const hr_backend_ops *op = e->op;
    hr_backend *b = e->bk;
    const int32_t D = hp->n_embd;
    if (d->ffn == HR_FFN_DENSE) {
        const hr_bweight *w[2] = { L->gate, L->up };
        float *const y[2] = { e->gate, e->up };
        op->matmul_n(b, 2, w, e->xn, n, y);
        op->glu(b, hp->act, hp->act_alpha, hp->act_limit, e->gate, e->up, (int64_t)n * d->n_ff);
        op->matmul(b, L->down, e->gate, n, e->ffo);
        return;
    }
    const int32_t k = hp->n_expert_used, F = d->n_ff;
    op->matmul(b, L->router, e->xn, n, e->rlog);
    /* a router bias is part of the router's linear layer (gpt-oss) */
    if (L->router_bias)
        op->add_bias(b, e->rlog, L->router_bias, n, hp->n_expert);
    const hr_route_opts ro = { hp->router, hp->n_expert, k, hp->router_renorm, NULL };
    op->route(b, e->rlog, n, &ro, e->ids, e->rw);
    const float *in = e->xn;
    bool per_slot = false;
    if (hp->route_scales_input) { /* the weight scales each slot's input (llama4) */
        op->dup_rows(b, e->ein, e->xn, n, k, D);
        op->scale_rows(b, e->ein, e->rw, (int64_t)n * k, D);
        in = e->ein;
        per_slot = true;
    }
    op->matmul_id(b, L->gate_exps, in, per_slot, n, k, e->ids, e->eg);
    op->matmul_id(b, L->up_exps, in, per_slot, n, k, e->ids, e->eu);
    if (L->gate_exps_b) {
        op->add_bias_id(b, e->eg, L->gate_exps_b, e->ids, n, k, F);
        op->add_bias_id(b, e->eu, L->up_exps_b, e->ids, n, k, F);
    }
    op->glu(b, hp->act, hp->act_alpha, hp->act_limit, e->eg, e->eu, (int64_t)n * k * F);
    op->matmul_id(b, L->down_exps, e->eg, true, n, k, e->ids, e->ed);
    if (L->down_exps_b)
        op->add_bias_id(b, e->ed, L->down_exps_b, e->ids, n, k, D);
    op->moe_sum(b, e->ffo, e->ed, hp->route_scales_input ? NULL : e->rw, n, k, D);
    if (L->gate_sh) {
        const hr_bweight *w[2] = { L->gate_sh, L->up_sh };
        float *const y[2] = { e->gate, e->up };
        op->matmul_n(b, 2, w, e->xn, n, y);
        op->glu(b, hp->act, hp->act_alpha, hp->act_limit, e->gate, e->up, (int64_t)n * d->n_ff_shexp);
        op->matmul(b, L->down_sh, e->gate, n, e->xn);
        op->add(b, e->ffo, e->xn, (int64_t)n * D);
    }
}

/* One chunk of at most max_batch tokens. */
static hr_status forward_chunk(hr_engine *e, hr_kv *kv, const hr_batch *bt, int32_t off, int32_t n,
                               float **logits_out, hr_err *err)
{
    const hr_model *m = e->m;
    const hr_hparams *hp = &m->hp;
    const hr_backend_ops *op = e->op;
    hr_backend *b = e->bk;
    const int32_t D = hp->n_embd;
    const hr_tokens tk = { n, bt->pos + off, bt->seq + off, ++e->chunk_id };

    op->get_rows(b, e->tok_embd, bt->token + off, n, e->x);
    if (hp->embd_scale != 1.0f)
        op->scale(b, e->x, hp->embd_scale, (int64_t)n * D);

    for (int32_t il = 0; il < hp->n_layer; il++) {
        const hr_layer_desc *d = &hp->layer[il];
        const dev_layer *L = &e->L[il];
        const int32_t QD = d->n_head * d->head_dim, KD = d->n_head_kv * d->head_dim;
        const int32_t VD = d->n_head_kv * d->head_dim_v;

        op->rms_norm(b, e->xn, e->x, L->attn_norm, n, D, hp->rms_eps);
        {
            const hr_bweight *w[3] = { L->wq, L->wk, L->wv };
            float *const y[3] = { e->q, e->k, e->v };
            op->matmul_n(b, 3, w, e->xn, n, y);
        }
        if (L->bq)
            op->add_bias(b, e->q, L->bq, n, QD);
        if (L->bk)
            op->add_bias(b, e->k, L->bk, n, KD);
        if (L->bv)
            op->add_bias(b, e->v, L->bv, n, VD);
        if (d->qk_norm == HR_QKNORM_RMS) {
            op->rms_norm(b, e->q, e->q, L->q_norm, (int64_t)n * d->n_head, d->head_dim, hp->rms_eps);
            op->rms_norm(b, e->k, e->k, L->k_norm, (int64_t)n * d->n_head_kv, d->head_dim, hp->rms_eps);
        }
        if (d->rope >= 0) {
            const hr_rope_cfg *rc = &hp->rope[d->rope];
            op->rope(b, e->q, &tk, d->n_head, d->head_dim, QD, hp->rope_dim, hp->rope_style, rc, e->rope_factors);
            op->rope(b, e->k, &tk, d->n_head_kv, d->head_dim, KD, hp->rope_dim, hp->rope_style, rc, e->rope_factors);
        }
        if (d->qk_norm == HR_QKNORM_L2) {
            op->rms_norm(b, e->q, e->q, NULL, (int64_t)n * d->n_head, d->head_dim, hp->rms_eps);
            op->rms_norm(b, e->k, e->k, NULL, (int64_t)n * d->n_head_kv, d->head_dim, hp->rms_eps);
        }
        if (d->temp_scale != 0.0f)
            op->attn_temp(b, e->q, &tk, QD, d->temp_scale, d->temp_floor);
        op->kv_write(b, kv, il, &tk, e->k, e->v);
        const hr_attn_opts ao = { d->attn, d->window, d->q_scale, d->sinks ? L->sinks : NULL };
        op->attention(b, kv, il, &tk, e->q, d->n_head, d->n_head_kv, d->head_dim, d->head_dim_v, &ao, e->att);
        op->matmul(b, L->wo, e->att, n, e->xn);
        if (L->bo)
            op->add_bias(b, e->xn, L->bo, n, D);
        if (L->post_attn_norm)
            op->rms_norm(b, e->xn, e->xn, L->post_attn_norm, n, D, hp->rms_eps);
        op->add(b, e->x, e->xn, (int64_t)n * D);

        op->rms_norm(b, e->xn, e->x, L->ffn_norm, n, D, hp->rms_eps);
        ffn(e, il, n);
        if (L->post_ffn_norm)
            op->rms_norm(b, e->ffo, e->ffo, L->post_ffn_norm, n, D, hp->rms_eps);
        op->add(b, e->x, e->ffo, (int64_t)n * D);
    }

    /* gather the tokens that want logits, normalise, project */
    int32_t n_out = 0;
    for (int32_t t = 0; t < n; t++)
        if (!bt->logits || bt->logits[off + t])
            e->rows[n_out++] = t;
    hr_status st = HR_OK;
    if (n_out) {
        op->select_rows(b, e->x, e->x, e->rows, n_out, D);
        op->rms_norm(b, e->xn, e->x, e->output_norm, n_out, D, hp->rms_eps);
        op->matmul(b, e->output, e->xn, n_out, e->logits);
        if (hp->final_softcap > 0.0f)
            op->softcap(b, e->logits, hp->final_softcap, (int64_t)n_out * hp->n_vocab);
    }
    if ((st = op->check(b, err)))
        return st;
    if (n_out) {
        op->read(b, *logits_out, e->logits, (size_t)n_out * (size_t)hp->n_vocab * sizeof(float));
        *logits_out += (size_t)n_out * hp->n_vocab;
    }
    return HR_OK;
}

static _Atomic(hr_engine_fault_fn) fault_fn;
static _Atomic(void *) fault_ctx;

void hr_engine_set_fault(hr_engine_fault_fn fn, void *ctx)
{
    atomic_store(&fault_fn, NULL);
    atomic_store(&fault_ctx, ctx);
    atomic_store(&fault_fn, fn);
}

int32_t hr_engine_failed_seq(const hr_engine *e) { return e->failed_seq; }

struct hr_pool *hr_engine_pool(const hr_engine *e) { return e->own_bk ? hr_backend_cpu_pool(e->bk) : NULL; }

size_t hr_engine_weight_bytes(const hr_engine *e) { return e->op->weight_bytes(e->bk); }

hr_status hr_engine_forward(hr_engine *e, hr_kv *kv, const hr_batch *b, float *logits, hr_err *err)
{
    const hr_hparams *hp = hr_model_hparams(e->m);
    hr_status st;
    e->failed_seq = -1;
    if (b->n_tokens < 0)
        return hr_err_set(err, HR_ERR_INVALID, "negative batch size");
    hr_engine_fault_fn fault = atomic_load(&fault_fn);
    if (fault && (st = fault(atomic_load(&fault_ctx), b, &e->failed_seq, err)))
        return st;
    e->failed_seq = -1;
    for (int32_t t = 0; t < b->n_tokens; t++) {
        const bool seq_ok = b->seq[t] >= 0 && b->seq[t] < hr_kv_max_seqs(kv);
        e->failed_seq = seq_ok ? b->seq[t] : -1;
        if (!seq_ok)
            return hr_err_set(err, HR_ERR_INVALID, "sequence id %d out of range", b->seq[t]);
        if (b->token[t] < 0 || b->token[t] >= hp->n_vocab)
            return hr_err_set(err, HR_ERR_INVALID, "token id %d out of range [0, %d) in sequence %d", b->token[t],
                              hp->n_vocab, b->seq[t]);
        if (b->pos[t] < 0 || b->pos[t] == INT32_MAX)
            return hr_err_set(err, HR_ERR_INVALID, "position %d out of range in sequence %d", b->pos[t], b->seq[t]);
    }
    for (int32_t t = 0; t < b->n_tokens; t++) {
        e->failed_seq = b->seq[t];
        if ((st = hr_kv_seq_reserve(kv, b->seq[t], b->pos[t] + 1, err)))
            return st;
    }
    e->failed_seq = -1;
    float *out = logits;
    for (int32_t off = 0; off < b->n_tokens; off += e->p.max_batch) {
        int32_t n = b->n_tokens - off < e->p.max_batch ? b->n_tokens - off : e->p.max_batch;
        if ((st = forward_chunk(e, kv, b, off, n, &out, err)))
            return st;
    }
    return HR_OK;
}
