/* sse.h - a reader of server-sent event streams (text/event-stream), the
 * one place hearth parses SSE: upstream responses, and the benchmarks.
 *
 * Bytes are fed as they arrive, in pieces of any size. An event ends at a
 * blank line (\n\n or \n\r\n); its `data:` lines (one optional space after
 * the colon, a trailing \r dropped) are joined with \n and handed to the
 * callback. Comments, other fields and events without data are skipped.
 * An event (or a pending partial one) longer than max_event bytes is an
 * error, so memory stays bounded whatever the peer sends. */
#ifndef HR_UPSTREAM_SSE_H
#define HR_UPSTREAM_SSE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

typedef struct {
    char *p;          /* pending bytes of an incomplete event */
    size_t len, cap;
    size_t scan;      /* where to look for the event end next */
    size_t max_event;
    char *data;       /* the current event's joined data */
    size_t dcap;
} hr_sse;

/* One event's data (NUL-terminated, len bytes). Return false to stop. */
typedef bool (*hr_sse_fn)(void *ud, const char *data, size_t len);

void hr_sse_init(hr_sse *s, size_t max_event);
void hr_sse_free(hr_sse *s);

/* Feeds n bytes; calls fn for each event they complete, until it returns
 * false (then the rest is dropped; the caller knows why). HR_OK, or
 * HR_ERR_LIMIT (an event over max_event) or HR_ERR_NOMEM; after an error
 * or a stop the reader must not be fed again. */
hr_status hr_sse_feed(hr_sse *s, const char *p, size_t n, hr_sse_fn fn, void *ud, hr_err *err);

#endif
