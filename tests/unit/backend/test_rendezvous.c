/* Ranks meeting over TCP on loopback: three join and all-reduce; a rank whose
 * agreement differs is refused on both sides, naming its node and the line that
 * differs; a missing rank and a wrong port fail within the timeout, naming the
 * host and port. */
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "ftpipe/backend/rendezvous.h"
#include "ftpipe/base/error.h"

/* A port nothing listens on now (the kernel's choice). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof address;
    bind(fd, (struct sockaddr *)&address, sizeof address);
    getsockname(fd, (struct sockaddr *)&address, &length);
    close(fd);
    return ntohs(address.sin_port);
}

static ft_rendezvous_options options(int port, int rank, int size, const char *agreement)
{
    return (ft_rendezvous_options){"127.0.0.1", port, rank, size, rank, 2000, agreement};
}

/* Forks ranks 1..size-1 running `child` (exit status: its failures); returns their pids. */
static void fork_ranks(int size, pid_t *pids, int (*child)(int rank))
{
    for (int k = 1; k < size; k++) {
        pids[k] = fork();
        if (pids[k] == 0)
            _exit(child(k));
    }
}

static int wait_ok(pid_t pid)
{
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int port;

static int joins_and_adds(int rank)
{
    ft_comm *comm = NULL;
    ft_rendezvous_options o = options(port, rank, 3, "key abc\n");
    if (ft_rendezvous_tcp(&o, &comm) < 0)
        return 1;
    double value = rank + 1;
    int failed = comm->all_reduce_sum(comm, &value, 1, FT_COMM_F64) < 0 || value != 6.0;
    ft_comm_destroy(comm);
    return failed;
}
TEST(three_ranks_join_and_all_reduce)
{
    port = free_port();
    pid_t pids[3];
    fork_ranks(3, pids, joins_and_adds);
    CHECK_INT(joins_and_adds(0), 0);
    CHECK(wait_ok(pids[1]) && wait_ok(pids[2]));
}

static int brings_other_data(int rank)
{
    ft_comm *comm = NULL;
    ft_rendezvous_options o = options(port, rank, 2, "key 111\ninput data/train.json 222\n");
    return !(ft_rendezvous_tcp(&o, &comm) == -1 && strstr(ft_error_message(), "refused the job: node 1 ("));
}
TEST(other_data_is_refused_naming_what_differs)
{
    port = free_port();
    pid_t pids[2];
    fork_ranks(2, pids, brings_other_data);
    ft_comm *comm = NULL;
    ft_rendezvous_options o = options(port, 0, 2, "key 000\ninput data/train.json 999\n");
    CHECK_INT(ft_rendezvous_tcp(&o, &comm), -1);
    const char *message = ft_error_message();
    CHECK(strstr(message, "node 1 (") != NULL);
    CHECK(strstr(message, "its data or pipeline differs; key is 111 there, 000 on node 0; input data/train.json is "
                          "222 there, 999 on node 0") != NULL);
    CHECK(wait_ok(pids[1]));
}

TEST(a_missing_rank_fails_naming_the_port)
{
    port = free_port();
    ft_comm *comm = NULL;
    ft_rendezvous_options o = options(port, 0, 3, "");
    o.timeout_ms = 500;
    CHECK_INT(ft_rendezvous_tcp(&o, &comm), -1);
    char expected[128];
    snprintf(expected, sizeof expected, "waited 0 s on port %d for 2 of 3 ranks; missing: 1 2: ", port);
    CHECK(strstr(ft_error_message(), expected) != NULL);
}

TEST(a_wrong_port_fails_naming_host_and_port)
{
    int wrong = free_port();
    ft_comm *comm = NULL;
    ft_rendezvous_options o = options(wrong, 1, 2, "");
    o.timeout_ms = 500;
    CHECK_INT(ft_rendezvous_tcp(&o, &comm), -1);
    char expected[128];
    snprintf(expected, sizeof expected, "rank 1 (node 1) could not reach rank 0 at 127.0.0.1:%d within 0 s", wrong);
    CHECK(strstr(ft_error_message(), expected) != NULL);
}

int main(void)
{
    RUN(three_ranks_join_and_all_reduce);
    RUN(other_data_is_refused_naming_what_differs);
    RUN(a_missing_rank_fails_naming_the_port);
    RUN(a_wrong_port_fails_naming_host_and_port);
    return check_done();
}
