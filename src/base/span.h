/* span.h - a byte range of a text. */
#ifndef HR_BASE_SPAN_H
#define HR_BASE_SPAN_H

#include <stddef.h>

typedef struct {
    size_t off, len;
} hr_span;

#endif
