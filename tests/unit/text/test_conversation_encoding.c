/* Tests of conversation encoding with real templates and a byte-level
 * tokenizer whose ids are the text's bytes (tests/fixtures/datasets/byte_model,
 * byte_vl_model with Qwen2-VL's image tokens): the masks LLaMA-Factory makes,
 * cutoff on rendered turns, images expanded into image tokens, and the thread
 * pool's order and error reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/thread_pool.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/text/sample_encoding.h"

#define BYTE_MODEL "tests/fixtures/datasets/byte_model"
#define BYTE_VL_MODEL "tests/fixtures/datasets/byte_vl_model"

/* The sample as text, with trained spans in [brackets]. Caller frees. */
static char *describe(const ft_encoded_sample *sample)
{
    static const char *const specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < sample->n_tokens; i++) {
        bool trained = sample->loss_mask[i], before = i > 0 && sample->loss_mask[i - 1];
        if (trained && !before)
            ft_strbuf_putc(&text, '[');
        if (!trained && before)
            ft_strbuf_putc(&text, ']');
        uint32_t id = sample->ids[i];
        if (id < 256)
            ft_strbuf_putc(&text, (char)id);
        else if (id < 259)
            ft_strbuf_puts(&text, specials[id - 256]);
        else
            ft_strbuf_printf(&text, "<%u>", id);
    }
    if (sample->n_tokens && sample->loss_mask[sample->n_tokens - 1])
        ft_strbuf_putc(&text, ']');
    char *result = ft_strbuf_take(&text);
    ft_strbuf_free(&text);
    return result;
}

static ft_tokenizer *load_tokenizer(void)
{
    ft_tokenizer *tokenizer = NULL;
    if (ft_tokenizer_load(BYTE_MODEL, &tokenizer) != 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        abort();
    }
    return tokenizer;
}

static char *encode(const char *template_name, const ft_message *messages, size_t count,
                    const ft_encoding_options *options, size_t *full_tokens)
{
    ft_tokenizer *tokenizer = load_tokenizer();
    const ft_chat_template *chat_template;
    CHECK_INT(ft_chat_template_find(template_name, &chat_template), 0);
    ft_encoded_sample sample;
    int status = ft_encode_conversation(tokenizer, chat_template, messages, count, options, &sample);
    CHECK_INT(status, 0);
    char *text = status == 0 ? describe(&sample) : ft_xstrdup(ft_error_message());
    if (full_tokens)
        *full_tokens = sample.full_tokens;
    if (status == 0)
        ft_encoded_sample_free(&sample);
    ft_tokenizer_free(tokenizer);
    return text;
}

static const ft_message two_turns[] = {
    {FT_ROLE_SYSTEM, "S"}, {FT_ROLE_USER, "Hi"}, {FT_ROLE_ASSISTANT, "Yo"},
    {FT_ROLE_USER, "2+2?"}, {FT_ROLE_ASSISTANT, "4"},
};

TEST(masks_prompts_as_llamafactory_with_qwen)
{
    const ft_encoding_options options = {1024, false, false, true};
    size_t full;
    char *text = encode("qwen", two_turns, 5, &options, &full);
    CHECK_STR(text, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                    "[Yo<|im_end|>\n]<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n[4<|im_end|>\n]");
    CHECK_INT(full, 62);
    free(text);
}

TEST(uses_qwen_default_system_prompt)
{
    const ft_encoding_options options = {1024, false, false, true};
    char *text = encode("qwen", two_turns + 1, 2, &options, NULL);
    CHECK_STR(text, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n[Yo<|im_end|>\n]");
    free(text);
}

TEST(trains_last_turn_only_with_mask_history)
{
    const ft_encoding_options options = {1024, false, true, true};
    char *text = encode("qwen", two_turns, 5, &options, NULL);
    CHECK_STR(text, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                    "Yo<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n[4<|im_end|>\n]");
    free(text);
}

TEST(cuts_rendered_turns_with_infer_seqlen)
{
    /* Turn 1: source 32 tokens, target 4; turn 2: source 23, target 3. With
     * cutoff 40, turn 1 is whole and turn 2 gets infer_seqlen(23, 3, 4) = (4, 0). */
    const ft_encoding_options options = {40, false, false, true};
    size_t full;
    char *text = encode("qwen", two_turns, 5, &options, &full);
    CHECK_STR(text, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                    "[Yo<|im_end|>\n]<|im_start|>use");
    CHECK_INT(full, 62);
    free(text);
}

TEST(ends_alpaca_answers_with_the_eos_token)
{
    const ft_encoding_options options = {1024, false, false, true};
    const ft_message messages[] = {{FT_ROLE_USER, "Add 2 and 3."}, {FT_ROLE_ASSISTANT, "5"}};
    char *text = encode("alpaca", messages, 2, &options, NULL);
    CHECK_STR(text, "Below is an instruction that describes a task. Write a response that appropriately completes "
                    "the request.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n[5<|endoftext|>\n\n]");
    free(text);
}

static int count_progress(size_t done, size_t total, void *context)
{
    size_t *calls = context;
    (*calls)++;
    return done > total; /* never stops */
}

/* qwen2_vl with images of n_tokens each; the sample described, or the error. */
static char *encode_with_images(const char *template_name, const ft_message *messages, size_t count,
                                const uint32_t *n_tokens, size_t n_images, const ft_encoding_options *options)
{
    ft_tokenizer *tokenizer = NULL;
    CHECK_INT(ft_tokenizer_load(BYTE_VL_MODEL, &tokenizer), 0);
    const ft_chat_template *chat_template;
    CHECK_INT(ft_chat_template_find(template_name, &chat_template), 0);
    ft_conversation_images images = {n_tokens, n_images};
    ft_encoded_sample sample;
    int status = ft_encode_conversation_with_images(tokenizer, chat_template, messages, count, &images, options,
                                                    &sample);
    char *text = status == 0 ? describe(&sample) : ft_xstrdup(ft_error_message());
    if (status == 0)
        ft_encoded_sample_free(&sample);
    ft_tokenizer_free(tokenizer);
    return text;
}

TEST(expands_images_into_untrained_image_tokens)
{
    /* <259> vision_start, <261> image_pad x the image's tokens, <260> vision_end */
    const ft_encoding_options options = {1024, false, false, true};
    const ft_message messages[] = {{FT_ROLE_USER, "<image>Who?"}, {FT_ROLE_ASSISTANT, "Us."},
                                   {FT_ROLE_USER, "And<image>?"}, {FT_ROLE_ASSISTANT, "Them."}};
    const uint32_t n_tokens[] = {3, 1};
    char *text = encode_with_images("qwen2_vl", messages, 4, n_tokens, 2, &options);
    CHECK_STR(text, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                    "<259><261><261><261><260>Who?<|im_end|>\n<|im_start|>assistant\n[Us.<|im_end|>\n]"
                    "<|im_start|>user\nAnd<259><261><260>?<|im_end|>\n<|im_start|>assistant\n[Them.<|im_end|>\n]");
    free(text);
    /* train_on_prompt trains the prompt, never the image pads */
    const ft_encoding_options on_prompt = {1024, true, false, true};
    text = encode_with_images("qwen2_vl", messages, 2, n_tokens, 1, &on_prompt);
    CHECK(strstr(text, "<259>]<261><261><261>[<260>Who?") != NULL);
    free(text);
}

TEST(refuses_images_cut_short_or_without_a_vision_template)
{
    const ft_message messages[] = {{FT_ROLE_USER, "<image>Who?"}, {FT_ROLE_ASSISTANT, "Us."}};
    const uint32_t n_tokens[] = {40};
    const ft_encoding_options short_cutoff = {60, false, false, true};
    char *text = encode_with_images("qwen2_vl", messages, 2, n_tokens, 1, &short_cutoff);
    CHECK_STR(text, "its image takes 40 tokens, and cutoff_len = 60 keeps 10 of them (the sample is 108 tokens): "
                    "an image cut short cannot be read; raise cutoff_len or lower image_max_pixels");
    free(text);
    const ft_encoding_options options = {1024, false, false, true};
    text = encode_with_images("qwen", messages, 2, n_tokens, 1, &options);
    CHECK_STR(text, "the record has images, but the chat template qwen is for text: use the template of the "
                    "vision-language model (qwen2_vl for Qwen2-VL and Qwen2.5-VL, llava or llama3 for "
                    "LLaVA)");
    free(text);
    const ft_message pad_in_text[] = {{FT_ROLE_USER, "<image>Who?<|image_pad|>"}, {FT_ROLE_ASSISTANT, "Us."}};
    text = encode_with_images("qwen2_vl", pad_in_text, 2, n_tokens, 1, &options);
    CHECK_STR(text, "the text holds the image pad token itself (more pads than its 1 image): write images as "
                    "<image> only");
    free(text);
    /* the text-only byte model lacks the image tokens */
    ft_tokenizer *tokenizer = load_tokenizer();
    const ft_chat_template *chat_template;
    CHECK_INT(ft_chat_template_find("qwen2_vl", &chat_template), 0);
    ft_conversation_images images = {n_tokens, 1};
    ft_encoded_sample sample;
    CHECK_INT(ft_encode_conversation_with_images(tokenizer, chat_template, messages, 2, &images, &options, &sample),
              -1);
    CHECK_STR(ft_error_message(), "the chat template qwen2_vl writes images with <|vision_start|>, which the "
                                  "tokenizer does not have: use the tokenizer of the vision-language model");
    ft_tokenizer_free(tokenizer);
}

static void check_many_conversations(void)
{
    enum { COUNT = 203 };
    ft_tokenizer *tokenizer = load_tokenizer();
    const ft_chat_template *chat_template;
    CHECK_INT(ft_chat_template_find("qwen", &chat_template), 0);
    ft_conversation *conversations = ft_xcalloc(COUNT, sizeof *conversations);
    ft_message (*messages)[2] = ft_xcalloc(COUNT, sizeof *messages);
    char (*answers)[16] = ft_xcalloc(COUNT, sizeof *answers);
    for (size_t i = 0; i < COUNT; i++) {
        snprintf(answers[i], sizeof answers[i], "answer %zu", i);
        messages[i][0] = (ft_message){FT_ROLE_USER, "q"};
        messages[i][1] = (ft_message){FT_ROLE_ASSISTANT, answers[i]};
        conversations[i] =
            (ft_conversation){.messages = messages[i], .count = 2, .file = "data.jsonl", .record = i + 1};
    }
    conversations[100].count = 1; /* ends with the user: the template refuses it */
    ft_encoded_sample *samples = ft_xcalloc(COUNT, sizeof *samples);
    char **errors = ft_xcalloc(COUNT, sizeof(char *));
    const ft_encoding_options options = {1024, false, false, true};
    size_t calls = 0;
    CHECK_INT(ft_encode_conversations(tokenizer, chat_template, conversations, COUNT, NULL, &options, 4,
                                      count_progress, &calls, samples, errors),
              0);
    CHECK(calls >= 1);
    for (size_t i = 0; i < COUNT; i++) {
        if (i == 100) {
            CHECK(errors[i] != NULL && strncmp(errors[i], "data.jsonl: record 101: ", 24) == 0);
            CHECK_INT(samples[i].n_tokens, 0);
            continue;
        }
        CHECK(errors[i] == NULL);
        char *text = describe(&samples[i]);
        char *expected = ft_xasprintf("[%s<|im_end|>\n]", answers[i]);
        CHECK(strstr(text, expected) != NULL);
        free(expected);
        free(text);
    }
    for (size_t i = 0; i < COUNT; i++) {
        ft_encoded_sample_free(&samples[i]);
        free(errors[i]);
    }
    free(samples);
    free(errors);
    free(conversations);
    free(messages);
    free(answers);
    ft_tokenizer_free(tokenizer);
}

TEST(encodes_many_conversations_in_order_with_threads) { check_many_conversations(); }

/* No thread can start: the calling thread encodes and reports progress itself. */
TEST(encodes_many_conversations_when_no_thread_starts)
{
    ft_thread_pool_fail_starts_after(0);
    check_many_conversations();
    ft_thread_pool_fail_starts_after((size_t)-1);
}

int main(void)
{
    RUN(masks_prompts_as_llamafactory_with_qwen);
    RUN(uses_qwen_default_system_prompt);
    RUN(trains_last_turn_only_with_mask_history);
    RUN(cuts_rendered_turns_with_infer_seqlen);
    RUN(ends_alpaca_answers_with_the_eos_token);
    RUN(expands_images_into_untrained_image_tokens);
    RUN(refuses_images_cut_short_or_without_a_vision_template);
    RUN(encodes_many_conversations_in_order_with_threads);
    RUN(encodes_many_conversations_when_no_thread_starts);
    return check_done();
}
