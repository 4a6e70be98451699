/* hearth fit: will a model fit this hardware, how many users at a context,
 * and how fast will it decode (src/report/fit.h). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "quant/quant.h"
#include "report/catalog.h"
#include "report/fit.h"
#include "report/measure.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hearth fit --model (FILE.gguf | CATALOG-NAME) --hw (GPU-NAME | cpu) [options]\n"
            "  --quant Q          weight type for a catalog model (default Q4_K_M; F16 Q8_0 Q6_K Q5_K_M Q4_0 MXFP4 ...)\n"
            "  --ctx C            context per user (default min(4096, the model's))\n"
            "  --users N          concurrent users for the speed estimate (default 1)\n"
            "  --gpus N           devices in tensor parallel (default 1)\n"
            "  --kv-type T        KV cache type: f16 (default on GPUs), f32 (hearth's CPU engine, default for cpu),\n"
            "                     bf16, q8_0, q4_0\n"
            "  -t, --threads N    threads for --hw cpu probes and --measure (default 1)\n"
            "  --measure          also run the engine on FILE.gguf here and calibrate (needs --hw cpu)\n"
            "  --json             one JSON object\n"
            "  --models-file F    merge a model catalog over the built-in one\n"
            "  --gpu-file F       merge hardware tiers over the built-in ones\n"
            "hardware: cpu (this machine, measured) or one of the catalog's GPUs (hearth models --gpus)\n");
}

static bool is_gguf_path(const char *s)
{
    size_t n = strlen(s);
    return strchr(s, '/') || (n > 5 && !strcasecmp(s + n - 5, ".gguf"));
}

static void print_gb(const char *label, double bytes)
{
    printf("  %-24s %12.3f GB\n", label, bytes / 1e9);
}

int cmd_fit(int argc, char **argv)
{
    const char *model = NULL, *hwname = NULL, *quant = NULL, *kv_type = NULL, *models_file = NULL, *gpu_file = NULL;
    long long ctx = 0, users = 1, gpus = 1, threads = 1;
    bool json = false, measure = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        bool ok = true;
#define VAL() ((v = arg_value(argc, argv, &i)) != NULL)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model") || !strcmp(a, "-m"))
            ok = VAL() && (model = v);
        else if (!strcmp(a, "--hw"))
            ok = VAL() && (hwname = v);
        else if (!strcmp(a, "--quant"))
            ok = VAL() && (quant = v);
        else if (!strcmp(a, "--kv-type"))
            ok = VAL() && (kv_type = v);
        else if (!strcmp(a, "--ctx") || !strcmp(a, "-c"))
            ok = VAL() && arg_int(a, v, 1, 1LL << 31, &ctx);
        else if (!strcmp(a, "--users"))
            ok = VAL() && arg_int(a, v, 1, 1 << 20, &users);
        else if (!strcmp(a, "--gpus"))
            ok = VAL() && arg_int(a, v, 1, 1024, &gpus);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = VAL() && arg_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "--models-file"))
            ok = VAL() && (models_file = v);
        else if (!strcmp(a, "--gpu-file"))
            ok = VAL() && (gpu_file = v);
        else if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--measure"))
            measure = true;
        else {
            fprintf(stderr, "hearth fit: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!ok)
            return 2;
#undef VAL
    }
    if (!model || !hwname) {
        fprintf(stderr, "hearth fit: --model and --hw are required\n");
        usage(stderr);
        return 2;
    }
    hr_err err = {0};
    hr_catalog *cat = NULL;
    if (hr_catalog_load(models_file, gpu_file, NULL, &cat, &err) != HR_OK)
        return cli_fail("fit", "%s", err.msg);
    int rc = 1;

    hr_fit_model fm;
    if (is_gguf_path(model)) {
        if (quant) {
            cli_fail("fit", "--quant applies to catalog models; a GGUF file's weights are measured as they are");
            goto out;
        }
        if (hr_fit_model_from_gguf(model, &fm, &err) != HR_OK) {
            cli_fail("fit", "%s", err.msg);
            goto out;
        }
    } else {
        const hr_model_spec *spec = hr_catalog_find_model(cat, model);
        if (!spec) {
            cli_fail("fit", "unknown model '%s' (not a .gguf path; catalog: %s)", model, hr_catalog_model_names(cat));
            goto out;
        }
        if (hr_fit_model_from_spec(spec, quant, &fm, &err) != HR_OK) {
            cli_fail("fit", "%s", err.msg);
            goto out;
        }
    }

    bool cpu = !strcasecmp(hwname, "cpu");
    hr_fit_hw hw;
    hr_cpu_probe probe;
    if (cpu) {
        if (gpus != 1) {
            cli_fail("fit", "--gpus applies to GPU hardware, not cpu");
            goto out;
        }
        uint32_t wtype = HR_TYPE_Q8_0;
        for (uint32_t t = 0; t < HR_TYPE_COUNT; t++)
            if (hr_type_get(t) && hr_type_get(t)->name && !strcasecmp(hr_type_get(t)->name, fm.quant))
                wtype = t;
        if (!strncasecmp(fm.quant, "Q4_K", 4))
            wtype = HR_TYPE_Q4_K;
        else if (!strncasecmp(fm.quant, "Q5_K", 4))
            wtype = HR_TYPE_Q5_K;
        if (hr_measure_cpu((int32_t)threads, wtype, 0, &probe, &err) != HR_OK) {
            cli_fail("fit", "%s", err.msg);
            goto out;
        }
        hr_fit_hw_from_cpu(&probe, &hw);
        if (!kv_type)
            kv_type = "f32";
    } else {
        if (measure) {
            cli_fail("fit", "--measure runs the model on this machine: use --hw cpu");
            goto out;
        }
        const hr_gpu_spec *g = hr_catalog_find_gpu(cat, hwname);
        if (!g) {
            cli_fail("fit", "unknown hardware '%s' (known: cpu, %s)", hwname, hr_catalog_gpu_names(cat));
            goto out;
        }
        hr_fit_hw_from_gpu(g, (int32_t)gpus, &hw);
    }
    if (measure && !fm.exact) {
        cli_fail("fit", "--measure needs a GGUF file to run (got catalog model '%s')", model);
        goto out;
    }

    hr_fit_result r;
    if (hr_fit_compute(&fm, &hw, ctx, (int32_t)users, kv_type, &r, &err) != HR_OK) {
        cli_fail("fit", "%s", err.msg);
        goto out;
    }

    hr_decode_measure dm = {0};
    double predicted = 0, calib = 1.0, measured = 0;
    if (measure) {
        /* predict for exactly what is measured: one user, the context the
         * timed steps run at, then time the engine */
        const int32_t prompt = 64, steps = 32;
        hr_fit_result rm;
        if (hr_fit_compute(&fm, &hw, prompt + steps / 2, 1, kv_type, &rm, &err) != HR_OK) {
            cli_fail("fit", "%s", err.msg);
            goto out;
        }
        predicted = rm.decode_tps_user;
        if (hr_measure_decode(model, (int32_t)threads, prompt, steps, &dm, &err) != HR_OK) {
            cli_fail("fit", "measuring: %s", err.msg);
            goto out;
        }
        measured = dm.best_tokens_per_s;
        calib = predicted > 0 ? measured / predicted : 1.0;
        char line[HR_FIT_ASSUMPTION_LEN];
        snprintf(line, sizeof line,
                 "measured: %d decode steps at positions %d-%d: fastest step %.2f tokens/s, median %.2f; predicted "
                 "%.2f (%+.1f%%); speeds above are scaled by %.3f",
                 dm.steps, dm.prompt_tokens, dm.prompt_tokens + dm.steps - 1, measured, dm.median_tokens_per_s,
                 predicted, 100.0 * (predicted / measured - 1.0), calib);
        if (r.n_assumptions < HR_FIT_MAX_ASSUMPTIONS)
            snprintf(r.assumptions[r.n_assumptions++], HR_FIT_ASSUMPTION_LEN, "%s", line);
        r.decode_tps_user *= calib;
        r.decode_tps_total *= calib;
        r.decode_tps_user_at_max *= calib;
        r.decode_tps_total_at_max *= calib;
    }

    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "model", json_string(fm.exact ? fm.path : fm.spec.name));
        json_object_set_new(o, "quant", json_string(fm.quant));
        json_object_set_new(o, "weights_exact", json_boolean(fm.exact));
        json_object_set_new(o, "hw", json_string(hw.name));
        json_object_set_new(o, "devices", json_integer(hw.devices));
        json_object_set_new(o, "ctx", json_integer(r.ctx));
        json_object_set_new(o, "users", json_integer(r.users));
        json_object_set_new(o, "kv_type", json_string(r.kv_type));
        json_object_set_new(o, "params", json_real(fm.params_total));
        json_object_set_new(o, "weights_bytes", json_integer((json_int_t)llround(r.weights_bytes)));
        json_object_set_new(o, "kv_bytes_per_token", json_integer((json_int_t)llround(r.kv_bytes_per_token)));
        json_object_set_new(o, "kv_bytes_per_user", json_integer((json_int_t)llround(r.kv_bytes_per_seq)));
        json_object_set_new(o, "kv_bytes", json_integer((json_int_t)llround(r.kv_bytes)));
        json_object_set_new(o, "overhead_bytes", json_integer((json_int_t)llround(r.overhead_bytes)));
        json_object_set_new(o, "total_bytes", json_integer((json_int_t)llround(r.total_bytes)));
        json_object_set_new(o, "device_bytes", json_integer((json_int_t)llround(r.device_bytes)));
        json_object_set_new(o, "usable_bytes", json_integer((json_int_t)llround(r.usable_bytes)));
        json_object_set_new(o, "headroom_bytes", json_integer((json_int_t)llround(r.headroom_bytes)));
        json_object_set_new(o, "fits", json_boolean(r.fits));
        if (!r.fits)
            json_object_set_new(o, "why", json_string(r.why));
        json_object_set_new(o, "max_users", json_integer(r.max_users));
        json_object_set_new(o, "bound", json_string(r.bound));
        json_object_set_new(o, "decode_tokens_per_s_per_user", json_real(r.decode_tps_user));
        json_object_set_new(o, "decode_tokens_per_s_total", json_real(r.decode_tps_total));
        json_object_set_new(o, "decode_tokens_per_s_per_user_at_max_users", json_real(r.decode_tps_user_at_max));
        json_object_set_new(o, "decode_tokens_per_s_total_at_max_users", json_real(r.decode_tps_total_at_max));
        if (measure) {
            json_t *mj = json_object();
            json_object_set_new(mj, "predicted_tokens_per_s", json_real(predicted));
            json_object_set_new(mj, "measured_tokens_per_s", json_real(measured));
            json_object_set_new(mj, "measured_median_tokens_per_s", json_real(dm.median_tokens_per_s));
            json_object_set_new(mj, "error_pct", json_real(100.0 * (predicted / measured - 1.0)));
            json_object_set_new(mj, "calibration", json_real(calib));
            json_object_set_new(mj, "steps", json_integer(dm.steps));
            json_object_set_new(mj, "prompt_tokens", json_integer(dm.prompt_tokens));
            json_object_set_new(mj, "threads", json_integer(dm.threads));
            json_object_set_new(o, "measure", mj);
        }
        json_t *as = json_array();
        for (int i = 0; i < r.n_assumptions; i++)
            json_array_append_new(as, json_string(r.assumptions[i]));
        json_object_set_new(o, "assumptions", as);
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        json_decref(o);
        if (!s) {
            cli_fail("fit", "out of memory");
            goto out;
        }
        puts(s);
        free(s);
    } else {
        printf("%s (%s%s) on %s x%d, %lld tokens x %d user%s, KV %s\n", fm.exact ? fm.path : fm.spec.display,
               fm.quant, fm.exact ? ", measured from the file" : "", hw.display, hw.devices, (long long)r.ctx,
               r.users, r.users == 1 ? "" : "s", r.kv_type);
        printf("memory\n");
        print_gb("weights", r.weights_bytes);
        printf("  %-24s %12.0f bytes\n", "KV cache per token", r.kv_bytes_per_token);
        print_gb("KV cache per user", r.kv_bytes_per_seq);
        print_gb("KV cache, all users", r.kv_bytes);
        print_gb("runtime overhead", r.overhead_bytes);
        print_gb("total", r.total_bytes);
        print_gb("device memory", r.device_bytes);
        print_gb("usable", r.usable_bytes);
        if (r.fits)
            printf("  fits, with %.3f GB headroom\n", r.headroom_bytes / 1e9);
        else
            printf("  DOES NOT FIT: short by %.3f GB: %s\n", -r.headroom_bytes / 1e9, r.why);
        printf("  max concurrent users at %lld tokens: %lld\n", (long long)r.ctx, (long long)r.max_users);
        printf("decode (%s-bound at %d user%s)\n", r.bound, r.users, r.users == 1 ? "" : "s");
        printf("  %-24s %12.1f tokens/s\n", "per user", r.decode_tps_user);
        printf("  %-24s %12.1f tokens/s\n", "all users", r.decode_tps_total);
        if (r.max_users > 0 && r.max_users != r.users)
            printf("  at %lld users: %.1f tokens/s each, %.1f tokens/s in all\n", (long long)r.max_users,
                   r.decode_tps_user_at_max, r.decode_tps_total_at_max);
        if (measure)
            printf("measured here (1 user, positions %d-%d): %.2f tokens/s fastest step, %.2f median; predicted %.2f "
                   "(%+.1f%%)\n",
                   dm.prompt_tokens, dm.prompt_tokens + dm.steps - 1, measured, dm.median_tokens_per_s, predicted,
                   100.0 * (predicted / measured - 1.0));
        printf("assumptions\n");
        for (int i = 0; i < r.n_assumptions; i++)
            printf("  - %s\n", r.assumptions[i]);
    }
    rc = 0;
out:
    hr_catalog_free(cat);
    return rc;
}
