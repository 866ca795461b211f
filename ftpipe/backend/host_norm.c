/* host_norm: sums of squares and scaling in fixed chunks over a pool. */
#include "ftpipe/backend/host_norm.h"

#include <stdlib.h>

#include "ftpipe/base/mem.h"

#define CHUNK ((size_t)64 << 10)

typedef struct {
    const float *const *xs;
    const size_t *counts;
    size_t *first_chunk; /* array i's first chunk among all */
    double *sums;        /* each chunk's */
    size_t n;
} squares_job;

static void square_chunk(void *context, size_t item, size_t worker)
{
    (void)worker;
    squares_job *job = context;
    size_t low = 0, high = job->n; /* the array holding chunk `item` */
    while (high - low > 1) {
        size_t middle = (low + high) / 2;
        if (job->first_chunk[middle] <= item)
            low = middle;
        else
            high = middle;
    }
    size_t i = low;
    size_t begin = (item - job->first_chunk[i]) * CHUNK, end = begin + CHUNK;
    if (end > job->counts[i])
        end = job->counts[i];
    double sum = 0.0;
    for (size_t k = begin; k < end; k++)
        sum += (double)job->xs[i][k] * job->xs[i][k];
    job->sums[item] = sum;
}

double ft_host_sum_squares(ft_thread_pool *pool, const float *const *xs, const size_t *counts, size_t n)
{
    squares_job job = {xs, counts, ft_xcalloc(n + 1, sizeof(size_t)), NULL, n};
    for (size_t i = 0; i < n; i++) /* an empty array still has its (empty) chunk: every array owns one */
        job.first_chunk[i + 1] = job.first_chunk[i] + (counts[i] ? (counts[i] + CHUNK - 1) / CHUNK : 1);
    size_t chunks = job.first_chunk[n];
    job.sums = ft_xcalloc(chunks ? chunks : 1, sizeof(double));
    if (pool)
        ft_thread_pool_run(pool, chunks, square_chunk, &job, NULL);
    else
        for (size_t c = 0; c < chunks; c++)
            square_chunk(&job, c, 0);
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        double sum = 0.0;
        for (size_t c = job.first_chunk[i]; c < job.first_chunk[i + 1]; c++)
            sum += job.sums[c];
        total += sum;
    }
    free(job.first_chunk);
    free(job.sums);
    return total;
}

typedef struct {
    float *x;
    size_t n;
    float factor;
} scale_job;

static void scale_chunk(void *context, size_t item, size_t worker)
{
    (void)worker;
    scale_job *job = context;
    size_t begin = item * CHUNK, end = begin + CHUNK < job->n ? begin + CHUNK : job->n;
    for (size_t k = begin; k < end; k++)
        job->x[k] *= job->factor;
}

void ft_host_scale(ft_thread_pool *pool, float *x, size_t n, float factor)
{
    scale_job job = {x, n, factor};
    size_t chunks = (n + CHUNK - 1) / CHUNK;
    if (pool)
        ft_thread_pool_run(pool, chunks, scale_chunk, &job, NULL);
    else
        for (size_t c = 0; c < chunks; c++)
            scale_chunk(&job, c, 0);
}
