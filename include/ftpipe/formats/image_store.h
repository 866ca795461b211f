/* image_store: the preprocessed images of one split of a tokenized dataset, so
 * that training never decodes an image. Beside the split's token shards:
 *   train/images.bin
 * Each distinct image (by the hash of its file) is stored once; each sample,
 * numbered as the split's shards serve samples (shard after shard), lists the
 * images its <image> placeholders stand for, in order.
 *
 * The file (little-endian, each section starting at a multiple of 64 bytes):
 *   header   64 bytes: magic "FTIMAGES", uint32 version (2), uint32 row_length
 *            (floats per pixel row), uint64 n_images, uint64 n_pixel_rows,
 *            uint64 n_samples, uint64 n_image_refs, uint32 layout, then zeros
 *   pixels   float32[n_pixel_rows * row_length] (first: the writer streams them)
 *   images   n_images entries of 40 bytes: uint64 hash high, uint64 hash low,
 *            uint32 grid_t, grid_h, grid_w, uint32 zero, uint64 first_row
 *            (image i holds its rows from first_row, the images one after
 *            another from row 0)
 * The layout says what a row is:
 *   FT_IMAGE_LAYOUT_PATCHES (0): Qwen2-VL's patches, 3 x temporal x patch x
 *            patch floats each; an image is grid_t * grid_h * grid_w rows.
 *   FT_IMAGE_LAYOUT_CLIP (1): a whole CLIP image, channel-first, 3 x grid_h x
 *            grid_w floats (grid_t 1); an image is one row.
 * Version 1 files (before the layout) hold patches and are still read.
 *   sample_offsets  uint64[n_samples + 1]: sample s uses refs [off[s], off[s+1])
 *   image_refs      uint32[n_image_refs]: indices into images
 * The reader checks the whole layout before serving anything; errors name the
 * file. */
#ifndef FTPIPE_IMAGE_STORE_H
#define FTPIPE_IMAGE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/base/hash.h"

#define FT_IMAGE_STORE_VERSION 2
#define FT_IMAGE_STORE_FILE "images.bin"

typedef enum { FT_IMAGE_LAYOUT_PATCHES = 0, FT_IMAGE_LAYOUT_CLIP = 1 } ft_image_layout;

typedef struct {
    ft_hash hash;               /* of the image file's bytes */
    int grid_t, grid_h, grid_w; /* Qwen2-VL's image_grid_thw; 1, height, width for CLIP */
    const float *pixels;        /* ft_image_layout_rows rows of row_length */
} ft_stored_image;

/* An image's rows in a layout: grid_t * grid_h * grid_w patches, or 1 CLIP image. */
int64_t ft_image_layout_rows(ft_image_layout layout, int grid_t, int grid_h, int grid_w);

/* --- writing --- */

typedef struct ft_image_store_writer ft_image_store_writer;

/* Writes path (a file beside the split's shards); layout and row_length are fixed
 * for the file (CLIP: row_length is 3 x height x width of every image). */
int ft_image_store_writer_open(const char *path, ft_image_layout layout, uint32_t row_length,
                               ft_image_store_writer **out);
/* Adds an image (pixels: its layout's rows) and returns its index, or -1.
 * Adding each image once is the caller's part. */
int64_t ft_image_store_writer_add_image(ft_image_store_writer *writer, const ft_stored_image *image);
/* The next sample's images, by index; samples are added in the shards' order. */
int ft_image_store_writer_add_sample(ft_image_store_writer *writer, const uint32_t *image_indices,
                                     size_t n_images);
/* Writes the tables and the header, then frees the writer (also on failure). */
int ft_image_store_writer_finish(ft_image_store_writer *writer);

/* --- reading --- */

typedef struct ft_image_store ft_image_store;

/* Maps and checks the file at path. */
int ft_image_store_open(const char *path, ft_image_store **out);
void ft_image_store_close(ft_image_store *store);

uint64_t ft_image_store_n_images(const ft_image_store *store);
uint64_t ft_image_store_n_samples(const ft_image_store *store);
uint32_t ft_image_store_row_length(const ft_image_store *store);
ft_image_layout ft_image_store_layout(const ft_image_store *store);
/* Image index in [0, n_images). */
void ft_image_store_image(const ft_image_store *store, uint64_t index, ft_stored_image *out);
/* Sample index in [0, n_samples): its image indices (*count of them), pointing into the mapping. */
const uint32_t *ft_image_store_sample_images(const ft_image_store *store, uint64_t sample, size_t *count);

#endif
