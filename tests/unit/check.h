/* check: the unit-test harness. Each TEST is a case; main runs them in order and
 * prints "ok NAME" or "not ok NAME" per case, which tests/run.sh counts; a case
 * that cannot run here calls SKIP(why) and prints "ok NAME # SKIP why", which
 * tests/run.sh counts as a skip, never as a pass.
 *
 *     TEST(parses_sizes) { CHECK_INT(ft_parse_size_bytes("2G", &n), 0); }
 *     int main(void) { RUN(parses_sizes); return check_done(); }
 */
#ifndef FTPIPE_TEST_CHECK_H
#define FTPIPE_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_case_failed;
static int check_failed_cases;
/* why this case could not run here; NULL: it ran (unused in files with their own main loop) */
static const char *check_case_skipped __attribute__((unused));

#define TEST(name) static void name(void)

#define CHECK(condition)                                                                    \
    do {                                                                                    \
        if (!(condition)) {                                                                 \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #condition); \
            check_case_failed = 1;                                                          \
        }                                                                                   \
    } while (0)

#define CHECK_INT(actual, expected)                                                          \
    do {                                                                                     \
        long long check_a = (long long)(actual), check_e = (long long)(expected);            \
        if (check_a != check_e) {                                                            \
            fprintf(stderr, "  %s:%d: %s is %lld, expected %lld\n", __FILE__, __LINE__,      \
                    #actual, check_a, check_e);                                              \
            check_case_failed = 1;                                                           \
        }                                                                                    \
    } while (0)

#define CHECK_STR(actual, expected)                                                          \
    do {                                                                                     \
        const char *check_a = (actual), *check_e = (expected);                               \
        if (!check_a || !check_e || strcmp(check_a, check_e) != 0) {                         \
            fprintf(stderr, "  %s:%d: %s is\n    \"%s\"\n  expected\n    \"%s\"\n", __FILE__,\
                    __LINE__, #actual, check_a ? check_a : "(null)",                         \
                    check_e ? check_e : "(null)");                                           \
            check_case_failed = 1;                                                           \
        }                                                                                    \
    } while (0)

/* Ends the case as not run here, saying why (a string that outlives the case). */
#define SKIP(why)                  \
    do {                           \
        check_case_skipped = (why); \
        return;                    \
    } while (0)

#define RUN(name)                                                        \
    do {                                                                 \
        check_case_failed = 0;                                           \
        check_case_skipped = NULL;                                       \
        name();                                                          \
        if (check_case_skipped && !check_case_failed)                    \
            printf("ok %s # SKIP %s\n", #name, check_case_skipped);      \
        else                                                             \
            printf("%s %s\n", check_case_failed ? "not ok" : "ok", #name); \
        fflush(stdout);                                                  \
        check_failed_cases += check_case_failed;                         \
    } while (0)

static inline int check_done(void) { return check_failed_cases ? 1 : 0; }

#endif
