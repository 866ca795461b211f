/* tokenizer_json: the two reads every part of tokenizer.json's parsing makes
 * (normalizer, pre-tokenizer, decoder, model). Part of the tokenizer
 * (include/ftpipe/text/tokenizer.h). */
#ifndef FTPIPE_TOKENIZER_JSON_H
#define FTPIPE_TOKENIZER_JSON_H

#include <jansson.h>
#include <stdbool.h>

/* An object's "type" text, or "(none)". */
const char *ft_tokenizer_json_type(const json_t *object);
/* An object's boolean `key`, or fallback when absent or not a boolean. */
bool ft_tokenizer_json_flag(const json_t *object, const char *key, bool fallback);

#endif
