/* data_parallel: what N ranks of one trainer share out and add up. Each step's
 * rows are split into one contiguous slice per rank, in rank order, so that N
 * ranks see the rows of one rank's step with the same effective batch; the
 * trained tensors' gradients are added over the ranks in buckets of adjacent
 * tensors of one layer (LoRA's gradients are one allocation, so a layer's are
 * one span), the way DDP groups them, so that a collective moves a layer's
 * gradients at once; a thread adds each layer's while backward runs on the
 * layers below (ft_grad_sync). */
#ifndef FTPIPE_DATA_PARALLEL_H
#define FTPIPE_DATA_PARALLEL_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/comm.h"
#include "ftpipe/model/adamw.h"

/* DDP's default bucket: 25 MiB of gradients. */
#define FT_GRAD_BUCKET_BYTES ((size_t)25 << 20)

/* Rank `rank`'s slice [*first, *first + *count) of a step's `rows` rows:
 * rows_per_rank each while they last (a step at an epoch's end has fewer rows:
 * then ceil(rows / ranks) each). */
void ft_rank_rows(int64_t rows, int64_t rows_per_rank, int ranks, int rank, int64_t *first, int64_t *count);

typedef struct {
    float *data;       /* in the backend's memory */
    size_t count;
    int layer;         /* the decoder layer of its tensors; -1: none (embeddings, final norm, head) */
} ft_grad_bucket;

typedef struct {
    ft_grad_bucket *buckets;
    size_t n_buckets;
} ft_grad_buckets;

/* The decoder layer a tensor's name places it in ("....layers.N...."), or -1. */
int ft_param_layer(const char *name);

/* Groups the tensors' gradients into spans of adjacent memory of one layer, of
 * at most bucket_bytes (a larger tensor is a bucket of its own). */
void ft_grad_buckets_plan(const ft_param_tensor *tensors, size_t n_tensors, size_t bucket_bytes,
                          ft_grad_buckets *out);
void ft_grad_buckets_free(ft_grad_buckets *buckets);

/* Every rank's gradients become their sum over the ranks. -1 with ft_error. */
int ft_grad_buckets_all_reduce(const ft_grad_buckets *buckets, ft_comm *comm);

/* The preflight: the fastest of `repeats` all-reduces of the buckets (waited
 * for on the backend, where a collective only queues), in seconds, and the bus bandwidth it gives (NCCL's measure: bytes x 2(n-1)/n
 * per second). The gradients must be zero (they stay so). */
typedef struct {
    size_t bytes;
    double seconds;
    double bus_bytes_per_s;
} ft_all_reduce_timing;
int ft_grad_buckets_time_all_reduce(const ft_grad_buckets *buckets, ft_comm *comm, ft_backend *backend,
                                    int repeats, ft_all_reduce_timing *out);

/* Adds the buckets over the ranks on a thread of its own, a layer's as soon
 * as backward is done with it. Every rank sends the buckets in one order (the
 * last layer first, those of no layer at the end), whichever layers it was
 * told of, so a rank with no rows in a step still meets the others. */
typedef struct ft_grad_sync ft_grad_sync;
/* NULL with ft_error when its thread does not start. */
ft_grad_sync *ft_grad_sync_create(const ft_grad_buckets *buckets, ft_comm *comm);
void ft_grad_sync_free(ft_grad_sync *sync);
/* Layer `layer`'s gradients are final for this step: send them, and all that
 * come before them in the order. Suits ft_model_on_layer_gradients. */
void ft_grad_sync_layer_done(void *sync, int layer);
/* Sends what is left and waits for every bucket: then each rank's gradients
 * are their sum over the ranks. -1 with ft_error when a collective failed. */
int ft_grad_sync_finish(ft_grad_sync *sync);

#endif
