/* random: counter-based random numbers. A value is a pure function of
 * (seed, index), so every backend, every thread order and a resumed run draw the
 * same numbers without carrying generator state around. The cuda kernels include
 * this header too, so the cpu and cuda dropout masks are the same bits. */
#ifndef FTPIPE_RANDOM_H
#define FTPIPE_RANDOM_H

#include <stdint.h>

#ifdef __CUDACC__
#define FT_HOST_DEVICE __host__ __device__
#else
#define FT_HOST_DEVICE
#endif

/* SplitMix64's finalizer: a bijection that scatters every input bit. */
FT_HOST_DEVICE static inline uint64_t ft_random_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A sub-seed for one independent stream (a tensor, a layer, a step). */
FT_HOST_DEVICE static inline uint64_t ft_random_stream(uint64_t seed, uint64_t stream)
{
    return ft_random_mix(seed ^ ft_random_mix(stream ^ 0x5851f42d4c957f2dULL));
}

FT_HOST_DEVICE static inline uint64_t ft_random_u64(uint64_t seed, uint64_t index)
{
    return ft_random_mix(seed ^ ft_random_mix(index));
}

/* Uniform in [0, 1), 24 bits: exactly representable as a float. */
FT_HOST_DEVICE static inline float ft_random_uniform(uint64_t seed, uint64_t index)
{
    return (float)(ft_random_u64(seed, index) >> 40) * (1.0f / 16777216.0f);
}

/* Close to a standard normal: the sum of twelve uniforms, minus six (mean 0,
 * variance 1, within +-6). Integer work only: no libm call per number. */
FT_HOST_DEVICE static inline double ft_random_normal(uint64_t seed, uint64_t index)
{
    uint64_t sum = 0;
    for (uint64_t draw = 0; draw < 3; draw++) {
        uint64_t bits = ft_random_u64(seed, index * 3 + draw);
        for (int part = 0; part < 4; part++, bits >>= 16)
            sum += bits & 0xffff;
    }
    return (double)sum * (1.0 / 65536.0) - 6.0;
}

#endif
