/* Sampling: greedy picks the lowest id on ties, a seed reproduces a draw
 * sequence, filters restrict the candidates, penalties move logits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "sample/sampler.h"

#define NV 64

static void fill(float *l)
{
    for (int i = 0; i < NV; i++)
        l[i] = (float)((i * 37) % NV) / 8.0f; /* distinct values, max at i with (i*37)%64 == 63 */
}

static hr_sampler *mk(hr_sample_params p)
{
    hr_sampler *s;
    hr_err err = {0};
    assert_int_equal(hr_sampler_new(&p, NV, &s, &err), HR_OK);
    return s;
}

static void test_greedy(void **state)
{
    (void)state;
    hr_sample_params p = hr_sample_defaults();
    p.temperature = 0;
    hr_sampler *s = mk(p);
    float l[NV] = {0};
    l[5] = 2.0f;
    l[9] = 2.0f;
    assert_int_equal(hr_sampler_sample(s, l), 5);
    float m[NV];
    fill(m);
    int32_t want = hr_argmax(m, NV);
    assert_int_equal(hr_sampler_sample(s, m), want);
    assert_int_equal((want * 37) % NV, 63);
    hr_sampler_free(s);

    /* hr_argmax: every length and position (lanes and tail), first of ties, NaN never wins */
    float x[29];
    for (int n = 1; n <= 29; n++)
        for (int at = 0; at < n; at++) {
            for (int i = 0; i < n; i++)
                x[i] = (float)((i * 7) % 5) - 10.0f;
            x[at] = 1.0f;
            if (at + 1 < n)
                x[n - 1] = 1.0f; /* a later tie loses */
            if (at > 1)
                x[at - 1] = NAN; /* (at x[0] it would win: see below) */
            assert_int_equal(hr_argmax(x, n), at);
        }
    for (int i = 0; i < 29; i++)
        x[i] = -INFINITY;
    assert_int_equal(hr_argmax(x, 29), 0);
    x[0] = NAN;
    x[20] = 5.0f;
    assert_int_equal(hr_argmax(x, 29), 0); /* as a plain `>` scan from x[0] */
}

static void test_seed_reproducible(void **state)
{
    (void)state;
    hr_sample_params p = hr_sample_defaults();
    p.temperature = 1.5f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 1234;
    int32_t a[200], b[200];
    for (int run = 0; run < 2; run++) {
        hr_sampler *s = mk(p);
        for (int i = 0; i < 200; i++) {
            float l[NV];
            fill(l);
            (run ? b : a)[i] = hr_sampler_sample(s, l);
        }
        hr_sampler_free(s);
    }
    assert_memory_equal(a, b, sizeof a);
    int distinct = 0;
    for (int i = 1; i < 200; i++)
        distinct += a[i] != a[0];
    assert_true(distinct > 10); /* it really samples */
    p.seed = 99;
    hr_sampler *s = mk(p);
    int same = 0;
    for (int i = 0; i < 200; i++) {
        float l[NV];
        fill(l);
        same += hr_sampler_sample(s, l) == a[i];
    }
    assert_true(same < 200);
    hr_sampler_free(s);
}

static void test_filters(void **state)
{
    (void)state;
    hr_sample_params p = hr_sample_defaults();
    p.temperature = 1.0f;
    p.top_k = 3;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    hr_sampler *s = mk(p);
    float ref[NV];
    fill(ref);
    for (int i = 0; i < 300; i++) {
        float l[NV];
        fill(l);
        int32_t t = hr_sampler_sample(s, l);
        assert_true(ref[t] >= 61.0f / 8.0f); /* one of the three largest */
    }
    hr_sampler_free(s);

    /* min_p 0.5 keeps only tokens within log(2) of the max: values 63/8 and 62/8, 61/8, 60/8 are within 0.693 */
    p.top_k = 0;
    p.min_p = 0.5f;
    s = mk(p);
    for (int i = 0; i < 300; i++) {
        float l[NV];
        fill(l);
        int32_t t = hr_sampler_sample(s, l);
        assert_true(ref[t] >= 63.0f / 8.0f - 0.6932f);
    }
    hr_sampler_free(s);

    /* top_p tiny: always the best */
    p.min_p = 0.0f;
    p.top_p = 0.01f;
    s = mk(p);
    for (int i = 0; i < 50; i++) {
        float l[NV];
        fill(l);
        assert_int_equal(hr_sampler_sample(s, l), hr_argmax(ref, NV));
    }
    hr_sampler_free(s);
}

static void test_penalties_and_bias(void **state)
{
    (void)state;
    hr_sample_params p = hr_sample_defaults();
    p.temperature = 0;
    p.repetition_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    hr_sampler *s = mk(p);
    hr_sampler_accept(s, 3);
    hr_sampler_accept(s, 3);
    hr_sampler_accept(s, 4);
    float l[NV] = {0};
    l[3] = 4.0f;
    l[4] = -1.0f;
    l[7] = 1.5f;
    /* token 3: 4/2 - 0.5 - 2*0.25 = 1.0 < 1.5 */
    assert_int_equal(hr_sampler_sample(s, l), 7);
    assert_true(fabsf(l[3] - 1.0f) < 1e-6f);
    assert_true(fabsf(l[4] - (-2.0f - 0.5f - 0.25f)) < 1e-6f);
    hr_err err = {0};
    assert_int_equal(hr_sampler_set_bias(s, 7, -INFINITY, &err), HR_OK);
    assert_int_equal(hr_sampler_set_bias(s, NV, 1.0f, &err), HR_ERR_INVALID);
    float m[NV] = {0};
    m[7] = 10.0f;
    m[8] = 1.0f;
    assert_int_equal(hr_sampler_sample(s, m), 8);
    /* logprobs are the model's distribution: the banned token 7 still
     * leads, and 8 gets log-softmax of the logits as passed (no bias) */
    int32_t ids[3];
    float lp[3];
    assert_int_equal(hr_sampler_top_logprobs(s, 3, ids, lp), 3);
    assert_int_equal(ids[0], 7);
    assert_int_equal(ids[1], 8);
    assert_int_equal(ids[2], 0); /* the zeros tie: lowest id */
    double lse = 10.0 + log(1.0 + exp(1.0 - 10.0) + (NV - 2) * exp(-10.0));
    assert_true(fabs(lp[0] - (10.0 - lse)) < 1e-6);
    assert_true(fabs(lp[1] - (1.0 - lse)) < 1e-6);
    assert_true(fabs(hr_sampler_logprob(s, 8) - (1.0 - lse)) < 1e-6);
    hr_sampler_free(s);

    /* invalid parameters are rejected */
    p.repetition_penalty = 0.0f;
    hr_sampler *bad = NULL;
    assert_int_equal(hr_sampler_new(&p, NV, &bad, &err), HR_ERR_INVALID);
    assert_null(bad);
}

/* ---- distributions: chi-square goodness of fit against the exact law ----
 *
 * Each case draws N seeded samples from known logits and compares the counts
 * with the distribution the parameters define, computed here from the
 * definitions (softmax at temperature T over the surviving set). Tokens
 * outside the set must never be drawn. With a fixed seed the statistic is
 * a fixed number, so the test is deterministic; the bar is an upper-tail
 * probability of 1e-6 (a correct sampler fails one seed in a million),
 * while each wrong law below is rejected by many orders of magnitude more:
 * the temperature case checks that itself for "ignores the temperature"
 * and "always argmax". */

#define BIG 200 /* > 16, so the quickselect paths partition, not just sort */

/* Regularised upper incomplete gamma Q(a, x): series for x < a + 1, else a
 * continued fraction (modified Lentz). */
static double gamma_q(double a, double x)
{
    if (x <= 0.0)
        return 1.0;
    double lg = lgamma(a);
    if (x < a + 1.0) {
        double term = 1.0 / a, sum = term;
        for (int n = 1; n < 10000 && fabs(term) > fabs(sum) * 1e-16; n++) {
            term *= x / (a + n);
            sum += term;
        }
        return 1.0 - sum * exp(-x + a * log(x) - lg);
    }
    double b = x + 1.0 - a, c = 1e300, d = 1.0 / b, h = d;
    for (int i = 1; i < 10000; i++) {
        double an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if (fabs(d) < 1e-300)
            d = 1e-300;
        c = b + an / c;
        if (fabs(c) < 1e-300)
            c = 1e-300;
        d = 1.0 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < 1e-16)
            break;
    }
    return exp(-x + a * log(x) - lg) * h;
}

/* P(chi2_dof >= x) */
static double chi2_tail(double x, int dof) { return gamma_q(0.5 * dof, 0.5 * x); }

static void test_chi2_tail(void **state)
{
    (void)state;
    /* table quantiles (any statistics handbook) */
    assert_true(fabs(chi2_tail(3.841459, 1) - 0.05) < 1e-6);
    assert_true(fabs(chi2_tail(16.918978, 9) - 0.05) < 1e-6);
    assert_true(fabs(chi2_tail(13.276704, 4) - 0.01) < 1e-6);
    assert_true(fabs(chi2_tail(45.314746, 20) - 0.001) < 1e-7);
    assert_true(fabs(chi2_tail(1.0, 2) - exp(-0.5)) < 1e-12); /* dof 2: exp(-x/2) */
    assert_true(fabs(chi2_tail(250.0, 2) - exp(-125.0)) < 1e-60);
}

/* p-value of counts[0..n) against probabilities q (sum 1) for `draws`
 * samples. A token with q == 0 that was drawn gives 0. Cells expecting
 * fewer than 5 are pooled, so the chi-square approximation holds. */
static double gof(const int *counts, const double *q, int n, int draws)
{
    double stat = 0.0, pool_e = 0.0, pool_o = 0.0;
    int cells = 0;
    for (int i = 0; i < n; i++) {
        if (q[i] == 0.0) {
            if (counts[i])
                return 0.0;
            continue;
        }
        double e = q[i] * draws;
        if (e < 5.0) {
            pool_e += e;
            pool_o += counts[i];
            continue;
        }
        stat += (counts[i] - e) * (counts[i] - e) / e;
        cells++;
    }
    if (pool_e > 0.0) {
        stat += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        cells++;
    }
    if (cells < 2) /* one cell: the support is all there is to test */
        return 1.0;
    return chi2_tail(stat, cells - 1);
}

typedef struct {
    int n;
    const float *logits;
    const int32_t *hist; /* tokens accepted before sampling */
    int n_hist;
    const int32_t *bias_ids;
    const float *bias;
    int n_bias;
} dist_case;

static void draw(hr_sample_params p, const dist_case *dc, int draws, int *counts)
{
    hr_sampler *s;
    hr_err err = {0};
    assert_int_equal(hr_sampler_new(&p, dc->n, &s, &err), HR_OK);
    for (int i = 0; i < dc->n_hist; i++)
        hr_sampler_accept(s, dc->hist[i]);
    for (int i = 0; i < dc->n_bias; i++)
        assert_int_equal(hr_sampler_set_bias(s, dc->bias_ids[i], dc->bias[i], &err), HR_OK);
    memset(counts, 0, (size_t)dc->n * sizeof *counts);
    float l[BIG];
    for (int d = 0; d < draws; d++) {
        memcpy(l, dc->logits, (size_t)dc->n * sizeof *l);
        int32_t t = hr_sampler_sample(s, l);
        assert_true(t >= 0 && t < dc->n);
        counts[t]++;
    }
    hr_sampler_free(s);
}

/* The law of one draw, from the definitions: bias, then penalties over the
 * last penalty_last_n accepted tokens, then top-k (the k largest logits,
 * ties to the lower id), top-p (the shortest run of most likely tokens,
 * at temperature 1 renormalised over what top-k left, whose mass reaches
 * top_p), min-p (p >= min_p * p_max), and softmax at the temperature over
 * what is left. */
static void law(hr_sample_params p, const dist_case *dc, double *q)
{
    int n = dc->n;
    double l[BIG];
    for (int i = 0; i < n; i++)
        l[i] = dc->logits[i];
    for (int i = 0; i < dc->n_bias; i++)
        l[dc->bias_ids[i]] += dc->bias[i];
    int cnt[BIG] = {0};
    int from = p.penalty_last_n > 0 && dc->n_hist > p.penalty_last_n ? dc->n_hist - p.penalty_last_n : 0;
    for (int i = from; i < dc->n_hist; i++)
        cnt[dc->hist[i]]++;
    for (int i = 0; i < n; i++) {
        if (!cnt[i])
            continue;
        double rp = p.repetition_penalty;
        l[i] = l[i] > 0 ? l[i] / rp : l[i] * rp;
        l[i] -= cnt[i] * (double)p.frequency_penalty + p.presence_penalty;
    }
    /* rank[i]: how many tokens come before i (larger logit, or equal and lower id) */
    int rank[BIG];
    for (int i = 0; i < n; i++) {
        rank[i] = 0;
        for (int j = 0; j < n; j++)
            rank[i] += l[j] > l[i] || (l[j] == l[i] && j < i);
    }
    bool in[BIG];
    double mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        in[i] = l[i] > -INFINITY && (p.top_k <= 0 || rank[i] < p.top_k);
        if (in[i] && l[i] > mx)
            mx = l[i];
    }
    if (p.top_p < 1.0f) {
        double z = 0.0;
        for (int i = 0; i < n; i++)
            z += in[i] ? exp(l[i] - mx) : 0.0;
        bool keep[BIG];
        for (int i = 0; i < n; i++) {
            /* kept iff the tokens before it do not reach top_p yet */
            double m_before = 0.0;
            for (int j = 0; j < n; j++)
                if (in[j] && rank[j] < rank[i])
                    m_before += exp(l[j] - mx) / z;
            keep[i] = in[i] && (m_before < p.top_p || rank[i] == 0);
        }
        memcpy(in, keep, sizeof in);
    }
    if (p.min_p > 0.0f)
        for (int i = 0; i < n; i++)
            in[i] = in[i] && exp(l[i] - mx) >= p.min_p;
    double z = 0.0;
    for (int i = 0; i < n; i++)
        z += in[i] ? exp((l[i] - mx) / p.temperature) : 0.0;
    for (int i = 0; i < n; i++)
        q[i] = in[i] ? exp((l[i] - mx) / p.temperature) / z : 0.0;
}

static int support(const double *q, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++)
        k += q[i] > 0.0;
    return k;
}

/* Draws and tests one case; returns the p-value (asserted >= 1e-6). */
static double check_law(const char *what, hr_sample_params p, const dist_case *dc, int want_support)
{
    int counts[BIG];
    double q[BIG];
    const int draws = 40000;
    law(p, dc, q);
    if (want_support > 0)
        assert_int_equal(support(q, dc->n), want_support); /* the case tests what it says */
    draw(p, dc, draws, counts);
    double pv = gof(counts, q, dc->n, draws);
    if (pv < 1e-6) {
        print_error("%s: chi-square p-value %.3g < 1e-6\n", what, pv);
        for (int i = 0; i < dc->n; i++)
            if (counts[i] || q[i] > 0)
                print_error("  token %d: drawn %d, expected %.1f\n", i, counts[i], q[i] * draws);
    }
    assert_true(pv >= 1e-6);
    return pv;
}

/* 12 distinct logits, not in id order */
static const float k_small[12] = {0.3f, 2.0f, -0.4f, 1.1f, 1.6f, -1.5f, 0.8f, 0.0f, 1.3f, -0.9f, 0.5f, -2.2f};

static void big_logits(float *l)
{
    for (int i = 0; i < BIG; i++)
        l[i] = -3.0f + 6.0f * (float)((i * 73) % BIG) / BIG;
}

static hr_sample_params plain(float temp, uint64_t seed)
{
    hr_sample_params p = hr_sample_defaults();
    p.temperature = temp;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

static void test_dist_temperature(void **state)
{
    (void)state;
    dist_case dc = {.n = 12, .logits = k_small};
    float big[BIG];
    big_logits(big);
    dist_case db = {.n = BIG, .logits = big};
    const float temps[] = {1.0f, 0.5f, 1.7f};
    for (int t = 0; t < 3; t++) {
        check_law("temperature, 12 tokens", plain(temps[t], 11 + t), &dc, 12);
        check_law("temperature, 200 tokens", plain(temps[t], 21 + t), &db, BIG);
    }

    /* the test has power: the counts at T = 0.5 reject T = 1 and argmax */
    int counts[12];
    double q[12];
    draw(plain(0.5f, 7), &dc, 40000, counts);
    law(plain(1.0f, 7), &dc, q);
    assert_true(gof(counts, q, 12, 40000) < 1e-6);
    for (int i = 0; i < 12; i++)
        q[i] = i == 1; /* argmax */
    assert_true(gof(counts, q, 12, 40000) < 1e-6);
    law(plain(0.5f, 7), &dc, q);
    assert_true(gof(counts, q, 12, 40000) >= 1e-6);
}

static void test_dist_top_k(void **state)
{
    (void)state;
    dist_case dc = {.n = 12, .logits = k_small};
    float big[BIG];
    big_logits(big);
    dist_case db = {.n = BIG, .logits = big};
    const int ks[] = {1, 2, 5, 11, 12, 40};
    for (int i = 0; i < 6; i++) {
        hr_sample_params p = plain(0.9f, 30 + i);
        p.top_k = ks[i];
        check_law("top-k, 12 tokens", p, &dc, ks[i] < 12 ? ks[i] : 12);
        p.temperature = 1.3f;
        check_law("top-k, 200 tokens", p, &db, ks[i]);
    }
}

static void test_dist_top_p(void **state)
{
    (void)state;
    dist_case dc = {.n = 12, .logits = k_small};
    float big[BIG];
    big_logits(big);
    dist_case db = {.n = BIG, .logits = big};
    /* masses at temperature 1 of the 1, 2, 3 most likely of k_small */
    double z = 0.0;
    for (int i = 0; i < 12; i++)
        z += exp(k_small[i]);
    double c1 = exp(2.0) / z, c2 = c1 + exp(1.6) / z, c3 = c2 + exp(1.3) / z;
    /* just below a cumulative mass keeps that many, just above one more;
     * reaching it exactly stops there (checked at the boundary's float) */
    const struct {
        float p;
        int keep;
    } cs[] = {
        {0.01f, 1},
        {(float)(c1 - 1e-4), 1},
        {(float)(c1 + 1e-4), 2},
        {(float)(c2 - 1e-4), 2},
        {(float)(c2 + 1e-4), 3},
        {(float)(c3 + 1e-4), 4},
        {0.5f, 0},
        {0.9f, 0},
        {0.999f, 0},
        {0.0f, 1},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        for (int k = 0; k <= 1; k++) { /* without top-k (quickselect), and behind top-k 12 (sorted walk) */
            hr_sample_params p = plain(0.8f, 40 + 2 * i + k);
            p.top_p = cs[i].p;
            p.top_k = k ? 12 : 0;
            check_law("top-p, 12 tokens", p, &dc, cs[i].keep);
        }
        hr_sample_params p = plain(1.2f, 60 + i);
        p.top_p = cs[i].p;
        check_law("top-p, 200 tokens", p, &db, 0);
        p.top_k = 50; /* renormalised over the top 50 first */
        check_law("top-k 50 then top-p, 200 tokens", p, &db, 0);
    }
}

static void test_dist_min_p(void **state)
{
    (void)state;
    dist_case dc = {.n = 12, .logits = k_small};
    float big[BIG];
    big_logits(big);
    dist_case db = {.n = BIG, .logits = big};
    /* min_p 0.5: logits >= 2 - log 2 = 1.307: 2.0, 1.6 (not 1.3); 0.2: >= 0.391: six */
    const struct {
        float mp;
        int keep;
    } cs[] = {{0.5f, 2}, {0.2f, 6}, {0.9f, 1}, {0.01f, 12}};
    for (int i = 0; i < 4; i++) {
        hr_sample_params p = plain(1.1f, 80 + i);
        p.min_p = cs[i].mp;
        check_law("min-p, 12 tokens", p, &dc, cs[i].keep);
        p.top_p = 0.7f; /* with top-p first: the shorter of the two runs */
        check_law("top-p then min-p, 12 tokens", p, &dc, 0);
        p.top_p = 1.0f;
        check_law("min-p, 200 tokens", p, &db, 0);
    }
    /* the whole chain: top-k 6 -> top-p 0.8 -> min-p 0.1 -> T 0.7 */
    hr_sample_params p = plain(0.7f, 90);
    p.top_k = 6;
    p.top_p = 0.8f;
    p.min_p = 0.1f;
    check_law("top-k, top-p, min-p", p, &dc, 0);
    check_law("top-k, top-p, min-p, 200 tokens", p, &db, 0);
}

static void test_dist_penalties_bias(void **state)
{
    (void)state;
    dist_case dc = {.n = 12, .logits = k_small};
    /* window 4 keeps [4 4 4 6]: 1 and 3 fell out; 1 would dominate otherwise */
    static const int32_t hist[] = {1, 1, 3, 4, 4, 4, 6};
    dc.hist = hist;
    dc.n_hist = 7;
    hr_sample_params p = plain(1.0f, 100);
    p.penalty_last_n = 4;
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.3f;
    check_law("penalties, window 4", p, &dc, 12);
    p.penalty_last_n = 0; /* whole history */
    p.seed = 101;
    check_law("penalties, whole history", p, &dc, 12);
    /* a negative logit is multiplied by the repetition penalty */
    static const int32_t hist2[] = {2, 5, 5};
    dc.hist = hist2;
    dc.n_hist = 3;
    p.repetition_penalty = 2.0f;
    p.presence_penalty = -0.5f;
    p.frequency_penalty = 0.0f;
    p.seed = 102;
    check_law("repetition penalty on negative logits", p, &dc, 12);

    /* logit bias: ban the best, lift a weak one, lower another */
    static const int32_t bid[] = {1, 9, 4};
    static const float bv[] = {-INFINITY, 2.5f, -0.7f};
    dist_case db = {.n = 12, .logits = k_small, .bias_ids = bid, .bias = bv, .n_bias = 3};
    check_law("logit bias", plain(0.9f, 103), &db, 11);
    hr_sample_params q = plain(0.9f, 104);
    q.top_k = 3; /* top-k sees the biased logits: 9 is now second */
    check_law("logit bias then top-k", q, &db, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_penalties_and_bias),
        cmocka_unit_test(test_chi2_tail),
        cmocka_unit_test(test_dist_temperature),
        cmocka_unit_test(test_dist_top_k),
        cmocka_unit_test(test_dist_top_p),
        cmocka_unit_test(test_dist_min_p),
        cmocka_unit_test(test_dist_penalties_bias),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
