/* svg_chart: line charts as inline SVG text, for `ftpipe report` and the loss
 * picture a train stage writes (plot_loss). Self-contained: no fonts, scripts or
 * links to load, so a file holding them opens anywhere without a network. */
#ifndef FTPIPE_SVG_CHART_H
#define FTPIPE_SVG_CHART_H

#include <stdbool.h>
#include <stddef.h>

#include "ftpipe/base/strbuf.h"

typedef struct {
    const char *label;     /* in the legend; NULL: no legend entry */
    const double *x;
    const double *y;
    size_t count;
} ft_svg_series;

/* Appends one <svg> element: the title, axes labelled with their ranges (y in
 * y_unit, e.g. "" or "bytes", shown as K/M/G), a polyline per series (a single
 * point as a dot) and a legend when a series has a label. `standalone` adds the
 * XML namespace a separate .svg file needs. */
void ft_svg_line_chart(ft_strbuf *out, const char *title, const char *x_label, const char *y_unit,
                       const ft_svg_series *series, size_t n_series, bool standalone);

/* Appends text with &, <, >, " and ' escaped, for HTML and SVG. */
void ft_markup_escape(ft_strbuf *out, const char *text);

#endif
