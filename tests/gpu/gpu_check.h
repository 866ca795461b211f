/* gpu_check: what the GPU tests share: the cpu backend (the reference) and the
 * cuda backend, test arrays moved to the GPU in bf16 or float, and comparisons
 * that print their numbers ("# what: relative error ...").
 *
 * Relative error is max |actual - expected| over max |expected|, per tensor. */
#ifndef FTPIPE_GPU_CHECK_H
#define FTPIPE_GPU_CHECK_H

#include <math.h>
#include <stdint.h>

#include "check.h"
#include "ftpipe/backend/backend.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/formats/safetensors.h"

static ft_backend *cpu, *gpu;

/* GPU arrays of the current case, freed by gpu_release. */
static void *gpu_arrays[64];
static int n_gpu_arrays;

static inline void *gpu_array(size_t bytes)
{
    void *device = gpu->alloc(gpu, bytes);
    if (!device) {
        fprintf(stderr, "  %s\n", ft_error_message());
        abort();
    }
    if (n_gpu_arrays == (int)(sizeof gpu_arrays / sizeof *gpu_arrays))
        abort();
    gpu_arrays[n_gpu_arrays++] = device;
    gpu->zero(gpu, device, bytes);
    return device;
}

static inline void gpu_release(void)
{
    while (n_gpu_arrays > 0)
        gpu->free(gpu, gpu_arrays[--n_gpu_arrays]);
}

static inline void fill(float *x, size_t n, uint64_t seed, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)ft_random_normal(seed, i) * scale;
}

/* Rounds the host values to bf16 in place, so that both backends see the same
 * inputs, and puts them on the GPU. */
static inline void *to_gpu_bf16(float *host, size_t n)
{
    uint16_t *bits = ft_xmalloc(n * sizeof *bits);
    for (size_t i = 0; i < n; i++) {
        bits[i] = ft_f32_to_bf16(host[i]);
        host[i] = ft_bf16_to_f32(bits[i]);
    }
    void *device = gpu_array(n * sizeof *bits);
    gpu->upload(gpu, device, bits, n * sizeof *bits);
    free(bits);
    return device;
}

static inline void *to_gpu_bytes(const void *host, size_t bytes)
{
    void *device = gpu_array(bytes);
    gpu->upload(gpu, device, host, bytes);
    return device;
}

static inline void from_gpu_bf16(float *host, const void *device, size_t n)
{
    uint16_t *bits = ft_xmalloc(n * sizeof *bits);
    gpu->download(gpu, bits, device, n * sizeof *bits);
    for (size_t i = 0; i < n; i++)
        host[i] = ft_bf16_to_f32(bits[i]);
    free(bits);
}

static inline double relative_error(const float *actual, const float *expected, size_t n)
{
    double difference = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)actual[i] - expected[i]);
        difference = isnan(d) || d > difference ? d : difference;
        scale = fmax(scale, fabs((double)expected[i]));
    }
    return scale > 0.0 ? difference / scale : difference;
}

static inline double cosine(const float *a, const float *b, size_t n)
{
    double dot = 0.0, aa = 0.0, bb = 0.0;
    for (size_t i = 0; i < n; i++) {
        dot += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (aa == 0.0 && bb == 0.0)
        return 1.0;
    return dot / (sqrt(aa) * sqrt(bb));
}

#define CHECK_CLOSE(what, actual, expected, n, tolerance)                                              \
    do {                                                                                               \
        double error_ = relative_error(actual, expected, n);                                           \
        printf("# %-44s relative error %.2e\n", what, error_);                                        \
        if (!(error_ < (tolerance))) {                                                                 \
            fprintf(stderr, "  %s:%d: %s: relative error %.3g, allowed %.3g\n", __FILE__, __LINE__, what, \
                    error_, (double)(tolerance));                                                      \
            check_case_failed = 1;                                                                     \
        }                                                                                              \
    } while (0)

#define CHECK_NO_GPU_FAILURE()                                               \
    do {                                                                     \
        if (gpu->check(gpu) < 0) {                                           \
            fprintf(stderr, "  %s:%d: %s\n", __FILE__, __LINE__, ft_error_message()); \
            check_case_failed = 1;                                           \
        }                                                                    \
    } while (0)

/* Without a GPU the refusal is checked ("ok no_gpu_is_a_clear_error") and every
 * GPU case is reported as a skip, which tests/gpu/run.sh counts apart. */
#define GPU_RUN(name)                                  \
    do {                                               \
        if (gpu)                                       \
            RUN(name);                                 \
        else                                           \
            printf("ok %s # SKIP no GPU here\n", #name); \
    } while (0)

static inline int start_backends(void)
{
    cpu = ft_backend_cpu_create(0);
    if (ft_cuda_device_count() > 0) {
        gpu = ft_backend_cuda_create(0);
        if (!gpu) {
            fprintf(stderr, "  %s\n", ft_error_message());
            return -1;
        }
        return 1;
    }
    check_case_failed = 0;
    CHECK(ft_backend_cuda_create(0) == NULL);
    const char *message = ft_error_message();
    CHECK(strncmp(message, "no usable CUDA GPU: ", 20) == 0 ||
          strcmp(message, "no CUDA GPU found: use backend = cpu") == 0 ||
          strcmp(message, "this ftpipe was built without CUDA: install the CUDA toolkit (nvcc) and rebuild") == 0);
    printf("# no GPU here: %s\n", message);
    printf("%s no_gpu_is_a_clear_error\n", check_case_failed ? "not ok" : "ok");
    check_failed_cases += check_case_failed;
    return 0;
}

/* A loss against its reference within 1e-2 relative (bf16 against fp32), printed. */
static inline void gpu_check_loss(const char *what, double actual, double expected)
{
    double error = fabs(actual - expected) / fabs(expected);
    printf("# %-44s %.6f vs %.6f: relative error %.2e\n", what, actual, expected, error);
    if (!(error < 1e-2)) {
        fprintf(stderr, "  %s: loss %.6f, expected %.6f\n", what, actual, expected);
        check_case_failed = 1;
    }
}

#endif
