/* svg_chart: scales, axes, polylines and a legend, written as SVG text. */
#include "ftpipe/base/svg_chart.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { WIDTH = 560, HEIGHT = 300, LEFT = 64, RIGHT = 16, TOP = 28, BOTTOM = 40 };

/* Colours that stay apart for the few runs a chart compares. */
static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

void ft_markup_escape(ft_strbuf *out, const char *text)
{
    for (const char *p = text ? text : ""; *p; p++) {
        switch (*p) {
        case '&': ft_strbuf_puts(out, "&amp;"); break;
        case '<': ft_strbuf_puts(out, "&lt;"); break;
        case '>': ft_strbuf_puts(out, "&gt;"); break;
        case '"': ft_strbuf_puts(out, "&quot;"); break;
        case '\'': ft_strbuf_puts(out, "&#39;"); break;
        default: ft_strbuf_putc(out, *p);
        }
    }
}

/* 1234567 bytes -> "1.2M"; plain numbers keep 4 significant digits. */
static void format_value(double value, const char *unit, char *out, size_t size)
{
    if (unit && strcmp(unit, "bytes") == 0) {
        static const char *const prefixes[] = {"", "K", "M", "G", "T"};
        int p = 0;
        while (fabs(value) >= 1024.0 && p < 4) {
            value /= 1024.0;
            p++;
        }
        snprintf(out, size, "%.3g%sB", value, prefixes[p]);
    } else {
        snprintf(out, size, "%.4g", value);
    }
}

void ft_svg_line_chart(ft_strbuf *out, const char *title, const char *x_label, const char *y_unit,
                       const ft_svg_series *series, size_t n_series, bool standalone)
{
    double x_min = INFINITY, x_max = -INFINITY, y_min = INFINITY, y_max = -INFINITY;
    for (size_t s = 0; s < n_series; s++)
        for (size_t i = 0; i < series[s].count; i++) {
            if (!isfinite(series[s].x[i]) || !isfinite(series[s].y[i]))
                continue;
            x_min = fmin(x_min, series[s].x[i]);
            x_max = fmax(x_max, series[s].x[i]);
            y_min = fmin(y_min, series[s].y[i]);
            y_max = fmax(y_max, series[s].y[i]);
        }
    bool empty = !isfinite(x_min);
    if (empty)
        x_min = y_min = 0.0, x_max = y_max = 1.0;
    if (x_max == x_min)
        x_max = x_min + 1.0;
    if (y_max == y_min) {
        double pad = y_max != 0.0 ? fabs(y_max) * 0.05 : 1.0;
        y_min -= pad;
        y_max += pad;
    }
    const double plot_w = WIDTH - LEFT - RIGHT, plot_h = HEIGHT - TOP - BOTTOM;
    ft_strbuf_printf(out, "<svg %sclass=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">",
                     standalone ? "xmlns=\"http://www.w3.org/2000/svg\" " : "", WIDTH, HEIGHT, WIDTH, HEIGHT);
    ft_strbuf_puts(out, "<title>");
    ft_markup_escape(out, title);
    ft_strbuf_puts(out, "</title>");
    ft_strbuf_printf(out, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>", WIDTH, HEIGHT);
    ft_strbuf_printf(out, "<text x=\"%d\" y=\"18\" font-family=\"sans-serif\" font-size=\"14\">", LEFT);
    ft_markup_escape(out, title);
    ft_strbuf_puts(out, "</text>");
    /* axes, with the ranges at their ends and a middle grid line */
    ft_strbuf_printf(out, "<path d=\"M%d %d V%d H%d\" stroke=\"#444444\" fill=\"none\"/>", LEFT, TOP, HEIGHT - BOTTOM,
                     WIDTH - RIGHT);
    ft_strbuf_printf(out, "<path d=\"M%d %.1f H%d\" stroke=\"#dddddd\"/>", LEFT, TOP + plot_h / 2, WIDTH - RIGHT);
    char text[32];
    double ticks[3] = {y_max, (y_min + y_max) / 2, y_min};
    for (int t = 0; t < 3; t++) {
        format_value(ticks[t], y_unit, text, sizeof text);
        ft_strbuf_printf(out, "<text x=\"%d\" y=\"%.1f\" font-family=\"sans-serif\" font-size=\"11\" "
                              "text-anchor=\"end\">%s</text>",
                         LEFT - 4, TOP + plot_h * t / 2 + 4, text);
    }
    format_value(x_min, "", text, sizeof text);
    ft_strbuf_printf(out, "<text x=\"%d\" y=\"%d\" font-family=\"sans-serif\" font-size=\"11\">%s</text>", LEFT,
                     HEIGHT - BOTTOM + 14, text);
    format_value(x_max, "", text, sizeof text);
    ft_strbuf_printf(out, "<text x=\"%d\" y=\"%d\" font-family=\"sans-serif\" font-size=\"11\" "
                          "text-anchor=\"end\">%s</text>",
                     WIDTH - RIGHT, HEIGHT - BOTTOM + 14, text);
    ft_strbuf_printf(out, "<text x=\"%.1f\" y=\"%d\" font-family=\"sans-serif\" font-size=\"11\" "
                          "text-anchor=\"middle\">",
                     LEFT + plot_w / 2, HEIGHT - 8);
    ft_markup_escape(out, empty ? "no data" : x_label);
    ft_strbuf_puts(out, "</text>");
    for (size_t s = 0; s < n_series; s++) {
        const char *colour = palette[s % (sizeof palette / sizeof palette[0])];
        size_t drawn = 0;
        ft_strbuf_printf(out, "<polyline class=\"series\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
                         colour);
        double last_x = 0.0, last_y = 0.0;
        for (size_t i = 0; i < series[s].count; i++) {
            if (!isfinite(series[s].x[i]) || !isfinite(series[s].y[i]))
                continue;
            last_x = LEFT + (series[s].x[i] - x_min) / (x_max - x_min) * plot_w;
            last_y = TOP + (y_max - series[s].y[i]) / (y_max - y_min) * plot_h;
            ft_strbuf_printf(out, "%s%.1f,%.1f", drawn++ ? " " : "", last_x, last_y);
        }
        ft_strbuf_puts(out, "\"/>");
        if (drawn == 1)
            ft_strbuf_printf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", last_x, last_y, colour);
        if (series[s].label) {
            double y = TOP + 12.0 + 14.0 * (double)s;
            ft_strbuf_printf(out, "<rect x=\"%d\" y=\"%.1f\" width=\"10\" height=\"3\" fill=\"%s\"/>",
                             WIDTH - RIGHT - 180, y - 4, colour);
            ft_strbuf_printf(out, "<text x=\"%d\" y=\"%.1f\" font-family=\"sans-serif\" font-size=\"11\">",
                             WIDTH - RIGHT - 166, y);
            ft_markup_escape(out, series[s].label);
            ft_strbuf_puts(out, "</text>");
        }
    }
    ft_strbuf_puts(out, "</svg>");
}
