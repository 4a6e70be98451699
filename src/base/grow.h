/* grow.h - growing an array by doubling, with overflow checks. */
#ifndef HR_BASE_GROW_H
#define HR_BASE_GROW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Ensures *p holds at least `need` elements of `elem` bytes, doubling the
 * capacity *cap (starting at 16). false (nothing changed) on overflow or
 * allocation failure. */
static inline bool hr_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return false;
        c *= 2;
    }
    if (elem && c > SIZE_MAX / elem)
        return false;
    void *q = realloc(*p, c * elem);
    if (!q)
        return false;
    *p = q;
    *cap = c;
    return true;
}

#endif
