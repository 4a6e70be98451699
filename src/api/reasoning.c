/* reasoning.c - the reasoning splitters (see reasoning.h).
 *
 * Both are byte-driven state machines. Plain text runs are passed on in
 * one piece; a '<' starts holding bytes until they form a marker (the
 * state changes, the marker is dropped) or cannot (the held bytes are
 * text, the first one is let go and the rest scanned again). */
#include "api/reasoning.h"

#include <string.h>

#include "api/openai.h"

hr_reason_kind hr_reason_kind_for(const hr_vocab *v, const char *tmpl_src)
{
    static const char *const k_harmony[] = {"<|start|>", "<|channel|>", "<|message|>", "<|end|>"};
    if (v) {
        bool all = true;
        for (size_t i = 0; i < sizeof k_harmony / sizeof k_harmony[0]; i++) {
            int32_t id = hr_vocab_find(v, k_harmony[i], strlen(k_harmony[i]));
            all = all && id >= 0 && hr_vocab_token_type(v, id) == HR_TOKEN_CONTROL;
        }
        if (all)
            return HR_REASON_HARMONY;
    }
    if ((tmpl_src && strstr(tmpl_src, "<think>")) || (v && hr_vocab_find(v, "<think>", 7) >= 0))
        return HR_REASON_THINK;
    return HR_REASON_OFF;
}


void hr_think_init(hr_think *t, bool start_in_think)
{
    memset(t, 0, sizeof *t);
    t->in_think = start_in_think;
}

static bool think_emit(hr_think *t, const char *s, size_t n, struct hr_api_buf *content, struct hr_api_buf *reasoning)
{
    if (t->in_think)
        return hr_api_buf_put(reasoning, s, n);
    if (t->after_close) {
        while (n && (*s == '\n' || *s == '\r')) {
            s++;
            n--;
        }
        if (!n)
            return true;
        t->after_close = false;
    }
    return hr_api_buf_put(content, s, n);
}

bool hr_think_feed(hr_think *t, const char *s, size_t n, struct hr_api_buf *content, struct hr_api_buf *reasoning)
{
    while (n) {
        const char *mark = t->in_think ? "</think>" : "<think>";
        size_t ml = strlen(mark);
        /* continue a held partial marker byte by byte */
        if (t->n_hold) {
            size_t k = 0;
            while (k < n && t->n_hold < ml && s[k] == mark[t->n_hold]) {
                t->hold[t->n_hold++] = s[k];
                k++;
            }
            if (t->n_hold == ml) {
                t->n_hold = 0;
                t->in_think = !t->in_think;
                t->after_close = !t->in_think;
                s += k;
                n -= k;
                continue;
            }
            if (k == n)
                return true; /* still a prefix; wait for more */
            /* mismatch: the held bytes were text */
            size_t h = t->n_hold;
            t->n_hold = 0;
            if (!think_emit(t, t->hold, h, content, reasoning))
                return false;
            s += k;
            n -= k;
            continue;
        }
        const char *lt = memchr(s, '<', n);
        if (!lt)
            return think_emit(t, s, n, content, reasoning);
        if (lt > s && !think_emit(t, s, (size_t)(lt - s), content, reasoning))
            return false;
        n -= (size_t)(lt - s);
        s = lt;
        t->hold[0] = '<';
        t->n_hold = 1;
        s++;
        n--;
    }
    return true;
}

bool hr_think_flush(hr_think *t, struct hr_api_buf *content, struct hr_api_buf *reasoning)
{
    size_t h = t->n_hold;
    t->n_hold = 0;
    return h ? think_emit(t, t->hold, h, content, reasoning) : true;
}


/* ---- harmony ------------------------------------------------------------ */

enum { H_OUT = 0, H_HEAD, H_BODY };
enum { M_START, M_CHANNEL, M_MESSAGE, M_END, M_RETURN, M_CALL, M_CONSTRAIN, M_COUNT };
static const char *const k_marks[M_COUNT] = {
    "<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>",
};

static bool put(hr_reason *r, struct hr_api_buf *b, const char *s, size_t n)
{
    return r->discard || n == 0 || hr_api_buf_put(b, s, n);
}

/* Leaves a header: its text was not a header after all (content). */
static bool give_back_head(hr_reason *r, struct hr_api_buf *content)
{
    size_t n = r->n_head;
    r->n_head = 0;
    return put(r, content, r->head, n);
}

static bool h_text(hr_reason *r, const char *s, size_t n, struct hr_api_buf *content, struct hr_api_buf *reasoning)
{
    if (n == 0)
        return true;
    if (r->state == H_BODY)
        return put(r, r->to_reasoning ? reasoning : content, s, n);
    if (r->state == H_OUT)
        return put(r, content, s, n);
    /* header: the channel name runs up to a space ("commentary to=...") */
    for (size_t i = 0; i < n && r->in_channel; i++) {
        if (s[i] == ' ' || s[i] == '\n') {
            if (r->n_chan)
                r->in_channel = false;
        } else if (r->n_chan < sizeof r->chan) {
            r->chan[r->n_chan++] = s[i];
        }
    }
    if (r->n_head + n <= sizeof r->head) {
        memcpy(r->head + r->n_head, s, n);
        r->n_head += n;
        return true;
    }
    /* far too long for a header: it is text the model wrote */
    r->state = H_BODY;
    r->to_reasoning = false;
    return give_back_head(r, content) && put(r, content, s, n);
}

static bool h_marker(hr_reason *r, int m, struct hr_api_buf *content)
{
    switch (m) {
    case M_START:
        if (r->state == H_HEAD && !give_back_head(r, content))
            return false;
        r->state = H_HEAD;
        r->n_head = r->n_chan = 0;
        r->in_channel = false;
        return true;
    case M_CHANNEL:
        if (r->state != H_HEAD) { /* a channel without <|start|>: a new header */
            r->state = H_HEAD;
            r->n_head = 0;
        }
        r->in_channel = true;
        r->n_chan = 0;
        return true;
    case M_CONSTRAIN:
        r->in_channel = false;
        return true;
    case M_MESSAGE:
        if (r->state == H_BODY)
            return true;
        r->to_reasoning = r->n_chan == 8 && !memcmp(r->chan, "analysis", 8);
        r->state = H_BODY;
        r->n_head = 0;
        r->in_channel = false;
        return true;
    default: /* <|end|>, <|return|>, <|call|> */
        if (r->state == H_HEAD && !give_back_head(r, content))
            return false;
        r->state = H_OUT;
        return true;
    }
}

/* -1: a prefix of some marker; -2: of none; else the marker. */
static int h_match(const char *s, size_t n)
{
    bool prefix = false;
    for (int m = 0; m < M_COUNT; m++) {
        size_t l = strlen(k_marks[m]);
        if (n <= l && !memcmp(k_marks[m], s, n)) {
            if (n == l)
                return m;
            prefix = true;
        }
    }
    return prefix ? -1 : -2;
}

static bool h_feed(hr_reason *r, const char *s, size_t n, struct hr_api_buf *content, struct hr_api_buf *reasoning)
{
    while (n) {
        if (r->n_hold) {
            r->hold[r->n_hold++] = *s++;
            n--;
            int m = h_match(r->hold, r->n_hold);
            if (m == -1)
                continue;
            char tmp[sizeof r->hold];
            size_t k = r->n_hold;
            memcpy(tmp, r->hold, k);
            r->n_hold = 0;
            if (m >= 0) {
                if (!h_marker(r, m, content))
                    return false;
                continue;
            }
            /* not a marker: its '<' is text; the rest may start one */
            if (!h_text(r, tmp, 1, content, reasoning) || !h_feed(r, tmp + 1, k - 1, content, reasoning))
                return false;
            continue;
        }
        const char *lt = memchr(s, '<', n);
        size_t run = lt ? (size_t)(lt - s) : n;
        if (!h_text(r, s, run, content, reasoning))
            return false;
        s += run;
        n -= run;
        if (lt) {
            r->hold[0] = '<';
            r->n_hold = 1;
            s++;
            n--;
        }
    }
    return true;
}

/* ---- either --------------------------------------------------------------- */

static bool think_open_at_end(const char *prompt)
{
    const char *open = NULL, *close = NULL, *p = prompt;
    while ((p = strstr(p, "<think>")))
        open = p++;
    p = prompt;
    while ((p = strstr(p, "</think>")))
        close = p++;
    return open && (!close || open > close);
}

void hr_reason_init(hr_reason *r, hr_reason_kind kind, const char *prompt)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    hr_think_init(&r->think, kind == HR_REASON_THINK && prompt && think_open_at_end(prompt));
    if (kind != HR_REASON_HARMONY || !prompt)
        return;
    /* replay the prompt's last message (from its last <|start|>) */
    const char *last = NULL;
    for (const char *p = prompt; (p = strstr(p, "<|start|>")) != NULL; p++)
        last = p;
    if (!last)
        return;
    r->discard = true;
    (void)h_feed(r, last, strlen(last), NULL, NULL);
    r->discard = false;
    r->n_hold = 0;
    r->n_head = 0; /* the prompt's header text is not the model's */
}

bool hr_reason_feed(hr_reason *r, const char *s, size_t n, struct hr_api_buf *content,
                    struct hr_api_buf *reasoning)
{
    switch (r->kind) {
    case HR_REASON_THINK:
        return hr_think_feed(&r->think, s, n, content, reasoning);
    case HR_REASON_HARMONY:
        return h_feed(r, s, n, content, reasoning);
    default:
        return n == 0 || hr_api_buf_put(content, s, n);
    }
}

bool hr_reason_flush(hr_reason *r, struct hr_api_buf *content, struct hr_api_buf *reasoning)
{
    switch (r->kind) {
    case HR_REASON_THINK:
        return hr_think_flush(&r->think, content, reasoning);
    case HR_REASON_HARMONY: {
        char tmp[sizeof r->hold];
        size_t k = r->n_hold;
        memcpy(tmp, r->hold, k);
        r->n_hold = 0;
        if (!h_text(r, tmp, k, content, reasoning))
            return false;
        return r->state != H_HEAD || give_back_head(r, content);
    }
    default:
        return true;
    }
}
