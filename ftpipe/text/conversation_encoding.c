/* conversation_encoding: conversations rendered by a chat template, tokenized
 * segment by segment and assembled into samples; a pool of threads does a whole
 * dataset, keeping input order. (Declared in sample_encoding.h.) */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
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

/* --- the thread pool --- */

#define CONVERSATIONS_PER_CLAIM 16

typedef struct {
    const ft_tokenizer *tokenizer;
    const ft_chat_template *chat_template;
    const ft_conversation *conversations;
    size_t count;
    const ft_encoding_options *options;
    ft_encoded_sample *samples;
    char **errors;
    atomic_size_t next;
    atomic_size_t done;
    atomic_bool stop;
    pthread_mutex_t lock;
    pthread_cond_t finished;
    int n_running;
} encode_job;

static void *encode_worker(void *argument)
{
    encode_job *job = argument;
    while (!atomic_load(&job->stop)) {
        size_t first = atomic_fetch_add(&job->next, CONVERSATIONS_PER_CLAIM);
        if (first >= job->count)
            break;
        size_t end = first + CONVERSATIONS_PER_CLAIM < job->count ? first + CONVERSATIONS_PER_CLAIM : job->count;
        for (size_t i = first; i < end; i++) {
            const ft_conversation *conversation = &job->conversations[i];
            if (ft_encode_conversation(job->tokenizer, job->chat_template, conversation->messages,
                                       conversation->count, job->options, &job->samples[i]) != 0)
                job->errors[i] = ft_xasprintf("%s: record %zu: %s", conversation->file, conversation->record,
                                              ft_error_message());
        }
        atomic_fetch_add(&job->done, end - first);
    }
    pthread_mutex_lock(&job->lock);
    job->n_running--;
    pthread_cond_signal(&job->finished);
    pthread_mutex_unlock(&job->lock);
    return NULL;
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
                      .errors = errors};
    memset(samples, 0, count * sizeof *samples);
    memset(errors, 0, count * sizeof *errors);
    atomic_init(&job.next, 0);
    atomic_init(&job.done, 0);
    atomic_init(&job.stop, false);
    pthread_mutex_init(&job.lock, NULL);
    pthread_cond_init(&job.finished, NULL);

    size_t n_threads = threads > 0 ? (size_t)threads : (size_t)sysconf(_SC_NPROCESSORS_ONLN);
    size_t useful = (count + CONVERSATIONS_PER_CLAIM - 1) / CONVERSATIONS_PER_CLAIM;
    if (n_threads > useful)
        n_threads = useful ? useful : 1;
    pthread_t *workers = ft_xcalloc(n_threads, sizeof(pthread_t));
    size_t started = 0;
    for (; started < n_threads; started++) {
        pthread_mutex_lock(&job.lock);
        job.n_running++;
        pthread_mutex_unlock(&job.lock);
        if (pthread_create(&workers[started], NULL, encode_worker, &job) != 0) {
            job.n_running--;
            break;
        }
    }
    if (started == 0) { /* no thread could start: work here */
        job.n_running = 1;
        encode_worker(&job);
    }

    bool stopped = false;
    pthread_mutex_lock(&job.lock);
    while (job.n_running > 0) {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_nsec += 100 * 1000 * 1000;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&job.finished, &job.lock, &deadline);
        if (progress && !stopped && job.n_running > 0) {
            pthread_mutex_unlock(&job.lock);
            stopped = progress(atomic_load(&job.done), count, context) != 0;
            if (stopped)
                atomic_store(&job.stop, true);
            pthread_mutex_lock(&job.lock);
        }
    }
    pthread_mutex_unlock(&job.lock);
    for (size_t i = 0; i < started; i++)
        pthread_join(workers[i], NULL);
    free(workers);
    pthread_cond_destroy(&job.finished);
    pthread_mutex_destroy(&job.lock);
    if (stopped)
        return ft_error("tokenizing stopped after %zu of %zu conversations", atomic_load(&job.done), count);
    if (progress)
        progress(count, count, context);
    return 0;
}
