/* The host update of an offloaded AdamW: the same bits whether a step runs as
 * one call of host_adamw's update or cut into chunks on a pool's threads
 * (host_adamw's own test holds the update to torch's formula and to the cpu
 * backend's op). */
#include <string.h>

#include "check.h"
#include "ftpipe/backend/host_adamw.h"
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
    ft_host_adamw_update(direct.param, direct.grad, direct.exp_avg, direct.exp_avg_sq, first, &spans[0].hyper);
    ft_host_adamw_update(direct.param + first, direct.grad + first, direct.exp_avg + first, direct.exp_avg_sq + first,
                         N - first, &spans[1].hyper);
    CHECK(same(&pooled, &direct));
    free_state(&pooled);
    free_state(&direct);
    ft_thread_pool_free(pool);
}

int main(void)
{
    RUN(chunks_on_threads_give_the_bits_of_one_call);
    return check_done();
}
