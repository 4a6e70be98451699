/* ref_backend.c - the reference backend (see ref_backend.h): the operations
 * of backend.h as plain double-precision loops, over memory the caller
 * cannot touch. Written from the formulas, not from src/cpu/ or cpu.c. */
#include "ref_backend.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "quant/quant.h"

/* ---- memory: handles in a PROT_NONE range, bytes elsewhere ---- */

#define SPACE ((size_t)1 << 34) /* reserved addresses, never backed */
#define GUARD ((size_t)4096)    /* unassigned addresses between two allocations */
#define CANARY 64
#define CANARY_BYTE 0xA5

typedef struct {
    uintptr_t h;  /* handle address given to the caller */
    size_t bytes;
    unsigned char *mem; /* CANARY | bytes | CANARY */
    bool live;
} ref_alloc;

struct hr_bweight {
    float *f; /* dequantised: n_expert (>= 1) x ne1 rows of ne0 floats */
    int64_t ne0, ne1;
    int32_t n_expert;
    uint32_t type, vdt; /* the file's type and its dot-product partner */
};

typedef struct {
    hr_backend base;
    bool quant_acts;
    unsigned char *space;
    size_t next; /* offset of the next handle in space */
    ref_alloc *a; /* by increasing h */
    size_t n_a, cap_a, live;
    size_t live_weights, weight_bytes;
    size_t misuses, canary_breaks, faults;
    bool saw_quantized;
    long fail_in; /* > 0: the fail_in-th allocation from now fails */
    /* the first failure since the last check */
    hr_status pending;
    char msg[256];
} ref_backend;

static ref_backend *rb(hr_backend *b) { return (ref_backend *)b; }

static void fail(ref_backend *r, hr_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(ref_backend *r, hr_status st, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (st == HR_ERR_INVALID) {
        r->misuses++;
        fprintf(stderr, "ref backend: misuse: %s\n", buf);
    }
    if (!r->pending) {
        r->pending = st;
        snprintf(r->msg, sizeof r->msg, "%s", buf);
    }
}

/* A host allocation that honours fault injection. */
static void *xmalloc(ref_backend *r, size_t n)
{
    if (r->fail_in > 0 && --r->fail_in == 0) {
        r->faults++;
        return NULL;
    }
    return malloc(n ? n : 1);
}

/* Scratch for an operation; on failure the op is skipped and check reports it. */
static void *scratch(ref_backend *r, size_t n, const char *op)
{
    void *p = xmalloc(r, n);
    if (!p)
        fail(r, HR_ERR_NOMEM, "out of memory for %s scratch (%zu bytes)", op, n);
    return p;
}

static ref_alloc *find(ref_backend *r, uintptr_t p)
{
    size_t lo = 0, hi = r->n_a;
    while (lo < hi) { /* the last allocation with h <= p */
        const size_t mid = (lo + hi) / 2;
        if (r->a[mid].h <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo)
        return NULL;
    ref_alloc *a = &r->a[lo - 1];
    return p < a->h + a->bytes + (a->bytes ? 0 : 1) ? a : NULL;
}

/* The real bytes behind [p, p + bytes) of backend memory, or NULL (a misuse). */
static void *dev(ref_backend *r, const void *p, size_t bytes, const char *op, const char *arg)
{
    const uintptr_t u = (uintptr_t)p;
    if (r->pending) /* after a failure the forward is void: skip the rest until check */
        return NULL;
    if (!p) {
        fail(r, HR_ERR_INVALID, "%s: %s is NULL", op, arg);
        return NULL;
    }
    ref_alloc *a = find(r, u);
    if (!a) {
        fail(r, HR_ERR_INVALID, "%s: %s (%p) is not backend memory", op, arg, p);
        return NULL;
    }
    if (!a->live) {
        fail(r, HR_ERR_INVALID, "%s: %s (%p) was released", op, arg, p);
        return NULL;
    }
    if ((u - a->h) % sizeof(float)) {
        fail(r, HR_ERR_INVALID, "%s: %s (%p) is misaligned", op, arg, p);
        return NULL;
    }
    if (bytes > a->bytes - (u - a->h)) {
        fail(r, HR_ERR_INVALID, "%s: %s needs %zu bytes at offset %zu of a %zu-byte buffer", op, arg, bytes,
             (size_t)(u - a->h), a->bytes);
        return NULL;
    }
    return a->mem + CANARY + (u - a->h);
}

/* dev() for an optional argument: NULL stays NULL, *ok false on misuse. */
static void *dev_opt(ref_backend *r, const void *p, size_t bytes, const char *op, const char *arg, bool *ok)
{
    if (!p)
        return NULL;
    void *q = dev(r, p, bytes, op, arg);
    if (!q)
        *ok = false;
    return q;
}

static void *ref_alloc_fn(hr_backend *b, size_t bytes)
{
    ref_backend *r = rb(b);
    const size_t span = (bytes + 63) / 64 * 64 + GUARD;
    if (span > SPACE - r->next || bytes > SPACE)
        return NULL;
    if (r->n_a == r->cap_a) {
        const size_t cap = r->cap_a ? r->cap_a * 2 : 256;
        ref_alloc *na = realloc(r->a, cap * sizeof *na);
        if (!na)
            return NULL;
        r->a = na;
        r->cap_a = cap;
    }
    unsigned char *mem = xmalloc(r, bytes + 2 * CANARY);
    if (!mem)
        return NULL;
    memset(mem, CANARY_BYTE, CANARY);
    memset(mem + CANARY + bytes, CANARY_BYTE, CANARY);
    /* garbage, not zeros: a result the engine forgot to compute shows */
    for (size_t i = 0; i < bytes; i++)
        mem[CANARY + i] = (unsigned char)(0x7F ^ (i * 131));
    const uintptr_t h = (uintptr_t)(r->space + GUARD + r->next);
    r->next += span;
    r->a[r->n_a++] = (ref_alloc){ h, bytes, mem, true };
    r->live++;
    return (void *)h;
}

static bool canaries_ok(const ref_alloc *a)
{
    for (size_t i = 0; i < CANARY; i++)
        if (a->mem[i] != CANARY_BYTE || a->mem[CANARY + a->bytes + i] != CANARY_BYTE)
            return false;
    return true;
}

static void ref_release(hr_backend *b, void *p)
{
    ref_backend *r = rb(b);
    if (!p)
        return;
    ref_alloc *a = find(r, (uintptr_t)p);
    if (!a || a->h != (uintptr_t)p || !a->live) {
        fail(r, HR_ERR_INVALID, "release: %p is not a live allocation", p);
        return;
    }
    if (!canaries_ok(a)) {
        r->canary_breaks++;
        fprintf(stderr, "ref backend: canary of the %zu-byte buffer %p damaged\n", a->bytes, p);
    }
    free(a->mem);
    a->mem = NULL;
    a->live = false; /* the record stays: a later use is reported as use after release */
    r->live--;
}

static void ref_read(hr_backend *b, void *host_dst, const void *src, size_t bytes)
{
    ref_backend *r = rb(b);
    if (r->pending)
        fail(r, HR_ERR_INVALID, "read: a failure of the operations before it was not checked");
    const void *s = dev(r, src, bytes, "read", "src");
    if (s)
        memcpy(host_dst, s, bytes);
}

static void ref_write(hr_backend *b, void *dst, const void *host_src, size_t bytes)
{
    void *d = dev(rb(b), dst, bytes, "write", "dst");
    if (d)
        memcpy(d, host_src, bytes);
}

/* ---- weights ---- */

static hr_status ref_upload(hr_backend *b, const void *data, uint32_t type, int64_t ne0, int64_t ne1,
                            size_t row_bytes, int32_t n_expert, size_t expert_bytes, bool still_read,
                            hr_bweight **out, hr_err *err)
{
    ref_backend *r = rb(b);
    (void)still_read;
    *out = NULL;
    const hr_type_traits *tt = hr_type_get(type);
    if (!tt || !tt->supported || !tt->to_float)
        return hr_err_set(err, HR_ERR_UNSUPPORTED, "ref backend: tensor type %s", hr_type_name(type));
    if (ne0 <= 0 || ne1 <= 0 || n_expert < 0 || ne0 % tt->block_size || row_bytes < hr_row_size(type, ne0))
        return hr_err_set(err, HR_ERR_INVALID, "ref backend: bad weight shape %lld x %lld", (long long)ne0,
                          (long long)ne1);
    const int32_t ne = n_expert ? n_expert : 1;
    hr_bweight *w = xmalloc(r, sizeof *w);
    float *f = xmalloc(r, (size_t)ne * (size_t)ne1 * (size_t)ne0 * sizeof(float));
    if (!w || !f) {
        free(w);
        free(f);
        return hr_err_set(err, HR_ERR_NOMEM, "ref backend: out of memory for a %lld x %lld weight",
                          (long long)ne1, (long long)ne0);
    }
    for (int32_t e = 0; e < ne; e++)
        for (int64_t row = 0; row < ne1; row++)
            tt->to_float((const char *)data + (size_t)e * expert_bytes + (size_t)row * row_bytes,
                         f + ((size_t)e * (size_t)ne1 + (size_t)row) * (size_t)ne0, ne0);
    *w = (hr_bweight){ f, ne0, ne1, n_expert, type, tt->vec_dot_type };
    if (tt->vec_dot_type != HR_TYPE_F32)
        r->saw_quantized = true;
    r->live_weights++;
    r->weight_bytes += (size_t)ne * (size_t)ne1 * (size_t)ne0 * sizeof(float);
    *out = w;
    return HR_OK;
}

static void ref_weight_free(hr_backend *b, hr_bweight *w)
{
    ref_backend *r = rb(b);
    if (!w)
        return;
    r->weight_bytes -= (size_t)(w->n_expert ? w->n_expert : 1) * (size_t)w->ne1 * (size_t)w->ne0 * sizeof(float);
    r->live_weights--;
    free(w->f);
    free(w);
}

static size_t ref_weight_bytes(const hr_backend *b) { return ((const ref_backend *)b)->weight_bytes; }

/* ---- matrix products ---- */

/* The activation row as the product sees it: itself, or rounded through
 * the weight's dot-product partner type. */
static const float *act_row(ref_backend *r, const hr_bweight *w, const float *x, float *xq, void *qbuf)
{
    if (!r->quant_acts || w->vdt == HR_TYPE_F32)
        return x;
    const hr_type_traits *at = hr_type_get(w->vdt);
    at->from_float(x, qbuf, w->ne0);
    at->to_float(qbuf, xq, w->ne0);
    return xq;
}

/* y (ne1) = matrix e of w times x (ne0), accumulated in double. */
static void gemv(const hr_bweight *w, int32_t e, const float *x, float *y)
{
    const float *m = w->f + (size_t)e * (size_t)w->ne1 * (size_t)w->ne0;
    for (int64_t o = 0; o < w->ne1; o++) {
        const float *row = m + (size_t)o * (size_t)w->ne0;
        double s = 0.0;
        for (int64_t i = 0; i < w->ne0; i++)
            s += (double)row[i] * (double)x[i];
        y[o] = (float)s;
    }
}

static bool overlap(const void *a, size_t na, const void *b, size_t nb)
{
    return (const char *)a < (const char *)b + nb && (const char *)b < (const char *)a + na;
}

static void ref_matmul(hr_backend *b, const hr_bweight *w, const float *x, int32_t n, float *y)
{
    ref_backend *r = rb(b);
    if (!w) {
        fail(r, HR_ERR_INVALID, "matmul: no weight");
        return;
    }
    const size_t xb = (size_t)n * (size_t)w->ne0 * sizeof(float), yb = (size_t)n * (size_t)w->ne1 * sizeof(float);
    const float *X = dev(r, x, xb, "matmul", "x");
    float *Y = dev(r, y, yb, "matmul", "y");
    if (!X || !Y)
        return;
    if (overlap(X, xb, Y, yb)) {
        fail(r, HR_ERR_INVALID, "matmul: x and y overlap");
        return;
    }
    float *xq = scratch(r, (size_t)w->ne0 * sizeof(float) + hr_row_size(w->vdt, w->ne0), "matmul");
    if (!xq)
        return;
    for (int32_t t = 0; t < n; t++)
        gemv(w, 0, act_row(r, w, X + (size_t)t * w->ne0, xq, xq + w->ne0), Y + (size_t)t * w->ne1);
    free(xq);
}

static void ref_matmul_n(hr_backend *b, int nw, const hr_bweight *const *w, const float *x, int32_t n,
                         float *const *y)
{
    if (nw < 1 || nw > 3) {
        fail(rb(b), HR_ERR_INVALID, "matmul_n: %d matrices", nw);
        return;
    }
    for (int i = 0; i < nw; i++)
        ref_matmul(b, w[i], x, n, y[i]);
}

static void ref_matmul_id(hr_backend *b, const hr_bweight *w, const float *x, bool x_per_slot, int32_t n, int32_t k,
                          const int32_t *ids, float *y)
{
    ref_backend *r = rb(b);
    if (!w || !w->n_expert) {
        fail(r, HR_ERR_INVALID, "matmul_id: not an expert tensor");
        return;
    }
    const size_t slots = (size_t)n * (size_t)k;
    const float *X = dev(r, x, (x_per_slot ? slots : (size_t)n) * (size_t)w->ne0 * sizeof(float), "matmul_id", "x");
    const int32_t *I = dev(r, ids, slots * sizeof(int32_t), "matmul_id", "ids");
    float *Y = dev(r, y, slots * (size_t)w->ne1 * sizeof(float), "matmul_id", "y");
    if (!X || !I || !Y)
        return;
    float *xq = scratch(r, (size_t)w->ne0 * sizeof(float) + hr_row_size(w->vdt, w->ne0), "matmul_id");
    if (!xq)
        return;
    for (size_t s = 0; s < slots; s++) {
        if (I[s] < 0 || I[s] >= w->n_expert) {
            fail(r, HR_ERR_INVALID, "matmul_id: expert id %d of slot %zu not in [0, %d)", I[s], s, w->n_expert);
            break;
        }
        const float *xr = X + (x_per_slot ? s : s / (size_t)k) * (size_t)w->ne0;
        gemv(w, I[s], act_row(r, w, xr, xq, xq + w->ne0), Y + s * (size_t)w->ne1);
    }
    free(xq);
}

static void ref_get_rows(hr_backend *b, const hr_bweight *w, const int32_t *ids, int32_t n, float *out)
{
    ref_backend *r = rb(b);
    float *O = dev(r, out, (size_t)n * (size_t)w->ne0 * sizeof(float), "get_rows", "out");
    if (!O)
        return;
    for (int32_t t = 0; t < n; t++) {
        if (ids[t] < 0 || ids[t] >= w->ne1) {
            fail(r, HR_ERR_INVALID, "get_rows: row %d not in [0, %lld)", ids[t], (long long)w->ne1);
            return;
        }
        memcpy(O + (size_t)t * w->ne0, w->f + (size_t)ids[t] * w->ne0, (size_t)w->ne0 * sizeof(float));
    }
}

/* ---- element-wise ---- */

static void ref_rms_norm(hr_backend *b, float *out, const float *x, const float *w, int64_t rows, int32_t dim,
                         float eps)
{
    ref_backend *r = rb(b);
    bool ok = true;
    const size_t nb = (size_t)rows * (size_t)dim * sizeof(float);
    float *O = dev(r, out, nb, "rms_norm", "out");
    const float *X = dev(r, x, nb, "rms_norm", "x");
    const float *W = dev_opt(r, w, (size_t)dim * sizeof(float), "rms_norm", "w", &ok);
    if (!O || !X || !ok)
        return;
    for (int64_t i = 0; i < rows; i++) {
        const float *xr = X + i * dim;
        double ss = 0.0;
        for (int32_t j = 0; j < dim; j++)
            ss += (double)xr[j] * (double)xr[j];
        const double inv = 1.0 / sqrt(ss / dim + (double)eps);
        for (int32_t j = 0; j < dim; j++)
            O[i * dim + j] = (float)((double)xr[j] * inv * (W ? (double)W[j] : 1.0));
    }
}

static void ref_add(hr_backend *b, float *y, const float *x, int64_t n)
{
    ref_backend *r = rb(b);
    float *Y = dev(r, y, (size_t)n * sizeof(float), "add", "y");
    const float *X = dev(r, x, (size_t)n * sizeof(float), "add", "x");
    if (!Y || !X)
        return;
    for (int64_t i = 0; i < n; i++)
        Y[i] = (float)((double)Y[i] + (double)X[i]);
}

static void ref_add_bias(hr_backend *b, float *y, const float *bias, int64_t rows, int32_t dim)
{
    ref_backend *r = rb(b);
    float *Y = dev(r, y, (size_t)rows * (size_t)dim * sizeof(float), "add_bias", "y");
    const float *B = dev(r, bias, (size_t)dim * sizeof(float), "add_bias", "bias");
    if (!Y || !B)
        return;
    for (int64_t i = 0; i < rows; i++)
        for (int32_t j = 0; j < dim; j++)
            Y[i * dim + j] += B[j];
}

static void ref_scale(hr_backend *b, float *y, float s, int64_t n)
{
    float *Y = dev(rb(b), y, (size_t)n * sizeof(float), "scale", "y");
    if (Y)
        for (int64_t i = 0; i < n; i++)
            Y[i] = (float)((double)Y[i] * (double)s);
}

static void ref_softcap(hr_backend *b, float *y, float c, int64_t n)
{
    float *Y = dev(rb(b), y, (size_t)n * sizeof(float), "softcap", "y");
    if (Y)
        for (int64_t i = 0; i < n; i++)
            Y[i] = (float)((double)c * tanh((double)Y[i] / (double)c));
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static void ref_glu(hr_backend *b, hr_act act, float alpha, float limit, float *g, const float *u, int64_t n)
{
    ref_backend *r = rb(b);
    float *G = dev(r, g, (size_t)n * sizeof(float), "glu", "g");
    const float *U = dev(r, u, (size_t)n * sizeof(float), "glu", "u");
    if (!G || !U)
        return;
    const double pi = 3.14159265358979323846;
    for (int64_t i = 0; i < n; i++) {
        const double x = G[i], v = U[i];
        double o;
        switch (act) {
        case HR_ACT_SILU:
            o = x * sigmoid(x) * v;
            break;
        case HR_ACT_GELU_TANH:
            o = 0.5 * x * (1.0 + tanh(sqrt(2.0 / pi) * (x + 0.044715 * x * x * x))) * v;
            break;
        case HR_ACT_SWIGLU_CLAMP: {
            const double L = limit, gc = x < L ? x : L, uc = v < -L ? -L : v > L ? L : v;
            o = gc * sigmoid((double)alpha * gc) * (uc + 1.0);
            break;
        }
        default:
            fail(r, HR_ERR_INVALID, "glu: unknown activation %d", (int)act);
            return;
        }
        G[i] = (float)o;
    }
}

/* ---- RoPE, straight from hr_rope_cfg's formula (model.h) ---- */

/* YaRN's correction dimension of wavelength ratio beta: the pair index whose
 * wavelength turns beta times over the original context. */
static double corr_dim(const hr_rope_cfg *c, int32_t nd, double beta)
{
    const double pi = 3.14159265358979323846;
    return nd * log((double)c->n_ctx_orig / (beta * 2.0 * pi)) / (2.0 * log((double)c->base));
}

static void ref_rope(hr_backend *b, float *x, const hr_tokens *tk, int32_t n_head, int32_t head_dim, int32_t stride,
                     int32_t rope_dim, hr_rope_style style, const hr_rope_cfg *cfg, const float *factors)
{
    ref_backend *r = rb(b);
    bool ok = true;
    if (tk->n <= 0)
        return;
    if (rope_dim > head_dim || rope_dim % 2 || (int64_t)n_head * head_dim > stride) {
        fail(r, HR_ERR_INVALID, "rope: rope_dim %d, head_dim %d, %d heads, stride %d", rope_dim, head_dim, n_head,
             stride);
        return;
    }
    float *X = dev(r, x, ((size_t)(tk->n - 1) * (size_t)stride + (size_t)n_head * head_dim) * sizeof(float), "rope",
                   "x");
    const float *F = dev_opt(r, factors, (size_t)(rope_dim / 2) * sizeof(float), "rope", "factors", &ok);
    if (!X || !ok)
        return;
    const bool yarn = cfg->ext_factor != 0.0f;
    double lo = 0.0, hi = 0.0, mscale = cfg->attn_factor;
    if (yarn) {
        lo = floor(corr_dim(cfg, rope_dim, cfg->beta_fast));
        hi = ceil(corr_dim(cfg, rope_dim, cfg->beta_slow));
        lo = lo < 0.0 ? 0.0 : lo;
        hi = hi > rope_dim - 1 ? rope_dim - 1 : hi;
        mscale *= 1.0 + 0.1 * log(1.0 / (double)cfg->freq_scale);
    }
    for (int32_t t = 0; t < tk->n; t++)
        for (int32_t i = 0; i < rope_dim / 2; i++) {
            double th_e = tk->pos[t] * pow((double)cfg->base, -2.0 * i / rope_dim);
            if (F)
                th_e /= F[i];
            const double th_i = cfg->freq_scale * th_e;
            double th = th_i;
            if (yarn) {
                double y = (i - lo) / (hi - lo > 0.001 ? hi - lo : 0.001);
                y = y < 0.0 ? 0.0 : y > 1.0 ? 1.0 : y;
                const double ri = cfg->ext_factor * (1.0 - y);
                th = th_i * (1.0 - ri) + th_e * ri;
            }
            const double c = cos(th) * mscale, s = sin(th) * mscale;
            const int32_t a = style == HR_ROPE_NEOX ? i : 2 * i;
            const int32_t bb = style == HR_ROPE_NEOX ? i + rope_dim / 2 : 2 * i + 1;
            for (int32_t h = 0; h < n_head; h++) {
                float *v = X + (size_t)t * stride + (size_t)h * head_dim;
                const double x0 = v[a], x1 = v[bb];
                v[a] = (float)(x0 * c - x1 * s);
                v[bb] = (float)(x0 * s + x1 * c);
            }
        }
}

static void ref_attn_temp(hr_backend *b, float *q, const hr_tokens *tk, int32_t width, float scale, int32_t floor_)
{
    ref_backend *r = rb(b);
    float *Q = dev(r, q, (size_t)tk->n * (size_t)width * sizeof(float), "attn_temp", "q");
    if (!Q)
        return;
    if (floor_ < 1) {
        fail(r, HR_ERR_INVALID, "attn_temp: floor %d", floor_);
        return;
    }
    for (int32_t t = 0; t < tk->n; t++) {
        const double f = 1.0 + (double)scale * log((double)((tk->pos[t] + 1) / floor_) + 1.0);
        for (int32_t i = 0; i < width; i++)
            Q[(size_t)t * width + i] = (float)(Q[(size_t)t * width + i] * f);
    }
}

/* ---- KV cache and attention ---- */

static void ref_kv_write(hr_backend *b, hr_kv *kv, int32_t layer, const hr_tokens *tk, const float *k, const float *v)
{
    ref_backend *r = rb(b);
    const size_t kd = hr_kv_k_dim(kv, layer), vd = hr_kv_v_dim(kv, layer);
    const float *K = dev(r, k, (size_t)tk->n * kd * sizeof(float), "kv_write", "k");
    const float *V = dev(r, v, (size_t)tk->n * vd * sizeof(float), "kv_write", "v");
    if (!K || !V)
        return;
    for (int32_t t = 0; t < tk->n; t++) {
        memcpy(hr_kv_k(kv, layer, tk->seq[t], tk->pos[t]), K + (size_t)t * kd, kd * sizeof(float));
        memcpy(hr_kv_v(kv, layer, tk->seq[t], tk->pos[t]), V + (size_t)t * vd, vd * sizeof(float));
    }
}

/* Whether a query at position i sees key position j. */
static bool visible(const hr_attn_opts *o, int32_t i, int32_t j)
{
    if (j > i)
        return false;
    switch (o->kind) {
    case HR_ATTN_WINDOW:
        return i - j < o->window;
    case HR_ATTN_CHUNKED:
        return j / o->window == i / o->window;
    default:
        return true;
    }
}

static void ref_attention(hr_backend *b, hr_kv *kv, int32_t layer, const hr_tokens *tk, const float *q,
                          int32_t n_head, int32_t n_head_kv, int32_t head_dim, int32_t head_dim_v,
                          const hr_attn_opts *o, float *out)
{
    ref_backend *r = rb(b);
    bool ok = true;
    if (n_head_kv < 1 || n_head % n_head_kv || (o->kind != HR_ATTN_CAUSAL && o->window < 1) ||
        hr_kv_k_dim(kv, layer) != (size_t)n_head_kv * head_dim ||
        hr_kv_v_dim(kv, layer) != (size_t)n_head_kv * head_dim_v) {
        fail(r, HR_ERR_INVALID, "attention: layer %d shapes (%d/%d heads, %d/%d dims, window %d) do not match", layer,
             n_head, n_head_kv, head_dim, head_dim_v, o->window);
        return;
    }
    const size_t QD = (size_t)n_head * head_dim, AD = (size_t)n_head * head_dim_v;
    const float *Q = dev(r, q, (size_t)tk->n * QD * sizeof(float), "attention", "q");
    float *O = dev(r, out, (size_t)tk->n * AD * sizeof(float), "attention", "out");
    const float *S = dev_opt(r, o->sinks, (size_t)n_head * sizeof(float), "attention", "sinks", &ok);
    if (!Q || !O || !ok)
        return;
    int32_t max_pos = 0;
    for (int32_t t = 0; t < tk->n; t++)
        max_pos = tk->pos[t] > max_pos ? tk->pos[t] : max_pos;
    double *score = scratch(r, ((size_t)max_pos + 1) * sizeof(double), "attention");
    double *acc = scratch(r, (size_t)head_dim_v * sizeof(double), "attention");
    if (!score || !acc) {
        free(score);
        free(acc);
        return;
    }
    const int32_t group = n_head / n_head_kv;
    for (int32_t t = 0; t < tk->n; t++) {
        const int32_t i = tk->pos[t], sq = tk->seq[t];
        for (int32_t h = 0; h < n_head; h++) {
            const int32_t kvh = h / group;
            const float *qh = Q + (size_t)t * QD + (size_t)h * head_dim;
            /* pass 1: the scores of the visible positions and their maximum */
            double mx = S ? (double)S[h] : -INFINITY;
            for (int32_t j = 0; j <= i; j++) {
                if (!visible(o, i, j))
                    continue;
                const float *kj = hr_kv_k(kv, layer, sq, j) + (size_t)kvh * head_dim;
                double d = 0.0;
                for (int32_t c = 0; c < head_dim; c++)
                    d += (double)qh[c] * (double)kj[c];
                score[j] = d * (double)o->scale;
                mx = score[j] > mx ? score[j] : mx;
            }
            /* pass 2: the weighted sum of the values; a sink only joins the denominator */
            double den = S ? exp((double)S[h] - mx) : 0.0;
            for (int32_t c = 0; c < head_dim_v; c++)
                acc[c] = 0.0;
            for (int32_t j = 0; j <= i; j++) {
                if (!visible(o, i, j))
                    continue;
                const double p = exp(score[j] - mx);
                const float *vj = hr_kv_v(kv, layer, sq, j) + (size_t)kvh * head_dim_v;
                den += p;
                for (int32_t c = 0; c < head_dim_v; c++)
                    acc[c] += p * (double)vj[c];
            }
            float *oh = O + (size_t)t * AD + (size_t)h * head_dim_v;
            for (int32_t c = 0; c < head_dim_v; c++)
                oh[c] = (float)(acc[c] / den);
        }
    }
    free(score);
    free(acc);
}

/* ---- mixture of experts ---- */

static void ref_route(hr_backend *b, const float *logits, int32_t n, const hr_route_opts *o, int32_t *ids,
                      float *weights)
{
    ref_backend *r = rb(b);
    bool ok = true;
    const int32_t E = o->n_expert, k = o->k;
    if (E < 1 || k < 1 || k > E) {
        fail(r, HR_ERR_INVALID, "route: %d of %d experts", k, E);
        return;
    }
    const float *L = dev(r, logits, (size_t)n * (size_t)E * sizeof(float), "route", "logits");
    int32_t *I = dev(r, ids, (size_t)n * (size_t)k * sizeof(int32_t), "route", "ids");
    float *W = dev(r, weights, (size_t)n * (size_t)k * sizeof(float), "route", "weights");
    const float *B = dev_opt(r, o->bias, (size_t)E * sizeof(float), "route", "bias", &ok);
    double *val = scratch(r, (size_t)E * sizeof(double), "route");
    bool *taken = scratch(r, (size_t)E, "route");
    if (!L || !I || !W || !ok || !val || !taken) {
        free(val);
        free(taken);
        return;
    }
    for (int32_t t = 0; t < n; t++) {
        const float *lg = L + (size_t)t * E;
        int32_t *id = I + (size_t)t * k;
        float *w = W + (size_t)t * k;
        /* the value each expert is weighted by */
        if (o->kind == HR_ROUTE_SOFTMAX_TOPK) {
            double mx = lg[0], sum = 0.0;
            for (int32_t e = 1; e < E; e++)
                mx = lg[e] > mx ? lg[e] : mx;
            for (int32_t e = 0; e < E; e++)
                sum += val[e] = exp((double)lg[e] - mx);
            for (int32_t e = 0; e < E; e++)
                val[e] /= sum;
        } else {
            for (int32_t e = 0; e < E; e++)
                val[e] = lg[e];
        }
        /* choose k by value + bias, the larger first, the lower id on ties */
        memset(taken, 0, (size_t)E);
        for (int32_t s = 0; s < k; s++) {
            int32_t best = -1;
            for (int32_t e = 0; e < E; e++)
                if (!taken[e] && (best < 0 || val[e] + (B ? B[e] : 0.0) > val[best] + (B ? B[best] : 0.0)))
                    best = e;
            taken[best] = true;
            id[s] = best;
        }
        double sum = 0.0, mx = val[id[0]];
        switch (o->kind) {
        case HR_ROUTE_SOFTMAX_TOPK:
            for (int32_t s = 0; s < k; s++)
                sum += val[id[s]];
            for (int32_t s = 0; s < k; s++)
                w[s] = (float)(o->renorm ? val[id[s]] / sum : val[id[s]]);
            break;
        case HR_ROUTE_TOPK_SOFTMAX:
            for (int32_t s = 0; s < k; s++)
                mx = val[id[s]] > mx ? val[id[s]] : mx;
            for (int32_t s = 0; s < k; s++)
                sum += exp(val[id[s]] - mx);
            for (int32_t s = 0; s < k; s++)
                w[s] = (float)(exp(val[id[s]] - mx) / sum);
            break;
        case HR_ROUTE_SIGMOID_TOPK:
            for (int32_t s = 0; s < k; s++)
                w[s] = (float)sigmoid(val[id[s]]);
            break;
        default:
            fail(r, HR_ERR_INVALID, "route: unknown router %d", (int)o->kind);
            t = n;
            break;
        }
    }
    free(val);
    free(taken);
}

static void ref_dup_rows(hr_backend *b, float *out, const float *x, int32_t n, int32_t k, int32_t dim)
{
    ref_backend *r = rb(b);
    float *O = dev(r, out, (size_t)n * (size_t)k * (size_t)dim * sizeof(float), "dup_rows", "out");
    const float *X = dev(r, x, (size_t)n * (size_t)dim * sizeof(float), "dup_rows", "x");
    if (!O || !X)
        return;
    for (int32_t t = 0; t < n; t++)
        for (int32_t s = 0; s < k; s++)
            memcpy(O + ((size_t)t * k + s) * dim, X + (size_t)t * dim, (size_t)dim * sizeof(float));
}

static void ref_select_rows(hr_backend *b, float *out, const float *x, const int32_t *rows, int32_t n, int32_t dim)
{
    ref_backend *r = rb(b);
    int32_t hi = 0;
    for (int32_t i = 0; i < n; i++)
        hi = rows[i] + 1 > hi ? rows[i] + 1 : hi;
    float *O = dev(r, out, (size_t)n * (size_t)dim * sizeof(float), "select_rows", "out");
    const float *X = dev(r, x, (size_t)hi * (size_t)dim * sizeof(float), "select_rows", "x");
    if (!O || !X)
        return;
    for (int32_t i = 0; i < n; i++) {
        if (rows[i] < 0 || (O == X && rows[i] < i)) { /* in place only moves rows down */
            fail(r, HR_ERR_INVALID, "select_rows: row %d at %d", rows[i], i);
            return;
        }
        memmove(O + (size_t)i * dim, X + (size_t)rows[i] * dim, (size_t)dim * sizeof(float));
    }
}

static void ref_scale_rows(hr_backend *b, float *x, const float *w, int64_t rows, int32_t dim)
{
    ref_backend *r = rb(b);
    float *X = dev(r, x, (size_t)rows * (size_t)dim * sizeof(float), "scale_rows", "x");
    const float *W = dev(r, w, (size_t)rows * sizeof(float), "scale_rows", "w");
    if (!X || !W)
        return;
    for (int64_t i = 0; i < rows; i++)
        for (int32_t j = 0; j < dim; j++)
            X[i * dim + j] = (float)((double)X[i * dim + j] * (double)W[i]);
}

static void ref_add_bias_id(hr_backend *b, float *y, const float *bias, const int32_t *ids, int32_t n, int32_t k,
                            int32_t dim)
{
    ref_backend *r = rb(b);
    const size_t slots = (size_t)n * (size_t)k;
    float *Y = dev(r, y, slots * (size_t)dim * sizeof(float), "add_bias_id", "y");
    const int32_t *I = dev(r, ids, slots * sizeof(int32_t), "add_bias_id", "ids");
    if (!Y || !I)
        return;
    int32_t hi = 0;
    for (size_t s = 0; s < slots; s++) {
        if (I[s] < 0) {
            fail(r, HR_ERR_INVALID, "add_bias_id: expert id %d", I[s]);
            return;
        }
        hi = I[s] + 1 > hi ? I[s] + 1 : hi;
    }
    const float *B = dev(r, bias, (size_t)hi * (size_t)dim * sizeof(float), "add_bias_id", "bias");
    if (!B)
        return;
    for (size_t s = 0; s < slots; s++)
        for (int32_t j = 0; j < dim; j++)
            Y[s * dim + j] += B[(size_t)I[s] * dim + j];
}

static void ref_moe_sum(hr_backend *b, float *out, const float *y, const float *w, int32_t n, int32_t k, int32_t dim)
{
    ref_backend *r = rb(b);
    bool ok = true;
    float *O = dev(r, out, (size_t)n * (size_t)dim * sizeof(float), "moe_sum", "out");
    const float *Y = dev(r, y, (size_t)n * (size_t)k * (size_t)dim * sizeof(float), "moe_sum", "y");
    const float *W = dev_opt(r, w, (size_t)n * (size_t)k * sizeof(float), "moe_sum", "w", &ok);
    if (!O || !Y || !ok)
        return;
    for (int32_t t = 0; t < n; t++)
        for (int32_t j = 0; j < dim; j++) {
            double s = 0.0;
            for (int32_t q = 0; q < k; q++)
                s += (W ? (double)W[(size_t)t * k + q] : 1.0) * (double)Y[((size_t)t * k + q) * dim + j];
            O[(size_t)t * dim + j] = (float)s;
        }
}

/* ---- lifetime ---- */

static hr_status ref_check(hr_backend *b, hr_err *err)
{
    ref_backend *r = rb(b);
    const hr_status st = r->pending;
    r->pending = HR_OK;
    if (!st)
        return HR_OK;
    return hr_err_set(err, st, "ref backend: %s", r->msg);
}

static void ref_free(hr_backend *b)
{
    ref_backend *r = rb(b);
    for (size_t i = 0; i < r->n_a; i++)
        free(r->a[i].mem);
    free(r->a);
    munmap(r->space, SPACE);
    free(r);
}

static const hr_backend_ops ref_ops = {
    .name = "ref",
    .free = ref_free,
    .check = ref_check,
    .alloc = ref_alloc_fn,
    .release = ref_release,
    .read = ref_read,
    .write = ref_write,
    .upload = ref_upload,
    .weight_free = ref_weight_free,
    .weight_bytes = ref_weight_bytes,
    .matmul = ref_matmul,
    .matmul_n = ref_matmul_n,
    .matmul_id = ref_matmul_id,
    .get_rows = ref_get_rows,
    .rms_norm = ref_rms_norm,
    .add = ref_add,
    .add_bias = ref_add_bias,
    .scale = ref_scale,
    .softcap = ref_softcap,
    .glu = ref_glu,
    .rope = ref_rope,
    .attn_temp = ref_attn_temp,
    .kv_write = ref_kv_write,
    .attention = ref_attention,
    .route = ref_route,
    .dup_rows = ref_dup_rows,
    .select_rows = ref_select_rows,
    .scale_rows = ref_scale_rows,
    .add_bias_id = ref_add_bias_id,
    .moe_sum = ref_moe_sum,
};

hr_status ref_backend_new(const ref_backend_opts *o, hr_backend **out, hr_err *err)
{
    *out = NULL;
    ref_backend *r = calloc(1, sizeof *r);
    if (!r)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    r->space = mmap(NULL, SPACE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r->space == MAP_FAILED) {
        free(r);
        return hr_err_set(err, HR_ERR_NOMEM, "cannot reserve the ref backend's address range");
    }
    r->base.ops = &ref_ops;
    r->quant_acts = o && o->quantize_acts;
    *out = &r->base;
    return HR_OK;
}

void ref_backend_get_stats(hr_backend *b, ref_backend_stats *s)
{
    ref_backend *r = rb(b);
    *s = (ref_backend_stats){ r->live, r->live_weights, r->misuses, r->canary_breaks, r->faults, r->saw_quantized };
}

void ref_backend_fail_alloc(hr_backend *b, long n) { rb(b)->fail_in = n > 0 ? n : 0; }
