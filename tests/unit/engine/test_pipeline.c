/* The Ftpipe language: stages, variables, comments, continuation, include, .DEFAULT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/engine/pipeline.h"

/* The test's own built-in rule files (the program's are generated from the rules
 * folder): a fragment to include, and a kind file that is not one. */
const char *const ft_builtin_rule_files[][2] = {
    {"finetune.ft", "# shared settings\nMODEL ?= Qwen/Qwen2.5-0.5B-Instruct\n"},
    {"shell.ft", ".kind shell\n.doc Runs a command.\nrun string required key The command.\n"},
    {NULL, NULL},
};

static char *temp_root;

static ft_pipeline *parse_with(const char *text, const ft_pipeline_options *options)
{
    ft_pipeline *pipeline = NULL;
    if (ft_pipeline_parse_string("Ftpipe", text, options, &pipeline) != 0)
        fprintf(stderr, "  parse failed: %s\n", ft_error_message());
    return pipeline;
}

static ft_pipeline *parse(const char *text) { return parse_with(text, NULL); }

/* The value of parameter `name` of the stage making `target` ("(none)" when absent). */
static const char *param(const ft_pipeline *pipeline, const char *target, const char *name)
{
    for (size_t i = 0; pipeline && i < pipeline->n_stages; i++) {
        if (strcmp(pipeline->stages[i].target, target) != 0)
            continue;
        for (size_t k = 0; k < pipeline->stages[i].n_params; k++)
            if (strcmp(pipeline->stages[i].params[k].name, name) == 0)
                return pipeline->stages[i].params[k].value;
    }
    return "(none)";
}

static void check_location(ft_location where, const char *file, int line, int column)
{
    CHECK_STR(where.file, file);
    CHECK_INT(where.line, line);
    CHECK_INT(where.column, column);
}

TEST(a_stage_line_gives_target_kind_inputs_and_parameters)
{
    ft_pipeline *pipeline = parse("data/clean.jsonl: shell data/raw.jsonl  extra/b.txt\n"
                                  "\trun = python3 tools/clean.py $< > $@\n"
                                  "    env   =   A B  \n"
                                  "\tlabel =\n");
    CHECK(pipeline != NULL);
    if (!pipeline)
        return;
    CHECK_INT(pipeline->n_stages, 1);
    const ft_stage_decl *stage = &pipeline->stages[0];
    CHECK_STR(stage->target, "data/clean.jsonl");
    CHECK_STR(stage->kind, "shell");
    check_location(stage->where, "Ftpipe", 1, 1);
    check_location(stage->kind_where, "Ftpipe", 1, 19);
    CHECK_INT(stage->n_inputs, 2);
    CHECK_STR(stage->inputs[0], "data/raw.jsonl");
    CHECK_STR(stage->inputs[1], "extra/b.txt");
    check_location(stage->input_where[0], "Ftpipe", 1, 25);
    check_location(stage->input_where[1], "Ftpipe", 1, 41);
    CHECK_INT(stage->n_params, 3);
    CHECK_STR(stage->params[0].name, "run");
    CHECK_STR(stage->params[0].value, "python3 tools/clean.py $< > $@");
    check_location(stage->params[0].where, "Ftpipe", 2, 2);
    check_location(stage->params[0].value_where, "Ftpipe", 2, 8);
    CHECK_STR(stage->params[1].name, "env");
    CHECK_STR(stage->params[1].value, "A B");
    check_location(stage->params[1].value_where, "Ftpipe", 3, 15);
    CHECK_STR(stage->params[2].value, "");
    check_location(stage->params[2].value_where, "Ftpipe", 4, 9);
    CHECK_INT(pipeline->n_defaults, 0);
    CHECK_STR(pipeline->path, "Ftpipe");
    CHECK(pipeline->dir[0] == '/');
    ft_pipeline_free(pipeline);
}

/* Pipelines whose stage "out" has a run parameter: what it expands to, as make would. */
TEST(run_values_expand_as_in_make)
{
    static ft_variable cli_dollar[] = {{"CLI", "a$b"}};
    static ft_variable cli_three[] = {{"MODEL", "cli/model"}, {"RATE", "a$b"}, {"SEED", "7"}};
    static const struct {
        const char *what;
        const char *text;
        ft_variable *overrides; /* from the command line */
        size_t n_overrides;
        const char *run;
    } cases[] = {
        {"the three assignments behave as in make",
         "A = one\nB = $(A)\nC := $(A)\nD ?= four\nD ?= ignored\nA = two\nE=${C}-${D}\n"
         "out: shell\n\trun = $(B) $(C) $(E)\n",
         NULL, 0, "two one one-four"},
        {"parameter values see assignments below them", "out: shell\n\trun = echo $(MESSAGE)\nMESSAGE = hello\n",
         NULL, 0, "echo hello"},
        /* Partly known where the stage is written: what is defined there is taken there,
         * the rest at the end; literal dollars from every source survive both passes. */
        {"parameters take what is defined where the stage is written",
         "A = first\nIMMEDIATE := $$lit\nRECURSIVE = $(A)-$(B)\nout: shell\n"
         "\trun = $(RECURSIVE) $(IMMEDIATE) $(CLI) $($(NAME)) $<\nA = second\nB = late\nNAME = B\n",
         cli_dollar, 1, "first-late $lit a$b late $<"},
        {"command-line values override every assignment",
         "MODEL = file/model\nRATE := 1e-4\nSEED ?= 42\nout: shell\n\trun = $(MODEL) $(RATE) $(SEED)\n",
         cli_three, 3, "cli/model a$b 7"},
        {"Windows line endings and a variable named include",
         "include = extra\r\nout: shell\r\n\trun = a \\\r\n\t  $(include)\r\n", NULL, 0, "a extra"},
        {"dollars and automatic variables",
         "A := $$x $@\nB = $$y $<\nout: shell a b\n\trun = echo $$HOME $< $^ $@ $$$$ $(A) $(B)\n",
         NULL, 0, "echo $HOME $< $^ $@ $$ $x $@ $y $<"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ft_pipeline_options options = {.overrides = cases[i].overrides, .n_overrides = cases[i].n_overrides};
        int failed_before = check_case_failed;
        check_case_failed = 0;
        ft_pipeline *pipeline = parse_with(cases[i].text, &options);
        CHECK_STR(param(pipeline, "out", "run"), cases[i].run);
        if (check_case_failed)
            fprintf(stderr, "  (in: %s)\n", cases[i].what);
        check_case_failed |= failed_before;
        ft_pipeline_free(pipeline);
    }
}

/* The sweep written as one template included six times with its variables
 * reassigned in between: each stage's parameters must be the values its name
 * was made from, never the last assignment's. */
TEST(a_template_included_six_times_gives_six_correctly_labelled_stages)
{
    fixture_write_file("sweep", "run.ft",
               "runs/lr$(LR)_r$(RANK): shell data/set\n"
               "\tlearning_rate = $(LR)\n"
               "\tlora_rank = $(RANK)\n"
               "\trun = echo $(LR) $(RANK) $(LATER) $$$$ > $@\n", 0);
    fixture_write_file("sweep", "Ftpipe",
               "LR := 1e-3\nRANK := 4\ninclude run\n"
               "RANK := 8\ninclude run\n"
               "LR := 3e-3\nRANK := 4\ninclude run\n"
               "RANK := 8\ninclude run\n"
               "LR := 1e-2\nRANK := 4\ninclude run\n"
               "RANK := 8\ninclude run\n"
               "LATER = set-below\n", 0);
    ft_pipeline *pipeline = NULL;
    CHECK_INT(ft_pipeline_load("sweep/Ftpipe", NULL, &pipeline), 0);
    CHECK_INT(pipeline ? pipeline->n_stages : 0, 6);
    static const char *const rates[] = {"1e-3", "3e-3", "1e-2"};
    static const char *const ranks[] = {"4", "8"};
    for (size_t i = 0; pipeline && i < 6 && i < pipeline->n_stages; i++) {
        char target[64], run[96];
        snprintf(target, sizeof target, "runs/lr%s_r%s", rates[i / 2], ranks[i % 2]);
        snprintf(run, sizeof run, "echo %s %s set-below $$ > $@", rates[i / 2], ranks[i % 2]);
        CHECK_STR(pipeline->stages[i].target, target);
        CHECK_STR(param(pipeline, target, "learning_rate"), rates[i / 2]);
        CHECK_STR(param(pipeline, target, "lora_rank"), ranks[i % 2]);
        CHECK_STR(param(pipeline, target, "run"), run);
    }
    ft_pipeline_free(pipeline);
}

TEST(a_matrix_stage_is_made_once_per_combination)
{
    ft_pipeline *pipeline = parse("matrix lr = 1e-3 3e-3 1e-2\n"
                                  "matrix rank = 4 8\n"
                                  "runs/lr$(lr)_r$(rank): shell data/set\n"
                                  "\trun = train $(lr) ${rank} $$(lr) > $@\n"
                                  "evals/lr$(lr): shell runs/lr$(lr)_r$(rank)\n"
                                  "\trun = evaluate $(lr) $^\n"
                                  "compare.txt: shell evals/lr$(lr) data/set evals/lr$(lr)\n"
                                  "\trun = cat $^ > $@\n");
    CHECK_INT(pipeline ? pipeline->n_stages : 0, 6 + 3 + 1);
    if (!pipeline || pipeline->n_stages != 10)
        return;
    static const char *const runs[] = {"runs/lr1e-3_r4", "runs/lr1e-3_r8", "runs/lr3e-3_r4",
                                       "runs/lr3e-3_r8", "runs/lr1e-2_r4", "runs/lr1e-2_r8"};
    for (size_t i = 0; i < 6; i++) {
        CHECK_STR(pipeline->stages[i].target, runs[i]);
        check_location(pipeline->stages[i].where, "Ftpipe", 3, 1);
    }
    CHECK_STR(param(pipeline, "runs/lr3e-3_r8", "run"), "train 3e-3 8 $(lr) > $@");
    /* A stage naming lr alone takes every rank of its lr as inputs. */
    CHECK_STR(pipeline->stages[7].target, "evals/lr3e-3");
    CHECK_INT(pipeline->stages[7].n_inputs, 2);
    if (pipeline->stages[7].n_inputs == 2) {
        CHECK_STR(pipeline->stages[7].inputs[0], "runs/lr3e-3_r4");
        CHECK_STR(pipeline->stages[7].inputs[1], "runs/lr3e-3_r8");
    }
    CHECK_STR(param(pipeline, "evals/lr3e-3", "run"), "evaluate 3e-3 $^");
    /* A stage naming no axis takes every value's input, each once. */
    const ft_stage_decl *compare = &pipeline->stages[9];
    CHECK_INT(compare->n_inputs, 4);
    if (compare->n_inputs == 4) {
        CHECK_STR(compare->inputs[0], "evals/lr1e-3");
        CHECK_STR(compare->inputs[1], "data/set");
        CHECK_STR(compare->inputs[2], "evals/lr3e-3");
        CHECK_STR(compare->inputs[3], "evals/lr1e-2");
    }
    ft_pipeline_free(pipeline);
}

static void check_parse_error(const char *text, const char *expected)
{
    ft_pipeline *pipeline = NULL;
    CHECK_INT(ft_pipeline_parse_string("Ftpipe", text, NULL, &pipeline), -1);
    CHECK(strstr(ft_error_message(), expected) != NULL);
    if (!strstr(ft_error_message(), expected))
        fprintf(stderr, "  got: %s\n", ft_error_message());
    ft_pipeline_free(pipeline);
}

TEST(matrix_mistakes_are_refused_where_they_are_written)
{
    check_parse_error("matrix lr = 1 2\nout$(lr): shell\n\trun = x\nall: shell\n\trun = $(lr)\n",
                      "Ftpipe:5:2: the parameter uses matrix variable 'lr', which the target 'all' does not name");
    check_parse_error("matrix lr = 1 2\nlr = 3\n", "Ftpipe:2:1: 'lr' is a matrix variable (declared at Ftpipe:1:1)");
    check_parse_error("lr = 3\nmatrix lr = 1 2\n", "Ftpipe:2:7: 'lr' is already a variable");
    check_parse_error("matrix lr =\n", "Ftpipe:1:1: matrix 'lr' has no values");
    check_parse_error("matrix lr = 1 2 1\n", "Ftpipe:1:17: matrix 'lr' lists '1' twice");
    check_parse_error("matrix lr\n", "Ftpipe:1:1: expected `matrix NAME = VALUE...`");
    check_parse_error("matrix 2x = 1\n", "Ftpipe:1:7: '2x' is not a matrix name");
    /* Outside the stage that binds it, a matrix variable is not defined. */
    check_parse_error("matrix lr = 1 2\nX := $(lr)\n", "Ftpipe:2:6: undefined variable 'lr'");
}

TEST(a_pattern_rule_makes_a_stage_per_matching_file_and_wildcards_list_files)
{
    fixture_write_file("pat/in", "b.txt", "b", 0);
    fixture_write_file("pat/in", "a.txt", "a", 0);
    fixture_write_file("pat/in", "skip.dat", "s", 0);
    fixture_write_file("pat/extra", "x.cfg", "x", 0);
    fixture_write_file("pat", "Ftpipe",
               "out/%.txt: shell in/%.txt extra/*.cfg\n"
               "\trun = cp $< $@\n"
               "all.txt: shell out/a.txt in/*.txt\n"
               "\trun = cat $^ > $@\n"
               "none/%: shell missing/%.x\n"
               "\trun = never\n", 0);
    ft_pipeline *pipeline = NULL;
    CHECK_INT(ft_pipeline_load("pat/Ftpipe", NULL, &pipeline), 0);
    CHECK_INT(pipeline ? pipeline->n_stages : 0, 3);
    if (!pipeline || pipeline->n_stages != 3)
        return;
    CHECK_STR(pipeline->stages[0].target, "out/a.txt");
    CHECK_STR(pipeline->stages[0].inputs[0], "in/a.txt");
    CHECK_STR(pipeline->stages[0].inputs[1], "extra/x.cfg");
    CHECK_STR(pipeline->stages[1].target, "out/b.txt");
    CHECK_STR(param(pipeline, "out/b.txt", "run"), "cp $< $@");
    CHECK_INT(pipeline->stages[2].n_inputs, 3);
    if (pipeline->stages[2].n_inputs == 3) {
        CHECK_STR(pipeline->stages[2].inputs[1], "in/a.txt");
        CHECK_STR(pipeline->stages[2].inputs[2], "in/b.txt");
    }
    ft_pipeline_free(pipeline);

    fixture_write_file("pat", "Ftpipe", "all.txt: shell in/*.csv\n", 0);
    CHECK_INT(ft_pipeline_load("pat/Ftpipe", NULL, &pipeline), -1);
    CHECK(strstr(ft_error_message(), "pat/Ftpipe:1:16: 'in/*.csv' matches no file in ") != NULL);
    fixture_write_file("pat", "Ftpipe", "out/%.txt: shell in/a.txt\n", 0);
    CHECK_INT(ft_pipeline_load("pat/Ftpipe", NULL, &pipeline), -1);
    CHECK(strstr(ft_error_message(), "pat/Ftpipe:1:1: pattern target 'out/%.txt' needs an input with '%'") != NULL);
}

TEST(a_parameter_set_is_written_once_and_used_by_many_stages)
{
    ft_pipeline *pipeline = parse("STEPS := 32\n"
                                  "params lora\n"
                                  "\tfinetuning_type = lora\n"
                                  "\tmax_steps = $(STEPS)\n"
                                  "\tcost = $$5\n"
                                  "params rate\n"
                                  "\tlearning_rate = $(lr)\n"
                                  "STEPS := 64\n"
                                  "matrix lr = 1e-3 1e-2\n"
                                  "runs/$(lr): train base data\n"
                                  "\tuse lora rate\n"
                                  "\tmax_steps = 8\n"
                                  "single: train base data\n"
                                  "\tseed = 1\n"
                                  "\tuse lora\n");
    CHECK_INT(pipeline ? pipeline->n_stages : 0, 3);
    CHECK_STR(param(pipeline, "runs/1e-2", "finetuning_type"), "lora");
    CHECK_STR(param(pipeline, "runs/1e-2", "learning_rate"), "1e-2");
    CHECK_STR(param(pipeline, "runs/1e-3", "learning_rate"), "1e-3");
    CHECK_STR(param(pipeline, "runs/1e-3", "max_steps"), "8"); /* the stage's own value wins */
    CHECK_STR(param(pipeline, "runs/1e-3", "cost"), "$5");
    CHECK_STR(param(pipeline, "single", "max_steps"), "32"); /* the value in force where the set is written */
    if (pipeline && pipeline->n_stages == 3) {
        CHECK_STR(pipeline->stages[2].params[1].name, "finetuning_type");
        CHECK_STR(pipeline->stages[2].params[1].from_set, "lora");
        CHECK(pipeline->stages[2].params[0].from_set == NULL);
        check_location(pipeline->stages[2].params[1].where, "Ftpipe", 3, 2);
        CHECK(pipeline->stages[0].params[1].from_set == NULL); /* max_steps, set in the stage */
    }
    ft_pipeline_free(pipeline);
}

TEST(parameter_set_mistakes_are_refused)
{
    check_parse_error("out: shell\n\tuse missing\n", "Ftpipe:2:6: unknown parameter set 'missing'");
    check_parse_error("params a\n\tx = 1\n\tx = 2\n", "Ftpipe:3:2: parameter 'x' is set twice in parameter set 'a'");
    check_parse_error("params a\n\tx = 1\nparams b\n\tx = 2\nout: shell\n\tuse a b\n",
                      "Ftpipe:4:2: parameter 'x' of stage 'out' is in both parameter sets 'a' (at Ftpipe:2:2) and 'b'");
    check_parse_error("params a\nparams a\n", "Ftpipe:2:8: a second parameter set 'a'");
    check_parse_error("params\n", "Ftpipe:1:1: expected `params NAME`");
    check_parse_error("params a\n\tnot a pair\n", "Ftpipe:2:2: expected `key = value` in parameter set 'a'");
    check_parse_error("params a\n\trun = $(lr)\nout: shell\n\tuse a\n", "undefined variable 'lr'");
}

TEST(a_params_yaml_or_json_include_sets_variables)
{
    fixture_write_file("dvc", "params.yaml",
               "train:\n  lr: 1e-3\n  epochs: 3\nsweep:\n  rank: [4, 8]\nruns:\n  - name: a\nfull: true\n", 0);
    fixture_write_file("dvc", "more.json", "{\"eval\": {\"max_new_tokens\": 16, \"ratio\": 0.25}, \"tags\": [\"x\", \"y\"]}", 0);
    fixture_write_file("dvc", "Ftpipe",
               "include params.yaml more.json\n"
               "matrix rank = $(sweep.rank)\n"
               "out/r$(rank): shell\n"
               "\trun = $(train.lr) ${train.epochs} $(runs.0.name) $(full) $(eval.max_new_tokens) "
               "$(eval.ratio) $(tags)\n", 0);
    ft_variable overrides[] = {{"train.epochs", "7"}};
    ft_pipeline_options options = {.overrides = overrides, .n_overrides = 1};
    ft_pipeline *pipeline = NULL;
    CHECK_INT(ft_pipeline_load("dvc/Ftpipe", &options, &pipeline), 0);
    CHECK_INT(pipeline ? pipeline->n_stages : 0, 2);
    CHECK_STR(param(pipeline, "out/r8", "run"), "1e-3 7 a true 16 0.25 x y");
    CHECK_INT(pipeline ? pipeline->n_files : 0, 3);
    ft_pipeline_free(pipeline);

    fixture_write_file("dvc", "params.yaml", "train:\n  lr: [1e-3\n", 0);
    fixture_write_file("dvc", "Ftpipe", "include params.yaml\n", 0);
    CHECK_INT(ft_pipeline_load("dvc/Ftpipe", NULL, &pipeline), -1);
    CHECK(strstr(ft_error_message(), "dvc/params.yaml:3:1: ") != NULL);
    CHECK(strstr(ft_error_message(), "(included at dvc/Ftpipe:1)") != NULL);
    fixture_write_file("dvc", "more.json", "{\"a\": }", 0);
    fixture_write_file("dvc", "Ftpipe", "include more.json\n", 0);
    CHECK_INT(ft_pipeline_load("dvc/Ftpipe", NULL, &pipeline), -1);
    CHECK(strstr(ft_error_message(), "dvc/more.json:1:") != NULL);
    fixture_write_file("dvc", "more.json", "[1, 2]", 0);
    CHECK_INT(ft_pipeline_load("dvc/Ftpipe", NULL, &pipeline), -1);
    CHECK(strstr(ft_error_message(), "dvc/Ftpipe:1:9: dvc/more.json must hold a mapping of names to values") != NULL);
    if (!strstr(ft_error_message(), "dvc/Ftpipe:1:9:"))
        fprintf(stderr, "  got: %s\n", ft_error_message());
}

TEST(targets_and_inputs_expand_when_read)
{
    ft_pipeline *pipeline = parse("DIR = data\n"
                                  "$(DIR)/set: shell $(DIR)/raw.json  ${DIR}/b\n"
                                  "\trun = x\n"
                                  "DIR = other\n");
    CHECK(pipeline != NULL);
    if (!pipeline)
        return;
    CHECK_STR(pipeline->stages[0].target, "data/set");
    CHECK_STR(pipeline->stages[0].inputs[0], "data/raw.json");
    CHECK_STR(pipeline->stages[0].inputs[1], "data/b");
    check_location(pipeline->stages[0].input_where[0], "Ftpipe", 2, 19);
    check_location(pipeline->stages[0].input_where[1], "Ftpipe", 2, 36);
    ft_pipeline_free(pipeline);
}

TEST(the_environment_fills_what_the_file_leaves_open)
{
    setenv("FTPIPE_TEST_CONDITIONAL", "from-env", 1);
    setenv("FTPIPE_TEST_ASSIGNED", "from-env", 1);
    setenv("FTPIPE_TEST_READ", "$dollar", 1);
    ft_pipeline *pipeline = parse("FTPIPE_TEST_CONDITIONAL ?= from-file\n"
                                  "FTPIPE_TEST_ASSIGNED = from-file\n"
                                  "out: shell\n"
                                  "\trun = $(FTPIPE_TEST_CONDITIONAL) $(FTPIPE_TEST_ASSIGNED) $(FTPIPE_TEST_READ)\n");
    CHECK_STR(param(pipeline, "out", "run"), "from-env from-file $dollar");
    ft_pipeline_free(pipeline);
    unsetenv("FTPIPE_TEST_CONDITIONAL");
    unsetenv("FTPIPE_TEST_ASSIGNED");
    unsetenv("FTPIPE_TEST_READ");
}

TEST(backslash_newline_continues_any_line)
{
    ft_pipeline *pipeline = parse("FLAGS = --a \\\n"
                                  "        --b\n"
                                  "out: shell in1 \\\n"
                                  "\tin2\n"
                                  "\trun = tool $(FLAGS)   \\\n"
                                  "\t      --c \\\n"
                                  "\n"
                                  "\tenv = X\n");
    CHECK(pipeline != NULL);
    if (!pipeline)
        return;
    const ft_stage_decl *stage = &pipeline->stages[0];
    CHECK_INT(stage->n_inputs, 2);
    CHECK_STR(stage->inputs[1], "in2");
    check_location(stage->input_where[1], "Ftpipe", 4, 2);
    CHECK_STR(param(pipeline, "out", "run"), "tool --a --b --c");
    CHECK_STR(param(pipeline, "out", "env"), "X");
    check_location(stage->params[1].where, "Ftpipe", 8, 2);
    ft_pipeline_free(pipeline);
}

TEST(comments_blank_lines_and_escaped_hashes)
{
    ft_pipeline *pipeline = parse("# a header comment\n"
                                  "X = 1 # trailing comment\n"
                                  "   # an indented comment before any stage\n"
                                  "out: shell  # after the stage line\n"
                                  "\t# between parameters\n"
                                  "\n"
                                  "\trun = curl http://h/x#frag \\# not a comment # but this is\n"
                                  "\n"
                                  "\tenv = [$(X)]\n");
    CHECK_STR(param(pipeline, "out", "run"), "curl http://h/x#frag # not a comment");
    CHECK_STR(param(pipeline, "out", "env"), "[1]");
    CHECK_INT(pipeline ? pipeline->n_stages : 0, 1);
    ft_pipeline_free(pipeline);
}

TEST(variable_names_may_be_computed)
{
    ft_pipeline *pipeline = parse("WHICH = train\n"
                                  "train_DIR = data/train\n"
                                  "out: shell $($(WHICH)_DIR)\n"
                                  "\trun = x\n");
    CHECK_STR(pipeline ? pipeline->stages[0].inputs[0] : "", "data/train");
    ft_pipeline_free(pipeline);
}

TEST(default_targets)
{
    ft_pipeline *pipeline = parse("OUT = export/peft\n"
                                  "report: shell\n"
                                  "\trun = x\n"
                                  ".DEFAULT: report $(OUT)\n");
    CHECK(pipeline != NULL);
    if (!pipeline)
        return;
    CHECK_INT(pipeline->n_defaults, 2);
    CHECK_STR(pipeline->defaults[0], "report");
    CHECK_STR(pipeline->defaults[1], "export/peft");
    check_location(pipeline->default_where[1], "Ftpipe", 4, 18);
    ft_pipeline_free(pipeline);
}

TEST(include_reads_the_including_files_folder_first)
{
    fixture_write_file("proj", "defs.ft", "DATA = data\nmade: shell\n\trun = y\n", 0);
    fixture_write_file("proj", "Ftpipe", "include defs\nout: shell $(DATA)/x\n\trun = x\n", 0);
    ft_pipeline *pipeline = NULL;
    CHECK_INT(ft_pipeline_load("proj/Ftpipe", NULL, &pipeline), 0);
    if (!pipeline)
        return;
    CHECK_STR(pipeline->path, "proj/Ftpipe");
    CHECK_INT(pipeline->n_files, 2);
    CHECK_STR(pipeline->files[0], "proj/Ftpipe");
    CHECK_STR(pipeline->files[1], "proj/defs.ft");
    CHECK_INT(pipeline->n_stages, 2);
    CHECK_STR(pipeline->stages[0].target, "made");
    check_location(pipeline->stages[0].where, "proj/defs.ft", 2, 1);
    CHECK_STR(pipeline->stages[1].inputs[0], "data/x");
    char *expected_dir = ft_path_absolute("proj");
    CHECK_STR(pipeline->dir, expected_dir);
    free(expected_dir);
    ft_pipeline_free(pipeline);
}

TEST(include_then_looks_in_rule_folders_then_built_ins)
{
    fixture_write_file("shared", "paths.ft", "OUT_DIR = shared-out\n", 0);
    fixture_write_file("shared", "exact", "EXACT = yes\n", 0);
    const char *dirs[] = {"shared"};
    ft_pipeline_options options = {.rule_dirs = dirs, .n_rule_dirs = 1};
    ft_pipeline *pipeline = parse_with("include paths exact\n"
                                       "include finetune\n"
                                       "out: shell\n"
                                       "\trun = $(OUT_DIR) $(EXACT) $(MODEL)\n",
                                       &options);
    CHECK_STR(param(pipeline, "out", "run"), "shared-out yes Qwen/Qwen2.5-0.5B-Instruct");
    CHECK_INT(pipeline ? pipeline->n_files : 0, 4);
    if (pipeline && pipeline->n_files == 4) {
        CHECK_STR(pipeline->files[1], "shared/paths.ft");
        CHECK_STR(pipeline->files[2], "shared/exact");
        CHECK_STR(pipeline->files[3], "<built-in>/finetune.ft");
    }
    ft_pipeline_free(pipeline);
}

TEST(a_folder_fragment_wins_over_the_built_in_of_its_name)
{
    fixture_write_file("shared", "finetune.ft", "MODEL = mine\n", 0);
    const char *dirs[] = {"shared"};
    ft_pipeline_options options = {.rule_dirs = dirs, .n_rule_dirs = 1};
    ft_pipeline *pipeline = parse_with("include finetune\nout: shell\n\trun = $(MODEL)\n", &options);
    CHECK_STR(param(pipeline, "out", "run"), "mine");
    ft_pipeline_free(pipeline);
}

TEST(a_built_in_kind_file_is_not_a_fragment)
{
    ft_pipeline *pipeline = NULL;
    CHECK_INT(ft_pipeline_parse_string("Ftpipe", "include shell\n", NULL, &pipeline), -1);
    CHECK_STR(ft_error_message(),
              "<built-in>/shell.ft:1:1: '.kind' belongs in a rules file (rules/KIND.ft), which a pipeline does not "
              "include");
    CHECK(pipeline == NULL);
}

TEST(a_missing_pipeline_file_is_reported)
{
    ft_pipeline *pipeline = NULL;
    CHECK_INT(ft_pipeline_load("nowhere/Ftpipe", NULL, &pipeline), -1);
    CHECK_STR(ft_error_message(), "cannot open nowhere/Ftpipe: No such file or directory");
    CHECK(pipeline == NULL);
}

TEST(error_at_prefixes_the_location)
{
    ft_location where = {"a/Ftpipe", 3, 7};
    CHECK_INT(ft_error_at(&where, "bad %s", "thing"), -1);
    CHECK_STR(ft_error_message(), "a/Ftpipe:3:7: bad thing");
    CHECK_INT(ft_error_at(NULL, "plain"), -1);
    CHECK_STR(ft_error_message(), "plain");
}

int main(void)
{
    char pattern[] = "/tmp/ftpipe-test-pipeline.XXXXXX";
    temp_root = mkdtemp(pattern);
    if (!temp_root || chdir(temp_root) != 0)
        return 1;
    RUN(a_stage_line_gives_target_kind_inputs_and_parameters);
    RUN(run_values_expand_as_in_make);
    RUN(a_template_included_six_times_gives_six_correctly_labelled_stages);
    RUN(a_matrix_stage_is_made_once_per_combination);
    RUN(matrix_mistakes_are_refused_where_they_are_written);
    RUN(a_pattern_rule_makes_a_stage_per_matching_file_and_wildcards_list_files);
    RUN(a_parameter_set_is_written_once_and_used_by_many_stages);
    RUN(parameter_set_mistakes_are_refused);
    RUN(a_params_yaml_or_json_include_sets_variables);
    RUN(targets_and_inputs_expand_when_read);
    RUN(the_environment_fills_what_the_file_leaves_open);
    RUN(backslash_newline_continues_any_line);
    RUN(comments_blank_lines_and_escaped_hashes);
    RUN(variable_names_may_be_computed);
    RUN(default_targets);
    RUN(include_reads_the_including_files_folder_first);
    RUN(include_then_looks_in_rule_folders_then_built_ins);
    RUN(a_folder_fragment_wins_over_the_built_in_of_its_name);
    RUN(a_built_in_kind_file_is_not_a_fragment);
    RUN(a_missing_pipeline_file_is_reported);
    RUN(error_at_prefixes_the_location);
    if (chdir("/") != 0)
        return 1;
    ft_remove_tree(temp_root);
    return check_done();
}
