/* upload: host to GPU through a ring of pinned staging chunks. Several host
 * threads fill a chunk together (a weight file is usually a memory mapping, so
 * the copy also takes its page faults, which one thread alone makes slow) while
 * the chunks filled before it are copied to the GPU; an upload returns once its
 * last chunk is queued, so the next one's filling overlaps its copy. On the
 * side queue an upload copies straight from its source (page-locked, as
 * offloaded shards are), leaving the ring to the compute thread. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda_internal.h"

static const size_t chunk_bytes = (size_t)16 << 20;
static const size_t parallel_from_bytes = (size_t)1 << 20; /* smaller copies stay on the calling thread */
static const int most_threads = 8;

/* One copy, cut into a slice per pool worker. */
struct slice_copy {
    char *dst;
    const char *src;
    size_t bytes;
    size_t n_slices;
};

/* Slice `index`, cut at 4 KiB so that no two threads fault on one page; the
 * slices' length is rounded up, so together they cover every byte. */
static void copy_slice(void *context, size_t index, size_t worker)
{
    const slice_copy *copy = (const slice_copy *)context;
    size_t per = ((copy->bytes + copy->n_slices - 1) / copy->n_slices + 4095) / 4096 * 4096;
    size_t begin = per * index, end = begin + per;
    if (begin >= copy->bytes)
        return;
    if (end > copy->bytes)
        end = copy->bytes;
    memcpy(copy->dst + begin, copy->src + begin, end - begin);
}

static void parallel_copy(ft_thread_pool *pool, void *dst, const void *src, size_t bytes)
{
    if (!pool || bytes < parallel_from_bytes) {
        memcpy(dst, src, bytes);
        return;
    }
    size_t n_slices = ft_thread_pool_workers(pool);
    slice_copy copy = {(char *)dst, (const char *)src, bytes, n_slices};
    ft_thread_pool_run(pool, n_slices, copy_slice, &copy, NULL);
}

/* Half the cores, up to most_threads + 1 with the caller; NULL on one core or
 * when no thread could start. */
static ft_thread_pool *make_pool(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int wanted = cores > 2 ? (int)(cores / 2) - 1 : 0;
    if (wanted > most_threads)
        wanted = most_threads;
    if (wanted < 1)
        return NULL;
    ft_thread_pool *pool = ft_thread_pool_new((size_t)wanted + 1);
    if (ft_thread_pool_workers(pool) == 1) {
        ft_thread_pool_free(pool);
        return NULL;
    }
    return pool;
}

int ft_cuda_upload_start(ft_cuda_context *context)
{
    for (int i = 0; i < FT_STAGING_CHUNKS; i++)
        if (cudaMallocHost(&context->staging[i], chunk_bytes) != cudaSuccess ||
            cudaEventCreateWithFlags(&context->staging_free[i], cudaEventDisableTiming) != cudaSuccess)
            return -1;
    context->staging_bytes = chunk_bytes;
    context->copy_pool = make_pool();
    return 0;
}

void ft_cuda_upload_stop(ft_cuda_context *context)
{
    ft_thread_pool_free(context->copy_pool);
    context->copy_pool = NULL;
    for (int i = 0; i < FT_STAGING_CHUNKS; i++) {
        if (context->staging[i])
            cudaFreeHost(context->staging[i]);
        if (context->staging_free[i])
            cudaEventDestroy(context->staging_free[i]);
        context->staging[i] = NULL;
        context->staging_free[i] = NULL;
    }
}

void ft_cuda_upload(ft_backend *self, void *device, const void *host, size_t bytes)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    cudaStream_t stream = ft_cuda_copy_stream(context);
    if (stream != context->stream) { /* the side queue: straight from the source, which the caller keeps */
        if (bytes)
            CUDA_CHECK(context, cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream));
        return;
    }
    for (size_t done = 0; done < bytes;) {
        int chunk = context->next_staging;
        size_t n = bytes - done < context->staging_bytes ? bytes - done : context->staging_bytes;
        CUDA_CHECK(context, cudaEventSynchronize(context->staging_free[chunk]));
        parallel_copy(context->copy_pool, context->staging[chunk], (const char *)host + done, n);
        CUDA_CHECK(context, cudaMemcpyAsync((char *)device + done, context->staging[chunk], n,
                                            cudaMemcpyHostToDevice, context->stream));
        CUDA_CHECK(context, cudaEventRecord(context->staging_free[chunk], context->stream));
        context->next_staging = (chunk + 1) % FT_STAGING_CHUNKS;
        done += n;
    }
}
