/* trainer: data order, micro-batches, accumulation, the optimizer step and
 * logging (checkpoints: trainer_checkpoint.c). */
#include "ftpipe/model/trainer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/base/strbuf.h"
#include "trainer_internal.h"

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
    if (options->ranks < 0 || options->ranks > 4096)
        return ft_error("%d ranks: expected 1 to 4096", options->ranks);
    if (n_rows == 0)
        return ft_error("the training data holds no rows");
    int64_t ranks = options->ranks > 1 ? options->ranks : 1;
    out->micro_batches_per_epoch = ceil_div((int64_t)n_rows, options->batch_size * ranks);
    out->steps_per_epoch =
        ceil_div((int64_t)n_rows, (int64_t)options->batch_size * options->gradient_accumulation_steps * ranks);
    out->total_steps = options->max_steps > 0 ? options->max_steps
                                              : (int64_t)ceil(options->num_train_epochs * (double)out->steps_per_epoch);
    out->warmup_steps = ft_lr_warmup_steps(out->total_steps, options->warmup_ratio, options->warmup_steps);
    return 0;
}

/* --- the data --- */

/* The images of row r's samples, after those of the rows before it in the micro-batch. */
static void add_row_images(data *d, const ft_token_row *row)
{
    for (uint64_t s = row->first_sample; s < row->first_sample + row->n_samples; s++) {
        size_t count;
        const uint32_t *indices = ft_image_store_sample_images(d->images, s, &count);
        if (d->n_batch_images + count > d->batch_images_capacity) {
            d->batch_images_capacity = 2 * (d->n_batch_images + count);
            d->batch_images = ft_xrealloc(d->batch_images, d->batch_images_capacity * sizeof *d->batch_images);
        }
        for (size_t i = 0; i < count; i++)
            ft_image_store_image(d->images, indices[i], &d->batch_images[d->n_batch_images++]);
    }
}

/* Hands the micro-batch's images to the model for its next pass. */
static int set_batch_images(ft_model *model, const data *d)
{
    return d->images ? ft_model_set_images(model, d->batch_images, (int)d->n_batch_images) : 0;
}

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
    d->n_batch_images = 0;
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
        if (d->images)
            add_row_images(d, &row);
    }
    return (int)seq_len;
}

/* --- the loop --- */

/* The sums over the ranks of this rank's loss sum and token count (one rank: as they are). */
static int add_over_ranks(trainer *t, double *loss_sum, int64_t *n_tokens)
{
    if (!t->comm)
        return 0;
    double sums[2] = {*loss_sum, (double)*n_tokens};
    if (t->comm->all_reduce_sum(t->comm, sums, 2, FT_COMM_F64) < 0)
        return ft_error_context("adding the loss of the ranks");
    *loss_sum = sums[0];
    *n_tokens = (int64_t)sums[1];
    return 0;
}

/* ZeRO-3 gathers the weights during every pass, and full fine-tuning at
 * stages 2 and 3 reduce-scatters each unit's gradients during backward, so
 * every rank must run as many passes as rank 0 (which has the most rows): a
 * rank left with fewer rows at an epoch's end runs passes of one padding
 * token, which train on nothing and add exact zeros to the gradients. */
static int pad_micro_batches(trainer *t, int64_t rows, int64_t rows_per_rank, int done, int64_t denominator)
{
    int64_t first, most_rows;
    ft_rank_rows(rows, rows_per_rank, t->ranks, 0, &first, &most_rows);
    int32_t token = 0, position = 0, segment = 0, target = -1;
    ft_batch padding = {1, 1, &token, &position, &segment, &target, denominator, 0};
    for (int64_t m = done; m < (most_rows + t->options->batch_size - 1) / t->options->batch_size; m++) {
        double ignored;
        if (ft_model_forward_backward(t->model, &padding, &ignored) < 0)
            return -1;
    }
    return 0;
}

/* One optimizer step: this rank's micro-batches, the gradients added over the
 * ranks, clipping, AdamW. */
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
    int64_t rows_per_rank = (int64_t)o->batch_size * o->gradient_accumulation_steps;
    int64_t rows = rows_per_rank * t->ranks;
    if (rows > (int64_t)d->n_rows - first)
        rows = (int64_t)d->n_rows - first;
    int64_t denominator = 0; /* the whole step's, so that the ranks' gradients add up to its mean */
    for (int64_t r = first; r < first + rows; r++)
        denominator += row_target_count(d, d->order[r]);
    int64_t mine_first, mine_rows;
    ft_rank_rows(rows, rows_per_rank, t->ranks, t->rank, &mine_first, &mine_rows);
    mine_first += first;

    double loss_sum = 0.0;
    int64_t n_tokens = 0;
    uint64_t started_ns = ft_now_ns();
    uint64_t dropout_stream = ft_random_stream(o->seed, STREAM_DROPOUT);
    uint64_t micro_batches_per_step = (uint64_t)o->gradient_accumulation_steps * (uint64_t)t->ranks;
    int micro = 0;
    for (int64_t at = mine_first; at < mine_first + mine_rows; at += o->batch_size, micro++) {
        int n = (int)(mine_first + mine_rows - at < o->batch_size ? mine_first + mine_rows - at : o->batch_size);
        if (t->sync && at + n >= mine_first + mine_rows) /* the last micro-batch: its layers' gradients are final */
            ft_model_on_layer_gradients(t->model, ft_grad_sync_layer_done, t->sync);
        int seq_len = fill_batch(d, at, n, &n_tokens);
        uint64_t micro_index = (uint64_t)t->state.global_step * micro_batches_per_step +
                               (uint64_t)t->rank * (uint64_t)o->gradient_accumulation_steps + (uint64_t)micro;
        ft_batch batch = {n, seq_len, d->tokens, d->positions, d->segments, d->targets, denominator,
                          ft_random_u64(dropout_stream, micro_index)};
        double micro_loss;
        if (set_batch_images(t->model, d) < 0 || ft_model_forward_backward(t->model, &batch, &micro_loss) < 0) {
            ft_model_on_layer_gradients(t->model, NULL, NULL);
            return ft_error_context("step %lld", (long long)t->state.global_step + 1);
        }
        int64_t targets = 0;
        for (size_t i = 0; i < (size_t)n * (size_t)seq_len; i++)
            targets += d->targets[i] >= 0;
        loss_sum += micro_loss * (double)targets;
    }
    ft_model_on_layer_gradients(t->model, NULL, NULL);
    if ((t->params || t->grad_shards) && pad_micro_batches(t, rows, rows_per_rank, micro, denominator) < 0)
        return ft_error_context("step %lld", (long long)t->state.global_step + 1);
    /* the last update's collectives (ZeRO-1 and 2) are done before this pass's: a rank without rows ran no
     * pass that waited for them */
    if (ft_update_gate_finish(t->gate) < 0)
        return ft_error_context("step %lld", (long long)t->state.global_step + 1);
    uint64_t computed_ns = ft_now_ns(); /* what follows is the communication backward did not hide */
    if (t->comm && ((t->sync && ft_grad_sync_finish(t->sync) < 0) ||
                    (t->zero && ft_zero_reduce_gradients(t->zero) < 0) || add_over_ranks(t, &loss_sum, &n_tokens) < 0))
        return ft_error_context("step %lld", (long long)t->state.global_step + 1);
    t->compute_s = (double)(computed_ns - started_ns) * 1e-9;
    t->comm_s = (double)(ft_now_ns() - computed_ns) * 1e-9;
    t->tokens_since_report += n_tokens;
    t->result->trained_tokens += n_tokens;
    *loss = denominator > 0 ? loss_sum / (double)denominator : 0.0;
    if (!t->zero)
        *grad_norm = ft_adamw_clip_grad_norm(t->optimizer, o->max_grad_norm);
    else if (ft_zero_clip_grad_norm(t->zero, o->max_grad_norm, grad_norm) < 0)
        return ft_error_context("step %lld", (long long)t->state.global_step + 1);
    if (!isfinite(*loss) || !isfinite(*grad_norm))
        return ft_error("step %lld: the loss is %g and the gradient norm %g: training diverged; try a lower "
                        "learning_rate (now %g) or max_grad_norm",
                        (long long)t->state.global_step + 1, *loss, *grad_norm, o->learning_rate);
    double learning_rate = ft_lr_at(&t->schedule, t->state.global_step);
    if (t->zero) {
        if (ft_zero_step(t->zero, learning_rate) < 0)
            return ft_error_context("step %lld", (long long)t->state.global_step + 1);
    } else if (t->gate) { /* the gradients down now; the update beside the next pass, which casts what it reads */
        if (ft_update_gate_finish(t->gate) < 0)
            return ft_error_context("step %lld", (long long)t->state.global_step + 1);
        ft_adamw_fetch_grads(t->optimizer);
        ft_adamw_step_begin(t->optimizer);
        ft_update_gate_start(t->gate, learning_rate);
    } else {
        ft_adamw_step(t->optimizer, learning_rate);
    }
    if (!t->gate)
        ft_model_refresh_weights(t->model); /* full fine-tuning in bf16: from the updated master copy */
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
        .epoch = ft_trainer_epochs_done(t),
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

/* A forward pass over every eval row (see trainer.h). */
static int evaluate(trainer *t)
{
    const ft_train_options *o = t->options;
    data *e = &t->eval;
    uint64_t start = ft_now_ns();
    double loss_sum = 0.0;
    for (int64_t at = 0; at < (int64_t)e->n_rows; at += o->eval_batch_size) {
        int n = (int)((int64_t)e->n_rows - at < o->eval_batch_size ? (int64_t)e->n_rows - at : o->eval_batch_size);
        int seq_len = fill_batch(e, at, n, &t->result->evaluated_tokens);
        ft_batch batch = {n, seq_len, e->tokens, e->positions, e->segments, e->targets, 0, 0};
        double batch_loss = 0.0;
        if (set_batch_images(t->model, e) < 0 || ft_model_forward(t->model, &batch, NULL, &batch_loss) < 0)
            return ft_error_context("evaluating at step %lld", (long long)t->state.global_step);
        loss_sum += batch_loss * n;
    }
    ft_eval_report r = {t->state.global_step, ft_trainer_epochs_done(t), e->n_rows ? loss_sum / (double)e->n_rows : 0.0,
                        e->n_rows, (double)(ft_now_ns() - start) * 1e-9};
    if (!isfinite(r.eval_loss))
        return ft_error("step %lld: the eval loss is %g", (long long)t->state.global_step, r.eval_loss);
    if (o->callbacks.on_evaluate)
        o->callbacks.on_evaluate(o->callbacks.context, &r);
    return 0;
}

/* The HF Trainer ends an epoch after its last micro-batch, or when max_steps stops it. */
static bool epoch_ended(const trainer *t)
{
    return t->state.epoch_row >= (int64_t)t->data.n_rows || t->state.global_step == t->plan.total_steps;
}

static bool evaluation_due(const trainer *t)
{
    const ft_train_options *o = t->options;
    if (!o->eval_shards)
        return false;
    bool last = t->state.global_step == t->plan.total_steps;
    return (o->eval_steps > 0 && (t->state.global_step % o->eval_steps == 0 || last)) ||
           (o->eval_each_epoch && epoch_ended(t));
}

static bool save_due(const trainer *t)
{
    const ft_train_options *o = t->options;
    bool last = t->state.global_step == t->plan.total_steps;
    if (o->save_strategy == FT_SAVE_STEPS)
        return (o->save_steps > 0 && t->state.global_step % o->save_steps == 0) || last;
    return o->save_strategy == FT_SAVE_EPOCH && epoch_ended(t);
}

/* After a step: whether a guard (should_stop, on rank 0) wants a checkpoint and a
 * stop; every rank learns it, so they stop together. */
static int guard_asks_to_stop(trainer *t, const ft_train_report *reported, bool *stop)
{
    const ft_train_callbacks *callbacks = &t->options->callbacks;
    int32_t asked = t->rank == 0 && callbacks->should_stop && callbacks->should_stop(callbacks->context, reported);
    char reason[512];
    snprintf(reason, sizeof reason, "%s", asked ? ft_error_message() : "");
    if (t->comm && t->comm->broadcast(t->comm, &asked, sizeof asked, 0) < 0)
        return ft_error_context("after step %lld", (long long)t->state.global_step);
    if (asked && t->rank != 0)
        ft_error("rank 0's guard asked every rank to stop");
    else if (asked)
        ft_error("%s", reason);
    *stop = asked != 0;
    return 0;
}

static int stop_asked(trainer *t, bool *stop)
{
    const ft_train_callbacks *callbacks = &t->options->callbacks;
    int32_t asked = t->rank == 0 && callbacks->cancelled && callbacks->cancelled(callbacks->context);
    if (t->comm && t->comm->broadcast(t->comm, &asked, sizeof asked, 0) < 0)
        return ft_error_context("before step %lld", (long long)t->state.global_step + 1);
    *stop = asked != 0;
    return 0;
}

/* Before the first step: how long adding the gradients over the ranks takes. */
static int preflight(trainer *t)
{
    if (!t->comm || t->comm->size < 2) /* one rank (streaming its weights) adds nothing */
        return 0;
    ft_all_reduce_timing timing = {0}, sharded = {0};
    if ((t->buckets.n_buckets &&
         ft_grad_buckets_time_all_reduce(&t->buckets, t->comm, ft_model_backend(t->model), 3, &timing) < 0) ||
        (t->grad_shards && ft_grad_shards_time_reduce(t->grad_shards, 3, &sharded) < 0))
        return -1;
    t->predicted_comm_s = timing.seconds + sharded.seconds;
    if (t->buckets.n_buckets)
        ft_trainer_note(t,
                        "preflight: an all-reduce of the %.1f KiB of gradients over %d ranks (%s) takes %.3f ms: bus "
                        "bandwidth %.3f GB/s",
                        (double)timing.bytes / 1024.0, t->ranks, t->comm->name, timing.seconds * 1e3,
                        timing.bus_bytes_per_s * 1e-9);
    if (t->grad_shards) /* ZeRO-2 and 3 of full fine-tuning, per micro-batch */
        ft_trainer_note(
            t,
            "preflight: reduce-scattering the %.1f KiB of the weights' gradients unit by unit over %d ranks (%s) "
            "takes %.3f ms: bus bandwidth %.3f GB/s",
            (double)sharded.bytes / 1024.0, t->ranks, t->comm->name, sharded.seconds * 1e3,
            sharded.bus_bytes_per_s * 1e-9);
    return 0;
}

/* After the first step: communication against compute, with the numbers. */
static void compare_step_times(trainer *t)
{
    ft_trainer_note(
        t,
        "step time: compute %.3f ms, then %.3f ms of communication that backward did not hide, with waiting for "
        "the slowest rank (the preflight timed %.3f ms unhidden)",
        t->compute_s * 1e3, t->comm_s * 1e3, t->predicted_comm_s * 1e3);
    if (t->predicted_comm_s > t->compute_s)
        ft_trainer_note(
            t,
            "communication (%.3f ms per step) takes longer than compute (%.3f ms): fewer ranks or nodes, a faster "
            "network, or a larger per-device batch would train faster",
            t->predicted_comm_s * 1e3, t->compute_s * 1e3);
}

/* Steps and evaluations since wall_ns and cpu_ns, into the result's compute time. */
static void add_compute_time(trainer *t, uint64_t wall_ns, uint64_t cpu_ns)
{
    t->result->compute_s += (double)(ft_now_ns() - wall_ns) * 1e-9;
    t->result->compute_cpu_s += (double)(ft_process_cpu_ns() - cpu_ns) * 1e-9;
}

static int keep_checkpoint(trainer *t) { return ft_trainer_write_trained(t, t->options->callbacks.on_save); }

/* ZeRO-3's result goes through on_result when any rank writes with it (those
 * that write nothing have none): 1, else 0; -1 with ft_error. */
static int result_through_units(trainer *t)
{
    double writers = t->options->callbacks.on_result != NULL;
    if (t->comm->all_reduce_sum(t->comm, &writers, 1, FT_COMM_F64) < 0)
        return ft_error_context("agreeing how the result is written");
    return writers > 0;
}

static int train_loop(trainer *t)
{
    const ft_train_options *o = t->options;
    if (preflight(t) < 0)
        return -1;
    int64_t first_step = t->state.global_step;
    while (t->state.global_step < t->plan.total_steps) {
        bool stop = false;
        if (stop_asked(t, &stop) < 0)
            return -1;
        if (stop) {
            if (ft_trainer_save(t) < 0)
                return -1;
            return ft_error("cancelled at step %lld of %lld", (long long)t->state.global_step,
                            (long long)t->plan.total_steps);
        }
        double loss = 0.0, grad_norm = 0.0;
        uint64_t wall_ns = ft_now_ns(), cpu_ns = ft_process_cpu_ns();
        if (step(t, &loss, &grad_norm) < 0)
            return -1;
        add_compute_time(t, wall_ns, cpu_ns);
        ft_train_report reported;
        report(t, loss, grad_norm, &reported);
        if (t->comm && t->comm->size > 1 && t->state.global_step == first_step + 1)
            compare_step_times(t);
        if (evaluation_due(t)) {
            wall_ns = ft_now_ns();
            cpu_ns = ft_process_cpu_ns();
            if (evaluate(t) < 0)
                return -1;
            add_compute_time(t, wall_ns, cpu_ns);
        }
        if (save_due(t) && keep_checkpoint(t) < 0)
            return ft_error_context("keeping checkpoint-%lld", (long long)t->state.global_step);
        int64_t save_steps = o->save_steps;
        if (save_steps > 0 && t->state.global_step % save_steps == 0 && ft_trainer_save(t) < 0)
            return -1;
        bool guard_stop = false;
        if (t->state.global_step < t->plan.total_steps && guard_asks_to_stop(t, &reported, &guard_stop) < 0)
            return -1;
        if (guard_stop) {
            char reason[512];
            snprintf(reason, sizeof reason, "%s", ft_error_message());
            if (ft_trainer_save(t) < 0)
                return ft_error_context("%s; then saving a checkpoint", reason);
            return ft_error("%s; stopped after step %lld of %lld with checkpoint-%lld saved: the next run resumes "
                            "from it", reason, (long long)t->state.global_step, (long long)t->plan.total_steps,
                            (long long)t->state.global_step);
        }
    }
    return ft_trainer_save(t);
}

int ft_train(ft_model *model, const ft_token_shards *shards, const ft_train_options *options, ft_train_result *out)
{
    trainer t = {.model = model, .options = options, .saved_step = -1, .comm = options->comm, .ranks = 1,
                 .result = out};
    memset(out, 0, sizeof *out);
    if (t.comm) {
        if (t.comm->size != (options->ranks > 1 ? options->ranks : 1))
            return ft_error("the communicator has %d ranks but the plan %d", t.comm->size, options->ranks);
        t.rank = t.comm->rank;
        t.ranks = t.comm->size;
    }
    t.data.shards = shards;
    t.data.n_rows = ft_token_shards_n_rows(shards);
    if (ft_train_plan_steps(options, t.data.n_rows, &t.plan) < 0)
        return -1;
    if (options->eval_shards && options->eval_batch_size < 1)
        return ft_error("per_device_eval_batch_size is %d; it must be at least 1", options->eval_batch_size);
    t.schedule = (ft_lr_schedule){options->lr_scheduler_type, options->learning_rate, t.plan.total_steps,
                                  t.plan.warmup_steps};
    t.tensors = ft_model_trainable(model, &t.n_tensors);
    if (t.n_tensors == 0)
        return ft_error("the model was loaded with nothing to train (load it for LoRA or full fine-tuning)");
    snprintf(t.state.run_id, sizeof t.state.run_id, "%s", options->run_id ? options->run_id : "");
    if (options->zero_stage < 0 || options->zero_stage > 3)
        return ft_error("zero_stage = %d: the trainer shards with ZeRO stages 0 to 3", options->zero_stage);
    ft_backend *backend = ft_model_backend(model);
    size_t n_weights;
    const ft_param_tensor *weights = ft_model_weights(model, &n_weights);
    bool full = ft_model_trains_weights(model); /* the trained tensors begin with the weights */
    bool weights_alone = full && t.n_tensors == n_weights; /* no trained projector after them */
    out->parameter_bytes = ft_model_memory(model).parameter_bytes;
    out->master_bytes = ft_model_memory(model).master_bytes;
    if (full && !ft_model_param_shards(model) && n_weights > 0 &&
        (!weights[0].value || ft_model_weights_on_host(model)))
        return ft_error("the model's weights were gathered whole into the writing rank's host memory by a ZeRO-3 run, "
                        "to be saved, not trained (a run with on_result leaves them sharded): load the model again "
                        "to train it");
    if (ft_model_param_shards(model) && !(t.comm && options->zero_stage == 3))
        return ft_error("the model's weights are sharded over ranks (ZeRO-3): train it with zero_stage = 3 over "
                        "the same ranks");
    if (t.comm && options->zero_stage == 3) { /* a model loaded sharded, or left so by a run (LoRA), stays so */
        t.params = ft_model_param_shards(model);
        int made = t.params ? 0
                            : ft_param_shards_create(model, t.comm, options->offload_param, options->offload_optimizer,
                                                     &t.params);
        if (ft_trainer_agree_over_ranks(t.comm, made, "sharding the weights (ZeRO-3)") < 0)
            return -1; /* shards made here are the model's now, freed with it */
        t.n_sharded = full ? n_weights : 0;
        t.writes_sharded = ft_model_saves_weights(model);
        size_t shard = ft_param_shards_shard_bytes(t.params);
        bool offloaded = ft_param_shards_offloaded(t.params);
        out->parameter_bytes = ft_param_shards_gathered_bytes(t.params) + (offloaded ? 0 : shard) +
                               ft_model_vision_weight_bytes(model); /* a tower stays whole */
        out->parameter_host_bytes = offloaded ? shard : 0;
        bool master_on_host = ft_param_shards_master_on_host(t.params);
        out->master_bytes = master_on_host ? 0 : ft_param_shards_master_bytes(t.params);
        out->master_host_bytes = master_on_host ? ft_param_shards_master_bytes(t.params) : 0;
    }
    /* full fine-tuning at stage 2 or 3: the weights' gradients in shards (grad_shards.h) */
    bool shard_grads = t.comm && options->zero_stage >= 2 && ft_model_trains_weights(model);
    if (!shard_grads && ft_model_gradient_shards(model) > 0) /* so no ZeRO-3 shards were made here */
        return ft_error("the model was loaded with gradient_shards = %d, for ZeRO-2 or 3 over that many ranks, but "
                        "trains with zero_stage = %d over %d rank%s: load it with gradient_shards = 0",
                        ft_model_gradient_shards(model), options->zero_stage, t.ranks, t.ranks == 1 ? "" : "s");
    /* offload_optimizer: the shard in host memory, where AdamW reads it (not with a trained projector,
     * whose whole gradients stay in the backend's memory beside it) */
    bool grads_on_host = options->offload_optimizer && weights_alone;
    int made = shard_grads ? ft_grad_shards_create(model, t.comm, t.params, grads_on_host, &t.grad_shards) : 0;
    bool new_adapter_shards = false; /* LoRA: its layers' values sharded too, unless a run before did it */
    if (made == 0 && t.params && !ft_model_saves_weights(model) && !(t.adapter = ft_model_adapter_shards(model))) {
        made = ft_adapter_shards_create(model, t.params, &t.adapter);
        new_adapter_shards = t.adapter != NULL;
    }
    if (made == 0 && t.comm && options->zero_stage > 0)
        made = ft_zero_create(backend, t.comm, options->zero_stage, t.n_sharded ? t.params : NULL, t.grad_shards,
                              t.adapter, t.tensors, t.n_tensors, &options->adamw, options->offload_optimizer, &t.zero);
    else if (made == 0 && options->offload_optimizer &&
             (made = ft_adamw_create_offloaded(backend, t.tensors, t.n_tensors, &options->adamw, false,
                                               &t.optimizer)) == 0)
        made = ft_update_gate_create_for(model, t.optimizer, &t.gate);
    else if (made == 0)
        made = ft_adamw_create(backend, t.tensors, t.n_tensors, &options->adamw, &t.optimizer);
    if (made == 0 && t.zero) /* ZeRO-1 and 2 with offload_optimizer: the update beside the next pass */
        made = ft_zero_update_beside_passes(t.zero, model, &t.gate);
    if (ft_trainer_agree_over_ranks(t.comm, made, "setting up the optimizer") < 0) {
        if (!t.zero)
            ft_update_gate_free(t.gate);
        ft_adamw_free(t.optimizer);
        ft_zero_free(t.zero);
        ft_adapter_shards_free(t.adapter); /* new ones: the adapter still whole; the model's: before its shards */
        ft_grad_shards_free(t.grad_shards);
        ft_param_shards_free(t.params);
        return -1;
    }
    if (new_adapter_shards) /* the optimizer took its spans' parts: from now on the passes gather the layers */
        ft_adapter_shards_start(t.adapter);
    out->adapter_bytes = t.adapter                 ? ft_adapter_shards_bytes(t.adapter)
                         : ft_model_lora(model) ? ft_lora_parameter_count(ft_model_lora(model)) * sizeof(float)
                                                : 0;
    out->gradient_bytes = t.grad_shards ? ft_grad_shards_bytes(t.grad_shards) : 0;
    out->gradient_host_bytes = t.grad_shards ? ft_grad_shards_host_bytes(t.grad_shards) : 0;
    for (size_t i = 0; i < t.n_tensors; i++) /* those held whole */
        out->gradient_bytes += t.tensors[i].grad ? t.tensors[i].count * sizeof(float) : 0;
    out->optimizer_state_bytes = ft_adamw_state_bytes(t.zero ? ft_zero_shard_optimizer(t.zero) : t.optimizer);
    size_t row_length = ft_token_shards_row_length(shards), cells = (size_t)options->batch_size * row_length;
    t.data.order = ft_xmalloc(t.data.n_rows * sizeof(uint64_t));
    t.data.order_epoch = -1;
    t.data.row_segments = ft_xmalloc(row_length * sizeof(int32_t));
    t.data.tokens = ft_xmalloc(cells * sizeof(int32_t));
    t.data.positions = ft_xmalloc(cells * sizeof(int32_t));
    t.data.segments = ft_xmalloc(cells * sizeof(int32_t));
    t.data.targets = ft_xmalloc(cells * sizeof(int32_t));
    t.data.images = options->images;
    t.eval.images = options->eval_images;
    if (options->eval_shards) {
        size_t eval_cells = (size_t)options->eval_batch_size * ft_token_shards_row_length(options->eval_shards);
        t.eval.shards = options->eval_shards;
        t.eval.n_rows = ft_token_shards_n_rows(options->eval_shards);
        t.eval.order = ft_xmalloc((t.eval.n_rows ? t.eval.n_rows : 1) * sizeof(uint64_t));
        for (uint64_t r = 0; r < t.eval.n_rows; r++)
            t.eval.order[r] = r;
        t.eval.row_segments = ft_xmalloc(ft_token_shards_row_length(options->eval_shards) * sizeof(int32_t));
        t.eval.tokens = ft_xmalloc(eval_cells * sizeof(int32_t));
        t.eval.positions = ft_xmalloc(eval_cells * sizeof(int32_t));
        t.eval.segments = ft_xmalloc(eval_cells * sizeof(int32_t));
        t.eval.targets = ft_xmalloc(eval_cells * sizeof(int32_t));
    }
    int status = 0;
    if (t.comm) {
        ft_grad_buckets_plan(t.tensors, t.n_tensors, FT_GRAD_BUCKET_BYTES, &t.buckets);
        /* stage 2 reduce-scatters after backward instead */
        if (options->zero_stage < 2 && !(t.sync = ft_grad_sync_create(&t.buckets, t.comm)))
            status = -1;
    }
    t.start_ns = t.report_ns = ft_now_ns();
    ft_model_zero_grads(model);
    if (status == 0)
        status = ft_trainer_resume(&t, out);
    if (status == 0)
        status = train_loop(&t);
    out->global_step = t.state.global_step;
    out->epoch = ft_trainer_epochs_done(&t);
    out->train_loss = t.state.global_step > 0 ? t.state.loss_sum / (double)t.state.global_step : 0.0;
    out->runtime_s = (double)(ft_now_ns() - t.start_ns) * 1e-9;
    out->samples = options->max_steps > 0
                       ? (double)options->max_steps * options->batch_size * options->gradient_accumulation_steps *
                             t.ranks
                       : (double)t.data.n_rows * options->num_train_epochs;
    ft_grad_sync_free(t.sync);
    ft_grad_buckets_free(&t.buckets);
    if (ft_update_gate_finish(t.gate) < 0 && status == 0) /* the last step's values, as if updated at once */
        status = -1;
    if (!t.zero) /* the zero frees its own */
        ft_update_gate_free(t.gate);
    t.gate = NULL;
    ft_adamw_free(t.optimizer);
    ft_zero_free(t.zero);
    ft_grad_shards_free(t.grad_shards);
    /* The result, once the optimizer is freed: written by on_result (full
     * fine-tuning's weights read through the shards a unit at a time, every
     * rank joining, the model left sharded), or else, without it, the weights
     * gathered whole into the host memory of the ranks that write. LoRA's
     * model stays sharded, its adapter too (the result gathered into the
     * writing rank's host memory). */
    int through = status == 0 && t.writes_sharded ? result_through_units(&t) : 0;
    if (through < 0)
        status = -1;
    if (through > 0) { /* the model stays sharded, as LoRA's does: a run may go on from it */
        status = ft_trainer_write_trained(&t, options->callbacks.on_result);
    } else if (status == 0 && t.writes_sharded) {
        status = ft_param_shards_unshard(t.params, ft_trainer_saves_checkpoints(&t));
    } else if (status == 0) {
        status = ft_trainer_write_trained(&t, options->callbacks.on_result);
    } else if (t.params) { /* a failed run: its collectives may be gone */
        ft_adapter_shards_free(t.adapter); /* the model's, before the shards it rides with */
        ft_param_shards_free(t.params);
    }
    free(t.data.order);
    free(t.data.row_segments);
    free(t.data.tokens);
    free(t.data.positions);
    free(t.data.segments);
    free(t.data.targets);
    free(t.data.batch_images);
    free(t.eval.batch_images);
    free(t.eval.order);
    free(t.eval.row_segments);
    free(t.eval.tokens);
    free(t.eval.positions);
    free(t.eval.segments);
    free(t.eval.targets);
    return status;
}
