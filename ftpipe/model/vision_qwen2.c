/* vision_qwen2: Qwen2-VL's and Qwen2.5-VL's vision transformers on the host, in
 * fp32. Products are OpenBLAS's sgemm, as on the cpu backend. */
#include "ftpipe/model/vision_qwen2.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"

#define NORM_EPS 1e-6f
#define NONE SIZE_MAX /* offset of a weight the tower lacks: RMSNorm has no bias */

/* Where each weight starts in the buffer, in floats. Qwen2-VL's MLP is fc1 and
 * fc2, Qwen2.5-VL's gate (fc1), up and down (fc2). */
typedef struct {
    size_t norm1_weight, norm1_bias, qkv_weight, qkv_bias, proj_weight, proj_bias;
    size_t norm2_weight, norm2_bias, fc1_weight, fc1_bias, up_weight, up_bias, fc2_weight, fc2_bias;
} block_offsets;

struct ft_vision_qwen2 {
    ft_vision_config config;
    float *weights;
    block_offsets *blocks;
    size_t patch_embed, merger_norm_weight, merger_norm_bias, merger_fc1_weight, merger_fc1_bias;
    size_t merger_fc2_weight, merger_fc2_bias;
};

/* --- the weights' layout --- */

typedef struct {
    ft_vision_weight *list;
    size_t count;
    size_t floats;
} layout;

static size_t add(layout *l, const char *name, int n_dims, const int64_t *shape)
{
    ft_vision_weight *w = &l->list[l->count++];
    snprintf(w->name, sizeof w->name, "visual.%s", name);
    w->n_dims = n_dims;
    w->count = 1;
    for (int d = 0; d < n_dims; d++) {
        w->shape[d] = shape[d];
        w->count *= (size_t)shape[d];
    }
    size_t length = strlen(w->name);
    w->is_norm = length > 7 && strcmp(w->name + length - 7, ".weight") == 0 &&
                 (strstr(w->name, ".norm1.") || strstr(w->name, ".norm2.") || strstr(w->name, ".ln_q."));
    w->offset = l->floats;
    l->floats += w->count;
    return w->offset;
}

static size_t add_matrix(layout *l, const char *name, int64_t rows, int64_t cols)
{
    return add(l, name, 2, (int64_t[]){rows, cols});
}

static size_t add_vector(layout *l, const char *name, int64_t length) { return add(l, name, 1, &length); }

/* Lays out every weight; tower (may be NULL) receives the offsets. */
static layout lay_out(const ft_vision_config *c, ft_vision_qwen2 *tower)
{
    int64_t width = c->embed_dim, inner = c->mlp_hidden;
    int64_t merged = width * c->spatial_merge_size * c->spatial_merge_size;
    layout l = {ft_xcalloc(7 + 14 * (size_t)c->depth, sizeof(ft_vision_weight)), 0, 0};
    block_offsets scratch;
    size_t patch = add(&l, "patch_embed.proj.weight", 5,
                       (int64_t[]){width, c->in_channels, c->temporal_patch_size, c->patch_size, c->patch_size});
    for (int b = 0; b < c->depth; b++) {
        block_offsets *o = tower ? &tower->blocks[b] : &scratch;
        char name[64];
#define BLOCK(suffix) (snprintf(name, sizeof name, "blocks.%d.%s", b, suffix), name)
        bool qwen2_5 = c->qwen2_5;
        o->norm1_weight = add_vector(&l, BLOCK("norm1.weight"), width);
        o->norm1_bias = qwen2_5 ? NONE : add_vector(&l, BLOCK("norm1.bias"), width);
        o->norm2_weight = add_vector(&l, BLOCK("norm2.weight"), width);
        o->norm2_bias = qwen2_5 ? NONE : add_vector(&l, BLOCK("norm2.bias"), width);
        o->qkv_weight = add_matrix(&l, BLOCK("attn.qkv.weight"), 3 * width, width);
        o->qkv_bias = add_vector(&l, BLOCK("attn.qkv.bias"), 3 * width);
        o->proj_weight = add_matrix(&l, BLOCK("attn.proj.weight"), width, width);
        o->proj_bias = add_vector(&l, BLOCK("attn.proj.bias"), width);
        o->fc1_weight = add_matrix(&l, BLOCK(qwen2_5 ? "mlp.gate_proj.weight" : "mlp.fc1.weight"), inner, width);
        o->fc1_bias = add_vector(&l, BLOCK(qwen2_5 ? "mlp.gate_proj.bias" : "mlp.fc1.bias"), inner);
        o->up_weight = qwen2_5 ? add_matrix(&l, BLOCK("mlp.up_proj.weight"), inner, width) : NONE;
        o->up_bias = qwen2_5 ? add_vector(&l, BLOCK("mlp.up_proj.bias"), inner) : NONE;
        o->fc2_weight = add_matrix(&l, BLOCK(qwen2_5 ? "mlp.down_proj.weight" : "mlp.fc2.weight"), width, inner);
        o->fc2_bias = add_vector(&l, BLOCK(qwen2_5 ? "mlp.down_proj.bias" : "mlp.fc2.bias"), width);
#undef BLOCK
    }
    size_t norm_weight = add_vector(&l, "merger.ln_q.weight", width);
    size_t norm_bias = c->qwen2_5 ? NONE : add_vector(&l, "merger.ln_q.bias", width);
    size_t fc1_weight = add_matrix(&l, "merger.mlp.0.weight", merged, merged);
    size_t fc1_bias = add_vector(&l, "merger.mlp.0.bias", merged);
    size_t fc2_weight = add_matrix(&l, "merger.mlp.2.weight", c->out_hidden, merged);
    size_t fc2_bias = add_vector(&l, "merger.mlp.2.bias", c->out_hidden);
    if (tower) {
        tower->patch_embed = patch;
        tower->merger_norm_weight = norm_weight;
        tower->merger_norm_bias = norm_bias;
        tower->merger_fc1_weight = fc1_weight;
        tower->merger_fc1_bias = fc1_bias;
        tower->merger_fc2_weight = fc2_weight;
        tower->merger_fc2_bias = fc2_bias;
    }
    return l;
}

ft_vision_weight *ft_vision_qwen2_weight_list(const ft_vision_config *config, size_t *count)
{
    layout l = lay_out(config, NULL);
    *count = l.count;
    return l.list;
}

size_t ft_vision_qwen2_weight_bytes(const ft_vision_config *config)
{
    layout l = lay_out(config, NULL);
    free(l.list);
    return l.floats * sizeof(float);
}

int ft_vision_qwen2_patch_length(const ft_vision_config *c)
{
    return c->in_channels * c->temporal_patch_size * c->patch_size * c->patch_size;
}

int64_t ft_vision_qwen2_image_tokens(const ft_vision_config *c, const ft_stored_image *image)
{
    int64_t merge = c->spatial_merge_size;
    return (int64_t)image->grid_t * image->grid_h * image->grid_w / (merge * merge);
}

/* --- loading --- */

/* transformers 4.5x saved the tower as model.visual.*; releases and 5.x as visual.* */
static const ft_tensor_view *find_weight(const ft_safetensors *set, const char *name)
{
    const ft_tensor_view *view = ft_safetensors_find(set, name);
    if (view)
        return view;
    char other[96];
    snprintf(other, sizeof other, "model.%s", name);
    return ft_safetensors_find(set, other);
}

static int load_weight(ft_vision_qwen2 *tower, const ft_safetensors *set, const ft_vision_weight *w,
                       const char *model_dir)
{
    const ft_tensor_view *view = find_weight(set, w->name);
    if (!view)
        return ft_error("%s: the vision tower's weight %s (or model.%s) is missing; is this a Qwen2-VL model "
                        "folder?", model_dir, w->name, w->name);
    bool same = view->n_dims == w->n_dims;
    for (int d = 0; same && d < w->n_dims; d++)
        same = view->shape[d] == w->shape[d];
    if (!same) {
        char expected[96] = "[";
        for (int d = 0; d < w->n_dims; d++)
            snprintf(expected + strlen(expected), sizeof expected - strlen(expected), "%s%lld", d ? ", " : "",
                     (long long)w->shape[d]);
        return ft_error("%s: tensor %s does not have the shape %s] that config.json's vision_config implies",
                        view->file, view->name, expected);
    }
    return ft_tensor_to_f32(view, tower->weights + w->offset);
}

int ft_vision_qwen2_load(const char *model_dir, const ft_vision_config *config, ft_vision_qwen2 **out)
{
    ft_vision_qwen2 *tower = ft_xcalloc(1, sizeof *tower);
    tower->config = *config;
    tower->blocks = ft_xcalloc((size_t)config->depth, sizeof *tower->blocks);
    layout l = lay_out(config, tower);
    int status = 0;
    tower->weights = malloc(l.floats * sizeof(float));
    if (!tower->weights)
        status = ft_error("out of host memory for the vision tower's %zu weights", l.floats);
    ft_safetensors *set = NULL;
    if (status == 0 && ft_safetensors_open(model_dir, &set) < 0)
        status = -1;
    for (size_t i = 0; i < l.count && status == 0; i++)
        status = load_weight(tower, set, &l.list[i], model_dir);
    ft_safetensors_close(set);
    free(l.list);
    if (status < 0) {
        ft_vision_qwen2_free(tower);
        return -1;
    }
    *out = tower;
    return 0;
}

void ft_vision_qwen2_free(ft_vision_qwen2 *tower)
{
    if (!tower)
        return;
    free(tower->weights);
    free(tower->blocks);
    free(tower);
}

/* --- the ops --- */

/* out [rows, out_features] = x W^T + bias */
static void linear(float *out, const float *x, const float *weight, const float *bias, int64_t rows,
                   int in_features, int out_features)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, out_features, in_features, 1.0f, x,
                in_features, weight, in_features, 0.0f, out, out_features);
    if (bias)
        for (int64_t r = 0; r < rows; r++)
            for (int j = 0; j < out_features; j++)
                out[r * out_features + j] += bias[j];
}

/* LayerNorm (Qwen2-VL) with a bias, RMSNorm (Qwen2.5-VL) without. */
static void rms_norm(float *out, const float *x, const float *weight, int64_t rows, int dim)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * dim;
        double squares = 0.0;
        for (int j = 0; j < dim; j++)
            squares += (double)row[j] * row[j];
        float rstd = (float)(1.0 / sqrt(squares / dim + NORM_EPS));
        for (int j = 0; j < dim; j++)
            out[r * dim + j] = weight[j] * (row[j] * rstd);
    }
}

static void layer_norm(float *out, const float *x, const float *weight, const float *bias, int64_t rows, int dim)
{
    if (!bias) {
        rms_norm(out, x, weight, rows, dim);
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *row = x + r * dim;
        double mean = 0.0, variance = 0.0;
        for (int j = 0; j < dim; j++)
            mean += row[j];
        mean /= dim;
        for (int j = 0; j < dim; j++)
            variance += (row[j] - mean) * (row[j] - mean);
        float rstd = (float)(1.0 / sqrt(variance / dim + NORM_EPS));
        for (int j = 0; j < dim; j++)
            out[r * dim + j] = ((float)(row[j] - mean)) * rstd * weight[j] + bias[j];
    }
}

static void quick_gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

static void gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

/* gate = silu(gate) * up */
static void swiglu(float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++)
        gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void add_into(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

/* --- a pass --- */

/* Attention segments: segment i is patches [starts[i], starts[i + 1]). */
typedef struct {
    int64_t *starts;
    size_t count;
} segments;

static void segments_add(segments *s, int64_t end)
{
    s->starts[++s->count] = end;
}

typedef struct {
    const ft_vision_qwen2 *tower;
    int64_t n_patches;
    int width, heads, head_dim;
    float *x, *normed, *qkv, *attn, *inner, *inner_up, *cos, *sin, *scores;
    segments frames;             /* each image frame */
    segments windows;            /* Qwen2.5-VL: each window, in window order */
    const segments *attending;   /* the current block's */
    int64_t *order;              /* Qwen2.5-VL: merged patch at window-order place m is order[m]; else NULL */
} pass;

static const float *W(const pass *p, size_t offset)
{
    return offset == NONE ? NULL : p->tower->weights + offset;
}

/* Each patch's rotary angles: the first quarter of a head's dims turns with its
 * row, the second with its column (the processor orders patches in merge x merge
 * groups, so row and column come from the group and the place inside it). */
static void rotary_tables(pass *p, const ft_stored_image *images, size_t n_images)
{
    const ft_vision_config *c = &p->tower->config;
    int quarter = p->head_dim / 4, half = p->head_dim / 2, merge = c->spatial_merge_size;
    float *inverse = ft_xmalloc((size_t)quarter * sizeof(float));
    for (int i = 0; i < quarter; i++)
        inverse[i] = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)half);
    int64_t row = 0;
    for (size_t n = 0; n < n_images; n++) {
        const ft_stored_image *image = &images[n];
        int groups_w = image->grid_w / merge;
        for (int t = 0; t < image->grid_t; t++)
            for (int64_t i = 0; i < (int64_t)image->grid_h * image->grid_w; i++, row++) {
                int64_t group = i / (merge * merge), inside = i % (merge * merge);
                int h = (int)(group / groups_w) * merge + (int)(inside / merge);
                int w = (int)(group % groups_w) * merge + (int)(inside % merge);
                for (int j = 0; j < half; j++) {
                    float angle = (float)(j < quarter ? h : w) * inverse[j % quarter];
                    p->cos[row * half + j] = (float)cos((double)angle);
                    p->sin[row * half + j] = (float)sin((double)angle);
                }
            }
    }
    free(inverse);
}

/* Qwen2.5-VL's windows (transformers' get_window_index): each frame's merged
 * patches cut into squares of window_size / merge / patch a side, from the top
 * left, the ragged ones at the right and bottom edges kept smaller; the order
 * walks window after window, each row by row. */
static void plan_windows(pass *p, const ft_stored_image *images, size_t n_images)
{
    const ft_vision_config *c = &p->tower->config;
    int merge = c->spatial_merge_size, unit = merge * merge, side = c->window_size / merge / c->patch_size;
    int64_t base = 0, placed = 0;
    for (size_t n = 0; n < n_images; n++) {
        int rows = images[n].grid_h / merge, cols = images[n].grid_w / merge;
        for (int t = 0; t < images[n].grid_t; t++) {
            for (int top = 0; top < rows; top += side)
                for (int left = 0; left < cols; left += side) {
                    for (int h = top; h < top + side && h < rows; h++)
                        for (int w = left; w < left + side && w < cols; w++)
                            p->order[placed++] = base + ((int64_t)t * rows + h) * cols + w;
                    segments_add(&p->windows, placed * unit);
                }
        }
        base += (int64_t)images[n].grid_t * rows * cols;
    }
}

/* rows of data [n_units * unit, width] into window order (scratch: as large). */
static void into_window_order(const pass *p, float *data, int width, float *scratch)
{
    int unit = p->tower->config.spatial_merge_size * p->tower->config.spatial_merge_size;
    size_t block = (size_t)unit * width;
    int64_t n_units = p->n_patches / unit;
    for (int64_t m = 0; m < n_units; m++)
        memcpy(scratch + (size_t)m * block, data + (size_t)p->order[m] * block, block * sizeof(float));
    memcpy(data, scratch, (size_t)n_units * block * sizeof(float));
}

/* q and k of every head rotated in place: pairs (j, j + head_dim / 2). */
static void rotate(pass *p)
{
    int half = p->head_dim / 2, stride = 3 * p->width;
    for (int64_t r = 0; r < p->n_patches; r++)
        for (int part = 0; part < 2; part++)
            for (int h = 0; h < p->heads; h++) {
                float *v = p->qkv + r * stride + part * p->width + h * p->head_dim;
                for (int j = 0; j < half; j++) {
                    float c = p->cos[r * half + j], s = p->sin[r * half + j], a = v[j], b = v[j + half];
                    v[j] = a * c - b * s;
                    v[j + half] = b * c + a * s;
                }
            }
}

/* Queries go through attention this many at a time, so that the scores take
 * QUERY_BLOCK rows of the longest segment, not its square. */
#define QUERY_BLOCK 256

/* Softmax attention within each segment, every patch seeing every other. */
static void attention(pass *p)
{
    int stride = 3 * p->width, dim = p->head_dim;
    float scale = 1.0f / sqrtf((float)dim);
    const segments *s = p->attending;
    for (size_t f = 0; f < s->count; f++) {
        int64_t start = s->starts[f];
        int n = (int)(s->starts[f + 1] - start);
        for (int h = 0; h < p->heads; h++)
            for (int first = 0; first < n; first += QUERY_BLOCK) {
                int rows = n - first < QUERY_BLOCK ? n - first : QUERY_BLOCK;
                const float *k = p->qkv + start * stride + p->width + h * dim, *v = k + p->width;
                const float *q = p->qkv + (start + first) * stride + h * dim;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, dim, scale, q, stride, k, stride,
                            0.0f, p->scores, n);
                for (int i = 0; i < rows; i++) {
                    float *row = p->scores + (size_t)i * n, largest = row[0], sum = 0.0f;
                    for (int j = 1; j < n; j++)
                        largest = row[j] > largest ? row[j] : largest;
                    for (int j = 0; j < n; j++)
                        sum += row[j] = expf(row[j] - largest);
                    for (int j = 0; j < n; j++)
                        row[j] /= sum;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dim, n, 1.0f, p->scores, n, v, stride,
                            0.0f, p->attn + (start + first) * p->width + h * dim, p->width);
            }
    }
}

static void block(pass *p, const block_offsets *o)
{
    const ft_vision_config *c = &p->tower->config;
    int64_t n = p->n_patches;
    int width = p->width;
    size_t count = (size_t)n * width, inner = (size_t)n * c->mlp_hidden;
    layer_norm(p->normed, p->x, W(p, o->norm1_weight), W(p, o->norm1_bias), n, width);
    linear(p->qkv, p->normed, W(p, o->qkv_weight), W(p, o->qkv_bias), n, width, 3 * width);
    rotate(p);
    attention(p);
    linear(p->normed, p->attn, W(p, o->proj_weight), W(p, o->proj_bias), n, width, width);
    add_into(p->x, p->normed, count);
    layer_norm(p->normed, p->x, W(p, o->norm2_weight), W(p, o->norm2_bias), n, width);
    linear(p->inner, p->normed, W(p, o->fc1_weight), W(p, o->fc1_bias), n, width, c->mlp_hidden);
    if (c->qwen2_5) {
        linear(p->inner_up, p->normed, W(p, o->up_weight), W(p, o->up_bias), n, width, c->mlp_hidden);
        swiglu(p->inner, p->inner_up, inner);
    } else {
        quick_gelu(p->inner, inner);
    }
    linear(p->normed, p->inner, W(p, o->fc2_weight), W(p, o->fc2_bias), n, c->mlp_hidden, width);
    add_into(p->x, p->normed, count);
}

static int check_images(const ft_vision_config *c, const ft_stored_image *images, size_t n_images,
                        int64_t *n_patches, int64_t *largest_frame, size_t *n_frames)
{
    *n_patches = *largest_frame = 0;
    *n_frames = 0;
    for (size_t i = 0; i < n_images; i++) {
        const ft_stored_image *image = &images[i];
        if (image->grid_t < 1 || image->grid_h < 1 || image->grid_w < 1 ||
            image->grid_h % c->spatial_merge_size != 0 || image->grid_w % c->spatial_merge_size != 0)
            return ft_error("image %zu of the batch: its patch grid %d x %d x %d does not split into %d x %d "
                            "groups; tokenize the data again for this model", i, image->grid_t, image->grid_h,
                            image->grid_w, c->spatial_merge_size, c->spatial_merge_size);
        int64_t frame = (int64_t)image->grid_h * image->grid_w;
        *n_patches += image->grid_t * frame;
        *n_frames += (size_t)image->grid_t;
        if (frame > *largest_frame)
            *largest_frame = frame;
    }
    return 0;
}

size_t ft_vision_qwen2_work_bytes(const ft_vision_config *c, int64_t n_patches, int64_t max_frame_patches)
{
    size_t width = (size_t)c->embed_dim, rows = (size_t)n_patches;
    size_t inner = (size_t)c->mlp_hidden * (c->qwen2_5 ? 2 : 1);
    size_t query_rows = max_frame_patches < QUERY_BLOCK ? (size_t)max_frame_patches : QUERY_BLOCK;
    size_t floats = rows * width * 3 + rows * 3 * width + rows * inner + rows * width / 2 * 2 +
                    query_rows * (size_t)max_frame_patches;
    return floats * sizeof(float);
}

/* The merger: norm, merge x merge patches concatenated, Linear, GELU, Linear;
 * Qwen2.5-VL's rows come back from window order into the images' order. */
static void merge_patches(pass *p, float *features)
{
    const ft_vision_qwen2 *tower = p->tower;
    const ft_vision_config *c = &tower->config;
    int groups = c->spatial_merge_size * c->spatial_merge_size, merged = p->width * groups;
    int64_t n_tokens = p->n_patches / groups;
    layer_norm(p->normed, p->x, W(p, tower->merger_norm_weight), W(p, tower->merger_norm_bias), p->n_patches,
               p->width);
    /* p->attn then p->qkv follow p->normed's rows: room for the [n_tokens, merged] hidden layer */
    float *hidden = p->attn;
    linear(hidden, p->normed, W(p, tower->merger_fc1_weight), W(p, tower->merger_fc1_bias), n_tokens, merged,
           merged);
    gelu(hidden, (size_t)n_tokens * merged);
    float *out = p->order ? ft_xmalloc((size_t)n_tokens * c->out_hidden * sizeof(float)) : features;
    linear(out, hidden, W(p, tower->merger_fc2_weight), W(p, tower->merger_fc2_bias), n_tokens, merged,
           c->out_hidden);
    if (!p->order)
        return;
    for (int64_t m = 0; m < n_tokens; m++)
        memcpy(features + (size_t)p->order[m] * c->out_hidden, out + (size_t)m * c->out_hidden,
               (size_t)c->out_hidden * sizeof(float));
    free(out);
}

int ft_vision_qwen2_forward(const ft_vision_qwen2 *tower, const ft_stored_image *images, size_t n_images,
                            float *features)
{
    const ft_vision_config *c = &tower->config;
    int64_t n, largest;
    size_t n_frames;
    if (check_images(c, images, n_images, &n, &largest, &n_frames) < 0)
        return -1;
    if (n == 0)
        return 0;
    int width = c->embed_dim, patch = ft_vision_qwen2_patch_length(c), half = width / c->num_heads / 2;
    pass p = {.tower = tower, .n_patches = n, .width = width, .heads = c->num_heads, .head_dim = width / c->num_heads};
    float *memory = malloc(ft_vision_qwen2_work_bytes(c, n, largest));
    if (!memory)
        return ft_error("out of host memory for the vision tower's pass over %lld patches", (long long)n);
    float *cursor = memory;
    size_t rows = (size_t)n;
    p.x = cursor, cursor += rows * width;
    p.normed = cursor, cursor += rows * width;
    p.attn = cursor, cursor += rows * width;
    p.qkv = cursor, cursor += rows * 3 * width;
    p.inner = cursor, cursor += rows * (size_t)c->mlp_hidden;
    if (c->qwen2_5)
        p.inner_up = cursor, cursor += rows * (size_t)c->mlp_hidden;
    p.cos = cursor, cursor += rows * (size_t)half;
    p.sin = cursor, cursor += rows * (size_t)half;
    p.scores = cursor;
    p.frames.starts = ft_xcalloc(n_frames + 1, sizeof(int64_t));
    for (size_t i = 0; i < n_images; i++)
        for (int t = 0; t < images[i].grid_t; t++)
            segments_add(&p.frames, p.frames.starts[p.frames.count] + (int64_t)images[i].grid_h * images[i].grid_w);

    /* the stored patch rows are the Conv3d's input, the images one after another */
    for (size_t i = 0, row = 0; i < n_images; i++) {
        int64_t count = (int64_t)images[i].grid_t * images[i].grid_h * images[i].grid_w;
        linear(p.x + row * width, images[i].pixels, W(&p, tower->patch_embed), NULL, count, patch, width);
        row += (size_t)count;
    }
    rotary_tables(&p, images, n_images);
    if (c->qwen2_5) { /* patches, and their angles, in window order from here to the merger's end */
        p.order = ft_xmalloc(rows * sizeof(int64_t));
        p.windows.starts = ft_xcalloc(rows + 1, sizeof(int64_t));
        plan_windows(&p, images, n_images);
        into_window_order(&p, p.x, width, p.attn);
        into_window_order(&p, p.cos, half, p.qkv);
        into_window_order(&p, p.sin, half, p.qkv);
    }
    for (int b = 0; b < c->depth; b++) {
        bool windowed = c->qwen2_5 && !(c->full_attention_blocks >> b & 1);
        p.attending = windowed ? &p.windows : &p.frames;
        block(&p, &tower->blocks[b]);
    }
    merge_patches(&p, features);
    free(p.order);
    free(p.windows.starts);
    free(p.frames.starts);
    free(memory);
    return 0;
}
