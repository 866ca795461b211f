/* run_stats: FTPIPE_STATS=1's report. */
#include "ftpipe/engine/run_stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ftpipe/base/hash.h"

bool ft_run_stats_wanted(void)
{
    const char *stats = getenv("FTPIPE_STATS");
    return stats && strcmp(stats, "1") == 0;
}

/* The bytes of files hashed (mapped, so /proc/self/io's rchar misses them) and
 * rchar, the bytes read() returned (the state database, the pipeline). */
void ft_run_stats_print_reads(void)
{
    unsigned long long read_chars = 0;
    FILE *io = fopen("/proc/self/io", "r");
    char line[128];
    while (io && fgets(line, sizeof line, io))
        sscanf(line, "rchar: %llu", &read_chars);
    if (io)
        fclose(io);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    fprintf(stderr, " hashed %llu bytes of files, read %llu bytes, peak memory %ld KiB\n",
            (unsigned long long)ft_hash_file_bytes_total(), read_chars, usage.ru_maxrss);
}
