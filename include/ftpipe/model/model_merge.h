/* model_merge: a model folder rewritten tensor by tensor, with a peft LoRA
 * adapter merged into its weights (W' = W + scaling * B A, in f32) and its
 * floating-point tensors converted to another dtype when asked. A changed
 * tensor is made only as the writer reaches it, so memory holds at most one
 * tensor's f32 copy and its output bytes whatever the model's size; the rest
 * are written straight from the mapping.
 *
 * The output holds model.safetensors, or shards as transformers'
 * save_pretrained makes them: the weights in the model's order
 * (ft_model_weight_list) fill a shard up to max_shard_bytes, a larger tensor
 * gets a shard of its own, and the files are named model-00001-of-00003.safetensors
 * with model.safetensors.index.json; config.json (its dtype updated when
 * converted) and the tokenizer and generation files copied from the model folder. */
#ifndef FTPIPE_MODEL_MERGE_H
#define FTPIPE_MODEL_MERGE_H

#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/formats/safetensors.h"

/* transformers' default max_shard_size, "5GB": 5e9 bytes, not 5 GiB. */
#define FT_MERGE_SHARD_BYTES 5000000000ull

typedef struct {
    const char *adapter_dir;       /* a peft adapter folder; NULL: nothing to merge */
    bool convert;                  /* false: every tensor keeps its dtype */
    ft_dtype dtype;                /* F32, F16 or BF16, when convert */
    uint64_t max_shard_bytes;      /* 0: FT_MERGE_SHARD_BYTES */
    /* Optional: called after each tensor; a nonzero return stops the writing. */
    int (*progress)(void *context, uint64_t tensors_done, uint64_t tensors_total);
    void *progress_context;
} ft_model_merge_options;

/* Writes the merged folder at out_dir (created if missing). Every adapter tensor
 * must find its weight with matching shapes, or nothing is claimed merged. */
int ft_model_merge_write(const char *model_dir, const char *out_dir, const ft_model_merge_options *options);

/* w [out_features, in_features] += scaling * b [out_features, rank] a [rank, in_features]. */
void ft_lora_merge_into(float *w, const float *a, const float *b, int out_features, int in_features, int rank,
                        float scaling);

/* "float32", "bfloat16", "float16": the name config.json gives the dtype. */
const char *ft_dtype_torch_name(ft_dtype dtype);

#endif
