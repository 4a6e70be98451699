/* cpu.c - the CPU backend: backend.h's operations on the SIMD kernels and
 * the thread pool of src/cpu/.
 *
 * Weights stay in the model's file mapping, or are repacked once for the
 * GEMM micro-kernels of the path in use (then the original pages are given
 * back). Matrix products quantise each activation row once to the weight
 * type's dot-product partner (Q8_0, Q8_K, F16, ...) and reuse it for every
 * row, as llama.cpp does. Attention is split over (token run, KV head)
 * items of equal cost. Element-wise operations are plain loops: each output
 * is a function of its own inputs only, so nothing depends on batching. */
#include "backend/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu/attn.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cpu/pool.h"
#include "quant/quant.h"

struct hr_bweight {
    const void *data;
    uint32_t type;
    int64_t ne0, ne1;
    size_t row_bytes;
    int32_t n_expert;
    size_t expert_bytes;
    void *packed; /* repacked copy (plain matrices on paths that have a layout), or NULL */
};

typedef struct {
    hr_backend base;
    int n_threads;
    hr_pool *pool;
    size_t weight_bytes;
    /* scratch, grown on demand (ops cannot fail: growth failures fall back
     * to smaller pieces where possible, see scratch()) */
    void *act;
    size_t act_cap;
    /* RoPE tables of the current chunk: (n, rope_dim) cos/sin pairs per cfg */
    struct {
        float *cs;
        size_t cap;
        const hr_rope_cfg *cfg;
        const float *factors;
        uint64_t id;
        int32_t n, dim;
    } rt[HR_MAX_ROPE];
    /* attention */
    const float **blk; /* (n_threads, 2, blk_cap) K and V block pointers */
    int32_t blk_cap;
    int32_t *run_start, *run_len, *n_pos, *lo;
    int64_t *item_cost;
    size_t blk_bytes, run_start_bytes, run_len_bytes, n_pos_bytes, lo_bytes, item_bytes;
    bool oom; /* a scratch allocation failed: the forward's results are invalid */
} cpu_backend;

static cpu_backend *cpu(hr_backend *b) { return (cpu_backend *)b; }

/* Grows *p to at least n bytes; false (and oom set) on failure. */
static bool grow(cpu_backend *c, void **p, size_t *cap, size_t n)
{
    if (n <= *cap)
        return true;
    size_t want = *cap ? *cap : 4096;
    while (want < n)
        want *= 2;
    void *q = realloc(*p, want);
    if (!q) {
        c->oom = true;
        return false;
    }
    *p = q;
    *cap = want;
    return true;
}

/* ---- memory ---- */

static void *cpu_alloc(hr_backend *b, size_t bytes)
{
    (void)b;
    const size_t a = 64;
    return aligned_alloc(a, (bytes + a - 1) / a * a + (bytes ? 0 : a));
}

static void cpu_release(hr_backend *b, void *p)
{
    (void)b;
    free(p);
}

static void cpu_copy(hr_backend *b, void *dst, const void *src, size_t bytes)
{
    (void)b;
    memcpy(dst, src, bytes);
}

/* ---- weights ---- */

/* Gives back the original pages of a packed matrix. MADV_PAGEOUT reclaims
 * them (out of this process and, when no one else maps them, out of the page
 * cache) and never loses data, whatever the memory is. A weight the host
 * still reads (a tied embedding: a few rows per token) gets MADV_DONTNEED,
 * which only unmaps the pages from this process and leaves them in the page
 * cache, so a lookup re-maps its page cheaply. That is safe because model
 * tensors always live in hr_gguf_open's read-only MAP_SHARED file mapping
 * (on anonymous memory DONTNEED would zero them). Kernels without
 * MADV_PAGEOUT (before 5.4) ignore it. */
static void release_pages(const hr_bweight *w, bool still_read)
{
    const long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0)
        return;
    const uintptr_t lo = ((uintptr_t)w->data + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
    const size_t bytes = w->n_expert ? w->expert_bytes * (size_t)w->n_expert : w->row_bytes * (size_t)w->ne1;
    const uintptr_t hi = ((uintptr_t)w->data + bytes) & ~((uintptr_t)pg - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, still_read ? MADV_DONTNEED : MADV_PAGEOUT);
}

static hr_status cpu_upload(hr_backend *b, const void *data, uint32_t type, int64_t ne0, int64_t ne1,
                            size_t row_bytes, int32_t n_expert, size_t expert_bytes, bool still_read,
                            hr_bweight **out, hr_err *err)
{
    cpu_backend *c = cpu(b);
    hr_bweight *w = calloc(1, sizeof *w);
    if (!w)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    *w = (hr_bweight){ data, type, ne0, ne1, row_bytes, n_expert, expert_bytes, NULL };
    const char *env = getenv("HEARTH_REPACK");
    const size_t per = env && env[0] == '0' ? 0 : hr_matmul_packed_bytes(type, ne0, ne1);
    const size_t n = per * (size_t)(n_expert ? n_expert : 1);
    if (n) {
        /* 2 MiB aligned and marked for transparent huge pages: fewer page
         * faults while packing, fewer TLB misses while streaming */
        const size_t huge = (size_t)2 << 20;
        const size_t align = n >= huge ? huge : 64;
        const size_t sz = (n + align - 1) / align * align;
        void *p = aligned_alloc(align, sz);
        if (!p) {
            free(w);
            return hr_err_set(err, HR_ERR_NOMEM, "out of memory for a repacked %lld x %lld matrix",
                              (long long)ne1, (long long)ne0);
        }
        if (align == huge)
            (void)madvise(p, sz, MADV_HUGEPAGE);
        for (int32_t e = 0; e < (n_expert ? n_expert : 1); e++) /* experts one after another */
            hr_matmul_pack(c->pool, (const char *)data + (size_t)e * expert_bytes, type, row_bytes, ne0, ne1,
                           (char *)p + (size_t)e * per);
        w->packed = p;
        c->weight_bytes += n;
        release_pages(w, still_read);
    }
    *out = w;
    return HR_OK;
}

static void cpu_weight_free(hr_backend *b, hr_bweight *w)
{
    (void)b;
    if (!w)
        return;
    free(w->packed);
    free(w);
}

static size_t cpu_weight_bytes(const hr_backend *b) { return ((const cpu_backend *)b)->weight_bytes; }

/* ---- matrix products ---- */

static void *act_scratch(cpu_backend *c, uint32_t type, int64_t K, int32_t n)
{
    const size_t need = hr_matmul_scratch_bytes(type, K, n);
    if (!grow(c, &c->act, &c->act_cap, need ? need : 1))
        return NULL;
    return c->act;
}

static void cpu_matmul(hr_backend *b, const hr_bweight *w, const float *x, int32_t n, float *y)
{
    cpu_backend *c = cpu(b);
    if (c->oom) /* an earlier operation failed: skip until check */
        return;
    void *act = act_scratch(c, w->type, w->ne0, n);
    if (!act)
        return;
    if (w->packed)
        hr_matmul_packed(c->pool, w->packed, w->type, w->ne0, w->ne1, x, n, y, act);
    else
        hr_matmul(c->pool, w->data, w->type, w->row_bytes, w->ne0, w->ne1, x, n, y, act);
}

static void cpu_matmul_n(hr_backend *b, int nw, const hr_bweight *const *w, const float *x, int32_t n,
                         float *const *y)
{
    cpu_backend *c = cpu(b);
    if (c->oom) /* an earlier operation failed: skip until check */
        return;
    bool same = nw <= 3;
    for (int i = 0; same && i < nw; i++)
        same = w[i]->packed && w[i]->type == w[0]->type && w[i]->ne0 == w[0]->ne0;
    if (!same) {
        for (int i = 0; i < nw; i++)
            cpu_matmul(b, w[i], x, n, y[i]);
        return;
    }
    const void *p[3];
    int64_t N[3];
    for (int i = 0; i < nw; i++) {
        p[i] = w[i]->packed;
        N[i] = w[i]->ne1;
    }
    void *act = act_scratch(c, w[0]->type, w[0]->ne0, n);
    if (act)
        hr_matmul_packed_multi(c->pool, nw, p, N, y, w[0]->type, w[0]->ne0, x, n, act);
}

/* hr_matmul_id: grouped by expert, each chosen expert's rows read once for
 * all the slots that chose it, in one pool run; bit-identical to a product
 * per slot. */
static void cpu_matmul_id(hr_backend *b, const hr_bweight *w, const float *x, bool x_per_slot, int32_t n, int32_t k,
                          const int32_t *ids, float *y)
{
    cpu_backend *c = cpu(b);
    if (c->oom) /* an earlier operation failed: skip until check */
        return;
    const size_t need = hr_matmul_id_scratch_bytes(w->type, w->ne0, n, k, w->n_expert);
    if (!grow(c, &c->act, &c->act_cap, need ? need : 1))
        return;
    if (w->packed)
        hr_matmul_id_packed(c->pool, w->packed, w->type, hr_matmul_packed_bytes(w->type, w->ne0, w->ne1), w->ne0,
                            w->ne1, w->n_expert, x, x_per_slot, n, k, ids, y, c->act);
    else
        hr_matmul_id(c->pool, w->data, w->type, w->row_bytes, w->expert_bytes, w->ne0, w->ne1, w->n_expert, x,
                     x_per_slot, n, k, ids, y, c->act);
}

static void cpu_get_rows(hr_backend *b, const hr_bweight *w, const int32_t *ids, int32_t n, float *out)
{
    (void)b;
    const hr_type_traits *tt = hr_type_get(w->type);
    for (int32_t t = 0; t < n; t++)
        tt->to_float((const char *)w->data + (size_t)ids[t] * w->row_bytes, out + (size_t)t * w->ne0, w->ne0);
}

/* ---- element-wise ---- */

static void cpu_rms_norm(hr_backend *b, float *out, const float *x, const float *w, int64_t rows, int32_t dim,
                         float eps)
{
    (void)b;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *o = out + r * dim;
        double sum = 0.0;
        for (int32_t i = 0; i < dim; i++)
            sum += (double)(xr[i] * xr[i]);
        const float scale = 1.0f / sqrtf((float)(sum / dim) + eps);
        if (w)
            for (int32_t i = 0; i < dim; i++)
                o[i] = xr[i] * scale * w[i];
        else
            for (int32_t i = 0; i < dim; i++)
                o[i] = xr[i] * scale;
    }
}

static void cpu_add(hr_backend *b, float *y, const float *x, int64_t n)
{
    (void)b;
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

static void cpu_add_bias(hr_backend *b, float *y, const float *bias, int64_t rows, int32_t dim)
{
    (void)b;
    for (int64_t r = 0; r < rows; r++)
        for (int32_t i = 0; i < dim; i++)
            y[r * dim + i] += bias[i];
}

static void cpu_scale(hr_backend *b, float *y, float s, int64_t n)
{
    (void)b;
    for (int64_t i = 0; i < n; i++)
        y[i] *= s;
}

static void cpu_softcap(hr_backend *b, float *y, float cap, int64_t n)
{
    (void)b;
    for (int64_t i = 0; i < n; i++)
        y[i] = cap * tanhf(y[i] / cap);
}

static void cpu_glu(hr_backend *b, hr_act act, float alpha, float limit, float *g, const float *u, int64_t n)
{
    (void)b;
    switch (act) {
    case HR_ACT_SILU:
        hr_cpu_silu_mul(g, u, n);
        break;
    case HR_ACT_GELU_TANH: {
        const float c = 0.7978845608028654f; /* sqrt(2 / pi) */
        for (int64_t i = 0; i < n; i++) {
            const float x = g[i];
            g[i] = 0.5f * x * (1.0f + tanhf(c * x * (1.0f + 0.044715f * x * x))) * u[i];
        }
        break;
    }
    case HR_ACT_SWIGLU_CLAMP:
        for (int64_t i = 0; i < n; i++) {
            const float x = fminf(g[i], limit);
            const float v = fmaxf(fminf(u[i], limit), -limit);
            g[i] = x / (1.0f + expf(-alpha * x)) * (v + 1.0f);
        }
        break;
    }
}

/* ---- RoPE ---- */

/* YaRN's correction range: the rotary dimensions whose wavelength fits
 * between beta_fast and beta_slow turns over the original context. */
static void yarn_dims(const hr_rope_cfg *r, int32_t nd, float *lo, float *hi)
{
    const float two_pi = 6.283185307179586f;
    const float a = (float)nd * logf((float)r->n_ctx_orig / (r->beta_fast * two_pi)) / (2.0f * logf(r->base));
    const float z = (float)nd * logf((float)r->n_ctx_orig / (r->beta_slow * two_pi)) / (2.0f * logf(r->base));
    *lo = fmaxf(0.0f, floorf(a));
    *hi = fminf((float)(nd - 1), ceilf(z));
}

/* cos/sin of every rotated pair of position pos: pair i's angle is built up
 * by repeated multiplication like the reference implementation. */
static void rope_row(float *cs, int32_t pos, int32_t nd, const hr_rope_cfg *r, const float *ff)
{
    const float theta_scale = powf(r->base, -2.0f / (float)nd);
    float theta = (float)pos;
    float mscale = r->attn_factor, lo = 0.0f, hi = 0.0f;
    if (r->ext_factor != 0.0f) {
        yarn_dims(r, nd, &lo, &hi);
        mscale *= 1.0f + 0.1f * logf(1.0f / r->freq_scale);
    }
    for (int32_t i = 0; i < nd / 2; i++) {
        float th;
        if (r->ext_factor != 0.0f) {
            const float ex = ff ? theta / ff[i] : theta;
            const float in = r->freq_scale * ex;
            const float y = ((float)i - lo) / fmaxf(0.001f, hi - lo);
            const float mix = (1.0f - fminf(1.0f, fmaxf(0.0f, y))) * r->ext_factor;
            th = in * (1.0f - mix) + ex * mix;
        } else {
            th = r->freq_scale * theta;
            if (ff)
                th /= ff[i];
        }
        cs[2 * i] = cosf(th) * mscale;
        cs[2 * i + 1] = sinf(th) * mscale;
        theta *= theta_scale;
    }
}

static void cpu_rope(hr_backend *b, float *x, const hr_tokens *tk, int32_t n_head, int32_t head_dim, int32_t stride,
                     int32_t nd, hr_rope_style style, const hr_rope_cfg *cfg, const float *factors)
{
    cpu_backend *c = cpu(b);
    if (c->oom) /* an earlier operation failed: skip until check */
        return;
    /* a table is shared by every layer of the chunk that uses its cfg */
    int slot = 0;
    while (slot < HR_MAX_ROPE - 1 && c->rt[slot].cfg && c->rt[slot].cfg != cfg)
        slot++;
    if (c->rt[slot].cfg != cfg || c->rt[slot].factors != factors || c->rt[slot].id != tk->id ||
        c->rt[slot].n != tk->n || c->rt[slot].dim != nd) {
        c->rt[slot].cfg = NULL;
        if (!grow(c, (void **)&c->rt[slot].cs, &c->rt[slot].cap, (size_t)tk->n * (size_t)nd * sizeof(float)))
            return;
        for (int32_t t = 0; t < tk->n; t++)
            rope_row(c->rt[slot].cs + (size_t)t * nd, tk->pos[t], nd, cfg, factors);
        c->rt[slot].cfg = cfg;
        c->rt[slot].factors = factors;
        c->rt[slot].id = tk->id;
        c->rt[slot].n = tk->n;
        c->rt[slot].dim = nd;
    }
    for (int32_t t = 0; t < tk->n; t++) {
        const float *cs = c->rt[slot].cs + (size_t)t * nd;
        for (int32_t h = 0; h < n_head; h++) {
            float *v = x + (size_t)t * stride + (size_t)h * head_dim;
            for (int32_t i = 0; i < nd / 2; i++) {
                const int32_t a = style == HR_ROPE_NEOX ? i : 2 * i;
                const int32_t bb = style == HR_ROPE_NEOX ? i + nd / 2 : 2 * i + 1;
                const float x0 = v[a], x1 = v[bb];
                v[a] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
                v[bb] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
            }
        }
    }
}

static void cpu_attn_temp(hr_backend *b, float *q, const hr_tokens *tk, int32_t width, float scale, int32_t floor_)
{
    (void)b;
    for (int32_t t = 0; t < tk->n; t++) {
        const float f = 1.0f + scale * logf(floorf((float)(tk->pos[t] + 1) / (float)floor_) + 1.0f);
        for (int32_t i = 0; i < width; i++)
            q[(size_t)t * width + i] *= f;
    }
}

/* ---- KV cache and attention ---- */

static void cpu_kv_write(hr_backend *b, hr_kv *kv, int32_t layer, const hr_tokens *tk, const float *k, const float *v)
{
    (void)b;
    const size_t kd = hr_kv_k_dim(kv, layer), vd = hr_kv_v_dim(kv, layer);
    for (int32_t t = 0; t < tk->n; t++) {
        memcpy(hr_kv_k(kv, layer, tk->seq[t], tk->pos[t]), k + (size_t)t * kd, kd * sizeof(float));
        memcpy(hr_kv_v(kv, layer, tk->seq[t], tk->pos[t]), v + (size_t)t * vd, vd * sizeof(float));
    }
}

typedef struct {
    cpu_backend *c;
    hr_kv *kv;
    int32_t layer, n_items, runs;
    const int32_t *seq;
    const float *q;
    float *out;
    int32_t n_head, n_head_kv, hd, hdv;
    const hr_attn_opts *o;
    hr_attn_fn fast; /* for items without window or sinks */
} attn_job;

/* Pool task: a contiguous share of the items by cost; each computes the
 * query heads of its KV head for a run of tokens over their sequence's
 * positions, streaming the cache block by block (src/cpu/attn.h). */
static void attend_task(void *ctx, int ith, int nth)
{
    const attn_job *j = ctx;
    cpu_backend *c = j->c;
    const int32_t hd = j->hd, hdv = j->hdv, nkv = j->n_head_kv;
    const int32_t group = j->n_head / nkv;
    const int32_t QD = j->n_head * hd, AD = j->n_head * hdv;
    const int32_t bt = hr_kv_block_tokens(j->kv);
    const size_t kd = hr_kv_k_dim(j->kv, j->layer), vd = hr_kv_v_dim(j->kv, j->layer);
    const int64_t total = j->n_items ? c->item_cost[j->n_items - 1] : 0;
    const int64_t clo = total * ith / nth, chi = total * (ith + 1) / nth;
    int32_t lo = 0, hi = 0;
    while (lo < j->n_items && c->item_cost[lo] <= clo)
        lo++;
    hi = lo;
    while (hi < j->n_items && c->item_cost[hi] <= chi)
        hi++;
    if (ith == nth - 1)
        hi = j->n_items;
    const float **kp = c->blk + (size_t)ith * 2 * (size_t)c->blk_cap, **vp = kp + c->blk_cap;
    int32_t have_seq = -1, have_kvh = -1, have_blocks = 0;
    for (int32_t it = lo; it < hi; it++) {
        const int32_t kvh = it / j->runs, r = it % j->runs;
        const int32_t t0 = c->run_start[r], nt = c->run_len[r], seq = j->seq[t0];
        int32_t max_pos = 0;
        for (int32_t i = 0; i < nt; i++)
            max_pos = c->n_pos[t0 + i] > max_pos ? c->n_pos[t0 + i] : max_pos;
        const int32_t nblk = (max_pos + bt - 1) / bt;
        if (seq != have_seq || kvh != have_kvh)
            have_blocks = 0;
        for (int32_t bi = have_blocks; bi < nblk; bi++) {
            kp[bi] = hr_kv_k(j->kv, j->layer, seq, bi * bt) + (size_t)kvh * hd;
            vp[bi] = hr_kv_v(j->kv, j->layer, seq, bi * bt) + (size_t)kvh * hdv;
        }
        if (nblk > have_blocks)
            have_blocks = nblk;
        have_seq = seq;
        have_kvh = kvh;
        const hr_attn_kv kvv = { kp, vp, bt, kd, vd };
        const float *q = j->q + (size_t)t0 * QD + (size_t)kvh * group * hd;
        float *out = j->out + (size_t)t0 * AD + (size_t)kvh * group * hdv;
        if (j->fast)
            j->fast(q, (size_t)QD, nt, c->n_pos + t0, group, hd, hdv, j->o->scale, &kvv, out, (size_t)AD);
        else
            hr_attn_ref_ex(q, (size_t)QD, nt, c->lo + t0, c->n_pos + t0, j->o->sinks ? j->o->sinks + kvh * group : NULL,
                           group, hd, hdv, j->o->scale, &kvv, out, (size_t)AD);
    }
}

static void cpu_attention(hr_backend *b, hr_kv *kv, int32_t layer, const hr_tokens *tk, const float *q,
                          int32_t n_head, int32_t n_head_kv, int32_t head_dim, int32_t head_dim_v,
                          const hr_attn_opts *o, float *out)
{
    cpu_backend *c = cpu(b);
    if (c->oom) /* an earlier operation failed: skip until check */
        return;
    const int32_t n = tk->n, nth = c->pool ? hr_pool_n_threads(c->pool) : 1;
    int32_t max_pos = 0;
    for (int32_t t = 0; t < n; t++)
        max_pos = tk->pos[t] > max_pos ? tk->pos[t] : max_pos;
    const size_t need = (size_t)((max_pos + 1) / hr_kv_block_tokens(kv) + 1), nt = (size_t)n;
    if (!grow(c, (void **)&c->blk, &c->blk_bytes, need * 2 * (size_t)nth * sizeof *c->blk) ||
        !grow(c, (void **)&c->run_start, &c->run_start_bytes, nt * sizeof(int32_t)) ||
        !grow(c, (void **)&c->run_len, &c->run_len_bytes, nt * sizeof(int32_t)) ||
        !grow(c, (void **)&c->n_pos, &c->n_pos_bytes, nt * sizeof(int32_t)) ||
        !grow(c, (void **)&c->lo, &c->lo_bytes, nt * sizeof(int32_t)) ||
        !grow(c, (void **)&c->item_cost, &c->item_bytes, nt * (size_t)n_head_kv * sizeof(int64_t)))
        return;
    c->blk_cap = (int32_t)(c->blk_bytes / (2 * (size_t)nth * sizeof *c->blk));
    /* runs of consecutive tokens of one sequence (at most HR_ATTN_MAX_TOKENS),
     * times the KV heads, with a running sum of their cost (positions
     * attended) so that threads can take equal shares */
    int32_t runs = 0;
    for (int32_t t = 0; t < n; runs++) {
        int32_t len = 1;
        while (t + len < n && tk->seq[t + len] == tk->seq[t] && len < HR_ATTN_MAX_TOKENS)
            len++;
        c->run_start[runs] = t;
        c->run_len[runs] = len;
        t += len;
    }
    for (int32_t t = 0; t < n; t++) {
        c->n_pos[t] = tk->pos[t] + 1;
        c->lo[t] = o->kind == HR_ATTN_WINDOW  ? (tk->pos[t] + 1 > o->window ? tk->pos[t] + 1 - o->window : 0)
                   : o->kind == HR_ATTN_CHUNKED ? tk->pos[t] / o->window * o->window
                                                : 0;
    }
    int32_t n_items = 0;
    int64_t cost = 0;
    for (int32_t h = 0; h < n_head_kv; h++)
        for (int32_t r = 0; r < runs; r++) {
            for (int32_t i = 0; i < c->run_len[r]; i++)
                cost += c->n_pos[c->run_start[r] + i] - c->lo[c->run_start[r] + i] + 16; /* + a fixed share per row */
            c->item_cost[n_items++] = cost;
        }
    /* the path's fast kernel for plain causal layers; the portable one with
     * windows, chunks and sinks (decided by the layer, never by the batch) */
    const bool plain = o->kind == HR_ATTN_CAUSAL && !o->sinks;
    attn_job job = { c, kv, layer, n_items, runs, tk->seq, q, out, n_head, n_head_kv, head_dim, head_dim_v, o,
                     plain ? hr_cpu_attn(n_head / n_head_kv, head_dim, head_dim_v) : NULL };
    if (c->pool)
        hr_pool_run(c->pool, attend_task, &job);
    else
        attend_task(&job, 0, 1);
}

/* ---- mixture of experts ---- */

static void cpu_route(hr_backend *b, const float *logits, int32_t n, const hr_route_opts *o, int32_t *ids,
                      float *weights)
{
    (void)b;
    const int32_t E = o->n_expert, k = o->k;
    float sel[HR_MAX_EXPERTS_USED], prob[HR_MAX_EXPERTS], score[HR_MAX_EXPERTS]; /* the loader's limits */
    for (int32_t t = 0; t < n; t++) {
        const float *lg = logits + (size_t)t * E;
        int32_t *id = ids + (size_t)t * k;
        float *w = weights + (size_t)t * k;
        /* the values experts are chosen by */
        if (o->kind == HR_ROUTE_SOFTMAX_TOPK) {
            float mx = -INFINITY, sum = 0.0f;
            for (int32_t e = 0; e < E; e++)
                mx = fmaxf(mx, lg[e]);
            for (int32_t e = 0; e < E; e++)
                sum += prob[e] = expf(lg[e] - mx);
            for (int32_t e = 0; e < E; e++)
                prob[e] /= sum;
        } else
            for (int32_t e = 0; e < E; e++)
                prob[e] = lg[e];
        for (int32_t e = 0; e < E; e++) /* a selection bias chooses, it does not weigh */
            score[e] = o->bias ? prob[e] + o->bias[e] : prob[e];
        /* top-k, highest first, the lower id on ties */
        for (int32_t s = 0; s < k; s++) {
            int32_t best = -1;
            for (int32_t e = 0; e < E; e++) {
                bool taken = false;
                for (int32_t q = 0; q < s && !taken; q++)
                    taken = id[q] == e;
                if (!taken && (best < 0 || score[e] > score[best]))
                    best = e;
            }
            id[s] = best;
            sel[s] = prob[best];
        }
        if (o->kind == HR_ROUTE_SOFTMAX_TOPK) {
            float sum = 0.0f;
            for (int32_t s = 0; s < k; s++)
                sum += w[s] = sel[s];
            if (o->renorm)
                for (int32_t s = 0; s < k; s++)
                    w[s] /= sum;
        } else if (o->kind == HR_ROUTE_TOPK_SOFTMAX) {
            float mx = sel[0], sum = 0.0f;
            for (int32_t s = 0; s < k; s++)
                sum += w[s] = expf(sel[s] - mx);
            for (int32_t s = 0; s < k; s++)
                w[s] /= sum;
        } else {
            for (int32_t s = 0; s < k; s++)
                w[s] = 1.0f / (1.0f + expf(-sel[s]));
        }
    }
}

static void cpu_dup_rows(hr_backend *b, float *out, const float *x, int32_t n, int32_t k, int32_t dim)
{
    (void)b;
    for (int64_t s = 0; s < (int64_t)n * k; s++)
        memcpy(out + s * dim, x + s / k * dim, (size_t)dim * sizeof(float));
}

static void cpu_select_rows(hr_backend *b, float *out, const float *x, const int32_t *rows, int32_t n, int32_t dim)
{
    (void)b;
    for (int32_t i = 0; i < n; i++)
        if (out + (size_t)i * dim != x + (size_t)rows[i] * dim)
            memmove(out + (size_t)i * dim, x + (size_t)rows[i] * dim, (size_t)dim * sizeof(float));
}

static void cpu_scale_rows(hr_backend *b, float *x, const float *w, int64_t rows, int32_t dim)
{
    (void)b;
    for (int64_t r = 0; r < rows; r++)
        for (int32_t i = 0; i < dim; i++)
            x[r * dim + i] *= w[r];
}

static void cpu_add_bias_id(hr_backend *b, float *y, const float *bias, const int32_t *ids, int32_t n, int32_t k,
                            int32_t dim)
{
    (void)b;
    for (int64_t s = 0; s < (int64_t)n * k; s++)
        for (int32_t i = 0; i < dim; i++)
            y[s * dim + i] += bias[(size_t)ids[s] * dim + i];
}

static void cpu_moe_sum(hr_backend *b, float *out, const float *y, const float *w, int32_t n, int32_t k, int32_t dim)
{
    (void)b;
    for (int32_t t = 0; t < n; t++) {
        float *o = out + (size_t)t * dim;
        for (int32_t s = 0; s < k; s++) {
            const float *ys = y + ((size_t)t * k + s) * dim;
            const float ws = w ? w[(size_t)t * k + s] : 1.0f;
            for (int32_t i = 0; i < dim; i++)
                o[i] = s ? o[i] + ws * ys[i] : ws * ys[i];
        }
    }
}

static hr_status cpu_check(hr_backend *b, hr_err *err)
{
    cpu_backend *c = cpu(b);
    if (!c->oom)
        return HR_OK;
    c->oom = false;
    return hr_err_set(err, HR_ERR_NOMEM, "out of memory for the CPU backend's scratch");
}

static void cpu_free(hr_backend *b)
{
    cpu_backend *c = cpu(b);
    hr_pool_free(c->pool);
    free(c->act);
    for (int i = 0; i < HR_MAX_ROPE; i++)
        free(c->rt[i].cs);
    free(c->blk);
    free(c->run_start);
    free(c->run_len);
    free(c->n_pos);
    free(c->lo);
    free(c->item_cost);
    free(c);
}

static const hr_backend_ops cpu_ops = {
    .name = "cpu",
    .free = cpu_free,
    .check = cpu_check,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .read = cpu_copy,
    .write = cpu_copy,
    .upload = cpu_upload,
    .weight_free = cpu_weight_free,
    .weight_bytes = cpu_weight_bytes,
    .matmul = cpu_matmul,
    .matmul_n = cpu_matmul_n,
    .matmul_id = cpu_matmul_id,
    .get_rows = cpu_get_rows,
    .rms_norm = cpu_rms_norm,
    .add = cpu_add,
    .add_bias = cpu_add_bias,
    .scale = cpu_scale,
    .softcap = cpu_softcap,
    .glu = cpu_glu,
    .rope = cpu_rope,
    .attn_temp = cpu_attn_temp,
    .kv_write = cpu_kv_write,
    .attention = cpu_attention,
    .route = cpu_route,
    .dup_rows = cpu_dup_rows,
    .select_rows = cpu_select_rows,
    .scale_rows = cpu_scale_rows,
    .add_bias_id = cpu_add_bias_id,
    .moe_sum = cpu_moe_sum,
};

hr_status hr_backend_cpu_new(int n_threads, hr_backend **out, hr_err *err)
{
    *out = NULL;
    cpu_backend *c = calloc(1, sizeof *c);
    if (!c)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    c->base.ops = &cpu_ops;
    c->n_threads = n_threads < 1 ? 1 : n_threads;
    if (c->n_threads > 1 && !(c->pool = hr_pool_new(c->n_threads))) {
        free(c);
        return hr_err_set(err, HR_ERR_NOMEM, "cannot start %d compute threads", n_threads);
    }
    *out = &c->base;
    return HR_OK;
}

hr_pool *hr_backend_cpu_pool(hr_backend *b) { return cpu(b)->pool; }
