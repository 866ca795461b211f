/* safetensors: write -> read round trips, the library's exact bytes, sharded sets,
 * dtype conversions, and every malformed file's message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"

static char *scratch; /* a fresh folder for the whole run */

static char *scratch_path(const char *name) { return ft_path_join(scratch, name); }

/* A file of: 8-byte little-endian length, header text, data_bytes bytes of 0xAB. */
static char *write_raw(const char *name, uint64_t declared_length, const char *header, size_t data_bytes)
{
    char *path = scratch_path(name);
    size_t header_bytes = strlen(header);
    size_t total = 8 + header_bytes + data_bytes;
    unsigned char *bytes = ft_xmalloc(total);
    for (int i = 0; i < 8; i++)
        bytes[i] = (unsigned char)(declared_length >> (8 * i));
    memcpy(bytes + 8, header, header_bytes);
    memset(bytes + 8 + header_bytes, 0xAB, data_bytes);
    if (ft_write_file_atomic(path, bytes, total) != 0)
        fprintf(stderr, "  cannot write %s: %s\n", path, ft_error_message());
    free(bytes);
    return path;
}

static char *write_header(const char *name, const char *header, size_t data_bytes)
{
    return write_raw(name, strlen(header), header, data_bytes);
}

/* Opening the file fails with "PATH: " + expected. */
static void check_refused(const char *path, const char *expected)
{
    ft_safetensors *set = (ft_safetensors *)1;
    CHECK_INT(ft_safetensors_open(path, &set), -1);
    CHECK(set == NULL);
    char *message = ft_xasprintf("%s: %s", path, expected);
    CHECK_STR(ft_error_message(), message);
    free(message);
}

TEST(round_trip_of_dtypes_and_shapes)
{
    float matrix[2][3] = {{1, 2, 3}, {4, 5, -6.5f}};
    uint16_t bf16[3] = {0x3f80, 0x4000, 0xc040};
    uint16_t f16[2][2] = {{0x3c00, 0x4000}, {0xc000, 0x0001}};
    int64_t ids[2] = {-1, 1LL << 40};
    uint8_t bytes[5] = {1, 2, 3, 4, 5};
    uint8_t flags[3] = {1, 0, 1};
    float scalar = 3.25f;
    int32_t deep = 42;
    ft_tensor_to_write tensors[] = {
        {"matrix", FT_DTYPE_F32, 2, {2, 3}, matrix},
        {"bf16", FT_DTYPE_BF16, 1, {3}, bf16},
        {"f16", FT_DTYPE_F16, 2, {2, 2}, f16},
        {"ids", FT_DTYPE_I64, 1, {2}, ids},
        {"bytes", FT_DTYPE_U8, 1, {5}, bytes},
        {"flags", FT_DTYPE_BOOL, 1, {3}, flags},
        {"scalar", FT_DTYPE_F32, 0, {0}, &scalar},
        {"empty", FT_DTYPE_F32, 2, {0, 4}, NULL},
        {"deep", FT_DTYPE_I32, 8, {1, 1, 1, 1, 1, 1, 1, 1}, &deep},
    };
    size_t count = sizeof tensors / sizeof tensors[0];
    const char *keys[] = {"format"}, *values[] = {"pt"};
    char *path = scratch_path("round_trip.safetensors");
    CHECK_INT(ft_safetensors_write(path, tensors, count, keys, values, 1), 0);
    char *temporary = ft_xasprintf("%s.tmp.%ld", path, (long)getpid());
    CHECK(!ft_path_exists(temporary));
    free(temporary);

    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(path, &set), 0);
    CHECK_INT(ft_safetensors_count(set), count);
    for (size_t i = 0; i < count; i++) {
        const ft_tensor_view *view = ft_safetensors_find(set, tensors[i].name);
        CHECK(view != NULL);
        if (!view)
            continue;
        CHECK_STR(view->name, tensors[i].name);
        CHECK_STR(view->file, path);
        CHECK_INT(view->dtype, tensors[i].dtype);
        CHECK_INT(view->n_dims, tensors[i].n_dims);
        size_t elements = 1;
        for (int d = 0; d < view->n_dims; d++) {
            CHECK_INT(view->shape[d], tensors[i].shape[d]);
            elements *= (size_t)tensors[i].shape[d];
        }
        CHECK_INT(view->size_bytes, elements * ft_dtype_size(tensors[i].dtype));
        CHECK(view->size_bytes == 0 || memcmp(view->data, tensors[i].data, view->size_bytes) == 0);
        /* Ordered by alignment, every tensor's data is aligned to its element size. */
        CHECK_INT((uintptr_t)view->data % ft_dtype_size(view->dtype), 0);
    }
    /* File order: widest dtype first, then by name; empty tensors included. */
    static const char *const order[] = {"ids", "empty", "matrix", "scalar", "deep",
                                        "bf16", "f16", "bytes", "flags"};
    for (size_t i = 0; i < count; i++)
        CHECK_STR(ft_safetensors_at(set, i)->name, order[i]);
    CHECK(ft_safetensors_at(set, count) == NULL);
    ft_safetensors_close(set);
    free(path);
}

static void check_file_bytes(const char *path, const void *expected, size_t expected_bytes)
{
    char *data;
    size_t length;
    CHECK_INT(ft_read_file(path, &data, &length), 0);
    CHECK_INT(length, expected_bytes);
    CHECK(length == expected_bytes && memcmp(data, expected, length) == 0);
    free(data);
}

/* The safetensors library's own serialization tests give these bytes. */
TEST(bytes_match_the_safetensors_library)
{
    float values[6] = {0, 1, 2, 3, 4, 5};
    ft_tensor_to_write tensor = {"attn.0", FT_DTYPE_F32, 3, {1, 2, 3}, values};
    char *path = scratch_path("library.safetensors");
    CHECK_INT(ft_safetensors_write(path, &tensor, 1, NULL, NULL, 0), 0);
    const char header[] = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
    unsigned char expected[8 + 64 + 24] = {64};
    memcpy(expected + 8, header, 64);
    memcpy(expected + 72, values, 24);
    check_file_bytes(path, expected, sizeof expected);

    /* A shorter name: the header is padded with spaces to a multiple of 8. */
    tensor.name = "attn0";
    tensor.n_dims = 4;
    tensor.shape[0] = 1, tensor.shape[1] = 1, tensor.shape[2] = 2, tensor.shape[3] = 3;
    CHECK_INT(ft_safetensors_write(path, &tensor, 1, NULL, NULL, 0), 0);
    const char padded[] = "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ";
    unsigned char expected_padded[8 + 72 + 24] = {72};
    memcpy(expected_padded + 8, padded, 72);
    memcpy(expected_padded + 80, values, 24);
    check_file_bytes(path, expected_padded, sizeof expected_padded);

    CHECK_INT(ft_safetensors_write(path, NULL, 0, NULL, NULL, 0), 0);
    check_file_bytes(path, "\x08\0\0\0\0\0\0\0{}      ", 16);

    const char *keys[] = {"framework"}, *metadata_values[] = {"pt"};
    CHECK_INT(ft_safetensors_write(path, NULL, 0, keys, metadata_values, 1), 0);
    check_file_bytes(path, "\x28\0\0\0\0\0\0\0{\"__metadata__\":{\"framework\":\"pt\"}}     ", 48);
    free(path);
}

TEST(writer_refuses_bad_tensors)
{
    float value = 1;
    char *path = scratch_path("refused.safetensors");
    ft_tensor_to_write twice[] = {{"w", FT_DTYPE_F32, 0, {0}, &value}, {"w", FT_DTYPE_F32, 0, {0}, &value}};
    CHECK_INT(ft_safetensors_write(path, twice, 2, NULL, NULL, 0), -1);
    char *expected = ft_xasprintf("%s: tensor w: given twice", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);

    ft_tensor_to_write negative = {"w", FT_DTYPE_F32, 2, {2, -1}, &value};
    CHECK_INT(ft_safetensors_write(path, &negative, 1, NULL, NULL, 0), -1);
    expected = ft_xasprintf("%s: tensor w: shape[1] is -1, negative", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);

    ft_tensor_to_write reserved = {"__metadata__", FT_DTYPE_F32, 0, {0}, &value};
    CHECK_INT(ft_safetensors_write(path, &reserved, 1, NULL, NULL, 0), -1);
    expected = ft_xasprintf("%s: tensor __metadata__: the name is reserved for the header's metadata", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    CHECK(!ft_path_exists(path));
    free(path);
}

TEST(bf16_rounds_to_nearest_even)
{
    CHECK_INT(ft_f32_to_bf16(1.0f), 0x3f80);
    CHECK_INT(ft_f32_to_bf16(-2.0f), 0xc000);
    CHECK_INT(ft_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);     /* halfway: down to even */
    CHECK_INT(ft_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);     /* halfway: up to even */
    CHECK_INT(ft_f32_to_bf16(1.0f + 1.0f / 256 + 1.0f / 65536), 0x3f81); /* above halfway */
    CHECK_INT(ft_f32_to_bf16(3.4028235e38f), 0x7f80);         /* rounds up to infinity */
    CHECK_INT(ft_f32_to_bf16(-__builtin_inff()), 0xff80);
    float quiet_nan, signaling_nan;
    uint32_t quiet = 0xffc00001u, signaling = 0x7f800001u;    /* payload only in the low half */
    memcpy(&quiet_nan, &quiet, 4);
    memcpy(&signaling_nan, &signaling, 4);
    CHECK_INT(ft_f32_to_bf16(quiet_nan), 0xffc0);
    CHECK_INT(ft_f32_to_bf16(signaling_nan), 0x7fc0); /* would be infinity if merely truncated */
    CHECK(ft_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(ft_bf16_to_f32(0xc040) == -3.0f);
    CHECK(__builtin_isnan(ft_bf16_to_f32(0x7fc1)));
}

typedef struct {
    size_t order[4];
    size_t calls;
} production;

static int produce_values(void *context, size_t index, void *buffer, size_t size_bytes)
{
    production *made = context;
    made->order[made->calls++ % 4] = index;
    if (index == 2)
        return ft_error("tensor %zu cannot be made", index);
    float *values = buffer;
    for (size_t i = 0; i < size_bytes / sizeof(float); i++)
        values[i] = (float)(index * 100 + i);
    return 0;
}

/* Tensors without data are made by the producer one by one, in the file's
 * order, into the same bytes as a file written from data; a producer's
 * failure leaves no file. */
TEST(produced_tensors_write_the_same_file)
{
    float first[6] = {0, 1, 2, 3, 4, 5}, second[4] = {100, 101, 102, 103};
    uint16_t halves[2] = {0x3c00, 0x4000};
    ft_tensor_to_write given[] = {{"b", FT_DTYPE_F32, 2, {2, 3}, first}, {"a", FT_DTYPE_F32, 1, {4}, second},
                                  {"h", FT_DTYPE_F16, 1, {2}, halves}};
    char *expected_path = scratch_path("given.safetensors"), *path = scratch_path("produced.safetensors");
    const char *key = "format", *value = "pt";
    CHECK_INT(ft_safetensors_write(expected_path, given, 3, &key, &value, 1), 0);
    ft_tensor_to_write produced[] = {{"b", FT_DTYPE_F32, 2, {2, 3}, NULL}, {"a", FT_DTYPE_F32, 1, {4}, NULL},
                                     {"h", FT_DTYPE_F16, 1, {2}, halves}};
    production made = {{0}, 0};
    CHECK_INT(ft_safetensors_write_produced(path, produced, 3, &key, &value, 1, produce_values, &made), 0);
    CHECK_INT(made.calls, 2);
    CHECK(made.order[0] == 1 && made.order[1] == 0); /* "a" before "b", as the file holds them */
    char *expected = NULL, *actual = NULL;
    size_t expected_bytes = 0, actual_bytes = 0;
    CHECK_INT(ft_read_file(expected_path, &expected, &expected_bytes), 0);
    CHECK_INT(ft_read_file(path, &actual, &actual_bytes), 0);
    CHECK(expected && actual && expected_bytes == actual_bytes && memcmp(expected, actual, actual_bytes) == 0);
    free(expected);
    free(actual);
    /* without a producer, a tensor without data is an error as before */
    CHECK_INT(ft_safetensors_write(path, produced, 3, NULL, NULL, 0), -1);
    CHECK(strstr(ft_error_message(), "tensor b: no data") != NULL);

    ft_tensor_to_write failing_tensors[] = {{"b", FT_DTYPE_F32, 2, {2, 3}, first}, {"a", FT_DTYPE_F32, 1, {4}, NULL},
                                            {"c", FT_DTYPE_F32, 1, {1}, NULL}};
    char *failing = scratch_path("failing.safetensors");
    CHECK_INT(ft_safetensors_write_produced(failing, failing_tensors, 3, NULL, NULL, 0, produce_values, &made), -1);
    CHECK_STR(ft_error_message(), "tensor 2 cannot be made");
    CHECK(!ft_path_exists(failing));
    free(failing);
    free(path);
    free(expected_path);
}

static bool same_file(const char *a, const char *b)
{
    char *left = NULL, *right = NULL;
    size_t left_bytes = 0, right_bytes = 0;
    bool same = ft_read_file(a, &left, &left_bytes) == 0 && ft_read_file(b, &right, &right_bytes) == 0 &&
                left_bytes == right_bytes && memcmp(left, right, left_bytes) == 0;
    free(left);
    free(right);
    return same;
}

/* In the caller's order: each produced tensor at its place, the same bytes,
 * the last of the file's too (a hole until it is made); a failure leaves none. */
TEST(tensors_produced_in_the_order_given_write_the_same_file)
{
    float first[6] = {0, 1, 2, 3, 4, 5}, second[4] = {100, 101, 102, 103};
    uint16_t halves[2] = {0x3c00, 0x4000};
    ft_tensor_to_write given[] = {{"b", FT_DTYPE_F32, 2, {2, 3}, first}, {"a", FT_DTYPE_F32, 1, {4}, second},
                                  {"h", FT_DTYPE_F16, 1, {2}, halves}};
    char *expected_path = scratch_path("given_in_order.safetensors"), *path = scratch_path("in_order.safetensors");
    const char *key = "format", *value = "pt";
    CHECK_INT(ft_safetensors_write(expected_path, given, 3, &key, &value, 1), 0);
    ft_tensor_to_write produced[] = {{"b", FT_DTYPE_F32, 2, {2, 3}, NULL}, {"a", FT_DTYPE_F32, 1, {4}, NULL},
                                     {"h", FT_DTYPE_F16, 1, {2}, halves}};
    production made = {{0}, 0};
    CHECK_INT(ft_safetensors_write_produced_in_order(path, produced, 3, &key, &value, 1, produce_values, &made), 0);
    CHECK(made.calls == 2 && made.order[0] == 0 && made.order[1] == 1); /* "b" first, as given */
    CHECK(same_file(expected_path, path));

    ft_tensor_to_write last_given[] = {{"z", FT_DTYPE_F32, 2, {2, 3}, first}, {"a", FT_DTYPE_F32, 1, {4}, second}};
    ft_tensor_to_write last_produced[] = {{"z", FT_DTYPE_F32, 2, {2, 3}, NULL}, {"a", FT_DTYPE_F32, 1, {4}, second}};
    CHECK_INT(ft_safetensors_write(expected_path, last_given, 2, NULL, NULL, 0), 0);
    CHECK_INT(ft_safetensors_write_produced_in_order(path, last_produced, 2, NULL, NULL, 0, produce_values, &made), 0);
    CHECK(same_file(expected_path, path));

    ft_tensor_to_write failing_tensors[] = {{"b", FT_DTYPE_F32, 2, {2, 3}, NULL}, {"a", FT_DTYPE_F32, 1, {4}, second},
                                            {"c", FT_DTYPE_F32, 1, {1}, NULL}};
    char *failing = scratch_path("failing_in_order.safetensors");
    CHECK_INT(ft_safetensors_write_produced_in_order(failing, failing_tensors, 3, NULL, NULL, 0, produce_values, &made),
              -1);
    CHECK_STR(ft_error_message(), "tensor 2 cannot be made");
    CHECK(!ft_path_exists(failing));
    free(failing);
    free(path);
    free(expected_path);
}

TEST(tensors_convert_to_f32)
{
    uint16_t f16[] = {0x3c00, 0xc000, 0x0001, 0x7c00, 0x3555, 0x8000, 0x03ff};
    uint16_t bf16[] = {0x3f80, 0xc040, 0x0001};
    float f32[] = {1.5f, -0.25f};
    int64_t ids[] = {7};
    ft_tensor_to_write tensors[] = {
        {"half", FT_DTYPE_F16, 1, {7}, f16},
        {"brain", FT_DTYPE_BF16, 1, {3}, bf16},
        {"single", FT_DTYPE_F32, 1, {2}, f32},
        {"ids", FT_DTYPE_I64, 1, {1}, ids},
    };
    char *path = scratch_path("convert.safetensors");
    CHECK_INT(ft_safetensors_write(path, tensors, 4, NULL, NULL, 0), 0);
    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(path, &set), 0);
    float out[7];
    CHECK_INT(ft_tensor_to_f32(ft_safetensors_find(set, "half"), out), 0);
    CHECK(out[0] == 1.0f && out[1] == -2.0f);
    CHECK(out[2] == 0x1p-24f);                 /* smallest subnormal */
    CHECK(out[3] == __builtin_inff());
    CHECK(out[4] == 0.333251953125f);
    CHECK(out[5] == 0.0f && __builtin_signbit(out[5]));
    CHECK(out[6] == 0x3ffp-24f);               /* largest subnormal */
    CHECK_INT(ft_tensor_to_f32(ft_safetensors_find(set, "brain"), out), 0);
    CHECK(out[0] == 1.0f && out[1] == -3.0f && out[2] == 0x1p-133f);
    CHECK_INT(ft_tensor_to_f32(ft_safetensors_find(set, "single"), out), 0);
    CHECK(out[0] == 1.5f && out[1] == -0.25f);
    CHECK_INT(ft_tensor_to_f32(ft_safetensors_find(set, "ids"), out), -1);
    char *expected = ft_xasprintf("%s: tensor ids: dtype I64 cannot be converted to F32 (F32, F16 and BF16 can)",
                                  path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    CHECK(ft_safetensors_find(set, "missing") == NULL);
    expected = ft_xasprintf("tensor missing not found in %s", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_safetensors_close(set);
    free(path);
}

/* Thousands of tensors, as a 7B model's shapes give: every one found by name. */
TEST(many_tensors_are_found_by_name)
{
    enum { COUNT = 4000 };
    static ft_tensor_to_write tensors[COUNT];
    static char names[COUNT][64];
    static float values[COUNT];
    for (int i = 0; i < COUNT; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.self_attn.q_proj.weight", i);
        values[i] = (float)i;
        tensors[i] = (ft_tensor_to_write){names[i], FT_DTYPE_F32, 1, {1}, &values[i]};
    }
    char *path = scratch_path("many.safetensors");
    CHECK_INT(ft_safetensors_write(path, tensors, COUNT, NULL, NULL, 0), 0);
    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(path, &set), 0);
    int found = 0;
    for (int i = 0; i < COUNT; i++) {
        const ft_tensor_view *view = ft_safetensors_find(set, names[i]);
        float value;
        if (view && ft_tensor_to_f32(view, &value) == 0 && value == (float)i)
            found++;
    }
    CHECK_INT(found, COUNT);
    ft_safetensors_close(set);
    free(path);
}

static void write_shards(const char *folder, const char *index_json)
{
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    ft_tensor_to_write first = {"model.embed_tokens.weight", FT_DTYPE_F32, 1, {2}, a};
    ft_tensor_to_write second = {"lm_head.weight", FT_DTYPE_F32, 1, {3}, b};
    ft_mkdir_p(folder);
    char *path = ft_path_join(folder, "model-00001-of-00002.safetensors");
    CHECK_INT(ft_safetensors_write(path, &first, 1, NULL, NULL, 0), 0);
    free(path);
    path = ft_path_join(folder, "model-00002-of-00002.safetensors");
    CHECK_INT(ft_safetensors_write(path, &second, 1, NULL, NULL, 0), 0);
    free(path);
    path = ft_path_join(folder, "model.safetensors.index.json");
    CHECK_INT(ft_write_file_atomic(path, index_json, strlen(index_json)), 0);
    free(path);
}

static const char two_shard_index[] =
    "{\"metadata\": {\"total_size\": 20}, \"weight_map\": {"
    "\"lm_head.weight\": \"model-00002-of-00002.safetensors\", "
    "\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\"}}";

TEST(index_of_two_shards)
{
    char *folder = scratch_path("sharded");
    write_shards(folder, two_shard_index);
    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(folder, &set), 0);
    CHECK_INT(ft_safetensors_count(set), 2);
    const ft_tensor_view *head = ft_safetensors_find(set, "lm_head.weight");
    const ft_tensor_view *embed = ft_safetensors_find(set, "model.embed_tokens.weight");
    CHECK(head && embed);
    char *shard = ft_path_join(folder, "model-00002-of-00002.safetensors");
    if (head) {
        CHECK_STR(head->file, shard);
        float values[3];
        CHECK_INT(ft_tensor_to_f32(head, values), 0);
        CHECK(values[0] == 3 && values[2] == 5);
    }
    free(shard);
    CHECK(ft_safetensors_find(set, "model.norm.weight") == NULL);
    char *expected = ft_xasprintf("tensor model.norm.weight not found in %s/model.safetensors.index.json or "
                                  "its 2 shards", folder);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_safetensors_close(set);

    /* The index file itself opens the same set. */
    char *index = ft_path_join(folder, "model.safetensors.index.json");
    CHECK_INT(ft_safetensors_open(index, &set), 0);
    CHECK_INT(ft_safetensors_count(set), 2);
    ft_safetensors_close(set);
    free(index);
    free(folder);
}

TEST(folder_prefers_the_single_file)
{
    char *folder = scratch_path("both");
    write_shards(folder, two_shard_index);
    float value = 9;
    ft_tensor_to_write only = {"only", FT_DTYPE_F32, 0, {0}, &value};
    char *single = ft_path_join(folder, "model.safetensors");
    CHECK_INT(ft_safetensors_write(single, &only, 1, NULL, NULL, 0), 0);
    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(folder, &set), 0);
    CHECK_INT(ft_safetensors_count(set), 1);
    CHECK(ft_safetensors_find(set, "lm_head.weight") == NULL);
    char *expected = ft_xasprintf("tensor lm_head.weight not found in %s", single);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_safetensors_close(set);
    free(single);
    free(folder);

    folder = scratch_path("nothing");
    ft_mkdir_p(folder);
    CHECK_INT(ft_safetensors_open(folder, &set), -1);
    expected = ft_xasprintf("%s: holds neither model.safetensors nor model.safetensors.index.json", folder);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(folder);
}

TEST(index_problems_are_named)
{
    char *folder = scratch_path("missing_shard");
    write_shards(folder, "{\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\", "
                         "\"x\": \"model-00003-of-00003.safetensors\"}}");
    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(folder, &set), -1);
    char *expected = ft_xasprintf("%s/model.safetensors.index.json: shard %s/model-00003-of-00003.safetensors "
                                  "is named in weight_map but missing", folder, folder);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(folder);

    folder = scratch_path("missing_tensor");
    write_shards(folder, "{\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\", "
                         "\"model.norm.weight\": \"model-00001-of-00002.safetensors\"}}");
    CHECK_INT(ft_safetensors_open(folder, &set), -1);
    expected = ft_xasprintf("%s/model.safetensors.index.json: tensor model.norm.weight: missing from its shard "
                            "%s/model-00001-of-00002.safetensors", folder, folder);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(folder);

    folder = scratch_path("wrong_shard");
    write_shards(folder, "{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00002.safetensors\", "
                         "\"model.embed_tokens.weight\": \"model-00002-of-00002.safetensors\"}}");
    CHECK_INT(ft_safetensors_open(folder, &set), -1);
    expected = ft_xasprintf("%s/model.safetensors.index.json: tensor lm_head.weight: the index names shard "
                            "%s/model-00001-of-00002.safetensors, but it is in "
                            "%s/model-00002-of-00002.safetensors", folder, folder, folder);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(folder);

    folder = scratch_path("no_map");
    write_shards(folder, "{\"metadata\": {}}");
    CHECK_INT(ft_safetensors_open(folder, &set), -1);
    expected = ft_xasprintf("%s/model.safetensors.index.json: \"weight_map\" is missing or not an object", folder);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(folder);

    /* The same tensor in two shards. */
    folder = scratch_path("duplicated");
    write_shards(folder, "{\"weight_map\": {\"lm_head.weight\": \"model-00002-of-00002.safetensors\", "
                         "\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\"}}");
    float value = 0;
    ft_tensor_to_write again = {"lm_head.weight", FT_DTYPE_F32, 0, {0}, &value};
    char *first = ft_path_join(folder, "model-00001-of-00002.safetensors");
    ft_tensor_to_write both[] = {{"model.embed_tokens.weight", FT_DTYPE_F32, 0, {0}, &value}, again};
    CHECK_INT(ft_safetensors_write(first, both, 2, NULL, NULL, 0), 0);
    CHECK_INT(ft_safetensors_open(folder, &set), -1);
    expected = ft_xasprintf("%s/model-00002-of-00002.safetensors: tensor lm_head.weight: also in %s", folder, first);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(first);
    free(folder);
}

TEST(malformed_files_are_refused)
{
    float values[16] = {0};
    ft_tensor_to_write w = {"w", FT_DTYPE_F32, 1, {16}, values};
    char *path = scratch_path("truncated.safetensors");
    CHECK_INT(ft_safetensors_write(path, &w, 1, NULL, NULL, 0), 0);
    CHECK_INT(truncate(path, 8 + 56 + 56), 0);
    check_refused(path, "tensor w: data_offsets [0, 64] run past the end of the data (56 bytes; "
                        "is the file truncated?)");
    free(path);

    path = write_raw("tiny.safetensors", 0, "", 0);
    CHECK_INT(truncate(path, 5), 0);
    check_refused(path, "header: the file is 5 bytes, too short to hold the 8-byte header length");
    free(path);

    path = write_raw("long_header.safetensors", 1000, "{}", 6);
    check_refused(path, "header: header larger than the file (1000 bytes declared, 8 follow the length)");
    free(path);
    path = write_raw("huge_header.safetensors", UINT64_MAX, "{}", 6);
    check_refused(path, "header: header larger than the file (18446744073709551615 bytes declared, "
                        "8 follow the length)");
    free(path);

    path = write_header("not_json.safetensors", "{\"w\": {\"dtype\": F32}}", 0);
    check_refused(path, "header: not valid JSON: invalid token near 'F' (at byte 17 of the header)");
    free(path);
    path = write_header("list.safetensors", "[1, 2]  ", 0);
    check_refused(path, "header: not a JSON object");
    free(path);
    path = write_header("twice.safetensors",
                        "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2);
    check_refused(path, "header: not valid JSON: duplicate object key near '\"w\"' (at byte 56 of the header)");
    free(path);
    path = write_header("metadata.safetensors", "{\"__metadata__\":{\"format\":1}}", 0);
    check_refused(path, "header: \"__metadata__\" entry 'format' is not a string");
    free(path);

    struct {
        const char *header;
        size_t data_bytes;
        const char *message;
    } cases[] = {
        {"{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
         "tensor w: unknown dtype 'F8_E4M3' (known: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)"},
        {"{\"w\":{\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "tensor w: \"dtype\" is missing or not a string"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
         "tensor w: shape [2, 3] of F32 is 24 bytes, but data_offsets [0, 20] hold 20"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]}}", 8,
         "tensor w: shape [] of F32 is 4 bytes, but data_offsets [0, 8] hold 8"},
        {"{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 6,
         "tensor w: data_offsets [4, 8] run past the end of the data (6 bytes; is the file truncated?)"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 8,
         "tensor b: bytes [2, 6) overlap tensor a's [0, 4)"},
        {"{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[5,7]},"
         "\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
         "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[3,3]}}", 8,
         "tensor b: bytes [5, 7) overlap tensor a's [0, 8)"},
        {"{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 8,
         "tensor w: data_offsets [4, 0] begin after end"},
        {"{\"w\":{\"dtype\":\"U8\",\"shape\":[2,-1],\"data_offsets\":[0,0]}}", 0,
         "tensor w: shape[1] is not a non-negative integer"},
        {"{\"w\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,0]}}", 0,
         "tensor w: shape[0] is not a non-negative integer"},
        {"{\"w\":{\"dtype\":\"U8\",\"shape\":[2]}}", 2,
         "tensor w: \"data_offsets\" is missing or not [begin, end] (two non-negative integers)"},
        {"{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[-2,0]}}", 2,
         "tensor w: \"data_offsets\" is missing or not [begin, end] (two non-negative integers)"},
        {"{\"w\":{\"dtype\":\"U8\",\"shape\":2,\"data_offsets\":[0,2]}}", 2,
         "tensor w: \"shape\" is missing or not an array"},
        {"{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
         "tensor w: shape has 9 dimensions; at most 8 are supported"},
        {"{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
         "tensor w: shape's byte size overflows 64 bits"},
        {"{\"w\":[0,1]}", 0, "tensor w: not a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "case%zu.safetensors", i);
        path = write_header(name, cases[i].header, cases[i].data_bytes);
        check_refused(path, cases[i].message);
        free(path);
    }

    path = scratch_path("absent.safetensors");
    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(path, &set), -1);
    char *expected = ft_xasprintf("cannot open %s: No such file or directory", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(path);
}

/* Holes between tensors and trailing bytes are tolerated; empty tensors may sit anywhere. */
TEST(gaps_and_empty_tensors_are_accepted)
{
    char *path = write_header("gaps.safetensors",
                              "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                              "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[1,1]},"
                              "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}", 9);
    ft_safetensors *set;
    CHECK_INT(ft_safetensors_open(path, &set), 0);
    CHECK_INT(ft_safetensors_count(set), 3);
    const ft_tensor_view *empty = ft_safetensors_find(set, "e");
    CHECK(empty && empty->size_bytes == 0 && empty->n_dims == 2);
    ft_safetensors_close(set);
    free(path);
}

int main(void)
{
    char folder[] = "/tmp/ftpipe-safetensors.XXXXXX";
    scratch = mkdtemp(folder);
    if (!scratch) {
        perror("mkdtemp");
        return 1;
    }
    RUN(round_trip_of_dtypes_and_shapes);
    RUN(bytes_match_the_safetensors_library);
    RUN(writer_refuses_bad_tensors);
    RUN(bf16_rounds_to_nearest_even);
    RUN(produced_tensors_write_the_same_file);
    RUN(tensors_produced_in_the_order_given_write_the_same_file);
    RUN(tensors_convert_to_f32);
    RUN(many_tensors_are_found_by_name);
    RUN(index_of_two_shards);
    RUN(folder_prefers_the_single_file);
    RUN(index_problems_are_named);
    RUN(malformed_files_are_refused);
    RUN(gaps_and_empty_tensors_are_accepted);
    ft_remove_tree(scratch);
    return check_done();
}
