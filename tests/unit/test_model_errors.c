/* Loading refuses bad models with a message that names the problem, and the
 * CLI turns each into one line on stderr and a non-zero exit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf/gguf_write.h"
#include "model/model.h"
#include "quant/quant.h"
#include "testutil.h"

typedef struct {
    const char *arch;
    uint32_t ffn_type;  /* type of ffn_up */
    int vocab_tokens;   /* tokens in the vocabulary metadata */
    int skip_ffn_down;
    int bad_q_shape;
} spec;

#define E 32
#define V 16
#define FF 64

static char tmpdir[256];

/* Writes a 1-layer model of the given spec; returns its path (static). */
static const char *make_model(const spec *s, const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s.gguf", tmpdir, name);
    hr_gguf_writer *w = hr_gguf_writer_new();
    char key[128];
    hr_gguf_writer_str(w, "general.architecture", s->arch);
#define K(x) (snprintf(key, sizeof key, "%s." x, s->arch), key)
    hr_gguf_writer_u32(w, K("embedding_length"), E);
    hr_gguf_writer_u32(w, K("block_count"), 1);
    hr_gguf_writer_u32(w, K("feed_forward_length"), FF);
    hr_gguf_writer_u32(w, K("attention.head_count"), 4);
    hr_gguf_writer_u32(w, K("attention.head_count_kv"), 2);
    hr_gguf_writer_u32(w, K("context_length"), 64);
    hr_gguf_writer_f32(w, K("attention.layer_norm_rms_epsilon"), 1e-5f);
#undef K
    hr_gguf_writer_str(w, "tokenizer.ggml.model", "llama");
    const char *toks[64];
    float scores[64];
    int32_t types[64];
    char tokbuf[64][16];
    for (int i = 0; i < s->vocab_tokens; i++) {
        snprintf(tokbuf[i], sizeof tokbuf[i], "t%d", i);
        toks[i] = tokbuf[i];
        scores[i] = (float)-i;
        types[i] = 1;
    }
    hr_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)s->vocab_tokens);
    hr_gguf_writer_arr(w, "tokenizer.ggml.scores", HR_GGUF_F32, scores, (uint64_t)s->vocab_tokens);
    hr_gguf_writer_arr(w, "tokenizer.ggml.token_type", HR_GGUF_I32, types, (uint64_t)s->vocab_tokens);

    static float data[FF * E];
    for (int i = 0; i < FF * E; i++)
        data[i] = (float)((i * 7919) % 101 - 50) / 500.0f;
    static uint8_t qbuf[FF * E * 4];
#define T2(nm, a, b) hr_gguf_writer_tensor(w, nm, HR_TYPE_F32, 2, (int64_t[]){a, b}, data, (size_t)(a) * (b) * 4)
#define T1(nm, a) hr_gguf_writer_tensor(w, nm, HR_TYPE_F32, 1, (int64_t[]){a}, data, (size_t)(a) * 4)
    T2("token_embd.weight", E, V);
    T1("output_norm.weight", E);
    T1("blk.0.attn_norm.weight", E);
    T1("blk.0.ffn_norm.weight", E);
    T2("blk.0.attn_q.weight", E, s->bad_q_shape ? E / 2 : E);
    T2("blk.0.attn_k.weight", E, E / 2);
    T2("blk.0.attn_v.weight", E, E / 2);
    T2("blk.0.attn_output.weight", E, E);
    T2("blk.0.ffn_gate.weight", E, FF);
    if (s->ffn_type == HR_TYPE_F32) {
        T2("blk.0.ffn_up.weight", E, FF);
    } else {
        /* any bytes of the right size: the loader must refuse the type */
        size_t sz = hr_row_size(s->ffn_type, E) * FF;
        hr_gguf_writer_tensor(w, "blk.0.ffn_up.weight", s->ffn_type, 2, (int64_t[]){E, FF}, qbuf, sz);
    }
    if (!s->skip_ffn_down)
        T2("blk.0.ffn_down.weight", FF, E);
#undef T1
#undef T2
    hr_err err = {0};
    assert_int_equal(hr_gguf_writer_to_file(w, path, &err), HR_OK);
    hr_gguf_writer_free(w);
    return path;
}

static const spec good = {"llama", HR_TYPE_F32, V, 0, 0};

static void expect_load_error(const spec *s, const char *name, hr_status want, const char *needle)
{
    const char *path = make_model(s, name);
    hr_model *m = NULL;
    hr_err err = {0};
    hr_status st = hr_model_load(path, &m, &err);
    if (st != want || !strstr(err.msg, needle))
        fail_msg("%s: got status %d message '%s', wanted %d containing '%s'", name, st, err.msg, want, needle);
    assert_null(m);
}

static void test_good_model_loads(void **state)
{
    (void)state;
    const char *path = make_model(&good, "good");
    hr_model *m;
    hr_err err = {0};
    if (hr_model_load(path, &m, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(hr_model_hparams(m)->n_vocab, V);
    assert_true(hr_model_hparams(m)->tied_output);
    hr_model_free(m);
    /* a weight in MXFP4 (gpt-oss's expert type) passes the type check */
    spec s = good;
    s.ffn_type = HR_TYPE_MXFP4;
    if (hr_model_load(make_model(&s, "good_mxfp4"), &m, &err))
        fail_msg("MXFP4 ffn_up: %s", err.msg);
    hr_model_free(m);
}

static void test_load_errors(void **state)
{
    (void)state;
    spec s = good;
    s.arch = "mamba";
    expect_load_error(&s, "arch", HR_ERR_UNSUPPORTED, "unknown architecture 'mamba'");
    s = good;
    s.ffn_type = 31; /* Q4_0_4_4: a real GGML type (a removed repacked layout) hearth cannot compute with */
    expect_load_error(&s, "type", HR_ERR_UNSUPPORTED, "unsupported type Q4_0_4_4");
    s = good;
    s.vocab_tokens = V - 3;
    expect_load_error(&s, "vocab", HR_ERR_FORMAT, "vocabulary has 13 tokens but the embedding/output matrices have 16 rows");
    s = good;
    s.skip_ffn_down = 1;
    expect_load_error(&s, "missing", HR_ERR_FORMAT, "missing tensor 'blk.0.ffn_down.weight'");
    s = good;
    s.bad_q_shape = 1;
    expect_load_error(&s, "shape", HR_ERR_FORMAT, "'blk.0.attn_q.weight' has shape");
}

/* Runs `hearth ARGS` and checks: exit status non-zero, exactly one line on
 * stderr, containing needle. */
static void expect_cli_error(const char *args, const char *needle)
{
    const char *bin = getenv("HEARTH_BIN");
    if (!bin)
        TU_SKIP_OR_FAIL("HEARTH_BIN not set");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>%s/stderr.txt >/dev/null", bin, args, tmpdir);
    int rc = system(cmd);
    char path[512];
    snprintf(path, sizeof path, "%s/stderr.txt", tmpdir);
    size_t n;
    char *text = tu_read_file(path, &n);
    assert_non_null(text);
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += text[i] == '\n';
    if (rc == 0 || lines != 1 || !strstr(text, needle))
        fail_msg("hearth %s: exit %d, stderr '%s' (wanted one line containing '%s')", args, rc, text, needle);
    free(text);
}

static void test_cli_errors(void **state)
{
    (void)state;
    char args[1024];
    expect_cli_error("run -m /nonexistent/model.gguf --tokens 1", "cannot open");
    /* not GGUF */
    snprintf(args, sizeof args, "%s/notgguf.gguf", tmpdir);
    FILE *f = fopen(args, "wb");
    fputs("this is not a model file at all, just text\n", f);
    fclose(f);
    snprintf(args, sizeof args, "run -m %s/notgguf.gguf --tokens 1", tmpdir);
    expect_cli_error(args, "not a GGUF file");
    /* truncated header and truncated tensor data, cut from a real file */
    size_t n;
    char *img = tu_read_file(tu_fixture("models/stories260K.gguf"), &n);
    assert_non_null(img);
    snprintf(args, sizeof args, "%s/trunc_header.gguf", tmpdir);
    f = fopen(args, "wb");
    fwrite(img, 1, 20, f);
    fclose(f);
    snprintf(args, sizeof args, "run -m %s/trunc_header.gguf --tokens 1", tmpdir);
    expect_cli_error(args, "truncated");
    snprintf(args, sizeof args, "%s/trunc_data.gguf", tmpdir);
    f = fopen(args, "wb");
    fwrite(img, 1, n - 1000, f);
    fclose(f);
    snprintf(args, sizeof args, "logits -m %s/trunc_data.gguf --tokens 1", tmpdir);
    expect_cli_error(args, "past the end of the file");
    /* absurd tensor count */
    uint64_t absurd = 1ull << 60;
    memcpy(img + 8, &absurd, 8);
    snprintf(args, sizeof args, "%s/absurd.gguf", tmpdir);
    f = fopen(args, "wb");
    fwrite(img, 1, n, f);
    fclose(f);
    snprintf(args, sizeof args, "run -m %s/absurd.gguf --tokens 1", tmpdir);
    expect_cli_error(args, "tensors, more than the file can hold");
    free(img);

    spec s = good;
    s.arch = "mamba";
    snprintf(args, sizeof args, "run -m %s --tokens 1", make_model(&s, "cli_arch"));
    expect_cli_error(args, "unknown architecture");
    s = good;
    s.ffn_type = 31;
    snprintf(args, sizeof args, "run -m %s --tokens 1", make_model(&s, "cli_type"));
    expect_cli_error(args, "unsupported type Q4_0_4_4");
    s = good;
    s.vocab_tokens = V - 3;
    snprintf(args, sizeof args, "logits -m %s --tokens 1", make_model(&s, "cli_vocab"));
    expect_cli_error(args, "vocabulary has 13 tokens");
    snprintf(args, sizeof args, "run -m %s --tokens \"1 99\"", make_model(&good, "cli_tok"));
    expect_cli_error(args, "token id 99 out of range");
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/hearth-test-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_model_loads),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_cli_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
