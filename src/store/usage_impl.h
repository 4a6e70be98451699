/* usage_impl.h - the sink interface behind hr_usage_db (internal to
 * src/store/). A sink writes a batch of rows and pilot pairs in one
 * transaction; the queue and writer thread in usage.c are backend-neutral.
 * Sinks: SQLite (usage_sqlite.c) and PostgreSQL (usage_pg.c). The readers
 * (totals, pairs) are dispatched on the target the same way. */
#ifndef HR_STORE_USAGE_IMPL_H
#define HR_STORE_USAGE_IMPL_H

#include <stdbool.h>
#include <stddef.h>
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
    bool estimated;
} hr_usage_qrow;

/* A pair as queued: short strings in fixed buffers, the answers on the heap
 * (never NULL once queued). Times in ms, < 0 unknown; scores < 0 absent. */
typedef struct {
    int64_t ts_ms;
    char request_id[64];
    char route[96];
    char key_id[HR_USAGE_KEY_ID_LEN];
    char primary_backend[32], primary_model[96];
    char shadow_backend[32], shadow_model[96];
    char *primary_text, *shadow_text;
    double primary_ttft_ms, primary_total_ms, shadow_ttft_ms, shadow_total_ms;
    int32_t primary_prompt_tokens, primary_completion_tokens;
    int32_t shadow_prompt_tokens, shadow_completion_tokens;
    int32_t primary_status, shadow_status;
    double score_exact, score_f1, score_json, score_judge;
} hr_usage_qpair;

/* The pilot_pairs columns as written (24) and as read back (21, no
 * key or texts), in the order both sinks bind / read them. */
#define HR_PAIR_COLUMNS                                                                                       \
    "ts_ms, request_id, route, key_id, primary_backend, primary_model, shadow_backend, shadow_model,"        \
    " primary_text, shadow_text, primary_ttft_ms, primary_total_ms, shadow_ttft_ms, shadow_total_ms,"        \
    " primary_prompt_tokens, primary_completion_tokens, shadow_prompt_tokens, shadow_completion_tokens,"     \
    " primary_status, shadow_status, score_exact, score_f1, score_json, score_judge"
#define HR_PAIR_READ_COLUMNS                                                                                  \
    "ts_ms, request_id, route, primary_backend, primary_model, shadow_backend, shadow_model,"                \
    " primary_ttft_ms, primary_total_ms, shadow_ttft_ms, shadow_total_ms,"                                   \
    " primary_prompt_tokens, primary_completion_tokens, shadow_prompt_tokens, shadow_completion_tokens,"     \
    " primary_status, shadow_status, score_exact, score_f1, score_json, score_judge"

typedef struct hr_usage_sink hr_usage_sink;
struct hr_usage_sink {
    /* Writes rows[0..n) and pairs[0..np) in one transaction: all or
     * nothing. On failure *retry tells whether the same batch may succeed
     * later (the connection was lost) or is hopeless (constraint, disk). */
    hr_status (*write)(hr_usage_sink *s, const hr_usage_qrow *rows, int32_t n, hr_usage_qpair *const *pairs,
                       int32_t np, bool *retry, hr_err *err);
    void (*close)(hr_usage_sink *s);
};

/* Accumulates the rows of a totals query (backend-neutral arithmetic:
 * sums, first start, last end, busy time as the union of intervals). */
typedef struct {
    hr_usage_totals *out;
    int64_t until_ms;
    double *a, *b;
    size_t n, cap;
} hr_usage_acc;

void hr_usage_acc_init(hr_usage_acc *acc, hr_usage_totals *out, int64_t until_ms);
/* false on a row with invalid numbers (err filled) or out of memory */
hr_status hr_usage_acc_add(hr_usage_acc *acc, const char *where, int64_t ts_ms, double duration_ms, int64_t prompt,
                           int64_t cached, int64_t completion, int64_t reasoning, hr_err *err);
void hr_usage_acc_finish(hr_usage_acc *acc);

/* Appends one pair to a growing array (reader helper). */
hr_status hr_usage_pairs_push(hr_pilot_pair_rec **arr, size_t *n, size_t *cap, const hr_pilot_pair_rec *r, hr_err *err);

/* Copies src into dst[cap] without cutting a UTF-8 character; NULL = "". */
void hr_usage_copy_str(char *dst, size_t cap, const char *src);

/* "postgres://" or "postgresql://" */
bool hr_usage_is_pg(const char *target);
/* The target with any password replaced by "***" (for messages). */
void hr_usage_redact(const char *target, char *buf, size_t cap);

hr_status hr_usage_sqlite_open(const char *path, const hr_usage_params *p, hr_usage_sink **out, hr_err *err);
hr_status hr_usage_sqlite_totals(const char *path, int64_t since_ms, int64_t until_ms, const char *model,
                                 hr_usage_totals *out, hr_err *err);
hr_status hr_usage_sqlite_pairs(const char *path, int64_t since_ms, int64_t until_ms, const char *route,
                                hr_pilot_pair_rec **out, size_t *n, hr_err *err);

hr_status hr_usage_pg_open(const char *url, const hr_usage_params *p, hr_usage_sink **out, hr_err *err);
hr_status hr_usage_pg_totals(const char *url, int64_t since_ms, int64_t until_ms, const char *model,
                             hr_usage_totals *out, hr_err *err);
hr_status hr_usage_pg_pairs(const char *url, int64_t since_ms, int64_t until_ms, const char *route,
                            hr_pilot_pair_rec **out, size_t *n, hr_err *err);

#endif
