/* llava_model: the vision tower's features in the language model's embeddings. */
#include "ftpipe/model/llava_model.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/llava_config.h"

/* llava-hf's hub checkpoints and transformers 5's saves: language_model.model.*
 * and language_model.lm_head.weight. */
#define TEXT_WEIGHT_PREFIX "language_model."

struct ft_llava_model {
    ft_vision_clip *vision;
    ft_model *text;
};

typedef struct {
    const int32_t *tokens;
    int32_t image_token_id;
    const float *features;
} placing;

int ft_llava_model_load(const char *model_dir, ft_backend *backend, const ft_model_options *options,
                        ft_llava_model **out)
{
    ft_model_config text_config;
    ft_llava_model *model = ft_xcalloc(1, sizeof *model);
    int status = ft_vision_clip_load(model_dir, backend, &model->vision);
    if (status == 0)
        status = ft_llava_text_config_load(model_dir, &text_config);
    if (status == 0 && (ft_vision_clip_config(model->vision)->image_token_id < 0 ||
                        ft_vision_clip_config(model->vision)->image_token_id >= text_config.vocab_size))
        status = ft_error("%s/config.json: the image token %d is outside the vocabulary of %d", model_dir,
                          ft_vision_clip_config(model->vision)->image_token_id, text_config.vocab_size);
    if (status == 0)
        status = ft_model_load_text(model_dir, &text_config, TEXT_WEIGHT_PREFIX, backend, options, &model->text);
    if (status != 0) {
        ft_llava_model_free(model);
        return -1;
    }
    *out = model;
    return 0;
}

void ft_llava_model_free(ft_llava_model *model)
{
    if (!model)
        return;
    ft_model_free(model->text);
    ft_vision_clip_free(model->vision);
    free(model);
}

ft_model *ft_llava_model_text(const ft_llava_model *model) { return model->text; }
ft_vision_clip *ft_llava_model_vision(const ft_llava_model *model) { return model->vision; }

int64_t ft_llava_count_image_tokens(const int32_t *tokens, int n_tokens, int32_t image_token_id)
{
    int64_t count = 0;
    for (int i = 0; i < n_tokens; i++)
        count += tokens[i] == image_token_id;
    return count;
}

void ft_llava_place_image_features(float *embeddings, const int32_t *tokens, int n_tokens, int width,
                                   int32_t image_token_id, const float *features)
{
    for (int i = 0; i < n_tokens; i++)
        if (tokens[i] == image_token_id) {
            memcpy(embeddings + (size_t)i * width, features, (size_t)width * sizeof(float));
            features += width;
        }
}

/* The embedding hook: the cpu backend's embeddings are host floats. */
static void place(void *context, void *embeddings, int rows, int hidden_size)
{
    const placing *p = context;
    ft_llava_place_image_features(embeddings, p->tokens, rows, hidden_size, p->image_token_id, p->features);
}

int ft_llava_model_forward(ft_llava_model *model, const ft_batch *batch, const float *pixel_values, int n_images,
                           float *logits, double *loss)
{
    int rows = batch->batch_size * batch->seq_len;
    int32_t image_token = ft_vision_clip_config(model->vision)->image_token_id;
    int64_t tokens_per_image = ft_vision_clip_tokens_per_image(model->vision);
    int64_t n_image_tokens = ft_llava_count_image_tokens(batch->tokens, rows, image_token);
    if (n_image_tokens != (int64_t)n_images * tokens_per_image)
        return ft_error("the batch holds %lld image tokens, but its %d image%s give %lld features (%lld an image)",
                        (long long)n_image_tokens, n_images, n_images == 1 ? "" : "s",
                        (long long)n_images * tokens_per_image, (long long)tokens_per_image);
    size_t width = (size_t)ft_vision_clip_feature_width(model->vision);
    float *features = ft_xmalloc(((size_t)n_image_tokens ? (size_t)n_image_tokens : 1) * width * sizeof(float));
    int status = n_images ? ft_vision_clip_features(model->vision, pixel_values, n_images, features) : 0;
    placing context = {batch->tokens, image_token, features};
    if (status == 0) {
        ft_model_on_embeddings(model->text, place, &context);
        status = ft_model_forward(model->text, batch, logits, loss);
        ft_model_on_embeddings(model->text, NULL, NULL);
    }
    free(features);
    return status;
}
