/* sampler.c - penalties, truncation filters and a seeded draw.
 *
 * The RNG is xoshiro256** seeded through splitmix64: small, fast and
 * identical on every platform, so a seed reproduces a completion exactly. */
#include "sample/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t id;
    float logit;
} cand;

struct hr_sampler {
    hr_sample_params p;
    int32_t n_vocab;
    uint64_t rng[4];
    int32_t *hist;          /* ring of the last `hist_cap` tokens */
    int32_t hist_cap, hist_n, hist_head;
    int32_t *counts;        /* (n_vocab) occurrences in the window */
    float *bias;            /* (n_vocab) or NULL */
    cand *cands;            /* (n_vocab) */
    float *last;            /* (n_vocab) penalised logits of the last call */
};

hr_sample_params hr_sample_defaults(void)
{
    hr_sample_params p = {
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repetition_penalty = 1.0f,
        .penalty_last_n = 64,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = 0,
    };
    return p;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* uniform in [0, 1) with 53 bits */
static double next_unit(uint64_t *s) { return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

hr_status hr_sampler_new(const hr_sample_params *p, int32_t n_vocab, hr_sampler **out, hr_err *err)
{
    *out = NULL;
    if (n_vocab < 1)
        return hr_err_set(err, HR_ERR_INVALID, "empty vocabulary");
    if (isnan(p->temperature) || isnan(p->top_p) || isnan(p->min_p) || !(p->repetition_penalty > 0.0f) ||
        isnan(p->presence_penalty) || isnan(p->frequency_penalty) || p->penalty_last_n < 0)
        return hr_err_set(err, HR_ERR_INVALID, "invalid sampling parameters");
    hr_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    uint64_t seed = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&seed);
    s->hist_cap = p->penalty_last_n > 0 ? p->penalty_last_n : 1 << 20;
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    s->last = malloc((size_t)n_vocab * sizeof *s->last);
    s->hist = malloc((size_t)(p->penalty_last_n > 0 ? p->penalty_last_n : 256) * sizeof *s->hist);
    if (p->penalty_last_n == 0)
        s->hist_cap = 256; /* grows on demand */
    if (!s->counts || !s->cands || !s->last || !s->hist) {
        hr_sampler_free(s);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }
    *out = s;
    return HR_OK;
}

void hr_sampler_free(hr_sampler *s)
{
    if (!s)
        return;
    free(s->hist);
    free(s->counts);
    free(s->bias);
    free(s->cands);
    free(s->last);
    free(s);
}

hr_status hr_sampler_set_bias(hr_sampler *s, int32_t token, float bias, hr_err *err)
{
    if (token < 0 || token >= s->n_vocab)
        return hr_err_set(err, HR_ERR_INVALID, "logit_bias token %d out of range [0, %d)", token, s->n_vocab);
    if (!s->bias) {
        s->bias = calloc((size_t)s->n_vocab, sizeof *s->bias);
        if (!s->bias)
            return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }
    s->bias[token] = bias;
    return HR_OK;
}

void hr_sampler_accept(hr_sampler *s, int32_t token)
{
    if (token < 0 || token >= s->n_vocab)
        return;
    if (s->p.penalty_last_n == 0 && s->hist_n == s->hist_cap) {
        /* unbounded window: grow (history is never evicted) */
        int32_t *h = realloc(s->hist, (size_t)s->hist_cap * 2 * sizeof *h);
        if (h) {
            s->hist = h;
            s->hist_cap *= 2;
        }
    }
    if (s->hist_n == s->hist_cap) {
        int32_t old = s->hist[s->hist_head];
        s->counts[old]--;
        s->hist[s->hist_head] = token;
        s->hist_head = (s->hist_head + 1) % s->hist_cap;
    } else {
        s->hist[(s->hist_head + s->hist_n) % s->hist_cap] = token;
        s->hist_n++;
    }
    s->counts[token]++;
}

int32_t hr_argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static int cand_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->logit > y->logit)
        return -1;
    if (x->logit < y->logit)
        return 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void apply_penalties(hr_sampler *s, float *logits)
{
    const hr_sample_params *p = &s->p;
    bool rep = p->repetition_penalty != 1.0f;
    if (!rep && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f)
        return;
    /* visit each distinct token in the window once */
    for (int32_t i = 0; i < s->hist_n; i++) {
        int32_t t = s->hist[(s->hist_head + i) % s->hist_cap];
        int32_t c = s->counts[t];
        if (c <= 0)
            continue;
        if (rep)
            logits[t] = logits[t] > 0 ? logits[t] / p->repetition_penalty : logits[t] * p->repetition_penalty;
        logits[t] -= (float)c * p->frequency_penalty + p->presence_penalty;
        s->counts[t] = -c; /* mark visited */
    }
    for (int32_t i = 0; i < s->hist_n; i++) {
        int32_t t = s->hist[(s->hist_head + i) % s->hist_cap];
        if (s->counts[t] < 0)
            s->counts[t] = -s->counts[t];
    }
}

int32_t hr_sampler_sample(hr_sampler *s, float *logits)
{
    const hr_sample_params *p = &s->p;
    const int32_t n = s->n_vocab;
    if (s->bias)
        for (int32_t i = 0; i < n; i++)
            logits[i] += s->bias[i];
    apply_penalties(s, logits);
    memcpy(s->last, logits, (size_t)n * sizeof *logits);
    if (!(p->temperature > 0.0f))
        return hr_argmax(logits, n);

    cand *c = s->cands;
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++)
        if (logits[i] > -INFINITY)
            c[m++] = (cand){i, logits[i]};
    if (m == 0)
        return hr_argmax(logits, n);
    qsort(c, (size_t)m, sizeof *c, cand_desc);
    if (p->top_k > 0 && p->top_k < m)
        m = p->top_k;

    /* probabilities at temperature 1 for top-p / min-p, as llama.cpp */
    double sum = 0.0;
    for (int32_t i = 0; i < m; i++)
        sum += exp((double)c[i].logit - c[0].logit);
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (int32_t i = 0; i < m; i++) {
            cum += exp((double)c[i].logit - c[0].logit) / sum;
            if (cum >= p->top_p) {
                m = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        /* keep tokens whose probability is >= min_p * the top probability */
        double thresh = log(p->min_p);
        int32_t keep = 1;
        while (keep < m && (double)c[keep].logit - c[0].logit >= thresh)
            keep++;
        m = keep;
    }
    sum = 0.0;
    for (int32_t i = 0; i < m; i++)
        sum += exp(((double)c[i].logit - c[0].logit) / p->temperature);
    double r = next_unit(s->rng) * sum;
    double acc = 0.0;
    for (int32_t i = 0; i < m; i++) {
        acc += exp(((double)c[i].logit - c[0].logit) / p->temperature);
        if (r < acc)
            return c[i].id;
    }
    return c[m - 1].id;
}

/* log-sum-exp of the last call's penalised logits */
static double last_lse(const hr_sampler *s)
{
    const float *x = s->last;
    float mx = x[hr_argmax(x, s->n_vocab)];
    double sum = 0.0;
    for (int32_t i = 0; i < s->n_vocab; i++)
        sum += exp((double)x[i] - mx);
    return mx + log(sum);
}

float hr_sampler_logprob(const hr_sampler *s, int32_t token)
{
    if (token < 0 || token >= s->n_vocab)
        return -INFINITY;
    return (float)((double)s->last[token] - last_lse(s));
}

int32_t hr_sampler_top_logprobs(const hr_sampler *s, int32_t n, int32_t *ids, float *logprobs)
{
    const float *x = s->last;
    double lse = last_lse(s);
    int32_t got = 0;
    /* partial selection: n is small (<= 20) */
    for (int32_t i = 0; i < s->n_vocab; i++) {
        float v = x[i];
        if (got == n && v <= x[ids[got - 1]])
            continue;
        int32_t j = got < n ? got++ : n - 1;
        while (j > 0 && x[ids[j - 1]] < v) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = i;
    }
    for (int32_t i = 0; i < got; i++)
        logprobs[i] = (float)((double)x[ids[i]] - lse);
    return got;
}
