/* hearth tokenize / hearth detokenize: the model's tokenizer on its own.
 * Only the GGUF metadata is read (no weights are touched). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "gguf/gguf.h"
#include "tok/vocab.h"

static void tok_usage(FILE *f)
{
    fprintf(f, "usage: hearth tokenize -m MODEL.gguf [--add-special] [--parse-special] (TEXT | --file F)\n"
               "  Prints the token ids of TEXT (or of the file's bytes) on one line.\n"
               "  --add-special    add BOS/EOS as the model's metadata says\n"
               "  --parse-special  recognise special-token text such as <|im_start|>\n");
}

static void detok_usage(FILE *f)
{
    fprintf(f, "usage: hearth detokenize -m MODEL.gguf [--special] IDS...\n"
               "  Prints the text of the ids (spaces or commas between them), then a newline.\n"
               "  --special  render control tokens (e.g. <|im_end|>) instead of dropping them\n");
}

static int open_vocab(const char *cmd, const char *path, hr_gguf **g, hr_vocab **v)
{
    hr_err err = {0};
    if (hr_gguf_open(path, g, &err) != HR_OK)
        return cli_fail(cmd, "%s: %s", path, err.msg);
    if (hr_vocab_load(*g, v, &err) != HR_OK) {
        hr_gguf_close(*g);
        return cli_fail(cmd, "%s: %s", path, err.msg);
    }
    return 0;
}

/* Reads a whole file (at most 1 GiB). */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = !strcmp(path, "-") ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            if (cap >= ((size_t)1 << 30)) {
                free(buf);
                buf = NULL;
                break;
            }
            char *q = realloc(buf, cap * 2);
            if (!q) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = q;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return buf;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL, *file = NULL, *text = NULL;
    bool add_special = false, parse_special = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tok_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = arg_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--file") || !strcmp(a, "-f")) {
            if (!(file = arg_value(argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--add-special")) {
            add_special = true;
        } else if (!strcmp(a, "--parse-special")) {
            parse_special = true;
        } else if (a[0] == '-' && a[1] && strcmp(a, "--") != 0) {
            fprintf(stderr, "hearth tokenize: unknown option '%s'\n", a);
            tok_usage(stderr);
            return 2;
        } else {
            if (!strcmp(a, "--") && i + 1 < argc)
                a = argv[++i];
            if (text) {
                fprintf(stderr, "hearth tokenize: give the text as one argument (quote it)\n");
                return 2;
            }
            text = a;
        }
    }
    if (!model || (!text == !file)) {
        tok_usage(stderr);
        return 2;
    }
    char *owned = NULL;
    size_t len;
    if (file) {
        owned = read_all(file, &len);
        if (!owned)
            return cli_fail("tokenize", "cannot read '%s'", file);
        text = owned;
    } else {
        len = strlen(text);
    }
    hr_gguf *g;
    hr_vocab *v;
    if (open_vocab("tokenize", model, &g, &v)) {
        free(owned);
        return 1;
    }
    int rc = 0;
    size_t cap = len / 2 + 16, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    hr_err err = {0};
    hr_status st = ids ? hr_tok_encode(v, text, len, add_special, parse_special, ids, cap, &n, &err) : HR_ERR_NOMEM;
    if (st == HR_ERR_LIMIT) {
        free(ids);
        cap = n;
        ids = malloc((cap ? cap : 1) * sizeof *ids);
        st = ids ? hr_tok_encode(v, text, len, add_special, parse_special, ids, cap, &n, &err) : HR_ERR_NOMEM;
    }
    if (st != HR_OK) {
        rc = cli_fail("tokenize", "%s", st == HR_ERR_NOMEM && !err.msg[0] ? "out of memory" : err.msg);
    } else {
        for (size_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        if (fflush(stdout) != 0)
            rc = cli_fail("tokenize", "cannot write the output");
    }
    free(ids);
    free(owned);
    hr_vocab_free(v);
    hr_gguf_close(g);
    return rc;
}

int cmd_detokenize(int argc, char **argv)
{
    const char *model = NULL;
    bool special = false;
    int32_t *ids = NULL;
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            detok_usage(stdout);
            free(ids);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = arg_value(argc, argv, &i))) {
                free(ids);
                return 2;
            }
        } else if (!strcmp(a, "--special")) {
            special = true;
        } else if (a[0] == '-' && a[1] && !(a[1] >= '0' && a[1] <= '9')) {
            fprintf(stderr, "hearth detokenize: unknown option '%s'\n", a);
            detok_usage(stderr);
            free(ids);
            return 2;
        } else {
            int32_t *more;
            size_t m;
            if (!arg_tokens(a, &more, &m)) {
                free(ids);
                return 2;
            }
            int32_t *q = realloc(ids, (n + m + 1) * sizeof *ids);
            if (!q) {
                free(more);
                free(ids);
                return cli_fail("detokenize", "out of memory");
            }
            ids = q;
            if (m)
                memcpy(ids + n, more, m * sizeof *ids);
            n += m;
            free(more);
        }
    }
    if (!model) {
        detok_usage(stderr);
        free(ids);
        return 2;
    }
    hr_gguf *g;
    hr_vocab *v;
    if (open_vocab("detokenize", model, &g, &v)) {
        free(ids);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= hr_vocab_n_tokens(v)) {
            rc = cli_fail("detokenize", "token id %d is outside the vocabulary (0..%d)", ids[i],
                          hr_vocab_n_tokens(v) - 1);
            break;
        }
    if (!rc) {
        size_t need = hr_tok_decode(v, ids, n, special, NULL, 0);
        char *buf = need == SIZE_MAX ? NULL : malloc(need + 1);
        if (!buf) {
            rc = cli_fail("detokenize", "out of memory");
        } else {
            hr_tok_decode(v, ids, n, special, buf, need + 1);
            fwrite(buf, 1, need, stdout);
            printf("\n");
            if (fflush(stdout) != 0)
                rc = cli_fail("detokenize", "cannot write the output");
            free(buf);
        }
    }
    free(ids);
    hr_vocab_free(v);
    hr_gguf_close(g);
    return rc;
}
