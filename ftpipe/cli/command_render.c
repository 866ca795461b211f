/* command_render: `ftpipe render`, one conversation as the tokenize stage
 * encodes it, to see what a chat template makes of a record.
 *
 *   ftpipe render --tokenizer PATH --template NAME [--cutoff-len N]
 *                 [--mask-history] [--train-on-prompt] [--no-thinking]
 *
 * Standard input is a JSON list of messages ({"role": "system" | "user" |
 * "assistant", "content": TEXT}); standard output one JSON object: "text" (the
 * rendering), "ids" and "loss_mask" (1: trained on), as tokenize would write
 * them. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/cli/commands.h"
#include "ftpipe/text/sample_encoding.h"

static const char usage[] = "usage: ftpipe render --tokenizer PATH --template NAME [--cutoff-len N] "
                            "[--mask-history] [--train-on-prompt] [--no-thinking] < messages.json";

typedef struct {
    const char *tokenizer_path;
    const char *template_name;
    ft_encoding_options encoding;
} render_options;

static int parse_options(int argc, char **argv, render_options *out)
{
    enum { TOKENIZER = 1, TEMPLATE, CUTOFF_LEN, MASK_HISTORY, TRAIN_ON_PROMPT, NO_THINKING };
    static const struct option options[] = {
        {"tokenizer", required_argument, NULL, TOKENIZER},
        {"template", required_argument, NULL, TEMPLATE},
        {"cutoff-len", required_argument, NULL, CUTOFF_LEN},
        {"mask-history", no_argument, NULL, MASK_HISTORY},
        {"train-on-prompt", no_argument, NULL, TRAIN_ON_PROMPT},
        {"no-thinking", no_argument, NULL, NO_THINKING},
        {NULL, 0, NULL, 0},
    };
    *out = (render_options){.encoding = {.cutoff_len = 2048, .enable_thinking = true}};
    /* argv[0] stands for the command's name, as getopt expects */
    optind = 1;
    opterr = 0;
    int option;
    while ((option = getopt_long(argc + 1, argv - 1, "", options, NULL)) != -1) {
        char *end;
        long long value;
        switch (option) {
        case TOKENIZER: out->tokenizer_path = optarg; break;
        case TEMPLATE: out->template_name = optarg; break;
        case CUTOFF_LEN:
            value = strtoll(optarg, &end, 10);
            if (*end || value < 1 || value > (1LL << 30))
                return ft_error("render: --cutoff-len needs a token count from 1 to 1073741824, not '%s'", optarg);
            out->encoding.cutoff_len = (size_t)value;
            break;
        case MASK_HISTORY: out->encoding.mask_history = true; break;
        case TRAIN_ON_PROMPT: out->encoding.train_on_prompt = true; break;
        case NO_THINKING: out->encoding.enable_thinking = false; break;
        default: return ft_error("render: unknown or incomplete argument '%s'; %s", argv[optind - 2], usage);
        }
    }
    if (optind - 1 < argc)
        return ft_error("render: unexpected argument '%s'; %s", argv[optind - 1], usage);
    if (!out->tokenizer_path || !out->template_name)
        return ft_error("render: --tokenizer and --template are required; %s", usage);
    return 0;
}

/* The messages of the JSON list on standard input; they point into root. */
static int read_messages(json_t **root, ft_message **messages, size_t *count)
{
    json_error_t error;
    *root = json_loadf(stdin, 0, &error);
    if (!*root)
        return ft_error("render: standard input, line %d: %s (expected a JSON list of messages)", error.line,
                        error.text);
    if (!json_is_array(*root))
        return ft_error("render: standard input must be a JSON list of {\"role\": ..., \"content\": ...} messages");
    *count = json_array_size(*root);
    *messages = ft_xcalloc(*count ? *count : 1, sizeof **messages);
    for (size_t i = 0; i < *count; i++) {
        const json_t *item = json_array_get(*root, i);
        const char *role = json_string_value(json_object_get(item, "role"));
        const char *content = json_string_value(json_object_get(item, "content"));
        if (!role || !content)
            return ft_error("render: message %zu needs a string \"role\" and a string \"content\"", i + 1);
        if (strcmp(role, "system") == 0)
            (*messages)[i].role = FT_ROLE_SYSTEM;
        else if (strcmp(role, "user") == 0)
            (*messages)[i].role = FT_ROLE_USER;
        else if (strcmp(role, "assistant") == 0)
            (*messages)[i].role = FT_ROLE_ASSISTANT;
        else
            return ft_error("render: message %zu has role '%s'; expected system, user or assistant", i + 1, role);
        (*messages)[i].content = content;
    }
    return 0;
}

static int print_sample(const ft_tokenizer *tokenizer, const ft_encoded_sample *sample)
{
    char *text = NULL;
    if (ft_tokenizer_decode(tokenizer, sample->ids, sample->n_tokens, &text) != 0)
        return -1;
    json_t *ids = json_array(), *mask = json_array();
    for (size_t i = 0; i < sample->n_tokens; i++) {
        json_array_append_new(ids, json_integer(sample->ids[i]));
        json_array_append_new(mask, json_integer(sample->loss_mask[i]));
    }
    json_t *out = json_pack("{s:s, s:o, s:o}", "text", text, "ids", ids, "loss_mask", mask);
    free(text);
    int status = json_dumpf(out, stdout, JSON_COMPACT | JSON_ENSURE_ASCII) == 0 && fputc('\n', stdout) != EOF &&
                         fflush(stdout) == 0
                     ? 0
                     : ft_error_errno("render: writing standard output");
    json_decref(out);
    return status;
}

int ft_command_render(int argc, char **argv)
{
    render_options options;
    const ft_chat_template *chat_template;
    if (parse_options(argc, argv, &options) != 0 || ft_chat_template_find(options.template_name, &chat_template) != 0)
        return -1;
    ft_tokenizer *tokenizer;
    if (ft_tokenizer_load(options.tokenizer_path, &tokenizer) != 0)
        return -1;
    json_t *root = NULL;
    ft_message *messages = NULL;
    size_t count = 0;
    int status = ft_chat_template_check_tokenizer(chat_template, tokenizer);
    if (status == 0)
        status = read_messages(&root, &messages, &count);
    ft_encoded_sample sample;
    if (status == 0 &&
        (status = ft_encode_conversation(tokenizer, chat_template, messages, count, &options.encoding, &sample)) == 0) {
        status = print_sample(tokenizer, &sample);
        ft_encoded_sample_free(&sample);
    }
    free(messages);
    json_decref(root);
    ft_tokenizer_free(tokenizer);
    return status;
}
