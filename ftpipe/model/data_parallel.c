/* data_parallel: row slices per rank and bucketed gradient sums. */
#include "ftpipe/model/data_parallel.h"

#include <stdlib.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

void ft_rank_rows(int64_t rows, int64_t rows_per_rank, int ranks, int rank, int64_t *first, int64_t *count)
{
    int64_t per = rows_per_rank;
    if (per * ranks > rows)
        per = (rows + ranks - 1) / ranks;
    int64_t start = per * rank;
    if (start > rows)
        start = rows;
    int64_t end = start + per > rows ? rows : start + per;
    *first = start;
    *count = end - start;
}

void ft_grad_buckets_plan(const ft_param_tensor *tensors, size_t n_tensors, size_t bucket_bytes,
                          ft_grad_buckets *out)
{
    size_t capacity = 0, limit = bucket_bytes / sizeof(float);
    out->buckets = NULL;
    out->n_buckets = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        if (!tensors[i].grad || tensors[i].count == 0)
            continue;
        ft_grad_bucket *last = out->n_buckets ? &out->buckets[out->n_buckets - 1] : NULL;
        if (last && last->data + last->count == tensors[i].grad && last->count + tensors[i].count <= limit) {
            last->count += tensors[i].count;
            continue;
        }
        ft_grow((void **)&out->buckets, &capacity, out->n_buckets + 1, sizeof *out->buckets);
        out->buckets[out->n_buckets++] = (ft_grad_bucket){tensors[i].grad, tensors[i].count};
    }
}

void ft_grad_buckets_free(ft_grad_buckets *buckets)
{
    free(buckets->buckets);
    buckets->buckets = NULL;
    buckets->n_buckets = 0;
}

int ft_grad_buckets_all_reduce(const ft_grad_buckets *buckets, ft_comm *comm)
{
    for (size_t i = 0; i < buckets->n_buckets; i++)
        if (comm->all_reduce_sum(comm, buckets->buckets[i].data, buckets->buckets[i].count, FT_COMM_F32) < 0)
            return ft_error_context("adding the gradients of the ranks");
    return 0;
}

int ft_grad_buckets_time_all_reduce(const ft_grad_buckets *buckets, ft_comm *comm, ft_backend *backend,
                                    int repeats, ft_all_reduce_timing *out)
{
    out->bytes = 0;
    for (size_t i = 0; i < buckets->n_buckets; i++)
        out->bytes += buckets->buckets[i].count * sizeof(float);
    out->seconds = 0.0;
    for (int r = 0; r < repeats; r++) {
        uint64_t start = ft_now_ns();
        if (ft_grad_buckets_all_reduce(buckets, comm) < 0 || backend->check(backend) < 0)
            return ft_error_context("the preflight all-reduce");
        double seconds = (double)(ft_now_ns() - start) * 1e-9;
        if (r == 0 || seconds < out->seconds)
            out->seconds = seconds;
    }
    double factor = 2.0 * (comm->size - 1) / comm->size;
    out->bus_bytes_per_s = out->seconds > 0.0 ? (double)out->bytes * factor / out->seconds : 0.0;
    return 0;
}
