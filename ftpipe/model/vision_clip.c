/* vision_clip: the CLIP vision tower and LLaVA's projector, forward, through
 * the backend's ops: a batch's images go through together, one bidirectional
 * attention segment each. */
#include "ftpipe/model/vision_clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/backend/host_floats.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/projector.h"

typedef struct {
    void *weight, *bias;    /* backend memory, the backend's dtype */
} linear_weights;

typedef struct {
    linear_weights layer_norm1, q_proj, k_proj, v_proj, out_proj, layer_norm2, fc1, fc2;
} encoder_layer;

struct ft_vision_clip {
    ft_llava_config config;
    ft_backend *backend;
    size_t element_bytes;  /* of the backend's dtype */
    int n_layers_run;      /* the encoder layers before the feature layer's hidden state */
    int side;              /* patches along an image side */
    int n_positions;       /* patches + CLS */
    void *patch_embedding; /* [hidden, 3 * patch * patch]: the convolution as a matrix */
    void *class_embedding, *position_embedding;
    float *class_row;      /* the class embedding on the host, uploaded into each image's first row */
    linear_weights pre_layernorm, projector_1, projector_2;
    encoder_layer *layers;
    void **owned;          /* every weight, for freeing */
    size_t n_owned, owned_capacity;
    size_t weight_bytes;   /* of all of them */
    void *work;            /* a pass's memory, grown to the most images seen */
    int work_images;
    ft_projector *projector;
};

/* --- loading --- */

typedef struct {
    const ft_safetensors *set;
    const char *model_dir;
    const char *vision_prefix, *projector_prefix;
    ft_vision_clip *clip;
} loader;

static int load_tensor(loader *from, const char *prefix, const char *name, int64_t rows, int64_t columns,
                       void **out)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    const ft_tensor_view *view = ft_safetensors_find(from->set, full);
    if (!view)
        return ft_error_context("%s: the weights do not match config.json", from->model_dir);
    int64_t count = 1;
    for (int d = 0; d < view->n_dims; d++)
        count *= view->shape[d];
    if (count != rows * columns || view->shape[0] != rows)
        return ft_error("%s: tensor %s does not have the shape [%lld, %lld] that config.json implies", view->file,
                        full, (long long)rows, (long long)columns);
    ft_vision_clip *clip = from->clip;
    ft_backend *b = clip->backend;
    void *values = b->alloc(b, (size_t)count * clip->element_bytes);
    if (!values)
        return ft_error_context("LLaVA's vision tower weight %s", full);
    ft_grow((void **)&clip->owned, &clip->owned_capacity, clip->n_owned + 1, sizeof(void *));
    clip->owned[clip->n_owned++] = values;
    clip->weight_bytes += (size_t)count * clip->element_bytes;
    *out = values;
    float *floats = ft_xmalloc((size_t)count * sizeof(float));
    int status = ft_tensor_to_f32(view, floats);
    if (status == 0)
        ft_backend_upload_floats(b, values, floats, (size_t)count);
    if (status == 0 && out == &clip->class_embedding) {
        clip->class_row = floats;
        return 0;
    }
    free(floats);
    return status;
}

/* name.weight [rows, columns] and, with bias, name.bias [rows]. */
static int load_linear(loader *from, const char *prefix, const char *name, int rows, int columns, bool bias,
                       linear_weights *out)
{
    char key[200];
    snprintf(key, sizeof key, "%s.weight", name);
    if (load_tensor(from, prefix, key, rows, columns, &out->weight) != 0)
        return -1;
    out->bias = NULL;
    snprintf(key, sizeof key, "%s.bias", name);
    return bias ? load_tensor(from, prefix, key, rows, 1, &out->bias) : 0;
}

static int load_layer_norm(loader *from, const char *name, int width, linear_weights *out)
{
    return load_linear(from, from->vision_prefix, name, width, 1, true, out);
}

/* The first prefix under which the set holds `probe`, or NULL. */
static const char *find_prefix(const ft_safetensors *set, const char *const *prefixes, const char *probe)
{
    for (const char *const *prefix = prefixes; *prefix; prefix++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", *prefix, probe);
        if (ft_safetensors_find(set, name)) {
            ft_error_clear();
            return *prefix;
        }
    }
    ft_error_clear();
    return NULL;
}

static int load_weights(ft_vision_clip *clip, const char *model_dir, const ft_safetensors *set)
{
    static const char *const vision_prefixes[] = {"vision_tower.vision_model.", "vision_tower.",
                                                  "model.vision_tower.vision_model.", "model.vision_tower.", NULL};
    static const char *const projector_prefixes[] = {"multi_modal_projector.", "model.multi_modal_projector.", NULL};
    loader from = {set, model_dir, find_prefix(set, vision_prefixes, "embeddings.patch_embedding.weight"),
                   find_prefix(set, projector_prefixes, "linear_1.weight"), clip};
    if (!from.vision_prefix || !from.projector_prefix)
        return ft_error("%s: no %s in the weights (looked for vision_tower.vision_model.*, vision_tower.*, "
                        "model.vision_tower.* and multi_modal_projector.*): not a LLaVA checkpoint in transformers' "
                        "layout",
                        model_dir, from.vision_prefix ? "projector" : "CLIP vision tower");
    const ft_clip_vision_config *vision = &clip->config.vision;
    int hidden = vision->hidden_size, patch_values = 3 * vision->patch_size * vision->patch_size;
    int text = clip->config.text_hidden_size;
    if (load_tensor(&from, from.vision_prefix, "embeddings.patch_embedding.weight", hidden, patch_values,
                    &clip->patch_embedding) != 0 ||
        load_tensor(&from, from.vision_prefix, "embeddings.class_embedding", hidden, 1, &clip->class_embedding) != 0 ||
        load_tensor(&from, from.vision_prefix, "embeddings.position_embedding.weight", clip->n_positions, hidden,
                    &clip->position_embedding) != 0 ||
        load_layer_norm(&from, "pre_layrnorm", hidden, &clip->pre_layernorm) != 0)
        return -1;
    clip->layers = ft_xcalloc((size_t)(clip->n_layers_run ? clip->n_layers_run : 1), sizeof *clip->layers);
    for (int i = 0; i < clip->n_layers_run; i++) {
        encoder_layer *layer = &clip->layers[i];
        char name[96];
#define LAYER(part) (snprintf(name, sizeof name, "encoder.layers.%d.%s", i, part), name)
        if (load_layer_norm(&from, LAYER("layer_norm1"), hidden, &layer->layer_norm1) != 0 ||
            load_linear(&from, from.vision_prefix, LAYER("self_attn.q_proj"), hidden, hidden, true, &layer->q_proj) != 0 ||
            load_linear(&from, from.vision_prefix, LAYER("self_attn.k_proj"), hidden, hidden, true, &layer->k_proj) != 0 ||
            load_linear(&from, from.vision_prefix, LAYER("self_attn.v_proj"), hidden, hidden, true, &layer->v_proj) != 0 ||
            load_linear(&from, from.vision_prefix, LAYER("self_attn.out_proj"), hidden, hidden, true,
                        &layer->out_proj) != 0 ||
            load_layer_norm(&from, LAYER("layer_norm2"), hidden, &layer->layer_norm2) != 0 ||
            load_linear(&from, from.vision_prefix, LAYER("mlp.fc1"), vision->intermediate_size, hidden, true,
                        &layer->fc1) != 0 ||
            load_linear(&from, from.vision_prefix, LAYER("mlp.fc2"), hidden, vision->intermediate_size, true,
                        &layer->fc2) != 0)
            return -1;
#undef LAYER
    }
    bool bias = clip->config.projector_bias;
    if (load_linear(&from, from.projector_prefix, "linear_1", text, hidden, bias, &clip->projector_1) != 0 ||
        load_linear(&from, from.projector_prefix, "linear_2", text, text, bias, &clip->projector_2) != 0)
        return -1;
    return 0;
}

/* The encoder layers up to the feature layer's hidden state (an index into
 * [embeddings, layer 1, ..., layer L]). */
static int layers_run(const ft_llava_config *config)
{
    int layer = config->vision_feature_layer;
    return layer >= 0 ? layer : config->vision.num_hidden_layers + 1 + layer;
}

size_t ft_vision_clip_weight_count(const ft_llava_config *config)
{
    const ft_clip_vision_config *v = &config->vision;
    size_t hidden = (size_t)v->hidden_size, inner = (size_t)v->intermediate_size;
    size_t side = (size_t)(v->image_size / v->patch_size), text = (size_t)config->text_hidden_size;
    size_t layer = 4 * (hidden * hidden + hidden) + 2 * hidden * inner + inner + hidden + 4 * hidden;
    size_t tower = hidden * 3 * (size_t)v->patch_size * (size_t)v->patch_size + hidden + (side * side + 1) * hidden +
                   2 * hidden + (size_t)layers_run(config) * layer;
    return tower + text * hidden + text * text + (config->projector_bias ? 2 * text : 0);
}

int ft_vision_clip_load(const char *model_dir, ft_backend *backend, ft_vision_clip **out)
{
    ft_vision_clip *clip = ft_xcalloc(1, sizeof *clip);
    clip->backend = backend;
    clip->element_bytes = ft_dtype_size(backend->dtype);
    if (ft_llava_config_load(model_dir, &clip->config) != 0) {
        free(clip);
        return -1;
    }
    const ft_clip_vision_config *vision = &clip->config.vision;
    clip->n_layers_run = layers_run(&clip->config);
    clip->side = vision->image_size / vision->patch_size;
    clip->n_positions = clip->side * clip->side + 1;
    /* the backend readies its attention for the tower's heads (the model's plan reserved the rest) */
    ft_backend_limits limits = {.vision_head_dim = vision->hidden_size / vision->num_attention_heads};
    ft_safetensors *set = NULL;
    int status = backend->reserve(backend, &limits) < 0 ? -1 : ft_safetensors_open(model_dir, &set);
    if (status == 0) {
        status = load_weights(clip, model_dir, set);
        ft_safetensors_close(set);
    }
    if (status != 0) {
        ft_vision_clip_free(clip);
        return -1;
    }
    ft_projector_weights projector;
    ft_vision_clip_projector_shape(&clip->config, &projector);
    projector.weight_1 = clip->projector_1.weight;
    projector.bias_1 = clip->projector_1.bias;
    projector.weight_2 = clip->projector_2.weight;
    projector.bias_2 = clip->projector_2.bias;
    clip->projector = ft_projector_create(backend, &projector);
    *out = clip;
    return 0;
}

ft_projector *ft_vision_clip_projector(ft_vision_clip *clip) { return clip->projector; }

void ft_vision_clip_backward(ft_vision_clip *clip, const void *grad_features)
{
    ft_projector_backward(clip->projector, grad_features);
}

void ft_vision_clip_free(ft_vision_clip *clip)
{
    if (!clip)
        return;
    for (size_t i = 0; i < clip->n_owned; i++)
        clip->backend->free(clip->backend, clip->owned[i]);
    if (clip->work)
        clip->backend->free(clip->backend, clip->work);
    ft_projector_free(clip->projector);
    free(clip->owned);
    free(clip->class_row);
    free(clip->layers);
    free(clip);
}

const ft_llava_config *ft_vision_clip_config(const ft_vision_clip *clip) { return &clip->config; }
size_t ft_vision_clip_weight_bytes(const ft_vision_clip *clip) { return clip->weight_bytes; }

int ft_vision_clip_tokens_per_image(const ft_vision_clip *clip) { return (int)ft_llava_image_tokens(&clip->config); }
int ft_vision_clip_feature_width(const ft_vision_clip *clip) { return clip->config.text_hidden_size; }

/* --- forward --- */

/* A pass over n images of n_positions rows each, in the backend's memory. */
typedef struct {
    void *patches, *x, *normed, *q, *k, *v, *attention, *mlp, *selected, *middle, *features;
    int32_t *segments, *selection;
} pass_arrays;

static size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

static size_t lay_out_pass(const ft_llava_config *config, int n_images, size_t element_bytes, char *base,
                           pass_arrays *a)
{
    const ft_clip_vision_config *v = &config->vision;
    size_t side = (size_t)(v->image_size / v->patch_size), images = (size_t)n_images;
    size_t rows = images * (side * side + 1), hidden = (size_t)v->hidden_size, at = 0;
    size_t tokens = images * ft_llava_image_tokens(config), text = (size_t)config->text_hidden_size;
    pass_arrays scratch;
    if (!a)
        a = &scratch;
#define TAKE(field, type, bytes) (a->field = (type)(base ? base + at : NULL), at += aligned(bytes))
    TAKE(patches, void *, images * side * side * 3 * (size_t)v->patch_size * (size_t)v->patch_size * element_bytes);
    TAKE(x, void *, rows * hidden * element_bytes);
    TAKE(normed, void *, rows * hidden * element_bytes);
    TAKE(q, void *, rows * hidden * element_bytes);
    TAKE(k, void *, rows * hidden * element_bytes);
    TAKE(v, void *, rows * hidden * element_bytes);
    TAKE(attention, void *, rows * hidden * element_bytes);
    TAKE(mlp, void *, rows * (size_t)v->intermediate_size * element_bytes);
    TAKE(selected, void *, tokens * hidden * element_bytes);
    TAKE(features, void *, tokens * text * element_bytes);
    TAKE(segments, int32_t *, rows * sizeof(int32_t));
    TAKE(selection, int32_t *, tokens * sizeof(int32_t));
#undef TAKE
    return at;
}

void ft_vision_clip_projector_shape(const ft_llava_config *config, ft_projector_weights *out)
{
    *out = (ft_projector_weights){.name_prefix = "multi_modal_projector.", .linear_names = {"linear_1", "linear_2"},
                                  .in_features = config->vision.hidden_size, .mid_features = config->text_hidden_size,
                                  .out_features = config->text_hidden_size, .activation = FT_ACTIVATION_GELU};
}

size_t ft_vision_clip_work_bytes(const ft_llava_config *config, int n_images, size_t element_bytes)
{
    ft_projector_weights projector;
    ft_vision_clip_projector_shape(config, &projector);
    return lay_out_pass(config, n_images, element_bytes, NULL, NULL) +
           ft_projector_work_bytes(&projector, (int64_t)n_images * ft_llava_image_tokens(config), 0, false,
                                   element_bytes);
}

static int reserve_work(ft_vision_clip *clip, int n_images, pass_arrays *a)
{
    ft_backend *b = clip->backend;
    if (n_images > clip->work_images) {
        if (clip->work)
            b->free(b, clip->work);
        clip->work_images = 0;
        clip->work = b->alloc(b, ft_vision_clip_work_bytes(&clip->config, n_images, clip->element_bytes));
        if (!clip->work)
            return ft_error_context("LLaVA's vision tower's pass over %d images", n_images);
        clip->work_images = n_images;
    }
    lay_out_pass(&clip->config, n_images, clip->element_bytes, clip->work, a);
    return 0;
}

static void linear(ft_vision_clip *clip, void *out, const void *x, const linear_weights *w, int rows, int in,
                   int out_features)
{
    clip->backend->linear_forward(clip->backend, out, x, w->weight, w->bias, NULL, rows, in, out_features);
}

static void layer_norm(ft_vision_clip *clip, void *out, const void *x, const linear_weights *w, int rows)
{
    const ft_clip_vision_config *vision = &clip->config.vision;
    clip->backend->layernorm_forward(clip->backend, out, x, w->weight, w->bias, rows, vision->hidden_size,
                                     (float)vision->layer_norm_eps);
}

/* Each head attends to every position of its image (one segment an image). */
static void encoder_layer_forward(ft_vision_clip *clip, const encoder_layer *layer, const pass_arrays *a,
                                  int n_images)
{
    const ft_clip_vision_config *vision = &clip->config.vision;
    ft_backend *b = clip->backend;
    int rows = n_images * clip->n_positions, hidden = vision->hidden_size, inner = vision->intermediate_size;
    int heads = vision->num_attention_heads;
    size_t count = (size_t)rows * hidden;
    layer_norm(clip, a->normed, a->x, &layer->layer_norm1, rows);
    linear(clip, a->q, a->normed, &layer->q_proj, rows, hidden, hidden);
    linear(clip, a->k, a->normed, &layer->k_proj, rows, hidden, hidden);
    linear(clip, a->v, a->normed, &layer->v_proj, rows, hidden, hidden);
    ft_attention_shape shape = {1, rows, heads, heads, hidden / heads, true};
    b->attention_forward(b, a->attention, NULL, a->q, a->k, a->v, a->segments, &shape);
    linear(clip, a->normed, a->attention, &layer->out_proj, rows, hidden, hidden);
    b->add_forward(b, a->x, a->x, a->normed, count);
    layer_norm(clip, a->normed, a->x, &layer->layer_norm2, rows);
    linear(clip, a->mlp, a->normed, &layer->fc1, rows, hidden, inner);
    b->activation_forward(b, a->mlp, a->mlp, (size_t)rows * inner, FT_ACTIVATION_QUICK_GELU);
    linear(clip, a->normed, a->mlp, &layer->fc2, rows, inner, hidden);
    b->add_forward(b, a->x, a->x, a->normed, count);
}

/* The images' patches (each (channel, y, x), as the convolution's weight is
 * laid out) go up as rows; each image's embeddings, CLS first, positions
 * added, then the pre-layernorm, into a->x. */
static void embed(ft_vision_clip *clip, const float *const *pixels, int n_images, const pass_arrays *a)
{
    const ft_clip_vision_config *vision = &clip->config.vision;
    ft_backend *b = clip->backend;
    int patch = vision->patch_size, size = vision->image_size, hidden = vision->hidden_size;
    int patch_values = 3 * patch * patch, n_patches = clip->n_positions - 1;
    size_t eb = clip->element_bytes;
    float *rows = ft_xmalloc((size_t)n_images * n_patches * patch_values * sizeof(float));
    for (int image = 0; image < n_images; image++)
        for (int py = 0; py < clip->side; py++)
            for (int px = 0; px < clip->side; px++) {
                float *row = rows + ((size_t)image * n_patches + (size_t)py * clip->side + px) * patch_values;
                for (int c = 0; c < 3; c++)
                    for (int y = 0; y < patch; y++)
                        memcpy(row + (c * patch + y) * patch,
                               pixels[image] + ((size_t)c * size + (size_t)py * patch + y) * size + (size_t)px * patch,
                               (size_t)patch * sizeof(float));
            }
    ft_backend_upload_floats(b, a->patches, rows, (size_t)n_images * n_patches * patch_values);
    free(rows);
    linear_weights patch_matrix = {clip->patch_embedding, NULL};
    for (int image = 0; image < n_images; image++) {
        char *first = (char *)a->normed + (size_t)image * clip->n_positions * hidden * eb;
        ft_backend_upload_floats(b, first, clip->class_row, (size_t)hidden);
        linear(clip, first + (size_t)hidden * eb, (const char *)a->patches + (size_t)image * n_patches * patch_values * eb,
               &patch_matrix, n_patches, patch_values, hidden);
        b->add_forward(b, first, first, clip->position_embedding, (size_t)clip->n_positions * hidden);
    }
    layer_norm(clip, a->x, a->normed, &clip->pre_layernorm, n_images * clip->n_positions);
}

/* The features of n_images images (pixels[i]: image i's [3, size, size]). */
static int features_of(ft_vision_clip *clip, const float *const *pixels, int n_images, float *features)
{
    if (n_images == 0)
        return 0;
    const ft_clip_vision_config *vision = &clip->config.vision;
    ft_backend *b = clip->backend;
    int hidden = vision->hidden_size, text = clip->config.text_hidden_size;
    int tokens = ft_vision_clip_tokens_per_image(clip), first = clip->config.select_default ? 1 : 0;
    pass_arrays a;
    if (reserve_work(clip, n_images, &a) < 0)
        return -1;
    int rows = n_images * clip->n_positions, selected = n_images * tokens;
    int32_t *index = ft_xmalloc((size_t)rows * sizeof(int32_t));
    for (int r = 0; r < rows; r++)
        index[r] = r / clip->n_positions;
    b->upload(b, a.segments, index, (size_t)rows * sizeof(int32_t));
    for (int r = 0; r < selected; r++) /* "default" drops each image's CLS */
        index[r] = r / tokens * clip->n_positions + first + r % tokens;
    b->upload(b, a.selection, index, (size_t)selected * sizeof(int32_t));
    free(index);
    embed(clip, pixels, n_images, &a);
    for (int i = 0; i < clip->n_layers_run; i++)
        encoder_layer_forward(clip, &clip->layers[i], &a, n_images);
    b->gather_rows(b, a.selected, a.x, a.selection, selected, hidden);
    if (ft_projector_forward(clip->projector, a.features, a.selected, selected) < 0)
        return -1;
    ft_backend_download_floats(b, features, a.features, (size_t)selected * text);
    return b->check(b);
}

int ft_vision_clip_features(ft_vision_clip *clip, const float *pixel_values, int n_images, float *features)
{
    size_t image_values = (size_t)3 * clip->config.vision.image_size * clip->config.vision.image_size;
    const float **pixels = ft_xmalloc(((size_t)n_images + 1) * sizeof *pixels);
    for (int i = 0; i < n_images; i++)
        pixels[i] = pixel_values + (size_t)i * image_values;
    int status = features_of(clip, pixels, n_images, features);
    free(pixels);
    return status;
}

int ft_vision_clip_image_features(ft_vision_clip *clip, const ft_stored_image *images, size_t n_images,
                                  float *features)
{
    int size = clip->config.vision.image_size;
    const float **pixels = ft_xmalloc((n_images + 1) * sizeof *pixels);
    for (size_t i = 0; i < n_images; i++) {
        if (images[i].grid_t != 1 || images[i].grid_h != size || images[i].grid_w != size) {
            free(pixels);
            return ft_error("the tokenized images are not CLIP images of %d x %d pixels, which this LLaVA model "
                            "reads: tokenize the data again with this model's folder", size, size);
        }
        pixels[i] = images[i].pixels;
    }
    int status = features_of(clip, pixels, (int)n_images, features);
    free(pixels);
    return status;
}
