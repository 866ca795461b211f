/* run_stats: FTPIPE_STATS=1 makes a run say on standard error where its time and
 * reads went, by phase (tests/bench/noop.sh prints it). */
#ifndef FTPIPE_RUN_STATS_H
#define FTPIPE_RUN_STATS_H

#include <stdbool.h>

bool ft_run_stats_wanted(void);

/* Ends a stats line: " hashed N bytes of files, read N bytes, peak memory N KiB". */
void ft_run_stats_print_reads(void);

#endif
