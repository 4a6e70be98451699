/* vocab.c - loads tokenizer.ggml.* metadata into an immutable hr_vocab:
 * token texts and their decoded bytes, hash maps for text -> id and for
 * merge pairs -> rank, special ids and the special-token table. */
#include "tok/tok_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- hashing ---------------------------------------------------------- */

static inline uint64_t rd64(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

uint64_t hr_tok_hash(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0xFF51AFD7ED558CCDull);
    while (n >= 8) {
        h = (h ^ rd64(p)) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++)
        t |= (uint64_t)p[i] << (8 * i);
    h = (h ^ t) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    h *= 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    return h;
}

int32_t hr_strmap_get(const hr_strmap *m, const hr_vocab *v, const char *arena, const uint32_t *off,
                      const char *s, size_t n)
{
    (void)v;
    if (!m->slots)
        return -1;
    uint32_t i = (uint32_t)hr_tok_hash(s, n) & m->mask;
    for (;;) {
        int32_t id = m->slots[i];
        if (id < 0)
            return -1;
        size_t len = off[id + 1] - off[id];
        if (len == n && memcmp(arena + off[id], s, n) == 0)
            return id;
        i = (i + 1) & m->mask;
    }
}

static uint32_t pow2_at_least(uint64_t x)
{
    uint32_t p = 16;
    while (p < x)
        p <<= 1;
    return p;
}

/* Inserts id under its text; an equal text already there is replaced
 * (the last token with a given text wins). */
static void strmap_put(hr_strmap *m, const char *arena, const uint32_t *off, int32_t id)
{
    const char *s = arena + off[id];
    size_t n = off[id + 1] - off[id];
    uint32_t i = (uint32_t)hr_tok_hash(s, n) & m->mask;
    for (;;) {
        int32_t cur = m->slots[i];
        if (cur < 0) {
            m->slots[i] = id;
            return;
        }
        size_t len = off[cur + 1] - off[cur];
        if (len == n && memcmp(arena + off[cur], s, n) == 0) {
            m->slots[i] = id;
            return;
        }
        i = (i + 1) & m->mask;
    }
}

static bool strmap_init(hr_strmap *m, uint64_t n)
{
    uint32_t cap = pow2_at_least(n * 2 + 1);
    m->slots = malloc((size_t)cap * sizeof *m->slots);
    if (!m->slots)
        return false;
    memset(m->slots, 0xff, (size_t)cap * sizeof *m->slots);
    m->mask = cap - 1;
    return true;
}

/* ---- byte-level BPE's byte <-> code point mapping ----------------------- */

/* The printable Latin-1 bytes stand for themselves; the other 68 bytes are
 * numbered upward from U+0100 in byte order. */
static uint32_t byte_to_cp(unsigned b)
{
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
        return b;
    unsigned k = 0;
    for (unsigned c = 0; c < b; c++)
        if (!((c >= 0x21 && c <= 0x7E) || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE)))
            k++;
    return 0x100 + k;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one code point of valid-looking UTF-8; returns its length or 0. */
static size_t get_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
    bool inc;
    size_t bad;
    size_t k = hr_utf8_seq(s, n, &inc, &bad);
    if (k == 0)
        return 0;
    uint32_t c;
    switch (k) {
    case 1: c = s[0]; break;
    case 2: c = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F); break;
    case 3: c = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F); break;
    default:
        c = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
            ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
    *cp = c;
    return k;
}

/* ---- loading ------------------------------------------------------------ */

static int32_t meta_id(const hr_gguf *g, const char *key, int32_t n, int32_t dflt)
{
    int64_t x;
    if (!hr_gguf_get_i64(g, key, &x))
        return dflt;
    if (x < 0 || x >= n)
        return -1; /* e.g. 0xFFFFFFFF: "none" */
    return (int32_t)x;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* "<0xNN>" -> NN, else -1 */
static int parse_byte_token(const char *s, size_t n)
{
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
        return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    if (hi < 0 || lo < 0)
        return -1;
    return hi * 16 + lo;
}

typedef struct {
    uint32_t first; /* first byte */
    uint32_t len;
    int32_t id;
} special_key;

/* By first byte, then longest first, then id. */
static int special_cmp(const void *a, const void *b)
{
    const special_key *x = a, *y = b;
    if (x->first != y->first)
        return x->first < y->first ? -1 : 1;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

static const char *const k_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "<|EOT|>", "<|end_of_turn|>", "<｜end▁of▁sentence｜>", "<|return|>", "<|call|>",
};

static const char *const k_eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|EOT|>", "<EOT>", "<|end_of_turn|>",
};

static int32_t find_control(const hr_vocab *v, const char *s)
{
    int32_t id = hr_vocab_find_(v, s, strlen(s));
    if (id >= 0 && (v->type[id] == HR_TOKEN_CONTROL || v->type[id] == HR_TOKEN_USER_DEFINED))
        return id;
    return -1;
}

static hr_status load_merges(hr_vocab *v, const hr_gguf *g, hr_err *err)
{
    const hr_gguf_value *m = hr_gguf_get_arr(g, "tokenizer.ggml.merges", HR_GGUF_STRING);
    if (!m)
        return hr_err_set(err, HR_ERR_FORMAT, "tokenizer.ggml.merges missing (needed by a gpt2 tokenizer)");
    if (m->v.arr.n > (uint64_t)INT32_MAX / 4)
        return hr_err_set(err, HR_ERR_FORMAT, "tokenizer.ggml.merges has too many entries");
    uint32_t cap = pow2_at_least(m->v.arr.n * 2 + 1);
    v->merges = malloc((size_t)cap * sizeof *v->merges);
    if (!v->merges)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory loading merges");
    for (uint32_t i = 0; i < cap; i++)
        v->merges[i].key = UINT64_MAX;
    v->merge_mask = cap - 1;
    char buf[1024];
    for (uint64_t r = 0; r < m->v.arr.n; r++) {
        hr_gguf_str s = m->v.arr.items[r].v.s;
        if (s.len < 3 || s.len > sizeof buf)
            continue;
        const char *sp = memchr(s.ptr + 1, ' ', s.len - 1);
        if (!sp)
            continue;
        size_t la = (size_t)(sp - s.ptr), lb = s.len - la - 1;
        int32_t a = hr_vocab_find_(v, s.ptr, la);
        int32_t b = hr_vocab_find_(v, sp + 1, lb);
        memcpy(buf, s.ptr, la);
        memcpy(buf + la, sp + 1, lb);
        int32_t ab = hr_vocab_find_(v, buf, la + lb);
        if (a < 0 || b < 0 || ab < 0)
            continue;
        uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
        uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & v->merge_mask;
        while (v->merges[i].key != UINT64_MAX && v->merges[i].key != key)
            i = (i + 1) & v->merge_mask;
        if (v->merges[i].key == key)
            continue; /* a repeated pair keeps its first (best) rank */
        v->merges[i].key = key;
        v->merges[i].rank = (int32_t)r;
        v->merges[i].result = ab;
    }
    return HR_OK;
}

/* Finds the characters that tokens put before an inner U+2581 (for llama
 * vocabularies only U+2581 itself, in runs of spaces). */
static void spm_space_joins(hr_vocab *v)
{
    v->spm_cut = true;
    v->n_space_join = 0;
    for (int32_t id = 0; id < v->n && v->spm_cut; id++) {
        if (v->type[id] != HR_TOKEN_NORMAL && v->type[id] != HR_TOKEN_USER_DEFINED)
            continue;
        size_t len;
        const unsigned char *t = (const unsigned char *)hr_tok_text_(v, id, &len);
        size_t prev = 0;
        for (size_t i = 0; i < len;) {
            bool inc;
            size_t bad, k = hr_utf8_seq(t + i, len - i, &inc, &bad);
            if (k == 0) {
                v->spm_cut = false; /* odd token text: do not cut at all */
                break;
            }
            if (i > 0 && k == 3 && t[i] == 0xE2 && t[i + 1] == 0x96 && t[i + 2] == 0x81) {
                uint32_t cp = 0;
                for (size_t j = prev; j < i; j++)
                    cp = (cp << 8) | t[j];
                bool have = false;
                for (int j = 0; j < v->n_space_join; j++)
                    have |= v->space_join[j] == cp;
                if (!have) {
                    if (v->n_space_join == (int)(sizeof v->space_join / sizeof v->space_join[0])) {
                        v->spm_cut = false;
                        break;
                    }
                    v->space_join[v->n_space_join++] = cp;
                }
            }
            prev = i;
            i += k;
        }
    }
}

static hr_status build_decoded(hr_vocab *v)
{
    /* Decoded text is never longer than the raw text (byte-level chars take
     * 1-2 bytes for one byte; U+2581 takes 3 for one space; <0xNN> 6 for 1). */
    size_t total = v->text_off[v->n];
    v->dec = malloc(total ? total : 1);
    v->dec_off = malloc(((size_t)v->n + 1) * sizeof *v->dec_off);
    if (!v->dec || !v->dec_off)
        return HR_ERR_NOMEM;
    uint32_t cp_to_byte[0x144];
    memset(cp_to_byte, 0xff, sizeof cp_to_byte);
    for (unsigned b = 0; b < 256; b++)
        cp_to_byte[byte_to_cp(b)] = b;
    size_t o = 0;
    for (int32_t id = 0; id < v->n; id++) {
        v->dec_off[id] = (uint32_t)o;
        size_t len;
        const unsigned char *t = (const unsigned char *)hr_tok_text_(v, id, &len);
        int ty = v->type[id];
        bool plain = ty == HR_TOKEN_NORMAL || ty == HR_TOKEN_BYTE;
        if (!plain) {
            memcpy(v->dec + o, t, len);
            o += len;
            continue;
        }
        if (v->kind == HR_VOCAB_SPM || v->spm_bpe) {
            int bv = ty == HR_TOKEN_BYTE ? parse_byte_token((const char *)t, len) : -1;
            if (bv >= 0) {
                v->dec[o++] = (char)bv;
                continue;
            }
            for (size_t i = 0; i < len;) {
                if (i + 3 <= len && t[i] == 0xE2 && t[i + 1] == 0x96 && t[i + 2] == 0x81) {
                    v->dec[o++] = ' ';
                    i += 3;
                } else {
                    v->dec[o++] = (char)t[i++];
                }
            }
        } else {
            for (size_t i = 0; i < len;) {
                uint32_t cp;
                size_t k = get_utf8(t + i, len - i, &cp);
                if (k == 0) {
                    v->dec[o++] = (char)t[i++];
                } else if (cp < 0x144 && cp_to_byte[cp] != 0xffffffffu) {
                    v->dec[o++] = (char)cp_to_byte[cp];
                    i += k;
                } else {
                    memcpy(v->dec + o, t + i, k);
                    o += k;
                    i += k;
                }
            }
        }
    }
    v->dec_off[v->n] = (uint32_t)o;
    return HR_OK;
}

static bool type_is_integer(hr_gguf_type t)
{
    return t == HR_GGUF_U8 || t == HR_GGUF_I8 || t == HR_GGUF_U16 || t == HR_GGUF_I16 || t == HR_GGUF_U32 ||
           t == HR_GGUF_I32 || t == HR_GGUF_U64 || t == HR_GGUF_I64;
}

hr_status hr_vocab_load(const hr_gguf *g, hr_vocab **out, hr_err *err)
{
    *out = NULL;
    hr_gguf_str model;
    if (!hr_gguf_get_str(g, "tokenizer.ggml.model", &model))
        return hr_err_set(err, HR_ERR_FORMAT, "tokenizer.ggml.model missing: the file carries no tokenizer");
    hr_vocab_kind kind;
    bool spm_bpe = false;
    if (hr_gguf_str_eq(model, "llama"))
        kind = HR_VOCAB_SPM;
    else if (hr_gguf_str_eq(model, "gpt2"))
        kind = HR_VOCAB_BPE;
    else if (hr_gguf_str_eq(model, "gemma4")) {
        kind = HR_VOCAB_BPE; /* merges over SentencePiece pieces */
        spm_bpe = true;
    } else {
        char name[64];
        return hr_err_set(err, HR_ERR_UNSUPPORTED,
                          "tokenizer model '%s' is not supported (llama, gpt2, gemma4 are)",
                          hr_gguf_str_copy(model, name, sizeof name));
    }
    const hr_gguf_value *toks = hr_gguf_get_arr(g, "tokenizer.ggml.tokens", HR_GGUF_STRING);
    if (!toks || toks->v.arr.n == 0)
        return hr_err_set(err, HR_ERR_FORMAT, "tokenizer.ggml.tokens missing or empty");
    if (toks->v.arr.n > (uint64_t)INT32_MAX / 4)
        return hr_err_set(err, HR_ERR_FORMAT, "tokenizer.ggml.tokens has too many entries");
    int32_t n = (int32_t)toks->v.arr.n;
    uint64_t total = 0;
    for (int32_t i = 0; i < n; i++)
        total += toks->v.arr.items[i].v.s.len;
    if (total >= UINT32_MAX / 2)
        return hr_err_set(err, HR_ERR_FORMAT, "token texts too large");
    /* Token types are small integers; a float array would reach a
     * float-to-int conversion that is undefined for NaN and huge values. */
    const hr_gguf_value *types = hr_gguf_get_arr(g, "tokenizer.ggml.token_type", HR_GGUF_ARRAY);
    if (types && !type_is_integer(types->v.arr.elem))
        return hr_err_set(err, HR_ERR_FORMAT, "tokenizer.ggml.token_type must be an array of integers, not %s",
                          hr_gguf_type_name(types->v.arr.elem));

    hr_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    v->kind = kind;
    v->spm_bpe = spm_bpe;
    v->n = n;
    v->text = malloc(total ? total : 1);
    v->text_off = malloc(((size_t)n + 1) * sizeof *v->text_off);
    v->type = malloc((size_t)n);
    v->eog = calloc((size_t)n, 1);
    if (!v->text || !v->text_off || !v->type || !v->eog)
        goto nomem;
    uint32_t o = 0;
    for (int32_t i = 0; i < n; i++) {
        hr_gguf_str s = toks->v.arr.items[i].v.s;
        v->text_off[i] = o;
        if (s.len)
            memcpy(v->text + o, s.ptr, s.len);
        o += (uint32_t)s.len;
    }
    v->text_off[n] = o;

    if (types && types->v.arr.n != (uint64_t)n)
        types = NULL;
    for (int32_t i = 0; i < n; i++) {
        int64_t t = types ? hr_gguf_arr_i64(types, (uint64_t)i) : HR_TOKEN_NORMAL;
        v->type[i] = (int8_t)((t >= HR_TOKEN_NORMAL && t <= HR_TOKEN_BYTE) ? t : HR_TOKEN_NORMAL);
        if (v->text_off[i + 1] == v->text_off[i] && v->type[i] == HR_TOKEN_NORMAL)
            v->type[i] = HR_TOKEN_UNUSED; /* an empty normal token can never be produced */
    }
    if (kind == HR_VOCAB_SPM) {
        v->score = calloc((size_t)n, sizeof *v->score);
        if (!v->score)
            goto nomem;
        const hr_gguf_value *sc = hr_gguf_get_arr(g, "tokenizer.ggml.scores", HR_GGUF_ARRAY);
        if (sc && sc->v.arr.n == (uint64_t)n && sc->v.arr.elem != HR_GGUF_STRING &&
            sc->v.arr.elem != HR_GGUF_ARRAY)
            for (int32_t i = 0; i < n; i++)
                v->score[i] = (float)hr_gguf_arr_f64(sc, (uint64_t)i);
    }

    if (!strmap_init(&v->by_text, (uint64_t)n))
        goto nomem;
    for (int32_t i = 0; i < n; i++)
        strmap_put(&v->by_text, v->text, v->text_off, i);
    if (build_decoded(v) != HR_OK)
        goto nomem;

    for (int b = 0; b < 256; b++)
        v->byte_tok[b] = -1;
    if (kind == HR_VOCAB_SPM || spm_bpe) {
        if (kind == HR_VOCAB_SPM)
            spm_space_joins(v);
        for (int32_t i = 0; i < n; i++) {
            size_t len;
            const char *t = hr_tok_text_(v, i, &len);
            int bv = v->type[i] == HR_TOKEN_BYTE ? parse_byte_token(t, len) : -1;
            if (bv >= 0 && v->byte_tok[bv] < 0)
                v->byte_tok[bv] = i;
        }
    }
    if (kind == HR_VOCAB_BPE) {
        if (!strmap_init(&v->by_dec, (uint64_t)n))
            goto nomem;
        for (int32_t i = 0; i < n; i++)
            if (v->type[i] == HR_TOKEN_NORMAL || v->type[i] == HR_TOKEN_BYTE)
                strmap_put(&v->by_dec, v->dec, v->dec_off, i);
        for (unsigned b = 0; b < 256 && !spm_bpe; b++) {
            char u[4];
            size_t k = put_utf8(u, byte_to_cp(b));
            v->byte_tok[b] = hr_vocab_find_(v, u, k);
        }
        hr_status st = load_merges(v, g, err);
        if (st != HR_OK) {
            hr_vocab_free(v);
            return st;
        }
    }

    /* Special-token table. */
    v->special = malloc((size_t)n * sizeof *v->special);
    if (!v->special)
        goto nomem;
    for (int32_t i = 0; i < n; i++) {
        int t = v->type[i];
        if ((t == HR_TOKEN_CONTROL || t == HR_TOKEN_USER_DEFINED || t == HR_TOKEN_UNKNOWN) &&
            v->text_off[i + 1] > v->text_off[i])
            v->special[v->n_special++] = i;
    }
    if (v->n_special > 0) {
        special_key *keys = malloc((size_t)v->n_special * sizeof *keys);
        if (!keys)
            goto nomem;
        for (int32_t k = 0; k < v->n_special; k++) {
            int32_t id = v->special[k];
            keys[k].first = (unsigned char)v->text[v->text_off[id]];
            keys[k].len = v->text_off[id + 1] - v->text_off[id];
            keys[k].id = id;
        }
        qsort(keys, (size_t)v->n_special, sizeof *keys, special_cmp);
        for (int32_t k = 0; k < v->n_special; k++)
            v->special[k] = keys[k].id;
        free(keys);
    }
    for (int c = 0, k = 0; c <= 256; c++) {
        while (k < v->n_special && (unsigned char)v->text[v->text_off[v->special[k]]] < c)
            k++;
        v->special_first[c] = k;
    }

    /* Special ids and flags. */
    bool spm = kind == HR_VOCAB_SPM;
    v->bos = meta_id(g, "tokenizer.ggml.bos_token_id", n, spm && n > 1 ? 1 : -1);
    v->eos = meta_id(g, "tokenizer.ggml.eos_token_id", n, spm && n > 2 ? 2 : -1);
    v->unk = meta_id(g, "tokenizer.ggml.unknown_token_id", n, spm ? 0 : -1);
    v->pad = meta_id(g, "tokenizer.ggml.padding_token_id", n, -1);
    v->eot = meta_id(g, "tokenizer.ggml.eot_token_id", n, -2);
    v->eom = meta_id(g, "tokenizer.ggml.eom_token_id", n, -2);
    if (v->eot == -2) {
        v->eot = -1;
        for (size_t i = 0; i < sizeof k_eot_texts / sizeof k_eot_texts[0] && v->eot < 0; i++)
            v->eot = find_control(v, k_eot_texts[i]);
    }
    if (v->eom == -2)
        v->eom = find_control(v, "<|eom_id|>");
    /* Harmony (gpt-oss): <|end|> closes one message (the analysis channel)
     * and the reply goes on; <|return|> and <|call|> end it. */
    int32_t harmony_end = -1;
    if (find_control(v, "<|return|>") >= 0 && find_control(v, "<|call|>") >= 0)
        harmony_end = find_control(v, "<|end|>");
    if (harmony_end >= 0 && v->eot == harmony_end)
        v->eot = -1;
    if (harmony_end >= 0) {
        static const char *const k_shown[] = {"<|start|>", "<|channel|>", "<|message|>", "<|end|>",
                                              "<|constrain|>"};
        for (size_t i = 0; i < sizeof k_shown / sizeof k_shown[0]; i++) {
            int32_t id = find_control(v, k_shown[i]);
            if (id >= 0)
                v->shown[v->n_shown++] = id;
        }
    }
    for (size_t i = 0; i < sizeof k_eog_texts / sizeof k_eog_texts[0]; i++) {
        int32_t id = find_control(v, k_eog_texts[i]);
        if (id >= 0 && id != harmony_end)
            v->eog[id] = 1;
    }
    if (v->eos >= 0)
        v->eog[v->eos] = 1;
    if (v->eot >= 0)
        v->eog[v->eot] = 1;
    if (v->eom >= 0)
        v->eog[v->eom] = 1;

    v->no_raw = calloc((size_t)n, 1);
    if (!v->no_raw)
        goto nomem;
    /* SentencePiece's marker names are sequence markers only in a
     * vocabulary whose BOS is `<s>` (Llama 2, Mistral, Phi-3). Gemma names
     * its markers <bos> / <eos>; its `<s>` and `</s>` are ordinary HTML-tag
     * pieces that Hugging Face matches in any text. */
    static const char *const k_marker_texts[] = {"<s>", "</s>", "<unk>", "<pad>"};
    size_t bl = 0;
    const char *bt = v->bos >= 0 ? hr_tok_text_(v, v->bos, &bl) : NULL;
    bool spm_markers = bt && bl == 3 && !memcmp(bt, "<s>", 3);
    for (int32_t i = 0; i < n; i++) {
        if (v->type[i] != HR_TOKEN_USER_DEFINED)
            continue;
        bool marker = false;
        size_t tl = v->text_off[i + 1] - v->text_off[i];
        for (size_t k = 0; spm_markers && k < sizeof k_marker_texts / sizeof k_marker_texts[0]; k++)
            if (tl == strlen(k_marker_texts[k]) && !memcmp(v->text + v->text_off[i], k_marker_texts[k], tl))
                marker = true;
        v->no_raw[i] = marker || v->eog[i] || i == v->bos || i == v->eos || i == v->eot || i == v->eom ||
                       i == v->pad || i == v->unk;
    }

    v->add_space_prefix = spm;
    hr_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix);
    if (!spm)
        v->add_space_prefix = false;

    if (!spm && !spm_bpe) {
        hr_gguf_str pre = {"default", 7};
        hr_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
        char pname[128];
        hr_gguf_str_copy(pre, pname, sizeof pname);
        hr_status st = hr_pretok_init(v, pname, err);
        if (st != HR_OK) {
            hr_vocab_free(v);
            return st;
        }
    }
    v->add_bos = spm || (!spm && v->pre == HR_PRE_LLAMA3);
    v->add_eos = false;
    hr_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos);
    hr_gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos);
    *out = v;
    return HR_OK;

nomem:
    hr_vocab_free(v);
    return hr_err_set(err, HR_ERR_NOMEM, "out of memory loading the vocabulary");
}

void hr_vocab_free(hr_vocab *v)
{
    if (!v)
        return;
    hr_pretok_free(v);
    free(v->text);
    free(v->text_off);
    free(v->dec);
    free(v->dec_off);
    free(v->type);
    free(v->score);
    free(v->by_text.slots);
    free(v->by_dec.slots);
    free(v->merges);
    free(v->special);
    free(v->eog);
    free(v->no_raw);
    free(v);
}

/* ---- accessors ---------------------------------------------------------- */

hr_vocab_kind hr_vocab_kind_of(const hr_vocab *v) { return v->kind; }
int32_t hr_vocab_n_tokens(const hr_vocab *v) { return v->n; }

const char *hr_vocab_token_text(const hr_vocab *v, int32_t id, size_t *len)
{
    if (id < 0 || id >= v->n) {
        *len = 0;
        return "";
    }
    return hr_tok_text_(v, id, len);
}

int hr_vocab_token_type(const hr_vocab *v, int32_t id)
{
    return (id < 0 || id >= v->n) ? 0 : v->type[id];
}

int32_t hr_vocab_bos(const hr_vocab *v) { return v->bos; }
int32_t hr_vocab_eos(const hr_vocab *v) { return v->eos; }
int32_t hr_vocab_eot(const hr_vocab *v) { return v->eot; }
int32_t hr_vocab_pad(const hr_vocab *v) { return v->pad; }
int32_t hr_vocab_unk(const hr_vocab *v) { return v->unk; }
bool hr_vocab_add_bos(const hr_vocab *v) { return v->add_bos && v->bos >= 0; }
bool hr_vocab_add_eos(const hr_vocab *v) { return v->add_eos && v->eos >= 0; }

bool hr_vocab_is_eog(const hr_vocab *v, int32_t id)
{
    return id >= 0 && id < v->n && v->eog[id];
}

int32_t hr_vocab_find(const hr_vocab *v, const char *text, size_t len)
{
    return hr_vocab_find_(v, text, len);
}
