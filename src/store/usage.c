/* usage.c - the backend-neutral part of the usage log: a bounded queue of
 * rows and one writer thread that drains it in batches (see usage.h). */
#include "store/usage.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "store/usage_impl.h"

struct hr_usage_db {
    hr_usage_sink *sink;
    hr_usage_params p;

    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* rows queued, flush asked, or stop */
    pthread_cond_t cv_done; /* a batch finished */
    pthread_t thread;

    hr_usage_qrow *ring; /* p.queue_rows slots */
    int32_t head, count;
    hr_usage_qrow *batch; /* writer's copy of one batch */

    uint64_t accepted_seq; /* rows ever accepted */
    uint64_t done_seq;     /* rows written or failed */
    int32_t flush_waiters;
    bool stop;
    bool write_failed;     /* since the last flush */
    char write_error[HR_ERR_MSG_MAX];
    hr_usage_stats st;
};

hr_usage_params hr_usage_defaults(void)
{
    hr_usage_params p = {.queue_rows = 16384, .batch_ms = 100, .busy_ms = 5000};
    return p;
}

char *hr_usage_key_id(const char *key, char *buf)
{
    if (!key || !*key) {
        buf[0] = 0;
        return buf;
    }
    unsigned long long h = (unsigned long long)XXH64(key, strlen(key), 0x6865617274682d6bULL);
    snprintf(buf, HR_USAGE_KEY_ID_LEN, "xxh64:%016llx", h);
    return buf;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    if (!src)
        src = "";
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        /* do not cut a UTF-8 character in half */
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *writer_main(void *arg)
{
    hr_usage_db *db = arg;
    pthread_mutex_lock(&db->mu);
    for (;;) {
        while (db->count == 0 && !db->stop)
            pthread_cond_wait(&db->cv_work, &db->mu);
        if (db->count == 0 && db->stop)
            break;
        /* rows are waiting: collect more for the rest of the batch window,
         * unless someone is flushing, we are stopping or the queue fills */
        struct timespec dl;
        deadline_after(&dl, db->p.batch_ms);
        while (!db->stop && db->flush_waiters == 0 && db->count < db->p.queue_rows / 2)
            if (pthread_cond_timedwait(&db->cv_work, &db->mu, &dl) == ETIMEDOUT)
                break;
        int32_t n = db->count;
        for (int32_t i = 0; i < n; i++)
            db->batch[i] = db->ring[(db->head + i) % db->p.queue_rows];
        db->head = (db->head + n) % db->p.queue_rows;
        db->count = 0;
        pthread_mutex_unlock(&db->mu);

        hr_err err = {0};
        hr_status s = db->sink->write(db->sink, db->batch, n, &err);

        pthread_mutex_lock(&db->mu);
        db->done_seq += (uint64_t)n;
        if (s == HR_OK) {
            db->st.written += (uint64_t)n;
            db->st.batches++;
        } else {
            db->st.failed += (uint64_t)n;
            if (!db->write_failed)
                snprintf(db->write_error, sizeof db->write_error, "%s", err.msg);
            db->write_failed = true;
        }
        pthread_cond_broadcast(&db->cv_done);
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

hr_status hr_usage_open(const char *target, const hr_usage_params *pp, hr_usage_db **out, hr_err *err)
{
    *out = NULL;
    hr_usage_params p = hr_usage_defaults();
    if (pp) {
        if (pp->queue_rows > 0)
            p.queue_rows = pp->queue_rows;
        if (pp->batch_ms > 0)
            p.batch_ms = pp->batch_ms;
        if (pp->busy_ms > 0)
            p.busy_ms = pp->busy_ms;
    }
    if (!target || !*target)
        return hr_err_set(err, HR_ERR_INVALID, "usage log: no database path");
    if (p.queue_rows > (1 << 22))
        return hr_err_set(err, HR_ERR_INVALID, "usage log: queue of %d rows is too large", p.queue_rows);
    const char *path = target;
    if (!strncmp(target, "sqlite:", 7))
        path = target + 7;
    else if (strstr(target, "://"))
        return hr_err_set(err, HR_ERR_UNSUPPORTED, "usage log '%s': only SQLite files are supported so far", target);

    hr_usage_db *db = calloc(1, sizeof *db);
    if (!db)
        return hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory");
    db->p = p;
    db->ring = calloc((size_t)p.queue_rows, sizeof *db->ring);
    db->batch = calloc((size_t)p.queue_rows, sizeof *db->batch);
    if (!db->ring || !db->batch) {
        free(db->ring);
        free(db->batch);
        free(db);
        return hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory for a queue of %d rows", p.queue_rows);
    }
    hr_status s = hr_usage_sqlite_open(path, &p, &db->sink, err);
    if (s != HR_OK) {
        free(db->ring);
        free(db->batch);
        free(db);
        return s;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv_work, &ca);
    pthread_cond_init(&db->cv_done, NULL);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&db->thread, NULL, writer_main, db) != 0) {
        db->sink->close(db->sink);
        pthread_mutex_destroy(&db->mu);
        pthread_cond_destroy(&db->cv_work);
        pthread_cond_destroy(&db->cv_done);
        free(db->ring);
        free(db->batch);
        free(db);
        return hr_err_set(err, HR_ERR_NOMEM, "usage log: cannot start the writer thread");
    }
    *out = db;
    return HR_OK;
}

bool hr_usage_record(hr_usage_db *db, const hr_usage_row *r)
{
    if (!db || !r)
        return false;
    pthread_mutex_lock(&db->mu);
    if (db->stop || db->count == db->p.queue_rows) {
        db->st.dropped++;
        pthread_mutex_unlock(&db->mu);
        return false;
    }
    hr_usage_qrow *q = &db->ring[(db->head + db->count) % db->p.queue_rows];
    q->ts_ms = r->ts_ms > 0 ? r->ts_ms : now_ms();
    copy_str(q->request_id, sizeof q->request_id, r->request_id);
    copy_str(q->key_id, sizeof q->key_id, r->key_id);
    copy_str(q->model, sizeof q->model, r->model);
    copy_str(q->backend, sizeof q->backend, r->backend);
    copy_str(q->finish_reason, sizeof q->finish_reason, r->finish_reason);
    q->prompt_tokens = r->prompt_tokens;
    q->cached_tokens = r->cached_tokens;
    q->completion_tokens = r->completion_tokens;
    q->reasoning_tokens = r->reasoning_tokens;
    q->status = r->status;
    q->ttft_ms = r->ttft_s < 0 ? -1.0 : r->ttft_s * 1000.0;
    q->duration_ms = r->duration_s < 0 ? 0.0 : r->duration_s * 1000.0;
    q->stream = r->stream;
    db->count++;
    db->accepted_seq++;
    db->st.recorded++;
    if (db->count == 1 || db->count >= db->p.queue_rows / 2)
        pthread_cond_signal(&db->cv_work);
    pthread_mutex_unlock(&db->mu);
    return true;
}

hr_status hr_usage_flush(hr_usage_db *db, hr_err *err)
{
    if (!db)
        return HR_OK;
    pthread_mutex_lock(&db->mu);
    uint64_t target = db->accepted_seq;
    db->flush_waiters++;
    pthread_cond_signal(&db->cv_work);
    while (db->done_seq < target)
        pthread_cond_wait(&db->cv_done, &db->mu);
    db->flush_waiters--;
    hr_status s = HR_OK;
    if (db->write_failed) {
        s = hr_err_set(err, HR_ERR_IO, "usage log: %s", db->write_error);
        db->write_failed = false;
    }
    pthread_mutex_unlock(&db->mu);
    return s;
}

hr_status hr_usage_close(hr_usage_db *db, hr_err *err)
{
    if (!db)
        return HR_OK;
    hr_status s = hr_usage_flush(db, err);
    pthread_mutex_lock(&db->mu);
    db->stop = true;
    pthread_cond_signal(&db->cv_work);
    pthread_mutex_unlock(&db->mu);
    pthread_join(db->thread, NULL);
    db->sink->close(db->sink);
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->cv_work);
    pthread_cond_destroy(&db->cv_done);
    free(db->ring);
    free(db->batch);
    free(db);
    return s;
}

void hr_usage_stats_of(hr_usage_db *db, hr_usage_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!db)
        return;
    pthread_mutex_lock(&db->mu);
    *out = db->st;
    pthread_mutex_unlock(&db->mu);
}

hr_status hr_usage_totals_of(const char *target, int64_t since_ms, int64_t until_ms, const char *model,
                             hr_usage_totals *out, hr_err *err)
{
    memset(out, 0, sizeof *out);
    if (!target || !*target)
        return hr_err_set(err, HR_ERR_INVALID, "usage log: no database path");
    const char *path = target;
    if (!strncmp(target, "sqlite:", 7))
        path = target + 7;
    else if (strstr(target, "://"))
        return hr_err_set(err, HR_ERR_UNSUPPORTED, "usage log '%s': only SQLite files are supported so far", target);
    return hr_usage_sqlite_totals(path, since_ms, until_ms, model, out, err);
}
