/* checkpoint: a training run's state on disk, so that an interrupted run goes on
 * from where it stopped and ends with the same bytes as one that never stopped.
 *
 * A checkpoint is a folder checkpoint-N (N: optimizer steps done) holding
 *   model.safetensors      the trained tensors, f32, by their names
 *   optimizer.safetensors  AdamW's moments: NAME.exp_avg and NAME.exp_avg_sq
 *   trainer_state.json     the step, the data position, the loss sums, the run id
 * Random draws derive from the seed and these counters, so they are all the
 * random state there is. It is written to checkpoint-N.tmp, fsynced, and renamed;
 * a *.tmp folder is an interrupted write and is deleted when found. */
#ifndef FTPIPE_CHECKPOINT_H
#define FTPIPE_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/backend.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/adamw.h"

typedef struct {
    int64_t global_step;     /* optimizer steps done */
    int64_t epoch;           /* the epoch the next step reads from (0-based) */
    int64_t epoch_row;       /* rows of that epoch's permutation already trained on */
    double loss_sum;         /* sum of every step's loss (train_loss = loss_sum / global_step) */
    double log_loss_sum;     /* sum of the losses since the last log line */
    int64_t log_steps;       /* steps since the last log line */
    char run_id[33];         /* what the run is (a stage key): a checkpoint of another run is refused */
} ft_checkpoint_state;

/* The bytes a checkpoint of these tensors writes in all, and its largest file. */
void ft_checkpoint_size(const ft_param_tensor *tensors, size_t count, uint64_t *total_bytes,
                        uint64_t *largest_file_bytes);

/* Refuses, with the numbers and what to do, when the checkpoint at `step` would
 * not fit in the free space of dir's file system or would write a file larger
 * than the process may (RLIMIT_FSIZE). */
int ft_checkpoint_check_space(const char *dir, int64_t step, uint64_t total_bytes, uint64_t largest_file_bytes);

/* Writes dir/checkpoint-<global_step> (after the space check), then deletes all
 * but the newest keep_newest checkpoints (0: keeps all). The tensors and moments
 * are read from the backend's memory. */
int ft_checkpoint_save(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                       const ft_adamw *optimizer, const ft_checkpoint_state *state, int keep_newest);

/* Offload's form (adamw.h), the same files: AdamW's moments as one host array
 * of every tensor's exp_avg in tensor order, then every exp_avg_sq. */
int ft_checkpoint_save_host_moments(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                                    const float *moments, const ft_checkpoint_state *state, int keep_newest);

/* The same checkpoint written in steps, for ZeRO's ranks (zero.h): begin (the
 * space check, the folder aside), the values (in the backend's memory), the
 * moments (an optimizer's, or the host form above), then finish (the state,
 * fsync, rename, pruning to keep_newest), which frees the writer. abandon
 * removes what was written and frees it. Each -1 with ft_error. Either file
 * is written a tensor at a time: the host holds one tensor beside the state. */
typedef struct ft_checkpoint_writer ft_checkpoint_writer;
int ft_checkpoint_begin(const char *dir, const ft_param_tensor *tensors, size_t count,
                        const ft_checkpoint_state *state, ft_checkpoint_writer **out);
int ft_checkpoint_write_values(ft_checkpoint_writer *writer, ft_backend *backend);
int ft_checkpoint_write_moments(ft_checkpoint_writer *writer, ft_backend *backend, const ft_adamw *optimizer,
                                const float *host_moments);

/* The values or the moments made by a source, tensor by tensor, for ZeRO's
 * sharded state: source(context, i, part, to) puts tensor i's values (part
 * 0), or its exp_avg (0) or exp_avg_sq (1), into `to` (host, the tensor's
 * count floats), and returns 0, or -1 with ft_error, which stops the file. It
 * is asked in the file's order, ft_checkpoint_order's, so that the ranks that
 * write nothing can join the same gathers in the same order. */
typedef int (*ft_checkpoint_source)(void *context, size_t tensor, int part, float *to);
int ft_checkpoint_write_values_from(ft_checkpoint_writer *writer, ft_checkpoint_source source, void *context);
int ft_checkpoint_write_moments_from(ft_checkpoint_writer *writer, ft_checkpoint_source source, void *context);
/* A test hook, never called by the program: the checkpoint files written from
 * now on fail once this many tensors have been made for them, over all files
 * (0: never), as a full disk would mid-file. */
void ft_checkpoint_test_fail_after(size_t tensors);

/* That order for the values (moments false) or the moments: order[k] =
 * tensor x parts + part (parts: 1 or 2); a tensor without elements is never
 * asked for. Returns how many are (at most count x parts). */
size_t ft_checkpoint_order(const ft_param_tensor *tensors, size_t count, bool moments, size_t *order);
int ft_checkpoint_finish(ft_checkpoint_writer *writer, int keep_newest);
void ft_checkpoint_abandon(ft_checkpoint_writer *writer);
int ft_checkpoint_load_latest_host_moments(const char *dir, ft_backend *backend, const ft_param_tensor *tensors,
                                           size_t count, float *moments, const char *run_id,
                                           ft_checkpoint_state *out);

/* The newest checkpoint read in place (after ft_checkpoint_load_latest's
 * checks): each trained tensor's values and AdamW moments as pointers into the
 * mapped files, from which ZeRO's ranks take their shards without holding the
 * whole state. 1 when one was mapped, 0 when dir holds none, -1 with
 * ft_error; ft_checkpoint_unmap frees what it holds in every case. */
typedef struct {
    const float **values, **exp_avg, **exp_avg_sq; /* [count] */
    ft_safetensors *files[2];
} ft_checkpoint_mapped;
int ft_checkpoint_map_latest(const char *dir, const ft_param_tensor *tensors, size_t count, const char *run_id,
                             ft_checkpoint_state *state, ft_checkpoint_mapped *out);
void ft_checkpoint_unmap(ft_checkpoint_mapped *mapped);

/* Deletes *.tmp leftovers in dir, then loads the newest checkpoint into the
 * tensors and the optimizer (whose step count becomes global_step). 1 when one
 * was loaded, 0 when dir holds none, -1 with ft_error when it is unreadable,
 * belongs to another run (run_id), or its tensors' names or shapes differ. */
int ft_checkpoint_load_latest(const char *dir, ft_backend *backend, const ft_param_tensor *tensors, size_t count,
                              ft_adamw *optimizer, const char *run_id, ft_checkpoint_state *out);

#endif
