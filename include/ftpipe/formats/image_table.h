/* image_table: the distinct images of a dataset, each decoded and preprocessed
 * once for Qwen2-VL or for LLaVA's CLIP (vision_preprocess.h), so that tokenizing knows each image's
 * token count and the image stores of the splits copy its pixels. Images are
 * told apart by the hash of their file: the same picture under two names is one
 * image. The pixels wait in a scratch file, not in memory. */
#ifndef FTPIPE_IMAGE_TABLE_H
#define FTPIPE_IMAGE_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/formats/image_store.h"
#include "ftpipe/formats/vision_preprocess.h"

typedef struct ft_image_table ft_image_table;

/* scratch_path: a file the table may create and removes when freed. */
int ft_image_table_open(const char *scratch_path, const ft_qwen2vl_image_options *options, ft_image_table **out);
/* For LLaVA: CLIP-preprocessed images, each image_tokens tokens in the language model. */
int ft_image_table_open_clip(const char *scratch_path, const ft_clip_image_options *options, uint32_t image_tokens,
                             ft_image_table **out);
/* FT_IMAGE_LAYOUT_PATCHES (Qwen2-VL) or FT_IMAGE_LAYOUT_CLIP, as the image store takes it. */
ft_image_layout ft_image_table_layout(const ft_image_table *table);
/* The image file at path, added or found: *index receives its number. An
 * unreadable or corrupt image is an error naming it (the table stays usable). */
int ft_image_table_add(ft_image_table *table, const char *path, uint32_t *index);
size_t ft_image_table_count(const ft_image_table *table);
/* Its tokens in the language model: grid_t * grid_h * grid_w / merge_size^2, or LLaVA's image_tokens. */
uint32_t ft_image_table_tokens(const ft_image_table *table, uint32_t index);
/* Pixel values per row: 3 x temporal_patch_size x patch_size^2, or 3 x crop height x width. */
uint32_t ft_image_table_row_length(const ft_image_table *table);
/* Ends adding and maps the pixels for ft_image_table_image. */
int ft_image_table_seal(ft_image_table *table);
void ft_image_table_image(const ft_image_table *table, uint32_t index, ft_stored_image *out);
void ft_image_table_free(ft_image_table *table);

#endif
