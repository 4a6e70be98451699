/* pool.c - see pool.h.
 *
 * A run is published by bumping `gen` (under the mutex, so a worker about to
 * sleep cannot miss it); a worker that finishes decrements `pending`, and the
 * last one wakes the caller under the mutex. Both waits spin a bounded number
 * of times first (cheap when the next run comes right away, as in a forward
 * pass) and then block on a condition variable (so oversubscribed threads
 * yield their cores). */
#include "cpu/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ volatile("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

/* About tens of microseconds of polling before sleeping; a pool with more
 * threads than online CPUs polls far less (a spinning thread would hold a
 * core the working ones need) and yields the CPU between polls.
 *
 * Each waiting thread also adapts its own budget (between SPIN_MIN and the
 * pool's spin): a wait that had to sleep halves it when the sleep was long
 * (the other side was not running: polling only burnt CPU that a machine
 * shared with other processes needs, and that our own busy thread may be
 * waiting for), and doubles it when the sleep was short (polling a little
 * longer would have avoided the sleep and its wake-up latency). On a
 * dedicated machine waits end while polling and the budget stays full. */
#define SPIN_ITERS 4000
#define SPIN_ITERS_OVERSUBSCRIBED 16
#define SPIN_MIN 16
#define SHORT_SLEEP_NS 50000

struct worker {
    hr_pool *pool;
    int ith;
    pthread_t thread;
};

struct hr_pool {
    int n;
    struct worker *workers; /* n - 1 */
    int started;            /* threads actually created */
    int spin;               /* polls before sleeping */
    bool yield;             /* sched_yield between polls */

    pthread_mutex_t mu;
    pthread_cond_t wake; /* workers: a new run or stop */
    pthread_cond_t done; /* caller: pending reached 0 */
    int sleepers;        /* workers blocked on `wake` (under mu) */
    bool caller_sleeping;

    int caller_budget;   /* the caller's adaptive polling budget */

    _Atomic unsigned gen;
    _Atomic int pending;
    _Atomic bool stop;
    hr_pool_fn fn;
    void *ctx;
};

static inline void relax(const hr_pool *p)
{
    if (p->yield)
        sched_yield();
    else
        CPU_RELAX();
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* After a wait that slept from t0: adapt the polling budget (see above). */
static void adapt_budget(const hr_pool *p, int *budget, int64_t t0)
{
    if (now_ns() - t0 < SHORT_SLEEP_NS)
        *budget = *budget * 2 < p->spin ? *budget * 2 : p->spin;
    else
        *budget = *budget / 2 > SPIN_MIN ? *budget / 2 : SPIN_MIN;
}

static bool wait_new_run(hr_pool *p, unsigned seen, int *budget)
{
    for (int i = 0; i < *budget; i++) {
        if (atomic_load_explicit(&p->gen, memory_order_acquire) != seen)
            return true;
        relax(p);
    }
    const int64_t t0 = now_ns();
    pthread_mutex_lock(&p->mu);
    p->sleepers++;
    while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen &&
           !atomic_load_explicit(&p->stop, memory_order_relaxed))
        pthread_cond_wait(&p->wake, &p->mu);
    p->sleepers--;
    pthread_mutex_unlock(&p->mu);
    adapt_budget(p, budget, t0);
    return atomic_load_explicit(&p->gen, memory_order_acquire) != seen;
}

static void *worker_main(void *arg)
{
    struct worker *wk = arg;
    hr_pool *p = wk->pool;
    unsigned seen = 0;
    int budget = p->spin;
    for (;;) {
        if (!wait_new_run(p, seen, &budget) || atomic_load_explicit(&p->stop, memory_order_acquire))
            break;
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        p->fn(p->ctx, wk->ith, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            if (p->caller_sleeping)
                pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

hr_pool *hr_pool_new(int n_threads)
{
    if (n_threads < 1 || n_threads > 1024)
        return NULL;
    hr_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = n_threads;
    const long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    const bool over = ncpu > 0 && n_threads > ncpu;
    p->spin = over ? SPIN_ITERS_OVERSUBSCRIBED : SPIN_ITERS;
    p->yield = over;
    p->caller_budget = p->spin;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->gen, 0u);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, false);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            hr_pool_free(p);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            p->workers[i].pool = p;
            p->workers[i].ith = i + 1;
            if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
                hr_pool_free(p);
                return NULL;
            }
            p->started++;
        }
    }
    return p;
}

void hr_pool_free(hr_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->started; i++)
        pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

int hr_pool_n_threads(const hr_pool *p) { return p ? p->n : 1; }

void hr_pool_run(hr_pool *p, hr_pool_fn fn, void *ctx)
{
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1u, memory_order_release);
    if (p->sleepers > 0)
        pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    fn(ctx, 0, p->n);

    for (int i = 0; i < p->caller_budget; i++) {
        if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0)
            return;
        relax(p);
    }
    const int64_t t0 = now_ns();
    pthread_mutex_lock(&p->mu);
    p->caller_sleeping = true;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0)
        pthread_cond_wait(&p->done, &p->mu);
    p->caller_sleeping = false;
    pthread_mutex_unlock(&p->mu);
    adapt_budget(p, &p->caller_budget, t0);
}
