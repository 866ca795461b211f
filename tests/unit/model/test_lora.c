/* LoRA adapters: target lists, scaling, initialisation as peft's, and peft
 * adapter folders written and read back (a vision-language model's with PEFT's
 * names and a target regex that leaves the vision tower alone). */
#include <jansson.h>
#include <math.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/lora.h"

static ft_backend *cpu;

static ft_model_config tiny_config(void)
{
    ft_model_config config = {0};
    config.architecture = FT_ARCH_QWEN2;
    config.vocab_size = 50;
    config.hidden_size = 16;
    config.intermediate_size = 24;
    config.num_hidden_layers = 2;
    config.num_attention_heads = 4;
    config.num_key_value_heads = 2;
    config.head_dim = 8; /* q: 32 wide, k and v: 16 */
    return config;
}

TEST(parses_all_and_names_with_or_without_proj)
{
    unsigned targets = 0;
    CHECK_INT(ft_lora_parse_targets("all", &targets), 0);
    CHECK_INT(targets, 127);
    CHECK_INT(ft_lora_parse_targets("q_proj,v_proj", &targets), 0);
    CHECK_INT(targets, (1u << FT_LORA_Q) | (1u << FT_LORA_V));
    CHECK_INT(ft_lora_parse_targets(" gate  up, down_proj ", &targets), 0);
    CHECK_INT(targets, (1u << FT_LORA_GATE) | (1u << FT_LORA_UP) | (1u << FT_LORA_DOWN));
    CHECK_STR(ft_lora_target_name(FT_LORA_DOWN), "down_proj");
}

TEST(rejects_unknown_and_empty_targets)
{
    unsigned targets = 0;
    CHECK_INT(ft_lora_parse_targets("q_proj,qkv", &targets), -1);
    CHECK_STR(ft_error_message(), "unknown LoRA target 'qkv'; expected all, or some of q_proj k_proj v_proj o_proj "
                                  "gate_proj up_proj down_proj (or q k v o gate up down), and a vision-language "
                                  "model's projector's linear_1 linear_2 (LLaVA) or mlp.0 mlp.2 (Qwen2-VL's merger)");
    CHECK_INT(ft_lora_parse_targets(" , ", &targets), -1);
    CHECK_STR(ft_error_message(), "no LoRA target given; expected all, or some of q_proj k_proj v_proj o_proj "
                                  "gate_proj up_proj down_proj");
}

TEST(scaling_is_alpha_over_rank_or_its_root)
{
    ft_lora_config config = {8, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 1};
    CHECK(ft_lora_scaling(&config) == 2.0);
    config.use_rslora = true;
    CHECK(fabs(ft_lora_scaling(&config) - 16.0 / sqrt(8.0)) < 1e-12);
}

TEST(checks_its_configuration)
{
    ft_lora_config config = {0, 16.0, 0.0, false, FT_LORA_ALL_TARGETS, 1};
    CHECK_INT(ft_lora_config_check(&config), -1);
    CHECK_STR(ft_error_message(), "lora_rank is 0; it must be at least 1");
    config.rank = 4;
    config.dropout = 1.0;
    CHECK_INT(ft_lora_config_check(&config), -1);
    CHECK_STR(ft_error_message(), "lora_dropout is 1; it must be in [0, 1)");
}

TEST(names_and_shapes_follow_peft_and_the_model)
{
    char *name = ft_lora_tensor_name(1, FT_LORA_GATE, 'B');
    CHECK_STR(name, "base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight");
    free(name);
    ft_model_config config = tiny_config();
    int in_features, out_features;
    ft_lora_target_shape(&config, FT_LORA_O, &in_features, &out_features);
    CHECK(in_features == 32 && out_features == 16);
    ft_lora_target_shape(&config, FT_LORA_K, &in_features, &out_features);
    CHECK(in_features == 16 && out_features == 16);
}

TEST(a_is_kaiming_uniform_and_b_zero_and_seeded)
{
    ft_model_config model = tiny_config();
    ft_lora_config config = {4, 8.0, 0.0, false, (1u << FT_LORA_Q) | (1u << FT_LORA_DOWN), 5};
    ft_lora *first = NULL, *second = NULL, *other = NULL;
    CHECK_INT(ft_lora_create(&model, &config, cpu, true, &first), 0);
    CHECK_INT(ft_lora_create(&model, &config, cpu, true, &second), 0);
    config.seed = 6;
    CHECK_INT(ft_lora_create(&model, &config, cpu, false, &other), 0);
    size_t count;
    const ft_param_tensor *tensors = ft_lora_tensors(first, &count);
    CHECK_INT(count, 8); /* 2 layers x 2 targets x (A, B) */
    CHECK_INT(ft_lora_parameter_count(first), 2 * (4 * (16 + 32) + 4 * (24 + 16)));
    CHECK(ft_lora_at(first, 0, FT_LORA_K) == NULL);
    const ft_lora_weights *down = ft_lora_at(first, 1, FT_LORA_DOWN);
    CHECK(down && down->in_features == 24 && down->out_features == 16);
    float bound = 1.0f / sqrtf(24.0f), largest = 0.0f;
    for (size_t i = 0; i < 4 * 24; i++)
        largest = fmaxf(largest, fabsf(down->a[i]));
    CHECK(largest <= bound && largest > 0.8f * bound);
    for (size_t i = 0; i < 16 * 4; i++)
        CHECK(down->b[i] == 0.0f);
    CHECK(memcmp(down->a, ft_lora_at(second, 1, FT_LORA_DOWN)->a, 4 * 24 * sizeof(float)) == 0);
    CHECK(memcmp(down->a, ft_lora_at(other, 1, FT_LORA_DOWN)->a, 4 * 24 * sizeof(float)) != 0);
    CHECK(ft_lora_at(other, 1, FT_LORA_DOWN)->grad_a == NULL);
    CHECK(tensors[0].grad != NULL && tensors[0].shape[0] == 4 && tensors[0].shape[1] == 16);
    ft_lora_free(first);
    ft_lora_free(second);
    ft_lora_free(other);
}

TEST(saves_a_peft_folder_and_loads_it_back)
{
    char dir[] = "/tmp/ftpipe-lora.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    ft_model_config model = tiny_config();
    ft_lora_config config = {2, 4.0, 0.05, true, (1u << FT_LORA_V) | (1u << FT_LORA_UP), 9};
    ft_lora *saved = NULL, *loaded = NULL;
    CHECK_INT(ft_lora_create(&model, &config, cpu, false, &saved), 0);
    ft_lora_at(saved, 1, FT_LORA_UP)->b[3] = 0.25f; /* something besides the initial zeros */
    CHECK_INT(ft_lora_save(saved, dir, "models/base"), 0);
    ft_lora_config read;
    CHECK_INT(ft_lora_config_load(dir, &read), 0);
    CHECK(read.rank == 2 && read.alpha == 4.0 && read.dropout == 0.05 && read.use_rslora);
    CHECK_INT(read.targets, config.targets);
    /* every key peft 0.10 to 0.15 write, so each of them loads it as it saved it */
    char *config_path = ft_path_join(dir, "adapter_config.json"), *text = NULL;
    size_t length = 0;
    CHECK_INT(ft_read_file(config_path, &text, &length), 0);
    const char *keys[] = {"alpha_pattern", "auto_mapping", "base_model_name_or_path", "bias", "fan_in_fan_out",
                          "inference_mode", "init_lora_weights", "layer_replication", "layers_pattern",
                          "layers_to_transform", "loftq_config", "lora_alpha", "lora_dropout", "megatron_config",
                          "megatron_core", "modules_to_save", "peft_type", "r", "rank_pattern", "revision",
                          "target_modules", "task_type", "use_dora", "use_rslora"};
    json_t *root = text ? json_loads(text, 0, NULL) : NULL;
    CHECK(root && json_object_size(root) == sizeof keys / sizeof *keys);
    for (size_t k = 0; root && k < sizeof keys / sizeof *keys; k++)
        if (!json_object_get(root, keys[k]))
            CHECK_STR(keys[k], "a key adapter_config.json lacks");
    CHECK(root && json_is_null(json_object_get(root, "layer_replication")) &&
          json_object_size(json_object_get(root, "loftq_config")) == 0);
    json_decref(root);
    free(text);
    free(config_path);
    read.seed = 1;
    CHECK_INT(ft_lora_create(&model, &read, cpu, false, &loaded), 0);
    CHECK_INT(ft_lora_load(loaded, dir), 0);
    CHECK(ft_lora_at(loaded, 1, FT_LORA_UP)->b[3] == 0.25f);
    CHECK(memcmp(ft_lora_at(loaded, 0, FT_LORA_V)->a, ft_lora_at(saved, 0, FT_LORA_V)->a, 2 * 16 * sizeof(float)) ==
          0);
    ft_lora_free(loaded);
    /* an adapter of another rank does not fit */
    read.rank = 3;
    CHECK_INT(ft_lora_create(&model, &read, cpu, false, &loaded), 0);
    CHECK_INT(ft_lora_load(loaded, dir), -1);
    char *expected = ft_xasprintf("%s/adapter_model.safetensors: tensor base_model.model.model.layers.0.self_attn."
                                  "v_proj.lora_A.weight is not [3, 16] as the adapter's rank and the model's "
                                  "dimensions require",
                                  dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_lora_free(loaded);
    ft_lora_free(saved);
    ft_remove_tree(dir);
}

TEST(a_vision_language_adapter_names_the_language_model_only)
{
    char dir[] = "/tmp/ftpipe-lora-vl.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    ft_model_config model = tiny_config();
    model.vision_language = true;
    ft_lora_config config = {2, 4.0, 0.0, false, (1u << FT_LORA_Q) | (1u << FT_LORA_DOWN), 9};
    ft_lora *saved = NULL, *loaded = NULL;
    CHECK_INT(ft_lora_create(&model, &config, cpu, false, &saved), 0);
    size_t count;
    const ft_param_tensor *tensors = ft_lora_tensors(saved, &count);
    CHECK_STR(tensors[0].name, "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight");
    ft_lora_at(saved, 1, FT_LORA_DOWN)->b[1] = 0.5f;
    CHECK_INT(ft_lora_save(saved, dir, "base"), 0);
    char *config_path = ft_path_join(dir, "adapter_config.json");
    json_t *root = json_load_file(config_path, 0, NULL);
    /* Qwen2.5-VL's tower has its own down_proj: the regex leaves it alone, as LLaMA-Factory's does */
    CHECK_STR(json_string_value(json_object_get(root, "target_modules")), "^(?!.*visual).*(?:q_proj|down_proj)$");
    json_decref(root);
    free(config_path);
    ft_lora_config read;
    CHECK_INT(ft_lora_config_load(dir, &read), 0);
    CHECK_INT(read.targets, config.targets);
    CHECK_INT(ft_lora_create(&model, &read, cpu, false, &loaded), 0);
    CHECK_INT(ft_lora_load(loaded, dir), 0);
    CHECK(ft_lora_at(loaded, 1, FT_LORA_DOWN)->b[1] == 0.5f);
    ft_lora_free(loaded);
    ft_lora_free(saved);
    ft_remove_tree(dir);
}

TEST(a_llava_adapter_leaves_the_tower_and_projector_alone)
{
    char dir[] = "/tmp/ftpipe-lora-llava.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    ft_model_config model = tiny_config();
    model.llava = true;
    ft_lora_config config = {2, 4.0, 0.0, false, (1u << FT_LORA_Q) | (1u << FT_LORA_V), 9};
    ft_lora *saved = NULL;
    CHECK_INT(ft_lora_create(&model, &config, cpu, false, &saved), 0);
    size_t count;
    const ft_param_tensor *tensors = ft_lora_tensors(saved, &count);
    CHECK_STR(tensors[0].name, "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight");
    CHECK_INT(ft_lora_save(saved, dir, "base"), 0);
    char *config_path = ft_path_join(dir, "adapter_config.json");
    json_t *root = json_load_file(config_path, 0, NULL);
    /* CLIP's attention has its own q_proj and v_proj */
    CHECK_STR(json_string_value(json_object_get(root, "target_modules")),
              "^(?!.*(?:vision_tower|multi_modal_projector)).*(?:q_proj|v_proj)$");
    json_decref(root);
    free(config_path);
    ft_lora_config read;
    CHECK_INT(ft_lora_config_load(dir, &read), 0);
    CHECK_INT(read.targets, config.targets);
    /* PEFT's own adapter for the tiny LLaVA (make_llava.py) reads the same way */
    CHECK_INT(ft_lora_config_load("tests/fixtures/llava_parity/adapter", &read), 0);
    CHECK_INT(read.targets, FT_LORA_ALL_TARGETS);
    ft_lora_free(saved);
    ft_remove_tree(dir);
}

/* The projector's layers: PEFT's names on transformers 5's models, the regex
 * that adds them, read back with or without the language model's targets. */
static void check_projector_adapter(bool llava, unsigned targets, const char *first_name, const char *pattern)
{
    char dir[] = "/tmp/ftpipe-lora-projector.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    ft_model_config model = tiny_config();
    model.llava = llava;
    model.vision_language = !llava;
    model.vision = (ft_vision_config){.embed_dim = 8, .spatial_merge_size = 2, .out_hidden = model.hidden_size};
    model.llava_tower.vision.hidden_size = 12;
    model.llava_tower.text_hidden_size = model.hidden_size;
    ft_lora_config config = {2, 4.0, 0.0, false, targets, 9};
    ft_lora *saved = NULL, *loaded = NULL;
    CHECK_INT(ft_lora_create(&model, &config, cpu, false, &saved), 0);
    size_t count;
    const ft_param_tensor *tensors = ft_lora_tensors(saved, &count);
    const ft_lora_weights *first = ft_lora_projector_at(saved, 0), *second = ft_lora_projector_at(saved, 1);
    CHECK(first && second);
    CHECK_INT(first->in_features, llava ? 12 : 32);
    CHECK_INT(second->out_features, model.hidden_size);
    CHECK_STR(tensors[count - 4].name, first_name);
    second->b[1] = 0.25f;
    CHECK_INT(ft_lora_save(saved, dir, "base"), 0);
    char *config_path = ft_path_join(dir, "adapter_config.json");
    json_t *root = json_load_file(config_path, 0, NULL);
    CHECK_STR(json_string_value(json_object_get(root, "target_modules")), pattern);
    json_decref(root);
    free(config_path);
    ft_lora_config read;
    CHECK_INT(ft_lora_config_load(dir, &read), 0);
    CHECK_INT(read.targets, targets);
    CHECK_INT(ft_lora_create(&model, &read, cpu, false, &loaded), 0);
    CHECK_INT(ft_lora_load(loaded, dir), 0);
    CHECK(ft_lora_projector_at(loaded, 1)->b[1] == 0.25f);
    ft_lora_free(loaded);
    ft_lora_free(saved);
    ft_remove_tree(dir);
}

TEST(adapters_on_the_projector_follow_peft)
{
    unsigned with_q = (1u << FT_LORA_Q) | FT_LORA_PROJECTOR_TARGETS;
    check_projector_adapter(false, with_q, "base_model.model.model.visual.merger.mlp.0.lora_A.weight",
                            "^(?!.*visual).*(?:q_proj)$|^.*visual\\.merger\\.mlp\\.(?:0|2)$");
    check_projector_adapter(true, with_q, "base_model.model.model.multi_modal_projector.linear_1.lora_A.weight",
                            "^(?!.*(?:vision_tower|multi_modal_projector)).*(?:q_proj)$"
                            "|^.*multi_modal_projector\\.(?:linear_1|linear_2)$");
    /* the projector alone: no group for the language model, which would match every module */
    check_projector_adapter(false, FT_LORA_PROJECTOR_TARGETS, "base_model.model.model.visual.merger.mlp.0.lora_A.weight",
                            "^.*visual\\.merger\\.mlp\\.(?:0|2)$");
    /* a text model has no projector */
    ft_model_config text = tiny_config();
    ft_lora_config config = {2, 4.0, 0.0, false, FT_LORA_PROJECTOR_FIRST, 9};
    ft_lora *lora = NULL;
    CHECK_INT(ft_lora_create(&text, &config, cpu, false, &lora), -1);
    CHECK(strstr(ft_error_message(), "text-only model") != NULL);
}

TEST(refuses_adapter_configs_it_cannot_apply)
{
    char dir[] = "/tmp/ftpipe-lora.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char *path = ft_path_join(dir, "adapter_config.json");
    const char *dora = "{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 16, \"use_dora\": true, "
                       "\"target_modules\": [\"q_proj\"]}";
    CHECK_INT(ft_write_file_atomic(path, dora, strlen(dora)), 0);
    ft_lora_config config;
    CHECK_INT(ft_lora_config_load(dir, &config), -1);
    char *expected = ft_xasprintf("%s: DoRA adapters are not supported", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    const char *no_rank = "{\"peft_type\": \"LORA\", \"lora_alpha\": 16, \"target_modules\": \"all-linear\"}";
    CHECK_INT(ft_write_file_atomic(path, no_rank, strlen(no_rank)), 0);
    CHECK_INT(ft_lora_config_load(path, &config), -1);
    expected = ft_xasprintf("%s: 'r' is missing or not a number", path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(path);
    ft_remove_tree(dir);
}

int main(void)
{
    cpu = ft_backend_cpu_create(1);
    RUN(parses_all_and_names_with_or_without_proj);
    RUN(rejects_unknown_and_empty_targets);
    RUN(scaling_is_alpha_over_rank_or_its_root);
    RUN(checks_its_configuration);
    RUN(names_and_shapes_follow_peft_and_the_model);
    RUN(a_is_kaiming_uniform_and_b_zero_and_seeded);
    RUN(saves_a_peft_folder_and_loads_it_back);
    RUN(a_vision_language_adapter_names_the_language_model_only);
    RUN(a_llava_adapter_leaves_the_tower_and_projector_alone);
    RUN(adapters_on_the_projector_follow_peft);
    RUN(refuses_adapter_configs_it_cannot_apply);
    ft_backend_destroy(cpu);
    return check_done();
}
