/* Tests of host_memory: the figures exist and follow what the process touches. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ftpipe/base/host_memory.h"

TEST(reads_available_resident_and_peak)
{
    CHECK(ft_host_available_bytes() > 0);
    uint64_t resident = ft_host_resident_bytes(), peak = ft_host_peak_resident_bytes();
    CHECK(resident > 0);
    CHECK(peak >= resident);
}

TEST(the_peak_grows_by_what_is_touched_and_stays)
{
    uint64_t before = ft_host_peak_resident_bytes();
    size_t bytes = (size_t)64 << 20;
    char *block = malloc(bytes);
    CHECK(block != NULL);
    memset(block, 1, bytes);
    uint64_t during = ft_host_peak_resident_bytes();
    volatile char sink = block[bytes - 1];
    (void)sink;
    free(block);
    CHECK(during >= before + bytes - ((uint64_t)4 << 20));
    CHECK(ft_host_peak_resident_bytes() >= during);
}

int main(void)
{
    RUN(reads_available_resident_and_peak);
    RUN(the_peak_grows_by_what_is_touched_and_stays);
    return check_done();
}
