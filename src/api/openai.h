/* openai.h - the OpenAI-compatible request and response formats, as pure
 * functions: no sockets, no threads, no clocks (the caller passes ids and
 * timestamps). The HTTP layer (src/http/) feeds request bodies in and
 * scheduler events (src/sched/) through; the fuzz target drives the parser.
 *
 * Parsing validates every field hearth knows, renders chat messages with
 * the model's template (or the fallback format of docs/SERVER.md),
 * tokenizes, and checks the prompt + max_tokens against the context. On
 * failure it fills an hr_api_error with the HTTP status, OpenAI error type,
 * the offending parameter and a message. Unknown fields are ignored; fields
 * hearth knows but does not implement (tools, response_format with a
 * schema, ...) are a 400 that says so. */
#ifndef HR_API_OPENAI_H
#define HR_API_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/reasoning.h"
#include "sched/sched.h"
#include "tok/vocab.h"

struct hr_tmpl;

#define HR_API_MAX_N 16        /* completions per prompt (n) */
#define HR_API_MAX_PROMPTS 16  /* prompts in one /v1/completions request */
#define HR_API_MAX_BIAS 1024   /* logit_bias entries */
#define HR_API_MAX_MESSAGES 4096
#define HR_API_MAX_CHOICES 64  /* n x prompts in one request (choices of one response) */
#define HR_API_MAX_N_ROUTED 128 /* n of a request routed to an upstream */
#define HR_API_MAX_RESPONSE (64u << 20) /* bytes of one non-streamed response (default cap) */

/* A growable byte buffer with a hard cap (appends past it fail). */
typedef struct hr_api_buf {
    char *p;
    size_t len, cap, max;
} hr_api_buf;

bool hr_api_buf_put(hr_api_buf *b, const void *s, size_t n);
bool hr_api_buf_puts(hr_api_buf *b, const char *s);
void hr_api_buf_free(hr_api_buf *b);

typedef struct {
    int status;        /* HTTP status: 400, 401, 404, 413, 429, 500, 503 */
    char type[40];     /* invalid_request_error, authentication_error, ... */
    char param[64];    /* "" -> null */
    char code[48];     /* "" -> null */
    char message[512];
} hr_api_error;

void hr_api_error_set(hr_api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* {"error": {"message", "type", "param", "code"}} as a malloc'd string. */
char *hr_api_error_json(const hr_api_error *e);

/* What the server knows about its one model. Immutable; shared by threads. */
typedef struct {
    const hr_vocab *vocab;
    int32_t n_vocab;
    int32_t n_ctx;               /* positions per sequence (the scheduler's) */
    const char *id;              /* the name clients use ("model") */
    const char *alt_id;          /* also accepted (the file's base name); may be NULL */
    const struct hr_tmpl *tmpl;  /* NULL: the fallback chat format */
    const char *bos_text, *eos_text; /* template variables; may be NULL */
    hr_reason_kind reasoning;    /* how to split reasoning_content from content (hr_reason_kind_for);
                                    OFF: never */
    int64_t created;             /* for /v1/models */
    const char *owned_by;
    const char *arch;            /* hearth metadata in /v1/models */
    uint64_t n_params;
    uint64_t size_bytes;
    const char *template_source; /* "gguf", "file", "fallback" */
    int32_t max_token_bytes;     /* text bytes one token covers at most (hr_api_max_token_bytes); 0: unknown */
    size_t max_response;         /* cap on a non-streamed response body; 0: HR_API_MAX_RESPONSE */
} hr_api_model;

/* The most bytes of prompt text one token of `v` can stand for (its
 * longest piece, specials included, and 4 for an unknown character), so a
 * text of L bytes has at least ceil(L / that) tokens; 0 when the
 * tokenizer may drop bytes (no unknown token and a byte without a token),
 * where no such bound holds. */
int32_t hr_api_max_token_bytes(const hr_vocab *v);

typedef enum { HR_API_CHAT = 1, HR_API_COMPLETION = 2 } hr_api_kind;

typedef struct {
    int32_t *ids;
    int32_t n;
    int32_t max_tokens;
} hr_api_prompt;

/* A validated request, ready for hr_sched_submit (one submit per prompt). */
typedef struct {
    hr_api_kind kind;
    bool stream;
    bool include_usage;
    bool chat_logprobs;     /* chat: logprobs=true */
    bool think_start;       /* chat: the rendered prompt leaves the model inside <think> */
    bool reasoning;         /* chat: split reasoning from content */
    int32_t n_prompts;
    hr_api_prompt prompts[HR_API_MAX_PROMPTS];
    hr_gen_params gen;      /* prompt / n_prompt / max_tokens: see hr_api_gen_for */
    char *stop[HR_MAX_STOP];
    int32_t *bias_ids;
    float *bias;
    char *rendered;         /* chat: the rendered prompt text (for logs and tests) */
    bool max_given;         /* the request set max_tokens / max_completion_tokens */
} hr_api_request;

/* What routing and budgets need of a request, read with the same
 * validators as the full parse (so "n": 16.0 is 16 here as there). */
typedef struct {
    char model[256];        /* "" when absent */
    bool stream, include_usage;
    int32_t n;              /* >= 1 (the local parse allows HR_API_MAX_N, routes HR_API_MAX_N_ROUTED) */
    int32_t max_tokens;     /* max_completion_tokens, else max_tokens; 0 when absent */
    int32_t n_prompts;      /* completions: prompts in the request; chat: 1 */
} hr_api_head;

/* A request body parsed once (JSON), for hr_api_parse_doc and routing. */
typedef struct hr_api_doc hr_api_doc;

/* Checks UTF-8, parses the JSON and reads the head. *out is freed with
 * hr_api_doc_free (also on failure). */
hr_status hr_api_doc_parse(hr_api_kind kind, const char *body, size_t len, hr_api_doc **out, hr_api_head *head,
                           hr_api_error *e);
void hr_api_doc_free(hr_api_doc *d);
/* The full parse of a parsed body. With `any_model`, a `model` other than
 * the local model's is accepted (a route chose the local engine). */
hr_status hr_api_parse_doc(const hr_api_model *m, const hr_api_doc *d, uint64_t seed, bool any_model,
                           hr_api_request **out, hr_api_error *e);
/* The body to forward to an upstream, without its "model" (spliced in per
 * target: hr_router_body_model): stream_options.include_usage set when
 * `stream`, max_tokens added when the request has none and `max_tokens` >
 * 0. Changes the doc (call it after hr_api_parse_doc). malloc'd, or NULL. */
char *hr_api_doc_forward(hr_api_doc *d, bool stream, int32_t max_tokens, size_t *out_len);
/* Without a max_tokens in the request, generate at most `max_tokens` per
 * completion (never past the context). */
void hr_api_request_default_max(hr_api_request *r, const hr_api_model *m, int32_t max_tokens);
/* Tokens the request can use at most: its prompts plus n x max_tokens each. */
int64_t hr_api_request_tokens(const hr_api_request *r);

/* Parses and validates a request body. Returns HR_OK and *out (free with
 * hr_api_request_free) or an error with *e filled. `seed` is used when the
 * request has none. */
hr_status hr_api_parse(const hr_api_model *m, hr_api_kind kind, const char *body, size_t len, uint64_t seed,
                       hr_api_request **out, hr_api_error *e);
void hr_api_request_free(hr_api_request *r);
/* The scheduler parameters of prompt i. */
hr_gen_params hr_api_gen_for(const hr_api_request *r, int32_t i);

/* Chat rendering alone (messages array -> prompt text): template or fallback. */
hr_status hr_api_render_chat(const hr_api_model *m, const char *messages_json, size_t len, char **out,
                             hr_api_error *e);

/* The reasoning splitters (hr_think, hr_reason): api/reasoning.h. */

/* Response builder: feed the events of each prompt's request; streamed
 * requests get SSE bytes appended to `out` as they come, others get one
 * JSON document at the end. */
typedef struct hr_api_resp hr_api_resp;

hr_api_resp *hr_api_resp_new(const hr_api_model *m, const hr_api_request *rq, const char *id, int64_t created);
void hr_api_resp_free(hr_api_resp *r);
/* false: out of memory or a cap reached (the caller fails the request). */
bool hr_api_resp_event(hr_api_resp *r, int32_t prompt, const hr_event *ev, hr_api_buf *out);
/* true if any completion ended cancelled or with an error. */
bool hr_api_resp_failed(const hr_api_resp *r, hr_api_error *e);
/* Streaming: the usage chunk (include_usage) and "data: [DONE]". */
bool hr_api_resp_stream_end(hr_api_resp *r, const hr_req_usage *u, hr_api_buf *out);
/* Non-streaming: the whole response (malloc'd), or NULL. */
char *hr_api_resp_json(hr_api_resp *r, const hr_req_usage *u);
/* For metering: tokens whose text went to reasoning_content (all choices;
 * counted per text event, i.e. per sampled token with text), and the first
 * choice's finish reason ("stop", "length", "cancelled", "error", "none"). */
void hr_api_resp_summary(const hr_api_resp *r, int32_t *reasoning_tokens, const char **finish_reason);

/* Sums per-prompt usages (prompt and completion tokens, cached tokens). */
void hr_api_usage_add(hr_req_usage *acc, const hr_req_usage *u);

/* GET /v1/models (and /v1/models/{id} when one is true). */
char *hr_api_models_json(const hr_api_model *m, bool one);
/* POST /tokenize and /detokenize (llama-server shapes). Returns the JSON
 * body or NULL with *e filled. */
char *hr_api_tokenize(const hr_api_model *m, const char *body, size_t len, hr_api_error *e);
char *hr_api_detokenize(const hr_api_model *m, const char *body, size_t len, hr_api_error *e);

/* Appends `n` bytes as JSON-safe UTF-8: invalid sequences become U+FFFD. */
bool hr_api_utf8_sanitize(const char *s, size_t n, hr_api_buf *out);

#endif
