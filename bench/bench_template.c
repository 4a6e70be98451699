/* bench_template.c - render time of a 20-message conversation through real
 * chat templates (Qwen2.5, Llama 3.1, Qwen3, gpt-oss), parse time too.
 * usage: bench_template [ITERATIONS] (fixtures from HEARTH_FIXTURES or the build default) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "tmpl/jinja.h"


static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    char *b = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; }
    fclose(f);
    if (b) { b[len] = 0; *n = (size_t)len; }
    return b;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 5000;
    if (iters < 1) iters = 1;
    const char *dir = getenv("HEARTH_FIXTURES");
    if (!dir || !*dir) dir = HR_FIXTURES_DIR;
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", "system", "content", "You are a helpful assistant."));
    for (int i = 0; i < 19; i++) {
        char buf[160];
        snprintf(buf, sizeof buf, i % 2 ? "Answer %d: Paris is the capital of France; 2 + 2 = 4."
                                        : "Question %d: what is the capital of France, and 2 + 2?", i);
        json_array_append_new(msgs, json_pack("{s:s,s:s}", "role", i % 2 ? "assistant" : "user", "content", buf));
    }
    json_t *ctx = json_pack("{s:o,s:b,s:s,s:s}", "messages", msgs, "add_generation_prompt", 1, "bos_token",
                            "<|begin_of_text|>", "eos_token", "<|eot_id|>");
    struct tm fixed = {.tm_year = 125, .tm_mon = 6, .tm_mday = 10, .tm_hour = 12};
    hr_tmpl_opts o = {.clock = hr_tmpl_fixed_clock, .clock_ud = &fixed};
    const char *files[] = {"Qwen-Qwen2.5-7B-Instruct.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja",
                           "Qwen-Qwen3-0.6B.jinja", "openai-gpt-oss-120b.jinja"};
    int rc = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/templates/%s", dir, files[f]);
        size_t n = 0;
        char *src = slurp(path, &n);
        if (!src) { fprintf(stderr, "cannot read %s\n", path); rc = 1; continue; }
        hr_err err = {0};
        hr_tmpl *t = NULL;
        double a = (hr_now_s() * 1e6);
        for (int i = 0; i < iters; i++) {
            hr_tmpl_free(t);
            t = NULL;
            if (hr_tmpl_parse(src, n, &t, &err) != HR_OK) { fprintf(stderr, "%s: %s\n", files[f], err.msg); return 1; }
        }
        double parse = ((hr_now_s() * 1e6) - a) / iters;
        size_t bytes = 0;
        a = (hr_now_s() * 1e6);
        for (int i = 0; i < iters; i++) {
            char *out = NULL;
            if (hr_tmpl_render(t, ctx, &o, &out, &bytes, &err) != HR_OK) { fprintf(stderr, "%s: %s\n", files[f], err.msg); return 1; }
            free(out);
        }
        double render = ((hr_now_s() * 1e6) - a) / iters;
        printf("%-40s 20 messages -> %5zu bytes  render %7.1f us  parse %7.1f us\n", files[f], bytes, render, parse);
        hr_tmpl_free(t);
        free(src);
    }
    json_decref(ctx);
    return rc;
}
