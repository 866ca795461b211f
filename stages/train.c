/* train: fine-tunes a model on a tokenize output.
 *
 *   adapter: train models/base data/train_set
 *       learning_rate = 1e-4
 *       num_train_epochs = 1
 *
 * Checks everything it can before training (inputs, tokenizer, parameters,
 * memory), trains with checkpoints in the work folder (a rerun resumes from
 * the newest), then writes the adapter or the model with ftpipe_train.json,
 * train_results.json, trainer_log.jsonl and trainer_state.json (see the
 * README). With save_strategy, the checkpoint-N folders a user keeps (the
 * adapter or the model, and trainer_state.json) are written to the work
 * folder's kept/ as training reaches them, and linked into the output at the end. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/backend/comm_nccl.h"
#include "ftpipe/backend/comm_solo.h"
#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/host_memory.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/svg_chart.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/model_save.h"
#include "ftpipe/model/param_shards.h"
#include "ftpipe/model/train_memory.h"
#include "ftpipe/model/train_work.h"
#include "ftpipe/model/trainer.h"
#include "ftpipe/model/trainer_log.h"
#include "ftpipe/stages/stage_backend.h"
#include "ftpipe/stages/stage_ranks.h"
#include "ftpipe/stages/train_guard.h"
#include "ftpipe/stages/train_kept.h"
#include "ftpipe/stages/train_run.h"
#include "ftpipe/text/tokenizer.h"

/* The data must have been tokenized with this model's tokenizer. */
static int check_tokenizer(ft_train_run *run)
{
    if (ft_token_dataset_meta_read(run->data_dir, &run->meta) < 0 ||
        ft_train_check_images(run, run->data_dir, &run->meta) < 0)
        return -1;
    ft_tokenizer *tokenizer;
    if (ft_tokenizer_load(run->model_dir, &tokenizer) < 0)
        return -1;
    char hash[FT_HASH_HEX_LENGTH + 1];
    ft_hash_to_hex(ft_tokenizer_hash(tokenizer), hash);
    ft_tokenizer_free(tokenizer);
    if (strcmp(hash, run->meta.tokenizer_hash) == 0 && run->eval_dir) {
        ft_token_dataset_meta eval_meta;
        if (ft_token_dataset_meta_read(run->eval_dir, &eval_meta) < 0 ||
            ft_train_check_images(run, run->eval_dir, &eval_meta) < 0)
            return -1;
        if (strcmp(hash, eval_meta.tokenizer_hash) != 0 || eval_meta.cutoff_len > run->meta.cutoff_len)
            return ft_stage_fail(run->stage, "the eval data %s must be tokenized with the model's tokenizer (hash %s, "
                                             "it has %s) and a cutoff_len of at most the training data's %u (it has "
                                             "%u)",
                                 run->eval_dir, hash, eval_meta.tokenizer_hash, run->meta.cutoff_len,
                                 eval_meta.cutoff_len);
    }
    if (strcmp(hash, run->meta.tokenizer_hash) == 0)
        return 0;
    return ft_stage_fail(run->stage, "the model's tokenizer (%s, hash %s) is not the one the data was tokenized with "
                                     "(%s, hash %s): tokenize the data with this model",
                         run->model_dir, hash, run->data_dir, run->meta.tokenizer_hash);
}

/* On the cpu backend the whole plan lives in host memory; the cuda backend
 * checks its own memory when the model reserves it. */
static int check_memory(ft_train_run *run, const ft_backend *backend)
{
    ft_model_config config;
    ft_memory_plan plan;
    ft_model_options options = run->model_options; /* AdamW whole: its share and offload are applied below */
    options.optimizer_shards = 0;
    options.optimizer_offloaded = false;
    if (ft_language_model_config_load(run->model_dir, &config) < 0 ||
        ft_model_plan_memory(&config, &options, backend->dtype, &plan) < 0)
        return -1;
    int ranks = run->train_options.ranks > 1 ? run->train_options.ranks : 1;
    if (run->train_options.zero_stage > 0) { /* each rank holds its share of AdamW's state */
        size_t share = (plan.optimizer_bytes + (size_t)ranks - 1) / (size_t)ranks;
        plan.total_bytes -= plan.optimizer_bytes - share;
        plan.optimizer_bytes = share;
    }
    if (run->train_options.offload_optimizer) /* the cpu backend's: an f32 master copy and the gradients downloaded */
        plan.total_bytes += plan.optimizer_bytes;
    bool sharded = run->train_options.zero_stage == 3;
    if (sharded) {
        ft_train_memory memory = {.plan = plan};
        ft_train_memory_shard_params(&memory, &config, backend->dtype != FT_DTYPE_F32, ranks,
                                     run->train_options.offload_param);
        plan = memory.plan;
    }
    char total[32], weights[32], master[32], adapter[32], gradients[32], optimizer[32], activations[32], available[32];
    ft_format_bytes(plan.total_bytes, total, sizeof total);
    ft_format_bytes(plan.parameter_bytes, weights, sizeof weights);
    ft_format_bytes(plan.master_bytes, master, sizeof master);
    ft_format_bytes(plan.adapter_bytes, adapter, sizeof adapter);
    ft_format_bytes(plan.gradient_bytes, gradients, sizeof gradients);
    ft_format_bytes(plan.optimizer_bytes, optimizer, sizeof optimizer);
    ft_format_bytes(plan.activation_bytes, activations, sizeof activations);
    ft_stage_log(run->stage, "memory plan: %s (weights %s%s%s%s, adapter %s, gradients %s, optimizer %s%s, activations %s)",
                 total, weights, sharded ? " as this rank's ZeRO-3 shard and two gathered layers" : "",
                 plan.master_bytes ? ", their float master copy " : "", plan.master_bytes ? master : "", adapter,
                 gradients, optimizer, run->train_options.zero_stage > 0 ? " as this rank's ZeRO share" : "",
                 activations);
    uint64_t host = ft_host_available_bytes();
    if (ranks > 1) { /* every rank holds a whole copy, but for its ZeRO share */
        plan.total_bytes *= (uint64_t)ranks;
        ft_format_bytes(plan.total_bytes, total, sizeof total);
        ft_stage_log(run->stage, "%d ranks on this host: %s in all", ranks, total);
    }
    if (backend->dtype != FT_DTYPE_F32 || plan.total_bytes <= host)
        return 0;
    ft_format_bytes(host, available, sizeof available);
    return ft_stage_fail(run->stage, "training needs %s of memory (weights %s, adapter %s, gradients %s, optimizer %s, "
                                     "activations %s) but %s is available: lower per_device_train_batch_size or the "
                                     "data's cutoff_len, set gradient_checkpointing = true, or use "
                                     "finetuning_type = lora",
                         total, weights, adapter, gradients, optimizer, activations, available);
}

/* --- reporting --- */

static void on_step(void *context, const ft_train_report *report)
{
    ft_train_run *run = context;
    if (run->first_step < 0)
        run->first_step = report->step - 1;
    double per_step = report->elapsed_s / (double)(report->step - run->first_step);
    double eta = per_step * (double)(report->total_steps - report->step);
    run->elapsed_s = report->elapsed_s;
    run->remaining_s = eta;
    ft_stage_progress(run->stage, (double)report->step / (double)report->total_steps,
                      "step %lld/%lld, %.0f tokens/s, loss %.4f, ETA %.0fs", (long long)report->step,
                      (long long)report->total_steps, report->tokens_per_s, report->loss, eta);
}

/* "H:MM:SS", as Python prints a timedelta of whole seconds ("1 day, 2:03:04" past a day). */
static void format_duration(double seconds, char *out, size_t size)
{
    long long s = seconds > 0.0 && seconds < 1e15 ? (long long)seconds : 0, days = s / 86400;
    int at = days ? snprintf(out, size, "%lld day%s, ", days, days == 1 ? "" : "s") : 0;
    snprintf(out + at, size - (size_t)at, "%lld:%02lld:%02lld", s % 86400 / 3600, s % 3600 / 60, s % 60);
}

/* One line of the work folder's trainer_log.jsonl, with LLaMA-Factory's keys
 * besides (current_steps, total_steps, lr, percentage, elapsed_time,
 * remaining_time), so that its LlamaBoard follows the run. */
static void append_log_line(const ft_train_run *run, json_t *line, int64_t step)
{
    char elapsed[48], remaining[48];
    format_duration(run->elapsed_s, elapsed, sizeof elapsed);
    format_duration(run->remaining_s, remaining, sizeof remaining);
    int64_t total = run->plan.total_steps;
    json_object_set_new(line, "current_steps", json_integer(step));
    json_object_set_new(line, "total_steps", json_integer(total));
    json_t *rate = json_object_get(line, "learning_rate");
    if (rate)
        json_object_set(line, "lr", rate);
    json_object_set_new(line, "percentage", json_real(total > 0 ? round((double)step * 10000.0 / (double)total) / 100.0
                                                                : 100.0));
    json_object_set_new(line, "elapsed_time", json_string(elapsed));
    json_object_set_new(line, "remaining_time", json_string(remaining));
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    FILE *file = fopen(run->log_path, "a");
    if (file) {
        fprintf(file, "%s\n", text);
        fclose(file);
    }
    free(text);
    json_decref(line);
}

static void on_log(void *context, const ft_train_report *report)
{
    ft_train_run *run = context;
    ft_stage *stage = run->stage;
    ft_stage_metric(stage, report->step, "loss", report->loss);
    ft_stage_metric(stage, report->step, "learning_rate", report->learning_rate);
    ft_stage_metric(stage, report->step, "grad_norm", report->grad_norm);
    ft_stage_metric(stage, report->step, "tokens_per_s", report->tokens_per_s);
    ft_stage_metric(stage, report->step, "memory_bytes", (double)report->memory_bytes);
    ft_stage_metric(stage, report->step, "epoch", report->epoch);
    char memory[32];
    ft_format_bytes(report->memory_bytes, memory, sizeof memory);
    ft_stage_log(stage, "step %lld/%lld epoch %.2f: loss %.4f, learning_rate %.3g, grad_norm %.4f, %.0f tokens/s, "
                        "memory %s",
                 (long long)report->step, (long long)report->total_steps, report->epoch, report->loss,
                 report->learning_rate, report->grad_norm, report->tokens_per_s, memory);
    json_t *line = json_pack("{sI sf sf sf sf sf}", "step", (json_int_t)report->step, "epoch", report->epoch, "loss",
                             report->loss, "learning_rate", report->learning_rate, "grad_norm", report->grad_norm,
                             "tokens_per_s", report->tokens_per_s);
    append_log_line(run, line, report->step);
}

static void on_evaluate(void *context, const ft_eval_report *report)
{
    ft_train_run *run = context;
    ft_stage_metric(run->stage, report->step, "eval_loss", report->eval_loss);
    ft_stage_log(run->stage, "step %lld epoch %.2f: eval_loss %.4f on %llu rows (%.1fs)", (long long)report->step,
                 report->epoch, report->eval_loss, (unsigned long long)report->n_rows, report->runtime_s);
    json_t *line = json_pack("{sI sf sf sf}", "step", (json_int_t)report->step, "epoch", report->epoch, "eval_loss",
                             report->eval_loss, "eval_runtime", report->runtime_s);
    append_log_line(run, line, report->step);
}

static void on_note(void *context, const char *text) { ft_stage_log(((ft_train_run *)context)->stage, "%s", text); }

/* Ranks other than 0 note in their own log. */
static void on_rank_note(void *context, const char *text)
{
    fprintf(stderr, "rank %d: %s\n", ((ft_train_run *)context)->rank, text);
    fflush(stderr);
}

static bool cancelled(void *context) { return ft_stage_cancelled(((ft_train_run *)context)->stage); }

static bool should_stop(void *context, const ft_train_report *report)
{
    return ft_train_guard_should_stop(&((ft_train_run *)context)->guard, report);
}

/* --- the output folder --- */

static int write_json(const char *dir, const char *name, json_t *root)
{
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    char *path = ft_path_join(dir, name);
    size_t length = strlen(text);
    text[length] = '\n'; /* json_dumps leaves no final newline; its NUL is replaced */
    int status = ft_write_file_atomic(path, text, length + 1);
    free(path);
    free(text);
    return status;
}

/* The log lines of every run of this stage, the steps a resumed run did again
 * replacing those an interrupted one wrote after its checkpoint. Caller frees. */
static char *read_compact_log(const ft_train_run *run)
{
    char *text = NULL;
    size_t length = 0;
    if (ft_path_exists(run->log_path) && ft_read_file(run->log_path, &text, &length) < 0)
        return NULL;
    char *compact = ft_trainer_log_compact(text ? text : "", &length);
    free(text);
    return compact;
}

static int write_trainer_log(const ft_train_run *run, const char *out_dir)
{
    char *text = read_compact_log(run);
    if (!text)
        return -1;
    char *path = ft_path_join(out_dir, "trainer_log.jsonl");
    int status = ft_write_file_atomic(path, text, strlen(text));
    free(path);
    free(text);
    return status;
}

/* dir/trainer_state.json at this step, in the HF Trainer's format. */
static int write_trainer_state(const ft_train_run *run, const char *dir, int64_t step, double epoch,
                               const ft_train_result *ended)
{
    ft_stage *stage = run->stage;
    const ft_train_options *t = &run->train_options;
    int64_t eval_steps = ft_stage_param_int(stage, "eval_steps");
    int64_t per_epoch = run->plan.steps_per_epoch > 0 ? run->plan.steps_per_epoch : 1;
    ft_trainer_state_info info = {
        .global_step = step,
        .epoch = epoch,
        .max_steps = run->plan.total_steps,
        .num_train_epochs = (run->plan.total_steps + per_epoch - 1) / per_epoch,
        .logging_steps = t->logging_steps,
        /* as transformers' TrainingArguments: logging_steps under eval_strategy = steps, else its default */
        .eval_steps = eval_steps > 0 ? eval_steps : t->eval_steps > 0 ? t->eval_steps : 500,
        .save_steps = t->save_steps,
        .train_batch_size = t->batch_size,
        .training_ended = ended != NULL,
        .train_loss = ended ? ended->train_loss : 0.0,
    };
    char *log = read_compact_log(run);
    char *path = ft_path_join(dir, "trainer_state.json");
    int status = log ? ft_trainer_state_write(path, log, &info) : -1;
    free(path);
    free(log);
    return status;
}

/* The adapter (or the model) as trained so far, beside trainer_state.json. */
static int write_trained(const ft_train_run *run, const char *dir)
{
    const char *base_model = ft_path_basename(run->model_dir);
    if (run->model_options.finetuning == FT_FINETUNE_LORA)
        return ft_lora_save(ft_model_lora(run->model), dir, base_model);
    return ft_model_save(run->model, run->model_dir, dir);
}

/* on_save: kept/checkpoint-N, written aside and renamed, then the oldest beyond
 * save_total_limit removed, as the HF Trainer rotates its checkpoints. */
static int on_save(void *context, int64_t step, double epoch)
{
    ft_train_run *run = context;
    char *name = ft_xasprintf("checkpoint-%lld", (long long)step);
    char *temporary_name = ft_xasprintf("%s.tmp", name);
    char *final = ft_path_join(run->kept_dir, name), *temporary = ft_path_join(run->kept_dir, temporary_name);
    int status = ft_remove_tree(temporary);
    if (status == 0)
        status = ft_mkdir_p(temporary);
    if (status == 0)
        status = write_trained(run, temporary);
    if (status == 0)
        status = write_trainer_state(run, temporary, step, epoch, NULL);
    if (status == 0)
        status = ft_fsync_dir(temporary);
    if (status == 0)
        status = ft_remove_tree(final); /* the same step kept again after a resume */
    if (status == 0 && rename(temporary, final) != 0)
        status = ft_error_errno("cannot rename %s to %s", temporary, final);
    if (status == 0)
        status = ft_train_kept_prune(run->kept_dir, run->train_options.save_total_limit);
    if (status == 0)
        ft_stage_log(run->stage, "kept %s for the output", name);
    free(name);
    free(temporary_name);
    free(final);
    free(temporary);
    return status;
}

/* plot_loss: training_loss.svg beside trainer_log.jsonl, as LLaMA-Factory users
 * find a loss picture in their output folder. */
static int write_loss_plot(const char *out_dir)
{
    char *log_path = ft_path_join(out_dir, "trainer_log.jsonl");
    char *text = NULL;
    size_t length = 0, count = 0;
    int status = ft_read_file(log_path, &text, &length);
    free(log_path);
    size_t lines = 1; /* one entry a line */
    for (size_t i = 0; status == 0 && i < length; i++)
        lines += text[i] == '\n';
    double *steps = ft_xcalloc(lines, sizeof *steps), *losses = ft_xcalloc(lines, sizeof *losses);
    for (char *line = status == 0 ? text : NULL; line && *line;) {
        char *end = strchr(line, '\n');
        json_t *entry = json_loadb(line, end ? (size_t)(end - line) : strlen(line), 0, NULL);
        steps[count] = (double)json_integer_value(json_object_get(entry, "step"));
        losses[count++] = json_real_value(json_object_get(entry, "loss"));
        json_decref(entry);
        line = end ? end + 1 : NULL;
    }
    if (status == 0) {
        ft_strbuf svg;
        ft_strbuf_init(&svg);
        ft_svg_series series = {NULL, steps, losses, count};
        ft_svg_line_chart(&svg, "training loss", "step", "", &series, 1, true);
        ft_strbuf_putc(&svg, '\n');
        char *path = ft_path_join(out_dir, "training_loss.svg");
        status = ft_write_file_atomic(path, svg.data, svg.length);
        free(path);
        ft_strbuf_free(&svg);
    }
    free(steps);
    free(losses);
    free(text);
    return status;
}

/* train_results.json is the HF Trainer's (train_tokens_per_second as with its
 * include_tokens_per_second), with rank 0's measured peaks beside: its backend's
 * memory (the GPU's on cuda) and its process's resident host memory. */
/* on_result: the adapter (or the model) into the output, as the run ends (ZeRO-3 reads the weights a unit
 * at a time for it); write_output adds the rest. */
static int on_result(void *context, int64_t step, double epoch)
{
    ft_train_run *run = context;
    return write_trained(run, ft_stage_output_path(run->stage));
}

/* A measurement's on_result: nothing is kept, and ZeRO-3's weights stay
 * sharded for the timed steps after the warm-up (none is gathered whole). */
static int no_result(void *context, int64_t step, double epoch) { return 0; }

/* Beside the trained weights (on_result): the run's results, logs and state. */
static int write_output(ft_train_run *run, const ft_train_result *result, uint64_t peak_device_bytes,
                        uint64_t peak_host_bytes)
{
    const char *out = ft_stage_output_path(run->stage);
    const char *base_model = ft_path_basename(run->model_dir);
    bool lora = run->model_options.finetuning == FT_FINETUNE_LORA;
    double runtime = result->runtime_s > 0.0 ? result->runtime_s : 1e-9;
    json_t *info = json_pack("{ss ss ss si ss sI}", "finetuning_type", lora ? "lora" : "full", "template",
                             run->meta.template_name, "tokenizer_hash", run->meta.tokenizer_hash, "cutoff_len",
                             (int)run->meta.cutoff_len, "base_model", base_model, "global_step",
                             (json_int_t)result->global_step);
    int64_t steps_run = result->global_step - result->resumed_from_step;
    json_t *results = json_pack("{sf sI sf sf sf sf sf sI sI}", "epoch", result->epoch, "global_step",
                                (json_int_t)result->global_step, "train_runtime", result->runtime_s,
                                "train_samples_per_second", result->samples / runtime, "train_steps_per_second",
                                (double)steps_run / runtime, "train_tokens_per_second",
                                (double)result->trained_tokens / runtime, "train_loss", result->train_loss,
                                "peak_device_bytes", (json_int_t)peak_device_bytes, "peak_host_bytes",
                                (json_int_t)peak_host_bytes);
    if (write_json(out, "ftpipe_train.json", info) < 0 || write_json(out, "train_results.json", results) < 0)
        return -1;
    if (write_trainer_log(run, out) < 0 ||
        write_trainer_state(run, out, result->global_step, result->epoch, result) < 0 ||
        ft_train_kept_link(run->kept_dir, out) < 0)
        return -1;
    return ft_stage_param_bool(run->stage, "plot_loss") ? write_loss_plot(out) : 0;
}

/* The result: the adapter in f32, or the model in its dtype. */
static uint64_t output_bytes(const ft_train_run *run, const ft_model *model)
{
    const ft_model_config *config = ft_model_get_config(model);
    if (run->model_options.finetuning != FT_FINETUNE_LORA)
        return ft_model_config_parameter_count(config) * ft_dtype_size(ft_train_save_dtype(config));
    size_t n_tensors = 0;
    uint64_t n_trained = 0;
    const ft_param_tensor *tensors = ft_model_trainable(model, &n_tensors);
    for (size_t i = 0; i < n_tensors; i++)
        n_trained += tensors[i].count;
    return n_trained * sizeof(float);
}

/* --- the rates `ftpipe estimate` predicts time from --- */

/* The parts estimate_train names: operations (train_work.h) of the steps and evaluations, and the
 * bytes of everything else (loading, checkpoints, the result), each per second of
 * wall clock and per second of CPU time (every rank's: each holds a like share). */
static void log_rates(ft_train_run *run, const char *device, int64_t step, double ops, double compute_s,
                      double compute_cpu_s, double io_bytes, double io_s, double io_cpu_s)
{
    ft_stage *stage = run->stage;
    int ranks = run->train_options.ranks > 1 ? run->train_options.ranks : 1;
    const char *ops_rate = ft_train_ops_rate_of(&run->train_options).rate; /* offloads move the rate */
    struct {
        const char *name, *per;
        double amount, seconds;
    } rates[] = {{ops_rate, "per_s", ops, compute_s},
                 {ops_rate, "per_cpu_s", ops, compute_cpu_s * ranks},
                 {"train_io_bytes", "per_s", io_bytes, io_s},
                 {"train_io_bytes", "per_cpu_s", io_bytes, io_cpu_s * ranks}};
    for (size_t i = 0; i < sizeof rates / sizeof rates[0]; i++) {
        if (rates[i].amount <= 0.0 || rates[i].seconds <= 0.0)
            continue;
        char *name = ft_xasprintf("%s_%s_%s", rates[i].name, rates[i].per, device);
        ft_stage_metric(stage, step, name, rates[i].amount / rates[i].seconds);
        free(name);
    }
    ft_stage_log(stage, "rates: %.3g ops/s (%.3g per CPU second) in steps and evaluations, %.3g bytes/s (%.3g per "
                        "CPU second) loading and saving",
                 compute_s > 0 ? ops / compute_s : 0.0, compute_cpu_s > 0 ? ops / (compute_cpu_s * ranks) : 0.0,
                 io_s > 0 ? io_bytes / io_s : 0.0, io_cpu_s > 0 ? io_bytes / (io_cpu_s * ranks) : 0.0);
}

/* ZeRO-3 over ranks reads each rank's shard of the weights from the files (param_shards.h). */
static int load_model(ft_train_run *run, ft_backend *backend, ft_model **model)
{
    const ft_train_options *t = &run->train_options;
    if (t->comm && t->zero_stage == 3)
        return ft_model_load_sharded(run->model_dir, backend, &run->model_options, t->comm, t->offload_param,
                                     t->offload_optimizer, model);
    return ft_model_load(run->model_dir, backend, &run->model_options, model);
}

/* estimate --measure: loads the model (timed as reading), one warm-up step, then
 * MEASURED_STEPS steps and a checkpoint into the scratch folder, timed. */
#define MEASURED_STEPS 3

static int measure(ft_train_run *run, ft_backend *backend)
{
    ft_stage *stage = run->stage;
    ft_token_shards *shards = NULL;
    if (ft_token_shards_open(run->data_dir, "train", &shards) < 0)
        return -1;
    ft_image_store *images = NULL;
    if (ft_train_open_images(run, run->data_dir, "train", shards, &images) < 0) {
        ft_token_shards_close(shards);
        return -1;
    }
    uint64_t load_wall_ns = ft_now_ns(), load_cpu_ns = ft_process_cpu_ns();
    ft_model *model = NULL;
    int status = load_model(run, backend, &model);
    double load_s = (double)(ft_now_ns() - load_wall_ns) * 1e-9;
    double load_cpu_s = (double)(ft_process_cpu_ns() - load_cpu_ns) * 1e-9;
    ft_train_options options = run->train_options;
    options.images = images;
    options.eval_shards = NULL;
    options.eval_images = NULL;
    options.eval_steps = 0;
    options.eval_each_epoch = false;
    options.logging_steps = 0;
    options.save_steps = 0;
    options.max_steps = 1;
    const char *checkpoints = options.checkpoint_dir;
    options.checkpoint_dir = NULL;
    ft_train_result warm_up, timed;
    if (status == 0)
        status = ft_train(model, shards, &options, &warm_up);
    options.max_steps = MEASURED_STEPS;
    options.checkpoint_dir = checkpoints; /* one, at the end: what a save costs */
    uint64_t timed_cpu_ns = ft_process_cpu_ns();
    if (status == 0)
        status = ft_train(model, shards, &options, &timed);
    double timed_cpu_s = (double)(ft_process_cpu_ns() - timed_cpu_ns) * 1e-9;
    ft_train_work work;
    if (status == 0 && run->rank == 0 &&
        ft_train_work_per_token(ft_model_get_config(model), &run->model_options, ft_train_mean_row_tokens(&run->meta),
                                &work) == 0) {
        double io_bytes = (double)(ft_train_weight_file_bytes(run->model_dir) + timed.checkpoint_bytes_written);
        log_rates(run, backend->name, timed.global_step, (double)timed.trained_tokens * work.train, timed.compute_s,
                  timed.compute_cpu_s, io_bytes, load_s + timed.runtime_s - timed.compute_s,
                  load_cpu_s + timed_cpu_s - timed.compute_cpu_s);
        ft_stage_log(stage, "measured %d steps after a warm-up step: %lld tokens in %.3fs (%.3fs of CPU)",
                     MEASURED_STEPS, (long long)timed.trained_tokens, timed.compute_s, timed.compute_cpu_s);
    }
    ft_model_free(model);
    ft_image_store_close(images);
    ft_token_shards_close(shards);
    return status;
}

static int train(ft_train_run *run, ft_backend *backend)
{
    ft_stage *stage = run->stage;
    ft_token_shards *shards = NULL;
    ft_image_store *images = NULL, *eval_images = NULL;
    if (ft_token_shards_open(run->data_dir, "train", &shards) < 0)
        return -1;
    if (ft_train_open_images(run, run->data_dir, "train", shards, &images) < 0) {
        ft_token_shards_close(shards);
        return -1;
    }
    run->train_options.images = images;
    ft_model *model = NULL;
    int status = load_model(run, backend, &model);
    size_t n_tensors = 0, n_trained = 0;
    int ranks = run->train_options.ranks > 1 ? run->train_options.ranks : 1;
    if (status == 0 && run->rank == 0) {
        const ft_param_tensor *tensors = ft_model_trainable(model, &n_tensors);
        for (size_t i = 0; i < n_tensors; i++)
            n_trained += tensors[i].count;
        ft_stage_log(stage, "training %.2fM parameters on %llu rows: %lld steps of %d x %d rows x %d rank%s on the %s "
                            "backend",
                     (double)n_trained / 1e6, (unsigned long long)run->meta.train.n_rows,
                     (long long)run->plan.total_steps, run->train_options.batch_size,
                     run->train_options.gradient_accumulation_steps, ranks, ranks > 1 ? "s" : "", backend->name);
    }
    ft_token_shards *eval_shards = NULL;
    if (status == 0 && run->eval_dir) {
        status = ft_token_shards_open(run->eval_dir, run->eval_split, &eval_shards);
        if (status == 0)
            status = ft_train_open_images(run, run->eval_dir, run->eval_split, eval_shards, &eval_images);
        run->train_options.eval_shards = eval_shards;
        run->train_options.eval_images = eval_images;
        if (status == 0)
            ft_stage_log(stage, "evaluating on %llu rows of %s/%s %s", (unsigned long long)ft_token_shards_n_rows(eval_shards),
                         run->eval_dir, run->eval_split,
                         run->train_options.eval_each_epoch ? "at each epoch's end" : "every eval_steps steps");
    }
    if (status == 0) { /* the guard keeps room for the result, and for the next checkpoint-N to keep */
        uint64_t room = output_bytes(run, model) * (run->train_options.save_strategy != FT_SAVE_NO ? 2 : 1);
        ft_train_guard_init(&run->guard, stage, run->train_options.checkpoint_dir, room,
                            strcmp(backend->name, "cuda") == 0);
    }
    ft_train_result result;
    run->model = model;
    if (status == 0)
        status = ft_train(model, shards, &run->train_options, &result);
    if (status == 0 && run->rank == 0) {
        /* The optimizer state this rank held: the trainer's count, a 1 / ranks share with ZeRO. */
        char state[32];
        ft_format_bytes(result.optimizer_state_bytes, state, sizeof state);
        ft_stage_metric(stage, result.global_step, "optimizer_state_bytes", (double)result.optimizer_state_bytes);
        ft_stage_log(stage, "optimizer state on rank 0: %s (ZeRO stage %d over %d rank%s)", state,
                     run->train_options.zero_stage, ranks, ranks > 1 ? "s" : "");
        /* The weights this rank held while training: all, or its ZeRO-3 shard and the gathered layers. */
        char weights[32], host_weights[32];
        ft_format_bytes(result.parameter_bytes, weights, sizeof weights);
        ft_format_bytes(result.parameter_host_bytes, host_weights, sizeof host_weights);
        ft_stage_metric(stage, result.global_step, "parameter_bytes", (double)result.parameter_bytes);
        ft_stage_metric(stage, result.global_step, "parameter_host_bytes", (double)result.parameter_host_bytes);
        ft_stage_log(stage, "weights on rank 0: %s in the backend's memory, %s offloaded to host memory", weights,
                     host_weights);
        char gradients[32], host_gradients[32]; /* whole, or full fine-tuning's shard and windows at ZeRO-2 and 3 */
        ft_format_bytes(result.gradient_bytes, gradients, sizeof gradients);
        ft_format_bytes(result.gradient_host_bytes, host_gradients, sizeof host_gradients);
        ft_stage_metric(stage, result.global_step, "gradient_bytes", (double)result.gradient_bytes);
        ft_stage_metric(stage, result.global_step, "gradient_host_bytes", (double)result.gradient_host_bytes);
        ft_stage_log(stage, "float gradients on rank 0: %s in the backend's memory, %s in host memory", gradients,
                     host_gradients);
        if (result.adapter_bytes) { /* LoRA: whole, or at ZeRO-3 this rank's part of each layer's and two layers */
            char adapter[32];
            ft_format_bytes(result.adapter_bytes, adapter, sizeof adapter);
            ft_stage_metric(stage, result.global_step, "adapter_bytes", (double)result.adapter_bytes);
            ft_stage_log(stage, "LoRA adapter values on rank 0: %s in the backend's memory", adapter);
        }
        if (result.master_bytes || result.master_host_bytes) { /* mixed precision: all, or ZeRO-3's shard */
            ft_format_bytes(result.master_bytes, weights, sizeof weights);
            ft_format_bytes(result.master_host_bytes, host_weights, sizeof host_weights);
            ft_stage_metric(stage, result.global_step, "master_bytes", (double)result.master_bytes);
            ft_stage_metric(stage, result.global_step, "master_host_bytes", (double)result.master_host_bytes);
            ft_stage_log(stage, "float master weights on rank 0: %s in the backend's memory, %s in host memory",
                         weights, host_weights);
        }
    }
    ft_token_shards_close(eval_shards);
    ft_image_store_close(eval_images);
    run->train_options.eval_images = NULL;
    if (status == 0 && run->writes_output)
        status = write_output(run, &result, backend->peak_bytes(backend), ft_host_peak_resident_bytes());
    if (status == 0 && run->rank == 0) {
        /* The measured peak, beside the estimate's (ftpipe estimate) and for the report. */
        uint64_t peak = ft_host_peak_resident_bytes();
        char peak_text[32];
        ft_format_bytes(peak, peak_text, sizeof peak_text);
        ft_stage_metric(stage, result.global_step, "peak_host_bytes", (double)peak);
        ft_stage_log(stage, "peak host memory (resident): %s (%llu bytes)", peak_text, (unsigned long long)peak);
        /* This device's throughput, in the estimate's unit: the data's tokens per epoch done. */
        double epochs_run = (double)(result.global_step - result.resumed_from_step) /
                            (double)(run->plan.steps_per_epoch > 0 ? run->plan.steps_per_epoch : 1);
        char *rate_name = ft_xasprintf("tokens_per_s_%s", backend->name);
        if (result.runtime_s > 0.0)
            ft_stage_metric(stage, result.global_step, rate_name,
                            (double)run->meta.train.n_tokens * epochs_run / result.runtime_s);
        free(rate_name);
        ft_train_work work;
        if (ft_train_work_per_token(ft_model_get_config(model), &run->model_options, ft_train_mean_row_tokens(&run->meta),
                                    &work) == 0) {
            double ops = (double)result.trained_tokens * work.train +
                         (double)result.evaluated_tokens * ranks * work.forward;
            double io_bytes = (double)(ft_train_weight_file_bytes(run->model_dir) + result.checkpoint_bytes_written +
                                       output_bytes(run, model));
            double total_s = (double)(ft_now_ns() - run->start_wall_ns) * 1e-9;
            double total_cpu_s = (double)(ft_process_cpu_ns() - run->start_cpu_ns) * 1e-9;
            log_rates(run, backend->name, result.global_step, ops, result.compute_s, result.compute_cpu_s, io_bytes,
                      total_s - result.compute_s, total_cpu_s - result.compute_cpu_s);
        }
        /* The run's mean, as train_results.json's train_loss, beside the last step's. */
        ft_stage_metric(stage, result.global_step, "train_loss", result.train_loss);
        ft_stage_summary(stage, "mean loss %.4f after %lld steps (%.2f epochs), %.1fs, %.2f samples/s",
                         result.train_loss, (long long)result.global_step, result.epoch, result.runtime_s,
                         result.samples / (result.runtime_s > 0.0 ? result.runtime_s : 1e-9));
    }
    ft_train_guard_free(&run->guard);
    ft_model_free(model);
    run->train_options.images = NULL;
    ft_image_store_close(images);
    ft_token_shards_close(shards);
    return status;
}

static int run_stage(ft_stage *stage, bool measuring)
{
    ft_train_run run = {.stage = stage, .first_step = -1, .measuring = measuring, .start_wall_ns = ft_now_ns(),
                     .start_cpu_ns = ft_process_cpu_ns()};
    if (ft_train_check_inputs(&run) < 0 || check_tokenizer(&run) < 0 || ft_train_read_parameters(&run) < 0)
        return -1;
    if (run.sharding_note[0])
        ft_stage_log(stage, "%s", run.sharding_note);
    char *checkpoints = ft_path_join(ft_stage_work_dir(stage), "checkpoints");
    run.log_path = ft_path_join(ft_stage_work_dir(stage), "trainer_log.jsonl");
    run.kept_dir = ft_path_join(ft_stage_work_dir(stage), "kept");
    run.train_options.checkpoint_dir = checkpoints;
    run.train_options.callbacks =
        (ft_train_callbacks){&run, on_step, on_log, on_note, cancelled, on_evaluate, should_stop, on_save, on_result};
    /* The ranks start before any backend does: a process forked after CUDA or
     * OpenBLAS threads started could not use them. */
    ft_stage_ranks ranks;
    if (ft_stage_ranks_start(stage, &ranks) < 0) {
        free(checkpoints);
        free(run.log_path);
        free(run.kept_dir);
        return -1;
    }
    run.rank = ranks.local_rank;
    run.train_options.comm = ranks.comm;
    run.writes_output = ranks.writes_output;
    run.train_options.saves_checkpoints = ranks.writes_output;
    if (run.rank != 0)
        run.train_options.callbacks = (ft_train_callbacks){&run, NULL, NULL, on_rank_note, NULL, NULL, NULL, NULL, NULL};
    else if (measuring) /* nothing of it is the run's: no metrics but the rates, no trainer log, nothing kept */
        run.train_options.callbacks = (ft_train_callbacks){&run, NULL, NULL, on_note, cancelled, NULL, NULL, NULL,
                                                            no_result};
    if (!run.writes_output) { /* under executor = slurm only node 0's first rank writes the shared workspace */
        run.train_options.callbacks.on_save = NULL;
        run.train_options.callbacks.on_result = NULL;
    }
    ft_backend *backend = ft_stage_backend_for_rank(stage, "training", ranks.local_rank, ranks.local_size);
    int status = backend ? (run.rank == 0 ? check_memory(&run, backend) : 0) : -1;
    ft_comm *nccl = NULL; /* cuda ranks add their gradients over NCCL; the host sockets only bootstrap it */
    if (status == 0 && ranks.comm && strcmp(backend->name, "cuda") == 0) {
        nccl = ft_comm_nccl_create(backend, ranks.comm);
        status = nccl ? 0 : -1;
        run.train_options.comm = nccl;
    }
    ft_comm *solo = NULL; /* one rank that streams its weights (ZeRO-3, offload_param) runs ZeRO's paths */
    if (status == 0 && !ranks.comm && run.train_options.zero_stage == 3)
        run.train_options.comm = solo = ft_comm_solo_create(backend);
    if (status == 0)
        status = measuring ? measure(&run, backend) : train(&run, backend);
    if (status < 0 && nccl)
        nccl->abort(nccl);
    ft_comm_destroy(nccl);
    ft_comm_destroy(solo);
    ft_backend_destroy(backend);
    status = ft_stage_ranks_finish(stage, &ranks, status);
    free(checkpoints);
    free(run.log_path);
    free(run.kept_dir);
    return status;
}

static int run_train(ft_stage *stage) { return run_stage(stage, false); }
static int measure_train(ft_stage *stage) { return run_stage(stage, true); }

/* The rank count changes the effective batch, hence the result, unless
 * global_batch_size holds the batch fixed. (One rank adds nothing, so keys
 * from before data parallelism stay.) */
static int train_extra_key(ft_stage *stage, ft_strbuf *key_text)
{
    int ranks = ft_stage_world_size(stage);
    if (ranks < 0)
        return -1;
    if (ranks > 1 && ft_stage_param_int(stage, "global_batch_size") == 0)
        ft_strbuf_printf(key_text, "data-parallel ranks %d\n", ranks);
    return 0;
}

const ft_stage_kind ft_kind_train = {
    .name = "train",
    .version = 1,
    .run = run_train,
    .extra_key = train_extra_key,
    .estimate = ft_train_estimate,
    .measure = measure_train,
};
