/* Tests of the image store: writer and mmap reader round trip, and the
 * reader's refusal of damaged files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/image_store.h"

#define ROW_LENGTH 4

static char *temp_path(void)
{
    char *dir = ft_xstrdup("/tmp/ftpipe-test-images.XXXXXX");
    if (!mkdtemp(dir))
        abort();
    char *path = ft_path_join(dir, FT_IMAGE_STORE_FILE);
    free(dir);
    return path;
}

/* Image A: grid 1 x 2 x 2, pixels 0..15; image B: grid 1 x 1 x 2, pixels 100..107.
 * Samples: [A, B], [], [A]. */
static void write_store(const char *path)
{
    float a[4 * ROW_LENGTH], b[2 * ROW_LENGTH];
    for (int i = 0; i < 4 * ROW_LENGTH; i++)
        a[i] = (float)i;
    for (int i = 0; i < 2 * ROW_LENGTH; i++)
        b[i] = 100.0f + (float)i;
    ft_image_store_writer *writer;
    CHECK_INT(ft_image_store_writer_open(path, FT_IMAGE_LAYOUT_PATCHES, ROW_LENGTH, &writer), 0);
    ft_stored_image image_a = {{1, 2}, 1, 2, 2, a}, image_b = {{3, 4}, 1, 1, 2, b};
    CHECK_INT(ft_image_store_writer_add_image(writer, &image_a), 0);
    CHECK_INT(ft_image_store_writer_add_image(writer, &image_b), 1);
    const uint32_t first[] = {0, 1}, third[] = {0}, unknown[] = {2};
    CHECK_INT(ft_image_store_writer_add_sample(writer, first, 2), 0);
    CHECK_INT(ft_image_store_writer_add_sample(writer, NULL, 0), 0);
    CHECK_INT(ft_image_store_writer_add_sample(writer, third, 1), 0);
    CHECK_INT(ft_image_store_writer_add_sample(writer, unknown, 1), -1);
    CHECK(strstr(ft_error_message(), "a sample names image 2 of 2") != NULL);
    CHECK_INT(ft_image_store_writer_finish(writer), 0);
}

TEST(round_trip)
{
    char *path = temp_path();
    write_store(path);
    ft_image_store *store;
    CHECK_INT(ft_image_store_open(path, &store), 0);
    CHECK_INT(ft_image_store_n_images(store), 2);
    CHECK_INT(ft_image_store_n_samples(store), 3);
    CHECK_INT(ft_image_store_row_length(store), ROW_LENGTH);
    ft_stored_image image;
    ft_image_store_image(store, 0, &image);
    CHECK_INT(image.hash.high, 1);
    CHECK_INT(image.hash.low, 2);
    CHECK_INT(image.grid_t * 100 + image.grid_h * 10 + image.grid_w, 122);
    CHECK(image.pixels[0] == 0.0f && image.pixels[15] == 15.0f);
    ft_image_store_image(store, 1, &image);
    CHECK_INT(image.grid_t * 100 + image.grid_h * 10 + image.grid_w, 112);
    CHECK(image.pixels[0] == 100.0f && image.pixels[7] == 107.0f);
    size_t count;
    const uint32_t *refs = ft_image_store_sample_images(store, 0, &count);
    CHECK_INT(count, 2);
    CHECK(count == 2 && refs[0] == 0 && refs[1] == 1);
    ft_image_store_sample_images(store, 1, &count);
    CHECK_INT(count, 0);
    refs = ft_image_store_sample_images(store, 2, &count);
    CHECK(count == 1 && refs[0] == 0);
    ft_image_store_close(store);
    unlink(path);
    free(path);
}

TEST(an_empty_store_holds_samples_without_images)
{
    char *path = temp_path();
    ft_image_store_writer *writer;
    CHECK_INT(ft_image_store_writer_open(path, FT_IMAGE_LAYOUT_PATCHES, ROW_LENGTH, &writer), 0);
    CHECK_INT(ft_image_store_writer_add_sample(writer, NULL, 0), 0);
    CHECK_INT(ft_image_store_writer_finish(writer), 0);
    ft_image_store *store;
    CHECK_INT(ft_image_store_open(path, &store), 0);
    CHECK_INT(ft_image_store_n_images(store), 0);
    CHECK_INT(ft_image_store_n_samples(store), 1);
    ft_image_store_close(store);
    unlink(path);
    free(path);
}

/* CLIP images are one row each: two 2 x 3 images in rows of 3 x 2 x 3 floats. */
TEST(clip_images_are_one_row_each)
{
    char *path = temp_path();
    float a[18], b[18];
    for (int i = 0; i < 18; i++) {
        a[i] = (float)i;
        b[i] = -(float)i;
    }
    ft_image_store_writer *writer;
    CHECK_INT(ft_image_store_writer_open(path, FT_IMAGE_LAYOUT_CLIP, 18, &writer), 0);
    ft_stored_image image_a = {{1, 2}, 1, 2, 3, a}, image_b = {{3, 4}, 1, 2, 3, b}, wrong = {{5, 6}, 1, 3, 3, a};
    CHECK_INT(ft_image_store_writer_add_image(writer, &image_a), 0);
    CHECK_INT(ft_image_store_writer_add_image(writer, &image_b), 1);
    CHECK_INT(ft_image_store_writer_add_image(writer, &wrong), -1);
    CHECK(strstr(ft_error_message(), "a CLIP image of 1 x 3 x 3 in rows of 18 floats") != NULL);
    const uint32_t both[] = {1, 0};
    CHECK_INT(ft_image_store_writer_add_sample(writer, both, 2), 0);
    CHECK_INT(ft_image_store_writer_finish(writer), 0);
    ft_image_store *store;
    CHECK_INT(ft_image_store_open(path, &store), 0);
    CHECK_INT(ft_image_store_layout(store), FT_IMAGE_LAYOUT_CLIP);
    CHECK_INT(ft_image_store_row_length(store), 18);
    ft_stored_image image;
    ft_image_store_image(store, 1, &image);
    CHECK_INT(image.grid_t * 100 + image.grid_h * 10 + image.grid_w, 123);
    CHECK(image.pixels[0] == 0.0f && image.pixels[17] == -17.0f);
    CHECK_INT(ft_image_layout_rows(FT_IMAGE_LAYOUT_CLIP, 1, 336, 336), 1);
    CHECK_INT(ft_image_layout_rows(FT_IMAGE_LAYOUT_PATCHES, 1, 4, 6), 24);
    ft_image_store_close(store);
    unlink(path);
    free(path);
}

static void patch_bytes(const char *path, long at, const void *bytes, size_t count)
{
    FILE *file = fopen(path, "r+b");
    fseek(file, at, SEEK_SET);
    fwrite(bytes, 1, count, file);
    fclose(file);
}

/* The layout written above: pixels at 64 (6 rows x 4 floats), images at 192,
 * sample offsets at 320, image refs at 384, 396 bytes in all. */
static void truncate_file(const char *path) { CHECK_INT(truncate(path, 390), 0); }
static void break_magic(const char *path) { patch_bytes(path, 0, "FTIMAGEZ", 8); }
static void future_version(const char *path)
{
    uint32_t version = 9;
    patch_bytes(path, 8, &version, 4);
}
static void overlapping_images(const char *path)
{
    uint64_t first_row = 3; /* image B starts inside image A */
    patch_bytes(path, 192 + 40 + 32, &first_row, 8);
}
static void empty_grid(const char *path)
{
    uint32_t zero = 0;
    patch_bytes(path, 192 + 16, &zero, 4);
}
static void decreasing_offsets(const char *path)
{
    uint64_t offset = 1; /* offsets 0, 2, 1, 3 */
    patch_bytes(path, 320 + 16, &offset, 8);
}
static void unknown_image(const char *path)
{
    uint32_t index = 9;
    patch_bytes(path, 384, &index, 4);
}
static void unknown_layout(const char *path)
{
    uint32_t layout = 7;
    patch_bytes(path, 48, &layout, 4);
}
static void clip_layout_on_patches(const char *path)
{
    uint32_t layout = FT_IMAGE_LAYOUT_CLIP; /* rows of 4 floats cannot hold a 3 x 2 x 2 image */
    patch_bytes(path, 48, &layout, 4);
}
static void huge_count(const char *path)
{
    uint64_t n_rows = (uint64_t)1 << 62;
    patch_bytes(path, 24, &n_rows, 8);
}

/* A store written before the layout field (version 1, zeros there) still reads as patches. */
TEST(version_1_files_hold_patches)
{
    char *path = temp_path();
    write_store(path);
    uint32_t version = 1;
    patch_bytes(path, 8, &version, 4);
    ft_image_store *store;
    CHECK_INT(ft_image_store_open(path, &store), 0);
    CHECK_INT(ft_image_store_layout(store), FT_IMAGE_LAYOUT_PATCHES);
    CHECK_INT(ft_image_store_n_images(store), 2);
    ft_image_store_close(store);
    unlink(path);
    free(path);
}

TEST(refuses_damaged_files_naming_them)
{
    static const struct {
        void (*damage)(const char *path);
        const char *message;
    } cases[] = {
        {truncate_file, "file size does not match its counts"},
        {break_magic, "no FTIMAGES magic"},
        {future_version, "image store version 9; this ftpipe reads versions 1 to 2 (re-run the tokenize stage)"},
        {overlapping_images, "image rows do not follow one another within the pixels"},
        {empty_grid, "an image has an empty grid"},
        {decreasing_offsets, "sample offsets decrease"},
        {unknown_image, "a sample names an image the store lacks"},
        {huge_count, "counts larger than the file"},
        {unknown_layout, "an unknown layout"},
        {clip_layout_on_patches, "a CLIP image's size differs from its row"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = temp_path();
        write_store(path);
        cases[i].damage(path);
        ft_image_store *store = NULL;
        CHECK_INT(ft_image_store_open(path, &store), -1);
        CHECK(strstr(ft_error_message(), cases[i].message) != NULL);
        CHECK(strncmp(ft_error_message(), path, strlen(path)) == 0);
        if (strstr(ft_error_message(), cases[i].message) == NULL)
            fprintf(stderr, "  case %zu said: %s\n", i, ft_error_message());
        unlink(path);
        free(path);
    }
    CHECK_INT(ft_image_store_open("/nonexistent/images.bin", &(ft_image_store *){NULL}), -1);
    CHECK(strstr(ft_error_message(), "cannot open image store /nonexistent/images.bin") != NULL);
}

int main(void)
{
    RUN(round_trip);
    RUN(an_empty_store_holds_samples_without_images);
    RUN(clip_images_are_one_row_each);
    RUN(version_1_files_hold_patches);
    RUN(refuses_damaged_files_naming_them);
    return check_done();
}
