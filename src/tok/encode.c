/* encode.c - text -> ids.
 *
 * 1. Invalid UTF-8 is repaired (U+FFFD per maximal invalid subpart).
 * 2. Special-token text is split out, leftmost-longest: user-defined tokens
 *    always (as Hugging Face's added tokens are; not the ones flagged no_raw),
 *    control/unknown tokens only when the caller asks for parse_special, and
 *    then not inside the spans hr_tok_encode_marked is given.
 * 3. Each plain fragment goes to the model: SentencePiece BPE by scores, or
 *    byte-level BPE by merge rank after the pre-tokenizer. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdlib.h>

#include "base/grow.h"
#include <string.h>

#include "tok/tok_internal.h"

/* Inputs beyond this are refused (HR_ERR_LIMIT) before anything is allocated. */
#define HR_TOK_MAX_INPUT ((size_t)1 << 30)

/* ---- scratch ------------------------------------------------------------ */


/* ---- byte-level BPE: one pre-token --------------------------------------- */

typedef struct {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
    uint32_t len;       /* bytes; 0 once merged into its left neighbour */
} bsym;

typedef struct {
    int32_t rank;
    int32_t left;
    int32_t lid, rid; /* ids of the pair when queued: stale entries are skipped */
    int32_t res;      /* id of the merged token */
} bpair;

static inline bool bpair_less(const bpair *a, const bpair *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void bheap_push(bpair *h, size_t *n, bpair x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bpair_less(&x, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static bpair bheap_pop(bpair *h, size_t *n)
{
    bpair top = h[0];
    bpair x = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && bpair_less(&h[c + 1], &h[c]))
            c++;
        if (!bpair_less(&h[c], &x))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

static void emit_bytes_bpe(const hr_vocab *v, const unsigned char *s, size_t n, hr_sink *out)
{
    for (size_t i = 0; i < n; i++) {
        int32_t id = v->byte_tok[s[i]];
        if (id < 0)
            id = v->unk;
        if (id >= 0)
            hr_sink_put(out, id);
    }
}

/* Small words: find the best pair by scanning (no heap). Both paths give
 * the same result; the tests lower this to check that. */
#define BPE_SCAN_MAX 24
int hr_tok_bpe_scan_max = BPE_SCAN_MAX;

/* BPE over one pre-token. Byte-level vocabularies start from one symbol
 * per byte; `chars` (gemma4) starts from one per UTF-8 character, -1 for a
 * character that is no token (it falls back to <0xNN> bytes). */
static void bpe_run(const hr_vocab *v, hr_scratch *sc, const unsigned char *s, size_t nbytes, bool chars,
                    hr_sink *out)
{
    size_t n = nbytes;
    if (n == 0)
        return;
    if (n == 1 && !chars) {
        emit_bytes_bpe(v, s, 1, out);
        return;
    }
    if (v->ignore_merges) {
        int32_t id = hr_vocab_find_dec_(v, (const char *)s, n);
        if (id >= 0) {
            hr_sink_put(out, id);
            return;
        }
    }
    if (n > (size_t)INT32_MAX / 2 || !hr_grow(&sc->sym, &sc->sym_cap, n * sizeof(bsym), 1)) {
        sc->oom = true;
        return;
    }
    bsym *sy = sc->sym;
    if (chars) {
        size_t ns = 0;
        for (size_t i = 0; i < nbytes;) {
            bool inc;
            size_t bad, k = hr_utf8_seq(s + i, nbytes - i, &inc, &bad);
            if (k == 0)
                k = 1; /* cannot happen: input was repaired */
            int32_t id = hr_vocab_find_(v, (const char *)s + i, k);
            sy[ns].id = id >= 0 && v->type[id] == HR_TOKEN_NORMAL ? id : -1;
            sy[ns].len = (uint32_t)k;
            ns++;
            i += k;
        }
        n = ns;
    } else {
        for (size_t i = 0; i < n; i++) {
            sy[i].id = v->byte_tok[s[i]];
            sy[i].len = 1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        sy[i].prev = (int32_t)i - 1;
        sy[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    if (n <= (size_t)hr_tok_bpe_scan_max && n <= BPE_SCAN_MAX) {
        int32_t res[BPE_SCAN_MAX] = {0}, rk[BPE_SCAN_MAX];
        /* rank of the pair starting at each live symbol */
        for (size_t i = 0; i + 1 < n; i++)
            rk[i] = (sy[i].id >= 0 && sy[i + 1].id >= 0) ? hr_merge_rank_(v, sy[i].id, sy[i + 1].id, &res[i]) : -1;
        rk[n - 1] = -1;
        for (;;) {
            int32_t best = -1;
            for (int32_t i = 0; i >= 0; i = sy[i].next)
                if (rk[i] >= 0 && (best < 0 || rk[i] < rk[best]))
                    best = i;
            if (best < 0)
                break;
            int32_t r = sy[best].next;
            sy[best].id = res[best];
            sy[best].len += sy[r].len;
            sy[r].len = 0;
            sy[best].next = sy[r].next;
            if (sy[r].next >= 0)
                sy[sy[r].next].prev = best;
            int32_t nx = sy[best].next;
            rk[best] = nx >= 0 && sy[nx].id >= 0 ? hr_merge_rank_(v, sy[best].id, sy[nx].id, &res[best]) : -1;
            int32_t pv = sy[best].prev;
            if (pv >= 0)
                rk[pv] = sy[pv].id >= 0 ? hr_merge_rank_(v, sy[pv].id, sy[best].id, &res[pv]) : -1;
        }
    } else {
        if (!hr_grow(&sc->heap, &sc->heap_cap, (2 * n + 8) * sizeof(bpair), 1)) {
            sc->oom = true;
            return;
        }
        bpair *h = sc->heap;
        size_t hn = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            int32_t r, rank = (sy[i].id >= 0 && sy[i + 1].id >= 0) ? hr_merge_rank_(v, sy[i].id, sy[i + 1].id, &r) : -1;
            if (rank >= 0)
                bheap_push(h, &hn, (bpair){rank, (int32_t)i, sy[i].id, sy[i + 1].id, r});
        }
        while (hn > 0) {
            bpair p = bheap_pop(h, &hn);
            bsym *l = &sy[p.left];
            if (l->len == 0 || l->id != p.lid || l->next < 0)
                continue;
            int32_t ri = l->next;
            bsym *rs = &sy[ri];
            if (rs->id != p.rid)
                continue;
            l->id = p.res;
            l->len += rs->len;
            rs->len = 0;
            l->next = rs->next;
            if (rs->next >= 0)
                sy[rs->next].prev = p.left;
            /* heap holds at most one live entry per adjacent pair plus stale
             * ones; each merge adds at most two, so 2n bounds it */
            if ((hn + 2) * sizeof(bpair) > sc->heap_cap) {
                if (!hr_grow(&sc->heap, &sc->heap_cap, (hn + 2) * sizeof(bpair), 1)) {
                    sc->oom = true;
                    return;
                }
                h = sc->heap;
            }
            if (l->prev >= 0) {
                bsym *pl = &sy[l->prev];
                int32_t r2, rank = pl->id >= 0 ? hr_merge_rank_(v, pl->id, l->id, &r2) : -1;
                if (rank >= 0)
                    bheap_push(h, &hn, (bpair){rank, l->prev, pl->id, l->id, r2});
            }
            if (l->next >= 0) {
                bsym *nl = &sy[l->next];
                int32_t r2, rank = nl->id >= 0 ? hr_merge_rank_(v, l->id, nl->id, &r2) : -1;
                if (rank >= 0)
                    bheap_push(h, &hn, (bpair){rank, p.left, l->id, nl->id, r2});
            }
        }
    }
    size_t pos = 0;
    for (int32_t i = 0; i >= 0; i = sy[i].next) {
        if (sy[i].id >= 0)
            hr_sink_put(out, sy[i].id);
        else
            emit_bytes_bpe(v, s + pos, sy[i].len, out);
        pos += sy[i].len;
    }
}

void hr_bpe_word(const hr_vocab *v, hr_scratch *sc, const unsigned char *s, size_t n, hr_sink *out)
{
    bpe_run(v, sc, s, n, false, out);
}

/* gemma4: spaces become U+2581, the text is cut into runs of newlines and
 * runs of other characters, and merges run over each run (no word-level
 * pre-tokenizer). A run of newlines that is itself a piece is taken whole. */
void hr_spm_bpe_fragment(const hr_vocab *v, hr_scratch *sc, const char *s, size_t n, hr_sink *out)
{
    size_t spaces = 0;
    for (size_t i = 0; i < n; i++)
        spaces += s[i] == ' ';
    size_t tn = n + 2 * spaces;
    char *t = malloc(tn ? tn : 1);
    if (!t) {
        sc->oom = true;
        return;
    }
    for (size_t i = 0, o = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(t + o, "\xE2\x96\x81", 3);
            o += 3;
        } else {
            t[o++] = s[i];
        }
    }
    for (size_t a = 0; a < tn;) {
        bool nl = t[a] == '\n';
        size_t b = a;
        while (b < tn && (t[b] == '\n') == nl)
            b++;
        int32_t id = nl ? hr_vocab_find_(v, t + a, b - a) : -1;
        if (id >= 0 && v->type[id] == HR_TOKEN_NORMAL)
            hr_sink_put(out, id);
        else
            bpe_run(v, sc, (const unsigned char *)t + a, b - a, true, out);
        a = b;
    }
    free(t);
}

/* ---- SentencePiece BPE ---------------------------------------------------- */

typedef struct {
    uint32_t start, len; /* span in the escaped text; len 0 once merged */
    int32_t prev, next;
} ssym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size; /* combined length when queued */
} spair;

static inline bool spair_better(const spair *a, const spair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void sheap_push(spair *h, size_t *n, spair x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!spair_better(&x, &h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static spair sheap_pop(spair *h, size_t *n)
{
    spair top = h[0];
    spair x = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && spair_better(&h[c + 1], &h[c]))
            c++;
        if (!spair_better(&h[c], &x))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

/* A piece the SentencePiece model may produce by merging or emit whole. */
static int32_t spm_piece(const hr_vocab *v, const char *s, size_t n)
{
    int32_t id = hr_vocab_find_(v, s, n);
    if (id >= 0 && (v->type[id] == HR_TOKEN_NORMAL || v->type[id] == HR_TOKEN_USER_DEFINED))
        return id;
    return -1;
}

static void spm_try_pair(const hr_vocab *v, const char *t, ssym *sy, int32_t l, int32_t r, spair *h, size_t *hn)
{
    if (l < 0 || r < 0)
        return;
    uint32_t size = sy[l].len + sy[r].len;
    int32_t id = spm_piece(v, t + sy[l].start, size);
    if (id < 0)
        return;
    sheap_push(h, hn, (spair){v->score[id], l, r, size});
}

/* true if some token has the character c (n bytes) right before a U+2581 */
static bool spm_joins_space(const hr_vocab *v, const char *c, size_t n)
{
    uint32_t cp = 0;
    for (size_t i = 0; i < n; i++)
        cp = (cp << 8) | (unsigned char)c[i];
    for (int i = 0; i < v->n_space_join; i++)
        if (v->space_join[i] == cp)
            return true;
    return false;
}

/* SentencePiece BPE over one span of escaped text. */
static void spm_span(const hr_vocab *v, const char *t, size_t tn, ssym *sy, spair *h, hr_sink *out)
{
    if (tn == 0)
        return;
    int32_t ns = 0;
    for (size_t i = 0; i < tn;) {
        bool inc;
        size_t bad, k = hr_utf8_seq((const unsigned char *)t + i, tn - i, &inc, &bad);
        if (k == 0)
            k = 1; /* cannot happen: input was repaired */
        sy[ns] = (ssym){(uint32_t)i, (uint32_t)k, ns - 1, -1};
        if (ns > 0)
            sy[ns - 1].next = ns;
        ns++;
        i += k;
    }
    size_t hn = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        spm_try_pair(v, t, sy, i, i + 1, h, &hn);
    while (hn > 0) {
        spair p = sheap_pop(h, &hn);
        ssym *l = &sy[p.left], *r = &sy[p.right];
        if (l->len == 0 || r->len == 0 || l->next != p.right || l->len + r->len != p.size)
            continue;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0)
            sy[r->next].prev = p.left;
        spm_try_pair(v, t, sy, l->prev, p.left, h, &hn);
        spm_try_pair(v, t, sy, p.left, l->next, h, &hn);
    }
    for (int32_t i = 0; i >= 0; i = sy[i].next) {
        int32_t id = spm_piece(v, t + sy[i].start, sy[i].len);
        if (id >= 0) {
            hr_sink_put(out, id);
            continue;
        }
        /* byte fallback, else one unknown token for the character */
        bool all = true;
        for (uint32_t k = 0; k < sy[i].len; k++)
            if (v->byte_tok[(unsigned char)t[sy[i].start + k]] < 0)
                all = false;
        if (all) {
            for (uint32_t k = 0; k < sy[i].len; k++)
                hr_sink_put(out, v->byte_tok[(unsigned char)t[sy[i].start + k]]);
        } else if (v->unk >= 0) {
            hr_sink_put(out, v->unk);
        }
    }
}


void hr_spm_fragment(const hr_vocab *v, hr_scratch *sc, const char *s, size_t n, bool prefix_space, hr_sink *out)
{
    /* escape: optional leading U+2581, every ' ' -> U+2581 */
    size_t need = (n + 1) * 3;
    if (n > HR_TOK_MAX_INPUT || !hr_grow(&sc->heap, &sc->heap_cap, need + 3 * (n + 1) * sizeof(spair), 1)) {
        sc->oom = true;
        return;
    }
    /* one allocation: escaped text, then the heap */
    char *t = sc->heap;
    size_t tn = 0;
    if (prefix_space) {
        memcpy(t, "\xE2\x96\x81", 3);
        tn = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(t + tn, "\xE2\x96\x81", 3);
            tn += 3;
        } else {
            t[tn++] = s[i];
        }
    }
    if (tn == 0)
        return;
    size_t hoff = (need + 15) & ~(size_t)15;
    spair *h = (spair *)(void *)((char *)sc->heap + hoff);
    if (!hr_grow(&sc->sym, &sc->sym_cap, tn * sizeof(ssym), 1)) {
        sc->oom = true;
        return;
    }
    /* Cut before each U+2581 that no token can join to the character
     * before it: merges never cross such a point, so the pieces are
     * independent and the heap stays small. */
    size_t from = 0, prev_cp_at = 0;
    for (size_t i = 0; i < tn;) {
        bool inc;
        size_t bad, k = hr_utf8_seq((const unsigned char *)t + i, tn - i, &inc, &bad);
        if (k == 0)
            k = 1;
        if (v->spm_cut && i > from && k == 3 && memcmp(t + i, "\xE2\x96\x81", 3) == 0 &&
            !spm_joins_space(v, t + prev_cp_at, i - prev_cp_at)) {
            spm_span(v, t + from, i - from, sc->sym, h, out);
            from = i;
        }
        prev_cp_at = i;
        i += k;
    }
    spm_span(v, t + from, tn - from, sc->sym, h, out);
}

/* ---- special tokens and the driver ---------------------------------------- */

/* Id of the longest allowed special token at s (n bytes left), or -1.
 * The first `trusted` bytes may hold control tokens; beyond them only
 * user-defined tokens that may come from raw text are allowed. */
static int32_t special_at(const hr_vocab *v, const char *s, size_t n, size_t trusted, size_t *len)
{
    unsigned c = (unsigned char)s[0];
    for (int32_t k = v->special_first[c]; k < v->special_first[c + 1]; k++) {
        int32_t id = v->special[k];
        size_t l = v->text_off[id + 1] - v->text_off[id];
        bool ok = l <= trusted || (v->type[id] == HR_TOKEN_USER_DEFINED && !v->no_raw[id]);
        if (l <= n && ok && memcmp(v->text + v->text_off[id], s, l) == 0) {
            *len = l;
            return id;
        }
    }
    return -1;
}

static void encode_plain(const hr_vocab *v, hr_scratch *sc, const char *s, size_t n, bool *prev_special,
                         hr_sink *out)
{
    if (v->kind == HR_VOCAB_SPM) {
        hr_spm_fragment(v, sc, s, n, v->add_space_prefix && *prev_special, out);
    } else if (v->spm_bpe) {
        hr_spm_bpe_fragment(v, sc, s, n, out);
    } else {
        hr_bpe_fragment(v, sc, s, n, out);
    }
    *prev_special = false;
}

/* Repairs invalid UTF-8 piece by piece between span boundaries, so that
 * the spans can be moved onto the repaired text (*spans_out, malloc'd). */
static char *sanitize_marked(const char *text, size_t len, const hr_span *sp, size_t nsp, size_t *out_len,
                             hr_span **spans_out)
{
    *spans_out = malloc((nsp ? nsp : 1) * sizeof **spans_out);
    char *res = NULL;
    size_t rn = 0;
    if (!*spans_out)
        return NULL;
    size_t pos = 0;
    for (size_t k = 0; k <= 2 * nsp; k++) {
        size_t end = k == 2 * nsp ? len : (k & 1) ? sp[k / 2].off + sp[k / 2].len : sp[k / 2].off;
        size_t fl = 0;
        char *piece = end > pos ? hr_utf8_sanitize(text + pos, end - pos, &fl) : NULL;
        if (end > pos && !piece)
            goto fail;
        char *nr = realloc(res, rn + fl + 1);
        if (!nr) {
            free(piece);
            goto fail;
        }
        res = nr;
        if (fl)
            memcpy(res + rn, piece, fl);
        free(piece);
        if (k < 2 * nsp) {
            if (k & 1)
                (*spans_out)[k / 2].len = rn + fl - (*spans_out)[k / 2].off;
            else
                (*spans_out)[k / 2].off = rn + fl;
        }
        rn += fl;
        pos = end;
    }
    *out_len = rn;
    return res;
fail:
    free(res);
    free(*spans_out);
    *spans_out = NULL;
    return NULL;
}

static hr_status encode(const hr_vocab *v, const char *text, size_t len, bool add_special, bool parse_special,
                        const hr_span *plain, size_t n_plain, int32_t *out, size_t cap, size_t *n_out, hr_err *err)
{
    if (n_out)
        *n_out = 0;
    if (!v || (!text && len) || (!out && cap) || !n_out || (n_plain && !plain))
        return hr_err_set(err, HR_ERR_INVALID, "hr_tok_encode: bad arguments");
    if (len > HR_TOK_MAX_INPUT)
        return hr_err_set(err, HR_ERR_LIMIT, "text of %zu bytes exceeds the tokenizer's limit of %zu bytes", len,
                          HR_TOK_MAX_INPUT);
    for (size_t k = 0; k < n_plain; k++)
        if (plain[k].off > len || plain[k].len > len - plain[k].off ||
            (k && plain[k].off < plain[k - 1].off + plain[k - 1].len))
            return hr_err_set(err, HR_ERR_INVALID, "hr_tok_encode_marked: spans must be sorted, disjoint and inside the text");
    char *fixed = NULL;
    hr_span *moved = NULL;
    if (len && !hr_utf8_valid(text, len)) {
        size_t fl;
        fixed = sanitize_marked(text, len, plain, n_plain, &fl, &moved);
        if (!fixed)
            return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
        text = fixed;
        len = fl;
        plain = moved;
    }
    hr_sink sink = {out, cap, 0};
    hr_scratch sc = {0};
    hr_status st = HR_OK;
    if (v->kind == HR_VOCAB_BPE && !v->spm_bpe) {
        sc.match_data = pcre2_match_data_create(16, NULL);
        sc.mctx = pcre2_match_context_create(NULL);
        sc.jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
        if (!sc.match_data || !sc.mctx || !sc.jit_stack) {
            st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
            goto done;
        }
        pcre2_jit_stack_assign(sc.mctx, NULL, sc.jit_stack);
    }
    if (add_special && v->add_bos && v->bos >= 0)
        hr_sink_put(&sink, v->bos);
    bool prev_special = true;
    size_t start = 0, si = 0;
    for (size_t i = 0; i < len && v->n_special > 0;) {
        /* bytes from i on that may hold control tokens */
        size_t trusted = 0;
        if (parse_special) {
            while (si < n_plain && plain[si].off + plain[si].len <= i)
                si++;
            trusted = si == n_plain ? len - i : plain[si].off > i ? plain[si].off - i : 0;
        }
        size_t l;
        int32_t id = special_at(v, text + i, len - i, trusted, &l);
        if (id < 0) {
            i++;
            continue;
        }
        if (i > start)
            encode_plain(v, &sc, text + start, i - start, &prev_special, &sink);
        hr_sink_put(&sink, id);
        prev_special = true;
        i += l;
        start = i;
    }
    if (start < len)
        encode_plain(v, &sc, text + start, len - start, &prev_special, &sink);
    if (add_special && v->add_eos && v->eos >= 0)
        hr_sink_put(&sink, v->eos);
    if (sc.oom) {
        st = hr_err_set(err, HR_ERR_NOMEM, "out of memory while tokenizing");
        goto done;
    }
    *n_out = sink.n;
    if (sink.n > cap)
        st = hr_err_set(err, HR_ERR_LIMIT, "%zu tokens do not fit in a buffer of %zu", sink.n, cap);
done:
    pcre2_match_data_free(sc.match_data);
    pcre2_match_context_free(sc.mctx);
    pcre2_jit_stack_free(sc.jit_stack);
    free(sc.sym);
    free(sc.heap);
    free(fixed);
    free(moved);
    return st;
}

hr_status hr_tok_encode(const hr_vocab *v, const char *text, size_t len, bool add_special, bool parse_special,
                        int32_t *out, size_t cap, size_t *n_out, hr_err *err)
{
    return encode(v, text, len, add_special, parse_special, NULL, 0, out, cap, n_out, err);
}

hr_status hr_tok_encode_marked(const hr_vocab *v, const char *text, size_t len, bool add_special,
                               const hr_span *plain, size_t n_plain, int32_t *out, size_t cap, size_t *n_out,
                               hr_err *err)
{
    return encode(v, text, len, add_special, true, plain, n_plain, out, cap, n_out, err);
}
