/* upstream_impl.h - internals of upstream.c for the fuzz target and tests
 * (not a public API). */
#ifndef HR_UPSTREAM_IMPL_H
#define HR_UPSTREAM_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "upstream/upstream.h"

typedef struct {
    hr_up_state st;   /* as a caller would see it (not done: no transfer end) */
    bool fatal;       /* the parser gave up on the stream (then st.error is empty; see fatal_msg) */
    char fatal_msg[200];
    char *out;        /* the events forwarded to the client (malloc'd) */
    size_t out_len;
    char *text;       /* the first choice's text kept (malloc'd, NUL-terminated) */
} hr_up_parsed;

/* Runs a streamed 2xx response body through a call's SSE parsing exactly as
 * the I/O thread does, with no network: fed in pieces ending at cuts[]
 * (ascending offsets; the rest in one piece). drop_usage as in hr_up_req.
 * HR_ERR_NOMEM or HR_OK; free the result with hr_up_parsed_free. */
hr_status hr_up_parse_stream(const char *p, size_t n, const size_t *cuts, size_t ncuts, bool drop_usage,
                             hr_up_parsed *out, hr_err *err);
void hr_up_parsed_free(hr_up_parsed *r);

#endif
