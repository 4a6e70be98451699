/* decode.c - ids -> text: single pieces, whole sequences and the
 * incremental (streaming) detokenizer. */
#include <stdlib.h>
#include <string.h>

#include "tok/tok_internal.h"

static bool is_content(int type)
{
    return type == HR_TOKEN_NORMAL || type == HR_TOKEN_BYTE || type == HR_TOKEN_USER_DEFINED;
}

/* The bytes a token decodes to (pointer into the vocab; not copied). */
static const char *piece_of(const hr_vocab *v, int32_t id, bool render_special, size_t *len)
{
    *len = 0;
    if (!v || id < 0 || id >= v->n)
        return "";
    int t = v->type[id];
    if (t == HR_TOKEN_NORMAL || t == HR_TOKEN_BYTE) {
        *len = v->dec_off[id + 1] - v->dec_off[id];
        return v->dec + v->dec_off[id];
    }
    if (t == HR_TOKEN_USER_DEFINED || render_special)
        return hr_tok_text_(v, id, len);
    for (int i = 0; i < v->n_shown; i++)
        if (v->shown[i] == id)
            return hr_tok_text_(v, id, len);
    return "";
}

size_t hr_tok_piece(const hr_vocab *v, int32_t id, bool render_special, char *buf, size_t cap)
{
    size_t n;
    const char *p = piece_of(v, id, render_special, &n);
    if (n <= cap && n)
        memcpy(buf, p, n);
    return n;
}

/* Converts pending bytes to valid UTF-8. Stops before an incomplete final
 * sequence unless flushing (then it becomes U+FFFD, as invalid bytes do).
 * Writes to o when o is not NULL; returns the output length and the number
 * of input bytes consumed in *used. */
static size_t repair(const char *in, size_t n, bool flush, char *o, size_t *used)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t i = 0, j = 0;
    while (i < n) {
        bool inc;
        size_t bad, k = hr_utf8_seq(s + i, n - i, &inc, &bad);
        if (k) {
            if (o)
                memcpy(o + j, s + i, k);
            j += k;
            i += k;
            continue;
        }
        if (inc && !flush)
            break;
        if (o)
            memcpy(o + j, "\xEF\xBF\xBD", 3);
        j += 3;
        i += bad ? bad : 1;
    }
    *used = i;
    return j;
}

struct hr_detok {
    const hr_vocab *v;
    bool render_special;
    bool strip_space; /* SentencePiece: drop the first content piece's leading space */
    char *pend;
    size_t n, cap;
};

hr_status hr_detok_new(const hr_vocab *v, bool render_special, hr_detok **out, hr_err *err)
{
    *out = NULL;
    if (!v)
        return hr_err_set(err, HR_ERR_INVALID, "hr_detok_new: no vocabulary");
    hr_detok *d = calloc(1, sizeof *d);
    if (!d)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    d->v = v;
    d->render_special = render_special;
    d->strip_space = v->kind == HR_VOCAB_SPM && v->add_space_prefix;
    *out = d;
    return HR_OK;
}

void hr_detok_continue(hr_detok *d) { d->strip_space = false; }

void hr_detok_free(hr_detok *d)
{
    if (!d)
        return;
    free(d->pend);
    free(d);
}

static bool detok_append(hr_detok *d, int32_t id)
{
    size_t n;
    const char *p = piece_of(d->v, id, d->render_special, &n);
    if (n && d->strip_space && id >= 0 && id < d->v->n && is_content(d->v->type[id])) {
        if (p[0] == ' ') {
            p++;
            n--;
        }
        d->strip_space = false;
    }
    if (!n)
        return true;
    if (d->n + n > d->cap) {
        size_t c = d->cap ? d->cap : 64;
        while (c < d->n + n)
            c *= 2;
        char *q = realloc(d->pend, c);
        if (!q)
            return false;
        d->pend = q;
        d->cap = c;
    }
    memcpy(d->pend + d->n, p, n);
    d->n += n;
    return true;
}

static size_t detok_emit(hr_detok *d, bool flush, char *buf, size_t cap)
{
    size_t used;
    size_t len = repair(d->pend, d->n, flush, NULL, &used);
    if (len >= cap || !buf)
        return len >= cap ? len : cap; /* too small: everything stays pending */
    repair(d->pend, d->n, flush, buf, &used);
    buf[len] = 0;
    if (used) {
        memmove(d->pend, d->pend + used, d->n - used);
        d->n -= used;
    }
    return len;
}

size_t hr_detok_push(hr_detok *d, int32_t id, char *buf, size_t cap)
{
    if (!d)
        return cap ? cap : 1;
    if (!detok_append(d, id))
        return SIZE_MAX; /* out of memory: >= any cap */
    return detok_emit(d, false, buf, cap);
}

size_t hr_detok_flush(hr_detok *d, char *buf, size_t cap)
{
    if (!d)
        return cap ? cap : 1;
    return detok_emit(d, true, buf, cap);
}

size_t hr_tok_decode(const hr_vocab *v, const int32_t *ids, size_t n, bool render_special, char *buf, size_t cap)
{
    hr_detok d = {v, render_special, v && v->kind == HR_VOCAB_SPM && v->add_space_prefix, NULL, 0, 0};
    if (!v)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!detok_append(&d, ids[i])) {
            free(d.pend);
            return SIZE_MAX;
        }
    size_t r = detok_emit(&d, true, buf, cap);
    free(d.pend);
    return r;
}
