/* sampler.h - choosing the next token from logits.
 *
 * Order of operations (as llama.cpp's default chain): logit bias,
 * repetition / presence / frequency penalties over the recent history,
 * then greedy (temperature <= 0) or top-k -> top-p -> min-p -> temperature
 * -> a draw from the seeded RNG. Same seed, same logits, same history:
 * same token, on every machine.
 *
 * No call sorts the vocabulary: top-k selects with a heap, min-p sorts only
 * the tokens above its threshold, and top-p and untruncated sampling find
 * their token by a quickselect on probability mass. A sampler touches only
 * its own object, so different samplers may run on different threads. */
#ifndef HR_SAMPLE_SAMPLER_H
#define HR_SAMPLE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"

typedef struct {
    float temperature;        /* <= 0: greedy (argmax, lowest id on ties) */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repetition_penalty; /* 1: off; > 1 divides positive logits of seen tokens */
    int32_t penalty_last_n;   /* history window for penalties (0: all) */
    float presence_penalty;   /* subtracted once from seen tokens */
    float frequency_penalty;  /* subtracted per occurrence */
    uint64_t seed;
} hr_sample_params;

/* Defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, no penalties,
 * window 64, seed 0 - like llama.cpp's CLI. */
hr_sample_params hr_sample_defaults(void);

typedef struct hr_sampler hr_sampler;

hr_status hr_sampler_new(const hr_sample_params *p, int32_t n_vocab, hr_sampler **out, hr_err *err);
void hr_sampler_free(hr_sampler *s);

/* Optional per-token additive bias (OpenAI logit_bias); -INFINITY bans. */
hr_status hr_sampler_set_bias(hr_sampler *s, int32_t token, float bias, hr_err *err);

/* Picks a token; `logits` (n_vocab) is modified in place. */
int32_t hr_sampler_sample(hr_sampler *s, float *logits);

/* Appends a token to the history the penalties look at (prompt tokens too). */
void hr_sampler_accept(hr_sampler *s, int32_t token);

/* Logprobs report the model's own distribution, as OpenAI's do: the
 * log-softmax of the logits exactly as passed to the last
 * hr_sampler_sample call, before logit bias, penalties, temperature and
 * truncation, so they do not depend on the sampling parameters. */

/* Fills up to n entries of ids/logprobs with the most likely tokens of the
 * last call (highest first, lowest id on ties); returns how many. */
int32_t hr_sampler_top_logprobs(const hr_sampler *s, int32_t n, int32_t *ids, float *logprobs);

/* Log-probability of `token` under the last call's logits. */
float hr_sampler_logprob(const hr_sampler *s, int32_t token);

/* argmax with the lowest id on ties. */
int32_t hr_argmax(const float *x, int32_t n);

#endif
