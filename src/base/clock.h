/* clock.h - the one monotonic clock used for timings and deadlines. */
#ifndef HR_BASE_CLOCK_H
#define HR_BASE_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (an arbitrary origin; only differences mean
 * anything). */
double hr_now_s(void);

#endif
