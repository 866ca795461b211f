/* mrope: Qwen2-VL's multimodal rotary positions (M-RoPE). Each token has three
 * positions, (temporal, height, width), as transformers' get_rope_index gives
 * them: a text token has its running position in all three; an image's tokens
 * start where the text stands, the temporal one fixed per frame, the height and
 * width ones walking the image's merged grid; the text after an image goes on
 * from its start plus the larger of the grid's merged height and width.
 * mrope_section splits each head's head_dim/2 frequencies among the three. */
#ifndef FTPIPE_MROPE_H
#define FTPIPE_MROPE_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/formats/image_store.h"
#include "ftpipe/formats/model_config.h"

/* positions [3 * rows] (the temporal positions of every token, then the height
 * ones, then the width ones) of a batch of rows of seq_len tokens. A sample
 * starts at each row and wherever the segment id changes; images are the
 * batch's, in the order their tokens come. A run of image tokens that does
 * not match the next image's token count is an error. */
int ft_mrope_positions(const ft_model_config *config, const int32_t *tokens, const int32_t *segments,
                       int batch_size, int seq_len, const ft_stored_image *images, size_t n_images,
                       int32_t *positions);

/* cos and sin [rows, head_dim / 2] of each token's angles: frequency j turns with
 * the position mrope_section gives it (as transformers computes them, in float). */
void ft_mrope_tables(const ft_model_config *config, const int32_t *positions, int rows, float *cos_table,
                     float *sin_table);

#endif
