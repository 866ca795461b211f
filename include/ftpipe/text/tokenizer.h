/* tokenizer: Hugging Face tokenizer.json (BPE) in C.
 *
 * Byte-level BPE (Qwen, Llama 3: NFC via utf8proc or no normalizer, the Split
 * regex via PCRE2 JIT, ByteLevel) and SentencePiece-style BPE (Llama 2,
 * LLaVA-1.5: "▁" for spaces by the Prepend/Replace normalizer or a Metaspace
 * pre-tokenizer, characters with byte fallback), merges in either format, added
 * and special tokens matched in the text before BPE, and decoding back to text
 * (token_decoder.h). Any other model, normalizer, pre-tokenizer or decoder type
 * is refused by name. Ids are identical to the `tokenizers` library's. A loaded
 * tokenizer is read-only and may be used from several threads at once. */
#ifndef FTPIPE_TOKENIZER_H
#define FTPIPE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/hash.h"
#include "ftpipe/text/token_ids.h"

typedef struct ft_tokenizer ft_tokenizer;

/* path: a tokenizer.json, or a model folder holding one. */
int ft_tokenizer_load(const char *path, ft_tokenizer **out);
void ft_tokenizer_free(ft_tokenizer *tokenizer);

/* Appends the ids of text to out (no BOS/EOS added: templates place those). */
int ft_tokenizer_encode(const ft_tokenizer *tokenizer, const char *text, size_t length, ft_token_ids *out);
/* Text of ids (special tokens included), appended to a fresh string. Caller frees. */
int ft_tokenizer_decode(const ft_tokenizer *tokenizer, const uint32_t *ids, size_t count, char **text);
/* The same for what a model generated, which may hold ids the tokenizer lacks (a
 * model's embedding often has more rows than its tokenizer has tokens): those
 * are left out, as Hugging Face's decode leaves them out, instead of failing. */
int ft_tokenizer_decode_generated(const ft_tokenizer *tokenizer, const uint32_t *ids, size_t count, char **text);

size_t ft_tokenizer_vocab_size(const ft_tokenizer *tokenizer); /* including added tokens */
/* The id of a token's exact string (e.g. "<|im_end|>"), or -1. */
int64_t ft_tokenizer_token_id(const ft_tokenizer *tokenizer, const char *token);
/* The beginning- and end-of-sequence tokens' texts from the tokenizer_config.json
 * beside the tokenizer.json ("bos_token", "eos_token"), or NULL when there is
 * none. Chat templates place them where LLaMA-Factory's slots say. */
const char *ft_tokenizer_bos_token(const ft_tokenizer *tokenizer);
const char *ft_tokenizer_eos_token(const ft_tokenizer *tokenizer);
/* Hash of what determines the encoding: data tokenized with one tokenizer must
 * not train a model with another. It is ft_hash_bytes of the text
 * "tokenizer.json HEX\nbos_token BOS\neos_token EOS\n" (HEX: the tokenizer.json
 * bytes' hash; "no bos_token" or "no eos_token" as the line when
 * tokenizer_config.json has none). */
ft_hash ft_tokenizer_hash(const ft_tokenizer *tokenizer);

#endif
