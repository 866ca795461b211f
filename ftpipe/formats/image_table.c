/* image_table: a dataset's distinct images, preprocessed once into a scratch file. */
#include "ftpipe/formats/image_table.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strmap.h"
#include "ftpipe/formats/image.h"

typedef struct {
    ft_hash hash;
    int grid_t, grid_h, grid_w;
    uint64_t first_row;
} table_image;

struct ft_image_table {
    ft_image_layout layout;
    ft_qwen2vl_image_options options;  /* layout PATCHES */
    ft_clip_image_options clip;        /* layout CLIP */
    uint32_t clip_image_tokens;
    uint32_t row_length;
    char *scratch_path;
    FILE *scratch;
    uint64_t n_rows;
    table_image *images;
    size_t count, capacity;
    ft_strmap by_path;   /* path -> index; the paths are owned in paths */
    char **paths;
    size_t n_paths, paths_capacity;
    void *map;
    size_t map_bytes;
};

static int open_table(const char *scratch_path, ft_image_table **out)
{
    FILE *scratch = fopen(scratch_path, "w+b");
    if (!scratch)
        return ft_error_errno("cannot create %s", scratch_path);
    ft_image_table *table = ft_xcalloc(1, sizeof *table);
    table->scratch_path = ft_xstrdup(scratch_path);
    table->scratch = scratch;
    ft_strmap_init(&table->by_path);
    *out = table;
    return 0;
}

int ft_image_table_open(const char *scratch_path, const ft_qwen2vl_image_options *options, ft_image_table **out)
{
    if (open_table(scratch_path, out) != 0)
        return -1;
    (*out)->layout = FT_IMAGE_LAYOUT_PATCHES;
    (*out)->options = *options;
    (*out)->row_length = (uint32_t)(3 * options->temporal_patch_size * options->patch_size * options->patch_size);
    return 0;
}

int ft_image_table_open_clip(const char *scratch_path, const ft_clip_image_options *options, uint32_t image_tokens,
                             ft_image_table **out)
{
    if (image_tokens == 0)
        return ft_error("an image must take at least one token");
    if (open_table(scratch_path, out) != 0)
        return -1;
    (*out)->layout = FT_IMAGE_LAYOUT_CLIP;
    (*out)->clip = *options;
    (*out)->clip_image_tokens = image_tokens;
    (*out)->row_length = (uint32_t)(3 * options->crop_height * options->crop_width);
    return 0;
}

ft_image_layout ft_image_table_layout(const ft_image_table *table) { return table->layout; }

static int64_t find_hash(const ft_image_table *table, ft_hash hash)
{
    for (size_t i = 0; i < table->count; i++)
        if (ft_hash_equal(table->images[i].hash, hash))
            return (int64_t)i;
    return -1;
}

static void remember_path(ft_image_table *table, const char *path, size_t index)
{
    ft_grow((void **)&table->paths, &table->paths_capacity, table->n_paths + 1, sizeof(char *));
    char *owned = ft_xstrdup(path);
    table->paths[table->n_paths++] = owned;
    ft_strmap_put(&table->by_path, owned, index);
}

/* Decodes and preprocesses the image, appending its pixels to the scratch file. */
static int preprocess(ft_image_table *table, const char *path, table_image *out)
{
    ft_image image;
    if (ft_image_read_file(path, &image) != 0)
        return -1;
    ft_vision_pixels pixels = {0};
    int status = 0;
    if (table->layout == FT_IMAGE_LAYOUT_CLIP) {
        status = ft_clip_preprocess(&image, &table->clip, path, &pixels);
        /* one row of channel-first pixels, as the store keeps a CLIP image */
        pixels.row_length *= pixels.n_rows;
        pixels.n_rows = 1;
    } else {
        status = ft_llamafactory_regularize_image(&image, table->options.image_min_pixels,
                                                  table->options.image_max_pixels, 1, path);
        if (status == 0)
            status = ft_qwen2vl_preprocess(&image, &table->options, path, &pixels);
    }
    ft_image_free(&image);
    if (status != 0)
        return -1;
    size_t values = (size_t)pixels.n_rows * (size_t)pixels.row_length;
    if (pixels.row_length != table->row_length ||
        fwrite(pixels.pixel_values, sizeof(float), values, table->scratch) != values)
        status = ft_error_errno("cannot write the preprocessed pixels of %s to %s", path, table->scratch_path);
    out->grid_t = pixels.grid_t;
    out->grid_h = pixels.grid_h;
    out->grid_w = pixels.grid_w;
    out->first_row = table->n_rows;
    if (status == 0)
        table->n_rows += (uint64_t)pixels.n_rows;
    ft_vision_pixels_free(&pixels);
    return status;
}

int ft_image_table_add(ft_image_table *table, const char *path, uint32_t *index)
{
    const size_t *known = ft_strmap_get(&table->by_path, path);
    if (known) {
        *index = (uint32_t)*known;
        return 0;
    }
    table_image image = {0};
    if (ft_hash_file(path, 1, &image.hash) != 0)
        return -1;
    int64_t found = find_hash(table, image.hash);
    if (found < 0) {
        if (table->count >= UINT32_MAX - 1)
            return ft_error("more than %u distinct images in one dataset", UINT32_MAX - 1);
        if (preprocess(table, path, &image) != 0)
            return -1;
        ft_grow((void **)&table->images, &table->capacity, table->count + 1, sizeof(table_image));
        table->images[table->count] = image;
        found = (int64_t)table->count++;
    }
    remember_path(table, path, (size_t)found);
    *index = (uint32_t)found;
    return 0;
}

size_t ft_image_table_count(const ft_image_table *table) { return table->count; }
uint32_t ft_image_table_row_length(const ft_image_table *table) { return table->row_length; }

uint32_t ft_image_table_tokens(const ft_image_table *table, uint32_t index)
{
    if (table->layout == FT_IMAGE_LAYOUT_CLIP)
        return table->clip_image_tokens;
    const table_image *image = &table->images[index];
    int merge = table->options.merge_size;
    return (uint32_t)((int64_t)image->grid_t * image->grid_h * image->grid_w / ((int64_t)merge * merge));
}

int ft_image_table_seal(ft_image_table *table)
{
    if (fflush(table->scratch) != 0)
        return ft_error_errno("cannot write %s", table->scratch_path);
    table->map_bytes = (size_t)(table->n_rows * table->row_length * sizeof(float));
    if (table->map_bytes == 0)
        return 0;
    table->map = mmap(NULL, table->map_bytes, PROT_READ, MAP_SHARED, fileno(table->scratch), 0);
    if (table->map == MAP_FAILED) {
        table->map = NULL;
        return ft_error_errno("cannot map %s", table->scratch_path);
    }
    return 0;
}

void ft_image_table_image(const ft_image_table *table, uint32_t index, ft_stored_image *out)
{
    const table_image *image = &table->images[index];
    out->hash = image->hash;
    out->grid_t = image->grid_t;
    out->grid_h = image->grid_h;
    out->grid_w = image->grid_w;
    out->pixels = (const float *)table->map + image->first_row * table->row_length;
}

void ft_image_table_free(ft_image_table *table)
{
    if (!table)
        return;
    if (table->map)
        munmap(table->map, table->map_bytes);
    fclose(table->scratch);
    unlink(table->scratch_path);
    free(table->scratch_path);
    free(table->images);
    ft_strmap_free(&table->by_path);
    for (size_t i = 0; i < table->n_paths; i++)
        free(table->paths[i]);
    free(table->paths);
    free(table);
}
