/* sched.h - the scheduler: one thread that owns every sequence, the engine
 * and the paged KV cache, and serves generation requests by continuous
 * batching.
 *
 * Other threads (the HTTP layer, the CLI) only submit requests and read
 * their events; they never touch sequences or KV state. Each scheduler step
 * builds one batch under a token budget: one decode token for every running
 * sequence, then chunks of pending prompts (chunked prefill), so streams
 * keep flowing while a long prompt is processed. Full KV blocks are hashed
 * by their token prefix and shared between sequences (prefix caching);
 * when the pool runs out the youngest sequence is preempted and recomputed
 * later, so a request that fits is never failed for lack of memory.
 *
 * Life of a request:
 *   hr_sched_submit() -> queued -> admitted (prefill, maybe partly from the
 *   prefix cache) -> decoding -> done (stop / length / cancelled / error).
 * Admission takes queued requests in order, but one that does not fit yet
 * (n completions need n free slots, its prompt needs KV blocks) is passed
 * by later ones that do, for at most bypass_s seconds; after that nothing
 * behind it is admitted until it fits, so it cannot starve.
 * Events (text deltas, the final event) are queued on the request and the
 * submitter's notify callback is called from the scheduler thread whenever
 * new events are ready; the consumer drains them with hr_req_poll().
 * Sampling of the step's sequences runs on the engine's compute pool, one
 * sequence per task; each sequence has its own sampler, so the result is
 * the same whatever the thread count. */
#ifndef HR_SCHED_SCHED_H
#define HR_SCHED_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "model/model.h"
#include "sample/sampler.h"

typedef struct hr_sched hr_sched;
typedef struct hr_req hr_req;

typedef struct {
    int32_t n_ctx;          /* positions per sequence; <= 0: the model's training context */
    int64_t kv_bytes;       /* KV pool size; <= 0: derived from n_ctx x max_running */
    int32_t block_tokens;   /* positions per KV block (default 16) */
    int32_t max_running;    /* sequences in the running batch (default 16) */
    int32_t max_queue;      /* requests waiting for admission before submit says HR_ERR_LIMIT (default 256) */
    int32_t step_tokens;    /* token budget of one step (default 256) */
    int32_t n_threads;      /* compute threads (default 1) */
    double timeout_s;       /* per-request wall-clock limit; <= 0: none */
    double bypass_s;        /* seconds a queued request that does not fit may be passed by later ones
                               that do; then admission waits for it (0: strict order; < 0: default 5) */
} hr_sched_params;

hr_sched_params hr_sched_defaults(void);

/* Starts the scheduler thread. The model must outlive the scheduler. */
hr_status hr_sched_new(const hr_model *m, const hr_sched_params *p, hr_sched **out, hr_err *err);
/* Cancels everything still running, joins the thread, frees all state.
 * Requests not yet released stay valid (their final event says cancelled)
 * until hr_req_release. */
void hr_sched_free(hr_sched *s);

/* The effective parameters (defaults filled in, n_ctx clamped). */
const hr_sched_params *hr_sched_params_of(const hr_sched *s);

#define HR_MAX_STOP 64        /* stop strings per request */
#define HR_MAX_STOP_LEN 512   /* bytes per stop string */
#define HR_MAX_TOP_LOGPROBS 20

typedef struct {
    const int32_t *prompt;      /* token ids, copied at submit */
    int32_t n_prompt;           /* >= 1 */
    int32_t max_tokens;         /* >= 1; n_prompt + max_tokens <= n_ctx or submit fails */
    int32_t n;                  /* completions for this prompt (>= 1) */
    hr_sample_params sample;    /* seed: completion i uses seed + i */
    const int32_t *bias_ids;    /* logit bias (OpenAI logit_bias) */
    const float *bias;
    int32_t n_bias;
    const char *const *stop;    /* stop strings (not included in the output) */
    int32_t n_stop;
    bool ignore_eos;            /* keep generating past end-of-generation tokens */
    int32_t logprobs;           /* -1: none; 0..20: chosen token's logprob + that many alternatives */
} hr_gen_params;

typedef enum {
    HR_FINISH_NONE = 0,
    HR_FINISH_STOP,      /* end-of-generation token or a stop string */
    HR_FINISH_LENGTH,    /* max_tokens or the context end */
    HR_FINISH_CANCELLED, /* hr_req_cancel, timeout or scheduler shutdown */
    HR_FINISH_ERROR,
} hr_finish;

const char *hr_finish_name(hr_finish f); /* "stop", "length", "cancelled", "error" */

typedef enum {
    HR_EV_TEXT = 1, /* new text of one completion (and the token(s) behind it) */
    HR_EV_DONE,     /* one completion finished */
} hr_ev_kind;

typedef struct {
    int32_t token;
    float logprob;
    int32_t n_top;
    int32_t top_ids[HR_MAX_TOP_LOGPROBS];
    float top_logprobs[HR_MAX_TOP_LOGPROBS];
} hr_token_info;

typedef struct {
    hr_ev_kind kind;
    int32_t index;            /* completion index, 0..n-1 */
    const char *text;         /* TEXT: complete UTF-8 (NUL-terminated); valid until the next poll */
    size_t len;
    const hr_token_info *tokens; /* TEXT: the tokens sampled since the last event, if logprobs >= 0 */
    int32_t n_tokens;
    hr_finish finish;         /* DONE */
    const char *error;        /* DONE with HR_FINISH_ERROR: what failed (e.g. the engine's message for
                                 a failure that concerns this completion); valid like text */
} hr_event;

typedef struct {
    int32_t prompt_tokens;
    int32_t cached_tokens;      /* prompt tokens served from the prefix cache (first completion) */
    int32_t completion_tokens;  /* all completions together */
    double queue_s;             /* submit -> admitted */
    double ttft_s;              /* submit -> first token of completion 0 */
    double total_s;             /* submit -> last completion done */
} hr_req_usage;

/* Submits a request. `notify(ctx)` is called (from the scheduler thread,
 * without any scheduler or request lock held) whenever events are ready; it
 * must not block, and may call any hr_req_* function on the request
 * (hr_req_poll, hr_req_release included). On success *out holds one
 * reference for the caller (hr_req_release).
 * Errors: HR_ERR_LIMIT when the waiting queue is full (HTTP 429),
 * HR_ERR_INVALID for a request that can never be served (HTTP 400). */
hr_status hr_sched_submit(hr_sched *s, const hr_gen_params *p, void (*notify)(void *ctx), void *ctx, hr_req **out,
                          hr_err *err);

/* Moves up to `max` pending events into evs; their text stays valid until
 * the next call of hr_req_poll or hr_req_release. Returns the count. */
size_t hr_req_poll(hr_req *r, hr_event *evs, size_t max);
/* true once every completion's DONE event has been polled. */
bool hr_req_finished(const hr_req *r);
/* Usage so far (final once finished). */
hr_req_usage hr_req_usage_of(const hr_req *r);
/* Asks the scheduler to stop the request; its KV blocks are freed within
 * one step. Safe from any thread, any number of times. */
void hr_req_cancel(hr_req *r);
/* Drops the caller's reference (cancels it if still running). Once it has
 * returned, notify is never called again: called from another thread while
 * notify runs, it waits for that call to return. */
void hr_req_release(hr_req *r);

typedef struct {
    int32_t running;          /* sequences in the running batch */
    int32_t waiting;          /* requests queued for admission */
    int32_t kv_blocks_total;
    int32_t kv_blocks_used;   /* referenced by a sequence */
    int32_t kv_blocks_cached; /* free but holding a reusable prefix */
    int64_t kv_bytes_per_block;
    uint64_t prompt_tokens;   /* totals since start */
    uint64_t cached_prompt_tokens;
    uint64_t generated_tokens;
    uint64_t preemptions;
    uint64_t prefix_waits;    /* requests held back to share a prefix still being computed */
    uint64_t steps;
    uint64_t requests_done;
} hr_sched_stats;

/* A consistent snapshot (taken under the stats lock). */
void hr_sched_stats_of(hr_sched *s, hr_sched_stats *out);

/* Latency histograms for /metrics: bucket upper bounds in seconds and the
 * count in each bucket (not cumulative; the last is above every bound),
 * for time-to-first-token and inter-token latency. */
#define HR_HIST_BUCKETS 14
extern const double hr_hist_bounds[HR_HIST_BUCKETS];
typedef struct {
    uint64_t counts[HR_HIST_BUCKETS + 1]; /* last: +Inf */
    double sum;
    uint64_t n;
} hr_hist;
void hr_sched_hists(hr_sched *s, hr_hist *ttft, hr_hist *itl);

#endif
