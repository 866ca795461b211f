/* libFuzzer target for HTTP response headers as fetch reads them (ETag,
 * Last-Modified, Accept-Ranges, Content-Range): any bytes, cut into lines as
 * libcurl hands them over, are taken without fault, and a Content-Range that is
 * taken is consistent.
 *   make fuzz && build/fuzz/fuzz_http_headers -max_total_time=600 tests/fuzz/corpus/http_headers */
#include "fuzz_input.h"

#include "ftpipe/transfer/fetch_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ft_http_headers headers = {.content_range_total = -1};
    size_t start = 0;
    while (start < size) {
        const uint8_t *newline = memchr(data + start, '\n', size - start);
        size_t end = newline ? (size_t)(newline - data) + 1 : size;
        /* libcurl's buffer is not NUL-terminated: a copy of exactly the line, so reads past it are caught. */
        char *line = malloc(end - start);
        memcpy(line, data + start, end - start);
        if (ft_http_on_header(line, 1, end - start, &headers) != end - start)
            abort();
        free(line);
        start = end;
    }
    if (headers.has_content_range && headers.content_range_total >= 0 &&
        headers.content_range_start > (uint64_t)headers.content_range_total)
        abort();
    ft_http_headers_free(&headers);
    return 0;
}
