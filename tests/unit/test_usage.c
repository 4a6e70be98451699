/* test_usage.c - the usage log: rows as recorded, key ids hashed, streamed
 * and non-streamed requests counted alike, migrations, bad files refused,
 * a full queue drops instead of blocking, and kill -9 loses nothing that a
 * flush acknowledged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store/usage.h"

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char bufs[4][512];
    static int slot;
    char *b = bufs[slot++ & 3];
    snprintf(b, 512, "%s/%s", tmpdir, name);
    return b;
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/hr_usage_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static long long query_int(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void exec_sql(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("sql: %s", msg ? msg : "?");
    sqlite3_close(db);
}

static void test_roundtrip(void **state)
{
    (void)state;
    const char *path = tmp_path("a.db");
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

    assert_int_equal(query_int(path, "PRAGMA user_version"), HR_USAGE_SCHEMA_VERSION);
    assert_int_equal(query_int(path, "SELECT count(*) FROM usage"), 2);
    assert_int_equal(query_int(path, "SELECT count(*) FROM usage WHERE request_id='req-1' AND model='qwen2.5-0.5b' "
                                     "AND backend='local' AND prompt_tokens=100 AND cached_tokens=32 AND "
                                     "completion_tokens=50 AND reasoning_tokens=7 AND ttft_ms=125 AND "
                                     "duration_ms=1500 AND status=200 AND finish_reason='stop' AND stream=1 AND "
                                     "ts_ms=1764288000000"),
                     1);
    assert_int_equal(query_int(path, "SELECT count(*) FROM usage WHERE request_id='req-2' AND ttft_ms IS NULL"), 1);
    /* no key text anywhere */
    assert_int_equal(query_int(path, "SELECT count(*) FROM usage WHERE key_id LIKE '%secret%'"), 0);

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
    const char *path = tmp_path("parity.db");
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
    assert_int_equal(query_int(path, "SELECT count(*) FROM usage WHERE stream=1"), N);
    assert_int_equal(query_int(path, "SELECT sum(prompt_tokens) FROM usage WHERE stream=1"),
                     query_int(path, "SELECT sum(prompt_tokens) FROM usage WHERE stream=0"));
    assert_int_equal(query_int(path, "SELECT sum(completion_tokens) FROM usage WHERE stream=1"),
                     query_int(path, "SELECT sum(completion_tokens) FROM usage WHERE stream=0"));
}

static void test_migration_from_v1(void **state)
{
    (void)state;
    const char *path = tmp_path("v1.db");
    exec_sql(path, "CREATE TABLE usage (id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, request_id TEXT NOT NULL "
                   "DEFAULT '', key_id TEXT NOT NULL DEFAULT '', model TEXT NOT NULL DEFAULT '', backend TEXT NOT NULL "
                   "DEFAULT '', prompt_tokens INTEGER NOT NULL DEFAULT 0, cached_tokens INTEGER NOT NULL DEFAULT 0, "
                   "completion_tokens INTEGER NOT NULL DEFAULT 0, reasoning_tokens INTEGER NOT NULL DEFAULT 0, "
                   "ttft_ms REAL, duration_ms REAL NOT NULL DEFAULT 0, status INTEGER NOT NULL DEFAULT 0, "
                   "finish_reason TEXT NOT NULL DEFAULT '');"
                   "INSERT INTO usage (ts_ms, model, prompt_tokens, completion_tokens, status) VALUES (5, 'old', 7, 8, 200);"
                   "PRAGMA user_version = 1;");
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, NULL, &db, &err), HR_OK);
    hr_usage_row r = {.ts_ms = 6, .model = "new", .prompt_tokens = 1, .completion_tokens = 2, .status = 200,
                      .stream = true};
    assert_true(hr_usage_record(db, &r));
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
    assert_int_equal(query_int(path, "PRAGMA user_version"), 2);
    assert_int_equal(query_int(path, "SELECT count(*) FROM usage WHERE model='old' AND stream=0 AND prompt_tokens=7"), 1);
    assert_int_equal(query_int(path, "SELECT count(*) FROM usage WHERE model='new' AND stream=1"), 1);
    assert_int_equal(query_int(path, "SELECT count(*) FROM sqlite_master WHERE type='index' AND name='usage_ts'"), 1);
}

static void test_bad_files(void **state)
{
    (void)state;
    hr_usage_db *db = NULL;
    hr_err err = {0};
    /* not a database */
    const char *junk = tmp_path("junk.db");
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
    const char *newer = tmp_path("newer.db");
    exec_sql(newer, "CREATE TABLE usage (x); PRAGMA user_version = 99;");
    assert_int_equal(hr_usage_open(newer, NULL, &db, &err), HR_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "newer"));
    /* someone else's usage table */
    const char *foreign = tmp_path("foreign.db");
    exec_sql(foreign, "CREATE TABLE usage (a, b);");
    assert_int_equal(hr_usage_open(foreign, NULL, &db, &err), HR_ERR_FORMAT);
    /* missing file for reading; unsupported URL; empty db for reading */
    assert_int_not_equal(hr_usage_totals_of(tmp_path("nope.db"), 0, 0, NULL, &t, &err), HR_OK);
    assert_int_equal(hr_usage_open("postgresql://x/y", NULL, &db, &err), HR_ERR_UNSUPPORTED);
    const char *empty = tmp_path("empty.db");
    exec_sql(empty, "CREATE TABLE other (a);");
    assert_int_equal(hr_usage_totals_of(empty, 0, 0, NULL, &t, &err), HR_ERR_FORMAT);
    /* a directory that does not exist */
    assert_int_not_equal(hr_usage_open("/nonexistent-dir/x.db", NULL, &db, &err), HR_OK);
}

/* A tiny queue and a long batch window: record never blocks, and every row
 * is either written or counted as dropped. */
static void test_queue_full(void **state)
{
    (void)state;
    const char *path = tmp_path("full.db");
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
    assert_int_equal(query_int(path, "SELECT count(*) FROM usage"), ok);
}

/* kill -9 under load: every row acknowledged by a flush survives, at most
 * the unacknowledged tail is lost, and the database is intact. */
static void test_kill9(void **state)
{
    (void)state;
    const char *path = tmp_path("crash.db");
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
    long long rows = query_int(path, "SELECT count(*) FROM usage");
    long long max_ts = query_int(path, "SELECT max(ts_ms) FROM usage");
    print_message("kill -9: %lld rows acknowledged by flush, %lld on disk\n", acked, rows);
    assert_true(rows >= acked);
    assert_true(rows == max_ts); /* a prefix of what was recorded, no holes */
    /* at most what was recorded after the last acknowledgement is lost: the
     * child never records more than 100 rows past an ack before flushing */
    assert_true(rows <= acked + 100);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    sqlite3_close(db);
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
    const char *path = tmp_path("crash2.db");
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
    assert_int_equal(query_int(path, "SELECT count(*) FROM usage"), done);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),     cmocka_unit_test(test_stream_parity), cmocka_unit_test(test_migration_from_v1),
        cmocka_unit_test(test_bad_files),     cmocka_unit_test(test_queue_full),    cmocka_unit_test(test_kill9),
        cmocka_unit_test(test_kill9_window),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
