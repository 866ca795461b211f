/* The host update of an offloaded AdamW: bit for bit the cpu backend's adamw
 * op over several steps with weight decay (an odd count, so the vectorised
 * loop's tail runs too), and the same bits whether a step runs as one call or
 * cut into chunks on a pool's threads. */
#include <string.h>

#include "check.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/model/adamw_host.h"

#define N 100003

static void fill(float *x, size_t n, uint64_t seed, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (2.0f * ft_random_uniform(seed, i) - 1.0f) * scale;
}

typedef struct {
    float *param, *grad, *exp_avg, *exp_avg_sq;
} state;

static state make_state(void)
{
    state s = {ft_xmalloc(N * sizeof(float)), ft_xmalloc(N * sizeof(float)), ft_xcalloc(N, sizeof(float)),
               ft_xcalloc(N, sizeof(float))};
    fill(s.param, N, 1, 0.5f);
    return s;
}

static bool same(const state *a, const state *b)
{
    return memcmp(a->param, b->param, N * sizeof(float)) == 0 && memcmp(a->exp_avg, b->exp_avg, N * sizeof(float)) == 0 &&
           memcmp(a->exp_avg_sq, b->exp_avg_sq, N * sizeof(float)) == 0;
}

static void free_state(state *s)
{
    free(s->param);
    free(s->grad);
    free(s->exp_avg);
    free(s->exp_avg_sq);
}

TEST(equals_the_cpu_backend_bit_for_bit)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    state host = make_state(), backend = make_state();
    for (int64_t step = 1; step <= 3; step++) {
        fill(host.grad, N, 100 + (uint64_t)step, 1e-2f);
        memcpy(backend.grad, host.grad, N * sizeof(float));
        ft_adamw_hyper hyper = {1e-3, 0.9, 0.999, 1e-8, 0.1, step};
        ft_adamw_host_update(host.param, host.grad, host.exp_avg, host.exp_avg_sq, N, &hyper);
        cpu->adamw(cpu, backend.param, backend.grad, backend.exp_avg, backend.exp_avg_sq, N, &hyper);
    }
    CHECK(same(&host, &backend));
    float first = host.param[0];
    CHECK(first != 0.0f);
    free_state(&host);
    free_state(&backend);
    ft_backend_destroy(cpu);
}

TEST(chunks_on_threads_give_the_bits_of_one_call)
{
    ft_thread_pool *pool = ft_thread_pool_new(4);
    state pooled = make_state(), direct = make_state();
    fill(pooled.grad, N, 7, 1e-2f);
    memcpy(direct.grad, pooled.grad, N * sizeof(float));
    size_t first = 5; /* two spans: a short one without weight decay, then one of several chunks */
    ft_adamw_host_span spans[2] = {
        {pooled.param, pooled.grad, pooled.exp_avg, pooled.exp_avg_sq, first, {1e-3, 0.9, 0.999, 1e-8, 0.0, 1}},
        {pooled.param + first, pooled.grad + first, pooled.exp_avg + first, pooled.exp_avg_sq + first, N - first,
         {1e-3, 0.9, 0.999, 1e-8, 0.1, 1}},
    };
    ft_adamw_host_run(pool, spans, 2);
    ft_adamw_host_update(direct.param, direct.grad, direct.exp_avg, direct.exp_avg_sq, first, &spans[0].hyper);
    ft_adamw_host_update(direct.param + first, direct.grad + first, direct.exp_avg + first, direct.exp_avg_sq + first,
                         N - first, &spans[1].hyper);
    CHECK(same(&pooled, &direct));
    free_state(&pooled);
    free_state(&direct);
    ft_thread_pool_free(pool);
}

int main(void)
{
    RUN(equals_the_cpu_backend_bit_for_bit);
    RUN(chunks_on_threads_give_the_bits_of_one_call);
    return check_done();
}
