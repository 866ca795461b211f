/* stage_backend: the compute backend a stage's parameters ask for. */
#include "ftpipe/stages/stage_backend.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/backend/gpu_monitor.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/units.h"
#include "ftpipe/engine/build.h"

ft_backend *ft_stage_backend(ft_stage *stage, const char *doing) { return ft_stage_backend_for_rank(stage, doing, 0, 1); }

ft_backend *ft_stage_backend_for_rank(ft_stage *stage, const char *doing, int rank, int ranks)
{
    const char *name = ft_stage_param_string(stage, "backend");
    bool cuda = strcmp(name, "cuda") == 0 || (strcmp(name, "auto") == 0 && ft_cuda_device_count() > 0);
    int threads = (int)ft_stage_param_int(stage, "threads");
    if (threads == 0 && ranks > 1) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > ranks ? (int)(cores / ranks) : 1;
    }
    ft_backend *backend = cuda ? ft_backend_cuda_create(rank) : ft_backend_cpu_create(threads);
    if (!backend)
        ft_error_context("backend = %s", name);
    else if (cuda && ft_stage_param_int(stage, "gpus") == 0)
        ft_stage_log(stage, "%s on a GPU with gpus = 0: set gpus = 1 so that the scheduler reserves it", doing);
    return backend;
}

uint64_t ft_stage_gpu_free_bytes(void)
{
    static bool asked;
    static uint64_t budget;
    if (asked)
        return budget;
    asked = true;
    const char *override = getenv("FTPIPE_GPU_MEMORY");
    int64_t bytes = 0;
    if (override)
        return budget = ft_parse_size_bytes(override, &bytes) == 0 && bytes > 0 ? (uint64_t)bytes : 0;
    /* the scheduler may give a stage any of its GPUs: the least free of them */
    int gpus = 0;
    uint64_t host_bytes = 0;
    ft_build_detect_resources(&gpus, &host_bytes);
    for (int device = 0; device < gpus; device++) {
        ft_gpu_monitor *monitor = ft_gpu_monitor_open(device);
        ft_gpu_sample sample;
        bool sampled = monitor && ft_gpu_monitor_sample(monitor, &sample) == 0;
        ft_gpu_monitor_close(monitor);
        if (!sampled)
            break;
        uint64_t free_bytes =
            sample.memory_total_bytes > sample.memory_used_bytes ? sample.memory_total_bytes - sample.memory_used_bytes : 0;
        budget = device == 0 || free_bytes < budget ? free_bytes : budget;
    }
    ft_error_clear(); /* a GPU NVML could not read leaves the figure of those before it (none: unknown) */
    return budget;
}
