/* build: runs the selected stages of a graph — the scheduler.
 *
 * Stages whose inputs are ready run in parallel up to `jobs`, never holding more
 * GPUs or host memory than the machine has. Each runs in a child process inside
 * .ftpipe/work/<key>/; only a finished output is stored in the cache and linked
 * into the workspace. On SIGINT/SIGTERM the running stages are stopped and keep
 * their work folders, so the next run resumes them. */
#ifndef FTPIPE_BUILD_H
#define FTPIPE_BUILD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/engine/graph.h"
#include "ftpipe/engine/plan.h"
#include "ftpipe/engine/progress.h"
#include "ftpipe/engine/remote_sync.h"
#include "ftpipe/engine/workspace.h"

typedef struct {
    int jobs;                     /* stages at once (>= 1) */
    bool keep_going;              /* -k: after a failure, go on with what does not depend on it */
    bool dry_run;                 /* -n: say what would run and why, run nothing */
    int gpus_total;
    uint64_t memory_total_bytes;
    ft_progress *progress;
    ft_remote_sync *remote;       /* NULL: no remote cache; else asked before a stage runs, and
                                     given each finished stage when writable */
    ft_plan *plans;               /* NULL, or the graph's plans made just before (by the estimate
                                     check; zeroed where none was made): the build takes them over,
                                     frees what they hold, and leaves the array to the caller */
} ft_build_options;

typedef struct {
    size_t run;
    size_t restored;
    size_t restored_from_remote;  /* counted in restored too */
    size_t up_to_date;
    size_t failed;
    size_t skipped;
    bool interrupted;
} ft_build_summary;

/* 0 when every selected stage is done; -1 otherwise (a failure's message was
 * shown as it happened; ft_error holds the last one). */
int ft_build(ft_workspace *workspace, ft_graph *graph, const ft_build_options *options, ft_build_summary *summary);

/* The GPUs and memory this machine offers: FTPIPE_GPUS / FTPIPE_MEMORY override
 * (for tests and shared machines), else CUDA_VISIBLE_DEVICES or /dev/nvidiaN,
 * and physical memory. */
void ft_build_detect_resources(int *gpus_total, uint64_t *memory_total_bytes);

/* The CUDA_VISIBLE_DEVICES of a stage given the slots in gpu_mask: slot g is the
 * g-th device the engine itself may use (its own CUDA_VISIBLE_DEVICES, indexes or
 * UUIDs), so a GPU the user left out is never handed out; without one, slot g
 * is device g. Caller frees. */
char *ft_build_visible_devices(const char *parent_list, uint64_t gpu_mask);

#endif
