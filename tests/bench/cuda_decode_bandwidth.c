/* The cuda backend's decode attention at batch 32 with long caches: microseconds
 * per call and the rate at which it reads the KV cache (every K and V element of
 * every position of every sequence, once). A measurement, not a test: it prints
 * figures and fails only when the GPU does. Built by `make gpu-tests`; run by
 * tests/bench/cuda_decode_bandwidth.sh. */
#include "gpu_check.h"
#include "ftpipe/base/clock.h"

/* Scratch for splitting the cache, as a model of batch x max_len tokens reserves it. */
static void reserve_for(int batch, int max_len, int heads, int head_dim)
{
    ft_backend_limits limits = {.max_rows = batch * max_len, .max_seq_len = max_len, .max_features = 64,
                                .head_dim = head_dim, .max_heads = heads};
    if (gpu->reserve(gpu, &limits) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
    }
}

/* Reads of the cache over time: K and V of every position of every sequence. */
static void time_decode(int batch, int length, int heads, int kv_heads, int head_dim)
{
    size_t nq = (size_t)batch * heads * head_dim, ncache = (size_t)batch * length * kv_heads * head_dim;
    void *dq = gpu_array(nq * 2), *dout = gpu_array(nq * 2), *dk = gpu_array(ncache * 2), *dv = gpu_array(ncache * 2);
    int32_t *lengths = ft_xmalloc(batch * sizeof(int32_t));
    for (int b = 0; b < batch; b++)
        lengths[b] = length;
    int32_t *dlengths = to_gpu_bytes(lengths, batch * sizeof(int32_t));
    enum { REPEATS = 50 };
    gpu->attention_decode(gpu, dout, dq, dk, dv, dlengths, batch, length, heads, kv_heads, head_dim);
    gpu->check(gpu);
    uint64_t started = ft_now_ns();
    for (int i = 0; i < REPEATS; i++)
        gpu->attention_decode(gpu, dout, dq, dk, dv, dlengths, batch, length, heads, kv_heads, head_dim);
    CHECK_NO_GPU_FAILURE();
    double seconds = (double)(ft_now_ns() - started) * 1e-9 / REPEATS;
    printf("# decode %dx%d heads %d/%d dim %d: %.1f us, cache read at %.0f GB/s\n", batch, length, heads, kv_heads,
           head_dim, seconds * 1e6, 2.0 * ncache * 2 / seconds * 1e-9);
    gpu_release();
    free(lengths);
}

int main(void)
{
    int started = start_backends();
    if (started <= 0)
        return started < 0 ? 1 : 77; /* no GPU: skipped */
    reserve_for(32, 8192, 32, 128);
    time_decode(32, 256, 14, 2, 64);
    time_decode(32, 4096, 14, 2, 64);
    time_decode(32, 4096, 12, 2, 128);
    time_decode(32, 8192, 28, 4, 128);
    ft_backend_destroy(gpu);
    ft_backend_destroy(cpu);
    return check_case_failed;
}
