/* llava_init: LlavaForConditionalGeneration folders with random weights, as
 * model_init makes text models: the named LLaVA shapes (tiny-llava,
 * llava-1.5-7b, llava-llama3-8b), their config.json (llava-hf's layout: a
 * text_config and a CLIP vision_config), preprocessor_config.json
 * (CLIPImageProcessor, 336) and processor_config.json, the tokenizer with the
 * <image> token, and weights named as llava-hf's hub checkpoints name them
 * (language_model.*, vision_tower.vision_model.*, multi_modal_projector.*). */
#ifndef FTPIPE_LLAVA_INIT_H
#define FTPIPE_LLAVA_INIT_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/formats/llava_config.h"
#include "ftpipe/formats/model_config.h"
#include "ftpipe/model/model_init.h"

#define FT_LLAVA_SHAPES "tiny-llava, llava-1.5-7b, llava-llama3-8b"

typedef struct {
    ft_model_config text;    /* vocab_size 0: the tokenizer's (with <image>) */
    ft_llava_config llava;   /* image_token_id -1: the next id after the tokenizer's */
} ft_llava_shape;

bool ft_llava_is_shape(const char *name);
/* An unknown name is an error listing the LLaVA shapes. */
int ft_llava_shape_get(const char *name, ft_llava_shape *out);
size_t ft_llava_parameter_count(const ft_llava_shape *shape);

/* Writes the folder at dir. options->config is ignored: the shape's text model
 * is shape->text. The tokenizer gets <image> (as an added special token at the
 * shape's image token id, or the next free id) unless it has one, whose id then
 * becomes the image token. */
int ft_llava_init_write(const char *dir, const ft_llava_shape *shape, const ft_model_init_options *options);

#endif
