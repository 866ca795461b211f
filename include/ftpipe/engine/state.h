/* state: the workspace's database, .ftpipe/state.db (SQLite, WAL).
 *
 * Tables: files (the stat cache: path, device, inode, size, mtime_ns -> hash),
 * runs (key, target, kind, parameters, inputs, start, end, status, exit code,
 * output hash, log path), targets (what each workspace target currently holds),
 * metrics (run, step, name, value).
 *
 * Only the engine process writes it; stages report through the engine. */
#ifndef FTPIPE_STATE_H
#define FTPIPE_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "ftpipe/base/hash.h"
#include "ftpipe/engine/hash_cache.h"

typedef struct ft_state ft_state;

typedef enum { FT_RUN_RUNNING, FT_RUN_DONE, FT_RUN_FAILED, FT_RUN_CANCELLED, FT_RUN_CACHED } ft_run_status;

/* Text fields other than target and kind may be NULL (stored and read back as NULL). */
typedef struct {
    int64_t id;
    char key[FT_HASH_HEX_LENGTH + 1];
    char *target;
    char *kind;
    int kind_version;
    char *params_json;   /* {"name": "canonical value", ...}: key parameters only */
    char *inputs_json;   /* [{"path": "...", "hash": "..."}, ...] in input order */
    int64_t start_ms;
    int64_t end_ms;      /* 0 while running */
    ft_run_status status;
    int exit_code;
    char output_hash[FT_HASH_HEX_LENGTH + 1]; /* "" unless done */
    char *log_path;
} ft_run_record;

typedef struct {
    char key[FT_HASH_HEX_LENGTH + 1];
    char output_hash[FT_HASH_HEX_LENGTH + 1];
    ft_file_stat stat;   /* of the workspace path right after it was materialized */
} ft_target_record;

/* Opens (creating) <state_dir>/state.db; cheap: nothing is read until asked. */
int ft_state_open(const char *state_dir, ft_state **out);
void ft_state_close(ft_state *state);

/* Groups writes into one transaction; nested calls are counted, and the
 * outermost commit writes. A failed commit rolls the transaction back. */
int ft_state_begin(ft_state *state);
int ft_state_commit(ft_state *state);

/* The stat cache. lookup returns 1 and the hash when path's recorded stat equals
 * `stat`, 0 when unknown or changed. The whole table is read into memory at the
 * first lookup (one query); stores update it. Paths are used as given: callers
 * pass absolute ones. */
int ft_state_file_lookup(ft_state *state, const char *path, const ft_file_stat *stat, ft_hash *hash);
int ft_state_file_store(ft_state *state, const char *path, const ft_file_stat *stat, ft_hash hash);
/* The stat cache as a hash_cache, for ft_manifest_build (stores in one transaction). */
ft_hash_cache ft_state_hash_cache(ft_state *state);

/* Runs. start inserts a row with run's fields (its id, end_ms, status,
 * exit_code and output_hash ignored: RUNNING) and returns the new id in *id. */
int ft_state_run_start(ft_state *state, const ft_run_record *run, int64_t *id);
/* Sets end_ms to now, status, exit_code and output_hash (NULL: ""); log_path
 * when not NULL. */
int ft_state_run_finish(ft_state *state, int64_t id, ft_run_status status, int exit_code,
                        const char *output_hash, const char *log_path);
/* The newest run of target with the given status (any status when status < 0).
 * Returns 1 found, 0 none. Free with ft_run_record_free. */
int ft_state_last_run(ft_state *state, const char *target, int status, ft_run_record *out);
/* The newest run of every target, in one query, as `ftpipe status` shows it: id,
 * target, start, end and status only (the rest empty, its JSON not read). Free
 * each with ft_run_record_free, then *out. */
int ft_state_last_runs(ft_state *state, ft_run_record **out, size_t *count);
/* The newest run with the given key and status (the run that made a cached
 * result, whichever target it was built for). Returns 1 found, 0 none. */
int ft_state_run_of_key(ft_state *state, const char *key, ft_run_status status, ft_run_record *out);
void ft_run_record_free(ft_run_record *run);
/* Visitors below return 0 to go on; anything else stops the walk and is returned.
 * A visitor must not start the same walk again from inside. */

/* Every run ever recorded, newest first, calling visit for each; for `ftpipe status`. */
int ft_state_each_run(ft_state *state, int (*visit)(const ft_run_record *run, void *context), void *context);

/* Targets. get returns 1 found, 0 none. */
int ft_state_target_get(ft_state *state, const char *target, ft_target_record *out);
int ft_state_target_set(ft_state *state, const char *target, const ft_target_record *record);
int ft_state_target_delete(ft_state *state, const char *target);

/* Metrics. A second value for the same (run, step, name) replaces the first. */
int ft_state_metric_add(ft_state *state, int64_t run_id, int64_t step, const char *name, double value);
/* Calls visit for each metric of a run in (step, name) order. */
int ft_state_each_metric(ft_state *state, int64_t run_id,
                         int (*visit)(int64_t step, const char *name, double value, void *context),
                         void *context);

/* Measured throughputs: `ftpipe estimate --measure` times a few real steps of a
 * stage in a scratch folder and throws them away; only the rates it measured are
 * kept, in their own table (made at the first), so that no run, target or cache
 * entry comes of a measurement. */
typedef struct {
    int64_t time_ms;          /* when it was measured */
    char target[256];         /* the stage measured */
    double value;
} ft_measured_rate;

int ft_state_measured_add(ft_state *state, const char *target, const char *kind, const char *name, double value);
/* The newest rate `name` measured for a stage of `kind`: 1 found, 0 none. */
int ft_state_measured_latest(ft_state *state, const char *kind, const char *name, ft_measured_rate *out);

/* Every target record, in target order (gc keeps the keys they hold). */
int ft_state_each_target(ft_state *state, int (*visit)(const char *target, const ft_target_record *record,
                                                       void *context), void *context);

/* For tests: after n_writes more row writes, one fails as on a full disk
 * ((size_t)-1: none does). */
void ft_state_fail_one_write_after(size_t n_writes);

#endif
