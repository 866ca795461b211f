/* image_resize: bicubic resampling of 8-bit RGB exactly as Pillow's
 * Image.resize(size, Image.BICUBIC) computes it: a Keys cubic (a = -0.5) widened
 * by the scale when shrinking (antialiasing), a horizontal pass then a vertical
 * pass (vertical first, as Pillow 13 does, when the height shrinks by more than
 * twice what the width does), each in 22-bit fixed point rounded and clipped to
 * 8 bits. The HF image processors resize through Pillow, so their pixels depend
 * on these roundings and on the order of the passes. */
#ifndef FTPIPE_IMAGE_RESIZE_H
#define FTPIPE_IMAGE_RESIZE_H

#include "ftpipe/formats/image.h"

/* out receives a new width x height image; in is unchanged. Same size copies. */
void ft_image_resize_bicubic(const ft_image *in, int width, int height, ft_image *out);

#endif
