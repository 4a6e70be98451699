/* hearth bench: prompt-processing (pp) and generation (tg) speed, reported
 * the way llama-bench reports it (pp512 / tg128, mean +- standard deviation
 * of tokens/s over repetitions; --json uses llama-bench's key names), plus
 * the weight bandwidth a generation step achieved and the peak RSS.
 *
 * pp N: one batch of N tokens of a fresh sequence (after an optional,
 * untimed prefill of -d tokens), logits of the last one.
 * tg N: N single-token decode steps, each with logits, starting at position
 * -d (0 by default, as llama-bench does). Token ids are pseudo-random. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/clock.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "cpu/cpu.h"
#include "engine/engine.h"
#include "engine/kvcache.h"
#include "model/model.h"
#include "synth/synth.h"

#define MAX_LIST 16

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hearth bench -m MODEL.gguf [options]\n"
            "  -p, --n-prompt N[,N..]   prompt lengths to test (default 512; 0 = none)\n"
            "  -n, --n-gen N[,N..]      generation lengths to test (default 128; 0 = none)\n"
            "  -t, --threads N[,N..]    thread counts (default 1)\n"
            "  -r, --repetitions R      timed repetitions per test (default 5)\n"
            "  -d, --n-depth N          tokens already in the context before each test (default 0)\n"
            "  --no-warmup              skip the untimed warm-up run\n"
            "  --json                   print a JSON array (llama-bench's key names) instead of a table\n");
}

static bool parse_list(const char *opt, const char *s, long long min, long long max, long long *out, int *n)
{
    *n = 0;
    char buf[256];
    if (strlen(s) >= sizeof buf) {
        fprintf(stderr, "hearth bench: %s: list too long\n", opt);
        return false;
    }
    strcpy(buf, s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_LIST) {
            fprintf(stderr, "hearth bench: %s: at most %d values\n", opt, MAX_LIST);
            return false;
        }
        if (!arg_int(opt, tok, min, max, &out[*n]))
            return false;
        (*n)++;
    }
    if (*n == 0)
        fprintf(stderr, "hearth bench: %s needs a value\n", opt);
    return *n > 0;
}

static uint64_t peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u;
}

/* "qwen2 0.5B Q4_K_M", as llama-bench's model_type. */
static void model_type(const hr_model *m, char *buf, size_t cap)
{
    const hr_gguf *g = hr_model_gguf(m);
    char label[32];
    hr_gguf_str s;
    if (hr_gguf_get_str(g, "general.size_label", &s))
        hr_gguf_str_copy(s, label, sizeof label);
    else {
        double p = (double)hr_model_n_params(m);
        if (p >= 1e9)
            snprintf(label, sizeof label, "%.*fB", p >= 1e10 ? 0 : 1, p / 1e9);
        else
            snprintf(label, sizeof label, "%.0fM", p / 1e6);
    }
    uint32_t ft = 0;
    const char *ftn = hr_gguf_get_u32(g, "general.file_type", &ft) ? hr_ftype_name(ft) : NULL;
    snprintf(buf, cap, "%s %s %s", hr_model_hparams(m)->arch_name, label, ftn ? ftn : "?");
}

static void cpu_name(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c++;
                while (*c == ' ')
                    c++;
                c[strcspn(c, "\n")] = 0;
                snprintf(buf, cap, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}

typedef struct {
    hr_engine *engine;
    hr_kv *kv;
    int32_t n_vocab;
    int32_t *tok, *pos, *seq;
    bool *want;
    float *logits;
    uint64_t rng;
} bench_ctx;

static int32_t next_token(bench_ctx *c)
{
    c->rng = c->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((c->rng >> 33) % (uint64_t)c->n_vocab);
}

/* One batch of n tokens at positions p0.., logits for the last only. */
static hr_status run_batch(bench_ctx *c, int32_t p0, int32_t n, hr_err *err)
{
    for (int32_t i = 0; i < n; i++) {
        c->tok[i] = next_token(c);
        c->pos[i] = p0 + i;
        c->seq[i] = 0;
        c->want[i] = i == n - 1;
    }
    hr_batch b = {.n_tokens = n, .token = c->tok, .pos = c->pos, .seq = c->seq, .logits = c->want};
    return hr_engine_forward(c->engine, c->kv, &b, c->logits, err);
}

static hr_status run_decode(bench_ctx *c, int32_t p0, int32_t n, hr_err *err)
{
    for (int32_t i = 0; i < n; i++) {
        int32_t t = next_token(c), p = p0 + i, s = 0;
        hr_batch b = {.n_tokens = 1, .token = &t, .pos = &p, .seq = &s, .logits = NULL};
        hr_status st = hr_engine_forward(c->engine, c->kv, &b, c->logits, err);
        if (st)
            return st;
    }
    return HR_OK;
}

/* One test: warm-up (untimed), then reps timed runs; samples_ns[reps]. */
static hr_status run_test(bench_ctx *c, int32_t n_prompt, int32_t n_gen, int32_t depth, int reps, bool warmup,
                          double *samples_ns, hr_err *err)
{
    hr_status st;
    if (warmup) {
        hr_kv_seq_clear(c->kv, 0);
        st = n_prompt ? run_batch(c, 0, n_prompt < 32 ? n_prompt : 32, err) : run_decode(c, 0, 1, err);
        if (st)
            return st;
    }
    for (int r = 0; r < reps; r++) {
        hr_kv_seq_clear(c->kv, 0);
        if (depth && (st = run_batch(c, 0, depth, err)))
            return st;
        double t0 = hr_now_s();
        st = n_prompt ? run_batch(c, depth, n_prompt, err) : run_decode(c, depth, n_gen, err);
        double t1 = hr_now_s();
        if (st)
            return st;
        samples_ns[r] = (t1 - t0) * 1e9;
    }
    hr_kv_seq_clear(c->kv, 0);
    return HR_OK;
}

static void mean_sd(const double *x, int n, double *mean, double *sd)
{
    double s = 0, q = 0;
    for (int i = 0; i < n; i++)
        s += x[i];
    *mean = s / n;
    for (int i = 0; i < n; i++)
        q += (x[i] - *mean) * (x[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0.0;
}

static void fmt_size(uint64_t b, char *buf, size_t cap)
{
    if (b >= (1ull << 30))
        snprintf(buf, cap, "%.2f GiB", b / 1073741824.0);
    else
        snprintf(buf, cap, "%.2f MiB", b / 1048576.0);
}

int cmd_bench(int argc, char **argv)
{
    const char *path = NULL;
    long long pp[MAX_LIST] = {512}, tg[MAX_LIST] = {128}, th[MAX_LIST] = {1}, reps = 5, depth = 0;
    int n_pp = 1, n_tg = 1, n_th = 1, json = 0, warmup = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        bool ok = true;
#define VAL() (v = arg_value(argc, argv, &i))
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            ok = (path = VAL()) != NULL;
        else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt"))
            ok = VAL() && parse_list(a, v, 0, 1 << 20, pp, &n_pp);
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen"))
            ok = VAL() && parse_list(a, v, 0, 1 << 20, tg, &n_tg);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = VAL() && parse_list(a, v, 1, 1024, th, &n_th);
        else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions"))
            ok = VAL() && arg_int(a, v, 1, 1000, &reps);
        else if (!strcmp(a, "-d") || !strcmp(a, "--n-depth"))
            ok = VAL() && arg_int(a, v, 0, 1 << 20, &depth);
        else if (!strcmp(a, "--no-warmup"))
            warmup = 0;
        else if (!strcmp(a, "--json"))
            json = 1;
        else {
            fprintf(stderr, "hearth bench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
#undef VAL
        if (!ok)
            return 2;
    }
    if (!path) {
        usage(stderr);
        return 2;
    }

    hr_err err = {0};
    hr_model *m = NULL;
    if (hr_model_load(path, &m, &err))
        return cli_fail("bench", "%s", err.msg);
    const hr_hparams *hp = hr_model_hparams(m);
    long long need = 1, max_batch = 1;
    for (int i = 0; i < n_pp; i++) {
        need = pp[i] + depth > need ? pp[i] + depth : need;
        max_batch = pp[i] > max_batch ? pp[i] : max_batch;
    }
    for (int i = 0; i < n_tg; i++)
        need = tg[i] + depth > need ? tg[i] + depth : need;
    if (depth > max_batch)
        max_batch = depth;
    if (max_batch > 512)
        max_batch = 512;
    if (need > hp->n_ctx_train) {
        hr_model_free(m);
        return cli_fail("bench", "tests need %lld positions, the model's context is %d", need, hp->n_ctx_train);
    }

    int rc = 1;
    hr_kv *kv = NULL;
    json_t *arr = json ? json_array() : NULL;
    double *samples = malloc((size_t)reps * sizeof *samples);
    bench_ctx c = {.n_vocab = hp->n_vocab, .rng = 42};
    long long max_tok = 1;
    for (int i = 0; i < n_pp; i++)
        max_tok = pp[i] > max_tok ? pp[i] : max_tok;
    if (depth > max_tok)
        max_tok = depth;
    c.tok = malloc((size_t)max_tok * sizeof *c.tok);
    c.pos = malloc((size_t)max_tok * sizeof *c.pos);
    c.seq = malloc((size_t)max_tok * sizeof *c.seq);
    c.want = malloc((size_t)max_tok * sizeof *c.want);
    c.logits = malloc((size_t)hp->n_vocab * sizeof *c.logits);
    hr_kv_params kp = {.block_tokens = 16, .max_seqs = 1};
    kp.n_blocks = (int32_t)((need + kp.block_tokens - 1) / kp.block_tokens);
    if (!samples || !c.tok || !c.pos || !c.seq || !c.want || !c.logits || (json && !arr)) {
        cli_fail("bench", "out of memory");
        goto done;
    }
    if (hr_kv_new(hp, &kp, &kv, &err)) {
        cli_fail("bench", "%s", err.msg);
        goto done;
    }
    c.kv = kv;

    char mtype[96], cpu[128], size_s[32], backend[32];
    model_type(m, mtype, sizeof mtype);
    cpu_name(cpu, sizeof cpu);
    const uint64_t msize = hr_model_weight_bytes(m), nparams = hr_model_n_params(m);
    const uint64_t wbytes = hr_model_active_bytes(m); /* unrouted experts not counted */
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    fmt_size(msize, size_s, sizeof size_s);
    snprintf(backend, sizeof backend, "CPU %s", hr_cpu_isa_name());
    if (!json) {
        printf("| %-22s | %10s | %8s | %-11s | %7s | %13s | %16s | %7s |\n", "model", "size", "params", "backend",
               "threads", "test", "t/s", "GB/s");
        printf("| %.22s | %.10s | %.8s | %.11s | %.7s | %.13s | %.16s | %.7s |\n", "----------------------------",
               "------------", "----------", "-------------", "---------", "---------------", "------------------",
               "---------");
        fflush(stdout);
    }

    for (int ti = 0; ti < n_th; ti++) {
        hr_engine_params ep = {.max_batch = (int32_t)max_batch, .n_threads = (int32_t)th[ti]};
        hr_engine_free(c.engine);
        c.engine = NULL;
        if (hr_engine_new(m, &ep, &c.engine, &err)) {
            cli_fail("bench", "%s", err.msg);
            goto done;
        }
        for (int k = 0; k < n_pp + n_tg; k++) {
            int32_t np = k < n_pp ? (int32_t)pp[k] : 0, ng = k < n_pp ? 0 : (int32_t)tg[k - n_pp];
            if (np == 0 && ng == 0)
                continue;
            time_t now = time(NULL);
            if (run_test(&c, np, ng, (int32_t)depth, (int)reps, warmup, samples, &err)) {
                cli_fail("bench", "%s", err.msg);
                goto done;
            }
            int32_t ntok = np ? np : ng;
            double ts[1000], avg_ns, sd_ns, avg_ts, sd_ts;
            for (int r = 0; r < reps; r++)
                ts[r] = ntok * 1e9 / samples[r];
            mean_sd(samples, (int)reps, &avg_ns, &sd_ns);
            mean_sd(ts, (int)reps, &avg_ts, &sd_ts);
            double gbs = ng ? (double)wbytes * avg_ts / 1e9 : 0.0;
            char test[48];
            if (depth)
                snprintf(test, sizeof test, "%s%d @ d%lld", np ? "pp" : "tg", ntok, depth);
            else
                snprintf(test, sizeof test, "%s%d", np ? "pp" : "tg", ntok);
            if (!json) {
                char tps[48], gb[16] = "";
                snprintf(tps, sizeof tps, "%.2f ± %.2f", avg_ts, sd_ts);
                if (ng)
                    snprintf(gb, sizeof gb, "%.2f", gbs);
                printf("| %-22s | %10s | %6.2f %c | %-11s | %7lld | %13s | %17s | %7s |\n", mtype, size_s,
                       nparams >= 1000000000ull ? nparams / 1e9 : nparams / 1e6,
                       nparams >= 1000000000ull ? 'B' : 'M', backend, th[ti], test, tps, gb);
                fflush(stdout);
                continue;
            }
            char iso[32];
            strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
            json_t *sns = json_array(), *sts = json_array();
            for (int r = 0; r < reps; r++) {
                json_array_append_new(sns, json_integer((json_int_t)llround(samples[r])));
                json_array_append_new(sts, json_real(ts[r]));
            }
            json_t *o = json_object();
            json_object_set_new(o, "build_commit", json_string("hearth-0.1.0"));
            json_object_set_new(o, "cpu_info", json_string(cpu));
            json_object_set_new(o, "gpu_info", json_string(""));
            json_object_set_new(o, "backends", json_string("CPU"));
            json_object_set_new(o, "model_filename", json_string(path));
            json_object_set_new(o, "model_type", json_string(mtype));
            json_object_set_new(o, "model_size", json_integer((json_int_t)msize));
            json_object_set_new(o, "model_n_params", json_integer((json_int_t)nparams));
            json_object_set_new(o, "n_batch", json_integer(max_batch));
            json_object_set_new(o, "n_ubatch", json_integer(max_batch));
            json_object_set_new(o, "n_threads", json_integer(th[ti]));
            json_object_set_new(o, "type_k", json_string("f32"));
            json_object_set_new(o, "type_v", json_string("f32"));
            json_object_set_new(o, "use_mmap", json_true());
            json_object_set_new(o, "n_prompt", json_integer(np));
            json_object_set_new(o, "n_gen", json_integer(ng));
            json_object_set_new(o, "n_depth", json_integer(depth));
            json_object_set_new(o, "test_time", json_string(iso));
            json_object_set_new(o, "avg_ns", json_integer((json_int_t)llround(avg_ns)));
            json_object_set_new(o, "stddev_ns", json_integer((json_int_t)llround(sd_ns)));
            json_object_set_new(o, "avg_ts", json_real(avg_ts));
            json_object_set_new(o, "stddev_ts", json_real(sd_ts));
            json_object_set_new(o, "samples_ns", sns);
            json_object_set_new(o, "samples_ts", sts);
            /* hearth's own keys */
            json_object_set_new(o, "cpu_isa", json_string(hr_cpu_isa_name()));
            json_object_set_new(o, "weight_bytes_per_token", json_integer((json_int_t)wbytes));
            json_object_set_new(o, "bandwidth_gbs", ng ? json_real(gbs) : json_null());
            json_object_set_new(o, "peak_rss_bytes", json_integer((json_int_t)peak_rss_bytes()));
            json_array_append_new(arr, o);
        }
    }
    if (json) {
        char *s = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        if (!s) {
            cli_fail("bench", "out of memory");
            goto done;
        }
        printf("%s\n", s);
        free(s);
    } else {
        printf("\nweights read per generated token: %.2f MiB (every tensor but unrouted experts; 1 row of an untied embedding); "
               "peak RSS %.2f MiB (file-backed pages of the mapping included)\n",
               wbytes / 1048576.0, peak_rss_bytes() / 1048576.0);
    }
    rc = 0;
done:
    json_decref(arr);
    hr_engine_free(c.engine);
    hr_kv_free(kv);
    free(c.tok);
    free(c.pos);
    free(c.seq);
    free(c.want);
    free(c.logits);
    free(samples);
    hr_model_free(m);
    return rc;
}
