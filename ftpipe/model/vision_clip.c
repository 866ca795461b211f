/* vision_clip: the CLIP vision tower and LLaVA's projector, forward, in fp32. */
#include "ftpipe/model/vision_clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"

typedef struct {
    float *weight, *bias;
} linear_weights;

typedef struct {
    linear_weights layer_norm1, q_proj, k_proj, v_proj, out_proj, layer_norm2, fc1, fc2;
} encoder_layer;

struct ft_vision_clip {
    ft_llava_config config;
    ft_backend *backend;
    int n_layers_run;      /* the encoder layers before the feature layer's hidden state */
    int side;              /* patches along an image side */
    int n_positions;       /* patches + CLS */
    float *patch_embedding; /* [hidden, 3 * patch * patch]: the convolution as a matrix */
    float *class_embedding, *position_embedding;
    linear_weights pre_layernorm, projector_1, projector_2;
    encoder_layer *layers;
    float **owned;         /* every weight, for freeing */
    size_t n_owned, owned_capacity;
    size_t weight_bytes;   /* of all of them */
};

/* --- loading --- */

typedef struct {
    const ft_safetensors *set;
    const char *model_dir;
    const char *vision_prefix, *projector_prefix;
    ft_vision_clip *clip;
} loader;

static int load_tensor(loader *from, const char *prefix, const char *name, int64_t rows, int64_t columns,
                       float **out)
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
    float *values = ft_xmalloc((size_t)count * sizeof(float));
    ft_grow((void **)&from->clip->owned, &from->clip->owned_capacity, from->clip->n_owned + 1, sizeof(float *));
    from->clip->owned[from->clip->n_owned++] = values;
    from->clip->weight_bytes += (size_t)count * sizeof(float);
    *out = values;
    return ft_tensor_to_f32(view, values);
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

int ft_vision_clip_load(const char *model_dir, ft_backend *backend, ft_vision_clip **out)
{
    if (strcmp(backend->name, "cpu") != 0 || backend->dtype != FT_DTYPE_F32)
        return ft_error("LLaVA's vision tower runs on the cpu backend only for now, not on %s", backend->name);
    ft_vision_clip *clip = ft_xcalloc(1, sizeof *clip);
    clip->backend = backend;
    if (ft_llava_config_load(model_dir, &clip->config) != 0) {
        free(clip);
        return -1;
    }
    const ft_clip_vision_config *vision = &clip->config.vision;
    int layer = clip->config.vision_feature_layer; /* an index into [embeddings, layer 1, ..., layer L] */
    clip->n_layers_run = layer >= 0 ? layer : vision->num_hidden_layers + 1 + layer;
    clip->side = vision->image_size / vision->patch_size;
    clip->n_positions = clip->side * clip->side + 1;
    ft_safetensors *set;
    int status = ft_safetensors_open(model_dir, &set);
    if (status == 0) {
        status = load_weights(clip, model_dir, set);
        ft_safetensors_close(set);
    }
    if (status != 0) {
        ft_vision_clip_free(clip);
        return -1;
    }
    *out = clip;
    return 0;
}

void ft_vision_clip_free(ft_vision_clip *clip)
{
    if (!clip)
        return;
    for (size_t i = 0; i < clip->n_owned; i++)
        free(clip->owned[i]);
    free(clip->owned);
    free(clip->layers);
    free(clip);
}

const ft_llava_config *ft_vision_clip_config(const ft_vision_clip *clip) { return &clip->config; }
size_t ft_vision_clip_weight_bytes(const ft_vision_clip *clip) { return clip->weight_bytes; }

int ft_vision_clip_tokens_per_image(const ft_vision_clip *clip) { return (int)ft_llava_image_tokens(&clip->config); }
int ft_vision_clip_feature_width(const ft_vision_clip *clip) { return clip->config.text_hidden_size; }

/* --- forward --- */

/* Per image: activations of n_positions rows. */
typedef struct {
    float *x, *normed, *q, *k, *v, *attention, *mlp;
    float *head_q, *head_k, *head_v_t, *scores, *head_out;
} work_buffers;

static void linear(ft_vision_clip *clip, float *out, const float *x, const linear_weights *w, int rows, int in,
                   int out_features)
{
    clip->backend->linear_forward(clip->backend, out, x, w->weight, w->bias, NULL, rows, in, out_features);
}

/* torch.nn.LayerNorm: mean and variance over the row, in double. */
static void layer_norm(float *out, const float *x, const linear_weights *w, int rows, int width, double eps)
{
    for (int r = 0; r < rows; r++) {
        const float *row = x + (size_t)r * width;
        double mean = 0.0, variance = 0.0;
        for (int c = 0; c < width; c++)
            mean += row[c];
        mean /= width;
        for (int c = 0; c < width; c++)
            variance += (row[c] - mean) * (row[c] - mean);
        double scale = 1.0 / sqrt(variance / width + eps);
        for (int c = 0; c < width; c++)
            out[(size_t)r * width + c] = (float)((row[c] - mean) * scale) * w->weight[c] + w->bias[c];
    }
}

/* Each head attends to every position of the image (no mask), scale 1/sqrt(head_dim). */
static void attention(ft_vision_clip *clip, work_buffers *b, int n, int hidden, int heads)
{
    int head_dim = hidden / heads;
    double scale = 1.0 / sqrt((double)head_dim);
    for (int h = 0; h < heads; h++) {
        for (int t = 0; t < n; t++)
            for (int d = 0; d < head_dim; d++) {
                size_t at = (size_t)t * hidden + (size_t)h * head_dim + d;
                b->head_q[(size_t)t * head_dim + d] = b->q[at];
                b->head_k[(size_t)t * head_dim + d] = b->k[at];
                b->head_v_t[(size_t)d * n + t] = b->v[at];
            }
        linear_weights keys = {b->head_k, NULL}, values = {b->head_v_t, NULL};
        linear(clip, b->scores, b->head_q, &keys, n, head_dim, n);
        for (int t = 0; t < n; t++) {
            float *row = b->scores + (size_t)t * n;
            double largest = -INFINITY, sum = 0.0;
            for (int s = 0; s < n; s++)
                largest = fmax(largest, row[s] * scale);
            for (int s = 0; s < n; s++)
                sum += exp(row[s] * scale - largest);
            for (int s = 0; s < n; s++)
                row[s] = (float)(exp(row[s] * scale - largest) / sum);
        }
        linear(clip, b->head_out, b->scores, &values, n, n, head_dim);
        for (int t = 0; t < n; t++)
            memcpy(b->attention + (size_t)t * hidden + (size_t)h * head_dim, b->head_out + (size_t)t * head_dim,
                   (size_t)head_dim * sizeof(float));
    }
}

static void add_into(float *to, const float *from, size_t count)
{
    for (size_t i = 0; i < count; i++)
        to[i] += from[i];
}

static void encoder_layer_forward(ft_vision_clip *clip, const encoder_layer *layer, work_buffers *b)
{
    const ft_clip_vision_config *vision = &clip->config.vision;
    int n = clip->n_positions, hidden = vision->hidden_size, inner = vision->intermediate_size;
    size_t count = (size_t)n * hidden;
    layer_norm(b->normed, b->x, &layer->layer_norm1, n, hidden, vision->layer_norm_eps);
    linear(clip, b->q, b->normed, &layer->q_proj, n, hidden, hidden);
    linear(clip, b->k, b->normed, &layer->k_proj, n, hidden, hidden);
    linear(clip, b->v, b->normed, &layer->v_proj, n, hidden, hidden);
    attention(clip, b, n, hidden, vision->num_attention_heads);
    linear(clip, b->normed, b->attention, &layer->out_proj, n, hidden, hidden);
    add_into(b->x, b->normed, count);
    layer_norm(b->normed, b->x, &layer->layer_norm2, n, hidden, vision->layer_norm_eps);
    linear(clip, b->mlp, b->normed, &layer->fc1, n, hidden, inner);
    for (size_t i = 0; i < (size_t)n * inner; i++) /* quick_gelu: x * sigmoid(1.702 x) */
        b->mlp[i] = b->mlp[i] / (1.0f + expf(-1.702f * b->mlp[i]));
    linear(clip, b->normed, b->mlp, &layer->fc2, n, inner, hidden);
    add_into(b->x, b->normed, count);
}

/* The embeddings of one image into b->x: its patches (each (channel, y, x), as
 * the convolution's weight is laid out) through the patch matrix, CLS first,
 * positions added, then the pre-layernorm. */
static void embed(ft_vision_clip *clip, const float *pixels, float *patches, work_buffers *b)
{
    const ft_clip_vision_config *vision = &clip->config.vision;
    int patch = vision->patch_size, size = vision->image_size, hidden = vision->hidden_size;
    int patch_values = 3 * patch * patch;
    for (int py = 0; py < clip->side; py++)
        for (int px = 0; px < clip->side; px++) {
            float *row = patches + (size_t)(py * clip->side + px) * patch_values;
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < patch; y++)
                    memcpy(row + (c * patch + y) * patch,
                           pixels + ((size_t)c * size + (size_t)py * patch + y) * size + (size_t)px * patch,
                           (size_t)patch * sizeof(float));
        }
    linear_weights patch_matrix = {clip->patch_embedding, NULL};
    memcpy(b->normed, clip->class_embedding, (size_t)hidden * sizeof(float));
    linear(clip, b->normed + hidden, patches, &patch_matrix, clip->n_positions - 1, patch_values, hidden);
    add_into(b->normed, clip->position_embedding, (size_t)clip->n_positions * hidden);
    layer_norm(b->x, b->normed, &clip->pre_layernorm, clip->n_positions, hidden, vision->layer_norm_eps);
}

/* torch's exact GELU: x/2 (1 + erf(x / sqrt 2)). */
static void gelu(float *x, size_t count)
{
    for (size_t i = 0; i < count; i++)
        x[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0))));
}

int ft_vision_clip_features(ft_vision_clip *clip, const float *pixel_values, int n_images, float *features)
{
    const ft_clip_vision_config *vision = &clip->config.vision;
    int n = clip->n_positions, hidden = vision->hidden_size, inner = vision->intermediate_size;
    int head_dim = hidden / vision->num_attention_heads, text = clip->config.text_hidden_size;
    int tokens = ft_vision_clip_tokens_per_image(clip), first = clip->config.select_default ? 1 : 0;
    size_t rows = (size_t)n * hidden;
    size_t head = (size_t)n * head_dim;
    float *block = ft_xmalloc(sizeof(float) * (7 * rows + (size_t)n * inner + 4 * head + (size_t)n * n));
    /* one block, sliced in order */
    float *next = block;
    work_buffers b;
    float **slices[] = {&b.x, &b.normed, &b.q, &b.k, &b.v, &b.attention, &b.mlp, &b.head_q, &b.head_k, &b.head_v_t,
                        &b.scores, &b.head_out};
    size_t sizes[] = {rows, rows, rows, rows, rows, rows, (size_t)n * inner, head, head, head, (size_t)n * n, head};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *slices[i] = next;
        next += sizes[i];
    }
    float *selected = next;
    float *patches = ft_xmalloc(sizeof(float) * (size_t)(n - 1) * 3 * vision->patch_size * vision->patch_size);
    float *middle = ft_xmalloc(sizeof(float) * (size_t)tokens * text);
    size_t image_values = (size_t)3 * vision->image_size * vision->image_size;
    for (int image = 0; image < n_images; image++) {
        embed(clip, pixel_values + (size_t)image * image_values, patches, &b);
        for (int i = 0; i < clip->n_layers_run; i++)
            encoder_layer_forward(clip, &clip->layers[i], &b);
        memcpy(selected, b.x + (size_t)first * hidden, (size_t)tokens * hidden * sizeof(float));
        float *out = features + (size_t)image * tokens * text;
        linear(clip, middle, selected, &clip->projector_1, tokens, hidden, text);
        gelu(middle, (size_t)tokens * text);
        linear(clip, out, middle, &clip->projector_2, tokens, text, text);
    }
    free(middle);
    free(patches);
    free(block);
    return 0;
}

int ft_vision_clip_image_features(ft_vision_clip *clip, const ft_stored_image *images, size_t n_images,
                                  float *features)
{
    int size = clip->config.vision.image_size;
    size_t per_image = (size_t)ft_vision_clip_tokens_per_image(clip) * clip->config.text_hidden_size;
    for (size_t i = 0; i < n_images; i++) {
        if (images[i].grid_t != 1 || images[i].grid_h != size || images[i].grid_w != size)
            return ft_error("the tokenized images are not CLIP images of %d x %d pixels, which this LLaVA model "
                            "reads: tokenize the data again with this model's folder", size, size);
        if (ft_vision_clip_features(clip, images[i].pixels, 1, features + i * per_image) != 0)
            return -1;
    }
    return 0;
}
