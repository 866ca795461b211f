/* train_memory: the peak memory of a training run before it starts, for
 * `ftpipe estimate` and the check before a train stage runs.
 *
 * The model's memory plan (weights, adapter, gradients, optimizer, activations)
 * is allocated once; on top of it come the host buffers of the phases that
 * allocate: loading (one tensor converted at a time), saving a checkpoint (one
 * tensor at a time through the file writer's buffer; with ZeRO the writing
 * rank also holds the span of moments, or ZeRO-3's unit of values, gathered
 * last) and writing the result. The peak is the largest phase. */
#ifndef FTPIPE_TRAIN_MEMORY_H
#define FTPIPE_TRAIN_MEMORY_H

#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/formats/model_config.h"
#include "ftpipe/model/model.h"

/* What the program itself holds besides the plan on the cpu backend: code,
 * libraries and buffers (4-5 MiB measured), and OpenBLAS's packing buffers, which
 * grow with the matrices up to 16 MiB per thread (measured; counted as 8 MiB per
 * thread beyond the first). */
#define FT_TRAIN_RUNTIME_BYTES ((uint64_t)8 << 20)
#define FT_TRAIN_BLAS_THREAD_BYTES ((uint64_t)8 << 20)

typedef struct {
    ft_memory_plan plan;            /* in the backend's memory (on cuda with its scratch) */
    uint64_t load_buffer_bytes;     /* host, while loading */
    uint64_t checkpoint_buffer_bytes; /* host, while saving a checkpoint */
    uint64_t result_buffer_bytes;   /* host, while writing the adapter or model */
    uint64_t runtime_bytes;         /* host: FT_TRAIN_RUNTIME_BYTES and the BLAS threads' */
    uint64_t result_shard_bytes;    /* host, while writing the result: ZeRO-3's offloaded shards (the weights',
                                       the master copy's), freed once the result is written */
    uint64_t offload_bytes;         /* host, while training: offloaded AdamW state (and with offload_param the
                                       weights' shard) beside the plan (0: none) */
    uint64_t host_peak_bytes;       /* the largest phase, in host memory, of the rank that writes (a node's
                                       first: checkpoints and the result) */
    uint64_t other_rank_host_peak_bytes; /* host, of every other rank: loading or training (a checkpoint's
                                            gathers keep nothing there) */
    uint64_t device_peak_bytes;     /* on the cuda backend: the plan, the backend's scratch included
                                       (plan.scratch_bytes, cuda_scratch.h); 0 on the cpu backend */
    const char *peak_phase;         /* "loading", "training", "saving a checkpoint", "writing the result" */
    uint64_t weight_gradient_bytes; /* full fine-tuning: the weights' float gradients in the plan, whole until
                                       ft_train_memory_shard_gradients (0: no weight trained) */
    uint64_t adapter_layer_bytes;   /* LoRA: a decoder layer's adapter values in f32, which ZeRO-3 shards (0:
                                       none, or a projector's adapters keep the adapter whole) */
    uint64_t trained_bytes;         /* every trained value in f32 */
    uint64_t largest_trained_bytes; /* the largest trained tensor in f32 (LoRA: the whole adapter) */
} ft_train_memory;

/* on_gpu: the plan lives on a device in bf16 and the host holds the buffers only;
 * otherwise everything is host memory in f32. blas_threads: the cpu backend's.
 * save_dtype: the dtype a full fine-tune is written in. The estimate is
 * stage 0's (options.gradient_shards aside): ft_train_memory_apply_zero
 * applies ZeRO. */
int ft_train_memory_estimate(const ft_model_config *config, const ft_model_options *options, bool on_gpu,
                             int blas_threads, ft_dtype save_dtype, ft_train_memory *out);

/* The host memory of a machine running ranks_per_node ranks: the first
 * rank's peak and every other rank's. */
uint64_t ft_train_memory_node_host_bytes(const ft_train_memory *memory, int ranks_per_node);

/* ZeRO over `ranks` (zero.h): the plan holds one rank's share of AdamW's
 * moments; the writing rank gathers a checkpoint's moments span by span, a
 * layer's, the embeddings' or the final unit's at a time. The peaks are one
 * rank's. */
void ft_train_memory_shard(ft_train_memory *memory, const ft_model_config *config, bool on_gpu, int ranks);

/* ZeRO stage 2 or 3 of full fine-tuning over `ranks` (grad_shards.h): the
 * weights' float gradients are this rank's shard of them and the windows a
 * pass writes into (ft_model_weight_gradient_bytes). Nothing changes
 * without trained weights (LoRA's gradients stay whole). */
void ft_train_memory_shard_gradients(ft_train_memory *memory, const ft_model_config *config, bool on_gpu, int ranks);

/* offload_optimizer = cpu (after any ft_train_memory_shard): AdamW's moments
 * leave the plan for host memory, with an f32 master copy of the values and
 * the downloaded gradients beside them, 16 bytes per (sharded) trained
 * parameter in all; on the cpu backend the moments stay where they were
 * counted and the other 8 bytes are added. */
void ft_train_memory_offload(ft_train_memory *memory, bool on_gpu);
/* offload_optimizer at ZeRO-2 and 3 of full fine-tuning over `ranks`, after
 * the two above: the gradients' shard is host memory, AdamW's input itself
 * (grad_shards.h). On a GPU it leaves the plan for host memory, where it takes
 * the place of the gradients' host buffer; the backend adds a staging buffer
 * of the largest unit's part beside the windows (two, also for one rank).
 * Nothing for LoRA, or beside a
 * trained projector's gradients. */
void ft_train_memory_offload_gradients(ft_train_memory *memory, const ft_model_config *config, bool on_gpu,
                                       int ranks);

/* ZeRO-3 over `ranks` (param_shards.h), after ft_train_memory_shard: the plan
 * holds one rank's 1 / ranks of the weights (loaded so from the files) and the
 * two buffers the passes gather units into (each the largest unit's size: the
 * embeddings or a layer); a vision-language model's tower stays whole beside
 * them (vision_memory.h). offload_param moves the shard to host memory (on the
 * cpu backend it is there already) and adds a staging buffer of the largest
 * unit's share. Full fine-tuning's checkpoints and result gather the whole
 * weights into host memory through those buffers, in the host buffers counted
 * already (the trained values' copy). LoRA's adapter over ranks keeps each
 * rank's part of every layer's values and two gathered layers
 * (adapter_shards.h); its checkpoints and result gather it into the host
 * buffers counted already. */
void ft_train_memory_shard_params(ft_train_memory *memory, const ft_model_config *config, bool on_gpu, int ranks,
                                  bool offload_param);

/* The sharding a stage asks for: ZeRO stage 1 to 3 over
 * `ranks`, then each offload (stage 0 or one rank: nothing changes). */
void ft_train_memory_apply_zero(ft_train_memory *memory, const ft_model_config *config, bool on_gpu, int ranks,
                                int zero_stage, bool offload_optimizer, bool offload_param);

#endif
