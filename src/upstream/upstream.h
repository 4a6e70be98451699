/* upstream.h - calls to OpenAI-compatible upstream APIs on one I/O thread.
 *
 * One thread runs libcurl's multi interface (curl_multi_poll); other
 * threads hand it calls through a locked list and wake it with
 * curl_multi_wakeup, so there is no thread per request. Each call's
 * response is parsed as it arrives:
 *
 *  - streamed calls (`stream`): the body is cut into Server-Sent Events;
 *    each complete event is appended to the call's output for the consumer
 *    to forward unchanged (comments and the usage-only chunk the client did
 *    not ask for are left out), and its JSON is read for the first choice's
 *    text, the finish reason, the usage object and error events;
 *  - other calls: the body is collected (capped) and read at the end.
 *
 * The consumer is told through `notify(ctx)` (called on the I/O thread,
 * without locks held; it must not block) whenever the state changes or
 * bytes arrive, and drains them with hr_up_call_read. Unread output is
 * capped: past `max_buffer` bytes the transfer is paused until the consumer
 * has read half of it. Every buffer that grows from upstream input has a
 * cap; an event larger than 1 MiB or malformed JSON fails the call. */
#ifndef HR_UPSTREAM_UPSTREAM_H
#define HR_UPSTREAM_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct hr_upstream hr_upstream;
typedef struct hr_up_call hr_up_call;

#define HR_UP_MAX_TEXT (64u << 10)     /* first-choice text kept per call */
#define HR_UP_MAX_EVENT (1u << 20)     /* one SSE event */
#define HR_UP_MAX_BODY (64u << 20)     /* a non-streamed body */

typedef struct {
    const char *url;             /* full URL, e.g. http://127.0.0.1:8081/v1/chat/completions */
    const char *api_key;         /* sent as "Authorization: Bearer"; NULL: none */
    const char *body;            /* request JSON (copied) */
    size_t body_len;
    bool stream;                 /* the request asks for an SSE stream */
    bool drop_usage_chunk;       /* leave out the final choices:[] usage chunk */
    double connect_timeout_s;    /* <= 0: 5 */
    double first_byte_timeout_s; /* request start -> response headers; <= 0: 30 */
    double timeout_s;            /* whole call; <= 0: none */
    size_t max_buffer;           /* unread output before pausing; 0: 1 MiB */
    void (*notify)(void *ctx);
    void *ctx;
} hr_up_req;

typedef struct {
    int status;                /* HTTP status; 0 before the headers or on a transport failure */
    bool done;                 /* the transfer ended (see failed / complete) */
    bool failed;               /* transport failure, timeout, cut stream, garbage or an error event */
    bool complete;             /* stream: saw [DONE]; otherwise the body was read entirely */
    bool timed_out;            /* failed on a timeout */
    bool error_event;          /* a streamed {"error": ...} event came */
    bool saw_done;             /* stream: "data: [DONE]" came (and was forwarded) */
    size_t n_avail;            /* output bytes not read yet */
    uint64_t n_total;          /* output bytes produced so far */
    double ttft_s;             /* start -> first content (stream) or whole body (non-stream); < 0 unknown */
    double total_s;            /* start -> done; < 0 while running */
    bool have_usage;           /* the provider sent a usage object */
    int32_t prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens;
    char finish_reason[24];
    char id[64];               /* the response's "id" (first event or body) */
    char error[256];           /* why it failed */
} hr_up_state;

hr_status hr_upstream_new(hr_upstream **out, hr_err *err);
/* Stops the thread; calls still running end failed ("shutting down"). */
void hr_upstream_free(hr_upstream *u);

/* Starts a call. Returns NULL when out of memory or stopping. The caller
 * holds one reference (hr_up_call_release). */
hr_up_call *hr_upstream_start(hr_upstream *u, const hr_up_req *r);
void hr_up_call_state(hr_up_call *c, hr_up_state *st);
/* Moves up to max output bytes into buf; returns the count. */
size_t hr_up_call_read(hr_up_call *c, char *buf, size_t max);
/* The first choice's text so far (capped at HR_UP_MAX_TEXT), copied into a
 * malloc'd string; NULL when out of memory. */
char *hr_up_call_text(hr_up_call *c);
/* Cancels the call if running and drops the caller's reference; notify is
 * never called after this returns. May be called from the call's own notify
 * (on the I/O thread). */
void hr_up_call_release(hr_up_call *c);

typedef struct {
    uint64_t started, failed, timeouts, paused;
    int32_t in_flight;
} hr_upstream_stats;
void hr_upstream_stats_of(hr_upstream *u, hr_upstream_stats *out);

#endif
