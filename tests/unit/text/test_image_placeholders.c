/* image_placeholders: <image> replaced in every message in order, and pads
 * widened in place to each image's token count, in order across calls. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/text/image_placeholders.h"

static const ft_image_tokens tokens = {"<s>", "<p>", "<e>"};

TEST(replaces_each_placeholder_with_start_pad_end)
{
    const ft_message messages[] = {{FT_ROLE_SYSTEM, "sys"}, {FT_ROLE_USER, "<image>a<image>"},
                                   {FT_ROLE_ASSISTANT, "b<imag>"}, {FT_ROLE_USER, ""}};
    ft_message *out = ft_image_placeholders_replace(messages, 4, &tokens);
    CHECK_STR(out[0].content, "sys");
    CHECK_STR(out[1].content, "<s><p><e>a<s><p><e>");
    CHECK_STR(out[2].content, "b<imag>");
    CHECK_STR(out[3].content, "");
    CHECK_INT(out[1].role, FT_ROLE_USER);
    free(out);
}

TEST(widens_pads_in_order_across_segments)
{
    const uint32_t n_tokens[] = {3, 1, 2};
    ft_image_pad_widening widening = {.pad_id = 9, .n_tokens = n_tokens, .n_images = 3};
    ft_token_ids ids = {0};
    const uint32_t first[] = {1, 9, 2, 9, 3};
    for (size_t i = 0; i < 5; i++)
        ft_token_ids_push(&ids, first[i]);
    CHECK_INT(ft_image_pads_widen(&widening, &ids), 0);
    const uint32_t expected[] = {1, 9, 9, 9, 2, 9, 3};
    CHECK_INT(ids.count, 7);
    CHECK(ids.count == 7 && memcmp(ids.ids, expected, sizeof expected) == 0);
    CHECK_INT(widening.next, 2);
    ft_token_ids_free(&ids);

    ft_token_ids second = {0};
    ft_token_ids_push(&second, 9);
    CHECK_INT(ft_image_pads_widen(&widening, &second), 0);
    CHECK(second.count == 2 && second.ids[0] == 9 && second.ids[1] == 9);
    /* a fourth pad has no image */
    CHECK_INT(ft_image_pads_widen(&widening, &second), -1);
    CHECK_STR(ft_error_message(), "the text holds the image pad token itself (more pads than its 3 images): write "
                                  "images as <image> only");
    ft_token_ids_free(&second);

    ft_token_ids none = {0};
    ft_token_ids_push(&none, 4);
    CHECK_INT(ft_image_pads_widen(&widening, &none), 0);
    CHECK_INT(none.count, 1);
    ft_token_ids_free(&none);
}

int main(void)
{
    RUN(replaces_each_placeholder_with_start_pad_end);
    RUN(widens_pads_in_order_across_segments);
    return check_done();
}
