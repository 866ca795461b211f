/* Tests for fetch_part: byte-range sets and the progress record that makes resuming safe. */
#include "check.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/transfer/fetch_part.h"

static char *ranges_text(const ft_range_set *set)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    for (size_t i = 0; i < set->count; i++)
        ft_strbuf_printf(&text, "%s%llu-%llu", i ? " " : "", (unsigned long long)set->items[i].start,
                         (unsigned long long)set->items[i].end);
    char *taken = ft_strbuf_take(&text);
    ft_strbuf_free(&text);
    return taken;
}

#define CHECK_RANGES(set, expected)            \
    do {                                       \
        char *check_text = ranges_text(set);   \
        CHECK_STR(check_text, expected);       \
        free(check_text);                      \
    } while (0)

TEST(range_set_merges_touching_and_overlapping)
{
    ft_range_set set = {0};
    ft_range_set_add(&set, 10, 20);
    ft_range_set_add(&set, 30, 40);
    ft_range_set_add(&set, 0, 5);
    CHECK_RANGES(&set, "0-5 10-20 30-40");
    ft_range_set_add(&set, 20, 30); /* touches both neighbours */
    CHECK_RANGES(&set, "0-5 10-40");
    ft_range_set_add(&set, 3, 12);
    CHECK_RANGES(&set, "0-40");
    ft_range_set_add(&set, 50, 50); /* empty: ignored */
    ft_range_set_add(&set, 45, 60);
    CHECK_RANGES(&set, "0-40 45-60");
    CHECK_INT(ft_range_set_bytes(&set), 55);
    ft_range_set_free(&set);
}

TEST(range_set_missing_is_the_complement)
{
    ft_range_set set = {0}, missing = {0};
    ft_range_set_missing(&set, 100, &missing);
    CHECK_RANGES(&missing, "0-100");
    ft_range_set_free(&missing);
    ft_range_set_add(&set, 0, 10);
    ft_range_set_add(&set, 40, 60);
    ft_range_set_missing(&set, 100, &missing);
    CHECK_RANGES(&missing, "10-40 60-100");
    ft_range_set_free(&missing);
    ft_range_set_add(&set, 60, 100);
    ft_range_set_missing(&set, 100, &missing);
    CHECK_RANGES(&missing, "10-40");
    ft_range_set_free(&missing);
    ft_range_set_free(&set);
}

static char *temp_dir(void)
{
    char template[] = "/tmp/ftpipe-part-XXXXXX";
    return ft_xstrdup(mkdtemp(template));
}

TEST(progress_survives_a_reopen_of_the_same_download)
{
    char *dir = temp_dir();
    char *dest = ft_path_join(dir, "model.bin");
    ft_part_file part;
    CHECK_INT(ft_part_open(&part, dest, "http://h/model.bin", 1000, "\"etag-1\"", true), 0);
    struct stat st;
    CHECK_INT(stat(part.part_path, &st), 0);
    CHECK_INT(st.st_size, 1000); /* preallocated */
    CHECK_INT(ft_part_write(&part, "abcd", 4, 100), 0);
    ft_range_set in_flight = {0};
    ft_range_set_add(&in_flight, 100, 104);
    ft_range_set_add(&part.done, 0, 10);
    CHECK_INT(ft_part_save(&part, &in_flight), 0);
    ft_range_set_free(&in_flight);
    ft_part_close(&part);

    char *text;
    char *progress_path = ft_xasprintf("%s.part.progress", dest);
    CHECK_INT(ft_read_file(progress_path, &text, NULL), 0);
    free(progress_path);
    CHECK_STR(text, "ftpipe-fetch-progress 1\nurl http://h/model.bin\nsize 1000\nvalidator \"etag-1\"\n"
                    "done 0 10\ndone 100 104\n");
    free(text);

    CHECK_INT(ft_part_open(&part, dest, "http://h/model.bin", 1000, "\"etag-1\"", true), 0);
    CHECK_RANGES(&part.done, "0-10 100-104");
    char bytes[4];
    CHECK_INT(pread(part.fd, bytes, 4, 100), 4);
    CHECK(memcmp(bytes, "abcd", 4) == 0);
    ft_part_close(&part);
    ft_remove_tree(dir);
    free(dest);
    free(dir);
}

TEST(progress_of_another_version_is_discarded)
{
    char *dir = temp_dir();
    char *dest = ft_path_join(dir, "model.bin");
    ft_part_file part;
    CHECK_INT(ft_part_open(&part, dest, "http://h/model.bin", 1000, "\"etag-1\"", true), 0);
    ft_range_set_add(&part.done, 0, 500);
    CHECK_INT(ft_part_save(&part, NULL), 0);
    ft_part_close(&part);
    /* The server now has another version (another validator): start from nothing. */
    CHECK_INT(ft_part_open(&part, dest, "http://h/model.bin", 1000, "\"etag-2\"", true), 0);
    CHECK_INT(part.done.count, 0);
    CHECK(!ft_path_exists(part.progress_path));
    ft_part_close(&part);
    /* Another size or URL: the same. */
    CHECK_INT(ft_part_open(&part, dest, "http://h/model.bin", 1000, NULL, true), 0);
    ft_range_set_add(&part.done, 0, 500);
    CHECK_INT(ft_part_save(&part, NULL), 0);
    ft_part_close(&part);
    CHECK_INT(ft_part_open(&part, dest, "http://h/model.bin", 999, NULL, true), 0);
    CHECK_INT(part.done.count, 0);
    ft_part_close(&part);
    /* A server without byte ranges cannot resume: nothing is recorded. */
    CHECK_INT(ft_part_open(&part, dest, "http://h/model.bin", 1000, NULL, false), 0);
    ft_range_set_add(&part.done, 0, 500);
    CHECK_INT(ft_part_save(&part, NULL), 0);
    CHECK(!ft_path_exists(part.progress_path));
    ft_part_close(&part);
    ft_remove_tree(dir);
    free(dest);
    free(dir);
}

TEST(publish_renames_and_discard_removes)
{
    char *dir = temp_dir();
    char *dest = ft_path_join(dir, "a.txt");
    ft_part_file part;
    CHECK_INT(ft_part_open(&part, dest, "http://h/a.txt", 3, NULL, true), 0);
    CHECK_INT(ft_part_write(&part, "xyz", 3, 0), 0);
    CHECK_INT(ft_part_save(&part, NULL), 0);
    CHECK_INT(ft_part_publish(&part, dest), 0);
    char *text;
    CHECK_INT(ft_read_file(dest, &text, NULL), 0);
    CHECK_STR(text, "xyz");
    free(text);
    CHECK(!ft_path_exists(part.part_path));
    CHECK(!ft_path_exists(part.progress_path));
    ft_part_close(&part);

    char *dest2 = ft_path_join(dir, "b.txt");
    CHECK_INT(ft_part_open(&part, dest2, "http://h/b.txt", 3, NULL, true), 0);
    ft_range_set_add(&part.done, 0, 1);
    CHECK_INT(ft_part_save(&part, NULL), 0);
    ft_part_discard(&part);
    CHECK(!ft_path_exists(part.part_path));
    CHECK(!ft_path_exists(part.progress_path));
    ft_part_close(&part);
    ft_remove_tree(dir);
    free(dest);
    free(dest2);
    free(dir);
}

int main(void)
{
    RUN(range_set_merges_touching_and_overlapping);
    RUN(range_set_missing_is_the_complement);
    RUN(progress_survives_a_reopen_of_the_same_download);
    RUN(progress_of_another_version_is_discarded);
    RUN(publish_renames_and_discard_removes);
    return check_done();
}
