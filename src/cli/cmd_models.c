/* hearth models: the built-in data - open-weight model catalog, hardware
 * tiers and API prices (the JSON files in data/, merged with the user's files). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "report/catalog.h"
#include "report/fit.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: hearth models (--catalog | --gpus | --prices) [--json] [--models-file F] [--gpu-file F]\n"
               "                     [--price-file F]\n"
               "  --catalog       open-weight models: shape, parameters, KV bytes/token, context, license\n"
               "  --gpus          hardware tiers: memory, bandwidth, FLOPs, price per hour\n"
               "  --prices        API prices per 1M tokens with their source and date\n"
               "  --json          a JSON array\n");
}

static json_t *model_json(const hr_model_spec *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(m->name));
    json_object_set_new(o, "display", json_string(m->display));
    json_object_set_new(o, "arch", json_string(m->arch));
    json_object_set_new(o, "params_total", json_real(m->params_total));
    json_object_set_new(o, "params_active", json_real(m->params_active));
    json_object_set_new(o, "layers", json_integer(m->layers));
    if (m->hidden)
        json_object_set_new(o, "hidden", json_integer(m->hidden));
    if (m->heads)
        json_object_set_new(o, "heads", json_integer(m->heads));
    json_object_set_new(o, "attention", json_string(m->attn == HR_ATTN_MLA ? "mla" : "gqa"));
    if (m->kv_heads)
        json_object_set_new(o, "kv_heads", json_integer(m->kv_heads));
    if (m->head_dim)
        json_object_set_new(o, "head_dim", json_integer(m->head_dim));
    if (m->attn == HR_ATTN_MLA) {
        json_object_set_new(o, "kv_lora_rank", json_integer(m->kv_lora_rank));
        json_object_set_new(o, "rope_dim", json_integer(m->rope_dim));
        if (m->indexer_dim)
            json_object_set_new(o, "indexer_dim", json_integer(m->indexer_dim));
    }
    json_object_set_new(o, "kv_layers", json_integer(m->kv_layers));
    if (m->swa_layers) {
        json_object_set_new(o, "swa_layers", json_integer(m->swa_layers));
        json_object_set_new(o, "swa_window", json_integer(m->swa_window));
    }
    if (m->experts) {
        json_object_set_new(o, "experts", json_integer(m->experts));
        json_object_set_new(o, "experts_active", json_integer(m->experts_active));
    }
    json_object_set_new(o, "kv_bytes_per_token_f16", json_integer((json_int_t)hr_fit_kv_bytes_per_token(m, 2)));
    json_object_set_new(o, "context", json_integer(m->context));
    json_object_set_new(o, "license", json_string(m->license));
    json_object_set_new(o, "license_class", json_string(m->license_class));
    json_object_set_new(o, "review_required", json_boolean(!strcmp(m->license_class, "custom")));
    json_object_set_new(o, "gguf", json_string(m->gguf));
    json_object_set_new(o, "source", json_string(m->source));
    if (m->note[0])
        json_object_set_new(o, "note", json_string(m->note));
    return o;
}

static int print_json(json_t *arr)
{
    char *s = json_dumps(arr, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(arr);
    if (!s)
        return cli_fail("models", "out of memory");
    puts(s);
    free(s);
    return 0;
}

static void human_params(double p, char *buf, size_t cap)
{
    if (p >= 1e12)
        snprintf(buf, cap, "%.2fT", p / 1e12);
    else if (p >= 1e9)
        snprintf(buf, cap, "%.1fB", p / 1e9);
    else
        snprintf(buf, cap, "%.0fM", p / 1e6);
}

int cmd_models(int argc, char **argv)
{
    const char *what = NULL, *mf = NULL, *gf = NULL, *pf = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--catalog") || !strcmp(a, "--gpus") || !strcmp(a, "--prices"))
            what = a + 2;
        else if (!strcmp(a, "--json"))
            json = true;
        else if (!strcmp(a, "--models-file") && i + 1 < argc)
            mf = argv[++i];
        else if (!strcmp(a, "--gpu-file") && i + 1 < argc)
            gf = argv[++i];
        else if (!strcmp(a, "--price-file") && i + 1 < argc)
            pf = argv[++i];
        else {
            fprintf(stderr, "hearth models: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!what) {
        usage(stderr);
        return 2;
    }
    hr_err err = {0};
    hr_catalog *c = NULL;
    if (hr_catalog_load(mf, gf, pf, &c, &err) != HR_OK)
        return cli_fail("models", "%s", err.msg);
    int rc = 0;
    if (!strcmp(what, "catalog")) {
        if (json) {
            json_t *arr = json_array();
            for (size_t i = 0; i < hr_catalog_n_models(c); i++)
                json_array_append_new(arr, model_json(hr_catalog_model_at(c, i)));
            rc = print_json(arr);
        } else {
            printf("%-36s %-13s %8s %8s %6s %6s %12s %9s  %s\n", "name", "arch", "params", "active", "layers", "attn",
                   "KV B/token", "context", "license");
            for (size_t i = 0; i < hr_catalog_n_models(c); i++) {
                const hr_model_spec *m = hr_catalog_model_at(c, i);
                char pt[16], pa[16];
                human_params(m->params_total, pt, sizeof pt);
                human_params(m->params_active, pa, sizeof pa);
                printf("%-36s %-13s %8s %8s %6d %6s %12.0f %9lld  %s%s\n", m->name, m->arch, pt, pa, m->layers,
                       m->attn == HR_ATTN_MLA ? "mla" : (m->swa_layers ? "gqa+sw" : "gqa"),
                       hr_fit_kv_bytes_per_token(m, 2), (long long)m->context, m->license_class,
                       strcmp(m->license_class, "custom") ? "" : " (review required)");
            }
            printf("(KV bytes per token at F16, every KV layer; `hearth fit` accounts for sliding windows)\n");
        }
    } else if (!strcmp(what, "gpus")) {
        if (json) {
            json_t *arr = json_array();
            for (size_t i = 0; i < hr_catalog_n_gpus(c); i++) {
                const hr_gpu_spec *g = hr_catalog_gpu_at(c, i);
                json_t *o = json_object();
                json_object_set_new(o, "name", json_string(g->name));
                json_object_set_new(o, "display", json_string(g->display));
                json_object_set_new(o, "memory_gb", json_real(g->memory_gb));
                json_object_set_new(o, "bandwidth_gbs", json_real(g->bandwidth_gbs));
                json_object_set_new(o, "fp16_tflops", json_real(g->fp16_tflops));
                json_object_set_new(o, "price_per_hour", json_real(g->price_per_hour));
                json_object_set_new(o, "price_note", json_string(g->price_note));
                json_array_append_new(arr, o);
            }
            rc = print_json(arr);
        } else {
            printf("%-12s %-30s %8s %10s %10s %8s\n", "name", "display", "mem GB", "GB/s", "FP16 TF", "$/h");
            for (size_t i = 0; i < hr_catalog_n_gpus(c); i++) {
                const hr_gpu_spec *g = hr_catalog_gpu_at(c, i);
                printf("%-12s %-30s %8.0f %10.0f %10.0f %8.2f\n", g->name, g->display, g->memory_gb, g->bandwidth_gbs,
                       g->fp16_tflops, g->price_per_hour);
            }
            printf("cpu          this machine (measured by `hearth fit --hw cpu`)\n");
        }
    } else {
        if (json) {
            json_t *arr = json_array();
            for (size_t i = 0; i < hr_catalog_n_apis(c); i++) {
                const hr_api_price *a = hr_catalog_api_at(c, i);
                json_t *o = json_object();
                json_object_set_new(o, "name", json_string(a->name));
                json_object_set_new(o, "provider", json_string(a->provider));
                json_object_set_new(o, "input", json_real(a->input));
                json_object_set_new(o, "cached_input", json_real(a->cached_input));
                json_object_set_new(o, "output", json_real(a->output));
                json_object_set_new(o, "default", json_boolean(a->is_default));
                json_object_set_new(o, "source", json_string(a->source));
                json_object_set_new(o, "date", json_string(a->date));
                if (a->note[0])
                    json_object_set_new(o, "note", json_string(a->note));
                json_array_append_new(arr, o);
            }
            rc = print_json(arr);
        } else {
            printf("%-20s %-10s %9s %9s %9s  %-10s %s\n", "name", "provider", "input", "cached", "output", "date",
                   "(USD per 1M tokens)");
            for (size_t i = 0; i < hr_catalog_n_apis(c); i++) {
                const hr_api_price *a = hr_catalog_api_at(c, i);
                printf("%-20s %-10s %9.3f %9.3f %9.3f  %-10s %s\n", a->name, a->provider, a->input, a->cached_input,
                       a->output, a->date, a->is_default ? "(default in cost)" : "");
            }
        }
    }
    hr_catalog_free(c);
    return rc;
}
