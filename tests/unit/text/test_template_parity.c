/* Chat templates with LLaMA-Factory's names give LLaMA-Factory's token ids and
 * loss masks: every case of tests/fixtures/llamafactory_templates/cases.json
 * (constructed edge cases and its demo records, for qwen, qwen3, qwen3_nothink,
 * qwen2_vl, llama3, alpaca, default and empty on the committed Qwen3 and Llama 3
 * tokenizers) is encoded and compared with expected.json, which LLaMA-Factory's
 * own preprocessing made (tests/oracle/check_llamafactory_templates.py --write). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/text/sample_encoding.h"

#define FIXTURES "tests/fixtures/llamafactory_templates"
#define TOKENIZERS "tests/fixtures/tokenizer"

static char scratch[] = "/tmp/ftpipe-template-parity-XXXXXX";

/* The committed tokenizer NAME unpacked into a model folder and loaded, or NULL. */
static ft_tokenizer *load_tokenizer(const char *name)
{
    char command[512];
    snprintf(command, sizeof command,
             "mkdir -p %s/%s && zstd -qdc " TOKENIZERS "/%s/tokenizer.json.zst > %s/%s/tokenizer.json && "
             "cp " TOKENIZERS "/%s/tokenizer_config.json %s/%s/",
             scratch, name, name, scratch, name, name, scratch, name);
    if (system(command) != 0) {
        fprintf(stderr, "  could not unpack the %s tokenizer (is zstd installed?)\n", name);
        return NULL;
    }
    char *folder = ft_path_join(scratch, name);
    ft_tokenizer *tokenizer = NULL;
    if (ft_tokenizer_load(folder, &tokenizer) != 0)
        fprintf(stderr, "  %s\n", ft_error_message());
    free(folder);
    return tokenizer;
}

static ft_role role_of(const char *name)
{
    return strcmp(name, "system") == 0 ? FT_ROLE_SYSTEM : strcmp(name, "user") == 0 ? FT_ROLE_USER : FT_ROLE_ASSISTANT;
}

static bool option(const json_t *item, const char *key, bool otherwise)
{
    const json_t *value = json_object_get(item, key);
    return value ? json_is_true(value) : otherwise;
}

/* 1 when the case's encoding equals LLaMA-Factory's, else 0 (with the first difference printed). */
static int compare_case(const json_t *item, const json_t *expected, const ft_tokenizer *tokenizer)
{
    const char *name = json_string_value(json_object_get(item, "name"));
    const ft_chat_template *chat_template;
    if (ft_chat_template_find(json_string_value(json_object_get(item, "template")), &chat_template) != 0) {
        fprintf(stderr, "  %s: %s\n", name, ft_error_message());
        return 0;
    }
    const json_t *list = json_object_get(item, "messages");
    size_t count = json_array_size(list);
    ft_message *messages = ft_xcalloc(count, sizeof *messages);
    for (size_t m = 0; m < count; m++) {
        const json_t *message = json_array_get(list, m);
        messages[m].role = role_of(json_string_value(json_object_get(message, "role")));
        messages[m].content = json_string_value(json_object_get(message, "content"));
    }
    const json_t *cutoff = json_object_get(item, "cutoff_len");
    ft_encoding_options options = {.cutoff_len = cutoff ? (size_t)json_integer_value(cutoff) : 2048,
                                   .train_on_prompt = option(item, "train_on_prompt", false),
                                   .mask_history = option(item, "mask_history", false),
                                   .enable_thinking = option(item, "enable_thinking", true)};
    ft_encoded_sample sample;
    int same = 0;
    if (ft_encode_conversation(tokenizer, chat_template, messages, count, &options, &sample) != 0) {
        fprintf(stderr, "  %s: %s\n", name, ft_error_message());
        free(messages);
        return 0;
    }
    const json_t *ids = json_object_get(expected, "input_ids"), *mask = json_object_get(expected, "loss_mask");
    size_t n = json_array_size(ids), at = 0;
    while (at < n && at < sample.n_tokens &&
           (json_integer_value(json_array_get(ids, at)) == (json_int_t)sample.ids[at] &&
            json_integer_value(json_array_get(mask, at)) == (json_int_t)sample.loss_mask[at]))
        at++;
    same = at == n && at == sample.n_tokens;
    if (!same)
        fprintf(stderr, "  %s: differs at token %zu of %zu (ftpipe has %zu): ftpipe id %lld mask %d, "
                        "LLaMA-Factory id %lld mask %lld\n",
                name, at, n, sample.n_tokens, at < sample.n_tokens ? (long long)sample.ids[at] : -1LL,
                at < sample.n_tokens ? sample.loss_mask[at] : -1, (long long)json_integer_value(json_array_get(ids, at)),
                (long long)json_integer_value(json_array_get(mask, at)));
    ft_encoded_sample_free(&sample);
    free(messages);
    return same;
}

TEST(ids_and_loss_masks_equal_llamafactorys)
{
    json_error_t error;
    json_t *cases = json_load_file(FIXTURES "/cases.json", 0, &error);
    json_t *expected = json_load_file(FIXTURES "/expected.json", 0, &error);
    CHECK(cases && expected);
    CHECK(mkdtemp(scratch) != NULL);
    ft_tokenizer *qwen3 = load_tokenizer("qwen3"), *llama3 = load_tokenizer("llama3");
    CHECK(qwen3 && llama3);
    if (!cases || !expected || !qwen3 || !llama3)
        goto done;
    const json_t *list = json_object_get(cases, "cases"), *answers = json_object_get(expected, "cases");
    CHECK_INT(json_array_size(list), json_array_size(answers));
    CHECK(json_array_size(list) >= 300);
    size_t i, n_same = 0, n_multi_turn_qwen3 = 0;
    json_t *item;
    json_array_foreach(list, i, item) {
        const json_t *answer = json_array_get(answers, i);
        const char *name = json_string_value(json_object_get(item, "name"));
        if (!answer || strcmp(name, json_string_value(json_object_get(answer, "name"))) != 0) {
            fprintf(stderr, "  case %zu (%s) has no expected entry of that name\n", i, name);
            check_case_failed = 1;
            continue;
        }
        bool is_llama = strcmp(json_string_value(json_object_get(item, "tokenizer")), "llama3") == 0;
        n_same += (size_t)compare_case(item, answer, is_llama ? llama3 : qwen3);
        n_multi_turn_qwen3 += strncmp(name, "qwen3/qwen3/multi_turn", 22) == 0;
    }
    CHECK_INT(n_same, json_array_size(list));
    CHECK(n_multi_turn_qwen3 >= 1);
done:
    if (qwen3)
        ft_tokenizer_free(qwen3);
    if (llama3)
        ft_tokenizer_free(llama3);
    json_decref(cases);
    json_decref(expected);
    char command[256];
    snprintf(command, sizeof command, "rm -rf %s", scratch);
    if (system(command) != 0)
        fprintf(stderr, "  could not remove %s\n", scratch);
}

int main(void)
{
    RUN(ids_and_loss_masks_equal_llamafactorys);
    return check_done();
}
