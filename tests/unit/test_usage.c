/* test_usage.c - the usage log: rows as recorded, key ids hashed, streamed
 * and non-streamed requests counted alike, pilot pairs, migrations, bad
 * files refused, a full queue drops instead of blocking, and kill -9 loses
 * nothing that a flush acknowledged. Every check runs on SQLite and, when
 * HEARTH_TEST_PG names a server, on PostgreSQL (usage_backend.h); a few are
 * backend-specific (file corruption; a database that goes away). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/usage.h"
#include "usage_backend.h"

static void test_roundtrip(void **state)
{
    (void)state;
    UB_NEED_BACKEND();
    char pbuf[1024];
    const char *path = ub_target("a", pbuf, sizeof pbuf);
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, NULL, &db, &err), HR_OK);
    char kid[HR_USAGE_KEY_ID_LEN];
    hr_usage_key_id("sk-secret-key-123", kid);
    assert_non_null(strstr(kid, "xxh64:"));
    assert_null(strstr(kid, "secret"));
    hr_usage_row r = {.ts_ms = 1764288000000, .request_id = "req-1", .key_id = kid, .model = "qwen2.5-0.5b",
                      .backend = "local", .prompt_tokens = 100, .cached_tokens = 32, .completion_tokens = 50,
                      .reasoning_tokens = 7, .ttft_s = 0.125, .duration_s = 1.5, .status = 200,
                      .finish_reason = "stop", .stream = true};
    assert_true(hr_usage_record(db, &r));
    r.request_id = "req-2";
    r.ttft_s = -1; /* unknown */
    r.stream = false;
    assert_true(hr_usage_record(db, &r));
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    hr_usage_stats st;
    hr_usage_stats_of(db, &st);
    assert_int_equal(st.recorded, 2);
    assert_int_equal(st.written, 2);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(hr_usage_close(db, &err), HR_OK);

    assert_int_equal(ub_schema_version(path), HR_USAGE_SCHEMA_VERSION);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage"), 2);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage WHERE request_id='req-1' AND model='qwen2.5-0.5b' "
                                     "AND backend='local' AND prompt_tokens=100 AND cached_tokens=32 AND "
                                     "completion_tokens=50 AND reasoning_tokens=7 AND ttft_ms=125 AND "
                                     "duration_ms=1500 AND status=200 AND finish_reason='stop' AND stream=1 AND "
                                     "ts_ms=1764288000000"),
                     1);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage WHERE request_id='req-2' AND ttft_ms IS NULL"), 1);
    /* no key text anywhere */
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage WHERE key_id LIKE '%secret%'"), 0);

    hr_usage_totals t;
    assert_int_equal(hr_usage_totals_of(path, 0, 0, NULL, &t, &err), HR_OK);
    assert_int_equal(t.requests, 2);
    assert_int_equal(t.prompt_tokens, 200);
    assert_int_equal(t.cached_tokens, 64);
    assert_int_equal(t.completion_tokens, 100);
    assert_int_equal(t.reasoning_tokens, 14);
    assert_true(t.busy_s == 1.5); /* both start at the same ms: one interval */
}

/* The same requests sent streamed and non-streamed are recorded with the
 * same counts (the row is built from the response's usage either way). */
static void test_stream_parity(void **state)
{
    (void)state;
    UB_NEED_BACKEND();
    char pbuf[1024];
    const char *path = ub_target("parity", pbuf, sizeof pbuf);
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, NULL, &db, &err), HR_OK);
    const int N = 50;
    for (int i = 0; i < 2 * N; i++) {
        char id[32];
        snprintf(id, sizeof id, "r%d", i);
        hr_usage_row r = {.ts_ms = 1000000 + i, .request_id = id, .model = "m", .prompt_tokens = 10 + i % N,
                          .completion_tokens = 3 + (i % N) * 2, .duration_s = 0.01, .status = 200,
                          .finish_reason = "length", .stream = i >= N};
        assert_true(hr_usage_record(db, &r));
    }
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage WHERE stream=1"), N);
    assert_int_equal(ub_int(path, "SELECT sum(prompt_tokens) FROM usage WHERE stream=1"),
                     ub_int(path, "SELECT sum(prompt_tokens) FROM usage WHERE stream=0"));
    assert_int_equal(ub_int(path, "SELECT sum(completion_tokens) FROM usage WHERE stream=1"),
                     ub_int(path, "SELECT sum(completion_tokens) FROM usage WHERE stream=0"));
}

static const char *const v1_sqlite =
    "CREATE TABLE usage (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT NOT NULL "
    "DEFAULT '', key_id TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', backend TEXT NOT NULL "
    "DEFAULT '', prompt_tokens INTEGER NOT NULL DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0, "
    "completion_tokens INTEGER NOT NULL DEFAULT 0, reasoning_tokens INTEGER NOT NULL DEFAULT 0, "
    "ttft_ms REAL, duration_ms REAL NOT NULL DEFAULT 0, status INTEGER NOT NULL DEFAULT 0, "
    "finish_reason TEXT NOT NULL DEFAULT '');"
    "INSERT INTO usage (ts_ms, model, prompt_tokens, completion_tokens, status) VALUES (5, 'old', 7, 8, 200);"
    "PRAGMA user_version = 1;";
static const char *const v1_pg =
    "CREATE TABLE hearth_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE usage (id BIGSERIAL PRIMARY KEY, ts_ms BIGINT NOT NULL, request_id TEXT NOT NULL "
    "DEFAULT '', key_id TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', backend TEXT NOT NULL "
    "DEFAULT '', prompt_tokens INTEGER NOT NULL DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0, "
    "completion_tokens INTEGER NOT NULL DEFAULT 0, reasoning_tokens INTEGER NOT NULL DEFAULT 0, "
    "ttft_ms DOUBLE PRECISION, duration_ms DOUBLE PRECISION NOT NULL DEFAULT 0, status INTEGER NOT NULL DEFAULT 0, "
    "finish_reason TEXT NOT NULL DEFAULT '');"
    "INSERT INTO usage (ts_ms, model, prompt_tokens, completion_tokens, status) VALUES (5, 'old', 7, 8, 200);"
    "INSERT INTO hearth_meta VALUES ('schema_version', '1');";

static void test_migration_from_v1(void **state)
{
    (void)state;
    UB_NEED_BACKEND();
    char pbuf[1024];
    const char *path = ub_target("v1", pbuf, sizeof pbuf);
    ub_exec(path, ub_pg ? v1_pg : v1_sqlite);
    hr_usage_db *db;
    hr_err err = {0};
    /* an old log stays readable before any migration */
    hr_usage_totals t;
    assert_int_equal(hr_usage_totals_of(path, 0, 0, NULL, &t, &err), HR_OK);
    assert_int_equal(t.requests, 1);
    hr_pilot_pair_rec *pairs = NULL;
    size_t np = 99;
    assert_int_equal(hr_usage_pairs_of(path, 0, 0, NULL, &pairs, &np, &err), HR_OK);
    assert_int_equal(np, 0);
    free(pairs);

    assert_int_equal(hr_usage_open(path, NULL, &db, &err), HR_OK);
    hr_usage_row r = {.ts_ms = 6, .model = "new", .prompt_tokens = 1, .completion_tokens = 2, .status = 200,
                      .stream = true, .estimated = true};
    assert_true(hr_usage_record(db, &r));
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
    assert_int_equal(ub_schema_version(path), HR_USAGE_SCHEMA_VERSION);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage WHERE model='old' AND stream=0 AND estimated=0 AND "
                                  "prompt_tokens=7"),
                     1);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage WHERE model='new' AND stream=1 AND estimated=1"), 1);
    assert_int_equal(ub_int(path, ub_pg ? "SELECT count(*) FROM pg_indexes WHERE indexname='usage_ts' AND "
                                          "schemaname = current_schema()"
                                        : "SELECT count(*) FROM sqlite_master WHERE type='index' AND name='usage_ts'"),
                     1);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM pilot_pairs"), 0);
    /* opening a current log again is a no-op */
    assert_int_equal(hr_usage_open(path, NULL, &db, &err), HR_OK);
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage"), 2);
}

/* Pilot pairs: every field stored, texts copied and capped, awkward bytes
 * (tabs, newlines, backslashes, non-ASCII) intact; read back by the
 * backend-neutral reader. */
static void test_pairs(void **state)
{
    (void)state;
    UB_NEED_BACKEND();
    char pbuf[1024];
    const char *path = ub_target("pairs", pbuf, sizeof pbuf);
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, NULL, &db, &err), HR_OK);
    size_t big_n = HR_PILOT_TEXT_MAX + 5000;
    char *big = malloc(big_n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < big_n; i++)
        big[i] = (char)('a' + i % 26);
    big[big_n] = 0;
    char primary[64];
    snprintf(primary, sizeof primary, "line 1\n\tx \\ y \xc3\xa9t\xc3\xa9 \xe2\x82\xac");
    hr_pilot_pair p = {.ts_ms = 1764288000123, .request_id = "chatcmpl-1", .route = "chat", .key_id = "xxh64:00",
                       .primary_backend = "openai", .primary_model = "gpt-4o-mini", .shadow_backend = "local",
                       .shadow_model = "qwen2.5-0.5b", .primary_text = primary, .shadow_text = big,
                       .primary_ttft_s = 0.25, .primary_total_s = 1.5, .shadow_ttft_s = -1, .shadow_total_s = 2.0,
                       .primary_prompt_tokens = 11, .primary_completion_tokens = 22, .shadow_prompt_tokens = 12,
                       .shadow_completion_tokens = 21, .primary_status = 200, .shadow_status = 0,
                       .score_exact = 0, .score_f1 = 0.625, .score_json = -1, .score_judge = 0.75};
    assert_true(hr_usage_record_pair(db, &p));
    free(big);
    p.request_id = "chatcmpl-2";
    p.route = "other";
    p.ts_ms = 1764288000200;
    p.score_json = 0.5;
    p.score_judge = -1;
    p.primary_text = NULL; /* NULL is "" */
    p.shadow_text = "{}";
    assert_true(hr_usage_record_pair(db, &p));
    hr_usage_row r = {.ts_ms = 1764288000123, .request_id = "chatcmpl-1", .model = "gpt-4o-mini", .backend = "openai",
                      .prompt_tokens = 11, .completion_tokens = 22, .status = 200, .estimated = true};
    assert_true(hr_usage_record(db, &r));
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    hr_usage_stats st;
    hr_usage_stats_of(db, &st);
    assert_int_equal(st.pairs_recorded, 2);
    assert_int_equal(st.pairs_written, 2);
    assert_int_equal(st.written, 1);
    assert_int_equal(hr_usage_close(db, &err), HR_OK);

    assert_int_equal(ub_int(path, "SELECT count(*) FROM pilot_pairs"), 2);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage WHERE estimated=1"), 1);
    assert_int_equal(ub_int(path, "SELECT length(shadow_text) FROM pilot_pairs WHERE request_id='chatcmpl-1'"),
                     HR_PILOT_TEXT_MAX);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM pilot_pairs WHERE request_id='chatcmpl-1' AND route='chat' "
                                  "AND key_id='xxh64:00' AND primary_backend='openai' AND primary_model='gpt-4o-mini' "
                                  "AND shadow_backend='local' AND shadow_model='qwen2.5-0.5b' AND primary_ttft_ms=250 "
                                  "AND primary_total_ms=1500 AND shadow_ttft_ms IS NULL AND shadow_total_ms=2000 AND "
                                  "primary_prompt_tokens=11 AND primary_completion_tokens=22 AND "
                                  "shadow_prompt_tokens=12 AND shadow_completion_tokens=21 AND primary_status=200 AND "
                                  "shadow_status=0 AND score_exact=0 AND score_f1=0.625 AND score_json IS NULL AND "
                                  "score_judge=0.75 AND ts_ms=1764288000123"),
                     1);
    char q[256];
    /* the awkward text, byte for byte (compared as hex on both backends) */
    char hex[2 * sizeof primary + 1];
    for (size_t i = 0; primary[i]; i++)
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)primary[i]);
    snprintf(q, sizeof q,
             ub_pg ? "SELECT count(*) FROM pilot_pairs WHERE encode(convert_to(primary_text, 'UTF8'), 'hex') = '%s'"
                   : "SELECT count(*) FROM pilot_pairs WHERE lower(hex(primary_text)) = '%s'",
             hex);
    assert_int_equal(ub_int(path, q), 1);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM pilot_pairs WHERE request_id='chatcmpl-2' AND primary_text='' "
                                  "AND score_json=0.5 AND score_judge IS NULL"),
                     1);

    hr_pilot_pair_rec *rec = NULL;
    size_t n = 0;
    assert_int_equal(hr_usage_pairs_of(path, 0, 0, NULL, &rec, &n, &err), HR_OK);
    assert_int_equal(n, 2);
    assert_string_equal(rec[0].route, "chat"); /* ordered by route */
    assert_string_equal(rec[0].request_id, "chatcmpl-1");
    assert_string_equal(rec[0].shadow_model, "qwen2.5-0.5b");
    assert_true(rec[0].primary_ttft_s == 0.25 && rec[0].primary_total_s == 1.5);
    assert_true(rec[0].shadow_ttft_s < 0 && rec[0].shadow_total_s == 2.0);
    assert_int_equal(rec[0].shadow_status, 0);
    assert_int_equal(rec[0].shadow_completion_tokens, 21);
    assert_true(rec[0].score_f1 == 0.625 && rec[0].score_json < 0 && rec[0].score_judge == 0.75);
    assert_true(rec[1].score_json == 0.5 && rec[1].score_judge < 0);
    free(rec);
    /* filters: route, time */
    assert_int_equal(hr_usage_pairs_of(path, 0, 0, "other", &rec, &n, &err), HR_OK);
    assert_int_equal(n, 1);
    free(rec);
    assert_int_equal(hr_usage_pairs_of(path, 1764288000124, 0, NULL, &rec, &n, &err), HR_OK);
    assert_int_equal(n, 1);
    assert_string_equal(rec[0].route, "other");
    free(rec);
    assert_int_equal(hr_usage_pairs_of(path, 0, 1764288000124, NULL, &rec, &n, &err), HR_OK);
    assert_int_equal(n, 1);
    free(rec);
}

static void test_bad_files(void **state)
{
    (void)state;
    if (ub_pg)
        skip(); /* files; the PostgreSQL counterpart is test_bad_pg */
    hr_usage_db *db = NULL;
    hr_err err = {0};
    char b1[1024], b2[1024], b3[1024], b4[1024], b5[1024];
    /* not a database */
    const char *junk = ub_target("junk", b1, sizeof b1);
    FILE *f = fopen(junk, "wb");
    assert_non_null(f);
    for (int i = 0; i < 4096; i++)
        fputc((i * 7919) & 0xff, f);
    fclose(f);
    assert_int_not_equal(hr_usage_open(junk, NULL, &db, &err), HR_OK);
    assert_null(db);
    assert_non_null(strstr(err.msg, "junk.db"));
    hr_usage_totals t;
    assert_int_not_equal(hr_usage_totals_of(junk, 0, 0, NULL, &t, &err), HR_OK);
    /* newer schema */
    const char *newer = ub_target("newer", b2, sizeof b2);
    ub_exec(newer, "CREATE TABLE usage (x); PRAGMA user_version = 99;");
    assert_int_equal(hr_usage_open(newer, NULL, &db, &err), HR_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "newer"));
    /* someone else's usage table */
    const char *foreign = ub_target("foreign", b3, sizeof b3);
    ub_exec(foreign, "CREATE TABLE usage (a, b);");
    assert_int_equal(hr_usage_open(foreign, NULL, &db, &err), HR_ERR_FORMAT);
    /* missing file for reading; unknown scheme; empty db for reading */
    assert_int_not_equal(hr_usage_totals_of(ub_target("nope", b4, sizeof b4), 0, 0, NULL, &t, &err), HR_OK);
    assert_int_equal(hr_usage_open("mysql://x/y", NULL, &db, &err), HR_ERR_UNSUPPORTED);
    const char *empty = ub_target("empty", b5, sizeof b5);
    ub_exec(empty, "CREATE TABLE other (a);");
    assert_int_equal(hr_usage_totals_of(empty, 0, 0, NULL, &t, &err), HR_ERR_FORMAT);
    hr_pilot_pair_rec *rec = NULL;
    size_t n = 0;
    assert_int_equal(hr_usage_pairs_of(empty, 0, 0, NULL, &rec, &n, &err), HR_ERR_FORMAT);
    assert_null(rec);
    /* a directory that does not exist */
    assert_int_not_equal(hr_usage_open("/nonexistent-dir/x.db", NULL, &db, &err), HR_OK);
}

/* PostgreSQL: an unreachable server or a bad URL is a clear error at open
 * (and for the readers), the password never appears in it; a newer schema
 * and a foreign usage table are refused. */
static void test_bad_pg(void **state)
{
    (void)state;
    if (!ub_pg)
        skip(); /* PostgreSQL only: not applicable on the SQLite pass */
    UB_NEED_BACKEND();
    hr_usage_db *db = NULL;
    hr_err err = {0};
    hr_usage_totals t;
    /* nobody listens there */
    const char *dead = "postgresql://hearth:s3cret-pw@127.0.0.1:1/hearth?connect_timeout=2";
    assert_int_equal(hr_usage_open(dead, NULL, &db, &err), HR_ERR_IO);
    assert_null(db);
    print_message("unreachable: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "cannot connect"));
    assert_null(strstr(err.msg, "s3cret"));
    assert_non_null(strstr(err.msg, "***"));
    assert_int_equal(hr_usage_totals_of(dead, 0, 0, NULL, &t, &err), HR_ERR_IO);
    /* not a valid URI */
    assert_int_not_equal(hr_usage_open("postgresql://[::1/x", NULL, &db, &err), HR_OK);
    print_message("bad URL: %s\n", err.msg);
    /* a database that is not a usage log, for reading */
    char b1[1024], b2[1024], b3[1024];
    const char *empty = ub_target("empty", b1, sizeof b1);
    assert_int_equal(hr_usage_totals_of(empty, 0, 0, NULL, &t, &err), HR_ERR_FORMAT);
    /* newer schema */
    const char *newer = ub_target("newer", b2, sizeof b2);
    ub_exec(newer, "CREATE TABLE hearth_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                   "CREATE TABLE usage (x int); INSERT INTO hearth_meta VALUES ('schema_version', '99')");
    assert_int_equal(hr_usage_open(newer, NULL, &db, &err), HR_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "newer"));
    /* someone else's usage table: refused, and nothing created */
    const char *foreign = ub_target("foreign", b3, sizeof b3);
    ub_exec(foreign, "CREATE TABLE usage (a int, b int)");
    assert_int_equal(hr_usage_open(foreign, NULL, &db, &err), HR_ERR_FORMAT);
    assert_int_equal(ub_int(foreign, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"), 1);
}

static double since_s(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* PostgreSQL goes away while hearth runs: recording never blocks, rows
 * queue up to the cap and the rest are dropped and counted; when the
 * server is back the writer reconnects and the queued rows land. A closed
 * connection (server restart) is retried transparently. close() during an
 * outage returns within flush_wait_ms. */
static void test_pg_outage(void **state)
{
    (void)state;
    if (!ub_pg)
        skip(); /* PostgreSQL only: not applicable on the SQLite pass */
    UB_NEED_BACKEND();
    char pbuf[1024], url[1200], role[64], sql[512];
    const char *path = ub_target("outage", pbuf, sizeof pbuf);
    snprintf(role, sizeof role, "hrt_role_%ld", (long)getpid());
    const char *schema = strstr(path, "%3D") + 3;
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN; GRANT ALL ON SCHEMA %s TO %s", role, role,
             schema, role);
    ub_pg_exec(ub_pg_base(), sql);
    snprintf(url, sizeof url, "%s&user=%s&application_name=%s", path, role, role);
    hr_usage_params p = {.queue_rows = 64, .batch_ms = 20, .flush_wait_ms = 1500};
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(url, &p, &db, &err), HR_OK);
    for (int i = 0; i < 10; i++) {
        hr_usage_row r = {.ts_ms = 1 + i, .model = "m", .prompt_tokens = 1, .status = 200};
        assert_true(hr_usage_record(db, &r));
    }
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);

    /* 1. the server drops the connection (a restart): nothing lost */
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '%s'", role);
    ub_pg_exec(ub_pg_base(), sql);
    for (int i = 10; i < 20; i++) {
        hr_usage_row r = {.ts_ms = 1 + i, .model = "m", .prompt_tokens = 1, .status = 200};
        assert_true(hr_usage_record(db, &r));
    }
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage"), 20);

    /* 2. an outage: the role may not log in and its session is killed */
    snprintf(sql, sizeof sql, "ALTER ROLE %s NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                              "usename = '%s'", role, role);
    ub_pg_exec(ub_pg_base(), sql);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int ok = 0;
    for (int i = 0; i < 200; i++) {
        hr_usage_row r = {.ts_ms = 100 + i, .model = "m", .prompt_tokens = 1, .status = 200};
        ok += hr_usage_record(db, &r);
        usleep(2000);
    }
    assert_true(since_s(&t0) < 3.0); /* never waited on the database */
    assert_int_equal(ok, 64);        /* the queue's capacity */
    hr_usage_stats st;
    hr_usage_stats_of(db, &st);
    assert_int_equal(st.dropped, 200 - 64);
    assert_false(st.connected);
    assert_true(st.retries >= 1);
    /* the server comes back: the queued rows land without anyone asking */
    snprintf(sql, sizeof sql, "ALTER ROLE %s LOGIN", role);
    ub_pg_exec(ub_pg_base(), sql);
    for (int i = 0; i < 150 && ub_int(path, "SELECT count(*) FROM usage") < 84; i++)
        usleep(100000);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage"), 84);
    hr_usage_stats_of(db, &st);
    assert_true(st.connected);
    assert_int_equal(st.failed, 0);

    /* 3. closing during an outage gives up after flush_wait_ms, counted */
    snprintf(sql, sizeof sql, "ALTER ROLE %s NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                              "usename = '%s'", role, role);
    ub_pg_exec(ub_pg_base(), sql);
    hr_usage_row r = {.ts_ms = 999, .model = "m", .prompt_tokens = 1, .status = 200};
    assert_true(hr_usage_record(db, &r));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(hr_usage_close(db, &err), HR_ERR_IO);
    double dt = since_s(&t0);
    print_message("close during an outage: %.2f s: %s\n", dt, err.msg);
    assert_true(dt < 10.0);
    snprintf(sql, sizeof sql, "DROP OWNED BY %s; DROP ROLE %s", role, role);
    ub_pg_exec(ub_pg_base(), sql);
}

/* A tiny queue and a long batch window: record never blocks, and every row
 * is either written or counted as dropped. */
static void test_queue_full(void **state)
{
    (void)state;
    UB_NEED_BACKEND();
    char pbuf[1024];
    const char *path = ub_target("full", pbuf, sizeof pbuf);
    hr_usage_params p = {.queue_rows = 8, .batch_ms = 2000};
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, &p, &db, &err), HR_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int ok = 0;
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        hr_usage_row r = {.ts_ms = 1 + i, .model = "m", .prompt_tokens = 1, .status = 200};
        ok += hr_usage_record(db, &r);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    assert_true(dt < 5.0);
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    hr_usage_stats st;
    hr_usage_stats_of(db, &st);
    assert_int_equal(st.recorded, (uint64_t)ok);
    assert_int_equal(st.recorded + st.dropped, (uint64_t)N);
    assert_true(st.dropped > 0);
    assert_int_equal(st.written, st.recorded);
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage"), ok);
}

/* kill -9 under load: every row acknowledged by a flush survives, at most
 * the unacknowledged tail is lost, and the database is intact. */
static void test_kill9(void **state)
{
    (void)state;
    UB_NEED_BACKEND();
    char pbuf[1024];
    const char *path = ub_target("crash", pbuf, sizeof pbuf);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        hr_usage_params p = {.batch_ms = 20};
        hr_usage_db *db;
        hr_err err = {0};
        if (hr_usage_open(path, &p, &db, &err) != HR_OK)
            _exit(3);
        for (long long i = 0;; i++) {
            hr_usage_row r = {.ts_ms = 1 + i, .model = "m", .prompt_tokens = 5, .completion_tokens = 6,
                              .status = 200};
            hr_usage_record(db, &r);
            if (i % 100 == 99) {
                if (hr_usage_flush(db, &err) != HR_OK)
                    _exit(4);
                long long acked = i + 1;
                if (write(fds[1], &acked, sizeof acked) != (ssize_t)sizeof acked)
                    _exit(5);
            }
        }
    }
    close(fds[1]);
    long long acked = 0, v;
    while (acked < 3000 && read(fds[0], &v, sizeof v) == (ssize_t)sizeof v)
        acked = v;
    /* keep the child running a little past an acknowledgement, then kill it
     * mid-batch; acks it sent before dying are still in the pipe */
    usleep(30000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    while (read(fds[0], &v, sizeof v) == (ssize_t)sizeof v)
        acked = v;
    close(fds[0]);
    assert_true(acked >= 3000);
    long long rows = ub_int(path, "SELECT count(*) FROM usage");
    long long max_ts = ub_int(path, "SELECT max(ts_ms) FROM usage");
    print_message("kill -9: %lld rows acknowledged by flush, %lld on disk\n", acked, rows);
    assert_true(rows >= acked);
    assert_true(rows == max_ts); /* a prefix of what was recorded, no holes */
    /* at most what was recorded after the last acknowledgement is lost: the
     * child never records more than 100 rows past an ack before flushing */
    assert_true(rows <= acked + 100);
    if (!ub_pg) {
        sqlite3 *db;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    /* and the log opens again and keeps counting */
    hr_usage_db *u;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, NULL, &u, &err), HR_OK);
    assert_int_equal(hr_usage_close(u, &err), HR_OK);
}

/* Without explicit flushes: rows recorded more than one batch window before
 * the kill are on disk. */
static void test_kill9_window(void **state)
{
    (void)state;
    UB_NEED_BACKEND();
    char pbuf[1024];
    const char *path = ub_target("crash2", pbuf, sizeof pbuf);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        hr_usage_params p = {.batch_ms = 100};
        hr_usage_db *db;
        hr_err err = {0};
        if (hr_usage_open(path, &p, &db, &err) != HR_OK)
            _exit(3);
        for (long long i = 0; i < 200; i++) {
            hr_usage_row r = {.ts_ms = 1 + i, .model = "m", .prompt_tokens = 1, .status = 200};
            hr_usage_record(db, &r);
            usleep(5000); /* 200 rows/s */
        }
        long long done = 200;
        if (write(fds[1], &done, sizeof done) != (ssize_t)sizeof done)
            _exit(5);
        pause();
        _exit(0);
    }
    close(fds[1]);
    long long done = 0;
    assert_int_equal(read(fds[0], &done, sizeof done), (ssize_t)sizeof done);
    /* the last row was recorded just now: wait two batch windows (plus
     * slack for a loaded machine) so everything recorded is due */
    usleep(600000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    assert_int_equal(ub_int(path, "SELECT count(*) FROM usage"), done);
}

int main(void)
{
#define UB_TESTS                                                                                                      \
    cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_stream_parity), cmocka_unit_test(test_migration_from_v1), \
        cmocka_unit_test(test_pairs), cmocka_unit_test(test_bad_files), cmocka_unit_test(test_bad_pg),                \
        cmocka_unit_test(test_queue_full), cmocka_unit_test(test_kill9), cmocka_unit_test(test_kill9_window),         \
        cmocka_unit_test(test_pg_outage)
    const struct CMUnitTest sqlite_tests[] = {UB_TESTS};
    const struct CMUnitTest postgres_tests[] = {UB_TESTS};
    int failed = cmocka_run_group_tests(sqlite_tests, ub_setup_sqlite, ub_teardown_sqlite);
    failed += cmocka_run_group_tests(postgres_tests, ub_setup_pg, ub_teardown_pg);
    return failed;
}
