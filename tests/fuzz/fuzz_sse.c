/* fuzz_sse.c - libFuzzer target for the upstream stream parser: the SSE
 * reader (upstream/sse.h) and the call's event handling on top of it
 * (usage, text, id, [DONE], error events; hr_up_parse_stream).
 *
 * Input: one flags byte (bit 0: drop the usage chunk; bits 1-3: how many
 * cut points follow, two bytes each), then the stream body. Any outcome but
 * a crash, a leak or a broken invariant is fine. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "upstream/sse.h"
#include "upstream/upstream_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool on_event(void *ud, const char *d, size_t len)
{
    size_t *total = ud;
    if (len > 4096 || d[len] != 0)
        abort(); /* over the bound, or not terminated */
    *total += len;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool drop = data[0] & 1;
    size_t ncuts = (data[0] >> 1) & 7, cuts[7];
    size_t pos = 1;
    for (size_t k = 0; k < ncuts; k++) {
        if (pos + 2 > size)
            return 0;
        cuts[k] = (size_t)data[pos] | (size_t)data[pos + 1] << 8;
        pos += 2;
    }
    const char *body = (const char *)data + pos;
    size_t n = size - pos;
    /* cut points relative to the body, ascending */
    for (size_t k = 1; k < ncuts; k++)
        if (cuts[k] < cuts[k - 1])
            cuts[k] = cuts[k - 1];

    hr_up_parsed r;
    hr_err err;
    if (hr_up_parse_stream(body, n, cuts, ncuts, drop, &r, &err) == HR_OK) {
        if (strlen(r.text) > HR_UP_MAX_TEXT || r.out[r.out_len] != 0)
            abort();
        hr_up_parsed_free(&r);
    }

    /* the bare reader with a small bound, in the same pieces */
    hr_sse s;
    hr_sse_init(&s, 4096);
    size_t total = 0, at = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts && cuts[k] >= at && cuts[k] <= n ? cuts[k] : n;
        if (hr_sse_feed(&s, body + at, end - at, on_event, &total, &err) != HR_OK)
            break;
        at = end;
    }
    if (total > n)
        abort(); /* data can only come from the input */
    hr_sse_free(&s);
    return 0;
}
