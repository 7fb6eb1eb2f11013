/* Toy model, sequential reference, per-rank engine and mailbox: see exec_toy.h. */
#define _POSIX_C_SOURCE 200809L

#include "exec_toy.h"

#include "core/internal.h" /* dinf__fail: engine errors read like library errors */

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const exec_callback_names[EXEC_CB_COUNT] = {
    "forward", "backward", "weight_grad", "forward_backward", "post_send", "post_recv", "commit"};

/* ------------------------------------------------------------ the model --- */

/* y = tanh(x W1^T) W2^T; z keeps tanh(x W1^T). x [rows][h], w1 [4h][h], w2 [h][4h]. */
static void stage_forward(int h, const double *w1, const double *w2, int64_t rows,
                          const double *x, double *z, double *y) {
    const int f = 4 * h;
    for (int64_t r = 0; r < rows; r++) {
        for (int j = 0; j < f; j++) {
            double a = 0;
            for (int k = 0; k < h; k++)
                a += x[r * h + k] * w1[j * h + k];
            z[r * f + j] = tanh(a);
        }
        for (int i = 0; i < h; i++) {
            double acc = 0;
            for (int j = 0; j < f; j++)
                acc += z[r * f + j] * w2[i * f + j];
            y[r * h + i] = acc;
        }
    }
}

/* Input part of the backward: da = (dy W2) * (1 - z^2); dx = da W1 (skipped if NULL). */
static void stage_backward_input(int h, const double *w1, const double *w2, int64_t rows,
                                 const double *z, const double *dy, double *da, double *dx) {
    const int f = 4 * h;
    for (int64_t r = 0; r < rows; r++) {
        for (int j = 0; j < f; j++) {
            double dz = 0;
            for (int i = 0; i < h; i++)
                dz += dy[r * h + i] * w2[i * f + j];
            const double t = z[r * f + j];
            da[r * f + j] = dz * (1.0 - t * t);
        }
        if (dx)
            for (int k = 0; k < h; k++) {
                double acc = 0;
                for (int j = 0; j < f; j++)
                    acc += da[r * f + j] * w1[j * h + k];
                dx[r * h + k] = acc;
            }
    }
}

/* Weight part: gw2 += dy^T z, gw1 += da^T x (each micro-batch's sum first, then added). */
static void stage_backward_weight(int h, int64_t rows, const double *x, const double *z,
                                  const double *dy, const double *da, double *gw1, double *gw2) {
    const int f = 4 * h;
    for (int i = 0; i < h; i++)
        for (int j = 0; j < f; j++) {
            double acc = 0;
            for (int64_t r = 0; r < rows; r++)
                acc += dy[r * h + i] * z[r * f + j];
            gw2[i * f + j] += acc;
        }
    for (int j = 0; j < f; j++)
        for (int k = 0; k < h; k++) {
            double acc = 0;
            for (int64_t r = 0; r < rows; r++)
                acc += da[r * f + j] * x[r * h + k];
            gw1[j * h + k] += acc;
        }
}

/* Mean squared error over rows * h elements, and its gradient (dy may be NULL). */
static double mse(int h, int64_t rows, const double *y, const double *label, double *dy) {
    const int64_t n = rows * h;
    double sum = 0;
    for (int64_t e = 0; e < n; e++) {
        const double d = y[e] - label[e];
        sum += d * d;
        if (dy)
            dy[e] = 2.0 * d / (double)n;
    }
    return sum / (double)n;
}

/* -------------------------------------------------- data and reference --- */

static double uniform(uint64_t *state) { /* [-1, 1) */
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*state >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static void *zalloc(size_t count, size_t elem) {
    void *ptr = calloc(count ? count : 1, elem);
    if (!ptr) {
        fprintf(stderr, "exec_toy: out of memory\n");
        abort();
    }
    return ptr;
}

exec_problem *exec_problem_create(const exec_config *cfg) {
    exec_problem *p = zalloc(1, sizeof *p);
    p->cfg = *cfg;
    const int R = cfg->num_ranks, h = cfg->hidden, f = 4 * h;
    p->num_stages = cfg->kind == DINF_PIPE_DUALPIPEV ? 2 * R : R;
    p->num_batches = cfg->kind == DINF_PIPE_DUALPIPE ? 2 : 1;
    p->mb_per_dir = cfg->kind == DINF_PIPE_DUALPIPE ? cfg->num_chunks / 2 : cfg->num_chunks;
    const int S = p->num_stages, M = p->mb_per_dir;
    const int64_t rows = cfg->batch_size;
    p->w1 = zalloc((size_t)S * f * h, sizeof(double));
    p->w2 = zalloc((size_t)S * h * f, sizeof(double));
    p->x = zalloc((size_t)(p->num_batches * rows * h), sizeof(double));
    p->labels = zalloc((size_t)(p->num_batches * rows * h), sizeof(double));
    p->offsets = zalloc((size_t)M + 1, sizeof(int64_t));
    p->ref_loss = zalloc((size_t)p->num_batches * M, sizeof(double));
    p->ref_gw1 = zalloc((size_t)S * f * h, sizeof(double));
    p->ref_gw2 = zalloc((size_t)S * h * f, sizeof(double));

    uint64_t state = 0x9e3779b97f4a7c15ull ^ cfg->seed;
    for (size_t i = 0; i < (size_t)S * f * h; i++)
        p->w1[i] = uniform(&state) / sqrt((double)h);
    for (size_t i = 0; i < (size_t)S * h * f; i++)
        p->w2[i] = uniform(&state) / sqrt((double)f);
    for (int64_t i = 0; i < p->num_batches * rows * h; i++) {
        p->x[i] = uniform(&state);
        p->labels[i] = 0.5 * uniform(&state);
    }
    for (int k = 0; k <= M; k++) /* tensor_split, written out independently of the library */
        p->offsets[k] = k * (rows / M) + (k < rows % M ? k : rows % M);

    /* The sequential reference: every micro-batch of every batch through
     * stages 0 .. S-1, its loss back-propagated at once. */
    const int64_t max_rows = rows / M + 1;
    double *xs = zalloc((size_t)(S * max_rows * h), sizeof(double));
    double *zs = zalloc((size_t)(S * max_rows * f), sizeof(double));
    double *y = zalloc((size_t)(max_rows * h), sizeof(double));
    double *dy = zalloc((size_t)(max_rows * h), sizeof(double));
    double *dx = zalloc((size_t)(max_rows * h), sizeof(double));
    double *da = zalloc((size_t)(max_rows * f), sizeof(double));
    for (int b = 0; b < p->num_batches; b++)
        for (int k = 0; k < M; k++) {
            const int64_t n = p->offsets[k + 1] - p->offsets[k];
            memcpy(xs, p->x + (b * rows + p->offsets[k]) * h, (size_t)(n * h) * sizeof(double));
            for (int s = 0; s < S; s++) {
                double *out = s + 1 < S ? xs + (s + 1) * max_rows * h : y;
                stage_forward(h, p->w1 + (size_t)s * f * h, p->w2 + (size_t)s * h * f, n,
                              xs + s * max_rows * h, zs + s * max_rows * f, out);
            }
            p->ref_loss[b * M + k] =
                mse(h, n, y, p->labels + (b * rows + p->offsets[k]) * h, dy);
            for (int s = S - 1; s >= 0; s--) {
                stage_backward_input(h, p->w1 + (size_t)s * f * h, p->w2 + (size_t)s * h * f, n,
                                     zs + s * max_rows * f, dy, da, s > 0 ? dx : NULL);
                stage_backward_weight(h, n, xs + s * max_rows * h, zs + s * max_rows * f, dy, da,
                                      p->ref_gw1 + (size_t)s * f * h,
                                      p->ref_gw2 + (size_t)s * h * f);
                memcpy(dy, dx, (size_t)(n * h) * sizeof(double));
            }
        }
    free(xs);
    free(zs);
    free(y);
    free(dy);
    free(dx);
    free(da);
    return p;
}

void exec_problem_destroy(exec_problem *p) {
    if (!p)
        return;
    free(p->w1);
    free(p->w2);
    free(p->x);
    free(p->labels);
    free(p->offsets);
    free(p->ref_loss);
    free(p->ref_gw1);
    free(p->ref_gw2);
    free(p);
}

/* ------------------------------------------------------------ the engine --- */

static int batch_of(const exec_problem *p, int dir) {
    return p->cfg.kind == DINF_PIPE_DUALPIPE ? dir : 0;
}

/* Engine-side error: a dinf-style message and DINF_STATUS_INTERNAL. */
static dinf_status engine_error(const exec_engine *e, const char *fmt, ...) DINF_PRINTF(2, 3);
static dinf_status engine_error(const exec_engine *e, const char *fmt, ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return dinf__fail(DINF_STATUS_INTERNAL, "exec_toy", "rank %d: %s", e->rank, text);
}

/* Counts the call; returns the injected failure when this is the chosen one. */
static dinf_status enter(exec_engine *e, int callback) {
    if (e->failed)
        e->calls_after_failure++;
    int n = e->calls[callback]++;
    if (callback == e->fail_callback && n == e->fail_at) {
        e->failed = 1;
        /* as an engine sets its own reason: the executor quotes it */
        char text[128];
        snprintf(text, sizeof text, "exec_toy: injected %s failure (call %d)",
                 exec_callback_names[callback], n);
        dinf_set_last_error(text);
        return e->fail_status;
    }
    return DINF_STATUS_OK;
}

/* The task must name this rank, a slot it holds, the stage in that slot and
 * the micro-batch's rows. */
static dinf_status check_task(const exec_engine *e, const dinf_pipe_task *t, const char *what) {
    const exec_problem *p = e->p;
    if (t->rank != e->rank)
        return engine_error(e, "%s task names rank %d", what, t->rank);
    if (t->dir < 0 || t->dir >= e->num_slots || t->mb < 0 || t->mb >= p->mb_per_dir)
        return engine_error(e, "%s task has dir %d mb %d", what, t->dir, t->mb);
    if (t->module != t->dir)
        return engine_error(e, "%s task %d.%d runs module %d", what, t->dir, t->mb, t->module);
    if (t->stage != e->stage[t->module])
        return engine_error(e, "%s task %d.%d names stage %d, slot %d holds stage %d", what,
                            t->dir, t->mb, t->stage, t->module, e->stage[t->module]);
    const int64_t off = p->offsets[t->mb], n = p->offsets[t->mb + 1] - off;
    if (t->row_offset != off || t->row_count != n)
        return engine_error(e, "%s task %d.%d has rows %lld+%lld, expected %lld+%lld", what,
                            t->dir, t->mb, (long long)t->row_offset, (long long)t->row_count,
                            (long long)off, (long long)n);
    return DINF_STATUS_OK;
}

static dinf_status do_forward(exec_engine *e, const dinf_pipe_task *t) {
    dinf_status st = check_task(e, t, "forward");
    if (st != DINF_STATUS_OK)
        return st;
    const exec_problem *p = e->p;
    const int h = p->cfg.hidden;
    exec_mb_state *s = &e->mb[t->dir][t->mb];
    if (s->forwarded)
        return engine_error(e, "F%d.%d runs twice", t->dir, t->mb);
    const int b = batch_of(p, t->dir);
    if (t->first_stage) {
        memcpy(s->x, p->x + (b * p->cfg.batch_size + t->row_offset) * h,
               (size_t)(s->rows * h) * sizeof(double));
    } else if (t->local_input) {
        const exec_mb_state *other = &e->mb[1 - t->dir][t->mb];
        if (e->num_slots != 2 || !other->forwarded)
            return engine_error(e, "F%d.%d: local input, but F%d.%d has not run", t->dir, t->mb,
                                1 - t->dir, t->mb);
        memcpy(s->x, other->y, (size_t)(s->rows * h) * sizeof(double));
    } else if (!s->have_x) {
        return engine_error(e, "F%d.%d: its activation was not received", t->dir, t->mb);
    }
    const int m = t->module;
    stage_forward(h, e->w1[m], e->w2[m], s->rows, s->x, s->z, s->y);
    if (t->last_stage) {
        s->loss = mse(h, s->rows, s->y, p->labels + (b * p->cfg.batch_size + t->row_offset) * h,
                      NULL);
        s->has_loss = 1;
    }
    s->forwarded = 1;
    return DINF_STATUS_OK;
}

static dinf_status do_backward(exec_engine *e, const dinf_pipe_task *t) {
    dinf_status st = check_task(e, t, "backward");
    if (st != DINF_STATUS_OK)
        return st;
    const exec_problem *p = e->p;
    const int h = p->cfg.hidden;
    exec_mb_state *s = &e->mb[t->dir][t->mb];
    if (!s->forwarded || s->backwarded)
        return engine_error(e, "B%d.%d: forwarded=%d backwarded=%d", t->dir, t->mb, s->forwarded,
                            s->backwarded);
    if (t->last_stage) {
        if (!s->has_loss)
            return engine_error(e, "B%d.%d starts from a loss F%d.%d did not compute", t->dir,
                                t->mb, t->dir, t->mb);
        const int b = batch_of(p, t->dir);
        mse(h, s->rows, s->y, p->labels + (b * p->cfg.batch_size + t->row_offset) * h, s->dy);
    } else if (t->local_input) {
        const exec_mb_state *other = &e->mb[1 - t->dir][t->mb];
        if (e->num_slots != 2 || !other->backwarded)
            return engine_error(e, "B%d.%d: local output-gradient, but B%d.%d has not run", t->dir,
                                t->mb, 1 - t->dir, t->mb);
        memcpy(s->dy, other->dx, (size_t)(s->rows * h) * sizeof(double));
    } else if (!s->have_dy) {
        return engine_error(e, "B%d.%d: its gradient was not received", t->dir, t->mb);
    }
    const int m = t->module;
    stage_backward_input(h, e->w1[m], e->w2[m], s->rows, s->z, s->dy, s->da,
                         t->first_stage ? NULL : s->dx);
    if (t->defer_weight_grad)
        s->deferred = 1;
    else
        stage_backward_weight(h, s->rows, s->x, s->z, s->dy, s->da, e->gw1[m], e->gw2[m]);
    s->backwarded = 1;
    return DINF_STATUS_OK;
}

static dinf_status cb_forward(void *user, const dinf_pipe_task *t) {
    exec_engine *e = user;
    dinf_status st = enter(e, EXEC_CB_FORWARD);
    return st != DINF_STATUS_OK ? st : do_forward(e, t);
}

static dinf_status cb_backward(void *user, const dinf_pipe_task *t) {
    exec_engine *e = user;
    dinf_status st = enter(e, EXEC_CB_BACKWARD);
    return st != DINF_STATUS_OK ? st : do_backward(e, t);
}

static dinf_status cb_weight_grad(void *user, const dinf_pipe_task *t) {
    exec_engine *e = user;
    dinf_status st = enter(e, EXEC_CB_WEIGHT_GRAD);
    if (st == DINF_STATUS_OK)
        st = check_task(e, t, "weight_grad");
    if (st != DINF_STATUS_OK)
        return st;
    exec_mb_state *s = &e->mb[t->dir][t->mb];
    if (!s->deferred || s->weighted)
        return engine_error(e, "W of %d.%d: deferred=%d weighted=%d", t->dir, t->mb, s->deferred,
                            s->weighted);
    const int m = t->module;
    stage_backward_weight(e->p->cfg.hidden, s->rows, s->x, s->z, s->dy, s->da, e->gw1[m],
                          e->gw2[m]);
    s->weighted = 1;
    return DINF_STATUS_OK;
}

/* The overlap hook of the upstream example: the forward, then the backward. */
static dinf_status cb_forward_backward(void *user, const dinf_pipe_task *f,
                                       const dinf_pipe_task *b) {
    exec_engine *e = user;
    dinf_status st = enter(e, EXEC_CB_FORWARD_BACKWARD);
    if (st == DINF_STATUS_OK && b->defer_weight_grad)
        st = engine_error(e, "F&B asks to defer B%d.%d's weight gradient", b->dir, b->mb);
    if (st == DINF_STATUS_OK)
        st = do_forward(e, f);
    return st != DINF_STATUS_OK ? st : do_backward(e, b);
}

/* ----------------------------------------------------------- the mailbox --- */

static dinf_status cb_post_send(void *user, int32_t rank, dinf_pipe_msg kind, int32_t dir,
                                int32_t mb, int32_t peer) {
    exec_engine *e = user;
    dinf_status st = enter(e, EXEC_CB_POST_SEND);
    if (st != DINF_STATUS_OK)
        return st;
    const int h = e->p->cfg.hidden;
    if (rank != e->rank || peer < 0 || peer >= e->world->num_ranks || peer == rank ||
        dir < 0 || dir >= e->num_slots || mb < 0 || mb >= e->p->mb_per_dir)
        return engine_error(e, "post_send(rank %d, kind %d, %d.%d, peer %d) is out of range", rank,
                            (int)kind, dir, mb, peer);
    const exec_mb_state *s = &e->mb[dir][mb];
    const double *data;
    if (kind == DINF_PIPE_MSG_ACT && s->forwarded)
        data = s->y;
    else if (kind == DINF_PIPE_MSG_GRAD && s->backwarded)
        data = s->dx;
    else
        return engine_error(e, "post_send of %s %d.%d before it was computed",
                            kind == DINF_PIPE_MSG_ACT ? "activation" : "gradient", dir, mb);
    exec_msg *m = malloc(sizeof *m + (size_t)(s->rows * h) * sizeof(double));
    if (!m)
        return engine_error(e, "out of memory");
    m->next = NULL;
    m->src = rank;
    m->dst = peer;
    m->kind = kind;
    m->dir = dir;
    m->mb = mb;
    m->rows = s->rows;
    memcpy(m->data, data, (size_t)(s->rows * h) * sizeof(double));
    exec_msg **tail = &e->pending_sends;
    while (*tail)
        tail = &(*tail)->next;
    *tail = m;
    return DINF_STATUS_OK;
}

static dinf_status cb_post_recv(void *user, int32_t rank, dinf_pipe_msg kind, int32_t dir,
                                int32_t mb, int32_t peer) {
    exec_engine *e = user;
    dinf_status st = enter(e, EXEC_CB_POST_RECV);
    if (st != DINF_STATUS_OK)
        return st;
    if (rank != e->rank || peer < 0 || peer >= e->world->num_ranks || peer == rank ||
        dir < 0 || dir >= e->num_slots || mb < 0 || mb >= e->p->mb_per_dir)
        return engine_error(e, "post_recv(rank %d, kind %d, %d.%d, peer %d) is out of range", rank,
                            (int)kind, dir, mb, peer);
    if (e->num_posted_recvs == EXEC_MAX_POSTS)
        return engine_error(e, "more than %d receives posted before a commit", EXEC_MAX_POSTS);
    e->posted_recvs[e->num_posted_recvs].kind = kind;
    e->posted_recvs[e->num_posted_recvs].dir = dir;
    e->posted_recvs[e->num_posted_recvs].mb = mb;
    e->posted_recvs[e->num_posted_recvs].peer = peer;
    e->num_posted_recvs++;
    return DINF_STATUS_OK;
}

/* The message of posted receive i in rank's inbox, as a link to unlink. */
static exec_msg **find_message(exec_world *w, const exec_engine *e, int i) {
    for (exec_msg **link = &w->inbox[e->rank]; *link; link = &(*link)->next) {
        const exec_msg *m = *link;
        if (m->src == e->posted_recvs[i].peer && m->kind == e->posted_recvs[i].kind &&
            m->dir == e->posted_recvs[i].dir && m->mb == e->posted_recvs[i].mb)
            return link;
    }
    return NULL;
}

/* Deliver the posted sends, then wait until every posted receive's message
 * is in the inbox and take them. */
static dinf_status cb_commit(void *user, int32_t rank) {
    exec_engine *e = user;
    dinf_status st = enter(e, EXEC_CB_COMMIT);
    if (st != DINF_STATUS_OK)
        return st;
    if (rank != e->rank)
        return engine_error(e, "commit names rank %d", rank);
    exec_world *w = e->world;
    const int h = e->p->cfg.hidden;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    const double whole = floor(w->timeout_s);
    deadline.tv_sec += (time_t)whole;
    deadline.tv_nsec += (long)((w->timeout_s - whole) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&w->lock);
    while (e->pending_sends) {
        exec_msg *m = e->pending_sends;
        e->pending_sends = m->next;
        m->next = w->inbox[m->dst];
        w->inbox[m->dst] = m;
    }
    pthread_cond_broadcast(&w->arrived);
    for (;;) {
        int missing = -1;
        for (int i = 0; i < e->num_posted_recvs && missing < 0; i++)
            if (!find_message(w, e, i))
                missing = i;
        if (missing < 0)
            break;
        const int timed_out = w->aborted ? 0 : pthread_cond_timedwait(&w->arrived, &w->lock,
                                                                      &deadline) == ETIMEDOUT;
        if (w->aborted || timed_out) {
            const int aborted = w->aborted;
            pthread_mutex_unlock(&w->lock);
            e->num_posted_recvs = 0;
            return dinf__fail(aborted ? DINF_STATUS_INTERNAL : DINF_STATUS_TIMEOUT, "exec_mailbox",
                              "rank %d: %s while waiting for %s %d.%d from rank %d", e->rank,
                              aborted ? "another rank failed" : "timed out",
                              e->posted_recvs[missing].kind == DINF_PIPE_MSG_ACT ? "activation"
                                                                                 : "gradient",
                              e->posted_recvs[missing].dir, e->posted_recvs[missing].mb,
                              e->posted_recvs[missing].peer);
        }
    }
    for (int i = 0; i < e->num_posted_recvs; i++) {
        exec_msg **link = find_message(w, e, i);
        exec_msg *m = *link;
        *link = m->next;
        exec_mb_state *s = &e->mb[m->dir][m->mb];
        const int act = m->kind == DINF_PIPE_MSG_ACT;
        if (m->rows != s->rows || (act ? s->have_x : s->have_dy)) {
            st = engine_error(e, "received %s %d.%d of %lld rows twice or with %lld expected",
                              act ? "activation" : "gradient", m->dir, m->mb, (long long)m->rows,
                              (long long)s->rows);
        } else {
            memcpy(act ? s->x : s->dy, m->data, (size_t)(m->rows * h) * sizeof(double));
            *(act ? &s->have_x : &s->have_dy) = 1;
        }
        free(m);
    }
    pthread_mutex_unlock(&w->lock);
    e->num_posted_recvs = 0;
    return st;
}

dinf_pipe_callbacks exec_engine_callbacks(exec_engine *e, int with_forward_backward) {
    dinf_pipe_callbacks cb = DINF_PIPE_CALLBACKS_INIT;
    cb.user = e;
    cb.forward = cb_forward;
    cb.backward = cb_backward;
    cb.weight_grad = cb_weight_grad;
    cb.forward_backward = with_forward_backward ? cb_forward_backward : NULL;
    cb.post_send = cb_post_send;
    cb.post_recv = cb_post_recv;
    cb.commit = cb_commit;
    return cb;
}

/* -------------------------------------------------------------- the run --- */

static exec_engine *engine_create(const exec_problem *p, exec_world *w, int rank) {
    const exec_config *c = &p->cfg;
    const int R = c->num_ranks, h = c->hidden, f = 4 * h, M = p->mb_per_dir;
    exec_engine *e = zalloc(1, sizeof *e);
    e->p = p;
    e->world = w;
    e->rank = rank;
    e->fail_callback = -1;
    e->num_slots = (c->kind == DINF_PIPE_DUALPIPE || c->kind == DINF_PIPE_DUALPIPEV) ? 2 : 1;
    e->stage[0] = rank;
    e->stage[1] = c->kind == DINF_PIPE_DUALPIPE ? R - 1 - rank : 2 * R - 1 - rank;
    for (int m = 0; m < e->num_slots; m++) {
        e->w1[m] = zalloc((size_t)f * h, sizeof(double));
        e->w2[m] = zalloc((size_t)h * f, sizeof(double));
        memcpy(e->w1[m], p->w1 + (size_t)e->stage[m] * f * h, (size_t)f * h * sizeof(double));
        memcpy(e->w2[m], p->w2 + (size_t)e->stage[m] * h * f, (size_t)h * f * sizeof(double));
        e->gw1[m] = zalloc((size_t)f * h, sizeof(double));
        e->gw2[m] = zalloc((size_t)h * f, sizeof(double));
        e->mb[m] = zalloc((size_t)M, sizeof(exec_mb_state));
        for (int k = 0; k < M; k++) {
            exec_mb_state *s = &e->mb[m][k];
            s->rows = p->offsets[k + 1] - p->offsets[k];
            s->x = zalloc((size_t)(s->rows * h), sizeof(double));
            s->z = zalloc((size_t)(s->rows * f), sizeof(double));
            s->y = zalloc((size_t)(s->rows * h), sizeof(double));
            s->dy = zalloc((size_t)(s->rows * h), sizeof(double));
            s->da = zalloc((size_t)(s->rows * f), sizeof(double));
            s->dx = zalloc((size_t)(s->rows * h), sizeof(double));
        }
    }
    return e;
}

static void free_messages(exec_msg *m) {
    while (m) {
        exec_msg *next = m->next;
        free(m);
        m = next;
    }
}

static void engine_reset(exec_engine *e) {
    const int h = e->p->cfg.hidden, f = 4 * h;
    for (int m = 0; m < e->num_slots; m++) {
        memset(e->gw1[m], 0, (size_t)f * h * sizeof(double));
        memset(e->gw2[m], 0, (size_t)h * f * sizeof(double));
        for (int k = 0; k < e->p->mb_per_dir; k++) {
            exec_mb_state *s = &e->mb[m][k];
            s->have_x = s->have_dy = s->forwarded = s->backwarded = 0;
            s->deferred = s->weighted = s->has_loss = 0;
            s->loss = 0;
        }
    }
    free_messages(e->pending_sends);
    e->pending_sends = NULL;
    e->num_posted_recvs = 0;
    memset(e->calls, 0, sizeof e->calls);
    e->fail_callback = -1;
    e->failed = 0;
    e->calls_after_failure = 0;
}

static void engine_destroy(exec_engine *e) {
    if (!e)
        return;
    for (int m = 0; m < e->num_slots; m++) {
        free(e->w1[m]);
        free(e->w2[m]);
        free(e->gw1[m]);
        free(e->gw2[m]);
        for (int k = 0; k < e->p->mb_per_dir; k++) {
            exec_mb_state *s = &e->mb[m][k];
            free(s->x);
            free(s->z);
            free(s->y);
            free(s->dy);
            free(s->da);
            free(s->dx);
        }
        free(e->mb[m]);
    }
    free_messages(e->pending_sends);
    free(e);
}

exec_run *exec_run_create(exec_problem *p, char *why, size_t why_bytes) {
    const exec_config *c = &p->cfg;
    if (c->num_ranks > EXEC_MAX_RANKS) {
        snprintf(why, why_bytes, "num_ranks=%d > EXEC_MAX_RANKS", c->num_ranks);
        return NULL;
    }
    exec_run *run = zalloc(1, sizeof *run);
    run->p = p;
    pthread_mutex_init(&run->world.lock, NULL);
    pthread_cond_init(&run->world.arrived, NULL);
    run->world.num_ranks = c->num_ranks;
    run->world.timeout_s = c->timeout_s > 0 ? c->timeout_s : 5.0;
    for (int r = 0; r < c->num_ranks; r++) {
        run->engines[r] = engine_create(p, &run->world, r);
        dinf_pipe_callbacks cb = exec_engine_callbacks(run->engines[r], c->use_forward_backward);
        dinf_status st = dinf_pipe_executor_create(c->kind, c->num_ranks, c->num_chunks, r,
                                                   c->batch_size, &cb, &run->executors[r]);
        if (st != DINF_STATUS_OK) {
            snprintf(why, why_bytes, "rank %d: %s", r, dinf_last_error());
            exec_run_destroy(run);
            return NULL;
        }
    }
    return run;
}

void exec_run_reset(exec_run *run) {
    for (int r = 0; r < run->p->cfg.num_ranks; r++) {
        engine_reset(run->engines[r]);
        free_messages(run->world.inbox[r]);
        run->world.inbox[r] = NULL;
        run->status[r] = DINF_STATUS_OK;
        run->error[r][0] = '\0';
    }
    run->world.aborted = 0;
}

typedef struct rank_thread_arg {
    exec_run *run;
    int rank;
} rank_thread_arg;

static void *rank_thread(void *arg) {
    const rank_thread_arg *a = arg;
    exec_run *run = a->run;
    dinf_status st = dinf_pipe_executor_step(run->executors[a->rank]);
    run->status[a->rank] = st;
    if (st != DINF_STATUS_OK) {
        snprintf(run->error[a->rank], sizeof run->error[a->rank], "%s", dinf_last_error());
        pthread_mutex_lock(&run->world.lock);
        run->world.aborted = 1;
        pthread_cond_broadcast(&run->world.arrived);
        pthread_mutex_unlock(&run->world.lock);
    }
    return NULL;
}

int exec_run_step(exec_run *run) {
    const int R = run->p->cfg.num_ranks;
    pthread_t threads[EXEC_MAX_RANKS];
    rank_thread_arg args[EXEC_MAX_RANKS];
    int started[EXEC_MAX_RANKS] = {0};
    for (int r = 0; r < R; r++) {
        args[r].run = run;
        args[r].rank = r;
        if (R == 1) { /* one rank never waits: run it here */
            rank_thread(&args[r]);
            continue;
        }
        if (pthread_create(&threads[r], NULL, rank_thread, &args[r]) == 0) {
            started[r] = 1;
        } else {
            run->status[r] = DINF_STATUS_INTERNAL;
            snprintf(run->error[r], sizeof run->error[r], "pthread_create failed");
            pthread_mutex_lock(&run->world.lock);
            run->world.aborted = 1;
            pthread_cond_broadcast(&run->world.arrived);
            pthread_mutex_unlock(&run->world.lock);
        }
    }
    int failed = 0;
    for (int r = 0; r < R; r++) {
        if (started[r])
            pthread_join(threads[r], NULL);
        failed += run->status[r] != DINF_STATUS_OK;
    }
    return failed;
}

/* Where the loss of (batch b, mb) is computed: (rank, dir). */
static void loss_place(const exec_problem *p, int b, int *rank, int *dir) {
    const int R = p->cfg.num_ranks;
    switch (p->cfg.kind) {
    case DINF_PIPE_DUALPIPE: /* dir b ends on the far rank */
        *rank = b == 0 ? R - 1 : 0;
        *dir = b;
        break;
    case DINF_PIPE_DUALPIPEV: /* the end of phase 1 */
        *rank = 0;
        *dir = 1;
        break;
    default:
        *rank = R - 1;
        *dir = 0;
        break;
    }
}

int exec_run_check(const exec_run *run, double rel_tol, char *why, size_t why_bytes) {
    const exec_problem *p = run->p;
    const exec_config *c = &p->cfg;
    const int R = c->num_ranks, h = c->hidden, f = 4 * h, M = p->mb_per_dir, S = p->num_stages;
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(why, why_bytes, __VA_ARGS__);                                                     \
        return -1;                                                                                 \
    } while (0)
    for (int r = 0; r < R; r++)
        if (run->status[r] != DINF_STATUS_OK)
            FAIL("rank %d: step returned %s: %s", r, dinf_status_string(run->status[r]),
                 run->error[r]);
    for (int r = 0; r < R; r++) {
        const exec_engine *e = run->engines[r];
        if (run->world.inbox[r])
            FAIL("rank %d: message %d.%d from rank %d was never received", r,
                 run->world.inbox[r]->dir, run->world.inbox[r]->mb, run->world.inbox[r]->src);
        if (e->pending_sends || e->num_posted_recvs)
            FAIL("rank %d: posts left after the last commit", r);
        for (int m = 0; m < e->num_slots; m++)
            for (int k = 0; k < M; k++) {
                const exec_mb_state *s = &e->mb[m][k];
                if (!s->forwarded || !s->backwarded || s->deferred != s->weighted)
                    FAIL("rank %d %d.%d: forwarded=%d backwarded=%d deferred=%d weighted=%d", r,
                         m, k, s->forwarded, s->backwarded, s->deferred, s->weighted);
            }
    }
    /* Losses: bitwise, computed exactly once, where the data flow ends. */
    for (int b = 0; b < p->num_batches; b++)
        for (int k = 0; k < M; k++) {
            int want_rank, dir;
            loss_place(p, b, &want_rank, &dir);
            int found = 0;
            for (int r = 0; r < R; r++) {
                const exec_mb_state *s = &run->engines[r]->mb[dir][k];
                if (!s->has_loss)
                    continue;
                found++;
                if (r != want_rank)
                    FAIL("loss of batch %d mb %d computed on rank %d, expected rank %d", b, k, r,
                         want_rank);
                const double want = p->ref_loss[b * M + k];
                if (memcmp(&s->loss, &want, sizeof want) != 0)
                    FAIL("loss of batch %d mb %d: %.17g, reference %.17g (diff %.3g)", b, k,
                         s->loss, want, s->loss - want);
            }
            if (found != 1)
                FAIL("loss of batch %d mb %d computed %d times", b, k, found);
        }
    /* Gradients: every copy of a stage summed, then near the reference. */
    double *sum1 = zalloc((size_t)S * f * h, sizeof(double));
    double *sum2 = zalloc((size_t)S * h * f, sizeof(double));
    for (int r = 0; r < R; r++) {
        const exec_engine *e = run->engines[r];
        for (int m = 0; m < e->num_slots; m++)
            for (int i = 0; i < f * h; i++) {
                sum1[(size_t)e->stage[m] * f * h + i] += e->gw1[m][i];
                sum2[(size_t)e->stage[m] * h * f + i] += e->gw2[m][i];
            }
    }
    int bad = 0;
    for (int s = 0; s < S && !bad; s++)
        for (int which = 0; which < 2 && !bad; which++) {
            const double *got = (which ? sum2 : sum1) + (size_t)s * f * h;
            const double *want = (which ? p->ref_gw2 : p->ref_gw1) + (size_t)s * f * h;
            double scale = 0;
            for (int i = 0; i < f * h; i++)
                scale = fmax(scale, fabs(want[i]));
            if (!(scale > 0)) {
                snprintf(why, why_bytes, "stage %d W%d: the reference gradient is zero", s,
                         which + 1);
                bad = 1;
            }
            for (int i = 0; i < f * h && !bad; i++)
                if (!(fabs(got[i] - want[i]) <= rel_tol * scale)) {
                    snprintf(why, why_bytes,
                             "stage %d W%d element %d: %.17g, reference %.17g (|diff| %.3g > "
                             "%.0e * %.3g)",
                             s, which + 1, i, got[i], want[i], fabs(got[i] - want[i]), rel_tol,
                             scale);
                    bad = 1;
                }
        }
    free(sum1);
    free(sum2);
    return bad ? -1 : 0;
#undef FAIL
}

void exec_run_destroy(exec_run *run) {
    if (!run)
        return;
    for (int r = 0; r < EXEC_MAX_RANKS; r++) {
        dinf_pipe_executor_destroy(run->executors[r]);
        if (run->engines[r])
            engine_destroy(run->engines[r]);
        free_messages(run->world.inbox[r]);
    }
    pthread_mutex_destroy(&run->world.lock);
    pthread_cond_destroy(&run->world.arrived);
    free(run);
}
