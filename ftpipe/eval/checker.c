/* checker: exact, contains, regex, sum-equals and shell judges. */
#include "ftpipe/eval/checker.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"

typedef enum { CHECK_EXACT, CHECK_CONTAINS, CHECK_REGEX, CHECK_SUM_EQUALS, CHECK_SHELL } check_type;

struct ft_checker {
    check_type type;
    char *argument;
    pcre2_code *pattern;
};

static pcre2_code *compile(const char *pattern)
{
    int code = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code *compiled = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &offset, NULL);
    if (!compiled) {
        PCRE2_UCHAR text[256];
        pcre2_get_error_message(code, text, sizeof text);
        ft_error("checker regex '%s': %s at offset %zu", pattern, (char *)text, (size_t)offset);
    }
    return compiled;
}

int ft_checker_create(const char *name, const char *argument, ft_checker **out)
{
    static const char *const names[] = {"exact", "contains", "regex", "sum-equals", "shell"};
    ft_checker *checker = ft_xcalloc(1, sizeof *checker);
    size_t i = 0;
    while (i < 5 && strcmp(names[i], name) != 0)
        i++;
    if (i == 5) {
        free(checker);
        return ft_error("unknown checker '%s'; checkers: exact, contains, regex, sum-equals, shell", name);
    }
    checker->type = (check_type)i;
    checker->argument = argument && *argument ? ft_xstrdup(argument) : NULL;
    if (checker->type == CHECK_SHELL && !checker->argument) {
        free(checker);
        return ft_error("the shell checker needs a command (command = ...)");
    }
    if (checker->type == CHECK_REGEX && checker->argument && !(checker->pattern = compile(checker->argument))) {
        ft_checker_free(checker);
        return -1;
    }
    *out = checker;
    return 0;
}

void ft_checker_free(ft_checker *checker)
{
    if (!checker)
        return;
    pcre2_code_free(checker->pattern);
    free(checker->argument);
    free(checker);
}

/* The span of text without leading and trailing blanks. */
static void trimmed(const char *text, const char **start, size_t *length)
{
    const char *end = text + strlen(text);
    while (*text && isspace((unsigned char)*text))
        text++;
    while (end > text && isspace((unsigned char)end[-1]))
        end--;
    *start = text;
    *length = (size_t)(end - text);
}

static bool regex_matches(const pcre2_code *pattern, const char *text)
{
    pcre2_match_data *match = pcre2_match_data_create_from_pattern(pattern, NULL);
    int found = pcre2_match(pattern, (PCRE2_SPTR)text, PCRE2_ZERO_TERMINATED, 0, 0, match, NULL);
    pcre2_match_data_free(match);
    return found >= 0;
}

/* Reads a signed integer backwards ending just before `end`; returns its start or NULL. */
static const char *integer_before(const char *begin, const char *end, long long *value)
{
    const char *p = end;
    while (p > begin && isdigit((unsigned char)p[-1]))
        p--;
    if (p == end || end - p > 18)
        return NULL;
    if (p > begin && p[-1] == '-')
        p--;
    *value = strtoll(p, NULL, 10);
    return p;
}

static bool sum_equals(const char *prompt, const char *answer)
{
    char *end = NULL;
    const char *p = prompt;
    while (*p && isspace((unsigned char)*p))
        p++;
    long long target = strtoll(p, &end, 10);
    if (end == p || *end != '=')
        return false;
    const char *text;
    size_t length;
    trimmed(answer, &text, &length);
    long long b = 0, a = 0;
    const char *b_start = integer_before(text, text + length, &b);
    if (!b_start)
        return false;
    const char *q = b_start;
    while (q > text && q[-1] == ' ')
        q--;
    if (q == text || q[-1] != '+')
        return false;
    q--;
    while (q > text && q[-1] == ' ')
        q--;
    return integer_before(text, q, &a) && a + b == target;
}

static int shell_judges(const char *command, const char *prompt, const char *answer, const char *expected,
                        bool *correct)
{
    pid_t child = fork();
    if (child < 0)
        return ft_error_errno("cannot start the shell checker");
    if (child == 0) {
        setenv("FTPIPE_PROMPT", prompt, 1);
        setenv("FTPIPE_ANSWER", answer, 1);
        setenv("FTPIPE_EXPECTED", expected ? expected : "", 1);
        execl("/bin/sh", "sh", "-c", command, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    if (waitpid(child, &status, 0) < 0)
        return ft_error_errno("cannot wait for the shell checker");
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        return ft_error("the shell checker '%s' could not run (exit status 127)", command);
    *correct = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    return 0;
}

int ft_checker_judge(const ft_checker *checker, const char *prompt, const char *answer, const char *expected,
                     bool *correct)
{
    *correct = false;
    const char *a, *e;
    size_t a_length, e_length;
    switch (checker->type) {
    case CHECK_EXACT:
        trimmed(answer, &a, &a_length);
        trimmed(expected ? expected : "", &e, &e_length);
        *correct = a_length == e_length && memcmp(a, e, a_length) == 0;
        return 0;
    case CHECK_CONTAINS:
        *correct = expected && strstr(answer, expected) != NULL;
        return 0;
    case CHECK_REGEX:
        if (checker->pattern) {
            *correct = regex_matches(checker->pattern, answer);
        } else {
            pcre2_code *pattern = compile(expected ? expected : "");
            if (!pattern)
                return -1;
            *correct = regex_matches(pattern, answer);
            pcre2_code_free(pattern);
        }
        return 0;
    case CHECK_SUM_EQUALS:
        *correct = sum_equals(prompt, answer);
        return 0;
    case CHECK_SHELL:
        return shell_judges(checker->argument, prompt, answer, expected, correct);
    }
    return 0;
}
