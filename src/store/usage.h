/* usage.h - the usage log: one row per request hearth serves.
 *
 * Writing: hr_usage_record() copies the row into a bounded in-memory queue
 * and returns at once; a writer thread drains the queue every batch window
 * (default 100 ms) and writes the rows in one transaction. Generation never
 * waits on the database: when the queue is full the row is dropped and
 * counted (hr_usage_stats.dropped). hr_usage_flush() waits until every row
 * recorded before the call is durable; hr_usage_close() flushes, then stops
 * the writer. A crash (kill -9) loses at most the rows of the current batch
 * window: everything committed before it is on disk (SQLite WAL).
 *
 * The HTTP layer's use:
 *     hr_usage_db *db; hr_usage_open(path, NULL, &db, &err);   // at start
 *     hr_usage_row r = {...}; hr_usage_record(db, &r);          // per request, any thread
 *     hr_usage_close(db);                                       // on SIGTERM / exit
 * Count streamed and non-streamed requests the same way: the token counts
 * are the ones the response's `usage` object reports.
 *
 * The interface names no backend: a path (or "sqlite:PATH") selects the
 * embedded SQLite sink; "postgres://..." or "postgresql://..." (a libpq
 * connection URI) the PostgreSQL sink, so that several replicas share one
 * log. Other URL schemes fail with HR_ERR_UNSUPPORTED. The readers below
 * take the same targets, so reports do not know the backend.
 *
 * Schema (versioned: SQLite PRAGMA user_version, PostgreSQL table
 * hearth_meta; migrations run at open, older logs stay readable):
 *   usage(id, ts_ms                              -- request start, Unix ms
 *         request_id, key_id, model, backend,
 *         prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens,
 *         ttft_ms, duration_ms, status, finish_reason,
 *         stream,                                -- v2
 *         estimated)                             -- v3
 *   pilot_pairs(id, ts_ms, request_id, route, key_id,  -- v3, see hr_pilot_pair
 *         primary_backend, primary_model, shadow_backend, shadow_model,
 *         primary_text, shadow_text, primary_ttft_ms, primary_total_ms,
 *         shadow_ttft_ms, shadow_total_ms, primary_prompt_tokens,
 *         primary_completion_tokens, shadow_prompt_tokens,
 *         shadow_completion_tokens, primary_status, shadow_status,
 *         score_exact, score_f1, score_json, score_judge)
 * completion_tokens includes reasoning_tokens, and prompt_tokens includes
 * cached_tokens, as in OpenAI's usage object. Unknown times and absent
 * scores are NULL. */
#ifndef HR_STORE_USAGE_H
#define HR_STORE_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct hr_usage_db hr_usage_db;

/* Schema version this build writes (PRAGMA user_version). */
#define HR_USAGE_SCHEMA_VERSION 3

typedef struct {
    int64_t ts_ms;              /* request start, Unix epoch ms; 0 = now (at record) */
    const char *request_id;     /* strings are copied (truncated: ids 63 bytes, model 95); NULL = "" */
    const char *key_id;         /* hr_usage_key_id() of the API key; never the key itself */
    const char *model;
    const char *backend;        /* "local", or an upstream's name */
    int32_t prompt_tokens;
    int32_t cached_tokens;      /* prompt tokens served from a cache (part of prompt_tokens) */
    int32_t completion_tokens;  /* includes reasoning_tokens */
    int32_t reasoning_tokens;
    double ttft_s;              /* time to first token; < 0 = unknown */
    double duration_s;          /* request start to last byte */
    int32_t status;             /* HTTP status */
    const char *finish_reason;  /* "stop", "length", ...; NULL = "" */
    bool stream;
    bool estimated;             /* token counts estimated by hearth (the provider sent none) */
} hr_usage_row;

/* One request of a parallel pilot: the primary answered the client, the
 * shadow got the same request; both answers and their measurements, and the
 * agreement scores (issue 8). Strings are copied; texts are capped at
 * HR_PILOT_TEXT_MAX bytes each (cut on a UTF-8 character boundary). */
#define HR_PILOT_TEXT_MAX 65536
typedef struct {
    int64_t ts_ms;                 /* primary request start, Unix ms; 0 = now */
    const char *request_id;        /* the primary's response id */
    const char *route;             /* the route name the client asked for */
    const char *key_id;            /* hr_usage_key_id of the client's key, or "" */
    const char *primary_backend, *primary_model;
    const char *shadow_backend, *shadow_model;
    const char *primary_text, *shadow_text;   /* full answers (first choice), copied; capped at 64 KiB each */
    double primary_ttft_s, primary_total_s, shadow_ttft_s, shadow_total_s;  /* < 0 unknown */
    int32_t primary_prompt_tokens, primary_completion_tokens;
    int32_t shadow_prompt_tokens, shadow_completion_tokens;
    int32_t primary_status, shadow_status;    /* HTTP status; 0 = transport failure */
    double score_exact;            /* 1 or 0: equal after normalisation */
    double score_f1;               /* token-level F1 in [0, 1] */
    double score_json;             /* key/value agreement in [0, 1]; < 0 when not both JSON */
    double score_judge;            /* judge verdict in [0, 1] (1 = shadow as good); < 0 when no judge */
} hr_pilot_pair;

typedef struct {
    int32_t queue_rows;   /* queue capacity (default 16384) */
    int32_t batch_ms;     /* batch window (default 100) */
    int32_t busy_ms;      /* SQLite busy timeout (default 5000) */
    int32_t queue_pairs;  /* pilot pair queue capacity (default 1024; a pair holds up to 128 KiB of text) */
    int32_t retry_ms;     /* first wait before retrying a failed write (default 250; doubles up to 5000) */
    int32_t flush_wait_ms;/* while the database is unreachable, how long flush / close keep retrying
                             before counting the queued rows as failed (default 5000) */
    /* Where the episode lines go (one when writes start failing, one when
     * they work again, one when rows start being dropped); NULL: stderr,
     * prefixed "hearth: ". */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
} hr_usage_params;

hr_usage_params hr_usage_defaults(void);

/* Opens (creating if needed) the log at `target` and starts the writer.
 * Migrates an older schema; refuses a newer one, a file that is not a
 * database, or one whose usage table has an unexpected layout. p may be NULL
 * (defaults). The target must be writable now (a bad URL, a server that
 * refuses, a missing folder is an error here).
 *
 * Faults later on: when a write fails in a way that may heal (PostgreSQL
 * gone, full or read-only; a SQLite file on a full or read-only
 * filesystem, or removed or replaced under the server, folder included),
 * the batch stays queued and the writer tries again with backoff (250 ms
 * doubling to 5 s), reopening the database (a removed SQLite file is
 * created afresh at the same path once its folder exists again). The queue
 * is the bound: while it is full new rows are dropped and counted. Only a
 * batch that can never be written (a constraint) is given up at once
 * (counted as failed). Each episode is logged once when it starts, once
 * when rows start being dropped, and once when writes work again. */
hr_status hr_usage_open(const char *target, const hr_usage_params *p, hr_usage_db **out, hr_err *err);

/* Enqueues a copy of the row. Never blocks on I/O; returns false (and counts
 * a drop) when the queue is full or the log is closing. Thread-safe. */
bool hr_usage_record(hr_usage_db *db, const hr_usage_row *row);

/* Enqueues a copy (never blocks; false + counted when full). Thread-safe.
 * Pairs are written in the same transaction as the rows queued with them. */
bool hr_usage_record_pair(hr_usage_db *db, const hr_pilot_pair *p);

/* Waits until every row recorded before this call has been written (or
 * failed). HR_ERR_IO if a write failed since the last flush. Thread-safe. */
hr_status hr_usage_flush(hr_usage_db *db, hr_err *err);

/* Flushes, stops the writer and closes the database. NULL is a no-op.
 * Returns the flush's status (the handle is freed either way). */
hr_status hr_usage_close(hr_usage_db *db, hr_err *err);

typedef struct {
    uint64_t recorded;  /* accepted into the queue */
    uint64_t written;   /* committed to the database */
    uint64_t dropped;   /* refused because the queue was full */
    uint64_t failed;    /* lost to a write error */
    uint64_t batches;   /* transactions committed */
    uint64_t pairs_recorded, pairs_written, pairs_dropped, pairs_failed;
    uint64_t retries;   /* writes retried after a failure that may heal */
    bool connected;     /* false while writes fail (database unreachable, disk full, read-only, removed) */
    uint64_t write_errors;     /* failed write attempts (each retry counts) */
    uint64_t episodes;         /* times writes started failing */
    int32_t buffered;          /* rows queued now, not yet written */
    int32_t capacity;          /* the queue's size (p.queue_rows) */
    uint64_t unauthenticated;  /* requests refused 401, counted instead of stored (hr_usage_skip_unauthenticated) */
} hr_usage_stats;

void hr_usage_stats_of(hr_usage_db *db, hr_usage_stats *out);

/* Counts a request that gets no row because its client did not
 * authenticate (a 401): anonymous clients must not grow the log. */
void hr_usage_skip_unauthenticated(hr_usage_db *db);

/* The log's counters as Prometheus text, one line at a time, for /metrics:
 * hearth_usage_rows_{recorded,written,dropped,failed}_total,
 * hearth_usage_write_errors_total, hearth_usage_write_retries_total,
 * hearth_usage_write_episodes_total, hearth_usage_rows_buffered,
 * hearth_usage_queue_capacity, hearth_usage_db_up,
 * hearth_usage_unauthenticated_total, hearth_usage_pairs_{dropped,failed}_total.
 * db NULL: nothing. */
void hr_usage_metrics(hr_usage_db *db, void (*put)(void *ctx, const char *line), void *ctx);

/* The stored identifier of an API key: "xxh64:" + 16 hex digits of
 * XXH64(key, seed 0x6865617274682d6b). The key text is never stored.
 * buf needs HR_USAGE_KEY_ID_LEN bytes. NULL or "" gives "". */
#define HR_USAGE_KEY_ID_LEN 24
char *hr_usage_key_id(const char *key, char *buf);

/* ---- reading (reports) ---- */

typedef struct {
    uint64_t requests;
    uint64_t prompt_tokens;
    uint64_t cached_tokens;
    uint64_t completion_tokens;
    uint64_t reasoning_tokens;
    int64_t first_ms, last_end_ms; /* first start, last end (0 if no rows) */
    double busy_s;      /* union of [start, start + duration] intervals, clipped to the range */
    double sum_duration_s;
} hr_usage_totals;

/* Totals over requests starting in [since_ms, until_ms) (until_ms <= 0: no
 * upper bound), optionally only for `model` (NULL = all) and only HTTP
 * status 2xx. Opens the file read-only; a missing file, a file that is not
 * a hearth usage log, or a newer schema is an error. */
hr_status hr_usage_totals_of(const char *target, int64_t since_ms, int64_t until_ms, const char *model,
                             hr_usage_totals *out, hr_err *err);

/* A stored pilot pair as read back (without the answer texts). Times in
 * seconds, < 0 when unknown; scores < 0 when absent. */
typedef struct {
    int64_t ts_ms;
    char request_id[64];
    char route[96];
    char primary_backend[32], primary_model[96];
    char shadow_backend[32], shadow_model[96];
    double primary_ttft_s, primary_total_s, shadow_ttft_s, shadow_total_s;
    int32_t primary_prompt_tokens, primary_completion_tokens;
    int32_t shadow_prompt_tokens, shadow_completion_tokens;
    int32_t primary_status, shadow_status;
    double score_exact, score_f1, score_json, score_judge;
} hr_pilot_pair_rec;

/* The pairs starting in [since_ms, until_ms) (until_ms <= 0: no upper
 * bound), only for `route` when not NULL, ordered by route, then time.
 * *out is malloc'd (free() it); a log older than schema 3 has none. */
hr_status hr_usage_pairs_of(const char *target, int64_t since_ms, int64_t until_ms, const char *route,
                            hr_pilot_pair_rec **out, size_t *n, hr_err *err);

#endif
