/* model_save: a fully fine-tuned model written back as a Hugging Face folder:
 * the base's config.json, model.safetensors with every weight in the dtype the
 * config names (torch_dtype: float32, bfloat16 or float16; f32 when it names
 * none), and the base's tokenizer and generation files copied when present. */
#ifndef FTPIPE_MODEL_SAVE_H
#define FTPIPE_MODEL_SAVE_H

#include "ftpipe/model/model.h"

int ft_model_save(const ft_model *model, const char *base_model_dir, const char *out_dir);

#endif
