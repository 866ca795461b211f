/* Tests of lock_file: Ftpipe.lock read and written, and applied to a pipeline's
 * download stages (the commit pinned, the files listed, stale entries refused). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/engine/lock_file.h"
#include "ftpipe/engine/pipeline.h"

const char *const ft_builtin_rule_files[][2] = {{NULL, NULL}};

#define SHA_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define SHA_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define COMMIT "0123456789abcdef0123456789abcdef01234567"

static char *temporary_dir;

static const char *param(const ft_pipeline *pipeline, const char *target, const char *name)
{
    for (size_t i = 0; i < pipeline->n_stages; i++)
        if (strcmp(pipeline->stages[i].target, target) == 0)
            for (size_t k = 0; k < pipeline->stages[i].n_params; k++)
                if (strcmp(pipeline->stages[i].params[k].name, name) == 0)
                    return pipeline->stages[i].params[k].value;
    return "(none)";
}

static ft_lock *sample_lock(const char *path)
{
    ft_lock *lock = NULL;
    CHECK_INT(ft_lock_read(path, &lock), 0); /* missing: empty */
    if (!lock)
        return NULL;
    CHECK_INT(lock->n_entries, 0);
    ft_lock_entry *entry = ft_lock_put(lock, "models/base/", "hf://org/model", "", COMMIT);
    ft_lock_entry_add_file(entry, "config.json", 19, SHA_A);
    ft_lock_entry_add_file(entry, "weights/model 1.safetensors", 3000, SHA_B);
    ft_lock_put(lock, "data/raw.json", "https://example.com/raw.json", "", "");
    return lock;
}

TEST(a_written_lock_reads_back_the_same)
{
    char *path = ft_path_join(temporary_dir, "Ftpipe.lock");
    ft_lock *lock = sample_lock(path);
    CHECK_INT(ft_lock_write(lock), 0);
    ft_lock_free(lock);
    CHECK_INT(ft_lock_read(path, &lock), 0);
    CHECK_INT(lock->n_entries, 2);
    ft_lock_entry *entry = ft_lock_find(lock, "./models/base");
    CHECK(entry != NULL);
    if (entry) {
        CHECK_STR(entry->url, "hf://org/model");
        CHECK_STR(entry->revision, "");
        CHECK_STR(entry->commit, COMMIT);
        CHECK_INT(entry->n_files, 2);
        CHECK_STR(entry->files[1].path, "weights/model 1.safetensors");
        CHECK_INT(entry->files[1].size_bytes, 3000);
        CHECK_STR(entry->files[1].sha256, SHA_B);
        CHECK_INT(entry->line, 4);
    }
    ft_lock_free(lock);
    free(path);
}

TEST(a_damaged_lock_names_its_line)
{
    char *path = ft_path_join(temporary_dir, "damaged.lock");
    const char *texts[] = {"models/base:\n\turl = x\n\tfile = a.json 12 nothex\n",
                           "\turl = x\n",
                           "models/base:\n\tcolour = blue\n"};
    const char *messages[] = {":3: expected `file = PATH SIZE SHA256`", ":1: a `key = value` line before any",
                              ":2: unknown key colour"};
    for (size_t i = 0; i < 3; i++) {
        CHECK_INT(ft_write_file_atomic(path, texts[i], strlen(texts[i])), 0);
        ft_lock *lock = NULL;
        CHECK_INT(ft_lock_read(path, &lock), -1);
        CHECK(strstr(ft_error_message(), messages[i]) != NULL);
    }
    free(path);
}

TEST(applying_pins_the_commit_and_lists_the_files)
{
    char *path = ft_path_join(temporary_dir, "apply.lock");
    ft_lock *lock = sample_lock(path);
    ft_pipeline *pipeline = NULL;
    CHECK_INT(ft_pipeline_parse_string("Ftpipe",
                                       "models/base: download\n\turl = hf://org/model\n"
                                       "data/raw.json: download\n\turl = https://example.com/raw.json\n"
                                       "other: download\n\turl = hf://org/other@v1\n",
                                       NULL, &pipeline),
              0);
    if (pipeline && lock) {
        CHECK_INT(ft_lock_apply(lock, pipeline, NULL, 0, false), 0);
        CHECK_STR(param(pipeline, "models/base", "revision"), COMMIT);
        CHECK_STR(param(pipeline, "models/base", "locked"),
                  "config.json=19:" SHA_A " weights/model 1.safetensors=3000:" SHA_B);
        CHECK_STR(param(pipeline, "data/raw.json", "revision"), "(none)");
        CHECK_STR(param(pipeline, "other", "revision"), "(none)");
    }
    ft_pipeline_free(pipeline);
    CHECK_INT(ft_pipeline_parse_string("Ftpipe", "models/base: download\n\turl = hf://org/model@main\n", NULL,
                                       &pipeline),
              0);
    if (pipeline && lock) {
        const char *skip[] = {"models/base"};
        CHECK_INT(ft_lock_apply(lock, pipeline, skip, 1, false), 0);
        CHECK_STR(param(pipeline, "models/base", "revision"), "(none)");
        CHECK_INT(ft_lock_apply(lock, pipeline, NULL, 0, false), -1);
        CHECK(strstr(ft_error_message(), "models/base was locked for url = hf://org/model, but the pipeline now "
                                         "says url = hf://org/model@main: run `ftpipe lock --update models/base`") !=
              NULL);
    }
    ft_pipeline_free(pipeline);
    ft_lock_free(lock);
    free(path);
}

TEST(a_url_revision_gives_way_to_the_commit)
{
    char *path = ft_path_join(temporary_dir, "at.lock");
    ft_lock *lock = NULL;
    CHECK_INT(ft_lock_read(path, &lock), 0);
    ft_lock_put(lock, "m", "hf://org/model@v1", "", COMMIT);
    ft_pipeline *pipeline = NULL;
    CHECK_INT(ft_pipeline_parse_string("Ftpipe", "m: download\n\turl = hf://org/model@v1\n", NULL, &pipeline), 0);
    if (pipeline) {
        CHECK_INT(ft_lock_apply(lock, pipeline, NULL, 0, false), 0);
        CHECK_STR(param(pipeline, "m", "url"), "hf://org/model");
        CHECK_STR(param(pipeline, "m", "revision"), COMMIT);
        CHECK_STR(param(pipeline, "m", "locked"), "(none)");
    }
    ft_pipeline_free(pipeline);
    ft_lock_free(lock);
    free(path);
}

int main(void)
{
    char pattern[] = "/tmp/ftpipe-test-lock.XXXXXX";
    temporary_dir = mkdtemp(pattern);
    char *path = ft_lock_path("/work/Ftpipe");
    CHECK_STR(path, "/work/Ftpipe.lock");
    free(path);
    RUN(a_written_lock_reads_back_the_same);
    RUN(a_damaged_lock_names_its_line);
    RUN(applying_pins_the_commit_and_lists_the_files);
    RUN(a_url_revision_gives_way_to_the_commit);
    ft_remove_tree(temporary_dir);
    return check_done();
}
