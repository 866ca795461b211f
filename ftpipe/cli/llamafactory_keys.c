/* llamafactory_keys: LLaMA-Factory's training keys and what a pipeline makes of them. */
#include "ftpipe/cli/llamafactory_keys.h"

#include <string.h>

#define TOKENIZE(key) {key, FT_LF_TOKENIZE, NULL, NULL}
#define TRAIN(key) {key, FT_LF_TRAIN, NULL, NULL}
#define SPECIAL(key, what) {key, FT_LF_SPECIAL, NULL, what}
#define DROPPED(key, why) {key, FT_LF_DROPPED, NULL, why}

static const ft_lf_key keys[] = {
    /* model */
    SPECIAL("model_name_or_path", "a download stage (hf://) or the local folder, staged to /dev/shm by a shm stage"),
    DROPPED("trust_remote_code", "ftpipe runs no model code of its own; it knows Qwen2, Qwen2.5, Qwen3, Llama 3, Qwen2-VL, Qwen2.5-VL and LLaVA"),
    DROPPED("cache_dir", "downloads go to ftpipe's content-addressed cache"),
    DROPPED("flash_attn", "the cuda backend always uses its own flash-style attention"),
    DROPPED("use_fast_tokenizer", "ftpipe has one tokenizer, with the fast tokenizer's ids"),
    /* method */
    SPECIAL("stage", "sft or pt: tokenize's stage; other stages (dpo, kto, rm, ppo) are refused"),
    SPECIAL("do_train", "true: a train stage; false: none"),
    TRAIN("finetuning_type"),
    TRAIN("lora_rank"),
    TRAIN("lora_alpha"),
    TRAIN("lora_dropout"),
    TRAIN("lora_target"),
    TRAIN("use_rslora"),
    TRAIN("deepspeed"),
    TRAIN("freeze_vision_tower"),
    TRAIN("freeze_multi_modal_projector"),
    TRAIN("freeze_language_model"),
    TRAIN("train_mm_proj_only"),
    /* dataset */
    TOKENIZE("dataset"),
    SPECIAL("dataset_dir", "the tokenize stage's data input (the DATA variable, default data)"),
    TOKENIZE("template"),
    TOKENIZE("cutoff_len"),
    TOKENIZE("max_samples"),
    TOKENIZE("val_size"),
    TOKENIZE("packing"),
    TOKENIZE("train_on_prompt"),
    TOKENIZE("mask_history"),
    TOKENIZE("enable_thinking"),
    TOKENIZE("image_max_pixels"),
    TOKENIZE("image_min_pixels"),
    DROPPED("video_max_pixels", "videos are not read: a data set with a videos column is refused"),
    DROPPED("video_min_pixels", "videos are not read: a data set with a videos column is refused"),
    DROPPED("video_fps", "videos are not read: a data set with a videos column is refused"),
    DROPPED("video_maxlen", "videos are not read: a data set with a videos column is refused"),
    {"preprocessing_num_workers", FT_LF_TOKENIZE, "threads", NULL},
    DROPPED("dataloader_num_workers", "token shards are memory-mapped: training needs no data-loader workers"),
    DROPPED("overwrite_cache", "tokenized data is cached by content: a change of data or parameters redoes it"),
    DROPPED("tokenized_path", "tokenized data is cached by content in the workspace"),
    /* output */
    SPECIAL("output_dir", "the train stage's target"),
    TRAIN("logging_steps"),
    SPECIAL("save_strategy", "`save_strategy` of the train stage (no, steps or epoch; best is refused); absent: "
                             "steps, the HF Trainer's default, so the checkpoint-N folders are kept as there"),
    TRAIN("save_steps"),
    TRAIN("save_total_limit"),
    TRAIN("plot_loss"),
    DROPPED("overwrite_output_dir", "a target is replaced whenever its key changes"),
    DROPPED("save_only_model", "the checkpoint-N folders hold the adapter or the model and trainer_state.json only; "
                               "the optimizer state to resume from stays in the work folder"),
    DROPPED("report_to", "metrics go to ftpipe's state (ftpipe log) and trainer_log.jsonl"),
    /* train */
    TRAIN("per_device_train_batch_size"),
    TRAIN("gradient_accumulation_steps"),
    TRAIN("learning_rate"),
    TRAIN("num_train_epochs"),
    TRAIN("max_steps"),
    TRAIN("lr_scheduler_type"),
    TRAIN("warmup_ratio"),
    TRAIN("warmup_steps"),
    TRAIN("weight_decay"),
    TRAIN("max_grad_norm"),
    TRAIN("adam_beta1"),
    TRAIN("adam_beta2"),
    TRAIN("adam_epsilon"),
    TRAIN("seed"),
    TRAIN("gradient_checkpointing"),
    DROPPED("bf16", "the cuda backend trains in bf16 and the cpu backend in f32 (backend = ...)"),
    DROPPED("fp16", "the cuda backend trains in bf16 and the cpu backend in f32 (backend = ...)"),
    DROPPED("ddp_timeout", "ranks are started and watched by ftpipe"),
    DROPPED("resume_from_checkpoint", "a rerun resumes from the newest checkpoint by itself"),
    /* eval */
    SPECIAL("eval_dataset", "with eval_strategy: a second tokenize stage, the train stage's third input; otherwise "
                            "an evaluate stage after training"),
    SPECIAL("do_predict", "true with eval_dataset: an evaluate stage after training"),
    DROPPED("predict_with_generate", "the evaluate stage always generates"),
    TRAIN("eval_strategy"),
    TRAIN("eval_steps"),
    TRAIN("per_device_eval_batch_size"),
    /* ray */
    DROPPED("ray_run_name", "ftpipe launches its own ranks; Ray is not used"),
    DROPPED("ray_storage_path", "ftpipe launches its own ranks; Ray is not used"),
    DROPPED("ray_num_workers", "ftpipe launches its own ranks; Ray is not used"),
    DROPPED("resources_per_worker", "ftpipe launches its own ranks; Ray is not used"),
    DROPPED("placement_strategy", "ftpipe launches its own ranks; Ray is not used"),
    DROPPED("ray_init_kwargs", "ftpipe launches its own ranks; Ray is not used"),
    DROPPED("use_ray", "ftpipe launches its own ranks; Ray is not used"),
};

const ft_lf_key *ft_lf_key_find(const char *key)
{
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (strcmp(keys[i].key, key) == 0)
            return &keys[i];
    return NULL;
}

const ft_lf_key *ft_lf_keys(size_t *count)
{
    *count = sizeof keys / sizeof *keys;
    return keys;
}
