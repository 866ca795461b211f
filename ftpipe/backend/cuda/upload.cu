/* upload: host to GPU through a ring of pinned staging chunks. Several host
 * threads fill a chunk together (a weight file is usually a memory mapping, so
 * the copy also takes its page faults, which one thread alone makes slow) while
 * the chunks filled before it are copied to the GPU; an upload returns once its
 * last chunk is queued, so the next one's filling overlaps its copy. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cuda_internal.h"

extern "C" {
#include "ftpipe/base/mem.h"
}

static const size_t chunk_bytes = (size_t)16 << 20;
static const size_t parallel_from_bytes = (size_t)1 << 20; /* smaller copies stay on the calling thread */
static const int most_threads = 8;

/* Threads that copy one slice each of the current job, the caller taking the last. */
struct ft_copy_pool {
    pthread_t threads[most_threads];
    int n_threads;
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    char *dst;
    const char *src;
    size_t bytes;
    unsigned generation;   /* bumped for each job */
    int busy;              /* threads still copying this job */
    bool stop;
};

/* Slice `index` of `count` of a job, cut at 4 KiB so that no two threads fault on one page. */
static void copy_slice(ft_copy_pool *pool, int index, int count)
{
    size_t per = (pool->bytes / count + 4095) / 4096 * 4096;
    size_t begin = per * index, end = begin + per;
    if (begin >= pool->bytes)
        return;
    if (end > pool->bytes)
        end = pool->bytes;
    memcpy(pool->dst + begin, pool->src + begin, end - begin);
}

static void *copy_worker(void *argument)
{
    ft_copy_pool *pool = (ft_copy_pool *)argument;
    pthread_mutex_lock(&pool->lock);
    int index = -1;
    for (int i = 0; i < pool->n_threads; i++)
        if (pthread_equal(pool->threads[i], pthread_self()))
            index = i;
    unsigned seen = pool->generation;
    for (;;) {
        while (!pool->stop && pool->generation == seen)
            pthread_cond_wait(&pool->work, &pool->lock);
        if (pool->stop)
            break;
        seen = pool->generation;
        pthread_mutex_unlock(&pool->lock);
        copy_slice(pool, index, pool->n_threads + 1);
        pthread_mutex_lock(&pool->lock);
        if (--pool->busy == 0)
            pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

static void parallel_copy(ft_copy_pool *pool, void *dst, const void *src, size_t bytes)
{
    if (!pool || bytes < parallel_from_bytes) {
        memcpy(dst, src, bytes);
        return;
    }
    pthread_mutex_lock(&pool->lock);
    pool->dst = (char *)dst;
    pool->src = (const char *)src;
    pool->bytes = bytes;
    pool->busy = pool->n_threads;
    pool->generation++;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
    copy_slice(pool, pool->n_threads, pool->n_threads + 1);
    pthread_mutex_lock(&pool->lock);
    while (pool->busy > 0)
        pthread_cond_wait(&pool->done, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}

static void free_pool(ft_copy_pool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stop = true;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->work);
    pthread_cond_destroy(&pool->done);
    free(pool);
}

/* Half the cores, up to most_threads + 1 with the caller; NULL on one core. */
static ft_copy_pool *make_pool(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int wanted = cores > 2 ? (int)(cores / 2) - 1 : 0;
    if (wanted > most_threads)
        wanted = most_threads;
    if (wanted < 1)
        return NULL;
    ft_copy_pool *pool = (ft_copy_pool *)ft_xcalloc(1, sizeof *pool);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work, NULL);
    pthread_cond_init(&pool->done, NULL);
    pthread_mutex_lock(&pool->lock); /* workers find their index once all are started */
    for (int i = 0; i < wanted; i++)
        if (pthread_create(&pool->threads[pool->n_threads], NULL, copy_worker, pool) == 0)
            pool->n_threads++;
    pthread_mutex_unlock(&pool->lock);
    if (pool->n_threads == 0) {
        free_pool(pool);
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
    free_pool(context->copy_pool);
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
