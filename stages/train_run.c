/* train_run: the train kind's inputs and parameters read into one place (see
 * include/ftpipe/stages/train_run.h). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/formats/deepspeed_config.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/vision_qwen2.h"
#include "ftpipe/stages/stage_backend.h"
#include "ftpipe/stages/stage_ranks.h"
#include "ftpipe/stages/train_run.h"

int ft_train_check_inputs(ft_train_run *run)
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

/* eval_strategy, eval_steps and per_device_eval_batch_size: the HF Trainer's
 * evaluation during training, on the data's validation split (val_size on
 * tokenize) or on a third input. */
static int choose_evaluation(ft_train_run *run, ft_train_options *t)
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

/* LLaMA-Factory's freeze_vision_tower, freeze_multi_modal_projector,
 * freeze_language_model and train_mm_proj_only on a vision-language model: the
 * tower stays frozen (its backward is not built); the projector is trained
 * whole with full fine-tuning (alone with train_mm_proj_only or
 * freeze_language_model, the language model frozen), or through LoRA on the
 * layers lora_target names. */
static int choose_vision_training(ft_train_run *run, bool lora)
{
    ft_stage *stage = run->stage;
    ft_model_config config;
    if (ft_language_model_config_load(run->model_dir, &config) < 0)
        return -1;
    if (!config.vision_language && !config.llava)
        return 0; /* LLaMA-Factory leaves a text model's training alone */
    bool projector = !ft_stage_param_bool(stage, "freeze_multi_modal_projector");
    bool language_frozen = ft_stage_param_bool(stage, "freeze_language_model");
    bool projector_only = ft_stage_param_bool(stage, "train_mm_proj_only");
    const char *layers = config.llava ? "linear_1, linear_2" : "mlp.0, mlp.2";
    if (!ft_stage_param_bool(stage, "freeze_vision_tower"))
        return ft_stage_fail(stage, "%s: freeze_vision_tower = false is not supported yet: the vision tower's "
                                    "backward is not built, so it stays frozen; the projector trains with "
                                    "freeze_multi_modal_projector = false or train_mm_proj_only = true",
                             run->model_dir);
    ft_model_options *m = &run->model_options;
    if (language_frozen && lora)
        return ft_stage_fail(stage, "freeze_language_model = true with LoRA is not supported: the adapter lives on "
                                    "the language model; train the projector alone with finetuning_type = full and "
                                    "freeze_multi_modal_projector = false");
    if (language_frozen && !projector && !projector_only)
        return ft_stage_fail(stage, "freeze_language_model = true leaves nothing to train while the projector and the "
                                    "tower are frozen too: set freeze_multi_modal_projector = false to train the "
                                    "projector alone");
    if (lora) {
        bool targeted = (m->lora.targets & FT_LORA_PROJECTOR_TARGETS) != 0;
        if (projector_only)
            return ft_stage_fail(stage, "train_mm_proj_only = true trains the projector whole, with the language "
                                        "model frozen: it needs finetuning_type = full (LoRA on the projector: "
                                        "freeze_multi_modal_projector = false and lora_target naming %s)",
                                 layers);
        if (targeted && !projector)
            return ft_stage_fail(stage, "lora_target names the projector's layers (%s), which "
                                        "freeze_multi_modal_projector = true keeps frozen: set "
                                        "freeze_multi_modal_projector = false, or leave them out of lora_target",
                                 layers);
        if (projector && !targeted)
            ft_stage_log(stage, "freeze_multi_modal_projector = false with LoRA adds adapters only on the projector "
                                "layers lora_target names (%s); lora_target = all leaves them out, as in "
                                "LLaMA-Factory, so the projector stays frozen",
                         layers);
        return 0;
    }
    m->train_projector = projector || projector_only;
    m->freeze_language_model = projector_only || language_frozen;
    return 0;
}

int ft_train_check_images(const ft_train_run *run, const char *data_dir, const ft_token_dataset_meta *meta)
{
    ft_model_config config;
    if (ft_language_model_config_load(run->model_dir, &config) < 0)
        return -1;
    bool vision = config.vision_language || config.llava;
    if (!meta->vision_processor[0])
        return 0;
    if (!vision)
        return ft_stage_fail(run->stage, "%s holds images (tokenized for %s), but %s is a text-only model (%s), which "
                                         "would learn from image placeholder tokens: train a vision-language model "
                                         "such as Qwen2VLForConditionalGeneration or LlavaForConditionalGeneration "
                                         "on it, or use text-only data",
                             data_dir, meta->vision_processor, run->model_dir, config.architecture_name);
    const char *reads = config.llava ? "clip" : "qwen2_vl";
    if (strcmp(meta->vision_processor, reads) != 0)
        return ft_stage_fail(run->stage, "%s holds images preprocessed for %s, but %s is a %s, which reads %s's: "
                                         "tokenize the data again with this model",
                             data_dir, meta->vision_processor, run->model_dir,
                             config.llava ? "LlavaForConditionalGeneration" : config.architecture_name, reads);
    return 0;
}

int ft_train_open_images(const ft_train_run *run, const char *dataset_dir, const char *split,
                         const ft_token_shards *shards, ft_image_store **out)
{
    *out = NULL;
    ft_token_dataset_meta meta;
    if (ft_token_dataset_meta_read(dataset_dir, &meta) < 0)
        return -1;
    if (!meta.vision_processor[0])
        return 0;
    ft_model_config config;
    ft_llava_config llava;
    if (ft_language_model_config_load(run->model_dir, &config) < 0 ||
        (config.llava && ft_llava_config_load(run->model_dir, &llava) < 0))
        return -1;
    /* a CLIP image is one row of 3 x size x size; a Qwen2-VL patch one of patch_length */
    int row_length = config.llava ? 3 * llava.vision.image_size * llava.vision.image_size
                                  : ft_vision_qwen2_patch_length(&config.vision);
    ft_image_layout layout = config.llava ? FT_IMAGE_LAYOUT_CLIP : FT_IMAGE_LAYOUT_PATCHES;
    char *split_dir = ft_path_join(dataset_dir, split), *path = ft_path_join(split_dir, FT_IMAGE_STORE_FILE);
    ft_image_store *store = NULL;
    int status = ft_image_store_open(path, &store);
    if (status == 0 && ft_image_store_n_samples(store) != ft_token_shards_n_samples(shards))
        status = ft_stage_fail(run->stage, "%s lists images for %llu samples, but the split has %llu: tokenize the "
                                           "data again",
                               path, (unsigned long long)ft_image_store_n_samples(store),
                               (unsigned long long)ft_token_shards_n_samples(shards));
    else if (status == 0 && (ft_image_store_row_length(store) != (uint32_t)row_length ||
                             ft_image_store_layout(store) != layout))
        status = ft_stage_fail(run->stage, "%s holds %s of %u values, but the model's vision tower reads %s of %d: "
                                           "tokenize the data again with this model",
                               path, ft_image_store_layout(store) == FT_IMAGE_LAYOUT_CLIP ? "CLIP images" : "patches",
                               ft_image_store_row_length(store), config.llava ? "CLIP images" : "patches",
                               row_length);
    free(path);
    free(split_dir);
    if (status < 0) {
        ft_image_store_close(store);
        return -1;
    }
    *out = store;
    return 0;
}

/* A number a DeepSpeed config gives instead of "auto" must be the stage's own,
 * as the HF Trainer refuses a config that disagrees with its arguments. */
static int check_deepspeed_number(ft_train_run *run, const char *file, const char *key, double given, const char *param,
                                  double own)
{
    if (given < 0.0 || given == own)
        return 0;
    return ft_stage_fail(run->stage, "deepspeed = %s: %s is %g but the stage's %s is %g: make them agree, or write "
                                     "\"auto\" in the config",
                         file, key, given, param, own);
}

/* zero_stage, offload_optimizer and offload_param, or the DeepSpeed config
 * that sets them; what does not go together is refused here, before any work. */
static int choose_sharding(ft_train_run *run, ft_train_options *t)
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
    if (offload_optimizer && zero_stage == 0)
        return ft_stage_fail(stage, "offload_optimizer = cpu needs zero_stage = 1, 2 or 3, as in DeepSpeed");
    /* One rank shards nothing, but ZeRO-3 with offload_param still keeps the
     * weights in host memory and gathers (uploads) a unit at a time. */
    bool streams = ranks == 1 && zero_stage == 3 && offload_param;
    if (zero_stage > 0 && used < sizeof run->sharding_note)
        snprintf(run->sharding_note + used, sizeof run->sharding_note - used, "%sZeRO-%lld %s%s%s", used ? "; " : "",
                 (long long)zero_stage,
                 streams ? "with one rank shards nothing, but offload_param = cpu keeps the weights in host memory, "
                           "uploading a layer's weights as a pass uses them"
                 : ranks == 1 ? "with one rank has nothing to shard: it trains as stage 0"
                 : zero_stage == 3 ? "shards AdamW's state and every weight over the ranks, each holding 1 / ranks of "
                                     "them and gathering a layer's weights as it uses them"
                                   : "shards AdamW's state over the ranks, each holding 1 / ranks of it",
                 offload_optimizer ? "; offload_optimizer = cpu: AdamW's state and an f32 master copy of the trained "
                                     "values in host memory, updated on the host's cores"
                                   : "",
                 offload_param && ranks > 1 ? "; offload_param = cpu: each rank's shard of the weights in host "
                                              "memory, uploaded layer by layer to be gathered"
                                            : "");
    t->zero_stage = ranks > 1 || streams ? (int)zero_stage : 0;
    t->offload_optimizer = offload_optimizer;
    t->offload_param = offload_param && t->zero_stage == 3;
    return 0;
}

int ft_train_read_parameters(ft_train_run *run)
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
    if (choose_vision_training(run, lora) < 0)
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
    const char *save_strategy = ft_stage_param_string(stage, "save_strategy");
    t->save_strategy = strcmp(save_strategy, "steps") == 0   ? FT_SAVE_STEPS
                       : strcmp(save_strategy, "epoch") == 0 ? FT_SAVE_EPOCH
                                                             : FT_SAVE_NO;
    if (t->save_strategy == FT_SAVE_STEPS && t->save_steps == 0)
        return ft_stage_fail(stage, "save_strategy = steps needs save_steps above 0 (the steps between the "
                                    "checkpoint-N folders)");
    if (ft_lr_schedule_parse(ft_stage_param_string(stage, "lr_scheduler_type"), &t->lr_scheduler_type) < 0 ||
        choose_evaluation(run, t) != 0 || choose_sharding(run, t) != 0)
        return -1;
    /* full fine-tuning at ZeRO-2 and 3 shards the weights' gradients (grad_shards.h); zero_stage is 0 on
     * one rank, unless offload_param streams the weights (then one shard holds them all) */
    m->gradient_shards = !lora && !m->freeze_language_model && t->zero_stage >= 2 ? ranks : 0;
    m->optimizer_shards = t->zero_stage >= 1 ? ranks : 0; /* the device plan: one rank's share of AdamW */
    m->optimizer_offloaded = t->offload_optimizer; /* one rank offloads at stage 0 too */
    if (run->eval_dir && t->eval_batch_size > m->max_batch_size) /* the model plans for the larger batch */
        m->max_batch_size = t->eval_batch_size;
    return ft_train_plan_steps(t, run->meta.train.n_rows, &run->plan);
}

ft_train_ops_rate ft_train_ops_rate_of(const ft_train_options *t)
{
    bool streamed = t->zero_stage == 3 && t->offload_param, offloaded = t->offload_optimizer;
    if (streamed && offloaded)
        return (ft_train_ops_rate){"train_ops_streamed_offloaded",
                                   "steps and evaluations with the weights and AdamW in host memory"};
    if (streamed)
        return (ft_train_ops_rate){"train_ops_streamed", "steps and evaluations with the weights in host memory"};
    if (offloaded)
        return (ft_train_ops_rate){"train_ops_offloaded", "steps and evaluations with AdamW in host memory"};
    return (ft_train_ops_rate){"train_ops", "steps and evaluations"};
}

ft_dtype ft_train_save_dtype(const ft_model_config *config)
{
    if (strcmp(config->torch_dtype, "bfloat16") == 0)
        return FT_DTYPE_BF16;
    return strcmp(config->torch_dtype, "float16") == 0 ? FT_DTYPE_F16 : FT_DTYPE_F32;
}

uint64_t ft_train_weight_file_bytes(const char *model_dir)
{
    uint64_t bytes = 0;
    DIR *dir = opendir(model_dir);
    for (struct dirent *entry; dir && (entry = readdir(dir));) {
        size_t length = strlen(entry->d_name);
        if (length <= 12 || strcmp(entry->d_name + length - 12, ".safetensors") != 0)
            continue;
        char *path = ft_path_join(model_dir, entry->d_name);
        struct stat info;
        if (stat(path, &info) == 0)
            bytes += (uint64_t)info.st_size;
        free(path);
    }
    if (dir)
        closedir(dir);
    return bytes;
}

double ft_train_mean_row_tokens(const ft_token_dataset_meta *meta)
{
    return meta->train.n_rows > 0 ? (double)meta->train.n_tokens / (double)meta->train.n_rows : 1.0;
}
