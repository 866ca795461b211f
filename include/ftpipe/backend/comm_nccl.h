/* comm_nccl: the collectives (comm.h) over NCCL, between ranks that each run
 * the cuda backend on their own GPU. NCCL is opened at run time (libnccl.so.2,
 * as cuBLASLt is), so a program that never makes this communicator needs no
 * NCCL. The NCCL id travels from rank 0 over a bootstrap communicator (the host
 * one, which the rendezvous or the local fork already connected).
 *
 * Collectives run on the backend's stream, so they are ordered with its ops
 * (on its side stream for a thread that chose the side queue: backend.h);
 * a buffer in host memory (a loss, a flag) goes through a device copy and is
 * ready when the call returns. abort() aborts the NCCL communicator, which
 * ends every pending collective on this rank. */
#ifndef FTPIPE_COMM_NCCL_H
#define FTPIPE_COMM_NCCL_H

#include "ftpipe/backend/backend.h"
#include "ftpipe/backend/comm.h"

/* NULL with ft_error when this build lacks CUDA, NCCL cannot be loaded, or the
 * ranks cannot form the communicator. The bootstrap must outlive the result. */
ft_comm *ft_comm_nccl_create(ft_backend *cuda_backend, ft_comm *bootstrap);

#endif
