/* stage_ranks: the ranks of a data-parallel stage (train, evaluate): how many
 * the parameters and the job's variables ask for, starting them as processes
 * forked from the stage's, joining the other nodes' ranks, and ending them
 * together.
 *
 * On each node the stage's own process is the node's first rank: it alone
 * reports to the engine, writes checkpoints and publishes the output in that
 * node's workspace (all ranks hold the same weights). The job's rank 0 (node
 * 0's first) leads: it decides when to stop and, with several nodes, listens
 * at MASTER_ADDR:MASTER_PORT where every rank joins and where a node whose
 * stage key or inputs differ is refused. Rank K >= 1 of a node writes its
 * output to <work>/rank-K.log (K the job's rank), whose first line names its
 * pid and host. When a rank fails, every rank stops within seconds (the
 * communicator is aborted) and the stage fails naming the rank that was lost,
 * its host, how it ended and its log's last lines. */
#ifndef FTPIPE_STAGE_RANKS_H
#define FTPIPE_STAGE_RANKS_H

#include <stdbool.h>
#include <sys/types.h>

#include "ftpipe/backend/comm.h"
#include "ftpipe/engine/stage.h"

/* Whether the stage's backend is cuda, decided from its parameters alone
 * (backend = cuda, or auto with GPUs reserved), so that no process touches the
 * GPU before the ranks are forked. */
bool ft_stage_wants_cuda(ft_stage *stage);

/* Ranks on this node: nproc_per_node when set, else NPROC_PER_NODE, else gpus
 * when the stage computes on cuda, else 1. */
int ft_stage_ranks_per_node(ft_stage *stage);

/* The job's ranks: ranks per node x the nodes of the job's variables
 * (launch.h), or of `nodes` when the stage is submitted to Slurm; -1 with the
 * error set when those are malformed. */
int ft_stage_world_size(ft_stage *stage);

typedef struct {
    int rank;             /* of the job */
    int size;             /* the job's ranks */
    int local_rank;       /* on this node; 0: the stage's own process */
    int local_size;
    int node_rank;
    bool writes_output;   /* this process writes checkpoints and the output: each node's first rank, but
                             under executor = slurm (one shared workspace) node 0's alone */
    ft_comm *comm;        /* NULL with one rank */
    pid_t *children;      /* local rank 0: [local_size], children[k] is local rank k's pid */
    char **log_paths;     /* [local_size]: local rank k's log (k = 0: NULL, it logs to the stage) */
} ft_stage_ranks;

/* Starts this node's other ranks and connects the job's; returns with
 * out->local_rank telling each process which it is, or -1 with the error set.
 * With one rank it starts nothing. */
int ft_stage_ranks_start(ft_stage *stage, ft_stage_ranks *out);

/* Ends this rank with its work's status (0 or -1). Local rank 0 aborts the
 * others when it failed, waits for them (killing those still running a few
 * seconds after a failure), and returns the stage's status: -1 with the message
 * naming the lost rank when one failed. Every other rank writes its error to
 * its log and exits: it never returns. */
int ft_stage_ranks_finish(ft_stage *stage, ft_stage_ranks *ranks, int status);

#endif
