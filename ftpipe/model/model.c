/* model: the weights' layout in one buffer, loading them from a Hugging Face
 * folder, the memory plan, the RoPE tables. Forward and backward are in
 * model_pass.c. */
#include "ftpipe/model/model.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/vision_memory.h"
#include "model_internal.h"

/* --- the weights' layout --- */

static size_t add_weight(ft_model *model, size_t *offsets, const char *name, int64_t rows, int64_t cols,
                         bool decay)
{
    size_t offset = model->n_params, count = (size_t)rows * (size_t)(cols ? cols : 1);
    offsets[model->n_weights] = offset;
    model->weights[model->n_weights++] = (ft_param_tensor){ft_xstrdup(name), NULL, NULL, count, decay,
                                                           cols ? 2 : 1, {rows, cols}};
    model->n_params += count;
    return offset;
}

static size_t add_layer_weight(ft_model *model, size_t *offsets, int layer, const char *name, int64_t rows,
                               int64_t cols, bool decay)
{
    char full[160];
    snprintf(full, sizeof full, "model.layers.%d.%s", layer, name);
    return add_weight(model, offsets, full, rows, cols, decay);
}

/* Every weight in Hugging Face's order and names; norms and biases are not decayed. */
static void lay_out_weights(ft_model *model, size_t *offsets)
{
    const ft_model_config *c = &model->config;
    int64_t hidden = c->hidden_size, inner = c->intermediate_size;
    int64_t q_width = (int64_t)c->num_attention_heads * c->head_dim;
    int64_t kv_width = (int64_t)c->num_key_value_heads * c->head_dim;
    model->embed = add_weight(model, offsets, "model.embed_tokens.weight", c->vocab_size, hidden, true);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        ft_layer_offsets *o = &model->layers[l];
        o->q_bias = o->k_bias = o->v_bias = o->q_norm = o->k_norm = FT_ABSENT;
        o->input_norm = add_layer_weight(model, offsets, l, "input_layernorm.weight", hidden, 0, false);
        o->q = add_layer_weight(model, offsets, l, "self_attn.q_proj.weight", q_width, hidden, true);
        if (c->attention_bias)
            o->q_bias = add_layer_weight(model, offsets, l, "self_attn.q_proj.bias", q_width, 0, false);
        o->k = add_layer_weight(model, offsets, l, "self_attn.k_proj.weight", kv_width, hidden, true);
        if (c->attention_bias)
            o->k_bias = add_layer_weight(model, offsets, l, "self_attn.k_proj.bias", kv_width, 0, false);
        o->v = add_layer_weight(model, offsets, l, "self_attn.v_proj.weight", kv_width, hidden, true);
        if (c->attention_bias)
            o->v_bias = add_layer_weight(model, offsets, l, "self_attn.v_proj.bias", kv_width, 0, false);
        o->o = add_layer_weight(model, offsets, l, "self_attn.o_proj.weight", hidden, q_width, true);
        if (c->qk_norm) {
            o->q_norm = add_layer_weight(model, offsets, l, "self_attn.q_norm.weight", c->head_dim, 0, false);
            o->k_norm = add_layer_weight(model, offsets, l, "self_attn.k_norm.weight", c->head_dim, 0, false);
        }
        o->post_norm = add_layer_weight(model, offsets, l, "post_attention_layernorm.weight", hidden, 0, false);
        o->gate = add_layer_weight(model, offsets, l, "mlp.gate_proj.weight", inner, hidden, true);
        o->up = add_layer_weight(model, offsets, l, "mlp.up_proj.weight", inner, hidden, true);
        o->down = add_layer_weight(model, offsets, l, "mlp.down_proj.weight", hidden, inner, true);
    }
    model->final_norm = add_weight(model, offsets, "model.norm.weight", hidden, 0, false);
    model->lm_head = c->tie_word_embeddings
                         ? model->embed
                         : add_weight(model, offsets, "lm_head.weight", c->vocab_size, hidden, true);
}

static size_t *make_layout(ft_model *model)
{
    size_t capacity = 3 + 14 * (size_t)model->config.num_hidden_layers;
    model->weights = ft_xcalloc(capacity, sizeof *model->weights);
    model->layers = ft_xcalloc((size_t)model->config.num_hidden_layers, sizeof *model->layers);
    size_t *offsets = ft_xcalloc(capacity, sizeof *offsets);
    lay_out_weights(model, offsets);
    return offsets;
}

static void free_layout(ft_model *model)
{
    for (size_t i = 0; i < model->n_weights; i++)
        free((char *)model->weights[i].name);
    free(model->weights);
    free(model->layers);
}

/* --- checks and the memory plan --- */

static int check_options(const ft_model_config *config, const ft_model_options *options)
{
    if (options->max_batch_size < 1 || options->max_seq_len < 1)
        return ft_error("the batch size (%d) and sequence length (%d) must be at least 1", options->max_batch_size,
                        options->max_seq_len);
    if ((long long)options->max_batch_size * options->max_seq_len > INT_MAX / 64)
        return ft_error("a batch of %d x %d tokens is too large", options->max_batch_size, options->max_seq_len);
    if (options->finetuning == FT_FINETUNE_LORA && !options->use_lora)
        return ft_error("LoRA fine-tuning needs a LoRA configuration");
    if (options->use_lora && ft_lora_config_check(&options->lora) < 0)
        return -1;
    if (config->head_dim % 2 != 0)
        return ft_error("head_dim %d is odd; rotary embeddings need an even head_dim", config->head_dim);
    bool vision = config->vision_language || config->llava;
    if ((options->train_projector || options->freeze_language_model) &&
        (options->finetuning != FT_FINETUNE_FULL || !vision))
        return ft_error("training the multi-modal projector whole comes with full fine-tuning of a vision-language "
                        "model (finetuning_type = full); with LoRA, name its layers in lora_target");
    if (options->freeze_language_model && !options->train_projector)
        return ft_error("with the language model frozen nothing is left to train: train the projector");
    if (options->gradient_shards < 0 || options->optimizer_shards < 0)
        return ft_error("gradient_shards = %d, optimizer_shards = %d: expected ZeRO's ranks, or 0",
                        options->gradient_shards, options->optimizer_shards);
    if (options->use_lora && (options->lora.targets & FT_LORA_PROJECTOR_TARGETS) && !vision)
        return ft_error("lora_target names a multi-modal projector's layers (linear_1, linear_2, mlp.0, mlp.2), but "
                        "%s is a text-only model, which has none", config->architecture_name);
    return 0;
}

/* What runs where: a vision-language model's full fine-tuning keeps to the cpu
 * backend until it has run on a GPU (its LoRA runs on cuda). */
static int check_backend(const ft_model_config *config, const ft_backend *backend, const ft_model_options *options)
{
    if ((config->vision_language || config->llava) && options->finetuning == FT_FINETUNE_FULL &&
        backend->dtype != FT_DTYPE_F32)
        return ft_error("full fine-tuning of a vision-language model runs on the cpu backend only for now: use LoRA "
                        "(finetuning_type = lora) on the %s backend, or backend = cpu",
                        backend->name);
    return 0;
}

static bool test_master_copy; /* ft_model_test_master_copy */

void ft_model_test_master_copy(bool keep) { test_master_copy = keep; }

/* Full fine-tuning on a backend whose weights are not float keeps a float
 * master copy of them, which the optimizer updates (mixed precision); tests
 * ask for one of float weights too (model.h). */
static bool needs_master(const ft_model_options *options, size_t element_bytes)
{
    return options->finetuning == FT_FINETUNE_FULL && (element_bytes != sizeof(float) || test_master_copy);
}

/* A vision-language model's projector's shapes (weights NULL). */
static ft_projector_weights projector_shape(const ft_model_config *config)
{
    ft_projector_weights shape; /* a weight the model has points anywhere: the counts ask which are NULL */
    if (config->vision_language) {
        ft_vision_qwen2_merger_shape(&config->vision, &shape);
        shape.norm_weight = shape.bias_1 = shape.bias_2 = &shape;
        shape.norm_bias = config->vision.qwen2_5 ? NULL : &shape;
    } else {
        ft_vision_clip_projector_shape(&config->llava_tower, &shape);
        shape.bias_1 = shape.bias_2 = config->llava_tower.projector_bias ? &shape : NULL;
    }
    shape.weight_1 = shape.weight_2 = &shape;
    return shape;
}

/* What training the projector adds to the plan: its weights' count (trained
 * whole) and its pass's memory kept for backward, beside the frozen pass the
 * tower's work already counts. */
static void plan_projector(const ft_model_config *config, const ft_model_options *options, size_t element_bytes,
                           size_t *parameter_count, size_t *activation_bytes)
{
    *parameter_count = 0;
    *activation_bytes = 0;
    bool lora = options->use_lora && options->finetuning == FT_FINETUNE_LORA &&
                (options->lora.targets & FT_LORA_PROJECTOR_TARGETS);
    if (!options->train_projector && !lora)
        return;
    ft_projector_weights shape = projector_shape(config);
    if (options->train_projector)
        *parameter_count = ft_projector_parameter_count(&shape);
    int64_t rows = (int64_t)options->max_batch_size * options->max_seq_len; /* image tokens at most */
    int rank = options->use_lora ? options->lora.rank : 0;
    *activation_bytes = ft_projector_work_bytes(&shape, rows, rank, true, element_bytes) -
                        ft_projector_work_bytes(&shape, rows, 0, false, element_bytes);
}

int ft_model_head_chunk_rows(const ft_model_config *config, int max_rows, size_t element_bytes)
{
    /* bf16 on a GPU: 2048 rows, so that lm_head's products are bound by arithmetic,
     * not by reading its [vocab, hidden] weight once per chunk. float on the cpu:
     * 16M logits, where a few hundred rows keep the BLAS busy and host memory is
     * the scarcer thing. */
    size_t rows = element_bytes == 2 ? 2048 : ((size_t)16 << 20) / (size_t)config->vocab_size;
    if (rows < 1)
        rows = 1;
    return rows < (size_t)max_rows ? (int)rows : max_rows;
}

size_t ft_model_n_units(const ft_model *model) { return (size_t)model->config.num_hidden_layers + 2; }

size_t ft_model_unit_end(const ft_model *model, size_t unit)
{
    size_t layers = (size_t)model->config.num_hidden_layers;
    return unit < layers ? model->layers[unit].input_norm : unit == layers ? model->final_norm : model->n_params;
}

static size_t unit_count(const ft_model *model, size_t unit)
{
    return ft_model_unit_end(model, unit) - (unit ? ft_model_unit_end(model, unit - 1) : 0);
}

size_t ft_model_largest_unit(const ft_model *model)
{
    size_t largest = 0;
    for (size_t u = 0; u < ft_model_n_units(model); u++)
        largest = unit_count(model, u) > largest ? unit_count(model, u) : largest;
    return largest;
}

/* Full fine-tuning's float gradients with gradient_shards: this rank's shard of
 * every unit (its owned part and the shared rest), and the windows. */
static size_t sharded_gradient_count(const ft_model *model, int ranks)
{
    size_t count = 0;
    for (size_t u = 0; u < ft_model_n_units(model); u++)
        count += unit_count(model, u) / (size_t)ranks + unit_count(model, u) % (size_t)ranks;
    return count + ft_model_gradient_window_elements(model, ranks, false);
}

size_t ft_model_gradient_window_elements(const ft_model *model, int ranks, bool on_host)
{
    size_t layer = 0; /* units 1 to layers: the decoder layers */
    for (size_t u = 1; u + 1 < ft_model_n_units(model); u++)
        layer = unit_count(model, u) > layer ? unit_count(model, u) : layer;
    return ft_model_largest_unit(model) + (ranks > 1 || on_host ? layer : 0);
}

/* With offload_optimizer the shard is host memory (grad_shards.h): the
 * backend holds a staging buffer of the largest unit's part instead. */
static size_t gradient_staging_count(const ft_model *model, int ranks)
{
    size_t largest = 0;
    for (size_t u = 0; u < ft_model_n_units(model); u++) {
        size_t part = unit_count(model, u) / (size_t)ranks + unit_count(model, u) % (size_t)ranks;
        largest = part > largest ? part : largest;
    }
    return largest;
}

static bool shards_gradients(const ft_model_options *options)
{
    return options->finetuning == FT_FINETUNE_FULL && !options->freeze_language_model && options->gradient_shards > 0;
}

/* What the model allocates, with weights and activations of element_bytes each. */
static void plan_memory(const ft_model *model, size_t element_bytes, size_t backend_scratch_bytes,
                        ft_memory_plan *plan)
{
    const ft_model_options *options = &model->options;
    memset(plan, 0, sizeof *plan);
    plan->parameter_bytes = model->n_params * element_bytes;
    int rows = options->max_batch_size * options->max_seq_len;
    /* a vision tower's weights in the backend's dtype, and its pass over the most a batch can hold */
    plan->parameter_bytes += ft_vision_tower_weight_bytes(&model->config, element_bytes);
    plan->activation_bytes += ft_vision_tower_work_bytes(&model->config, rows, element_bytes);
    if (options->use_lora)
        plan->adapter_bytes = ft_lora_planned_parameter_count(&model->config, &options->lora) * sizeof(float);
    size_t projector_count, projector_bytes;
    plan_projector(&model->config, options, element_bytes, &projector_count, &projector_bytes);
    plan->activation_bytes += projector_bytes;
    if (options->finetuning == FT_FINETUNE_LORA)
        plan->gradient_bytes = plan->adapter_bytes;
    else if (options->finetuning == FT_FINETUNE_FULL)
        plan->gradient_bytes = ((options->freeze_language_model ? 0 : model->n_params) + projector_count) * sizeof(float);
    plan->optimizer_bytes = 2 * plan->gradient_bytes; /* of every trained value */
    if (options->optimizer_offloaded)
        plan->optimizer_bytes = 0; /* in host memory */
    else if (options->optimizer_shards > 1) /* this rank's share */
        plan->optimizer_bytes = (plan->optimizer_bytes + (size_t)options->optimizer_shards - 1) /
                                (size_t)options->optimizer_shards;
    /* offload_optimizer keeps the shard in host memory, unless a trained projector's gradients sit beside it */
    if (shards_gradients(options) && options->optimizer_offloaded && projector_count == 0)
        plan->gradient_bytes = (ft_model_gradient_window_elements(model, options->gradient_shards, true) +
                                gradient_staging_count(model, options->gradient_shards)) *
                               sizeof(float);
    else if (shards_gradients(options))
        plan->gradient_bytes = (sharded_gradient_count(model, options->gradient_shards) + projector_count) *
                               sizeof(float);
    if (needs_master(options, element_bytes))
        plan->master_bytes = model->n_params * sizeof(float);
    plan->activation_bytes += ft_model_plan_activations(&model->config, options, element_bytes,
                                                       ft_model_head_chunk_rows(&model->config, rows, element_bytes), NULL, NULL);
    plan->scratch_bytes = backend_scratch_bytes;
    plan->total_bytes = plan->parameter_bytes + plan->master_bytes + plan->adapter_bytes + plan->gradient_bytes +
                        plan->optimizer_bytes + plan->activation_bytes + plan->scratch_bytes;
}

int ft_model_plan_memory(const ft_model_config *config, const ft_model_options *options, ft_dtype dtype,
                         ft_memory_plan *out)
{
    if (check_options(config, options) < 0)
        return -1;
    ft_model model = {.config = *config, .options = *options};
    size_t *offsets = make_layout(&model);
    plan_memory(&model, ft_dtype_size(dtype), 0, out);
    free(offsets);
    free_layout(&model);
    return 0;
}

size_t ft_model_config_largest_unit(const ft_model_config *config)
{
    ft_model model = {.config = *config};
    size_t *offsets = make_layout(&model);
    size_t largest = ft_model_largest_unit(&model);
    free(offsets);
    free_layout(&model);
    return largest;
}

size_t ft_model_config_gathered_weight_bytes(const ft_model_config *config, size_t element_bytes)
{
    return 2 * ft_model_config_largest_unit(config) * element_bytes + ft_vision_tower_weight_bytes(config, element_bytes);
}

size_t ft_model_weight_gradient_bytes(const ft_model_config *config, int shards)
{
    ft_model model = {.config = *config};
    size_t *offsets = make_layout(&model);
    size_t count = shards > 0 ? sharded_gradient_count(&model, shards) : model.n_params;
    free(offsets);
    free_layout(&model);
    return count * sizeof(float);
}

size_t ft_model_gradient_window_bytes(const ft_model_config *config, int shards, bool on_host)
{
    ft_model model = {.config = *config};
    size_t *offsets = make_layout(&model);
    size_t count = ft_model_gradient_window_elements(&model, shards, on_host);
    free(offsets);
    free_layout(&model);
    return count * sizeof(float);
}

size_t ft_model_gradient_staging_bytes(const ft_model_config *config, int shards)
{
    ft_model model = {.config = *config};
    size_t *offsets = make_layout(&model);
    size_t count = gradient_staging_count(&model, shards > 0 ? shards : 1);
    free(offsets);
    free_layout(&model);
    return count * sizeof(float);
}

ft_param_tensor *ft_model_weight_list(const ft_model_config *config, size_t *count)
{
    ft_model model = {.config = *config};
    free(make_layout(&model));
    free(model.layers);
    *count = model.n_weights;
    return model.weights;
}

void ft_model_weight_list_free(ft_param_tensor *list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free((char *)list[i].name);
    free(list);
}

/* --- loading --- */

/* Each weight goes to the backend in its dtype: straight from the file when the
 * dtypes agree, else converted through float on the host. */
typedef struct {
    float *floats;      /* [largest] */
    uint16_t *bf16;     /* [largest], for a bf16 backend */
} staging;

/* A vision-language model's language model is model.* (Qwen2-VL) or
 * language_model.model.* and language_model.lm_head (LLaVA) in released
 * checkpoints and what transformers 5 saves; transformers 4.5x saves
 * model.language_model.* and lm_head. */
const ft_tensor_view *ft_model_find_weight(const ft_model *model, const ft_safetensors *set, const char *name)
{
    const ft_tensor_view *view = ft_safetensors_find(set, name);
    if (view)
        return view;
    static const char llava_model[] = "language_model.model.", llava_head[] = "language_model.lm_head.";
    char other[192];
    if (model->config.vision_language && strncmp(name, "model.", 6) == 0)
        snprintf(other, sizeof other, "model.language_model.%s", name + 6);
    else if (model->config.llava && strncmp(name, llava_model, sizeof llava_model - 1) == 0)
        snprintf(other, sizeof other, "model.language_model.%s", name + sizeof llava_model - 1);
    else if (model->config.llava && strncmp(name, llava_head, sizeof llava_head - 1) == 0)
        snprintf(other, sizeof other, "lm_head.%s", name + sizeof llava_head - 1);
    else
        return NULL;
    const ft_tensor_view *found = ft_safetensors_find(set, other);
    if (!found) /* name the layout the model's own files use */
        ft_safetensors_find(set, name);
    return found;
}

/* Weight i: into the master copy in float when there is one (its file's values
 * exactly, the backend's weights made from them after the range), else into
 * the weights in the backend's dtype. */
static int load_weight(ft_model *model, const char *model_dir, const ft_safetensors *set, size_t index,
                       const staging *buffers)
{
    const ft_param_tensor *weight = &model->weights[index];
    char *name = ft_xasprintf("%s%s", model->weight_prefix, weight->name);
    const ft_tensor_view *view = ft_model_find_weight(model, set, name);
    free(name);
    if (!view)
        return ft_error_context("%s: the weights do not match config.json", model_dir);
    bool same = view->n_dims == weight->n_dims && view->shape[0] == weight->shape[0] &&
                (weight->n_dims == 1 || view->shape[1] == weight->shape[1]);
    if (!same) {
        char expected[64];
        if (weight->n_dims == 1)
            snprintf(expected, sizeof expected, "[%lld]", (long long)weight->shape[0]);
        else
            snprintf(expected, sizeof expected, "[%lld, %lld]", (long long)weight->shape[0],
                     (long long)weight->shape[1]);
        return ft_error("%s: tensor %s does not have the shape %s that config.json implies", view->file,
                        weight->name, expected);
    }
    ft_backend *backend = model->backend;
    if (view->dtype == backend->dtype && !model->master_weights) {
        backend->upload(backend, weight->value, view->data, view->size_bytes);
        return 0;
    }
    if (ft_tensor_to_f32(view, buffers->floats) < 0)
        return -1;
    if (model->master_weights) {
        backend->upload(backend, model->master_weights[index].value, buffers->floats, weight->count * sizeof(float));
        return 0;
    }
    if (backend->dtype == FT_DTYPE_F32) {
        backend->upload(backend, weight->value, buffers->floats, weight->count * sizeof(float));
        return 0;
    }
    for (size_t i = 0; i < weight->count; i++)
        buffers->bf16[i] = ft_f32_to_bf16(buffers->floats[i]);
    backend->upload(backend, weight->value, buffers->bf16, weight->count * sizeof(uint16_t));
    return 0;
}

int ft_model_load_weight_range(ft_model *model, const char *model_dir, const ft_safetensors *set, size_t first,
                               size_t count)
{
    size_t largest = 1;
    for (size_t i = first; i < first + count; i++)
        if (model->weights[i].count > largest)
            largest = model->weights[i].count;
    bool converts = model->backend->dtype == FT_DTYPE_BF16 && !model->master_weights;
    staging buffers = {malloc(largest * sizeof(float)), NULL};
    if (converts)
        buffers.bf16 = malloc(largest * sizeof(uint16_t));
    int status = 0;
    if (!buffers.floats || (converts && !buffers.bf16))
        status = ft_error("out of host memory staging a weight of %zu elements", largest);
    for (size_t i = first; i < first + count && status == 0; i++)
        status = load_weight(model, model_dir, set, i, &buffers);
    if (status == 0 && model->master) /* loaded whole (ZeRO-3's loading casts each unit itself) */
        ft_model_refresh_weights(model);
    free(buffers.floats);
    free(buffers.bf16);
    return status;
}

static int load_weights(ft_model *model, const char *model_dir)
{
    ft_safetensors *set;
    if (ft_safetensors_open(model_dir, &set) < 0)
        return -1;
    int status = ft_model_load_weight_range(model, model_dir, set, 0, model->n_weights);
    ft_safetensors_close(set);
    return status;
}

/* --- RoPE --- */

/* Inverse frequencies as transformers computes them (float32), with Llama 3's
 * rope scaling: long wavelengths slowed by `factor`, short ones kept, a smooth
 * blend between. */
static void inverse_frequencies(const ft_model_config *c, float *inverse)
{
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++)
        inverse[i] = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)c->head_dim);
    if (!c->has_llama3_rope_scaling)
        return;
    double factor = c->rope_scaling_factor, low = c->rope_low_freq_factor, high = c->rope_high_freq_factor;
    double original = c->rope_original_max_position_embeddings;
    for (int i = 0; i < half; i++) {
        double frequency = inverse[i], wavelength = 2.0 * M_PI / frequency;
        if (wavelength > original / low) {
            frequency /= factor;
        } else if (wavelength >= original / high) {
            double smooth = (original / wavelength - low) / (high - low);
            frequency = (1.0 - smooth) * frequency / factor + smooth * frequency;
        }
        inverse[i] = (float)frequency;
    }
}

static void fill_rope_tables(ft_model *model)
{
    int half = model->config.head_dim / 2, positions = model->options.max_seq_len;
    float *inverse = ft_xmalloc((size_t)half * sizeof(float));
    float *cos_table = ft_xmalloc((size_t)positions * half * sizeof(float));
    float *sin_table = ft_xmalloc((size_t)positions * half * sizeof(float));
    inverse_frequencies(&model->config, inverse);
    for (int p = 0; p < positions; p++)
        for (int i = 0; i < half; i++) {
            float angle = (float)p * inverse[i];
            cos_table[(size_t)p * half + i] = (float)cos((double)angle);
            sin_table[(size_t)p * half + i] = (float)sin((double)angle);
        }
    size_t bytes = (size_t)positions * half * sizeof(float);
    model->backend->upload(model->backend, model->act.rope_cos, cos_table, bytes);
    model->backend->upload(model->backend, model->act.rope_sin, sin_table, bytes);
    free(inverse);
    free(cos_table);
    free(sin_table);
}

/* --- making and freeing --- */

static void *alloc_bytes(ft_model *model, size_t bytes, const char *what)
{
    void *memory = model->backend->alloc(model->backend, bytes ? bytes : 1);
    if (!memory)
        ft_error_context("allocating the model's %s", what);
    return memory;
}

/* The head size of a vision tower's attention, 0 without one. */
static int vision_head_dim(const ft_model *model)
{
    if (model->config.vision_language)
        return model->config.vision.embed_dim / model->config.vision.num_heads;
    const ft_clip_vision_config *clip = &model->config.llava_tower.vision;
    if (model->config.llava && clip->num_attention_heads > 0)
        return clip->hidden_size / clip->num_attention_heads;
    return 0;
}

static ft_backend_limits limits_of(const ft_model_config *c, const ft_model_options *options, size_t planned_bytes)
{
    int widest = c->hidden_size;
    if (c->num_attention_heads * c->head_dim > widest)
        widest = c->num_attention_heads * c->head_dim;
    if (c->intermediate_size > widest)
        widest = c->intermediate_size;
    for (int which = 0; which < 2 && options->use_lora; which++) /* the projector's adapted layers, its rows fewer */
        if (options->lora.targets & (FT_LORA_PROJECTOR_FIRST << which)) {
            int in_features, out_features;
            ft_lora_projector_shape(c, which, &in_features, &out_features);
            widest = in_features > widest ? in_features : widest;
        }
    return (ft_backend_limits){
        .max_rows = options->max_batch_size * options->max_seq_len,
        .max_seq_len = options->max_seq_len,
        .max_features = widest,
        .max_rank = options->use_lora ? options->lora.rank : 0,
        .head_dim = c->head_dim,
        .max_heads = c->num_attention_heads,
        .lora_dropout = options->use_lora && options->lora.dropout > 0.0,
        .planned_bytes = planned_bytes,
    };
}

int ft_model_backend_limits(const ft_model_config *config, const ft_model_options *options, ft_dtype dtype,
                            ft_backend_limits *out)
{
    ft_memory_plan plan;
    if (ft_model_plan_memory(config, options, dtype, &plan) < 0)
        return -1;
    *out = limits_of(config, options, plan.total_bytes);
    return 0;
}

/* A plan's weights and master copy replaced by ZeRO-3's shards of them. */
static void shard_plan(ft_memory_plan *plan, size_t whole_weight_bytes, const ft_sharded_bytes *sharded)
{
    plan->total_bytes = plan->total_bytes - whole_weight_bytes - plan->master_bytes + sharded->weight_bytes +
                        sharded->master_bytes;
    plan->parameter_bytes = plan->parameter_bytes - whole_weight_bytes + sharded->weight_bytes;
    plan->master_bytes = sharded->master_bytes;
}

/* The backend checks the whole plan against its memory, and reserves its
 * scratch, before anything is allocated; sharded: the weights' part of it
 * when ZeRO-3 shards them (NULL: whole). */
static int reserve(ft_model *model, const ft_sharded_bytes *sharded)
{
    ft_memory_plan plan;
    plan_memory(model, model->element_bytes, 0, &plan);
    if (sharded)
        shard_plan(&plan, model->n_params * model->element_bytes, sharded);
    ft_backend_limits limits = limits_of(&model->config, &model->options, plan.total_bytes);
    limits.vision_head_dim = vision_head_dim(model);
    if (model->backend->reserve(model->backend, &limits) == 0)
        return 0;
    if (!plan.master_bytes)
        return -1;
    char weights[32], master[32], gradients[32], optimizer[32], activations[32];
    ft_format_bytes(plan.parameter_bytes, weights, sizeof weights);
    ft_format_bytes(plan.master_bytes, master, sizeof master);
    ft_format_bytes(plan.gradient_bytes, gradients, sizeof gradients);
    ft_format_bytes(plan.optimizer_bytes, optimizer, sizeof optimizer);
    ft_format_bytes(plan.activation_bytes, activations, sizeof activations);
    return ft_error_context("full fine-tuning in %s plans weights %s + their float master copy %s + float gradients "
                            "%s + AdamW's moments %s + activations %s (zero_stage = 1, 2 or 3 over more GPUs with "
                            "offload_optimizer = cpu moves AdamW to host memory, zero_stage = 3 shards the weights "
                            "and their master copy; LoRA needs far less)",
                            ft_dtype_name(model->backend->dtype), weights, master, gradients, optimizer, activations);
}

bool ft_model_keeps_master(const ft_model *model) { return needs_master(&model->options, model->element_bytes); }

int ft_model_allocate(ft_model *model, const size_t *offsets, const ft_sharded_bytes *sharded)
{
    ft_backend *backend = model->backend;
    const ft_model_options *options = &model->options;
    if (reserve(model, sharded) < 0)
        return -1;
    if (!sharded)
        model->params = alloc_bytes(model, model->n_params * model->element_bytes, "weights");
    if (!sharded && !model->params)
        return -1;
    if (options->finetuning == FT_FINETUNE_FULL && !options->freeze_language_model && !shards_gradients(options)) {
        model->grads = alloc_bytes(model, model->n_params * sizeof(float), "gradients");
        if (!model->grads)
            return -1;
        backend->zero(backend, model->grads, model->n_params * sizeof(float));
    }
    if (needs_master(options, model->element_bytes)) { /* ZeRO-3: the shards hold it (param_shards.h) */
        model->master = sharded ? NULL : alloc_bytes(model, model->n_params * sizeof(float), "float master weights");
        if (!sharded && !model->master)
            return -1;
        model->master_weights = ft_xcalloc(model->n_weights ? model->n_weights : 1, sizeof *model->master_weights);
    }
    for (size_t i = 0; i < model->n_weights; i++) {
        /* in the backend's dtype: float on cpu, bf16 on cuda */
        model->weights[i].value = model->params ? (float *)((char *)model->params + offsets[i] * model->element_bytes)
                                                : NULL;
        model->weights[i].grad = model->grads ? model->grads + offsets[i] : NULL;
        if (model->master_weights) {
            model->master_weights[i] = model->weights[i];
            model->master_weights[i].value = model->master ? model->master + offsets[i] : NULL;
        }
    }
    int rows = options->max_batch_size * options->max_seq_len;
    model->head_chunk_rows = ft_model_head_chunk_rows(&model->config, rows, model->element_bytes);
    size_t bytes = ft_model_plan_activations(&model->config, options, model->element_bytes, model->head_chunk_rows,
                                             NULL, NULL);
    model->activation_memory = alloc_bytes(model, bytes, "activations");
    if (!model->activation_memory)
        return -1;
    model->act.layers = ft_xcalloc((size_t)model->config.num_hidden_layers, sizeof *model->act.layers);
    ft_model_plan_activations(&model->config, options, model->element_bytes, model->head_chunk_rows,
                              model->activation_memory, &model->act);
    if (model->config.vision_language) {
        int32_t *index = ft_xmalloc((size_t)rows * sizeof(int32_t));
        for (int r = 0; r < rows; r++)
            index[r] = r;
        backend->upload(backend, model->act.row_index, index, (size_t)rows * sizeof(int32_t));
        free(index);
    }
    model->host_losses = ft_xmalloc((size_t)rows * sizeof(float));
    if (options->use_lora && ft_lora_create(&model->config, &options->lora, backend,
                                            options->finetuning == FT_FINETUNE_LORA, &model->lora) < 0)
        return -1;
    return 0;
}

/* A model of config whose weights are named weight_prefix + the text model's names
 * (LLaVA keeps its language model under language_model.*). */
static ft_model *open_with_config(const ft_model_config *config, const char *weight_prefix, ft_backend *backend,
                                  const ft_model_options *options, size_t **offsets)
{
    ft_model *model = ft_xcalloc(1, sizeof *model);
    model->backend = backend;
    model->options = *options;
    model->element_bytes = ft_dtype_size(backend->dtype);
    model->config = *config;
    if (check_options(&model->config, options) < 0 || check_backend(&model->config, backend, options) < 0) {
        free(model);
        return NULL;
    }
    model->weight_prefix = ft_xstrdup(weight_prefix);
    *offsets = make_layout(model);
    return model;
}

ft_model *ft_model_open(const char *model_dir, ft_backend *backend, const ft_model_options *options,
                        size_t **offsets)
{
    ft_model_config config;
    if (ft_language_model_config_load(model_dir, &config) < 0)
        return NULL;
    /* llava-hf's checkpoints and transformers 5's saves keep the language model here */
    return open_with_config(&config, config.llava ? "language_model." : "", backend, options, offsets);
}

void ft_model_finish(ft_model *model, const ft_sharded_bytes *sharded)
{
    fill_rope_tables(model);
    plan_memory(model, model->element_bytes, model->backend->reserved_bytes(model->backend), &model->plan);
    if (sharded) /* the language model's weights; a vision tower stays whole */
        shard_plan(&model->plan, model->n_params * model->element_bytes, sharded);
}

/* The tower's projector, set up to be trained as the options and the adapter say. */
static int ready_projector(ft_model *model)
{
    ft_projector *projector = model->vision ? ft_vision_qwen2_merger(model->vision)
                                            : ft_vision_clip_projector(model->clip);
    const ft_lora_weights *first = model->lora ? ft_lora_projector_at(model->lora, 0) : NULL;
    const ft_lora_weights *second = model->lora ? ft_lora_projector_at(model->lora, 1) : NULL;
    if (first || second)
        ft_projector_set_lora(projector, first, second, ft_lora_get_config(model->lora));
    model->projector = projector;
    if (!model->options.train_projector)
        return 0;
    if (ft_projector_train_whole(projector) < 0)
        return -1;
    size_t n_projector, n_weights;
    const ft_param_tensor *weights = ft_model_weights(model, &n_weights);
    const ft_param_tensor *tensors = ft_projector_tensors(projector, &n_projector);
    if (model->options.freeze_language_model)
        n_weights = 0;
    model->n_trainable = n_weights + n_projector;
    model->trainable = ft_xcalloc(model->n_trainable, sizeof *model->trainable);
    memcpy(model->trainable, weights, n_weights * sizeof *model->trainable);
    memcpy(model->trainable + n_weights, tensors, n_projector * sizeof *tensors);
    return 0;
}

int ft_model_load_vision(ft_model *model, const char *model_dir)
{
    int status = 0;
    if (model->config.vision_language)
        status = ft_vision_qwen2_load(model_dir, &model->config.vision, model->backend, &model->vision);
    else if (model->config.llava)
        status = ft_vision_clip_load(model_dir, model->backend, &model->clip);
    return status == 0 && (model->vision || model->clip) ? ready_projector(model) : status;
}

size_t ft_model_vision_weight_bytes(const ft_model *model)
{
    return ft_vision_tower_weight_bytes(&model->config, model->element_bytes);
}

/* Allocates an opened model whole, loads its weights and plans its memory. */
static int load_whole(ft_model *model, const char *model_dir, size_t *offsets, ft_model **out)
{
    int status = ft_model_allocate(model, offsets, NULL);
    free(offsets);
    if (status == 0)
        status = load_weights(model, model_dir);
    if (status == 0)
        status = ft_model_load_vision(model, model_dir);
    if (status < 0) {
        ft_model_free(model);
        return -1;
    }
    ft_model_finish(model, NULL);
    *out = model;
    return 0;
}

int ft_model_load(const char *model_dir, ft_backend *backend, const ft_model_options *options, ft_model **out)
{
    size_t *offsets = NULL;
    ft_model *model = ft_model_open(model_dir, backend, options, &offsets);
    return model ? load_whole(model, model_dir, offsets, out) : -1;
}

void ft_model_free(ft_model *model)
{
    if (!model)
        return;
    ft_backend *backend = model->backend;
    if (model->adapter_shards)
        model->adapter_shards_free(model->adapter_shards);
    if (model->shards)
        model->shard_calls->free(model->shards);
    ft_lora_free(model->lora);
    ft_vision_qwen2_free(model->vision);
    ft_vision_clip_free(model->clip);
    if (model->whole_on_host) {
        free(model->params);
        free(model->master);
    } else {
        if (model->params)
            backend->free(backend, model->params);
        if (model->master)
            backend->free(backend, model->master);
    }
    if (model->grads)
        backend->free(backend, model->grads);
    free(model->master_weights);
    free(model->trainable);
    if (model->activation_memory)
        backend->free(backend, model->activation_memory);
    free(model->act.layers);
    free(model->host_losses);
    free(model->host_logits);
    free_layout(model);
    free(model->weight_prefix);
    free(model);
}

const ft_model_config *ft_model_get_config(const ft_model *model) { return &model->config; }
ft_backend *ft_model_backend(const ft_model *model) { return model->backend; }
ft_lora *ft_model_lora(const ft_model *model) { return model->lora; }
ft_memory_plan ft_model_memory(const ft_model *model) { return model->plan; }
ft_param_shards *ft_model_param_shards(const ft_model *model) { return model->shards; }

bool ft_model_weights_on_host(const ft_model *model) { return model->whole_on_host; }

const ft_param_tensor *ft_model_weights(const ft_model *model, size_t *count)
{
    *count = model->n_weights;
    return model->master_weights ? model->master_weights : model->weights;
}

const ft_param_tensor *ft_model_trainable(const ft_model *model, size_t *count)
{
    if (model->options.finetuning == FT_FINETUNE_LORA)
        return ft_lora_tensors(model->lora, count);
    if (model->options.finetuning != FT_FINETUNE_FULL) {
        *count = 0;
        return model->weights;
    }
    if (model->trainable) {
        *count = model->n_trainable;
        return model->trainable;
    }
    return ft_model_weights(model, count);
}

bool ft_model_trains_weights(const ft_model *model)
{
    return model->options.finetuning == FT_FINETUNE_FULL && !model->options.freeze_language_model;
}

bool ft_model_saves_weights(const ft_model *model) { return model->options.finetuning == FT_FINETUNE_FULL; }

int ft_model_gradient_shards(const ft_model *model)
{
    return shards_gradients(&model->options) ? model->options.gradient_shards : 0;
}

void ft_model_refresh_weights(ft_model *model)
{
    if (model->shards && model->master_weights) /* ZeRO-3: the shard from the master copy's shard */
        model->shard_calls->refresh(model->shards);
    else if (model->master && model->params)
        model->backend->cast_from_float(model->backend, model->params, model->master, model->n_params);
}

void ft_model_on_layer_gradients(ft_model *model, void (*done)(void *context, int layer), void *context)
{
    model->layer_gradients_done = done;
    model->layer_gradients_context = context;
}

void ft_model_zero_grads(ft_model *model)
{
    size_t count;
    const ft_param_tensor *tensors = ft_model_trainable(model, &count);
    for (size_t i = 0; i < count; i++)
        if (tensors[i].grad)
            model->backend->zero(model->backend, tensors[i].grad, tensors[i].count * sizeof(float));
    if (model->grad_shards)
        model->grad_calls->zero(model->grad_shards);
}
