/* budget.h - per-API-key budgets (tokens or US dollars per UTC day / month).
 *
 * An in-memory ledger, one account per key id, seeded at start from the
 * usage log (2xx rows since the start of the month). Before a request is
 * forwarded, hr_budget_reserve() charges its worst case (prompt estimate +
 * max_tokens, priced with the target's prices) atomically against every
 * limit that applies, or refuses it; when the request ends,
 * hr_budget_settle() replaces the reservation with what was really used.
 * So concurrent requests can never together pass a limit: the overshoot is
 * bounded by how far real usage exceeds the reservations (zero when the
 * prompt estimate is an upper bound and max_tokens is honoured).
 * With hr_budget_attach_pg the ledger lives in PostgreSQL instead, shared
 * by every replica (see there); the in-memory accounts then mirror the
 * shared totals as last seen. */
#ifndef HR_ROUTE_BUDGET_H
#define HR_ROUTE_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "route/config.h"

typedef struct hr_budget hr_budget;

typedef struct {
    int account;          /* -1: no budget applies */
    int64_t tokens;       /* reserved */
    double usd;
    int32_t day, month;   /* the windows charged */
    bool fleet;           /* reserved in the shared ledger (hr_budget_attach_pg) */
} hr_budget_hold;

typedef enum {
    HR_BUDGET_OK = 0,       /* reserved (or no budget applies) */
    HR_BUDGET_REFUSED,      /* a limit would be passed: HTTP 429 */
    HR_BUDGET_UNAVAILABLE,  /* the shared ledger cannot be reached: HTTP 503 (fail closed) */
} hr_budget_verdict;

/* NULL (no error) when the config has no budgets. */
hr_status hr_budget_new(const hr_route_config *cfg, hr_budget **out, hr_err *err);
void hr_budget_free(hr_budget *b);
/* Adds the 2xx usage since the start of the current UTC month from a
 * SQLite usage log; a missing file is not an error. */
hr_status hr_budget_seed_sqlite(hr_budget *b, const char *path, hr_err *err);
/* The default max_tokens to reserve for this key when a request sets none;
 * 0 when no budget applies. */
int32_t hr_budget_default_max_tokens(hr_budget *b, const char *key_id);
/* Reserves; false (with a message for the 429) when a limit would be
 * passed or the shared ledger is unreachable. b NULL: always true with
 * account -1. */
bool hr_budget_reserve(hr_budget *b, const char *key_id, int64_t tokens, double usd, hr_budget_hold *h,
                       char *msg, size_t cap);
/* The same, telling a refusal (429) from an unreachable shared ledger (503). */
hr_budget_verdict hr_budget_reserve_ex(hr_budget *b, const char *key_id, int64_t tokens, double usd,
                                       hr_budget_hold *h, char *msg, size_t cap);
void hr_budget_settle(hr_budget *b, hr_budget_hold *h, int64_t tokens, double usd);

/* Fleet budgets: keeps the ledger in the PostgreSQL database at `url` (a
 * libpq URI, usually the usage log's) instead of in this process, so that
 * every replica using that database charges one account per key and
 * window. Table hearth_budget(key_id, period, tokens, usd, updated_ms),
 * period 'dYYYY-MM-DD' or 'mYYYY-MM' (UTC), created if missing. A reserve
 * is one transaction that adds the worst case to the key's day and month
 * rows (INSERT ... ON CONFLICT DO UPDATE ... RETURNING, rows locked in one
 * order) and commits only if no limit is passed; settle adds the
 * difference between real use and the reservation. A row created for a
 * window is seeded from the 2xx rows of the usage table in that window.
 *
 * When the database cannot be reached, reservations for keys with a
 * budget fail closed (HR_BUDGET_UNAVAILABLE, HTTP 503; keys without a
 * budget are unaffected): a ledger that cannot be read cannot cap
 * spending across the fleet. Settlements that cannot be sent are kept
 * (up to 4096) and sent first once it is back; past that the reservation
 * stays charged (an over-count, never an under-count). A crash between
 * reserve and settle also leaves the reservation charged. Reconnects are
 * tried at most once a second. The database must be reachable here.
 * b NULL: nothing to do. */
hr_status hr_budget_attach_pg(hr_budget *b, const char *url, hr_err *err);

/* Prometheus lines for the shared ledger (hearth_budget_ledger_up,
 * hearth_budget_ledger_errors_total, hearth_budget_unavailable_total,
 * hearth_budget_settles_pending); nothing without one. b NULL: nothing. */
void hr_budget_metrics(hr_budget *b, void (*put)(void *ctx, const char *line), void *ctx);

/* The cost of a request at a backend model's prices (USD); 0 without prices. */
double hr_budget_cost(const hr_price *p, int64_t prompt, int64_t cached, int64_t completion);

/* Usage of one key (tests, /metrics): tokens and USD charged today and this month. */
bool hr_budget_usage(hr_budget *b, const char *key_id, int64_t *tok_day, double *usd_day, int64_t *tok_month,
                     double *usd_month);

#endif
