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
    m.reasoning = true;
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
        cmocka_unit_test(test_stream_chunks),     cmocka_unit_test(test_cancelled_and_utf8),
        cmocka_unit_test(test_models_tokenize),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
