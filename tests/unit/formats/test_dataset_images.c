/* dataset_images: placeholders counted across messages, paths found in the
 * dataset folder first and as written second, and every mismatch an error
 * naming the image (test_dataset checks the file and record put before it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/formats/dataset_images.h"

/* The vision fixtures' images folder plays the dataset folder. */
#define FOLDER "tests/fixtures/vision"

static const ft_message two_images[] = {
    {FT_ROLE_USER, "<image>Who are they?<image>"},
    {FT_ROLE_ASSISTANT, "Two <imag> placeholders are not written like this."},
};

TEST(counts_placeholders_across_messages)
{
    const ft_message messages[] = {{FT_ROLE_SYSTEM, "no image"}, {FT_ROLE_USER, "<image><image>x<image>"},
                                   {FT_ROLE_ASSISTANT, "an <image> in an answer counts too"}};
    CHECK_INT(ft_count_image_placeholders(messages, 3), 4);
    CHECK_INT(ft_count_image_placeholders(two_images, 2), 2);
    CHECK_INT(ft_count_image_placeholders(messages, 1), 0);
}

TEST(finds_images_in_the_dataset_folder_then_as_written)
{
    const char *names[] = {"images/rgb_odd.jpg", FOLDER "/images/palette.png"};
    ft_record_images images;
    CHECK_INT(ft_record_images_resolve(names, 2, two_images, 2, FOLDER, &images), 0);
    CHECK_INT(images.count, 2);
    if (images.count == 2) {
        CHECK_STR(images.paths[0], FOLDER "/images/rgb_odd.jpg");
        CHECK_STR(images.paths[1], FOLDER "/images/palette.png");
    }
    ft_record_images_free(&images);
}

TEST(a_count_mismatch_gives_both_counts)
{
    const char *names[] = {"images/rgb_odd.jpg"};
    ft_record_images images;
    CHECK_INT(ft_record_images_resolve(names, 1, two_images, 2, FOLDER, &images), -1);
    CHECK_STR(ft_error_message(), "2 <image> placeholders in the messages but 1 image in "
                                  "\"images\": each image needs one <image> where it belongs in the text");
    CHECK_INT(images.count, 0);
}

TEST(a_missing_image_is_named)
{
    const char *names[] = {"images/rgb_odd.jpg", "images/gone.jpg"};
    ft_record_images images;
    CHECK_INT(ft_record_images_resolve(names, 2, two_images, 2, FOLDER, &images), -1);
    CHECK(strstr(ft_error_message(), "image 2 'images/gone.jpg' is not a file") != NULL);
    CHECK(strstr(ft_error_message(), FOLDER) != NULL);
    CHECK_INT(images.count, 0);
    const char *folder_not_file[] = {"images", "images/rgb_odd.jpg"};
    CHECK_INT(ft_record_images_resolve(folder_not_file, 2, two_images, 2, FOLDER, &images), -1);
    CHECK(strstr(ft_error_message(), "image 1 'images' is not a file") != NULL);
    const char *empty[] = {"", "images/rgb_odd.jpg"};
    CHECK_INT(ft_record_images_resolve(empty, 2, two_images, 2, FOLDER, &images), -1);
    CHECK(strstr(ft_error_message(), "image 1 is empty") != NULL);
}

int main(void)
{
    RUN(counts_placeholders_across_messages);
    RUN(finds_images_in_the_dataset_folder_then_as_written);
    RUN(a_count_mismatch_gives_both_counts);
    RUN(a_missing_image_is_named);
    return check_done();
}
