/* train_work: operations per token from the config's shapes (see train_work.h). */
#include "ftpipe/model/train_work.h"

int ft_train_work_per_token(const ft_model_config *config, const ft_model_options *options, double mean_row_tokens,
                            ft_train_work *out)
{
    ft_memory_plan plan;
    if (ft_model_plan_memory(config, options, FT_DTYPE_F32, &plan) < 0)
        return -1;
    double hidden = config->hidden_size, inner = config->intermediate_size;
    double query = (double)config->num_attention_heads * config->head_dim;
    double key_value = (double)config->num_key_value_heads * config->head_dim;
    /* q, k, v, o, gate, up, down per layer; lm_head once */
    double layer_weights = hidden * (query + 2.0 * key_value) + query * hidden + 3.0 * hidden * inner;
    double products = 2.0 * (config->num_hidden_layers * layer_weights + hidden * config->vocab_size);
    /* scores and weighted sum: 2 operations each per head dimension, over half the row on average */
    double context = mean_row_tokens > 1.0 ? mean_row_tokens / 2.0 : 1.0;
    double attention = 4.0 * context * query * config->num_hidden_layers;
    double adapter = options->finetuning == FT_FINETUNE_LORA || options->use_lora
                         ? 2.0 * (double)(plan.adapter_bytes / sizeof(float))
                         : 0.0;
    out->forward = products + attention + adapter;
    bool full = options->finetuning == FT_FINETUNE_FULL;
    /* inputs' gradients for everything; weights' gradients for what is trained */
    double backward = products + 2.0 * attention + adapter + (full ? products : adapter);
    /* recomputation repeats each layer's forward, not the head's (model_pass.c's layer_recompute) */
    double head = 2.0 * hidden * config->vocab_size;
    out->train = out->forward + backward + (options->gradient_checkpointing ? out->forward - head : 0.0);
    double weight = 1.0 + FT_SMALL_SHAPE_HIDDEN / hidden;
    out->forward *= weight;
    out->train *= weight;
    return 0;
}
