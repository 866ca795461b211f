/* A fully fine-tuned model written back: a bf16 or f32 model saved unchanged
 * gives back the same model.safetensors bytes, a float16 config gets f16
 * weights rounded to nearest, and the base's other files are copied. */
#include <math.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/safetensors.h"
#include "ftpipe/model/model_init.h"
#include "ftpipe/model/model_save.h"

static ft_backend *cpu;
static char root[] = "/tmp/ftpipe-model-save.XXXXXX";

static char *write_model(const char *name, ft_dtype dtype)
{
    char *dir = ft_path_join(root, name);
    ft_model_init_options options = {0};
    CHECK_INT(ft_model_shape("tiny", &options.config), 0);
    options.dtype = dtype;
    options.seed = 9;
    options.threads = 1;
    CHECK_INT(ft_model_init_write(dir, &options), 0);
    return dir;
}

static char *save_unchanged(const char *base, const char *name)
{
    ft_model_options options = {1, 8, FT_FINETUNE_FULL, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(base, cpu, &options, &model), 0);
    char *out = ft_path_join(root, name);
    if (model)
        CHECK_INT(ft_model_save(model, base, out), 0);
    ft_model_free(model);
    return out;
}

static bool same_file(const char *dir_a, const char *dir_b, const char *name)
{
    char *a_path = ft_path_join(dir_a, name), *b_path = ft_path_join(dir_b, name);
    char *a = NULL, *b = NULL;
    size_t a_length = 0, b_length = 1;
    bool same = ft_read_file(a_path, &a, &a_length) == 0 && ft_read_file(b_path, &b, &b_length) == 0 &&
                a_length == b_length && memcmp(a, b, a_length) == 0;
    free(a);
    free(b);
    free(a_path);
    free(b_path);
    return same;
}

TEST(an_unchanged_model_saves_to_the_same_bytes)
{
    ft_dtype dtypes[2] = {FT_DTYPE_BF16, FT_DTYPE_F32};
    const char *names[2] = {"bf16", "f32"};
    for (int i = 0; i < 2; i++) {
        char *base = write_model(names[i], dtypes[i]);
        char *out_name = ft_xasprintf("%s-saved", names[i]);
        char *out = save_unchanged(base, out_name);
        CHECK(same_file(base, out, "model.safetensors"));
        CHECK(same_file(base, out, "config.json") && same_file(base, out, "tokenizer.json") &&
              same_file(base, out, "tokenizer_config.json"));
        free(out_name);
        free(out);
        free(base);
    }
}

TEST(float16_configs_get_rounded_f16_weights)
{
    char *base = write_model("f16", FT_DTYPE_F32);
    char *config_path = ft_path_join(base, "config.json");
    char *text = NULL;
    size_t length = 0;
    CHECK_INT(ft_read_file(config_path, &text, &length), 0);
    char *at = text ? strstr(text, "\"float32\"") : NULL;
    CHECK(at != NULL);
    if (at) {
        char *edited = ft_xasprintf("%.*s\"float16\"%s", (int)(at - text), text, at + strlen("\"float32\""));
        CHECK_INT(ft_write_file_atomic(config_path, edited, strlen(edited)), 0);
        free(edited);
    }
    char *out = save_unchanged(base, "f16-saved");
    ft_safetensors *original = NULL, *saved = NULL;
    CHECK_INT(ft_safetensors_open(base, &original), 0);
    CHECK_INT(ft_safetensors_open(out, &saved), 0);
    if (original && saved) {
        const ft_tensor_view *a = ft_safetensors_find(original, "model.layers.0.mlp.up_proj.weight");
        const ft_tensor_view *b = ft_safetensors_find(saved, "model.layers.0.mlp.up_proj.weight");
        CHECK(a && b && b->dtype == FT_DTYPE_F16 && a->n_dims == 2 && b->shape[0] == a->shape[0]);
        if (a && b) {
            size_t n = (size_t)a->shape[0] * (size_t)a->shape[1];
            float *x = ft_xmalloc(n * sizeof(float)), *y = ft_xmalloc(n * sizeof(float));
            CHECK_INT(ft_tensor_to_f32(a, x), 0);
            CHECK_INT(ft_tensor_to_f32(b, y), 0);
            double worst = 0.0; /* f16 keeps 11 significant bits: nearest is within 2^-11 relative */
            for (size_t i = 0; i < n; i++)
                if (fabsf(x[i]) > 6.2e-5f) /* normal halves only */
                    worst = fmax(worst, fabs((double)y[i] - x[i]) / fabs((double)x[i]));
            CHECK(worst > 0.0 && worst <= 1.0 / 2048.0);
            free(x);
            free(y);
        }
        const ft_tensor_view *norm = ft_safetensors_find(saved, "model.norm.weight");
        CHECK(norm && norm->dtype == FT_DTYPE_F16 && ((const uint16_t *)norm->data)[0] == 0x3c00); /* 1.0 */
    }
    ft_safetensors_close(original);
    ft_safetensors_close(saved);
    free(text);
    free(config_path);
    free(out);
    free(base);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    cpu = ft_backend_cpu_create(1);
    RUN(an_unchanged_model_saves_to_the_same_bytes);
    RUN(float16_configs_get_rounded_f16_weights);
    ft_backend_destroy(cpu);
    ft_remove_tree(root);
    return check_done();
}
