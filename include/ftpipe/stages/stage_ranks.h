/* stage_ranks: the ranks of a data-parallel stage (train, evaluate) on this
 * host: how many the parameters ask for, starting them as processes forked
 * from the stage's, and ending them together.
 *
 * Rank 0 is the stage's own process: it alone reports to the engine, writes
 * checkpoints and the output. Rank k >= 1 writes its output to
 * <work>/rank-K.log, whose first line names its pid and host. When any rank
 * fails, every rank stops within seconds (the communicator is aborted) and the
 * stage fails naming the rank that was lost, its host, how it ended and its
 * log's last lines. */
#ifndef FTPIPE_STAGE_RANKS_H
#define FTPIPE_STAGE_RANKS_H

#include <stdbool.h>
#include <sys/types.h>

#include "ftpipe/backend/comm.h"
#include "ftpipe/engine/stage.h"

/* nproc_per_node when set; else gpus when the stage computes on cuda; else 1. */
int ft_stage_rank_count(ft_stage *stage);

/* Whether the stage's backend is cuda, decided from its parameters alone
 * (backend = cuda, or auto with GPUs reserved), so that no process touches the
 * GPU before the ranks are forked. */
bool ft_stage_wants_cuda(ft_stage *stage);

typedef struct {
    int rank;
    int size;
    ft_comm *comm;        /* NULL with one rank */
    pid_t *children;      /* rank 0: [size], children[k] is rank k's pid */
    char **log_paths;     /* [size]: rank k's log (rank 0: NULL, it logs to the stage) */
} ft_stage_ranks;

/* Starts ranks 1..size-1; returns this process's rank (0 in the stage's), or
 * -1 with the error set. With size 1 it starts nothing. */
int ft_stage_ranks_start(ft_stage *stage, int size, ft_stage_ranks *out);

/* Ends this rank with its work's status (0 or -1). Rank 0 aborts the others
 * when it failed, waits for them (killing those still running a few seconds
 * after a failure), and returns the stage's status: -1 with the message naming
 * the lost rank when one failed. Every other rank writes its error to its log
 * and exits: it never returns. */
int ft_stage_ranks_finish(ft_stage *stage, ft_stage_ranks *ranks, int status);

#endif
