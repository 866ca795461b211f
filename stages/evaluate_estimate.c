/* evaluate_estimate: what a run of the evaluate kind would take (ftpipe
 * estimate): its memory on the backend, with the smallest change that fits
 * when the GPU's free memory is short, and its work for the time figure. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/backend/cuda_scratch.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/generate.h"
#include "ftpipe/model/vision_memory.h"
#include "ftpipe/stages/evaluate_run.h"
#include "ftpipe/stages/stage_backend.h"

/* The memory a batch of `batch` prompts takes: the model's plan for it and
 * the longest sample, and the KV cache for it and the longest prompt plus
 * max_new_tokens (on cuda in bf16 with the backend's scratch, else host
 * memory in f32); streamed (offload_param), the language model's weights
 * leave the plan for the two units gathered at once, and on cuda are counted
 * in host memory (*host). */
typedef struct {
    uint64_t peak, host;
    size_t plan, cache;
} eval_memory;

static int memory_for(const ft_eval_run *run, const ft_model_config *config, ft_model_options options, int batch,
                      bool streamed, bool on_gpu, eval_memory *out)
{
    ft_dtype dtype = on_gpu ? FT_DTYPE_BF16 : FT_DTYPE_F32;
    options.max_batch_size = batch;
    ft_memory_plan plan;
    if (ft_model_plan_memory(config, &options, dtype, &plan) != 0)
        return -1;
    size_t element = ft_dtype_size(dtype);
    *out = (eval_memory){.cache = ft_generator_cache_bytes(config, batch, run->max_generate_tokens, element)};
    if (streamed) {
        size_t language = plan.parameter_bytes - ft_vision_tower_weight_bytes(config, element);
        size_t held = ft_model_config_gathered_weight_bytes(config, element) + (on_gpu ? 0 : language);
        plan.total_bytes = plan.total_bytes - plan.parameter_bytes + held;
        out->host = on_gpu ? language : 0;
    }
    ft_backend_limits limits;
    size_t scratch = 0;
    if (on_gpu && ft_model_backend_limits(config, &options, dtype, &limits) == 0)
        scratch = ft_cuda_scratch_bytes(&limits);
    out->plan = plan.total_bytes;
    out->peak = plan.total_bytes + out->cache + scratch;
    return 0;
}

/* When the GPU's free memory is short: the least change that fits, a smaller
 * batch, then offload_param = cpu (every generated token then reads each
 * weight over the bus), then both. */
static int find_smallest_change(const ft_eval_run *run, const ft_model_config *config, const ft_model_options *options,
                                uint64_t budget, ft_stage_estimate *out)
{
    for (int streamed = run->offload_param; streamed <= 1; streamed++)
        for (int batch = run->batch_size; batch >= 1; batch /= 2) {
            eval_memory memory;
            if (memory_for(run, config, *options, batch, streamed, true, &memory) != 0)
                return -1;
            if (memory.peak > budget)
                continue;
            char need[32], have[32], host[32], batch_text[48] = "";
            ft_format_bytes(memory.peak, need, sizeof need);
            ft_format_bytes(budget, have, sizeof have);
            ft_format_bytes(memory.host * (uint64_t)ft_stage_ranks_per_node(run->stage), host, sizeof host);
            if (batch < run->batch_size)
                snprintf(batch_text, sizeof batch_text, "batch_size = %d%s", batch,
                         streamed && !run->offload_param ? " and " : "");
            snprintf(out->smallest_change, sizeof out->smallest_change,
                     "set %s%s (needs %s of the %s free on the GPU%s%s%s)", batch_text,
                     streamed && !run->offload_param ? "offload_param = cpu: the weights stay in host memory, a "
                                                       "layer's uploaded as it is used"
                                                     : "",
                     need, have, streamed ? ", and " : "", streamed ? host : "", streamed ? " of host memory" : "");
            return 0;
        }
    snprintf(out->smallest_change, sizeof out->smallest_change,
             "nothing fits, not even batch_size = 1 with offload_param = cpu: lower max_new_tokens or cutoff_len, or "
             "free the GPU's memory");
    return 0;
}

/* Memory as memory_for counts it for the adapted model (the larger of the two
 * with compare_base), checked against the GPU's free memory; the host memory
 * of each rank on the machine, which loads (or streams) the model on its own;
 * time from the rate past runs left. */
static int estimate_figures(const ft_eval_run *run, ft_stage_estimate *out)
{
    ft_stage *stage = run->stage;
    const char *backend = ft_stage_param_string(stage, "backend");
    /* no CUDA in the engine's process (see train's estimate): a GPU's device file answers */
    bool on_gpu = strcmp(backend, "cuda") == 0 || (strcmp(backend, "auto") == 0 && access("/dev/nvidia0", F_OK) == 0);
    ft_model_options options;
    const char *dir;
    ft_model_config config;
    eval_memory memory;
    if (ft_evaluate_model_options(run, run->train_dir != NULL, &options, &dir) != 0 ||
        ft_language_model_config_load(dir, &config) != 0 ||
        memory_for(run, &config, options, run->batch_size, run->offload_param, on_gpu, &memory) != 0)
        return -1;
    char plan_text[32], cache_text[32], host_text[32], ranks_text[64] = "";
    ft_format_bytes(memory.plan, plan_text, sizeof plan_text);
    ft_format_bytes(memory.cache, cache_text, sizeof cache_text);
    ft_format_bytes(memory.host, host_text, sizeof host_text);
    int per_node = ft_stage_ranks_per_node(stage);
    if (per_node > 1)
        snprintf(ranks_text, sizeof ranks_text, ", x %d ranks on the machine (each its own copy)", per_node);
    ft_estimate_figure *figure = on_gpu ? &out->device_bytes : &out->host_bytes;
    ft_estimate_set(figure, (double)memory.peak * (on_gpu ? 1 : per_node),
                    "model plan %s for %d x %d tokens%s and KV cache %s for %d x %d tokens%s%s", plan_text,
                    run->batch_size, run->max_seq_len,
                    run->offload_param ? " (two units of the weights gathered at once)" : "", cache_text,
                    run->batch_size, run->max_generate_tokens, on_gpu ? ", with the cuda backend's scratch" : "",
                    on_gpu ? "" : ranks_text);
    if (on_gpu && run->offload_param)
        ft_estimate_set(&out->host_bytes, (double)memory.host * per_node,
                        "the weights in page-locked host memory (offload_param = cpu), %s%s, beside the program",
                        host_text, ranks_text);
    else if (on_gpu)
        ft_estimate_unknown(&out->host_bytes, "the evaluate kind does not estimate its host memory on cuda");
    if (on_gpu) {
        out->device_budget_bytes = ft_stage_gpu_free_bytes();
        if (out->device_budget_bytes > 0 && memory.peak > out->device_budget_bytes &&
            find_smallest_change(run, &config, &options, out->device_budget_bytes, out) != 0)
            return -1;
    }
    ft_estimate_set(&out->disk_bytes, 0.0, "writes small reports only (results.jsonl, metrics.json, report.md)");
    size_t n_models = ft_stage_param_bool(stage, "compare_base") ? 2 : 1;
    double ops;
    if (ft_evaluate_all_models_ops(run, n_models, &ops) != 0)
        return -1;
    out->work[0] = (ft_estimate_work){ops, "evaluate_ops", "ops", "prompts, answers and the loss pass"};
    out->n_work = 1;
    out->device_name = on_gpu ? "cuda" : "cpu";
    return 0;
}

int ft_evaluate_estimate(ft_stage *stage, ft_stage_estimate *out)
{
    for (size_t i = 0; i < ft_stage_input_count(stage); i++)
        if (!ft_path_exists(ft_stage_input_path(stage, i))) {
            ft_estimate_figure *figures[] = {&out->device_bytes, &out->host_bytes, &out->disk_bytes, &out->time_s};
            for (size_t f = 0; f < sizeof figures / sizeof figures[0]; f++)
                ft_estimate_unknown(figures[f], "needs %s, which is not built yet", ft_stage_input_path(stage, i));
            return 0;
        }
    ft_eval_run run = {.stage = stage, .estimating = true};
    ft_dataset_init(&run.dataset);
    int status = ft_evaluate_prepare(&run);
    if (status == 0)
        status = estimate_figures(&run, out);
    ft_evaluate_free_run(&run, NULL, 0);
    if (status != 0) { /* the run says it with its own message (see tokenize's estimate) */
        ft_estimate_figure *figures[] = {&out->device_bytes, &out->host_bytes, &out->disk_bytes, &out->time_s};
        for (size_t f = 0; f < sizeof figures / sizeof figures[0]; f++)
            ft_estimate_unknown(figures[f], "cannot estimate: %s", ft_error_message());
        ft_error_clear();
    }
    return 0;
}
