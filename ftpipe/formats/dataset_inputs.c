/* dataset_inputs: stage inputs and the format/dataset parameters -> one dataset. */
#include "ftpipe/formats/dataset_inputs.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

static bool has_dataset_info(const char *path)
{
    if (!ft_path_is_dir(path))
        return false;
    char *info = ft_path_join(path, "dataset_info.json");
    bool found = ft_path_exists(info);
    free(info);
    return found;
}

/* `dataset = a,b c`: LLaMA-Factory separates names by commas; blanks work too. */
static char **dataset_names(const ft_dataset_input_options *options, size_t *count)
{
    char **names = NULL;
    *count = 0;
    for (size_t i = 0; i < options->n_dataset_words; i++) {
        for (const char *p = options->dataset_words[i]; *p;) {
            size_t length = strcspn(p, ",");
            if (length > 0) {
                names = ft_xrealloc(names, (*count + 1) * sizeof(char *));
                names[(*count)++] = ft_xstrndup(p, length);
            }
            p += length + (p[length] == ',');
        }
    }
    return names;
}

static ft_dataset_format parse_format(const char *name)
{
    if (strcmp(name, "alpaca") == 0)
        return FT_DATASET_FORMAT_ALPACA;
    if (strcmp(name, "sharegpt") == 0)
        return FT_DATASET_FORMAT_SHAREGPT;
    if (strcmp(name, "text") == 0)
        return FT_DATASET_FORMAT_TEXT;
    return FT_DATASET_FORMAT_AUTO;
}

/* Pretraining reads every dataset_info.json entry as text; conversations it cannot. */
static int read_as_text(const char *folder, ft_dataset_source *sources, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (sources[i].columns.format == FT_DATASET_FORMAT_SHAREGPT)
            return ft_error("%s: dataset '%s' holds sharegpt conversations, but pretraining (stage = pt) reads texts: "
                            "alpaca-style records whose \"prompt\" column is the text",
                            folder, sources[i].name);
        sources[i].columns.format = FT_DATASET_FORMAT_TEXT;
    }
    return 0;
}

/* The dataset sources the paths name, in order. */
static int gather_sources(const char *const *paths, size_t count, const ft_dataset_input_options *options,
                          ft_dataset_source **out, size_t *n_out)
{
    size_t n_names;
    char **names = dataset_names(options, &n_names);
    ft_dataset_format format = parse_format(options->format);
    ft_dataset_source *sources = NULL;
    size_t n_sources = 0;
    const char *info_folder = NULL;
    int status = 0;
    for (size_t i = 0; i < count && status == 0; i++) {
        const char *path = paths[i];
        if (!has_dataset_info(path)) {
            sources = ft_xrealloc(sources, (n_sources + 1) * sizeof *sources);
            ft_dataset_source_for_file(path, format, &sources[n_sources++]);
            continue;
        }
        if (info_folder) {
            status = ft_error("inputs %s and %s both hold a dataset_info.json: give one such folder", info_folder,
                              path);
            break;
        }
        info_folder = path;
        if (n_names == 0) {
            char *known = NULL;
            if (ft_dataset_info_names(path, &known) == 0)
                ft_error("%s holds a dataset_info.json: set dataset = NAME[,NAME...] to choose from: %s", path,
                         known);
            free(known);
            status = -1;
            break;
        }
        ft_dataset_source *named;
        size_t n_named;
        status = ft_dataset_info_load(path, (const char *const *)names, n_names, &named, &n_named);
        if (status == 0 && format == FT_DATASET_FORMAT_TEXT && read_as_text(path, named, n_named) != 0) {
            ft_dataset_sources_free(named, n_named);
            status = -1;
        }
        if (status == 0) {
            sources = ft_xrealloc(sources, (n_sources + n_named) * sizeof *sources);
            memcpy(sources + n_sources, named, n_named * sizeof *named);
            n_sources += n_named;
            free(named);
        }
    }
    if (status == 0 && n_names > 0 && !info_folder)
        status = ft_error("dataset = %s names datasets of a dataset_info.json, but no input folder holds one",
                          names[0]);
    for (size_t i = 0; i < n_names; i++)
        free(names[i]);
    free(names);
    if (status != 0) {
        ft_dataset_sources_free(sources, n_sources);
        return -1;
    }
    *out = sources;
    *n_out = n_sources;
    return 0;
}

int ft_dataset_read_inputs(const char *const *paths, size_t count, const ft_dataset_input_options *options,
                           ft_dataset *dataset)
{
    ft_dataset_source *sources;
    size_t n_sources;
    if (gather_sources(paths, count, options, &sources, &n_sources) != 0)
        return -1;
    int status = 0;
    dataset->records_per_source = options->max_samples;
    dataset->read_images = options->read_images;
    for (size_t i = 0; i < n_sources && status == 0; i++)
        status = ft_dataset_read(dataset, &sources[i], options->on_error);
    ft_dataset_sources_free(sources, n_sources);
    return status;
}
