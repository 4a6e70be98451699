/* chat.c - hr_chat_render: the usual chat-template variables in one call. */
#include <string.h>

#include "tmpl/jinja.h"

hr_status hr_chat_render(const char *tmpl, const json_t *messages, const json_t *tools,
                         bool add_generation_prompt, const char *bos_token, const char *eos_token,
                         const json_t *extra, const hr_tmpl_opts *opts, char **out, size_t *out_len,
                         hr_err *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!tmpl)
        return hr_err_set(err, HR_ERR_INVALID, "no chat template");
    if (!json_is_array(messages))
        return hr_err_set(err, HR_ERR_INVALID, "messages must be a JSON array");
    if (extra && !json_is_object(extra))
        return hr_err_set(err, HR_ERR_INVALID, "extra template arguments must be a JSON object");
    json_t *ctx = json_object();
    if (!ctx)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    /* extra kwargs first: the standard variables win, as in apply_chat_template */
    if (extra)
        json_object_update(ctx, (json_t *)extra);
    json_object_set(ctx, "messages", (json_t *)messages);
    if (tools && !json_is_null(tools))
        json_object_set(ctx, "tools", (json_t *)tools);
    json_object_set_new(ctx, "add_generation_prompt", json_boolean(add_generation_prompt));
    json_object_set_new(ctx, "bos_token", json_string(bos_token ? bos_token : ""));
    json_object_set_new(ctx, "eos_token", json_string(eos_token ? eos_token : ""));
    hr_tmpl *t = NULL;
    hr_status s = hr_tmpl_parse(tmpl, strlen(tmpl), &t, err);
    if (s == HR_OK)
        s = hr_tmpl_render(t, ctx, opts, out, out_len, err);
    hr_tmpl_free(t);
    json_decref(ctx);
    return s;
}
