/* tiny_models: small random models of each supported architecture, for unit
 * tests: Qwen2 (qkv bias, tied head), Qwen3 (q/k norm), Llama 3 (rope scaling,
 * untied head), all of the tiny shape's widths. */
#ifndef FTPIPE_TESTS_TINY_MODELS_H
#define FTPIPE_TESTS_TINY_MODELS_H

#include <stdint.h>
#include <stdio.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
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

#endif
