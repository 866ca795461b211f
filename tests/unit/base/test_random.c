/* Tests of random: the mixer's values are pinned, since the cpu and the cuda
 * dropout masks both draw from this one header and a resumed run must draw what
 * the first run drew. The expected values are SplitMix64's published finalizer. */
#include <stdint.h>

#include "check.h"
#include "ftpipe/base/random.h"

TEST(mixer_values_are_pinned)
{
    CHECK(ft_random_mix(0) == 0xe220a8397b1dcdafULL);
    CHECK(ft_random_mix(1) == 0x910a2dec89025cc1ULL);
    CHECK(ft_random_u64(42, 7) == 0x6eab8625df268fbcULL);
    CHECK(ft_random_stream(42, 3) == 0x206b67ead0ff2b94ULL);
}

TEST(uniform_is_the_top_24_bits)
{
    CHECK(ft_random_uniform(42, 7) == 7252870.0f / 16777216.0f);
    CHECK(ft_random_uniform(1234, 99) == 14739180.0f / 16777216.0f);
    for (uint64_t i = 0; i < 1000; i++) {
        float value = ft_random_uniform(5, i);
        CHECK(value >= 0.0f && value < 1.0f);
    }
}

TEST(normal_is_centred_and_bounded)
{
    double sum = 0;
    for (uint64_t i = 0; i < 10000; i++) {
        double value = ft_random_normal(9, i);
        CHECK(value >= -6.0 && value <= 6.0);
        sum += value;
    }
    CHECK(sum / 10000 > -0.05 && sum / 10000 < 0.05);
}

int main(void)
{
    RUN(mixer_values_are_pinned);
    RUN(uniform_is_the_top_24_bits);
    RUN(normal_is_centred_and_bounded);
    return check_done();
}
