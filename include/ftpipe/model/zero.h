/* zero: ZeRO sharding of the trained tensors over the ranks of one job, as
 * DeepSpeed's stages 1, 2 and 3 do it: each rank keeps AdamW's moments for its
 * shard only, updates its shard, and the ranks all-gather the updated values
 * (stage 3 of full fine-tuning: the updated shard is the weights' shard,
 * param_shards.h, gathered by the next pass instead).
 *
 * The trained tensors are cut into spans, runs of tensors of one decoder
 * layer (or of none) whose values and gradients both lie back to back: a
 * layer's LoRA adapters (one allocation), a layer's weights, the embeddings.
 * Every span is split evenly: rank r owns elements [r x per, (r + 1) x per)
 * with per = count / ranks; the last count - ranks x per elements (fewer than
 * the ranks) are updated by every rank alike, which is cheaper than sending
 * them. AdamW is elementwise, so a shard's update is the whole update's, bit
 * for bit.
 *
 * Stage 1: the gradients are all-reduced whole (data_parallel.h), and the
 * gradient norm is the whole one's, so the result is stage 0's bit for bit.
 * Stage 2: each span's gradients are reduce-scattered instead (a rank gets
 * the sum of its shard only; the host collectives add in rank order, so those
 * sums are stage 0's), and the norm adds the shards' sums of squares over the
 * ranks: the same number up to the order of a sum in double, which can move
 * the clipped update by a last bit. Full fine-tuning's weights go further at
 * stages 2 and 3: their gradients are never whole (grad_shards.h, which
 * reduce-scatters each unit during backward and sums the micro-batches in the
 * shard, a different order of the same additions), and their spans are its
 * units. Stage 3 reduces and clips as stage 2; the units' values are the
 * sharded weights (param_shards.h). LoRA's adapter at stage 3 keeps only each
 * rank's part of its layers' values (adapter_shards.h), which are its spans'
 * own split; its gradients stay whole during backward, its spans reduced as in
 * stage 2.
 *
 * Checkpoints hold whole moments (checkpoint.h), so that a run resumes with
 * another rank count or stage: they are gathered span by span as the writing
 * rank writes them (ft_zero_moments), and on resume a rank takes its shard of
 * them from the mapped files. */
#ifndef FTPIPE_ZERO_H
#define FTPIPE_ZERO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/backend/comm.h"
#include "ftpipe/model/adamw.h"
#include "ftpipe/model/adapter_shards.h"
#include "ftpipe/model/grad_shards.h"
#include "ftpipe/model/param_shards.h"
#include "ftpipe/model/update_gate.h"

typedef struct ft_zero ft_zero;

/* Shards the tensors (which must outlive it) over comm's ranks for stage 1, 2
 * or 3, with zeroed moments for this rank's shard (offloaded: in host memory,
 * adamw.h). The tensors' values are f32, as every trained tensor is today
 * (LoRA on either backend, full fine-tuning on cpu): they are gathered as such.
 * grad_shards: at stage 2 or 3, the sharded gradients of the model's weights
 * when the tensors begin with them (full fine-tuning; a trained projector's
 * follow, whole), else NULL. params: stage 3's sharded weights when the
 * tensors are those weights, else NULL; with a float master copy its shard is
 * what is updated (in place in host memory when offload_optimizer put it
 * there). adapter: stage 3's parts of a LoRA adapter (adapter_shards.h), whose
 * layers' spans update them in place and gather nothing, else NULL. */
int ft_zero_create(ft_backend *backend, ft_comm *comm, int stage, ft_param_shards *params,
                   ft_grad_shards *grad_shards, ft_adapter_shards *adapter, const ft_param_tensor *tensors,
                   size_t count, const ft_adamw_config *config, bool offload, ft_zero **out);
void ft_zero_free(ft_zero *zero);

/* After backward, stage 2: each rank's shard of the gradients held whole
 * becomes its sum over the ranks (stage 1's were all-reduced already, the
 * sharded ones reduce-scattered during backward). -1 with ft_error. */
int ft_zero_reduce_gradients(ft_zero *zero);

/* The global 2-norm of the summed gradients; when max_norm > 0 and the norm
 * exceeds it, this rank's shard is scaled as ft_adamw_clip_grad_norm scales. */
int ft_zero_clip_grad_norm(ft_zero *zero, double max_norm, double *norm);

/* AdamW on this rank's shard, then every rank's values become the updated ones.
 * At stage 3 of full fine-tuning with offload_optimizer (the master shard, if
 * any, in host memory) the update runs on a thread of the zero's own, unit by
 * unit in forward order, and this returns at once: the next pass gathers each
 * unit as soon as it is updated (param_shards.h), so AdamW on the host's cores
 * overlaps the GPU's next work; at stages 1 and 2 after
 * ft_zero_update_beside_passes likewise, layer by layer (update_gate.h). The
 * same bits as updating all at once. */
int ft_zero_step(ft_zero *zero, double learning_rate);
/* Returns once the step's update is done (at once when none runs). The zero's
 * own readers (the norm, the moments, a resume) wait by themselves. */
void ft_zero_wait(ft_zero *zero);

/* This rank's optimizer: its moments are the shard's (for the memory counters). */
const ft_adamw *ft_zero_shard_optimizer(const ft_zero *zero);

/* ZeRO-1 and 2 with offload_optimizer: from now on each step's update runs
 * beside the next pass of `model` (update_gate.h), a layer at a time, each
 * layer's spans updated on the host on the gate's thread and all-gathered
 * over the ranks on the pass's when it first reaches the layer; *gate (the
 * zero's, freed with it) for the trainer's waits. Otherwise nothing (*gate
 * NULL). -1 with ft_error. */
int ft_zero_update_beside_passes(ft_zero *zero, ft_model *model, ft_update_gate **gate);

/* The moments read for a checkpoint, span by span, in the order its file
 * asks for them (checkpoint.h's ft_checkpoint_order): every rank opens a
 * reader and reads the same tensors in the same order; the span holding a
 * tensor is all-gathered (both moments) when it is not the one gathered last,
 * into the host memory of the rank that keeps them (keep: it writes the
 * checkpoint) and nowhere else. So the writing rank holds one span's moments
 * at a time (a layer's, the embeddings', the final norm's with an untied
 * head; that last span comes first and last in a file's order, by name, and
 * is gathered twice), the others nothing, and the backend stages at most
 * ranks x 4 MiB. read puts tensor i's exp_avg (half 0) or exp_avg_sq (1) into `to`
 * (NULL on a rank that keeps nothing). -1 with ft_error. */
typedef struct ft_zero_moments ft_zero_moments;
int ft_zero_moments_open(ft_zero *zero, bool keep, ft_zero_moments **out);
int ft_zero_moments_read(ft_zero_moments *moments, size_t tensor, int half, float *to);
void ft_zero_moments_close(ft_zero_moments *moments);

/* This rank's shard of the moments, and the step count, after a resume:
 * tensor i's exp_avg and exp_avg_sq at exp_avg[i] and exp_avg_sq[i] (a mapped
 * checkpoint's, checkpoint.h), read in place. */
void ft_zero_take_moments(ft_zero *zero, const float *const *exp_avg, const float *const *exp_avg_sq, int64_t steps);

#endif
