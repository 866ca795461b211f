/* host_memory: what this machine and this process hold in memory, from /proc,
 * for the checks before a run, the guards during one and the estimate's test. */
#ifndef FTPIPE_HOST_MEMORY_H
#define FTPIPE_HOST_MEMORY_H

#include <stdint.h>

/* Memory a new allocation can take without swapping (MemAvailable). */
uint64_t ft_host_available_bytes(void);
/* This process's resident size now (VmRSS) and its peak so far (VmHWM); 0 when unknown. */
uint64_t ft_host_resident_bytes(void);
uint64_t ft_host_peak_resident_bytes(void);

#endif
