/* comm_host: the collectives (comm.h) between processes over stream sockets, for
 * the cpu backend: Unix socket pairs between ranks forked on one host, TCP
 * connections between hosts. Rank 0 is the hub: it adds the others' buffers in
 * rank order and sends the sum back, so every rank gets the same bits as a sum
 * written out in rank order. Enough for the few ranks a CPU job has; a dead peer
 * is an end of stream, seen at the next collective. */
#ifndef FTPIPE_COMM_HOST_H
#define FTPIPE_COMM_HOST_H

#include <sys/types.h>

#include "ftpipe/backend/comm.h"

/* A communicator over connected sockets. Rank 0 passes size entries
 * (peer_fds[0] unused), every other rank one: its connection to rank 0.
 * peer_names (same indexing) say which process a peer is in messages
 * ("pid 123 on node-a"); both are copied, the sockets are owned from now on. */
ft_comm *ft_comm_host_create(int rank, int size, const int *peer_fds, const char *const *peer_names);

/* Forks size - 1 processes, each connected to this one by a socket pair.
 * Returns the rank in each process (0 here, where children[k] receives rank
 * k's pid for k >= 1) and its communicator in *out; -1 with ft_error. */
int ft_comm_host_fork(int size, ft_comm **out, pid_t *children);

#endif
