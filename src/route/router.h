/* router.h - routes, upstream backends, budgets and the parallel pilot for
 * `hearth serve --config FILE` (docs/ROUTING.md).
 *
 * The HTTP layer asks the router which route a request's `model` names,
 * in which order to try its targets (by policy), for the upstream request
 * body and URL of each target, and to reserve / settle budgets. When a
 * request has finished, hr_router_pilot() may start its shadow request
 * (sampled, bounded); the shadow, the scores and the optional judge run on
 * the upstream I/O thread and end in one pair record in the usage log. */
#ifndef HR_ROUTE_ROUTER_H
#define HR_ROUTE_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "route/budget.h"
#include "route/config.h"
#include "upstream/upstream.h"

struct hr_usage_db;
struct hr_api_buf_s;
typedef struct hr_router hr_router;

typedef struct {
    hr_route_config *cfg;          /* taken over (freed by hr_router_free, also on failure) */
    struct hr_usage_db *usage;     /* may be NULL */
    const char *usage_path;        /* SQLite log to seed budgets from; may be NULL */
    uint64_t seed;                 /* random seed (sampling, weighted choice) */
} hr_router_params;

hr_status hr_router_new(const hr_router_params *p, hr_router **out, hr_err *err);
/* Where the server itself listens (shadows and judges aimed at "local" or
 * at a route go there), the key to use, and the local model's id. */
void hr_router_set_self(hr_router *r, const char *base_url, const char *api_key, const char *local_id);
/* Stops the I/O thread (pending shadows end as failed pairs). */
void hr_router_free(hr_router *r);

const hr_route_config *hr_router_config(const hr_router *r);
hr_upstream *hr_router_upstream(hr_router *r);
hr_budget *hr_router_budget(hr_router *r);
const hr_route *hr_router_find(const hr_router *r, const char *model);

/* Target indices in the order to try them; returns the count. */
int hr_router_order(hr_router *r, const hr_route *rt, int order[HR_ROUTE_MAX_TARGETS]);
/* In-flight counts for least_busy (backend HR_ROUTE_LOCAL for the engine). */
void hr_router_busy(hr_router *r, int backend, int delta);
/* Counts one attempt on a backend: ok, or failed (fallback when more remain). */
void hr_router_count(hr_router *r, int backend, bool failed, bool fell_back);
void hr_router_count_budget_refusal(hr_router *r);

/* The upstream URL for a target and endpoint ("/chat/completions" or
 * "/completions"), into buf. */
void hr_router_url(const hr_router *r, const hr_target *t, const char *endpoint, char *buf, size_t cap);
const char *hr_router_backend_name(const hr_router *r, int backend);
const hr_backend *hr_router_backend(const hr_router *r, int backend);

/* The worst-case USD of a request over a route's targets. */
double hr_router_max_cost(const hr_router *r, const hr_route *rt, int64_t prompt_tokens, int64_t completion_tokens);

typedef struct {
    int64_t ts_ms;
    const char *request_id, *key_id;
    const char *endpoint;          /* "/chat/completions" or "/completions" */
    const char *body;              /* the client's request body */
    size_t body_len;
    const char *backend, *model;   /* who answered */
    const char *text;              /* first choice's text (capped) */
    double ttft_s, total_s;
    int32_t prompt_tokens, completion_tokens;
    int32_t status;
} hr_pilot_primary;

/* Samples the route's shadow for a finished request and starts it (never
 * blocks; dropped and counted when the shadow queue is full). */
void hr_router_pilot(hr_router *r, const hr_route *rt, const hr_pilot_primary *p);

/* Prometheus lines for /metrics (appended with `put`). */
void hr_router_metrics(hr_router *r, void (*put)(void *ctx, const char *line), void *ctx);

/* Builds the upstream body: `model` set, stream_options.include_usage when
 * streaming, max_tokens when the request has none and `max_tokens` > 0,
 * "n": 1 when `single`. malloc'd; *len its length. NULL: not a JSON object. */
char *hr_router_body(const char *client_body, size_t len, const char *model, bool stream, int32_t max_tokens,
                     bool single, size_t *out_len);

/* A body without "model" (an object's JSON text, e.g. hr_api_doc_forward)
 * with "model": `model` spliced in first, without parsing it again.
 * malloc'd; *len its length. NULL: out of memory or not an object. */
char *hr_router_body_model(const char *base, size_t len, const char *model, size_t *out_len);

#endif
