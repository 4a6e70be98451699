/* hearth synth: the per-tensor type rules (against llama-quantize's own
 * files and real shapes), files the loader accepts, byte-for-byte
 * reproducibility, vocabulary padding, the streaming GGUF writer, and
 * `hearth bench --json`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"
#include "engine/kvcache.h"
#include "gguf/gguf.h"
#include "gguf/gguf_write.h"
#include "model/model.h"
#include "quant/quant.h"
#include "synth/synth.h"
#include "tok/vocab.h"
#include "testutil.h"

#define HR_TYPE_I8_ID 24 /* GGML I8: 1 byte per element */

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/hearth-test-synth-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *tmp_path(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void synth(const char *model, hr_ftype ft, uint64_t seed, int threads, const char *vocab, const char *out)
{
    hr_synth_params p = {.model = hr_synth_find(model),
                         .ftype = ft,
                         .vocab_path = vocab,
                         .seed = seed,
                         .out_path = out,
                         .n_threads = threads};
    assert_non_null(p.model);
    hr_err err = {0};
    hr_status st = hr_synth_write(&p, &err);
    if (st)
        fail_msg("synth %s: %s", model, err.msg);
}

/* ---- type rules ------------------------------------------------------------ */

/* The fixture files made by llama-quantize with its default mixes: every
 * tensor's type must be what the rule says. */
static void test_rules_match_llama_quantize(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        hr_ftype ft;
    } files[] = {
        {"models/synth/llama-Q4_K_M.gguf", HR_FTYPE_Q4_K_M},
        {"models/synth/llama-Q5_K_M.gguf", HR_FTYPE_Q5_K_M},
        {"models/synth/qwen2-Q4_K_M.gguf", HR_FTYPE_Q4_K_M},
        {"models/synth/qwen3-Q4_K_M.gguf", HR_FTYPE_Q4_K_M},
    };
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        hr_gguf *g;
        hr_err err = {0};
        if (hr_gguf_open(tu_fixture(files[f].file), &g, &err))
            fail_msg("%s", err.msg);
        hr_gguf_str arch;
        assert_true(hr_gguf_get_str(g, "general.architecture", &arch));
        char key[96], a[32];
        snprintf(key, sizeof key, "%s.block_count", hr_gguf_str_copy(arch, a, sizeof a));
        int64_t n_layer = 0;
        assert_true(hr_gguf_get_i64(g, key, &n_layer));
        bool has_output = hr_gguf_find_tensor(g, "output.weight") != NULL;
        int n_q6 = 0;
        for (uint64_t i = 0; i < hr_gguf_n_tensors(g); i++) {
            const hr_gguf_tensor *t = hr_gguf_tensor_at(g, i);
            char name[96];
            hr_gguf_str_copy(t->name, name, sizeof name);
            uint32_t want = hr_synth_tensor_type(files[f].ft, name, t->n_dims, t->ne[0], (int32_t)n_layer, has_output, 0);
            if (want != t->type)
                fail_msg("%s: %s is %s, rule says %s", files[f].file, name, hr_type_name(t->type), hr_type_name(want));
            n_q6 += t->type == HR_TYPE_Q6_K;
        }
        assert_true(n_q6 >= 3); /* the mix is really exercised */
        hr_gguf_close(g);
    }
}

#define TT(ft, name, ne0) hr_synth_tensor_type(ft, name, 2, ne0, m->n_layer, !m->tied, 0)

static void test_rules_real_shapes(void **state)
{
    (void)state;
    /* Qwen2.5-0.5B: tied, 896 columns is not a multiple of 256 */
    const hr_synth_model *m = hr_synth_find("qwen2.5-0.5b");
    assert_non_null(m);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "token_embd.weight", 896), HR_TYPE_Q8_0);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.0.attn_q.weight", 896), HR_TYPE_Q5_0);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.0.attn_v.weight", 896), HR_TYPE_Q8_0);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.3.attn_v.weight", 896), HR_TYPE_Q5_0);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.0.ffn_down.weight", 4864), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.3.ffn_down.weight", 4864), HR_TYPE_Q4_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.5.ffn_down.weight", 4864), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.23.ffn_down.weight", 4864), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.7.attn_output.weight", 896), HR_TYPE_Q5_0);
    assert_int_equal(TT(HR_FTYPE_Q4_0, "token_embd.weight", 896), HR_TYPE_Q8_0);
    assert_int_equal(TT(HR_FTYPE_Q4_0, "blk.0.ffn_up.weight", 896), HR_TYPE_Q4_0);
    assert_int_equal(TT(HR_FTYPE_Q8_0, "token_embd.weight", 896), HR_TYPE_Q8_0);
    assert_int_equal(TT(HR_FTYPE_F16, "token_embd.weight", 896), HR_TYPE_F16);
    assert_int_equal(hr_synth_tensor_type(HR_FTYPE_Q4_K_M, "blk.0.attn_norm.weight", 1, 896, 24, false, 0), HR_TYPE_F32);
    int n_q6 = 0;
    for (int i = 0; i < m->n_layer; i++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", i);
        n_q6 += TT(HR_FTYPE_Q4_K_M, name, 4864) == HR_TYPE_Q6_K;
    }
    assert_int_equal(n_q6, 12);

    /* Llama-3.2-1B: tied, 2048 columns */
    m = hr_synth_find("Llama-3.2-1B");
    assert_non_null(m);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "token_embd.weight", 2048), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q4_0, "token_embd.weight", 2048), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q8_0, "token_embd.weight", 2048), HR_TYPE_Q8_0);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.0.attn_q.weight", 2048), HR_TYPE_Q4_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.1.attn_v.weight", 2048), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.2.attn_v.weight", 2048), HR_TYPE_Q4_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.4.ffn_down.weight", 8192), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.14.ffn_down.weight", 8192), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "blk.12.ffn_down.weight", 8192), HR_TYPE_Q4_K);

    /* Llama-3.1-8B: untied, the embedding keeps the base type */
    m = hr_synth_find("Llama-3.1-8B");
    assert_non_null(m);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "token_embd.weight", 4096), HR_TYPE_Q4_K);
    assert_int_equal(TT(HR_FTYPE_Q4_K_M, "output.weight", 4096), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q4_0, "token_embd.weight", 4096), HR_TYPE_Q4_0);
    assert_int_equal(TT(HR_FTYPE_Q4_0, "output.weight", 4096), HR_TYPE_Q6_K);
    assert_int_equal(TT(HR_FTYPE_Q8_0, "output.weight", 4096), HR_TYPE_Q8_0);
}

/* Tensor bytes plus the tokenizer metadata (~6-8 MB) land within 1.5% of the
 * sizes of llama.cpp's files. */
static void test_sizes_match_reference(void **state)
{
    (void)state;
    static const struct {
        const char *model;
        hr_ftype ft;
        double ref_mb, vocab_mb;
    } refs[] = {
        {"Qwen2.5-0.5B", HR_FTYPE_Q8_0, 531, 5.9},   {"Qwen2.5-0.5B", HR_FTYPE_Q4_0, 352, 5.9},
        {"Qwen2.5-0.5B", HR_FTYPE_Q4_K_M, 398, 5.9}, {"Llama-3.2-1B", HR_FTYPE_Q8_0, 1320, 7.8},
        {"Llama-3.2-1B", HR_FTYPE_Q4_0, 771, 7.8},   {"Llama-3.2-1B", HR_FTYPE_Q4_K_M, 808, 7.8},
    };
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
        double mb = hr_synth_tensor_bytes(hr_synth_find(refs[i].model), refs[i].ft) / 1e6 + refs[i].vocab_mb;
        if (fabs(mb / refs[i].ref_mb - 1.0) > 0.015)
            fail_msg("%s %s: %.1f MB, reference %.0f MB", refs[i].model, hr_ftype_name(refs[i].ft), mb,
                     refs[i].ref_mb);
    }
    /* parameter counts of the published models */
    assert_int_equal(hr_synth_n_params(hr_synth_find("Qwen2.5-0.5B")), 494032768);
    assert_int_equal(hr_synth_n_params(hr_synth_find("Llama-3.2-1B")), 1235814400 + 32);
}

/* ---- generated files ------------------------------------------------------- */

static double logits_std_after(hr_model *m, int n_tok)
{
    const hr_hparams *hp = hr_model_hparams(m);
    hr_kv_params kp = {.n_blocks = 4, .block_tokens = 16, .max_seqs = 1};
    hr_engine_params ep = {.max_batch = 16, .n_threads = 1};
    hr_kv *kv;
    hr_engine *e;
    hr_err err = {0};
    assert_int_equal(hr_kv_new(hp, &kp, &kv, &err), HR_OK);
    assert_int_equal(hr_engine_new(m, &ep, &e, &err), HR_OK);
    int32_t tok[16], pos[16], seq[16] = {0};
    for (int i = 0; i < n_tok; i++) {
        tok[i] = (i * 37 + 5) % hp->n_vocab;
        pos[i] = i;
    }
    float *logits = malloc((size_t)n_tok * (size_t)hp->n_vocab * sizeof *logits);
    hr_batch b = {.n_tokens = n_tok, .token = tok, .pos = pos, .seq = seq, .logits = NULL};
    if (hr_engine_forward(e, kv, &b, logits, &err))
        fail_msg("%s", err.msg);
    double s = 0, q = 0;
    size_t n = (size_t)n_tok * (size_t)hp->n_vocab;
    for (size_t i = 0; i < n; i++) {
        assert_true(isfinite(logits[i]));
        s += logits[i];
        q += (double)logits[i] * logits[i];
    }
    free(logits);
    hr_engine_free(e);
    hr_kv_free(kv);
    double mean = s / (double)n;
    return sqrt(q / (double)n - mean * mean);
}

static void test_tiny_models_load_and_run(void **state)
{
    (void)state;
    static const char *models[] = {"tiny-llama", "tiny-qwen2", "tiny-qwen3"};
    static const hr_ftype types[] = {HR_FTYPE_F16, HR_FTYPE_Q8_0, HR_FTYPE_Q4_0, HR_FTYPE_Q4_K_M};
    for (size_t mi = 0; mi < 3; mi++)
        for (size_t ti = 0; ti < 4; ti++) {
            const hr_synth_model *sm = hr_synth_find(models[mi]);
            char name[64];
            snprintf(name, sizeof name, "%s-%s.gguf", models[mi], hr_ftype_name(types[ti]));
            const char *path = tmp_path(name);
            synth(models[mi], types[ti], 1, 2, NULL, path);
            hr_model *m;
            hr_err err = {0};
            if (hr_model_load(path, &m, &err))
                fail_msg("%s: %s", name, err.msg);
            const hr_hparams *hp = hr_model_hparams(m);
            assert_int_equal(hp->n_embd, sm->n_embd);
            assert_int_equal(hp->n_layer, sm->n_layer);
            assert_int_equal(hp->n_head, sm->n_head);
            assert_int_equal(hp->n_head_kv, sm->n_head_kv);
            assert_int_equal(hp->head_dim, sm->head_dim);
            assert_int_equal(hp->n_ff, sm->n_ff);
            assert_int_equal(hp->n_vocab, sm->n_vocab);
            assert_int_equal(hp->tied_output, sm->tied);
            assert_int_equal(hp->has_rope_freqs, sm->rope_factor > 0);
            assert_true(hp->rope_theta == sm->rope_theta);
            const hr_gguf *g = hr_model_gguf(m);
            uint64_t bytes = 0;
            for (uint64_t i = 0; i < hr_gguf_n_tensors(g); i++) {
                const hr_gguf_tensor *t = hr_gguf_tensor_at(g, i);
                char tn[96];
                hr_gguf_str_copy(t->name, tn, sizeof tn);
                assert_int_equal(t->type,
                                 hr_synth_tensor_type(types[ti], tn, t->n_dims, t->ne[0], sm->n_layer, !sm->tied, 0));
                bytes += t->size;
            }
            assert_int_equal(bytes, hr_synth_tensor_bytes(sm, types[ti]));
            uint32_t ft = 99;
            assert_true(hr_gguf_get_u32(g, "general.file_type", &ft));
            assert_int_equal(ft, types[ti]);
            double sd = logits_std_after(m, 8);
            if (!(sd > 0.3 && sd < 5.0))
                fail_msg("%s: logits std %g", name, sd);
            hr_model_free(m);
        }
}

static void test_llama3_rope_factors(void **state)
{
    (void)state;
    const char *path = tmp_path("rope.gguf");
    synth("tiny-llama", HR_FTYPE_Q8_0, 1, 1, NULL, path);
    hr_gguf *g;
    hr_err err = {0};
    assert_int_equal(hr_gguf_open(path, &g, &err), HR_OK);
    const hr_gguf_tensor *t = hr_gguf_find_tensor(g, "rope_freqs.weight");
    assert_non_null(t);
    assert_int_equal(t->type, HR_TYPE_F32);
    assert_int_equal(t->ne[0], 32);
    const float *f = t->data;
    /* high frequencies untouched, low ones divided by the factor, monotone between */
    assert_true(f[0] == 1.0f);
    assert_true(fabsf(f[31] - 32.0f) < 1e-6f);
    for (int i = 1; i < 32; i++)
        assert_true(f[i] >= f[i - 1]);
    hr_gguf_close(g);
}

static void *read_all(const char *path, size_t *n)
{
    void *p = tu_read_file(path, n);
    assert_non_null(p);
    return p;
}

static void test_same_seed_same_bytes(void **state)
{
    (void)state;
    const char *a = tmp_path("a.gguf"), *b = tmp_path("b.gguf"), *c = tmp_path("c.gguf");
    synth("tiny-qwen3", HR_FTYPE_Q4_K_M, 7, 1, NULL, a);
    synth("tiny-qwen3", HR_FTYPE_Q4_K_M, 7, 3, NULL, b);
    synth("tiny-qwen3", HR_FTYPE_Q4_K_M, 8, 2, NULL, c);
    size_t na, nb, nc;
    void *pa = read_all(a, &na), *pb = read_all(b, &nb), *pc = read_all(c, &nc);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na);
    assert_int_equal(na, nc);
    assert_true(memcmp(pa, pc, na) != 0);
    free(pa);
    free(pb);
    free(pc);
    assert_int_equal(access(tmp_path("a.gguf.tmp"), F_OK), -1);
}

/* A vocabulary with fewer tokens than the model's rows is padded with
 * [PADn] tokens of type UNUSED; one with more is refused. */
static void test_vocab_padding(void **state)
{
    (void)state;
    hr_gguf_writer *w = hr_gguf_writer_new();
    enum { NT = 300 };
    char *toks[NT];
    int32_t types[NT];
    for (int i = 0; i < NT; i++) {
        toks[i] = malloc(16);
        if (i < 256)
            snprintf(toks[i], 16, "%c", 'A' + i % 26);
        else
            snprintf(toks[i], 16, "<x%d>", i);
        if (i < 256 && i >= 26) /* unique texts */
            snprintf(toks[i], 16, "%c%d", 'a' + i % 26, i);
        types[i] = i == 299 ? 3 : 1;
    }
    assert_int_equal(hr_gguf_writer_str(w, "general.architecture", "none"), HR_OK);
    assert_int_equal(hr_gguf_writer_str(w, "tokenizer.ggml.model", "gpt2"), HR_OK);
    assert_int_equal(hr_gguf_writer_str(w, "tokenizer.ggml.pre", "default"), HR_OK);
    assert_int_equal(hr_gguf_writer_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks, NT), HR_OK);
    assert_int_equal(hr_gguf_writer_arr(w, "tokenizer.ggml.token_type", HR_GGUF_I32, types, NT), HR_OK);
    assert_int_equal(hr_gguf_writer_arr_str(w, "tokenizer.ggml.merges", NULL, 0), HR_OK);
    assert_int_equal(hr_gguf_writer_u32(w, "tokenizer.ggml.eos_token_id", 299), HR_OK);
    hr_err err = {0};
    const char *vocab = tmp_path("vocab.gguf");
    assert_int_equal(hr_gguf_writer_to_file(w, vocab, &err), HR_OK);
    hr_gguf_writer_free(w);
    for (int i = 0; i < NT; i++)
        free(toks[i]);

    const char *path = tmp_path("padded.gguf");
    synth("tiny-llama", HR_FTYPE_Q8_0, 1, 1, vocab, path);
    hr_model *m;
    if (hr_model_load(path, &m, &err))
        fail_msg("%s", err.msg);
    const hr_vocab *v = hr_model_vocab(m);
    assert_int_equal(hr_vocab_n_tokens(v), 512);
    size_t len;
    const char *t = hr_vocab_token_text(v, 300, &len);
    assert_int_equal(len, 8);
    assert_memory_equal(t, "[PAD300]", 8);
    assert_int_equal(hr_vocab_token_type(v, 300), HR_TOKEN_UNUSED);
    assert_int_equal(hr_vocab_token_type(v, 299), HR_TOKEN_CONTROL);
    assert_int_equal(hr_vocab_eos(v), 299);
    t = hr_vocab_token_text(v, 257, &len);
    assert_memory_equal(t, "<x257>", 6);
    hr_model_free(m);

    /* the real Qwen vocabulary (151,936 tokens) does not fit a 512-row model */
    hr_synth_params p = {.model = hr_synth_find("tiny-qwen2"),
                         .ftype = HR_FTYPE_Q8_0,
                         .vocab_path = tu_fixture("tokenizer/ggml-vocab-qwen2.gguf"),
                         .out_path = tmp_path("toobig.gguf"),
                         .n_threads = 1};
    assert_int_not_equal(hr_synth_write(&p, &err), HR_OK);
    assert_non_null(strstr(err.msg, "151936"));
    assert_int_equal(access(tmp_path("toobig.gguf"), F_OK), -1);
    assert_int_equal(access(tmp_path("toobig.gguf.tmp"), F_OK), -1);
}

/* ---- the streaming writer ------------------------------------------------------ */

static void test_stream_writer(void **state)
{
    (void)state;
    uint8_t a[40], b[7], c[64];
    for (int i = 0; i < 40; i++)
        a[i] = (uint8_t)i;
    for (int i = 0; i < 7; i++)
        b[i] = (uint8_t)(100 + i);
    for (int i = 0; i < 64; i++)
        c[i] = (uint8_t)(200 - i);
    int64_t ne_a[1] = {40}, ne_b[1] = {7}, ne_c[2] = {16, 4};
    hr_gguf_writer *w = hr_gguf_writer_new();
    hr_err err = {0};
    assert_int_equal(hr_gguf_writer_u32(w, "k", 5), HR_OK);
    assert_int_equal(hr_gguf_writer_tensor_decl(w, "a", HR_TYPE_I8_ID, 1, ne_a, 40), HR_OK);
    assert_int_equal(hr_gguf_writer_tensor(w, "b", HR_TYPE_I8_ID, 1, ne_b, b, 7), HR_OK);
    assert_int_equal(hr_gguf_writer_tensor_decl(w, "c", HR_TYPE_I8_ID, 2, ne_c, 64), HR_OK);
    void *mem;
    size_t n;
    assert_int_not_equal(hr_gguf_writer_to_memory(w, &mem, &n, &err), HR_OK); /* declared tensors have no data */
    const char *path = tmp_path("stream.gguf");
    assert_int_equal(hr_gguf_writer_stream_open(w, path, &err), HR_OK);
    assert_int_equal(hr_gguf_writer_stream_data(w, a, 25, &err), HR_OK);
    assert_int_not_equal(hr_gguf_writer_stream_data(w, a, 16, &err), HR_OK); /* crosses into the next tensor */
    assert_int_equal(hr_gguf_writer_stream_data(w, a + 25, 15, &err), HR_OK);
    assert_int_equal(hr_gguf_writer_stream_data(w, c, 64, &err), HR_OK);
    assert_int_not_equal(hr_gguf_writer_stream_data(w, c, 1, &err), HR_OK);
    assert_int_equal(hr_gguf_writer_stream_close(w, &err), HR_OK);
    hr_gguf_writer_free(w);

    hr_gguf *g;
    if (hr_gguf_open(path, &g, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(hr_gguf_n_tensors(g), 3);
    assert_memory_equal(hr_gguf_find_tensor(g, "a")->data, a, 40);
    assert_memory_equal(hr_gguf_find_tensor(g, "b")->data, b, 7);
    assert_memory_equal(hr_gguf_find_tensor(g, "c")->data, c, 64);
    hr_gguf_close(g);

    /* closing with a tensor unfinished is an error */
    w = hr_gguf_writer_new();
    assert_int_equal(hr_gguf_writer_tensor_decl(w, "a", HR_TYPE_I8_ID, 1, ne_a, 40), HR_OK);
    assert_int_equal(hr_gguf_writer_stream_open(w, path, &err), HR_OK);
    assert_int_equal(hr_gguf_writer_stream_data(w, a, 10, &err), HR_OK);
    assert_int_not_equal(hr_gguf_writer_stream_close(w, &err), HR_OK);
    assert_non_null(strstr(err.msg, "incomplete"));
    hr_gguf_writer_free(w);
}

/* ---- the CLI ------------------------------------------------------------------- */

static void test_cli_bench_json(void **state)
{
    (void)state;
    const char *bin = getenv("HEARTH_BIN");
    if (!bin)
        TU_SKIP_OR_FAIL("HEARTH_BIN not set");
    const char *path = tmp_path("bench.gguf");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s synth --model tiny-qwen2 --type Q4_K_M -q -o %s", bin, path);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s bench -m %s -p 8 -n 4 -r 1 -t 1,2 --json", bin, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    json_error_t je;
    json_t *arr = json_loadf(p, 0, &je);
    assert_int_equal(pclose(p), 0);
    if (!arr)
        fail_msg("bench --json output is not JSON: %s", je.text);
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 4);
    static const char *keys[] = {"n_prompt", "n_gen", "n_threads", "avg_ts", "stddev_ts", "model_type", "model_size",
                                 "avg_ns", "samples_ts", "peak_rss_bytes"};
    for (size_t i = 0; i < 4; i++) {
        json_t *o = json_array_get(arr, i);
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            if (!json_object_get(o, keys[k]))
                fail_msg("entry %zu has no '%s'", i, keys[k]);
        assert_true(json_number_value(json_object_get(o, "avg_ts")) > 0);
        assert_string_equal(json_string_value(json_object_get(o, "model_type")), "qwen2 1M Q4_K_M");
        int np = (int)json_integer_value(json_object_get(o, "n_prompt"));
        int ng = (int)json_integer_value(json_object_get(o, "n_gen"));
        assert_true((np == 8 && ng == 0) || (np == 0 && ng == 4));
        assert_int_equal(json_integer_value(json_object_get(o, "n_threads")), i < 2 ? 1 : 2);
        if (ng)
            assert_true(json_number_value(json_object_get(o, "bandwidth_gbs")) > 0);
    }
    json_decref(arr);

    /* the table form names the tests like llama-bench */
    snprintf(cmd, sizeof cmd, "%s bench -m %s -p 8 -n 4 -r 1 | grep -c -E '\\| +(pp8|tg4) \\|'", bin, path);
    p = popen(cmd, "r");
    char out[32] = "";
    assert_non_null(fgets(out, sizeof out, p));
    pclose(p);
    assert_int_equal(atoi(out), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_match_llama_quantize),
        cmocka_unit_test(test_rules_real_shapes),
        cmocka_unit_test(test_sizes_match_reference),
        cmocka_unit_test(test_tiny_models_load_and_run),
        cmocka_unit_test(test_llama3_rope_factors),
        cmocka_unit_test(test_same_seed_same_bytes),
        cmocka_unit_test(test_vocab_padding),
        cmocka_unit_test(test_stream_writer),
        cmocka_unit_test(test_cli_bench_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
