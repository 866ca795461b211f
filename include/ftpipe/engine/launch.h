/* launch: where this process sits in a job of several nodes, read from the
 * variables torchrun's users set (MASTER_ADDR, MASTER_PORT, NNODES, NODE_RANK,
 * NPROC_PER_NODE; or WORLD_SIZE and RANK, one rank per process) or that Slurm
 * sets (SLURM_NTASKS, SLURM_PROCID, SLURM_JOB_NODELIST: one ftpipe per node,
 * node 0 the first host of the list). The same pipeline runs on every node;
 * each starts its own ranks, and all of them meet at MASTER_ADDR:MASTER_PORT. */
#ifndef FTPIPE_LAUNCH_H
#define FTPIPE_LAUNCH_H

#include <stddef.h>

/* torchrun's default port. */
#define FT_LAUNCH_DEFAULT_PORT 29500

typedef struct {
    int nnodes;                /* 1: this machine alone */
    int node_rank;             /* 0 .. nnodes - 1 */
    int nproc_per_node;        /* from the environment; 0: not given */
    char master_addr[256];     /* where node 0's rank 0 listens ("" with one node) */
    int master_port;
    const char *source;        /* "torchrun", "slurm" or "" */
} ft_launch;

/* Reads the environment; -1 with ft_error naming the variable when a value
 * is malformed or out of range, or a job of several nodes lacks MASTER_ADDR. */
int ft_launch_from_env(ft_launch *out);

/* The first host of a Slurm host list ("node[07-09,12],gpu1" -> "node07"). */
int ft_launch_first_host(const char *node_list, char *out, size_t out_size);

#endif
