/* random: counter-based random numbers. A value is a pure function of
 * (seed, index), so every backend, every thread order and a resumed run draw the
 * same numbers without carrying generator state around. */
#ifndef FTPIPE_RANDOM_H
#define FTPIPE_RANDOM_H

#include <math.h>
#include <stdint.h>

/* SplitMix64's finalizer: a bijection that scatters every input bit. */
static inline uint64_t ft_random_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A sub-seed for one independent stream (a tensor, a layer, a step). */
static inline uint64_t ft_random_stream(uint64_t seed, uint64_t stream)
{
    return ft_random_mix(seed ^ ft_random_mix(stream ^ 0x5851f42d4c957f2dULL));
}

static inline uint64_t ft_random_u64(uint64_t seed, uint64_t index)
{
    return ft_random_mix(seed ^ ft_random_mix(index));
}

/* Uniform in [0, 1), 24 bits: exactly representable as a float. */
static inline float ft_random_uniform(uint64_t seed, uint64_t index)
{
    return (float)(ft_random_u64(seed, index) >> 40) * (1.0f / 16777216.0f);
}

/* Standard normal (Box-Muller on two 53-bit uniforms). */
static inline double ft_random_normal(uint64_t seed, uint64_t index)
{
    uint64_t bits = ft_random_u64(seed, index);
    double u1 = ((double)(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(ft_random_u64(seed ^ 0xd1b54a32d192ed03ULL, index) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
