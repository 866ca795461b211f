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

/* AdamW's moments: an optimizer's, in the backend's memory, or a host array
 * (exp_avg of every tensor, then exp_avg_sq of every tensor). */
typedef struct {
    const ft_adamw *optimizer;
    float *host;
} moments_place;

/* Tensor i's two moments in the place; *on_host says which memory they are in. */
static void moments_of(const moments_place *place, const ft_param_tensor *tensors, size_t count, size_t i,
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

/* Writes the tensors (place NULL) or AdamW's moments, downloaded to host unless there. */
static int write_tensors(const char *path, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                         const moments_place *place)
{
    int n_parts = place ? 2 : 1;
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
        total += tensors[i].count;
    float *host = place && place->host ? NULL : malloc((size_t)n_parts * (total ? total : 1) * sizeof(float));
    if (!host && !(place && place->host))
        return ft_error("out of memory holding a checkpoint of %zu floats", (size_t)n_parts * total);
    ft_tensor_to_write *out = ft_xcalloc((size_t)n_parts * (count ? count : 1), sizeof *out);
    char **names = ft_xcalloc((size_t)n_parts * (count ? count : 1), sizeof *names);
    size_t offset = 0, n = 0;
    for (size_t i = 0; i < count; i++) {
        const ft_param_tensor *t = &tensors[i];
        float *sources[2] = {t->value, NULL};
        bool on_host = false;
        if (place)
            moments_of(place, tensors, count, i, &sources[0], &sources[1], &on_host);
        for (int part = 0; part < n_parts; part++, n++) {
            const float *data = sources[part];
            if (!on_host) {
                backend->download(backend, host + offset, sources[part], t->count * sizeof(float));
                data = host + offset;
            }
            names[n] = place ? ft_xasprintf("%s%s", t->name, moment_suffixes[part]) : ft_xstrdup(t->name);
            out[n] = (ft_tensor_to_write){names[n], FT_DTYPE_F32, t->n_dims, {t->shape[0], t->shape[1]}, data};
            offset += t->count;
        }
    }
    int status = ft_safetensors_write(path, out, n, NULL, NULL, 0);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(out);
    free(host);
    return status;
}

static int save(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                const moments_place *place, const ft_checkpoint_state *state, int keep_newest)
{
    uint64_t total_bytes, largest_file_bytes;
    ft_checkpoint_size(tensors, count, &total_bytes, &largest_file_bytes);
    if (ft_mkdir_p(dir) < 0 || ft_checkpoint_check_space(dir, state->global_step, total_bytes, largest_file_bytes) < 0)
        return -1;
    char *temporary = checkpoint_path(dir, state->global_step, ".tmp");
    char *final = checkpoint_path(dir, state->global_step, "");
    char *model_path = ft_path_join(temporary, "model.safetensors");
    char *optimizer_path = ft_path_join(temporary, "optimizer.safetensors");
    int status = ft_remove_tree(temporary);
    if (status == 0)
        status = ft_mkdir_p(temporary);
    if (status == 0)
        status = write_tensors(model_path, backend, tensors, count, NULL);
    if (status == 0)
        status = write_tensors(optimizer_path, backend, tensors, count, place);
    if (status == 0)
        status = write_state(temporary, state);
    if (status == 0)
        status = ft_fsync_dir(temporary);
    if (status == 0)
        status = ft_remove_tree(final); /* the same step saved again after a resume */
    if (status == 0 && rename(temporary, final) != 0)
        status = ft_error_errno("cannot rename %s to %s", temporary, final);
    if (status == 0)
        status = ft_fsync_dir(dir);
    if (status == 0)
        status = prune(dir, keep_newest);
    if (status != 0)
        ft_error_context("saving the checkpoint at step %lld", (long long)state->global_step);
    free(model_path);
    free(optimizer_path);
    free(temporary);
    free(final);
    return status;
}

int ft_checkpoint_save(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                       const ft_adamw *optimizer, const ft_checkpoint_state *state, int keep_newest)
{
    moments_place place = {optimizer, NULL};
    return save(dir, backend, tensors, count, &place, state, keep_newest);
}

int ft_checkpoint_save_host_moments(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                                    const float *moments, const ft_checkpoint_state *state, int keep_newest)
{
    moments_place place = {NULL, (float *)moments}; /* only read */
    return save(dir, backend, tensors, count, &place, state, keep_newest);
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

/* The tensor named name + suffix in set, with the shape of t, into the backend at destination. */
static int load_tensor(const ft_safetensors *set, const char *file, ft_backend *backend, const ft_param_tensor *t,
                       const char *suffix, float *destination, bool on_host)
{
    char *name = ft_xasprintf("%s%s", t->name, suffix);
    const ft_tensor_view *view = ft_safetensors_find(set, name);
    bool same_shape = view && view->dtype == FT_DTYPE_F32 && view->n_dims == t->n_dims &&
                      view->shape[0] == t->shape[0] && (t->n_dims < 2 || view->shape[1] == t->shape[1]);
    int status = 0;
    if (!view)
        status = ft_error_context("the checkpoint does not match this run");
    else if (!same_shape)
        status = ft_error("%s: tensor %s is not F32 of the trained shape; the checkpoint does not match this run",
                          file, name);
    else if (on_host)
        memcpy(destination, view->data, t->count * sizeof(float));
    else
        backend->upload(backend, destination, view->data, t->count * sizeof(float));
    free(name);
    return status;
}

static int load_file(const char *folder, const char *file_name, ft_backend *backend, const ft_param_tensor *tensors,
                     size_t count, const moments_place *place)
{
    char *path = ft_path_join(folder, file_name);
    ft_safetensors *set = NULL;
    int status = ft_safetensors_open(path, &set);
    size_t expected = place ? 2 * count : count;
    if (status == 0 && ft_safetensors_count(set) != expected)
        status = ft_error("%s holds %zu tensors, this run trains %zu; the checkpoint does not match this run", path,
                          ft_safetensors_count(set), expected);
    for (size_t i = 0; i < count && status == 0; i++) {
        if (!place) {
            status = load_tensor(set, path, backend, &tensors[i], "", tensors[i].value, false);
            continue;
        }
        float *moments[2];
        bool on_host;
        moments_of(place, tensors, count, i, &moments[0], &moments[1], &on_host);
        for (int part = 0; part < 2 && status == 0; part++)
            status = load_tensor(set, path, backend, &tensors[i], moment_suffixes[part], moments[part], on_host);
    }
    ft_safetensors_close(set);
    free(path);
    return status;
}

static int load_latest(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                       const moments_place *place, const char *run_id, ft_checkpoint_state *out)
{
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
    int status = read_state(folder, run_id, out);
    if (status == 0)
        status = load_file(folder, "model.safetensors", backend, tensors, count, NULL);
    if (status == 0)
        status = load_file(folder, "optimizer.safetensors", backend, tensors, count, place);
    free(folder);
    return status == 0 ? 1 : -1;
}

int ft_checkpoint_load_latest(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                              ft_adamw *optimizer, const char *run_id, ft_checkpoint_state *out)
{
    moments_place place = {optimizer, NULL};
    int found = load_latest(dir, backend, tensors, count, &place, run_id, out);
    if (found == 1)
        ft_adamw_set_step_count(optimizer, out->global_step);
    return found;
}

int ft_checkpoint_load_latest_host_moments(const char *dir, ft_backend *backend, const ft_param_tensor *tensors,
                                           size_t count, float *moments, const char *run_id,
                                           ft_checkpoint_state *out)
{
    moments_place place = {NULL, moments};
    return load_latest(dir, backend, tensors, count, &place, run_id, out);
}
