/* hearth logits: teacher-forced logits of a token sequence, as raw float32
 * rows [position][n_vocab] (little-endian), for checking against other
 * implementations. The tokens are used exactly as given (no BOS added). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/runner.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: hearth logits -m MODEL.gguf --tokens \"1 2 3 ...\" [--out FILE] [-t THREADS]\n"
               "Writes float32 logits [positions][n_vocab] to FILE (default: stdout).\n");
}

int cmd_logits(int argc, char **argv)
{
    const char *model = NULL, *tokens = NULL, *outpath = NULL;
    long long threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = arg_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--tokens")) {
            if (!(tokens = arg_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--out") || !strcmp(a, "-o")) {
            if (!(outpath = arg_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!(v = arg_value(argc, argv, &i)) || !arg_int(a, v, 1, 1024, &threads))
                return 2;
        } else {
            fprintf(stderr, "hearth logits: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model || !tokens) {
        usage(stderr);
        return 2;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (!arg_tokens(tokens, &ids, &n))
        return 2;
    if (n == 0) {
        free(ids);
        return cli_fail("logits", "--tokens is empty");
    }
    cli_runner r;
    if (runner_open(&r, "logits", model, 0, (int32_t)threads)) {
        free(ids);
        return 1;
    }
    int rc = 1;
    const int32_t n_vocab = hr_model_hparams(r.model)->n_vocab;
    int32_t *pos = malloc(n * sizeof *pos), *seq = calloc(n, sizeof *seq);
    float *logits = malloc(n * (size_t)n_vocab * sizeof *logits);
    FILE *out = NULL;
    if (!pos || !seq || !logits) {
        cli_fail("logits", "out of memory");
        goto done;
    }
    if (runner_check_tokens(&r, "logits", ids, n))
        goto done;
    if (n > (size_t)r.n_ctx) {
        cli_fail("logits", "%zu tokens exceed the context of %d", n, r.n_ctx);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        pos[i] = (int32_t)i;
    hr_batch b = {.n_tokens = (int32_t)n, .token = ids, .pos = pos, .seq = seq, .logits = NULL};
    hr_err err = {0};
    if (hr_engine_forward(r.engine, r.kv, &b, logits, &err)) {
        cli_fail("logits", "%s", err.msg);
        goto done;
    }
    out = outpath ? fopen(outpath, "wb") : stdout;
    if (!out) {
        cli_fail("logits", "cannot write '%s'", outpath);
        goto done;
    }
    if (fwrite(logits, sizeof *logits, n * (size_t)n_vocab, out) != n * (size_t)n_vocab || fflush(out)) {
        cli_fail("logits", "write failed");
        goto done;
    }
    rc = 0;
done:
    if (out && out != stdout)
        fclose(out);
    free(pos);
    free(seq);
    free(logits);
    free(ids);
    runner_close(&r);
    return rc;
}
