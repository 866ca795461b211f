/* Helpers shared by the fuzz targets: the input as a file in a private folder
 * (most readers take paths), and the rule every refusal must keep. */
#ifndef FTPIPE_FUZZ_INPUT_H
#define FTPIPE_FUZZ_INPUT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/fsutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A folder of this process's own, made once and emptied before each input. */
static inline const char *fuzz_folder(void)
{
    static char folder[64];
    if (!folder[0]) {
        snprintf(folder, sizeof folder, "/tmp/ftpipe-fuzz.XXXXXX");
        if (!mkdtemp(folder))
            abort();
    }
    return folder;
}

/* Writes data to FOLDER/name (the folder emptied first); returns the path (caller frees). */
static inline char *fuzz_file(const char *name, const uint8_t *data, size_t size)
{
    const char *folder = fuzz_folder();
    if (ft_remove_tree(folder) != 0 || ft_mkdir_p(folder) != 0)
        abort();
    char *path = ft_path_join(folder, name);
    FILE *file = fopen(path, "wb");
    if (!file || (size > 0 && fwrite(data, 1, size, file) != size) || fclose(file) != 0)
        abort();
    return path;
}

/* The input as a NUL-terminated string (an embedded NUL ends it, as in a C reader). */
static inline char *fuzz_text(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    return text;
}

/* A refusal always says why. */
static inline void fuzz_check_refusal(void)
{
    if (ft_error_message()[0] == '\0')
        abort();
}

#endif
