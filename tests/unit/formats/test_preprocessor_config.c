/* preprocessor_config: Qwen2-VL's preprocessor_config.json as transformers reads
 * it (size, then min_pixels / max_pixels over it), LLaVA's CLIPImageProcessor
 * (sizes as objects or numbers), defaults for absent keys, and every bad file an
 * error naming it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/formats/preprocessor_config.h"

static char *folder_with_config(const char *text)
{
    char *dir = ft_xstrdup("/tmp/ftpipe-test-preprocessor.XXXXXX");
    if (!mkdtemp(dir))
        abort();
    if (text) {
        char *path = ft_path_join(dir, FT_PREPROCESSOR_CONFIG_FILE);
        CHECK_INT(ft_write_file_atomic(path, text, strlen(text)), 0);
        free(path);
    }
    return dir;
}

static int load(const char *text, ft_qwen2vl_image_options *options, char **dir)
{
    *dir = folder_with_config(text);
    return ft_qwen2vl_image_options_load(*dir, options);
}

static void done(char *dir)
{
    ft_remove_tree(dir);
    free(dir);
}

TEST(reads_qwen2_vl_config_as_transformers_does)
{
    ft_qwen2vl_image_options options;
    char *dir;
    /* Qwen2-VL-2B-Instruct's file: min_pixels / max_pixels win over size */
    CHECK_INT(load("{\"min_pixels\": 3136, \"max_pixels\": 12845056, \"patch_size\": 14, \"temporal_patch_size\": 2,"
                   " \"merge_size\": 2, \"image_mean\": [0.48145466, 0.4578275, 0.40821073], \"image_std\": "
                   "[0.26862954, 0.26130258, 0.27577711], \"image_processor_type\": \"Qwen2VLImageProcessor\", "
                   "\"size\": {\"shortest_edge\": 1, \"longest_edge\": 2}}",
                   &options, &dir),
              0);
    CHECK_INT(options.min_pixels, 3136);
    CHECK_INT(options.max_pixels, 12845056);
    CHECK_INT(options.patch_size, 14);
    CHECK_INT(options.merge_size, 2);
    CHECK(options.std[2] > 0.2757f && options.std[2] < 0.2758f);
    CHECK_INT(options.image_max_pixels, FT_IMAGE_MAX_PIXELS_DEFAULT);
    done(dir);
    /* a tiny test processor: size only, other keys default */
    CHECK_INT(load("{\"size\": {\"shortest_edge\": 784, \"longest_edge\": 50176}, \"merge_size\": 2}", &options, &dir),
              0);
    CHECK_INT(options.min_pixels, 784);
    CHECK_INT(options.max_pixels, 50176);
    CHECK_INT(options.temporal_patch_size, 2);
    CHECK(options.mean[0] > 0.4814f && options.mean[0] < 0.4815f);
    done(dir);
}

TEST(refuses_bad_files_naming_them)
{
    static const struct {
        const char *text, *message;
    } cases[] = {
        {NULL, "has no preprocessor_config.json: images are preprocessed as the model's processor says"},
        {"{\"min_pixels\": ", "preprocessor_config.json: not valid JSON"},
        {"[1]", "preprocessor_config.json: expected an object"},
        {"{\"merge_size\": 0}", "preprocessor_config.json: \"merge_size\" must be a positive whole number"},
        {"{\"patch_size\": \"14\"}", "preprocessor_config.json: \"patch_size\" must be a positive whole number"},
        {"{\"size\": 5}", "\"size\" must be an object {\"shortest_edge\", \"longest_edge\"}"},
        {"{\"image_mean\": [0.5, 0.5]}", "\"image_mean\" must be a list of 3 numbers (red, green, blue)"},
        {"{\"image_std\": [0.5, 0, 0.5]}", "\"image_std\" must be 3 positive numbers"},
        {"{\"min_pixels\": 5000, \"max_pixels\": 4000}", "the smallest image (5000 pixels) is larger than the largest"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ft_qwen2vl_image_options options;
        char *dir;
        CHECK_INT(load(cases[i].text, &options, &dir), -1);
        CHECK(strstr(ft_error_message(), cases[i].message) != NULL);
        CHECK(strncmp(ft_error_message(), dir, strlen(dir)) == 0);
        done(dir);
    }
}

static int load_clip(const char *text, ft_clip_image_options *options, char **dir)
{
    *dir = folder_with_config(text);
    return ft_clip_image_options_load(*dir, options);
}

TEST(reads_llava_clip_config_as_transformers_does)
{
    ft_clip_image_options options;
    char *dir;
    /* llava-hf/llava-1.5-7b-hf's file */
    CHECK_INT(load_clip("{\"crop_size\": {\"height\": 336, \"width\": 336}, \"do_center_crop\": true, "
                        "\"do_normalize\": true, \"do_resize\": true, \"image_mean\": [0.5, 0.25, 0.125], "
                        "\"image_std\": [0.2, 0.3, 0.4], \"resample\": 3, \"size\": {\"shortest_edge\": 336}}",
                        &options, &dir),
              0);
    CHECK_INT(options.shortest_edge, 336);
    CHECK_INT(options.crop_height, 336);
    CHECK_INT(options.crop_width, 336);
    CHECK(options.mean[2] == 0.125f && options.std[1] == 0.3f);
    done(dir);
    /* older files give sizes as numbers; absent keys keep CLIP's defaults */
    CHECK_INT(load_clip("{\"crop_size\": 224, \"size\": 256}", &options, &dir), 0);
    CHECK_INT(options.shortest_edge, 256);
    CHECK_INT(options.crop_height * 1000 + options.crop_width, 224224);
    CHECK(options.mean[0] == 0.48145466f && options.std[2] == 0.27577711f);
    done(dir);
}

TEST(refuses_clip_settings_it_does_not_compute)
{
    static const struct {
        const char *text, *message;
    } cases[] = {
        {"{\"resample\": 2}", "\"resample\" must be 3 (bicubic), the only resampling ftpipe computes"},
        {"{\"do_center_crop\": false}", "\"do_center_crop\" must be true: ftpipe preprocesses LLaVA images as "
                                        "CLIPImageProcessor does by default"},
        {"{\"crop_size\": {\"height\": -1}}", "\"height\" must be a positive whole number"},
        {"{\"image_std\": [1, 0, 1]}", "\"image_std\" must be 3 positive numbers"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ft_clip_image_options options;
        char *dir;
        CHECK_INT(load_clip(cases[i].text, &options, &dir), -1);
        CHECK(strstr(ft_error_message(), cases[i].message) != NULL);
        CHECK(strstr(ft_error_message(), FT_PREPROCESSOR_CONFIG_FILE) != NULL);
        if (!strstr(ft_error_message(), cases[i].message))
            fprintf(stderr, "  case %zu said: %s\n", i, ft_error_message());
        done(dir);
    }
}

int main(void)
{
    RUN(reads_qwen2_vl_config_as_transformers_does);
    RUN(refuses_bad_files_naming_them);
    RUN(reads_llava_clip_config_as_transformers_does);
    RUN(refuses_clip_settings_it_does_not_compute);
    return check_done();
}
