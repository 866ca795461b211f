/* report: state.db's runs and metrics, and the plan, as one HTML page. */
#include "ftpipe/engine/report.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/svg_chart.h"
#include "ftpipe/engine/plan.h"

typedef struct {
    int64_t step;
    char *name;
    double value;
} metric_point;

typedef struct {
    ft_run_record record;
    metric_point *points;
    size_t n_points, capacity;
} run_data;

typedef struct {
    ft_state *state;
    run_data *runs;      /* oldest first once read */
    size_t n_runs, capacity;
} history;

static char *dup_or_null(const char *text) { return text ? ft_xstrdup(text) : NULL; }

static int add_point(int64_t step, const char *name, double value, void *context)
{
    run_data *run = context;
    ft_grow((void **)&run->points, &run->capacity, run->n_points + 1, sizeof *run->points);
    run->points[run->n_points++] = (metric_point){step, ft_xstrdup(name ? name : ""), value};
    return 0;
}

static int add_run(const ft_run_record *record, void *context)
{
    history *h = context;
    ft_grow((void **)&h->runs, &h->capacity, h->n_runs + 1, sizeof *h->runs);
    run_data *run = &h->runs[h->n_runs++];
    memset(run, 0, sizeof *run);
    run->record = *record;
    run->record.target = ft_xstrdup(record->target);
    run->record.kind = ft_xstrdup(record->kind);
    run->record.params_json = dup_or_null(record->params_json);
    run->record.inputs_json = dup_or_null(record->inputs_json);
    run->record.log_path = dup_or_null(record->log_path);
    return 0;
}

static int read_history(ft_state *state, history *h)
{
    memset(h, 0, sizeof *h);
    h->state = state;
    if (ft_state_each_run(state, add_run, h) != 0)
        return -1;
    for (size_t i = 0; i < h->n_runs / 2; i++) { /* newest first -> oldest first */
        run_data swap = h->runs[i];
        h->runs[i] = h->runs[h->n_runs - 1 - i];
        h->runs[h->n_runs - 1 - i] = swap;
    }
    for (size_t i = 0; i < h->n_runs; i++)
        if (ft_state_each_metric(state, h->runs[i].record.id, add_point, &h->runs[i]) != 0)
            return -1;
    return 0;
}

static void free_history(history *h)
{
    for (size_t i = 0; i < h->n_runs; i++) {
        for (size_t k = 0; k < h->runs[i].n_points; k++)
            free(h->runs[i].points[k].name);
        free(h->runs[i].points);
        ft_run_record_free(&h->runs[i].record);
    }
    free(h->runs);
}

static const char *status_word(ft_run_status status)
{
    static const char *const words[] = {"running or killed", "ran", "failed", "stopped", "restored"};
    return words[status];
}

static bool has_metric(const run_data *run, const char *name)
{
    for (size_t k = 0; k < run->n_points; k++)
        if (strcmp(run->points[k].name, name) == 0)
            return true;
    return false;
}

/* --- the pipeline graph --- */

static void write_graph(ft_strbuf *out, const ft_graph *graph, const ft_plan *plans, const history *h)
{
    size_t *depth = ft_xcalloc(graph->n_nodes + 1, sizeof *depth), *row = ft_xcalloc(graph->n_nodes + 1, sizeof *row);
    size_t max_depth = 0, rows_at[64] = {0}, max_rows = 1;
    for (size_t o = 0; o < graph->n_nodes; o++) {
        size_t i = graph->order[o];
        for (size_t k = 0; k < graph->nodes[i].n_inputs; k++) {
            size_t maker = graph->nodes[i].input_nodes[k];
            if (maker != FT_NO_NODE && depth[maker] + 1 > depth[i])
                depth[i] = depth[maker] + 1;
        }
        if (depth[i] > 63)
            depth[i] = 63;
        row[i] = rows_at[depth[i]]++;
        if (rows_at[depth[i]] > max_rows)
            max_rows = rows_at[depth[i]];
        if (depth[i] > max_depth)
            max_depth = depth[i];
    }
    const int box_w = 190, box_h = 54, gap_x = 50, gap_y = 18;
    int width = (int)(max_depth + 1) * (box_w + gap_x) + 20, height = (int)max_rows * (box_h + gap_y) + 20;
    ft_strbuf_printf(out, "<svg class=\"graph\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\">"
                          "<title>pipeline graph</title>",
                     width, height, width, height);
    for (size_t i = 0; i < graph->n_nodes; i++)
        for (size_t k = 0; k < graph->nodes[i].n_inputs; k++) {
            size_t m = graph->nodes[i].input_nodes[k];
            if (m == FT_NO_NODE)
                continue;
            ft_strbuf_printf(out, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#888888\"/>",
                             10 + (int)depth[m] * (box_w + gap_x) + box_w,
                             10 + (int)row[m] * (box_h + gap_y) + box_h / 2,
                             10 + (int)depth[i] * (box_w + gap_x), 10 + (int)row[i] * (box_h + gap_y) + box_h / 2);
        }
    for (size_t i = 0; i < graph->n_nodes; i++) {
        const ft_node *node = &graph->nodes[i];
        const char *state = plans[i].action == FT_PLAN_UP_TO_DATE ? "up to date"
                            : plans[i].action == FT_PLAN_RESTORE  ? "in the cache"
                                                                  : "would run";
        const run_data *last = NULL;
        for (size_t r = 0; r < h->n_runs; r++)
            if (strcmp(h->runs[r].record.target, node->target) == 0)
                last = &h->runs[r];
        const char *fill = plans[i].action == FT_PLAN_UP_TO_DATE ? "#d9f2d9" : "#eeeeee";
        if (last && last->record.status == FT_RUN_FAILED)
            fill = "#f8d0d0";
        int x = 10 + (int)depth[i] * (box_w + gap_x), y = 10 + (int)row[i] * (box_h + gap_y);
        ft_strbuf_printf(out, "<g class=\"stage\"><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" rx=\"6\" "
                              "fill=\"%s\" stroke=\"#666666\"/>",
                         x, y, box_w, box_h, fill);
        ft_strbuf_printf(out, "<text x=\"%d\" y=\"%d\" font-family=\"sans-serif\" font-size=\"12\" "
                              "font-weight=\"bold\">",
                         x + 6, y + 16);
        ft_markup_escape(out, node->target);
        ft_strbuf_printf(out, "</text><text x=\"%d\" y=\"%d\" font-family=\"sans-serif\" font-size=\"11\">%s: %s"
                              "</text>",
                         x + 6, y + 31, node->kind->name, state);
        if (last) {
            double seconds = last->record.end_ms > 0 ? (double)(last->record.end_ms - last->record.start_ms) / 1e3 : 0;
            ft_strbuf_printf(out, "<text x=\"%d\" y=\"%d\" font-family=\"sans-serif\" font-size=\"11\">last: %s, "
                                  "%.1f s</text>",
                             x + 6, y + 46, status_word(last->record.status), seconds);
        }
        ft_strbuf_puts(out, "</g>");
    }
    ft_strbuf_puts(out, "</svg>\n");
    free(depth);
    free(row);
}

static void write_runs_table(ft_strbuf *out, const history *h)
{
    ft_strbuf_puts(out, "<table class=\"runs\"><tr><th>run</th><th>target</th><th>kind</th><th>started</th>"
                        "<th>result</th><th>time</th></tr>\n");
    for (size_t r = h->n_runs; r-- > 0;) {
        const ft_run_record *record = &h->runs[r].record;
        char when[64];
        time_t seconds = (time_t)(record->start_ms / 1000);
        struct tm local;
        localtime_r(&seconds, &local);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &local);
        ft_strbuf_printf(out, "<tr><td>%lld</td><td>", (long long)record->id);
        ft_markup_escape(out, record->target);
        ft_strbuf_printf(out, "</td><td>%s</td><td>%s</td><td>%s</td><td>%.1f s</td></tr>\n", record->kind, when,
                         status_word(record->status),
                         record->end_ms > 0 ? (double)(record->end_ms - record->start_ms) / 1e3 : 0.0);
    }
    ft_strbuf_puts(out, "</table>\n");
}

/* --- training curves --- */

/* "learning_rate=0.002" for the key parameters in which this run differs from
 * the target's other runs; "run N" when none do. */
static char *run_label(const run_data *const *runs, size_t n, size_t which)
{
    ft_strbuf label;
    ft_strbuf_init(&label);
    ft_strbuf_printf(&label, "run %lld", (long long)runs[which]->record.id);
    json_t *mine = runs[which]->record.params_json ? json_loads(runs[which]->record.params_json, 0, NULL) : NULL;
    const char *name;
    json_t *value;
    size_t shown = 0;
    json_object_foreach(mine, name, value) {
        bool differs = false;
        for (size_t k = 0; k < n && !differs; k++) {
            json_t *other = runs[k]->record.params_json ? json_loads(runs[k]->record.params_json, 0, NULL) : NULL;
            differs = !json_equal(value, json_object_get(other, name));
            json_decref(other);
        }
        if (differs && shown++ < 2) {
            char *text = json_is_string(value) ? ft_xstrdup(json_string_value(value))
                                               : json_dumps(value, JSON_ENCODE_ANY);
            ft_strbuf_printf(&label, "%s %s=%s", shown == 1 ? ":" : ",", name, text);
            free(text);
        }
    }
    json_decref(mine);
    return ft_strbuf_take(&label);
}

static const char *const curve_names[] = {"loss",
                                          "learning_rate",
                                          "grad_norm",
                                          "tokens_per_s",
                                          "memory_bytes",
                                          "guard_disk_free_bytes",
                                          "guard_host_available_bytes",
                                          "guard_gpu_memory_used_bytes",
                                          "guard_gpu_utilization_percent",
                                          "guard_gpu_temperature_c",
                                          NULL};

static void write_curves(ft_strbuf *out, const history *h, const char *target)
{
    const run_data **runs = ft_xcalloc(h->n_runs + 1, sizeof *runs);
    size_t n = 0;
    for (size_t r = 0; r < h->n_runs; r++)
        if (strcmp(h->runs[r].record.target, target) == 0 && has_metric(&h->runs[r], "loss"))
            runs[n++] = &h->runs[r];
    if (n == 0) {
        free(runs);
        return;
    }
    ft_strbuf_puts(out, "<h3>");
    ft_markup_escape(out, target);
    ft_strbuf_printf(out, "</h3>\n<p>%zu run%s with training metrics%s.</p>\n<div class=\"charts\">", n,
                     n == 1 ? "" : "s", n > 1 ? ", overlaid" : "");
    char **labels = ft_xcalloc(n + 1, sizeof *labels);
    for (size_t s = 0; s < n; s++)
        labels[s] = run_label(runs, n, s);
    for (size_t c = 0; curve_names[c]; c++) {
        ft_svg_series *series = ft_xcalloc(n + 1, sizeof *series);
        double **xs = ft_xcalloc(n + 1, sizeof *xs), **ys = ft_xcalloc(n + 1, sizeof *ys);
        size_t with_points = 0;
        for (size_t s = 0; s < n; s++) {
            xs[s] = ft_xcalloc(runs[s]->n_points + 1, sizeof **xs);
            ys[s] = ft_xcalloc(runs[s]->n_points + 1, sizeof **ys);
            size_t count = 0;
            for (size_t k = 0; k < runs[s]->n_points; k++)
                if (strcmp(runs[s]->points[k].name, curve_names[c]) == 0) {
                    xs[s][count] = (double)runs[s]->points[k].step;
                    ys[s][count++] = runs[s]->points[k].value;
                }
            series[s] = (ft_svg_series){labels[s], xs[s], ys[s], count};
            with_points += count > 0;
        }
        if (with_points > 0) {
            size_t length = strlen(curve_names[c]);
            bool bytes = length > 6 && strcmp(curve_names[c] + length - 6, "_bytes") == 0;
            ft_svg_line_chart(out, curve_names[c], "step", bytes ? "bytes" : "", series, n, false);
        }
        for (size_t s = 0; s < n; s++) {
            free(xs[s]);
            free(ys[s]);
        }
        free(xs);
        free(ys);
        free(series);
    }
    ft_strbuf_puts(out, "</div>\n");
    for (size_t s = 0; s < n; s++)
        free(labels[s]);
    free(labels);
    free(runs);
}

/* --- evaluation --- */

static double metric_value(const run_data *run, const char *name, bool *found)
{
    for (size_t k = 0; k < run->n_points; k++)
        if (strcmp(run->points[k].name, name) == 0) {
            *found = true;
            return run->points[k].value;
        }
    *found = false;
    return 0.0;
}

static void write_examples(ft_strbuf *out, const ft_node *node)
{
    char *path = ft_path_join(node->target_path, "results.jsonl");
    char *text = NULL;
    size_t length = 0;
    if (ft_read_file(path, &text, &length) != 0) {
        free(path);
        return;
    }
    ft_strbuf_puts(out, "<table class=\"examples\"><tr><th>prompt</th><th>expected</th><th>answer</th>"
                        "<th>base answer</th></tr>\n");
    char *line = text;
    for (int shown = 0; shown < 5 && line && *line; shown++) {
        char *end = strchr(line, '\n');
        json_t *entry = json_loadb(line, end ? (size_t)(end - line) : strlen(line), 0, NULL);
        const char *fields[] = {"prompt", "expected", "answer", "base_answer"};
        ft_strbuf_puts(out, "<tr>");
        for (int f = 0; f < 4; f++) {
            ft_strbuf_puts(out, "<td>");
            ft_markup_escape(out, json_string_value(json_object_get(entry, fields[f])));
            ft_strbuf_puts(out, "</td>");
        }
        ft_strbuf_puts(out, "</tr>\n");
        json_decref(entry);
        line = end ? end + 1 : NULL;
    }
    ft_strbuf_puts(out, "</table>\n");
    free(text);
    free(path);
}

static void write_evaluation(ft_strbuf *out, const history *h, const ft_node *node)
{
    const run_data *last = NULL;
    for (size_t r = 0; r < h->n_runs; r++)
        if (strcmp(h->runs[r].record.target, node->target) == 0 && has_metric(&h->runs[r], "accuracy"))
            last = &h->runs[r];
    if (!last)
        return;
    static const char *const columns[] = {"accuracy", "eval_loss", "perplexity", "tokens_per_s", "peak_bytes",
                                          "load_peak_bytes", "total_s"};
    ft_strbuf_puts(out, "<h3>");
    ft_markup_escape(out, node->target);
    ft_strbuf_printf(out, "</h3>\n<table class=\"evaluation\"><tr><th>model</th>");
    for (size_t c = 0; c < sizeof columns / sizeof columns[0]; c++)
        ft_strbuf_printf(out, "<th>%s</th>", columns[c]);
    ft_strbuf_puts(out, "</tr>\n");
    const char *prefixes[] = {"", "base_"}, *names[] = {"tuned", "base"};
    for (int m = 0; m < 2; m++) {
        char name[64];
        bool found;
        snprintf(name, sizeof name, "%saccuracy", prefixes[m]);
        metric_value(last, name, &found);
        if (!found)
            continue;
        ft_strbuf_printf(out, "<tr><td>%s</td>", names[m]);
        for (size_t c = 0; c < sizeof columns / sizeof columns[0]; c++) {
            snprintf(name, sizeof name, "%s%s", prefixes[m], columns[c]);
            double value = metric_value(last, name, &found);
            char text[32];
            if (!found)
                snprintf(text, sizeof text, "-");
            else if (strstr(columns[c], "_bytes"))
                ft_format_bytes((uint64_t)value, text, sizeof text);
            else
                snprintf(text, sizeof text, "%.4g", value);
            ft_strbuf_printf(out, "<td>%s</td>", text);
        }
        ft_strbuf_puts(out, "</tr>\n");
    }
    ft_strbuf_puts(out, "</table>\n");
    write_examples(out, node);
}

/* --- the page --- */

static const char style[] =
    "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 16px}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}.charts{display:flex;flex-wrap:wrap;gap:8px}svg.chart{border:1px solid #ddd}";

static void write_page(ft_strbuf *out, const ft_session *session, const ft_plan *plans, const history *h)
{
    const ft_graph *graph = session->graph;
    ft_strbuf_puts(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ftpipe report: ");
    ft_markup_escape(out, session->pipeline->path);
    ft_strbuf_printf(out, "</title><style>%s</style></head><body>\n<h1>ftpipe report</h1>\n<p>", style);
    ft_markup_escape(out, session->pipeline->path);
    ft_strbuf_printf(out, ": %zu stages, %zu runs recorded.</p>\n<h2>Pipeline</h2>\n", graph->n_nodes, h->n_runs);
    write_graph(out, graph, plans, h);
    ft_strbuf_puts(out, "<h2>Training</h2>\n");
    for (size_t i = 0; i < graph->n_nodes; i++)
        write_curves(out, h, graph->nodes[i].target);
    ft_strbuf_puts(out, "<h2>Evaluation</h2>\n");
    for (size_t i = 0; i < graph->n_nodes; i++)
        write_evaluation(out, h, &graph->nodes[i]);
    ft_strbuf_puts(out, "<h2>Runs</h2>\n");
    write_runs_table(out, h);
    ft_strbuf_puts(out, "</body></html>\n");
}

int ft_report_command(ft_session *session, const ft_invocation *invocation)
{
    ft_graph *graph = session->graph;
    for (size_t i = 0; i < graph->n_nodes; i++)
        graph->nodes[i].selected = true;
    ft_plan *plans = ft_xcalloc(graph->n_nodes + 1, sizeof *plans);
    int result = 0;
    for (size_t o = 0; o < graph->n_nodes && result == 0; o++)
        result = ft_plan_node(session->workspace, graph, graph->order[o], plans);
    history h;
    if (result == 0)
        result = read_history(session->workspace->state, &h);
    char *path = invocation->output_path ? ft_xstrdup(invocation->output_path)
                                         : ft_path_join(session->workspace->state_dir, "report.html");
    if (result == 0) {
        ft_strbuf page;
        ft_strbuf_init(&page);
        write_page(&page, session, plans, &h);
        result = ft_write_file_atomic(path, page.data, page.length);
        if (result != 0)
            ft_error_context("writing the report (give -o a file in a folder that exists)");
        ft_strbuf_free(&page);
        free_history(&h);
    }
    if (result == 0) {
        if (invocation->open_report)
            printf("%s\n", path);
        else
            printf("ftpipe report: wrote %s\n", path);
    }
    for (size_t i = 0; i < graph->n_nodes; i++)
        ft_plan_free(&plans[i]);
    free(plans);
    free(path);
    return result == 0 ? 0 : 1;
}
