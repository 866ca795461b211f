/* Vision-language models on the cuda backend against the cpu backend: tiny
 * Qwen2-VL, Qwen2.5-VL and LLaVA as ftpipe's init writes them (random weights,
 * written here), with random images (Qwen: two of different grids, Qwen2.5-VL's
 * windows ragged at the first one's edge; LLaVA: one 336 x 336). The tower's
 * image features and the LoRA model's logits within a relative error of 3e-2,
 * the loss within 1e-2; the memory plan counts the tower in bf16 (half the cpu
 * plan's weights); and a few LoRA steps on the GPU lower the loss. With LoRA on
 * the projector's layers too, their adapters' gradients (through the projector's
 * GELU backward in bf16) within 5e-2 of the cpu backend's. */
#include <unistd.h>

#include "gpu_check.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/formats/model_config.h"
#include "ftpipe/model/adamw.h"
#include "ftpipe/model/llava_init.h"
#include "ftpipe/model/lora.h"
#include "ftpipe/model/model.h"
#include "ftpipe/model/model_init.h"
#include "ftpipe/model/vision_clip.h"
#include "ftpipe/model/vision_qwen2.h"

#define FEATURES_TOLERANCE 3e-2
#define LOGITS_TOLERANCE 3e-2

static char root[] = "/tmp/ftpipe-test-cuda-vl-XXXXXX";

/* A model folder of the init shape `name` (written once). Caller frees. */
static char *write_shape(const char *name)
{
    char *dir = ft_path_join(root, name);
    if (access(dir, F_OK) == 0)
        return dir;
    ft_model_init_options options = {0};
    options.dtype = FT_DTYPE_F32;
    options.seed = 7;
    int status;
    if (ft_llava_is_shape(name)) {
        ft_llava_shape shape;
        status = ft_llava_shape_get(name, &shape) < 0 ? -1 : ft_llava_init_write(dir, &shape, &options);
    } else {
        status = ft_model_shape(name, &options.config) < 0 ? -1 : ft_model_init_write(dir, &options);
    }
    if (status < 0) {
        fprintf(stderr, "  %s: %s\n", name, ft_error_message());
        check_case_failed = 1;
    }
    return dir;
}

/* One row of SEQ tokens with the images' tokens in it, and the images. */
enum { QWEN_SEQ = 40, LLAVA_SEQ = 600, MAX_IMAGES = 2 };

typedef struct {
    int seq_len, n_images;
    int32_t tokens[LLAVA_SEQ], positions[LLAVA_SEQ], segments[LLAVA_SEQ], targets[LLAVA_SEQ];
    ft_stored_image images[MAX_IMAGES];
    float *pixels[MAX_IMAGES];
    ft_batch batch;
} vl_batch;

/* Text tokens 3..102; `count` image tokens at `at` (with Qwen's start and end around them). */
static int place_image(vl_batch *b, const ft_model_config *c, int at, int count)
{
    if (c->vision_language)
        b->tokens[at++] = c->vision_start_token_id;
    for (int i = 0; i < count; i++)
        b->tokens[at++] = c->image_token_id;
    if (c->vision_language)
        b->tokens[at++] = c->vision_end_token_id;
    return at;
}

static void make_batch(vl_batch *b, const ft_model_config *c)
{
    memset(b, 0, sizeof *b);
    b->seq_len = c->llava ? LLAVA_SEQ : QWEN_SEQ;
    for (int t = 0; t < b->seq_len; t++) {
        b->tokens[t] = 3 + (t * 37) % 100;
        b->positions[t] = t;
    }
    if (c->llava) { /* one 336 x 336 image of 576 tokens */
        b->n_images = 1;
        place_image(b, c, 5, 576);
        b->pixels[0] = ft_xmalloc((size_t)3 * 336 * 336 * sizeof(float));
        fill(b->pixels[0], (size_t)3 * 336 * 336, 100, 1.0f);
        b->images[0] = (ft_stored_image){{0, 0}, 1, 336, 336, b->pixels[0]};
    } else { /* grids 1 x 4 x 6 (6 tokens) and 1 x 4 x 4 (4 tokens) */
        static const int grid_w[2] = {6, 4};
        int at = place_image(b, c, 3, 6);
        place_image(b, c, at + 5, 4);
        b->n_images = 2;
        for (int i = 0; i < 2; i++) {
            size_t count = (size_t)4 * grid_w[i] * ft_vision_qwen2_patch_length(&c->vision);
            b->pixels[i] = ft_xmalloc(count * sizeof(float));
            fill(b->pixels[i], count, 101 + i, 1.0f);
            b->images[i] = (ft_stored_image){{0, 0}, 1, 4, grid_w[i], b->pixels[i]};
        }
    }
    for (int t = 0; t < b->seq_len; t++) {
        bool last = t + 1 == b->seq_len;
        b->targets[t] = last || b->tokens[t + 1] == c->image_token_id ? -100 : b->tokens[t + 1];
    }
    b->batch = (ft_batch){1, b->seq_len, b->tokens, b->positions, b->segments, b->targets, 0, 0};
}

static void free_batch(vl_batch *b)
{
    for (int i = 0; i < MAX_IMAGES; i++)
        free(b->pixels[i]);
}

/* The tower alone on each backend: the features of the batch's images. */
static void check_features(const char *name, const char *dir, const ft_model_config *c, const vl_batch *b)
{
    float *expected = NULL, *got = NULL;
    size_t count = 0;
    if (c->llava) {
        ft_vision_clip *on_cpu = NULL, *on_gpu = NULL;
        if (ft_vision_clip_load(dir, cpu, &on_cpu) == 0 && ft_vision_clip_load(dir, gpu, &on_gpu) == 0) {
            count = (size_t)b->n_images * ft_vision_clip_tokens_per_image(on_cpu) * ft_vision_clip_feature_width(on_cpu);
            expected = ft_xmalloc(count * sizeof(float));
            got = ft_xmalloc(count * sizeof(float));
            CHECK_INT(ft_vision_clip_image_features(on_cpu, b->images, (size_t)b->n_images, expected), 0);
            CHECK_INT(ft_vision_clip_image_features(on_gpu, b->images, (size_t)b->n_images, got), 0);
        } else {
            fprintf(stderr, "  %s\n", ft_error_message());
            check_case_failed = 1;
        }
        ft_vision_clip_free(on_cpu);
        ft_vision_clip_free(on_gpu);
    } else {
        ft_vision_qwen2 *on_cpu = NULL, *on_gpu = NULL;
        if (ft_vision_qwen2_load(dir, &c->vision, cpu, &on_cpu) == 0 &&
            ft_vision_qwen2_load(dir, &c->vision, gpu, &on_gpu) == 0) {
            for (int i = 0; i < b->n_images; i++)
                count += (size_t)ft_vision_qwen2_image_tokens(&c->vision, &b->images[i]) * c->vision.out_hidden;
            expected = ft_xmalloc(count * sizeof(float));
            got = ft_xmalloc(count * sizeof(float));
            CHECK_INT(ft_vision_qwen2_forward(on_cpu, b->images, (size_t)b->n_images, expected), 0);
            CHECK_INT(ft_vision_qwen2_forward(on_gpu, b->images, (size_t)b->n_images, got), 0);
        } else {
            fprintf(stderr, "  %s\n", ft_error_message());
            check_case_failed = 1;
        }
        ft_vision_qwen2_free(on_cpu);
        ft_vision_qwen2_free(on_gpu);
    }
    CHECK_NO_GPU_FAILURE();
    if (expected && got) {
        char what[96];
        snprintf(what, sizeof what, "%s image features (%zu values)", name, count);
        CHECK_CLOSE(what, got, expected, count, FEATURES_TOLERANCE);
    }
    free(expected);
    free(got);
}

#define PROJECTOR_GRADIENT_TOLERANCE 5e-2

static ft_model *load_lora_model_on(const char *dir, ft_backend *backend, int seq_len, unsigned targets)
{
    ft_model_options options = {1, seq_len, FT_FINETUNE_LORA, true, {8, 16.0, 0.0, false, targets, 3},
                                false, false, false, 0, 0, false};
    ft_model *model = NULL;
    if (ft_model_load(dir, backend, &options, &model) < 0) {
        fprintf(stderr, "  %s (%s backend)\n", ft_error_message(), backend->name);
        check_case_failed = 1;
        return NULL;
    }
    return model;
}

static ft_model *load_lora_model(const char *dir, ft_backend *backend, int seq_len)
{
    return load_lora_model_on(dir, backend, seq_len, FT_LORA_ALL_TARGETS);
}

/* The init shape `name` written under root, and its config; NULL (the case
 * failed) when either cannot be had. */
static char *shape_folder(const char *name, ft_model_config *config)
{
    if (mkdtemp(root) == NULL && access(root, F_OK) != 0) {
        fprintf(stderr, "  cannot make %s\n", root);
        check_case_failed = 1;
        return NULL;
    }
    char *dir = write_shape(name);
    if (ft_language_model_config_load(dir, config) < 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        check_case_failed = 1;
        free(dir);
        return NULL;
    }
    return dir;
}

/* Each projector adapter's B set to the same random values in both models, so
 * that A's gradients show too. */
static void randomize_projector_b(ft_model *model, ft_backend *backend)
{
    for (int which = 0; which < 2; which++) {
        const ft_lora_weights *w = ft_lora_projector_at(ft_model_lora(model), which);
        size_t n = (size_t)w->out_features * 8;
        float *host = ft_xmalloc(n * sizeof(float));
        fill(host, n, 40 + (uint64_t)which, 0.05f);
        backend->upload(backend, w->b, host, n * sizeof(float));
        free(host);
    }
}

/* LoRA on the projector's two layers beside the language model's: one
 * forward and backward on each backend, the projector's adapters' gradients
 * compared. */
static void check_projector_lora(const char *name)
{
    ft_model_config config;
    char *dir = shape_folder(name, &config);
    if (!dir)
        return;
    vl_batch b;
    make_batch(&b, &config);
    unsigned targets = FT_LORA_ALL_TARGETS | FT_LORA_PROJECTOR_TARGETS;
    ft_model *cuda = load_lora_model_on(dir, gpu, b.seq_len, targets);
    ft_model *reference_model = load_lora_model_on(dir, cpu, b.seq_len, targets);
    if (cuda && reference_model) {
        randomize_projector_b(cuda, gpu);
        randomize_projector_b(reference_model, cpu);
        double loss, cpu_loss;
        CHECK_INT(ft_model_set_images(cuda, b.images, b.n_images), 0);
        CHECK_INT(ft_model_forward_backward(cuda, &b.batch, &loss), 0);
        CHECK_INT(ft_model_set_images(reference_model, b.images, b.n_images), 0);
        CHECK_INT(ft_model_forward_backward(reference_model, &b.batch, &cpu_loss), 0);
        size_t n, n_cpu;
        const ft_param_tensor *tensors = ft_model_trainable(cuda, &n);
        const ft_param_tensor *cpu_tensors = ft_model_trainable(reference_model, &n_cpu);
        CHECK_INT(n, n_cpu);
        for (size_t i = n >= 4 ? n - 4 : 0; i < n && n == n_cpu; i++) { /* the projector's A, B, A, B */
            float *got = ft_xmalloc(tensors[i].count * sizeof(float));
            gpu->download(gpu, got, tensors[i].grad, tensors[i].count * sizeof(float));
            char what[160];
            snprintf(what, sizeof what, "%s %s", name, strstr(tensors[i].name, "model.") + 6);
            CHECK_CLOSE(what, got, cpu_tensors[i].grad, tensors[i].count, PROJECTOR_GRADIENT_TOLERANCE);
            free(got);
        }
        CHECK_NO_GPU_FAILURE();
    }
    ft_model_free(cuda);
    ft_model_free(reference_model);
    free_batch(&b);
    free(dir);
}

/* The whole model: logits and loss against the cpu backend's, the plan, then LoRA steps. */
static void check_model(const char *name)
{
    ft_model_config config;
    char *dir = shape_folder(name, &config);
    if (!dir)
        return;
    vl_batch b;
    make_batch(&b, &config);
    check_features(name, dir, &config, &b);
    ft_model *cuda = load_lora_model(dir, gpu, b.seq_len), *reference_model = load_lora_model(dir, cpu, b.seq_len);
    ft_adamw *optimizer = NULL;
    if (!cuda || !reference_model)
        goto done;
    size_t n_logits = (size_t)b.seq_len * ft_model_get_config(cuda)->vocab_size;
    float *logits = ft_xmalloc(n_logits * sizeof(float)), *cpu_logits = ft_xmalloc(n_logits * sizeof(float));
    double loss, cpu_loss;
    CHECK_INT(ft_model_set_images(cuda, b.images, b.n_images), 0);
    CHECK_INT(ft_model_forward(cuda, &b.batch, logits, &loss), 0);
    CHECK_INT(ft_model_set_images(reference_model, b.images, b.n_images), 0);
    CHECK_INT(ft_model_forward(reference_model, &b.batch, cpu_logits, &cpu_loss), 0);
    char what[96];
    snprintf(what, sizeof what, "%s logits vs cpu", name);
    CHECK_CLOSE(what, logits, cpu_logits, n_logits, LOGITS_TOLERANCE);
    snprintf(what, sizeof what, "%s loss vs cpu", name);
    gpu_check_loss(what, loss, cpu_loss);
    free(logits);
    free(cpu_logits);

    /* the plan holds the tower in bf16: half the cpu plan's weights; its pass at the most patches */
    ft_memory_plan plan = ft_model_memory(cuda), cpu_plan = ft_model_memory(reference_model);
    size_t tower_pass = config.llava ? 0 : ft_vision_qwen2_work_bytes(&config.vision, (int64_t)b.seq_len * 4, 2);
    printf("# %s plan on cuda: weights %zu bytes (cpu %zu), activations %zu (tower pass %zu)\n", name,
           plan.parameter_bytes, cpu_plan.parameter_bytes, plan.activation_bytes, tower_pass);
    CHECK_INT(plan.parameter_bytes * 2, cpu_plan.parameter_bytes);
    CHECK(plan.activation_bytes > tower_pass);

    size_t count;
    const ft_param_tensor *trainable = ft_model_trainable(cuda, &count);
    ft_adamw_config adamw = {0.9, 0.999, 1e-8, 0.0};
    CHECK_INT(ft_adamw_create(gpu, trainable, count, &adamw, &optimizer), 0);
    double first = 0.0;
    for (int step = 0; optimizer && step < 15; step++) {
        ft_model_zero_grads(cuda);
        CHECK_INT(ft_model_set_images(cuda, b.images, b.n_images), 0);
        CHECK_INT(ft_model_forward_backward(cuda, &b.batch, &loss), 0);
        if (step == 0)
            first = loss;
        ft_adamw_clip_grad_norm(optimizer, 1.0);
        ft_adamw_step(optimizer, 1e-2);
    }
    printf("# %s LoRA on the GPU: loss %.4f -> %.4f in 15 steps\n", name, first, loss);
    CHECK(loss < first - 0.05);
    CHECK_NO_GPU_FAILURE();
done:
    ft_adamw_free(optimizer);
    ft_model_free(cuda);
    ft_model_free(reference_model);
    free_batch(&b);
    free(dir);
}

TEST(tiny_qwen2_vl_matches_cpu_and_trains) { check_model("tiny-qwen2-vl"); }
TEST(tiny_qwen2_5_vl_matches_cpu_and_trains) { check_model("tiny-qwen2.5-vl"); }
TEST(tiny_llava_matches_cpu_and_trains) { check_model("tiny-llava"); }
TEST(projector_lora_gradients_match_cpu)
{
    check_projector_lora("tiny-qwen2-vl");
    check_projector_lora("tiny-qwen2.5-vl");
    check_projector_lora("tiny-llava");
}

int main(void)
{
    int started = start_backends();
    if (started < 0)
        return 1;
    GPU_RUN(tiny_qwen2_vl_matches_cpu_and_trains);
    GPU_RUN(tiny_qwen2_5_vl_matches_cpu_and_trains);
    GPU_RUN(tiny_llava_matches_cpu_and_trains);
    GPU_RUN(projector_lora_gradients_match_cpu);
    if (started > 0)
        ft_remove_tree(root);
    ft_backend_destroy(gpu);
    ft_backend_destroy(cpu);
    return check_done();
}
