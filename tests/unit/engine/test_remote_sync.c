/* Tests of remote_sync over a file:// remote: push then restore into another
 * cache, nothing sent twice, and every way a remote can lie refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/sha256.h"
#include "ftpipe/engine/cache.h"
#include "ftpipe/engine/manifest.h"
#include "ftpipe/engine/remote_sync.h"

#define KEY "0123456789abcdef0123456789abcdef"
#define OTHER_KEY "fedcba9876543210fedcba9876543210"

static char *temporary_dir;
static int case_number;

typedef struct {
    char *dir;
    char *remote_dir;
    char *url;
    ft_cache *source_cache;
    ft_cache *target_cache;
    ft_manifest *manifest;
} fixture;

static void write_file(const char *path, const char *content)
{
    CHECK_INT(ft_write_file_atomic(path, content, strlen(content)), 0);
}

/* A cache holding KEY's output (a folder of two files with different content and one repeated). */
static void fixture_open(fixture *f)
{
    f->dir = ft_xasprintf("%s/case%d", temporary_dir, ++case_number);
    f->remote_dir = ft_path_join(f->dir, "remote");
    f->url = ft_xasprintf("file://%s", f->remote_dir);
    char *source_state = ft_path_join(f->dir, "a"), *target_state = ft_path_join(f->dir, "b");
    char *output = ft_path_join(f->dir, "output");
    CHECK_INT(ft_mkdir_p(f->remote_dir), 0);
    CHECK_INT(ft_mkdir_p(output), 0);
    char *one = ft_path_join(output, "weights.bin"), *two = ft_path_join(output, "config.json"),
         *three = ft_path_join(output, "copy.bin");
    write_file(one, "weights weights weights");
    write_file(two, "{\"layers\": 2}");
    write_file(three, "weights weights weights");
    CHECK_INT(ft_cache_open(source_state, &f->source_cache), 0);
    CHECK_INT(ft_cache_open(target_state, &f->target_cache), 0);
    CHECK_INT(ft_manifest_build(NULL, output, 1, &f->manifest), 0);
    CHECK_INT(ft_cache_store(f->source_cache, KEY, output, f->manifest), 0);
    free(one);
    free(two);
    free(three);
    free(output);
    free(source_state);
    free(target_state);
}

static void fixture_close(fixture *f)
{
    ft_manifest_free(f->manifest);
    ft_cache_close(f->source_cache);
    ft_cache_close(f->target_cache);
    free(f->dir);
    free(f->remote_dir);
    free(f->url);
}

static ft_remote_sync *open_sync(const char *url, bool strict)
{
    ft_remote_sync_options options = {.url = url, .writable = true, .strict = strict, .transfers = 2};
    ft_remote_sync *sync = NULL;
    CHECK_INT(ft_remote_sync_open(&options, &sync), 0);
    return sync;
}

/* The path of the remote's object for content, given as text. */
static char *object_for(const fixture *f, const char *content)
{
    ft_sha256 context;
    ft_sha256_init(&context);
    ft_sha256_update(&context, content, strlen(content));
    char hex[FT_SHA256_HEX_LENGTH + 1];
    ft_sha256_finish_hex(&context, hex);
    return ft_xasprintf("%s/cas/%s", f->remote_dir, hex);
}

static char *entry_for(const fixture *f, const char *key)
{
    ft_sha256 context;
    ft_sha256_init(&context);
    ft_sha256_update(&context, key, strlen(key));
    char hex[FT_SHA256_HEX_LENGTH + 1];
    ft_sha256_finish_hex(&context, hex);
    return ft_xasprintf("%s/ac/%s", f->remote_dir, hex);
}

TEST(push_then_restore_into_another_cache)
{
    fixture f;
    fixture_open(&f);
    ft_remote_sync *sync = open_sync(f.url, true);
    CHECK_INT(ft_remote_sync_has(sync, KEY), 0);
    uint64_t sent = 0;
    CHECK_INT(ft_remote_sync_push(sync, f.source_cache, KEY, "out", f.manifest, &sent), 0);
    CHECK_INT(sent, 23 + 13); /* the repeated content goes once */
    CHECK_INT(ft_remote_sync_has(sync, KEY), 1);
    CHECK_INT(ft_remote_sync_push(sync, f.source_cache, KEY, "out", f.manifest, &sent), 0);
    CHECK_INT(sent, 0);

    ft_manifest *restored = NULL;
    CHECK_INT(ft_remote_sync_restore(sync, f.target_cache, KEY, "out", &restored), 1);
    if (restored) {
        CHECK(ft_hash_equal(restored->hash, f.manifest->hash));
        ft_manifest_free(restored);
    }
    ft_manifest *found = NULL;
    CHECK_INT(ft_cache_lookup(f.target_cache, KEY, &found), 1);
    ft_manifest_free(found);
    CHECK_INT(ft_remote_sync_restore(sync, f.target_cache, OTHER_KEY, "other", &restored), 0);
    ft_remote_sync_close(sync);
    fixture_close(&f);
}

TEST(a_corrupted_object_is_refused_and_the_next_push_replaces_it)
{
    fixture f;
    fixture_open(&f);
    ft_remote_sync *sync = open_sync(f.url, false);
    CHECK_INT(ft_remote_sync_push(sync, f.source_cache, KEY, "out", f.manifest, NULL), 0);
    char *object = object_for(&f, "{\"layers\": 2}");
    CHECK_INT(chmod(object, 0644), 0);
    write_file(object, "{\"layers\": 3}");
    ft_manifest *restored = NULL;
    CHECK_INT(ft_remote_sync_restore(sync, f.target_cache, KEY, "out", &restored), 0);
    CHECK(restored == NULL);
    ft_manifest *found = NULL;
    CHECK_INT(ft_cache_lookup(f.target_cache, KEY, &found), 0);
    ft_remote_sync *strict = open_sync(f.url, true);
    CHECK_INT(ft_remote_sync_restore(strict, f.target_cache, KEY, "out", &restored), -1);
    CHECK(strstr(ft_error_message(), "(config.json of out) does not match its SHA-256 and size: refused") != NULL);
    ft_remote_sync_close(strict);

    /* The refused object is sent again even though the remote has a file by its name. */
    uint64_t sent = 0;
    CHECK_INT(ft_remote_sync_push(sync, f.source_cache, KEY, "out", f.manifest, &sent), 0);
    CHECK_INT(sent, 13);
    CHECK_INT(ft_remote_sync_restore(sync, f.target_cache, KEY, "out", &restored), 1);
    ft_manifest_free(restored);
    free(object);
    ft_remote_sync_close(sync);
    fixture_close(&f);
}

TEST(an_entry_under_another_key_or_cut_short_is_refused)
{
    fixture f;
    fixture_open(&f);
    ft_remote_sync *sync = open_sync(f.url, true);
    CHECK_INT(ft_remote_sync_push(sync, f.source_cache, KEY, "out", f.manifest, NULL), 0);
    char *entry = entry_for(&f, KEY), *other = entry_for(&f, OTHER_KEY);
    char *text = NULL;
    size_t length = 0;
    CHECK_INT(ft_read_file(entry, &text, &length), 0);
    write_file(other, text);
    ft_manifest *restored = NULL;
    CHECK_INT(ft_remote_sync_restore(sync, f.target_cache, OTHER_KEY, "other", &restored), -1);
    CHECK(strstr(ft_error_message(), "the entry is for another key") != NULL);

    char *cut = strstr(text, "\nmanifest\n");
    if (cut)
        cut[1] = '\0';
    CHECK_INT(chmod(entry, 0644), 0);
    write_file(entry, text);
    CHECK_INT(ft_remote_sync_restore(sync, f.target_cache, KEY, "out", &restored), -1);
    CHECK(strstr(ft_error_message(), "the entry has no manifest") != NULL);
    free(text);
    free(entry);
    free(other);
    ft_remote_sync_close(sync);
    fixture_close(&f);
}

TEST(an_unreachable_remote_is_given_up_once_and_read_mode_never_writes)
{
    fixture f;
    fixture_open(&f);
    char *missing = ft_xasprintf("file://%s/not-there", f.dir);
    ft_remote_sync *sync = open_sync(missing, false);
    ft_manifest *restored = NULL;
    CHECK_INT(ft_remote_sync_restore(sync, f.target_cache, KEY, "out", &restored), 0);
    CHECK_INT(ft_remote_sync_push(sync, f.source_cache, KEY, "out", f.manifest, NULL), 0);
    ft_remote_sync_close(sync);
    ft_remote_sync *strict = open_sync(missing, true);
    CHECK_INT(ft_remote_sync_has(strict, KEY), -1);
    ft_remote_sync_close(strict);

    ft_remote_sync_options options = {.url = f.url, .writable = false};
    CHECK_INT(ft_remote_sync_open(&options, &sync), 0);
    CHECK_INT(ft_remote_sync_push(sync, f.source_cache, KEY, "out", f.manifest, NULL), 0);
    char *entry = entry_for(&f, KEY);
    CHECK(!ft_path_exists(entry));
    free(entry);
    ft_remote_sync_close(sync);
    free(missing);
    fixture_close(&f);
}

TEST(the_mode_comes_from_the_environment)
{
    bool writable = false;
    unsetenv("FTPIPE_REMOTE_MODE");
    CHECK_INT(ft_remote_sync_mode_writable(&writable), 0);
    CHECK(writable);
    setenv("FTPIPE_REMOTE_MODE", "read", 1);
    CHECK_INT(ft_remote_sync_mode_writable(&writable), 0);
    CHECK(!writable);
    setenv("FTPIPE_REMOTE_MODE", "readonly", 1);
    CHECK_INT(ft_remote_sync_mode_writable(&writable), -1);
    CHECK(strstr(ft_error_message(), "FTPIPE_REMOTE_MODE=readonly: expected read or read-write") != NULL);
    unsetenv("FTPIPE_REMOTE_MODE");
}

int main(void)
{
    char pattern[] = "/tmp/ftpipe-test-remote-sync.XXXXXX";
    temporary_dir = mkdtemp(pattern);
    RUN(push_then_restore_into_another_cache);
    RUN(a_corrupted_object_is_refused_and_the_next_push_replaces_it);
    RUN(an_entry_under_another_key_or_cut_short_is_refused);
    RUN(an_unreachable_remote_is_given_up_once_and_read_mode_never_writes);
    RUN(the_mode_comes_from_the_environment);
    ft_remove_tree(temporary_dir);
    return check_done();
}
