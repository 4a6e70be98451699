/* usage_pg.c - the PostgreSQL sink of the usage log (libpq), so that many
 * hearth replicas behind a load balancer share one log; and the read side
 * of `hearth cost` / `hearth pilot report` for such a log.
 *
 * - Schema version in a table hearth_meta(key, value), key
 *   'schema_version'; migrations run at open inside one transaction under
 *   an advisory lock, so replicas starting together migrate once.
 * - One transaction per batch: COPY ... FROM STDIN for the rows and for the
 *   pairs, then COMMIT.
 * - The connection is checked at open (a bad URL or an unreachable server
 *   is an error then). Later, a lost connection makes the batch fail with
 *   *retry set: the writer keeps the rows queued and calls again; each call
 *   first reconnects (connect_timeout 5 s unless the URL says otherwise).
 *   A commit whose acknowledgement is lost with the connection may be
 *   written twice on retry (at-least-once, never silently dropped). */
#include <libpq-fe.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/usage_impl.h"

typedef struct {
    hr_usage_sink base;
    PGconn *conn;
    char url[1024];
    char shown[1024]; /* the URL without its password, for messages */
} pg_sink;

/* Migration i takes the schema from version i to i + 1 (the same versions
 * as the SQLite sink). Never edit a shipped step. */
static const char *const migrations[HR_USAGE_SCHEMA_VERSION] = {
    /* 0 -> 1 */
    "CREATE TABLE usage ("
    " id BIGSERIAL PRIMARY KEY,"
    " ts_ms BIGINT NOT NULL,"
    " request_id TEXT NOT NULL DEFAULT '',"
    " key_id TEXT NOT NULL DEFAULT '',"
    " model TEXT NOT NULL DEFAULT '',"
    " backend TEXT NOT NULL DEFAULT '',"
    " prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    " cached_tokens INTEGER NOT NULL DEFAULT 0,"
    " completion_tokens INTEGER NOT NULL DEFAULT 0,"
    " reasoning_tokens INTEGER NOT NULL DEFAULT 0,"
    " ttft_ms DOUBLE PRECISION,"
    " duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " status INTEGER NOT NULL DEFAULT 0,"
    " finish_reason TEXT NOT NULL DEFAULT '');",
    /* 1 -> 2 */
    "ALTER TABLE usage ADD COLUMN stream INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX usage_ts ON usage(ts_ms);",
    /* 2 -> 3 */
    "ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE pilot_pairs ("
    " id BIGSERIAL PRIMARY KEY,"
    " ts_ms BIGINT NOT NULL,"
    " request_id TEXT NOT NULL DEFAULT '',"
    " route TEXT NOT NULL DEFAULT '',"
    " key_id TEXT NOT NULL DEFAULT '',"
    " primary_backend TEXT NOT NULL DEFAULT '',"
    " primary_model TEXT NOT NULL DEFAULT '',"
    " shadow_backend TEXT NOT NULL DEFAULT '',"
    " shadow_model TEXT NOT NULL DEFAULT '',"
    " primary_text TEXT NOT NULL DEFAULT '',"
    " shadow_text TEXT NOT NULL DEFAULT '',"
    " primary_ttft_ms DOUBLE PRECISION, primary_total_ms DOUBLE PRECISION,"
    " shadow_ttft_ms DOUBLE PRECISION, shadow_total_ms DOUBLE PRECISION,"
    " primary_prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    " primary_completion_tokens INTEGER NOT NULL DEFAULT 0,"
    " shadow_prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    " shadow_completion_tokens INTEGER NOT NULL DEFAULT 0,"
    " primary_status INTEGER NOT NULL DEFAULT 0,"
    " shadow_status INTEGER NOT NULL DEFAULT 0,"
    " score_exact DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " score_f1 DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " score_json DOUBLE PRECISION,"
    " score_judge DOUBLE PRECISION);"
    "CREATE INDEX pilot_pairs_route_ts ON pilot_pairs(route, ts_ms);",
};

static const char *const copy_usage_sql =
    "COPY usage (ts_ms, request_id, key_id, model, backend, prompt_tokens, cached_tokens, completion_tokens,"
    " reasoning_tokens, ttft_ms, duration_ms, status, finish_reason, stream, estimated) FROM STDIN";
static const char *const copy_pairs_sql = "COPY pilot_pairs (" HR_PAIR_COLUMNS ") FROM STDIN";

/* any number; the same for every hearth, so replicas serialise migrations */
#define MIGRATE_LOCK "7165735184"

static void quiet_notices(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

/* libpq's message on one line, without the trailing newline. */
static const char *one_line(const char *msg, char *buf, size_t cap)
{
    size_t j = 0;
    bool space = false;
    for (const char *p = msg ? msg : ""; *p && j + 1 < cap; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            space = j > 0;
            continue;
        }
        if (space) {
            buf[j++] = ' ';
            space = false;
            if (j + 1 >= cap)
                break;
        }
        buf[j++] = *p;
    }
    buf[j] = 0;
    return buf;
}

static hr_status pg_fail(hr_err *err, hr_status st, const char *shown, const char *what, PGconn *c,
                         const PGresult *r)
{
    char line[HR_ERR_MSG_MAX];
    const char *m = r && PQresultErrorMessage(r)[0] ? PQresultErrorMessage(r) : c ? PQerrorMessage(c) : "out of memory";
    return hr_err_set(err, st, "usage log '%s': %s: %s", shown, what, one_line(m, line, sizeof line));
}

/* Connects; defaults (timeouts, keepalives) first so that the URL's own
 * settings win. */
static PGconn *connect_url(const char *url)
{
    const char *keys[] = {"connect_timeout", "application_name", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname", NULL};
    const char *vals[] = {"5", "hearth", "1", "10", "5", "3", "15000", url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c)
        PQsetNoticeProcessor(c, quiet_notices, NULL);
    if (c && PQstatus(c) == CONNECTION_OK) {
        PQsetClientEncoding(c, "UTF8");
        PGresult *r = PQexec(c, "SET statement_timeout = '60s'");
        PQclear(r);
    }
    return c;
}

static hr_status open_conn(const char *url, const char *shown, PGconn **out, hr_err *err)
{
    *out = NULL;
    PGconn *c = connect_url(url);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        hr_status st = pg_fail(err, HR_ERR_IO, shown, "cannot connect", c, NULL);
        PQfinish(c);
        return st;
    }
    *out = c;
    return HR_OK;
}

static bool exec_ok(PGconn *c, const char *sql, PGresult **keep)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType t = PQresultStatus(r);
    bool ok = t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK;
    if (keep)
        *keep = r;
    else
        PQclear(r);
    return ok;
}

/* The stored schema version (0 when hearth_meta is absent), checked
 * against the tables present. `usage` and `hearth_meta` are looked up in
 * the connection's search_path. */
static hr_status probe(PGconn *c, const char *shown, long long *version, hr_err *err)
{
    *version = 0;
    PGresult *r = NULL;
    if (!exec_ok(c, "SELECT to_regclass('hearth_meta') IS NOT NULL, to_regclass('usage') IS NOT NULL", &r)) {
        hr_status st = pg_fail(err, HR_ERR_IO, shown, "cannot read the schema", c, r);
        PQclear(r);
        return st;
    }
    bool has_meta = PQgetvalue(r, 0, 0)[0] == 't', has_usage = PQgetvalue(r, 0, 1)[0] == 't';
    PQclear(r);
    if (has_meta) {
        if (!exec_ok(c, "SELECT value FROM hearth_meta WHERE key = 'schema_version'", &r)) {
            hr_status st = pg_fail(err, HR_ERR_FORMAT, shown, "hearth_meta has an unexpected layout", c, r);
            PQclear(r);
            return st;
        }
        if (PQntuples(r) > 0) {
            char *end = NULL;
            *version = strtoll(PQgetvalue(r, 0, 0), &end, 10);
            if (!end || *end || end == PQgetvalue(r, 0, 0))
                *version = -1;
        }
        PQclear(r);
    }
    if (*version > HR_USAGE_SCHEMA_VERSION)
        return hr_err_set(err, HR_ERR_UNSUPPORTED,
                          "usage log '%s': schema version %lld is newer than this hearth's (%d); upgrade hearth",
                          shown, *version, HR_USAGE_SCHEMA_VERSION);
    if (*version < 0)
        return hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': bad schema version in hearth_meta", shown);
    if (*version == 0 && has_usage)
        return hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': has a 'usage' table that hearth did not create",
                          shown);
    if (*version > 0 && !has_usage)
        return hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': schema version %lld but no 'usage' table", shown,
                          *version);
    return HR_OK;
}

static hr_status migrate(PGconn *c, const char *shown, hr_err *err)
{
    PGresult *r = NULL;
    if (!exec_ok(c, "BEGIN", &r) || (PQclear(r), !exec_ok(c, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ")", &r))) {
        hr_status st = pg_fail(err, HR_ERR_IO, shown, "cannot lock the schema", c, r);
        PQclear(r);
        exec_ok(c, "ROLLBACK", NULL);
        return st;
    }
    PQclear(r);
    long long v = 0;
    hr_status st = probe(c, shown, &v, err);
    if (st != HR_OK) {
        exec_ok(c, "ROLLBACK", NULL);
        return st;
    }
    if (v == 0 && !exec_ok(c, "CREATE TABLE IF NOT EXISTS hearth_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)", &r)) {
        st = pg_fail(err, HR_ERR_IO, shown, "cannot create hearth_meta", c, r);
        PQclear(r);
        exec_ok(c, "ROLLBACK", NULL);
        return st;
    }
    if (v == 0)
        PQclear(r);
    for (long long i = v; i < HR_USAGE_SCHEMA_VERSION; i++) {
        if (!exec_ok(c, migrations[i], &r)) {
            char what[64];
            snprintf(what, sizeof what, "migration to schema version %lld failed", i + 1);
            st = pg_fail(err, HR_ERR_FORMAT, shown, what, c, r);
            PQclear(r);
            exec_ok(c, "ROLLBACK", NULL);
            return st;
        }
        PQclear(r);
    }
    if (v < HR_USAGE_SCHEMA_VERSION) {
        char sql[160];
        snprintf(sql, sizeof sql,
                 "INSERT INTO hearth_meta (key, value) VALUES ('schema_version', '%d')"
                 " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                 HR_USAGE_SCHEMA_VERSION);
        if (!exec_ok(c, sql, &r)) {
            st = pg_fail(err, HR_ERR_IO, shown, "cannot set the schema version", c, r);
            PQclear(r);
            exec_ok(c, "ROLLBACK", NULL);
            return st;
        }
        PQclear(r);
    }
    if (!exec_ok(c, "COMMIT", &r)) {
        st = pg_fail(err, HR_ERR_IO, shown, "cannot commit the schema", c, r);
        PQclear(r);
        exec_ok(c, "ROLLBACK", NULL);
        return st;
    }
    PQclear(r);
    return HR_OK;
}

/* ---- COPY text format ---- */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 65536;
        while (b->n + n + 1 > nc)
            nc *= 2;
        char *t = realloc(b->p, nc);
        if (!t) {
            b->oom = true;
            return;
        }
        b->p = t;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void putf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(buf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Length of a valid UTF-8 sequence at s (1-4), or 0 if invalid. */
static int utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F)) /* overlong, surrogates */
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if ((s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] > 0x8F))
            return 0;
        return 4;
    }
    return 0;
}

/* A text field: COPY escapes; bytes that are not UTF-8 become U+FFFD (the
 * server would refuse the whole batch otherwise). */
static void put_text(buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int l = utf8_len(p);
        if (l == 0) {
            put(b, "\xEF\xBF\xBD", 3);
            p++;
        } else if (l > 1) {
            put(b, (const char *)p, (size_t)l);
            p += l;
        } else {
            switch (*p) {
            case '\\': put(b, "\\\\", 2); break;
            case '\n': put(b, "\\n", 2); break;
            case '\r': put(b, "\\r", 2); break;
            case '\t': put(b, "\\t", 2); break;
            default: put(b, (const char *)p, 1);
            }
            p++;
        }
    }
}

static void put_opt(buf *b, double v)
{
    if (v < 0 || !isfinite(v))
        put(b, "\\N", 2);
    else
        putf(b, "%.17g", v);
}

static void tab(buf *b)
{
    put(b, "\t", 1);
}

static void row_line(buf *b, const hr_usage_qrow *r)
{
    putf(b, "%lld\t", (long long)r->ts_ms);
    put_text(b, r->request_id), tab(b);
    put_text(b, r->key_id), tab(b);
    put_text(b, r->model), tab(b);
    put_text(b, r->backend), tab(b);
    putf(b, "%d\t%d\t%d\t%d\t", r->prompt_tokens, r->cached_tokens, r->completion_tokens, r->reasoning_tokens);
    put_opt(b, r->ttft_ms), tab(b);
    putf(b, "%.17g\t%d\t", isfinite(r->duration_ms) ? r->duration_ms : 0.0, r->status);
    put_text(b, r->finish_reason);
    putf(b, "\t%d\t%d\n", r->stream ? 1 : 0, r->estimated ? 1 : 0);
}

static void pair_line(buf *b, const hr_usage_qpair *q)
{
    putf(b, "%lld\t", (long long)q->ts_ms);
    const char *strs[] = {q->request_id,    q->route,        q->key_id,       q->primary_backend, q->primary_model,
                          q->shadow_backend, q->shadow_model, q->primary_text, q->shadow_text};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        put_text(b, strs[i]), tab(b);
    const double t[4] = {q->primary_ttft_ms, q->primary_total_ms, q->shadow_ttft_ms, q->shadow_total_ms};
    for (int i = 0; i < 4; i++)
        put_opt(b, t[i]), tab(b);
    putf(b, "%d\t%d\t%d\t%d\t%d\t%d\t", q->primary_prompt_tokens, q->primary_completion_tokens,
         q->shadow_prompt_tokens, q->shadow_completion_tokens, q->primary_status, q->shadow_status);
    putf(b, "%.17g\t%.17g\t", q->score_exact, q->score_f1);
    put_opt(b, q->score_json), tab(b);
    put_opt(b, q->score_judge);
    put(b, "\n", 1);
}

/* Runs one COPY ... FROM STDIN with the buffered data. */
static bool copy_in(PGconn *c, const char *sql, const buf *data, PGresult **fail)
{
    *fail = NULL;
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        *fail = r;
        return false;
    }
    PQclear(r);
    bool sent = true;
    for (size_t off = 0; off < data->n && sent;) {
        size_t k = data->n - off > (1u << 20) ? (1u << 20) : data->n - off;
        sent = PQputCopyData(c, data->p + off, (int)k) == 1;
        off += k;
    }
    if (PQputCopyEnd(c, sent ? NULL : "hearth: send failed") != 1)
        sent = false;
    bool ok = sent;
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            ok = false;
            if (!*fail) {
                *fail = r;
                continue;
            }
        }
        PQclear(r);
    }
    return ok;
}

/* Errors the same batch may get past later (SQLSTATE classes): 08
 * connection, 40 serialization / deadlock, 53 insufficient resources (disk
 * full, out of memory, too many connections), 57 operator intervention
 * (shutdown), 58 system error (I/O), 25006 read-only transaction (a
 * standby, default_transaction_read_only). */
static bool transient(const PGresult *r)
{
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!code || strlen(code) != 5)
        return false;
    return !strncmp(code, "08", 2) || !strncmp(code, "40", 2) || !strncmp(code, "53", 2) ||
           !strncmp(code, "57", 2) || !strncmp(code, "58", 2) || !strcmp(code, "25006");
}

static hr_status sink_write(hr_usage_sink *base, const hr_usage_qrow *rows, int32_t n, hr_usage_qpair *const *pairs,
                            int32_t np, bool *retry, hr_err *err)
{
    pg_sink *s = (pg_sink *)base;
    *retry = false;
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
        PQfinish(s->conn);
        s->conn = connect_url(s->url);
        if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
            *retry = true;
            return pg_fail(err, HR_ERR_IO, s->shown, "cannot reconnect", s->conn, NULL);
        }
    }
    buf ub = {0}, pb = {0};
    for (int32_t i = 0; i < n; i++)
        row_line(&ub, &rows[i]);
    for (int32_t i = 0; i < np; i++)
        pair_line(&pb, pairs[i]);
    hr_status st = HR_OK;
    PGresult *r = NULL;
    if (ub.oom || pb.oom) {
        st = hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory for a batch");
        *retry = true; /* the memory may come back; the rows stay queued */
        goto out;
    }
    if (!exec_ok(s->conn, "BEGIN", &r)) {
        st = pg_fail(err, HR_ERR_IO, s->shown, "begin", s->conn, r);
        goto fail;
    }
    PQclear(r);
    r = NULL;
    if (n > 0 && !copy_in(s->conn, copy_usage_sql, &ub, &r)) {
        st = pg_fail(err, HR_ERR_IO, s->shown, "insert", s->conn, r);
        goto fail;
    }
    if (np > 0 && !copy_in(s->conn, copy_pairs_sql, &pb, &r)) {
        st = pg_fail(err, HR_ERR_IO, s->shown, "insert pairs", s->conn, r);
        goto fail;
    }
    if (!exec_ok(s->conn, "COMMIT", &r)) {
        st = pg_fail(err, HR_ERR_IO, s->shown, "commit", s->conn, r);
        goto fail;
    }
    PQclear(r);
    goto out;
fail:
    if (PQstatus(s->conn) != CONNECTION_OK || transient(r))
        *retry = true; /* lost the server, or it is full / read-only / shutting down: try again later */
    PQclear(r);
    if (PQstatus(s->conn) == CONNECTION_OK)
        exec_ok(s->conn, "ROLLBACK", NULL);
out:
    free(ub.p);
    free(pb.p);
    return st;
}

static void sink_close(hr_usage_sink *base)
{
    pg_sink *s = (pg_sink *)base;
    PQfinish(s->conn);
    free(s);
}

hr_status hr_usage_pg_open(const char *url, const hr_usage_params *p, hr_usage_sink **out, hr_err *err)
{
    (void)p;
    *out = NULL;
    pg_sink *s = calloc(1, sizeof *s);
    if (!s)
        return hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory");
    if (strlen(url) >= sizeof s->url) {
        free(s);
        return hr_err_set(err, HR_ERR_INVALID, "usage log: database URL too long");
    }
    snprintf(s->url, sizeof s->url, "%s", url);
    hr_usage_redact(url, s->shown, sizeof s->shown);
    hr_status st = open_conn(s->url, s->shown, &s->conn, err);
    if (st == HR_OK)
        st = migrate(s->conn, s->shown, err);
    if (st != HR_OK) {
        PQfinish(s->conn);
        free(s);
        return st;
    }
    s->base.write = sink_write;
    s->base.close = sink_close;
    *out = &s->base;
    return HR_OK;
}

/* ---- readers ---- */

static hr_status open_reader(const char *url, char *shown, size_t cap, PGconn **out, long long *version, hr_err *err)
{
    hr_usage_redact(url, shown, cap);
    hr_status st = open_conn(url, shown, out, err);
    if (st != HR_OK)
        return st;
    st = probe(*out, shown, version, err);
    if (st == HR_OK && *version == 0)
        st = hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': not a hearth usage log (no schema)", shown);
    if (st != HR_OK) {
        PQfinish(*out);
        *out = NULL;
    }
    return st;
}

/* Sends a query and switches to one row per result (large logs are never
 * held in memory twice). */
static hr_status send_rows(PGconn *c, const char *shown, const char *sql, int np, const char *const *params,
                           hr_err *err)
{
    if (!PQsendQueryParams(c, sql, np, NULL, params, NULL, NULL, 0) || !PQsetSingleRowMode(c))
        return pg_fail(err, HR_ERR_IO, shown, "query", c, NULL);
    return HR_OK;
}

/* Drains what is left of a query after an early stop. */
static void drain(PGconn *c)
{
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL)
        PQclear(r);
}

static double num(const PGresult *r, int col, double unknown)
{
    if (PQgetisnull(r, 0, col))
        return unknown;
    return strtod(PQgetvalue(r, 0, col), NULL);
}

static long long inum(const PGresult *r, int col)
{
    return PQgetisnull(r, 0, col) ? 0 : strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

hr_status hr_usage_pg_totals(const char *url, int64_t since_ms, int64_t until_ms, const char *model,
                             hr_usage_totals *out, hr_err *err)
{
    hr_usage_acc acc;
    hr_usage_acc_init(&acc, out, until_ms);
    char shown[1024];
    PGconn *c = NULL;
    long long v = 0;
    hr_status st = open_reader(url, shown, sizeof shown, &c, &v, err);
    if (st != HR_OK)
        return st;
    char a[32], b[32];
    snprintf(a, sizeof a, "%lld", (long long)since_ms);
    snprintf(b, sizeof b, "%lld", (long long)until_ms);
    const char *params[3] = {a, b, model};
    const char *sql = "SELECT ts_ms, duration_ms, prompt_tokens, cached_tokens, completion_tokens, reasoning_tokens"
                      " FROM usage WHERE ts_ms >= $1::bigint AND ($2::bigint <= 0 OR ts_ms < $2::bigint)"
                      " AND ($3::text IS NULL OR model = $3::text) AND status BETWEEN 200 AND 299 ORDER BY ts_ms";
    if ((st = send_rows(c, shown, sql, 3, params, err)) != HR_OK)
        goto done;
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) {
        ExecStatusType t = PQresultStatus(r);
        if (t == PGRES_SINGLE_TUPLE && st == HR_OK) {
            double dur = num(r, 1, 0);
            if (!isfinite(dur))
                dur = -1;
            st = hr_usage_acc_add(&acc, shown, inum(r, 0), dur, inum(r, 2), inum(r, 3), inum(r, 4), inum(r, 5), err);
        } else if (t != PGRES_TUPLES_OK && t != PGRES_SINGLE_TUPLE && st == HR_OK)
            st = pg_fail(err, HR_ERR_FORMAT, shown, "query", c, r);
        PQclear(r);
    }
    drain(c);
done:
    hr_usage_acc_finish(&acc);
    if (st != HR_OK)
        memset(out, 0, sizeof *out);
    PQfinish(c);
    return st;
}

static void str_at(const PGresult *r, int col, char *dst, size_t cap)
{
    hr_usage_copy_str(dst, cap, PQgetvalue(r, 0, col));
}

hr_status hr_usage_pg_pairs(const char *url, int64_t since_ms, int64_t until_ms, const char *route,
                            hr_pilot_pair_rec **out, size_t *n, hr_err *err)
{
    char shown[1024];
    PGconn *c = NULL;
    long long v = 0;
    hr_status st = open_reader(url, shown, sizeof shown, &c, &v, err);
    if (st != HR_OK)
        return st;
    if (v < 3) {
        PQfinish(c);
        return HR_OK;
    }
    char a[32], b[32];
    snprintf(a, sizeof a, "%lld", (long long)since_ms);
    snprintf(b, sizeof b, "%lld", (long long)until_ms);
    const char *params[3] = {a, b, route};
    const char *sql = "SELECT " HR_PAIR_READ_COLUMNS " FROM pilot_pairs WHERE ts_ms >= $1::bigint"
                      " AND ($2::bigint <= 0 OR ts_ms < $2::bigint) AND ($3::text IS NULL OR route = $3::text)"
                      " ORDER BY route, ts_ms, id";
    size_t cap = 0;
    if ((st = send_rows(c, shown, sql, 3, params, err)) != HR_OK)
        goto done;
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) {
        ExecStatusType t = PQresultStatus(r);
        if (t == PGRES_SINGLE_TUPLE && st == HR_OK) {
            hr_pilot_pair_rec p;
            memset(&p, 0, sizeof p);
            int k = 0;
            p.ts_ms = inum(r, k++);
            str_at(r, k++, p.request_id, sizeof p.request_id);
            str_at(r, k++, p.route, sizeof p.route);
            str_at(r, k++, p.primary_backend, sizeof p.primary_backend);
            str_at(r, k++, p.primary_model, sizeof p.primary_model);
            str_at(r, k++, p.shadow_backend, sizeof p.shadow_backend);
            str_at(r, k++, p.shadow_model, sizeof p.shadow_model);
            p.primary_ttft_s = num(r, k, -1000) / 1000;
            k++;
            p.primary_total_s = num(r, k, -1000) / 1000;
            k++;
            p.shadow_ttft_s = num(r, k, -1000) / 1000;
            k++;
            p.shadow_total_s = num(r, k, -1000) / 1000;
            k++;
            p.primary_prompt_tokens = (int32_t)inum(r, k++);
            p.primary_completion_tokens = (int32_t)inum(r, k++);
            p.shadow_prompt_tokens = (int32_t)inum(r, k++);
            p.shadow_completion_tokens = (int32_t)inum(r, k++);
            p.primary_status = (int32_t)inum(r, k++);
            p.shadow_status = (int32_t)inum(r, k++);
            p.score_exact = num(r, k++, -1);
            p.score_f1 = num(r, k++, -1);
            p.score_json = num(r, k++, -1);
            p.score_judge = num(r, k++, -1);
            st = hr_usage_pairs_push(out, n, &cap, &p, err);
        } else if (t != PGRES_TUPLES_OK && t != PGRES_SINGLE_TUPLE && st == HR_OK)
            st = pg_fail(err, HR_ERR_FORMAT, shown, "query", c, r);
        PQclear(r);
    }
    drain(c);
done:
    PQfinish(c);
    return st;
}
