/* clock.c - hr_now_s, hr_mono_ms, hr_wall_ms. */
#include <time.h>

#include "base/clock.h"

double hr_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t ms_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t hr_mono_ms(void) { return ms_of(CLOCK_MONOTONIC); }

int64_t hr_wall_ms(void) { return ms_of(CLOCK_REALTIME); }
