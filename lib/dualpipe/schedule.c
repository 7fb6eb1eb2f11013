/*
 * Pipeline schedules as op streams. DualPipe and DualPipeV replay the
 * upstream scheduler's 8-step control flow for one rank (reference 1.3-1.4,
 * 2.3), recording every post, commit and compute op instead of running it;
 * 1F1B and ZB1P are written in the same vocabulary.
 */
#include "pipe_internal.h"

#include <string.h>

typedef struct gen {
    dinf__pipe_shape shape;
    int with_comm;
    dinf_pipe_op *ops;
    int64_t capacity, count;
    /* FIFO counters per actual direction (reference 1.3) */
    int32_t next_f[2], next_b[2], next_send_act[2], next_recv_act[2];
    int32_t next_send_grad[2], next_recv_grad[2];
} gen;

static void emit(gen *g, int32_t type, int32_t dir, int32_t mb, int32_t dir2, int32_t mb2,
                 int32_t peer) {
    if (g->ops && g->count < g->capacity) {
        dinf_pipe_op *op = &g->ops[g->count];
        op->type = type;
        op->dir = dir;
        op->mb = mb;
        op->dir2 = dir2;
        op->mb2 = mb2;
        op->peer = peer;
    }
    g->count++;
}

/* Communication posts: no-ops at the pipeline ends (reference 1.3). */
static void post_recv_act(gen *g, int d) {
    const dinf__pipe_shape *s = &g->shape;
    if (!dinf__pipe_first_stage(s, d, s->rank) && g->with_comm)
        emit(g, DINF_PIPE_OP_RECV_ACT, d, g->next_recv_act[d]++, -1, -1,
             dinf__pipe_prev_rank(s, d, s->rank));
}
static void post_send_act(gen *g, int d) {
    const dinf__pipe_shape *s = &g->shape;
    if (!dinf__pipe_last_stage(s, d, s->rank) && g->with_comm)
        emit(g, DINF_PIPE_OP_SEND_ACT, d, g->next_send_act[d]++, -1, -1,
             dinf__pipe_next_rank(s, d, s->rank));
}
static void post_recv_grad(gen *g, int d) {
    const dinf__pipe_shape *s = &g->shape;
    if (!dinf__pipe_last_stage(s, d, s->rank) && g->with_comm)
        emit(g, DINF_PIPE_OP_RECV_GRAD, d, g->next_recv_grad[d]++, -1, -1,
             dinf__pipe_next_rank(s, d, s->rank));
}
static void post_send_grad(gen *g, int d) {
    const dinf__pipe_shape *s = &g->shape;
    if (!dinf__pipe_first_stage(s, d, s->rank) && g->with_comm)
        emit(g, DINF_PIPE_OP_SEND_GRAD, d, g->next_send_grad[d]++, -1, -1,
             dinf__pipe_prev_rank(s, d, s->rank));
}
static void commit(gen *g) {
    if (g->with_comm)
        emit(g, DINF_PIPE_OP_COMMIT, -1, -1, -1, -1, -1);
}

/* Compute ops take the next micro-batch of their direction. */
static void op_f(gen *g, int d, int recv, int send) {
    if (recv)
        post_recv_act(g, d);
    commit(g);
    emit(g, DINF_PIPE_OP_F, d, g->next_f[d]++, -1, -1, -1);
    if (send)
        post_send_act(g, d);
}
static void op_b(gen *g, int d, int zb, int recv, int send) {
    if (recv)
        post_recv_grad(g, d);
    commit(g);
    emit(g, zb ? DINF_PIPE_OP_I : DINF_PIPE_OP_B, d, g->next_b[d]++, -1, -1, -1);
    if (send)
        post_send_grad(g, d);
}
static void op_fb(gen *g, int df, int db, int recv_f) {
    if (recv_f)
        post_recv_act(g, df);
    post_recv_grad(g, db);
    commit(g);
    emit(g, DINF_PIPE_OP_FB, df, g->next_f[df]++, db, g->next_b[db]++, -1);
    post_send_act(g, df);
    post_send_grad(g, db);
}
static void op_w(gen *g) {
    commit(g);
    emit(g, DINF_PIPE_OP_W, -1, -1, -1, -1, -1);
}

/*
 * The 8 steps of DualPipe (v = 0) and DualPipeV (v = 1) for one rank, in
 * relative phases: p0 is the direction whose first stage is at this rank's
 * end of the pipe. half = H, h = distance to the nearer end, chunks = C per
 * direction (DualPipe) or N (DualPipeV).
 */
static void dualpipe_steps(gen *g, int v) {
    const dinf__pipe_shape *s = &g->shape;
    const int r = s->rank;
    const int half = v ? s->num_ranks : s->num_ranks / 2;
    const int h = v ? r : (r < s->num_ranks - 1 - r ? r : s->num_ranks - 1 - r);
    const int second = v ? 0 : (r >= half);
    const int chunks = v ? s->num_chunks : s->num_chunks / 2;
    const int mid = v ? (r == s->num_ranks - 1) : (r == half - 1 || r == half);
    const int pp = v ? 2 * s->num_ranks : s->num_ranks; /* stages along one direction pair */
    const int p0 = second, p1 = 1 - second;             /* actual directions */

    /* S1 nF0 */
    for (int i = 0; i < 2 * (half - h - 1); i++)
        op_f(g, p0, 1, 1);
    /* S2 nF0F1 */
    post_recv_act(g, p0);
    for (int i = 0; i <= h; i++) {
        op_f(g, p0, 0, v ? 0 : mid);
        post_recv_act(g, p0);
        op_f(g, p1, 1, !mid || i < h);
        if (v || !mid)
            post_send_act(g, p0);
    }
    /* S3 nB1W1F1 */
    for (int i = 0; i < half - h - 1; i++) {
        op_b(g, p1, 1, 1, 1);
        post_recv_act(g, p1);
        op_w(g);
        op_f(g, p1, 0, 1);
    }
    /* S4 nF0B1F1B0 */
    for (int i = 0; i <= chunks - pp + h; i++) {
        if (i == 0) {
            if (mid) {
                op_f(g, p0, 0, 0);
                post_send_act(g, p1);
                op_b(g, p1, 0, 1, 0);
                post_send_act(g, p0);
                post_send_grad(g, p1);
            } else {
                op_fb(g, p0, p1, 0);
            }
        } else {
            op_fb(g, p0, p1, 1);
        }
        op_fb(g, p1, p0, 1);
    }
    /* S5 nB1F1B0 */
    for (int i = 0; i < half - h - 1; i++) {
        op_b(g, p1, 0, 1, 1);
        op_fb(g, p1, p0, 1);
    }
    /* S6 nB1B0: the second half of these backwards defer their weights */
    int zb = 0;
    for (int i = 0; i <= h; i++) {
        if (i == (h + 1) / 2 && h % 2 == 1)
            zb = 1;
        op_b(g, p1, zb, 1, 1);
        if (i == (h + 1) / 2 && h % 2 == 0)
            zb = 1;
        op_b(g, p0, zb, 1, 1);
    }
    /* S7 nWB0 */
    for (int i = 0; i < half - h - 1; i++) {
        op_w(g);
        op_b(g, p0, 1, 1, 1);
    }
    /* S8 nW */
    for (int i = 0; i <= h; i++)
        op_w(g);
    commit(g);
}

/* 1F1B: warm-up forwards, one-forward-one-backward, cool-down backwards. */
static void one_f_one_b(gen *g) {
    const dinf__pipe_shape *s = &g->shape;
    const int n = s->num_chunks;
    int warmup = s->num_ranks - s->rank - 1;
    if (warmup > n)
        warmup = n;
    for (int i = 0; i < warmup; i++)
        op_f(g, 0, 1, 1);
    for (int i = 0; i < n - warmup; i++) {
        op_f(g, 0, 1, 1);
        op_b(g, 0, 0, 1, 1);
    }
    for (int i = 0; i < warmup; i++)
        op_b(g, 0, 0, 1, 1);
    commit(g);
}

/*
 * ZB1P (zero-bubble ZB-H1): 1F1B's order with every backward split into I
 * (input gradients, which the previous stage waits for) and W (weight
 * gradients, which nobody waits for). Rank r keeps up to r W's pending and
 * runs the oldest whenever more are pending: the ranks near the head of the
 * pipe, which 1F1B leaves idle while gradients travel back, spend that time
 * on deferred W's; the rest drain at the end. With F = I = W this idles
 * (R-1)(F + B - 2W) per rank, the zero-bubble paper's ZB-H1 figure, with
 * 1F1B's activation memory.
 */
static void zb_h1(gen *g) {
    const dinf__pipe_shape *s = &g->shape;
    const int n = s->num_chunks, lag = s->rank;
    int warmup = s->num_ranks - s->rank - 1;
    if (warmup > n)
        warmup = n;
    int pending = 0;
    for (int i = 0; i < warmup; i++)
        op_f(g, 0, 1, 1);
    for (int i = 0; i < n; i++) {
        if (i < n - warmup)
            op_f(g, 0, 1, 1);
        op_b(g, 0, 1, 1, 1);
        for (pending++; pending > lag; pending--)
            op_w(g);
    }
    for (; pending > 0; pending--)
        op_w(g);
    commit(g);
}

dinf_status dinf__pipe_check_shape(const char *func, dinf_pipe_kind kind, int32_t num_ranks,
                                   int32_t num_chunks, dinf__pipe_shape *shape) {
    if ((unsigned)kind >= DINF_PIPE_KIND_COUNT)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "kind=%d is not a dinf_pipe_kind (0..%d)", (int)kind,
                          DINF_PIPE_KIND_COUNT - 1);
    static const char *const names[] = {"dualpipe", "dualpipev", "1f1b", "zb1p"};
    if (num_ranks < 1 || num_ranks > DINF__PIPE_MAX)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "num_ranks=%d must be in [1, %d]", num_ranks, DINF__PIPE_MAX);
    if (num_chunks < 1 || num_chunks > DINF__PIPE_MAX)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "num_chunks=%d must be in [1, %d]", num_chunks, DINF__PIPE_MAX);
    switch (kind) {
    case DINF_PIPE_DUALPIPE:
        if (num_ranks % 2 != 0)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "%s: num_ranks=%d must be even (rank r and num_ranks-1-r hold the "
                              "same two stages)",
                              names[kind], num_ranks);
        if (num_chunks % 2 != 0)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "%s: num_chunks=%d must be even (half flow each way)", names[kind],
                              num_chunks);
        /* fall through */
    case DINF_PIPE_DUALPIPEV:
        if (num_chunks < 2 * num_ranks)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "%s: num_chunks=%d must be >= 2 * num_ranks = %d", names[kind],
                              num_chunks, 2 * num_ranks);
        break;
    case DINF_PIPE_ZB1P:
        if (num_chunks < num_ranks)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "%s: num_chunks=%d must be >= num_ranks=%d", names[kind], num_chunks,
                              num_ranks);
        break;
    case DINF_PIPE_1F1B:
        break;
    }
    memset(shape, 0, sizeof *shape);
    shape->kind = kind;
    shape->num_ranks = num_ranks;
    shape->num_chunks = num_chunks;
    shape->num_dirs = (kind == DINF_PIPE_DUALPIPE || kind == DINF_PIPE_DUALPIPEV) ? 2 : 1;
    shape->mb_per_dir = kind == DINF_PIPE_DUALPIPE ? num_chunks / 2 : num_chunks;
    return DINF_STATUS_OK;
}

int64_t dinf__pipe_generate(const dinf__pipe_shape *shape, int32_t rank, int with_comm,
                            dinf_pipe_op *ops, int64_t capacity) {
    gen g;
    memset(&g, 0, sizeof g);
    g.shape = *shape;
    g.shape.rank = rank;
    g.with_comm = with_comm;
    g.ops = ops;
    g.capacity = capacity;
    switch (shape->kind) {
    case DINF_PIPE_DUALPIPE: dualpipe_steps(&g, 0); break;
    case DINF_PIPE_DUALPIPEV: dualpipe_steps(&g, 1); break;
    case DINF_PIPE_1F1B: one_f_one_b(&g); break;
    case DINF_PIPE_ZB1P: zb_h1(&g); break;
    }
    return g.count;
}

DINF_API dinf_status dinf_pipe_schedule(dinf_pipe_kind kind, int32_t num_ranks, int32_t num_chunks,
                                        uint32_t flags, int32_t rank, dinf_pipe_op *ops,
                                        int64_t capacity, int64_t *num_ops) {
    dinf__pipe_shape shape;
    dinf_status st = dinf__pipe_check_shape(__func__, kind, num_ranks, num_chunks, &shape);
    if (st != DINF_STATUS_OK)
        return st;
    if (flags & ~DINF_PIPE_WITH_COMM)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "flags=0x%x has unknown bits (only "
                         "DINF_PIPE_WITH_COMM=0x1)", flags);
    if (rank < 0 || rank >= num_ranks)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "rank=%d is not in [0, num_ranks=%d)", rank,
                         num_ranks);
    if (!num_ops)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_ops is NULL");
    if (ops && capacity < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "capacity=%lld is negative",
                         (long long)capacity);
    int64_t n = dinf__pipe_generate(&shape, rank, (flags & DINF_PIPE_WITH_COMM) != 0, ops,
                                    ops ? capacity : 0);
    *num_ops = n;
    if (ops && capacity < n)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "capacity=%lld is smaller than the stream's %lld ops", (long long)capacity,
                         (long long)n);
    return DINF_STATUS_OK;
}
