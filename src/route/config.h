/* config.h - the routing configuration of `hearth serve --config FILE`.
 *
 * A JSON file (parsed with jansson) that declares upstream backends
 * (OpenAI-compatible base URLs, the environment variable holding each API
 * key, timeouts, per-model prices), routes (a name clients send as
 * `model`, a policy and targets, optionally a shadow and a judge) and
 * budgets per API key. Every mistake is a one-line error at start-up that
 * names the offending field. Layout: docs/ROUTING.md. */
#ifndef HR_ROUTE_CONFIG_H
#define HR_ROUTE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

#define HR_ROUTE_MAX_BACKENDS 64
#define HR_ROUTE_MAX_ROUTES 1024
#define HR_ROUTE_MAX_TARGETS 16
#define HR_ROUTE_MAX_BUDGETS 256
#define HR_ROUTE_LOCAL (-1)   /* hr_target.backend of the local engine */
#define HR_ROUTE_CONFIG_MAX_BYTES (1u << 20)

typedef struct {
    char *model;
    double input, cached_input, output; /* USD per 1M tokens */
} hr_price;

typedef struct {
    char *name;
    char *base_url;          /* e.g. http://127.0.0.1:8081/v1 (no trailing slash) */
    char *api_key_env;       /* NULL: no key */
    char *api_key;           /* resolved from the environment at load; NULL: none */
    double connect_timeout_s;     /* default 5 */
    double first_byte_timeout_s;  /* request sent -> response headers; default 30 */
    double timeout_s;             /* whole call; default 600 */
    hr_price *prices;
    int n_prices;
} hr_backend;

typedef enum { HR_POLICY_PRIORITY = 0, HR_POLICY_WEIGHTED, HR_POLICY_LEAST_BUSY } hr_policy;

typedef struct {
    int backend;     /* index into backends, or HR_ROUTE_LOCAL */
    char *model;     /* the model name sent upstream (local: informational) */
    double weight;   /* weighted policy; default 1 */
} hr_target;

typedef struct {
    char *name;
    hr_policy policy;
    hr_target targets[HR_ROUTE_MAX_TARGETS];
    int n_targets;
    bool has_shadow;
    hr_target shadow;
    double shadow_sample;  /* 0..1 */
    char *judge_route;     /* NULL: no judge */
    double judge_sample;   /* 0..1 of the shadowed pairs */
} hr_route;

typedef struct {
    char *key_id;          /* hr_usage_key_id of the key; "*" = every key separately */
    char *label;           /* what error messages call it (the env var name or the id) */
    int64_t tokens_per_day, tokens_per_month;   /* 0: no limit */
    double usd_per_day, usd_per_month;          /* 0: no limit */
    int32_t default_max_tokens;                 /* reserved when a request sets none (default 4096) */
} hr_budget_rule;

typedef struct {
    hr_backend backends[HR_ROUTE_MAX_BACKENDS];
    int n_backends;
    hr_route routes[HR_ROUTE_MAX_ROUTES];
    int n_routes;
    int n_explicit;        /* routes[0, n_explicit) are the file's; the rest are BACKEND/MODEL names */
    hr_budget_rule budgets[HR_ROUTE_MAX_BUDGETS];
    int n_budgets;
    int32_t shadow_queue;  /* shadow requests in flight at most (default 64); more are dropped */
    bool uses_local;       /* some target or shadow names "local" */
} hr_route_config;

/* Parses a config document (api_key_env is resolved with getenv). Every
 * model listed under a backend also becomes a route "BACKEND/MODEL" and,
 * unless a route has that name, "MODEL" (first backend wins). */
hr_status hr_route_config_parse(const char *json, size_t len, hr_route_config **out, hr_err *err);
/* Reads and parses FILE (at most HR_ROUTE_CONFIG_MAX_BYTES). */
hr_status hr_route_config_load(const char *path, hr_route_config **out, hr_err *err);
void hr_route_config_free(hr_route_config *c);

/* Fails when a route (or a backend model's implicit route) has the name
 * clients use for the local model (`id`, or `alt_id` when not NULL): such a
 * route would silently take the local model's requests. */
hr_status hr_route_config_check_local(const hr_route_config *c, const char *id, const char *alt_id, hr_err *err);
const hr_route *hr_route_config_find(const hr_route_config *c, const char *name);
int hr_route_config_backend(const hr_route_config *c, const char *name); /* index, -1 if none */
/* Price of `model` on backend b; NULL when not listed. */
const hr_price *hr_backend_price(const hr_backend *b, const char *model);

#endif
