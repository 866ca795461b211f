/* dtype: see include/ftpipe/base/dtype.h. */
#include "ftpipe/base/dtype.h"

#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [FT_DTYPE_F32] = {"F32", 4}, [FT_DTYPE_F16] = {"F16", 2}, [FT_DTYPE_BF16] = {"BF16", 2},
    [FT_DTYPE_F64] = {"F64", 8}, [FT_DTYPE_I64] = {"I64", 8}, [FT_DTYPE_I32] = {"I32", 4},
    [FT_DTYPE_I16] = {"I16", 2}, [FT_DTYPE_I8] = {"I8", 1},   [FT_DTYPE_U8] = {"U8", 1},
    [FT_DTYPE_BOOL] = {"BOOL", 1},
};
#define N_DTYPES (sizeof dtype_table / sizeof dtype_table[0])

size_t ft_dtype_size(ft_dtype dtype) { return (size_t)dtype < N_DTYPES ? dtype_table[dtype].size : 0; }

const char *ft_dtype_name(ft_dtype dtype)
{
    return (size_t)dtype < N_DTYPES ? dtype_table[dtype].name : "?";
}

int ft_dtype_from_name(const char *name, ft_dtype *out)
{
    for (size_t i = 0; i < N_DTYPES; i++)
        if (strcmp(dtype_table[i].name, name) == 0) {
            *out = (ft_dtype)i;
            return 0;
        }
    return -1;
}

uint16_t ft_f32_to_bf16(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign and payload top, stay a NaN */
        return (uint16_t)((bits >> 16) | 0x0040u);
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

uint16_t ft_f32_to_f16(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    uint32_t sign = (bits >> 16) & 0x8000u, exponent = (bits >> 23) & 0xffu, mantissa = bits & 0x7fffffu;
    if (exponent == 0xff) /* inf, nan */
        return (uint16_t)(sign | 0x7c00u | (mantissa ? 0x200u : 0u));
    int half_exponent = (int)exponent - 127 + 15;
    if (half_exponent >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (half_exponent <= 0) { /* subnormal or zero */
        if (half_exponent < -10)
            return (uint16_t)sign;
        mantissa |= 0x800000u;
        int shift = 14 - half_exponent;
        uint32_t half = mantissa >> shift, rest = mantissa & ((1u << shift) - 1), middle = 1u << (shift - 1);
        half += rest > middle || (rest == middle && (half & 1u));
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)half_exponent << 10) | (mantissa >> 13), rest = mantissa & 0x1fffu;
    half += rest > 0x1000u || (rest == 0x1000u && (half & 1u)); /* a carry into the exponent is right */
    return (uint16_t)(sign | half);
}

float ft_bf16_to_f32(uint16_t value)
{
    uint32_t bits = (uint32_t)value << 16;
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}

float ft_f16_to_f32(uint16_t value)
{
    uint32_t sign = (uint32_t)(value & 0x8000u) << 16;
    uint32_t exponent = (value >> 10) & 0x1fu;
    uint32_t mantissa = value & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else { /* subnormal: normalise into float's wider exponent range */
        exponent = 113;
        while (!(mantissa & 0x400u)) {
            mantissa <<= 1;
            exponent--;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float result;
    memcpy(&result, &bits, sizeof result);
    return result;
}
