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
        int min_q6;     /* Q6_K tensors the mix must have (the rule is really exercised) */
        uint32_t extra; /* a type the file must also hold (0 = none) */
    } files[] = {
        {"models/synth/llama-Q4_K_M.gguf", HR_FTYPE_Q4_K_M, 3, 0},
        {"models/synth/llama-Q5_K_M.gguf", HR_FTYPE_Q5_K_M, 3, 0},
        {"models/synth/qwen2-Q4_K_M.gguf", HR_FTYPE_Q4_K_M, 3, 0},
        {"models/synth/qwen3-Q4_K_M.gguf", HR_FTYPE_Q4_K_M, 3, 0},
        /* the MoE / SWA families (llama-quantize's 8-expert rules, fused QKV, 3-D experts, MXFP4_MOE) */
        {"models/arch/qwen3moe-Q4_K_M.gguf", HR_FTYPE_Q4_K_M, 1, HR_TYPE_Q5_1},
        {"models/arch/qwen3moe-Q8_0.gguf", HR_FTYPE_Q8_0, 0, HR_TYPE_Q8_0},
        {"models/arch/gemma3-Q4_K_M.gguf", HR_FTYPE_Q4_K_M, 3, 0},
        {"models/arch/gemma3-Q8_0.gguf", HR_FTYPE_Q8_0, 0, HR_TYPE_Q8_0},
        {"models/arch/phi3-Q4_K_M.gguf", HR_FTYPE_Q4_K_M, 2, 0},
        {"models/arch/phi3_longrope-Q4_K_M.gguf", HR_FTYPE_Q4_K_M, 2, 0},
        {"models/arch/llama4-Q4_K_M.gguf", HR_FTYPE_Q4_K_M, 2, 0},
        {"models/arch/gpt-oss-MXFP4_MOE.gguf", HR_FTYPE_MXFP4_MOE, 0, HR_SYNTH_TYPE_MXFP4},
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
        snprintf(key, sizeof key, "%s.expert_count", a);
        int64_t n_expert = 0;
        hr_gguf_get_i64(g, key, &n_expert);
        int n_q6 = 0, n_extra = 0;
        for (uint64_t i = 0; i < hr_gguf_n_tensors(g); i++) {
            const hr_gguf_tensor *t = hr_gguf_tensor_at(g, i);
            char name[96];
            hr_gguf_str_copy(t->name, name, sizeof name);
            uint32_t want = hr_synth_tensor_type(files[f].ft, name, t->n_dims, t->ne[0], (int32_t)n_layer, has_output,
                                                 (int32_t)n_expert);
            if (want != t->type)
                fail_msg("%s: %s is %s, rule says %s", files[f].file, name, hr_type_name(t->type), hr_type_name(want));
            n_q6 += t->type == HR_TYPE_Q6_K;
            n_extra += files[f].extra && t->type == files[f].extra;
        }
        if (n_q6 < files[f].min_q6 || (files[f].extra && !n_extra))
            fail_msg("%s: %d Q6_K tensors, %d of %s: the mix is not exercised", files[f].file, n_q6, n_extra,
                     hr_type_name(files[f].extra));
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
            assert_true(hp->rope[0].base == sm->rope_theta);
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

/* ---- the MoE / sliding-window families: published shapes -------------------- */

typedef struct {
    hr_synth_tensor *t;
    size_t n;
    const char *model;
} plan_t;

static plan_t plan_of(const char *model, hr_ftype ft, int32_t n_layers, bool etype_set, uint32_t etype)
{
    hr_synth_params p = {.model = hr_synth_find(model), .ftype = ft, .n_layers = n_layers,
                         .expert_type_set = etype_set, .expert_type = etype};
    assert_non_null(p.model);
    plan_t pl = {.n = hr_synth_plan(&p, NULL, 0), .model = model};
    assert_true(pl.n > 0);
    pl.t = calloc(pl.n, sizeof *pl.t);
    assert_non_null(pl.t);
    assert_int_equal(hr_synth_plan(&p, pl.t, pl.n), pl.n);
    return pl;
}

static const hr_synth_tensor *plan_find(const plan_t *pl, const char *name)
{
    for (size_t i = 0; i < pl->n; i++)
        if (!strcmp(pl->t[i].name, name))
            return &pl->t[i];
    return NULL;
}

/* name has shape [ne0, ne1, ne2] (ne1 / ne2 0 = fewer dims) and type */
static void expect_t(const plan_t *pl, const char *name, int64_t ne0, int64_t ne1, int64_t ne2, uint32_t type)
{
    const hr_synth_tensor *t = plan_find(pl, name);
    if (!t)
        fail_msg("%s: no tensor %s", pl->model, name);
    uint32_t nd = ne2 ? 3 : ne1 ? 2 : 1;
    if (t->n_dims != nd || t->ne[0] != ne0 || t->ne[1] != (ne1 ? ne1 : 1) || t->ne[2] != (ne2 ? ne2 : 1))
        fail_msg("%s: %s is %u-D [%lld, %lld, %lld], want [%lld, %lld, %lld]", pl->model, name, t->n_dims,
                 (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)ne0, (long long)ne1,
                 (long long)ne2);
    if (t->type != type)
        fail_msg("%s: %s is %s, want %s", pl->model, name, hr_type_name(t->type), hr_type_name(type));
}

static void expect_absent(const plan_t *pl, const char *name)
{
    if (plan_find(pl, name))
        fail_msg("%s: unexpected tensor %s", pl->model, name);
}

static int count_prefix(const plan_t *pl, const char *prefix)
{
    int n = 0;
    for (size_t i = 0; i < pl->n; i++)
        n += !strncmp(pl->t[i].name, prefix, strlen(prefix));
    return n;
}

/* Total parameters against the model card (text model), within `rel`. */
static void expect_params(const char *model, double card, double rel)
{
    double n = (double)hr_synth_n_params(hr_synth_find(model));
    if (fabs(n - card) > rel * card)
        fail_msg("%s: %.4g parameters, the model card says %.4g", model, n, card);
}

/* gpt-oss-20b (openai/gpt-oss-20b config.json): hidden 2880, 24 layers, 64
 * heads of 64, 8 KV heads, 32 experts of 2880, top-4, vocabulary 201088;
 * MXFP4_MOE: experts MXFP4, other matrices Q8_0, router/biases/sinks F32. */
static void test_shape_gpt_oss(void **state)
{
    (void)state;
    plan_t pl = plan_of("gpt-oss-20b", HR_FTYPE_MXFP4_MOE, 0, false, 0);
    const uint32_t MX = 39, Q8 = HR_TYPE_Q8_0, F = HR_TYPE_F32;
    expect_t(&pl, "token_embd.weight", 2880, 201088, 0, Q8);
    expect_t(&pl, "output.weight", 2880, 201088, 0, Q8);
    expect_t(&pl, "output_norm.weight", 2880, 0, 0, F);
    expect_t(&pl, "blk.23.attn_q.weight", 2880, 64 * 64, 0, Q8);
    expect_t(&pl, "blk.23.attn_q.bias", 64 * 64, 0, 0, F);
    expect_t(&pl, "blk.0.attn_k.weight", 2880, 8 * 64, 0, Q8);
    expect_t(&pl, "blk.0.attn_k.bias", 8 * 64, 0, 0, F);
    expect_t(&pl, "blk.0.attn_v.weight", 2880, 8 * 64, 0, Q8);
    expect_t(&pl, "blk.0.attn_v.bias", 8 * 64, 0, 0, F);
    expect_t(&pl, "blk.0.attn_output.weight", 64 * 64, 2880, 0, Q8);
    expect_t(&pl, "blk.0.attn_output.bias", 2880, 0, 0, F);
    expect_t(&pl, "blk.0.attn_sinks.weight", 64, 0, 0, F);
    expect_t(&pl, "blk.0.post_attention_norm.weight", 2880, 0, 0, F);
    expect_absent(&pl, "blk.0.ffn_norm.weight");
    expect_t(&pl, "blk.0.ffn_gate_inp.weight", 2880, 32, 0, F);
    expect_t(&pl, "blk.0.ffn_gate_inp.bias", 32, 0, 0, F);
    expect_t(&pl, "blk.0.ffn_gate_exps.weight", 2880, 2880, 32, MX);
    expect_t(&pl, "blk.0.ffn_up_exps.weight", 2880, 2880, 32, MX);
    expect_t(&pl, "blk.0.ffn_down_exps.weight", 2880, 2880, 32, MX);
    expect_t(&pl, "blk.0.ffn_gate_exps.bias", 2880, 32, 0, F);
    expect_t(&pl, "blk.0.ffn_down_exps.bias", 2880, 32, 0, F);
    expect_absent(&pl, "blk.24.attn_norm.weight");
    assert_int_equal(count_prefix(&pl, "blk.23."), count_prefix(&pl, "blk.0."));
    /* the published ggml-org MXFP4 file is 12.1 GB */
    uint64_t bytes = hr_synth_tensor_bytes(hr_synth_find("gpt-oss-20b"), HR_FTYPE_MXFP4_MOE);
    assert_true(bytes > 11.9e9 && bytes < 12.2e9);
    free(pl.t);
    /* the Q8_0 experts the CPU path can write until MXFP4 lands */
    pl = plan_of("gpt-oss-20b", HR_FTYPE_MXFP4_MOE, 2, true, Q8);
    expect_t(&pl, "blk.1.ffn_up_exps.weight", 2880, 2880, 32, Q8);
    expect_t(&pl, "blk.1.attn_q.weight", 2880, 64 * 64, 0, Q8);
    expect_absent(&pl, "blk.2.attn_norm.weight");
    free(pl.t);
    expect_params("gpt-oss-20b", 20.91e9, 0.005); /* gpt-oss model card: 20.91B */
}

/* Qwen3-30B-A3B (config.json): hidden 2048, 48 layers, 32 heads of 128, 4 KV
 * heads, 128 experts of 768, top-8, vocabulary 151936. Q4_K_M as
 * llama-quantize: attn_v / ffn_down_exps Q6_K on its more-bits layers. */
static void test_shape_qwen3moe(void **state)
{
    (void)state;
    plan_t pl = plan_of("Qwen3-30B-A3B", HR_FTYPE_Q4_K_M, 0, false, 0);
    const uint32_t Q4 = HR_TYPE_Q4_K, Q6 = HR_TYPE_Q6_K, F = HR_TYPE_F32;
    expect_t(&pl, "token_embd.weight", 2048, 151936, 0, Q4);
    expect_t(&pl, "output.weight", 2048, 151936, 0, Q6);
    expect_t(&pl, "blk.0.attn_q.weight", 2048, 32 * 128, 0, Q4);
    expect_t(&pl, "blk.0.attn_k.weight", 2048, 4 * 128, 0, Q4);
    expect_t(&pl, "blk.0.attn_v.weight", 2048, 4 * 128, 0, Q6); /* layer 0 < 48 / 8 */
    expect_t(&pl, "blk.6.attn_v.weight", 2048, 4 * 128, 0, Q4);
    expect_t(&pl, "blk.8.attn_v.weight", 2048, 4 * 128, 0, Q6); /* (8 - 6) % 3 == 2 */
    expect_t(&pl, "blk.0.attn_output.weight", 32 * 128, 2048, 0, Q4);
    expect_t(&pl, "blk.0.attn_q_norm.weight", 128, 0, 0, F);
    expect_t(&pl, "blk.0.attn_k_norm.weight", 128, 0, 0, F);
    expect_t(&pl, "blk.0.ffn_gate_inp.weight", 2048, 128, 0, F);
    expect_t(&pl, "blk.47.ffn_gate_exps.weight", 2048, 768, 128, Q4);
    expect_t(&pl, "blk.47.ffn_up_exps.weight", 2048, 768, 128, Q4);
    expect_t(&pl, "blk.47.ffn_down_exps.weight", 768, 2048, 128, Q6);
    expect_t(&pl, "blk.7.ffn_down_exps.weight", 768, 2048, 128, Q4);
    expect_absent(&pl, "blk.0.ffn_gate.weight");
    expect_absent(&pl, "blk.0.ffn_gate_inp.bias");
    expect_absent(&pl, "blk.48.attn_norm.weight");
    /* published Q4_K_M files are about 18.6 GB */
    uint64_t bytes = hr_synth_tensor_bytes(hr_synth_find("Qwen3-30B-A3B"), HR_FTYPE_Q4_K_M);
    assert_true(bytes > 18.0e9 && bytes < 19.0e9);
    free(pl.t);
    /* a 2-layer cut: the same per-layer shapes, the rules over 2 layers */
    pl = plan_of("Qwen3-30B-A3B", HR_FTYPE_Q4_K_M, 2, false, 0);
    expect_t(&pl, "blk.1.ffn_gate_exps.weight", 2048, 768, 128, Q4);
    expect_t(&pl, "blk.1.ffn_down_exps.weight", 768, 2048, 128, Q6); /* 1 >= 7 * 2 / 8 */
    expect_t(&pl, "output.weight", 2048, 151936, 0, Q6);
    expect_absent(&pl, "blk.2.attn_norm.weight");
    assert_int_equal(pl.n, 3 + 2 * 12); /* a published file: 579 = 3 + 48 x 12 */
    free(pl.t);
    expect_params("Qwen3-30B-A3B", 30.5e9, 0.01); /* model card: 30.5B */
}

/* Gemma-3-4B (text config): hidden 2560, 34 layers, 8 heads of 256, 4 KV
 * heads, FFN 10240, 262144 embedding rows, tied. */
static void test_shape_gemma3(void **state)
{
    (void)state;
    plan_t pl = plan_of("Gemma-3-4B", HR_FTYPE_Q4_K_M, 0, false, 0);
    const uint32_t Q4 = HR_TYPE_Q4_K, Q6 = HR_TYPE_Q6_K, F = HR_TYPE_F32;
    expect_t(&pl, "token_embd.weight", 2560, 262144, 0, Q6); /* tied: the output's type */
    expect_absent(&pl, "output.weight");
    expect_t(&pl, "blk.0.attn_q.weight", 2560, 8 * 256, 0, Q4);
    expect_t(&pl, "blk.0.attn_k.weight", 2560, 4 * 256, 0, Q4);
    expect_t(&pl, "blk.33.attn_v.weight", 2560, 4 * 256, 0, Q6);
    expect_t(&pl, "blk.0.attn_output.weight", 8 * 256, 2560, 0, Q4);
    expect_t(&pl, "blk.0.attn_q_norm.weight", 256, 0, 0, F);
    expect_t(&pl, "blk.0.attn_k_norm.weight", 256, 0, 0, F);
    expect_t(&pl, "blk.5.post_attention_norm.weight", 2560, 0, 0, F);
    expect_t(&pl, "blk.5.ffn_norm.weight", 2560, 0, 0, F);
    expect_t(&pl, "blk.5.post_ffw_norm.weight", 2560, 0, 0, F);
    expect_t(&pl, "blk.0.ffn_gate.weight", 2560, 10240, 0, Q4);
    expect_t(&pl, "blk.0.ffn_up.weight", 2560, 10240, 0, Q4);
    expect_t(&pl, "blk.0.ffn_down.weight", 10240, 2560, 0, Q6);
    expect_absent(&pl, "blk.34.attn_norm.weight");
    /* published Q4_K_M: about 2.49 GB */
    uint64_t bytes = hr_synth_tensor_bytes(hr_synth_find("Gemma-3-4B"), HR_FTYPE_Q4_K_M);
    assert_true(bytes > 2.4e9 && bytes < 2.55e9);
    free(pl.t);
    expect_params("Gemma-3-4B", 3.88e9, 0.01); /* 4.3B with the 0.42B vision tower */
}

/* Phi-4-mini (config.json): hidden 3072, 32 layers, 24 heads of 128, 8 KV
 * heads, FFN 8192, vocabulary 200064, partial rotary 0.75 (96 dims: 48
 * LongRoPE factors), tied. */
static void test_shape_phi4_mini(void **state)
{
    (void)state;
    plan_t pl = plan_of("Phi-4-mini", HR_FTYPE_Q4_K_M, 0, false, 0);
    const uint32_t Q4 = HR_TYPE_Q4_K, Q6 = HR_TYPE_Q6_K, F = HR_TYPE_F32;
    expect_t(&pl, "token_embd.weight", 3072, 200064, 0, Q6);
    expect_absent(&pl, "output.weight");
    expect_t(&pl, "rope_factors_long.weight", 48, 0, 0, F);
    expect_t(&pl, "rope_factors_short.weight", 48, 0, 0, F);
    expect_t(&pl, "blk.0.attn_qkv.weight", 3072, 3072 + 2 * 1024, 0, Q6);
    expect_t(&pl, "blk.4.attn_qkv.weight", 3072, 3072 + 2 * 1024, 0, Q4);
    expect_absent(&pl, "blk.0.attn_q.weight");
    expect_t(&pl, "blk.0.attn_output.weight", 3072, 3072, 0, Q4);
    expect_t(&pl, "blk.0.ffn_up.weight", 3072, 2 * 8192, 0, Q4);
    expect_absent(&pl, "blk.0.ffn_gate.weight");
    expect_t(&pl, "blk.31.ffn_down.weight", 8192, 3072, 0, Q6);
    expect_absent(&pl, "blk.32.attn_norm.weight");
    free(pl.t);
    expect_params("Phi-4-mini", 3.84e9, 0.01); /* model card: 3.8B */
}

/* Llama-4-Scout-17B-16E (text config): hidden 5120, 48 layers, 40 heads of
 * 128, 8 KV heads, 16 experts of 8192 top-1 + a shared expert, every layer
 * MoE (interleave step 1), vocabulary 202048, llama3 RoPE (64 factors). */
static void test_shape_llama4(void **state)
{
    (void)state;
    plan_t pl = plan_of("Llama-4-Scout", HR_FTYPE_Q4_K_M, 0, false, 0);
    const uint32_t Q4 = HR_TYPE_Q4_K, Q6 = HR_TYPE_Q6_K, F = HR_TYPE_F32;
    expect_t(&pl, "token_embd.weight", 5120, 202048, 0, Q4);
    expect_t(&pl, "output.weight", 5120, 202048, 0, Q6);
    expect_t(&pl, "rope_freqs.weight", 64, 0, 0, F);
    expect_t(&pl, "blk.0.attn_q.weight", 5120, 40 * 128, 0, Q4);
    expect_t(&pl, "blk.0.attn_k.weight", 5120, 8 * 128, 0, Q4);
    expect_absent(&pl, "blk.0.attn_q_norm.weight"); /* Scout's Q/K norm is weightless */
    for (int il = 0; il < 48; il++) {
        char n[64];
        snprintf(n, sizeof n, "blk.%d.ffn_gate_exps.weight", il);
        expect_t(&pl, n, 5120, 8192, 16, Q4);
        snprintf(n, sizeof n, "blk.%d.ffn_gate.weight", il);
        expect_absent(&pl, n);
    }
    expect_t(&pl, "blk.0.ffn_gate_inp.weight", 5120, 16, 0, F);
    expect_t(&pl, "blk.0.ffn_down_exps.weight", 8192, 5120, 16, Q6);
    expect_t(&pl, "blk.0.ffn_gate_shexp.weight", 5120, 8192, 0, Q4);
    expect_t(&pl, "blk.0.ffn_up_shexp.weight", 5120, 8192, 0, Q4);
    expect_t(&pl, "blk.0.ffn_down_shexp.weight", 8192, 5120, 0, Q6);
    free(pl.t);
    expect_params("Llama-4-Scout", 109e9, 0.02); /* model card: 109B total */
    /* Maverick-style interleave (tiny-llama4, step 2): odd layers MoE, even dense */
    pl = plan_of("tiny-llama4", HR_FTYPE_F16, 0, false, 0);
    expect_t(&pl, "blk.0.ffn_gate.weight", 256, 512, 0, HR_TYPE_F16);
    expect_absent(&pl, "blk.0.ffn_gate_exps.weight");
    expect_t(&pl, "blk.1.ffn_gate_exps.weight", 256, 256, 4, HR_TYPE_F16);
    expect_t(&pl, "blk.1.ffn_gate_inp.weight", 256, 4, 0, F);
    expect_absent(&pl, "blk.1.ffn_gate.weight");
    expect_t(&pl, "blk.3.ffn_up_shexp.weight", 256, 256, 0, HR_TYPE_F16);
    free(pl.t);
}

static hr_gguf *open_meta(const char *model, int32_t n_layers, const char *path)
{
    hr_synth_params p = {.model = hr_synth_find(model), .ftype = HR_FTYPE_Q4_K_M, .seed = 1, .out_path = path,
                         .n_threads = 1, .n_layers = n_layers, .metadata_only = true};
    hr_err err = {0};
    if (hr_synth_write(&p, &err))
        fail_msg("%s: %s", model, err.msg);
    hr_gguf *g;
    if (hr_gguf_open(path, &g, &err))
        fail_msg("%s: %s", model, err.msg);
    return g;
}

static void expect_u(const hr_gguf *g, const char *key, int64_t want)
{
    int64_t v = -1;
    if (!hr_gguf_get_i64(g, key, &v) || v != want)
        fail_msg("%s = %lld, want %lld", key, (long long)v, (long long)want);
}

static void expect_f(const hr_gguf *g, const char *key, double want)
{
    float v = -1; /* stored as F32: within its rounding (6e-8 relative) */
    if (!hr_gguf_get_f32(g, key, &v) || fabs(v - want) > 1e-7 * fabs(want))
        fail_msg("%s = %g, want %g", key, (double)v, want);
}

static void expect_s(const hr_gguf *g, const char *key, const char *want)
{
    hr_gguf_str s;
    char buf[64];
    if (!hr_gguf_get_str(g, key, &s) || strcmp(hr_gguf_str_copy(s, buf, sizeof buf), want))
        fail_msg("%s is not '%s'", key, want);
}

static void expect_no_key(const hr_gguf *g, const char *key)
{
    if (hr_gguf_find(g, key))
        fail_msg("unexpected key %s", key);
}

/* The hyperparameters as llama.cpp's converter writes them, from the configs. */
static void test_metadata_published(void **state)
{
    (void)state;
    hr_gguf *g = open_meta("gpt-oss-20b", 0, tmp_path("m1.gguf"));
    expect_s(g, "general.architecture", "gpt-oss");
    expect_u(g, "gpt-oss.block_count", 24);
    expect_u(g, "gpt-oss.embedding_length", 2880);
    expect_u(g, "gpt-oss.context_length", 131072);
    expect_u(g, "gpt-oss.attention.head_count", 64);
    expect_u(g, "gpt-oss.attention.head_count_kv", 8);
    expect_u(g, "gpt-oss.attention.key_length", 64);
    expect_u(g, "gpt-oss.attention.sliding_window", 128);
    expect_u(g, "gpt-oss.expert_count", 32);
    expect_u(g, "gpt-oss.expert_used_count", 4);
    expect_u(g, "gpt-oss.expert_feed_forward_length", 2880);
    expect_f(g, "gpt-oss.rope.freq_base", 150000);
    expect_s(g, "gpt-oss.rope.scaling.type", "yarn");
    expect_f(g, "gpt-oss.rope.scaling.factor", 32);
    expect_u(g, "gpt-oss.rope.scaling.original_context_length", 4096);
    expect_f(g, "gpt-oss.rope.scaling.yarn_beta_fast", 32);
    expect_f(g, "gpt-oss.rope.scaling.yarn_beta_slow", 1);
    expect_f(g, "gpt-oss.attention.layer_norm_rms_epsilon", 1e-5);
    assert_int_equal(hr_gguf_n_tensors(g), 0);
    hr_gguf_close(g);

    g = open_meta("Qwen3-30B-A3B", 2, tmp_path("m2.gguf"));
    expect_u(g, "qwen3moe.block_count", 2); /* the cut */
    expect_u(g, "hearth.synth.layers_of", 48);
    expect_u(g, "qwen3moe.embedding_length", 2048);
    expect_u(g, "qwen3moe.feed_forward_length", 6144);
    expect_u(g, "qwen3moe.expert_feed_forward_length", 768);
    expect_u(g, "qwen3moe.expert_count", 128);
    expect_u(g, "qwen3moe.expert_used_count", 8);
    expect_u(g, "qwen3moe.attention.key_length", 128);
    expect_u(g, "qwen3moe.context_length", 40960);
    expect_f(g, "qwen3moe.rope.freq_base", 1e6);
    expect_no_key(g, "qwen3moe.attention.sliding_window");
    hr_gguf_close(g);

    g = open_meta("Gemma-3-4B", 0, tmp_path("m3.gguf"));
    expect_u(g, "gemma3.block_count", 34);
    expect_u(g, "gemma3.attention.key_length", 256);
    expect_u(g, "gemma3.attention.sliding_window", 1024);
    expect_f(g, "gemma3.rope.freq_base", 1e6);
    expect_f(g, "gemma3.rope.freq_base_swa", 1e4);
    expect_s(g, "gemma3.rope.scaling.type", "linear");
    expect_f(g, "gemma3.rope.scaling.factor", 8);
    expect_f(g, "gemma3.attention.layer_norm_rms_epsilon", 1e-6);
    expect_no_key(g, "gemma3.final_logit_softcapping"); /* null in Gemma 3's config */
    expect_no_key(g, "gemma3.expert_count");
    hr_gguf_close(g);

    g = open_meta("Phi-4-mini", 1, tmp_path("m4.gguf"));
    expect_u(g, "phi3.block_count", 1);
    expect_u(g, "phi3.rope.dimension_count", 96);
    expect_u(g, "phi3.context_length", 131072);
    expect_u(g, "phi3.rope.scaling.original_context_length", 4096);
    expect_f(g, "phi3.rope.scaling.attn_factor", sqrt(1 + log(131072.0 / 4096) / log(4096.0)));
    expect_u(g, "phi3.attention.sliding_window", 262144);
    expect_f(g, "phi3.rope.freq_base", 10000);
    hr_gguf_close(g);

    g = open_meta("Llama-4-Scout", 0, tmp_path("m5.gguf"));
    expect_u(g, "llama4.block_count", 48);
    expect_u(g, "llama4.feed_forward_length", 16384);
    expect_u(g, "llama4.expert_feed_forward_length", 8192);
    expect_u(g, "llama4.expert_count", 16);
    expect_u(g, "llama4.expert_used_count", 1);
    expect_u(g, "llama4.interleave_moe_layer_step", 1);
    expect_u(g, "llama4.context_length", 10485760);
    expect_u(g, "llama4.rope.dimension_count", 128);
    expect_u(g, "llama4.vocab_size", 202048);
    expect_f(g, "llama4.rope.freq_base", 5e5);
    expect_no_key(g, "llama4.attention.sliding_window"); /* chunked 8192: llama.cpp's default */
    hr_gguf_close(g);
}

/* Writing the tiny versions: the file holds what the plan says, byte sizes
 * add up, 3-D tensors read back with their shapes. */
static void test_tiny_families_write(void **state)
{
    (void)state;
    static const char *models[] = {"tiny-gpt-oss", "tiny-qwen3moe", "tiny-gemma3", "tiny-phi4", "tiny-llama4"};
    static const hr_ftype types[] = {HR_FTYPE_F16, HR_FTYPE_Q8_0, HR_FTYPE_Q4_K_M};
    for (size_t mi = 0; mi < 5; mi++)
        for (size_t ti = 0; ti < 3; ti++) {
            char name[64];
            snprintf(name, sizeof name, "%s-%s.gguf", models[mi], hr_ftype_name(types[ti]));
            const char *path = tmp_path(name);
            synth(models[mi], types[ti], 1, 2, NULL, path);
            plan_t pl = plan_of(models[mi], types[ti], 0, false, 0);
            hr_gguf *g;
            hr_err err = {0};
            if (hr_gguf_open(path, &g, &err))
                fail_msg("%s: %s", name, err.msg);
            assert_int_equal(hr_gguf_n_tensors(g), pl.n);
            uint64_t bytes = 0;
            int n3 = 0;
            for (uint64_t i = 0; i < hr_gguf_n_tensors(g); i++) {
                const hr_gguf_tensor *t = hr_gguf_tensor_at(g, i);
                char tn[96];
                hr_gguf_str_copy(t->name, tn, sizeof tn);
                const hr_synth_tensor *w = plan_find(&pl, tn);
                if (!w)
                    fail_msg("%s: %s not planned", name, tn);
                assert_int_equal(t->type, w->type);
                assert_int_equal(t->n_dims, w->n_dims);
                for (int d = 0; d < 3; d++)
                    assert_int_equal(t->ne[d], w->ne[d]);
                n3 += t->n_dims == 3;
                bytes += t->size;
            }
            hr_synth_params p = {.model = hr_synth_find(models[mi]), .ftype = types[ti]};
            assert_int_equal(bytes, hr_synth_params_bytes(&p));
            bool moe = hr_synth_find(models[mi])->n_expert > 0;
            assert_true(moe ? n3 >= 3 : n3 == 0);
            /* weights are not all zero: a row of a Q8_0 matrix decodes to sane values */
            hr_gguf_close(g);
            free(pl.t);
        }
}

/* gpt-oss experts are MXFP4 via hr_quantize_row: either the quantiser has
 * MXFP4 and the file holds type-39 experts, or the write fails before any
 * file is left, naming the type and the way out. */
static void test_mxfp4_experts(void **state)
{
    (void)state;
    const char *path = tmp_path("mx.gguf");
    hr_synth_params p = {.model = hr_synth_find("tiny-gpt-oss"), .ftype = HR_FTYPE_MXFP4_MOE, .seed = 1,
                         .out_path = path, .n_threads = 1};
    hr_err err = {0};
    static const float z[32];
    uint8_t blk[17];
    bool have = hr_quantize_row(39, z, blk, 32);
    hr_status st = hr_synth_write(&p, &err);
    if (have) {
        assert_int_equal(st, HR_OK);
        hr_gguf *g;
        assert_int_equal(hr_gguf_open(path, &g, &err), HR_OK);
        const hr_gguf_tensor *t = hr_gguf_find_tensor(g, "blk.0.ffn_up_exps.weight");
        assert_non_null(t);
        assert_int_equal(t->type, 39);
        assert_int_equal(t->size, (size_t)128 * 4 * (256 / 32) * 17);
        hr_gguf_close(g);
    } else {
        assert_int_equal(st, HR_ERR_UNSUPPORTED);
        assert_non_null(strstr(err.msg, "MXFP4"));
        assert_non_null(strstr(err.msg, "--expert-type"));
        assert_int_equal(access(path, F_OK), -1);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        assert_int_equal(access(tmp, F_OK), -1);
    }
    /* Q8_0 experts in the same mix */
    p.expert_type_set = true;
    p.expert_type = HR_TYPE_Q8_0;
    assert_int_equal(hr_synth_write(&p, &err), HR_OK);
    hr_gguf *g;
    assert_int_equal(hr_gguf_open(path, &g, &err), HR_OK);
    const hr_gguf_tensor *t = hr_gguf_find_tensor(g, "blk.1.ffn_down_exps.weight");
    assert_non_null(t);
    assert_int_equal(t->type, HR_TYPE_Q8_0);
    assert_int_equal(hr_gguf_find_tensor(g, "blk.1.attn_q.weight")->type, HR_TYPE_Q8_0);
    assert_int_equal(hr_gguf_find_tensor(g, "blk.1.ffn_gate_inp.weight")->type, HR_TYPE_F32);
    uint32_t ft = 0;
    assert_true(hr_gguf_get_u32(g, "general.file_type", &ft));
    assert_int_equal(ft, 38);
    hr_gguf_close(g);
}

/* `hearth synth --layers` and `hearth inspect` on the result. */
static void test_cli_layers_inspect(void **state)
{
    (void)state;
    const char *bin = getenv("HEARTH_BIN");
    if (!bin)
        TU_SKIP_OR_FAIL("HEARTH_BIN not set");
    const char *path = tmp_path("cut.gguf");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s synth --model tiny-llama4 --type Q4_K_M --layers 2 -q -o %s", bin, path);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s inspect %s --json", bin, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    json_error_t je;
    json_t *o = json_loadf(p, 0, &je);
    pclose(p); /* the exit status says whether hearth can run the architecture; the listing must work */
    if (!o)
        fail_msg("inspect --json output is not JSON: %s", je.text);
    assert_string_equal(json_string_value(json_object_get(o, "architecture")), "llama4");
    assert_int_equal(json_integer_value(json_object_get(o, "block_count")), 2);
    /* global 4 (token_embd, rope_freqs, output_norm, output) + dense layer 0 (9) + MoE layer 1 (13) */
    assert_int_equal(json_integer_value(json_object_get(o, "n_tensors")), 4 + 9 + 13);
    json_decref(o);
    snprintf(cmd, sizeof cmd, "%s synth --model tiny-llama4 --type Q4_K_M --layers 5 -q -o %s 2>/dev/null", bin,
             path);
    assert_int_not_equal(system(cmd), 0); /* more layers than the model has */
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
        cmocka_unit_test(test_shape_gpt_oss),
        cmocka_unit_test(test_shape_qwen3moe),
        cmocka_unit_test(test_shape_gemma3),
        cmocka_unit_test(test_shape_phi4_mini),
        cmocka_unit_test(test_shape_llama4),
        cmocka_unit_test(test_metadata_published),
        cmocka_unit_test(test_tiny_families_write),
        cmocka_unit_test(test_mxfp4_experts),
        cmocka_unit_test(test_cli_layers_inspect),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
