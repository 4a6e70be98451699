/* hearth cost: monthly volume from the usage log, self-hosting cost at the
 * measured utilisation, the same traffic priced at each API, break-even and
 * a recommendation (src/report/cost.h). */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "report/catalog.h"
#include "report/cost.h"
#include "store/usage.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hearth cost --usage-db (PATH | postgresql://...) [options]\n"
            "  --since DATE         first day counted (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, UTC; default: first request)\n"
            "  --until DATE         end of the period, exclusive (default: end of the last request)\n"
            "  --model NAME         only requests for this model\n"
            "  --hw GPU             hardware tier whose hourly price is used (default h100-80gb)\n"
            "  --gpu-price USD      price per GPU-hour (overrides the tier's)\n"
            "  --gpus N             GPUs per deployment (default 1)\n"
            "  --capacity TPS       tokens/s one deployment serves at full load (default: measured from the log)\n"
            "  --eng-hours N        engineering hours per month to run it (default 0)\n"
            "  --eng-rate USD       per engineering hour (default 0)\n"
            "  --api NAME           an API to compare (repeatable; default: the price file's default set; 'all')\n"
            "  --private            the data must not leave your infrastructure\n"
            "  --json               one JSON object\n"
            "  --svg FILE           chart of monthly cost against monthly volume\n"
            "  --price-file F       merge API prices over the built-in ones\n"
            "  --gpu-file F         merge hardware tiers over the built-in ones\n");
}

static void iso_date(int64_t ms, char *buf, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int cmd_cost(int argc, char **argv)
{
    const char *db = NULL, *hwname = NULL, *model = NULL, *svg = NULL, *price_file = NULL, *gpu_file = NULL;
    const char *apis_named[HR_COST_MAX_APIS];
    int n_named = 0;
    double gpu_price = -1, capacity = 0, eng_hours = 0, eng_rate = 0;
    long long gpus = 1;
    int64_t since = 0, until = 0;
    bool json = false, priv = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        bool ok = true;
#define VAL() ((v = arg_value(argc, argv, &i)) != NULL)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--usage-db"))
            ok = VAL() && (db = v);
        else if (!strcmp(a, "--since") || !strcmp(a, "--until")) {
            ok = VAL();
            if (ok && !arg_date(v, a[2] == 's' ? &since : &until)) {
                fprintf(stderr, "hearth cost: %s expects YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, got '%s'\n", a, v);
                return 2;
            }
        } else if (!strcmp(a, "--model"))
            ok = VAL() && (model = v);
        else if (!strcmp(a, "--hw"))
            ok = VAL() && (hwname = v);
        else if (!strcmp(a, "--gpu-price"))
            ok = VAL() && arg_float(a, v, 0, 1e6, &gpu_price);
        else if (!strcmp(a, "--gpus"))
            ok = VAL() && arg_int(a, v, 1, 100000, &gpus);
        else if (!strcmp(a, "--capacity"))
            ok = VAL() && arg_float(a, v, 1e-6, 1e12, &capacity);
        else if (!strcmp(a, "--eng-hours"))
            ok = VAL() && arg_float(a, v, 0, 1e6, &eng_hours);
        else if (!strcmp(a, "--eng-rate"))
            ok = VAL() && arg_float(a, v, 0, 1e6, &eng_rate);
        else if (!strcmp(a, "--api")) {
            ok = VAL();
            if (ok && n_named == HR_COST_MAX_APIS) {
                fprintf(stderr, "hearth cost: at most %d --api\n", HR_COST_MAX_APIS);
                return 2;
            }
            if (ok)
                apis_named[n_named++] = v;
        } else if (!strcmp(a, "--private"))
            priv = true;
        else if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--svg"))
            ok = VAL() && (svg = v);
        else if (!strcmp(a, "--price-file"))
            ok = VAL() && (price_file = v);
        else if (!strcmp(a, "--gpu-file"))
            ok = VAL() && (gpu_file = v);
        else {
            fprintf(stderr, "hearth cost: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok)
            return 2;
#undef VAL
    }
    if (!db) {
        fprintf(stderr, "hearth cost: --usage-db is required\n");
        usage(stderr);
        return 2;
    }
    if (since && until && until <= since) {
        fprintf(stderr, "hearth cost: --until must be after --since\n");
        return 2;
    }
    hr_err err = {0};
    hr_catalog *cat = NULL;
    if (hr_catalog_load(NULL, gpu_file, price_file, &cat, &err) != HR_OK)
        return cli_fail("cost", "%s", err.msg);
    int rc = 1;
    const hr_api_price *apis[HR_COST_MAX_APIS];
    int n_apis = 0;
    if (n_named == 0 || (n_named == 1 && !strcasecmp(apis_named[0], "all"))) {
        bool all = n_named == 1;
        for (size_t i = 0; i < hr_catalog_n_apis(cat) && n_apis < HR_COST_MAX_APIS; i++)
            if (all || hr_catalog_api_at(cat, i)->is_default)
                apis[n_apis++] = hr_catalog_api_at(cat, i);
    } else {
        for (int i = 0; i < n_named; i++) {
            const hr_api_price *p = hr_catalog_find_api(cat, apis_named[i]);
            if (!p) {
                cli_fail("cost", "unknown API '%s' (known: %s)", apis_named[i], hr_catalog_api_names(cat));
                goto out;
            }
            apis[n_apis++] = p;
        }
    }
    const char *hw_label = hwname ? hwname : "h100-80gb";
    if (gpu_price < 0 || hwname) {
        const hr_gpu_spec *g = hr_catalog_find_gpu(cat, hw_label);
        if (!g) {
            cli_fail("cost", "unknown hardware '%s' (known: %s)", hw_label, hr_catalog_gpu_names(cat));
            goto out;
        }
        if (gpu_price < 0)
            gpu_price = g->price_per_hour;
    }

    hr_usage_totals t;
    if (hr_usage_totals_of(db, since, until, model, &t, &err) != HR_OK) {
        cli_fail("cost", "%s", err.msg);
        goto out;
    }
    hr_cost_params p = {.gpu_price = gpu_price, .gpus = (int32_t)gpus, .eng_hours = eng_hours, .eng_rate = eng_rate,
                        .capacity_tps = capacity, .data_must_stay = priv, .since_ms = since, .until_ms = until};
    hr_cost_report r;
    if (hr_cost_compute(&t, &p, apis, n_apis, &r, &err) != HR_OK) {
        cli_fail("cost", "%s", err.msg);
        goto out;
    }
    if (svg) {
        FILE *f = fopen(svg, "w");
        if (!f) {
            cli_fail("cost", "cannot write '%s'", svg);
            goto out;
        }
        hr_status s = hr_cost_svg(&r, f, &err);
        if (fclose(f) != 0 && s == HR_OK)
            s = hr_err_set(&err, HR_ERR_IO, "writing '%s' failed", svg);
        if (s != HR_OK) {
            cli_fail("cost", "%s", err.msg);
            goto out;
        }
    }
    char from[32], to[32];
    iso_date(r.since_ms, from, sizeof from);
    iso_date(r.until_ms, to, sizeof to);
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "since", json_string(from));
        json_object_set_new(o, "until", json_string(to));
        json_object_set_new(o, "window_days", json_real(r.window_s / 86400.0));
        json_object_set_new(o, "requests", json_integer((json_int_t)t.requests));
        json_t *lg = json_object();
        json_object_set_new(lg, "prompt_tokens", json_integer((json_int_t)t.prompt_tokens));
        json_object_set_new(lg, "cached_tokens", json_integer((json_int_t)t.cached_tokens));
        json_object_set_new(lg, "completion_tokens", json_integer((json_int_t)t.completion_tokens));
        json_object_set_new(lg, "reasoning_tokens", json_integer((json_int_t)t.reasoning_tokens));
        json_object_set_new(lg, "busy_s", json_real(t.busy_s));
        json_object_set_new(o, "logged", lg);
        json_t *m = json_object();
        json_object_set_new(m, "requests", json_real(r.m_requests));
        json_object_set_new(m, "input_tokens", json_real(r.m_input));
        json_object_set_new(m, "cached_input_tokens", json_real(r.m_cached));
        json_object_set_new(m, "output_tokens", json_real(r.m_output));
        json_object_set_new(m, "total_tokens", json_real(r.m_total));
        json_object_set_new(o, "monthly", m);
        json_t *s = json_object();
        json_object_set_new(s, "hw", json_string(hw_label));
        json_object_set_new(s, "gpus", json_integer(r.p.gpus));
        json_object_set_new(s, "gpu_price_per_hour", json_real(r.p.gpu_price));
        json_object_set_new(s, "capacity_tokens_per_s", json_real(r.capacity_tps));
        json_object_set_new(s, "capacity_measured", json_boolean(r.capacity_measured));
        json_object_set_new(s, "utilisation", json_real(r.utilisation));
        json_object_set_new(s, "deployments", json_integer(r.deployments));
        json_object_set_new(s, "gpu_monthly", json_real(r.gpu_monthly));
        json_object_set_new(s, "eng_monthly", json_real(r.eng_monthly));
        json_object_set_new(s, "monthly", json_real(r.self_monthly));
        json_object_set_new(s, "per_1m_at_utilisation", json_real(r.self_per_1m));
        json_object_set_new(s, "per_1m_full_load", json_real(r.self_per_1m_full));
        json_object_set_new(o, "self_hosted", s);
        json_t *arr = json_array();
        for (int i = 0; i < r.n_apis; i++) {
            json_t *a = json_object();
            json_object_set_new(a, "name", json_string(r.apis[i].api->name));
            json_object_set_new(a, "monthly", json_real(r.apis[i].monthly));
            json_object_set_new(a, "per_1m", json_real(r.apis[i].per_1m));
            json_object_set_new(a, "break_even_tokens_per_month",
                                r.apis[i].break_even >= 0 ? json_real(r.apis[i].break_even) : json_null());
            json_object_set_new(a, "price_source", json_string(r.apis[i].api->source));
            json_object_set_new(a, "price_date", json_string(r.apis[i].api->date));
            json_array_append_new(arr, a);
        }
        json_object_set_new(o, "apis", arr);
        json_object_set_new(o, "recommendation", json_string(r.verdict));
        json_t *rs = json_array();
        for (int i = 0; i < r.n_reasons; i++)
            json_array_append_new(rs, json_string(r.reasons[i]));
        json_object_set_new(o, "reasons", rs);
        char *txt = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(12));
        json_decref(o);
        if (!txt) {
            cli_fail("cost", "out of memory");
            goto out;
        }
        puts(txt);
        free(txt);
    } else {
        printf("usage log %s: %llu requests from %s to %s (%.2f days)\n", db, (unsigned long long)t.requests, from,
               to, r.window_s / 86400.0);
        printf("monthly volume (730 h)      %14.0f tokens  (input %.0f, cached input %.0f, output %.0f)\n", r.m_total,
               r.m_input, r.m_cached, r.m_output);
        printf("self-hosted on %s x%d at $%.2f/GPU-hour%s\n", hw_label, r.p.gpus, r.p.gpu_price,
               r.eng_monthly > 0 ? " + engineering" : "");
        printf("  capacity                  %14.1f tokens/s per deployment (%s)\n", r.capacity_tps,
               r.capacity_measured ? "measured: logged tokens / busy time" : "--capacity");
        printf("  utilisation               %13.2f%%\n", 100 * r.utilisation);
        printf("  monthly cost              %14.2f USD (%lld deployment%s: GPUs %.2f, engineering %.2f)\n",
               r.self_monthly, (long long)r.deployments, r.deployments == 1 ? "" : "s",
               r.gpu_monthly * (double)r.deployments, r.eng_monthly);
        printf("  per 1M tokens             %14.4f USD at this utilisation, %.4f at full load\n", r.self_per_1m,
               r.self_per_1m_full);
        printf("%-22s %14s %12s %22s\n", "API (same traffic)", "USD/month", "USD per 1M", "break-even tokens/month");
        for (int i = 0; i < r.n_apis; i++) {
            char be[32];
            if (r.apis[i].break_even >= 0)
                snprintf(be, sizeof be, "%.0f", r.apis[i].break_even);
            else
                snprintf(be, sizeof be, "never");
            printf("%-22s %14.2f %12.4f %22s\n", r.apis[i].api->name, r.apis[i].monthly, r.apis[i].per_1m, be);
        }
        printf("recommendation: %s\n", r.verdict);
        for (int i = 0; i < r.n_reasons; i++)
            printf("  - %s\n", r.reasons[i]);
        if (svg)
            printf("chart: %s\n", svg);
    }
    rc = 0;
out:
    hr_catalog_free(cat);
    return rc;
}
