/* Malformed pipelines, one table row each, with the exact message a user sees:
 * the parser's errors and the parameter checks against the rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/pipeline.h"
#include "ftpipe/engine/rules.h"

/* The test's own built-in rules, so that the kinds listed in messages stay fixed
 * as the program's rules folder grows. */
const char *const ft_builtin_rule_files[][2] = {FIXTURE_COMMON_AND_SHELL_RULES, {NULL, NULL}};

static const char train_rules[] = ".kind train\n"
                                  ".doc  Fine-tunes a model (test rules).\n"
                                  "finetuning_type  choice(lora,full)  lora      key    LoRA or every weight.\n"
                                  "lora_rank        int                8         key    Rank of the LoRA matrices.\n"
                                  "learning_rate    float              1e-4      key    Peak learning rate.\n"
                                  "max_time         duration           0         nokey  Stop after this long.\n"
                                  "bf16             bool               true      key    Compute in bfloat16.\n"
                                  "dataset          path               required  key    The tokenized data set.\n"
                                  ".lacks eval_steps  no evaluation during training; add an evaluate stage.\n";

typedef struct {
    const char *name;
    const char *text;     /* the pipeline, read as ./Ftpipe */
    const char *expected; /* the whole message; {DIR} stands for the test's folder */
} malformed_case;

static const malformed_case cases[] = {
    /* statements */
    {"parameter_line_before_any_stage", "\trun = x\n",
     "Ftpipe:1:2: indented line outside a stage: parameter lines go under a `target: kind inputs...` line "
     "(unindent it to set a variable)"},
    {"parameter_line_after_an_assignment", "out: shell\n\trun = x\nX = 1\n\tenv = A\n",
     "Ftpipe:4:2: indented line outside a stage: parameter lines go under a `target: kind inputs...` line "
     "(unindent it to set a variable)"},
    {"line_that_is_no_statement", "X = 1\njust some words\n",
     "Ftpipe:2:1: expected `NAME = value`, `target: kind inputs...` or `include NAME`"},
    {"rules_directive_in_a_pipeline", ".kind shell\n",
     "Ftpipe:1:1: '.kind' belongs in a rules file (rules/KIND.ft), which a pipeline does not include"},
    {"plus_equals", "X = a\nX += b\n", "Ftpipe:2:3: '+=' is not supported: write `NAME := $(NAME) more words`"},
    {"variable_name_with_a_blank", "MY VAR = 1\n",
     "Ftpipe:1:1: 'MY VAR' is not a variable name: use letters, digits and '_', not starting with a digit"},
    {"missing_variable_name", "= 1\n", "Ftpipe:1:1: missing variable name before '='"},
    {"missing_variable_name_before_colon_equals", "out: shell\n\trun = x\n:= 1\n",
     "Ftpipe:3:1: missing variable name before ':='"},
    /* stage lines */
    {"missing_kind", "out:\n",
     "Ftpipe:1:4: missing stage kind after 'out:': write `out: KIND inputs...` (`ftpipe help` lists the kinds)"},
    {"kind_expanding_to_nothing", "K =\nout: $(K)\n",
     "Ftpipe:2:4: missing stage kind after 'out:': write `out: KIND inputs...` (`ftpipe help` lists the kinds)"},
    {"empty_target", ": shell\n", "Ftpipe:1:1: missing target before ':': a stage line is `TARGET: KIND inputs...`"},
    {"target_expanding_to_nothing", "NOTHING =\n$(NOTHING): shell\n",
     "Ftpipe:2:11: missing target before ':': a stage line is `TARGET: KIND inputs...`"},
    {"two_targets", "a b: shell\n",
     "Ftpipe:1:3: 'a b' is 2 targets: a stage makes one target; write one stage for each"},
    {"duplicate_target", "out: shell\n\trun = x\n\nout: shell\n\trun = y\n",
     "Ftpipe:4:1: duplicate target 'out': the stage at Ftpipe:1:1 already makes it"},
    {"unknown_special_target", ".PHONY: all\n",
     "Ftpipe:1:1: unknown special target '.PHONY': the special targets are .DEFAULT and .REMOTE"},
    {"remote_with_two_urls", ".REMOTE: file:///a file:///b\n",
     "Ftpipe:1:8: '.REMOTE:' takes one URL (http(s)://, file:// or s3://)"},
    {"second_default_line", ".DEFAULT: a\nX = 1\n.DEFAULT: b\n",
     "Ftpipe:3:1: a second .DEFAULT line (the first is at Ftpipe:1:1): list every default target on one line"},
    {"default_without_targets", ".DEFAULT:   # nothing\n",
     "Ftpipe:1:9: '.DEFAULT:' names no target: list the targets `ftpipe` builds when given none"},
    /* parameter lines */
    {"repeated_parameter", "out: shell\n\trun = x\n\t# again:\n\trun = y\n",
     "Ftpipe:4:2: parameter 'run' is set twice in stage 'out' (first at Ftpipe:2:2)"},
    {"parameter_without_equals", "out: shell\n\trun echo hi\n",
     "Ftpipe:2:2: expected `key = value` in stage 'out': 'run echo hi' has no '='"},
    {"parameter_with_a_colon", "out: shell\n    run: echo hi\n",
     "Ftpipe:2:5: expected `key = value` in stage 'out': 'run: echo hi' has no '='"},
    {"empty_parameter_name", "out: shell\n\t= echo\n", "Ftpipe:2:2: missing parameter name before '='"},
    {"parameter_name_with_a_blank", "out: shell\n\tlora rank = 8\n",
     "Ftpipe:2:2: 'lora rank' is not a parameter name: use letters, digits and '_'"},
    /* variables */
    {"unterminated_parenthesis", "out: shell\n\trun = echo $(MESSAGE\n",
     "Ftpipe:2:13: unterminated '$(': add ')' after the variable name"},
    {"unterminated_brace_in_a_definition", "X = ${Y\nout: shell $(X)\n",
     "Ftpipe:1:5: unterminated '${': add '}' after the variable name"},
    {"undefined_variable_with_a_suggestion", "out: shell\n\trun = $(MODLE)\nMODEL = m\n",
     "Ftpipe:2:8: undefined variable 'MODLE' (did you mean 'MODEL'?): set it in the file (MODLE = ...), on the "
     "command line (ftpipe MODLE=...) or in the environment"},
    {"undefined_variable_in_an_input", "out: shell a $(ZQ_UNSET_DATA)\n",
     "Ftpipe:1:14: undefined variable 'ZQ_UNSET_DATA': set it in the file (ZQ_UNSET_DATA = ...), on the command "
     "line (ftpipe ZQ_UNSET_DATA=...) or in the environment"},
    {"undefined_variable_inside_a_definition", "ZQ_A = x $(ZQ_UNSET_B)\nout: shell $(ZQ_A)\n",
     "Ftpipe:1:10: undefined variable 'ZQ_UNSET_B': set it in the file (ZQ_UNSET_B = ...), on the command line "
     "(ftpipe ZQ_UNSET_B=...) or in the environment"},
    {"undefined_variable_after_a_continuation", "out: shell \\\n   $(ZQ_UNSET_C)\n",
     "Ftpipe:2:4: undefined variable 'ZQ_UNSET_C': set it in the file (ZQ_UNSET_C = ...), on the command line "
     "(ftpipe ZQ_UNSET_C=...) or in the environment"},
    {"variables_that_refer_to_each_other", "A = $(B)\nB = x $(A)\nout: shell $(A)\n",
     "Ftpipe:2:7: variable 'A' refers to itself: A -> B -> A"},
    {"variable_that_refers_to_itself", "PATHS = $(PATHS) more\nout: shell\n\trun = $(PATHS)\n",
     "Ftpipe:1:9: variable 'PATHS' refers to itself: PATHS -> PATHS"},
    {"dollar_before_a_letter", "out: shell\n\trun = echo $HOME\n",
     "Ftpipe:2:13: unexpected '$H': write $(H) for a variable or $$ for a literal $"},
    {"lone_dollar", "out: shell\n\trun = costs 5$\n",
     "Ftpipe:2:15: a lone '$': write $$ for a literal $, or $(NAME) for a variable"},
    {"make_function", "FILES = $(wildcard *.json)\nout: shell $(FILES)\n",
     "Ftpipe:1:9: '$(wildcard *.json)' is not a variable reference: ftpipe has no make functions; write $(NAME)"},
    {"empty_reference", "out: shell $()\n", "Ftpipe:1:12: '$()' names no variable: write $(NAME)"},
    /* include */
    {"include_not_found", "include nothere\n",
     "Ftpipe:1:9: cannot find 'nothere' to include: looked for nothere and nothere.ft in {DIR}, rules, and among "
     "the built-in rule files"},
    {"include_without_a_name", "include\n", "Ftpipe:1:1: include needs a file name: write `include NAME`"},
    {"include_cycle", "include cycle_a\n", "cycle_b.ft:2:9: include cycle: cycle_a.ft -> cycle_b.ft -> cycle_a.ft"},
    {"include_of_itself", "include Ftpipe\n", "Ftpipe:1:9: include cycle: Ftpipe -> Ftpipe"},
    {"error_inside_an_included_file", "include broken\n",
     "broken.ft:2:2: indented line outside a stage: parameter lines go under a `target: kind inputs...` line "
     "(unindent it to set a variable)"},
    {"included_kind_file", "include train\n",
     "rules/train.ft:1:1: '.kind' belongs in a rules file (rules/KIND.ft), which a pipeline does not include"},
    /* kinds and parameters */
    {"unknown_kind_with_a_suggestion", "out: shel\n\trun = x\n",
     "Ftpipe:1:6: unknown stage kind 'shel' (did you mean 'shell'?); kinds: shell, train"},
    {"unknown_kind", "out: compile src\n", "Ftpipe:1:6: unknown stage kind 'compile'; kinds: shell, train"},
    {"unknown_parameter_with_a_suggestion", "adapter: train data\n\tdataset = d\n\tlora_rnak = 8\n",
     "Ftpipe:3:2: unknown parameter 'lora_rnak' for kind train (did you mean 'lora_rank'?)"},
    {"unknown_common_parameter_with_a_suggestion", "out: shell\n\trun = x\n\tgpu = 1\n",
     "Ftpipe:3:2: unknown parameter 'gpu' for kind shell (did you mean 'gpus'?)"},
    {"parameter_the_kind_lacks", "adapter: train data\n\tdataset = d\n\teval_steps = 8\n",
     "Ftpipe:3:2: kind train has no parameter 'eval_steps': no evaluation during training; add an evaluate stage."},
    {"parameter_of_another_kind", "adapter: train data\n\tdataset = d\n\trun = x\n",
     "Ftpipe:3:2: unknown parameter 'run' for kind train: it is a parameter of kind shell (`ftpipe help shell`)"},
    {"unknown_parameter", "out: shell\n\trun = x\n\tcolour = red\n",
     "Ftpipe:3:2: unknown parameter 'colour' for kind shell: `ftpipe help shell` lists its parameters"},
    {"missing_required_parameter", "ok: shell\n\trun = x\nout: shell\n\tenv = A\n",
     "Ftpipe:3:1: stage 'out' (shell) needs parameter 'run': add an indented line `run = ...` under it"},
    {"bad_size", "out: shell\n\trun = x\n\tmemory = 2X\n",
     "Ftpipe:3:11: memory: '2X' is not a size: expected a number with an optional unit K, M, G or T, like 2G"},
    {"bad_integer", "out: shell\n\trun = x\n\tgpus = two\n",
     "Ftpipe:3:9: gpus: 'two' is not an integer: expected a whole number, like 8"},
    {"empty_integer", "out: shell\n\trun = x\n\tgpus =\n",
     "Ftpipe:3:8: gpus: missing value: expected a whole number, like 8"},
    {"bad_float", "a: train\n\tdataset = d\n\tlearning_rate = fast\n",
     "Ftpipe:3:18: learning_rate: 'fast' is not a number: expected a decimal number, like 0.0001 or 1e-4"},
    {"bad_float_from_a_variable", "RATE = 1e-4x\na: train\n\tdataset = d\n\tlearning_rate = $(RATE)\n",
     "Ftpipe:4:18: learning_rate: '1e-4x' is not a number: expected a decimal number, like 0.0001 or 1e-4"},
    {"duration_without_a_unit", "a: train\n\tdataset = d\n\tmax_time = 30\n",
     "Ftpipe:3:13: max_time: '30' is not a duration: expected numbers with units d, h, m, s or ms, like 30m or "
     "1h30m"},
    {"bad_bool", "a: train\n\tdataset = d\n\tbf16 = maybe\n",
     "Ftpipe:3:9: bf16: 'maybe' is not a bool: expected true or false (or yes/no, on/off, 1/0)"},
    {"bad_choice", "a: train\n\tdataset = d\n\tfinetuning_type = ful\n",
     "Ftpipe:3:20: finetuning_type: 'ful' is not a valid choice: expected one of lora, full (did you mean 'full'?)"},
    {"empty_choice", "a: train\n\tdataset = d\n\tfinetuning_type =\n",
     "Ftpipe:3:19: finetuning_type: missing value: expected one of lora, full"},
    {"empty_path", "a: train\n\tdataset =   \n", "Ftpipe:2:11: dataset: missing value: expected a file or folder path"},
};

static char *folder; /* the test's working folder, absolute */

static char *expand_expected(const char *expected)
{
    ft_strbuf out;
    ft_strbuf_init(&out);
    for (const char *p = expected; *p; p++) {
        if (strncmp(p, "{DIR}", 5) == 0) {
            ft_strbuf_puts(&out, folder);
            p += 4;
        } else {
            ft_strbuf_putc(&out, *p);
        }
    }
    return ft_strbuf_take(&out);
}

/* Parses the row's pipeline and checks every stage; returns -1 with ft_error at the first problem. */
static int load_and_check(const malformed_case *row, const ft_rulebook *book)
{
    const char *dirs[] = {"rules"};
    ft_pipeline_options options = {.rule_dirs = dirs, .n_rule_dirs = 1};
    ft_pipeline *pipeline = NULL;
    ft_error_clear();
    int result = ft_pipeline_parse_string("Ftpipe", row->text, &options, &pipeline);
    for (size_t i = 0; result == 0 && i < pipeline->n_stages; i++) {
        ft_param_set set;
        result = ft_params_check(book, &pipeline->stages[i], &set);
        if (result == 0)
            ft_params_free(&set);
    }
    ft_pipeline_free(pipeline);
    return result;
}

int main(void)
{
    char pattern[] = "/tmp/ftpipe-test-malformed.XXXXXX";
    if (!mkdtemp(pattern) || chdir(pattern) != 0)
        return 1;
    folder = ft_path_absolute(".");
    fixture_write_file("rules", "train.ft", train_rules, 0);
    fixture_write_file(".", "cycle_a.ft", "include cycle_b\n", 0);
    fixture_write_file(".", "cycle_b.ft", "X = 1\ninclude cycle_a\n", 0);
    fixture_write_file(".", "Ftpipe", "include Ftpipe\n", 0);
    fixture_write_file(".", "broken.ft", "# an indented line with nothing above it\n\tx = 1\n", 0);
    const char *dirs[] = {"rules"};
    ft_rulebook *book = NULL;
    if (ft_rulebook_load(dirs, 1, &book) != 0) {
        fprintf(stderr, "loading the test rules: %s\n", ft_error_message());
        return 1;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case_failed = 0;
        CHECK_INT(load_and_check(&cases[i], book), -1);
        char *expected = expand_expected(cases[i].expected);
        CHECK_STR(ft_error_message(), expected);
        free(expected);
        printf("%s %s\n", check_case_failed ? "not ok" : "ok", cases[i].name);
        check_failed_cases += check_case_failed;
    }
    ft_rulebook_free(book);
    if (chdir("/") != 0)
        return 1;
    ft_remove_tree(pattern);
    free(folder);
    return check_done();
}
