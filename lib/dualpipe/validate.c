/*
 * The validator: compute rules per rank, send/receive matching, the inputs of
 * every compute op, and a deadlock check in which each commit waits until
 * every op of its batch has its partner posted and committed.
 */
#include "pipe_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct check {
    const dinf__pipe_shape *s;
    const dinf_pipe_op *const *streams;
    const int64_t *lengths;
    dinf_pipe_violation *v;
    int failed;
} check;

static void op_text(const dinf_pipe_op *op, char *buf, size_t n) {
    if (dinf_pipe_op_format(op, buf, n) != DINF_STATUS_OK)
        snprintf(buf, n, "<op type %d>", op->type);
}

static void violate(check *c, int32_t rank, int64_t index, const char *fmt, ...)
    DINF_PRINTF(4, 5);
static void violate(check *c, int32_t rank, int64_t index, const char *fmt, ...) {
    if (c->failed)
        return;
    c->failed = 1;
    if (!c->v)
        return;
    c->v->rank = rank;
    c->v->op_index = index;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->v->rule, sizeof c->v->rule, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Compute rules                                                             */
/* ------------------------------------------------------------------------ */

/* Per rank: well-formed ops, one F and one backward per (dir, mb), forward
 * first, W never ahead of its deferred backwards, nothing left deferred. */
static void check_compute(check *c, uint8_t *seen /* [D*M] scratch */) {
    const dinf__pipe_shape *s = c->s;
    const int32_t D = s->num_dirs, M = s->mb_per_dir;
    enum { F_DONE = 1, B_DONE = 2 };
    for (int32_t r = 0; r < s->num_ranks && !c->failed; r++) {
        const dinf_pipe_op *ops = c->streams[r];
        memset(seen, 0, (size_t)D * (size_t)M);
        int64_t deferred = 0;
        for (int64_t i = 0; i < c->lengths[r] && !c->failed; i++) {
            const dinf_pipe_op *op = &ops[i];
            char why[160], text[64];
            if (dinf__pipe_op_check(s, r, op, why, sizeof why)) {
                violate(c, r, i, "malformed op: %s", why);
                return;
            }
            text[0] = '\0';
#define TEXT (text[0] ? text : (op_text(op, text, sizeof text), text))
            int fwd = op->type == DINF_PIPE_OP_F || op->type == DINF_PIPE_OP_FB;
            int bwd = op->type == DINF_PIPE_OP_B || op->type == DINF_PIPE_OP_I ||
                      op->type == DINF_PIPE_OP_FB;
            /* DualPipeV's last rank hands phase 0's output to phase 1, and
             * phase 1's input-gradient back to phase 0, locally. */
            const int hand_off = s->kind == DINF_PIPE_DUALPIPEV && r == s->num_ranks - 1;
            if (fwd && hand_off && op->dir == 1 && !(seen[0 * M + op->mb] & F_DONE))
                violate(c, r, i, "%s: phase 1's input is phase 0's output F0.%d, which has not run",
                        TEXT, op->mb);
            if (fwd) {
                uint8_t *f = &seen[op->dir * M + op->mb];
                if (*f & F_DONE)
                    violate(c, r, i, "%s: second forward of F%d.%d on this rank", TEXT, op->dir,
                            op->mb);
                *f |= F_DONE;
            }
            if (bwd) {
                int32_t d = op->type == DINF_PIPE_OP_FB ? op->dir2 : op->dir;
                int32_t k = op->type == DINF_PIPE_OP_FB ? op->mb2 : op->mb;
                if (op->type == DINF_PIPE_OP_FB && d == op->dir && k == op->mb)
                    violate(c, r, i, "%s: a forward cannot overlap its own backward", TEXT);
                if (hand_off && d == 0 && !(seen[1 * M + k] & B_DONE))
                    violate(c, r, i, "%s: phase 0's output-gradient comes from phase 1's backward "
                            "of %d, which has not run", TEXT, k);
                uint8_t *b = &seen[d * M + k];
                if (!(*b & F_DONE))
                    violate(c, r, i, "%s: backward of %d.%d before its forward", TEXT, d, k);
                if (*b & B_DONE)
                    violate(c, r, i, "%s: second backward of %d.%d on this rank", TEXT, d, k);
                *b |= B_DONE;
                deferred += op->type == DINF_PIPE_OP_I;
            }
            if (op->type == DINF_PIPE_OP_W) {
                if (deferred == 0)
                    violate(c, r, i, "W with no deferred backward (I) pending");
                deferred--;
            }
        }
        for (int32_t d = 0; d < D && !c->failed; d++)
            for (int32_t k = 0; k < M && !c->failed; k++) {
                if (!(seen[d * M + k] & F_DONE))
                    violate(c, r, -1, "F%d.%d never runs on rank %d", d, k, r);
                else if (!(seen[d * M + k] & B_DONE))
                    violate(c, r, -1, "the backward of %d.%d never runs on rank %d", d, k, r);
            }
#undef TEXT
        if (!c->failed && deferred != 0)
            violate(c, r, -1, "%lld deferred backward(s) never get their W", (long long)deferred);
    }
}

/* ------------------------------------------------------------------------ */
/* Communication                                                             */
/* ------------------------------------------------------------------------ */

/* A posted message, keyed by (gradient?, dir, mb, sender). */
typedef struct post {
    uint64_t key;
    int32_t rank;
    int64_t index;
} post;

static int by_key(const void *a, const void *b) {
    const post *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static uint64_t post_key(const dinf__pipe_shape *s, int grad, int32_t dir, int32_t mb,
                         int32_t sender) {
    return (((uint64_t)grad * (uint64_t)s->num_dirs + (uint64_t)dir) * (uint64_t)s->mb_per_dir +
            (uint64_t)mb) *
               (uint64_t)s->num_ranks +
           (uint64_t)sender;
}

/* Does some stream post communication? */
static int has_comm(const check *c) {
    for (int32_t r = 0; r < c->s->num_ranks; r++)
        for (int64_t i = 0; i < c->lengths[r]; i++)
            if (!dinf__pipe_is_compute(c->streams[r][i].type))
                return 1;
    return 0;
}

/*
 * Inputs: a forward that is not its direction's first stage needs its
 * activation received in an earlier commit, a backward that is not the last
 * stage its gradient; sends follow the op that produced the data; every post
 * is committed. DualPipeV's hand-off on the last rank is local: phase 1's
 * forward there needs phase 0's forward of the same micro-batch, and phase
 * 0's backward there needs phase 1's backward.
 */
static void check_inputs(check *c, int64_t *recv_at /* [2*D*M] */, int64_t *pending /* [2*D*M] */,
                         uint8_t *seen /* [D*M] */) {
    const dinf__pipe_shape *s = c->s;
    const int32_t D = s->num_dirs, M = s->mb_per_dir;
    const int v = s->kind == DINF_PIPE_DUALPIPEV;
    enum { F_DONE = 1, B_DONE = 2 };
    for (int32_t r = 0; r < s->num_ranks && !c->failed; r++) {
        const dinf_pipe_op *ops = c->streams[r];
        for (int64_t j = 0; j < 2 * (int64_t)D * M; j++)
            recv_at[j] = -1; /* index of the receive's post, then -2 once committed */
        memset(seen, 0, (size_t)D * (size_t)M);
        int64_t last_commit = -1, n_pending = 0;
        for (int64_t i = 0; i < c->lengths[r] && !c->failed; i++) {
            const dinf_pipe_op *op = &ops[i];
            char text[64];
            text[0] = '\0';
#define TEXT (text[0] ? text : (op_text(op, text, sizeof text), text))
            switch (op->type) {
            case DINF_PIPE_OP_COMMIT:
                while (n_pending > 0)
                    recv_at[pending[--n_pending]] = -2;
                last_commit = i;
                break;
            case DINF_PIPE_OP_RECV_ACT:
            case DINF_PIPE_OP_RECV_GRAD: {
                int64_t slot = (op->type == DINF_PIPE_OP_RECV_GRAD) * D * M + op->dir * M + op->mb;
                if (recv_at[slot] != -1) {
                    violate(c, r, i, "%s: this message is received twice", TEXT);
                    break;
                }
                recv_at[slot] = i;
                pending[n_pending++] = slot;
                break;
            }
            case DINF_PIPE_OP_SEND_ACT:
                if (!(seen[op->dir * M + op->mb] & F_DONE))
                    violate(c, r, i, "%s: sends an activation before its forward ran", TEXT);
                break;
            case DINF_PIPE_OP_SEND_GRAD:
                if (!(seen[op->dir * M + op->mb] & B_DONE))
                    violate(c, r, i, "%s: sends a gradient before its backward ran", TEXT);
                break;
            default: {
                int fwd = op->type == DINF_PIPE_OP_F || op->type == DINF_PIPE_OP_FB;
                int bwd = op->type == DINF_PIPE_OP_B || op->type == DINF_PIPE_OP_I ||
                          op->type == DINF_PIPE_OP_FB;
                if (fwd) {
                    int32_t d = op->dir, k = op->mb;
                    if (v && d == 1 && r == s->num_ranks - 1) {
                        if (!(seen[0 * M + k] & F_DONE))
                            violate(c, r, i, "%s: phase 1's input is phase 0's output F0.%d, "
                                    "which has not run", TEXT, k);
                    } else if (!dinf__pipe_first_stage(s, d, r) && recv_at[d * M + k] != -2) {
                        violate(c, r, i, "%s: its activation %s", TEXT,
                                recv_at[d * M + k] == -1 ? "was never received"
                                                         : "was posted but not yet committed");
                    }
                    seen[d * M + k] |= F_DONE;
                }
                if (bwd) {
                    int32_t d = op->type == DINF_PIPE_OP_FB ? op->dir2 : op->dir;
                    int32_t k = op->type == DINF_PIPE_OP_FB ? op->mb2 : op->mb;
                    if (v && d == 0 && r == s->num_ranks - 1) {
                        if (!(seen[1 * M + k] & B_DONE))
                            violate(c, r, i, "%s: phase 0's output-gradient comes from phase "
                                    "1's backward of %d, which has not run", TEXT, k);
                    } else if (!dinf__pipe_last_stage(s, d, r) && recv_at[D * M + d * M + k] != -2) {
                        violate(c, r, i, "%s: its output-gradient %s", TEXT,
                                recv_at[D * M + d * M + k] == -1
                                    ? "was never received"
                                    : "was posted but not yet committed");
                    }
                    seen[d * M + k] |= B_DONE;
                }
            }
            }
        }
#undef TEXT
        /* every post must be committed */
        for (int64_t i = c->lengths[r] - 1; i > last_commit && !c->failed; i--)
            if (!dinf__pipe_is_compute(ops[i].type) && ops[i].type != DINF_PIPE_OP_COMMIT) {
                char text[64];
                op_text(&ops[i], text, sizeof text);
                violate(c, r, i, "%s: posted but never committed", text);
            }
    }
}

/* Pair every send with exactly one receive (same message, peers swapped). */
static dinf_status check_matching(check *c, post **sends_out, post **recvs_out, int64_t *count) {
    const dinf__pipe_shape *s = c->s;
    int64_t n_send = 0, n_recv = 0;
    for (int32_t r = 0; r < s->num_ranks; r++)
        for (int64_t i = 0; i < c->lengths[r]; i++) {
            int32_t t = c->streams[r][i].type;
            n_send += t == DINF_PIPE_OP_SEND_ACT || t == DINF_PIPE_OP_SEND_GRAD;
            n_recv += t == DINF_PIPE_OP_RECV_ACT || t == DINF_PIPE_OP_RECV_GRAD;
        }
    post *sends = malloc((size_t)(n_send ? n_send : 1) * sizeof *sends);
    post *recvs = malloc((size_t)(n_recv ? n_recv : 1) * sizeof *recvs);
    if (!sends || !recvs) {
        free(sends);
        free(recvs);
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "cannot allocate %lld message records",
                         (long long)(n_send + n_recv));
    }
    int64_t a = 0, b = 0;
    for (int32_t r = 0; r < s->num_ranks; r++)
        for (int64_t i = 0; i < c->lengths[r]; i++) {
            const dinf_pipe_op *op = &c->streams[r][i];
            int grad = op->type == DINF_PIPE_OP_SEND_GRAD || op->type == DINF_PIPE_OP_RECV_GRAD;
            if (op->type == DINF_PIPE_OP_SEND_ACT || op->type == DINF_PIPE_OP_SEND_GRAD)
                sends[a++] = (post){post_key(s, grad, op->dir, op->mb, r), r, i};
            else if (op->type == DINF_PIPE_OP_RECV_ACT || op->type == DINF_PIPE_OP_RECV_GRAD)
                recvs[b++] = (post){post_key(s, grad, op->dir, op->mb, op->peer), r, i};
        }
    qsort(sends, (size_t)n_send, sizeof *sends, by_key);
    qsort(recvs, (size_t)n_recv, sizeof *recvs, by_key);
    int64_t i = 0, j = 0;
    while (!c->failed && (i < n_send || j < n_recv)) {
        char text[64];
        if (i < n_send && (j == n_recv || sends[i].key < recvs[j].key)) {
            op_text(&c->streams[sends[i].rank][sends[i].index], text, sizeof text);
            violate(c, sends[i].rank, sends[i].index, "%s: no matching receive is posted", text);
        } else if (j < n_recv && (i == n_send || recvs[j].key < sends[i].key)) {
            op_text(&c->streams[recvs[j].rank][recvs[j].index], text, sizeof text);
            violate(c, recvs[j].rank, recvs[j].index, "%s: no matching send is posted", text);
        } else if ((i + 1 < n_send && sends[i + 1].key == sends[i].key) ||
                   (j + 1 < n_recv && recvs[j + 1].key == recvs[j].key)) {
            int dup_send = i + 1 < n_send && sends[i + 1].key == sends[i].key;
            const post *p = dup_send ? &sends[i + 1] : &recvs[j + 1];
            op_text(&c->streams[p->rank][p->index], text, sizeof text);
            violate(c, p->rank, p->index, "%s: this message is %s twice", text,
                    dup_send ? "sent" : "received");
        } else {
            i++;
            j++;
        }
    }
    *sends_out = sends;
    *recvs_out = recvs;
    *count = n_send == n_recv ? n_send : -1;
    return DINF_STATUS_OK;
}

/*
 * Deadlock: every rank runs its stream; posts and compute are instantaneous,
 * a commit completes once every op of its batch has its partner posted and
 * the partner's rank has reached the commit that covers it. Repeat until all
 * ranks finish or none can move.
 */
static dinf_status check_deadlock(check *c, const post *sends, const post *recvs, int64_t n) {
    const dinf__pipe_shape *s = c->s;
    const int32_t R = s->num_ranks;
    int64_t total = 0;
    for (int32_t r = 0; r < R; r++)
        total += c->lengths[r];
    /* Flattened per-op arrays: partner (rank, index) and covering commit. */
    int64_t *base = malloc((size_t)(R + 1) * sizeof *base);
    int64_t *partner = malloc((size_t)(total ? total : 1) * sizeof *partner);
    int64_t *cover = malloc((size_t)(total ? total : 1) * sizeof *cover);
    int64_t *pos = malloc((size_t)R * sizeof *pos);
    int32_t *rank_of = malloc((size_t)(total ? total : 1) * sizeof *rank_of);
    if (!base || !partner || !cover || !pos || !rank_of) {
        free(base), free(partner), free(cover), free(pos), free(rank_of);
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "cannot allocate the deadlock model");
    }
    base[0] = 0;
    for (int32_t r = 0; r < R; r++)
        base[r + 1] = base[r] + c->lengths[r];
    for (int64_t i = 0; i < total; i++)
        partner[i] = -1;
    for (int64_t i = 0; i < n; i++) { /* sorted alike: pairs line up */
        partner[base[sends[i].rank] + sends[i].index] = base[recvs[i].rank] + recvs[i].index;
        partner[base[recvs[i].rank] + recvs[i].index] = base[sends[i].rank] + sends[i].index;
    }
    for (int32_t r = 0; r < R; r++) {
        int64_t next = c->lengths[r]; /* no commit after: never committed */
        for (int64_t i = c->lengths[r] - 1; i >= 0; i--) {
            if (c->streams[r][i].type == DINF_PIPE_OP_COMMIT)
                next = i;
            cover[base[r] + i] = next;
            rank_of[base[r] + i] = r;
        }
        pos[r] = 0;
    }
    /* Work list: a rank runs until it waits at a commit; when it moved, its
     * neighbours (its only partners, as every peer is checked to be one) are
     * queued again. Linear in the number of ops. */
    int32_t *queue = malloc((size_t)R * sizeof *queue);
    uint8_t *queued = calloc((size_t)R, 1);
    if (!queue || !queued) {
        free(base), free(partner), free(cover), free(pos), free(rank_of), free(queue), free(queued);
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "cannot allocate the deadlock model");
    }
    int64_t head = 0, count = R;
    for (int32_t r = 0; r < R; r++)
        queue[r] = r, queued[r] = 1;
    while (count > 0) {
        const int32_t r = queue[head];
        head = (head + 1) % R, count--, queued[r] = 0;
        int progress = 0;
        {
            for (;;) {
                if (pos[r] >= c->lengths[r])
                    break;
                if (c->streams[r][pos[r]].type != DINF_PIPE_OP_COMMIT) {
                    pos[r]++;
                    progress = 1;
                    continue;
                }
                /* at commit pos[r]: its batch is the posts since the previous commit */
                int ready = 1;
                for (int64_t i = pos[r] - 1; i >= 0 && ready; i--) {
                    int32_t t = c->streams[r][i].type;
                    if (t == DINF_PIPE_OP_COMMIT)
                        break;
                    if (dinf__pipe_is_compute(t))
                        continue;
                    int64_t p = partner[base[r] + i];
                    ready = pos[rank_of[p]] >= cover[p];
                }
                if (!ready)
                    break;
                pos[r]++;
                progress = 1;
            }
        }
        if (progress)
            for (int32_t q = r - 1; q <= r + 1; q += 2)
                if (q >= 0 && q < R && !queued[q] && pos[q] < c->lengths[q]) {
                    queue[(head + count) % R] = q;
                    queued[q] = 1, count++;
                }
    }
    free(queue), free(queued);
    for (int32_t r = 0; r < R && !c->failed; r++)
        if (pos[r] < c->lengths[r])
            violate(c, r, pos[r],
                    "deadlock: this commit waits for a partner that never reaches its commit");
    free(base), free(partner), free(cover), free(pos), free(rank_of);
    return DINF_STATUS_OK;
}

dinf_status dinf__pipe_check_streams(const char *func, const dinf__pipe_shape *s,
                                     const dinf_pipe_op *const *streams, const int64_t *lengths,
                                     int compute_only, dinf_pipe_violation *violation,
                                     int32_t *valid) {
    if (!streams)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "streams is NULL");
    if (!lengths)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "lengths is NULL");
    for (int32_t r = 0; r < s->num_ranks; r++) {
        if (lengths[r] < 0)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "lengths[%d]=%lld is negative",
                              r, (long long)lengths[r]);
        if (lengths[r] > 0 && !streams[r])
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "streams[%d] is NULL but lengths[%d]=%lld", r, r,
                              (long long)lengths[r]);
    }
    const size_t dm = (size_t)s->num_dirs * (size_t)s->mb_per_dir;
    uint8_t *seen = malloc(dm);
    int64_t *recv_at = malloc(4 * dm * sizeof *recv_at), *pending = recv_at + 2 * dm;
    if (!seen || !recv_at) {
        free(seen);
        free(recv_at);
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "cannot allocate validator scratch");
    }
    check c = {s, streams, lengths, violation, 0};
    if (violation) {
        violation->rank = -1;
        violation->op_index = -1;
        violation->rule[0] = '\0';
    }
    dinf_status st = DINF_STATUS_OK;
    check_compute(&c, seen);
    if (!compute_only && !c.failed && !has_comm(&c)) {
        /* Compute streams alone: the data flow must not deadlock either
         * (a forward waiting for a forward the other rank runs only after
         * waiting for this rank). */
        const dinf_pipe_costs unit = {1, 1, 0, 1, 0};
        dinf_pipe_sim_result ignored = {0};
        int32_t stuck_rank = -1;
        int64_t stuck_op = -1;
        char saved[DINF_ERROR_MESSAGE_MAX];
        snprintf(saved, sizeof saved, "%s", dinf_last_error());
        dinf_status run = dinf__pipe_run(func, s, streams, lengths, &unit, &ignored, NULL, 0, NULL,
                                         &stuck_rank, &stuck_op);
        if (run == DINF_STATUS_OUT_OF_MEMORY)
            st = run;
        else if (stuck_rank >= 0) {
            char text[64];
            op_text(&streams[stuck_rank][stuck_op], text, sizeof text);
            violate(&c, stuck_rank, stuck_op,
                    "%s: deadlock: its input never arrives (data-flow order)", text);
        }
        if (run != DINF_STATUS_OUT_OF_MEMORY)
            dinf__restore_error(saved);
    }
    if (!compute_only && !c.failed && has_comm(&c)) {
        check_inputs(&c, recv_at, pending, seen);
        post *sends = NULL, *recvs = NULL;
        int64_t n = 0;
        if (!c.failed)
            st = check_matching(&c, &sends, &recvs, &n);
        if (st == DINF_STATUS_OK && !c.failed)
            st = check_deadlock(&c, sends, recvs, n);
        free(sends);
        free(recvs);
    }
    free(seen);
    free(recv_at);
    *valid = !c.failed;
    return st;
}

DINF_API dinf_status dinf_pipe_validate(dinf_pipe_kind kind, int32_t num_ranks, int32_t num_chunks,
                                        const dinf_pipe_op *const *streams, const int64_t *lengths,
                                        dinf_pipe_violation *violation, int32_t *valid) {
    dinf__pipe_shape shape;
    dinf_status st = dinf__pipe_check_shape(__func__, kind, num_ranks, num_chunks, &shape);
    if (st != DINF_STATUS_OK)
        return st;
    if (!valid)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "valid is NULL");
    return dinf__pipe_check_streams(__func__, &shape, streams, lengths, 0, violation, valid);
}
