/* grad_shards: full fine-tuning's float gradients at ZeRO stages 2 and 3,
 * which no rank holds whole. The weights' gradients are cut into param_shards'
 * units (the embeddings, each decoder layer, the final norm with an untied
 * lm_head), and each rank keeps only its shard of them: the owned part of
 * every unit and the shared rest, the layout of a ZeRO-3 shard.
 *
 * A pass writes a unit's gradients into a window of the unit's size, zeroed
 * when the unit is first written; once the unit's backward is done
 * (ft_grad_shards_unit_done, after a layer's backward) the ranks
 * reduce-scatter the window into their shards, adding this micro-batch to the
 * sums of those before it. Over ranks, or with the shard in host memory,
 * there are two windows: the next unit is written into the other one, and on
 * a backend with a side queue (cuda) the reduce-scatter and the copies down
 * run there, beside that unit's backward; a window is written again once its
 * last reduce is done. Otherwise the one window serves the next unit. Embeddings
 * tied to lm_head take gradients at both ends of backward: the head's part is
 * reduce-scattered when the final norm's unit takes the window, and the
 * embeddings' part at the end (the sum is linear, so the two parts add up in
 * the shard). The device holds the shard and the windows of the largest unit
 * instead of 4 bytes a weight. With offload_optimizer (DeepSpeed's
 * ZeRO-Offload keeps them so) the shard is page-locked host memory, where
 * AdamW reads it: a unit's sums so far go up into a staging buffer of one
 * unit's part and into this rank's part of the window, the reduce-scatter lands
 * there in place, and the new sums come down; the device holds the windows and
 * the staging buffer.
 *
 * Every rank runs the same passes, so their reduce-scatters match; at stage 3
 * the ZeRO-3 gather thread is quieted first, so that the two never cross (on
 * cuda both issue to the side queue, in that order). */
#ifndef FTPIPE_GRAD_SHARDS_H
#define FTPIPE_GRAD_SHARDS_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/backend/comm.h"
#include "ftpipe/model/data_parallel.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/param_shards.h"

typedef struct ft_grad_shards ft_grad_shards;

/* The model's gradients sharded over comm's ranks, the model loaded with
 * gradient_shards = comm->size (so it allocated none); params: its ZeRO-3
 * shards, or NULL (stage 2); on_host: the shard in the backend's host memory.
 * The model's passes write through them until ft_grad_shards_free. -1 with
 * ft_error. */
int ft_grad_shards_create(ft_model *model, ft_comm *comm, ft_param_shards *params, bool on_host,
                          ft_grad_shards **out);
void ft_grad_shards_free(ft_grad_shards *grads);

/* The units (the same as the ZeRO-3 shards' over these ranks) and this rank's
 * shard of the gradients, summed over the ranks and the micro-batches since
 * the last ft_grad_shards_zero: every unit's owned then shared elements. */
const ft_param_unit *ft_grad_shards_units(const ft_grad_shards *grads, size_t *count);
float *ft_grad_shards_shard(const ft_grad_shards *grads);

/* For model_pass: where the gradient of the weight element at `offset` of the
 * whole layout goes (its unit's window, opened and zeroed if it is not). */
float *ft_grad_shards_window(ft_grad_shards *grads, size_t offset);
/* For model_pass: the unit holding `offset` has its gradients of this pass;
 * the window is reduce-scattered into the shards (nothing if that unit is not
 * the one open). */
void ft_grad_shards_unit_done(ft_grad_shards *grads, size_t offset);
/* The end of backward: the unit still open is reduce-scattered. -1 with
 * ft_error when a collective of the pass failed. */
int ft_grad_shards_finish(ft_grad_shards *grads);
/* The shard to zero, for the next step. */
void ft_grad_shards_zero(ft_grad_shards *grads);

/* The backend memory it holds: the shard (or the staging buffer) and the
 * window; the host memory: the shard when on_host. */
size_t ft_grad_shards_bytes(const ft_grad_shards *grads);
size_t ft_grad_shards_host_bytes(const ft_grad_shards *grads);
bool ft_grad_shards_on_host(const ft_grad_shards *grads);

/* The preflight (data_parallel.h's, for sharded gradients): every unit's
 * window, zeroed, reduce-scattered into the shards, which it leaves as they
 * are; the fastest of `repeats` rounds, waited for on the backend. bytes: the
 * units'; bus_bytes_per_s: NCCL's measure for a reduce-scatter, bytes x
 * (n - 1) / n per second. -1 with ft_error. */
int ft_grad_shards_time_reduce(ft_grad_shards *grads, int repeats, ft_all_reduce_timing *out);

#endif
