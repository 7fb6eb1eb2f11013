/*
 * The in-process threads transport: num_ranks ranks as threads of one
 * process, on host memory. It is the CPU path of the EP module and the oracle
 * of the GPU transports.
 *
 * The ranks share a "hub": a mutex, a condition variable and one published
 * pointer per rank. Every collective step is
 *     publish my descriptor -> barrier -> PULL what I receive from each
 *     peer's published (caller-owned) buffers -> barrier(ok)
 * so a rank only ever writes its own outputs, and no peer buffer is read
 * after its owner has left the step (the second barrier). Nothing is staged:
 * rows go straight from the sender's caller buffer to the receiver's.
 *
 * Timeouts and failures: every wait for a peer to ENTER a step is bounded by
 * timeout_ms (pthread_cond_timedwait on CLOCK_MONOTONIC deadlines, so a
 * wall-clock change neither fires nor stretches a timeout); the wait
 * that ends a step is not, because by then every rank is inside the step
 * doing bounded work (see hub_barrier). A rank that times
 * out marks the hub broken with a message naming the ranks that did not
 * arrive; ranks whose calls differ (another public function at the same
 * step) break it at once. A broken hub fails every later step on every rank
 * with the recorded status and message.
 */
#define _GNU_SOURCE
#include "ep_hd.h"
#include "ep_transport.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct hub {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int32_t num_ranks;
    int32_t refs;   /* endpoints alive */
    int64_t timeout_ms;
    /* barrier state */
    uint64_t generation;
    int32_t arrived;
    int32_t all_ok;     /* AND of the ok flags of the current generation */
    int32_t result_ok;  /* AND of the last completed generation */
    uint8_t *present;   /* [R]: rank arrived in the current generation */
    const char *func;   /* public function of the first arrival of the generation */
    int32_t func_rank;
    /* broken state */
    int32_t broken;
    dinf_status broken_status;
    char broken_message[DINF_ERROR_MESSAGE_MAX];
    /* one published pointer per rank for the current step */
    const void **slots;
} hub;

typedef struct threads_transport {
    dinf__ep_transport base; /* first */
    hub *hub;
} threads_transport;

static hub *hub_of(dinf__ep_transport *t) { return ((threads_transport *)t)->hub; }

/* The recorded failure, as this rank's error. */
static dinf_status fail_broken(hub *h, const char *func) {
    return dinf__fail(h->broken_status, func, "the EP group is broken: %s", h->broken_message);
}

static void break_hub(hub *h, dinf_status status, const char *fmt, ...) DINF_PRINTF(3, 4);
static void break_hub(hub *h, dinf_status status, const char *fmt, ...) {
    if (h->broken)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->broken_message, sizeof h->broken_message, fmt, ap);
    va_end(ap);
    h->broken = 1;
    h->broken_status = status;
    pthread_cond_broadcast(&h->cond);
}

/*
 * Wait for every rank. *all_ok gets the AND of the ranks' ok flags. Fails
 * (and breaks the hub) on timeout or when ranks are in different public
 * functions; fails at once on a broken hub.
 *
 * timed = 0 is for the barrier that ENDS a step: every rank has passed the
 * step's first barrier, so each is inside this file doing bounded work and
 * will arrive; waiting without a deadline there guarantees that no rank
 * returns (and lets its caller free its buffers) while a slow peer still
 * reads them.
 */
static dinf_status hub_barrier(dinf__ep_transport *t, const char *func, int ok, int *all_ok,
                               int timed) {
    hub *h = hub_of(t);
    const int32_t rank = t->rank;
    pthread_mutex_lock(&h->mutex);
    if (h->broken) {
        dinf_status st = fail_broken(h, func);
        pthread_mutex_unlock(&h->mutex);
        return st;
    }
    if (h->arrived == 0) {
        h->func = func;
        h->func_rank = rank;
    } else if (strcmp(h->func, func) != 0) {
        break_hub(h, DINF_STATUS_INVALID_ARGUMENT,
                  "mismatched collective calls: rank %d called %s while rank %d called %s",
                  (int)h->func_rank, h->func, (int)rank, func);
        dinf_status st = fail_broken(h, func);
        pthread_mutex_unlock(&h->mutex);
        return st;
    }
    const uint64_t my_generation = h->generation;
    h->present[rank] = 1;
    h->all_ok &= ok != 0;
    if (++h->arrived == h->num_ranks) {
        h->result_ok = h->all_ok;
        h->all_ok = 1;
        h->arrived = 0;
        memset(h->present, 0, (size_t)h->num_ranks);
        h->generation++;
        pthread_cond_broadcast(&h->cond);
    } else {
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline); /* the clock of h->cond */
        deadline.tv_sec += (time_t)(t->timeout_ms / 1000);
        deadline.tv_nsec += (long)(t->timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        while (h->generation == my_generation && !h->broken) {
            if (!timed) {
                pthread_cond_wait(&h->cond, &h->mutex);
                continue;
            }
            if (pthread_cond_timedwait(&h->cond, &h->mutex, &deadline) == ETIMEDOUT &&
                h->generation == my_generation && !h->broken) {
                char missing[256] = "";
                size_t used = 0;
                int listed = 0;
                for (int32_t r = 0; r < h->num_ranks && used + 16 < sizeof missing; r++)
                    if (!h->present[r])
                        used += (size_t)snprintf(missing + used, sizeof missing - used, "%s%d",
                                                 listed++ ? ", " : "", (int)r);
                break_hub(h, DINF_STATUS_TIMEOUT,
                          "%s on rank %d waited %lld ms for ranks [%s], which did not reach "
                          "the same step (a rank skipped or reordered a collective call, or "
                          "died)",
                          func, (int)rank, (long long)t->timeout_ms, missing);
            }
        }
        if (h->generation == my_generation) { /* broken while waiting */
            dinf_status st = fail_broken(h, func);
            pthread_mutex_unlock(&h->mutex);
            return st;
        }
    }
    *all_ok = h->result_ok;
    pthread_mutex_unlock(&h->mutex);
    return DINF_STATUS_OK;
}

/* Publish p, then wait until every rank has published. */
static dinf_status publish(dinf__ep_transport *t, const char *func, const void *p) {
    hub *h = hub_of(t);
    h->slots[t->rank] = p; /* read by peers only after the barrier (mutex = fence) */
    int all_ok;
    return hub_barrier(t, func, 1, &all_ok, 1);
}

/* Leave a step: wait until every rank has finished reading, then report a
 * failure of any rank to all of them. */
static dinf_status finish(dinf__ep_transport *t, const char *func, int ok, const char *what) {
    int all_ok;
    dinf_status st = hub_barrier(t, func, ok, &all_ok, 0);
    if (st != DINF_STATUS_OK)
        return st;
    if (!ok)
        return DINF_STATUS_INTERNAL; /* this rank's message is already recorded */
    if (!all_ok)
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "another rank found inconsistent %s (see its dinf_last_error())", what);
    return DINF_STATUS_OK;
}

static dinf_status threads_allgather(dinf__ep_transport *t, const char *func, const void *in,
                                     void *out, size_t bytes, const dinf__place *place) {
    (void)place;
    dinf_status st = publish(t, func, in);
    if (st != DINF_STATUS_OK)
        return st;
    hub *h = hub_of(t);
    for (int32_t r = 0; r < t->num_ranks; r++)
        memcpy((char *)out + (size_t)r * bytes, h->slots[r], bytes);
    return finish(t, func, 1, "all-gather");
}

/* ---------------------------------------------------------- alltoallv ---- */

typedef struct pull_ctx {
    const dinf__ep_a2a *mine;
    const dinf__ep_a2a *peer;
    int64_t send_begin; /* first send-order row of peer's segment for me */
    int64_t recv_begin; /* first receive-order row of mine from peer */
} pull_ctx;

static void pull_rows(void *arg, int64_t begin, int64_t end) {
    const pull_ctx *c = arg;
    for (int64_t j = begin; j < end; j++) {
        const int64_t s_order = c->send_begin + j, r_order = c->recv_begin + j;
        const int64_t s = c->peer->send_rows ? c->peer->send_rows[s_order] : s_order;
        const int64_t q = c->mine->recv_rows ? c->mine->recv_rows[r_order] : r_order;
        for (int32_t f = 0; f < c->mine->num_fields; f++) {
            const dinf__ep_field *mf = &c->mine->fields[f], *pf = &c->peer->fields[f];
            const char *src = (const char *)pf->send + s * pf->send_stride;
            if (mf->recv_elem_stride == mf->elem_bytes && mf->recv_rows_per_group == 0) {
                memcpy(dinf__ep_field_recv_at(mf, q, 0), src,
                       (size_t)mf->elem_bytes * (size_t)mf->elems);
            } else {
                for (int32_t e = 0; e < mf->elems; e++)
                    memcpy(dinf__ep_field_recv_at(mf, q, e), src + (int64_t)e * mf->elem_bytes,
                           (size_t)mf->elem_bytes);
            }
        }
        if (c->mine->recv_src_row)
            c->mine->recv_src_row[q] = (int32_t)s;
    }
}

static dinf_status threads_alltoallv(dinf__ep_transport *t, const char *func,
                                     const dinf__ep_a2a *a2a, const dinf__place *place) {
    dinf_status st = publish(t, func, a2a);
    if (st != DINF_STATUS_OK)
        return st;
    hub *h = hub_of(t);
    int ok = 1;
    for (int32_t p = 0; p < t->num_ranks && ok; p++) {
        const dinf__ep_a2a *peer = h->slots[p];
        const int64_t sent = peer->send_offsets[t->rank + 1] - peer->send_offsets[t->rank];
        const int64_t expected = a2a->recv_offsets[p + 1] - a2a->recv_offsets[p];
        if (sent != expected || peer->num_fields != a2a->num_fields) {
            dinf__fail(DINF_STATUS_INTERNAL, func,
                       "rank %d sends %lld rows (%d fields) to rank %d, which expects %lld "
                       "(%d fields)",
                       (int)p, (long long)sent, (int)peer->num_fields, (int)t->rank,
                       (long long)expected, (int)a2a->num_fields);
            ok = 0;
            break;
        }
        for (int32_t f = 0; f < a2a->num_fields; f++)
            if (peer->fields[f].elem_bytes != a2a->fields[f].elem_bytes ||
                peer->fields[f].elems != a2a->fields[f].elems) {
                dinf__fail(DINF_STATUS_INTERNAL, func,
                           "field %d: rank %d sends %d x %d bytes per row, rank %d expects "
                           "%d x %d",
                           (int)f, (int)p, (int)peer->fields[f].elems,
                           (int)peer->fields[f].elem_bytes, (int)t->rank,
                           (int)a2a->fields[f].elems, (int)a2a->fields[f].elem_bytes);
                ok = 0;
            }
        if (!ok)
            break;
        pull_ctx ctx = {a2a, peer, peer->send_offsets[t->rank], a2a->recv_offsets[p]};
        dinf__parallel_for(place->threads, sent, 256, pull_rows, &ctx);
    }
    return finish(t, func, ok, "all-to-all counts");
}

/* --------------------------------------------------------- reduce_a2a ---- */

typedef struct reduce_ctx {
    const dinf__ep_reduce *mine;
    const dinf__ep_reduce *const *peers; /* [R] published descriptors */
    int32_t rank;
    int32_t num_ranks;
    int32_t bad; /* a term out of range (set by any worker) */
} reduce_ctx;

static float load_elem(const void *row, int32_t elem, int64_t i) {
    return elem == DINF__EP_ELEM_BF16 ? dinf__f32_from_bf16(((const uint16_t *)row)[i])
                                      : ((const float *)row)[i];
}

/* One valid term of an output row: the peer's descriptor, the peer's local
 * row, and its weight. */
typedef struct term_ref {
    const dinf__ep_reduce *peer;
    int64_t row;
    float weight;
} term_ref;

#define REDUCE_CHUNK 256 /* elements accumulated at once (a float32 stack tile) */

/* acc[e] += w * v[e] over a tile, element-wise (vectorisable: every element
 * is rounded exactly as dinf__ep_acc_bf16 rounds it). Called with the
 * constant REDUCE_CHUNK for full tiles so the compiler sees the trip count. */
static inline void tile_acc_bf16(float *restrict acc, const uint16_t *restrict v, float w,
                                 int32_t len) {
    for (int32_t e = 0; e < len; e++)
        acc[e] = dinf__ep_acc_bf16(acc[e], v[e], w);
}
static inline void tile_acc_f32(float *restrict acc, const float *restrict v, float w,
                                int32_t len) {
    for (int32_t e = 0; e < len; e++)
        acc[e] = acc[e] + w * v[e];
}

static void reduce_rows(void *arg, int64_t begin, int64_t end) {
    reduce_ctx *c = arg;
    const dinf__ep_reduce *m = c->mine;
    /* num_terms <= max(num_ranks, num_topk) <= DINF_EP_MAX_RANKS: 24 KiB of stack */
    term_ref refs[DINF_EP_MAX_RANKS > DINF_EP_MAX_TOPK ? DINF_EP_MAX_RANKS : DINF_EP_MAX_TOPK];
    float acc[REDUCE_CHUNK];
    for (int64_t t = begin; t < end; t++) {
        /* resolve the row's terms once, checking each against its segment */
        int32_t n = 0;
        for (int32_t j = 0; j < m->num_terms; j++) {
            const int64_t term = m->terms[t * m->num_terms + j];
            if (term == -1)
                continue;
            const int32_t src = dinf__ep_unpack_hi(term);
            const int64_t pos = dinf__ep_unpack_lo(term);
            const dinf__ep_reduce *peer =
                src >= 0 && src < c->num_ranks ? c->peers[src] : NULL;
            if (!peer || pos >= peer->send_offsets[c->rank + 1] - peer->send_offsets[c->rank] ||
                pos >= m->recv_offsets[src + 1] - m->recv_offsets[src]) {
                __atomic_store_n(&c->bad, 1, __ATOMIC_RELAXED);
                continue;
            }
            const int64_t s_order = peer->send_offsets[c->rank] + pos;
            refs[n].peer = peer;
            refs[n].row = peer->send_rows ? peer->send_rows[s_order] : s_order;
            refs[n].weight = m->weights ? m->weights[t * m->num_terms + j] : 1.0f;
            n++;
        }
        for (int32_t f = 0; f < m->num_fields; f++) {
            const dinf__ep_reduce_field *mf = &m->fields[f];
            char *out = (char *)mf->out + t * mf->out_stride;
            const char *b0 = mf->bias0 ? (const char *)mf->bias0 + t * mf->out_stride : NULL;
            const char *b1 = mf->bias1 ? (const char *)mf->bias1 + t * mf->out_stride : NULL;
            for (int32_t e0 = 0; e0 < mf->elems; e0 += REDUCE_CHUNK) {
                const int32_t len = mf->elems - e0 < REDUCE_CHUNK ? mf->elems - e0 : REDUCE_CHUNK;
                /* upstream's order: the sum starts at float(bias0) + float(bias1)
                 * (a missing bias reads as +0), then the ranks' rows ascending */
                for (int32_t e = 0; e < len; e++)
                    acc[e] = (b0 ? load_elem(b0, mf->out_elem, e0 + e) : 0.0f) +
                             (b1 ? load_elem(b1, mf->out_elem, e0 + e) : 0.0f);
                for (int32_t j = 0; j < n; j++) {
                    const dinf__ep_reduce_field *pf = &refs[j].peer->fields[f];
                    const char *row = (const char *)pf->in + refs[j].row * pf->in_stride;
                    const float w = mf->apply_weights ? refs[j].weight : 1.0f;
                    if (pf->in_elem == DINF__EP_ELEM_BF16) {
                        const uint16_t *v = (const uint16_t *)row + e0;
                        if (len == REDUCE_CHUNK)
                            tile_acc_bf16(acc, v, w, REDUCE_CHUNK);
                        else
                            tile_acc_bf16(acc, v, w, len);
                    } else {
                        tile_acc_f32(acc, (const float *)row + e0, w, len);
                    }
                }
                for (int32_t e = 0; e < len; e++) {
                    if (mf->out_elem == DINF__EP_ELEM_BF16)
                        ((uint16_t *)out)[e0 + e] = dinf__bf16_from_f32(acc[e]);
                    else
                        ((float *)out)[e0 + e] = acc[e];
                }
            }
        }
    }
}

static dinf_status threads_reduce_a2a(dinf__ep_transport *t, const char *func,
                                      const dinf__ep_reduce *reduce, const dinf__place *place) {
    dinf_status st = publish(t, func, reduce);
    if (st != DINF_STATUS_OK)
        return st;
    hub *h = hub_of(t);
    int ok = 1;
    for (int32_t p = 0; p < t->num_ranks && ok; p++) {
        const dinf__ep_reduce *peer = h->slots[p];
        const int64_t sent = peer->send_offsets[t->rank + 1] - peer->send_offsets[t->rank];
        const int64_t expected = reduce->recv_offsets[p + 1] - reduce->recv_offsets[p];
        int fields_ok = peer->num_fields == reduce->num_fields;
        for (int32_t f = 0; f < reduce->num_fields && fields_ok; f++)
            fields_ok = peer->fields[f].elems == reduce->fields[f].elems;
        if (sent != expected || !fields_ok) {
            dinf__fail(DINF_STATUS_INTERNAL, func,
                       "rank %d returns %lld rows (%d fields) to rank %d, which expects %lld "
                       "(%d fields)",
                       (int)p, (long long)sent, (int)peer->num_fields, (int)t->rank,
                       (long long)expected, (int)reduce->num_fields);
            ok = 0;
        }
    }
    if (ok) {
        reduce_ctx ctx = {reduce, (const dinf__ep_reduce *const *)h->slots, t->rank,
                          t->num_ranks, 0};
        dinf__parallel_for(place->threads, reduce->num_out_rows, 16, reduce_rows, &ctx);
        if (ctx.bad) {
            dinf__fail(DINF_STATUS_INTERNAL, func,
                       "a combine term on rank %d names a row outside its source's segment",
                       (int)t->rank);
            ok = 0;
        }
    }
    return finish(t, func, ok, "combine counts");
}

static dinf_status threads_barrier(dinf__ep_transport *t, const char *func,
                                   const dinf__place *place) {
    (void)place;
    int all_ok;
    return hub_barrier(t, func, 1, &all_ok, 1);
}

/* ------------------------------------------------------------ memory ---- */

static void *threads_alloc(dinf__ep_transport *t, const char *func, size_t bytes) {
    (void)t;
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate %zu bytes of host memory",
                   bytes);
    return p;
}

static void threads_free(dinf__ep_transport *t, void *ptr) {
    (void)t;
    free(ptr);
}

static dinf_status threads_copy(dinf__ep_transport *t, const char *func, void *dst,
                                const void *src, size_t bytes, int kind,
                                const dinf__place *place) {
    (void)t;
    (void)func;
    (void)kind;
    (void)place;
    if (bytes)
        memmove(dst, src, bytes);
    return DINF_STATUS_OK;
}

/* Drop n references; the last one frees the hub. */
static void hub_drop(hub *h, int32_t n) {
    pthread_mutex_lock(&h->mutex);
    h->refs -= n;
    const int last = h->refs == 0;
    pthread_mutex_unlock(&h->mutex);
    if (!last)
        return;
    pthread_mutex_destroy(&h->mutex);
    pthread_cond_destroy(&h->cond);
    free(h->present);
    free(h->slots);
    free(h);
}

static void threads_destroy(dinf__ep_transport *t) {
    hub_drop(hub_of(t), 1);
    free(t);
}

static const dinf__ep_transport_ops threads_ops = {
    .name = "threads",
    .allgather = threads_allgather,
    .alltoallv = threads_alltoallv,
    .reduce_a2a = threads_reduce_a2a,
    .barrier = threads_barrier,
    .alloc = threads_alloc,
    .free = threads_free,
    .copy = threads_copy,
    .plan_dispatch = dinf__ep_cpu_plan_dispatch,
    .localize_topk = dinf__ep_cpu_localize_topk,
    .plan_low_latency = dinf__ep_cpu_plan_low_latency,
    .ll_recv_rows = dinf__ep_cpu_ll_recv_rows,
    .destroy = threads_destroy,
};

DINF_API dinf_status dinf_ep_group_create_threads(int32_t num_ranks, const dinf_ep_config *config,
                                                  dinf_ep_group **groups) {
    if (!groups)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "groups is NULL");
    if (num_ranks < 1 || num_ranks > DINF_EP_MAX_RANKS)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_ranks=%d must be in [1, %d]",
                         (int)num_ranks, DINF_EP_MAX_RANKS);
    for (int32_t r = 0; r < num_ranks; r++)
        groups[r] = NULL;
    dinf_ep_config cfg;
    dinf_status st = dinf__ep_config_check(__func__, config, &cfg);
    if (st != DINF_STATUS_OK)
        return st;
    if (cfg.max_tokens_per_rank > INT32_MAX / num_ranks)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "num_ranks=%d * max_tokens_per_rank=%lld exceeds 2^31-1 received rows",
                         (int)num_ranks, (long long)cfg.max_tokens_per_rank);
    hub *h = calloc(1, sizeof *h);
    if (!h)
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "could not allocate the group state");
    h->present = calloc((size_t)num_ranks, 1);
    h->slots = calloc((size_t)num_ranks, sizeof *h->slots);
    if (!h->present || !h->slots) {
        free(h->present);
        free(h->slots);
        free(h);
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "could not allocate the group state");
    }
    pthread_condattr_t cond_attr;
    if (pthread_condattr_init(&cond_attr) != 0 ||
        pthread_condattr_setclock(&cond_attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&h->cond, &cond_attr) != 0) {
        free(h->present);
        free(h->slots);
        free(h);
        return DINF_FAIL(DINF_STATUS_INTERNAL,
                         "could not create a condition variable on CLOCK_MONOTONIC");
    }
    pthread_condattr_destroy(&cond_attr);
    pthread_mutex_init(&h->mutex, NULL);
    h->num_ranks = num_ranks;
    h->timeout_ms = cfg.timeout_ms;
    h->all_ok = 1;
    h->refs = num_ranks;
    for (int32_t r = 0; r < num_ranks; r++) {
        threads_transport *tt = calloc(1, sizeof *tt);
        if (!tt) {
            st = DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "could not allocate rank %d", (int)r);
        } else {
            tt->base = (dinf__ep_transport){&threads_ops, r, num_ranks, DINF_EP_MEMORY_HOST, -1,
                                            cfg.timeout_ms};
            tt->hub = h;
            st = dinf__ep_group_wrap(__func__, &tt->base, &cfg, &groups[r]);
        }
        if (st != DINF_STATUS_OK) {
            /* drop the references of the ranks that will never exist (rank
             * r's own went with its transport, if it was made), then the
             * endpoints made so far; the last drop frees the hub */
            const int32_t never = num_ranks - r - 1 + (tt ? 0 : 1);
            if (never > 0)
                hub_drop(h, never);
            for (int32_t q = 0; q < r; q++) {
                dinf_ep_group_destroy(groups[q]);
                groups[q] = NULL;
            }
            return st;
        }
    }
    return DINF_STATUS_OK;
}
