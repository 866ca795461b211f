/* backend: the cuda backend's table, its GPU, stream and memory: allocations
 * with their sizes (for the peak), one scratch allocation carved by reserve
 * after checking the whole plan against the GPU's free memory, and the first
 * failure kept for check. Uploads are in upload.cu. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" {
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
}

/* Left free beside the plan for the CUDA context's and cuBLASLt's own needs. */
static const size_t memory_margin_bytes = (size_t)256 << 20;

void ft_cuda_fail(ft_cuda_context *context, const char *file, int line, const char *what, const char *reason)
{
    if (__atomic_exchange_n(&context->failed, true, __ATOMIC_ACQ_REL)) /* the side queue's thread fails too */
        return;
    snprintf(context->failure, sizeof context->failure, "%s:%d: %s: %s", file, line, what, reason);
}

void ft_cuda_check_cublas(ft_cuda_context *context, cublasStatus_t status, const char *what, const char *file,
                          int line)
{
    if (status != CUBLAS_STATUS_SUCCESS)
        ft_cuda_fail(context, file, line, what, context->cublaslt.status_string(status));
}

/* The GPU this thread last made current, so that an op on the same GPU as the
 * one before (the common case: one backend a thread) skips cudaSetDevice. Every
 * change of device in this backend goes through use_device. */
static __thread int current_device = -1;

static cudaError_t use_device(int device)
{
    if (device == current_device)
        return cudaSuccess;
    cudaError_t status = cudaSetDevice(device);
    current_device = status == cudaSuccess ? device : -1;
    return status;
}

ft_cuda_context *ft_cuda_enter(ft_backend *self)
{
    ft_cuda_context *context = (ft_cuda_context *)self->context;
    CUDA_CHECK(context, use_device(context->device));
    return context;
}

static void format_bytes(size_t bytes, char *out) { ft_format_bytes(bytes, out, 32); }

/* --- memory --- */

static void note_held(ft_cuda_context *context)
{
    size_t held = context->allocated_bytes + context->scratch_bytes;
    if (held > context->peak_bytes)
        context->peak_bytes = held;
}

static void *cuda_alloc(ft_backend *self, size_t bytes)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    void *pointer = NULL;
    cudaError_t status = cudaMalloc(&pointer, bytes ? bytes : 1);
    if (status != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky: clear it */
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        char want[32], have[32], total[32];
        format_bytes(bytes, want);
        format_bytes(free_bytes, have);
        format_bytes(total_bytes, total);
        ft_error("out of GPU memory: cannot allocate %s on GPU %d (%s), which has %s free of %s: reduce the batch "
                 "size or the sequence length",
                 want, context->device, context->properties.name, have, total);
        return NULL;
    }
    if (context->n_allocations == context->allocations_capacity)
        ft_grow((void **)&context->allocations, &context->allocations_capacity, context->n_allocations + 1,
                sizeof *context->allocations);
    context->allocations[context->n_allocations++] = {pointer, bytes};
    context->allocated_bytes += bytes;
    note_held(context);
    return pointer;
}

static void cuda_free(ft_backend *self, void *pointer)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (!pointer)
        return;
    for (size_t i = 0; i < context->n_allocations; i++)
        if (context->allocations[i].pointer == pointer) {
            context->allocated_bytes -= context->allocations[i].bytes;
            context->allocations[i] = context->allocations[--context->n_allocations];
            break;
        }
    CUDA_CHECK(context, cudaFree(pointer));
}

static void cuda_download(ft_backend *self, void *host, const void *device, size_t bytes)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (!bytes)
        return;
    cudaStream_t stream = ft_cuda_copy_stream(context);
    CUDA_CHECK(context, cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(context, cudaStreamSynchronize(stream));
}

/* Page-locked, so that offloaded state moves by DMA without a staging copy. */
static void *cuda_alloc_host(ft_backend *self, size_t bytes)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    void *pointer = NULL;
    if (cudaHostAlloc(&pointer, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError(); /* not sticky: clear it */
        char want[32];
        format_bytes(bytes, want);
        ft_error("cannot allocate %s of page-locked host memory for GPU %d (%s): free host memory, or raise the "
                 "locked-memory limit (ulimit -l)",
                 want, context->device, context->properties.name);
        return NULL;
    }
    return pointer;
}

static void cuda_free_host(ft_backend *self, void *pointer)
{
    ft_cuda_enter(self);
    if (pointer)
        cudaFreeHost(pointer);
}

static void cuda_zero(ft_backend *self, void *device, size_t bytes)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (bytes)
        CUDA_CHECK(context, cudaMemsetAsync(device, 0, bytes, context->stream));
}

/* Any direction (unified addressing); a copy touching host memory is waited for. */
static void cuda_copy(ft_backend *self, void *to, const void *from, size_t bytes)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (!bytes || to == from)
        return;
    cudaStream_t stream = ft_cuda_copy_stream(context);
    CUDA_CHECK(context, cudaMemcpyAsync(to, from, bytes, cudaMemcpyDefault, stream));
    if (ft_cuda_on_host(to) || ft_cuda_on_host(from))
        CUDA_CHECK(context, cudaStreamSynchronize(stream));
}

static void cuda_copy_queued(ft_backend *self, void *to, const void *from, size_t bytes)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (bytes && to != from)
        CUDA_CHECK(context, cudaMemcpyAsync(to, from, bytes, cudaMemcpyDefault, ft_cuda_copy_stream(context)));
}

bool ft_cuda_on_host(const void *pointer)
{
    cudaPointerAttributes attributes;
    if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) {
        cudaGetLastError(); /* an unregistered host pointer's query fails on older drivers: not sticky */
        return true;
    }
    return attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged;
}

/* full fine-tuning's bf16 weights from their float master copy */
static void cuda_cast_from_float(ft_backend *self, void *dst, const float *src, size_t n)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (n)
        ft_cuda_to_bf16(context, (bf16 *)dst, src, n);
}

/* --- scratch --- */

/* Carves the scratch for these limits from `base` (NULL: only measures), in
 * the slices cuda_scratch.h sizes. */
static size_t lay_out_scratch(const ft_backend_limits *limits, char *base, ft_cuda_scratch *out)
{
    size_t bytes[FT_SCRATCH_SLICES], used = 0;
    void *slice[FT_SCRATCH_SLICES];
    ft_cuda_scratch_slice_bytes(limits, bytes);
    for (int i = 0; i < FT_SCRATCH_SLICES; i++) {
        slice[i] = base && bytes[i] ? base + used : NULL;
        used += ft_cuda_scratch_aligned(bytes[i]);
    }
    if (out) {
        ft_cuda_scratch s = {};
        s.gemm_workspace = slice[FT_SCRATCH_GEMM_WORKSPACE];
        s.gemm_workspace_bytes = bytes[FT_SCRATCH_GEMM_WORKSPACE];
        s.lora_a = (bf16 *)slice[FT_SCRATCH_LORA_A];
        s.lora_b = (bf16 *)slice[FT_SCRATCH_LORA_B];
        s.lora_grad_xa = (bf16 *)slice[FT_SCRATCH_LORA_GRAD_XA];
        s.lora_dropped = (bf16 *)slice[FT_SCRATCH_LORA_DROPPED];
        s.attention_grad_k_part = (float *)slice[FT_SCRATCH_ATTENTION_GRAD_K_PART];
        s.attention_grad_v_part = (float *)slice[FT_SCRATCH_ATTENTION_GRAD_V_PART];
        s.attention_delta = (float *)slice[FT_SCRATCH_ATTENTION_DELTA];
        s.sum_parts = (double *)slice[FT_SCRATCH_SUM_PARTS];
        s.tensor_sums = (double *)slice[FT_SCRATCH_TENSOR_SUMS];
        s.norm_weight_parts = (float *)slice[FT_SCRATCH_NORM_WEIGHT_PARTS];
        *out = s;
    }
    return used;
}

static int max_int(int a, int b) { return a > b ? a : b; }

static int cuda_reserve(ft_backend *self, const ft_backend_limits *limits)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    if (limits->head_dim > 0) {
        if (!ft_cuda_attention_supports(limits->head_dim))
            return ft_error("head_dim %d is not supported by the cuda backend's attention (it runs 16, 32, 64 and "
                            "128): use backend = cpu",
                            limits->head_dim);
        if (ft_cuda_attention_prepare(context, limits->head_dim) < 0)
            return -1;
    }
    if (limits->vision_head_dim > 0) {
        if (!ft_cuda_bidirectional_attention_supports(limits->vision_head_dim))
            return ft_error("the vision tower's head_dim %d is not supported by the cuda backend's attention (it "
                            "runs up to 256): use backend = cpu", limits->vision_head_dim);
        if (ft_cuda_bidirectional_attention_prepare(context, limits->vision_head_dim) < 0)
            return -1;
    }
    /* Scratch serves every model loaded so far: the largest of each limit. */
    ft_backend_limits merged = context->limits;
    merged.max_rows = max_int(merged.max_rows, limits->max_rows);
    merged.max_seq_len = max_int(merged.max_seq_len, limits->max_seq_len);
    merged.max_features = max_int(merged.max_features, limits->max_features);
    merged.max_rank = max_int(merged.max_rank, limits->max_rank);
    merged.head_dim = max_int(merged.head_dim, limits->head_dim);
    merged.max_heads = max_int(merged.max_heads, limits->max_heads);
    merged.lora_dropout = merged.lora_dropout || limits->lora_dropout;
    size_t scratch_bytes = lay_out_scratch(&merged, NULL, NULL);
    size_t new_scratch_bytes = scratch_bytes > context->scratch_bytes ? scratch_bytes : 0;

    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(context, cudaMemGetInfo(&free_bytes, &total_bytes));
    size_t available = free_bytes + (new_scratch_bytes ? context->scratch_bytes : 0);
    size_t needed = limits->planned_bytes + (new_scratch_bytes ? new_scratch_bytes : 0) + memory_margin_bytes;
    if (needed > available) {
        char plan[32], scratch[32], margin[32], have[32], total[32];
        format_bytes(limits->planned_bytes, plan);
        format_bytes(scratch_bytes, scratch);
        format_bytes(memory_margin_bytes, margin);
        format_bytes(available, have);
        format_bytes(total_bytes, total);
        return ft_error("the plan does not fit GPU %d (%s): it needs %s (weights, adapter, gradients, optimizer and "
                        "activations) + %s of scratch + %s kept free, and the GPU has %s free of %s: reduce the "
                        "batch size or the sequence length",
                        context->device, context->properties.name, plan, scratch, margin, have, total);
    }
    if (!new_scratch_bytes) {
        context->limits = merged;
        lay_out_scratch(&merged, (char *)context->scratch_memory, &context->scratch);
        return 0;
    }
    if (context->scratch_memory) {
        CUDA_CHECK(context, cudaStreamSynchronize(context->stream));
        CUDA_CHECK(context, cudaFree(context->scratch_memory));
        context->scratch_memory = NULL;
        context->scratch_bytes = 0;
    }
    if (cudaMalloc(&context->scratch_memory, scratch_bytes) != cudaSuccess) {
        cudaGetLastError();
        char scratch[32];
        format_bytes(scratch_bytes, scratch);
        return ft_error("out of GPU memory reserving the cuda backend's %s of scratch on GPU %d (%s)", scratch,
                        context->device, context->properties.name);
    }
    context->scratch_bytes = scratch_bytes;
    context->limits = merged;
    lay_out_scratch(&merged, (char *)context->scratch_memory, &context->scratch);
    note_held(context);
    return 0;
}

static size_t cuda_reserved_bytes(const ft_backend *self)
{
    return ((const ft_cuda_context *)self->context)->scratch_bytes;
}

static size_t cuda_peak_bytes(const ft_backend *self) { return ((const ft_cuda_context *)self->context)->peak_bytes; }

static int cuda_check(ft_backend *self)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    CUDA_CHECK(context, cudaStreamSynchronize(context->stream));
    CUDA_CHECK(context, cudaGetLastError());
    if (context->failed)
        return ft_error("the cuda backend failed on GPU %d (%s): %s", context->device, context->properties.name,
                        context->failure);
    return 0;
}

/* --- the side queue --- */

/* The context whose side stream this thread chose (use_side_queue). */
static __thread const ft_cuda_context *side_of = NULL;

cudaStream_t ft_cuda_copy_stream(const ft_cuda_context *context)
{
    return side_of == context ? context->side_stream : context->stream;
}

static void cuda_use_side_queue(ft_backend *self, bool side)
{
    const ft_cuda_context *context = ft_cuda_enter(self);
    side_of = side ? context : NULL;
}

static ft_backend_event *cuda_event_new(ft_backend *self)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    cudaEvent_t event = NULL;
    if (cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess) {
        ft_error("cannot create a CUDA event on GPU %d: %s", context->device, cudaGetErrorString(cudaGetLastError()));
        return NULL;
    }
    return (ft_backend_event *)event;
}

static void cuda_event_free(ft_backend *self, ft_backend_event *event)
{
    ft_cuda_enter(self);
    if (event)
        cudaEventDestroy((cudaEvent_t)event);
}

static void cuda_event_record(ft_backend *self, ft_backend_event *event)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    CUDA_CHECK(context, cudaEventRecord((cudaEvent_t)event, ft_cuda_copy_stream(context)));
}

static void cuda_event_wait(ft_backend *self, ft_backend_event *event)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    CUDA_CHECK(context, cudaStreamWaitEvent(ft_cuda_copy_stream(context), (cudaEvent_t)event, 0));
}

static void cuda_event_sync(ft_backend *self, ft_backend_event *event)
{
    ft_cuda_context *context = ft_cuda_enter(self);
    CUDA_CHECK(context, cudaEventSynchronize((cudaEvent_t)event));
}

/* --- making and destroying --- */

static void cuda_destroy(ft_backend *self)
{
    ft_cuda_context *context = (ft_cuda_context *)self->context;
    use_device(context->device);
    cudaStreamSynchronize(context->stream);
    if (context->side_stream)
        cudaStreamSynchronize(context->side_stream);
    for (size_t i = 0; i < context->n_allocations; i++)
        cudaFree(context->allocations[i].pointer);
    free(context->allocations);
    cudaFree(context->scratch_memory);
    ft_cuda_upload_stop(context);
    ft_gemm_plan_cache_free(context);
    if (context->lt)
        context->cublaslt.destroy(context->lt);
    ft_cublaslt_close(&context->cublaslt);
    if (context->stream)
        cudaStreamDestroy(context->stream);
    if (context->side_stream)
        cudaStreamDestroy(context->side_stream);
    free(context);
    free(self);
}

extern "C" int ft_cuda_device_count(void)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}

__global__ void probe_kernel() {}

/* The GPU exists, has bf16 tensor cores, and runs this build's kernels. */
static int open_device(int device, cudaDeviceProp *properties)
{
    int count = 0;
    cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess)
        cudaGetLastError();
    if (status == cudaErrorInsufficientDriver)
        return ft_error("no usable CUDA GPU: the NVIDIA driver is missing, or older than this ftpipe's CUDA %d.%d "
                        "needs: install or update the driver, or use backend = cpu",
                        CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    if (status != cudaSuccess && status != cudaErrorNoDevice)
        return ft_error("no usable CUDA GPU: %s: check the NVIDIA driver, or use backend = cpu",
                        cudaGetErrorString(status));
    if (status == cudaErrorNoDevice || count == 0)
        return ft_error("no CUDA GPU found: use backend = cpu");
    if (device < 0 || device >= count)
        return ft_error("GPU %d does not exist: this machine has %d (0..%d)", device, count, count - 1);
    if (cudaGetDeviceProperties(properties, device) != cudaSuccess || use_device(device) != cudaSuccess)
        return ft_error("GPU %d cannot be opened: %s", device, cudaGetErrorString(cudaGetLastError()));
    if (properties->major < 8)
        return ft_error("GPU %d (%s) has compute capability %d.%d; the cuda backend needs 8.0 or later (bf16 "
                        "tensor cores): use backend = cpu",
                        device, properties->name, properties->major, properties->minor);
    cudaFuncAttributes attributes;
    if (cudaFuncGetAttributes(&attributes, probe_kernel) != cudaSuccess) {
        cudaGetLastError();
        return ft_error("this ftpipe's CUDA code was built for sm_90 and the GPU of the machine that built it, not "
                        "for GPU %d (%s, sm_%d%d): rebuild ftpipe on a machine with this GPU",
                        device, properties->name, properties->major, properties->minor);
    }
    return 0;
}

extern "C" ft_backend *ft_backend_cuda_create(int device)
{
    cudaDeviceProp properties;
    if (open_device(device, &properties) < 0)
        return NULL;
    ft_cuda_context *context = (ft_cuda_context *)ft_xcalloc(1, sizeof *context);
    context->device = device;
    context->properties = properties;
    ft_backend *backend = (ft_backend *)ft_xcalloc(1, sizeof *backend);
    backend->context = context;
    backend->destroy = cuda_destroy;
    if (ft_cublaslt_open(&context->cublaslt) < 0) {
        cuda_destroy(backend);
        return NULL;
    }
    bool ready = cudaStreamCreateWithFlags(&context->stream, cudaStreamNonBlocking) == cudaSuccess &&
                 cudaStreamCreateWithFlags(&context->side_stream, cudaStreamNonBlocking) == cudaSuccess &&
                 context->cublaslt.create(&context->lt) == CUBLAS_STATUS_SUCCESS &&
                 ft_cuda_upload_start(context) == 0;
    if (!ready) {
        ft_error("cannot start the cuda backend on GPU %d (%s): %s", device, properties.name,
                 cudaGetErrorString(cudaGetLastError()));
        cuda_destroy(backend);
        return NULL;
    }
    backend->name = "cuda";
    backend->dtype = FT_DTYPE_BF16;
    backend->alloc = cuda_alloc;
    backend->free = cuda_free;
    backend->upload = ft_cuda_upload;
    backend->download = cuda_download;
    backend->zero = cuda_zero;
    backend->copy = cuda_copy;
    backend->copy_queued = cuda_copy_queued;
    backend->alloc_host = cuda_alloc_host;
    backend->free_host = cuda_free_host;
    backend->reserve = cuda_reserve;
    backend->reserved_bytes = cuda_reserved_bytes;
    backend->peak_bytes = cuda_peak_bytes;
    backend->check = cuda_check;
    backend->use_side_queue = cuda_use_side_queue;
    backend->event_new = cuda_event_new;
    backend->event_free = cuda_event_free;
    backend->event_record = cuda_event_record;
    backend->event_wait = cuda_event_wait;
    backend->event_sync = cuda_event_sync;
    backend->embedding_forward = ft_cuda_embedding_forward;
    backend->embedding_backward = ft_cuda_embedding_backward;
    backend->rmsnorm_forward = ft_cuda_rmsnorm_forward;
    backend->add_rmsnorm_forward = ft_cuda_add_rmsnorm_forward;
    backend->rmsnorm_backward = ft_cuda_rmsnorm_backward;
    backend->rope_forward = ft_cuda_rope_forward;
    backend->rope_backward = ft_cuda_rope_backward;
    backend->layernorm_forward = ft_cuda_layernorm_forward;
    backend->activation_forward = ft_cuda_activation_forward;
    backend->activation_backward = ft_cuda_activation_backward;
    backend->add_forward = ft_cuda_add_forward;
    backend->swiglu_forward = ft_cuda_swiglu_forward;
    backend->swiglu_backward = ft_cuda_swiglu_backward;
    backend->linear_forward = ft_cuda_linear_forward;
    backend->linear_backward = ft_cuda_linear_backward;
    backend->attention_forward = ft_cuda_attention_forward;
    backend->attention_backward = ft_cuda_attention_backward;
    backend->gather_rows = ft_cuda_gather_rows;
    backend->argmax_rows = ft_cuda_argmax_rows;
    backend->scatter_rows = ft_cuda_scatter_rows;
    backend->attention_decode = ft_cuda_attention_decode;
    backend->cross_entropy = ft_cuda_cross_entropy;
    backend->adamw = ft_cuda_adamw;
    backend->sum_squares = ft_cuda_sum_squares;
    backend->scale = ft_cuda_scale;
    backend->add_floats = ft_cuda_add_floats;
    backend->cast_from_float = cuda_cast_from_float;
    return backend;
}
