/* llava_config: the config.json of a Hugging Face LlavaForConditionalGeneration
 * (llava-hf's layout, which XTuner's converted LLaVA-Llama-3 uses too): its CLIP
 * vision tower (vision_config, CLIPVisionConfig's defaults for absent keys), the
 * feature layer and selection, the projector, and the image token. Absent keys
 * take transformers' LlavaConfig defaults (a CLIP ViT-L/14 at 336 pixels). The
 * language model's text_config is read as model_config reads a config.json,
 * LlamaConfig's defaults filling a llama text_config's absent keys (llava-hf's
 * configs leave most of them out). */
#ifndef FTPIPE_LLAVA_CONFIG_H
#define FTPIPE_LLAVA_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/formats/model_config.h"

/* ft_llava_config and its ft_clip_vision_config are in model_config.h, whose
 * ft_model_config carries a LLaVA folder's (llava_tower). */

/* Whether the folder's config.json is a LlavaForConditionalGeneration (by
 * architectures, else model_type "llava"); false when it cannot be read. */
bool ft_llava_config_is_llava(const char *model_dir);

/* model_dir: a folder holding config.json. An option ftpipe does not compute
 * (an activation other than quick_gelu / gelu, several feature layers) is an
 * error naming the file and key. */
int ft_llava_config_load(const char *model_dir, ft_llava_config *out);
int ft_llava_config_parse(const char *json_text, const char *origin, ft_llava_config *out);

/* The language model's config: text_config (absent: LlamaConfig's defaults),
 * with llava set and the image token of the whole config. */
int ft_llava_text_config_load(const char *model_dir, ft_model_config *out);
/* The config of a model folder's language model: a LLaVA folder's text_config
 * as above, else config.json (ft_model_config_load). */
int ft_language_model_config_load(const char *model_dir, ft_model_config *out);

/* Tokens each image takes in the language model: (image_size / patch_size)^2
 * patches, plus the CLS token with the "full" strategy (576 for LLaVA-1.5). */
uint32_t ft_llava_image_tokens(const ft_llava_config *config);

#endif
