/* usage_impl.h - the sink interface behind hr_usage_db (internal to
 * src/store/). A sink writes batches of rows in one transaction; the queue
 * and writer thread in usage.c are backend-neutral. SQLite is the only sink
 * today (usage_sqlite.c); a PostgreSQL one (issue 8) implements the same. */
#ifndef HR_STORE_USAGE_IMPL_H
#define HR_STORE_USAGE_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "store/usage.h"

/* A row as queued: strings copied into fixed buffers. */
typedef struct {
    int64_t ts_ms;
    char request_id[64];
    char key_id[HR_USAGE_KEY_ID_LEN];
    char model[96];
    char backend[32];
    char finish_reason[16];
    int32_t prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens;
    int32_t status;
    double ttft_ms, duration_ms; /* ttft < 0: unknown (stored as NULL) */
    bool stream;
} hr_usage_qrow;

typedef struct hr_usage_sink hr_usage_sink;
struct hr_usage_sink {
    /* Writes rows[0..n) in one transaction: all or nothing. */
    hr_status (*write)(hr_usage_sink *s, const hr_usage_qrow *rows, int32_t n, hr_err *err);
    void (*close)(hr_usage_sink *s);
};

hr_status hr_usage_sqlite_open(const char *path, const hr_usage_params *p, hr_usage_sink **out, hr_err *err);
hr_status hr_usage_sqlite_totals(const char *path, int64_t since_ms, int64_t until_ms, const char *model,
                                 hr_usage_totals *out, hr_err *err);

#endif
