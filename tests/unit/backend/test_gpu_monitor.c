/* Tests of gpu_monitor: without a GPU (or its driver) it is absent and says so;
 * with one, its samples are sane. */
#include <string.h>

#include "check.h"
#include "ftpipe/backend/gpu_monitor.h"
#include "ftpipe/base/error.h"

TEST(absent_says_why_or_samples_are_sane)
{
    ft_gpu_monitor *monitor = ft_gpu_monitor_open(0);
    if (!monitor) {
        CHECK(strncmp(ft_error_message(), "no GPU monitor: ", 16) == 0);
        printf("# no GPU monitor here: %s\n", ft_error_message());
        return;
    }
    ft_gpu_sample sample;
    CHECK_INT(ft_gpu_monitor_sample(monitor, &sample), 0);
    CHECK(sample.memory_total_bytes > 0 && sample.memory_used_bytes <= sample.memory_total_bytes);
    CHECK(sample.utilization_percent <= 100);
    CHECK(sample.temperature_c > 0 && sample.temperature_c < 150);
    printf("# GPU: %llu of %llu bytes used, %u%%, %u C\n", (unsigned long long)sample.memory_used_bytes,
           (unsigned long long)sample.memory_total_bytes, sample.utilization_percent, sample.temperature_c);
    ft_gpu_monitor_close(monitor);
}

TEST(a_gpu_that_is_not_there_is_refused)
{
    ft_gpu_monitor *monitor = ft_gpu_monitor_open(4096);
    CHECK(monitor == NULL);
    CHECK(strncmp(ft_error_message(), "no GPU monitor: ", 16) == 0);
}

int main(void)
{
    RUN(absent_says_why_or_samples_are_sane);
    RUN(a_gpu_that_is_not_there_is_refused);
    return check_done();
}
