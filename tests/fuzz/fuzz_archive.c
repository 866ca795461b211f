/* libFuzzer target for archive entries: any bytes as an archive (tar, its
 * compressed kinds, zip) are unpacked into an empty folder or refused with a
 * message; nothing is ever written outside that folder, and no more than
 * max_size bytes are.
 *   make fuzz && build/fuzz/fuzz_archive -max_total_time=600 tests/fuzz/corpus/archive */
#include "fuzz_input.h"

#include <dirent.h>

#include "ftpipe/transfer/archive_extract.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *archive = fuzz_file("input.archive", data, size);
    char *inside = ft_path_join(fuzz_folder(), "box");
    char *destination = ft_path_join(inside, "out");
    if (ft_mkdir_p(inside) != 0)
        abort();
    ft_extract_options options = {.max_total_bytes = 1 << 20, .strip_components = (int)(size % 3)};
    ft_extract_summary summary;
    if (ft_archive_extract(archive, destination, &options, &summary) != 0)
        fuzz_check_refusal();
    else if (summary.total_bytes > options.max_total_bytes)
        abort();
    /* The box holds only out/: an entry that escaped the destination would sit beside it
     * (or further up, in the fuzz folder beside the archive). */
    const char *folders[] = {inside, fuzz_folder()};
    const char *allowed[] = {"out", "box"};
    for (int f = 0; f < 2; f++) {
        DIR *dir = opendir(folders[f]);
        if (!dir)
            abort();
        struct dirent *entry;
        while ((entry = readdir(dir)))
            if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0 &&
                strcmp(entry->d_name, allowed[f]) != 0 && strcmp(entry->d_name, "input.archive") != 0)
                abort();
        closedir(dir);
    }
    free(destination);
    free(inside);
    free(archive);
    return 0;
}
