/* sse.c - the server-sent events reader (sse.h). */
#include <stdlib.h>
#include <string.h>

#include "upstream/sse.h"

void hr_sse_init(hr_sse *s, size_t max_event)
{
    memset(s, 0, sizeof *s);
    s->max_event = max_event;
}

void hr_sse_free(hr_sse *s)
{
    free(s->p);
    free(s->data);
    memset(s, 0, sizeof *s);
}

static bool reserve(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    char *np = realloc(*p, nc);
    if (!np)
        return false;
    *p = np;
    *cap = nc;
    return true;
}

/* One event (without its blank line): the joined data lines to fn. */
static hr_status event(hr_sse *s, const char *p, size_t n, hr_sse_fn fn, void *ud, bool *go, hr_err *err)
{
    size_t dl = 0;
    bool has_data = false;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && p[j] != '\n')
            j++;
        size_t l = j - i;
        if (l && p[i + l - 1] == '\r')
            l--;
        if (l >= 5 && !memcmp(p + i, "data:", 5)) {
            size_t k = i + 5;
            if (k < i + l && p[k] == ' ')
                k++;
            size_t add = (has_data ? 1 : 0) + (i + l - k);
            if (dl + add > s->max_event)
                return hr_err_set(err, HR_ERR_LIMIT, "an event is larger than %zu bytes", s->max_event);
            if (!reserve(&s->data, &s->dcap, dl + add + 1))
                return hr_err_set(err, HR_ERR_NOMEM, "out of memory reading an event");
            if (has_data)
                s->data[dl++] = '\n';
            memcpy(s->data + dl, p + k, i + l - k);
            dl += i + l - k;
            has_data = true;
        }
        i = j + 1;
    }
    if (has_data) {
        s->data[dl] = 0;
        *go = fn(ud, s->data, dl);
    }
    return HR_OK;
}

hr_status hr_sse_feed(hr_sse *s, const char *p, size_t n, hr_sse_fn fn, void *ud, hr_err *err)
{
    if (s->len > s->max_event)
        return hr_err_set(err, HR_ERR_LIMIT, "an event is larger than %zu bytes", s->max_event);
    if (!reserve(&s->p, &s->cap, s->len + n + 1))
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory reading an event stream");
    if (n)
        memcpy(s->p + s->len, p, n);
    s->len += n;
    size_t start = 0, i = s->scan;
    bool go = true;
    hr_status st = HR_OK;
    while (i < s->len && go) {
        if (s->p[i] == '\n') {
            size_t end = 0;
            if (i + 1 < s->len && s->p[i + 1] == '\n')
                end = i + 2;
            else if (i + 2 < s->len && s->p[i + 1] == '\r' && s->p[i + 2] == '\n')
                end = i + 3;
            if (end) {
                if ((st = event(s, s->p + start, i - start, fn, ud, &go, err)))
                    return st;
                start = i = end;
                continue;
            }
        }
        i++;
    }
    if (start) {
        memmove(s->p, s->p + start, s->len - start);
        s->len -= start;
        i -= start;
    }
    /* a partial last line ending in \n or \r may still become a delimiter */
    s->scan = i >= 2 ? i - 2 : 0;
    if (go && s->len > s->max_event)
        return hr_err_set(err, HR_ERR_LIMIT, "an event is larger than %zu bytes", s->max_event);
    return HR_OK;
}
