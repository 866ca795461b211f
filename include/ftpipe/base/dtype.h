/* dtype: the element types of tensors, by safetensors' names, and the rounding
 * conversions between the float formats, as torch rounds (to nearest even). */
#ifndef FTPIPE_DTYPE_H
#define FTPIPE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FT_DTYPE_F32,
    FT_DTYPE_F16,
    FT_DTYPE_BF16,
    FT_DTYPE_F64,
    FT_DTYPE_I64,
    FT_DTYPE_I32,
    FT_DTYPE_I16,
    FT_DTYPE_I8,
    FT_DTYPE_U8,
    FT_DTYPE_BOOL,
} ft_dtype;

size_t ft_dtype_size(ft_dtype dtype);
const char *ft_dtype_name(ft_dtype dtype); /* "F32", "BF16", ... as safetensors headers write them */
/* By that name; -1 when there is none. */
int ft_dtype_from_name(const char *name, ft_dtype *out);

uint16_t ft_f32_to_bf16(float value);
float ft_bf16_to_f32(uint16_t value);
uint16_t ft_f32_to_f16(float value); /* IEEE half precision, as torch's .half() */
float ft_f16_to_f32(uint16_t value);

#endif
