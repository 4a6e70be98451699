/* utf8.c - UTF-8 validation and repair (utf8.h).
 *
 * The tokenizer repairs invalid input rather than rejecting it: every
 * maximal invalid subpart is replaced by U+FFFD before encoding (see
 * docs/TOKENIZER.md); request parsing rejects it. */
#include "base/utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t hr_utf8_seq(const unsigned char *s, size_t n, bool *incomplete, size_t *bad)
{
    *incomplete = false;
    *bad = 0;
    if (n == 0)
        return 0;
    unsigned b = s[0];
    if (b < 0x80)
        return 1;
    size_t need;
    unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (b >= 0xC2 && b <= 0xDF)
        need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *incomplete = true;
            *bad = i;
            return 0;
        }
        unsigned c = s[i];
        unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (c < l || c > h) {
            *bad = i;
            return 0;
        }
    }
    return need;
}

size_t hr_utf8_len(const unsigned char *s, size_t n)
{
    bool inc;
    size_t bad;
    return hr_utf8_seq(s, n, &inc, &bad);
}

size_t hr_utf8_valid_prefix(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        /* ASCII fast path, eight bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        bool inc;
        size_t bad;
        size_t k = hr_utf8_seq(s + i, n - i, &inc, &bad);
        if (k == 0)
            return i;
        i += k;
    }
    return n;
}

bool hr_utf8_valid(const char *s, size_t n)
{
    return hr_utf8_valid_prefix(s, n) == n;
}

char *hr_utf8_sanitize(const char *str, size_t n, size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)str;
    /* each invalid byte becomes at most 3 bytes */
    if (n > (SIZE_MAX - 1) / 3)
        return NULL;
    char *o = malloc(n * 3 + 1);
    if (!o)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        bool inc;
        size_t bad;
        size_t k = hr_utf8_seq(s + i, n - i, &inc, &bad);
        if (k) {
            memcpy(o + j, s + i, k);
            j += k;
            i += k;
        } else {
            o[j++] = (char)0xEF;
            o[j++] = (char)0xBF;
            o[j++] = (char)0xBD;
            i += bad ? bad : 1;
        }
    }
    o[j] = 0;
    *out_len = j;
    return o;
}
