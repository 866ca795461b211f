/* metrics_table: the metrics and parameters of a workspace's results, as a
 * table, JSON, CSV or the difference of two. */
#include "ftpipe/engine/metrics_table.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

/* The metrics a table shows unless --all: the train run's last logged and mean
 * loss, and the evaluation's loss and accuracy. */
static const char *const usual_metrics[] = {"loss", "train_loss", "eval_loss", "accuracy", NULL};

typedef struct {
    char *name;
    char *text;   /* parameters */
    double value; /* metrics */
} entry;

typedef struct {
    entry *items;
    size_t count;
} entry_list;

/* What the run behind one node's current result recorded. */
typedef struct {
    bool loaded;
    bool found;
    entry_list params;
    entry_list metrics;
} node_record;

typedef struct {
    size_t node;
    entry_list params;  /* borrowed from node records, nearest first */
    entry_list metrics;
} table_row;

typedef struct {
    ft_session *session;
    node_record *records;
} metrics_reader;

static entry *find_entry(const entry_list *list, const char *name)
{
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->items[i].name, name) == 0)
            return &list->items[i];
    return NULL;
}

static void add_entry(entry_list *list, const char *name, const char *text, double value)
{
    list->items = ft_xrealloc(list->items, (list->count + 1) * sizeof *list->items);
    list->items[list->count++] = (entry){.name = (char *)name, .text = (char *)text, .value = value};
}

static void free_owned(entry_list *list)
{
    for (size_t i = 0; i < list->count; i++) {
        free(list->items[i].name);
        free(list->items[i].text);
    }
    free(list->items);
}

static int keep_metric(int64_t step, const char *name, double value, void *context)
{
    entry_list *metrics = context;
    entry *known = find_entry(metrics, name);
    if (known)
        known->value = value; /* steps come in order: the last one stays */
    else
        add_entry(metrics, ft_xstrdup(name), NULL, value);
    return 0;
}

static void read_params(const char *params_json, entry_list *params)
{
    json_t *root = params_json ? json_loads(params_json, 0, NULL) : NULL;
    const char *name;
    json_t *value;
    json_object_foreach(root, name, value) {
        char *text = json_is_string(value) ? ft_xstrdup(json_string_value(value))
                                           : json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        add_entry(params, ft_xstrdup(name), text ? text : ft_xstrdup("?"), 0.0);
    }
    json_decref(root);
}

static int load_record(metrics_reader *reader, size_t node)
{
    node_record *record = &reader->records[node];
    if (record->loaded)
        return 0;
    record->loaded = true;
    ft_state *state = reader->session->workspace->state;
    ft_target_record target;
    int known = ft_state_target_get(state, reader->session->graph->nodes[node].target, &target);
    if (known <= 0)
        return known;
    ft_run_record run;
    int found = ft_state_run_of_key(state, target.key, FT_RUN_DONE, &run);
    if (found <= 0)
        return found;
    record->found = true;
    read_params(run.params_json, &record->params);
    int result = ft_state_each_metric(state, run.id, keep_metric, &record->metrics);
    ft_run_record_free(&run);
    return result;
}

/* The row of node: its record, then its inputs' and theirs, nearest first. */
static int make_row(metrics_reader *reader, size_t node, table_row *row)
{
    const ft_graph *graph = reader->session->graph;
    *row = (table_row){.node = node};
    size_t *queue = ft_xcalloc(graph->n_nodes + 1, sizeof *queue);
    bool *seen = ft_xcalloc(graph->n_nodes + 1, sizeof *seen);
    size_t head = 0, tail = 0;
    queue[tail++] = node;
    seen[node] = true;
    int result = 0;
    while (head < tail && result == 0) {
        size_t current = queue[head++];
        result = load_record(reader, current);
        const node_record *record = &reader->records[current];
        for (size_t i = 0; result == 0 && i < record->params.count; i++)
            if (!find_entry(&row->params, record->params.items[i].name))
                add_entry(&row->params, record->params.items[i].name, record->params.items[i].text, 0.0);
        for (size_t i = 0; result == 0 && i < record->metrics.count; i++)
            if (!find_entry(&row->metrics, record->metrics.items[i].name))
                add_entry(&row->metrics, record->metrics.items[i].name, NULL, record->metrics.items[i].value);
        const ft_node *n = &graph->nodes[current];
        for (size_t k = 0; k < n->n_inputs; k++) {
            size_t input = n->input_nodes[k];
            if (input != FT_NO_NODE && !seen[input]) {
                seen[input] = true;
                queue[tail++] = input;
            }
        }
    }
    free(queue);
    free(seen);
    return result;
}

/* Stages with metrics that no other stage with metrics uses, in pipeline order. */
static int default_rows(metrics_reader *reader, size_t **rows, size_t *n_rows)
{
    const ft_graph *graph = reader->session->graph;
    bool *upstream = ft_xcalloc(graph->n_nodes + 1, sizeof *upstream);
    size_t *stack = ft_xcalloc(graph->n_nodes + 1, sizeof *stack);
    int result = 0;
    for (size_t i = 0; i < graph->n_nodes && result == 0; i++) {
        result = load_record(reader, i);
        if (result != 0 || reader->records[i].metrics.count == 0)
            continue;
        /* Everything above a stage with metrics is covered by its row. */
        size_t depth = 0;
        for (size_t k = 0; k < graph->nodes[i].n_inputs; k++)
            if (graph->nodes[i].input_nodes[k] != FT_NO_NODE)
                stack[depth++] = graph->nodes[i].input_nodes[k];
        while (depth > 0) {
            size_t current = stack[--depth];
            if (upstream[current])
                continue;
            upstream[current] = true;
            for (size_t k = 0; k < graph->nodes[current].n_inputs; k++)
                if (graph->nodes[current].input_nodes[k] != FT_NO_NODE)
                    stack[depth++] = graph->nodes[current].input_nodes[k];
        }
    }
    *rows = ft_xcalloc(graph->n_nodes + 1, sizeof **rows);
    *n_rows = 0;
    for (size_t i = 0; i < graph->n_nodes && result == 0; i++)
        if (reader->records[i].metrics.count > 0 && !upstream[i])
            (*rows)[(*n_rows)++] = i;
    free(upstream);
    free(stack);
    return result;
}

/* Column names: the parameters whose values differ between rows (all of them
 * for one row), then the metrics shown. */
static void choose_columns(const table_row *rows, size_t n_rows, bool all_metrics, entry_list *params,
                           entry_list *metrics)
{
    for (size_t r = 0; r < n_rows; r++) {
        for (size_t i = 0; i < rows[r].params.count; i++) {
            const char *name = rows[r].params.items[i].name;
            if (find_entry(params, name))
                continue;
            bool differs = n_rows == 1;
            for (size_t other = 0; other < n_rows && !differs; other++) {
                const entry *there = find_entry(&rows[other].params, name);
                differs = !there || strcmp(there->text, rows[r].params.items[i].text) != 0;
            }
            if (differs)
                add_entry(params, name, NULL, 0.0);
        }
        for (size_t i = 0; i < rows[r].metrics.count; i++) {
            const char *name = rows[r].metrics.items[i].name;
            if (all_metrics && !find_entry(metrics, name))
                add_entry(metrics, name, NULL, 0.0);
        }
    }
    for (size_t m = 0; !all_metrics && usual_metrics[m]; m++)
        for (size_t r = 0; r < n_rows; r++)
            if (find_entry(&rows[r].metrics, usual_metrics[m])) {
                add_entry(metrics, usual_metrics[m], NULL, 0.0);
                break;
            }
}

static char *cell(const table_row *row, const entry *column, bool is_metric)
{
    const entry *found = find_entry(is_metric ? &row->metrics : &row->params, column->name);
    if (!found)
        return ft_xstrdup("-");
    return is_metric ? ft_xasprintf("%.6g", found->value) : ft_xstrdup(found->text);
}

static void print_csv_field(const char *text)
{
    if (!strpbrk(text, ",\"\n")) {
        fputs(text, stdout);
        return;
    }
    putchar('"');
    for (const char *c = text; *c; c++) {
        if (*c == '"')
            putchar('"');
        putchar(*c);
    }
    putchar('"');
}

typedef enum { AS_TABLE, AS_CSV, AS_JSON } output_format;

static void print_rows(const ft_graph *graph, const table_row *rows, size_t n_rows, const entry_list *params,
                       const entry_list *metrics, output_format format)
{
    size_t n_columns = 1 + params->count + metrics->count;
    char **cells = ft_xcalloc((n_rows + 1) * n_columns, sizeof *cells);
    cells[0] = ft_xstrdup("target");
    for (size_t c = 0; c < params->count; c++)
        cells[1 + c] = ft_xstrdup(params->items[c].name);
    for (size_t c = 0; c < metrics->count; c++)
        cells[1 + params->count + c] = ft_xstrdup(metrics->items[c].name);
    for (size_t r = 0; r < n_rows; r++) {
        char **line = cells + (r + 1) * n_columns;
        line[0] = ft_xstrdup(graph->nodes[rows[r].node].target);
        for (size_t c = 0; c < params->count; c++)
            line[1 + c] = cell(&rows[r], &params->items[c], false);
        for (size_t c = 0; c < metrics->count; c++)
            line[1 + params->count + c] = cell(&rows[r], &metrics->items[c], true);
    }
    size_t *width = ft_xcalloc(n_columns, sizeof *width);
    for (size_t i = 0; i < (n_rows + 1) * n_columns; i++)
        if (strlen(cells[i]) > width[i % n_columns])
            width[i % n_columns] = strlen(cells[i]);
    for (size_t r = 0; r <= n_rows; r++) {
        for (size_t c = 0; c < n_columns; c++) {
            const char *text = cells[r * n_columns + c];
            if (format == AS_CSV) {
                if (c > 0)
                    putchar(',');
                print_csv_field(text);
            } else {
                /* The target left-aligned, numbers right-aligned, no blanks at the line's end. */
                int shown = c == 0 && c + 1 == n_columns ? 0 : (int)width[c];
                printf(c == 0 ? "%-*s" : "%*s", shown, text);
                if (c + 1 < n_columns)
                    fputs("  ", stdout);
            }
        }
        putchar('\n');
    }
    for (size_t i = 0; i < (n_rows + 1) * n_columns; i++)
        free(cells[i]);
    free(cells);
    free(width);
}

static void print_json(const ft_graph *graph, const table_row *rows, size_t n_rows, const entry_list *metrics,
                       bool all_metrics)
{
    json_t *list = json_array();
    for (size_t r = 0; r < n_rows; r++) {
        json_t *params = json_object(), *values = json_object();
        for (size_t i = 0; i < rows[r].params.count; i++)
            json_object_set_new(params, rows[r].params.items[i].name, json_string(rows[r].params.items[i].text));
        for (size_t i = 0; i < rows[r].metrics.count; i++)
            if (all_metrics || find_entry(metrics, rows[r].metrics.items[i].name))
                json_object_set_new(values, rows[r].metrics.items[i].name, json_real(rows[r].metrics.items[i].value));
        json_array_append_new(list, json_pack("{s:s, s:o, s:o}", "target", graph->nodes[rows[r].node].target,
                                              "params", params, "metrics", values));
    }
    char *text = json_dumps(list, JSON_INDENT(2));
    puts(text ? text : "[]");
    free(text);
    json_decref(list);
}

/* `--diff A B`: what differs between two rows, with B - A for metrics. */
static void print_diff(const ft_graph *graph, const table_row *a, const table_row *b)
{
    const char *name_a = graph->nodes[a->node].target, *name_b = graph->nodes[b->node].target;
    printf("%-24s %16s %16s %12s\n", "", name_a, name_b, "change");
    size_t shown = 0;
    for (int side = 0; side < 2; side++) {
        const table_row *from = side == 0 ? a : b, *other = side == 0 ? b : a;
        for (size_t i = 0; i < from->params.count; i++) {
            const entry *mine = &from->params.items[i];
            const entry *theirs = find_entry(&other->params, mine->name);
            if ((side == 1 && theirs) || (theirs && strcmp(theirs->text, mine->text) == 0))
                continue;
            const entry *in_a = side == 0 ? mine : theirs, *in_b = side == 0 ? theirs : mine;
            printf("%-24s %16s %16s %12s\n", mine->name, in_a ? in_a->text : "-", in_b ? in_b->text : "-", "");
            shown++;
        }
    }
    for (int side = 0; side < 2; side++) {
        const table_row *from = side == 0 ? a : b, *other = side == 0 ? b : a;
        for (size_t i = 0; i < from->metrics.count; i++) {
            const entry *mine = &from->metrics.items[i];
            const entry *theirs = find_entry(&other->metrics, mine->name);
            if ((side == 1 && theirs) || (theirs && theirs->value == mine->value))
                continue;
            const entry *in_a = side == 0 ? mine : theirs, *in_b = side == 0 ? theirs : mine;
            char text_a[32] = "-", text_b[32] = "-", change[32] = "";
            if (in_a)
                snprintf(text_a, sizeof text_a, "%.6g", in_a->value);
            if (in_b)
                snprintf(text_b, sizeof text_b, "%.6g", in_b->value);
            if (in_a && in_b)
                snprintf(change, sizeof change, "%+.4g", in_b->value - in_a->value);
            printf("%-24s %16s %16s %12s\n", mine->name, text_a, text_b, change);
            shown++;
        }
    }
    if (shown == 0)
        printf("(no parameter or metric differs)\n");
}

static int usage(const char *message)
{
    fprintf(stderr, "ftpipe metrics: %s\nusage: ftpipe metrics [--all] [--json | --csv] [TARGET...]\n"
                    "       ftpipe metrics --diff A B\n",
            message);
    return 2;
}

int ft_metrics_command(ft_session *session, const char *const *arguments, size_t n_arguments)
{
    bool all_metrics = false, diff = false;
    output_format format = AS_TABLE;
    const ft_graph *graph = session->graph;
    size_t *targets = ft_xcalloc(n_arguments + 1, sizeof *targets);
    size_t n_targets = 0;
    for (size_t i = 0; i < n_arguments; i++) {
        const char *arg = arguments[i];
        if (strcmp(arg, "--all") == 0)
            all_metrics = true;
        else if (strcmp(arg, "--diff") == 0)
            diff = true;
        else if (strcmp(arg, "--json") == 0)
            format = AS_JSON;
        else if (strcmp(arg, "--csv") == 0)
            format = AS_CSV;
        else if (arg[0] == '-') {
            free(targets);
            char *message = ft_xasprintf("unknown option %s", arg);
            int status = usage(message);
            free(message);
            return status;
        } else if ((targets[n_targets++] = ft_graph_find(graph, arg)) == FT_NO_NODE) {
            free(targets);
            ft_error("no stage makes '%s' in %s: `ftpipe status` lists the targets", arg, graph->pipeline->path);
            return 1;
        }
    }
    if (diff && n_targets != 2) {
        free(targets);
        return usage("--diff compares two targets: ftpipe metrics --diff A B");
    }
    metrics_reader reader = {.session = session};
    reader.records = ft_xcalloc(graph->n_nodes + 1, sizeof *reader.records);
    size_t *nodes = targets, n_rows = n_targets;
    int result = 0;
    if (n_targets == 0) {
        free(targets);
        result = default_rows(&reader, &nodes, &n_rows);
    }
    table_row *rows = ft_xcalloc(n_rows + 1, sizeof *rows);
    for (size_t r = 0; r < n_rows && result == 0; r++) {
        result = make_row(&reader, nodes[r], &rows[r]);
        if (result == 0 && !reader.records[nodes[r]].found)
            result = ft_error("%s has no finished run behind it: build it first (`ftpipe %s`)",
                              graph->nodes[nodes[r]].target, graph->nodes[nodes[r]].target);
    }
    if (result == 0 && n_rows == 0) {
        printf("ftpipe metrics: no result with metrics yet (train and evaluate stages record them)\n");
    } else if (result == 0 && diff) {
        print_diff(graph, &rows[0], &rows[1]);
    } else if (result == 0) {
        entry_list params = {0}, metrics = {0};
        choose_columns(rows, n_rows, all_metrics, &params, &metrics);
        if (format == AS_JSON)
            print_json(graph, rows, n_rows, &metrics, all_metrics);
        else
            print_rows(graph, rows, n_rows, &params, &metrics, format);
        free(params.items);
        free(metrics.items);
    }
    for (size_t r = 0; r < n_rows; r++) {
        free(rows[r].params.items);
        free(rows[r].metrics.items);
    }
    free(rows);
    for (size_t i = 0; i < graph->n_nodes; i++) {
        free_owned(&reader.records[i].params);
        free_owned(&reader.records[i].metrics);
    }
    free(reader.records);
    free(nodes);
    return result == 0 ? 0 : 1;
}
