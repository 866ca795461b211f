/* comm_host: collectives over stream sockets, rank 0 as the hub. */
#include "ftpipe/backend/comm_host.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"

/* Rank 0 adds the others' buffers this many bytes at a time. */
enum { CHUNK_BYTES = 1 << 20 };

typedef struct {
    int *fds;           /* rank 0: [size], fds[k] to rank k; others: fds[0] to rank 0 */
    char **names;       /* the same indexing: which process the peer is */
    void *chunk;        /* rank 0: CHUNK_BYTES of scratch */
    const char *doing;  /* the collective running, for messages */
} host;

static int peer_index(const ft_comm *comm, int peer) { return comm->rank == 0 ? peer : 0; }

static int lost(ft_comm *comm, int peer, const char *what)
{
    host *h = comm->context;
    if (comm->lost_rank < 0)
        comm->lost_rank = peer;
    return ft_error("rank %d (%s) %s during %s: it stopped or failed; its log says why", peer,
                    h->names[peer_index(comm, peer)], what, h->doing);
}

static int send_all(ft_comm *comm, int peer, const void *data, size_t bytes)
{
    host *h = comm->context;
    int fd = h->fds[peer_index(comm, peer)];
    const char *at = data;
    while (bytes > 0) {
        ssize_t n = send(fd, at, bytes, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return lost(comm, peer, "closed its connection");
        at += n;
        bytes -= (size_t)n;
    }
    return 0;
}

static int receive_all(ft_comm *comm, int peer, void *data, size_t bytes)
{
    host *h = comm->context;
    int fd = h->fds[peer_index(comm, peer)];
    char *at = data;
    while (bytes > 0) {
        ssize_t n = recv(fd, at, bytes, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return lost(comm, peer, n == 0 ? "closed its connection" : "lost its connection");
        at += n;
        bytes -= (size_t)n;
    }
    return 0;
}

static size_t dtype_bytes(ft_comm_dtype dtype) { return dtype == FT_COMM_F64 ? sizeof(double) : sizeof(float); }

static void add_into(void *sum, const void *part, size_t count, ft_comm_dtype dtype)
{
    if (dtype == FT_COMM_F64) {
        double *s = sum;
        const double *p = part;
        for (size_t i = 0; i < count; i++)
            s[i] += p[i];
    } else {
        float *s = sum;
        const float *p = part;
        for (size_t i = 0; i < count; i++)
            s[i] += p[i];
    }
}

/* Rank 0 sends data to every other rank, except `skip`. */
static int send_to_all(ft_comm *comm, const void *data, size_t bytes, int skip)
{
    for (int k = 1; k < comm->size; k++)
        if (k != skip && send_all(comm, k, data, bytes) < 0)
            return -1;
    return 0;
}

static int all_reduce_sum(ft_comm *self, void *data, size_t count, ft_comm_dtype dtype)
{
    host *h = self->context;
    h->doing = "an all-reduce";
    size_t element = dtype_bytes(dtype), bytes = count * element;
    if (self->rank != 0)
        return send_all(self, 0, data, bytes) < 0 ? -1 : receive_all(self, 0, data, bytes);
    size_t per_chunk = CHUNK_BYTES / element;
    for (size_t first = 0; first < count; first += per_chunk) {
        size_t n = count - first < per_chunk ? count - first : per_chunk;
        char *sum = (char *)data + first * element;
        for (int k = 1; k < self->size; k++) {
            if (receive_all(self, k, h->chunk, n * element) < 0)
                return -1;
            add_into(sum, h->chunk, n, dtype);
        }
    }
    return send_to_all(self, data, bytes, -1);
}

static int broadcast(ft_comm *self, void *data, size_t bytes, int root)
{
    host *h = self->context;
    h->doing = "a broadcast";
    if (self->rank != 0)
        return self->rank == root ? send_all(self, 0, data, bytes) : receive_all(self, 0, data, bytes);
    if (root != 0 && receive_all(self, root, data, bytes) < 0)
        return -1;
    return send_to_all(self, data, bytes, root);
}

static int all_gather(ft_comm *self, const void *in, void *out, size_t bytes)
{
    host *h = self->context;
    h->doing = "an all-gather";
    size_t total = bytes * (size_t)self->size;
    if (self->rank != 0)
        return send_all(self, 0, in, bytes) < 0 ? -1 : receive_all(self, 0, out, total);
    memmove(out, in, bytes);
    for (int k = 1; k < self->size; k++)
        if (receive_all(self, k, (char *)out + (size_t)k * bytes, bytes) < 0)
            return -1;
    return send_to_all(self, out, total, -1);
}

/* The whole sum on every rank, then each keeps its slice: the host's sizes are small. */
static int reduce_scatter_sum(ft_comm *self, const void *in, void *out, size_t count, ft_comm_dtype dtype)
{
    size_t element = dtype_bytes(dtype), total = count * (size_t)self->size * element;
    void *sum = ft_xmalloc(total ? total : 1);
    memcpy(sum, in, total);
    int status = all_reduce_sum(self, sum, count * (size_t)self->size, dtype);
    if (status == 0)
        memcpy(out, (char *)sum + (size_t)self->rank * count * element, count * element);
    free(sum);
    ((host *)self->context)->doing = "a reduce-scatter";
    return status;
}

static void abort_comm(ft_comm *self)
{
    host *h = self->context;
    int n = self->rank == 0 ? self->size : 1;
    for (int i = 0; i < n; i++)
        if (h->fds[i] >= 0)
            shutdown(h->fds[i], SHUT_RDWR);
}

static void destroy(ft_comm *self)
{
    host *h = self->context;
    int n = self->rank == 0 ? self->size : 1;
    for (int i = 0; i < n; i++) {
        if (h->fds[i] >= 0)
            close(h->fds[i]);
        free(h->names[i]);
    }
    free(h->fds);
    free(h->names);
    free(h->chunk);
    free(h);
    free(self);
}

ft_comm *ft_comm_host_create(int rank, int size, const int *peer_fds, const char *const *peer_names)
{
    host *h = ft_xcalloc(1, sizeof *h);
    int n = rank == 0 ? size : 1;
    h->fds = ft_xmalloc((size_t)n * sizeof *h->fds);
    h->names = ft_xcalloc((size_t)n, sizeof *h->names);
    for (int i = 0; i < n; i++) {
        h->fds[i] = rank == 0 && i == 0 ? -1 : peer_fds[i];
        h->names[i] = ft_xstrdup(peer_names && peer_names[i] ? peer_names[i] : "?");
    }
    if (rank == 0)
        h->chunk = ft_xmalloc(CHUNK_BYTES);
    h->doing = "setup";
    ft_comm *comm = ft_xcalloc(1, sizeof *comm);
    *comm = (ft_comm){"host", rank, size, -1, h, all_reduce_sum, broadcast, all_gather, reduce_scatter_sum, abort_comm,
                      destroy};
    return comm;
}

int ft_comm_host_fork(int size, ft_comm **out, pid_t *children)
{
    char host_name[256] = "this host";
    gethostname(host_name, sizeof host_name);
    host_name[sizeof host_name - 1] = '\0';
    int (*pairs)[2] = ft_xcalloc((size_t)size, sizeof *pairs);
    for (int k = 1; k < size; k++) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pairs[k]) != 0) {
            int status = ft_error_errno("cannot connect %d ranks (socketpair)", size);
            for (int j = 1; j < k; j++) {
                close(pairs[j][0]);
                close(pairs[j][1]);
            }
            free(pairs);
            return status;
        }
    }
    fflush(NULL);
    int rank = 0;
    for (int k = 1; k < size && rank == 0; k++) {
        pid_t pid = fork();
        if (pid < 0) {
            int status = ft_error_errno("cannot start rank %d", k);
            for (int j = 1; j < k; j++)
                kill(children[j], SIGKILL);
            for (int j = 1; j < size; j++) {
                close(pairs[j][0]);
                close(pairs[j][1]);
            }
            free(pairs);
            return status;
        }
        if (pid == 0)
            rank = k;
        else
            children[k] = pid;
    }
    ft_comm *comm;
    if (rank == 0) {
        int *fds = ft_xmalloc((size_t)size * sizeof *fds);
        char **names = ft_xcalloc((size_t)size, sizeof *names);
        fds[0] = -1;
        for (int k = 1; k < size; k++) {
            close(pairs[k][1]);
            fds[k] = pairs[k][0];
            names[k] = ft_xasprintf("pid %d on %s", (int)children[k], host_name);
        }
        comm = ft_comm_host_create(0, size, fds, (const char *const *)names);
        for (int k = 1; k < size; k++)
            free(names[k]);
        free(names);
        free(fds);
    } else {
        for (int k = 1; k < size; k++) {
            close(pairs[k][0]);
            if (k != rank)
                close(pairs[k][1]);
        }
        char name[300];
        snprintf(name, sizeof name, "pid %d on %s", (int)getppid(), host_name);
        const char *names[1] = {name};
        comm = ft_comm_host_create(rank, size, &pairs[rank][1], names);
    }
    free(pairs);
    *out = comm;
    return rank;
}
