/* train_run: what the train kind's run and measurement (stages/train.c) and its
 * estimate (stages/train_estimate.c) share, kept in stages/train_run.c: the
 * stage's inputs and parameters read into one place, and the figures both sides
 * count the same way. */
#ifndef FTPIPE_TRAIN_RUN_H
#define FTPIPE_TRAIN_RUN_H

#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/engine/stage.h"
#include "ftpipe/formats/image_store.h"
#include "ftpipe/formats/model_config.h"
#include "ftpipe/formats/token_shards.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/trainer.h"
#include "ftpipe/stages/train_guard.h"

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
    char *kept_dir;             /* <work>/kept: the checkpoint-N folders of save_strategy */
    ft_model *model;            /* while training, for on_save */
    int rank;                   /* this process's rank on this node: only its first reports */
    bool writes_output;         /* checkpoints and the output (stage_ranks.h says which rank) */
    int64_t first_step;         /* the step this process started from, for the ETA; -1: none yet */
    double elapsed_s, remaining_s; /* this process's time so far and the ETA, after the last step */
    ft_train_guard guard;
    char sharding_note[2048];   /* what ZeRO, offload and a DeepSpeed config come to, for the log; "" when none */
    bool measuring;             /* `ftpipe estimate --measure`: a few steps timed, nothing written */
    uint64_t start_wall_ns, start_cpu_ns; /* when this process began the stage */
} ft_train_run;

/* MODEL DATA [EVAL_DATA]: the count, and that the model and data are what they claim. */
int ft_train_check_inputs(ft_train_run *run);
/* Images and the model: data with images needs a vision-language model whose
 * processor tokenized it (a text-only model would learn from placeholder
 * tokens). -1 (the stage failed, saying why) otherwise. What of a
 * vision-language model trains (freeze_vision_tower, freeze_multi_modal_projector,
 * train_mm_proj_only) ft_train_read_parameters chooses. */
int ft_train_check_images(const ft_train_run *run, const char *data_dir, const ft_token_dataset_meta *meta);
/* The image store of a split with images (NULL when the data has none),
 * checked against the split's samples and the model's patch size. */
int ft_train_open_images(const ft_train_run *run, const char *dataset_dir, const char *split,
                         const ft_token_shards *shards, ft_image_store **out);
/* The parameters into model_options, train_options and plan (meta must be read). */
int ft_train_read_parameters(ft_train_run *run);
/* The dtype a full fine-tune is written in: the model's own. */
ft_dtype ft_train_save_dtype(const ft_model_config *config);
/* What loading reads: the model's weight files. */
uint64_t ft_train_weight_file_bytes(const char *model_dir);
/* The mean length of the data's training rows, in tokens. */
double ft_train_mean_row_tokens(const ft_token_dataset_meta *meta);
/* The rate of a step's operations depends on what crosses to the host each
 * step: the weights streamed (ZeRO-3's offload_param), AdamW there
 * (offload_optimizer). The rate's name ("train_ops" and this suffix) and the
 * words for it, so that a run predicts only runs that move the same. */
typedef struct {
    const char *rate;     /* "train_ops", "train_ops_offloaded", "train_ops_streamed", "train_ops_streamed_offloaded" */
    const char *what;     /* "steps and evaluations", and how the state moves */
} ft_train_ops_rate;
ft_train_ops_rate ft_train_ops_rate_of(const ft_train_options *options);

/* The train kind's estimate hook. */
int ft_train_estimate(ft_stage *stage, ft_stage_estimate *out);

#endif
