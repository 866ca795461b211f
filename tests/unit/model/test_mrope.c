/* mrope: the three positions of each token against transformers' get_rope_index
 * on the parity fixture (text, an image of grid 1 x 4 x 6, text, an image of
 * 1 x 8 x 4, text), packing, and the errors when tokens and images disagree. */
#include "ftpipe/model/mrope.h"

#include "ftpipe/formats/model_config.h"
#include "vl_fixture.h"

static ft_model_config config;

static void load_config(void) { CHECK_INT(ft_model_config_load(VL_FIXTURES "/model", &config), 0); }

static void check_positions(void)
{
    vl_fixture f;
    ft_safetensors *expected = vl_open("expected.safetensors");
    const ft_tensor_view *view = vl_tensor(expected, "position_ids", FT_DTYPE_I32, 3 * VL_SEQ);
    if (vl_fixture_open(&f) && view) {
        int32_t positions[3 * VL_SEQ];
        CHECK_INT(ft_mrope_positions(&config, f.tokens, f.segments, 1, VL_SEQ, f.images, VL_IMAGES, positions), 0);
        CHECK(memcmp(positions, view->data, sizeof positions) == 0);
        /* the first image starts after 5 text tokens and <|vision_start|>: (6, 6, 6), its grid 2 x 3 */
        CHECK_INT(positions[6], 6);
        CHECK_INT(positions[VL_SEQ + 6 + 5], 7);
        CHECK_INT(positions[2 * VL_SEQ + 6 + 5], 8);
    }
    vl_fixture_close(&f);
    ft_safetensors_close(expected);
}

TEST(qwen2_vl_positions_match_get_rope_index) { vl_architecture = "qwen2_vl", check_positions(); }
/* Qwen2.5-VL's get_rope_index gives images the same positions */
TEST(qwen2_5_vl_positions_match_get_rope_index) { vl_architecture = "qwen2_5_vl", check_positions(); }

TEST(packed_samples_start_again)
{
    /* two text samples in one row, then a row of its own: each starts at 0 */
    int32_t tokens[8] = {1, 2, 3, 4, 5, 6, 7, 8}, segments[8] = {0, 0, 0, 1, 0, 0, 0, 0}, positions[24];
    CHECK_INT(ft_mrope_positions(&config, tokens, segments, 2, 4, NULL, 0, positions), 0);
    int32_t expected[8] = {0, 1, 2, 0, 0, 1, 2, 3};
    for (int axis = 0; axis < 3; axis++)
        CHECK(memcmp(positions + axis * 8, expected, sizeof expected) == 0);
}

TEST(images_and_tokens_must_agree)
{
    vl_fixture f;
    if (vl_fixture_open(&f)) {
        int32_t positions[3 * VL_SEQ];
        CHECK_INT(ft_mrope_positions(&config, f.tokens, f.segments, 1, VL_SEQ, f.images, 1, positions), -1);
        CHECK(strstr(ft_error_message(), "images are used up") != NULL);
        ft_stored_image swapped[2] = {f.images[1], f.images[0]}; /* 8 tokens where 6 stand */
        CHECK_INT(ft_mrope_positions(&config, f.tokens, f.segments, 1, VL_SEQ, swapped, 2, positions), -1);
        CHECK(strstr(ft_error_message(), "is shorter") != NULL);
        ft_stored_image three[3] = {f.images[0], f.images[1], f.images[1]};
        CHECK_INT(ft_mrope_positions(&config, f.tokens, f.segments, 1, VL_SEQ, three, 3, positions), -1);
        CHECK(strstr(ft_error_message(), "has 3 images but image tokens for only 2") != NULL);
    }
    vl_fixture_close(&f);
}

TEST(tables_turn_each_frequency_with_its_section)
{
    /* head_dim 16: sections [2, 3, 3] give frequencies 0-1 the temporal position,
     * 2-4 the height one, 5-7 the width one */
    int32_t positions[3] = {1, 2, 3};
    float cos_table[8], sin_table[8];
    ft_mrope_tables(&config, positions, 1, cos_table, sin_table);
    for (int j = 0; j < 8; j++) {
        int position = j < 2 ? 1 : j < 5 ? 2 : 3;
        float inverse = 1.0f / powf((float)config.rope_theta, (float)(2 * j) / 16.0f);
        CHECK(fabsf(cos_table[j] - cosf((float)position * inverse)) < 1e-6f);
        CHECK(fabsf(sin_table[j] - sinf((float)position * inverse)) < 1e-6f);
    }
}

int main(void)
{
    load_config();
    RUN(qwen2_vl_positions_match_get_rope_index);
    RUN(qwen2_5_vl_positions_match_get_rope_index);
    vl_architecture = "qwen2_vl";
    RUN(packed_samples_start_again);
    RUN(images_and_tokens_must_agree);
    RUN(tables_turn_each_frequency_with_its_section);
    return check_done();
}
