/* host_adamw: torch.optim.AdamW's update of float tensors in host memory, the
 * one definition of its arithmetic on the host: the cpu backend's adamw op and
 * the offloaded optimizer (DeepSpeed's offload_optimizer = cpu) both run it, and
 * the cuda backend's kernel rounds operation for operation alike, so an update
 * gives the same bits wherever it runs. The loop is written for the compiler to
 * vectorise (restrict pointers, no branches). */
#ifndef FTPIPE_HOST_ADAMW_H
#define FTPIPE_HOST_ADAMW_H

#include <stddef.h>

#include "ftpipe/backend/backend.h"

/* One tensor's update: param, grad and both moments of n elements, in host memory. */
void ft_host_adamw_update(float *restrict param, const float *restrict grad, float *restrict exp_avg,
                          float *restrict exp_avg_sq, size_t n, const ft_adamw_hyper *hyper);

#endif
