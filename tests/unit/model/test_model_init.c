/* Random model folders: the named shapes' sizes, the built-in tokenizer, and
 * folders that load back into the model (single file, shards, bf16), drawn the
 * same for the same seed whatever the thread count. */
#include <math.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/model.h"
#include "ftpipe/formats/preprocessor_config.h"
#include "ftpipe/model/model_init.h"
#include "ftpipe/model/vision_qwen2.h"
#include "ftpipe/text/tokenizer.h"

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-init.XXXXXX";

static size_t weight_count(const char *shape_name)
{
    ft_model_config config;
    CHECK_INT(ft_model_shape(shape_name, &config), 0);
    size_t count, total = 0;
    ft_param_tensor *list = ft_model_weight_list(&config, &count);
    for (size_t i = 0; i < count; i++)
        total += list[i].count;
    ft_model_weight_list_free(list, count);
    if (config.vision_language) {
        ft_vision_weight *vision = ft_vision_qwen2_weight_list(&config.vision, &count);
        for (size_t i = 0; i < count; i++)
            total += vision[i].count;
        free(vision);
    }
    CHECK_INT(total, ft_model_config_parameter_count(&config));
    return total;
}

TEST(named_shapes_have_the_published_sizes)
{
    CHECK_INT(weight_count("qwen2.5-0.5b"), 494032768);
    CHECK_INT(weight_count("qwen2.5-1.5b"), 1543714304);
    CHECK_INT(weight_count("qwen2.5-14b"), 14770033664);
    CHECK_INT(weight_count("llama3-8b"), 8030261248);
    CHECK_INT(weight_count("qwen2-vl-2b"), 2208985600); /* transformers' counts of Qwen2-VL-2B, */
    CHECK_INT(weight_count("qwen2.5-vl-3b"), 3754622976); /* Qwen2.5-VL-3B */
    CHECK_INT(weight_count("qwen2.5-vl-7b"), 8292166656); /* and Qwen2.5-VL-7B */
    ft_model_config config;
    CHECK_INT(ft_model_shape("qwen2.5-3b", &config), -1);
    CHECK_STR(ft_error_message(), "unknown model shape 'qwen2.5-3b'; known: tiny, qwen2.5-0.5b, qwen2.5-1.5b, "
                                  "qwen2.5-7b, qwen2.5-14b, llama3-8b, tiny-qwen2-vl, qwen2-vl-2b, tiny-qwen2.5-vl, "
                                  "qwen2.5-vl-3b, qwen2.5-vl-7b");
}

static char *write_model(const char *name, ft_dtype dtype, uint64_t seed, uint64_t shard_bytes, int threads)
{
    char *dir = ft_path_join(root, name);
    ft_model_init_options options = {0};
    CHECK_INT(ft_model_shape("tiny", &options.config), 0);
    options.dtype = dtype;
    options.seed = seed;
    options.shard_bytes = shard_bytes;
    options.threads = threads;
    if (ft_model_init_write(dir, &options) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
    }
    return dir;
}

static bool same_file(const char *dir_a, const char *dir_b, const char *name)
{
    char *a_path = ft_path_join(dir_a, name), *b_path = ft_path_join(dir_b, name);
    char *a = NULL, *b = NULL;
    size_t a_length = 0, b_length = 1;
    bool read = ft_read_file(a_path, &a, &a_length) == 0 && ft_read_file(b_path, &b, &b_length) == 0;
    bool same = read && a_length == b_length && memcmp(a, b, a_length) == 0;
    free(a);
    free(b);
    free(a_path);
    free(b_path);
    return same;
}

TEST(builtin_tokenizer_is_bytes_and_three_specials)
{
    char *dir = write_model("tokenizer", FT_DTYPE_F32, 1, 0, 1);
    ft_tokenizer *tokenizer = NULL;
    CHECK_INT(ft_tokenizer_load(dir, &tokenizer), 0);
    if (tokenizer) {
        CHECK_INT(ft_tokenizer_vocab_size(tokenizer), FT_BUILTIN_TOKENIZER_VOCAB);
        CHECK_INT(ft_tokenizer_token_id(tokenizer, "<|im_end|>"), 258);
        ft_token_ids ids = {0};
        const char *text = "hi \xc3\xa9<|im_start|>";
        CHECK_INT(ft_tokenizer_encode(tokenizer, text, strlen(text), &ids), 0);
        CHECK_INT(ids.count, 6);
        CHECK(ids.count == 6 && ids.ids[0] == 'h' && ids.ids[2] == ' ' && ids.ids[3] == 0xc3 && ids.ids[4] == 0xa9 &&
              ids.ids[5] == 257);
        ft_token_ids_free(&ids);
        ft_tokenizer_free(tokenizer);
    }
    ft_model_config config;
    CHECK_INT(ft_model_config_load(dir, &config), 0);
    CHECK(config.vocab_size == 259 && config.eos_token_id == 256 && config.bos_token_id == -1);
    CHECK_STR(config.torch_dtype, "float32");
    free(dir);
}

static double tiny_loss(const char *dir, float *logits)
{
    ft_model_options options = {1, 8, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    if (ft_model_load(dir, cpu, &options, &model) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
        return -1.0;
    }
    int32_t tokens[8] = {72, 101, 108, 111, 33, 256, 257, 258}, positions[8], segments[8] = {0}, targets[8];
    for (int i = 0; i < 8; i++) {
        positions[i] = i;
        targets[i] = i + 1 < 8 ? tokens[i + 1] : -100;
    }
    ft_batch batch = {1, 8, tokens, positions, segments, targets, 0, 0};
    double loss = -1.0;
    CHECK_INT(ft_model_forward(model, &batch, logits, &loss), 0);
    ft_model_free(model);
    return loss;
}

TEST(writes_a_folder_the_model_loads)
{
    char *dir = write_model("f32", FT_DTYPE_F32, 7, 0, 2);
    static float logits[8 * 259];
    double loss = tiny_loss(dir, logits);
    /* std 0.02 weights: nearly uniform predictions (no token predicts itself, which the
     * tied embedding would favour) */
    CHECK(fabs(loss - log(259.0)) < 0.05);
    char *bf16 = write_model("bf16", FT_DTYPE_BF16, 7, 0, 2);
    static float bf16_logits[8 * 259];
    CHECK(fabs(tiny_loss(bf16, bf16_logits) - loss) < 1e-3); /* the same draws, rounded to bf16 */
    free(bf16);
    free(dir);
}

TEST(same_seed_same_bytes_whatever_the_threads)
{
    char *one = write_model("seed7-one-thread", FT_DTYPE_BF16, 7, 0, 1);
    char *two = write_model("seed7-two-threads", FT_DTYPE_BF16, 7, 0, 2);
    char *other = write_model("seed8", FT_DTYPE_BF16, 8, 0, 2);
    CHECK(same_file(one, two, "model.safetensors"));
    CHECK(!same_file(one, other, "model.safetensors"));
    CHECK(same_file(one, other, "config.json"));
    ft_safetensors *set = NULL;
    CHECK_INT(ft_safetensors_open(one, &set), 0);
    const char *norm_name = "model.layers.1.post_attention_layernorm.weight";
    const ft_tensor_view *norm = set ? ft_safetensors_find(set, norm_name) : NULL;
    CHECK(norm && norm->dtype == FT_DTYPE_BF16 && ((const uint16_t *)norm->data)[0] == 0x3f80); /* 1.0 */
    const ft_tensor_view *bias = set ? ft_safetensors_find(set, "model.layers.0.self_attn.k_proj.bias") : NULL;
    CHECK(bias && ((const uint16_t *)bias->data)[3] == 0);
    ft_safetensors_close(set);
    free(one);
    free(two);
    free(other);
}

TEST(shards_past_the_limit_with_an_index)
{
    char *single = write_model("single", FT_DTYPE_F32, 3, 0, 1);
    char *sharded = write_model("sharded", FT_DTYPE_F32, 3, 100000, 1);
    char *index = ft_path_join(sharded, "model.safetensors.index.json");
    char *first = ft_path_join(sharded, "model-00001-of-00004.safetensors");
    CHECK(ft_path_exists(index) && ft_path_exists(first));
    static float a[8 * 259], b[8 * 259];
    double loss_a = tiny_loss(single, a), loss_b = tiny_loss(sharded, b);
    CHECK(loss_a == loss_b && memcmp(a, b, sizeof a) == 0);
    free(index);
    free(first);
    free(single);
    free(sharded);
}

TEST(uses_a_given_tokenizer_and_fits_the_vocabulary_to_it)
{
    char *dir = ft_path_join(root, "given");
    ft_model_init_options options = {0};
    CHECK_INT(ft_model_shape("tiny", &options.config), 0);
    options.dtype = FT_DTYPE_F32;
    options.tokenizer_path = "tests/fixtures/datasets/byte_model";
    CHECK_INT(ft_model_init_write(dir, &options), 0);
    CHECK(same_file(dir, "tests/fixtures/datasets/byte_model", "tokenizer.json"));
    CHECK(same_file(dir, "tests/fixtures/datasets/byte_model", "tokenizer_config.json"));
    free(dir);
    /* the EOS id is the tokenizer's own, as in a real model of its family:
     * Qwen3's <|im_end|>, though <|endoftext|> is in the vocabulary too */
    char *source = ft_path_join(root, "qwen3-like-tokenizer");
    char *source_json = ft_path_join(source, "tokenizer.json");
    char *source_config = ft_path_join(source, "tokenizer_config.json");
    static const char qwen3_config[] = "{\"eos_token\": \"<|im_end|>\", \"bos_token\": null}";
    CHECK_INT(ft_mkdir_p(source), 0);
    CHECK_INT(ft_copy_file("tests/fixtures/datasets/byte_model/tokenizer.json", source_json), 0);
    CHECK_INT(ft_write_file_atomic(source_config, qwen3_config, strlen(qwen3_config)), 0);
    dir = ft_path_join(root, "own-eos");
    options.tokenizer_path = source;
    CHECK_INT(ft_model_init_write(dir, &options), 0);
    free(source);
    free(source_json);
    free(source_config);
    ft_model_config config;
    CHECK_INT(ft_model_config_load(dir, &config), 0);
    ft_tokenizer *tokenizer = NULL;
    CHECK_INT(ft_tokenizer_load(dir, &tokenizer), 0);
    if (tokenizer) {
        CHECK_INT(config.eos_token_id, ft_tokenizer_token_id(tokenizer, "<|im_end|>"));
        CHECK_INT(config.bos_token_id, -1);
        ft_tokenizer_free(tokenizer);
    }
    free(dir);
    dir = ft_path_join(root, "too-small");
    options.tokenizer_path = NULL;
    options.config.vocab_size = 100;
    CHECK_INT(ft_model_init_write(dir, &options), -1);
    CHECK_STR(ft_error_message(), "the tokenizer has 259 tokens, more than vocab_size 100; raise vocab_size");
    free(dir);
}

/* tiny-qwen2-vl and tiny-qwen2.5-vl: the vision tokens in the built-in
 * tokenizer and the config, Qwen2-VL's preprocessor_config.json, and a folder
 * the model loads and runs with an image. */
static void check_tiny_vision_language(const char *shape, const char *architecture)
{
    char *dir = ft_path_join(root, shape);
    ft_model_init_options options = {0};
    CHECK_INT(ft_model_shape(shape, &options.config), 0);
    options.dtype = FT_DTYPE_F32;
    CHECK_INT(ft_model_init_write(dir, &options), 0);
    ft_model_config config;
    ft_tokenizer *tokenizer = NULL;
    CHECK_INT(ft_model_config_load(dir, &config), 0);
    CHECK_INT(ft_tokenizer_load(dir, &tokenizer), 0);
    CHECK(config.vision_language);
    CHECK_STR(config.architecture_name, architecture);
    CHECK_INT(config.vocab_size, FT_BUILTIN_TOKENIZER_VOCAB + 4);
    if (tokenizer) {
        CHECK_INT(config.image_token_id, ft_tokenizer_token_id(tokenizer, "<|image_pad|>"));
        CHECK_INT(config.vision_start_token_id, ft_tokenizer_token_id(tokenizer, "<|vision_start|>"));
        CHECK_INT(config.vision_end_token_id, ft_tokenizer_token_id(tokenizer, "<|vision_end|>"));
    }
    ft_tokenizer_free(tokenizer);
    ft_qwen2vl_image_options image_options;
    CHECK_INT(ft_qwen2vl_image_options_load(dir, &image_options), 0);
    CHECK_INT(image_options.max_pixels, 12845056);
    CHECK_INT(image_options.merge_size, 2);

    ft_model_options model_options = {1, 16, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(dir, cpu, &model_options, &model), 0);
    if (model) {
        static float pixels[4 * 1176], logits[16 * 263];
        for (size_t i = 0; i < sizeof pixels / sizeof *pixels; i++)
            pixels[i] = (float)sin((double)i);
        ft_stored_image image = {{0, 0}, 1, 2, 2, pixels};
        int32_t tokens[8] = {'a', config.vision_start_token_id, config.image_token_id, config.vision_end_token_id,
                             'b', 'c', 'd', 'e'};
        int32_t positions[8] = {0, 1, 2, 3, 4, 5, 6, 7}, segments[8] = {0}, targets[8] = {-100, -100, -100, -100,
                                                                                         'c', 'd', 'e', -100};
        ft_batch batch = {1, 8, tokens, positions, segments, targets, 0, 0};
        double loss = 0.0;
        CHECK_INT(ft_model_set_images(model, &image, 1), 0);
        CHECK_INT(ft_model_forward(model, &batch, logits, &loss), 0);
        CHECK(isfinite(loss) && loss > 0.0);
    }
    ft_model_free(model);
    free(dir);
}

TEST(tiny_qwen2_vl_writes_a_vision_language_folder)
{
    check_tiny_vision_language("tiny-qwen2-vl", "Qwen2VLForConditionalGeneration");
}

TEST(tiny_qwen2_5_vl_writes_a_vision_language_folder)
{
    check_tiny_vision_language("tiny-qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration");
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(named_shapes_have_the_published_sizes);
    RUN(builtin_tokenizer_is_bytes_and_three_specials);
    RUN(writes_a_folder_the_model_loads);
    RUN(same_seed_same_bytes_whatever_the_threads);
    RUN(shards_past_the_limit_with_an_index);
    RUN(uses_a_given_tokenizer_and_fits_the_vocabulary_to_it);
    RUN(tiny_qwen2_vl_writes_a_vision_language_folder);
    RUN(tiny_qwen2_5_vl_writes_a_vision_language_folder);
    ft_remove_tree(root);
    ft_backend_destroy(cpu);
    return check_done();
}
