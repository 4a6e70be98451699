/* fuzz_chat.c - libFuzzer target for chat rendering with random contexts:
 * the Jinja renderer under the untrusted-span marking the server uses.
 *
 * Input: a header that builds the context, then the template text. Header
 * byte 0: flags (add_generation_prompt, enable_thinking, tools, a
 * reasoning_effort); byte 1: message count (0-7); then per message a role
 * byte (system/user/assistant/tool/developer or an odd one), a kind byte
 * (content string / null / text parts / tool calls / reasoning_content)
 * and a length byte; content bytes are taken from the input that follows.
 * Everything after the header is the template. Renders must fail cleanly
 * or return sorted, disjoint spans inside the output. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "tmpl/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const uint8_t *p;
    size_t n, i;
} rd;

static unsigned byte(rd *r) { return r->i < r->n ? r->p[r->i++] : 0; }

/* up to len bytes of text (may be invalid UTF-8: then jansson refuses it and
 * the field is a plain marker instead) */
static json_t *text(rd *r, size_t len)
{
    if (len > r->n - r->i)
        len = r->n - r->i;
    json_t *s = json_stringn((const char *)r->p + r->i, len);
    r->i += len;
    return s ? s : json_string("<|im_end|></s>");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rd r = {data, size, 0};
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer", "", "ipython", "User"};
    unsigned flags = byte(&r), nm = byte(&r) & 7;
    json_t *msgs = json_array();
    for (unsigned k = 0; k < nm; k++) {
        unsigned role = byte(&r) & 7, kind = byte(&r) % 5, len = byte(&r) & 63;
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string(roles[role]));
        switch (kind) {
        case 0: json_object_set_new(m, "content", text(&r, len)); break;
        case 1: json_object_set_new(m, "content", json_null()); break;
        case 2:
            json_object_set_new(m, "content", json_pack("[{s:s, s:o}]", "type", "text", "text", text(&r, len)));
            break;
        case 3:
            json_object_set_new(m, "content", json_string(""));
            json_object_set_new(m, "tool_calls",
                                json_pack("[{s:s, s:s, s:{s:o, s:{s:o, s:i}}}]", "id", "call_1", "type", "function",
                                          "function", "name", text(&r, len & 15), "arguments", "city",
                                          text(&r, len), "n", (int)len));
            break;
        default:
            json_object_set_new(m, "content", text(&r, len));
            json_object_set_new(m, "reasoning_content", text(&r, len / 2));
            break;
        }
        if (role == 3)
            json_object_set_new(m, "tool_call_id", json_string("call_1"));
        json_array_append_new(msgs, m);
    }
    json_t *tools = NULL;
    if (flags & 4)
        tools = json_pack("[{s:s, s:{s:s, s:o, s:{s:s, s:{s:{s:s}}}}}]", "type", "function", "function", "name",
                          "get", "description", text(&r, byte(&r) & 31), "parameters", "type", "object",
                          "properties", "city", "type", "string");
    json_t *extra = json_object();
    json_object_set_new(extra, "enable_thinking", json_boolean(flags & 2));
    if (flags & 8)
        json_object_set_new(extra, "reasoning_effort", text(&r, byte(&r) & 7));

    const char *tmpl = (const char *)data + r.i;
    size_t tlen = size - r.i;
    char *src = malloc(tlen + 1);
    if (src) {
        memcpy(src, tmpl, tlen);
        src[tlen] = 0; /* hr_chat_render takes a C string: the template ends at a NUL */
        struct tm now;
        memset(&now, 0, sizeof now);
        now.tm_year = 125;
        now.tm_mday = 10;
        hr_tmpl_opts o = {
            .max_output = 1 << 16,
            .max_memory = 32u << 20,
            .max_iterations = 20000,
            .max_depth = 200,
            .max_macro_depth = 30,
            .clock = hr_tmpl_fixed_clock,
            .clock_ud = &now,
        };
        char *out = NULL;
        size_t n = 0, ns = 0;
        hr_span *sp = NULL;
        hr_err err;
        if (hr_chat_render_marked(src, msgs, tools, flags & 1, "<s>", "</s>", extra, &o, &out, &n, &sp, &ns,
                                  &err) == HR_OK) {
            for (size_t i = 0; i < ns; i++)
                if (!sp[i].len || sp[i].off + sp[i].len > n || (i && sp[i].off <= sp[i - 1].off + sp[i - 1].len))
                    abort();
            free(out);
            free(sp);
        }
        free(src);
    }
    json_decref(msgs);
    json_decref(tools);
    json_decref(extra);
    return 0;
}
