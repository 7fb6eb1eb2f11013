/*
 * The pipeline executor: whole training steps of a toy model on 1..6 ranks
 * (pthreads, an in-process mailbox) against a sequential single-rank
 * reference; the exact callback sequence of every rank; failure propagation;
 * argument checks; dinf_pipe_split.
 */
#include <deepinfra.h>
#include <deepinfra/dualpipe.h>

#include "core/internal.h" /* dinf__fail, for callbacks that fail like a dinf_* call */
#include "exec_toy.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_name[] = {"dualpipe", "dualpipev", "1f1b", "zb1p"};

/* ------------------------------------------------------------ helpers --- */

static int64_t mb_per_dir(dinf_pipe_kind kind, int N) {
    return kind == DINF_PIPE_DUALPIPE ? N / 2 : N;
}

/* rank's stream with communication (caller frees). */
static dinf_pipe_op *stream(dinf_pipe_kind kind, int R, int N, int rank, int64_t *n) {
    cr_assert_eq(dinf_pipe_schedule(kind, R, N, DINF_PIPE_WITH_COMM, rank, NULL, 0, n),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_pipe_op *ops = malloc((size_t)(*n ? *n : 1) * sizeof *ops);
    cr_assert_eq(dinf_pipe_schedule(kind, R, N, DINF_PIPE_WITH_COMM, rank, ops, *n, n),
                 DINF_STATUS_OK);
    return ops;
}

/* counts[type] = ops of that type in rank's stream. */
static void stream_counts(dinf_pipe_kind kind, int R, int N, int rank, int64_t counts[10]) {
    int64_t n;
    dinf_pipe_op *ops = stream(kind, R, N, rank, &n);
    memset(counts, 0, 10 * sizeof counts[0]);
    for (int64_t i = 0; i < n; i++)
        counts[ops[i].type]++;
    free(ops);
}

/* One training step of the toy model on every rank, checked against the
 * sequential reference. */
static void train_and_compare(dinf_pipe_kind kind, int R, int N, int64_t batch, int use_fb,
                              unsigned seed) {
    exec_config c = {kind, R, N, 8, batch, seed, use_fb, 5.0};
    exec_problem *p = exec_problem_create(&c);
    char why[1024] = "";
    exec_run *run = exec_run_create(p, why, sizeof why);
    cr_assert_not_null(run, "%s R=%d N=%d batch=%lld: %s", kind_name[kind], R, N,
                       (long long)batch, why);
    exec_run_step(run);
    int bad = exec_run_check(run, 1e-12, why, sizeof why);
    cr_assert_eq(bad, 0, "%s R=%d N=%d batch=%lld fb=%d seed=%u: %s", kind_name[kind], R, N,
                 (long long)batch, use_fb, seed, why);
    exec_run_destroy(run);
    exec_problem_destroy(p);
}

/* ---------------------------------------- training steps vs reference --- */

Test(pipe_exec, dualpipe_step_matches_sequential_reference) {
    for (int R = 2; R <= 6; R += 2)
        for (int N = 2 * R; N <= 2 * R + 4; N += 2) /* uneven micro-batches: 2 * C + 1 rows */
            train_and_compare(DINF_PIPE_DUALPIPE, R, N, 2 * (N / 2) + 1, 0, 1000u * R + N);
}

Test(pipe_exec, dualpipev_step_matches_sequential_reference) {
    for (int R = 1; R <= 4; R++)
        for (int N = 2 * R; N <= 2 * R + 3; N++)
            train_and_compare(DINF_PIPE_DUALPIPEV, R, N, 2 * N + 1, 0, 2000u * R + N);
}

Test(pipe_exec, one_f_one_b_step_matches_sequential_reference) {
    for (int R = 1; R <= 4; R++) {
        const int chunks[] = {1, 2, R, 2 * R + 1};
        for (int i = 0; i < 4; i++)
            train_and_compare(DINF_PIPE_1F1B, R, chunks[i], 2 * chunks[i] + 1, 0,
                              3000u * R + chunks[i]);
    }
}

Test(pipe_exec, zb1p_step_matches_sequential_reference) {
    for (int R = 1; R <= 4; R++) {
        const int chunks[] = {R, R + 1, 2 * R + 1};
        for (int i = 0; i < 3; i++)
            train_and_compare(DINF_PIPE_ZB1P, R, chunks[i], 2 * chunks[i] + 1, 0,
                              4000u * R + chunks[i]);
    }
}

/* One row per micro-batch, the smallest batch the executor accepts. */
Test(pipe_exec, one_row_per_micro_batch) {
    train_and_compare(DINF_PIPE_DUALPIPE, 4, 8, 4, 0, 5);
    train_and_compare(DINF_PIPE_DUALPIPEV, 3, 7, 7, 0, 6);
    train_and_compare(DINF_PIPE_ZB1P, 3, 4, 4, 0, 7);
}

Test(pipe_exec, second_step_after_reset_matches_again) {
    exec_config c = {DINF_PIPE_DUALPIPEV, 2, 5, 8, 11, 42, 0, 5.0};
    exec_problem *p = exec_problem_create(&c);
    char why[1024] = "";
    exec_run *run = exec_run_create(p, why, sizeof why);
    cr_assert_not_null(run, "%s", why);
    for (int step = 0; step < 2; step++) {
        exec_run_reset(run);
        exec_run_step(run);
        cr_assert_eq(exec_run_check(run, 1e-12, why, sizeof why), 0, "step %d: %s", step, why);
    }
    exec_run_destroy(run);
    exec_problem_destroy(p);
}

/* ----------------------------------------------- F&B: hook or fallback --- */

Test(pipe_exec, forward_backward_callback_is_used_when_present) {
    const struct {
        dinf_pipe_kind kind;
        int R, N;
    } cases[] = {{DINF_PIPE_DUALPIPE, 4, 10}, {DINF_PIPE_DUALPIPEV, 3, 7}};
    for (size_t i = 0; i < 2; i++) {
        const dinf_pipe_kind kind = cases[i].kind;
        const int R = cases[i].R, N = cases[i].N;
        exec_config c = {kind, R, N, 8, 2 * N + 1, 77, 1, 5.0};
        exec_problem *p = exec_problem_create(&c);
        char why[1024] = "";
        exec_run *run = exec_run_create(p, why, sizeof why);
        cr_assert_not_null(run, "%s", why);
        exec_run_step(run);
        cr_assert_eq(exec_run_check(run, 1e-12, why, sizeof why), 0, "%s R=%d N=%d: %s",
                     kind_name[kind], R, N, why);
        for (int r = 0; r < R; r++) {
            int64_t n[10];
            stream_counts(kind, R, N, r, n);
            const int *calls = run->engines[r]->calls;
            cr_assert_gt(n[DINF_PIPE_OP_FB], 0);
            cr_assert_eq(calls[EXEC_CB_FORWARD_BACKWARD], n[DINF_PIPE_OP_FB], "%s rank %d",
                         kind_name[kind], r);
            cr_assert_eq(calls[EXEC_CB_FORWARD], n[DINF_PIPE_OP_F], "%s rank %d", kind_name[kind],
                         r);
            cr_assert_eq(calls[EXEC_CB_BACKWARD], n[DINF_PIPE_OP_B] + n[DINF_PIPE_OP_I],
                         "%s rank %d", kind_name[kind], r);
            cr_assert_eq(calls[EXEC_CB_WEIGHT_GRAD], n[DINF_PIPE_OP_W]);
            cr_assert_eq(calls[EXEC_CB_COMMIT], n[DINF_PIPE_OP_COMMIT]);
        }
        exec_run_destroy(run);
        exec_problem_destroy(p);
    }
}

Test(pipe_exec, forward_backward_null_falls_back_to_forward_then_backward) {
    const dinf_pipe_kind kind = DINF_PIPE_DUALPIPE;
    const int R = 4, N = 10;
    exec_config c = {kind, R, N, 8, 2 * N + 1, 78, 0, 5.0};
    exec_problem *p = exec_problem_create(&c);
    char why[1024] = "";
    exec_run *run = exec_run_create(p, why, sizeof why);
    cr_assert_not_null(run, "%s", why);
    exec_run_step(run);
    cr_assert_eq(exec_run_check(run, 1e-12, why, sizeof why), 0, "%s", why);
    for (int r = 0; r < R; r++) {
        int64_t n[10];
        stream_counts(kind, R, N, r, n);
        const int *calls = run->engines[r]->calls;
        cr_assert_eq(calls[EXEC_CB_FORWARD_BACKWARD], 0);
        cr_assert_eq(calls[EXEC_CB_FORWARD], n[DINF_PIPE_OP_F] + n[DINF_PIPE_OP_FB], "rank %d", r);
        cr_assert_eq(calls[EXEC_CB_BACKWARD],
                     n[DINF_PIPE_OP_B] + n[DINF_PIPE_OP_I] + n[DINF_PIPE_OP_FB], "rank %d", r);
    }
    exec_run_destroy(run);
    exec_problem_destroy(p);
}

/* --------------------------- the exact callback sequence of every rank --- */

/* A recording engine: every callback appends what it was asked, nothing
 * blocks, so each rank's step runs alone on the test's thread. */
typedef struct rec_call {
    int callback;
    dinf_pipe_task task, task2;
    int32_t rank, dir, mb, peer;
    dinf_pipe_msg kind;
} rec_call;

typedef struct recorder {
    rec_call calls[4096];
    int count;
    int fail_callback, fail_at; /* fail_callback -1: never */
    dinf_status fail_status;
    int seen[EXEC_CB_COUNT];
} recorder;

static dinf_status rec_enter(recorder *r, int callback) {
    cr_assert_lt(r->count, 4096);
    r->calls[r->count].callback = callback;
    int n = r->seen[callback]++;
    if (callback == r->fail_callback && n == r->fail_at)
        return dinf__fail(r->fail_status, "recorder", "injected %s failure",
                          exec_callback_names[callback]);
    return DINF_STATUS_OK;
}
static dinf_status rec_forward(void *user, const dinf_pipe_task *t) {
    recorder *r = user;
    r->calls[r->count].task = *t;
    dinf_status st = rec_enter(r, EXEC_CB_FORWARD);
    r->count++;
    return st;
}
static dinf_status rec_backward(void *user, const dinf_pipe_task *t) {
    recorder *r = user;
    r->calls[r->count].task = *t;
    dinf_status st = rec_enter(r, EXEC_CB_BACKWARD);
    r->count++;
    return st;
}
static dinf_status rec_weight_grad(void *user, const dinf_pipe_task *t) {
    recorder *r = user;
    r->calls[r->count].task = *t;
    dinf_status st = rec_enter(r, EXEC_CB_WEIGHT_GRAD);
    r->count++;
    return st;
}
static dinf_status rec_forward_backward(void *user, const dinf_pipe_task *f,
                                        const dinf_pipe_task *b) {
    recorder *r = user;
    r->calls[r->count].task = *f;
    r->calls[r->count].task2 = *b;
    dinf_status st = rec_enter(r, EXEC_CB_FORWARD_BACKWARD);
    r->count++;
    return st;
}
static dinf_status rec_post(recorder *r, int callback, int32_t rank, dinf_pipe_msg kind,
                            int32_t dir, int32_t mb, int32_t peer) {
    rec_call *c = &r->calls[r->count];
    dinf_status st = rec_enter(r, callback);
    c->rank = rank;
    c->kind = kind;
    c->dir = dir;
    c->mb = mb;
    c->peer = peer;
    r->count++;
    return st;
}
static dinf_status rec_post_send(void *user, int32_t rank, dinf_pipe_msg kind, int32_t dir,
                                 int32_t mb, int32_t peer) {
    return rec_post(user, EXEC_CB_POST_SEND, rank, kind, dir, mb, peer);
}
static dinf_status rec_post_recv(void *user, int32_t rank, dinf_pipe_msg kind, int32_t dir,
                                 int32_t mb, int32_t peer) {
    return rec_post(user, EXEC_CB_POST_RECV, rank, kind, dir, mb, peer);
}
static dinf_status rec_commit(void *user, int32_t rank) {
    recorder *r = user;
    r->calls[r->count].rank = rank;
    dinf_status st = rec_enter(r, EXEC_CB_COMMIT);
    r->count++;
    return st;
}

static dinf_pipe_callbacks rec_callbacks(recorder *r, int with_fb, int with_comm) {
    dinf_pipe_callbacks cb = DINF_PIPE_CALLBACKS_INIT;
    cb.user = r;
    cb.forward = rec_forward;
    cb.backward = rec_backward;
    cb.weight_grad = rec_weight_grad;
    cb.forward_backward = with_fb ? rec_forward_backward : NULL;
    if (with_comm) {
        cb.post_send = rec_post_send;
        cb.post_recv = rec_post_recv;
        cb.commit = rec_commit;
    }
    return cb;
}

/* The task the header promises for (dir, mb) on rank r, written from its
 * placement rules. local_input: a forward whose input is this rank's own
 * output of the other module, or a backward whose output-gradient is this
 * rank's own input-gradient of the other module (DualPipeV, last rank:
 * phase 1's forward and phase 0's backward). */
static dinf_pipe_task promised_task(dinf_pipe_kind kind, int R, int r, int dir, int mb,
                                    int backward, int defer, const int64_t *offsets) {
    dinf_pipe_task t;
    memset(&t, 0, sizeof t);
    t.rank = r;
    t.dir = dir;
    t.mb = mb;
    if (kind == DINF_PIPE_DUALPIPE) {
        t.stage = dir == 0 ? r : R - 1 - r;
        t.module = dir;
        t.first_stage = dir == 0 ? r == 0 : r == R - 1;
        t.last_stage = dir == 0 ? r == R - 1 : r == 0;
    } else if (kind == DINF_PIPE_DUALPIPEV) {
        t.stage = dir == 0 ? r : 2 * R - 1 - r;
        t.module = dir;
        t.first_stage = dir == 0 && r == 0;
        t.last_stage = dir == 1 && r == 0;
        t.local_input = r == R - 1 && (backward ? dir == 0 : dir == 1);
    } else {
        t.stage = r;
        t.first_stage = r == 0;
        t.last_stage = r == R - 1;
    }
    t.defer_weight_grad = backward && defer;
    t.row_offset = offsets ? offsets[mb] : -1;
    t.row_count = offsets ? offsets[mb + 1] - offsets[mb] : -1;
    return t;
}

static void assert_task_eq(const dinf_pipe_task *got, const dinf_pipe_task *want,
                           const char *where) {
    cr_assert(got->rank == want->rank && got->dir == want->dir && got->mb == want->mb &&
                  got->stage == want->stage && got->module == want->module &&
                  got->first_stage == want->first_stage && got->last_stage == want->last_stage &&
                  got->local_input == want->local_input &&
                  got->defer_weight_grad == want->defer_weight_grad &&
                  got->row_offset == want->row_offset && got->row_count == want->row_count,
              "%s: got rank %d %d.%d stage %d module %d first %d last %d local %d defer %d "
              "rows %lld+%lld; want rank %d %d.%d stage %d module %d first %d last %d local %d "
              "defer %d rows %lld+%lld",
              where, got->rank, got->dir, got->mb, got->stage, got->module, got->first_stage,
              got->last_stage, got->local_input, got->defer_weight_grad,
              (long long)got->row_offset, (long long)got->row_count, want->rank, want->dir,
              want->mb, want->stage, want->module, want->first_stage, want->last_stage,
              want->local_input, want->defer_weight_grad, (long long)want->row_offset,
              (long long)want->row_count);
}

/* Run rank's executor alone with the recorder and compare every call with
 * what the stream says must happen. */
static void check_call_sequence(dinf_pipe_kind kind, int R, int N, int rank, int64_t batch,
                                int with_fb) {
    recorder *rec = calloc(1, sizeof *rec);
    rec->fail_callback = -1;
    dinf_pipe_callbacks cb = rec_callbacks(rec, with_fb, 1);
    dinf_pipe_executor *ex = NULL;
    cr_assert_eq(dinf_pipe_executor_create(kind, R, N, rank, batch, &cb, &ex), DINF_STATUS_OK,
                 "%s", dinf_last_error());
    cr_assert_eq(dinf_pipe_executor_step(ex), DINF_STATUS_OK, "%s", dinf_last_error());

    const int64_t M = mb_per_dir(kind, N);
    int64_t *offsets = NULL;
    if (batch > 0) {
        offsets = malloc((size_t)(M + 1) * sizeof *offsets);
        cr_assert_eq(dinf_pipe_split(batch, (int32_t)M, offsets), DINF_STATUS_OK);
    }
    int64_t n;
    dinf_pipe_op *ops = stream(kind, R, N, rank, &n);
    int fifo_dir[1024], fifo_mb[1024], head = 0, tail = 0;
    int k = 0; /* next recorded call */
    char where[160];
    for (int64_t i = 0; i < n; i++) {
        const dinf_pipe_op *op = &ops[i];
        char text[32];
        dinf_pipe_op_format(op, text, sizeof text);
        snprintf(where, sizeof where, "%s R=%d N=%d rank %d batch %lld fb %d op %lld (%s)",
                 kind_name[kind], R, N, rank, (long long)batch, with_fb, (long long)i, text);
        cr_assert_lt(k, rec->count, "%s: no call recorded", where);
        const rec_call *c = &rec->calls[k++];
        dinf_pipe_task want;
        switch (op->type) {
        case DINF_PIPE_OP_COMMIT:
            cr_assert_eq(c->callback, EXEC_CB_COMMIT, "%s", where);
            cr_assert_eq(c->rank, rank, "%s", where);
            break;
        case DINF_PIPE_OP_SEND_ACT:
        case DINF_PIPE_OP_SEND_GRAD:
        case DINF_PIPE_OP_RECV_ACT:
        case DINF_PIPE_OP_RECV_GRAD: {
            const int send = op->type == DINF_PIPE_OP_SEND_ACT || op->type == DINF_PIPE_OP_SEND_GRAD;
            const int act = op->type == DINF_PIPE_OP_SEND_ACT || op->type == DINF_PIPE_OP_RECV_ACT;
            cr_assert_eq(c->callback, send ? EXEC_CB_POST_SEND : EXEC_CB_POST_RECV, "%s", where);
            cr_assert(c->rank == rank && c->dir == op->dir && c->mb == op->mb &&
                          c->peer == op->peer &&
                          c->kind == (act ? DINF_PIPE_MSG_ACT : DINF_PIPE_MSG_GRAD),
                      "%s: got rank %d kind %d %d.%d peer %d", where, c->rank, (int)c->kind,
                      c->dir, c->mb, c->peer);
            break;
        }
        case DINF_PIPE_OP_F:
            cr_assert_eq(c->callback, EXEC_CB_FORWARD, "%s", where);
            want = promised_task(kind, R, rank, op->dir, op->mb, 0, 0, offsets);
            assert_task_eq(&c->task, &want, where);
            break;
        case DINF_PIPE_OP_B:
        case DINF_PIPE_OP_I: {
            const int defer = op->type == DINF_PIPE_OP_I;
            cr_assert_eq(c->callback, EXEC_CB_BACKWARD, "%s", where);
            want = promised_task(kind, R, rank, op->dir, op->mb, 1, defer, offsets);
            assert_task_eq(&c->task, &want, where);
            if (defer) {
                fifo_dir[tail] = op->dir;
                fifo_mb[tail++] = op->mb;
            }
            break;
        }
        case DINF_PIPE_OP_W: /* the oldest deferred backward, as that backward's task */
            cr_assert_eq(c->callback, EXEC_CB_WEIGHT_GRAD, "%s", where);
            cr_assert_lt(head, tail, "%s", where);
            want = promised_task(kind, R, rank, fifo_dir[head], fifo_mb[head], 1, 1, offsets);
            head++;
            assert_task_eq(&c->task, &want, where);
            break;
        case DINF_PIPE_OP_FB: {
            dinf_pipe_task f = promised_task(kind, R, rank, op->dir, op->mb, 0, 0, offsets);
            dinf_pipe_task b = promised_task(kind, R, rank, op->dir2, op->mb2, 1, 0, offsets);
            if (with_fb) {
                cr_assert_eq(c->callback, EXEC_CB_FORWARD_BACKWARD, "%s", where);
                assert_task_eq(&c->task, &f, where);
                assert_task_eq(&c->task2, &b, where);
            } else { /* forward(f), then at once backward(b) */
                cr_assert_eq(c->callback, EXEC_CB_FORWARD, "%s", where);
                assert_task_eq(&c->task, &f, where);
                cr_assert_lt(k, rec->count, "%s: no backward after the forward", where);
                c = &rec->calls[k++];
                cr_assert_eq(c->callback, EXEC_CB_BACKWARD, "%s", where);
                assert_task_eq(&c->task, &b, where);
            }
            break;
        }
        default: cr_assert_fail("%s: unexpected op type %d", where, op->type);
        }
    }
    cr_assert_eq(k, rec->count, "%s R=%d N=%d rank %d: %d calls recorded, %d expected",
                 kind_name[kind], R, N, rank, rec->count, k);
    cr_assert_eq(head, tail, "every deferred backward got its W");
    free(ops);
    free(offsets);
    dinf_pipe_executor_destroy(ex);
    free(rec);
}

Test(pipe_exec, every_rank_makes_the_calls_its_stream_says) {
    for (int kind = 0; kind < DINF_PIPE_KIND_COUNT; kind++)
        for (int R = 1; R <= 6; R++) {
            if (kind == DINF_PIPE_DUALPIPE && R % 2)
                continue;
            const int N = kind <= DINF_PIPE_DUALPIPEV ? 2 * R + 2 : R + 2;
            const int64_t M = mb_per_dir((dinf_pipe_kind)kind, N);
            for (int r = 0; r < R; r++) {
                check_call_sequence((dinf_pipe_kind)kind, R, N, r, 0, 0);       /* no rows */
                check_call_sequence((dinf_pipe_kind)kind, R, N, r, 3 * M + 2, 0); /* uneven */
                check_call_sequence((dinf_pipe_kind)kind, R, N, r, M, 1);        /* one row each */
            }
        }
}

/* A few tasks written out by hand from the header's placement text. */
Test(pipe_exec, tasks_name_the_right_stage_and_ends) {
    struct {
        dinf_pipe_kind kind;
        int R, N, rank;
        const char *op; /* the op whose (first) task is checked */
        int stage, module, first, last, local;
    } cases[] = {
        /* DualPipe: dir 1 enters at rank R-1, which holds stage 0 in slot 1 */
        {DINF_PIPE_DUALPIPE, 4, 8, 3, "F1.0", 0, 1, 1, 0, 0},
        {DINF_PIPE_DUALPIPE, 4, 8, 3, "F0.0", 3, 0, 0, 1, 0},
        {DINF_PIPE_DUALPIPE, 4, 8, 0, "F1.0", 3, 1, 0, 1, 0},
        {DINF_PIPE_DUALPIPE, 4, 8, 1, "F1.0", 2, 1, 0, 0, 0},
        /* DualPipeV: the last rank hands phase 0 to phase 1 locally; loss at rank 0 */
        {DINF_PIPE_DUALPIPEV, 2, 4, 1, "F0.0", 1, 0, 0, 0, 0},
        {DINF_PIPE_DUALPIPEV, 2, 4, 1, "F1.0", 2, 1, 0, 0, 1},
        {DINF_PIPE_DUALPIPEV, 2, 4, 1, "B1.0", 2, 1, 0, 0, 0},
        {DINF_PIPE_DUALPIPEV, 2, 4, 0, "F1.0", 3, 1, 0, 1, 0},
        {DINF_PIPE_DUALPIPEV, 1, 3, 0, "B1.0", 1, 1, 0, 1, 0},
        {DINF_PIPE_DUALPIPEV, 1, 3, 0, "F0.0", 0, 0, 1, 0, 0},
        {DINF_PIPE_ZB1P, 3, 3, 2, "F0.0", 2, 0, 0, 1, 0},
        {DINF_PIPE_1F1B, 3, 3, 0, "B0.0", 0, 0, 1, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        recorder *rec = calloc(1, sizeof *rec);
        rec->fail_callback = -1;
        dinf_pipe_callbacks cb = rec_callbacks(rec, 0, 1);
        dinf_pipe_executor *ex = NULL;
        cr_assert_eq(dinf_pipe_executor_create(cases[i].kind, cases[i].R, cases[i].N,
                                               cases[i].rank, 0, &cb, &ex),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_eq(dinf_pipe_executor_step(ex), DINF_STATUS_OK, "%s", dinf_last_error());
        dinf_pipe_op want;
        cr_assert_eq(dinf_pipe_op_parse(cases[i].op, &want), DINF_STATUS_OK);
        const int callback = want.type == DINF_PIPE_OP_F ? EXEC_CB_FORWARD : EXEC_CB_BACKWARD;
        const dinf_pipe_task *t = NULL;
        for (int k = 0; k < rec->count && !t; k++)
            if (rec->calls[k].callback == callback && rec->calls[k].task.dir == want.dir &&
                rec->calls[k].task.mb == want.mb)
                t = &rec->calls[k].task;
        cr_assert_not_null(t, "case %zu: %s not called", i, cases[i].op);
        cr_assert(t->stage == cases[i].stage && t->module == cases[i].module &&
                      t->first_stage == cases[i].first && t->last_stage == cases[i].last &&
                      t->local_input == cases[i].local && t->row_offset == -1 &&
                      t->row_count == -1,
                  "case %zu (%s R=%d rank %d %s): stage %d module %d first %d last %d local %d",
                  i, kind_name[cases[i].kind], cases[i].R, cases[i].rank, cases[i].op, t->stage,
                  t->module, t->first_stage, t->last_stage, t->local_input);
        dinf_pipe_executor_destroy(ex);
        free(rec);
    }
}

/* ------------------------------------------------------------ failures --- */

/* DualPipeV, one rank, 3 micro-batches: everything is local, nothing waits.
 * Stream: | F0.0 | F1.0 | F0.1 | B1.0 | F1.1&B0.0 | F0.2&B1.1 | F1.2&B0.1 |
 * B1.2 | I0.2 | W |  (op indices 0..20) */
Test(pipe_exec, failing_callback_stops_the_step_with_its_status_and_message) {
    const struct {
        int callback, fail_at, use_fb;
        int64_t op_index;
        const char *op;
        dinf_status status;
    } cases[] = {
        {EXEC_CB_FORWARD, 1, 0, 3, "F1.0", DINF_STATUS_CUDA_ERROR},
        {EXEC_CB_BACKWARD, 0, 0, 7, "B1.0", DINF_STATUS_NCCL_ERROR},
        {EXEC_CB_FORWARD, 3, 0, 9, "F1.1&B0.0", DINF_STATUS_OUT_OF_MEMORY}, /* fallback's F */
        {EXEC_CB_BACKWARD, 1, 0, 9, "F1.1&B0.0", DINF_STATUS_CUDA_ERROR},   /* fallback's B */
        {EXEC_CB_FORWARD_BACKWARD, 1, 1, 11, "F0.2&B1.1", DINF_STATUS_TIMEOUT},
        {EXEC_CB_BACKWARD, 5, 0, 17, "I0.2", DINF_STATUS_INVALID_ARGUMENT},
        {EXEC_CB_WEIGHT_GRAD, 0, 0, 19, "W", DINF_STATUS_UNSUPPORTED},
        {EXEC_CB_COMMIT, 3, 0, 6, "|", DINF_STATUS_NCCL_ERROR},
        {EXEC_CB_COMMIT, 10, 0, 20, "|", DINF_STATUS_NCCL_ERROR}, /* the final commit */
    };
    exec_config c = {DINF_PIPE_DUALPIPEV, 1, 3, 8, 7, 9, 0, 5.0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c.use_forward_backward = cases[i].use_fb;
        exec_problem *p = exec_problem_create(&c);
        char why[1024] = "";
        exec_run *run = exec_run_create(p, why, sizeof why);
        cr_assert_not_null(run, "%s", why);
        int64_t n;
        dinf_pipe_op *ops = stream(c.kind, 1, 3, 0, &n);
        char text[32];
        dinf_pipe_op_format(&ops[cases[i].op_index], text, sizeof text);
        cr_assert_str_eq(text, cases[i].op, "case %zu: the stream changed", i);
        free(ops);

        exec_engine *e = run->engines[0];
        e->fail_callback = cases[i].callback;
        e->fail_at = cases[i].fail_at;
        e->fail_status = cases[i].status;
        cr_assert_eq(exec_run_step(run), 1);
        cr_assert_eq(run->status[0], cases[i].status, "case %zu: %s", i, run->error[0]);
        char want[512];
        snprintf(want, sizeof want,
                 "dinf_pipe_executor_step: rank 0 op %lld (%s): %s failed: exec_toy: injected %s "
                 "failure (call %d)",
                 (long long)cases[i].op_index, cases[i].op, exec_callback_names[cases[i].callback],
                 exec_callback_names[cases[i].callback], cases[i].fail_at);
        cr_assert_str_eq(run->error[0], want, "case %zu", i);
        cr_assert_eq(e->calls_after_failure, 0, "case %zu: callbacks ran after the failure", i);
        if (cases[i].callback == EXEC_CB_FORWARD && cases[i].op_index == 9)
            cr_assert_eq(e->calls[EXEC_CB_BACKWARD], 1, "the fallback's backward did not run");

        /* The executor is ready for the next step. */
        exec_run_reset(run);
        exec_run_step(run);
        cr_assert_eq(exec_run_check(run, 1e-12, why, sizeof why), 0, "case %zu, next step: %s", i,
                     why);
        exec_run_destroy(run);
        exec_problem_destroy(p);
    }
}

Test(pipe_exec, failing_post_names_the_post) {
    /* 1F1B on 2 ranks, each rank's step alone (the recorder never blocks). */
    for (int rank = 0; rank < 2; rank++) {
        const int callback = rank == 0 ? EXEC_CB_POST_SEND : EXEC_CB_POST_RECV;
        const int want_type = rank == 0 ? DINF_PIPE_OP_SEND_ACT : DINF_PIPE_OP_RECV_ACT;
        recorder *rec = calloc(1, sizeof *rec);
        rec->fail_callback = callback;
        rec->fail_at = 1;
        rec->fail_status = DINF_STATUS_NCCL_ERROR;
        dinf_pipe_callbacks cb = rec_callbacks(rec, 0, 1);
        dinf_pipe_executor *ex = NULL;
        cr_assert_eq(dinf_pipe_executor_create(DINF_PIPE_1F1B, 2, 4, rank, 0, &cb, &ex),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_eq(dinf_pipe_executor_step(ex), DINF_STATUS_NCCL_ERROR);
        int64_t n, index = -1;
        int seen = 0;
        dinf_pipe_op *ops = stream(DINF_PIPE_1F1B, 2, 4, rank, &n);
        for (int64_t i = 0; i < n && index < 0; i++)
            if (ops[i].type == want_type && seen++ == 1)
                index = i;
        cr_assert_geq(index, 0);
        char text[32], want[512];
        dinf_pipe_op_format(&ops[index], text, sizeof text);
        snprintf(want, sizeof want,
                 "dinf_pipe_executor_step: rank %d op %lld (%s): %s failed: recorder: injected %s "
                 "failure",
                 rank, (long long)index, text, exec_callback_names[callback],
                 exec_callback_names[callback]);
        cr_assert_str_eq(dinf_last_error(), want);
        cr_assert_eq(rec->calls[rec->count - 1].callback, callback, "nothing ran after it");
        free(ops);
        dinf_pipe_executor_destroy(ex);
        free(rec);
    }
}

/* A rank that fails mid-step in a threaded run: it reports its own failure,
 * and the others stop waiting instead of hanging. */
Test(pipe_exec, failure_on_one_of_many_ranks_does_not_hang_the_others) {
    exec_config c = {DINF_PIPE_DUALPIPE, 4, 8, 8, 9, 31, 0, 5.0};
    exec_problem *p = exec_problem_create(&c);
    char why[1024] = "";
    exec_run *run = exec_run_create(p, why, sizeof why);
    cr_assert_not_null(run, "%s", why);
    run->engines[2]->fail_callback = EXEC_CB_BACKWARD;
    run->engines[2]->fail_at = 2;
    run->engines[2]->fail_status = DINF_STATUS_CUDA_ERROR;
    cr_assert_geq(exec_run_step(run), 1);
    cr_assert_eq(run->status[2], DINF_STATUS_CUDA_ERROR, "%s", run->error[2]);
    cr_assert(strstr(run->error[2], "dinf_pipe_executor_step: rank 2 op ") == run->error[2] &&
                  strstr(run->error[2], "backward failed: exec_toy: injected backward failure"),
              "%s", run->error[2]);
    for (int r = 0; r < 4; r++)
        if (r != 2 && run->status[r] != DINF_STATUS_OK)
            cr_assert(strstr(run->error[r], "commit failed: exec_mailbox: ") &&
                          strstr(run->error[r], "another rank failed"),
                      "rank %d: %s", r, run->error[r]);
    exec_run_destroy(run);
    exec_problem_destroy(p);
}

/* ----------------------------------------------------- argument checks --- */

static dinf_status no_task(void *user, const dinf_pipe_task *t) {
    (void)user;
    (void)t;
    return DINF_STATUS_OK;
}
static dinf_status no_post(void *user, int32_t rank, dinf_pipe_msg m, int32_t d, int32_t mb,
                           int32_t peer) {
    (void)user, (void)rank, (void)m, (void)d, (void)mb, (void)peer;
    return DINF_STATUS_OK;
}
static dinf_status no_commit(void *user, int32_t rank) {
    (void)user, (void)rank;
    return DINF_STATUS_OK;
}

static dinf_pipe_callbacks full_callbacks(void) {
    dinf_pipe_callbacks cb = DINF_PIPE_CALLBACKS_INIT;
    cb.forward = no_task;
    cb.backward = no_task;
    cb.weight_grad = no_task;
    cb.post_send = no_post;
    cb.post_recv = no_post;
    cb.commit = no_commit;
    return cb;
}

static void expect_create_error(dinf_pipe_kind kind, int R, int N, int rank, int64_t batch,
                                const dinf_pipe_callbacks *cb, const char *message) {
    dinf_pipe_executor *ex = (dinf_pipe_executor *)(uintptr_t)1;
    cr_assert_eq(dinf_pipe_executor_create(kind, R, N, rank, batch, cb, &ex),
                 DINF_STATUS_INVALID_ARGUMENT, "accepted: %s", message);
    cr_assert_null(ex, "%s: *executor is not cleared", message);
    char want[512];
    snprintf(want, sizeof want, "dinf_pipe_executor_create: %s", message);
    cr_assert_str_eq(dinf_last_error(), want);
}

static void expect_create_ok(dinf_pipe_kind kind, int R, int N, int rank, int64_t batch,
                             const dinf_pipe_callbacks *cb) {
    dinf_pipe_executor *ex = NULL;
    cr_assert_eq(dinf_pipe_executor_create(kind, R, N, rank, batch, cb, &ex), DINF_STATUS_OK,
                 "%s R=%d N=%d rank %d batch %lld: %s", kind_name[kind], R, N, rank,
                 (long long)batch, dinf_last_error());
    cr_assert_eq(dinf_pipe_executor_step(ex), DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_pipe_executor_destroy(ex);
}

Test(pipe_exec, create_rejects_bad_input) {
    const dinf_pipe_callbacks good = full_callbacks();
    dinf_pipe_callbacks cb;
    char msg[256];

    cr_assert_eq(dinf_pipe_executor_create(DINF_PIPE_1F1B, 2, 4, 0, 0, &good, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_pipe_executor_create: executor is NULL");
    expect_create_error(DINF_PIPE_1F1B, 2, 4, 0, 0, NULL, "callbacks is NULL");

    cb = good;
    cb.size = 0;
    snprintf(msg, sizeof msg,
             "callbacks->size=0 is smaller than the %zu bytes of the first dinf_pipe_callbacks "
             "(initialise with DINF_PIPE_CALLBACKS_INIT)",
             sizeof(dinf_pipe_callbacks));
    expect_create_error(DINF_PIPE_1F1B, 2, 4, 0, 0, &cb, msg);
    /* a caller built against a newer header passes a larger struct */
    struct {
        dinf_pipe_callbacks v1;
        void *newer;
    } larger = {good, NULL};
    larger.v1.size = sizeof larger;
    dinf_pipe_executor *ok_ex = NULL;
    cr_assert_eq(dinf_pipe_executor_create(DINF_PIPE_1F1B, 2, 4, 0, 0, &larger.v1, &ok_ex),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_pipe_executor_destroy(ok_ex);
    cb = good;
    cb.magic = 0x12345678u;
    expect_create_error(DINF_PIPE_1F1B, 2, 4, 0, 0, &cb,
                        "callbacks->magic=0x12345678 is not DINF_PIPE_CALLBACKS_MAGIC=0x50495045 "
                        "(initialise with DINF_PIPE_CALLBACKS_INIT)");

    /* sizes: the schedule's own rules */
    expect_create_error((dinf_pipe_kind)9, 2, 4, 0, 0, &good,
                        "kind=9 is not a dinf_pipe_kind (0..3)");
    expect_create_error(DINF_PIPE_DUALPIPE, 3, 12, 0, 0, &good,
                        "dualpipe: num_ranks=3 must be even (rank r and num_ranks-1-r hold the "
                        "same two stages)");
    expect_create_error(DINF_PIPE_DUALPIPEV, 3, 5, 0, 0, &good,
                        "dualpipev: num_chunks=5 must be >= 2 * num_ranks = 6");
    expect_create_error(DINF_PIPE_ZB1P, 4, 3, 0, 0, &good,
                        "zb1p: num_chunks=3 must be >= num_ranks=4");
    expect_create_error(DINF_PIPE_1F1B, 0, 4, 0, 0, &good, "num_ranks=0 must be in [1, 1048576]");
    expect_create_error(DINF_PIPE_1F1B, 4, 4, 4, 0, &good, "rank=4 is not in [0, num_ranks=4)");
    expect_create_error(DINF_PIPE_1F1B, 4, 4, -1, 0, &good, "rank=-1 is not in [0, num_ranks=4)");

    /* batch size */
    expect_create_error(DINF_PIPE_1F1B, 2, 4, 0, -1, &good, "batch_size=-1 is negative");
    expect_create_error(DINF_PIPE_DUALPIPE, 2, 8, 0, 3, &good,
                        "batch_size=3 is smaller than the 4 micro-batches it is split into "
                        "(dualpipe, num_chunks=8): every micro-batch needs a row");
    expect_create_error(DINF_PIPE_DUALPIPEV, 2, 5, 1, 4, &good,
                        "batch_size=4 is smaller than the 5 micro-batches it is split into "
                        "(dualpipev, num_chunks=5): every micro-batch needs a row");
    expect_create_ok(DINF_PIPE_DUALPIPE, 2, 8, 0, 4, &good); /* one row per micro-batch */
    expect_create_ok(DINF_PIPE_DUALPIPEV, 2, 5, 1, 0, &good); /* the engine splits */

    /* required callbacks */
    cb = good;
    cb.forward = NULL;
    expect_create_error(DINF_PIPE_1F1B, 2, 4, 0, 0, &cb, "callbacks->forward is NULL (required)");
    cb = good;
    cb.backward = NULL;
    expect_create_error(DINF_PIPE_1F1B, 2, 4, 0, 0, &cb, "callbacks->backward is NULL (required)");
    cb = good;
    cb.weight_grad = NULL;
    for (int kind = 0; kind < DINF_PIPE_KIND_COUNT; kind++) {
        if (kind == DINF_PIPE_1F1B) {
            expect_create_ok(DINF_PIPE_1F1B, 2, 4, 1, 0, &cb); /* 1F1B never defers */
            continue;
        }
        snprintf(msg, sizeof msg,
                 "callbacks->weight_grad is NULL, but %s defers weight gradients (required for "
                 "dualpipe, dualpipev and zb1p)",
                 kind_name[kind]);
        expect_create_error((dinf_pipe_kind)kind, 2, 4, 0, 0, &cb, msg);
    }
    const char *comm[] = {"post_send", "post_recv", "commit"};
    for (int i = 0; i < 3; i++) {
        cb = good;
        if (i == 0)
            cb.post_send = NULL;
        else if (i == 1)
            cb.post_recv = NULL;
        else
            cb.commit = NULL;
        snprintf(msg, sizeof msg, "callbacks->%s is NULL (required when num_ranks=2 > 1)",
                 comm[i]);
        expect_create_error(DINF_PIPE_DUALPIPEV, 2, 4, 0, 0, &cb, msg);
    }
    /* one rank never communicates: no post_send, post_recv or commit needed */
    cb = good;
    cb.post_send = NULL;
    cb.post_recv = NULL;
    cb.commit = NULL;
    expect_create_ok(DINF_PIPE_DUALPIPEV, 1, 3, 0, 7, &cb);
    expect_create_ok(DINF_PIPE_1F1B, 1, 3, 0, 0, &cb);
    expect_create_ok(DINF_PIPE_ZB1P, 1, 2, 0, 2, &cb);
}

Test(pipe_exec, step_and_destroy_accept_what_they_document) {
    cr_assert_eq(dinf_pipe_executor_step(NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_pipe_executor_step: executor is NULL");
    dinf_pipe_executor_destroy(NULL);
}

/* A 1F1B engine whose backward fails on call fail_at, silently or with a
 * text of its own, after some earlier call on the thread left a text. */
typedef struct quiet_engine {
    int calls, fail_at, set_text;
} quiet_engine;

static dinf_status quiet_forward(void *user, const dinf_pipe_task *t) {
    (void)user, (void)t;
    size_t bytes;
    dinf_dtype_size((dinf_dtype)99, &bytes); /* an unrelated failure inside a callback */
    return DINF_STATUS_OK;
}

static dinf_status quiet_backward(void *user, const dinf_pipe_task *t) {
    (void)t;
    quiet_engine *e = user;
    if (e->calls++ != e->fail_at)
        return DINF_STATUS_OK;
    if (e->set_text)
        dinf_set_last_error("engine: stage 0 ran out of activations");
    return DINF_STATUS_CUDA_ERROR;
}

Test(pipe_exec, a_failing_callback_is_quoted_with_its_own_text_or_none_never_an_older_one) {
    for (int set_text = 0; set_text < 2; set_text++) {
        quiet_engine e = {0, 1, set_text};
        dinf_pipe_callbacks cb = DINF_PIPE_CALLBACKS_INIT;
        cb.user = &e;
        cb.forward = quiet_forward;
        cb.backward = quiet_backward;
        dinf_pipe_executor *ex = NULL;
        cr_assert_eq(dinf_pipe_executor_create(DINF_PIPE_1F1B, 1, 3, 0, 0, &cb, &ex),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_eq(dinf_pipe_executor_step(ex), DINF_STATUS_CUDA_ERROR);
        cr_assert_str_eq(dinf_last_error(),
                         set_text ? "dinf_pipe_executor_step: rank 0 op 7 (B0.1): backward failed: "
                                    "engine: stage 0 ran out of activations"
                                  : "dinf_pipe_executor_step: rank 0 op 7 (B0.1): backward failed: "
                                    "(the callback set no message)");
        /* a step that succeeds leaves the caller's text as it was */
        e.calls = 0, e.fail_at = -1;
        dinf_set_last_error("the caller's own text");
        cr_assert_eq(dinf_pipe_executor_step(ex), DINF_STATUS_OK);
        cr_assert_str_eq(dinf_last_error(), "the caller's own text");
        dinf_pipe_executor_destroy(ex);
    }
}

/* --------------------------------------------------------------- split --- */

Test(pipe_exec, split_follows_tensor_split) {
    int64_t off[8];
    cr_assert_eq(dinf_pipe_split(10, 4, off), DINF_STATUS_OK);
    const int64_t want[] = {0, 3, 6, 8, 10};
    for (int k = 0; k <= 4; k++)
        cr_assert_eq(off[k], want[k], "10 rows into 4: offsets[%d] = %lld", k, (long long)off[k]);
    cr_assert_eq(dinf_pipe_split(12, 4, off), DINF_STATUS_OK);
    for (int k = 0; k <= 4; k++)
        cr_assert_eq(off[k], 3 * k);
    cr_assert_eq(dinf_pipe_split(2, 4, off), DINF_STATUS_OK); /* empty pieces, as tensor_split */
    const int64_t want2[] = {0, 1, 2, 2, 2};
    for (int k = 0; k <= 4; k++)
        cr_assert_eq(off[k], want2[k]);
    cr_assert_eq(dinf_pipe_split(0, 1, off), DINF_STATUS_OK);
    cr_assert(off[0] == 0 && off[1] == 0);
    cr_assert_eq(dinf_pipe_split(7, 7, off), DINF_STATUS_OK);
    for (int k = 0; k <= 7; k++)
        cr_assert_eq(off[k], k);
    /* no overflow on large batches */
    int64_t big[4];
    cr_assert_eq(dinf_pipe_split(INT64_MAX, 3, big), DINF_STATUS_OK);
    cr_assert_eq(big[3], INT64_MAX);
    cr_assert_eq(big[1] - big[0], INT64_MAX / 3 + 1);
    /* every split: sizes differ by at most one, larger first, sum = batch */
    for (int64_t batch = 0; batch <= 40; batch++)
        for (int32_t chunks = 1; chunks <= 7; chunks++) {
            cr_assert_eq(dinf_pipe_split(batch, chunks, off), DINF_STATUS_OK);
            cr_assert_eq(off[0], 0);
            cr_assert_eq(off[chunks], batch);
            for (int k = 0; k < chunks; k++) {
                const int64_t size = off[k + 1] - off[k];
                cr_assert_eq(size, batch / chunks + (k < batch % chunks), "batch %lld chunks %d",
                             (long long)batch, chunks);
            }
        }
}

Test(pipe_exec, split_rejects_bad_input) {
    int64_t off[4];
    cr_assert_eq(dinf_pipe_split(10, 4, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_pipe_split: offsets is NULL");
    cr_assert_eq(dinf_pipe_split(10, 0, off), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_pipe_split: num_chunks=0 must be >= 1");
    cr_assert_eq(dinf_pipe_split(10, -3, off), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_pipe_split: num_chunks=-3 must be >= 1");
    cr_assert_eq(dinf_pipe_split(-1, 4, off), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_pipe_split: batch_size=-1 is negative");
}
