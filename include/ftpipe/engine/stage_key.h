/* stage_key: a stage's key, and why it differs from the last run's.
 *
 * key = XXH3-128 of: the kind and its version, the key parameters in canonical
 * form sorted by name, each input's name and content hash in order, and what
 * the kind adds (the shell kind's declared environment). Resource parameters
 * (gpus, memory) and other non-key parameters never enter it. */
#ifndef FTPIPE_STAGE_KEY_H
#define FTPIPE_STAGE_KEY_H

#include "ftpipe/base/hash.h"
#include "ftpipe/engine/graph.h"
#include "ftpipe/engine/state.h"

typedef struct {
    char key[FT_HASH_HEX_LENGTH + 1];
    char **input_hashes; /* hex, one per input */
    size_t n_inputs;
    /* What went into the key, for the run records and for `why`: NULL until
     * ft_stage_key_describe (a no-op run never needs them). */
    char *params_json;   /* {"name": "canonical", ...} of key parameters */
    char *inputs_json;   /* [{"path": "...", "hash": "..."}, ...] */
} ft_computed_key;

/* input_hashes[k]: hex content hash of node->inputs[k] (taken over by the key).
 * context: the stage context for the kind's extra_key (NULL when it has none). */
int ft_stage_key_compute(const ft_node *node, char **input_hashes, ft_stage *context, ft_computed_key *out);
/* Fills params_json and inputs_json. */
void ft_stage_key_describe(const ft_node *node, ft_computed_key *key);
void ft_stage_key_free(ft_computed_key *key);

/* What changed between a previous run and the current key, one reason per
 * line ("parameter learning_rate changed: 0.0001 -> 0.0002"), into out. */
void ft_stage_key_explain(const ft_run_record *previous, const ft_node *node, ft_computed_key *current,
                          ft_strbuf *out);

#endif
