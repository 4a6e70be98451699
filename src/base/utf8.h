/* utf8.h - the one UTF-8 decoder: validation, sequence lengths and repair
 * (the tokenizer, request parsing and JSON output use it; the template
 * engine decodes code points with utf8proc). Follows Unicode's "maximal
 * subpart" practice, as the W3C/WHATWG decoders do. */
#ifndef HR_BASE_UTF8_H
#define HR_BASE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the valid UTF-8 sequence at s (1..4), 0 if the bytes there do
 * not start a valid sequence; *incomplete set when the bytes are a valid
 * prefix cut off by the end. *bad gets the length of the maximal invalid
 * subpart when 0 is returned. */
size_t hr_utf8_seq(const unsigned char *s, size_t n, bool *incomplete, size_t *bad);
/* The same without the details: 1..4, or 0 when invalid or cut off. */
size_t hr_utf8_len(const unsigned char *s, size_t n);
/* Offset of the first byte that is not part of a valid sequence, or n. */
size_t hr_utf8_valid_prefix(const char *s, size_t n);
/* true if all n bytes are valid UTF-8. */
bool hr_utf8_valid(const char *s, size_t n);
/* Copy of s with each maximal invalid subpart replaced by U+FFFD; malloc'd,
 * length in *out_len. NULL on allocation failure. */
char *hr_utf8_sanitize(const char *s, size_t n, size_t *out_len);

#endif
