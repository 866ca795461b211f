/* model_init: random Hugging Face model folders: the named shapes, the
 * tokenizer, the config, and the weights written shard by shard (so memory
 * stays at one shard) with several threads drawing numbers. */
#include "ftpipe/model/model_init.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/base/thread_pool.h"
#include "ftpipe/base/utf8.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/vision_qwen2.h"
#include "ftpipe/text/tokenizer.h"

/* --- shapes --- */

typedef struct {
    const char *name;
    ft_architecture architecture;
    int vocab, hidden, inner, layers, heads, kv_heads, head_dim, max_positions;
    double eps, theta;
    bool tied;
} shape;

static const shape shapes[] = {
    {"tiny", FT_ARCH_QWEN2, 0, 64, 128, 2, 4, 2, 16, 2048, 1e-6, 1e6, true},
    {"qwen2.5-0.5b", FT_ARCH_QWEN2, 151936, 896, 4864, 24, 14, 2, 64, 32768, 1e-6, 1e6, true},
    {"qwen2.5-1.5b", FT_ARCH_QWEN2, 151936, 1536, 8960, 28, 12, 2, 128, 32768, 1e-6, 1e6, true},
    {"qwen2.5-7b", FT_ARCH_QWEN2, 152064, 3584, 18944, 28, 28, 4, 128, 32768, 1e-6, 1e6, false},
    {"qwen2.5-14b", FT_ARCH_QWEN2, 152064, 5120, 13824, 48, 40, 8, 128, 32768, 1e-5, 1e6, false},
    {"llama3-8b", FT_ARCH_LLAMA, 128256, 4096, 14336, 32, 32, 8, 128, 131072, 1e-5, 500000.0, false},
    {"tiny-qwen2-vl", FT_ARCH_QWEN2, 0, 64, 128, 2, 4, 2, 16, 2048, 1e-6, 1e6, true},
    {"qwen2-vl-2b", FT_ARCH_QWEN2, 151936, 1536, 8960, 28, 12, 2, 128, 32768, 1e-6, 1e6, true},
    {"tiny-qwen2.5-vl", FT_ARCH_QWEN2, 0, 64, 128, 2, 4, 2, 16, 2048, 1e-6, 1e6, true},
    {"qwen2.5-vl-3b", FT_ARCH_QWEN2, 151936, 2048, 11008, 36, 16, 2, 128, 128000, 1e-6, 1e6, true},
    {"qwen2.5-vl-7b", FT_ARCH_QWEN2, 152064, 3584, 18944, 28, 28, 4, 128, 128000, 1e-6, 1e6, false},
};

/* Qwen2.5-VL's tower as released: full attention in blocks 7, 15, 23 and 31 */
#define QWEN2_5_VL_TOWER(out) {32, 1280, 16, 3420, out, 3, 14, 2, 2, 10000.0, true, 112, 0x80808080ull, 2}

/* The vision-language shapes' towers and M-RoPE sections (Qwen2-VL-2B's as released). */
static const struct {
    const char *name;
    int mrope_section[3];
    ft_vision_config vision;
} vision_shapes[] = {
    {"tiny-qwen2-vl", {2, 3, 3}, {2, 32, 2, 64, 64, 3, 14, 2, 2, 10000.0, false, 0, 0, 0}},
    {"qwen2-vl-2b", {16, 24, 24}, {32, 1280, 16, 5120, 1536, 3, 14, 2, 2, 10000.0, false, 0, 0, 0}},
    /* windows of 2 x 2 merged patches, blocks 1 and 3 full */
    {"tiny-qwen2.5-vl", {2, 3, 3}, {4, 32, 2, 48, 64, 3, 14, 2, 2, 10000.0, true, 56, 0xAull, 2}},
    {"qwen2.5-vl-3b", {16, 24, 24}, QWEN2_5_VL_TOWER(2048)},
    {"qwen2.5-vl-7b", {16, 24, 24}, QWEN2_5_VL_TOWER(3584)},
};

static const char *const vision_specials[] = {"<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"};

static const char *architecture_name(ft_architecture architecture, const ft_vision_config *vision)
{
    switch (architecture) {
    case FT_ARCH_QWEN2:
        return !vision ? "Qwen2ForCausalLM"
               : vision->qwen2_5 ? "Qwen2_5_VLForConditionalGeneration"
                                 : "Qwen2VLForConditionalGeneration";
    case FT_ARCH_QWEN3: return "Qwen3ForCausalLM";
    case FT_ARCH_LLAMA: return "LlamaForCausalLM";
    }
    return "";
}

int ft_model_shape(const char *name, ft_model_config *out)
{
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const shape *s = &shapes[i];
        if (strcmp(s->name, name) != 0)
            continue;
        memset(out, 0, sizeof *out);
        *out = (ft_model_config){
            .architecture = s->architecture,
            .vocab_size = s->vocab,
            .hidden_size = s->hidden,
            .intermediate_size = s->inner,
            .num_hidden_layers = s->layers,
            .num_attention_heads = s->heads,
            .num_key_value_heads = s->kv_heads,
            .head_dim = s->head_dim,
            .max_position_embeddings = s->max_positions,
            .rms_norm_eps = s->eps,
            .rope_theta = s->theta,
            .attention_bias = s->architecture == FT_ARCH_QWEN2,
            .qk_norm = s->architecture == FT_ARCH_QWEN3,
            .tie_word_embeddings = s->tied,
            .bos_token_id = -1,
            .eos_token_id = -1,
        };
        for (size_t v = 0; v < sizeof vision_shapes / sizeof *vision_shapes; v++)
            if (strcmp(vision_shapes[v].name, name) == 0) {
                out->vision_language = true;
                out->vision = vision_shapes[v].vision;
                memcpy(out->mrope_section, vision_shapes[v].mrope_section, sizeof out->mrope_section);
            }
        snprintf(out->architecture_name, sizeof out->architecture_name, "%s",
                 architecture_name(s->architecture, out->vision_language ? &out->vision : NULL));
        if (s->architecture == FT_ARCH_LLAMA) { /* Llama 3.1's */
            out->has_llama3_rope_scaling = true;
            out->rope_scaling_factor = 8.0;
            out->rope_low_freq_factor = 1.0;
            out->rope_high_freq_factor = 4.0;
            out->rope_original_max_position_embeddings = 8192;
        }
        return 0;
    }
    return ft_error("unknown model shape '%s'; known: tiny, qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, qwen2.5-14b, "
                    "llama3-8b, "
                    "tiny-qwen2-vl, qwen2-vl-2b, tiny-qwen2.5-vl, qwen2.5-vl-3b, qwen2.5-vl-7b", name);
}

/* --- the tokenizer --- */

/* GPT-2's byte-to-character table, as byte-level BPE vocabularies spell bytes. */
static void byte_to_utf8(int byte, char out[4])
{
    bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
    int code = byte;
    if (!printable) {
        int rank = 0; /* how many non-printable bytes come before this one */
        for (int b = 0; b < byte; b++)
            rank += !((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF));
        code = 256 + rank;
    }
    out[ft_utf8_encode((uint32_t)code, out)] = '\0';
}

static const char *const builtin_specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};

/* The built-in tokenizer; a vision-language model's adds Qwen2-VL's four vision tokens. */
static char *builtin_tokenizer_json(bool vision_language)
{
    json_t *vocab = json_object(), *added = json_array();
    for (int byte = 0; byte < 256; byte++) {
        char text[4];
        byte_to_utf8(byte, text);
        json_object_set_new(vocab, text, json_integer(byte));
    }
    int n_specials = vision_language ? 7 : 3;
    for (int i = 0; i < n_specials; i++)
        json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", 256 + i, "content",
                                               i < 3 ? builtin_specials[i] : vision_specials[i - 3], "single_word",
                                               0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1));
    json_t *byte_level = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                                   "trim_offsets", 0, "use_regex", 1);
    json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:n, s:o, s:{s:s, s:n, s:n, s:s, s:s, s:b, s:b, "
                             "s:b, s:o, s:[]}}",
                             "version", "1.0", "truncation", "padding", "added_tokens", added, "normalizer",
                             "pre_tokenizer", json_deep_copy(byte_level), "post_processor", "decoder", byte_level,
                             "model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "",
                             "end_of_word_suffix", "", "fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 0,
                             "vocab", vocab, "merges");
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_ENSURE_ASCII);
    json_decref(root);
    return text;
}

char *ft_builtin_tokenizer_json(void) { return builtin_tokenizer_json(false); }

static int write_text(const char *dir, const char *name, const char *text)
{
    char *path = ft_path_join(dir, name);
    int status = ft_write_file_atomic(path, text, strlen(text));
    free(path);
    return status;
}

/* Copies the given tokenizer (and the tokenizer_config.json beside it) or writes
 * the built-in one. */
int ft_model_init_place_tokenizer(const char *dir, const char *source, bool vision_language)
{
    if (!source) {
        char *json = builtin_tokenizer_json(vision_language);
        int status = write_text(dir, "tokenizer.json", json);
        free(json);
        if (status == 0)
            status = write_text(dir, "tokenizer_config.json",
                                "{\n  \"bos_token\": null,\n  \"clean_up_tokenization_spaces\": false,\n"
                                "  \"eos_token\": \"<|endoftext|>\",\n  \"pad_token\": \"<|endoftext|>\",\n"
                                "  \"tokenizer_class\": \"PreTrainedTokenizerFast\"\n}\n");
        return status;
    }
    bool folder = ft_path_is_dir(source);
    char *file = folder ? ft_path_join(source, "tokenizer.json") : ft_xstrdup(source);
    char *source_dir = folder ? ft_xstrdup(source) : ft_path_dirname(source);
    char *target = ft_path_join(dir, "tokenizer.json");
    int status = ft_copy_file(file, target);
    char *config = ft_path_join(source_dir, "tokenizer_config.json");
    char *config_target = ft_path_join(dir, "tokenizer_config.json");
    if (status == 0 && ft_path_exists(config))
        status = ft_copy_file(config, config_target);
    free(config_target);
    free(config);
    free(target);
    free(source_dir);
    free(file);
    return status;
}

static int64_t first_token(const ft_tokenizer *tokenizer, const char *const *names, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        int64_t id = ft_tokenizer_token_id(tokenizer, names[i]);
        if (id >= 0)
            return id;
    }
    return -1;
}

/* Vocabulary size and special ids from the tokenizer now in dir. */
int ft_model_init_fit_tokenizer(const char *dir, ft_model_config *config)
{
    ft_tokenizer *tokenizer;
    if (ft_tokenizer_load(dir, &tokenizer) < 0)
        return -1;
    size_t size = ft_tokenizer_vocab_size(tokenizer);
    /* The tokenizer's own EOS first, as a real model of its family has it
     * (Qwen3's <|im_end|>, Llama 3 Instruct's <|eot_id|>); then known ones. */
    const char *eos[] = {ft_tokenizer_eos_token(tokenizer), "<|endoftext|>", "<|end_of_text|>", "<|im_end|>",
                         "<|eot_id|>"};
    const char *bos[] = {ft_tokenizer_bos_token(tokenizer), "<|begin_of_text|>"};
    config->eos_token_id = (int)first_token(tokenizer, eos + !eos[0], 5 - !eos[0]);
    config->bos_token_id = (int)first_token(tokenizer, bos + !bos[0], 2 - !bos[0]);
    int *vision_ids[] = {&config->vision_start_token_id, &config->vision_end_token_id, &config->image_token_id,
                         &config->video_token_id};
    for (int i = 0; i < 4 && config->vision_language; i++) {
        *vision_ids[i] = (int)ft_tokenizer_token_id(tokenizer, vision_specials[i]);
        if (*vision_ids[i] < 0) {
            ft_tokenizer_free(tokenizer);
            return ft_error("the tokenizer has no %s token, which a %s needs; give Qwen2-VL's tokenizer, or none "
                            "for the built-in one", vision_specials[i], config->architecture_name);
        }
    }
    ft_tokenizer_free(tokenizer);
    if (config->vocab_size == 0)
        config->vocab_size = (int)size;
    else if ((size_t)config->vocab_size < size)
        return ft_error("the tokenizer has %zu tokens, more than vocab_size %d; raise vocab_size", size,
                        config->vocab_size);
    return 0;
}

/* --- weights --- */

static size_t element_count(const ft_init_tensor *tensor)
{
    size_t count = 1;
    for (int d = 0; d < tensor->n_dims; d++)
        count *= (size_t)tensor->shape[d];
    return count;
}

/* A norm's weight (LayerNorm or RMSNorm: "norm" in its last name part) starts at one. */
static bool is_norm_weight(const char *name)
{
    size_t length = strlen(name);
    if (length < 7 || strcmp(name + length - 7, ".weight") != 0)
        return false;
    const char *part = name + length - 7;
    while (part > name && part[-1] != '.')
        part--;
    const char *found = strstr(part, "norm");
    return found && found < name + length - 7;
}

static void add_tensor(ft_init_tensor *tensor, const char *prefix, const char *name, int n_dims,
                       const int64_t *dims, bool is_norm)
{
    tensor->name = ft_xasprintf("%s%s", prefix, name);
    tensor->n_dims = n_dims;
    memcpy(tensor->shape, dims, (size_t)n_dims * sizeof *dims);
    tensor->is_norm = is_norm;
}

ft_init_tensor *ft_model_init_tensors(const ft_model_config *config, const char *prefix, size_t *count)
{
    size_t n_model = 0, n_vision = 0;
    ft_param_tensor *model_list = ft_model_weight_list(config, &n_model);
    ft_vision_weight *vision_list = config->vision_language ? ft_vision_qwen2_weight_list(&config->vision, &n_vision)
                                                            : NULL;
    ft_init_tensor *tensors = ft_xcalloc(n_model + n_vision + 1, sizeof *tensors);
    for (size_t i = 0; i < n_model; i++)
        add_tensor(&tensors[i], prefix, model_list[i].name, model_list[i].n_dims, model_list[i].shape, false);
    for (size_t i = 0; i < n_vision; i++)
        add_tensor(&tensors[n_model + i], prefix, vision_list[i].name, vision_list[i].n_dims, vision_list[i].shape,
                   vision_list[i].is_norm);
    free(vision_list);
    ft_model_weight_list_free(model_list, n_model);
    *count = n_model + n_vision;
    return tensors;
}

void ft_model_init_tensors_free(ft_init_tensor *tensors, size_t count)
{
    for (size_t i = 0; tensors && i < count; i++)
        free(tensors[i].name);
    free(tensors);
}

typedef struct {
    const ft_init_tensor *tensor;
    size_t count;
    void *data;
    ft_dtype dtype;
    uint64_t seed;
    size_t n_slices;
} fill_job;

/* Slice `slice` of n_slices; every value is a function of (seed, index), so the
 * slicing never changes the weights. */
static void fill_slice(void *argument, size_t slice, size_t worker)
{
    const fill_job *job = argument;
    const char *name = job->tensor->name;
    size_t length = strlen(name);
    bool is_norm = job->tensor->is_norm || is_norm_weight(name), is_bias = length > 5 && strcmp(name + length - 5, ".bias") == 0;
    size_t begin = job->count * slice / job->n_slices, end = job->count * (slice + 1) / job->n_slices;
    for (size_t i = begin; i < end; i++) {
        float value = is_norm ? 1.0f : is_bias ? 0.0f : (float)(0.02 * ft_random_normal(job->seed, i));
        if (job->dtype == FT_DTYPE_BF16)
            ((uint16_t *)job->data)[i] = ft_f32_to_bf16(value);
        else
            ((float *)job->data)[i] = value;
    }
}

static void fill_tensor(const ft_init_tensor *tensor, void *data, ft_dtype dtype, uint64_t seed, int threads)
{
    enum { MAX_THREADS = 64, MIN_ELEMENTS_PER_THREAD = 65536 };
    size_t count = element_count(tensor);
    size_t useful = count / MIN_ELEMENTS_PER_THREAD + 1;
    size_t n = threads < 1 ? 1 : threads < MAX_THREADS ? (size_t)threads : MAX_THREADS;
    if (n > useful)
        n = useful;
    fill_job job = {tensor, count, data, dtype, seed, n};
    ft_parallel_for(n, n, fill_slice, &job, NULL);
}

typedef struct {
    const ft_model_init_options *options;
    int threads;
    uint64_t bytes_done, bytes_total;
} writing;

static int write_shard(const char *path, const ft_init_tensor *tensors, size_t first, size_t end, writing *w)
{
    const ft_model_init_options *options = w->options;
    size_t element_bytes = ft_dtype_size(options->dtype), count = end - first;
    ft_tensor_to_write *writes = ft_xcalloc(count, sizeof *writes);
    void **buffers = ft_xcalloc(count, sizeof *buffers);
    int status = 0;
    for (size_t i = 0; i < count && status == 0; i++) {
        const ft_init_tensor *tensor = &tensors[first + i];
        size_t bytes = element_count(tensor) * element_bytes;
        buffers[i] = malloc(bytes);
        if (!buffers[i]) {
            status = ft_error("out of memory drawing %s", tensor->name);
            break;
        }
        fill_tensor(tensor, buffers[i], options->dtype, ft_random_stream(options->seed, first + i), w->threads);
        w->bytes_done += bytes;
        if (options->progress && options->progress(options->progress_context, w->bytes_done, w->bytes_total) != 0)
            status = ft_error("stopped while writing %s", tensor->name);
        writes[i] = (ft_tensor_to_write){tensor->name, options->dtype, tensor->n_dims, {0}, buffers[i]};
        memcpy(writes[i].shape, tensor->shape, sizeof tensor->shape);
    }
    const char *key = "format", *value = "pt";
    if (status == 0)
        status = ft_safetensors_write(path, writes, count, &key, &value, 1);
    for (size_t i = 0; i < count; i++)
        free(buffers[i]);
    free(buffers);
    free(writes);
    return status;
}

int ft_model_init_write_weights(const char *dir, const ft_init_tensor *tensors, size_t n_tensors,
                                const ft_model_init_options *options)
{
    uint64_t limit = options->shard_bytes ? options->shard_bytes : (uint64_t)2 << 30;
    size_t element_bytes = ft_dtype_size(options->dtype);
    /* shard boundaries: a new shard when the next tensor would overflow this one */
    size_t *starts = ft_xcalloc(n_tensors + 1, sizeof *starts);
    size_t n_shards = 0;
    uint64_t in_shard = 0, total = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        uint64_t bytes = element_count(&tensors[i]) * element_bytes;
        if (i == 0 || (in_shard > 0 && in_shard + bytes > limit)) {
            starts[n_shards++] = i;
            in_shard = 0;
        }
        in_shard += bytes;
        total += bytes;
    }
    starts[n_shards] = n_tensors;
    writing w = {options, options->threads > 0 ? options->threads : (int)sysconf(_SC_NPROCESSORS_ONLN), 0, total};
    if (w.threads < 1)
        w.threads = 1;
    int status = 0;
    json_t *weight_map = json_object();
    for (size_t s = 0; s < n_shards && status == 0; s++) {
        char name[64];
        if (n_shards == 1)
            snprintf(name, sizeof name, "model.safetensors");
        else
            snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, n_shards);
        char *path = ft_path_join(dir, name);
        status = write_shard(path, tensors, starts[s], starts[s + 1], &w);
        free(path);
        for (size_t i = starts[s]; i < starts[s + 1]; i++)
            json_object_set_new(weight_map, tensors[i].name, json_string(name));
    }
    if (status == 0 && n_shards > 1) {
        json_t *index = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total, "weight_map",
                                  weight_map);
        char *text = json_dumps(index, JSON_INDENT(2) | JSON_SORT_KEYS);
        status = write_text(dir, "model.safetensors.index.json", text);
        free(text);
        json_decref(index);
    }
    json_decref(weight_map);
    free(starts);
    return status;
}

/* Qwen2-VL's released preprocessor_config.json. */
static const char qwen2vl_preprocessor_config[] =
    "{\n  \"do_convert_rgb\": true,\n  \"do_normalize\": true,\n  \"do_rescale\": true,\n"
    "  \"do_resize\": true,\n  \"image_mean\": [0.48145466, 0.4578275, 0.40821073],\n"
    "  \"image_processor_type\": \"Qwen2VLImageProcessor\",\n"
    "  \"image_std\": [0.26862954, 0.26130258, 0.27577711],\n  \"max_pixels\": 12845056,\n"
    "  \"merge_size\": 2,\n  \"min_pixels\": 3136,\n  \"patch_size\": 14,\n"
    "  \"processor_class\": \"Qwen2VLProcessor\",\n  \"resample\": 3,\n"
    "  \"rescale_factor\": 0.00392156862745098,\n"
    "  \"size\": {\"longest_edge\": 12845056, \"shortest_edge\": 3136},\n  \"temporal_patch_size\": 2\n}\n";

int ft_model_init_write(const char *dir, const ft_model_init_options *options)
{
    if (options->dtype != FT_DTYPE_BF16 && options->dtype != FT_DTYPE_F32)
        return ft_error("model weights can be written as bf16 or f32, not %s", ft_dtype_name(options->dtype));
    ft_model_config config = options->config;
    if (ft_mkdir_p(dir) < 0 || ft_model_init_place_tokenizer(dir, options->tokenizer_path, config.vision_language) < 0)
        return -1;
    snprintf(config.architecture_name, sizeof config.architecture_name, "%s",
             architecture_name(config.architecture, config.vision_language ? &config.vision : NULL));
    if (ft_model_init_fit_tokenizer(dir, &config) < 0)
        return -1;
    snprintf(config.torch_dtype, sizeof config.torch_dtype, "%s",
             options->dtype == FT_DTYPE_BF16 ? "bfloat16" : "float32");
    char *json = ft_model_config_to_json(&config);
    ft_model_config checked; /* the config must be one ftpipe (and transformers) accepts */
    int status = ft_model_config_parse(json, "the new config.json", &checked);
    if (status == 0)
        status = write_text(dir, "config.json", json);
    free(json);
    if (status == 0 && config.vision_language)
        status = write_text(dir, "preprocessor_config.json", qwen2vl_preprocessor_config);
    size_t n_tensors = 0;
    ft_init_tensor *tensors = status == 0 ? ft_model_init_tensors(&config, "", &n_tensors) : NULL;
    if (status == 0)
        status = ft_model_init_write_weights(dir, tensors, n_tensors, options);
    ft_model_init_tensors_free(tensors, n_tensors);
    return status;
}
