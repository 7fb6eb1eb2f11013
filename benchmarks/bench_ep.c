/*
 * EP dispatch and combine on the CPU threads transport, counted as upstream
 * DeepEP counts (deepep.md part 4):
 * - normal mode ("NVL" GB/s per rank): the bytes of recv_x a rank receives,
 *   bf16 = num_recv * H * 2, self-traffic included; FP8 dispatch counts
 *   that times (1 + 4/128) / 2; combine counts the same bytes as the bf16
 *   dispatch. Dispatch time includes the notify step (upstream's dispatch
 *   call does the count exchange too).
 * - low-latency mode: per selection, FP8 H + H/128*4 + 16 bytes, bf16 2H;
 *   combine 2H per selection.
 * The reported bytes/s is per rank (the average over ranks: total / R / t),
 * as upstream prints per-rank figures. Shapes are upstream's (H = 7168,
 * top-8) at token counts that fit this VM. The physical floor beside them is
 * the host's memcpy bandwidth with both cores (bytes copied).
 *
 * All ranks run on persistent threads; one iteration = every rank doing the
 * operation once; wall clock (manual time). Buffers of a case are allocated
 * when it first runs and freed when the next case starts.
 */
#define _GNU_SOURCE
#include "bench.h"

#include <deepinfra.h>

#include "core/numeric_hd.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { OP_DISPATCH, OP_DISPATCH_FP8, OP_COMBINE, OP_LL_DISPATCH, OP_LL_DISPATCH_FP8, OP_LL_COMBINE };

typedef struct ep_case {
    char name[96];
    int op, ranks, hidden, topk, experts;
    int64_t tokens;
} ep_case;

typedef struct rank_data {
    uint16_t *x;
    int64_t *topk;
    float *w;
    dinf_ep_handle *handle;
    dinf_ep_ll_handle *ll;
    int64_t num_recv;
    void *recv;
    float *recv_scales;
    int64_t *recv_topk;
    uint16_t *combined;
    int32_t *ll_count;
} rank_data;

/* The case whose buffers and threads exist now. */
static struct {
    const ep_case *c;
    dinf_ep_group *groups[8];
    rank_data rk[8];
    pthread_t tid[8];
    pthread_barrier_t start, done;
    int quit;
    dinf_status status[8];
    char error[512];
} cur;

static uint64_t rng(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static dinf_status rank_op(int r) {
    const ep_case *c = cur.c;
    rank_data *d = &cur.rk[r];
    dinf_ep_group *g = cur.groups[r];
    const int64_t M = (int64_t)c->ranks * c->tokens;
    dinf_status st;
    switch (c->op) {
    case OP_DISPATCH:
    case OP_DISPATCH_FP8: {
        const int fp8 = c->op == OP_DISPATCH_FP8;
        st = dinf_ep_notify_dispatch(g, d->topk, c->tokens, c->topk, c->experts, NULL, NULL, NULL,
                                     1, d->handle, &d->num_recv, NULL, NULL);
        if (st != DINF_STATUS_OK)
            return st;
        return dinf_ep_dispatch(g, d->handle, d->x, DINF_DTYPE_BFLOAT16, NULL, c->hidden, d->topk,
                                d->w, fp8 ? DINF_DTYPE_FP8_E4M3 : DINF_DTYPE_BFLOAT16, d->recv,
                                fp8 ? d->recv_scales : NULL, d->recv_topk,
                                (float *)(d->recv_topk + d->num_recv * c->topk), NULL,
                                (int64_t)c->ranks * c->tokens, NULL);
    }
    case OP_COMBINE:
        return dinf_ep_combine(g, d->handle, d->recv, c->hidden, NULL, NULL, NULL, d->combined,
                               NULL, NULL);
    case OP_LL_DISPATCH:
    case OP_LL_DISPATCH_FP8: {
        const int fp8 = c->op == OP_LL_DISPATCH_FP8;
        return dinf_ep_low_latency_dispatch(g, d->x, c->tokens, c->hidden, d->topk, c->topk,
                                            c->experts, c->tokens, fp8, d->recv,
                                            fp8 ? d->recv_scales : NULL, d->ll_count, NULL, NULL,
                                            d->ll, NULL);
    }
    case OP_LL_COMBINE:
        return dinf_ep_low_latency_combine(g, d->recv, c->hidden, d->topk, d->w, c->tokens,
                                           c->topk, d->ll, d->combined, NULL);
    }
    (void)M;
    return DINF_STATUS_INTERNAL;
}

static void *worker(void *arg) {
    const int r = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&cur.start);
        if (cur.quit)
            return NULL;
        cur.status[r] = rank_op(r);
        if (cur.status[r] != DINF_STATUS_OK && r == 0)
            snprintf(cur.error, sizeof cur.error, "%s", dinf_last_error());
        pthread_barrier_wait(&cur.done);
    }
}

static void run_all(void) {
    pthread_barrier_wait(&cur.start);
    pthread_barrier_wait(&cur.done);
}

static void teardown(void) {
    if (!cur.c)
        return;
    cur.quit = 1;
    pthread_barrier_wait(&cur.start);
    for (int r = 0; r < cur.c->ranks; r++)
        pthread_join(cur.tid[r], NULL);
    pthread_barrier_destroy(&cur.start);
    pthread_barrier_destroy(&cur.done);
    for (int r = 0; r < cur.c->ranks; r++) {
        rank_data *d = &cur.rk[r];
        dinf_ep_handle_destroy(d->handle);
        dinf_ep_ll_handle_destroy(d->ll);
        free(d->x);
        free(d->topk);
        free(d->w);
        free(d->recv);
        free(d->recv_scales);
        free(d->recv_topk);
        free(d->combined);
        free(d->ll_count);
        dinf_ep_group_destroy(cur.groups[r]);
    }
    memset(&cur, 0, sizeof cur);
}

/* Allocate, fill and route the case; run the prerequisite steps (a combine
 * needs a dispatch first). Returns 0 or -1 with the error set. */
static int setup(const ep_case *c) {
    teardown();
    cur.c = c;
    dinf_ep_config cfg = DINF_EP_CONFIG_INIT;
    cfg.max_hidden = c->hidden;
    cfg.max_tokens_per_rank = c->tokens;
    cfg.max_topk = c->topk;
    cfg.max_num_experts = c->experts;
    if (dinf_ep_group_create_threads(c->ranks, &cfg, cur.groups) != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        return -1;
    }
    const int64_t N = c->tokens, H = c->hidden, K = c->topk, R = c->ranks;
    const int64_t L = c->experts / R, M = R * N;
    const int ll = c->op >= OP_LL_DISPATCH;
    const int64_t recv_rows = ll ? L * M : R * N;
    uint64_t s = 12345;
    for (int r = 0; r < c->ranks; r++) {
        rank_data *d = &cur.rk[r];
        d->x = malloc((size_t)(N * H) * 2);
        d->topk = malloc((size_t)(N * K) * 8);
        d->w = malloc((size_t)(N * K) * 4);
        d->recv = malloc((size_t)(recv_rows * H) * 2);
        d->recv_scales = malloc((size_t)(recv_rows * (H / 128) + 64) * 4);
        d->recv_topk = malloc((size_t)(R * N * K) * 12);
        d->combined = malloc((size_t)(N * H) * 2);
        d->ll_count = malloc((size_t)L * 4);
        if (!d->x || !d->topk || !d->w || !d->recv || !d->recv_scales || !d->recv_topk ||
            !d->combined || !d->ll_count) {
            bench_set_error("out of host memory");
            return -1;
        }
        for (int64_t i = 0; i < N * H; i++)
            d->x[i] = dinf__bf16_from_f32((float)((double)(rng(&s) % 2001) / 1000.0 - 1.0));
        for (int64_t i = 0; i < (recv_rows * H); i++) /* combine inputs: finite bf16 */
            ((uint16_t *)d->recv)[i] = 0x3f80;
        /* top-k: distinct random experts (upstream: topk of |randn| + 1) */
        for (int64_t t = 0; t < N; t++)
            for (int64_t k = 0; k < K; k++) {
                int64_t e;
                int dup;
                do {
                    e = (int64_t)(rng(&s) % (uint64_t)c->experts);
                    dup = 0;
                    for (int64_t j = 0; j < k; j++)
                        dup |= d->topk[t * K + j] == e;
                } while (dup);
                d->topk[t * K + k] = e;
                d->w[t * K + k] = 1.0f / (float)K;
            }
        if (dinf_ep_handle_create(cur.groups[r], &d->handle) != DINF_STATUS_OK ||
            dinf_ep_ll_handle_create(cur.groups[r], &d->ll) != DINF_STATUS_OK) {
            bench_set_error(dinf_last_error());
            return -1;
        }
    }
    pthread_barrier_init(&cur.start, NULL, (unsigned)c->ranks + 1);
    pthread_barrier_init(&cur.done, NULL, (unsigned)c->ranks + 1);
    for (int r = 0; r < c->ranks; r++)
        pthread_create(&cur.tid[r], NULL, worker, (void *)(intptr_t)r);
    if (c->op == OP_COMBINE || c->op == OP_LL_COMBINE) { /* the routes first */
        const ep_case *keep = cur.c;
        ep_case pre = *c;
        pre.op = c->op == OP_COMBINE ? OP_DISPATCH : OP_LL_DISPATCH;
        cur.c = &pre;
        run_all();
        cur.c = keep;
        for (int r = 0; r < c->ranks; r++)
            if (cur.status[r] != DINF_STATUS_OK) {
                bench_set_error(cur.error);
                return -1;
            }
    }
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double run_case(void *arg) {
    const ep_case *c = arg;
    if (cur.c != c && setup(c) != 0)
        return -1;
    const double t0 = now();
    run_all();
    const double t1 = now();
    for (int r = 0; r < c->ranks; r++)
        if (cur.status[r] != DINF_STATUS_OK) {
            bench_set_error(cur.error[0] ? cur.error : "a rank failed");
            return -1;
        }
    return t1 - t0;
}

/* Bytes per rank per iteration as upstream counts them, for random routing
 * (the expectation over the seed used in setup is computed by replaying it). */
static double upstream_bytes(const ep_case *c) {
    const int64_t N = c->tokens, H = c->hidden, K = c->topk, R = c->ranks;
    const int64_t L = c->experts / R;
    uint64_t s = 12345;
    int64_t recv_rows = 0, selections = 0;
    int64_t *row = malloc((size_t)K * 8);
    for (int r = 0; r < c->ranks; r++) {
        for (int64_t i = 0; i < N * H; i++)
            (void)rng(&s);
        for (int64_t t = 0; t < N; t++) {
            for (int64_t k = 0; k < K; k++) {
                int64_t e;
                int dup;
                do {
                    e = (int64_t)(rng(&s) % (uint64_t)c->experts);
                    dup = 0;
                    for (int64_t j = 0; j < k; j++)
                        dup |= row[j] == e;
                } while (dup);
                row[k] = e;
            }
            selections += K;
            for (int64_t dst = 0; dst < R; dst++)
                for (int64_t k = 0; k < K; k++)
                    if (row[k] / L == dst) {
                        recv_rows++;
                        break;
                    }
        }
    }
    free(row);
    const double per_rank_rows = (double)recv_rows / (double)R;
    const double per_rank_sel = (double)selections / (double)R;
    switch (c->op) {
    case OP_DISPATCH:
    case OP_COMBINE: return per_rank_rows * (double)H * 2.0;
    case OP_DISPATCH_FP8: return per_rank_rows * (double)H * 2.0 * (1.0 + 4.0 / 128.0) / 2.0;
    case OP_LL_DISPATCH:
    case OP_LL_COMBINE: return per_rank_sel * (double)H * 2.0;
    case OP_LL_DISPATCH_FP8: return per_rank_sel * ((double)H + (double)H / 128.0 * 4.0 + 16.0);
    }
    return 0;
}

static void add(int op, const char *what, int ranks, int64_t tokens, int hidden, int topk,
                int experts) {
    ep_case *c = calloc(1, sizeof *c);
    if (!c)
        return;
    *c = (ep_case){"", op, ranks, hidden, topk, experts, tokens};
    snprintf(c->name, sizeof c->name, "ep/cpu_threads/%s/EP%d_T%lld_H%d_top%d_E%d", what, ranks,
             (long long)tokens, hidden, topk, experts);
    bench_spec spec = {.name = c->name,
                       .run = run_case,
                       .arg = c,
                       .manual_time = 1,
                       .bytes = upstream_bytes(c),
                       .label = "per rank, upstream's byte count; CPU threads transport",
                       .unit = "ms"};
    bench_register(&spec);
}

/* ---- the floor: host memcpy with both cores ---- */

typedef struct copy_arg {
    char *src, *dst;
    size_t bytes;
} copy_arg;

static void *copy_half(void *p) {
    copy_arg *a = p;
    memcpy(a->dst, a->src, a->bytes);
    return NULL;
}

static double run_memcpy(void *arg) {
    copy_arg *whole = arg;
    copy_arg halves[2] = {{whole->src, whole->dst, whole->bytes / 2},
                          {whole->src + whole->bytes / 2, whole->dst + whole->bytes / 2,
                           whole->bytes - whole->bytes / 2}};
    pthread_t t;
    const double t0 = now();
    pthread_create(&t, NULL, copy_half, &halves[1]);
    copy_half(&halves[0]);
    pthread_join(t, NULL);
    return now() - t0;
}

void bench_register_ep(void) {
    /* normal mode: upstream's H=7168, top-8, E=256 at 512 tokens per rank */
    add(OP_DISPATCH, "dispatch_bf16", 8, 512, 7168, 8, 256);
    add(OP_DISPATCH_FP8, "dispatch_fp8", 8, 512, 7168, 8, 256);
    add(OP_COMBINE, "combine_bf16", 8, 512, 7168, 8, 256);
    /* low latency: 128 tokens per rank, H=7168, top-8; E=32 so the masked
     * receive buffers [E/R][R*T][H] fit the VM */
    add(OP_LL_DISPATCH, "ll_dispatch_bf16", 4, 128, 7168, 8, 32);
    add(OP_LL_DISPATCH_FP8, "ll_dispatch_fp8", 4, 128, 7168, 8, 32);
    add(OP_LL_COMBINE, "ll_combine_bf16", 4, 128, 7168, 8, 32);
    atexit(teardown); /* the last case's threads and buffers */
    static copy_arg floor_arg;
    floor_arg.bytes = (size_t)256 << 20;
    floor_arg.src = malloc(floor_arg.bytes);
    floor_arg.dst = malloc(floor_arg.bytes);
    if (!floor_arg.src || !floor_arg.dst)
        return;
    memset(floor_arg.src, 1, floor_arg.bytes);
    memset(floor_arg.dst, 2, floor_arg.bytes);
    bench_spec floor = {.name = "ep/cpu_floor/memcpy_2threads_256MiB", .run = run_memcpy,
                        .arg = &floor_arg, .manual_time = 1, .bytes = (double)floor_arg.bytes,
                        .label = "floor: host memcpy, both cores (bytes copied)", .unit = "ms"};
    bench_register(&floor);
}
