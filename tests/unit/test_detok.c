/* test_detok.c - ids -> text: the stories260K golden text, incremental
 * decoding that holds back partial UTF-8, small buffers, pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "testutil.h"
#include "tok/vocab.h"

typedef struct {
    hr_gguf *g;
    hr_vocab *v;
} vocab_fx;

static vocab_fx open_vocab(const char *rel)
{
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

static int32_t tok(const hr_vocab *v, const char *text)
{
    int32_t id = hr_vocab_find(v, text, strlen(text));
    if (id < 0)
        fail_msg("token '%s' not in the vocabulary", text);
    return id;
}

static void test_golden_stories(void **state)
{
    vocab_fx f = open_vocab("models/stories260K.gguf");
    json_error_t je;
    json_t *root = json_load_file(tu_fixture("models/stories260K.golden.json"), 0, &je);
    assert_non_null(root);
    json_t *jids = json_object_get(root, "generated_ids");
    const char *want = json_string_value(json_object_get(root, "generated_text"));
    assert_non_null(want);
    size_t n = json_array_size(jids);
    assert_true(n > 0);
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(jids, i));

    /* whole sequence */
    size_t need = hr_tok_decode(f.v, ids, n, false, NULL, 0);
    assert_int_equal(need, strlen(want));
    char *buf = malloc(need + 1);
    assert_int_equal(hr_tok_decode(f.v, ids, n, false, buf, need + 1), need);
    assert_string_equal(buf, want);

    /* one token at a time; BOS first (a control token renders as nothing) */
    hr_detok *d;
    assert_int_equal(hr_detok_new(f.v, false, &d, NULL), HR_OK);
    char *acc = calloc(need + 64, 1);
    size_t alen = 0;
    char piece[256];
    assert_int_equal(hr_detok_push(d, hr_vocab_bos(f.v), piece, sizeof piece), 0);
    for (size_t i = 0; i < n; i++) {
        size_t k = hr_detok_push(d, ids[i], piece, sizeof piece);
        assert_true(k < sizeof piece);
        assert_true(alen + k <= need);
        memcpy(acc + alen, piece, k);
        alen += k;
    }
    assert_int_equal(hr_detok_flush(d, piece, sizeof piece), 0);
    acc[alen] = 0;
    assert_string_equal(acc, want);
    hr_detok_free(d);

    /* the raw pieces keep the leading space */
    const char *raw = json_string_value(json_object_get(root, "generated_text_raw_pieces"));
    if (raw) {
        size_t off = 0;
        for (size_t i = 0; i < n; i++) {
            size_t k = hr_tok_piece(f.v, ids[i], false, piece, sizeof piece);
            assert_true(k <= sizeof piece);
            assert_memory_equal(raw + off, piece, k);
            off += k;
        }
        assert_int_equal(off, strlen(raw));
    }
    free(acc);
    free(buf);
    free(ids);
    json_decref(root);
    close_vocab(&f);
}

/* SentencePiece byte tokens: a multi-byte character spread over several
 * byte tokens comes out only once complete. */
static void test_partial_utf8_byte_tokens(void **state)
{
    vocab_fx f = open_vocab("tokenizer/ggml-vocab-llama-spm.gguf");
    hr_detok *d;
    assert_int_equal(hr_detok_new(f.v, false, &d, NULL), HR_OK);
    char out[64];
    /* U+20AC EURO SIGN = E2 82 AC */
    assert_int_equal(hr_detok_push(d, tok(f.v, "<0xE2>"), out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(hr_detok_push(d, tok(f.v, "<0x82>"), out, sizeof out), 0);
    assert_int_equal(hr_detok_push(d, tok(f.v, "<0xAC>"), out, sizeof out), 3);
    assert_string_equal(out, "\xE2\x82\xAC");
    /* an impossible byte is replaced at once */
    assert_int_equal(hr_detok_push(d, tok(f.v, "<0xFF>"), out, sizeof out), 3);
    assert_string_equal(out, "\xEF\xBF\xBD");
    /* a started sequence broken by a normal piece: U+FFFD then the piece */
    assert_int_equal(hr_detok_push(d, tok(f.v, "<0xF0>"), out, sizeof out), 0);
    assert_int_equal(hr_detok_push(d, tok(f.v, "<0x9F>"), out, sizeof out), 0);
    size_t k = hr_detok_push(d, tok(f.v, "▁the"), out, sizeof out);
    assert_int_equal(k, 7);
    assert_string_equal(out, "\xEF\xBF\xBD the");
    /* an incomplete tail is flushed as U+FFFD */
    assert_int_equal(hr_detok_push(d, tok(f.v, "<0xC3>"), out, sizeof out), 0);
    assert_int_equal(hr_detok_flush(d, out, sizeof out), 3);
    assert_string_equal(out, "\xEF\xBF\xBD");
    assert_int_equal(hr_detok_flush(d, out, sizeof out), 0);
    hr_detok_free(d);
    close_vocab(&f);
}

/* Byte-level BPE: an emoji whose bytes are split across tokens. */
static void test_partial_utf8_bpe(void **state)
{
    vocab_fx f = open_vocab("tokenizer/ggml-vocab-qwen2.gguf");
    const char *text = "a \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99 b \xE4\xBD\xA0\xE5\xA5\xBD";
    int32_t ids[64];
    size_t n;
    assert_int_equal(hr_tok_encode(f.v, text, strlen(text), false, false, ids, 64, &n, NULL), HR_OK);
    hr_detok *d;
    assert_int_equal(hr_detok_new(f.v, false, &d, NULL), HR_OK);
    char acc[128] = "", out[64];
    bool held = false;
    for (size_t i = 0; i < n; i++) {
        char piece[32];
        size_t pl = hr_tok_piece(f.v, ids[i], false, piece, sizeof piece);
        size_t k = hr_detok_push(d, ids[i], out, sizeof out);
        assert_true(k < sizeof out);
        if (k < pl)
            held = true;
        /* every emitted chunk is valid UTF-8 on its own */
        for (size_t j = 0; j < k;) {
            unsigned char c = (unsigned char)out[j];
            size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            assert_true(j + len <= k);
            j += len;
        }
        strcat(acc, out);
    }
    assert_true(held); /* the tokenizer did split a character */
    assert_int_equal(hr_detok_flush(d, out, sizeof out), 0);
    assert_string_equal(acc, text);
    hr_detok_free(d);
    close_vocab(&f);
}

/* A buffer that is too small loses nothing. */
static void test_small_buffer(void **state)
{
    vocab_fx f = open_vocab("tokenizer/ggml-vocab-qwen2.gguf");
    hr_detok *d;
    assert_int_equal(hr_detok_new(f.v, false, &d, NULL), HR_OK);
    char out[64];
    int32_t hello = tok(f.v, "Hello"), world = tok(f.v, "\xC4\xA0world");
    assert_true(hr_detok_push(d, hello, out, 3) >= 3);
    assert_int_equal(hr_detok_push(d, world, out, sizeof out), 11);
    assert_string_equal(out, "Hello world");
    hr_detok_free(d);
    close_vocab(&f);
}

/* Control tokens render only when asked; user-defined tokens always. */
static void test_pieces_special(void **state)
{
    vocab_fx f = open_vocab("tokenizer/ggml-vocab-qwen2.gguf");
    char buf[64];
    int32_t im_end = tok(f.v, "<|im_end|>");
    assert_int_equal(hr_tok_piece(f.v, im_end, false, buf, sizeof buf), 0);
    assert_int_equal(hr_tok_piece(f.v, im_end, true, buf, sizeof buf), 10);
    assert_memory_equal(buf, "<|im_end|>", 10);
    int32_t tc = tok(f.v, "<tool_call>");
    assert_int_equal(hr_tok_piece(f.v, tc, false, buf, sizeof buf), 11);
    /* ids outside the vocabulary decode to nothing */
    assert_int_equal(hr_tok_piece(f.v, -1, true, buf, sizeof buf), 0);
    assert_int_equal(hr_tok_piece(f.v, 1 << 30, true, buf, sizeof buf), 0);
    /* a piece larger than the buffer reports its size */
    int32_t ids[2] = {tok(f.v, "Hello"), im_end};
    assert_int_equal(hr_tok_decode(f.v, ids, 2, true, buf, 4), 15);
    assert_int_equal(hr_tok_decode(f.v, ids, 2, true, buf, 16), 15);
    assert_string_equal(buf, "Hello<|im_end|>");
    close_vocab(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_stories),  cmocka_unit_test(test_partial_utf8_byte_tokens),
        cmocka_unit_test(test_partial_utf8_bpe), cmocka_unit_test(test_small_buffer),
        cmocka_unit_test(test_pieces_special),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
