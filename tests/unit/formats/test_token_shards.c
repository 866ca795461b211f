/* Tests of the token shard format: writer, meta.json, mmap reader, and the
 * reader's refusal of damaged files. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/token_shards.h"

static char *make_temp_dir(void)
{
    char *dir = ft_xstrdup("/tmp/ftpipe-test-shards.XXXXXX");
    if (!mkdtemp(dir))
        abort();
    return dir;
}

/* Sample k (1-based) is k+1 tokens: ids 100k, 100k+1, ...; the first token is prompt (mask 0). */
static void add_numbered_sample(ft_token_shard_writer *writer, uint32_t k)
{
    uint32_t ids[64];
    uint8_t mask[64];
    size_t n = k + 1;
    for (size_t i = 0; i < n; i++) {
        ids[i] = 100 * k + (uint32_t)i;
        mask[i] = i > 0;
    }
    CHECK_INT(ft_token_shard_writer_add_sample(writer, ids, mask, n), 0);
}

static void write_meta(const char *dir, bool packing, uint32_t cutoff_len, const ft_token_split_stats *train,
                       const ft_token_split_stats *validation)
{
    ft_token_dataset_meta meta;
    memset(&meta, 0, sizeof meta);
    strcpy(meta.tokenizer_hash, "0123456789abcdef0123456789abcdef");
    strcpy(meta.template_name, "qwen");
    meta.cutoff_len = cutoff_len;
    meta.packing = packing;
    meta.n_records = train->n_samples + (validation ? validation->n_samples : 0) + 1;
    meta.n_skipped_records = 1;
    meta.train = *train;
    if (validation)
        meta.validation = *validation;
    CHECK_INT(ft_token_dataset_meta_write(dir, &meta), 0);
}

/* "ids/mask" of a row: "100:0 101:1 | 200:0 ..." with '|' between samples. Caller frees. */
static char *describe_row(const ft_token_row *row)
{
    char *text = ft_xstrdup("");
    int32_t segments[256];
    ft_token_row_segment_ids(row, segments);
    for (size_t t = 0; t < row->n_tokens; t++) {
        const char *separator = t == 0 ? "" : segments[t] != segments[t - 1] ? " | " : " ";
        char *longer = ft_xasprintf("%s%s%u:%u", text, separator, row->ids[t], row->loss_mask[t]);
        free(text);
        text = longer;
    }
    return text;
}

static void check_row(const ft_token_shards *shards, uint64_t index, const char *expected)
{
    ft_token_row row;
    ft_token_shards_row(shards, index, &row);
    char *text = describe_row(&row);
    CHECK_STR(text, expected);
    free(text);
}

TEST(writes_and_reads_unpacked_samples)
{
    char *dir = make_temp_dir();
    char *train = ft_path_join(dir, "train");
    ft_token_shard_writer *writer;
    CHECK_INT(ft_token_shard_writer_open(train, false, 8, 0, &writer), 0);
    for (uint32_t k = 1; k <= 3; k++)
        add_numbered_sample(writer, k);
    ft_token_split_stats stats;
    CHECK_INT(ft_token_shard_writer_finish(writer, &stats), 0);
    CHECK_INT(stats.n_samples, 3);
    CHECK_INT(stats.n_rows, 3);
    CHECK_INT(stats.n_tokens, 9);
    CHECK_INT(stats.n_trained_tokens, 6);
    CHECK_INT(stats.max_sample_tokens, 4);
    CHECK_INT(stats.n_shards, 1);
    write_meta(dir, false, 8, &stats, NULL);

    ft_token_shards *shards;
    int status = ft_token_shards_open(dir, "train", &shards);
    CHECK_INT(status, 0);
    if (status != 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        return;
    }
    CHECK_INT(ft_token_shards_n_rows(shards), 3);
    CHECK_INT(ft_token_shards_n_samples(shards), 3);
    CHECK_INT(ft_token_shards_n_tokens(shards), 9);
    CHECK_INT(ft_token_shards_row_length(shards), 8);
    CHECK(!ft_token_shards_packed(shards));
    check_row(shards, 0, "100:0 101:1");
    check_row(shards, 2, "300:0 301:1 302:1 303:1");
    ft_token_row sample;
    ft_token_shards_sample(shards, 1, &sample);
    CHECK_INT(sample.n_tokens, 3);
    CHECK_INT(sample.ids[0], 200);
    CHECK_INT(sample.n_samples, 1);
    ft_token_shards_close(shards);

    CHECK_INT(ft_token_shards_open(dir, "validation", &shards), -1);
    char *expected = ft_xasprintf("token dataset %s has no validation split (set val_size in its tokenize stage)", dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_remove_tree(dir);
    free(train);
    free(dir);
}

TEST(packs_samples_into_rows_with_boundaries)
{
    char *dir = make_temp_dir();
    char *train = ft_path_join(dir, "train");
    ft_token_shard_writer *writer;
    CHECK_INT(ft_token_shard_writer_open(train, true, 8, 0, &writer), 0);
    add_numbered_sample(writer, 4); /* 5 tokens */
    add_numbered_sample(writer, 2); /* 3 tokens: the row is full */
    CHECK_INT(ft_token_shard_writer_end_row(writer), 0);
    add_numbered_sample(writer, 6); /* 7 tokens */
    uint32_t ids[2] = {1, 2};
    uint8_t mask[2] = {0, 1};
    CHECK_INT(ft_token_shard_writer_add_sample(writer, ids, mask, 2), -1);
    char *expected = ft_xasprintf("token shards in %s: a sample of 2 tokens does not fit a row of 8 tokens (7 used)",
                                  train);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    CHECK_INT(ft_token_shard_writer_end_row(writer), 0);
    add_numbered_sample(writer, 1);
    ft_token_split_stats stats;
    CHECK_INT(ft_token_shard_writer_finish(writer, &stats), 0); /* ends the open row */
    CHECK_INT(stats.n_samples, 4);
    CHECK_INT(stats.n_rows, 3);
    CHECK_INT(stats.n_tokens, 17);
    write_meta(dir, true, 8, &stats, NULL);

    ft_token_shards *shards;
    CHECK_INT(ft_token_shards_open(dir, "train", &shards), 0);
    CHECK(ft_token_shards_packed(shards));
    check_row(shards, 0, "400:0 401:1 402:1 403:1 404:1 | 200:0 201:1 202:1");
    check_row(shards, 1, "600:0 601:1 602:1 603:1 604:1 605:1 606:1");
    check_row(shards, 2, "100:0 101:1");
    ft_token_row row;
    ft_token_shards_row(shards, 0, &row);
    CHECK_INT(row.n_samples, 2);
    CHECK_INT(row.first_sample, 0);
    CHECK_INT(row.sample_offsets[1] - row.sample_offsets[0], 5);
    ft_token_shards_row(shards, 2, &row);
    CHECK_INT(row.first_sample, 3);
    ft_token_shards_close(shards);
    ft_remove_tree(dir);
    free(train);
    free(dir);
}

TEST(splits_into_shards_and_finds_rows_across_them)
{
    char *dir = make_temp_dir();
    char *train = ft_path_join(dir, "train"), *validation = ft_path_join(dir, "validation");
    ft_token_shard_writer *writer;
    CHECK_INT(ft_token_shard_writer_open(train, false, 16, 10, &writer), 0);
    for (uint32_t k = 1; k <= 9; k++) /* 2+3+4+5 = 14 >= 10: a new shard after sample 4, then after 6, 8 */
        add_numbered_sample(writer, k);
    ft_token_split_stats train_stats, validation_stats;
    CHECK_INT(ft_token_shard_writer_finish(writer, &train_stats), 0);
    CHECK_INT(train_stats.n_shards, 4);
    char *last_shard = ft_path_join(train, "shard-00003.bin");
    CHECK(ft_path_exists(last_shard));
    free(last_shard);

    CHECK_INT(ft_token_shard_writer_open(validation, false, 16, 0, &writer), 0);
    add_numbered_sample(writer, 10);
    CHECK_INT(ft_token_shard_writer_finish(writer, &validation_stats), 0);
    write_meta(dir, false, 16, &train_stats, &validation_stats);

    ft_token_shards *shards;
    CHECK_INT(ft_token_shards_open(dir, "train", &shards), 0);
    CHECK_INT(ft_token_shards_n_rows(shards), 9);
    for (uint64_t r = 0; r < 9; r++) {
        ft_token_row row;
        ft_token_shards_row(shards, r, &row);
        CHECK_INT(row.n_tokens, r + 2);
        CHECK_INT(row.ids[0], 100 * (r + 1));
        CHECK_INT(row.first_sample, r); /* across shards: the split's numbering */
        ft_token_shards_sample(shards, r, &row);
        CHECK_INT(row.first_sample, r);
        CHECK_INT(row.ids[row.n_tokens - 1], 100 * (r + 1) + r + 1);
    }
    ft_token_shards_close(shards);
    CHECK_INT(ft_token_shards_open(dir, "validation", &shards), 0);
    check_row(shards, 0, "1000:0 1001:1 1002:1 1003:1 1004:1 1005:1 1006:1 1007:1 1008:1 1009:1 1010:1");
    ft_token_shards_close(shards);
    CHECK_INT(ft_token_shards_open(dir, "test", &shards), -1);
    char *expected = ft_xasprintf("token dataset %s: no split 'test' (the splits are train and validation)", dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_remove_tree(dir);
    free(train);
    free(validation);
    free(dir);
}

TEST(round_trips_meta)
{
    char *dir = make_temp_dir();
    ft_token_split_stats train = {.n_samples = 10, .n_rows = 4, .n_tokens = 1000, .n_trained_tokens = 400,
                                  .n_truncated = 2, .max_sample_tokens = 256, .n_shards = 1};
    ft_token_split_stats validation = {.n_samples = 1, .n_rows = 1, .n_tokens = 90, .n_trained_tokens = 30,
                                       .max_sample_tokens = 90, .n_shards = 1};
    write_meta(dir, true, 256, &train, &validation);
    ft_token_dataset_meta meta;
    CHECK_INT(ft_token_dataset_meta_read(dir, &meta), 0);
    CHECK_STR(meta.tokenizer_hash, "0123456789abcdef0123456789abcdef");
    CHECK_STR(meta.template_name, "qwen");
    CHECK_INT(meta.cutoff_len, 256);
    CHECK(meta.packing && !meta.train_on_prompt && !meta.mask_history);
    CHECK_INT(meta.n_records, 12);
    CHECK_INT(meta.n_skipped_records, 1);
    CHECK(memcmp(&meta.train, &train, sizeof train) == 0);
    CHECK(memcmp(&meta.validation, &validation, sizeof validation) == 0);

    char *path = ft_path_join(dir, "meta.json"), *text;
    CHECK_INT(ft_read_file(path, &text, NULL), 0);
    CHECK(strstr(text, "\"mean_length\": 100.0") != NULL);
    CHECK(strstr(text, "\"format\": \"ftpipe-token-dataset\"") == strstr(text, "\"format\""));
    free(text);
    const char *old = "{\"format\": \"ftpipe-token-dataset\", \"version\": 1, \"tokenizer_hash\": \"x\"}";
    CHECK_INT(ft_write_file_atomic(path, old, strlen(old)), 0);
    CHECK_INT(ft_token_dataset_meta_read(dir, &meta), -1);
    char *expected = ft_xasprintf("%s: \"template\" is missing or not valid (re-run the tokenize stage that made it)",
                                  path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    const char *future = "{\"format\": \"ftpipe-token-dataset\", \"version\": 2}";
    CHECK_INT(ft_write_file_atomic(path, future, strlen(future)), 0);
    CHECK_INT(ft_token_dataset_meta_read(dir, &meta), -1);
    expected = ft_xasprintf("%s: tokenized dataset version 2; this ftpipe reads version 1 (re-run the tokenize stage)",
                            path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    unlink(path);
    CHECK_INT(ft_token_dataset_meta_read(dir, &meta), -1);
    expected = ft_xasprintf("%s is not a tokenized dataset: it has no meta.json (make it with a tokenize stage)", dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(path);
    ft_remove_tree(dir);
    free(dir);
}

/* Data with images names its vision processor and counts each split's images;
 * text data writes neither, and reads back with none. */
TEST(round_trips_meta_with_images)
{
    char *dir = make_temp_dir();
    ft_token_dataset_meta meta;
    memset(&meta, 0, sizeof meta);
    strcpy(meta.tokenizer_hash, "0123456789abcdef0123456789abcdef");
    strcpy(meta.template_name, "qwen2_vl");
    strcpy(meta.vision_processor, "qwen2_vl");
    meta.cutoff_len = 2048;
    meta.train = (ft_token_split_stats){.n_samples = 3, .n_rows = 3, .n_tokens = 300, .n_shards = 1, .n_images = 2};
    meta.validation = (ft_token_split_stats){.n_samples = 1, .n_rows = 1, .n_tokens = 90, .n_shards = 1, .n_images = 1};
    CHECK_INT(ft_token_dataset_meta_write(dir, &meta), 0);
    ft_token_dataset_meta read;
    CHECK_INT(ft_token_dataset_meta_read(dir, &read), 0);
    CHECK_STR(read.vision_processor, "qwen2_vl");
    CHECK_INT(read.train.n_images, 2);
    CHECK_INT(read.validation.n_images, 1);
    meta.vision_processor[0] = '\0';
    CHECK_INT(ft_token_dataset_meta_write(dir, &meta), 0);
    char *path = ft_path_join(dir, "meta.json"), *text;
    CHECK_INT(ft_read_file(path, &text, NULL), 0);
    CHECK(strstr(text, "images") == NULL && strstr(text, "vision") == NULL);
    free(text);
    CHECK_INT(ft_token_dataset_meta_read(dir, &read), 0);
    CHECK_STR(read.vision_processor, "");
    CHECK_INT(read.train.n_images, 0);
    free(path);
    ft_remove_tree(dir);
    free(dir);
}

/* Writes a 3-sample dataset, lets damage() change its shard, and returns the open error. */
static char *open_damaged(void (*damage)(const char *shard_path))
{
    char *dir = make_temp_dir();
    char *train = ft_path_join(dir, "train");
    ft_token_shard_writer *writer;
    CHECK_INT(ft_token_shard_writer_open(train, false, 8, 0, &writer), 0);
    for (uint32_t k = 1; k <= 3; k++)
        add_numbered_sample(writer, k);
    ft_token_split_stats stats;
    CHECK_INT(ft_token_shard_writer_finish(writer, &stats), 0);
    write_meta(dir, false, 8, &stats, NULL);
    char *shard = ft_path_join(train, "shard-00000.bin");
    damage(shard);
    ft_token_shards *shards = NULL;
    CHECK_INT(ft_token_shards_open(dir, "train", &shards), -1);
    const char *message = ft_error_message();
    const char *tail = strstr(message, "shard-00000.bin: ");
    char *result = ft_xstrdup(tail ? tail + strlen("shard-00000.bin: ") : message);
    ft_remove_tree(dir);
    free(shard);
    free(train);
    free(dir);
    return result;
}

static void patch_bytes(const char *path, long at, const void *bytes, size_t count)
{
    FILE *file = fopen(path, "r+b");
    fseek(file, at, SEEK_SET);
    fwrite(bytes, 1, count, file);
    fclose(file);
}

static void truncate_file(const char *path) { CHECK_INT(truncate(path, 100), 0); }
static void break_magic(const char *path) { patch_bytes(path, 0, "FTTOKENZ", 8); }
static void future_version(const char *path)
{
    uint32_t version = 9;
    patch_bytes(path, 8, &version, 4);
}
static void unordered_samples(const char *path)
{
    uint64_t offset = 7; /* sample_offsets[1] (2) becomes 7 > sample_offsets[2] (5) */
    patch_bytes(path, 64 + 8, &offset, 8);
}
static void long_row(const char *path)
{
    uint32_t row_length = 2;
    patch_bytes(path, 40, &row_length, 4);
}
static void remove_shard(const char *path) { unlink(path); }

TEST(refuses_damaged_shards)
{
    static const struct {
        void (*damage)(const char *);
        const char *message;
    } cases[] = {
        {truncate_file, "not a valid token shard: file size does not match its counts (re-run the tokenize stage "
                        "that made it)"},
        {break_magic, "not a valid token shard: no FTTOKENS magic (re-run the tokenize stage that made it)"},
        {future_version, "token shard version 9; this ftpipe reads version 1 (re-run the tokenize stage)"},
        {unordered_samples, "not a valid token shard: sample offsets are not increasing (re-run the tokenize stage "
                            "that made it)"},
        {long_row, "not a valid token shard: packing or row length differs from meta.json (re-run the tokenize "
                   "stage that made it)"},
        {remove_shard, "No such file or directory"}, /* "cannot open token shard DIR/train/shard-00000.bin: ..." */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *message = open_damaged(cases[i].damage);
        CHECK_STR(message, cases[i].message);
        free(message);
    }
}

int main(void)
{
    RUN(writes_and_reads_unpacked_samples);
    RUN(packs_samples_into_rows_with_boundaries);
    RUN(splits_into_shards_and_finds_rows_across_them);
    RUN(round_trips_meta);
    RUN(round_trips_meta_with_images);
    RUN(refuses_damaged_shards);
    return check_done();
}
