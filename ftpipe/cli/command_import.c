/* command_import: `ftpipe import`, a LLaMA-Factory training YAML turned into a
 * pipeline.
 *
 *   ftpipe import CONFIG.yaml [-o Ftpipe]     (without -o: standard output)
 *   ftpipe import --keys                      (what each key becomes)
 *
 * model_name_or_path becomes a download stage (a hub id) or stays a local
 * folder, staged to /dev/shm; dataset and dataset_dir a tokenize stage; the
 * training keys a train stage whose target is output_dir; eval_dataset an
 * evaluate stage; save_strategy is the HF Trainer's (steps when absent). Every
 * key is used or listed as dropped, with the reason, in a
 * comment at the end (llamafactory_keys.c). The YAML is read with libyaml. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/cli/commands.h"
#include "ftpipe/cli/llamafactory_keys.h"

typedef struct {
    char *key;
    char *value; /* NULL: YAML null */
    int line;
} config_entry;

typedef struct {
    config_entry *entries;
    size_t count;
} config;

static void config_free(config *c)
{
    for (size_t i = 0; i < c->count; i++) {
        free(c->entries[i].key);
        free(c->entries[i].value);
    }
    free(c->entries);
}

static const config_entry *config_get(const config *c, const char *key)
{
    for (size_t i = 0; i < c->count; i++)
        if (strcmp(c->entries[i].key, key) == 0)
            return &c->entries[i];
    return NULL;
}

/* The value of key, or NULL when absent or null. */
static const char *config_value(const config *c, const char *key)
{
    const config_entry *entry = config_get(c, key);
    return entry ? entry->value : NULL;
}

static bool is_true(const char *value) { return value && strcmp(value, "true") == 0; }

static bool is_yaml_null(const yaml_event_t *event)
{
    const char *text = (const char *)event->data.scalar.value;
    return event->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
           (strcmp(text, "null") == 0 || strcmp(text, "~") == 0 || strcmp(text, "Null") == 0 ||
            strcmp(text, "NULL") == 0 || text[0] == '\0');
}

/* A flat mapping of scalars, as LLaMA-Factory's training YAMLs are. */
static int read_config(const char *path, config *out)
{
    memset(out, 0, sizeof *out);
    FILE *file = fopen(path, "rb");
    if (!file)
        return ft_error_errno("cannot open %s", path);
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, file);
    size_t capacity = 0;
    int depth = 0, status = 0;
    char *pending_key = NULL;
    int pending_line = 0;
    for (bool done = false; !done && status == 0;) {
        yaml_event_t event;
        if (!yaml_parser_parse(&parser, &event)) {
            status = ft_error("%s:%zu:%zu: %s", path, parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                              parser.problem ? parser.problem : "not valid YAML");
            break;
        }
        int line = (int)event.start_mark.line + 1;
        switch (event.type) {
        case YAML_STREAM_END_EVENT: done = true; break;
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT:
            if (depth > 0 || event.type == YAML_SEQUENCE_START_EVENT)
                status = ft_error("%s:%d: %s%s%s is a %s; LLaMA-Factory's training configs hold one value per key",
                                  path, pending_key ? pending_line : line, pending_key ? "'" : "the document",
                                  pending_key ? pending_key : "",
                                  pending_key ? "'" : "",
                                  event.type == YAML_SEQUENCE_START_EVENT ? "list" : "nested mapping");
            depth++;
            break;
        case YAML_MAPPING_END_EVENT: depth--; break;
        case YAML_ALIAS_EVENT: status = ft_error("%s:%d: YAML aliases are not supported here", path, line); break;
        case YAML_SCALAR_EVENT:
            if (depth != 1) {
                status = ft_error("%s:%d: expected a mapping of keys to values", path, line);
            } else if (!pending_key) {
                pending_key = ft_xstrdup((const char *)event.data.scalar.value);
                pending_line = line;
                for (size_t i = 0; i < out->count; i++)
                    if (strcmp(out->entries[i].key, pending_key) == 0)
                        status = ft_error("%s:%d: '%s' is given twice (first on line %d)", path, line, pending_key,
                                          out->entries[i].line);
            } else {
                ft_grow((void **)&out->entries, &capacity, out->count + 1, sizeof *out->entries);
                out->entries[out->count++] = (config_entry){
                    pending_key, is_yaml_null(&event) ? NULL : ft_xstrdup((const char *)event.data.scalar.value),
                    pending_line};
                pending_key = NULL;
            }
            break;
        default: break;
        }
        yaml_event_delete(&event);
    }
    free(pending_key);
    yaml_parser_delete(&parser);
    fclose(file);
    if (status != 0)
        config_free(out);
    return status;
}

/* ---- the pipeline ---- */

static void put_param(ft_strbuf *out, const char *name, const char *value)
{
    ft_strbuf_printf(out, "\t%-28s = %s\n", name, value);
}

/* The parameters of one stage kind that the config sets. */
static void put_params(ft_strbuf *out, const config *c, ft_lf_key_use use)
{
    for (size_t i = 0; i < c->count; i++) {
        const ft_lf_key *key = ft_lf_key_find(c->entries[i].key);
        if (key && key->use == use && c->entries[i].value)
            put_param(out, key->param ? key->param : key->key, c->entries[i].value);
    }
}

static bool is_local_folder(const char *model)
{
    return model[0] == '/' || model[0] == '.' || model[0] == '~' || ft_path_is_dir(model);
}

static int check_config(const char *path, const config *c)
{
    const char *stage = config_value(c, "stage");
    if (stage && strcmp(stage, "sft") != 0 && strcmp(stage, "pt") != 0)
        return ft_error("%s: stage: %s is not supported: ftpipe trains supervised fine-tuning (sft) and continued "
                        "pretraining (pt)",
                        path, stage);
    const char *method = config_value(c, "finetuning_type");
    if (method && strcmp(method, "lora") != 0 && strcmp(method, "full") != 0)
        return ft_error("%s: finetuning_type: %s is not supported: ftpipe trains lora or full", path, method);
    const char *save = config_value(c, "save_strategy");
    if (save && strcmp(save, "no") != 0 && strcmp(save, "steps") != 0 && strcmp(save, "epoch") != 0)
        return ft_error("%s: save_strategy: %s is not supported: ftpipe keeps checkpoint-N folders every save_steps "
                        "steps (steps) or at each epoch's end (epoch), or none (no)",
                        path, save);
    if (!config_value(c, "model_name_or_path"))
        return ft_error("%s: model_name_or_path is missing: the pipeline needs the model to train", path);
    if (!config_value(c, "dataset") && (!config_value(c, "do_train") || is_true(config_value(c, "do_train"))))
        return ft_error("%s: dataset is missing: the pipeline needs the data to train on", path);
    if ((!stage || strcmp(stage, "sft") == 0) && !config_value(c, "template"))
        return ft_error("%s: template is missing: LLaMA-Factory would read the tokenizer's chat template, which "
                        "ftpipe does not; set the template of the model's family (qwen, qwen3_nothink, llama3, ...)",
                        path);
    return 0;
}

static void put_dropped(ft_strbuf *out, const config *c)
{
    bool header = false;
    for (size_t i = 0; i < c->count; i++) {
        const config_entry *entry = &c->entries[i];
        const ft_lf_key *key = ft_lf_key_find(entry->key);
        if (key && key->use != FT_LF_DROPPED && entry->value)
            continue;
        if (!header)
            ft_strbuf_puts(out, "\n# Keys of the config with no counterpart here:\n");
        header = true;
        const char *why = !key                ? "not a key `ftpipe import` knows: check by hand what it should become"
                          : key->use == FT_LF_DROPPED ? key->reason
                                                      : "null: the default applies";
        ft_strbuf_printf(out, "#   %s: %s -- %s\n", entry->key, entry->value ? entry->value : "null", why);
    }
}

static int make_pipeline(const char *path, const config *c, ft_strbuf *out)
{
    if (check_config(path, c) != 0)
        return -1;
    const char *model = config_value(c, "model_name_or_path");
    const char *stage = config_value(c, "stage") ? config_value(c, "stage") : "sft";
    const char *output = config_value(c, "output_dir") ? config_value(c, "output_dir") : "saves/model";
    const char *data = config_value(c, "dataset_dir") ? config_value(c, "dataset_dir") : "data";
    bool train = !config_value(c, "do_train") || is_true(config_value(c, "do_train"));
    const char *eval_dataset = config_value(c, "eval_dataset");
    const char *strategy = config_value(c, "eval_strategy");
    bool eval_in_training = train && eval_dataset && strategy && strcmp(strategy, "no") != 0;
    bool eval_after = eval_dataset && (!eval_in_training || is_true(config_value(c, "do_predict")));

    ft_strbuf_printf(out, "# Made by `ftpipe import %s` from a LLaMA-Factory training config.\n", path);
    ft_strbuf_puts(out, "# Every key is used below or listed at the end with why it has no counterpart.\n\n");
    bool local = is_local_folder(model);
    ft_strbuf_printf(out, "MODEL ?= %s\nDATA ?= %s\n\n", model, data);
    if (local) {
        ft_strbuf_puts(out, "models/base_shm: shm $(MODEL)\n\tfallback = disk\n");
    } else {
        ft_strbuf_puts(out, "models/base: download\n\turl = hf://$(MODEL)\n\tfiles = *.json *.safetensors\n\n");
        ft_strbuf_puts(out, "models/base_shm: shm models/base\n\tfallback = disk\n");
    }
    if (train) {
        ft_strbuf_puts(out, "\ntokenized/train_set: tokenize models/base_shm $(DATA)\n");
        put_param(out, "stage", stage);
        if (!config_value(c, "template")) /* pt without one: LLaMA-Factory's placeholder */
            put_param(out, "template", "empty");
        put_params(out, c, FT_LF_TOKENIZE);
        if (eval_in_training) { /* the same preprocessing on the eval datasets, all of them evaluated */
            ft_strbuf_puts(out, "\ntokenized/eval_set: tokenize models/base_shm $(DATA)\n");
            put_param(out, "stage", stage);
            if (!config_value(c, "template"))
                put_param(out, "template", "empty");
            for (size_t i = 0; i < c->count; i++) {
                const ft_lf_key *key = ft_lf_key_find(c->entries[i].key);
                const char *name = key && key->use == FT_LF_TOKENIZE ? (key->param ? key->param : key->key) : "";
                if (c->entries[i].value && *name && strcmp(name, "dataset") != 0 && strcmp(name, "val_size") != 0)
                    put_param(out, name, c->entries[i].value);
            }
            put_param(out, "dataset", eval_dataset);
        }
        ft_strbuf_printf(out, "\n%s: train models/base_shm tokenized/train_set%s\n", output,
                         eval_in_training ? " tokenized/eval_set" : "");
        put_params(out, c, FT_LF_TRAIN);
        const char *save = config_value(c, "save_strategy");
        put_param(out, "save_strategy", save ? save : "steps"); /* the HF Trainer's default, not ftpipe's */
    }
    if (eval_after) {
        ft_strbuf_printf(out, "\n%s-eval: evaluate models/base_shm%s%s $(DATA)\n", output, train ? " " : "",
                         train ? output : "");
        put_param(out, "dataset", eval_dataset);
        if (config_value(c, "template"))
            put_param(out, "template", config_value(c, "template"));
        if (config_value(c, "cutoff_len"))
            put_param(out, "cutoff_len", config_value(c, "cutoff_len"));
        if (config_value(c, "per_device_eval_batch_size"))
            put_param(out, "batch_size", config_value(c, "per_device_eval_batch_size"));
    }
    put_dropped(out, c);
    return 0;
}

static int print_keys(void)
{
    size_t count;
    const ft_lf_key *keys = ft_lf_keys(&count);
    static const char *const uses[] = {"tokenize", "train", "", "dropped"};
    for (size_t i = 0; i < count; i++) {
        const ft_lf_key *key = &keys[i];
        if (key->use == FT_LF_SPECIAL || key->use == FT_LF_DROPPED)
            printf("%s\t%s\t%s\n", key->key, key->use == FT_LF_SPECIAL ? "import" : "dropped", key->reason);
        else
            printf("%s\t%s\t%s\n", key->key, uses[key->use], key->param ? key->param : key->key);
    }
    return fflush(stdout) == 0 ? 0 : ft_error_errno("writing standard output");
}

int ft_command_import(int argc, char **argv)
{
    static const char usage[] = "usage: ftpipe import CONFIG.yaml [-o FILE] | ftpipe import --keys";
    if (argc == 1 && strcmp(argv[0], "--keys") == 0)
        return print_keys();
    const char *input = NULL, *output = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
            output = argv[++i];
        else if (argv[i][0] != '-' && !input)
            input = argv[i];
        else
            return ft_error("import: unexpected argument '%s'; %s", argv[i], usage);
    }
    if (!input)
        return ft_error("import: the LLaMA-Factory config is missing; %s", usage);
    if (output && ft_path_exists(output))
        return ft_error("import: %s exists; give another -o FILE or remove it first", output);
    config c;
    if (read_config(input, &c) != 0)
        return -1;
    ft_strbuf pipeline;
    ft_strbuf_init(&pipeline);
    int status = make_pipeline(input, &c, &pipeline);
    for (size_t i = 0; status == 0 && i < c.count; i++)
        if (!ft_lf_key_find(c.entries[i].key))
            fprintf(stderr, "ftpipe: import: %s:%d: '%s' is not a key ftpipe knows; it is listed at the end of the "
                            "pipeline\n",
                    input, c.entries[i].line, c.entries[i].key);
    if (status == 0 && output)
        status = ft_write_file_atomic(output, pipeline.data, pipeline.length);
    else if (status == 0 && (fwrite(pipeline.data, 1, pipeline.length, stdout) != pipeline.length || fflush(stdout)))
        status = ft_error_errno("import: writing standard output");
    ft_strbuf_free(&pipeline);
    config_free(&c);
    return status;
}
