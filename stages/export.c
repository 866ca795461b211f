/* export: a train output made ready to ship.
 *
 *   export/peft: export adapter                      # a peft adapter folder
 *   export/merged: export adapter models/tiny        # the adapter merged into its base model
 *       format = merged
 *   export/adapter.tar.zst: export adapter
 *       archive = tar.zst
 *
 * Input 0 is a train output (it has ftpipe_train.json); a LoRA merge takes the
 * base model folder as input 1. With an archive, the folder is built in the
 * work folder and packed into the single output file, under a top folder
 * named as the target less its extension. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/formats/llava_config.h"
#include "ftpipe/formats/model_config.h"
#include "ftpipe/model/lora.h"
#include "ftpipe/model/model_merge.h"
#include "ftpipe/transfer/archive_create.h"

typedef struct {
    const char *train_dir;
    bool lora;
    char *base_model;   /* ftpipe_train.json's base_model */
} train_output;

static int read_train_output(ft_stage *stage, train_output *train)
{
    train->train_dir = ft_stage_input_path(stage, 0);
    char *path = ft_path_join(train->train_dir, "ftpipe_train.json");
    int status = 0;
    if (!ft_path_exists(path)) {
        status = ft_stage_fail(stage, "export's first input %s is not a train output (it has no ftpipe_train.json)",
                               train->train_dir);
    } else {
        json_error_t error;
        json_t *root = json_load_file(path, 0, &error);
        const char *type = json_string_value(json_object_get(root, "finetuning_type"));
        const char *base = json_string_value(json_object_get(root, "base_model"));
        if (!root)
            status = ft_stage_fail(stage, "%s: not readable JSON: %s (line %d)", path, error.text, error.line);
        else if (!type || (strcmp(type, "lora") != 0 && strcmp(type, "full") != 0))
            status = ft_stage_fail(stage, "%s: finetuning_type is neither \"lora\" nor \"full\"", path);
        else {
            train->lora = strcmp(type, "lora") == 0;
            train->base_model = strdup(base ? base : "");
        }
        json_decref(root);
    }
    free(path);
    return status;
}

/* adapter_config.json naming the base model as asked, and the weights as trained. */
static int export_peft(ft_stage *stage, const train_output *train, const char *out_dir)
{
    if (!train->lora)
        return ft_stage_fail(stage, "%s is a full fine-tune: it has no adapter to export; set format = merged to "
                                    "export the model folder", train->train_dir);
    if (ft_stage_input_count(stage) > 1)
        return ft_stage_fail(stage, "format = peft takes one input, the train output; %zu given (the base model is "
                                    "an input of format = merged only)", ft_stage_input_count(stage));
    const char *base = ft_stage_param_is_set(stage, "base_model_name_or_path")
                           ? ft_stage_param_string(stage, "base_model_name_or_path")
                           : train->base_model;
    char *config_path = ft_path_join(train->train_dir, "adapter_config.json");
    ft_lora_config config;
    json_error_t error;
    json_t *root = ft_lora_config_load(train->train_dir, &config) == 0 ? json_load_file(config_path, 0, &error) : NULL;
    int status = root ? ft_mkdir_p(out_dir) : -1;
    if (status == 0) {
        json_object_set_new(root, "base_model_name_or_path", json_string(base));
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
        char *destination = ft_path_join(out_dir, "adapter_config.json");
        status = ft_write_file_atomic(destination, text, strlen(text));
        free(destination);
        free(text);
    }
    json_decref(root);
    free(config_path);
    char *weights = ft_path_join(train->train_dir, "adapter_model.safetensors");
    char *destination = ft_path_join(out_dir, "adapter_model.safetensors");
    if (status == 0)
        status = ft_copy_file(weights, destination);
    free(weights);
    free(destination);
    if (status == 0)
        ft_stage_summary(stage, "peft adapter: rank %d, alpha %g, base %s", config.rank, config.alpha, base);
    return status;
}

static int report_progress(void *context, uint64_t done, uint64_t total)
{
    ft_stage *stage = context;
    ft_stage_progress(stage, total ? (double)done / (double)total : -1.0, "%llu/%llu tensors",
                      (unsigned long long)done, (unsigned long long)total);
    return ft_stage_cancelled(stage) ? 1 : 0;
}

static int export_merged(ft_stage *stage, const train_output *train, const char *out_dir)
{
    ft_model_merge_options options = {.progress = report_progress, .progress_context = stage};
    int64_t max_shard_bytes = ft_stage_param_size_bytes(stage, "max_shard_size");
    if (max_shard_bytes <= 0)
        return ft_stage_fail(stage, "max_shard_size must be above 0 (the default is 5000000000, transformers' 5GB)");
    options.max_shard_bytes = (uint64_t)max_shard_bytes;
    const char *dtype = ft_stage_param_string(stage, "dtype");
    options.convert = strcmp(dtype, "auto") != 0;
    options.dtype = strcmp(dtype, "bf16") == 0 ? FT_DTYPE_BF16 : strcmp(dtype, "f16") == 0 ? FT_DTYPE_F16 : FT_DTYPE_F32;
    const char *model_dir = train->train_dir;
    if (train->lora) {
        if (ft_stage_input_count(stage) != 2)
            return ft_stage_fail(stage, "format = merged of the LoRA adapter %s needs the base model folder as the "
                                        "second input (export %s <base model>)", train->train_dir, train->train_dir);
        model_dir = ft_stage_input_path(stage, 1);
        char *config = ft_path_join(model_dir, "config.json");
        bool is_model = ft_path_exists(config);
        free(config);
        if (!is_model)
            return ft_stage_fail(stage, "export's second input %s is not a model folder (it has no config.json)",
                                 model_dir);
        options.adapter_dir = train->train_dir;
    } else if (ft_stage_input_count(stage) > 1) {
        return ft_stage_fail(stage, "%s is a full fine-tune, already a whole model: export takes no base model "
                                    "beside it", train->train_dir);
    }
    if (ft_model_merge_write(model_dir, out_dir, &options) < 0)
        return -1;
    ft_stage_summary(stage, "%s model, %s", train->lora ? "merged" : "fully fine-tuned",
                     options.convert ? ft_dtype_torch_name(options.dtype) : "dtype as the base's");
    return 0;
}

/* The archive's top folder: the target's name less its extension (adapter for
 * export/adapter.tar.zst). */
static char *archive_top(const char *output, const char *extension)
{
    const char *name = ft_path_basename(output);
    size_t length = strlen(name), suffix = strlen(extension) + 1;
    if (length > suffix && name[length - suffix] == '.' && strcmp(name + length - suffix + 1, extension) == 0)
        length -= suffix;
    return ft_xasprintf("%.*s", (int)length, name);
}

static int run_export(ft_stage *stage)
{
    if (ft_stage_input_count(stage) < 1)
        return ft_stage_fail(stage, "export needs a train output as its first input");
    train_output train = {0};
    if (read_train_output(stage, &train) < 0)
        return -1;
    const char *archive = ft_stage_param_string(stage, "archive");
    bool archived = strcmp(archive, "none") != 0;
    const char *output = ft_stage_output_path(stage);
    char *folder = archived ? ft_path_join(ft_stage_work_dir(stage), "export") : strdup(output);
    int status = archived && ft_path_exists(folder) ? ft_remove_tree(folder) : 0;
    if (status == 0)
        status = strcmp(ft_stage_param_string(stage, "format"), "peft") == 0 ? export_peft(stage, &train, folder)
                                                                            : export_merged(stage, &train, folder);
    if (status == 0 && archived) {
        ft_archive_format format = strcmp(archive, "tar.zst") == 0 ? FT_ARCHIVE_TAR_ZSTD : FT_ARCHIVE_TAR_GZIP;
        char *top = archive_top(output, archive);
        status = ft_archive_create(folder, top, output, format);
        free(top);
        if (status == 0)
            status = ft_remove_tree(folder);
    }
    free(folder);
    free(train.base_model);
    return status;
}

/* --- estimate --- */

/* The bytes of a folder's files: its weight files (*.safetensors) or the others. */
static uint64_t folder_bytes(const char *dir, bool weights)
{
    uint64_t bytes = 0;
    DIR *folder = opendir(dir);
    for (struct dirent *entry; folder && (entry = readdir(folder));) {
        size_t length = strlen(entry->d_name);
        bool is_weights = length > 12 && strcmp(entry->d_name + length - 12, ".safetensors") == 0;
        char *path = ft_path_join(dir, entry->d_name);
        struct stat info;
        if (is_weights == weights && stat(path, &info) == 0 && S_ISREG(info.st_mode))
            bytes += (uint64_t)info.st_size;
        free(path);
    }
    if (folder)
        closedir(folder);
    return bytes;
}

/* Disk: the folder it makes (the adapter copied, or the model rewritten in its
 * dtype beside the base's other files), and with an archive the archive too,
 * counted at the folder's size: compression only makes it smaller. */
static int estimate_folder(ft_stage *stage, ft_stage_estimate *out)
{
    for (size_t i = 0; i < ft_stage_input_count(stage); i++)
        if (!ft_path_exists(ft_stage_input_path(stage, i))) {
            ft_estimate_unknown(&out->disk_bytes, "needs %s, which is not built yet", ft_stage_input_path(stage, i));
            return 0;
        }
    if (ft_stage_input_count(stage) < 1)
        return ft_stage_fail(stage, "export needs a train output as its first input");
    train_output train = {0};
    if (read_train_output(stage, &train) < 0)
        return -1;
    free(train.base_model);
    double folder;
    char what[300];
    if (strcmp(ft_stage_param_string(stage, "format"), "peft") == 0) {
        folder = (double)(folder_bytes(train.train_dir, true) + 1024); /* the weights and adapter_config.json */
        snprintf(what, sizeof what, "the adapter's weights as %s holds them", train.train_dir);
    } else {
        const char *model_dir = train.lora && ft_stage_input_count(stage) > 1 ? ft_stage_input_path(stage, 1)
                                                                             : train.train_dir;
        const char *dtype = ft_stage_param_string(stage, "dtype");
        uint64_t weights = folder_bytes(model_dir, true);
        ft_model_config config;
        if (strcmp(dtype, "auto") != 0) {
            if (ft_language_model_config_load(model_dir, &config) < 0)
                return -1;
            size_t element = strcmp(dtype, "f32") == 0 ? 4 : 2;
            weights = ft_model_config_parameter_count(&config) * element;
        }
        folder = (double)(weights + folder_bytes(model_dir, false));
        snprintf(what, sizeof what, "the weights of %s in %s and its other files", model_dir,
                 strcmp(dtype, "auto") == 0 ? "their own dtype" : dtype);
    }
    if (strcmp(ft_stage_param_string(stage, "archive"), "none") == 0)
        ft_estimate_set(&out->disk_bytes, folder, "%s", what);
    else
        ft_estimate_set(&out->disk_bytes, 2.0 * folder, "%s, and the archive of them, at most as large", what);
    return 0;
}

/* The run says what it refuses with its own message (see tokenize's estimate). */
static int estimate_export(ft_stage *stage, ft_stage_estimate *out)
{
    if (estimate_folder(stage, out) == 0)
        return 0;
    ft_estimate_unknown(&out->disk_bytes, "cannot estimate: %s", ft_error_message());
    ft_error_clear();
    return 0;
}

const ft_stage_kind ft_kind_export = {
    .name = "export",
    .version = 2,
    .run = run_export,
    .estimate = estimate_export,
};
