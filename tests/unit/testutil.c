#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool tu_ci(void)
{
    const char *ci = getenv("CI");
    return ci && strcmp(ci, "true") == 0;
}

const char *tu_fixtures(void)
{
    const char *d = getenv("HEARTH_FIXTURES");
    if (d && *d)
        return d;
    d = getenv("HEARTH_FIXTURES_DEFAULT");
    return (d && *d) ? d : "../shared/fixtures";
}

const char *tu_fixture(const char *rel)
{
    static char bufs[8][4096];
    static int slot;
    char *b = bufs[slot++ & 7];
    snprintf(b, 4096, "%s/%s", tu_fixtures(), rel);
    return b;
}

void *tu_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return NULL; }
    long n = ftell(f);
    if (n < 0) { fclose(f); return NULL; }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) { fclose(f); return NULL; }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); fclose(f); return NULL; }
    buf[n] = 0;
    fclose(f);
    if (size)
        *size = (size_t)n;
    return buf;
}

const char *tu_arch_not_yet(const char *name)
{
    static const struct {
        const char *prefix, *why;
    } not_yet[] = {
        { "deepseek2-", "architecture deepseek2 (latent attention, issue 14)" },
        { "deepseek32-", "architecture deepseek32 (sparse attention, issue 14)" },
        { "mistral4-", "architecture mistral4 (latent attention, issue 14)" },
        { "qwen35-", "architecture qwen35 (recurrent state, issue 14)" },
    };
    for (size_t i = 0; i < sizeof not_yet / sizeof not_yet[0]; i++)
        if (!strncmp(name, not_yet[i].prefix, strlen(not_yet[i].prefix)))
            return not_yet[i].why;
    return NULL;
}
