/* train: fine-tunes a model on a tokenize output.
 *
 *   adapter: train models/base data/train_set
 *       learning_rate = 1e-4
 *       num_train_epochs = 1
 *
 * Checks everything it can before training (inputs, tokenizer, parameters,
 * memory), trains with checkpoints in the work folder (a rerun resumes from
 * the newest), then writes the adapter or the model with ftpipe_train.json,
 * train_results.json and trainer_log.jsonl (see the README). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/backend/comm_nccl.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/host_memory.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/svg_chart.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/formats/deepspeed_config.h"
#include "ftpipe/model/model_save.h"
#include "ftpipe/model/train_memory.h"
#include "ftpipe/model/trainer.h"
#include "ftpipe/stages/stage_backend.h"
#include "ftpipe/stages/stage_ranks.h"
#include "ftpipe/stages/train_guard.h"
#include "ftpipe/text/tokenizer.h"

typedef struct {
    ft_stage *stage;
    const char *model_dir;
    const char *data_dir;
    const char *eval_dir;       /* the tokenize output whose rows evaluate; NULL: none */
    const char *eval_split;     /* "validation" of the data, or "train" of a third input */
    ft_token_dataset_meta meta;
    ft_model_options model_options;
    ft_train_options train_options;
    ft_train_plan plan;
    char *log_path;             /* <work>/trainer_log.jsonl, kept across resumes */
    int rank;                   /* this process's rank on this node: only its first reports */
    bool writes_output;         /* checkpoints and the output (stage_ranks.h says which rank) */
    int64_t first_step;         /* the step this process started from, for the ETA; -1: none yet */
    ft_train_guard guard;
    char sharding_note[2048];   /* what ZeRO, offload and a DeepSpeed config come to, for the log; "" when none */
} train_run;

static int check_inputs(train_run *run)
{
    ft_stage *stage = run->stage;
    size_t n_inputs = ft_stage_input_count(stage);
    if (n_inputs != 2 && n_inputs != 3)
        return ft_stage_fail(stage, "train takes a model folder and a tokenize output, and optionally a tokenize "
                                    "output to evaluate on (`%s: train MODEL DATA [EVAL_DATA]`); %zu given",
                             ft_stage_target(stage), n_inputs);
    if (n_inputs == 3) {
        run->eval_dir = ft_stage_input_path(stage, 2);
        run->eval_split = "train";
    }
    run->model_dir = ft_stage_input_path(stage, 0);
    run->data_dir = ft_stage_input_path(stage, 1);
    char *config = ft_path_join(run->model_dir, "config.json"), *meta = ft_path_join(run->data_dir, "meta.json");
    int status = 0;
    if (!ft_path_exists(config))
        status = ft_stage_fail(stage, "train's first input %s is not a model folder (it has no config.json)",
                               run->model_dir);
    else if (!ft_path_exists(meta))
        status = ft_stage_fail(stage, "train's second input %s is not a tokenize output (it has no meta.json)",
                               run->data_dir);
    free(config);
    free(meta);
    return status;
}

/* The data must have been tokenized with this model's tokenizer. */
static int check_tokenizer(train_run *run)
{
    if (ft_token_dataset_meta_read(run->data_dir, &run->meta) < 0)
        return -1;
    ft_tokenizer *tokenizer;
    if (ft_tokenizer_load(run->model_dir, &tokenizer) < 0)
        return -1;
    char hash[FT_HASH_HEX_LENGTH + 1];
    ft_hash_to_hex(ft_tokenizer_hash(tokenizer), hash);
    ft_tokenizer_free(tokenizer);
    if (strcmp(hash, run->meta.tokenizer_hash) == 0 && run->eval_dir) {
        ft_token_dataset_meta eval_meta;
        if (ft_token_dataset_meta_read(run->eval_dir, &eval_meta) < 0)
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

/* eval_strategy, eval_steps and per_device_eval_batch_size: the HF Trainer's
 * evaluation during training, on the data's validation split (val_size on
 * tokenize) or on a third input. */
static int choose_evaluation(train_run *run, ft_train_options *t)
{
    ft_stage *stage = run->stage;
    const char *strategy = ft_stage_param_string(stage, "eval_strategy");
    int64_t batch_size = ft_stage_param_int(stage, "per_device_eval_batch_size");
    int64_t every = ft_stage_param_int(stage, "eval_steps");
    if (strcmp(strategy, "no") == 0) {
        if (run->eval_dir)
            return ft_stage_fail(stage, "%s is given to evaluate on, but eval_strategy = no: set eval_strategy = "
                                        "steps or epoch",
                                 run->eval_dir);
        return 0;
    }
    if (batch_size < 1 || batch_size > 1 << 16 || every < 0)
        return ft_stage_fail(stage, "per_device_eval_batch_size = %lld and eval_steps = %lld: expected a batch of at "
                                    "least 1 and steps of 0 (logging_steps) or more",
                             (long long)batch_size, (long long)every);
    if (!run->eval_dir) {
        if (run->meta.validation.n_samples == 0)
            return ft_stage_fail(stage, "eval_strategy = %s needs rows to evaluate on: %s has no validation split "
                                        "(set val_size on its tokenize stage), and no third input names eval data",
                                 strategy, run->data_dir);
        run->eval_dir = run->data_dir;
        run->eval_split = "validation";
    }
    t->eval_batch_size = (int)batch_size;
    t->eval_each_epoch = strcmp(strategy, "epoch") == 0;
    t->eval_steps = t->eval_each_epoch ? 0 : every > 0 ? every : ft_stage_param_int(stage, "logging_steps");
    if (!t->eval_each_epoch && t->eval_steps == 0)
        return ft_stage_fail(stage, "eval_strategy = steps needs eval_steps (or logging_steps) above 0");
    return 0;
}

/* Each cuda rank of a node needs its own GPU of those the stage reserved. */
static int check_ranks(ft_stage *stage, int ranks)
{
    if (ranks <= 1 || !ft_stage_wants_cuda(stage))
        return 0;
    int64_t gpus = ft_stage_param_int(stage, "gpus");
    int per_node = ft_stage_ranks_per_node(stage);
    if (per_node > gpus)
        return ft_stage_fail(stage, "%d ranks on this node on cuda need a GPU each, but the stage reserves gpus = %lld: "
                                    "set gpus = %d (or nproc_per_node = %lld)",
                             per_node, (long long)gpus, per_node, (long long)gpus);
    return 0;
}

/* global_batch_size = per-device batch x accumulation x ranks: the accumulation
 * follows from the other two, so that the rank count leaves the result alone. */
static int global_batch_accumulation(ft_stage *stage, int64_t batch_size, int ranks, int64_t *accumulation)
{
    int64_t global = ft_stage_param_int(stage, "global_batch_size");
    if (global == 0)
        return 0;
    if (global < 0 || global > 1 << 30)
        return ft_stage_fail(stage, "global_batch_size = %lld: expected a positive number of rows", (long long)global);
    if (ft_stage_param_is_set(stage, "gradient_accumulation_steps"))
        return ft_stage_fail(stage, "global_batch_size and gradient_accumulation_steps are both set: with "
                                    "global_batch_size the accumulation is global_batch_size / "
                                    "(per_device_train_batch_size x ranks); remove one of them");
    int64_t per_step = batch_size * ranks;
    if (global % per_step != 0)
        return ft_stage_fail(stage, "global_batch_size = %lld is not a multiple of per_device_train_batch_size (%lld) "
                                    "x ranks (%d) = %lld: change one of them so that it divides",
                             (long long)global, (long long)batch_size, ranks, (long long)per_step);
    *accumulation = global / per_step;
    return 0;
}

/* A number a DeepSpeed config gives instead of "auto" must be the stage's own,
 * as the HF Trainer refuses a config that disagrees with its arguments. */
static int check_deepspeed_number(train_run *run, const char *file, const char *key, double given, const char *param,
                                  double own)
{
    if (given < 0.0 || given == own)
        return 0;
    return ft_stage_fail(run->stage, "deepspeed = %s: %s is %g but the stage's %s is %g: make them agree, or write "
                                     "\"auto\" in the config",
                         file, key, given, param, own);
}

/* zero_stage, offload_optimizer and offload_param, or the DeepSpeed config
 * that sets them; what is not built yet is refused here, before any work. */
static int choose_sharding(train_run *run, ft_train_options *t)
{
    ft_stage *stage = run->stage;
    const char *file = ft_stage_param_string(stage, "deepspeed");
    int64_t zero_stage = ft_stage_param_int(stage, "zero_stage");
    bool offload_optimizer = strcmp(ft_stage_param_string(stage, "offload_optimizer"), "cpu") == 0;
    bool offload_param = strcmp(ft_stage_param_string(stage, "offload_param"), "cpu") == 0;
    size_t used = 0;
    run->sharding_note[0] = '\0';
    if (file[0]) {
        if (ft_stage_param_is_set(stage, "zero_stage") || ft_stage_param_is_set(stage, "offload_optimizer") ||
            ft_stage_param_is_set(stage, "offload_param"))
            return ft_stage_fail(stage, "deepspeed = %s sets zero_stage, offload_optimizer and offload_param: remove "
                                        "them from the stage, or remove deepspeed",
                                 file);
        char *path = file[0] == '/' ? ft_xstrdup(file) : ft_path_join(ft_stage_pipeline_dir(stage), file);
        ft_deepspeed_config config;
        int status = ft_deepspeed_config_read(path, &config);
        if (status < 0)
            status = ft_stage_fail(stage, "deepspeed = %s: %s", file, ft_error_message());
        int ranks = t->ranks > 1 ? t->ranks : 1;
        int64_t global_batch = (int64_t)t->batch_size * t->gradient_accumulation_steps * ranks;
        if (status == 0)
            status = check_deepspeed_number(run, file, "train_micro_batch_size_per_gpu",
                                            (double)config.train_micro_batch_size_per_gpu,
                                            "per_device_train_batch_size", t->batch_size);
        if (status == 0)
            status = check_deepspeed_number(run, file, "gradient_accumulation_steps",
                                            (double)config.gradient_accumulation_steps, "gradient_accumulation_steps",
                                            t->gradient_accumulation_steps);
        if (status == 0)
            status = check_deepspeed_number(run, file, "train_batch_size", (double)config.train_batch_size,
                                            "batch (per-device batch x accumulation x ranks)", (double)global_batch);
        if (status == 0)
            status = check_deepspeed_number(run, file, "gradient_clipping", config.gradient_clipping,
                                            "max_grad_norm", t->max_grad_norm);
        zero_stage = config.zero_stage;
        offload_optimizer = config.offload_optimizer;
        offload_param = config.offload_param;
        if (status == 0)
            used = (size_t)snprintf(run->sharding_note, sizeof run->sharding_note,
                                    "deepspeed %s: ZeRO stage %d, offload_optimizer %s, offload_param %s%s%s%s", file,
                                    config.zero_stage, offload_optimizer ? "cpu" : "none",
                                    offload_param ? "cpu" : "none", config.ignored[0] ? "; " : "", config.ignored,
                                    config.ignored[0] ? " have no meaning in ftpipe and are ignored" : "");
        ft_deepspeed_config_free(&config);
        free(path);
        if (status < 0)
            return -1;
    }
    if (zero_stage < 0 || zero_stage > 3)
        return ft_stage_fail(stage, "zero_stage = %lld: expected 0, 1, 2 or 3 (DeepSpeed's ZeRO stages)",
                             (long long)zero_stage);
    if (offload_param && zero_stage != 3)
        return ft_stage_fail(stage, "offload_param = cpu needs zero_stage = 3, as in DeepSpeed: parameters are only "
                                    "sharded, hence offloaded, with stage 3");
    int ranks = t->ranks > 1 ? t->ranks : 1;
    if (zero_stage == 3 && ranks > 1)
        return ft_stage_fail(stage, "ZeRO stage 3 (parameters sharded over the ranks, gathered layer by layer) is not "
                                    "built yet: zero_stage = 2 shards AdamW's state and the gradients' sums, and "
                                    "gradient_checkpointing = true or LoRA lower the memory further");
    if (offload_optimizer && zero_stage == 0)
        return ft_stage_fail(stage, "offload_optimizer = cpu needs zero_stage = 1, 2 or 3, as in DeepSpeed");
    if (offload_param && ft_stage_wants_cuda(stage))
        return ft_stage_fail(stage, "offload_param = cpu is not built for the cuda backend yet: parameters stay in "
                                    "GPU memory; offload_optimizer = cpu moves AdamW's state to host memory");
    if (zero_stage > 0 && used < sizeof run->sharding_note)
        snprintf(run->sharding_note + used, sizeof run->sharding_note - used, "%sZeRO-%lld %s%s%s", used ? "; " : "",
                 (long long)zero_stage,
                 ranks > 1 ? "shards AdamW's state over the ranks, each holding 1 / ranks of it"
                           : "with one rank has nothing to shard: it trains as stage 0",
                 offload_optimizer ? "; offload_optimizer = cpu: AdamW's state and an f32 master copy of the trained "
                                     "values in host memory, updated on the host's cores"
                                   : "",
                 offload_param ? "; offload_param = cpu: the cpu backend keeps the parameters in host memory anyway"
                               : "");
    t->zero_stage = ranks > 1 ? (int)zero_stage : 0;
    t->offload_optimizer = offload_optimizer;
    return 0;
}

static int read_parameters(train_run *run)
{
    ft_stage *stage = run->stage;
    ft_model_options *m = &run->model_options;
    ft_train_options *t = &run->train_options;
    bool lora = strcmp(ft_stage_param_string(stage, "finetuning_type"), "lora") == 0;
    int64_t batch_size = ft_stage_param_int(stage, "per_device_train_batch_size");
    int64_t accumulation = ft_stage_param_int(stage, "gradient_accumulation_steps");
    int64_t rank = ft_stage_param_int(stage, "lora_rank");
    if (batch_size < 1 || batch_size > 1 << 20 || accumulation < 1 || accumulation > 1 << 20)
        return ft_stage_fail(stage, "per_device_train_batch_size = %lld and gradient_accumulation_steps = %lld: "
                                    "expected at least 1 each",
                             (long long)batch_size, (long long)accumulation);
    int ranks = ft_stage_world_size(stage);
    if (ranks < 0)
        return ft_stage_fail(stage, "%s", ft_error_message());
    if (check_ranks(stage, ranks) < 0 || global_batch_accumulation(stage, batch_size, ranks, &accumulation) < 0)
        return -1;
    m->max_batch_size = (int)batch_size;
    m->max_seq_len = (int)run->meta.cutoff_len;
    m->finetuning = lora ? FT_FINETUNE_LORA : FT_FINETUNE_FULL;
    m->use_lora = lora;
    m->gradient_checkpointing = ft_stage_param_bool(stage, "gradient_checkpointing");
    int lora_rank = (int)(rank > 0 && rank < 1 << 20 ? rank : 0);
    double lora_alpha = ft_stage_param_float(stage, "lora_alpha");
    if (lora_alpha == 0) /* unset: LLaMA-Factory's default */
        lora_alpha = 2.0 * lora_rank;
    m->lora = (ft_lora_config){lora_rank, lora_alpha, ft_stage_param_float(stage, "lora_dropout"),
                               ft_stage_param_bool(stage, "use_rslora"), 0, (uint64_t)ft_stage_param_int(stage, "seed")};
    if (lora && (ft_lora_parse_targets(ft_stage_param_string(stage, "lora_target"), &m->lora.targets) < 0 ||
                 ft_lora_config_check(&m->lora) < 0))
        return -1;
    *t = (ft_train_options){
        .batch_size = (int)batch_size,
        .gradient_accumulation_steps = (int)accumulation,
        .num_train_epochs = ft_stage_param_float(stage, "num_train_epochs"),
        .max_steps = ft_stage_param_int(stage, "max_steps"),
        .learning_rate = ft_stage_param_float(stage, "learning_rate"),
        .warmup_ratio = ft_stage_param_float(stage, "warmup_ratio"),
        .warmup_steps = ft_stage_param_int(stage, "warmup_steps"),
        .max_grad_norm = ft_stage_param_float(stage, "max_grad_norm"),
        .adamw = {ft_stage_param_float(stage, "adam_beta1"), ft_stage_param_float(stage, "adam_beta2"),
                  ft_stage_param_float(stage, "adam_epsilon"), ft_stage_param_float(stage, "weight_decay")},
        .seed = (uint64_t)ft_stage_param_int(stage, "seed"),
        .logging_steps = ft_stage_param_int(stage, "logging_steps"),
        .save_steps = ft_stage_param_int(stage, "save_steps"),
        .save_total_limit = (int)ft_stage_param_int(stage, "save_total_limit"),
        .run_id = ft_stage_key(stage),
        .ranks = ranks,
    };
    if (ft_lr_schedule_parse(ft_stage_param_string(stage, "lr_scheduler_type"), &t->lr_scheduler_type) < 0 ||
        choose_evaluation(run, t) != 0 || choose_sharding(run, t) != 0)
        return -1;
    if (run->eval_dir && t->eval_batch_size > m->max_batch_size) /* the model plans for the larger batch */
        m->max_batch_size = t->eval_batch_size;
    return ft_train_plan_steps(t, run->meta.train.n_rows, &run->plan);
}

/* On the cpu backend the whole plan lives in host memory; the cuda backend
 * checks its own memory when the model reserves it. */
static int check_memory(train_run *run, const ft_backend *backend)
{
    ft_model_config config;
    ft_memory_plan plan;
    if (ft_model_config_load(run->model_dir, &config) < 0 ||
        ft_model_plan_memory(&config, &run->model_options, backend->dtype, &plan) < 0)
        return -1;
    int ranks = run->train_options.ranks > 1 ? run->train_options.ranks : 1;
    if (run->train_options.zero_stage > 0) { /* each rank holds its share of AdamW's state */
        size_t share = (plan.optimizer_bytes + (size_t)ranks - 1) / (size_t)ranks;
        plan.total_bytes -= plan.optimizer_bytes - share;
        plan.optimizer_bytes = share;
    }
    if (run->train_options.offload_optimizer) /* the cpu backend's: an f32 master copy and the gradients downloaded */
        plan.total_bytes += plan.optimizer_bytes;
    char total[32], weights[32], adapter[32], gradients[32], optimizer[32], activations[32], available[32];
    ft_format_bytes(plan.total_bytes, total, sizeof total);
    ft_format_bytes(plan.parameter_bytes, weights, sizeof weights);
    ft_format_bytes(plan.adapter_bytes, adapter, sizeof adapter);
    ft_format_bytes(plan.gradient_bytes, gradients, sizeof gradients);
    ft_format_bytes(plan.optimizer_bytes, optimizer, sizeof optimizer);
    ft_format_bytes(plan.activation_bytes, activations, sizeof activations);
    ft_stage_log(run->stage, "memory plan: %s (weights %s, adapter %s, gradients %s, optimizer %s%s, activations %s)",
                 total, weights, adapter, gradients, optimizer,
                 run->train_options.zero_stage > 0 ? " as this rank's ZeRO share" : "", activations);
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

static ft_dtype save_dtype_of(const ft_model_config *config)
{
    if (strcmp(config->torch_dtype, "bfloat16") == 0)
        return FT_DTYPE_BF16;
    return strcmp(config->torch_dtype, "float16") == 0 ? FT_DTYPE_F16 : FT_DTYPE_F32;
}

/* --- reporting --- */

static void on_step(void *context, const ft_train_report *report)
{
    train_run *run = context;
    if (run->first_step < 0)
        run->first_step = report->step - 1;
    double per_step = report->elapsed_s / (double)(report->step - run->first_step);
    double eta = per_step * (double)(report->total_steps - report->step);
    ft_stage_progress(run->stage, (double)report->step / (double)report->total_steps,
                      "step %lld/%lld, %.0f tokens/s, loss %.4f, ETA %.0fs", (long long)report->step,
                      (long long)report->total_steps, report->tokens_per_s, report->loss, eta);
}

static void on_log(void *context, const ft_train_report *report)
{
    train_run *run = context;
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
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    FILE *file = fopen(run->log_path, "a");
    if (file) {
        fprintf(file, "%s\n", text);
        fclose(file);
    }
    free(text);
    json_decref(line);
}

static void on_evaluate(void *context, const ft_eval_report *report)
{
    train_run *run = context;
    ft_stage_metric(run->stage, report->step, "eval_loss", report->eval_loss);
    ft_stage_log(run->stage, "step %lld epoch %.2f: eval_loss %.4f on %llu rows (%.1fs)", (long long)report->step,
                 report->epoch, report->eval_loss, (unsigned long long)report->n_rows, report->runtime_s);
    json_t *line = json_pack("{sI sf sf sf}", "step", (json_int_t)report->step, "epoch", report->epoch, "eval_loss",
                             report->eval_loss, "eval_runtime", report->runtime_s);
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    FILE *file = fopen(run->log_path, "a");
    if (file) {
        fprintf(file, "%s\n", text);
        fclose(file);
    }
    free(text);
    json_decref(line);
}

static void on_note(void *context, const char *text) { ft_stage_log(((train_run *)context)->stage, "%s", text); }

/* Ranks other than 0 note in their own log. */
static void on_rank_note(void *context, const char *text)
{
    fprintf(stderr, "rank %d: %s\n", ((train_run *)context)->rank, text);
    fflush(stderr);
}

static bool cancelled(void *context) { return ft_stage_cancelled(((train_run *)context)->stage); }

static bool should_stop(void *context, const ft_train_report *report)
{
    return ft_train_guard_should_stop(&((train_run *)context)->guard, report);
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
 * replacing those an interrupted one wrote after its checkpoint. */
static int write_trainer_log(const train_run *run, const char *out_dir)
{
    char *text = NULL;
    size_t length = 0;
    if (ft_path_exists(run->log_path) && ft_read_file(run->log_path, &text, &length) < 0)
        return -1;
    ft_strbuf kept;
    ft_strbuf_init(&kept);
    size_t *line_starts = NULL, capacity = 0, n_lines = 0;
    int64_t *steps = NULL;
    size_t steps_capacity = 0;
    for (char *line = text; line && *line;) {
        char *end = strchr(line, '\n');
        size_t line_length = end ? (size_t)(end - line) : strlen(line);
        json_t *entry = json_loadb(line, line_length, 0, NULL);
        /* an evaluation comes after the step's log line: ordered as step * 2 + 1 */
        json_int_t step = entry ? json_integer_value(json_object_get(entry, "step")) * 2 +
                                      (json_object_get(entry, "eval_loss") != NULL)
                                : 0;
        json_decref(entry);
        while (n_lines > 0 && steps[n_lines - 1] >= step) /* redone after a resume */
            kept.length = line_starts[--n_lines];
        ft_grow((void **)&line_starts, &capacity, n_lines + 1, sizeof *line_starts);
        ft_grow((void **)&steps, &steps_capacity, n_lines + 1, sizeof *steps);
        line_starts[n_lines] = kept.length;
        steps[n_lines++] = step;
        ft_strbuf_add(&kept, line, line_length);
        ft_strbuf_putc(&kept, '\n');
        line = end ? end + 1 : line + line_length;
    }
    char *path = ft_path_join(out_dir, "trainer_log.jsonl");
    int status = ft_write_file_atomic(path, kept.data, kept.length);
    free(path);
    free(line_starts);
    free(steps);
    ft_strbuf_free(&kept);
    free(text);
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

static int write_output(train_run *run, ft_model *model, const ft_train_result *result)
{
    const char *out = ft_stage_output_path(run->stage);
    const char *base_model = ft_path_basename(run->model_dir);
    bool lora = run->model_options.finetuning == FT_FINETUNE_LORA;
    int status = lora ? ft_lora_save(ft_model_lora(model), out, base_model) : ft_model_save(model, run->model_dir, out);
    if (status < 0)
        return -1;
    double runtime = result->runtime_s > 0.0 ? result->runtime_s : 1e-9;
    json_t *info = json_pack("{ss ss ss si ss sI}", "finetuning_type", lora ? "lora" : "full", "template",
                             run->meta.template_name, "tokenizer_hash", run->meta.tokenizer_hash, "cutoff_len",
                             (int)run->meta.cutoff_len, "base_model", base_model, "global_step",
                             (json_int_t)result->global_step);
    int64_t steps_run = result->global_step - result->resumed_from_step;
    json_t *results = json_pack("{sf sI sf sf sf sf}", "epoch", result->epoch, "global_step",
                                (json_int_t)result->global_step, "train_runtime", result->runtime_s,
                                "train_samples_per_second", result->samples / runtime, "train_steps_per_second",
                                (double)steps_run / runtime, "train_loss", result->train_loss);
    if (write_json(out, "ftpipe_train.json", info) < 0 || write_json(out, "train_results.json", results) < 0)
        return -1;
    if (write_trainer_log(run, out) < 0)
        return -1;
    return ft_stage_param_bool(run->stage, "plot_loss") ? write_loss_plot(out) : 0;
}

static int train(train_run *run, ft_backend *backend)
{
    ft_stage *stage = run->stage;
    ft_token_shards *shards = NULL;
    if (ft_token_shards_open(run->data_dir, "train", &shards) < 0)
        return -1;
    ft_model *model = NULL;
    int status = ft_model_load(run->model_dir, backend, &run->model_options, &model);
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
        run->train_options.eval_shards = eval_shards;
        if (status == 0)
            ft_stage_log(stage, "evaluating on %llu rows of %s/%s %s", (unsigned long long)ft_token_shards_n_rows(eval_shards),
                         run->eval_dir, run->eval_split,
                         run->train_options.eval_each_epoch ? "at each epoch's end" : "every eval_steps steps");
    }
    if (status == 0) {
        /* The result the guard keeps room for: the adapter in f32, or the model in its dtype. */
        const ft_model_config *config = ft_model_get_config(model);
        uint64_t output_bytes = run->model_options.finetuning == FT_FINETUNE_LORA
                                    ? (uint64_t)n_trained * sizeof(float)
                                    : ft_model_config_parameter_count(config) * ft_dtype_size(save_dtype_of(config));
        ft_train_guard_init(&run->guard, stage, run->train_options.checkpoint_dir, output_bytes,
                            strcmp(backend->name, "cuda") == 0);
    }
    ft_train_result result;
    if (status == 0)
        status = ft_train(model, shards, &run->train_options, &result);
    if (status == 0 && run->rank == 0) {
        /* The optimizer state this rank held: the trainer's count, a 1 / ranks share with ZeRO. */
        char state[32];
        ft_format_bytes(result.optimizer_state_bytes, state, sizeof state);
        ft_stage_metric(stage, result.global_step, "optimizer_state_bytes", (double)result.optimizer_state_bytes);
        ft_stage_log(stage, "optimizer state on rank 0: %s (ZeRO stage %d over %d rank%s)", state,
                     run->train_options.zero_stage, ranks, ranks > 1 ? "s" : "");
    }
    ft_token_shards_close(eval_shards);
    if (status == 0 && run->writes_output)
        status = write_output(run, model, &result);
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
        /* The run's mean, as train_results.json's train_loss, beside the last step's. */
        ft_stage_metric(stage, result.global_step, "train_loss", result.train_loss);
        ft_stage_summary(stage, "mean loss %.4f after %lld steps (%.2f epochs), %.1fs, %.2f samples/s",
                         result.train_loss, (long long)result.global_step, result.epoch, result.runtime_s,
                         result.samples / (result.runtime_s > 0.0 ? result.runtime_s : 1e-9));
    }
    ft_train_guard_free(&run->guard);
    ft_model_free(model);
    ft_token_shards_close(shards);
    return status;
}

static int run_train(ft_stage *stage)
{
    train_run run = {.stage = stage, .first_step = -1};
    if (check_inputs(&run) < 0 || check_tokenizer(&run) < 0 || read_parameters(&run) < 0)
        return -1;
    if (run.sharding_note[0])
        ft_stage_log(stage, "%s", run.sharding_note);
    char *checkpoints = ft_path_join(ft_stage_work_dir(stage), "checkpoints");
    run.log_path = ft_path_join(ft_stage_work_dir(stage), "trainer_log.jsonl");
    run.train_options.checkpoint_dir = checkpoints;
    run.train_options.callbacks =
        (ft_train_callbacks){&run, on_step, on_log, on_note, cancelled, on_evaluate, should_stop};
    /* The ranks start before any backend does: a process forked after CUDA or
     * OpenBLAS threads started could not use them. */
    ft_stage_ranks ranks;
    if (ft_stage_ranks_start(stage, &ranks) < 0) {
        free(checkpoints);
        free(run.log_path);
        return -1;
    }
    run.rank = ranks.local_rank;
    run.train_options.comm = ranks.comm;
    run.writes_output = ranks.writes_output;
    run.train_options.saves_checkpoints = ranks.writes_output;
    if (run.rank != 0)
        run.train_options.callbacks = (ft_train_callbacks){&run, NULL, NULL, on_rank_note, NULL, NULL, NULL};
    ft_backend *backend = ft_stage_backend_for_rank(stage, "training", ranks.local_rank, ranks.local_size);
    int status = backend ? (run.rank == 0 ? check_memory(&run, backend) : 0) : -1;
    ft_comm *nccl = NULL; /* cuda ranks add their gradients over NCCL; the host sockets only bootstrap it */
    if (status == 0 && ranks.comm && strcmp(backend->name, "cuda") == 0) {
        nccl = ft_comm_nccl_create(backend, ranks.comm);
        status = nccl ? 0 : -1;
        run.train_options.comm = nccl;
    }
    if (status == 0)
        status = train(&run, backend);
    if (status < 0 && nccl)
        nccl->abort(nccl);
    ft_comm_destroy(nccl);
    ft_backend_destroy(backend);
    status = ft_stage_ranks_finish(stage, &ranks, status);
    free(checkpoints);
    free(run.log_path);
    return status;
}

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

/* --- estimate --- */


/* Disk: the output, and the checkpoints the work folder holds at once (one more
 * than save_total_limit while the newest is written). */
static void estimate_disk(const train_run *run, const ft_model_config *config, const ft_train_memory *memory,
                          ft_stage_estimate *out)
{
    bool full = run->model_options.finetuning == FT_FINETUNE_FULL;
    uint64_t trained_bytes = full ? memory->plan.gradient_bytes : memory->plan.adapter_bytes;
    uint64_t output = full ? ft_model_config_parameter_count(config) * ft_dtype_size(save_dtype_of(config))
                           : trained_bytes;
    int64_t steps = run->plan.total_steps, every = run->train_options.save_steps;
    int64_t saved = every > 0 ? steps / every + (steps % every != 0) : 1;
    int64_t limit = run->train_options.save_total_limit;
    int64_t held = limit > 0 && saved > limit ? limit + 1 : saved;
    uint64_t checkpoint = 3 * trained_bytes; /* the tensors and AdamW's two moments, in f32 */
    char output_text[32], checkpoint_text[32];
    ft_format_bytes(output, output_text, sizeof output_text);
    ft_format_bytes(checkpoint, checkpoint_text, sizeof checkpoint_text);
    ft_estimate_set(&out->disk_bytes, (double)(output + (uint64_t)held * checkpoint),
                    "output %s + %lld checkpoints held at once x %s (%lld saved, save_total_limit %lld)", output_text,
                    (long long)held, checkpoint_text, (long long)saved, (long long)limit);
}

/* When the peak exceeds the budget: the least change that fits, with its figure —
 * recomputation, then the largest per-device batch (accumulating more micro-batches,
 * so the effective batch stays), then LoRA. */
static void find_smallest_change(const train_run *run, const ft_model_config *config, int threads,
                                 ft_stage_estimate *out)
{
    ft_model_options options = run->model_options;
    ft_train_memory memory;
    char need[32], have[32];
    ft_format_bytes(out->host_budget_bytes, have, sizeof have);
    if (run->train_options.ranks > 1 && run->train_options.zero_stage == 0 &&
        ft_train_memory_estimate(config, &options, false, threads, save_dtype_of(config), &memory) == 0) {
        ft_train_memory_shard(&memory, false, run->train_options.ranks);
        ft_format_bytes(memory.host_peak_bytes, need, sizeof need);
        if (memory.host_peak_bytes <= out->host_budget_bytes) {
            snprintf(out->smallest_change, sizeof out->smallest_change,
                     "set zero_stage = 1: each of the %d ranks then holds 1 / %d of AdamW's state (needs %s of the %s)",
                     run->train_options.ranks, run->train_options.ranks, need, have);
            return;
        }
    }
    for (int recompute = options.gradient_checkpointing; recompute <= 1; recompute++) {
        options.gradient_checkpointing = recompute;
        for (int batch = run->train_options.batch_size; batch >= 1; batch /= 2) {
            options.max_batch_size = batch;
            if (ft_train_memory_estimate(config, &options, false, threads, save_dtype_of(config), &memory) < 0)
                continue;
            if (run->train_options.zero_stage > 0)
                ft_train_memory_shard(&memory, false, run->train_options.ranks);
            if (run->train_options.offload_optimizer)
                ft_train_memory_offload(&memory, false);
            if (memory.host_peak_bytes > out->host_budget_bytes)
                continue;
            if (batch == run->train_options.batch_size && !recompute)
                return;
            ft_format_bytes(memory.host_peak_bytes, need, sizeof need);
            int accumulation = run->train_options.gradient_accumulation_steps * run->train_options.batch_size / batch;
            if (batch == run->train_options.batch_size)
                snprintf(out->smallest_change, sizeof out->smallest_change,
                         "set gradient_checkpointing = true (needs %s of the %s)", need, have);
            else
                snprintf(out->smallest_change, sizeof out->smallest_change,
                         "set per_device_train_batch_size = %d and gradient_accumulation_steps = %d%s, the same "
                         "effective batch (needs %s of the %s)",
                         batch, accumulation, recompute ? " with gradient_checkpointing = true" : "", need, have);
            return;
        }
    }
    snprintf(out->smallest_change, sizeof out->smallest_change,
             "no batch size fits%s: shorten the data's cutoff_len or free memory",
             run->model_options.finetuning == FT_FINETUNE_FULL ? "; try finetuning_type = lora" : "");
}

static int estimate_train(ft_stage *stage, ft_stage_estimate *out)
{
    train_run run = {.stage = stage, .first_step = -1};
    size_t n_inputs = ft_stage_input_count(stage); /* MODEL DATA [EVAL_DATA] */
    if (n_inputs != 2 && n_inputs != 3)
        return check_inputs(&run);
    run.model_dir = ft_stage_input_path(stage, 0);
    run.data_dir = ft_stage_input_path(stage, 1);
    char *config_path = ft_path_join(run.model_dir, "config.json");
    char *meta_path = ft_path_join(run.data_dir, "meta.json");
    bool have_model = ft_path_exists(config_path), have_data = ft_path_exists(meta_path);
    free(config_path);
    free(meta_path);
    if (!have_model || !have_data) {
        const char *missing = have_model ? run.data_dir : run.model_dir;
        ft_estimate_figure *figures[] = {&out->device_bytes, &out->host_bytes, &out->disk_bytes, &out->time_s};
        for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++)
            ft_estimate_unknown(figures[i], "needs %s, which is not built yet", missing);
        return 0;
    }
    ft_model_config config;
    if (ft_token_dataset_meta_read(run.data_dir, &run.meta) < 0 || ft_model_config_load(run.model_dir, &config) < 0 ||
        read_parameters(&run) < 0)
        return -1;
    const char *backend = ft_stage_param_string(stage, "backend");
    /* Not ft_cuda_device_count: this runs in the engine process, where starting CUDA
     * would break the stages it forks; a GPU's device file answers as well. */
    bool on_gpu = strcmp(backend, "cuda") == 0 ||
                  (strcmp(backend, "auto") == 0 && access("/dev/nvidia0", F_OK) == 0);
    int threads = (int)ft_stage_param_int(stage, "threads");
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads <= 0 || threads > cores)
        threads = cores > 0 ? cores : 1;
    ft_train_memory memory;
    if (ft_train_memory_estimate(&config, &run.model_options, on_gpu, threads, save_dtype_of(&config), &memory) < 0)
        return -1;
    if (run.train_options.zero_stage > 0)
        ft_train_memory_shard(&memory, on_gpu, run.train_options.ranks);
    if (run.train_options.offload_optimizer)
        ft_train_memory_offload(&memory, on_gpu);
    const ft_memory_plan *plan = &memory.plan;
    char total[32], activations[32], buffers[32], runtime[32];
    ft_format_bytes(plan->total_bytes, total, sizeof total);
    ft_format_bytes(plan->activation_bytes, activations, sizeof activations);
    ft_format_bytes(memory.checkpoint_buffer_bytes, buffers, sizeof buffers);
    ft_format_bytes(memory.runtime_bytes, runtime, sizeof runtime);
    const char *shape = run.model_options.gradient_checkpointing ? ", recomputed" : "";
    if (on_gpu) {
        ft_estimate_set(&out->device_bytes, (double)memory.device_peak_bytes,
                        "memory plan in bf16 for %d x %u tokens%s (activations %s), before the backend's scratch",
                        run.train_options.batch_size, run.meta.cutoff_len, shape, activations);
        ft_estimate_set(&out->host_bytes, (double)memory.host_peak_bytes,
                        "host buffers while %s, and the program's %s", memory.peak_phase, runtime);
    } else {
        ft_estimate_set(&out->device_bytes, 0.0, "the cpu backend uses no GPU");
        ft_estimate_set(&out->host_bytes, (double)memory.host_peak_bytes,
                        "memory plan %s for %d x %u tokens%s (activations %s), peak while %s (checkpoint buffer "
                        "%s), the program and %d BLAS threads %s",
                        total, run.train_options.batch_size, run.meta.cutoff_len, shape, activations,
                        memory.peak_phase, buffers, threads, runtime);
    }
    if (!on_gpu && out->host_budget_bytes > 0 && memory.host_peak_bytes > out->host_budget_bytes)
        find_smallest_change(&run, &config, threads, out);
    estimate_disk(&run, &config, &memory, out);
    /* Work in tokens: what the data holds, times the epochs the steps cover. */
    double epochs = run.plan.steps_per_epoch > 0 ? (double)run.plan.total_steps / (double)run.plan.steps_per_epoch
                                                 : 0.0;
    out->work_amount = (double)run.meta.train.n_tokens * epochs;
    out->work_unit = on_gpu ? "tokens_per_s_cuda" : "tokens_per_s_cpu";
    out->device_name = on_gpu ? "cuda" : "cpu";
    return 0;
}

const ft_stage_kind ft_kind_train = {
    .name = "train",
    .version = 1,
    .run = run_train,
    .extra_key = train_extra_key,
    .estimate = estimate_train,
};
