/* checkpoint: writing, pruning and loading checkpoint-N folders. */
#include "ftpipe/model/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"

#define STATE_FORMAT "ftpipe-checkpoint"
#define STATE_VERSION 1
#define HEADER_BYTES_PER_TENSOR 160 /* a safetensors header entry, generously */

static const char *const moment_suffixes[2] = {".exp_avg", ".exp_avg_sq"};

/* Where the state is: AdamW's moments an optimizer's, in the backend's
 * memory, or a host array (exp_avg of every tensor, then exp_avg_sq of every
 * tensor); the tensors' values in the backend's memory; or either made tensor
 * by tensor by a source (ZeRO's gathers). */
typedef struct {
    const ft_adamw *optimizer;
    float *host;
    ft_checkpoint_source source;
    void *context;
} state_place;

/* Tensor i's two moments in the place; *on_host says which memory they are in. */
static void moments_of(const state_place *place, const ft_param_tensor *tensors, size_t count, size_t i,
                       float **exp_avg, float **exp_avg_sq, bool *on_host)
{
    *on_host = place->host != NULL;
    if (place->optimizer) {
        ft_adamw_moments(place->optimizer, i, exp_avg, exp_avg_sq);
        return;
    }
    size_t offset = 0, total = 0;
    for (size_t k = 0; k < count; k++) {
        offset += k < i ? tensors[k].count : 0;
        total += tensors[k].count;
    }
    *exp_avg = place->host + offset;
    *exp_avg_sq = place->host + total + offset;
}

void ft_checkpoint_size(const ft_param_tensor *tensors, size_t count, uint64_t *total_bytes,
                        uint64_t *largest_file_bytes)
{
    uint64_t floats = 0, name_bytes = 0;
    for (size_t i = 0; i < count; i++) {
        floats += tensors[i].count;
        name_bytes += strlen(tensors[i].name);
    }
    uint64_t model = floats * sizeof(float) + name_bytes + count * HEADER_BYTES_PER_TENSOR;
    uint64_t optimizer = 2 * floats * sizeof(float) + 2 * name_bytes + 2 * count * (HEADER_BYTES_PER_TENSOR + 12);
    *total_bytes = model + optimizer + 4096; /* trainer_state.json */
    *largest_file_bytes = optimizer;
}

int ft_checkpoint_check_space(const char *dir, int64_t step, uint64_t total_bytes, uint64_t largest_file_bytes)
{
    char needed[32], available[32];
    struct rlimit limit;
    if (getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
        largest_file_bytes > (uint64_t)limit.rlim_cur) {
        ft_format_bytes(largest_file_bytes, needed, sizeof needed);
        ft_format_bytes((uint64_t)limit.rlim_cur, available, sizeof available);
        return ft_error("checkpoint at step %lld writes a file of %s, but this process may write files of at most "
                        "%s (RLIMIT_FSIZE, `ulimit -f`): raise the limit",
                        (long long)step, needed, available);
    }
    uint64_t free_bytes;
    if (ft_free_space_bytes(dir, &free_bytes) < 0)
        return -1;
    if (total_bytes <= free_bytes)
        return 0;
    ft_format_bytes(total_bytes, needed, sizeof needed);
    ft_format_bytes(free_bytes, available, sizeof available);
    return ft_error("checkpoint at step %lld needs %s, %s has %s free: free space, or raise save_steps",
                    (long long)step, needed, dir, available);
}

/* --- the folder's checkpoints --- */

/* N when name is "checkpoint-N" with N all digits, else -1. */
static int64_t checkpoint_step(const char *name)
{
    const char *prefix = "checkpoint-";
    size_t length = strlen(prefix);
    if (strncmp(name, prefix, length) != 0 || !name[length] || strlen(name + length) > 18)
        return -1;
    int64_t step = 0;
    for (const char *p = name + length; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        step = step * 10 + (*p - '0');
    }
    return step;
}

static int compare_steps(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The steps of the complete checkpoints in dir, ascending; with delete_leftovers,
 * interrupted writes (checkpoint-*.tmp) are removed on the way. */
static int list_checkpoints(const char *dir, bool delete_leftovers, int64_t **steps, size_t *count)
{
    *steps = NULL;
    *count = 0;
    DIR *folder = opendir(dir);
    if (!folder)
        return errno == ENOENT ? 0 : ft_error_errno("cannot read the checkpoint folder %s", dir);
    size_t capacity = 0;
    int status = 0;
    struct dirent *entry;
    while ((entry = readdir(folder)) && status == 0) {
        const char *name = entry->d_name;
        size_t length = strlen(name);
        if (delete_leftovers && strncmp(name, "checkpoint-", 11) == 0 && length > 4 &&
            strcmp(name + length - 4, ".tmp") == 0) {
            char *path = ft_path_join(dir, name);
            status = ft_remove_tree(path);
            free(path);
            continue;
        }
        int64_t step = checkpoint_step(name);
        if (step < 0)
            continue;
        ft_grow((void **)steps, &capacity, *count + 1, sizeof **steps);
        (*steps)[(*count)++] = step;
    }
    closedir(folder);
    if (*count > 1) /* an empty folder leaves steps NULL, which qsort may not get */
        qsort(*steps, *count, sizeof **steps, compare_steps);
    return status;
}

static char *checkpoint_path(const char *dir, int64_t step, const char *suffix)
{
    char *name = ft_xasprintf("checkpoint-%lld%s", (long long)step, suffix);
    char *path = ft_path_join(dir, name);
    free(name);
    return path;
}

static int prune(const char *dir, int keep_newest)
{
    if (keep_newest <= 0)
        return 0;
    int64_t *steps;
    size_t count;
    int status = list_checkpoints(dir, false, &steps, &count);
    for (size_t i = 0; status == 0 && i + (size_t)keep_newest < count; i++) {
        char *path = checkpoint_path(dir, steps[i], "");
        status = ft_remove_tree(path);
        free(path);
    }
    free(steps);
    return status;
}

/* --- saving --- */

static int write_state(const char *folder, const ft_checkpoint_state *state)
{
    json_t *root = json_pack("{ss si sI sI sI sf sf sI ss}", "format", STATE_FORMAT, "version", STATE_VERSION,
                             "global_step", (json_int_t)state->global_step, "epoch", (json_int_t)state->epoch,
                             "epoch_row", (json_int_t)state->epoch_row, "loss_sum", state->loss_sum,
                             "log_loss_sum", state->log_loss_sum, "log_steps", (json_int_t)state->log_steps,
                             "run_id", state->run_id);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(root);
    char *path = ft_path_join(folder, "trainer_state.json");
    int status = ft_write_file_atomic(path, text, strlen(text));
    free(path);
    free(text);
    return status;
}

/* What a file's producer reads its tensors from. */
typedef struct {
    ft_backend *backend;
    const ft_param_tensor *tensors;
    size_t count;
    const state_place *place;
    bool moments;
} producing;

/* Part `part` of tensor i (its values, or one of its moments): where it is,
 * and whether that is host memory. */
static const float *part_of(const producing *p, size_t i, int part, bool *on_host)
{
    float *sources[2] = {p->tensors[i].value, NULL};
    *on_host = false;
    if (p->moments)
        moments_of(p->place, p->tensors, p->count, i, &sources[0], &sources[1], on_host);
    return sources[part];
}

static size_t test_fail_after, test_made; /* ft_checkpoint_test_fail_after */

void ft_checkpoint_test_fail_after(size_t tensors)
{
    test_fail_after = tensors;
    test_made = 0;
}

/* One tensor of the file into the writer's buffer: from its source, or
 * downloaded from the backend, so that the host holds one tensor at a time. */
static int produce(void *context, size_t index, void *buffer, size_t size_bytes)
{
    const producing *p = context;
    if (test_fail_after && ++test_made > test_fail_after)
        return ft_error("a checkpoint failing on purpose after %zu tensors (a test)", test_fail_after);
    int parts = p->moments ? 2 : 1;
    size_t i = index / (size_t)parts;
    int part = (int)(index % (size_t)parts);
    if (p->place->source)
        return p->place->source(p->place->context, i, part, buffer);
    bool on_host;
    p->backend->download(p->backend, buffer, part_of(p, i, part, &on_host), size_bytes);
    return 0;
}

/* The file's tensors: tensor i's values, or its two moments, at index i x
 * parts + part; those in host memory are written from there, the others
 * (every one with a source, or when all_produced) produced one at a time. */
static ft_tensor_to_write *file_tensors(const producing *p, bool all_produced, char ***names)
{
    int parts = p->moments ? 2 : 1;
    size_t n = (size_t)parts * p->count;
    ft_tensor_to_write *out = ft_xcalloc(n ? n : 1, sizeof *out);
    *names = ft_xcalloc(n ? n : 1, sizeof **names);
    for (size_t i = 0; i < p->count; i++) {
        const ft_param_tensor *t = &p->tensors[i];
        for (int part = 0; part < parts; part++) {
            size_t k = i * (size_t)parts + (size_t)part;
            bool on_host = false;
            const float *data = all_produced || p->place->source ? NULL : part_of(p, i, part, &on_host);
            (*names)[k] = p->moments ? ft_xasprintf("%s%s", t->name, moment_suffixes[part]) : ft_xstrdup(t->name);
            out[k] = (ft_tensor_to_write){(*names)[k], FT_DTYPE_F32, t->n_dims, {t->shape[0], t->shape[1]},
                                          on_host ? data : NULL};
        }
    }
    return out;
}

static void free_file_tensors(ft_tensor_to_write *tensors, char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(tensors);
}

/* Writes the tensors' values (moments false) or AdamW's moments. */
static int write_tensors(const char *path, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                         const state_place *place, bool moments)
{
    producing p = {backend, tensors, count, place, moments};
    char **names;
    ft_tensor_to_write *out = file_tensors(&p, false, &names);
    size_t n = (size_t)(moments ? 2 : 1) * count;
    int status = ft_safetensors_write_produced(path, out, n, NULL, NULL, 0, produce, &p);
    free_file_tensors(out, names, n);
    return status;
}

size_t ft_checkpoint_order(const ft_param_tensor *tensors, size_t count, bool moments, size_t *order)
{
    state_place place = {0};
    producing p = {NULL, tensors, count, &place, moments};
    char **names;
    ft_tensor_to_write *out = file_tensors(&p, true, &names);
    size_t n = (size_t)(moments ? 2 : 1) * count, asked = 0;
    size_t *written = ft_xcalloc(n ? n : 1, sizeof *written);
    ft_safetensors_write_order(out, n, written);
    for (size_t k = 0; k < n; k++)
        if (tensors[written[k] / (moments ? 2 : 1)].count > 0) /* an empty tensor is never produced */
            order[asked++] = written[k];
    free_file_tensors(out, names, n);
    free(written);
    return asked;
}

struct ft_checkpoint_writer {
    char *dir, *temporary, *final;
    const ft_param_tensor *tensors;
    size_t count;
    ft_checkpoint_state state;
};

static int failed(ft_checkpoint_writer *w)
{
    return ft_error_context("saving the checkpoint at step %lld", (long long)w->state.global_step);
}

void ft_checkpoint_abandon(ft_checkpoint_writer *w)
{
    if (!w)
        return;
    ft_remove_tree(w->temporary);
    free(w->dir);
    free(w->temporary);
    free(w->final);
    free(w);
}

int ft_checkpoint_begin(const char *dir, const ft_param_tensor *tensors, size_t count,
                        const ft_checkpoint_state *state, ft_checkpoint_writer **out)
{
    *out = NULL;
    uint64_t total_bytes, largest_file_bytes;
    ft_checkpoint_size(tensors, count, &total_bytes, &largest_file_bytes);
    if (ft_mkdir_p(dir) < 0 || ft_checkpoint_check_space(dir, state->global_step, total_bytes, largest_file_bytes) < 0)
        return ft_error_context("saving the checkpoint at step %lld", (long long)state->global_step);
    ft_checkpoint_writer *w = ft_xcalloc(1, sizeof *w);
    *w = (ft_checkpoint_writer){ft_xstrdup(dir), checkpoint_path(dir, state->global_step, ".tmp"),
                                checkpoint_path(dir, state->global_step, ""), tensors, count, *state};
    if (ft_remove_tree(w->temporary) < 0 || ft_mkdir_p(w->temporary) < 0) {
        failed(w);
        ft_checkpoint_abandon(w);
        return -1;
    }
    *out = w;
    return 0;
}

/* One of the folder's two tensor files. */
static int write_file(ft_checkpoint_writer *w, const char *name, ft_backend *backend, const state_place *place,
                      bool moments)
{
    char *path = ft_path_join(w->temporary, name);
    int status = write_tensors(path, backend, w->tensors, w->count, place, moments);
    free(path);
    return status < 0 ? failed(w) : 0;
}

int ft_checkpoint_write_values(ft_checkpoint_writer *w, ft_backend *backend)
{
    state_place place = {0};
    return write_file(w, "model.safetensors", backend, &place, false);
}

int ft_checkpoint_write_moments(ft_checkpoint_writer *w, ft_backend *backend, const ft_adamw *optimizer,
                                const float *host_moments)
{
    state_place place = {optimizer, (float *)host_moments, NULL, NULL}; /* only read */
    return write_file(w, "optimizer.safetensors", backend, &place, true);
}

int ft_checkpoint_write_values_from(ft_checkpoint_writer *w, ft_checkpoint_source source, void *context)
{
    state_place place = {NULL, NULL, source, context};
    return write_file(w, "model.safetensors", NULL, &place, false);
}

int ft_checkpoint_write_moments_from(ft_checkpoint_writer *w, ft_checkpoint_source source, void *context)
{
    state_place place = {NULL, NULL, source, context};
    return write_file(w, "optimizer.safetensors", NULL, &place, true);
}

int ft_checkpoint_finish(ft_checkpoint_writer *w, int keep_newest)
{
    int status = write_state(w->temporary, &w->state);
    if (status == 0)
        status = ft_fsync_dir(w->temporary);
    if (status == 0)
        status = ft_remove_tree(w->final); /* the same step saved again after a resume */
    if (status == 0 && rename(w->temporary, w->final) != 0)
        status = ft_error_errno("cannot rename %s to %s", w->temporary, w->final);
    if (status == 0)
        status = ft_fsync_dir(w->dir);
    if (status == 0)
        status = prune(w->dir, keep_newest);
    if (status != 0)
        failed(w);
    ft_checkpoint_abandon(w); /* the folder aside is gone once renamed */
    return status;
}

/* The steps in one go, for one rank's state. */
static int save(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                const ft_adamw *optimizer, const float *host_moments, const ft_checkpoint_state *state,
                int keep_newest)
{
    ft_checkpoint_writer *w;
    if (ft_checkpoint_begin(dir, tensors, count, state, &w) < 0)
        return -1;
    if (ft_checkpoint_write_values(w, backend) < 0 ||
        ft_checkpoint_write_moments(w, backend, optimizer, host_moments) < 0) {
        ft_checkpoint_abandon(w);
        return -1;
    }
    return ft_checkpoint_finish(w, keep_newest);
}

int ft_checkpoint_save(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                       const ft_adamw *optimizer, const ft_checkpoint_state *state, int keep_newest)
{
    return save(dir, backend, tensors, count, optimizer, NULL, state, keep_newest);
}

int ft_checkpoint_save_host_moments(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                                    const float *moments, const ft_checkpoint_state *state, int keep_newest)
{
    return save(dir, backend, tensors, count, NULL, moments, state, keep_newest);
}

/* --- loading --- */

static int read_state(const char *folder, const char *run_id, ft_checkpoint_state *out)
{
    char *path = ft_path_join(folder, "trainer_state.json");
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    int status = 0;
    const char *format = NULL, *stored_run = NULL;
    json_int_t version = 0, step = 0, epoch = 0, epoch_row = 0, log_steps = 0;
    memset(out, 0, sizeof *out);
    if (!root)
        status = ft_error("%s:%d: %s", path, error.line, error.text);
    else if (json_unpack(root, "{ss sI sI sI sI sF sF sI ss}", "format", &format, "version", &version,
                         "global_step", &step, "epoch", &epoch, "epoch_row", &epoch_row, "loss_sum",
                         &out->loss_sum, "log_loss_sum", &out->log_loss_sum, "log_steps", &log_steps, "run_id",
                         &stored_run) != 0 ||
             strcmp(format, STATE_FORMAT) != 0 || version != STATE_VERSION || step < 0 || epoch < 0 ||
             epoch_row < 0 || log_steps < 0)
        status = ft_error("%s is not a checkpoint state this ftpipe reads; delete %s to start over", path, folder);
    else if (strcmp(stored_run, run_id) != 0)
        status = ft_error("%s belongs to another run (%s, this one is %s); delete %s to start over", folder,
                          stored_run, run_id, folder);
    if (status == 0) {
        out->global_step = step;
        out->epoch = epoch;
        out->epoch_row = epoch_row;
        out->log_steps = log_steps;
        snprintf(out->run_id, sizeof out->run_id, "%s", stored_run);
    }
    json_decref(root);
    free(path);
    return status;
}

/* The values of the tensor named name + suffix in set, with the shape of t; NULL with ft_error. */
static const float *map_tensor(const ft_safetensors *set, const char *file, const ft_param_tensor *t,
                               const char *suffix)
{
    char *name = ft_xasprintf("%s%s", t->name, suffix);
    const ft_tensor_view *view = ft_safetensors_find(set, name);
    bool same_shape = view && view->dtype == FT_DTYPE_F32 && view->n_dims == t->n_dims &&
                      view->shape[0] == t->shape[0] && (t->n_dims < 2 || view->shape[1] == t->shape[1]);
    if (!view)
        ft_error_context("the checkpoint does not match this run");
    else if (!same_shape)
        ft_error("%s: tensor %s is not F32 of the trained shape; the checkpoint does not match this run", file,
                 name);
    free(name);
    return same_shape ? view->data : NULL;
}

/* path opened into *set, holding per_tensor tensors for each of the `count` trained. */
static int open_file(const char *path, size_t count, size_t per_tensor, ft_safetensors **set)
{
    int status = ft_safetensors_open(path, set);
    if (status == 0 && ft_safetensors_count(*set) != per_tensor * count)
        status = ft_error("%s holds %zu tensors, this run trains %zu; the checkpoint does not match this run", path,
                          ft_safetensors_count(*set), per_tensor * count);
    return status;
}

void ft_checkpoint_unmap(ft_checkpoint_mapped *mapped)
{
    free(mapped->values);
    free(mapped->exp_avg);
    free(mapped->exp_avg_sq);
    ft_safetensors_close(mapped->files[0]);
    ft_safetensors_close(mapped->files[1]);
    memset(mapped, 0, sizeof *mapped);
}

int ft_checkpoint_map_latest(const char *dir, const ft_param_tensor *tensors, size_t count, const char *run_id,
                             ft_checkpoint_state *state, ft_checkpoint_mapped *out)
{
    memset(out, 0, sizeof *out);
    int64_t *steps;
    size_t n_steps;
    if (list_checkpoints(dir, true, &steps, &n_steps) < 0)
        return -1;
    if (n_steps == 0) {
        free(steps);
        return 0;
    }
    char *folder = checkpoint_path(dir, steps[n_steps - 1], "");
    free(steps);
    char *model = ft_path_join(folder, "model.safetensors"), *optimizer = ft_path_join(folder, "optimizer.safetensors");
    out->values = ft_xcalloc(count ? count : 1, sizeof *out->values);
    out->exp_avg = ft_xcalloc(count ? count : 1, sizeof *out->exp_avg);
    out->exp_avg_sq = ft_xcalloc(count ? count : 1, sizeof *out->exp_avg_sq);
    int status = read_state(folder, run_id, state);
    if (status == 0)
        status = open_file(model, count, 1, &out->files[0]);
    if (status == 0)
        status = open_file(optimizer, count, 2, &out->files[1]);
    for (size_t i = 0; i < count && status == 0; i++)
        if (!(out->values[i] = map_tensor(out->files[0], model, &tensors[i], "")) ||
            !(out->exp_avg[i] = map_tensor(out->files[1], optimizer, &tensors[i], moment_suffixes[0])) ||
            !(out->exp_avg_sq[i] = map_tensor(out->files[1], optimizer, &tensors[i], moment_suffixes[1])))
            status = -1;
    if (status < 0)
        ft_checkpoint_unmap(out);
    free(model);
    free(optimizer);
    free(folder);
    return status == 0 ? 1 : -1;
}

/* The newest checkpoint copied into the tensors and the place's moments. */
static int load_latest(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                       const state_place *place, const char *run_id, ft_checkpoint_state *out)
{
    ft_checkpoint_mapped mapped;
    int found = ft_checkpoint_map_latest(dir, tensors, count, run_id, out, &mapped);
    if (found != 1)
        return found;
    for (size_t i = 0; i < count; i++) {
        float *moments[2];
        bool on_host;
        moments_of(place, tensors, count, i, &moments[0], &moments[1], &on_host);
        const float *sources[3] = {mapped.values[i], mapped.exp_avg[i], mapped.exp_avg_sq[i]};
        float *destinations[3] = {tensors[i].value, moments[0], moments[1]};
        for (int part = 0; part < 3; part++) {
            size_t bytes = tensors[i].count * sizeof(float);
            if (part > 0 && on_host)
                memcpy(destinations[part], sources[part], bytes);
            else
                backend->upload(backend, destinations[part], sources[part], bytes);
        }
    }
    ft_checkpoint_unmap(&mapped);
    return 1;
}

int ft_checkpoint_load_latest(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                              ft_adamw *optimizer, const char *run_id, ft_checkpoint_state *out)
{
    state_place place = {optimizer, NULL, NULL, NULL};
    int found = load_latest(dir, backend, tensors, count, &place, run_id, out);
    if (found == 1)
        ft_adamw_set_step_count(optimizer, out->global_step);
    return found;
}

int ft_checkpoint_load_latest_host_moments(const char *dir, ft_backend *backend, const ft_param_tensor *tensors,
                                           size_t count, float *moments, const char *run_id,
                                           ft_checkpoint_state *out)
{
    state_place place = {NULL, moments, NULL, NULL};
    return load_latest(dir, backend, tensors, count, &place, run_id, out);
}
