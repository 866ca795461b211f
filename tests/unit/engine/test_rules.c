/* Parameter values by type, the rulebook, parameter checks and `ftpipe help`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/pipeline.h"
#include "ftpipe/engine/rules.h"

/* The test's own built-in rules: defining the table here keeps the program's
 * (generated from the rules folder, which grows) out of this binary, so that lists of
 * kinds in messages stay fixed. */
const char *const ft_builtin_rule_files[][2] = {FIXTURE_COMMON_AND_SHELL_RULES, {NULL, NULL}};

static const char train_rules[] =
    ".kind train\n"
    ".doc  Fine-tunes a model (test rules).\n"
    "# name           type               default          key    doc\n"
    "finetuning_type  choice(lora,full)  lora             key    LoRA adapters or every weight.\n"
    "lora_rank        int                8                key    Rank of the LoRA matrices.\n"
    "learning_rate    float              1e-4             key    Peak learning rate.\n"
    "max_time         duration           0                nokey  Stop after this long (0: never).\n"
    "save_limit       size               2G               nokey  Disk the checkpoints may use.\n"
    "bf16             bool               true             key    Compute in bfloat16.\n"
    "lora_target      list               \"q_proj v_proj\"  key    Modules that get adapters.\n"
    "dataset          path               required         key    The tokenized data set.\n"
    "run_name         string             \"\"               nokey  A label for reports.\n";

static char *temp_root;

/* A fresh folder under the test's temporary root, made the working folder. */
static void enter_new_folder(const char *name)
{
    char *dir = ft_path_join(temp_root, name);
    ft_mkdir_p(dir);
    if (chdir(dir) != 0)
        fprintf(stderr, "  cannot enter %s\n", dir);
    free(dir);
}

static ft_rulebook *load_test_rules(void)
{
    enter_new_folder("book");
    fixture_write_file("rules", "train.ft", train_rules, 0);
    const char *dirs[] = {"rules"};
    ft_rulebook *book = NULL;
    if (ft_rulebook_load(dirs, 1, &book) != 0)
        fprintf(stderr, "  loading rules: %s\n", ft_error_message());
    return book;
}

static ft_param_rule rule_of(ft_param_type type)
{
    ft_param_rule rule = {.name = "x", .type = type};
    return rule;
}

/* Parses text as `type` and returns its canonical form (a static copy) or the error. */
static const char *canonical(ft_param_type type, const char *text)
{
    static char result[512];
    ft_param_rule rule = rule_of(type);
    ft_param_value value;
    if (ft_value_parse(&rule, text, &value) != 0) {
        snprintf(result, sizeof result, "error: %s", ft_error_message());
        return result;
    }
    snprintf(result, sizeof result, "%s", value.canonical);
    ft_value_free(&value);
    return result;
}

/* Sizes and durations enter keys as bytes and milliseconds (base/units parses them). */
TEST(sizes_and_durations_enter_keys_in_bytes_and_ms)
{
    CHECK_STR(canonical(FT_TYPE_SIZE, "1.5G"), "1610612736");
    CHECK_STR(canonical(FT_TYPE_SIZE, "2X"),
              "error: '2X' is not a size: expected a number with an optional unit K, M, G or T, like 2G");
    CHECK_STR(canonical(FT_TYPE_SIZE, ""),
              "error: missing value: expected a number with an optional unit K, M, G or T, like 2G");
    CHECK_STR(canonical(FT_TYPE_DURATION, "1h30m"), "5400000");
}

TEST(bools_accept_the_usual_words)
{
    CHECK_STR(canonical(FT_TYPE_BOOL, "true"), "true");
    CHECK_STR(canonical(FT_TYPE_BOOL, "yes"), "true");
    CHECK_STR(canonical(FT_TYPE_BOOL, "On"), "true");
    CHECK_STR(canonical(FT_TYPE_BOOL, "1"), "true");
    CHECK_STR(canonical(FT_TYPE_BOOL, "FALSE"), "false");
    CHECK_STR(canonical(FT_TYPE_BOOL, "no"), "false");
    CHECK_STR(canonical(FT_TYPE_BOOL, "off"), "false");
    CHECK_STR(canonical(FT_TYPE_BOOL, "0"), "false");
    CHECK_STR(canonical(FT_TYPE_BOOL, "maybe"),
              "error: 'maybe' is not a bool: expected true or false (or yes/no, on/off, 1/0)");
}

TEST(floats_agree_on_one_canonical_text)
{
    CHECK_STR(canonical(FT_TYPE_FLOAT, "1e-4"), "0.0001");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "0.0001"), "0.0001");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "1.0E-4"), "0.0001");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "2e-5"), "0.00002");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "1e-7"), "1e-7");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "2.5e-8"), "2.5e-8");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "100"), "100");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "1e2"), "100");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "3.0"), "3");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "0.1"), "0.1");
    CHECK_STR(canonical(FT_TYPE_FLOAT, ".5"), "0.5");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "-0"), "0");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "-2.50"), "-2.5");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "1e21"), "1e21");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "123456.789"), "123456.789");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "0.3333333333333333"), "0.3333333333333333");
    ft_param_rule rule = rule_of(FT_TYPE_FLOAT);
    ft_param_value value;
    CHECK_INT(ft_value_parse(&rule, "5e-5", &value), 0);
    CHECK(value.real == 5e-5);
    ft_value_free(&value);
}

TEST(bad_floats_and_ints_are_refused)
{
    CHECK_STR(canonical(FT_TYPE_FLOAT, "fast"),
              "error: 'fast' is not a number: expected a decimal number, like 0.0001 or 1e-4");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "0x10"),
              "error: '0x10' is not a number: expected a decimal number, like 0.0001 or 1e-4");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "inf"),
              "error: 'inf' is not a number: expected a decimal number, like 0.0001 or 1e-4");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "1e"),
              "error: '1e' is not a number: expected a decimal number, like 0.0001 or 1e-4");
    CHECK_STR(canonical(FT_TYPE_FLOAT, "1e999"), "error: '1e999' is too large for a number");
    CHECK_STR(canonical(FT_TYPE_INT, "8"), "8");
    CHECK_STR(canonical(FT_TYPE_INT, "-3"), "-3");
    CHECK_STR(canonical(FT_TYPE_INT, "+5"), "5");
    CHECK_STR(canonical(FT_TYPE_INT, "8.5"), "error: '8.5' is not an integer: expected a whole number, like 8");
    CHECK_STR(canonical(FT_TYPE_INT, "-"), "error: '-' is not an integer: expected a whole number, like 8");
    CHECK_STR(canonical(FT_TYPE_INT, "99999999999999999999"),
              "error: '99999999999999999999' is too large for an integer");
    CHECK_STR(canonical(FT_TYPE_INT, ""), "error: missing value: expected a whole number, like 8");
}

TEST(lists_split_on_blanks)
{
    ft_param_rule rule = rule_of(FT_TYPE_LIST);
    ft_param_value value;
    CHECK_INT(ft_value_parse(&rule, "  q_proj  k_proj\tv_proj ", &value), 0);
    CHECK_INT(value.n_items, 3);
    if (value.n_items == 3) {
        CHECK_STR(value.items[0], "q_proj");
        CHECK_STR(value.items[1], "k_proj");
        CHECK_STR(value.items[2], "v_proj");
    }
    CHECK_STR(value.canonical, "q_proj k_proj v_proj");
    ft_value_free(&value);
    CHECK_INT(ft_value_parse(&rule, "", &value), 0);
    CHECK_INT(value.n_items, 0);
    CHECK_STR(value.canonical, "");
    ft_value_free(&value);
}

TEST(choices_strings_and_paths)
{
    char *choices[] = {"peft", "merged"};
    ft_param_rule rule = {.name = "format", .type = FT_TYPE_CHOICE, .choices = choices, .n_choices = 2};
    ft_param_value value;
    CHECK_INT(ft_value_parse(&rule, "merged", &value), 0);
    CHECK_STR(value.canonical, "merged");
    ft_value_free(&value);
    CHECK_INT(ft_value_parse(&rule, "mergd", &value), -1);
    CHECK_STR(ft_error_message(),
              "'mergd' is not a valid choice: expected one of peft, merged (did you mean 'merged'?)");
    CHECK_INT(ft_value_parse(&rule, "gguf", &value), -1);
    CHECK_STR(ft_error_message(), "'gguf' is not a valid choice: expected one of peft, merged");
    CHECK_INT(ft_value_parse(&rule, "", &value), -1);
    CHECK_STR(ft_error_message(), "missing value: expected one of peft, merged");
    CHECK_STR(canonical(FT_TYPE_STRING, ""), "");
    CHECK_STR(canonical(FT_TYPE_STRING, "a  b"), "a  b");
    CHECK_STR(canonical(FT_TYPE_PATH, "data/x.json"), "data/x.json");
    CHECK_STR(canonical(FT_TYPE_PATH, ""), "error: missing value: expected a file or folder path");
}

TEST(edit_distance_and_suggestions)
{
    CHECK_INT(ft_edit_distance("kitten", "sitting"), 3);
    CHECK_INT(ft_edit_distance("", "abc"), 3);
    CHECK_INT(ft_edit_distance("abc", ""), 3);
    CHECK_INT(ft_edit_distance("same", "same"), 0);
    CHECK_INT(ft_edit_distance("lora_rnak", "lora_rank"), 2);
    CHECK_INT(ft_edit_distance("shel", "shell"), 1);
    const char *names[] = {"lora_rank", "lora_alpha", "learning_rate"};
    CHECK_STR(ft_closest_name("lora_rnak", names, 3), "lora_rank");
    CHECK_STR(ft_closest_name("learnin_rate", names, 3), "learning_rate");
    CHECK(ft_closest_name("batch_size", names, 3) == NULL);
    CHECK(ft_closest_name("x", names, 3) == NULL);
}

TEST(folder_rules_join_the_built_in_ones)
{
    ft_rulebook *book = load_test_rules();
    CHECK(book != NULL);
    if (!book)
        return;
    CHECK_INT(book->n_kinds, 2);
    CHECK_STR(book->kinds[0].kind, "shell");
    CHECK_STR(book->kinds[0].file, "<built-in>/shell.ft");
    CHECK_STR(book->kinds[1].kind, "train");
    CHECK_STR(book->kinds[1].file, "rules/train.ft");
    const ft_kind_rules *train = ft_rulebook_find(book, "train");
    CHECK_INT(train->n_own_params, 9);
    CHECK_INT(train->n_params, 11);
    CHECK_STR(train->params[9].name, "gpus");
    CHECK_STR(train->params[0].name, "finetuning_type");
    CHECK_INT(train->params[0].n_choices, 2);
    CHECK_STR(train->params[6].default_text, "q_proj v_proj");
    CHECK(train->params[7].required);
    CHECK(!train->params[3].in_key);
    CHECK(ft_rulebook_find(book, "nothing") == NULL);
    ft_rulebook_free(book);
}

TEST(a_folder_file_replaces_the_built_in_of_its_name)
{
    enter_new_folder("replace");
    fixture_write_file("rules", "shell.ft", ".kind shell\n.doc Replaced.\nrun string required key The command.\n", 0);
    fixture_write_file("rules", "vars.ft", "# a fragment for include: not rules\nX = 1\n", 0);
    const char *dirs[] = {"rules"};
    ft_rulebook *book = NULL;
    CHECK_INT(ft_rulebook_load(dirs, 1, &book), 0);
    const ft_kind_rules *shell = book ? ft_rulebook_find(book, "shell") : NULL;
    CHECK(shell != NULL);
    if (shell) {
        CHECK_STR(shell->doc, "Replaced.");
        CHECK_STR(shell->file, "rules/shell.ft");
        CHECK_INT(shell->n_own_params, 1);
    }
    CHECK_INT(book ? book->n_kinds : 0, 1);
    ft_rulebook_free(book);
}

/* A one-stage pipeline `out: KIND` with the given parameter lines. */
static int check_stage(ft_rulebook *book, const char *kind, const char *param_lines, ft_param_set *set)
{
    char *text = ft_xasprintf("out: %s\n%s", kind, param_lines);
    ft_pipeline *pipeline = NULL;
    int result = ft_pipeline_parse_string("Ftpipe", text, NULL, &pipeline);
    if (result == 0)
        result = ft_params_check(book, &pipeline->stages[0], set);
    ft_pipeline_free(pipeline);
    free(text);
    return result;
}

TEST(defaults_are_filled_and_written_values_typed)
{
    ft_rulebook *book = load_test_rules();
    if (!book)
        return;
    ft_param_set set;
    CHECK_INT(check_stage(book, "train", "\tdataset = data/train\n\tlearning_rate = 5e-5\n\tbf16 = no\n", &set), 0);
    CHECK_INT(set.n_values, 11);
    const ft_param_value *rate = ft_params_get(&set, "learning_rate");
    CHECK(rate->is_set);
    CHECK_STR(rate->text, "5e-5");
    CHECK_STR(rate->canonical, "0.00005");
    CHECK_INT(rate->where.line, 3);
    CHECK_INT(rate->where.column, 18);
    const ft_param_value *rank = ft_params_get(&set, "lora_rank");
    CHECK(!rank->is_set);
    CHECK_INT(rank->integer, 8);
    CHECK(rank->where.file == NULL);
    CHECK_INT(ft_params_get(&set, "save_limit")->integer, 2147483648LL);
    CHECK_INT(ft_params_get(&set, "bf16")->integer, 0);
    CHECK_STR(ft_params_get(&set, "finetuning_type")->canonical, "lora");
    CHECK_INT(ft_params_get(&set, "lora_target")->n_items, 2);
    CHECK_STR(ft_params_get(&set, "run_name")->canonical, "");
    CHECK_INT(ft_params_get(&set, "gpus")->integer, 0);
    CHECK(ft_params_get(&set, "nothing") == NULL);
    ft_params_free(&set);
    ft_rulebook_free(book);
}

TEST(parameter_errors_name_the_value)
{
    ft_rulebook *book = load_test_rules();
    if (!book)
        return;
    ft_param_set set;
    CHECK_INT(check_stage(book, "train", "\tdataset = d\n\tlora_rnak = 4\n", &set), -1);
    CHECK_STR(ft_error_message(),
              "Ftpipe:3:2: unknown parameter 'lora_rnak' for kind train (did you mean 'lora_rank'?)");
    CHECK(set.values == NULL);
    CHECK_INT(check_stage(book, "train", "\tlora_rank = 4\n", &set), -1);
    CHECK_STR(ft_error_message(), "Ftpipe:1:1: stage 'out' (train) needs parameter 'dataset': add an indented line "
                                  "`dataset = ...` under it");
    CHECK_INT(check_stage(book, "train", "\tdataset = d\n\tsave_limit =   2X\n", &set), -1);
    CHECK_STR(ft_error_message(), "Ftpipe:3:17: save_limit: '2X' is not a size: expected a number with an optional "
                                  "unit K, M, G or T, like 2G");
    CHECK_INT(check_stage(book, "train", "\tdataset = d\n\tfinetuning_type = qlora\n", &set), -1);
    CHECK_STR(ft_error_message(),
              "Ftpipe:3:20: finetuning_type: 'qlora' is not a valid choice: expected one of lora, full "
              "(did you mean 'lora'?)");
    CHECK_INT(check_stage(book, "shel", "", &set), -1);
    CHECK_STR(ft_error_message(), "Ftpipe:1:6: unknown stage kind 'shel' (did you mean 'shell'?); kinds: shell, train");
    ft_rulebook_free(book);
}

static char *help_text(const ft_rulebook *book, const char *kind, int *result)
{
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    *result = ft_rules_print_help(book, kind, out);
    fclose(out);
    return text;
}

TEST(help_lists_a_kinds_parameters_in_columns)
{
    ft_rulebook *book = load_test_rules();
    if (!book)
        return;
    int result;
    char *text = help_text(book, "train", &result);
    CHECK_INT(result, 0);
    CHECK_STR(text,
              "train: Fine-tunes a model (test rules).\n"
              "(declared in rules/train.ft)\n"
              "\n"
              "  parameter        type               default          in key  doc\n"
              "  finetuning_type  choice(lora,full)  lora             yes     LoRA adapters or every weight.\n"
              "  lora_rank        int                8                yes     Rank of the LoRA matrices.\n"
              "  learning_rate    float              1e-4             yes     Peak learning rate.\n"
              "  max_time         duration           0                no      Stop after this long (0: never).\n"
              "  save_limit       size               2G               no      Disk the checkpoints may use.\n"
              "  bf16             bool               true             yes     Compute in bfloat16.\n"
              "  lora_target      list               \"q_proj v_proj\"  yes     Modules that get adapters.\n"
              "  dataset          path               required         yes     The tokenized data set.\n"
              "  run_name         string             \"\"               no      A label for reports.\n"
              "\n"
              "Common parameters, accepted by every kind:\n"
              "  gpus             int                0                no      GPUs the stage holds while it runs.\n"
              "  memory           size               0                no      Host memory the stage needs.\n");
    free(text);
    text = help_text(book, NULL, &result);
    CHECK_INT(result, 0);
    CHECK_STR(text, "Stage kinds (`ftpipe help KIND` lists a kind's parameters):\n"
                    "  shell  Runs a command, make-style.\n"
                    "  train  Fine-tunes a model (test rules).\n");
    free(text);
    text = help_text(book, "trian", &result);
    CHECK_INT(result, -1);
    CHECK_STR(ft_error_message(), "unknown stage kind 'trian' (did you mean 'train'?); kinds: shell, train");
    free(text);
    ft_rulebook_free(book);
}

/* Loads a rules folder holding one file and returns the error ("" when it loads). */
static const char *rules_file_error(const char *text)
{
    static char message[1024];
    static int folder;
    char name[32];
    snprintf(name, sizeof name, "bad%d", ++folder);
    enter_new_folder(name);
    fixture_write_file("rules", "k.ft", text, 0);
    const char *dirs[] = {"rules"};
    ft_rulebook *book = NULL;
    ft_error_clear();
    int result = ft_rulebook_load(dirs, 1, &book);
    snprintf(message, sizeof message, "%s", result == 0 ? "" : ft_error_message());
    ft_rulebook_free(book);
    return message;
}

TEST(malformed_rules_files_are_located)
{
    CHECK_STR(rules_file_error(".kind k\n.doc K.\nn sise 0 key Doc.\n"),
              "rules/k.ft:3:3: unknown type 'sise': expected string, int, float, size, duration, bool, list, path or "
              "choice(a,b,...)");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\nn size 2X key Doc.\n"),
              "rules/k.ft:3:8: default of 'n': '2X' is not a size: expected a number with an optional unit K, M, G "
              "or T, like 2G");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\nn int 0 key\n"),
              "rules/k.ft:3:12: parameter 'n' has no doc: end the line with a sentence saying what it does");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\nn int 0 yes Doc.\n"),
              "rules/k.ft:3:9: expected key or nokey (whether the value enters the stage's key), got 'yes'");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\nn int 0 key Doc.\nn int 1 key Doc.\n"),
              "rules/k.ft:4:1: parameter 'n' is declared twice");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\nf choice(a, b key Doc.\n"),
              "rules/k.ft:3:3: unterminated 'choice(': close the list with ')'");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\nf choice(a,a) a key Doc.\n"),
              "rules/k.ft:3:12: choice 'a' is listed twice");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\nf choice(a, b) c key Doc.\n"),
              "rules/k.ft:3:16: default of 'f': 'c' is not a valid choice: expected one of a, b");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\ns string \"open key Doc.\n"),
              "rules/k.ft:3:10: unterminated quoted default: end it with '\"'");
    CHECK_STR(rules_file_error(".kind k\nn int 0 key Doc.\n"),
              "rules/k.ft: kind k has no '.doc' line: add `.doc` and a sentence saying what it does");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\n.kind j\n"),
              "rules/k.ft:3:1: '.kind' after the file's first directive: one rules file declares one kind");
    CHECK_STR(rules_file_error(".kind k\n.version 2\n"),
              "rules/k.ft:2:1: unexpected '.version': rules files know .kind NAME, .doc TEXT, .lacks NAME TEXT and "
              ".common");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\n.lacks eval_steps\n"),
              "rules/k.ft:3:8: expected a parameter name and what to do instead after '.lacks'");
    CHECK_STR(rules_file_error(".kind\n"), "rules/k.ft:1:6: expected one kind name after '.kind', like `.kind train`");
    CHECK_STR(rules_file_error(".kind shell\n.doc Again.\n"),
              "kind 'shell' is declared twice, in rules/k.ft and in <built-in>/shell.ft: keep one");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\ngpus int 1 nokey Doc.\n"),
              "rules/k.ft: parameter 'gpus' is also a common parameter (declared in <built-in>/common.ft): rename or "
              "remove it");
    CHECK_STR(rules_file_error(".common\nmemory size 0 nokey Doc.\n"),
              "common parameter 'memory' is declared in both rules/k.ft and <built-in>/common.ft: remove one");
    CHECK_STR(rules_file_error("# just variables\nA = 1\n"), "");
    CHECK_STR(rules_file_error("# only a comment\n\n"), "");
    CHECK_STR(rules_file_error(".kind k\n.doc K.\ns string \"say \\\"hi\\\"\" key Doc.\n"), "");
}

TEST(a_missing_rules_folder_is_an_error)
{
    enter_new_folder("missing");
    const char *dirs[] = {"nowhere"};
    ft_rulebook *book = NULL;
    CHECK_INT(ft_rulebook_load(dirs, 1, &book), -1);
    CHECK_STR(ft_error_message(), "cannot read rules folder nowhere: No such file or directory");
    CHECK(book == NULL);
}

int main(void)
{
    char pattern[] = "/tmp/ftpipe-test-rules.XXXXXX";
    temp_root = mkdtemp(pattern);
    if (!temp_root)
        return 1;
    RUN(sizes_and_durations_enter_keys_in_bytes_and_ms);
    RUN(bools_accept_the_usual_words);
    RUN(floats_agree_on_one_canonical_text);
    RUN(bad_floats_and_ints_are_refused);
    RUN(lists_split_on_blanks);
    RUN(choices_strings_and_paths);
    RUN(edit_distance_and_suggestions);
    RUN(folder_rules_join_the_built_in_ones);
    RUN(a_folder_file_replaces_the_built_in_of_its_name);
    RUN(defaults_are_filled_and_written_values_typed);
    RUN(parameter_errors_name_the_value);
    RUN(help_lists_a_kinds_parameters_in_columns);
    RUN(malformed_rules_files_are_located);
    RUN(a_missing_rules_folder_is_an_error);
    if (chdir("/") != 0)
        return 1;
    ft_remove_tree(temp_root);
    return check_done();
}
