/* Tests of dataset reading: alpaca and sharegpt in JSON and JSON Lines,
 * dataset_info.json, and every malformed record with its exact message. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/formats/dataset.h"

#define FIXTURES "tests/fixtures/datasets"

/* "S:text|U:text|A:text": a conversation in one comparable string. Caller frees. */
static char *describe(const ft_conversation *conversation)
{
    static const char role_letter[] = {'S', 'U', 'A'};
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < conversation->count; i++)
        ft_strbuf_printf(&text, "%s%c:%s", i ? "|" : "", role_letter[conversation->messages[i].role],
                         conversation->messages[i].content);
    return ft_strbuf_take(&text);
}

static void check_conversation(const ft_dataset *dataset, size_t index, const char *expected)
{
    CHECK(index < dataset->count);
    if (index >= dataset->count)
        return;
    char *text = describe(&dataset->conversations[index]);
    CHECK_STR(text, expected);
    free(text);
}

static void read_file_source(ft_dataset *dataset, const char *path, ft_dataset_format format)
{
    ft_dataset_source source;
    ft_dataset_source_for_file(path, format, &source);
    int status = ft_dataset_read(dataset, &source, FT_ON_ERROR_FAIL);
    if (status != 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    CHECK_INT(status, 0);
    ft_dataset_source_free(&source);
}

/* Reads text as one file with the usual names; returns the status. */
static int read_text(ft_dataset *dataset, const char *text, ft_dataset_format format, ft_on_error on_error)
{
    ft_dataset_source source;
    ft_dataset_source_for_file("data.jsonl", format, &source);
    int status = ft_dataset_read_text(dataset, "data.jsonl", text, strlen(text), &source.columns, on_error);
    ft_dataset_source_free(&source);
    return status;
}

TEST(reads_alpaca_json_array)
{
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    read_file_source(&dataset, FIXTURES "/alpaca.json", FT_DATASET_FORMAT_ALPACA);
    CHECK_INT(dataset.count, 3);
    CHECK_INT(dataset.n_records, 3);
    check_conversation(&dataset, 0, "U:What is 2+3?|A:5");
    check_conversation(&dataset, 1, "U:Translate to French\ncat|A:chat");
    check_conversation(&dataset, 2,
                       "S:You are a calculator.|U:What is 1+1?|A:2|U:And 2+2?|A:4|U:And 4+4?|A:8");
    CHECK_STR(dataset.conversations[2].file, FIXTURES "/alpaca.json");
    CHECK_INT(dataset.conversations[2].record, 3);
    ft_dataset_free(&dataset);
}

TEST(reads_sharegpt_json_lines_both_spellings)
{
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    read_file_source(&dataset, FIXTURES "/sharegpt.jsonl", FT_DATASET_FORMAT_AUTO);
    CHECK_INT(dataset.count, 2);
    check_conversation(&dataset, 0, "S:Be brief.|U:Hi|A:Hello!");
    check_conversation(&dataset, 1, "U:1+1?|A:2|U:times 3?|A:6");
    CHECK_INT(dataset.conversations[1].record, 2); /* the blank line is not a record */
    ft_dataset_free(&dataset);
}

TEST(joins_instruction_and_input_as_llamafactory_does)
{
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    const char *text = "{\"instruction\": \"\", \"input\": \"only input\", \"output\": \"x\"}\n"
                       "{\"instruction\": \"only instruction\", \"input\": null, \"output\": \"\"}\n"
                       "{\"instruction\": \"a\", \"input\": \"b\", \"output\": \"c\", \"system\": \"\"}\n";
    CHECK_INT(read_text(&dataset, text, FT_DATASET_FORMAT_AUTO, FT_ON_ERROR_FAIL), 0);
    check_conversation(&dataset, 0, "U:only input|A:x");
    check_conversation(&dataset, 1, "U:only instruction|A:");
    check_conversation(&dataset, 2, "U:a\nb|A:c");
    ft_dataset_free(&dataset);
}

TEST(accepts_byte_order_mark_crlf_and_empty_array)
{
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    CHECK_INT(read_text(&dataset, "\xEF\xBB\xBF{\"instruction\": \"q\", \"output\": \"a\"}\r\n\r\n",
                        FT_DATASET_FORMAT_ALPACA, FT_ON_ERROR_FAIL),
              0);
    CHECK_INT(read_text(&dataset, " [ ] \n", FT_DATASET_FORMAT_ALPACA, FT_ON_ERROR_FAIL), 0);
    CHECK_INT(dataset.count, 1);
    check_conversation(&dataset, 0, "U:q|A:a");
    ft_dataset_free(&dataset);
}

#define OUTPUT_MISSING                                                                                        \
    "'output' is missing: a record without an answer is not a supervised example; if the data is plain text for " \
    "continued pretraining, tokenize it with stage = pt"

/* Each malformed record, read on its own as line 1 of data.jsonl, and the exact message. */
static const struct {
    const char *record;
    ft_dataset_format format;
    const char *message;
} malformed[] = {
    {"{\"instruction\": \"q\"", FT_DATASET_FORMAT_AUTO,
     "not valid JSON: '}' expected near end of file (column 19)"},
    {"null", FT_DATASET_FORMAT_AUTO, "the record is null, expected an object"},
    {"\"text\"", FT_DATASET_FORMAT_AUTO, "the record is a string, expected an object"},
    {"{\"instruction\": \"q\"}", FT_DATASET_FORMAT_AUTO, OUTPUT_MISSING},
    {"{\"instruction\": \"q\", \"output\": null}", FT_DATASET_FORMAT_ALPACA, OUTPUT_MISSING},
    {"{\"input\": \"q\", \"output\": \"a\"}", FT_DATASET_FORMAT_ALPACA, "'instruction' is missing"},
    {"{\"instruction\": 7, \"output\": \"a\"}", FT_DATASET_FORMAT_ALPACA,
     "'instruction' is not a string (it is a number)"},
    {"{\"instruction\": \"q\", \"input\": [\"x\"], \"output\": \"a\"}", FT_DATASET_FORMAT_ALPACA,
     "'input' is not a string (it is a list)"},
    {"{\"instruction\": \"q\", \"output\": {\"text\": \"a\"}}", FT_DATASET_FORMAT_ALPACA,
     "'output' is not a string (it is an object)"},
    {"{\"instruction\": \"q\", \"output\": \"a\", \"system\": true}", FT_DATASET_FORMAT_ALPACA,
     "'system' is not a string (it is a boolean)"},
    {"{\"instruction\": \"q\", \"output\": \"a\", \"history\": \"earlier\"}", FT_DATASET_FORMAT_ALPACA,
     "'history' is not a list of [prompt, answer] pairs (it is a string)"},
    {"{\"instruction\": \"q\", \"output\": \"a\", \"history\": [[\"p\", \"r\"], [\"p\"]]}", FT_DATASET_FORMAT_ALPACA,
     "'history' item 2 is not a [prompt, answer] pair of strings"},
    {"{\"instruction\": \"q\", \"output\": \"a\", \"history\": [[\"p\", 3]]}", FT_DATASET_FORMAT_ALPACA,
     "'history' item 1 is not a [prompt, answer] pair of strings"},
    {"{\"instruction\": \"q\", \"output\": \"a\"}", FT_DATASET_FORMAT_SHAREGPT,
     "'conversations' (or 'messages') is missing"},
    {"{\"conversations\": \"hi\"}", FT_DATASET_FORMAT_AUTO,
     "'conversations' is not a list of messages (it is a string)"},
    {"{\"conversations\": []}", FT_DATASET_FORMAT_AUTO, "'conversations' is empty"},
    {"{\"messages\": [\"hi\"]}", FT_DATASET_FORMAT_AUTO, "message 1 is a string, expected an object"},
    {"{\"conversations\": [{\"value\": \"hi\"}]}", FT_DATASET_FORMAT_AUTO,
     "message 1: 'from' (or 'role') is missing"},
    {"{\"conversations\": [{\"from\": \"human\"}]}", FT_DATASET_FORMAT_AUTO,
     "message 1: 'value' (or 'content') is missing"},
    {"{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}]}", FT_DATASET_FORMAT_AUTO,
     "message 1: 'content' is not a string (it is a list)"},
    {"{\"messages\": [{\"role\": 1, \"content\": \"x\"}]}", FT_DATASET_FORMAT_AUTO,
     "message 1: 'role' is not a string (it is a number)"},
    {"{\"conversations\": [{\"from\": \"bot\", \"value\": \"hi\"}]}", FT_DATASET_FORMAT_AUTO,
     "message 1: unknown role 'bot' (expected human or user, gpt or assistant, or system)"},
    {"{\"conversations\": [{\"from\": \"gpt\", \"value\": \"hi\"}, {\"from\": \"human\", \"value\": \"q\"}]}",
     FT_DATASET_FORMAT_AUTO, "message 1: expected a user turn, got 'gpt'"},
    {"{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"human\", \"value\": \"b\"}]}",
     FT_DATASET_FORMAT_AUTO, "message 2: expected an assistant turn, got 'human'"},
    {"{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"system\", \"value\": \"s\"}]}",
     FT_DATASET_FORMAT_AUTO, "message 2: a system message may only come first"},
    {"{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}]}", FT_DATASET_FORMAT_AUTO,
     "the conversation ends with a user turn: the last message must be the assistant's answer"},
    {"{\"conversations\": [{\"from\": \"system\", \"value\": \"s\"}]}", FT_DATASET_FORMAT_AUTO,
     "'conversations' holds no user or assistant turn"},
    {"{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}], "
     "\"system\": 5}",
     FT_DATASET_FORMAT_AUTO, "'system' is not a string (it is a number)"},
};

TEST(reports_each_malformed_record)
{
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        ft_dataset dataset;
        ft_dataset_init(&dataset);
        char *text = ft_xasprintf("%s\n", malformed[i].record);
        CHECK_INT(read_text(&dataset, text, malformed[i].format, FT_ON_ERROR_FAIL), -1);
        char *expected = ft_xasprintf("data.jsonl: record 1: %s (fix the record, or set on_error = skip to skip "
                                      "bad records)",
                                      malformed[i].message);
        CHECK_STR(ft_error_message(), expected);
        CHECK_INT(dataset.count, 0);
        free(expected);
        free(text);
        ft_dataset_free(&dataset);
    }
}

TEST(refuses_records_whose_tools_images_or_labels_would_be_lost)
{
    static const struct {
        const char *record, *start;
    } cases[] = {
        {"{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": \"a\"}], "
         "\"tools\": \"[{\\\"name\\\": \\\"f\\\"}]\"}",
         "the record has \"tools\", tool (function) definitions, which ftpipe's chat templates do not render yet"},
        {"{\"instruction\": \"<image>What is it?\", \"output\": \"A cat.\", \"images\": [\"cat.jpg\"]}",
         "the record is multimodal (\"images\"): ftpipe reads images only in the tokenize stage with a "
         "vision-language template"},
        {"{\"instruction\": \"q\", \"output\": \"bad answer\", \"kto_tag\": false}", NULL},
        {"{\"instruction\": \"q\", \"output\": \"bad answer\", \"kto_tag\": true}",
         "the record is KTO data: \"kto_tag\" labels answers desirable or undesirable"},
        {"{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}], \"chosen\": {\"from\": \"gpt\", "
         "\"value\": \"a\"}, \"rejected\": {\"from\": \"gpt\", \"value\": \"b\"}}",
         "the record is preference data (\"chosen\")"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ft_dataset dataset;
        ft_dataset_init(&dataset);
        char *text = ft_xasprintf("%s\n", cases[i].record);
        /* kto_tag false also marks an undesirable answer: refused like true */
        const char *start = cases[i].start ? cases[i].start : "the record is KTO data";
        CHECK_INT(read_text(&dataset, text, FT_DATASET_FORMAT_AUTO, FT_ON_ERROR_FAIL), -1);
        char *expected = ft_xasprintf("data.jsonl: record 1: %s", start);
        if (strncmp(ft_error_message(), expected, strlen(expected)) != 0)
            CHECK_STR(ft_error_message(), expected);
        CHECK(strstr(ft_error_message(), "remove") == NULL);
        free(expected);
        free(text);
        ft_dataset_free(&dataset);
    }
    /* empty tools and images are nothing lost */
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    const char *text = "{\"instruction\": \"q\", \"output\": \"a\", \"tools\": \"\", \"images\": []}\n"
                       "{\"instruction\": \"q\", \"output\": \"a\", \"tools\": \"[]\"}\n";
    CHECK_INT(read_text(&dataset, text, FT_DATASET_FORMAT_AUTO, FT_ON_ERROR_FAIL), 0);
    CHECK_INT(dataset.count, 2);
    ft_dataset_free(&dataset);
}

/* read_images: each record's images found beside its file, the placeholders
 * counted, and every problem an error naming file, record and image. */
TEST(reads_images_when_asked)
{
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    dataset.read_images = true;
    dataset.media_dir = "tests/fixtures/vision";
    const char *text = "{\"instruction\": \"<image>What is it?\", \"output\": \"A cat.\", "
                       "\"images\": [\"images/rgb_odd.jpg\"]}\n"
                       "{\"instruction\": \"No picture.\", \"output\": \"Fine.\", \"images\": []}\n";
    CHECK_INT(read_text(&dataset, text, FT_DATASET_FORMAT_AUTO, FT_ON_ERROR_FAIL), 0);
    CHECK_INT(dataset.count, 2);
    if (dataset.count == 2) {
        CHECK_INT(dataset.conversations[0].n_images, 1);
        if (dataset.conversations[0].n_images == 1)
            CHECK_STR(dataset.conversations[0].images[0], "tests/fixtures/vision/images/rgb_odd.jpg");
        CHECK_INT(dataset.conversations[1].n_images, 0);
    }
    ft_dataset_free(&dataset);

    static const struct {
        const char *record, *message;
    } cases[] = {
        {"{\"instruction\": \"What is it?\", \"output\": \"A cat.\", \"images\": [\"images/rgb_odd.jpg\"]}",
         "data.jsonl: record 1: 0 <image> placeholders in the messages but 1 image in \"images\""},
        {"{\"instruction\": \"<image>?\", \"output\": \"A cat.\", \"images\": [\"images/gone.jpg\"]}",
         "data.jsonl: record 1: image 1 'images/gone.jpg' is not a file"},
        {"{\"instruction\": \"<image>?\", \"output\": \"A cat.\", \"images\": \"images/rgb_odd.jpg\"}",
         "data.jsonl: record 1: 'images' is a string, expected a list of image paths"},
        {"{\"instruction\": \"<image>?\", \"output\": \"A cat.\", \"images\": [3]}",
         "data.jsonl: record 1: 'images' item 1 is a number, expected the path of an image"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ft_dataset_init(&dataset);
        dataset.read_images = true;
        dataset.media_dir = "tests/fixtures/vision";
        char *line = ft_xasprintf("%s\n", cases[i].record);
        CHECK_INT(read_text(&dataset, line, FT_DATASET_FORMAT_AUTO, FT_ON_ERROR_FAIL), -1);
        if (strncmp(ft_error_message(), cases[i].message, strlen(cases[i].message)) != 0)
            CHECK_STR(ft_error_message(), cases[i].message);
        free(line);
        ft_dataset_free(&dataset);
    }
}

TEST(names_the_record_number_in_the_message)
{
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    const char *text = "[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": \"c\", \"output\": \"d\"},\n"
                       " {\"instruction\": \"e\", \"output\": \"f\"}, {\"instruction\": \"g\"}]";
    CHECK_INT(read_text(&dataset, text, FT_DATASET_FORMAT_AUTO, FT_ON_ERROR_FAIL), -1);
    CHECK_STR(ft_error_message(), "data.jsonl: record 4: " OUTPUT_MISSING " (fix the record, or set on_error = "
                                  "skip to skip bad records)");
    ft_dataset_free(&dataset);
}

TEST(skips_and_counts_bad_records)
{
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    const char *text = "{\"instruction\": \"a\", \"output\": \"b\"}\n"
                       "{\"instruction\": \"c\"}\n"
                       "{broken\n"
                       "{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", \"value\": "
                       "\"r\"}]}\n"
                       "42\n";
    CHECK_INT(read_text(&dataset, text, FT_DATASET_FORMAT_AUTO, FT_ON_ERROR_SKIP), 0);
    CHECK_INT(dataset.count, 2);
    CHECK_INT(dataset.n_records, 5);
    CHECK_INT(dataset.n_skipped, 3);
    CHECK_INT(dataset.n_skip_messages, 3);
    if (dataset.n_skip_messages == 3) {
        CHECK_STR(dataset.skip_messages[0], "data.jsonl: record 2: " OUTPUT_MISSING);
        CHECK_STR(dataset.skip_messages[1],
                  "data.jsonl: record 3: not valid JSON: string or '}' expected near 'broken' (column 7)");
        CHECK_STR(dataset.skip_messages[2], "data.jsonl: record 5: the record is a number, expected an object");
    }
    check_conversation(&dataset, 1, "U:q|A:r");
    CHECK_INT(dataset.conversations[1].record, 4);
    ft_dataset_free(&dataset);
}

TEST(keeps_only_the_first_skip_messages)
{
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (int i = 0; i < FT_DATASET_MAX_SKIP_MESSAGES + 5; i++)
        ft_strbuf_puts(&text, "{\"instruction\": \"a\"}\n");
    CHECK_INT(read_text(&dataset, text.data, FT_DATASET_FORMAT_AUTO, FT_ON_ERROR_SKIP), 0);
    CHECK_INT(dataset.n_skipped, FT_DATASET_MAX_SKIP_MESSAGES + 5);
    CHECK_INT(dataset.n_skip_messages, FT_DATASET_MAX_SKIP_MESSAGES);
    ft_strbuf_free(&text);
    ft_dataset_free(&dataset);
}

TEST(refuses_broken_json_arrays_even_when_skipping)
{
    static const struct {
        const char *text;
        const char *message;
    } cases[] = {
        {"[{\"instruction\": \"a\", \"output\": \"b\"},\n\n {\"instruction\": \"c\" \"output\": \"d\"}]",
         "data.jsonl: record 2: not valid JSON: '}' expected near '\"output\"' (line 3)"},
        {"[{\"instruction\": \"a\", \"output\": \"b\"}\n {\"instruction\": \"c\", \"output\": \"d\"}]",
         "data.jsonl: line 2: expected ',' or ']' after record 1"},
        {"[{\"instruction\": \"a\", \"output\": \"b\"}] ]",
         "data.jsonl: line 1: text after the closing ']' of the record array"},
        {"[{\"instruction\": \"a\", \"output\": \"b\"},]",
         "data.jsonl: record 2: not valid JSON: unexpected token near ']' (line 1)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ft_dataset dataset;
        ft_dataset_init(&dataset);
        CHECK_INT(read_text(&dataset, cases[i].text, FT_DATASET_FORMAT_AUTO, FT_ON_ERROR_SKIP), -1);
        CHECK_STR(ft_error_message(), cases[i].message);
        ft_dataset_free(&dataset);
    }
}

TEST(refuses_missing_and_unsupported_files)
{
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    ft_dataset_source source;
    ft_dataset_source_for_file(FIXTURES "/absent.json", FT_DATASET_FORMAT_AUTO, &source);
    CHECK_INT(ft_dataset_read(&dataset, &source, FT_ON_ERROR_FAIL), -1);
    CHECK_STR(ft_error_message(), "dataset file " FIXTURES "/absent.json does not exist");
    ft_dataset_source_free(&source);

    ft_dataset_source_for_file(FIXTURES "/llamafactory/parts/README.txt", FT_DATASET_FORMAT_AUTO, &source);
    CHECK_INT(ft_dataset_read(&dataset, &source, FT_ON_ERROR_FAIL), -1);
    CHECK_STR(ft_error_message(), FIXTURES "/llamafactory/parts/README.txt: not a dataset file: expected a .json "
                                           "or .jsonl file (alpaca or sharegpt records); .txt files are read as "
                                           "pretraining text with stage = pt");
    ft_dataset_source_free(&source);
    ft_dataset_free(&dataset);
}

TEST(reads_datasets_named_in_dataset_info)
{
    const char *names[] = {"alpaca_demo", "renamed", "openai", "parts"};
    ft_dataset_source *sources;
    size_t count;
    int status = ft_dataset_info_load(FIXTURES "/llamafactory", names, 4, &sources, &count);
    CHECK_INT(status, 0);
    if (status != 0) {
        fprintf(stderr, "  %s\n", ft_error_message());
        return;
    }
    CHECK_INT(count, 4);
    CHECK_STR(sources[0].name, "alpaca_demo");
    CHECK_STR(sources[0].path, FIXTURES "/llamafactory/alpaca_demo.json");
    CHECK(sources[0].columns.system == NULL); /* unmapped: not read, as in LLaMA-Factory */

    ft_dataset dataset;
    ft_dataset_init(&dataset);
    for (size_t i = 0; i < count; i++)
        CHECK_INT(ft_dataset_read(&dataset, &sources[i], FT_ON_ERROR_FAIL), 0);
    CHECK_INT(dataset.count, 5);
    check_conversation(&dataset, 0, "U:Name a color.|A:Blue.");
    check_conversation(&dataset, 1, "S:Terse.|U:Hi|A:Hello|U:Sum?\n1 2|A:3");
    check_conversation(&dataset, 2, "S:S|U:U|A:A");
    check_conversation(&dataset, 3, "U:first|A:one");
    check_conversation(&dataset, 4, "U:second|A:two");
    CHECK_STR(dataset.conversations[4].file, FIXTURES "/llamafactory/parts/b.jsonl");
    ft_dataset_free(&dataset);
    ft_dataset_sources_free(sources, count);
}

TEST(uses_exact_tags_from_dataset_info)
{
    const char *names[] = {"openai"};
    ft_dataset_source *sources;
    size_t count;
    CHECK_INT(ft_dataset_info_load(FIXTURES "/llamafactory", names, 1, &sources, &count), 0);
    ft_dataset dataset;
    ft_dataset_init(&dataset);
    const char *text = "{\"messages\": [{\"from\": \"human\", \"content\": \"q\"}]}\n"
                       "{\"messages\": [{\"role\": \"human\", \"content\": \"q\"}]}\n";
    CHECK_INT(ft_dataset_read_text(&dataset, "x.jsonl", text, strlen(text), &sources[0].columns, FT_ON_ERROR_SKIP),
              0);
    CHECK_INT(dataset.n_skip_messages, 2);
    if (dataset.n_skip_messages == 2) {
        CHECK_STR(dataset.skip_messages[0], "x.jsonl: record 1: message 1: 'role' is missing");
        CHECK_STR(dataset.skip_messages[1],
                  "x.jsonl: record 2: message 1: unknown role 'human' (expected user, assistant or system)");
    }
    text = "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"function_call\", \"content\": "
           "\"f()\"}]}\n";
    CHECK_INT(ft_dataset_read_text(&dataset, "y.jsonl", text, strlen(text), &sources[0].columns, FT_ON_ERROR_FAIL),
              -1);
    CHECK_STR(ft_error_message(), "y.jsonl: record 1: message 2: tool turns ('function_call') are not supported "
                                  "(fix the record, or set on_error = skip to skip bad records)");
    ft_dataset_free(&dataset);
    ft_dataset_sources_free(sources, count);
}

TEST(refuses_bad_dataset_info_entries)
{
    static const struct {
        const char *name;
        const char *message;
    } cases[] = {
        {"absent", "dataset 'absent' is not in " FIXTURES "/llamafactory/dataset_info.json (it names: alpaca_demo, "
                   "renamed, openai, parts, from_hub, clips, typo, preferences, odd_format, no_file)"},
        {"from_hub", FIXTURES "/llamafactory/dataset_info.json: dataset 'from_hub' comes from a hub "
                     "(\"hf_hub_url\"): fetch it with a download stage and name the local file in \"file_name\""},
        {"clips", FIXTURES "/llamafactory/dataset_info.json: dataset 'clips' is multimodal (\"videos\"): ftpipe "
                  "reads images only in the tokenize stage with a vision-language template (qwen2_vl; llava or llama3 "
                  "with a LLaVA model), and no "
                  "videos or audio; the text alone would train on the literal <image>/<video>/<audio> placeholders, "
                  "so it is not usable for supervised fine-tuning here"},
        {"typo", FIXTURES "/llamafactory/dataset_info.json: dataset 'typo': unknown key \"promt\" in \"columns\" "
                 "(known: prompt, query, response, history, system, messages, images)"},
        {"preferences", FIXTURES "/llamafactory/dataset_info.json: dataset 'preferences' is ranking (preference) "
                        "data for DPO or reward modelling; it is not usable for supervised fine-tuning (ftpipe has "
                        "no preference stage)"},
        {"odd_format", FIXTURES "/llamafactory/dataset_info.json: dataset 'odd_format': \"formatting\" must be "
                       "\"alpaca\" or \"sharegpt\""},
        {"no_file", FIXTURES "/llamafactory/dataset_info.json: dataset 'no_file' has no \"file_name\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *names[] = {"alpaca_demo", cases[i].name};
        ft_dataset_source *sources = NULL;
        size_t count = 0;
        CHECK_INT(ft_dataset_info_load(FIXTURES "/llamafactory", names, 2, &sources, &count), -1);
        CHECK_STR(ft_error_message(), cases[i].message);
    }
    CHECK_INT(ft_dataset_info_load(FIXTURES, NULL, 0, NULL, NULL), -1);
    CHECK_STR(ft_error_message(), FIXTURES " has no dataset_info.json: name dataset files directly, or add one as "
                                           "LLaMA-Factory's data folder has");
    char *names;
    CHECK_INT(ft_dataset_info_names(FIXTURES "/llamafactory", &names), 0);
    CHECK_STR(names, "alpaca_demo, renamed, openai, parts, from_hub, clips, typo, preferences, odd_format, "
                     "no_file");
    free(names);
}

int main(void)
{
    RUN(reads_alpaca_json_array);
    RUN(reads_sharegpt_json_lines_both_spellings);
    RUN(joins_instruction_and_input_as_llamafactory_does);
    RUN(accepts_byte_order_mark_crlf_and_empty_array);
    RUN(reports_each_malformed_record);
    RUN(refuses_records_whose_tools_images_or_labels_would_be_lost);
    RUN(reads_images_when_asked);
    RUN(names_the_record_number_in_the_message);
    RUN(skips_and_counts_bad_records);
    RUN(keeps_only_the_first_skip_messages);
    RUN(refuses_broken_json_arrays_even_when_skipping);
    RUN(refuses_missing_and_unsupported_files);
    RUN(reads_datasets_named_in_dataset_info);
    RUN(uses_exact_tags_from_dataset_info);
    RUN(refuses_bad_dataset_info_entries);
    return check_done();
}
