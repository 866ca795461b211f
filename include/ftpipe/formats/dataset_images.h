/* dataset_images: a multimodal record's images as LLaMA-Factory finds them: each
 * entry of its "images" column joined to the dataset's folder (LLaMA-Factory's
 * media_dir, the dataset_dir by default) when that names a file, else taken as
 * written; and as many <image> placeholders in the messages as there are images.
 * Errors name the image; the dataset reader puts the file and record before them. */
#ifndef FTPIPE_DATASET_IMAGES_H
#define FTPIPE_DATASET_IMAGES_H

#include <stddef.h>

#include "ftpipe/formats/message.h"

#define FT_IMAGE_PLACEHOLDER "<image>"

typedef struct {
    char **paths; /* owned, count of them */
    size_t count;
} ft_record_images;

/* The <image> placeholders in all the messages' contents. */
size_t ft_count_image_placeholders(const ft_message *messages, size_t n_messages);

/* names: the record's images as written; folder: the dataset's folder. */
int ft_record_images_resolve(const char *const *names, size_t n_names, const ft_message *messages,
                             size_t n_messages, const char *folder, ft_record_images *out);
void ft_record_images_free(ft_record_images *images);

#endif
