/* model_config: the published config.json of each supported family, their parameter
 * counts, the round trip through ft_model_config_to_json, and every refusal's message. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/model_config.h"

#define FIXTURES "tests/fixtures/models/"

static bool configs_equal(const ft_model_config *a, const ft_model_config *b)
{
    return a->architecture == b->architecture && strcmp(a->architecture_name, b->architecture_name) == 0 &&
           a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
           a->intermediate_size == b->intermediate_size && a->num_hidden_layers == b->num_hidden_layers &&
           a->num_attention_heads == b->num_attention_heads &&
           a->num_key_value_heads == b->num_key_value_heads && a->head_dim == b->head_dim &&
           a->max_position_embeddings == b->max_position_embeddings && a->rms_norm_eps == b->rms_norm_eps &&
           a->rope_theta == b->rope_theta && a->attention_bias == b->attention_bias &&
           a->qk_norm == b->qk_norm && a->tie_word_embeddings == b->tie_word_embeddings &&
           a->has_llama3_rope_scaling == b->has_llama3_rope_scaling &&
           a->rope_scaling_factor == b->rope_scaling_factor &&
           a->rope_low_freq_factor == b->rope_low_freq_factor &&
           a->rope_high_freq_factor == b->rope_high_freq_factor &&
           a->rope_original_max_position_embeddings == b->rope_original_max_position_embeddings &&
           a->bos_token_id == b->bos_token_id && a->eos_token_id == b->eos_token_id &&
           strcmp(a->torch_dtype, b->torch_dtype) == 0;
}

static void check_round_trip(const ft_model_config *config)
{
    char *text = ft_model_config_to_json(config);
    ft_model_config again;
    CHECK_INT(ft_model_config_parse(text, "written", &again), 0);
    CHECK(configs_equal(config, &again));
    free(text);
}

TEST(qwen2_5_0_5b_parses)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_load(FIXTURES "qwen2.5-0.5b", &c), 0);
    CHECK_INT(c.architecture, FT_ARCH_QWEN2);
    CHECK_STR(c.architecture_name, "Qwen2ForCausalLM");
    CHECK_INT(c.vocab_size, 151936);
    CHECK_INT(c.hidden_size, 896);
    CHECK_INT(c.intermediate_size, 4864);
    CHECK_INT(c.num_hidden_layers, 24);
    CHECK_INT(c.num_attention_heads, 14);
    CHECK_INT(c.num_key_value_heads, 2);
    CHECK_INT(c.head_dim, 64);
    CHECK_INT(c.max_position_embeddings, 32768);
    CHECK(c.rms_norm_eps == 1e-6);
    CHECK(c.rope_theta == 1000000.0);
    CHECK(c.attention_bias);
    CHECK(!c.qk_norm);
    CHECK(c.tie_word_embeddings);
    CHECK(!c.has_llama3_rope_scaling);
    CHECK_INT(c.bos_token_id, 151643);
    CHECK_INT(c.eos_token_id, 151643);
    CHECK_STR(c.torch_dtype, "bfloat16");
    CHECK_INT(ft_model_config_parameter_count(&c), 494032768);
    check_round_trip(&c);
}

TEST(qwen3_0_6b_parses)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_load(FIXTURES "qwen3-0.6b/config.json", &c), 0);
    CHECK_INT(c.architecture, FT_ARCH_QWEN3);
    CHECK_STR(c.architecture_name, "Qwen3ForCausalLM");
    CHECK_INT(c.vocab_size, 151936);
    CHECK_INT(c.hidden_size, 1024);
    CHECK_INT(c.intermediate_size, 3072);
    CHECK_INT(c.num_hidden_layers, 28);
    CHECK_INT(c.num_attention_heads, 16);
    CHECK_INT(c.num_key_value_heads, 8);
    CHECK_INT(c.head_dim, 128); /* given; hidden_size / heads would be 64 */
    CHECK_INT(c.max_position_embeddings, 40960);
    CHECK(c.rms_norm_eps == 1e-6);
    CHECK(c.rope_theta == 1000000.0); /* written as the integer 1000000 */
    CHECK(!c.attention_bias);
    CHECK(c.qk_norm);
    CHECK(c.tie_word_embeddings);
    CHECK_INT(c.bos_token_id, 151643);
    CHECK_INT(c.eos_token_id, 151645);
    /* embedding 151936*1024 + 28 layers * (q 1024*2048, k and v 1024*1024 each, o 2048*1024,
     * q/k norms 2*128, MLP 3*1024*3072, two norms 2*1024) + final norm 1024 */
    CHECK_INT(ft_model_config_parameter_count(&c), 596049920);
    check_round_trip(&c);
}

TEST(llama_3_8b_parses)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_load(FIXTURES "llama-3-8b", &c), 0);
    CHECK_INT(c.architecture, FT_ARCH_LLAMA);
    CHECK_STR(c.architecture_name, "LlamaForCausalLM");
    CHECK_INT(c.vocab_size, 128256);
    CHECK_INT(c.hidden_size, 4096);
    CHECK_INT(c.intermediate_size, 14336);
    CHECK_INT(c.num_hidden_layers, 32);
    CHECK_INT(c.num_attention_heads, 32);
    CHECK_INT(c.num_key_value_heads, 8);
    CHECK_INT(c.head_dim, 128);
    CHECK_INT(c.max_position_embeddings, 8192);
    CHECK(c.rms_norm_eps == 1e-5);
    CHECK(c.rope_theta == 500000.0);
    CHECK(!c.attention_bias);
    CHECK(!c.qk_norm);
    CHECK(!c.tie_word_embeddings);
    CHECK(!c.has_llama3_rope_scaling);
    CHECK_INT(c.bos_token_id, 128000);
    CHECK_INT(c.eos_token_id, 128001);
    CHECK_INT(ft_model_config_parameter_count(&c), 8030261248LL);
    check_round_trip(&c);
}

TEST(llama_3_1_rope_scaling_and_eos_list)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_load(FIXTURES "llama-3.1-8b-instruct", &c), 0);
    CHECK(c.has_llama3_rope_scaling);
    CHECK(c.rope_scaling_factor == 8.0);
    CHECK(c.rope_low_freq_factor == 1.0);
    CHECK(c.rope_high_freq_factor == 4.0);
    CHECK_INT(c.rope_original_max_position_embeddings, 8192);
    CHECK_INT(c.max_position_embeddings, 131072);
    CHECK_INT(c.eos_token_id, 128001); /* the first of [128001, 128008, 128009] */
    CHECK_INT(ft_model_config_parameter_count(&c), 8030261248LL);
    check_round_trip(&c);
}

/* transformers' layout: sorted keys, two-space indent, Python's float spelling. */
TEST(writes_what_transformers_writes)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_load(FIXTURES "qwen2.5-0.5b", &c), 0);
    char *text = ft_model_config_to_json(&c);
    CHECK_STR(text, "{\n"
                    "  \"architectures\": [\n"
                    "    \"Qwen2ForCausalLM\"\n"
                    "  ],\n"
                    "  \"bos_token_id\": 151643,\n"
                    "  \"eos_token_id\": 151643,\n"
                    "  \"head_dim\": 64,\n"
                    "  \"hidden_act\": \"silu\",\n"
                    "  \"hidden_size\": 896,\n"
                    "  \"intermediate_size\": 4864,\n"
                    "  \"max_position_embeddings\": 32768,\n"
                    "  \"max_window_layers\": 24,\n"
                    "  \"model_type\": \"qwen2\",\n"
                    "  \"num_attention_heads\": 14,\n"
                    "  \"num_hidden_layers\": 24,\n"
                    "  \"num_key_value_heads\": 2,\n"
                    "  \"rms_norm_eps\": 1e-06,\n"
                    "  \"rope_scaling\": null,\n"
                    "  \"rope_theta\": 1000000.0,\n"
                    "  \"sliding_window\": 32768,\n"
                    "  \"tie_word_embeddings\": true,\n"
                    "  \"torch_dtype\": \"bfloat16\",\n"
                    "  \"use_sliding_window\": false,\n"
                    "  \"vocab_size\": 151936\n"
                    "}\n");
    free(text);

    CHECK_INT(ft_model_config_load(FIXTURES "llama-3.1-8b-instruct", &c), 0);
    text = ft_model_config_to_json(&c);
    CHECK(strstr(text, "  \"attention_bias\": false,\n"));
    CHECK(strstr(text, "  \"mlp_bias\": false,\n"));
    CHECK(strstr(text, "  \"rope_scaling\": {\n"
                       "    \"factor\": 8.0,\n"
                       "    \"high_freq_factor\": 4.0,\n"
                       "    \"low_freq_factor\": 1.0,\n"
                       "    \"original_max_position_embeddings\": 8192,\n"
                       "    \"rope_type\": \"llama3\"\n"
                       "  },\n"
                       "  \"rope_theta\": 500000.0,\n"));
    CHECK(!strstr(text, "sliding_window"));
    free(text);
}

/* Floats read back exactly, whatever their digits. */
TEST(odd_floats_round_trip)
{
    static const double values[] = {1e-5, 0.1, 1.0 / 3.0, 123456.789, 1e16, 2.5e-7, 5e-324, 1.7976931348623157e308};
    ft_model_config c;
    CHECK_INT(ft_model_config_load(FIXTURES "llama-3-8b", &c), 0);
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        c.rms_norm_eps = values[i];
        c.rope_theta = values[i];
        check_round_trip(&c);
    }
}

TEST(model_type_alone_is_enough)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_parse("{\"model_type\": \"qwen3\", \"vocab_size\": 10, \"hidden_size\": 8, "
                                    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, "
                                    "\"num_attention_heads\": 2, \"max_position_embeddings\": 64, "
                                    "\"rms_norm_eps\": 1e-6}", "tiny", &c), 0);
    CHECK_INT(c.architecture, FT_ARCH_QWEN3);
    CHECK_STR(c.architecture_name, "Qwen3ForCausalLM");
    CHECK_INT(c.num_key_value_heads, 2); /* defaults to the attention heads */
    CHECK_INT(c.head_dim, 4);
    CHECK(c.rope_theta == 10000.0);
    CHECK(!c.tie_word_embeddings);
    CHECK_INT(c.bos_token_id, -1);
    CHECK_INT(c.eos_token_id, -1);
    CHECK_STR(c.torch_dtype, "");
    check_round_trip(&c);
}

TEST(unsupported_files_are_refused)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_load(FIXTURES "unsupported/mistral-7b-v0.1.json", &c), -1);
    CHECK_STR(ft_error_message(), FIXTURES "unsupported/mistral-7b-v0.1.json: architecture 'MistralForCausalLM' "
                                  "is not supported; supported: Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM, Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration");
    CHECK_INT(ft_model_config_load(FIXTURES "unsupported/qwen2.5-7b-instruct-yarn.json", &c), -1);
    CHECK_STR(ft_error_message(), FIXTURES "unsupported/qwen2.5-7b-instruct-yarn.json: rope_scaling type 'yarn' "
                                  "is not supported; supported: llama3 (or null)");
    CHECK_INT(ft_model_config_load(FIXTURES "unsupported/truncated.json", &c), -1);
    CHECK_STR(ft_error_message(), FIXTURES "unsupported/truncated.json:14:18: not valid JSON: "
                                  "premature end of input near '\"max_position_em'");
    CHECK_INT(ft_model_config_load(FIXTURES "unsupported", &c), -1);
    CHECK_STR(ft_error_message(), "cannot open " FIXTURES "unsupported/config.json: No such file or directory");
}

/* Qwen2.5-0.5B's config with key set to the JSON value (removed when value is NULL). */
static int parse_edited(const char *key, const char *value)
{
    json_t *root = json_load_file(FIXTURES "qwen2.5-0.5b/config.json", 0, NULL);
    if (value)
        json_object_set_new(root, key, json_loads(value, JSON_DECODE_ANY, NULL));
    else
        json_object_del(root, key);
    char *text = json_dumps(root, 0);
    ft_model_config c;
    int result = ft_model_config_parse(text, "config.json", &c);
    free(text);
    json_decref(root);
    return result;
}

#define CHECK_REFUSED(key, value, message)                  \
    do {                                                    \
        CHECK_INT(parse_edited(key, value), -1);            \
        CHECK_STR(ft_error_message(), "config.json: " message); \
    } while (0)

TEST(bad_fields_are_named)
{
    CHECK_REFUSED("hidden_size", NULL, "hidden_size is missing (a positive integer)");
    CHECK_REFUSED("hidden_size", "\"896\"", "hidden_size must be a positive integer, not a string");
    CHECK_REFUSED("num_hidden_layers", "0", "num_hidden_layers must be a positive integer, not 0");
    CHECK_REFUSED("vocab_size", "151936.5", "vocab_size must be a positive integer, not 151936.5");
    CHECK_REFUSED("intermediate_size", "null", "intermediate_size must be a positive integer, not null");
    CHECK_REFUSED("rms_norm_eps", NULL, "rms_norm_eps is missing (a positive number)");
    CHECK_REFUSED("rms_norm_eps", "-1e-6", "rms_norm_eps must be a positive number, not -1e-06");
    CHECK_REFUSED("tie_word_embeddings", "1", "tie_word_embeddings must be true or false, not 1");
    CHECK_REFUSED("eos_token_id", "\"</s>\"",
                  "eos_token_id must be a token id (a non-negative integer) or a list of them, not a string");
    CHECK_REFUSED("architectures", "\"Qwen2ForCausalLM\"",
                  "architectures must be a list of names such as [\"Qwen2ForCausalLM\"]");
    CHECK_REFUSED("model_type", "\"llama\"",
                  "model_type 'llama' does not match architecture Qwen2ForCausalLM (whose model_type is 'qwen2')");
    CHECK_REFUSED("torch_dtype", "\"bf16; rm\"", "torch_dtype 'bf16; rm' is not a dtype name such as bfloat16");
}

TEST(unsupported_options_are_named)
{
    CHECK_REFUSED("architectures", "[\"Qwen2MoeForCausalLM\"]",
                  "architecture 'Qwen2MoeForCausalLM' is not supported; supported: Qwen2ForCausalLM, "
                  "Qwen3ForCausalLM, LlamaForCausalLM, Qwen2VLForConditionalGeneration, Qwen2_5_VLForConditionalGeneration");
    CHECK_REFUSED("use_sliding_window", "true", "use_sliding_window true is not supported; set it to false");
    CHECK_REFUSED("hidden_act", "\"gelu\"", "hidden_act 'gelu' is not supported; supported: silu");
    CHECK_REFUSED("num_key_value_heads", "3", "num_attention_heads 14 is not divisible by num_key_value_heads 3");
    CHECK_REFUSED("num_attention_heads", "5",
                  "num_attention_heads 5 is not divisible by num_key_value_heads 2");
    CHECK_REFUSED("rope_theta", "\"1e6\"", "rope_theta must be a positive number, not a string");
    CHECK_REFUSED("rope_scaling", "{\"rope_type\": \"dynamic\", \"factor\": 2.0}",
                  "rope_scaling type 'dynamic' is not supported; supported: llama3 (or null)");
    CHECK_REFUSED("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8.0}",
                  "rope_scaling.low_freq_factor is missing (a positive number)");
    CHECK_REFUSED("rope_scaling", "{\"factor\": 8.0}", "rope_scaling has no rope_type");
    CHECK_REFUSED("rope_scaling", "8", "rope_scaling must be an object or null, not 8");
    CHECK_REFUSED("mlp_bias", "true", "mlp_bias true is not supported");
}

TEST(llama_and_qwen3_refuse_attention_bias)
{
    char *text;
    CHECK_INT(ft_read_file(FIXTURES "llama-3-8b/config.json", &text, NULL), 0);
    char *flag = strstr(text, "\"attention_bias\": false");
    memcpy(flag, "\"attention_bias\": true ", strlen("\"attention_bias\": false"));
    ft_model_config c;
    CHECK_INT(ft_model_config_parse(text, "llama/config.json", &c), -1);
    CHECK_STR(ft_error_message(), "llama/config.json: attention_bias true is not supported for LlamaForCausalLM");
    free(text);

    CHECK_INT(ft_read_file(FIXTURES "qwen3-0.6b/config.json", &text, NULL), 0);
    flag = strstr(text, "\"attention_bias\": false");
    memcpy(flag, "\"attention_bias\": true ", strlen("\"attention_bias\": false"));
    CHECK_INT(ft_model_config_parse(text, "qwen3/config.json", &c), -1);
    CHECK_STR(ft_error_message(), "qwen3/config.json: attention_bias true is not supported for Qwen3ForCausalLM");
    free(text);
}

TEST(not_an_object_or_no_architecture)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_parse("[1, 2]", "list.json", &c), -1);
    CHECK_STR(ft_error_message(), "list.json: not a JSON object");
    CHECK_INT(ft_model_config_parse("{\"hidden_size\": 8}", "bare.json", &c), -1);
    CHECK_STR(ft_error_message(), "bare.json: neither architectures nor model_type says which model this is");
    CHECK_INT(ft_model_config_parse("{\"model_type\": \"mistral\"}", "m.json", &c), -1);
    CHECK_STR(ft_error_message(), "m.json: model_type 'mistral' is not supported; supported: qwen2, qwen3, llama, qwen2_vl, qwen2_5_vl");
    CHECK_INT(ft_model_config_parse("{\"a\": 1, \"a\": 2}", "dup.json", &c), -1);
    CHECK_STR(ft_error_message(), "dup.json:1:12: not valid JSON: duplicate object key near '\"a\"'");
}

/* transformers 5's save_pretrained nests rope_theta and the scaling in rope_parameters. */
TEST(transformers_5_rope_parameters)
{
    static const char text[] =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"vocab_size\": 300,"
        " \"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2,"
        " \"num_attention_heads\": 4, \"num_key_value_heads\": 1, \"max_position_embeddings\": 256,"
        " \"rms_norm_eps\": 1e-05, \"dtype\": \"float32\","
        " \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0,"
        " \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}}";
    ft_model_config config;
    CHECK_INT(ft_model_config_parse(text, "config.json", &config), 0);
    CHECK(config.rope_theta == 500000.0);
    CHECK(config.has_llama3_rope_scaling);
    CHECK(config.rope_scaling_factor == 8.0);
    CHECK_INT(config.rope_original_max_position_embeddings, 64);
    CHECK_STR(config.torch_dtype, "float32");
    static const char plain[] =
        "{\"architectures\": [\"Qwen3ForCausalLM\"], \"vocab_size\": 300, \"hidden_size\": 64,"
        " \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
        " \"num_key_value_heads\": 2, \"head_dim\": 32, \"max_position_embeddings\": 256,"
        " \"rms_norm_eps\": 1e-06, \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1000000.0}}";
    CHECK_INT(ft_model_config_parse(plain, "config.json", &config), 0);
    CHECK(config.rope_theta == 1000000.0);
    CHECK(!config.has_llama3_rope_scaling);
}

static bool vision_parts_equal(const ft_model_config *a, const ft_model_config *b)
{
    return a->vision_language == b->vision_language && memcmp(&a->vision, &b->vision, sizeof a->vision) == 0 &&
           memcmp(a->mrope_section, b->mrope_section, sizeof a->mrope_section) == 0 &&
           a->image_token_id == b->image_token_id && a->video_token_id == b->video_token_id &&
           a->vision_start_token_id == b->vision_start_token_id && a->vision_end_token_id == b->vision_end_token_id;
}

TEST(qwen2_vl_2b_parses)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_load(FIXTURES "qwen2-vl-2b-instruct", &c), 0);
    CHECK_INT(c.architecture, FT_ARCH_QWEN2);
    CHECK(c.vision_language);
    CHECK_STR(c.architecture_name, "Qwen2VLForConditionalGeneration");
    CHECK_INT(c.hidden_size, 1536);
    CHECK_INT(c.head_dim, 128);
    CHECK(c.attention_bias && c.tie_word_embeddings);
    CHECK(c.rope_theta == 1000000.0);
    CHECK_INT(c.mrope_section[0], 16);
    CHECK_INT(c.mrope_section[1], 24);
    CHECK_INT(c.mrope_section[2], 24);
    CHECK_INT(c.image_token_id, 151655);
    CHECK_INT(c.vision_start_token_id, 151652);
    CHECK_INT(c.vision_end_token_id, 151653);
    CHECK_INT(c.vision.depth, 32);
    CHECK_INT(c.vision.embed_dim, 1280);
    CHECK_INT(c.vision.num_heads, 16);
    CHECK_INT(c.vision.mlp_hidden, 5120);
    CHECK_INT(c.vision.out_hidden, 1536);
    CHECK_INT(c.vision.in_channels, 3);
    CHECK_INT(c.vision.patch_size, 14);
    CHECK(c.vision.rope_theta == 10000.0);
    /* transformers' count of Qwen2VLForConditionalGeneration with this config */
    CHECK_INT(ft_model_config_parameter_count(&c), 2208985600);
    char *text = ft_model_config_to_json(&c);
    ft_model_config again;
    CHECK_INT(ft_model_config_parse(text, "written", &again), 0);
    CHECK(configs_equal(&c, &again) && vision_parts_equal(&c, &again));
    free(text);
}

TEST(qwen2_5_vl_7b_parses)
{
    ft_model_config c;
    CHECK_INT(ft_model_config_load(FIXTURES "qwen2.5-vl-7b-instruct", &c), 0);
    CHECK(c.vision_language && c.vision.qwen2_5);
    CHECK_STR(c.architecture_name, "Qwen2_5_VLForConditionalGeneration");
    CHECK_INT(c.hidden_size, 3584);
    CHECK(!c.tie_word_embeddings);
    CHECK_INT(c.vision.embed_dim, 1280);
    CHECK_INT(c.vision.mlp_hidden, 3420);
    CHECK_INT(c.vision.out_hidden, 3584);
    CHECK_INT(c.vision.window_size, 112);
    CHECK(c.vision.full_attention_blocks == ((1ull << 7) | (1ull << 15) | (1ull << 23) | (1ull << 31)));
    CHECK_INT(c.mrope_section[1], 24);
    /* transformers' count of Qwen2_5_VLForConditionalGeneration with this config (8.29B, as published) */
    CHECK_INT(ft_model_config_parameter_count(&c), 8292166656);
    char *text = ft_model_config_to_json(&c);
    ft_model_config again;
    CHECK_INT(ft_model_config_parse(text, "written", &again), 0);
    CHECK(configs_equal(&c, &again) && vision_parts_equal(&c, &again));
    free(text);
    static const char swish[] = "\"hidden_act\": \"silu\",\n    \"hidden_size\": 1280";
    CHECK_INT(ft_read_file(FIXTURES "qwen2.5-vl-7b-instruct/config.json", &text, NULL), 0);
    char *at = strstr(text, swish);
    CHECK(at != NULL);
    if (at) {
        memcpy(at + strlen("\"hidden_act\": \""), "gelu", 4);
        CHECK_INT(ft_model_config_parse(text, "config.json", &again), -1);
        CHECK(strstr(ft_error_message(), "vision_config.hidden_act must be \"silu\" (Qwen2.5-VL's)") != NULL);
    }
    free(text);
}

TEST(qwen2_vl_transformers_5_layout)
{
    /* what transformers 5.17 saves: the language model in text_config, rope_parameters */
    ft_model_config c;
    CHECK_INT(ft_model_config_load("tests/fixtures/parity_vl/qwen2_vl/model", &c), 0);
    CHECK(c.vision_language);
    CHECK_INT(c.vocab_size, 300);
    CHECK_INT(c.num_hidden_layers, 2);
    CHECK_INT(c.mrope_section[0], 2);
    CHECK_INT(c.mrope_section[2], 3);
    CHECK(c.rope_theta == 1000000.0);
    CHECK_STR(c.torch_dtype, "float32");
    CHECK_INT(c.vision.depth, 2);
    CHECK_INT(c.vision.mlp_hidden, 64);
    CHECK_INT(c.image_token_id, 292);
    CHECK(!c.tie_word_embeddings);
}

TEST(qwen2_vl_refusals_are_named)
{
    char *text;
    CHECK_INT(ft_read_file(FIXTURES "qwen2-vl-2b-instruct/config.json", &text, NULL), 0);
    struct {
        const char *from, *to, *message;
    } cases[] = {
        {"      16,\n", "      15,\n", "mrope_section adds up to 63"},
        {"\"vision_config\"", "\"vision_cfg\"", "vision_config is missing"},
        {"\"depth\": 32", "\"depth\": 0", "vision_config.depth must be a positive integer"},
        {"\"hidden_size\": 1536,\n    \"patch", "\"hidden_size\": 1024,\n    \"patch",
         "vision_config.hidden_size 1024 differs"},
        {"\"image_token_id\": 151655", "\"image_token_id\": 999999", "image_token_id must be a token id"},
        {"\"type\": \"mrope\"", "\"type\": \"yarn\"", "type 'yarn' is not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *at = strstr(text, cases[i].from);
        CHECK(at != NULL);
        if (!at)
            continue;
        char *changed = ft_xasprintf("%.*s%s%s", (int)(at - text), text, cases[i].to, at + strlen(cases[i].from));
        ft_model_config c;
        CHECK_INT(ft_model_config_parse(changed, "config.json", &c), -1);
        if (!strstr(ft_error_message(), cases[i].message))
            fprintf(stderr, "  case %zu: %s\n", i, ft_error_message());
        CHECK(strstr(ft_error_message(), cases[i].message) != NULL);
        free(changed);
    }
    free(text);
}

int main(void)
{
    RUN(qwen2_5_0_5b_parses);
    RUN(qwen3_0_6b_parses);
    RUN(llama_3_8b_parses);
    RUN(llama_3_1_rope_scaling_and_eos_list);
    RUN(writes_what_transformers_writes);
    RUN(odd_floats_round_trip);
    RUN(model_type_alone_is_enough);
    RUN(unsupported_files_are_refused);
    RUN(bad_fields_are_named);
    RUN(unsupported_options_are_named);
    RUN(llama_and_qwen3_refuse_attention_bias);
    RUN(not_an_object_or_no_architecture);
    RUN(transformers_5_rope_parameters);
    RUN(qwen2_vl_2b_parses);
    RUN(qwen2_vl_transformers_5_layout);
    RUN(qwen2_5_vl_7b_parses);
    RUN(qwen2_vl_refusals_are_named);
    return check_done();
}
