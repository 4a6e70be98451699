/* test_pool.c - the compute thread pool: every thread runs exactly once per
 * run and the run returns only after all have finished (checked over many
 * rapid runs), the caller is thread 0, and an oversubscribed pool (8 threads
 * on a 2-core machine) still finishes quickly because idle workers sleep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "cpu/pool.h"

#define MAX_T 16

typedef struct {
    int nth_seen[MAX_T];
    unsigned run_of[MAX_T];   /* last run each thread joined */
    unsigned run;
    _Atomic int calls;
    pthread_t caller;
    int caller_ith;
    volatile double sink[MAX_T];
} run_ctx;

static void body(void *vctx, int ith, int nth)
{
    run_ctx *c = vctx;
    assert_true(ith >= 0 && ith < nth && nth <= MAX_T);
    c->nth_seen[ith] = nth;
    c->run_of[ith] = c->run;
    if (pthread_equal(pthread_self(), c->caller))
        c->caller_ith = ith;
    /* a little uneven work so finishing order varies */
    double s = 0;
    for (int i = 0; i < (ith * 37 + (int)c->run % 11) * 20; i++)
        s += i * 0.5;
    c->sink[ith] = s;
    atomic_fetch_add(&c->calls, 1);
}

static void many_runs(int n, unsigned runs)
{
    hr_pool *p = hr_pool_new(n);
    assert_non_null(p);
    assert_int_equal(hr_pool_n_threads(p), n);
    run_ctx c;
    memset(&c, 0, sizeof c);
    atomic_init(&c.calls, 0);
    c.caller = pthread_self();
    for (unsigned r = 1; r <= runs; r++) {
        c.run = r;
        c.caller_ith = -1;
        hr_pool_run(p, body, &c);
        /* every thread ran this run, and had finished before we got here */
        for (int i = 0; i < n; i++) {
            assert_int_equal(c.run_of[i], r);
            assert_int_equal(c.nth_seen[i], n);
        }
        assert_int_equal(atomic_load(&c.calls), (int)(r * (unsigned)n));
        assert_int_equal(c.caller_ith, 0);
    }
    hr_pool_free(p);
}

static void test_rapid_runs(void **state)
{
    (void)state;
    many_runs(1, 1000);
    many_runs(2, 20000);
    many_runs(3, 5000);
}

static void test_oversubscribed(void **state)
{
    (void)state;
    const double t0 = hr_now_s();
    many_runs(8, 3000);
    const double dt = hr_now_s() - t0;
    print_message("8 threads, 3000 runs: %.3f s\n", dt);
    assert_true(dt < 20.0);
}

/* Runs spaced out long enough that workers fall asleep between them. */
static void test_sleep_wake(void **state)
{
    (void)state;
    hr_pool *p = hr_pool_new(4);
    assert_non_null(p);
    run_ctx c;
    memset(&c, 0, sizeof c);
    atomic_init(&c.calls, 0);
    c.caller = pthread_self();
    for (unsigned r = 1; r <= 20; r++) {
        struct timespec ts = { 0, 2000000 }; /* 2 ms */
        nanosleep(&ts, NULL);
        c.run = r;
        hr_pool_run(p, body, &c);
        for (int i = 0; i < 4; i++)
            assert_int_equal(c.run_of[i], r);
    }
    hr_pool_free(p);
}

static void test_edges(void **state)
{
    (void)state;
    assert_null(hr_pool_new(0));
    assert_null(hr_pool_new(-3));
    hr_pool_free(NULL);
    assert_int_equal(hr_pool_n_threads(NULL), 1);
    run_ctx c;
    memset(&c, 0, sizeof c);
    atomic_init(&c.calls, 0);
    c.caller = pthread_self();
    c.run = 1;
    hr_pool_run(NULL, body, &c);
    assert_int_equal(atomic_load(&c.calls), 1);
    assert_int_equal(c.nth_seen[0], 1);
    /* created and freed without a run */
    for (int i = 0; i < 20; i++)
        hr_pool_free(hr_pool_new(1 + i % 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edges),
        cmocka_unit_test(test_rapid_runs),
        cmocka_unit_test(test_oversubscribed),
        cmocka_unit_test(test_sleep_wake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
