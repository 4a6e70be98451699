/* usage_sqlite.c - the SQLite sink of the usage log: schema migrations
 * (PRAGMA user_version), WAL journal, one transaction per batch; and the
 * read-only queries behind `hearth cost` and `hearth pilot report`. */
#include <errno.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/usage_impl.h"

typedef struct {
    hr_usage_sink base;
    sqlite3 *db; /* NULL after a failed write: reopened before the next */
    sqlite3_stmt *ins, *ins_pair;
    int busy_ms;
    dev_t dev;   /* the file opened, to notice it removed or replaced */
    ino_t ino;
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
    /* 2 -> 3: estimated token counts; pilot pairs (issue 8) */
    "ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE pilot_pairs ("
    " id INTEGER PRIMARY KEY,"
    " ts_ms INTEGER NOT NULL,"
    " request_id TEXT NOT NULL DEFAULT '',"
    " route TEXT NOT NULL DEFAULT '',"
    " key_id TEXT NOT NULL DEFAULT '',"
    " primary_backend TEXT NOT NULL DEFAULT '',"
    " primary_model TEXT NOT NULL DEFAULT '',"
    " shadow_backend TEXT NOT NULL DEFAULT '',"
    " shadow_model TEXT NOT NULL DEFAULT '',"
    " primary_text TEXT NOT NULL DEFAULT '',"
    " shadow_text TEXT NOT NULL DEFAULT '',"
    " primary_ttft_ms REAL, primary_total_ms REAL, shadow_ttft_ms REAL, shadow_total_ms REAL,"
    " primary_prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    " primary_completion_tokens INTEGER NOT NULL DEFAULT 0,"
    " shadow_prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    " shadow_completion_tokens INTEGER NOT NULL DEFAULT 0,"
    " primary_status INTEGER NOT NULL DEFAULT 0,"
    " shadow_status INTEGER NOT NULL DEFAULT 0,"
    " score_exact REAL NOT NULL DEFAULT 0,"
    " score_f1 REAL NOT NULL DEFAULT 0,"
    " score_json REAL,"
    " score_judge REAL);"
    "CREATE INDEX pilot_pairs_route_ts ON pilot_pairs(route, ts_ms);",
};

static const char *const insert_sql =
    "INSERT INTO usage (ts_ms, request_id, key_id, model, backend, prompt_tokens, cached_tokens,"
    " completion_tokens, reasoning_tokens, ttft_ms, duration_ms, status, finish_reason, stream, estimated)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

static const char *const insert_pair_sql =
    "INSERT INTO pilot_pairs (" HR_PAIR_COLUMNS ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";

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

static void bind_opt(sqlite3_stmt *st, int k, double v)
{
    if (v < 0)
        sqlite3_bind_null(st, k);
    else
        sqlite3_bind_double(st, k, v);
}

static void close_handle(sqlite_sink *s)
{
    sqlite3_finalize(s->ins);
    sqlite3_finalize(s->ins_pair);
    sqlite3_close(s->db);
    s->ins = s->ins_pair = NULL;
    s->db = NULL;
}

static hr_status open_handle(sqlite_sink *s, hr_err *err);

/* A failed write: the message, whether waiting may help, and the handle
 * closed so that the next try reopens the file (after ENOSPC, EROFS or a
 * removed directory a fresh handle is the reliable way back). Only errors
 * of the rows themselves (constraints, types) are hopeless. */
static hr_status write_error(sqlite_sink *s, hr_err *err, bool *retry, const char *what)
{
    int rc = sqlite3_extended_errcode(s->db);
    hr_status e = db_fail(s->db, err, HR_ERR_IO, s->path, what);
    int prim = rc & 0xff;
    *retry = !(prim == SQLITE_CONSTRAINT || prim == SQLITE_MISMATCH || prim == SQLITE_TOOBIG ||
               prim == SQLITE_RANGE);
    if (*retry)
        close_handle(s);
    else
        exec_ok(s->db, "ROLLBACK");
    return e;
}

static hr_status sink_write(hr_usage_sink *base, const hr_usage_qrow *rows, int32_t n, hr_usage_qpair *const *pairs,
                            int32_t np, bool *retry, hr_err *err)
{
    sqlite_sink *s = (sqlite_sink *)base;
    *retry = true; /* full disk, read-only, vanished file: may heal; see write_error() */
    struct stat st0;
    if (s->db && (stat(s->path, &st0) || st0.st_dev != s->dev || st0.st_ino != s->ino)) {
        /* removed or replaced under us: writing on would fill a file no one can read */
        close_handle(s);
    }
    if (!s->db) {
        hr_status o = open_handle(s, err);
        if (o != HR_OK)
            return o;
    }
    if (!exec_ok(s->db, "BEGIN IMMEDIATE"))
        return write_error(s, err, retry, "begin");
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
        sqlite3_bind_int(st, 15, r->estimated ? 1 : 0);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return write_error(s, err, retry, "insert");
    }
    for (int32_t i = 0; i < np; i++) {
        const hr_usage_qpair *q = pairs[i];
        sqlite3_stmt *st = s->ins_pair;
        int k = 1;
        sqlite3_bind_int64(st, k++, q->ts_ms);
        sqlite3_bind_text(st, k++, q->request_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, k++, q->route, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, k++, q->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, k++, q->primary_backend, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, k++, q->primary_model, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, k++, q->shadow_backend, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, k++, q->shadow_model, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, k++, q->primary_text, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, k++, q->shadow_text, -1, SQLITE_STATIC);
        const double opt[4] = {q->primary_ttft_ms, q->primary_total_ms, q->shadow_ttft_ms, q->shadow_total_ms};
        for (int j = 0; j < 4; j++)
            bind_opt(st, k++, opt[j]);
        sqlite3_bind_int(st, k++, q->primary_prompt_tokens);
        sqlite3_bind_int(st, k++, q->primary_completion_tokens);
        sqlite3_bind_int(st, k++, q->shadow_prompt_tokens);
        sqlite3_bind_int(st, k++, q->shadow_completion_tokens);
        sqlite3_bind_int(st, k++, q->primary_status);
        sqlite3_bind_int(st, k++, q->shadow_status);
        sqlite3_bind_double(st, k++, q->score_exact);
        sqlite3_bind_double(st, k++, q->score_f1);
        bind_opt(st, k++, q->score_json);
        bind_opt(st, k++, q->score_judge);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return write_error(s, err, retry, "insert pair");
    }
    if (!exec_ok(s->db, "COMMIT"))
        return write_error(s, err, retry, "commit");
    return HR_OK;
}

static void sink_close(hr_usage_sink *base)
{
    sqlite_sink *s = (sqlite_sink *)base;
    close_handle(s);
    free(s);
}

/* Opens s->path for writing: WAL, schema migrated, statements prepared,
 * the file's identity noted. On failure nothing stays open. */
static hr_status open_handle(sqlite_sink *s, hr_err *err)
{
    const char *path = s->path;
    hr_status st = HR_OK;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL) !=
        SQLITE_OK) {
        st = db_fail(s->db, err, HR_ERR_IO, path, "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, s->busy_ms);
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
    if (sqlite3_prepare_v2(s->db, insert_pair_sql, -1, &s->ins_pair, NULL) != SQLITE_OK) {
        st = db_fail(s->db, err, HR_ERR_FORMAT, path, "the pilot_pairs table has an unexpected layout");
        goto fail;
    }
    struct stat fs;
    if (stat(path, &fs)) {
        st = hr_err_set(err, HR_ERR_IO, "usage log '%s': %s", path, strerror(errno));
        goto fail;
    }
    s->dev = fs.st_dev;
    s->ino = fs.st_ino;
    return HR_OK;
fail:
    close_handle(s);
    return st;
}

hr_status hr_usage_sqlite_open(const char *path, const hr_usage_params *p, hr_usage_sink **out, hr_err *err)
{
    *out = NULL;
    sqlite_sink *s = calloc(1, sizeof *s);
    if (!s)
        return hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory");
    if (strlen(path) >= sizeof s->path) {
        free(s);
        return hr_err_set(err, HR_ERR_INVALID, "usage log: path too long");
    }
    snprintf(s->path, sizeof s->path, "%s", path);
    s->busy_ms = p->busy_ms;
    hr_status st = open_handle(s, err);
    if (st != HR_OK) {
        free(s);
        return st;
    }
    s->base.write = sink_write;
    s->base.close = sink_close;
    *out = &s->base;
    return HR_OK;
}

/* Opens the file read-only and checks it is a hearth usage log; *version
 * is its schema version. */
static hr_status open_reader(const char *path, sqlite3 **out, long long *version, hr_err *err)
{
    *out = NULL;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        hr_status st = db_fail(db, err, HR_ERR_IO, path, "cannot open");
        sqlite3_close(db);
        return st;
    }
    sqlite3_busy_timeout(db, 5000);
    bool has_table = false;
    hr_status st = probe(db, path, version, &has_table, err);
    if (st == HR_OK && *version == 0)
        st = hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': not a hearth usage log (no schema)", path);
    if (st != HR_OK) {
        sqlite3_close(db);
        return st;
    }
    *out = db;
    return HR_OK;
}

hr_status hr_usage_sqlite_totals(const char *path, int64_t since_ms, int64_t until_ms, const char *model,
                                 hr_usage_totals *out, hr_err *err)
{
    hr_usage_acc acc;
    hr_usage_acc_init(&acc, out, until_ms);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    long long v = 0;
    hr_status st = open_reader(path, &db, &v, err);
    if (st != HR_OK)
        return st;
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
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        double dur = sqlite3_column_double(q, 1);
        if (!isfinite(dur))
            dur = -1;
        st = hr_usage_acc_add(&acc, path, sqlite3_column_int64(q, 0), dur, sqlite3_column_int64(q, 2),
                              sqlite3_column_int64(q, 3), sqlite3_column_int64(q, 4), sqlite3_column_int64(q, 5),
                              err);
        if (st != HR_OK)
            goto done;
    }
    if (rc != SQLITE_DONE)
        st = db_fail(db, err, HR_ERR_IO, path, "query");
done:
    hr_usage_acc_finish(&acc);
    if (st != HR_OK)
        memset(out, 0, sizeof *out);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return st;
}

static double col_opt(sqlite3_stmt *q, int i, double scale)
{
    return sqlite3_column_type(q, i) == SQLITE_NULL ? -1.0 : sqlite3_column_double(q, i) * scale;
}

static void col_str(sqlite3_stmt *q, int i, char *dst, size_t cap)
{
    hr_usage_copy_str(dst, cap, (const char *)sqlite3_column_text(q, i));
}

hr_status hr_usage_sqlite_pairs(const char *path, int64_t since_ms, int64_t until_ms, const char *route,
                                hr_pilot_pair_rec **out, size_t *n, hr_err *err)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    long long v = 0;
    hr_status st = open_reader(path, &db, &v, err);
    if (st != HR_OK)
        return st;
    if (v < 3) { /* before pilot pairs existed */
        sqlite3_close(db);
        return HR_OK;
    }
    const char *sql = "SELECT " HR_PAIR_READ_COLUMNS " FROM pilot_pairs WHERE ts_ms >= ?1 AND (?2 <= 0 OR ts_ms < ?2)"
                      " AND (?3 IS NULL OR route = ?3) ORDER BY route, ts_ms, id";
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) {
        st = db_fail(db, err, HR_ERR_FORMAT, path, "the pilot_pairs table has an unexpected layout");
        goto done;
    }
    sqlite3_bind_int64(q, 1, since_ms);
    sqlite3_bind_int64(q, 2, until_ms);
    if (route)
        sqlite3_bind_text(q, 3, route, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(q, 3);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        hr_pilot_pair_rec r;
        memset(&r, 0, sizeof r);
        int k = 0;
        r.ts_ms = sqlite3_column_int64(q, k++);
        col_str(q, k++, r.request_id, sizeof r.request_id);
        col_str(q, k++, r.route, sizeof r.route);
        col_str(q, k++, r.primary_backend, sizeof r.primary_backend);
        col_str(q, k++, r.primary_model, sizeof r.primary_model);
        col_str(q, k++, r.shadow_backend, sizeof r.shadow_backend);
        col_str(q, k++, r.shadow_model, sizeof r.shadow_model);
        r.primary_ttft_s = col_opt(q, k++, 1e-3);
        r.primary_total_s = col_opt(q, k++, 1e-3);
        r.shadow_ttft_s = col_opt(q, k++, 1e-3);
        r.shadow_total_s = col_opt(q, k++, 1e-3);
        r.primary_prompt_tokens = sqlite3_column_int(q, k++);
        r.primary_completion_tokens = sqlite3_column_int(q, k++);
        r.shadow_prompt_tokens = sqlite3_column_int(q, k++);
        r.shadow_completion_tokens = sqlite3_column_int(q, k++);
        r.primary_status = sqlite3_column_int(q, k++);
        r.shadow_status = sqlite3_column_int(q, k++);
        r.score_exact = col_opt(q, k++, 1);
        r.score_f1 = col_opt(q, k++, 1);
        r.score_json = col_opt(q, k++, 1);
        r.score_judge = col_opt(q, k++, 1);
        if ((st = hr_usage_pairs_push(out, n, &cap, &r, err)) != HR_OK)
            goto done;
    }
    if (rc != SQLITE_DONE)
        st = db_fail(db, err, HR_ERR_IO, path, "query");
done:
    sqlite3_finalize(q);
    sqlite3_close(db);
    return st;
}
