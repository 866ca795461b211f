/* image: decodes JPEG, PNG and WebP files into 8-bit RGB, upright, as Pillow's
 * Image.open + ImageOps.exif_transpose + convert("RGB") gives them: the EXIF
 * orientation applied, alpha dropped (not blended), palettes looked up, grey
 * replicated into the three channels. The format is read from the file's first
 * bytes, never from its name. */
#ifndef FTPIPE_IMAGE_H
#define FTPIPE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int width, height;
    uint8_t *rgb; /* height rows of width pixels, R G B each; owned */
} ft_image;

/* Decodes the file at path. Errors name the file and say what is wrong with it. */
int ft_image_read_file(const char *path, ft_image *out);

/* Decodes bytes already in memory; name is what errors call the image. */
int ft_image_decode(const uint8_t *bytes, size_t n_bytes, const char *name, ft_image *out);

/* A new width x height image (contents undefined). */
void ft_image_alloc(ft_image *image, int width, int height);
void ft_image_free(ft_image *image);

#endif
