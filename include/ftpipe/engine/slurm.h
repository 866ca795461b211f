/* slurm: the `executor = slurm` of a stage. The stage's process on the login
 * node writes what the stage is (kind, target, key, inputs, work folder, the
 * parameters as written) to <work>/slurm-stage, then runs
 *     srun --nodes=N --ntasks-per-node=1 [--gpus-per-node=G] [--time] [--partition]
 *          ftpipe stage-exec <work>/slurm-stage
 * and waits. On each node, `ftpipe stage-exec` runs the kind in the same work
 * folder (a filesystem the cluster shares, as Snakemake expects) with the
 * stage's report lines on its standard output, which srun relays to the engine,
 * so progress, metrics and the log arrive as from a local stage. Only node 0
 * writes the output; the engine then publishes it as any other. A job that
 * fails or is cancelled fails the stage, naming the job id and srun's last
 * lines. */
#ifndef FTPIPE_SLURM_H
#define FTPIPE_SLURM_H

#include <stdbool.h>

#include "ftpipe/engine/stage.h"

/* True in the stage's process when it is to be submitted (executor = slurm,
 * and this is not already the job's step). */
bool ft_slurm_submits(ft_stage *stage);

/* Submits the stage and waits; 0 when the job succeeded, else -1 with the error. */
int ft_slurm_submit(ft_stage *stage);

/* True unless this process is a Slurm step of a node other than node 0, which
 * computes with the others but writes neither checkpoints nor the output. */
bool ft_slurm_step_writes_output(void);

/* The compute node's side: runs the stage described at path; the exit status
 * (0 success, 1 failure, 2 cancelled, as a stage's process returns). */
int ft_slurm_stage_exec(const char *path, const ft_stage_kind *const *kinds);

#endif
