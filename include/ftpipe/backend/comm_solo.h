/* comm_solo: the collectives (comm.h) of a single rank, for the paths that run
 * alike on one rank and on many: ZeRO-3 with offload_param on one GPU keeps the
 * weights in host memory and gathers a unit at a time as any rank does. A sum
 * over one rank is its own value, a gather or a reduce-scatter a copy (the
 * backend's, so it is ordered with the ops). */
#ifndef FTPIPE_COMM_SOLO_H
#define FTPIPE_COMM_SOLO_H

#include "ftpipe/backend/backend.h"
#include "ftpipe/backend/comm.h"

/* A communicator of size 1 whose buffers are in `backend`'s memory, or host memory. */
ft_comm *ft_comm_solo_create(ft_backend *backend);

#endif
