/* The rule files compiled into the program load, and they and the stage kinds
 * compiled into it agree one to one. */
#include "check.h"

#include "ftpipe/base/error.h"
#include "ftpipe/engine/rules.h"
#include "ftpipe/engine/stage.h"
#include "ftpipe/stages/registry.h"

TEST(builtin_rules_load)
{
    ft_rulebook *book = NULL;
    CHECK_INT(ft_rulebook_load(NULL, 0, &book), 0);
    if (!book) {
        fprintf(stderr, "  %s\n", ft_error_message());
        return;
    }
    CHECK(book->n_kinds > 0);
    ft_rulebook_free(book);
}

TEST(every_kind_has_rules_and_every_rule_file_a_kind)
{
    ft_rulebook *book = NULL;
    if (ft_rulebook_load(NULL, 0, &book) != 0)
        return;
    size_t n_builtin = 0;
    for (size_t i = 0; ft_builtin_kinds[i]; i++, n_builtin++) {
        if (!ft_rulebook_find(book, ft_builtin_kinds[i]->name)) {
            fprintf(stderr, "  kind %s has no rules/%s.ft\n", ft_builtin_kinds[i]->name, ft_builtin_kinds[i]->name);
            CHECK(0);
        }
    }
    for (size_t i = 0; i < book->n_kinds; i++) {
        if (!ft_stage_kind_lookup(ft_builtin_kinds, book->kinds[i].kind)) {
            fprintf(stderr, "  rules for %s but no stages/%s.c\n", book->kinds[i].kind, book->kinds[i].kind);
            CHECK(0);
        }
    }
    CHECK_INT(book->n_kinds, n_builtin);
    ft_rulebook_free(book);
}

TEST(help_prints_for_every_kind)
{
    ft_rulebook *book = NULL;
    if (ft_rulebook_load(NULL, 0, &book) != 0)
        return;
    FILE *sink = fopen("/dev/null", "w");
    CHECK_INT(ft_rules_print_help(book, NULL, sink), 0);
    for (size_t i = 0; i < book->n_kinds; i++)
        CHECK_INT(ft_rules_print_help(book, book->kinds[i].kind, sink), 0);
    fclose(sink);
    ft_rulebook_free(book);
}

int main(void)
{
    RUN(builtin_rules_load);
    RUN(every_kind_has_rules_and_every_rule_file_a_kind);
    RUN(help_prints_for_every_kind);
    return check_done();
}
