/*
 * The executor: one rank's op stream (with communication), generated once at
 * create, replayed by each step through the engine's callbacks.
 *
 * What a step does per op (reference 1.3, 4, 5):
 *   |          commit(rank)                     (skipped when NULL, one rank only)
 *   Sf/Sb/Rf/Rb post_send / post_recv(rank, ACT or GRAD, dir, mb, peer)
 *   F          forward(task)
 *   B          backward(task), defer_weight_grad = 0
 *   I          backward(task), defer_weight_grad = 1; (dir, mb) joins the FIFO
 *   W          weight_grad(task of the oldest deferred backward), leaves the FIFO
 *   F&B        forward_backward(f, b), or forward(f) then backward(b) when NULL
 *
 * Creation allocates everything a step needs (the stream, the row offsets,
 * the FIFO, whose depth is bounded by the number of I ops); a step allocates
 * nothing and keeps no state across steps except what create built, so a
 * step that failed half-way leaves the executor ready for the next one.
 */
#include "pipe_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct deferred_backward {
    int32_t dir, mb;
} deferred_backward;

struct dinf_pipe_executor {
    dinf__pipe_shape shape;
    int32_t rank;
    dinf_pipe_callbacks callbacks;
    dinf_pipe_op *ops; /* [num_ops] the rank's stream, communication included */
    int64_t num_ops;
    int64_t *offsets;        /* [mb_per_dir + 1] micro-batch row boundaries; NULL: no batch size */
    deferred_backward *fifo; /* [num_deferred] one slot per I op of the stream */
    int64_t num_deferred;
};

static const char *const kind_names[DINF_PIPE_KIND_COUNT] = {"dualpipe", "dualpipev", "1f1b",
                                                             "zb1p"};

/* tensor_split boundaries; the caller has checked the arguments. */
static void split_offsets(int64_t batch_size, int32_t num_chunks, int64_t *offsets) {
    const int64_t base = batch_size / num_chunks, extra = batch_size % num_chunks;
    for (int64_t k = 0; k <= num_chunks; k++)
        offsets[k] = k * base + (k < extra ? k : extra);
}

DINF_API dinf_status dinf_pipe_split(int64_t batch_size, int32_t num_chunks, int64_t *offsets) {
    if (!offsets)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "offsets is NULL");
    if (num_chunks < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_chunks=%d must be >= 1", num_chunks);
    if (batch_size < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "batch_size=%lld is negative",
                         (long long)batch_size);
    split_offsets(batch_size, num_chunks, offsets);
    return DINF_STATUS_OK;
}

/*
 * The task of compute (dir, mb) on this rank. Placement (reference 1.1, 2.1):
 *   DualPipe   dir 0: stage r in slot 0; dir 1: stage R-1-r in slot 1.
 *              Entry of dir 0 at rank 0, loss at rank R-1; dir 1 the reverse.
 *   DualPipeV  phase 0: stage r in slot 0, entry at rank 0; phase 1: stage
 *              2R-1-r in slot 1, loss at rank 0. On the last rank phase 0's
 *              output is phase 1's input (no loss there, no entry either), and
 *              phase 1's input-gradient is phase 0's output-gradient: the
 *              phase-1 forward and the phase-0 backward there are local_input.
 *   1F1B, ZB1P stage r in slot 0, entry at rank 0, loss at rank R-1.
 */
static void fill_task(const dinf_pipe_executor *ex, int32_t dir, int32_t mb, int backward,
                      int defer_weight_grad, dinf_pipe_task *task) {
    const dinf__pipe_shape *s = &ex->shape;
    const int32_t R = s->num_ranks, r = ex->rank;
    memset(task, 0, sizeof *task);
    task->rank = r;
    task->dir = dir;
    task->mb = mb;
    switch (s->kind) {
    case DINF_PIPE_DUALPIPE:
        task->stage = dir == 0 ? r : R - 1 - r;
        task->module = dir;
        task->first_stage = dinf__pipe_first_stage(s, dir, r);
        task->last_stage = dinf__pipe_last_stage(s, dir, r);
        break;
    case DINF_PIPE_DUALPIPEV:
        task->stage = dir == 0 ? r : 2 * R - 1 - r;
        task->module = dir;
        task->first_stage = dir == 0 && r == 0;
        task->last_stage = dir == 1 && r == 0;
        task->local_input = r == R - 1 && dir == (backward ? 0 : 1);
        break;
    case DINF_PIPE_1F1B:
    case DINF_PIPE_ZB1P:
        task->stage = r;
        task->module = 0;
        task->first_stage = r == 0;
        task->last_stage = r == R - 1;
        break;
    }
    task->defer_weight_grad = backward ? defer_weight_grad : 0;
    if (ex->offsets) {
        task->row_offset = ex->offsets[mb];
        task->row_count = ex->offsets[mb + 1] - ex->offsets[mb];
    } else {
        task->row_offset = -1;
        task->row_count = -1;
    }
}

#define CALLBACKS_V1_SIZE (2 * sizeof(uint32_t) + 8 * sizeof(void *))

DINF_API dinf_status dinf_pipe_executor_create(dinf_pipe_kind kind, int32_t num_ranks,
                                               int32_t num_chunks, int32_t rank,
                                               int64_t batch_size,
                                               const dinf_pipe_callbacks *callbacks,
                                               dinf_pipe_executor **executor) {
    if (!executor)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "executor is NULL");
    *executor = NULL;
    if (!callbacks)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "callbacks is NULL");
    /* The first version's size; later versions append callbacks and keep
     * accepting this size (a larger one from a newer header is fine too: the
     * callbacks this version knows come first). */
    _Static_assert(sizeof(dinf_pipe_callbacks) == CALLBACKS_V1_SIZE, "update CALLBACKS_V1_SIZE use");
    if (callbacks->size < CALLBACKS_V1_SIZE)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "callbacks->size=%u is smaller than the %zu bytes of the first "
                         "dinf_pipe_callbacks (initialise with DINF_PIPE_CALLBACKS_INIT)",
                         callbacks->size, CALLBACKS_V1_SIZE);
    if (callbacks->magic != DINF_PIPE_CALLBACKS_MAGIC)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "callbacks->magic=0x%08x is not DINF_PIPE_CALLBACKS_MAGIC=0x%08x "
                         "(initialise with DINF_PIPE_CALLBACKS_INIT)",
                         callbacks->magic, DINF_PIPE_CALLBACKS_MAGIC);
    dinf__pipe_shape shape;
    dinf_status st = dinf__pipe_check_shape(__func__, kind, num_ranks, num_chunks, &shape);
    if (st != DINF_STATUS_OK)
        return st;
    if (rank < 0 || rank >= num_ranks)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "rank=%d is not in [0, num_ranks=%d)", rank,
                         num_ranks);
    if (batch_size < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "batch_size=%lld is negative",
                         (long long)batch_size);
    if (batch_size > 0 && batch_size < shape.mb_per_dir)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "batch_size=%lld is smaller than the %d micro-batches it is split into "
                         "(%s, num_chunks=%d): every micro-batch needs a row",
                         (long long)batch_size, shape.mb_per_dir, kind_names[kind], num_chunks);
    if (!callbacks->forward)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "callbacks->forward is NULL (required)");
    if (!callbacks->backward)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "callbacks->backward is NULL (required)");
    if (!callbacks->weight_grad && kind != DINF_PIPE_1F1B)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "callbacks->weight_grad is NULL, but %s defers weight gradients "
                         "(required for dualpipe, dualpipev and zb1p)",
                         kind_names[kind]);
    if (num_ranks > 1) {
        const char *missing = !callbacks->post_send   ? "post_send"
                              : !callbacks->post_recv ? "post_recv"
                              : !callbacks->commit    ? "commit"
                                                      : NULL;
        if (missing)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "callbacks->%s is NULL (required when num_ranks=%d > 1)", missing,
                             num_ranks);
    }

    const int64_t num_ops = dinf__pipe_generate(&shape, rank, 1, NULL, 0);
    dinf_pipe_executor *ex = calloc(1, sizeof *ex);
    if (!ex)
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "no memory for the executor");
    ex->shape = shape;
    ex->rank = rank;
    ex->callbacks = *callbacks;
    ex->num_ops = num_ops;
    ex->ops = calloc((size_t)(num_ops > 0 ? num_ops : 1), sizeof *ex->ops);
    if (batch_size > 0)
        ex->offsets = calloc((size_t)shape.mb_per_dir + 1, sizeof *ex->offsets);
    if (!ex->ops || (batch_size > 0 && !ex->offsets)) {
        dinf_pipe_executor_destroy(ex);
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "no memory for rank %d's stream of %lld ops",
                         rank, (long long)num_ops);
    }
    dinf__pipe_generate(&shape, rank, 1, ex->ops, num_ops);
    if (ex->offsets)
        split_offsets(batch_size, shape.mb_per_dir, ex->offsets);

    /* What a step relies on: every op well formed and the FIFO of deferred
     * weight gradients never popped empty and empty at the end. */
    int64_t depth = 0;
    for (int64_t i = 0; i < num_ops; i++) {
        char why[160];
        if (dinf__pipe_op_check(&shape, rank, &ex->ops[i], why, sizeof why) != 0) {
            dinf_pipe_executor_destroy(ex);
            return DINF_FAIL(DINF_STATUS_INTERNAL, "generated stream of rank %d, op %lld: %s",
                             rank, (long long)i, why);
        }
        if (ex->ops[i].type == DINF_PIPE_OP_I) {
            ex->num_deferred++;
            depth++;
        } else if (ex->ops[i].type == DINF_PIPE_OP_W && --depth < 0) {
            dinf_pipe_executor_destroy(ex);
            return DINF_FAIL(DINF_STATUS_INTERNAL,
                             "generated stream of rank %d: W at op %lld has no deferred backward",
                             rank, (long long)i);
        }
    }
    if (depth != 0) {
        dinf_pipe_executor_destroy(ex);
        return DINF_FAIL(DINF_STATUS_INTERNAL,
                         "generated stream of rank %d leaves %lld deferred backwards without W",
                         rank, (long long)depth);
    }
    if (ex->num_deferred > 0) {
        ex->fifo = calloc((size_t)ex->num_deferred, sizeof *ex->fifo);
        if (!ex->fifo) {
            dinf_pipe_executor_destroy(ex);
            return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "no memory for %lld deferred backwards",
                             (long long)ex->num_deferred);
        }
    }
    *executor = ex;
    return DINF_STATUS_OK;
}

/* Before each callback: the thread's dinf_last_error() text cleared, so that
 * a callback that fails without setting one is not quoted with an older,
 * unrelated text. */
static const char *begin_callback(const char *name) {
    dinf_set_last_error(NULL);
    return name;
}

/* "rank R op I (<op>): <callback> failed: <the callback's last error>" */
static dinf_status callback_failed(const dinf_pipe_executor *ex, int64_t index,
                                   const char *callback, dinf_status status) {
    char cause[DINF_ERROR_MESSAGE_MAX];
    snprintf(cause, sizeof cause, "%s",
             dinf_last_error()[0] ? dinf_last_error() : "(the callback set no message)");
    char text[64];
    if (dinf_pipe_op_format(&ex->ops[index], text, sizeof text) != DINF_STATUS_OK)
        snprintf(text, sizeof text, "?");
    return dinf__fail(status, "dinf_pipe_executor_step", "rank %d op %lld (%s): %s failed: %s",
                      ex->rank, (long long)index, text, callback, cause);
}

DINF_API dinf_status dinf_pipe_executor_step(dinf_pipe_executor *executor) {
    if (!executor)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "executor is NULL");
    dinf_pipe_executor *ex = executor;
    const dinf_pipe_callbacks *cb = &ex->callbacks;
    void *user = cb->user;
    const int32_t rank = ex->rank;
    int64_t head = 0, tail = 0; /* FIFO of deferred backwards: fifo[head .. tail) */
    /* the caller's last error, back in place when the step succeeds (the
     * callbacks' texts are cleared before each: begin_callback) */
    char caller_error[DINF_ERROR_MESSAGE_MAX];
    snprintf(caller_error, sizeof caller_error, "%s", dinf_last_error());

    for (int64_t i = 0; i < ex->num_ops; i++) {
        const dinf_pipe_op *op = &ex->ops[i];
        dinf_pipe_task task, task2;
        const char *callback = NULL;
        dinf_status st = DINF_STATUS_OK;
        switch (op->type) {
        case DINF_PIPE_OP_COMMIT:
            if (cb->commit) {
                callback = begin_callback("commit");
                st = cb->commit(user, rank);
            }
            break;
        case DINF_PIPE_OP_SEND_ACT:
        case DINF_PIPE_OP_SEND_GRAD:
            callback = begin_callback("post_send");
            st = cb->post_send(user, rank,
                               op->type == DINF_PIPE_OP_SEND_ACT ? DINF_PIPE_MSG_ACT
                                                                 : DINF_PIPE_MSG_GRAD,
                               op->dir, op->mb, op->peer);
            break;
        case DINF_PIPE_OP_RECV_ACT:
        case DINF_PIPE_OP_RECV_GRAD:
            callback = begin_callback("post_recv");
            st = cb->post_recv(user, rank,
                               op->type == DINF_PIPE_OP_RECV_ACT ? DINF_PIPE_MSG_ACT
                                                                 : DINF_PIPE_MSG_GRAD,
                               op->dir, op->mb, op->peer);
            break;
        case DINF_PIPE_OP_F:
            fill_task(ex, op->dir, op->mb, 0, 0, &task);
            callback = begin_callback("forward");
            st = cb->forward(user, &task);
            break;
        case DINF_PIPE_OP_B:
            fill_task(ex, op->dir, op->mb, 1, 0, &task);
            callback = begin_callback("backward");
            st = cb->backward(user, &task);
            break;
        case DINF_PIPE_OP_I:
            fill_task(ex, op->dir, op->mb, 1, 1, &task);
            callback = begin_callback("backward");
            st = cb->backward(user, &task);
            if (st == DINF_STATUS_OK) {
                ex->fifo[tail].dir = op->dir;
                ex->fifo[tail].mb = op->mb;
                tail++;
            }
            break;
        case DINF_PIPE_OP_W:
            if (head == tail) /* create checked the stream: cannot happen */
                return DINF_FAIL(DINF_STATUS_INTERNAL, "rank %d op %lld (W): no deferred backward",
                                 rank, (long long)i);
            fill_task(ex, ex->fifo[head].dir, ex->fifo[head].mb, 1, 1, &task);
            head++;
            callback = begin_callback("weight_grad");
            st = cb->weight_grad(user, &task);
            break;
        case DINF_PIPE_OP_FB:
            fill_task(ex, op->dir, op->mb, 0, 0, &task);
            fill_task(ex, op->dir2, op->mb2, 1, 0, &task2);
            if (cb->forward_backward) {
                callback = begin_callback("forward_backward");
                st = cb->forward_backward(user, &task, &task2);
            } else {
                callback = begin_callback("forward");
                st = cb->forward(user, &task);
                if (st == DINF_STATUS_OK) {
                    callback = begin_callback("backward");
                    st = cb->backward(user, &task2);
                }
            }
            break;
        default:
            return DINF_FAIL(DINF_STATUS_INTERNAL, "rank %d op %lld has type %d", rank,
                             (long long)i, op->type);
        }
        if (st != DINF_STATUS_OK)
            return callback_failed(ex, i, callback, st);
    }
    if (head != tail)
        return DINF_FAIL(DINF_STATUS_INTERNAL,
                         "rank %d: %lld deferred weight gradients left at the end of the step",
                         rank, (long long)(tail - head));
    dinf__restore_error(caller_error);
    return DINF_STATUS_OK;
}

DINF_API void dinf_pipe_executor_destroy(dinf_pipe_executor *executor) {
    if (!executor)
        return;
    free(executor->ops);
    free(executor->offsets);
    free(executor->fifo);
    free(executor);
}
