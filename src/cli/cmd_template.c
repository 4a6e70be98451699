/* cmd_template.c - `hearth template`: render a chat template with a JSON
 * context (the object's members are the template variables) and print it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "tmpl/jinja.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hearth template (-m MODEL.gguf | --template FILE.jinja) --context FILE.json\n"
            "                       [--now YYYY-MM-DDTHH:MM:SS]\n\n"
            "Renders a Jinja chat template the way Hugging Face apply_chat_template does and\n"
            "prints the text. The context file is a JSON object whose members are the template\n"
            "variables (messages, tools, add_generation_prompt, bos_token, eos_token, ...).\n"
            "--now fixes the clock seen by strftime_now (default: the real local time).\n");
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            if (cap > ((size_t)64 << 20)) {
                free(buf);
                buf = NULL;
                errno = EFBIG;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    if (buf && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf)
        *len = n;
    return buf;
}

#include "gguf/gguf.h"

/* Reads tokenizer.chat_template (and the bos/eos token text) from a GGUF file. */
static char *template_from_gguf(const char *path, size_t *len, char **bos, char **eos, hr_err *err);

int cmd_template(int argc, char **argv)
{
    const char *model = NULL, *tpath = NULL, *cpath = NULL, *now = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "hearth template: option '%s' needs a value\n", a);
            usage(stderr);
            return 2;
        }
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = argv[++i];
        else if (!strcmp(a, "--template") || !strcmp(a, "-t")) tpath = argv[++i];
        else if (!strcmp(a, "--context") || !strcmp(a, "-c")) cpath = argv[++i];
        else if (!strcmp(a, "--now")) now = argv[++i];
        else {
            fprintf(stderr, "hearth template: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if ((!model == !tpath) || !cpath) {
        usage(stderr);
        return 2;
    }
    struct tm fixed;
    memset(&fixed, 0, sizeof fixed);
    if (now) {
        int Y, M, D, h = 0, m = 0, s = 0;
        if (sscanf(now, "%d-%d-%d%*[T ]%d:%d:%d", &Y, &M, &D, &h, &m, &s) < 3 || M < 1 || M > 12 || D < 1 ||
            D > 31) {
            fprintf(stderr, "hearth template: --now wants YYYY-MM-DDTHH:MM:SS, got '%s'\n", now);
            return 2;
        }
        fixed.tm_year = Y - 1900;
        fixed.tm_mon = M - 1;
        fixed.tm_mday = D;
        fixed.tm_hour = h;
        fixed.tm_min = m;
        fixed.tm_sec = s;
        fixed.tm_isdst = -1;
        time_t t = timegm(&fixed);
        gmtime_r(&t, &fixed); /* fills in the weekday and day of the year */
    }

    hr_err err = {0};
    size_t tlen = 0;
    char *src, *bos = NULL, *eos = NULL;
    if (model) {
        src = template_from_gguf(model, &tlen, &bos, &eos, &err);
        if (!src) {
            fprintf(stderr, "hearth template: %s\n", err.msg);
            return 1;
        }
    } else {
        src = read_all(tpath, &tlen);
        if (!src) {
            fprintf(stderr, "hearth template: cannot read '%s': %s\n", tpath, strerror(errno));
            return 1;
        }
    }
    json_error_t jerr;
    json_t *ctx = json_load_file(cpath, JSON_ALLOW_NUL, &jerr);
    if (!ctx) {
        fprintf(stderr, "hearth template: %s: line %d: %s\n", cpath, jerr.line, jerr.text);
        free(src);
        free(bos);
        free(eos);
        return 1;
    }
    if (!json_is_object(ctx)) {
        fprintf(stderr, "hearth template: %s: the context must be a JSON object\n", cpath);
        json_decref(ctx);
        free(src);
        free(bos);
        free(eos);
        return 1;
    }
    /* a model's special tokens fill in bos_token/eos_token unless the context sets them */
    if (bos && !json_object_get(ctx, "bos_token"))
        json_object_set_new(ctx, "bos_token", json_string(bos));
    if (eos && !json_object_get(ctx, "eos_token"))
        json_object_set_new(ctx, "eos_token", json_string(eos));
    free(bos);
    free(eos);

    hr_tmpl *t = NULL;
    int rc = 1;
    if (hr_tmpl_parse(src, tlen, &t, &err) == HR_OK) {
        hr_tmpl_opts o = {0};
        if (now) {
            o.clock = hr_tmpl_fixed_clock;
            o.clock_ud = &fixed;
        }
        char *out = NULL;
        size_t olen = 0;
        if (hr_tmpl_render(t, ctx, &o, &out, &olen, &err) == HR_OK) {
            fwrite(out, 1, olen, stdout);
            rc = fflush(stdout) == 0 ? 0 : 1;
            free(out);
        }
    }
    if (rc)
        fprintf(stderr, "hearth template: %s\n", err.msg[0] ? err.msg : "failed");
    hr_tmpl_free(t);
    json_decref(ctx);
    free(src);
    return rc;
}

static char *template_from_gguf(const char *path, size_t *len, char **bos, char **eos, hr_err *err)
{
    hr_gguf *g = NULL;
    if (hr_gguf_open(path, &g, err) != HR_OK)
        return NULL;
    char *t = NULL;
    if (hr_chat_template_from_gguf(g, &t, bos, eos, err) != HR_OK)
        hr_err_prefix(err, "%s", path);
    hr_gguf_close(g);
    if (t)
        *len = strlen(t);
    return t;
}
