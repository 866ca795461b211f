/* host_floats: host float arrays to and from a backend's memory in its dtype
 * (copied as they are on an fp32 backend, rounded to bf16 on the way up and
 * widened on the way down on a bf16 one), for what the model computes on the
 * host: image pixels in, image features out, frozen weights read as float. */
#ifndef FTPIPE_HOST_FLOATS_H
#define FTPIPE_HOST_FLOATS_H

#include <stddef.h>

#include "ftpipe/backend/backend.h"

/* device[0..count) = floats[0..count), in the backend's dtype. */
void ft_backend_upload_floats(ft_backend *backend, void *device, const float *floats, size_t count);
/* host[0..count) = floats[0..count), in the backend's dtype, both in host memory. */
void ft_backend_convert_floats(const ft_backend *backend, void *host, const float *floats, size_t count);
/* floats[0..count) = device[0..count), from the backend's dtype. */
void ft_backend_download_floats(ft_backend *backend, float *floats, const void *device, size_t count);

#endif
