/* evaluate: a model's answers and loss on held-out data.
 *
 *   report: evaluate models/base adapter data/math_eval.json
 *       checker = sum-equals
 *       compare_base = true
 *
 * Inputs: a model folder, optionally a train output (recognised by its
 * ftpipe_train.json: a LoRA adapter is applied to the model, a fully
 * fine-tuned model replaces it), then the eval data. Prompts are encoded as
 * the tokenize stage encodes them, answers generated in batches and judged by
 * the checker; the loss is computed over the answers as training computes it.
 * The output folder holds results.jsonl, metrics.json and report.md. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/backend/comm_solo.h"
#include "ftpipe/backend/cuda_scratch.h"
#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/eval/checker.h"
#include "ftpipe/eval/eval_report.h"
#include "ftpipe/eval/evaluation.h"
#include "ftpipe/formats/dataset_inputs.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/generate.h"
#include "ftpipe/model/param_shards.h"
#include "ftpipe/model/train_work.h"
#include "ftpipe/model/vision_memory.h"
#include "ftpipe/stages/stage_backend.h"
#include "ftpipe/stages/stage_images.h"
#include "ftpipe/stages/stage_ranks.h"
#include "ftpipe/text/chat_template.h"
#include "ftpipe/text/sample_encoding.h"
#include "ftpipe/text/tokenizer.h"

enum { MAX_STOP_TOKENS = 4, EXAMPLES_IN_REPORT = 3 };

/* What ftpipe_train.json says about a train output. */
typedef struct {
    bool full;                  /* a fine-tuned model folder, else a LoRA adapter */
    char *template_name;
    char *tokenizer_hash;
} train_output;

/* One evaluation sample: its question and expected answer as text, the
 * prompt's tokens for generation and the whole sample's for the loss. */
typedef struct {
    const char *question;       /* the last user message */
    const char *expected;       /* the last assistant message */
    ft_token_span prompt;       /* points into encoded (or into full when encoded was cut) */
    ft_encoded_sample encoded;  /* cut at cutoff_len, for the loss */
    ft_encoded_sample full;     /* uncut, only when encoded was cut */
} eval_sample;

/* One model's answers and numbers. */
typedef struct {
    ft_eval_result result;
    char **answers;
    bool *correct;
} model_outcome;

typedef struct {
    ft_stage *stage;
    const char *model_dir;
    const char *train_dir;      /* NULL without a train output */
    const char *data_path;
    train_output train;
    const ft_chat_template *chat_template;
    ft_tokenizer *tokenizer;
    ft_checker *checker;
    ft_dataset dataset;
    ft_stage_images images;     /* a vision-language template's records' images (table NULL: none) */
    eval_sample *samples;
    size_t count;
    int batch_size;
    int max_generate_tokens;    /* the longest prompt plus max_new_tokens */
    int max_seq_len;            /* that, or the longest loss sample */
    ft_generate_options generate;
    int32_t stop_tokens[MAX_STOP_TOKENS];
    int n_phases;               /* generation and loss passes, for progress */
    int phase;
    ft_stage_ranks ranks;       /* rank r takes samples r, r + ranks, ...; rank 0 gathers them */
    bool estimating;            /* read for `ftpipe estimate`, in the engine's process: no log */
    const char *device;         /* the backend's name once one ran */
    bool offload_param;         /* the weights stay in host memory, a unit uploaded as a pass uses it */
} eval_run;

/* --- inputs --- */

static bool has_file(const char *dir, const char *name)
{
    char *path = ft_path_join(dir, name);
    bool found = ft_path_exists(path);
    free(path);
    return found;
}

static int check_inputs(eval_run *run)
{
    ft_stage *stage = run->stage;
    size_t n = ft_stage_input_count(stage);
    if (n < 2 || n > 3)
        return ft_stage_fail(stage, "evaluate takes a model folder, optionally a train output, and eval data "
                                    "(`%s: evaluate MODEL [TRAIN_OUTPUT] DATA`); %zu input%s given",
                             ft_stage_target(stage), n, n == 1 ? "" : "s");
    run->model_dir = ft_stage_input_path(stage, 0);
    run->train_dir = n == 3 ? ft_stage_input_path(stage, 1) : NULL;
    run->data_path = ft_stage_input_path(stage, n - 1);
    if (has_file(run->model_dir, "ftpipe_train.json"))
        return ft_stage_fail(stage, "evaluate's first input %s is a train output: give the base model folder first "
                                    "(`%s: evaluate MODEL TRAIN_OUTPUT DATA`)",
                             run->model_dir, ft_stage_target(stage));
    if (!has_file(run->model_dir, "config.json"))
        return ft_stage_fail(stage, "evaluate's first input %s is not a model folder (it has no config.json)",
                             run->model_dir);
    if (run->train_dir && !has_file(run->train_dir, "ftpipe_train.json"))
        return ft_stage_fail(stage, "evaluate's second input %s is not a train output (it has no ftpipe_train.json): "
                                    "inputs are MODEL [TRAIN_OUTPUT] DATA",
                             run->train_dir);
    if (has_file(run->data_path, "ftpipe_train.json"))
        return ft_stage_fail(stage, "evaluate's last input %s is a train output, not eval data: inputs are MODEL "
                                    "[TRAIN_OUTPUT] DATA",
                             run->data_path);
    if (has_file(run->data_path, "meta.json") && !has_file(run->data_path, "dataset_info.json"))
        return ft_stage_fail(stage, "evaluate's last input %s is a tokenize output: evaluate reads the raw eval "
                                    "data (alpaca or sharegpt JSON/JSONL) to render prompts and judge answers",
                             run->data_path);
    return 0;
}

static int read_train_output(eval_run *run)
{
    char *path = ft_path_join(run->train_dir, "ftpipe_train.json");
    json_error_t json_error;
    json_t *root = json_load_file(path, 0, &json_error);
    const char *type = json_string_value(json_object_get(root, "finetuning_type"));
    const char *template_name = json_string_value(json_object_get(root, "template"));
    const char *hash = json_string_value(json_object_get(root, "tokenizer_hash"));
    int status = 0;
    if (!root)
        status = ft_error("%s: not readable JSON: %s (line %d)", path, json_error.text, json_error.line);
    else if (!type || (strcmp(type, "lora") != 0 && strcmp(type, "full") != 0) || !template_name || !hash)
        status = ft_error("%s: expected \"finetuning_type\" (lora or full), \"template\" and \"tokenizer_hash\": "
                          "rerun the train stage that made it",
                          path);
    if (status == 0) {
        run->train.full = strcmp(type, "full") == 0;
        run->train.template_name = ft_xstrdup(template_name);
        run->train.tokenizer_hash = ft_xstrdup(hash);
    }
    json_decref(root);
    free(path);
    return status;
}

static int load_tokenizer(eval_run *run)
{
    if (ft_tokenizer_load(run->model_dir, &run->tokenizer) != 0)
        return ft_error_context("evaluate's first input must be a model folder with a tokenizer.json");
    if (!run->train_dir)
        return 0;
    char hash[FT_HASH_HEX_LENGTH + 1];
    ft_hash_to_hex(ft_tokenizer_hash(run->tokenizer), hash);
    if (strcmp(hash, run->train.tokenizer_hash) == 0)
        return 0;
    return ft_stage_fail(run->stage, "the model's tokenizer (%s, hash %s) is not the one %s was trained with "
                                     "(hash %s): evaluate a train output with its own base model",
                         run->model_dir, hash, run->train_dir, run->train.tokenizer_hash);
}

/* --- parameters --- */

static int choose_template(eval_run *run)
{
    ft_stage *stage = run->stage;
    const char *name = ft_stage_param_string(stage, "template");
    if (!*name && run->train_dir)
        name = run->train.template_name;
    if (!*name)
        return ft_stage_fail(stage, "evaluate needs template = NAME, the chat template the model answers in "
                                    "(%s); with a train output it defaults to the template its data was "
                                    "tokenized with",
                             ft_chat_template_names());
    if (run->train_dir && strcmp(name, run->train.template_name) != 0)
        ft_stage_log(stage, "template = %s, while %s was trained with template %s", name, run->train_dir,
                     run->train.template_name);
    if (ft_chat_template_find(name, &run->chat_template) != 0)
        return -1;
    /* a LLaVA model's images: its templates as LlavaPlugin writes them */
    if (!ft_llava_config_is_llava(run->model_dir))
        return 0;
    return ft_chat_template_for_llava(run->chat_template, &run->chat_template);
}

static int make_checker(eval_run *run)
{
    ft_stage *stage = run->stage;
    const char *name = ft_stage_param_string(stage, "checker");
    const char *pattern = ft_stage_param_string(stage, "pattern"), *command = ft_stage_param_string(stage, "command");
    bool regex = strcmp(name, "regex") == 0, shell = strcmp(name, "shell") == 0;
    if (*pattern && !regex)
        return ft_stage_fail(stage, "pattern = %s is for checker = regex (checker is %s)", pattern, name);
    if (*command && !shell)
        return ft_stage_fail(stage, "command = %s is for checker = shell (checker is %s)", command, name);
    if (ft_checker_create(name, regex ? pattern : command, &run->checker) == 0)
        return 0;
    return regex ? ft_error_context("pattern = %s", pattern) : -1;
}

static int check_range(ft_stage *stage, const char *name, int64_t low, int64_t high)
{
    int64_t value = ft_stage_param_int(stage, name);
    if (value >= low && value <= high)
        return 0;
    return ft_stage_fail(stage, "%s = %lld: expected %lld to %lld", name, (long long)value, (long long)low,
                         (long long)high);
}

static int read_parameters(eval_run *run)
{
    ft_stage *stage = run->stage;
    if (check_range(stage, "max_new_tokens", 1, 1 << 16) != 0 || check_range(stage, "batch_size", 1, 1 << 16) != 0 ||
        check_range(stage, "max_samples", 0, INT64_MAX) != 0 || check_range(stage, "cutoff_len", 1, 1 << 24) != 0)
        return -1;
    double temperature = ft_stage_param_float(stage, "temperature"), top_p = ft_stage_param_float(stage, "top_p");
    if (!(temperature >= 0))
        return ft_stage_fail(stage, "temperature = %g: expected 0 (greedy) or more", temperature);
    if (!(top_p > 0 && top_p <= 1))
        return ft_stage_fail(stage, "top_p = %g: expected a probability above 0, up to 1", top_p);
    if (ft_stage_param_bool(stage, "compare_base") && !run->train_dir)
        return ft_stage_fail(stage, "compare_base = true compares a train output with its base model, but %s has "
                                    "none: give one (`%s: evaluate MODEL TRAIN_OUTPUT DATA`) or drop compare_base",
                             ft_stage_target(stage), ft_stage_target(stage));
    run->generate = (ft_generate_options){
        .max_new_tokens = (int)ft_stage_param_int(stage, "max_new_tokens"),
        .temperature = temperature,
        .top_p = top_p,
        .seed = (uint64_t)ft_stage_param_int(stage, "seed"),
        .stop_tokens = run->stop_tokens,
    };
    run->offload_param = strcmp(ft_stage_param_string(stage, "offload_param"), "cpu") == 0;
    return choose_template(run) == 0 && make_checker(run) == 0 ? 0 : -1;
}

/* Generation stops at the end-of-sequence token and at the template's stop
 * words (LLaMA-Factory's get_stop_token_ids), once the tokenizer is known to
 * have the template's special tokens. */
static int choose_stop_tokens(eval_run *run)
{
    if (ft_chat_template_check_tokenizer(run->chat_template, run->tokenizer) != 0)
        return ft_stage_fail(run->stage, "%s", ft_error_message());
    const char *const *stop_words = ft_chat_template_stop_words(run->chat_template);
    int n = 0;
    for (int i = -1; i < 0 || stop_words[i]; i++) {
        const char *token = i < 0 ? ft_tokenizer_eos_token(run->tokenizer) : stop_words[i];
        int64_t id = token ? ft_tokenizer_token_id(run->tokenizer, token) : -1;
        bool known = false;
        for (int j = 0; j < n; j++)
            known |= run->stop_tokens[j] == id;
        if (id >= 0 && !known && n < MAX_STOP_TOKENS)
            run->stop_tokens[n++] = (int32_t)id;
    }
    run->generate.n_stop_tokens = n;
    return 0;
}

/* --- samples --- */

/* Records' images, for a vision-language model only: a text-only one would
 * read the image tokens as text. */
static int read_images(eval_run *run)
{
    ft_stage *stage = run->stage;
    size_t with_images = 0;
    for (size_t i = 0; i < run->count; i++)
        with_images += run->dataset.conversations[i].n_images > 0;
    if (with_images == 0)
        return 0;
    ft_model_config config;
    if (ft_language_model_config_load(run->model_dir, &config) != 0)
        return -1;
    if (!config.vision_language && !config.llava)
        return ft_stage_fail(stage, "%s has records with images, but %s is a text-only model (%s): evaluate a "
                                    "vision-language model such as Qwen2VLForConditionalGeneration or "
                                    "LlavaForConditionalGeneration on it, or use "
                                    "a text template",
                             run->data_path, run->model_dir, config.architecture_name);
    return ft_stage_images_gather(stage, run->model_dir, &run->dataset, run->count, ft_stage_input_count(stage) - 1,
                                  &run->images);
}

static int read_data(eval_run *run)
{
    ft_stage *stage = run->stage;
    ft_dataset_input_options options = {
        .format = ft_stage_param_string(stage, "format"),
        .on_error = strcmp(ft_stage_param_string(stage, "on_error"), "skip") == 0 ? FT_ON_ERROR_SKIP
                                                                                   : FT_ON_ERROR_FAIL,
    };
    options.dataset_words = ft_stage_param_list(stage, "dataset", &options.n_dataset_words);
    options.read_images = ft_chat_template_image_tokens(run->chat_template) != NULL;
    if (ft_dataset_read_inputs(&run->data_path, 1, &options, &run->dataset) != 0)
        return -1;
    for (size_t i = 0; i < run->dataset.n_skip_messages; i++)
        ft_stage_log(stage, "skipped %s", run->dataset.skip_messages[i]);
    if (run->dataset.n_skipped > run->dataset.n_skip_messages)
        ft_stage_log(stage, "skipped %zu more bad records", run->dataset.n_skipped - run->dataset.n_skip_messages);
    if (run->dataset.count == 0)
        return ft_stage_fail(stage, "%s holds no usable record (%zu read, %zu skipped)", run->data_path,
                             run->dataset.n_records, run->dataset.n_skipped);
    size_t max_samples = (size_t)ft_stage_param_int(stage, "max_samples");
    run->count = max_samples && max_samples < run->dataset.count ? max_samples : run->dataset.count;
    return read_images(run);
}

/* The prompt is what comes before the last answer: the tokens up to the last
 * run of trained tokens, as the tokenize stage encodes the sample. */
static ft_token_span prompt_of(const ft_encoded_sample *sample)
{
    size_t end = sample->n_tokens;
    while (end > 0 && !sample->loss_mask[end - 1])
        end--;
    while (end > 0 && sample->loss_mask[end - 1])
        end--;
    return (ft_token_span){sample->ids, end > 0 ? end : sample->n_tokens};
}

static int encode_sample(eval_run *run, const ft_conversation *conversation, const ft_conversation_images *images,
                         eval_sample *sample)
{
    size_t cutoff_len = (size_t)ft_stage_param_int(run->stage, "cutoff_len");
    ft_encoding_options options = {.cutoff_len = cutoff_len, .enable_thinking = true};
    for (size_t m = 0; m < conversation->count; m++) {
        if (conversation->messages[m].role == FT_ROLE_USER)
            sample->question = conversation->messages[m].content;
        if (conversation->messages[m].role == FT_ROLE_ASSISTANT)
            sample->expected = conversation->messages[m].content;
    }
    if (ft_encode_conversation_with_images(run->tokenizer, run->chat_template, conversation->messages,
                                           conversation->count, images, &options, &sample->encoded) != 0)
        return ft_error_context("%s: record %zu", conversation->file, conversation->record);
    const ft_encoded_sample *whole = &sample->encoded;
    if (sample->encoded.full_tokens > sample->encoded.n_tokens) {
        if (images && images->count > 0) /* a cut image's tokens could not be read */
            return ft_stage_fail(run->stage, "%s: record %zu: with its images it takes %zu tokens, more than "
                                             "cutoff_len %zu: raise cutoff_len or lower image_max_pixels",
                                 conversation->file, conversation->record, sample->encoded.full_tokens, cutoff_len);
        options.cutoff_len = sample->encoded.full_tokens;
        if (ft_encode_conversation(run->tokenizer, run->chat_template, conversation->messages, conversation->count,
                                   &options, &sample->full) != 0)
            return ft_error_context("%s: record %zu", conversation->file, conversation->record);
        whole = &sample->full;
    }
    sample->prompt = prompt_of(whole);
    if (sample->prompt.n_ids == 0)
        return ft_stage_fail(run->stage, "%s: record %zu: the prompt renders to no tokens", conversation->file,
                             conversation->record);
    if (sample->prompt.n_ids > cutoff_len) {
        sample->prompt.ids += sample->prompt.n_ids - cutoff_len;
        sample->prompt.n_ids = cutoff_len;
    }
    return 0;
}

static int encode_samples(eval_run *run)
{
    run->samples = ft_xcalloc(run->count, sizeof *run->samples);
    size_t longest_prompt = 0, longest_sample = 0, truncated = 0;
    for (size_t i = 0; i < run->count; i++) {
        eval_sample *sample = &run->samples[i];
        const ft_conversation_images *images = run->images.table ? &run->images.per_conversation[i] : NULL;
        if (encode_sample(run, &run->dataset.conversations[i], images, sample) != 0)
            return -1;
        longest_prompt = sample->prompt.n_ids > longest_prompt ? sample->prompt.n_ids : longest_prompt;
        longest_sample = sample->encoded.n_tokens > longest_sample ? sample->encoded.n_tokens : longest_sample;
        truncated += sample->full.n_tokens > 0;
    }
    run->max_generate_tokens = (int)longest_prompt + run->generate.max_new_tokens;
    run->max_seq_len = run->max_generate_tokens > (int)longest_sample ? run->max_generate_tokens : (int)longest_sample;
    int64_t batch_size = ft_stage_param_int(run->stage, "batch_size");
    run->batch_size = (size_t)batch_size < run->count ? (int)batch_size : (int)run->count;
    if (!run->estimating)
        ft_stage_log(run->stage, "%zu samples (%zu cut at cutoff_len), longest prompt %zu tokens, template %s, "
                                 "batches of %d",
                     run->count, truncated, longest_prompt, ft_chat_template_name(run->chat_template),
                     run->batch_size);
    return 0;
}

/* --- one model --- */

static int report_progress(size_t done, size_t total, void *context)
{
    eval_run *run = context;
    if (run->ranks.local_rank != 0)
        return 0;
    double fraction = ((double)run->phase + (double)done / (double)total) / (double)run->n_phases;
    ft_stage_progress(run->stage, fraction, "model %d/%d, %s %zu/%zu", run->phase / 2 + 1, run->n_phases / 2,
                      run->phase % 2 ? "loss" : "answers", done, total);
    return ft_stage_cancelled(run->stage);
}

/* The model with the train output's weights (adapted), or the base model. */
/* The model folder and its options: the adapted model, or the base. */
static int model_options(const eval_run *run, bool adapted, ft_model_options *options, const char **dir)
{
    *options = (ft_model_options){.max_batch_size = run->batch_size, .max_seq_len = run->max_seq_len,
                                  .finetuning = FT_FINETUNE_NONE};
    if (adapted && !run->train.full) {
        if (ft_lora_config_load(run->train_dir, &options->lora) != 0)
            return -1;
        options->use_lora = true;
        options->lora.dropout = 0; /* inference */
    }
    *dir = adapted && run->train.full ? run->train_dir : run->model_dir;
    return 0;
}

/* solo: with offload_param, the communicator of one rank through which the
 * model streams its weights from host memory (ZeRO-3's param_shards.h). */
static int load_model(eval_run *run, bool adapted, ft_backend *backend, ft_comm *solo, ft_model **model)
{
    ft_model_options options;
    const char *dir;
    if (model_options(run, adapted, &options, &dir) != 0)
        return -1;
    bool lora = options.use_lora;
    int loaded = solo ? ft_model_load_sharded(dir, backend, &options, solo, true, false, model)
                      : ft_model_load(dir, backend, &options, model);
    if (loaded != 0)
        return ft_error_context("loading the model from %s", dir);
    if (lora && ft_lora_load(ft_model_lora(*model), run->train_dir) != 0) {
        ft_model_free(*model);
        *model = NULL;
        return ft_error_context("loading the adapter of %s", run->train_dir);
    }
    return 0;
}

static double seconds_since(uint64_t start_ns)
{
    return (double)(ft_now_ns() - start_ns) / 1e9;
}

/* This rank's samples: r, r + ranks, r + 2 ranks, ... (all of them with one rank). */
static size_t shard_of(const eval_run *run, size_t *indices)
{
    size_t n = 0;
    for (size_t i = (size_t)run->ranks.rank; i < run->count; i += (size_t)(run->ranks.size > 1 ? run->ranks.size : 1))
        indices[n++] = i;
    return n;
}

/* Every rank's answers, in sample order, on every rank: fixed-size slots of
 * [length, ids...], one per sample of a rank's shard. */
static int gather_answers(eval_run *run, const size_t *indices, size_t n, int32_t *answer_ids, int *answer_lengths)
{
    ft_comm *comm = run->ranks.comm;
    size_t n_new = (size_t)run->generate.max_new_tokens, slot = n_new + 1;
    size_t per_rank = (run->count + (size_t)comm->size - 1) / (size_t)comm->size;
    int32_t *mine = ft_xcalloc(per_rank * slot, sizeof *mine), *all = ft_xmalloc(per_rank * slot * sizeof *all *
                                                                                   (size_t)comm->size);
    for (size_t j = 0; j < n; j++) {
        mine[j * slot] = answer_lengths[indices[j]];
        memcpy(mine + j * slot + 1, answer_ids + indices[j] * n_new, n_new * sizeof *mine);
    }
    int status = comm->all_gather(comm, mine, all, per_rank * slot * sizeof *mine);
    for (int k = 0; k < comm->size && status == 0; k++)
        for (size_t j = 0; j < per_rank; j++) {
            size_t sample = j * (size_t)comm->size + (size_t)k;
            if (sample >= run->count)
                break;
            const int32_t *record = all + ((size_t)k * per_rank + j) * slot;
            answer_lengths[sample] = record[0];
            memcpy(answer_ids + sample * n_new, record + 1, n_new * sizeof *record);
        }
    free(mine);
    free(all);
    return status < 0 ? ft_error_context("gathering the ranks' answers") : 0;
}

/* The loss over every rank's samples: their loss sums and token counts added. */
static int add_losses(eval_run *run, ft_eval_result *result)
{
    double sums[2] = {result->eval_loss * (double)result->loss_tokens, (double)result->loss_tokens};
    ft_comm *comm = run->ranks.comm;
    if (comm->all_reduce_sum(comm, sums, 2, FT_COMM_F64) < 0)
        return ft_error_context("adding the ranks' losses");
    result->loss_tokens = (uint64_t)sums[1];
    result->eval_loss = sums[1] > 0.0 ? sums[0] / sums[1] : 0.0;
    return 0;
}

/* Loads, generates and scores the loss, with times and peak memory: this
 * rank's share of the samples, gathered from all ranks. */
static int run_model(eval_run *run, bool adapted, int32_t *answer_ids, int *answer_lengths, ft_eval_result *result)
{
    ft_backend *backend = ft_stage_backend_for_rank(run->stage, "evaluating", run->ranks.local_rank,
                                                    run->ranks.local_size);
    if (!backend)
        return -1;
    run->device = backend->name;
    uint64_t start = ft_now_ns();
    ft_model *model = NULL;
    ft_generator *generator = NULL;
    size_t *indices = ft_xmalloc((run->count ? run->count : 1) * sizeof *indices);
    size_t n = shard_of(run, indices);
    size_t n_new = (size_t)run->generate.max_new_tokens;
    ft_token_span *prompts = ft_xmalloc((n ? n : 1) * sizeof *prompts);
    ft_sample_images *images = run->images.table ? ft_xmalloc((n ? n : 1) * sizeof *images) : NULL;
    ft_encoded_sample *encoded = ft_xmalloc((n ? n : 1) * sizeof *encoded);
    int32_t *shard_ids = ft_xmalloc((n ? n : 1) * n_new * sizeof *shard_ids);
    int *shard_lengths = ft_xcalloc(n ? n : 1, sizeof *shard_lengths);
    for (size_t j = 0; j < n; j++) {
        prompts[j] = run->samples[indices[j]].prompt;
        encoded[j] = run->samples[indices[j]].encoded;
        if (images)
            images[j] = run->images.per_sample[indices[j]];
    }
    ft_comm *solo = run->offload_param ? ft_comm_solo_create(backend) : NULL;
    int status = load_model(run, adapted, backend, solo, &model);
    if (status == 0) {
        result->load_s = seconds_since(start);
        result->load_peak_bytes = backend->peak_bytes(backend);
        status = ft_generator_create(model, run->batch_size, run->max_generate_tokens, &generator);
    }
    if (status == 0) {
        uint64_t generate_start = ft_now_ns();
        status = ft_evaluate_answers(generator, prompts, images, n, run->batch_size, &run->generate, report_progress, run,
                                     shard_ids, shard_lengths);
        for (size_t j = 0; j < n && status == 0; j++) {
            answer_lengths[indices[j]] = shard_lengths[j];
            memcpy(answer_ids + indices[j] * n_new, shard_ids + j * n_new, n_new * sizeof *shard_ids);
        }
        if (status == 0 && run->ranks.comm)
            status = gather_answers(run, indices, n, answer_ids, answer_lengths);
        if (status == 0 && solo && run->ranks.local_rank == 0) {
            ft_param_shards_stats streamed = ft_param_shards_get_stats(ft_model_param_shards(model));
            ft_stage_log(run->stage, "offload_param: the weights stay in host memory; generating gathered %lu units "
                                     "(a layer, the embeddings or the head), %lu of them ahead of their use",
                         streamed.gathers, streamed.gathered_ahead);
        }
        result->generate_s = seconds_since(generate_start);
        result->peak_bytes = backend->peak_bytes(backend);
        run->phase++;
    }
    ft_generator_free(generator);
    if (status == 0) {
        uint64_t loss_start = ft_now_ns();
        status = ft_evaluate_loss(model, encoded, images, n, run->batch_size, report_progress, run, &result->eval_loss,
                                  &result->loss_tokens);
        if (status == 0 && run->ranks.comm)
            status = add_losses(run, result);
        result->loss_s = seconds_since(loss_start);
        run->phase++;
    }
    ft_model_free(model);
    ft_comm_destroy(solo);
    ft_backend_destroy(backend);
    free(indices);
    free(prompts);
    free(images);
    free(encoded);
    free(shard_ids);
    free(shard_lengths);
    return status;
}

/* Evaluates one model: its answers decoded and judged. */
static int evaluate_model(eval_run *run, bool adapted, model_outcome *outcome)
{
    const char *dir = adapted ? run->train_dir : run->model_dir;
    ft_eval_result *result = &outcome->result;
    result->model = ft_path_basename(dir);
    result->n_samples = run->count;
    bool first = run->ranks.local_rank == 0;
    if (first)
        ft_stage_log(run->stage, "evaluating %s", dir);
    int n_new = run->generate.max_new_tokens;
    int32_t *answer_ids = ft_xmalloc(run->count * (size_t)n_new * sizeof *answer_ids);
    int *answer_lengths = ft_xcalloc(run->count, sizeof *answer_lengths);
    outcome->answers = ft_xcalloc(run->count, sizeof(char *));
    outcome->correct = ft_xcalloc(run->count, sizeof(bool));
    uint64_t start = ft_now_ns();
    int status = run_model(run, adapted, answer_ids, answer_lengths, result);
    for (size_t i = 0; i < run->count && status == 0 && first; i++) { /* judged once, by the node's first rank */
        const eval_sample *sample = &run->samples[i];
        result->generated_tokens += (uint64_t)answer_lengths[i];
        status = ft_tokenizer_decode_generated(run->tokenizer, (const uint32_t *)(answer_ids + i * (size_t)n_new),
                                     (size_t)answer_lengths[i], &outcome->answers[i]);
        if (status == 0)
            status = ft_checker_judge(run->checker, sample->question, outcome->answers[i], sample->expected,
                                      &outcome->correct[i]);
        result->n_correct += outcome->correct[i];
    }
    result->total_s = seconds_since(start);
    free(answer_ids);
    free(answer_lengths);
    return status;
}

/* --- the rate `ftpipe estimate` predicts time from --- */

/* The forward passes of one model, in operations (train_work.h): every prompt,
 * every answer counted at max_new_tokens (the rate absorbs how early answers
 * stop), and every sample once more for the loss. */
static int evaluation_ops(const eval_run *run, bool adapted, double *ops)
{
    ft_model_options options;
    const char *dir;
    ft_model_config config;
    if (model_options(run, adapted, &options, &dir) != 0 || ft_language_model_config_load(dir, &config) != 0)
        return -1;
    double tokens = (double)run->count * run->generate.max_new_tokens, sample_tokens = 0.0;
    for (size_t i = 0; i < run->count; i++) {
        tokens += (double)run->samples[i].prompt.n_ids;
        sample_tokens += (double)run->samples[i].encoded.n_tokens;
    }
    ft_train_work work;
    if (ft_train_work_per_token(&config, &options, run->count ? sample_tokens / (double)run->count : 1.0, &work) != 0)
        return -1;
    *ops = (tokens + sample_tokens) * work.forward;
    return 0;
}

static int all_models_ops(const eval_run *run, size_t n_models, double *ops)
{
    *ops = 0.0;
    for (size_t m = 0; m < n_models; m++) {
        double one;
        if (evaluation_ops(run, m == 0 && run->train_dir, &one) != 0)
            return -1;
        *ops += one;
    }
    return 0;
}

static void log_rate(eval_run *run, size_t n_models, double seconds, double cpu_seconds)
{
    double ops;
    if (!run->device || all_models_ops(run, n_models, &ops) != 0)
        return;
    int ranks = run->ranks.size > 1 ? run->ranks.size : 1;
    char *name = ft_xasprintf("evaluate_ops_per_s_%s", run->device);
    if (seconds > 0.0)
        ft_stage_metric(run->stage, 0, name, ops / seconds);
    free(name);
    name = ft_xasprintf("evaluate_ops_per_cpu_s_%s", run->device);
    if (cpu_seconds > 0.0)
        ft_stage_metric(run->stage, 0, name, ops / (cpu_seconds * ranks));
    free(name);
}

/* --- outputs --- */

static int write_text(const char *dir, const char *name, char *text)
{
    char *path = ft_path_join(dir, name);
    int status = ft_write_file_atomic(path, text, strlen(text));
    free(path);
    free(text);
    return status;
}

static int write_results(eval_run *run, const model_outcome *outcomes, size_t n_models, const char *dir)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < run->count; i++) {
        json_t *line = json_pack("{sI ss ss ss sb}", "index", (json_int_t)i, "prompt", run->samples[i].question,
                                 "expected", run->samples[i].expected, "answer", outcomes[0].answers[i], "correct",
                                 outcomes[0].correct[i]);
        if (!line) {
            ft_strbuf_free(&text);
            return ft_error("%s: record %zu: the text is not valid UTF-8", run->dataset.conversations[i].file,
                            run->dataset.conversations[i].record);
        }
        if (n_models > 1) {
            json_object_set_new(line, "base_answer", json_string(outcomes[1].answers[i]));
            json_object_set_new(line, "base_correct", json_boolean(outcomes[1].correct[i]));
        }
        char *encoded = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(line);
        ft_strbuf_puts(&text, encoded);
        ft_strbuf_putc(&text, '\n');
        free(encoded);
    }
    return write_text(dir, "results.jsonl", ft_strbuf_take(&text));
}

static int write_metrics(eval_run *run, const model_outcome *outcomes, size_t n_models, const char *dir)
{
    json_t *root = json_object();
    for (size_t m = 0; m < n_models; m++) {
        ft_eval_metric metrics[FT_EVAL_METRIC_COUNT];
        ft_eval_metrics(&outcomes[m].result, m == 0 ? "" : "base_", metrics);
        for (size_t i = 0; i < FT_EVAL_METRIC_COUNT; i++) {
            json_object_set_new(root, metrics[i].name, json_real(metrics[i].value));
            ft_stage_metric(run->stage, 0, metrics[i].name, metrics[i].value);
        }
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    size_t length = strlen(text);
    text = ft_xrealloc(text, length + 2);
    memcpy(text + length, "\n", 2);
    return write_text(dir, "metrics.json", text);
}

static int write_report(eval_run *run, const model_outcome *outcomes, size_t n_models, const char *dir)
{
    ft_eval_result results[2];
    for (size_t m = 0; m < n_models; m++)
        results[m] = outcomes[m].result;
    ft_strbuf table;
    ft_strbuf_init(&table);
    ft_eval_report_table(results, n_models, &table);
    for (const char *line = table.data; *line;) {
        size_t length = strcspn(line, "\n");
        ft_stage_log(run->stage, "%.*s", (int)length, line);
        line += length + (line[length] == '\n');
    }
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_printf(&text, "# Evaluation of %s on %s\n\n%zu samples, template %s, checker %s\n\n",
                     results[0].model, ft_path_basename(run->data_path), run->count,
                     ft_chat_template_name(run->chat_template), ft_stage_param_string(run->stage, "checker"));
    ft_strbuf_puts(&text, table.data);
    ft_strbuf_puts(&text, "\n## Examples\n\n");
    for (size_t i = 0; i < run->count && i < EXAMPLES_IN_REPORT; i++) {
        ft_eval_answer answers[2];
        for (size_t m = 0; m < n_models; m++)
            answers[m] = (ft_eval_answer){results[m].model, outcomes[m].answers[i], outcomes[m].correct[i]};
        ft_eval_report_example(i + 1, run->samples[i].question, run->samples[i].expected, answers, n_models, &text);
    }
    ft_strbuf_free(&table);
    return write_text(dir, "report.md", ft_strbuf_take(&text));
}

static int write_outputs(eval_run *run, const model_outcome *outcomes, size_t n_models)
{
    const char *dir = ft_stage_output_path(run->stage);
    if (ft_mkdir_p(dir) != 0 || write_results(run, outcomes, n_models, dir) != 0 ||
        write_metrics(run, outcomes, n_models, dir) != 0 || write_report(run, outcomes, n_models, dir) != 0)
        return -1;
    const ft_eval_result *main = &outcomes[0].result;
    if (n_models > 1)
        ft_stage_summary(run->stage, "accuracy %.4f (base %.4f), eval_loss %.4f (base %.4f), %zu samples",
                         ft_eval_accuracy(main), ft_eval_accuracy(&outcomes[1].result), main->eval_loss,
                         outcomes[1].result.eval_loss, run->count);
    else
        ft_stage_summary(run->stage, "accuracy %.4f, eval_loss %.4f, %zu samples", ft_eval_accuracy(main),
                         main->eval_loss, run->count);
    return 0;
}

static void free_run(eval_run *run, model_outcome *outcomes, size_t n_models)
{
    for (size_t m = 0; m < n_models; m++) {
        for (size_t i = 0; outcomes[m].answers && i < run->count; i++)
            free(outcomes[m].answers[i]);
        free(outcomes[m].answers);
        free(outcomes[m].correct);
    }
    for (size_t i = 0; run->samples && i < run->count; i++) {
        ft_encoded_sample_free(&run->samples[i].encoded);
        ft_encoded_sample_free(&run->samples[i].full);
    }
    free(run->samples);
    ft_stage_images_free(&run->images);
    ft_dataset_free(&run->dataset);
    ft_checker_free(run->checker);
    ft_tokenizer_free(run->tokenizer);
    free(run->train.template_name);
    free(run->train.tokenizer_hash);
}

/* What the run and the estimate both need: the inputs, parameters, tokenizer,
 * stop tokens and the encoded samples. */
static int prepare(eval_run *run)
{
    int status = check_inputs(run);
    if (status == 0 && run->train_dir)
        status = read_train_output(run);
    if (status == 0)
        status = read_parameters(run);
    if (status == 0)
        status = load_tokenizer(run);
    if (status == 0)
        status = choose_stop_tokens(run);
    if (status == 0)
        status = read_data(run);
    if (status == 0)
        status = encode_samples(run);
    return status;
}

static int run_evaluate(ft_stage *stage)
{
    eval_run run = {.stage = stage};
    ft_dataset_init(&run.dataset);
    model_outcome outcomes[2];
    memset(outcomes, 0, sizeof outcomes);
    size_t n_models = 0;
    int status = prepare(&run);
    /* The ranks start before any backend does (stage_ranks.h); with one, this is the only process. */
    bool started = status == 0 && ft_stage_ranks_start(stage, &run.ranks) == 0;
    status = started ? 0 : -1;
    if (status == 0 && run.ranks.size > 1 && run.ranks.local_rank == 0)
        ft_stage_log(stage, "%d ranks share the %zu samples", run.ranks.size, run.count);
    if (status == 0) {
        /* The first model is the one the stage is about: the adapted one when there is a train output. */
        n_models = ft_stage_param_bool(stage, "compare_base") ? 2 : 1;
        run.n_phases = 2 * (int)n_models;
        uint64_t start_ns = ft_now_ns(), start_cpu_ns = ft_process_cpu_ns();
        for (size_t m = 0; m < n_models && status == 0; m++)
            status = evaluate_model(&run, m == 0 && run.train_dir, &outcomes[m]);
        if (status == 0 && run.ranks.local_rank == 0)
            log_rate(&run, n_models, (double)(ft_now_ns() - start_ns) * 1e-9,
                     (double)(ft_process_cpu_ns() - start_cpu_ns) * 1e-9);
    }
    if (status == 0 && run.ranks.writes_output && run.ranks.local_rank == 0)
        status = write_outputs(&run, outcomes, n_models);
    if (started) /* the other ranks end here */
        status = ft_stage_ranks_finish(stage, &run.ranks, status);
    free_run(&run, outcomes, n_models);
    return status;
}

/* --- estimate --- */

/* The memory a batch of `batch` prompts takes: the model's plan for it and
 * the longest sample, and the KV cache for it and the longest prompt plus
 * max_new_tokens (on cuda in bf16 with the backend's scratch, else host
 * memory in f32); streamed (offload_param), the language model's weights
 * leave the plan for the two units gathered at once, and on cuda are counted
 * in host memory (*host). */
typedef struct {
    uint64_t peak, host;
    size_t plan, cache;
} eval_memory;

static int memory_for(const eval_run *run, const ft_model_config *config, ft_model_options options, int batch,
                      bool streamed, bool on_gpu, eval_memory *out)
{
    ft_dtype dtype = on_gpu ? FT_DTYPE_BF16 : FT_DTYPE_F32;
    options.max_batch_size = batch;
    ft_memory_plan plan;
    if (ft_model_plan_memory(config, &options, dtype, &plan) != 0)
        return -1;
    size_t element = ft_dtype_size(dtype);
    *out = (eval_memory){.cache = ft_generator_cache_bytes(config, batch, run->max_generate_tokens, element)};
    if (streamed) {
        size_t language = plan.parameter_bytes - ft_vision_tower_weight_bytes(config, element);
        size_t held = ft_model_config_gathered_weight_bytes(config, element) + (on_gpu ? 0 : language);
        plan.total_bytes = plan.total_bytes - plan.parameter_bytes + held;
        out->host = on_gpu ? language : 0;
    }
    ft_backend_limits limits;
    size_t scratch = 0;
    if (on_gpu && ft_model_backend_limits(config, &options, dtype, &limits) == 0)
        scratch = ft_cuda_scratch_bytes(&limits);
    out->plan = plan.total_bytes;
    out->peak = plan.total_bytes + out->cache + scratch;
    return 0;
}

/* When the GPU's free memory is short: the least change that fits, a smaller
 * batch, then offload_param = cpu (every generated token then reads each
 * weight over the bus), then both. */
static int find_smallest_change(const eval_run *run, const ft_model_config *config, const ft_model_options *options,
                                uint64_t budget, ft_stage_estimate *out)
{
    for (int streamed = run->offload_param; streamed <= 1; streamed++)
        for (int batch = run->batch_size; batch >= 1; batch /= 2) {
            eval_memory memory;
            if (memory_for(run, config, *options, batch, streamed, true, &memory) != 0)
                return -1;
            if (memory.peak > budget)
                continue;
            char need[32], have[32], host[32], batch_text[48] = "";
            ft_format_bytes(memory.peak, need, sizeof need);
            ft_format_bytes(budget, have, sizeof have);
            ft_format_bytes(memory.host, host, sizeof host);
            if (batch < run->batch_size)
                snprintf(batch_text, sizeof batch_text, "batch_size = %d%s", batch,
                         streamed && !run->offload_param ? " and " : "");
            snprintf(out->smallest_change, sizeof out->smallest_change,
                     "set %s%s (needs %s of the %s free on the GPU%s%s%s)", batch_text,
                     streamed && !run->offload_param ? "offload_param = cpu: the weights stay in host memory, a "
                                                       "layer's uploaded as it is used"
                                                     : "",
                     need, have, streamed ? ", and " : "", streamed ? host : "", streamed ? " of host memory" : "");
            return 0;
        }
    snprintf(out->smallest_change, sizeof out->smallest_change,
             "nothing fits, not even batch_size = 1 with offload_param = cpu: lower max_new_tokens or cutoff_len, or "
             "free the GPU's memory");
    return 0;
}

/* Memory as memory_for counts it for the adapted model (the larger of the two
 * with compare_base), checked against the GPU's free memory; time from the
 * rate past runs left. */
static int estimate_figures(const eval_run *run, ft_stage_estimate *out)
{
    ft_stage *stage = run->stage;
    const char *backend = ft_stage_param_string(stage, "backend");
    /* no CUDA in the engine's process (see train's estimate): a GPU's device file answers */
    bool on_gpu = strcmp(backend, "cuda") == 0 || (strcmp(backend, "auto") == 0 && access("/dev/nvidia0", F_OK) == 0);
    ft_model_options options;
    const char *dir;
    ft_model_config config;
    eval_memory memory;
    if (model_options(run, run->train_dir != NULL, &options, &dir) != 0 ||
        ft_language_model_config_load(dir, &config) != 0 ||
        memory_for(run, &config, options, run->batch_size, run->offload_param, on_gpu, &memory) != 0)
        return -1;
    char plan_text[32], cache_text[32], host_text[32];
    ft_format_bytes(memory.plan, plan_text, sizeof plan_text);
    ft_format_bytes(memory.cache, cache_text, sizeof cache_text);
    ft_format_bytes(memory.host, host_text, sizeof host_text);
    ft_estimate_figure *figure = on_gpu ? &out->device_bytes : &out->host_bytes;
    ft_estimate_set(figure, (double)memory.peak, "model plan %s for %d x %d tokens%s and KV cache %s for %d x %d tokens%s",
                    plan_text, run->batch_size, run->max_seq_len,
                    run->offload_param ? " (two units of the weights gathered at once)" : "", cache_text,
                    run->batch_size, run->max_generate_tokens, on_gpu ? ", with the cuda backend's scratch" : "");
    if (on_gpu && run->offload_param)
        ft_estimate_set(&out->host_bytes, (double)memory.host,
                        "the weights in page-locked host memory (offload_param = cpu), %s, beside the program", host_text);
    else if (on_gpu)
        ft_estimate_unknown(&out->host_bytes, "the evaluate kind does not estimate its host memory on cuda");
    if (on_gpu) {
        out->device_budget_bytes = ft_stage_gpu_free_bytes();
        if (out->device_budget_bytes > 0 && memory.peak > out->device_budget_bytes &&
            find_smallest_change(run, &config, &options, out->device_budget_bytes, out) != 0)
            return -1;
    }
    ft_estimate_set(&out->disk_bytes, 0.0, "writes small reports only (results.jsonl, metrics.json, report.md)");
    size_t n_models = ft_stage_param_bool(stage, "compare_base") ? 2 : 1;
    double ops;
    if (all_models_ops(run, n_models, &ops) != 0)
        return -1;
    out->work[0] = (ft_estimate_work){ops, "evaluate_ops", "ops", "prompts, answers and the loss pass"};
    out->n_work = 1;
    out->device_name = on_gpu ? "cuda" : "cpu";
    return 0;
}

static int estimate_evaluate(ft_stage *stage, ft_stage_estimate *out)
{
    for (size_t i = 0; i < ft_stage_input_count(stage); i++)
        if (!ft_path_exists(ft_stage_input_path(stage, i))) {
            ft_estimate_figure *figures[] = {&out->device_bytes, &out->host_bytes, &out->disk_bytes, &out->time_s};
            for (size_t f = 0; f < sizeof figures / sizeof figures[0]; f++)
                ft_estimate_unknown(figures[f], "needs %s, which is not built yet", ft_stage_input_path(stage, i));
            return 0;
        }
    eval_run run = {.stage = stage, .estimating = true};
    ft_dataset_init(&run.dataset);
    int status = prepare(&run);
    if (status == 0)
        status = estimate_figures(&run, out);
    free_run(&run, NULL, 0);
    if (status != 0) { /* the run says it with its own message (see tokenize's estimate) */
        ft_estimate_figure *figures[] = {&out->device_bytes, &out->host_bytes, &out->disk_bytes, &out->time_s};
        for (size_t f = 0; f < sizeof figures / sizeof figures[0]; f++)
            ft_estimate_unknown(figures[f], "cannot estimate: %s", ft_error_message());
        ft_error_clear();
    }
    return 0;
}

const ft_stage_kind ft_kind_evaluate = {
    .name = "evaluate",
    .version = 2, /* 2: LLaMA-Factory's templates (llama3 untrimmed) and stop words */
    .run = run_evaluate,
    .estimate = estimate_evaluate,
};
