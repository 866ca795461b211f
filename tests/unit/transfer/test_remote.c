/* Tests of remote: URL forms, credentials kept out of what is shown, and the
 * file:// transport (whole blobs by rename, absent vs unreachable). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/transfer/remote.h"

static char *temporary_dir;

TEST(urls_are_shown_without_credentials)
{
    ft_remote *remote = NULL;
    CHECK_INT(ft_remote_open("https://alice:s3cret@cache.example.com:8443/team/ftpipe/", &remote), 0);
    if (remote) {
        CHECK_STR(ft_remote_url(remote), "https://cache.example.com:8443/team/ftpipe");
        CHECK(!strstr(ft_remote_url(remote), "s3cret"));
        ft_remote_close(remote);
    }
    CHECK_INT(ft_remote_open("file:///srv/cache//", &remote), 0);
    if (remote) {
        CHECK_STR(ft_remote_url(remote), "file:///srv/cache");
        ft_remote_close(remote);
    }
}

TEST(bad_urls_are_refused_with_the_forms_to_use)
{
    ft_remote *remote = NULL;
    CHECK_INT(ft_remote_open("ftp://host/x", &remote), -1);
    CHECK(strstr(ft_error_message(), "http(s)://HOST/PREFIX, file:///PATH or s3://BUCKET/PREFIX") != NULL);
    CHECK_INT(ft_remote_open("file://relative/path", &remote), -1);
    CHECK(strstr(ft_error_message(), "absolute path") != NULL);
    unsetenv("AWS_ACCESS_KEY_ID");
    CHECK_INT(ft_remote_open("s3://bucket/prefix", &remote), -1);
    CHECK(strstr(ft_error_message(), "AWS_ACCESS_KEY_ID") != NULL);
    CHECK_INT(ft_remote_open("s3:///prefix", &remote), -1);
    CHECK(strstr(ft_error_message(), "name the bucket") != NULL);
}

TEST(s3_urls_keep_the_secret_out_of_the_shown_url)
{
    setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "very-secret", 1);
    setenv("FTPIPE_S3_ENDPOINT", "http://127.0.0.1:9000", 1);
    ft_remote *remote = NULL;
    CHECK_INT(ft_remote_open("s3://bucket/a/b/", &remote), 0);
    if (remote) {
        CHECK_STR(ft_remote_url(remote), "s3://bucket/a/b");
        ft_remote_close(remote);
    }
    unsetenv("FTPIPE_S3_ENDPOINT");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_ACCESS_KEY_ID");
}

TEST(file_remote_stores_and_reads_blobs)
{
    char *root = ft_path_join(temporary_dir, "remote");
    CHECK_INT(ft_mkdir_p(root), 0);
    char *url = ft_xasprintf("file://%s", root);
    ft_remote *remote = NULL;
    CHECK_INT(ft_remote_open(url, &remote), 0);
    CHECK_INT(ft_remote_has(remote, "cas/abc"), 0);
    CHECK_INT(ft_remote_put_text(remote, "cas/abc", "hello", 5), 0);
    CHECK_INT(ft_remote_has(remote, "cas/abc"), 1);
    char *text = NULL;
    size_t length = 0;
    CHECK_INT(ft_remote_get_text(remote, "cas/abc", &text, &length), 1);
    CHECK_INT(length, 5);
    CHECK_STR(text, "hello");
    free(text);
    CHECK_INT(ft_remote_get_text(remote, "ac/missing", &text, &length), 0);

    /* A file goes up whole and replaces what was there; no temporary stays. */
    char *source = ft_path_join(temporary_dir, "source.bin");
    CHECK_INT(ft_write_file_atomic(source, "0123456789", 10), 0);
    CHECK_INT(ft_remote_put_file(remote, "cas/abc", source), 0);
    char *copy = ft_path_join(temporary_dir, "copy.bin");
    CHECK_INT(ft_remote_get_file(remote, "cas/abc", copy, NULL), 1);
    char *data = NULL;
    CHECK_INT(ft_read_file(copy, &data, &length), 0);
    CHECK_STR(data, "0123456789");
    free(data);
    char *listing = ft_xasprintf("ls -A %s/cas | wc -l", root);
    FILE *pipe = popen(listing, "r");
    int count = -1;
    if (pipe) {
        CHECK_INT(fscanf(pipe, "%d", &count), 1);
        pclose(pipe);
    }
    CHECK_INT(count, 1);
    free(listing);
    ft_remote_close(remote);
    free(source);
    free(copy);
    free(url);
    free(root);
}

TEST(a_missing_folder_is_unavailable_not_empty)
{
    char *url = ft_xasprintf("file://%s/not-mounted", temporary_dir);
    ft_remote *remote = NULL;
    CHECK_INT(ft_remote_open(url, &remote), 0);
    CHECK_INT(ft_remote_has(remote, "ac/x"), FT_REMOTE_UNAVAILABLE);
    CHECK(strstr(ft_error_message(), "not mounted?") != NULL);
    CHECK_INT(ft_remote_put_text(remote, "ac/x", "x", 1), FT_REMOTE_UNAVAILABLE);
    ft_remote_close(remote);
    free(url);
}

TEST(an_unreachable_server_is_unavailable)
{
    /* Port 1 on loopback: nothing listens there, the connection is refused at once. */
    ft_remote *remote = NULL;
    CHECK_INT(ft_remote_open("http://127.0.0.1:1/cache", &remote), 0);
    CHECK_INT(ft_remote_has(remote, "ac/x"), FT_REMOTE_UNAVAILABLE);
    CHECK(strstr(ft_error_message(), "remote http://127.0.0.1:1/cache: HEAD ac/x failed") != NULL);
    ft_remote_close(remote);
}

int main(void)
{
    char pattern[] = "/tmp/ftpipe-test-remote.XXXXXX";
    temporary_dir = mkdtemp(pattern);
    RUN(urls_are_shown_without_credentials);
    RUN(bad_urls_are_refused_with_the_forms_to_use);
    RUN(s3_urls_keep_the_secret_out_of_the_shown_url);
    RUN(file_remote_stores_and_reads_blobs);
    RUN(a_missing_folder_is_unavailable_not_empty);
    RUN(an_unreachable_server_is_unavailable);
    ft_remove_tree(temporary_dir);
    return check_done();
}
