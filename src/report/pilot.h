/* pilot.h - what a parallel pilot (shadow traffic) says (`hearth pilot
 * report`): per route, from the pairs in the usage log, how often the
 * shadow agrees with the primary, how fast and how reliable each side is,
 * what each side costs, and whether the numbers support switching.
 *
 * A pair counts towards agreement only when both sides answered (HTTP
 * 2xx). It agrees when:
 *   - a judge scored it:            judge >= agree_judge (default 0.5);
 *   - else both answers were JSON:  key/value agreement == 1;
 *   - else:                         exact match, or token F1 >= agree_f1
 *                                   (default 0.8).
 * Percentiles interpolate linearly between order statistics (p of n values
 * sits at rank p x (n - 1)).
 *
 * Cost of a side: prompt tokens x input price + completion tokens x output
 * price, per 1M, from the price data (data/prices.json) by model name,
 * else by backend name (no cached-token discount: pairs do not record
 * cache hits). The local backend ("local") is priced as GPU time at full
 * load: tokens / capacity tokens/s x $/GPU-hour x GPUs (the same capacity
 * and GPU price `hearth cost` uses); without a capacity it is unpriced.
 *
 * Verdict (all must hold for "supported"):
 *   - at least min_pairs (30) pairs where both sides answered;
 *   - agreement >= min_agreement (90%);
 *   - shadow error rate <= primary error rate + max_error_delta (1 point);
 *   - shadow p95 TTFT and p95 total each <= primary's x max_latency_ratio
 *     (1.5) or within latency_slack_s (0.1 s) of it.
 * Cost does not veto a switch; a dearer shadow is stated in the verdict. */
#ifndef HR_REPORT_PILOT_H
#define HR_REPORT_PILOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/status.h"
#include "report/catalog.h"
#include "store/usage.h"

#define HR_PILOT_MAX_REASONS 6

typedef struct {
    double agree_f1;          /* default 0.8 */
    double agree_judge;       /* default 0.5 */
    double min_agreement;     /* default 0.90 */
    int32_t min_pairs;        /* default 30 */
    double max_error_delta;   /* default 0.01 */
    double max_latency_ratio; /* default 1.5 */
    double latency_slack_s;   /* default 0.1 */
    /* pricing the local backend */
    double gpu_price;         /* USD per GPU-hour */
    int32_t gpus;             /* per deployment */
    double capacity_tps;      /* tokens/s of one deployment at full load; <= 0: local unpriced */
    char gpu_label[64];       /* for the price basis text */
} hr_pilot_params;

hr_pilot_params hr_pilot_defaults(void);

typedef struct {
    char backend[32], model[96]; /* "(mixed)" when the route's pairs differ */
    int64_t n;                   /* pairs */
    int64_t errors;              /* status not 2xx (transport failures included) */
    int64_t transport_errors;    /* status 0 */
    double error_rate;
    int64_t n_ttft, n_total;     /* successful answers with a known time */
    double ttft_p50, ttft_p95, total_p50, total_p95; /* seconds; < 0 when none */
    uint64_t prompt_tokens, completion_tokens;
    double cost;                 /* USD for this route's pairs; < 0: unpriced */
    double cost_per_1k;          /* USD per 1000 requests; < 0: unpriced */
    char price_basis[200];
} hr_pilot_side;

typedef struct {
    char route[96];
    int64_t pairs;
    int64_t both_ok;             /* pairs where both sides answered: the agreement base */
    double exact_rate;           /* share of both_ok with an exact match */
    double f1_mean, f1_p10, f1_p50, f1_p90;
    int64_t f1_hist[10];         /* [0,0.1) ... [0.9,1.0] */
    double f1_ge_rate;           /* share with F1 >= agree_f1 */
    int64_t json_n;              /* both answers JSON */
    double json_mean, json_equal_rate;
    int64_t judge_n;
    double judge_mean, judge_pass_rate;
    int64_t agree_n;
    double agreement;            /* agree_n / both_ok */
    double agree_lo, agree_hi;   /* 95% Wilson interval */
    hr_pilot_side primary, shadow;
    double cost_ratio;           /* shadow / primary cost; < 0 unknown */
    bool enough, supported;
    char verdict[400];
    int n_reasons;
    char reasons[HR_PILOT_MAX_REASONS][240];
} hr_pilot_route;

typedef struct {
    hr_pilot_params p;
    int64_t since_ms, until_ms;  /* as asked (0 = open) */
    int64_t first_ms, last_ms;   /* of the pairs seen */
    size_t n_routes;
    hr_pilot_route *routes;
} hr_pilot_report;

/* Builds the report from pairs (ordered by route, as hr_usage_pairs_of
 * returns them). cat prices the API sides (NULL: only the local side is
 * priced). */
hr_status hr_pilot_compute(const hr_pilot_pair_rec *pairs, size_t n, const hr_catalog *cat, const hr_pilot_params *p,
                           int64_t since_ms, int64_t until_ms, hr_pilot_report *out, hr_err *err);
void hr_pilot_free(hr_pilot_report *r);

/* Linear-interpolated percentile of v[0..n) (sorted in place); -1 if n == 0. */
double hr_pilot_percentile(double *v, size_t n, double q);

void hr_pilot_text(const hr_pilot_report *r, const char *source, FILE *f);
/* One JSON document (malloc'd; NULL on out of memory). */
char *hr_pilot_json(const hr_pilot_report *r, const char *source);
/* A self-contained HTML page with inline SVG charts. */
hr_status hr_pilot_html(const hr_pilot_report *r, const char *source, FILE *f, hr_err *err);

#endif
