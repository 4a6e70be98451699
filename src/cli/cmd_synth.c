/* hearth synth: write a GGUF with a real model's shapes and random weights. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "synth/synth.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hearth synth --model NAME --type TYPE [--layers N] [--expert-type T] [--vocab VOCAB.gguf]\n"
            "                    [--seed S] [-t THREADS] -o OUT.gguf\n"
            "       hearth synth --list\n"
            "  --model NAME     a model shape (see --list)\n"
            "  --type TYPE      %s (per-tensor types as llama-quantize picks them)\n"
            "  --layers N       only the first N layers (real per-layer shapes and pattern; block_count N)\n"
            "  --expert-type T  GGML type of the 3-D expert tensors (e.g. Q8_0, MXFP4), overriding TYPE's rule\n"
            "  --vocab FILE     copy the tokenizer from this GGUF (padded to the model's vocabulary size);\n"
            "                   default: a minimal byte-level vocabulary\n"
            "  --seed S         weight RNG seed (default 1); same inputs give the same bytes\n"
            "  -t, --threads N  generation threads (default: online CPUs)\n"
            "  -o, --output F   output file (written as F.tmp, then renamed)\n"
            "  -q, --quiet      no progress on stderr\n",
            hr_synth_ftype_list());
}

static int list_models(void)
{
    printf("%-14s %-8s %7s %5s %6s %4s %4s %5s %6s %9s %7s %8s %5s  %s\n", "model", "arch", "params", "embd",
           "layers", "head", "kv", "hdim", "ffn", "experts", "vocab", "ctx", "tied",
           "size Q8_0 / Q4_0 / Q4_K_M (MB)");
    for (size_t i = 0; i < hr_synth_n_models(); i++) {
        const hr_synth_model *m = hr_synth_model_at(i);
        char ex[32] = "-";
        if (m->n_expert)
            snprintf(ex, sizeof ex, "%dx%d/%d", m->n_expert_used, m->n_ff_exp, m->n_expert);
        printf("%-14s %-8s %7s %5d %6d %4d %4d %5d %6d %9s %7d %8d %5s  %.0f / %.0f / %.0f\n", m->name, m->arch,
               m->size_label, m->n_embd, m->n_layer, m->n_head, m->n_head_kv, m->head_dim, m->n_ff, ex, m->n_vocab,
               m->n_ctx, m->tied ? "yes" : "no", hr_synth_tensor_bytes(m, HR_FTYPE_Q8_0) / 1e6,
               hr_synth_tensor_bytes(m, HR_FTYPE_Q4_0) / 1e6, hr_synth_tensor_bytes(m, HR_FTYPE_Q4_K_M) / 1e6);
    }
    return 0;
}

typedef struct {
    double t0, last;
} progress_state;

static void progress(void *ud, uint64_t done, uint64_t total)
{
    progress_state *ps = ud;
    double t = hr_now_s();
    if (t - ps->last < 0.5 && done < total)
        return;
    ps->last = t;
    fprintf(stderr, "\rhearth synth: %6.1f / %.1f MB (%3.0f%%) %5.1f s", done / 1e6, total / 1e6,
            100.0 * (double)done / (double)(total ? total : 1), t - ps->t0);
    if (done == total)
        fputc('\n', stderr);
}

int cmd_synth(int argc, char **argv)
{
    const char *model = NULL, *type = NULL, *vocab = NULL, *out = NULL, *etype = NULL;
    long long seed = 1, threads = 0, layers = 0;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        bool ok = true;
#define VAL() (v = arg_value(argc, argv, &i))
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--list"))
            return list_models();
        else if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            ok = (model = VAL()) != NULL;
        else if (!strcmp(a, "--type"))
            ok = (type = VAL()) != NULL;
        else if (!strcmp(a, "--layers"))
            ok = VAL() && arg_int(a, v, 1, 100000, &layers);
        else if (!strcmp(a, "--expert-type"))
            ok = (etype = VAL()) != NULL;
        else if (!strcmp(a, "--vocab"))
            ok = (vocab = VAL()) != NULL;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output"))
            ok = (out = VAL()) != NULL;
        else if (!strcmp(a, "--seed"))
            ok = VAL() && arg_int(a, v, 0, INT64_MAX, &seed);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = VAL() && arg_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet"))
            quiet = 1;
        else {
            fprintf(stderr, "hearth synth: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
#undef VAL
        if (!ok)
            return 2;
    }
    if (!model || !type || !out) {
        usage(stderr);
        return 2;
    }
    const hr_synth_model *m = hr_synth_find(model);
    if (!m)
        return cli_fail("synth", "unknown model '%s' (see hearth synth --list)", model);
    hr_ftype ft;
    if (!hr_ftype_from_name(type, &ft))
        return cli_fail("synth", "unknown or unsupported type '%s' (supported: %s)", type, hr_synth_ftype_list());
    uint32_t et = 0;
    if (etype && !hr_synth_type_from_name(etype, &et))
        return cli_fail("synth", "unknown tensor type '%s' for --expert-type", etype);
    if (layers > m->n_layer)
        return cli_fail("synth", "--layers %lld: %s has %d layers", layers, m->name, m->n_layer);
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? n : 1;
    }
    progress_state ps = {.t0 = hr_now_s()};
    hr_synth_params p = {.model = m,
                         .ftype = ft,
                         .vocab_path = vocab,
                         .seed = (uint64_t)seed,
                         .out_path = out,
                         .n_layers = (int32_t)layers,
                         .expert_type_set = etype != NULL,
                         .expert_type = et,
                         .n_threads = (int)threads,
                         .progress = quiet || !isatty(2) ? NULL : progress,
                         .progress_ud = &ps};
    hr_err err = {0};
    if (hr_synth_write(&p, &err))
        return cli_fail("synth", "%s", err.msg);
    if (!quiet)
        fprintf(stderr, "hearth synth: wrote %s (%s %s, %d of %d layers, %.1f MB of tensors) in %.1f s\n", out,
                m->name, hr_ftype_name(ft), layers > 0 ? (int)layers : m->n_layer, m->n_layer,
                hr_synth_params_bytes(&p) / 1e6, hr_now_s() - ps.t0);
    return 0;
}
