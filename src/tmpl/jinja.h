/* jinja.h - a sandboxed Jinja2 interpreter for chat templates.
 *
 * The dialect is the one Hugging Face `apply_chat_template` uses: Python
 * jinja2 (ImmutableSandboxedEnvironment) with trim_blocks, lstrip_blocks,
 * the loop-controls extension, `tojson` as json.dumps(ensure_ascii=False),
 * `raise_exception(msg)`, `strftime_now(fmt)` and `{% generation %}`.
 * Values print the way Python prints them (True, None, ['a', 1]).
 *
 * A parsed template is immutable: several threads may render it at once.
 * Rendering never does I/O; loop iterations, nesting depth, memory and
 * output size are bounded (hr_tmpl_opts), and every failure - syntax,
 * undefined values used where Python raises, raise_exception() - comes
 * back as an hr_err message, never a crash. See docs/TEMPLATES.md. */
#ifndef HR_TMPL_JINJA_H
#define HR_TMPL_JINJA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "base/span.h"
#include "base/status.h"

typedef struct hr_tmpl hr_tmpl;

/* Fills *out with the current broken-down local time. */
typedef void (*hr_tmpl_clock_fn)(void *ud, struct tm *out);

typedef struct {
    size_t max_output;        /* bytes of output (and of any captured block); 0: 4 MiB */
    size_t max_memory;        /* bytes the renderer may allocate; 0: 256 MiB */
    uint64_t max_iterations;  /* loop iterations + per-element builtin work; 0: 1,000,000 */
    unsigned max_depth;       /* evaluation nesting (expressions, statements, calls); 0: 500 */
    unsigned max_macro_depth; /* nested macro calls; 0: 100 */
    hr_tmpl_clock_fn clock;   /* strftime_now's clock; NULL: the real local time */
    void *clock_ud;
} hr_tmpl_opts;

/* A clock that always answers *(const struct tm *)ud (for tests). */
void hr_tmpl_fixed_clock(void *ud, struct tm *out);

/* Parses a template. Syntax errors (and unknown filter or test names, as
 * in jinja2) fail with HR_ERR_FORMAT and a message with the line number. */
hr_status hr_tmpl_parse(const char *src, size_t len, hr_tmpl **out, hr_err *err);

void hr_tmpl_free(hr_tmpl *t);

/* Renders with the members of the JSON object `ctx` as template variables.
 * opts may be NULL (defaults). On success *out is a malloc'd NUL-terminated
 * string (the caller frees it) and *out_len its length. Errors: HR_ERR_FORMAT
 * (template raised: TypeError, UndefinedError, raise_exception, ...),
 * HR_ERR_LIMIT (a bound was exceeded), HR_ERR_INVALID (ctx not an object). */
hr_status hr_tmpl_render(const hr_tmpl *t, const json_t *ctx, const hr_tmpl_opts *opts,
                         char **out, size_t *out_len, hr_err *err);

/* Renders like hr_tmpl_render and also says which bytes of the output are
 * untrusted: those that come from strings of the context (message content,
 * tool definitions, any request string, object keys too), except the
 * members named in `trusted` (a NULL-terminated list, may be NULL), such as
 * bos_token. The template's own text is trusted. Concatenation (~, +,
 * output) keeps the ranges exact; a new string that a filter, method,
 * slice or operator makes from untrusted input is untrusted as a whole.
 * A tokenizer must not make control tokens from untrusted bytes
 * (hr_tok_encode_marked). *spans (malloc'd, NULL when none; sorted,
 * disjoint) and *n_spans describe them. */
hr_status hr_tmpl_render_marked(const hr_tmpl *t, const json_t *ctx, const hr_tmpl_opts *opts,
                                const char *const *trusted, char **out, size_t *out_len, hr_span **spans,
                                size_t *n_spans, hr_err *err);

/* The same with the context given as JSON text (an object). Unlike jansson,
 * this reader accepts NUL bytes in object keys; duplicate keys keep the last
 * value, as Python's json module does. */
hr_status hr_tmpl_render_json(const hr_tmpl *t, const char *ctx_json, size_t len, const hr_tmpl_opts *opts,
                              char **out, size_t *out_len, hr_err *err);

/* Convenience for the server: parses `tmpl` and renders it with the usual
 * chat-template variables. messages must be an array; tools may be NULL
 * (then `tools` is undefined); bos/eos may be NULL (then ""); extra may be
 * NULL or an object whose members are added as variables (enable_thinking,
 * reasoning_effort, ...). */
hr_status hr_chat_render(const char *tmpl, const json_t *messages, const json_t *tools,
                         bool add_generation_prompt, const char *bos_token,
                         const char *eos_token, const json_t *extra,
                         const hr_tmpl_opts *opts, char **out, size_t *out_len, hr_err *err);

/* The same, and the untrusted ranges of the output as hr_tmpl_render_marked
 * gives them: everything from messages, tools and extra; bos_token,
 * eos_token and add_generation_prompt are trusted. */
hr_status hr_chat_render_marked(const char *tmpl, const json_t *messages, const json_t *tools,
                                bool add_generation_prompt, const char *bos_token, const char *eos_token,
                                const json_t *extra, const hr_tmpl_opts *opts, char **out, size_t *out_len,
                                hr_span **spans, size_t *n_spans, hr_err *err);

/* The context members hr_chat_render_marked trusts (NULL-terminated). */
extern const char *const hr_chat_trusted_vars[];

/* Reads a model's chat template (tokenizer.chat_template) and, when the file
 * has them, the text of its BOS and EOS tokens (tokenizer.ggml.bos_token_id /
 * eos_token_id looked up in tokenizer.ggml.tokens). Results are malloc'd
 * (*bos / *eos NULL when absent; pass NULL to skip). HR_ERR_NOT_FOUND when
 * the model has no template. */
struct hr_gguf;
hr_status hr_chat_template_from_gguf(const struct hr_gguf *g, char **tmpl, char **bos, char **eos, hr_err *err);

#endif
