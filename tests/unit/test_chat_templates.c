/* test_chat_templates.c - every real chat template in fixtures/templates/
 * renders every conversation of cases.json byte-identically to Hugging Face
 * apply_chat_template, with the clock fixed at 2025-07-10 12:00:00. Where
 * the reference raises (raise_exception in the template), the template must
 * still load and the render fail with the reference's message: a template
 * that does not load at all fails every case, an expected error included. Also a benchmark: a 20-message conversation
 * through the Qwen2.5 and Llama 3.1 templates (HEARTH_BENCH_ITERS renders). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <dirent.h>

#include "testutil.h"
#include "gguf/gguf.h"
#include "tmpl/jinja.h"

static struct tm fixed_now(void)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = 2025 - 1900;
    tm.tm_mon = 6;
    tm.tm_mday = 10;
    tm.tm_hour = 12;
    tm.tm_wday = 4;
    tm.tm_yday = 190;
    return tm;
}

static hr_tmpl *load_template(const char *file, hr_err *err)
{
    char rel[512];
    snprintf(rel, sizeof rel, "templates/%s", file);
    size_t n = 0;
    char *src = tu_read_file(tu_fixture(rel), &n);
    if (!src) {
        snprintf(err->msg, sizeof err->msg, "cannot read %.400s", rel);
        return NULL;
    }
    hr_tmpl *t = NULL;
    hr_tmpl_parse(src, n, &t, err);
    free(src);
    return t;
}

static void show_diff(const char *want, size_t wn, const char *got, size_t gn)
{
    size_t i = 0;
    while (i < wn && i < gn && want[i] == got[i])
        i++;
    size_t from = i > 80 ? i - 80 : 0;
    fprintf(stderr, "    first difference at byte %zu (expected %zu bytes, got %zu)\n", i, wn, gn);
    fprintf(stderr, "    expected: ...%.*s\n", (int)((wn - from) > 200 ? 200 : wn - from), want + from);
    fprintf(stderr, "    got:      ...%.*s\n", (int)((gn - from) > 200 ? 200 : gn - from), got + from);
}

static void test_cases(void **state)
{
    (void)state;
    json_error_t je;
    json_t *root = json_load_file(tu_fixture("templates/cases.json"), JSON_ALLOW_NUL, &je);
    if (!root) {
        fprintf(stderr, "cannot load cases.json: %s\n", je.text);
        fail();
    }
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_is_array(cases));
    struct tm now = fixed_now();
    hr_tmpl_opts opts = {.clock = hr_tmpl_fixed_clock, .clock_ud = &now};
    size_t total = json_array_size(cases), pass = 0;
    const char *only = getenv("CHAT_CASE");
    for (size_t i = 0; i < total; i++) {
        json_t *c = json_array_get(cases, i);
        const char *name = json_string_value(json_object_get(c, "name"));
        if (only && !strstr(name, only))
            continue;
        hr_err err = {0};
        hr_tmpl *t = load_template(json_string_value(json_object_get(c, "template")), &err);
        char *out = NULL;
        size_t n = 0;
        const bool loaded = t != NULL;
        if (t && hr_tmpl_render(t, json_object_get(c, "context"), &opts, &out, &n, &err) != HR_OK)
            out = NULL;
        hr_tmpl_free(t);
        json_t *exp = json_object_get(c, "expected");
        /* "raise_exception: MESSAGE": the render's error must carry MESSAGE */
        const char *exp_err = json_string_value(json_object_get(c, "expected_error"));
        const char *exp_msg = exp_err && strchr(exp_err, ':') ? strchr(exp_err, ':') + 2 : exp_err;
        bool ok;
        if (!loaded)
            ok = false;
        else if (exp_err)
            ok = out == NULL && exp_msg && *exp_msg && strstr(err.msg, exp_msg) != NULL;
        else
            ok = out && n == json_string_length(exp) && !memcmp(out, json_string_value(exp), n);
        if (ok) {
            pass++;
        } else {
            fprintf(stderr, "FAIL %s\n", name);
            if (!loaded)
                fprintf(stderr, "    template does not load: %s\n", err.msg);
            else if (!out && exp_err)
                fprintf(stderr, "    expected the error '%s', got '%s'\n", exp_err, err.msg);
            else if (!out && !exp)
                fprintf(stderr, "    ???\n");
            else if (!out)
                fprintf(stderr, "    error: %s\n", err.msg);
            else if (!exp)
                fprintf(stderr, "    expected an error (%s), got %zu bytes\n",
                        json_string_value(json_object_get(c, "expected_error")), n);
            else
                show_diff(json_string_value(exp), json_string_length(exp), out, n);
        }
        free(out);
    }
    fprintf(stderr, "cases.json: %zu/%zu pass\n", pass, total);
    /* every template in the folder has cases: a new one cannot go unchecked */
    DIR *d = opendir(tu_fixture("templates"));
    assert_non_null(d);
    int uncovered = 0, n_files = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t l = strlen(e->d_name);
        if (l < 7 || strcmp(e->d_name + l - 6, ".jinja") != 0)
            continue;
        n_files++;
        bool has = false;
        for (size_t i = 0; i < total && !has; i++) {
            const char *tf = json_string_value(json_object_get(json_array_get(cases, i), "template"));
            has = tf && !strcmp(tf, e->d_name);
        }
        if (!has) {
            fprintf(stderr, "  %s has no case in cases.json\n", e->d_name);
            uncovered++;
        }
    }
    closedir(d);
    assert_true(n_files >= 20);
    assert_int_equal(uncovered, 0);
    json_decref(root);
    if (!only)
        assert_int_equal(pass, total);
}

/* The chat templates inside the vocabulary fixtures, as `hearth serve`
 * reads them: gpt-oss's and Gemma 3's are the fixture templates that
 * cases.json checks; DeepSeek-V3's has no cases there, so three
 * conversations are compared with Python Jinja2's renders (3.1.6, the
 * sandbox with trim_blocks / lstrip_blocks, the BOS/EOS texts of the file). */
static void test_gguf_templates(void **state)
{
    (void)state;
    static const struct {
        const char *vocab, *jinja, *bos, *eos;
    } same[] = {
        {"gpt-oss", "openai-gpt-oss-120b.jinja", "<|startoftext|>", "<|return|>"},
        {"gemma3", "google-gemma-3-it.jinja", "<bos>", "<end_of_turn>"},
    };
    hr_err err = {0};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf", same[i].vocab);
        hr_gguf *g = NULL;
        assert_int_equal(hr_gguf_open(tu_fixture(rel), &g, &err), HR_OK);
        char *t = NULL, *bos = NULL, *eos = NULL;
        assert_int_equal(hr_chat_template_from_gguf(g, &t, &bos, &eos, &err), HR_OK);
        snprintf(rel, sizeof rel, "templates/%s", same[i].jinja);
        size_t n = 0;
        char *want = tu_read_file(tu_fixture(rel), &n);
        assert_non_null(want);
        assert_int_equal(strlen(t), n);
        assert_memory_equal(t, want, n);
        assert_string_equal(bos, same[i].bos);
        assert_string_equal(eos, same[i].eos);
        free(want);
        free(t);
        free(bos);
        free(eos);
        hr_gguf_close(g);
    }
    static const struct {
        const char *messages, *want;
    } ds[] = {
        {"[{\"role\": \"user\", \"content\": \"Hello! How are you today?\"}]",
         "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C><\uFF5CUser\uFF5C>Hello! How are you today?<\uFF5CAssistant\uFF5C>"},
        {"[{\"role\": \"system\", \"content\": \"You are a concise assistant. Answer in one sentence.\"}, "
         "{\"role\": \"user\", \"content\": \"Why is the sky blue?\"}]",
         "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>You are a concise assistant. Answer in one sentence."
         "<\uFF5CUser\uFF5C>Why is the sky blue?<\uFF5CAssistant\uFF5C>"},
        {"[{\"role\": \"system\", \"content\": \"You are a helpful assistant.\"}, {\"role\": \"user\", "
         "\"content\": \"What is the capital of France?\"}, {\"role\": \"assistant\", \"content\": \"The capital "
         "of France is Paris.\"}, {\"role\": \"user\", \"content\": \"And of Germany?\"}]",
         "<\uFF5Cbegin\u2581of\u2581sentence\uFF5C>You are a helpful assistant.<\uFF5CUser\uFF5C>What is the "
         "capital of France?<\uFF5CAssistant\uFF5C>The capital of France is Paris.<\uFF5Cend\u2581of\u2581sentence"
         "\uFF5C><\uFF5CUser\uFF5C>And of Germany?<\uFF5CAssistant\uFF5C>"},
    };
    hr_gguf *g = NULL;
    assert_int_equal(hr_gguf_open(tu_fixture("tokenizer/ggml-vocab-deepseek-v3.gguf"), &g, &err), HR_OK);
    char *t = NULL, *bos = NULL, *eos = NULL;
    assert_int_equal(hr_chat_template_from_gguf(g, &t, &bos, &eos, &err), HR_OK);
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        json_t *msgs = json_loads(ds[i].messages, 0, NULL);
        assert_non_null(msgs);
        char *out = NULL;
        size_t n = 0;
        if (hr_chat_render(t, msgs, NULL, true, bos, eos, NULL, NULL, &out, &n, &err) != HR_OK)
            fail_msg("deepseek-v3 case %zu: %s", i, err.msg);
        size_t wl = strlen(ds[i].want); /* the \\u escapes are C's: UTF-8 */
        if (n != wl || memcmp(out, ds[i].want, n))
            show_diff(ds[i].want, wl, out, n);
        assert_int_equal(n, wl);
        assert_memory_equal(out, ds[i].want, n);
        json_decref(msgs);
        free(out);
    }
    free(t);
    free(bos);
    free(eos);
    hr_gguf_close(g);
}

static json_t *conversation(int n)
{
    json_t *msgs = json_array();
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content",
                                          "You are a helpful assistant. Answer briefly and precisely."));
    for (int i = 0; i < n - 1; i++) {
        char buf[256];
        snprintf(buf, sizeof buf,
                 i % 2 ? "Here is answer number %d: the capital of France is Paris, and 2 + 2 = 4."
                       : "Question %d: what is the capital of France, and what is 2 + 2?",
                 i);
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", i % 2 ? "assistant" : "user", "content", buf));
    }
    return msgs;
}

static void bench_one(const char *file)
{
    hr_err err = {0};
    hr_tmpl *t = load_template(file, &err);
    assert_non_null(t);
    json_t *ctx = json_object();
    json_object_set_new(ctx, "messages", conversation(20));
    json_object_set_new(ctx, "add_generation_prompt", json_true());
    json_object_set_new(ctx, "bos_token", json_string("<|begin_of_text|>"));
    json_object_set_new(ctx, "eos_token", json_string("<|eot_id|>"));
    struct tm now = fixed_now();
    hr_tmpl_opts opts = {.clock = hr_tmpl_fixed_clock, .clock_ud = &now};
    const char *e = getenv("HEARTH_BENCH_ITERS");
    int iters = e ? atoi(e) : 2000;
    if (iters < 1)
        iters = 1;
    size_t bytes = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < iters; i++) {
        char *out = NULL;
        size_t n = 0;
        assert_int_equal(hr_tmpl_render(t, ctx, &opts, &out, &n, &err), HR_OK);
        bytes = n;
        free(out);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double us = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 1e3 / iters;
    /* parse cost too, for a cold render */
    size_t n = 0;
    char rel[512];
    snprintf(rel, sizeof rel, "templates/%s", file);
    char *src = tu_read_file(tu_fixture(rel), &n);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < iters; i++) {
        hr_tmpl *t2 = NULL;
        assert_int_equal(hr_tmpl_parse(src, n, &t2, &err), HR_OK);
        hr_tmpl_free(t2);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double pus = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / 1e3 / iters;
    free(src);
    fprintf(stderr, "bench %s: 20 messages -> %zu bytes: render %.1f us, parse %.1f us (%d iterations)\n", file,
            bytes, us, pus, iters);
    json_decref(ctx);
    hr_tmpl_free(t);
}

static void test_bench(void **state)
{
    (void)state;
    bench_one("Qwen-Qwen2.5-7B-Instruct.jinja");
    bench_one("meta-llama-Llama-3.1-8B-Instruct.jinja");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_gguf_templates),
        cmocka_unit_test(test_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
