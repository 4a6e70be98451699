/* clock.c - hr_now_s. */
#include <time.h>

#include "base/clock.h"

double hr_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
