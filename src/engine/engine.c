/* engine.c - the transformer forward pass (llama / qwen2 / qwen3).
 *
 * Reads top to bottom like the math: embed, then per layer
 *   x += Wo * attn(rope(norm_q(Wq*rms(x)+bq)), rope(norm_k(Wk*rms(x)+bk)), Wv*rms(x)+bv)
 *   x += Wdown * (silu(Wgate*rms(x)) * (Wup*rms(x)))
 * then logits = Wout * rms(x) for the tokens that want them.
 *
 * Matrix products quantise the activations to the weight type's dot-product
 * partner (Q8_0, Q8_K, F16, ...) once per token and reuse them for every
 * row, as llama.cpp does; this is why quantised models land within its
 * reference tolerances. Matrix products run on the SIMD kernels and the
 * compute pool (src/cpu/); attention is split over (token, head) pairs.
 * Each output is computed the same way whatever the batch and thread count,
 * so a sequence's results do not depend on what it is batched with. */
#include "engine/engine.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/attn.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cpu/pool.h"
#include "model/model_impl.h"
#include "quant/quant.h"

struct hr_engine {
    const hr_model *m;
    hr_engine_params p;
    /* scratch, all (max_batch, dim) */
    float *x;      /* residual stream (n_embd) */
    float *xn;     /* normalised input (max(n_embd, n_ff)) */
    float *q;      /* (n_head * head_dim) */
    float *k;      /* (n_head_kv * head_dim) */
    float *v;      /* (n_head_kv * head_dim_v) */
    float *att;    /* attention output (n_head * head_dim_v) */
    float *gate;   /* (n_ff) */
    float *up;     /* (n_ff) */
    float *rope_cs;    /* (max_batch, rope_dim) cos/sin pairs of each token's position */
    const float **blk; /* (n_threads, 2, blk_cap) K and V block pointers for attention */
    int32_t blk_cap;
    /* attention items of the current chunk (attn_items), all (max_batch) or
     * (max_batch * n_head_kv) */
    int32_t *run_start, *run_len, *n_pos;
    int64_t *item_cost;
    int32_t n_items;
    hr_pool *pool; /* NULL when single-threaded */
    void *act;     /* quantised activations (max_batch, act_row_bytes) */
    size_t act_row_bytes;
    /* repacked copies of the weight matrices (hr_matmul_pack), NULL where
     * the path in use has no packed layout for the type: n_layer * 7 for the
     * layers (wq wk wv wo gate up down), then the output matrix */
    void **packed;
    size_t packed_bytes;
    int32_t failed_seq; /* of the last failed forward, -1: the whole batch */
};

enum { PK_Q, PK_K, PK_V, PK_O, PK_GATE, PK_UP, PK_DOWN, PK_PER_LAYER };

static const hr_weight *layer_weight(const hr_layer_weights *L, int i)
{
    const hr_weight *w[PK_PER_LAYER] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_gate, &L->ffn_up, &L->ffn_down };
    return w[i];
}

/* Gives back the original pages of a packed matrix. MADV_PAGEOUT reclaims
 * them (out of this process and, when no one else maps them, out of the page
 * cache) and never loses data, whatever the memory is. A tied output matrix
 * is still read by the embedding lookup (a few rows per token): it gets
 * MADV_DONTNEED, which only unmaps the pages from this process and leaves
 * them in the page cache, so a lookup re-maps its page cheaply. That is
 * safe because model tensors always live in hr_gguf_open's read-only
 * MAP_SHARED file mapping (on anonymous memory DONTNEED would zero them).
 * Kernels without MADV_PAGEOUT (before 5.4) ignore it. */
static void release_pages(const hr_weight *w, bool still_read)
{
    const long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0)
        return;
    const uintptr_t lo = ((uintptr_t)w->data + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    const uintptr_t hi = ((uintptr_t)w->data + w->row_bytes * (size_t)w->ne1) & ~((uintptr_t)pg - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, still_read ? MADV_DONTNEED : MADV_PAGEOUT);
}

/* Packs every matrix that has a packed layout on the path in use (unless
 * HEARTH_REPACK=0). */
static bool pack_weights(hr_engine *e)
{
    const hr_model *m = e->m;
    const int32_t nl = m->hp.n_layer;
    const char *env = getenv("HEARTH_REPACK");
    if (env && env[0] == '0')
        return true;
    e->packed = calloc((size_t)nl * PK_PER_LAYER + 1, sizeof *e->packed);
    if (!e->packed)
        return false;
    for (int32_t i = 0; i <= nl * PK_PER_LAYER; i++) {
        const hr_weight *w = i < nl * PK_PER_LAYER ? layer_weight(&m->layers[i / PK_PER_LAYER], i % PK_PER_LAYER)
                                                   : &m->output;
        const size_t n = hr_matmul_packed_bytes(w->type, w->ne0, w->ne1);
        if (!n)
            continue;
        /* 2 MiB aligned and marked for transparent huge pages: fewer page
         * faults while packing, fewer TLB misses while streaming */
        const size_t huge = (size_t)2 << 20;
        const size_t align = n >= huge ? huge : 64;
        void *p = aligned_alloc(align, (n + align - 1) / align * align);
        if (!p)
            return false;
        if (align == huge)
            (void)madvise(p, (n + align - 1) / align * align, MADV_HUGEPAGE);
        hr_matmul_pack(e->pool, w->data, w->type, w->row_bytes, w->ne0, w->ne1, p);
        e->packed[i] = p;
        e->packed_bytes += n;
        release_pages(w, w->data == m->tok_embd.data);
    }
    return true;
}

static void *xalloc(size_t n, bool *ok)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        *ok = false;
    return p;
}

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
    size_t B = (size_t)e->p.max_batch;
    size_t wide = (size_t)(hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd);
    size_t attn_out = (size_t)hp->n_head * (size_t)hp->head_dim_v;
    if (attn_out > wide)
        wide = attn_out;
    /* largest activation row in any vec_dot format: F32 is the widest */
    e->act_row_bytes = wide * sizeof(float) + 64;
    bool ok = true;
    e->x = xalloc(B * (size_t)hp->n_embd * sizeof(float), &ok);
    e->xn = xalloc(B * wide * sizeof(float), &ok);
    e->q = xalloc(B * (size_t)hp->n_head * (size_t)hp->head_dim * sizeof(float), &ok);
    e->k = xalloc(B * (size_t)hp->n_head_kv * (size_t)hp->head_dim * sizeof(float), &ok);
    e->v = xalloc(B * (size_t)hp->n_head_kv * (size_t)hp->head_dim_v * sizeof(float), &ok);
    e->att = xalloc(B * attn_out * sizeof(float), &ok);
    e->gate = xalloc(B * (size_t)hp->n_ff * sizeof(float), &ok);
    e->up = xalloc(B * (size_t)hp->n_ff * sizeof(float), &ok);
    e->act = xalloc(B * e->act_row_bytes, &ok);
    e->run_start = xalloc(B * sizeof(int32_t), &ok);
    e->run_len = xalloc(B * sizeof(int32_t), &ok);
    e->n_pos = xalloc(B * sizeof(int32_t), &ok);
    e->item_cost = xalloc(B * (size_t)hp->n_head_kv * sizeof(int64_t), &ok);
    e->rope_cs = xalloc(B * (size_t)(hp->rope_dim > 0 ? hp->rope_dim : 1) * sizeof(float), &ok);
    if (ok && e->p.n_threads > 1 && !(e->pool = hr_pool_new(e->p.n_threads)))
        ok = false;
    if (ok && !pack_weights(e))
        ok = false;
    if (!ok) {
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
    free(e->x);
    free(e->xn);
    free(e->q);
    free(e->k);
    free(e->v);
    free(e->att);
    free(e->gate);
    free(e->up);
    free(e->blk);
    free(e->run_start);
    free(e->run_len);
    free(e->n_pos);
    free(e->item_cost);
    free(e->rope_cs);
    free(e->act);
    if (e->packed)
        for (int32_t i = 0; i <= e->m->hp.n_layer * PK_PER_LAYER; i++)
            free(e->packed[i]);
    free(e->packed);
    hr_pool_free(e->pool);
    free(e);
}

/* y[t] = W x[t] for n tokens; x rows are w->ne0 floats, y rows w->ne1.
 * pk is the index of w's packed copy (layer * PK_PER_LAYER + PK_x, or
 * n_layer * PK_PER_LAYER for the output). */
static void matmul(hr_engine *e, const hr_weight *w, int32_t pk, const float *x, int32_t n, float *y)
{
    if (e->packed && e->packed[pk])
        hr_matmul_packed(e->pool, e->packed[pk], w->type, w->ne0, w->ne1, x, n, y, e->act);
    else
        hr_matmul(e->pool, w->data, w->type, w->row_bytes, w->ne0, w->ne1, x, n, y, e->act);
}

/* Several matrices on the same input: one packed pass when all of them are
 * packed with one type (same results as separate calls). */
static void matmul_multi(hr_engine *e, int nm, const hr_weight *const *w, const int32_t *pk, const float *x, int32_t n,
                         float *const *y)
{
    bool same = e->packed != NULL;
    for (int i = 0; same && i < nm; i++)
        same = e->packed[pk[i]] && w[i]->type == w[0]->type && w[i]->ne0 == w[0]->ne0;
    if (!same) {
        for (int i = 0; i < nm; i++)
            matmul(e, w[i], pk[i], x, n, y[i]);
        return;
    }
    const void *p[3];
    int64_t N[3];
    for (int i = 0; i < nm; i++) {
        p[i] = e->packed[pk[i]];
        N[i] = w[i]->ne1;
    }
    hr_matmul_packed_multi(e->pool, nm, p, N, y, w[0]->type, w[0]->ne0, x, n, e->act);
}

static void rmsnorm(float *out, const float *x, const float *w, int32_t n, float eps)
{
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    float scale = 1.0f / sqrtf((float)(sum / n) + eps);
    for (int32_t i = 0; i < n; i++)
        out[i] = x[i] * scale * w[i];
}

/* The cos/sin of every rotated pair of position pos: pair i's angle is
 * pos * freq_scale * theta^(-2i/rope_dim) / freq_factor[i], built up by
 * repeated multiplication like the reference implementation. Computed once
 * per token and shared by every head and layer. */
static void rope_table(float *cs, int32_t pos, const hr_hparams *hp, const float *freq_factors)
{
    const int32_t nd = hp->rope_dim;
    const float theta_scale = powf(hp->rope_theta, -2.0f / (float)nd);
    float theta = (float)pos;
    for (int32_t i = 0; i < nd / 2; i++) {
        float th = hp->rope_freq_scale * theta;
        if (freq_factors)
            th /= freq_factors[i];
        cs[2 * i] = cosf(th);
        cs[2 * i + 1] = sinf(th);
        theta *= theta_scale;
    }
}

/* Rotates the first rope_dim dimensions of each of n_heads heads of `v`
 * (head stride head_dim) by the table of rope_table. */
static void rope(float *v, int32_t n_heads, int32_t head_dim, const float *cs, const hr_hparams *hp)
{
    const int32_t nd = hp->rope_dim;
    for (int32_t h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * head_dim;
        for (int32_t i = 0; i < nd / 2; i++) {
            const float c = cs[2 * i], s = cs[2 * i + 1];
            int32_t a, b;
            if (hp->rope_style == HR_ROPE_NEOX) {
                a = i;
                b = i + nd / 2;
            } else {
                a = 2 * i;
                b = 2 * i + 1;
            }
            float x0 = x[a], x1 = x[b];
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }
}

/* Per-thread lists of K/V block pointers, room for n positions. */
static hr_status ensure_blocks(hr_engine *e, hr_kv *kv, int32_t n, hr_err *err)
{
    const int32_t need = n / hr_kv_block_tokens(kv) + 1;
    if (need <= e->blk_cap)
        return HR_OK;
    int32_t cap = e->blk_cap ? e->blk_cap : 64;
    while (cap < need)
        cap *= 2;
    const float **p = realloc(e->blk, (size_t)cap * 2 * (size_t)e->p.n_threads * sizeof *p);
    if (!p)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory for attention block lists");
    e->blk = p;
    e->blk_cap = cap;
    return HR_OK;
}

typedef struct {
    hr_engine *e;
    hr_kv *kv;
    int32_t layer, n;
    const int32_t *seq;
    hr_attn_fn attn;
} attn_job;

/* Splits the chunk's tokens into attention items: runs of consecutive
 * tokens of one sequence (at most HR_ATTN_MAX_TOKENS), times the KV heads,
 * with a running sum of their cost (positions attended) so that threads can
 * take equal shares. The same for every layer. */
static void attn_items(hr_engine *e, int32_t n, const int32_t *pos, const int32_t *seq, int32_t n_kv)
{
    int32_t runs = 0;
    for (int32_t t = 0; t < n; runs++) {
        int32_t len = 1;
        while (t + len < n && seq[t + len] == seq[t] && len < HR_ATTN_MAX_TOKENS)
            len++;
        e->run_start[runs] = t;
        e->run_len[runs] = len;
        t += len;
    }
    for (int32_t t = 0; t < n; t++)
        e->n_pos[t] = pos[t] + 1;
    e->n_items = 0;
    int64_t cost = 0;
    for (int32_t h = 0; h < n_kv; h++)
        for (int32_t r = 0; r < runs; r++) {
            for (int32_t i = 0; i < e->run_len[r]; i++)
                cost += e->n_pos[e->run_start[r] + i] + 16; /* + a fixed share per row */
            e->item_cost[e->n_items++] = cost;
        }
}

/* Pool task: a contiguous share of the items by cost; each computes the
 * query heads of its KV head for a run of tokens over their sequence's
 * positions, streaming the cache block by block (src/cpu/attn.h). */
static void attend_task(void *ctx, int ith, int nth)
{
    const attn_job *j = ctx;
    hr_engine *e = j->e;
    const hr_hparams *hp = hr_model_hparams(e->m);
    const int32_t hd = hp->head_dim, hdv = hp->head_dim_v, nkv = hp->n_head_kv;
    const int32_t group = hp->n_head / nkv;
    const int32_t QD = hp->n_head * hd, AD = hp->n_head * hdv;
    const int32_t bt = hr_kv_block_tokens(j->kv);
    const float scale = 1.0f / sqrtf((float)hd);
    const int32_t runs = e->n_items / nkv;
    const int64_t total = e->n_items ? e->item_cost[e->n_items - 1] : 0;
    const int64_t clo = total * ith / nth, chi = total * (ith + 1) / nth;
    /* items whose cost interval ends in (clo, chi] */
    int32_t lo = 0, hi = 0;
    while (lo < e->n_items && e->item_cost[lo] <= clo)
        lo++;
    hi = lo;
    while (hi < e->n_items && e->item_cost[hi] <= chi)
        hi++;
    if (ith == nth - 1)
        hi = e->n_items;
    const float **kp = e->blk + (size_t)ith * 2 * (size_t)e->blk_cap, **vp = kp + e->blk_cap;
    int32_t have_seq = -1, have_kvh = -1, have_blocks = 0;
    for (int32_t it = lo; it < hi; it++) {
        const int32_t kvh = it / runs, r = it % runs;
        const int32_t t0 = e->run_start[r], nt = e->run_len[r], seq = j->seq[t0];
        int32_t max_pos = 0;
        for (int32_t i = 0; i < nt; i++)
            max_pos = e->n_pos[t0 + i] > max_pos ? e->n_pos[t0 + i] : max_pos;
        const int32_t nblk = (max_pos + bt - 1) / bt;
        if (seq != have_seq || kvh != have_kvh)
            have_blocks = 0;
        for (int32_t b = have_blocks; b < nblk; b++) {
            kp[b] = hr_kv_k(j->kv, j->layer, seq, b * bt) + (size_t)kvh * hd;
            vp[b] = hr_kv_v(j->kv, j->layer, seq, b * bt) + (size_t)kvh * hdv;
        }
        if (nblk > have_blocks)
            have_blocks = nblk;
        have_seq = seq;
        have_kvh = kvh;
        const hr_attn_kv kvv = { kp, vp, bt, (size_t)nkv * hd, (size_t)nkv * hdv };
        j->attn(e->q + (size_t)t0 * QD + (size_t)kvh * group * hd, (size_t)QD, nt, e->n_pos + t0, group, hd, hdv,
                scale, &kvv, e->att + (size_t)t0 * AD + (size_t)kvh * group * hdv, (size_t)AD);
    }
}

static void add_bias(float *y, const float *b, int32_t n_tok, int32_t dim)
{
    if (!b)
        return;
    for (int32_t t = 0; t < n_tok; t++)
        for (int32_t i = 0; i < dim; i++)
            y[(size_t)t * dim + i] += b[i];
}

/* One chunk of at most max_batch tokens. */
static hr_status forward_chunk(hr_engine *e, hr_kv *kv, const hr_batch *b, int32_t off, int32_t n,
                               float **logits_out, hr_err *err)
{
    const hr_model *m = e->m;
    const hr_hparams *hp = &m->hp;
    const int32_t D = hp->n_embd, F = hp->n_ff;
    const int32_t QD = hp->n_head * hp->head_dim, KD = hp->n_head_kv * hp->head_dim;
    const int32_t VD = hp->n_head_kv * hp->head_dim_v;
    const int32_t *tok = b->token + off, *pos = b->pos + off, *seq = b->seq + off;
    hr_status st;

    int32_t max_pos = 0;
    for (int32_t t = 0; t < n; t++)
        if (pos[t] > max_pos)
            max_pos = pos[t];
    if ((st = ensure_blocks(e, kv, max_pos + 1, err)))
        return st;

    const hr_type_traits *et = hr_type_get(m->tok_embd.type);
    for (int32_t t = 0; t < n; t++)
        et->to_float((const char *)m->tok_embd.data + (size_t)tok[t] * m->tok_embd.row_bytes, e->x + (size_t)t * D, D);

    for (int32_t t = 0; t < n; t++)
        rope_table(e->rope_cs + (size_t)t * (size_t)hp->rope_dim, pos[t], hp, m->rope_freqs);

    attn_items(e, n, pos, seq, hp->n_head_kv);
    const hr_attn_fn attn = hr_cpu_attn(hp->n_head / hp->n_head_kv, hp->head_dim, hp->head_dim_v);
    for (int32_t l = 0; l < hp->n_layer; l++) {
        const hr_layer_weights *L = &m->layers[l];
        for (int32_t t = 0; t < n; t++)
            rmsnorm(e->xn + (size_t)t * D, e->x + (size_t)t * D, L->attn_norm, D, hp->rms_eps);
        {
            const hr_weight *w[3] = { &L->wq, &L->wk, &L->wv };
            const int32_t pk[3] = { l * PK_PER_LAYER + PK_Q, l * PK_PER_LAYER + PK_K, l * PK_PER_LAYER + PK_V };
            float *const y[3] = { e->q, e->k, e->v };
            matmul_multi(e, 3, w, pk, e->xn, n, y);
        }
        add_bias(e->q, L->bq, n, QD);
        add_bias(e->k, L->bk, n, KD);
        add_bias(e->v, L->bv, n, VD);
        for (int32_t t = 0; t < n; t++) {
            float *qt = e->q + (size_t)t * QD, *kt = e->k + (size_t)t * KD;
            if (L->q_norm) {
                for (int32_t h = 0; h < hp->n_head; h++)
                    rmsnorm(qt + (size_t)h * hp->head_dim, qt + (size_t)h * hp->head_dim, L->q_norm, hp->head_dim, hp->rms_eps);
                for (int32_t h = 0; h < hp->n_head_kv; h++)
                    rmsnorm(kt + (size_t)h * hp->head_dim, kt + (size_t)h * hp->head_dim, L->k_norm, hp->head_dim, hp->rms_eps);
            }
            const float *cs = e->rope_cs + (size_t)t * (size_t)hp->rope_dim;
            rope(qt, hp->n_head, hp->head_dim, cs, hp);
            rope(kt, hp->n_head_kv, hp->head_dim, cs, hp);
            memcpy(hr_kv_k(kv, l, seq[t], pos[t]), kt, (size_t)KD * sizeof(float));
            memcpy(hr_kv_v(kv, l, seq[t], pos[t]), e->v + (size_t)t * VD, (size_t)VD * sizeof(float));
        }
        attn_job job = { e, kv, l, n, seq, attn };
        if (e->pool)
            hr_pool_run(e->pool, attend_task, &job);
        else
            attend_task(&job, 0, 1);
        matmul(e, &L->wo, l * PK_PER_LAYER + PK_O, e->att, n, e->xn);
        for (size_t i = 0; i < (size_t)n * D; i++)
            e->x[i] += e->xn[i];

        for (int32_t t = 0; t < n; t++)
            rmsnorm(e->xn + (size_t)t * D, e->x + (size_t)t * D, L->ffn_norm, D, hp->rms_eps);
        {
            const hr_weight *w[2] = { &L->ffn_gate, &L->ffn_up };
            const int32_t pk[2] = { l * PK_PER_LAYER + PK_GATE, l * PK_PER_LAYER + PK_UP };
            float *const y[2] = { e->gate, e->up };
            matmul_multi(e, 2, w, pk, e->xn, n, y);
        }
        hr_cpu_silu_mul(e->gate, e->up, (int64_t)n * F);
        matmul(e, &L->ffn_down, l * PK_PER_LAYER + PK_DOWN, e->gate, n, e->xn);
        for (size_t i = 0; i < (size_t)n * D; i++)
            e->x[i] += e->xn[i];
    }

    /* gather the tokens that want logits, normalise, project */
    int32_t n_out = 0;
    for (int32_t t = 0; t < n; t++) {
        if (b->logits && !b->logits[off + t])
            continue;
        rmsnorm(e->xn + (size_t)n_out * D, e->x + (size_t)t * D, m->output_norm, D, hp->rms_eps);
        n_out++;
    }
    if (n_out) {
        matmul(e, &m->output, hp->n_layer * PK_PER_LAYER, e->xn, n_out, *logits_out);
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

hr_pool *hr_engine_pool(const hr_engine *e) { return e->pool; }

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
