/* safetensors: the writer. Output matches the safetensors library's byte for byte:
 * tensors ordered by dtype alignment (largest first) then name, data contiguous in
 * that order, a compact JSON header padded with spaces to a multiple of 8. */
#include "ftpipe/formats/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

/* Position in the safetensors library's Dtype enum, which is in increasing alignment;
 * sorting by it (descending) keeps every tensor's data aligned to its element size. */
static int library_rank(ft_dtype dtype)
{
    switch (dtype) {
    case FT_DTYPE_BOOL: return 0;
    case FT_DTYPE_U8: return 1;
    case FT_DTYPE_I8: return 2;
    case FT_DTYPE_I16: return 3;
    case FT_DTYPE_F16: return 4;
    case FT_DTYPE_BF16: return 5;
    case FT_DTYPE_I32: return 6;
    case FT_DTYPE_F32: return 7;
    case FT_DTYPE_F64: return 8;
    case FT_DTYPE_I64: return 9;
    }
    return -1;
}

typedef struct {
    const ft_tensor_to_write *tensor;
    uint64_t size_bytes;
    uint64_t offset;        /* in the data, after the header */
} planned_tensor;

static int compare_planned(const void *a, const void *b)
{
    const ft_tensor_to_write *left = ((const planned_tensor *)a)->tensor;
    const ft_tensor_to_write *right = ((const planned_tensor *)b)->tensor;
    int rank_left = library_rank(left->dtype), rank_right = library_rank(right->dtype);
    if (rank_left != rank_right)
        return rank_right - rank_left;
    return strcmp(left->name, right->name);
}

static int check_tensor(const char *path, const ft_tensor_to_write *tensor, bool produced, uint64_t *size_bytes)
{
    if (strcmp(tensor->name, "__metadata__") == 0)
        return ft_error("%s: tensor __metadata__: the name is reserved for the header's metadata", path);
    if (library_rank(tensor->dtype) < 0)
        return ft_error("%s: tensor %s: unknown dtype %d", path, tensor->name, (int)tensor->dtype);
    if (tensor->n_dims < 0 || tensor->n_dims > FT_MAX_DIMS)
        return ft_error("%s: tensor %s: %d dimensions; 0 to %d are supported", path, tensor->name,
                        tensor->n_dims, FT_MAX_DIMS);
    uint64_t bytes = ft_dtype_size(tensor->dtype);
    for (int d = 0; d < tensor->n_dims; d++) {
        if (tensor->shape[d] < 0)
            return ft_error("%s: tensor %s: shape[%d] is %" PRId64 ", negative", path, tensor->name, d,
                            tensor->shape[d]);
        if (__builtin_mul_overflow(bytes, (uint64_t)tensor->shape[d], &bytes))
            return ft_error("%s: tensor %s: shape's byte size overflows 64 bits", path, tensor->name);
    }
    if (bytes > 0 && !tensor->data && !produced)
        return ft_error("%s: tensor %s: no data", path, tensor->name);
    *size_bytes = bytes;
    return 0;
}

static json_t *tensor_entry(const ft_tensor_to_write *tensor, uint64_t begin, uint64_t end)
{
    json_t *shape = json_array();
    for (int d = 0; d < tensor->n_dims; d++)
        json_array_append_new(shape, json_integer(tensor->shape[d]));
    json_t *entry = json_object();
    json_object_set_new(entry, "dtype", json_string(ft_dtype_name(tensor->dtype)));
    json_object_set_new(entry, "shape", shape);
    json_object_set_new(entry, "data_offsets", json_pack("[II]", (json_int_t)begin, (json_int_t)end));
    return entry;
}

/* The header text, padded; NULL with ft_error set when a tensor is invalid. */
static char *build_header(const char *path, planned_tensor *plan, size_t count,
                          const char *const *metadata_keys, const char *const *metadata_values,
                          size_t n_metadata, size_t *header_bytes)
{
    json_t *root = json_object();
    if (n_metadata > 0) {
        json_t *metadata = json_object();
        json_object_set_new(root, "__metadata__", metadata);
        for (size_t i = 0; i < n_metadata; i++)
            if (json_object_set_new(metadata, metadata_keys[i], json_string(metadata_values[i])) != 0) {
                json_decref(root);
                ft_error("%s: header: metadata entry '%s' is not valid UTF-8", path, metadata_keys[i]);
                return NULL;
            }
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        const ft_tensor_to_write *tensor = plan[i].tensor;
        if (json_object_get(root, tensor->name)) {
            json_decref(root);
            ft_error("%s: tensor %s: given twice", path, tensor->name);
            return NULL;
        }
        json_t *entry = tensor_entry(tensor, offset, offset + plan[i].size_bytes);
        if (json_object_set_new(root, tensor->name, entry) != 0) {
            json_decref(root);
            ft_error("%s: tensor %s: the name is not valid UTF-8", path, tensor->name);
            return NULL;
        }
        plan[i].offset = offset;
        offset += plan[i].size_bytes;
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text) {
        ft_error("%s: header: cannot encode it as JSON", path);
        return NULL;
    }
    size_t length = strlen(text);
    size_t padded = (length + 7) / 8 * 8;
    char *header = ft_xmalloc(padded);
    memcpy(header, text, length);
    memset(header + length, ' ', padded - length);
    free(text);
    *header_bytes = padded;
    return header;
}

typedef struct {
    const ft_tensor_to_write *tensors; /* as given: the producer's index is into them */
    ft_tensor_producer produce;
    void *context;
    void *buffer;                      /* reused for every produced tensor (its pages faulted in once) */
    size_t capacity;
} producer;

/* One tensor's bytes: its data, or the buffer the producer fills. */
static int write_tensor(FILE *out, const char *temporary, const planned_tensor *planned, producer *maker)
{
    size_t bytes = (size_t)planned->size_bytes;
    if (bytes == 0)
        return 0;
    const void *data = planned->tensor->data;
    if (!data) {
        if (bytes > maker->capacity) {
            free(maker->buffer);
            maker->capacity = 0;
            if (!(maker->buffer = malloc(bytes)))
                return ft_error("out of memory making tensor %s (%zu bytes) for %s", planned->tensor->name, bytes,
                                temporary);
            maker->capacity = bytes;
        }
        if (maker->produce(maker->context, (size_t)(planned->tensor - maker->tensors), maker->buffer, bytes) != 0)
            return -1;
        data = maker->buffer;
    }
    return fwrite(data, 1, bytes, out) == bytes ? 0 : ft_error_errno("cannot write %s", temporary);
}

/* The header, then the tensors in the file's order; in_order: the tensors
 * given data, the produced ones left as holes and then produced in the
 * caller's order, each written at its place. */
static int write_to(FILE *out, const char *temporary, const char *header, size_t header_bytes,
                    const planned_tensor *plan, size_t count, producer *maker, bool in_order)
{
    unsigned char length[8];
    for (int i = 0; i < 8; i++)
        length[i] = (unsigned char)((uint64_t)header_bytes >> (8 * i));
    if (fwrite(length, 1, 8, out) != 8 || fwrite(header, 1, header_bytes, out) != header_bytes)
        return ft_error_errno("cannot write %s", temporary);
    size_t *place = in_order ? ft_xmalloc((count ? count : 1) * sizeof *place) : NULL;
    int status = 0;
    for (size_t i = 0; i < count && status == 0; i++) {
        bool later = in_order && !plan[i].tensor->data;
        if (later)
            place[plan[i].tensor - maker->tensors] = i;
        if (later ? fseeko(out, (off_t)plan[i].size_bytes, SEEK_CUR) != 0
                  : write_tensor(out, temporary, &plan[i], maker) != 0)
            status = later ? ft_error_errno("cannot write %s", temporary) : -1;
    }
    for (size_t index = 0; in_order && index < count && status == 0; index++) {
        if (maker->tensors[index].data)
            continue;
        const planned_tensor *planned = &plan[place[index]];
        if (fseeko(out, (off_t)(8 + header_bytes + planned->offset), SEEK_SET) != 0)
            status = ft_error_errno("cannot write %s", temporary);
        else
            status = write_tensor(out, temporary, planned, maker);
    }
    free(place);
    if (status == 0 && (fflush(out) != 0 || fsync(fileno(out)) != 0))
        return ft_error_errno("cannot write %s", temporary);
    return status;
}

void ft_safetensors_write_order(const ft_tensor_to_write *tensors, size_t count, size_t *order)
{
    planned_tensor *plan = ft_xcalloc(count ? count : 1, sizeof *plan);
    for (size_t i = 0; i < count; i++)
        plan[i].tensor = &tensors[i];
    qsort(plan, count, sizeof *plan, compare_planned);
    for (size_t k = 0; k < count; k++)
        order[k] = (size_t)(plan[k].tensor - tensors);
    free(plan);
}

static int write_file(const char *path, const ft_tensor_to_write *tensors, size_t count,
                      const char *const *metadata_keys, const char *const *metadata_values, size_t n_metadata,
                      ft_tensor_producer produce, void *context, bool in_order)
{
    planned_tensor *plan = ft_xcalloc(count, sizeof *plan);
    for (size_t i = 0; i < count; i++) {
        plan[i].tensor = &tensors[i];
        if (check_tensor(path, &tensors[i], produce != NULL, &plan[i].size_bytes) != 0) {
            free(plan);
            return -1;
        }
    }
    qsort(plan, count, sizeof *plan, compare_planned);
    size_t header_bytes;
    char *header = build_header(path, plan, count, metadata_keys, metadata_values, n_metadata, &header_bytes);
    if (!header) {
        free(plan);
        return -1;
    }

    char *temporary = ft_xasprintf("%s.tmp.%ld", path, (long)getpid());
    int result = 0;
    FILE *out = fopen(temporary, "wb");
    if (!out) {
        result = ft_error_errno("cannot create %s", temporary);
    } else {
        producer maker = {tensors, produce, context, NULL, 0};
        result = write_to(out, temporary, header, header_bytes, plan, count, &maker, in_order);
        free(maker.buffer);
        if (fclose(out) != 0 && result == 0)
            result = ft_error_errno("cannot write %s", temporary);
        if (result == 0 && rename(temporary, path) != 0)
            result = ft_error_errno("cannot rename %s to %s", temporary, path);
        if (result != 0) {
            unlink(temporary);
        } else {
            char *folder = ft_path_dirname(path);
            result = ft_fsync_dir(folder);
            free(folder);
        }
    }
    free(temporary);
    free(header);
    free(plan);
    return result;
}

int ft_safetensors_write_produced(const char *path, const ft_tensor_to_write *tensors, size_t count,
                                  const char *const *metadata_keys, const char *const *metadata_values,
                                  size_t n_metadata, ft_tensor_producer produce, void *context)
{
    return write_file(path, tensors, count, metadata_keys, metadata_values, n_metadata, produce, context, false);
}

int ft_safetensors_write_produced_in_order(const char *path, const ft_tensor_to_write *tensors, size_t count,
                                           const char *const *metadata_keys, const char *const *metadata_values,
                                           size_t n_metadata, ft_tensor_producer produce, void *context)
{
    return write_file(path, tensors, count, metadata_keys, metadata_values, n_metadata, produce, context, true);
}

int ft_safetensors_write(const char *path, const ft_tensor_to_write *tensors, size_t count,
                         const char *const *metadata_keys, const char *const *metadata_values,
                         size_t n_metadata)
{
    return write_file(path, tensors, count, metadata_keys, metadata_values, n_metadata, NULL, NULL, false);
}
