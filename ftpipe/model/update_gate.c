/* update_gate: an offloaded update's positions, its thread, and the pass's waits. */
#include "ftpipe/model/update_gate.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ftpipe/base/error.h"
#include "ftpipe/base/mem.h"
#include "ftpipe/model/collective_thread.h"
#include "ftpipe/model/data_parallel.h"
#include "model_internal.h"

typedef struct {
    size_t first, count;       /* tensors [first, first + count) */
} tensor_range;

struct ft_update_gate {
    ft_model *model;
    ft_update_position update; /* on the thread */
    ft_update_position take;   /* on the pass's thread, once the position is updated (NULL: nothing) */
    void *context;
    ft_adamw *optimizer;       /* one rank's (ft_update_gate_create_for) */
    const ft_param_tensor *tensors;
    size_t n_positions;
    tensor_range *ranges;      /* runs of one position's tensors, in position order */
    size_t *first_range;       /* position p's ranges: [first_range[p], first_range[p + 1]) */
    ft_backend_event **done;   /* position p's work on the side queue; NULL entries on a backend without one */
    bool *current;             /* the pass's view: position p's values are this update's (and cast) */
    ft_collective_thread thread;
    bool updating;             /* under thread.lock: an update runs */
    size_t reached;            /* under thread.lock: positions updated so far */
    double learning_rate;
    bool failed;               /* under thread.lock: the update failed (message); its values are not whole */
    char message[512];
};

static unsigned test_delay_us; /* ft_update_gate_test_delay's */

void ft_update_gate_test_delay(unsigned microseconds) { test_delay_us = microseconds; }

size_t ft_update_gate_position_of(const char *name)
{
    int layer = ft_param_layer(name);
    return layer < 0 ? 0 : (size_t)layer + 1;
}

static size_t position_of(const ft_param_tensor *tensor) { return ft_update_gate_position_of(tensor->name); }

/* The tensors' runs of one position, ordered by position (the tensors of a
 * layer lie together; those outside the layers before and after them). */
static void plan(ft_update_gate *g, size_t n_tensors)
{
    for (size_t i = 0; i < n_tensors; i++) {
        size_t after = position_of(&g->tensors[i]) + 1;
        g->n_positions = after > g->n_positions ? after : g->n_positions;
    }
    g->ranges = ft_xcalloc(n_tensors ? n_tensors : 1, sizeof *g->ranges);
    g->first_range = ft_xcalloc(g->n_positions + 1, sizeof *g->first_range);
    size_t n = 0;
    for (size_t p = 0; p < g->n_positions; p++) {
        g->first_range[p] = n;
        for (size_t i = 0; i < n_tensors; i++) {
            if (position_of(&g->tensors[i]) != p)
                continue;
            if (n > g->first_range[p] && g->ranges[n - 1].first + g->ranges[n - 1].count == i)
                g->ranges[n - 1].count++;
            else
                g->ranges[n++] = (tensor_range){i, 1};
        }
    }
    g->first_range[g->n_positions] = n;
}

static void *update_positions(void *argument)
{
    ft_update_gate *g = argument;
    ft_backend *b = g->model->backend;
    if (b->use_side_queue) /* the values go up beside the compute */
        b->use_side_queue(b, true);
    pthread_mutex_lock(&g->thread.lock);
    for (;;) {
        while (!g->thread.stopping && !g->updating)
            pthread_cond_wait(&g->thread.changed, &g->thread.lock);
        if (g->thread.stopping)
            break;
        double learning_rate = g->learning_rate;
        bool failed = g->failed;
        pthread_mutex_unlock(&g->thread.lock);
        for (size_t p = 0; p < g->n_positions; p++) {
            if (test_delay_us)
                usleep(test_delay_us);
            /* after a failure the rest is skipped (its collectives would not match), the waits let go */
            if (!failed && g->update(g->context, p, learning_rate) < 0) {
                failed = true;
                pthread_mutex_lock(&g->thread.lock);
                g->failed = true;
                snprintf(g->message, sizeof g->message, "%s", ft_error_message());
                pthread_mutex_unlock(&g->thread.lock);
            }
            if (g->done[p])
                b->event_record(b, g->done[p]);
            pthread_mutex_lock(&g->thread.lock);
            g->reached = p + 1;
            pthread_cond_broadcast(&g->thread.changed);
            pthread_mutex_unlock(&g->thread.lock);
        }
        pthread_mutex_lock(&g->thread.lock);
        g->updating = false;
        pthread_cond_broadcast(&g->thread.changed);
    }
    pthread_mutex_unlock(&g->thread.lock);
    return NULL;
}

static void wait_for(void *gate, size_t position) { ft_update_gate_wait(gate, position); }

/* One rank's update of a position: its tensors' ranges. */
static int update_ranges(void *context, size_t p, double learning_rate)
{
    ft_update_gate *g = context;
    for (size_t r = g->first_range[p]; r < g->first_range[p + 1]; r++)
        ft_adamw_step_tensors(g->optimizer, learning_rate, g->ranges[r].first, g->ranges[r].count);
    return 0;
}

int ft_update_gate_create_for(ft_model *model, ft_adamw *optimizer, ft_update_gate **out)
{
    int made = ft_update_gate_create(model, update_ranges, NULL, NULL, out);
    if (made == 0) {
        (*out)->optimizer = optimizer;
        (*out)->context = *out;
    }
    return made;
}

int ft_update_gate_create(ft_model *model, ft_update_position update, ft_update_position take, void *context,
                          ft_update_gate **out)
{
    ft_update_gate *g = ft_xcalloc(1, sizeof *g);
    size_t n_tensors = 0;
    g->model = model;
    g->update = update;
    g->take = take;
    g->context = context;
    g->tensors = ft_model_trainable(model, &n_tensors);
    plan(g, n_tensors);
    g->done = ft_xcalloc(g->n_positions ? g->n_positions : 1, sizeof *g->done);
    g->current = ft_xcalloc(g->n_positions ? g->n_positions : 1, sizeof *g->current);
    ft_backend *b = model->backend;
    for (size_t p = 0; p < g->n_positions; p++) {
        g->current[p] = true;
        if (b->event_new && !(g->done[p] = b->event_new(b))) {
            ft_update_gate_free(g);
            return -1;
        }
    }
    model->update_gate = g;
    model->update_gate_wait = wait_for;
    *out = g;
    if (ft_collective_thread_start(&g->thread, update_positions, g, "the offloaded update's thread") < 0) {
        ft_update_gate_free(g);
        *out = NULL;
        return -1;
    }
    return 0;
}

void ft_update_gate_free(ft_update_gate *g)
{
    if (!g)
        return;
    ft_collective_thread_stop(&g->thread, NULL, ft_collective_thread_never_blocked, NULL);
    if (g->model->update_gate == g) {
        g->model->update_gate = NULL;
        g->model->update_gate_wait = NULL;
    }
    ft_backend *b = g->model->backend;
    for (size_t p = 0; p < g->n_positions; p++)
        if (g->done[p])
            b->event_free(b, g->done[p]);
    free(g->done);
    free(g->current);
    free(g->ranges);
    free(g->first_range);
    free(g);
}

void ft_update_gate_start(ft_update_gate *g, double learning_rate)
{
    for (size_t p = 0; p < g->n_positions; p++)
        g->current[p] = false;
    pthread_mutex_lock(&g->thread.lock);
    g->learning_rate = learning_rate;
    g->reached = 0;
    g->updating = true;
    pthread_cond_broadcast(&g->thread.changed);
    pthread_mutex_unlock(&g->thread.lock);
}

/* Position p's values taken in, on the pass's thread once the compute queue
 * waited for their upload: `take` (ZeRO's all-gather, in the same order on
 * every rank), then the weights cast from their float master copy (full
 * fine-tuning in bf16). */
static void take_position(ft_update_gate *g, size_t p)
{
    ft_model *m = g->model;
    ft_backend *b = m->backend;
    if (g->done[p])
        b->event_wait(b, g->done[p]);
    if (g->take && g->take(g->context, p, g->learning_rate) < 0) {
        pthread_mutex_lock(&g->thread.lock);
        if (!g->failed)
            snprintf(g->message, sizeof g->message, "%s", ft_error_message());
        g->failed = true;
        pthread_mutex_unlock(&g->thread.lock);
    }
    for (size_t r = g->first_range[p]; m->master && m->params && r < g->first_range[p + 1]; r++)
        for (size_t i = g->ranges[r].first; i < g->ranges[r].first + g->ranges[r].count; i++) {
            const ft_param_tensor *t = &g->tensors[i];
            if (t->value < m->master || t->value >= m->master + m->n_params) /* not a weight (a projector's) */
                continue;
            size_t at = (size_t)(t->value - m->master);
            b->cast_from_float(b, (char *)m->params + at * m->element_bytes, t->value, t->count);
        }
    g->current[p] = true;
}

void ft_update_gate_wait(ft_update_gate *g, size_t position)
{
    if (!g || position >= g->n_positions || g->current[position])
        return;
    pthread_mutex_lock(&g->thread.lock);
    while (g->updating && g->reached <= position)
        pthread_cond_wait(&g->thread.changed, &g->thread.lock);
    pthread_mutex_unlock(&g->thread.lock);
    take_position(g, position);
}

int ft_update_gate_finish(ft_update_gate *g)
{
    if (!g)
        return 0;
    pthread_mutex_lock(&g->thread.lock);
    while (g->updating)
        pthread_cond_wait(&g->thread.changed, &g->thread.lock);
    bool failed = g->failed;
    pthread_mutex_unlock(&g->thread.lock);
    for (size_t p = 0; p < g->n_positions; p++)
        if (!g->current[p])
            take_position(g, p);
    return failed ? ft_error("%s (the offloaded update beside the pass)", g->message) : 0;
}
