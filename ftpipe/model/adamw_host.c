/* adamw_host: the update loop and its chunks over the thread pool. */
#include "ftpipe/model/adamw_host.h"

#include <math.h>
#include <stdlib.h>

#include "ftpipe/base/mem.h"

#define CHUNK_ELEMENTS ((size_t)64 << 10)

void ft_adamw_host_update(float *restrict param, const float *restrict grad, float *restrict exp_avg,
                          float *restrict exp_avg_sq, size_t n, const ft_adamw_hyper *hyper)
{
    /* the cpu backend's constants and operations, one for one */
    float decay = (float)(1.0 - hyper->learning_rate * hyper->weight_decay);
    float one_minus_beta1 = (float)(1.0 - hyper->beta1), beta2 = (float)hyper->beta2;
    float one_minus_beta2 = (float)(1.0 - hyper->beta2);
    double bias_correction1 = 1.0 - pow(hyper->beta1, (double)hyper->step);
    double bias_correction2 = 1.0 - pow(hyper->beta2, (double)hyper->step);
    float step_size = (float)(hyper->learning_rate / bias_correction1);
    float bias_correction2_sqrt = (float)sqrt(bias_correction2);
    float eps = (float)hyper->eps;
    for (size_t i = 0; i < n; i++) {
        float g = grad[i], p = param[i] * decay;
        float m = exp_avg[i] + (g - exp_avg[i]) * one_minus_beta1;
        float v = exp_avg_sq[i] * beta2 + one_minus_beta2 * (g * g);
        float denom = __builtin_sqrtf(v) / bias_correction2_sqrt + eps;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = p - step_size * (m / denom);
    }
}

typedef struct {
    const ft_adamw_host_span *span;
    size_t first, count;
} chunk;

static void run_chunk(void *context, size_t item, size_t worker)
{
    (void)worker;
    const chunk *c = (const chunk *)context + item;
    const ft_adamw_host_span *s = c->span;
    ft_adamw_host_update(s->param + c->first, s->grad + c->first, s->exp_avg + c->first, s->exp_avg_sq + c->first,
                         c->count, &s->hyper);
}

void ft_adamw_host_run(ft_thread_pool *pool, const ft_adamw_host_span *spans, size_t n_spans)
{
    size_t n_chunks = 0;
    for (size_t s = 0; s < n_spans; s++)
        n_chunks += (spans[s].count + CHUNK_ELEMENTS - 1) / CHUNK_ELEMENTS;
    chunk *chunks = ft_xmalloc((n_chunks ? n_chunks : 1) * sizeof *chunks);
    size_t at = 0;
    for (size_t s = 0; s < n_spans; s++)
        for (size_t first = 0; first < spans[s].count; first += CHUNK_ELEMENTS)
            chunks[at++] = (chunk){&spans[s], first,
                                   spans[s].count - first < CHUNK_ELEMENTS ? spans[s].count - first : CHUNK_ELEMENTS};
    ft_thread_pool_run(pool, n_chunks, run_chunk, chunks, NULL);
    free(chunks);
}
