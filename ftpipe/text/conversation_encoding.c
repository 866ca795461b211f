/* conversation_encoding: conversations rendered by a chat template, tokenized
 * segment by segment and assembled into samples; a pool of threads does a whole
 * dataset, keeping input order. (Declared in sample_encoding.h.) */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/thread_pool.h"
#include "ftpipe/text/sample_encoding.h"

typedef struct {
    ft_token_ids source;
    ft_token_ids target;
} turn_ids;

int ft_encode_conversation(const ft_tokenizer *tokenizer, const ft_chat_template *chat_template,
                           const ft_message *messages, size_t count, const ft_encoding_options *options,
                           ft_encoded_sample *out)
{
    ft_rendered_chat chat;
    const ft_render_options render_options = {ft_tokenizer_bos_token(tokenizer), ft_tokenizer_eos_token(tokenizer),
                                              options->enable_thinking, options->mask_history};
    if (ft_chat_template_render(chat_template, messages, count, false, &render_options, &chat) != 0)
        return -1;
    turn_ids *turns = ft_xcalloc(chat.count ? chat.count : 1, sizeof(turn_ids));
    size_t n_turns = 0;
    int status = 0;
    for (size_t i = 0; i < chat.count && status == 0; i++) {
        const ft_template_segment *segment = &chat.segments[i];
        /* A prompt segment after an answer opens the next turn. */
        if (n_turns == 0 || (!segment->is_answer && turns[n_turns - 1].target.count > 0))
            n_turns++;
        turn_ids *turn = &turns[n_turns - 1];
        status = ft_tokenizer_encode(tokenizer, segment->text, strlen(segment->text),
                                     segment->is_answer ? &turn->target : &turn->source);
    }
    if (status == 0) {
        ft_turn_tokens *views = ft_xcalloc(n_turns ? n_turns : 1, sizeof(ft_turn_tokens));
        for (size_t t = 0; t < n_turns; t++)
            views[t] = (ft_turn_tokens){turns[t].source.ids, turns[t].source.count, turns[t].target.ids,
                                        turns[t].target.count};
        ft_encode_turns(views, n_turns, options, out);
        free(views);
    }
    for (size_t t = 0; t < n_turns; t++) {
        ft_token_ids_free(&turns[t].source);
        ft_token_ids_free(&turns[t].target);
    }
    free(turns);
    ft_rendered_chat_free(&chat);
    return status;
}

/* --- a whole dataset over the thread pool --- */

#define CONVERSATIONS_PER_CLAIM 16

typedef struct {
    const ft_tokenizer *tokenizer;
    const ft_chat_template *chat_template;
    const ft_conversation *conversations;
    size_t count;
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
        if (ft_encode_conversation(job->tokenizer, job->chat_template, conversation->messages, conversation->count,
                                   job->options, &job->samples[i]) != 0)
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
                            const ft_conversation *conversations, size_t count, const ft_encoding_options *options,
                            int threads, ft_encode_progress progress, void *context, ft_encoded_sample *samples,
                            char **errors)
{
    encode_job job = {.tokenizer = tokenizer,
                      .chat_template = chat_template,
                      .conversations = conversations,
                      .count = count,
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
