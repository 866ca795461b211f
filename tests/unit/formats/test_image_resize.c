/* image_resize: Pillow's bicubic resize, sample for sample, on the fixtures
 * tests/fixtures/vision/make_fixtures.py wrote (resized/NAME_WxH.png). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/formats/image.h"
#include "ftpipe/formats/image_resize.h"

/* tests/oracle/check_vision_preprocess.py points this at fixtures it made live. */
static const char *fixtures(void)
{
    const char *folder = getenv("FTPIPE_VISION_FIXTURES");
    return folder && *folder ? folder : "tests/fixtures/vision";
}

TEST(resizes_exactly_as_pillow_bicubic)
{
    static const struct {
        const char *name;
        int width, height;
    } cases[] = {
        {"rgb_odd_png", 31, 20},  /* shrinking both ways: antialiased */
        {"rgb_odd_png", 200, 143}, /* enlarging */
        {"rgb_odd_png", 83, 17},  /* height only */
        {"rgb_odd_png", 40, 59},  /* width only */
        {"narrow", 28, 300},      {"tiny", 3, 2},
        {"rgb_odd_png", 80, 20},  /* height shrinks by over twice what width does: vertical pass first */
        {"rgb_odd_png", 73, 39},  /* by exactly twice: horizontal first */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char source[256], expected_path[256];
        snprintf(source, sizeof source, "%s/decoded/%s.png", fixtures(), cases[i].name);
        snprintf(expected_path, sizeof expected_path, "%s/resized/%s_%dx%d.png", fixtures(), cases[i].name,
                 cases[i].width, cases[i].height);
        ft_image image, expected, resized;
        CHECK_INT(ft_image_read_file(source, &image), 0);
        CHECK_INT(ft_image_read_file(expected_path, &expected), 0);
        if (!image.rgb || !expected.rgb) {
            fprintf(stderr, "  %s\n", ft_error_message());
            ft_image_free(&image);
            ft_image_free(&expected);
            continue;
        }
        ft_image_resize_bicubic(&image, cases[i].width, cases[i].height, &resized);
        CHECK_INT(resized.width, expected.width);
        CHECK_INT(resized.height, expected.height);
        int largest = 0;
        for (size_t k = 0; k < (size_t)resized.width * resized.height * 3; k++) {
            int d = abs(resized.rgb[k] - expected.rgb[k]);
            largest = d > largest ? d : largest;
        }
        if (largest)
            fprintf(stderr, "  %s to %d x %d: largest difference from Pillow %d\n", cases[i].name, cases[i].width,
                    cases[i].height, largest);
        CHECK_INT(largest, 0);
        ft_image_free(&image);
        ft_image_free(&expected);
        ft_image_free(&resized);
    }
}

TEST(same_size_is_a_copy)
{
    ft_image image, copy;
    ft_image_alloc(&image, 5, 4);
    for (int i = 0; i < 5 * 4 * 3; i++)
        image.rgb[i] = (uint8_t)(i * 37);
    ft_image_resize_bicubic(&image, 5, 4, &copy);
    CHECK(memcmp(image.rgb, copy.rgb, 5 * 4 * 3) == 0);
    ft_image_free(&image);
    ft_image_free(&copy);
}

int main(void)
{
    RUN(resizes_exactly_as_pillow_bicubic);
    RUN(same_size_is_a_copy);
    return check_done();
}
