/* usage_sqlite.c - the SQLite sink of the usage log: schema migrations
 * (PRAGMA user_version), WAL journal, one transaction per batch; and the
 * read-only totals query used by `hearth cost`. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/usage_impl.h"

typedef struct {
    hr_usage_sink base;
    sqlite3 *db;
    sqlite3_stmt *ins;
    char path[512];
} sqlite_sink;

/* Migration i takes the schema from version i to i + 1. Never edit a
 * shipped step: add a new one and bump HR_USAGE_SCHEMA_VERSION. */
static const char *const migrations[HR_USAGE_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE usage ("
    " id INTEGER PRIMARY KEY,"
    " ts_ms INTEGER NOT NULL,"
    " request_id TEXT NOT NULL DEFAULT '',"
    " key_id TEXT NOT NULL DEFAULT '',"
    " model TEXT NOT NULL DEFAULT '',"
    " backend TEXT NOT NULL DEFAULT '',"
    " prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    " cached_tokens INTEGER NOT NULL DEFAULT 0,"
    " completion_tokens INTEGER NOT NULL DEFAULT 0,"
    " reasoning_tokens INTEGER NOT NULL DEFAULT 0,"
    " ttft_ms REAL,"
    " duration_ms REAL NOT NULL DEFAULT 0,"
    " status INTEGER NOT NULL DEFAULT 0,"
    " finish_reason TEXT NOT NULL DEFAULT '');",
    /* 1 -> 2: streamed flag, time index for reports */
    "ALTER TABLE usage ADD COLUMN stream INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX usage_ts ON usage(ts_ms);",
};

static const char *const insert_sql =
    "INSERT INTO usage (ts_ms, request_id, key_id, model, backend, prompt_tokens, cached_tokens,"
    " completion_tokens, reasoning_tokens, ttft_ms, duration_ms, status, finish_reason, stream)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

static hr_status db_fail(sqlite3 *db, hr_err *err, hr_status st, const char *path, const char *what)
{
    return hr_err_set(err, st, "usage log '%s': %s: %s", path, what, db ? sqlite3_errmsg(db) : "out of memory");
}

static bool exec_ok(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
}

static bool get_int(sqlite3 *db, const char *sql, long long *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return false;
    bool ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return ok;
}

/* Checks that the file is a database and reads its schema version; also
 * whether it holds a `usage` table. */
static hr_status probe(sqlite3 *db, const char *path, long long *version, bool *has_table, hr_err *err)
{
    long long n = 0;
    if (!get_int(db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='usage'", &n))
        return db_fail(db, err, HR_ERR_FORMAT, path, "not a usable SQLite database");
    *has_table = n > 0;
    if (!get_int(db, "PRAGMA user_version", version))
        return db_fail(db, err, HR_ERR_FORMAT, path, "cannot read the schema version");
    if (*version > HR_USAGE_SCHEMA_VERSION)
        return hr_err_set(err, HR_ERR_UNSUPPORTED,
                          "usage log '%s': schema version %lld is newer than this hearth's (%d); upgrade hearth",
                          path, *version, HR_USAGE_SCHEMA_VERSION);
    if (*version < 0)
        return hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': bad schema version %lld", path, *version);
    if (*version == 0 && *has_table)
        return hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': has a 'usage' table that hearth did not create", path);
    if (*version > 0 && !*has_table)
        return hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': schema version %lld but no 'usage' table", path,
                          *version);
    return HR_OK;
}

static hr_status migrate(sqlite3 *db, const char *path, hr_err *err)
{
    if (!exec_ok(db, "BEGIN IMMEDIATE"))
        return db_fail(db, err, HR_ERR_IO, path, "cannot lock the database");
    long long v = 0;
    bool has_table = false;
    hr_status s = probe(db, path, &v, &has_table, err);
    if (s != HR_OK) {
        exec_ok(db, "ROLLBACK");
        return s;
    }
    for (long long i = v; i < HR_USAGE_SCHEMA_VERSION; i++) {
        if (!exec_ok(db, migrations[i])) {
            char what[64];
            snprintf(what, sizeof what, "migration to schema version %lld failed", i + 1);
            s = db_fail(db, err, HR_ERR_FORMAT, path, what);
            exec_ok(db, "ROLLBACK");
            return s;
        }
    }
    if (v < HR_USAGE_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", HR_USAGE_SCHEMA_VERSION);
        if (!exec_ok(db, sql)) {
            s = db_fail(db, err, HR_ERR_IO, path, "cannot set the schema version");
            exec_ok(db, "ROLLBACK");
            return s;
        }
    }
    if (!exec_ok(db, "COMMIT")) {
        s = db_fail(db, err, HR_ERR_IO, path, "cannot commit the schema");
        exec_ok(db, "ROLLBACK");
        return s;
    }
    return HR_OK;
}

static hr_status sink_write(hr_usage_sink *base, const hr_usage_qrow *rows, int32_t n, hr_err *err)
{
    sqlite_sink *s = (sqlite_sink *)base;
    if (!exec_ok(s->db, "BEGIN IMMEDIATE"))
        return db_fail(s->db, err, HR_ERR_IO, s->path, "begin");
    for (int32_t i = 0; i < n; i++) {
        const hr_usage_qrow *r = &rows[i];
        sqlite3_stmt *st = s->ins;
        sqlite3_bind_int64(st, 1, r->ts_ms);
        sqlite3_bind_text(st, 2, r->request_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, r->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, r->model, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, r->backend, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 6, r->prompt_tokens);
        sqlite3_bind_int(st, 7, r->cached_tokens);
        sqlite3_bind_int(st, 8, r->completion_tokens);
        sqlite3_bind_int(st, 9, r->reasoning_tokens);
        if (r->ttft_ms < 0)
            sqlite3_bind_null(st, 10);
        else
            sqlite3_bind_double(st, 10, r->ttft_ms);
        sqlite3_bind_double(st, 11, r->duration_ms);
        sqlite3_bind_int(st, 12, r->status);
        sqlite3_bind_text(st, 13, r->finish_reason, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 14, r->stream ? 1 : 0);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            hr_status e = db_fail(s->db, err, HR_ERR_IO, s->path, "insert");
            exec_ok(s->db, "ROLLBACK");
            return e;
        }
    }
    if (!exec_ok(s->db, "COMMIT")) {
        hr_status e = db_fail(s->db, err, HR_ERR_IO, s->path, "commit");
        exec_ok(s->db, "ROLLBACK");
        return e;
    }
    return HR_OK;
}

static void sink_close(hr_usage_sink *base)
{
    sqlite_sink *s = (sqlite_sink *)base;
    sqlite3_finalize(s->ins);
    sqlite3_close(s->db);
    free(s);
}

hr_status hr_usage_sqlite_open(const char *path, const hr_usage_params *p, hr_usage_sink **out, hr_err *err)
{
    *out = NULL;
    sqlite_sink *s = calloc(1, sizeof *s);
    if (!s)
        return hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory");
    snprintf(s->path, sizeof s->path, "%s", path);
    hr_status st = HR_OK;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
        SQLITE_OK) {
        st = db_fail(s->db, err, HR_ERR_IO, path, "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, p->busy_ms);
    /* WAL: readers (reports) never block the writer; synchronous=NORMAL
     * keeps every committed batch across a process crash (kill -9); only
     * an OS crash or power loss can lose the last commits. */
    {
        long long v = 0;
        bool has_table = false;
        if ((st = probe(s->db, path, &v, &has_table, err)) != HR_OK)
            goto fail;
    }
    {
        sqlite3_stmt *jm;
        if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &jm, NULL) != SQLITE_OK) {
            st = db_fail(s->db, err, HR_ERR_IO, path, "cannot set WAL mode");
            goto fail;
        }
        bool wal = sqlite3_step(jm) == SQLITE_ROW && sqlite3_column_text(jm, 0) &&
                   !strcmp((const char *)sqlite3_column_text(jm, 0), "wal");
        sqlite3_finalize(jm);
        if (!wal) {
            st = db_fail(s->db, err, HR_ERR_IO, path, "cannot set WAL mode");
            goto fail;
        }
    }
    if (!exec_ok(s->db, "PRAGMA synchronous=NORMAL")) {
        st = db_fail(s->db, err, HR_ERR_IO, path, "cannot set synchronous mode");
        goto fail;
    }
    if ((st = migrate(s->db, path, err)) != HR_OK)
        goto fail;
    if (sqlite3_prepare_v2(s->db, insert_sql, -1, &s->ins, NULL) != SQLITE_OK) {
        st = db_fail(s->db, err, HR_ERR_FORMAT, path, "the usage table has an unexpected layout");
        goto fail;
    }
    s->base.write = sink_write;
    s->base.close = sink_close;
    *out = &s->base;
    return HR_OK;
fail:
    sqlite3_finalize(s->ins);
    sqlite3_close(s->db);
    free(s);
    return st;
}

typedef struct {
    double a, b;
} interval;

static int cmp_interval(const void *x, const void *y)
{
    const interval *p = x, *q = y;
    return (p->a > q->a) - (p->a < q->a);
}

hr_status hr_usage_sqlite_totals(const char *path, int64_t since_ms, int64_t until_ms, const char *model,
                                 hr_usage_totals *out, hr_err *err)
{
    memset(out, 0, sizeof *out);
    sqlite3 *db = NULL;
    hr_status st = HR_OK;
    sqlite3_stmt *q = NULL;
    interval *iv = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        st = db_fail(db, err, HR_ERR_IO, path, "cannot open");
        goto done;
    }
    sqlite3_busy_timeout(db, 5000);
    long long v = 0;
    bool has_table = false;
    if ((st = probe(db, path, &v, &has_table, err)) != HR_OK)
        goto done;
    if (v == 0) {
        st = hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': not a hearth usage log (no schema)", path);
        goto done;
    }
    const char *sql = "SELECT ts_ms, duration_ms, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens"
                      " FROM usage WHERE ts_ms >= ?1 AND (?2 <= 0 OR ts_ms < ?2)"
                      " AND (?3 IS NULL OR model = ?3) AND status BETWEEN 200 AND 299 ORDER BY ts_ms";
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        st = db_fail(db, err, HR_ERR_FORMAT, path, "the usage table has an unexpected layout");
        goto done;
    }
    sqlite3_bind_int64(q, 1, since_ms);
    sqlite3_bind_int64(q, 2, until_ms);
    if (model)
        sqlite3_bind_text(q, 3, model, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(q, 3);
    size_t cap = 0, n = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int64_t ts = sqlite3_column_int64(q, 0);
        double dur = sqlite3_column_double(q, 1);
        int64_t pt = sqlite3_column_int64(q, 2), ct = sqlite3_column_int64(q, 3);
        int64_t co = sqlite3_column_int64(q, 4), re = sqlite3_column_int64(q, 5);
        if (!(dur >= 0) || !isfinite(dur) || dur > 1e12 || pt < 0 || ct < 0 || co < 0 || re < 0) {
            st = hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': row at ts_ms %lld has invalid counts", path,
                            (long long)ts);
            goto done;
        }
        out->requests++;
        out->prompt_tokens += (uint64_t)pt;
        out->cached_tokens += (uint64_t)ct;
        out->completion_tokens += (uint64_t)co;
        out->reasoning_tokens += (uint64_t)re;
        out->sum_duration_s += dur / 1000.0;
        int64_t end = ts + (int64_t)llround(dur);
        if (out->requests == 1 || ts < out->first_ms)
            out->first_ms = ts;
        if (end > out->last_end_ms)
            out->last_end_ms = end;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 1024;
            interval *t = realloc(iv, nc * sizeof *t);
            if (!t) {
                st = hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory");
                goto done;
            }
            iv = t;
            cap = nc;
        }
        iv[n].a = (double)ts;
        iv[n].b = (double)ts + dur;
        if (until_ms > 0 && iv[n].b > (double)until_ms)
            iv[n].b = (double)until_ms;
        n++;
    }
    if (rc != SQLITE_DONE) {
        st = db_fail(db, err, HR_ERR_IO, path, "query");
        goto done;
    }
    /* busy time: the union of request intervals */
    if (n) {
        qsort(iv, n, sizeof *iv, cmp_interval);
        double busy = 0, a = iv[0].a, b = iv[0].b;
        for (size_t i = 1; i < n; i++) {
            if (iv[i].a > b) {
                busy += b - a;
                a = iv[i].a;
                b = iv[i].b;
            } else if (iv[i].b > b)
                b = iv[i].b;
        }
        busy += b - a;
        out->busy_s = busy / 1000.0;
    }
done:
    free(iv);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return st;
}
