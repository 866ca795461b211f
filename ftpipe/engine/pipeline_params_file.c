/* pipeline_params_file: `include params.yaml` (or .yml, .json) reads a DVC-style
 * parameters file as variables. A nested key is named by its dotted path
 * (`train.lr`, used as $(train.lr) or ${train.lr}); a list of scalars becomes
 * its items separated by blanks (so `matrix lr = $(sweep.lr)` works); a list of
 * mappings names its items by index (`runs.0.lr`). Values are taken literally. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "pipeline_internal.h"
#include "pipeline_parser.h"

bool ft_parser_is_params_file(const char *name)
{
    size_t n = strlen(name);
    return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) || (n > 4 && strcmp(name + n - 4, ".yml") == 0) ||
           (n > 5 && strcmp(name + n - 5, ".json") == 0);
}

/* Assigns one variable, unless the command line gives it. */
static int assign(parser *p, const char *name, const char *value, const ft_location *where)
{
    if (ft_matrix_find(&p->matrix, name))
        return ft_error_at(where, "'%s' is a matrix variable: the parameters file cannot set it", name);
    if (!ft_variables_is_overridden(p->variables, name))
        ft_variables_bind(p->variables, name, value, *where);
    return 0;
}

static char *child_name(const char *prefix, const char *key)
{
    return prefix[0] ? ft_xasprintf("%s.%s", prefix, key) : ft_xstrdup(key);
}

/* --- JSON --- */

static char *json_scalar_text(json_t *value)
{
    if (json_is_string(value))
        return ft_xstrdup(json_string_value(value));
    if (json_is_null(value))
        return ft_xstrdup("");
    char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17));
    return text ? text : ft_xstrdup("");
}

static bool json_is_scalar(json_t *value) { return !json_is_object(value) && !json_is_array(value); }

static int assign_json(parser *p, const char *name, json_t *value, const ft_location *where)
{
    int result = 0;
    if (json_is_object(value)) {
        const char *key;
        json_t *child;
        json_object_foreach(value, key, child) {
            char *full = child_name(name, key);
            result = assign_json(p, full, child, where);
            free(full);
            if (result != 0)
                break;
        }
        return result;
    }
    if (json_is_array(value)) {
        bool scalars = true;
        for (size_t i = 0; i < json_array_size(value); i++)
            scalars = scalars && json_is_scalar(json_array_get(value, i));
        if (scalars) {
            ft_strbuf words;
            ft_strbuf_init(&words);
            for (size_t i = 0; i < json_array_size(value); i++) {
                char *text = json_scalar_text(json_array_get(value, i));
                ft_strbuf_printf(&words, "%s%s", i ? " " : "", text);
                free(text);
            }
            result = name[0] ? assign(p, name, words.data ? words.data : "", where) : 0;
            ft_strbuf_free(&words);
            return result;
        }
        for (size_t i = 0; i < json_array_size(value) && result == 0; i++) {
            char index[32];
            snprintf(index, sizeof index, "%zu", i);
            char *full = child_name(name, index);
            result = assign_json(p, full, json_array_get(value, i), where);
            free(full);
        }
        return result;
    }
    if (!name[0])
        return ft_error_at(where, "the parameters file holds one value: it must hold a mapping of names to values");
    char *text = json_scalar_text(value);
    result = assign(p, name, text, where);
    free(text);
    return result;
}

static int read_json(parser *p, const char *shown, const char *text, const ft_location *where)
{
    json_error_t error;
    json_t *root = json_loads(text, 0, &error);
    if (!root) {
        ft_location at = {shown, error.line, error.column};
        return ft_error_at(&at, "%s (included at %s:%d)", error.text, where->file, where->line);
    }
    int result = json_is_object(root) ? assign_json(p, "", root, where)
                                      : ft_error_at(where, "%s must hold a mapping of names to values", shown);
    json_decref(root);
    return result;
}

/* --- YAML --- */

static bool yaml_is_scalar(yaml_document_t *document, int index)
{
    yaml_node_t *node = yaml_document_get_node(document, index);
    return node && node->type == YAML_SCALAR_NODE;
}

static const char *yaml_text(yaml_node_t *node) { return (const char *)node->data.scalar.value; }

static int assign_yaml(parser *p, yaml_document_t *document, const char *name, int index, const ft_location *where)
{
    yaml_node_t *node = yaml_document_get_node(document, index);
    int result = 0;
    if (!node)
        return 0;
    if (node->type == YAML_MAPPING_NODE) {
        for (yaml_node_pair_t *pair = node->data.mapping.pairs.start;
             pair < node->data.mapping.pairs.top && result == 0; pair++) {
            if (!yaml_is_scalar(document, pair->key))
                return ft_error_at(where, "a key of the parameters file is not a plain name");
            char *full = child_name(name, yaml_text(yaml_document_get_node(document, pair->key)));
            result = assign_yaml(p, document, full, pair->value, where);
            free(full);
        }
        return result;
    }
    if (node->type == YAML_SEQUENCE_NODE) {
        bool scalars = true;
        for (yaml_node_item_t *item = node->data.sequence.items.start; item < node->data.sequence.items.top; item++)
            scalars = scalars && yaml_is_scalar(document, *item);
        if (scalars) {
            ft_strbuf words;
            ft_strbuf_init(&words);
            for (yaml_node_item_t *item = node->data.sequence.items.start; item < node->data.sequence.items.top;
                 item++)
                ft_strbuf_printf(&words, "%s%s", item == node->data.sequence.items.start ? "" : " ",
                                 yaml_text(yaml_document_get_node(document, *item)));
            result = name[0] ? assign(p, name, words.data ? words.data : "", where) : 0;
            ft_strbuf_free(&words);
            return result;
        }
        size_t i = 0;
        for (yaml_node_item_t *item = node->data.sequence.items.start;
             item < node->data.sequence.items.top && result == 0; item++, i++) {
            char index_text[32];
            snprintf(index_text, sizeof index_text, "%zu", i);
            char *full = child_name(name, index_text);
            result = assign_yaml(p, document, full, *item, where);
            free(full);
        }
        return result;
    }
    if (!name[0])
        return ft_error_at(where, "the parameters file holds one value: it must hold a mapping of names to values");
    return assign(p, name, yaml_text(node), where);
}

static int read_yaml(parser *p, const char *shown, const char *text, const ft_location *where)
{
    yaml_parser_t yaml;
    yaml_document_t document;
    if (!yaml_parser_initialize(&yaml))
        return ft_error("out of memory reading %s", shown);
    yaml_parser_set_input_string(&yaml, (const unsigned char *)text, strlen(text));
    int result = 0;
    if (!yaml_parser_load(&yaml, &document)) {
        ft_location at = {shown, (int)yaml.problem_mark.line + 1, (int)yaml.problem_mark.column + 1};
        result = ft_error_at(&at, "%s (included at %s:%d)", yaml.problem ? yaml.problem : "not YAML", where->file,
                             where->line);
        yaml_parser_delete(&yaml);
        return result;
    }
    yaml_node_t *root = yaml_document_get_root_node(&document);
    if (root && root->type != YAML_MAPPING_NODE)
        result = ft_error_at(where, "%s must hold a mapping of names to values", shown);
    else if (root)
        result = assign_yaml(p, &document, "", 1, where);
    yaml_document_delete(&document);
    yaml_parser_delete(&yaml);
    return result;
}

int ft_parser_include_params_file(parser *p, const ft_location *where, const char *shown, const char *text)
{
    size_t n = strlen(shown);
    bool json = n > 5 && strcmp(shown + n - 5, ".json") == 0;
    return json ? read_json(p, shown, text, where) : read_yaml(p, shown, text, where);
}
