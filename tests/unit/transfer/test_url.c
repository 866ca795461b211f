/* Tests of url: joining a folder URL and a file name keeps the query and
 * percent-encodes the name; a URL's file name is its decoded last segment. */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/transfer/url.h"

static const char *joined(const char *base, const char *file)
{
    static char result[512];
    char *url = NULL;
    if (ft_url_join_file(base, file, &url) != 0) {
        snprintf(result, sizeof result, "error: %s", ft_error_message());
        return result;
    }
    snprintf(result, sizeof result, "%s", url);
    free(url);
    return result;
}

TEST(joins_a_folder_and_a_file)
{
    CHECK_STR(joined("https://host/dir", "a.bin"), "https://host/dir/a.bin");
    CHECK_STR(joined("https://host/dir/", "a.bin"), "https://host/dir/a.bin");
    CHECK_STR(joined("https://host", "a.bin"), "https://host/a.bin");
    CHECK_STR(joined("http://127.0.0.1:8080/files", "sub/b.txt"), "http://127.0.0.1:8080/files/sub/b.txt");
    CHECK_STR(joined("file:///srv/models", "config.json"), "file:///srv/models/config.json");
}

TEST(keeps_the_query_of_a_signed_url)
{
    CHECK_STR(joined("https://host/dir?sig=abc&exp=1", "a.bin"), "https://host/dir/a.bin?sig=abc&exp=1");
    CHECK_STR(joined("https://host/dir/?sig=abc#part", "a.bin"), "https://host/dir/a.bin?sig=abc");
}

TEST(percent_encodes_the_file_name_not_the_base)
{
    CHECK_STR(joined("https://host/my%20dir", "a b#1+%.bin"), "https://host/my%20dir/a%20b%231%2b%25.bin");
    CHECK_STR(joined("https://host/d", "caf\xc3\xa9/x.bin"), "https://host/d/caf%c3%a9/x.bin");
}

TEST(refuses_what_is_not_a_url)
{
    CHECK_STR(joined("not a url", "a.bin"), "error: not a url is not a URL");
}

TEST(names_the_file_a_url_fetches)
{
    char *name = ft_url_file_name("https://host/d/model%201.bin?x=1#y");
    CHECK_STR(name, "model 1.bin");
    free(name);
    name = ft_url_file_name("file:///srv/a.txt");
    CHECK_STR(name, "a.txt");
    free(name);
    CHECK(ft_url_file_name("https://host/d/") == NULL);
    CHECK(ft_url_file_name("https://host") == NULL);
    CHECK(ft_url_file_name("nonsense") == NULL);
}

int main(void)
{
    RUN(joins_a_folder_and_a_file);
    RUN(keeps_the_query_of_a_signed_url);
    RUN(percent_encodes_the_file_name_not_the_base);
    RUN(refuses_what_is_not_a_url);
    RUN(names_the_file_a_url_fetches);
    return check_done();
}
