/* test_usage_faults.c - the SQLite usage log when the filesystem fails
 * under a running writer (audit finding 9, issue 12 item 2):
 *   - every write refused by the kernel (RLIMIT_FSIZE 0: write(2) fails with
 *     EFBIG, as it fails with ENOSPC on a full disk): rows stay queued up to
 *     the queue's size, the rest are dropped and counted, one log line per
 *     episode (failing, dropping, working again), /metrics text says so, and
 *     the queued rows land once writes work again;
 *   - the folder of the database removed under the writer: rows are not
 *     written into the unlinked file (lost to everyone), but kept, and
 *     written to a fresh database once the folder exists again;
 *   - the file alone removed: a fresh log at the same path.
 * The real full tmpfs and read-only remount run in tests/cli/serve_usage_faults.sh
 * (they need mount). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/usage.h"

static char tmpdir[256];

/* log lines, captured */
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logbuf[8192];
static int log_lines;

static void capture(void *ctx, const char *line)
{
    (void)ctx;
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(logbuf);
    snprintf(logbuf + n, sizeof logbuf - n, "%s\n", line);
    log_lines++;
    pthread_mutex_unlock(&log_mu);
}

static int lines_with(const char *needle)
{
    pthread_mutex_lock(&log_mu);
    int k = 0;
    for (const char *p = logbuf; (p = strstr(p, needle)) != NULL; p++)
        k++;
    pthread_mutex_unlock(&log_mu);
    return k;
}

static void log_reset(void)
{
    pthread_mutex_lock(&log_mu);
    logbuf[0] = 0;
    log_lines = 0;
    pthread_mutex_unlock(&log_mu);
}

static long long count_rows(const char *path)
{
    sqlite3 *db = NULL;
    long long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM usage", -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW)
                n = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return n;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* waits (bounded) until the writer has failed at least `n` times */
static void wait_errors(hr_usage_db *db, uint64_t n)
{
    hr_usage_stats st;
    for (int i = 0; i < 1000; i++) {
        hr_usage_stats_of(db, &st);
        if (st.write_errors >= n)
            return;
        sleep_ms(10);
    }
    fail_msg("the writer never reported %llu write errors (has %llu)", (unsigned long long)n,
             (unsigned long long)st.write_errors);
}

static void record_n(hr_usage_db *db, int from, int n, int *accepted)
{
    *accepted = 0;
    for (int i = from; i < from + n; i++) {
        char id[32];
        snprintf(id, sizeof id, "req-%d", i);
        hr_usage_row r = {.request_id = id, .key_id = "xxh64:0000000000000001", .model = "m", .backend = "local",
                          .prompt_tokens = 10, .completion_tokens = 5, .ttft_s = 0.01, .duration_s = 0.1,
                          .status = 200, .finish_reason = "stop"};
        if (hr_usage_record(db, &r))
            (*accepted)++;
    }
}

static void put_text(void *ctx, const char *line)
{
    size_t n = strlen(ctx);
    snprintf((char *)ctx + n, 8192 - n, "%s", line);
}

static double metric(hr_usage_db *db, const char *name)
{
    char text[8192] = {0};
    hr_usage_metrics(db, put_text, text);
    char pat[128];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(text, pat);
    if (!p)
        fail_msg("metric %s missing from:\n%s", name, text);
    return strtod(p + strlen(pat), NULL);
}

static void set_fsize(rlim_t cur)
{
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = cur == RLIM_INFINITY ? rl.rlim_max : cur;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static hr_usage_params params(void)
{
    hr_usage_params p = hr_usage_defaults();
    p.queue_rows = 64;
    p.batch_ms = 5;
    p.flush_wait_ms = 20000; /* flush waits for the recovery below, bounded */
    p.log = capture;
    return p;
}

static int restore_fsize(void **state)
{
    (void)state;
    set_fsize(RLIM_INFINITY);
    return 0;
}

/* Writes refused by the kernel: buffered to the bound, drops counted,
 * logged once per episode, written after recovery. */
static void test_writes_refused(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/full.db", tmpdir);
    hr_usage_params p = params();
    log_reset();
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, &p, &db, &err), HR_OK);
    int acc;
    record_n(db, 0, 10, &acc);
    assert_int_equal(acc, 10);
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    assert_int_equal(count_rows(path), 10);

    set_fsize(0); /* every write(2) to a regular file now fails */
    record_n(db, 10, 100, &acc);
    wait_errors(db, 1);
    /* let it retry a few times: still one line for the episode */
    wait_errors(db, 3);
    hr_usage_stats st;
    hr_usage_stats_of(db, &st);
    assert_int_equal(acc, 64);          /* the queue's size */
    assert_int_equal(st.dropped, 36);   /* the rest, counted */
    assert_int_equal(st.buffered, 64);
    assert_int_equal(st.failed, 0);     /* nothing given up yet */
    assert_false(st.connected);
    assert_int_equal(st.episodes, 1);
    assert_int_equal(lines_with("cannot write"), 1);
    assert_int_equal(lines_with("queue full"), 1);
    assert_int_equal(lines_with("writing again"), 0);
    assert_true(metric(db, "hearth_usage_rows_dropped_total") == 36);
    assert_true(metric(db, "hearth_usage_rows_buffered") == 64);
    assert_true(metric(db, "hearth_usage_db_up") == 0);
    assert_true(metric(db, "hearth_usage_write_errors_total") >= 3);
    assert_true(metric(db, "hearth_usage_rows_written_total") == 10);

    set_fsize(RLIM_INFINITY); /* space again */
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    hr_usage_stats_of(db, &st);
    assert_int_equal(st.written, 74);
    assert_int_equal(st.buffered, 0);
    assert_true(st.connected);
    assert_int_equal(lines_with("writing again"), 1);
    assert_int_equal(lines_with("cannot write"), 1);
    assert_true(metric(db, "hearth_usage_db_up") == 1);
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
    assert_int_equal(count_rows(path), 74);

    printf("log:\n%s", logbuf);
}

/* The database's folder removed under the writer. */
static void test_folder_removed(void **state)
{
    (void)state;
    char dir[300], path[512], cmd[700];
    snprintf(dir, sizeof dir, "%s/gone", tmpdir);
    snprintf(path, sizeof path, "%s/u.db", dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    hr_usage_params p = params();
    log_reset();
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, &p, &db, &err), HR_OK);
    int acc;
    record_n(db, 0, 5, &acc);
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    assert_int_equal(count_rows(path), 5);

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    record_n(db, 5, 7, &acc);
    assert_int_equal(acc, 7);
    wait_errors(db, 2);
    hr_usage_stats st;
    hr_usage_stats_of(db, &st);
    assert_int_equal(st.written, 5);  /* not written into the unlinked file */
    assert_int_equal(st.buffered, 7);
    assert_false(st.connected);
    assert_int_equal(lines_with("cannot write"), 1);

    assert_int_equal(mkdir(dir, 0755), 0); /* the folder is back: a fresh log */
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    hr_usage_stats_of(db, &st);
    assert_int_equal(st.written, 12);
    assert_int_equal(st.buffered, 0);
    assert_int_equal(lines_with("writing again"), 1);
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
    assert_int_equal(count_rows(path), 7);
}

/* The file removed (rm usage.db*) while the folder stays: the writer
 * notices before writing into the unlinked file and starts a fresh log at
 * the same path, where readers look. */
static void test_file_removed(void **state)
{
    (void)state;
    char path[512], side[600];
    snprintf(path, sizeof path, "%s/rm.db", tmpdir);
    hr_usage_params p = params();
    log_reset();
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, &p, &db, &err), HR_OK);
    int acc;
    record_n(db, 0, 3, &acc);
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    assert_int_equal(unlink(path), 0);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    record_n(db, 3, 4, &acc);
    assert_int_equal(hr_usage_flush(db, &err), HR_OK);
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
    assert_int_equal(count_rows(path), 4);
}

/* A request refused 401 is counted, not stored. */
static void test_unauthenticated_counted(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/anon.db", tmpdir);
    hr_usage_params p = params();
    hr_usage_db *db;
    hr_err err = {0};
    assert_int_equal(hr_usage_open(path, &p, &db, &err), HR_OK);
    hr_usage_skip_unauthenticated(db);
    hr_usage_skip_unauthenticated(db);
    assert_true(metric(db, "hearth_usage_unauthenticated_total") == 2);
    assert_true(metric(db, "hearth_usage_rows_recorded_total") == 0);
    assert_int_equal(hr_usage_close(db, &err), HR_OK);
    assert_int_equal(count_rows(path), 0);
}

int main(void)
{
    signal(SIGXFSZ, SIG_IGN); /* RLIMIT_FSIZE: EFBIG instead of a signal */
    snprintf(tmpdir, sizeof tmpdir, "%s/hearth-ufault.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_writes_refused, restore_fsize),
        cmocka_unit_test(test_folder_removed),
        cmocka_unit_test(test_file_removed),
        cmocka_unit_test(test_unauthenticated_counted),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    set_fsize(RLIM_INFINITY);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}
