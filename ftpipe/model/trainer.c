/* trainer: data order, micro-batches, accumulation, the optimizer step, logging
 * and checkpoints. */
#include "ftpipe/model/trainer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/model/checkpoint.h"

/* Independent random streams drawn from the seed. */
enum { STREAM_SHUFFLE = 1, STREAM_DROPOUT = 2 };

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int ft_train_plan_steps(const ft_train_options *options, uint64_t n_rows, ft_train_plan *out)
{
    if (options->batch_size < 1)
        return ft_error("per_device_train_batch_size = %d: expected at least 1", options->batch_size);
    if (options->gradient_accumulation_steps < 1)
        return ft_error("gradient_accumulation_steps = %d: expected at least 1",
                        options->gradient_accumulation_steps);
    if (options->max_steps <= 0 && !(options->num_train_epochs > 0.0 && options->num_train_epochs < 1e9))
        return ft_error("num_train_epochs = %g: expected a positive number of epochs (or set max_steps)",
                        options->num_train_epochs);
    if (!(options->learning_rate >= 0.0) || !(options->max_grad_norm >= 0.0) || !(options->warmup_ratio >= 0.0) ||
        options->warmup_ratio > 1.0 || options->warmup_steps < 0 || options->logging_steps < 0 ||
        options->save_steps < 0 || options->save_total_limit < 0)
        return ft_error("learning_rate, max_grad_norm, warmup_steps, logging_steps, save_steps and save_total_limit "
                        "must not be negative, and warmup_ratio must be within [0, 1]");
    if (n_rows == 0)
        return ft_error("the training data holds no rows");
    out->micro_batches_per_epoch = ceil_div((int64_t)n_rows, options->batch_size);
    out->steps_per_epoch = ceil_div(out->micro_batches_per_epoch, options->gradient_accumulation_steps);
    out->total_steps = options->max_steps > 0 ? options->max_steps
                                              : (int64_t)ceil(options->num_train_epochs * (double)out->steps_per_epoch);
    out->warmup_steps = ft_lr_warmup_steps(out->total_steps, options->warmup_ratio, options->warmup_steps);
    return 0;
}

/* --- the data --- */

typedef struct {
    const ft_token_shards *shards;
    uint64_t n_rows;
    uint64_t *order;            /* the current epoch's permutation */
    int64_t order_epoch;        /* which epoch `order` is; -1: none yet */
    int32_t *row_segments;      /* [row_length] */
    /* the micro-batch being built, [batch_size * row_length] each */
    int32_t *tokens, *positions, *segments, *targets;
} data;

/* Fisher-Yates from (seed, epoch): the same order on every run and resume. */
static void shuffle(data *d, uint64_t seed, int64_t epoch)
{
    uint64_t stream = ft_random_stream(ft_random_stream(seed, STREAM_SHUFFLE), (uint64_t)epoch);
    for (uint64_t i = 0; i < d->n_rows; i++)
        d->order[i] = i;
    for (uint64_t i = d->n_rows - 1; i > 0; i--) {
        uint64_t j = ft_random_u64(stream, i) % (i + 1);
        uint64_t kept = d->order[i];
        d->order[i] = d->order[j];
        d->order[j] = kept;
    }
    d->order_epoch = epoch;
}

/* Row r's trained targets: the next token of the same sample where it is trained on. */
static int64_t row_target_count(const data *d, uint64_t r)
{
    ft_token_row row;
    ft_token_shards_row(d->shards, r, &row);
    ft_token_row_segment_ids(&row, d->row_segments);
    int64_t count = 0;
    for (size_t t = 0; t + 1 < row.n_tokens; t++)
        count += row.loss_mask[t + 1] && d->row_segments[t + 1] == d->row_segments[t];
    return count;
}

/* Fills the micro-batch from rows order[first, first + n); returns its length. */
static int fill_batch(data *d, int64_t first, int n, int64_t *n_tokens)
{
    size_t seq_len = 0;
    for (int b = 0; b < n; b++) {
        ft_token_row row;
        ft_token_shards_row(d->shards, d->order[first + b], &row);
        if (row.n_tokens > seq_len)
            seq_len = row.n_tokens;
    }
    for (int b = 0; b < n; b++) {
        ft_token_row row;
        ft_token_shards_row(d->shards, d->order[first + b], &row);
        ft_token_row_segment_ids(&row, d->row_segments);
        size_t base = (size_t)b * seq_len;
        int32_t position = 0;
        for (size_t t = 0; t < seq_len; t++) {
            if (t >= row.n_tokens) { /* padding: its own segment, no loss */
                d->tokens[base + t] = 0;
                d->positions[base + t] = 0;
                d->segments[base + t] = (int32_t)row.n_samples;
                d->targets[base + t] = -1;
                continue;
            }
            int32_t segment = d->row_segments[t];
            position = t > 0 && segment == d->row_segments[t - 1] ? position + 1 : 0;
            bool trained = t + 1 < row.n_tokens && row.loss_mask[t + 1] && d->row_segments[t + 1] == segment;
            d->tokens[base + t] = (int32_t)row.ids[t];
            d->positions[base + t] = position;
            d->segments[base + t] = segment;
            d->targets[base + t] = trained ? (int32_t)row.ids[t + 1] : -1;
        }
        *n_tokens += (int64_t)row.n_tokens;
    }
    return (int)seq_len;
}

/* --- the loop --- */

typedef struct {
    ft_model *model;
    const ft_train_options *options;
    ft_train_plan plan;
    ft_lr_schedule schedule;
    const ft_param_tensor *tensors;
    size_t n_tensors;
    ft_adamw *optimizer;
    data data;
    ft_checkpoint_state state;
    int64_t saved_step;         /* the step of the newest checkpoint; -1: none */
    uint64_t start_ns;
    uint64_t report_ns;         /* when tokens_since_report started counting */
    int64_t tokens_since_report;
} trainer;

static void note(const trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(const trainer *t, const char *fmt, ...)
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

static double epochs_done(const trainer *t)
{
    return (double)t->state.epoch + (double)t->state.epoch_row / (double)t->data.n_rows;
}

static int save(trainer *t)
{
    if (!t->options->checkpoint_dir || t->saved_step == t->state.global_step)
        return 0;
    ft_backend *backend = ft_model_backend(t->model);
    if (ft_checkpoint_save(t->options->checkpoint_dir, backend, t->tensors, t->n_tensors, t->optimizer, &t->state,
                           t->options->save_total_limit) < 0)
        return -1;
    t->saved_step = t->state.global_step;
    note(t, "saved checkpoint-%lld", (long long)t->state.global_step);
    return 0;
}

/* One optimizer step: its micro-batches' gradients, clipping, AdamW. */
static int step(trainer *t, double *loss, double *grad_norm)
{
    const ft_train_options *o = t->options;
    data *d = &t->data;
    if (t->state.epoch_row >= (int64_t)d->n_rows) {
        t->state.epoch++;
        t->state.epoch_row = 0;
    }
    if (d->order_epoch != t->state.epoch)
        shuffle(d, o->seed, t->state.epoch);
    int64_t first = t->state.epoch_row;
    int64_t rows = (int64_t)o->batch_size * o->gradient_accumulation_steps;
    if (rows > (int64_t)d->n_rows - first)
        rows = (int64_t)d->n_rows - first;
    int64_t denominator = 0;
    for (int64_t r = first; r < first + rows; r++)
        denominator += row_target_count(d, d->order[r]);

    double loss_sum = 0.0;
    uint64_t dropout_stream = ft_random_stream(o->seed, STREAM_DROPOUT);
    int micro = 0;
    for (int64_t at = first; at < first + rows; at += o->batch_size, micro++) {
        int n = (int)(first + rows - at < o->batch_size ? first + rows - at : o->batch_size);
        int seq_len = fill_batch(d, at, n, &t->tokens_since_report);
        ft_batch batch = {n, seq_len, d->tokens, d->positions, d->segments, d->targets, denominator,
                          ft_random_u64(dropout_stream, (uint64_t)t->state.global_step *
                                                            (uint64_t)o->gradient_accumulation_steps +
                                                            (uint64_t)micro)};
        double micro_loss;
        if (ft_model_forward_backward(t->model, &batch, &micro_loss) < 0)
            return ft_error_context("step %lld", (long long)t->state.global_step + 1);
        int64_t targets = 0;
        for (size_t i = 0; i < (size_t)n * (size_t)seq_len; i++)
            targets += d->targets[i] >= 0;
        loss_sum += micro_loss * (double)targets;
    }
    *loss = denominator > 0 ? loss_sum / (double)denominator : 0.0;
    *grad_norm = ft_adamw_clip_grad_norm(t->optimizer, o->max_grad_norm);
    if (!isfinite(*loss) || !isfinite(*grad_norm))
        return ft_error("step %lld: the loss is %g and the gradient norm %g: training diverged; try a lower "
                        "learning_rate (now %g) or max_grad_norm",
                        (long long)t->state.global_step + 1, *loss, *grad_norm, o->learning_rate);
    ft_adamw_step(t->optimizer, ft_lr_at(&t->schedule, t->state.global_step));
    ft_model_zero_grads(t->model);
    t->state.global_step++;
    t->state.epoch_row = first + rows;
    return 0;
}

static int64_t next_checkpoint_step(const trainer *t)
{
    int64_t every = t->options->save_steps, next = t->plan.total_steps;
    if (every > 0 && (t->state.global_step / every + 1) * every < next)
        next = (t->state.global_step / every + 1) * every;
    return next;
}

static void report(trainer *t, double loss, double grad_norm, ft_train_report *out)
{
    const ft_train_options *o = t->options;
    ft_backend *backend = ft_model_backend(t->model);
    t->state.loss_sum += loss;
    t->state.log_loss_sum += loss;
    t->state.log_steps++;
    uint64_t now = ft_now_ns();
    double seconds = (double)(now - t->report_ns) * 1e-9;
    ft_train_report r = {
        .step = t->state.global_step,
        .total_steps = t->plan.total_steps,
        .epoch = epochs_done(t),
        .loss = loss,
        .learning_rate = ft_lr_at(&t->schedule, t->state.global_step),
        .grad_norm = grad_norm,
        .tokens_per_s = seconds > 0.0 ? (double)t->tokens_since_report / seconds : 0.0,
        .memory_bytes = backend->peak_bytes(backend),
        .elapsed_s = (double)(now - t->start_ns) * 1e-9,
        .next_checkpoint_step = next_checkpoint_step(t),
    };
    uint64_t largest_file_bytes;
    ft_checkpoint_size(t->tensors, t->n_tensors, &r.checkpoint_bytes, &largest_file_bytes);
    if (o->callbacks.on_step)
        o->callbacks.on_step(o->callbacks.context, &r);
    if (o->logging_steps > 0 && t->state.global_step % o->logging_steps == 0) {
        r.loss = t->state.log_loss_sum / (double)t->state.log_steps;
        t->state.log_loss_sum = 0.0;
        t->state.log_steps = 0;
        t->tokens_since_report = 0;
        t->report_ns = now;
        if (o->callbacks.on_log)
            o->callbacks.on_log(o->callbacks.context, &r);
    }
    *out = r;
}

static int resume(trainer *t, ft_train_result *out)
{
    const ft_train_options *o = t->options;
    if (!o->checkpoint_dir)
        return 0;
    ft_checkpoint_state loaded;
    int found = ft_checkpoint_load_latest(o->checkpoint_dir, ft_model_backend(t->model), t->tensors, t->n_tensors,
                                          t->optimizer, t->state.run_id, &loaded);
    if (found < 0)
        return -1;
    if (found == 1) {
        t->state = loaded;
        t->saved_step = loaded.global_step;
        out->resumed_from_step = loaded.global_step;
        note(t, "resumed from checkpoint-%lld (epoch %.2f)", (long long)loaded.global_step, epochs_done(t));
    }
    /* A checkpoint must fit before any work is done that it would keep. */
    uint64_t total_bytes, largest_file_bytes;
    ft_checkpoint_size(t->tensors, t->n_tensors, &total_bytes, &largest_file_bytes);
    int64_t next = o->save_steps > 0 ? (t->state.global_step / o->save_steps + 1) * o->save_steps
                                     : t->plan.total_steps;
    if (next > t->plan.total_steps)
        next = t->plan.total_steps;
    if (ft_mkdir_p(o->checkpoint_dir) < 0)
        return -1;
    return ft_checkpoint_check_space(o->checkpoint_dir, next, total_bytes, largest_file_bytes);
}

static int train_loop(trainer *t)
{
    const ft_train_options *o = t->options;
    while (t->state.global_step < t->plan.total_steps) {
        if (o->callbacks.cancelled && o->callbacks.cancelled(o->callbacks.context)) {
            if (save(t) < 0)
                return -1;
            return ft_error("cancelled at step %lld of %lld", (long long)t->state.global_step,
                            (long long)t->plan.total_steps);
        }
        double loss = 0.0, grad_norm = 0.0;
        if (step(t, &loss, &grad_norm) < 0)
            return -1;
        ft_train_report reported;
        report(t, loss, grad_norm, &reported);
        if (o->save_steps > 0 && t->state.global_step % o->save_steps == 0 && save(t) < 0)
            return -1;
        if (t->state.global_step < t->plan.total_steps && o->callbacks.should_stop &&
            o->callbacks.should_stop(o->callbacks.context, &reported)) {
            char reason[512];
            snprintf(reason, sizeof reason, "%s", ft_error_message());
            if (save(t) < 0)
                return ft_error_context("%s; then saving a checkpoint", reason);
            return ft_error("%s; stopped after step %lld of %lld with checkpoint-%lld saved: the next run resumes "
                            "from it", reason, (long long)t->state.global_step, (long long)t->plan.total_steps,
                            (long long)t->state.global_step);
        }
    }
    return save(t);
}

int ft_train(ft_model *model, const ft_token_shards *shards, const ft_train_options *options, ft_train_result *out)
{
    trainer t = {.model = model, .options = options, .saved_step = -1};
    memset(out, 0, sizeof *out);
    t.data.shards = shards;
    t.data.n_rows = ft_token_shards_n_rows(shards);
    if (ft_train_plan_steps(options, t.data.n_rows, &t.plan) < 0)
        return -1;
    t.schedule = (ft_lr_schedule){options->lr_scheduler_type, options->learning_rate, t.plan.total_steps,
                                  t.plan.warmup_steps};
    t.tensors = ft_model_trainable(model, &t.n_tensors);
    if (t.n_tensors == 0)
        return ft_error("the model was loaded with nothing to train (load it for LoRA or full fine-tuning)");
    snprintf(t.state.run_id, sizeof t.state.run_id, "%s", options->run_id ? options->run_id : "");
    if (ft_adamw_create(ft_model_backend(model), t.tensors, t.n_tensors, &options->adamw, &t.optimizer) < 0)
        return -1;
    size_t row_length = ft_token_shards_row_length(shards), cells = (size_t)options->batch_size * row_length;
    t.data.order = ft_xmalloc(t.data.n_rows * sizeof(uint64_t));
    t.data.order_epoch = -1;
    t.data.row_segments = ft_xmalloc(row_length * sizeof(int32_t));
    t.data.tokens = ft_xmalloc(cells * sizeof(int32_t));
    t.data.positions = ft_xmalloc(cells * sizeof(int32_t));
    t.data.segments = ft_xmalloc(cells * sizeof(int32_t));
    t.data.targets = ft_xmalloc(cells * sizeof(int32_t));
    t.start_ns = t.report_ns = ft_now_ns();
    ft_model_zero_grads(model);
    int status = resume(&t, out);
    if (status == 0)
        status = train_loop(&t);
    out->global_step = t.state.global_step;
    out->epoch = epochs_done(&t);
    out->train_loss = t.state.global_step > 0 ? t.state.loss_sum / (double)t.state.global_step : 0.0;
    out->runtime_s = (double)(ft_now_ns() - t.start_ns) * 1e-9;
    out->samples = options->max_steps > 0
                       ? (double)options->max_steps * options->batch_size * options->gradient_accumulation_steps
                       : (double)t.data.n_rows * options->num_train_epochs;
    ft_adamw_free(t.optimizer);
    free(t.data.order);
    free(t.data.row_segments);
    free(t.data.tokens);
    free(t.data.positions);
    free(t.data.segments);
    free(t.data.targets);
    return status;
}
