/* image_placeholders: a vision-language record's <image> placeholders turned into
 * the image tokens its model reads, as LLaMA-Factory's Qwen2VLPlugin does: each
 * placeholder, in the order of the messages, becomes start + pad x n + end, n the
 * image's token count (grid_t * grid_h * grid_w / merge_size^2).
 *
 * The text gets one pad per image, and the token ids are widened to n pads after
 * tokenizing: the pad is a special token, tokenized alone whatever surrounds it,
 * so the ids equal those of n pads in the text, without n copies of its text. */
#ifndef FTPIPE_IMAGE_PLACEHOLDERS_H
#define FTPIPE_IMAGE_PLACEHOLDERS_H

#include <stddef.h>
#include <stdint.h>

#include "ftpipe/formats/message.h"
#include "ftpipe/text/chat_template.h"
#include "ftpipe/text/token_ids.h"

/* Copies of the messages with each <image> replaced by start + pad + end: one
 * allocation holding messages and text (free it). */
ft_message *ft_image_placeholders_replace(const ft_message *messages, size_t count, const ft_image_tokens *tokens);

typedef struct {
    uint32_t pad_id;
    const uint32_t *n_tokens; /* per image, in placeholder order */
    size_t n_images;
    size_t next;              /* the image the next pad stands for */
} ft_image_pad_widening;

/* Widens each pad in ids, in place, to its image's n_tokens pads. A pad beyond the
 * images (the pad token written in the text itself) is an error. */
int ft_image_pads_widen(ft_image_pad_widening *widening, ft_token_ids *ids);

#endif
