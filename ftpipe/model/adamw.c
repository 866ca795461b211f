/* adamw: moments for a list of tensors and the update loop over them; the
 * arithmetic itself is the backend's adamw op, or adamw_host's when offloaded. */
#include "ftpipe/model/adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/backend/host_norm.h"
#include "ftpipe/model/adamw_host.h"

struct ft_adamw {
    ft_backend *backend;
    const ft_param_tensor *tensors;
    size_t count;
    ft_adamw_config config;
    float *moments;        /* exp_avg of every tensor, then exp_avg_sq of every tensor */
    size_t *offsets;       /* tensor i's first element in each half */
    size_t total;          /* elements in each half */
    const float **grads;   /* the tensors' gradients and sizes, for one sum_squares over all */
    size_t *counts;
    int64_t steps;
    bool offload;          /* the moments are host memory, with these beside them */
    bool grads_on_host;    /* offloaded: the tensors' gradients are host memory already (grad_shards.h) */
    float *master;         /* the values, f32, laid out as one half of the moments; NULL when the
                            * tensors' values are host memory themselves (ft_adamw_create_on_host) */
    float *host_grads;     /* the gradients, downloaded for each step (none when they are host memory) */
    bool grads_fetched;    /* host_grads hold this step's gradients already (ft_adamw_fetch_grads) */
    ft_thread_pool *pool;
    ft_adamw_host_span *spans;
};

typedef enum { ON_BACKEND, OFFLOADED, VALUES_ON_HOST } placement;

static int create(ft_backend *backend, const ft_param_tensor *tensors, size_t count, const ft_adamw_config *config,
                  placement where, bool grads_on_host, ft_adamw **out)
{
    ft_adamw *optimizer = ft_xcalloc(1, sizeof *optimizer);
    optimizer->backend = backend;
    optimizer->tensors = tensors;
    optimizer->count = count;
    optimizer->config = *config;
    optimizer->offsets = ft_xcalloc(count ? count : 1, sizeof(size_t));
    optimizer->grads = ft_xcalloc(count ? count : 1, sizeof *optimizer->grads);
    optimizer->counts = ft_xcalloc(count ? count : 1, sizeof(size_t));
    for (size_t i = 0; i < count; i++) {
        optimizer->offsets[i] = optimizer->total;
        optimizer->total += tensors[i].count;
        optimizer->grads[i] = tensors[i].grad;
        optimizer->counts[i] = tensors[i].count;
    }
    optimizer->offload = where != ON_BACKEND;
    optimizer->grads_on_host = optimizer->offload && grads_on_host;
    if (optimizer->offload) { /* the backend's host memory: page-locked on cuda, so the copies go by DMA */
        size_t elements = optimizer->total ? optimizer->total : 1;
        optimizer->moments = backend->alloc_host(backend, 2 * elements * sizeof(float));
        bool ok = optimizer->moments != NULL;
        if (ok && where == OFFLOADED)
            ok = (optimizer->master = backend->alloc_host(backend, elements * sizeof(float))) != NULL;
        if (ok && !optimizer->grads_on_host)
            ok = (optimizer->host_grads = backend->alloc_host(backend, elements * sizeof(float))) != NULL;
        if (!ok) {
            ft_adamw_free(optimizer);
            return ft_error_context("AdamW's offloaded state (%zu bytes of host memory)",
                                    (8 + (where == OFFLOADED ? 4 : 0) + (optimizer->grads_on_host ? 0 : 4)) * elements);
        }
        memset(optimizer->moments, 0, 2 * elements * sizeof(float));
        optimizer->pool = ft_thread_pool_new(0);
        optimizer->spans = ft_xcalloc(count ? count : 1, sizeof *optimizer->spans);
        ft_adamw_reload_values(optimizer);
        *out = optimizer;
        return 0;
    }
    optimizer->moments = backend->alloc(backend, 2 * optimizer->total * sizeof(float));
    if (!optimizer->moments) {
        ft_adamw_free(optimizer);
        return ft_error_context("allocating AdamW's moments");
    }
    backend->zero(backend, optimizer->moments, 2 * optimizer->total * sizeof(float));
    *out = optimizer;
    return 0;
}

int ft_adamw_create(ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                    const ft_adamw_config *config, ft_adamw **out)
{
    return create(backend, tensors, count, config, ON_BACKEND, false, out);
}

int ft_adamw_create_offloaded(ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                              const ft_adamw_config *config, bool grads_on_host, ft_adamw **out)
{
    return create(backend, tensors, count, config, OFFLOADED, grads_on_host, out);
}

int ft_adamw_create_on_host(ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                            const ft_adamw_config *config, bool grads_on_host, ft_adamw **out)
{
    return create(backend, tensors, count, config, VALUES_ON_HOST, grads_on_host, out);
}

void ft_adamw_free(ft_adamw *optimizer)
{
    if (!optimizer)
        return;
    ft_backend *backend = optimizer->backend;
    if (optimizer->offload) {
        backend->free_host(backend, optimizer->moments);
        if (optimizer->master)
            backend->free_host(backend, optimizer->master);
        if (optimizer->host_grads)
            backend->free_host(backend, optimizer->host_grads);
    } else if (optimizer->moments) {
        backend->free(backend, optimizer->moments);
    }
    if (optimizer->pool)
        ft_thread_pool_free(optimizer->pool);
    free(optimizer->spans);
    free(optimizer->offsets);
    free(optimizer->grads);
    free(optimizer->counts);
    free(optimizer);
}

void ft_adamw_reload_values(ft_adamw *optimizer)
{
    if (!optimizer->master)
        return;
    for (size_t i = 0; i < optimizer->count; i++)
        optimizer->backend->download(optimizer->backend, optimizer->master + optimizer->offsets[i],
                                     optimizer->tensors[i].value, optimizer->tensors[i].count * sizeof(float));
}

/* Offloaded, tensors [first, first + count): the gradients down (unless they
 * are host memory), the update on the host's cores, the values up (in place
 * when they are host memory). */
static void step_on_host(ft_adamw *optimizer, double learning_rate, size_t first, size_t count)
{
    ft_backend *backend = optimizer->backend;
    for (size_t i = first; i < first + count; i++) {
        const ft_param_tensor *tensor = &optimizer->tensors[i];
        size_t at = optimizer->offsets[i];
        const float *grad = tensor->grad;
        if (!optimizer->grads_on_host) {
            if (!optimizer->grads_fetched)
                backend->download(backend, optimizer->host_grads + at, tensor->grad, tensor->count * sizeof(float));
            grad = optimizer->host_grads + at;
        }
        optimizer->spans[i] = (ft_adamw_host_span){
            optimizer->master ? optimizer->master + at : tensor->value, grad, optimizer->moments + at,
            optimizer->moments + optimizer->total + at, tensor->count,
            {learning_rate, optimizer->config.beta1, optimizer->config.beta2, optimizer->config.eps,
             tensor->weight_decay ? optimizer->config.weight_decay : 0.0, optimizer->steps}};
    }
    ft_adamw_host_run(optimizer->pool, optimizer->spans + first, count);
    for (size_t i = first; i < first + count && optimizer->master; i++)
        backend->upload(backend, optimizer->tensors[i].value, optimizer->master + optimizer->offsets[i],
                        optimizer->tensors[i].count * sizeof(float));
}

void ft_adamw_fetch_grads(ft_adamw *optimizer)
{
    for (size_t i = 0; optimizer->offload && !optimizer->grads_on_host && i < optimizer->count; i++)
        optimizer->backend->download(optimizer->backend, optimizer->host_grads + optimizer->offsets[i],
                                     optimizer->tensors[i].grad, optimizer->tensors[i].count * sizeof(float));
    optimizer->grads_fetched = optimizer->offload && !optimizer->grads_on_host;
}

void ft_adamw_step(ft_adamw *optimizer, double learning_rate)
{
    optimizer->grads_fetched = false;
    optimizer->steps++;
    if (optimizer->offload) {
        step_on_host(optimizer, learning_rate, 0, optimizer->count);
        return;
    }
    ft_backend *backend = optimizer->backend;
    for (size_t i = 0; i < optimizer->count; i++) {
        const ft_param_tensor *tensor = &optimizer->tensors[i];
        ft_adamw_hyper hyper = {learning_rate, optimizer->config.beta1, optimizer->config.beta2,
                                optimizer->config.eps,
                                tensor->weight_decay ? optimizer->config.weight_decay : 0.0, optimizer->steps};
        float *exp_avg, *exp_avg_sq;
        ft_adamw_moments(optimizer, i, &exp_avg, &exp_avg_sq);
        backend->adamw(backend, tensor->value, tensor->grad, exp_avg, exp_avg_sq, tensor->count, &hyper);
    }
}

void ft_adamw_step_begin(ft_adamw *optimizer) { optimizer->steps++; }

void ft_adamw_step_tensors(ft_adamw *optimizer, double learning_rate, size_t first, size_t count)
{
    step_on_host(optimizer, learning_rate, first, count);
}

int64_t ft_adamw_step_count(const ft_adamw *optimizer) { return optimizer->steps; }

void ft_adamw_set_step_count(ft_adamw *optimizer, int64_t steps) { optimizer->steps = steps; }

double ft_adamw_grad_squares(ft_adamw *optimizer, const float *const *grads, const size_t *counts, size_t n)
{
    ft_backend *backend = optimizer->backend;
    return optimizer->grads_on_host ? ft_host_sum_squares(optimizer->pool, grads, counts, n)
                                    : backend->sum_squares(backend, grads, counts, n);
}

void ft_adamw_scale_grad(ft_adamw *optimizer, float *grad, size_t count, float factor)
{
    if (optimizer->grads_on_host)
        ft_host_scale(optimizer->pool, grad, count, factor);
    else
        optimizer->backend->scale(optimizer->backend, grad, count, factor);
}

double ft_adamw_clip_grad_norm(ft_adamw *optimizer, double max_norm)
{
    double norm = sqrt(ft_adamw_grad_squares(optimizer, optimizer->grads, optimizer->counts, optimizer->count));
    double coefficient = max_norm / (norm + 1e-6);
    if (max_norm > 0.0 && coefficient < 1.0)
        for (size_t i = 0; i < optimizer->count; i++)
            ft_adamw_scale_grad(optimizer, optimizer->tensors[i].grad, optimizer->tensors[i].count, (float)coefficient);
    return norm;
}

void ft_adamw_moments(const ft_adamw *optimizer, size_t index, float **exp_avg, float **exp_avg_sq)
{
    *exp_avg = optimizer->moments + optimizer->offsets[index];
    *exp_avg_sq = optimizer->moments + optimizer->total + optimizer->offsets[index];
}

size_t ft_adamw_state_bytes(const ft_adamw *optimizer) { return 2 * optimizer->total * sizeof(float); }

float *ft_adamw_host_moments(const ft_adamw *optimizer)
{
    return optimizer->offload ? optimizer->moments : NULL;
}
