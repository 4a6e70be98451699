/* bench_membw: the machine's streaming read bandwidth, so decode speed can
 * be put next to what memory can deliver. Reads a buffer (default 1 GiB,
 * far larger than any cache) split evenly over T threads; reports the best
 * of R runs in GB/s (1e9 bytes/s).
 * usage: bench_membw [--size-mib N] [--reps R] [--threads 1,2,...]
 * output: one line per thread count: "threads T read_GBps X" */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"

typedef struct {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} slice;

static void *reader(void *arg)
{
    slice *s = arg;
    const uint64_t *p = s->p;
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    size_t i = 0;
    for (; i + 8 <= s->n; i += 8) {
        a0 += p[i];
        a1 += p[i + 1];
        a2 += p[i + 2];
        a3 += p[i + 3];
        a4 += p[i + 4];
        a5 += p[i + 5];
        a6 += p[i + 6];
        a7 += p[i + 7];
    }
    for (; i < s->n; i++)
        a0 += p[i];
    s->sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    return NULL;
}

int main(int argc, char **argv)
{
    long size_mib = 1024, reps = 5;
    char threads_arg[128] = "1,2";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--size-mib") && i + 1 < argc)
            size_mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atol(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            snprintf(threads_arg, sizeof threads_arg, "%s", argv[++i]);
        else {
            fprintf(stderr, "usage: bench_membw [--size-mib N] [--reps R] [--threads 1,2,...]\n");
            return 2;
        }
    }
    if (size_mib < 1 || reps < 1) {
        fprintf(stderr, "bench_membw: bad size or repetitions\n");
        return 2;
    }
    size_t bytes = (size_t)size_mib << 20, n = bytes / sizeof(uint64_t);
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, bytes)) {
        fprintf(stderr, "bench_membw: cannot allocate %ld MiB\n", size_mib);
        return 1;
    }
    for (size_t i = 0; i < n; i++) /* touch every page, and defeat zero-page tricks */
        buf[i] = i * 0x9E3779B97F4A7C15ull;
    uint64_t check = 0;
    for (char *save = NULL, *tok = strtok_r(threads_arg, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int nt = atoi(tok);
        if (nt < 1 || nt > 256) {
            fprintf(stderr, "bench_membw: bad thread count '%s'\n", tok);
            return 2;
        }
        pthread_t th[256];
        slice sl[256];
        double best = 1e30;
        for (long r = 0; r < reps; r++) {
            double t0 = hr_now_s();
            for (int t = 0; t < nt; t++) {
                size_t a = n * (size_t)t / (size_t)nt, b = n * (size_t)(t + 1) / (size_t)nt;
                sl[t] = (slice){.p = buf + a, .n = b - a};
                if (t > 0 && pthread_create(&th[t], NULL, reader, &sl[t])) {
                    fprintf(stderr, "bench_membw: cannot start a thread\n");
                    return 1;
                }
            }
            reader(&sl[0]);
            for (int t = 1; t < nt; t++)
                pthread_join(th[t], NULL);
            double dt = hr_now_s() - t0;
            for (int t = 0; t < nt; t++)
                check += sl[t].sum;
            if (dt < best)
                best = dt;
        }
        printf("threads %d read_GBps %.2f\n", nt, (double)bytes / best / 1e9);
        fflush(stdout);
    }
    free(buf);
    return check == 42 ? 3 : 0; /* keeps the sums alive */
}
