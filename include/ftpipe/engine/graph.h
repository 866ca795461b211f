/* graph: the stages of a pipeline as a dependency graph.
 *
 * Each stage becomes a node with its kind and checked parameters; an input that
 * names another stage's target is an edge, any other input is a source path in
 * the pipeline's folder. Building the graph finds cycles (printing the path);
 * selecting targets finds missing source inputs (naming the stage that needs them). */
#ifndef FTPIPE_GRAPH_H
#define FTPIPE_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "ftpipe/engine/pipeline.h"
#include "ftpipe/engine/rules.h"
#include "ftpipe/engine/stage.h"

#define FT_NO_NODE ((size_t)-1)

typedef struct {
    const ft_stage_decl *decl;
    const ft_stage_kind *kind;
    ft_param_set params;
    char *target;            /* normalised: no "./", no trailing "/" */
    char *target_path;       /* absolute */
    size_t n_inputs;
    char **input_names;      /* normalised, as written */
    char **input_paths;      /* absolute */
    size_t *input_nodes;     /* the node making each input, or FT_NO_NODE for a source */
    size_t *dependents;      /* nodes with this one among their inputs */
    size_t n_dependents;
    bool selected;
} ft_node;

typedef struct {
    ft_node *nodes;
    size_t n_nodes;
    size_t *order;           /* topological: inputs before the stages that use them */
    const ft_pipeline *pipeline;
} ft_graph;

/* kinds: the stage kinds that can run (NULL-terminated); a declared kind without one is an error. */
int ft_graph_build(const ft_pipeline *pipeline, const ft_rulebook *book, const ft_stage_kind *const *kinds,
                   ft_graph **out);
void ft_graph_free(ft_graph *graph);

/* The node whose target is `target` (normalised first), or FT_NO_NODE. */
size_t ft_graph_find(const ft_graph *graph, const char *target);

/* Marks the named targets (none: .DEFAULT's, or every stage when there is no
 * .DEFAULT) and everything they need as selected. Unknown targets and missing
 * source inputs are errors. */
int ft_graph_select(ft_graph *graph, const char *const *targets, size_t n_targets);

/* Every stage with its kind and inputs, inputs first (`ftpipe dag`); with dot,
 * as a Graphviz graph (source files drawn as notes). */
void ft_graph_print(const ft_graph *graph, bool dot, FILE *out);

/* "a/./b/" -> "a/b", "a/../b" -> "b"; ".." that climbs above the start stays
 * ("a/../../x" -> "../x") so that containment checks see it. Caller frees. */
char *ft_target_normalise(const char *name);

#endif
