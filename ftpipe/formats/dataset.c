/* dataset: reads JSON arrays and JSON Lines of alpaca and sharegpt records into
 * conversations, with LLaMA-Factory's rules for what a valid record is. */
#include "ftpipe/formats/dataset.h"
#include "ftpipe/formats/dataset_images.h"
#include "ftpipe/formats/dataset_refusals.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

void ft_dataset_source_for_file(const char *path, ft_dataset_format format, ft_dataset_source *out)
{
    memset(out, 0, sizeof *out);
    out->name = ft_xstrdup(path);
    out->path = ft_xstrdup(path);
    out->media_dir = ft_path_is_dir(path) ? ft_xstrdup(path) : ft_path_dirname(path);
    out->columns.format = format;
    /* sharegpt names stay NULL: either usual spelling is accepted. */
    out->columns.prompt = ft_xstrdup("instruction");
    out->columns.query = ft_xstrdup("input");
    out->columns.response = ft_xstrdup("output");
    out->columns.history = ft_xstrdup("history");
    out->columns.system = ft_xstrdup("system");
}

void ft_dataset_source_free(ft_dataset_source *source)
{
    ft_dataset_columns *c = &source->columns;
    char *owned[] = {source->name,     source->path,      source->media_dir, c->prompt,
                     c->query,         c->response,       c->history,        c->system,
                     c->messages,      c->role_tag,       c->content_tag,    c->user_tag,
                     c->assistant_tag, c->system_tag,     c->observation_tag, c->function_tag,
                     c->images};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        free(owned[i]);
    memset(source, 0, sizeof *source);
}

void ft_dataset_sources_free(ft_dataset_source *sources, size_t count)
{
    for (size_t i = 0; i < count; i++)
        ft_dataset_source_free(&sources[i]);
    free(sources);
}

void ft_dataset_init(ft_dataset *dataset) { memset(dataset, 0, sizeof *dataset); }

static void free_images(ft_conversation *conversation)
{
    for (size_t i = 0; i < conversation->n_images; i++)
        free(conversation->images[i]);
    free(conversation->images);
    conversation->images = NULL;
    conversation->n_images = 0;
}

void ft_dataset_free(ft_dataset *dataset)
{
    for (size_t i = 0; i < dataset->count; i++) {
        free(dataset->conversations[i].messages);
        free_images(&dataset->conversations[i]);
    }
    free(dataset->conversations);
    for (size_t i = 0; i < dataset->n_skip_messages; i++)
        free(dataset->skip_messages[i]);
    free(dataset->skip_messages);
    for (size_t i = 0; i < dataset->n_files; i++)
        free(dataset->files[i]);
    free(dataset->files);
    memset(dataset, 0, sizeof *dataset);
}

/* --- one record to one conversation --- */

typedef struct {
    ft_role role;
    size_t offset; /* of its text in record_builder.text */
} pending_message;

/* Reused across records: messages and their text are gathered here, then
 * copied into the conversation's single allocation. */
typedef struct {
    pending_message *messages;
    size_t count;
    size_t capacity;
    ft_strbuf text; /* each message's text, NUL-terminated */
} record_builder;

static void begin_message(record_builder *builder, ft_role role)
{
    ft_grow((void **)&builder->messages, &builder->capacity, builder->count + 1, sizeof(pending_message));
    builder->messages[builder->count++] = (pending_message){role, builder->text.length};
}

static void end_message(record_builder *builder) { ft_strbuf_add(&builder->text, "", 1); }

static void add_message(record_builder *builder, ft_role role, const char *text)
{
    begin_message(builder, role);
    ft_strbuf_puts(&builder->text, text);
    end_message(builder);
}

static void finish_conversation(const record_builder *builder, ft_conversation *out)
{
    size_t messages_bytes = builder->count * sizeof(ft_message);
    char *block = ft_xmalloc(messages_bytes + builder->text.length);
    memcpy(block + messages_bytes, builder->text.data, builder->text.length);
    ft_message *messages = (ft_message *)block;
    for (size_t i = 0; i < builder->count; i++)
        messages[i] = (ft_message){builder->messages[i].role, block + messages_bytes + builder->messages[i].offset};
    out->messages = messages;
    out->count = builder->count;
}

static const char *json_kind(const json_t *value)
{
    switch (json_typeof(value)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "a list";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "unknown";
}

/* 1 with *text set when object[name] is a string; 0 when absent or null (or
 * name is NULL: a column not read); -1 when of another type. context prefixes
 * the message ("message 2: "). */
static int optional_string(const json_t *object, const char *name, const char *context, const char **text)
{
    const json_t *value = name ? json_object_get(object, name) : NULL;
    if (!value || json_is_null(value))
        return 0;
    if (!json_is_string(value))
        return ft_error("%s'%s' is not a string (it is %s)", context, name, json_kind(value));
    *text = json_string_value(value);
    return 1;
}

static int required_string(const json_t *object, const char *name, const char *context, const char **text)
{
    int found = optional_string(object, name, context, text);
    if (found == 0)
        return ft_error("%s'%s' is missing", context, name);
    return found < 0 ? -1 : 0;
}

static int convert_alpaca(record_builder *builder, const json_t *record, const ft_dataset_columns *columns)
{
    const char *prompt = "", *query = "", *response = NULL, *system = "";
    if ((columns->prompt && required_string(record, columns->prompt, "", &prompt) != 0) ||
        optional_string(record, columns->query, "", &query) < 0 ||
        optional_string(record, columns->response, "", &response) < 0 ||
        optional_string(record, columns->system, "", &system) < 0)
        return -1;
    if (!response)
        return ft_error("'%s' is missing: a record without an answer is not a supervised example; if the data is "
                        "plain text for continued pretraining, tokenize it with stage = pt",
                        columns->response ? columns->response : "output");
    if (system[0])
        add_message(builder, FT_ROLE_SYSTEM, system);

    const json_t *history = columns->history ? json_object_get(record, columns->history) : NULL;
    if (history && !json_is_null(history)) {
        if (!json_is_array(history))
            return ft_error("'%s' is not a list of [prompt, answer] pairs (it is %s)", columns->history,
                            json_kind(history));
        for (size_t i = 0; i < json_array_size(history); i++) {
            const json_t *pair = json_array_get(history, i);
            const json_t *old_prompt = json_array_get(pair, 0), *old_answer = json_array_get(pair, 1);
            if (!json_is_array(pair) || json_array_size(pair) != 2 || !json_is_string(old_prompt) ||
                !json_is_string(old_answer))
                return ft_error("'%s' item %zu is not a [prompt, answer] pair of strings", columns->history, i + 1);
            add_message(builder, FT_ROLE_USER, json_string_value(old_prompt));
            add_message(builder, FT_ROLE_ASSISTANT, json_string_value(old_answer));
        }
    }
    /* LLaMA-Factory joins the non-empty ones of instruction and input with "\n". */
    begin_message(builder, FT_ROLE_USER);
    ft_strbuf_puts(&builder->text, prompt);
    if (prompt[0] && query[0])
        ft_strbuf_putc(&builder->text, '\n');
    ft_strbuf_puts(&builder->text, query);
    end_message(builder);
    add_message(builder, FT_ROLE_ASSISTANT, response);
    return 0;
}

/* The configured name, or (when NULL) whichever usual name the object has. */
static const char *field_name(const json_t *object, const char *configured, const char *usual, const char *other)
{
    if (configured)
        return configured;
    return json_object_get(object, usual) || !json_object_get(object, other) ? usual : other;
}

static int missing_field(const char *context, const char *configured, const char *usual, const char *other)
{
    if (configured)
        return ft_error("%s'%s' is missing", context, configured);
    return ft_error("%s'%s' (or '%s') is missing", context, usual, other);
}

typedef enum { TAG_USER, TAG_ASSISTANT, TAG_SYSTEM, TAG_TOOL, TAG_UNKNOWN } role_tag;

static bool tag_is(const char *role, const char *configured, const char *usual, const char *other)
{
    if (configured)
        return strcmp(role, configured) == 0;
    return strcmp(role, usual) == 0 || (other && strcmp(role, other) == 0);
}

static role_tag classify_role(const char *role, const ft_dataset_columns *columns)
{
    if (tag_is(role, columns->user_tag, "human", "user"))
        return TAG_USER;
    if (tag_is(role, columns->assistant_tag, "gpt", "assistant"))
        return TAG_ASSISTANT;
    if (tag_is(role, columns->system_tag, "system", NULL))
        return TAG_SYSTEM;
    if ((columns->observation_tag && strcmp(role, columns->observation_tag) == 0) ||
        (columns->function_tag && strcmp(role, columns->function_tag) == 0))
        return TAG_TOOL;
    return TAG_UNKNOWN;
}

static int unknown_role(size_t number, const char *role, const ft_dataset_columns *columns)
{
    if (columns->user_tag && columns->assistant_tag && columns->system_tag)
        return ft_error("message %zu: unknown role '%s' (expected %s, %s or %s)", number, role, columns->user_tag,
                        columns->assistant_tag, columns->system_tag);
    return ft_error("message %zu: unknown role '%s' (expected human or user, gpt or assistant, or system)", number,
                    role);
}

/* LLaMA-Factory's sharegpt rules: a system message only first, then user and
 * assistant turns alternating, ending with the assistant's. */
static int convert_sharegpt(record_builder *builder, const json_t *record, const ft_dataset_columns *columns)
{
    const char *list_name = field_name(record, columns->messages, "conversations", "messages");
    const json_t *list = json_object_get(record, list_name);
    if (!list)
        return missing_field("", columns->messages, "conversations", "messages");
    if (!json_is_array(list))
        return ft_error("'%s' is not a list of messages (it is %s)", list_name, json_kind(list));
    if (json_array_size(list) == 0)
        return ft_error("'%s' is empty", list_name);

    bool system_placed = false;
    size_t n_turns = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *message = json_array_get(list, i);
        size_t number = i + 1;
        if (!json_is_object(message))
            return ft_error("message %zu is %s, expected an object", number, json_kind(message));
        char context[48];
        snprintf(context, sizeof context, "message %zu: ", number);
        const char *role_name = field_name(message, columns->role_tag, "from", "role");
        const char *content_name = field_name(message, columns->content_tag, "value", "content");
        const char *role, *content;
        if (!json_object_get(message, role_name))
            return missing_field(context, columns->role_tag, "from", "role");
        if (!json_object_get(message, content_name))
            return missing_field(context, columns->content_tag, "value", "content");
        if (required_string(message, role_name, context, &role) != 0 ||
            required_string(message, content_name, context, &content) != 0)
            return -1;

        role_tag tag = classify_role(role, columns);
        if (tag == TAG_SYSTEM) {
            if (i != 0)
                return ft_error("message %zu: a system message may only come first", number);
            if (content[0])
                add_message(builder, FT_ROLE_SYSTEM, content);
            system_placed = true;
            continue;
        }
        if (tag == TAG_TOOL)
            return ft_error("message %zu: tool turns ('%s') are not supported", number, role);
        if (tag == TAG_UNKNOWN)
            return unknown_role(number, role, columns);
        if (!system_placed) {
            const char *system = "";
            if (optional_string(record, columns->system, "", &system) < 0)
                return -1;
            if (system[0])
                add_message(builder, FT_ROLE_SYSTEM, system);
            system_placed = true;
        }
        role_tag expected = n_turns % 2 == 0 ? TAG_USER : TAG_ASSISTANT;
        if (tag != expected)
            return ft_error("message %zu: expected %s turn, got '%s'", number,
                            expected == TAG_USER ? "a user" : "an assistant", role);
        add_message(builder, tag == TAG_USER ? FT_ROLE_USER : FT_ROLE_ASSISTANT, content);
        n_turns++;
    }
    if (n_turns == 0)
        return ft_error("'%s' holds no user or assistant turn", list_name);
    if (n_turns % 2 != 0)
        return ft_error("the conversation ends with a user turn: the last message must be the assistant's answer");
    return 0;
}

/* Pretraining text: the prompt column, or "text", and a non-empty query. */
static int convert_text(record_builder *builder, const json_t *record, const ft_dataset_columns *columns)
{
    const char *prompt = NULL, *query = "";
    const char *column = columns->prompt && json_object_get(record, columns->prompt) ? columns->prompt : "text";
    if (required_string(record, column, "", &prompt) != 0 || optional_string(record, columns->query, "", &query) < 0)
        return -1;
    begin_message(builder, FT_ROLE_USER);
    ft_strbuf_puts(&builder->text, prompt);
    if (prompt[0] && query[0])
        ft_strbuf_putc(&builder->text, '\n');
    ft_strbuf_puts(&builder->text, query);
    end_message(builder);
    return 0;
}

static bool has_messages_field(const json_t *record, const ft_dataset_columns *columns)
{
    if (columns->messages)
        return json_object_get(record, columns->messages) != NULL;
    return json_object_get(record, "conversations") || json_object_get(record, "messages");
}

/* A field that holds something: not null, "", "[]", [] or {} (a kto_tag of
 * false holds something: an undesirable answer). */
static bool holds_something(const json_t *value)
{
    if (!value || json_is_null(value))
        return false;
    if (json_is_string(value))
        return json_string_length(value) > 0 && strcmp(json_string_value(value), "[]") != 0;
    if (json_is_array(value))
        return json_array_size(value) > 0;
    if (json_is_object(value))
        return json_object_size(value) > 0;
    return true;
}

/* The record's images column: its paths found (ft_record_images_resolve), or none. */
static int read_images(const ft_dataset *dataset, const json_t *list, const char *column, ft_conversation *out)
{
    if (!holds_something(list))
        return 0;
    if (!json_is_array(list))
        return ft_error("'%s' is %s, expected a list of image paths", column, json_kind(list));
    size_t n_names = json_array_size(list);
    const char **names = ft_xcalloc(n_names, sizeof(char *));
    for (size_t i = 0; i < n_names; i++) {
        names[i] = json_string_value(json_array_get(list, i));
        if (!names[i]) {
            free(names);
            return ft_error("'%s' item %zu is %s, expected the path of an image", column, i + 1,
                            json_kind(json_array_get(list, i)));
        }
    }
    ft_record_images images;
    int status = ft_record_images_resolve(names, n_names, out->messages, out->count,
                                          dataset->media_dir ? dataset->media_dir : ".", &images);
    free(names);
    if (status == 0) {
        out->images = images.paths;
        out->n_images = images.count;
    }
    return status;
}

static int convert_record(const ft_dataset *dataset, record_builder *builder, const json_t *record,
                          const ft_dataset_columns *columns, ft_conversation *out)
{
    builder->count = 0;
    ft_strbuf_reset(&builder->text);
    out->images = NULL;
    out->n_images = 0;
    if (!json_is_object(record))
        return ft_error("the record is %s, expected an object", json_kind(record));
    /* tool definitions, preference labels, or images a text model would not see left
     * out would train on wrong targets */
    for (const char *const *column = ft_dataset_refused_columns(); *column; column++)
        if (holds_something(json_object_get(record, *column)))
            return ft_dataset_refuse_column("the record", *column);
    const char *images_column = columns->images ? columns->images : "images";
    const json_t *images = json_object_get(record, images_column);
    if (!dataset->read_images && holds_something(images))
        return ft_dataset_refuse_column("the record", "images");
    bool sharegpt = columns->format == FT_DATASET_FORMAT_SHAREGPT ||
                    (columns->format == FT_DATASET_FORMAT_AUTO && has_messages_field(record, columns));
    if ((columns->format == FT_DATASET_FORMAT_TEXT ? convert_text
         : sharegpt                                ? convert_sharegpt
                                                   : convert_alpaca)(builder, record, columns) != 0)
        return -1;
    finish_conversation(builder, out);
    if (dataset->read_images && read_images(dataset, images, images_column, out) != 0) {
        free(out->messages);
        return -1;
    }
    return 0;
}

/* --- one file's records --- */

typedef struct {
    ft_dataset *dataset;
    const char *file;  /* owned by dataset->files */
    const ft_dataset_columns *columns;
    ft_on_error on_error;
    record_builder builder;
} file_reader;

/* A record that could not be read: fail, or skip and count. ft_error holds why. */
static int record_failed(file_reader *reader, size_t record)
{
    ft_dataset *dataset = reader->dataset;
    char *message = ft_xasprintf("%s: record %zu: %s", reader->file, record, ft_error_message());
    if (reader->on_error == FT_ON_ERROR_FAIL) {
        ft_error("%s (fix the record, or set on_error = skip to skip bad records)", message);
        free(message);
        return -1;
    }
    dataset->n_skipped++;
    if (dataset->n_skip_messages < FT_DATASET_MAX_SKIP_MESSAGES) {
        dataset->skip_messages = ft_xrealloc(dataset->skip_messages,
                                             (dataset->n_skip_messages + 1) * sizeof(char *));
        dataset->skip_messages[dataset->n_skip_messages++] = message;
    } else {
        free(message);
    }
    return 0;
}

static int take_record(file_reader *reader, const json_t *record, size_t record_number)
{
    ft_dataset *dataset = reader->dataset;
    if (dataset->records_per_source && dataset->source_records >= dataset->records_per_source)
        return 0;
    dataset->source_records++;
    dataset->n_records++;
    ft_conversation conversation;
    if (convert_record(dataset, &reader->builder, record, reader->columns, &conversation) != 0)
        return record_failed(reader, record_number);
    conversation.file = reader->file;
    conversation.record = record_number;
    ft_grow((void **)&dataset->conversations, &dataset->capacity, dataset->count + 1, sizeof(ft_conversation));
    dataset->conversations[dataset->count++] = conversation;
    return 0;
}

static bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Advances *p over blanks, counting lines. */
static void skip_space(const char **p, const char *end, size_t *line)
{
    while (*p < end && is_json_space(**p)) {
        if (**p == '\n')
            (*line)++;
        (*p)++;
    }
}

static void count_lines(const char *from, const char *to, size_t *line)
{
    for (const char *p = from; p < to; p++)
        *line += *p == '\n';
}

/* A JSON array, parsed one record at a time so that only one record's tree is
 * in memory. A syntax error cannot be skipped: the rest of the array is unknown. */
static int read_array(file_reader *reader, const char *p, const char *end, size_t line)
{
    p++; /* '[' */
    skip_space(&p, end, &line);
    if (p < end && *p == ']')
        return 0;
    for (size_t record_number = 1;; record_number++) {
        json_error_t error;
        json_t *record = json_loadb(p, (size_t)(end - p), JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &error);
        if (!record)
            return ft_error("%s: record %zu: not valid JSON: %s (line %zu)", reader->file, record_number,
                            error.text, line + (size_t)(error.line > 0 ? error.line - 1 : 0));
        int status = take_record(reader, record, record_number);
        json_decref(record);
        if (status != 0)
            return -1;
        count_lines(p, p + error.position, &line);
        p += error.position;
        skip_space(&p, end, &line);
        if (p < end && *p == ']') {
            p++;
            skip_space(&p, end, &line);
            if (p < end)
                return ft_error("%s: line %zu: text after the closing ']' of the record array", reader->file,
                                line);
            return 0;
        }
        if (p >= end || *p != ',')
            return ft_error("%s: line %zu: expected ',' or ']' after record %zu", reader->file, line,
                            record_number);
        p++;
        skip_space(&p, end, &line);
    }
}

/* JSON Lines: every non-blank line is a record, so a broken line can be skipped. */
static int read_lines(file_reader *reader, const char *p, const char *end)
{
    size_t record_number = 0;
    while (p < end) {
        const char *newline = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = newline ? newline : end;
        const char *start = p;
        p = newline ? newline + 1 : end;
        const char *last = line_end;
        while (start < last && is_json_space(*start))
            start++;
        while (last > start && is_json_space(last[-1]))
            last--;
        if (start == last)
            continue;
        record_number++;
        json_error_t error;
        json_t *record = json_loadb(start, (size_t)(last - start), JSON_DECODE_ANY, &error);
        if (!record) {
            ft_error("not valid JSON: %s (column %d)", error.text, error.column);
            reader->dataset->n_records++;
            if (record_failed(reader, record_number) != 0)
                return -1;
            continue;
        }
        int status = take_record(reader, record, record_number);
        json_decref(record);
        if (status != 0)
            return -1;
    }
    return 0;
}

static const char *remember_file(ft_dataset *dataset, const char *file_name)
{
    dataset->files = ft_xrealloc(dataset->files, (dataset->n_files + 1) * sizeof(char *));
    dataset->files[dataset->n_files] = ft_xstrdup(file_name);
    return dataset->files[dataset->n_files++];
}

int ft_dataset_read_text(ft_dataset *dataset, const char *file_name, const char *text, size_t length,
                         const ft_dataset_columns *columns, ft_on_error on_error)
{
    file_reader reader = {.dataset = dataset, .columns = columns, .on_error = on_error};
    reader.file = remember_file(dataset, file_name);
    ft_strbuf_init(&reader.builder.text);

    const char *body = text, *end = text + length;
    if (length >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0)
        body += 3; /* a UTF-8 byte order mark, as some editors write */
    const char *p = body;
    size_t line = 1;
    skip_space(&p, end, &line);
    int status = p < end && *p == '[' ? read_array(&reader, p, end, line) : read_lines(&reader, body, end);
    free(reader.builder.messages);
    ft_strbuf_free(&reader.builder.text);
    return status;
}

static bool has_extension(const char *path, const char *extension)
{
    const char *dot = strrchr(ft_path_basename(path), '.');
    return dot && strcasecmp(dot, extension) == 0;
}

static bool has_dataset_extension(const char *path, const ft_dataset_columns *columns)
{
    return has_extension(path, ".json") || has_extension(path, ".jsonl") ||
           (columns->format == FT_DATASET_FORMAT_TEXT && has_extension(path, ".txt"));
}

/* A .txt file for pretraining: every line a record, empty ones too (the lines
 * of Python's splitlines on \n, \r\n and \r, as Hugging Face's text loader). */
static int read_text_lines(ft_dataset *dataset, const char *path, const char *text, size_t length,
                           ft_on_error on_error)
{
    file_reader reader = {.dataset = dataset, .on_error = on_error};
    ft_dataset_columns columns = {.format = FT_DATASET_FORMAT_TEXT};
    reader.columns = &columns;
    reader.file = remember_file(dataset, path);
    ft_strbuf_init(&reader.builder.text);
    const char *p = text, *end = text + length;
    int status = 0;
    for (size_t number = 1; p < end && status == 0; number++) {
        size_t line_length = strcspn(p, "\r\n");
        if (p + line_length > end)
            line_length = (size_t)(end - p);
        json_t *record = json_pack("{s:s%}", "text", p, line_length);
        status = record ? take_record(&reader, record, number) : ft_error("%s: line %zu is not UTF-8", path, number);
        json_decref(record);
        p += line_length; /* then past \n, \r or \r\n */
        if (p < end && *p == '\r' && p + 1 < end && p[1] == '\n')
            p += 2;
        else if (p < end)
            p++;
    }
    free(reader.builder.messages);
    ft_strbuf_free(&reader.builder.text);
    return status;
}

static int read_file(ft_dataset *dataset, const char *path, const ft_dataset_columns *columns,
                     ft_on_error on_error)
{
    if (!has_dataset_extension(path, columns))
        return ft_error("%s: not a dataset file: expected a .json or .jsonl file (alpaca or sharegpt records)%s",
                        path, has_extension(path, ".txt") ? "; .txt files are read as pretraining text with stage = pt" : "");
    char *text;
    size_t length;
    if (ft_read_file(path, &text, &length) != 0)
        return -1;
    int status = has_extension(path, ".txt") ? read_text_lines(dataset, path, text, length, on_error)
                                             : ft_dataset_read_text(dataset, path, text, length, columns, on_error);
    free(text);
    return status;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A folder: its .json and .jsonl files in name order, as LLaMA-Factory loads a folder. */
static int read_folder(ft_dataset *dataset, const char *folder, const ft_dataset_columns *columns,
                       ft_on_error on_error)
{
    DIR *dir = opendir(folder);
    if (!dir)
        return ft_error_errno("cannot open dataset folder %s", folder);
    char **names = NULL;
    size_t count = 0;
    for (struct dirent *entry; (entry = readdir(dir));) {
        if (entry->d_name[0] == '.' || !has_dataset_extension(entry->d_name, columns))
            continue;
        names = ft_xrealloc(names, (count + 1) * sizeof(char *));
        names[count++] = ft_xstrdup(entry->d_name);
    }
    closedir(dir);
    qsort(names, count, sizeof(char *), compare_names);
    int status = count ? 0 : ft_error("dataset folder %s holds no .json or .jsonl files", folder);
    for (size_t i = 0; i < count; i++) {
        if (status == 0) {
            char *path = ft_path_join(folder, names[i]);
            status = read_file(dataset, path, columns, on_error);
            free(path);
        }
        free(names[i]);
    }
    free(names);
    return status;
}

int ft_dataset_read(ft_dataset *dataset, const ft_dataset_source *source, ft_on_error on_error)
{
    if (!ft_path_exists(source->path))
        return ft_error("dataset file %s does not exist", source->path);
    dataset->source_records = 0;
    dataset->media_dir = source->media_dir;
    int status = ft_path_is_dir(source->path) ? read_folder(dataset, source->path, &source->columns, on_error)
                                              : read_file(dataset, source->path, &source->columns, on_error);
    dataset->media_dir = NULL; /* the source's, freed after */
    return status;
}
