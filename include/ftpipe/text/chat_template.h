/* chat_template: conversations rendered to text as LLaMA-Factory's templates of
 * the same names render them: qwen (Qwen2.5's default system prompt), qwen3
 * (an empty think block on answers without one), qwen3_nothink, qwen2_vl,
 * llava (LLaVA-1.5's vicuna-style turns), llama3, alpaca, default, empty; and
 * plain, ftpipe's own (texts joined, EOS after each answer).
 *
 * Rendering yields segments, each marked prompt or answer, so that the tokenize
 * stage can mask prompt tokens out of the loss as LLaMA-Factory does. Each
 * segment is one of LLaMA-Factory's template elements and is tokenized on its
 * own, as LLaMA-Factory tokenizes each element. */
#ifndef FTPIPE_CHAT_TEMPLATE_H
#define FTPIPE_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/formats/message.h"
#include "ftpipe/text/tokenizer.h"

typedef struct {
    char *text;
    bool is_answer;  /* true: assistant content and its end-of-turn token(s): trained on */
} ft_template_segment;

typedef struct {
    ft_template_segment *segments;
    size_t count;
} ft_rendered_chat;

typedef struct {
    const char *bos_token;  /* ft_tokenizer_bos_token, or NULL for none */
    const char *eos_token;  /* ft_tokenizer_eos_token, or NULL for none */
    /* LLaMA-Factory's enable_thinking, for the reasoning templates (qwen3): true
     * trains on the empty think block of answers that have none; false removes
     * every think block from answers and puts the empty one in the prompt. */
    bool enable_thinking;
    /* LLaMA-Factory's mask_history: reasoning templates then drop the think
     * blocks of earlier answers and add the empty one to the last answer only. */
    bool mask_history;
} ft_render_options;

typedef struct ft_chat_template ft_chat_template;

/* By name; an unknown name is an error listing the known ones. */
int ft_chat_template_find(const char *name, const ft_chat_template **out);
const char *ft_chat_template_name(const ft_chat_template *chat_template);
/* The known names, comma separated. */
const char *ft_chat_template_names(void);

/* How a vision-language template writes an image into the text, as LLaMA-Factory's
 * mm_plugin does: start, the pad token once per image token, end ("": none). */
typedef struct {
    const char *start, *pad, *end;
} ft_image_tokens;

/* NULL for a text template, which takes no images. */
const ft_image_tokens *ft_chat_template_image_tokens(const ft_chat_template *chat_template);
/* LLaMA-Factory's mm_plugin of a vision-language template: "qwen2_vl" or "llava"; NULL for text. */
const char *ft_chat_template_image_plugin(const ft_chat_template *chat_template);

/* The template as it takes a LLaVA model's images (LLaMA-Factory's LlavaPlugin:
 * each <image> becomes the image token once per image token): llava itself, and
 * llama3 for LLaVA with a Llama 3 language model (XTuner's LLaVA-Llama-3), which
 * renders as llama3 does. Any other template is an error naming both. */
int ft_chat_template_for_llava(const ft_chat_template *chat_template, const ft_chat_template **out);

/* The tokens that end generation besides EOS (LLaMA-Factory's stop_words), a
 * NULL-terminated list. */
const char *const *ft_chat_template_stop_words(const ft_chat_template *chat_template);

/* The EOS that LLaMA-Factory's pretraining appends to each text: the template's
 * end of turn where it replaces the tokenizer's EOS (<|im_end|> for the Qwen
 * templates), <|end_of_text|> for llama3, else the tokenizer's (NULL: none). */
const char *ft_chat_template_pretraining_eos(const ft_chat_template *chat_template, const ft_tokenizer *tokenizer);

/* The template's special tokens must each be one token of the tokenizer; a
 * tokenizer that lacks some (the llama3 template with a Qwen tokenizer) would
 * train on them as text. An error names the missing ones. */
int ft_chat_template_check_tokenizer(const ft_chat_template *chat_template, const ft_tokenizer *tokenizer);

/* Renders messages (an optional leading system message, then user/assistant
 * turns). With add_generation_prompt the text ends where the assistant's answer
 * begins (for generation); otherwise the last message is an assistant's. */
int ft_chat_template_render(const ft_chat_template *chat_template, const ft_message *messages, size_t count,
                            bool add_generation_prompt, const ft_render_options *options, ft_rendered_chat *out);
/* All segments concatenated. Caller frees. */
char *ft_rendered_chat_text(const ft_rendered_chat *chat);
void ft_rendered_chat_free(ft_rendered_chat *chat);

#endif
