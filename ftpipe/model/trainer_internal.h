/* trainer_internal: the trainer's state, shared by trainer.c (the data, the
 * loop and its set-up) and trainer_checkpoint.c (checkpoints, resuming, and the
 * trained tensors written through on_save and on_result). Not a public header:
 * ft_train (trainer.h) is the trainer's interface. */
#ifndef FTPIPE_TRAINER_INTERNAL_H
#define FTPIPE_TRAINER_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/model/adapter_shards.h"
#include "ftpipe/model/checkpoint.h"
#include "ftpipe/model/data_parallel.h"
#include "ftpipe/model/grad_shards.h"
#include "ftpipe/model/param_shards.h"
#include "ftpipe/model/trainer.h"
#include "ftpipe/model/update_gate.h"
#include "ftpipe/model/zero.h"

/* The rows a run reads, in the epoch's order, and the micro-batch being built. */
typedef struct {
    const ft_token_shards *shards;
    uint64_t n_rows;
    uint64_t *order;            /* the current epoch's permutation */
    int64_t order_epoch;        /* which epoch `order` is; -1: none yet */
    int32_t *row_segments;      /* [row_length] */
    /* the micro-batch being built, [batch_size * row_length] each */
    int32_t *tokens, *positions, *segments, *targets;
    /* the split's images (NULL: text), and the micro-batch's, in token order */
    const ft_image_store *images;
    ft_stored_image *batch_images;
    size_t n_batch_images, batch_images_capacity;
} data;

/* One run of ft_train. */
typedef struct {
    ft_model *model;
    const ft_train_options *options;
    ft_train_plan plan;
    ft_lr_schedule schedule;
    const ft_param_tensor *tensors;
    size_t n_tensors;
    ft_adamw *optimizer;        /* NULL with ZeRO, whose shard optimizer updates */
    ft_zero *zero;              /* ZeRO stage 1, 2 or 3 over the ranks; NULL: each rank holds the whole optimizer */
    ft_update_gate *gate;       /* offload_optimizer without ZeRO-3: the update beside the next pass (the zero's
                                 * at stages 1 and 2, else the trainer's); NULL: none */
    ft_param_shards *params;    /* ZeRO-3's weights; NULL: each rank holds them whole */
    ft_grad_shards *grad_shards; /* ZeRO-2 and 3 of full fine-tuning: the weights' gradients; NULL: whole */
    size_t n_sharded;           /* full fine-tuning under ZeRO-3: the trained tensors [0, n_sharded) are the
                                 * sharded weights (a trained projector's follow, whole); 0: none */
    ft_adapter_shards *adapter; /* LoRA under ZeRO-3: the parts of its layers' values; NULL: whole */
    bool writes_sharded;        /* ZeRO-3 of full fine-tuning (of the projector alone too): outputs and the
                                 * result hold the weights, read through their shards */
    ft_comm *comm;              /* NULL: one rank */
    int rank, ranks;
    ft_grad_buckets buckets;
    ft_grad_sync *sync;         /* adds each layer's gradients while backward goes on */
    double predicted_comm_s;    /* the preflight's all-reduce */
    double compute_s, comm_s;   /* the last step's micro-batches, and its sums over the ranks */
    data data;
    data eval;                  /* the eval rows in order, when evaluating */
    ft_checkpoint_state state;
    int64_t saved_step;         /* the step of the newest checkpoint; -1: none */
    uint64_t start_ns;
    uint64_t report_ns;         /* when tokens_since_report started counting */
    int64_t tokens_since_report;
    ft_train_result *result;    /* its time and token counts grow as the run goes */
} trainer;

/* The helpers both files use, here so that neither calls the other's
 * (trainer.c calls trainer_checkpoint.c, not back). */

/* A line for the log (on_note), when the caller takes them. */
static inline void ft_trainer_note(const trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void ft_trainer_note(const trainer *t, const char *fmt, ...)
{
    const ft_train_callbacks *callbacks = &t->options->callbacks;
    if (!callbacks->on_note)
        return;
    ft_strbuf text;
    ft_strbuf_init(&text);
    va_list args;
    va_start(args, fmt);
    ft_strbuf_vprintf(&text, fmt, args);
    va_end(args);
    callbacks->on_note(callbacks->context, text.data);
    ft_strbuf_free(&text);
}

/* The epochs done so far, with the current one's fraction. */
static inline double ft_trainer_epochs_done(const trainer *t)
{
    return (double)t->state.epoch + (double)t->state.epoch_row / (double)t->data.n_rows;
}

/* Whether this rank writes checkpoints (one rank: yes). */
static inline bool ft_trainer_saves_checkpoints(const trainer *t) { return !t->comm || t->options->saves_checkpoints; }

/* A step that may fail on some ranks only (an allocation), agreed on before
 * any rank goes on to collectives the others would skip: -1 when any rank
 * failed, with this rank's ft_error or one naming the others. */
static inline int ft_trainer_agree_over_ranks(ft_comm *comm, int status, const char *what)
{
    double failed = status < 0;
    if (!comm)
        return status;
    if (comm->all_reduce_sum(comm, &failed, 1, FT_COMM_F64) < 0)
        return ft_error_context("%s", what);
    if (status < 0)
        return -1;
    return failed > 0 ? ft_error("%s: %.0f other rank(s) failed (their logs say why)", what, failed) : 0;
}

/* --- trainer_checkpoint.c --- */

/* checkpoint-N of the current step, unless it was saved already; every rank
 * stops when it failed on any. */
int ft_trainer_save(trainer *t);
/* The newest checkpoint of this run, if any, taken into the model and the
 * optimizer (ZeRO: each rank its shard); then the space the next one needs is
 * checked. */
int ft_trainer_resume(trainer *t, ft_train_result *out);
/* on_save or on_result writes the trained tensors (on the ranks that write):
 * ZeRO-3's sharded weights are read for it a unit at a time, in their order,
 * into the writing rank's host memory, as every rank joins each unit's
 * gather; the ranks agree on the outcome, so that none trains on alone. */
int ft_trainer_write_trained(trainer *t, int (*write)(void *context, int64_t step, double epoch));

#endif
