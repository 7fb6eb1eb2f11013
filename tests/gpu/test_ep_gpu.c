/*
 * GPU tests of ep: every GPU transport against the CPU oracle (the threads
 * transport on the same inputs), bitwise. One scenario per rank runs the
 * layout, notify, normal dispatch (bf16, FP8 quantized on the send side,
 * FP8 pre-quantized, cached), combine (weights, two biases), and the
 * low-latency dispatch (bf16 and FP8, M-major scales) and combine; every
 * output is compared byte for byte (rows past the valid counts excluded).
 *   - virtual ranks R = 1, 2, 4, 8 on one GPU (one cooperative launch per step)
 *   - CUDA IPC with one rank (the peer-store path through the IPC constructor)
 *   - NCCL with a single-rank communicator (dlopen'd NCCL; skipped without it)
 *   - timeouts and mismatched calls return errors, never hang
 *   - the CUDA layout and its rejection of invalid expert ids
 * Skipped, visibly, without a usable device; a failure under
 * DINF_REQUIRE_GPU=1 (tools/gpu-check).
 */
#define _POSIX_C_SOURCE 200809L
#include <deepinfra.h>

#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

static void require_gpu(void) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    if (dinf_device_query(0, &info) != DINF_STATUS_OK || !info.usable) {
        const char *require = getenv("DINF_REQUIRE_GPU");
        if (require && strcmp(require, "1") == 0)
            cr_assert_fail("DINF_REQUIRE_GPU=1 but no usable CUDA device: %s", info.reason);
        cr_skip_test("no usable CUDA device: %s", info.reason);
    }
}

TestSuite(ep_gpu, .init = require_gpu, .timeout = 300.0);

#if DINF_WITH_CUDA && defined(__has_include) && __has_include(<cuda_runtime_api.h>)
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "ep/ep_nccl.h"

#define MAXR 8

typedef struct scen {
    int32_t R, H, K, E;
    int64_t T;
    int64_t N[MAXR];
    uint64_t seed;
} scen;

typedef struct inputs {
    int64_t *topk;
    float *w;
    uint16_t *x, *x2, *b0, *b1;
    uint8_t *xq;
    float *xs;
} inputs;

typedef struct outputs {
    int32_t per_rank[MAXR];
    int32_t *per_expert;
    uint8_t *in_rank;
    int64_t num_recv;
    int32_t *expert_list;
    int32_t rpm[MAXR * MAXR];
    uint16_t *recv_x, *recv_x2, *combined;
    int64_t *recv_topk;
    float *recv_w, *combined_w;
    int32_t *recv_src;
    uint8_t *recv_q, *recv_q2;
    float *recv_s, *recv_s2;
    int32_t *ll_count, *ll_src, *ll8_count, *ll8_src;
    int64_t *ll_range;
    uint16_t *ll_x, *ll_combined;
    uint8_t *ll8_q;
    float *ll8_s;
    dinf_status status;
    char where[64];
    char message[1100];
} outputs;

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}
static float rng_uniform(uint64_t *s) { return (float)(rng_next(s) >> 40) / (float)(1u << 24); }

static uint16_t bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static void make_inputs(const scen *sc, int32_t r, inputs *in) {
    const int64_t N = sc->N[r], K = sc->K, H = sc->H;
    uint64_t s = sc->seed * 1000003u + (uint64_t)r * 7919u + 1;
    in->topk = malloc((size_t)(N * K + 1) * 8);
    in->w = malloc((size_t)(N * K + 1) * 4);
    in->x = malloc((size_t)(N * H + 1) * 2);
    in->x2 = malloc((size_t)(N * H + 1) * 2);
    in->b0 = malloc((size_t)(N * H + 1) * 2);
    in->b1 = malloc((size_t)(N * H + 1) * 2);
    in->xq = malloc((size_t)(N * H + 1));
    in->xs = malloc((size_t)(N * (H / 128) + 1) * 4);
    for (int64_t t = 0; t < N; t++) {
        int64_t *row = in->topk + t * K;
        for (int64_t k = 0; k < K; k++) {
            int64_t e;
            int dup;
            do { /* distinct experts per token */
                e = (int64_t)(rng_next(&s) % (uint64_t)sc->E);
                dup = 0;
                for (int64_t j = 0; j < k; j++)
                    dup |= row[j] == e;
            } while (dup);
            row[k] = e;
        }
        for (int64_t k = 0; k < K; k++) {
            if (rng_next(&s) % 7 == 0)
                row[k] = -1;
            in->w[t * K + k] = rng_uniform(&s) + 0.05f;
        }
    }
    for (int64_t i = 0; i < N * H; i++) {
        in->x[i] = bf16_of((rng_uniform(&s) * 2 - 1) * (float)(1 + rng_next(&s) % 9));
        in->x2[i] = bf16_of(rng_uniform(&s) * 2 - 1);
        in->b0[i] = bf16_of((rng_uniform(&s) * 2 - 1) * 0.25f);
        in->b1[i] = bf16_of((rng_uniform(&s) * 2 - 1) * 0.125f);
    }
    if (N > 0)
        cr_assert_eq(dinf_fp8_quantize(in->x2, DINF_DTYPE_BFLOAT16, N, H, H, 1, in->xq, H, in->xs,
                                       NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
}

static void free_inputs(inputs *in) {
    free(in->topk);
    free(in->w);
    free(in->x);
    free(in->x2);
    free(in->b0);
    free(in->b1);
    free(in->xq);
    free(in->xs);
}

/* ---- one rank's run, in host memory (threads) or device memory ---- */

typedef struct job {
    const scen *sc;
    int32_t rank;
    dinf_ep_group *group;
    int device; /* 0: host memory, CPU exec; 1: device memory, CUDA exec */
    const inputs *in;
    outputs *out;
    cudaStream_t stream;
    void *allocs[64];
    int num_allocs;
} job;

static void *mem_keep(job *j, void *p) {
    if (j->num_allocs < 64)
        j->allocs[j->num_allocs++] = p;
    return p;
}

static void *mem_out(job *j, size_t n) {
    void *p = NULL;
    if (j->device) {
        if (cudaMalloc(&p, n ? n : 1) != cudaSuccess)
            return NULL;
        cudaMemset(p, 0xa5, n ? n : 1);
        cudaDeviceSynchronize();
    } else {
        p = malloc(n ? n : 1);
        memset(p, 0xa5, n ? n : 1);
    }
    return mem_keep(j, p);
}

static void *mem_in(job *j, const void *h, size_t n) {
    void *p = mem_out(j, n);
    if (p && n) {
        if (j->device)
            cudaMemcpy(p, h, n, cudaMemcpyHostToDevice);
        else
            memcpy(p, h, n);
    }
    return p;
}

/* A host copy of n bytes of p (after the rank's stream has finished). */
static void *mem_get(job *j, const void *p, size_t n) {
    void *h = malloc(n ? n : 1);
    memset(h, 0x5a, n ? n : 1);
    if (n && p) {
        if (j->device) {
            cudaStreamSynchronize(j->stream);
            cudaMemcpy(h, p, n, cudaMemcpyDeviceToHost);
        } else {
            memcpy(h, p, n);
        }
    }
    return h;
}

#define STEP(what, call)                                                                           \
    do {                                                                                           \
        dinf_status st_ = (call);                                                                  \
        if (st_ != DINF_STATUS_OK) {                                                               \
            o->status = st_;                                                                       \
            snprintf(o->where, sizeof o->where, "%s", what);                                       \
            snprintf(o->message, sizeof o->message, "%s", dinf_last_error());                      \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static void run_rank(job *j) {
    const scen *sc = j->sc;
    const inputs *in = j->in;
    outputs *o = j->out;
    const int32_t R = sc->R, K = sc->K, E = sc->E, H = sc->H, L = E / R, KB = H / 128;
    const int64_t N = sc->N[j->rank], T = sc->T, M = (int64_t)R * T;
    int64_t scale_rows = 0;
    dinf_ep_ll_scale_rows(R, T, &scale_rows);
    dinf_exec cpu = DINF_EXEC_CPU_INIT;
    dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)j->stream);
    const dinf_exec *exec = j->device ? &cuda : &cpu;
    dinf_ep_group *g = j->group;

    const int64_t *topk = mem_in(j, in->topk, (size_t)(N * K) * 8);
    const float *w = mem_in(j, in->w, (size_t)(N * K) * 4);
    const uint16_t *x = mem_in(j, in->x, (size_t)(N * H) * 2);
    const uint16_t *x2 = mem_in(j, in->x2, (size_t)(N * H) * 2);
    const uint16_t *b0 = mem_in(j, in->b0, (size_t)(N * H) * 2);
    const uint16_t *b1 = mem_in(j, in->b1, (size_t)(N * H) * 2);
    const uint8_t *xq = mem_in(j, in->xq, (size_t)(N * H));
    const float *xs = mem_in(j, in->xs, (size_t)(N * KB) * 4);

    /* layout */
    int32_t *per_rank = mem_out(j, (size_t)R * 4), *per_expert = mem_out(j, (size_t)E * 4);
    uint8_t *in_rank = mem_out(j, (size_t)(N * R));
    STEP("layout", dinf_ep_get_dispatch_layout(topk, N, K, E, R, per_rank, per_expert, in_rank,
                                               exec));
    int32_t *h32 = mem_get(j, per_rank, (size_t)R * 4);
    memcpy(o->per_rank, h32, (size_t)R * 4);
    free(h32);
    o->per_expert = mem_get(j, per_expert, (size_t)E * 4);
    o->in_rank = mem_get(j, in_rank, (size_t)(N * R));

    /* notify + dispatch (bf16, top-k, weights, source index) */
    dinf_ep_handle *h = NULL;
    STEP("handle", dinf_ep_handle_create(g, &h));
    o->expert_list = malloc((size_t)L * 4);
    STEP("notify", dinf_ep_notify_dispatch(g, topk, N, K, E, per_rank, per_expert, in_rank, 4, h,
                                           &o->num_recv, o->expert_list, exec));
    STEP("handle_info", dinf_ep_handle_info(h, NULL, NULL, NULL, NULL, o->rpm, NULL));
    const int64_t NR = o->num_recv;
    uint16_t *recv_x = mem_out(j, (size_t)(NR * H) * 2);
    int64_t *recv_topk = mem_out(j, (size_t)(NR * K) * 8);
    float *recv_w = mem_out(j, (size_t)(NR * K) * 4);
    int32_t *recv_src = mem_out(j, (size_t)NR * 4);
    STEP("dispatch", dinf_ep_dispatch(g, h, x, DINF_DTYPE_BFLOAT16, NULL, H, topk, w,
                                      DINF_DTYPE_BFLOAT16, recv_x, NULL, recv_topk, recv_w,
                                      recv_src, NR, exec));
    o->recv_x = mem_get(j, recv_x, (size_t)(NR * H) * 2);
    o->recv_topk = mem_get(j, recv_topk, (size_t)(NR * K) * 8);
    o->recv_w = mem_get(j, recv_w, (size_t)(NR * K) * 4);
    o->recv_src = mem_get(j, recv_src, (size_t)NR * 4);

    /* combine: the received rows come back (with weights and two biases) */
    uint16_t *combined = mem_out(j, (size_t)(N * H) * 2);
    float *combined_w = mem_out(j, (size_t)(N * K) * 4);
    STEP("combine",
         dinf_ep_combine(g, h, recv_x, H, recv_w, b0, b1, combined, combined_w, exec));
    o->combined = mem_get(j, combined, (size_t)(N * H) * 2);
    o->combined_w = mem_get(j, combined_w, (size_t)(N * K) * 4);

    /* cached dispatch of other data along the same routes */
    uint16_t *recv_x2 = mem_out(j, (size_t)(NR * H) * 2);
    STEP("cached dispatch", dinf_ep_dispatch(g, h, x2, DINF_DTYPE_BFLOAT16, NULL, H, NULL, NULL,
                                             DINF_DTYPE_BFLOAT16, recv_x2, NULL, NULL, NULL, NULL,
                                             NR, exec));
    o->recv_x2 = mem_get(j, recv_x2, (size_t)(NR * H) * 2);

    /* FP8: quantized on the send side, then pre-quantized e4m3 (cached) */
    uint8_t *recv_q = mem_out(j, (size_t)(NR * H));
    float *recv_s = mem_out(j, (size_t)(NR * KB) * 4);
    int64_t *recv_topk8 = mem_out(j, (size_t)(NR * K) * 8);
    STEP("fp8 dispatch", dinf_ep_dispatch(g, h, x, DINF_DTYPE_BFLOAT16, NULL, H, topk, NULL,
                                          DINF_DTYPE_FP8_E4M3, recv_q, recv_s, recv_topk8, NULL,
                                          NULL, NR, exec));
    o->recv_q = mem_get(j, recv_q, (size_t)(NR * H));
    o->recv_s = mem_get(j, recv_s, (size_t)(NR * KB) * 4);
    uint8_t *recv_q2 = mem_out(j, (size_t)(NR * H));
    float *recv_s2 = mem_out(j, (size_t)(NR * KB) * 4);
    STEP("e4m3 cached dispatch",
         dinf_ep_dispatch(g, h, xq, DINF_DTYPE_FP8_E4M3, xs, H, NULL, NULL, DINF_DTYPE_FP8_E4M3,
                          recv_q2, recv_s2, NULL, NULL, NULL, NR, exec));
    o->recv_q2 = mem_get(j, recv_q2, (size_t)(NR * H));
    o->recv_s2 = mem_get(j, recv_s2, (size_t)(NR * KB) * 4);
    dinf_ep_handle_destroy(h);

    /* low latency, bf16, then its combine */
    dinf_ep_ll_handle *lh = NULL;
    STEP("ll handle", dinf_ep_ll_handle_create(g, &lh));
    uint16_t *ll_x = mem_out(j, (size_t)(L * M * H) * 2);
    int32_t *ll_count = mem_out(j, (size_t)L * 4), *ll_src = mem_out(j, (size_t)(L * M) * 4);
    int64_t *ll_range = mem_out(j, (size_t)(L * R) * 8);
    STEP("ll dispatch", dinf_ep_low_latency_dispatch(g, x, N, H, topk, K, E, T, 0, ll_x, NULL,
                                                     ll_count, ll_src, ll_range, lh, exec));
    o->ll_x = mem_get(j, ll_x, (size_t)(L * M * H) * 2);
    o->ll_count = mem_get(j, ll_count, (size_t)L * 4);
    o->ll_src = mem_get(j, ll_src, (size_t)(L * M) * 4);
    o->ll_range = mem_get(j, ll_range, (size_t)(L * R) * 8);
    uint16_t *ll_combined = mem_out(j, (size_t)(N * H) * 2);
    STEP("ll combine",
         dinf_ep_low_latency_combine(g, ll_x, H, topk, w, N, K, lh, ll_combined, exec));
    o->ll_combined = mem_get(j, ll_combined, (size_t)(N * H) * 2);

    /* low latency, FP8 */
    uint8_t *ll8_q = mem_out(j, (size_t)(L * M * H));
    float *ll8_s = mem_out(j, (size_t)(L * KB * scale_rows) * 4);
    int32_t *ll8_count = mem_out(j, (size_t)L * 4), *ll8_src = mem_out(j, (size_t)(L * M) * 4);
    STEP("ll fp8 dispatch", dinf_ep_low_latency_dispatch(g, x, N, H, topk, K, E, T, 1, ll8_q,
                                                         ll8_s, ll8_count, ll8_src, NULL, lh,
                                                         exec));
    o->ll8_q = mem_get(j, ll8_q, (size_t)(L * M * H));
    o->ll8_s = mem_get(j, ll8_s, (size_t)(L * KB * scale_rows) * 4);
    o->ll8_count = mem_get(j, ll8_count, (size_t)L * 4);
    o->ll8_src = mem_get(j, ll8_src, (size_t)(L * M) * 4);
    dinf_ep_ll_handle_destroy(lh);
    o->status = DINF_STATUS_OK;
}

static void *rank_thread(void *arg) {
    job *j = arg;
    if (j->device) {
        cudaSetDevice(0);
        cudaStreamCreateWithFlags(&j->stream, cudaStreamNonBlocking);
    }
    j->out->status = DINF_STATUS_INTERNAL;
    snprintf(j->out->where, sizeof j->out->where, "start");
    j->out->message[0] = 0;
    run_rank(j);
    if (j->device)
        cudaStreamSynchronize(j->stream);
    for (int i = 0; i < j->num_allocs; i++) {
        if (j->device)
            cudaFree(j->allocs[i]);
        else
            free(j->allocs[i]);
    }
    if (j->device)
        cudaStreamDestroy(j->stream);
    return NULL;
}

static void run_all(const scen *sc, dinf_ep_group **groups, int device, const inputs *in,
                    outputs *out) {
    pthread_t threads[MAXR];
    job jobs[MAXR];
    memset(jobs, 0, sizeof jobs);
    for (int32_t r = 0; r < sc->R; r++) {
        jobs[r] = (job){sc, r, groups[r], device, &in[r], &out[r], NULL, {0}, 0};
        cr_assert_eq(pthread_create(&threads[r], NULL, rank_thread, &jobs[r]), 0);
    }
    for (int32_t r = 0; r < sc->R; r++)
        pthread_join(threads[r], NULL);
    for (int32_t r = 0; r < sc->R; r++)
        cr_assert_eq(out[r].status, DINF_STATUS_OK, "%s rank %d failed at %s: %s",
                     device ? "GPU" : "oracle", (int)r, out[r].where, out[r].message);
}

static void free_outputs(outputs *o) {
    void *ps[] = {o->per_expert, o->in_rank, o->expert_list, o->recv_x, o->recv_x2,
                  o->combined, o->recv_topk, o->recv_w, o->combined_w, o->recv_src,
                  o->recv_q, o->recv_q2, o->recv_s, o->recv_s2, o->ll_count, o->ll_src,
                  o->ll8_count, o->ll8_src, o->ll_range, o->ll_x, o->ll_combined,
                  o->ll8_q, o->ll8_s};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        free(ps[i]);
}

#define SAME(what, a, b, bytes)                                                                    \
    cr_assert(memcmp((a), (b), (bytes)) == 0, "%s rank %d: %s differs from the oracle", label,    \
              (int)r, what)

static void compare(const char *label, const scen *sc, const outputs *ref, const outputs *got) {
    const int32_t R = sc->R, K = sc->K, E = sc->E, H = sc->H, L = E / R, KB = H / 128;
    const int64_t T = sc->T, M = (int64_t)R * T;
    int64_t scale_rows = 0;
    dinf_ep_ll_scale_rows(R, T, &scale_rows);
    for (int32_t r = 0; r < R; r++) {
        const outputs *a = &ref[r], *b = &got[r];
        const int64_t N = sc->N[r];
        SAME("num_tokens_per_rank", a->per_rank, b->per_rank, (size_t)R * 4);
        SAME("num_tokens_per_expert", a->per_expert, b->per_expert, (size_t)E * 4);
        SAME("is_token_in_rank", a->in_rank, b->in_rank, (size_t)(N * R));
        cr_assert_eq(a->num_recv, b->num_recv, "%s rank %d: num_recv %lld vs %lld", label, (int)r,
                     (long long)a->num_recv, (long long)b->num_recv);
        const int64_t NR = a->num_recv;
        SAME("num_recv_tokens_per_expert", a->expert_list, b->expert_list, (size_t)L * 4);
        SAME("rank_prefix_matrix", a->rpm, b->rpm, (size_t)R * R * 4);
        SAME("recv_x", a->recv_x, b->recv_x, (size_t)(NR * H) * 2);
        SAME("recv_topk_idx", a->recv_topk, b->recv_topk, (size_t)(NR * K) * 8);
        SAME("recv_topk_weights", a->recv_w, b->recv_w, (size_t)(NR * K) * 4);
        SAME("recv_src_idx", a->recv_src, b->recv_src, (size_t)NR * 4);
        SAME("combined_x", a->combined, b->combined, (size_t)(N * H) * 2);
        SAME("combined_topk_weights", a->combined_w, b->combined_w, (size_t)(N * K) * 4);
        SAME("cached recv_x", a->recv_x2, b->recv_x2, (size_t)(NR * H) * 2);
        SAME("fp8 recv_x", a->recv_q, b->recv_q, (size_t)(NR * H));
        SAME("fp8 recv_x_scales", a->recv_s, b->recv_s, (size_t)(NR * KB) * 4);
        SAME("e4m3 cached recv_x", a->recv_q2, b->recv_q2, (size_t)(NR * H));
        SAME("e4m3 cached recv_x_scales", a->recv_s2, b->recv_s2, (size_t)(NR * KB) * 4);
        SAME("ll recv_count", a->ll_count, b->ll_count, (size_t)L * 4);
        SAME("ll layout_range", a->ll_range, b->ll_range, (size_t)(L * R) * 8);
        SAME("ll fp8 recv_count", a->ll8_count, b->ll8_count, (size_t)L * 4);
        for (int32_t l = 0; l < L; l++) {
            const int64_t n = a->ll_count[l], row = (int64_t)l * M;
            cr_assert_leq(n, M);
            SAME("ll recv_x", a->ll_x + row * H, b->ll_x + row * H, (size_t)(n * H) * 2);
            SAME("ll recv_src_info", a->ll_src + row, b->ll_src + row, (size_t)n * 4);
            SAME("ll fp8 recv_x", a->ll8_q + row * H, b->ll8_q + row * H, (size_t)(n * H));
            SAME("ll fp8 recv_src_info", a->ll8_src + row, b->ll8_src + row, (size_t)n * 4);
            for (int32_t kb = 0; kb < KB; kb++) {
                const int64_t at = ((int64_t)l * KB + kb) * scale_rows;
                SAME("ll fp8 recv_x_scales", a->ll8_s + at, b->ll8_s + at, (size_t)n * 4);
            }
        }
        SAME("ll combined_x", a->ll_combined, b->ll_combined, (size_t)(N * H) * 2);
        (void)T;
    }
}

static dinf_ep_config config_for(const scen *sc) {
    dinf_ep_config c = DINF_EP_CONFIG_INIT;
    c.max_hidden = sc->H;
    c.max_tokens_per_rank = sc->T;
    c.max_topk = sc->K;
    c.max_num_experts = sc->E;
    c.timeout_ms = 20000;
    return c;
}

/* The oracle's outputs for sc (threads transport). */
static void run_oracle(const scen *sc, const inputs *in, outputs *ref) {
    dinf_ep_config c = config_for(sc);
    dinf_ep_group *groups[MAXR];
    cr_assert_eq(dinf_ep_group_create_threads(sc->R, &c, groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    run_all(sc, groups, 0, in, ref);
    for (int32_t r = 0; r < sc->R; r++)
        dinf_ep_group_destroy(groups[r]);
}

static void check_against_oracle(const char *label, const scen *sc, dinf_ep_group **groups) {
    inputs in[MAXR];
    outputs ref[MAXR], got[MAXR];
    memset(ref, 0, sizeof ref);
    memset(got, 0, sizeof got);
    for (int32_t r = 0; r < sc->R; r++)
        make_inputs(sc, r, &in[r]);
    run_oracle(sc, in, ref);
    run_all(sc, groups, 1, in, got);
    compare(label, sc, ref, got);
    int64_t total = 0;
    for (int32_t r = 0; r < sc->R; r++)
        total += ref[r].num_recv;
    cr_assert_gt(total, 0, "%s: nothing was dispatched (a test that cannot fail)", label);
    for (int32_t r = 0; r < sc->R; r++) {
        free_outputs(&ref[r]);
        free_outputs(&got[r]);
        free_inputs(&in[r]);
    }
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

static void virtual_case(int32_t R, int32_t H, int32_t K, int32_t E, int64_t T, uint64_t seed) {
    scen sc = {R, H, K, E, T, {0}, seed};
    for (int32_t r = 0; r < R; r++)
        sc.N[r] = T - (int64_t)((r * 37 + 5) % (T / 2 + 1));
    if (R >= 4)
        sc.N[2] = 0; /* a rank with no tokens */
    dinf_ep_config c = config_for(&sc);
    dinf_ep_group *groups[MAXR];
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(R, 0, &c, groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    int32_t rank = -1, num_ranks = 0, memory = -1, device = -1;
    dinf_ep_group_info(groups[R - 1], &rank, &num_ranks, &memory, &device);
    cr_assert_eq(rank, R - 1);
    cr_assert_eq(num_ranks, R);
    cr_assert_eq(memory, DINF_EP_MEMORY_DEVICE);
    cr_assert_eq(device, 0);
    char label[64];
    snprintf(label, sizeof label, "virtual R=%d H=%d K=%d E=%d T=%lld", (int)R, (int)H, (int)K,
             (int)E, (long long)T);
    check_against_oracle(label, &sc, groups);
    /* twice on the same groups: the flags and slots of the next steps */
    sc.seed = seed + 1;
    check_against_oracle(label, &sc, groups);
    for (int32_t r = 0; r < R; r++)
        dinf_ep_group_destroy(groups[r]);
}

Test(ep_gpu, virtual_one_rank_matches_the_oracle) { virtual_case(1, 256, 4, 8, 48, 1); }
Test(ep_gpu, virtual_two_ranks_match_the_oracle) { virtual_case(2, 384, 4, 16, 64, 2); }
Test(ep_gpu, virtual_four_ranks_match_the_oracle) { virtual_case(4, 256, 6, 32, 96, 3); }
Test(ep_gpu, virtual_eight_ranks_match_the_oracle) { virtual_case(8, 512, 8, 64, 128, 4); }
Test(ep_gpu, virtual_eight_ranks_deepseek_hidden) { virtual_case(8, 7168, 8, 64, 32, 5); }

static int copy_gather(void *ctx, const void *in, void *out, size_t bytes) {
    (void)ctx;
    memcpy(out, in, bytes);
    return 0;
}

Test(ep_gpu, cuda_ipc_single_rank_matches_the_oracle) {
    scen sc = {1, 256, 4, 8, 64, {50}, 9};
    dinf_ep_config c = config_for(&sc);
    dinf_ep_group *g = NULL;
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 1, 0, &c, copy_gather, NULL, &g),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    check_against_oracle("cuda-ipc R=1", &sc, &g);
    cr_assert_eq(dinf_ep_group_barrier(g), DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_ep_group_destroy(g);
}

Test(ep_gpu, nccl_single_rank_communicator_matches_the_oracle) {
    const dinf__nccl_api *nccl = NULL;
    if (dinf__nccl("test", &nccl) != DINF_STATUS_OK)
        cr_skip_test("NCCL is not loadable: %s", dinf_last_error());
    cr_assert_eq(cudaSetDevice(0), cudaSuccess);
    dinf__nccl_unique_id id;
    cr_assert_eq(nccl->get_unique_id(&id), 0);
    void *comm = NULL;
    const int rc = nccl->comm_init_rank(&comm, 1, id, 0);
    cr_assert_eq(rc, 0, "ncclCommInitRank(nranks=1): %s", nccl->get_error_string(rc));
    scen sc = {1, 256, 4, 8, 64, {41}, 11};
    dinf_ep_config c = config_for(&sc);
    dinf_ep_group *g = NULL;
    cr_assert_eq(dinf_ep_group_create_nccl(comm, 0, &c, &g), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    check_against_oracle("nccl R=1", &sc, &g);
    cr_assert_eq(dinf_ep_group_barrier(g), DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_ep_group_destroy(g);
    dinf_ep_group *bad = NULL;
    /* another device than the communicator's (or one that does not exist) */
    cr_assert_neq(dinf_ep_group_create_nccl(comm, 1, &c, &bad), DINF_STATUS_OK);
    cr_assert_null(bad);
    nccl->comm_destroy(comm);
}

/* ---- timeouts and mismatched calls ---- */

typedef struct late_job {
    dinf_ep_group *group;
    int op;          /* 0: barrier, 1: notify, 2: nothing */
    int delay_ms;
    int64_t bad_id;  /* op 1: nonzero puts this id at topk_idx[1][2] */
    dinf_status status;
    double seconds;
    char message[1100];
} late_job;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *late_thread(void *arg) {
    late_job *j = arg;
    cudaSetDevice(0);
    if (j->delay_ms) {
        struct timespec ts = {j->delay_ms / 1000, (long)(j->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    const double t0 = now_s();
    j->status = DINF_STATUS_OK;
    if (j->op == 0) {
        j->status = dinf_ep_group_barrier(j->group);
    } else if (j->op == 1) {
        dinf_ep_handle *h = NULL;
        dinf_ep_handle_create(j->group, &h);
        int64_t *topk = NULL;
        cudaMalloc((void **)&topk, 64);
        cudaMemset(topk, 0, 64);
        if (j->bad_id)
            cudaMemcpy(topk + 6, &j->bad_id, 8, cudaMemcpyHostToDevice);
        dinf_exec e = DINF_EXEC_CUDA_INIT(0, NULL);
        j->status = dinf_ep_notify_dispatch(j->group, topk, 2, 4, 8, NULL, NULL, NULL, 1, h, NULL,
                                            NULL, &e);
        cudaFree(topk);
        dinf_ep_handle_destroy(h);
    }
    j->seconds = now_s() - t0;
    snprintf(j->message, sizeof j->message, "%s", dinf_last_error());
    return NULL;
}

static void run_pair(dinf_ep_group **groups, late_job *jobs) {
    pthread_t t[2];
    for (int r = 0; r < 2; r++) {
        jobs[r].group = groups[r];
        pthread_create(&t[r], NULL, late_thread, &jobs[r]);
    }
    for (int r = 0; r < 2; r++)
        pthread_join(t[r], NULL);
}

Test(ep_gpu, a_missing_rank_times_out_and_breaks_the_group) {
    dinf_ep_config c = DINF_EP_CONFIG_INIT;
    c.max_hidden = 256;
    c.max_tokens_per_rank = 16;
    c.max_topk = 4;
    c.max_num_experts = 8;
    c.timeout_ms = 300;
    dinf_ep_group *groups[2];
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, &c, groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    late_job jobs[2] = {{.op = 0}, {.op = 2}};
    run_pair(groups, jobs);
    cr_assert_eq(jobs[0].status, DINF_STATUS_TIMEOUT, "%s", jobs[0].message);
    cr_assert(strstr(jobs[0].message, "[1]"), "%s", jobs[0].message);
    cr_assert_lt(jobs[0].seconds, 10.0);
    /* the late rank finds the group broken at once */
    late_job again[2] = {{.op = 2}, {.op = 0}};
    run_pair(groups, again);
    cr_assert_eq(again[1].status, DINF_STATUS_TIMEOUT, "%s", again[1].message);
    cr_assert(strstr(again[1].message, "broken"), "%s", again[1].message);
    cr_assert_lt(again[1].seconds, 1.0);
    dinf_ep_group_destroy(groups[0]);
    dinf_ep_group_destroy(groups[1]);
}

Test(ep_gpu, mismatched_calls_fail_on_every_rank) {
    dinf_ep_config c = DINF_EP_CONFIG_INIT;
    c.max_hidden = 256;
    c.max_tokens_per_rank = 16;
    c.max_topk = 4;
    c.max_num_experts = 8;
    c.timeout_ms = 2000;
    dinf_ep_group *groups[2];
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, &c, groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    late_job jobs[2] = {{.op = 1}, {.op = 0}};
    run_pair(groups, jobs);
    for (int r = 0; r < 2; r++) {
        cr_assert_neq(jobs[r].status, DINF_STATUS_OK, "rank %d succeeded", r);
        cr_assert_lt(jobs[r].seconds, 10.0);
    }
    cr_assert(strstr(jobs[0].message, "mismatched") || strstr(jobs[1].message, "mismatched"),
              "%s | %s", jobs[0].message, jobs[1].message);
    dinf_ep_group_destroy(groups[0]);
    dinf_ep_group_destroy(groups[1]);
}

/* ---- the CUDA layout ---- */

Test(ep_gpu, cuda_layout_matches_the_cpu_and_rejects_bad_ids) {
    const int64_t N = 3000, K = 8;
    const int32_t E = 256, R = 8;
    uint64_t s = 77;
    int64_t *topk = malloc((size_t)(N * K) * 8);
    for (int64_t i = 0; i < N * K; i++)
        topk[i] = rng_next(&s) % 9 == 0 ? -1 : (int64_t)(rng_next(&s) % E);
    int32_t rank_cpu[8], expert_cpu[256], rank_gpu[8], expert_gpu[256];
    uint8_t *in_cpu = malloc((size_t)(N * R)), *in_gpu = malloc((size_t)(N * R));
    cr_assert_eq(dinf_ep_get_dispatch_layout(topk, N, K, E, R, rank_cpu, expert_cpu, in_cpu, NULL),
                 DINF_STATUS_OK);
    int64_t *d_topk;
    int32_t *d_rank, *d_expert;
    uint8_t *d_in;
    cr_assert_eq(cudaMalloc((void **)&d_topk, (size_t)(N * K) * 8), cudaSuccess);
    cudaMalloc((void **)&d_rank, 32);
    cudaMalloc((void **)&d_expert, 1024);
    cudaMalloc((void **)&d_in, (size_t)(N * R));
    cudaMemset(d_rank, 0xa5, 32);
    cudaMemset(d_expert, 0xa5, 1024);
    cudaMemset(d_in, 0xa5, (size_t)(N * R));
    cudaMemcpy(d_topk, topk, (size_t)(N * K) * 8, cudaMemcpyHostToDevice);
    dinf_exec e = DINF_EXEC_CUDA_INIT(0, NULL);
    cr_assert_eq(dinf_ep_get_dispatch_layout(d_topk, N, K, E, R, d_rank, d_expert, d_in, &e),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cudaMemcpy(rank_gpu, d_rank, 32, cudaMemcpyDeviceToHost);
    cudaMemcpy(expert_gpu, d_expert, 1024, cudaMemcpyDeviceToHost);
    cudaMemcpy(in_gpu, d_in, (size_t)(N * R), cudaMemcpyDeviceToHost);
    cr_assert(memcmp(rank_cpu, rank_gpu, 32) == 0);
    cr_assert(memcmp(expert_cpu, expert_gpu, 1024) == 0);
    cr_assert(memcmp(in_cpu, in_gpu, (size_t)(N * R)) == 0);
    /* an invalid id: the message names the first one */
    const int64_t bad = 257;
    cudaMemcpy(d_topk + 1234 * K + 5, &bad, 8, cudaMemcpyHostToDevice);
    cudaMemcpy(d_topk + 2000 * K + 1, &bad, 8, cudaMemcpyHostToDevice);
    cr_assert_eq(dinf_ep_get_dispatch_layout(d_topk, N, K, E, R, d_rank, d_expert, d_in, &e),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "topk_idx[1234][5]=257"), "%s", dinf_last_error());
    cudaFree(d_topk);
    cudaFree(d_rank);
    cudaFree(d_expert);
    cudaFree(d_in);
    free(topk);
    free(in_cpu);
    free(in_gpu);
}

/* An invalid id reaches the GPU planner of one rank: every rank fails, the
 * group stays usable. */
Test(ep_gpu, gpu_planner_rejects_bad_ids_on_every_rank) {
    scen sc = {2, 256, 4, 16, 32, {32, 20}, 21};
    dinf_ep_config c = config_for(&sc);
    dinf_ep_group *groups[2];
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, &c, groups), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    late_job ok[2] = {{.op = 1}, {.op = 1}};
    run_pair(groups, ok);
    cr_assert_eq(ok[0].status, DINF_STATUS_OK, "%s", ok[0].message);
    cr_assert_eq(ok[1].status, DINF_STATUS_OK, "%s", ok[1].message);
    late_job bad[2] = {{.op = 1}, {.op = 1, .bad_id = 99}};
    run_pair(groups, bad);
    cr_assert_eq(bad[1].status, DINF_STATUS_INVALID_ARGUMENT, "%s", bad[1].message);
    cr_assert(strstr(bad[1].message, "topk_idx[1][2]=99"), "%s", bad[1].message);
    cr_assert_eq(bad[0].status, DINF_STATUS_INVALID_ARGUMENT, "%s", bad[0].message);
    cr_assert(strstr(bad[0].message, "rank 1 rejected"), "%s", bad[0].message);
    check_against_oracle("virtual R=2 after a rejected call", &sc, groups);
    dinf_ep_group_destroy(groups[0]);
    dinf_ep_group_destroy(groups[1]);
}

#endif
