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
 * prompt estimate is an upper bound and max_tokens is honoured). */
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
} hr_budget_hold;

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
 * passed. b NULL: always true with account -1. */
bool hr_budget_reserve(hr_budget *b, const char *key_id, int64_t tokens, double usd, hr_budget_hold *h,
                       char *msg, size_t cap);
void hr_budget_settle(hr_budget *b, hr_budget_hold *h, int64_t tokens, double usd);

/* The cost of a request at a backend model's prices (USD); 0 without prices. */
double hr_budget_cost(const hr_price *p, int64_t prompt, int64_t cached, int64_t completion);

/* Usage of one key (tests, /metrics): tokens and USD charged today and this month. */
bool hr_budget_usage(hr_budget *b, const char *key_id, int64_t *tok_day, double *usd_day, int64_t *tok_month,
                     double *usd_month);

#endif
