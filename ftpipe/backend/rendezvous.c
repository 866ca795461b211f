/* rendezvous: ranks on several hosts meet at rank 0 over TCP. */
#include "ftpipe/backend/rendezvous.h"

#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ftpipe/backend/comm_host.h"
#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/base/strbuf.h"

enum { MAGIC = 0x66747031 /* "ftp1" */, MAX_AGREEMENT = 1 << 20, RETRY_MS = 100 };

/* What a rank says when it connects; then agreement_bytes of agreement. */
typedef struct {
    uint32_t magic;
    int32_t rank, size, node_rank, pid;
    uint32_t agreement_bytes;
    char host[64];
} hello;

/* Rank 0's answer: accepted or not, then message_bytes of why. */
typedef struct {
    uint32_t magic;
    int32_t refused;
    uint32_t message_bytes;
} answer;

static int64_t now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Reads or writes all bytes before the deadline; -1 (errno ETIMEDOUT on time-out, EPIPE on a close). */
static int transfer(int fd, void *data, size_t bytes, bool writing, int64_t deadline_ms)
{
    char *at = data;
    while (bytes > 0) {
        int64_t left = deadline_ms - now_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd p = {fd, writing ? POLLOUT : POLLIN, 0};
        int ready = poll(&p, 1, (int)left);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            continue;
        ssize_t n = writing ? send(fd, at, bytes, MSG_NOSIGNAL) : recv(fd, at, bytes, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EPIPE;
            return -1;
        }
        at += n;
        bytes -= (size_t)n;
    }
    return 0;
}

static void this_host(char *out, size_t size)
{
    snprintf(out, size, "?");
    gethostname(out, size);
    out[size - 1] = '\0';
}

static void tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* --- every rank but 0 --- */

static int connect_once(const char *addr, int port, int *fd_out)
{
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *found = NULL;
    int resolved = getaddrinfo(addr, service, &hints, &found);
    if (resolved != 0) {
        errno = EHOSTUNREACH;
        return -2; /* a name that does not resolve will not start to */
    }
    int result = -1;
    for (struct addrinfo *a = found; a && result < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            *fd_out = fd;
            result = 0;
        } else {
            int saved = errno;
            close(fd);
            errno = saved;
        }
    }
    freeaddrinfo(found);
    return result;
}

static int join(const ft_rendezvous_options *o, ft_comm **out)
{
    int64_t deadline = now_ms() + o->timeout_ms;
    int fd = -1, last_errno = 0;
    for (;;) {
        int status = connect_once(o->master_addr, o->master_port, &fd);
        if (status == 0)
            break;
        last_errno = errno;
        if (status == -2)
            return ft_error("rank %d (node %d): the host %s of MASTER_ADDR does not resolve: set MASTER_ADDR to node "
                            "0's host name or address",
                            o->rank, o->node_rank, o->master_addr);
        if (now_ms() + RETRY_MS > deadline)
            return ft_error("rank %d (node %d) could not reach rank 0 at %s:%d within %d s (%s): check that node 0 "
                            "runs the same pipeline with the same MASTER_ADDR and MASTER_PORT, and that the port is "
                            "open between the nodes",
                            o->rank, o->node_rank, o->master_addr, o->master_port, o->timeout_ms / 1000,
                            strerror(last_errno));
        usleep(RETRY_MS * 1000);
    }
    tune(fd);
    hello h = {MAGIC, o->rank, o->size, o->node_rank, (int32_t)getpid(), (uint32_t)strlen(o->agreement), ""};
    this_host(h.host, sizeof h.host);
    answer a;
    if (transfer(fd, &h, sizeof h, true, deadline) < 0 ||
        transfer(fd, (void *)o->agreement, h.agreement_bytes, true, deadline) < 0 ||
        transfer(fd, &a, sizeof a, false, deadline + o->timeout_ms) < 0 || a.magic != MAGIC ||
        a.message_bytes > MAX_AGREEMENT) {
        int saved = errno;
        close(fd);
        return ft_error("rank %d (node %d): rank 0 at %s:%d did not accept it within %d s (%s): every rank of the job "
                        "must join; check that all nodes run",
                        o->rank, o->node_rank, o->master_addr, o->master_port, o->timeout_ms / 1000, strerror(saved));
    }
    char *message = ft_xcalloc(a.message_bytes + 1, 1);
    if (a.message_bytes && transfer(fd, message, a.message_bytes, false, deadline + o->timeout_ms) < 0)
        snprintf(message, a.message_bytes + 1, "(the reason was lost)");
    if (a.refused) {
        close(fd);
        int status = ft_error("rank 0 at %s:%d refused the job: %s", o->master_addr, o->master_port, message);
        free(message);
        return status;
    }
    free(message);
    char name[128];
    snprintf(name, sizeof name, "rank 0 at %s:%d", o->master_addr, o->master_port);
    const char *names[1] = {name};
    *out = ft_comm_host_create(o->rank, o->size, &fd, names);
    return 0;
}

/* --- rank 0 --- */

static int listen_on(int port, int *fd_out)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool v6 = fd >= 0;
    if (!v6)
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return ft_error_errno("cannot open a socket to listen on port %d", port);
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int bound;
    if (v6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 address = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
                                       .sin6_addr = in6addr_any};
        bound = bind(fd, (struct sockaddr *)&address, sizeof address);
    } else {
        struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                      .sin_addr.s_addr = htonl(INADDR_ANY)};
        bound = bind(fd, (struct sockaddr *)&address, sizeof address);
    }
    if (bound != 0 || listen(fd, 128) != 0) {
        int status = ft_error_errno("rank 0 cannot listen on MASTER_PORT %d (another job or program may hold it: "
                                    "choose another MASTER_PORT on every node)",
                                    port);
        close(fd);
        return status;
    }
    *fd_out = fd;
    return 0;
}

/* For the refusal: each line ("NAME VALUE") of `theirs` whose value differs from
 * the same name's in `ours`, or that ours lacks. */
static void describe_difference(ft_strbuf *text, const char *ours, const char *theirs)
{
    const char *line = theirs;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t length = end ? (size_t)(end - line) : strlen(line);
        const char *space = memrchr(line, ' ', length); /* the name may hold spaces, the value not */
        size_t name_length = space ? (size_t)(space - line) : length;
        /* the same name's line in ours */
        const char *mine = NULL;
        for (const char *at = ours; *at;) {
            const char *at_end = strchr(at, '\n');
            size_t at_length = at_end ? (size_t)(at_end - at) : strlen(at);
            if (at_length > name_length && strncmp(at, line, name_length) == 0 && at[name_length] == ' ') {
                mine = at;
                if (at_length != length || strncmp(at, line, length) != 0)
                    ft_strbuf_printf(text, "; %.*s is %.*s there, %.*s on node 0", (int)name_length, line,
                                     (int)(length - name_length - 1), line + name_length + 1,
                                     (int)(at_length - name_length - 1), at + name_length + 1);
                break;
            }
            at = at_end ? at_end + 1 : at + at_length;
        }
        if (!mine)
            ft_strbuf_printf(text, "; %.*s is only there", (int)name_length, line);
        line = end ? end + 1 : line + length;
    }
}

typedef struct {
    int fd;
    hello h;
    char *agreement;
} joined;

static void answer_all(joined *ranks, int size, bool refused, const char *message, int64_t deadline)
{
    answer a = {MAGIC, refused, (uint32_t)strlen(message)};
    for (int k = 1; k < size; k++)
        if (ranks[k].fd >= 0 && transfer(ranks[k].fd, &a, sizeof a, true, deadline) == 0)
            transfer(ranks[k].fd, (void *)message, a.message_bytes, true, deadline);
}

static int host_job(const ft_rendezvous_options *o, ft_comm **out)
{
    int listener = -1;
    if (listen_on(o->master_port, &listener) < 0)
        return -1;
    int64_t deadline = now_ms() + o->timeout_ms;
    joined *ranks = ft_xcalloc((size_t)o->size, sizeof *ranks);
    for (int k = 0; k < o->size; k++)
        ranks[k].fd = -1;
    int missing = o->size - 1, status = 0;
    ft_strbuf problem;
    ft_strbuf_init(&problem);
    while (missing > 0 && status == 0) {
        int64_t left = deadline - now_ms();
        struct pollfd p = {listener, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) == 0)
            break;
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        tune(fd);
        hello h;
        if (transfer(fd, &h, sizeof h, false, deadline) < 0 || h.magic != MAGIC ||
            h.agreement_bytes > MAX_AGREEMENT) {
            close(fd); /* not one of ours, or gone */
            continue;
        }
        h.host[sizeof h.host - 1] = '\0';
        char *agreement = ft_xcalloc(h.agreement_bytes + 1, 1);
        if (transfer(fd, agreement, h.agreement_bytes, false, deadline) < 0) {
            free(agreement);
            close(fd);
            continue;
        }
        if (h.size != o->size || h.rank < 1 || h.rank >= o->size || ranks[h.rank].fd >= 0) {
            ft_strbuf_printf(&problem, "a rank from node %d (%s) says it is rank %d of %d, but this job has %d ranks%s",
                             h.node_rank, h.host, h.rank, h.size, o->size,
                             h.rank >= 1 && h.rank < o->size && ranks[h.rank].fd >= 0 ? " and that rank joined" : "");
            status = -1;
        } else if (strcmp(agreement, o->agreement) != 0) {
            ft_strbuf_printf(&problem, "node %d (%s) computed something else than node 0: its data or pipeline "
                                       "differs",
                             h.node_rank, h.host);
            describe_difference(&problem, o->agreement, agreement);
            status = -1;
        }
        if (h.rank >= 1 && h.rank < o->size && ranks[h.rank].fd < 0) {
            ranks[h.rank] = (joined){fd, h, agreement};
            missing--;
        } else {
            if (status < 0) { /* tell it why before closing */
                answer a = {MAGIC, 1, (uint32_t)problem.length};
                if (transfer(fd, &a, sizeof a, true, deadline) == 0)
                    transfer(fd, problem.data, problem.length, true, deadline);
            }
            free(agreement);
            close(fd);
        }
    }
    close(listener);
    char host[64];
    this_host(host, sizeof host);
    if (status == 0 && missing > 0) {
        ft_strbuf_printf(&problem, "rank 0 on %s waited %d s on port %d for %d of %d ranks; missing:", host,
                         o->timeout_ms / 1000, o->master_port, missing, o->size);
        for (int k = 1, listed = 0; k < o->size && listed < 8; k++)
            if (ranks[k].fd < 0) {
                ft_strbuf_printf(&problem, " %d", k);
                listed++;
            }
        ft_strbuf_printf(&problem, "%s: start the same pipeline on every node with MASTER_ADDR set to this host "
                                   "and MASTER_PORT=%d, and check that the port is open between the nodes",
                         missing > 8 ? " ..." : "", o->master_port);
        status = -1;
    }
    answer_all(ranks, o->size, status < 0, status < 0 ? problem.data : "", now_ms() + 5000);
    if (status < 0) {
        ft_error("%s", problem.data);
        for (int k = 1; k < o->size; k++)
            if (ranks[k].fd >= 0)
                close(ranks[k].fd);
    } else {
        int *fds = ft_xmalloc((size_t)o->size * sizeof *fds);
        char **names = ft_xcalloc((size_t)o->size, sizeof *names);
        fds[0] = -1;
        for (int k = 1; k < o->size; k++) {
            fds[k] = ranks[k].fd;
            names[k] = ft_xasprintf("pid %d on %s, node %d", ranks[k].h.pid, ranks[k].h.host, ranks[k].h.node_rank);
        }
        *out = ft_comm_host_create(0, o->size, fds, (const char *const *)names);
        for (int k = 1; k < o->size; k++)
            free(names[k]);
        free(names);
        free(fds);
    }
    for (int k = 1; k < o->size; k++)
        free(ranks[k].agreement);
    free(ranks);
    ft_strbuf_free(&problem);
    return status;
}

int ft_rendezvous_tcp(const ft_rendezvous_options *options, ft_comm **out)
{
    *out = NULL;
    if (options->size <= 1)
        return ft_error("a rendezvous needs at least 2 ranks");
    return options->rank == 0 ? host_job(options, out) : join(options, out);
}

int ft_route_interface(const char *host, char *name, size_t name_size, char *address, size_t address_size)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM}, *found = NULL;
    if (getaddrinfo(host, "9", &hints, &found) != 0)
        return ft_error("the host %s does not resolve", host);
    /* A UDP "connection" sends nothing; it only asks the kernel for the route. */
    struct sockaddr_storage local;
    socklen_t length = sizeof local;
    int fd = socket(found->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int routed = fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0 &&
                 getsockname(fd, (struct sockaddr *)&local, &length) == 0;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(found);
    if (!routed)
        return ft_error_errno("no route from this host to %s", host);
    getnameinfo((struct sockaddr *)&local, length, address, (socklen_t)address_size, NULL, 0, NI_NUMERICHOST);
    struct ifaddrs *interfaces = NULL;
    if (getifaddrs(&interfaces) != 0)
        return ft_error_errno("cannot list the network interfaces");
    int status = ft_error("no interface holds %s, the address that reaches %s", address, host);
    for (struct ifaddrs *i = interfaces; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != local.ss_family)
            continue;
        char candidate[NI_MAXHOST];
        socklen_t candidate_length = local.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                 : sizeof(struct sockaddr_in);
        if (getnameinfo(i->ifa_addr, candidate_length, candidate, sizeof candidate, NULL, 0, NI_NUMERICHOST) == 0 &&
            strcmp(candidate, address) == 0) {
            snprintf(name, name_size, "%s", i->ifa_name);
            ft_error_clear();
            status = 0;
            break;
        }
    }
    freeifaddrs(interfaces);
    return status;
}
