/* rendezvous: the ranks of a job on several hosts meet over TCP. Rank 0 listens
 * on MASTER_PORT; every other rank connects to MASTER_ADDR:MASTER_PORT (retrying
 * while rank 0 is not up yet) and says who it is and what it computed (the
 * agreement: the stage key and input hashes, one "name value" per line). Rank 0
 * waits for all, refuses the job when a rank's agreement differs from its own
 * (naming the rank's node, host and the lines that differ) and answers every
 * rank, after which the connections carry the host collectives (comm_host.h).
 * A rank missing after the timeout fails the job on every side that waited,
 * naming the host and port, instead of a collective hanging for good. */
#ifndef FTPIPE_RENDEZVOUS_H
#define FTPIPE_RENDEZVOUS_H

#include <stddef.h>

#include "ftpipe/backend/comm.h"

typedef struct {
    const char *master_addr;   /* a host name or address */
    int master_port;
    int rank;                  /* this rank, of all the job's */
    int size;                  /* the job's ranks */
    int node_rank;             /* for messages: which node this is */
    int timeout_ms;            /* for the whole rendezvous */
    const char *agreement;     /* what every rank must have computed alike; "" for nothing */
} ft_rendezvous_options;

/* The job's communicator over TCP; -1 with ft_error (what, where, what to do). */
int ft_rendezvous_tcp(const ft_rendezvous_options *options, ft_comm **out);

/* The network interface (name, and this host's address on it) through which
 * this host reaches `host`: the one NCCL should use between the nodes. -1 with
 * ft_error when the host does not resolve or no route leads there. */
int ft_route_interface(const char *host, char *name, size_t name_size, char *address, size_t address_size);

#endif
