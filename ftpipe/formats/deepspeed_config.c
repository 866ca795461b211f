/* deepspeed_config: walks the JSON by a table of the keys DeepSpeed and
 * LLaMA-Factory's example configs use. */
#include "ftpipe/formats/deepspeed_config.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

typedef enum {
    KEY_STAGE,      /* an integer 0..3 */
    KEY_DEVICE,     /* "none" or "cpu" */
    KEY_COUNT,      /* a positive integer or "auto" */
    KEY_NORM,       /* a number >= 0 or "auto" */
    KEY_SECTION,    /* an object of its own keys */
    KEY_IGNORED,    /* anything: DeepSpeed's machinery, meaningless here */
} key_kind;

typedef struct key key;
struct key {
    const char *name;
    key_kind kind;
    const key *section;   /* KEY_SECTION: its keys, ending with a NULL name */
};

typedef struct {
    const char *path;
    ft_deepspeed_config *out;
    ft_strbuf ignored;
} reader;

static const key offload_optimizer_keys[] = {
    {"device", KEY_DEVICE, NULL},         {"pin_memory", KEY_IGNORED, NULL}, {"buffer_count", KEY_IGNORED, NULL},
    {"fast_init", KEY_IGNORED, NULL},     {NULL, KEY_IGNORED, NULL},
};

static const key offload_param_keys[] = {
    {"device", KEY_DEVICE, NULL},         {"pin_memory", KEY_IGNORED, NULL}, {"buffer_count", KEY_IGNORED, NULL},
    {"buffer_size", KEY_IGNORED, NULL},   {"max_in_cpu", KEY_IGNORED, NULL}, {NULL, KEY_IGNORED, NULL},
};

static const key zero_keys[] = {
    {"stage", KEY_STAGE, NULL},
    {"offload_optimizer", KEY_SECTION, offload_optimizer_keys},
    {"offload_param", KEY_SECTION, offload_param_keys},
    {"allgather_partitions", KEY_IGNORED, NULL},
    {"allgather_bucket_size", KEY_IGNORED, NULL},
    {"overlap_comm", KEY_IGNORED, NULL},
    {"reduce_scatter", KEY_IGNORED, NULL},
    {"reduce_bucket_size", KEY_IGNORED, NULL},
    {"contiguous_gradients", KEY_IGNORED, NULL},
    {"round_robin_gradients", KEY_IGNORED, NULL},
    {"sub_group_size", KEY_IGNORED, NULL},
    {"stage3_prefetch_bucket_size", KEY_IGNORED, NULL},
    {"stage3_param_persistence_threshold", KEY_IGNORED, NULL},
    {"stage3_max_live_parameters", KEY_IGNORED, NULL},
    {"stage3_max_reuse_distance", KEY_IGNORED, NULL},
    {"stage3_gather_16bit_weights_on_model_save", KEY_IGNORED, NULL},
    {"stage3_gather_fp16_weights_on_model_save", KEY_IGNORED, NULL},
    {"ignore_unused_parameters", KEY_IGNORED, NULL},
    {"load_from_fp32_weights", KEY_IGNORED, NULL},
    {"elastic_checkpoint", KEY_IGNORED, NULL},
    {NULL, KEY_IGNORED, NULL},
};

static const key top_keys[] = {
    {"train_batch_size", KEY_COUNT, NULL},
    {"train_micro_batch_size_per_gpu", KEY_COUNT, NULL},
    {"gradient_accumulation_steps", KEY_COUNT, NULL},
    {"gradient_clipping", KEY_NORM, NULL},
    {"zero_optimization", KEY_SECTION, zero_keys},
    {"zero_allow_untested_optimizer", KEY_IGNORED, NULL},
    {"fp16", KEY_IGNORED, NULL},           /* the backend fixes the precision: bf16 on cuda, f32 on cpu */
    {"bf16", KEY_IGNORED, NULL},
    {"steps_per_print", KEY_IGNORED, NULL},
    {"wall_clock_breakdown", KEY_IGNORED, NULL},
    {"comms_config", KEY_IGNORED, NULL},
    {"monitor_config", KEY_IGNORED, NULL},
    {NULL, KEY_IGNORED, NULL},
};

static bool is_auto(const json_t *value) { return json_is_string(value) && strcmp(json_string_value(value), "auto") == 0; }

static int64_t *count_slot(ft_deepspeed_config *out, const char *name)
{
    if (strcmp(name, "train_batch_size") == 0)
        return &out->train_batch_size;
    if (strcmp(name, "train_micro_batch_size_per_gpu") == 0)
        return &out->train_micro_batch_size_per_gpu;
    return &out->gradient_accumulation_steps;
}

static int read_value(reader *r, const key *k, const char *where, const char *parent, json_t *value);

static int read_section(reader *r, const key *keys, const char *where, json_t *object)
{
    if (!json_is_object(object))
        return ft_error("%s: %s must be an object", r->path, where[0] ? where : "the config");
    const char *name;
    json_t *value;
    json_object_foreach(object, name, value) {
        const key *k = keys;
        while (k->name && strcmp(k->name, name) != 0)
            k++;
        char *path = where[0] ? ft_xasprintf("%s.%s", where, name) : ft_xasprintf("%s", name);
        int status = k->name ? read_value(r, k, path, where, value)
                             : ft_error("%s: unknown key %s: ftpipe reads the ZeRO stage, offload_optimizer and "
                                        "offload_param from a DeepSpeed config (and checks the batch sizes and "
                                        "gradient_clipping); remove it",
                                        r->path, path);
        free(path);
        if (status < 0)
            return -1;
    }
    return 0;
}

static int read_value(reader *r, const key *k, const char *where, const char *parent, json_t *value)
{
    switch (k->kind) {
    case KEY_SECTION:
        return read_section(r, k->section, where, value);
    case KEY_IGNORED:
        ft_strbuf_printf(&r->ignored, "%s%s", r->ignored.length ? ", " : "", where);
        return 0;
    case KEY_STAGE:
        if (!json_is_integer(value) || json_integer_value(value) < 0 || json_integer_value(value) > 3)
            return ft_error("%s: %s must be 0, 1, 2 or 3", r->path, where);
        r->out->zero_stage = (int)json_integer_value(value);
        return 0;
    case KEY_DEVICE: {
        const char *device = json_is_string(value) ? json_string_value(value) : "";
        bool cpu = strcmp(device, "cpu") == 0;
        if (strcmp(device, "nvme") == 0)
            return ft_error("%s: %s is \"nvme\": ftpipe offloads to host memory only; use \"cpu\"", r->path, where);
        if (!cpu && strcmp(device, "none") != 0)
            return ft_error("%s: %s must be \"none\" or \"cpu\"", r->path, where);
        if (strcmp(parent, "zero_optimization.offload_param") == 0)
            r->out->offload_param = cpu;
        else
            r->out->offload_optimizer = cpu;
        return 0;
    }
    case KEY_COUNT:
        if (is_auto(value))
            return 0;
        if (!json_is_integer(value) || json_integer_value(value) < 1)
            return ft_error("%s: %s must be \"auto\" or a positive integer", r->path, where);
        *count_slot(r->out, k->name) = (int64_t)json_integer_value(value);
        return 0;
    case KEY_NORM:
        if (is_auto(value))
            return 0;
        if (!json_is_number(value) || !(json_number_value(value) >= 0.0) || !isfinite(json_number_value(value)))
            return ft_error("%s: %s must be \"auto\" or a number of at least 0", r->path, where);
        r->out->gradient_clipping = json_number_value(value);
        return 0;
    }
    return 0;
}

int ft_deepspeed_config_read(const char *path, ft_deepspeed_config *out)
{
    *out = (ft_deepspeed_config){0, false, false, -1, -1, -1, -1.0, NULL};
    json_error_t error;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &error);
    if (!root)
        return ft_error("%s:%d:%d: not a DeepSpeed JSON config: %s", path, error.line, error.column, error.text);
    reader r = {path, out, {0}};
    ft_strbuf_init(&r.ignored);
    int status = read_section(&r, top_keys, "", root);
    json_decref(root);
    if (status == 0 && out->offload_param && out->zero_stage != 3)
        status = ft_error("%s: zero_optimization.offload_param needs stage 3 (the stage is %d), as in DeepSpeed: "
                          "parameters are only sharded, hence offloaded, with stage 3",
                          path, out->zero_stage);
    if (status == 0 && out->offload_optimizer && out->zero_stage == 0)
        status = ft_error("%s: zero_optimization.offload_optimizer needs stage 1, 2 or 3 (the stage is 0), as in "
                          "DeepSpeed",
                          path);
    out->ignored = ft_strbuf_take(&r.ignored);
    return status;
}

void ft_deepspeed_config_free(ft_deepspeed_config *config)
{
    free(config->ignored);
    config->ignored = NULL;
}
