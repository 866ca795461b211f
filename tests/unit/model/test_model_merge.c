/* Merging a LoRA adapter into its base: the arithmetic against a plain loop,
 * bf16 and f16 rounding to nearest even, and a merged tiny model (one file or
 * shards) giving the logits of the base with the adapter applied. */
#include <math.h>
#include <stdio.h>

#include "check.h"
#include "tiny_models.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/model_init.h"
#include "ftpipe/model/model_merge.h"

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-model-merge.XXXXXX";

#define SEQ_LEN 6

static float pseudo_random(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / (float)(1u << 24) - 0.5f;
}

TEST(merge_adds_scaled_b_times_a)
{
    enum { OUT = 5, IN = 7, RANK = 3 };
    float w[OUT * IN], expected[OUT * IN], a[RANK * IN], b[OUT * RANK];
    uint32_t state = 1;
    for (int i = 0; i < OUT * IN; i++)
        w[i] = expected[i] = pseudo_random(&state);
    for (int i = 0; i < RANK * IN; i++)
        a[i] = pseudo_random(&state);
    for (int i = 0; i < OUT * RANK; i++)
        b[i] = pseudo_random(&state);
    for (int o = 0; o < OUT; o++)
        for (int i = 0; i < IN; i++) {
            double sum = 0.0;
            for (int r = 0; r < RANK; r++)
                sum += (double)b[o * RANK + r] * a[r * IN + i];
            expected[o * IN + i] += (float)(2.5 * sum);
        }
    ft_lora_merge_into(w, a, b, OUT, IN, RANK, 2.5f);
    for (int i = 0; i < OUT * IN; i++)
        CHECK(fabsf(w[i] - expected[i]) <= 1e-6f);
}

static float from_bits(uint32_t bits)
{
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

TEST(bf16_and_f16_round_to_nearest_even)
{
    CHECK_INT(ft_f32_to_bf16(1.0f), 0x3f80);
    CHECK_INT(ft_f32_to_bf16(from_bits(0x3f808000u)), 0x3f80); /* a tie, down to the even 0x3f80 */
    CHECK_INT(ft_f32_to_bf16(from_bits(0x3f818000u)), 0x3f82); /* a tie, up to the even 0x3f82 */
    CHECK_INT(ft_f32_to_bf16(from_bits(0x3f808001u)), 0x3f81); /* above the tie */
    CHECK_INT(ft_f32_to_bf16(from_bits(0xbf817fffu)), 0xbf81); /* below the tie, negative */
    CHECK_INT(ft_f32_to_bf16(from_bits(0x7f7fffffu)), 0x7f80); /* the largest float rounds to infinity */
    CHECK((ft_f32_to_bf16(NAN) & 0x7fff) > 0x7f80);              /* NaN stays NaN */
    CHECK_INT(ft_f32_to_f16(1.0f), 0x3c00);
    CHECK_INT(ft_f32_to_f16(1.0f + 1.0f / 2048.0f), 0x3c00);        /* a tie, down to even */
    CHECK_INT(ft_f32_to_f16(1.0f + 3.0f / 2048.0f), 0x3c02);        /* a tie, up to even */
    CHECK_INT(ft_f32_to_f16(-2.0f), 0xc000);
    CHECK_INT(ft_f32_to_f16(65520.0f), 0x7c00);                     /* past the largest half: infinity */
    CHECK_INT(ft_f32_to_f16(from_bits(0x33000000u)), 0x0000);       /* 2^-25, a tie: down to zero */
    CHECK_INT(ft_f32_to_f16(from_bits(0x33c00000u)), 0x0002);       /* 1.5 * 2^-24: up to 2^-23 (even) */
}

static char *write_base(void)
{
    return tiny_model_write(root, "base", FT_ARCH_QWEN2, 2, 5);
}

/* The logits of model_dir for fixed tokens, with adapter_dir's adapter when not NULL. */
static float *logits_of(const char *model_dir, const char *adapter_dir, const ft_lora_config *lora, size_t *count)
{
    ft_model_options options = {1, SEQ_LEN, FT_FINETUNE_NONE, adapter_dir != NULL, {0}, false, false, false, 0, 0, false};
    if (lora)
        options.lora = *lora;
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(model_dir, cpu, &options, &model), 0);
    if (!model)
        return NULL;
    if (adapter_dir)
        CHECK_INT(ft_lora_load(ft_model_lora(model), adapter_dir), 0);
    int32_t tokens[SEQ_LEN] = {72, 101, 108, 108, 111, 256}, positions[SEQ_LEN] = {0, 1, 2, 3, 4, 5};
    int32_t segments[SEQ_LEN] = {0}, targets[SEQ_LEN] = {-1, -1, -1, -1, -1, -1};
    ft_batch batch = {1, SEQ_LEN, tokens, positions, segments, targets, 0, 0};
    *count = (size_t)SEQ_LEN * (size_t)ft_model_get_config(model)->vocab_size;
    float *logits = ft_xmalloc(*count * sizeof(float));
    CHECK_INT(ft_model_forward(model, &batch, logits, NULL), 0);
    ft_model_free(model);
    return logits;
}

/* An adapter on every target with random A and B, saved as peft saves it. */
static char *write_adapter(const char *base, ft_lora_config *config)
{
    *config = (ft_lora_config){.rank = 4, .alpha = 8, .targets = FT_LORA_ALL_TARGETS, .seed = 3};
    ft_model_config model;
    CHECK_INT(ft_model_config_load(base, &model), 0);
    ft_lora *lora = NULL;
    CHECK_INT(ft_lora_create(&model, config, cpu, false, &lora), 0);
    size_t count = 0;
    const ft_param_tensor *tensors = lora ? ft_lora_tensors(lora, &count) : NULL;
    uint32_t state = 7;
    for (size_t i = 0; i < count; i++) {
        float *host = ft_xmalloc(tensors[i].count * sizeof(float));
        for (size_t k = 0; k < tensors[i].count; k++)
            host[k] = 0.2f * pseudo_random(&state);
        cpu->upload(cpu, tensors[i].value, host, tensors[i].count * sizeof(float));
        free(host);
    }
    char *dir = ft_path_join(root, "adapter");
    if (lora)
        CHECK_INT(ft_lora_save(lora, dir, "base"), 0);
    ft_lora_free(lora);
    return dir;
}

static double relative_error(const float *expected, const float *actual, size_t count)
{
    double largest = 0.0, worst = 0.0;
    for (size_t i = 0; i < count; i++) {
        largest = fmax(largest, fabs((double)expected[i]));
        worst = fmax(worst, fabs((double)expected[i] - actual[i]));
    }
    return worst / largest;
}

TEST(a_merged_model_gives_the_logits_of_base_and_adapter)
{
    char *base = write_base();
    ft_lora_config lora;
    char *adapter = write_adapter(base, &lora);
    size_t n_expected = 0, n_base = 0;
    float *expected = logits_of(base, adapter, &lora, &n_expected);
    float *unadapted = logits_of(base, NULL, NULL, &n_base);
    CHECK(expected && unadapted && relative_error(expected, unadapted, n_base) > 1e-3); /* the adapter matters */

    char *merged = ft_path_join(root, "merged"), *sharded = ft_path_join(root, "sharded");
    ft_model_merge_options options = {.adapter_dir = adapter};
    CHECK_INT(ft_model_merge_write(base, merged, &options), 0);
    options.max_shard_bytes = 200000;
    CHECK_INT(ft_model_merge_write(base, sharded, &options), 0);
    const char *outputs[2] = {merged, sharded};
    for (int i = 0; i < 2; i++) {
        size_t n = 0;
        float *actual = logits_of(outputs[i], NULL, NULL, &n);
        CHECK(actual && n == n_expected && relative_error(expected, actual, n) < 1e-5);
        free(actual);
    }
    char *index = ft_path_join(sharded, "model.safetensors.index.json"), *index_text = NULL;
    char *single = ft_path_join(sharded, "model.safetensors"), *tokenizer = ft_path_join(merged, "tokenizer.json");
    size_t length = 0;
    CHECK_INT(ft_read_file(index, &index_text, &length), 0); /* the logits above came through it */
    CHECK(index_text && strstr(index_text, "\"model-00002-of-0000") && !ft_path_exists(single));
    CHECK(ft_path_exists(tokenizer));

    free(index);
    free(index_text);
    free(single);
    free(tokenizer);
    free(expected);
    free(unadapted);
    free(merged);
    free(sharded);
    free(adapter);
    free(base);
}

/* The merge, made tensor by tensor as it is written, gives the very bytes of
 * a file written from every merged tensor held in memory at once. */
TEST(the_streamed_merge_is_the_file_of_the_merged_tensors)
{
    char *base = ft_path_join(root, "base"), *adapter = ft_path_join(root, "adapter");
    char *merged = ft_path_join(root, "merged"), *expected_path = ft_path_join(root, "expected.safetensors");
    char *adapter_file = ft_path_join(adapter, "adapter_model.safetensors");
    char *merged_file = ft_path_join(merged, "model.safetensors");
    ft_lora_config config;
    ft_safetensors *model = NULL, *lora = NULL;
    CHECK_INT(ft_lora_config_load(adapter, &config), 0);
    CHECK_INT(ft_safetensors_open(base, &model), 0);
    CHECK_INT(ft_safetensors_open(adapter_file, &lora), 0);
    size_t count = model ? ft_safetensors_count(model) : 0, n_merged = 0;
    ft_tensor_to_write *tensors = ft_xcalloc(count + 1, sizeof *tensors);
    float **owned = ft_xcalloc(count + 1, sizeof *owned);
    for (size_t i = 0; lora && i < count; i++) {
        const ft_tensor_view *w = ft_safetensors_at(model, i);
        tensors[i] = (ft_tensor_to_write){w->name, w->dtype, w->n_dims, {w->shape[0], w->shape[1]}, w->data};
        char *a_name = ft_xasprintf("base_model.model.%.*s.lora_A.weight", (int)(strlen(w->name) - 7), w->name);
        char *b_name = ft_xasprintf("base_model.model.%.*s.lora_B.weight", (int)(strlen(w->name) - 7), w->name);
        const ft_tensor_view *a = strstr(w->name, "proj.weight") ? ft_safetensors_find(lora, a_name) : NULL;
        const ft_tensor_view *b = a ? ft_safetensors_find(lora, b_name) : NULL;
        if (a && b) {
            owned[i] = ft_xmalloc(w->size_bytes);
            memcpy(owned[i], w->data, w->size_bytes);
            ft_lora_merge_into(owned[i], a->data, b->data, (int)w->shape[0], (int)w->shape[1], (int)a->shape[0],
                               (float)ft_lora_scaling(&config));
            tensors[i].data = owned[i];
            n_merged++;
        }
        free(a_name);
        free(b_name);
    }
    CHECK_INT(n_merged, 14); /* 2 layers x 7 targets */
    const char *key = "format", *value = "pt";
    CHECK_INT(ft_safetensors_write(expected_path, tensors, count, &key, &value, 1), 0);
    char *expected = NULL, *actual = NULL;
    size_t expected_bytes = 0, actual_bytes = 0;
    CHECK_INT(ft_read_file(expected_path, &expected, &expected_bytes), 0);
    CHECK_INT(ft_read_file(merged_file, &actual, &actual_bytes), 0);
    CHECK(expected && actual && expected_bytes == actual_bytes && memcmp(expected, actual, actual_bytes) == 0);
    for (size_t i = 0; i < count; i++)
        free(owned[i]);
    free(owned);
    free(tensors);
    free(expected);
    free(actual);
    ft_safetensors_close(lora);
    ft_safetensors_close(model);
    free(merged_file);
    free(adapter_file);
    free(expected_path);
    free(merged);
    free(adapter);
    free(base);
}

/* Shards as save_pretrained makes them: in the model's weight order, each
 * filled until the next tensor would pass the limit, and a tensor above the
 * limit (the embedding here) alone in its own. */
TEST(shards_fill_in_weight_order_and_a_large_tensor_stands_alone)
{
    enum { LIMIT = 40000 };
    char *base = ft_path_join(root, "base"), *adapter = ft_path_join(root, "adapter");
    char *out = ft_path_join(root, "shards-of-40000");
    ft_model_merge_options options = {.adapter_dir = adapter, .max_shard_bytes = LIMIT};
    CHECK_INT(ft_model_merge_write(base, out, &options), 0);
    ft_model_config config;
    CHECK_INT(ft_model_config_load(base, &config), 0);
    size_t n_weights = 0;
    ft_param_tensor *weights = ft_model_weight_list(&config, &n_weights);
    ft_safetensors *sharded = NULL;
    CHECK_INT(ft_safetensors_open(out, &sharded), 0);
    int previous = 0, n_files = 0;
    uint64_t filled = 0, shard_bytes[64] = {0};
    for (size_t i = 0; sharded && i < n_weights; i++) {
        const ft_tensor_view *view = ft_safetensors_find(sharded, weights[i].name);
        int shard = 0;
        CHECK(view && sscanf(ft_path_basename(view->file), "model-%05d-of-%05d", &shard, &n_files) == 2);
        if (!view || shard < 1 || shard > 64)
            break;
        shard_bytes[shard - 1] += view->size_bytes;
        if (view->size_bytes > LIMIT)
            continue;
        if (shard != previous) {
            CHECK(previous == 0 || filled + view->size_bytes > LIMIT); /* it did not fit the shard before */
            CHECK(shard > previous);
            previous = shard;
            filled = 0;
        }
        filled += view->size_bytes;
    }
    const ft_tensor_view *embedding = sharded ? ft_safetensors_find(sharded, "model.embed_tokens.weight") : NULL;
    CHECK(embedding && strstr(embedding->file, "model-00001-of-") && shard_bytes[0] == embedding->size_bytes);
    for (int s = 1; s < n_files && s < 64; s++)
        CHECK(shard_bytes[s] > 0 && shard_bytes[s] <= LIMIT);
    CHECK(n_files > 4 && sharded && ft_safetensors_count(sharded) == n_weights);
    ft_safetensors_close(sharded);
    ft_model_weight_list_free(weights, n_weights);
    free(out);
    free(adapter);
    free(base);
}

TEST(a_bf16_merge_rounds_each_merged_weight_and_says_so_in_config)
{
    char *base = ft_path_join(root, "base"), *adapter = ft_path_join(root, "adapter");
    char *f32 = ft_path_join(root, "merged"), *bf16 = ft_path_join(root, "merged-bf16");
    ft_model_merge_options options = {.adapter_dir = adapter, .convert = true, .dtype = FT_DTYPE_BF16};
    CHECK_INT(ft_model_merge_write(base, bf16, &options), 0);
    ft_safetensors *exact = NULL, *rounded = NULL;
    CHECK_INT(ft_safetensors_open(f32, &exact), 0);
    CHECK_INT(ft_safetensors_open(bf16, &rounded), 0);
    const ft_tensor_view *x = exact ? ft_safetensors_find(exact, "model.layers.1.mlp.down_proj.weight") : NULL;
    const ft_tensor_view *y = rounded ? ft_safetensors_find(rounded, "model.layers.1.mlp.down_proj.weight") : NULL;
    CHECK(x && y && x->dtype == FT_DTYPE_F32 && y->dtype == FT_DTYPE_BF16 && x->size_bytes == 2 * y->size_bytes);
    for (size_t i = 0; x && y && i < x->size_bytes / 4; i++)
        if (ft_f32_to_bf16(((const float *)x->data)[i]) != ((const uint16_t *)y->data)[i]) {
            CHECK(false);
            break;
        }
    char *config_path = ft_path_join(bf16, "config.json"), *config = NULL;
    size_t length = 0;
    CHECK_INT(ft_read_file(config_path, &config, &length), 0);
    CHECK(config && strstr(config, "\"torch_dtype\": \"bfloat16\""));
    ft_safetensors_close(exact);
    ft_safetensors_close(rounded);
    free(config);
    free(config_path);
    free(base);
    free(adapter);
    free(f32);
    free(bf16);
}

TEST(an_adapter_of_another_model_is_refused)
{
    char *other = ft_path_join(root, "other");
    ft_model_init_options init = {0};
    CHECK_INT(ft_model_shape("tiny", &init.config), 0);
    init.config.hidden_size = 32;
    init.config.head_dim = 8;
    init.dtype = FT_DTYPE_F32;
    init.threads = 1;
    CHECK_INT(ft_model_init_write(other, &init), 0);
    char *adapter = ft_path_join(root, "adapter"), *out = ft_path_join(root, "refused");
    ft_model_merge_options options = {.adapter_dir = adapter};
    CHECK_INT(ft_model_merge_write(other, out, &options), -1);
    CHECK(strstr(ft_error_message(), "trained on another model") != NULL);
    CHECK(!ft_path_exists(out));
    free(other);
    free(adapter);
    free(out);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    cpu = ft_backend_cpu_create(1);
    RUN(merge_adds_scaled_b_times_a);
    RUN(bf16_and_f16_round_to_nearest_even);
    RUN(a_merged_model_gives_the_logits_of_base_and_adapter);
    RUN(the_streamed_merge_is_the_file_of_the_merged_tensors);
    RUN(shards_fill_in_weight_order_and_a_large_tensor_stands_alone);
    RUN(a_bf16_merge_rounds_each_merged_weight_and_says_so_in_config);
    RUN(an_adapter_of_another_model_is_refused);
    ft_backend_destroy(cpu);
    ft_remove_tree(root);
    return check_done();
}
