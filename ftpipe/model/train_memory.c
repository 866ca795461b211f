/* train_memory: the phases of a training run and the host memory each allocates
 * beside the model's plan (see model.c's allocate, checkpoint.c's write_tensors,
 * model_save.c's write_weights and lora.c's save). */
#include "ftpipe/model/train_memory.h"

#include <string.h>

#include "ftpipe/backend/cuda_scratch.h"
#include "ftpipe/base/dtype.h"
#include "ftpipe/model/vision_memory.h"

static uint64_t largest_weight_count(const ft_model_config *config)
{
    size_t count = 0;
    ft_param_tensor *weights = ft_model_weight_list(config, &count);
    uint64_t largest = 0;
    for (size_t i = 0; i < count; i++)
        if (weights[i].count > largest)
            largest = weights[i].count;
    ft_model_weight_list_free(weights, count);
    return largest;
}

/* The largest phase. */
static void find_peak(ft_train_memory *out, bool on_gpu)
{
    const ft_memory_plan *plan = &out->plan;
    uint64_t in_plan = on_gpu ? 0 : plan->total_bytes;
    uint64_t weights_and_gradients = on_gpu ? 0 : plan->parameter_bytes + plan->adapter_bytes + plan->gradient_bytes;
    uint64_t optimizer = on_gpu ? 0 : plan->optimizer_bytes;
    struct {
        const char *name;
        uint64_t bytes;
    } phases[] = {
        {"loading", weights_and_gradients + out->load_buffer_bytes},
        {"training", in_plan + out->offload_bytes},
        {"saving a checkpoint", in_plan + out->offload_bytes + out->checkpoint_buffer_bytes},
        /* AdamW is freed by then; ZeRO-3's offloaded shards still hold their host memory */
        {"writing the result", in_plan - optimizer + out->result_shard_bytes + out->result_buffer_bytes},
    };
    out->peak_phase = phases[0].name;
    uint64_t peak = phases[0].bytes;
    for (size_t i = 1; i < sizeof phases / sizeof phases[0]; i++)
        if (phases[i].bytes > peak) {
            peak = phases[i].bytes;
            out->peak_phase = phases[i].name;
        }
    out->host_peak_bytes = peak + out->runtime_bytes;
    /* a rank that writes nothing loads and trains, and joins the gathers of checkpoints keeping nothing */
    uint64_t other = phases[0].bytes > phases[1].bytes ? phases[0].bytes : phases[1].bytes;
    out->other_rank_host_peak_bytes = other + out->runtime_bytes;
    out->device_peak_bytes = on_gpu ? plan->total_bytes : 0;
}

uint64_t ft_train_memory_node_host_bytes(const ft_train_memory *memory, int ranks_per_node)
{
    uint64_t others = ranks_per_node > 1 ? (uint64_t)(ranks_per_node - 1) : 0;
    return memory->host_peak_bytes + others * memory->other_rank_host_peak_bytes;
}

int ft_train_memory_estimate(const ft_model_config *config, const ft_model_options *options, bool on_gpu,
                             int blas_threads, ft_dtype save_dtype, ft_train_memory *out)
{
    memset(out, 0, sizeof *out);
    ft_model_options whole = *options; /* stage 0's plan: apply_zero shards it */
    whole.gradient_shards = 0;
    whole.optimizer_shards = 0;
    whole.optimizer_offloaded = false;
    if (ft_model_plan_memory(config, &whole, on_gpu ? FT_DTYPE_BF16 : FT_DTYPE_F32, &out->plan) < 0)
        return -1;
    const ft_memory_plan *plan = &out->plan;
    bool full = options->finetuning == FT_FINETUNE_FULL;
    uint64_t trained_floats = (full ? plan->gradient_bytes : plan->adapter_bytes) / sizeof(float);
    if (full && !options->freeze_language_model)
        out->weight_gradient_bytes = ft_model_weight_gradient_bytes(config, 0);
    if (!full && options->use_lora && !(options->lora.targets & FT_LORA_PROJECTOR_TARGETS) &&
        config->num_hidden_layers > 0) /* what ZeRO-3 shards of the adapter (adapter_shards.h) */
        out->adapter_layer_bytes = plan->adapter_bytes / (uint64_t)config->num_hidden_layers;
    /* Loading: the weights and gradients are allocated; one tensor is read and
     * converted through floats (and bf16 for a GPU). */
    uint64_t largest = largest_weight_count(config);
    out->load_buffer_bytes = largest * (sizeof(float) + sizeof(float)) + (on_gpu ? largest * 2 : 0);
    /* A checkpoint writes the trained tensors, then both moments, one tensor
     * at a time through a host buffer (LoRA's counted as the whole adapter). */
    out->trained_bytes = trained_floats * sizeof(float);
    out->largest_trained_bytes = full ? largest * sizeof(float) : out->trained_bytes;
    out->checkpoint_buffer_bytes = out->largest_trained_bytes;
    /* The result: the adapter in floats, or the weights one at a time, in
     * floats and in save_dtype (model_save.c). */
    uint64_t converted_bytes = save_dtype == FT_DTYPE_F32 ? 0 : ft_dtype_size(save_dtype);
    out->result_buffer_bytes = full ? largest * (sizeof(float) + converted_bytes) : trained_floats * sizeof(float);
    out->runtime_bytes = FT_TRAIN_RUNTIME_BYTES;
    if (!on_gpu && blas_threads > 1)
        out->runtime_bytes += (uint64_t)(blas_threads - 1) * FT_TRAIN_BLAS_THREAD_BYTES;

    if (on_gpu) { /* the cuda backend's scratch comes beside the plan */
        ft_backend_limits limits;
        if (ft_model_backend_limits(config, options, FT_DTYPE_BF16, &limits) < 0)
            return -1;
        out->plan.scratch_bytes = ft_cuda_scratch_bytes(&limits);
        out->plan.total_bytes += out->plan.scratch_bytes;
    }
    find_peak(out, on_gpu);
    return 0;
}

void ft_train_memory_shard(ft_train_memory *memory, const ft_model_config *config, bool on_gpu, int ranks)
{
    if (ranks < 1)
        return;
    ft_memory_plan *plan = &memory->plan;
    uint64_t whole = plan->optimizer_bytes, share = (whole + (uint64_t)ranks - 1) / (uint64_t)ranks;
    plan->optimizer_bytes = share;
    plan->total_bytes -= whole - share;
    /* the writing rank gathers a span's moments at a time: a layer's, the
     * embeddings' or the final unit's (LoRA's counted as the whole adapter) */
    uint64_t span = memory->weight_gradient_bytes ? ft_model_config_largest_unit(config) * sizeof(float)
                                                  : memory->trained_bytes;
    memory->checkpoint_buffer_bytes = 2 * span + memory->largest_trained_bytes;
    find_peak(memory, on_gpu);
}

void ft_train_memory_shard_gradients(ft_train_memory *memory, const ft_model_config *config, bool on_gpu, int ranks)
{
    if (ranks < 1 || !memory->weight_gradient_bytes)
        return;
    uint64_t sharded = ft_model_weight_gradient_bytes(config, ranks);
    memory->plan.gradient_bytes = memory->plan.gradient_bytes - memory->weight_gradient_bytes + sharded;
    memory->plan.total_bytes = memory->plan.total_bytes - memory->weight_gradient_bytes + sharded;
    memory->weight_gradient_bytes = sharded;
    find_peak(memory, on_gpu);
}

void ft_train_memory_offload(ft_train_memory *memory, bool on_gpu)
{
    ft_memory_plan *plan = &memory->plan;
    uint64_t moments = plan->optimizer_bytes; /* 8 bytes a parameter; the master copy and gradients 8 more */
    if (on_gpu) {
        plan->total_bytes -= moments;
        plan->optimizer_bytes = 0;
        memory->offload_bytes += 2 * moments;
    } else {
        memory->offload_bytes += moments;
    }
    find_peak(memory, on_gpu);
}

void ft_train_memory_offload_gradients(ft_train_memory *memory, const ft_model_config *config, bool on_gpu,
                                       int ranks)
{
    if (ranks < 1 || !memory->weight_gradient_bytes || memory->plan.gradient_bytes != memory->weight_gradient_bytes)
        return; /* LoRA's, or a trained projector's beside the weights': they stay in the backend's memory */
    uint64_t windows = ft_model_gradient_window_bytes(config, ranks, false);
    uint64_t shard = memory->weight_gradient_bytes - windows;
    /* the staging buffer, and a second window for one rank's way down to host memory */
    uint64_t added = ft_model_gradient_staging_bytes(config, ranks) +
                     ft_model_gradient_window_bytes(config, ranks, true) - windows;
    ft_memory_plan *plan = &memory->plan;
    plan->gradient_bytes += added;
    plan->total_bytes += added;
    if (on_gpu) { /* the shard leaves the device, taking the place of AdamW's gradients' host buffer */
        plan->gradient_bytes -= shard;
        plan->total_bytes -= shard;
    } else { /* the shard was host memory already: the host buffer goes */
        memory->offload_bytes -= shard;
    }
    memory->weight_gradient_bytes = plan->gradient_bytes;
    find_peak(memory, on_gpu);
}

void ft_train_memory_shard_params(ft_train_memory *memory, const ft_model_config *config, bool on_gpu, int ranks,
                                  bool offload_param)
{
    if (ranks < 1)
        return;
    ft_memory_plan *plan = &memory->plan;
    uint64_t element = on_gpu ? 2 : sizeof(float);
    uint64_t tower = ft_vision_tower_weight_bytes(config, element); /* frozen and small: whole on every rank */
    uint64_t whole = plan->parameter_bytes - tower;
    uint64_t unit = ft_model_config_largest_unit(config) * element;
    uint64_t shard = (whole + (uint64_t)ranks - 1) / (uint64_t)ranks;
    /* offloaded: the owned part uploaded to be gathered; one rank uploads straight into the window */
    uint64_t staging = offload_param && ranks > 1 ? (unit + (uint64_t)ranks - 1) / (uint64_t)ranks : 0;
    uint64_t in_plan = ft_model_config_gathered_weight_bytes(config, element) + staging +
                       (offload_param && on_gpu ? 0 : shard);
    plan->total_bytes = plan->total_bytes - whole + in_plan;
    plan->parameter_bytes = in_plan;
    if (offload_param && on_gpu) {
        memory->offload_bytes += shard;
        memory->result_shard_bytes += shard;
    }
    if (memory->adapter_layer_bytes && ranks > 1) { /* LoRA: each layer's part, and the two layers gathered */
        uint64_t n = memory->adapter_layer_bytes / sizeof(float), r = (uint64_t)ranks;
        uint64_t held = ((uint64_t)config->num_hidden_layers * (n / r + n % r) + 2 * n) * sizeof(float);
        plan->total_bytes = plan->total_bytes - plan->adapter_bytes + held;
        plan->adapter_bytes = held;
    }
    if (memory->weight_gradient_bytes) /* full fine-tuning's result: the weights read a unit at a time */
        memory->result_buffer_bytes += ft_model_config_largest_unit(config) * sizeof(float);
    /* mixed precision: each rank keeps 1 / ranks of the float master copy */
    uint64_t master = plan->master_bytes, master_shard = (master + (uint64_t)ranks - 1) / (uint64_t)ranks;
    plan->total_bytes -= master - master_shard;
    plan->master_bytes = master_shard;
    find_peak(memory, on_gpu);
}

void ft_train_memory_apply_zero(ft_train_memory *memory, const ft_model_config *config, bool on_gpu, int ranks,
                                int zero_stage, bool offload_optimizer, bool offload_param)
{
    /* one rank shards nothing, unless ZeRO-3 streams the weights from host memory; it offloads AdamW at any stage */
    bool sharded = ranks > 1 ? zero_stage > 0 : zero_stage == 3 && offload_param;
    int shards = ranks > 1 ? ranks : 1;
    if (sharded) {
        ft_train_memory_shard(memory, config, on_gpu, shards);
        if (zero_stage >= 2)
            ft_train_memory_shard_gradients(memory, config, on_gpu, shards);
        if (zero_stage == 3)
            ft_train_memory_shard_params(memory, config, on_gpu, shards, offload_param);
    }
    if (offload_optimizer && (sharded || ranks <= 1))
        ft_train_memory_offload(memory, on_gpu);
    if (offload_optimizer && sharded && zero_stage >= 2)
        ft_train_memory_offload_gradients(memory, config, on_gpu, shards);
    if (sharded && zero_stage == 3 && offload_optimizer && on_gpu) { /* the master shard is AdamW's host copy itself */
        memory->result_shard_bytes += memory->plan.master_bytes; /* and lives until the result is gathered */
        memory->plan.total_bytes -= memory->plan.master_bytes;
        memory->plan.master_bytes = 0;
        find_peak(memory, on_gpu);
    }
}
