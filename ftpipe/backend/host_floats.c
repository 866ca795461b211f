/* host_floats: conversions through one host buffer of the backend's dtype. */
#include "ftpipe/backend/host_floats.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/dtype.h"
#include "ftpipe/base/mem.h"

void ft_backend_convert_floats(const ft_backend *backend, void *host, const float *floats, size_t count)
{
    if (backend->dtype == FT_DTYPE_F32) {
        memcpy(host, floats, count * sizeof(float));
        return;
    }
    uint16_t *converted = host;
    for (size_t i = 0; i < count; i++)
        converted[i] = ft_f32_to_bf16(floats[i]);
}

void ft_backend_upload_floats(ft_backend *backend, void *device, const float *floats, size_t count)
{
    if (backend->dtype == FT_DTYPE_F32) {
        backend->upload(backend, device, floats, count * sizeof(float));
        return;
    }
    uint16_t *converted = ft_xmalloc((count + 1) * sizeof(uint16_t));
    ft_backend_convert_floats(backend, converted, floats, count);
    backend->upload(backend, device, converted, count * sizeof(uint16_t));
    free(converted);
}

void ft_backend_download_floats(ft_backend *backend, float *floats, const void *device, size_t count)
{
    if (backend->dtype == FT_DTYPE_F32) {
        backend->download(backend, floats, device, count * sizeof(float));
        return;
    }
    uint16_t *stored = ft_xmalloc((count + 1) * sizeof(uint16_t));
    backend->download(backend, stored, device, count * sizeof(uint16_t));
    for (size_t i = 0; i < count; i++)
        floats[i] = ft_bf16_to_f32(stored[i]);
    free(stored);
}
