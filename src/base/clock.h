/* clock.h - the clocks: monotonic for timings and deadlines, wall for timestamps. */
#ifndef HR_BASE_CLOCK_H
#define HR_BASE_CLOCK_H

/* Seconds on CLOCK_MONOTONIC (an arbitrary origin; only differences mean
 * anything). */
double hr_now_s(void);
/* Milliseconds on CLOCK_MONOTONIC. */
#include <stdint.h>
int64_t hr_mono_ms(void);
/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t hr_wall_ms(void);

#endif
