/* gpu_monitor: the few NVML calls the guards need, declared here with NVML's
 * documented signatures (its header is not needed to build). */
#include "ftpipe/backend/gpu_monitor.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"

typedef int nvml_return;   /* nvmlReturn_t: 0 is NVML_SUCCESS */
typedef void *nvml_device; /* nvmlDevice_t */
typedef struct {
    unsigned long long total, free, used;
} nvml_memory;
typedef struct {
    unsigned int gpu, memory;
} nvml_utilization;
enum { NVML_TEMPERATURE_GPU = 0 };

struct ft_gpu_monitor {
    void *library;
    nvml_device device;
    nvml_return (*shutdown)(void);
    nvml_return (*memory_info)(nvml_device, nvml_memory *);
    nvml_return (*utilization)(nvml_device, nvml_utilization *);
    nvml_return (*temperature)(nvml_device, int, unsigned int *);
    const char *(*error_string)(nvml_return);
};

/* NVML counts every GPU of the machine; CUDA only the visible ones, in their order. */
static unsigned nvml_index(int cuda_device)
{
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (!visible || !*visible)
        return (unsigned)cuda_device;
    const char *entry = visible;
    for (int i = 0; i < cuda_device && entry; i++) {
        entry = strchr(entry, ',');
        entry = entry ? entry + 1 : NULL;
    }
    char *end = NULL;
    long index = entry ? strtol(entry, &end, 10) : -1;
    return index >= 0 && end != entry ? (unsigned)index : (unsigned)cuda_device;
}

ft_gpu_monitor *ft_gpu_monitor_open(int cuda_device)
{
    void *library = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        ft_error("no GPU monitor: cannot load libnvidia-ml.so.1 (the NVIDIA driver's; absent without a GPU)");
        return NULL;
    }
    ft_gpu_monitor *monitor = ft_xcalloc(1, sizeof *monitor);
    monitor->library = library;
    nvml_return (*init)(void) = (nvml_return(*)(void))dlsym(library, "nvmlInit_v2");
    nvml_return (*by_index)(unsigned int, nvml_device *) =
        (nvml_return(*)(unsigned int, nvml_device *))dlsym(library, "nvmlDeviceGetHandleByIndex_v2");
    monitor->shutdown = (nvml_return(*)(void))dlsym(library, "nvmlShutdown");
    monitor->memory_info = (nvml_return(*)(nvml_device, nvml_memory *))dlsym(library, "nvmlDeviceGetMemoryInfo");
    monitor->utilization =
        (nvml_return(*)(nvml_device, nvml_utilization *))dlsym(library, "nvmlDeviceGetUtilizationRates");
    monitor->temperature =
        (nvml_return(*)(nvml_device, int, unsigned int *))dlsym(library, "nvmlDeviceGetTemperature");
    monitor->error_string = (const char *(*)(nvml_return))dlsym(library, "nvmlErrorString");
    if (!init || !by_index || !monitor->shutdown || !monitor->memory_info || !monitor->utilization ||
        !monitor->temperature || !monitor->error_string) {
        ft_error("no GPU monitor: libnvidia-ml.so.1 lacks the functions it needs (an old driver?)");
        dlclose(library);
        free(monitor);
        return NULL;
    }
    nvml_return status = init();
    if (status != 0) {
        ft_error("no GPU monitor: NVML did not start: %s", monitor->error_string(status));
        dlclose(library);
        free(monitor);
        return NULL;
    }
    unsigned index = nvml_index(cuda_device);
    status = by_index(index, &monitor->device);
    if (status != 0) {
        ft_error("no GPU monitor: NVML has no GPU %u: %s", index, monitor->error_string(status));
        ft_gpu_monitor_close(monitor);
        return NULL;
    }
    return monitor;
}

void ft_gpu_monitor_close(ft_gpu_monitor *monitor)
{
    if (!monitor)
        return;
    monitor->shutdown();
    dlclose(monitor->library);
    free(monitor);
}

int ft_gpu_monitor_sample(ft_gpu_monitor *monitor, ft_gpu_sample *out)
{
    nvml_memory memory;
    nvml_utilization utilization;
    unsigned int temperature;
    nvml_return status = monitor->memory_info(monitor->device, &memory);
    if (status == 0)
        status = monitor->utilization(monitor->device, &utilization);
    if (status == 0)
        status = monitor->temperature(monitor->device, NVML_TEMPERATURE_GPU, &temperature);
    if (status != 0)
        return ft_error("sampling the GPU through NVML: %s", monitor->error_string(status));
    *out = (ft_gpu_sample){memory.used, memory.total, utilization.gpu, temperature};
    return 0;
}
