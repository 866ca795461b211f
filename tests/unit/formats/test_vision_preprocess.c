/* vision_preprocess: smart_resize as transformers computes it, and the pixel
 * values of Qwen2VLImageProcessor and CLIPImageProcessor (after LLaMA-Factory's
 * regularisation) for the fixture images in tests/fixtures/vision/cases.txt,
 * which make_fixtures.py wrote from the Hugging Face processors themselves. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/formats/image.h"
#include "ftpipe/formats/vision_preprocess.h"

/* tests/oracle/check_vision_preprocess.py points this at fixtures it made live. */
static const char *fixtures(void)
{
    const char *folder = getenv("FTPIPE_VISION_FIXTURES");
    return folder && *folder ? folder : "tests/fixtures/vision";
}
/* The tolerance; one 8-bit level is about 0.015 after normalisation, so
 * anything but Pillow's exact rounding fails it. */
#define TOLERANCE 1e-2

TEST(smart_resize_matches_transformers)
{
    /* height, width, min_pixels, max_pixels -> height, width (from transformers 4.57) */
    static const int cases[][6] = {
        {61, 97, 3136, 1003520, 56, 84},       {28, 28, 3136, 1003520, 56, 56},
        {42, 70, 3136, 1003520, 56, 56},       /* 1.5 -> 2 and 2.5 -> 2: Python rounds halves to even */
        {70, 70, 3136, 1003520, 56, 56},       {98, 98, 3136, 1003520, 112, 112},
        {1000, 800, 3136, 1003520, 1008, 812}, {4000, 3000, 3136, 1003520, 1148, 840},
        {10, 1999, 3136, 1003520, 28, 812},    {14, 14, 3136, 1003520, 56, 56},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int height = 0, width = 0;
        CHECK_INT(ft_qwen2vl_smart_resize(cases[i][0], cases[i][1], 28, cases[i][2], cases[i][3], "x", &height,
                                          &width),
                  0);
        CHECK_INT(height, cases[i][4]);
        CHECK_INT(width, cases[i][5]);
    }
}

TEST(smart_resize_refuses_an_aspect_over_200_naming_the_image)
{
    int height, width;
    CHECK_INT(ft_qwen2vl_smart_resize(5, 1005, 28, 3136, 1003520, "data/strip.png", &height, &width), -1);
    CHECK(strstr(ft_error_message(), "image 'data/strip.png' is 1005 x 5 pixels") != NULL);
    CHECK(strstr(ft_error_message(), "under 200") != NULL);
}

/* Compares pixels with the processor's, stored as 8-bit levels per channel. */
static double largest_difference(const ft_vision_pixels *pixels, const char *case_name, const float mean[3],
                                 const float std[3], int qwen)
{
    char path[256];
    snprintf(path, sizeof path, "%s/expected/%s.png", fixtures(), case_name);
    ft_image expected;
    if (ft_image_read_file(path, &expected) != 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        return INFINITY;
    }
    /* Qwen: one PNG row per output row; CLIP: each channel's rows after the other's */
    int64_t rows = qwen ? pixels->n_rows : 3 * pixels->grid_h;
    int64_t columns = qwen ? pixels->row_length : pixels->grid_w;
    if (expected.height != rows || expected.width != columns) {
        fprintf(stderr, "  %s: %lld x %lld values, the processor's %d x %d\n", case_name, (long long)rows,
                (long long)columns, expected.height, expected.width);
        ft_image_free(&expected);
        return INFINITY;
    }
    double largest = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < columns; c++) {
            int channel = qwen ? (int)(c / (columns / 3)) : (int)(r / pixels->grid_h);
            uint8_t level = expected.rgb[(r * columns + c) * 3];
            double want = (level / 255.0 - mean[channel]) / std[channel];
            double d = fabs(pixels->pixel_values[r * columns + c] - want);
            largest = d > largest ? d : largest;
        }
    ft_image_free(&expected);
    return largest;
}

TEST(pixel_values_match_the_hugging_face_processors)
{
    char cases_path[256];
    snprintf(cases_path, sizeof cases_path, "%s/cases.txt", fixtures());
    FILE *cases = fopen(cases_path, "r");
    CHECK(cases != NULL);
    if (!cases)
        return;
    char line[512];
    int n_cases = 0;
    while (fgets(line, sizeof line, cases)) {
        char name[64], file[64], kind[16];
        long long a, b, c, d;
        int grid_t, grid_h, grid_w;
        if (sscanf(line, "%63s %63s %15s %lld %lld %lld %lld %d %d %d", name, file, kind, &a, &b, &c, &d, &grid_t,
                   &grid_h, &grid_w) != 10) {
            fprintf(stderr, "  cases.txt: cannot read \"%s\"\n", line);
            CHECK(0);
            continue;
        }
        char path[256];
        snprintf(path, sizeof path, "%s/images/%s", fixtures(), file);
        ft_image image;
        if (ft_image_read_file(path, &image) != 0) {
            fprintf(stderr, "  %s\n", ft_error_message());
            CHECK(0);
            continue;
        }
        ft_vision_pixels pixels;
        double largest;
        int qwen = strcmp(kind, "qwen2vl") == 0;
        if (qwen) {
            ft_qwen2vl_image_options options;
            ft_qwen2vl_image_options_default(&options);
            options.image_min_pixels = a;
            options.image_max_pixels = b;
            options.min_pixels = c;
            options.max_pixels = d;
            CHECK_INT(ft_qwen2vl_preprocess(&image, &options, path, &pixels), 0);
            CHECK_INT(pixels.row_length, 3 * 2 * 14 * 14);
            CHECK_INT(ft_qwen2vl_image_tokens(&pixels, 2), (int64_t)grid_t * grid_h * grid_w / 4);
            largest = largest_difference(&pixels, name, options.mean, options.std, 1);
        } else {
            ft_clip_image_options options;
            ft_clip_image_options_default(&options);
            options.image_min_pixels = a;
            options.image_max_pixels = b;
            options.shortest_edge = (int)c;
            options.crop_height = options.crop_width = (int)d;
            CHECK_INT(ft_clip_preprocess(&image, &options, path, &pixels), 0);
            largest = largest_difference(&pixels, name, options.mean, options.std, 0);
        }
        CHECK_INT(pixels.grid_t, grid_t);
        CHECK_INT(pixels.grid_h, grid_h);
        CHECK_INT(pixels.grid_w, grid_w);
        /* every case's difference is printed: the oracle script reads these lines */
        fprintf(stderr, "  case %s: largest difference from the processor %g\n", name, largest);
        CHECK(largest <= TOLERANCE);
        ft_vision_pixels_free(&pixels);
        ft_image_free(&image);
        n_cases++;
    }
    fclose(cases);
    CHECK(n_cases >= 15);
}

TEST(clip_refuses_a_crop_larger_than_the_resize)
{
    ft_image image;
    ft_image_alloc(&image, 40, 30);
    memset(image.rgb, 7, 40 * 30 * 3);
    ft_clip_image_options options;
    ft_clip_image_options_default(&options);
    options.crop_height = 400;
    ft_vision_pixels pixels;
    CHECK_INT(ft_clip_preprocess(&image, &options, "x.png", &pixels), -1);
    CHECK(strstr(ft_error_message(), "crop_size") != NULL);
    ft_image_free(&image);
}

TEST(images_too_thin_or_too_elongated_are_errors_naming_them)
{
    ft_image strip;
    ft_image_alloc(&strip, 1, 600000);
    memset(strip.rgb, 90, (size_t)600000 * 3);
    ft_vision_pixels pixels;
    ft_qwen2vl_image_options qwen;
    ft_qwen2vl_image_options_default(&qwen);
    /* over image_max_pixels, its one column would shrink to none (Pillow raises too) */
    CHECK_INT(ft_qwen2vl_preprocess(&strip, &qwen, "data/strip.png", &pixels), -1);
    CHECK(strstr(ft_error_message(), "image 'data/strip.png' is 1 x 600000 pixels: it is too thin") != NULL);
    ft_image_free(&strip);
    ft_image_alloc(&strip, 1, 40000);
    memset(strip.rgb, 90, (size_t)40000 * 3);
    ft_clip_image_options clip;
    ft_clip_image_options_default(&clip);
    /* its short side to 336 would make it 336 x 13440000 */
    CHECK_INT(ft_clip_preprocess(&strip, &clip, "data/strip.png", &pixels), -1);
    CHECK(strstr(ft_error_message(), "would be 336 x 13440000, too large") != NULL);
    ft_image_free(&strip);
}

int main(void)
{
    RUN(smart_resize_matches_transformers);
    RUN(smart_resize_refuses_an_aspect_over_200_naming_the_image);
    RUN(pixel_values_match_the_hugging_face_processors);
    RUN(clip_refuses_a_crop_larger_than_the_resize);
    RUN(images_too_thin_or_too_elongated_are_errors_naming_them);
    return check_done();
}
