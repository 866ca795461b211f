/* command_tokenize: `ftpipe encode` (text to token ids) and `ftpipe decode`.
 *
 *   ftpipe encode --tokenizer PATH [--jsonl] [--threads N]
 *   ftpipe decode --tokenizer PATH [--jsonl]
 *
 * Without --jsonl all of standard input is one text (or one list of ids) and
 * the output is one line of ids (or the text itself). With --jsonl each input
 * line is one JSON string (or one list of ids) and gets one output line, in
 * input order; encode spreads the lines over all cores. Ids are written in
 * decimal, separated by single spaces. */
#include <errno.h>
#include <jansson.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/base/thread_pool.h"
#include "ftpipe/cli/commands.h"
#include "ftpipe/text/tokenizer.h"

/* Standard input is read this much at a time (whole lines), so memory stays bounded. */
#define BLOCK_BYTES ((size_t)32 << 20)
/* Lines are handed to threads in chunks of about this much text. */
#define CHUNK_BYTES ((size_t)256 << 10)

typedef struct {
    const char *tokenizer_path;
    bool jsonl;
    int threads;
} command_options;

static int parse_options(const char *command, int argc, char **argv, bool allow_threads, command_options *out)
{
    *out = (command_options){NULL, false, 0};
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--tokenizer") == 0 && i + 1 < argc) {
            out->tokenizer_path = argv[++i];
        } else if (strcmp(argv[i], "--jsonl") == 0) {
            out->jsonl = true;
        } else if (allow_threads && strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            char *end;
            long threads = strtol(argv[++i], &end, 10);
            if (*end || threads < 1 || threads > 1024)
                return ft_error("%s: --threads needs a number from 1 to 1024, not '%s'", command, argv[i]);
            out->threads = (int)threads;
        } else {
            return ft_error("%s: unknown or incomplete argument '%s'; usage: ftpipe %s --tokenizer PATH [--jsonl]%s",
                            command, argv[i], command, allow_threads ? " [--threads N]" : "");
        }
    }
    if (!out->tokenizer_path)
        return ft_error("%s: --tokenizer PATH is required (a tokenizer.json or a model folder)", command);
    if (out->threads == 0) {
        cpu_set_t cpus;
        out->threads = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
    }
    return 0;
}

/* Reads more of stdin into buffer; *eof set at the end. */
static int read_more(ft_strbuf *buffer, size_t wanted, bool *eof)
{
    size_t target = buffer->length + wanted;
    while (buffer->length < target) {
        ft_grow((void **)&buffer->data, &buffer->capacity, buffer->length + (1 << 20) + 1, 1);
        ssize_t n = read(STDIN_FILENO, buffer->data + buffer->length, buffer->capacity - buffer->length - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return ft_error_errno("reading standard input");
        if (n == 0) {
            *eof = true;
            break;
        }
        buffer->length += (size_t)n;
    }
    buffer->data[buffer->length] = '\0';
    return 0;
}

static int read_all(ft_strbuf *buffer)
{
    bool eof = false;
    while (!eof)
        if (read_more(buffer, BLOCK_BYTES, &eof) < 0)
            return -1;
    return 0;
}

static void put_ids(ft_strbuf *out, const uint32_t *ids, size_t count)
{
    ft_grow((void **)&out->data, &out->capacity, out->length + count * 11 + 2, 1);
    char *p = out->data + out->length;
    for (size_t i = 0; i < count; i++) {
        char digits[10];
        int n = 0;
        uint32_t id = ids[i];
        do
            digits[n++] = (char)('0' + id % 10);
        while ((id /= 10) != 0);
        if (i > 0)
            *p++ = ' ';
        while (n > 0)
            *p++ = digits[--n];
    }
    *p++ = '\n';
    *p = '\0';
    out->length = (size_t)(p - out->data);
}

static int write_out(const char *data, size_t length)
{
    if (length && fwrite(data, 1, length, stdout) != length)
        return ft_error_errno("writing standard output");
    return 0;
}

static int finish_output(void)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        return ft_error_errno("writing standard output");
    return 0;
}

/* ---- encode --jsonl: chunks of lines over threads, written in order ----
 * The pool's threads live for the whole input, so their word caches stay warm;
 * the main thread reads a block of whole lines, the pool (the main thread
 * helping) encodes its chunks, and their ids are written in input order. */
typedef struct {
    const char *text; /* the chunk's lines */
    size_t length;
    size_t first_line; /* 1-based number of its first line in the input */
    ft_strbuf output;
    char *error;
} chunk;

typedef struct {
    const ft_tokenizer *tokenizer;
    ft_thread_pool *threads;
    ft_token_ids *ids; /* one per pool worker */
    chunk *chunks;     /* of the current block */
} encode_pool;

static int encode_json_line(const ft_tokenizer *tokenizer, const char *line, size_t length, ft_token_ids *ids,
                            ft_strbuf *out)
{
    json_error_t error;
    json_t *value = json_loadb(line, length, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
    if (!value)
        return ft_error("not JSON: %s", error.text);
    int rc = 0;
    if (!json_is_string(value)) {
        rc = ft_error("expected a JSON string (\"text\"), found another JSON value");
    } else {
        ids->count = 0;
        rc = ft_tokenizer_encode(tokenizer, json_string_value(value), json_string_length(value), ids);
        if (rc == 0)
            put_ids(out, ids->ids, ids->count);
    }
    json_decref(value);
    return rc;
}

static void encode_chunk(const ft_tokenizer *tokenizer, chunk *work, ft_token_ids *ids)
{
    size_t line_number = work->first_line;
    const char *end = work->text + work->length;
    for (const char *line = work->text; line < end; line_number++) {
        const char *newline = memchr(line, '\n', (size_t)(end - line));
        size_t length = newline ? (size_t)(newline - line) : (size_t)(end - line);
        if (encode_json_line(tokenizer, line, length, ids, &work->output) < 0) {
            work->error = ft_xasprintf("standard input line %zu: %s", line_number, ft_error_message());
            break;
        }
        line = line + length + 1;
    }
}

static void encode_one_chunk(void *context, size_t i, size_t worker)
{
    encode_pool *pool = context;
    encode_chunk(pool->tokenizer, &pool->chunks[i], &pool->ids[worker]);
}

/* Cuts text (whole lines) into chunks of about CHUNK_BYTES. */
static chunk *cut_chunks(const char *text, size_t length, size_t first_line, size_t *n_chunks)
{
    chunk *chunks = NULL;
    size_t count = 0, capacity = 0;
    size_t offset = 0;
    while (offset < length) {
        size_t end = offset + CHUNK_BYTES < length ? offset + CHUNK_BYTES : length;
        const char *newline = end < length ? memchr(text + end, '\n', length - end) : NULL;
        end = newline ? (size_t)(newline - text) + 1 : length;
        ft_grow((void **)&chunks, &capacity, count + 1, sizeof *chunks);
        chunks[count] = (chunk){text + offset, end - offset, first_line, {0}, NULL};
        ft_strbuf_init(&chunks[count].output);
        for (size_t i = offset; i < end; i++)
            first_line += text[i] == '\n';
        offset = end;
        count++;
    }
    *n_chunks = count;
    return chunks;
}

/* Encodes a block's chunks on the pool, then writes their ids in order. */
static int encode_block(encode_pool *pool, chunk *chunks, size_t n_chunks)
{
    pool->chunks = chunks;
    ft_thread_pool_run(pool->threads, n_chunks, encode_one_chunk, pool, NULL);
    int rc = 0;
    for (size_t i = 0; i < n_chunks && rc == 0; i++) {
        chunk *work = &chunks[i];
        rc = work->error ? ft_error("%s", work->error) : write_out(work->output.data, work->output.length);
        ft_strbuf_free(&work->output);
    }
    return rc;
}

static void free_chunks(chunk *chunks, size_t n_chunks)
{
    for (size_t i = 0; i < n_chunks; i++) {
        ft_strbuf_free(&chunks[i].output);
        free(chunks[i].error);
    }
    free(chunks);
}

static int encode_jsonl(const ft_tokenizer *tokenizer, int n_threads)
{
    encode_pool pool = {tokenizer, ft_thread_pool_new((size_t)n_threads), NULL, NULL};
    pool.ids = ft_xcalloc(ft_thread_pool_workers(pool.threads), sizeof *pool.ids);
    ft_strbuf buffer;
    ft_strbuf_init(&buffer);
    size_t first_line = 1, n_chunks = 0;
    chunk *chunks = NULL;
    bool eof = false;
    int rc = 0;
    while (rc == 0 && !eof) {
        if ((rc = read_more(&buffer, BLOCK_BYTES, &eof)) < 0)
            break;
        /* whole lines now; a last line without its newline waits for the end */
        const char *last_newline = memrchr(buffer.data, '\n', buffer.length);
        size_t whole = eof ? buffer.length : last_newline ? (size_t)(last_newline - buffer.data) + 1 : 0;
        chunks = cut_chunks(buffer.data, whole, first_line, &n_chunks);
        if ((rc = encode_block(&pool, chunks, n_chunks)) < 0)
            break;
        free_chunks(chunks, n_chunks);
        chunks = NULL;
        n_chunks = 0;
        for (size_t i = 0; i < whole; i++)
            first_line += buffer.data[i] == '\n';
        memmove(buffer.data, buffer.data + whole, buffer.length - whole);
        buffer.length -= whole;
    }
    for (size_t i = 0; i < ft_thread_pool_workers(pool.threads); i++)
        ft_token_ids_free(&pool.ids[i]);
    free(pool.ids);
    ft_thread_pool_free(pool.threads);
    free_chunks(chunks, n_chunks);
    ft_strbuf_free(&buffer);
    return rc;
}

int ft_command_encode(int argc, char **argv)
{
    command_options options;
    if (parse_options("encode", argc, argv, true, &options) < 0)
        return -1;
    ft_tokenizer *tokenizer;
    if (ft_tokenizer_load(options.tokenizer_path, &tokenizer) < 0)
        return -1;
    int rc;
    if (options.jsonl) {
        rc = encode_jsonl(tokenizer, options.threads);
    } else {
        ft_strbuf text, out;
        ft_strbuf_init(&text);
        ft_strbuf_init(&out);
        ft_token_ids ids = {0};
        rc = read_all(&text);
        if (rc == 0 && (rc = ft_tokenizer_encode(tokenizer, text.data, text.length, &ids)) < 0)
            ft_error_context("standard input");
        if (rc == 0) {
            put_ids(&out, ids.ids, ids.count);
            rc = write_out(out.data, out.length);
        }
        ft_token_ids_free(&ids);
        ft_strbuf_free(&text);
        ft_strbuf_free(&out);
    }
    if (rc == 0)
        rc = finish_output();
    ft_tokenizer_free(tokenizer);
    return rc;
}

/* ---- decode ---- */
/* Ids separated by white space in text[0, length). */
static int parse_ids(const char *text, size_t length, const char *where, ft_token_ids *ids)
{
    ids->count = 0;
    size_t i = 0;
    while (i < length) {
        if (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r') {
            i++;
            continue;
        }
        uint64_t id = 0;
        size_t start = i;
        while (i < length && text[i] >= '0' && text[i] <= '9' && id <= UINT32_MAX)
            id = id * 10 + (uint64_t)(text[i++] - '0');
        bool separated = i == length || text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r';
        if (i == start || !separated || id > UINT32_MAX) {
            size_t end = start;
            while (end < length && end - start < 20 && !(text[end] == ' ' || text[end] == '\n'))
                end++;
            return ft_error("%s: '%.*s' is not a token id", where, (int)(end - start), text + start);
        }
        ft_token_ids_push(ids, (uint32_t)id);
    }
    return 0;
}

static int decode_line(const ft_tokenizer *tokenizer, const char *line, size_t length, const char *where,
                       bool as_json, ft_token_ids *ids)
{
    char *text;
    if (parse_ids(line, length, where, ids) < 0)
        return -1;
    if (ft_tokenizer_decode(tokenizer, ids->ids, ids->count, &text) < 0)
        return ft_error_context("%s", where);
    int rc;
    if (as_json) {
        json_t *string = json_stringn(text, strlen(text));
        char *encoded = json_dumps(string, JSON_ENCODE_ANY);
        rc = write_out(encoded, strlen(encoded));
        if (rc == 0)
            rc = write_out("\n", 1);
        free(encoded);
        json_decref(string);
    } else {
        rc = write_out(text, strlen(text));
    }
    free(text);
    return rc;
}

int ft_command_decode(int argc, char **argv)
{
    command_options options;
    if (parse_options("decode", argc, argv, false, &options) < 0)
        return -1;
    ft_tokenizer *tokenizer;
    if (ft_tokenizer_load(options.tokenizer_path, &tokenizer) < 0)
        return -1;
    ft_strbuf input;
    ft_strbuf_init(&input);
    ft_token_ids ids = {0};
    int rc = read_all(&input);
    if (rc == 0 && !options.jsonl)
        rc = decode_line(tokenizer, input.data, input.length, "standard input", false, &ids);
    size_t line_number = 1;
    for (size_t offset = 0; rc == 0 && options.jsonl && offset < input.length; line_number++) {
        const char *newline = memchr(input.data + offset, '\n', input.length - offset);
        size_t length = newline ? (size_t)(newline - input.data) - offset : input.length - offset;
        char where[64];
        snprintf(where, sizeof where, "standard input line %zu", line_number);
        rc = decode_line(tokenizer, input.data + offset, length, where, true, &ids);
        offset += length + 1;
    }
    if (rc == 0)
        rc = finish_output();
    ft_token_ids_free(&ids);
    ft_strbuf_free(&input);
    ft_tokenizer_free(tokenizer);
    return rc;
}
