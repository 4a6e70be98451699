/* test_cost.c - `hearth cost` on a usage log seeded here reproduces a hand
 * calculation (written out below, number by number). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report/cost.h"
#include "store/usage.h"

/* 2025-11-01T00:00:00Z */
#define T0 1761955200000LL

static char dbpath[256];

static void seed(void)
{
    snprintf(dbpath, sizeof dbpath, "/tmp/hr_cost_%d.db", (int)getpid());
    unlink(dbpath);
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(dbpath, NULL, &db, &err), HR_OK);
    /* r1 [0 s, 2 s) and r2 [1 s, 3 s) overlap: busy 3 s; r3 [10 s, 11 s): busy 1 s */
    hr_usage_row r1 = {.ts_ms = T0, .model = "m", .prompt_tokens = 1000, .cached_tokens = 200,
                       .completion_tokens = 500, .duration_s = 2.0, .status = 200, .stream = true};
    hr_usage_row r2 = {.ts_ms = T0 + 1000, .model = "m", .prompt_tokens = 3000, .completion_tokens = 1500,
                       .reasoning_tokens = 300, .duration_s = 2.0, .status = 200};
    hr_usage_row r3 = {.ts_ms = T0 + 10000, .model = "m", .prompt_tokens = 500, .cached_tokens = 500,
                       .completion_tokens = 250, .duration_s = 1.0, .status = 200, .stream = true};
    /* not counted: a failed request, and one outside the period */
    hr_usage_row bad = {.ts_ms = T0 + 20000, .model = "m", .prompt_tokens = 99999, .duration_s = 1, .status = 500};
    hr_usage_row late = {.ts_ms = T0 + 73LL * 3600 * 1000, .model = "m", .prompt_tokens = 88888, .duration_s = 1,
                         .status = 200};
    assert_true(hr_usage_record(db, &r1));
    assert_true(hr_usage_record(db, &r2));
    assert_true(hr_usage_record(db, &r3));
    assert_true(hr_usage_record(db, &bad));
    assert_true(hr_usage_record(db, &late));
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
}

static void test_hand_calculation(void **state)
{
    (void)state;
    seed();
    hr_err err = {0};
    /* the period: 73 hours from T0, so one month (730 h) is exactly 10 periods */
    int64_t since = T0, until = T0 + 73LL * 3600 * 1000;
    hr_usage_totals t;
    assert_int_equal(hr_usage_totals_of(dbpath, since, until, NULL, &t, &err), HR_OK);
    assert_int_equal(t.requests, 3);
    assert_int_equal(t.prompt_tokens, 4500);     /* 1000 + 3000 + 500 */
    assert_int_equal(t.cached_tokens, 700);      /* 200 + 0 + 500 */
    assert_int_equal(t.completion_tokens, 2250); /* 500 + 1500 + 250 */
    assert_int_equal(t.reasoning_tokens, 300);
    assert_true(t.busy_s == 4.0);                /* [0,3) and [10,11) */

    hr_api_price api = {.name = "api-x", .input = 2.0, .cached_input = 0.5, .output = 8.0};
    const hr_api_price *apis[] = {&api};
    hr_cost_params p = {.gpu_price = 2.0, .gpus = 1, .eng_hours = 10, .eng_rate = 100, .since_ms = since,
                        .until_ms = until};
    hr_cost_report r;
    assert_int_equal(hr_cost_compute(&t, &p, apis, 1, &r, &err), HR_OK);

    /* scale = 730 h / 73 h = 10 */
    assert_true(r.window_s == 73.0 * 3600);
    assert_true(r.scale == 10.0);
    /* monthly tokens: uncached input (4500 - 700) x 10, cached 700 x 10, output 2250 x 10 */
    assert_true(r.m_input == 38000.0);
    assert_true(r.m_cached == 7000.0);
    assert_true(r.m_output == 22500.0);
    assert_true(r.m_total == 67500.0);
    assert_true(r.m_requests == 30.0);
    /* API: (38000 x 2 + 7000 x 0.5 + 22500 x 8) / 1e6 = (76000 + 3500 + 180000) / 1e6 = $0.2595 */
    assert_true(fabs(r.apis[0].monthly - 0.2595) < 1e-15);
    /* per 1M at this mix: 0.2595 / 67500 x 1e6 = $3.8444.. */
    assert_true(fabs(r.apis[0].per_1m - 0.2595 / 67500 * 1e6) < 1e-12);
    /* self-hosting: 1 GPU x $2 x 730 h = $1460; engineering 10 h x $100 = $1000 */
    assert_true(r.gpu_monthly == 1460.0);
    assert_true(r.eng_monthly == 1000.0);
    assert_true(r.self_monthly == 2460.0);
    /* capacity measured: (4500 + 2250) tokens / 4 s busy = 1687.5 tokens/s */
    assert_true(r.capacity_measured);
    assert_true(r.capacity_tps == 1687.5);
    /* a month at full load: 1687.5 x 730 x 3600 = 4,434,750,000 tokens */
    assert_true(r.capacity_month == 4434750000.0);
    /* utilisation 67500 / 4434750000 (= busy 4 s / 73 h, the same thing) */
    assert_true(fabs(r.utilisation - 4.0 / (73.0 * 3600)) < 1e-15);
    assert_int_equal(r.deployments, 1);
    /* $ per 1M: 2460 / 67500 x 1e6 here; (1460 + 1000) / 4434750000 x 1e6 at full load */
    assert_true(fabs(r.self_per_1m - 2460.0 / 67500 * 1e6) < 1e-9);
    assert_true(fabs(r.self_per_1m_full - 2460.0 / 4434750000.0 * 1e6) < 1e-12);
    /* break-even: 2460 / (0.2595 / 67500) = 639,884,393.06 tokens/month, within one deployment */
    assert_true(fabs(r.apis[0].break_even - 2460.0 * 67500 / 0.2595) < 1e-3);
    assert_int_equal(r.apis[0].break_even_deployments, 1);
    /* under 5M tokens/month: stay on the API */
    assert_string_equal(r.verdict, "stay on the API");
    assert_true(r.n_reasons >= 3);

    /* with the data rule, the verdict changes but not the arithmetic */
    p.data_must_stay = true;
    assert_int_equal(hr_cost_compute(&t, &p, apis, 1, &r, &err), HR_OK);
    assert_non_null(strstr(r.verdict, "self-host"));

    /* a given capacity replaces the measured one; beyond it deployments step */
    p.data_must_stay = false;
    p.capacity_tps = 0.01; /* 26,280 tokens/month per deployment: 67,500 needs 3 */
    assert_int_equal(hr_cost_compute(&t, &p, apis, 1, &r, &err), HR_OK);
    assert_false(r.capacity_measured);
    assert_int_equal(r.deployments, 3);
    assert_true(r.self_monthly == 3 * 1460.0 + 1000.0);
    assert_true(r.apis[0].break_even < 0); /* a deployment's $1460 buys only $0.10 of API traffic */

    /* the chart */
    char svg[300];
    snprintf(svg, sizeof svg, "%s.svg", dbpath);
    p.capacity_tps = 0;
    assert_int_equal(hr_cost_compute(&t, &p, apis, 1, &r, &err), HR_OK);
    FILE *f = fopen(svg, "w");
    assert_non_null(f);
    assert_int_equal(hr_cost_svg(&r, f, &err), HR_OK);
    fclose(f);
    FILE *g = fopen(svg, "r");
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, g);
    fclose(g);
    buf[n] = 0;
    assert_non_null(strstr(buf, "<svg"));
    assert_non_null(strstr(buf, "</svg>"));
    assert_non_null(strstr(buf, "api-x"));
    assert_non_null(strstr(buf, "<circle")); /* the crossover */
    assert_null(strstr(buf, "nan"));
    assert_null(strstr(buf, "inf"));
    unlink(svg);

    /* an empty period is an error, not a division by zero */
    assert_int_equal(hr_usage_totals_of(dbpath, until + 3600000LL * 24 * 365, 0, NULL, &t, &err), HR_OK);
    assert_int_equal(hr_cost_compute(&t, &p, apis, 1, &r, &err), HR_ERR_NOT_FOUND);
    unlink(dbpath);
    char aux[300];
    snprintf(aux, sizeof aux, "%s-wal", dbpath);
    unlink(aux);
    snprintf(aux, sizeof aux, "%s-shm", dbpath);
    unlink(aux);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_hand_calculation)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
