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
    float *last;            /* (n_vocab) logits of the last call as given, for logprobs */
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
    /* The largest value first, in 8 independent lanes (a running index
     * would make every step wait for the last), then its first position.
     * NaNs never win, as with a plain `>` scan; a NaN at 0 gives 0. */
    float m[8];
    for (int l = 0; l < 8; l++)
        m[l] = x[0];
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
    for (; i < n; i++)
        m[0] = x[i] > m[0] ? x[i] : m[0];
    float mx = m[0];
    for (int l = 1; l < 8; l++)
        mx = m[l] > mx ? m[l] : mx;
    for (i = 0; i < n; i++)
        if (x[i] == mx)
            return i;
    return 0;
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

/* a comes before b in the candidate order: larger logit first, lower id on
 * ties. A total order (ids are distinct), so every selection below picks
 * the same set a full sort would. */
static inline bool before(cand a, cand b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

static void swap_cand(cand *a, cand *b)
{
    cand t = *a;
    *a = *b;
    *b = t;
}

/* c[0..return) := the first k finite candidates of l in order, sorted. A
 * heap of the best k so far with the worst at the root: O(n log k), and
 * most tokens cost one comparison against the root. */
static int32_t select_top_k(cand *c, const float *l, int32_t n, int32_t k)
{
    int32_t h = 0;
    for (int32_t i = 0; i < n; i++) {
        if (!(l[i] > -INFINITY))
            continue;
        if (h == k) {
            /* ties with the root lose: every id in the heap is lower */
            if (!(l[i] > c[0].logit))
                continue;
            c[0] = (cand){i, l[i]};
            for (int32_t j = 0;;) {
                int32_t a = 2 * j + 1, b = a + 1, w = j;
                if (a < h && before(c[w], c[a]))
                    w = a;
                if (b < h && before(c[w], c[b]))
                    w = b;
                if (w == j)
                    break;
                swap_cand(&c[j], &c[w]);
                j = w;
            }
        } else {
            int32_t j = h++;
            c[j] = (cand){i, l[i]};
            while (j > 0 && before(c[(j - 1) / 2], c[j])) {
                swap_cand(&c[(j - 1) / 2], &c[j]);
                j = (j - 1) / 2;
            }
        }
    }
    qsort(c, (size_t)h, sizeof *c, cand_desc);
    return h;
}

static inline double weight(cand x, float mx, float temp) { return exp(((double)x.logit - mx) / temp); }

/* The length of the shortest prefix, in candidate order, of c[0..m) whose
 * weight reaches `target` (>= target, or > target when `strict`), by a
 * quickselect on mass: c is reordered so that c[0..return) are that
 * prefix and c[return - 1] is the candidate where it is reached. Expected
 * O(m); only the last few candidates are sorted. Sums are taken in a
 * different order than a full sort's running sum, so a target within
 * rounding (~1e-16 relative) of a boundary can land one candidate over. */
static int32_t mass_prefix(cand *c, int32_t m, float mx, float temp, double target, bool strict)
{
    int32_t lo = 0, hi = m;
    double below = 0.0; /* weight of c[0..lo), all before c[lo..hi) */
#define REACHED(x) (strict ? (x) > target : (x) >= target)
    while (hi - lo > 16) {
        int32_t mid = lo + (hi - lo) / 2;
        /* median of three as the pivot, moved to hi - 1 */
        if (before(c[mid], c[lo]))
            swap_cand(&c[mid], &c[lo]);
        if (before(c[hi - 1], c[lo]))
            swap_cand(&c[hi - 1], &c[lo]);
        if (before(c[mid], c[hi - 1]))
            swap_cand(&c[mid], &c[hi - 1]);
        cand piv = c[hi - 1];
        int32_t a = lo;
        double ma = 0.0;
        for (int32_t i = lo; i < hi - 1; i++)
            if (before(c[i], piv)) {
                ma += weight(c[i], mx, temp);
                swap_cand(&c[a++], &c[i]);
            }
        swap_cand(&c[a], &c[hi - 1]); /* [lo, a) before the pivot at a, (a, hi) after */
        if (REACHED(below + ma)) {
            hi = a;
        } else if (REACHED(below + ma + weight(piv, mx, temp))) {
            return a + 1;
        } else {
            below += ma + weight(piv, mx, temp);
            lo = a + 1;
        }
    }
    qsort(c + lo, (size_t)(hi - lo), sizeof *c, cand_desc);
    for (int32_t i = lo; i < hi; i++) {
        below += weight(c[i], mx, temp);
        if (REACHED(below))
            return i + 1;
    }
#undef REACHED
    return hi > 0 ? hi : 1;
}

int32_t hr_sampler_sample(hr_sampler *s, float *logits)
{
    const hr_sample_params *p = &s->p;
    const int32_t n = s->n_vocab;
    /* logprobs report the model's own distribution (see sampler.h) */
    memcpy(s->last, logits, (size_t)n * sizeof *logits);
    if (s->bias)
        for (int32_t i = 0; i < n; i++)
            logits[i] += s->bias[i];
    apply_penalties(s, logits);
    int32_t best = hr_argmax(logits, n);
    if (!(p->temperature > 0.0f) || !(logits[best] > -INFINITY))
        return best;
    const float mx = logits[best];

    /* Candidates, without sorting the vocabulary: c[0..m) sorted in
     * candidate order when `sorted`, else all finite logits in id order. */
    cand *c = s->cands;
    int32_t m = 0;
    bool sorted = true;
    double total = 0.0; /* weight at temperature 1 of every candidate, for top-p without top-k */
    if (p->top_k > 0 && p->top_k < n) {
        m = select_top_k(c, logits, n, p->top_k);
    } else if (p->min_p > 0.0f) {
        /* min-p bounds the set: tokens with p >= min_p * p_max, i.e. logit - max >= log(min_p) */
        double thresh = log(p->min_p);
        for (int32_t i = 0; i < n; i++) {
            if (!(logits[i] > -INFINITY))
                continue;
            if (p->top_p < 1.0f)
                total += exp((double)logits[i] - mx);
            if ((double)logits[i] - mx >= thresh)
                c[m++] = (cand){i, logits[i]};
        }
        qsort(c, (size_t)m, sizeof *c, cand_desc);
    } else {
        for (int32_t i = 0; i < n; i++)
            if (logits[i] > -INFINITY)
                c[m++] = (cand){i, logits[i]};
        sorted = false;
    }

    /* top-p at temperature 1 over what top-k left, as llama.cpp */
    if (p->top_p < 1.0f) {
        if (!(p->top_p > 0.0f)) {
            c[0] = (cand){best, mx};
            m = 1;
            sorted = true;
        } else if (sorted) {
            if (p->top_k > 0 && p->top_k < n)
                for (int32_t i = 0; i < m; i++)
                    total += exp((double)c[i].logit - c[0].logit);
            double cum = 0.0;
            for (int32_t i = 0; i < m; i++) {
                cum += exp((double)c[i].logit - c[0].logit) / total;
                if (cum >= p->top_p) {
                    m = i + 1;
                    break;
                }
            }
        } else {
            for (int32_t i = 0; i < m; i++)
                total += weight(c[i], mx, 1.0f);
            m = mass_prefix(c, m, mx, 1.0f, (double)p->top_p * total, false);
        }
    }
    if (p->min_p > 0.0f && sorted) {
        /* keep tokens whose probability is >= min_p * the top probability */
        double thresh = log(p->min_p);
        int32_t keep = 1;
        while (keep < m && (double)c[keep].logit - c[0].logit >= thresh)
            keep++;
        m = keep;
    }

    double sum = 0.0;
    for (int32_t i = 0; i < m; i++)
        sum += exp(((double)c[i].logit - mx) / p->temperature);
    double r = next_unit(s->rng) * sum;
    if (!sorted)
        return c[mass_prefix(c, m, mx, p->temperature, r, true) - 1].id;
    double acc = 0.0;
    for (int32_t i = 0; i < m; i++) {
        acc += exp(((double)c[i].logit - mx) / p->temperature);
        if (r < acc)
            return c[i].id;
    }
    return c[m - 1].id;
}

/* log-sum-exp of the last call's logits */
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
