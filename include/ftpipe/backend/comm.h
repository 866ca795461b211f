/* comm: the collectives that ranks of one training job use, as one table of
 * functions, so that the trainer runs unchanged on one rank, on N host
 * processes (comm_host: the cpu backend) or on N GPUs (NCCL).
 *
 * Conventions every implementation keeps:
 *   - Buffers are in the memory of the backend the ranks compute with (host
 *     memory for the cpu backend, device memory for cuda).
 *   - Every rank calls the same collectives in the same order with the same
 *     counts; a collective returns when this rank's part is done.
 *   - Sums are deterministic: the same inputs give the same bits on every run
 *     and every rank (the host implementation adds in rank order).
 *   - A failure (a peer that died or closed its connection) returns -1 with
 *     ft_error naming the peer rank and its host; the communicator is then
 *     unusable and abort() is the only call left. */
#ifndef FTPIPE_COMM_H
#define FTPIPE_COMM_H

#include <stddef.h>

typedef enum { FT_COMM_F32, FT_COMM_F64 } ft_comm_dtype;

typedef struct ft_comm ft_comm;
struct ft_comm {
    const char *name;   /* "host", "nccl" */
    int rank;
    int size;
    int lost_rank;      /* after a failure: the peer that was lost; -1: none */
    void *context;
    /* data[i] = the sum over ranks of data[i], on every rank. */
    int (*all_reduce_sum)(ft_comm *self, void *data, size_t count, ft_comm_dtype dtype);
    /* data = root's data, on every rank. */
    int (*broadcast)(ft_comm *self, void *data, size_t bytes, int root);
    /* out = every rank's `in` (bytes each), in rank order. */
    int (*all_gather)(ft_comm *self, const void *in, void *out, size_t bytes);
    /* out = the sum over ranks of in[rank * count, (rank + 1) * count). */
    int (*reduce_scatter_sum)(ft_comm *self, const void *in, void *out, size_t count, ft_comm_dtype dtype);
    /* Stops every rank's pending and future collectives (closes the connections). */
    void (*abort)(ft_comm *self);
    void (*destroy)(ft_comm *self);
};

static inline void ft_comm_destroy(ft_comm *comm)
{
    if (comm)
        comm->destroy(comm);
}

#endif
