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
#include <stdint.h>
#include <string.h>

#include "cpu/cpu.h"
#include "cpu/kernels.h"
#include "cpu/pack.h"
#include "quant/quant.h"
#include "quant/quant_impl.h"

/* Activation bytes per token tile (half of a typical 1-2 MiB L2). */
#define TILE_ACT_BYTES (256 * 1024)
/* Chunks per thread in phase 2: enough to balance, few enough to be cheap. */
#define CHUNKS_PER_THREAD 8
#define MIN_CHUNK_ROWS 4

static int pack_kind(uint32_t wtype)
{
    switch (wtype) {
    case HR_TYPE_Q8_0: return HR_PACK_Q8_0;
    case HR_TYPE_Q4_0: return HR_PACK_Q4_0;
    case HR_TYPE_Q5_0: return HR_PACK_Q5_0;
    case HR_TYPE_IQ4_NL: return HR_PACK_IQ4_NL;
    case HR_TYPE_Q4_K: return HR_PACK_Q4_K;
    case HR_TYPE_Q6_K: return HR_PACK_Q6_K;
    default: return HR_PACK_NONE;
    }
}

size_t hr_matmul_scratch_bytes(uint32_t wtype, int64_t K, int32_t n_tok)
{
    const hr_type_traits *t = hr_type_get(wtype);
    if (!t || !t->supported || t->vec_dot_type == HR_TYPE_F32 || n_tok <= 0)
        return 0;
    size_t n = hr_row_size(t->vec_dot_type, K) * (size_t)n_tok;
    if (pack_kind(wtype) != HR_PACK_NONE) /* per-block scales and sums, 64-byte aligned */
        n += (size_t)n_tok * (size_t)(K / HR_QK32) * 8 + 64;
    return n;
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

/* ---- packed weights ---- */

static hr_gemm_x16_fn gemm_x16(int kind)
{
#ifdef HR_CPU_X86
    if (kind != HR_PACK_NONE && hr_cpu_host_isa() >= HR_ISA_AVX512)
        return hr_avx512_gemm_x16(kind);
#endif
    (void)kind;
    return NULL;
}

size_t hr_matmul_packed_bytes(uint32_t wtype, int64_t K, int64_t N)
{
    const int kind = pack_kind(wtype);
    const int64_t bs = hr_pack_is_k(kind) ? HR_QK_K : HR_QK32;
    if (kind == HR_PACK_NONE || hr_cpu_isa() < HR_ISA_AVX512 || !gemm_x16(kind) || K <= 0 || N <= 0 || K % bs != 0)
        return 0;
    const int64_t groups = (N + HR_PACK_ROWS - 1) / HR_PACK_ROWS;
    return (size_t)groups * (size_t)(K / bs) * hr_pack_block_bytes(kind);
}

typedef struct {
    const uint8_t *w;
    size_t w_row_bytes;
    int64_t nb, N, groups;
    int kind;
    uint8_t *dst;
} pack_ctx;

/* Q6_K's stored 6-bit value (quant + 32) of element e (quant_k.c's order). */
static int q6k_stored(const uint8_t *blk, int e)
{
    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const uint8_t ql = blk[64 * h + 32 * (k & 1) + l], qh = blk[128 + 32 * h + l];
    return ((k >> 1 ? ql >> 4 : ql & 15) | ((qh >> (2 * k)) & 3) << 4);
}

/* One group of 16 rows of Q4_K / Q6_K (see pack.h). */
static void pack_group_k(const pack_ctx *c, int64_t g)
{
    const int kind = c->kind;
    const size_t bb = hr_pack_block_bytes(kind), src_bs = kind == HR_PACK_Q4_K ? 144 : 210;
    uint8_t *out = c->dst + (size_t)g * (size_t)c->nb * bb;
    for (int64_t b = 0; b < c->nb; b++, out += bb) {
        memset(out, 0, bb);
        for (int r = 0; r < HR_PACK_ROWS; r++) {
            const int64_t row = g * HR_PACK_ROWS + r;
            if (row >= c->N)
                continue; /* padding: zero scales */
            const uint8_t *blk = c->w + (size_t)row * c->w_row_bytes + (size_t)b * src_bs;
            if (kind == HR_PACK_Q4_K) {
                memcpy(out + 2 * r, blk, 2);
                memcpy(out + 32 + 2 * r, blk + 2, 2);
                for (int s = 0; s < 8; s++) {
                    uint8_t sc, mn;
                    hr_k4_scale_min(blk + 4, s, &sc, &mn);
                    out[64 + 16 * s + r] = sc;
                    out[192 + 32 * (s / 2) + 2 * r + (s & 1)] = mn;
                }
                for (int ch = 0; ch < 4; ch++)
                    for (int j = 0; j < 8; j++)
                        memcpy(out + 320 + 512 * ch + 64 * j + 4 * r, blk + 16 + 32 * ch + 4 * j, 4);
            } else {
                memcpy(out + 2 * r, blk + 208, 2);
                for (int s = 0; s < 16; s++)
                    out[32 + 16 * s + r] = blk[192 + s];
                for (int u = 0; u < 32; u++)
                    for (int i = 0; i < 4; i++)
                        out[288 + 64 * u + 4 * r + i] =
                            (uint8_t)((q6k_stored(blk, 4 * u + i) & 15) | (q6k_stored(blk, 128 + 4 * u + i) & 15) << 4);
                for (int v = 0; v < 16; v++)
                    for (int i = 0; i < 4; i++)
                        out[2336 + 64 * v + 4 * r + i] = (uint8_t)(q6k_stored(blk, 8 * v + i) >> 4 |
                                                                   (q6k_stored(blk, 128 + 8 * v + i) >> 4) << 2 |
                                                                   (q6k_stored(blk, 8 * v + 4 + i) >> 4) << 4 |
                                                                   (q6k_stored(blk, 128 + 8 * v + 4 + i) >> 4) << 6);
            }
        }
    }
}

/* One group of 16 rows, block by block (see pack.h). */
static void pack_group(const pack_ctx *c, int64_t g)
{
    const int kind = c->kind;
    if (hr_pack_is_k(kind)) {
        pack_group_k(c, g);
        return;
    }
    const size_t bb = hr_pack_block_bytes(kind);
    const size_t src_bs = kind == HR_PACK_Q8_0 ? 34 : kind == HR_PACK_Q5_0 ? 22 : 18;
    const size_t qs_off = kind == HR_PACK_Q5_0 ? 6 : 2;
    const int steps = kind == HR_PACK_Q8_0 ? 8 : 4;
    uint8_t *out = c->dst + (size_t)g * (size_t)c->nb * bb;
    for (int64_t b = 0; b < c->nb; b++, out += bb) {
        memset(out, 0, bb);
        uint64_t masks[8] = { 0 };
        for (int r = 0; r < HR_PACK_ROWS; r++) {
            const int64_t row = g * HR_PACK_ROWS + r;
            if (row >= c->N) { /* padding: d = 0; quants equal to the offset, value 0 */
                for (int j = 0; j < steps; j++)
                    memset(out + 32 + 64 * j + 4 * r, kind == HR_PACK_Q8_0 ? 0x80 : 0, 4);
                continue;
            }
            const uint8_t *blk = c->w + (size_t)row * c->w_row_bytes + (size_t)b * src_bs;
            memcpy(out + 2 * r, blk, 2);
            const uint8_t *qs = blk + qs_off;
            const uint32_t flip = kind == HR_PACK_Q8_0 ? 0x80808080u : 0; /* Q8_0: q + 128 */
            for (int j = 0; j < steps; j++) {
                uint32_t v;
                memcpy(&v, qs + 4 * j, 4);
                v ^= flip;
                memcpy(out + 32 + 64 * j + 4 * r, &v, 4);
            }
            if (kind == HR_PACK_Q5_0) {
                const uint32_t qh = (uint32_t)blk[2] | (uint32_t)blk[3] << 8 | (uint32_t)blk[4] << 16 |
                                    (uint32_t)blk[5] << 24;
                for (int j = 0; j < 4; j++)
                    for (int i = 0; i < 4; i++) {
                        masks[2 * j] |= (uint64_t)(qh >> (4 * j + i) & 1) << (4 * r + i);
                        masks[2 * j + 1] |= (uint64_t)(qh >> (16 + 4 * j + i) & 1) << (4 * r + i);
                    }
            }
        }
        if (kind == HR_PACK_Q5_0)
            for (int k = 0; k < 8; k++)
                for (int i = 0; i < 8; i++)
                    out[288 + 8 * k + i] = (uint8_t)(masks[k] >> (8 * i));
    }
}

static void pack_part(void *vctx, int ith, int nth)
{
    const pack_ctx *c = vctx;
    for (int64_t g = c->groups * ith / nth; g < c->groups * (ith + 1) / nth; g++)
        pack_group(c, g);
}

void hr_matmul_pack(hr_pool *pool, const void *w, uint32_t wtype, size_t w_row_bytes, int64_t K, int64_t N,
                    void *dst)
{
    if (!hr_matmul_packed_bytes(wtype, K, N))
        return;
    const int kind = pack_kind(wtype);
    pack_ctx c = { w, w_row_bytes, K / (hr_pack_is_k(kind) ? HR_QK_K : HR_QK32), N, (N + HR_PACK_ROWS - 1) / HR_PACK_ROWS,
                   kind, dst };
    if (pool)
        hr_pool_run(pool, pack_part, &c);
    else
        pack_part(&c, 0, 1);
}

#define PK_MAX_MATS 3

typedef struct {
    /* phase 1: quantise to Q8_0, then per-block float scale and quant sum */
    hr_from_float_fn from_float;
    const float *x;
    uint8_t *act;
    float *da;
    int32_t *as;
    int64_t act_blocks;
    bool q8k;            /* Q8_K activations (K-quants): 256 per block, 292 bytes, 4 side ints */
    size_t act_ts;
    /* phase 2: the groups of every matrix, one index space */
    hr_gemm_x16_fn gemm;
    int n_mats;
    const uint8_t *w[PK_MAX_MATS];
    int64_t N[PK_MAX_MATS], gend[PK_MAX_MATS]; /* rows; groups of matrices 0..i */
    float *y[PK_MAX_MATS];
    size_t group_bytes;
    int64_t nb;
    int32_t n_tok, tok_tile;
    int64_t chunk_groups, n_chunks, groups;
    _Atomic int64_t next_chunk;
} pk_ctx;

/* Activation blocks b0..b1 (of the act / da / as arrays) from the floats at
 * src (block b0's first element). */
static void pk_quantise_blocks(const pk_ctx *c, const float *src, int64_t b0, int64_t b1)
{
    if (c->q8k) { /* Q4_K's min pairs: int16 sums of 32, two per int32 */
        c->from_float(src, c->act + (size_t)b0 * 292, (b1 - b0) * HR_QK_K);
        for (int64_t b = b0; b < b1; b++) {
            int16_t bs[16];
            memcpy(bs, c->act + (size_t)b * 292 + 260, 32);
            for (int p = 0; p < 4; p++) {
                const uint16_t lo = (uint16_t)(bs[4 * p] + bs[4 * p + 1]), hi = (uint16_t)(bs[4 * p + 2] + bs[4 * p + 3]);
                c->as[4 * b + p] = (int32_t)((uint32_t)lo | (uint32_t)hi << 16);
            }
        }
        return;
    }
    c->from_float(src, c->act + (size_t)b0 * 34, (b1 - b0) * HR_QK32);
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t *blk = c->act + (size_t)b * 34;
        hr_f16 d;
        memcpy(&d, blk, 2);
        c->da[b] = hr_f16_to_f32(d);
        int32_t s = 0;
        for (int i = 0; i < HR_QK32; i++)
            s += (int8_t)blk[2 + i];
        c->as[b] = s;
    }
}

static void pk_quantise_part(void *vctx, int ith, int nth)
{
    pk_ctx *c = vctx;
    const int64_t b0 = c->act_blocks * ith / nth, b1 = c->act_blocks * (ith + 1) / nth;
    if (b1 > b0)
        pk_quantise_blocks(c, c->x + b0 * (c->q8k ? HR_QK_K : HR_QK32), b0, b1);
}

static void pk_dot_part(void *vctx, int ith, int nth)
{
    pk_ctx *c = vctx;
    (void)ith;
    (void)nth;
    const size_t a_row = (size_t)c->nb * c->act_ts, side_row = (size_t)c->nb * (c->q8k ? 4 : 1);
    for (;;) {
        const int64_t k = atomic_fetch_add_explicit(&c->next_chunk, 1, memory_order_relaxed);
        if (k >= c->n_chunks)
            break;
        const int64_t g0 = k * c->chunk_groups;
        const int64_t g1 = g0 + c->chunk_groups < c->groups ? g0 + c->chunk_groups : c->groups;
        for (int32_t t0 = 0; t0 < c->n_tok; t0 += c->tok_tile) {
            const int32_t tn = t0 + c->tok_tile < c->n_tok ? c->tok_tile : c->n_tok - t0;
            int m = 0;
            for (int64_t g = g0; g < g1; g++) {
                while (g >= c->gend[m])
                    m++;
                const int64_t gl = g - (m ? c->gend[m - 1] : 0), r0 = gl * HR_PACK_ROWS, N = c->N[m];
                const int valid = N - r0 < HR_PACK_ROWS ? (int)(N - r0) : HR_PACK_ROWS;
                c->gemm(c->nb, c->w[m] + (size_t)gl * c->group_bytes, c->act + (size_t)t0 * a_row, a_row,
                        c->da + (size_t)t0 * (size_t)c->nb, c->as + (size_t)t0 * side_row, side_row, tn,
                        c->y[m] + (size_t)t0 * (size_t)N + (size_t)r0, (size_t)N, valid);
            }
        }
    }
}

void hr_matmul_packed_multi(hr_pool *pool, int n_mats, const void *const *packed, const int64_t *N, float *const *y,
                            uint32_t wtype, int64_t K, const float *x, int32_t n_tok, void *act_scratch)
{
    const int kind = pack_kind(wtype);
    hr_gemm_x16_fn gemm = gemm_x16(kind);
    const bool q8k = hr_pack_is_k(kind);
    const int64_t bs = q8k ? HR_QK_K : HR_QK32;
    if (!gemm || n_mats < 1 || n_mats > PK_MAX_MATS || n_tok <= 0 || K <= 0 || K % bs != 0)
        return;
    const int nth = hr_pool_n_threads(pool);
    pk_ctx c = { 0 };
    c.q8k = q8k;
    c.act_ts = q8k ? 292 : 34;
    c.nb = K / bs;
    const size_t a_row = (size_t)c.nb * c.act_ts;
    c.from_float = hr_cpu_from_float(q8k ? HR_TYPE_Q8_K : HR_TYPE_Q8_0);
    c.x = x;
    c.act = act_scratch;
    uintptr_t side = (uintptr_t)c.act + a_row * (size_t)n_tok;
    side = (side + 63) & ~(uintptr_t)63;
    c.da = (float *)side;
    c.as = (int32_t *)(c.da + (size_t)n_tok * (size_t)c.nb);
    c.act_blocks = (int64_t)n_tok * c.nb;
    if (nth > 1 && c.act_blocks >= 8 * (int64_t)nth)
        hr_pool_run(pool, pk_quantise_part, &c);
    else
        pk_quantise_part(&c, 0, 1);

    c.gemm = gemm;
    c.n_mats = n_mats;
    for (int m = 0; m < n_mats; m++) {
        if (N[m] <= 0)
            return;
        c.w[m] = packed[m];
        c.N[m] = N[m];
        c.y[m] = y[m];
        c.groups += (N[m] + HR_PACK_ROWS - 1) / HR_PACK_ROWS;
        c.gend[m] = c.groups;
    }
    c.group_bytes = (size_t)c.nb * hr_pack_block_bytes(kind);
    c.n_tok = n_tok;
    const int64_t tile = TILE_ACT_BYTES / (int64_t)a_row;
    c.tok_tile = (int32_t)(tile < 8 ? 8 : tile > n_tok ? n_tok : tile);
    int64_t chunk = (c.groups + (int64_t)nth * CHUNKS_PER_THREAD - 1) / ((int64_t)nth * CHUNKS_PER_THREAD);
    c.chunk_groups = chunk < 1 ? 1 : chunk;
    c.n_chunks = (c.groups + c.chunk_groups - 1) / c.chunk_groups;
    atomic_init(&c.next_chunk, 0);
    if (nth > 1 && c.n_chunks > 1)
        hr_pool_run(pool, pk_dot_part, &c);
    else
        pk_dot_part(&c, 0, 1);
}

void hr_matmul_packed(hr_pool *pool, const void *packed, uint32_t wtype, int64_t K, int64_t N, const float *x,
                      int32_t n_tok, float *y, void *act_scratch)
{
    hr_matmul_packed_multi(pool, 1, &packed, &N, &y, wtype, K, x, n_tok, act_scratch);
}

/* ---- expert matmul ----
 *
 * Three steps: (1) on the caller, a counting sort of the slots by expert
 * (only the experts someone chose get a group); (2) a pool run quantising
 * the activation rows; (3) a pool run over chunks of (expert, rows), handed
 * out through an atomic counter in expert order, so the threads share one
 * expert's rows when few tokens chose it (decode) and take whole experts
 * when many did (prefill). A chunk's size is set by work, rows x slots of
 * its expert, so chunks cost about the same.
 *
 * Plain (hr_matmul_id): each input row some slot reads is quantised once, in
 * place (row t or slot i of the scratch). Inside a chunk, slots go in tiles
 * whose activations fit in L2; within a tile, rows in blocks that fit in L1,
 * each block dotted with every slot of the tile. Each output is one vec_dot
 * of the rows hr_matmul would use, so the order changes no bit.
 *
 * Packed (hr_matmul_id_packed): the GEMM micro-kernels want a tile's
 * activation rows adjacent, so each slot's row is quantised at its position
 * in expert order (a token's row once per slot that reads it: the same
 * bytes every time); the kernel writes 16 rows x a tile of slots into a
 * small buffer that is then scattered to the slots' output rows. */

typedef struct {
    int64_t chunk_end;    /* chunks of the groups up to and including this one */
    int64_t chunk_units;  /* rows (plain) or 16-row groups (packed) per chunk */
    int32_t expert;
    int32_t first, count; /* its slots: slots[first .. first + count) */
} id_group;

typedef struct {
    id_group *groups;
    int32_t *slots;       /* slot indices, grouped by expert */
    int32_t n_groups, used;
    int64_t n_chunks;
    char *rest;           /* the scratch after the lists */
} id_plan;

#define ID_ROW_BLOCK_BYTES (16 * 1024) /* weight rows a slot runs through while they sit in L1 */
#define ID_PK_TILE 64                 /* slots per packed kernel call (its output buffer: 4 KiB) */

static bool id_valid(int32_t e, int32_t n_expert)
{
    return e >= 0 && e < n_expert;
}

/* The lists at the start of the scratch: 8-aligned groups[min(n_expert,
 * n_slots)], cursor[n_expert], slots[n_slots]; then 64-aligned activations. */
static size_t id_lists_bytes(int64_t n_slots, int32_t n_expert)
{
    const int64_t n_groups = n_expert < n_slots ? n_expert : n_slots;
    return 8 + (size_t)n_groups * sizeof(id_group) + (size_t)n_expert * sizeof(int32_t) +
           (size_t)n_slots * sizeof(int32_t) + 64;
}

/* Groups the slots by expert (experts and slots in increasing order) and
 * cuts each expert's n_units (rows or row groups) into chunks of about
 * equal work. */
static void id_plan_make(id_plan *pl, void *scratch, const int32_t *ids, int64_t n_slots, int32_t n_expert,
                         int64_t n_units, int64_t unit_rows, int nth)
{
    uintptr_t p = ((uintptr_t)scratch + 7) & ~(uintptr_t)7;
    const int64_t n_groups_max = n_expert < n_slots ? n_expert : n_slots;
    pl->groups = (id_group *)p;
    int32_t *cursor = (int32_t *)(pl->groups + n_groups_max);
    pl->slots = cursor + n_expert;
    p = ((uintptr_t)(pl->slots + n_slots) + 63) & ~(uintptr_t)63;
    pl->rest = (char *)p;

    memset(cursor, 0, (size_t)n_expert * sizeof(int32_t));
    for (int64_t i = 0; i < n_slots; i++)
        if (id_valid(ids[i], n_expert))
            cursor[ids[i]]++;
    pl->n_groups = 0;
    pl->used = 0;
    for (int32_t e = 0; e < n_expert; e++) {
        if (!cursor[e])
            continue;
        pl->groups[pl->n_groups] = (id_group){ .expert = e, .first = pl->used, .count = cursor[e] };
        pl->used += cursor[e];
        cursor[e] = pl->groups[pl->n_groups].first;
        pl->n_groups++;
    }
    for (int64_t i = 0; i < n_slots; i++)
        if (id_valid(ids[i], n_expert))
            pl->slots[cursor[ids[i]]++] = (int32_t)i;

    /* CHUNKS_PER_THREAD chunks per thread of equal work (rows x slots) */
    const int64_t work = (int64_t)pl->used * n_units, n_target = (int64_t)nth * CHUNKS_PER_THREAD;
    const int64_t target = (work + n_target - 1) / n_target;
    const int64_t min_units = (MIN_CHUNK_ROWS + unit_rows - 1) / unit_rows;
    pl->n_chunks = 0;
    for (int32_t g = 0; g < pl->n_groups; g++) {
        int64_t u = (target + pl->groups[g].count - 1) / pl->groups[g].count;
        u = u < min_units ? min_units : u > n_units ? n_units : u;
        pl->groups[g].chunk_units = u;
        pl->n_chunks += (n_units + u - 1) / u;
        pl->groups[g].chunk_end = pl->n_chunks;
    }
}

/* The group of chunk k (g: the caller's cursor, only moving forward, as
 * chunks come in increasing order) and the chunk's units [u0, u1). */
static const id_group *id_chunk(const id_plan *pl, int64_t k, int32_t *g, int64_t n_units, int64_t *u0,
                                int64_t *u1)
{
    while (k >= pl->groups[*g].chunk_end)
        (*g)++;
    const id_group *gr = &pl->groups[*g];
    *u0 = (k - (*g ? pl->groups[*g - 1].chunk_end : 0)) * gr->chunk_units;
    *u1 = *u0 + gr->chunk_units < n_units ? *u0 + gr->chunk_units : n_units;
    return gr;
}

static int64_t id_slots_checked(uint32_t wtype, int64_t K, int32_t n_tok, int32_t n_used, int32_t n_expert)
{
    const hr_type_traits *wt = hr_type_get(wtype);
    if (!wt || !wt->supported || n_tok <= 0 || n_used <= 0 || n_expert <= 0 || K <= 0 || K % wt->block_size != 0)
        return 0;
    const int64_t n_slots = (int64_t)n_tok * n_used;
    return n_slots > INT32_MAX ? 0 : n_slots;
}

size_t hr_matmul_id_scratch_bytes(uint32_t wtype, int64_t K, int32_t n_tok, int32_t n_used, int32_t n_expert)
{
    const int64_t n_slots = id_slots_checked(wtype, K, n_tok, n_used, n_expert);
    if (!n_slots)
        return 0;
    const hr_type_traits *wt = hr_type_get(wtype);
    /* plain: one row per slot at most; packed: Q8_0 / Q8_K rows and their per-block sides */
    size_t act = wt->vec_dot_type == HR_TYPE_F32 ? 0 : hr_row_size(wt->vec_dot_type, K) * (size_t)n_slots;
    const int kind = pack_kind(wtype);
    if (kind != HR_PACK_NONE) {
        const bool q8k = hr_pack_is_k(kind);
        const size_t nb = (size_t)(K / (q8k ? HR_QK_K : HR_QK32));
        const size_t pk = (size_t)n_slots * nb * ((q8k ? 292 : 34) + sizeof(float) + (q8k ? 4 : 1) * sizeof(int32_t)) + 64;
        act = pk > act ? pk : act;
    }
    return id_lists_bytes(n_slots, n_expert) + act;
}

typedef struct {
    id_plan pl;
    const int32_t *ids;
    int32_t n_used, n_expert;
    bool x_per_slot;
    const float *x;
    int64_t K, N;
    float *y;
    _Atomic int64_t next_chunk;
    /* plain */
    hr_from_float_fn from_float;
    char *act;
    int64_t act_bs, bpr, n_in; /* elements per activation block, blocks per row, input rows */
    size_t act_ts;
    hr_vec_dot_fn vec_dot;
    const char *w, *a;
    size_t w_row_bytes, expert_bytes, a_row_bytes;
    int32_t tok_tile;
    int64_t row_block;
    /* packed */
    pk_ctx pk;
    size_t pk_expert_bytes;
} id_ctx;

/* Whether some slot reads input row `row`. */
static bool id_row_used(const id_ctx *c, int64_t row)
{
    if (c->x_per_slot)
        return id_valid(c->ids[row], c->n_expert);
    for (int32_t s = 0; s < c->n_used; s++)
        if (id_valid(c->ids[row * c->n_used + s], c->n_expert))
            return true;
    return false;
}

static void id_quantise_part(void *vctx, int ith, int nth)
{
    id_ctx *c = vctx;
    const int64_t total = c->n_in * c->bpr;
    const int64_t b1 = total * (ith + 1) / nth;
    for (int64_t b = total * ith / nth; b < b1;) {
        const int64_t row = b / c->bpr, end = (row + 1) * c->bpr < b1 ? (row + 1) * c->bpr : b1;
        if (id_row_used(c, row))
            c->from_float(c->x + b * c->act_bs, c->act + (size_t)b * c->act_ts, (end - b) * c->act_bs);
        b = end;
    }
}

static void id_dot_part(void *vctx, int ith, int nth)
{
    id_ctx *c = vctx;
    (void)ith;
    (void)nth;
    int32_t g = 0;
    for (;;) {
        const int64_t k = atomic_fetch_add_explicit(&c->next_chunk, 1, memory_order_relaxed);
        if (k >= c->pl.n_chunks)
            break;
        int64_t r0, r1;
        const id_group *gr = id_chunk(&c->pl, k, &g, c->N, &r0, &r1);
        const char *we = c->w + (size_t)gr->expert * c->expert_bytes;
        const int32_t *sl = c->pl.slots + gr->first;
        for (int32_t i0 = 0; i0 < gr->count; i0 += c->tok_tile) {
            const int32_t i1 = i0 + c->tok_tile < gr->count ? i0 + c->tok_tile : gr->count;
            for (int64_t b0 = r0; b0 < r1; b0 += c->row_block) {
                const int64_t b1 = b0 + c->row_block < r1 ? b0 + c->row_block : r1;
                for (int32_t i = i0; i < i1; i++) {
                    const int32_t slot = sl[i];
                    const char *ar = c->a + (size_t)(c->x_per_slot ? slot : slot / c->n_used) * c->a_row_bytes;
                    float *yr = c->y + (size_t)slot * (size_t)c->N;
                    for (int64_t r = b0; r < b1; r++)
                        c->vec_dot(c->K, &yr[r], we + (size_t)r * c->w_row_bytes, ar);
                }
            }
        }
    }
}

static void id_init(id_ctx *c, const float *x, bool x_per_slot, int64_t K, int64_t N, int32_t n_expert,
                    int32_t n_used, const int32_t *ids, float *y)
{
    c->ids = ids;
    c->n_used = n_used;
    c->n_expert = n_expert;
    c->x_per_slot = x_per_slot;
    c->x = x;
    c->K = K;
    c->N = N;
    c->y = y;
    atomic_init(&c->next_chunk, 0);
}

void hr_matmul_id(hr_pool *pool, const void *w, uint32_t wtype, size_t w_row_bytes, size_t expert_bytes,
                  int64_t K, int64_t N, int32_t n_expert, const float *x, bool x_per_slot, int32_t n_tok,
                  int32_t n_used, const int32_t *ids, float *y, void *scratch)
{
    const int64_t n_slots = id_slots_checked(wtype, K, n_tok, n_used, n_expert);
    if (N <= 0 || !n_slots)
        return;
    const hr_type_traits *wt = hr_type_get(wtype);
    const int nth = hr_pool_n_threads(pool);
    id_ctx c = { 0 };
    id_init(&c, x, x_per_slot, K, N, n_expert, n_used, ids, y);
    id_plan_make(&c.pl, scratch, ids, n_slots, n_expert, N, 1, nth);
    if (!c.pl.n_groups)
        return;
    c.vec_dot = hr_cpu_vec_dot(wtype);
    c.w = w;
    c.w_row_bytes = w_row_bytes;
    c.expert_bytes = expert_bytes;

    if (wt->vec_dot_type == HR_TYPE_F32) {
        c.a = (const char *)x;
        c.a_row_bytes = (size_t)K * sizeof(float);
    } else {
        const hr_type_traits *at = hr_type_get(wt->vec_dot_type);
        c.from_float = hr_cpu_from_float(wt->vec_dot_type);
        c.act = c.pl.rest;
        c.act_bs = at->block_size;
        c.act_ts = at->type_size;
        c.bpr = K / at->block_size;
        c.n_in = x_per_slot ? n_slots : n_tok;
        c.a = c.act;
        c.a_row_bytes = hr_row_size(wt->vec_dot_type, K);
        if (nth > 1 && c.n_in * c.bpr >= 8 * (int64_t)nth)
            hr_pool_run(pool, id_quantise_part, &c);
        else
            id_quantise_part(&c, 0, 1);
    }

    const int64_t tile = TILE_ACT_BYTES / (int64_t)c.a_row_bytes;
    c.tok_tile = (int32_t)(tile < 1 ? 1 : tile > INT32_MAX ? INT32_MAX : tile);
    const int64_t rblk = ID_ROW_BLOCK_BYTES / (int64_t)(w_row_bytes ? w_row_bytes : 1);
    c.row_block = rblk < 1 ? 1 : rblk;
    if (nth > 1 && c.pl.n_chunks > 1)
        hr_pool_run(pool, id_dot_part, &c);
    else
        id_dot_part(&c, 0, 1);
}

/* Packed: activation row i (position in expert order) of slot slots[i]. */
static void idp_quantise_part(void *vctx, int ith, int nth)
{
    id_ctx *c = vctx;
    const int64_t bpr = c->pk.nb, total = (int64_t)c->pl.used * bpr, bs = c->pk.q8k ? HR_QK_K : HR_QK32;
    const int64_t b1 = total * (ith + 1) / nth;
    for (int64_t b = total * ith / nth; b < b1;) {
        const int64_t i = b / bpr, end = (i + 1) * bpr < b1 ? (i + 1) * bpr : b1;
        const int32_t slot = c->pl.slots[i];
        const float *src = c->x + (size_t)(c->x_per_slot ? slot : slot / c->n_used) * (size_t)c->K;
        pk_quantise_blocks(&c->pk, src + (b - i * bpr) * bs, b, end);
        b = end;
    }
}

static void idp_dot_part(void *vctx, int ith, int nth)
{
    id_ctx *c = vctx;
    (void)ith;
    (void)nth;
    const pk_ctx *pk = &c->pk;
    const size_t a_row = (size_t)pk->nb * pk->act_ts, side_row = (size_t)pk->nb * (pk->q8k ? 4 : 1);
    const int64_t n_groups = (c->N + HR_PACK_ROWS - 1) / HR_PACK_ROWS;
    float yt[ID_PK_TILE * HR_PACK_ROWS];
    int32_t g = 0;
    for (;;) {
        const int64_t k = atomic_fetch_add_explicit(&c->next_chunk, 1, memory_order_relaxed);
        if (k >= c->pl.n_chunks)
            break;
        int64_t q0, q1;
        const id_group *gr = id_chunk(&c->pl, k, &g, n_groups, &q0, &q1);
        const uint8_t *we = pk->w[0] + (size_t)gr->expert * c->pk_expert_bytes;
        for (int32_t i0 = 0; i0 < gr->count; i0 += ID_PK_TILE) {
            const int tn = gr->count - i0 < ID_PK_TILE ? gr->count - i0 : ID_PK_TILE;
            const size_t pos = (size_t)gr->first + (size_t)i0;
            for (int64_t q = q0; q < q1; q++) {
                const int64_t r0 = q * HR_PACK_ROWS;
                const int valid = c->N - r0 < HR_PACK_ROWS ? (int)(c->N - r0) : HR_PACK_ROWS;
                pk->gemm(pk->nb, we + (size_t)q * pk->group_bytes, pk->act + pos * a_row, a_row,
                         pk->da + pos * (size_t)pk->nb, pk->as + pos * side_row, side_row, tn, yt, HR_PACK_ROWS,
                         valid);
                for (int t = 0; t < tn; t++)
                    memcpy(c->y + (size_t)c->pl.slots[pos + (size_t)t] * (size_t)c->N + (size_t)r0,
                           yt + (size_t)t * HR_PACK_ROWS, (size_t)valid * sizeof(float));
            }
        }
    }
}

void hr_matmul_id_packed(hr_pool *pool, const void *packed, uint32_t wtype, size_t packed_expert_bytes, int64_t K,
                         int64_t N, int32_t n_expert, const float *x, bool x_per_slot, int32_t n_tok, int32_t n_used,
                         const int32_t *ids, float *y, void *scratch)
{
    const int kind = pack_kind(wtype);
    hr_gemm_x16_fn gemm = gemm_x16(kind);
    const int64_t n_slots = id_slots_checked(wtype, K, n_tok, n_used, n_expert);
    if (!gemm || N <= 0 || !n_slots || !hr_matmul_packed_bytes(wtype, K, N))
        return;
    const int nth = hr_pool_n_threads(pool);
    id_ctx c = { 0 };
    id_init(&c, x, x_per_slot, K, N, n_expert, n_used, ids, y);
    id_plan_make(&c.pl, scratch, ids, n_slots, n_expert, (N + HR_PACK_ROWS - 1) / HR_PACK_ROWS, HR_PACK_ROWS, nth);
    if (!c.pl.n_groups)
        return;
    pk_ctx *pk = &c.pk;
    pk->q8k = hr_pack_is_k(kind);
    pk->act_ts = pk->q8k ? 292 : 34;
    pk->nb = K / (pk->q8k ? HR_QK_K : HR_QK32);
    pk->from_float = hr_cpu_from_float(pk->q8k ? HR_TYPE_Q8_K : HR_TYPE_Q8_0);
    pk->act = (uint8_t *)c.pl.rest;
    uintptr_t side = (uintptr_t)pk->act + (size_t)pk->nb * pk->act_ts * (size_t)c.pl.used;
    side = (side + 63) & ~(uintptr_t)63;
    pk->da = (float *)side;
    pk->as = (int32_t *)(pk->da + (size_t)c.pl.used * (size_t)pk->nb);
    pk->gemm = gemm;
    pk->w[0] = packed;
    pk->group_bytes = (size_t)pk->nb * hr_pack_block_bytes(kind);
    c.pk_expert_bytes = packed_expert_bytes;
    if (nth > 1 && (int64_t)c.pl.used * pk->nb >= 8 * (int64_t)nth)
        hr_pool_run(pool, idp_quantise_part, &c);
    else
        idp_quantise_part(&c, 0, 1);
    if (nth > 1 && c.pl.n_chunks > 1)
        hr_pool_run(pool, idp_dot_part, &c);
    else
        idp_dot_part(&c, 0, 1);
}
