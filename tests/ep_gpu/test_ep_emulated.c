/*
 * The GPU transports' data path, emulated on the CPU and checked against
 * the threads oracle, bitwise, through the public API (the scenario of
 * ep_scenario.h: layout, dispatch bf16 / FP8 / e4m3 / cached, combine with
 * weights and biases, low-latency dispatch bf16 / FP8 and combine).
 *
 * The emulated transports run what the GPU transports run, minus the GPU:
 * the protocol's steps become dinf__ep_step descriptors (ep_wire.c), rows
 * travel as wire rows written and read by the SAME host-device functions the
 * kernels call (lib/ep/ep_rows_hd.h, here with 3 "lanes" run one after
 * another), through
 *   - peer mode: every rank's symmetric buffer laid out by
 *     dinf__ep_peer_layout, the sender storing into the destination's slot,
 *     the sent words checked by the receiver (the step kernel's phases,
 *     separated by barriers instead of flags);
 *   - NCCL mode: rows packed by destination into a send stage, segments
 *     copied as ncclSend/ncclRecv would, unpacked / reduced from the
 *     receive stage in receive order.
 * The planners are the CPU ones (the GPU planners are checked on the GPU).
 */
#define _GNU_SOURCE
#include "ep/ep_rows_hd.h"

#include "ep_scenario.h"

#include <pthread.h>

#define LANES 3

typedef struct emu_pub {
    dinf__ep_step step;
    const int64_t *send_offsets, *recv_offsets;
    const void *gather;
    int ok;
} emu_pub;

typedef struct emu_hub {
    pthread_barrier_t barrier;
    pthread_mutex_t mutex;
    int32_t R, refs, nccl;
    dinf__ep_peer_layout layout;
    char *buffers;          /* peer mode: R symmetric buffers */
    char *send_stage;       /* NCCL mode: [R][stage] */
    char *recv_stage;       /* NCCL mode: [R][stage] */
    int64_t stage_bytes;    /* NCCL mode, per rank */
    emu_pub pub[MAXR];
} emu_hub;

typedef struct emu_transport {
    dinf__ep_transport base;
    emu_hub *hub;
} emu_transport;

static emu_hub *hub_of(dinf__ep_transport *t) { return ((emu_transport *)t)->hub; }

static void wait_all(emu_hub *h) { pthread_barrier_wait(&h->barrier); }

static char *buffer_of(emu_hub *h, int32_t r) {
    return h->buffers + (size_t)r * (size_t)h->layout.total_bytes;
}

static dinf_status emu_allgather(dinf__ep_transport *t, const char *func, const void *in,
                                 void *out, size_t bytes, const dinf__place *place) {
    (void)func;
    (void)place;
    emu_hub *h = hub_of(t);
    h->pub[t->rank].gather = in;
    wait_all(h);
    for (int32_t r = 0; r < t->num_ranks; r++)
        memcpy((char *)out + (size_t)r * bytes, h->pub[r].gather, bytes);
    wait_all(h);
    return DINF_STATUS_OK;
}

static dinf_status emu_barrier(dinf__ep_transport *t, const char *func, const dinf__place *place) {
    (void)func;
    (void)place;
    wait_all(hub_of(t));
    return DINF_STATUS_OK;
}

/* Every rank ok? (after a phase; a barrier separates the read from the next write) */
static int all_ok(emu_hub *h, int32_t R) {
    int ok = 1;
    for (int32_t r = 0; r < R; r++)
        ok &= h->pub[r].ok;
    return ok;
}

/* One step (s filled from the protocol's descriptor) in peer or NCCL mode. */
static dinf_status emu_step(dinf__ep_transport *t, const char *func, dinf__ep_step *s,
                            const int64_t *send_offsets, const int64_t *recv_offsets) {
    emu_hub *h = hub_of(t);
    const int32_t R = t->num_ranks, me = t->rank;
    s->rank = me;
    s->num_ranks = R;
    s->send_offsets = send_offsets;
    s->recv_offsets = recv_offsets;
    emu_pub *mine = &h->pub[me];
    mine->step = *s;
    mine->send_offsets = send_offsets;
    mine->recv_offsets = recv_offsets;
    mine->ok = 1;
    wait_all(h);
    const int64_t total_send = send_offsets[R];
    /* send phase */
    for (int64_t j = 0; j < total_send; j++) {
        const int32_t d = dinf__ep_source_of(send_offsets, R, j);
        const int64_t i = j - send_offsets[d];
        const int64_t row = s->send_rows ? s->send_rows[j] : j;
        char *wire;
        if (h->nccl) {
            if ((j + 1) * s->row_bytes > h->stage_bytes) {
                mine->ok = 0;
                break;
            }
            wire = h->send_stage + (size_t)me * (size_t)h->stage_bytes + j * s->row_bytes;
        } else {
            if (!dinf__ep_peer_fits(&h->layout, send_offsets[d + 1] - send_offsets[d],
                                    s->row_bytes)) {
                mine->ok = 0;
                break;
            }
            wire = buffer_of(h, d) + h->layout.stage_off +
                   dinf__ep_peer_slot_row(&h->layout, me, i, s->row_bytes);
        }
        for (int32_t lane = LANES - 1; lane >= 0; lane--)
            dinf__ep_put_wire_row(s, row, wire, lane, LANES);
    }
    if (!h->nccl)
        for (int32_t d = 0; d < R; d++)
            ((int64_t *)(buffer_of(h, d) + h->layout.sent_off))[me] =
                dinf__ep_sent_word(send_offsets[d + 1] - send_offsets[d], s->row_bytes);
    wait_all(h);
    int ok = all_ok(h, R);
    /* transfer (NCCL mode) and checks */
    char *stage = NULL;
    int64_t slot_bytes = 0;
    if (ok && h->nccl) {
        stage = h->recv_stage + (size_t)me * (size_t)h->stage_bytes;
        for (int32_t p = 0; p < R; p++) {
            const emu_pub *peer = &h->pub[p];
            const int64_t n = peer->send_offsets[me + 1] - peer->send_offsets[me];
            if (n != recv_offsets[p + 1] - recv_offsets[p] ||
                peer->step.row_bytes != s->row_bytes ||
                (recv_offsets[p] + n) * s->row_bytes > h->stage_bytes) {
                mine->ok = 0;
                continue;
            }
            memcpy(stage + recv_offsets[p] * s->row_bytes,
                   h->send_stage + (size_t)p * (size_t)h->stage_bytes +
                       peer->send_offsets[me] * s->row_bytes,
                   (size_t)(n * s->row_bytes));
        }
    } else if (ok) {
        stage = buffer_of(h, me) + h->layout.stage_off;
        slot_bytes = h->layout.slot_bytes;
        const int64_t *sent = (const int64_t *)(buffer_of(h, me) + h->layout.sent_off);
        for (int32_t p = 0; p < R; p++)
            if (sent[p] != dinf__ep_sent_word(recv_offsets[p + 1] - recv_offsets[p],
                                               s->row_bytes))
                mine->ok = 0;
    }
    /* receive phase */
    if (ok && mine->ok) {
        if (s->kind == DINF__EP_STEP_A2A) {
            for (int64_t j = 0; j < recv_offsets[R]; j++) {
                const int32_t p = dinf__ep_source_of(recv_offsets, R, j);
                const int64_t i = j - recv_offsets[p];
                const int64_t q = s->recv_rows ? s->recv_rows[j] : j;
                const char *wire = stage + dinf__ep_stage_row(slot_bytes, recv_offsets, p, i,
                                                              s->row_bytes);
                for (int32_t lane = 0; lane < LANES; lane++)
                    dinf__ep_get_wire_row(s, wire, q, lane, LANES);
            }
        } else {
            int bad = 0;
            for (int64_t row = 0; row < s->num_out_rows; row++)
                for (int32_t lane = 0; lane < LANES; lane++)
                    bad |= dinf__ep_reduce_row(s, row, stage, slot_bytes, lane, LANES);
            if (bad)
                mine->ok = 0;
        }
    }
    wait_all(h);
    ok = all_ok(h, R);
    wait_all(h); /* nobody republishes before everyone has read the flags */
    if (!ok)
        return dinf__fail(DINF_STATUS_INTERNAL, func, "emulated %s step failed on some rank",
                          h->nccl ? "NCCL" : "peer");
    return DINF_STATUS_OK;
}

static dinf_status emu_alltoallv(dinf__ep_transport *t, const char *func, const dinf__ep_a2a *a2a,
                                 const dinf__place *place) {
    (void)place;
    dinf__ep_step s;
    dinf_status st = dinf__ep_step_from_a2a(func, a2a, &s);
    if (st != DINF_STATUS_OK)
        return st;
    return emu_step(t, func, &s, a2a->send_offsets, a2a->recv_offsets);
}

static dinf_status emu_reduce(dinf__ep_transport *t, const char *func, const dinf__ep_reduce *red,
                              const dinf__place *place) {
    (void)place;
    dinf__ep_step s;
    dinf_status st = dinf__ep_step_from_reduce(func, red, &s);
    if (st != DINF_STATUS_OK)
        return st;
    return emu_step(t, func, &s, red->send_offsets, red->recv_offsets);
}

static void *emu_alloc(dinf__ep_transport *t, const char *func, size_t bytes) {
    (void)t;
    (void)func;
    void *p = malloc(bytes ? bytes : 1);
    memset(p, 0xc3, bytes ? bytes : 1);
    return p;
}

static void emu_free(dinf__ep_transport *t, void *p) {
    (void)t;
    free(p);
}

static dinf_status emu_copy(dinf__ep_transport *t, const char *func, void *dst, const void *src,
                            size_t bytes, int kind, const dinf__place *place) {
    (void)t;
    (void)func;
    (void)kind;
    (void)place;
    memmove(dst, src, bytes);
    return DINF_STATUS_OK;
}

static void emu_destroy(dinf__ep_transport *t) {
    emu_hub *h = hub_of(t);
    pthread_mutex_lock(&h->mutex);
    const int last = --h->refs == 0;
    pthread_mutex_unlock(&h->mutex);
    free(t);
    if (!last)
        return;
    pthread_barrier_destroy(&h->barrier);
    pthread_mutex_destroy(&h->mutex);
    free(h->buffers);
    free(h->send_stage);
    free(h->recv_stage);
    free(h);
}

static const dinf__ep_transport_ops emu_ops = {
    .name = "emulated",
    .allgather = emu_allgather,
    .alltoallv = emu_alltoallv,
    .reduce_a2a = emu_reduce,
    .barrier = emu_barrier,
    .alloc = emu_alloc,
    .free = emu_free,
    .copy = emu_copy,
    .plan_dispatch = dinf__ep_cpu_plan_dispatch,
    .localize_topk = dinf__ep_cpu_localize_topk,
    .plan_low_latency = dinf__ep_cpu_plan_low_latency,
    .ll_recv_rows = dinf__ep_cpu_ll_recv_rows,
    .destroy = emu_destroy,
};

/* Stage sizes as the GPU transports choose them (ep_cuda.c). */
static void emu_create(int32_t R, const dinf_ep_config *config, int nccl, dinf_ep_group **groups) {
    dinf_ep_config cfg;
    cr_assert_eq(dinf__ep_config_check("emu", config, &cfg), DINF_STATUS_OK);
    size_t normal = 0, ll = 0;
    cr_assert_eq(dinf_ep_symmetric_buffer_bytes(&cfg, R, &normal, &ll), DINF_STATUS_OK);
    const int64_t stage = (int64_t)(normal > ll ? normal : ll);
    emu_hub *h = calloc(1, sizeof *h);
    pthread_barrier_init(&h->barrier, NULL, (unsigned)R);
    pthread_mutex_init(&h->mutex, NULL);
    h->R = R;
    h->refs = R;
    h->nccl = nccl;
    if (nccl) {
        h->stage_bytes = stage;
        h->send_stage = malloc((size_t)R * (size_t)stage);
        h->recv_stage = malloc((size_t)R * (size_t)stage);
        memset(h->send_stage, 0x11, (size_t)R * (size_t)stage);
        memset(h->recv_stage, 0x22, (size_t)R * (size_t)stage);
    } else {
        cr_assert_eq(dinf__ep_peer_layout_init(&h->layout, R, 0, stage), 0);
        h->buffers = calloc((size_t)R, (size_t)h->layout.total_bytes);
        cr_assert_not_null(h->buffers);
        /* a poisoned stage: every byte the receiver reads was written */
        for (int32_t r = 0; r < R; r++)
            memset(buffer_of(h, r) + h->layout.stage_off, 0x33, (size_t)h->layout.stage_bytes);
    }
    for (int32_t r = 0; r < R; r++) {
        emu_transport *e = calloc(1, sizeof *e);
        e->base = (dinf__ep_transport){&emu_ops, r, R, DINF_EP_MEMORY_HOST, -1, cfg.timeout_ms};
        e->hub = h;
        cr_assert_eq(dinf__ep_group_wrap("emu", &e->base, &cfg, &groups[r]), DINF_STATUS_OK);
    }
}

static void emulated_case(int32_t R, int32_t H, int32_t K, int32_t E, int64_t T, int nccl,
                          uint64_t seed) {
    scen sc = {R, H, K, E, T, {0}, seed};
    for (int32_t r = 0; r < R; r++)
        sc.N[r] = T - (int64_t)((r * 37 + 5) % (T / 2 + 1));
    if (R >= 4)
        sc.N[2] = 0;
    dinf_ep_config c = config_for(&sc);
    dinf_ep_group *groups[MAXR];
    emu_create(R, &c, nccl, groups);
    char label[96];
    snprintf(label, sizeof label, "emulated %s R=%d H=%d K=%d E=%d", nccl ? "NCCL" : "peer",
             (int)R, (int)H, (int)K, (int)E);
    check_against_oracle(label, &sc, groups, 0);
    sc.seed = seed + 7; /* the same groups again: stages and slots reused */
    check_against_oracle(label, &sc, groups, 0);
    for (int32_t r = 0; r < R; r++)
        dinf_ep_group_destroy(groups[r]);
}

/* The harness itself, on the CPU: two oracle runs agree bitwise (the
 * comparison covers every output the GPU runs are checked on). */
Test(ep_gpu_harness, the_oracle_is_deterministic_on_the_cpu, .timeout = 120.0) {
    const int32_t Rs[] = {1, 2, 4, 8};
    for (int i = 0; i < 4; i++) {
        const int32_t R = Rs[i];
        scen sc = {R, 256, 4, 8 * R, 32, {0}, 100 + (uint64_t)R};
        for (int32_t r = 0; r < R; r++)
            sc.N[r] = 32 - (r * 5) % 17;
        if (R >= 4)
            sc.N[2] = 0;
        inputs in[MAXR];
        outputs a[MAXR], b[MAXR];
        memset(a, 0, sizeof a);
        memset(b, 0, sizeof b);
        for (int32_t r = 0; r < R; r++)
            make_inputs(&sc, r, &in[r]);
        run_oracle(&sc, in, a);
        run_oracle(&sc, in, b);
        compare("oracle vs oracle", &sc, a, b);
        for (int32_t r = 0; r < R; r++) {
            free_outputs(&a[r]);
            free_outputs(&b[r]);
            free_inputs(&in[r]);
        }
    }
}

TestSuite(ep_emulated, .timeout = 120.0);

Test(ep_emulated, peer_store_one_rank) { emulated_case(1, 256, 4, 8, 24, 0, 1); }
Test(ep_emulated, peer_store_two_ranks) { emulated_case(2, 384, 4, 16, 32, 0, 2); }
Test(ep_emulated, peer_store_four_ranks) { emulated_case(4, 256, 6, 32, 40, 0, 3); }
Test(ep_emulated, peer_store_eight_ranks) { emulated_case(8, 512, 8, 64, 24, 0, 4); }
Test(ep_emulated, nccl_one_rank) { emulated_case(1, 256, 4, 8, 24, 1, 5); }
Test(ep_emulated, nccl_two_ranks) { emulated_case(2, 384, 4, 16, 32, 1, 6); }
Test(ep_emulated, nccl_four_ranks) { emulated_case(4, 256, 6, 32, 40, 1, 7); }
Test(ep_emulated, nccl_eight_ranks) { emulated_case(8, 512, 8, 64, 24, 1, 8); }
