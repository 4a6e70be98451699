/* fuzz_request - libFuzzer target for the OpenAI request parser and the
 * response builder (src/api/openai.c).
 *
 * Input: byte 0 picks the endpoint (chat, completions, tokenize,
 * detokenize) and whether a chat template is used; the rest is the request
 * body. Parsed requests are then run through the response builder with
 * synthetic events cut from the body bytes (text of any bytes, logprobs,
 * every finish reason), streamed and not. Checks: no crash, no sanitizer
 * report, every error has an HTTP status and a message, every response is
 * valid JSON. The model (for its vocabulary) comes from $HEARTH_FIXTURES
 * (default: the fixtures next to this source tree). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "api/openai.h"
#include "model/model.h"
#include "tmpl/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static hr_model *g_model;
static hr_tmpl *g_tmpl;
static hr_api_model g_m, g_mt;

static void load(void)
{
    char dir[4096], path[8192];
    const char *env = getenv("HEARTH_FIXTURES");
    if (env && *env) {
        snprintf(dir, sizeof dir, "%s", env);
    } else {
        snprintf(dir, sizeof dir, "%s", __FILE__);
        char *p = strstr(dir, "/tests/fuzz/");
        if (p)
            strcpy(p, "/../shared/fixtures");
        else
            snprintf(dir, sizeof dir, "../shared/fixtures");
    }
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", dir);
    hr_err err = {0};
    if (hr_model_load(path, &g_model, &err)) {
        fprintf(stderr, "fuzz_request: %s\n", err.msg);
        abort();
    }
    /* a small template with reasoning markers */
    const char *src = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
                      "{% if m.tool_calls %}{{ m.tool_calls | tojson }}{% endif %}{% endfor %}"
                      "{% if add_generation_prompt %}<|assistant|><think>{% endif %}";
    if (hr_tmpl_parse(src, strlen(src), &g_tmpl, &err))
        abort();
    g_m = (hr_api_model){.vocab = hr_model_vocab(g_model), .n_vocab = hr_model_hparams(g_model)->n_vocab,
                         .n_ctx = 512, .id = "m", .created = 1};
    g_mt = g_m;
    g_mt.tmpl = g_tmpl;
    g_mt.reasoning = true;
}

static void check_json(const char *s)
{
    if (!s)
        return;
    json_t *o = json_loads(s, JSON_ALLOW_NUL, NULL); /* byte tokens may decode to NUL (\u0000) */
    if (!o)
        abort();
    json_decref(o);
}

static void run_events(const hr_api_model *m, hr_api_request *r, const uint8_t *data, size_t size)
{
    hr_api_resp *resp = hr_api_resp_new(m, r, "id-1", 1);
    if (!resp)
        return;
    hr_api_buf out = {.max = 1u << 20};
    hr_token_info ti[2];
    memset(ti, 0, sizeof ti);
    size_t pos = 0;
    for (int k = 0; k < 64 && pos < size; k++) {
        uint8_t c = data[pos++];
        size_t len = c % 16;
        if (len > size - pos)
            len = size - pos;
        char text[17];
        memcpy(text, data + pos, len);
        text[len] = 0;
        pos += len;
        hr_event ev = {.kind = (c & 0x80) ? HR_EV_DONE : HR_EV_TEXT,
                       .index = (c >> 4) & 3,
                       .text = text,
                       .len = len,
                       .finish = (hr_finish)(1 + (c & 3))};
        if (c & 0x40) {
            ti[0].token = c * 3 % 700; /* some out of the vocabulary */
            ti[0].logprob = -1.0f;
            ti[0].n_top = c % 3;
            ti[0].top_ids[0] = c;
            ti[0].top_ids[1] = 1;
            ev.tokens = ti;
            ev.n_tokens = 1;
        }
        if (!hr_api_resp_event(resp, (c >> 2) & 1, &ev, &out))
            break;
    }
    hr_req_usage u = {.prompt_tokens = 3, .completion_tokens = 5};
    if (r->stream) {
        hr_api_resp_stream_end(resp, &u, &out);
        /* every data line but [DONE] is JSON */
        char *save = NULL;
        for (char *line = out.p ? strtok_r(out.p, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save))
            if (strncmp(line, "data: ", 6) || (strcmp(line + 6, "[DONE]") && (check_json(line + 6), 0)))
                abort();
    } else {
        char *s = hr_api_resp_json(resp, &u);
        check_json(s);
        free(s);
    }
    hr_api_error e;
    hr_api_resp_failed(resp, &e);
    hr_api_buf_free(&out);
    hr_api_resp_free(resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_model)
        load();
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    const hr_api_model *m = (sel & 4) ? &g_mt : &g_m;
    hr_api_error e = {0};
    switch (sel & 3) {
    case 0:
    case 1: {
        hr_api_request *r = NULL;
        hr_status st = hr_api_parse(m, (sel & 3) == 0 ? HR_API_CHAT : HR_API_COMPLETION, body, len, 1, &r, &e);
        if (st) {
            if (r || e.status < 400 || e.status > 599 || !e.message[0])
                abort();
            char *j = hr_api_error_json(&e);
            check_json(j);
            free(j);
            return 0;
        }
        for (int i = 0; i < r->n_prompts; i++)
            if (r->prompts[i].n < 1 || r->prompts[i].max_tokens < 1 ||
                r->prompts[i].n + r->prompts[i].max_tokens > m->n_ctx)
                abort();
        run_events(m, r, data, size);
        hr_api_request_free(r);
        break;
    }
    case 2: {
        char *s = hr_api_tokenize(m, body, len, &e);
        check_json(s);
        free(s);
        break;
    }
    default: {
        char *s = hr_api_detokenize(m, body, len, &e);
        check_json(s);
        free(s);
        break;
    }
    }
    return 0;
}
