/* The evaluate stage's checkers. */
#include "check.h"

#include <stdbool.h>

#include "ftpipe/base/error.h"
#include "ftpipe/eval/checker.h"

static bool judge(const char *name, const char *argument, const char *prompt, const char *answer,
                  const char *expected)
{
    ft_checker *checker = NULL;
    if (ft_checker_create(name, argument, &checker) != 0) {
        fprintf(stderr, "  create %s: %s\n", name, ft_error_message());
        return false;
    }
    bool correct = false;
    if (ft_checker_judge(checker, prompt, answer, expected, &correct) != 0)
        fprintf(stderr, "  judge %s: %s\n", name, ft_error_message());
    ft_checker_free(checker);
    return correct;
}

TEST(sum_equals_judges_the_last_sum)
{
    CHECK(judge("sum-equals", NULL, "15=", "王大丫丫的回答是--->7 + 8", NULL));
    CHECK(judge("sum-equals", NULL, "15=", "王大丫丫的回答是--->7+8\n", NULL));
    CHECK(judge("sum-equals", NULL, "0=", "-3 + 3", NULL));
    CHECK(!judge("sum-equals", NULL, "15=", "王大丫丫的回答是--->7 + 9", NULL));
    CHECK(!judge("sum-equals", NULL, "15=", "7 + 8 and more", NULL));
    CHECK(!judge("sum-equals", NULL, "15=", "15", NULL));
    CHECK(!judge("sum-equals", NULL, "what=", "7 + 8", NULL));
    CHECK(!judge("sum-equals", NULL, "15=", "", NULL));
}

TEST(exact_contains_regex)
{
    CHECK(judge("exact", NULL, "q", "  42\n", "42"));
    CHECK(!judge("exact", NULL, "q", "420", "42"));
    CHECK(judge("contains", NULL, "q", "the answer is 42.", "42"));
    CHECK(!judge("contains", NULL, "q", "the answer is 4 2", "42"));
    CHECK(judge("regex", "^\\d+$", "q", "123", NULL));
    CHECK(!judge("regex", "^\\d+$", "q", "12a", NULL));
    CHECK(judge("regex", NULL, "q", "yes, 12", "\\d{2}"));
}

TEST(shell_checker_sees_prompt_answer_expected)
{
    CHECK(judge("shell", "test \"$FTPIPE_ANSWER\" = \"$FTPIPE_EXPECTED\"", "p", "ok", "ok"));
    CHECK(!judge("shell", "test \"$FTPIPE_ANSWER\" = \"$FTPIPE_EXPECTED\"", "p", "ok", "no"));
    CHECK(judge("shell", "test \"$FTPIPE_PROMPT\" = p", "p", "", ""));
}

TEST(bad_checkers_are_refused)
{
    ft_checker *checker = NULL;
    CHECK_INT(ft_checker_create("fuzzy", NULL, &checker), -1);
    CHECK_STR(ft_error_message(), "unknown checker 'fuzzy'; checkers: exact, contains, regex, sum-equals, shell");
    CHECK_INT(ft_checker_create("regex", "(", &checker), -1);
    CHECK(strstr(ft_error_message(), "checker regex '(':") != NULL);
    CHECK_INT(ft_checker_create("shell", NULL, &checker), -1);
    CHECK_STR(ft_error_message(), "the shell checker needs a command (command = ...)");
}

int main(void)
{
    RUN(sum_equals_judges_the_last_sum);
    RUN(exact_contains_regex);
    RUN(shell_checker_sees_prompt_answer_expected);
    RUN(bad_checkers_are_refused);
    return check_done();
}
