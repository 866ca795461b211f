/* Chat templates: parity with the models' own Jinja templates (renderings made
 * by transformers' apply_chat_template: tests/fixtures/tokenizer/make_fixtures.py),
 * LLaMA-Factory's alpaca and plain, prompt/answer segments, and refusals. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/text/chat_template.h"

#define FIXTURE "tests/fixtures/tokenizer/chat_templates.json"

static ft_role role_of(const char *name)
{
    return strcmp(name, "system") == 0 ? FT_ROLE_SYSTEM : strcmp(name, "user") == 0 ? FT_ROLE_USER : FT_ROLE_ASSISTANT;
}

/* Renders and returns the whole text (caller frees), or NULL with the error set. */
static char *render(const char *template_name, const ft_message *messages, size_t count, bool generation,
                    const char *eos, ft_rendered_chat *chat)
{
    const ft_chat_template *chat_template;
    if (ft_chat_template_find(template_name, &chat_template) < 0)
        return NULL;
    if (ft_chat_template_render(chat_template, messages, count, generation, eos, chat) < 0)
        return NULL;
    return ft_rendered_chat_text(chat);
}

TEST(renders_as_the_models_templates)
{
    json_error_t error;
    json_t *root = json_load_file(FIXTURE, 0, &error);
    CHECK(root != NULL);
    if (!root)
        return;
    json_t *cases = json_object_get(root, "cases");
    CHECK(json_array_size(cases) >= 39);
    size_t i;
    json_t *item;
    json_array_foreach(cases, i, item) {
        json_t *list = json_object_get(item, "messages");
        size_t count = json_array_size(list);
        ft_message *messages = calloc(count, sizeof *messages);
        for (size_t m = 0; m < count; m++) {
            json_t *message = json_array_get(list, m);
            messages[m].role = role_of(json_string_value(json_object_get(message, "role")));
            messages[m].content = json_string_value(json_object_get(message, "content"));
        }
        const char *name = json_string_value(json_object_get(item, "template"));
        ft_rendered_chat chat;
        char *text = render(name, messages, count, json_is_true(json_object_get(item, "add_generation_prompt")),
                            NULL, &chat);
        const char *expected = json_string_value(json_object_get(item, "text"));
        if (!text || strcmp(text, expected) != 0) {
            fprintf(stderr, "  case %s/%s:\n", name, json_string_value(json_object_get(item, "case")));
            CHECK_STR(text ? text : ft_error_message(), expected);
        }
        free(text);
        ft_rendered_chat_free(&chat);
        free(messages);
    }
    json_decref(root);
}

static const ft_message single[] = {{FT_ROLE_USER, "What is 12 + 30?"}, {FT_ROLE_ASSISTANT, "42"}};
static const ft_message multi[] = {{FT_ROLE_SYSTEM, "Be brief."},
                                   {FT_ROLE_USER, "2+2?"},
                                   {FT_ROLE_ASSISTANT, "4"},
                                   {FT_ROLE_USER, "3+3?"},
                                   {FT_ROLE_ASSISTANT, "6"}};

TEST(marks_answers_for_the_loss_mask)
{
    ft_rendered_chat chat;
    char *text = render("qwen", single, 2, false, NULL, &chat);
    CHECK_INT(chat.count, 2);
    CHECK_STR(chat.segments[0].text, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                                     "assistant.<|im_end|>\n<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n"
                                     "<|im_start|>assistant\n");
    CHECK(!chat.segments[0].is_answer);
    CHECK_STR(chat.segments[1].text, "42<|im_end|>\n");
    CHECK(chat.segments[1].is_answer);
    free(text);
    ft_rendered_chat_free(&chat);

    text = render("llama3", multi, 5, false, NULL, &chat);
    CHECK_INT(chat.count, 4);
    CHECK_STR(chat.segments[1].text, "4<|eot_id|>");
    CHECK_STR(chat.segments[2].text, "<|start_header_id|>user<|end_header_id|>\n\n3+3?<|eot_id|>"
                                     "<|start_header_id|>assistant<|end_header_id|>\n\n");
    CHECK(chat.segments[3].is_answer);
    free(text);
    ft_rendered_chat_free(&chat);

    /* Qwen3's empty think block of the last turn is part of the answer */
    text = render("qwen3", single, 2, false, NULL, &chat);
    CHECK_INT(chat.count, 2);
    CHECK_STR(chat.segments[1].text, "<think>\n\n</think>\n\n42<|im_end|>\n");
    free(text);
    ft_rendered_chat_free(&chat);
}

TEST(alpaca_as_llama_factory)
{
    ft_rendered_chat chat;
    char *text = render("alpaca", single, 2, false, "</s>", &chat);
    CHECK_STR(text, "Below is an instruction that describes a task. Write a response that appropriately completes "
                    "the request.\n\n### Instruction:\nWhat is 12 + 30?\n\n### Response:\n42</s>\n\n");
    CHECK_INT(chat.count, 2);
    CHECK_STR(chat.segments[1].text, "42</s>\n\n");
    free(text);
    ft_rendered_chat_free(&chat);

    text = render("alpaca", multi, 4, true, "</s>", &chat);
    CHECK_STR(text, "Be brief.### Instruction:\n2+2?\n\n### Response:\n4</s>\n\n### Instruction:\n3+3?\n\n"
                    "### Response:\n");
    free(text);
    ft_rendered_chat_free(&chat);
}

TEST(plain_joins_texts)
{
    ft_rendered_chat chat;
    char *text = render("plain", multi, 5, false, "<|endoftext|>", &chat);
    CHECK_STR(text, "Be brief.2+2?4<|endoftext|>3+3?6<|endoftext|>");
    CHECK_INT(chat.count, 4);
    CHECK_STR(chat.segments[0].text, "Be brief.2+2?");
    free(text);
    ft_rendered_chat_free(&chat);

    text = render("plain", single, 2, false, NULL, &chat);
    CHECK_STR(text, "What is 12 + 30?42");
    free(text);
    ft_rendered_chat_free(&chat);
}

TEST(names)
{
    const ft_chat_template *chat_template;
    CHECK_INT(ft_chat_template_find("qwen3", &chat_template), 0);
    CHECK_STR(ft_chat_template_name(chat_template), "qwen3");
    CHECK_INT(ft_chat_template_find("chatglm", &chat_template), -1);
    CHECK_STR(ft_error_message(), "unknown chat template 'chatglm'; known: qwen, qwen3, llama3, alpaca, plain");
}

TEST(refuses_malformed_conversations)
{
    ft_rendered_chat chat;
    CHECK(render("qwen", single, 0, false, NULL, &chat) == NULL);
    CHECK_STR(ft_error_message(), "chat template qwen: the conversation has no messages");

    CHECK(render("qwen", multi, 1, true, NULL, &chat) == NULL);
    CHECK_STR(ft_error_message(), "chat template qwen: the conversation has only a system message");

    const ft_message two_users[] = {{FT_ROLE_USER, "a"}, {FT_ROLE_USER, "b"}, {FT_ROLE_ASSISTANT, "c"}};
    CHECK(render("llama3", two_users, 3, false, NULL, &chat) == NULL);
    CHECK_STR(ft_error_message(), "chat template llama3: message 2 is a user message where an assistant message "
                                  "belongs (a system message may only come first, then user and assistant take "
                                  "turns)");

    const ft_message late_system[] = {{FT_ROLE_USER, "a"}, {FT_ROLE_SYSTEM, "b"}};
    CHECK(render("qwen3", late_system, 2, false, NULL, &chat) == NULL);
    CHECK_STR(ft_error_message(), "chat template qwen3: message 2 is a system message where an assistant message "
                                  "belongs (a system message may only come first, then user and assistant take "
                                  "turns)");

    CHECK(render("qwen", single, 1, false, NULL, &chat) == NULL);
    CHECK_STR(ft_error_message(), "chat template qwen: the conversation ends with a user message that has no answer");

    CHECK(render("qwen", single, 2, true, NULL, &chat) == NULL);
    CHECK_STR(ft_error_message(), "chat template qwen: the conversation ends with an assistant message, but a "
                                  "generation prompt needs it to end with a user message");

    const ft_message no_content[] = {{FT_ROLE_USER, NULL}, {FT_ROLE_ASSISTANT, "c"}};
    CHECK(render("alpaca", no_content, 2, false, NULL, &chat) == NULL);
    CHECK_STR(ft_error_message(), "chat template alpaca: message 1 (user) has no content");
}

int main(void)
{
    RUN(renders_as_the_models_templates);
    RUN(marks_answers_for_the_loss_mask);
    RUN(alpaca_as_llama_factory);
    RUN(plain_joins_texts);
    RUN(names);
    RUN(refuses_malformed_conversations);
    return check_done();
}
