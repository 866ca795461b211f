/* terminal_text: escapes control bytes and invalid UTF-8 for printing. */
#include "ftpipe/base/terminal_text.h"

#include <stdbool.h>
#include <string.h>
#include <utf8proc.h>

#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

char *ft_terminal_text(const char *text)
{
    size_t printable = 0; /* most names are printable ASCII: copied whole */
    while ((unsigned char)text[printable] >= 0x20 && (unsigned char)text[printable] < 0x7f)
        printable++;
    if (!text[printable])
        return ft_xstrndup(text, printable);
    ft_strbuf out;
    ft_strbuf_init(&out);
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)text;
    utf8proc_ssize_t left = (utf8proc_ssize_t)strlen(text);
    while (left > 0) {
        utf8proc_int32_t code_point;
        utf8proc_ssize_t length = utf8proc_iterate(p, left, &code_point);
        bool control = length == 1 && ((code_point < 0x20 && code_point != '\n' && code_point != '\t') ||
                                       code_point == 0x7f);
        /* C1 controls (U+0080..U+009F) act on terminals too. */
        bool c1_control = length == 2 && code_point >= 0x80 && code_point <= 0x9f;
        if (length < 1 || control || c1_control) {
            utf8proc_ssize_t n = length < 1 ? 1 : length;
            for (utf8proc_ssize_t i = 0; i < n; i++)
                ft_strbuf_printf(&out, "\\x%02x", p[i]);
            p += n;
            left -= n;
        } else {
            ft_strbuf_add(&out, p, (size_t)length);
            p += length;
            left -= length;
        }
    }
    return ft_strbuf_take(&out);
}
