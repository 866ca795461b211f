/* tokenize: datasets -> mmap-able token shards.
 *
 *   data/train_set: tokenize models/base data/math_train.json
 *
 * The first input is a model folder (or a tokenizer.json); the others are
 * dataset files, folders of them, or a folder with LLaMA-Factory's
 * dataset_info.json whose entries `dataset =` names. `stage = sft` encodes
 * conversations with the chat template; `stage = pt` encodes texts for
 * continued pretraining. With a vision-language template, records' images are
 * preprocessed once each (the model folder's preprocessor_config.json says how)
 * and stored beside each split's shards, and their placeholders become image
 * tokens. A LLaVA model folder (LlavaForConditionalGeneration) takes templates
 * llava and llama3 with images, preprocessed by CLIP's processor. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/formats/dataset.h"
#include "ftpipe/formats/dataset_inputs.h"
#include "ftpipe/formats/image_store.h"
#include "ftpipe/formats/image_table.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/formats/preprocessor_config.h"
#include "ftpipe/formats/token_shards.h"
#include "ftpipe/stages/stage_images.h"
#include "ftpipe/text/chat_template.h"
#include "ftpipe/text/pretraining_encoding.h"
#include "ftpipe/text/sample_encoding.h"
#include "ftpipe/text/tokenizer.h"

static bool is_pretraining(ft_stage *stage) { return strcmp(ft_stage_param_string(stage, "stage"), "pt") == 0; }

static int read_datasets(ft_stage *stage, const ft_chat_template *chat_template, ft_dataset *dataset)
{
    size_t n_paths = ft_stage_input_count(stage) - 1;
    const char **paths = ft_xmalloc(n_paths * sizeof *paths);
    for (size_t i = 0; i < n_paths; i++)
        paths[i] = ft_stage_input_path(stage, i + 1);
    ft_dataset_input_options options = {
        .format = is_pretraining(stage) ? "text" : ft_stage_param_string(stage, "format"),
        .on_error = strcmp(ft_stage_param_string(stage, "on_error"), "skip") == 0 ? FT_ON_ERROR_SKIP
                                                                                   : FT_ON_ERROR_FAIL,
        .read_images = !is_pretraining(stage) && ft_chat_template_image_tokens(chat_template) != NULL,
    };
    options.dataset_words = ft_stage_param_list(stage, "dataset", &options.n_dataset_words);
    int64_t max_samples = ft_stage_param_int(stage, "max_samples");
    if (max_samples < 0) {
        free(paths);
        return ft_error("max_samples = %lld: expected 0 (all records) or a count of records per dataset",
                        (long long)max_samples);
    }
    options.max_samples = (size_t)max_samples;
    int status = ft_dataset_read_inputs(paths, n_paths, &options, dataset);
    free(paths);
    for (size_t i = 0; i < dataset->n_skip_messages; i++)
        ft_stage_log(stage, "skipped %s", dataset->skip_messages[i]);
    if (dataset->n_skipped > dataset->n_skip_messages)
        ft_stage_log(stage, "skipped %zu more bad records", dataset->n_skipped - dataset->n_skip_messages);
    if (status == 0 && dataset->count == 0)
        status = ft_error("the datasets hold no usable record (%zu read, %zu skipped)", dataset->n_records,
                          dataset->n_skipped);
    return status;
}

static int report_progress(size_t done, size_t total, void *context)
{
    ft_stage *stage = context;
    ft_stage_progress(stage, total ? (double)done / (double)total : 1.0, "%zu/%zu conversations", done, total);
    return ft_stage_cancelled(stage);
}

/* Failed conversations: the first fails the stage, or with on_error = skip each
 * is logged and counted. Returns the number skipped, or -1. */
static long long settle_failures(ft_stage *stage, const ft_dataset *dataset, char **errors)
{
    bool skip = strcmp(ft_stage_param_string(stage, "on_error"), "skip") == 0;
    long long skipped = 0;
    int status = 0;
    for (size_t i = 0; i < dataset->count; i++) {
        if (!errors[i])
            continue;
        if (!skip && status == 0)
            status = ft_error("%s (fix the record, or set on_error = skip to skip bad records)", errors[i]);
        else if (skip && skipped < FT_DATASET_MAX_SKIP_MESSAGES)
            ft_stage_log(stage, "skipped %s", errors[i]);
        skipped++;
        free(errors[i]);
    }
    if (skip && skipped > FT_DATASET_MAX_SKIP_MESSAGES)
        ft_stage_log(stage, "skipped %lld more records that failed to tokenize",
                     skipped - FT_DATASET_MAX_SKIP_MESSAGES);
    return status != 0 ? -1 : skipped;
}

static void summarize(ft_stage *stage, const ft_token_dataset_meta *meta)
{
    const ft_token_split_stats *train = &meta->train, *validation = &meta->validation;
    uint64_t samples = train->n_samples + validation->n_samples;
    uint64_t tokens = train->n_tokens + validation->n_tokens;
    uint64_t truncated = train->n_truncated + validation->n_truncated;
    uint64_t max_length = train->max_sample_tokens > validation->max_sample_tokens ? train->max_sample_tokens
                                                                                   : validation->max_sample_tokens;
    double mean = samples ? (double)tokens / (double)samples : 0.0;
    ft_stage_summary(stage, "%llu samples, %llu tokens, %llu truncated, mean %.1f, max %llu",
                     (unsigned long long)samples, (unsigned long long)tokens, (unsigned long long)truncated, mean,
                     (unsigned long long)max_length);
    if (validation->n_samples)
        ft_stage_log(stage, "validation: %llu samples, %llu tokens", (unsigned long long)validation->n_samples,
                     (unsigned long long)validation->n_tokens);
    if (meta->n_skipped_records)
        ft_stage_log(stage, "%llu of %llu records skipped", (unsigned long long)meta->n_skipped_records,
                     (unsigned long long)meta->n_records);
    ft_stage_metric(stage, 0, "samples", (double)samples);
    ft_stage_metric(stage, 0, "tokens", (double)tokens);
    ft_stage_metric(stage, 0, "trained_tokens", (double)(train->n_trained_tokens + validation->n_trained_tokens));
    ft_stage_metric(stage, 0, "truncated", (double)truncated);
    ft_stage_metric(stage, 0, "mean_length", mean);
    ft_stage_metric(stage, 0, "max_length", (double)max_length);
    ft_stage_metric(stage, 0, "rows", (double)(train->n_rows + validation->n_rows));
    ft_stage_metric(stage, 0, "validation_samples", (double)validation->n_samples);
    ft_stage_metric(stage, 0, "skipped_records", (double)meta->n_skipped_records);
}

/* --- images --- */

/* A dataset's images: the distinct ones, and which each conversation has. */
typedef struct {
    ft_image_table *table;            /* NULL: no record has images */
    ft_conversation_images *per_conversation;
    uint32_t **table_indices;         /* per conversation, its images in the table */
    char **errors;                    /* per conversation: why an image of it is unusable */
    size_t n_references;
} dataset_images;

static void dataset_images_free(dataset_images *images, size_t count)
{
    for (size_t i = 0; images->table_indices && i < count; i++) {
        free(images->table_indices[i]);
        free((void *)images->per_conversation[i].n_tokens);
        free(images->errors[i]);
    }
    free(images->table_indices);
    free(images->per_conversation);
    free(images->errors);
    ft_image_table_free(images->table);
    memset(images, 0, sizeof *images);
}

static char *model_folder(ft_stage *stage)
{
    const char *model = ft_stage_input_path(stage, 0);
    return ft_path_is_dir(model) ? ft_xstrdup(model) : ft_path_dirname(model);
}

/* The table of the model's processor (Qwen2-VL's, or CLIP's for LLaVA's templates). */
static int open_image_table(ft_stage *stage, const ft_chat_template *chat_template, const char *scratch,
                            ft_image_table **out)
{
    char *folder = model_folder(stage);
    bool clip = strcmp(ft_chat_template_image_plugin(chat_template), "llava") == 0;
    int status = ft_stage_image_table_open(stage, folder, clip, scratch, out);
    free(folder);
    return status;
}

/* LLaVA's image token: config.json's must be the tokenizer's <image>, or the
 * model would read its features at other tokens. */
static int check_llava_image_token(ft_stage *stage, const ft_chat_template *chat_template,
                                   const ft_tokenizer *tokenizer)
{
    const char *plugin = ft_chat_template_image_plugin(chat_template);
    if (is_pretraining(stage) || !plugin || strcmp(plugin, "llava") != 0)
        return 0;
    char *folder = model_folder(stage);
    ft_llava_config config;
    int status = ft_llava_config_load(folder, &config);
    const char *pad = ft_chat_template_image_tokens(chat_template)->pad;
    int64_t id = ft_tokenizer_token_id(tokenizer, pad);
    if (status == 0 && id < 0)
        status = ft_error("%s: the tokenizer has no %s token, which LLaVA's images become: use the tokenizer that "
                          "came with the model",
                          folder, pad);
    else if (status == 0 && id != config.image_token_id)
        status = ft_error("%s: config.json's image token is %d, but the tokenizer's %s is %lld: use the tokenizer "
                          "that came with the model",
                          folder, config.image_token_id, pad, (long long)id);
    free(folder);
    return status;
}

/* The template that writes this model's images: a LLaVA model folder takes
 * llava and llama3 (LlavaPlugin); qwen2_vl takes no LLaVA model, llava only one. */
static int template_for_model(ft_stage *stage, const ft_chat_template **chat_template)
{
    const char *plugin = ft_chat_template_image_plugin(*chat_template);
    char *folder = model_folder(stage);
    bool llava = ft_llava_config_is_llava(folder);
    int status = 0;
    if (llava && !is_pretraining(stage))
        status = ft_chat_template_for_llava(*chat_template, chat_template);
    else if (!llava && plugin && strcmp(plugin, "llava") == 0 && !is_pretraining(stage))
        status = ft_error("template %s is for LLaVA models, but %s/config.json is not a LlavaForConditionalGeneration",
                          ft_chat_template_name(*chat_template), folder);
    free(folder);
    return status;
}

/* Preprocesses every distinct image; an unusable image marks its conversations. */
static int gather_images(ft_stage *stage, const ft_chat_template *chat_template, const ft_dataset *dataset,
                         dataset_images *out)
{
    memset(out, 0, sizeof *out);
    size_t n_with_images = 0;
    for (size_t i = 0; i < dataset->count; i++)
        n_with_images += dataset->conversations[i].n_images > 0;
    if (n_with_images == 0)
        return 0;
    char *scratch = ft_path_join(ft_stage_work_dir(stage), "pixels.scratch");
    int status = open_image_table(stage, chat_template, scratch, &out->table);
    free(scratch);
    if (status != 0)
        return -1;
    size_t count = dataset->count ? dataset->count : 1;
    out->per_conversation = ft_xcalloc(count, sizeof *out->per_conversation);
    out->table_indices = ft_xcalloc(count, sizeof *out->table_indices);
    out->errors = ft_xcalloc(count, sizeof *out->errors);
    for (size_t i = 0; i < dataset->count && status == 0; i++) {
        const ft_conversation *conversation = &dataset->conversations[i];
        if (conversation->n_images == 0)
            continue;
        uint32_t *indices = ft_xcalloc(conversation->n_images, sizeof(uint32_t));
        uint32_t *n_tokens = ft_xcalloc(conversation->n_images, sizeof(uint32_t));
        out->table_indices[i] = indices;
        out->per_conversation[i] = (ft_conversation_images){n_tokens, conversation->n_images};
        for (size_t k = 0; k < conversation->n_images && status == 0 && !out->errors[i]; k++) {
            status = ft_stage_check_image_is_an_input(stage, conversation->images[k], 1);
            if (status == 0 && ft_image_table_add(out->table, conversation->images[k], &indices[k]) != 0)
                out->errors[i] = ft_xasprintf("%s: record %zu: image %zu: %s", conversation->file,
                                              conversation->record, k + 1, ft_error_message());
            else if (status == 0)
                n_tokens[k] = ft_image_table_tokens(out->table, indices[k]);
        }
        out->n_references += conversation->n_images;
        ft_stage_progress(stage, (double)(i + 1) / (double)dataset->count, "%zu/%zu distinct images preprocessed",
                          ft_image_table_count(out->table), out->n_references);
        if (ft_stage_cancelled(stage))
            status = ft_error("stopped while preprocessing images");
    }
    if (status == 0)
        status = ft_image_table_seal(out->table);
    if (status == 0)
        ft_stage_log(stage, "%zu images in %zu records, %zu distinct, preprocessed (%lld to %lld pixels)",
                     out->n_references, n_with_images, ft_image_table_count(out->table),
                     (long long)ft_stage_param_int(stage, "image_min_pixels"),
                     (long long)ft_stage_param_int(stage, "image_max_pixels"));
    return status;
}

/* The split's image store, its samples in the shards' order (written). */
static int write_split_images(const char *split_dir, const dataset_images *images, const size_t *written,
                              size_t count, uint64_t *n_images)
{
    char *path = ft_path_join(split_dir, FT_IMAGE_STORE_FILE);
    ft_image_store_writer *writer;
    int status = ft_image_store_writer_open(path, ft_image_table_layout(images->table),
                                            ft_image_table_row_length(images->table), &writer);
    free(path);
    if (status != 0)
        return -1;
    size_t n_table = ft_image_table_count(images->table);
    uint32_t *local = ft_xmalloc((n_table ? n_table : 1) * sizeof(uint32_t)); /* table index -> the store's */
    for (size_t i = 0; i < n_table; i++)
        local[i] = UINT32_MAX;
    uint32_t *sample_images = NULL;
    size_t capacity = 0;
    for (size_t s = 0; s < count && status == 0; s++) {
        const ft_conversation_images *conversation = &images->per_conversation[written[s]];
        ft_grow((void **)&sample_images, &capacity, conversation->count + 1, sizeof(uint32_t));
        for (size_t k = 0; k < conversation->count && status == 0; k++) {
            uint32_t index = images->table_indices[written[s]][k];
            if (local[index] == UINT32_MAX) {
                ft_stored_image image;
                ft_image_table_image(images->table, index, &image);
                int64_t added = ft_image_store_writer_add_image(writer, &image);
                status = added < 0 ? -1 : 0;
                local[index] = (uint32_t)added;
                (*n_images)++;
            }
            sample_images[k] = local[index];
        }
        if (status == 0)
            status = ft_image_store_writer_add_sample(writer, sample_images, conversation->count);
    }
    free(sample_images);
    free(local);
    if (ft_image_store_writer_finish(writer) != 0)
        status = -1;
    return status;
}

/* Writes one split's shards and, with images, its image store. */
static int write_split(const char *split_dir, const ft_encoded_sample *samples, const size_t *indices, size_t count,
                       const ft_token_dataset_meta *meta, const dataset_images *images, ft_token_split_stats *stats)
{
    size_t *written = ft_xmalloc((count ? count : 1) * sizeof(size_t));
    int status = ft_write_samples(split_dir, samples, indices, count, meta->packing, meta->cutoff_len, 0, stats,
                                  written);
    stats->n_images = 0;
    if (status == 0 && images->table)
        status = write_split_images(split_dir, images, written, count, &stats->n_images);
    free(written);
    return status;
}

/* Splits the encoded samples, writes each split's shards and meta.json. */
static int write_dataset(ft_stage *stage, const ft_encoded_sample *samples, size_t count,
                         const dataset_images *images, ft_token_dataset_meta *meta)
{
    size_t *kept = ft_xmalloc((count ? count : 1) * sizeof(size_t));
    size_t n_kept = 0;
    for (size_t i = 0; i < count; i++)
        if (samples[i].n_tokens > 0)
            kept[n_kept++] = i;
    bool *is_validation = ft_xcalloc(n_kept ? n_kept : 1, sizeof(bool));
    size_t n_validation = 0;
    int status = ft_choose_validation(n_kept, ft_stage_param_float(stage, "val_size"),
                                      (uint64_t)ft_stage_param_int(stage, "seed"), is_validation, &n_validation);
    size_t *train = ft_xmalloc((n_kept ? n_kept : 1) * sizeof(size_t));
    size_t *validation = ft_xmalloc((n_kept ? n_kept : 1) * sizeof(size_t));
    size_t n_train = 0, n_placed_validation = 0;
    for (size_t i = 0; i < n_kept && status == 0; i++) {
        if (is_validation[i])
            validation[n_placed_validation++] = kept[i];
        else
            train[n_train++] = kept[i];
    }
    const char *output = ft_stage_output_path(stage);
    char *train_dir = ft_path_join(output, "train"), *validation_dir = ft_path_join(output, "validation");
    if (images->table)
        snprintf(meta->vision_processor, sizeof meta->vision_processor, "%s",
                 ft_image_table_layout(images->table) == FT_IMAGE_LAYOUT_CLIP ? "clip" : "qwen2_vl");
    if (status == 0)
        status = write_split(train_dir, samples, train, n_train, meta, images, &meta->train);
    if (status == 0 && n_validation > 0)
        status = write_split(validation_dir, samples, validation, n_validation, meta, images, &meta->validation);
    if (status == 0)
        status = ft_token_dataset_meta_write(output, meta);
    free(train_dir);
    free(validation_dir);
    free(kept);
    free(is_validation);
    free(train);
    free(validation);
    return status;
}

static int check_parameters(ft_stage *stage, const ft_chat_template **chat_template)
{
    if (ft_stage_input_count(stage) < 2)
        return ft_error("tokenize needs a model folder (or its tokenizer.json) and then datasets: "
                        "`%s: tokenize MODEL DATA...`",
                        ft_stage_target(stage));
    int64_t cutoff_len = ft_stage_param_int(stage, "cutoff_len");
    if (cutoff_len < 1 || cutoff_len > (int64_t)1 << 30)
        return ft_error("cutoff_len = %lld: expected a token count from 1 to 1073741824", (long long)cutoff_len);
    if (ft_chat_template_find(ft_stage_param_string(stage, "template"), chat_template) != 0)
        return -1;
    return template_for_model(stage, chat_template);
}

/* Continued pretraining: texts + EOS concatenated and cut into cutoff_len blocks. */
static int encode_pretraining(ft_stage *stage, const ft_tokenizer *tokenizer, const ft_chat_template *chat_template,
                              const ft_dataset *dataset, ft_token_dataset_meta *meta)
{
    ft_encoded_sample *blocks;
    size_t n_blocks, n_tokens;
    const char *eos = ft_chat_template_pretraining_eos(chat_template, tokenizer);
    if (ft_encode_pretraining(tokenizer, dataset->conversations, dataset->count, eos, meta->cutoff_len, &blocks,
                              &n_blocks, &n_tokens) != 0)
        return -1;
    ft_stage_log(stage, "pretraining: %zu texts, %zu tokens with %s after each, %zu blocks of %u tokens (the last "
                        "%zu tokens, short of a block, dropped)",
                 dataset->count, n_tokens, eos, n_blocks, meta->cutoff_len, n_tokens - n_blocks * meta->cutoff_len);
    int status = n_blocks ? 0
                          : ft_error("the texts hold %zu tokens, less than one block of cutoff_len = %u: lower "
                                     "cutoff_len or add text",
                                     n_tokens, meta->cutoff_len);
    meta->n_records = dataset->n_records;
    meta->n_skipped_records = dataset->n_skipped;
    meta->packing = false; /* each block fills its row */
    dataset_images no_images = {0};
    if (status == 0)
        status = write_dataset(stage, blocks, n_blocks, &no_images, meta);
    for (size_t i = 0; i < n_blocks; i++)
        ft_encoded_sample_free(&blocks[i]);
    free(blocks);
    return status;
}

/* This device's rate, for `ftpipe estimate`: every split's tokens per second of
 * the whole stage, by wall clock and by CPU time (all its threads). */
static void log_rate(ft_stage *stage, const ft_token_dataset_meta *meta, uint64_t start_ns, uint64_t start_cpu_ns)
{
    double tokens = (double)(meta->train.n_tokens + meta->validation.n_tokens);
    double seconds = (double)(ft_now_ns() - start_ns) * 1e-9, cpu_seconds = (double)(ft_process_cpu_ns() - start_cpu_ns) * 1e-9;
    if (seconds > 0.0)
        ft_stage_metric(stage, 0, "tokenize_tokens_per_s_cpu", tokens / seconds);
    if (cpu_seconds > 0.0)
        ft_stage_metric(stage, 0, "tokenize_tokens_per_cpu_s_cpu", tokens / cpu_seconds);
}

static int run_tokenize(ft_stage *stage)
{
    uint64_t start_ns = ft_now_ns(), start_cpu_ns = ft_process_cpu_ns();
    const ft_chat_template *chat_template;
    if (check_parameters(stage, &chat_template) != 0)
        return -1;
    ft_token_dataset_meta meta;
    memset(&meta, 0, sizeof meta);
    snprintf(meta.template_name, sizeof meta.template_name, "%s", ft_chat_template_name(chat_template));
    meta.cutoff_len = (uint32_t)ft_stage_param_int(stage, "cutoff_len");
    meta.packing = ft_stage_param_bool(stage, "packing");
    meta.train_on_prompt = ft_stage_param_bool(stage, "train_on_prompt");
    meta.mask_history = ft_stage_param_bool(stage, "mask_history");

    ft_tokenizer *tokenizer;
    if (ft_tokenizer_load(ft_stage_input_path(stage, 0), &tokenizer) != 0)
        return ft_error_context("the first input of tokenize must be a model folder or a tokenizer.json");
    if (ft_chat_template_check_tokenizer(chat_template, tokenizer) != 0 ||
        check_llava_image_token(stage, chat_template, tokenizer) != 0) {
        ft_tokenizer_free(tokenizer);
        return ft_error_context("%s", ft_stage_input_path(stage, 0));
    }
    ft_hash_to_hex(ft_tokenizer_hash(tokenizer), meta.tokenizer_hash);
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    int status = read_datasets(stage, chat_template, &dataset);

    if (status == 0 && is_pretraining(stage)) {
        status = encode_pretraining(stage, tokenizer, chat_template, &dataset, &meta);
        if (status == 0) {
            summarize(stage, &meta);
            log_rate(stage, &meta, start_ns, start_cpu_ns);
        }
        ft_dataset_free(&dataset);
        ft_tokenizer_free(tokenizer);
        return status;
    }
    ft_encoded_sample *samples = ft_xcalloc(dataset.count ? dataset.count : 1, sizeof *samples);
    char **errors = ft_xcalloc(dataset.count ? dataset.count : 1, sizeof(char *));
    dataset_images images = {0};
    if (status == 0)
        status = gather_images(stage, chat_template, &dataset, &images);
    if (status == 0) {
        ft_stage_log(stage, "tokenizing %zu conversations from %zu file%s with template %s", dataset.count,
                     dataset.n_files, dataset.n_files == 1 ? "" : "s", meta.template_name);
        /* packed, LLaMA-Factory cuts each sample and fills each row one token short of cutoff_len */
        size_t sample_cutoff = meta.packing && meta.cutoff_len > 1 ? meta.cutoff_len - 1 : meta.cutoff_len;
        const ft_encoding_options options = {sample_cutoff, meta.train_on_prompt, meta.mask_history,
                                             ft_stage_param_bool(stage, "enable_thinking")};
        status = ft_encode_conversations(tokenizer, chat_template, dataset.conversations, dataset.count,
                                         images.per_conversation, &options, (int)ft_stage_param_int(stage, "threads"),
                                         report_progress, stage, samples, errors);
        for (size_t i = 0; status == 0 && images.errors && i < dataset.count; i++) {
            if (!images.errors[i])
                continue; /* an unusable image fails its record whatever the encoding made of it */
            ft_encoded_sample_free(&samples[i]);
            free(errors[i]);
            errors[i] = images.errors[i];
            images.errors[i] = NULL;
        }
    }
    if (status == 0) {
        long long failed = settle_failures(stage, &dataset, errors);
        status = failed < 0 ? -1 : 0;
        meta.n_records = dataset.n_records;
        meta.n_skipped_records = dataset.n_skipped + (failed > 0 ? (uint64_t)failed : 0);
        if (status == 0 && (size_t)failed == dataset.count)
            status = ft_error("every record failed to tokenize (see the log)");
    } else {
        for (size_t i = 0; i < dataset.count; i++)
            free(errors[i]);
    }
    if (status == 0)
        status = write_dataset(stage, samples, dataset.count, &images, &meta);
    if (status == 0) {
        summarize(stage, &meta);
        log_rate(stage, &meta, start_ns, start_cpu_ns);
    }
    for (size_t i = 0; i < dataset.count; i++)
        ft_encoded_sample_free(&samples[i]);
    free(samples);
    free(errors);
    dataset_images_free(&images, dataset.count);
    ft_dataset_free(&dataset);
    ft_tokenizer_free(tokenizer);
    return status;
}

/* --- estimate --- */

/* Conversations encoded to learn their mean length: spread over the data. */
#define ESTIMATE_SAMPLES 256

/* What a split of n_samples samples and n_tokens tokens in rows of row_length
 * takes in shards (token_shards.h: header, offsets, ids, loss mask, each section
 * 64-byte aligned). */
static double shard_bytes(double n_samples, double n_tokens, double n_rows)
{
    return 64.0 + 8.0 * (n_samples + 1) + 8.0 * (n_rows + 1) + 5.0 * n_tokens + 3 * 64.0;
}

/* Disk from the data: a sample of its conversations encoded, their mean length
 * (after cutoff_len) times the record count; time from the rate past runs left. */
static int estimate_from_data(ft_stage *stage, ft_stage_estimate *out)
{
    const ft_chat_template *chat_template;
    if (check_parameters(stage, &chat_template) != 0)
        return -1;
    if (!is_pretraining(stage) && ft_chat_template_image_tokens(chat_template)) {
        const char *why = "a vision-language template: the estimate does not count images yet";
        ft_estimate_unknown(&out->disk_bytes, "%s", why);
        ft_estimate_unknown(&out->time_s, "%s", why);
        return 0;
    }
    for (size_t i = 0; i < ft_stage_input_count(stage); i++)
        if (!ft_path_exists(ft_stage_input_path(stage, i))) {
            ft_estimate_unknown(&out->disk_bytes, "needs %s, which is not built yet", ft_stage_input_path(stage, i));
            ft_estimate_unknown(&out->time_s, "needs %s, which is not built yet", ft_stage_input_path(stage, i));
            return 0;
        }
    ft_tokenizer *tokenizer;
    if (ft_tokenizer_load(ft_stage_input_path(stage, 0), &tokenizer) != 0)
        return ft_error_context("the first input of tokenize must be a model folder or a tokenizer.json");
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    int status = read_datasets(stage, chat_template, &dataset);
    size_t n = dataset.count < ESTIMATE_SAMPLES ? dataset.count : ESTIMATE_SAMPLES;
    ft_conversation *chosen = ft_xcalloc(n ? n : 1, sizeof *chosen);
    ft_encoded_sample *samples = ft_xcalloc(n ? n : 1, sizeof *samples);
    char **errors = ft_xcalloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) /* a shallow copy: the dataset keeps owning them */
        chosen[i] = dataset.conversations[i * dataset.count / n];
    uint32_t cutoff = (uint32_t)ft_stage_param_int(stage, "cutoff_len");
    bool packing = ft_stage_param_bool(stage, "packing") && !is_pretraining(stage);
    const ft_encoding_options options = {packing && cutoff > 1 ? cutoff - 1 : cutoff,
                                         ft_stage_param_bool(stage, "train_on_prompt"),
                                         ft_stage_param_bool(stage, "mask_history"),
                                         ft_stage_param_bool(stage, "enable_thinking")};
    double sampled_tokens = 0.0;
    size_t encoded = 0;
    if (status == 0 && is_pretraining(stage)) { /* each text and its EOS */
        ft_encoded_sample *blocks = NULL;
        size_t n_blocks = 0, n_tokens = 0;
        status = ft_encode_pretraining(tokenizer, chosen, n, ft_chat_template_pretraining_eos(chat_template, tokenizer),
                                       1, &blocks, &n_blocks, &n_tokens);
        for (size_t i = 0; i < n_blocks; i++)
            ft_encoded_sample_free(&blocks[i]);
        free(blocks);
        sampled_tokens = (double)n_tokens;
        encoded = n;
    } else if (status == 0) {
        status = ft_encode_conversations(tokenizer, chat_template, chosen, n, NULL, &options, 1, NULL, NULL, samples,
                                         errors);
    }
    for (size_t i = 0; i < n; i++) {
        if (status == 0 && !is_pretraining(stage) && !errors[i] && samples[i].n_tokens > 0) {
            sampled_tokens += (double)samples[i].n_tokens;
            encoded++;
        }
        free(errors[i]);
        ft_encoded_sample_free(&samples[i]);
    }
    if (status == 0 && encoded > 0) {
        double mean = sampled_tokens / (double)encoded, n_samples = (double)dataset.count * encoded / n;
        double tokens = mean * n_samples, rows = n_samples;
        if (is_pretraining(stage)) { /* texts run together, cut into whole blocks */
            rows = floor(tokens / cutoff);
            ft_estimate_set(&out->disk_bytes, shard_bytes(rows, rows * cutoff, rows),
                            "%.0f texts x %.1f tokens with EOS (the mean of %zu encoded) = %.0f blocks of cutoff_len "
                            "%u x 5 bytes a token (id and loss mask), and their offsets",
                            n_samples, mean, encoded, rows, cutoff);
            tokens = rows * cutoff;
        } else {
            if (packing)
                rows = ceil(tokens / (cutoff > 1 ? cutoff - 1 : cutoff));
            ft_estimate_set(&out->disk_bytes, shard_bytes(n_samples, tokens, rows),
                            "%.0f samples x %.1f tokens (the mean of %zu encoded, cut to cutoff_len %u) = %.0f tokens "
                            "x 5 bytes (id and loss mask), and %.0f rows' offsets",
                            n_samples, mean, encoded, cutoff, tokens, rows);
        }
        out->work[0] = (ft_estimate_work){tokens, "tokenize_tokens", "tokens", "tokenizing and writing"};
        out->n_work = 1;
        out->device_name = "cpu";
    } else if (status == 0) {
        ft_estimate_unknown(&out->disk_bytes, "none of the %zu conversations sampled encodes", n);
    }
    free(chosen);
    free(samples);
    free(errors);
    ft_dataset_free(&dataset);
    ft_tokenizer_free(tokenizer);
    return status;
}

/* What the run would refuse (a bad record, a parameter) it says when it runs,
 * with its own message; the estimate says only that it cannot tell. */
static int estimate_tokenize(ft_stage *stage, ft_stage_estimate *out)
{
    if (estimate_from_data(stage, out) == 0)
        return 0;
    ft_estimate_unknown(&out->disk_bytes, "cannot estimate: %s", ft_error_message());
    ft_estimate_unknown(&out->time_s, "cannot estimate: %s", ft_error_message());
    ft_error_clear();
    return 0;
}

const ft_stage_kind ft_kind_tokenize = {
    .name = "tokenize",
    .version = 6, /* 2: meta.json's tokenizer_hash covers the eos token; 3: LLaMA-Factory's qwen3 think blocks
                     and untrimmed llama3, BOS from the tokenizer; 4: packed rows filled to cutoff_len - 1;
                     5: images read for qwen2_vl; 6: LLaVA's images, image store version 2 */
    .run = run_tokenize,
    .estimate = estimate_tokenize,
};
