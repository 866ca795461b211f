/* stage_key: keys of stages and the reasons they changed. */
#include "ftpipe/engine/stage_key.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"

static int compare_values_by_name(const void *a, const void *b)
{
    const ft_param_value *const *x = a, *const *y = b;
    return strcmp((*x)->rule->name, (*y)->rule->name);
}

/* The key text is built with plain appends: a no-op run over 10,000 stages
 * computes 10,000 keys, and printf would dominate it. */
static void put_decimal(ft_strbuf *text, size_t value)
{
    char digits[24];
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    ft_strbuf_add(text, digits + sizeof digits - n, n);
}

static void put_length_prefixed(ft_strbuf *text, const char *value)
{
    put_decimal(text, strlen(value));
    ft_strbuf_putc(text, ':');
    ft_strbuf_puts(text, value);
}

static size_t sorted_key_params(const ft_node *node, const ft_param_value **sorted)
{
    const ft_param_set *params = &node->params;
    size_t n_key = 0;
    for (size_t i = 0; i < params->n_values; i++)
        if (params->values[i].rule->in_key)
            sorted[n_key++] = &params->values[i];
    qsort(sorted, n_key, sizeof *sorted, compare_values_by_name);
    return n_key;
}

int ft_stage_key_compute(const ft_node *node, char **input_hashes, ft_stage *context, ft_computed_key *out)
{
    memset(out, 0, sizeof *out);
    out->input_hashes = input_hashes;
    out->n_inputs = node->n_inputs;
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_puts(&text, "ftpipe key 1\nkind ");
    ft_strbuf_puts(&text, node->kind->name);
    ft_strbuf_putc(&text, ' ');
    put_decimal(&text, (size_t)node->kind->version);
    ft_strbuf_putc(&text, '\n');

    const ft_param_value **sorted = ft_xcalloc(node->params.n_values + 1, sizeof *sorted);
    size_t n_key = sorted_key_params(node, sorted);
    for (size_t i = 0; i < n_key; i++) {
        /* Length-prefixed, so no value can imitate another parameter's line. */
        ft_strbuf_puts(&text, "param ");
        ft_strbuf_puts(&text, sorted[i]->rule->name);
        ft_strbuf_putc(&text, ' ');
        put_length_prefixed(&text, sorted[i]->canonical);
        ft_strbuf_putc(&text, '\n');
    }
    free(sorted);
    for (size_t k = 0; k < node->n_inputs; k++) {
        ft_strbuf_puts(&text, "input ");
        put_length_prefixed(&text, node->input_names[k]);
        ft_strbuf_putc(&text, ' ');
        ft_strbuf_puts(&text, input_hashes[k]);
        ft_strbuf_putc(&text, '\n');
    }
    int result = 0;
    if (node->kind->extra_key && context)
        result = node->kind->extra_key(context, &text);
    if (result == 0)
        ft_hash_to_hex(ft_hash_bytes(text.data, text.length), out->key);
    ft_strbuf_free(&text);
    return result;
}

void ft_stage_key_describe(const ft_node *node, ft_computed_key *key)
{
    if (key->params_json)
        return;
    const ft_param_value **sorted = ft_xcalloc(node->params.n_values + 1, sizeof *sorted);
    size_t n_key = sorted_key_params(node, sorted);
    json_t *params_json = json_object();
    for (size_t i = 0; i < n_key; i++)
        json_object_set_new(params_json, sorted[i]->rule->name, json_string(sorted[i]->canonical));
    free(sorted);
    json_t *inputs_json = json_array();
    for (size_t k = 0; k < node->n_inputs; k++) {
        json_t *entry = json_object();
        json_object_set_new(entry, "path", json_string(node->input_names[k]));
        json_object_set_new(entry, "hash", json_string(key->input_hashes[k]));
        json_array_append_new(inputs_json, entry);
    }
    key->params_json = json_dumps(params_json, JSON_COMPACT | JSON_SORT_KEYS);
    key->inputs_json = json_dumps(inputs_json, JSON_COMPACT);
    json_decref(params_json);
    json_decref(inputs_json);
}

void ft_stage_key_free(ft_computed_key *key)
{
    for (size_t k = 0; k < key->n_inputs; k++)
        free(key->input_hashes[k]);
    free(key->input_hashes);
    free(key->params_json);
    free(key->inputs_json);
    memset(key, 0, sizeof *key);
}

static void explain_params(json_t *before, json_t *now, ft_strbuf *out)
{
    const char *name;
    json_t *value;
    json_object_foreach(now, name, value)
    {
        json_t *old = json_object_get(before, name);
        if (!old)
            ft_strbuf_printf(out, "parameter %s is new: %s\n", name, json_string_value(value));
        else if (!json_equal(old, value))
            ft_strbuf_printf(out, "parameter %s changed: %s -> %s\n", name, json_string_value(old),
                             json_string_value(value));
    }
    json_object_foreach(before, name, value)
    {
        if (!json_object_get(now, name))
            ft_strbuf_printf(out, "parameter %s was removed (was %s)\n", name, json_string_value(value));
    }
}

static void explain_inputs(json_t *before, json_t *now, ft_strbuf *out)
{
    size_t index;
    json_t *entry;
    json_array_foreach(now, index, entry)
    {
        const char *path = json_string_value(json_object_get(entry, "path"));
        const char *hash = json_string_value(json_object_get(entry, "hash"));
        const char *old_hash = NULL;
        size_t k;
        json_t *old;
        json_array_foreach(before, k, old)
        {
            if (strcmp(json_string_value(json_object_get(old, "path")), path) == 0)
                old_hash = json_string_value(json_object_get(old, "hash"));
        }
        if (!old_hash)
            ft_strbuf_printf(out, "input %s is new\n", path);
        else if (strcmp(old_hash, hash) != 0)
            ft_strbuf_printf(out, "input %s changed\n", path);
    }
    json_array_foreach(before, index, entry)
    {
        const char *path = json_string_value(json_object_get(entry, "path"));
        bool kept = false;
        size_t k;
        json_t *current;
        json_array_foreach(now, k, current)
        {
            if (strcmp(json_string_value(json_object_get(current, "path")), path) == 0)
                kept = true;
        }
        if (!kept)
            ft_strbuf_printf(out, "input %s was removed\n", path);
    }
}

void ft_stage_key_explain(const ft_run_record *previous, const ft_node *node, ft_computed_key *current,
                          ft_strbuf *out)
{
    ft_stage_key_describe(node, current);
    size_t start = out->length;
    if (!previous) {
        ft_strbuf_puts(out, "new: never built\n");
        return;
    }
    if (strcmp(previous->kind, node->kind->name) != 0)
        ft_strbuf_printf(out, "kind changed: %s -> %s\n", previous->kind, node->kind->name);
    else if (previous->kind_version != node->kind->version)
        ft_strbuf_printf(out, "kind %s version changed: %d -> %d\n", node->kind->name, previous->kind_version,
                         node->kind->version);
    json_t *params_before = json_loads(previous->params_json ? previous->params_json : "{}", 0, NULL);
    json_t *params_now = json_loads(current->params_json, 0, NULL);
    json_t *inputs_before = json_loads(previous->inputs_json ? previous->inputs_json : "[]", 0, NULL);
    json_t *inputs_now = json_loads(current->inputs_json, 0, NULL);
    if (params_before && params_now)
        explain_params(params_before, params_now, out);
    if (inputs_before && inputs_now)
        explain_inputs(inputs_before, inputs_now, out);
    json_decref(params_before);
    json_decref(params_now);
    json_decref(inputs_before);
    json_decref(inputs_now);
    if (out->length == start) {
        if (strcmp(previous->key, current->key) != 0)
            ft_strbuf_puts(out, "declared environment or command changed\n");
        else if (previous->status == FT_RUN_FAILED)
            ft_strbuf_puts(out, "the last run failed\n");
        else if (previous->status == FT_RUN_CANCELLED || previous->status == FT_RUN_RUNNING)
            ft_strbuf_puts(out, "the last run was interrupted: resuming\n");
        else
            ft_strbuf_puts(out, "output missing from the cache\n");
    }
}
