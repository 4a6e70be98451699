/* test_openai_api.c - the OpenAI request parser, validation and response
 * formatting (src/api/openai.c) without a server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/openai.h"
#include "api/reasoning.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "testutil.h"
#include "tmpl/jinja.h"
#include "tok/vocab.h"

static hr_model *g_model;
static hr_api_model g_m;

static int setup(void **state)
{
    (void)state;
    hr_err err = {0};
    if (hr_model_load(tu_fixture("models/stories260K.gguf"), &g_model, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    g_m = (hr_api_model){.vocab = hr_model_vocab(g_model), .n_vocab = hr_model_hparams(g_model)->n_vocab,
                         .n_ctx = 256, .id = "stories", .alt_id = "stories260K", .created = 1};
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hr_model_free(g_model);
    return 0;
}

static hr_api_request *parse_ok(const hr_api_model *m, hr_api_kind k, const char *body)
{
    hr_api_request *r = NULL;
    hr_api_error e = {0};
    hr_status st = hr_api_parse(m, k, body, strlen(body), 7, &r, &e);
    if (st)
        fprintf(stderr, "unexpected error %d: %s\n", e.status, e.message);
    assert_int_equal(st, HR_OK);
    return r;
}

static void parse_err(hr_api_kind k, const char *body, int status, const char *param)
{
    hr_api_request *r = NULL;
    hr_api_error e = {0};
    hr_status st = hr_api_parse(&g_m, k, body, strlen(body), 7, &r, &e);
    if (st == HR_OK)
        fprintf(stderr, "accepted: %s\n", body);
    assert_int_not_equal(st, HR_OK);
    assert_null(r);
    assert_int_equal(e.status, status);
    assert_true(e.message[0] != 0);
    if (param)
        assert_string_equal(e.param, param);
    char *j = hr_api_error_json(&e);
    json_t *o = json_loads(j, 0, NULL);
    assert_non_null(o);
    assert_true(json_is_string(json_object_get(json_object_get(o, "error"), "message")));
    assert_non_null(json_object_get(json_object_get(o, "error"), "code"));
    json_decref(o);
    free(j);
}

static void test_chat_basic(void **state)
{
    (void)state;
    hr_api_request *r = parse_ok(&g_m, HR_API_CHAT,
                                 "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    assert_int_equal(r->n_prompts, 1);
    assert_int_equal(r->prompts[0].ids[0], hr_vocab_bos(g_m.vocab));
    assert_int_equal(r->prompts[0].max_tokens, 256 - r->prompts[0].n); /* default: the rest of the context */
    assert_string_equal(r->rendered, "User: hi\nAssistant:");
    assert_int_equal(r->gen.n, 1);
    assert_int_equal(r->gen.logprobs, -1);
    assert_true(r->gen.sample.temperature == 1.0f);
    assert_int_equal(r->gen.sample.seed, 7);
    assert_false(r->stream);
    hr_gen_params g = hr_api_gen_for(r, 0);
    assert_ptr_equal(g.prompt, r->prompts[0].ids);
    hr_api_request_free(r);
}

static void test_chat_fields(void **state)
{
    (void)state;
    hr_api_request *r = parse_ok(
        &g_m, HR_API_CHAT,
        "{\"model\":\"stories260K\",\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]}],"
        "\"max_tokens\":50,\"max_completion_tokens\":10,\"temperature\":0,\"top_p\":0.5,\"top_k\":7,\"min_p\":0.1,"
        "\"presence_penalty\":1,\"frequency_penalty\":-1,\"repetition_penalty\":1.2,\"seed\":99,\"stop\":\"x\","
        "\"n\":3,\"logprobs\":true,\"top_logprobs\":4,\"logit_bias\":{\"5\":-100,\"6\":2.5},\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"user\":\"u\",\"ignore_eos\":true,\"whatever\":{}}");
    assert_string_equal(r->rendered, "System: be brief\nUser: a\nb\nAssistant:");
    assert_int_equal(r->prompts[0].max_tokens, 10);
    assert_true(r->gen.sample.temperature == 0.0f);
    assert_int_equal(r->gen.sample.top_k, 7);
    assert_int_equal(r->gen.sample.seed, 99);
    assert_int_equal(r->gen.n_stop, 1);
    assert_string_equal(r->gen.stop[0], "x");
    assert_int_equal(r->gen.n, 3);
    assert_int_equal(r->gen.logprobs, 4);
    assert_int_equal(r->gen.n_bias, 2);
    assert_true(r->gen.bias[0] < -1e30f);
    assert_true(r->stream && r->include_usage && r->gen.ignore_eos && r->chat_logprobs);
    hr_api_request_free(r);
}

static void test_completion_prompts(void **state)
{
    (void)state;
    hr_api_request *r = parse_ok(&g_m, HR_API_COMPLETION, "{\"prompt\":[\"a\",\"b c\"],\"max_tokens\":3,\"n\":2}");
    assert_int_equal(r->n_prompts, 2);
    assert_int_equal(r->prompts[1].max_tokens, 3);
    hr_api_request_free(r);
    r = parse_ok(&g_m, HR_API_COMPLETION, "{\"prompt\":[1,300,301]}");
    assert_int_equal(r->n_prompts, 1);
    assert_int_equal(r->prompts[0].n, 3);
    assert_int_equal(r->prompts[0].ids[1], 300);
    assert_int_equal(r->prompts[0].max_tokens, 253);
    hr_api_request_free(r);
    r = parse_ok(&g_m, HR_API_COMPLETION, "{\"prompt\":[[1,2],[3]],\"logprobs\":2}");
    assert_int_equal(r->n_prompts, 2);
    assert_int_equal(r->gen.logprobs, 2);
    hr_api_request_free(r);
    r = parse_ok(&g_m, HR_API_COMPLETION, "{\"prompt\":\"\"}"); /* empty: BOS alone */
    assert_int_equal(r->prompts[0].n, 1);
    hr_api_request_free(r);
}

static void test_errors(void **state)
{
    (void)state;
    const hr_api_kind C = HR_API_CHAT, P = HR_API_COMPLETION;
    const char *M = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    char b[512];
    parse_err(C, "{", 400, NULL);
    parse_err(C, "", 400, NULL);
    parse_err(C, "null", 400, NULL);
    parse_err(C, "\"x\"", 400, NULL);
    parse_err(C, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}", 400, NULL);
    parse_err(C, "{\"messages\":5}", 400, "messages");
    parse_err(C, "{\"messages\":[]}", 400, "messages");
    parse_err(C, "{\"messages\":[1]}", 400, "messages[0]");
    parse_err(C, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0]");
    parse_err(C, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\"}]}]}", 400, "messages[0]");
#define E(field, param)                                                                                         \
    snprintf(b, sizeof b, "{%s,%s}", M, field);                                                                 \
    parse_err(C, b, 400, param)
    E("\"max_tokens\":-1", "max_tokens");
    E("\"max_tokens\":1.5", "max_tokens");
    E("\"max_tokens\":\"10\"", "max_tokens");
    E("\"max_completion_tokens\":0", "max_completion_tokens");
    E("\"max_tokens\":300", "max_tokens");
    E("\"temperature\":3", "temperature");
    E("\"temperature\":\"hot\"", "temperature");
    E("\"top_p\":-0.1", "top_p");
    E("\"n\":0", "n");
    E("\"n\":17", "n");
    E("\"stream\":1", "stream");
    E("\"stream_options\":{\"include_usage\":true}", "stream_options");
    E("\"stream\":true,\"stream_options\":{\"include_usage\":1}", "stream_options.include_usage");
    E("\"stop\":\"\"", "stop");
    E("\"stop\":{}", "stop");
    E("\"logit_bias\":{\"abc\":1}", "logit_bias");
    E("\"logit_bias\":{\"512\":1}", "logit_bias");
    E("\"logit_bias\":{\"5\":101}", "logit_bias");
    E("\"top_logprobs\":3", "top_logprobs");
    E("\"logprobs\":true,\"top_logprobs\":21", "top_logprobs");
    E("\"tools\":[{\"type\":\"function\"}]", "tools");
    E("\"tool_choice\":\"required\"", "tool_choice");
    E("\"response_format\":{\"type\":\"json_object\"}", "response_format");
    E("\"functions\":[]", "functions");
    E("\"modalities\":[\"audio\"]", "modalities");
    E("\"user\":5", "user");
    E("\"seed\":\"x\"", "seed");
#undef E
    snprintf(b, sizeof b, "{%s,\"model\":\"gpt-4\"}", M);
    parse_err(C, b, 404, "model");
    /* too many stop strings */
    size_t cap = 200000;
    char *big = malloc(cap);
    size_t n = (size_t)snprintf(big, cap, "{%s,\"stop\":[", M);
    for (int i = 0; i < 10000; i++)
        n += (size_t)snprintf(big + n, cap - n, "%s\"s%d\"", i ? "," : "", i);
    snprintf(big + n, cap - n, "]}");
    parse_err(C, big, 400, "stop");
    free(big);
    parse_err(P, "{}", 400, "prompt");
    parse_err(P, "{\"prompt\":5}", 400, "prompt");
    parse_err(P, "{\"prompt\":[]}", 400, "prompt");
    parse_err(P, "{\"prompt\":[-1]}", 400, "prompt");
    parse_err(P, "{\"prompt\":[\"a\",[1]]}", 400, "prompt");
    parse_err(P, "{\"prompt\":\"a\",\"logprobs\":true}", 400, "logprobs");
    parse_err(P, "{\"prompt\":\"a\",\"echo\":true}", 400, "echo");
    parse_err(P, "{\"prompt\":\"a\",\"suffix\":\"b\"}", 400, "suffix");
    parse_err(P, "{\"prompt\":[1,2],\"max_tokens\":255}", 400, "max_tokens");
}

/* Feeds `text` cut at every pair of positions and checks the split. */
static void think_case(const char *text, bool start, const char *content, const char *reasoning)
{
    size_t n = strlen(text);
    for (size_t a = 0; a <= n; a++)
        for (size_t b = a; b <= n; b++) {
            hr_think t;
            hr_think_init(&t, start);
            hr_api_buf c = {0}, r = {0};
            assert_true(hr_think_feed(&t, text, a, &c, &r));
            assert_true(hr_think_feed(&t, text + a, b - a, &c, &r));
            assert_true(hr_think_feed(&t, text + b, n - b, &c, &r));
            assert_true(hr_think_flush(&t, &c, &r));
            assert_string_equal(c.p ? c.p : "", content);
            assert_string_equal(r.p ? r.p : "", reasoning);
            hr_api_buf_free(&c);
            hr_api_buf_free(&r);
        }
}

static void test_think(void **state)
{
    (void)state;
    think_case("<think>plan</think>\n\nanswer", false, "answer", "plan");
    think_case("plan more</think>answer <b>", true, "answer <b>", "plan more");
    think_case("no markers < here <thin", false, "no markers < here <thin", "");
    think_case("a<<think>b</thi</think>c", false, "a<c", "b</thi");
    think_case("", true, "", "");
}

/* Feeds `text` one byte at a time, and cut at every pair of positions,
 * through the harmony splitter after `prompt`; checks the split. */
static void harmony_case(const char *prompt, const char *text, const char *content, const char *reasoning)
{
    size_t n = strlen(text);
    for (size_t a = 0; a <= n; a++)
        for (size_t b = a; b <= n; b++) {
            hr_reason t;
            hr_reason_init(&t, HR_REASON_HARMONY, prompt);
            hr_api_buf c = {0}, r = {0};
            if (a == 0 && b == 0) { /* byte by byte */
                for (size_t i = 0; i < n; i++)
                    assert_true(hr_reason_feed(&t, text + i, 1, &c, &r));
            } else {
                assert_true(hr_reason_feed(&t, text, a, &c, &r));
                assert_true(hr_reason_feed(&t, text + a, b - a, &c, &r));
                assert_true(hr_reason_feed(&t, text + b, n - b, &c, &r));
            }
            assert_true(hr_reason_flush(&t, &c, &r));
            if (strcmp(c.p ? c.p : "", content) || strcmp(r.p ? r.p : "", reasoning))
                fail_msg("harmony \"%s\" cut at %zu, %zu: content \"%s\" reasoning \"%s\"", text, a, b,
                         c.p ? c.p : "", r.p ? r.p : "");
            hr_api_buf_free(&c);
            hr_api_buf_free(&r);
        }
}

static void test_harmony(void **state)
{
    (void)state;
    const char *gen = "<|start|>user<|message|>hi<|end|><|start|>assistant";
    harmony_case(gen, "<|channel|>analysis<|message|>User says hi.<|end|><|start|>assistant<|channel|>final"
                      "<|message|>Hello! 1 < 2 <|x|> <|en<|return|>",
                 "Hello! 1 < 2 <|x|> <|en", "User says hi.");
    /* reasoning only (cut by max_tokens), then final only */
    harmony_case(gen, "<|channel|>analysis<|message|>We need to think <<|", "", "We need to think <<|");
    harmony_case(gen, "<|channel|>final<|message|>Just this.", "Just this.", "");
    /* commentary is user-visible (tool calls come later); a recipient after
     * the channel name does not change the channel */
    harmony_case(gen, "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{\"a\":1}<|call|>",
                 "{\"a\":1}", "");
    harmony_case(gen, "<|channel|>analysis to=x<|message|>r<|end|><|start|>assistant<|channel|>final<|message|>c",
                 "c", "r");
    /* no harmony structure at all: nothing is lost */
    harmony_case(gen, "Hello there", "Hello there", "");
    harmony_case(NULL, "plain <b>text</b>", "plain <b>text</b>", "");
    /* a prompt that opens the final channel itself */
    harmony_case("<|start|>assistant<|channel|>final<|message|>", "Yes.<|return|>", "Yes.", "");
    harmony_case("<|start|>assistant<|channel|>analysis<|message|>", "hmm<|end|><|start|>assistant<|channel|>final"
                 "<|message|>ok", "ok", "hmm");
    harmony_case(gen, "", "", "");
}

static void test_reason_kind(void **state)
{
    (void)state;
    hr_err err = {0};
    static const struct {
        const char *vocab;
        const char *tmpl;
        hr_reason_kind want;
    } c[] = {
        {"gpt-oss", NULL, HR_REASON_HARMONY},
        {"gpt-oss", "{{ '<think>' }}", HR_REASON_HARMONY},
        {"llama-bpe", NULL, HR_REASON_OFF},
        {"llama-bpe", "{% if x %}<think>{% endif %}", HR_REASON_THINK},
        {"qwen35", NULL, HR_REASON_OFF},
        {"deepseek-v3", "<think>", HR_REASON_THINK},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char rel[128];
        snprintf(rel, sizeof rel, "tokenizer/ggml-vocab-%s.gguf", c[i].vocab);
        hr_gguf *g = NULL;
        hr_vocab *v = NULL;
        assert_int_equal(hr_gguf_open(tu_fixture(rel), &g, &err), HR_OK);
        assert_int_equal(hr_vocab_load(g, &v, &err), HR_OK);
        assert_int_equal(hr_reason_kind_for(v, c[i].tmpl), c[i].want);
        hr_vocab_free(v);
        hr_gguf_close(g);
    }
    assert_int_equal(hr_reason_kind_for(NULL, NULL), HR_REASON_OFF);
}

/* gpt-oss's own template: the request renders, the reply's analysis
 * channel lands in reasoning_content and the final channel in content,
 * streamed and not, with markers cut across events. */
static void test_harmony_response(void **state)
{
    (void)state;
    size_t tl = 0;
    char *src = tu_read_file(tu_fixture("templates/openai-gpt-oss-120b.jinja"), &tl);
    assert_non_null(src);
    hr_tmpl *t = NULL;
    hr_err err = {0};
    assert_int_equal(hr_tmpl_parse(src, tl, &t, &err), HR_OK);
    free(src);
    hr_api_model m = g_m;
    m.tmpl = t;
    m.reasoning = HR_REASON_HARMONY;
    const char *pieces[] = {"<|chan", "nel|>analysis<|message|>The user", " greets.<|end|><|st", "art|>assistant",
                            "<|channel|>final<|", "message|>Hi", "! <3"};
    for (int stream = 0; stream < 2; stream++) {
        hr_api_request *r = parse_ok(&m, HR_API_CHAT,
                                     stream ? "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}"
                                            : "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
        size_t rl = strlen(r->rendered);
        assert_true(rl > 18 && !strcmp(r->rendered + rl - 18, "<|start|>assistant"));
        hr_api_resp *resp = hr_api_resp_new(&m, r, "chatcmpl-h", 1);
        hr_api_buf out = {0};
        for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
            hr_event ev = {.kind = HR_EV_TEXT, .index = 0, .text = pieces[i], .len = strlen(pieces[i])};
            assert_true(hr_api_resp_event(resp, 0, &ev, &out));
        }
        hr_event done = {.kind = HR_EV_DONE, .index = 0, .finish = HR_FINISH_STOP};
        assert_true(hr_api_resp_event(resp, 0, &done, &out));
        hr_req_usage u = {.prompt_tokens = 5, .completion_tokens = 7};
        hr_api_buf content = {0}, reasoning = {0};
        if (!stream) {
            char *s = hr_api_resp_json(resp, &u);
            json_t *o = json_loads(s, 0, NULL);
            json_t *msg = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
            assert_true(hr_api_buf_puts(&content, json_string_value(json_object_get(msg, "content"))));
            assert_true(hr_api_buf_puts(&reasoning, json_string_value(json_object_get(msg, "reasoning_content"))));
            json_decref(o);
            free(s);
        } else {
            assert_true(hr_api_resp_stream_end(resp, &u, &out));
            assert_true(hr_api_buf_put(&out, "", 1));
            for (char *line = strtok(out.p, "\n"); line; line = strtok(NULL, "\n")) {
                if (strncmp(line, "data: {", 7))
                    continue;
                json_t *o = json_loads(line + 6, 0, NULL);
                assert_non_null(o);
                json_t *d = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "delta");
                const char *cs = json_string_value(json_object_get(d, "content"));
                const char *rs = json_string_value(json_object_get(d, "reasoning_content"));
                assert_false(cs && strstr(cs, "<|"));
                if (cs)
                    assert_true(hr_api_buf_puts(&content, cs));
                if (rs)
                    assert_true(hr_api_buf_puts(&reasoning, rs));
                json_decref(o);
            }
        }
        assert_non_null(content.p);
        assert_non_null(reasoning.p);
        assert_string_equal(content.p, "Hi! <3");
        assert_string_equal(reasoning.p, "The user greets.");
        hr_api_buf_free(&content);
        hr_api_buf_free(&reasoning);
        hr_api_buf_free(&out);
        hr_api_resp_free(resp);
        hr_api_request_free(r);
    }
    hr_tmpl_free(t);
}

static void test_reasoning_template(void **state)
{
    (void)state;
    const char *src = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                      "{% if add_generation_prompt %}assistant: <think>\n{% endif %}";
    hr_tmpl *t = NULL;
    hr_err err = {0};
    assert_int_equal(hr_tmpl_parse(src, strlen(src), &t, &err), HR_OK);
    hr_api_model m = g_m;
    m.tmpl = t;
    m.reasoning = HR_REASON_THINK;
    hr_api_request *r = parse_ok(&m, HR_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]}");
    assert_string_equal(r->rendered, "user: q\nassistant: <think>\n");
    assert_true(r->reasoning && r->think_start);

    /* the response: reasoning then content, streamed and not */
    hr_api_resp *resp = hr_api_resp_new(&m, r, "chatcmpl-x", 123);
    hr_api_buf out = {0};
    const char *pieces[] = {"thinking", " hard</th", "ink>\n\nThe answer", " is 4."};
    for (int i = 0; i < 4; i++) {
        hr_event ev = {.kind = HR_EV_TEXT, .index = 0, .text = pieces[i], .len = strlen(pieces[i])};
        assert_true(hr_api_resp_event(resp, 0, &ev, &out));
    }
    hr_event done = {.kind = HR_EV_DONE, .index = 0, .finish = HR_FINISH_STOP};
    assert_true(hr_api_resp_event(resp, 0, &done, &out));
    hr_req_usage u = {.prompt_tokens = 5, .completion_tokens = 4, .cached_tokens = 2};
    char *s = hr_api_resp_json(resp, &u);
    json_t *o = json_loads(s, 0, NULL);
    json_t *msg = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "The answer is 4.");
    assert_string_equal(json_string_value(json_object_get(msg, "reasoning_content")), "thinking hard");
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(json_object_get(o, "usage"), "prompt_tokens_details"), "cached_tokens")),
                     2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "usage"), "total_tokens")), 9);
    json_decref(o);
    free(s);
    hr_api_resp_free(resp);
    hr_api_buf_free(&out);
    hr_api_request_free(r);
    hr_tmpl_free(t);
}

/* Streamed chunks: role first, deltas, finish, usage chunk, [DONE]. */
static void test_stream_chunks(void **state)
{
    (void)state;
    hr_api_request *r = parse_ok(&g_m, HR_API_CHAT,
                                 "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"n\":2,\"stream\":true,"
                                 "\"stream_options\":{\"include_usage\":true}}");
    hr_api_resp *resp = hr_api_resp_new(&g_m, r, "chatcmpl-y", 5);
    hr_api_buf out = {0};
    hr_event ev = {.kind = HR_EV_TEXT, .index = 1, .text = "h\xc3\xa9", .len = 3};
    assert_true(hr_api_resp_event(resp, 0, &ev, &out));
    hr_event d1 = {.kind = HR_EV_DONE, .index = 1, .finish = HR_FINISH_LENGTH};
    hr_event d0 = {.kind = HR_EV_DONE, .index = 0, .finish = HR_FINISH_STOP};
    assert_true(hr_api_resp_event(resp, 0, &d1, &out));
    assert_true(hr_api_resp_event(resp, 0, &d0, &out));
    hr_req_usage u = {.prompt_tokens = 3, .completion_tokens = 1};
    assert_true(hr_api_resp_stream_end(resp, &u, &out));
    /* parse the chunks back */
    int n = 0, roles = 0, finishes = 0;
    char *save = NULL;
    char *text = strdup(out.p);
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        assert_true(!strncmp(line, "data: ", 6));
        if (!strcmp(line, "data: [DONE]")) {
            assert_null(strtok_r(NULL, "\n", &save));
            break;
        }
        json_t *o = json_loads(line + 6, 0, NULL);
        assert_non_null(o);
        assert_string_equal(json_string_value(json_object_get(o, "object")), "chat.completion.chunk");
        assert_string_equal(json_string_value(json_object_get(o, "id")), "chatcmpl-y");
        json_t *ch = json_object_get(o, "choices");
        if (json_array_size(ch) == 0) {
            assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "usage"), "total_tokens")), 4);
        } else {
            assert_true(json_is_null(json_object_get(o, "usage")));
            json_t *c = json_array_get(ch, 0);
            json_t *delta = json_object_get(c, "delta");
            if (json_object_get(delta, "role"))
                roles++;
            if (json_is_string(json_object_get(c, "finish_reason")))
                finishes++;
            if (json_object_get(delta, "content") && json_integer_value(json_object_get(c, "index")) == 1 &&
                !json_object_get(delta, "role"))
                assert_string_equal(json_string_value(json_object_get(delta, "content")), "h\xc3\xa9");
        }
        json_decref(o);
        n++;
    }
    assert_int_equal(roles, 2);
    assert_int_equal(finishes, 2);
    assert_int_equal(n, 6);
    free(text);
    hr_api_buf_free(&out);
    hr_api_resp_free(resp);
    hr_api_request_free(r);
}


/* The head and the full parse read "n": 16.0 and max_tokens the same way
 * (audit finding 1), and budgets count n x max_tokens over the prompts. */
static void test_head_and_tokens(void **state)
{
    (void)state;
    const char *body = "{\"prompt\":[\"Once\",\"The dog\"],\"n\":4.0,\"max_tokens\":60.0,\"model\":\"x\"}";
    hr_api_doc *d = NULL;
    hr_api_head h;
    hr_api_error e = {0};
    assert_int_equal(hr_api_doc_parse(HR_API_COMPLETION, body, strlen(body), &d, &h, &e), HR_OK);
    assert_int_equal(h.n, 4);
    assert_int_equal(h.max_tokens, 60);
    assert_int_equal(h.n_prompts, 2);
    assert_string_equal(h.model, "x");
    hr_api_request *r = NULL;
    /* "x" is not the local model: 404, unless a route chose the engine */
    assert_int_equal(hr_api_parse_doc(&g_m, d, 1, false, &r, &e), HR_ERR_NOT_FOUND);
    assert_int_equal(hr_api_parse_doc(&g_m, d, 1, true, &r, &e), HR_OK);
    assert_int_equal(r->gen.n, 4);
    assert_true(r->max_given);
    int64_t want = 0;
    for (int i = 0; i < r->n_prompts; i++) {
        assert_int_equal(r->prompts[i].max_tokens, 60);
        want += r->prompts[i].n + 4 * 60;
    }
    assert_true(r->prompts[0].n >= 2 && r->prompts[1].n >= 3); /* BOS + the words */
    assert_int_equal(hr_api_request_tokens(r), want);
    hr_api_request_free(r);
    hr_api_doc_free(d);

    /* without max_tokens: the default, never past the context (256) */
    r = parse_ok(&g_m, HR_API_COMPLETION, "{\"prompt\":\"Once\",\"n\":2}");
    assert_false(r->max_given);
    int32_t pn = r->prompts[0].n;
    assert_int_equal(r->prompts[0].max_tokens, 256 - pn);
    hr_api_request_default_max(r, &g_m, 100);
    assert_int_equal(r->prompts[0].max_tokens, 100);
    assert_int_equal(hr_api_request_tokens(r), pn + 2 * 100);
    hr_api_request_default_max(r, &g_m, 1000); /* clamped to the context */
    assert_int_equal(r->prompts[0].max_tokens, 256 - pn);
    hr_api_request_free(r);
    r = parse_ok(&g_m, HR_API_COMPLETION, "{\"prompt\":\"Once\",\"max_tokens\":5}");
    hr_api_request_default_max(r, &g_m, 100); /* the client's own wins */
    assert_int_equal(r->prompts[0].max_tokens, 5);
    hr_api_request_free(r);

    /* head errors: what the parser refuses, the head refuses */
    parse_err(HR_API_COMPLETION, "{\"prompt\":\"a\",\"n\":1.5}", 400, "n");
    const char *bad = "{\"prompt\":\"a\",\"max_tokens\":\"60\"}";
    assert_int_not_equal(hr_api_doc_parse(HR_API_COMPLETION, bad, strlen(bad), &d, &h, &e), HR_OK);
    assert_string_equal(e.param, "max_tokens");
    hr_api_doc_free(d);
}

/* Bounds before generation (audit finding 2): n x prompts, and a logprobs
 * request whose every token's entry must pass the cap. */
static void test_response_bounds(void **state)
{
    (void)state;
    char body[1024];
    snprintf(body, sizeof body, "{\"prompt\":[%s\"a\"],\"n\":16,\"max_tokens\":2}",
             "\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",");
    parse_err(HR_API_COMPLETION, body, 400, "n"); /* 16 x 16 */
    hr_api_request_free(parse_ok(&g_m, HR_API_COMPLETION,
                                 "{\"prompt\":[\"a\",\"b\",\"c\",\"d\"],\"n\":16,\"max_tokens\":2}")); /* 64 */
    hr_api_model m = g_m;
    m.max_response = 100000;
    /* chat: at least 52 + 36 x 20 = 772 bytes a token; 2 x 60 x 772 = 92,640 fits, 2 x 70 does not */
    const char *fits = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2,\"max_tokens\":60,"
                       "\"logprobs\":true,\"top_logprobs\":20}";
    const char *over = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2,\"max_tokens\":70,"
                       "\"logprobs\":true,\"top_logprobs\":20}";
    hr_api_request_free(parse_ok(&m, HR_API_CHAT, fits));
    hr_api_request *r = NULL;
    hr_api_error e = {0};
    assert_int_equal(hr_api_parse(&m, HR_API_CHAT, over, strlen(over), 1, &r, &e), HR_ERR_INVALID);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.code, "response_too_large");
    /* streamed, nothing is held: no such bound */
    const char *st = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2,\"max_tokens\":70,"
                     "\"logprobs\":true,\"top_logprobs\":20,\"stream\":true}";
    hr_api_request_free(parse_ok(&m, HR_API_CHAT, st));
}

/* The cap while building a non-streamed response: past it the builder
 * fails, and the error is a 400 response_too_large. */
static void test_response_cap(void **state)
{
    (void)state;
    hr_api_model m = g_m;
    m.max_response = 4096;
    hr_api_request *r = parse_ok(&m, HR_API_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":2}");
    hr_api_resp *resp = hr_api_resp_new(&m, r, "cmpl-cap", 5);
    hr_api_buf out = {0};
    hr_token_info ti = {.token = 10, .logprob = -0.5f, .n_top = 2, .top_ids = {10, 11}, .top_logprobs = {-0.5f, -1.5f}};
    hr_event ev = {.kind = HR_EV_TEXT, .index = 0, .text = "abcd", .len = 4, .tokens = &ti, .n_tokens = 1};
    int i = 0;
    while (i < 10000 && hr_api_resp_event(resp, 0, &ev, &out))
        i++;
    /* about 4 bytes of text + 40 of logprobs a token: stopped near 4096 / 44 */
    assert_true(i > 40 && i < 4096 / 9);
    hr_api_error e;
    assert_true(hr_api_resp_failed(resp, &e));
    assert_int_equal(e.status, 400);
    assert_string_equal(e.code, "response_too_large");
    assert_null(hr_api_resp_json(resp, NULL));
    hr_api_resp_free(resp);

    /* under the cap: the same text assembled, valid JSON, every token listed */
    resp = hr_api_resp_new(&m, r, "cmpl-cap", 5);
    for (int k = 0; k < 20; k++)
        assert_true(hr_api_resp_event(resp, 0, &ev, &out));
    hr_event d = {.kind = HR_EV_DONE, .index = 0, .finish = HR_FINISH_LENGTH};
    assert_true(hr_api_resp_event(resp, 0, &d, &out));
    assert_false(hr_api_resp_failed(resp, &e));
    char *s = hr_api_resp_json(resp, NULL);
    assert_non_null(s);
    assert_true(strlen(s) <= 4096);
    json_t *o = json_loads(s, 0, NULL);
    assert_non_null(o);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    assert_int_equal(json_string_length(json_object_get(ch, "text")), 80);
    json_t *lp = json_object_get(ch, "logprobs");
    assert_int_equal(json_array_size(json_object_get(lp, "tokens")), 20);
    assert_int_equal(json_array_size(json_object_get(lp, "token_logprobs")), 20);
    assert_int_equal(json_array_size(json_object_get(lp, "top_logprobs")), 20);
    json_t *offs = json_object_get(lp, "text_offset");
    assert_int_equal(json_array_size(offs), 20);
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "length");
    assert_string_equal(json_string_value(json_object_get(o, "object")), "text_completion");
    assert_non_null(json_object_get(o, "usage"));
    json_decref(o);
    free(s);
    hr_api_resp_free(resp);
    hr_api_request_free(r);
    hr_api_buf_free(&out);
}

/* The byte-length bound: ceil(bytes / longest piece) tokens at least. */
static void test_cheap_context_bound(void **state)
{
    (void)state;
    int32_t mtb = hr_api_max_token_bytes(g_m.vocab);
    assert_true(mtb >= 4);
    /* every token's piece is at most mtb bytes */
    char buf[1024];
    for (int32_t id = 0; id < hr_vocab_n_tokens(g_m.vocab); id++)
        assert_true(hr_tok_piece(g_m.vocab, id, true, buf, sizeof buf) <= (size_t)mtb);
    hr_api_model m = g_m;
    m.max_token_bytes = mtb;
    /* a text of 256 x mtb + 1 bytes has more than 256 tokens */
    size_t len = (size_t)256 * (size_t)mtb + 1;
    char *body = malloc(len + 64);
    int k = snprintf(body, 64, "{\"prompt\":\"");
    memset(body + k, 'a', len);
    snprintf(body + k + len, 64, "\"}");
    hr_api_request *r = NULL;
    hr_api_error e = {0};
    assert_int_equal(hr_api_parse(&m, HR_API_COMPLETION, body, strlen(body), 1, &r, &e), HR_ERR_INVALID);
    assert_string_equal(e.code, "context_length_exceeded");
    assert_non_null(strstr(e.message, "bytes, so at least"));
    /* the same text without the bound: the tokenizer finds it too long as well */
    assert_int_equal(hr_api_parse(&g_m, HR_API_COMPLETION, body, strlen(body), 1, &r, &e), HR_ERR_INVALID);
    assert_string_equal(e.code, "context_length_exceeded");
    assert_null(strstr(e.message, "bytes, so at least"));
    free(body);
}

static void test_cancelled_and_utf8(void **state)
{
    (void)state;
    hr_api_request *r = parse_ok(&g_m, HR_API_COMPLETION, "{\"prompt\":\"a\"}");
    hr_api_resp *resp = hr_api_resp_new(&g_m, r, "cmpl-z", 5);
    hr_api_buf out = {0};
    hr_event ev = {.kind = HR_EV_TEXT, .index = 0, .text = "bad \xff byte", .len = 10};
    assert_true(hr_api_resp_event(resp, 0, &ev, &out));
    hr_event d = {.kind = HR_EV_DONE, .index = 0, .finish = HR_FINISH_CANCELLED};
    assert_true(hr_api_resp_event(resp, 0, &d, &out));
    hr_api_error e;
    assert_true(hr_api_resp_failed(resp, &e));
    assert_int_equal(e.status, 503);
    char *s = hr_api_resp_json(resp, NULL);
    assert_non_null(strstr(s, "bad \xef\xbf\xbd byte"));
    free(s);
    hr_api_resp_free(resp);
    hr_api_request_free(r);
    hr_api_buf b = {0};
    assert_true(hr_api_utf8_sanitize("\xe2\x82", 2, &b));
    assert_string_equal(b.p, "\xef\xbf\xbd\xef\xbf\xbd");
    hr_api_buf_free(&b);
    hr_api_buf capped = {.max = 4};
    assert_true(hr_api_buf_puts(&capped, "abcd"));
    assert_false(hr_api_buf_puts(&capped, "e"));
    hr_api_buf_free(&capped);
}

static void test_models_tokenize(void **state)
{
    (void)state;
    char *s = hr_api_models_json(&g_m, false);
    json_t *o = json_loads(s, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "object")), "list");
    json_t *m0 = json_array_get(json_object_get(o, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(m0, "id")), "stories");
    assert_int_equal(json_integer_value(json_object_get(m0, "context_length")), 256);
    json_decref(o);
    free(s);
    hr_api_error e;
    s = hr_api_tokenize(&g_m, "{\"content\":\"Hello\",\"add_special\":true}", 38, &e);
    assert_non_null(s);
    o = json_loads(s, 0, NULL);
    json_t *toks = json_object_get(o, "tokens");
    assert_int_equal(json_integer_value(json_array_get(toks, 0)), hr_vocab_bos(g_m.vocab));
    json_t *req = json_pack("{s:O}", "tokens", toks);
    char *dj = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *d = hr_api_detokenize(&g_m, dj, strlen(dj), &e);
    assert_non_null(d);
    assert_non_null(strstr(d, "\"Hello\""));
    free(d);
    free(dj);
    json_decref(o);
    free(s);
    assert_null(hr_api_tokenize(&g_m, "{\"content\":1}", 13, &e));
    assert_int_equal(e.status, 400);
    assert_null(hr_api_detokenize(&g_m, "{\"tokens\":[1,100000]}", 21, &e));
    assert_int_equal(e.status, 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_basic),        cmocka_unit_test(test_chat_fields),
        cmocka_unit_test(test_completion_prompts), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_think),             cmocka_unit_test(test_reasoning_template),
        cmocka_unit_test(test_harmony),           cmocka_unit_test(test_reason_kind),
        cmocka_unit_test(test_harmony_response),
        cmocka_unit_test(test_stream_chunks),     cmocka_unit_test(test_cancelled_and_utf8),
        cmocka_unit_test(test_models_tokenize),
        cmocka_unit_test(test_head_and_tokens),   cmocka_unit_test(test_response_bounds),
        cmocka_unit_test(test_response_cap),      cmocka_unit_test(test_cheap_context_bound),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
