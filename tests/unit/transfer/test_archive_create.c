/* A folder packed into tar.zst and tar.gz: it unpacks under one top folder,
 * the same files give the same bytes whatever their times, and a subfolder is
 * refused. */
#include <fcntl.h>
#include <sys/stat.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/transfer/archive_create.h"
#include "ftpipe/transfer/archive_extract.h"

static char root[] = "/tmp/ftpipe-archive-create.XXXXXX";

static bool file_is(const char *dir, const char *name, const char *text)
{
    char *path = ft_path_join(dir, name), *data = NULL;
    size_t bytes = 0;
    bool same = ft_read_file(path, &data, &bytes) == 0 && bytes == strlen(text) && memcmp(data, text, bytes) == 0;
    free(data);
    free(path);
    return same;
}

static bool same_bytes(const char *left, const char *right)
{
    char *a = NULL, *b = NULL;
    size_t a_bytes = 0, b_bytes = 0;
    bool same = ft_read_file(left, &a, &a_bytes) == 0 && ft_read_file(right, &b, &b_bytes) == 0 &&
                a_bytes == b_bytes && memcmp(a, b, a_bytes) == 0;
    free(a);
    free(b);
    return same;
}

static void round_trip(const char *folder, ft_archive_format format, const char *name)
{
    char *archive = ft_path_join(root, name), *unpacked = ft_xasprintf("%s/unpacked-%s", root, name);
    CHECK_INT(ft_archive_create(folder, "adapter", archive, format), 0);
    ft_extract_options options = {.max_total_bytes = 1 << 20};
    ft_extract_summary summary;
    CHECK_INT(ft_archive_extract(archive, unpacked, &options, &summary), 0);
    CHECK_INT(summary.n_files, 2);
    CHECK_INT(summary.n_dirs, 1);
    CHECK(file_is(unpacked, "adapter/adapter_config.json", "{\"r\": 8}\n"));
    CHECK(file_is(unpacked, "adapter/adapter_model.safetensors", "weights"));

    /* the same files with other times: the same bytes */
    char *again = ft_xasprintf("%s.again", archive), *file = ft_path_join(folder, "adapter_model.safetensors");
    struct timespec times[2] = {{12345, 0}, {67890, 0}};
    CHECK_INT(utimensat(AT_FDCWD, file, times, 0), 0);
    CHECK_INT(ft_archive_create(folder, "adapter", again, format), 0);
    CHECK(same_bytes(archive, again));
    free(file);
    free(again);
    free(unpacked);
    free(archive);
}

TEST(a_folder_unpacks_under_its_top_folder_and_packs_to_the_same_bytes)
{
    char *folder = ft_path_join(root, "export");
    CHECK_INT(ft_mkdir_p(folder), 0);
    fixture_write_file(folder, "adapter_model.safetensors", "weights", 0);
    fixture_write_file(folder, "adapter_config.json", "{\"r\": 8}\n", 0);
    round_trip(folder, FT_ARCHIVE_TAR_ZSTD, "adapter.tar.zst");
    round_trip(folder, FT_ARCHIVE_TAR_GZIP, "adapter.tar.gz");
    free(folder);
}

TEST(a_subfolder_is_refused_and_leaves_no_archive)
{
    char *folder = ft_path_join(root, "nested"), *inner = ft_path_join(folder, "inner");
    char *archive = ft_path_join(root, "nested.tar.zst");
    CHECK_INT(ft_mkdir_p(inner), 0);
    CHECK_INT(ft_archive_create(folder, "nested", archive, FT_ARCHIVE_TAR_ZSTD), -1);
    CHECK(strstr(ft_error_message(), "inner is not a regular file") != NULL);
    CHECK(!ft_path_exists(archive));
    free(archive);
    free(inner);
    free(folder);
}

int main(void)
{
    if (!mkdtemp(root))
        return 1;
    RUN(a_folder_unpacks_under_its_top_folder_and_packs_to_the_same_bytes);
    RUN(a_subfolder_is_refused_and_leaves_no_archive);
    ft_remove_tree(root);
    return check_done();
}
