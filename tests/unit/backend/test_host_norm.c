/* host_norm: the sum of squares of arrays of awkward lengths (empty, one
 * element, a chunk and one more) is the same bits on 1 and 4 threads and
 * within 1e-12 relative of a long-double sum; the cpu backend's sum_squares is
 * it; scaling multiplies every element, on any number of threads. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "ftpipe/backend/backend.h"
#include "ftpipe/backend/host_norm.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"

static const size_t counts[] = {0, 1, 65536, 65537, 200003, 7};
#define N_ARRAYS (sizeof counts / sizeof counts[0])

static float **make_arrays(void)
{
    float **xs = ft_xcalloc(N_ARRAYS, sizeof *xs);
    for (size_t a = 0; a < N_ARRAYS; a++) {
        xs[a] = ft_xmalloc((counts[a] + 1) * sizeof(float));
        for (size_t i = 0; i < counts[a]; i++)
            xs[a][i] = (2.0f * ft_random_uniform(a + 1, i) - 1.0f) * (float)(a + 1);
    }
    return xs;
}

static void free_arrays(float **xs)
{
    for (size_t a = 0; a < N_ARRAYS; a++)
        free(xs[a]);
    free(xs);
}

TEST(the_sum_is_the_same_on_any_number_of_threads)
{
    float **xs = make_arrays();
    ft_thread_pool *pool = ft_thread_pool_new(4);
    double one = ft_host_sum_squares(NULL, (const float *const *)xs, counts, N_ARRAYS);
    double four = ft_host_sum_squares(pool, (const float *const *)xs, counts, N_ARRAYS);
    CHECK(memcmp(&one, &four, sizeof one) == 0);
    long double exact = 0.0L;
    for (size_t a = 0; a < N_ARRAYS; a++)
        for (size_t i = 0; i < counts[a]; i++)
            exact += (long double)xs[a][i] * xs[a][i];
    CHECK(fabsl((long double)one - exact) <= 1e-12L * exact);
    ft_backend *cpu = ft_backend_cpu_create(1);
    double backend = cpu->sum_squares(cpu, (const float *const *)xs, counts, N_ARRAYS);
    CHECK(memcmp(&one, &backend, sizeof one) == 0);
    CHECK(ft_host_sum_squares(pool, NULL, NULL, 0) == 0.0);
    ft_backend_destroy(cpu);
    ft_thread_pool_free(pool);
    free_arrays(xs);
}

TEST(scaling_multiplies_every_element)
{
    float **xs = make_arrays();
    size_t n = counts[4];
    float *copy = ft_xmalloc(n * sizeof(float));
    memcpy(copy, xs[4], n * sizeof(float));
    ft_thread_pool *pool = ft_thread_pool_new(4);
    ft_host_scale(pool, xs[4], n, 0.37f);
    for (size_t i = 0; i < n; i++)
        if (xs[4][i] != copy[i] * 0.37f) {
            CHECK(xs[4][i] == copy[i] * 0.37f);
            break;
        }
    ft_host_scale(NULL, xs[0], 0, 2.0f); /* nothing to do */
    ft_thread_pool_free(pool);
    free(copy);
    free_arrays(xs);
}

int main(void)
{
    RUN(the_sum_is_the_same_on_any_number_of_threads);
    RUN(scaling_multiplies_every_element);
    return check_done();
}
