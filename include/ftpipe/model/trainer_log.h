/* trainer_log: a training run's log as the files users read.
 *
 * The train stage appends one JSON object a line to its work folder's log
 * (trainer_log.jsonl): {step, epoch, loss, learning_rate, grad_norm,
 * tokens_per_s} every logging_steps steps and {step, epoch, eval_loss,
 * eval_runtime} after an evaluation. A run resumed from a checkpoint does
 * again the steps an interrupted one had logged after it, so the file holds
 * those steps twice; ft_trainer_log_compact keeps the newest.
 *
 * ft_trainer_state_write makes the HF Trainer's trainer_state.json from it, as
 * transformers' TrainerState.save_to_json writes it (keys sorted, indented by
 * 2), so TrainerState.load_from_json and LLaMA-Factory's plot_loss read it:
 * log_history holds {epoch, grad_norm, learning_rate, loss, step} and {epoch,
 * eval_loss, step} entries and, at the end of training, the summary {epoch,
 * step, train_loss}. What depends on the clock (eval_runtime, train_runtime,
 * the rates) and total_flos, which ftpipe does not count, are left out, so the
 * file is the same on every run that trains the same bytes. */
#ifndef FTPIPE_TRAINER_LOG_H
#define FTPIPE_TRAINER_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The log's lines in step order, each evaluation after its step's log line,
 * lines an interrupted run wrote for steps done again dropped. Lines that are
 * not JSON objects are kept in place. Caller frees; *length receives its length. */
char *ft_trainer_log_compact(const char *text, size_t *length);

typedef struct {
    int64_t global_step;         /* the checkpoint's step: log entries up to it */
    double epoch;                /* epochs done at global_step */
    int64_t max_steps;           /* of the whole run */
    int64_t num_train_epochs;    /* epochs the steps reach into, rounded up, as the HF Trainer counts */
    int64_t logging_steps;
    int64_t eval_steps;
    int64_t save_steps;
    int64_t train_batch_size;    /* per_device_train_batch_size */
    bool training_ended;         /* adds the summary entry {epoch, step, train_loss} */
    double train_loss;           /* the mean of every step's loss, with training_ended */
} ft_trainer_state_info;

/* Writes path atomically from a compacted log (ft_trainer_log_compact). */
int ft_trainer_state_write(const char *path, const char *log_text, const ft_trainer_state_info *info);

#endif
