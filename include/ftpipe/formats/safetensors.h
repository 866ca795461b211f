/* safetensors: Hugging Face's tensor files, read by mmap and written atomically.
 *
 * The reader validates the whole header before serving anything: its length,
 * its JSON, each dtype, shape against byte size, offsets inside the data and not
 * overlapping. A sharded model (model.safetensors.index.json) opens as one set.
 * Errors name the file and the tensor. */
#ifndef FTPIPE_SAFETENSORS_H
#define FTPIPE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/dtype.h"

#define FT_MAX_DIMS 8

typedef struct {
    const char *name;        /* owned by the file */
    ft_dtype dtype;
    int n_dims;
    int64_t shape[FT_MAX_DIMS];
    const void *data;        /* into the mapping */
    size_t size_bytes;
    const char *file;        /* which file holds it */
} ft_tensor_view;

typedef struct ft_safetensors ft_safetensors;

/* path: a .safetensors file, an index .json, or a model folder (which holds
 * model.safetensors or model.safetensors.index.json). */
int ft_safetensors_open(const char *path, ft_safetensors **out);
void ft_safetensors_close(ft_safetensors *set);
size_t ft_safetensors_count(const ft_safetensors *set);
/* In header order, shards in file-name order; NULL past the end. */
const ft_tensor_view *ft_safetensors_at(const ft_safetensors *set, size_t index);
/* NULL (and ft_error naming the tensor and files) when absent. */
const ft_tensor_view *ft_safetensors_find(const ft_safetensors *set, const char *name);


/* Converts a tensor of F32, F16 or BF16 to float. out holds its element count. */
int ft_tensor_to_f32(const ft_tensor_view *tensor, float *out);

/* Writing: collect tensors, then write them in one go, byte for byte as the
 * safetensors library does: widest dtype first, then by name, so each tensor's
 * data is aligned to its element size; header padded with spaces to a multiple
 * of 8; PATH.tmp.PID, fsync, rename. Tensors' data must stay alive until
 * ft_safetensors_write returns. */
typedef struct {
    const char *name;
    ft_dtype dtype;
    int n_dims;
    int64_t shape[FT_MAX_DIMS];
    const void *data;
} ft_tensor_to_write;

/* metadata: optional string pairs for "__metadata__" (keys then values), may be NULL. */
int ft_safetensors_write(const char *path, const ft_tensor_to_write *tensors, size_t count,
                         const char *const *metadata_keys, const char *const *metadata_values,
                         size_t n_metadata);

/* The same file, its tensors made one at a time (an adapter merged into a
 * model far larger than memory): each tensor whose data is NULL is made by
 * produce into a buffer of at least its byte size (index: into tensors as
 * given) just before it is written; one buffer, as large as the largest
 * produced tensor, serves them all and is freed at the end. produce returns 0,
 * or -1 with ft_error set, which stops the writing and leaves no file. */
typedef int (*ft_tensor_producer)(void *context, size_t index, void *buffer, size_t size_bytes);
/* The order the writer puts these tensors in (and produces them, skipping
 * those without bytes): order[k] is the index of the k-th. */
void ft_safetensors_write_order(const ft_tensor_to_write *tensors, size_t count, size_t *order);
int ft_safetensors_write_produced(const char *path, const ft_tensor_to_write *tensors, size_t count,
                                  const char *const *metadata_keys, const char *const *metadata_values,
                                  size_t n_metadata, ft_tensor_producer produce, void *context);
/* The same file byte for byte, its tensors produced in the order given
 * (index 0 first) rather than the file's, each written at its place: for a
 * producer whose source must be read in that order (ZeRO-3's units). */
int ft_safetensors_write_produced_in_order(const char *path, const ft_tensor_to_write *tensors, size_t count,
                                           const char *const *metadata_keys, const char *const *metadata_values,
                                           size_t n_metadata, ft_tensor_producer produce, void *context);

#endif
