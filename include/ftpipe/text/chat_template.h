/* chat_template: conversations rendered to text as a model's own chat template
 * renders them, by LLaMA-Factory's template names: qwen (ChatML, with Qwen2.5's
 * default system prompt when none is given), qwen3, llama3, alpaca, plain.
 *
 * Rendering yields segments, each marked prompt or answer, so that the tokenize
 * stage can mask prompt tokens out of the loss as LLaMA-Factory does. */
#ifndef FTPIPE_CHAT_TEMPLATE_H
#define FTPIPE_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/formats/message.h"

typedef struct {
    char *text;
    bool is_answer;  /* true: assistant content and its end-of-turn token(s): trained on */
} ft_template_segment;

typedef struct {
    ft_template_segment *segments;
    size_t count;
} ft_rendered_chat;

typedef struct ft_chat_template ft_chat_template;

/* By name; an unknown name is an error listing the known ones. */
int ft_chat_template_find(const char *name, const ft_chat_template **out);
const char *ft_chat_template_name(const ft_chat_template *chat_template);

/* Renders messages (an optional leading system message, then user/assistant
 * turns). With add_generation_prompt the text ends where the assistant's answer
 * begins (for generation); otherwise the last message is an assistant's.
 * eos_token (ft_tokenizer_eos_token, or NULL for none) ends each answer in the
 * templates that have no end-of-turn token of their own (alpaca, plain). */
int ft_chat_template_render(const ft_chat_template *chat_template, const ft_message *messages, size_t count,
                            bool add_generation_prompt, const char *eos_token, ft_rendered_chat *out);
/* All segments concatenated. Caller frees. */
char *ft_rendered_chat_text(const ft_rendered_chat *chat);
void ft_rendered_chat_free(ft_rendered_chat *chat);

#endif
