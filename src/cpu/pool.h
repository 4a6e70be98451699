/* pool.h - a compute thread pool: run one function on n threads at once.
 *
 * hr_pool_run(pool, fn, ctx) calls fn(ctx, ith, nth) for ith = 0..nth-1, the
 * caller itself being thread 0, and returns when every call has returned.
 * Workers wait for the next run by spinning briefly, then sleeping on a
 * condition variable, so a pool with more threads than cores still makes
 * progress instead of burning the cores it shares. One run at a time per
 * pool: hr_pool_run is not reentrant and not to be called concurrently on
 * the same pool. A NULL pool runs fn(ctx, 0, 1) inline. */
#ifndef HR_CPU_POOL_H
#define HR_CPU_POOL_H

typedef struct hr_pool hr_pool;

typedef void (*hr_pool_fn)(void *ctx, int ith, int nth);

/* A pool of n_threads (>= 1; the caller counts as one, so n_threads - 1
 * threads are started). NULL on failure (bad count, out of memory or
 * threads). */
hr_pool *hr_pool_new(int n_threads);

/* Stops and joins the workers. NULL is fine. */
void hr_pool_free(hr_pool *pool);

/* Threads a run uses (1 for NULL). */
int hr_pool_n_threads(const hr_pool *pool);

void hr_pool_run(hr_pool *pool, hr_pool_fn fn, void *ctx);

#endif
