/* estimate: per-stage figures from the kinds, time from state.db, totals, and the
 * check before a run. */
#include "ftpipe/engine/estimate.h"

#include <jansson.h>
#include <limits.h>
#include <mntent.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/host_memory.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/build.h"
#include "ftpipe/engine/measure.h"
#include "ftpipe/engine/stage_runtime.h"

/* --- time from past runs and measurements --- */

/* Where a rate comes from: the newest finished run of the kind that logged it, or
 * the newest measurement, whichever is newer. */
typedef struct {
    ft_state *state;
    const char *kind;
    const char *metric;
    double rate;
    int64_t time_ms;
    int64_t run_id;           /* 0: measured */
    char target[256];
} rate_search;

static int find_metric(int64_t step, const char *name, double value, void *context)
{
    rate_search *search = context;
    if (name && strcmp(name, search->metric) == 0 && value > 0.0) {
        search->rate = value;
        return 1;
    }
    return 0;
}

static int visit_run(const ft_run_record *run, void *context)
{
    rate_search *search = context;
    if (run->status != FT_RUN_DONE || strcmp(run->kind, search->kind) != 0)
        return 0;
    if (ft_state_each_metric(search->state, run->id, find_metric, search) == 1) {
        snprintf(search->target, sizeof search->target, "%s", run->target);
        search->run_id = run->id;
        search->time_ms = run->end_ms;
        return 1;
    }
    return 0;
}

static int find_rate(ft_workspace *workspace, const char *kind, const char *metric, rate_search *out)
{
    *out = (rate_search){.state = workspace->state, .kind = kind, .metric = metric};
    if (ft_state_each_run(workspace->state, visit_run, out) < 0)
        return -1;
    ft_measured_rate measured;
    int found = ft_state_measured_latest(workspace->state, kind, metric, &measured);
    if (found < 0)
        return -1;
    if (found && (out->rate <= 0.0 || measured.time_ms >= out->time_ms)) {
        out->rate = measured.value;
        out->time_ms = measured.time_ms;
        out->run_id = 0;
        snprintf(out->target, sizeof out->target, "%s", measured.target);
    }
    return out->rate > 0.0 ? 1 : 0;
}

/* Time is the sum of the kind's work parts, each at the newest rate this device
 * gave for it; CPU time the same from the CPU-time rates of the same source. */
static int estimate_time(ft_workspace *workspace, const ft_node *node, ft_stage_estimate *figures)
{
    if (figures->time_s.known || figures->time_s.source[0])
        return 0;
    const char *device = figures->device_name ? figures->device_name : "this device";
    if (figures->n_work == 0) {
        ft_estimate_unknown(&figures->time_s, "the %s kind does not say how much work a run is", node->kind->name);
        ft_estimate_unknown(&figures->cpu_time_s, "as time");
        return 0;
    }
    ft_strbuf source;
    ft_strbuf_init(&source);
    double seconds = 0.0, cpu_seconds = 0.0;
    bool cpu_known = true;
    for (size_t i = 0; i < figures->n_work; i++) {
        const ft_estimate_work *part = &figures->work[i];
        char *metric = ft_xasprintf("%s_per_s_%s", part->rate, device);
        rate_search wall;
        int found = find_rate(workspace, node->kind->name, metric, &wall);
        free(metric);
        if (found < 0) {
            ft_strbuf_free(&source);
            return -1;
        }
        if (!found) {
            ft_estimate_unknown(&figures->time_s, "no finished %s run or measurement on %s in state.db yet to take "
                                "a rate of %s from (`ftpipe estimate --measure` times a few steps)",
                                node->kind->name, device, part->what);
            ft_estimate_unknown(&figures->cpu_time_s, "as time");
            ft_strbuf_free(&source);
            return 0;
        }
        seconds += part->amount / wall.rate;
        /* the CPU-time rate the same run or measurement logged */
        rate_search cpu = wall;
        cpu.metric = metric = ft_xasprintf("%s_per_cpu_s_%s", part->rate, device);
        cpu.rate = 0.0;
        if (wall.run_id > 0) {
            if (ft_state_each_metric(workspace->state, wall.run_id, find_metric, &cpu) < 0)
                cpu.rate = 0.0;
        } else {
            ft_measured_rate measured;
            if (ft_state_measured_latest(workspace->state, node->kind->name, metric, &measured) == 1)
                cpu.rate = measured.value;
        }
        free(metric);
        if (cpu.rate > 0.0)
            cpu_seconds += part->amount / cpu.rate;
        else
            cpu_known = false;
        char by[300];
        if (wall.run_id > 0)
            snprintf(by, sizeof by, "logged by run %lld of %s", (long long)wall.run_id, wall.target);
        else
            snprintf(by, sizeof by, "measured by estimate --measure of %s", wall.target);
        ft_strbuf_printf(&source, "%s%s %.3g %s at %.3g %s/s, %s", i ? "; " : "", part->what, part->amount,
                         part->unit, wall.rate, part->unit, by);
    }
    ft_estimate_set(&figures->time_s, seconds, "on %s: %s", device, source.data);
    if (cpu_known)
        ft_estimate_set(&figures->cpu_time_s, cpu_seconds, "the same parts at the CPU-time rates of the same runs");
    else
        ft_estimate_unknown(&figures->cpu_time_s, "a rate came without its CPU-time rate");
    ft_strbuf_free(&source);
    return 0;
}

/* --- estimating the plan --- */

/* Available memory, or less where FTPIPE_MEMORY says the machine offers less. */
static uint64_t host_budget(void)
{
    int gpus;
    uint64_t total, available = ft_host_available_bytes();
    ft_build_detect_resources(&gpus, &total);
    return total > 0 && total < available ? total : available;
}

int ft_estimate_selected(ft_workspace *workspace, const ft_graph *graph, bool measure, ft_plan *plans,
                         ft_node_estimate **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    ft_node_estimate *estimates = ft_xcalloc(graph->n_nodes + 1, sizeof *estimates);
    size_t n = 0;
    int result = 0;
    for (size_t o = 0; o < graph->n_nodes && result == 0; o++) {
        size_t index = graph->order[o];
        const ft_node *node = &graph->nodes[index];
        if (!node->selected)
            continue;
        if (ft_plan_node(workspace, graph, index, plans) != 0) {
            result = -1;
            break;
        }
        ft_plan_action action = plans[index].action;
        if (action != FT_PLAN_RUN && action != FT_PLAN_WAITS)
            continue;
        ft_node_estimate *estimate = &estimates[n++];
        estimate->node = index;
        estimate->action = action;
        ft_stage_estimate *figures = &estimate->figures;
        if (!node->kind->estimate) {
            ft_estimate_figure *all[] = {&figures->device_bytes, &figures->host_bytes, &figures->shm_bytes,
                                         &figures->disk_bytes, &figures->time_s, &figures->cpu_time_s};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
                ft_estimate_unknown(all[i], "the %s kind gives no estimate", node->kind->name);
            continue;
        }
        figures->host_budget_bytes = host_budget();
        /* What a kind leaves alone it does not use. */
        ft_estimate_set(&figures->device_bytes, 0.0, "uses no GPU");
        ft_estimate_set(&figures->shm_bytes, 0.0, "writes nothing to a tmpfs");
        ft_estimate_unknown(&figures->host_bytes, "the %s kind does not estimate its memory", node->kind->name);
        ft_estimate_unknown(&figures->disk_bytes, "the %s kind does not estimate what it writes", node->kind->name);
        const char *key = plans[index].has_key ? plans[index].key.key : "pending";
        ft_stage *stage = ft_plan_stage_context(workspace, graph, index, key);
        result = node->kind->estimate(stage, figures);
        ft_stage_destroy(stage);
        if (result != 0) {
            ft_error_context("estimating %s", node->target);
            break;
        }
        char not_measured[400] = "";
        if (measure && node->kind->measure && !figures->time_s.source[0]) {
            if (action == FT_PLAN_WAITS)
                snprintf(not_measured, sizeof not_measured, "an input is built first; build it to measure");
            else if (ft_measure_stage(workspace, graph, index, key, not_measured, sizeof not_measured) < 0)
                result = -1;
        }
        if (result == 0)
            result = estimate_time(workspace, node, figures);
        if (result == 0 && not_measured[0]) {
            char *source = ft_xasprintf("not measured (%s); %s", not_measured, figures->time_s.source);
            snprintf(figures->time_s.source, sizeof figures->time_s.source, "%s", source);
            free(source);
        }
    }
    if (result != 0) {
        free(estimates);
        return -1;
    }
    *out = estimates;
    *count = n;
    return 0;
}

/* The pipeline's figures: memory peaks are the largest stage's (stages run one at
 * a time unless -j), what is written adds up. unknown counts figures nobody knows. */
typedef struct {
    double device_peak, host_peak, shm, disk, time;
    size_t unknown_device, unknown_host, unknown_disk, unknown_time;
} totals;

static totals add_up(const ft_node_estimate *estimates, size_t count)
{
    totals t = {0};
    for (size_t i = 0; i < count; i++) {
        const ft_stage_estimate *f = &estimates[i].figures;
        if (f->device_bytes.known && f->device_bytes.value > t.device_peak)
            t.device_peak = f->device_bytes.value;
        if (f->host_bytes.known && f->host_bytes.value > t.host_peak)
            t.host_peak = f->host_bytes.value;
        t.unknown_host += !f->host_bytes.known;
        t.shm += f->shm_bytes.known ? f->shm_bytes.value : 0.0;
        t.disk += f->disk_bytes.known ? f->disk_bytes.value : 0.0;
        t.unknown_disk += !f->disk_bytes.known;
        t.time += f->time_s.known ? f->time_s.value : 0.0;
        t.unknown_time += !f->time_s.known;
    }
    return t;
}

/* --- printing --- */

static void format_figure(const ft_estimate_figure *figure, bool seconds, char *out, size_t size)
{
    if (!figure->known)
        snprintf(out, size, "?");
    else if (seconds)
        snprintf(out, size, "%.0f s", figure->value);
    else
        ft_format_bytes((uint64_t)figure->value, out, size);
}

/* The stage's alternatives: device per GPU and a machine's host memory each,
 * "*" marking its own, "does not fit" those over a budget. */
static void print_choices(const ft_stage_estimate *f, FILE *out)
{
    if (f->n_choices == 0)
        return;
    fprintf(out, "    %-6s %-62s %11s %11s\n", "choice", "(memory of each setting; * this stage's)", "device/GPU", "host");
    bool on_gpu = f->device_name && strcmp(f->device_name, "cpu") != 0;
    for (size_t c = 0; c < f->n_choices; c++) {
        const ft_estimate_choice *choice = &f->choices[c];
        char device[32] = "-", host[32];
        if (on_gpu)
            ft_format_bytes((uint64_t)choice->device_bytes, device, sizeof device);
        ft_format_bytes((uint64_t)choice->host_bytes, host, sizeof host);
        fprintf(out, "    %-6s %-62s %11s %11s%s\n", choice->current ? "*" : "", choice->name, device, host,
                choice->fits ? "" : "  does not fit");
    }
}

static void print_text(const ft_graph *graph, const ft_node_estimate *estimates, size_t count, FILE *out)
{
    static const char *const names[] = {"device", "host", "shm", "disk", "time"};
    if (count == 0) {
        fprintf(out, "ftpipe estimate: nothing would run (every selected stage is up to date or in the cache)\n");
        return;
    }
    fprintf(out, "%-28s %-9s %11s %11s %11s %11s %9s\n", "stage", "kind", "device/GPU", "host", "shm", "disk", "time");
    for (size_t i = 0; i < count; i++) {
        const ft_node *node = &graph->nodes[estimates[i].node];
        const ft_stage_estimate *f = &estimates[i].figures;
        const ft_estimate_figure *figures[] = {&f->device_bytes, &f->host_bytes, &f->shm_bytes, &f->disk_bytes,
                                               &f->time_s};
        char text[5][32];
        for (int k = 0; k < 5; k++)
            format_figure(figures[k], k == 4, text[k], sizeof text[k]);
        fprintf(out, "%-28s %-9s %11s %11s %11s %11s %9s\n", node->target, node->kind->name, text[0], text[1],
                text[2], text[3], text[4]);
        for (int k = 0; k < 5; k++)
            if (figures[k]->source[0])
                fprintf(out, "    %-6s %s\n", names[k], figures[k]->source);
        if (f->cpu_time_s.known)
            fprintf(out, "    %-6s %.0f s of CPU time (%s)\n", "cpu", f->cpu_time_s.value, f->cpu_time_s.source);
        print_choices(f, out);
    }
    totals t = add_up(estimates, count);
    char device[32], host[32], shm[32], disk[32];
    ft_format_bytes((uint64_t)t.device_peak, device, sizeof device);
    ft_format_bytes((uint64_t)t.host_peak, host, sizeof host);
    ft_format_bytes((uint64_t)t.shm, shm, sizeof shm);
    ft_format_bytes((uint64_t)t.disk, disk, sizeof disk);
    fprintf(out, "pipeline: %zu stages to run; peak device memory per GPU %s, peak host memory %s%s, shm %s, "
                 "disk %s%s, time %.0f s%s\n",
            count, device, host, t.unknown_host ? " (some unknown)" : "", shm, disk,
            t.unknown_disk ? " (some unknown)" : "", t.time, t.unknown_time ? " (some unknown)" : "");
}

static json_t *figure_json(const ft_estimate_figure *figure)
{
    return json_pack("{so sb ss}", "value", figure->known ? json_real(figure->value) : json_null(), "known",
                     figure->known, "source", figure->source);
}

static void print_json(const ft_graph *graph, const ft_node_estimate *estimates, size_t count, FILE *out)
{
    json_t *stages = json_array();
    for (size_t i = 0; i < count; i++) {
        const ft_node *node = &graph->nodes[estimates[i].node];
        const ft_stage_estimate *f = &estimates[i].figures;
        json_t *choices = json_array();
        for (size_t c = 0; c < f->n_choices; c++) {
            const ft_estimate_choice *choice = &f->choices[c];
            json_array_append_new(choices, json_pack("{ss sf sf sb sb}", "name", choice->name, "device_bytes",
                                                     choice->device_bytes, "host_bytes", choice->host_bytes,
                                                     "current", choice->current, "fits", choice->fits));
        }
        json_array_append_new(stages, json_pack("{ss ss so so so so so so so}", "target", node->target, "kind",
                                                node->kind->name, "device_bytes", figure_json(&f->device_bytes),
                                                "host_bytes", figure_json(&f->host_bytes), "shm_bytes",
                                                figure_json(&f->shm_bytes), "disk_bytes", figure_json(&f->disk_bytes),
                                                "time_s", figure_json(&f->time_s), "cpu_time_s",
                                                figure_json(&f->cpu_time_s), "choices", choices));
    }
    totals t = add_up(estimates, count);
    json_t *pipeline = json_pack("{sf sf sf sf sf sI sI sI}", "device_peak_bytes", t.device_peak, "host_peak_bytes",
                                 t.host_peak, "shm_bytes", t.shm, "disk_bytes", t.disk, "time_s", t.time,
                                 "unknown_host", (json_int_t)t.unknown_host, "unknown_disk",
                                 (json_int_t)t.unknown_disk, "unknown_time", (json_int_t)t.unknown_time);
    json_t *root = json_pack("{so so}", "stages", stages, "pipeline", pipeline);
    json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', out);
    json_decref(root);
}

int ft_estimate_command(ft_session *session, const ft_invocation *invocation)
{
    if (ft_graph_select(session->graph, invocation->arguments, invocation->n_arguments) != 0)
        return 1;
    ft_node_estimate *estimates;
    size_t count;
    ft_plan *plans = ft_xcalloc(session->graph->n_nodes + 1, sizeof *plans);
    int result = ft_estimate_selected(session->workspace, session->graph, invocation->measure, plans, &estimates,
                                      &count);
    for (size_t i = 0; i < session->graph->n_nodes; i++)
        ft_plan_free(&plans[i]);
    free(plans);
    if (result != 0)
        return 1;
    if (invocation->json)
        print_json(session->graph, estimates, count, stdout);
    else
        print_text(session->graph, estimates, count, stdout);
    free(estimates);
    return 0;
}

/* --- the check before a run --- */

/* The mount holding path: the longest mount point that is a prefix of it. */
static void mount_of(const char *path, char *mount_point, size_t size, char *type, size_t type_size)
{
    snprintf(mount_point, size, "/");
    snprintf(type, type_size, "?");
    char *real = realpath(path, NULL);
    FILE *mounts = setmntent("/proc/self/mounts", "r");
    size_t best = 0;
    struct mntent *entry;
    while (real && mounts && (entry = getmntent(mounts))) {
        size_t length = strlen(entry->mnt_dir);
        bool prefix = strncmp(real, entry->mnt_dir, length) == 0 &&
                      (real[length] == '/' || real[length] == '\0' || strcmp(entry->mnt_dir, "/") == 0);
        if (prefix && length >= best) {
            best = length;
            snprintf(mount_point, size, "%s", entry->mnt_dir);
            snprintf(type, type_size, "%s", entry->mnt_type);
        }
    }
    if (mounts)
        endmntent(mounts);
    free(real);
}

static int check_space(const char *path, double needed, const char *what, const char *list)
{
    uint64_t available;
    if (needed <= 0.0 || ft_free_space_bytes(path, &available) != 0)
        return 0;
    if (needed <= (double)available)
        return 0;
    char mount_point[PATH_MAX], type[64], need_text[32], have_text[32], short_text[32];
    mount_of(path, mount_point, sizeof mount_point, type, sizeof type);
    ft_format_bytes((uint64_t)needed, need_text, sizeof need_text);
    ft_format_bytes(available, have_text, sizeof have_text);
    ft_format_bytes((uint64_t)(needed - (double)available), short_text, sizeof short_text);
    return ft_error("not enough %s for this run: the stages to run would write %s (%s) on the %s file system "
                    "mounted at %s, which has %s free: %s short. Free space there, move the workspace, or build "
                    "fewer targets; `ftpipe estimate` shows each stage's figures",
                    what, need_text, list, type, mount_point, have_text, short_text);
}

int ft_estimate_check_fits(ft_workspace *workspace, const ft_graph *graph, ft_plan *plans)
{
    ft_node_estimate *estimates;
    size_t count;
    if (ft_estimate_selected(workspace, graph, false, plans, &estimates, &count) != 0)
        return -1;
    ft_strbuf disk_list, shm_list;
    ft_strbuf_init(&disk_list);
    ft_strbuf_init(&shm_list);
    double disk = 0.0, shm = 0.0;
    const char *shm_dir = NULL;
    size_t shm_stages = 0;
    int result = 0;
    uint64_t host_available = host_budget();
    for (size_t i = 0; i < count && result == 0; i++) {
        const ft_node *node = &graph->nodes[estimates[i].node];
        const ft_stage_estimate *f = &estimates[i].figures;
        char text[32];
        if (f->disk_bytes.known && f->disk_bytes.value > 0.0) {
            disk += f->disk_bytes.value;
            ft_format_bytes((uint64_t)f->disk_bytes.value, text, sizeof text);
            ft_strbuf_printf(&disk_list, "%s%s %s", disk_list.length ? ", " : "", node->target, text);
        }
        if (f->shm_bytes.known && f->shm_bytes.value > 0.0 && f->shm_dir[0]) {
            shm += f->shm_bytes.value;
            shm_dir = f->shm_dir;
            shm_stages++;
            ft_format_bytes((uint64_t)f->shm_bytes.value, text, sizeof text);
            ft_strbuf_printf(&shm_list, "%s%s %s", shm_list.length ? ", " : "", node->target, text);
        }
        if (f->host_bytes.known && host_available > 0 && f->host_bytes.value > (double)host_available) {
            char need[32], have[32];
            ft_format_bytes((uint64_t)f->host_bytes.value, need, sizeof need);
            ft_format_bytes(host_available, have, sizeof have);
            result = ft_error("stage %s would need %s of host memory (%s) but %s is available: %s",
                              node->target, need, f->host_bytes.source, have,
                              f->smallest_change[0] ? f->smallest_change
                                                    : "free memory, or lower what the stage holds at once");
        }
        if (result == 0 && f->device_bytes.known && f->device_budget_bytes > 0 &&
            f->device_bytes.value > (double)f->device_budget_bytes) {
            char need[32], have[32];
            ft_format_bytes((uint64_t)f->device_bytes.value, need, sizeof need);
            ft_format_bytes(f->device_budget_bytes, have, sizeof have);
            result = ft_error("stage %s would need %s of GPU memory a GPU (%s) but %s is free on the GPU: %s",
                              node->target, need, f->device_bytes.source, have,
                              f->smallest_change[0] ? f->smallest_change
                                                    : "free the GPU's memory, or lower what the stage holds at once");
        }
    }
    if (result == 0)
        result = check_space(workspace->state_dir, disk, "disk space", disk_list.data ? disk_list.data : "");
    /* One stage checks its own tmpfs when it starts, with its choices (fallback); together
     * stages can exceed a tmpfs none of them fills alone. */
    if (result == 0 && shm_stages > 1)
        result = check_space(shm_dir, shm, "tmpfs space", shm_list.data ? shm_list.data : "");
    ft_strbuf_free(&disk_list);
    ft_strbuf_free(&shm_list);
    free(estimates);
    return result;
}
