/* usage_backend.h - lets the usage-log tests run the same checks on SQLite
 * and on PostgreSQL (included by test_usage.c and test_pilot_report.c).
 *
 * A target is a fresh SQLite file in a temp folder, or a fresh schema in the
 * database named by $HEARTH_TEST_PG (reached through the URL's
 * options=-csearch_path=..., so hearth's unqualified tables land there).
 * PostgreSQL checks are skipped when HEARTH_TEST_PG is unset, and fail then
 * under CI (CI=true), where scripts/test.sh starts a server. */
#ifndef HR_USAGE_BACKEND_H
#define HR_USAGE_BACKEND_H

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool ub_pg __attribute__((unused));          /* the backend of the current group */
static char ub_tmpdir[256]; /* SQLite files */
static int ub_serial;

static const char *ub_pg_base(void)
{
    const char *u = getenv("HEARTH_TEST_PG");
    return u && *u ? u : NULL;
}

static PGconn *ub_pg_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("cannot connect to %s: %s", url, PQerrorMessage(c));
    PGresult *r = PQexec(c, "SET client_min_messages = warning");
    PQclear(r);
    return c;
}

static inline void ub_pg_exec(const char *url, const char *sql)
{
    PGconn *c = ub_pg_connect(url);
    PGresult *r = PQexec(c, sql);
    ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK)
        fail_msg("sql '%s': %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* A fresh, empty target named after `name`; buf gets the target string. */
static const char *ub_target(const char *name, char *buf, size_t cap)
{
    if (!ub_pg) {
        snprintf(buf, cap, "%s/%s.db", ub_tmpdir, name);
        unlink(buf);
        return buf;
    }
    const char *base = ub_pg_base();
    char schema[64];
    snprintf(schema, sizeof schema, "hrt_%ld_%d_%s", (long)getpid(), ub_serial++, name);
    for (char *p = schema; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            *p = '_';
    char sql[256];
    snprintf(sql, sizeof sql, "DROP SCHEMA IF EXISTS %s CASCADE; CREATE SCHEMA %s", schema, schema);
    ub_pg_exec(base, sql);
    snprintf(buf, cap, "%s%soptions=-csearch_path%%3D%s", base, strchr(base, '?') ? "&" : "?", schema);
    return buf;
}

/* Runs SQL on the target (SQLite dialect or PostgreSQL as given). */
static inline void ub_exec(const char *target, const char *sql)
{
    if (ub_pg) {
        ub_pg_exec(target, sql);
        return;
    }
    sqlite3 *db;
    assert_int_equal(sqlite3_open(target, &db), SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("sql: %s", msg ? msg : "?");
    sqlite3_close(db);
}

/* The first column of the first row as an integer (NULL = 0). */
static inline long long ub_int(const char *target, const char *sql)
{
    if (ub_pg) {
        PGconn *c = ub_pg_connect(target);
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) < 1)
            fail_msg("query '%s': %s", sql, PQerrorMessage(c));
        long long v = PQgetisnull(r, 0, 0) ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        PQfinish(c);
        return v;
    }
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(target, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("query '%s': %s", sql, sqlite3_errmsg(db));
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static inline long long ub_schema_version(const char *target)
{
    return ub_int(target, ub_pg ? "SELECT value::int FROM hearth_meta WHERE key = 'schema_version'"
                                : "PRAGMA user_version");
}

/* Group set-up: SQLite gets a temp folder; PostgreSQL needs HEARTH_TEST_PG. */
static inline int ub_setup_sqlite(void **state)
{
    (void)state;
    ub_pg = false;
    snprintf(ub_tmpdir, sizeof ub_tmpdir, "/tmp/hr_usage_XXXXXX");
    return mkdtemp(ub_tmpdir) ? 0 : -1;
}

static inline int ub_teardown_sqlite(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ub_tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static inline int ub_setup_pg(void **state)
{
    (void)state;
    ub_pg = true;
    if (!ub_pg_base())
        print_message("HEARTH_TEST_PG is not set: PostgreSQL checks skipped\n");
    return 0;
}

/* Drops the schemas this process made. */
static inline int ub_teardown_pg(void **state)
{
    (void)state;
    const char *base = ub_pg_base();
    if (!base)
        return 0;
    PGconn *c = ub_pg_connect(base);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT 'DROP SCHEMA ' || nspname || ' CASCADE' FROM pg_namespace WHERE nspname LIKE 'hrt\\_%ld\\_%%'",
             (long)getpid());
    PGresult *r = PQexec(c, sql);
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++) {
        PGresult *d = PQexec(c, PQgetvalue(r, i, 0));
        PQclear(d);
    }
    PQclear(r);
    PQfinish(c);
    return 0;
}

/* In a test: on the PostgreSQL pass without a server, skip; under CI fail. */
#define UB_NEED_BACKEND()                                                                                             \
    do {                                                                                                              \
        if (ub_pg && !ub_pg_base()) {                                                                                 \
            const char *ci_ = getenv("CI");                                                                           \
            if (ci_ && strcmp(ci_, "true") == 0)                                                                      \
                fail_msg("HEARTH_TEST_PG not set (required when CI=true)");                                           \
            skip();                                                                                                   \
        }                                                                                                             \
    } while (0)

#endif
