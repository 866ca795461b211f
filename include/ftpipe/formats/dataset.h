/* dataset: supervised fine-tuning records read into conversations, as
 * LLaMA-Factory reads them, so that its users' data works unchanged.
 *
 * Formats:
 *   alpaca    {"instruction", "input", "output", "system", "history": [[q, a], ...]}:
 *             the user turn is instruction + "\n" + input (either may be empty),
 *             the answer is output, history holds earlier turns.
 *   sharegpt  {"conversations": [{"from": "human"|"gpt"|"system", "value"}, ...]} or
 *             {"messages": [{"role": "user"|"assistant"|"system", "content"}, ...]}:
 *             an optional system message first, then user and assistant turns in
 *             turn, ending with the assistant's.
 * Files are a JSON array of records or JSON Lines (one record per line; blank
 * lines are not records). A folder with LLaMA-Factory's dataset_info.json names
 * datasets by "file_name", "formatting", "columns" and "tags".
 *
 * A bad record is an error "FILE: record N: reason" (N counts from 1), or, with
 * FT_ON_ERROR_SKIP, is skipped and counted. */
#ifndef FTPIPE_DATASET_H
#define FTPIPE_DATASET_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/formats/message.h"

/* TEXT: pretraining text, one user message per record: the prompt column
 * ("text" where the record has no prompt column), joined to a non-empty query
 * with "\n", as LLaMA-Factory's pretraining reads it; a .txt file's every line
 * is a record {"text": line}. */
typedef enum {
    FT_DATASET_FORMAT_AUTO,
    FT_DATASET_FORMAT_ALPACA,
    FT_DATASET_FORMAT_SHAREGPT,
    FT_DATASET_FORMAT_TEXT
} ft_dataset_format;

typedef enum { FT_ON_ERROR_FAIL, FT_ON_ERROR_SKIP } ft_on_error;

/* Where a record keeps each field: LLaMA-Factory's "columns" and "tags".
 * alpaca: a NULL history or system is not read.
 * sharegpt: a NULL name accepts the usual ones (messages: "conversations" or
 * "messages"; role: "from" or "role"; content: "value" or "content"; user:
 * "human" or "user"; assistant: "gpt" or "assistant"; system: "system");
 * observation_tag and function_tag name tool turns, which are refused. */
typedef struct {
    ft_dataset_format format; /* AUTO: sharegpt when a record has its messages field, else alpaca */
    char *prompt;
    char *query;
    char *response;
    char *history;
    char *system;
    char *messages;
    char *role_tag;
    char *content_tag;
    char *user_tag;
    char *assistant_tag;
    char *system_tag;
    char *observation_tag;
    char *function_tag;
    char *images;  /* the list of a record's image paths ("images" when NULL) */
} ft_dataset_columns;

typedef struct {
    char *name;  /* the name in dataset_info.json, or the path of a file given directly */
    char *path;  /* a .json/.jsonl file, or a folder whose such files are read in name order */
    char *media_dir; /* image paths are relative to it (LLaMA-Factory's media_dir): the
                        dataset_info.json folder, or the folder of a file given directly */
    ft_dataset_columns columns;
} ft_dataset_source;

/* A file given directly: the usual field names of format. */
void ft_dataset_source_for_file(const char *path, ft_dataset_format format, ft_dataset_source *out);
/* The entries `names` of FOLDER/dataset_info.json, in the order given. Entries
 * that need what ftpipe does not do (hub downloads, ranking data, images, tools)
 * are refused by name. */
int ft_dataset_info_load(const char *folder, const char *const *names, size_t n_names, ft_dataset_source **out,
                         size_t *count);
/* The dataset names that FOLDER/dataset_info.json declares, comma-separated, for
 * messages. Caller frees. */
int ft_dataset_info_names(const char *folder, char **names);
void ft_dataset_source_free(ft_dataset_source *source);
void ft_dataset_sources_free(ft_dataset_source *sources, size_t count);

/* One record: an optional system message, then user and assistant turns, the
 * last an assistant's. One allocation holds the messages and their text. */
typedef struct {
    ft_message *messages;
    size_t count;
    const char *file;  /* owned by the dataset */
    size_t record;     /* 1-based, within file */
    char **images;     /* read_images: the record's image files, found as dataset_images.h says; owned */
    size_t n_images;
} ft_conversation;

#define FT_DATASET_MAX_SKIP_MESSAGES 20

typedef struct {
    ft_conversation *conversations;
    size_t count;
    size_t capacity;
    size_t n_records;        /* records read, skipped ones included */
    size_t n_skipped;
    char **skip_messages;    /* why, for the first FT_DATASET_MAX_SKIP_MESSAGES skipped */
    size_t n_skip_messages;
    char **files;            /* every file read, in order */
    size_t n_files;
    /* When not 0, each ft_dataset_read takes only the source's first this many
     * records (LLaMA-Factory's max_samples); the rest are neither read nor counted. */
    size_t records_per_source;
    size_t source_records;   /* taken from the current source */
    /* Set before reading: records' images are read (their placeholders checked, their
     * files found); when false a record with images is refused, as a text model
     * would train on the literal <image> placeholders. */
    bool read_images;
    const char *media_dir;   /* of the current source ("." when reading text directly) */
} ft_dataset;

void ft_dataset_init(ft_dataset *dataset);
void ft_dataset_free(ft_dataset *dataset);

/* Appends the records of source (a file or a folder of files). */
int ft_dataset_read(ft_dataset *dataset, const ft_dataset_source *source, ft_on_error on_error);
/* Appends the records of text, as if read from a file called file_name. */
int ft_dataset_read_text(ft_dataset *dataset, const char *file_name, const char *text, size_t length,
                         const ft_dataset_columns *columns, ft_on_error on_error);

#endif
