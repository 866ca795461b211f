/* llava_config: llava-hf's config.json (as llava-1.5-7b-hf ships it: most vision
 * keys and all LLaVA keys left to transformers' defaults) and the one
 * transformers 5.17 saves, the image token count, and every unsupported option
 * an error naming the file and key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/formats/llava_config.h"

TEST(reads_llava_hub_config_with_transformers_defaults)
{
    ft_llava_config config;
    CHECK_INT(ft_llava_config_load("tests/fixtures/models/llava-processor", &config), 0);
    CHECK_INT(config.vision.hidden_size, 1024);
    CHECK_INT(config.vision.intermediate_size, 4096);
    CHECK_INT(config.vision.num_hidden_layers, 24);
    CHECK_INT(config.vision.num_attention_heads, 16);
    CHECK_INT(config.vision.image_size, 336);
    CHECK_INT(config.vision.patch_size, 14);
    CHECK(config.vision.layer_norm_eps == 1e-5);
    CHECK_INT(config.text_hidden_size, 4096);
    CHECK_INT(config.image_token_id, 128256);
    CHECK_INT(config.vision_feature_layer, -2);
    CHECK(config.select_default);
    CHECK(config.projector_bias);
    CHECK_INT(ft_llava_image_tokens(&config), 576);
    CHECK(ft_llava_config_is_llava("tests/fixtures/models/llava-processor"));
    CHECK(!ft_llava_config_is_llava("tests/fixtures/models/llama-3-8b"));
    CHECK(!ft_llava_config_is_llava("/nonexistent"));

    /* no vision_config at all: LlavaConfig's own CLIP ViT-L/14-336 */
    CHECK_INT(ft_llava_config_parse("{\"model_type\": \"llava\"}", "c.json", &config), 0);
    CHECK_INT(config.vision.hidden_size * 100 + config.vision.num_hidden_layers, 102424);
    CHECK_INT(config.image_token_id, 32000);
    /* an empty vision_config: CLIPVisionConfig's defaults (ViT-B/32 at 224) */
    CHECK_INT(ft_llava_config_parse("{\"model_type\": \"llava\", \"vision_config\": {}, \"vision_feature_select_"
                                    "strategy\": \"full\", \"image_token_id\": 7}",
                                    "c.json", &config),
              0);
    CHECK_INT(config.vision.image_size * 100 + config.vision.patch_size, 22432);
    CHECK_INT(ft_llava_image_tokens(&config), 50); /* 7 x 7 patches and CLS */
    CHECK_INT(config.image_token_id, 7);
}

TEST(reads_the_config_transformers_saves)
{
    ft_llava_config config;
    CHECK_INT(ft_llava_config_load("tests/fixtures/llava_parity/model", &config), 0);
    CHECK_INT(config.vision.hidden_size, 32);
    CHECK_INT(config.vision.num_hidden_layers, 3);
    CHECK_INT(config.vision.image_size, 56);
    CHECK_INT(config.text_hidden_size, 64);
    CHECK_INT(config.image_token_id, 299);
    CHECK_INT(ft_llava_image_tokens(&config), 16);
}

/* llava-hf's text_config names a few keys; LlamaConfig's defaults fill the rest. */
TEST(reads_the_text_config_with_llama_defaults)
{
    ft_model_config text;
    CHECK_INT(ft_llava_text_config_load("tests/fixtures/models/llava-processor", &text), 0);
    CHECK_INT(text.architecture, FT_ARCH_LLAMA);
    CHECK_INT(text.vocab_size, 128320);
    CHECK_INT(text.hidden_size, 4096);
    CHECK_INT(text.intermediate_size, 14336);
    CHECK_INT(text.num_hidden_layers, 32);      /* LlamaConfig's default */
    CHECK_INT(text.num_attention_heads, 32);    /* LlamaConfig's default */
    CHECK_INT(text.num_key_value_heads, 8);
    CHECK(text.rope_theta == 500000.0);
    CHECK_INT(ft_llava_text_config_load("tests/fixtures/llava_parity/model", &text), 0);
    CHECK_INT(text.vocab_size * 100 + text.num_key_value_heads, 30001);
    CHECK(text.has_llama3_rope_scaling);
    CHECK_INT(ft_llava_text_config_load("tests/fixtures/models/llama-3-8b", &text), -1);
    CHECK(strstr(ft_error_message(), "not a LLaVA model") != NULL);
}

TEST(refuses_what_it_does_not_compute)
{
    static const struct {
        const char *json, *message;
    } cases[] = {
        {"{\"architectures\": [\"LlamaForCausalLM\"]}",
         "c.json: not a LLaVA model (architectures [\"LlavaForConditionalGeneration\"])"},
        {"{\"model_type\": \"llava\", \"vision_config\": {\"model_type\": \"siglip_vision_model\"}}",
         "vision_config.model_type 'siglip_vision_model' is not supported"},
        {"{\"model_type\": \"llava\", \"vision_config\": {\"hidden_act\": \"gelu\"}}",
         "\"vision_config.hidden_act\" must be \"quick_gelu\""},
        {"{\"model_type\": \"llava\", \"vision_feature_layer\": [-2, -5]}",
         "\"vision_feature_layer\" must be one layer index (several layers are not supported)"},
        {"{\"model_type\": \"llava\", \"vision_feature_layer\": -26}",
         "vision_feature_layer -26 is outside the vision tower's 25 hidden states"},
        {"{\"model_type\": \"llava\", \"vision_feature_select_strategy\": \"cls\"}",
         "\"vision_feature_select_strategy\" must be \"default\" (CLS dropped) or \"full\""},
        {"{\"model_type\": \"llava\", \"projector_hidden_act\": \"relu\"}", "\"projector_hidden_act\" must be \"gelu\""},
        {"{\"model_type\": \"llava\", \"vision_config\": {\"image_size\": 100, \"patch_size\": 14}}",
         "vision_config.image_size 100 is not a multiple of patch_size 14"},
        {"{\"model_type\": \"llava\", \"text_config\": {\"hidden_size\": 0}}",
         "\"text_config.hidden_size\" must be a positive whole number"},
        {"[", "c.json:1:1: not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ft_llava_config config;
        CHECK_INT(ft_llava_config_parse(cases[i].json, "c.json", &config), -1);
        CHECK(strstr(ft_error_message(), cases[i].message) != NULL);
        if (!strstr(ft_error_message(), cases[i].message))
            fprintf(stderr, "  case %zu said: %s\n", i, ft_error_message());
    }
}

int main(void)
{
    RUN(reads_llava_hub_config_with_transformers_defaults);
    RUN(reads_the_config_transformers_saves);
    RUN(reads_the_text_config_with_llama_defaults);
    RUN(refuses_what_it_does_not_compute);
    return check_done();
}
