/* kvcache.c - block pool, per-sequence block tables, prefix cache.
 *
 * Block states:
 *   free    refcnt 0, no hash          on the free stack
 *   cached  refcnt 0, hashed           on the LRU list (oldest first), reusable
 *   used    refcnt > 0 (hashed or not) in one or more block tables
 * Allocation takes a free block, else evicts the oldest cached one. A
 * hashed block is immutable: only full blocks are hashed, and sequences
 * only write positions past their shared prefix.
 *
 * Hashed blocks are indexed twice: by their own chain hash (exact prefix
 * hits) and by their parent's (the blocks that continue a given prefix).
 * The second index lets a prompt that diverges inside a block reuse the
 * positions before the divergence: the block is copied into a private one
 * (copy-on-write) and only the rest is computed. A shared system prompt
 * rarely ends on a block boundary, so without this every request would
 * recompute up to block_tokens - 1 of its tokens. */
#include "engine/kvcache.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct {
    int32_t *blocks;  /* block ids, in position order */
    uint64_t *chain;  /* chain hash of the prefix ending with each block (valid below n_hashed) */
    int32_t n, cap;
    int32_t n_hashed; /* leading blocks whose chain hash is known (registered or attached) */
} seq_table;

typedef struct {
    int32_t refcnt;
    bool hashed;
    uint64_t hash;        /* chain hash of the prefix this block ends */
    uint64_t parent;      /* chain hash of the prefix before it (0 for the first) */
    int32_t next_bucket;  /* hash chain in the index, -1 ends */
    int32_t next_child;   /* chain in the index by parent hash, -1 ends */
    int32_t lru_prev, lru_next; /* on the LRU list when cached, -1 ends */
} block_meta;

struct hr_kv {
    int32_t n_layer;
    int32_t *k_dim, *v_dim;   /* (n_layer) floats per token of each layer */
    size_t *layer_off;        /* (n_layer) floats from a block's start to the layer's K rows */
    int32_t block_tokens;
    int32_t n_blocks;
    size_t block_floats;      /* floats in one block: block_tokens * sum of (k_dim + v_dim) */
    float *pool;              /* (n_blocks; per layer: block_tokens K rows, then block_tokens V rows) */
    block_meta *meta;         /* (n_blocks) */
    int32_t *block_tokens_ids; /* (n_blocks, block_tokens) tokens of hashed blocks, to verify hits */
    int32_t *free_stack;      /* free blocks */
    int32_t n_free_stack;
    int32_t lru_head, lru_tail; /* cached blocks, oldest at head */
    int32_t n_cached;
    int32_t *buckets;         /* (n_buckets) first block of each hash bucket, -1 empty */
    int32_t *child_buckets;   /* (n_buckets) the same, by parent hash */
    int32_t n_buckets;        /* power of two */
    seq_table *seqs;          /* (max_seqs) */
    int32_t max_seqs;
};

/* Floats per token of layer l's K and V rows (the layer descriptor's sizes;
 * the common ones when there is no descriptor). */
static int32_t layer_k(const hr_hparams *hp, int32_t l)
{
    return hp->layer ? hp->layer[l].n_head_kv * hp->layer[l].head_dim : hp->n_head_kv * hp->head_dim;
}

static int32_t layer_v(const hr_hparams *hp, int32_t l)
{
    return hp->layer ? hp->layer[l].n_head_kv * hp->layer[l].head_dim_v : hp->n_head_kv * hp->head_dim_v;
}

size_t hr_kv_bytes_per_token(const hr_hparams *hp)
{
    size_t n = 0;
    for (int32_t l = 0; l < hp->n_layer; l++)
        n += (size_t)layer_k(hp, l) + (size_t)layer_v(hp, l);
    return n * sizeof(float);
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
    kv->k_dim = malloc((size_t)hp->n_layer * sizeof *kv->k_dim);
    kv->v_dim = malloc((size_t)hp->n_layer * sizeof *kv->v_dim);
    kv->layer_off = malloc((size_t)hp->n_layer * sizeof *kv->layer_off);
    if (!kv->k_dim || !kv->v_dim || !kv->layer_off) {
        hr_kv_free(kv);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }
    kv->block_tokens = p->block_tokens;
    kv->n_blocks = p->n_blocks;
    kv->max_seqs = p->max_seqs;
    kv->block_floats = 0;
    for (int32_t l = 0; l < hp->n_layer; l++) {
        kv->k_dim[l] = layer_k(hp, l);
        kv->v_dim[l] = layer_v(hp, l);
        kv->layer_off[l] = kv->block_floats;
        kv->block_floats += (size_t)kv->block_tokens * (size_t)(kv->k_dim[l] + kv->v_dim[l]);
    }
    size_t total = kv->block_floats * (size_t)p->n_blocks;
    if (total / (size_t)p->n_blocks != kv->block_floats || total > SIZE_MAX / sizeof(float)) {
        hr_kv_free(kv);
        return hr_err_set(err, HR_ERR_LIMIT, "KV cache size overflows");
    }
    kv->n_buckets = 16;
    while (kv->n_buckets < p->n_blocks)
        kv->n_buckets *= 2;
    kv->pool = malloc(total * sizeof(float));
    kv->meta = calloc((size_t)p->n_blocks, sizeof *kv->meta);
    kv->block_tokens_ids = malloc((size_t)p->n_blocks * (size_t)p->block_tokens * sizeof(int32_t));
    kv->free_stack = malloc((size_t)p->n_blocks * sizeof *kv->free_stack);
    kv->buckets = malloc((size_t)kv->n_buckets * sizeof *kv->buckets);
    kv->child_buckets = malloc((size_t)kv->n_buckets * sizeof *kv->child_buckets);
    kv->seqs = calloc((size_t)p->max_seqs, sizeof *kv->seqs);
    if (!kv->pool || !kv->meta || !kv->block_tokens_ids || !kv->free_stack || !kv->buckets || !kv->child_buckets || !kv->seqs) {
        hr_kv_free(kv);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory for a KV cache of %zu MiB", total * sizeof(float) >> 20);
    }
    for (int32_t i = 0; i < kv->n_buckets; i++)
        kv->buckets[i] = kv->child_buckets[i] = -1;
    /* lowest block ids on top of the stack */
    for (int32_t i = 0; i < p->n_blocks; i++) {
        kv->free_stack[i] = p->n_blocks - 1 - i;
        kv->meta[i].lru_prev = kv->meta[i].lru_next = kv->meta[i].next_bucket = kv->meta[i].next_child = -1;
    }
    kv->n_free_stack = p->n_blocks;
    kv->lru_head = kv->lru_tail = -1;
    *out = kv;
    return HR_OK;
}

void hr_kv_free(hr_kv *kv)
{
    if (!kv)
        return;
    if (kv->seqs)
        for (int32_t i = 0; i < kv->max_seqs; i++) {
            free(kv->seqs[i].blocks);
            free(kv->seqs[i].chain);
        }
    free(kv->seqs);
    free(kv->buckets);
    free(kv->child_buckets);
    free(kv->free_stack);
    free(kv->block_tokens_ids);
    free(kv->meta);
    free(kv->pool);
    free(kv->k_dim);
    free(kv->v_dim);
    free(kv->layer_off);
    free(kv);
}

/* ---- LRU list and hash index ---- */

static void lru_remove(hr_kv *kv, int32_t b)
{
    block_meta *m = &kv->meta[b];
    if (m->lru_prev >= 0)
        kv->meta[m->lru_prev].lru_next = m->lru_next;
    else
        kv->lru_head = m->lru_next;
    if (m->lru_next >= 0)
        kv->meta[m->lru_next].lru_prev = m->lru_prev;
    else
        kv->lru_tail = m->lru_prev;
    m->lru_prev = m->lru_next = -1;
    kv->n_cached--;
}

static void lru_push(hr_kv *kv, int32_t b)
{
    block_meta *m = &kv->meta[b];
    m->lru_prev = kv->lru_tail;
    m->lru_next = -1;
    if (kv->lru_tail >= 0)
        kv->meta[kv->lru_tail].lru_next = b;
    else
        kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_cached++;
}

static int32_t *bucket_of(hr_kv *kv, uint64_t h) { return &kv->buckets[h & (uint64_t)(kv->n_buckets - 1)]; }
static int32_t *child_bucket_of(hr_kv *kv, uint64_t parent)
{
    return &kv->child_buckets[parent & (uint64_t)(kv->n_buckets - 1)];
}

static void index_remove(hr_kv *kv, int32_t b)
{
    int32_t *pp = bucket_of(kv, kv->meta[b].hash);
    while (*pp >= 0 && *pp != b)
        pp = &kv->meta[*pp].next_bucket;
    if (*pp == b)
        *pp = kv->meta[b].next_bucket;
    kv->meta[b].next_bucket = -1;
    pp = child_bucket_of(kv, kv->meta[b].parent);
    while (*pp >= 0 && *pp != b)
        pp = &kv->meta[*pp].next_child;
    if (*pp == b)
        *pp = kv->meta[b].next_child;
    kv->meta[b].next_child = -1;
    kv->meta[b].hashed = false;
}

static const int32_t *block_ids(const hr_kv *kv, int32_t b) { return kv->block_tokens_ids + (size_t)b * (size_t)kv->block_tokens; }

/* The hashed block holding `tokens` after prefix `parent`, or -1. */
static int32_t index_find(const hr_kv *kv, uint64_t h, uint64_t parent, const int32_t *tokens)
{
    for (int32_t b = kv->buckets[h & (uint64_t)(kv->n_buckets - 1)]; b >= 0; b = kv->meta[b].next_bucket)
        if (kv->meta[b].hash == h && kv->meta[b].parent == parent &&
            !memcmp(block_ids(kv, b), tokens, (size_t)kv->block_tokens * sizeof(int32_t)))
            return b;
    return -1;
}

static uint64_t chain_hash(const hr_kv *kv, uint64_t parent, const int32_t *tokens)
{
    return XXH3_64bits_withSeed(tokens, (size_t)kv->block_tokens * sizeof(int32_t), parent ^ 0x9e3779b97f4a7c15ull);
}

/* The hashed block after prefix `parent` whose leading tokens match the
 * most of tokens[0, n) (n < block_tokens); *match gets how many, -1 when
 * none matches even the first. */
static int32_t child_find(const hr_kv *kv, uint64_t parent, const int32_t *tokens, int32_t n, int32_t *match)
{
    int32_t best = -1, best_m = 0;
    for (int32_t b = kv->child_buckets[parent & (uint64_t)(kv->n_buckets - 1)]; b >= 0; b = kv->meta[b].next_child) {
        if (kv->meta[b].parent != parent)
            continue;
        const int32_t *t = block_ids(kv, b);
        int32_t m = 0;
        while (m < n && t[m] == tokens[m])
            m++;
        if (m > best_m) {
            best_m = m;
            best = b;
        }
    }
    *match = best_m;
    return best;
}

/* ---- allocation ---- */

static int32_t blocks_available(const hr_kv *kv) { return kv->n_free_stack + kv->n_cached; }

/* Takes a block for exclusive use (refcnt 1); the caller checked availability. */
static int32_t block_take(hr_kv *kv)
{
    int32_t b;
    if (kv->n_free_stack > 0) {
        b = kv->free_stack[--kv->n_free_stack];
    } else {
        b = kv->lru_head; /* evict the least recently released prefix block */
        lru_remove(kv, b);
        index_remove(kv, b);
    }
    kv->meta[b].refcnt = 1;
    return b;
}

static void block_release(hr_kv *kv, int32_t b)
{
    if (--kv->meta[b].refcnt > 0)
        return;
    if (kv->meta[b].hashed)
        lru_push(kv, b);
    else
        kv->free_stack[kv->n_free_stack++] = b;
}

static void block_ref(hr_kv *kv, int32_t b)
{
    if (kv->meta[b].refcnt++ == 0)
        lru_remove(kv, b);
}

static hr_status table_grow(seq_table *s, int32_t need, hr_err *err)
{
    if (need <= s->cap)
        return HR_OK;
    int32_t cap = s->cap ? s->cap : 8;
    while (cap < need)
        cap *= 2;
    int32_t *b = realloc(s->blocks, (size_t)cap * sizeof *b);
    if (b)
        s->blocks = b;
    uint64_t *c = b ? realloc(s->chain, (size_t)cap * sizeof *c) : NULL;
    if (!b || !c)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory for a block table");
    s->chain = c;
    s->cap = cap;
    return HR_OK;
}

static int32_t blocks_for(const hr_kv *kv, int32_t n_tokens)
{
    return (int32_t)(((int64_t)n_tokens + kv->block_tokens - 1) / kv->block_tokens);
}

int32_t hr_kv_seq_blocks_needed(const hr_kv *kv, int32_t seq, int32_t n_tokens)
{
    if (seq < 0 || seq >= kv->max_seqs || n_tokens < 0)
        return 0;
    int32_t need = blocks_for(kv, n_tokens) - kv->seqs[seq].n;
    return need > 0 ? need : 0;
}

hr_status hr_kv_seq_reserve(hr_kv *kv, int32_t seq, int32_t n_tokens, hr_err *err)
{
    if (seq < 0 || seq >= kv->max_seqs)
        return hr_err_set(err, HR_ERR_INVALID, "sequence id %d out of range [0, %d)", seq, kv->max_seqs);
    if (n_tokens < 0)
        return hr_err_set(err, HR_ERR_INVALID, "negative token count");
    seq_table *s = &kv->seqs[seq];
    int32_t need = blocks_for(kv, n_tokens);
    if (need <= s->n)
        return HR_OK;
    if (need - s->n > blocks_available(kv))
        return hr_err_set(err, HR_ERR_LIMIT, "KV cache full: sequence %d needs %d more blocks, %d free", seq,
                          need - s->n, blocks_available(kv));
    hr_status st = table_grow(s, need, err);
    if (st)
        return st;
    while (s->n < need)
        s->blocks[s->n++] = block_take(kv);
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
    int32_t keep = blocks_for(kv, n_tokens);
    while (s->n > keep)
        block_release(kv, s->blocks[--s->n]);
    /* a kept partial block can be written again: it is no longer a known full prefix */
    int32_t full = n_tokens / kv->block_tokens;
    if (s->n_hashed > full)
        s->n_hashed = full;
    if (s->n_hashed > s->n)
        s->n_hashed = s->n;
}

void hr_kv_seq_clear(hr_kv *kv, int32_t seq) { hr_kv_seq_truncate(kv, seq, 0); }

/* ---- prefix cache ---- */

/* The cache's longest match for tokens[0, n_tokens), never all of them
 * (at least one token is left to compute): whole blocks, whose ids and
 * chain hashes go to blocks / chain when not NULL, then the cached block
 * that continues them and agrees longest with the next tokens (*src, -1
 * when none agrees even on the first; *agree positions). Returns the
 * number of whole blocks. Changes nothing. */
static int32_t prefix_match(const hr_kv *kv, const int32_t *tokens, int32_t n_tokens, int32_t *blocks,
                            uint64_t *chain, int32_t *src, int32_t *agree)
{
    const int32_t B = kv->block_tokens;
    const int32_t max_blocks = n_tokens < 2 ? 0 : (n_tokens - 1) / B;
    uint64_t parent = 0;
    int32_t i = 0;
    for (; i < max_blocks; i++) {
        const int32_t *t = tokens + (size_t)i * B;
        uint64_t h = chain_hash(kv, parent, t);
        int32_t b = index_find(kv, h, parent, t);
        if (b < 0)
            break;
        if (blocks) {
            blocks[i] = b;
            chain[i] = h;
        }
        parent = h;
    }
    const int32_t rest = n_tokens - 1 - i * B;
    *src = -1;
    *agree = 0;
    if (rest > 0)
        *src = child_find(kv, parent, tokens + (size_t)i * B, rest < B ? rest : B - 1, agree);
    return i;
}

int32_t hr_kv_prefix_attach(hr_kv *kv, int32_t seq, const int32_t *tokens, int32_t n_tokens)
{
    if (seq < 0 || seq >= kv->max_seqs || kv->seqs[seq].n != 0 || n_tokens < 2)
        return 0;
    seq_table *s = &kv->seqs[seq];
    const int32_t B = kv->block_tokens;
    if (table_grow(s, (n_tokens - 1) / B + 1, NULL))
        return 0;
    int32_t src, m;
    s->n = s->n_hashed = prefix_match(kv, tokens, n_tokens, s->blocks, s->chain, &src, &m);
    for (int32_t i = 0; i < s->n; i++)
        block_ref(kv, s->blocks[i]);
    /* a block that continues this prefix and agrees with the next tokens
     * for a while: copy it, keep the agreeing positions */
    if (src < 0 || blocks_available(kv) - (kv->meta[src].refcnt == 0) < 1)
        return s->n * B;
    block_ref(kv, src); /* not evicted by the take below */
    int32_t b = block_take(kv);
    memcpy(kv->pool + (size_t)b * kv->block_floats, kv->pool + (size_t)src * kv->block_floats,
           kv->block_floats * sizeof(float));
    block_release(kv, src);
    s->blocks[s->n++] = b;
    return (s->n - 1) * B + m;
}

int32_t hr_kv_prefix_probe(const hr_kv *kv, const int32_t *tokens, int32_t n_tokens)
{
    int32_t src, m;
    return prefix_match(kv, tokens, n_tokens, NULL, NULL, &src, &m) * kv->block_tokens + m;
}

void hr_kv_prefix_commit(hr_kv *kv, int32_t seq, const int32_t *tokens, int32_t n_tokens)
{
    if (seq < 0 || seq >= kv->max_seqs)
        return;
    seq_table *s = &kv->seqs[seq];
    const int32_t B = kv->block_tokens;
    int32_t full = n_tokens / B;
    if (full > s->n)
        full = s->n;
    for (int32_t i = s->n_hashed; i < full; i++) {
        const int32_t *t = tokens + (size_t)i * B;
        uint64_t parent = i ? s->chain[i - 1] : 0;
        uint64_t h = chain_hash(kv, parent, t);
        s->chain[i] = h;
        int32_t b = s->blocks[i];
        /* another sequence may have registered the same prefix first: then
         * this block stays private (freed, not cached, when released) */
        if (!kv->meta[b].hashed && index_find(kv, h, parent, t) < 0) {
            block_meta *m = &kv->meta[b];
            m->hashed = true;
            m->hash = h;
            m->parent = parent;
            memcpy(kv->block_tokens_ids + (size_t)b * B, t, (size_t)B * sizeof(int32_t));
            int32_t *head = bucket_of(kv, h);
            m->next_bucket = *head;
            *head = b;
            head = child_bucket_of(kv, parent);
            m->next_child = *head;
            *head = b;
        }
    }
    if (full > s->n_hashed)
        s->n_hashed = full;
}

hr_status hr_kv_seq_fork(hr_kv *kv, int32_t src, int32_t dst, int32_t n_tokens, hr_err *err)
{
    if (src < 0 || src >= kv->max_seqs || dst < 0 || dst >= kv->max_seqs || src == dst || kv->seqs[dst].n)
        return hr_err_set(err, HR_ERR_INVALID, "bad fork %d -> %d", src, dst);
    seq_table *s = &kv->seqs[src], *d = &kv->seqs[dst];
    const int32_t B = kv->block_tokens;
    int32_t full = n_tokens / B, partial = n_tokens % B;
    if (blocks_for(kv, n_tokens) > s->n)
        return hr_err_set(err, HR_ERR_INVALID, "fork of %d positions beyond the source's %d", n_tokens, s->n * B);
    if (partial && blocks_available(kv) < 1)
        return hr_err_set(err, HR_ERR_LIMIT, "KV cache full: no block for a fork");
    hr_status st = table_grow(d, full + 1, err);
    if (st)
        return st;
    for (int32_t i = 0; i < full; i++) {
        block_ref(kv, s->blocks[i]);
        d->blocks[i] = s->blocks[i];
        d->chain[i] = s->chain[i];
    }
    d->n = full;
    d->n_hashed = s->n_hashed < full ? s->n_hashed : full;
    if (partial) {
        int32_t b = block_take(kv);
        memcpy(kv->pool + (size_t)b * kv->block_floats, kv->pool + (size_t)s->blocks[full] * kv->block_floats,
               kv->block_floats * sizeof(float));
        d->blocks[d->n++] = b;
    }
    return HR_OK;
}

void hr_kv_prefix_clear(hr_kv *kv)
{
    while (kv->lru_head >= 0) {
        int32_t b = kv->lru_head;
        lru_remove(kv, b);
        index_remove(kv, b);
        kv->free_stack[kv->n_free_stack++] = b;
    }
}

int32_t hr_kv_max_seqs(const hr_kv *kv) { return kv->max_seqs; }
int32_t hr_kv_block_tokens(const hr_kv *kv) { return kv->block_tokens; }
int32_t hr_kv_blocks_total(const hr_kv *kv) { return kv->n_blocks; }
int32_t hr_kv_blocks_free(const hr_kv *kv) { return blocks_available(kv); }
int32_t hr_kv_blocks_cached(const hr_kv *kv) { return kv->n_cached; }
size_t hr_kv_block_bytes(const hr_kv *kv) { return kv->block_floats * sizeof(float); }

static float *row(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos, int which)
{
    const seq_table *s = &kv->seqs[seq];
    int32_t b = s->blocks[pos / kv->block_tokens];
    int32_t r = pos % kv->block_tokens;
    float *blk = kv->pool + (size_t)b * kv->block_floats;
    float *lay = blk + kv->layer_off[layer];
    if (which == 0)
        return lay + (size_t)r * (size_t)kv->k_dim[layer];
    return lay + (size_t)kv->block_tokens * (size_t)kv->k_dim[layer] + (size_t)r * (size_t)kv->v_dim[layer];
}

float *hr_kv_k(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos) { return row(kv, layer, seq, pos, 0); }
float *hr_kv_v(hr_kv *kv, int32_t layer, int32_t seq, int32_t pos) { return row(kv, layer, seq, pos, 1); }

size_t hr_kv_k_dim(const hr_kv *kv, int32_t layer) { return (size_t)kv->k_dim[layer]; }
size_t hr_kv_v_dim(const hr_kv *kv, int32_t layer) { return (size_t)kv->v_dim[layer]; }
