/* bench_load: model load time and resident memory right after loading,
 * next to the file size - loading must be O(metadata) (weights mmapped).
 * usage: bench_load MODEL.gguf [MODEL.gguf ...] */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "model/model.h"

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':')
            sscanf(line + n + 1, "%ld", &v);
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_load MODEL.gguf...\n");
        return 2;
    }
    printf("%-40s %12s %10s %12s %12s %12s\n", "model", "file MiB", "load ms", "RSS MiB", "anon MiB", "file-backed");
    for (int i = 1; i < argc; i++) {
        long before = status_kb("VmRSS");
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        hr_model *m;
        hr_err err = {0};
        if (hr_model_load(argv[i], &m, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        const char *base = strrchr(argv[i], '/');
        printf("%-40s %12.2f %10.2f %12.2f %12.2f %12.2f\n", base ? base + 1 : argv[i],
               hr_gguf_file_size(hr_model_gguf(m)) / 1048576.0, ms, (status_kb("VmRSS") - before) / 1024.0,
               status_kb("RssAnon") / 1024.0, status_kb("RssFile") / 1024.0);
        hr_model_free(m);
    }
    return 0;
}
