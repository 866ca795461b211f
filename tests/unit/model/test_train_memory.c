/* Tests of train_memory: the phases of a training run and which one is the peak;
 * for vision-language models (tiny-qwen2.5-vl, tiny-llava) the estimate's plan
 * is the loaded model's, tower included, and ZeRO-3 shards none of the tower.
 * (The figures against measured resident memory: tests/e2e/test_estimate.sh.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/backend/cuda_scratch.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/llava_init.h"
#include "ftpipe/model/model_init.h"
#include "ftpipe/model/train_memory.h"
#include "ftpipe/model/vision_memory.h"

static ft_model_config qwen_0_5b(void)
{
    ft_model_config config;
    ft_model_shape("qwen2.5-0.5b", &config);
    return config;
}

/* The weights of one decoder layer, counted from the weight list. */
static uint64_t layer_elements(const ft_model_config *config)
{
    size_t count = 0;
    uint64_t layer = 0;
    ft_param_tensor *weights = ft_model_weight_list(config, &count);
    for (size_t i = 0; i < count; i++)
        if (strncmp(weights[i].name, "model.layers.0.", 15) == 0)
            layer += weights[i].count;
    ft_model_weight_list_free(weights, count);
    return layer;
}

/* Full fine-tuning on the cpu: a checkpoint passes one tensor at a time
 * through the host (the largest, the embeddings) beside the whole plan, and
 * so does the result (in floats and again in bf16), once AdamW is freed. */
TEST(full_finetuning_checkpoints_pass_one_tensor_at_a_time)
{
    ft_model_config config = qwen_0_5b();
    ft_model_options options = {4, 512, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_train_memory memory;
    CHECK_INT(ft_train_memory_estimate(&config, &options, false, 1, FT_DTYPE_BF16, &memory), 0);
    CHECK_INT(memory.checkpoint_buffer_bytes, (uint64_t)config.vocab_size * config.hidden_size * sizeof(float));
    CHECK_INT(memory.result_buffer_bytes, (uint64_t)config.vocab_size * config.hidden_size * 6); /* f32 and bf16 */
    CHECK_STR(memory.peak_phase, "saving a checkpoint");
    CHECK_INT(memory.host_peak_bytes, memory.plan.total_bytes + memory.checkpoint_buffer_bytes + FT_TRAIN_RUNTIME_BYTES);
    CHECK_INT(memory.device_peak_bytes, 0);
}

TEST(recomputation_and_smaller_batches_lower_the_peak)
{
    ft_model_config config = qwen_0_5b();
    ft_model_options kept = {8, 512, FT_FINETUNE_LORA, true, {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 1}, false, false, false, 0, 0, false};
    ft_model_options recomputed = kept, smaller = kept;
    recomputed.gradient_checkpointing = true;
    smaller.max_batch_size = 2;
    ft_train_memory a, b, c;
    CHECK_INT(ft_train_memory_estimate(&config, &kept, false, 1, FT_DTYPE_BF16, &a), 0);
    CHECK_INT(ft_train_memory_estimate(&config, &recomputed, false, 1, FT_DTYPE_BF16, &b), 0);
    CHECK_INT(ft_train_memory_estimate(&config, &smaller, false, 1, FT_DTYPE_BF16, &c), 0);
    CHECK(b.host_peak_bytes < a.host_peak_bytes);
    CHECK(c.host_peak_bytes < a.host_peak_bytes);
    /* LoRA's checkpoint buffer is counted as the whole adapter: small beside the plan */
    CHECK_INT(a.checkpoint_buffer_bytes, a.plan.adapter_bytes);
    CHECK_INT(a.host_peak_bytes, a.plan.total_bytes + a.checkpoint_buffer_bytes + FT_TRAIN_RUNTIME_BYTES);
}

TEST(on_a_gpu_the_plan_is_device_memory_in_bf16)
{
    ft_model_config config = qwen_0_5b();
    ft_model_options options = {4, 1024, FT_FINETUNE_LORA, true, {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 1}, false, false, false, 0, 0, false};
    ft_train_memory gpu, cpu;
    CHECK_INT(ft_train_memory_estimate(&config, &options, true, 8, FT_DTYPE_BF16, &gpu), 0);
    CHECK_INT(ft_train_memory_estimate(&config, &options, false, 8, FT_DTYPE_BF16, &cpu), 0);
    CHECK_INT(gpu.device_peak_bytes, gpu.plan.total_bytes);
    CHECK(gpu.plan.parameter_bytes * 2 == cpu.plan.parameter_bytes);
    /* the cuda backend's scratch, as backend.cu sizes it for this model's limits, is in the peak */
    ft_backend_limits limits;
    CHECK_INT(ft_model_backend_limits(&config, &options, FT_DTYPE_BF16, &limits), 0);
    CHECK_INT(limits.max_rows, 4 * 1024);
    CHECK_INT(gpu.plan.scratch_bytes, ft_cuda_scratch_bytes(&limits));
    CHECK(gpu.plan.scratch_bytes > FT_CUDA_GEMM_WORKSPACE_BYTES);
    CHECK_INT(gpu.plan.master_bytes, 0); /* LoRA trains float tensors of its own */
    CHECK_INT(gpu.plan.total_bytes, gpu.plan.parameter_bytes + gpu.plan.adapter_bytes + gpu.plan.gradient_bytes +
                                        gpu.plan.optimizer_bytes + gpu.plan.activation_bytes + gpu.plan.scratch_bytes);
    CHECK_INT(cpu.plan.scratch_bytes, 0);
    CHECK(gpu.host_peak_bytes < gpu.device_peak_bytes);
    /* BLAS threads count on the cpu backend only */
    CHECK_INT(cpu.runtime_bytes, FT_TRAIN_RUNTIME_BYTES + 7 * FT_TRAIN_BLAS_THREAD_BYTES);
    CHECK_INT(gpu.runtime_bytes, FT_TRAIN_RUNTIME_BYTES);
}

/* Full fine-tuning on a GPU, mixed precision: bf16 weights, their float master
 * copy, float gradients and AdamW's two float moments (18 bytes a weight) on
 * the device; offload_optimizer moves the moments to host memory beside a host
 * master copy and the downloaded gradients (16 bytes a weight there), while the
 * device keeps its master copy for the bf16 weights to be made from. */
TEST(full_finetuning_on_a_gpu_plans_mixed_precision)
{
    ft_model_config config = qwen_0_5b();
    uint64_t parameters = ft_model_config_parameter_count(&config);
    ft_model_options options = {4, 512, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_train_memory gpu, offloaded;
    CHECK_INT(ft_train_memory_estimate(&config, &options, true, 1, FT_DTYPE_BF16, &gpu), 0);
    CHECK_INT(gpu.plan.parameter_bytes, parameters * 2);
    CHECK_INT(gpu.plan.master_bytes, parameters * 4);
    CHECK_INT(gpu.plan.gradient_bytes, parameters * 4);
    CHECK_INT(gpu.plan.optimizer_bytes, parameters * 8);
    CHECK_INT(gpu.device_peak_bytes, parameters * 18 + gpu.plan.activation_bytes + gpu.plan.scratch_bytes);
    offloaded = gpu;
    ft_train_memory_apply_zero(&offloaded, &config, true, 2, 1, true, false);
    uint64_t share = (parameters * 8 + 1) / 2;
    CHECK_INT(offloaded.device_peak_bytes, gpu.device_peak_bytes - parameters * 8);
    CHECK_INT(offloaded.plan.master_bytes, parameters * 4);
    CHECK_INT(offloaded.offload_bytes, 2 * share);
    CHECK(offloaded.host_peak_bytes >= 2 * share);
}

/* ZeRO: one rank's plan holds 1 / ranks of AdamW's moments (rounded up), the
 * rest as it was; the writing rank gathers a checkpoint's moments a span at a
 * time, the largest being the embeddings, beside the file writer's tensor. */
TEST(zero_keeps_one_share_of_the_optimizer_per_rank)
{
    ft_model_config config = qwen_0_5b();
    ft_model_options options = {4, 512, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    for (int gpu = 0; gpu <= 1; gpu++) {
        ft_train_memory whole, sharded;
        CHECK_INT(ft_train_memory_estimate(&config, &options, gpu, 1, FT_DTYPE_BF16, &whole), 0);
        sharded = whole;
        ft_train_memory_shard(&sharded, &config, gpu, 3);
        uint64_t share = (whole.plan.optimizer_bytes + 2) / 3;
        CHECK_INT(sharded.plan.optimizer_bytes, share);
        CHECK_INT(sharded.plan.total_bytes, whole.plan.total_bytes - (whole.plan.optimizer_bytes - share));
        uint64_t embeddings = (uint64_t)config.vocab_size * config.hidden_size * sizeof(float);
        CHECK_INT(whole.checkpoint_buffer_bytes, embeddings);
        CHECK_INT(sharded.checkpoint_buffer_bytes, 3 * embeddings);
        if (gpu)
            CHECK_INT(sharded.device_peak_bytes, sharded.plan.total_bytes);
        else
            CHECK(sharded.host_peak_bytes < whole.host_peak_bytes);
        ft_train_memory units = whole;
        ft_train_memory_apply_zero(&units, &config, gpu, 3, 2, false, false);
        CHECK_INT(units.checkpoint_buffer_bytes, 3 * embeddings);
        ft_train_memory one = whole;
        ft_train_memory_shard(&one, &config, gpu, 1); /* one rank: nothing to shard */
        CHECK_INT(one.plan.total_bytes, whole.plan.total_bytes);
    }
}

/* offload_optimizer: on a GPU the moments leave the device plan for host
 * memory with the master copy and gradients (16 bytes a parameter); on the cpu
 * backend the master copy and gradients are added to what was there. */
TEST(offload_moves_the_optimizer_to_host_memory)
{
    ft_model_config config = qwen_0_5b();
    ft_model_options options = {4, 512, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_train_memory gpu, gpu_offloaded, cpu, cpu_offloaded;
    CHECK_INT(ft_train_memory_estimate(&config, &options, true, 1, FT_DTYPE_BF16, &gpu), 0);
    CHECK_INT(ft_train_memory_estimate(&config, &options, false, 1, FT_DTYPE_BF16, &cpu), 0);
    gpu_offloaded = gpu;
    ft_train_memory_shard(&gpu_offloaded, &config, true, 2);
    ft_train_memory_offload(&gpu_offloaded, true);
    uint64_t share = (gpu.plan.optimizer_bytes + 1) / 2;
    CHECK_INT(gpu_offloaded.device_peak_bytes, gpu.device_peak_bytes - gpu.plan.optimizer_bytes);
    CHECK_INT(gpu_offloaded.offload_bytes, 2 * share);
    CHECK(gpu_offloaded.host_peak_bytes >= gpu.host_peak_bytes && gpu_offloaded.host_peak_bytes >= 2 * share);
    cpu_offloaded = cpu;
    ft_train_memory_offload(&cpu_offloaded, false);
    CHECK_INT(cpu_offloaded.offload_bytes, cpu.plan.optimizer_bytes);
    CHECK_STR(cpu_offloaded.peak_phase, "saving a checkpoint");
    CHECK_INT(cpu_offloaded.host_peak_bytes, cpu.host_peak_bytes + cpu.plan.optimizer_bytes);
}


/* ZeRO-3: the plan holds 1 / ranks of the weights and two buffers of the largest
 * unit (qwen2.5-0.5b: its embeddings); offload_param on a GPU moves the shard to
 * host memory beside a staging buffer of the largest unit's share; full
 * fine-tuning (mixed precision on a GPU) holds 1 / ranks of the float master
 * copy too; checkpoints and the result gather the whole master copy into
 * host memory through the gather buffers, so the device peaks at training. */
TEST(zero_3_keeps_one_share_of_the_weights_per_rank)
{
    ft_model_config config = qwen_0_5b();
    uint64_t embeddings = (uint64_t)config.vocab_size * config.hidden_size * 2; /* bf16 */
    for (int full = 0; full <= 1; full++) {
        ft_model_options options = {4, 512, full ? FT_FINETUNE_FULL : FT_FINETUNE_LORA, !full,
                                    {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 1}, true, false, false, 0, 0, false};
        ft_train_memory whole, sharded, offloaded;
        CHECK_INT(ft_train_memory_estimate(&config, &options, true, 1, FT_DTYPE_BF16, &whole), 0);
        sharded = offloaded = whole;
        ft_train_memory_apply_zero(&sharded, &config, true, 4, 3, false, false);
        ft_train_memory_apply_zero(&offloaded, &config, true, 4, 3, false, true);
        uint64_t shard = (whole.plan.parameter_bytes + 3) / 4;
        CHECK_INT(sharded.plan.parameter_bytes, shard + 2 * embeddings);
        CHECK_INT(offloaded.plan.parameter_bytes, 2 * embeddings + (embeddings + 3) / 4);
        CHECK(offloaded.offload_bytes == shard);
        CHECK_INT(sharded.plan.master_bytes, full ? (whole.plan.master_bytes + 3) / 4 : 0);
        CHECK_INT(sharded.device_peak_bytes, sharded.plan.total_bytes);
        CHECK(sharded.device_peak_bytes < whole.device_peak_bytes);
    }
}

/* ZeRO-3 with offload_optimizer on a GPU: the master copy's shard is AdamW's
 * host copy itself, so it leaves the device plan, and the host holds 16 bytes
 * per sharded weight (moments 8, master copy 4, gradients 4) beside
 * offload_param's shard of the bf16 weights; the gradients' shard is that
 * host memory, so the device keeps the window and a staging buffer of the
 * largest unit's part. */
TEST(zero_3_with_offload_moves_the_master_shard_to_host_memory)
{
    ft_model_config config = qwen_0_5b();
    ft_model_options options = {4, 512, FT_FINETUNE_FULL, false, {0}, true, false, false, 0, 0, false};
    ft_train_memory whole, sharded, offloaded, both;
    CHECK_INT(ft_train_memory_estimate(&config, &options, true, 1, FT_DTYPE_BF16, &whole), 0);
    sharded = offloaded = both = whole;
    ft_train_memory_apply_zero(&sharded, &config, true, 4, 3, false, false);
    ft_train_memory_apply_zero(&offloaded, &config, true, 4, 3, true, false);
    ft_train_memory_apply_zero(&both, &config, true, 4, 3, true, true);
    CHECK(sharded.plan.master_bytes > 0);
    CHECK_INT(offloaded.plan.master_bytes, 0);
    uint64_t windows = ft_model_gradient_window_bytes(&config, 4, true);
    CHECK_INT(windows, (ft_model_config_largest_unit(&config) + layer_elements(&config)) * sizeof(float));
    uint64_t staging = ft_model_gradient_staging_bytes(&config, 4);
    CHECK_INT(staging, ((ft_model_config_largest_unit(&config) + 3) / 4) * sizeof(float));
    CHECK_INT(offloaded.plan.gradient_bytes, windows + staging);
    CHECK_INT(offloaded.plan.total_bytes, sharded.plan.total_bytes - sharded.plan.master_bytes -
                                              sharded.plan.optimizer_bytes - sharded.plan.gradient_bytes +
                                              windows + staging);
    CHECK_INT(offloaded.offload_bytes, 2 * sharded.plan.optimizer_bytes);
    CHECK_INT(both.offload_bytes, 2 * sharded.plan.optimizer_bytes + (whole.plan.parameter_bytes + 3) / 4);
}


/* One rank: ZeRO-1 and 2 shard nothing, but offload_optimizer still moves
 * AdamW's moments to host memory (with the master copy and the gradients'
 * host buffer); ZeRO-3 with offload_param keeps every weight in host memory,
 * so the device holds two gather buffers of the largest unit (qwen2.5-7b:
 * its untied head with the final norm) and no staging buffer; full
 * fine-tuning's float gradients are whole and a window of that unit. */
TEST(one_rank_offloads_adamw_and_streams_its_weights)
{
    ft_model_config config;
    CHECK_INT(ft_model_shape("qwen2.5-7b", &config), 0);
    uint64_t unit = ft_model_config_largest_unit(&config);
    CHECK_INT(unit, (uint64_t)config.vocab_size * config.hidden_size + config.hidden_size);
    for (int full = 0; full <= 1; full++) {
        ft_model_options options = {4, 1024, full ? FT_FINETUNE_FULL : FT_FINETUNE_LORA, !full,
                                    {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 1}, true, false, false, 0, 0, false};
        ft_train_memory whole, offloaded, streamed, both;
        CHECK_INT(ft_train_memory_estimate(&config, &options, true, 1, FT_DTYPE_BF16, &whole), 0);
        offloaded = streamed = both = whole;
        ft_train_memory_apply_zero(&offloaded, &config, true, 1, 0, true, false);
        ft_train_memory_apply_zero(&streamed, &config, true, 1, 3, false, true);
        ft_train_memory_apply_zero(&both, &config, true, 1, 3, true, true);
        CHECK_INT(offloaded.plan.optimizer_bytes, 0);
        CHECK_INT(offloaded.offload_bytes, 2 * whole.plan.optimizer_bytes);
        CHECK_INT(offloaded.device_peak_bytes, whole.device_peak_bytes - whole.plan.optimizer_bytes);
        CHECK_INT(streamed.plan.parameter_bytes, 2 * 2 * unit);
        CHECK_INT(streamed.offload_bytes, whole.plan.parameter_bytes);
        CHECK_INT(streamed.plan.gradient_bytes, whole.plan.gradient_bytes + (full ? 4 * unit : 0));
        CHECK_INT(streamed.plan.master_bytes, whole.plan.master_bytes);
        CHECK_INT(both.plan.master_bytes, 0); /* the master copy is AdamW's host copy */
        if (full) /* and the gradients' shard its input: a window and a staging buffer of that unit stay,
                   * with a window of a layer, where the next layer's backward goes on beside the copy down */
            CHECK_INT(both.plan.gradient_bytes, 2 * 4 * unit + 4 * layer_elements(&config));
        CHECK_INT(both.plan.optimizer_bytes, 0);
        CHECK(streamed.device_peak_bytes < whole.device_peak_bytes);
        printf("  qwen2.5-7b %s on one GPU: %.1f GiB, offload_optimizer %.1f, offload_param %.1f, both %.1f "
               "(host %.1f GiB)\n",
               full ? "full" : "LoRA", whole.device_peak_bytes / 1073741824.0, offloaded.device_peak_bytes / 1073741824.0,
               streamed.device_peak_bytes / 1073741824.0, both.device_peak_bytes / 1073741824.0,
               both.host_peak_bytes / 1073741824.0);
    }
}

/* A machine's ranks share its host memory: the first rank writes checkpoints
 * and the result (its peak), every other one only loads and trains (the
 * offloaded state and the program, on a GPU), so 8 ranks need the first's
 * peak and 7 times the others'. */
TEST(a_machine_holds_the_writing_rank_and_the_others)
{
    ft_model_config config;
    CHECK_INT(ft_model_shape("qwen2.5-7b", &config), 0);
    ft_model_options options = {4, 1024, FT_FINETUNE_FULL, false, {0}, true, false, false, 0, 0, false};
    ft_train_memory memory;
    CHECK_INT(ft_train_memory_estimate(&config, &options, true, 1, FT_DTYPE_BF16, &memory), 0);
    ft_train_memory_apply_zero(&memory, &config, true, 8, 3, true, true);
    CHECK_INT(memory.other_rank_host_peak_bytes, memory.offload_bytes + memory.runtime_bytes);
    CHECK(memory.other_rank_host_peak_bytes < memory.host_peak_bytes);
    CHECK_INT(ft_train_memory_node_host_bytes(&memory, 1), memory.host_peak_bytes);
    CHECK_INT(ft_train_memory_node_host_bytes(&memory, 8), memory.host_peak_bytes + 7 * memory.other_rank_host_peak_bytes);
    printf("  qwen2.5-7b full, stage 3, both offloads, 8 ranks: the first %.1f GiB (%s), each other %.1f GiB, "
           "%.1f GiB in all (README)\n",
           memory.host_peak_bytes / 1073741824.0, memory.peak_phase, memory.other_rank_host_peak_bytes / 1073741824.0,
           ft_train_memory_node_host_bytes(&memory, 8) / 1073741824.0);
    ft_train_memory cpu;
    CHECK_INT(ft_train_memory_estimate(&config, &options, false, 1, FT_DTYPE_BF16, &cpu), 0);
    ft_train_memory_apply_zero(&cpu, &config, false, 2, 1, false, false);
    CHECK_INT(cpu.other_rank_host_peak_bytes, cpu.plan.total_bytes + cpu.offload_bytes + cpu.runtime_bytes);
}


/* A README row's cell: the device and host peaks with ZeRO `stage` over
 * `ranks`, the offloads as named. */
static void table_cell(const ft_model_config *config, const ft_model_options *options, int ranks, int stage,
                       bool offload_optimizer, bool offload_param, char *out, size_t size)
{
    ft_train_memory memory;
    CHECK_INT(ft_train_memory_estimate(config, options, true, 1, FT_DTYPE_BF16, &memory), 0);
    ft_train_memory_apply_zero(&memory, config, true, ranks, stage, offload_optimizer, offload_param);
    char device[32], host[32];
    ft_format_bytes(memory.device_peak_bytes, device, sizeof device);
    ft_format_bytes(memory.host_peak_bytes, host, sizeof host);
    snprintf(out, size, " %s / %s |", device, host);
}

/* README's three ZeRO tables are the plan's figures, row for row: the tiny model
 * of `ftpipe init` (its byte-level vocabulary of 259, 256 tokens a row) and
 * the real shapes, LoRA and full fine-tuning, 4 rows of 1024 tokens,
 * recomputed. A row that differs is printed as the plan gives it. */
TEST(readme_zero_tables_are_the_plans)
{
    char *readme = NULL;
    size_t length = 0;
    CHECK_INT(ft_read_file("README.md", &readme, &length), 0);
    const char *names[] = {"tiny (init)", "qwen2.5-7b", "llama3-8b", "qwen2.5-14b"};
    const char *shapes[] = {"tiny", "qwen2.5-7b", "llama3-8b", "qwen2.5-14b"};
    /* ranks, stage, offload_optimizer, offload_param: the first table's columns, the second's, then
     * one GPU's (the stage one rank trains at: 0, unless offload_param streams the weights at 3) */
    const int columns[3][5][4] = {{{1, 0, 0, 0}, {2, 1, 0, 0}, {8, 1, 0, 0}, {8, 2, 0, 0}, {8, 2, 1, 0}},
                                  {{2, 3, 0, 0}, {8, 3, 0, 0}, {8, 3, 1, 1}, {0}, {0}},
                                  {{1, 0, 0, 0}, {1, 0, 1, 0}, {1, 3, 0, 1}, {1, 3, 1, 1}, {0}}};
    const int n_columns[3] = {5, 3, 4};
    for (int m = 0; m < 4; m++)
        for (int full = 0; full <= 1; full++) {
            ft_model_config config;
            CHECK_INT(ft_model_shape(shapes[m], &config), 0);
            if (config.vocab_size == 0)
                config.vocab_size = 259;
            ft_model_options options = {4, m == 0 ? 256 : 1024, full ? FT_FINETUNE_FULL : FT_FINETUNE_LORA, !full,
                                        {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 1}, true, false, false, 0, 0, false};
            for (int table = 0; table < 3; table++) {
                char row[512];
                int at = snprintf(row, sizeof row, "| %s, %s |", names[m], full ? "full" : "LoRA");
                for (int c = 0; c < n_columns[table]; c++) {
                    const int *k = columns[table][c];
                    table_cell(&config, &options, k[0], k[1], k[2], k[3], row + at, sizeof row - (size_t)at);
                    at += (int)strlen(row + at);
                }
                if (!strstr(readme, row)) {
                    fprintf(stderr, "  not in README: %s\n", row);
                    check_case_failed = 1;
                }
            }
        }
    free(readme);
}

/* With ZeRO the model's own plan, which the cuda backend checks before
 * anything is allocated, holds one rank's share of AdamW's moments, and none
 * of them when offload_optimizer keeps them in host memory (with the
 * gradients' shard: the window and a staging buffer stay): qwen2.5-7b full at
 * stage 2 on 8 ranks is the plan's 57.9 GiB a GPU, not the 114 GiB of whole moments. */
TEST(the_model_plan_holds_one_share_of_adamw)
{
    ft_model_config config;
    CHECK_INT(ft_model_shape("qwen2.5-7b", &config), 0);
    ft_model_options options = {4, 1024, FT_FINETUNE_FULL, false, {0}, true, false, false, 0, 0, false};
    ft_memory_plan whole, shared, offloaded;
    CHECK_INT(ft_model_plan_memory(&config, &options, FT_DTYPE_BF16, &whole), 0);
    options.gradient_shards = options.optimizer_shards = 8;
    CHECK_INT(ft_model_plan_memory(&config, &options, FT_DTYPE_BF16, &shared), 0);
    options.optimizer_offloaded = true;
    CHECK_INT(ft_model_plan_memory(&config, &options, FT_DTYPE_BF16, &offloaded), 0);
    CHECK_INT(shared.optimizer_bytes, (whole.optimizer_bytes + 7) / 8);
    CHECK_INT(offloaded.optimizer_bytes, 0);
    uint64_t windows = ft_model_gradient_window_bytes(&config, 8, true);
    CHECK_INT(offloaded.gradient_bytes, windows + ft_model_gradient_staging_bytes(&config, 8));
    CHECK_INT(offloaded.total_bytes,
              shared.total_bytes - shared.optimizer_bytes - shared.gradient_bytes + offloaded.gradient_bytes);
    /* the same figure as the estimate's for stage 2 on 8 ranks, less the backend's scratch */
    ft_train_memory memory;
    options.gradient_shards = options.optimizer_shards = 0;
    options.optimizer_offloaded = false;
    CHECK_INT(ft_train_memory_estimate(&config, &options, true, 1, FT_DTYPE_BF16, &memory), 0);
    ft_train_memory offloaded_memory = memory;
    ft_train_memory_apply_zero(&memory, &config, true, 8, 2, false, false);
    CHECK_INT(shared.total_bytes, memory.plan.total_bytes - memory.plan.scratch_bytes);
    ft_train_memory_apply_zero(&offloaded_memory, &config, true, 8, 2, true, false); /* and with the offload */
    CHECK_INT(offloaded.total_bytes, offloaded_memory.plan.total_bytes - offloaded_memory.plan.scratch_bytes);
    ft_backend_limits limits;
    options.gradient_shards = options.optimizer_shards = 8;
    CHECK_INT(ft_model_backend_limits(&config, &options, FT_DTYPE_BF16, &limits), 0);
    CHECK_INT(limits.planned_bytes, shared.total_bytes);
}

TEST(refuses_options_the_model_refuses)
{
    ft_model_config config = qwen_0_5b();
    ft_model_options options = {4, 512, FT_FINETUNE_LORA, false, {0}, false, false, false, 0, 0, false}; /* LoRA without a configuration */
    ft_train_memory memory;
    CHECK_INT(ft_train_memory_estimate(&config, &options, false, 1, FT_DTYPE_BF16, &memory), -1);
}

static char root[] = "/tmp/ftpipe-train-memory.XXXXXX";

/* A tiny vision-language folder: init's shape written under root. */
static char *write_vl_model(const char *shape_name)
{
    char *dir = ft_path_join(root, shape_name);
    ft_model_init_options options = {.dtype = FT_DTYPE_F32, .seed = 5, .threads = 1};
    ft_llava_shape llava;
    if (ft_llava_is_shape(shape_name)) {
        CHECK_INT(ft_llava_shape_get(shape_name, &llava), 0);
        CHECK_INT(ft_llava_init_write(dir, &llava, &options), 0);
    } else {
        CHECK_INT(ft_model_shape(shape_name, &options.config), 0);
        CHECK_INT(ft_model_init_write(dir, &options), 0);
    }
    return dir;
}

/* The estimate from the folder's config against the model loaded from it
 * (LoRA, 2 x 600 tokens: room for an image's 576 LLaVA tokens), and at ZeRO-3
 * on 2 ranks against the same config without its tower: the difference is the
 * whole tower. */
static void estimate_matches_loaded_plan(const char *shape_name)
{
    char *dir = write_vl_model(shape_name);
    ft_model_options options = {2, 600, FT_FINETUNE_LORA, true, {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 1}, true, false, false, 0, 0, false};
    ft_model_config config;
    CHECK_INT(ft_language_model_config_load(dir, &config), 0);
    ft_train_memory memory;
    CHECK_INT(ft_train_memory_estimate(&config, &options, false, 1, FT_DTYPE_F32, &memory), 0);
    ft_backend *cpu = ft_backend_cpu_create(1);
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(dir, cpu, &options, &model), 0);
    if (model) {
        ft_memory_plan loaded = ft_model_memory(model);
        size_t tower = ft_vision_tower_weight_bytes(&config, sizeof(float));
        CHECK(tower > 0 && tower == ft_model_vision_weight_bytes(model));
        CHECK_INT(memory.plan.parameter_bytes, loaded.parameter_bytes);
        CHECK_INT(memory.plan.activation_bytes, loaded.activation_bytes);
        CHECK_INT(memory.plan.adapter_bytes, loaded.adapter_bytes);
        CHECK_INT(memory.plan.optimizer_bytes, loaded.optimizer_bytes);
        CHECK_INT(memory.plan.total_bytes, loaded.total_bytes - loaded.scratch_bytes);
        ft_model_free(model);
    }
    ft_backend_destroy(cpu);
    ft_model_config text = config;
    text.vision_language = false;
    text.llava = false;
    ft_train_memory sharded, text_sharded;
    CHECK_INT(ft_train_memory_estimate(&config, &options, false, 1, FT_DTYPE_F32, &sharded), 0);
    CHECK_INT(ft_train_memory_estimate(&text, &options, false, 1, FT_DTYPE_F32, &text_sharded), 0);
    ft_train_memory_apply_zero(&sharded, &config, false, 2, 3, false, false);
    ft_train_memory_apply_zero(&text_sharded, &text, false, 2, 3, false, false);
    CHECK_INT(sharded.plan.parameter_bytes - text_sharded.plan.parameter_bytes, ft_vision_tower_weight_bytes(&config, sizeof(float)));
    free(dir);
}

TEST(the_estimate_counts_the_qwen2_5_vl_tower_as_the_loaded_model_does) { estimate_matches_loaded_plan("tiny-qwen2.5-vl"); }

TEST(the_estimate_counts_the_llava_tower_as_the_loaded_model_does) { estimate_matches_loaded_plan("tiny-llava"); }

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    RUN(the_estimate_counts_the_qwen2_5_vl_tower_as_the_loaded_model_does);
    RUN(the_estimate_counts_the_llava_tower_as_the_loaded_model_does);
    RUN(full_finetuning_checkpoints_pass_one_tensor_at_a_time);
    RUN(recomputation_and_smaller_batches_lower_the_peak);
    RUN(on_a_gpu_the_plan_is_device_memory_in_bf16);
    RUN(full_finetuning_on_a_gpu_plans_mixed_precision);
    RUN(zero_keeps_one_share_of_the_optimizer_per_rank);
    RUN(offload_moves_the_optimizer_to_host_memory);
    RUN(zero_3_keeps_one_share_of_the_weights_per_rank);
    RUN(one_rank_offloads_adamw_and_streams_its_weights);
    RUN(a_machine_holds_the_writing_rank_and_the_others);
    RUN(zero_3_with_offload_moves_the_master_shard_to_host_memory);
    RUN(readme_zero_tables_are_the_plans);
    RUN(the_model_plan_holds_one_share_of_adamw);
    RUN(refuses_options_the_model_refuses);
    ft_remove_tree(root);
    return check_done();
}
