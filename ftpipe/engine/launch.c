/* launch: this process's place in a job of several nodes, from the environment. */
#include "ftpipe/engine/launch.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ftpipe/base/error.h"

/* A variable's integer value in [low, high]; 0 when unset, 1 when read, -1 with ft_error. */
static int read_int(const char *name, long low, long high, int *out)
{
    const char *text = getenv(name);
    if (!text || !*text)
        return 0;
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || *end || value < low || value > high)
        return ft_error("%s=%s: expected a whole number from %ld to %ld", name, text, low, high);
    *out = (int)value;
    return 1;
}

int ft_launch_first_host(const char *node_list, char *out, size_t out_size)
{
    size_t n = 0;
    const char *at = node_list;
    while (*at && *at != ',' && *at != '[' && n + 1 < out_size)
        out[n++] = *at++;
    if (*at == '[') /* a range: its first number, zero padding kept */
        for (at++; *at >= '0' && *at <= '9' && n + 1 < out_size; at++)
            out[n++] = *at;
    out[n] = '\0';
    if (n == 0)
        return ft_error("SLURM_JOB_NODELIST=%s: expected a host list such as node[01-04]", node_list);
    return 0;
}

static int read_torchrun(ft_launch *out)
{
    int found = read_int("NNODES", 1, 65536, &out->nnodes);
    if (found < 0 || read_int("NODE_RANK", 0, 65535, &out->node_rank) < 0 ||
        read_int("NPROC_PER_NODE", 1, 4096, &out->nproc_per_node) < 0)
        return -1;
    if (found == 0) { /* one rank per process */
        int world = 0, rank = 0;
        if (read_int("WORLD_SIZE", 1, 1 << 20, &world) < 0 || read_int("RANK", 0, (1 << 20) - 1, &rank) < 0)
            return -1;
        if (world > 1) {
            out->nnodes = world;
            out->node_rank = rank;
            out->nproc_per_node = 1;
        }
    }
    return 0;
}

static int read_slurm(ft_launch *out)
{
    int tasks = 0, task = 0;
    if (read_int("SLURM_NTASKS", 1, 65536, &tasks) < 0 || read_int("SLURM_PROCID", 0, 65535, &task) < 0)
        return -1;
    if (tasks <= 1)
        return 0;
    out->nnodes = tasks;
    out->node_rank = task;
    out->source = "slurm";
    const char *list = getenv("SLURM_JOB_NODELIST");
    if (!list)
        list = getenv("SLURM_NODELIST");
    if (!getenv("MASTER_ADDR") && list)
        return ft_launch_first_host(list, out->master_addr, sizeof out->master_addr);
    return 0;
}

int ft_launch_from_env(ft_launch *out)
{
    memset(out, 0, sizeof *out);
    out->nnodes = 1;
    out->master_port = FT_LAUNCH_DEFAULT_PORT;
    out->source = "";
    if (read_torchrun(out) < 0)
        return -1;
    if (out->nnodes > 1)
        out->source = "torchrun";
    else if (read_slurm(out) < 0)
        return -1;
    if (read_int("MASTER_PORT", 1, 65535, &out->master_port) < 0)
        return -1;
    const char *addr = getenv("MASTER_ADDR");
    if (addr && *addr)
        snprintf(out->master_addr, sizeof out->master_addr, "%s", addr);
    if (out->nnodes <= 1)
        return 0;
    if (out->node_rank >= out->nnodes)
        return ft_error("node rank %d of %d nodes (%s): expected a rank below the node count", out->node_rank,
                        out->nnodes, out->source);
    if (!out->master_addr[0])
        return ft_error("a job of %d nodes (%s) needs MASTER_ADDR: the host of node 0, which every node can reach",
                        out->nnodes, out->source);
    return 0;
}
