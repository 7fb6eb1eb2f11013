/*
 * EP on the GPU: normal and low-latency dispatch / combine throughput with
 * virtual ranks (num_ranks ranks on ONE device, one cooperative launch per
 * step), counted as upstream counts it (DeepEP tests, reference part 4):
 *   normal dispatch / combine: bytes = bfloat16 bytes of the rows each rank
 *     receives (recv_x.numel() * 2, self traffic included), x (1 + 4/128) / 2
 *     for FP8 rows; combine moves the same rows back;
 *   low-latency dispatch: per selection H + H/128 * 4 + 16 bytes (FP8) or 2H
 *     (bf16); combine 2H per selection.
 * The rows report the sum over ranks (B/s: all ranks share the one GPU) and
 * the per-rank figure upstream prints (counter per_rank_GB/s). The ceiling is the
 * device's copy bandwidth measured in the same run (cudaMemcpy device to
 * device, bytes copied per second, row ep/virtual/ceiling). Time per
 * iteration = wall time of one collective call on every rank (host threads
 * released together, each rank's stream synchronised), host work included.
 * Only registered when a usable CUDA device exists.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <deepinfra.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if DINF_WITH_CUDA
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <time.h>

#define MAXR 8

typedef struct ep_case ep_case;

/* Persistent rank threads: run(fn) makes every rank call fn once. */
typedef struct pool {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int32_t R;
    uint64_t generation;
    int32_t done;
    int32_t failed;
    void (*fn)(ep_case *c, int32_t rank);
    ep_case *c;
    pthread_t threads[MAXR];
} pool;

struct ep_case {
    const char *name;
    int32_t R, H, K, E;
    int64_t N; /* tokens per rank (= T for low latency) */
    int mode;  /* 0 dispatch bf16, 1 dispatch fp8, 2 combine, 3 ll fp8, 4 ll bf16, 5 ll combine */
    int ready;
    pool pool;
    dinf_ep_group *groups[MAXR];
    cudaStream_t streams[MAXR];
    dinf_ep_handle *h[MAXR];
    dinf_ep_ll_handle *lh[MAXR];
    int64_t *topk[MAXR];
    float *w[MAXR];
    uint16_t *x[MAXR], *y[MAXR], *combined[MAXR];
    void *recv[MAXR];
    float *recv_s[MAXR];
    int32_t *count[MAXR];
    int64_t num_recv[MAXR];
    int64_t selections;
    int64_t *host_topk[MAXR]; /* generated at registration */
    double bytes;             /* upstream's bytes per iteration */
    char error[512];
};

static void *worker(void *arg) {
    void **a = arg;
    pool *p = a[0];
    const int32_t rank = (int32_t)(intptr_t)a[1];
    free(a);
    uint64_t seen = 0;
    cudaSetDevice(0);
    for (;;) {
        pthread_mutex_lock(&p->mutex);
        while (p->generation == seen)
            pthread_cond_wait(&p->cond, &p->mutex);
        seen = p->generation;
        void (*fn)(ep_case *, int32_t) = p->fn;
        ep_case *c = p->c;
        pthread_mutex_unlock(&p->mutex);
        if (!fn)
            return NULL;
        fn(c, rank);
        pthread_mutex_lock(&p->mutex);
        p->done++;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->mutex);
    }
}

static void pool_start(pool *p, int32_t R) {
    pthread_mutex_init(&p->mutex, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->R = R;
    for (int32_t r = 0; r < R; r++) {
        void **a = malloc(2 * sizeof(void *));
        a[0] = p;
        a[1] = (void *)(intptr_t)r;
        pthread_create(&p->threads[r], NULL, worker, a);
    }
}

static void pool_run(pool *p, ep_case *c, void (*fn)(ep_case *, int32_t)) {
    pthread_mutex_lock(&p->mutex);
    p->fn = fn;
    p->c = c;
    p->done = 0;
    p->generation++;
    pthread_cond_broadcast(&p->cond);
    while (p->done < p->R)
        pthread_cond_wait(&p->cond, &p->mutex);
    pthread_mutex_unlock(&p->mutex);
}

static void fail(ep_case *c, int32_t rank, const char *what, dinf_status st) {
    if (st == DINF_STATUS_OK)
        return;
    c->pool.failed = 1;
    snprintf(c->error, sizeof c->error, "rank %d %s: %s", (int)rank, what, dinf_last_error());
}

/* A CUDA call of the harness: a failure fails the case (never timed). */
static void cuda_ok(ep_case *c, int32_t rank, const char *what, cudaError_t err) {
    if (err == cudaSuccess)
        return;
    c->pool.failed = 1;
    snprintf(c->error, sizeof c->error, "rank %d %s: %s", (int)rank, what,
             cudaGetErrorString(err));
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Distinct random experts per token (the same on every run). */
static int64_t *make_topk(int32_t r, int64_t N, int32_t K, int32_t E) {
    uint64_t s = 1234 + (uint64_t)r;
    int64_t *topk = malloc((size_t)(N * K) * 8);
    for (int64_t t = 0; t < N; t++)
        for (int64_t k = 0; k < K; k++) {
            int64_t v;
            int dup;
            do {
                v = (int64_t)(rng_next(&s) % (uint64_t)E);
                dup = 0;
                for (int64_t j = 0; j < k; j++)
                    dup |= topk[t * K + j] == v;
            } while (dup);
            topk[t * K + k] = v;
        }
    return topk;
}

/* Inputs, routes and receive buffers of one rank (run once, on its thread). */
static void setup_rank(ep_case *c, int32_t r) {
    const int64_t N = c->N, K = c->K, H = c->H;
    const int32_t R = c->R, L = c->E / R;
    cuda_ok(c, r, "cudaStreamCreateWithFlags",
            cudaStreamCreateWithFlags(&c->streams[r], cudaStreamNonBlocking));
    dinf_exec e = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)c->streams[r]);
    uint64_t s = 99 + (uint64_t)r;
    const int64_t *topk = c->host_topk[r];
    float *w = malloc((size_t)(N * K) * 4);
    uint16_t *x = malloc((size_t)(N * H) * 2);
    for (int64_t i = 0; i < N * K; i++)
        w[i] = 0.125f;
    for (int64_t i = 0; i < N * H; i++)
        x[i] = (uint16_t)(0x3f80 + (rng_next(&s) & 0x7f)); /* [1, 2) */
    cuda_ok(c, r, "cudaMalloc", cudaMalloc((void **)&c->topk[r], (size_t)(N * K) * 8));
    cuda_ok(c, r, "cudaMalloc", cudaMalloc((void **)&c->w[r], (size_t)(N * K) * 4));
    cuda_ok(c, r, "cudaMalloc", cudaMalloc((void **)&c->x[r], (size_t)(N * H) * 2));
    cuda_ok(c, r, "cudaMalloc", cudaMalloc((void **)&c->combined[r], (size_t)(N * H) * 2));
    cuda_ok(c, r, "cudaMemcpy",
            cudaMemcpy(c->topk[r], topk, (size_t)(N * K) * 8, cudaMemcpyHostToDevice));
    cuda_ok(c, r, "cudaMemcpy",
            cudaMemcpy(c->w[r], w, (size_t)(N * K) * 4, cudaMemcpyHostToDevice));
    cuda_ok(c, r, "cudaMemcpy",
            cudaMemcpy(c->x[r], x, (size_t)(N * H) * 2, cudaMemcpyHostToDevice));
    free(w);
    free(x);
    dinf_ep_group *g = c->groups[r];
    if (c->mode <= 2) {
        fail(c, r, "handle", dinf_ep_handle_create(g, &c->h[r]));
        fail(c, r, "notify",
             dinf_ep_notify_dispatch(g, c->topk[r], N, (int32_t)K, c->E, NULL, NULL, NULL, 1,
                                     c->h[r], &c->num_recv[r], NULL, &e));
        const int64_t NR = c->num_recv[r];
        cuda_ok(c, r, "cudaMalloc", cudaMalloc(&c->recv[r], (size_t)(NR * H) * 2 + 16));
        cuda_ok(c, r, "cudaMalloc",
                cudaMalloc((void **)&c->recv_s[r], (size_t)(NR * (H / 128)) * 4 + 16));
        cuda_ok(c, r, "cudaMalloc", cudaMalloc((void **)&c->y[r], (size_t)(NR * H) * 2 + 16));
        cuda_ok(c, r, "cudaMemset", cudaMemset(c->y[r], 0x3c, (size_t)(NR * H) * 2 + 16));
    } else {
        const int64_t M = (int64_t)R * N;
        int64_t scale_rows = 0;
        dinf_ep_ll_scale_rows(R, N, &scale_rows);
        fail(c, r, "ll handle", dinf_ep_ll_handle_create(g, &c->lh[r]));
        cuda_ok(c, r, "cudaMalloc", cudaMalloc(&c->recv[r], (size_t)(L * M * H) * 2));
        cuda_ok(c, r, "cudaMalloc",
                cudaMalloc((void **)&c->recv_s[r], (size_t)(L * (H / 128) * scale_rows) * 4));
        cuda_ok(c, r, "cudaMalloc", cudaMalloc((void **)&c->count[r], (size_t)L * 4));
        cuda_ok(c, r, "cudaMalloc", cudaMalloc((void **)&c->y[r], (size_t)(L * M * H) * 2));
        cuda_ok(c, r, "cudaMemset", cudaMemset(c->y[r], 0x3c, (size_t)(L * M * H) * 2));
        /* one dispatch so that the combine has its handle */
        fail(c, r, "ll dispatch",
             dinf_ep_low_latency_dispatch(g, c->x[r], N, (int32_t)H, c->topk[r], (int32_t)K, c->E,
                                          N, 0, c->recv[r], NULL, c->count[r], NULL, NULL, c->lh[r],
                                          &e));
    }
    cuda_ok(c, r, "cudaStreamSynchronize", cudaStreamSynchronize(c->streams[r]));
}

static void step_rank(ep_case *c, int32_t r) {
    dinf_exec e = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)c->streams[r]);
    dinf_ep_group *g = c->groups[r];
    const int32_t H = c->H, K = c->K;
    const int64_t N = c->N;
    dinf_status st = DINF_STATUS_OK;
    switch (c->mode) {
    case 0: /* cached dispatch: the data movement of a dispatch */
        st = dinf_ep_dispatch(g, c->h[r], c->x[r], DINF_DTYPE_BFLOAT16, NULL, H, NULL, NULL,
                              DINF_DTYPE_BFLOAT16, c->recv[r], NULL, NULL, NULL, NULL,
                              c->num_recv[r], &e);
        break;
    case 1:
        st = dinf_ep_dispatch(g, c->h[r], c->x[r], DINF_DTYPE_BFLOAT16, NULL, H, NULL, NULL,
                              DINF_DTYPE_FP8_E4M3, c->recv[r], c->recv_s[r], NULL, NULL, NULL,
                              c->num_recv[r], &e);
        break;
    case 2:
        st = dinf_ep_combine(g, c->h[r], c->y[r], H, NULL, NULL, NULL, c->combined[r], NULL, &e);
        break;
    case 3:
    case 4:
        st = dinf_ep_low_latency_dispatch(g, c->x[r], N, H, c->topk[r], K, c->E, N, c->mode == 3,
                                          c->recv[r], c->mode == 3 ? c->recv_s[r] : NULL,
                                          c->count[r], NULL, NULL, c->lh[r], &e);
        break;
    default:
        st = dinf_ep_low_latency_combine(g, c->y[r], H, c->topk[r], c->w[r], N, K, c->lh[r],
                                         c->combined[r], &e);
        break;
    }
    fail(c, r, "step", st);
    cuda_ok(c, r, "cudaStreamSynchronize", cudaStreamSynchronize(c->streams[r]));
}

static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void teardown_rank(ep_case *c, int32_t r) {
    cudaStreamSynchronize(c->streams[r]);
    dinf_ep_handle_destroy(c->h[r]);
    dinf_ep_ll_handle_destroy(c->lh[r]);
    c->h[r] = NULL;
    c->lh[r] = NULL;
    void *ps[] = {c->topk[r], c->w[r], c->x[r], c->y[r], c->combined[r], c->recv[r],
                  c->recv_s[r], c->count[r]};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        if (ps[i])
            cudaFree(ps[i]);
    c->topk[r] = NULL;
    c->w[r] = NULL;
    c->x[r] = c->y[r] = c->combined[r] = NULL;
    c->recv[r] = NULL;
    c->recv_s[r] = NULL;
    c->count[r] = NULL;
    cudaStreamDestroy(c->streams[r]);
}

/* One case holds device memory at a time: the previous one is released
 * when another starts (the R = 8 cases need tens of GB each). */
static void release(ep_case *c) {
    pool_run(&c->pool, c, teardown_rank);
    for (int32_t r = 0; r < c->R; r++) {
        dinf_ep_group_destroy(c->groups[r]);
        c->groups[r] = NULL;
    }
    /* stop the workers */
    pthread_mutex_lock(&c->pool.mutex);
    c->pool.fn = NULL;
    c->pool.generation++;
    pthread_cond_broadcast(&c->pool.cond);
    pthread_mutex_unlock(&c->pool.mutex);
    for (int32_t r = 0; r < c->R; r++)
        pthread_join(c->pool.threads[r], NULL);
    pthread_mutex_destroy(&c->pool.mutex);
    pthread_cond_destroy(&c->pool.cond);
    memset(&c->pool, 0, sizeof c->pool);
    c->ready = 0;
}

static ep_case *active;

static double run_case(void *arg) {
    ep_case *c = arg;
    if (!c->ready) {
        if (active && active != c)
            release(active);
        active = NULL;
        dinf_ep_config cfg = DINF_EP_CONFIG_INIT;
        cfg.max_hidden = c->H;
        cfg.max_tokens_per_rank = c->N;
        cfg.max_topk = c->K;
        cfg.max_num_experts = c->E;
        if (dinf_ep_group_create_cuda_virtual(c->R, 0, &cfg, c->groups) != DINF_STATUS_OK) {
            bench_set_error(dinf_last_error());
            return -1;
        }
        pool_start(&c->pool, c->R);
        pool_run(&c->pool, c, setup_rank);
        if (c->pool.failed) {
            bench_set_error(c->error);
            return -1;
        }
        c->ready = 1;
        active = c;
    }
    if (c->pool.failed) {
        bench_set_error(c->error);
        return -1;
    }
    const double t0 = wall();
    pool_run(&c->pool, c, step_rank);
    const double t = wall() - t0;
    if (c->pool.failed) {
        bench_set_error(c->error);
        return -1;
    }
    const double bytes = c->bytes; /* upstream's count, summed over ranks */
    bench_set_counter("per_rank_GB/s", bytes / c->R / t / 1e9);
    return t;
}

typedef struct ceiling_case {
    void *src, *dst;
    size_t bytes;
    cudaEvent_t start, stop;
} ceiling_case;

static double run_ceiling(void *arg) {
    ceiling_case *c = arg;
    float ms = 0;
    cudaEventRecord(c->start, NULL);
    cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, NULL);
    cudaEventRecord(c->stop, NULL);
    cudaError_t err = cudaEventSynchronize(c->stop);
    if (err == cudaSuccess)
        err = cudaEventElapsedTime(&ms, c->start, c->stop);
    if (err != cudaSuccess) {
        bench_set_error(cudaGetErrorString(err));
        return -1;
    }
    return ms / 1e3;
}

static void add_case(const char *name, int32_t R, int32_t H, int32_t K, int32_t E, int64_t N,
                     int mode, const char *label) {
    if (!bench_selected(name))
        return;
    ep_case *c = calloc(1, sizeof *c);
    c->name = name;
    c->R = R;
    c->H = H;
    c->K = K;
    c->E = E;
    c->N = N;
    c->mode = mode;
    c->selections = (int64_t)R * N * K; /* distinct ids: every slot selects an expert */
    double recv_rows = 0; /* tokens each rank receives: once per destination rank */
    const int32_t L = E / R;
    for (int32_t r = 0; r < R; r++) {
        c->host_topk[r] = make_topk(r, N, K, E);
        for (int64_t t = 0; t < N; t++)
            for (int32_t d = 0; d < R; d++) {
                int hit = 0;
                for (int32_t k = 0; k < K; k++)
                    hit |= c->host_topk[r][t * K + k] / L == d;
                recv_rows += hit;
            }
    }
    if (mode <= 2)
        c->bytes = recv_rows * H * 2 * (mode == 1 ? (1 + 4.0 / 128) / 2 : 1.0);
    else
        c->bytes = (double)c->selections * (mode == 3 ? H + H / 128 * 4 + 16 : 2.0 * H);
    bench_spec spec = {.name = name, .run = run_case, .arg = c, .manual_time = 1,
                       .bytes = c->bytes, .label = label, .unit = "us"};
    bench_register(&spec);
}

void bench_register_ep_gpu(void) {
    ceiling_case *cc = calloc(1, sizeof *cc);
    cc->bytes = (size_t)1 << 30;
    if (cc && bench_selected("ep/virtual/ceiling/d2d_copy_1GiB") &&
        cudaMalloc(&cc->src, cc->bytes) == cudaSuccess &&
        cudaMalloc(&cc->dst, cc->bytes) == cudaSuccess &&
        cudaEventCreate(&cc->start) == cudaSuccess && cudaEventCreate(&cc->stop) == cudaSuccess) {
        cudaMemset(cc->src, 1, cc->bytes);
        bench_spec spec = {.name = "ep/virtual/ceiling/d2d_copy_1GiB", .run = run_ceiling,
                           .arg = cc, .manual_time = 1, .bytes = (double)cc->bytes,
                           .label = "ceiling: device copy, bytes copied per second"};
        bench_register(&spec);
    }
    const char *normal = "upstream bytes: recv rows x 2H (sum over ranks); peer: DeepEP "
                         "intranode 153 GB/s per rank (H800 NVLink)";
    add_case("ep/virtual/R8/dispatch_bf16_cached/N4096_H7168_K8_E64", 8, 7168, 8, 64, 4096, 0,
             normal);
    add_case("ep/virtual/R8/dispatch_fp8_cached/N4096_H7168_K8_E64", 8, 7168, 8, 64, 4096, 1,
             normal);
    add_case("ep/virtual/R8/combine_bf16/N4096_H7168_K8_E64", 8, 7168, 8, 64, 4096, 2, normal);
    add_case("ep/virtual/R2/dispatch_bf16_cached/N4096_H7168_K8_E16", 2, 7168, 8, 16, 4096, 0,
             normal);
    add_case("ep/virtual/R2/combine_bf16/N4096_H7168_K8_E16", 2, 7168, 8, 16, 4096, 2, normal);
    const char *ll = "upstream bytes per selection (FP8 H+H/128*4+16, bf16 2H)";
    add_case("ep/virtual/R8/ll_dispatch_fp8/T128_H7168_K8_E288", 8, 7168, 8, 288, 128, 3, ll);
    add_case("ep/virtual/R8/ll_dispatch_bf16/T128_H7168_K8_E288", 8, 7168, 8, 288, 128, 4, ll);
    add_case("ep/virtual/R8/ll_combine_bf16/T128_H7168_K8_E288", 8, 7168, 8, 288, 128, 5, ll);
}
#else
void bench_register_ep_gpu(void) {}
#endif
