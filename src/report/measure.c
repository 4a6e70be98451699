/* measure.c - hardware probes and an engine decode timing (see measure.h). */
#include "report/measure.h"
#include "base/clock.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu/cpu.h"
#include "cpu/matmul.h"
#include "cpu/pool.h"
#include "engine/engine.h"
#include "engine/kvcache.h"
#include "model/model.h"
#include "quant/quant.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void meminfo(double *total, double *avail)
{
    *total = *avail = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            *total = (double)kb * 1024.0;
        else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            *avail = (double)kb * 1024.0;
    }
    fclose(f);
}

typedef struct {
    const uint64_t *buf;
    size_t n;
    uint64_t sums[64];
} read_ctx;

static void read_part(void *p, int ith, int nth)
{
    read_ctx *c = p;
    size_t lo = c->n * (size_t)ith / (size_t)nth, hi = c->n * (size_t)(ith + 1) / (size_t)nth;
    uint64_t a = 0, b = 0, d = 0, e = 0;
    size_t i = lo;
    for (; i + 4 <= hi; i += 4) {
        a += c->buf[i];
        b += c->buf[i + 1];
        d += c->buf[i + 2];
        e += c->buf[i + 3];
    }
    for (; i < hi; i++)
        a += c->buf[i];
    c->sums[ith & 63] = a + b + d + e;
}

hr_status hr_measure_cpu(int32_t threads, uint32_t wtype, int64_t k_hint, hr_cpu_probe *out, hr_err *err)
{
    memset(out, 0, sizeof *out);
    if (threads < 1)
        threads = 1;
    out->threads = threads;
    snprintf(out->isa, sizeof out->isa, "%s", hr_cpu_isa_name());
    meminfo(&out->mem_total_bytes, &out->mem_available_bytes);
    if (out->mem_total_bytes <= 0)
        return hr_err_set(err, HR_ERR_IO, "cannot read /proc/meminfo");
    const hr_type_traits *tt = hr_type_get(wtype);
    if (!tt || !tt->supported)
        wtype = HR_TYPE_Q8_0;
    out->wtype = wtype;

    hr_pool *pool = threads > 1 ? hr_pool_new(threads) : NULL;
    if (threads > 1 && !pool)
        return hr_err_set(err, HR_ERR_NOMEM, "cannot start %d threads", threads);

    /* memory read bandwidth: best of 5 passes over 512 MiB (past any L3) */
    size_t n = (512u << 20) / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof *buf);
    if (!buf) {
        hr_pool_free(pool);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory for the bandwidth probe");
    }
    for (size_t i = 0; i < n; i++)
        buf[i] = i;
    read_ctx rc = {.buf = buf, .n = n};
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = hr_now_s();
        hr_pool_run(pool, read_part, &rc);
        double dt = hr_now_s() - t0;
        if (dt < best)
            best = dt;
    }
    out->read_Bps = (double)(n * sizeof *buf) / best;
    free(buf);

    /* kernel probes: a weight matrix of ~512 MiB (past the caches; server
     * L3s reach hundreds of MiB) whose rows are as long as the model's
     * (short rows cost more per byte) */
    int64_t bs = hr_type_get(wtype)->block_size;
    int64_t K = k_hint > 0 ? k_hint : 4096;
    K = (K + bs - 1) / bs * bs;
    if (K > 65536)
        K = 65536;
    size_t row = hr_row_size(wtype, K);
    int64_t N = (int64_t)((512u << 20) / row);
    const int T = 16;
    void *w = malloc(row * (size_t)N);
    float *x = malloc(sizeof(float) * (size_t)K * T);
    float *y = malloc(sizeof(float) * (size_t)N * T);
    void *scratch = malloc(hr_matmul_scratch_bytes(wtype, K, T) + 64);
    float *src = malloc(sizeof(float) * (size_t)K);
    hr_status st = HR_OK;
    if (!w || !x || !y || !scratch || !src) {
        st = hr_err_set(err, HR_ERR_NOMEM, "out of memory for the kernel probe");
        goto done;
    }
    uint32_t s = 12345;
    for (int64_t i = 0; i < K; i++) {
        s = s * 1664525u + 1013904223u;
        src[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.1f;
    }
    for (int64_t i = 0; i < K * T; i++)
        x[i] = src[i % K];
    /* one quantised row, repeated (the prefetchers stream every byte anyway) */
    if (!hr_quantize_row(wtype, src, w, K)) {
        st = hr_err_set(err, HR_ERR_UNSUPPORTED, "cannot build a %s probe matrix", hr_type_name(wtype));
        goto done;
    }
    for (int64_t r = 1; r < N; r++)
        memcpy((char *)w + (size_t)r * row, w, row);
    best = 1e30;
    hr_matmul(pool, w, wtype, row, K, N, x, 1, y, scratch); /* warm-up */
    for (int rep = 0; rep < 8; rep++) {
        double t0 = hr_now_s();
        hr_matmul(pool, w, wtype, row, K, N, x, 1, y, scratch);
        double dt = hr_now_s() - t0;
        if (dt < best)
            best = dt;
    }
    out->gemv_Bps = (double)row * (double)N / best;
    best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = hr_now_s();
        hr_matmul(pool, w, wtype, row, K, N, x, T, y, scratch);
        double dt = hr_now_s() - t0;
        if (dt < best)
            best = dt;
    }
    out->gemm_flops = 2.0 * (double)K * (double)N * T / best;
done:
    free(w);
    free(x);
    free(y);
    free(scratch);
    free(src);
    hr_pool_free(pool);
    return st;
}

void hr_fit_hw_from_cpu(const hr_cpu_probe *p, hr_fit_hw *hw)
{
    memset(hw, 0, sizeof *hw);
    snprintf(hw->name, sizeof hw->name, "cpu");
    snprintf(hw->display, sizeof hw->display, "this machine (%d thread%s, %s)", p->threads, p->threads == 1 ? "" : "s",
             p->isa);
    hw->cpu = true;
    hw->devices = 1;
    hw->memory_bytes = p->mem_total_bytes;
    hw->usable_bytes = p->mem_available_bytes > 0 ? p->mem_available_bytes : p->mem_total_bytes * 0.8;
    hw->bandwidth_Bps = p->read_Bps;
    hw->gemv_Bps = p->gemv_Bps;
    hw->flops = p->gemm_flops;
    snprintf(hw->basis, sizeof hw->basis,
             "this machine, measured now: %.1f GB RAM (%.1f GB available), memory read %.1f GB/s, %s matmul kernels "
             "(%s, %d thread%s) stream %.1f GB/s of weights for one token and reach %.1f GFLOP/s with 16 tokens",
             p->mem_total_bytes / 1e9, p->mem_available_bytes / 1e9, p->read_Bps / 1e9, hr_type_name(p->wtype), p->isa,
             p->threads, p->threads == 1 ? "" : "s", p->gemv_Bps / 1e9, p->gemm_flops / 1e9);
}

hr_status hr_measure_decode(const char *path, int32_t threads, int32_t prompt, int32_t steps, hr_decode_measure *out,
                            hr_err *err)
{
    memset(out, 0, sizeof *out);
    if (threads < 1)
        threads = 1;
    if (prompt < 1)
        prompt = 1;
    if (steps < 1)
        steps = 1;
    hr_model *m = NULL;
    hr_kv *kv = NULL;
    hr_engine *e = NULL;
    float *logits = NULL;
    int32_t *ids = NULL, *pos = NULL, *seq = NULL;
    hr_status st = hr_model_load(path, &m, err);
    if (st != HR_OK)
        return st;
    const hr_hparams *hp = hr_model_hparams(m);
    int32_t n_ctx = prompt + steps + 1;
    if (hp->n_ctx_train > 0 && n_ctx > hp->n_ctx_train) {
        st = hr_err_set(err, HR_ERR_INVALID, "prompt + steps exceed the model's context");
        goto done;
    }
    hr_kv_params kp = {.block_tokens = 16, .max_seqs = 1};
    kp.n_blocks = (n_ctx + kp.block_tokens - 1) / kp.block_tokens;
    if ((st = hr_kv_new(hp, &kp, &kv, err)) != HR_OK)
        goto done;
    hr_engine_params ep = {.max_batch = prompt > 64 ? prompt : 64, .n_threads = threads};
    if ((st = hr_engine_new(m, &ep, &e, err)) != HR_OK)
        goto done;
    logits = malloc(sizeof(float) * (size_t)hp->n_vocab);
    ids = malloc(sizeof(int32_t) * (size_t)prompt);
    pos = malloc(sizeof(int32_t) * (size_t)prompt);
    seq = calloc((size_t)prompt, sizeof(int32_t));
    if (!logits || !ids || !pos || !seq) {
        st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
        goto done;
    }
    uint32_t s = 7;
    for (int32_t i = 0; i < prompt; i++) {
        s = s * 1664525u + 1013904223u;
        ids[i] = (int32_t)((s >> 8) % (uint32_t)hp->n_vocab);
        pos[i] = i;
    }
    bool *want = calloc((size_t)prompt, sizeof(bool));
    if (!want) {
        st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
        goto done;
    }
    want[prompt - 1] = true;
    hr_batch b = {.n_tokens = prompt, .token = ids, .pos = pos, .seq = seq, .logits = want};
    st = hr_engine_forward(e, kv, &b, logits, err);
    free(want);
    if (st != HR_OK)
        goto done;
    /* decode: greedy on the logits, one token per step; each step timed */
    double t0 = hr_now_s(), best_step = 1e30;
    double *times = malloc(sizeof(double) * (size_t)steps);
    if (!times) {
        st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int32_t i = 0; i < steps; i++) {
        double ts = hr_now_s();
        int32_t best = 0;
        for (int32_t v = 1; v < hp->n_vocab; v++)
            if (logits[v] > logits[best])
                best = v;
        int32_t p = prompt + i, sq = 0;
        hr_batch d = {.n_tokens = 1, .token = &best, .pos = &p, .seq = &sq, .logits = NULL};
        if ((st = hr_engine_forward(e, kv, &d, logits, err)) != HR_OK) {
            free(times);
            goto done;
        }
        times[i] = hr_now_s() - ts;
        if (times[i] < best_step)
            best_step = times[i];
    }
    out->seconds = hr_now_s() - t0;
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    out->median_step_s = times[steps / 2];
    out->best_step_s = best_step;
    free(times);
    out->threads = threads;
    out->prompt_tokens = prompt;
    out->steps = steps;
    out->tokens_per_s = out->seconds > 0 ? steps / out->seconds : 0;
    out->best_tokens_per_s = best_step > 0 ? 1.0 / best_step : 0;
    out->median_tokens_per_s = out->median_step_s > 0 ? 1.0 / out->median_step_s : 0;
done:
    free(logits);
    free(ids);
    free(pos);
    free(seq);
    hr_engine_free(e);
    hr_kv_free(kv);
    hr_model_free(m);
    return st;
}
