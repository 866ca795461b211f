/* init: a Hugging Face model folder with random weights.
 *
 *   models/tiny: init
 *   models/qwen-shape: init tokenizer.json
 *       shape = qwen2.5-0.5b
 *       num_hidden_layers = 4
 *
 * The optional input is the tokenizer; the rest is parameters (rules/init.ft).
 * A LLaVA shape (tiny-llava, llava-1.5-7b, llava-llama3-8b) writes a
 * LlavaForConditionalGeneration folder (llava_init.h); the dimension parameters
 * then shape its language model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/model/llava_init.h"
#include "ftpipe/model/model_init.h"

/* Sets *field from a positive parameter; 0 keeps it. Returns 1 when set. */
static int override(ft_stage *stage, const char *name, int *field)
{
    int64_t value = ft_stage_param_int(stage, name);
    if (value < 0 || value > 1 << 24)
        return ft_stage_fail(stage, "%s = %lld: expected 0 (keep the shape's) or a positive size", name,
                             (long long)value);
    if (value == 0)
        return 0;
    *field = (int)value;
    return 1;
}

static int set_architecture(ft_stage *stage, ft_model_config *config)
{
    const char *name = ft_stage_param_string(stage, "architecture");
    if (strcmp(name, "shape") == 0)
        return 0;
    ft_architecture architecture = strcmp(name, "qwen2") == 0   ? FT_ARCH_QWEN2
                                   : strcmp(name, "qwen3") == 0 ? FT_ARCH_QWEN3
                                                                : FT_ARCH_LLAMA;
    if (architecture != config->architecture)
        config->has_llama3_rope_scaling = false; /* the shape's scaling belongs to its architecture */
    config->architecture = architecture;
    config->attention_bias = architecture == FT_ARCH_QWEN2;
    config->qk_norm = architecture == FT_ARCH_QWEN3;
    return 0;
}

/* The shape's text model into config; a LLaVA shape's whole into *llava (NULL: not one). */
static int configure(ft_stage *stage, ft_model_config *config, ft_llava_shape *llava, bool *is_llava)
{
    const char *name = ft_stage_param_string(stage, "shape");
    *is_llava = ft_llava_is_shape(name);
    if (*is_llava) {
        if (ft_llava_shape_get(name, llava) < 0)
            return -1;
        *config = llava->text;
    } else if (ft_model_shape(name, config) < 0) {
        char *text_shapes = ft_xstrdup(ft_error_message());
        ft_error("%s; LLaVA: " FT_LLAVA_SHAPES, text_shapes);
        free(text_shapes);
        return -1;
    }
    if (set_architecture(stage, config) < 0)
        return -1;
    int set_vocab = override(stage, "vocab_size", &config->vocab_size);
    int set_hidden = override(stage, "hidden_size", &config->hidden_size);
    int set_inner = override(stage, "intermediate_size", &config->intermediate_size);
    int set_layers = override(stage, "num_hidden_layers", &config->num_hidden_layers);
    int set_heads = override(stage, "num_attention_heads", &config->num_attention_heads);
    int set_kv_heads = override(stage, "num_key_value_heads", &config->num_key_value_heads);
    int set_head_dim = override(stage, "head_dim", &config->head_dim);
    if (set_vocab < 0 || set_hidden < 0 || set_inner < 0 || set_layers < 0 || set_heads < 0 || set_kv_heads < 0 ||
        set_head_dim < 0)
        return -1;
    if (!set_head_dim && (set_hidden || set_heads)) {
        if (config->hidden_size % config->num_attention_heads != 0)
            return ft_stage_fail(stage, "hidden_size %d is not a multiple of num_attention_heads %d; set head_dim",
                                 config->hidden_size, config->num_attention_heads);
        config->head_dim = config->hidden_size / config->num_attention_heads;
    }
    const char *tie = ft_stage_param_string(stage, "tie_word_embeddings");
    if (strcmp(tie, "shape") != 0)
        config->tie_word_embeddings = strcmp(tie, "true") == 0;
    return 0;
}

static int report_progress(void *context, uint64_t bytes_done, uint64_t bytes_total)
{
    ft_stage *stage = context;
    char done[32], total[32];
    ft_format_bytes(bytes_done, done, sizeof done);
    ft_format_bytes(bytes_total, total, sizeof total);
    ft_stage_progress(stage, bytes_total ? (double)bytes_done / (double)bytes_total : -1.0, "%s/%s", done, total);
    return ft_stage_cancelled(stage) ? 1 : 0;
}

static int run_init(ft_stage *stage)
{
    if (ft_stage_input_count(stage) > 1)
        return ft_stage_fail(stage, "init takes at most one input, the tokenizer; %zu given",
                             ft_stage_input_count(stage));
    ft_model_init_options options = {0};
    ft_llava_shape llava;
    bool is_llava;
    if (configure(stage, &options.config, &llava, &is_llava) < 0)
        return -1;
    llava.text = options.config;
    options.dtype = strcmp(ft_stage_param_string(stage, "dtype"), "f32") == 0 ? FT_DTYPE_F32 : FT_DTYPE_BF16;
    options.seed = (uint64_t)ft_stage_param_int(stage, "seed");
    options.threads = (int)ft_stage_param_int(stage, "threads");
    options.tokenizer_path = ft_stage_input_count(stage) ? ft_stage_input_path(stage, 0) : NULL;
    options.progress = report_progress;
    options.progress_context = stage;
    const char *output = ft_stage_output_path(stage);
    if ((is_llava ? ft_llava_init_write(output, &llava, &options) : ft_model_init_write(output, &options)) < 0)
        return -1;
    ft_model_config config;
    if ((is_llava ? ft_llava_text_config_load(output, &config) : ft_model_config_load(output, &config)) < 0)
        return -1;
    char size[32];
    size_t parameters = ft_model_config_parameter_count(&config);
    if (is_llava) {
        llava.text = config;
        parameters = ft_llava_parameter_count(&llava);
    }
    ft_format_bytes(parameters * (options.dtype == FT_DTYPE_F32 ? 4 : 2), size, sizeof size);
    ft_stage_summary(stage, "%s%s: %d layers, hidden %d, vocab %d, %.2fM parameters, %s",
                     is_llava ? "LlavaForConditionalGeneration with " : "", config.architecture_name,
                     config.num_hidden_layers, config.hidden_size, config.vocab_size, parameters / 1e6, size);
    return 0;
}

/* The folder is the weights in their dtype; the tokenizer and config are small. */
static int estimate_init(ft_stage *stage, ft_stage_estimate *out)
{
    ft_model_config config;
    ft_llava_shape llava;
    bool is_llava;
    if (configure(stage, &config, &llava, &is_llava) < 0)
        return -1;
    if (config.vocab_size == 0 && ft_stage_input_count(stage) > 0) {
        ft_estimate_unknown(&out->disk_bytes, "the vocabulary comes from %s", ft_stage_input_path(stage, 0));
        return 0;
    }
    if (config.vocab_size == 0) /* the built-in tokenizer's, and <image> after it for LLaVA */
        config.vocab_size = FT_BUILTIN_TOKENIZER_VOCAB + is_llava;
    size_t parameters = ft_model_config_parameter_count(&config);
    if (is_llava) {
        llava.text = config;
        parameters = ft_llava_parameter_count(&llava);
    }
    size_t element_bytes = strcmp(ft_stage_param_string(stage, "dtype"), "f32") == 0 ? 4 : 2;
    ft_estimate_set(&out->disk_bytes, (double)parameters * (double)element_bytes, "%.2fM parameters x %zu bytes",
                    (double)parameters / 1e6, element_bytes);
    return 0;
}

const ft_stage_kind ft_kind_init = {
    .name = "init",
    .version = 1, /* a LLaVA shape is a new name, so no earlier key changes */
    .run = run_init,
    .estimate = estimate_init,
};
