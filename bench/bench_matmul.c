/* bench_matmul.c - hr_matmul throughput for Qwen2.5-0.5B-like shapes, per
 * weight type, ISA path and thread count.
 *
 *   bench_matmul [--types Q4_K,Q8_0,...] [--isa scalar,avx2,avx512]
 *                [--threads 1,2] [--ntok 1,64] [--time SECONDS]
 *                [--shapes KxN,KxN]  (default 896x4864,4864x896;
 *                gpt-oss-20b experts: 2880x2880)
 *
 * --isa packed runs hr_matmul_packed (the avx512 GEMM micro-kernels on
 * repacked weights) for the types that have a packed layout.
 *
 * Shapes: K=896 N=4864 (ffn up/gate) and K=4864 N=896 (ffn down); K is
 * rounded up to the block size (1024 for the K-quants). GFLOP/s
 * counts 2*K*N*n_tok; GB/s is weight bytes streamed per call / time (the
 * bound that matters for n_tok = 1). Timings are the best of a few repeats of
 * a loop of at least --time seconds. Keep runs short on shared machines. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "cpu/cpu.h"
#include "cpu/matmul.h"
#include "cpu/pool.h"
#include "quant/quant.h"

static uint64_t rng = 88172645463325252ull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* Splits a comma list into at most max items (in place). */
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
    fprintf(stderr, "bench_matmul: unknown type %s\n", name);
    exit(2);
}

int main(int argc, char **argv)
{
    char types_s[256] = "F16,Q8_0,Q4_0,Q4_K,Q5_K,Q6_K,MXFP4";
    char shape_s[128] = "896x4864,4864x896";
    char isa_s[64] = "scalar,avx2,avx512,packed", thr_s[64] = "1,2", ntok_s[64] = "1,64";
    double min_time = 0.1;
    for (int i = 1; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: %s [--types L] [--isa L] [--threads L] [--ntok L] [--time S]\n", argv[0]);
            return 2;
        }
        if (!strcmp(argv[i], "--types")) snprintf(types_s, sizeof types_s, "%s", v);
        else if (!strcmp(argv[i], "--isa")) snprintf(isa_s, sizeof isa_s, "%s", v);
        else if (!strcmp(argv[i], "--threads")) snprintf(thr_s, sizeof thr_s, "%s", v);
        else if (!strcmp(argv[i], "--ntok")) snprintf(ntok_s, sizeof ntok_s, "%s", v);
        else if (!strcmp(argv[i], "--time")) min_time = atof(v);
        else if (!strcmp(argv[i], "--shapes")) snprintf(shape_s, sizeof shape_s, "%s", v);
        else {
            fprintf(stderr, "bench_matmul: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    char *types[32], *isas[8], *thrs[8], *ntoks[8];
    const int nt = split(types_s, types, 32), ni = split(isa_s, isas, 8);
    const int nh = split(thr_s, thrs, 8), nn = split(ntok_s, ntoks, 8);

    char *shape_l[8];
    const int nshapes = split(shape_s, shape_l, 8);
    int64_t shapes[8][2];
    int64_t maxK = 256, maxN = 1;
    for (int i = 0; i < nshapes; i++) {
        long long k = 0, n = 0;
        if (sscanf(shape_l[i], "%lldx%lld", &k, &n) != 2 || k <= 0 || n <= 0) {
            fprintf(stderr, "bench_matmul: bad shape %s\n", shape_l[i]);
            return 2;
        }
        shapes[i][0] = k;
        shapes[i][1] = n;
        maxK = k + 256 > maxK ? k + 256 : maxK;
        maxN = n > maxN ? n : maxN;
    }
    const int32_t max_tok = 256;
    float *x = malloc((size_t)max_tok * maxK * sizeof(float));
    float *y = malloc((size_t)max_tok * maxN * sizeof(float));
    float *row = malloc((size_t)maxK * sizeof(float));
    void *scratch = malloc((size_t)max_tok * ((size_t)maxK * 4 + 64));
    if (!x || !y || !row || !scratch)
        return 1;
    for (int64_t i = 0; i < (int64_t)max_tok * maxK; i++)
        x[i] = frand();

    printf("host ISA %s; times best of 3 loops of >= %.2f s\n", hr_isa_name(hr_cpu_host_isa()), min_time);
    printf("%-6s %5s %5s %4s %-7s %3s %10s %9s %8s\n", "type", "K", "N", "ntok", "isa", "thr", "ms/call",
           "GFLOP/s", "GB/s");
    for (int ti = 0; ti < nt; ti++) {
        const uint32_t type = type_by_name(types[ti]);
        for (int si = 0; si < nshapes; si++) {
            /* K-quants need K % 256 == 0: 896 becomes 1024 for them */
            const int64_t bs = hr_type_get(type)->block_size;
            const int64_t K = (shapes[si][0] + bs - 1) / bs * bs, N = shapes[si][1];
            const size_t rb = hr_row_size(type, K);
            unsigned char *w = malloc(rb * (size_t)N);
            if (!w)
                return 1;
            for (int64_t r = 0; r < N; r++) {
                for (int64_t k = 0; k < K; k++)
                    row[k] = frand();
                hr_quantize_row(type, row, w + (size_t)r * rb, K);
            }
            for (int ni_ = 0; ni_ < nn; ni_++) {
                int32_t ntok = (int32_t)atoi(ntoks[ni_]);
                if (ntok < 1 || ntok > max_tok)
                    continue;
                for (int ii = 0; ii < ni; ii++) {
                    hr_isa isa;
                    const bool packed = !strcmp(isas[ii], "packed");
                    if (packed)
                        isa = HR_ISA_AVX512;
                    else if (!hr_isa_parse(isas[ii], &isa))
                        continue;
                    if (isa > hr_cpu_host_isa())
                        continue;
                    hr_cpu_force(isa);
                    void *pk = NULL;
                    if (packed) {
                        const size_t pb = hr_matmul_packed_bytes(type, K, N);
                        if (!pb || !(pk = aligned_alloc(64, (pb + 63) / 64 * 64)))
                            continue;
                        hr_matmul_pack(NULL, w, type, rb, K, N, pk);
                    }
                    for (int hi = 0; hi < nh; hi++) {
                        const int n_thr = atoi(thrs[hi]);
                        hr_pool *pool = hr_pool_new(n_thr);
                        if (!pool)
                            continue;
#define MM() (pk ? hr_matmul_packed(pool, pk, type, K, N, x, ntok, y, scratch) \
                    : hr_matmul(pool, w, type, rb, K, N, x, ntok, y, scratch))
                        MM(); /* warm up */
                        double best = 1e30;
                        for (int rep = 0; rep < 3; rep++) {
                            int calls = 0;
                            const double t0 = hr_now_s();
                            double dt;
                            do {
                                MM();
                                calls++;
                                dt = hr_now_s() - t0;
                            } while (dt < min_time);
                            if (dt / calls < best)
                                best = dt / calls;
                        }
                        hr_pool_free(pool);
                        printf("%-6s %5lld %5lld %4d %-7s %3d %10.3f %9.2f %8.2f\n", hr_type_name(type),
                               (long long)K, (long long)N, (int)ntok, packed ? "packed" : hr_isa_name(isa), n_thr, best * 1e3,
                               2.0 * (double)K * (double)N * ntok / best * 1e-9,
                               (double)rb * (double)N / best * 1e-9);
                        fflush(stdout);
                    }
                    free(pk);
                }
            }
            free(w);
        }
    }
    hr_cpu_force(hr_cpu_host_isa());
    free(x);
    free(y);
    free(row);
    free(scratch);
    return 0;
}
