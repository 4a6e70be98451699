/* server.h - the HTTP server of `hearth serve` (libmicrohttpd).
 *
 * One epoll event thread (or a small pool of them) serves every
 * connection; nothing in it blocks on generation. Generation requests are
 * submitted to the scheduler and their connections suspended; the
 * scheduler's notify callback resumes them (MHD_resume_connection is
 * thread-safe). Streams are also resumed every 250 ms so that a keep-alive
 * comment goes out when no tokens came, which is how a dead client is
 * noticed and its request cancelled.
 *
 * The server starts before the model is loaded (GET /health says 503
 * until hr_http_set_ready). Endpoints and limits: docs/SERVER.md. */
#ifndef HR_HTTP_SERVER_H
#define HR_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/openai.h"
#include "base/status.h"
#include "sched/sched.h"

typedef struct hr_http hr_http;

typedef struct {
    const char *host;              /* listen address (default 127.0.0.1) */
    int port;                      /* 0: any free port (see hr_http_port) */
    const char *const *api_keys;   /* accepted bearer keys; none: no auth */
    int n_api_keys;
    bool metrics_need_key;         /* /metrics behind the key too */
    size_t max_body;               /* request body cap (413 past it); 0: 8 MiB */
    unsigned max_conns;            /* concurrent connections; 0: 4096 (503 past it) */
    int max_conns_per_ip;          /* concurrent connections per client address; 0: max_conns / 4,
                                      < 0: no per-address limit (503 past it) */
    unsigned idle_timeout_s;       /* idle connection / slow header timeout; 0: 60 */
    unsigned n_threads;            /* HTTP event threads; 0: 1 */
    bool quiet;                    /* no per-request log lines */
    const char *const *cors;       /* origins allowed cross-origin access ("*": any); none: no CORS,
                                      and requests with a foreign Origin header get 403 */
    int n_cors;
    const char *const *allow_hosts;/* Host names accepted besides localhost / the loopback
                                      addresses on a loopback bind ("*": no Host check) */
    int n_allow_hosts;
    struct hr_usage_db *usage;     /* usage log: one row per generation request; may be NULL */
    struct hr_router *router;      /* routes, upstreams, budgets, pilot (--config); may be NULL */
} hr_http_params;

hr_status hr_http_start(const hr_http_params *p, hr_http **out, hr_err *err);
/* The port actually bound. */
int hr_http_port(const hr_http *h);
/* Switches from "loading" to serving with this scheduler and model (both
 * must outlive hr_http_stop). */
void hr_http_set_ready(hr_http *h, hr_sched *s, const hr_api_model *m);
/* Stops accepting, cancels running generations, gives open streams up to
 * `grace_s` seconds to finish their last events, closes everything and
 * frees the server. */
void hr_http_stop(hr_http *h, double grace_s);

#endif
