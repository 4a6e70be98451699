/* test_pilot_report.c - `hearth pilot report` arithmetic: pairs seeded
 * through hr_usage_record_pair, read back through the backend-neutral
 * reader (SQLite, and PostgreSQL when HEARTH_TEST_PG is set), and every
 * number of the report compared with a calculation written out by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report/catalog.h"
#include "report/pilot.h"
#include "store/usage.h"
#include "usage_backend.h"

#define NEAR(a, b) assert_true(fabs((double)(a) - (double)(b)) < 1e-9)

/* Route "chat", 40 pairs, i = 0..39:
 *   primary openai/gpt-4o-mini: 200; TTFT (i+1) x 10 ms, total (i+1) x 100 ms; 100 in / 50 out
 *   shadow local/qwen2.5-0.5b: 200, except i = 38 (transport failure, 0) and i = 39 (500);
 *     TTFT (i+1) x 20 ms, total (i+1) x 100 ms + 50 ms; 100 in / 40 out (0 / 0 when failed)
 *   scores: i < 20 exact, F1 1; 20 <= i < 40 F1 (i - 20) / 20, not exact;
 *     JSON 1 for i = 30, 31 and 0.5 for i = 32, 33; no judge.
 * Route "summarise", 30 pairs: primary openai/gpt-4o, shadow local/qwen2.5-0.5b, all 200,
 *   exact, TTFT 100 ms and total 1 s both, 200 in / 100 out both.
 * Route "tiny", 5 pairs like "summarise". */
static void seed(const char *target)
{
    hr_usage_db *db;
    hr_err err = {0};
    hr_usage_params p = {.queue_pairs = 256};
    assert_int_equal(hr_usage_open(target, &p, &db, &err), HR_OK);
    char id[32];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "chat-%d", i);
        bool shadow_ok = i < 38;
        hr_pilot_pair q = {.ts_ms = 1764288000000 + i * 1000, .request_id = id, .route = "chat",
                           .primary_backend = "openai", .primary_model = "gpt-4o-mini", .shadow_backend = "local",
                           .shadow_model = "qwen2.5-0.5b", .primary_text = "a b c", .shadow_text = "a b d",
                           .primary_ttft_s = (i + 1) * 0.01, .primary_total_s = (i + 1) * 0.1,
                           .shadow_ttft_s = (i + 1) * 0.02, .shadow_total_s = (i + 1) * 0.1 + 0.05,
                           .primary_prompt_tokens = 100, .primary_completion_tokens = 50,
                           .shadow_prompt_tokens = shadow_ok ? 100 : 0, .shadow_completion_tokens = shadow_ok ? 40 : 0,
                           .primary_status = 200, .shadow_status = i == 38 ? 0 : i == 39 ? 500 : 200,
                           .score_exact = i < 20 ? 1 : 0, .score_f1 = i < 20 ? 1.0 : (double)(i - 20) / 20.0,
                           .score_json = i == 30 || i == 31 ? 1.0 : i == 32 || i == 33 ? 0.5 : -1,
                           .score_judge = -1};
        assert_true(hr_usage_record_pair(db, &q));
    }
    for (int i = 0; i < 35; i++) {
        snprintf(id, sizeof id, "sum-%d", i);
        hr_pilot_pair q = {.ts_ms = 1764288100000 + i * 1000, .request_id = id, .route = i < 30 ? "summarise" : "tiny",
                           .primary_backend = "openai", .primary_model = "gpt-4o", .shadow_backend = "local",
                           .shadow_model = "qwen2.5-0.5b", .primary_text = "same", .shadow_text = "same",
                           .primary_ttft_s = 0.1, .primary_total_s = 1.0, .shadow_ttft_s = 0.1, .shadow_total_s = 1.0,
                           .primary_prompt_tokens = 200, .primary_completion_tokens = 100,
                           .shadow_prompt_tokens = 200, .shadow_completion_tokens = 100, .primary_status = 200,
                           .shadow_status = 200, .score_exact = 1, .score_f1 = 1, .score_json = -1, .score_judge = -1};
        assert_true(hr_usage_record_pair(db, &q));
    }
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
}

static void test_report(void **state)
{
    (void)state;
    UB_NEED_BACKEND();
    char buf[1024];
    const char *target = ub_target("pilot", buf, sizeof buf);
    seed(target);
    hr_err err = {0};
    hr_pilot_pair_rec *pairs = NULL;
    size_t n = 0;
    assert_int_equal(hr_usage_pairs_of(target, 0, 0, NULL, &pairs, &n, &err), HR_OK);
    assert_int_equal(n, 75);
    hr_catalog *cat = NULL;
    assert_int_equal(hr_catalog_load(NULL, NULL, NULL, &cat, &err), HR_OK);
    hr_pilot_params p = hr_pilot_defaults();
    /* local side: $3.60 per GPU-hour at 1000 tokens/s = $1 per 1M tokens */
    p.gpu_price = 3.6;
    p.capacity_tps = 1000;
    hr_pilot_report r;
    assert_int_equal(hr_pilot_compute(pairs, n, cat, &p, 0, 0, &r, &err), HR_OK);
    assert_int_equal(r.n_routes, 3);

    const hr_pilot_route *c = &r.routes[0];
    assert_string_equal(c->route, "chat");
    assert_int_equal(c->pairs, 40);
    assert_int_equal(c->both_ok, 38);
    NEAR(c->exact_rate, 20.0 / 38);
    /* F1 of the 38: twenty 1s and k/20 for k = 0..17 (sum 153/20) */
    NEAR(c->f1_mean, (20 + 153.0 / 20) / 38);
    /* sorted, p10 sits at rank 3.7: 0.15 + 0.7 x 0.05 */
    NEAR(c->f1_p10, 0.185);
    NEAR(c->f1_p50, 1.0); /* rank 18.5: both 1 */
    NEAR(c->f1_p90, 1.0);
    for (int k = 0; k < 9; k++)
        assert_int_equal(c->f1_hist[k], 2);
    assert_int_equal(c->f1_hist[9], 20);
    NEAR(c->f1_ge_rate, 22.0 / 38); /* twenty 1s, 0.80, 0.85 */
    assert_int_equal(c->json_n, 4);
    NEAR(c->json_mean, 0.75);
    NEAR(c->json_equal_rate, 0.5);
    assert_int_equal(c->judge_n, 0);
    /* agree: i < 20 (exact), i = 30, 31 (JSON equal, although F1 < 0.8),
     * i = 36, 37 (F1 0.80, 0.85); i = 32, 33 JSON 0.5: disagree */
    assert_int_equal(c->agree_n, 24);
    NEAR(c->agreement, 24.0 / 38);
    /* the 95% Wilson score interval of 24/38, computed apart (Python,
     * z = 1.959963984540054): 0.4728395956 .. 0.7661578075 */
    assert_true(fabs(c->agree_lo - 0.4728395956) < 1e-8 && fabs(c->agree_hi - 0.7661578075) < 1e-8);
    /* primary TTFT 10..400 ms: p50 at rank 19.5 = 205 ms, p95 at rank 37.05 = 380.5 ms */
    assert_int_equal(c->primary.errors, 0);
    NEAR(c->primary.ttft_p50, 0.205);
    NEAR(c->primary.ttft_p95, 0.3805);
    NEAR(c->primary.total_p50, 2.05);
    NEAR(c->primary.total_p95, 3.805);
    /* shadow: 38 answers, TTFT 20..760 ms: p50 rank 18.5 = 390 ms, p95 rank 35.15 = 723 ms */
    assert_int_equal(c->shadow.errors, 2);
    assert_int_equal(c->shadow.transport_errors, 1);
    NEAR(c->shadow.error_rate, 0.05);
    assert_int_equal(c->shadow.n_ttft, 38);
    NEAR(c->shadow.ttft_p50, 0.39);
    NEAR(c->shadow.ttft_p95, 0.723);
    NEAR(c->shadow.total_p50, 2.0);
    NEAR(c->shadow.total_p95, 3.665);
    /* cost: gpt-4o-mini $0.15 in / $0.60 out per 1M: 4000 x 0.15e-6 + 2000 x 0.60e-6 = $0.0018;
     * local: (3800 + 1520) tokens / 1000 tokens/s = 5.32 s x $3.60/h = $0.00532 */
    assert_int_equal(c->primary.prompt_tokens, 4000);
    assert_int_equal(c->primary.completion_tokens, 2000);
    NEAR(c->primary.cost, 0.0018);
    NEAR(c->primary.cost_per_1k, 0.045);
    assert_int_equal(c->shadow.prompt_tokens, 3800);
    assert_int_equal(c->shadow.completion_tokens, 1520);
    NEAR(c->shadow.cost, 0.00532);
    NEAR(c->cost_ratio, 0.00532 / 0.0018);
    /* verdict: agreement 63% < 90%; shadow errors 5% > 0% + 1 point; p95 TTFT 723 ms > 1.5 x 380.5 ms
     * and more than 100 ms slower; p95 total 3.665 s < 3.805 s is fine */
    assert_true(c->enough);
    assert_false(c->supported);
    assert_int_equal(c->n_reasons, 3);
    assert_non_null(strstr(c->verdict, "not supported: agreement 63.2% is below 90%"));
    assert_non_null(strstr(c->reasons[1], "shadow errors 5.0% vs primary 0.0%"));
    assert_non_null(strstr(c->reasons[2], "p95 TTFT"));

    const hr_pilot_route *s = &r.routes[1];
    assert_string_equal(s->route, "summarise");
    assert_int_equal(s->pairs, 30);
    NEAR(s->agreement, 1.0);
    /* 30/30: 30 / (30 + z^2) = 0.8864866068 .. 1 */
    assert_true(fabs(s->agree_lo - 0.8864866068) < 1e-8 && s->agree_hi == 1.0);
    NEAR(s->exact_rate, 1.0);
    /* gpt-4o $2.50 in / $10 out: 30 x (200 x 2.5 + 100 x 10) / 1e6 = $0.045; local 9000 tokens = $0.009 */
    NEAR(s->primary.cost, 0.045);
    NEAR(s->shadow.cost, 0.009);
    NEAR(s->cost_ratio, 0.2);
    assert_true(s->supported);
    print_message("%s\n", s->verdict);
    assert_non_null(strstr(s->verdict, "the switch is supported: shadow agrees on 100.0%"));
    assert_non_null(strstr(s->verdict, "at 20% of the primary's cost, p95 TTFT +0 ms"));

    const hr_pilot_route *t = &r.routes[2];
    assert_string_equal(t->route, "tiny");
    assert_false(t->enough);
    assert_false(t->supported);
    assert_non_null(strstr(t->verdict, "not enough data: 5 pairs"));

    /* the outputs carry the same numbers */
    char *js = hr_pilot_json(&r, target);
    assert_non_null(js);
    assert_non_null(strstr(js, "\"route\": \"chat\""));
    assert_non_null(strstr(js, "\"supported\": true"));
    free(js);
    char *html = NULL;
    size_t hl = 0;
    FILE *f = open_memstream(&html, &hl);
    assert_int_equal(hr_pilot_html(&r, target, f, &err), HR_OK);
    fclose(f);
    assert_non_null(strstr(html, "<svg"));
    assert_non_null(strstr(html, "not supported: agreement 63.2%"));
    free(html);

    hr_pilot_free(&r);
    free(pairs);
    /* --route and --since narrow what is read */
    assert_int_equal(hr_usage_pairs_of(target, 0, 0, "tiny", &pairs, &n, &err), HR_OK);
    assert_int_equal(n, 5);
    free(pairs);
    assert_int_equal(hr_usage_pairs_of(target, 1764288100000, 0, NULL, &pairs, &n, &err), HR_OK);
    assert_int_equal(n, 35);
    free(pairs);
    hr_catalog_free(cat);
}

/* A judge's score decides over JSON and F1; unpriced sides say so. */
static void test_judge_and_unpriced(void **state)
{
    (void)state;
    if (ub_pg)
        skip(); /* no database involved */
    hr_pilot_pair_rec p[3];
    memset(p, 0, sizeof p);
    for (int i = 0; i < 3; i++) {
        snprintf(p[i].route, sizeof p[i].route, "r");
        snprintf(p[i].primary_backend, sizeof p[i].primary_backend, "acme");
        snprintf(p[i].primary_model, sizeof p[i].primary_model, "acme-large");
        snprintf(p[i].shadow_backend, sizeof p[i].shadow_backend, "local");
        snprintf(p[i].shadow_model, sizeof p[i].shadow_model, "m");
        p[i].primary_status = p[i].shadow_status = 200;
        p[i].primary_ttft_s = p[i].shadow_ttft_s = p[i].primary_total_s = p[i].shadow_total_s = -1;
        p[i].score_json = p[i].score_judge = -1;
    }
    p[0].score_exact = 1, p[0].score_f1 = 1, p[0].score_judge = 0.2;  /* judge says no */
    p[1].score_exact = 0, p[1].score_f1 = 0, p[1].score_judge = 0.9;  /* judge says yes */
    p[2].score_exact = 0, p[2].score_f1 = 0.9, p[2].score_json = 0.5; /* JSON decides: no */
    hr_pilot_params pp = hr_pilot_defaults();
    pp.min_pairs = 1;
    hr_pilot_report r;
    hr_err err = {0};
    assert_int_equal(hr_pilot_compute(p, 3, NULL, &pp, 0, 0, &r, &err), HR_OK);
    assert_int_equal(r.routes[0].agree_n, 1);
    assert_int_equal(r.routes[0].judge_n, 2);
    NEAR(r.routes[0].judge_mean, 0.55);
    NEAR(r.routes[0].judge_pass_rate, 0.5);
    assert_true(r.routes[0].primary.cost < 0 && r.routes[0].shadow.cost < 0 && r.routes[0].cost_ratio < 0);
    assert_non_null(strstr(r.routes[0].primary.price_basis, "no price for 'acme-large'"));
    assert_true(r.routes[0].primary.ttft_p50 < 0); /* no times known */
    hr_pilot_free(&r);
    double v[5] = {5, 1, 4, 2, 3};
    NEAR(hr_pilot_percentile(v, 5, 0.5), 3);
    NEAR(hr_pilot_percentile(v, 5, 0.95), 4.8);
    assert_true(hr_pilot_percentile(v, 0, 0.5) < 0);
}

/* The agreement interval against the published 95% Wilson score intervals
 * of Newcombe (1998), "Two-sided confidence intervals for the single
 * proportion", Statistics in Medicine 17, Table I (method 3), to their four
 * decimals: 81/263, 15/148, 0/20, 1/29. */
static void test_wilson_published(void **state)
{
    (void)state;
    if (ub_pg)
        skip(); /* no database involved */
    static const struct { int k, n; double lo, hi; } cases[] = {
        {81, 263, 0.2553, 0.3662}, {15, 148, 0.0624, 0.1605}, {0, 20, 0.0, 0.1611}, {1, 29, 0.0061, 0.1718}};
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int n = cases[ci].n;
        hr_pilot_pair_rec *p = calloc((size_t)n, sizeof *p);
        assert_non_null(p);
        for (int i = 0; i < n; i++) {
            snprintf(p[i].route, sizeof p[i].route, "r");
            snprintf(p[i].primary_backend, sizeof p[i].primary_backend, "local");
            snprintf(p[i].shadow_backend, sizeof p[i].shadow_backend, "local");
            p[i].primary_status = p[i].shadow_status = 200;
            p[i].primary_ttft_s = p[i].shadow_ttft_s = p[i].primary_total_s = p[i].shadow_total_s = -1;
            p[i].score_json = p[i].score_judge = -1;
            p[i].score_exact = i < cases[ci].k;
            p[i].score_f1 = i < cases[ci].k ? 1 : 0;
        }
        hr_pilot_params pp = hr_pilot_defaults();
        pp.min_pairs = 1;
        hr_pilot_report r;
        hr_err err = {0};
        assert_int_equal(hr_pilot_compute(p, (size_t)n, NULL, &pp, 0, 0, &r, &err), HR_OK);
        assert_int_equal(r.routes[0].agree_n, cases[ci].k);
        if (!(fabs(r.routes[0].agree_lo - cases[ci].lo) <= 5e-5 && fabs(r.routes[0].agree_hi - cases[ci].hi) <= 5e-5))
            fail_msg("%d/%d: %.5f .. %.5f, published %.4f .. %.4f", cases[ci].k, n, r.routes[0].agree_lo,
                     r.routes[0].agree_hi, cases[ci].lo, cases[ci].hi);
        hr_pilot_free(&r);
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {cmocka_unit_test(test_report), cmocka_unit_test(test_judge_and_unpriced),
                                              cmocka_unit_test(test_wilson_published)};
    const struct CMUnitTest postgres_tests[] = {cmocka_unit_test(test_report), cmocka_unit_test(test_judge_and_unpriced),
                                                cmocka_unit_test(test_wilson_published)};
    int failed = cmocka_run_group_tests(sqlite_tests, ub_setup_sqlite, ub_teardown_sqlite);
    failed += cmocka_run_group_tests(postgres_tests, ub_setup_pg, ub_teardown_pg);
    return failed;
}
