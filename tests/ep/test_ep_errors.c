/*
 * Every input the EP module rejects, each with its status and message, on
 * every rank of the call: bad configs, expert ids out of range, experts that
 * do not divide among the ranks, receive buffers too small, disagreeing
 * arguments, mismatched calls (different operations: the group breaks, later
 * calls fail fast), a rank that never arrives (timeout, no hang), misuse of
 * handles and cached mode, low-latency limits. After a rejected argument the
 * group stays usable, which each test proves with a correct call.
 */
#include "ep_test_util.h"

#include <criterion/criterion.h>

#define R3 3
#define H 256
#define K 4
#define E 6 /* 2 experts per rank with 3 ranks */
#define T 16

typedef struct scen {
    int32_t R;
    dinf_ep_group *groups[8];
    int64_t n[8];
    uint16_t x[8][T * H];
    int64_t topk[8][T * K];
    float w[8][T * K];
    dinf_ep_handle *handle[8];
    int64_t num_recv[8];
    ep_result res[8];
    int variant;
} scen;

static scen *make_scen(int32_t R, int64_t timeout_ms) {
    scen *s = calloc(1, sizeof *s);
    s->R = R;
    dinf_ep_config cfg = DINF_EP_CONFIG_INIT;
    cfg.max_hidden = 1024;
    cfg.max_tokens_per_rank = T;
    cfg.max_topk = 8;
    cfg.max_num_experts = 64;
    cfg.timeout_ms = timeout_ms;
    cr_assert_eq(dinf_ep_group_create_threads(R, &cfg, s->groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    uint64_t seed = 0x5eedu + (uint64_t)R;
    for (int32_t r = 0; r < R; r++) {
        s->n[r] = T - r;
        ep_fill_bf16(s->x[r], T * H, &seed);
        ep_fill_topk(s->topk[r], T, K, E, &seed);
        ep_fill_weights(s->w[r], T * K, &seed);
        cr_assert_eq(dinf_ep_handle_create(s->groups[r], &s->handle[r]), DINF_STATUS_OK);
    }
    return s;
}

static void free_scen(scen *s) {
    for (int32_t r = 0; r < s->R; r++) {
        dinf_ep_handle_destroy(s->handle[r]);
        dinf_ep_group_destroy(s->groups[r]);
    }
    free(s);
}

static dinf_status notify(scen *s, int32_t r) {
    return dinf_ep_notify_dispatch(s->groups[r], s->topk[r], s->n[r], K, E, NULL, NULL, NULL, 1,
                                   s->handle[r], &s->num_recv[r], NULL, NULL);
}

/* A correct notify + dispatch on every rank: the group is usable. */
static void rank_ok(int32_t r, void *ctx) {
    scen *s = ctx;
    static __thread uint16_t recv[R3 * T * H];
    static __thread int64_t rtopk[R3 * T * K];
    dinf_status st = notify(s, r);
    if (st == DINF_STATUS_OK)
        st = dinf_ep_dispatch(s->groups[r], s->handle[r], s->x[r], DINF_DTYPE_BFLOAT16, NULL, H,
                              s->topk[r], NULL, DINF_DTYPE_BFLOAT16, recv, NULL, rtopk, NULL,
                              NULL, R3 * T, NULL);
    ep_capture(&s->res[r], st);
}

static void expect_usable(scen *s) {
    ep_run_ranks(s->R, rank_ok, s);
    for (int32_t r = 0; r < s->R; r++)
        cr_assert_eq(s->res[r].status, DINF_STATUS_OK, "rank %d after the error: %s", (int)r,
                     s->res[r].message);
}

static void expect_all(scen *s, dinf_status status, int32_t culprit, const char *culprit_text,
                       const char *others_text) {
    for (int32_t r = 0; r < s->R; r++) {
        cr_assert_eq(s->res[r].status, status, "rank %d: status %d (%s), expected %d", (int)r,
                     s->res[r].status, s->res[r].message, status);
        const char *want = r == culprit || culprit < 0 ? culprit_text : others_text;
        cr_assert(strstr(s->res[r].message, want), "rank %d: message \"%s\" lacks \"%s\"", (int)r,
                  s->res[r].message, want);
    }
}

/* ------------------------------------------------------------ configs ---- */

Test(ep_errors, bad_configs) {
    dinf_ep_group *g[4];
    dinf_ep_config c = DINF_EP_CONFIG_INIT;
    c.max_hidden = 128;
    c.max_tokens_per_rank = 8;
    c.max_topk = 4;
    c.max_num_experts = 8;
    cr_assert_eq(dinf_ep_group_create_threads(2, NULL, g), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "config is NULL"));
    cr_assert_eq(dinf_ep_group_create_threads(2, &c, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_create_threads(0, &c, g), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "num_ranks=0"));
    cr_assert_eq(dinf_ep_group_create_threads(DINF_EP_MAX_RANKS + 1, &c, g),
                 DINF_STATUS_INVALID_ARGUMENT);
    struct {
        const char *field;
        dinf_ep_config cfg;
    } bad[8];
    for (int i = 0; i < 8; i++)
        bad[i].cfg = c;
    bad[0].field = "config->size", bad[0].cfg.size = 8;
    bad[1].field = "config->max_hidden", bad[1].cfg.max_hidden = 0;
    bad[2].field = "config->max_tokens_per_rank", bad[2].cfg.max_tokens_per_rank = 0;
    bad[3].field = "config->max_topk", bad[3].cfg.max_topk = DINF_EP_MAX_TOPK + 1;
    bad[4].field = "config->max_num_experts", bad[4].cfg.max_num_experts = 0;
    bad[5].field = "config->timeout_ms", bad[5].cfg.timeout_ms = -1;
    bad[6].field = "config->reserved", bad[6].cfg.reserved = 1;
    bad[7].field = "max_num_experts", bad[7].cfg.max_tokens_per_rank = 1 << 30;
    for (int i = 0; i < 8; i++) {
        g[0] = (dinf_ep_group *)0x1;
        cr_assert_eq(dinf_ep_group_create_threads(2, &bad[i].cfg, g), DINF_STATUS_INVALID_ARGUMENT,
                     "%s", bad[i].field);
        cr_assert(strstr(dinf_last_error(), bad[i].field), "%s: %s", bad[i].field,
                  dinf_last_error());
        cr_assert_null(g[0], "groups must be NULL on failure");
    }
    /* sizing query */
    size_t normal = 0, ll = 0;
    cr_assert_eq(dinf_ep_symmetric_buffer_bytes(&c, 2, &normal, &ll), DINF_STATUS_OK);
    cr_assert_gt(normal, (size_t)2 * 8 * 128 * 2);
    cr_assert_gt(ll, (size_t)8 * 8 * 128 * 2 / 2);
    cr_assert_eq(dinf_ep_symmetric_buffer_bytes(&c, 0, &normal, &ll), DINF_STATUS_INVALID_ARGUMENT);
    int64_t rows = 0;
    cr_assert_eq(dinf_ep_ll_scale_rows(3, 3, &rows), DINF_STATUS_OK);
    cr_assert_eq(rows, 12);
    cr_assert_eq(dinf_ep_ll_scale_rows(0, 3, &rows), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_info(NULL, NULL, NULL, NULL, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_destroy(NULL), DINF_STATUS_OK);
    cr_assert_eq(dinf_ep_handle_destroy(NULL), DINF_STATUS_OK);
    cr_assert_eq(dinf_ep_ll_handle_destroy(NULL), DINF_STATUS_OK);
    cr_assert_eq(dinf_ep_group_barrier(NULL), DINF_STATUS_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------- layout ---- */

Test(ep_errors, layout_rejects) {
    int64_t topk[4] = {0, 5, -1, 6};
    int32_t per_rank[3], per_expert[6];
    uint8_t in_rank[6];
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, 2, 2, 6, 3, per_rank, per_expert, in_rank, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "topk_idx[1][1]=6 is outside [-1, num_experts=6)"), "%s",
              dinf_last_error());
    topk[3] = -2;
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, 2, 2, 6, 3, per_rank, per_expert, in_rank, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "topk_idx[1][1]=-2"), "%s", dinf_last_error());
    topk[3] = 1;
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, 2, 2, 7, 3, per_rank, per_expert, in_rank, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "not a multiple of num_ranks=3"), "%s", dinf_last_error());
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, 2, 0, 6, 3, per_rank, per_expert, in_rank, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_get_dispatch_layout(NULL, 2, 2, 6, 3, per_rank, per_expert, in_rank, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, 2, 2, 6, 3, NULL, per_expert, in_rank, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, -1, 2, 6, 3, per_rank, per_expert, in_rank, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    /* per_rank overlapping per_expert */
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, 2, 2, 6, 3, per_expert, per_expert + 1, in_rank,
                                             NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "overlap"), "%s", dinf_last_error());
    /* and the valid call: token 0 -> ranks 0 (e0) and 2 (e5); token 1 -> rank 0 (e1) */
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, 2, 2, 6, 3, per_rank, per_expert, in_rank, NULL),
                 DINF_STATUS_OK);
    cr_assert(per_rank[0] == 2 && per_rank[1] == 0 && per_rank[2] == 1);
    cr_assert(per_expert[0] == 1 && per_expert[1] == 1 && per_expert[5] == 1 && per_expert[2] == 0);
    const uint8_t want[6] = {1, 0, 1, 1, 0, 0};
    cr_assert(memcmp(in_rank, want, 6) == 0);
}

/* ------------------------------------------------------------- notify ---- */

static void rank_bad_expert(int32_t r, void *ctx) {
    scen *s = ctx;
    if (r == 1)
        s->topk[1][2 * K + 3] = s->variant ? -7 : E; /* token 2, slot 3 */
    ep_capture(&s->res[r], notify(s, r));
    if (r == 1)
        s->topk[1][2 * K + 3] = 0;
}

Test(ep_errors, expert_id_out_of_range) {
    scen *s = make_scen(R3, 60000);
    ep_run_ranks(R3, rank_bad_expert, s);
    expect_all(s, DINF_STATUS_INVALID_ARGUMENT, 1, "topk_idx[2][3]=6 is outside [-1, num_experts=6)",
               "rank 1 rejected its arguments");
    expect_usable(s);
    s->variant = 1;
    ep_run_ranks(R3, rank_bad_expert, s);
    expect_all(s, DINF_STATUS_INVALID_ARGUMENT, 1, "topk_idx[2][3]=-7", "rank 1 rejected");
    expect_usable(s);
    free_scen(s);
}

static void rank_bad_divide(int32_t r, void *ctx) {
    scen *s = ctx;
    ep_capture(&s->res[r], dinf_ep_notify_dispatch(s->groups[r], s->topk[r], s->n[r], K, 7, NULL,
                                                   NULL, NULL, 1, s->handle[r], NULL, NULL, NULL));
}

Test(ep_errors, experts_do_not_divide) {
    scen *s = make_scen(R3, 60000);
    ep_run_ranks(R3, rank_bad_divide, s);
    expect_all(s, DINF_STATUS_INVALID_ARGUMENT, -1,
               "num_experts=7 is not a multiple of num_ranks=3", "");
    expect_usable(s);
    free_scen(s);
}

static void rank_layout_mismatch(int32_t r, void *ctx) {
    scen *s = ctx;
    int32_t per_rank[R3], per_expert[E];
    uint8_t in_rank[T * R3];
    dinf_ep_get_dispatch_layout(s->topk[r], s->n[r], K, E, R3, per_rank, per_expert, in_rank, NULL);
    if (r == 2)
        in_rank[0] ^= 1;
    ep_capture(&s->res[r], dinf_ep_notify_dispatch(s->groups[r], s->topk[r], s->n[r], K, E,
                                                   per_rank, per_expert, in_rank, 1, s->handle[r],
                                                   NULL, NULL, NULL));
}

Test(ep_errors, layout_arrays_must_match_topk) {
    scen *s = make_scen(R3, 60000);
    ep_run_ranks(R3, rank_layout_mismatch, s);
    expect_all(s, DINF_STATUS_INVALID_ARGUMENT, 2, "differ from the layout of topk_idx in 1 entries",
               "rank 2 rejected");
    expect_usable(s);
    free_scen(s);
}

/* ----------------------------------------------------------- dispatch ---- */

static void rank_small_buffer(int32_t r, void *ctx) {
    scen *s = ctx;
    static __thread uint16_t recv[R3 * T * H];
    static __thread int64_t rtopk[R3 * T * K];
    dinf_status st = notify(s, r);
    if (st == DINF_STATUS_OK) {
        int64_t cap = s->num_recv[r] - (r == 2 ? 1 : 0);
        st = dinf_ep_dispatch(s->groups[r], s->handle[r], s->x[r], DINF_DTYPE_BFLOAT16, NULL, H,
                              s->topk[r], NULL, DINF_DTYPE_BFLOAT16, recv, NULL, rtopk, NULL,
                              NULL, cap, NULL);
    }
    ep_capture(&s->res[r], st);
}

Test(ep_errors, receive_buffer_too_small) {
    scen *s = make_scen(R3, 60000);
    ep_run_ranks(R3, rank_small_buffer, s);
    cr_assert_gt(s->num_recv[2], 0);
    expect_all(s, DINF_STATUS_INVALID_ARGUMENT, 2, "is smaller than the", "rank 2 rejected");
    char want[128];
    snprintf(want, sizeof want, "recv_capacity=%lld is smaller than the %lld tokens rank 2 receives",
             (long long)(s->num_recv[2] - 1), (long long)s->num_recv[2]);
    cr_assert(strstr(s->res[2].message, want), "%s", s->res[2].message);
    expect_usable(s);
    free_scen(s);
}

static void rank_dispatch_variant(int32_t r, void *ctx) {
    scen *s = ctx;
    static __thread uint16_t recv[R3 * T * H];
    static __thread uint8_t recv8[R3 * T * H];
    static __thread float rscale[R3 * T * 8];
    static __thread int64_t rtopk[R3 * T * K];
    static __thread float rw[R3 * T * K];
    static __thread uint16_t out[T * H];
    static __thread float out_w[T * K];
    dinf_status st = notify(s, r);
    if (st != DINF_STATUS_OK) {
        ep_capture(&s->res[r], st);
        return;
    }
    dinf_ep_group *g = s->groups[r];
    dinf_ep_handle *h = s->handle[r];
    const int64_t cap = R3 * T;
    switch (s->variant) {
    case 0: /* hidden differs on rank 0 */
        st = dinf_ep_dispatch(g, h, s->x[r], DINF_DTYPE_BFLOAT16, NULL, r == 0 ? 128 : H,
                              s->topk[r], NULL, DINF_DTYPE_BFLOAT16, recv, NULL, rtopk, NULL, NULL,
                              cap, NULL);
        break;
    case 1: /* cached mode with recv_topk_idx on rank 1 */
        st = dinf_ep_dispatch(g, h, s->x[r], DINF_DTYPE_BFLOAT16, NULL, H, NULL, NULL,
                              DINF_DTYPE_BFLOAT16, recv, NULL, r == 1 ? rtopk : NULL, NULL, NULL,
                              cap, NULL);
        break;
    case 2: /* e4m3 input received as bf16 on rank 2 */
        st = dinf_ep_dispatch(g, h, s->x[r], r == 2 ? DINF_DTYPE_FP8_E4M3 : DINF_DTYPE_BFLOAT16,
                              r == 2 ? rscale : NULL, H, s->topk[r], NULL, DINF_DTYPE_BFLOAT16,
                              recv, NULL, rtopk, NULL, NULL, cap, NULL);
        break;
    case 3: /* FP8 with hidden % 128 != 0 everywhere */
        st = dinf_ep_dispatch(g, h, s->x[r], DINF_DTYPE_BFLOAT16, NULL, 200, s->topk[r], NULL,
                              DINF_DTYPE_FP8_E4M3, recv8, rscale, rtopk, NULL, NULL, cap, NULL);
        break;
    case 4: /* overlapping outputs on rank 0 */
        st = dinf_ep_dispatch(g, h, s->x[r], DINF_DTYPE_BFLOAT16, NULL, H, s->topk[r], NULL,
                              DINF_DTYPE_BFLOAT16, recv, NULL,
                              r == 0 ? (int64_t *)(recv + 8) : rtopk, NULL, NULL, cap, NULL);
        break;
    case 5: /* a CUDA exec on a host group, rank 1 */ {
        dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
        st = dinf_ep_dispatch(g, h, s->x[r], DINF_DTYPE_BFLOAT16, NULL, H, s->topk[r], NULL,
                              DINF_DTYPE_BFLOAT16, recv, NULL, rtopk, NULL, NULL, cap,
                              r == 1 ? &cuda : NULL);
        break;
    }
    case 6: /* weights without recv weights on rank 2 */
        st = dinf_ep_dispatch(g, h, s->x[r], DINF_DTYPE_BFLOAT16, NULL, H, s->topk[r], s->w[r],
                              DINF_DTYPE_BFLOAT16, recv, NULL, rtopk, r == 2 ? NULL : rw, NULL,
                              cap, NULL);
        break;
    case 7: /* combine with weights on rank 0 only: disagreeing flags */
        st = dinf_ep_combine(g, h, recv, H, r == 0 ? rw : NULL, NULL, NULL, out,
                             r == 0 ? out_w : NULL, NULL);
        break;
    case 8: /* combine rows of 100 bf16 = 200 bytes (not 16-byte multiples) on rank 1 */
        st = dinf_ep_combine(g, h, recv, r == 1 ? 100 : H, NULL, NULL, NULL, out, NULL, NULL);
        break;
    case 9: /* the same, on every rank */
        st = dinf_ep_combine(g, h, recv, 100, NULL, NULL, NULL, out, NULL, NULL);
        break;
    case 10: /* a second notify with another expert_alignment on rank 2 */
        st = dinf_ep_notify_dispatch(g, s->topk[r], s->n[r], K, E, NULL, NULL, NULL,
                                     r == 2 ? 4 : 1, h, NULL, NULL, NULL);
        break;
    }
    ep_capture(&s->res[r], st);
}

Test(ep_errors, dispatch_rejects) {
    static const struct {
        int32_t culprit;
        const char *culprit_text, *others_text;
    } cases[] = {
        {-2, "ranks disagree", "hidden"},
        {1, "cached dispatch (topk_idx NULL)", "rank 1 rejected"},
        {2, "e4m3 input is received as e4m3", "rank 2 rejected"},
        {-1, "hidden=200 is not a multiple of 128", ""},
        {0, "overlap", "rank 0 rejected"},
        {1, "lives in host memory", "rank 1 rejected"},
        {2, "recv_topk_weights must be given exactly when topk_weights is", "rank 2 rejected"},
        {-2, "ranks disagree", "topk_weights given"},
        {1, "hidden=100 * 2 bytes (bfloat16) is not a multiple of 16 bytes", "rank 1 rejected"},
        {-1, "hidden=100 * 2 bytes (bfloat16) is not a multiple of 16 bytes", ""},
        {-2, "ranks disagree", "expert_alignment"},
    };
    scen *s = make_scen(R3, 60000);
    for (int v = 0; v < (int)(sizeof cases / sizeof *cases); v++) {
        s->variant = v;
        ep_run_ranks(R3, rank_dispatch_variant, s);
        for (int32_t r = 0; r < R3; r++) {
            cr_assert_neq(s->res[r].status, DINF_STATUS_OK, "case %d rank %d succeeded", v, (int)r);
            cr_assert_neq(s->res[r].status, DINF_STATUS_TIMEOUT, "case %d rank %d: %s", v, (int)r,
                          s->res[r].message);
            const char *want = cases[v].culprit == -2 ? cases[v].others_text
                               : cases[v].culprit == -1 || cases[v].culprit == r
                                   ? cases[v].culprit_text
                                   : cases[v].others_text;
            cr_assert(strstr(s->res[r].message, want), "case %d rank %d: \"%s\" lacks \"%s\"", v,
                      (int)r, s->res[r].message, want);
        }
        expect_usable(s);
    }
    free_scen(s);
}

static void rank_unnotified(int32_t r, void *ctx) {
    scen *s = ctx;
    static __thread uint16_t recv[R3 * T * H];
    static __thread uint16_t out[T * H];
    ep_capture(&s->res[r], dinf_ep_combine(s->groups[r], s->handle[r], recv, H, NULL, NULL, NULL,
                                           out, NULL, NULL));
}

Test(ep_errors, handle_not_notified) {
    scen *s = make_scen(R3, 60000);
    ep_run_ranks(R3, rank_unnotified, s);
    expect_all(s, DINF_STATUS_INVALID_ARGUMENT, 0, "has not been notified", "has not been notified");
    int64_t n;
    cr_assert_eq(dinf_ep_handle_info(s->handle[0], &n, NULL, NULL, NULL, NULL, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    expect_usable(s);
    cr_assert_eq(dinf_ep_handle_info(s->handle[0], &n, NULL, NULL, NULL, NULL, NULL), DINF_STATUS_OK);
    cr_assert_eq(n, s->n[0]);
    free_scen(s);
}

/* ------------------------------------------------- mismatches, timeouts -- */

static void rank_mismatched_ops(int32_t r, void *ctx) {
    scen *s = ctx;
    static __thread uint16_t recv[R3 * T * H];
    static __thread int64_t rtopk[R3 * T * K];
    static __thread uint16_t out[T * H];
    dinf_status st = notify(s, r);
    if (st == DINF_STATUS_OK) {
        if (r == 1) /* rank 1 runs ahead to combine */
            st = dinf_ep_combine(s->groups[r], s->handle[r], recv, H, NULL, NULL, NULL, out, NULL,
                                 NULL);
        else
            st = dinf_ep_dispatch(s->groups[r], s->handle[r], s->x[r], DINF_DTYPE_BFLOAT16, NULL,
                                  H, s->topk[r], NULL, DINF_DTYPE_BFLOAT16, recv, NULL, rtopk,
                                  NULL, NULL, R3 * T, NULL);
    }
    ep_capture(&s->res[r], st);
}

static void rank_barrier(int32_t r, void *ctx) {
    scen *s = ctx;
    ep_capture(&s->res[r], dinf_ep_group_barrier(s->groups[r]));
}

Test(ep_errors, mismatched_calls_break_the_group) {
    /* a long timeout: the status (not TIMEOUT) shows the mismatch is caught without it */
    scen *s = make_scen(R3, 600000);
    ep_run_ranks(R3, rank_mismatched_ops, s);
    for (int32_t r = 0; r < R3; r++) {
        cr_assert_eq(s->res[r].status, DINF_STATUS_INVALID_ARGUMENT, "rank %d: %s", (int)r,
                     s->res[r].message);
        cr_assert(strstr(s->res[r].message, "mismatched collective calls"), "rank %d: %s", (int)r,
                  s->res[r].message);
        cr_assert(strstr(s->res[r].message, "dinf_ep_combine") &&
                      strstr(s->res[r].message, "dinf_ep_dispatch"),
                  "rank %d: %s", (int)r, s->res[r].message);
    }
    /* broken: every later call fails at once with the same story */
    ep_run_ranks(R3, rank_barrier, s);
    for (int32_t r = 0; r < R3; r++) {
        cr_assert_eq(s->res[r].status, DINF_STATUS_INVALID_ARGUMENT);
        cr_assert(strstr(s->res[r].message, "the EP group is broken: mismatched collective calls"),
                  "rank %d: %s", (int)r, s->res[r].message);
    }
    free_scen(s);
}

static void rank_absent(int32_t r, void *ctx) {
    scen *s = ctx;
    if (r == 2)
        return; /* never arrives */
    ep_capture(&s->res[r], notify(s, r));
}

Test(ep_errors, missing_rank_times_out) {
    scen *s = make_scen(R3, 300);
    ep_run_ranks(R3, rank_absent, s);
    for (int32_t r = 0; r < 2; r++) {
        cr_assert_eq(s->res[r].status, DINF_STATUS_TIMEOUT, "rank %d: %s", (int)r,
                     s->res[r].message);
        cr_assert(strstr(s->res[r].message, "waited 300 ms for ranks [2]"), "rank %d: %s", (int)r,
                  s->res[r].message);
    }
    /* the late rank finds the group broken instead of waiting */
    cr_assert_eq(notify(s, 2), DINF_STATUS_TIMEOUT);
    cr_assert(strstr(dinf_last_error(), "the EP group is broken"), "%s", dinf_last_error());
    free_scen(s);
}

/* ------------------------------------------------------- low latency ---- */

static void rank_ll_variant(int32_t r, void *ctx) {
    scen *s = ctx;
    static __thread uint16_t rx[2 * R3 * T * 1024];
    static __thread float rscale[2 * 8 * R3 * T];
    static __thread int32_t count[8];
    static __thread uint16_t out[T * H];
    dinf_ep_ll_handle *ll = NULL;
    dinf_status st = dinf_ep_ll_handle_create(s->groups[r], &ll);
    int64_t n = s->n[r], tmax = T;
    int32_t hidden = H;
    int64_t saved = s->topk[r][0];
    switch (s->variant) {
    case 0: n = r == 1 ? T + 1 : n; break;              /* more tokens than T */
    case 1: tmax = r == 0 ? T / 2 : T; n = T / 2; break; /* T differs */
    case 2: hidden = 200; break;                        /* not a multiple of 128 */
    case 3:                                             /* one expert selected T+1 times */
        if (r == 2) {
            n = T;
            for (int64_t t = 0; t < T; t++)
                for (int k = 0; k < K; k++)
                    s->topk[r][t * K + k] = -1;
            s->topk[r][0] = 3, s->topk[r][1] = 3; /* token 0 twice, + 15 more */
            for (int64_t t = 1; t < T; t++)
                s->topk[r][t * K] = 3;
        }
        break;
    case 4: if (r == 0) s->topk[0][5] = 99; break;      /* expert id out of range */
    }
    if (st == DINF_STATUS_OK)
        st = dinf_ep_low_latency_dispatch(s->groups[r], s->x[r], n, hidden, s->topk[r], K, E, tmax,
                                          s->variant == 2, rx, s->variant == 2 ? rscale : NULL,
                                          count, NULL, NULL, ll, NULL);
    if (s->variant == 5 && st == DINF_STATUS_OK) {
        /* combine with another routing on rank 1 */
        if (r == 1)
            s->topk[1][0] = s->topk[1][0] == 0 ? 1 : 0;
        st = dinf_ep_low_latency_combine(s->groups[r], rx, H, s->topk[r], s->w[r], n, K, ll, out,
                                         NULL);
        if (r == 1)
            s->topk[1][0] = saved;
    }
    if (s->variant == 3 && r == 2) { /* restore a valid routing */
        uint64_t seed = 77;
        ep_fill_topk(s->topk[r], T, K, E, &seed);
    }
    if (s->variant == 4 && r == 0)
        s->topk[0][5] = 1;
    ep_capture(&s->res[r], st);
    dinf_ep_ll_handle_destroy(ll);
}

Test(ep_errors, low_latency_rejects) {
    static const struct {
        int32_t culprit;
        const char *culprit_text, *others_text;
    } cases[] = {
        {1, "num_tokens=17 must be in [0, num_max_dispatch_tokens_per_rank=16]", "rank 1 rejected"},
        {-2, "ranks disagree", "num_max_dispatch_tokens_per_rank"},
        {-1, "hidden=200 must be a multiple of 128", ""},
        {2, "expert 3 is selected 17 times", "rank 2 rejected"},
        {0, "topk_idx[1][1]=99 is outside [-1, num_experts=6)", "rank 0 rejected"},
        {1, "topk_idx differs from the dispatch's", "rank 1 rejected"},
    };
    scen *s = make_scen(R3, 60000);
    s->topk[0][5] = 1;
    for (int v = 0; v < (int)(sizeof cases / sizeof *cases); v++) {
        s->variant = v;
        ep_run_ranks(R3, rank_ll_variant, s);
        for (int32_t r = 0; r < R3; r++) {
            cr_assert_eq(s->res[r].status, DINF_STATUS_INVALID_ARGUMENT, "case %d rank %d: %s", v,
                         (int)r, s->res[r].message);
            const char *want = cases[v].culprit == -2 ? cases[v].others_text
                               : cases[v].culprit == -1 || cases[v].culprit == r
                                   ? cases[v].culprit_text
                                   : cases[v].others_text;
            cr_assert(strstr(s->res[r].message, want), "case %d rank %d: \"%s\" lacks \"%s\"", v,
                      (int)r, s->res[r].message, want);
        }
        expect_usable(s);
    }
    free_scen(s);
}
