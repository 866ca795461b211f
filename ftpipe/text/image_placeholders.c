/* image_placeholders: <image> into the template's image tokens, text then ids. */
#include "ftpipe/text/image_placeholders.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/formats/dataset_images.h"

ft_message *ft_image_placeholders_replace(const ft_message *messages, size_t count, const ft_image_tokens *tokens)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    size_t *offsets = ft_xmalloc((count ? count : 1) * sizeof(size_t));
    size_t placeholder_length = strlen(FT_IMAGE_PLACEHOLDER);
    for (size_t i = 0; i < count; i++) {
        offsets[i] = text.length;
        const char *at = messages[i].content;
        for (const char *found; (found = strstr(at, FT_IMAGE_PLACEHOLDER)); at = found + placeholder_length) {
            ft_strbuf_add(&text, at, (size_t)(found - at));
            ft_strbuf_printf(&text, "%s%s%s", tokens->start, tokens->pad, tokens->end);
        }
        ft_strbuf_puts(&text, at);
        ft_strbuf_add(&text, "", 1);
    }
    size_t messages_bytes = count * sizeof(ft_message);
    char *block = ft_xmalloc(messages_bytes + text.length + 1);
    memcpy(block + messages_bytes, text.data, text.length);
    ft_message *out = (ft_message *)block;
    for (size_t i = 0; i < count; i++)
        out[i] = (ft_message){messages[i].role, block + messages_bytes + offsets[i]};
    free(offsets);
    ft_strbuf_free(&text);
    return out;
}

int ft_image_pads_widen(ft_image_pad_widening *widening, ft_token_ids *ids)
{
    size_t n_pads = 0, extra = 0;
    for (size_t i = 0; i < ids->count; i++) {
        if (ids->ids[i] != widening->pad_id)
            continue;
        size_t image = widening->next + n_pads++;
        if (image >= widening->n_images)
            return ft_error("the text holds the image pad token itself (more pads than its %zu image%s): write "
                            "images as " FT_IMAGE_PLACEHOLDER " only",
                            widening->n_images, widening->n_images == 1 ? "" : "s");
        if (widening->n_tokens[image] == 0)
            return ft_error("image %zu has no tokens", image + 1);
        extra += widening->n_tokens[image] - 1;
    }
    if (n_pads == 0)
        return 0;
    size_t old_count = ids->count, new_count = old_count + extra;
    ft_grow((void **)&ids->ids, &ids->capacity, new_count, sizeof(uint32_t));
    /* From the end, so that each id moves once and before it is overwritten. */
    size_t write = new_count, image = widening->next + n_pads;
    for (size_t read = old_count; read-- > 0;) {
        uint32_t id = ids->ids[read];
        size_t copies = id == widening->pad_id ? widening->n_tokens[--image] : 1;
        for (size_t c = 0; c < copies; c++)
            ids->ids[--write] = id;
    }
    ids->count = new_count;
    widening->next += n_pads;
    return 0;
}
