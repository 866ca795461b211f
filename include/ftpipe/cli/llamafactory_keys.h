/* llamafactory_keys: what each key of a LLaMA-Factory training YAML becomes in
 * a pipeline: a parameter of a stage (tokenize, train), the model or
 * data input, the train stage's target, or nothing, with the reason. `ftpipe
 * import` follows it and README's import table lists it. */
#ifndef FTPIPE_LLAMAFACTORY_KEYS_H
#define FTPIPE_LLAMAFACTORY_KEYS_H

#include <stddef.h>

typedef enum {
    FT_LF_TOKENIZE,  /* a tokenize parameter (param; NULL: the same name) */
    FT_LF_TRAIN,     /* a train parameter */
    FT_LF_SPECIAL,   /* read by import itself: the model, data folder, stage, output, evaluation */
    FT_LF_DROPPED,   /* no counterpart: the reason says why, or what ftpipe does instead */
} ft_lf_key_use;

typedef struct {
    const char *key;
    ft_lf_key_use use;
    const char *param;   /* the ftpipe parameter, for TOKENIZE/TRAIN; NULL: the same name */
    const char *reason;  /* what it becomes (SPECIAL) or why it is dropped (DROPPED) */
} ft_lf_key;

/* The key's entry, or NULL for a key ftpipe does not know. */
const ft_lf_key *ft_lf_key_find(const char *key);
/* Every entry, in the order README lists them. */
const ft_lf_key *ft_lf_keys(size_t *count);

#endif
