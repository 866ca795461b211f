/* host_floats: floats go up and come back as they are on an fp32 backend, and
 * as bf16 (rounded to nearest even, widened exactly) on a bf16 one: the cpu
 * backend's memory ops under a BF16 dtype show the stored bits; converted on
 * the host, they are the bits an upload stores. */
#include <stdint.h>

#include "check.h"
#include "ftpipe/backend/host_floats.h"
#include "ftpipe/base/dtype.h"

TEST(floats_travel_unchanged_on_an_fp32_backend)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    float floats[5] = {1.0f, -2.5f, 3.14159265f, 1e-20f, 65504.0f}, back[5];
    void *device = cpu->alloc(cpu, sizeof floats);
    ft_backend_upload_floats(cpu, device, floats, 5);
    ft_backend_download_floats(cpu, back, device, 5);
    CHECK(memcmp(floats, back, sizeof floats) == 0);
    cpu->free(cpu, device);
    ft_backend_destroy(cpu);
}

TEST(floats_travel_as_bf16_on_a_bf16_backend)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    ft_backend bf16 = *cpu;
    bf16.dtype = FT_DTYPE_BF16;
    float floats[4] = {1.0f, 3.14159265f, -1.00390625f /* halfway: to even */, 1e-20f}, back[4];
    uint16_t *device = bf16.alloc(&bf16, sizeof floats);
    ft_backend_upload_floats(&bf16, device, floats, 4);
    CHECK_INT(device[0], 0x3f80);
    CHECK_INT(device[1], 0x4049);
    CHECK_INT(device[2], 0xbf80);
    ft_backend_download_floats(&bf16, back, device, 4);
    CHECK(back[0] == 1.0f && back[1] == 3.140625f && back[2] == -1.0f);
    CHECK(back[3] == ft_bf16_to_f32(ft_f32_to_bf16(1e-20f)));
    bf16.free(&bf16, device);
    ft_backend_destroy(cpu);
}

TEST(a_host_conversion_makes_the_bits_an_upload_stores)
{
    ft_backend *cpu = ft_backend_cpu_create(1);
    ft_backend bf16 = *cpu;
    bf16.dtype = FT_DTYPE_BF16;
    float floats[4] = {1.0f, 3.14159265f, -1.00390625f, 1e-20f};
    uint16_t halves[4], uploaded[4];
    ft_backend_convert_floats(&bf16, halves, floats, 4);
    ft_backend_upload_floats(&bf16, uploaded, floats, 4);
    CHECK(memcmp(halves, uploaded, sizeof halves) == 0);
    CHECK_INT(halves[1], 0x4049);
    float copied[4];
    ft_backend_convert_floats(cpu, copied, floats, 4);
    CHECK(memcmp(copied, floats, sizeof floats) == 0);
    ft_backend_destroy(cpu);
}

int main(void)
{
    RUN(floats_travel_unchanged_on_an_fp32_backend);
    RUN(floats_travel_as_bf16_on_a_bf16_backend);
    RUN(a_host_conversion_makes_the_bits_an_upload_stores);
    return check_done();
}
