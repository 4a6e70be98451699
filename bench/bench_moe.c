/* bench_moe.c - the expert matmul of MoE layers (hr_matmul_id) against the
 * naive loop (one hr_matmul per slot), same run, alternating.
 *
 *   bench_moe [--models qwen3,gptoss] [--types Q4_K,Q8_0] [--ntok 1,512]
 *             [--threads 1,2] [--rounds R] [--time SECONDS] [--read-mib M]
 *
 * Layers (one expert matrix of the FFN, gate/up shape):
 *   qwen3   Qwen3-30B-A3B-like: K=2048, N=768, 128 experts, 8 used
 *   gptoss  gpt-oss-20b-like:   K=2880, N=2880, 32 experts, 4 used
 *           (K % 256 != 0: the K-quants cannot hold it; such a type is
 *           reported as skipped, use Q4_0 / Q8_0 there)
 *
 * Routing is uniform: each token picks n_used distinct experts at random,
 * from a cycle of pre-drawn id sets (64 for one token, 4 for larger batches)
 * so successive decode calls touch different experts and the weights come
 * from DRAM, not the 8 MiB L3. GB/s counts the bytes of the distinct experts
 * a call touches (rows x row bytes; the activations are negligible), which
 * is what decode must stream. Each round runs the naive loop, the grouped
 * call (and, where the path has packed layouts (avx512), the packed grouped
 * call) and a plain read of --read-mib MiB over the same threads (the
 * machine's read bandwidth at that moment), each for >= --time seconds;
 * the table gives the best round of each. cpu_ms is the process CPU time
 * per call (all threads), less sensitive than wall time to a loaded host.
 * GFLOP/s counts 2*K*N per slot (int8 products as flops). Keep runs short
 * on shared machines. */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "cpu/cpu.h"
#include "cpu/matmul.h"
#include "cpu/pool.h"
#include "quant/quant.h"

typedef struct {
    const char *name;
    int64_t K, N;
    int32_t n_expert, n_used;
} layer;

static const layer layers[] = {
    { "qwen3", 2048, 768, 128, 8 },
    { "gptoss", 2880, 2880, 32, 4 },
};

static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float frand(void)
{
    return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static int split(char *s, char **out, int max)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ","))
        out[n++] = tok;
    return n;
}

static uint32_t type_by_name(const char *name)
{
    for (uint32_t id = 0; id < HR_TYPE_COUNT; id++) {
        const hr_type_traits *t = hr_type_get(id);
        if (t && t->supported && t->vec_dot && strcmp(t->name, name) == 0)
            return id;
    }
    fprintf(stderr, "bench_moe: unknown type %s\n", name);
    exit(2);
}

/* ---- the read loop: the machine's bandwidth over the same threads ---- */

typedef struct {
    const uint64_t *p;
    size_t n;
    _Atomic uint64_t sum;
} read_ctx;

static void read_part(void *vctx, int ith, int nth)
{
    read_ctx *c = vctx;
    const size_t i0 = c->n * (size_t)ith / (size_t)nth, i1 = c->n * (size_t)(ith + 1) / (size_t)nth;
    uint64_t a[8] = { 0 };
    size_t i = i0;
    for (; i + 8 <= i1; i += 8)
        for (int j = 0; j < 8; j++)
            a[j] += c->p[i + j];
    for (; i < i1; i++)
        a[0] += c->p[i];
    atomic_fetch_add(&c->sum, a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7]);
}

/* ---- one measurement ---- */

typedef struct {
    const layer *L;
    uint32_t type;
    size_t rb, eb;
    const unsigned char *w;
    const unsigned char *pw; /* packed experts (NULL: none on this path) */
    size_t peb;
    const float *x;
    float *y;
    void *scratch;
    int32_t n_tok;
    const int32_t *id_sets; /* n_sets x n_tok x n_used */
    int n_sets;
    hr_pool *pool;
} run_ctx;

static void call_naive(const run_ctx *r, const int32_t *ids)
{
    const int32_t nu = r->L->n_used;
    for (int32_t i = 0; i < r->n_tok * nu; i++)
        hr_matmul(r->pool, r->w + (size_t)ids[i] * r->eb, r->type, r->rb, r->L->K, r->L->N,
                  r->x + (size_t)(i / nu) * (size_t)r->L->K, 1, r->y + (size_t)i * (size_t)r->L->N, r->scratch);
}

static void call_grouped(const run_ctx *r, const int32_t *ids)
{
    hr_matmul_id(r->pool, r->w, r->type, r->rb, r->eb, r->L->K, r->L->N, r->L->n_expert, r->x, false, r->n_tok,
                 r->L->n_used, ids, r->y, r->scratch);
}

static void call_packed(const run_ctx *r, const int32_t *ids)
{
    hr_matmul_id_packed(r->pool, r->pw, r->type, r->peb, r->L->K, r->L->N, r->L->n_expert, r->x, false, r->n_tok,
                        r->L->n_used, ids, r->y, r->scratch);
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

enum { NAIVE, GROUPED, PACKED };

/* Seconds per call (>= min_time of calls), CPU seconds per call and bytes
 * touched per call. */
static double time_calls(const run_ctx *r, int how, double min_time, double *cpu_per_call, double *bytes_per_call)
{
    const size_t set = (size_t)r->n_tok * (size_t)r->L->n_used;
    double bytes = 0;
    int calls = 0;
    const double t0 = hr_now_s(), c0 = cpu_s();
    double dt;
    do {
        const int32_t *ids = r->id_sets + (size_t)(calls % r->n_sets) * set;
        if (how == PACKED)
            call_packed(r, ids);
        else if (how == GROUPED)
            call_grouped(r, ids);
        else
            call_naive(r, ids);
        calls++;
        dt = hr_now_s() - t0;
    } while (dt < min_time);
    *cpu_per_call = (cpu_s() - c0) / calls;
    /* bytes of the distinct experts of each call made */
    bool *seen = calloc((size_t)r->L->n_expert, 1);
    if (!seen)
        exit(1);
    for (int k = 0; k < calls; k++) {
        const int32_t *ids = r->id_sets + (size_t)(k % r->n_sets) * set;
        memset(seen, 0, (size_t)r->L->n_expert);
        for (size_t i = 0; i < set; i++)
            if (!seen[ids[i]]) {
                seen[ids[i]] = true;
                bytes += (double)r->rb * (double)r->L->N;
            }
    }
    free(seen);
    *bytes_per_call = bytes / calls;
    return dt / calls;
}

static double time_read(hr_pool *pool, read_ctx *rc, double min_time)
{
    int passes = 0;
    const double t0 = hr_now_s();
    double dt;
    do {
        hr_pool_run(pool, read_part, rc);
        passes++;
        dt = hr_now_s() - t0;
    } while (dt < min_time);
    return (double)rc->n * 8.0 * passes / dt;
}

int main(int argc, char **argv)
{
    char models_s[64] = "qwen3,gptoss", types_s[128] = "Q4_K,Q4_0,Q8_0", ntok_s[64] = "1,512", thr_s[32] = "1,2";
    int rounds = 5;
    double min_time = 0.2;
    long read_mib = 256;
    for (int i = 1; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: %s [--models L] [--types L] [--ntok L] [--threads L] [--rounds R] [--time S] "
                            "[--read-mib M]\n", argv[0]);
            return 2;
        }
        if (!strcmp(argv[i], "--models")) snprintf(models_s, sizeof models_s, "%s", v);
        else if (!strcmp(argv[i], "--types")) snprintf(types_s, sizeof types_s, "%s", v);
        else if (!strcmp(argv[i], "--ntok")) snprintf(ntok_s, sizeof ntok_s, "%s", v);
        else if (!strcmp(argv[i], "--threads")) snprintf(thr_s, sizeof thr_s, "%s", v);
        else if (!strcmp(argv[i], "--rounds")) rounds = atoi(v);
        else if (!strcmp(argv[i], "--time")) min_time = atof(v);
        else if (!strcmp(argv[i], "--read-mib")) read_mib = atol(v);
        else {
            fprintf(stderr, "bench_moe: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (rounds < 1 || read_mib < 1) {
        fprintf(stderr, "bench_moe: bad --rounds or --read-mib\n");
        return 2;
    }
    char *models[4], *types[16], *ntoks[8], *thrs[8];
    const int nm = split(models_s, models, 4), nt = split(types_s, types, 16);
    const int nn = split(ntok_s, ntoks, 8), nh = split(thr_s, thrs, 8);

    read_ctx rc = { .n = (size_t)read_mib << 17 };
    uint64_t *rbuf = malloc(rc.n * 8);
    if (!rbuf)
        return 1;
    for (size_t i = 0; i < rc.n; i++)
        rbuf[i] = i * 0x9E3779B97F4A7C15ull;
    rc.p = rbuf;

    printf("path %s; best of %d alternating rounds of >= %.2f s each; read loop over %ld MiB\n", hr_cpu_isa_name(),
           rounds, min_time, read_mib);
    printf("%-6s %-5s %4s %3s %9s %9s %9s %5s %7s %8s %8s %6s %7s %9s %9s\n", "layer", "type", "ntok", "thr",
           "naive_ms", "group_ms", "packd_ms", "x", "MB/call", "groupGBs", "readGBs", "g/read", "GFLOP/s", "n_cpu_ms",
           "g_cpu_ms");
    for (int mi = 0; mi < nm; mi++) {
        const layer *L = NULL;
        for (size_t k = 0; k < sizeof layers / sizeof layers[0]; k++)
            if (!strcmp(layers[k].name, models[mi]))
                L = &layers[k];
        if (!L) {
            fprintf(stderr, "bench_moe: unknown layer %s (qwen3, gptoss)\n", models[mi]);
            return 2;
        }
        for (int ti = 0; ti < nt; ti++) {
            const uint32_t type = type_by_name(types[ti]);
            if (L->K % hr_type_get(type)->block_size != 0) {
                printf("%-6s %-5s skipped: K=%lld is not a multiple of the block size %lld\n", L->name,
                       hr_type_name(type), (long long)L->K, (long long)hr_type_get(type)->block_size);
                continue;
            }
            /* 64 random quantised rows repeated over every expert: the values do not change the speed */
            const size_t rb = hr_row_size(type, L->K), eb = rb * (size_t)L->N;
            unsigned char *w = malloc(eb * (size_t)L->n_expert), *proto = malloc(64 * rb);
            float *row = malloc((size_t)L->K * sizeof(float));
            if (!w || !proto || !row)
                return 1;
            for (int r = 0; r < 64; r++) {
                for (int64_t k = 0; k < L->K; k++)
                    row[k] = frand();
                hr_quantize_row(type, row, proto + (size_t)r * rb, L->K);
            }
            for (size_t r = 0; r < (size_t)L->N * (size_t)L->n_expert; r++)
                memcpy(w + r * rb, proto + (r % 64) * rb, rb);
            const size_t peb = hr_matmul_packed_bytes(type, L->K, L->N);
            unsigned char *pw = NULL;
            if (peb) {
                if (!(pw = aligned_alloc(64, (peb * (size_t)L->n_expert + 63) / 64 * 64)))
                    return 1;
                for (int32_t e = 0; e < L->n_expert; e++)
                    hr_matmul_pack(NULL, w + (size_t)e * eb, type, rb, L->K, L->N, pw + (size_t)e * peb);
            }
            for (int ni = 0; ni < nn; ni++) {
                const int32_t n_tok = atoi(ntoks[ni]);
                if (n_tok < 1)
                    continue;
                const int n_sets = n_tok == 1 ? 64 : 4;
                const size_t set = (size_t)n_tok * (size_t)L->n_used;
                int32_t *id_sets = malloc((size_t)n_sets * set * sizeof(int32_t));
                float *x = malloc((size_t)n_tok * (size_t)L->K * sizeof(float));
                float *y = malloc(set * (size_t)L->N * sizeof(float));
                size_t sb = hr_matmul_id_scratch_bytes(type, L->K, n_tok, L->n_used, L->n_expert);
                if (hr_matmul_scratch_bytes(type, L->K, 1) > sb)
                    sb = hr_matmul_scratch_bytes(type, L->K, 1);
                void *scratch = malloc(sb);
                if (!id_sets || !x || !y || !scratch)
                    return 1;
                for (size_t i = 0; i < (size_t)n_tok * (size_t)L->K; i++)
                    x[i] = frand();
                for (size_t t = 0; t < (size_t)n_sets * (size_t)n_tok; t++) /* distinct experts per token */
                    for (int32_t s = 0; s < L->n_used; s++) {
                        int32_t e;
                        bool dup;
                        do {
                            e = (int32_t)(rnd() % (uint64_t)L->n_expert);
                            dup = false;
                            for (int32_t q = 0; q < s; q++)
                                dup |= id_sets[t * (size_t)L->n_used + (size_t)q] == e;
                        } while (dup);
                        id_sets[t * (size_t)L->n_used + (size_t)s] = e;
                    }
                for (int hi = 0; hi < nh; hi++) {
                    const int n_thr = atoi(thrs[hi]);
                    hr_pool *pool = hr_pool_new(n_thr);
                    if (!pool)
                        continue;
                    run_ctx r = { L, type, rb, eb, w, pw, peb, x, y, scratch, n_tok, id_sets, n_sets, pool };
                    double bytes = 0, best[3] = { 1e30, 1e30, 1e30 }, best_cpu[3] = { 1e30, 1e30, 1e30 };
                    double best_read = 0;
                    call_grouped(&r, id_sets); /* warm up: fault in, first pool run */
                    call_naive(&r, id_sets);
                    for (int k = 0; k < rounds; k++) {
                        for (int how = NAIVE; how <= (pw ? PACKED : GROUPED); how++) {
                            double cpu;
                            const double t = time_calls(&r, how, min_time, &cpu, &bytes);
                            best[how] = t < best[how] ? t : best[how];
                            best_cpu[how] = cpu < best_cpu[how] ? cpu : best_cpu[how];
                        }
                        const double rd = time_read(pool, &rc, min_time);
                        best_read = rd > best_read ? rd : best_read;
                    }
                    hr_pool_free(pool);
                    /* the fastest grouped form against the naive loop */
                    const double bg = pw && best[PACKED] < best[GROUPED] ? best[PACKED] : best[GROUPED];
                    char pk_s[16] = "-";
                    if (pw)
                        snprintf(pk_s, sizeof pk_s, "%.3f", best[PACKED] * 1e3);
                    printf("%-6s %-5s %4d %3d %9.3f %9.3f %9s %5.2f %7.2f %8.2f %8.2f %6.2f %7.1f %9.3f %9.3f\n",
                           L->name, hr_type_name(type), (int)n_tok, n_thr, best[NAIVE] * 1e3, best[GROUPED] * 1e3,
                           pk_s, best[NAIVE] / bg, bytes * 1e-6, bytes / bg * 1e-9, best_read * 1e-9,
                           bytes / bg / best_read, 2.0 * (double)L->K * (double)L->N * (double)set / bg * 1e-9,
                           best_cpu[NAIVE] * 1e3, best_cpu[GROUPED] * 1e3);
                    fflush(stdout);
                }
                free(id_sets);
                free(x);
                free(y);
                free(scratch);
            }
            free(w);
            free(pw);
            free(proto);
            free(row);
        }
    }
    free(rbuf);
    return (int)(atomic_load(&rc.sum) & 0); /* the sum keeps the read loop alive */
}
