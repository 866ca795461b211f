/* comm_nccl: collectives over NCCL on the cuda backend's stream (the side stream for a thread that chose it). */
#include <dlfcn.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" {
#include "ftpipe/backend/comm_nccl.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
}

/* NCCL, opened at run time. */
struct nccl_api {
    void *library;
    decltype(&ncclGetUniqueId) get_unique_id;
    decltype(&ncclCommInitRank) init_rank;
    decltype(&ncclCommDestroy) destroy;
    decltype(&ncclCommAbort) abort;
    decltype(&ncclAllReduce) all_reduce;
    decltype(&ncclBroadcast) broadcast;
    decltype(&ncclAllGather) all_gather;
    decltype(&ncclReduceScatter) reduce_scatter;
    decltype(&ncclGetErrorString) error_string;
};

struct nccl_comm {
    nccl_api api;
    ncclComm_t comm;
    ft_backend *backend;
    ft_cuda_context *cuda;
    void *staging;          /* device copy of host buffers */
    size_t staging_bytes;
};

static int open_nccl(nccl_api *api)
{
    const char *names[] = {"libnccl.so.2", "/usr/local/cuda/lib/libnccl.so.2", "/usr/local/cuda/lib64/libnccl.so.2"};
    for (size_t i = 0; i < sizeof names / sizeof *names && !api->library; i++)
        api->library = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!api->library)
        return ft_error("cannot load libnccl.so.2 (NCCL %d): install NCCL, or add the folder holding it to "
                        "LD_LIBRARY_PATH (%s)",
                        NCCL_MAJOR, dlerror());
    struct {
        void **slot;
        const char *symbol;
    } functions[] = {
        {(void **)&api->get_unique_id, "ncclGetUniqueId"},  {(void **)&api->init_rank, "ncclCommInitRank"},
        {(void **)&api->destroy, "ncclCommDestroy"},        {(void **)&api->abort, "ncclCommAbort"},
        {(void **)&api->all_reduce, "ncclAllReduce"},       {(void **)&api->broadcast, "ncclBroadcast"},
        {(void **)&api->all_gather, "ncclAllGather"},       {(void **)&api->reduce_scatter, "ncclReduceScatter"},
        {(void **)&api->error_string, "ncclGetErrorString"},
    };
    for (size_t i = 0; i < sizeof functions / sizeof *functions; i++) {
        *functions[i].slot = dlsym(api->library, functions[i].symbol);
        if (!*functions[i].slot)
            return ft_error("libnccl.so.2 lacks %s: install NCCL %d", functions[i].symbol, NCCL_MAJOR);
    }
    return 0;
}

static int nccl_failed(nccl_comm *c, ncclResult_t result, const char *what)
{
    return ft_error("NCCL %s on GPU %d failed: %s", what, c->cuda->device, c->api.error_string(result));
}

static ncclDataType_t nccl_type(ft_comm_dtype dtype) { return dtype == FT_COMM_F64 ? ncclFloat64 : ncclFloat32; }
static size_t dtype_bytes(ft_comm_dtype dtype) { return dtype == FT_COMM_F64 ? sizeof(double) : sizeof(float); }


/* A device buffer for `bytes` of host data (grown as needed). */
static void *staging(nccl_comm *c, size_t bytes)
{
    if (bytes > c->staging_bytes) {
        cudaFree(c->staging);
        c->staging = NULL;
        c->staging_bytes = 0;
        if (cudaMalloc(&c->staging, bytes) != cudaSuccess) {
            ft_error("cannot allocate %zu bytes on GPU %d for a collective", bytes, c->cuda->device);
            return NULL;
        }
        c->staging_bytes = bytes;
    }
    return c->staging;
}

/* Runs `call` on device copies of host buffers when they are on the host. */
template <typename Call>
static int with_device_buffers(nccl_comm *c, const void *in, size_t in_bytes, void *out, size_t out_bytes,
                               const char *what, Call call)
{
    ft_cuda_enter(c->backend);
    bool host = ft_cuda_on_host(out) || (in && ft_cuda_on_host(in));
    const void *device_in = in;
    void *device_out = out;
    if (host) {
        char *buffer = (char *)staging(c, in_bytes + out_bytes);
        if (!buffer)
            return -1;
        device_out = buffer + in_bytes;
        if (in) {
            device_in = buffer;
            cudaMemcpyAsync(buffer, in, in_bytes, cudaMemcpyHostToDevice, ft_cuda_copy_stream(c->cuda));
        } else {
            cudaMemcpyAsync(device_out, out, out_bytes, cudaMemcpyHostToDevice, ft_cuda_copy_stream(c->cuda));
        }
    }
    ncclResult_t result = call(device_in, device_out);
    if (result != ncclSuccess)
        return nccl_failed(c, result, what);
    if (host) {
        cudaMemcpyAsync(out, device_out, out_bytes, cudaMemcpyDeviceToHost, ft_cuda_copy_stream(c->cuda));
        if (cudaStreamSynchronize(ft_cuda_copy_stream(c->cuda)) != cudaSuccess)
            return ft_error("GPU %d failed during an NCCL %s: %s", c->cuda->device, what,
                            cudaGetErrorString(cudaGetLastError()));
    }
    return 0;
}

static int all_reduce_sum(ft_comm *self, void *data, size_t count, ft_comm_dtype dtype)
{
    nccl_comm *c = (nccl_comm *)self->context;
    size_t bytes = count * dtype_bytes(dtype);
    return with_device_buffers(c, NULL, 0, data, bytes, "all-reduce", [&](const void *, void *out) {
        return c->api.all_reduce(out, out, count, nccl_type(dtype), ncclSum, c->comm, ft_cuda_copy_stream(c->cuda));
    });
}

static int broadcast(ft_comm *self, void *data, size_t bytes, int root)
{
    nccl_comm *c = (nccl_comm *)self->context;
    return with_device_buffers(c, NULL, 0, data, bytes, "broadcast", [&](const void *, void *out) {
        return c->api.broadcast(out, out, bytes, ncclUint8, root, c->comm, ft_cuda_copy_stream(c->cuda));
    });
}

static int all_gather(ft_comm *self, const void *in, void *out, size_t bytes)
{
    nccl_comm *c = (nccl_comm *)self->context;
    size_t total = bytes * (size_t)self->size;
    return with_device_buffers(c, in, bytes, out, total, "all-gather", [&](const void *device_in, void *device_out) {
        return c->api.all_gather(device_in, device_out, bytes, ncclUint8, c->comm, ft_cuda_copy_stream(c->cuda));
    });
}

static int reduce_scatter_sum(ft_comm *self, const void *in, void *out, size_t count, ft_comm_dtype dtype)
{
    nccl_comm *c = (nccl_comm *)self->context;
    size_t element = dtype_bytes(dtype);
    return with_device_buffers(c, in, count * (size_t)self->size * element, out, count * element, "reduce-scatter",
                               [&](const void *device_in, void *device_out) {
                                   return c->api.reduce_scatter(device_in, device_out, count, nccl_type(dtype),
                                                                ncclSum, c->comm, ft_cuda_copy_stream(c->cuda));
                               });
}

static void abort_comm(ft_comm *self)
{
    nccl_comm *c = (nccl_comm *)self->context;
    if (c->comm) {
        c->api.abort(c->comm);
        c->comm = NULL;
    }
}

static void destroy(ft_comm *self)
{
    nccl_comm *c = (nccl_comm *)self->context;
    if (c->comm)
        c->api.destroy(c->comm);
    cudaFree(c->staging);
    if (c->api.library)
        dlclose(c->api.library);
    free(c);
    free(self);
}

extern "C" ft_comm *ft_comm_nccl_create(ft_backend *cuda_backend, ft_comm *bootstrap)
{
    if (strcmp(cuda_backend->name, "cuda") != 0) {
        ft_error("NCCL needs the cuda backend, not %s", cuda_backend->name);
        return NULL;
    }
    nccl_comm *c = (nccl_comm *)ft_xcalloc(1, sizeof *c);
    c->backend = cuda_backend;
    c->cuda = ft_cuda_enter(cuda_backend);
    ft_comm *comm = (ft_comm *)ft_xcalloc(1, sizeof *comm);
    *comm = ft_comm{"nccl", bootstrap->rank, bootstrap->size, -1, c, all_reduce_sum, broadcast, all_gather,
                    reduce_scatter_sum, abort_comm, destroy};
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    ncclResult_t result = ncclSuccess;
    if (open_nccl(&c->api) < 0)
        goto failed;
    if (bootstrap->rank == 0 && (result = c->api.get_unique_id(&id)) != ncclSuccess) {
        nccl_failed(c, result, "id creation");
        goto failed;
    }
    if (bootstrap->broadcast(bootstrap, &id, sizeof id, 0) < 0) {
        ft_error_context("sending the NCCL id to the ranks");
        goto failed;
    }
    result = c->api.init_rank(&c->comm, bootstrap->size, id, bootstrap->rank);
    if (result != ncclSuccess) {
        c->comm = NULL;
        nccl_failed(c, result, "communicator set-up (check NCCL_SOCKET_IFNAME and that the nodes reach each other)");
        goto failed;
    }
    return comm;
failed:
    destroy(comm);
    return NULL;
}
