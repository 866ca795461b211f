/* image_orientation: the EXIF tag read from either byte order, malformed blocks
 * read as upright, and each transposition moving the corners where Pillow's
 * exif_transpose moves them. */
#include <string.h>

#include "check.h"
#include "ftpipe/formats/image_orientation.h"

TEST(reads_the_orientation_in_either_byte_order)
{
    /* header, IFD0 at 8 with two entries: 0x0100 (ignored), then 0x0112 SHORT 1 value */
    const uint8_t little[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 2, 0,
                              0x00, 0x01, 3, 0, 1, 0, 0, 0, 9, 0, 0, 0,
                              0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0};
    const uint8_t big[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1,
                           0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 8, 0, 0};
    CHECK_INT(ft_exif_orientation(little, sizeof little), 6);
    CHECK_INT(ft_exif_orientation(big, sizeof big), 8);
}

TEST(malformed_or_missing_tags_read_as_upright)
{
    const uint8_t no_tag[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x00, 0x01, 3, 0, 1, 0, 0, 0, 9, 0, 0, 0};
    const uint8_t cut[] = {'I', 'I', 42, 0, 8, 0, 0, 0, 2, 0, 0x12, 0x01, 3, 0};
    const uint8_t out_of_range[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 9, 0, 0};
    const uint8_t bad_offset[] = {'I', 'I', 42, 0, 0xff, 0xff, 0, 0};
    CHECK_INT(ft_exif_orientation(no_tag, sizeof no_tag), 1);
    CHECK_INT(ft_exif_orientation(cut, sizeof cut), 1);
    CHECK_INT(ft_exif_orientation(out_of_range, sizeof out_of_range), 1);
    CHECK_INT(ft_exif_orientation(bad_offset, sizeof bad_offset), 1);
    CHECK_INT(ft_exif_orientation((const uint8_t *)"Exif", 4), 1);
}

/* A 3 x 2 image whose pixel at (x, y) has red 10 * y + x. */
static ft_image numbered(void)
{
    ft_image image;
    ft_image_alloc(&image, 3, 2);
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            memset(image.rgb + (y * 3 + x) * 3, 10 * y + x, 3);
    return image;
}

TEST(transposes_as_pillow)
{
    /* the output's rows, read left to right, for orientations 2..8 (as Pillow's
     * Image.transpose gives them) of
     *     0  1  2
     *    10 11 12 */
    static const struct {
        int orientation, width;
        int values[6];
    } cases[] = {
        {2, 3, {2, 1, 0, 12, 11, 10}},  {3, 3, {12, 11, 10, 2, 1, 0}}, {4, 3, {10, 11, 12, 0, 1, 2}},
        {5, 2, {0, 10, 1, 11, 2, 12}},  {6, 2, {10, 0, 11, 1, 12, 2}}, {7, 2, {12, 2, 11, 1, 10, 0}},
        {8, 2, {2, 12, 1, 11, 0, 10}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ft_image image = numbered();
        ft_image_apply_orientation(&image, cases[i].orientation);
        CHECK_INT(image.width, cases[i].width);
        CHECK_INT(image.height, 6 / cases[i].width);
        for (int k = 0; k < 6; k++)
            CHECK_INT(image.rgb[k * 3], cases[i].values[k]);
        ft_image_free(&image);
    }
}

int main(void)
{
    RUN(reads_the_orientation_in_either_byte_order);
    RUN(malformed_or_missing_tags_read_as_upright);
    RUN(transposes_as_pillow);
    return check_done();
}
