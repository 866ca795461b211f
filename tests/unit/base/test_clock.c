/* Tests of clock: the monotonic clock moves forward by what was slept, the
 * wall clock agrees with time(), and CPU time counts work, not sleep. */
#include <stdbool.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/base/clock.h"

TEST(monotonic_clock_measures_a_sleep)
{
    uint64_t start = ft_now_ns();
    usleep(20000);
    uint64_t end = ft_now_ns();
    CHECK(end - start >= 20000000u);
    CHECK(end - start < 5000000000u);
    double elapsed = ft_elapsed_ms(start);
    CHECK(elapsed >= 20.0);
}

TEST(wall_clock_is_milliseconds_since_the_epoch)
{
    time_t before = time(NULL);
    int64_t ms = ft_wall_ms();
    time_t after = time(NULL);
    CHECK(ms / 1000 >= (int64_t)before && ms / 1000 <= (int64_t)after);
}

/* In a child, which has only its own thread: the parent's other threads (OpenBLAS's
 * pool, started when the library loads, spins a while) add CPU time of their own. */
static bool sleeping_costs_little_cpu(void)
{
    pid_t child = fork();
    if (child == 0) {
        uint64_t start = ft_process_cpu_ns();
        usleep(50000);
        _exit(ft_process_cpu_ns() - start < 40000000u ? 0 : 1);
    }
    int status = 0;
    return child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST(process_cpu_time_counts_work_and_not_sleep)
{
    CHECK(sleeping_costs_little_cpu());
    volatile double sum = 0.0;
    uint64_t busy_start = ft_process_cpu_ns(), wall_start = ft_now_ns();
    while (ft_now_ns() - wall_start < 30000000u)
        sum += 1.0;
    CHECK(ft_process_cpu_ns() > busy_start);
}

int main(void)
{
    RUN(monotonic_clock_measures_a_sleep);
    RUN(wall_clock_is_milliseconds_since_the_epoch);
    RUN(process_cpu_time_counts_work_and_not_sleep);
    return check_done();
}
