/* clock: the two clocks ftpipe reads, one for durations and one for records. */
#ifndef FTPIPE_CLOCK_H
#define FTPIPE_CLOCK_H

#include <stdint.h>

/* Monotonic clock in nanoseconds, for durations (never jumps with the wall clock). */
uint64_t ft_now_ns(void);
/* Wall clock in milliseconds since the epoch, for records people read. */
int64_t ft_wall_ms(void);
/* Milliseconds from `start_ns` (an ft_now_ns reading) to now. */
double ft_elapsed_ms(uint64_t start_ns);

#endif
