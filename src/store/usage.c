/* usage.c - the backend-neutral part of the usage log: bounded queues of
 * rows and pilot pairs, one writer thread that drains them in batches, and
 * the dispatch of targets to a sink / reader (see usage.h). */
#include "store/usage.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <xxhash.h>

#include "base/clock.h"

#include "store/usage_impl.h"

struct hr_usage_db {
    hr_usage_sink *sink;
    hr_usage_params p;

    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* rows queued, flush asked, or stop */
    pthread_cond_t cv_done; /* a batch finished */
    pthread_t thread;

    /* Rows stay in the ring while they are being written: a batch leaves
     * it only once committed (or given up), so while the database is
     * unreachable the ring is the whole backlog and its capacity the cap. */
    hr_usage_qrow *ring; /* p.queue_rows slots */
    int32_t head, count;
    hr_usage_qrow *batch; /* writer's copy of one batch */
    hr_usage_qpair **pring; /* p.queue_pairs slots */
    int32_t phead, pcount;
    hr_usage_qpair **pbatch;

    uint64_t accepted_seq; /* rows and pairs ever accepted */
    uint64_t done_seq;     /* rows and pairs written or failed */
    int32_t flush_waiters;
    bool stop;
    bool write_failed;     /* since the last flush */
    char write_error[HR_ERR_MSG_MAX];
    hr_usage_stats st;
    /* the current failure episode (writer's, under mu) */
    bool failing;
    bool drop_logged;      /* a drop was logged this episode */
    int64_t fail_since_ms;
    uint64_t fail_dropped0, fail_failed0; /* counters when the episode began */
};

static void say(hr_usage_db *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(hr_usage_db *db, const char *fmt, ...)
{
    char line[HR_ERR_MSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (db->p.log)
        db->p.log(db->p.log_ctx, line);
    else
        fprintf(stderr, "hearth: %s\n", line);
}

hr_usage_params hr_usage_defaults(void)
{
    hr_usage_params p = {.queue_rows = 16384, .batch_ms = 100, .busy_ms = 5000, .queue_pairs = 1024,
                         .flush_wait_ms = 5000, .retry_ms = 250};
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

static size_t utf8_cut(const char *src, size_t n, size_t cap)
{
    if (n >= cap) {
        n = cap - 1;
        /* do not cut a UTF-8 character in half */
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    return n;
}

void hr_usage_copy_str(char *dst, size_t cap, const char *src)
{
    if (!src)
        src = "";
    size_t n = utf8_cut(src, strlen(src), cap);
    memcpy(dst, src, n);
    dst[n] = 0;
}

static char *dup_capped(const char *src, size_t cap)
{
    if (!src)
        src = "";
    size_t n = utf8_cut(src, strnlen(src, cap), cap);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, src, n);
        d[n] = 0;
    }
    return d;
}

bool hr_usage_is_pg(const char *target)
{
    return !strncasecmp(target, "postgres://", 11) || !strncasecmp(target, "postgresql://", 13);
}

void hr_usage_redact(const char *target, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", target);
    /* scheme://user:password@host... -> scheme://user:***@host... */
    char *s = strstr(buf, "://");
    if (!s)
        return;
    s += 3;
    char *at = strchr(s, '@'), *slash = strchr(s, '/');
    if (at && (!slash || at < slash)) {
        char *colon = memchr(s, ':', (size_t)(at - s));
        if (colon) {
            char tail[512];
            snprintf(tail, sizeof tail, "%s", at);
            snprintf(colon, cap - (size_t)(colon - buf), ":***%s", tail);
        }
    }
    /* ...?password=x */
    char *pw = strstr(buf, "password=");
    if (pw) {
        char *end = strchr(pw, '&');
        char tail[512];
        snprintf(tail, sizeof tail, "%s", end ? end : "");
        snprintf(pw, cap - (size_t)(pw - buf), "password=***%s", tail);
    }
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

static void free_qpair(hr_usage_qpair *q)
{
    if (!q)
        return;
    free(q->primary_text);
    free(q->shadow_text);
    free(q);
}

/* Takes the first n rows and np pairs out of the queues (under mu). */
static void resolve(hr_usage_db *db, int32_t n, int32_t np, bool ok)
{
    db->head = (db->head + n) % db->p.queue_rows;
    db->count -= n;
    for (int32_t i = 0; i < np; i++) {
        free_qpair(db->pring[db->phead]);
        db->pring[db->phead] = NULL;
        db->phead = (db->phead + 1) % db->p.queue_pairs;
    }
    db->pcount -= np;
    db->done_seq += (uint64_t)n + (uint64_t)np;
    if (ok) {
        db->st.written += (uint64_t)n;
        db->st.pairs_written += (uint64_t)np;
        db->st.batches++;
    } else {
        db->st.failed += (uint64_t)n;
        db->st.pairs_failed += (uint64_t)np;
    }
    pthread_cond_broadcast(&db->cv_done);
}

static void *writer_main(void *arg)
{
    hr_usage_db *db = arg;
    bool retrying = false;
    int backoff_ms = db->p.retry_ms;
    int64_t give_up_at = 0; /* while flushing / closing through an outage */
    pthread_mutex_lock(&db->mu);
    for (;;) {
        while (db->count == 0 && db->pcount == 0 && !db->stop)
            pthread_cond_wait(&db->cv_work, &db->mu);
        if (db->count == 0 && db->pcount == 0 && db->stop)
            break;
        /* rows are waiting: collect more for the rest of the batch window,
         * unless someone is flushing, we are stopping or a queue fills */
        if (!retrying) {
            struct timespec dl;
            deadline_after(&dl, db->p.batch_ms);
            while (!db->stop && db->flush_waiters == 0 && db->count < db->p.queue_rows / 2 &&
                   db->pcount < db->p.queue_pairs / 2)
                if (pthread_cond_timedwait(&db->cv_work, &db->mu, &dl) == ETIMEDOUT)
                    break;
        }
        int32_t n = db->count, np = db->pcount;
        for (int32_t i = 0; i < n; i++)
            db->batch[i] = db->ring[(db->head + i) % db->p.queue_rows];
        for (int32_t i = 0; i < np; i++)
            db->pbatch[i] = db->pring[(db->phead + i) % db->p.queue_pairs];
        pthread_mutex_unlock(&db->mu);

        hr_err err = {0};
        bool retry = false;
        hr_status s = db->sink->write(db->sink, db->batch, n, db->pbatch, np, &retry, &err);

        pthread_mutex_lock(&db->mu);
        if (s == HR_OK) {
            resolve(db, n, np, true);
            if (db->failing || db->drop_logged) {
                db->failing = false;
                db->drop_logged = false;
                say(db,
                    "usage log: writing again after %.1f s; %d rows of the backlog written, %llu rows lost "
                    "meanwhile (hearth_usage_rows_dropped_total, hearth_usage_rows_failed_total)",
                    (double)(hr_mono_ms() - db->fail_since_ms) / 1000.0, n,
                    (unsigned long long)(db->st.dropped - db->fail_dropped0 + db->st.failed - db->fail_failed0));
            }
            db->st.connected = true;
            retrying = false;
            backoff_ms = db->p.retry_ms;
            give_up_at = 0;
            continue;
        }
        if (!db->write_failed)
            snprintf(db->write_error, sizeof db->write_error, "%s", err.msg);
        db->st.write_errors++;
        if (!db->failing) {
            db->failing = true;
            if (!db->drop_logged) {
                db->fail_since_ms = hr_mono_ms();
                db->fail_dropped0 = db->st.dropped;
                db->fail_failed0 = db->st.failed;
            }
            db->st.episodes++;
            if (retry)
                say(db, "usage log: cannot write (%s); keeping up to %d rows in memory and retrying", err.msg,
                    db->p.queue_rows);
            else
                say(db, "usage log: cannot write (%s); %d rows given up (hearth_usage_rows_failed_total)", err.msg,
                    n);
        }
        if (!retry) {
            db->write_failed = true;
            resolve(db, n, np, false);
            retrying = false;
            continue;
        }
        /* the database went away: keep the batch queued and try again
         * later; generation goes on (record only ever touches the queue) */
        db->st.connected = false;
        db->st.retries++;
        retrying = true;
        int wait = backoff_ms;
        if (db->stop || db->flush_waiters > 0) {
            int64_t now = hr_mono_ms();
            if (!give_up_at)
                give_up_at = now + db->p.flush_wait_ms;
            if (now >= give_up_at) {
                db->write_failed = true;
                resolve(db, n, np, false);
                give_up_at = 0;
                retrying = false;
                continue;
            }
            if (wait > give_up_at - now)
                wait = (int)(give_up_at - now);
            if (wait > db->p.retry_ms)
                wait = db->p.retry_ms;
        } else {
            give_up_at = 0;
            backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
        }
        bool urgent = db->stop || db->flush_waiters > 0;
        struct timespec dl;
        deadline_after(&dl, wait);
        while (!(!urgent && (db->stop || db->flush_waiters > 0)))
            if (pthread_cond_timedwait(&db->cv_work, &db->mu, &dl) == ETIMEDOUT)
                break;
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

static void free_db(hr_usage_db *db)
{
    if (db->pring)
        for (int32_t i = 0; i < db->p.queue_pairs; i++)
            free_qpair(db->pring[i]);
    free(db->ring);
    free(db->batch);
    free(db->pring);
    free(db->pbatch);
    free(db);
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
        if (pp->queue_pairs > 0)
            p.queue_pairs = pp->queue_pairs;
        if (pp->flush_wait_ms > 0)
            p.flush_wait_ms = pp->flush_wait_ms;
        if (pp->retry_ms > 0)
            p.retry_ms = pp->retry_ms;
        p.log = pp->log;
        p.log_ctx = pp->log_ctx;
    }
    if (!target || !*target)
        return hr_err_set(err, HR_ERR_INVALID, "usage log: no database path");
    if (p.queue_rows > (1 << 22))
        return hr_err_set(err, HR_ERR_INVALID, "usage log: queue of %d rows is too large", p.queue_rows);
    if (p.queue_pairs > (1 << 16))
        return hr_err_set(err, HR_ERR_INVALID, "usage log: queue of %d pairs is too large", p.queue_pairs);
    bool pg = hr_usage_is_pg(target);
    const char *path = target;
    if (!strncmp(target, "sqlite:", 7))
        path = target + 7;
    else if (!pg && strstr(target, "://"))
        return hr_err_set(err, HR_ERR_UNSUPPORTED,
                          "usage log '%s': unknown scheme (a SQLite file path, sqlite:PATH, or postgresql://...)",
                          target);

    hr_usage_db *db = calloc(1, sizeof *db);
    if (!db)
        return hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory");
    db->p = p;
    db->ring = calloc((size_t)p.queue_rows, sizeof *db->ring);
    db->batch = calloc((size_t)p.queue_rows, sizeof *db->batch);
    db->pring = calloc((size_t)p.queue_pairs, sizeof *db->pring);
    db->pbatch = calloc((size_t)p.queue_pairs, sizeof *db->pbatch);
    if (!db->ring || !db->batch || !db->pring || !db->pbatch) {
        free_db(db);
        return hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory for a queue of %d rows", p.queue_rows);
    }
    hr_status s = pg ? hr_usage_pg_open(target, &p, &db->sink, err) : hr_usage_sqlite_open(path, &p, &db->sink, err);
    if (s != HR_OK) {
        free_db(db);
        return s;
    }
    db->st.connected = true;
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
        free_db(db);
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
        if (!db->drop_logged && !db->stop) {
            db->drop_logged = true;
            if (!db->failing) { /* the episode starts here (the database is slow, or not failed yet) */
                db->fail_since_ms = hr_mono_ms();
                db->fail_dropped0 = db->st.dropped - 1;
                db->fail_failed0 = db->st.failed;
            }
            say(db, "usage log: queue full (%d rows): dropping rows until writes catch up "
                    "(hearth_usage_rows_dropped_total)", db->p.queue_rows);
        }
        pthread_mutex_unlock(&db->mu);
        return false;
    }
    hr_usage_qrow *q = &db->ring[(db->head + db->count) % db->p.queue_rows];
    q->ts_ms = r->ts_ms > 0 ? r->ts_ms : hr_wall_ms();
    hr_usage_copy_str(q->request_id, sizeof q->request_id, r->request_id);
    hr_usage_copy_str(q->key_id, sizeof q->key_id, r->key_id);
    hr_usage_copy_str(q->model, sizeof q->model, r->model);
    hr_usage_copy_str(q->backend, sizeof q->backend, r->backend);
    hr_usage_copy_str(q->finish_reason, sizeof q->finish_reason, r->finish_reason);
    q->prompt_tokens = r->prompt_tokens;
    q->cached_tokens = r->cached_tokens;
    q->completion_tokens = r->completion_tokens;
    q->reasoning_tokens = r->reasoning_tokens;
    q->status = r->status;
    q->ttft_ms = r->ttft_s < 0 ? -1.0 : r->ttft_s * 1000.0;
    q->duration_ms = r->duration_s < 0 ? 0.0 : r->duration_s * 1000.0;
    q->stream = r->stream;
    q->estimated = r->estimated;
    db->count++;
    db->accepted_seq++;
    db->st.recorded++;
    if (db->count == 1 || db->count >= db->p.queue_rows / 2)
        pthread_cond_signal(&db->cv_work);
    pthread_mutex_unlock(&db->mu);
    return true;
}

static double ms_or_unknown(double s)
{
    return s < 0 ? -1.0 : s * 1000.0;
}

static double score_or_absent(double v)
{
    return v < 0 || v != v ? -1.0 : v > 1 ? 1.0 : v;
}

bool hr_usage_record_pair(hr_usage_db *db, const hr_pilot_pair *p)
{
    if (!db || !p)
        return false;
    /* copy outside the lock: the answers may be 64 KiB each */
    hr_usage_qpair *q = calloc(1, sizeof *q);
    if (q) {
        q->primary_text = dup_capped(p->primary_text, HR_PILOT_TEXT_MAX + 1);
        q->shadow_text = dup_capped(p->shadow_text, HR_PILOT_TEXT_MAX + 1);
    }
    if (!q || !q->primary_text || !q->shadow_text) {
        free_qpair(q);
        pthread_mutex_lock(&db->mu);
        db->st.pairs_dropped++;
        pthread_mutex_unlock(&db->mu);
        return false;
    }
    q->ts_ms = p->ts_ms > 0 ? p->ts_ms : hr_wall_ms();
    hr_usage_copy_str(q->request_id, sizeof q->request_id, p->request_id);
    hr_usage_copy_str(q->route, sizeof q->route, p->route);
    hr_usage_copy_str(q->key_id, sizeof q->key_id, p->key_id);
    hr_usage_copy_str(q->primary_backend, sizeof q->primary_backend, p->primary_backend);
    hr_usage_copy_str(q->primary_model, sizeof q->primary_model, p->primary_model);
    hr_usage_copy_str(q->shadow_backend, sizeof q->shadow_backend, p->shadow_backend);
    hr_usage_copy_str(q->shadow_model, sizeof q->shadow_model, p->shadow_model);
    q->primary_ttft_ms = ms_or_unknown(p->primary_ttft_s);
    q->primary_total_ms = ms_or_unknown(p->primary_total_s);
    q->shadow_ttft_ms = ms_or_unknown(p->shadow_ttft_s);
    q->shadow_total_ms = ms_or_unknown(p->shadow_total_s);
    q->primary_prompt_tokens = p->primary_prompt_tokens;
    q->primary_completion_tokens = p->primary_completion_tokens;
    q->shadow_prompt_tokens = p->shadow_prompt_tokens;
    q->shadow_completion_tokens = p->shadow_completion_tokens;
    q->primary_status = p->primary_status;
    q->shadow_status = p->shadow_status;
    q->score_exact = p->score_exact >= 0.5 ? 1.0 : 0.0;
    q->score_f1 = p->score_f1 < 0 || p->score_f1 != p->score_f1 ? 0.0 : p->score_f1 > 1 ? 1.0 : p->score_f1;
    q->score_json = score_or_absent(p->score_json);
    q->score_judge = score_or_absent(p->score_judge);

    pthread_mutex_lock(&db->mu);
    if (db->stop || db->pcount == db->p.queue_pairs) {
        db->st.pairs_dropped++;
        pthread_mutex_unlock(&db->mu);
        free_qpair(q);
        return false;
    }
    db->pring[(db->phead + db->pcount) % db->p.queue_pairs] = q;
    db->pcount++;
    db->accepted_seq++;
    db->st.pairs_recorded++;
    if (db->pcount == 1 || db->pcount >= db->p.queue_pairs / 2)
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
        s = hr_err_set(err, HR_ERR_IO, "%s", db->write_error);
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
    free_db(db);
    return s;
}

void hr_usage_stats_of(hr_usage_db *db, hr_usage_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!db)
        return;
    pthread_mutex_lock(&db->mu);
    *out = db->st;
    out->buffered = db->count;
    out->capacity = db->p.queue_rows;
    pthread_mutex_unlock(&db->mu);
}

void hr_usage_skip_unauthenticated(hr_usage_db *db)
{
    if (!db)
        return;
    pthread_mutex_lock(&db->mu);
    db->st.unauthenticated++;
    pthread_mutex_unlock(&db->mu);
}

static void put_one(void (*put)(void *, const char *), void *ctx, const char *name, const char *type,
                    const char *help, double v)
{
    char line[512];
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
    put(ctx, line);
}

void hr_usage_metrics(hr_usage_db *db, void (*put)(void *ctx, const char *line), void *ctx)
{
    if (!db)
        return;
    hr_usage_stats st;
    hr_usage_stats_of(db, &st);
    put_one(put, ctx, "hearth_usage_rows_recorded_total", "counter", "Usage rows accepted into the write queue.",
            (double)st.recorded);
    put_one(put, ctx, "hearth_usage_rows_written_total", "counter", "Usage rows committed to the database.",
            (double)st.written);
    put_one(put, ctx, "hearth_usage_rows_dropped_total", "counter",
            "Usage rows not stored because the write queue was full (the database failing or too slow).",
            (double)st.dropped);
    put_one(put, ctx, "hearth_usage_rows_failed_total", "counter",
            "Usage rows given up after a write error (or still unwritten at shutdown).", (double)st.failed);
    put_one(put, ctx, "hearth_usage_write_errors_total", "counter", "Failed usage-log write attempts.",
            (double)st.write_errors);
    put_one(put, ctx, "hearth_usage_write_retries_total", "counter",
            "Usage-log writes retried after a failure that may heal.", (double)st.retries);
    put_one(put, ctx, "hearth_usage_write_episodes_total", "counter", "Times usage-log writes started failing.",
            (double)st.episodes);
    put_one(put, ctx, "hearth_usage_rows_buffered", "gauge", "Usage rows queued in memory, not yet written.",
            (double)st.buffered);
    put_one(put, ctx, "hearth_usage_queue_capacity", "gauge", "Usage rows the queue holds before dropping.",
            (double)st.capacity);
    put_one(put, ctx, "hearth_usage_db_up", "gauge", "1 while usage-log writes succeed, 0 while they fail.",
            st.connected ? 1 : 0);
    put_one(put, ctx, "hearth_usage_unauthenticated_total", "counter",
            "Generation requests refused with 401, counted here instead of stored as usage rows.", (double)st.unauthenticated);
    put_one(put, ctx, "hearth_usage_pairs_dropped_total", "counter", "Pilot pairs not stored: queue full.",
            (double)st.pairs_dropped);
    put_one(put, ctx, "hearth_usage_pairs_failed_total", "counter", "Pilot pairs given up after a write error.",
            (double)st.pairs_failed);
}

/* ---- readers ---- */

void hr_usage_acc_init(hr_usage_acc *acc, hr_usage_totals *out, int64_t until_ms)
{
    memset(acc, 0, sizeof *acc);
    memset(out, 0, sizeof *out);
    acc->out = out;
    acc->until_ms = until_ms;
}

hr_status hr_usage_acc_add(hr_usage_acc *acc, const char *where, int64_t ts, double dur, int64_t pt, int64_t ct,
                           int64_t co, int64_t re, hr_err *err)
{
    hr_usage_totals *out = acc->out;
    if (!(dur >= 0) || dur > 1e12 || pt < 0 || ct < 0 || co < 0 || re < 0)
        return hr_err_set(err, HR_ERR_FORMAT, "usage log '%s': row at ts_ms %lld has invalid counts", where,
                          (long long)ts);
    out->requests++;
    out->prompt_tokens += (uint64_t)pt;
    out->cached_tokens += (uint64_t)ct;
    out->completion_tokens += (uint64_t)co;
    out->reasoning_tokens += (uint64_t)re;
    out->sum_duration_s += dur / 1000.0;
    int64_t end = ts + (int64_t)(dur + 0.5);
    if (out->requests == 1 || ts < out->first_ms)
        out->first_ms = ts;
    if (end > out->last_end_ms)
        out->last_end_ms = end;
    if (acc->n == acc->cap) {
        size_t nc = acc->cap ? acc->cap * 2 : 1024;
        double *a = realloc(acc->a, nc * sizeof *a);
        if (a)
            acc->a = a;
        double *b = realloc(acc->b, nc * sizeof *b);
        if (b)
            acc->b = b;
        if (!a || !b)
            return hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory");
        acc->cap = nc;
    }
    acc->a[acc->n] = (double)ts;
    acc->b[acc->n] = (double)ts + dur;
    if (acc->until_ms > 0 && acc->b[acc->n] > (double)acc->until_ms)
        acc->b[acc->n] = (double)acc->until_ms;
    acc->n++;
    return HR_OK;
}

/* Rows arrive ordered by start (both readers ORDER BY ts_ms), so the union
 * of intervals is one pass. */
void hr_usage_acc_finish(hr_usage_acc *acc)
{
    if (acc->n) {
        double busy = 0, a = acc->a[0], b = acc->b[0];
        for (size_t i = 1; i < acc->n; i++) {
            if (acc->a[i] > b) {
                busy += b - a;
                a = acc->a[i];
                b = acc->b[i];
            } else if (acc->b[i] > b)
                b = acc->b[i];
        }
        busy += b - a;
        acc->out->busy_s = busy / 1000.0;
    }
    free(acc->a);
    free(acc->b);
    acc->a = acc->b = NULL;
    acc->n = acc->cap = 0;
}

hr_status hr_usage_pairs_push(hr_pilot_pair_rec **arr, size_t *n, size_t *cap, const hr_pilot_pair_rec *r, hr_err *err)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        hr_pilot_pair_rec *t = realloc(*arr, nc * sizeof *t);
        if (!t)
            return hr_err_set(err, HR_ERR_NOMEM, "usage log: out of memory");
        *arr = t;
        *cap = nc;
    }
    (*arr)[(*n)++] = *r;
    return HR_OK;
}

static hr_status reader_target(const char *target, const char **path, bool *pg, hr_err *err)
{
    if (!target || !*target)
        return hr_err_set(err, HR_ERR_INVALID, "usage log: no database path");
    *pg = hr_usage_is_pg(target);
    *path = target;
    if (!strncmp(target, "sqlite:", 7))
        *path = target + 7;
    else if (!*pg && strstr(target, "://"))
        return hr_err_set(err, HR_ERR_UNSUPPORTED,
                          "usage log '%s': unknown scheme (a SQLite file path, sqlite:PATH, or postgresql://...)",
                          target);
    return HR_OK;
}

hr_status hr_usage_totals_of(const char *target, int64_t since_ms, int64_t until_ms, const char *model,
                             hr_usage_totals *out, hr_err *err)
{
    memset(out, 0, sizeof *out);
    const char *path = target;
    bool pg = false;
    hr_status s = reader_target(target, &path, &pg, err);
    if (s != HR_OK)
        return s;
    return pg ? hr_usage_pg_totals(target, since_ms, until_ms, model, out, err)
              : hr_usage_sqlite_totals(path, since_ms, until_ms, model, out, err);
}

hr_status hr_usage_pairs_of(const char *target, int64_t since_ms, int64_t until_ms, const char *route,
                            hr_pilot_pair_rec **out, size_t *n, hr_err *err)
{
    *out = NULL;
    *n = 0;
    const char *path = target;
    bool pg = false;
    hr_status s = reader_target(target, &path, &pg, err);
    if (s != HR_OK)
        return s;
    s = pg ? hr_usage_pg_pairs(target, since_ms, until_ms, route, out, n, err)
           : hr_usage_sqlite_pairs(path, since_ms, until_ms, route, out, n, err);
    if (s != HR_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return s;
}
