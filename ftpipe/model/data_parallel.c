/* data_parallel: row slices per rank and bucketed gradient sums. */
#include "ftpipe/model/data_parallel.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/collective_thread.h"

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

int ft_param_layer(const char *name)
{
    const char *at = strstr(name, ".layers.");
    if (!at && strncmp(name, "layers.", 7) == 0)
        at = name - 1;
    if (!at)
        return -1;
    char *end = NULL;
    long layer = strtol(at + 8, &end, 10);
    return end != at + 8 && *end == '.' && layer >= 0 && layer < 1 << 20 ? (int)layer : -1;
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
        int layer = ft_param_layer(tensors[i].name);
        ft_grad_bucket *last = out->n_buckets ? &out->buckets[out->n_buckets - 1] : NULL;
        if (last && last->layer == layer && last->data + last->count == tensors[i].grad &&
            last->count + tensors[i].count <= limit) {
            last->count += tensors[i].count;
            continue;
        }
        ft_grow((void **)&out->buckets, &capacity, out->n_buckets + 1, sizeof *out->buckets);
        out->buckets[out->n_buckets++] = (ft_grad_bucket){tensors[i].grad, tensors[i].count, layer};
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

/* --- the thread that adds buckets while backward runs --- */

struct ft_grad_sync {
    const ft_grad_buckets *buckets;
    ft_comm *comm;
    size_t *order;          /* bucket indices: layers from the last down, then those of none */
    ft_collective_thread worker;
    size_t queued, done;    /* of order, this step */
    bool failed;
    char message[1024];     /* the failure's ft_error, which is the thread's own */
};

static int later_first(const ft_grad_bucket *a, const ft_grad_bucket *b)
{
    int ka = a->layer < 0 ? -1 : a->layer, kb = b->layer < 0 ? -1 : b->layer;
    return ka > kb;
}

static void *sync_thread(void *argument)
{
    ft_grad_sync *s = argument;
    pthread_mutex_lock(&s->worker.lock);
    for (;;) {
        while (!s->worker.stopping && (s->failed || s->done == s->queued))
            pthread_cond_wait(&s->worker.changed, &s->worker.lock);
        if (s->worker.stopping)
            break;
        const ft_grad_bucket *bucket = &s->buckets->buckets[s->order[s->done]];
        pthread_mutex_unlock(&s->worker.lock);
        int status = s->comm->all_reduce_sum(s->comm, bucket->data, bucket->count, FT_COMM_F32);
        pthread_mutex_lock(&s->worker.lock);
        if (status < 0) {
            snprintf(s->message, sizeof s->message, "%s", ft_error_message());
            s->failed = true;
        } else {
            s->done++;
        }
        pthread_cond_broadcast(&s->worker.changed);
    }
    pthread_mutex_unlock(&s->worker.lock);
    return NULL;
}

ft_grad_sync *ft_grad_sync_create(const ft_grad_buckets *buckets, ft_comm *comm)
{
    ft_grad_sync *s = ft_xcalloc(1, sizeof *s);
    s->buckets = buckets;
    s->comm = comm;
    s->order = ft_xmalloc((buckets->n_buckets ? buckets->n_buckets : 1) * sizeof *s->order);
    for (size_t i = 0; i < buckets->n_buckets; i++) { /* insertion sort: stable, and the lists are short */
        size_t j = i;
        while (j > 0 && later_first(&buckets->buckets[i], &buckets->buckets[s->order[j - 1]])) {
            s->order[j] = s->order[j - 1];
            j--;
        }
        s->order[j] = i;
    }
    if (ft_collective_thread_start(&s->worker, sync_thread, s, "the thread that adds gradients over the ranks") < 0) {
        ft_grad_sync_free(s);
        return NULL;
    }
    return s;
}

/* A step that failed mid-way: its collective may wait for good. */
static bool sum_blocked(void *argument)
{
    const ft_grad_sync *s = argument;
    return s->done < s->queued && !s->failed;
}

void ft_grad_sync_free(ft_grad_sync *s)
{
    if (!s)
        return;
    ft_collective_thread_stop(&s->worker, s->comm, sum_blocked, s);
    free(s->order);
    free(s);
}

void ft_grad_sync_layer_done(void *sync, int layer)
{
    ft_grad_sync *s = sync;
    pthread_mutex_lock(&s->worker.lock);
    size_t upto = s->queued;
    for (size_t k = s->queued; k < s->buckets->n_buckets; k++) {
        const ft_grad_bucket *bucket = &s->buckets->buckets[s->order[k]];
        if (bucket->layer < layer)
            break;
        upto = k + 1;
    }
    if (upto > s->queued) {
        s->queued = upto;
        pthread_cond_broadcast(&s->worker.changed);
    }
    pthread_mutex_unlock(&s->worker.lock);
}

int ft_grad_sync_finish(ft_grad_sync *s)
{
    pthread_mutex_lock(&s->worker.lock);
    s->queued = s->buckets->n_buckets;
    pthread_cond_broadcast(&s->worker.changed);
    while (!s->failed && s->done < s->queued)
        pthread_cond_wait(&s->worker.changed, &s->worker.lock);
    bool failed = s->failed;
    s->queued = s->done = 0;
    pthread_mutex_unlock(&s->worker.lock);
    if (failed)
        return ft_error("%s", s->message);
    return 0;
}
