/*
 * EP features beyond the main matrix: combine biases, the summation order
 * of combine (biases first, then ranks ascending: bits checked), the
 * bits do not depend on CPU threads per rank, ranks with zero tokens, a
 * bf16 hidden size that is not a multiple of 128, pre-quantized e4m3 input,
 * many successive calls on one group (handles reused, sequence kept), and a
 * cached dispatch carrying new data along the old routes.
 */
#include "ep_test_util.h"

#include <criterion/criterion.h>
#include <math.h>

#define R 4
#define T 24
#define K 3
#define E 8
#define L (E / R)
#define HMAX 1024

typedef struct fx {
    dinf_ep_group *groups[R];
    int64_t n[R];
    int32_t hidden;
    uint16_t *x[R], *x2[R], *bias0[R], *bias1[R];
    uint8_t *xq[R];
    float *xs[R];
    int64_t topk[R][T * K];
    float w[R][T * K];
    dinf_ep_handle *handle[R];
    int64_t num_recv[R];
    uint16_t *recv[R], *recv2[R], *combined[R], *combined_b[R];
    uint8_t *recv8[R];
    float *recv_s[R];
    int32_t *src[R];
    int iterations;
    int threads_per_rank;
    ep_result res[R];
} fx;

static fx *make_fx(int32_t hidden, int threads, const int64_t *n) {
    fx *f = calloc(1, sizeof *f);
    f->hidden = hidden;
    f->threads_per_rank = threads;
    dinf_ep_config cfg = DINF_EP_CONFIG_INIT;
    cfg.max_hidden = HMAX;
    cfg.max_tokens_per_rank = T;
    cfg.max_topk = K;
    cfg.max_num_experts = E;
    cfg.num_threads = threads;
    cr_assert_eq(dinf_ep_group_create_threads(R, &cfg, f->groups), DINF_STATUS_OK);
    uint64_t seed = 0xfeedu;
    const size_t hs = (size_t)T * HMAX;
    for (int32_t r = 0; r < R; r++) {
        f->n[r] = n[r];
        f->x[r] = malloc(hs * 2);
        f->x2[r] = malloc(hs * 2);
        f->bias0[r] = malloc(hs * 2);
        f->bias1[r] = malloc(hs * 2);
        f->xq[r] = malloc(hs);
        f->xs[r] = malloc(hs / 128 * 4 + 4);
        ep_fill_bf16(f->x[r], hs, &seed);
        ep_fill_bf16(f->x2[r], hs, &seed);
        ep_fill_bf16(f->bias0[r], hs, &seed);
        ep_fill_bf16(f->bias1[r], hs, &seed);
        ep_fill_topk(f->topk[r], T, K, E, &seed);
        ep_fill_weights(f->w[r], T * K, &seed);
        const size_t rs = (size_t)R * T * HMAX;
        f->recv[r] = malloc(rs * 2);
        f->recv2[r] = malloc(rs * 2);
        f->recv8[r] = malloc(rs);
        f->recv_s[r] = malloc(rs / 128 * 4);
        f->src[r] = malloc((size_t)R * T * 4);
        f->combined[r] = malloc(hs * 2);
        f->combined_b[r] = malloc(hs * 2);
        cr_assert_eq(dinf_ep_handle_create(f->groups[r], &f->handle[r]), DINF_STATUS_OK);
    }
    return f;
}

static void free_fx(fx *f) {
    for (int32_t r = 0; r < R; r++) {
        void *p[] = {f->x[r],      f->x2[r],    f->bias0[r], f->bias1[r],    f->xq[r],
                     f->xs[r],     f->recv[r],  f->recv2[r], f->recv8[r],    f->recv_s[r],
                     f->src[r],    f->combined[r], f->combined_b[r]};
        for (size_t i = 0; i < sizeof p / sizeof *p; i++)
            free(p[i]);
        dinf_ep_handle_destroy(f->handle[r]);
        dinf_ep_group_destroy(f->groups[r]);
    }
    free(f);
}

/* notify, dispatch, combine without and with biases, cached dispatch of x2. */
static void rank_round(int32_t r, void *ctx) {
    fx *f = ctx;
    dinf_ep_group *g = f->groups[r];
    const int32_t H = f->hidden;
    dinf_status st = DINF_STATUS_OK;
    for (int it = 0; it < f->iterations && st == DINF_STATUS_OK; it++) {
        st = dinf_ep_notify_dispatch(g, f->topk[r], f->n[r], K, E, NULL, NULL, NULL, 1,
                                     f->handle[r], &f->num_recv[r], NULL, NULL);
        if (st != DINF_STATUS_OK)
            break;
        const int64_t nr = f->num_recv[r];
        st = dinf_ep_dispatch(g, f->handle[r], f->x[r], DINF_DTYPE_BFLOAT16, NULL, H, NULL, NULL,
                              DINF_DTYPE_BFLOAT16, f->recv[r], NULL, NULL, NULL, f->src[r], nr,
                              NULL);
        if (st == DINF_STATUS_OK)
            st = dinf_ep_combine(g, f->handle[r], f->recv[r], H, NULL, NULL, NULL,
                                 f->combined[r], NULL, NULL);
        if (st == DINF_STATUS_OK)
            st = dinf_ep_combine(g, f->handle[r], f->recv[r], H, NULL, f->bias0[r], f->bias1[r],
                                 f->combined_b[r], NULL, NULL);
        if (st == DINF_STATUS_OK)
            st = dinf_ep_dispatch(g, f->handle[r], f->x2[r], DINF_DTYPE_BFLOAT16, NULL, H, NULL,
                                  NULL, DINF_DTYPE_BFLOAT16, f->recv2[r], NULL, NULL, NULL, NULL,
                                  nr, NULL);
        if (st == DINF_STATUS_OK && H % 128 == 0) { /* pre-quantized e4m3 input */
            st = dinf_fp8_quantize(f->x[r], DINF_DTYPE_BFLOAT16, f->n[r], H, H, 1, f->xq[r], H,
                                   f->xs[r], NULL);
            if (st == DINF_STATUS_OK)
                st = dinf_ep_dispatch(g, f->handle[r], f->xq[r], DINF_DTYPE_FP8_E4M3, f->xs[r], H,
                                      NULL, NULL, DINF_DTYPE_FP8_E4M3, f->recv8[r], f->recv_s[r],
                                      NULL, NULL, NULL, nr, NULL);
        }
        if (st == DINF_STATUS_OK)
            st = dinf_ep_group_barrier(g);
    }
    ep_capture(&f->res[r], st);
}

static int reaches(const fx *f, int32_t src, int64_t t, int32_t dst) {
    for (int k = 0; k < K; k++)
        if (f->topk[src][t * K + k] >= 0 && f->topk[src][t * K + k] / L == dst)
            return 1;
    return 0;
}

static void check_round(fx *f) {
    const int32_t H = f->hidden;
    for (int32_t r = 0; r < R; r++)
        cr_assert_eq(f->res[r].status, DINF_STATUS_OK, "rank %d: %s", (int)r, f->res[r].message);
    for (int32_t dst = 0; dst < R; dst++) {
        int64_t row = 0;
        for (int32_t src = 0; src < R; src++)
            for (int64_t t = 0; t < f->n[src]; t++) {
                if (!reaches(f, src, t, dst))
                    continue;
                cr_assert_eq(f->src[dst][row], t);
                cr_assert(memcmp(f->recv[dst] + row * H, f->x[src] + t * H, (size_t)H * 2) == 0);
                cr_assert(memcmp(f->recv2[dst] + row * H, f->x2[src] + t * H, (size_t)H * 2) == 0,
                          "cached dispatch moves the new data along the old routes");
                if (H % 128 == 0) {
                    cr_assert(memcmp(f->recv8[dst] + row * H, f->xq[src] + t * H, (size_t)H) == 0);
                    cr_assert(memcmp(f->recv_s[dst] + row * (H / 128),
                                     f->xs[src] + t * (H / 128), (size_t)(H / 128) * 4) == 0);
                }
                row++;
            }
        cr_assert_eq(f->num_recv[dst], row);
    }
    for (int32_t src = 0; src < R; src++)
        for (int64_t t = 0; t < f->n[src]; t++) {
            int reached = 0;
            for (int32_t d = 0; d < R; d++)
                reached += reaches(f, src, t, d);
            for (int32_t h = 0; h < H; h++) {
                const float v = dinf__f32_from_bf16(f->x[src][t * H + h]);
                float acc = 0.0f;
                for (int i = 0; i < reached; i++)
                    acc += v;
                cr_assert_eq(f->combined[src][t * H + h], dinf__bf16_from_f32(acc));
                /* bias0 + bias1 first, then the rows, one rounding (these
                 * values sum exactly: the order is tested by
                 * combine_adds_biases_first_then_ranks_ascending) */
                acc = dinf__f32_from_bf16(f->bias0[src][t * H + h]) +
                      dinf__f32_from_bf16(f->bias1[src][t * H + h]);
                for (int i = 0; i < reached; i++)
                    acc += v;
                cr_assert_eq(f->combined_b[src][t * H + h], dinf__bf16_from_f32(acc),
                             "bias order: rank %d token %lld col %d", (int)src, (long long)t, h);
            }
        }
}

Test(ep_features, biases_zero_token_ranks_and_repeated_calls) {
    const int64_t n[R] = {T, 0, 7, T - 1}; /* rank 1 sends nothing */
    fx *f = make_fx(512, 1, n);
    f->iterations = 5;
    ep_run_ranks(R, rank_round, f);
    check_round(f);
    free_fx(f);
}

Test(ep_features, hidden_not_a_multiple_of_128_in_bf16) {
    const int64_t n[R] = {T, T, T, T};
    fx *f = make_fx(136, 1, n); /* 272 bytes: a multiple of 16 */
    f->iterations = 1;
    ep_run_ranks(R, rank_round, f);
    check_round(f);
    free_fx(f);
}

Test(ep_features, bits_do_not_depend_on_threads_per_rank) {
    const int64_t n[R] = {T, 5, T, 11};
    fx *a = make_fx(1024, 1, n), *b = make_fx(1024, 3, n);
    a->iterations = b->iterations = 1;
    ep_run_ranks(R, rank_round, a);
    ep_run_ranks(R, rank_round, b);
    check_round(a);
    check_round(b);
    for (int32_t r = 0; r < R; r++) {
        cr_assert(memcmp(a->combined_b[r], b->combined_b[r], (size_t)n[r] * 1024 * 2) == 0);
        cr_assert(memcmp(a->recv[r], b->recv[r], (size_t)a->num_recv[r] * 1024 * 2) == 0);
    }
    free_fx(a);
    free_fx(b);
}

/* ------------------------------------------------ combine summation order --
 * Each rank's "expert" returns a DIFFERENT row per (rank, token), chosen so
 * that the float32 sum depends on the order of the terms, and the bits are
 * checked against an oracle adding float(bias0) + float(bias1) first, then
 * the ranks ascending (upstream). The test also proves it can fail: the
 * oracle in the reverse rank order, and the oracle adding the biases last,
 * each differ from the expected bits in many elements.
 *
 * Values of token t of rank src, element h, returned by rank dst (the ranks
 * src's token reaches are r_1 < ... < r_m):
 *   order round: r_1 returns s * 1.0, r_m returns -s * 1.0 (m >= 2), the
 *     others a small value v ~ 2^-18..2^-21 with 8 significant bits. Rank
 *     order: (s + v) - s rounds v to the float32 grid of [1, 2) (or
 *     [0.5, 1)), (-s + v) + s to the other one: the bfloat16 of the result,
 *     ~v, shows the difference.
 *   bias round: every rank returns a small value; bias0 = b, bias1 = -b with
 *     |b| in [1, 2). Upstream's order gives the exact sum of the small values;
 *     adding the biases last rounds it to the grid of [1, 2).
 */
static uint64_t order_hash(int32_t src, int64_t t, int32_t h, int32_t dst, uint32_t salt) {
    uint64_t s = ((uint64_t)(uint32_t)src << 48) ^ ((uint64_t)t << 24) ^ ((uint64_t)h << 4) ^
                 ((uint64_t)(uint32_t)dst << 60) ^ ((uint64_t)salt << 32);
    return ep_rng(&s);
}

static float order_small(uint64_t z) { /* +-(1 + u/128) * 2^-(18..21), exact in bf16 */
    const float m = 1.0f + (float)(z & 127) / 128.0f;
    const float v = ldexpf(m, -18 - (int)((z >> 7) & 3));
    return (z >> 9) & 1 ? -v : v;
}

static float order_value(const fx *f, int32_t src, int64_t t, int32_t h, int32_t dst,
                         int bias_round) {
    const uint64_t z = order_hash(src, t, h, dst, bias_round ? 2u : 1u);
    if (bias_round)
        return order_small(z);
    int32_t first = -1, last = -1;
    for (int32_t r = 0; r < R; r++)
        if (reaches(f, src, t, r)) {
            if (first < 0)
                first = r;
            last = r;
        }
    const float s = order_hash(src, t, h, -1, 3u) & 1 ? -1.0f : 1.0f; /* same on every rank */
    if (dst == first && last != first)
        return s;
    if (dst == last && last != first)
        return -s;
    return order_small(z);
}

static uint16_t order_bias(int32_t src, int64_t t, int32_t h, int which) {
    const uint64_t z = order_hash(src, t, h, -2, 4u);
    const float b = ((z & 1) ? -1.0f : 1.0f) * (1.0f + (float)((z >> 1) & 127) / 128.0f);
    return dinf__bf16_from_f32(which == 0 ? b : -b);
}

typedef struct order_fx {
    fx *f;
    uint16_t *y[R], *y_small[R], *out[R], *out_b[R];
} order_fx;

static void rank_order(int32_t r, void *ctx) {
    order_fx *o = ctx;
    fx *f = o->f;
    dinf_ep_group *g = f->groups[r];
    const int32_t H = f->hidden;
    dinf_status st = dinf_ep_notify_dispatch(g, f->topk[r], f->n[r], K, E, NULL, NULL, NULL, 1,
                                             f->handle[r], &f->num_recv[r], NULL, NULL);
    if (st == DINF_STATUS_OK)
        st = dinf_ep_dispatch(g, f->handle[r], f->x[r], DINF_DTYPE_BFLOAT16, NULL, H, NULL,
                              NULL, DINF_DTYPE_BFLOAT16, f->recv[r], NULL, NULL, NULL, f->src[r],
                              f->num_recv[r], NULL);
    int32_t rpm[R * R];
    if (st == DINF_STATUS_OK)
        st = dinf_ep_handle_info(f->handle[r], NULL, NULL, NULL, NULL, rpm, NULL);
    if (st == DINF_STATUS_OK) {
        /* the expert: a row of its own for each received (source rank, token) */
        int32_t src = 0;
        for (int64_t row = 0; row < f->num_recv[r]; row++) {
            while (row >= rpm[src * R + r])
                src++;
            const int64_t t = f->src[r][row];
            for (int32_t h = 0; h < H; h++) {
                o->y[r][row * H + h] = dinf__bf16_from_f32(order_value(f, src, t, h, r, 0));
                o->y_small[r][row * H + h] = dinf__bf16_from_f32(order_value(f, src, t, h, r, 1));
            }
        }
        for (int64_t t = 0; t < f->n[r]; t++)
            for (int32_t h = 0; h < H; h++) {
                f->bias0[r][t * H + h] = order_bias(r, t, h, 0);
                f->bias1[r][t * H + h] = order_bias(r, t, h, 1);
            }
        st = dinf_ep_combine(g, f->handle[r], o->y[r], H, NULL, NULL, NULL, o->out[r], NULL,
                             NULL);
    }
    if (st == DINF_STATUS_OK)
        st = dinf_ep_combine(g, f->handle[r], o->y_small[r], H, NULL, f->bias0[r], f->bias1[r],
                             o->out_b[r], NULL, NULL);
    ep_capture(&f->res[r], st);
}

Test(ep_features, combine_adds_biases_first_then_ranks_ascending) {
    const int64_t n[R] = {T, T - 3, T, 9};
    order_fx o = {make_fx(256, 2, n), {0}, {0}, {0}, {0}};
    fx *f = o.f;
    const int32_t H = f->hidden;
    for (int32_t r = 0; r < R; r++) {
        o.y[r] = malloc((size_t)R * T * H * 2);
        o.y_small[r] = malloc((size_t)R * T * H * 2);
        o.out[r] = malloc((size_t)T * H * 2);
        o.out_b[r] = malloc((size_t)T * H * 2);
        memset(o.out[r], 0xFF, (size_t)T * H * 2); /* poison */
        memset(o.out_b[r], 0xFF, (size_t)T * H * 2);
    }
    ep_run_ranks(R, rank_order, &o);
    for (int32_t r = 0; r < R; r++)
        cr_assert_eq(f->res[r].status, DINF_STATUS_OK, "rank %d: %s", (int)r, f->res[r].message);
    int64_t reverse_differs = 0, bias_last_differs = 0, checked = 0;
    for (int32_t src = 0; src < R; src++)
        for (int64_t t = 0; t < f->n[src]; t++)
            for (int32_t h = 0; h < H; h++) {
                float asc = 0.0f, desc = 0.0f;
                const float b0 = dinf__f32_from_bf16(order_bias(src, t, h, 0));
                const float b1 = dinf__f32_from_bf16(order_bias(src, t, h, 1));
                float small = b0 + b1, small_bias_last = 0.0f;
                for (int32_t d = 0; d < R; d++)
                    if (reaches(f, src, t, d)) {
                        asc += order_value(f, src, t, h, d, 0);
                        small += order_value(f, src, t, h, d, 1);
                        small_bias_last += order_value(f, src, t, h, d, 1);
                    }
                for (int32_t d = R - 1; d >= 0; d--)
                    if (reaches(f, src, t, d))
                        desc += order_value(f, src, t, h, d, 0);
                small_bias_last += b0;
                small_bias_last += b1;
                const uint16_t e = dinf__bf16_from_f32(asc), eb = dinf__bf16_from_f32(small);
                cr_assert_eq(o.out[src][t * H + h], e,
                             "rank order: rank %d token %lld col %d = %04x, expected %04x",
                             (int)src, (long long)t, (int)h, o.out[src][t * H + h], e);
                cr_assert_eq(o.out_b[src][t * H + h], eb,
                             "bias order: rank %d token %lld col %d = %04x, expected %04x",
                             (int)src, (long long)t, (int)h, o.out_b[src][t * H + h], eb);
                reverse_differs += dinf__bf16_from_f32(desc) != e;
                bias_last_differs += dinf__bf16_from_f32(small_bias_last) != eb;
                checked++;
            }
    /* the data distinguishes the orders: a wrong order cannot pass */
    cr_assert_gt(reverse_differs, checked / 20, "only %lld of %lld elements depend on rank order",
                 (long long)reverse_differs, (long long)checked);
    cr_assert_gt(bias_last_differs, checked / 4, "only %lld of %lld elements depend on bias order",
                 (long long)bias_last_differs, (long long)checked);
    for (int32_t r = 0; r < R; r++) {
        free(o.y[r]);
        free(o.y_small[r]);
        free(o.out[r]);
        free(o.out_b[r]);
    }
    free_fx(f);
}
