/* graph: stages, their edges, topological order, cycles and selection. */
#include "ftpipe/engine/graph.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/base/strmap.h"

char *ft_target_normalise(const char *name)
{
    ft_strbuf out;
    ft_strbuf_init(&out);
    bool absolute = name[0] == '/';
    if (absolute)
        ft_strbuf_putc(&out, '/');
    size_t root_length = out.length; /* ".." never pops past "/" or a leading ".." run */
    const char *p = name;
    while (*p) {
        while (*p == '/')
            p++;
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 1 && p[0] == '.') {
        } else if (n == 2 && p[0] == '.' && p[1] == '.' && out.length > root_length) {
            /* "a/../b" is "b": resolved here, so that no later check can be walked around. */
            char *slash = memrchr(out.data + root_length, '/', out.length - root_length);
            out.length = slash ? (size_t)(slash - out.data) : root_length;
            out.data[out.length] = '\0';
        } else if (n == 2 && p[0] == '.' && p[1] == '.' && absolute) {
        } else if (n > 0) {
            if (out.length > 0 && out.data[out.length - 1] != '/')
                ft_strbuf_putc(&out, '/');
            ft_strbuf_add(&out, p, n);
            if (n == 2 && p[0] == '.' && p[1] == '.')
                root_length = out.length;
        }
        p += n;
    }
    if (out.length == 0)
        ft_strbuf_putc(&out, '.');
    return ft_strbuf_take(&out);
}

struct ft_graph_private {
    ft_graph graph;
    ft_strmap targets; /* target -> node */
};

static int format_location(char *out, size_t size, const ft_location *where)
{
    return snprintf(out, size, "%s:%d:%d", where->file, where->line, where->column);
}

/* Depth-first search for a cycle; prints its path when found. */
static int find_cycle(ft_graph *graph)
{
    size_t n = graph->n_nodes;
    unsigned char *color = ft_xcalloc(n, 1); /* 0 new, 1 on the stack, 2 done */
    size_t *stack = ft_xmalloc(n * sizeof *stack);
    size_t *next_input = ft_xcalloc(n, sizeof *next_input);
    size_t order_length = 0;
    int result = 0;
    for (size_t root = 0; root < n && result == 0; root++) {
        if (color[root])
            continue;
        size_t depth = 0;
        stack[depth++] = root;
        color[root] = 1;
        while (depth > 0 && result == 0) {
            size_t node = stack[depth - 1];
            ft_node *current = &graph->nodes[node];
            if (next_input[node] < current->n_inputs) {
                size_t input = current->input_nodes[next_input[node]++];
                if (input == FT_NO_NODE || color[input] == 2)
                    continue;
                if (color[input] == 1) {
                    ft_strbuf path;
                    ft_strbuf_init(&path);
                    ft_strbuf_puts(&path, "dependency cycle: ");
                    size_t start = 0;
                    while (stack[start] != input)
                        start++;
                    /* Printed in the direction of use: a needs b needs ... needs a. */
                    for (size_t i = depth; i-- > start;) {
                        char where[512];
                        format_location(where, sizeof where, &graph->nodes[stack[i]].decl->where);
                        ft_strbuf_printf(&path, "%s (%s) needs ", graph->nodes[stack[i]].target, where);
                    }
                    ft_strbuf_puts(&path, graph->nodes[stack[depth - 1]].target);
                    ft_strbuf_puts(&path, "; remove one of these inputs");
                    result = ft_error("%s", path.data);
                    ft_strbuf_free(&path);
                    break;
                }
                color[input] = 1;
                stack[depth++] = input;
            } else {
                color[node] = 2;
                graph->order[order_length++] = node;
                depth--;
            }
        }
    }
    free(color);
    free(stack);
    free(next_input);
    return result;
}

/* The pipeline's own files (the pipeline file and what it includes), by identity:
 * a stage must not overwrite its own recipe. Each is looked at once, not once a stage. */
typedef struct {
    dev_t device;
    ino_t inode;
} file_identity;

static file_identity *pipeline_file_identities(const ft_pipeline *pipeline)
{
    file_identity *identities = ft_xcalloc(pipeline->n_files + 1, sizeof *identities);
    for (size_t i = 0; i < pipeline->n_files; i++) {
        struct stat file;
        if (stat(pipeline->files[i], &file) == 0)
            identities[i] = (file_identity){file.st_dev, file.st_ino};
    }
    return identities;
}

/* The pipeline file that `path` is, or NULL. */
static const char *pipeline_file_at(const ft_pipeline *pipeline, const file_identity *identities, const char *path)
{
    struct stat target;
    if (stat(path, &target) != 0)
        return NULL;
    for (size_t i = 0; i < pipeline->n_files; i++)
        if (identities[i].inode && identities[i].device == target.st_dev && identities[i].inode == target.st_ino)
            return pipeline->files[i];
    return NULL;
}

int ft_graph_build(const ft_pipeline *pipeline, const ft_rulebook *book, const ft_stage_kind *const *kinds,
                   ft_graph **out)
{
    struct ft_graph_private *owner = ft_xcalloc(1, sizeof *owner);
    ft_graph *graph = &owner->graph;
    graph->pipeline = pipeline;
    graph->n_nodes = pipeline->n_stages;
    graph->nodes = ft_xcalloc(graph->n_nodes + 1, sizeof *graph->nodes);
    graph->order = ft_xcalloc(graph->n_nodes + 1, sizeof *graph->order);
    ft_strmap_init(&owner->targets);

    int result = 0;
    file_identity *identities = pipeline_file_identities(pipeline);
    for (size_t i = 0; i < graph->n_nodes && result == 0; i++) {
        const ft_stage_decl *decl = &pipeline->stages[i];
        ft_node *node = &graph->nodes[i];
        node->decl = decl;
        node->target = ft_target_normalise(decl->target);
        node->target_path = ft_path_join(pipeline->dir, node->target);
        char where[512]; /* formatted only for a message: a no-op builds 10,000 nodes */
        if (ft_params_check(book, decl, &node->params) != 0) {
            result = -1;
            break;
        }
        node->kind = ft_stage_kind_lookup(kinds, decl->kind);
        if (!node->kind) {
            format_location(where, sizeof where, &decl->where);
            result = ft_error("%s: stage kind '%s' has rules but no implementation in this build", where,
                              decl->kind);
            break;
        }
        if (node->target[0] == '/' || strcmp(node->target, "..") == 0 || strncmp(node->target, "../", 3) == 0 ||
            strcmp(node->target, ".") == 0 || strcmp(node->target, ".ftpipe") == 0 ||
            strncmp(node->target, ".ftpipe/", 8) == 0) {
            format_location(where, sizeof where, &decl->where);
            result = ft_error("%s: target '%s' must be a path inside the pipeline's folder (and not .ftpipe)", where,
                              decl->target);
            break;
        }
        const char *pipeline_file = pipeline_file_at(pipeline, identities, node->target_path);
        if (pipeline_file) {
            format_location(where, sizeof where, &decl->where);
            result = ft_error("%s: target '%s' is the pipeline file %s itself; choose another target path", where,
                              decl->target, pipeline_file);
            break;
        }
        size_t *first_maker = ft_strmap_put(&owner->targets, node->target, i);
        if (*first_maker != i) {
            char first[512];
            format_location(where, sizeof where, &decl->where);
            format_location(first, sizeof first, &graph->nodes[*first_maker].decl->where);
            result = ft_error("%s: target '%s' is already made by the stage at %s", where, node->target, first);
            break;
        }
    }
    free(identities);
    for (size_t i = 0; i < graph->n_nodes && result == 0; i++) {
        ft_node *node = &graph->nodes[i];
        const ft_stage_decl *decl = node->decl;
        node->n_inputs = decl->n_inputs;
        node->input_names = ft_xcalloc(decl->n_inputs + 1, sizeof *node->input_names);
        node->input_paths = ft_xcalloc(decl->n_inputs + 1, sizeof *node->input_paths);
        node->input_nodes = ft_xcalloc(decl->n_inputs + 1, sizeof *node->input_nodes);
        for (size_t k = 0; k < decl->n_inputs; k++) {
            node->input_names[k] = ft_target_normalise(decl->inputs[k]);
            node->input_paths[k] = ft_path_join(pipeline->dir, node->input_names[k]);
            size_t *found = ft_strmap_get(&owner->targets, node->input_names[k]);
            size_t maker = found ? *found : FT_NO_NODE;
            node->input_nodes[k] = maker;
            if (maker != FT_NO_NODE) {
                ft_node *m = &graph->nodes[maker];
                m->dependents = ft_xrealloc(m->dependents, (m->n_dependents + 1) * sizeof *m->dependents);
                m->dependents[m->n_dependents++] = i;
            }
        }
    }
    if (result == 0)
        result = find_cycle(graph);
    if (result != 0) {
        ft_graph_free(graph);
        return -1;
    }
    *out = graph;
    return 0;
}

void ft_graph_free(ft_graph *graph)
{
    if (!graph)
        return;
    struct ft_graph_private *owner = (struct ft_graph_private *)graph;
    for (size_t i = 0; i < graph->n_nodes; i++) {
        ft_node *node = &graph->nodes[i];
        if (node->decl && node->params.values)
            ft_params_free(&node->params);
        free(node->target);
        free(node->target_path);
        for (size_t k = 0; k < node->n_inputs; k++) {
            free(node->input_names[k]);
            free(node->input_paths[k]);
        }
        free(node->input_names);
        free(node->input_paths);
        free(node->input_nodes);
        free(node->dependents);
    }
    free(graph->nodes);
    free(graph->order);
    ft_strmap_free(&owner->targets);
    free(owner);
}

size_t ft_graph_find(const ft_graph *graph, const char *target)
{
    const struct ft_graph_private *owner = (const struct ft_graph_private *)graph;
    char *name = ft_target_normalise(target);
    size_t *found = ft_strmap_get(&owner->targets, name);
    free(name);
    return found ? *found : FT_NO_NODE;
}

static void select_with_inputs(ft_graph *graph, size_t root)
{
    size_t *stack = ft_xmalloc((graph->n_nodes + 1) * sizeof *stack);
    size_t depth = 0;
    if (!graph->nodes[root].selected) {
        graph->nodes[root].selected = true;
        stack[depth++] = root;
    }
    while (depth > 0) {
        ft_node *node = &graph->nodes[stack[--depth]];
        for (size_t k = 0; k < node->n_inputs; k++) {
            size_t input = node->input_nodes[k];
            if (input != FT_NO_NODE && !graph->nodes[input].selected) {
                graph->nodes[input].selected = true;
                stack[depth++] = input;
            }
        }
    }
    free(stack);
}

static int unknown_target(const ft_graph *graph, const char *name)
{
    const char *nearest = NULL;
    size_t best = (size_t)-1;
    for (size_t i = 0; i < graph->n_nodes; i++) {
        size_t distance = ft_edit_distance(name, graph->nodes[i].target);
        if (distance < best) {
            best = distance;
            nearest = graph->nodes[i].target;
        }
    }
    if (nearest && best <= 3)
        return ft_error("no stage makes '%s' in %s (did you mean '%s'?)", name, graph->pipeline->path, nearest);
    return ft_error("no stage makes '%s' in %s; `ftpipe status` lists the targets", name, graph->pipeline->path);
}

int ft_graph_select(ft_graph *graph, const char *const *targets, size_t n_targets)
{
    const ft_pipeline *pipeline = graph->pipeline;
    if (n_targets == 0 && pipeline->n_defaults > 0) {
        targets = (const char *const *)pipeline->defaults;
        n_targets = pipeline->n_defaults;
    }
    if (n_targets == 0) {
        for (size_t i = 0; i < graph->n_nodes; i++)
            select_with_inputs(graph, i);
    }
    for (size_t t = 0; t < n_targets; t++) {
        size_t node = ft_graph_find(graph, targets[t]);
        if (node == FT_NO_NODE)
            return unknown_target(graph, targets[t]);
        select_with_inputs(graph, node);
    }
    for (size_t i = 0; i < graph->n_nodes; i++) {
        ft_node *node = &graph->nodes[i];
        if (!node->selected)
            continue;
        for (size_t k = 0; k < node->n_inputs; k++) {
            if (node->input_nodes[k] != FT_NO_NODE || ft_path_exists(node->input_paths[k]))
                continue;
            const ft_location *where = &node->decl->input_where[k];
            return ft_error("%s:%d:%d: input '%s' of stage %s does not exist, and no stage makes it", where->file,
                            where->line, where->column, node->input_names[k], node->target);
        }
    }
    return 0;
}

static void print_escaped(FILE *out, const char *text)
{
    for (const char *c = text; *c; c++) {
        if (*c == '"' || *c == '\\')
            fputc('\\', out);
        fputc(*c, out);
    }
}

static void print_quoted(FILE *out, const char *text)
{
    fputc('"', out);
    print_escaped(out, text);
    fputc('"', out);
}

void ft_graph_print(const ft_graph *graph, bool dot, FILE *out)
{
    if (dot)
        fputs("digraph ftpipe {\n  rankdir=LR;\n  node [shape=box];\n", out);
    for (size_t o = 0; o < graph->n_nodes; o++) {
        const ft_node *node = &graph->nodes[graph->order[o]];
        if (!dot) {
            fprintf(out, "%s (%s)", node->target, node->kind->name);
            for (size_t k = 0; k < node->n_inputs; k++)
                fprintf(out, "%s%s", k == 0 ? " <- " : " ", node->input_names[k]);
            fputc('\n', out);
            continue;
        }
        fputs("  ", out);
        print_quoted(out, node->target);
        fputs(" [label=\"", out);
        print_escaped(out, node->target);
        fprintf(out, "\\n(%s)\"];\n", node->kind->name);
        for (size_t k = 0; k < node->n_inputs; k++) {
            fputs("  ", out);
            print_quoted(out, node->input_names[k]);
            if (node->input_nodes[k] == FT_NO_NODE)
                fputs(" [shape=note]", out);
            fputs(";\n  ", out);
            print_quoted(out, node->input_names[k]);
            fputs(" -> ", out);
            print_quoted(out, node->target);
            fputs(";\n", out);
        }
    }
    if (dot)
        fputs("}\n", out);
}
