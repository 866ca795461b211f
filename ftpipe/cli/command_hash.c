/* command_hash: `ftpipe hash [--threads N] PATH...` prints "<hash>  <path>" per
 * path, as `xxh128sum` does: a regular file's content hash (equal to
 * xxh128sum's up to 64 MiB), anything else's manifest hash (a folder, or a
 * symbolic link kept as a link). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/hash.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/cli/commands.h"
#include "ftpipe/engine/manifest.h"

#define USAGE "usage: ftpipe hash [--threads N] PATH..."

static int parse_threads(const char *text, int *threads)
{
    char *end;
    long value = strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < 0 || value > 1024)
        return ft_error("--threads takes a number from 0 (one per core) to 1024, not \"%s\"; " USAGE, text);
    *threads = (int)value;
    return 0;
}

int ft_command_hash(int argc, char **argv)
{
    int threads = 0;
    const char **paths = ft_xcalloc((size_t)argc + 1, sizeof *paths);
    size_t n_paths = 0;
    for (int i = 0; i < argc; i++) {
        const char *value = NULL;
        if (strcmp(argv[i], "--threads") == 0) {
            if (i + 1 == argc) {
                free(paths);
                ft_error("--threads needs a number; " USAGE);
                return 2;
            }
            value = argv[++i];
        } else if (strncmp(argv[i], "--threads=", 10) == 0) {
            value = argv[i] + 10;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0' && strcmp(argv[i], "--") != 0) {
            free(paths);
            ft_error("unknown option %s; " USAGE, argv[i]);
            return 2;
        } else if (strcmp(argv[i], "--") != 0) {
            paths[n_paths++] = argv[i];
        }
        if (value && parse_threads(value, &threads) != 0) {
            free(paths);
            return 2;
        }
    }
    if (n_paths == 0) {
        free(paths);
        ft_error("no path to hash; " USAGE);
        return 2;
    }

    /* Regular files are hashed together, so many small ones share the threads. */
    ft_hash *hashes = ft_xcalloc(n_paths, sizeof *hashes);
    const char **files = ft_xcalloc(n_paths, sizeof *files);
    size_t *file_index = ft_xcalloc(n_paths, sizeof *file_index);
    size_t n_files = 0;
    int result = 0;
    for (size_t i = 0; i < n_paths && result == 0; i++) {
        struct stat st;
        if (lstat(paths[i], &st) == 0 && S_ISREG(st.st_mode)) {
            file_index[n_files] = i;
            files[n_files++] = paths[i];
            continue;
        }
        ft_manifest *manifest;
        result = ft_manifest_build(NULL, paths[i], threads, &manifest);
        if (result == 0) {
            hashes[i] = manifest->hash;
            ft_manifest_free(manifest);
        }
    }
    ft_hash *file_hashes = ft_xcalloc(n_files + 1, sizeof *file_hashes);
    if (result == 0 && n_files > 0)
        result = ft_hash_files(files, n_files, threads, file_hashes);
    for (size_t k = 0; k < n_files && result == 0; k++)
        hashes[file_index[k]] = file_hashes[k];
    for (size_t i = 0; i < n_paths && result == 0; i++) {
        char hex[FT_HASH_HEX_LENGTH + 1];
        ft_hash_to_hex(hashes[i], hex);
        printf("%s  %s\n", hex, paths[i]);
    }
    if (result == 0 && (fflush(stdout) != 0 || ferror(stdout)))
        result = ft_error_errno("cannot write the hashes");
    free(file_hashes);
    free(file_index);
    free(files);
    free(hashes);
    free(paths);
    return result == 0 ? 0 : 1;
}
