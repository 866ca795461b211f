/* host_norm: a gradient norm's sum of squares and clipping's scale over float
 * arrays in host memory, for gradients kept there (offload_optimizer's
 * sharded gradients, grad_shards.h). Each array is cut into chunks of 64 Ki
 * elements, each chunk summed in double, the chunks' sums and then the arrays'
 * added in order, so the result is the same on any number of threads; the cpu
 * backend's sum_squares and scale are these, one thread. */
#ifndef FTPIPE_HOST_NORM_H
#define FTPIPE_HOST_NORM_H

#include <stddef.h>

#include "ftpipe/base/thread_pool.h"

/* The sum of the squares of every element of n arrays (array i has counts[i]
 * elements), on the pool's threads (NULL: the calling thread). */
double ft_host_sum_squares(ft_thread_pool *pool, const float *const *xs, const size_t *counts, size_t n);
/* x[i] *= factor for n elements, on the pool's threads (NULL: the calling thread). */
void ft_host_scale(ft_thread_pool *pool, float *x, size_t n, float factor);

#endif
