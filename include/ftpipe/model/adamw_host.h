/* adamw_host: AdamW's update in host memory on every core, for an optimizer
 * whose state is offloaded (DeepSpeed's offload_optimizer = cpu): a step is cut
 * into chunks that the one thread pool runs on every core, each the update of
 * host_adamw.h, so an offloaded update equals the in-place one bit for bit. */
#ifndef FTPIPE_ADAMW_HOST_H
#define FTPIPE_ADAMW_HOST_H

#include <stddef.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/base/thread_pool.h"

/* A span of host memory to update with its hyperparameters (weight decay differs per tensor). */
typedef struct {
    float *param;
    const float *grad;
    float *exp_avg, *exp_avg_sq;
    size_t count;
    ft_adamw_hyper hyper;
} ft_adamw_host_span;

/* Updates every span, cut into chunks of at most 64 Ki elements, on the pool's threads. */
void ft_adamw_host_run(ft_thread_pool *pool, const ft_adamw_host_span *spans, size_t n_spans);

#endif
