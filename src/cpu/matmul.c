/* matmul.c - see matmul.h.
 *
 * Two pool runs: (1) quantise the activations, the n_tok*K/block blocks
 * split evenly across threads (every block is quantised on its own, so the
 * split cannot change a byte); (2) the dot products. Phase 2 cuts the N rows
 * into chunks handed out through an atomic counter (so a thread that runs
 * slow or shares its core does less); inside a chunk, tokens go in tiles
 * whose activation rows fit comfortably in L2, and for each row of the chunk
 * the row is dotted with every token of the tile while it sits in L1. */
#include "cpu/matmul.h"

#include <stdatomic.h>
#include <stdbool.h>

#include "cpu/cpu.h"
#include "quant/quant.h"

/* Activation bytes per token tile (half of a typical 1-2 MiB L2). */
#define TILE_ACT_BYTES (256 * 1024)
/* Chunks per thread in phase 2: enough to balance, few enough to be cheap. */
#define CHUNKS_PER_THREAD 8
#define MIN_CHUNK_ROWS 4

size_t hr_matmul_scratch_bytes(uint32_t wtype, int64_t K, int32_t n_tok)
{
    const hr_type_traits *t = hr_type_get(wtype);
    if (!t || !t->supported || t->vec_dot_type == HR_TYPE_F32 || n_tok <= 0)
        return 0;
    return hr_row_size(t->vec_dot_type, K) * (size_t)n_tok;
}

typedef struct {
    /* phase 1 */
    hr_from_float_fn from_float;
    const float *x;
    void *act;
    int64_t act_bs;      /* elements per activation block */
    size_t act_ts;       /* bytes per activation block */
    int64_t act_blocks;  /* n_tok * K / act_bs */
    /* phase 2 */
    hr_vec_dot_fn vec_dot;
    const char *w;
    size_t w_row_bytes;
    const char *a;       /* activation rows */
    size_t a_row_bytes;
    int64_t K, N;
    int32_t n_tok, tok_tile;
    int64_t chunk_rows, n_chunks;
    float *y;
    _Atomic int64_t next_chunk;
} mm_ctx;

static void quantise_part(void *vctx, int ith, int nth)
{
    mm_ctx *c = vctx;
    const int64_t b0 = c->act_blocks * ith / nth, b1 = c->act_blocks * (ith + 1) / nth;
    if (b1 > b0)
        c->from_float(c->x + b0 * c->act_bs, (char *)c->act + (size_t)b0 * c->act_ts, (b1 - b0) * c->act_bs);
}

static void dot_chunk(const mm_ctx *c, int64_t r0, int64_t r1)
{
    for (int32_t t0 = 0; t0 < c->n_tok; t0 += c->tok_tile) {
        const int32_t t1 = t0 + c->tok_tile < c->n_tok ? t0 + c->tok_tile : c->n_tok;
        for (int64_t r = r0; r < r1; r++) {
            const char *wr = c->w + (size_t)r * c->w_row_bytes;
            for (int32_t t = t0; t < t1; t++)
                c->vec_dot(c->K, &c->y[(size_t)t * (size_t)c->N + (size_t)r], wr,
                           c->a + (size_t)t * c->a_row_bytes);
        }
    }
}

static void dot_part(void *vctx, int ith, int nth)
{
    mm_ctx *c = vctx;
    (void)ith;
    (void)nth;
    for (;;) {
        const int64_t k = atomic_fetch_add_explicit(&c->next_chunk, 1, memory_order_relaxed);
        if (k >= c->n_chunks)
            break;
        const int64_t r0 = k * c->chunk_rows;
        const int64_t r1 = r0 + c->chunk_rows < c->N ? r0 + c->chunk_rows : c->N;
        dot_chunk(c, r0, r1);
    }
}

void hr_matmul(hr_pool *pool, const void *w, uint32_t wtype, size_t w_row_bytes, int64_t K, int64_t N,
               const float *x, int32_t n_tok, float *y, void *act_scratch)
{
    const hr_type_traits *wt = hr_type_get(wtype);
    if (!wt || !wt->supported || n_tok <= 0 || N <= 0 || K <= 0 || K % wt->block_size != 0)
        return;
    const hr_type_traits *at = hr_type_get(wt->vec_dot_type);
    const int nth = hr_pool_n_threads(pool);

    mm_ctx c = { 0 };
    c.vec_dot = hr_cpu_vec_dot(wtype);
    c.w = w;
    c.w_row_bytes = w_row_bytes;
    c.K = K;
    c.N = N;
    c.n_tok = n_tok;
    c.y = y;

    if (wt->vec_dot_type == HR_TYPE_F32) {
        c.a = (const char *)x;
        c.a_row_bytes = (size_t)K * sizeof(float);
    } else {
        c.from_float = hr_cpu_from_float(wt->vec_dot_type);
        c.x = x;
        c.act = act_scratch;
        c.act_bs = at->block_size;
        c.act_ts = at->type_size;
        c.act_blocks = (int64_t)n_tok * (K / at->block_size);
        c.a = act_scratch;
        c.a_row_bytes = hr_row_size(wt->vec_dot_type, K);
        /* a few blocks per thread are not worth a wake-up */
        if (nth > 1 && c.act_blocks >= 8 * (int64_t)nth)
            hr_pool_run(pool, quantise_part, &c);
        else
            quantise_part(&c, 0, 1);
    }

    int64_t tile = TILE_ACT_BYTES / (int64_t)(c.a_row_bytes ? c.a_row_bytes : 1);
    c.tok_tile = (int32_t)(tile < 1 ? 1 : tile > n_tok ? n_tok : tile);

    int64_t chunk = (N + (int64_t)nth * CHUNKS_PER_THREAD - 1) / ((int64_t)nth * CHUNKS_PER_THREAD);
    if (chunk < MIN_CHUNK_ROWS)
        chunk = MIN_CHUNK_ROWS;
    c.chunk_rows = chunk;
    c.n_chunks = (N + chunk - 1) / chunk;
    atomic_init(&c.next_chunk, 0);
    if (nth > 1 && c.n_chunks > 1)
        hr_pool_run(pool, dot_part, &c);
    else
        dot_part(&c, 0, 1);
}
