/* Tests of state: the stat cache, runs, targets, metrics and measured rates, kept
 * across reopening. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/state.h"

static char *temporary_dir;

/* A fresh state folder per case. */
static char *new_state_dir(const char *name)
{
    char *dir = ft_path_join(temporary_dir, name);
    CHECK_INT(ft_mkdir_p(dir), 0);
    return dir;
}

TEST(stat_cache_hits_only_on_equal_stat)
{
    char *dir = new_state_dir("stat");
    ft_state *state;
    CHECK_INT(ft_state_open(dir, &state), 0);
    ft_file_stat stat = {.device = 2049, .inode = 77, .size_bytes = 5, .mtime_ns = 1700000000123456789};
    ft_hash hash = ft_hash_bytes("hello", 5), found = {0, 0};
    CHECK_INT(ft_state_file_lookup(state, "/data/a.txt", &stat, &found), 0);
    CHECK_INT(ft_state_file_store(state, "/data/a.txt", &stat, hash), 0);
    CHECK_INT(ft_state_file_lookup(state, "/data/a.txt", &stat, &found), 1);
    CHECK(ft_hash_equal(found, hash));
    ft_file_stat changed = stat;
    changed.mtime_ns++;
    CHECK_INT(ft_state_file_lookup(state, "/data/a.txt", &changed, &found), 0);
    changed = stat;
    changed.inode++;
    CHECK_INT(ft_state_file_lookup(state, "/data/a.txt", &changed, &found), 0);
    changed = stat;
    changed.size_bytes++;
    CHECK_INT(ft_state_file_lookup(state, "/data/a.txt", &changed, &found), 0);
    changed = stat;
    changed.device++;
    CHECK_INT(ft_state_file_lookup(state, "/data/a.txt", &changed, &found), 0);
    CHECK_INT(ft_state_file_lookup(state, "/data/b.txt", &stat, &found), 0);
    /* A newer store replaces the older one. */
    CHECK_INT(ft_state_file_store(state, "/data/a.txt", &changed, ft_hash_bytes("world", 5)), 0);
    CHECK_INT(ft_state_file_lookup(state, "/data/a.txt", &stat, &found), 0);
    CHECK_INT(ft_state_file_lookup(state, "/data/a.txt", &changed, &found), 1);
    CHECK(ft_hash_equal(found, ft_hash_bytes("world", 5)));
    ft_state_close(state);

    CHECK_INT(ft_state_open(dir, &state), 0);
    CHECK_INT(ft_state_file_lookup(state, "/data/a.txt", &changed, &found), 1);
    CHECK(ft_hash_equal(found, ft_hash_bytes("world", 5)));
    ft_state_close(state);
    free(dir);
}

/* 20,000 entries: stored in one transaction, all found after reopening. */
TEST(stat_cache_holds_many_files)
{
    char *dir = new_state_dir("many");
    ft_state *state;
    CHECK_INT(ft_state_open(dir, &state), 0);
    CHECK_INT(ft_state_begin(state), 0);
    CHECK_INT(ft_state_begin(state), 0);
    for (int i = 0; i < 20000; i++) {
        char path[64];
        snprintf(path, sizeof path, "/work/data/shard-%05d.jsonl", i);
        ft_file_stat stat = {.device = 1, .inode = (uint64_t)i, .size_bytes = (uint64_t)i * 3, .mtime_ns = i};
        CHECK_INT(ft_state_file_store(state, path, &stat, ft_hash_bytes(path, strlen(path))), 0);
    }
    CHECK_INT(ft_state_commit(state), 0);
    CHECK_INT(ft_state_commit(state), 0);
    CHECK_INT(ft_state_commit(state), -1);
    char *expected = ft_xasprintf("ft_state_commit without ft_state_begin on %s/state.db", dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_state_close(state);

    CHECK_INT(ft_state_open(dir, &state), 0);
    int hits = 0;
    for (int i = 0; i < 20000; i++) {
        char path[64];
        snprintf(path, sizeof path, "/work/data/shard-%05d.jsonl", i);
        ft_file_stat stat = {.device = 1, .inode = (uint64_t)i, .size_bytes = (uint64_t)i * 3, .mtime_ns = i};
        ft_hash hash;
        if (ft_state_file_lookup(state, path, &stat, &hash) == 1 &&
            ft_hash_equal(hash, ft_hash_bytes(path, strlen(path))))
            hits++;
    }
    CHECK_INT(hits, 20000);
    ft_state_close(state);
    free(dir);
}

static ft_run_record make_run(const char *target, const char *key_hex)
{
    ft_run_record run;
    memset(&run, 0, sizeof run);
    snprintf(run.key, sizeof run.key, "%s", key_hex);
    run.target = (char *)target;
    run.kind = "train";
    run.kind_version = 3;
    run.params_json = "{\"lora_rank\":\"8\"}";
    run.inputs_json = "[{\"path\":\"data\",\"hash\":\"00\"}]";
    run.start_ms = 1700000000000;
    return run;
}

static int append_run_line(const ft_run_record *run, void *context)
{
    ft_strbuf_printf(context, "%lld %s %s %d %s|", (long long)run->id, run->target, run->output_hash,
                     (int)run->status, run->log_path ? run->log_path : "(null)");
    return 0;
}

static int stop_at_first(const ft_run_record *run, void *context)
{
    (*(int *)context)++;
    return 7;
}

TEST(runs_round_trip)
{
    char *dir = new_state_dir("runs");
    ft_state *state;
    CHECK_INT(ft_state_open(dir, &state), 0);
    ft_run_record first = make_run("adapter", "0123456789abcdef0123456789abcdef");
    ft_run_record second = make_run("adapter", "fedcba9876543210fedcba9876543210");
    second.params_json = NULL;
    second.log_path = "logs/b.log";
    ft_run_record other = make_run("report", "11111111111111111111111111111111");
    int64_t first_id, second_id, other_id;
    CHECK_INT(ft_state_run_start(state, &first, &first_id), 0);
    CHECK_INT(ft_state_run_start(state, &second, &second_id), 0);
    CHECK_INT(ft_state_run_start(state, &other, &other_id), 0);
    CHECK_INT(first_id, 1);
    CHECK_INT(second_id, 2);
    CHECK_INT(ft_state_run_finish(state, first_id, FT_RUN_DONE, 0, "22222222222222222222222222222222",
                                  "logs/a.log"), 0);
    CHECK_INT(ft_state_run_finish(state, second_id, FT_RUN_FAILED, 3, NULL, NULL), 0);
    CHECK_INT(ft_state_run_finish(state, 99, FT_RUN_DONE, 0, NULL, NULL), -1);
    char *expected = ft_xasprintf("no run 99 in the state database %s/state.db", dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    ft_state_close(state);

    CHECK_INT(ft_state_open(dir, &state), 0);
    ft_run_record found;
    CHECK_INT(ft_state_last_run(state, "adapter", -1, &found), 1);
    CHECK_INT(found.id, 2);
    CHECK_STR(found.key, "fedcba9876543210fedcba9876543210");
    CHECK(found.params_json == NULL);
    CHECK_STR(found.inputs_json, "[{\"path\":\"data\",\"hash\":\"00\"}]");
    CHECK_INT(found.status, FT_RUN_FAILED);
    CHECK_INT(found.exit_code, 3);
    CHECK_STR(found.output_hash, "");
    CHECK_STR(found.log_path, "logs/b.log");
    CHECK(found.end_ms >= found.start_ms);
    ft_run_record_free(&found);

    CHECK_INT(ft_state_last_run(state, "adapter", FT_RUN_DONE, &found), 1);
    CHECK_INT(found.id, 1);
    CHECK_STR(found.target, "adapter");
    CHECK_STR(found.kind, "train");
    CHECK_INT(found.kind_version, 3);
    CHECK_STR(found.params_json, "{\"lora_rank\":\"8\"}");
    CHECK_INT(found.start_ms, 1700000000000);
    CHECK_STR(found.output_hash, "22222222222222222222222222222222");
    CHECK_STR(found.log_path, "logs/a.log");
    ft_run_record_free(&found);

    CHECK_INT(ft_state_last_run(state, "adapter", FT_RUN_CACHED, &found), 0);
    CHECK_INT(ft_state_last_run(state, "nothing", -1, &found), 0);
    CHECK_INT(ft_state_last_run(state, "report", FT_RUN_RUNNING, &found), 1);
    CHECK_INT(found.end_ms, 0);
    ft_run_record_free(&found);

    ft_strbuf lines;
    ft_strbuf_init(&lines);
    CHECK_INT(ft_state_each_run(state, append_run_line, &lines), 0);
    CHECK_STR(lines.data, "3 report  0 (null)|2 adapter  2 logs/b.log|"
                          "1 adapter 22222222222222222222222222222222 1 logs/a.log|");
    ft_strbuf_free(&lines);
    int visited = 0;
    CHECK_INT(ft_state_each_run(state, stop_at_first, &visited), 7);
    CHECK_INT(visited, 1);

    /* status's query: each target's newest run, with what status shows and no JSON */
    ft_run_record *last = NULL;
    size_t n_last = 0;
    CHECK_INT(ft_state_last_runs(state, &last, &n_last), 0);
    CHECK_INT(n_last, 2);
    for (size_t i = 0; i < n_last; i++) {
        bool adapter = strcmp(last[i].target, "adapter") == 0;
        CHECK_INT(last[i].id, adapter ? 2 : 3);
        CHECK_INT(last[i].status, adapter ? FT_RUN_FAILED : FT_RUN_RUNNING);
        CHECK_INT(last[i].start_ms, 1700000000000);
        CHECK(adapter ? last[i].end_ms >= last[i].start_ms : last[i].end_ms == 0);
        CHECK(last[i].params_json == NULL && last[i].inputs_json == NULL && last[i].log_path == NULL);
        ft_run_record_free(&last[i]);
    }
    free(last);
    ft_state_close(state);
    free(dir);
}

static int append_target_line(const char *target, const ft_target_record *record, void *context)
{
    ft_strbuf_printf(context, "%s %s %s %llu|", target, record->key, record->output_hash,
                     (unsigned long long)record->stat.inode);
    return 0;
}

TEST(targets_round_trip)
{
    char *dir = new_state_dir("targets");
    ft_state *state;
    CHECK_INT(ft_state_open(dir, &state), 0);
    ft_target_record record = {
        .key = "0123456789abcdef0123456789abcdef",
        .output_hash = "22222222222222222222222222222222",
        .stat = {.device = 9, .inode = 10, .size_bytes = 11, .mtime_ns = -12},
    };
    CHECK_INT(ft_state_target_set(state, "models/base", &record), 0);
    record.stat.inode = 20;
    CHECK_INT(ft_state_target_set(state, "adapter", &record), 0);
    record.stat.inode = 30;
    CHECK_INT(ft_state_target_set(state, "adapter", &record), 0);
    ft_state_close(state);

    CHECK_INT(ft_state_open(dir, &state), 0);
    ft_target_record found;
    CHECK_INT(ft_state_target_get(state, "models/base", &found), 1);
    CHECK_STR(found.key, "0123456789abcdef0123456789abcdef");
    CHECK_STR(found.output_hash, "22222222222222222222222222222222");
    CHECK_INT(found.stat.device, 9);
    CHECK_INT(found.stat.inode, 10);
    CHECK_INT(found.stat.size_bytes, 11);
    CHECK_INT(found.stat.mtime_ns, -12);
    CHECK_INT(ft_state_target_get(state, "missing", &found), 0);
    ft_strbuf lines;
    ft_strbuf_init(&lines);
    CHECK_INT(ft_state_each_target(state, append_target_line, &lines), 0);
    CHECK_STR(lines.data, "adapter 0123456789abcdef0123456789abcdef 22222222222222222222222222222222 30|"
                          "models/base 0123456789abcdef0123456789abcdef 22222222222222222222222222222222 10|");
    CHECK_INT(ft_state_target_delete(state, "adapter"), 0);
    CHECK_INT(ft_state_target_get(state, "adapter", &found), 0);
    ft_strbuf_free(&lines);
    ft_state_close(state);
    free(dir);
}

static int append_metric_line(int64_t step, const char *name, double value, void *context)
{
    ft_strbuf_printf(context, "%lld %s %g|", (long long)step, name, value);
    return 0;
}

TEST(metrics_round_trip)
{
    char *dir = new_state_dir("metrics");
    ft_state *state;
    CHECK_INT(ft_state_open(dir, &state), 0);
    CHECK_INT(ft_state_metric_add(state, 1, 20, "loss", 1.25), 0);
    CHECK_INT(ft_state_metric_add(state, 1, 10, "loss", 2.5), 0);
    CHECK_INT(ft_state_metric_add(state, 1, 10, "learning_rate", 0.0001), 0);
    CHECK_INT(ft_state_metric_add(state, 1, 20, "loss", 1.125), 0);
    CHECK_INT(ft_state_metric_add(state, 2, 10, "loss", 9), 0);
    ft_state_close(state);

    CHECK_INT(ft_state_open(dir, &state), 0);
    ft_strbuf lines;
    ft_strbuf_init(&lines);
    CHECK_INT(ft_state_each_metric(state, 1, append_metric_line, &lines), 0);
    CHECK_STR(lines.data, "10 learning_rate 0.0001|10 loss 2.5|20 loss 1.125|");
    ft_strbuf_free(&lines);
    ft_state_close(state);
    free(dir);
}

TEST(measured_rates_round_trip_newest_first_and_apart_from_runs)
{
    char *dir = new_state_dir("measured");
    ft_state *state;
    CHECK_INT(ft_state_open(dir, &state), 0);
    ft_measured_rate rate;
    CHECK_INT(ft_state_measured_latest(state, "train", "train_ops_per_s_cpu", &rate), 0); /* no table yet */
    CHECK_INT(ft_state_measured_add(state, "adapter", "train", "train_ops_per_s_cpu", 2e9), 0);
    CHECK_INT(ft_state_measured_add(state, "other", "train", "train_ops_per_s_cpu", 3e9), 0);
    CHECK_INT(ft_state_measured_add(state, "other", "evaluate", "train_ops_per_s_cpu", 5e9), 0);
    ft_state_close(state);

    CHECK_INT(ft_state_open(dir, &state), 0);
    CHECK_INT(ft_state_measured_latest(state, "train", "train_ops_per_s_cpu", &rate), 1);
    CHECK_STR(rate.target, "other");
    CHECK(rate.value == 3e9);
    CHECK(rate.time_ms > 0);
    CHECK_INT(ft_state_measured_latest(state, "train", "train_ops_per_s_cuda", &rate), 0);
    ft_run_record last;
    CHECK_INT(ft_state_last_run(state, "adapter", -1, &last), 0);
    ft_state_close(state);
    free(dir);
}

TEST(refuses_newer_and_damaged_databases)
{
    char *dir = new_state_dir("newer");
    ft_state *state;
    CHECK_INT(ft_state_open(dir, &state), 0);
    ft_state_close(state);
    char *path = ft_path_join(dir, "state.db");
    sqlite3 *db;
    CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
    CHECK_INT(sqlite3_exec(db, "PRAGMA user_version = 2", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    CHECK_INT(ft_state_open(dir, &state), -1);
    char *expected = ft_xasprintf("the state database %s has schema version 2, newer than this ftpipe knows (1): "
                                  "use the newer ftpipe, or move the file aside to start a fresh history",
                                  path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(path);
    free(dir);

    dir = new_state_dir("damaged");
    path = ft_path_join(dir, "state.db");
    const char garbage[] = "this is not a database, but it is long enough to look like a header to sqlite";
    CHECK_INT(ft_write_file_atomic(path, garbage, sizeof garbage), 0);
    CHECK_INT(ft_state_open(dir, &state), -1);
    expected = ft_xasprintf("cannot set the journal mode in the state database %s: file is not a database (the "
                            "file is damaged: move it aside to start a fresh history; the cache is kept)",
                            path);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(path);
    free(dir);

    dir = ft_path_join(temporary_dir, "no-such-folder");
    CHECK_INT(ft_state_open(dir, &state), -1);
    expected = ft_xasprintf("cannot open the state database %s/state.db: unable to open database file", dir);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(dir);
}

int main(void)
{
    temporary_dir = fixture_temporary_dir("state");
    if (!temporary_dir)
        return 1;
    RUN(stat_cache_hits_only_on_equal_stat);
    RUN(stat_cache_holds_many_files);
    RUN(runs_round_trip);
    RUN(targets_round_trip);
    RUN(metrics_round_trip);
    RUN(measured_rates_round_trip_newest_first_and_apart_from_runs);
    RUN(refuses_newer_and_damaged_databases);
    ft_remove_tree(temporary_dir);
    return check_done();
}
