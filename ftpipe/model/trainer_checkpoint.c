/* trainer_checkpoint: checkpoints (whole, or gathered from ZeRO's shards as
 * the writing rank writes them), resuming from the newest, and the trained
 * tensors written through on_save and on_result. */
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/lora.h"
#include "trainer_internal.h"

/* Sharded state read into a checkpoint's file in the file's order
 * (ft_checkpoint_order): ZeRO's moments or ZeRO-3's values (the sharded
 * weights' through their shards, a trained projector's whole ones from the
 * backend). */
typedef struct {
    const trainer *t;
    ft_zero_moments *moments;   /* NULL: values */
    ft_param_values *values;
    size_t *order, n, asked;
} sharded_file;

static int read_sharded(sharded_file *f, size_t tensor, int part, float *to)
{
    const ft_param_tensor *whole = &f->t->tensors[tensor];
    if (f->moments)
        return ft_zero_moments_read(f->moments, tensor, part, to);
    if (tensor < f->t->n_sharded)
        return ft_param_values_read(f->values, tensor, to);
    if (to) /* the same on every rank: the writing one reads it */
        ft_model_backend(f->t->model)->download(ft_model_backend(f->t->model), to, whole->value,
                                                 whole->count * sizeof(float));
    return 0;
}

static int read_in_order(void *context, size_t tensor, int part, float *to)
{
    sharded_file *f = context;
    f->asked++;
    return read_sharded(f, tensor, part, to);
}

/* One file of a sharded checkpoint: the writing rank writes it (*written: its
 * status) reading each tensor as the file asks; then every rank reads what is
 * left of the order keeping nothing (a rank that writes nothing: all of it;
 * one whose write stopped: the rest), so that the ranks' gathers match. */
static int gather_file(const trainer *t, ft_checkpoint_writer *writer, int *written, sharded_file *f)
{
    bool moments = f->moments != NULL;
    f->order = ft_xmalloc((2 * t->n_tensors + 1) * sizeof *f->order);
    f->n = ft_checkpoint_order(t->tensors, t->n_tensors, moments, f->order);
    if (writer && *written == 0)
        *written = (moments ? ft_checkpoint_write_moments_from : ft_checkpoint_write_values_from)(writer,
                                                                                               read_in_order, f);
    int status = 0;
    for (size_t k = f->asked; k < f->n && status == 0; k++)
        status = read_sharded(f, f->order[k] / (moments ? 2 : 1), (int)(f->order[k] % (moments ? 2 : 1)), NULL);
    free(f->order);
    return status;
}

/* ZeRO-3's LoRA adapter, whole in the host memory of the rank that keeps it
 * (*out: its floats in the order of its tensors, which is its layout; NULL
 * elsewhere, and where that memory ran out, the rank joining all the same).
 * Every rank joins the gathers: their status, -1 with ft_error. */
static int adapter_to_host(trainer *t, bool keep, float **out)
{
    size_t count = 0;
    for (size_t i = 0; i < t->n_tensors; i++)
        count += t->tensors[i].count;
    *out = keep ? malloc((count ? count : 1) * sizeof(float)) : NULL;
    return ft_adapter_shards_gather_to_host(t->adapter, *out);
}

static int out_of_memory_for_adapter(void)
{
    return ft_error("out of host memory for the LoRA adapter's values, gathered to be written");
}

/* The gathered adapter, and each tensor's first value in it. */
typedef struct {
    const trainer *t;
    const float *values;
    size_t *offsets;
} host_values;

static int read_host_values(void *context, size_t tensor, int part, float *to)
{
    const host_values *h = context;
    memcpy(to, h->values + h->offsets[tensor], h->t->tensors[tensor].count * sizeof(float));
    (void)part;
    return 0;
}

static int write_host_values(trainer *t, ft_checkpoint_writer *writer, const float *values)
{
    host_values h = {t, values, ft_xmalloc((t->n_tensors ? t->n_tensors : 1) * sizeof(size_t))};
    for (size_t i = 0, at = 0; i < t->n_tensors; at += t->tensors[i].count, i++)
        h.offsets[i] = at;
    int written = ft_checkpoint_write_values_from(writer, read_host_values, &h);
    free(h.offsets);
    return written;
}

/* A checkpoint's values of ZeRO-3's LoRA adapter: every rank joins the
 * gathers (their status returned), the writing one writes them (*written:
 * its status). */
static int write_adapter_values(trainer *t, ft_checkpoint_writer *writer, int *written)
{
    bool keep = writer && *written == 0;
    float *values = NULL;
    int gathered = adapter_to_host(t, keep, &values);
    if (keep)
        *written = gathered < 0 ? -1
                   : !values    ? out_of_memory_for_adapter()
                                : write_host_values(t, writer, values);
    free(values);
    return gathered;
}

/* ZeRO: every rank joins in gathering the values (ZeRO-3's weights, unit by
 * unit) and then the moments (span by span), which the checkpoint holds
 * whole whatever the stage (zero.h), as the writing rank writes them: it holds
 * one unit or span at a time, the others nothing. */
static int save_sharded(trainer *t)
{
    ft_backend *backend = ft_model_backend(t->model);
    ft_checkpoint_writer *writer = NULL;
    int written = ft_trainer_saves_checkpoints(t) ? ft_checkpoint_begin(t->options->checkpoint_dir, t->tensors,
                                                                        t->n_tensors, &t->state, &writer)
                                                  : 0;
    bool keep = writer && written == 0;
    int gathered = 0;
    if (t->n_sharded) {
        sharded_file values = {.t = t};
        gathered = ft_trainer_agree_over_ranks(t->comm, ft_param_values_open(t->params, keep, &values.values),
                                               "gathering a checkpoint's values");
        if (gathered == 0)
            gathered = gather_file(t, writer, &written, &values);
        ft_param_values_close(values.values);
    } else if (t->adapter) {
        gathered = write_adapter_values(t, writer, &written);
    } else if (writer) {
        written = ft_checkpoint_write_values(writer, backend);
    }
    sharded_file moments = {.t = t};
    if (gathered == 0)
        gathered = ft_trainer_agree_over_ranks(t->comm, ft_zero_moments_open(t->zero, keep, &moments.moments),
                                               "gathering a checkpoint's moments");
    if (gathered == 0)
        gathered = gather_file(t, writer, &written, &moments);
    ft_zero_moments_close(moments.moments);
    if (writer && written == 0 && gathered == 0)
        return ft_checkpoint_finish(writer, t->options->save_total_limit);
    ft_checkpoint_abandon(writer);
    return written < 0 || gathered < 0 ? -1 : 0;
}

int ft_trainer_save(trainer *t)
{
    if (!t->options->checkpoint_dir || t->saved_step == t->state.global_step)
        return 0;
    if (ft_update_gate_finish(t->gate) < 0) /* the moments and values of the last step */
        return -1;
    ft_backend *backend = ft_model_backend(t->model);
    const char *dir = t->options->checkpoint_dir;
    int status = 0;
    if (t->zero) {
        status = save_sharded(t);
    } else if (!ft_trainer_saves_checkpoints(t)) {
        /* another rank writes it */
    } else if (ft_adamw_host_moments(t->optimizer)) { /* offloaded: the moments are host memory already */
        status = ft_checkpoint_save_host_moments(dir, backend, t->tensors, t->n_tensors,
                                                 ft_adamw_host_moments(t->optimizer), &t->state,
                                                 t->options->save_total_limit);
    } else {
        status = ft_checkpoint_save(dir, backend, t->tensors, t->n_tensors, t->optimizer, &t->state,
                                    t->options->save_total_limit);
    }
    /* every rank stops when the checkpoint failed, rather than training on
     * towards a collective the writing rank never joins */
    if (ft_trainer_agree_over_ranks(t->comm, status, "saving a checkpoint") < 0)
        return -1;
    t->saved_step = t->state.global_step;
    if (!t->zero && !ft_trainer_saves_checkpoints(t))
        return 0;
    uint64_t bytes, largest_file_bytes;
    ft_checkpoint_size(t->tensors, t->n_tensors, &bytes, &largest_file_bytes);
    t->result->checkpoint_bytes_written += bytes;
    if (ft_trainer_saves_checkpoints(t))
        ft_trainer_note(t, "saved checkpoint-%lld", (long long)t->state.global_step);
    return 0;
}

int ft_trainer_resume(trainer *t, ft_train_result *out)
{
    const ft_train_options *o = t->options;
    if (!o->checkpoint_dir)
        return 0;
    ft_checkpoint_state loaded;
    ft_backend *backend = ft_model_backend(t->model);
    int found;
    if (t->zero) { /* each rank takes its shard of the moments (ZeRO-3: and of the weights) from the mapped files */
        ft_checkpoint_mapped mapped;
        found = ft_checkpoint_map_latest(o->checkpoint_dir, t->tensors, t->n_tensors, t->state.run_id, &loaded,
                                         &mapped);
        if (found == 1 && t->n_sharded && ft_param_shards_take_values(t->params, mapped.values) < 0)
            found = -1;
        if (found == 1 && t->adapter) /* each rank its parts of the adapter's layers */
            ft_adapter_shards_take(t->adapter, mapped.values);
        for (size_t i = t->n_sharded; found == 1 && !t->adapter && i < t->n_tensors; i++) /* whole on every rank */
            backend->upload(backend, t->tensors[i].value, mapped.values[i], t->tensors[i].count * sizeof(float));
        if (found == 1)
            ft_zero_take_moments(t->zero, mapped.exp_avg, mapped.exp_avg_sq, loaded.global_step);
        ft_checkpoint_unmap(&mapped);
    } else if (ft_adamw_host_moments(t->optimizer)) {
        found = ft_checkpoint_load_latest_host_moments(o->checkpoint_dir, backend, t->tensors, t->n_tensors,
                                                       ft_adamw_host_moments(t->optimizer), t->state.run_id,
                                                       &loaded);
        if (found == 1) {
            ft_adamw_set_step_count(t->optimizer, loaded.global_step);
            ft_adamw_reload_values(t->optimizer);
        }
    } else {
        found = ft_checkpoint_load_latest(o->checkpoint_dir, backend, t->tensors, t->n_tensors, t->optimizer,
                                          t->state.run_id, &loaded);
    }
    if (found < 0)
        return -1;
    if (found == 1) {
        ft_model_refresh_weights(t->model); /* the checkpoint's values went into the master copy */
        t->state = loaded;
        t->saved_step = loaded.global_step;
        out->resumed_from_step = loaded.global_step;
        ft_trainer_note(t, "resumed from checkpoint-%lld (epoch %.2f)", (long long)loaded.global_step,
                        ft_trainer_epochs_done(t));
    }
    if (!ft_trainer_saves_checkpoints(t))
        return 0;
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

int ft_trainer_write_trained(trainer *t, int (*write)(void *context, int64_t step, double epoch))
{
    void *context = t->options->callbacks.context;
    if (ft_update_gate_finish(t->gate) < 0)
        return -1;
    if (t->adapter) { /* ZeRO-3's LoRA adapter, gathered into the writing rank's host memory */
        float *values = NULL;
        int gathered = adapter_to_host(t, write != NULL, &values), written = 0;
        if (gathered == 0 && write && !values) {
            written = out_of_memory_for_adapter();
        } else if (gathered == 0 && write) {
            ft_lora_save_from(ft_model_lora(t->model), values);
            written = write(context, t->state.global_step, ft_trainer_epochs_done(t));
            ft_lora_save_from(ft_model_lora(t->model), NULL);
        }
        free(values);
        return gathered < 0 ? -1 : ft_trainer_agree_over_ranks(t->comm, written, "writing the LoRA adapter");
    }
    if (!t->writes_sharded)
        return write ? write(context, t->state.global_step, ft_trainer_epochs_done(t)) : 0;
    ft_param_values *values = NULL;
    int status = ft_trainer_agree_over_ranks(t->comm, ft_param_values_open(t->params, write != NULL, &values),
                                             "reading the weights to write");
    if (status == 0) {
        ft_param_shards_save_through(t->params, values);
        int written = write ? write(context, t->state.global_step, ft_trainer_epochs_done(t)) : 0;
        ft_param_shards_save_through(t->params, NULL);
        int joined = ft_param_values_finish(values); /* the units the writer did not ask for */
        status = joined < 0 ? -1 : ft_trainer_agree_over_ranks(t->comm, written, "writing the trained weights");
    }
    ft_param_values_close(values);
    return status;
}
