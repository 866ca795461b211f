/* up_to_date: the record a complete build leaves of everything its plan looked
 * at, so that the next run with nothing to do is answered from stat calls alone,
 * without parsing the pipeline, building the graph or opening the state database
 * (as ninja answers a no-op from its logs).
 *
 * .ftpipe/up-to-date holds the question it answers (the program that plans,
 * ftpipe-full: invocation->program_path, else this process's own; the
 * pipeline file's path, the targets and VAR=value words, the environment), the
 * content hash and stat of every pipeline file read (includes, parameters files,
 * the lock file; the stat answers while unchanged, the content once it differs),
 * the lstat of every target and every input file, and each stage's kind,
 * target and last run (for `ftpipe status`, which then needs no database: runs
 * are added only under the workspace lock, which removes the record). The
 * answer stands while all of them are unchanged (the stats are checked on every
 * core when there are thousands). It is written only where those are all that
 * can change a plan: no wildcard in the pipeline, no input folder, no kind that
 * checks its cached output (shm), no FTPIPE_RULES; any run that takes the
 * workspace lock removes it first. */
#ifndef FTPIPE_UP_TO_DATE_H
#define FTPIPE_UP_TO_DATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ftpipe/engine/graph.h"
#include "ftpipe/engine/session.h"
#include "ftpipe/engine/state.h"
#include "ftpipe/engine/workspace.h"

/* The question's hash, as 32 hex digits in key (33 bytes). */
void ft_up_to_date_question(const ft_invocation *invocation, char *key);

/* A stage's last run when the record was written (id 0: none). */
typedef struct {
    int64_t id, start_ms, end_ms;
    ft_run_status status;
} ft_up_to_date_run;

/* The stages a record covers, in build order. */
typedef struct {
    size_t n_stages;
    bool all_stages; /* every stage of the pipeline, not only the selected ones */
    char **kinds;      /* point into record_text */
    char **targets;
    ft_up_to_date_run *last_runs;
    size_t capacity;
    char *record_text;
    /* for FTPIPE_STATS: the record's lines read and checked but for the stat
     * lines, then the stat lines */
    uint64_t lines_ns, stats_ns;
    size_t n_stat_lines;
} ft_up_to_date_answer;

/* 1 with *answer when pipeline_dir's record answers `key` and nothing it names
 * changed; 0 otherwise (no record, another question, a change, an unreadable
 * record: the caller plans as usual). The stages' kinds, targets and last runs
 * are listed only when list_stages (status); n_stages always. */
int ft_up_to_date_check(const char *pipeline_dir, const char *key, bool list_stages, ft_up_to_date_answer *answer);
void ft_up_to_date_answer_free(ft_up_to_date_answer *answer);

/* After a build in which every selected stage is done: writes the record for key
 * when the pipeline allows one (see above). Failing to write one is no error. */
void ft_up_to_date_write(const ft_workspace *workspace, const ft_graph *graph, const char *key);

/* Removes the record (a run that may change the workspace starts so). */
void ft_up_to_date_forget(const char *state_dir);

#endif
