/* chat.c - hr_chat_render: the usual chat-template variables in one call. */
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "tmpl/jinja.h"

const char *const hr_chat_trusted_vars[] = {"bos_token", "eos_token", "add_generation_prompt", NULL};

static hr_status chat_render(const char *tmpl, const json_t *messages, const json_t *tools,
                             bool add_generation_prompt, const char *bos_token, const char *eos_token,
                             const json_t *extra, const hr_tmpl_opts *opts, char **out, size_t *out_len,
                             hr_span **spans, size_t *n_spans, hr_err *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (spans)
        *spans = NULL;
    if (n_spans)
        *n_spans = 0;
    if (!tmpl)
        return hr_err_set(err, HR_ERR_INVALID, "no chat template");
    if (!json_is_array(messages))
        return hr_err_set(err, HR_ERR_INVALID, "messages must be a JSON array");
    if (extra && !json_is_object(extra))
        return hr_err_set(err, HR_ERR_INVALID, "extra template arguments must be a JSON object");
    json_t *ctx = json_object();
    if (!ctx)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    /* extra kwargs first: the standard variables win, as in apply_chat_template;
     * a variable lost to a failed allocation would silently change the prompt */
    if ((extra && json_object_update(ctx, (json_t *)extra)) || json_object_set(ctx, "messages", (json_t *)messages) ||
        (tools && !json_is_null(tools) && json_object_set(ctx, "tools", (json_t *)tools)) ||
        json_object_set_new(ctx, "add_generation_prompt", json_boolean(add_generation_prompt)) ||
        json_object_set_new(ctx, "bos_token", json_string(bos_token ? bos_token : "")) ||
        json_object_set_new(ctx, "eos_token", json_string(eos_token ? eos_token : ""))) {
        json_decref(ctx);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }
    hr_tmpl *t = NULL;
    hr_status s = hr_tmpl_parse(tmpl, strlen(tmpl), &t, err);
    if (s == HR_OK)
        s = spans ? hr_tmpl_render_marked(t, ctx, opts, hr_chat_trusted_vars, out, out_len, spans, n_spans, err)
                  : hr_tmpl_render(t, ctx, opts, out, out_len, err);
    hr_tmpl_free(t);
    json_decref(ctx);
    return s;
}

hr_status hr_chat_render(const char *tmpl, const json_t *messages, const json_t *tools,
                         bool add_generation_prompt, const char *bos_token, const char *eos_token,
                         const json_t *extra, const hr_tmpl_opts *opts, char **out, size_t *out_len,
                         hr_err *err)
{
    return chat_render(tmpl, messages, tools, add_generation_prompt, bos_token, eos_token, extra, opts, out,
                       out_len, NULL, NULL, err);
}

hr_status hr_chat_render_marked(const char *tmpl, const json_t *messages, const json_t *tools,
                                bool add_generation_prompt, const char *bos_token, const char *eos_token,
                                const json_t *extra, const hr_tmpl_opts *opts, char **out, size_t *out_len,
                                hr_span **spans, size_t *n_spans, hr_err *err)
{
    if (!spans || !n_spans) {
        *out = NULL;
        return hr_err_set(err, HR_ERR_INVALID, "hr_chat_render_marked: no place for the spans");
    }
    return chat_render(tmpl, messages, tools, add_generation_prompt, bos_token, eos_token, extra, opts, out,
                       out_len, spans, n_spans, err);
}

/* A GGUF string as a malloc'd NUL-terminated copy. */
static char *gstr_dup(hr_gguf_str s)
{
    char *p = malloc((size_t)s.len + 1);
    if (p) {
        memcpy(p, s.ptr, (size_t)s.len);
        p[s.len] = 0;
    }
    return p;
}

static char *token_text(const hr_gguf *g, const char *id_key)
{
    uint64_t id;
    if (!hr_gguf_get_u64(g, id_key, &id))
        return NULL;
    const hr_gguf_value *toks = hr_gguf_get_arr(g, "tokenizer.ggml.tokens", HR_GGUF_STRING);
    if (!toks || id >= toks->v.arr.n)
        return NULL;
    return gstr_dup(toks->v.arr.items[id].v.s);
}

hr_status hr_chat_template_from_gguf(const hr_gguf *g, char **tmpl, char **bos, char **eos, hr_err *err)
{
    *tmpl = NULL;
    if (bos)
        *bos = NULL;
    if (eos)
        *eos = NULL;
    hr_gguf_str s;
    if (!hr_gguf_get_str(g, "tokenizer.chat_template", &s))
        return hr_err_set(err, HR_ERR_NOT_FOUND, "the model has no tokenizer.chat_template");
    *tmpl = gstr_dup(s);
    if (!*tmpl)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    if (bos)
        *bos = token_text(g, "tokenizer.ggml.bos_token_id");
    if (eos)
        *eos = token_text(g, "tokenizer.ggml.eos_token_id");
    return HR_OK;
}
