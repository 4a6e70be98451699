/* hearth pilot report: what the parallel pilot's pairs in the usage log say,
 * per route: agreement, latency, errors, cost and a verdict
 * (src/report/pilot.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "report/catalog.h"
#include "report/pilot.h"
#include "store/usage.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hearth pilot report --usage-db (PATH | postgresql://...) [options]\n"
            "  --since DATE          first day counted (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, UTC)\n"
            "  --until DATE          end of the period, exclusive\n"
            "  --route NAME          only this route\n"
            "  --json                one JSON object\n"
            "  --html FILE           a self-contained page with charts\n"
            "  --agree-f1 X          a pair agrees when token F1 >= X (default 0.8)\n"
            "  --agree-judge X       ... or, when judged, when the judge gives >= X (default 0.5)\n"
            "  --min-agreement X     share of agreeing pairs the switch needs (default 0.9)\n"
            "  --min-pairs N         pairs with both answers the verdict needs (default 30)\n"
            "  --max-error-delta X   shadow error rate may exceed the primary's by X (default 0.01)\n"
            "  --max-latency-ratio X shadow p95 TTFT / total may be X times the primary's (default 1.5)\n"
            "  --latency-slack S     ... or at most S seconds slower (default 0.1)\n"
            "pricing (API sides by model or backend name from the price data; the local backend as GPU time):\n"
            "  --hw GPU              hardware tier whose hourly price is used (default h100-80gb)\n"
            "  --gpu-price USD       price per GPU-hour (overrides the tier's)\n"
            "  --gpus N              GPUs per deployment (default 1)\n"
            "  --capacity TPS        tokens/s one deployment serves at full load (default: measured from the\n"
            "                        log's rows for the local model, as `hearth cost` does)\n"
            "  --price-file F        merge API prices over the built-in ones\n"
            "  --gpu-file F          merge hardware tiers over the built-in ones\n");
}

static int report(int argc, char **argv)
{
    const char *db = NULL, *route = NULL, *html = NULL, *hwname = NULL, *price_file = NULL, *gpu_file = NULL;
    bool json = false;
    int64_t since = 0, until = 0;
    double gpu_price = -1;
    long long gpus = 1, min_pairs = -1;
    hr_pilot_params p = hr_pilot_defaults();
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
                fprintf(stderr, "hearth pilot: %s expects YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, got '%s'\n", a, v);
                return 2;
            }
        } else if (!strcmp(a, "--route"))
            ok = VAL() && (route = v);
        else if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--html"))
            ok = VAL() && (html = v);
        else if (!strcmp(a, "--agree-f1"))
            ok = VAL() && arg_float(a, v, 0, 1, &p.agree_f1);
        else if (!strcmp(a, "--agree-judge"))
            ok = VAL() && arg_float(a, v, 0, 1, &p.agree_judge);
        else if (!strcmp(a, "--min-agreement"))
            ok = VAL() && arg_float(a, v, 0, 1, &p.min_agreement);
        else if (!strcmp(a, "--min-pairs"))
            ok = VAL() && arg_int(a, v, 1, 1000000000, &min_pairs);
        else if (!strcmp(a, "--max-error-delta"))
            ok = VAL() && arg_float(a, v, 0, 1, &p.max_error_delta);
        else if (!strcmp(a, "--max-latency-ratio"))
            ok = VAL() && arg_float(a, v, 1, 1e6, &p.max_latency_ratio);
        else if (!strcmp(a, "--latency-slack"))
            ok = VAL() && arg_float(a, v, 0, 1e6, &p.latency_slack_s);
        else if (!strcmp(a, "--hw"))
            ok = VAL() && (hwname = v);
        else if (!strcmp(a, "--gpu-price"))
            ok = VAL() && arg_float(a, v, 0, 1e6, &gpu_price);
        else if (!strcmp(a, "--gpus"))
            ok = VAL() && arg_int(a, v, 1, 100000, &gpus);
        else if (!strcmp(a, "--capacity"))
            ok = VAL() && arg_float(a, v, 1e-6, 1e12, &p.capacity_tps);
        else if (!strcmp(a, "--price-file"))
            ok = VAL() && (price_file = v);
        else if (!strcmp(a, "--gpu-file"))
            ok = VAL() && (gpu_file = v);
        else {
            fprintf(stderr, "hearth pilot report: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok)
            return 2;
#undef VAL
    }
    if (!db) {
        fprintf(stderr, "hearth pilot report: --usage-db is required\n");
        usage(stderr);
        return 2;
    }
    if (since && until && until <= since) {
        fprintf(stderr, "hearth pilot report: --until must be after --since\n");
        return 2;
    }
    if (min_pairs > 0)
        p.min_pairs = (int32_t)min_pairs;
    p.gpus = (int32_t)gpus;
    hr_err err = {0};
    hr_catalog *cat = NULL;
    if (hr_catalog_load(NULL, gpu_file, price_file, &cat, &err) != HR_OK)
        return cli_fail("pilot", "%s", err.msg);
    int rc = 1;
    hr_pilot_pair_rec *pairs = NULL;
    size_t n = 0;
    hr_pilot_report r = {0};
    const char *hw_label = hwname ? hwname : "h100-80gb";
    if (gpu_price < 0 || hwname) {
        const hr_gpu_spec *g = hr_catalog_find_gpu(cat, hw_label);
        if (!g) {
            cli_fail("pilot", "unknown hardware '%s' (known: %s)", hw_label, hr_catalog_gpu_names(cat));
            goto out;
        }
        if (gpu_price < 0)
            gpu_price = g->price_per_hour;
    }
    p.gpu_price = gpu_price;
    snprintf(p.gpu_label, sizeof p.gpu_label, "%s", hw_label);
    if (hr_usage_pairs_of(db, since, until, route, &pairs, &n, &err) != HR_OK) {
        cli_fail("pilot", "%s", err.msg);
        goto out;
    }
    /* capacity of the local backend, measured from its rows in the same log */
    if (p.capacity_tps <= 0) {
        for (size_t i = 0; i < n; i++) {
            const char *m = !strcasecmp(pairs[i].primary_backend, "local")  ? pairs[i].primary_model
                            : !strcasecmp(pairs[i].shadow_backend, "local") ? pairs[i].shadow_model
                                                                            : NULL;
            if (!m)
                continue;
            hr_usage_totals t;
            if (hr_usage_totals_of(db, since, until, m, &t, &err) == HR_OK && t.busy_s > 0)
                p.capacity_tps = (double)(t.prompt_tokens + t.completion_tokens) / t.busy_s;
            break;
        }
    }
    if (hr_pilot_compute(pairs, n, cat, &p, since, until, &r, &err) != HR_OK) {
        cli_fail("pilot", "%s", err.msg);
        goto out;
    }
    if (html) {
        FILE *f = fopen(html, "w");
        if (!f) {
            cli_fail("pilot", "cannot write '%s'", html);
            goto out;
        }
        hr_status s = hr_pilot_html(&r, db, f, &err);
        if (fclose(f) != 0 && s == HR_OK)
            s = hr_err_set(&err, HR_ERR_IO, "writing '%s' failed", html);
        if (s != HR_OK) {
            cli_fail("pilot", "%s", err.msg);
            goto out;
        }
    }
    if (json) {
        char *txt = hr_pilot_json(&r, db);
        if (!txt) {
            cli_fail("pilot", "out of memory");
            goto out;
        }
        puts(txt);
        free(txt);
    } else {
        hr_pilot_text(&r, db, stdout);
        if (html)
            printf("\npage: %s\n", html);
    }
    rc = 0;
out:
    hr_pilot_free(&r);
    free(pairs);
    hr_catalog_free(cat);
    return rc;
}

int cmd_pilot(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "report"))
        return report(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "hearth pilot: expected 'report'\n");
    usage(stderr);
    return 2;
}
