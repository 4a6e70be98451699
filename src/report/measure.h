/* measure.h - measurements of this machine for `hearth fit --hw cpu`.
 *
 * hr_measure_cpu() probes the hardware without a model: memory read
 * bandwidth (all threads summing a 128 MiB buffer), the rate at which the
 * matmul kernels stream weights of a given type for one token (GEMV, the
 * decode case) and their arithmetic rate with 16 tokens (GEMM). fit's CPU
 * roofline is built from these, so it is a prediction, not a replay.
 *
 * hr_measure_decode() runs the engine itself: load a GGUF, prefill a few
 * tokens, time N single-token decode steps. `fit --measure` reports it
 * next to the prediction and calibrates the estimate with it. When
 * `hearth bench` lands on main this is the place to call it instead. */
#ifndef HR_REPORT_MEASURE_H
#define HR_REPORT_MEASURE_H

#include <stdint.h>

#include "base/status.h"
#include "report/fit.h"

typedef struct {
    int32_t threads;
    char isa[16];
    double mem_total_bytes, mem_available_bytes;
    double read_Bps;   /* memory read bandwidth */
    uint32_t wtype;    /* weight type the kernel probes used */
    double gemv_Bps;   /* weight bytes per second, one token */
    double gemm_flops; /* FLOP/s, 16 tokens */
} hr_cpu_probe;

/* k_hint: row length of the probe matrix; <= 0: 4096 (fit uses 4096: on the
 * development machine it tracked whole-model decode better than the hidden
 * size, whose short rows exaggerate per-row costs). */
hr_status hr_measure_cpu(int32_t threads, uint32_t wtype, int64_t k_hint, hr_cpu_probe *out, hr_err *err);

/* hw for fit from a probe. */
void hr_fit_hw_from_cpu(const hr_cpu_probe *p, hr_fit_hw *hw);

typedef struct {
    int32_t threads;
    int32_t prompt_tokens;  /* prefilled before timing */
    int32_t steps;          /* timed decode steps */
    double seconds;
    double tokens_per_s;        /* steps / seconds */
    double median_step_s, best_step_s;
    double median_tokens_per_s; /* 1 / median step */
    double best_tokens_per_s;   /* 1 / fastest step: the machine unloaded, comparable with the probes */
} hr_decode_measure;

/* Decodes `steps` tokens (after a `prompt` token prefill) with the engine,
 * timing each step. On a shared machine the fastest step is the figure to
 * compare with the probes (they also keep their best run). */
hr_status hr_measure_decode(const char *gguf_path, int32_t threads, int32_t prompt, int32_t steps,
                            hr_decode_measure *out, hr_err *err);

#endif
