/* train_guard: watches a training run's machine between steps — free disk where
 * its checkpoints go, available host memory — and asks the trainer to checkpoint
 * and stop cleanly before the disk fills up, rather than dying in a save.
 *
 * Every guard_interval it samples; the samples go to the stage's metrics
 * (guard_disk_free_bytes, guard_host_available_bytes, and on a GPU through NVML
 * guard_gpu_memory_used_bytes, guard_gpu_utilization_percent,
 * guard_gpu_temperature_c) in state.db. From the last
 * two samples it predicts the free disk when the next checkpoint is due; when that
 * would not hold the checkpoint, the result and guard_min_free_disk, it stops. */
#ifndef FTPIPE_TRAIN_GUARD_H
#define FTPIPE_TRAIN_GUARD_H

#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/backend/gpu_monitor.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/model/trainer.h"

typedef struct {
    ft_stage *stage;
    const char *checkpoint_dir;
    uint64_t output_bytes;          /* what the stage writes when training ends */
    double interval_s;              /* between samples (0: every step) */
    uint64_t min_free_disk_bytes;
    uint64_t min_free_memory_bytes;
    unsigned max_gpu_temperature_c;  /* 0: none */
    ft_gpu_monitor *gpu;            /* NULL: no GPU, or NVML absent */
    int64_t first_step;             /* the step this process started after; -1 until the first report */
    /* the last sample */
    bool sampled;
    double sample_s;
    uint64_t disk_free_bytes;
    double disk_fill_bytes_per_s;   /* how fast others fill the disk (0 while it frees) */
} ft_train_guard;

/* Reads the thresholds from the stage's parameters (guard_interval,
 * guard_min_free_disk, guard_min_free_memory, guard_max_gpu_temperature); on_gpu
 * opens the GPU monitor of CUDA device 0 (logging when NVML is absent). */
void ft_train_guard_init(ft_train_guard *guard, ft_stage *stage, const char *checkpoint_dir, uint64_t output_bytes,
                         bool on_gpu);
void ft_train_guard_free(ft_train_guard *guard);

/* For ft_train_callbacks.should_stop: true, with ft_error saying why and what to
 * do, when the run must checkpoint and stop now. */
bool ft_train_guard_should_stop(ft_train_guard *guard, const ft_train_report *report);

#endif
