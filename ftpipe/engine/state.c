/* state: the workspace database, with the stat cache held in memory. */
#include "ftpipe/engine/state.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/statvfs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ftpipe/base/clock.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strmap.h"

#define SCHEMA_VERSION 1

static const char schema_sql[] =
    "CREATE TABLE files (path TEXT PRIMARY KEY, device INTEGER NOT NULL, inode INTEGER NOT NULL,"
    " size_bytes INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, hash TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE runs (id INTEGER PRIMARY KEY, key TEXT NOT NULL, target TEXT NOT NULL, kind TEXT NOT NULL,"
    " kind_version INTEGER NOT NULL, params_json TEXT, inputs_json TEXT, start_ms INTEGER NOT NULL,"
    " end_ms INTEGER NOT NULL, status TEXT NOT NULL, exit_code INTEGER NOT NULL, output_hash TEXT NOT NULL,"
    " log_path TEXT);"
    "CREATE INDEX runs_by_target ON runs (target, id);"
    "CREATE TABLE targets (target TEXT PRIMARY KEY, key TEXT NOT NULL, output_hash TEXT NOT NULL,"
    " device INTEGER NOT NULL, inode INTEGER NOT NULL, size_bytes INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE metrics (run_id INTEGER NOT NULL, step INTEGER NOT NULL, name TEXT NOT NULL,"
    " value REAL NOT NULL, PRIMARY KEY (run_id, step, name)) WITHOUT ROWID;";

#define RUN_COLUMNS \
    "id, key, target, kind, kind_version, params_json, inputs_json, start_ms, end_ms, status, exit_code, " \
    "output_hash, log_path"

/* Each statement is prepared on first use and kept for the life of the state. */
typedef enum {
    SQL_FILES_ALL,
    SQL_FILE_STORE,
    SQL_RUN_INSERT,
    SQL_RUN_FINISH,
    SQL_RUN_LAST,
    SQL_RUN_OF_KEY,
    SQL_RUN_LAST_EACH,
    SQL_RUN_ALL,
    SQL_TARGET_SET,
    SQL_TARGET_DELETE,
    SQL_TARGET_ALL,
    SQL_METRIC_ADD,
    SQL_METRIC_ALL,
    SQL_COUNT
} statement_id;

static const char *const statement_sql[SQL_COUNT] = {
    [SQL_FILES_ALL] = "SELECT path, device, inode, size_bytes, mtime_ns, hash FROM files",
    [SQL_FILE_STORE] = "INSERT OR REPLACE INTO files VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [SQL_RUN_INSERT] = "INSERT INTO runs (key, target, kind, kind_version, params_json, inputs_json, start_ms,"
                       " end_ms, status, exit_code, output_hash, log_path)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 'running', 0, '', ?8)",
    [SQL_RUN_FINISH] = "UPDATE runs SET end_ms = ?2, status = ?3, exit_code = ?4, output_hash = ?5,"
                       " log_path = COALESCE(?6, log_path) WHERE id = ?1",
    [SQL_RUN_LAST] = "SELECT " RUN_COLUMNS " FROM runs WHERE target = ?1 AND (?2 IS NULL OR status = ?2)"
                     " ORDER BY id DESC LIMIT 1",
    [SQL_RUN_OF_KEY] = "SELECT " RUN_COLUMNS " FROM runs WHERE key = ?1 AND status = ?2 ORDER BY id DESC LIMIT 1",
    [SQL_RUN_ALL] = "SELECT " RUN_COLUMNS " FROM runs ORDER BY id DESC",
    [SQL_RUN_LAST_EACH] = "SELECT id, target, start_ms, end_ms, status FROM runs"
                          " WHERE id IN (SELECT MAX(id) FROM runs GROUP BY target)",
    [SQL_TARGET_SET] = "INSERT OR REPLACE INTO targets VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SQL_TARGET_DELETE] = "DELETE FROM targets WHERE target = ?1",
    [SQL_TARGET_ALL] = "SELECT target, key, output_hash, device, inode, size_bytes, mtime_ns FROM targets"
                       " ORDER BY target",
    [SQL_METRIC_ADD] = "INSERT OR REPLACE INTO metrics VALUES (?1, ?2, ?3, ?4)",
    [SQL_METRIC_ALL] = "SELECT step, name, value FROM metrics WHERE run_id = ?1 ORDER BY step, name",
};

static const char *const status_names[] = {
    [FT_RUN_RUNNING] = "running", [FT_RUN_DONE] = "done",     [FT_RUN_FAILED] = "failed",
    [FT_RUN_CANCELLED] = "cancelled", [FT_RUN_CACHED] = "cached",
};
#define N_STATUSES (sizeof status_names / sizeof status_names[0])

/* The files table in memory: open addressing, linear probing, at most half full. */
typedef struct {
    char *path; /* NULL: empty slot */
    ft_file_stat stat;
    ft_hash hash;
} file_slot;

typedef struct {
    file_slot *slots;
    size_t capacity; /* a power of two */
    size_t count;
    bool loaded;
} file_map;

/* Room for the records of a run that ends on a full disk, kept inside SQLite's own
 * files where no other writer can take it: free pages in state.db, which new rows
 * take before the file grows, and a WAL file that keeps its size between runs
 * (persistent WAL) and is written again from its start after each checkpoint.
 * Topped up at open while the disk has room; a checkpoint every 128 pages (the
 * wal_autocheckpoint below, 512 KiB) keeps the WAL's live part well inside it. */
#define RESERVE_BYTES (2u << 20)
/* The targets table in memory, read in one query at the first lookup: a no-op
 * asks about every target. */
typedef struct {
    ft_strmap index; /* target -> slot */
    char **names;
    ft_target_record *records;
    bool *present;   /* false once deleted */
    size_t count;
    size_t capacity;
    bool loaded;
} target_map;

struct ft_state {
    sqlite3 *db;
    char *path;
    int transaction_depth;
    sqlite3_stmt *statements[SQL_COUNT];
    file_map files;
    target_map targets;
};

static int database_error(ft_state *state, const char *what)
{
    int code = sqlite3_errcode(state->db);
    bool damaged = code == SQLITE_NOTADB || code == SQLITE_CORRUPT;
    return ft_error("cannot %s in the state database %s: %s%s", what, state->path, sqlite3_errmsg(state->db),
                    damaged ? " (the file is damaged: move it aside to start a fresh history; the cache is kept)"
                            : "");
}

/* After SQLITE_FULL: a checkpoint lets the next write start the WAL again from
 * its beginning, inside the space the file already has; true when worth a retry. */
static bool make_room(ft_state *state, int rc)
{
    if ((rc & 0xff) != SQLITE_FULL || sqlite3_get_autocommit(state->db) == 0)
        return false;
    return sqlite3_wal_checkpoint_v2(state->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL) == SQLITE_OK;
}

static int execute(ft_state *state, const char *sql, const char *what)
{
    int rc = sqlite3_exec(state->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK && make_room(state, sqlite3_errcode(state->db)))
        rc = sqlite3_exec(state->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : database_error(state, what);
}

static sqlite3_stmt *statement(ft_state *state, statement_id id)
{
    sqlite3_stmt **slot = &state->statements[id];
    if (*slot) {
        sqlite3_reset(*slot);
        sqlite3_clear_bindings(*slot);
        return *slot;
    }
    if (sqlite3_prepare_v3(state->db, statement_sql[id], -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) != SQLITE_OK) {
        database_error(state, "prepare a query");
        *slot = NULL;
    }
    return *slot;
}

/* Steps a statement that returns no rows. */
static size_t writes_before_failure = SIZE_MAX;

void ft_state_fail_one_write_after(size_t n_writes) { writes_before_failure = n_writes; }

static int step_done(ft_state *state, sqlite3_stmt *stmt, const char *what)
{
    if (writes_before_failure != SIZE_MAX && writes_before_failure-- == 0) {
        writes_before_failure = SIZE_MAX;
        sqlite3_reset(stmt);
        return ft_error("cannot %s in the state database %s: database or disk is full (injected)", what,
                        state->path);
    }
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE && make_room(state, rc)) {
        rc = sqlite3_step(stmt);
        sqlite3_reset(stmt);
    }
    return rc == SQLITE_DONE ? 0 : database_error(state, what);
}

static void bind_text_or_null(sqlite3_stmt *stmt, int index, const char *text)
{
    if (text)
        sqlite3_bind_text(stmt, index, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, index);
}

static char *column_text_or_null(sqlite3_stmt *stmt, int column)
{
    const unsigned char *text = sqlite3_column_text(stmt, column);
    return text ? ft_xstrdup((const char *)text) : NULL;
}

static void copy_hex(char out[FT_HASH_HEX_LENGTH + 1], sqlite3_stmt *stmt, int column)
{
    const unsigned char *text = sqlite3_column_text(stmt, column);
    size_t length = text ? (size_t)sqlite3_column_bytes(stmt, column) : 0;
    if (length > FT_HASH_HEX_LENGTH)
        length = FT_HASH_HEX_LENGTH;
    if (length)
        memcpy(out, text, length);
    out[length] = '\0';
}

/* --- opening --- */

static int schema_version(ft_state *state, int *version)
{
    sqlite3_stmt *stmt;
    if (sqlite3_prepare_v2(state->db, "PRAGMA user_version", -1, &stmt, NULL) != SQLITE_OK)
        return database_error(state, "read the schema version");
    int rc = sqlite3_step(stmt);
    *version = rc == SQLITE_ROW ? sqlite3_column_int(stmt, 0) : 0;
    sqlite3_finalize(stmt);
    return rc == SQLITE_ROW ? 0 : database_error(state, "read the schema version");
}

/* Creates the tables of a new database; inside a write transaction, so two
 * processes opening a new workspace at once cannot both create them. */
static int ensure_schema(ft_state *state)
{
    int version;
    if (schema_version(state, &version) != 0)
        return -1;
    if (version == 0) {
        if (execute(state, "BEGIN IMMEDIATE", "start a transaction") != 0)
            return -1;
        int result = schema_version(state, &version);
        if (result == 0 && version == 0) {
            result = execute(state, schema_sql, "create the tables");
            if (result == 0)
                result = execute(state, "PRAGMA user_version = 1", "set the schema version");
        }
        if (result == 0)
            return execute(state, "COMMIT", "commit the new tables");
        sqlite3_exec(state->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (version > SCHEMA_VERSION)
        return ft_error("the state database %s has schema version %d, newer than this ftpipe knows (%d): use "
                        "the newer ftpipe, or move the file aside to start a fresh history",
                        state->path, version, SCHEMA_VERSION);
    return 0;
}

static int64_t pragma_number(ft_state *state, const char *sql)
{
    sqlite3_stmt *stmt;
    int64_t value = -1;
    if (sqlite3_prepare_v2(state->db, sql, -1, &stmt, NULL) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW)
        value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
}

/* Tops the reserve up (see RESERVE_BYTES): a blob written and dropped again grows
 * the WAL to the reserve's size and leaves its pages free in state.db. Best effort:
 * on a disk without room the database works as before. */
static void reserve_space(ft_state *state)
{
    char *legacy = ft_xasprintf("%s.reserve", state->path); /* the reserve of earlier versions */
    unlink(legacy);
    free(legacy);
    char *wal_path = ft_xasprintf("%s-wal", state->path);
    struct stat wal;
    int64_t wal_bytes = stat(wal_path, &wal) == 0 ? (int64_t)wal.st_size : 0;
    free(wal_path);
    int64_t free_bytes = pragma_number(state, "PRAGMA freelist_count") * pragma_number(state, "PRAGMA page_size");
    if (wal_bytes >= RESERVE_BYTES && free_bytes >= RESERVE_BYTES / 2)
        return;
    struct statvfs file_system;
    if (statvfs(state->path, &file_system) != 0 ||
        (uint64_t)file_system.f_bavail * file_system.f_frsize < 3 * (uint64_t)RESERVE_BYTES)
        return;
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS reserve_fill (space BLOB);"
             " INSERT INTO reserve_fill VALUES (zeroblob(%u)); COMMIT;"
             " BEGIN IMMEDIATE; DROP TABLE reserve_fill; COMMIT",
             RESERVE_BYTES);
    if (sqlite3_exec(state->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        sqlite3_exec(state->db, "ROLLBACK", NULL, NULL, NULL);
}

int ft_state_open(const char *state_dir, ft_state **out)
{
    ft_state *state = ft_xcalloc(1, sizeof *state);
    state->path = ft_path_join(state_dir, "state.db");
    int result = 0;
    if (sqlite3_open_v2(state->path, &state->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        result = ft_error("cannot open the state database %s: %s", state->path, sqlite3_errmsg(state->db));
    if (result == 0)
        result = sqlite3_busy_timeout(state->db, 10000) == SQLITE_OK ? 0 : database_error(state, "set a timeout");
    if (result == 0)
        result = execute(state, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 128",
                         "set the journal mode");
    int persist_wal = 1;
    if (result == 0)
        sqlite3_file_control(state->db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
    if (result == 0)
        result = ensure_schema(state);
    if (result == 0)
        reserve_space(state);
    if (result != 0) {
        ft_state_close(state);
        return -1;
    }
    *out = state;
    return 0;
}

static void file_map_free(file_map *map)
{
    for (size_t i = 0; i < map->capacity; i++)
        free(map->slots[i].path);
    free(map->slots);
    memset(map, 0, sizeof *map);
}

void ft_state_close(ft_state *state)
{
    if (!state)
        return;
    for (int i = 0; i < SQL_COUNT; i++)
        sqlite3_finalize(state->statements[i]);
    sqlite3_close(state->db);
    file_map_free(&state->files);
    for (size_t i = 0; i < state->targets.count; i++)
        free(state->targets.names[i]);
    free(state->targets.names);
    free(state->targets.records);
    free(state->targets.present);
    ft_strmap_free(&state->targets.index);
    free(state->path);
    free(state);
}

/* --- transactions --- */

int ft_state_begin(ft_state *state)
{
    if (state->transaction_depth == 0 && execute(state, "BEGIN IMMEDIATE", "start a transaction") != 0)
        return -1;
    state->transaction_depth++;
    return 0;
}

int ft_state_commit(ft_state *state)
{
    if (state->transaction_depth == 0)
        return ft_error("ft_state_commit without ft_state_begin on %s", state->path);
    if (--state->transaction_depth > 0)
        return 0;
    if (execute(state, "COMMIT", "commit") == 0)
        return 0;
    sqlite3_exec(state->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* --- the stat cache --- */

static file_slot *file_map_find(file_map *map, const char *path)
{
    size_t mask = map->capacity - 1;
    for (size_t i = (size_t)ft_hash_bytes(path, strlen(path)).low & mask;; i = (i + 1) & mask)
        if (!map->slots[i].path || strcmp(map->slots[i].path, path) == 0)
            return &map->slots[i];
}

static void file_map_put(file_map *map, const char *path, const ft_file_stat *stat, ft_hash hash)
{
    if (2 * (map->count + 1) > map->capacity) {
        file_map bigger = {.capacity = map->capacity ? 2 * map->capacity : 1024, .loaded = map->loaded};
        bigger.slots = ft_xcalloc(bigger.capacity, sizeof *bigger.slots);
        for (size_t i = 0; i < map->capacity; i++)
            if (map->slots[i].path)
                *file_map_find(&bigger, map->slots[i].path) = map->slots[i];
        bigger.count = map->count;
        free(map->slots);
        *map = bigger;
    }
    file_slot *slot = file_map_find(map, path);
    if (!slot->path) {
        slot->path = ft_xstrdup(path);
        map->count++;
    }
    slot->stat = *stat;
    slot->hash = hash;
}

static int load_files(ft_state *state)
{
    sqlite3_stmt *stmt = statement(state, SQL_FILES_ALL);
    if (!stmt)
        return -1;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        ft_file_stat stat = {
            .device = (uint64_t)sqlite3_column_int64(stmt, 1),
            .inode = (uint64_t)sqlite3_column_int64(stmt, 2),
            .size_bytes = (uint64_t)sqlite3_column_int64(stmt, 3),
            .mtime_ns = sqlite3_column_int64(stmt, 4),
        };
        ft_hash hash;
        const char *hex = (const char *)sqlite3_column_text(stmt, 5);
        /* A row that does not parse is simply not trusted: the file is hashed again. */
        if (hex && ft_hash_from_hex(hex, &hash) == 0)
            file_map_put(&state->files, (const char *)sqlite3_column_text(stmt, 0), &stat, hash);
    }
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE)
        return database_error(state, "read the file hashes");
    state->files.loaded = true;
    return 0;
}

int ft_state_file_lookup(ft_state *state, const char *path, const ft_file_stat *stat, ft_hash *hash)
{
    if (!state->files.loaded && load_files(state) != 0)
        return -1;
    if (state->files.count == 0)
        return 0;
    const file_slot *slot = file_map_find(&state->files, path);
    if (!slot->path || slot->stat.device != stat->device || slot->stat.inode != stat->inode ||
        slot->stat.size_bytes != stat->size_bytes || slot->stat.mtime_ns != stat->mtime_ns)
        return 0;
    *hash = slot->hash;
    return 1;
}

int ft_state_file_store(ft_state *state, const char *path, const ft_file_stat *stat, ft_hash hash)
{
    sqlite3_stmt *stmt = statement(state, SQL_FILE_STORE);
    if (!stmt)
        return -1;
    char hex[FT_HASH_HEX_LENGTH + 1];
    ft_hash_to_hex(hash, hex);
    sqlite3_bind_text(stmt, 1, path, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)stat->device);
    sqlite3_bind_int64(stmt, 3, (sqlite3_int64)stat->inode);
    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)stat->size_bytes);
    sqlite3_bind_int64(stmt, 5, stat->mtime_ns);
    sqlite3_bind_text(stmt, 6, hex, -1, SQLITE_TRANSIENT);
    if (step_done(state, stmt, "record a file hash") != 0)
        return -1;
    if (state->files.loaded)
        file_map_put(&state->files, path, stat, hash);
    return 0;
}

static int hash_cache_lookup(void *context, const char *path, const ft_file_stat *stat, ft_hash *hash)
{
    return ft_state_file_lookup(context, path, stat, hash);
}

static int hash_cache_store(void *context, const ft_hashed_file *files, size_t n_files)
{
    ft_state *state = context;
    if (ft_state_begin(state) != 0)
        return -1;
    int result = 0;
    for (size_t i = 0; i < n_files && result == 0; i++)
        result = ft_state_file_store(state, files[i].path, &files[i].stat, files[i].hash);
    int committed = ft_state_commit(state);
    return result != 0 ? result : committed;
}

ft_hash_cache ft_state_hash_cache(ft_state *state)
{
    return (ft_hash_cache){hash_cache_lookup, hash_cache_store, state};
}

/* --- runs --- */

int ft_state_run_start(ft_state *state, const ft_run_record *run, int64_t *id)
{
    if (!run->target || !run->kind)
        return ft_error("a run needs a target and a kind (state database %s)", state->path);
    sqlite3_stmt *stmt = statement(state, SQL_RUN_INSERT);
    if (!stmt)
        return -1;
    sqlite3_bind_text(stmt, 1, run->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, run->target, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, run->kind, -1, SQLITE_STATIC);
    sqlite3_bind_int(stmt, 4, run->kind_version);
    bind_text_or_null(stmt, 5, run->params_json);
    bind_text_or_null(stmt, 6, run->inputs_json);
    sqlite3_bind_int64(stmt, 7, run->start_ms);
    bind_text_or_null(stmt, 8, run->log_path);
    if (step_done(state, stmt, "record a run") != 0)
        return -1;
    *id = sqlite3_last_insert_rowid(state->db);
    return 0;
}

int ft_state_run_finish(ft_state *state, int64_t id, ft_run_status status, int exit_code,
                        const char *output_hash, const char *log_path)
{
    if ((unsigned)status >= N_STATUSES)
        return ft_error("run %lld: unknown status %d", (long long)id, (int)status);
    sqlite3_stmt *stmt = statement(state, SQL_RUN_FINISH);
    if (!stmt)
        return -1;
    sqlite3_bind_int64(stmt, 1, id);
    sqlite3_bind_int64(stmt, 2, ft_wall_ms());
    sqlite3_bind_text(stmt, 3, status_names[status], -1, SQLITE_STATIC);
    sqlite3_bind_int(stmt, 4, exit_code);
    sqlite3_bind_text(stmt, 5, output_hash ? output_hash : "", -1, SQLITE_STATIC);
    bind_text_or_null(stmt, 6, log_path);
    if (step_done(state, stmt, "record the end of a run") != 0)
        return -1;
    if (sqlite3_changes(state->db) != 1)
        return ft_error("no run %lld in the state database %s", (long long)id, state->path);
    return 0;
}

static ft_run_status status_from_name(const char *name)
{
    for (size_t i = 0; i < N_STATUSES; i++)
        if (name && strcmp(name, status_names[i]) == 0)
            return (ft_run_status)i;
    return FT_RUN_FAILED; /* unreadable: never trusted as done */
}

/* Fills run from a row of RUN_COLUMNS; the strings are fresh copies. */
static void read_run(sqlite3_stmt *stmt, ft_run_record *run)
{
    memset(run, 0, sizeof *run);
    run->id = sqlite3_column_int64(stmt, 0);
    copy_hex(run->key, stmt, 1);
    run->target = column_text_or_null(stmt, 2);
    run->kind = column_text_or_null(stmt, 3);
    run->kind_version = sqlite3_column_int(stmt, 4);
    run->params_json = column_text_or_null(stmt, 5);
    run->inputs_json = column_text_or_null(stmt, 6);
    run->start_ms = sqlite3_column_int64(stmt, 7);
    run->end_ms = sqlite3_column_int64(stmt, 8);
    run->status = status_from_name((const char *)sqlite3_column_text(stmt, 9));
    run->exit_code = sqlite3_column_int(stmt, 10);
    copy_hex(run->output_hash, stmt, 11);
    run->log_path = column_text_or_null(stmt, 12);
}

int ft_state_last_run(ft_state *state, const char *target, int status, ft_run_record *out)
{
    if (status >= (int)N_STATUSES)
        return ft_error("unknown run status %d", status);
    sqlite3_stmt *stmt = statement(state, SQL_RUN_LAST);
    if (!stmt)
        return -1;
    sqlite3_bind_text(stmt, 1, target, -1, SQLITE_STATIC);
    bind_text_or_null(stmt, 2, status >= 0 ? status_names[status] : NULL);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        read_run(stmt, out);
    sqlite3_reset(stmt);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : database_error(state, "read the last run");
}

int ft_state_last_runs(ft_state *state, ft_run_record **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    sqlite3_stmt *stmt = statement(state, SQL_RUN_LAST_EACH);
    if (!stmt)
        return -1;
    size_t capacity = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        ft_grow((void **)out, &capacity, *count + 1, sizeof **out);
        ft_run_record *run = &(*out)[(*count)++];
        memset(run, 0, sizeof *run);
        run->id = sqlite3_column_int64(stmt, 0);
        run->target = column_text_or_null(stmt, 1);
        run->start_ms = sqlite3_column_int64(stmt, 2);
        run->end_ms = sqlite3_column_int64(stmt, 3);
        run->status = status_from_name((const char *)sqlite3_column_text(stmt, 4));
    }
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE ? 0 : database_error(state, "read the last runs");
}

int ft_state_run_of_key(ft_state *state, const char *key, ft_run_status status, ft_run_record *out)
{
    sqlite3_stmt *stmt = statement(state, SQL_RUN_OF_KEY);
    if (!stmt)
        return -1;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, status_names[status], -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        read_run(stmt, out);
    sqlite3_reset(stmt);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : database_error(state, "read the run of a key");
}

void ft_run_record_free(ft_run_record *run)
{
    free(run->target);
    free(run->kind);
    free(run->params_json);
    free(run->inputs_json);
    free(run->log_path);
    run->target = run->kind = run->params_json = run->inputs_json = run->log_path = NULL;
}

int ft_state_each_run(ft_state *state, int (*visit)(const ft_run_record *run, void *context), void *context)
{
    sqlite3_stmt *stmt = statement(state, SQL_RUN_ALL);
    if (!stmt)
        return -1;
    int rc, stop = 0;
    while (stop == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        ft_run_record run;
        read_run(stmt, &run);
        stop = visit(&run, context);
        ft_run_record_free(&run);
    }
    sqlite3_reset(stmt);
    if (stop != 0)
        return stop;
    return rc == SQLITE_DONE ? 0 : database_error(state, "read the runs");
}

/* --- targets --- */

static void read_target(sqlite3_stmt *stmt, int first_column, ft_target_record *out)
{
    copy_hex(out->key, stmt, first_column);
    copy_hex(out->output_hash, stmt, first_column + 1);
    out->stat.device = (uint64_t)sqlite3_column_int64(stmt, first_column + 2);
    out->stat.inode = (uint64_t)sqlite3_column_int64(stmt, first_column + 3);
    out->stat.size_bytes = (uint64_t)sqlite3_column_int64(stmt, first_column + 4);
    out->stat.mtime_ns = sqlite3_column_int64(stmt, first_column + 5);
}

static void target_map_put(target_map *map, const char *target, const ft_target_record *record)
{
    size_t *slot = ft_strmap_get(&map->index, target);
    if (slot) {
        map->records[*slot] = *record;
        map->present[*slot] = true;
        return;
    }
    if (map->count == map->capacity) {
        map->capacity = map->capacity ? 2 * map->capacity : 64;
        map->names = ft_xrealloc(map->names, map->capacity * sizeof *map->names);
        map->records = ft_xrealloc(map->records, map->capacity * sizeof *map->records);
        map->present = ft_xrealloc(map->present, map->capacity * sizeof *map->present);
    }
    map->names[map->count] = ft_xstrdup(target);
    map->records[map->count] = *record;
    map->present[map->count] = true;
    ft_strmap_put(&map->index, map->names[map->count], map->count);
    map->count++;
}

static int load_targets(ft_state *state)
{
    sqlite3_stmt *stmt = statement(state, SQL_TARGET_ALL);
    if (!stmt)
        return -1;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        ft_target_record record;
        read_target(stmt, 1, &record);
        target_map_put(&state->targets, (const char *)sqlite3_column_text(stmt, 0), &record);
    }
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE)
        return database_error(state, "read the targets");
    state->targets.loaded = true;
    return 0;
}

int ft_state_target_get(ft_state *state, const char *target, ft_target_record *out)
{
    if (!state->targets.loaded && load_targets(state) != 0)
        return -1;
    size_t *slot = ft_strmap_get(&state->targets.index, target);
    if (!slot || !state->targets.present[*slot])
        return 0;
    *out = state->targets.records[*slot];
    return 1;
}

int ft_state_target_set(ft_state *state, const char *target, const ft_target_record *record)
{
    sqlite3_stmt *stmt = statement(state, SQL_TARGET_SET);
    if (!stmt)
        return -1;
    sqlite3_bind_text(stmt, 1, target, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, record->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, record->output_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 4, (sqlite3_int64)record->stat.device);
    sqlite3_bind_int64(stmt, 5, (sqlite3_int64)record->stat.inode);
    sqlite3_bind_int64(stmt, 6, (sqlite3_int64)record->stat.size_bytes);
    sqlite3_bind_int64(stmt, 7, record->stat.mtime_ns);
    int result = step_done(state, stmt, "record a target");
    if (result == 0 && state->targets.loaded)
        target_map_put(&state->targets, target, record);
    return result;
}

int ft_state_target_delete(ft_state *state, const char *target)
{
    sqlite3_stmt *stmt = statement(state, SQL_TARGET_DELETE);
    if (!stmt)
        return -1;
    sqlite3_bind_text(stmt, 1, target, -1, SQLITE_STATIC);
    int result = step_done(state, stmt, "forget a target");
    size_t *slot = state->targets.loaded ? ft_strmap_get(&state->targets.index, target) : NULL;
    if (result == 0 && slot)
        state->targets.present[*slot] = false;
    return result;
}

int ft_state_each_target(ft_state *state, int (*visit)(const char *target, const ft_target_record *record,
                                                       void *context), void *context)
{
    sqlite3_stmt *stmt = statement(state, SQL_TARGET_ALL);
    if (!stmt)
        return -1;
    int rc, stop = 0;
    while (stop == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        ft_target_record record;
        read_target(stmt, 1, &record);
        char *target = column_text_or_null(stmt, 0);
        stop = visit(target, &record, context);
        free(target);
    }
    sqlite3_reset(stmt);
    if (stop != 0)
        return stop;
    return rc == SQLITE_DONE ? 0 : database_error(state, "read the targets");
}

/* --- metrics --- */

int ft_state_metric_add(ft_state *state, int64_t run_id, int64_t step, const char *name, double value)
{
    sqlite3_stmt *stmt = statement(state, SQL_METRIC_ADD);
    if (!stmt)
        return -1;
    sqlite3_bind_int64(stmt, 1, run_id);
    sqlite3_bind_int64(stmt, 2, step);
    sqlite3_bind_text(stmt, 3, name, -1, SQLITE_STATIC);
    sqlite3_bind_double(stmt, 4, value);
    return step_done(state, stmt, "record a metric");
}

int ft_state_each_metric(ft_state *state, int64_t run_id,
                         int (*visit)(int64_t step, const char *name, double value, void *context),
                         void *context)
{
    sqlite3_stmt *stmt = statement(state, SQL_METRIC_ALL);
    if (!stmt)
        return -1;
    sqlite3_bind_int64(stmt, 1, run_id);
    int rc, stop = 0;
    while (stop == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        char *name = column_text_or_null(stmt, 1);
        stop = visit(sqlite3_column_int64(stmt, 0), name, sqlite3_column_double(stmt, 2), context);
        free(name);
    }
    sqlite3_reset(stmt);
    if (stop != 0)
        return stop;
    return rc == SQLITE_DONE ? 0 : database_error(state, "read the metrics");
}

/* --- measured rates --- */

int ft_state_measured_add(ft_state *state, const char *target, const char *kind, const char *name, double value)
{
    if (execute(state, "CREATE TABLE IF NOT EXISTS measured (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,"
                       " target TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL)",
                "create the table of measured rates") != 0)
        return -1;
    sqlite3_stmt *stmt;
    if (sqlite3_prepare_v2(state->db, "INSERT INTO measured (time_ms, target, kind, name, value) VALUES (?1, ?2, ?3, ?4, ?5)",
                           -1, &stmt, NULL) != SQLITE_OK)
        return database_error(state, "record a measured rate");
    sqlite3_bind_int64(stmt, 1, ft_wall_ms());
    sqlite3_bind_text(stmt, 2, target, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 4, name, -1, SQLITE_STATIC);
    sqlite3_bind_double(stmt, 5, value);
    int result = step_done(state, stmt, "record a measured rate");
    sqlite3_finalize(stmt);
    return result;
}

int ft_state_measured_latest(ft_state *state, const char *kind, const char *name, ft_measured_rate *out)
{
    sqlite3_stmt *stmt;
    /* A workspace never measured has no table: nothing measured, not an error. */
    if (sqlite3_prepare_v2(state->db, "SELECT time_ms, target, value FROM measured WHERE kind = ?1 AND name = ?2"
                                      " ORDER BY id DESC LIMIT 1",
                           -1, &stmt, NULL) != SQLITE_OK)
        return strstr(sqlite3_errmsg(state->db), "no such table") ? 0 : database_error(state, "read measured rates");
    sqlite3_bind_text(stmt, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        out->time_ms = sqlite3_column_int64(stmt, 0);
        const unsigned char *target = sqlite3_column_text(stmt, 1);
        snprintf(out->target, sizeof out->target, "%s", target ? (const char *)target : "");
        out->value = sqlite3_column_double(stmt, 2);
    }
    sqlite3_finalize(stmt);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE ? 0 : database_error(state, "read measured rates");
}
