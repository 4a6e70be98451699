/* backend.h - the seam between the forward pass and the hardware.
 *
 * The engine (src/engine/) expresses every architecture's forward pass as
 * calls of the operations below and never touches activation memory itself:
 * activations live in buffers the backend allocates (host memory for the
 * CPU backend, device memory for a GPU one), weights are uploaded once at
 * load (the CPU backend keeps the file mapping or a repacked copy), and only
 * hr_backend_ops.read brings results (logits) back to the host. Small index
 * arrays that the caller builds on the host (positions, sequence ids, token
 * ids) are passed as host pointers; index arrays an operation produces
 * (the experts a router chose) stay in backend memory.
 *
 * Operations run in call order; a backend may queue them and must have
 * finished everything before read() returns. Each operation computes every
 * output the same way whatever the batch around it, so a sequence's result
 * does not depend on what it is batched with (tests/unit/test_engine_batch).
 *
 * The KV cache (hr_kv, src/engine/kvcache.h) is host memory today: its
 * rows are reached through hr_kv_k / hr_kv_v, so a device backend needs the
 * cache's pool to come from its own alloc first (the CUDA issue).
 *
 * Implementations: src/backend/cpu.c (SIMD kernels of src/cpu/ on a thread
 * pool); tests/unit/ref_backend.c (deliberately simple scalar loops, to keep
 * the seam honest); src/cuda/ (a later issue). */
#ifndef HR_BACKEND_BACKEND_H
#define HR_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "engine/kvcache.h"
#include "model/model.h"

struct hr_pool;

typedef struct hr_backend hr_backend;
/* A weight resident on the backend: a matrix (ne0 inputs -> ne1 outputs)
 * or a 3-D tensor of n_expert such matrices. */
typedef struct hr_bweight hr_bweight;

/* What the attention of one layer does besides softmax(scale q.k) v. */
typedef struct {
    hr_attn_span kind;
    int32_t window;      /* HR_ATTN_WINDOW / HR_ATTN_CHUNKED: positions */
    float scale;
    const float *sinks;  /* (n_head) sink logits or NULL (backend memory) */
} hr_attn_opts;

/* The tokens of a forward chunk: host arrays of n entries. */
typedef struct {
    int32_t n;
    const int32_t *pos, *seq;
    uint64_t id; /* differs between chunks: what a backend caches per chunk (RoPE tables) is keyed by it */
} hr_tokens;

/* How the experts of an MoE layer are chosen from the router logits. */
typedef struct {
    hr_moe_router kind;
    int32_t n_expert, k;
    bool renorm;
    const float *bias; /* (n_expert, backend memory) selection bias: added to the scores the experts are chosen by, not to
                        * their weights (DeepSeek-V3's correction bias), or NULL */
} hr_route_opts;

typedef struct {
    const char *name;
    void (*free)(hr_backend *b);
    /* The first failure of the operations since the last check (out of
     * memory for scratch, a device error), clearing it: the results of a
     * forward are valid only when this returns HR_OK after it. After a
     * failure an implementation skips the remaining operations until
     * check (so no operation consumes what a failed one did not write). */
    hr_status (*check)(hr_backend *b, hr_err *err);

    /* ---- memory ---- */
    /* Backend memory of `bytes` (suitably aligned for any op); NULL when out
     * of memory. release(NULL) is fine. */
    void *(*alloc)(hr_backend *b, size_t bytes);
    void (*release)(hr_backend *b, void *p);
    /* Backend memory -> host (waits for every queued operation). */
    void (*read)(hr_backend *b, void *host_dst, const void *src, size_t bytes);
    /* host -> backend memory */
    void (*write)(hr_backend *b, void *dst, const void *host_src, size_t bytes);

    /* ---- weights ---- */
    /* Makes the weight (a view into the model's mapping: matrix, expert
     * tensor or a row range of a fused tensor) usable by the ops. still_read:
     * the host also reads rows of it (a tied embedding). */
    hr_status (*upload)(hr_backend *b, const void *data, uint32_t type, int64_t ne0, int64_t ne1, size_t row_bytes,
                        int32_t n_expert, size_t expert_bytes, bool still_read, hr_bweight **out, hr_err *err);
    void (*weight_free)(hr_backend *b, hr_bweight *w);
    /* Bytes the backend holds for weights (repacked copies, device copies). */
    size_t (*weight_bytes)(const hr_backend *b);

    /* ---- operations (all float pointers are backend memory) ---- */
    /* y[t] = W x[t], t < n. */
    void (*matmul)(hr_backend *b, const hr_bweight *w, const float *x, int32_t n, float *y);
    /* Several matrices on one x (Q/K/V, gate/up), each y[i] exactly what
     * matmul would give. nw <= 3. */
    void (*matmul_n)(hr_backend *b, int nw, const hr_bweight *const *w, const float *x, int32_t n, float *const *y);
    /* Expert matmul: slot (t, s) of n tokens x k slots multiplies expert
     * ids[t*k + s] with x row t (x_per_slot false) or x row t*k + s, into
     * y row t*k + s. ids is backend memory (from route). */
    void (*matmul_id)(hr_backend *b, const hr_bweight *w, const float *x, bool x_per_slot, int32_t n, int32_t k,
                      const int32_t *ids, float *y);
    /* out row t = row ids[t] of w as floats (embedding lookup); ids on the host. */
    void (*get_rows)(hr_backend *b, const hr_bweight *w, const int32_t *ids, int32_t n, float *out);

    /* out = x / rms(x) * w per row of dim floats (w NULL: no weight); out may be x. */
    void (*rms_norm)(hr_backend *b, float *out, const float *x, const float *w, int64_t rows, int32_t dim, float eps);
    /* y += x (n floats) */
    void (*add)(hr_backend *b, float *y, const float *x, int64_t n);
    /* y row r += bias (rows of dim) */
    void (*add_bias)(hr_backend *b, float *y, const float *bias, int64_t rows, int32_t dim);
    /* y *= s */
    void (*scale)(hr_backend *b, float *y, float s, int64_t n);
    /* y = c tanh(y / c) */
    void (*softcap)(hr_backend *b, float *y, float c, int64_t n);
    /* g = act(g, u) element-wise (hr_act; alpha / limit for the clamped SwiGLU) */
    void (*glu)(hr_backend *b, hr_act act, float alpha, float limit, float *g, const float *u, int64_t n);

    /* Rotates the first rope_dim values of each of n_head heads (head_dim
     * apart, token rows `stride` floats apart) of the n tokens by the
     * configuration at each token's position; factors: per-pair frequency
     * divisors (rope_dim / 2, backend memory) or NULL. */
    void (*rope)(hr_backend *b, float *x, const hr_tokens *tk, int32_t n_head, int32_t head_dim, int32_t stride,
                 int32_t rope_dim, hr_rope_style style, const hr_rope_cfg *cfg, const float *factors);
    /* llama4 attention temperature: q row t *= 1 + scale ln(floor((pos + 1) / floor_) + 1). */
    void (*attn_temp)(hr_backend *b, float *q, const hr_tokens *tk, int32_t width, float scale, int32_t floor_);

    /* Stores K and V rows of the tokens in layer `layer` of the cache. */
    void (*kv_write)(hr_backend *b, hr_kv *kv, int32_t layer, const hr_tokens *tk, const float *k, const float *v);
    /* out row t (n_head * head_dim_v) = attention of q row t (n_head *
     * head_dim) over the positions of its sequence that opts lets it see. */
    void (*attention)(hr_backend *b, hr_kv *kv, int32_t layer, const hr_tokens *tk, const float *q, int32_t n_head,
                      int32_t n_head_kv, int32_t head_dim, int32_t head_dim_v, const hr_attn_opts *opts, float *out);

    /* Chooses k experts per token from logits (n x n_expert): ids (n x k)
     * and their weights (n x k). */
    void (*route)(hr_backend *b, const float *logits, int32_t n, const hr_route_opts *opts, int32_t *ids,
                  float *weights);
    /* out row t*k + s = x row t (rows of dim) */
    void (*dup_rows)(hr_backend *b, float *out, const float *x, int32_t n, int32_t k, int32_t dim);
    /* out row i = x row rows[i] (rows: host indices, n of them) */
    void (*select_rows)(hr_backend *b, float *out, const float *x, const int32_t *rows, int32_t n, int32_t dim);
    /* x row r *= w[r] (rows of dim) */
    void (*scale_rows)(hr_backend *b, float *x, const float *w, int64_t rows, int32_t dim);
    /* Per slot (t, s): y row t*k+s += bias row ids[t*k+s] (bias: n_expert x dim). */
    void (*add_bias_id)(hr_backend *b, float *y, const float *bias, const int32_t *ids, int32_t n, int32_t k,
                        int32_t dim);
    /* out row t = sum over s of w[t*k+s] (w NULL: 1) * y row t*k+s (rows of dim). */
    void (*moe_sum)(hr_backend *b, float *out, const float *y, const float *w, int32_t n, int32_t k, int32_t dim);
} hr_backend_ops;

/* Every backend starts with this. */
struct hr_backend {
    const hr_backend_ops *ops;
};

/* The CPU backend: n_threads compute threads (the caller is one of them). */
hr_status hr_backend_cpu_new(int n_threads, hr_backend **out, hr_err *err);
/* The CPU backend's thread pool (NULL when single-threaded), for the
 * caller's own parallel work between forwards. */
struct hr_pool *hr_backend_cpu_pool(hr_backend *b);

static inline void hr_backend_free(hr_backend *b)
{
    if (b)
        b->ops->free(b);
}

#endif
