/* image_orientation: the EXIF orientation tag (0x0112) and the transposition that
 * makes an image upright, as Pillow's ImageOps.exif_transpose applies it. */
#ifndef FTPIPE_IMAGE_ORIENTATION_H
#define FTPIPE_IMAGE_ORIENTATION_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/formats/image.h"

/* The orientation (1..8) in a TIFF-structured EXIF block (starting at "II" or "MM");
 * 1 (upright) when the block is malformed or has no such tag, as Pillow treats it. */
int ft_exif_orientation(const uint8_t *tiff, size_t n_bytes);

/* Rotates/flips image in place so that orientation 2..8 becomes upright. */
void ft_image_apply_orientation(ft_image *image, int orientation);

#endif
