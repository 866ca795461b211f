/* image_table: each distinct image (by its file's hash) preprocessed once, its
 * token count from its grid, its pixels those of ft_qwen2vl_preprocess (or of
 * ft_clip_preprocess, one row an image, for LLaVA), and an
 * unreadable image an error naming it that leaves the table usable. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/image.h"
#include "ftpipe/formats/image_table.h"

#define IMAGES "tests/fixtures/vision/images"

static char *temp_dir(void)
{
    char *dir = ft_xstrdup("/tmp/ftpipe-test-image-table.XXXXXX");
    if (!mkdtemp(dir))
        abort();
    return dir;
}

static void copy_file(const char *from, const char *to)
{
    char *data;
    size_t length;
    CHECK_INT(ft_read_file(from, &data, &length), 0);
    CHECK_INT(ft_write_file_atomic(to, data, length), 0);
    free(data);
}

TEST(each_distinct_image_once_with_its_tokens_and_pixels)
{
    char *dir = temp_dir();
    char *scratch = ft_path_join(dir, "pixels.scratch"), *copy = ft_path_join(dir, "same.jpg");
    copy_file(IMAGES "/rgb_odd.jpg", copy);
    ft_qwen2vl_image_options options;
    ft_qwen2vl_image_options_default(&options);
    options.max_pixels = 1003520; /* as tests/fixtures/vision/cases.txt */
    ft_image_table *table;
    CHECK_INT(ft_image_table_open(scratch, &options, &table), 0);
    uint32_t a = 99, b = 99, again = 99, same = 99;
    CHECK_INT(ft_image_table_add(table, IMAGES "/rgb_odd.jpg", &a), 0);
    CHECK_INT(ft_image_table_add(table, IMAGES "/exif6.jpg", &b), 0);
    CHECK_INT(ft_image_table_add(table, IMAGES "/rgb_odd.jpg", &again), 0);
    CHECK_INT(ft_image_table_add(table, copy, &same), 0); /* another name, the same bytes */
    CHECK(a == 0 && b == 1 && again == 0 && same == 0);
    CHECK_INT(ft_image_table_count(table), 2);
    CHECK_INT(ft_image_table_row_length(table), 3 * 2 * 14 * 14);
    /* cases.txt: rgb_odd gives grid 1 x 4 x 6, exif6 1 x 6 x 4: 24 / 2^2 tokens each */
    CHECK_INT(ft_image_table_tokens(table, a), 6);
    CHECK_INT(ft_image_table_tokens(table, b), 6);
    CHECK_INT(ft_image_table_seal(table), 0);
    ft_stored_image stored;
    ft_image_table_image(table, b, &stored);
    CHECK(stored.grid_t == 1 && stored.grid_h == 6 && stored.grid_w == 4);
    ft_image image;
    ft_vision_pixels pixels;
    CHECK_INT(ft_image_read_file(IMAGES "/exif6.jpg", &image), 0);
    CHECK_INT(ft_llamafactory_regularize_image(&image, options.image_min_pixels, options.image_max_pixels, 1, "x"), 0);
    CHECK_INT(ft_qwen2vl_preprocess(&image, &options, "x", &pixels), 0);
    CHECK(memcmp(stored.pixels, pixels.pixel_values, (size_t)pixels.n_rows * pixels.row_length * sizeof(float)) == 0);
    ft_vision_pixels_free(&pixels);
    ft_image_free(&image);
    ft_image_table_free(table);
    CHECK(!ft_path_exists(scratch)); /* the scratch file goes with the table */
    ft_remove_tree(dir);
    free(scratch);
    free(copy);
    free(dir);
}

/* LLaVA: each image one row of ft_clip_preprocess's channel-first pixels, its
 * token count the model's, whatever the image's size. */
TEST(clip_images_are_one_row_of_the_clip_processor)
{
    char *dir = temp_dir();
    char *scratch = ft_path_join(dir, "pixels.scratch");
    ft_clip_image_options options;
    ft_clip_image_options_default(&options);
    ft_image_table *table;
    CHECK_INT(ft_image_table_open_clip(scratch, &options, 576, &table), 0);
    CHECK_INT(ft_image_table_layout(table), FT_IMAGE_LAYOUT_CLIP);
    CHECK_INT(ft_image_table_row_length(table), 3 * 336 * 336);
    uint32_t a = 99, b = 99;
    CHECK_INT(ft_image_table_add(table, IMAGES "/rgb_odd.jpg", &a), 0);
    CHECK_INT(ft_image_table_add(table, IMAGES "/tiny.png", &b), 0);
    CHECK(a == 0 && b == 1);
    CHECK_INT(ft_image_table_tokens(table, a), 576);
    CHECK_INT(ft_image_table_tokens(table, b), 576);
    CHECK_INT(ft_image_table_seal(table), 0);
    ft_stored_image stored;
    ft_image_table_image(table, b, &stored);
    CHECK(stored.grid_t == 1 && stored.grid_h == 336 && stored.grid_w == 336);
    ft_image image;
    ft_vision_pixels pixels;
    CHECK_INT(ft_image_read_file(IMAGES "/tiny.png", &image), 0);
    CHECK_INT(ft_clip_preprocess(&image, &options, "x", &pixels), 0);
    CHECK(memcmp(stored.pixels, pixels.pixel_values, (size_t)3 * 336 * 336 * sizeof(float)) == 0);
    ft_vision_pixels_free(&pixels);
    ft_image_free(&image);
    ft_image_table_free(table);
    CHECK_INT(ft_image_table_open_clip(scratch, &options, 0, &table), -1);
    CHECK_STR(ft_error_message(), "an image must take at least one token");
    ft_remove_tree(dir);
    free(scratch);
    free(dir);
}

TEST(an_unreadable_image_is_an_error_naming_it)
{
    char *dir = temp_dir();
    char *scratch = ft_path_join(dir, "pixels.scratch"), *broken = ft_path_join(dir, "broken.png");
    CHECK_INT(ft_write_file_atomic(broken, "not a picture", 13), 0);
    ft_qwen2vl_image_options options;
    ft_qwen2vl_image_options_default(&options);
    ft_image_table *table;
    CHECK_INT(ft_image_table_open(scratch, &options, &table), 0);
    uint32_t index;
    CHECK_INT(ft_image_table_add(table, broken, &index), -1);
    CHECK(strstr(ft_error_message(), "broken.png") != NULL);
    CHECK_INT(ft_image_table_add(table, dir, &index), -1); /* a folder */
    CHECK_INT(ft_image_table_add(table, IMAGES "/tiny.png", &index), 0);
    CHECK_INT(index, 0);
    CHECK_INT(ft_image_table_count(table), 1);
    CHECK_INT(ft_image_table_seal(table), 0);
    ft_image_table_free(table);
    ft_remove_tree(dir);
    free(scratch);
    free(broken);
    free(dir);
}

int main(void)
{
    RUN(each_distinct_image_once_with_its_tokens_and_pixels);
    RUN(clip_images_are_one_row_of_the_clip_processor);
    RUN(an_unreadable_image_is_an_error_naming_it);
    return check_done();
}
