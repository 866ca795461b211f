/* url: URLs through libcurl's URL API (curl_url), so a query, a fragment or an
 * odd character in a name is handled by the parser that also fetches them. */
#ifndef FTPIPE_URL_H
#define FTPIPE_URL_H

/* The URL of `file` (a relative path, '/'-separated) inside the folder `base`
 * names: the file's path is appended to base's path with each segment
 * percent-encoded, and base's query is kept ("https://host/dir?sig=x" and
 * "a b.bin" give "https://host/dir/a%20b.bin?sig=x"). -1 with ft_error when
 * base is not a URL. */
int ft_url_join_file(const char *base, const char *file, char **out);

/* The name of the file a URL fetches: its path's last segment, percent-decoded
 * ("https://host/d/model%201.bin?x=1" gives "model 1.bin"); NULL when the path
 * ends in '/' or the text is not a URL. */
char *ft_url_file_name(const char *url);

#endif
