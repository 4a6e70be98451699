/* pilot.c - the parallel-pilot report (see pilot.h). */
#include "report/pilot.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

hr_pilot_params hr_pilot_defaults(void)
{
    hr_pilot_params p = {.agree_f1 = 0.8,
                         .agree_judge = 0.5,
                         .min_agreement = 0.90,
                         .min_pairs = 30,
                         .max_error_delta = 0.01,
                         .max_latency_ratio = 1.5,
                         .latency_slack_s = 0.1,
                         .gpus = 1};
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double hr_pilot_percentile(double *v, size_t n, double q)
{
    if (n == 0)
        return -1;
    qsort(v, n, sizeof *v, cmp_double);
    double pos = q * (double)(n - 1);
    size_t i = (size_t)floor(pos);
    if (i + 1 >= n)
        return v[n - 1];
    double f = pos - (double)i;
    return v[i] + (v[i + 1] - v[i]) * f;
}

static void copy_label(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

static bool ok_status(int32_t s)
{
    return s >= 200 && s <= 299;
}

static void reason(hr_pilot_route *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason(hr_pilot_route *r, const char *fmt, ...)
{
    if (r->n_reasons >= HR_PILOT_MAX_REASONS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reasons[r->n_reasons++], sizeof r->reasons[0], fmt, ap);
    va_end(ap);
}

/* Prices one side: sets cost from the totals, or marks it unpriced. */
static void price_side(hr_pilot_side *s, const hr_catalog *cat, const hr_pilot_params *p)
{
    double in = (double)s->prompt_tokens, out = (double)s->completion_tokens;
    const hr_api_price *api = NULL;
    if (cat && strcmp(s->model, "(mixed)"))
        api = hr_catalog_find_api(cat, s->model);
    if (!api && cat && strcmp(s->backend, "(mixed)") && strcasecmp(s->backend, "local"))
        api = hr_catalog_find_api(cat, s->backend);
    if (api) {
        s->cost = (in * api->input + out * api->output) / 1e6;
        snprintf(s->price_basis, sizeof s->price_basis, "%s: $%.3g in / $%.3g out per 1M (%s)", api->name,
                 api->input, api->output, api->date);
    } else if (!strcasecmp(s->backend, "local")) {
        if (p->capacity_tps > 0 && p->gpu_price > 0) {
            double hours = (in + out) / p->capacity_tps / 3600.0;
            s->cost = hours * p->gpu_price * (double)(p->gpus > 0 ? p->gpus : 1);
            snprintf(s->price_basis, sizeof s->price_basis, "GPU time at full load: %s x%d at $%.2f/h, %.0f tokens/s",
                     p->gpu_label[0] ? p->gpu_label : "GPU", p->gpus > 0 ? p->gpus : 1, p->gpu_price,
                     p->capacity_tps);
        } else {
            s->cost = -1;
            snprintf(s->price_basis, sizeof s->price_basis, "local, unpriced (no capacity: give --capacity)");
        }
    } else {
        s->cost = -1;
        snprintf(s->price_basis, sizeof s->price_basis, "no price for '%s' (add it with --price-file)", s->model);
    }
    s->cost_per_1k = s->cost >= 0 && s->n > 0 ? s->cost / (double)s->n * 1000.0 : -1;
}

typedef struct {
    double *ttft, *total;
} side_scratch;

static void side_add(hr_pilot_side *s, side_scratch *sc, const char *backend, const char *model, int32_t status,
                     double ttft, double total, int32_t pt, int32_t ct)
{
    if (s->n == 0) {
        copy_label(s->backend, sizeof s->backend, backend);
        copy_label(s->model, sizeof s->model, model);
    } else {
        if (strcmp(s->backend, backend) && strcmp(s->backend, "(mixed)"))
            snprintf(s->backend, sizeof s->backend, "(mixed)");
        if (strcmp(s->model, model) && strcmp(s->model, "(mixed)"))
            snprintf(s->model, sizeof s->model, "(mixed)");
    }
    s->n++;
    if (!ok_status(status)) {
        s->errors++;
        if (status == 0)
            s->transport_errors++;
    } else {
        if (ttft >= 0)
            sc->ttft[s->n_ttft++] = ttft;
        if (total >= 0)
            sc->total[s->n_total++] = total;
    }
    s->prompt_tokens += pt > 0 ? (uint64_t)pt : 0;
    s->completion_tokens += ct > 0 ? (uint64_t)ct : 0;
}

static void side_finish(hr_pilot_side *s, side_scratch *sc)
{
    s->error_rate = s->n ? (double)s->errors / (double)s->n : 0;
    s->ttft_p50 = hr_pilot_percentile(sc->ttft, (size_t)s->n_ttft, 0.50);
    s->ttft_p95 = hr_pilot_percentile(sc->ttft, (size_t)s->n_ttft, 0.95);
    s->total_p50 = hr_pilot_percentile(sc->total, (size_t)s->n_total, 0.50);
    s->total_p95 = hr_pilot_percentile(sc->total, (size_t)s->n_total, 0.95);
}

static void wilson(double k, double n, double *lo, double *hi)
{
    if (n <= 0) {
        *lo = 0;
        *hi = 1;
        return;
    }
    const double z = 1.959964;
    double ph = k / n, d = 1 + z * z / n, c = ph + z * z / (2 * n);
    double m = z * sqrt(ph * (1 - ph) / n + z * z / (4 * n * n));
    *lo = (c - m) / d;
    *hi = (c + m) / d;
    if (*lo < 0)
        *lo = 0;
    if (*hi > 1)
        *hi = 1;
}

/* "+40 ms" / "-1.20 s" */
static void fmt_delta(char *buf, size_t cap, double d)
{
    if (fabs(d) < 1.0)
        snprintf(buf, cap, "%+.0f ms", d * 1000.0);
    else
        snprintf(buf, cap, "%+.2f s", d);
}

/* Latency check of one metric: true when acceptable; appends a reason. */
static bool latency_ok(hr_pilot_route *r, const hr_pilot_params *p, const char *what, double prim, double shad)
{
    if (prim < 0 || shad < 0)
        return true; /* not measured on one side: no evidence against */
    if (shad <= prim * p->max_latency_ratio || shad - prim <= p->latency_slack_s)
        return true;
    reason(r, "shadow p95 %s %.3f s vs primary %.3f s (more than %.2gx and %.0f ms slower)", what, shad, prim,
           p->max_latency_ratio, p->latency_slack_s * 1000);
    return false;
}

static void verdict(hr_pilot_route *r, const hr_pilot_params *p)
{
    r->enough = r->both_ok >= p->min_pairs;
    if (!r->enough) {
        snprintf(r->verdict, sizeof r->verdict,
                 "not enough data: %lld pair%s where both sides answered (the verdict needs %d)",
                 (long long)r->both_ok, r->both_ok == 1 ? "" : "s", p->min_pairs);
        return;
    }
    bool ok = true;
    if (r->agreement < p->min_agreement) {
        reason(r, "agreement %.1f%% is below %.0f%%", 100 * r->agreement, 100 * p->min_agreement);
        ok = false;
    }
    if (r->shadow.error_rate > r->primary.error_rate + p->max_error_delta + 1e-12) {
        reason(r, "shadow errors %.1f%% vs primary %.1f%% (more than %.1f points worse)", 100 * r->shadow.error_rate,
               100 * r->primary.error_rate, 100 * p->max_error_delta);
        ok = false;
    }
    if (!latency_ok(r, p, "TTFT", r->primary.ttft_p95, r->shadow.ttft_p95))
        ok = false;
    if (!latency_ok(r, p, "total", r->primary.total_p95, r->shadow.total_p95))
        ok = false;
    r->supported = ok;
    if (!ok) {
        char all[400] = "";
        for (int i = 0; i < r->n_reasons; i++) {
            size_t l = strlen(all);
            snprintf(all + l, sizeof all - l, "%s%s", i ? "; " : "", r->reasons[i]);
        }
        snprintf(r->verdict, sizeof r->verdict, "not supported: %s", all);
        return;
    }
    char costs[96] = "", lat[96] = "";
    if (r->cost_ratio >= 0 && r->cost_ratio <= 1)
        snprintf(costs, sizeof costs, " at %.0f%% of the primary's cost", 100 * r->cost_ratio);
    else if (r->cost_ratio > 1)
        snprintf(costs, sizeof costs, " but at %.2fx the primary's cost", r->cost_ratio);
    else
        snprintf(costs, sizeof costs, " (cost not comparable: a side is unpriced)");
    if (r->primary.ttft_p95 >= 0 && r->shadow.ttft_p95 >= 0) {
        char d[32];
        fmt_delta(d, sizeof d, r->shadow.ttft_p95 - r->primary.ttft_p95);
        snprintf(lat, sizeof lat, ", p95 TTFT %s", d);
    } else if (r->primary.total_p95 >= 0 && r->shadow.total_p95 >= 0) {
        char d[32];
        fmt_delta(d, sizeof d, r->shadow.total_p95 - r->primary.total_p95);
        snprintf(lat, sizeof lat, ", p95 total %s", d);
    }
    snprintf(r->verdict, sizeof r->verdict, "the switch is supported: shadow agrees on %.1f%% (95%% CI %.0f-%.0f%%)%s%s",
             100 * r->agreement, 100 * r->agree_lo, 100 * r->agree_hi, costs, lat);
}

static hr_status route_compute(const hr_pilot_pair_rec *ps, size_t n, const hr_catalog *cat,
                               const hr_pilot_params *p, hr_pilot_route *r, hr_err *err)
{
    memset(r, 0, sizeof *r);
    copy_label(r->route, sizeof r->route, ps[0].route);
    double *buf = malloc(sizeof(double) * (5 * n + 1));
    if (!buf)
        return hr_err_set(err, HR_ERR_NOMEM, "pilot report: out of memory");
    side_scratch a = {buf, buf + n}, b = {buf + 2 * n, buf + 3 * n};
    double *f1 = buf + 4 * n;
    double f1_sum = 0, json_sum = 0, judge_sum = 0;
    int64_t exact = 0, f1_ge = 0, json_eq = 0, judge_pass = 0;
    for (size_t i = 0; i < n; i++) {
        const hr_pilot_pair_rec *q = &ps[i];
        r->pairs++;
        side_add(&r->primary, &a, q->primary_backend, q->primary_model, q->primary_status, q->primary_ttft_s,
                 q->primary_total_s, q->primary_prompt_tokens, q->primary_completion_tokens);
        side_add(&r->shadow, &b, q->shadow_backend, q->shadow_model, q->shadow_status, q->shadow_ttft_s,
                 q->shadow_total_s, q->shadow_prompt_tokens, q->shadow_completion_tokens);
        if (!ok_status(q->primary_status) || !ok_status(q->shadow_status))
            continue;
        double s_f1 = q->score_f1 < 0 ? 0 : q->score_f1 > 1 ? 1 : q->score_f1;
        bool is_exact = q->score_exact >= 0.5;
        f1[r->both_ok++] = s_f1;
        f1_sum += s_f1;
        exact += is_exact;
        f1_ge += s_f1 >= p->agree_f1;
        int bin = (int)(s_f1 * 10.0);
        r->f1_hist[bin > 9 ? 9 : bin]++;
        bool agree;
        if (q->score_json >= 0) {
            r->json_n++;
            json_sum += q->score_json;
            json_eq += q->score_json >= 1 - 1e-9;
        }
        if (q->score_judge >= 0) {
            r->judge_n++;
            judge_sum += q->score_judge;
            judge_pass += q->score_judge >= p->agree_judge;
        }
        if (q->score_judge >= 0)
            agree = q->score_judge >= p->agree_judge;
        else if (q->score_json >= 0)
            agree = q->score_json >= 1 - 1e-9;
        else
            agree = is_exact || s_f1 >= p->agree_f1;
        r->agree_n += agree;
    }
    double nb = (double)r->both_ok;
    if (r->both_ok) {
        r->exact_rate = (double)exact / nb;
        r->f1_mean = f1_sum / nb;
        r->f1_ge_rate = (double)f1_ge / nb;
        r->f1_p10 = hr_pilot_percentile(f1, (size_t)r->both_ok, 0.10);
        r->f1_p50 = hr_pilot_percentile(f1, (size_t)r->both_ok, 0.50);
        r->f1_p90 = hr_pilot_percentile(f1, (size_t)r->both_ok, 0.90);
        r->agreement = (double)r->agree_n / nb;
    } else
        r->f1_p10 = r->f1_p50 = r->f1_p90 = -1;
    wilson((double)r->agree_n, nb, &r->agree_lo, &r->agree_hi);
    if (r->json_n) {
        r->json_mean = json_sum / (double)r->json_n;
        r->json_equal_rate = (double)json_eq / (double)r->json_n;
    }
    if (r->judge_n) {
        r->judge_mean = judge_sum / (double)r->judge_n;
        r->judge_pass_rate = (double)judge_pass / (double)r->judge_n;
    }
    side_finish(&r->primary, &a);
    side_finish(&r->shadow, &b);
    free(buf);
    price_side(&r->primary, cat, p);
    price_side(&r->shadow, cat, p);
    r->cost_ratio = r->primary.cost > 0 && r->shadow.cost >= 0 ? r->shadow.cost / r->primary.cost : -1;
    verdict(r, p);
    return HR_OK;
}

hr_status hr_pilot_compute(const hr_pilot_pair_rec *pairs, size_t n, const hr_catalog *cat, const hr_pilot_params *pp,
                           int64_t since_ms, int64_t until_ms, hr_pilot_report *out, hr_err *err)
{
    memset(out, 0, sizeof *out);
    out->p = pp ? *pp : hr_pilot_defaults();
    out->since_ms = since_ms;
    out->until_ms = until_ms;
    if (out->p.agree_f1 < 0 || out->p.agree_f1 > 1 || out->p.min_agreement < 0 || out->p.min_agreement > 1 ||
        out->p.min_pairs < 1 || out->p.max_latency_ratio < 1)
        return hr_err_set(err, HR_ERR_INVALID, "pilot report: thresholds out of range");
    size_t nr = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(pairs[i].route, pairs[i - 1].route))
            nr++;
        if (i == 0 || pairs[i].ts_ms < out->first_ms)
            out->first_ms = pairs[i].ts_ms;
        if (pairs[i].ts_ms > out->last_ms)
            out->last_ms = pairs[i].ts_ms;
    }
    if (nr == 0)
        return HR_OK;
    out->routes = calloc(nr, sizeof *out->routes);
    if (!out->routes)
        return hr_err_set(err, HR_ERR_NOMEM, "pilot report: out of memory");
    size_t start = 0;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || strcmp(pairs[i].route, pairs[start].route)) {
            hr_status s = route_compute(pairs + start, i - start, cat, &out->p, &out->routes[out->n_routes], err);
            if (s != HR_OK) {
                hr_pilot_free(out);
                return s;
            }
            out->n_routes++;
            start = i;
        }
    }
    return HR_OK;
}

void hr_pilot_free(hr_pilot_report *r)
{
    free(r->routes);
    r->routes = NULL;
    r->n_routes = 0;
}

/* ---- text ---- */

static const char *secs(double s, char *buf, size_t cap)
{
    if (s < 0)
        snprintf(buf, cap, "-");
    else if (s < 1)
        snprintf(buf, cap, "%.0f ms", s * 1000);
    else
        snprintf(buf, cap, "%.2f s", s);
    return buf;
}

static const char *usd(double v, char *buf, size_t cap)
{
    if (v < 0)
        snprintf(buf, cap, "n/a");
    else if (v < 0.01 && v > 0)
        snprintf(buf, cap, "$%.5f", v);
    else
        snprintf(buf, cap, "$%.2f", v);
    return buf;
}

static void iso(int64_t ms, char *buf, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%d %H:%M:%SZ", &tm);
}

void hr_pilot_text(const hr_pilot_report *r, const char *source, FILE *f)
{
    if (r->n_routes == 0) {
        fprintf(f, "usage log %s: no pilot pairs in the chosen period\n", source);
        return;
    }
    char a[32], b[32];
    iso(r->first_ms, a, sizeof a);
    iso(r->last_ms, b, sizeof b);
    fprintf(f, "usage log %s: pilot pairs from %s to %s\n", source, a, b);
    for (size_t i = 0; i < r->n_routes; i++) {
        const hr_pilot_route *x = &r->routes[i];
        fprintf(f, "\nroute %s: %lld pairs, %lld with both answers\n", x->route, (long long)x->pairs,
                (long long)x->both_ok);
        fprintf(f, "  primary  %s / %s\n  shadow   %s / %s\n", x->primary.backend, x->primary.model, x->shadow.backend,
                x->shadow.model);
        fprintf(f, "agreement  %.1f%% (95%% CI %.1f-%.1f%%; exact, JSON equal or judge pass, else F1 >= %.2f)\n",
                100 * x->agreement, 100 * x->agree_lo, 100 * x->agree_hi, r->p.agree_f1);
        fprintf(f, "  exact match           %6.1f%%\n", 100 * x->exact_rate);
        fprintf(f, "  token F1              mean %.3f, p10 %.3f, p50 %.3f, p90 %.3f; >= %.2f: %.1f%%\n", x->f1_mean,
                x->f1_p10, x->f1_p50, x->f1_p90, r->p.agree_f1, 100 * x->f1_ge_rate);
        fprintf(f, "  F1 histogram          ");
        for (int k = 0; k < 10; k++)
            fprintf(f, "%s%lld", k ? " " : "", (long long)x->f1_hist[k]);
        fprintf(f, "   (0.0-0.1 ... 0.9-1.0)\n");
        if (x->json_n)
            fprintf(f, "  JSON key/value        %lld pairs, mean %.3f, equal %.1f%%\n", (long long)x->json_n,
                    x->json_mean, 100 * x->json_equal_rate);
        else
            fprintf(f, "  JSON key/value        - (no pair where both answers are JSON)\n");
        if (x->judge_n)
            fprintf(f, "  judge                 %lld pairs, mean %.3f, pass (>= %.2f) %.1f%%\n", (long long)x->judge_n,
                    x->judge_mean, r->p.agree_judge, 100 * x->judge_pass_rate);
        else
            fprintf(f, "  judge                 - (no judge)\n");
        fprintf(f, "%-22s %14s %14s\n", "", "primary", "shadow");
        char s1[32], s2[32];
        fprintf(f, "%-22s %14s %14s\n", "  TTFT p50", secs(x->primary.ttft_p50, s1, 32), secs(x->shadow.ttft_p50, s2, 32));
        fprintf(f, "%-22s %14s %14s\n", "  TTFT p95", secs(x->primary.ttft_p95, s1, 32), secs(x->shadow.ttft_p95, s2, 32));
        fprintf(f, "%-22s %14s %14s\n", "  total p50", secs(x->primary.total_p50, s1, 32),
                secs(x->shadow.total_p50, s2, 32));
        fprintf(f, "%-22s %14s %14s\n", "  total p95", secs(x->primary.total_p95, s1, 32),
                secs(x->shadow.total_p95, s2, 32));
        snprintf(s1, sizeof s1, "%.1f%% (%lld)", 100 * x->primary.error_rate, (long long)x->primary.errors);
        snprintf(s2, sizeof s2, "%.1f%% (%lld)", 100 * x->shadow.error_rate, (long long)x->shadow.errors);
        fprintf(f, "%-22s %14s %14s\n", "  errors", s1, s2);
        fprintf(f, "%-22s %14llu %14llu\n", "  prompt tokens", (unsigned long long)x->primary.prompt_tokens,
                (unsigned long long)x->shadow.prompt_tokens);
        fprintf(f, "%-22s %14llu %14llu\n", "  completion tokens", (unsigned long long)x->primary.completion_tokens,
                (unsigned long long)x->shadow.completion_tokens);
        fprintf(f, "%-22s %14s %14s\n", "  cost", usd(x->primary.cost, s1, 32), usd(x->shadow.cost, s2, 32));
        fprintf(f, "%-22s %14s %14s\n", "  cost per 1k requests", usd(x->primary.cost_per_1k, s1, 32),
                usd(x->shadow.cost_per_1k, s2, 32));
        fprintf(f, "  priced: primary %s\n          shadow  %s\n", x->primary.price_basis, x->shadow.price_basis);
        fprintf(f, "verdict: %s\n", x->verdict);
    }
}

/* ---- JSON ---- */

static json_t *opt_real(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

static json_t *side_json(const hr_pilot_side *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "backend", json_string(s->backend));
    json_object_set_new(o, "model", json_string(s->model));
    json_object_set_new(o, "requests", json_integer(s->n));
    json_object_set_new(o, "errors", json_integer(s->errors));
    json_object_set_new(o, "transport_errors", json_integer(s->transport_errors));
    json_object_set_new(o, "error_rate", json_real(s->error_rate));
    json_object_set_new(o, "ttft_p50_s", opt_real(s->ttft_p50));
    json_object_set_new(o, "ttft_p95_s", opt_real(s->ttft_p95));
    json_object_set_new(o, "total_p50_s", opt_real(s->total_p50));
    json_object_set_new(o, "total_p95_s", opt_real(s->total_p95));
    json_object_set_new(o, "prompt_tokens", json_integer((json_int_t)s->prompt_tokens));
    json_object_set_new(o, "completion_tokens", json_integer((json_int_t)s->completion_tokens));
    json_object_set_new(o, "cost_usd", opt_real(s->cost));
    json_object_set_new(o, "cost_per_1k_requests_usd", opt_real(s->cost_per_1k));
    json_object_set_new(o, "price_basis", json_string(s->price_basis));
    return o;
}

char *hr_pilot_json(const hr_pilot_report *r, const char *source)
{
    json_t *o = json_object();
    char a[32];
    json_object_set_new(o, "usage_db", json_string(source));
    if (r->n_routes) {
        iso(r->first_ms, a, sizeof a);
        json_object_set_new(o, "first", json_string(a));
        iso(r->last_ms, a, sizeof a);
        json_object_set_new(o, "last", json_string(a));
    }
    json_t *th = json_object();
    json_object_set_new(th, "agree_f1", json_real(r->p.agree_f1));
    json_object_set_new(th, "agree_judge", json_real(r->p.agree_judge));
    json_object_set_new(th, "min_agreement", json_real(r->p.min_agreement));
    json_object_set_new(th, "min_pairs", json_integer(r->p.min_pairs));
    json_object_set_new(th, "max_error_delta", json_real(r->p.max_error_delta));
    json_object_set_new(th, "max_latency_ratio", json_real(r->p.max_latency_ratio));
    json_object_set_new(th, "latency_slack_s", json_real(r->p.latency_slack_s));
    json_object_set_new(o, "thresholds", th);
    json_t *arr = json_array();
    for (size_t i = 0; i < r->n_routes; i++) {
        const hr_pilot_route *x = &r->routes[i];
        json_t *ro = json_object();
        json_object_set_new(ro, "route", json_string(x->route));
        json_object_set_new(ro, "pairs", json_integer(x->pairs));
        json_object_set_new(ro, "both_answered", json_integer(x->both_ok));
        json_t *ag = json_object();
        json_object_set_new(ag, "agreement", json_real(x->agreement));
        json_object_set_new(ag, "agreement_ci95", json_pack("[f,f]", x->agree_lo, x->agree_hi));
        json_object_set_new(ag, "agreeing_pairs", json_integer(x->agree_n));
        json_object_set_new(ag, "exact_match_rate", json_real(x->exact_rate));
        json_object_set_new(ag, "f1_mean", json_real(x->f1_mean));
        json_object_set_new(ag, "f1_p10", opt_real(x->f1_p10));
        json_object_set_new(ag, "f1_p50", opt_real(x->f1_p50));
        json_object_set_new(ag, "f1_p90", opt_real(x->f1_p90));
        json_object_set_new(ag, "f1_at_least_threshold_rate", json_real(x->f1_ge_rate));
        json_t *h = json_array();
        for (int k = 0; k < 10; k++)
            json_array_append_new(h, json_integer(x->f1_hist[k]));
        json_object_set_new(ag, "f1_histogram", h);
        json_object_set_new(ag, "json_pairs", json_integer(x->json_n));
        json_object_set_new(ag, "json_mean", x->json_n ? json_real(x->json_mean) : json_null());
        json_object_set_new(ag, "json_equal_rate", x->json_n ? json_real(x->json_equal_rate) : json_null());
        json_object_set_new(ag, "judge_pairs", json_integer(x->judge_n));
        json_object_set_new(ag, "judge_mean", x->judge_n ? json_real(x->judge_mean) : json_null());
        json_object_set_new(ag, "judge_pass_rate", x->judge_n ? json_real(x->judge_pass_rate) : json_null());
        json_object_set_new(ro, "agreement", ag);
        json_object_set_new(ro, "primary", side_json(&x->primary));
        json_object_set_new(ro, "shadow", side_json(&x->shadow));
        json_object_set_new(ro, "cost_ratio", opt_real(x->cost_ratio));
        json_object_set_new(ro, "enough_data", json_boolean(x->enough));
        json_object_set_new(ro, "supported", json_boolean(x->supported));
        json_object_set_new(ro, "verdict", json_string(x->verdict));
        json_t *rs = json_array();
        for (int k = 0; k < x->n_reasons; k++)
            json_array_append_new(rs, json_string(x->reasons[k]));
        json_object_set_new(ro, "reasons", rs);
        json_array_append_new(arr, ro);
    }
    json_object_set_new(o, "routes", arr);
    char *txt = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(o);
    return txt;
}

/* ---- HTML ---- */

static void esc(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

#define C_PRIMARY "#4c72b0"
#define C_SHADOW "#dd8452"

/* F1 histogram: 10 bars, the agreement threshold dashed. */
static void svg_hist(FILE *f, const hr_pilot_route *x, double thr)
{
    const int W = 520, H = 240, L = 44, T = 30, PW = 450, PH = 160;
    int64_t mx = 1;
    for (int k = 0; k < 10; k++)
        if (x->f1_hist[k] > mx)
            mx = x->f1_hist[k];
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n", W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"18\" font-size=\"13\" font-weight=\"bold\">Token F1 of the pairs (both answered)</text>\n", L);
    for (int g = 0; g <= 4; g++) {
        double y = T + PH - PH * g / 4.0;
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>", L, y, L + PW, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.0f</text>\n", L - 5, y + 4, (double)mx * g / 4.0);
    }
    double bw = PW / 10.0;
    for (int k = 0; k < 10; k++) {
        double h = PH * (double)x->f1_hist[k] / (double)mx;
        bool agree = (k + 1) / 10.0 > thr + 1e-9;
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%.1f-%.1f: %lld</title></rect>\n",
                L + k * bw + 2, T + PH - h, bw - 4, h, agree ? "#55a868" : "#c44e52", k / 10.0, (k + 1) / 10.0,
                (long long)x->f1_hist[k]);
        if (x->f1_hist[k])
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%lld</text>\n", L + k * bw + bw / 2,
                    T + PH - h - 3, (long long)x->f1_hist[k]);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.1f</text>\n", L + k * bw, T + PH + 14, k / 10.0);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">1.0</text>\n", L + PW, T + PH + 14);
    double tx = L + PW * thr;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#333\" stroke-dasharray=\"4 3\"/>\n", tx, T - 4,
            tx, T + PH);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"end\">agree: F1 &#8805; %.2f &#8594;</text>\n", tx - 3, T + 6, thr);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">token F1 (shadow vs primary)</text>\n", L + PW / 2, H - 12);
    fprintf(f, "</svg>\n");
}

/* Grouped horizontal bars: p50 / p95 of TTFT and total, per side. */
static void svg_latency(FILE *f, const hr_pilot_route *x)
{
    const char *lab[4] = {"TTFT p50", "TTFT p95", "total p50", "total p95"};
    double pv[4] = {x->primary.ttft_p50, x->primary.ttft_p95, x->primary.total_p50, x->primary.total_p95};
    double sv[4] = {x->shadow.ttft_p50, x->shadow.ttft_p95, x->shadow.total_p50, x->shadow.total_p95};
    double mx = 1e-3;
    for (int i = 0; i < 4; i++) {
        if (pv[i] > mx)
            mx = pv[i];
        if (sv[i] > mx)
            mx = sv[i];
    }
    const int W = 520, L = 80, T = 30, PW = 330, row = 44, H = T + 4 * row + 40;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n", W, H, W, H);
    fprintf(f, "<text x=\"10\" y=\"18\" font-size=\"13\" font-weight=\"bold\">Latency (successful answers)</text>\n");
    char b[32];
    for (int i = 0; i < 4; i++) {
        double y = T + i * row;
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", L - 6, y + 20, lab[i]);
        const double v[2] = {pv[i], sv[i]};
        for (int s = 0; s < 2; s++) {
            double w = v[s] < 0 ? 0 : PW * v[s] / mx;
            fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"16\" fill=\"%s\"/>", L, y + 4 + s * 18, w,
                    s ? C_SHADOW : C_PRIMARY);
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", L + w + 4, y + 16 + s * 18, secs(v[s], b, sizeof b));
        }
    }
    double ly = T + 4 * row + 14;
    fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"" C_PRIMARY "\"/><text x=\"%d\" y=\"%.1f\">primary</text>",
            L, ly, L + 16, ly + 10);
    fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"12\" height=\"12\" fill=\"" C_SHADOW "\"/><text x=\"%d\" y=\"%.1f\">shadow</text>\n",
            L + 90, ly, L + 106, ly + 10);
    fprintf(f, "</svg>\n");
}

/* Two bars: cost per 1000 requests, and error rates. */
static void svg_cost_errors(FILE *f, const hr_pilot_route *x)
{
    const int W = 520, H = 200, L = 120, PW = 300;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n", W, H, W, H);
    fprintf(f, "<text x=\"10\" y=\"18\" font-size=\"13\" font-weight=\"bold\">Cost per 1000 requests and error rate</text>\n");
    double cm = x->primary.cost_per_1k > x->shadow.cost_per_1k ? x->primary.cost_per_1k : x->shadow.cost_per_1k;
    double em = x->primary.error_rate > x->shadow.error_rate ? x->primary.error_rate : x->shadow.error_rate;
    if (em < 0.05)
        em = 0.05;
    char b[32];
    const hr_pilot_side *sd[2] = {&x->primary, &x->shadow};
    for (int s = 0; s < 2; s++) {
        double y = 34 + s * 24;
        double v = sd[s]->cost_per_1k;
        double w = v > 0 && cm > 0 ? PW * v / cm : 0;
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s cost</text>", L - 6, y + 13, s ? "shadow" : "primary");
        fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"18\" fill=\"%s\"/>", L, y, w, s ? C_SHADOW : C_PRIMARY);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", L + w + 4, y + 13, usd(v, b, sizeof b));
        y = 110 + s * 24;
        w = PW * sd[s]->error_rate / em;
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s errors</text>", L - 6, y + 13, s ? "shadow" : "primary");
        fprintf(f, "<rect x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"18\" fill=\"%s\"/>", L, y, w, s ? C_SHADOW : C_PRIMARY);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%.1f%% (%lld)</text>\n", L + w + 4, y + 13, 100 * sd[s]->error_rate,
                (long long)sd[s]->errors);
    }
    fprintf(f, "</svg>\n");
}

/* Agreement as one stacked bar with the threshold marked. */
static void svg_agreement(FILE *f, const hr_pilot_route *x, double min_agree)
{
    const int W = 1060, H = 70, L = 10, PW = 1000;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    double a = x->agreement;
    fprintf(f, "<rect x=\"%d\" y=\"14\" width=\"%.1f\" height=\"26\" fill=\"#55a868\"/>", L, PW * a);
    fprintf(f, "<rect x=\"%.1f\" y=\"14\" width=\"%.1f\" height=\"26\" fill=\"#c44e52\"/>\n", L + PW * a, PW * (1 - a));
    fprintf(f, "<rect x=\"%.1f\" y=\"24\" width=\"%.1f\" height=\"6\" fill=\"#222\" opacity=\"0.45\"><title>95%% CI</title></rect>\n",
            L + PW * x->agree_lo, PW * (x->agree_hi - x->agree_lo));
    if (x->both_ok)
        fprintf(f, "<text x=\"%d\" y=\"32\" fill=\"white\" font-weight=\"bold\">%.1f%% agree</text>\n", L + 6, 100 * a);
    double tx = L + PW * min_agree;
    fprintf(f, "<line x1=\"%.1f\" y1=\"8\" x2=\"%.1f\" y2=\"46\" stroke=\"#000\" stroke-width=\"2\"/>", tx, tx);
    fprintf(f, "<text x=\"%.1f\" y=\"60\" text-anchor=\"middle\">needed: %.0f%%</text>\n", tx, 100 * min_agree);
    fprintf(f, "</svg>\n");
}

hr_status hr_pilot_html(const hr_pilot_report *r, const char *source, FILE *f, hr_err *err)
{
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>hearth pilot report</title>\n"
               "<style>body{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}"
               "h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}"
               ".v{padding:10px 14px;border-radius:6px;font-size:15px;margin:10px 0}"
               ".ok{background:#e3f4e6;border:1px solid #55a868}.no{background:#fbe6e6;border:1px solid #c44e52}"
               ".na{background:#eee;border:1px solid #999}table{border-collapse:collapse;margin:8px 0}"
               "td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}td:first-child,th:first-child{text-align:left}"
               ".charts{display:flex;flex-wrap:wrap;gap:12px}.small{color:#666;font-size:12px}</style></head><body>\n");
    fprintf(f, "<h1>Parallel pilot report</h1>\n<p class=\"small\">usage log ");
    esc(f, source);
    if (r->n_routes) {
        char a[32], b[32];
        iso(r->first_ms, a, sizeof a);
        iso(r->last_ms, b, sizeof b);
        fprintf(f, ", pairs from %s to %s", a, b);
    }
    fprintf(f, ". A pair agrees when a judge passed it (&#8805; %.2f), else when both answers are JSON with equal keys and "
               "values, else on an exact match or token F1 &#8805; %.2f. The switch is supported with at least %d pairs, "
               "agreement &#8805; %.0f%%, shadow errors at most %.1f points above the primary's, and shadow p95 latencies "
               "within %.2gx (or %.0f ms) of the primary's.</p>\n",
            r->p.agree_judge, r->p.agree_f1, r->p.min_pairs, 100 * r->p.min_agreement, 100 * r->p.max_error_delta,
            r->p.max_latency_ratio, r->p.latency_slack_s * 1000);
    if (r->n_routes == 0)
        fprintf(f, "<p>No pilot pairs in the chosen period.</p>\n");
    for (size_t i = 0; i < r->n_routes; i++) {
        const hr_pilot_route *x = &r->routes[i];
        char s1[32], s2[32];
        fprintf(f, "<h2>Route ");
        esc(f, x->route);
        fprintf(f, "</h2>\n<p>primary <b>");
        esc(f, x->primary.backend);
        fprintf(f, " / ");
        esc(f, x->primary.model);
        fprintf(f, "</b>, shadow <b>");
        esc(f, x->shadow.backend);
        fprintf(f, " / ");
        esc(f, x->shadow.model);
        fprintf(f, "</b>: %lld pairs, %lld with both answers</p>\n", (long long)x->pairs, (long long)x->both_ok);
        fprintf(f, "<div class=\"v %s\"><b>Verdict:</b> ", !x->enough ? "na" : x->supported ? "ok" : "no");
        esc(f, x->verdict);
        fprintf(f, "</div>\n");
        svg_agreement(f, x, r->p.min_agreement);
        fprintf(f, "<div class=\"charts\">\n");
        svg_hist(f, x, r->p.agree_f1);
        svg_latency(f, x);
        svg_cost_errors(f, x);
        fprintf(f, "</div>\n<table><tr><th></th><th>primary</th><th>shadow</th></tr>\n");
        fprintf(f, "<tr><td>TTFT p50 / p95</td><td>%s / ", secs(x->primary.ttft_p50, s1, 32));
        fprintf(f, "%s</td>", secs(x->primary.ttft_p95, s1, 32));
        fprintf(f, "<td>%s / ", secs(x->shadow.ttft_p50, s2, 32));
        fprintf(f, "%s</td></tr>\n", secs(x->shadow.ttft_p95, s2, 32));
        fprintf(f, "<tr><td>total p50 / p95</td><td>%s / ", secs(x->primary.total_p50, s1, 32));
        fprintf(f, "%s</td>", secs(x->primary.total_p95, s1, 32));
        fprintf(f, "<td>%s / ", secs(x->shadow.total_p50, s2, 32));
        fprintf(f, "%s</td></tr>\n", secs(x->shadow.total_p95, s2, 32));
        fprintf(f, "<tr><td>errors</td><td>%.1f%% (%lld)</td><td>%.1f%% (%lld)</td></tr>\n", 100 * x->primary.error_rate,
                (long long)x->primary.errors, 100 * x->shadow.error_rate, (long long)x->shadow.errors);
        fprintf(f, "<tr><td>tokens in / out</td><td>%llu / %llu</td><td>%llu / %llu</td></tr>\n",
                (unsigned long long)x->primary.prompt_tokens, (unsigned long long)x->primary.completion_tokens,
                (unsigned long long)x->shadow.prompt_tokens, (unsigned long long)x->shadow.completion_tokens);
        fprintf(f, "<tr><td>cost (these pairs)</td><td>%s</td>", usd(x->primary.cost, s1, 32));
        fprintf(f, "<td>%s</td></tr>\n", usd(x->shadow.cost, s2, 32));
        fprintf(f, "<tr><td>priced as</td><td class=\"small\">");
        esc(f, x->primary.price_basis);
        fprintf(f, "</td><td class=\"small\">");
        esc(f, x->shadow.price_basis);
        fprintf(f, "</td></tr>\n</table>\n");
        fprintf(f, "<table><tr><th>agreement measure</th><th>value</th></tr>\n");
        fprintf(f, "<tr><td>agreement (95%% CI)</td><td>%.1f%% (%.1f-%.1f%%)</td></tr>\n", 100 * x->agreement,
                100 * x->agree_lo, 100 * x->agree_hi);
        fprintf(f, "<tr><td>exact match</td><td>%.1f%%</td></tr>\n", 100 * x->exact_rate);
        fprintf(f, "<tr><td>token F1 mean / p10 / p50 / p90</td><td>%.3f / %.3f / %.3f / %.3f</td></tr>\n", x->f1_mean,
                x->f1_p10, x->f1_p50, x->f1_p90);
        if (x->json_n)
            fprintf(f, "<tr><td>JSON key/value (%lld pairs) mean / equal</td><td>%.3f / %.1f%%</td></tr>\n",
                    (long long)x->json_n, x->json_mean, 100 * x->json_equal_rate);
        if (x->judge_n)
            fprintf(f, "<tr><td>judge (%lld pairs) mean / pass</td><td>%.3f / %.1f%%</td></tr>\n", (long long)x->judge_n,
                    x->judge_mean, 100 * x->judge_pass_rate);
        fprintf(f, "</table>\n");
    }
    fprintf(f, "</body></html>\n");
    if (ferror(f))
        return hr_err_set(err, HR_ERR_IO, "pilot report: writing the HTML failed");
    return HR_OK;
}
