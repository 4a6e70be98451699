/* bench_attn.c - streaming attention kernel throughput (src/cpu/attn.h),
 * one thread, over a paged cache of 16-position blocks scattered in memory.
 *
 *   bench_attn [--isa scalar,avx2,avx512] [--ctx 1024] [--group 7]
 *              [--dim 64] [--tokens 1,4,8] [--time SECONDS]
 *
 * Each call computes `tokens` query tokens at the last positions of a
 * context of --ctx positions (a decode step for 1, a prefill chunk for
 * more), `group` heads sharing one KV head. GFLOP/s counts 4*d flops per
 * (head, position) pair actually attended (QK and PV); best of 3 loops of
 * at least --time seconds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "cpu/attn.h"
#include "cpu/cpu.h"

static int parse_list(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c)
            break;
        s = c + 1;
    }
    return n;
}

int main(int argc, char **argv)
{
    const char *isas = "scalar,avx512";
    int ctx = 1024, group = 7, dim = 64, toks[8] = {1, 4, 8}, n_toks = 3;
    double tmin = 0.3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--isa"))
            isas = argv[i + 1];
        else if (!strcmp(argv[i], "--ctx"))
            ctx = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--group"))
            group = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dim"))
            dim = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens"))
            n_toks = parse_list(argv[i + 1], toks, 8);
        else if (!strcmp(argv[i], "--time"))
            tmin = atof(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench_attn [--isa L] [--ctx N] [--group G] [--dim D] [--tokens L] [--time S]\n");
            return 2;
        }
    }
    if (ctx < 8 || ctx > 1 << 20 || group < 1 || group > 16 || (dim != 64 && dim != 128) || tmin <= 0 || tmin > 60) {
        fprintf(stderr, "bench_attn: out-of-range option\n");
        return 2;
    }
    const int bt = 16, nkv = 2, nblk = (ctx + bt - 1) / bt;
    const size_t stride = (size_t)nkv * (size_t)dim, blk_floats = (size_t)bt * stride;
    /* blocks in shuffled order, as a long-running pool would hand them out */
    float *pool = malloc((size_t)nblk * 2 * blk_floats * sizeof(float));
    const float **kb = malloc((size_t)nblk * sizeof *kb), **vb = malloc((size_t)nblk * sizeof *vb);
    float *q = malloc((size_t)8 * group * dim * sizeof(float)), *out = malloc((size_t)8 * group * dim * sizeof(float));
    if (!pool || !kb || !vb || !q || !out)
        return 1;
    for (size_t i = 0; i < (size_t)nblk * 2 * blk_floats; i++)
        pool[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (int i = 0; i < 8 * group * dim; i++)
        q[i] = (float)(i % 17) / 17.0f - 0.5f;
    for (int b = 0; b < nblk; b++) {
        const int slot = (int)(((unsigned)b * 7919u) % (unsigned)nblk); /* a permutation when nblk is not a multiple of 7919 */
        kb[b] = pool + (size_t)slot * 2 * blk_floats;
        vb[b] = kb[b] + blk_floats;
    }
    const hr_attn_kv kv = {kb, vb, bt, stride, stride};
    printf("# ctx %d, group %d, d %d, block %d tokens, 1 thread\n", ctx, group, dim, bt);
    printf("%-8s %6s %12s %10s\n", "isa", "tokens", "us/call", "GFLOP/s");
    char buf[64];
    snprintf(buf, sizeof buf, "%s", isas);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        hr_isa want = !strcmp(tok, "scalar") ? HR_ISA_SCALAR : !strcmp(tok, "avx2") ? HR_ISA_AVX2 : HR_ISA_AVX512;
        if (hr_cpu_force(want) != want)
            continue;
        hr_attn_fn f = hr_cpu_attn(group, dim, dim);
        for (int ti = 0; ti < n_toks; ti++) {
            int nt = toks[ti] < 1 ? 1 : toks[ti] > 8 ? 8 : toks[ti];
            int32_t n_pos[8];
            double pairs = 0;
            for (int t = 0; t < nt; t++) {
                n_pos[t] = ctx - nt + 1 + t;
                pairs += (double)n_pos[t] * group;
            }
            double best = 1e30;
            for (int rep = 0; rep < 3; rep++) {
                long calls = 0;
                double t0 = hr_now_s(), t;
                do {
                    f(q, (size_t)group * dim, nt, n_pos, group, dim, dim, 0.125f, &kv, out, (size_t)group * dim);
                    calls++;
                } while ((t = hr_now_s() - t0) < tmin);
                if (t / (double)calls < best)
                    best = t / (double)calls;
            }
            printf("%-8s %6d %12.1f %10.1f\n", tok, nt, best * 1e6, pairs * 4.0 * dim / best * 1e-9);
        }
    }
    free(pool);
    free(kb);
    free(vb);
    free(q);
    free(out);
    return 0;
}
