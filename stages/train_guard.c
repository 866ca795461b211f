/* train_guard: free disk and host memory between steps, and the prediction that
 * stops a run before its next checkpoint would not fit. */
#include "ftpipe/stages/train_guard.h"

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/host_memory.h"

void ft_train_guard_init(ft_train_guard *guard, ft_stage *stage, const char *checkpoint_dir, uint64_t output_bytes,
                         bool on_gpu)
{
    *guard = (ft_train_guard){
        .stage = stage,
        .checkpoint_dir = checkpoint_dir,
        .output_bytes = output_bytes,
        .interval_s = (double)ft_stage_param_duration_ms(stage, "guard_interval") / 1000.0,
        .min_free_disk_bytes = (uint64_t)ft_stage_param_size_bytes(stage, "guard_min_free_disk"),
        .min_free_memory_bytes = (uint64_t)ft_stage_param_size_bytes(stage, "guard_min_free_memory"),
        .max_gpu_temperature_c = (unsigned)ft_stage_param_int(stage, "guard_max_gpu_temperature"),
        .first_step = -1,
    };
    if (on_gpu && !(guard->gpu = ft_gpu_monitor_open(0)))
        ft_stage_log(stage, "guards: %s; watching disk and host memory only", ft_error_message());
}

void ft_train_guard_free(ft_train_guard *guard)
{
    ft_gpu_monitor_close(guard->gpu);
    guard->gpu = NULL;
}

/* GPU memory, utilisation and temperature to the metrics; true when too hot. */
static bool gpu_too_hot(ft_train_guard *guard, int64_t step)
{
    ft_gpu_sample sample;
    if (!guard->gpu || ft_gpu_monitor_sample(guard->gpu, &sample) < 0)
        return false;
    ft_stage_metric(guard->stage, step, "guard_gpu_memory_used_bytes", (double)sample.memory_used_bytes);
    ft_stage_metric(guard->stage, step, "guard_gpu_utilization_percent", (double)sample.utilization_percent);
    ft_stage_metric(guard->stage, step, "guard_gpu_temperature_c", (double)sample.temperature_c);
    if (guard->max_gpu_temperature_c == 0 || sample.temperature_c < guard->max_gpu_temperature_c)
        return false;
    ft_error("the GPU reached %u C, at or above guard_max_gpu_temperature = %u: let it cool and run again",
             sample.temperature_c, guard->max_gpu_temperature_c);
    return true;
}

bool ft_train_guard_should_stop(ft_train_guard *guard, const ft_train_report *report)
{
    double now = report->elapsed_s;
    if (guard->first_step < 0)
        guard->first_step = report->step - 1;
    if (guard->sampled && now - guard->sample_s < guard->interval_s)
        return false;
    uint64_t disk_free;
    if (ft_free_space_bytes(guard->checkpoint_dir, &disk_free) < 0)
        return false; /* no figure, no guard: the save's own check still stands */
    uint64_t host_available = ft_host_available_bytes();
    ft_stage_metric(guard->stage, report->step, "guard_disk_free_bytes", (double)disk_free);
    ft_stage_metric(guard->stage, report->step, "guard_host_available_bytes", (double)host_available);
    if (guard->sampled && now > guard->sample_s) {
        double rate = ((double)guard->disk_free_bytes - (double)disk_free) / (now - guard->sample_s);
        guard->disk_fill_bytes_per_s = rate > 0.0 ? rate : 0.0;
    }
    guard->sampled = true;
    guard->sample_s = now;
    guard->disk_free_bytes = disk_free;

    if (gpu_too_hot(guard, report->step))
        return true;
    if (guard->min_free_memory_bytes > 0 && host_available < guard->min_free_memory_bytes) {
        char have[32], want[32];
        ft_format_bytes(host_available, have, sizeof have);
        ft_format_bytes(guard->min_free_memory_bytes, want, sizeof want);
        ft_error("host memory available fell to %s, below guard_min_free_memory = %s", have, want);
        return true;
    }
    /* What must still fit: the next checkpoint, the result at the end, the margin. */
    double seconds_per_step = report->elapsed_s / (double)(report->step - guard->first_step);
    double until_next_s = seconds_per_step * (double)(report->next_checkpoint_step - report->step);
    double predicted = (double)disk_free - guard->disk_fill_bytes_per_s * until_next_s;
    double needed = (double)report->checkpoint_bytes + (double)guard->output_bytes + (double)guard->min_free_disk_bytes;
    if (predicted >= needed)
        return false;
    char free_text[32], needed_text[32], rate_text[32];
    ft_format_bytes(disk_free, free_text, sizeof free_text);
    ft_format_bytes((uint64_t)needed, needed_text, sizeof needed_text);
    ft_format_bytes((uint64_t)guard->disk_fill_bytes_per_s, rate_text, sizeof rate_text);
    ft_error("the disk holding %s will be full before the next checkpoint (step %lld): %s free, filling at %s/s, "
             "and the checkpoint, the result and guard_min_free_disk need %s. Free space there and run again",
             guard->checkpoint_dir, (long long)report->next_checkpoint_step, free_text, rate_text, needed_text);
    return true;
}
