/* clock: the clocks ftpipe reads: one for durations, one for records, and the
 * process's CPU time (for throughputs a busy shared machine does not skew). */
#ifndef FTPIPE_CLOCK_H
#define FTPIPE_CLOCK_H

#include <stdint.h>

/* Monotonic clock in nanoseconds, for durations (never jumps with the wall clock). */
uint64_t ft_now_ns(void);
/* Wall clock in milliseconds since the epoch, for records people read. */
int64_t ft_wall_ms(void);
/* CPU time this process has used, every thread's, in nanoseconds. */
uint64_t ft_process_cpu_ns(void);
/* Milliseconds from `start_ns` (an ft_now_ns reading) to now. */
double ft_elapsed_ms(uint64_t start_ns);

#endif
