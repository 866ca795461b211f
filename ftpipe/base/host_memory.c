/* host_memory: /proc/meminfo and /proc/self/status, read one line at a time. */
#include "ftpipe/base/host_memory.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The "NAME: N kB" line of a /proc file, in bytes; 0 when absent. */
static uint64_t proc_kib_field(const char *path, const char *name)
{
    FILE *file = fopen(path, "r");
    if (!file)
        return 0;
    char line[256];
    size_t length = strlen(name);
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, file))
        if (strncmp(line, name, length) == 0 && line[length] == ':' && sscanf(line + length + 1, "%llu", &kib) == 1)
            break;
    fclose(file);
    return (uint64_t)kib * 1024;
}

uint64_t ft_host_available_bytes(void)
{
    uint64_t bytes = proc_kib_field("/proc/meminfo", "MemAvailable");
    if (bytes)
        return bytes;
    return (uint64_t)sysconf(_SC_AVPHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
}

uint64_t ft_host_resident_bytes(void) { return proc_kib_field("/proc/self/status", "VmRSS"); }

uint64_t ft_host_peak_resident_bytes(void) { return proc_kib_field("/proc/self/status", "VmHWM"); }
