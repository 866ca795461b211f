/* trainer: the training loop over tokenized rows, as the HF Trainer runs it.
 *
 * Each epoch visits the rows in a permutation drawn from (seed, epoch). A
 * micro-batch is batch_size consecutive rows of it, padded to its longest row;
 * gradient_accumulation_steps micro-batches make an optimizer step (fewer at an
 * epoch's end, as transformers >= 4.46 does), whose loss is the mean over all
 * of its trained tokens. Then the gradients are clipped to max_grad_norm, AdamW
 * steps at the schedule's rate, and the gradients are zeroed.
 *
 * Every random draw comes from the seed and counters (epoch, step, micro-batch),
 * so a run resumed from a checkpoint ends with the same bytes as one that never
 * stopped. The loop knows nothing of stages: it reports through callbacks.
 *
 * With eval_shards, the model is evaluated during training as the HF Trainer's
 * eval_strategy does it: every eval_steps steps and/or at each epoch's end, a
 * forward pass over every eval row in batches of eval_batch_size (no dropout),
 * eval_loss being the mean over rows of each batch's mean loss over its
 * trained tokens, as the HF Trainer's evaluation loop averages it. As the HF
 * Trainer (transformers 5), eval_strategy = steps also evaluates after the
 * last step when it is not a multiple of eval_steps.
 *
 * save_strategy says when on_save runs, for checkpoints a user keeps (the HF
 * Trainer's checkpoint-N folders): steps: every save_steps steps and after the
 * last; epoch: when an epoch ends and after the last. It runs after the step's
 * evaluation and before the step's resume checkpoint, so a run resumed from a
 * checkpoint at step N has made every kept checkpoint up to N.
 *
 * Data parallel: with a communicator of N ranks, each a process running this
 * same loop on its own copy of the model, a step takes batch_size x
 * gradient_accumulation_steps x N rows (the HF Trainer's effective batch),
 * each rank its slice of them in rank order (data_parallel.h); the gradients
 * (each layer's while backward runs on the layers below) and the loss are
 * added over the ranks before clipping, so every rank makes
 * the same update and the loss is that of one rank running the whole step.
 * With zero_stage 1 or 2 each rank keeps and updates a shard of the
 * optimizer's state (zero.h), the result staying that of stage 0; with 3 it
 * also keeps only its shard of the base weights, gathered layer by layer as
 * the passes use them (param_shards.h): full fine-tuning hands the model back
 * whole (after freeing the optimizer); LoRA leaves it sharded, its adapter's
 * layers too (adapter_shards.h: the result is gathered to be written), fit for
 * another ft_train over the same ranks and for ft_model_free. A failed run
 * leaves the model without weights (LoRA's: without its adapter's).
 * Only the ranks that say so write checkpoints (the first of each node); every
 * rank resumes from them, whatever rank count wrote them. */
#ifndef FTPIPE_TRAINER_H
#define FTPIPE_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/comm.h"
#include "ftpipe/formats/image_store.h"
#include "ftpipe/formats/token_shards.h"
#include "ftpipe/model/adamw.h"
#include "ftpipe/model/lr_schedule.h"
#include "ftpipe/model/model.h"

typedef struct {
    int64_t step;             /* optimizer steps done, this one included */
    int64_t total_steps;
    double epoch;             /* epochs done, with the fraction of the current one */
    double loss;              /* on_step: this step's; on_log: the mean since the last log */
    double learning_rate;     /* the schedule's rate after this step, as the HF Trainer logs it */
    double grad_norm;         /* this step's, before clipping */
    double tokens_per_s;      /* input tokens (padding excluded) per second since the last report */
    size_t memory_bytes;      /* the backend's peak so far */
    double elapsed_s;         /* this run's time so far */
    uint64_t checkpoint_bytes;     /* what one checkpoint writes */
    int64_t next_checkpoint_step;  /* the step the next checkpoint is due at (the last step at the latest) */
} ft_train_report;

typedef struct {
    int64_t step;             /* optimizer steps done */
    double epoch;
    double eval_loss;
    uint64_t n_rows;          /* eval rows */
    double runtime_s;
} ft_eval_report;

typedef struct {
    void *context;
    void (*on_step)(void *context, const ft_train_report *report);  /* optional: after every step */
    void (*on_log)(void *context, const ft_train_report *report);   /* optional: every logging_steps steps */
    void (*on_note)(void *context, const char *text);               /* optional: resumed, checkpoint saved */
    bool (*cancelled)(void *context);                               /* optional: checked before each step */
    void (*on_evaluate)(void *context, const ft_eval_report *report); /* optional: after each evaluation */
    /* optional: after each step; true stops the run after a checkpoint, the
     * reason set with ft_error (a guard seeing the disk fill up) */
    bool (*should_stop)(void *context, const ft_train_report *report);
    /* optional: a checkpoint to keep is due (save_strategy) after this step; -1,
     * with ft_error set, fails the run */
    int (*on_save)(void *context, int64_t step, double epoch);
    /* optional: the run has ended well; writes its result as on_save writes
     * a kept one: ZeRO-3's full fine-tuning reads the weights through the
     * shards a unit at a time for it (model_save.h), and the model stays
     * sharded (a run may go on from it). When no rank sets it, the weights
     * are gathered whole into the writing ranks' host memory instead
     * (param_shards.h's unshard). -1, with ft_error set, fails the run */
    int (*on_result)(void *context, int64_t step, double epoch);
} ft_train_callbacks;

typedef enum { FT_SAVE_NO, FT_SAVE_STEPS, FT_SAVE_EPOCH } ft_save_strategy;

typedef struct {
    int batch_size;                   /* per_device_train_batch_size */
    int gradient_accumulation_steps;
    double num_train_epochs;
    int64_t max_steps;                /* > 0: wins over num_train_epochs */
    ft_lr_schedule_type lr_scheduler_type;
    double learning_rate;
    double warmup_ratio;
    int64_t warmup_steps;             /* > 0: wins over warmup_ratio */
    double max_grad_norm;             /* 0: no clipping */
    ft_adamw_config adamw;
    uint64_t seed;
    int64_t logging_steps;            /* 0: no on_log */
    const char *checkpoint_dir;       /* NULL: neither checkpoints nor resuming */
    int64_t save_steps;               /* 0: a checkpoint only at the end */
    int save_total_limit;             /* 0: keep every checkpoint */
    ft_save_strategy save_strategy;   /* when on_save runs (see above) */
    const char *run_id;               /* what the run is; checkpoints of another are refused */
    const ft_token_shards *eval_shards; /* NULL: no evaluation during training */
    int eval_batch_size;              /* per_device_eval_batch_size; at most the model's max_batch_size */
    int64_t eval_steps;               /* > 0: evaluate every eval_steps steps */
    bool eval_each_epoch;             /* evaluate when an epoch ends */
    int ranks;                        /* data-parallel ranks; 0 or 1: one */
    ft_comm *comm;                    /* this rank's, of `ranks` ranks; NULL with one */
    int zero_stage;                   /* 0; 1, 2 or 3: AdamW's state (from 2 the gradients' sums, with 3 the
                                       * base weights) sharded over the ranks (zero.h, param_shards.h);
                                       * nothing to shard with one rank */
    bool offload_optimizer;           /* AdamW's state and master values in host memory (adamw.h) */
    bool offload_param;               /* stage 3: the weights' shards in host memory (param_shards.h) */
    bool saves_checkpoints;           /* with a communicator: this rank writes them (each node's first) */
    ft_train_callbacks callbacks;     /* rank 0's cancelled() stops every rank */
    /* A vision-language model's data: the preprocessed images of the train and
     * eval splits (image_store.h); each micro-batch hands its rows' images to
     * the model (ft_model_set_images). NULL: text only. */
    const ft_image_store *images;
    const ft_image_store *eval_images;
} ft_train_options;

typedef struct {
    int64_t micro_batches_per_epoch;  /* per rank: ceil(rows / (batch_size x ranks)) */
    int64_t steps_per_epoch;          /* ceil(rows / (batch_size x gradient_accumulation_steps x ranks)) */
    int64_t total_steps;              /* max_steps, or ceil(num_train_epochs * steps_per_epoch) */
    int64_t warmup_steps;
} ft_train_plan;

/* Checks the options and counts the steps for this many rows. */
int ft_train_plan_steps(const ft_train_options *options, uint64_t n_rows, ft_train_plan *out);

typedef struct {
    int64_t global_step;
    int64_t resumed_from_step;        /* 0: started afresh */
    double epoch;
    double train_loss;                /* the mean of every step's loss */
    double runtime_s;                 /* this run's, resumed part only */
    double samples;                   /* the HF Trainer's num_train_samples */
    /* Where the time went, for the throughput `ftpipe estimate` learns from: the
     * steps and evaluations (wall clock, and this process's CPU time over all
     * its threads), the input tokens they read, and what checkpoints wrote. */
    double compute_s;
    double compute_cpu_s;
    int64_t trained_tokens;           /* every rank's */
    int64_t evaluated_tokens;         /* this rank's (each rank evaluates every row) */
    uint64_t checkpoint_bytes_written;
    size_t optimizer_state_bytes;     /* this rank's AdamW moments: a 1 / ranks shard with ZeRO */
    size_t parameter_bytes;           /* this rank's base weights in the backend's memory: all of them, or
                                       * with ZeRO-3 its shard (none when offloaded) and the gathered units */
    size_t parameter_host_bytes;      /* ZeRO-3 with offload_param: the shard, in host memory */
    size_t master_bytes;              /* full fine-tuning in mixed precision: this rank's float master copy of
                                       * the weights in the backend's memory: all of it, or ZeRO-3's shard */
    size_t master_host_bytes;         /* ZeRO-3 with offload_optimizer: the master copy's shard, in host memory */
    size_t gradient_bytes;            /* this rank's float gradients in the backend's memory: every trained
                                       * tensor's, or at ZeRO-2 and 3 of full fine-tuning the weights' shard
                                       * and the window a pass writes into (grad_shards.h) */
    size_t gradient_host_bytes;       /* ZeRO-2 and 3 of full fine-tuning with offload_optimizer: the shard,
                                       * in host memory (the backend's memory then holds the window and a
                                       * staging buffer) */
    size_t adapter_bytes;             /* LoRA: this rank's adapter values in the backend's memory, all of them,
                                       * or at ZeRO-3 its part of each layer's and the two gathered layers' */
} ft_train_result;

/* Trains the model's trainable tensors on the shards' rows, resuming from the
 * newest checkpoint in checkpoint_dir. A NaN or infinite loss or gradient norm
 * stops the run naming the step; so do cancellation and should_stop, after a checkpoint. */
int ft_train(ft_model *model, const ft_token_shards *shards, const ft_train_options *options,
             ft_train_result *out);

#endif
