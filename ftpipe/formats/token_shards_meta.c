/* token_shards_meta: meta.json of a tokenized dataset: what made it (tokenizer
 * hash, template, cutoff) and what it holds (counts per split). Training checks
 * the tokenizer hash against the model's before using the data. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/formats/token_shards.h"

#define META_FORMAT "ftpipe-token-dataset"

static json_t *split_to_json(const ft_token_split_stats *stats, bool with_images)
{
    double mean = stats->n_samples ? (double)stats->n_tokens / (double)stats->n_samples : 0.0;
    json_t *split = json_pack("{sI sI sI sI sI sI sf sI}", "samples", (json_int_t)stats->n_samples, "rows",
                     (json_int_t)stats->n_rows, "tokens", (json_int_t)stats->n_tokens, "trained_tokens",
                     (json_int_t)stats->n_trained_tokens, "truncated", (json_int_t)stats->n_truncated,
                     "max_length", (json_int_t)stats->max_sample_tokens, "mean_length", mean, "shards",
                     (json_int_t)stats->n_shards);
    if (with_images)
        json_object_set_new(split, "images", json_integer((json_int_t)stats->n_images));
    return split;
}

int ft_token_dataset_meta_write(const char *dataset_dir, const ft_token_dataset_meta *meta)
{
    json_t *root = json_pack("{ss si ss ss si sb sb sb sI sI so}", "format", META_FORMAT, "version",
                             FT_TOKEN_SHARD_VERSION, "tokenizer_hash", meta->tokenizer_hash, "template",
                             meta->template_name, "cutoff_len", (int)meta->cutoff_len, "packing", meta->packing,
                             "train_on_prompt", meta->train_on_prompt, "mask_history", meta->mask_history, "records",
                             (json_int_t)meta->n_records, "skipped_records", (json_int_t)meta->n_skipped_records,
                             "train", split_to_json(&meta->train, meta->vision_processor[0]));
    if (meta->validation.n_samples)
        json_object_set_new(root, "validation", split_to_json(&meta->validation, meta->vision_processor[0]));
    if (meta->vision_processor[0])
        json_object_set_new(root, "vision_processor", json_string(meta->vision_processor));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(root);
    char *path = ft_path_join(dataset_dir, "meta.json");
    size_t length = strlen(text);
    text[length] = '\n'; /* json_dumps leaves no final newline; its NUL is replaced */
    int status = ft_write_file_atomic(path, text, length + 1);
    free(text);
    free(path);
    return status;
}

typedef struct {
    const char *path;
    const json_t *object;
    const char *prefix; /* "train." inside a split */
} meta_reader;

static int invalid(const meta_reader *reader, const char *key)
{
    return ft_error("%s: \"%s%s\" is missing or not valid (re-run the tokenize stage that made it)", reader->path,
                    reader->prefix, key);
}

static int read_count(const meta_reader *reader, const char *key, uint64_t *out)
{
    const json_t *value = json_object_get(reader->object, key);
    if (!json_is_integer(value) || json_integer_value(value) < 0)
        return invalid(reader, key);
    *out = (uint64_t)json_integer_value(value);
    return 0;
}

static int read_bool(const meta_reader *reader, const char *key, bool *out)
{
    const json_t *value = json_object_get(reader->object, key);
    if (!json_is_boolean(value))
        return invalid(reader, key);
    *out = json_is_true(value);
    return 0;
}

static int read_text(const meta_reader *reader, const char *key, char *out, size_t size)
{
    const json_t *value = json_object_get(reader->object, key);
    if (!json_is_string(value) || strlen(json_string_value(value)) >= size)
        return invalid(reader, key);
    strcpy(out, json_string_value(value));
    return 0;
}

static int read_split(const meta_reader *parent, const char *key, ft_token_split_stats *out)
{
    memset(out, 0, sizeof *out);
    const json_t *object = json_object_get(parent->object, key);
    if (!object)
        return 0;
    if (!json_is_object(object))
        return invalid(parent, key);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s.", key);
    meta_reader reader = {parent->path, object, prefix};
    if (read_count(&reader, "samples", &out->n_samples) || read_count(&reader, "rows", &out->n_rows) ||
        read_count(&reader, "tokens", &out->n_tokens) ||
        read_count(&reader, "trained_tokens", &out->n_trained_tokens) ||
        read_count(&reader, "truncated", &out->n_truncated) ||
        read_count(&reader, "max_length", &out->max_sample_tokens) || read_count(&reader, "shards", &out->n_shards))
        return -1;
    if (json_object_get(object, "images") && read_count(&reader, "images", &out->n_images))
        return -1;
    return 0;
}

int ft_token_dataset_meta_read(const char *dataset_dir, ft_token_dataset_meta *out)
{
    memset(out, 0, sizeof *out);
    char *path = ft_path_join(dataset_dir, "meta.json");
    if (!ft_path_exists(path)) {
        free(path);
        return ft_error("%s is not a tokenized dataset: it has no meta.json (make it with a tokenize stage)",
                        dataset_dir);
    }
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    meta_reader reader = {path, root, ""};
    int status = 0;
    if (!root)
        status = ft_error("%s: not valid JSON: %s (line %d)", path, error.text, error.line);
    else if (!json_is_string(json_object_get(root, "format")) ||
             strcmp(json_string_value(json_object_get(root, "format")), META_FORMAT) != 0)
        status = ft_error("%s: not a tokenized dataset's meta.json (no \"format\": \"" META_FORMAT "\")", path);
    else if (json_integer_value(json_object_get(root, "version")) != FT_TOKEN_SHARD_VERSION)
        status = ft_error("%s: tokenized dataset version %lld; this ftpipe reads version %d (re-run the tokenize "
                          "stage)",
                          path, (long long)json_integer_value(json_object_get(root, "version")),
                          FT_TOKEN_SHARD_VERSION);
    uint64_t cutoff_len = 0;
    if (status == 0 &&
        (read_text(&reader, "tokenizer_hash", out->tokenizer_hash, sizeof out->tokenizer_hash) ||
         read_text(&reader, "template", out->template_name, sizeof out->template_name) ||
         read_count(&reader, "cutoff_len", &cutoff_len) || read_bool(&reader, "packing", &out->packing) ||
         read_bool(&reader, "train_on_prompt", &out->train_on_prompt) ||
         read_bool(&reader, "mask_history", &out->mask_history) || read_count(&reader, "records", &out->n_records) ||
         read_count(&reader, "skipped_records", &out->n_skipped_records) ||
         read_split(&reader, "train", &out->train) || read_split(&reader, "validation", &out->validation)))
        status = -1;
    if (status == 0 && json_object_get(root, "vision_processor") &&
        read_text(&reader, "vision_processor", out->vision_processor, sizeof out->vision_processor))
        status = -1;
    if (status == 0 && (cutoff_len == 0 || cutoff_len > UINT32_MAX))
        status = invalid(&reader, "cutoff_len");
    if (status == 0 && out->train.n_shards == 0)
        status = invalid(&reader, "train");
    out->cutoff_len = (uint32_t)cutoff_len;
    json_decref(root);
    free(path);
    return status;
}
