/* data_parallel: row slices per rank and bucketed gradient sums. */
#include "ftpipe/model/data_parallel.h"

#include <stdlib.h>

#include "ftpipe/base/error.h"
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
