/* sched.c - continuous batching over the paged KV cache.
 *
 * Threads: the scheduler thread owns everything below "scheduler-only";
 * submitters touch only the submit queue (under s->mu) and their request's
 * event buffers (under r->mu). Nothing here calls back into a submitter
 * except notify(), which is called with no lock held: r->notifying (under
 * r->mu) marks a call in progress and hr_req_release from another thread
 * waits for it to end, so no call starts or runs after release returns.
 *
 * One step:
 *   1. drop cancelled and timed-out work;
 *   2. admit: preempted sequences first, then queued requests, while slots
 *      and KV blocks allow (a new request first attaches whatever prefix the
 *      cache holds; one whose prefix a running sequence is still computing
 *      waits for it, see prefix_in_flight; one that does not fit is passed
 *      by later ones for bypass_s seconds, then holds back the rest);
 *   3. plan the batch: every running sequence's pending tokens, decodes
 *      first, then prompt chunks, under the token budget; if the blocks the
 *      plan needs exceed what is free, preempt the youngest sequences;
 *   4. run the engine, then sample for every sequence whose pending tokens
 *      are all computed, in parallel on the engine's pool (each sequence has
 *      its own sampler), then in order: stop strings, EOS, max_tokens,
 *      context end. An engine failure ends the sequence it concerns with
 *      its message (the others retry next step) or, when it concerns the
 *      whole batch, every sequence in it;
 *   5. register newly full blocks in the prefix cache, free finished
 *      sequences, notify consumers. */
#include "sched/sched.h"
#include "base/clock.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/grow.h"
#include "cpu/pool.h"
#include "engine/engine.h"
#include "engine/kvcache.h"
#include "tok/vocab.h"

const double hr_hist_bounds[HR_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                1.0,   2.5,  5.0,   10.0, 25.0, 60.0, 120.0};

static void hist_add(hr_hist *h, double v)
{
    int i = 0;
    while (i < HR_HIST_BUCKETS && v > hr_hist_bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->n++;
}

const char *hr_finish_name(hr_finish f)
{
    switch (f) {
    case HR_FINISH_STOP: return "stop";
    case HR_FINISH_LENGTH: return "length";
    case HR_FINISH_CANCELLED: return "cancelled";
    case HR_FINISH_ERROR: return "error";
    default: return "none";
    }
}

/* ---- event buffers ---- */

typedef struct {
    hr_ev_kind kind;
    int32_t index;
    size_t text_off, text_len;
    size_t tok_off;
    int32_t n_tok;
    hr_finish finish; /* DONE: its text is the error message, if any */
} ev_rec;

typedef struct {
    ev_rec *ev;
    size_t n, cap;
    char *text;
    size_t tlen, tcap;
    hr_token_info *tok;
    size_t ntok, captok;
} evbuf;


static void evbuf_clear(evbuf *b) { b->n = b->tlen = b->ntok = 0; }

static void evbuf_free(evbuf *b)
{
    free(b->ev);
    free(b->text);
    free(b->tok);
}

/* ---- requests ---- */

typedef enum { SEQ_QUEUED, SEQ_WAIT_FORK, SEQ_RUN, SEQ_PREEMPTED, SEQ_DONE } seq_state;

typedef struct seq seq;

struct hr_req {
    atomic_int refs;
    atomic_bool cancel;
    pthread_mutex_t mu; /* events, released, notifying, usage */
    pthread_cond_t cv;  /* signalled when a notify call ends */
    evbuf pending, taken;
    size_t taken_pos;
    bool released;
    bool notifying;     /* a notify call is running on thread `notifier` */
    pthread_t notifier;
    void (*notify)(void *);
    void *notify_ctx;
    int32_t done_polled;
    hr_req_usage usage;
    bool first_token;
    /* parameters (immutable after submit) */
    int32_t *prompt;
    int32_t n_prompt, max_tokens, n, n_bias, n_stop, logprobs;
    hr_sample_params sample;
    int32_t *bias_ids;
    float *bias;
    char **stop;
    size_t *stop_len;
    size_t max_stop_len;
    bool ignore_eos;
    double t_submit;
    /* scheduler-only */
    seq **seqs;
    int32_t n_seq_done;
    bool touched;
    bool prefix_waited; /* counted once in stats.prefix_waits */
    double blocked_at;  /* when it was first found not to fit, 0: not yet */
    hr_req *next; /* submit queue link */
    hr_req *touch_next, *drop_next;
};

struct seq {
    hr_req *req;
    int32_t index;
    int32_t slot;         /* KV sequence id, -1 when none */
    int32_t *tokens;      /* prompt + generated */
    int32_t n_tokens, cap;
    int32_t n_computed;   /* positions with K/V written */
    int32_t n_gen;
    hr_sampler *smp;
    hr_detok *dt;
    char *hold;           /* decoded text held back (could start a stop string) */
    size_t hold_len, hold_cap;
    seq_state state;
    uint64_t order;       /* admission order: larger = younger */
    double t_last;
    int32_t take;         /* tokens planned in this step */
    int32_t logit_row;    /* row in the step's logits, -1 none */
};

/* One sampled token of one sequence; sample_job runs on the pool. */
typedef struct {
    seq *q;
    float *logits; /* its row (modified) */
    int32_t tok;
    int32_t n_info;
    hr_token_info info;
} samp_job;

struct hr_sched {
    const hr_model *m;
    const hr_vocab *vocab;
    hr_sched_params p;
    int32_t n_vocab;
    hr_engine *engine;
    hr_kv *kv;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* submit queue, stop flag */
    pthread_cond_t cv;
    bool stop;
    hr_req *q_head, *q_tail;
    int32_t n_queued;
    /* scheduler-only */
    seq **running; /* admitted (RUN or WAIT_FORK), admission order */
    int32_t n_running;
    seq **preempted; /* oldest first */
    int32_t n_preempted;
    int32_t *free_slots;
    int32_t n_free_slots;
    uint64_t order;
    int32_t *b_tok, *b_pos, *b_seq;
    bool *b_logits;
    float *logits; /* (max_running, n_vocab) */
    float *scratch; /* (max_running, n_vocab): logits rows of forked completions */
    seq **work;     /* (max_running) this step's sequences (sampling may remove them from running) */
    samp_job *jobs; /* (max_running) */
    /* intrusive lists (no allocation, so out of memory cannot lose a
     * notification or a request's last reference) */
    hr_req *touched; /* requests with new events this step (touch_next) */
    hr_req *drop;    /* requests whose scheduler reference goes after notify (drop_next) */
    char *text;    /* detok scratch */
    size_t text_cap;
    /* stats */
    pthread_mutex_t stats_mu;
    hr_sched_stats stats;
    int32_t preempted_snapshot;
    hr_hist ttft, itl;
};

static void req_free(hr_req *r)
{
    evbuf_free(&r->pending);
    evbuf_free(&r->taken);
    free(r->prompt);
    free(r->bias_ids);
    free(r->bias);
    if (r->stop)
        for (int32_t i = 0; i < r->n_stop; i++)
            free(r->stop[i]);
    free(r->stop);
    free(r->stop_len);
    free(r->seqs);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

static void req_unref(hr_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1)
        req_free(r);
}

hr_sched_params hr_sched_defaults(void)
{
    hr_sched_params p = {
        .n_ctx = 0,
        .kv_bytes = 0,
        .block_tokens = 16,
        .max_running = 16,
        .max_queue = 256,
        .step_tokens = 256,
        .n_threads = 1,
        .timeout_s = 0,
        .bypass_s = 5.0,
    };
    return p;
}

const hr_sched_params *hr_sched_params_of(const hr_sched *s) { return &s->p; }

/* ---- event emission (scheduler thread) ---- */

static void touch(hr_sched *s, hr_req *r)
{
    if (r->touched)
        return;
    r->touched = true;
    r->touch_next = s->touched;
    s->touched = r;
}

/* Appends an event. A text event also keeps room for the DONE events still
 * to come (both buffers start with room for all of them, see submit), so a
 * DONE is never lost and the consumer always sees its request end. false:
 * out of memory, nothing appended (the caller fails the completion rather
 * than send text with a hole in it). */
static bool emit(hr_sched *s, hr_req *r, hr_ev_kind kind, int32_t index, const char *text, size_t len,
                 const hr_token_info *tok, int32_t n_tok, hr_finish finish)
{
    pthread_mutex_lock(&r->mu);
    evbuf *b = &r->pending;
    size_t room = kind == HR_EV_DONE ? 1 : 1 + (size_t)(r->n - r->n_seq_done);
    bool ok = hr_grow((void **)&b->ev, &b->cap, b->n + room, sizeof *b->ev);
    bool text_ok = !len || hr_grow((void **)&b->text, &b->tcap, b->tlen + len + 1, 1);
    bool tok_ok = !n_tok || hr_grow((void **)&b->tok, &b->captok, b->ntok + (size_t)n_tok, sizeof *b->tok);
    if (kind != HR_EV_DONE && (!text_ok || !tok_ok))
        ok = false; /* a DONE goes out without its message rather than not at all */
    if (!text_ok)
        len = 0;
    if (!tok_ok)
        n_tok = 0;
    if (ok) {
        ev_rec *e = &b->ev[b->n++];
        memset(e, 0, sizeof *e);
        e->kind = kind;
        e->index = index;
        e->finish = finish;
        e->text_off = SIZE_MAX;
        if (len) {
            e->text_off = b->tlen;
            e->text_len = len;
            memcpy(b->text + b->tlen, text, len);
            b->tlen += len;
            b->text[b->tlen++] = 0;
        }
        if (n_tok) {
            e->tok_off = b->ntok;
            e->n_tok = n_tok;
            memcpy(b->tok + b->ntok, tok, (size_t)n_tok * sizeof *tok);
            b->ntok += (size_t)n_tok;
        }
    }
    pthread_mutex_unlock(&r->mu);
    touch(s, r);
    return ok;
}

/* ---- slots and sequences ---- */

static seq *seq_new(hr_sched *s, hr_req *r, int32_t index)
{
    seq *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->req = r;
    q->index = index;
    q->slot = -1;
    q->logit_row = -1;
    q->cap = r->n_prompt + 16;
    q->tokens = malloc((size_t)q->cap * sizeof *q->tokens);
    hr_sample_params sp = r->sample;
    sp.seed = r->sample.seed + (uint64_t)index;
    hr_err err;
    if (!q->tokens || hr_sampler_new(&sp, s->n_vocab, &q->smp, &err) || hr_detok_new(s->vocab, false, &q->dt, &err)) {
        hr_sampler_free(q->smp);
        free(q->tokens);
        free(q);
        return NULL;
    }
    for (int32_t i = 0; i < r->n_bias; i++)
        hr_sampler_set_bias(q->smp, r->bias_ids[i], r->bias[i], NULL);
    memcpy(q->tokens, r->prompt, (size_t)r->n_prompt * sizeof *q->tokens);
    q->n_tokens = r->n_prompt;
    /* generated text continues the prompt's text, if it has any */
    for (int32_t i = 0; i < r->n_prompt; i++) {
        int t = hr_vocab_token_type(s->vocab, r->prompt[i]);
        if (t == HR_TOKEN_NORMAL || t == HR_TOKEN_BYTE || t == HR_TOKEN_USER_DEFINED) {
            hr_detok_continue(q->dt);
            break;
        }
    }
    for (int32_t i = 0; i < r->n_prompt; i++)
        hr_sampler_accept(q->smp, r->prompt[i]);
    return q;
}

static void seq_free(seq *q)
{
    if (!q)
        return;
    hr_sampler_free(q->smp);
    hr_detok_free(q->dt);
    free(q->tokens);
    free(q->hold);
    free(q);
}

static void slot_release(hr_sched *s, seq *q)
{
    if (q->slot < 0)
        return;
    hr_kv_seq_clear(s->kv, q->slot);
    s->free_slots[s->n_free_slots++] = q->slot;
    q->slot = -1;
}

static void running_remove(hr_sched *s, seq *q)
{
    for (int32_t i = 0; i < s->n_running; i++)
        if (s->running[i] == q) {
            memmove(s->running + i, s->running + i + 1, (size_t)(s->n_running - i - 1) * sizeof *s->running);
            s->n_running--;
            return;
        }
}

static void preempted_remove(hr_sched *s, seq *q)
{
    for (int32_t i = 0; i < s->n_preempted; i++)
        if (s->preempted[i] == q) {
            memmove(s->preempted + i, s->preempted + i + 1, (size_t)(s->n_preempted - i - 1) * sizeof *s->preempted);
            s->n_preempted--;
            return;
        }
}

/* Ends one completion: final text (when `flush`: what detok and the stop
 * hold kept back), DONE event (with `msg` for an error), resources back. */
static void seq_finish_ex(hr_sched *s, seq *q, hr_finish f, bool flush, const char *msg)
{
    hr_req *r = q->req;
    if (q->state == SEQ_DONE)
        return;
    if (flush) {
        /* flush what detok and the stop-string hold kept back */
        size_t n = hr_detok_flush(q->dt, s->text, s->text_cap);
        size_t tail = n < s->text_cap ? n : 0;
        if (q->hold_len || tail) {
            char *buf = malloc(q->hold_len + tail + 1);
            if (buf) {
                memcpy(buf, q->hold, q->hold_len);
                memcpy(buf + q->hold_len, s->text, tail);
            }
            if (!buf || !emit(s, r, HR_EV_TEXT, q->index, buf, q->hold_len + tail, NULL, 0, HR_FINISH_NONE)) {
                f = HR_FINISH_ERROR; /* the end of the text is lost */
                msg = "out of memory for the generated text";
            }
            free(buf);
        }
    }
    q->hold_len = 0;
    emit(s, r, HR_EV_DONE, q->index, msg, msg ? strlen(msg) : 0, NULL, 0, f);
    if (q->state == SEQ_RUN || q->state == SEQ_WAIT_FORK)
        running_remove(s, q);
    else if (q->state == SEQ_PREEMPTED)
        preempted_remove(s, q);
    slot_release(s, q);
    bool was_parent = q->index == 0 && q->n_gen == 0;
    q->state = SEQ_DONE;
    /* completions waiting to fork from this one's prompt cannot start now */
    if (was_parent)
        for (int32_t c = 1; c < r->n; c++)
            if (r->seqs[c]->state == SEQ_WAIT_FORK)
                seq_finish_ex(s, r->seqs[c], f == HR_FINISH_CANCELLED ? f : HR_FINISH_ERROR, false,
                              f == HR_FINISH_CANCELLED ? NULL
                              : f == HR_FINISH_ERROR  ? msg
                                                      : "the first completion ended before its prompt was computed");
    pthread_mutex_lock(&r->mu);
    r->usage.completion_tokens += q->n_gen;
    pthread_mutex_unlock(&r->mu);
    if (++r->n_seq_done == r->n) {
        pthread_mutex_lock(&r->mu);
        r->usage.total_s = hr_now_s() - r->t_submit;
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_lock(&s->stats_mu);
        s->stats.requests_done++;
        pthread_mutex_unlock(&s->stats_mu);
        /* the scheduler's reference goes after this step's notifications */
        r->drop_next = s->drop;
        s->drop = r;
    }
}

static void seq_finish(hr_sched *s, seq *q, hr_finish f)
{
    seq_finish_ex(s, q, f, f == HR_FINISH_STOP || f == HR_FINISH_LENGTH, NULL);
}

/* Ends one completion with an error that says what failed. */
static void seq_fail(hr_sched *s, seq *q, const char *msg)
{
    seq_finish_ex(s, q, HR_FINISH_ERROR, false, msg);
}

/* Finishes every completion of a request that was never admitted. */
static void req_finish_queued(hr_sched *s, hr_req *r, hr_finish f)
{
    for (int32_t i = 0; i < r->n; i++)
        seq_finish(s, r->seqs[i], f);
}

/* ---- text: detok, stop strings ---- */

/* Longest suffix of text that is a proper prefix of some stop string. */
static size_t stop_holdback(const hr_req *r, const char *text, size_t len)
{
    size_t best = 0;
    for (int32_t i = 0; i < r->n_stop; i++) {
        size_t sl = r->stop_len[i];
        size_t maxk = sl - 1 < len ? sl - 1 : len;
        for (size_t k = maxk; k > best; k--)
            if (!memcmp(text + len - k, r->stop[i], k)) {
                best = k;
                break;
            }
    }
    return best;
}

/* Earliest occurrence of any stop string in text, or SIZE_MAX. */
static size_t stop_find(const hr_req *r, const char *text, size_t len)
{
    size_t best = SIZE_MAX;
    for (int32_t i = 0; i < r->n_stop; i++) {
        const char *p = memmem(text, len, r->stop[i], r->stop_len[i]);
        if (p && (size_t)(p - text) < best)
            best = (size_t)(p - text);
    }
    return best;
}

static bool hold_append(seq *q, const char *t, size_t n)
{
    if (!hr_grow((void **)&q->hold, &q->hold_cap, q->hold_len + n + 1, 1))
        return false;
    memcpy(q->hold + q->hold_len, t, n);
    q->hold_len += n;
    return true;
}

/* Draws the next token of j->q from j->logits (modified). Touches only
 * the job and its sequence's sampler: jobs of different sequences run in
 * parallel on the pool. */
static void sample_job(samp_job *j)
{
    seq *q = j->q;
    const hr_req *r = q->req;
    j->tok = hr_sampler_sample(q->smp, j->logits);
    hr_sampler_accept(q->smp, j->tok);
    j->n_info = 0;
    if (r->logprobs >= 0) {
        j->info.token = j->tok;
        j->info.logprob = hr_sampler_logprob(q->smp, j->tok);
        j->info.n_top =
            r->logprobs ? hr_sampler_top_logprobs(q->smp, r->logprobs, j->info.top_ids, j->info.top_logprobs) : 0;
        j->n_info = 1;
    }
}

typedef struct {
    samp_job *jobs;
    int32_t n;
    atomic_int next;
} samp_run;

static void sample_task(void *ctx, int ith, int nth)
{
    (void)ith;
    (void)nth;
    samp_run *run = ctx;
    for (int j; (j = atomic_fetch_add(&run->next, 1)) < run->n;)
        sample_job(&run->jobs[j]);
}

/* Takes q's sampled token (scheduler thread, in batch order): its text,
 * the stop strings and the finish conditions. `t` is the sampling time. */
static void seq_take(hr_sched *s, seq *q, const samp_job *j, double t)
{
    hr_req *r = q->req;
    const int32_t tok = j->tok;
    const hr_token_info *info = &j->info;
    const int32_t n_info = j->n_info;
    q->n_gen++;
    if (q->n_tokens == q->cap) {
        int32_t cap = q->cap * 2;
        int32_t *nt = realloc(q->tokens, (size_t)cap * sizeof *nt);
        if (!nt) {
            seq_fail(s, q, "out of memory for the generated tokens");
            return;
        }
        q->tokens = nt;
        q->cap = cap;
    }
    q->tokens[q->n_tokens++] = tok;

    pthread_mutex_lock(&s->stats_mu);
    s->stats.generated_tokens++;
    if (q->index == 0 && q->n_gen == 1)
        hist_add(&s->ttft, t - r->t_submit);
    else if (q->t_last > 0)
        hist_add(&s->itl, t - q->t_last);
    pthread_mutex_unlock(&s->stats_mu);
    q->t_last = t;
    if (q->index == 0 && q->n_gen == 1) {
        pthread_mutex_lock(&r->mu);
        r->usage.ttft_s = t - r->t_submit;
        pthread_mutex_unlock(&r->mu);
    }

    if (!r->ignore_eos && hr_vocab_is_eog(s->vocab, tok)) {
        if (n_info && !emit(s, r, HR_EV_TEXT, q->index, NULL, 0, info, n_info, HR_FINISH_NONE))
            seq_fail(s, q, "out of memory for the generated text");
        else
            seq_finish(s, q, HR_FINISH_STOP);
        return;
    }
    size_t n = hr_detok_push(q->dt, tok, s->text, s->text_cap);
    /* >= cap: out of memory in the detokenizer (one token's text always fits) */
    if (n >= s->text_cap || !hold_append(q, s->text, n)) {
        seq_fail(s, q, "out of memory for the generated text");
        return;
    }
    size_t cut = r->n_stop ? stop_find(r, q->hold, q->hold_len) : SIZE_MAX;
    if (cut != SIZE_MAX) {
        bool ok = !(cut || n_info) || emit(s, r, HR_EV_TEXT, q->index, q->hold, cut, info, n_info, HR_FINISH_NONE);
        q->hold_len = 0;
        /* nothing after a stop string */
        seq_finish_ex(s, q, ok ? HR_FINISH_STOP : HR_FINISH_ERROR, false,
                      ok ? NULL : "out of memory for the generated text");
        return;
    }
    size_t keep = r->n_stop ? stop_holdback(r, q->hold, q->hold_len) : 0;
    size_t out = q->hold_len - keep;
    if ((out || n_info) && !emit(s, r, HR_EV_TEXT, q->index, q->hold, out, info, n_info, HR_FINISH_NONE)) {
        seq_fail(s, q, "out of memory for the generated text");
        return;
    }
    memmove(q->hold, q->hold + out, keep);
    q->hold_len = keep;
    if (q->n_gen >= r->max_tokens || q->n_tokens >= s->p.n_ctx)
        seq_finish(s, q, HR_FINISH_LENGTH);
}

/* ---- admission, preemption ---- */

static void preempt(hr_sched *s, seq *q)
{
    running_remove(s, q);
    slot_release(s, q); /* its full blocks stay cached and are likely reattached on resume */
    q->n_computed = 0;
    q->state = SEQ_PREEMPTED;
    /* keep the preempted list oldest first */
    int32_t i = s->n_preempted;
    while (i > 0 && s->preempted[i - 1]->order > q->order) {
        s->preempted[i] = s->preempted[i - 1];
        i--;
    }
    s->preempted[i] = q;
    s->n_preempted++;
    pthread_mutex_lock(&s->stats_mu);
    s->stats.preemptions++;
    pthread_mutex_unlock(&s->stats_mu);
}

static int32_t slot_take(hr_sched *s) { return s->free_slots[--s->n_free_slots]; }

static void running_add(hr_sched *s, seq *q)
{
    /* admission order is kept: older first */
    int32_t i = s->n_running;
    while (i > 0 && s->running[i - 1]->order > q->order) {
        s->running[i] = s->running[i - 1];
        i--;
    }
    s->running[i] = q;
    s->n_running++;
}

/* Tries to give q a slot and its prefix; false (nothing changed) when the
 * cache cannot hold its tokens plus `extra` blocks. */
static bool seq_place(hr_sched *s, seq *q, int32_t extra)
{
    if (s->n_free_slots == 0)
        return false;
    int32_t slot = slot_take(s);
    int32_t got = hr_kv_prefix_attach(s->kv, slot, q->tokens, q->n_tokens);
    int32_t need = hr_kv_seq_blocks_needed(s->kv, slot, q->n_tokens + 1) + extra;
    if (need > hr_kv_blocks_free(s->kv)) {
        hr_kv_seq_clear(s->kv, slot);
        s->free_slots[s->n_free_slots++] = slot;
        return false;
    }
    q->slot = slot;
    q->n_computed = got;
    return true;
}

/* In-flight prefix sharing: true when a running sequence is still
 * computing whole blocks that r's prompt shares with it, beyond what the
 * prefix cache holds now. Admitting r then would compute that shared prefix
 * a second time (16 requests arriving together with one system prompt would
 * each prefill it); r waits instead and attaches the blocks once they are
 * committed. The sequence it waits for is older, so it gets its prefill
 * budget first: the wait ends within a few steps and cannot deadlock. */
static bool prefix_in_flight(hr_sched *s, const hr_req *r)
{
    const int32_t bt = hr_kv_block_tokens(s->kv);
    const int32_t limit = r->n_prompt < 2 ? 0 : (r->n_prompt - 1) / bt * bt;
    if (limit == 0)
        return false;
    int32_t best = 0;
    for (int32_t i = 0; i < s->n_running; i++) {
        const seq *q = s->running[i];
        if (q->state != SEQ_RUN || q->n_tokens - q->n_computed <= 1 || q->n_computed >= limit)
            continue; /* decoding (its blocks are committed) or already past r's prefix */
        int32_t n = q->n_tokens < limit ? q->n_tokens : limit, c = 0;
        while (c < n && q->tokens[c] == r->prompt[c])
            c++;
        c = c / bt * bt;
        if (c > q->n_computed && c > best)
            best = c;
    }
    return best > 0 && best > hr_kv_prefix_probe(s->kv, r->prompt, r->n_prompt);
}

static void admit(hr_sched *s)
{
    /* preempted sequences first, oldest first */
    while (s->n_preempted > 0) {
        seq *q = s->preempted[0];
        if (!seq_place(s, q, 0))
            return;
        preempted_remove(s, q);
        q->state = SEQ_RUN;
        running_add(s, q);
    }
    /* then the queue in order, passing over requests that wait for a
     * prefix being computed (prefix_in_flight) and, for bypass_s seconds,
     * ones that do not fit yet (so a request with n = 16 waiting for
     * 16 free slots does not hold back a small one); once a request has
     * waited that long, nothing behind it is admitted until it fits, so
     * the slots and blocks that free up go to it */
    hr_req *prev = NULL;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        hr_req *r = prev ? prev->next : s->q_head;
        pthread_mutex_unlock(&s->mu);
        if (!r)
            return;
        bool cancelled = atomic_load(&r->cancel);
        if (!cancelled && prefix_in_flight(s, r)) {
            if (!r->prefix_waited) {
                r->prefix_waited = true;
                pthread_mutex_lock(&s->stats_mu);
                s->stats.prefix_waits++;
                pthread_mutex_unlock(&s->stats_mu);
            }
            prev = r;
            continue;
        }
        seq *q0 = r->seqs[0];
        if (!cancelled && (s->n_free_slots < r->n || !seq_place(s, q0, r->n - 1))) {
            const double t = hr_now_s();
            if (r->blocked_at == 0)
                r->blocked_at = t;
            if (t - r->blocked_at >= s->p.bypass_s)
                return; /* it has been passed over long enough */
            prev = r;
            continue;
        }
        if (!cancelled)
            q0->order = ++s->order;
        pthread_mutex_lock(&s->mu);
        if (prev)
            prev->next = r->next;
        else
            s->q_head = r->next;
        if (s->q_tail == r)
            s->q_tail = prev;
        s->n_queued--;
        pthread_mutex_unlock(&s->mu);
        if (cancelled) {
            req_finish_queued(s, r, HR_FINISH_CANCELLED);
            continue;
        }
        double t = hr_now_s();
        pthread_mutex_lock(&r->mu);
        r->usage.queue_s = t - r->t_submit;
        r->usage.cached_tokens = q0->n_computed;
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_lock(&s->stats_mu);
        s->stats.prompt_tokens += (uint64_t)r->n_prompt;
        s->stats.cached_prompt_tokens += (uint64_t)q0->n_computed;
        pthread_mutex_unlock(&s->stats_mu);
        q0->state = SEQ_RUN;
        running_add(s, q0);
        for (int32_t i = 1; i < r->n; i++) {
            seq *q = r->seqs[i];
            q->order = ++s->order;
            q->slot = slot_take(s);
            q->state = SEQ_WAIT_FORK;
            running_add(s, q);
        }
    }
}

/* Drops cancelled / timed-out work everywhere. */
static void reap(hr_sched *s)
{
    double t = hr_now_s();
    for (int32_t i = 0; i < s->n_running; i++) {
        seq *q = s->running[i];
        hr_req *r = q->req;
        if (atomic_load(&r->cancel) || (s->p.timeout_s > 0 && t - r->t_submit > s->p.timeout_s)) {
            seq_finish(s, q, HR_FINISH_CANCELLED);
            i = -1; /* the list changed */
        }
    }
    for (int32_t i = 0; i < s->n_preempted; i++) {
        seq *q = s->preempted[i];
        hr_req *r = q->req;
        if (atomic_load(&r->cancel) || (s->p.timeout_s > 0 && t - r->t_submit > s->p.timeout_s)) {
            seq_finish(s, q, HR_FINISH_CANCELLED);
            i = -1;
        }
    }
    /* queued requests past their deadline */
    if (s->p.timeout_s > 0) {
        pthread_mutex_lock(&s->mu);
        for (hr_req *r = s->q_head; r; r = r->next)
            if (t - r->t_submit > s->p.timeout_s)
                atomic_store(&r->cancel, true);
        pthread_mutex_unlock(&s->mu);
    }
}

/* Plans this step's tokens; preempts the youngest while the blocks the plan
 * needs exceed the free ones. Returns the number of planned tokens. */
static int32_t plan(hr_sched *s)
{
    for (;;) {
        int32_t budget = s->p.step_tokens, blocks = 0;
        for (int32_t i = 0; i < s->n_running; i++)
            s->running[i]->take = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int32_t i = 0; i < s->n_running && budget > 0; i++) {
                seq *q = s->running[i];
                int32_t rem = q->n_tokens - q->n_computed;
                if (q->state != SEQ_RUN || rem <= 0 || (pass == 0) != (rem == 1))
                    continue;
                q->take = rem < budget ? rem : budget;
                budget -= q->take;
                blocks += hr_kv_seq_blocks_needed(s->kv, q->slot, q->n_computed + q->take);
            }
        if (blocks <= hr_kv_blocks_free(s->kv))
            return s->p.step_tokens - budget;
        /* preempt the youngest running sequence */
        seq *victim = NULL;
        for (int32_t i = 0; i < s->n_running; i++)
            if (s->running[i]->state == SEQ_RUN && (!victim || s->running[i]->order > victim->order))
                victim = s->running[i];
        if (!victim)
            return 0;
        preempt(s, victim);
    }
}

/* Notifies the consumers of this step's events, then lets go of the
 * requests that finished. */
static void flush_notifications(hr_sched *s)
{
    for (hr_req *r = s->touched; r; r = r->touch_next) {
        r->touched = false;
        pthread_mutex_lock(&r->mu);
        bool call = !r->released && r->notify;
        if (call) {
            r->notifying = true;
            r->notifier = pthread_self();
        }
        pthread_mutex_unlock(&r->mu);
        if (!call)
            continue;
        r->notify(r->notify_ctx); /* no lock held: it may call hr_req_poll, even hr_req_release */
        pthread_mutex_lock(&r->mu);
        r->notifying = false;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    s->touched = NULL;
    for (hr_req *r = s->drop, *nx; r; r = nx) {
        nx = r->drop_next;
        for (int32_t c = 0; c < r->n; c++) {
            seq_free(r->seqs[c]);
            r->seqs[c] = NULL;
        }
        req_unref(r);
    }
    s->drop = NULL;
}

/* The engine failed this step: the sequence it names (if it is in the
 * batch) ends with the engine's message and the others are simply not
 * advanced, so they run again next step; a failure of the whole batch ends
 * every sequence in it with that message. */
static void engine_failed(hr_sched *s, int32_t nr, const hr_err *err)
{
    char msg[HR_ERR_MSG_MAX + 32];
    snprintf(msg, sizeof msg, "the engine failed: %s", err->msg);
    const int32_t bad = hr_engine_failed_seq(s->engine);
    seq *culprit = NULL;
    for (int32_t i = 0; bad >= 0 && i < nr; i++)
        if (s->work[i]->take && s->work[i]->slot == bad)
            culprit = s->work[i];
    for (int32_t i = 0; i < nr; i++) {
        seq *q = s->work[i];
        if (!q->take)
            continue;
        q->take = 0;
        if (!culprit || q == culprit)
            seq_fail(s, q, msg);
    }
}

static void step(hr_sched *s)
{
    hr_err err = {0};
    reap(s);
    admit(s);
    int32_t n = plan(s);
    if (n > 0) {
        int32_t k = 0, rows = 0;
        for (int32_t i = 0; i < s->n_running; i++) {
            seq *q = s->running[i];
            q->logit_row = -1;
            if (!q->take)
                continue;
            hr_kv_seq_reserve(s->kv, q->slot, q->n_computed + q->take, &err); /* cannot fail after plan() */
            for (int32_t j = 0; j < q->take; j++, k++) {
                s->b_tok[k] = q->tokens[q->n_computed + j];
                s->b_pos[k] = q->n_computed + j;
                s->b_seq[k] = q->slot;
                s->b_logits[k] = false;
            }
            if (q->n_computed + q->take == q->n_tokens) {
                s->b_logits[k - 1] = true;
                q->logit_row = rows++;
            }
        }
        hr_batch b = {.n_tokens = k, .token = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_logits};
        hr_status st = hr_engine_forward(s->engine, s->kv, &b, s->logits, &err);
        /* snapshot: finishing sequences removes them from running */
        const int32_t nr = s->n_running;
        memcpy(s->work, s->running, (size_t)nr * sizeof *s->work);
        if (st) {
            engine_failed(s, nr, &err);
        } else {
            /* in batch order: advance, commit full blocks, fork the first
             * completion's prompt for the others; collect what to sample */
            int32_t n_jobs = 0, n_forked = 0;
            for (int32_t i = 0; i < nr; i++) {
                seq *q = s->work[i];
                if (!q->take)
                    continue;
                q->n_computed += q->take;
                q->take = 0;
                hr_kv_prefix_commit(s->kv, q->slot, q->tokens, q->n_computed);
                if (q->logit_row < 0)
                    continue;
                float *row = s->logits + (size_t)q->logit_row * s->n_vocab;
                hr_req *r = q->req;
                if (q->index == 0 && r->n > 1 && q->n_gen == 0) {
                    for (int32_t c = 1; c < r->n; c++) {
                        seq *f = r->seqs[c];
                        if (f->state != SEQ_WAIT_FORK)
                            continue;
                        if (hr_kv_seq_fork(s->kv, q->slot, f->slot, q->n_computed, &err)) {
                            seq_fail(s, f, err.msg);
                            continue;
                        }
                        f->n_computed = q->n_computed;
                        f->state = SEQ_RUN;
                        float *copy = s->scratch + (size_t)n_forked++ * s->n_vocab;
                        memcpy(copy, row, (size_t)s->n_vocab * sizeof *copy);
                        s->jobs[n_jobs++] = (samp_job){.q = f, .logits = copy};
                    }
                }
                s->jobs[n_jobs++] = (samp_job){.q = q, .logits = row};
            }
            /* sample every sequence at once on the pool: each has its own
             * sampler and row, so the draws do not depend on the split */
            samp_run run = {.jobs = s->jobs, .n = n_jobs};
            atomic_init(&run.next, 0);
            if (n_jobs > 1)
                hr_pool_run(hr_engine_pool(s->engine), sample_task, &run);
            else if (n_jobs == 1)
                sample_job(&s->jobs[0]);
            /* then the text, stop strings and finishes in order */
            const double t = hr_now_s();
            for (int32_t j = 0; j < n_jobs; j++)
                if (s->jobs[j].q->state == SEQ_RUN)
                    seq_take(s, s->jobs[j].q, &s->jobs[j], t);
        }
    }

    pthread_mutex_lock(&s->stats_mu);
    s->stats.steps++;
    s->stats.running = s->n_running;
    s->preempted_snapshot = s->n_preempted;
    s->stats.kv_blocks_total = hr_kv_blocks_total(s->kv);
    s->stats.kv_blocks_used = hr_kv_blocks_total(s->kv) - hr_kv_blocks_free(s->kv);
    s->stats.kv_blocks_cached = hr_kv_blocks_cached(s->kv);
    pthread_mutex_unlock(&s->stats_mu);

    flush_notifications(s);
}

static void *sched_main(void *arg)
{
    hr_sched *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && !s->q_head && s->n_running == 0 && s->n_preempted == 0)
            pthread_cond_wait(&s->cv, &s->mu);
        bool stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        step(s);
    }
    /* shutdown: cancel everything that is left */
    for (;;) {
        pthread_mutex_lock(&s->mu);
        hr_req *r = s->q_head;
        if (r) {
            s->q_head = r->next;
            if (!s->q_head)
                s->q_tail = NULL;
            s->n_queued--;
        }
        pthread_mutex_unlock(&s->mu);
        if (!r)
            break;
        req_finish_queued(s, r, HR_FINISH_CANCELLED);
    }
    while (s->n_running)
        seq_finish(s, s->running[0], HR_FINISH_CANCELLED);
    while (s->n_preempted)
        seq_finish(s, s->preempted[0], HR_FINISH_CANCELLED);
    flush_notifications(s);
    return NULL;
}

/* ---- public API ---- */

hr_status hr_sched_new(const hr_model *m, const hr_sched_params *pp, hr_sched **out, hr_err *err)
{
    *out = NULL;
    const hr_hparams *hp = hr_model_hparams(m);
    hr_sched_params p = *pp;
    hr_sched_params d = hr_sched_defaults();
    if (p.n_ctx <= 0 || p.n_ctx > hp->n_ctx_train)
        p.n_ctx = hp->n_ctx_train;
    if (p.block_tokens <= 0)
        p.block_tokens = d.block_tokens;
    if (p.max_running <= 0)
        p.max_running = d.max_running;
    if (p.max_queue < 0)
        p.max_queue = d.max_queue;
    if (p.step_tokens <= 0)
        p.step_tokens = d.step_tokens;
    if (p.step_tokens < p.max_running)
        p.step_tokens = p.max_running; /* every running sequence decodes each step */
    if (p.n_threads <= 0)
        p.n_threads = 1;
    if (!(p.bypass_s >= 0)) /* negative or NaN */
        p.bypass_s = d.bypass_s;
    size_t per_tok = hr_kv_bytes_per_token(hp);
    if (p.kv_bytes <= 0) {
        int64_t toks = (int64_t)p.n_ctx * p.max_running;
        if (toks > 65536)
            toks = 65536;
        if (toks < p.n_ctx)
            toks = p.n_ctx;
        p.kv_bytes = toks * (int64_t)per_tok;
    }
    int64_t n_blocks = p.kv_bytes / (int64_t)(per_tok * (size_t)p.block_tokens);
    if (n_blocks < (p.n_ctx + p.block_tokens - 1) / p.block_tokens)
        return hr_err_set(err, HR_ERR_INVALID,
                          "KV memory of %lld bytes holds %lld tokens, less than one context of %d tokens",
                          (long long)p.kv_bytes, (long long)(n_blocks * p.block_tokens), p.n_ctx);
    if (n_blocks > INT32_MAX / 2)
        return hr_err_set(err, HR_ERR_INVALID, "KV memory too large");

    hr_sched *s = calloc(1, sizeof *s);
    if (!s)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    s->m = m;
    s->vocab = hr_model_vocab(m);
    s->p = p;
    s->n_vocab = hp->n_vocab;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->stats_mu, NULL);
    hr_kv_params kp = {.n_blocks = (int32_t)n_blocks, .block_tokens = p.block_tokens, .max_seqs = p.max_running};
    hr_engine_params ep = {.max_batch = p.step_tokens, .n_threads = p.n_threads};
    hr_status st = hr_kv_new(hp, &kp, &s->kv, err);
    if (!st)
        st = hr_engine_new(m, &ep, &s->engine, err);
    if (st) {
        hr_sched_free(s);
        return st;
    }
    size_t B = (size_t)p.step_tokens;
    s->running = calloc((size_t)p.max_running, sizeof *s->running);
    s->preempted = calloc((size_t)p.max_running, sizeof *s->preempted);
    s->free_slots = malloc((size_t)p.max_running * sizeof *s->free_slots);
    s->b_tok = malloc(B * sizeof *s->b_tok);
    s->b_pos = malloc(B * sizeof *s->b_pos);
    s->b_seq = malloc(B * sizeof *s->b_seq);
    s->b_logits = malloc(B * sizeof *s->b_logits);
    s->logits = malloc((size_t)p.max_running * (size_t)hp->n_vocab * sizeof *s->logits);
    s->scratch = malloc((size_t)p.max_running * (size_t)hp->n_vocab * sizeof *s->scratch);
    s->work = malloc((size_t)p.max_running * sizeof *s->work);
    s->jobs = malloc((size_t)p.max_running * sizeof *s->jobs);
    s->text_cap = 65536;
    s->text = malloc(s->text_cap);
    if (!s->running || !s->preempted || !s->free_slots || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_logits ||
        !s->logits || !s->scratch || !s->work || !s->jobs || !s->text) {
        hr_sched_free(s);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }
    for (int32_t i = 0; i < p.max_running; i++)
        s->free_slots[i] = p.max_running - 1 - i;
    s->n_free_slots = p.max_running;
    s->stats.kv_bytes_per_block = (int64_t)hr_kv_block_bytes(s->kv);
    s->stats.kv_blocks_total = hr_kv_blocks_total(s->kv);
    if (pthread_create(&s->thread, NULL, sched_main, s)) {
        hr_sched_free(s);
        return hr_err_set(err, HR_ERR_NOMEM, "cannot start the scheduler thread");
    }
    s->started = true;
    *out = s;
    return HR_OK;
}

void hr_sched_free(hr_sched *s)
{
    if (!s)
        return;
    if (s->started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    hr_engine_free(s->engine);
    hr_kv_free(s->kv);
    free(s->running);
    free(s->preempted);
    free(s->free_slots);
    free(s->b_tok);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_logits);
    free(s->logits);
    free(s->scratch);
    free(s->work);
    free(s->jobs);
    free(s->text);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->stats_mu);
    free(s);
}

static hr_status req_copy_params(hr_sched *s, hr_req *r, const hr_gen_params *p, hr_err *err)
{
    r->prompt = malloc((size_t)p->n_prompt * sizeof *r->prompt);
    if (!r->prompt)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    memcpy(r->prompt, p->prompt, (size_t)p->n_prompt * sizeof *r->prompt);
    r->n_prompt = p->n_prompt;
    r->max_tokens = p->max_tokens;
    r->n = p->n;
    r->sample = p->sample;
    r->ignore_eos = p->ignore_eos;
    r->logprobs = p->logprobs;
    if (p->n_bias) {
        r->bias_ids = malloc((size_t)p->n_bias * sizeof *r->bias_ids);
        r->bias = malloc((size_t)p->n_bias * sizeof *r->bias);
        if (!r->bias_ids || !r->bias)
            return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
        memcpy(r->bias_ids, p->bias_ids, (size_t)p->n_bias * sizeof *r->bias_ids);
        memcpy(r->bias, p->bias, (size_t)p->n_bias * sizeof *r->bias);
        r->n_bias = p->n_bias;
    }
    if (p->n_stop) {
        r->stop = calloc((size_t)p->n_stop, sizeof *r->stop);
        r->stop_len = calloc((size_t)p->n_stop, sizeof *r->stop_len);
        if (!r->stop || !r->stop_len)
            return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
        r->n_stop = p->n_stop;
        for (int32_t i = 0; i < p->n_stop; i++) {
            r->stop[i] = strdup(p->stop[i]);
            if (!r->stop[i])
                return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
            r->stop_len[i] = strlen(p->stop[i]);
        }
    }
    r->seqs = calloc((size_t)p->n, sizeof *r->seqs);
    if (!r->seqs)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    for (int32_t i = 0; i < p->n; i++)
        if (!(r->seqs[i] = seq_new(s, r, i)))
            return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    return HR_OK;
}

static hr_status validate(const hr_sched *s, const hr_gen_params *p, hr_err *err)
{
    if (p->n_prompt < 1 || !p->prompt)
        return hr_err_set(err, HR_ERR_INVALID, "the prompt is empty");
    if (p->max_tokens < 1)
        return hr_err_set(err, HR_ERR_INVALID, "max_tokens must be at least 1 (got %d)", p->max_tokens);
    if ((int64_t)p->n_prompt + p->max_tokens > s->p.n_ctx)
        return hr_err_set(err, HR_ERR_INVALID,
                          "this request needs %lld tokens (%d prompt + %d max_tokens) but the context is %d tokens",
                          (long long)p->n_prompt + p->max_tokens, p->n_prompt, p->max_tokens, s->p.n_ctx);
    if (p->n < 1 || p->n > s->p.max_running)
        return hr_err_set(err, HR_ERR_INVALID, "n must be between 1 and %d (got %d)", s->p.max_running, p->n);
    for (int32_t i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= s->n_vocab)
            return hr_err_set(err, HR_ERR_INVALID, "prompt token %d out of range [0, %d)", p->prompt[i], s->n_vocab);
    if (p->n_stop < 0 || p->n_stop > HR_MAX_STOP)
        return hr_err_set(err, HR_ERR_INVALID, "at most %d stop strings are allowed (got %d)", HR_MAX_STOP, p->n_stop);
    for (int32_t i = 0; i < p->n_stop; i++) {
        size_t n = p->stop[i] ? strlen(p->stop[i]) : 0;
        if (n == 0 || n > HR_MAX_STOP_LEN)
            return hr_err_set(err, HR_ERR_INVALID, "stop strings must be 1 to %d bytes", HR_MAX_STOP_LEN);
    }
    if (p->logprobs > HR_MAX_TOP_LOGPROBS)
        return hr_err_set(err, HR_ERR_INVALID, "at most %d top logprobs (got %d)", HR_MAX_TOP_LOGPROBS, p->logprobs);
    for (int32_t i = 0; i < p->n_bias; i++)
        if (p->bias_ids[i] < 0 || p->bias_ids[i] >= s->n_vocab)
            return hr_err_set(err, HR_ERR_INVALID, "logit_bias token %d out of range [0, %d)", p->bias_ids[i], s->n_vocab);
    int64_t blocks = ((int64_t)p->n_prompt + p->max_tokens + s->p.block_tokens - 1) / s->p.block_tokens;
    if (blocks > hr_kv_blocks_total(s->kv))
        return hr_err_set(err, HR_ERR_INVALID, "this request needs %lld KV blocks, the cache has %d",
                          (long long)blocks, hr_kv_blocks_total(s->kv));
    return HR_OK;
}

hr_status hr_sched_submit(hr_sched *s, const hr_gen_params *p, void (*notify)(void *ctx), void *ctx, hr_req **out,
                          hr_err *err)
{
    *out = NULL;
    hr_status st = validate(s, p, err);
    if (st)
        return st;
    hr_req *r = calloc(1, sizeof *r);
    if (!r)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    atomic_init(&r->refs, 2); /* the caller's and the scheduler's */
    atomic_init(&r->cancel, false);
    r->notify = notify;
    r->notify_ctx = ctx;
    r->t_submit = hr_now_s();
    /* room for every DONE event in both buffers (see emit) */
    if (!hr_grow((void **)&r->pending.ev, &r->pending.cap, (size_t)p->n + 1, sizeof *r->pending.ev) ||
        !hr_grow((void **)&r->taken.ev, &r->taken.cap, (size_t)p->n + 1, sizeof *r->taken.ev))
        st = hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    if (st || (st = req_copy_params(s, r, p, err))) {
        if (r->seqs)
            for (int32_t i = 0; i < p->n; i++)
                seq_free(r->seqs[i]);
        req_free(r);
        return st;
    }
    r->usage.prompt_tokens = p->n_prompt;
    for (int32_t i = 0; i < r->n; i++)
        r->seqs[i]->state = SEQ_QUEUED;
    pthread_mutex_lock(&s->mu);
    if (s->stop || s->n_queued >= s->p.max_queue) {
        bool stopping = s->stop;
        pthread_mutex_unlock(&s->mu);
        for (int32_t i = 0; i < r->n; i++)
            seq_free(r->seqs[i]);
        req_free(r);
        if (stopping)
            return hr_err_set(err, HR_ERR_LIMIT, "the server is shutting down");
        return hr_err_set(err, HR_ERR_LIMIT, "the server is at capacity (%d requests waiting); retry later",
                          s->p.max_queue);
    }
    if (s->q_tail)
        s->q_tail->next = r;
    else
        s->q_head = r;
    s->q_tail = r;
    s->n_queued++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    *out = r;
    return HR_OK;
}

size_t hr_req_poll(hr_req *r, hr_event *evs, size_t max)
{
    pthread_mutex_lock(&r->mu);
    if (r->taken_pos >= r->taken.n && r->pending.n) {
        evbuf tmp = r->taken;
        r->taken = r->pending;
        r->pending = tmp;
        evbuf_clear(&r->pending);
        r->taken_pos = 0;
    }
    size_t got = 0;
    while (got < max && r->taken_pos < r->taken.n) {
        const ev_rec *e = &r->taken.ev[r->taken_pos++];
        hr_event *o = &evs[got++];
        memset(o, 0, sizeof *o);
        const char *text = e->text_off == SIZE_MAX ? NULL : r->taken.text + e->text_off;
        o->kind = e->kind;
        o->index = e->index;
        o->text = "";
        o->tokens = e->n_tok ? r->taken.tok + e->tok_off : NULL;
        o->n_tokens = e->n_tok;
        o->finish = e->finish;
        if (e->kind == HR_EV_DONE) {
            r->done_polled++;
            if (e->finish == HR_FINISH_ERROR)
                o->error = text ? text : "internal error while generating";
        } else if (text) {
            o->text = text;
            o->len = e->text_len;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return got;
}

bool hr_req_finished(const hr_req *r)
{
    hr_req *m = (hr_req *)r;
    pthread_mutex_lock(&m->mu);
    bool f = m->done_polled >= m->n;
    pthread_mutex_unlock(&m->mu);
    return f;
}

hr_req_usage hr_req_usage_of(const hr_req *r)
{
    hr_req *m = (hr_req *)r;
    pthread_mutex_lock(&m->mu);
    hr_req_usage u = m->usage;
    pthread_mutex_unlock(&m->mu);
    return u;
}

void hr_req_cancel(hr_req *r) { atomic_store(&r->cancel, true); }

void hr_req_release(hr_req *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->released = true;
    /* a notify call in progress ends before this returns, unless this is
     * that call */
    while (r->notifying && !pthread_equal(r->notifier, pthread_self()))
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    atomic_store(&r->cancel, true); /* no-op for finished requests */
    req_unref(r);
}

void hr_sched_stats_of(hr_sched *s, hr_sched_stats *out)
{
    pthread_mutex_lock(&s->stats_mu);
    *out = s->stats;
    int32_t pre = s->preempted_snapshot;
    pthread_mutex_unlock(&s->stats_mu);
    pthread_mutex_lock(&s->mu);
    out->waiting = s->n_queued + pre;
    pthread_mutex_unlock(&s->mu);
}

void hr_sched_hists(hr_sched *s, hr_hist *ttft, hr_hist *itl)
{
    pthread_mutex_lock(&s->stats_mu);
    *ttft = s->ttft;
    *itl = s->itl;
    pthread_mutex_unlock(&s->stats_mu);
}
