/* token_ids: a growable vector of token ids, what the tokenizer and its parts
 * (BPE, added tokens) append to. */
#ifndef FTPIPE_TOKEN_IDS_H
#define FTPIPE_TOKEN_IDS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t *ids;
    size_t count;
    size_t capacity;
} ft_token_ids;

void ft_token_ids_push(ft_token_ids *ids, uint32_t id);
void ft_token_ids_free(ft_token_ids *ids);

#endif
