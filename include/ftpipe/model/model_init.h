/* model_init: Hugging Face model folders with random weights, for a named shape
 * or explicit dimensions, so that tests, examples and benchmarks need no
 * download. The folder holds config.json, model.safetensors (or shards of at
 * most shard_bytes with model.safetensors.index.json), tokenizer.json and
 * tokenizer_config.json: a given tokenizer's, or a built-in byte-level one.
 *
 * Weights are drawn as transformers initialises them (normal, std 0.02; norms
 * one; biases zero) from a counter-based generator: the same seed gives the same
 * bytes whatever the thread count. */
#ifndef FTPIPE_MODEL_INIT_H
#define FTPIPE_MODEL_INIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/formats/model_config.h"
#include "ftpipe/formats/safetensors.h"

/* The built-in tokenizer: byte b is token b, then <|endoftext|> 256,
 * <|im_start|> 257, <|im_end|> 258. */
#define FT_BUILTIN_TOKENIZER_VOCAB 259

/* The shapes by name: tiny (Qwen2, hidden 64, 2 layers, its vocabulary the
 * tokenizer's), qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, llama3-8b (Llama 3.1's
 * rope scaling). An unknown name is an error listing them. vocab_size 0 means:
 * the tokenizer's. */
int ft_model_shape(const char *name, ft_model_config *out);

typedef struct {
    ft_model_config config;        /* vocab_size 0: the tokenizer's */
    ft_dtype dtype;                /* FT_DTYPE_BF16 or FT_DTYPE_F32 */
    uint64_t seed;
    const char *tokenizer_path;    /* a tokenizer.json or a folder holding one; NULL: built-in */
    uint64_t shard_bytes;          /* 0: 2 GiB */
    int threads;                   /* 0: one per core */
    /* Optional: called after each tensor; a nonzero return stops the writing. */
    int (*progress)(void *context, uint64_t bytes_done, uint64_t bytes_total);
    void *progress_context;
} ft_model_init_options;

/* Writes the folder at dir (created if missing). The tokenizer decides the
 * vocabulary when config.vocab_size is 0 and must fit it otherwise; the
 * end-of-text and begin-of-text ids come from the tokenizer's special tokens. */
int ft_model_init_write(const char *dir, const ft_model_init_options *options);

/* The built-in tokenizer.json text. Caller frees. */
char *ft_builtin_tokenizer_json(void);

/* The parts, for folders of other layouts (llava_init.h): */

/* A tensor to draw: its name and shape (up to 5 dimensions: Qwen2-VL's patch
 * embedding), and whether it is a norm's weight (drawn as one; names with "norm"
 * in their last part are found by the name). */
typedef struct {
    char *name;
    int n_dims;
    int64_t shape[5];
    bool is_norm;
} ft_init_tensor;

/* Copies the tokenizer at source (and the tokenizer_config.json beside it) into
 * dir, or writes the built-in one when source is NULL (with Qwen2-VL's vision
 * tokens when vision_language). */
int ft_model_init_place_tokenizer(const char *dir, const char *source, bool vision_language);
/* vocab_size (when 0) and the BOS/EOS ids from the tokenizer in dir; a tokenizer
 * larger than a given vocab_size is an error. */
int ft_model_init_fit_tokenizer(const char *dir, ft_model_config *config);
/* A config's weights as tensors to draw, each name after prefix: the language
 * model's, then a vision-language model's tower. */
ft_init_tensor *ft_model_init_tensors(const ft_model_config *config, const char *prefix, size_t *count);
void ft_model_init_tensors_free(ft_init_tensor *tensors, size_t count);
/* Draws the tensors (norm weights one, biases zero, the rest normal with std
 * 0.02) into model.safetensors or shards of options->shard_bytes. */
int ft_model_init_write_weights(const char *dir, const ft_init_tensor *tensors, size_t count,
                                const ft_model_init_options *options);

#endif
