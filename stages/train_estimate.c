/* train_estimate: what a train stage would take — memory from the model's plan
 * and the host buffers of each phase, disk for the output and checkpoints, the
 * least change that fits when it does not, and its work for the time. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/units.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/train_memory.h"
#include "ftpipe/model/train_work.h"
#include "ftpipe/stages/stage_backend.h"
#include "ftpipe/stages/stage_ranks.h"
#include "ftpipe/stages/train_run.h"

/* What a run writes: the output, and its checkpoints. */
typedef struct {
    uint64_t output_bytes;
    uint64_t checkpoint_bytes;  /* one */
    int64_t saved;              /* checkpoints written */
} train_writes;

static train_writes count_writes(const ft_train_run *run, const ft_model_config *config, const ft_train_memory *memory)
{
    bool full = run->model_options.finetuning == FT_FINETUNE_FULL;
    uint64_t trained_bytes = full ? memory->plan.gradient_bytes : memory->plan.adapter_bytes;
    int64_t steps = run->plan.total_steps, every = run->train_options.save_steps;
    return (train_writes){
        .output_bytes = full ? ft_model_config_parameter_count(config) * ft_dtype_size(ft_train_save_dtype(config))
                             : trained_bytes,
        .checkpoint_bytes = 3 * trained_bytes, /* the tensors and AdamW's two moments, in f32 */
        .saved = every > 0 ? steps / every + (steps % every != 0) : 1,
    };
}

/* Disk: the output, and the checkpoints the work folder holds at once (one more
 * than save_total_limit while the newest is written). */
static void estimate_disk(const ft_train_run *run, const train_writes *writes, ft_stage_estimate *out)
{
    int64_t limit = run->train_options.save_total_limit;
    int64_t held = limit > 0 && writes->saved > limit ? limit + 1 : writes->saved;
    char output_text[32], checkpoint_text[32];
    ft_format_bytes(writes->output_bytes, output_text, sizeof output_text);
    ft_format_bytes(writes->checkpoint_bytes, checkpoint_text, sizeof checkpoint_text);
    /* save_strategy's checkpoint-N folders: each a copy of the output */
    int64_t steps = run->plan.total_steps, every = run->train_options.save_steps;
    int64_t per_epoch = run->plan.steps_per_epoch > 0 ? run->plan.steps_per_epoch : 1, kept = 0;
    if (run->train_options.save_strategy == FT_SAVE_STEPS && every > 0)
        kept = steps / every + (steps % every != 0);
    else if (run->train_options.save_strategy == FT_SAVE_EPOCH)
        kept = (steps + per_epoch - 1) / per_epoch;
    if (limit > 0 && kept > limit)
        kept = limit + 1;
    ft_estimate_set(&out->disk_bytes,
                    (double)(writes->output_bytes * (uint64_t)(1 + kept) + (uint64_t)held * writes->checkpoint_bytes),
                    "output %s (and %lld checkpoint-N folders of its size) + %lld checkpoints held at once x %s (%lld "
                    "saved, save_total_limit %lld)",
                    output_text, (long long)kept, (long long)held, checkpoint_text, (long long)writes->saved,
                    (long long)limit);
}

/* Time, in the parts log_rates measures: the operations of the steps and the
 * evaluations during training (every rank evaluates every row), and the bytes
 * read and written besides. */
static int estimate_work(const ft_train_run *run, const ft_model_config *config, const train_writes *writes,
                         ft_stage_estimate *out)
{
    ft_train_work work;
    if (ft_train_work_per_token(config, &run->model_options, ft_train_mean_row_tokens(&run->meta), &work) < 0)
        return -1;
    const ft_train_options *t = &run->train_options;
    double epochs = run->plan.steps_per_epoch > 0 ? (double)run->plan.total_steps / (double)run->plan.steps_per_epoch
                                                  : 0.0;
    double eval_tokens = 0.0;
    if (run->eval_dir) {
        ft_token_dataset_meta eval_meta = run->meta;
        if (strcmp(run->eval_split, "train") == 0) {
            char *meta_path = ft_path_join(run->eval_dir, "meta.json");
            bool built = ft_path_exists(meta_path);
            free(meta_path);
            if (!built) {
                ft_estimate_unknown(&out->time_s, "needs %s, which is not built yet", run->eval_dir);
                return 0;
            }
            if (ft_token_dataset_meta_read(run->eval_dir, &eval_meta) < 0)
                return -1;
        }
        const ft_token_split_stats *split = strcmp(run->eval_split, "train") == 0 ? &eval_meta.train
                                                                                   : &eval_meta.validation;
        int64_t evaluations = t->eval_steps > 0 ? run->plan.total_steps / t->eval_steps : (int64_t)ceil(epochs);
        eval_tokens = (double)split->n_tokens * (double)evaluations * (t->ranks > 1 ? t->ranks : 1);
    }
    double trained_tokens = (double)run->meta.train.n_tokens * epochs;
    ft_train_ops_rate rate = ft_train_ops_rate_of(t); /* a run that offloads predicts only such runs */
    out->work[0] = (ft_estimate_work){trained_tokens * work.train + eval_tokens * work.forward, rate.rate, "ops",
                                      rate.what};
    out->work[1] = (ft_estimate_work){(double)(ft_train_weight_file_bytes(run->model_dir) + writes->output_bytes +
                                               (uint64_t)writes->saved * writes->checkpoint_bytes),
                                      "train_io_bytes", "bytes", "loading, checkpoints and the result"};
    out->n_work = 2;
    return 0;
}

/* What the least change must fit: a GPU's memory (and the machine's host
 * memory beside it, where offloads go), or the machine's host memory. */
typedef struct {
    const ft_train_run *run;
    const ft_model_config *config;
    int threads, per_node;
    bool on_gpu;
    uint64_t budget;         /* of the device on a GPU, else of the host */
    uint64_t host_budget;    /* 0: unknown */
} fit;

/* The stage with these options and ZeRO choices: the device's peak (0 on
 * cpu) and the machine's host memory; -1 with ft_error. */
static int memory_of(const fit *f, const ft_model_options *options, int stage, bool offload_optimizer,
                     bool offload_param, uint64_t *device, uint64_t *host)
{
    ft_train_memory memory;
    const ft_train_options *t = &f->run->train_options;
    if (ft_train_memory_estimate(f->config, options, f->on_gpu, f->threads, ft_train_save_dtype(f->config),
                                 &memory) < 0)
        return -1;
    ft_train_memory_apply_zero(&memory, f->config, f->on_gpu, t->ranks, stage, offload_optimizer, offload_param);
    *host = ft_train_memory_node_host_bytes(&memory, f->per_node);
    *device = f->on_gpu ? memory.device_peak_bytes : 0;
    return 0;
}

/* Within the budgets known (0: unknown, then anything is). */
static bool within(const fit *f, uint64_t device, uint64_t host)
{
    uint64_t figure = f->on_gpu ? device : host;
    return (!f->budget || figure <= f->budget) && (!f->on_gpu || !f->host_budget || host <= f->host_budget);
}

/* The stage with these options and ZeRO choices: 0 when it fits, with the
 * figure the message gives (device or host) in `need`. */
static int fits(const fit *f, const ft_model_options *options, int stage, bool offload_optimizer, bool offload_param,
                char *need, size_t size)
{
    uint64_t device, host;
    if (memory_of(f, options, stage, offload_optimizer, offload_param, &device, &host) < 0 || !within(f, device, host))
        return -1;
    uint64_t figure = f->on_gpu ? device : host;
    char device_text[32], host_text[32], budget_text[32];
    ft_format_bytes(figure, device_text, sizeof device_text);
    ft_format_bytes(f->budget, budget_text, sizeof budget_text);
    ft_format_bytes(host, host_text, sizeof host_text);
    if (f->on_gpu)
        snprintf(need, size, "needs %s of the %s a GPU, and %s of host memory", device_text, budget_text, host_text);
    else
        snprintf(need, size, "needs %s of the %s", device_text, budget_text);
    return 0;
}

/* A higher ZeRO stage, with ranks: AdamW's state at 1, full fine-tuning's
 * gradients at 2, the weights at 3. */
static bool stage_change(const fit *f, char *text, size_t size)
{
    const ft_train_run *run = f->run;
    const ft_train_options *t = &run->train_options;
    bool full = run->model_options.finetuning == FT_FINETUNE_FULL; /* LoRA's gradients stay whole */
    char need[160];
    for (int stage = t->zero_stage + 1; t->ranks > 1 && stage <= 3; stage++) {
        if (fits(f, &run->model_options, stage, t->offload_optimizer, t->offload_param, need, sizeof need) < 0)
            continue;
        if (stage == 1)
            snprintf(text, size, "set zero_stage = 1: each of the %d ranks then holds 1 / %d of AdamW's state (%s)",
                     t->ranks, t->ranks, need);
        else if (stage == 2)
            snprintf(text, size, "set zero_stage = 2: each of the %d ranks then holds 1 / %d of AdamW's state and of "
                                 "the gradients (%s)",
                     t->ranks, t->ranks, need);
        else
            snprintf(text, size, "set zero_stage = 3: each of the %d ranks then holds 1 / %d of AdamW's state%s and "
                                 "of the weights, gathering a layer's weights as it uses them (%s)",
                     t->ranks, t->ranks, full ? ", of the gradients" : "", need);
        return true;
    }
    return false;
}

/* On a GPU, the offloads: AdamW to the host, then the weights (one rank
 * streams them). */
static bool offload_change(const fit *f, char *text, size_t size)
{
    const ft_train_run *run = f->run;
    const ft_train_options *t = &run->train_options;
    bool full = run->model_options.finetuning == FT_FINETUNE_FULL;
    char need[160];
    if (!f->on_gpu)
        return false;
    /* offload_optimizer needs a ZeRO stage: with ranks the highest, which did not fit alone; one rank
     * names stage 1 and trains as stage 0 */
    int stage = t->ranks > 1 ? 3 : t->zero_stage > 0 ? t->zero_stage : 1;
    if (!t->offload_optimizer &&
        fits(f, &run->model_options, t->ranks > 1 ? 3 : 0, true, t->offload_param, need, sizeof need) == 0) {
        snprintf(text, size, "set zero_stage = %d and offload_optimizer = cpu: AdamW's state%s in host memory, "
                             "updated on its cores (%s)",
                 stage, full && t->ranks > 1 ? ", the float master copy and the gradients" : "", need);
        return true;
    }
    for (int both = 0; both <= 1 && !t->offload_param; both++) {
        bool optimizer = t->offload_optimizer || both;
        if (fits(f, &run->model_options, 3, optimizer, true, need, sizeof need) < 0)
            continue;
        bool added = optimizer && !t->offload_optimizer;
        snprintf(text, size, "set zero_stage = 3%s offload_param = cpu%s: the weights%s stay in host memory, a "
                             "layer's weights uploaded as a pass uses them (%s)",
                 added ? "," : " and", added ? " and offload_optimizer = cpu" : "",
                 optimizer ? (full ? ", AdamW's state, the float master copy and the gradients" : " and AdamW's state")
                           : "",
                 need);
        return true;
    }
    return false;
}

/* What each ZeRO stage and offload would take for this stage as it is set
 * otherwise (batch, recomputation): with ranks the four stages, on a GPU also
 * the offloads; one rank on a GPU the offloads alone (it shards nothing
 * else); the stage's own setting marked, added when none of these is it. */
static int list_choices(const fit *f, ft_stage_estimate *out)
{
    const ft_train_options *t = &f->run->train_options;
    typedef struct {
        int stage;
        bool optimizer, param;
    } setting;
    static const setting ranked[] = {{0, false, false}, {1, false, false}, {2, false, false}, {3, false, false},
                                     {2, true, false},  {3, true, false},  {3, true, true}};
    static const setting one_gpu[] = {{0, false, false}, {0, true, false}, {3, false, true}, {3, true, true}};
    const setting *settings = t->ranks > 1 ? ranked : one_gpu;
    size_t n = t->ranks > 1 ? (f->on_gpu ? 7 : 4) : (f->on_gpu ? 4 : 0);
    setting own = {t->zero_stage, t->offload_optimizer, t->offload_param};
    bool listed = false;
    out->n_choices = 0;
    for (size_t k = 0; k <= n && out->n_choices < FT_ESTIMATE_CHOICES; k++) {
        if (k == n && (listed || n == 0))
            break;
        const setting *s = k < n ? &settings[k] : &own;
        bool current = s->stage == own.stage && s->optimizer == own.optimizer && s->param == own.param;
        listed |= current;
        ft_estimate_choice *choice = &out->choices[out->n_choices++];
        uint64_t device, host;
        if (memory_of(f, &f->run->model_options, s->stage, s->optimizer, s->param, &device, &host) < 0)
            return -1;
        /* one rank offloads AdamW at stage 0 but names stage 1, as DeepSpeed asks */
        int named = t->ranks > 1 || !s->optimizer || s->stage ? s->stage : 1;
        snprintf(choice->name, sizeof choice->name, "zero_stage = %d%s%s", named,
                 s->param ? ", offload_param = cpu" : "", s->optimizer ? ", offload_optimizer = cpu" : "");
        choice->device_bytes = (double)device;
        choice->host_bytes = (double)host;
        choice->current = current;
        choice->fits = within(f, device, host);
    }
    return 0;
}

/* When the peak exceeds the budget: the least change that fits, with its figure —
 * a higher ZeRO stage, recomputation, the largest per-device batch (accumulating
 * more micro-batches, so the effective batch stays), on a GPU the offloads, then
 * LoRA. */
static void find_smallest_change(const fit *f, ft_stage_estimate *out)
{
    const ft_train_run *run = f->run;
    const ft_train_options *t = &run->train_options;
    if (stage_change(f, out->smallest_change, sizeof out->smallest_change))
        return;
    ft_model_options options = run->model_options;
    char need[160];
    for (int recompute = options.gradient_checkpointing; recompute <= 1; recompute++) {
        options.gradient_checkpointing = recompute;
        for (int batch = t->batch_size; batch >= 1; batch /= 2) {
            options.max_batch_size = batch;
            if (fits(f, &options, t->zero_stage, t->offload_optimizer, t->offload_param, need, sizeof need) < 0)
                continue;
            if (batch == t->batch_size && !recompute)
                return;
            int accumulation = t->gradient_accumulation_steps * t->batch_size / batch;
            if (batch == t->batch_size)
                snprintf(out->smallest_change, sizeof out->smallest_change,
                         "set gradient_checkpointing = true (%s)", need);
            else
                snprintf(out->smallest_change, sizeof out->smallest_change,
                         "set per_device_train_batch_size = %d and gradient_accumulation_steps = %d%s, the same "
                         "effective batch (%s)",
                         batch, accumulation, recompute ? " with gradient_checkpointing = true" : "", need);
            return;
        }
    }
    if (offload_change(f, out->smallest_change, sizeof out->smallest_change))
        return;
    snprintf(out->smallest_change, sizeof out->smallest_change,
             "no batch size fits%s: shorten the data's cutoff_len or free memory",
             run->model_options.finetuning == FT_FINETUNE_FULL ? "; try finetuning_type = lora" : "");
}

int ft_train_estimate(ft_stage *stage, ft_stage_estimate *out)
{
    ft_train_run run = {.stage = stage, .first_step = -1};
    size_t n_inputs = ft_stage_input_count(stage); /* MODEL DATA [EVAL_DATA] */
    if (n_inputs != 2 && n_inputs != 3)
        return ft_train_check_inputs(&run);
    run.model_dir = ft_stage_input_path(stage, 0);
    run.data_dir = ft_stage_input_path(stage, 1);
    char *config_path = ft_path_join(run.model_dir, "config.json");
    char *meta_path = ft_path_join(run.data_dir, "meta.json");
    bool have_model = ft_path_exists(config_path), have_data = ft_path_exists(meta_path);
    free(config_path);
    free(meta_path);
    if (!have_model || !have_data) {
        const char *missing = have_model ? run.data_dir : run.model_dir;
        ft_estimate_figure *figures[] = {&out->device_bytes, &out->host_bytes, &out->disk_bytes, &out->time_s};
        for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++)
            ft_estimate_unknown(figures[i], "needs %s, which is not built yet", missing);
        return 0;
    }
    ft_model_config config;
    if (ft_token_dataset_meta_read(run.data_dir, &run.meta) < 0 ||
        ft_train_check_images(&run, run.data_dir, &run.meta) < 0 ||
        ft_language_model_config_load(run.model_dir, &config) < 0 ||
        ft_train_read_parameters(&run) < 0)
        return -1;
    const char *backend = ft_stage_param_string(stage, "backend");
    /* Not ft_cuda_device_count: this runs in the engine process, where starting CUDA
     * would break the stages it forks; a GPU's device file answers as well. */
    bool on_gpu = strcmp(backend, "cuda") == 0 ||
                  (strcmp(backend, "auto") == 0 && access("/dev/nvidia0", F_OK) == 0);
    int threads = (int)ft_stage_param_int(stage, "threads");
    int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads <= 0 || threads > cores)
        threads = cores > 0 ? cores : 1;
    ft_train_memory memory;
    if (ft_train_memory_estimate(&config, &run.model_options, on_gpu, threads, ft_train_save_dtype(&config), &memory) < 0)
        return -1;
    const ft_train_options *t = &run.train_options;
    ft_train_memory_apply_zero(&memory, &config, on_gpu, t->ranks, t->zero_stage, t->offload_optimizer,
                               t->offload_param);
    const ft_memory_plan *plan = &memory.plan;
    char total[32], activations[32], buffers[32], runtime[32];
    ft_format_bytes(plan->total_bytes, total, sizeof total);
    ft_format_bytes(plan->activation_bytes, activations, sizeof activations);
    ft_format_bytes(memory.checkpoint_buffer_bytes, buffers, sizeof buffers);
    ft_format_bytes(memory.runtime_bytes, runtime, sizeof runtime);
    const char *shape = run.model_options.gradient_checkpointing ? ", recomputed" : "";
    bool full = run.model_options.finetuning == FT_FINETUNE_FULL;
    /* the ranks of a machine share its host memory: the first writes, the others train */
    int per_node = t->ranks > 1 ? ft_stage_ranks_per_node(stage) : 1;
    uint64_t node_host = ft_train_memory_node_host_bytes(&memory, per_node);
    char node_text[160] = "", first[32], other[32];
    ft_format_bytes(memory.host_peak_bytes, first, sizeof first);
    ft_format_bytes(memory.other_rank_host_peak_bytes, other, sizeof other);
    if (per_node > 1)
        snprintf(node_text, sizeof node_text, "; %d ranks on a machine: %s for the first (it writes), %s for each "
                 "other", per_node, first, other);
    if (on_gpu) {
        char scratch[32], parts[256] = "";
        ft_format_bytes(plan->scratch_bytes, scratch, sizeof scratch);
        if (full) { /* mixed precision: bf16 weights, float master copy, gradients and moments */
            char weights[32], master[32], gradients[32], optimizer[32];
            ft_format_bytes(plan->parameter_bytes, weights, sizeof weights);
            ft_format_bytes(plan->master_bytes, master, sizeof master);
            ft_format_bytes(plan->gradient_bytes, gradients, sizeof gradients);
            ft_format_bytes(plan->optimizer_bytes, optimizer, sizeof optimizer);
            bool master_on_host = t->zero_stage == 3 && t->offload_optimizer; /* param_shards.h */
            snprintf(parts, sizeof parts, "bf16 weights %s, float master weights %s, float gradients %s, AdamW %s, ",
                     weights, master_on_host ? "in host memory" : master, gradients,
                     t->offload_optimizer ? "in host memory" : optimizer);
        }
        ft_estimate_set(&out->device_bytes, (double)memory.device_peak_bytes,
                        "memory plan in bf16 for %d x %u tokens%s (%sactivations %s), with the cuda backend's scratch "
                        "%s (cuBLASLt workspace, LoRA and attention backward scratch)",
                        run.train_options.batch_size, run.meta.cutoff_len, shape, parts, activations, scratch);
        ft_estimate_set(&out->host_bytes, (double)node_host,
                        "host buffers while %s, and the program's %s%s", memory.peak_phase, runtime, node_text);
    } else {
        ft_estimate_set(&out->device_bytes, 0.0, "the cpu backend uses no GPU");
        ft_estimate_set(&out->host_bytes, (double)node_host,
                        "memory plan %s for %d x %u tokens%s (activations %s), peak while %s (checkpoint buffer "
                        "%s), the program and %d BLAS threads %s%s",
                        total, run.train_options.batch_size, run.meta.cutoff_len, shape, activations,
                        memory.peak_phase, buffers, threads, runtime, node_text);
    }
    fit f = {&run, &config, threads, per_node, on_gpu, on_gpu ? ft_stage_gpu_free_bytes() : out->host_budget_bytes,
             out->host_budget_bytes};
    if (on_gpu)
        out->device_budget_bytes = f.budget;
    if (f.budget > 0 && (on_gpu ? memory.device_peak_bytes : node_host) > f.budget)
        find_smallest_change(&f, out);
    if (list_choices(&f, out) < 0)
        return -1;
    train_writes writes = count_writes(&run, &config, &memory);
    estimate_disk(&run, &writes, out);
    out->device_name = on_gpu ? "cuda" : "cpu";
    return estimate_work(&run, &config, &writes, out);
}

