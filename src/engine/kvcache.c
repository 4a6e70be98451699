/* kvcache.c - block pool, per-sequence block tables. */
#include "engine/kvcache.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t *blocks; /* block ids, in position order */
    int32_t n, cap;
} seq_table;

struct hr_kv {
    int32_t n_layer;
    int32_t k_dim, v_dim;     /* floats per token per layer */
    int32_t block_tokens;
    int32_t n_blocks;
    size_t block_floats;      /* floats in one block: n_layer * block_tokens * (k_dim + v_dim) */
    float *pool;              /* (n_blocks, n_layer, 2, block_tokens, dim) */
    int32_t *refcnt;          /* (n_blocks) */
    int32_t *free_list;       /* stack of free block ids */
    int32_t n_free;
    seq_table *seqs;          /* (max_seqs) */
    int32_t max_seqs;
};

size_t hr_kv_bytes_per_token(const hr_hparams *hp)
{
    return (size_t)hp->n_layer * (size_t)hp->n_head_kv * (size_t)(hp->head_dim + hp->head_dim_v) * sizeof(float);
}

hr_status hr_kv_new(const hr_hparams *hp, const hr_kv_params *p, hr_kv **out, hr_err *err)
{
    *out = NULL;
    if (p->n_blocks < 1 || p->block_tokens < 1 || p->max_seqs < 1)
        return hr_err_set(err, HR_ERR_INVALID, "KV cache needs at least one block, one token per block and one sequence");
    hr_kv *kv = calloc(1, sizeof *kv);
    if (!kv)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    kv->n_layer = hp->n_layer;
    kv->k_dim = hp->n_head_kv * hp->head_dim;
    kv->v_dim = hp->n_head_kv * hp->head_dim_v;
    kv->block_tokens = p->block_tokens;
    kv->n_blocks = p->n_blocks;
    kv->max_seqs = p->max_seqs;
    kv->block_floats = (size_t)kv->n_layer * (size_t)kv->block_tokens * (size_t)(kv->k_dim + kv->v_dim);
    size_t total = kv->block_floats * (size_t)p->n_blocks;
    if (total / (size_t)p->n_blocks != kv->block_floats || total > SIZE_MAX / sizeof(float)) {
        free(kv);
        return hr_err_set(err, HR_ERR_LIMIT, "KV cache size overflows");
    }
    kv->pool = calloc(total, sizeof(float));
    kv->refcnt = calloc((size_t)p->n_blocks, sizeof *kv->refcnt);
    kv->free_list = malloc((size_t)p->n_blocks * sizeof *kv->free_list);
    kv->seqs = calloc((size_t)p->max_seqs, sizeof *kv->seqs);
    if (!kv->pool || !kv->refcnt || !kv->free_list || !kv->seqs) {
        hr_kv_free(kv);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory for a KV cache of %zu MiB",
                          total * sizeof(float) >> 20);
    }
    /* lowest block ids on top of the stack */
    for (int32_t i = 0; i < p->n_blocks; i++)
        kv->free_list[i] = p->n_blocks - 1 - i;
    kv->n_free = p->n_blocks;
    *out = kv;
    return HR_OK;
}

void hr_kv_free(hr_kv *kv)
{
    if (!kv)
        return;
    if (kv->seqs)
        for (int32_t i = 0; i < kv->max_seqs; i++)
            free(kv->seqs[i].blocks);
    free(kv->seqs);
    free(kv->free_list);
    free(kv->refcnt);
    free(kv->pool);
    free(kv);
}

static void block_release(hr_kv *kv, int32_t b)
{
    if (--kv->refcnt[b] == 0)
        kv->free_list[kv->n_free++] = b;
}

hr_status hr_kv_seq_reserve(hr_kv *kv, int32_t seq, int32_t n_tokens, hr_err *err)
{
    if (seq < 0 || seq >= kv->max_seqs)
        return hr_err_set(err, HR_ERR_INVALID, "sequence id %d out of range [0, %d)", seq, kv->max_seqs);
    if (n_tokens < 0)
        return hr_err_set(err, HR_ERR_INVALID, "negative token count");
    seq_table *s = &kv->seqs[seq];
    int32_t need = (int32_t)(((int64_t)n_tokens + kv->block_tokens - 1) / kv->block_tokens);
    if (need <= s->n)
        return HR_OK;
    if (need - s->n > kv->n_free)
        return hr_err_set(err, HR_ERR_LIMIT, "KV cache full: sequence %d needs %d more blocks, %d free", seq,
                          need - s->n, kv->n_free);
    if (need > s->cap) {
        int32_t cap = s->cap ? s->cap : 8;
        while (cap < need)
            cap *= 2;
        int32_t *b = realloc(s->blocks, (size_t)cap * sizeof *b);
        if (!b)
            return hr_err_set(err, HR_ERR_NOMEM, "out of memory for a block table");
        s->blocks = b;
        s->cap = cap;
    }
    while (s->n < need) {
        int32_t b = kv->free_list[--kv->n_free];
        kv->refcnt[b] = 1;
        s->blocks[s->n++] = b;
    }
    return HR_OK;
}

int32_t hr_kv_seq_capacity(const hr_kv *kv, int32_t seq)
{
    if (seq < 0 || seq >= kv->max_seqs)
        return 0;
    return kv->seqs[seq].n * kv->block_tokens;
}

void hr_kv_seq_truncate(hr_kv *kv, int32_t seq, int32_t n_tokens)
{
    if (seq < 0 || seq >= kv->max_seqs || n_tokens < 0)
        return;
    seq_table *s = &kv->seqs[seq];
    int32_t keep = (int32_t)(((int64_t)n_tokens + kv->block_tokens - 1) / kv->block_tokens);
    while (s->n > keep)
        block_release(kv, s->blocks[--s->n]);
}

void hr_kv_seq_clear(hr_kv *kv, int32_t seq) { hr_kv_seq_truncate(kv, seq, 0); }

int32_t hr_kv_max_seqs(const hr_kv *kv) { return kv->max_seqs; }
int32_t hr_kv_block_tokens(const hr_kv *kv) { return kv->block_tokens; }
int32_t hr_kv_blocks_total(const hr_kv *kv) { return kv->n_blocks; }
int32_t hr_kv_blocks_free(const hr_kv *kv) { return kv->n_free; }

static float *row(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos, int which)
{
    const seq_table *s = &kv->seqs[seq];
    int32_t b = s->blocks[pos / kv->block_tokens];
    int32_t r = pos % kv->block_tokens;
    float *blk = kv->pool + (size_t)b * kv->block_floats;
    float *lay = blk + (size_t)layer * (size_t)kv->block_tokens * (size_t)(kv->k_dim + kv->v_dim);
    if (which == 0)
        return lay + (size_t)r * (size_t)kv->k_dim;
    return lay + (size_t)kv->block_tokens * (size_t)kv->k_dim + (size_t)r * (size_t)kv->v_dim;
}

float *hr_kv_k(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos) { return row(kv, layer, seq, pos, 0); }
float *hr_kv_v(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos) { return row(kv, layer, seq, pos, 1); }
