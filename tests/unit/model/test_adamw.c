/* The optimizer over a list of tensors on the cpu backend: offloaded (state
 * and master values in host memory, the update on the host's threads) it
 * makes the in-place optimizer's updates bit for bit, clipping included; its
 * moments are the host array checkpoints take (NULL in place); a master copy
 * reads values changed behind it again with ft_adamw_reload_values; over
 * values in host memory (ft_adamw_create_on_host) it updates them in place,
 * the in-place optimizer's bits, and sees values changed behind it at once. */
#include <string.h>

#include "check.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/model/adamw.h"

#define A 300
#define B 77

typedef struct {
    float values[A + B], grads[A + B];
    ft_param_tensor tensors[2];
} model;

static void make(model *m)
{
    for (size_t i = 0; i < A + B; i++)
        m->values[i] = (2.0f * ft_random_uniform(5, i) - 1.0f) * 0.1f;
    m->tensors[0] = (ft_param_tensor){"a.weight", m->values, m->grads, A, true, 2, {20, 15}};
    m->tensors[1] = (ft_param_tensor){"a.bias", m->values + A, m->grads + A, B, false, 1, {B, 0}};
}

static void set_grads(model *m, int step)
{
    for (size_t i = 0; i < A + B; i++)
        m->grads[i] = (2.0f * ft_random_uniform(50 + (uint64_t)step, i) - 1.0f) * 3.0f;
}

TEST(offloaded_updates_equal_the_in_place_ones_bit_for_bit)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    model in_place, offloaded;
    make(&in_place);
    make(&offloaded);
    ft_adamw_config config = {0.9, 0.999, 1e-8, 0.01};
    ft_adamw *a = NULL, *b = NULL;
    CHECK_INT(ft_adamw_create(cpu, in_place.tensors, 2, &config, &a), 0);
    CHECK_INT(ft_adamw_create_offloaded(cpu, offloaded.tensors, 2, &config, false, &b), 0);
    CHECK(ft_adamw_host_moments(a) == NULL);
    CHECK(ft_adamw_host_moments(b) != NULL);
    for (int step = 1; step <= 4; step++) {
        set_grads(&in_place, step);
        set_grads(&offloaded, step);
        double norm_a = ft_adamw_clip_grad_norm(a, 1.0), norm_b = ft_adamw_clip_grad_norm(b, 1.0);
        CHECK(norm_a == norm_b && norm_a > 1.0); /* clipped */
        ft_adamw_step(a, 1e-2);
        ft_adamw_step(b, 1e-2);
    }
    CHECK(memcmp(in_place.values, offloaded.values, sizeof in_place.values) == 0);
    const float *host = ft_adamw_host_moments(b);
    for (size_t t = 0; t < 2; t++) {
        float *exp_avg, *exp_avg_sq;
        ft_adamw_moments(a, t, &exp_avg, &exp_avg_sq);
        size_t at = t == 0 ? 0 : A;
        CHECK(memcmp(exp_avg, host + at, in_place.tensors[t].count * sizeof(float)) == 0);
        CHECK(memcmp(exp_avg_sq, host + A + B + at, in_place.tensors[t].count * sizeof(float)) == 0);
    }
    /* values loaded behind the optimizer's back (a resume) reach its master copy */
    memcpy(offloaded.values, in_place.values, sizeof offloaded.values);
    offloaded.values[3] = in_place.values[3] = 0.5f;
    ft_adamw_reload_values(b);
    set_grads(&in_place, 9);
    set_grads(&offloaded, 9);
    ft_adamw_step(a, 1e-2);
    ft_adamw_step(b, 1e-2);
    CHECK(memcmp(in_place.values, offloaded.values, sizeof in_place.values) == 0);
    ft_adamw_free(a);
    ft_adamw_free(b);
    ft_backend_destroy(cpu);
}

TEST(updates_of_values_in_host_memory_are_in_place_and_equal_the_backends)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    model in_place, on_host;
    make(&in_place);
    make(&on_host);
    ft_adamw_config config = {0.9, 0.999, 1e-8, 0.01};
    ft_adamw *a = NULL, *b = NULL;
    CHECK_INT(ft_adamw_create(cpu, in_place.tensors, 2, &config, &a), 0);
    CHECK_INT(ft_adamw_create_on_host(cpu, on_host.tensors, 2, &config, false, &b), 0);
    CHECK(ft_adamw_host_moments(b) != NULL);
    CHECK_INT(ft_adamw_state_bytes(b), ft_adamw_state_bytes(a));
    for (int step = 1; step <= 4; step++) {
        if (step == 3) /* a resume's values, written straight into the host values: no reload needed */
            on_host.values[3] = in_place.values[3] = 0.5f;
        set_grads(&in_place, step);
        set_grads(&on_host, step);
        CHECK(ft_adamw_clip_grad_norm(a, 1.0) == ft_adamw_clip_grad_norm(b, 1.0));
        ft_adamw_step(a, 1e-2);
        ft_adamw_step(b, 1e-2);
        CHECK(memcmp(in_place.values, on_host.values, sizeof in_place.values) == 0);
    }
    ft_adamw_free(a);
    ft_adamw_free(b);
    ft_backend_destroy(cpu);
}

int main(void)
{
    RUN(offloaded_updates_equal_the_in_place_ones_bit_for_bit);
    RUN(updates_of_values_in_host_memory_are_in_place_and_equal_the_backends);
    return check_done();
}
