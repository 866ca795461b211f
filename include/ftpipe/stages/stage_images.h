/* stage_images: what the stages that read records' images share (tokenize,
 * evaluate): the processor's options from the model folder with LLaMA-Factory's
 * image_max_pixels / image_min_pixels, the rule that an image must lie in an
 * input folder (so that a change to it runs the stage again), and, for
 * evaluate, every record's images preprocessed once and held for the model. */
#ifndef FTPIPE_STAGE_IMAGES_H
#define FTPIPE_STAGE_IMAGES_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/engine/stage.h"
#include "ftpipe/eval/evaluation.h"
#include "ftpipe/formats/dataset.h"
#include "ftpipe/formats/image_table.h"
#include "ftpipe/text/sample_encoding.h"

/* model_dir's preprocessor_config.json, with the stage's image_max_pixels and image_min_pixels. */
int ft_stage_image_options(ft_stage *stage, const char *model_dir, ft_qwen2vl_image_options *options);

/* The image table of model_dir's processor with the stage's image_max_pixels and
 * image_min_pixels: CLIP's (a LLaVA model; its crop must be the tower's image
 * size) when clip, else Qwen2-VL's; scratch is its pixel file. */
int ft_stage_image_table_open(ft_stage *stage, const char *model_dir, bool clip, const char *scratch,
                              ft_image_table **out);

/* path must lie inside one of the stage's inputs from first_input on that is a folder. */
int ft_stage_check_image_is_an_input(ft_stage *stage, const char *path, size_t first_input);

/* The images of the first count records of a dataset, for evaluation. */
typedef struct {
    ft_image_table *table;                      /* NULL: no record has images */
    ft_conversation_images *per_conversation;   /* each image's token count, for encoding */
    ft_sample_images *per_sample;               /* the preprocessed images, for the model */
    size_t count;
} ft_stage_images;

/* Preprocesses each distinct image once (scratch in the stage's work folder);
 * an unreadable image fails the stage naming its file, record and image. */
int ft_stage_images_gather(ft_stage *stage, const char *model_dir, const ft_dataset *dataset, size_t count,
                           size_t first_input, ft_stage_images *out);
void ft_stage_images_free(ft_stage_images *images);

#endif
