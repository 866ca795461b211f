/* tokenize: datasets -> mmap-able token shards.
 *
 *   data/train_set: tokenize models/base data/math_train.json
 *
 * The first input is a model folder (or a tokenizer.json); the others are
 * dataset files, folders of them, or a folder with LLaMA-Factory's
 * dataset_info.json whose entries `dataset =` names. `stage = sft` encodes
 * conversations with the chat template; `stage = pt` encodes texts for
 * continued pretraining. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/formats/dataset.h"
#include "ftpipe/formats/dataset_inputs.h"
#include "ftpipe/formats/token_shards.h"
#include "ftpipe/text/chat_template.h"
#include "ftpipe/text/pretraining_encoding.h"
#include "ftpipe/text/sample_encoding.h"
#include "ftpipe/text/tokenizer.h"

static bool is_pretraining(ft_stage *stage) { return strcmp(ft_stage_param_string(stage, "stage"), "pt") == 0; }

static int read_datasets(ft_stage *stage, ft_dataset *dataset)
{
    size_t n_paths = ft_stage_input_count(stage) - 1;
    const char **paths = ft_xmalloc(n_paths * sizeof *paths);
    for (size_t i = 0; i < n_paths; i++)
        paths[i] = ft_stage_input_path(stage, i + 1);
    ft_dataset_input_options options = {
        .format = is_pretraining(stage) ? "text" : ft_stage_param_string(stage, "format"),
        .on_error = strcmp(ft_stage_param_string(stage, "on_error"), "skip") == 0 ? FT_ON_ERROR_SKIP
                                                                                   : FT_ON_ERROR_FAIL,
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

/* Splits the encoded samples, writes each split's shards and meta.json. */
static int write_dataset(ft_stage *stage, const ft_encoded_sample *samples, size_t count, ft_token_dataset_meta *meta)
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
    if (status == 0)
        status = ft_write_samples(train_dir, samples, train, n_train, meta->packing, meta->cutoff_len, 0, &meta->train);
    if (status == 0 && n_validation > 0)
        status = ft_write_samples(validation_dir, samples, validation, n_validation, meta->packing, meta->cutoff_len,
                                  0, &meta->validation);
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
    return ft_chat_template_find(ft_stage_param_string(stage, "template"), chat_template);
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
    if (status == 0)
        status = write_dataset(stage, blocks, n_blocks, meta);
    for (size_t i = 0; i < n_blocks; i++)
        ft_encoded_sample_free(&blocks[i]);
    free(blocks);
    return status;
}

static int run_tokenize(ft_stage *stage)
{
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
    if (ft_chat_template_check_tokenizer(chat_template, tokenizer) != 0) {
        ft_tokenizer_free(tokenizer);
        return ft_error_context("%s", ft_stage_input_path(stage, 0));
    }
    ft_hash_to_hex(ft_tokenizer_hash(tokenizer), meta.tokenizer_hash);
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    int status = read_datasets(stage, &dataset);

    if (status == 0 && is_pretraining(stage)) {
        status = encode_pretraining(stage, tokenizer, chat_template, &dataset, &meta);
        if (status == 0)
            summarize(stage, &meta);
        ft_dataset_free(&dataset);
        ft_tokenizer_free(tokenizer);
        return status;
    }
    ft_encoded_sample *samples = ft_xcalloc(dataset.count ? dataset.count : 1, sizeof *samples);
    char **errors = ft_xcalloc(dataset.count ? dataset.count : 1, sizeof(char *));
    if (status == 0) {
        ft_stage_log(stage, "tokenizing %zu conversations from %zu file%s with template %s", dataset.count,
                     dataset.n_files, dataset.n_files == 1 ? "" : "s", meta.template_name);
        /* packed, LLaMA-Factory cuts each sample and fills each row one token short of cutoff_len */
        size_t sample_cutoff = meta.packing && meta.cutoff_len > 1 ? meta.cutoff_len - 1 : meta.cutoff_len;
        const ft_encoding_options options = {sample_cutoff, meta.train_on_prompt, meta.mask_history,
                                             ft_stage_param_bool(stage, "enable_thinking")};
        status = ft_encode_conversations(tokenizer, chat_template, dataset.conversations, dataset.count, NULL, &options,
                                         (int)ft_stage_param_int(stage, "threads"), report_progress, stage, samples,
                                         errors);
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
        status = write_dataset(stage, samples, dataset.count, &meta);
    if (status == 0)
        summarize(stage, &meta);
    for (size_t i = 0; i < dataset.count; i++)
        ft_encoded_sample_free(&samples[i]);
    free(samples);
    free(errors);
    ft_dataset_free(&dataset);
    ft_tokenizer_free(tokenizer);
    return status;
}

const ft_stage_kind ft_kind_tokenize = {
    .name = "tokenize",
    .version = 4, /* 2: meta.json's tokenizer_hash covers the eos token; 3: LLaMA-Factory's qwen3 think blocks
                     and untrimmed llama3, BOS from the tokenizer; 4: packed rows filled to cutoff_len - 1 */
    .run = run_tokenize,
};
