/* cost.h - does self-hosting pay at our volume? (`hearth cost`)
 *
 * From the usage log's totals over a window:
 *   month          = 730 hours (a year / 12)
 *   scale          = month / window
 *   monthly tokens = logged tokens x scale (uncached input, cached input,
 *                    output; total = prompt + completion)
 *   self-hosting   = deployments x GPUs x $/GPU-hour x 730 + engineering
 *                    hours per month x $/hour; one deployment serves
 *                    `capacity` tokens/s at full load
 *   capacity       = --capacity, else measured: logged tokens / busy time
 *                    (the union of request intervals)
 *   utilisation    = monthly tokens / (capacity x month)
 *   API cost       = uncached x input + cached x cached_input + output x
 *                    output price, per 1M tokens
 *   break-even     = the smallest monthly volume at which self-hosting
 *                    (deployments added as capacity runs out) costs no more
 *                    than the API at this traffic's input/output mix
 * and a recommendation following the decision framework (under ~5M
 * tokens/month stay on the API unless data must not leave; 5-50M decide on
 * constraints and traffic shape; above ~50M self-hosting usually pays). */
#ifndef HR_REPORT_COST_H
#define HR_REPORT_COST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "base/status.h"
#include "report/catalog.h"
#include "store/usage.h"

#define HR_COST_MONTH_HOURS 730.0
#define HR_COST_MAX_APIS 64
#define HR_COST_MAX_REASONS 8

typedef struct {
    const hr_api_price *api;
    double monthly;        /* USD for this traffic */
    double per_1m;         /* USD per 1M tokens, blended over the mix */
    double break_even;     /* monthly tokens; < 0: self-hosting never costs less */
    int64_t break_even_deployments;
} hr_cost_api;

typedef struct {
    /* inputs */
    double gpu_price;      /* USD per GPU-hour */
    int32_t gpus;          /* per deployment */
    double eng_hours;      /* engineering hours per month */
    double eng_rate;       /* USD per hour */
    double capacity_tps;   /* tokens/s per deployment; <= 0: measured from the log */
    bool data_must_stay;   /* data may not leave (privacy / regulation) */
    int64_t since_ms, until_ms; /* <= 0: first request / last request end */
} hr_cost_params;

typedef struct {
    hr_usage_totals t;
    hr_cost_params p;
    int64_t since_ms, until_ms;
    double window_s, scale;
    double m_requests, m_input, m_cached, m_output, m_total; /* per month; m_input is uncached */
    double capacity_tps;
    bool capacity_measured;
    double capacity_month;  /* tokens per month per deployment at full load */
    double utilisation;
    int64_t deployments;    /* needed for this volume */
    double gpu_monthly;     /* one deployment */
    double eng_monthly;
    double self_monthly;    /* at this volume */
    double self_per_1m;     /* at this utilisation */
    double self_per_1m_full;/* one deployment at full load */
    int n_apis;
    hr_cost_api apis[HR_COST_MAX_APIS];
    char verdict[160];
    int n_reasons;
    char reasons[HR_COST_MAX_REASONS][400];
} hr_cost_report;

/* Self-hosting cost per month at a monthly volume (deployments stepped). */
double hr_cost_self_at(const hr_cost_report *r, double monthly_tokens);

hr_status hr_cost_compute(const hr_usage_totals *t, const hr_cost_params *p, const hr_api_price *const *apis,
                          int n_apis, hr_cost_report *out, hr_err *err);

/* Monthly cost against monthly volume (log-log) for self-hosting and each
 * API, crossovers marked, the current volume marked. */
hr_status hr_cost_svg(const hr_cost_report *r, FILE *f, hr_err *err);

#endif
