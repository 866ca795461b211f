/* The job's shape from torchrun's and Slurm's variables: one machine when none
 * is set; NNODES/NODE_RANK; WORLD_SIZE/RANK as one rank per process; Slurm's
 * tasks with node 0 the first host of the list; malformed values named. */
#include <stdlib.h>

#include "check.h"
#include "ftpipe/base/error.h"
#include "ftpipe/engine/launch.h"

static const char *const names[] = {"NNODES", "NODE_RANK", "NPROC_PER_NODE", "WORLD_SIZE", "RANK", "MASTER_ADDR",
                                    "MASTER_PORT", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NODELIST",
                                    "SLURM_NODELIST"};

static void clear(void)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unsetenv(names[i]);
}

TEST(one_machine_without_variables)
{
    clear();
    ft_launch launch;
    CHECK_INT(ft_launch_from_env(&launch), 0);
    CHECK_INT(launch.nnodes, 1);
    CHECK_INT(launch.node_rank, 0);
    CHECK_INT(launch.master_port, FT_LAUNCH_DEFAULT_PORT);
}

TEST(torchrun_variables)
{
    clear();
    setenv("NNODES", "2", 1);
    setenv("NODE_RANK", "1", 1);
    setenv("NPROC_PER_NODE", "8", 1);
    setenv("MASTER_ADDR", "10.0.0.1", 1);
    setenv("MASTER_PORT", "29400", 1);
    ft_launch launch;
    CHECK_INT(ft_launch_from_env(&launch), 0);
    CHECK(launch.nnodes == 2 && launch.node_rank == 1 && launch.nproc_per_node == 8);
    CHECK_STR(launch.master_addr, "10.0.0.1");
    CHECK_INT(launch.master_port, 29400);
    CHECK_STR(launch.source, "torchrun");
    clear();
    setenv("WORLD_SIZE", "4", 1);
    setenv("RANK", "3", 1);
    setenv("MASTER_ADDR", "head", 1);
    CHECK_INT(ft_launch_from_env(&launch), 0);
    CHECK(launch.nnodes == 4 && launch.node_rank == 3 && launch.nproc_per_node == 1);
    unsetenv("MASTER_ADDR");
    CHECK_INT(ft_launch_from_env(&launch), -1);
    CHECK_STR(ft_error_message(), "a job of 4 nodes (torchrun) needs MASTER_ADDR: the host of node 0, which every "
                                  "node can reach");
    setenv("MASTER_ADDR", "head", 1);
    setenv("MASTER_PORT", "http", 1);
    CHECK_INT(ft_launch_from_env(&launch), -1);
    CHECK_STR(ft_error_message(), "MASTER_PORT=http: expected a whole number from 1 to 65535");
}

TEST(slurm_variables)
{
    clear();
    setenv("SLURM_NTASKS", "2", 1);
    setenv("SLURM_PROCID", "1", 1);
    setenv("SLURM_JOB_NODELIST", "gpu[07-08]", 1);
    ft_launch launch;
    CHECK_INT(ft_launch_from_env(&launch), 0);
    CHECK(launch.nnodes == 2 && launch.node_rank == 1);
    CHECK_STR(launch.master_addr, "gpu07");
    CHECK_STR(launch.source, "slurm");
    setenv("SLURM_NTASKS", "1", 1); /* a job of one task is one machine */
    CHECK_INT(ft_launch_from_env(&launch), 0);
    CHECK_INT(launch.nnodes, 1);
    char host[64];
    CHECK_INT(ft_launch_first_host("a1,b2", host, sizeof host), 0);
    CHECK_STR(host, "a1");
    CHECK_INT(ft_launch_first_host("[", host, sizeof host), -1);
    clear();
}

int main(void)
{
    RUN(one_machine_without_variables);
    RUN(torchrun_variables);
    RUN(slurm_variables);
    return check_done();
}
