/* evaluate_run: the evaluate kind's inputs, parameters and encoded samples
 * read into one place (for its run, stages/evaluate.c, and its estimate,
 * stages/evaluate_estimate.c), the model each evaluates, and the work a run
 * does. */
#include "ftpipe/stages/evaluate_run.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/train_work.h"

/* --- inputs --- */

static bool has_file(const char *dir, const char *name)
{
    char *path = ft_path_join(dir, name);
    bool found = ft_path_exists(path);
    free(path);
    return found;
}

static int check_inputs(ft_eval_run *run)
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

static int read_train_output(ft_eval_run *run)
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

static int load_tokenizer(ft_eval_run *run)
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

static int choose_template(ft_eval_run *run)
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

static int make_checker(ft_eval_run *run)
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

static int read_parameters(ft_eval_run *run)
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
static int choose_stop_tokens(ft_eval_run *run)
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
        if (id >= 0 && !known && n < FT_EVAL_MAX_STOP_TOKENS)
            run->stop_tokens[n++] = (int32_t)id;
    }
    run->generate.n_stop_tokens = n;
    return 0;
}

/* --- samples --- */

/* Records' images, for a vision-language model only: a text-only one would
 * read the image tokens as text. */
static int read_images(ft_eval_run *run)
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

static int read_data(ft_eval_run *run)
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

static int encode_sample(ft_eval_run *run, const ft_conversation *conversation, const ft_conversation_images *images,
                         ft_eval_sample *sample)
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

static int encode_samples(ft_eval_run *run)
{
    run->samples = ft_xcalloc(run->count, sizeof *run->samples);
    size_t longest_prompt = 0, longest_sample = 0, truncated = 0;
    for (size_t i = 0; i < run->count; i++) {
        ft_eval_sample *sample = &run->samples[i];
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

/* The model folder and its options: the adapted model, or the base. */
int ft_evaluate_model_options(const ft_eval_run *run, bool adapted, ft_model_options *options, const char **dir)
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

/* --- the rate `ftpipe estimate` predicts time from --- */

/* The forward passes of one model, in operations (train_work.h): every prompt,
 * every answer counted at max_new_tokens (the rate absorbs how early answers
 * stop), and every sample once more for the loss. */
static int evaluation_ops(const ft_eval_run *run, bool adapted, double *ops)
{
    ft_model_options options;
    const char *dir;
    ft_model_config config;
    if (ft_evaluate_model_options(run, adapted, &options, &dir) != 0 || ft_language_model_config_load(dir, &config) != 0)
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

int ft_evaluate_all_models_ops(const ft_eval_run *run, size_t n_models, double *ops)
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

void ft_evaluate_free_run(ft_eval_run *run, ft_eval_outcome *outcomes, size_t n_models)
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
int ft_evaluate_prepare(ft_eval_run *run)
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
