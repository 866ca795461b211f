/* units: sizes and durations as people write them in pipelines and options.
 *
 * A size is a number with an optional unit K, M, G or T, powers of 1024 ("2G",
 * "512M", "1.5G", "4096"; 2GB and 2GiB mean 2G). A duration is numbers with
 * units d, h, m, s or ms ("30m", "1h30m", "250ms"), or a bare 0. */
#ifndef FTPIPE_UNITS_H
#define FTPIPE_UNITS_H

#include <stdint.h>

/* "2G" -> 2147483648. -1 with ft_error saying what was expected. */
int ft_parse_size_bytes(const char *text, int64_t *bytes);
/* "30m" -> 1800000. -1 with ft_error saying what was expected. */
int ft_parse_duration_ms(const char *text, int64_t *ms);

#endif
