/* openai.c - OpenAI request parsing / validation and response formatting. */
#include "api/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/utf8.h"
#include "tmpl/jinja.h"

/* ---- buffers ---------------------------------------------------------- */

bool hr_api_buf_put(hr_api_buf *b, const void *s, size_t n)
{
    size_t max = b->max ? b->max : HR_API_MAX_RESPONSE;
    if (n > max || b->len > max - n)
        return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return true;
}

bool hr_api_buf_puts(hr_api_buf *b, const char *s) { return hr_api_buf_put(b, s, strlen(s)); }

void hr_api_buf_free(hr_api_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* json_dumps, but NULL when any part of the text could not be stored:
 * jansson 2.14 ignores a failed write of an object key and returns the
 * rest, a document with a hole in it (found by test_alloc_faults). */
typedef struct {
    hr_api_buf b;
    bool failed;
} dump_ctx;

static int dump_cb(const char *buf, size_t n, void *ud)
{
    dump_ctx *d = ud;
    if (d->failed || !hr_api_buf_put(&d->b, buf, n)) {
        d->failed = true;
        return -1;
    }
    return 0;
}

static char *dumps(const json_t *j, size_t flags)
{
    dump_ctx d = {.b = {.max = SIZE_MAX}};
    if (!j || json_dump_callback(j, dump_cb, &d, flags) || d.failed || !d.b.p) {
        hr_api_buf_free(&d.b);
        return NULL;
    }
    return d.b.p;
}

bool hr_api_utf8_sanitize(const char *s, size_t n, hr_api_buf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;
    while (i < n) {
        size_t l = hr_utf8_len(u + i, n - i);
        if (l) {
            i += l;
            continue;
        }
        if (!hr_api_buf_put(out, s + run, i - run) || !hr_api_buf_put(out, "\xEF\xBF\xBD", 3))
            return false;
        i++;
        run = i;
    }
    return hr_api_buf_put(out, s + run, n - run);
}

/* A JSON string of n bytes; invalid UTF-8 becomes U+FFFD. */
static json_t *jstrn(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    hr_api_buf b = {0};
    if (hr_api_utf8_sanitize(s, n, &b))
        j = json_stringn(b.p ? b.p : "", b.len);
    hr_api_buf_free(&b);
    return j ? j : json_string("");
}

/* ---- errors ----------------------------------------------------------- */

void hr_api_error_set(hr_api_error *e, int status, const char *param, const char *code, const char *fmt, ...)
{
    if (!e)
        return;
    memset(e, 0, sizeof *e);
    e->status = status;
    const char *type = "invalid_request_error";
    if (status == 429)
        type = "rate_limit_error";
    else if (status >= 500)
        type = "server_error";
    snprintf(e->type, sizeof e->type, "%s", type);
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *hr_api_error_json(const hr_api_error *e)
{
    json_t *o = json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message", jstrn(e->message, strlen(e->message)),
                          "type", e->type, "param", e->param[0] ? jstrn(e->param, strlen(e->param)) : json_null(),
                          "code", e->code[0] ? json_string(e->code) : json_null());
    char *s = o ? dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

#define BAD(param, ...) (hr_api_error_set(e, 400, param, NULL, __VA_ARGS__), HR_ERR_INVALID)
#define OOM() (hr_api_error_set(e, 500, NULL, NULL, "out of memory"), HR_ERR_NOMEM)

/* ---- field readers ---------------------------------------------------- */

/* Each returns HR_OK when the field is absent or null (leaving *out). */
static hr_status get_bool(json_t *o, const char *k, bool *out, hr_api_error *e)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return HR_OK;
    if (!json_is_boolean(v))
        return BAD(k, "'%s' must be a boolean", k);
    *out = json_is_true(v);
    return HR_OK;
}

static hr_status get_int(json_t *o, const char *k, long long lo, long long hi, long long *out, bool *present,
                         hr_api_error *e)
{
    json_t *v = json_object_get(o, k);
    if (present)
        *present = false;
    if (!v || json_is_null(v))
        return HR_OK;
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != floor(d) || d < -9e18 || d > 9e18)
            return BAD(k, "'%s' must be an integer", k);
        x = (long long)d;
    } else {
        return BAD(k, "'%s' must be an integer", k);
    }
    if (x < lo || x > hi)
        return BAD(k, "'%s' must be between %lld and %lld (got %lld)", k, lo, hi, x);
    *out = x;
    if (present)
        *present = true;
    return HR_OK;
}

static hr_status get_num(json_t *o, const char *k, double lo, double hi, double *out, hr_api_error *e)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return HR_OK;
    if (!json_is_number(v))
        return BAD(k, "'%s' must be a number", k);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return BAD(k, "'%s' must be between %g and %g (got %g)", k, lo, hi, x);
    *out = x;
    return HR_OK;
}

/* ---- chat rendering --------------------------------------------------- */

static const char *role_title(const char *r)
{
    if (!strcmp(r, "system"))
        return "System";
    if (!strcmp(r, "user"))
        return "User";
    if (!strcmp(r, "assistant"))
        return "Assistant";
    return "Tool";
}

/* A failed append of `need` more bytes: the cap (400) or out of memory (500). */
static hr_status buf_fail(hr_api_buf *b, size_t need, const char *param, const char *what, hr_api_error *e)
{
    bool full = b->len > b->max || need > b->max - b->len;
    hr_api_buf_free(b);
    if (!full)
        return OOM();
    hr_api_error_set(e, 400, param, NULL, "%s is too long", what);
    return HR_ERR_LIMIT;
}

/* The fallback chat format for models without a template (docs/SERVER.md):
 * one "Role: content" line per message, then "Assistant:". */
static hr_status render_fallback(json_t *msgs, char **out, hr_api_error *e)
{
    hr_api_buf b = {.max = 16u << 20};
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        json_t *c = json_object_get(m, "content");
        size_t line = strlen(role_title(role)) + 3 + (json_is_string(c) ? json_string_length(c) : 0);
        if (!hr_api_buf_puts(&b, role_title(role)) || !hr_api_buf_puts(&b, ": ") ||
            (json_is_string(c) && !hr_api_buf_put(&b, json_string_value(c), json_string_length(c))) ||
            !hr_api_buf_puts(&b, "\n"))
            return buf_fail(&b, line, "messages", "the conversation", e);
    }
    if (!hr_api_buf_puts(&b, "Assistant:"))
        return buf_fail(&b, 10, "messages", "the conversation", e);
    *out = b.p;
    return HR_OK;
}

/* Validates `messages` and returns a normalised copy for the template:
 * text parts joined, developer -> system, tool-call arguments parsed. */
static hr_status normalise_messages(json_t *msgs, json_t **out, hr_api_error *e)
{
    *out = NULL;
    if (!json_is_array(msgs))
        return BAD("messages", "'messages' must be an array of message objects");
    size_t nm = json_array_size(msgs);
    if (nm == 0)
        return BAD("messages", "'messages' must not be empty");
    if (nm > HR_API_MAX_MESSAGES)
        return BAD("messages", "at most %d messages (got %zu)", HR_API_MAX_MESSAGES, nm);
    json_t *res = json_array();
    if (!res)
        return OOM();
    char pn[64];
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        snprintf(pn, sizeof pn, "messages[%zu]", i);
        if (!json_is_object(m)) {
            json_decref(res);
            return BAD(pn, "%s must be an object", pn);
        }
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role) {
            json_decref(res);
            return BAD(pn, "%s.role must be a string", pn);
        }
        if (strcmp(role, "system") && strcmp(role, "developer") && strcmp(role, "user") &&
            strcmp(role, "assistant") && strcmp(role, "tool")) {
            json_decref(res);
            return BAD(pn, "%s.role must be one of system, developer, user, assistant, tool", pn);
        }
        json_t *nmsg = json_deep_copy(m);
        if (!nmsg || json_array_append_new(res, nmsg) ||
            (!strcmp(role, "developer") && json_object_set_new(nmsg, "role", json_string("system")))) {
            json_decref(res);
            return OOM();
        }
        json_t *c = json_object_get(m, "content");
        if (json_is_array(c)) {
            hr_api_buf b = {.max = 16u << 20};
            size_t j;
            json_t *part;
            json_array_foreach(c, j, part)
            {
                const char *type = json_string_value(json_object_get(part, "type"));
                json_t *text = json_object_get(part, "text");
                if (!json_is_object(part) || !type) {
                    hr_api_buf_free(&b);
                    json_decref(res);
                    return BAD(pn, "%s.content[%zu] must be an object with a 'type'", pn, j);
                }
                if (strcmp(type, "text")) {
                    hr_api_buf_free(&b);
                    json_decref(res);
                    return BAD(pn, "%s.content[%zu]: content parts of type '%s' are not supported (text only)", pn,
                               j, type);
                }
                if (!json_is_string(text)) {
                    hr_api_buf_free(&b);
                    json_decref(res);
                    return BAD(pn, "%s.content[%zu].text must be a string", pn, j);
                }
                if ((j > 0 && !hr_api_buf_puts(&b, "\n")) ||
                    !hr_api_buf_put(&b, json_string_value(text), json_string_length(text))) {
                    json_decref(res);
                    char what[96];
                    snprintf(what, sizeof what, "%s.content", pn);
                    return buf_fail(&b, 1 + json_string_length(text), pn, what, e);
                }
            }
            int bad = json_object_set_new(nmsg, "content", json_stringn(b.p ? b.p : "", b.len));
            hr_api_buf_free(&b);
            if (bad) {
                json_decref(res);
                return OOM();
            }
        } else if (json_is_null(c) || !c) {
            if (strcmp(role, "assistant") || !json_object_get(m, "tool_calls")) {
                json_decref(res);
                return BAD(pn, "%s.content must be a string or a list of text parts", pn);
            }
            if (json_object_set_new(nmsg, "content", json_string(""))) {
                json_decref(res);
                return OOM();
            }
        } else if (!json_is_string(c)) {
            json_decref(res);
            return BAD(pn, "%s.content must be a string or a list of text parts", pn);
        }
        json_t *tc = json_object_get(m, "tool_calls");
        if (tc && !json_is_null(tc)) {
            if (!json_is_array(tc) || strcmp(role, "assistant")) {
                json_decref(res);
                return BAD(pn, "%s.tool_calls must be an array (assistant messages only)", pn);
            }
            json_t *ntc = json_object_get(nmsg, "tool_calls");
            size_t j;
            json_t *call;
            json_array_foreach(ntc, j, call)
            {
                json_t *fn = json_object_get(call, "function");
                if (!json_is_object(fn) || !json_is_string(json_object_get(fn, "name"))) {
                    json_decref(res);
                    return BAD(pn, "%s.tool_calls[%zu].function must be an object with a name", pn, j);
                }
                json_t *args = json_object_get(fn, "arguments");
                if (json_is_string(args)) {
                    json_error_t je;
                    json_t *parsed = json_loadb(json_string_value(args), json_string_length(args),
                                                JSON_DECODE_ANY, &je);
                    if (!parsed) {
                        json_decref(res);
                        return BAD(pn, "%s.tool_calls[%zu].function.arguments is not valid JSON: %s", pn, j,
                                   je.text);
                    }
                    if (json_object_set_new(fn, "arguments", parsed)) {
                        json_decref(res);
                        return OOM();
                    }
                }
            }
        }
    }
    *out = res;
    return HR_OK;
}

/* *plain / *n_plain: the untrusted ranges of *out (request strings), which
 * must not become control tokens (hr_tok_encode_marked). */
static hr_status render_messages(const hr_api_model *m, json_t *msgs, json_t *kwargs, char **out, hr_span **plain,
                                 size_t *n_plain, hr_api_error *e)
{
    *plain = NULL;
    *n_plain = 0;
    json_t *norm;
    hr_status st = normalise_messages(msgs, &norm, e);
    if (st)
        return st;
    if (!m->tmpl) {
        st = render_fallback(norm, out, e);
        json_decref(norm);
        /* the fallback format has no control text: all of it is plain */
        if (!st && (*plain = malloc(sizeof **plain))) {
            (*plain)->off = 0;
            (*plain)->len = strlen(*out);
            *n_plain = 1;
        } else if (!st) {
            free(*out);
            *out = NULL;
            hr_api_error_set(e, 500, NULL, NULL, "out of memory");
            return HR_ERR_NOMEM;
        }
        return st;
    }
    /* a variable lost to a failed allocation would silently change the prompt */
    json_t *ctx = json_object();
    if (!ctx || (json_is_object(kwargs) && json_object_update(ctx, kwargs)) ||
        json_object_set_new(ctx, "messages", norm) || json_object_set_new(ctx, "add_generation_prompt", json_true()) ||
        json_object_set_new(ctx, "bos_token", json_string(m->bos_text ? m->bos_text : "")) ||
        json_object_set_new(ctx, "eos_token", json_string(m->eos_text ? m->eos_text : ""))) {
        if (!ctx)
            json_decref(norm);
        json_decref(ctx);
        return OOM();
    }
    size_t len;
    hr_err err = {0};
    st = hr_tmpl_render_marked(m->tmpl, ctx, NULL, hr_chat_trusted_vars, out, &len, plain, n_plain, &err);
    json_decref(ctx);
    if (st == HR_ERR_NOMEM)
        return OOM();
    if (st) {
        hr_api_error_set(e, 400, "messages", NULL, "the chat template failed on these messages: %s", err.msg);
        return st;
    }
    return HR_OK;
}

hr_status hr_api_render_chat(const hr_api_model *m, const char *messages_json, size_t len, char **out,
                             hr_api_error *e)
{
    json_error_t je;
    json_t *msgs = json_loadb(messages_json, len, 0, &je);
    if (!msgs)
        return BAD("messages", "invalid JSON: %s", je.text);
    hr_span *plain;
    size_t n_plain;
    hr_status st = render_messages(m, msgs, NULL, out, &plain, &n_plain, e);
    free(plain);
    json_decref(msgs);
    return st;
}

/* ---- tokenizing ------------------------------------------------------- */

static hr_status encode_marked(const hr_api_model *m, const char *text, size_t len, bool add_special,
                               bool parse_special, const hr_span *plain, size_t n_plain, int32_t **ids, int32_t *n,
                               hr_api_error *e);

static hr_status encode(const hr_api_model *m, const char *text, size_t len, bool add_special, bool parse_special,
                        int32_t **ids, int32_t *n, hr_api_error *e)
{
    return encode_marked(m, text, len, add_special, parse_special, NULL, 0, ids, n, e);
}

/* plain: untrusted ranges of a rendered chat (parse_special only) */
static hr_status encode_marked(const hr_api_model *m, const char *text, size_t len, bool add_special,
                               bool parse_special, const hr_span *plain, size_t n_plain, int32_t **ids, int32_t *n,
                               hr_api_error *e)
{
    size_t cap = len + 16, got = 0;
    int32_t *buf = malloc(cap * sizeof *buf);
    if (!buf) {
        hr_api_error_set(e, 500, NULL, NULL, "out of memory");
        return HR_ERR_NOMEM;
    }
    hr_err err = {0};
    hr_status st = parse_special && plain
             ? hr_tok_encode_marked(m->vocab, text, len, add_special, plain, n_plain, buf, cap, &got, &err)
             : hr_tok_encode(m->vocab, text, len, add_special, parse_special, buf, cap, &got, &err);
    if (st == HR_ERR_LIMIT && got > cap) {
        int32_t *nb = realloc(buf, got * sizeof *buf);
        if (!nb) {
            free(buf);
            hr_api_error_set(e, 500, NULL, NULL, "out of memory");
            return HR_ERR_NOMEM;
        }
        buf = nb;
        cap = got;
        st = parse_special && plain
             ? hr_tok_encode_marked(m->vocab, text, len, add_special, plain, n_plain, buf, cap, &got, &err)
             : hr_tok_encode(m->vocab, text, len, add_special, parse_special, buf, cap, &got, &err);
    }
    if (st) {
        free(buf);
        hr_api_error_set(e, st == HR_ERR_NOMEM ? 500 : 400, st == HR_ERR_NOMEM ? NULL : "prompt", NULL,
                         "cannot tokenize the prompt: %s", err.msg);
        return st;
    }
    if (got > INT32_MAX) {
        free(buf);
        return BAD("prompt", "prompt too long");
    }
    *ids = buf;
    *n = (int32_t)got;
    return HR_OK;
}

/* ---- the request parser ----------------------------------------------- */

void hr_api_request_free(hr_api_request *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_prompts; i++)
        free(r->prompts[i].ids);
    for (int i = 0; i < HR_MAX_STOP; i++)
        free(r->stop[i]);
    free(r->bias_ids);
    free(r->bias);
    free(r->rendered);
    free(r);
}

hr_gen_params hr_api_gen_for(const hr_api_request *r, int32_t i)
{
    hr_gen_params g = r->gen;
    g.prompt = r->prompts[i].ids;
    g.n_prompt = r->prompts[i].n;
    g.max_tokens = r->prompts[i].max_tokens;
    return g;
}

/* Fields hearth knows and refuses rather than ignores. */
static hr_status check_unsupported(json_t *o, hr_api_kind kind, hr_api_error *e)
{
    json_t *v;
    if (kind == HR_API_CHAT) {
        v = json_object_get(o, "tools");
        if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
            return BAD("tools", "'tools' is not supported yet: hearth does not parse tool calls from model output");
        v = json_object_get(o, "tool_choice");
        if (v && !json_is_null(v) && !(json_is_string(v) && (!strcmp(json_string_value(v), "none") ||
                                                              !strcmp(json_string_value(v), "auto"))))
            return BAD("tool_choice", "'tool_choice' is not supported yet (tools are not supported)");
        static const char *const refused[] = {"functions", "function_call", "audio", "prediction",
                                              "web_search_options"};
        for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
            v = json_object_get(o, refused[i]);
            if (v && !json_is_null(v))
                return BAD(refused[i], "'%s' is not supported by hearth", refused[i]);
        }
        v = json_object_get(o, "modalities");
        if (v && !json_is_null(v)) {
            if (!json_is_array(v))
                return BAD("modalities", "'modalities' must be an array");
            size_t i;
            json_t *x;
            json_array_foreach(v, i, x) if (!json_is_string(x) || strcmp(json_string_value(x), "text"))
                return BAD("modalities", "only the 'text' modality is supported");
        }
    } else {
        v = json_object_get(o, "suffix");
        if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return BAD("suffix", "'suffix' (insertion) is not supported by hearth");
        v = json_object_get(o, "echo");
        if (v && !json_is_null(v)) {
            if (!json_is_boolean(v))
                return BAD("echo", "'echo' must be a boolean");
            if (json_is_true(v))
                return BAD("echo", "'echo' is not supported by hearth");
        }
    }
    v = json_object_get(o, "response_format");
    if (v && !json_is_null(v)) {
        const char *t = json_string_value(json_object_get(v, "type"));
        if (!json_is_object(v) || !t)
            return BAD("response_format", "'response_format' must be an object with a 'type'");
        if (strcmp(t, "text"))
            return BAD("response_format", "response_format type '%s' is not supported yet (only 'text')", t);
    }
    return HR_OK;
}

static hr_status parse_stop(json_t *o, hr_api_request *r, hr_api_error *e)
{
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v))
        return HR_OK;
    json_t *one[1] = {v};
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > HR_MAX_STOP)
            return BAD("stop", "at most %d stop strings are allowed (got %zu)", HR_MAX_STOP, n);
    } else if (!json_is_string(v)) {
        return BAD("stop", "'stop' must be a string or an array of strings");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(v) ? json_array_get(v, i) : one[0];
        if (!json_is_string(s))
            return BAD("stop", "'stop' must be a string or an array of strings");
        size_t len = json_string_length(s);
        if (len == 0)
            return BAD("stop", "stop strings must not be empty");
        if (len > HR_MAX_STOP_LEN)
            return BAD("stop", "stop strings are at most %d bytes (got %zu)", HR_MAX_STOP_LEN, len);
        if (memchr(json_string_value(s), 0, len))
            return BAD("stop", "stop strings must not contain NUL");
        r->stop[r->gen.n_stop] = strdup(json_string_value(s));
        if (!r->stop[r->gen.n_stop]) {
            hr_api_error_set(e, 500, NULL, NULL, "out of memory");
            return HR_ERR_NOMEM;
        }
        r->gen.n_stop++;
    }
    r->gen.stop = (const char *const *)r->stop;
    return HR_OK;
}

static hr_status parse_bias(const hr_api_model *m, json_t *o, hr_api_request *r, hr_api_error *e)
{
    json_t *v = json_object_get(o, "logit_bias");
    if (!v || json_is_null(v))
        return HR_OK;
    if (!json_is_object(v))
        return BAD("logit_bias", "'logit_bias' must be an object mapping token ids to numbers");
    size_t n = json_object_size(v);
    if (n > HR_API_MAX_BIAS)
        return BAD("logit_bias", "at most %d logit_bias entries (got %zu)", HR_API_MAX_BIAS, n);
    if (n == 0)
        return HR_OK;
    r->bias_ids = malloc(n * sizeof *r->bias_ids);
    r->bias = malloc(n * sizeof *r->bias);
    if (!r->bias_ids || !r->bias) {
        hr_api_error_set(e, 500, NULL, NULL, "out of memory");
        return HR_ERR_NOMEM;
    }
    const char *k;
    json_t *x;
    int32_t i = 0;
    json_object_foreach(v, k, x)
    {
        char *end;
        long id = strtol(k, &end, 10);
        if (!*k || *end || id < 0 || id >= m->n_vocab)
            return BAD("logit_bias", "logit_bias key '%.40s' is not a token id in [0, %d)", k, m->n_vocab);
        if (!json_is_number(x))
            return BAD("logit_bias", "logit_bias values must be numbers");
        double b = json_number_value(x);
        if (!(b >= -100 && b <= 100))
            return BAD("logit_bias", "logit_bias values must be between -100 and 100 (got %g)", b);
        r->bias_ids[i] = (int32_t)id;
        r->bias[i] = b <= -100 ? -INFINITY : (float)b;
        i++;
    }
    r->gen.bias_ids = r->bias_ids;
    r->gen.bias = r->bias;
    r->gen.n_bias = i;
    return HR_OK;
}

/* One token-id prompt from a JSON array of integers. */
static hr_status ids_prompt(const hr_api_model *m, json_t *a, hr_api_prompt *p, hr_api_error *e)
{
    size_t n = json_array_size(a);
    if (n == 0)
        return BAD("prompt", "a token prompt must not be empty");
    if (n > (size_t)m->n_ctx)
        return BAD("prompt", "the prompt has %zu tokens but the context is %d", n, m->n_ctx);
    p->ids = malloc(n * sizeof *p->ids);
    if (!p->ids) {
        hr_api_error_set(e, 500, NULL, NULL, "out of memory");
        return HR_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(a, i);
        if (!json_is_integer(x))
            return BAD("prompt", "'prompt' must be a string, an array of strings, or token ids");
        json_int_t id = json_integer_value(x);
        if (id < 0 || id >= m->n_vocab)
            return BAD("prompt", "token id %lld is out of range [0, %d)", (long long)id, m->n_vocab);
        p->ids[i] = (int32_t)id;
    }
    p->n = (int32_t)n;
    return HR_OK;
}

/* Refuses, before tokenizing, a text that is certain to overflow the
 * context: it has at least ceil(len / max_token_bytes) tokens, and `need`
 * more must fit after them. */
static hr_status cheap_context_check(const hr_api_model *m, size_t len, long long need, bool chat,
                                     const char *max_param, hr_api_error *e)
{
    if (m->max_token_bytes <= 0)
        return HR_OK;
    long long at_least = (long long)((len + (size_t)m->max_token_bytes - 1) / (size_t)m->max_token_bytes);
    if (at_least + need <= m->n_ctx)
        return HR_OK;
    const char *param = max_param && at_least < m->n_ctx ? max_param : chat ? "messages" : "prompt";
    hr_api_error_set(e, 400, param, "context_length_exceeded",
                     "This model's context is %d tokens, but the prompt has %zu bytes, so at least %lld tokens, "
                     "and %lld more must be generated. Shorten the prompt or lower max_tokens.",
                     m->n_ctx, len, at_least, need);
    return HR_ERR_INVALID;
}

/* parse_special: a rendered chat, whose untrusted ranges are plain[n_plain] */
static hr_status text_prompt(const hr_api_model *m, const char *s, size_t len, bool parse_special,
                             const hr_span *plain, size_t n_plain, const char *max_param, long long need,
                             hr_api_prompt *p, hr_api_error *e)
{
    hr_status st;
    if ((st = cheap_context_check(m, len, need, parse_special, max_param, e)))
        return st;
    if (parse_special) {
        /* rendered chat: BOS only if the template did not write it */
        static const hr_span none = {0, 0};
        st = encode_marked(m, s, len, false, true, plain ? plain : &none, plain ? n_plain : 0, &p->ids, &p->n, e);
        if (st)
            return st;
        int32_t bos = hr_vocab_bos(m->vocab);
        if (hr_vocab_add_bos(m->vocab) && bos >= 0 && (p->n == 0 || p->ids[0] != bos)) {
            int32_t *nb = realloc(p->ids, ((size_t)p->n + 1) * sizeof *nb);
            if (!nb) {
                hr_api_error_set(e, 500, NULL, NULL, "out of memory");
                return HR_ERR_NOMEM;
            }
            memmove(nb + 1, nb, (size_t)p->n * sizeof *nb);
            nb[0] = bos;
            p->ids = nb;
            p->n++;
        }
    } else {
        st = encode(m, s, len, true, false, &p->ids, &p->n, e);
        if (st)
            return st;
    }
    if (p->n == 0) {
        int32_t bos = hr_vocab_bos(m->vocab);
        if (bos < 0)
            return BAD("prompt", "the prompt is empty and the model has no BOS token");
        p->ids[0] = bos; /* encode allocated len + 16 */
        p->n = 1;
    }
    return HR_OK;
}

static hr_status parse_prompts(const hr_api_model *m, json_t *o, const char *max_param, long long need,
                              hr_api_request *r, hr_api_error *e)
{
    json_t *v = json_object_get(o, "prompt");
    if (!v || json_is_null(v))
        return BAD("prompt", "'prompt' is required");
    if (json_is_string(v)) {
        r->n_prompts = 1;
        return text_prompt(m, json_string_value(v), json_string_length(v), false, NULL, 0, max_param, need,
                           &r->prompts[0], e);
    }
    if (!json_is_array(v))
        return BAD("prompt", "'prompt' must be a string, an array of strings, or token ids");
    size_t n = json_array_size(v);
    if (n == 0)
        return BAD("prompt", "'prompt' must not be empty");
    json_t *first = json_array_get(v, 0);
    if (json_is_integer(first)) {
        r->n_prompts = 1;
        return ids_prompt(m, v, &r->prompts[0], e);
    }
    if (n > HR_API_MAX_PROMPTS)
        return BAD("prompt", "at most %d prompts per request (got %zu)", HR_API_MAX_PROMPTS, n);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        hr_status st;
        r->n_prompts = (int32_t)i + 1;
        if (json_is_string(x) && json_is_string(first))
            st = text_prompt(m, json_string_value(x), json_string_length(x), false, NULL, 0, max_param, need,
                             &r->prompts[i], e);
        else if (json_is_array(x) && json_is_array(first))
            st = ids_prompt(m, x, &r->prompts[i], e);
        else
            return BAD("prompt", "'prompt' must be a string, an array of strings, or token ids");
        if (st)
            return st;
    }
    return HR_OK;
}

static hr_status parse_body(const hr_api_model *m, hr_api_kind kind, json_t *o, const hr_api_head *head,
                            uint64_t seed_default, bool any_model, hr_api_request *r, hr_api_error *e)
{
    hr_status st;
    if (head->model[0] && !any_model) {
        const char *name = head->model;
        if (strcmp(name, m->id) && !(m->alt_id && !strcmp(name, m->alt_id))) {
            hr_api_error_set(e, 404, "model", "model_not_found",
                             "The model '%.200s' does not exist; this server serves '%.200s'", name, m->id);
            return HR_ERR_NOT_FOUND;
        }
    }
    if ((st = check_unsupported(o, kind, e)))
        return st;

    r->kind = kind;
    r->gen.n = 1;
    r->gen.logprobs = -1;
    hr_sample_params sp = hr_sample_defaults();
    /* OpenAI semantics: temperature 1, nucleus off, no top-k / min-p */
    sp.temperature = 1.0f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.seed = seed_default;

    long long n = 1, max_tokens = -1, seed = 0, top_k = 0, top_logprobs = 0, lp_int = -1;
    bool have_max = false, have_seed = false, have_topk = false, have_tlp = false, have_lp = false;
    double temp = sp.temperature, top_p = sp.top_p, min_p = sp.min_p, pres = 0, freq = 0, rep = 1;
    bool stream = false, ignore_eos = false;
    if ((st = get_int(o, "n", 1, HR_API_MAX_N, &n, NULL, e)) || (st = get_bool(o, "stream", &stream, e)) ||
        (st = get_num(o, "temperature", 0, 2, &temp, e)) || (st = get_num(o, "top_p", 0, 1, &top_p, e)) ||
        (st = get_int(o, "top_k", -1, 1 << 30, &top_k, &have_topk, e)) ||
        (st = get_num(o, "min_p", 0, 1, &min_p, e)) ||
        (st = get_num(o, "presence_penalty", -2, 2, &pres, e)) ||
        (st = get_num(o, "frequency_penalty", -2, 2, &freq, e)) ||
        (st = get_num(o, "repetition_penalty", 0.01, 100, &rep, e)) ||
        (st = get_int(o, "seed", INT64_MIN, INT64_MAX, &seed, &have_seed, e)) ||
        (st = get_bool(o, "ignore_eos", &ignore_eos, e)))
        return st;
    /* max tokens: max_completion_tokens wins over the older max_tokens */
    if ((st = get_int(o, "max_tokens", 1, INT32_MAX, &max_tokens, &have_max, e)))
        return st;
    bool have_mct = false;
    long long mct = -1;
    if ((st = get_int(o, "max_completion_tokens", 1, INT32_MAX, &mct, &have_mct, e)))
        return st;
    if (have_mct) {
        max_tokens = mct;
        have_max = true;
    }
    json_t *user = json_object_get(o, "user");
    if (user && !json_is_null(user) && !json_is_string(user))
        return BAD("user", "'user' must be a string");

    /* streaming options */
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return BAD("stream_options", "'stream_options' must be an object");
        if (!stream)
            return BAD("stream_options", "'stream_options' is only allowed when 'stream' is true");
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_null(iu) && !json_is_boolean(iu))
            return BAD("stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
        r->include_usage = json_is_true(iu);
    }

    /* logprobs */
    json_t *lp = json_object_get(o, "logprobs");
    if (kind == HR_API_CHAT) {
        bool want = false;
        if ((st = get_bool(o, "logprobs", &want, e)) ||
            (st = get_int(o, "top_logprobs", 0, HR_MAX_TOP_LOGPROBS, &top_logprobs, &have_tlp, e)))
            return st;
        if (have_tlp && !want)
            return BAD("top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
        r->chat_logprobs = want;
        r->gen.logprobs = want ? (int32_t)top_logprobs : -1;
    } else {
        if (lp && json_is_boolean(lp))
            return BAD("logprobs", "'logprobs' must be an integer for completions");
        if ((st = get_int(o, "logprobs", 0, HR_MAX_TOP_LOGPROBS, &lp_int, &have_lp, e)))
            return st;
        r->gen.logprobs = have_lp ? (int32_t)lp_int : -1;
    }

    if ((st = parse_stop(o, r, e)) || (st = parse_bias(m, o, r, e)))
        return st;

    /* bounds before any rendering or tokenizing: choices, response size */
    int32_t n_prompts = head->n_prompts;
    if (n * n_prompts > HR_API_MAX_CHOICES)
        return BAD("n", "n x prompts must be at most %d (got %lld x %d)", HR_API_MAX_CHOICES, n, n_prompts);
    long long need = have_max ? max_tokens : 1;
    const char *max_param = !have_max ? NULL : have_mct ? "max_completion_tokens" : "max_tokens";
    if (!stream && r->gen.logprobs >= 0 && have_max) {
        /* every generated token costs a logprobs entry of at least this
         * many bytes (the JSON punctuation and one digit per number) */
        long long top = r->gen.logprobs;
        long long per = kind == HR_API_CHAT ? 52 + 36 * top : 9 + 5 * top;
        size_t cap = m->max_response ? m->max_response : HR_API_MAX_RESPONSE;
        long long least = n * n_prompts * max_tokens * per;
        if (least > (long long)cap) {
            hr_api_error_set(e, 400, "max_tokens", "response_too_large",
                             "this request's response could reach %lld bytes (%lld choices x %lld tokens with "
                             "logprobs), over the cap of %zu bytes for a non-streamed response; lower n, "
                             "max_tokens or the logprobs count, or stream it",
                             least, n * n_prompts, max_tokens, cap);
            return HR_ERR_INVALID;
        }
    }

    /* the prompt(s) */
    if (kind == HR_API_CHAT) {
        json_t *msgs = json_object_get(o, "messages");
        if (!msgs)
            return BAD("messages", "'messages' is required");
        json_t *kw = json_object_get(o, "chat_template_kwargs");
        if (kw && !json_is_null(kw) && !json_is_object(kw))
            return BAD("chat_template_kwargs", "'chat_template_kwargs' must be an object");
        json_t *effort = json_object_get(o, "reasoning_effort");
        json_t *kw2 = json_is_object(kw) ? json_deep_copy(kw) : json_object();
        if (!kw2 || (json_is_string(effort) && json_object_set(kw2, "reasoning_effort", effort))) {
            json_decref(kw2);
            return OOM();
        }
        hr_span *plain;
        size_t n_plain;
        st = render_messages(m, msgs, kw2, &r->rendered, &plain, &n_plain, e);
        json_decref(kw2);
        if (st)
            return st;
        r->n_prompts = 1;
        st = text_prompt(m, r->rendered, strlen(r->rendered), true, plain, n_plain, max_param, need, &r->prompts[0], e);
        free(plain);
        if (st)
            return st;
        if (m->reasoning) {
            r->reasoning = true;
            const char *open = NULL, *close = NULL, *p = r->rendered;
            while ((p = strstr(p, "<think>")))
                open = p++;
            p = r->rendered;
            while ((p = strstr(p, "</think>")))
                close = p++;
            r->think_start = open && (!close || open > close);
        }
    } else {
        if ((st = parse_prompts(m, o, max_param, need, r, e)))
            return st;
    }

    /* context check: never truncate */
    for (int32_t i = 0; i < r->n_prompts; i++) {
        hr_api_prompt *p = &r->prompts[i];
        if (have_max) {
            if ((long long)p->n + max_tokens > m->n_ctx) {
                hr_api_error_set(e, 400, have_mct ? "max_completion_tokens" : "max_tokens",
                                 "context_length_exceeded",
                                 "This model's context is %d tokens, but the request needs %lld (%d in the "
                                 "prompt + %lld to generate). Shorten the prompt or lower max_tokens.",
                                 m->n_ctx, (long long)p->n + max_tokens, p->n, max_tokens);
                return HR_ERR_INVALID;
            }
            p->max_tokens = (int32_t)max_tokens;
        } else {
            if (p->n >= m->n_ctx) {
                hr_api_error_set(e, 400, kind == HR_API_CHAT ? "messages" : "prompt", "context_length_exceeded",
                                 "This model's context is %d tokens, but the prompt alone has %d tokens, "
                                 "leaving no room to generate.",
                                 m->n_ctx, p->n);
                return HR_ERR_INVALID;
            }
            p->max_tokens = m->n_ctx - p->n;
        }
    }

    sp.temperature = (float)temp;
    sp.top_p = (float)top_p;
    sp.top_k = have_topk && top_k > 0 ? (int32_t)top_k : 0;
    sp.min_p = (float)min_p;
    sp.presence_penalty = (float)pres;
    sp.frequency_penalty = (float)freq;
    sp.repetition_penalty = (float)rep;
    if (have_seed)
        sp.seed = (uint64_t)seed;
    r->gen.sample = sp;
    r->gen.n = (int32_t)n;
    r->gen.ignore_eos = ignore_eos;
    r->stream = stream;
    r->max_given = have_max;
    return HR_OK;
}

static bool check_utf8(const char *body, size_t len, hr_api_error *e)
{
    size_t bad = hr_utf8_valid_prefix(body, len);
    if (bad == len)
        return true;
    hr_api_error_set(e, 400, NULL, NULL, "the request body is not valid UTF-8 (byte 0x%02x at offset %zu)",
                     (unsigned char)body[bad], bad);
    return false;
}

struct hr_api_doc {
    json_t *o;
    hr_api_kind kind;
    hr_api_head head;
};

/* The fields routing and budgets need, with the parser's own validators. */
static hr_status read_head(hr_api_kind kind, json_t *o, hr_api_head *h, hr_api_error *e)
{
    memset(h, 0, sizeof *h);
    h->n = 1;
    h->n_prompts = 1;
    if (!json_is_object(o))
        return BAD(NULL, "the request body must be a JSON object");
    json_t *model = json_object_get(o, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model))
            return BAD("model", "'model' must be a string");
        if (json_string_length(model) >= sizeof h->model)
            return BAD("model", "'model' is longer than %zu bytes", sizeof h->model - 1);
        snprintf(h->model, sizeof h->model, "%s", json_string_value(model));
    }
    hr_status st;
    long long n = 1, mt = 0, mct = 0;
    bool have_mct = false;
    if ((st = get_bool(o, "stream", &h->stream, e)) || (st = get_int(o, "n", 1, INT32_MAX, &n, NULL, e)) ||
        (st = get_int(o, "max_tokens", 1, INT32_MAX, &mt, NULL, e)) ||
        (st = get_int(o, "max_completion_tokens", 1, INT32_MAX, &mct, &have_mct, e)))
        return st;
    h->n = (int32_t)n;
    h->max_tokens = (int32_t)(have_mct ? mct : mt);
    json_t *so = json_object_get(o, "stream_options");
    h->include_usage = json_is_object(so) && json_is_true(json_object_get(so, "include_usage"));
    if (kind == HR_API_COMPLETION) {
        json_t *pr = json_object_get(o, "prompt");
        if (json_is_array(pr) && json_array_size(pr) > 0 && !json_is_integer(json_array_get(pr, 0)))
            h->n_prompts = json_array_size(pr) > INT32_MAX ? INT32_MAX : (int32_t)json_array_size(pr);
    }
    return HR_OK;
}

void hr_api_doc_free(hr_api_doc *d)
{
    if (!d)
        return;
    json_decref(d->o);
    free(d);
}

hr_status hr_api_doc_parse(hr_api_kind kind, const char *body, size_t len, hr_api_doc **out, hr_api_head *head,
                           hr_api_error *e)
{
    *out = NULL;
    memset(head, 0, sizeof *head);
    if (!check_utf8(body, len, e))
        return HR_ERR_FORMAT;
    hr_api_doc *d = calloc(1, sizeof *d);
    if (!d) {
        hr_api_error_set(e, 500, NULL, NULL, "out of memory");
        return HR_ERR_NOMEM;
    }
    json_error_t je;
    d->o = json_loadb(body, len, 0, &je);
    d->kind = kind;
    if (!d->o) {
        free(d);
        hr_api_error_set(e, 400, NULL, NULL, "the request body is not valid JSON: %s (at byte %d)", je.text,
                         je.position);
        return HR_ERR_FORMAT;
    }
    *out = d;
    hr_status st = read_head(kind, d->o, &d->head, e);
    *head = d->head;
    return st;
}

hr_status hr_api_parse_doc(const hr_api_model *m, const hr_api_doc *d, uint64_t seed, bool any_model,
                           hr_api_request **out, hr_api_error *e)
{
    *out = NULL;
    hr_api_request *r = calloc(1, sizeof *r);
    if (!r) {
        hr_api_error_set(e, 500, NULL, NULL, "out of memory");
        return HR_ERR_NOMEM;
    }
    hr_status st = parse_body(m, d->kind, d->o, &d->head, seed, any_model, r, e);
    if (st) {
        hr_api_request_free(r);
        return st;
    }
    *out = r;
    return HR_OK;
}

hr_status hr_api_parse(const hr_api_model *m, hr_api_kind kind, const char *body, size_t len, uint64_t seed,
                       hr_api_request **out, hr_api_error *e)
{
    *out = NULL;
    hr_api_doc *d;
    hr_api_head h;
    hr_status st = hr_api_doc_parse(kind, body, len, &d, &h, e);
    if (!st)
        st = hr_api_parse_doc(m, d, seed, false, out, e);
    hr_api_doc_free(d);
    return st;
}

char *hr_api_doc_forward(hr_api_doc *d, bool stream, int32_t max_tokens, size_t *out_len)
{
    json_t *j = d->o;
    json_object_del(j, "model");
    if (stream) {
        json_object_set_new(j, "stream", json_true());
        json_t *so = json_object_get(j, "stream_options");
        if (!json_is_object(so)) {
            so = json_object();
            json_object_set_new(j, "stream_options", so);
        }
        json_object_set_new(so, "include_usage", json_true());
    }
    if (max_tokens > 0 && !json_object_get(j, "max_tokens") && !json_object_get(j, "max_completion_tokens"))
        json_object_set_new(j, "max_tokens", json_integer(max_tokens));
    char *s = dumps(j, JSON_COMPACT);
    if (s)
        *out_len = strlen(s);
    return s;
}

void hr_api_request_default_max(hr_api_request *r, const hr_api_model *m, int32_t max_tokens)
{
    if (r->max_given || max_tokens <= 0)
        return;
    for (int32_t i = 0; i < r->n_prompts; i++) {
        int32_t room = m->n_ctx - r->prompts[i].n;
        r->prompts[i].max_tokens = max_tokens < room ? max_tokens : room;
    }
}

int64_t hr_api_request_tokens(const hr_api_request *r)
{
    int64_t t = 0;
    for (int32_t i = 0; i < r->n_prompts; i++)
        t += (int64_t)r->prompts[i].n + (int64_t)r->gen.n * r->prompts[i].max_tokens;
    return t;
}

int32_t hr_api_max_token_bytes(const hr_vocab *v)
{
    int32_t n = hr_vocab_n_tokens(v), best = 4;
    char buf[1024];
    for (int32_t id = 0; id < n; id++) {
        size_t l = hr_tok_piece(v, id, true, buf, sizeof buf);
        if (l >= sizeof buf)
            return 0; /* a piece longer than we measure: no bound */
        if ((int32_t)l > best)
            best = (int32_t)l;
    }
    if (hr_vocab_unk(v) >= 0)
        return best;
    /* no unknown token: every byte must have a token, or bytes can vanish */
    for (int b = 0; b < 256; b++) {
        char t[16];
        size_t tl;
        if (hr_vocab_kind_of(v) == HR_VOCAB_SPM) {
            tl = (size_t)snprintf(t, sizeof t, "<0x%02X>", b);
        } else {
            /* byte-level BPE: printable bytes stand for themselves, the
             * others for U+0100 + k in byte order (the GPT-2 byte map) */
            int cp;
            if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) {
                cp = b;
            } else {
                int k = 0;
                for (int x = 0; x < b; x++)
                    k += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174);
                cp = 256 + k;
            }
            if (cp < 0x80) {
                t[0] = (char)cp;
                tl = 1;
            } else {
                t[0] = (char)(0xC0 | (cp >> 6));
                t[1] = (char)(0x80 | (cp & 0x3F));
                tl = 2;
            }
        }
        if (hr_vocab_find(v, t, tl) < 0)
            return 0;
    }
    return best;
}

/* ---- responses -------------------------------------------------------- */

typedef struct {
    hr_reason reason;
    hr_api_buf content, reasoning; /* accumulated (non-streamed) */
    hr_api_buf lp[4];              /* non-streamed logprobs as JSON text, the items without brackets: chat
                                      content; completions tokens, token_logprobs, top_logprobs, text_offset */
    bool have_lp;
    size_t text_off;               /* completions: bytes of text so far (text_offset) */
    bool started, done;
    hr_finish finish;
    int32_t reasoning_tokens;      /* text events whose text went to reasoning_content */
    char error[256];
} choice;

struct hr_api_resp {
    const hr_api_model *m;
    hr_api_kind kind;
    bool stream, include_usage, chat_logprobs, reasoning;
    int32_t n, n_prompts, n_choices, logprobs;
    char id[64];
    int64_t created;
    size_t cap;                    /* non-streamed: bytes the response may have */
    size_t bytes;                  /* non-streamed: bytes held so far (text and logprobs) */
    bool too_large;
    choice *c;
};

hr_api_resp *hr_api_resp_new(const hr_api_model *m, const hr_api_request *rq, const char *id, int64_t created)
{
    hr_api_resp *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->m = m;
    r->kind = rq->kind;
    r->stream = rq->stream;
    r->include_usage = rq->include_usage;
    r->chat_logprobs = rq->chat_logprobs;
    r->reasoning = rq->reasoning;
    r->logprobs = rq->gen.logprobs;
    r->n = rq->gen.n;
    r->n_prompts = rq->n_prompts;
    r->n_choices = r->n * r->n_prompts;
    snprintf(r->id, sizeof r->id, "%s", id);
    r->created = created;
    r->cap = m->max_response ? m->max_response : HR_API_MAX_RESPONSE;
    r->c = calloc((size_t)r->n_choices, sizeof *r->c);
    if (!r->c) {
        free(r);
        return NULL;
    }
    for (int32_t i = 0; i < r->n_choices; i++) {
        choice *c = &r->c[i];
        hr_reason_init(&c->reason, rq->reasoning ? m->reasoning : HR_REASON_OFF, rq->rendered);
        c->content.max = c->reasoning.max = r->cap;
        for (int k = 0; k < 4; k++)
            c->lp[k].max = r->cap;
    }
    return r;
}

void hr_api_resp_free(hr_api_resp *r)
{
    if (!r)
        return;
    for (int32_t i = 0; i < r->n_choices; i++) {
        hr_api_buf_free(&r->c[i].content);
        hr_api_buf_free(&r->c[i].reasoning);
        for (int k = 0; k < 4; k++)
            hr_api_buf_free(&r->c[i].lp[k]);
    }
    free(r->c);
    free(r);
}

/* NULL when out of memory (as every builder below: a part missing from a
 * response must fail it, never send it short) */
static json_t *token_bytes(const char *s, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_integer((unsigned char)s[i]))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static size_t piece_of(const hr_api_model *m, int32_t id, char *buf, size_t cap)
{
    if (id < 0 || id >= m->n_vocab)
        return 0;
    size_t n = hr_tok_piece(m->vocab, id, false, buf, cap);
    return n < cap ? n : 0;
}

/* Chat logprobs entries for the tokens of one event, appended to arr;
 * false: out of memory. */
static bool chat_lp_append(const hr_api_resp *r, const hr_event *ev, json_t *arr)
{
    char piece[256];
    for (int32_t t = 0; t < ev->n_tokens; t++) {
        const hr_token_info *ti = &ev->tokens[t];
        size_t pl = piece_of(r->m, ti->token, piece, sizeof piece);
        json_t *tops = json_array();
        if (!tops)
            return false;
        for (int32_t k = 0; k < ti->n_top && k < HR_MAX_TOP_LOGPROBS; k++) {
            char p2[256];
            size_t l2 = piece_of(r->m, ti->top_ids[k], p2, sizeof p2);
            if (json_array_append_new(tops, json_pack("{s:o,s:f,s:o}", "token", jstrn(p2, l2), "logprob",
                                                      (double)ti->top_logprobs[k], "bytes", token_bytes(p2, l2)))) {
                json_decref(tops);
                return false;
            }
        }
        if (json_array_append_new(arr, json_pack("{s:o,s:f,s:o,s:o}", "token", jstrn(piece, pl), "logprob",
                                                 (double)ti->logprob, "bytes", token_bytes(piece, pl),
                                                 "top_logprobs", tops)))
            return false;
    }
    return true;
}

/* Completions logprobs: {tokens, token_logprobs, top_logprobs, text_offset};
 * false: out of memory. */
static bool cmpl_lp_append(const hr_api_resp *r, choice *c, const hr_event *ev, json_t *obj)
{
    json_t *toks = json_object_get(obj, "tokens"), *lps = json_object_get(obj, "token_logprobs"),
           *tops = json_object_get(obj, "top_logprobs"), *offs = json_object_get(obj, "text_offset");
    char piece[256];
    for (int32_t t = 0; t < ev->n_tokens; t++) {
        const hr_token_info *ti = &ev->tokens[t];
        size_t pl = piece_of(r->m, ti->token, piece, sizeof piece);
        if (json_array_append_new(toks, jstrn(piece, pl)) || json_array_append_new(lps, json_real(ti->logprob)))
            return false;
        json_t *top = json_object();
        if (!top)
            return false;
        for (int32_t k = 0; k < ti->n_top && k < HR_MAX_TOP_LOGPROBS; k++) {
            char p2[256];
            size_t l2 = piece_of(r->m, ti->top_ids[k], p2, sizeof p2);
            hr_api_buf key = {0};
            bool fine = hr_api_utf8_sanitize(p2, l2, &key);
            if (fine && (key.p || l2 == 0))
                fine = !json_object_set_new(top, key.p ? key.p : "", json_real(ti->top_logprobs[k]));
            hr_api_buf_free(&key);
            if (!fine) {
                json_decref(top);
                return false;
            }
        }
        if (json_array_append_new(tops, top) ||
            json_array_append_new(offs, json_integer((json_int_t)c->text_off)))
            return false;
        c->text_off += pl;
    }
    return true;
}

static json_t *cmpl_lp_new(void)
{
    return json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
}

/* Non-streamed: counts `n` more bytes against the cap. */
static bool charge(hr_api_resp *r, size_t n)
{
    r->bytes += n;
    if (r->bytes > r->cap)
        r->too_large = true;
    return !r->too_large;
}

/* Appends the items of JSON array `a` (taken) to `b` as text: "x,y". */
static bool put_items(hr_api_resp *r, hr_api_buf *b, json_t *a)
{
    char *t = a ? dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    if (!t)
        return false;
    size_t l = strlen(t);
    bool ok = true;
    if (l > 2) { /* "[...]" */
        /* charge marks the response too large; a failed append is out of memory */
        ok = charge(r, l - 1) && (!b->len || hr_api_buf_put(b, ",", 1)) && hr_api_buf_put(b, t + 1, l - 2);
    }
    free(t);
    return ok;
}

/* Non-streamed logprobs of one event, kept as text (a JSON tree costs
 * several times the bytes it prints to). */
static bool lp_keep(hr_api_resp *r, choice *c, const hr_event *ev)
{
    c->have_lp = true;
    if (r->kind == HR_API_CHAT) {
        json_t *a = json_array();
        if (!a)
            return false;
        if (!chat_lp_append(r, ev, a)) {
            json_decref(a);
            return false;
        }
        return put_items(r, &c->lp[0], a);
    }
    json_t *o = cmpl_lp_new();
    if (!o)
        return false;
    if (!cmpl_lp_append(r, c, ev, o)) {
        json_decref(o);
        return false;
    }
    static const char *const keys[4] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    bool ok = true;
    for (int k = 0; k < 4 && ok; k++)
        ok = put_items(r, &c->lp[k], json_incref(json_object_get(o, keys[k])));
    json_decref(o);
    return ok;
}

static const char *finish_str(hr_finish f)
{
    return f == HR_FINISH_LENGTH ? "length" : "stop";
}

static json_t *chunk_base(const hr_api_resp *r)
{
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:[]}", "id", r->id, "object",
                          r->kind == HR_API_CHAT ? "chat.completion.chunk" : "text_completion", "created",
                          (json_int_t)r->created, "model", r->m->id, "system_fingerprint", "hearth", "choices");
    if (o && r->include_usage && json_object_set_new(o, "usage", json_null())) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static bool emit(json_t *o, hr_api_buf *out)
{
    char *s = dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return false;
    bool ok = hr_api_buf_puts(out, "data: ") && hr_api_buf_puts(out, s) && hr_api_buf_puts(out, "\n\n");
    free(s);
    return ok;
}

/* Streams one choice's delta (chat) or text (completions). */
static bool stream_piece(hr_api_resp *r, int32_t idx, const char *content, size_t cl, const char *reasoning,
                         size_t rl, json_t *lp, const char *finish, hr_api_buf *out)
{
    json_t *o = chunk_base(r);
    json_t *ch;
    if (r->kind == HR_API_CHAT) {
        json_t *delta = json_object();
        if (delta && ((cl && json_object_set_new(delta, "content", jstrn(content, cl))) ||
                      (rl && json_object_set_new(delta, "reasoning_content", jstrn(reasoning, rl))))) {
            json_decref(delta);
            delta = NULL; /* the pack below fails */
        }
        ch = json_pack("{s:i,s:o,s:o,s:o}", "index", idx, "delta", delta, "logprobs",
                       lp ? json_pack("{s:o,s:n}", "content", lp, "refusal") : json_null(), "finish_reason",
                       finish ? json_string(finish) : json_null());
    } else {
        ch = json_pack("{s:i,s:o,s:o,s:o}", "index", idx, "text", jstrn(content, cl), "logprobs",
                       lp ? lp : json_null(), "finish_reason", finish ? json_string(finish) : json_null());
    }
    if (json_array_append_new(json_object_get(o, "choices"), ch)) { /* takes ch even when it fails */
        json_decref(o);
        return false;
    }
    return emit(o, out);
}

bool hr_api_resp_event(hr_api_resp *r, int32_t prompt, const hr_event *ev, hr_api_buf *out)
{
    if (prompt < 0 || prompt >= r->n_prompts || ev->index < 0 || ev->index >= r->n)
        return true; /* not ours: ignore */
    int32_t idx = prompt * r->n + ev->index;
    choice *c = &r->c[idx];
    if (c->done)
        return true;
    bool ok = true;
    if (r->stream && r->kind == HR_API_CHAT && !c->started) {
        /* first chunk of a choice: the role */
        json_t *o = chunk_base(r);
        if (json_array_append_new(json_object_get(o, "choices"),
                                  json_pack("{s:i,s:{s:s,s:s},s:n,s:n}", "index", idx, "delta", "role",
                                            "assistant", "content", "", "logprobs", "finish_reason"))) {
            json_decref(o);
            ok = false;
        } else {
            ok = emit(o, out);
        }
    }
    c->started = true;
    if (!ok)
        return false;

    if (ev->kind == HR_EV_TEXT) {
        bool want_lp = r->logprobs >= 0 && ev->tokens && ev->n_tokens > 0;
        if (!r->stream) {
            size_t before = c->reasoning.len;
            size_t held = c->content.len + c->reasoning.len;
            if (r->reasoning)
                ok = hr_reason_feed(&c->reason, ev->text, ev->len, &c->content, &c->reasoning);
            if (r->reasoning && c->reasoning.len > before)
                c->reasoning_tokens++;
            if (!r->reasoning)
                ok = hr_api_buf_put(&c->content, ev->text ? ev->text : "", ev->len);
            if (!ok) { /* a buffer at its cap, or out of memory */
                if (held + ev->len + 16 >= r->cap)
                    r->too_large = true;
                return false;
            }
            if (!charge(r, c->content.len + c->reasoning.len - held))
                return false;
            if (want_lp && !lp_keep(r, c, ev))
                return false;
            return true;
        }
        hr_api_buf cb = {0}, rb = {0};
        if (r->reasoning)
            ok = hr_reason_feed(&c->reason, ev->text, ev->len, &cb, &rb);
        if (rb.len)
            c->reasoning_tokens++;
        if (!r->reasoning)
            ok = hr_api_buf_put(&cb, ev->text ? ev->text : "", ev->len);
        json_t *lp = NULL;
        if (ok && want_lp) {
            lp = r->kind == HR_API_CHAT ? json_array() : cmpl_lp_new();
            ok = lp && (r->kind == HR_API_CHAT ? chat_lp_append(r, ev, lp) : cmpl_lp_append(r, c, ev, lp));
        }
        if (ok && (cb.len || rb.len || lp))
            ok = stream_piece(r, idx, cb.p, cb.len, rb.p, rb.len, lp, NULL, out);
        else
            json_decref(lp);
        hr_api_buf_free(&cb);
        hr_api_buf_free(&rb);
        return ok;
    }

    /* DONE */
    c->done = true;
    c->finish = ev->finish;
    if (ev->finish == HR_FINISH_ERROR || ev->finish == HR_FINISH_CANCELLED) {
        snprintf(c->error, sizeof c->error, "%s",
                 ev->finish == HR_FINISH_ERROR ? (ev->error ? ev->error : "generation failed")
                                               : "the request was cancelled (timeout or server shutdown)");
    }
    if (!r->stream)
        return r->reasoning ? hr_reason_flush(&c->reason, &c->content, &c->reasoning) : true;
    hr_api_buf cb = {0}, rb = {0};
    if (r->reasoning)
        ok = hr_reason_flush(&c->reason, &cb, &rb);
    if (ok && (cb.len || rb.len))
        ok = stream_piece(r, idx, cb.p, cb.len, rb.p, rb.len, NULL, NULL, out);
    hr_api_buf_free(&cb);
    hr_api_buf_free(&rb);
    if (!ok)
        return false;
    if (c->error[0]) {
        hr_api_error err;
        hr_api_error_set(&err, ev->finish == HR_FINISH_ERROR ? 500 : 503, NULL, NULL, "%s", c->error);
        char *s = hr_api_error_json(&err);
        ok = s && hr_api_buf_puts(out, "data: ") && hr_api_buf_puts(out, s) && hr_api_buf_puts(out, "\n\n");
        free(s);
        return ok;
    }
    return stream_piece(r, idx, "", 0, NULL, 0, NULL, finish_str(ev->finish), out);
}

bool hr_api_resp_failed(const hr_api_resp *r, hr_api_error *e)
{
    if (r->too_large) {
        hr_api_error_set(e, 400, NULL, "response_too_large",
                         "the response grew past the cap of %zu bytes for a non-streamed response and was "
                         "stopped; lower n, max_tokens or the logprobs count, or stream it",
                         r->cap);
        return true;
    }
    for (int32_t i = 0; i < r->n_choices; i++)
        if (r->c[i].error[0]) {
            hr_api_error_set(e, r->c[i].finish == HR_FINISH_ERROR ? 500 : 503, NULL, NULL, "%s", r->c[i].error);
            return true;
        }
    return false;
}

static json_t *usage_json(const hr_req_usage *u)
{
    return json_pack("{s:i,s:i,s:i,s:{s:i}}", "prompt_tokens", u->prompt_tokens, "completion_tokens",
                     u->completion_tokens, "total_tokens", u->prompt_tokens + u->completion_tokens,
                     "prompt_tokens_details", "cached_tokens", u->cached_tokens);
}

bool hr_api_resp_stream_end(hr_api_resp *r, const hr_req_usage *u, hr_api_buf *out)
{
    if (r->include_usage && u) {
        json_t *o = chunk_base(r);
        if (json_object_set_new(o, "usage", usage_json(u))) {
            json_decref(o);
            return false;
        }
        if (!emit(o, out))
            return false;
    }
    return hr_api_buf_puts(out, "data: [DONE]\n\n");
}

/* Appends JSON value v (taken) as text. */
static bool put_json(hr_api_buf *b, json_t *v)
{
    char *t = v ? dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    bool ok = t && hr_api_buf_puts(b, t);
    free(t);
    return ok;
}

static bool put_lp_array(hr_api_buf *b, const char *key, const hr_api_buf *items, bool first)
{
    return hr_api_buf_puts(b, first ? "{\"" : ",\"") && hr_api_buf_puts(b, key) && hr_api_buf_puts(b, "\":[") &&
           hr_api_buf_put(b, items->p ? items->p : "", items->len) && hr_api_buf_puts(b, "]");
}

/* The response is assembled as text: the choices' logprobs are kept as
 * text already, and the whole must stay within the cap. */
char *hr_api_resp_json(hr_api_resp *r, const hr_req_usage *u)
{
    if (r->too_large)
        return NULL;
    hr_req_usage zero = {0};
    json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:s,s:[],s:o}", "id", r->id, "object",
                          r->kind == HR_API_CHAT ? "chat.completion" : "text_completion", "created",
                          (json_int_t)r->created, "model", r->m->id, "system_fingerprint", "hearth", "choices",
                          "usage", usage_json(u ? u : &zero));
    char *top = o ? dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    /* a key or string inside can only hold '"' escaped, so this is the field */
    char *at = top ? strstr(top, "\"choices\":[]") : NULL;
    if (!at) {
        free(top);
        return NULL;
    }
    hr_api_buf b = {.max = r->cap};
    bool ok = hr_api_buf_put(&b, top, (size_t)(at - top) + strlen("\"choices\":["));
    for (int32_t i = 0; i < r->n_choices && ok; i++) {
        choice *c = &r->c[i];
        char head[48];
        snprintf(head, sizeof head, "%s{\"index\":%d,", i ? "," : "", (int)i);
        ok = hr_api_buf_puts(&b, head);
        if (ok && r->kind == HR_API_CHAT) {
            json_t *msg = json_pack("{s:s,s:o,s:n}", "role", "assistant", "content",
                                    jstrn(c->content.p ? c->content.p : "", c->content.len), "refusal");
            if (msg && r->reasoning && c->reasoning.len &&
                json_object_set_new(msg, "reasoning_content", jstrn(c->reasoning.p, c->reasoning.len))) {
                json_decref(msg);
                msg = NULL; /* put_json fails */
            }
            ok = hr_api_buf_puts(&b, "\"message\":") && put_json(&b, msg) && hr_api_buf_puts(&b, ",\"logprobs\":");
            if (ok && r->chat_logprobs)
                ok = put_lp_array(&b, "content", &c->lp[0], true) && hr_api_buf_puts(&b, ",\"refusal\":null}");
            else if (ok)
                ok = hr_api_buf_puts(&b, "null");
        } else if (ok) {
            ok = hr_api_buf_puts(&b, "\"text\":") && put_json(&b, jstrn(c->content.p ? c->content.p : "", c->content.len)) &&
                 hr_api_buf_puts(&b, ",\"logprobs\":");
            if (ok && r->logprobs >= 0)
                ok = put_lp_array(&b, "tokens", &c->lp[0], true) &&
                     put_lp_array(&b, "token_logprobs", &c->lp[1], false) &&
                     put_lp_array(&b, "top_logprobs", &c->lp[2], false) &&
                     put_lp_array(&b, "text_offset", &c->lp[3], false) && hr_api_buf_puts(&b, "}");
            else if (ok)
                ok = hr_api_buf_puts(&b, "null");
        }
        ok = ok && hr_api_buf_puts(&b, ",\"finish_reason\":\"") && hr_api_buf_puts(&b, finish_str(c->finish)) &&
             hr_api_buf_puts(&b, "\"}");
        /* what is in the response now need not be held twice */
        hr_api_buf_free(&c->content);
        hr_api_buf_free(&c->reasoning);
        for (int k = 0; k < 4; k++)
            hr_api_buf_free(&c->lp[k]);
    }
    ok = ok && hr_api_buf_puts(&b, at + strlen("\"choices\":["));
    free(top);
    if (!ok) {
        if (b.len + 1024 >= b.max)
            r->too_large = true;
        hr_api_buf_free(&b);
        return NULL;
    }
    return b.p;
}

void hr_api_usage_add(hr_req_usage *acc, const hr_req_usage *u)
{
    acc->prompt_tokens += u->prompt_tokens;
    acc->cached_tokens += u->cached_tokens;
    acc->completion_tokens += u->completion_tokens;
    if (u->queue_s > acc->queue_s)
        acc->queue_s = u->queue_s;
    if (acc->ttft_s == 0 || (u->ttft_s > 0 && u->ttft_s < acc->ttft_s))
        acc->ttft_s = u->ttft_s;
    if (u->total_s > acc->total_s)
        acc->total_s = u->total_s;
}

/* ---- models, tokenize, detokenize ------------------------------------- */

static json_t *model_obj(const hr_api_model *m)
{
    return json_pack("{s:s,s:s,s:I,s:s,s:i,s:{s:i,s:s,s:I,s:I,s:i,s:s,s:b}}", "id", m->id, "object", "model",
                     "created", (json_int_t)m->created, "owned_by", m->owned_by ? m->owned_by : "hearth",
                     "context_length", m->n_ctx, "hearth", "n_ctx", m->n_ctx, "architecture",
                     m->arch ? m->arch : "", "n_params", (json_int_t)m->n_params, "size_bytes",
                     (json_int_t)m->size_bytes, "n_vocab", m->n_vocab, "chat_template",
                     m->template_source ? m->template_source : "fallback", "reasoning", m->reasoning);
}

char *hr_api_models_json(const hr_api_model *m, bool one)
{
    json_t *o = one ? model_obj(m) : json_pack("{s:s,s:[o]}", "object", "list", "data", model_obj(m));
    char *s = o ? dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

static json_t *load_object(const char *body, size_t len, hr_api_error *e)
{
    if (!check_utf8(body, len, e))
        return NULL;
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je);
    if (!o) {
        hr_api_error_set(e, 400, NULL, NULL, "the request body is not valid JSON: %s", je.text);
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        hr_api_error_set(e, 400, NULL, NULL, "the request body must be a JSON object");
        return NULL;
    }
    return o;
}

char *hr_api_tokenize(const hr_api_model *m, const char *body, size_t len, hr_api_error *e)
{
    json_t *o = load_object(body, len, e);
    if (!o)
        return NULL;
    char *res = NULL;
    bool add_special = false, parse_special = true, with_pieces = false;
    json_t *content = json_object_get(o, "content");
    int32_t *ids = NULL, n = 0;
    if (!json_is_string(content)) {
        (void)BAD("content", "'content' must be a string");
        goto done;
    }
    if (get_bool(o, "add_special", &add_special, e) || get_bool(o, "parse_special", &parse_special, e) ||
        get_bool(o, "with_pieces", &with_pieces, e))
        goto done;
    if (encode(m, json_string_value(content), json_string_length(content), add_special, parse_special, &ids, &n,
               e))
        goto done;
    json_t *toks = json_array();
    for (int32_t i = 0; i < n; i++) {
        if (!with_pieces) {
            json_array_append_new(toks, json_integer(ids[i]));
            continue;
        }
        char piece[256];
        size_t pl = piece_of(m, ids[i], piece, sizeof piece);
        json_t *pj = json_stringn(piece, pl); /* NULL when not valid UTF-8 */
        json_array_append_new(toks, json_pack("{s:i,s:o}", "id", ids[i], "piece", pj ? pj : token_bytes(piece, pl)));
    }
    json_t *r = json_pack("{s:o}", "tokens", toks);
    res = dumps(r, JSON_COMPACT);
    json_decref(r);
done:
    free(ids);
    json_decref(o);
    return res;
}

char *hr_api_detokenize(const hr_api_model *m, const char *body, size_t len, hr_api_error *e)
{
    json_t *o = load_object(body, len, e);
    if (!o)
        return NULL;
    char *res = NULL;
    int32_t *ids = NULL;
    char *text = NULL;
    json_t *toks = json_object_get(o, "tokens");
    if (!json_is_array(toks)) {
        (void)BAD("tokens", "'tokens' must be an array of token ids");
        goto done;
    }
    size_t n = json_array_size(toks);
    ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        hr_api_error_set(e, 500, NULL, NULL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(toks, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= m->n_vocab) {
            (void)BAD("tokens", "tokens[%zu] is not a token id in [0, %d)", i, m->n_vocab);
            goto done;
        }
        ids[i] = (int32_t)json_integer_value(x);
    }
    size_t cap = n * 8 + 64;
    for (int tries = 0; tries < 3; tries++) {
        free(text);
        text = malloc(cap);
        if (!text)
            break;
        size_t got = hr_tok_decode(m->vocab, ids, n, false, text, cap);
        if (got == SIZE_MAX)
            break;
        if (got < cap) {
            json_t *r = json_pack("{s:o}", "content", jstrn(text, got));
            res = dumps(r, JSON_COMPACT);
            json_decref(r);
            break;
        }
        cap = got + 1;
    }
    if (!res)
        hr_api_error_set(e, 500, NULL, NULL, "out of memory");
done:
    free(text);
    free(ids);
    json_decref(o);
    return res;
}

void hr_api_resp_summary(const hr_api_resp *r, int32_t *reasoning_tokens, const char **finish_reason)
{
    int32_t rt = 0;
    for (int32_t i = 0; i < r->n_choices; i++)
        rt += r->c[i].reasoning_tokens;
    *reasoning_tokens = rt;
    *finish_reason = r->n_choices ? hr_finish_name(r->c[0].finish) : "";
}
