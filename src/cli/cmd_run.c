/* hearth run: generate text. Only the generated text goes to stdout; the
 * timing summary goes to stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "cli/runner.h"
#include "sample/sampler.h"
#include "tok/vocab.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hearth run -m MODEL.gguf [-p PROMPT | --tokens \"1 2 3\"] [options]\n"
            "  -p, --prompt TEXT      prompt text (BOS added as the model's metadata says)\n"
            "  --tokens IDS           prompt token ids, used exactly as given\n"
            "  -n, --n-predict N      tokens to generate (default 128)\n"
            "  --temp T               temperature; 0 = greedy (default 0.8)\n"
            "  --top-k K              (default 40; 0 = off)\n"
            "  --top-p P              (default 0.95; 1 = off)\n"
            "  --min-p P              (default 0.05; 0 = off)\n"
            "  --repeat-penalty R     (default 1.0 = off)\n"
            "  --presence-penalty X, --frequency-penalty X\n"
            "  --seed S               RNG seed (default 0)\n"
            "  -c, --ctx-size N       context length (default: the model's)\n"
            "  -t, --threads N        compute threads (default 1)\n"
            "  --ignore-eos           keep generating past end-of-generation tokens\n");
}

/* Encodes the prompt text with BOS/EOS as the vocabulary says. */
static int encode_prompt(const hr_vocab *v, const char *text, int32_t **ids, size_t *n)
{
    size_t len = strlen(text), cap = len + 16;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids)
        return cli_fail("run", "out of memory");
    hr_err err = {0};
    if (hr_tok_encode(v, text, len, true, false, *ids, cap, n, &err))
        return cli_fail("run", "tokenizing the prompt: %s", err.msg);
    return 0;
}

int cmd_run(int argc, char **argv)
{
    const char *model = NULL, *prompt = NULL, *tokens = NULL;
    long long n_predict = 128, threads = 1, ctx = 0, top_k = 40, seed = 0;
    double temp = 0.8, top_p = 0.95, min_p = 0.05, rep = 1.0, pres = 0.0, freq = 0.0;
    int ignore_eos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        bool ok = true;
#define VAL() (v = arg_value(argc, argv, &i))
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            ok = (model = VAL()) != NULL;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
            ok = (prompt = VAL()) != NULL;
        else if (!strcmp(a, "--tokens"))
            ok = (tokens = VAL()) != NULL;
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))
            ok = VAL() && arg_int(a, v, 0, 1 << 30, &n_predict);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
            ok = VAL() && arg_int(a, v, 1, 1024, &threads);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size"))
            ok = VAL() && arg_int(a, v, 0, 1 << 30, &ctx);
        else if (!strcmp(a, "--temp"))
            ok = VAL() && arg_float(a, v, 0.0, 100.0, &temp);
        else if (!strcmp(a, "--top-k"))
            ok = VAL() && arg_int(a, v, 0, 1 << 30, &top_k);
        else if (!strcmp(a, "--top-p"))
            ok = VAL() && arg_float(a, v, 0.0, 1.0, &top_p);
        else if (!strcmp(a, "--min-p"))
            ok = VAL() && arg_float(a, v, 0.0, 1.0, &min_p);
        else if (!strcmp(a, "--repeat-penalty"))
            ok = VAL() && arg_float(a, v, 0.01, 100.0, &rep);
        else if (!strcmp(a, "--presence-penalty"))
            ok = VAL() && arg_float(a, v, -2.0, 2.0, &pres);
        else if (!strcmp(a, "--frequency-penalty"))
            ok = VAL() && arg_float(a, v, -2.0, 2.0, &freq);
        else if (!strcmp(a, "--seed"))
            ok = VAL() && arg_int(a, v, 0, INT64_MAX, &seed);
        else if (!strcmp(a, "--ignore-eos"))
            ignore_eos = 1;
        else {
            fprintf(stderr, "hearth run: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
#undef VAL
        if (!ok)
            return 2;
    }
    if (!model || (prompt && tokens)) {
        usage(stderr);
        return 2;
    }

    cli_runner r;
    if (runner_open(&r, "run", model, (int32_t)ctx, (int32_t)threads))
        return 1;
    const hr_vocab *vocab = hr_model_vocab(r.model);
    const int32_t n_vocab = hr_model_hparams(r.model)->n_vocab;
    int rc = 1;
    int32_t *ids = NULL;
    size_t n_prompt = 0;
    float *logits = NULL;
    hr_sampler *smp = NULL;
    hr_detok *dt = NULL;
    hr_err err = {0};

    if (tokens) {
        if (!arg_tokens(tokens, &ids, &n_prompt)) {
            rc = 2;
            goto done;
        }
    } else if (encode_prompt(vocab, prompt ? prompt : "", &ids, &n_prompt)) {
        goto done;
    }
    if (n_prompt == 0) {
        int32_t bos = hr_vocab_bos(vocab);
        if (bos < 0) {
            cli_fail("run", "empty prompt and the model has no BOS token");
            goto done;
        }
        free(ids);
        ids = malloc(sizeof *ids);
        if (!ids)
            goto done;
        ids[0] = bos;
        n_prompt = 1;
    }
    if (runner_check_tokens(&r, "run", ids, n_prompt))
        goto done;
    if (n_prompt > (size_t)r.n_ctx) {
        cli_fail("run", "prompt of %zu tokens exceeds the context size %d", n_prompt, r.n_ctx);
        goto done;
    }
    if (n_prompt + (size_t)n_predict > (size_t)r.n_ctx) {
        fprintf(stderr, "hearth run: generation limited to %zu tokens by the context size %d\n",
                (size_t)r.n_ctx - n_prompt, r.n_ctx);
        n_predict = r.n_ctx - (long long)n_prompt;
    }

    hr_sample_params sp = hr_sample_defaults();
    sp.temperature = (float)temp;
    sp.top_k = (int32_t)top_k;
    sp.top_p = (float)top_p;
    sp.min_p = (float)min_p;
    sp.repetition_penalty = (float)rep;
    sp.presence_penalty = (float)pres;
    sp.frequency_penalty = (float)freq;
    sp.seed = (uint64_t)seed;
    logits = malloc((size_t)n_vocab * sizeof *logits);
    int32_t *pos = malloc(n_prompt * sizeof *pos), *seq = calloc(n_prompt, sizeof *seq);
    bool *want = calloc(n_prompt, sizeof *want);
    if (!logits || !pos || !seq || !want || hr_sampler_new(&sp, n_vocab, &smp, &err) ||
        hr_detok_new(vocab, false, &dt, &err)) {
        free(pos);
        free(seq);
        free(want);
        cli_fail("run", "%s", err.msg[0] ? err.msg : "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_prompt; i++) {
        pos[i] = (int32_t)i;
        hr_sampler_accept(smp, ids[i]);
    }
    want[n_prompt - 1] = true;
    double t0 = hr_now_s();
    hr_batch b = {.n_tokens = (int32_t)n_prompt, .token = ids, .pos = pos, .seq = seq, .logits = want};
    hr_status st = hr_engine_forward(r.engine, r.kv, &b, logits, &err);
    free(pos);
    free(seq);
    free(want);
    if (st) {
        cli_fail("run", "%s", err.msg);
        goto done;
    }
    double t1 = hr_now_s();
    char text[512];
    long long n_gen = 0;
    for (int32_t p = (int32_t)n_prompt; n_gen < n_predict; p++) {
        int32_t tok = hr_sampler_sample(smp, logits);
        hr_sampler_accept(smp, tok);
        n_gen++;
        if (!ignore_eos && hr_vocab_is_eog(vocab, tok))
            break;
        size_t len = hr_detok_push(dt, tok, text, sizeof text);
        if (len < sizeof text) {
            fwrite(text, 1, len, stdout);
            fflush(stdout);
        }
        if (n_gen == n_predict)
            break;
        int32_t zero = 0;
        hr_batch one = {.n_tokens = 1, .token = &tok, .pos = &p, .seq = &zero, .logits = NULL};
        if (hr_engine_forward(r.engine, r.kv, &one, logits, &err)) {
            cli_fail("run", "%s", err.msg);
            goto done;
        }
    }
    size_t len = hr_detok_flush(dt, text, sizeof text);
    if (len < sizeof text)
        fwrite(text, 1, len, stdout);
    fflush(stdout);
    double t2 = hr_now_s();
    fprintf(stderr, "\nhearth run: prompt %zu tokens in %.3f s (%.1f t/s), generated %lld tokens in %.3f s (%.1f t/s)\n",
            n_prompt, t1 - t0, (double)n_prompt / (t1 - t0 + 1e-9), n_gen, t2 - t1, (double)n_gen / (t2 - t1 + 1e-9));
    rc = 0;
done:
    hr_detok_free(dt);
    hr_sampler_free(smp);
    free(logits);
    free(ids);
    runner_close(&r);
    return rc;
}
