/* chat_template: each template written out in C as the model's Jinja template
 * renders it (Qwen2.5's, Qwen3's, Meta Llama 3 Instruct's), or as LLaMA-Factory
 * defines it where the model has none (alpaca, plain). */
#include "ftpipe/text/chat_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/base/utf8.h"

typedef struct {
    ft_rendered_chat *chat;
    size_t capacity;
} builder;

typedef int (*render_function)(builder *out, const ft_message *messages, size_t count, bool add_generation_prompt,
                               const char *eos_token);

struct ft_chat_template {
    const char *name;
    render_function render;
};

/* Appends text to the last segment when it is of the same kind, else to a new one. */
static void put(builder *out, bool is_answer, const char *text, size_t length)
{
    ft_rendered_chat *chat = out->chat;
    if (length == 0)
        return;
    ft_template_segment *last = chat->count ? &chat->segments[chat->count - 1] : NULL;
    if (!last || last->is_answer != is_answer) {
        ft_grow((void **)&chat->segments, &out->capacity, chat->count + 1, sizeof *chat->segments);
        last = &chat->segments[chat->count++];
        last->text = ft_xstrdup("");
        last->is_answer = is_answer;
    }
    size_t old = strlen(last->text);
    last->text = ft_xrealloc(last->text, old + length + 1);
    memcpy(last->text + old, text, length);
    last->text[old + length] = '\0';
}

static void prompt(builder *out, const char *text) { put(out, false, text, strlen(text)); }
static void answer(builder *out, const char *text) { put(out, true, text, strlen(text)); }

/* ---- the Python string methods the Jinja templates use ---- */
/* Python's str.isspace() for one code point. */
static bool python_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Jinja's `trim`: str.strip() of Unicode white space. Caller frees. */
static char *python_strip(const char *text)
{
    size_t length = strlen(text), start = 0, end = 0;
    bool content_seen = false;
    for (size_t offset = 0; offset < length;) {
        size_t at = offset;
        int32_t codepoint = ft_utf8_next(text, length, &offset);
        if (codepoint >= 0 && python_space((uint32_t)codepoint))
            continue;
        if (!content_seen)
            start = at;
        content_seen = true;
        end = offset;
    }
    return ft_xstrndup(text + start, end - start);
}

/* str.strip('\n') on one side or both, into a fresh string. */
static char *strip_newlines(const char *start, const char *end, bool left, bool right)
{
    while (left && start < end && *start == '\n')
        start++;
    while (right && end > start && end[-1] == '\n')
        end--;
    return ft_xstrndup(start, (size_t)(end - start));
}

static const char *last_occurrence(const char *text, const char *needle)
{
    const char *found = NULL;
    for (const char *at = strstr(text, needle); at; at = strstr(at + 1, needle))
        found = at;
    return found;
}

static bool starts_with(const char *text, const char *prefix) { return strncmp(text, prefix, strlen(prefix)) == 0; }

static bool ends_with(const char *text, const char *suffix)
{
    size_t n = strlen(text), m = strlen(suffix);
    return n >= m && strcmp(text + n - m, suffix) == 0;
}

/* ---- the templates ---- */
/* Qwen2.5: ChatML with a default system prompt. */
static int render_qwen(builder *out, const ft_message *messages, size_t count, bool add_generation_prompt,
                       const char *eos_token)
{
    size_t first = 0;
    if (messages[0].role == FT_ROLE_SYSTEM) {
        prompt(out, "<|im_start|>system\n");
        prompt(out, messages[0].content);
        prompt(out, "<|im_end|>\n");
        first = 1;
    } else {
        prompt(out, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n");
    }
    for (size_t i = first; i < count; i++) {
        if (messages[i].role == FT_ROLE_USER) {
            prompt(out, "<|im_start|>user\n");
            prompt(out, messages[i].content);
            prompt(out, "<|im_end|>\n");
        } else {
            prompt(out, "<|im_start|>assistant\n");
            answer(out, messages[i].content);
            answer(out, "<|im_end|>\n");
        }
    }
    if (add_generation_prompt)
        prompt(out, "<|im_start|>assistant\n");
    return 0;
}

/* Qwen3: ChatML; assistant turns after the last user query carry a <think>
 * block (empty when there is no reasoning), earlier ones lose theirs. */
static void render_qwen3_assistant(builder *out, const char *content, bool with_thinking)
{
    const char *end_think = last_occurrence(content, "</think>");
    char *reasoning = ft_xstrdup("");
    char *reply = ft_xstrdup(content);
    if (end_think) { /* as the template's split('</think>') and split('<think>') */
        free(reply);
        free(reasoning);
        reply = strip_newlines(end_think + strlen("</think>"), content + strlen(content), true, false);
        const char *reasoning_end = strstr(content, "</think>");
        char *before = strip_newlines(content, reasoning_end, false, true);
        const char *open_think = last_occurrence(before, "<think>");
        reasoning = strip_newlines(open_think ? open_think + strlen("<think>") : before, before + strlen(before),
                                   true, false);
        free(before);
    }
    prompt(out, "<|im_start|>assistant\n");
    if (with_thinking || *reasoning) {
        char *stripped = strip_newlines(reasoning, reasoning + strlen(reasoning), true, true);
        char *trimmed_reply = strip_newlines(reply, reply + strlen(reply), true, false);
        answer(out, "<think>\n");
        answer(out, stripped);
        answer(out, "\n</think>\n\n");
        answer(out, trimmed_reply);
        free(stripped);
        free(trimmed_reply);
    } else {
        answer(out, reply);
    }
    answer(out, "<|im_end|>\n");
    free(reasoning);
    free(reply);
}

static int render_qwen3(builder *out, const ft_message *messages, size_t count, bool add_generation_prompt,
                        const char *eos_token)
{
    size_t first = 0;
    if (messages[0].role == FT_ROLE_SYSTEM) {
        prompt(out, "<|im_start|>system\n");
        prompt(out, messages[0].content);
        prompt(out, "<|im_end|>\n");
        first = 1;
    }
    /* the last user message that is not a tool response */
    size_t last_query = count - 1;
    for (size_t i = count; i-- > 0;) {
        const char *content = messages[i].content;
        if (messages[i].role == FT_ROLE_USER &&
            !(starts_with(content, "<tool_response>") && ends_with(content, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (size_t i = first; i < count; i++) {
        if (messages[i].role == FT_ROLE_USER) {
            prompt(out, "<|im_start|>user\n");
            prompt(out, messages[i].content);
            prompt(out, "<|im_end|>\n");
        } else if (i > last_query) {
            /* a reasoning of its own also keeps the block on a turn that is not the last */
            render_qwen3_assistant(out, messages[i].content, i == count - 1);
        } else {
            /* history before the last query: the block is dropped entirely */
            const char *end_think = last_occurrence(messages[i].content, "</think>");
            char *reply = end_think ? strip_newlines(end_think + strlen("</think>"),
                                                     end_think + strlen(end_think), true, false)
                                    : ft_xstrdup(messages[i].content);
            prompt(out, "<|im_start|>assistant\n");
            answer(out, reply);
            answer(out, "<|im_end|>\n");
            free(reply);
        }
    }
    if (add_generation_prompt)
        prompt(out, "<|im_start|>assistant\n");
    return 0;
}

/* Meta Llama 3 Instruct: headers, contents trimmed, <|eot_id|> after each. */
static int render_llama3(builder *out, const ft_message *messages, size_t count, bool add_generation_prompt,
                         const char *eos_token)
{
    static const char *const roles[] = {"system", "user", "assistant"};
    prompt(out, "<|begin_of_text|>");
    for (size_t i = 0; i < count; i++) {
        bool is_answer = messages[i].role == FT_ROLE_ASSISTANT;
        char *content = python_strip(messages[i].content);
        prompt(out, "<|start_header_id|>");
        prompt(out, roles[messages[i].role]);
        prompt(out, "<|end_header_id|>\n\n");
        put(out, is_answer, content, strlen(content));
        put(out, is_answer, "<|eot_id|>", strlen("<|eot_id|>"));
        free(content);
    }
    if (add_generation_prompt)
        prompt(out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

/* LLaMA-Factory's alpaca: the system text (or its default), then instruction
 * and response blocks; each answer ends with EOS and a blank line. */
static int render_alpaca(builder *out, const ft_message *messages, size_t count, bool add_generation_prompt,
                         const char *eos_token)
{
    size_t first = messages[0].role == FT_ROLE_SYSTEM ? 1 : 0;
    prompt(out, first && *messages[0].content ? messages[0].content
                                              : "Below is an instruction that describes a task. Write a response "
                                                "that appropriately completes the request.\n\n");
    for (size_t i = first; i < count; i++) {
        if (messages[i].role == FT_ROLE_USER) {
            prompt(out, "### Instruction:\n");
            prompt(out, messages[i].content);
            prompt(out, "\n\n### Response:\n");
        } else {
            answer(out, messages[i].content);
            answer(out, eos_token ? eos_token : "");
            answer(out, "\n\n");
        }
    }
    return 0;
}

/* The texts as they are, one after another; each answer ends with EOS. */
static int render_plain(builder *out, const ft_message *messages, size_t count, bool add_generation_prompt,
                        const char *eos_token)
{
    for (size_t i = 0; i < count; i++) {
        bool is_answer = messages[i].role == FT_ROLE_ASSISTANT;
        put(out, is_answer, messages[i].content, strlen(messages[i].content));
        if (is_answer && eos_token)
            answer(out, eos_token);
    }
    return 0;
}

static const ft_chat_template templates[] = {
    {"qwen", render_qwen}, {"qwen3", render_qwen3}, {"llama3", render_llama3},
    {"alpaca", render_alpaca}, {"plain", render_plain},
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
    return ft_error("unknown chat template '%s'; known: qwen, qwen3, llama3, alpaca, plain", name);
}

const char *ft_chat_template_name(const ft_chat_template *chat_template) { return chat_template->name; }

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
                            bool add_generation_prompt, const char *eos_token, ft_rendered_chat *out)
{
    out->segments = NULL;
    out->count = 0;
    if (check_messages(messages, count, add_generation_prompt) < 0)
        return ft_error_context("chat template %s", chat_template->name);
    builder build = {out, 0};
    return chat_template->render(&build, messages, count, add_generation_prompt, eos_token);
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
