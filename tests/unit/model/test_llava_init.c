/* llava_init: the LLaVA shapes (parameter counts of the released models), and a
 * tiny-llava folder that ftpipe's LLaVA loads and runs, its tokenizer with
 * <image>, its configs as llava-hf writes them. That transformers loads such a
 * folder was checked by hand in the oracle environment (LlavaForConditionalGeneration
 * .from_pretrained, no missing weights). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/preprocessor_config.h"
#include "ftpipe/model/llava_init.h"
#include "ftpipe/model/model.h"
#include "ftpipe/text/tokenizer.h"

TEST(shapes_count_the_released_models_parameters)
{
    ft_llava_shape shape;
    CHECK_INT(ft_llava_shape_get("llava-1.5-7b", &shape), 0);
    CHECK_INT(ft_llava_parameter_count(&shape), 7063427072); /* llava-hf/llava-1.5-7b-hf */
    CHECK_INT(shape.llava.image_token_id, 32000);
    CHECK_INT(ft_llava_image_tokens(&shape.llava), 576);
    CHECK_INT(ft_llava_shape_get("llava-llama3-8b", &shape), 0);
    CHECK_INT(shape.text.vocab_size, 128320);
    CHECK_INT(shape.text.num_key_value_heads, 8);
    CHECK(ft_llava_is_shape("tiny-llava") && !ft_llava_is_shape("tiny"));
    CHECK_INT(ft_llava_shape_get("llava-13b", &shape), -1);
    CHECK_STR(ft_error_message(), "unknown LLaVA shape 'llava-13b'; known: tiny-llava, llava-1.5-7b, llava-llama3-8b");
}

TEST(tiny_llava_loads_and_runs)
{
    char *dir = ft_xstrdup("/tmp/ftpipe-test-llava-init.XXXXXX");
    if (!mkdtemp(dir))
        abort();
    ft_llava_shape shape;
    CHECK_INT(ft_llava_shape_get("tiny-llava", &shape), 0);
    ft_model_init_options options = {.dtype = FT_DTYPE_F32, .seed = 7, .threads = 1};
    CHECK_INT(ft_llava_init_write(dir, &shape, &options), 0);

    ft_tokenizer *tokenizer;
    CHECK_INT(ft_tokenizer_load(dir, &tokenizer), 0);
    CHECK_INT(ft_tokenizer_token_id(tokenizer, "<image>"), FT_BUILTIN_TOKENIZER_VOCAB);
    ft_tokenizer_free(tokenizer);
    ft_clip_image_options clip;
    CHECK_INT(ft_clip_image_options_load(dir, &clip), 0);
    CHECK_INT(clip.crop_height * 1000 + clip.shortest_edge, 336336);

    ft_backend *backend = ft_backend_cpu_create(1);
    enum { SEQ = 580 };
    ft_model_options model_options = {1, SEQ, FT_FINETUNE_NONE, false, {0}, false, false, false, 0, 0, false};
    ft_model *model = NULL;
    CHECK_INT(ft_model_load(dir, backend, &model_options, &model), 0);
    if (model) {
        CHECK(ft_model_get_config(model)->llava);
        int32_t tokens[SEQ], positions[SEQ], segments[SEQ], targets[SEQ];
        for (int i = 0; i < SEQ; i++) {
            tokens[i] = i < 2 || i >= 578 ? 65 + i % 7 : FT_BUILTIN_TOKENIZER_VOCAB;
            positions[i] = i;
            segments[i] = 0;
        }
        for (int i = 0; i < SEQ; i++) /* after the loop above: target i is token i + 1 */
            targets[i] = i + 1 < SEQ ? tokens[i + 1] : -100;
        float *pixels = ft_xcalloc((size_t)3 * 336 * 336, sizeof(float));
        for (size_t i = 0; i < (size_t)3 * 336 * 336; i++)
            pixels[i] = (float)((int)(i % 97) - 48) / 30.0f;
        ft_batch batch = {1, SEQ, tokens, positions, segments, targets, 0, 0};
        double loss = 0.0;
        ft_stored_image image = {{0, 0}, 1, 336, 336, pixels};
        CHECK_INT(ft_model_set_images(model, &image, 1), 0);
        CHECK_INT(ft_model_forward(model, &batch, NULL, &loss), 0); /* 576 image tokens: one image's */
        /* random weights: the loss is near ln(vocab) */
        CHECK(isfinite(loss) && fabs(loss - log(FT_BUILTIN_TOKENIZER_VOCAB + 1)) < 1.0);
        free(pixels);
    }
    ft_model_free(model);
    ft_backend_destroy(backend);
    ft_remove_tree(dir);
    free(dir);
}

int main(void)
{
    RUN(shapes_count_the_released_models_parameters);
    RUN(tiny_llava_loads_and_runs);
    return check_done();
}
