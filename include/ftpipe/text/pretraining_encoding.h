/* pretraining_encoding: continued-pretraining texts turned into training blocks
 * as LLaMA-Factory's pretraining (stage pt, packing on) makes them: each text
 * with EOS appended is tokenized on its own, all ids are concatenated in order,
 * and the run is cut into blocks of block_len tokens; the last, shorter piece
 * is dropped. Every token of a block is trained on. */
#ifndef FTPIPE_PRETRAINING_ENCODING_H
#define FTPIPE_PRETRAINING_ENCODING_H

#include <stddef.h>

#include "ftpipe/formats/dataset.h"
#include "ftpipe/text/sample_encoding.h"
#include "ftpipe/text/tokenizer.h"

/* texts: conversations of one user message each (FT_DATASET_FORMAT_TEXT).
 * *blocks (caller frees each with ft_encoded_sample_free, then the array) and
 * *n_blocks receive the blocks; *n_tokens the tokens before cutting. */
int ft_encode_pretraining(const ft_tokenizer *tokenizer, const ft_conversation *texts, size_t count,
                          const char *eos_token, size_t block_len, ft_encoded_sample **blocks, size_t *n_blocks,
                          size_t *n_tokens);

#endif
