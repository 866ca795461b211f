/* image_resize: Pillow's (13) separable bicubic resampling with its fixed-point rounding. */
#include "ftpipe/formats/image_resize.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/mem.h"

/* Pillow keeps 8 bits of headroom over the 8-bit samples in a 32-bit sum. */
enum { PRECISION_BITS = 32 - 8 - 2 };
static const double BICUBIC_SUPPORT = 2.0;

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Per output sample: the first input sample, how many it reads, and their
 * fixed-point weights (kernel_size of them, zero past the count). */
typedef struct {
    int kernel_size;
    int *first, *count;
    int32_t *weights;
} resample_plan;

static void plan_axis(int in_size, int out_size, resample_plan *plan)
{
    double scale = (double)in_size / out_size;
    double filter_scale = scale < 1.0 ? 1.0 : scale;
    double support = BICUBIC_SUPPORT * filter_scale;
    int kernel_size = (int)ceil(support) * 2 + 1;
    double *weights = ft_xmalloc(sizeof(double) * kernel_size);
    plan->kernel_size = kernel_size;
    plan->first = ft_xmalloc(sizeof(int) * out_size);
    plan->count = ft_xmalloc(sizeof(int) * out_size);
    plan->weights = ft_xcalloc((size_t)out_size * kernel_size, sizeof(int32_t));
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale;
        /* Pillow rounds by truncating center +- support + 0.5 toward zero */
        int first = (int)(center - support + 0.5);
        if (first < 0)
            first = 0;
        int last = (int)(center + support + 0.5);
        if (last > in_size)
            last = in_size;
        int count = last - first;
        double total = 0.0;
        for (int k = 0; k < count; k++) {
            weights[k] = bicubic((k + first - center + 0.5) / filter_scale);
            total += weights[k];
        }
        int32_t *fixed = plan->weights + (size_t)o * kernel_size;
        for (int k = 0; k < count; k++) {
            double w = total != 0.0 ? weights[k] / total : weights[k];
            fixed[k] = (int32_t)(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
        }
        plan->first[o] = first;
        plan->count[o] = count;
    }
    free(weights);
}

static void plan_free(resample_plan *plan)
{
    free(plan->first);
    free(plan->count);
    free(plan->weights);
}

static uint8_t clip8(int32_t sum)
{
    if (sum >= (1 << PRECISION_BITS << 8))
        return 255;
    if (sum <= 0)
        return 0;
    return (uint8_t)(sum >> PRECISION_BITS);
}

/* Resamples rows [row_first, row_first + out->height) of in along x into out. */
static void resample_horizontal(const ft_image *in, int row_first, const resample_plan *plan, ft_image *out)
{
    for (int y = 0; y < out->height; y++) {
        const uint8_t *source = in->rgb + (size_t)(y + row_first) * in->width * 3;
        uint8_t *target = out->rgb + (size_t)y * out->width * 3;
        for (int x = 0; x < out->width; x++) {
            const int32_t *w = plan->weights + (size_t)x * plan->kernel_size;
            const uint8_t *s = source + (size_t)plan->first[x] * 3;
            for (int c = 0; c < 3; c++) {
                int32_t sum = 1 << (PRECISION_BITS - 1);
                for (int k = 0; k < plan->count[x]; k++)
                    sum += s[k * 3 + c] * w[k];
                target[x * 3 + c] = clip8(sum);
            }
        }
    }
}

/* Resamples in along y into out; the plan's first rows are relative to in's row 0. */
static void resample_vertical(const ft_image *in, const resample_plan *plan, ft_image *out)
{
    size_t stride = (size_t)in->width * 3;
    for (int y = 0; y < out->height; y++) {
        const int32_t *w = plan->weights + (size_t)y * plan->kernel_size;
        const uint8_t *source = in->rgb + (size_t)plan->first[y] * stride;
        uint8_t *target = out->rgb + (size_t)y * out->width * 3;
        for (size_t i = 0; i < stride; i++) {
            int32_t sum = 1 << (PRECISION_BITS - 1);
            for (int k = 0; k < plan->count[y]; k++)
                sum += source[(size_t)k * stride + i] * w[k];
            target[i] = clip8(sum);
        }
    }
}

void ft_image_resize_bicubic(const ft_image *in, int width, int height, ft_image *out)
{
    ft_image_alloc(out, width, height);
    if (width == in->width && height == in->height) {
        memcpy(out->rgb, in->rgb, (size_t)width * height * 3);
        return;
    }
    resample_plan horizontal, vertical;
    plan_axis(in->width, width, &horizontal);
    plan_axis(in->height, height, &vertical);
    /* Pillow 13 resamples vertically first when the height shrinks by more than
     * twice what the width does; each pass rounds to 8 bits, so the order shows. */
    int shrink_rows = in->height - height, shrink_columns = in->width - width;
    bool vertical_first = shrink_rows > 0 && shrink_rows > shrink_columns * 2;
    ft_image between = {0};
    if (vertical_first) {
        if (width == in->width) {
            resample_vertical(in, &vertical, out);
        } else {
            ft_image_alloc(&between, in->width, height);
            resample_vertical(in, &vertical, &between);
            resample_horizontal(&between, 0, &horizontal, out);
        }
    } else {
        /* As Pillow: the horizontal pass covers only the rows the vertical pass
         * reads, and its 8-bit result feeds the vertical pass. */
        int row_first = vertical.first[0];
        int row_last = vertical.first[height - 1] + vertical.count[height - 1];
        ft_image rows = *in;
        if (width != in->width) {
            ft_image_alloc(&between, width, row_last - row_first);
            resample_horizontal(in, row_first, &horizontal, &between);
            for (int y = 0; y < height; y++)
                vertical.first[y] -= row_first;
            rows = between;
        }
        if (height != in->height)
            resample_vertical(&rows, &vertical, out);
        else
            memcpy(out->rgb, rows.rgb, (size_t)width * height * 3);
    }
    ft_image_free(&between);
    plan_free(&horizontal);
    plan_free(&vertical);
}
