/* mrope: the three positions of each token, and the per-token rotary tables. */
#include "ftpipe/model/mrope.h"

#include <math.h>

#include "ftpipe/base/error.h"

/* One sample's tokens [begin, end). */
static int sample_positions(const ft_model_config *c, const int32_t *tokens, int begin, int end, int rows,
                            const ft_stored_image *images, size_t n_images, size_t *next_image, int32_t *out)
{
    int merge = c->vision.spatial_merge_size;
    int32_t position = 0;
    for (int i = begin; i < end;) {
        if (tokens[i] != c->image_token_id) {
            out[i] = out[rows + i] = out[2 * rows + i] = position++;
            i++;
            continue;
        }
        if (*next_image >= n_images)
            return ft_error("token %d is an image token, but the batch's %zu images are used up: the data and "
                            "the images do not match; tokenize the data again", i, n_images);
        const ft_stored_image *image = &images[(*next_image)++];
        int grid_h = image->grid_h / merge, grid_w = image->grid_w / merge;
        int count = image->grid_t * grid_h * grid_w;
        for (int k = 0; k < count; k++, i++) {
            if (i >= end || tokens[i] != c->image_token_id)
                return ft_error("image %zu of the batch makes %d tokens, but its run of image tokens at token %d "
                                "is shorter: the data and the images do not match; tokenize the data again",
                                *next_image - 1, count, i);
            int t = k / (grid_h * grid_w), h = k / grid_w % grid_h, w = k % grid_w;
            out[i] = position + t;
            out[rows + i] = position + h;
            out[2 * rows + i] = position + w;
        }
        position += grid_h > grid_w ? grid_h : grid_w;
    }
    return 0;
}

int ft_mrope_positions(const ft_model_config *config, const int32_t *tokens, const int32_t *segments,
                       int batch_size, int seq_len, const ft_stored_image *images, size_t n_images,
                       int32_t *positions)
{
    int rows = batch_size * seq_len;
    size_t next_image = 0;
    for (int begin = 0; begin < rows;) {
        int end = begin + 1;
        while (end < rows && end % seq_len != 0 && segments[end] == segments[begin])
            end++;
        if (sample_positions(config, tokens, begin, end, rows, images, n_images, &next_image, positions) < 0)
            return -1;
        begin = end;
    }
    if (next_image != n_images)
        return ft_error("the batch has %zu images but image tokens for only %zu; tokenize the data again",
                        n_images, next_image);
    return 0;
}

void ft_mrope_tables(const ft_model_config *c, const int32_t *positions, int rows, float *cos_table,
                     float *sin_table)
{
    int half = c->head_dim / 2;
    for (int j = 0; j < half; j++) {
        float inverse = 1.0f / powf((float)c->rope_theta, (float)(2 * j) / (float)c->head_dim);
        int axis = j < c->mrope_section[0] ? 0 : j < c->mrope_section[0] + c->mrope_section[1] ? 1 : 2;
        for (int r = 0; r < rows; r++) {
            float angle = (float)positions[axis * rows + r] * inverse;
            cos_table[(size_t)r * half + j] = (float)cos((double)angle);
            sin_table[(size_t)r * half + j] = (float)sin((double)angle);
        }
    }
}
