/* LLaMA-Factory's examples/deepspeed configs (ds_z0, ds_z2, ds_z2_offload,
 * ds_z3, ds_z3_offload, written below as the files are: LLaMA-Factory,
 * Apache-2.0; its webui's create_ds_config writes the same) map to their stage
 * and offload, with DeepSpeed's tuning keys listed as ignored; numbers in place
 * of "auto" are kept; hostile configs (unknown keys, wrong types, nvme,
 * offload_param below stage 3, bad JSON, duplicate keys) are errors naming the
 * file and the key. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/deepspeed_config.h"

static char root[] = "/tmp/ftpipe-deepspeed.XXXXXX";

#define HEAD                                                                                             \
    "{\n  \"train_batch_size\": \"auto\",\n  \"train_micro_batch_size_per_gpu\": \"auto\",\n"              \
    "  \"gradient_accumulation_steps\": \"auto\",\n  \"gradient_clipping\": \"auto\",\n"                   \
    "  \"zero_allow_untested_optimizer\": true,\n  \"fp16\": {\n    \"enabled\": \"auto\",\n"               \
    "    \"loss_scale\": 0,\n    \"loss_scale_window\": 1000,\n    \"initial_scale_power\": 16,\n"         \
    "    \"hysteresis\": 2,\n    \"min_loss_scale\": 1\n  },\n  \"bf16\": {\n    \"enabled\": \"auto\"\n  },\n"
#define TAIL                                                                                             \
    "  \"comms_config\": {\n    \"verbose\": false\n  },\n  \"monitor_config\": {\n    \"enabled\": true,\n" \
    "    \"tag\": \"DeepSpeedMonitor\",\n    \"csv_monitor\": {\n      \"enabled\": false\n    }\n  }\n}\n"
#define Z012(stage, offload)                                                                             \
    "  \"zero_optimization\": {\n    \"stage\": " stage ",\n" offload                                       \
    "    \"allgather_partitions\": true,\n    \"allgather_bucket_size\": 5e8,\n"                            \
    "    \"overlap_comm\": false,\n    \"reduce_scatter\": true,\n    \"reduce_bucket_size\": 5e8,\n"     \
    "    \"contiguous_gradients\": true,\n    \"round_robin_gradients\": true\n  },\n"
#define OFFLOAD_OPTIMIZER "    \"offload_optimizer\": {\n      \"device\": \"cpu\",\n      \"pin_memory\": true\n    },\n"
#define OFFLOAD_PARAM "    \"offload_param\": {\n      \"device\": \"cpu\",\n      \"pin_memory\": true\n    },\n"
#define Z3(offload)                                                                                      \
    "  \"zero_optimization\": {\n    \"stage\": 3,\n" offload                                               \
    "    \"overlap_comm\": false,\n    \"contiguous_gradients\": true,\n    \"sub_group_size\": 1e9,\n"   \
    "    \"reduce_bucket_size\": \"auto\",\n    \"stage3_prefetch_bucket_size\": \"auto\",\n"             \
    "    \"stage3_param_persistence_threshold\": \"auto\",\n    \"stage3_max_live_parameters\": 1e9,\n"   \
    "    \"stage3_max_reuse_distance\": 1e9,\n    \"stage3_gather_16bit_weights_on_model_save\": true\n  },\n"

static char *write_config(const char *name, const char *text)
{
    char *path = ft_path_join(root, name);
    CHECK_INT(ft_write_file_atomic(path, text, strlen(text)), 0);
    return path;
}

/* Reads text as NAME; expects success with the stage and offloads. */
static void expect(const char *name, const char *text, int stage, bool offload_optimizer, bool offload_param)
{
    char *path = write_config(name, text);
    ft_deepspeed_config config;
    int status = ft_deepspeed_config_read(path, &config);
    if (status < 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    CHECK_INT(status, 0);
    CHECK_INT(config.zero_stage, stage);
    CHECK_INT(config.offload_optimizer, offload_optimizer);
    CHECK_INT(config.offload_param, offload_param);
    CHECK_INT(config.train_batch_size, -1);
    CHECK_INT(config.train_micro_batch_size_per_gpu, -1);
    CHECK_INT(config.gradient_accumulation_steps, -1);
    CHECK(config.gradient_clipping == -1.0);
    CHECK(strstr(config.ignored, "fp16, bf16") != NULL && strstr(config.ignored, "zero_optimization.overlap_comm"));
    ft_deepspeed_config_free(&config);
    free(path);
}

/* Reads text; expects an error message `message` with ROOT standing for the folder. */
static void refuse(const char *text, const char *message)
{
    char *path = write_config("hostile.json", text);
    ft_deepspeed_config config;
    CHECK_INT(ft_deepspeed_config_read(path, &config), -1);
    char *expected = ft_xasprintf("%s%s", path, message);
    CHECK_STR(ft_error_message(), expected);
    ft_deepspeed_config_free(&config);
    free(expected);
    free(path);
}

TEST(llamafactory_examples_map_to_their_stage_and_offload)
{
    expect("ds_z0_config.json", HEAD Z012("0", "") TAIL, 0, false, false);
    expect("ds_z2_config.json", HEAD Z012("2", "") TAIL, 2, false, false);
    expect("ds_z2_offload_config.json", HEAD Z012("2", OFFLOAD_OPTIMIZER) TAIL, 2, true, false);
    expect("ds_z3_config.json", HEAD Z3("") TAIL, 3, false, false);
    expect("ds_z3_offload_config.json", HEAD Z3(OFFLOAD_OPTIMIZER OFFLOAD_PARAM) TAIL, 3, true, true);
}

TEST(ignored_keys_are_listed_in_order)
{
    char *path = write_config("z2.json", HEAD Z012("2", "") TAIL);
    ft_deepspeed_config config;
    CHECK_INT(ft_deepspeed_config_read(path, &config), 0);
    CHECK_STR(config.ignored, "zero_allow_untested_optimizer, fp16, bf16, zero_optimization.allgather_partitions, "
                              "zero_optimization.allgather_bucket_size, zero_optimization.overlap_comm, "
                              "zero_optimization.reduce_scatter, zero_optimization.reduce_bucket_size, "
                              "zero_optimization.contiguous_gradients, zero_optimization.round_robin_gradients, "
                              "comms_config, monitor_config");
    ft_deepspeed_config_free(&config);
    free(path);
}

TEST(numbers_instead_of_auto_are_kept)
{
    char *path = write_config("numbers.json", "{\"train_batch_size\": 32, \"train_micro_batch_size_per_gpu\": 4, "
                                              "\"gradient_accumulation_steps\": 4, \"gradient_clipping\": 0.5, "
                                              "\"zero_optimization\": {\"stage\": 1}}");
    ft_deepspeed_config config;
    CHECK_INT(ft_deepspeed_config_read(path, &config), 0);
    CHECK_INT(config.zero_stage, 1);
    CHECK_INT(config.train_batch_size, 32);
    CHECK_INT(config.train_micro_batch_size_per_gpu, 4);
    CHECK_INT(config.gradient_accumulation_steps, 4);
    CHECK(config.gradient_clipping == 0.5);
    CHECK_STR(config.ignored, "");
    ft_deepspeed_config_free(&config);
    free(path);
}

TEST(hostile_configs_are_errors_naming_file_and_key)
{
    refuse("{\"zero_optimization\": {\"stage\": 2, \"offload_optimiser\": {}}}",
           ": unknown key zero_optimization.offload_optimiser: ftpipe reads the ZeRO stage, offload_optimizer and "
           "offload_param from a DeepSpeed config (and checks the batch sizes and gradient_clipping); remove it");
    refuse("{\"optimizer\": {\"type\": \"AdamW\"}}",
           ": unknown key optimizer: ftpipe reads the ZeRO stage, offload_optimizer and offload_param from a "
           "DeepSpeed config (and checks the batch sizes and gradient_clipping); remove it");
    refuse("{\"zero_optimization\": {\"stage\": \"auto\"}}", ": zero_optimization.stage must be 0, 1, 2 or 3");
    refuse("{\"zero_optimization\": {\"stage\": 4}}", ": zero_optimization.stage must be 0, 1, 2 or 3");
    refuse("{\"zero_optimization\": {\"stage\": 3, \"offload_param\": {\"device\": \"nvme\"}}}",
           ": zero_optimization.offload_param.device is \"nvme\": ftpipe offloads to host memory only; use \"cpu\"");
    refuse("{\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": {\"device\": true}}}",
           ": zero_optimization.offload_optimizer.device must be \"none\" or \"cpu\"");
    refuse("{\"zero_optimization\": {\"stage\": 2, \"offload_param\": {\"device\": \"cpu\"}}}",
           ": zero_optimization.offload_param needs stage 3 (the stage is 2), as in DeepSpeed: parameters are only "
           "sharded, hence offloaded, with stage 3");
    refuse("{\"zero_optimization\": {\"offload_optimizer\": {\"device\": \"cpu\"}}}",
           ": zero_optimization.offload_optimizer needs stage 1, 2 or 3 (the stage is 0), as in DeepSpeed");
    refuse("{\"zero_optimization\": 2}", ": zero_optimization must be an object");
    refuse("[2]", ": the config must be an object");
    refuse("{\"train_micro_batch_size_per_gpu\": 0}",
           ": train_micro_batch_size_per_gpu must be \"auto\" or a positive integer");
    refuse("{\"gradient_clipping\": \"none\"}", ": gradient_clipping must be \"auto\" or a number of at least 0");
    refuse("{\"zero_optimization\": {\"stage\": 1}, \"zero_optimization\": {\"stage\": 3}}",
           ":1:55: not a DeepSpeed JSON config: duplicate object key near '\"zero_optimization\"'");
    refuse("{\"zero_optimization\": {\"stage\": 1,}}",
           ":1:35: not a DeepSpeed JSON config: string or '}' expected near '}'");
}

TEST(a_missing_file_is_an_error)
{
    ft_deepspeed_config config;
    CHECK_INT(ft_deepspeed_config_read("/nonexistent/ds.json", &config), -1);
    CHECK(strstr(ft_error_message(), "/nonexistent/ds.json") != NULL);
    ft_deepspeed_config_free(&config);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    RUN(llamafactory_examples_map_to_their_stage_and_offload);
    RUN(ignored_keys_are_listed_in_order);
    RUN(numbers_instead_of_auto_are_kept);
    RUN(hostile_configs_are_errors_naming_file_and_key);
    RUN(a_missing_file_is_an_error);
    ft_remove_tree(root);
    return check_done();
}
