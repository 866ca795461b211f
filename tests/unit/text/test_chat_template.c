/* Chat templates: where LLaMA-Factory's templates agree with the models' own
 * Jinja templates (renderings made by transformers' apply_chat_template:
 * tests/fixtures/tokenizer/make_fixtures.py) and where they knowingly depart,
 * prompt/answer segments, think blocks, stop words, special tokens a tokenizer
 * must have, and refusals. Token-level parity with LLaMA-Factory itself is
 * test_template_parity.c. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/text/chat_template.h"

#define FIXTURE "tests/fixtures/tokenizer/chat_templates.json"

static ft_role role_of(const char *name)
{
    return strcmp(name, "system") == 0 ? FT_ROLE_SYSTEM : strcmp(name, "user") == 0 ? FT_ROLE_USER : FT_ROLE_ASSISTANT;
}

/* Renders and returns the whole text (caller frees), or NULL with the error set. */
static char *render_with(const char *template_name, const ft_message *messages, size_t count, bool generation,
                         const ft_render_options *options, ft_rendered_chat *chat)
{
    const ft_chat_template *chat_template;
    if (ft_chat_template_find(template_name, &chat_template) < 0)
        return NULL;
    if (ft_chat_template_render(chat_template, messages, count, generation, options, chat) < 0)
        return NULL;
    return ft_rendered_chat_text(chat);
}

/* Rendered with thinking on (LLaMA-Factory's default) and the given EOS. */
static char *render(const char *template_name, const ft_message *messages, size_t count, bool generation,
                    const char *eos, ft_rendered_chat *chat)
{
    const ft_render_options options = {NULL, eos, true, false};
    return render_with(template_name, messages, count, generation, &options, chat);
}

/* LLaMA-Factory's llama3 keeps white space the model's template trims; its
 * qwen3 trains an empty think block on every answer that has none, where the
 * model's template keeps one on the last answer only; and an empty system
 * message counts as none (qwen then takes its default one). */
static bool departs_from_the_models_template(const char *template_name, const char *case_name)
{
    static const char *const departures[] = {
        "llama3/white_space_edges",  "qwen3/multi_turn",       "qwen3/multi_turn_system",
        "qwen3/thinking_turns",      "qwen3/thinking_history", "qwen3/tool_response_user",
        "qwen3/white_space_edges",   "qwen/empty_system",      "qwen3/empty_system",
        "llama3/empty_system",
    };
    char name[128];
    snprintf(name, sizeof name, "%s/%s", template_name, case_name);
    for (size_t i = 0; i < sizeof departures / sizeof *departures; i++)
        if (strcmp(departures[i], name) == 0)
            return true;
    return false;
}

TEST(agrees_with_the_models_templates_except_where_llamafactory_departs)
{
    json_error_t error;
    json_t *root = json_load_file(FIXTURE, 0, &error);
    CHECK(root != NULL);
    if (!root)
        return;
    json_t *cases = json_object_get(root, "cases");
    CHECK(json_array_size(cases) >= 39);
    size_t i, n_agreeing = 0;
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
        const char *case_name = json_string_value(json_object_get(item, "case"));
        bool generation = json_is_true(json_object_get(item, "add_generation_prompt"));
        /* Llama 3's BOS comes from its tokenizer in LLaMA-Factory's template */
        bool is_llama3 = strcmp(name, "llama3") == 0;
        const ft_render_options options = {is_llama3 ? "<|begin_of_text|>" : NULL, NULL, true, false};
        ft_rendered_chat chat;
        char *text = render_with(name, messages, count, generation, &options, &chat);
        const char *expected = json_string_value(json_object_get(item, "text"));
        bool agrees = text && strcmp(text, expected) == 0;
        if (agrees == departs_from_the_models_template(name, case_name)) {
            fprintf(stderr, "  case %s/%s %s the model's template:\n    %s\n", name, case_name,
                    agrees ? "unexpectedly agrees with" : "differs from", text ? text : ft_error_message());
            check_case_failed = 1;
        }
        n_agreeing += agrees;
        free(text);
        ft_rendered_chat_free(&chat);
        free(messages);
    }
    CHECK(n_agreeing >= 29);
    json_decref(root);
}

static const ft_message single[] = {{FT_ROLE_USER, "What is 12 + 30?"}, {FT_ROLE_ASSISTANT, "42"}};
static const ft_message multi[] = {{FT_ROLE_SYSTEM, "Be brief."},
                                   {FT_ROLE_USER, "2+2?"},
                                   {FT_ROLE_ASSISTANT, "4"},
                                   {FT_ROLE_USER, "3+3?"},
                                   {FT_ROLE_ASSISTANT, "6"}};

/* The segments' texts joined by '|', answers in [brackets]. Caller frees. */
static char *segments_of(const ft_rendered_chat *chat)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < chat->count; i++)
        ft_strbuf_printf(&text, "%s%s%s%s", i ? "|" : "", chat->segments[i].is_answer ? "[" : "",
                         chat->segments[i].text, chat->segments[i].is_answer ? "]" : "");
    return ft_strbuf_take(&text);
}

/* Renders and returns the segments as segments_of shows them. Caller frees. */
static char *segments(const char *template_name, const ft_message *messages, size_t count, bool generation,
                      const ft_render_options *options)
{
    ft_rendered_chat chat;
    char *text = render_with(template_name, messages, count, generation, options, &chat);
    char *shown = text ? segments_of(&chat) : ft_xstrdup(ft_error_message());
    free(text);
    if (text)
        ft_rendered_chat_free(&chat);
    return shown;
}

static const ft_render_options thinking = {NULL, "<|im_end|>", true, false};

TEST(marks_answers_for_the_loss_mask_one_element_per_segment)
{
    char *shown = segments("qwen", single, 2, false, &thinking);
    CHECK_STR(shown, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                     "<|im_end|>\n|<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n|"
                     "[42<|im_end|>\n]");
    free(shown);

    const ft_render_options llama = {"<|begin_of_text|>", "<|end_of_text|>", true, false};
    shown = segments("llama3", multi, 5, false, &llama);
    CHECK_STR(shown, "<|begin_of_text|>|<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>|"
                     "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>assistant"
                     "<|end_header_id|>\n\n|[4<|eot_id|>]|<|start_header_id|>user<|end_header_id|>\n\n3+3?<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n|[6<|eot_id|>]");
    free(shown);
}

TEST(llama3_keeps_white_space_and_takes_bos_from_the_tokenizer)
{
    const ft_message record[] = {{FT_ROLE_USER, "Translate to French:\n"}, {FT_ROLE_ASSISTANT, "Bonjour.\n"}};
    const ft_render_options no_bos = {NULL, NULL, true, false};
    char *shown = segments("llama3", record, 2, false, &no_bos);
    CHECK_STR(shown, "<|start_header_id|>user<|end_header_id|>\n\nTranslate to French:\n<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n|[Bonjour.\n<|eot_id|>]");
    free(shown);
}

TEST(qwen3_trains_an_empty_think_block_on_every_answer_without_one)
{
    const ft_message turns[] = {{FT_ROLE_USER, "a"},
                                {FT_ROLE_ASSISTANT, "<think>\nwhy\n</think>\n\nA"},
                                {FT_ROLE_USER, "b"},
                                {FT_ROLE_ASSISTANT, "B"}};
    char *shown = segments("qwen3", turns, 4, false, &thinking);
    CHECK_STR(shown, "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n|[<think>\nwhy\n</think>\n\nA<|im_end|>\n]|"
                     "<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n|[<think>\n\n</think>\n\n]|"
                     "[B<|im_end|>\n]");
    free(shown);

    /* enable_thinking = false: think blocks leave the answers, the empty one goes to the prompt */
    const ft_render_options no_thinking = {NULL, "<|im_end|>", false, false};
    shown = segments("qwen3", turns, 4, false, &no_thinking);
    CHECK_STR(shown, "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n|<think>\n\n</think>\n\n|"
                     "[A<|im_end|>\n]|<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n|"
                     "<think>\n\n</think>\n\n|[B<|im_end|>\n]");
    free(shown);

    /* mask_history: earlier answers lose their think blocks; only the last gets the empty one */
    const ft_render_options history = {NULL, "<|im_end|>", true, true};
    const ft_message reversed[] = {{FT_ROLE_USER, "a"},
                                   {FT_ROLE_ASSISTANT, "<think>\nwhy\n</think>\n\nA"},
                                   {FT_ROLE_USER, "b"},
                                   {FT_ROLE_ASSISTANT, "B"}};
    shown = segments("qwen3", reversed, 4, false, &history);
    CHECK_STR(shown, "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n|[A<|im_end|>\n]|"
                     "<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n|[<think>\n\n</think>\n\n]|"
                     "[B<|im_end|>\n]");
    free(shown);

    /* qwen3_nothink: the answers as they are, no block added */
    shown = segments("qwen3_nothink", turns, 4, false, &thinking);
    CHECK_STR(shown, "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n|[<think>\nwhy\n</think>\n\nA<|im_end|>\n]|"
                     "<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n|[B<|im_end|>\n]");
    free(shown);

    /* generation with thinking off puts the empty block after the prompt */
    shown = segments("qwen3", turns, 3, true, &no_thinking);
    CHECK_STR(shown, "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n|[A<|im_end|>\n]|"
                     "<|im_start|>user\nb<|im_end|>\n<|im_start|>assistant\n|<think>\n\n</think>\n\n");
    free(shown);
}

TEST(qwen2_vl_default_and_empty_as_llama_factory)
{
    char *shown = segments("qwen2_vl", single, 2, false, &thinking);
    CHECK_STR(shown, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n|<|im_start|>user\n"
                     "What is 12 + 30?<|im_end|>\n<|im_start|>assistant\n|[42<|im_end|>\n]");
    free(shown);

    const ft_render_options eos = {NULL, "</s>", true, false};
    shown = segments("default", multi, 3, false, &eos);
    CHECK_STR(shown, "System: Be brief.|</s>|\n|Human: 2+2?|</s>|\nAssistant:|[4]|[</s>]|[\n]");
    free(shown);

    shown = segments("empty", multi, 3, false, &eos);
    CHECK_STR(shown, "Be brief.|2+2?|[4]");
    free(shown);
}

/* LLaVA-1.5's vicuna-style turns: the system prompt runs into the first USER:
 * (LLaMA-Factory joins them without a space), EOS after each answer, no BOS. */
TEST(llava_as_llama_factory)
{
    const ft_render_options eos = {"<s>", "</s>", true, false};
    char *shown = segments("llava", single, 2, false, &eos);
    CHECK_STR(shown, "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                     "helpful, detailed, and polite answers to the user's questions.|USER: What is 12 + 30? "
                     "ASSISTANT:|[42]|[</s>]");
    free(shown);
    shown = segments("llava", multi, 3, false, &eos);
    CHECK_STR(shown, "Be brief.|USER: 2+2? ASSISTANT:|[4]|[</s>]");
    free(shown);
}

/* llava takes LLaVA's images as it is; llama3 through its LLaVA variant, which
 * renders as llama3; a Qwen template cannot. */
TEST(templates_for_llava_images)
{
    const ft_chat_template *llava, *llama3, *for_llava, *qwen2_vl;
    CHECK_INT(ft_chat_template_find("llava", &llava), 0);
    CHECK_INT(ft_chat_template_for_llava(llava, &for_llava), 0);
    CHECK(for_llava == llava);
    CHECK_STR(ft_chat_template_image_tokens(llava)->pad, "<image>");
    CHECK_STR(ft_chat_template_image_plugin(llava), "llava");
    CHECK_INT(ft_chat_template_find("llama3", &llama3), 0);
    CHECK(ft_chat_template_image_tokens(llama3) == NULL);
    CHECK_INT(ft_chat_template_for_llava(llama3, &for_llava), 0);
    CHECK(ft_chat_template_image_tokens(for_llava) == ft_chat_template_image_tokens(llava));
    CHECK_STR(ft_chat_template_name(for_llava), "llama3");
    const ft_render_options options = {"<|begin_of_text|>", "<|end_of_text|>", true, false};
    ft_rendered_chat a, b;
    CHECK_INT(ft_chat_template_render(llama3, multi, 3, false, &options, &a), 0);
    CHECK_INT(ft_chat_template_render(for_llava, multi, 3, false, &options, &b), 0);
    char *text_a = ft_rendered_chat_text(&a), *text_b = ft_rendered_chat_text(&b);
    CHECK_STR(text_a, text_b);
    free(text_a);
    free(text_b);
    ft_rendered_chat_free(&a);
    ft_rendered_chat_free(&b);
    CHECK_INT(ft_chat_template_find("qwen2_vl", &qwen2_vl), 0);
    CHECK_STR(ft_chat_template_image_plugin(qwen2_vl), "qwen2_vl");
    CHECK(ft_chat_template_image_plugin(llama3) == NULL);
    CHECK_STR(ft_chat_template_image_plugin(for_llava), "llava");
    CHECK_INT(ft_chat_template_for_llava(qwen2_vl, &for_llava), -1);
    CHECK_STR(ft_error_message(), "the chat template qwen2_vl does not take a LLaVA model's images: use llava "
                                  "(LLaVA-1.5) or llama3 (LLaVA with a Llama 3 language model)");
}

TEST(alpaca_as_llama_factory)
{
    ft_rendered_chat chat;
    char *text = render("alpaca", single, 2, false, "</s>", &chat);
    CHECK_STR(text, "Below is an instruction that describes a task. Write a response that appropriately completes "
                    "the request.\n\n### Instruction:\nWhat is 12 + 30?\n\n### Response:\n42</s>\n\n");
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
    const ft_render_options eos = {NULL, "<|endoftext|>", true, false};
    char *shown = segments("plain", multi, 5, false, &eos);
    CHECK_STR(shown, "Be brief.|2+2?|[4]|[<|endoftext|>]|3+3?|[6]|[<|endoftext|>]");
    free(shown);

    const ft_render_options none = {NULL, NULL, true, false};
    shown = segments("plain", single, 2, false, &none);
    CHECK_STR(shown, "What is 12 + 30?|[42]");
    free(shown);
}

TEST(names_and_stop_words)
{
    const ft_chat_template *chat_template;
    CHECK_INT(ft_chat_template_find("qwen3_nothink", &chat_template), 0);
    CHECK_STR(ft_chat_template_name(chat_template), "qwen3_nothink");
    CHECK_STR(ft_chat_template_stop_words(chat_template)[0], "<|im_end|>");
    CHECK(ft_chat_template_stop_words(chat_template)[1] == NULL);
    CHECK_INT(ft_chat_template_find("llama3", &chat_template), 0);
    CHECK_STR(ft_chat_template_stop_words(chat_template)[0], "<|eot_id|>");
    CHECK_STR(ft_chat_template_stop_words(chat_template)[1], "<|eom_id|>");
    CHECK_INT(ft_chat_template_find("alpaca", &chat_template), 0);
    CHECK(ft_chat_template_stop_words(chat_template)[0] == NULL);
    CHECK_INT(ft_chat_template_find("chatglm", &chat_template), -1);
    CHECK_STR(ft_error_message(), "unknown chat template 'chatglm'; known: qwen, qwen3, qwen3_nothink, qwen2_vl, "
                                  "llava, llama3, alpaca, default, empty, plain");
}

TEST(refuses_a_tokenizer_without_the_templates_special_tokens)
{
    ft_tokenizer *tokenizer = NULL;
    CHECK_INT(ft_tokenizer_load("tests/fixtures/datasets/byte_model", &tokenizer), 0);
    if (!tokenizer)
        return;
    const ft_chat_template *chat_template;
    CHECK_INT(ft_chat_template_find("qwen3", &chat_template), 0);
    CHECK_INT(ft_chat_template_check_tokenizer(chat_template, tokenizer), 0);
    CHECK_INT(ft_chat_template_find("alpaca", &chat_template), 0);
    CHECK_INT(ft_chat_template_check_tokenizer(chat_template, tokenizer), 0);
    CHECK_INT(ft_chat_template_find("llama3", &chat_template), 0);
    CHECK_INT(ft_chat_template_check_tokenizer(chat_template, tokenizer), -1);
    CHECK_STR(ft_error_message(), "the chat template llama3 needs the special tokens <|begin_of_text|>, "
                                  "<|start_header_id|>, <|end_header_id|>, <|eot_id|>, which the tokenizer does not "
                                  "have, so they would be trained on as plain text; choose the template of the "
                                  "model's family (qwen, qwen3, qwen3_nothink or qwen2_vl for Qwen models, llama3 "
                                  "for Llama 3, llava for LLaVA-1.5)");
    ft_tokenizer_free(tokenizer);
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
    RUN(agrees_with_the_models_templates_except_where_llamafactory_departs);
    RUN(marks_answers_for_the_loss_mask_one_element_per_segment);
    RUN(llama3_keeps_white_space_and_takes_bos_from_the_tokenizer);
    RUN(qwen3_trains_an_empty_think_block_on_every_answer_without_one);
    RUN(qwen2_vl_default_and_empty_as_llama_factory);
    RUN(alpaca_as_llama_factory);
    RUN(plain_joins_texts);
    RUN(llava_as_llama_factory);
    RUN(templates_for_llava_images);
    RUN(names_and_stop_words);
    RUN(refuses_a_tokenizer_without_the_templates_special_tokens);
    RUN(refuses_malformed_conversations);
    return check_done();
}
