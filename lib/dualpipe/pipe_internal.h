/* Pipeline internals shared by the schedule, text, validator, simulator,
 * renderer and executor. Not installed. */
#ifndef DINF_PIPE_INTERNAL_H
#define DINF_PIPE_INTERNAL_H

#include "deepinfra/dualpipe.h"

#include "../core/internal.h"

/* Ranks, chunks and micro-batch numbers stay far from int32 overflow. */
#define DINF__PIPE_MAX (1 << 20)

typedef struct dinf__pipe_shape {
    dinf_pipe_kind kind;
    int32_t num_ranks, num_chunks;
    int32_t num_dirs;   /* 2 for DualPipe / DualPipeV, else 1 */
    int32_t mb_per_dir; /* micro-batches per direction */
    int32_t rank;       /* generator only */
} dinf__pipe_shape;

dinf_status dinf__pipe_check_shape(const char *func, dinf_pipe_kind kind, int32_t num_ranks,
                                   int32_t num_chunks, dinf__pipe_shape *shape);

/* Generate rank's stream (ops may be NULL); returns its length. */
int64_t dinf__pipe_generate(const dinf__pipe_shape *shape, int32_t rank, int with_comm,
                            dinf_pipe_op *ops, int64_t capacity);

/* Data flow of direction d (reference 1.1, 2.1): activations go from
 * prev_rank to next_rank. The first stage takes the engine's input (or, for
 * DualPipeV phase 1 on the last rank, the local hand-off); the last stage
 * computes the loss (or hands off locally: DualPipeV phase 0). */
static inline int dinf__pipe_first_stage(const dinf__pipe_shape *s, int d, int r) {
    return d == 0 ? r == 0 : r == s->num_ranks - 1;
}
static inline int dinf__pipe_last_stage(const dinf__pipe_shape *s, int d, int r) {
    return d == 0 ? r == s->num_ranks - 1 : r == 0;
}
static inline int dinf__pipe_prev_rank(const dinf__pipe_shape *s, int d, int r) {
    (void)s;
    return d == 0 ? r - 1 : r + 1;
}
static inline int dinf__pipe_next_rank(const dinf__pipe_shape *s, int d, int r) {
    (void)s;
    return d == 0 ? r + 1 : r - 1;
}

static inline int dinf__pipe_is_compute(int32_t type) {
    return type == DINF_PIPE_OP_F || type == DINF_PIPE_OP_B || type == DINF_PIPE_OP_I ||
           type == DINF_PIPE_OP_W || type == DINF_PIPE_OP_FB;
}

/* Check one op's fields for the shape (types, ranges, peers); 0 if fine,
 * else writes a reason into why. */
int dinf__pipe_op_check(const dinf__pipe_shape *s, int32_t rank, const dinf_pipe_op *op,
                        char *why, size_t why_bytes);

/* The validator's work after the shape check (compute_only: skip the
 * communication rules). Sets *valid and, if non-NULL, *violation. */
dinf_status dinf__pipe_check_streams(const char *func, const dinf__pipe_shape *s,
                                     const dinf_pipe_op *const *streams, const int64_t *lengths,
                                     int compute_only, dinf_pipe_violation *violation,
                                     int32_t *valid);

/* The simulator after its argument checks (streams already valid compute
 * streams). On a data-flow deadlock it fails naming func and, if stuck_rank
 * is not NULL, reports the first waiting rank and op. */
dinf_status dinf__pipe_run(const char *func, const dinf__pipe_shape *shape,
                           const dinf_pipe_op *const *streams, const int64_t *lengths,
                           const dinf_pipe_costs *costs, dinf_pipe_sim_result *result,
                           dinf_pipe_event *events, int64_t capacity, int64_t *num_events,
                           int32_t *stuck_rank, int64_t *stuck_op);

#endif
