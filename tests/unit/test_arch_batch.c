/* Batching, prefix caching, forking and preemption on every new
 * architecture (one fixture each of ../shared/fixtures/models/arch/:
 * qwen3moe, gpt-oss, gemma3, gemma3_27b, phi3 LongRoPE, llama4).
 *
 * Engine level: a sequence computed alone, interleaved with another one in
 * mixed batches under forced internal splits, continued from a forked copy
 * or from the prefix cache, gives bit for bit the logits of the cold run.
 * Scheduler level: 16 mixed requests (n = 2 among them) in one batch, a
 * prefix-cache hit, preemption under a small KV pool and n = 3 each give
 * exactly the greedy token ids of the request alone.
 *
 * The sequences and prompts are longer than the sliding windows (gpt-oss
 * 16, gemma3 12, gemma3_27b 10), the shared prefixes are longer than the
 * windows, and the continuations run past them, so the window's edge moves
 * across KV block boundaries while sequences share, fork and lose blocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
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
#include "model/model.h"
#include "sched/sched.h"
#include "testutil.h"

#define NSEQ 49 /* sequence_A / sequence_B of the reference JSON */

typedef struct {
    const char *name; /* models/arch/<name>.gguf, models/arch/reference/<name>.json */
    hr_model *m;
    int32_t a[NSEQ], b[NSEQ];
    int32_t window; /* the smallest sliding window of the model; 0: none */
} arch;

static void load_arch(arch *x)
{
    char rel[256];
    hr_err err = {0};
    snprintf(rel, sizeof rel, "models/arch/%s.gguf", x->name);
    if (hr_model_load(tu_fixture(rel), &x->m, &err)) {
        if (strstr(err.msg, "unsupported type MXFP4")) /* item 4 of issue 13, on its own branch */
            TU_SKIP_OR_FAIL("%s: %s", rel, err.msg);
        fail_msg("%s: %s", rel, err.msg);
    }
    snprintf(rel, sizeof rel, "models/arch/reference/%s.json", x->name);
    json_error_t je;
    json_t *d = json_load_file(tu_fixture(rel), 0, &je);
    if (!d)
        fail_msg("%s: %s", rel, je.text);
    json_t *sa = json_object_get(d, "sequence_A"), *sb = json_object_get(d, "sequence_B");
    assert_int_equal(json_array_size(sa), NSEQ);
    assert_int_equal(json_array_size(sb), NSEQ);
    for (int i = 0; i < NSEQ; i++) {
        x->a[i] = (int32_t)json_integer_value(json_array_get(sa, i));
        x->b[i] = (int32_t)json_integer_value(json_array_get(sb, i));
    }
    json_decref(d);
    const hr_hparams *hp = hr_model_hparams(x->m);
    x->window = 0;
    for (int32_t l = 0; l < hp->n_layer; l++)
        if (hp->layer[l].attn == HR_ATTN_WINDOW && (!x->window || hp->layer[l].window < x->window))
            x->window = hp->layer[l].window;
}

/* ---- engine level ------------------------------------------------------ */

/* Bit-exact comparison of logits rows; on a mismatch names the row and the
 * largest difference. */
static void rows_equal(const char *what, const arch *x, const float *got, const float *want, int n_rows, int32_t nv,
                       int first_pos)
{
    for (int r = 0; r < n_rows; r++) {
        const float *g = got + (size_t)r * nv, *w = want + (size_t)r * nv;
        if (!memcmp(g, w, (size_t)nv * sizeof(float)))
            continue;
        float md = 0;
        int32_t at = 0;
        for (int32_t v = 0; v < nv; v++)
            if (fabsf(g[v] - w[v]) > md || g[v] != g[v]) {
                md = fabsf(g[v] - w[v]);
                at = v;
            }
        fail_msg("%s, %s: logits of position %d differ from the cold run (max |diff| %g at id %d: %g vs %g)", x->name,
                 what, first_pos + r, (double)md, at, (double)g[at], (double)w[at]);
    }
}

/* Positions [from, to) of ids as seq, in one call (split internally by the engine). */
static void forward_span(hr_engine *e, hr_kv *kv, const int32_t *ids, int from, int to, int32_t sid, float *out)
{
    int32_t pos[NSEQ + 8], seq[NSEQ + 8];
    for (int i = from; i < to; i++) {
        pos[i - from] = i;
        seq[i - from] = sid;
    }
    hr_batch b = {.n_tokens = to - from, .token = ids + from, .pos = pos, .seq = seq};
    hr_err err = {0};
    hr_status st = hr_engine_forward(e, kv, &b, out, &err);
    if (st)
        fail_msg("forward: %s", err.msg);
}

static void check_engine(const char *name)
{
    arch x = {.name = name};
    load_arch(&x);
    const int32_t nv = hr_model_hparams(x.m)->n_vocab;
    hr_err err = {0};
    hr_kv *kv;
    /* blocks of 4 positions: the windows (16, 12, 10) end inside and at block edges */
    hr_kv_params kp = {.n_blocks = 96, .block_tokens = 4, .max_seqs = 8};
    assert_int_equal(hr_kv_new(hr_model_hparams(x.m), &kp, &kv, &err), HR_OK);
    hr_engine *e;
    hr_engine_params ep = {.max_batch = 7, .n_threads = 1}; /* forces internal splits */
    assert_int_equal(hr_engine_new(x.m, &ep, &e, &err), HR_OK);

    /* cold runs of A and B */
    float *ra = malloc((size_t)NSEQ * nv * sizeof(float)), *rb = malloc((size_t)NSEQ * nv * sizeof(float));
    float *out = malloc((size_t)2 * NSEQ * nv * sizeof(float));
    assert_non_null(ra);
    assert_non_null(rb);
    assert_non_null(out);
    forward_span(e, kv, x.a, 0, NSEQ, 0, ra);
    forward_span(e, kv, x.b, 0, NSEQ, 1, rb);
    hr_kv_seq_clear(kv, 0);
    hr_kv_seq_clear(kv, 1);
    assert_int_equal(hr_kv_blocks_free(kv), 96);

    /* threaded engines with other splits compute the same bits: batches of
     * 5, and the whole sequence in one internal step (1 and 3 threads) */
    static const hr_engine_params other[] = {{.max_batch = 5, .n_threads = 3},
                                             {.max_batch = 64, .n_threads = 1},
                                             {.max_batch = 64, .n_threads = 3}};
    for (size_t k = 0; k < sizeof other / sizeof other[0]; k++) {
        hr_engine *e3;
        assert_int_equal(hr_engine_new(x.m, &other[k], &e3, &err), HR_OK);
        char what[64];
        snprintf(what, sizeof what, "%d threads, batches of %d", other[k].n_threads, other[k].max_batch);
        forward_span(e3, kv, x.b, 0, NSEQ, 0, out);
        rows_equal(what, &x, out, rb, NSEQ, nv, 0);
        forward_span(e3, kv, x.a, 0, NSEQ, 1, out);
        rows_equal(what, &x, out, ra, NSEQ, nv, 0);
        hr_kv_seq_clear(kv, 0);
        hr_kv_seq_clear(kv, 1);
        hr_engine_free(e3);
    }

    /* A one token at a time (a decode per position): same bits as one prefill */
    for (int i = 0; i < NSEQ; i++) {
        forward_span(e, kv, x.a, i, i + 1, 2, out);
        rows_equal("decoded one at a time", &x, out, ra + (size_t)i * nv, 1, nv, i);
    }
    hr_kv_seq_clear(kv, 2);

    /* Mixed: a prefill chunk of A (seq 3) and of B (seq 4) in one batch,
     * then chunks of 3 of A beside single decodes of B, past the windows. */
    int32_t tok[2 * NSEQ], pos[2 * NSEQ], seq[2 * NSEQ];
    int n = 0;
    for (int i = 0; i < 9; i++, n++)
        tok[n] = x.a[i], pos[n] = i, seq[n] = 3;
    for (int i = 0; i < 5; i++, n++)
        tok[n] = x.b[i], pos[n] = i, seq[n] = 4;
    hr_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq = seq};
    if (hr_engine_forward(e, kv, &b, out, &err))
        fail_msg("forward: %s", err.msg);
    rows_equal("mixed prefill, A", &x, out, ra, 9, nv, 0);
    rows_equal("mixed prefill, B", &x, out + (size_t)9 * nv, rb, 5, nv, 0);
    int ia = 9, ib = 5;
    while (ia < NSEQ || ib < NSEQ) {
        n = 0;
        if (ib < NSEQ)
            tok[n] = x.b[ib], pos[n] = ib, seq[n] = 4, n++;
        int na = ia + 3 <= NSEQ ? 3 : NSEQ - ia;
        for (int k = 0; k < na; k++, n++)
            tok[n] = x.a[ia + k], pos[n] = ia + k, seq[n] = 3;
        b.n_tokens = n;
        if (hr_engine_forward(e, kv, &b, out, &err))
            fail_msg("forward: %s", err.msg);
        int k = 0;
        if (ib < NSEQ) {
            rows_equal("mixed decode, B", &x, out, rb + (size_t)ib * nv, 1, nv, ib);
            ib++, k++;
        }
        rows_equal("mixed chunk, A", &x, out + (size_t)k * nv, ra + (size_t)ia * nv, na, nv, ia);
        ia += na;
    }

    /* Fork: seq 5 = the first 30 positions of A (seq 3 holds all 49; a
     * partial block is copied), then A's own continuation and, in seq 6
     * forked at 22, B's tokens as a different continuation of A's prefix. */
    if (hr_kv_seq_fork(kv, 3, 5, 30, &err))
        fail_msg("fork: %s", err.msg);
    forward_span(e, kv, x.a, 30, NSEQ, 5, out);
    rows_equal("forked at 30", &x, out, ra + (size_t)30 * nv, NSEQ - 30, nv, 30);
    int32_t mix[NSEQ]; /* A's first 22, then B's tokens */
    for (int i = 0; i < NSEQ; i++)
        mix[i] = i < 22 ? x.a[i] : x.b[i];
    float *rm = malloc((size_t)NSEQ * nv * sizeof(float));
    assert_non_null(rm);
    forward_span(e, kv, mix, 0, NSEQ, 7, rm); /* cold */
    hr_kv_seq_clear(kv, 7);
    if (hr_kv_seq_fork(kv, 3, 6, 22, &err))
        fail_msg("fork: %s", err.msg);
    forward_span(e, kv, mix, 22, NSEQ, 6, out);
    rows_equal("forked at 22, other continuation", &x, out, rm + (size_t)22 * nv, NSEQ - 22, nv, 22);
    for (int s = 3; s <= 6; s++)
        hr_kv_seq_clear(kv, s);

    /* Prefix cache: A registered, then the mixed sequence attaches the
     * blocks of the shared 22 positions (five whole blocks, then two
     * positions copied) and computes the rest. */
    forward_span(e, kv, x.a, 0, NSEQ, 0, out);
    hr_kv_prefix_commit(kv, 0, x.a, NSEQ);
    hr_kv_seq_clear(kv, 0);
    int32_t got = hr_kv_prefix_attach(kv, 1, mix, NSEQ);
    assert_true(got > x.window); /* the hit covers more than a window */
    assert_true(got <= 22);
    forward_span(e, kv, mix, got, NSEQ, 1, out);
    rows_equal("after a prefix-cache hit", &x, out, rm + (size_t)got * nv, NSEQ - got, nv, got);
    /* all of A again: every block but the last position's from the cache */
    got = hr_kv_prefix_attach(kv, 2, x.a, NSEQ);
    assert_int_equal(got, NSEQ - 1);
    forward_span(e, kv, x.a, got, NSEQ, 2, out);
    rows_equal("full prefix hit", &x, out, ra + (size_t)got * nv, 1, nv, got);
    hr_kv_seq_clear(kv, 1);
    hr_kv_seq_clear(kv, 2);
    assert_int_equal(hr_kv_blocks_free(kv), 96);

    free(rm);
    free(out);
    free(ra);
    free(rb);
    hr_engine_free(e);
    hr_kv_free(kv);
    hr_model_free(x.m);
}

/* ---- scheduler level --------------------------------------------------- */

#define MAXGEN 48
#define NREQ 16

typedef struct {
    int32_t ids[3][MAXGEN];
    int n_ids[3];
    hr_finish finish[3];
    int32_t cached;
} gen_out;

static void collect(hr_req *r, gen_out *o)
{
    memset(o, 0, sizeof *o);
    hr_event ev[16];
    int spins = 0;
    while (!hr_req_finished(r)) {
        size_t n = hr_req_poll(r, ev, 16);
        if (!n) {
            usleep(200);
            assert_true(++spins < 600000); /* 2 minutes */
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            int c = ev[i].index;
            assert_true(c >= 0 && c < 3);
            if (ev[i].kind == HR_EV_TEXT) {
                for (int32_t k = 0; k < ev[i].n_tokens; k++) {
                    assert_true(o->n_ids[c] < MAXGEN);
                    o->ids[c][o->n_ids[c]++] = ev[i].tokens[k].token;
                }
            } else {
                o->finish[c] = ev[i].finish;
            }
        }
    }
    o->cached = hr_req_usage_of(r).cached_tokens;
}

static hr_gen_params greedy(const int32_t *prompt, int32_t n, int32_t max_tokens)
{
    hr_gen_params g = {0};
    g.prompt = prompt;
    g.n_prompt = n;
    g.max_tokens = max_tokens;
    g.n = 1;
    g.sample = hr_sample_defaults();
    g.sample.temperature = 0;
    g.logprobs = 0; /* the events carry the sampled ids */
    g.ignore_eos = true;
    return g;
}

static hr_sched *mk(const arch *x, int32_t max_running, int32_t block_tokens, int64_t kv_tokens)
{
    hr_sched_params p = hr_sched_defaults();
    p.max_running = max_running;
    p.n_ctx = 128;
    p.step_tokens = 32; /* prompts are prefilled in several chunks, beside decodes */
    p.max_queue = 64;
    if (block_tokens)
        p.block_tokens = block_tokens;
    if (kv_tokens)
        p.kv_bytes = kv_tokens * (int64_t)hr_kv_bytes_per_token(hr_model_hparams(x->m));
    hr_sched *s;
    hr_err err = {0};
    if (hr_sched_new(x->m, &p, &s, &err))
        fail_msg("%s", err.msg);
    return s;
}

/* One request's ids against the reference (the request alone, cold). */
static void same_ids(const arch *x, const char *what, int req, int choice, const gen_out *got, const gen_out *want,
                     int32_t max_tokens)
{
    assert_int_equal(want->n_ids[0], max_tokens);
    assert_int_equal(want->finish[0], HR_FINISH_LENGTH);
    if (got->finish[choice] != HR_FINISH_LENGTH || got->n_ids[choice] != max_tokens)
        fail_msg("%s, %s: request %d choice %d: finish %s after %d tokens, not length after %d", x->name, what, req,
                 choice, hr_finish_name(got->finish[choice]), got->n_ids[choice], max_tokens);
    for (int k = 0; k < max_tokens; k++)
        if (got->ids[choice][k] != want->ids[0][k])
            fail_msg("%s, %s: request %d choice %d: token %d is %d, alone %d", x->name, what, req, choice, k,
                     got->ids[choice][k], want->ids[0][k]);
}

static int32_t prompt[NREQ][NSEQ + 8];
static int32_t plen[NREQ], maxt[NREQ], nchoice[NREQ];

/* 16 prompts of 6 to 49 tokens: prefixes of A (several share more than a
 * window with each other), A's first 24 tokens then B's, B alone, and two
 * identical pairs; continuations of 20 to 36 tokens. Request 5 asks n = 2. */
static void make_prompts(const arch *x)
{
    for (int i = 0; i < NREQ; i++) {
        int32_t *p = prompt[i];
        switch (i % 4) {
        case 0: /* a prefix of A, 20..49 tokens */
            plen[i] = 20 + (i * 11) % 30;
            memcpy(p, x->a, (size_t)plen[i] * sizeof *p);
            break;
        case 1: /* B's first 6..26 tokens */
            plen[i] = 6 + (i * 5) % 21;
            memcpy(p, x->b, (size_t)plen[i] * sizeof *p);
            break;
        case 2: /* A's first 24, then B's: shares 24 tokens with the A prompts */
            plen[i] = 30 + i;
            for (int j = 0; j < plen[i]; j++)
                p[j] = j < 24 ? x->a[j] : x->b[j];
            break;
        default: /* the same prompt as request i - 3 or i - 1 */
            plen[i] = plen[i % 8 == 3 ? i - 3 : i - 1];
            memcpy(p, prompt[i % 8 == 3 ? i - 3 : i - 1], (size_t)plen[i] * sizeof *p);
            break;
        }
        maxt[i] = 20 + (i * 7) % 17;
        nchoice[i] = i == 5 ? 2 : 1;
    }
}

static void run_alone(const arch *x, int i, gen_out *o)
{
    hr_sched *s = mk(x, 1, 0, 0);
    hr_gen_params g = greedy(prompt[i], plen[i], maxt[i]);
    hr_req *r;
    hr_err err = {0};
    if (hr_sched_submit(s, &g, NULL, NULL, &r, &err))
        fail_msg("submit: %s", err.msg);
    collect(r, o);
    hr_req_release(r);
    hr_sched_free(s);
}

static void run_batch(const arch *x, const char *what, hr_sched *s, const gen_out *alone)
{
    hr_req *r[NREQ];
    hr_err err = {0};
    for (int i = 0; i < NREQ; i++) {
        hr_gen_params g = greedy(prompt[i], plen[i], maxt[i]);
        g.n = nchoice[i];
        if (hr_sched_submit(s, &g, NULL, NULL, &r[i], &err))
            fail_msg("submit: %s", err.msg);
    }
    for (int i = 0; i < NREQ; i++) {
        gen_out o;
        collect(r[i], &o);
        for (int c = 0; c < nchoice[i]; c++)
            same_ids(x, what, i, c, &o, &alone[i], maxt[i]);
        hr_req_release(r[i]);
    }
}

static void wait_idle(hr_sched *s, hr_sched_stats *st)
{
    for (int k = 0; k < 2000; k++) {
        hr_sched_stats_of(s, st);
        if (st->running == 0 && st->waiting == 0 && st->kv_blocks_used == 0)
            return;
        usleep(1000);
    }
}

static void check_sched(const char *name)
{
    arch x = {.name = name};
    load_arch(&x);
    make_prompts(&x);
    gen_out alone[NREQ];
    for (int i = 0; i < NREQ; i++)
        run_alone(&x, i, &alone[i]);

    /* 16 together, room for all of them */
    hr_sched_stats st;
    hr_sched *s = mk(&x, 16, 0, 0);
    run_batch(&x, "batch of 16", s, alone);
    wait_idle(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_true(st.cached_prompt_tokens > 0); /* identical and shared prompts met in the cache */

    /* a prefix-cache hit on a scheduler that has served A's longest prefix:
     * the same prompt again, and the one sharing A's first 24 tokens */
    int ia = 0, ic = 2;
    for (int i = 0; i < NREQ; i += 4)
        if (plen[i] > plen[ia])
            ia = i;
    for (int k = 0; k < 2; k++) {
        int i = k ? ic : ia;
        hr_gen_params g = greedy(prompt[i], plen[i], maxt[i]);
        hr_req *r;
        hr_err err = {0};
        if (hr_sched_submit(s, &g, NULL, NULL, &r, &err))
            fail_msg("submit: %s", err.msg);
        gen_out o;
        collect(r, &o);
        hr_req_release(r);
        if (o.cached <= x.window)
            fail_msg("%s: prefix hit of request %d covers %d positions, not more than the window %d", x.name, i,
                     o.cached, x.window);
        same_ids(&x, "prefix-cache hit", i, 0, &o, &alone[i], maxt[i]);
    }

    /* n = 3 of one prompt: forked sequences share the prefix blocks */
    {
        hr_gen_params g = greedy(prompt[ic], plen[ic], maxt[ic]);
        g.n = 3;
        hr_req *r;
        hr_err err = {0};
        if (hr_sched_submit(s, &g, NULL, NULL, &r, &err))
            fail_msg("submit: %s", err.msg);
        gen_out o;
        collect(r, &o);
        hr_req_release(r);
        for (int c = 0; c < 3; c++)
            same_ids(&x, "n = 3", ic, c, &o, &alone[ic], maxt[ic]);
    }
    hr_sched_free(s);

    /* preemption: blocks of 4, a pool of 160 positions for 16 requests of
     * up to 85 positions each, so sequences are preempted mid-generation
     * (past the windows) and recomputed */
    s = mk(&x, 16, 4, 160);
    run_batch(&x, "preempted and resumed", s, alone);
    wait_idle(s, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    if (st.preemptions == 0)
        fail_msg("%s: no preemption happened with a 160-position pool", x.name);
    hr_sched_free(s);
    hr_model_free(x.m);
}

#define ARCH_TESTS(id, file)                                                                                          \
    static void test_engine_##id(void **state)                                                                        \
    {                                                                                                                 \
        (void)state;                                                                                                  \
        check_engine(file);                                                                                           \
    }                                                                                                                 \
    static void test_sched_##id(void **state)                                                                         \
    {                                                                                                                 \
        (void)state;                                                                                                  \
        check_sched(file);                                                                                            \
    }

ARCH_TESTS(qwen3moe, "qwen3moe-Q8_0")
ARCH_TESTS(gpt_oss, "gpt-oss-F32")
ARCH_TESTS(gemma3, "gemma3-F32")
ARCH_TESTS(gemma3_27b, "gemma3_27b-F32")
ARCH_TESTS(phi3_longrope, "phi3_longrope-F32")
ARCH_TESTS(llama4, "llama4-F32")
ARCH_TESTS(gpt_oss_mxfp4, "gpt-oss-MXFP4_MOE") /* MXFP4 experts */

/* quantised files and the plain phi3: the engine level only */
#define ENGINE_TEST(id, file)                                                                                         \
    static void test_engine_##id(void **state)                                                                        \
    {                                                                                                                 \
        (void)state;                                                                                                  \
        check_engine(file);                                                                                           \
    }
ENGINE_TEST(qwen3moe_q4km, "qwen3moe-Q4_K_M")
ENGINE_TEST(gemma3_q4km, "gemma3-Q4_K_M")
ENGINE_TEST(phi3, "phi3-F32")
ENGINE_TEST(phi3_longrope_q4km, "phi3_longrope-Q4_K_M")
ENGINE_TEST(llama4_q4km, "llama4-Q4_K_M")

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_qwen3moe),      cmocka_unit_test(test_sched_qwen3moe),
        cmocka_unit_test(test_engine_gpt_oss),       cmocka_unit_test(test_sched_gpt_oss),
        cmocka_unit_test(test_engine_gemma3),        cmocka_unit_test(test_sched_gemma3),
        cmocka_unit_test(test_engine_gemma3_27b),    cmocka_unit_test(test_sched_gemma3_27b),
        cmocka_unit_test(test_engine_phi3_longrope), cmocka_unit_test(test_sched_phi3_longrope),
        cmocka_unit_test(test_engine_llama4),        cmocka_unit_test(test_sched_llama4),
        cmocka_unit_test(test_engine_gpt_oss_mxfp4),  cmocka_unit_test(test_sched_gpt_oss_mxfp4),
        cmocka_unit_test(test_engine_qwen3moe_q4km),
        cmocka_unit_test(test_engine_gemma3_q4km),   cmocka_unit_test(test_engine_phi3),
        cmocka_unit_test(test_engine_phi3_longrope_q4km), cmocka_unit_test(test_engine_llama4_q4km),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
