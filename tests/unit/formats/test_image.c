/* image: every fixture image decodes to exactly the RGB Pillow gives
 * (ImageOps.exif_transpose + convert("RGB"); tests/fixtures/vision/make_fixtures.py),
 * and broken files are errors that name the file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/formats/image.h"

/* tests/oracle/check_vision_preprocess.py points this at fixtures it made live. */
static const char *fixtures(void)
{
    const char *folder = getenv("FTPIPE_VISION_FIXTURES");
    return folder && *folder ? folder : "tests/fixtures/vision";
}

/* The largest per-sample difference between the image and Pillow's decode; -1 on a size mismatch. */
static int difference_from_pillow(const char *file, const char *name, int *width, int *height)
{
    char path[256], expected_path[256];
    snprintf(path, sizeof path, "%s/images/%s", fixtures(), file);
    snprintf(expected_path, sizeof expected_path, "%s/decoded/%s.png", fixtures(), name);
    ft_image image, expected;
    if (ft_image_read_file(path, &image) != 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        return 999;
    }
    if (ft_image_read_file(expected_path, &expected) != 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        ft_image_free(&image);
        return 999;
    }
    int largest = -1;
    if (image.width == expected.width && image.height == expected.height) {
        largest = 0;
        for (size_t i = 0; i < (size_t)image.width * image.height * 3; i++) {
            int d = abs(image.rgb[i] - expected.rgb[i]);
            largest = d > largest ? d : largest;
        }
    } else {
        fprintf(stderr, "  %s is %d x %d, Pillow's %d x %d\n", file, image.width, image.height, expected.width,
                expected.height);
    }
    *width = image.width;
    *height = image.height;
    ft_image_free(&image);
    ft_image_free(&expected);
    return largest;
}

TEST(decodes_jpeg_png_and_webp_as_pillow)
{
    static const char *const files[][2] = {
        {"rgb_odd.jpg", "rgb_odd"},       {"rgb_odd_png.png", "rgb_odd_png"}, {"rgba.png", "rgba"},
        {"palette.png", "palette"},       {"grey.png", "grey"},               {"grey_jpg.jpg", "grey_jpg"},
        {"grey_alpha.png", "grey_alpha"}, {"lossy.webp", "lossy"},            {"alpha_lossless.webp", "alpha_lossless"},
        {"tiny.png", "tiny"},             {"narrow.png", "narrow"},           {"large.jpg", "large"},
    };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        int width, height;
        int largest = difference_from_pillow(files[i][0], files[i][1], &width, &height);
        if (largest != 0)
            fprintf(stderr, "  %s: largest difference from Pillow %d\n", files[i][0], largest);
        CHECK_INT(largest, 0);
    }
}

TEST(applies_every_exif_orientation_in_jpeg_png_and_webp)
{
    for (int orientation = 2; orientation <= 8; orientation++) {
        char file[32], name[32];
        snprintf(file, sizeof file, "exif%d.jpg", orientation);
        snprintf(name, sizeof name, "exif%d", orientation);
        int width, height;
        CHECK_INT(difference_from_pillow(file, name, &width, &height), 0);
        /* stored 45 x 31; orientations 5..8 turn it a quarter */
        CHECK_INT(width, orientation >= 5 ? 31 : 45);
    }
    int width, height;
    CHECK_INT(difference_from_pillow("exif6_png.png", "exif6_png", &width, &height), 0);
    CHECK_INT(width, 53);
    CHECK_INT(difference_from_pillow("exif8_webp.webp", "exif8_webp", &width, &height), 0);
    CHECK_INT(width, 29);
}

/* The first n_bytes of a fixture, decoded; the error message is left for the caller. */
static int decode_prefix(const char *file, size_t n_bytes, const char *name)
{
    char path[256], *bytes;
    size_t length;
    snprintf(path, sizeof path, "%s/images/%s", fixtures(), file);
    if (ft_read_file(path, &bytes, &length) != 0)
        return 999;
    ft_image image;
    int status = ft_image_decode((const uint8_t *)bytes, n_bytes < length ? n_bytes : length, name, &image);
    if (status == 0)
        ft_image_free(&image);
    free(bytes);
    return status;
}

TEST(truncated_images_are_errors_naming_the_file)
{
    static const char *const files[] = {"rgb_odd.jpg", "rgb_odd_png.png", "lossy.webp"};
    static const char *const kinds[] = {"JPEG", "PNG", "WebP"};
    for (int i = 0; i < 3; i++) {
        CHECK_INT(decode_prefix(files[i], 300, "data/img/cut.bin"), -1);
        CHECK(strstr(ft_error_message(), "image 'data/img/cut.bin'") != NULL);
        CHECK(strstr(ft_error_message(), kinds[i]) != NULL);
        CHECK(strstr(ft_error_message(), "corrupt") != NULL);
    }
}

TEST(other_files_are_errors_saying_what_is_supported)
{
    ft_image image;
    const uint8_t gif[] = "GIF89a\x01\x00\x01\x00";
    CHECK_INT(ft_image_decode(gif, sizeof gif - 1, "a.gif", &image), -1);
    CHECK(strstr(ft_error_message(), "image 'a.gif' is not a JPEG, PNG or WebP file") != NULL);
    CHECK_INT(ft_image_decode(gif, 0, "empty.jpg", &image), -1);
    CHECK(strstr(ft_error_message(), "image 'empty.jpg' is an empty file") != NULL);
    char missing[256];
    snprintf(missing, sizeof missing, "%s/images/no_such.jpg", fixtures());
    CHECK_INT(ft_image_read_file(missing, &image), -1);
    CHECK(strstr(ft_error_message(), "no_such.jpg") != NULL);
    CHECK(strstr(ft_error_message(), "No such file") != NULL);
}

int main(void)
{
    RUN(decodes_jpeg_png_and_webp_as_pillow);
    RUN(applies_every_exif_orientation_in_jpeg_png_and_webp);
    RUN(truncated_images_are_errors_naming_the_file);
    RUN(other_files_are_errors_saying_what_is_supported);
    return check_done();
}
