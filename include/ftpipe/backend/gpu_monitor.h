/* gpu_monitor: a GPU's memory in use, utilisation and temperature, through NVML
 * (libnvidia-ml.so.1, the driver's), opened at run time as cuBLASLt is: a program
 * that never asks loads nothing, and on a machine without a GPU the monitor is
 * simply absent. For the train stage's guards. */
#ifndef FTPIPE_GPU_MONITOR_H
#define FTPIPE_GPU_MONITOR_H

#include <stdint.h>

typedef struct ft_gpu_monitor ft_gpu_monitor;

typedef struct {
    uint64_t memory_used_bytes;
    uint64_t memory_total_bytes;
    unsigned utilization_percent;   /* of the last sample period, as nvidia-smi shows it */
    unsigned temperature_c;
} ft_gpu_sample;

/* The monitor of the GPU that CUDA device `cuda_device` is (CUDA_VISIBLE_DEVICES
 * taken into account); NULL with ft_error when NVML or the GPU is absent. */
ft_gpu_monitor *ft_gpu_monitor_open(int cuda_device);
void ft_gpu_monitor_close(ft_gpu_monitor *monitor);
/* 0, or -1 with ft_error. */
int ft_gpu_monitor_sample(ft_gpu_monitor *monitor, ft_gpu_sample *out);

#endif
