/* vision_qwen2: Qwen2-VL's and Qwen2.5-VL's vision transformers through the
 * backend's ops. What depends on the images' grids (rotary tables, windows,
 * segments) is made on the host and uploaded; the rest runs where the backend
 * computes. */
#include "ftpipe/model/vision_qwen2.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/backend/host_floats.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/projector.h"

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
    ft_backend *backend;
    size_t element_bytes;   /* of the backend's dtype */
    void *weights;          /* backend memory, the backend's dtype; offsets count elements */
    block_offsets *blocks;
    void *work;             /* backend memory for a pass, grown to the most patches seen */
    int64_t work_patches;
    int64_t pass_patches;   /* of the last forward, which backward follows */
    size_t patch_embed, merger_norm_weight, merger_norm_bias, merger_fc1_weight, merger_fc1_bias;
    size_t merger_fc2_weight, merger_fc2_bias;
    ft_projector *merger;
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

size_t ft_vision_qwen2_weight_bytes(const ft_vision_config *config, size_t element_bytes)
{
    layout l = lay_out(config, NULL);
    free(l.list);
    return l.floats * element_bytes;
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

/* Reads one weight as float into `floats` (as large as the largest). */
static int load_weight(const ft_safetensors *set, const ft_vision_weight *w, const char *model_dir, float *floats)
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
    return ft_tensor_to_f32(view, floats);
}

int ft_vision_qwen2_load(const char *model_dir, const ft_vision_config *config, ft_backend *backend,
                         ft_vision_qwen2 **out)
{
    ft_vision_qwen2 *tower = ft_xcalloc(1, sizeof *tower);
    tower->config = *config;
    tower->backend = backend;
    tower->element_bytes = ft_dtype_size(backend->dtype);
    tower->blocks = ft_xcalloc((size_t)config->depth, sizeof *tower->blocks);
    layout l = lay_out(config, tower);
    size_t largest = 1;
    for (size_t i = 0; i < l.count; i++)
        largest = l.list[i].count > largest ? l.list[i].count : largest;
    /* the backend readies its attention for the tower's heads (the model's plan reserved the rest) */
    ft_backend_limits limits = {.vision_head_dim = config->embed_dim / config->num_heads};
    int status = backend->reserve(backend, &limits);
    if (status == 0)
        tower->weights = backend->alloc(backend, l.floats * tower->element_bytes);
    if (status == 0 && !tower->weights)
        status = ft_error_context("the vision tower's %zu weights", l.floats);
    float *floats = status == 0 ? malloc(largest * sizeof(float)) : NULL;
    if (status == 0 && !floats)
        status = ft_error("out of host memory for a vision tower weight of %zu floats", largest);
    ft_safetensors *set = NULL;
    if (status == 0 && ft_safetensors_open(model_dir, &set) < 0)
        status = -1;
    for (size_t i = 0; i < l.count && status == 0; i++) {
        status = load_weight(set, &l.list[i], model_dir, floats);
        if (status == 0)
            ft_backend_upload_floats(backend, (char *)tower->weights + l.list[i].offset * tower->element_bytes,
                                     floats, l.list[i].count);
    }
    ft_safetensors_close(set);
    free(floats);
    free(l.list);
    if (status < 0) {
        ft_vision_qwen2_free(tower);
        return -1;
    }
    ft_projector_weights merger;
    ft_vision_qwen2_merger_shape(config, &merger);
    const char *w = tower->weights;
    size_t eb = tower->element_bytes;
    merger.norm_weight = w + tower->merger_norm_weight * eb;
    merger.norm_bias = tower->merger_norm_bias == NONE ? NULL : w + tower->merger_norm_bias * eb;
    merger.weight_1 = w + tower->merger_fc1_weight * eb;
    merger.bias_1 = w + tower->merger_fc1_bias * eb;
    merger.weight_2 = w + tower->merger_fc2_weight * eb;
    merger.bias_2 = w + tower->merger_fc2_bias * eb;
    tower->merger = ft_projector_create(backend, &merger);
    *out = tower;
    return 0;
}

ft_projector *ft_vision_qwen2_merger(ft_vision_qwen2 *tower) { return tower->merger; }

void ft_vision_qwen2_free(ft_vision_qwen2 *tower)
{
    if (!tower)
        return;
    if (tower->weights)
        tower->backend->free(tower->backend, tower->weights);
    if (tower->work)
        tower->backend->free(tower->backend, tower->work);
    ft_projector_free(tower->merger);
    free(tower->blocks);
    free(tower);
}

/* --- a pass's memory --- */

/* One pass's arrays in the backend's memory: the backend's dtype but for the
 * rotary tables (float) and the index arrays (int32). */
typedef struct {
    void *pixels, *x, *normed, *q, *k, *v, *attn, *inner, *inner_up, *merged, *placed;
    float *cos, *sin;
    int32_t *positions, *frames, *windows, *patch_order, *token_order;
} pass_arrays;

static size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

/* Lays the arrays of a pass over n_patches out from `base` (NULL: only counts);
 * returns the bytes. */
static size_t lay_out_pass(const ft_vision_config *c, int64_t n_patches, size_t element_bytes, char *base,
                           pass_arrays *a)
{
    size_t rows = (size_t)n_patches, width = (size_t)c->embed_dim, inner = (size_t)c->mlp_hidden;
    size_t tokens = rows / (size_t)(c->spatial_merge_size * c->spatial_merge_size);
    size_t half = width / (size_t)c->num_heads / 2, at = 0;
    pass_arrays scratch;
    if (!a)
        a = &scratch;
#define TAKE(field, type, bytes) (a->field = (type)(base ? base + at : NULL), at += aligned(bytes))
    TAKE(pixels, void *, rows * (size_t)ft_vision_qwen2_patch_length(c) * element_bytes);
    TAKE(x, void *, rows * width * element_bytes);
    TAKE(normed, void *, rows * width * element_bytes);
    TAKE(q, void *, rows * width * element_bytes);
    TAKE(k, void *, rows * width * element_bytes);
    TAKE(v, void *, rows * width * element_bytes);
    TAKE(attn, void *, rows * width * element_bytes);
    TAKE(inner, void *, rows * inner * element_bytes);
    TAKE(inner_up, void *, c->qwen2_5 ? rows * inner * element_bytes : 0);
    TAKE(merged, void *, tokens * (size_t)c->out_hidden * element_bytes); /* backward: the merger's output gradient */
    TAKE(placed, void *, c->qwen2_5 ? tokens * (size_t)c->out_hidden * element_bytes : 0);
    TAKE(cos, float *, rows * half * sizeof(float));
    TAKE(sin, float *, rows * half * sizeof(float));
    TAKE(positions, int32_t *, rows * sizeof(int32_t));
    TAKE(frames, int32_t *, rows * sizeof(int32_t));
    TAKE(windows, int32_t *, c->qwen2_5 ? rows * sizeof(int32_t) : 0);
    TAKE(patch_order, int32_t *, c->qwen2_5 ? rows * sizeof(int32_t) : 0);
    TAKE(token_order, int32_t *, c->qwen2_5 ? tokens * sizeof(int32_t) : 0);
#undef TAKE
    return at;
}

void ft_vision_qwen2_merger_shape(const ft_vision_config *c, ft_projector_weights *out)
{
    int merged = c->embed_dim * c->spatial_merge_size * c->spatial_merge_size;
    *out = (ft_projector_weights){.name_prefix = "visual.merger.", .linear_names = {"mlp.0", "mlp.2"},
                                  .norm_width = c->embed_dim, .norm_eps = NORM_EPS, .in_features = merged,
                                  .mid_features = merged, .out_features = c->out_hidden,
                                  .activation = FT_ACTIVATION_GELU};
}

size_t ft_vision_qwen2_work_bytes(const ft_vision_config *config, int64_t n_patches, size_t element_bytes)
{
    ft_projector_weights merger;
    ft_vision_qwen2_merger_shape(config, &merger);
    merger.norm_weight = &merger; /* a norm, for the count */
    int64_t tokens = n_patches / (config->spatial_merge_size * config->spatial_merge_size);
    return lay_out_pass(config, n_patches, element_bytes, NULL, NULL) +
           ft_projector_work_bytes(&merger, tokens, 0, false, element_bytes);
}

/* --- the grids' tables, on the host --- */

/* Each patch's rotary angles: the first quarter of a head's dims turns with its
 * row, the second with its column (the processor orders patches in merge x merge
 * groups, so row and column come from the group and the place inside it). */
static void rotary_tables(const ft_vision_config *c, const ft_stored_image *images, size_t n_images, float *cos_table,
                          float *sin_table)
{
    int head_dim = c->embed_dim / c->num_heads, quarter = head_dim / 4, half = head_dim / 2;
    int merge = c->spatial_merge_size;
    float *inverse = ft_xmalloc((size_t)quarter * sizeof(float) + 1);
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
                    cos_table[row * half + j] = (float)cos((double)angle);
                    sin_table[row * half + j] = (float)sin((double)angle);
                }
            }
    }
    free(inverse);
}

/* Qwen2.5-VL's windows (transformers' get_window_index): each frame's merged
 * patches cut into squares of window_size / merge / patch a side, from the top
 * left, the ragged ones at the right and bottom edges kept smaller; the order
 * walks window after window, each row by row. order[m]: the merged patch at
 * window-order place m; windows[p]: the window of patch p in window order. */
static void plan_windows(const ft_vision_config *c, const ft_stored_image *images, size_t n_images, int32_t *order,
                         int32_t *windows)
{
    int merge = c->spatial_merge_size, unit = merge * merge, side = c->window_size / merge / c->patch_size;
    int64_t base = 0, placed = 0;
    int32_t window = 0;
    for (size_t n = 0; n < n_images; n++) {
        int rows = images[n].grid_h / merge, cols = images[n].grid_w / merge;
        for (int t = 0; t < images[n].grid_t; t++)
            for (int top = 0; top < rows; top += side)
                for (int left = 0; left < cols; left += side, window++)
                    for (int h = top; h < top + side && h < rows; h++)
                        for (int w = left; w < left + side && w < cols; w++, placed++) {
                            order[placed] = (int32_t)(base + ((int64_t)t * rows + h) * cols + w);
                            for (int u = 0; u < unit; u++)
                                windows[placed * unit + u] = window;
                        }
        base += (int64_t)images[n].grid_t * rows * cols;
    }
}

/* rows of a host table [n_units * unit, width] into window order. */
static void table_into_window_order(float *table, const int32_t *order, int64_t n_units, int unit, int width)
{
    size_t block = (size_t)unit * width;
    float *copy = ft_xmalloc((size_t)n_units * block * sizeof(float) + 1);
    memcpy(copy, table, (size_t)n_units * block * sizeof(float));
    for (int64_t m = 0; m < n_units; m++)
        memcpy(table + (size_t)m * block, copy + (size_t)order[m] * block, block * sizeof(float));
    free(copy);
}

/* --- a pass --- */

typedef struct {
    const ft_vision_qwen2 *tower;
    ft_backend *backend;
    int64_t n_patches;
    int width, heads, head_dim;
    pass_arrays a;
} pass;

static const void *W(const pass *p, size_t offset)
{
    return offset == NONE ? NULL : (const char *)p->tower->weights + offset * p->tower->element_bytes;
}

static void linear(const pass *p, void *out, const void *x, size_t weight, size_t bias, int64_t rows,
                   int in_features, int out_features)
{
    p->backend->linear_forward(p->backend, out, x, W(p, weight), W(p, bias), NULL, (int)rows, in_features,
                               out_features);
}

/* LayerNorm (Qwen2-VL) with a bias, RMSNorm (Qwen2.5-VL) without. */
static void norm(const pass *p, void *out, const void *x, size_t weight, size_t bias)
{
    ft_backend *b = p->backend;
    if (bias == NONE)
        b->rmsnorm_forward(b, out, NULL, x, W(p, weight), (int)p->n_patches, p->width, NORM_EPS);
    else
        b->layernorm_forward(b, out, x, W(p, weight), W(p, bias), (int)p->n_patches, p->width, NORM_EPS);
}

static void block(const pass *p, const block_offsets *o, const int32_t *segments)
{
    const ft_vision_config *c = &p->tower->config;
    ft_backend *b = p->backend;
    const pass_arrays *a = &p->a;
    int64_t n = p->n_patches;
    int width = p->width;
    size_t count = (size_t)n * width, inner = (size_t)n * c->mlp_hidden, square = (size_t)width * width;
    norm(p, a->normed, a->x, o->norm1_weight, o->norm1_bias);
    /* q, k and v are the qkv weight's three blocks of rows */
    linear(p, a->q, a->normed, o->qkv_weight, o->qkv_bias, n, width, width);
    linear(p, a->k, a->normed, o->qkv_weight + square, o->qkv_bias + width, n, width, width);
    linear(p, a->v, a->normed, o->qkv_weight + 2 * square, o->qkv_bias + 2 * (size_t)width, n, width, width);
    b->rope_forward(b, a->q, a->positions, a->cos, a->sin, (int)n, p->heads, p->head_dim);
    b->rope_forward(b, a->k, a->positions, a->cos, a->sin, (int)n, p->heads, p->head_dim);
    ft_attention_shape shape = {1, (int)n, p->heads, p->heads, p->head_dim, true};
    b->attention_forward(b, a->attn, NULL, a->q, a->k, a->v, segments, &shape);
    linear(p, a->normed, a->attn, o->proj_weight, o->proj_bias, n, width, width);
    b->add_forward(b, a->x, a->x, a->normed, count);
    norm(p, a->normed, a->x, o->norm2_weight, o->norm2_bias);
    linear(p, a->inner, a->normed, o->fc1_weight, o->fc1_bias, n, width, c->mlp_hidden);
    if (c->qwen2_5) {
        linear(p, a->inner_up, a->normed, o->up_weight, o->up_bias, n, width, c->mlp_hidden);
        b->swiglu_forward(b, a->inner, a->inner, a->inner_up, inner);
    } else {
        b->activation_forward(b, a->inner, a->inner, inner, FT_ACTIVATION_QUICK_GELU);
    }
    linear(p, a->normed, a->inner, o->fc2_weight, o->fc2_bias, n, c->mlp_hidden, width);
    b->add_forward(b, a->x, a->x, a->normed, count);
}

static int check_images(const ft_vision_config *c, const ft_stored_image *images, size_t n_images,
                        int64_t *n_patches)
{
    *n_patches = 0;
    for (size_t i = 0; i < n_images; i++) {
        const ft_stored_image *image = &images[i];
        if (image->grid_t < 1 || image->grid_h < 1 || image->grid_w < 1 ||
            image->grid_h % c->spatial_merge_size != 0 || image->grid_w % c->spatial_merge_size != 0)
            return ft_error("image %zu of the batch: its patch grid %d x %d x %d does not split into %d x %d "
                            "groups; tokenize the data again for this model", i, image->grid_t, image->grid_h,
                            image->grid_w, c->spatial_merge_size, c->spatial_merge_size);
        *n_patches += (int64_t)image->grid_t * image->grid_h * image->grid_w;
    }
    if (*n_patches > INT32_MAX / 4)
        return ft_error("the batch's images make %lld patches, too many for one pass of the vision tower",
                        (long long)*n_patches);
    return 0;
}

/* The pass's memory, grown when a batch brings more patches than any before. */
static int reserve_work(ft_vision_qwen2 *tower, int64_t n_patches, pass_arrays *a)
{
    ft_backend *b = tower->backend;
    if (n_patches > tower->work_patches) {
        if (tower->work)
            b->free(b, tower->work);
        tower->work_patches = 0;
        tower->work = b->alloc(b, ft_vision_qwen2_work_bytes(&tower->config, n_patches, tower->element_bytes));
        if (!tower->work)
            return ft_error_context("the vision tower's pass over %lld patches", (long long)n_patches);
        tower->work_patches = n_patches;
    }
    lay_out_pass(&tower->config, n_patches, tower->element_bytes, tower->work, a);
    return 0;
}

/* The stored patch rows (the Conv3d's input), the grids' tables and the
 * segments into the pass's memory; Qwen2.5-VL's tables and segments come in
 * window order, and order (its merged patches' places) is filled. */
static void upload_inputs(const pass *p, const ft_stored_image *images, size_t n_images, int32_t *order)
{
    const ft_vision_config *c = &p->tower->config;
    ft_backend *b = p->backend;
    size_t rows = (size_t)p->n_patches, patch = (size_t)ft_vision_qwen2_patch_length(c);
    size_t half = (size_t)p->head_dim / 2, row = 0;
    for (size_t i = 0; i < n_images; i++) {
        size_t count = (size_t)images[i].grid_t * images[i].grid_h * images[i].grid_w;
        ft_backend_upload_floats(b, (char *)p->a.pixels + row * patch * p->tower->element_bytes, images[i].pixels,
                                 count * patch);
        row += count;
    }
    float *cos_table = ft_xmalloc(rows * half * sizeof(float)), *sin_table = ft_xmalloc(rows * half * sizeof(float));
    int32_t *index = ft_xmalloc(rows * sizeof(int32_t));
    rotary_tables(c, images, n_images, cos_table, sin_table);
    for (size_t r = 0; r < rows; r++)
        index[r] = (int32_t)r;
    b->upload(b, p->a.positions, index, rows * sizeof(int32_t));
    row = 0;
    int32_t frame = 0;
    for (size_t i = 0; i < n_images; i++)
        for (int t = 0; t < images[i].grid_t; t++, frame++)
            for (int64_t j = 0; j < (int64_t)images[i].grid_h * images[i].grid_w; j++)
                index[row++] = frame;
    b->upload(b, p->a.frames, index, rows * sizeof(int32_t)); /* frames keep their places in window order */
    if (c->qwen2_5) {
        int unit = c->spatial_merge_size * c->spatial_merge_size;
        int64_t n_units = p->n_patches / unit;
        plan_windows(c, images, n_images, order, index);
        b->upload(b, p->a.windows, index, rows * sizeof(int32_t));
        b->upload(b, p->a.token_order, order, (size_t)n_units * sizeof(int32_t));
        for (size_t r = 0; r < rows; r++)
            index[r] = order[r / (size_t)unit] * unit + (int32_t)(r % (size_t)unit);
        b->upload(b, p->a.patch_order, index, rows * sizeof(int32_t));
        table_into_window_order(cos_table, order, n_units, unit, (int)half);
        table_into_window_order(sin_table, order, n_units, unit, (int)half);
    }
    b->upload(b, p->a.cos, cos_table, rows * half * sizeof(float));
    b->upload(b, p->a.sin, sin_table, rows * half * sizeof(float));
    free(index);
    free(sin_table);
    free(cos_table);
}

/* The merger (projector.h: norm, merge x merge patches concatenated, which
 * adjacent rows make by a reshape, Linear, GELU, Linear); Qwen2.5-VL's rows go
 * back from window order into the images' order. Returns where the features
 * are, NULL with ft_error. */
static const void *merge_patches(const pass *p)
{
    const ft_vision_qwen2 *tower = p->tower;
    const ft_vision_config *c = &tower->config;
    const pass_arrays *a = &p->a;
    int64_t n_tokens = p->n_patches / (c->spatial_merge_size * c->spatial_merge_size);
    if (ft_projector_forward(tower->merger, a->merged, a->x, n_tokens) < 0)
        return NULL;
    if (!c->qwen2_5)
        return a->merged;
    p->backend->scatter_rows(p->backend, a->placed, a->merged, a->token_order, (int)n_tokens, c->out_hidden);
    return a->placed;
}

int ft_vision_qwen2_forward(ft_vision_qwen2 *tower, const ft_stored_image *images, size_t n_images, float *features)
{
    const ft_vision_config *c = &tower->config;
    int64_t n;
    if (check_images(c, images, n_images, &n) < 0)
        return -1;
    if (n == 0)
        return 0;
    pass p = {.tower = tower, .backend = tower->backend, .n_patches = n, .width = c->embed_dim,
              .heads = c->num_heads, .head_dim = c->embed_dim / c->num_heads};
    if (reserve_work(tower, n, &p.a) < 0)
        return -1;
    ft_backend *b = p.backend;
    int32_t *order = ft_xmalloc((size_t)n * sizeof(int32_t));
    upload_inputs(&p, images, n_images, order);
    free(order);
    linear(&p, p.a.x, p.a.pixels, tower->patch_embed, NONE, n, ft_vision_qwen2_patch_length(c), p.width);
    if (c->qwen2_5) { /* patches in window order from here to the merger's end */
        b->gather_rows(b, p.a.normed, p.a.x, p.a.patch_order, (int)n, p.width);
        void *swap = p.a.x;
        p.a.x = p.a.normed;
        p.a.normed = swap;
    }
    for (int i = 0; i < c->depth; i++) {
        bool windowed = c->qwen2_5 && !(c->full_attention_blocks >> i & 1);
        block(&p, &tower->blocks[i], windowed ? p.a.windows : p.a.frames);
    }
    const void *out = merge_patches(&p);
    if (!out)
        return -1;
    tower->pass_patches = n;
    int64_t n_tokens = n / (c->spatial_merge_size * c->spatial_merge_size);
    ft_backend_download_floats(b, features, out, (size_t)n_tokens * c->out_hidden);
    return b->check(b);
}

void ft_vision_qwen2_backward(ft_vision_qwen2 *tower, const void *grad_features)
{
    if (!ft_projector_is_trained(tower->merger) || tower->pass_patches == 0)
        return;
    const ft_vision_config *c = &tower->config;
    pass_arrays a;
    lay_out_pass(c, tower->pass_patches, tower->element_bytes, tower->work, &a);
    int64_t n_tokens = tower->pass_patches / (c->spatial_merge_size * c->spatial_merge_size);
    if (c->qwen2_5) { /* back into window order, as the merger made them */
        tower->backend->gather_rows(tower->backend, a.merged, grad_features, a.token_order, (int)n_tokens,
                                    c->out_hidden);
        grad_features = a.merged;
    }
    ft_projector_backward(tower->merger, grad_features);
    tower->pass_patches = 0;
}
