/* Tests of cache: store, lookup, materialize and garbage collection. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/cache.h"
#include "ftpipe/engine/manifest.h"

static char *temporary_dir;

#define KEY_ONE "11111111111111111111111111111111"
#define KEY_TWO "22222222222222222222222222222222"

/* weights.bin, bin/run (executable), dup-a and dup-b (same bytes, dup-b
 * executable), empty/, link -> weights.bin. 3 + 18 + 4 + 4 = 29 bytes. */
static char *make_output(const char *base, const char *name)
{
    static const fixture_file files[] = {
        {"weights.bin", "abc", 0644},
        {"bin/run", "#!/bin/sh\necho hi\n", 0755},
        {"dup-a", "same", 0644},
        {"dup-b", "same", 0755},
    };
    return fixture_make_tree(base, name, files, sizeof files / sizeof files[0], "weights.bin");
}

static ft_cache *open_cache(const char *name)
{
    char *state_dir = ft_path_join(temporary_dir, name);
    CHECK_INT(ft_mkdir_p(state_dir), 0);
    ft_cache *cache = NULL;
    CHECK_INT(ft_cache_open(state_dir, &cache), 0);
    free(state_dir);
    return cache;
}

/* A case's cache (TEMPORARY/NAME), its work folder (TEMPORARY/NAME-work) and, for
 * start_case_with_output, make_output's tree "out" in it, stored under KEY_ONE. */
typedef struct {
    ft_cache *cache;
    char *work;
    char *root;
    ft_manifest *manifest;
} cache_case;

static ft_manifest *store_output(ft_cache *cache, const char *key, const char *root);

static cache_case start_case(const char *name)
{
    cache_case c = {.cache = open_cache(name), .work = ft_xasprintf("%s/%s-work", temporary_dir, name)};
    CHECK_INT(ft_mkdir_p(c.work), 0);
    return c;
}

static cache_case start_case_with_output(const char *name)
{
    cache_case c = start_case(name);
    c.root = make_output(c.work, "out");
    c.manifest = store_output(c.cache, KEY_ONE, c.root);
    return c;
}

static void end_case(cache_case *c)
{
    ft_manifest_free(c->manifest);
    free(c->root);
    free(c->work);
    ft_cache_close(c->cache);
}

static struct stat stat_of(const char *dir, const char *name)
{
    char *path = ft_path_join(dir, name);
    struct stat st;
    memset(&st, 0, sizeof st);
    CHECK_INT(lstat(path, &st), 0);
    free(path);
    return st;
}

static struct stat object_stat(const ft_cache *cache, const char *content)
{
    char *object = ft_cache_object_path(cache, ft_hash_bytes(content, strlen(content)));
    struct stat st;
    memset(&st, 0, sizeof st);
    CHECK_INT(lstat(object, &st), 0);
    free(object);
    return st;
}

/* The names in a folder, sorted, space-separated. */
static char *names_in(const char *dir_path)
{
    struct dirent **items;
    int n = scandir(dir_path, &items, NULL, alphasort);
    ft_strbuf names;
    ft_strbuf_init(&names);
    for (int i = 0; i < n; i++) {
        if (strcmp(items[i]->d_name, ".") != 0 && strcmp(items[i]->d_name, "..") != 0)
            ft_strbuf_printf(&names, "%s%s", names.length ? " " : "", items[i]->d_name);
        free(items[i]);
    }
    free(items);
    return ft_strbuf_take(&names);
}

static ft_manifest *store_output(ft_cache *cache, const char *key, const char *root)
{
    ft_manifest *manifest = NULL;
    CHECK_INT(ft_manifest_build(NULL, root, 1, &manifest), 0);
    CHECK_INT(ft_cache_store(cache, key, root, manifest), 0);
    return manifest;
}

TEST(stores_looks_up_and_materializes)
{
    cache_case c = start_case_with_output("basic");

    /* Files moved in, folders and links left behind. */
    char *left = names_in(c.root);
    CHECK_STR(left, "bin empty link");
    free(left);
    CHECK_INT(object_stat(c.cache, "abc").st_mode & 07777, 0444);
    CHECK_INT(object_stat(c.cache, "#!/bin/sh\necho hi\n").st_mode & 07777, 0555);
    CHECK_INT(object_stat(c.cache, "same").st_mode & 07777, 0444);
    char *object = ft_cache_object_path(c.cache, ft_hash_bytes("abc", 3));
    char hex[FT_HASH_HEX_LENGTH + 1];
    ft_hash_to_hex(ft_hash_bytes("abc", 3), hex);
    char *expected = ft_xasprintf("%s/objects/%.2s/%s", ft_cache_dir(c.cache), hex, hex + 2);
    CHECK_STR(object, expected);
    free(expected);
    free(object);
    char *manifest_path = ft_xasprintf("%s/manifests/%s", ft_cache_dir(c.cache), KEY_ONE);
    char *stored_text;
    CHECK_INT(ft_read_file(manifest_path, &stored_text, NULL), 0);
    char *text = ft_manifest_serialize(c.manifest);
    CHECK_STR(stored_text, text);
    free(stored_text);
    free(text);
    free(manifest_path);

    ft_manifest *found = NULL;
    CHECK_INT(ft_cache_lookup(c.cache, KEY_ONE, &found), 1);
    CHECK(found && ft_hash_equal(found->hash, c.manifest->hash));
    CHECK_INT(ft_cache_lookup(c.cache, KEY_TWO, &found), 0);

    char *workspace = ft_path_join(temporary_dir, "basic-ws");
    char *destination = ft_path_join(workspace, "models/adapter");
    CHECK_INT(ft_cache_materialize(c.cache, c.manifest, destination), 0);
    struct stat weights = stat_of(destination, "weights.bin");
    CHECK_INT(weights.st_ino, object_stat(c.cache, "abc").st_ino);
    CHECK_INT(weights.st_mode & 07777, 0444);
    CHECK_INT(stat_of(destination, "bin/run").st_mode & 07777, 0555);
    CHECK_INT(stat_of(destination, "dup-a").st_ino, object_stat(c.cache, "same").st_ino);
    /* dup-b wants the executable bit the shared object lacks: a copy of its own. */
    CHECK(stat_of(destination, "dup-b").st_ino != object_stat(c.cache, "same").st_ino);
    CHECK_INT(stat_of(destination, "dup-b").st_mode & 07777, 0555);
    CHECK(S_ISDIR(stat_of(destination, "empty").st_mode));
    char *link = ft_path_join(destination, "link");
    char target[64] = "";
    CHECK_INT(readlink(link, target, sizeof target - 1), 11);
    CHECK_STR(target, "weights.bin");
    free(link);
    ft_manifest *rebuilt = NULL;
    CHECK_INT(ft_manifest_build(NULL, destination, 1, &rebuilt), 0);
    CHECK(rebuilt && ft_hash_equal(rebuilt->hash, c.manifest->hash));
    char *models = ft_path_join(workspace, "models");
    char *names = names_in(models);
    CHECK_STR(names, "adapter");
    free(names);

    ft_manifest_free(rebuilt);
    ft_manifest_free(found);
    free(models);
    free(destination);
    free(workspace);
    end_case(&c);
}

TEST(materialize_replaces_what_is_there)
{
    cache_case c = start_case_with_output("replace");
    char *single_path = ft_path_join(c.work, "report.json");
    fixture_write_file(c.work, "report.json", "{\"accuracy\": 0.9}", 0644);
    ft_manifest *single = store_output(c.cache, KEY_TWO, single_path);

    char *workspace = ft_path_join(temporary_dir, "replace-ws");
    char *destination = ft_path_join(workspace, "target");
    CHECK_INT(ft_mkdir_p(destination), 0);
    fixture_write_file(destination, "old.txt", "old", 0444);
    CHECK_INT(chmod(destination, 0555), 0);

    /* A folder over a folder. */
    CHECK_INT(ft_cache_materialize(c.cache, c.manifest, destination), 0);
    char *names = names_in(destination);
    CHECK_STR(names, "bin dup-a dup-b empty link weights.bin");
    free(names);
    /* A file over a folder, then a file over a file, then a folder over a file. */
    CHECK_INT(ft_cache_materialize(c.cache, single, destination), 0);
    char *content;
    CHECK_INT(ft_read_file(destination, &content, NULL), 0);
    CHECK_STR(content, "{\"accuracy\": 0.9}");
    free(content);
    struct stat placed;
    CHECK_INT(lstat(destination, &placed), 0);
    CHECK_INT(placed.st_ino, object_stat(c.cache, "{\"accuracy\": 0.9}").st_ino);
    CHECK_INT(ft_cache_materialize(c.cache, single, destination), 0);
    CHECK_INT(ft_cache_materialize(c.cache, c.manifest, destination), 0);
    CHECK_INT(lstat(destination, &placed), 0);
    CHECK(S_ISDIR(placed.st_mode));
    names = names_in(workspace);
    CHECK_STR(names, "target");
    free(names);

    ft_manifest_free(single);
    free(single_path);
    free(destination);
    free(workspace);
    end_case(&c);
}

TEST(lookup_misses_what_is_incomplete)
{
    cache_case c = start_case_with_output("lookup");
    ft_manifest *found = NULL;
    CHECK_INT(ft_cache_lookup(c.cache, "../../etc/passwd", &found), -1);
    CHECK_STR(ft_error_message(), "\"../../etc/passwd\" is not a cache key: expected 32 lowercase hex digits");
    CHECK_INT(ft_cache_lookup(c.cache, "33333333333333333333333333333333", &found), 0);

    char *object = ft_cache_object_path(c.cache, ft_hash_bytes("abc", 3));
    CHECK_INT(unlink(object), 0);
    CHECK_INT(ft_cache_lookup(c.cache, KEY_ONE, &found), 0);
    CHECK(found == NULL);

    char *manifest_path = ft_xasprintf("%s/manifests/%s", ft_cache_dir(c.cache), KEY_TWO);
    CHECK_INT(ft_write_file_atomic(manifest_path, "ftpipe manifest 1\nfile", 22), 0);
    CHECK_INT(ft_cache_lookup(c.cache, KEY_TWO, &found), 0);
    free(manifest_path);
    free(object);
    end_case(&c);
}

TEST(gc_frees_exactly_what_is_unreferenced)
{
    cache_case c = start_case("gc");
    /* Key one: a (10 bytes), shared (7); key two: shared (7), b (20). */
    char *one = ft_path_join(c.work, "one");
    char *two = ft_path_join(c.work, "two");
    CHECK_INT(ft_mkdir_p(one), 0);
    CHECK_INT(ft_mkdir_p(two), 0);
    fixture_write_file(one, "a", "aaaaaaaaaa", 0644);
    fixture_write_file(one, "shared", "sharedX", 0644);
    fixture_write_file(two, "shared", "sharedX", 0644);
    fixture_write_file(two, "b", "bbbbbbbbbbbbbbbbbbbb", 0644);
    ft_manifest *first = store_output(c.cache, KEY_ONE, one);
    ft_manifest *second = store_output(c.cache, KEY_TWO, two);
    char *first_text = ft_manifest_serialize(first);

    /* Leftovers of interrupted writes: 5 and 7 bytes. */
    char *manifest_temporary = ft_xasprintf("%s/manifests/%s.tmp.123", ft_cache_dir(c.cache), KEY_ONE);
    CHECK_INT(ft_write_file_atomic(manifest_temporary, "12345", 5), 0);
    char *object_b = ft_cache_object_path(c.cache, ft_hash_bytes("bbbbbbbbbbbbbbbbbbbb", 20));
    char *object_dir = ft_path_dirname(object_b);
    char *object_temporary = ft_path_join(object_dir, ".partial.ftpipe-new.99");
    CHECK_INT(ft_write_file_atomic(object_temporary, "1234567", 7), 0);

    const char *keep[] = {KEY_TWO};
    uint64_t freed = 0, removed = 0;
    CHECK_INT(ft_cache_gc(c.cache, keep, 1, &freed, &removed), 0);
    CHECK_INT(removed, 1);
    CHECK_INT(freed, strlen(first_text) + 10 + 5 + 7);
    ft_manifest *found = NULL;
    CHECK_INT(ft_cache_lookup(c.cache, KEY_ONE, &found), 0);
    CHECK_INT(ft_cache_lookup(c.cache, KEY_TWO, &found), 1);
    ft_manifest_free(found);
    CHECK(!ft_path_exists(manifest_temporary));
    CHECK(!ft_path_exists(object_temporary));

    /* An object still linked into a workspace is removed but frees nothing. */
    char *destination = ft_path_join(temporary_dir, "gc-ws/two");
    CHECK_INT(ft_cache_materialize(c.cache, second, destination), 0);
    CHECK_INT(ft_cache_gc(c.cache, NULL, 0, &freed, &removed), 0);
    CHECK_INT(removed, 2);
    char *second_text = ft_manifest_serialize(second);
    CHECK_INT(freed, strlen(second_text));
    free(second_text);
    char *left = names_in(ft_cache_dir(c.cache));
    CHECK_STR(left, "manifests objects");
    free(left);
    char *objects = ft_path_join(ft_cache_dir(c.cache), "objects");
    left = names_in(objects);
    CHECK_STR(left, "");
    free(left);

    free(objects);
    free(destination);
    free(first_text);
    free(manifest_temporary);
    free(object_b);
    free(object_dir);
    free(object_temporary);
    ft_manifest_free(first);
    ft_manifest_free(second);
    free(one);
    free(two);
    end_case(&c);
}

/* The shm kind's output: a symbolic link to the staged copy. */
TEST(stores_and_places_a_link_output)
{
    cache_case c = start_case("link");
    char *output = ft_path_join(c.work, "base_shm");
    CHECK_INT(symlink("/dev/shm/ftpipe/abc/base", output), 0);
    ft_manifest *manifest = store_output(c.cache, KEY_ONE, output);
    CHECK_INT(manifest->n_entries, 1);
    ft_manifest *found = NULL;
    CHECK_INT(ft_cache_lookup(c.cache, KEY_ONE, &found), 1);
    char *destination = ft_path_join(temporary_dir, "link-ws/models/base_shm");
    CHECK_INT(ft_cache_materialize(c.cache, found, destination), 0);
    char target[64] = "";
    CHECK_INT(readlink(destination, target, sizeof target - 1), 24);
    CHECK_STR(target, "/dev/shm/ftpipe/abc/base");
    ft_manifest_free(found);
    ft_manifest_free(manifest);
    free(destination);
    free(output);
    end_case(&c);
}

/* /dev/shm is another file system here: stores copy, materializing copies. */
TEST(crosses_file_systems)
{
    struct stat shm, tmp;
    if (stat("/dev/shm", &shm) != 0 || stat(temporary_dir, &tmp) != 0 || shm.st_dev == tmp.st_dev) {
        SKIP("/dev/shm is not another file system here");
    }
    char template[] = "/dev/shm/ftpipe-test-cache.XXXXXX";
    char *shm_dir = mkdtemp(template);
    CHECK(shm_dir != NULL);
    if (!shm_dir)
        return;
    ft_cache *cache = open_cache("cross");
    char *root = make_output(shm_dir, "out");
    ft_manifest *manifest = store_output(cache, KEY_ONE, root);
    char *left = names_in(root);
    CHECK_STR(left, "bin empty link");
    free(left);
    CHECK_INT(object_stat(cache, "abc").st_mode & 07777, 0444);
    char *destination = ft_path_join(shm_dir, "materialized");
    CHECK_INT(ft_cache_materialize(cache, manifest, destination), 0);
    CHECK(stat_of(destination, "weights.bin").st_ino != object_stat(cache, "abc").st_ino);
    CHECK_INT(stat_of(destination, "weights.bin").st_mode & 07777, 0444);
    CHECK_INT(stat_of(destination, "bin/run").st_mode & 07777, 0555);
    ft_manifest *rebuilt = NULL;
    CHECK_INT(ft_manifest_build(NULL, destination, 1, &rebuilt), 0);
    CHECK(rebuilt && ft_hash_equal(rebuilt->hash, manifest->hash));
    ft_manifest_free(rebuilt);
    ft_manifest_free(manifest);
    free(destination);
    free(root);
    ft_remove_tree(shm_dir);
    ft_cache_close(cache);
}

TEST(a_deferred_store_is_this_process_s_until_synced)
{
    ft_cache *cache = open_cache("deferred");
    char *work = ft_path_join(temporary_dir, "deferred-work");
    char *root = make_output(work, "out");
    ft_manifest *manifest = NULL;
    CHECK_INT(ft_manifest_build(NULL, root, 1, &manifest), 0);
    CHECK_INT(ft_cache_store_deferred(cache, KEY_ONE, root, manifest), 0);
    /* No manifest under its name yet: another process (a later run) finds nothing. */
    char *manifest_path = ft_xasprintf("%s/manifests/%s", ft_cache_dir(cache), KEY_ONE);
    CHECK(!ft_path_exists(manifest_path));
    ft_manifest *found = NULL;
    CHECK_INT(ft_cache_lookup(cache, KEY_ONE, &found), 1); /* this one does */
    if (found)
        CHECK(ft_hash_equal(found->hash, manifest->hash));
    ft_manifest_free(found);
    CHECK_INT(ft_cache_sync(cache), 0);
    CHECK(ft_path_exists(manifest_path));
    char *manifests_dir = ft_path_dirname(manifest_path);
    char *names = names_in(manifests_dir);
    CHECK_STR(names, KEY_ONE); /* no temporary left */
    free(names);
    free(manifests_dir);
    CHECK_INT(ft_cache_sync(cache), 0); /* nothing pending: nothing to do */
    ft_cache *other = open_cache("deferred");
    CHECK_INT(ft_cache_lookup(other, KEY_ONE, &found), 1);
    ft_manifest_free(found);
    ft_cache_close(other);
    free(manifest_path);
    ft_manifest_free(manifest);
    free(root);
    free(work);
    ft_cache_close(cache);
}

int main(void)
{
    temporary_dir = fixture_temporary_dir("cache");
    if (!temporary_dir)
        return 1;
    RUN(stores_looks_up_and_materializes);
    RUN(materialize_replaces_what_is_there);
    RUN(lookup_misses_what_is_incomplete);
    RUN(gc_frees_exactly_what_is_unreferenced);
    RUN(stores_and_places_a_link_output);
    RUN(crosses_file_systems);
    RUN(a_deferred_store_is_this_process_s_until_synced);
    ft_remove_tree(temporary_dir);
    return check_done();
}
