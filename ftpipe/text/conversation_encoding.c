/* conversation_encoding: conversations rendered by a chat template, tokenized
 * segment by segment and assembled into samples; a pool of threads does a whole
 * dataset, keeping input order. (Declared in sample_encoding.h.) */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/thread_pool.h"
#include "ftpipe/text/image_placeholders.h"
#include "ftpipe/text/sample_encoding.h"

typedef struct {
    ft_token_ids source;
    ft_token_ids target;
} turn_ids;

/* The template's image tokens as ids; -1 with ft_error when it has none or the
 * tokenizer lacks them. */
static int image_pad_id(const ft_tokenizer *tokenizer, const ft_chat_template *chat_template, uint32_t *pad_id)
{
    const ft_image_tokens *tokens = ft_chat_template_image_tokens(chat_template);
    if (!tokens)
        return ft_error("the record has images, but the chat template %s is for text: use the template of the "
                        "vision-language model (qwen2_vl for Qwen2-VL and Qwen2.5-VL, llava or llama3 for LLaVA)",
                        ft_chat_template_name(chat_template));
    const char *needed[] = {tokens->start, tokens->pad, tokens->end};
    for (size_t i = 0; i < 3; i++)
        if (needed[i][0] && ft_tokenizer_token_id(tokenizer, needed[i]) < 0)
            return ft_error("the chat template %s writes images with %s, which the tokenizer does not have: use "
                            "the tokenizer of the vision-language model",
                            ft_chat_template_name(chat_template), needed[i]);
    *pad_id = (uint32_t)ft_tokenizer_token_id(tokenizer, tokens->pad);
    return 0;
}

/* Image tokens are never trained on; every one of them must have survived cutoff_len. */
static int settle_image_tokens(const ft_image_pad_widening *widening, const ft_encoding_options *options,
                               ft_encoded_sample *sample)
{
    size_t kept = 0, expected = 0;
    for (size_t i = 0; i < sample->n_tokens; i++)
        if (sample->ids[i] == widening->pad_id) {
            sample->loss_mask[i] = 0;
            kept++;
        }
    for (size_t i = 0; i < widening->n_images; i++)
        expected += widening->n_tokens[i];
    if (kept == expected)
        return 0;
    char images[48];
    if (widening->n_images == 1)
        snprintf(images, sizeof images, "its image takes");
    else
        snprintf(images, sizeof images, "its %zu images take", widening->n_images);
    return ft_error("%s %zu tokens, and cutoff_len = %zu keeps %zu of them (the sample is %zu tokens): an image "
                    "cut short cannot be read; raise cutoff_len or lower image_max_pixels",
                    images, expected, options->cutoff_len, kept, sample->full_tokens);
}

int ft_encode_conversation(const ft_tokenizer *tokenizer, const ft_chat_template *chat_template,
                           const ft_message *messages, size_t count, const ft_encoding_options *options,
                           ft_encoded_sample *out)
{
    return ft_encode_conversation_with_images(tokenizer, chat_template, messages, count, NULL, options, out);
}

int ft_encode_conversation_with_images(const ft_tokenizer *tokenizer, const ft_chat_template *chat_template,
                                       const ft_message *messages, size_t count,
                                       const ft_conversation_images *images, const ft_encoding_options *options,
                                       ft_encoded_sample *out)
{
    ft_image_pad_widening widening = {0};
    ft_message *expanded = NULL;
    if (images && images->count > 0) {
        if (image_pad_id(tokenizer, chat_template, &widening.pad_id) != 0)
            return -1;
        widening.n_tokens = images->n_tokens;
        widening.n_images = images->count;
        expanded = ft_image_placeholders_replace(messages, count, ft_chat_template_image_tokens(chat_template));
        messages = expanded;
    }
    ft_rendered_chat chat;
    const ft_render_options render_options = {ft_tokenizer_bos_token(tokenizer), ft_tokenizer_eos_token(tokenizer),
                                              options->enable_thinking, options->mask_history};
    if (ft_chat_template_render(chat_template, messages, count, false, &render_options, &chat) != 0) {
        free(expanded);
        return -1;
    }
    turn_ids *turns = ft_xcalloc(chat.count ? chat.count : 1, sizeof(turn_ids));
    size_t n_turns = 0;
    int status = 0;
    for (size_t i = 0; i < chat.count && status == 0; i++) {
        const ft_template_segment *segment = &chat.segments[i];
        /* A prompt segment after an answer opens the next turn. */
        if (n_turns == 0 || (!segment->is_answer && turns[n_turns - 1].target.count > 0))
            n_turns++;
        turn_ids *turn = &turns[n_turns - 1];
        ft_token_ids *ids = segment->is_answer ? &turn->target : &turn->source;
        if (!expanded) {
            status = ft_tokenizer_encode(tokenizer, segment->text, strlen(segment->text), ids);
            continue;
        }
        ft_token_ids segment_ids = {0};
        status = ft_tokenizer_encode(tokenizer, segment->text, strlen(segment->text), &segment_ids);
        if (status == 0)
            status = ft_image_pads_widen(&widening, &segment_ids);
        for (size_t t = 0; status == 0 && t < segment_ids.count; t++)
            ft_token_ids_push(ids, segment_ids.ids[t]);
        ft_token_ids_free(&segment_ids);
    }
    if (status == 0) {
        ft_turn_tokens *views = ft_xcalloc(n_turns ? n_turns : 1, sizeof(ft_turn_tokens));
        for (size_t t = 0; t < n_turns; t++)
            views[t] = (ft_turn_tokens){turns[t].source.ids, turns[t].source.count, turns[t].target.ids,
                                        turns[t].target.count};
        ft_encode_turns(views, n_turns, options, out);
        free(views);
        if (expanded && settle_image_tokens(&widening, options, out) != 0) {
            ft_encoded_sample_free(out);
            status = -1;
        }
    }
    for (size_t t = 0; t < n_turns; t++) {
        ft_token_ids_free(&turns[t].source);
        ft_token_ids_free(&turns[t].target);
    }
    free(turns);
    ft_rendered_chat_free(&chat);
    free(expanded);
    return status;
}

/* --- a whole dataset over the thread pool --- */

#define CONVERSATIONS_PER_CLAIM 16

typedef struct {
    const ft_tokenizer *tokenizer;
    const ft_chat_template *chat_template;
    const ft_conversation *conversations;
    size_t count;
    const ft_conversation_images *images;
    const ft_encoding_options *options;
    ft_encoded_sample *samples;
    char **errors;
    atomic_size_t done;
    ft_encode_progress progress;
    void *progress_context;
} encode_job;

/* Claim `claim`: CONVERSATIONS_PER_CLAIM conversations from claim * that. */
static void encode_claim(void *argument, size_t claim, size_t worker)
{
    encode_job *job = argument;
    size_t first = claim * CONVERSATIONS_PER_CLAIM;
    size_t end = first + CONVERSATIONS_PER_CLAIM < job->count ? first + CONVERSATIONS_PER_CLAIM : job->count;
    for (size_t i = first; i < end; i++) {
        const ft_conversation *conversation = &job->conversations[i];
        const ft_conversation_images *images = job->images ? &job->images[i] : NULL;
        if (ft_encode_conversation_with_images(job->tokenizer, job->chat_template, conversation->messages,
                                               conversation->count, images, job->options, &job->samples[i]) != 0)
            job->errors[i] = ft_xasprintf("%s: record %zu: %s", conversation->file, conversation->record,
                                          ft_error_message());
    }
    atomic_fetch_add(&job->done, end - first);
}

static int report_progress(void *argument)
{
    encode_job *job = argument;
    return job->progress(atomic_load(&job->done), job->count, job->progress_context);
}

int ft_encode_conversations(const ft_tokenizer *tokenizer, const ft_chat_template *chat_template,
                            const ft_conversation *conversations, size_t count,
                            const ft_conversation_images *images, const ft_encoding_options *options, int threads,
                            ft_encode_progress progress, void *context, ft_encoded_sample *samples, char **errors)
{
    encode_job job = {.tokenizer = tokenizer,
                      .chat_template = chat_template,
                      .conversations = conversations,
                      .count = count,
                      .images = images,
                      .options = options,
                      .samples = samples,
                      .errors = errors,
                      .progress = progress,
                      .progress_context = context};
    memset(samples, 0, count * sizeof *samples);
    memset(errors, 0, count * sizeof *errors);
    atomic_init(&job.done, 0);

    size_t n_claims = (count + CONVERSATIONS_PER_CLAIM - 1) / CONVERSATIONS_PER_CLAIM;
    size_t n_threads = threads > 0 ? (size_t)threads : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
    if (n_threads > n_claims)
        n_threads = n_claims ? n_claims : 1;
    /* With progress to report, the calling thread watches while n_threads work. */
    ft_pool_watch watch = {report_progress, &job, 100};
    size_t n_ran = ft_parallel_for(progress ? n_threads + 1 : n_threads, n_claims, encode_claim, &job,
                                   progress ? &watch : NULL);
    if (n_ran < n_claims)
        return ft_error("tokenizing stopped after %zu of %zu conversations", atomic_load(&job.done), count);
    if (progress)
        progress(count, count, context);
    return 0;
}
