/* Tests of svg_chart: escaping, scaling to the plot area, single points, units. */
#include "check.h"
#include "ftpipe/base/svg_chart.h"

TEST(escapes_markup)
{
    ft_strbuf out;
    ft_strbuf_init(&out);
    ft_markup_escape(&out, "a<b & \"c\" 'd'>");
    CHECK_STR(out.data, "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;");
    ft_strbuf_free(&out);
}

TEST(a_line_spans_the_plot_area)
{
    double x[] = {1, 2, 3}, y[] = {4.0, 2.0, 1.0};
    ft_svg_series series = {"run <1>", x, y, 3};
    ft_strbuf out;
    ft_strbuf_init(&out);
    ft_svg_line_chart(&out, "loss", "step", "", &series, 1, false);
    /* x from the left axis (64) to the right edge (560 - 16); y from the top (28) to the bottom (300 - 40) */
    CHECK(strstr(out.data, "points=\"64.0,28.0 304.0,182.7 544.0,260.0\"") != NULL);
    CHECK(strstr(out.data, "run &lt;1&gt;") != NULL);
    CHECK(strstr(out.data, "<title>loss</title>") != NULL);
    CHECK(strstr(out.data, "xmlns") == NULL);
    CHECK(strncmp(out.data, "<svg ", 5) == 0 && strcmp(out.data + out.length - 6, "</svg>") == 0);
    ft_strbuf_free(&out);
}

TEST(a_single_point_is_a_dot_and_bytes_are_scaled)
{
    double x[] = {5}, y[] = {3.0 * 1024 * 1024};
    ft_svg_series series = {NULL, x, y, 1};
    ft_strbuf out;
    ft_strbuf_init(&out);
    ft_svg_line_chart(&out, "memory", "step", "bytes", &series, 1, true);
    CHECK(strstr(out.data, "<circle") != NULL);
    CHECK(strstr(out.data, "3MB") != NULL);
    CHECK(strstr(out.data, "xmlns=\"http://www.w3.org/2000/svg\"") != NULL);
    ft_strbuf_free(&out);
}

TEST(no_points_say_so)
{
    ft_svg_series series = {"empty", NULL, NULL, 0};
    ft_strbuf out;
    ft_strbuf_init(&out);
    ft_svg_line_chart(&out, "loss", "step", "", &series, 1, false);
    CHECK(strstr(out.data, "no data") != NULL);
    ft_strbuf_free(&out);
}

int main(void)
{
    RUN(escapes_markup);
    RUN(a_line_spans_the_plot_area);
    RUN(a_single_point_is_a_dot_and_bytes_are_scaled);
    RUN(no_points_say_so);
    return check_done();
}
