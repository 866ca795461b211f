/* chat_template: LLaMA-Factory's templates as data (the elements of each
 * message kind, its default system prompt, stop words), rendered as its
 * Template._encode and ReasoningTemplate.encode_multiturn render them. */
#include "ftpipe/text/chat_template.h"

#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

/* One element of a message's rendering: text (with {{content}} where the
 * message goes), or the tokenizer's BOS or EOS token. */
typedef enum { ELEMENT_NONE = 0, ELEMENT_TEXT, ELEMENT_BOS, ELEMENT_EOS } element_kind;

typedef struct {
    element_kind kind;
    const char *text;
} element;

#define TEXT(t) {ELEMENT_TEXT, t}
#define BOS {ELEMENT_BOS, NULL}
#define EOS {ELEMENT_EOS, NULL}
#define MAX_ELEMENTS 4
#define MAX_STOP_WORDS 3
#define MAX_SPECIAL_TOKENS 5

/* The empty think block, LLaMA-Factory's thought_words joined. */
#define THINK_OPEN "<think>\n"
#define THINK_CLOSE "\n</think>\n\n"

struct ft_chat_template {
    const char *name;
    element prefix[MAX_ELEMENTS];
    element system[MAX_ELEMENTS];
    element user[MAX_ELEMENTS];
    element assistant[MAX_ELEMENTS];
    const char *default_system;
    const char *stop_words[MAX_STOP_WORDS + 1];
    bool reasoning;   /* LLaMA-Factory's ReasoningTemplate */
    bool replace_eos; /* the first stop word is the EOS (LLaMA-Factory's replace_eos) */
    const char *special_tokens[MAX_SPECIAL_TOKENS + 1];
    const ft_image_tokens *image_tokens; /* vision-language templates: LLaMA-Factory's mm_plugin */
};

/* LLaMA-Factory's Qwen2VLPlugin */
static const ft_image_tokens qwen2_vl_image_tokens = {"<|vision_start|>", "<|image_pad|>", "<|vision_end|>"};
/* LLaMA-Factory's LlavaPlugin: the image token alone, repeated */
static const ft_image_tokens llava_image_tokens = {"", "<image>", ""};

#define CHATML_SYSTEM {TEXT("<|im_start|>system\n{{content}}<|im_end|>\n")}
#define CHATML_USER {TEXT("<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n")}
#define CHATML_ASSISTANT {TEXT("{{content}}<|im_end|>\n")}
#define CHATML_TOKENS {"<|im_start|>", "<|im_end|>"}

#define LLAMA3                                                                                                 \
    .name = "llama3", .replace_eos = true, .prefix = {BOS},                                                    \
    .system = {TEXT("<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>")},                  \
    .user = {TEXT("<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|>"                          \
                  "<|start_header_id|>assistant<|end_header_id|>\n\n")},                                       \
    .assistant = {TEXT("{{content}}<|eot_id|>")}, .stop_words = {"<|eot_id|>", "<|eom_id|>"},                  \
    .special_tokens = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}

static const ft_chat_template templates[] = {
    {.name = "qwen",
     .replace_eos = true,
     .system = CHATML_SYSTEM,
     .user = CHATML_USER,
     .assistant = CHATML_ASSISTANT,
     .default_system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
     .stop_words = {"<|im_end|>"},
     .special_tokens = CHATML_TOKENS},
    {.name = "qwen3",
     .replace_eos = true,
     .system = CHATML_SYSTEM,
     .user = CHATML_USER,
     .assistant = CHATML_ASSISTANT,
     .stop_words = {"<|im_end|>"},
     .reasoning = true,
     .special_tokens = CHATML_TOKENS},
    {.name = "qwen3_nothink",
     .replace_eos = true,
     .system = CHATML_SYSTEM,
     .user = CHATML_USER,
     .assistant = CHATML_ASSISTANT,
     .stop_words = {"<|im_end|>"},
     .special_tokens = CHATML_TOKENS},
    {.name = "qwen2_vl",
     .replace_eos = true,
     .system = CHATML_SYSTEM,
     .user = CHATML_USER,
     .assistant = CHATML_ASSISTANT,
     .default_system = "You are a helpful assistant.",
     .stop_words = {"<|im_end|>"},
     .special_tokens = CHATML_TOKENS,
     .image_tokens = &qwen2_vl_image_tokens},
    {LLAMA3},
    {.name = "llava",
     .system = {TEXT("{{content}}")},
     .user = {TEXT("USER: {{content}} ASSISTANT:")},
     .assistant = {TEXT("{{content}}"), EOS},
     .default_system = "A chat between a curious user and an artificial intelligence assistant. The assistant "
                       "gives helpful, detailed, and polite answers to the user's questions.",
     .image_tokens = &llava_image_tokens},
    {.name = "alpaca",
     .system = {TEXT("{{content}}")},
     .user = {TEXT("### Instruction:\n{{content}}\n\n### Response:\n")},
     .assistant = {TEXT("{{content}}"), EOS, TEXT("\n\n")},
     .default_system = "Below is an instruction that describes a task. Write a response that appropriately "
                       "completes the request.\n\n"},
    {.name = "default",
     .system = {TEXT("System: {{content}}"), EOS, TEXT("\n")},
     .user = {TEXT("Human: {{content}}"), EOS, TEXT("\nAssistant:")},
     .assistant = {TEXT("{{content}}"), EOS, TEXT("\n")}},
    {.name = "empty", .system = {TEXT("{{content}}")}, .user = {TEXT("{{content}}")}, .assistant = {TEXT("{{content}}")}},
    /* ftpipe's own: the texts as they are, EOS after each answer */
    {.name = "plain", .system = {TEXT("{{content}}")}, .user = {TEXT("{{content}}")},
     .assistant = {TEXT("{{content}}"), EOS}},
};
#define N_TEMPLATES (sizeof templates / sizeof templates[0])

int ft_chat_template_find(const char *name, const ft_chat_template **out)
{
    for (size_t i = 0; i < N_TEMPLATES; i++) {
        if (strcmp(templates[i].name, name) == 0) {
            *out = &templates[i];
            return 0;
        }
    }
    return ft_error("unknown chat template '%s'; known: %s", name, ft_chat_template_names());
}

const char *ft_chat_template_name(const ft_chat_template *chat_template) { return chat_template->name; }

const char *ft_chat_template_names(void)
{
    return "qwen, qwen3, qwen3_nothink, qwen2_vl, llava, llama3, alpaca, default, empty, plain";
}

/* llama3 rendering LLaVA-Llama-3's images */
static const ft_chat_template llama3_llava = {LLAMA3, .image_tokens = &llava_image_tokens};

int ft_chat_template_for_llava(const ft_chat_template *chat_template, const ft_chat_template **out)
{
    if (chat_template->image_tokens == &llava_image_tokens) {
        *out = chat_template;
        return 0;
    }
    if (strcmp(chat_template->name, "llama3") == 0) {
        *out = &llama3_llava;
        return 0;
    }
    return ft_error("the chat template %s does not take a LLaVA model's images: use llava (LLaVA-1.5) or llama3 "
                    "(LLaVA with a Llama 3 language model)",
                    chat_template->name);
}

const ft_image_tokens *ft_chat_template_image_tokens(const ft_chat_template *chat_template)
{
    return chat_template->image_tokens;
}

const char *ft_chat_template_image_plugin(const ft_chat_template *chat_template)
{
    if (!chat_template->image_tokens)
        return NULL;
    return chat_template->image_tokens == &llava_image_tokens ? "llava" : "qwen2_vl";
}

const char *const *ft_chat_template_stop_words(const ft_chat_template *chat_template)
{
    return chat_template->stop_words;
}

const char *ft_chat_template_pretraining_eos(const ft_chat_template *chat_template, const ft_tokenizer *tokenizer)
{
    if (strcmp(chat_template->name, "llama3") == 0)
        return "<|end_of_text|>"; /* LLaMA-Factory's exception for Llama 3 */
    return chat_template->replace_eos ? chat_template->stop_words[0] : ft_tokenizer_eos_token(tokenizer);
}

int ft_chat_template_check_tokenizer(const ft_chat_template *chat_template, const ft_tokenizer *tokenizer)
{
    ft_strbuf missing;
    ft_strbuf_init(&missing);
    size_t n_missing = 0;
    for (const char *const *token = chat_template->special_tokens; *token; token++) {
        if (ft_tokenizer_token_id(tokenizer, *token) < 0)
            ft_strbuf_printf(&missing, "%s%s", n_missing++ ? ", " : "", *token);
    }
    int status = 0;
    if (n_missing)
        status = ft_error("the chat template %s needs the special token%s %s, which the tokenizer does not have, "
                          "so they would be trained on as plain text; choose the template of the model's family "
                          "(qwen, qwen3, qwen3_nothink or qwen2_vl for Qwen models, llama3 for Llama 3, llava for "
                          "LLaVA-1.5)",
                          chat_template->name, n_missing > 1 ? "s" : "", missing.data);
    ft_strbuf_free(&missing);
    return status;
}

/* ---- rendering ---- */

typedef struct {
    ft_rendered_chat *chat;
    size_t capacity;
    const ft_render_options *options;
} builder;

/* Each element is a segment of its own, as LLaMA-Factory tokenizes each one alone. */
static void put(builder *out, bool is_answer, const char *text, size_t length)
{
    ft_rendered_chat *chat = out->chat;
    if (length == 0)
        return;
    ft_grow((void **)&chat->segments, &out->capacity, chat->count + 1, sizeof *chat->segments);
    chat->segments[chat->count++] = (ft_template_segment){ft_xstrndup(text, length), is_answer};
}

static void put_elements(builder *out, const element *elements, const char *content, bool is_answer)
{
    for (const element *e = elements; e < elements + MAX_ELEMENTS && e->kind != ELEMENT_NONE; e++) {
        if (e->kind == ELEMENT_BOS || e->kind == ELEMENT_EOS) {
            const char *token = e->kind == ELEMENT_BOS ? out->options->bos_token : out->options->eos_token;
            if (token)
                put(out, is_answer, token, strlen(token));
            continue;
        }
        const char *slot = strstr(e->text, "{{content}}");
        if (!slot) {
            put(out, is_answer, e->text, strlen(e->text));
            continue;
        }
        ft_strbuf text;
        ft_strbuf_init(&text);
        ft_strbuf_add(&text, e->text, (size_t)(slot - e->text));
        ft_strbuf_puts(&text, content);
        ft_strbuf_puts(&text, slot + strlen("{{content}}"));
        put(out, is_answer, text.data, text.length);
        ft_strbuf_free(&text);
    }
}

/* LLaMA-Factory's remove_thought: every "<think>\n...\n</think>\n\n" (shortest
 * match) removed, then leading newlines. Caller frees. */
static char *remove_thought(const char *content)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    const char *at = content;
    for (;;) {
        const char *open = strstr(at, THINK_OPEN);
        const char *close = open ? strstr(open + strlen(THINK_OPEN), THINK_CLOSE) : NULL;
        if (!close)
            break;
        ft_strbuf_add(&text, at, (size_t)(open - at));
        at = close + strlen(THINK_CLOSE);
    }
    ft_strbuf_puts(&text, at);
    char *whole = ft_strbuf_take(&text);
    char *stripped = ft_xstrdup(whole + strspn(whole, "\n"));
    free(whole);
    ft_strbuf_free(&text);
    return stripped;
}

static bool has_thought(const char *content) { return strstr(content, "<think>") || strstr(content, "</think>"); }

/* LLaMA-Factory's Template._encode, with ReasoningTemplate.encode_multiturn's
 * think blocks; messages are already checked. */
static void render(builder *out, const ft_chat_template *chat_template, const ft_message *messages, size_t count,
                   bool add_generation_prompt)
{
    const ft_render_options *options = out->options;
    size_t first = messages[0].role == FT_ROLE_SYSTEM ? 1 : 0;
    const char *system = first && *messages[0].content ? messages[0].content : chat_template->default_system;
    /* generation renders earlier answers as LLaMA-Factory's encode_oneturn does: as history */
    bool history_only = options->mask_history || add_generation_prompt;
    for (size_t i = first; i < count; i++) {
        if (i == first) {
            put_elements(out, chat_template->prefix, "", false);
            if (system && *system)
                put_elements(out, chat_template->system, system, false);
        }
        if (messages[i].role == FT_ROLE_USER) {
            put_elements(out, chat_template->user, messages[i].content, false);
            continue;
        }
        if (!chat_template->reasoning) {
            put_elements(out, chat_template->assistant, messages[i].content, true);
            continue;
        }
        bool is_last = i == count - 1;
        bool drop_thought = !options->enable_thinking || (history_only && !is_last);
        char *content = drop_thought ? remove_thought(messages[i].content) : ft_xstrdup(messages[i].content);
        bool empty_thought = !has_thought(content) && (!history_only || is_last);
        /* the empty block is trained on with thinking, else it is part of the prompt */
        if (empty_thought)
            put(out, options->enable_thinking, THINK_OPEN THINK_CLOSE, strlen(THINK_OPEN THINK_CLOSE));
        put_elements(out, chat_template->assistant, content, true);
        free(content);
    }
    if (add_generation_prompt && chat_template->reasoning && !options->enable_thinking)
        put(out, false, THINK_OPEN THINK_CLOSE, strlen(THINK_OPEN THINK_CLOSE));
}

static const char *role_name(ft_role role)
{
    return role == FT_ROLE_SYSTEM ? "system" : role == FT_ROLE_USER ? "user" : "assistant";
}

/* An optional system message, then user and assistant turns in turn, ending
 * as add_generation_prompt asks. */
static int check_messages(const ft_message *messages, size_t count, bool add_generation_prompt)
{
    if (count == 0)
        return ft_error("the conversation has no messages");
    size_t first = messages[0].role == FT_ROLE_SYSTEM ? 1 : 0;
    if (first == count)
        return ft_error("the conversation has only a system message");
    for (size_t i = 0; i < count; i++) {
        ft_role expected = (i - first) % 2 == 0 ? FT_ROLE_USER : FT_ROLE_ASSISTANT;
        if (!messages[i].content)
            return ft_error("message %zu (%s) has no content", i + 1, role_name(messages[i].role));
        if (i >= first && messages[i].role != expected)
            return ft_error("message %zu is a %s message where %s message belongs (a system message may only "
                            "come first, then user and assistant take turns)",
                            i + 1, role_name(messages[i].role), expected == FT_ROLE_USER ? "a user" : "an assistant");
    }
    ft_role last = messages[count - 1].role;
    if (add_generation_prompt && last != FT_ROLE_USER)
        return ft_error("the conversation ends with an assistant message, but a generation prompt needs it to end "
                        "with a user message");
    if (!add_generation_prompt && last != FT_ROLE_ASSISTANT)
        return ft_error("the conversation ends with a user message that has no answer");
    return 0;
}

int ft_chat_template_render(const ft_chat_template *chat_template, const ft_message *messages, size_t count,
                            bool add_generation_prompt, const ft_render_options *options, ft_rendered_chat *out)
{
    out->segments = NULL;
    out->count = 0;
    if (check_messages(messages, count, add_generation_prompt) < 0)
        return ft_error_context("chat template %s", chat_template->name);
    builder build = {out, 0, options};
    render(&build, chat_template, messages, count, add_generation_prompt);
    return 0;
}

char *ft_rendered_chat_text(const ft_rendered_chat *chat)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < chat->count; i++)
        ft_strbuf_puts(&text, chat->segments[i].text);
    return ft_strbuf_take(&text);
}

void ft_rendered_chat_free(ft_rendered_chat *chat)
{
    for (size_t i = 0; i < chat->count; i++)
        free(chat->segments[i].text);
    free(chat->segments);
    chat->segments = NULL;
    chat->count = 0;
}
