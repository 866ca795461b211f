/* dataset_info: LLaMA-Factory's dataset_info.json, which names datasets and says
 * how to read them: {"NAME": {"file_name", "formatting", "columns", "tags"}}.
 * Unmapped columns take LLaMA-Factory's defaults, so an entry reads here as it
 * reads there. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/formats/dataset.h"
#include "ftpipe/formats/dataset_refusals.h"

typedef struct {
    const char *key;
    size_t offset;        /* of the char * field in ft_dataset_columns */
    const char *default_name;
} column_field;

#define COLUMN(key, field, default_name) {key, offsetof(ft_dataset_columns, field), default_name}

static const column_field column_fields[] = {
    COLUMN("prompt", prompt, "instruction"), COLUMN("query", query, "input"),
    COLUMN("response", response, "output"),  COLUMN("history", history, NULL),
    COLUMN("system", system, NULL),          COLUMN("messages", messages, "conversations"),
    COLUMN("images", images, NULL),
};

static const column_field tag_fields[] = {
    COLUMN("role_tag", role_tag, "from"),
    COLUMN("content_tag", content_tag, "value"),
    COLUMN("user_tag", user_tag, "human"),
    COLUMN("assistant_tag", assistant_tag, "gpt"),
    COLUMN("system_tag", system_tag, "system"),
    COLUMN("observation_tag", observation_tag, "observation"),
    COLUMN("function_tag", function_tag, "function_call"),
};

#define N_OF(array) (sizeof(array) / sizeof((array)[0]))


#define N_OF(array) (sizeof(array) / sizeof((array)[0]))

static char **field_at(ft_dataset_columns *columns, const column_field *field)
{
    return (char **)((char *)columns + field->offset);
}

static char *known_keys(const column_field *fields, size_t count)
{
    ft_strbuf list;
    ft_strbuf_init(&list);
    for (size_t i = 0; i < count; i++)
        ft_strbuf_printf(&list, "%s%s", i ? ", " : "", fields[i].key);
    return ft_strbuf_take(&list);
}

/* Fills fields from a "columns" or "tags" object; an unknown key is refused. */
static int read_mapping(const json_t *mapping, const char *section, const char *dataset, const column_field *fields,
                        size_t n_fields, ft_dataset_columns *columns)
{
    if (!mapping)
        return 0;
    if (!json_is_object(mapping))
        return ft_error("dataset '%s': \"%s\" must be an object", dataset, section);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)mapping, key, value) {
        for (const char *const *column = ft_dataset_refused_columns(); *column; column++)
            if (strcmp(key, *column) == 0) {
                char *what = ft_xasprintf("dataset '%s'", dataset);
                ft_dataset_refuse_column(what, key);
                free(what);
                return -1;
            }
        size_t i = 0;
        while (i < n_fields && strcmp(key, fields[i].key) != 0)
            i++;
        if (i == n_fields) {
            char *known = known_keys(fields, n_fields);
            int status = ft_error("dataset '%s': unknown key \"%s\" in \"%s\" (known: %s)", dataset, key, section,
                                  known);
            free(known);
            return status;
        }
        if (!json_is_string(value) && !json_is_null(value))
            return ft_error("dataset '%s': \"%s\".\"%s\" must be a string", dataset, section, key);
        char **slot = field_at(columns, &fields[i]);
        free(*slot);
        *slot = json_is_string(value) ? ft_xstrdup(json_string_value(value)) : NULL;
    }
    return 0;
}

static void set_defaults(ft_dataset_columns *columns)
{
    for (size_t i = 0; i < N_OF(column_fields); i++)
        if (column_fields[i].default_name)
            *field_at(columns, &column_fields[i]) = ft_xstrdup(column_fields[i].default_name);
    for (size_t i = 0; i < N_OF(tag_fields); i++)
        *field_at(columns, &tag_fields[i]) = ft_xstrdup(tag_fields[i].default_name);
}

static int read_entry(const char *folder, const char *info_path, const char *name, const json_t *entry,
                      ft_dataset_source *out)
{
    if (!json_is_object(entry))
        return ft_error("%s: dataset '%s' must be an object", info_path, name);
    const json_t *file_name = json_object_get(entry, "file_name");
    if (!json_is_string(file_name)) {
        static const char *const hub_keys[] = {"hf_hub_url", "ms_hub_url", "om_hub_url", "script_url"};
        for (size_t i = 0; i < N_OF(hub_keys); i++)
            if (json_object_get(entry, hub_keys[i]))
                return ft_error("%s: dataset '%s' comes from a hub (\"%s\"): fetch it with a download stage and "
                                "name the local file in \"file_name\"",
                                info_path, name, hub_keys[i]);
        return ft_error("%s: dataset '%s' has no \"file_name\"", info_path, name);
    }
    if (json_is_true(json_object_get(entry, "ranking")))
        return ft_error("%s: dataset '%s' is ranking (preference) data for DPO or reward modelling; it is not "
                        "usable for supervised fine-tuning (ftpipe has no preference stage)",
                        info_path, name);
    if (json_object_get(entry, "num_samples"))
        return ft_error("%s: dataset '%s': \"num_samples\" is not supported; cut the file to the samples wanted",
                        info_path, name);
    const json_t *split = json_object_get(entry, "split");
    if (split && !(json_is_string(split) && strcmp(json_string_value(split), "train") == 0))
        return ft_error("%s: dataset '%s': only the \"train\" split of a local file exists", info_path, name);

    ft_dataset_format format = FT_DATASET_FORMAT_ALPACA;
    const json_t *formatting = json_object_get(entry, "formatting");
    if (formatting) {
        const char *text = json_is_string(formatting) ? json_string_value(formatting) : "";
        if (strcmp(text, "sharegpt") == 0)
            format = FT_DATASET_FORMAT_SHAREGPT;
        else if (strcmp(text, "alpaca") != 0)
            return ft_error("%s: dataset '%s': \"formatting\" must be \"alpaca\" or \"sharegpt\"", info_path, name);
    }

    memset(out, 0, sizeof *out);
    out->name = ft_xstrdup(name);
    out->path = ft_path_join(folder, json_string_value(file_name));
    out->media_dir = ft_xstrdup(folder);
    out->columns.format = format;
    set_defaults(&out->columns);
    if (read_mapping(json_object_get(entry, "columns"), "columns", name, column_fields, N_OF(column_fields),
                     &out->columns) != 0 ||
        read_mapping(json_object_get(entry, "tags"), "tags", name, tag_fields, N_OF(tag_fields), &out->columns) !=
            0) {
        ft_error_context("%s", info_path);
        ft_dataset_source_free(out);
        return -1;
    }
    return 0;
}

static int load_info(const char *folder, char **info_path, json_t **root)
{
    *info_path = ft_path_join(folder, "dataset_info.json");
    if (!ft_path_exists(*info_path))
        return ft_error("%s has no dataset_info.json: name dataset files directly, or add one as LLaMA-Factory's "
                        "data folder has",
                        folder);
    json_error_t error;
    *root = json_load_file(*info_path, 0, &error);
    if (!*root)
        return ft_error("%s: not valid JSON: %s (line %d, column %d)", *info_path, error.text, error.line,
                        error.column);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return ft_error("%s: expected an object of datasets by name", *info_path);
    }
    return 0;
}

static char *names_of(const json_t *root)
{
    ft_strbuf list;
    ft_strbuf_init(&list);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)root, key, value) ft_strbuf_printf(&list, "%s%s", list.length ? ", " : "", key);
    return ft_strbuf_take(&list);
}

int ft_dataset_info_names(const char *folder, char **names)
{
    char *info_path;
    json_t *root;
    int status = load_info(folder, &info_path, &root);
    if (status == 0) {
        *names = names_of(root);
        json_decref(root);
    }
    free(info_path);
    return status;
}

int ft_dataset_info_load(const char *folder, const char *const *names, size_t n_names, ft_dataset_source **out,
                         size_t *count)
{
    char *info_path;
    json_t *root;
    if (load_info(folder, &info_path, &root) != 0) {
        free(info_path);
        return -1;
    }
    ft_dataset_source *sources = ft_xcalloc(n_names, sizeof *sources);
    size_t n_read = 0;
    int status = 0;
    for (; n_read < n_names && status == 0; n_read++) {
        const json_t *entry = json_object_get(root, names[n_read]);
        if (!entry) {
            char *known = names_of(root);
            status = ft_error("dataset '%s' is not in %s (it names: %s)", names[n_read], info_path, known);
            free(known);
            break;
        }
        status = read_entry(folder, info_path, names[n_read], entry, &sources[n_read]);
        if (status != 0)
            break;
    }
    json_decref(root);
    free(info_path);
    if (status != 0) {
        ft_dataset_sources_free(sources, n_read);
        return -1;
    }
    *out = sources;
    *count = n_names;
    return 0;
}
