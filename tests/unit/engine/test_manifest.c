/* Tests of manifest: walking, canonical text, parsing, and the stat cache. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"
#include "ftpipe/engine/manifest.h"
#include "ftpipe/engine/state.h"

static char *temporary_dir;

static char *hex_of_text(const char *text)
{
    static char hex[4][FT_HASH_HEX_LENGTH + 1];
    static int next;
    char *out = hex[next++ % 4];
    ft_hash_to_hex(ft_hash_bytes(text, strlen(text)), out);
    return out;
}

static const char zero_hash[] = "00000000000000000000000000000000";

/* a.txt, bin/run.sh (executable), empty/, link -> a.txt, and names with a space,
 * a newline, a backslash and non-ASCII letters. */
static char *make_tree(const char *name)
{
    static const fixture_file files[] = {
        {"a.txt", "hello", 0644},
        {"bin/run.sh", "#!/bin/sh\n", 0755},
        {"odd name\n\\x", "odd", 0600},
        {"\xc3\xbc.txt", "u", 0444},
    };
    return fixture_make_tree(temporary_dir, name, files, sizeof files / sizeof files[0], "a.txt");
}

static char *expected_tree_text(void)
{
    ft_strbuf text;
    ft_strbuf_init(&text);
    ft_strbuf_puts(&text, "ftpipe manifest 1\n");
    ft_strbuf_printf(&text, "file 644 5 %s a.txt\n", hex_of_text("hello"));
    ft_strbuf_printf(&text, "dir 755 0 %s bin\n", zero_hash);
    ft_strbuf_printf(&text, "file 755 10 %s bin/run.sh\n", hex_of_text("#!/bin/sh\n"));
    ft_strbuf_printf(&text, "dir 755 0 %s empty\n", zero_hash);
    ft_strbuf_printf(&text, "link 777 5 %s link -> a.txt\n", hex_of_text("a.txt"));
    ft_strbuf_printf(&text, "file 644 3 %s odd\\x20name\\x0a\\x5cx\n", hex_of_text("odd"));
    ft_strbuf_printf(&text, "file 644 1 %s \xc3\xbc.txt\n", hex_of_text("u"));
    return ft_strbuf_take(&text);
}

TEST(walks_a_folder_into_canonical_text)
{
    char *root = make_tree("tree");
    ft_manifest *m;
    CHECK_INT(ft_manifest_build(NULL, root, 2, &m), 0);
    char *text = ft_manifest_serialize(m);
    char *expected = expected_tree_text();
    CHECK_STR(text, expected);
    CHECK_INT(m->n_entries, 7);
    CHECK_INT(m->total_bytes, 19);
    CHECK(ft_hash_equal(m->hash, ft_hash_bytes(expected, strlen(expected))));
    CHECK_STR(m->entries[4].path, "link");
    CHECK_INT(m->entries[4].type, FT_ENTRY_SYMLINK);
    CHECK_STR(m->entries[4].link_target, "a.txt");
    CHECK_STR(m->entries[5].path, "odd name\n\\x");
    CHECK(m->entries[2].executable);
    CHECK(!m->entries[0].executable);

    /* A relative path names the same tree. */
    char *cwd = getcwd(NULL, 0);
    CHECK_INT(chdir(temporary_dir), 0);
    ft_manifest *relative;
    CHECK_INT(ft_manifest_build(NULL, "tree", 1, &relative), 0);
    CHECK(ft_hash_equal(relative->hash, m->hash));
    CHECK_INT(chdir(cwd), 0);
    free(cwd);
    ft_manifest_free(relative);
    free(text);
    free(expected);
    ft_manifest_free(m);
    free(root);
}

TEST(parse_round_trips_exactly)
{
    char *root = make_tree("round");
    ft_manifest *m, *again;
    CHECK_INT(ft_manifest_build(NULL, root, 1, &m), 0);
    char *text = ft_manifest_serialize(m);
    CHECK_INT(ft_manifest_parse(text, "round", &again), 0);
    char *text_again = ft_manifest_serialize(again);
    CHECK_STR(text_again, text);
    CHECK(ft_hash_equal(again->hash, m->hash));
    CHECK_INT(again->total_bytes, 19);
    CHECK_INT(again->n_entries, m->n_entries);
    for (size_t i = 0; i < m->n_entries && i < again->n_entries; i++) {
        CHECK_STR(again->entries[i].path, m->entries[i].path);
        CHECK_INT(again->entries[i].type, m->entries[i].type);
        CHECK_INT(again->entries[i].executable, m->entries[i].executable);
        CHECK_INT(again->entries[i].size_bytes, m->entries[i].size_bytes);
        CHECK(ft_hash_equal(again->entries[i].hash, m->entries[i].hash));
    }
    CHECK_STR(again->entries[4].link_target, "a.txt");
    free(text);
    free(text_again);
    ft_manifest_free(m);
    ft_manifest_free(again);
    free(root);
}

/* Builds path's manifest, checks that its text is `expected` and returns it (the caller frees). */
static ft_manifest *build_expecting(const char *path, const char *expected)
{
    ft_manifest *m = NULL;
    CHECK_INT(ft_manifest_build(NULL, path, 1, &m), 0);
    char *text = m ? ft_manifest_serialize(m) : NULL;
    CHECK_STR(text, expected);
    free(text);
    return m;
}

static ft_hash hash_of_tree(const char *root)
{
    ft_manifest *m = NULL;
    CHECK_INT(ft_manifest_build(NULL, root, 1, &m), 0);
    ft_hash hash = m ? m->hash : (ft_hash){0};
    ft_manifest_free(m);
    return hash;
}

TEST(single_file_link_and_empty_folder)
{
    char *dir = ft_path_join(temporary_dir, "single");
    CHECK_INT(ft_mkdir_p(dir), 0);
    fixture_write_file(dir, "model.bin", "weights", 0755);
    char *file = ft_path_join(dir, "model.bin");
    char *link = ft_path_join(dir, "staged");
    char *empty = ft_path_join(dir, "nothing");
    CHECK_INT(symlink("/dev/shm/ftpipe/model dir", link), 0);
    CHECK_INT(ft_mkdir_p(empty), 0);

    char *expected = ft_xasprintf("ftpipe manifest 1\nfile 755 7 %s .\n", hex_of_text("weights"));
    ft_manifest *m = build_expecting(file, expected);
    CHECK_STR(m->entries[0].path, "");
    ft_manifest *parsed;
    CHECK_INT(ft_manifest_parse(expected, "file", &parsed), 0);
    CHECK_STR(parsed->entries[0].path, "");
    ft_manifest_free(parsed);
    free(expected);
    ft_manifest_free(m);

    expected = ft_xasprintf("ftpipe manifest 1\nlink 777 25 %s . -> /dev/shm/ftpipe/model\\x20dir\n",
                            hex_of_text("/dev/shm/ftpipe/model dir"));
    m = build_expecting(link, expected);
    CHECK_INT(m->total_bytes, 0);
    free(expected);
    ft_manifest_free(m);

    m = build_expecting(empty, "ftpipe manifest 1\n");
    CHECK_INT(m->n_entries, 0);
    ft_manifest_free(m);
    free(file);
    free(link);
    free(empty);
    free(dir);
}

TEST(hash_follows_names_modes_and_content)
{
    char *root = make_tree("changes");
    ft_hash before = hash_of_tree(root);
    char *script = ft_path_join(root, "bin/run.sh");
    CHECK_INT(chmod(script, 0644), 0);
    CHECK(!ft_hash_equal(hash_of_tree(root), before));
    CHECK_INT(chmod(script, 0700), 0); /* only the executable bit counts */
    CHECK(ft_hash_equal(hash_of_tree(root), before));

    char *new_dir = ft_path_join(root, "empty/more");
    CHECK_INT(ft_mkdir_p(new_dir), 0);
    CHECK(!ft_hash_equal(hash_of_tree(root), before));
    free(new_dir);
    free(script);
    free(root);
}

TEST(refuses_special_files)
{
    char *dir = ft_path_join(temporary_dir, "special");
    CHECK_INT(ft_mkdir_p(dir), 0);
    char *fifo = ft_path_join(dir, "pipe");
    CHECK_INT(mkfifo(fifo, 0644), 0);
    ft_manifest *m;
    CHECK_INT(ft_manifest_build(NULL, dir, 1, &m), -1);
    char *expected = ft_xasprintf("cannot take %s into a manifest: it is not a file, a folder or a symbolic link",
                                  fifo);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    char *missing = ft_path_join(dir, "missing");
    CHECK_INT(ft_manifest_build(NULL, missing, 1, &m), -1);
    expected = ft_xasprintf("cannot stat %s: No such file or directory", missing);
    CHECK_STR(ft_error_message(), expected);
    free(expected);
    free(missing);
    free(fifo);
    free(dir);
}

static void set_mtime(const char *path, time_t seconds, long nanoseconds)
{
    struct timespec times[2] = {{seconds, nanoseconds}, {seconds, nanoseconds}};
    CHECK_INT(utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW), 0);
}

static void overwrite_in_place(const char *path, const char *content)
{
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    CHECK_INT(pwrite(fd, content, strlen(content), 0), (long long)strlen(content));
    close(fd);
}

static ft_hash file_hash_via(ft_state *state, const char *path)
{
    ft_manifest *m;
    ft_hash hash = {0, 0};
    ft_hash_cache cache = ft_state_hash_cache(state);
    CHECK_INT(ft_manifest_build(&cache, path, 1, &m), 0);
    if (m->n_entries == 1)
        hash = m->entries[0].hash;
    ft_manifest_free(m);
    return hash;
}

TEST(stat_cache_spares_unchanged_files)
{
    char *dir = ft_path_join(temporary_dir, "cached");
    CHECK_INT(ft_mkdir_p(dir), 0);
    ft_state *state;
    CHECK_INT(ft_state_open(dir, &state), 0);
    fixture_write_file(dir, "data.json", "version 1", 0644);
    char *path = ft_path_join(dir, "data.json");
    time_t hour_ago = time(NULL) - 3600;
    set_mtime(path, hour_ago, 5);

    ft_hash first = file_hash_via(state, path);
    CHECK(ft_hash_equal(first, ft_hash_bytes("version 1", 9)));
    ft_file_stat stat;
    ft_hash cached;
    CHECK_INT(ft_file_stat_read(path, &stat), 0);
    CHECK_INT(ft_state_file_lookup(state, path, &stat, &cached), 1);

    /* Same size, same mtime: the cache answers and the stale hash proves the file was not read. */
    overwrite_in_place(path, "version 2");
    set_mtime(path, hour_ago, 5);
    CHECK(ft_hash_equal(file_hash_via(state, path), first));

    /* A new mtime: read again. */
    set_mtime(path, hour_ago, 6);
    CHECK(ft_hash_equal(file_hash_via(state, path), ft_hash_bytes("version 2", 9)));

    /* A file changed just now (here: a minute ahead, as a skewed
     * clock may write it, so the test never depends on timing) is hashed but not
     * remembered yet. */
    fixture_write_file(dir, "fresh.json", "new", 0644);
    char *fresh = ft_path_join(dir, "fresh.json");
    set_mtime(fresh, time(NULL) + 60, 0);
    CHECK(ft_hash_equal(file_hash_via(state, fresh), ft_hash_bytes("new", 3)));
    CHECK_INT(ft_file_stat_read(fresh, &stat), 0);
    CHECK_INT(ft_state_file_lookup(state, fresh, &stat, &cached), 0);

    /* Older than a tick of a nanosecond file-system clock: remembered at once, so
     * a model hashed right after its download is not hashed again. */
    set_mtime(fresh, time(NULL) - 1, 500000000);
    CHECK(ft_hash_equal(file_hash_via(state, fresh), ft_hash_bytes("new", 3)));
    CHECK_INT(ft_file_stat_read(fresh, &stat), 0);
    CHECK_INT(ft_state_file_lookup(state, fresh, &stat, &cached), 1);
    /* Whole seconds (a file system without nanoseconds) wait two: stamped this
     * second, so the walk would have to start two seconds later to remember it
     * (one second before it, a walk crossing into the next second did, now and then). */
    fixture_write_file(dir, "coarse.json", "old", 0644);
    char *coarse = ft_path_join(dir, "coarse.json");
    set_mtime(coarse, time(NULL), 0);
    CHECK(ft_hash_equal(file_hash_via(state, coarse), ft_hash_bytes("old", 3)));
    CHECK_INT(ft_file_stat_read(coarse, &stat), 0);
    CHECK_INT(ft_state_file_lookup(state, coarse, &stat, &cached), 0);
    free(coarse);
    ft_state_close(state);
    free(fresh);
    free(path);
    free(dir);
}

/* A cache of one file, in memory: the manifest needs nothing more than the interface. */
typedef struct {
    ft_hash known;
    bool knows;
    size_t n_lookups, n_stored;
    bool fail_store;
} one_file_cache;

static int one_file_lookup(void *context, const char *path, const ft_file_stat *stat, ft_hash *hash)
{
    one_file_cache *cache = context;
    cache->n_lookups++;
    if (cache->knows)
        *hash = cache->known;
    return cache->knows;
}

static int one_file_store(void *context, const ft_hashed_file *files, size_t n_files)
{
    one_file_cache *cache = context;
    if (cache->fail_store)
        return ft_error("the cache is full");
    cache->n_stored += n_files;
    return 0;
}

TEST(any_hash_cache_serves_the_manifest)
{
    char *dir = ft_path_join(temporary_dir, "plain-cache");
    CHECK_INT(ft_mkdir_p(dir), 0);
    fixture_write_file(dir, "a.txt", "alpha", 0644);
    char *path = ft_path_join(dir, "a.txt");
    set_mtime(path, time(NULL) - 3600, 0);
    one_file_cache memory = {0};
    ft_hash_cache cache = {one_file_lookup, one_file_store, &memory};
    ft_manifest *m;
    CHECK_INT(ft_manifest_build(&cache, path, 1, &m), 0); /* a miss: read, then stored */
    CHECK(ft_hash_equal(m->entries[0].hash, ft_hash_bytes("alpha", 5)));
    CHECK_INT(memory.n_lookups, 1);
    CHECK_INT(memory.n_stored, 1);
    ft_manifest_free(m);
    memory.knows = true; /* a hit: the cache's answer, not the file's bytes */
    memory.known = ft_hash_bytes("cached", 6);
    CHECK_INT(ft_manifest_build(&cache, path, 1, &m), 0);
    CHECK(ft_hash_equal(m->entries[0].hash, memory.known));
    CHECK_INT(memory.n_stored, 1);
    ft_manifest_free(m);
    memory.knows = false; /* a cache that cannot keep what was read is an error, said once */
    memory.fail_store = true;
    CHECK_INT(ft_manifest_build(&cache, path, 1, &m), -1);
    CHECK_STR(ft_error_message(), "the cache is full");
    free(path);
    free(dir);
}

static void check_parse_error(const char *text, const char *message)
{
    ft_manifest *m = NULL;
    CHECK_INT(ft_manifest_parse(text, "cache/manifests/k", &m), -1);
    CHECK_STR(ft_error_message(), message);
    CHECK(m == NULL);
}

/* A manifest's text with each '@' replaced by the hash of "x" (caller frees). */
static char *with_hash(const char *text)
{
    const char *h = hex_of_text("x");
    ft_strbuf out;
    ft_strbuf_init(&out);
    for (const char *c = text; *c; c++) {
        if (*c == '@')
            ft_strbuf_puts(&out, h);
        else
            ft_strbuf_add(&out, c, 1);
    }
    return ft_strbuf_take(&out);
}

TEST(parse_rejects_what_it_would_not_write)
{
#define NOT_CANONICAL \
    "cache/manifests/k: not in canonical form (entries out of order, or a field written differently than ftpipe writes it)"
#define NOT_RELATIVE "cache/manifests/k:2: a path must be relative, without empty, \".\" or \"..\" parts"
    static const struct {
        const char *text; /* '@': a valid hash */
        const char *error;
    } cases[] = {
        {"ftpipe manifest 2\n", "cache/manifests/k:1: not an ftpipe manifest: expected \"ftpipe manifest 1\""},
        {"ftpipe manifest 1\nblob 644 1 @ a\n", "cache/manifests/k:2: the type must be file, dir or link"},
        {"ftpipe manifest 1\nfile 644 1 @ b\nfile 644 1 @ a\n", NOT_CANONICAL},
        {"ftpipe manifest 1\nfile 644 01 @ a\n", "cache/manifests/k:2: the size must be a decimal number of bytes"},
        {"ftpipe manifest 1\nfile 600 1 @ a\n",
         "cache/manifests/k:2: the mode must be 644 or 755 for a file, 755 for a folder, 777 for a link"},
        {"ftpipe manifest 1\nfile 644 1 @ ../a\n", NOT_RELATIVE},
        {"ftpipe manifest 1\nfile 644 1 @ /etc/passwd\n", NOT_RELATIVE},
        {"ftpipe manifest 1\nfile 644 1 @ a/b\n", "cache/manifests/k: a/b is listed but its folder is not"},
        {"ftpipe manifest 1\nfile 644 1 @ .\nfile 644 1 @ a\n",
         "cache/manifests/k: the entry \".\" (a file or link output) must be the only entry"},
        {"ftpipe manifest 1\nfile 644 1 @ a\\q\n",
         "cache/manifests/k:2: a backslash in a name must start \\xHH (two hex digits, not 00)"},
        {"ftpipe manifest 1\nfile 644 1 @ a", "cache/manifests/k:2: the last line does not end with a newline"},
        {"ftpipe manifest 1\nlink 777 1 @ a -> b\n", NOT_CANONICAL},
        {"ftpipe manifest 1\nfile 644 1 xyz a\n", "cache/manifests/k:2: the hash must be 32 hex digits"},
        {"ftpipe manifest 1\nfile 644 1\n",
         "cache/manifests/k:2: expected \"TYPE MODE SIZE HASH PATH\" or a link's \"... PATH -> TARGET\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = with_hash(cases[i].text);
        check_parse_error(text, cases[i].error);
        free(text);
    }
#undef NOT_CANONICAL
#undef NOT_RELATIVE
}

int main(void)
{
    temporary_dir = fixture_temporary_dir("manifest");
    if (!temporary_dir)
        return 1;
    RUN(walks_a_folder_into_canonical_text);
    RUN(parse_round_trips_exactly);
    RUN(single_file_link_and_empty_folder);
    RUN(hash_follows_names_modes_and_content);
    RUN(refuses_special_files);
    RUN(stat_cache_spares_unchanged_files);
    RUN(any_hash_cache_serves_the_manifest);
    RUN(parse_rejects_what_it_would_not_write);
    ft_remove_tree(temporary_dir);
    return check_done();
}
