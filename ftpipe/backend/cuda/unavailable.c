/* cuda_unavailable: the cuda backend's entry points in a build made without the
 * CUDA toolkit, so that asking for it is a clear error instead of a link error. */
#include "ftpipe/backend/backend.h"
#include "ftpipe/backend/comm_nccl.h"
#include "ftpipe/base/error.h"

ft_backend *ft_backend_cuda_create(int device)
{
    ft_error("this ftpipe was built without CUDA: install the CUDA toolkit (nvcc) and rebuild");
    return NULL;
}

int ft_cuda_device_count(void) { return 0; }

ft_comm *ft_comm_nccl_create(ft_backend *cuda_backend, ft_comm *bootstrap)
{
    ft_error("this ftpipe was built without CUDA, so without NCCL: install the CUDA toolkit (nvcc) and rebuild");
    return NULL;
}
