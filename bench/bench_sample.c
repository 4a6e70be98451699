/* bench_sample - time per sampled token on a large vocabulary.
 *
 * The logits are synthetic (no model needed) but shaped like a language
 * model's: a normal bulk (sd 2) with a few tokens well above it, so the
 * nucleus holds tens of tokens. Each configuration samples --tokens times
 * from a fresh copy of the logits (hr_sampler_sample edits them in place;
 * the copy is timed separately and subtracted) and prints microseconds per
 * token. Configurations: greedy, llama.cpp's defaults (top-k 40, top-p
 * 0.95, min-p 0.05), top-p 0.95 alone, min-p 0.05 alone, and OpenAI's
 * defaults (temperature 1, no truncation), the last at a flatter
 * distribution too.
 *
 * usage: bench_sample [--vocab N] [--tokens N] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sample/sampler.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double unit(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* logits: N(0, sd^2) bulk plus `peaks` tokens at 14 - i/2 */
static void make_logits(float *l, int32_t n, double sd, int peaks)
{
    for (int32_t i = 0; i < n; i++)
        l[i] = (float)(sd * sqrt(-2.0 * log(unit())) * cos(6.283185307179586 * unit()));
    for (int i = 0; i < peaks; i++)
        l[(int32_t)(unit() * n)] = 14.0f - 0.5f * (float)i;
}

static double run(const char *name, hr_sample_params p, const float *ref, float *work, int32_t n, int tokens,
                  double copy_us)
{
    hr_sampler *s;
    hr_err err = {0};
    if (hr_sampler_new(&p, n, &s, &err)) {
        fprintf(stderr, "bench_sample: %s\n", err.msg);
        exit(1);
    }
    long long check = 0;
    double t0 = now();
    for (int i = 0; i < tokens; i++) {
        memcpy(work, ref, (size_t)n * sizeof *work);
        check += hr_sampler_sample(s, work);
    }
    double us = (now() - t0) * 1e6 / tokens - copy_us;
    hr_sampler_free(s);
    printf("%-34s %9.1f us/token   (checksum %lld)\n", name, us, check);
    return us;
}

int main(int argc, char **argv)
{
    int32_t n = 151936;
    int tokens = 200;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--vocab") && i + 1 < argc)
            n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokens = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_sample [--vocab N] [--tokens N]\n");
            return 2;
        }
    }
    if (n < 64 || tokens < 1) {
        fprintf(stderr, "bench_sample: --vocab >= 64 and --tokens >= 1\n");
        return 2;
    }
    float *ref = malloc((size_t)n * sizeof *ref), *flat = malloc((size_t)n * sizeof *flat),
          *work = malloc((size_t)n * sizeof *work);
    if (!ref || !flat || !work) {
        fprintf(stderr, "bench_sample: out of memory\n");
        return 1;
    }
    make_logits(ref, n, 2.0, 24);
    make_logits(flat, n, 1.0, 0);

    double t0 = now();
    for (int i = 0; i < tokens; i++) {
        memcpy(work, ref, (size_t)n * sizeof *work);
        __asm__ volatile("" ::"r"(work) : "memory");
    }
    double copy_us = (now() - t0) * 1e6 / tokens;
    printf("vocabulary %d, %d tokens per configuration (logit copy %.1f us subtracted)\n", n, tokens, copy_us);

    hr_sample_params p = hr_sample_defaults();
    p.seed = 42;
    hr_sample_params g = p;
    g.temperature = 0.0f;
    run("greedy", g, ref, work, n, tokens, copy_us);
    run("defaults (T .8, k 40, p .95, mp .05)", p, ref, work, n, tokens, copy_us);
    hr_sample_params q = p;
    q.top_k = 0;
    q.min_p = 0.0f;
    run("top-p 0.95 only", q, ref, work, n, tokens, copy_us);
    q.top_p = 1.0f;
    q.min_p = 0.05f;
    run("min-p 0.05 only", q, ref, work, n, tokens, copy_us);
    hr_sample_params o = p;
    o.temperature = 1.0f;
    o.top_k = 0;
    o.top_p = 1.0f;
    o.min_p = 0.0f;
    run("OpenAI defaults (T 1, no cut)", o, ref, work, n, tokens, copy_us);
    run("OpenAI defaults, flat logits", o, flat, work, n, tokens, copy_us);
    free(ref);
    free(flat);
    free(work);
    return 0;
}
