/*
 * The cost simulator: an idealised data-flow execution of the compute
 * streams (communication ops are ignored; the data dependencies alone decide
 * when an op can start).
 */
#include "pipe_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct sim {
    const dinf__pipe_shape *s;
    double *f_end, *b_end; /* [R][D][M] end times, NAN until the op ran */
} sim;

static inline size_t at(const sim *m, int32_t r, int32_t d, int32_t k) {
    return ((size_t)r * (size_t)m->s->num_dirs + (size_t)d) * (size_t)m->s->mb_per_dir + (size_t)k;
}

/* When the input of forward (d, k) on rank r is there; NAN if not yet. */
static double forward_ready(const sim *m, int32_t r, int32_t d, int32_t k, double latency) {
    const dinf__pipe_shape *s = m->s;
    if (s->kind == DINF_PIPE_DUALPIPEV && d == 1 && r == s->num_ranks - 1)
        return m->f_end[at(m, r, 0, k)]; /* local hand-off of phase 0's output */
    if (dinf__pipe_first_stage(s, d, r))
        return 0.0;
    double t = m->f_end[at(m, dinf__pipe_prev_rank(s, d, r), d, k)];
    return t + latency;
}

/* When the output-gradient of backward (d, k) on rank r is there. */
static double backward_ready(const sim *m, int32_t r, int32_t d, int32_t k, double latency) {
    const dinf__pipe_shape *s = m->s;
    double own = m->f_end[at(m, r, d, k)];
    if (s->kind == DINF_PIPE_DUALPIPEV && d == 0 && r == s->num_ranks - 1) {
        double t = m->b_end[at(m, r, 1, k)]; /* local hand-off of phase 1's gradient */
        return isnan(t) ? NAN : (t > own ? t : own);
    }
    if (dinf__pipe_last_stage(s, d, r))
        return own;
    double t = m->b_end[at(m, dinf__pipe_next_rank(s, d, r), d, k)] + latency;
    return isnan(t) ? NAN : (t > own ? t : own); /* NAN: not received yet */
}

DINF_API dinf_status dinf_pipe_simulate(dinf_pipe_kind kind, int32_t num_ranks, int32_t num_chunks,
                                        const dinf_pipe_op *const *streams, const int64_t *lengths,
                                        const dinf_pipe_costs *costs, dinf_pipe_sim_result *result,
                                        dinf_pipe_event *events, int64_t capacity,
                                        int64_t *num_events) {
    dinf__pipe_shape shape;
    dinf_status st = dinf__pipe_check_shape(__func__, kind, num_ranks, num_chunks, &shape);
    if (st != DINF_STATUS_OK)
        return st;
    if (!costs)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "costs is NULL");
    if (!result)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "result is NULL");
    const double cost_values[] = {costs->forward, costs->backward, costs->weight,
                                  costs->forward_backward, costs->latency};
    const char *const cost_names[] = {"forward", "backward", "weight", "forward_backward",
                                      "latency"};
    for (int i = 0; i < 5; i++)
        if (!(cost_values[i] >= 0.0) || isinf(cost_values[i]))
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "costs->%s=%g must be finite and >= 0",
                             cost_names[i], cost_values[i]);
    if (costs->weight > costs->backward)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "costs->weight=%g exceeds costs->backward=%g (I costs backward - weight)",
                         costs->weight, costs->backward);
    if (events && capacity < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "capacity=%lld is negative",
                         (long long)capacity);
    int32_t valid;
    dinf_pipe_violation why;
    st = dinf__pipe_check_streams(__func__, &shape, streams, lengths, 1, &why, &valid);
    if (st != DINF_STATUS_OK)
        return st;
    if (!valid)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "the streams are not valid for this kind: rank %d op %lld: %s", why.rank,
                         (long long)why.op_index, why.rule);

    return dinf__pipe_run(__func__, &shape, streams, lengths, costs, result, events, capacity,
                          num_events, NULL, NULL);
}

dinf_status dinf__pipe_run(const char *func, const dinf__pipe_shape *shape_in,
                           const dinf_pipe_op *const *streams, const int64_t *lengths,
                           const dinf_pipe_costs *costs, dinf_pipe_sim_result *result,
                           dinf_pipe_event *events, int64_t capacity, int64_t *num_events,
                           int32_t *stuck_rank, int64_t *stuck_op) {
    const dinf__pipe_shape shape = *shape_in;
    const int32_t num_ranks = shape.num_ranks;
    dinf_status st = DINF_STATUS_OK;
    const int32_t R = num_ranks;
    const size_t cells = (size_t)R * (size_t)shape.num_dirs * (size_t)shape.mb_per_dir;
    sim m = {&shape, malloc(cells * sizeof(double)), malloc(cells * sizeof(double))};
    int64_t *pos = calloc((size_t)R, sizeof *pos);
    double *free_at = calloc((size_t)R, sizeof *free_at);
    double *busy = calloc((size_t)R, sizeof *busy);
    int32_t *live = calloc((size_t)R, sizeof *live), *peak = calloc((size_t)R, sizeof *peak);
    int64_t *event_base = calloc((size_t)R + 1, sizeof *event_base);
    if (!m.f_end || !m.b_end || !pos || !free_at || !busy || !live || !peak || !event_base) {
        st = dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "cannot allocate the simulator's state for "
                       "%d ranks x %d directions x %d micro-batches",
                       R, shape.num_dirs, shape.mb_per_dir);
        goto out;
    }
    for (size_t i = 0; i < cells; i++)
        m.f_end[i] = m.b_end[i] = NAN;
    /* Events are numbered per rank in stream order (compute ops only). */
    for (int32_t r = 0; r < R; r++) {
        int64_t n = 0;
        for (int64_t i = 0; i < lengths[r]; i++)
            n += dinf__pipe_is_compute(streams[r][i].type);
        event_base[r + 1] = event_base[r] + n;
    }
    const int64_t total_events = event_base[R];
    int64_t *event_at = calloc((size_t)R, sizeof *event_at);
    if (!event_at) {
        st = dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "cannot allocate the simulator's state");
        goto out;
    }

    /* A work list of ranks that may move: a rank runs until it waits; when
     * it ran anything its neighbours (the only ranks that can wait on it)
     * are queued again. Linear in the number of ops. */
    int32_t *queue = malloc((size_t)R * sizeof *queue);
    uint8_t *queued = calloc((size_t)R, 1);
    if (!queue || !queued) {
        free(queue), free(queued), free(event_at);
        st = dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "cannot allocate the simulator's work list");
        goto out;
    }
    int64_t head = 0, count = R;
    for (int32_t r = 0; r < R; r++)
        queue[r] = r, queued[r] = 1;
    int64_t done = 0, remaining = 0;
    for (int32_t r = 0; r < R; r++)
        remaining += lengths[r];
    while (count > 0) {
        const int32_t r = queue[head];
        head = (head + 1) % R, count--, queued[r] = 0;
        int progress = 0;
        {
            while (pos[r] < lengths[r]) {
                const dinf_pipe_op *op = &streams[r][pos[r]];
                if (!dinf__pipe_is_compute(op->type)) {
                    pos[r]++, done++, progress = 1;
                    continue;
                }
                double ready = 0.0, duration = 0.0;
                switch (op->type) {
                case DINF_PIPE_OP_F:
                    ready = forward_ready(&m, r, op->dir, op->mb, costs->latency);
                    duration = costs->forward;
                    break;
                case DINF_PIPE_OP_B:
                case DINF_PIPE_OP_I:
                    ready = backward_ready(&m, r, op->dir, op->mb, costs->latency);
                    duration = op->type == DINF_PIPE_OP_B ? costs->backward
                                                          : costs->backward - costs->weight;
                    break;
                case DINF_PIPE_OP_W:
                    duration = costs->weight;
                    break;
                case DINF_PIPE_OP_FB: {
                    double a = forward_ready(&m, r, op->dir, op->mb, costs->latency);
                    /* the backward's own forward ran earlier on this rank */
                    double b = backward_ready(&m, r, op->dir2, op->mb2, costs->latency);
                    ready = isnan(a) || isnan(b) ? NAN : (a > b ? a : b);
                    duration = costs->forward_backward;
                    break;
                }
                }
                if (isnan(ready))
                    break; /* waits for another rank */
                double start = ready > free_at[r] ? ready : free_at[r], end = start + duration;
                if (!isfinite(end)) {
                    free(queue), free(queued), free(event_at);
                    st = dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                                   "rank %d op %lld ends at %g: the costs overflow a double", r,
                                   (long long)pos[r], end);
                    goto out;
                }
                free_at[r] = end;
                busy[r] += duration;
                if (op->type == DINF_PIPE_OP_F || op->type == DINF_PIPE_OP_FB) {
                    m.f_end[at(&m, r, op->dir, op->mb)] = end;
                    if (++live[r] > peak[r])
                        peak[r] = live[r];
                }
                if (op->type == DINF_PIPE_OP_B || op->type == DINF_PIPE_OP_I)
                    m.b_end[at(&m, r, op->dir, op->mb)] = end, live[r]--;
                if (op->type == DINF_PIPE_OP_FB)
                    m.b_end[at(&m, r, op->dir2, op->mb2)] = end, live[r]--;
                if (events && event_base[r] + event_at[r] < capacity) {
                    dinf_pipe_event *e = &events[event_base[r] + event_at[r]];
                    e->rank = r;
                    e->op_index = event_at[r];
                    e->op = *op;
                    e->start = start;
                    e->end = end;
                }
                event_at[r]++;
                pos[r]++, done++, progress = 1;
            }
        }
        if (progress)
            for (int32_t q = r - 1; q <= r + 1; q += 2)
                if (q >= 0 && q < R && !queued[q] && pos[q] < lengths[q]) {
                    queue[(head + count) % R] = q;
                    queued[q] = 1, count++;
                }
    }
    free(queue), free(queued);
    if (done < remaining) {
        for (int32_t r = 0; r < R; r++)
            if (pos[r] < lengths[r]) {
                char text[64];
                dinf_pipe_op_format(&streams[r][pos[r]], text, sizeof text);
                st = dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                               "the streams deadlock: rank %d waits forever at op %lld (%s)", r,
                               (long long)pos[r], text);
                if (stuck_rank)
                    *stuck_rank = r, *stuck_op = pos[r];
                break;
            }
        free(event_at);
        goto out;
    }
    double makespan = 0.0, max_bubble = 0.0;
    int32_t max_peak = 0;
    for (int32_t r = 0; r < R; r++)
        if (free_at[r] > makespan)
            makespan = free_at[r];
    for (int32_t r = 0; r < R; r++) {
        double bubble = makespan - busy[r];
        if (bubble > max_bubble)
            max_bubble = bubble;
        if (peak[r] > max_peak)
            max_peak = peak[r];
        if (result->busy)
            result->busy[r] = busy[r];
        if (result->bubble)
            result->bubble[r] = bubble;
        if (result->peak_activations)
            result->peak_activations[r] = peak[r];
    }
    result->makespan = makespan;
    result->max_bubble = max_bubble;
    result->max_peak_activations = max_peak;
    if (num_events)
        *num_events = total_events;
    free(event_at);
    if (events && capacity < total_events)
        st = dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                       "capacity=%lld is smaller than the %lld compute ops simulated",
                       (long long)capacity, (long long)total_events);
out:
    free(m.f_end), free(m.b_end), free(pos), free(free_at), free(busy), free(live), free(peak);
    free(event_base);
    return st;
}
