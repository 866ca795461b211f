/* The host collectives between forked ranks: all-reduce sums in rank order on
 * every rank (f32 and f64, larger than one chunk), broadcast from any root,
 * all-gather and reduce-scatter in rank order, and a peer that dies is named
 * by the collective that was waiting for it. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/backend/comm_host.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"

/* Runs body in `size` ranks; the children's checks become their exit status. */
static void in_ranks(int size, void (*body)(ft_comm *comm))
{
    pid_t children[8];
    ft_comm *comm = NULL;
    int rank = ft_comm_host_fork(size, &comm, children);
    CHECK(rank >= 0);
    if (rank < 0)
        return;
    CHECK_INT(comm->rank, rank);
    CHECK_INT(comm->size, size);
    body(comm);
    ft_comm_destroy(comm);
    if (rank != 0)
        _exit(check_case_failed);
    for (int k = 1; k < size; k++) {
        int status = 0;
        CHECK_INT(waitpid(children[k], &status, 0), children[k]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

/* Values whose float sum depends on the order of the additions. */
static float part(int rank, size_t i) { return (float)((i % 7) + 1) * (rank % 2 ? 1e-8f : 1.0f) + (float)rank * 0.1f; }

static void sums_in_rank_order(ft_comm *comm)
{
    size_t count = (1 << 20) / sizeof(float) * 2 + 3; /* more than two chunks */
    float *data = ft_xmalloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++)
        data[i] = part(comm->rank, i);
    CHECK_INT(comm->all_reduce_sum(comm, data, count, FT_COMM_F32), 0);
    int wrong = 0;
    for (size_t i = 0; i < count; i++) {
        float expected = part(0, i);
        for (int k = 1; k < comm->size; k++)
            expected += part(k, i);
        wrong += data[i] != expected;
    }
    CHECK_INT(wrong, 0);
    double value = 0.25 * (comm->rank + 1);
    CHECK_INT(comm->all_reduce_sum(comm, &value, 1, FT_COMM_F64), 0);
    CHECK(value == 0.25 * comm->size * (comm->size + 1) / 2);
    free(data);
}
TEST(all_reduce_2_and_4_ranks)
{
    in_ranks(2, sums_in_rank_order);
    in_ranks(4, sums_in_rank_order);
}

static void moves_data(ft_comm *comm)
{
    for (int root = 0; root < comm->size; root++) {
        int value[3] = {comm->rank, comm->rank * 10, -1};
        CHECK_INT(comm->broadcast(comm, value, sizeof value, root), 0);
        CHECK_INT(value[0], root);
        CHECK_INT(value[1], root * 10);
    }
    int mine[2] = {comm->rank, 100 + comm->rank}, all[8] = {0};
    CHECK_INT(comm->all_gather(comm, mine, all, sizeof mine), 0);
    for (int k = 0; k < comm->size; k++) {
        CHECK_INT(all[2 * k], k);
        CHECK_INT(all[2 * k + 1], 100 + k);
    }
    float in[8], out[2];
    for (int i = 0; i < 2 * comm->size; i++)
        in[i] = (float)(i * (comm->rank + 1));
    CHECK_INT(comm->reduce_scatter_sum(comm, in, out, 2, FT_COMM_F32), 0);
    float ranks_sum = (float)(comm->size * (comm->size + 1) / 2);
    CHECK(out[0] == (float)(2 * comm->rank) * ranks_sum);
    CHECK(out[1] == (float)(2 * comm->rank + 1) * ranks_sum);
}
TEST(broadcast_gather_scatter)
{
    in_ranks(3, moves_data);
}

TEST(a_dead_peer_is_named)
{
    pid_t children[3];
    ft_comm *comm = NULL;
    int rank = ft_comm_host_fork(3, &comm, children);
    if (rank == 2)
        raise(SIGKILL);
    float value = 1.0f;
    int status = comm->all_reduce_sum(comm, &value, 1, FT_COMM_F32);
    if (rank == 1) { /* rank 0 aborts once it sees rank 2 gone: rank 1 is told too */
        int failed = status == 0 || !strstr(ft_error_message(), "rank 0 (pid ");
        ft_comm_destroy(comm);
        _exit(failed);
    }
    CHECK_INT(status, -1);
    char expected[64];
    snprintf(expected, sizeof expected, "rank 2 (pid %d on ", (int)children[2]);
    CHECK(strstr(ft_error_message(), expected) != NULL);
    CHECK(strstr(ft_error_message(), "closed its connection during an all-reduce") != NULL);
    CHECK_INT(comm->lost_rank, 2);
    comm->abort(comm);
    ft_comm_destroy(comm);
    for (int k = 1; k < 3; k++) {
        int wait_status = 0;
        waitpid(children[k], &wait_status, 0);
        if (k == 1)
            CHECK(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
        else
            CHECK(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL);
    }
}

int main(void)
{
    RUN(all_reduce_2_and_4_ranks);
    RUN(broadcast_gather_scatter);
    RUN(a_dead_peer_is_named);
    return check_done();
}
