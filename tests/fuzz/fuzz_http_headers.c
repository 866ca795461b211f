/* libFuzzer target for the HTTP response header fetch parses itself, Content-Range
 * (libcurl's curl_easy_header finds the headers): any value is taken without
 * fault, and a range that is taken is consistent.
 *   make fuzz && build/fuzz/fuzz_http_headers -max_total_time=600 tests/fuzz/corpus/http_headers */
#include "fuzz_input.h"

#include "ftpipe/transfer/fetch_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value = fuzz_text(data, size);
    ft_http_headers headers = {.content_range_total = -1};
    ft_http_parse_content_range(value, &headers);
    if (headers.has_content_range && headers.content_range_total >= 0 &&
        headers.content_range_start > (uint64_t)headers.content_range_total)
        abort();
    ft_http_headers_free(&headers);
    free(value);
    return 0;
}
