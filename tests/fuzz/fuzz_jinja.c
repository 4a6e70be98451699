/* fuzz_jinja.c - libFuzzer target for the Jinja parser and renderer.
 *
 * Input: template text, optionally followed by a NUL byte and a JSON
 * context. Without one, a small chat context is used (messages with tool
 * calls, tools, add_generation_prompt, tokens, extra kwargs). Rendering runs
 * under tight limits; any error is fine, a crash, leak or hang is not. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tmpl/jinja.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char default_ctx[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    "{\"role\": \"user\", \"content\": \"Hi \\u00e9\\ud83e\\udd17 <b>\"},"
    "{\"role\": \"assistant\", \"content\": \"\", \"reasoning_content\": \"think\","
    " \"tool_calls\": [{\"id\": \"abc123def\", \"type\": \"function\", \"function\": {\"name\": \"get\","
    " \"arguments\": {\"city\": \"Paris\", \"n\": [1, 2.5, null, true]}}}]},"
    "{\"role\": \"tool\", \"tool_call_id\": \"abc123def\", \"name\": \"get\", \"content\": \"{\\\"t\\\": 21}\"}],"
    "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get\", \"description\": \"d\","
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}},"
    " \"required\": [\"city\"]}}}],"
    "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
    "\"enable_thinking\": false, \"reasoning_effort\": \"low\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *src = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    const char *ctx = default_ctx;
    size_t clen = sizeof default_ctx - 1;
    if (nul) {
        ctx = (const char *)nul + 1;
        clen = size - tlen - 1;
    }
    hr_tmpl *t = NULL;
    hr_err err;
    if (hr_tmpl_parse(src, tlen, &t, &err) != HR_OK)
        return 0;
    struct tm now;
    memset(&now, 0, sizeof now);
    now.tm_year = 125;
    now.tm_mon = 6;
    now.tm_mday = 10;
    now.tm_hour = 12;
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
    size_t n = 0;
    if (hr_tmpl_render_json(t, ctx, clen, &o, &out, &n, &err) == HR_OK) {
        if (strlen(out) > n)
            abort(); /* the length must cover the text */
        free(out);
    }
    hr_tmpl_free(t);
    return 0;
}
