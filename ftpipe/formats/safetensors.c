/* safetensors: the reader (mmap, validation, lookup by name) and dtype helpers.
 * The writer is in safetensors_write.c. */
#include "ftpipe/formats/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

typedef struct {
    char *path;
    void *map;
    size_t map_bytes;
} mapped_file;

struct ft_safetensors {
    char *origin;           /* the file, index or folder opened: named when a lookup fails */
    mapped_file *files;
    size_t n_files;
    ft_tensor_view *tensors;
    size_t count;
    size_t capacity;
    size_t *slots;          /* open addressing by name: tensor index + 1, 0 when empty */
    size_t slot_mask;
};

static size_t element_count(const ft_tensor_view *tensor)
{
    size_t elements = 1;
    for (int d = 0; d < tensor->n_dims; d++)
        elements *= (size_t)tensor->shape[d];
    return elements;
}

int ft_tensor_to_f32(const ft_tensor_view *tensor, float *out)
{
    size_t elements = element_count(tensor);
    const unsigned char *bytes = tensor->data;
    switch (tensor->dtype) {
    case FT_DTYPE_F32:
        memcpy(out, bytes, elements * sizeof(float));
        return 0;
    case FT_DTYPE_BF16:
    case FT_DTYPE_F16:
        /* Byte-wise reads: a tensor in a file need not be 2-byte aligned. */
        for (size_t i = 0; i < elements; i++) {
            uint16_t half = (uint16_t)(bytes[2 * i] | (bytes[2 * i + 1] << 8));
            out[i] = tensor->dtype == FT_DTYPE_BF16 ? ft_bf16_to_f32(half) : ft_f16_to_f32(half);
        }
        return 0;
    default:
        return ft_error("%s: tensor %s: dtype %s cannot be converted to F32 (F32, F16 and BF16 can)",
                        tensor->file, tensor->name, ft_dtype_name(tensor->dtype));
    }
}

/* ---- one file ---- */

static int map_file(const char *path, mapped_file *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ft_error_errno("cannot open %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int result = ft_error_errno("cannot stat %s", path);
        close(fd);
        return result;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ft_error("%s: not a regular file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return ft_error("%s: header: the file is %lld bytes, too short to hold the 8-byte header length",
                        path, (long long)st.st_size);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        int result = ft_error_errno("cannot map %s", path);
        close(fd);
        return result;
    }
    close(fd);
    out->path = ft_xstrdup(path);
    out->map = map;
    out->map_bytes = (size_t)st.st_size;
    return 0;
}

static bool json_is_count(const json_t *value)
{
    return json_is_integer(value) && json_integer_value(value) >= 0;
}

/* The byte range a tensor occupies in its file's data section. */
typedef struct {
    uint64_t begin;
    uint64_t end;
    const char *name;
} byte_range;

static int parse_shape(const char *file, const char *name, const json_t *entry, ft_dtype dtype,
                       ft_tensor_view *tensor, uint64_t *size_bytes)
{
    const json_t *shape = json_object_get(entry, "shape");
    if (!json_is_array(shape))
        return ft_error("%s: tensor %s: \"shape\" is missing or not an array", file, name);
    size_t n_dims = json_array_size(shape);
    if (n_dims > FT_MAX_DIMS)
        return ft_error("%s: tensor %s: shape has %zu dimensions; at most %d are supported", file, name,
                        n_dims, FT_MAX_DIMS);
    uint64_t bytes = ft_dtype_size(dtype);
    for (size_t d = 0; d < n_dims; d++) {
        const json_t *extent = json_array_get(shape, d);
        if (!json_is_count(extent))
            return ft_error("%s: tensor %s: shape[%zu] is not a non-negative integer", file, name, d);
        tensor->shape[d] = (int64_t)json_integer_value(extent);
        if (__builtin_mul_overflow(bytes, (uint64_t)tensor->shape[d], &bytes))
            return ft_error("%s: tensor %s: shape's byte size overflows 64 bits", file, name);
    }
    tensor->n_dims = (int)n_dims;
    *size_bytes = bytes;
    return 0;
}

/* "[2, 3]" */
static void format_shape(const ft_tensor_view *tensor, char *text, size_t size)
{
    size_t used = (size_t)snprintf(text, size, "[");
    for (int d = 0; d < tensor->n_dims && used < size; d++)
        used += (size_t)snprintf(text + used, size - used, "%s%" PRId64, d ? ", " : "", tensor->shape[d]);
    if (used < size)
        snprintf(text + used, size - used, "]");
}

static int parse_entry(const mapped_file *file, const char *name, const json_t *entry,
                       uint64_t data_offset, ft_tensor_view *tensor, byte_range *range)
{
    const char *path = file->path;
    if (!json_is_object(entry))
        return ft_error("%s: tensor %s: not a JSON object", path, name);
    const json_t *dtype_value = json_object_get(entry, "dtype");
    if (!json_is_string(dtype_value))
        return ft_error("%s: tensor %s: \"dtype\" is missing or not a string", path, name);
    ft_dtype dtype;
    if (ft_dtype_from_name(json_string_value(dtype_value), &dtype) != 0)
        return ft_error("%s: tensor %s: unknown dtype '%s' (known: F32, F16, BF16, F64, I64, I32, I16, "
                        "I8, U8, BOOL)", path, name, json_string_value(dtype_value));
    uint64_t size_bytes = 0;
    if (parse_shape(path, name, entry, dtype, tensor, &size_bytes) != 0)
        return -1;

    const json_t *offsets = json_object_get(entry, "data_offsets");
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        !json_is_count(json_array_get(offsets, 0)) || !json_is_count(json_array_get(offsets, 1)))
        return ft_error("%s: tensor %s: \"data_offsets\" is missing or not [begin, end] "
                        "(two non-negative integers)", path, name);
    uint64_t begin = (uint64_t)json_integer_value(json_array_get(offsets, 0));
    uint64_t end = (uint64_t)json_integer_value(json_array_get(offsets, 1));
    uint64_t data_bytes = file->map_bytes - data_offset;
    if (begin > end)
        return ft_error("%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] begin after end", path,
                        name, begin, end);
    if (end > data_bytes)
        return ft_error("%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the "
                        "data (%" PRIu64 " bytes; is the file truncated?)", path, name, begin, end, data_bytes);
    if (end - begin != size_bytes) {
        char shape_text[FT_MAX_DIMS * 24 + 3];
        format_shape(tensor, shape_text, sizeof shape_text);
        return ft_error("%s: tensor %s: shape %s of %s is %" PRIu64 " bytes, but data_offsets [%" PRIu64
                        ", %" PRIu64 "] hold %" PRIu64, path, name, shape_text, ft_dtype_name(dtype),
                        size_bytes, begin, end, end - begin);
    }
    tensor->dtype = dtype;
    tensor->data = (const char *)file->map + data_offset + begin;
    tensor->size_bytes = (size_t)size_bytes;
    tensor->file = file->path;
    range->begin = begin;
    range->end = end;
    range->name = name;
    return 0;
}

static int compare_ranges(const void *a, const void *b)
{
    const byte_range *left = a, *right = b;
    if (left->begin != right->begin)
        return left->begin < right->begin ? -1 : 1;
    return (left->end > right->end) - (left->end < right->end);
}

/* Empty tensors occupy no bytes and so overlap nothing. */
static int check_overlaps(const char *path, byte_range *ranges, size_t count)
{
    qsort(ranges, count, sizeof *ranges, compare_ranges);
    const byte_range *widest = NULL; /* of those seen, the one reaching furthest */
    for (size_t i = 0; i < count; i++) {
        if (ranges[i].begin == ranges[i].end)
            continue;
        if (widest && ranges[i].begin < widest->end)
            return ft_error("%s: tensor %s: bytes [%" PRIu64 ", %" PRIu64 ") overlap tensor %s's [%" PRIu64
                            ", %" PRIu64 ")", path, ranges[i].name, ranges[i].begin, ranges[i].end,
                            widest->name, widest->begin, widest->end);
        if (!widest || ranges[i].end > widest->end)
            widest = &ranges[i];
    }
    return 0;
}

static int check_metadata(const char *path, const json_t *metadata)
{
    if (!json_is_object(metadata))
        return ft_error("%s: header: \"__metadata__\" is not an object of strings", path);
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)metadata, key, value)
        if (!json_is_string(value))
            return ft_error("%s: header: \"__metadata__\" entry '%s' is not a string", path, key);
    return 0;
}

static int parse_header(ft_safetensors *set, const mapped_file *file, json_t *header, uint64_t data_offset)
{
    size_t n_entries = json_object_size(header);
    byte_range *ranges = ft_xcalloc(n_entries, sizeof *ranges);
    size_t n_ranges = 0;
    int result = 0;
    const char *name;
    json_t *entry;
    json_object_foreach(header, name, entry) {
        if (strcmp(name, "__metadata__") == 0) {
            result = check_metadata(file->path, entry);
        } else {
            ft_grow((void **)&set->tensors, &set->capacity, set->count + 1, sizeof *set->tensors);
            ft_tensor_view *tensor = &set->tensors[set->count];
            memset(tensor, 0, sizeof *tensor);
            result = parse_entry(file, name, entry, data_offset, tensor, &ranges[n_ranges]);
            if (result == 0) {
                tensor->name = ft_xstrdup(name);
                set->count++;
                n_ranges++;
            }
        }
        if (result != 0)
            break;
    }
    if (result == 0)
        result = check_overlaps(file->path, ranges, n_ranges);
    free(ranges);
    return result;
}

/* Maps one .safetensors file into set->files[set->n_files] and appends its tensors. */
static int read_file(ft_safetensors *set, const char *path)
{
    mapped_file *file = &set->files[set->n_files];
    if (map_file(path, file) != 0)
        return -1;
    set->n_files++;
    const unsigned char *bytes = file->map;
    uint64_t header_bytes = 0;
    for (int i = 7; i >= 0; i--)
        header_bytes = header_bytes << 8 | bytes[i];
    if (header_bytes > file->map_bytes - 8)
        return ft_error("%s: header: header larger than the file (%" PRIu64 " bytes declared, %zu "
                        "follow the length)", path, header_bytes, file->map_bytes - 8);
    json_error_t error;
    json_t *header = json_loadb((const char *)bytes + 8, (size_t)header_bytes, JSON_REJECT_DUPLICATES, &error);
    if (!header)
        return ft_error("%s: header: not valid JSON: %s (at byte %d of the header)", path, error.text,
                        error.position);
    int result = 0;
    if (!json_is_object(header))
        result = ft_error("%s: header: not a JSON object", path);
    else
        result = parse_header(set, file, header, 8 + header_bytes);
    json_decref(header);
    return result;
}

/* ---- the set ---- */

static size_t *find_slot(const ft_safetensors *set, const char *name)
{
    size_t slot = (size_t)XXH3_64bits(name, strlen(name)) & set->slot_mask;
    while (set->slots[slot] && strcmp(set->tensors[set->slots[slot] - 1].name, name) != 0)
        slot = (slot + 1) & set->slot_mask;
    return &set->slots[slot];
}

static int build_lookup(ft_safetensors *set)
{
    size_t n_slots = 16;
    while (n_slots < 2 * set->count)
        n_slots *= 2;
    set->slots = ft_xcalloc(n_slots, sizeof *set->slots);
    set->slot_mask = n_slots - 1;
    for (size_t i = 0; i < set->count; i++) {
        size_t *slot = find_slot(set, set->tensors[i].name);
        if (*slot) {
            const ft_tensor_view *first = &set->tensors[*slot - 1];
            return ft_error("%s: tensor %s: also in %s", set->tensors[i].file, set->tensors[i].name,
                            first->file);
        }
        *slot = i + 1;
    }
    return 0;
}

static bool has_suffix(const char *text, const char *suffix)
{
    size_t length = strlen(text), suffix_length = strlen(suffix);
    return length >= suffix_length && strcmp(text + length - suffix_length, suffix) == 0;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The shard names the weight map mentions, sorted, each once. Caller frees the array only. */
static int list_shards(const char *index_path, const json_t *weight_map, const char ***out, size_t *count)
{
    size_t n = 0;
    const char **names = ft_xcalloc(json_object_size(weight_map), sizeof *names);
    const char *tensor;
    const json_t *shard;
    json_object_foreach((json_t *)weight_map, tensor, shard) {
        if (!json_is_string(shard)) {
            free(names);
            return ft_error("%s: weight_map: tensor %s: the shard is not a file name", index_path, tensor);
        }
        names[n++] = json_string_value(shard);
    }
    qsort(names, n, sizeof *names, compare_strings);
    size_t unique = 0;
    for (size_t i = 0; i < n; i++)
        if (unique == 0 || strcmp(names[unique - 1], names[i]) != 0)
            names[unique++] = names[i];
    *out = names;
    *count = unique;
    return 0;
}

static int check_weight_map(const ft_safetensors *set, const char *index_path, const char *folder,
                            const json_t *weight_map)
{
    const char *name;
    const json_t *shard;
    json_object_foreach((json_t *)weight_map, name, shard) {
        const ft_tensor_view *tensor = ft_safetensors_find(set, name);
        char *shard_path = ft_path_join(folder, json_string_value(shard));
        int result = 0;
        if (!tensor)
            result = ft_error("%s: tensor %s: missing from its shard %s", index_path, name, shard_path);
        else if (strcmp(tensor->file, shard_path) != 0)
            result = ft_error("%s: tensor %s: the index names shard %s, but it is in %s", index_path, name,
                              shard_path, tensor->file);
        free(shard_path);
        if (result != 0)
            return result;
    }
    return 0;
}

static int read_index(ft_safetensors *set, const char *index_path)
{
    json_error_t error;
    json_t *index = json_load_file(index_path, JSON_REJECT_DUPLICATES, &error);
    if (!index) {
        if (!ft_path_exists(index_path))
            return ft_error("cannot open %s: %s", index_path, strerror(ENOENT));
        return ft_error("%s:%d:%d: not valid JSON: %s", index_path, error.line, error.column, error.text);
    }
    const json_t *weight_map = json_object_get(index, "weight_map");
    const char **shards = NULL;
    size_t n_shards = 0;
    int result = 0;
    if (!json_is_object(weight_map))
        result = ft_error("%s: \"weight_map\" is missing or not an object", index_path);
    else
        result = list_shards(index_path, weight_map, &shards, &n_shards);
    char *folder = ft_path_dirname(index_path);
    if (result == 0)
        set->files = ft_xcalloc(n_shards, sizeof *set->files);
    for (size_t i = 0; result == 0 && i < n_shards; i++) {
        char *shard_path = ft_path_join(folder, shards[i]);
        if (!ft_path_exists(shard_path))
            result = ft_error("%s: shard %s is named in weight_map but missing", index_path, shard_path);
        else
            result = read_file(set, shard_path);
        free(shard_path);
    }
    if (result == 0)
        result = build_lookup(set);
    if (result == 0)
        result = check_weight_map(set, index_path, folder, weight_map);
    free(folder);
    free(shards);
    json_decref(index);
    return result;
}

int ft_safetensors_open(const char *path, ft_safetensors **out)
{
    *out = NULL;
    ft_safetensors *set = ft_xcalloc(1, sizeof *set);
    set->origin = ft_xstrdup(path);
    int result;
    if (ft_path_is_dir(path)) {
        char *single = ft_path_join(path, "model.safetensors");
        char *index = ft_path_join(path, "model.safetensors.index.json");
        if (ft_path_exists(single)) {
            free(set->origin);
            set->origin = ft_xstrdup(single);
            set->files = ft_xcalloc(1, sizeof *set->files);
            result = read_file(set, single);
            if (result == 0)
                result = build_lookup(set);
        } else if (ft_path_exists(index)) {
            free(set->origin);
            set->origin = ft_xstrdup(index);
            result = read_index(set, index);
        } else {
            result = ft_error("%s: holds neither model.safetensors nor model.safetensors.index.json", path);
        }
        free(single);
        free(index);
    } else if (has_suffix(path, ".json")) {
        result = read_index(set, path);
    } else {
        set->files = ft_xcalloc(1, sizeof *set->files);
        result = read_file(set, path);
        if (result == 0)
            result = build_lookup(set);
    }
    if (result != 0) {
        ft_safetensors_close(set);
        return -1;
    }
    *out = set;
    return 0;
}

void ft_safetensors_close(ft_safetensors *set)
{
    if (!set)
        return;
    for (size_t i = 0; i < set->count; i++)
        free((char *)set->tensors[i].name);
    for (size_t i = 0; i < set->n_files; i++) {
        munmap(set->files[i].map, set->files[i].map_bytes);
        free(set->files[i].path);
    }
    free(set->files);
    free(set->tensors);
    free(set->slots);
    free(set->origin);
    free(set);
}

size_t ft_safetensors_count(const ft_safetensors *set) { return set->count; }

const ft_tensor_view *ft_safetensors_at(const ft_safetensors *set, size_t index)
{
    return index < set->count ? &set->tensors[index] : NULL;
}

const ft_tensor_view *ft_safetensors_find(const ft_safetensors *set, const char *name)
{
    size_t slot = *find_slot(set, name);
    if (slot)
        return &set->tensors[slot - 1];
    if (set->n_files > 1 || has_suffix(set->origin, ".json"))
        ft_error("tensor %s not found in %s or its %zu shard%s", name, set->origin, set->n_files,
                 set->n_files == 1 ? "" : "s");
    else
        ft_error("tensor %s not found in %s", name, set->origin);
    return NULL;
}
