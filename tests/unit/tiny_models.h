/* tiny_models: small random models of each supported architecture, for unit
 * tests: Qwen2 (qkv bias, tied head), Qwen3 (q/k norm), Llama 3 (rope scaling,
 * untied head), all of the tiny shape's widths. */
#ifndef FTPIPE_TESTS_TINY_MODELS_H
#define FTPIPE_TESTS_TINY_MODELS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/random.h"
#include "ftpipe/formats/token_shards.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/model_init.h"

/* Writes ROOT/NAME with `layers` layers and weights drawn from `seed`, in f32;
 * returns the folder (caller frees). Qwen2 with 2 layers is the tiny shape itself. */
static inline char *tiny_model_write(const char *root, const char *name, ft_architecture architecture, int layers,
                                     uint64_t seed)
{
    ft_model_init_options options = {.dtype = FT_DTYPE_F32, .seed = seed, .threads = 1};
    CHECK_INT(ft_model_shape(architecture == FT_ARCH_LLAMA ? "llama3-8b" : "tiny", &options.config), 0);
    ft_model_config tiny;
    CHECK_INT(ft_model_shape("tiny", &tiny), 0);
    ft_model_config *c = &options.config;
    c->vocab_size = 0;
    c->hidden_size = tiny.hidden_size;
    c->intermediate_size = tiny.intermediate_size;
    c->num_hidden_layers = layers;
    c->num_attention_heads = tiny.num_attention_heads;
    c->num_key_value_heads = tiny.num_key_value_heads;
    c->head_dim = tiny.head_dim;
    c->max_position_embeddings = tiny.max_position_embeddings;
    if (architecture == FT_ARCH_QWEN3) {
        c->architecture = FT_ARCH_QWEN3;
        snprintf(c->architecture_name, sizeof c->architecture_name, "Qwen3ForCausalLM");
        c->attention_bias = false;
        c->qk_norm = true;
    }
    char *dir = ft_xasprintf("%s/%s", root, name);
    int written = ft_model_init_write(dir, &options);
    if (written < 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    CHECK_INT(written, 0);
    return dir;
}

/* ROOT/NAME: n "a+b=c" samples of bytes in rows of row_length, the answer trained
 * on; packed: two samples a row. Returns the folder (caller frees). */
static inline char *tiny_addition_data_write(const char *root, const char *name, int n, bool packed, int row_length)
{
    char *dir = ft_path_join(root, name);
    char *split = ft_path_join(dir, "train");
    ft_token_shard_writer *writer = NULL;
    CHECK_INT(ft_token_shard_writer_open(split, packed, (size_t)row_length, 0, &writer), 0);
    for (int i = 0; i < n; i++) {
        char text[32];
        int a = (i * 7) % 10, b = (i * 3) % 10;
        int length = snprintf(text, sizeof text, "%d+%d=%d;%s", a, b, a + b, i % 3 ? "" : "ok");
        uint32_t ids[32];
        uint8_t mask[32];
        for (int t = 0; t < length; t++) {
            ids[t] = (uint8_t)text[t];
            mask[t] = t > 3;
        }
        CHECK_INT(ft_token_shard_writer_add_sample(writer, ids, mask, (size_t)length), 0);
        if (packed && i % 2 == 1)
            CHECK_INT(ft_token_shard_writer_end_row(writer), 0);
    }
    if (packed && n % 2 == 1)
        CHECK_INT(ft_token_shard_writer_end_row(writer), 0);
    ft_token_dataset_meta meta;
    memset(&meta, 0, sizeof meta);
    strcpy(meta.tokenizer_hash, "0123456789abcdef0123456789abcdef");
    strcpy(meta.template_name, "plain");
    meta.cutoff_len = row_length;
    meta.packing = packed;
    meta.n_records = (uint64_t)n;
    CHECK_INT(ft_token_shard_writer_finish(writer, &meta.train), 0);
    CHECK_INT(ft_token_dataset_meta_write(dir, &meta), 0);
    free(split);
    return dir;
}

/* One forward and backward pass over a row of 8 tokens drawn from `seed`,
 * each predicting the next; the loss into *loss. */
static inline int tiny_train_pass(ft_model *model, uint64_t seed, double *loss)
{
    enum { ROWS = 8 };
    int32_t tokens[ROWS], positions[ROWS], segments[ROWS], targets[ROWS];
    for (int i = 0; i < ROWS; i++) {
        tokens[i] = (int32_t)(ft_random_u64(seed, (uint64_t)i) % ft_model_get_config(model)->vocab_size);
        positions[i] = i;
        segments[i] = 0;
    }
    for (int i = 0; i < ROWS; i++)
        targets[i] = i + 1 < ROWS ? tokens[i + 1] : -100;
    ft_batch batch = {1, ROWS, tokens, positions, segments, targets, 0, 1};
    return ft_model_forward_backward(model, &batch, loss);
}

#endif
