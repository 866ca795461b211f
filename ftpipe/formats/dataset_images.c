/* dataset_images: a record's image paths found and counted as LLaMA-Factory does. */
#include "ftpipe/formats/dataset_images.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"

size_t ft_count_image_placeholders(const ft_message *messages, size_t n_messages)
{
    size_t count = 0;
    for (size_t i = 0; i < n_messages; i++)
        for (const char *at = messages[i].content; at && (at = strstr(at, FT_IMAGE_PLACEHOLDER));
             at += strlen(FT_IMAGE_PLACEHOLDER))
            count++;
    return count;
}

static int is_file(const char *path)
{
    struct stat info;
    return stat(path, &info) == 0 && S_ISREG(info.st_mode);
}

void ft_record_images_free(ft_record_images *images)
{
    for (size_t i = 0; i < images->count; i++)
        free(images->paths[i]);
    free(images->paths);
    images->paths = NULL;
    images->count = 0;
}

int ft_record_images_resolve(const char *const *names, size_t n_names, const ft_message *messages,
                             size_t n_messages, const char *folder, ft_record_images *out)
{
    out->paths = NULL;
    out->count = 0;
    size_t n_placeholders = ft_count_image_placeholders(messages, n_messages);
    if (n_placeholders != n_names)
        return ft_error("%zu %s placeholder%s in the messages but %zu image%s in \"images\": "
                        "each image needs one %s where it belongs in the text",
                        n_placeholders, FT_IMAGE_PLACEHOLDER, n_placeholders == 1 ? "" : "s",
                        n_names, n_names == 1 ? "" : "s", FT_IMAGE_PLACEHOLDER);
    out->paths = ft_xcalloc(n_names ? n_names : 1, sizeof(char *));
    for (size_t i = 0; i < n_names; i++) {
        if (!names[i] || !*names[i]) {
            ft_record_images_free(out);
            return ft_error("image %zu is empty: give a path relative to %s", i + 1, folder);
        }
        char *joined = ft_path_join(folder, names[i]);
        if (is_file(joined)) {
            out->paths[out->count++] = joined;
            continue;
        }
        free(joined);
        if (is_file(names[i])) {
            out->paths[out->count++] = ft_xstrdup(names[i]);
            continue;
        }
        ft_record_images_free(out);
        return ft_error("image %zu '%s' is not a file, neither in the dataset folder %s nor as written: correct "
                        "the path or add the image",
                        i + 1, names[i], folder);
    }
    return 0;
}
