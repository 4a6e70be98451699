/* test_sse.c - the one SSE reader (upstream/sse.h) and the upstream's
 * stream parsing on top of it (hr_up_parse_stream): the same events
 * whatever the pieces the bytes come in, CRLF framing, comments, multi-line
 * data, the size bound; usage, text, id, [DONE] and error events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "upstream/sse.h"
#include "upstream/upstream_impl.h"

typedef struct {
    char got[4096];
    size_t n;
    int events, stop_after;
} collect;

/* events as "<data>|" */
static bool on_ev(void *ud, const char *d, size_t len)
{
    collect *c = ud;
    assert_int_equal(strlen(d), len); /* NUL-terminated at len (no NUL in these inputs) */
    assert_true(c->n + len + 1 < sizeof c->got);
    memcpy(c->got + c->n, d, len);
    c->n += len;
    c->got[c->n++] = '|';
    c->got[c->n] = 0;
    return ++c->events != c->stop_after;
}

static const char k_stream[] =
    ": a comment\n\n"
    "data: one\n\n"
    "data:two\r\n\r\n"
    "event: x\nid: 7\ndata: a\ndata:  b\n\n"
    "retry: 5\n\n"
    "data:\n\n"
    "data: tail\n\n"
    "data: partial";
static const char k_want[] = "one|two|a\n b||tail|";

static void test_pieces(void **state)
{
    (void)state;
    size_t n = sizeof k_stream - 1;
    /* whole, then every split in two, then byte by byte */
    for (size_t cut = 0; cut <= n + 1; cut++) {
        hr_sse s;
        hr_sse_init(&s, 1024);
        collect c = {.stop_after = -1};
        hr_err err;
        if (cut <= n) {
            assert_int_equal(hr_sse_feed(&s, k_stream, cut, on_ev, &c, &err), HR_OK);
            assert_int_equal(hr_sse_feed(&s, k_stream + cut, n - cut, on_ev, &c, &err), HR_OK);
        } else {
            for (size_t i = 0; i < n; i++)
                assert_int_equal(hr_sse_feed(&s, k_stream + i, 1, on_ev, &c, &err), HR_OK);
        }
        if (strcmp(c.got, k_want))
            fail_msg("cut %zu: got '%s'", cut, c.got);
        hr_sse_free(&s);
    }
}

static void test_limits(void **state)
{
    (void)state;
    hr_sse s;
    hr_err err;
    collect c = {.stop_after = -1};
    /* an event of exactly the bound passes, one byte more does not */
    char ev[64 + 16];
    hr_sse_init(&s, 64);
    memset(ev, 'x', sizeof ev);
    memcpy(ev, "data: ", 6);
    memcpy(ev + 6 + 58, "\n\n", 2); /* 64 bytes of event before the blank line */
    assert_int_equal(hr_sse_feed(&s, ev, 66, on_ev, &c, &err), HR_OK);
    assert_int_equal(c.events, 1);
    hr_sse_free(&s);
    hr_sse_init(&s, 64);
    char big[200];
    memset(big, 'y', sizeof big);
    hr_status st = HR_OK;
    for (int i = 0; i < 10 && st == HR_OK; i++)
        st = hr_sse_feed(&s, big, sizeof big, on_ev, &c, &err);
    assert_int_equal(st, HR_ERR_LIMIT);
    hr_sse_free(&s);
    /* the callback can stop the feed */
    hr_sse_init(&s, 1024);
    collect c2 = {.stop_after = 2};
    assert_int_equal(hr_sse_feed(&s, k_stream, sizeof k_stream - 1, on_ev, &c2, &err), HR_OK);
    assert_string_equal(c2.got, "one|two|");
    hr_sse_free(&s);
}

static void test_upstream_stream(void **state)
{
    (void)state;
    const char body[] =
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"
        ": keep-alive\n\n"
        "data: {\"id\":\"c2\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"zzz\"}},"
        "{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\r\n\r\n"
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,"
        "\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n"
        "data: [DONE]\n\n";
    size_t cuts[] = {1, 40, 41, 150, 151, 152, 260};
    for (int drop = 0; drop < 2; drop++) {
        hr_up_parsed r;
        hr_err err;
        assert_int_equal(hr_up_parse_stream(body, sizeof body - 1, cuts, 7, drop, &r, &err), HR_OK);
        assert_false(r.fatal);
        assert_string_equal(r.text, "Hello");
        assert_string_equal(r.st.id, "c1");
        assert_string_equal(r.st.finish_reason, "stop");
        assert_true(r.st.have_usage);
        assert_int_equal(r.st.prompt_tokens, 5);
        assert_int_equal(r.st.completion_tokens, 2);
        assert_int_equal(r.st.cached_tokens, 3);
        /* forwarded: every event but the comment, re-framed; the usage chunk only without drop */
        assert_non_null(strstr(r.out, "data: {\"id\":\"c1\""));
        assert_int_equal(strstr(r.out, "\"usage\"") != NULL, !drop);
        assert_non_null(strstr(r.out, "data: [DONE]\n\n"));
        assert_null(strstr(r.out, "keep-alive"));
        hr_up_parsed_free(&r);
    }
    /* garbage and error events */
    hr_up_parsed r;
    hr_err err;
    const char bad[] = "data: {not json\n\n";
    assert_int_equal(hr_up_parse_stream(bad, sizeof bad - 1, NULL, 0, false, &r, &err), HR_OK);
    assert_true(r.fatal);
    assert_non_null(strstr(r.fatal_msg, "not a JSON object"));
    hr_up_parsed_free(&r);
    const char ee[] = "data: {\"error\":{\"message\":\"overloaded\"}}\n\n";
    assert_int_equal(hr_up_parse_stream(ee, sizeof ee - 1, NULL, 0, false, &r, &err), HR_OK);
    assert_true(r.st.error_event);
    assert_non_null(strstr(r.st.error, "overloaded"));
    hr_up_parsed_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_upstream_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
