/* stage: the interface every built-in stage kind implements, and the only engine
 * header a kind in stages/ includes.
 *
 * A kind is a name, a version and a run function. The engine runs each stage in
 * its own child process, so a kind may block, use threads and allocate freely; it
 * must not write outside its work folder and its output path.
 *
 *   - Parameters come checked and typed (rules/KIND.ft declares them).
 *   - Inputs are paths, in declaration order, already built and read-only.
 *   - The result goes to ft_stage_output_path(): create a file or a folder there.
 *     Only when run returns 0 is it hashed into the cache and published.
 *   - ft_stage_work_dir() survives interruption and is handed back to the next run
 *     with the same key: keep partial downloads and checkpoints there to resume.
 *   - Check ft_stage_cancelled() between units of work; on SIGINT/SIGTERM it turns
 *     true and the kind should return promptly (the work folder is kept).
 *
 * A kind reports failure by returning -1 after ft_stage_fail() (or ft_error()):
 * the message says what failed, where, and what to do. */
#ifndef FTPIPE_STAGE_H
#define FTPIPE_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ftpipe/base/strbuf.h"

typedef struct ft_stage ft_stage;
typedef struct ft_manifest ft_manifest; /* include/ftpipe/engine/manifest.h */

/* One figure of an estimate and where it comes from ("config.json: 494M parameters x
 * 2 bytes"). A figure nobody can know yet has known = false and says why in source. */
typedef struct {
    bool known;
    double value;          /* bytes, or seconds for time */
    char source[480];
} ft_estimate_figure;

/* A part of a run's work whose rate on a device past runs (or `ftpipe estimate
 * --measure`) logged as the metrics <rate>_per_s_<device> (wall clock) and
 * <rate>_per_cpu_s_<device> (CPU time of every thread of every rank). */
typedef struct {
    double amount;        /* in unit */
    const char *rate;     /* "train_flop" */
    const char *unit;     /* "FLOP", "bytes" */
    const char *what;     /* for the figure's source: "steps and evaluations" */
} ft_estimate_work;

/* Another setting of a stage and the memory it would take, so that a user sees
 * what each choice costs before choosing (train: the ZeRO stages and offloads). */
typedef struct {
    char name[96];                    /* "zero_stage = 3, offload_optimizer = cpu" */
    double device_bytes;              /* peak per GPU (0 on cpu) */
    double host_bytes;                /* peak of a machine's host memory */
    bool current;                     /* the stage's own setting */
    bool fits;                        /* within the budgets known (true when none is) */
} ft_estimate_choice;

#define FT_ESTIMATE_CHOICES 8

/* What one run of a stage would take, for `ftpipe estimate` and the checks before a
 * run. Kinds fill what they can; the engine adds time (and CPU time) from the
 * rates state.db holds for the parts of work the kind names. */
typedef struct {
    ft_estimate_figure device_bytes;  /* peak per GPU */
    ft_estimate_figure host_bytes;    /* peak resident host memory */
    ft_estimate_figure shm_bytes;     /* written into a tmpfs (/dev/shm) */
    ft_estimate_figure disk_bytes;    /* written in the work folder: output, checkpoints, partial files */
    ft_estimate_figure time_s;
    ft_estimate_figure cpu_time_s;    /* the same in CPU time: what a busy machine does not change */
    char shm_dir[256];                /* the tmpfs shm_bytes go to ("" none) */
    ft_estimate_work work[4];         /* what the run does, part by part; time is their sum */
    size_t n_work;
    const char *device_name;          /* the backend the figures are for ("cpu", "cuda"); NULL: none */
    uint64_t host_budget_bytes;       /* set by the engine: the host memory a stage may take */
    uint64_t device_budget_bytes;     /* set by a kind that runs on a GPU: the memory free on it; 0: unknown */
    char smallest_change[512];        /* when host_bytes or device_bytes exceeds its budget: the least change
                                       * that fits */
    ft_estimate_choice choices[FT_ESTIMATE_CHOICES]; /* optional: the stage's alternatives, in order */
    size_t n_choices;
} ft_stage_estimate;

/* Sets a figure: ft_estimate_set(&e->host_bytes, bytes, "fmt", ...). */
void ft_estimate_set(ft_estimate_figure *figure, double value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Marks it unknown, saying why. */
void ft_estimate_unknown(ft_estimate_figure *figure, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct {
    const char *name;  /* as written in pipelines; rules/<name>.ft declares its parameters */
    int version;       /* bump when the output for the same key would differ: it enters the key */
    int (*run)(ft_stage *stage);
    /* Optional: appends text that must enter the key besides parameters and inputs
     * (the shell kind's declared environment). Called in the engine process. */
    int (*extra_key)(ft_stage *stage, ft_strbuf *key_text);
    /* Optional: whether a cached output (described by its manifest) may still be
     * used: the shm kind answers 0 when the tmpfs copy its link points to is gone,
     * and the stage runs again under the same key. 1 yes, 0 no, -1 error. */
    int (*cached_output_usable)(ft_stage *stage, const ft_manifest *output);
    /* Optional: `ftpipe gc` hands it the keys that current targets still need, so a
     * kind that keeps results outside the cache (the shm kind's tmpfs copies) frees
     * the rest. Adds to *freed_bytes and *removed (may be NULL); -1 with ft_error. */
    int (*gc)(const char *state_dir, const char *const *keep_keys, size_t n_keep, uint64_t *freed_bytes,
              size_t *removed);
    /* Optional: what a run would take (`ftpipe estimate`, and the check before a run).
     * Called in the engine process; inputs made by other stages may not exist yet
     * (then say so with ft_estimate_unknown). 0, or -1 with ft_error. */
    int (*estimate)(ft_stage *stage, ft_stage_estimate *out);
    /* Optional: `ftpipe estimate --measure` runs it in place of run, in a child
     * process and a scratch work folder the engine throws away, with the stage's
     * built inputs: a few real units of work, timed (a warm-up excluded), reported
     * with ft_stage_metric as the rates its estimate's work parts name. It writes
     * no output; only the rates are kept. */
    int (*measure)(ft_stage *stage);
    /* Optional, for a kind whose run is one program (shell): starts it from the
     * engine process itself, with no copy of the engine between (a fork of the
     * engine per stage costs more than a small stage), and sets *pid. The program
     * must run in the pipeline's folder with its output on ft_stage_log_fd, lead a
     * process group of its own, and be sent SIGTERM when the engine dies. Its exit
     * status is the stage's; the engine checks the output. Called in the engine
     * process, so it must not change the process's own state (environment, folder).
     * Used instead of run unless the stage is handed elsewhere (a Slurm job). */
    int (*spawn)(ft_stage *stage, pid_t *pid);
} ft_stage_kind;

/* The kind of that name in a NULL-terminated table (stages/registry.h has the
 * built-in one, which main hands to the engine), or NULL. */
const ft_stage_kind *ft_stage_kind_lookup(const ft_stage_kind *const *kinds, const char *name);

/* How a command a stage ran ended, from its wait status: 0 when it exited 0, else
 * -1 with ft_error naming the exit status or the signal. */
int ft_stage_command_result(const char *target, int wait_status);

/* --- what the stage is --- */
const char *ft_stage_target(const ft_stage *stage);   /* as written in the pipeline */
const char *ft_stage_key(const ft_stage *stage);      /* 32 hex digits */
const char *ft_stage_pipeline_dir(const ft_stage *stage);
/* The value of a pipeline variable the stage's `env` parameter names, as it was
 * where the stage is written; NULL when the pipeline does not set it. */
const char *ft_stage_variable(const ft_stage *stage, const char *name);

/* --- parameters, by name (a name the kind's rules lack is a programming error: abort) --- */
bool ft_stage_param_is_set(const ft_stage *stage, const char *name); /* written, not defaulted */
const char *ft_stage_param_string(const ft_stage *stage, const char *name); /* also path, choice */
int64_t ft_stage_param_int(const ft_stage *stage, const char *name);
double ft_stage_param_float(const ft_stage *stage, const char *name);
int64_t ft_stage_param_size_bytes(const ft_stage *stage, const char *name);
int64_t ft_stage_param_duration_ms(const ft_stage *stage, const char *name);
bool ft_stage_param_bool(const ft_stage *stage, const char *name);
/* A list's words; *count receives their number. Owned by the stage. */
const char *const *ft_stage_param_list(const ft_stage *stage, const char *name, size_t *count);

/* --- inputs and outputs (absolute paths) --- */
size_t ft_stage_input_count(const ft_stage *stage);
const char *ft_stage_input_path(const ft_stage *stage, size_t index);
/* The path the result must be created at: <work>/out/<basename of target>. */
const char *ft_stage_output_path(const ft_stage *stage);
/* The stage's private folder, kept across interruptions for resuming. */
const char *ft_stage_work_dir(const ft_stage *stage);
/* The workspace's .ftpipe folder (for kinds that keep shared state, like shm). */
const char *ft_stage_state_dir(const ft_stage *stage);

/* --- reporting --- */
/* A line in the stage's log (kept in the work folder; `ftpipe log TARGET` shows it). */
void ft_stage_log(ft_stage *stage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A file descriptor on the stage log, for the output of programs the kind runs. */
int ft_stage_log_fd(ft_stage *stage);
/* Progress: fraction in [0,1] (negative: unknown) and a short status ("312 MiB/1.2 GiB, 80 MiB/s").
 * Rate-limited by the engine; cheap to call often. */
void ft_stage_progress(ft_stage *stage, double fraction, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A metric at a step (loss, learning_rate, tokens_per_s...), kept in the state database. */
void ft_stage_metric(ft_stage *stage, int64_t step, const char *name, double value);
/* A one-line result shown when the stage finishes ("accuracy 0.93"). */
void ft_stage_summary(ft_stage *stage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True once the run was asked to stop (SIGINT/SIGTERM). */
bool ft_stage_cancelled(const ft_stage *stage);

/* Sets the error message and returns -1: `return ft_stage_fail(stage, "...")`. */
int ft_stage_fail(ft_stage *stage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
