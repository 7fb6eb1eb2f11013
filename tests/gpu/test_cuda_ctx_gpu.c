/*
 * GPU tests of the launch paths' host-side behaviour (lib/core/cuda_ctx.h):
 *   - a thread that had no current CUDA context has none after a GPU call
 *     (the guard does not leave device 0's primary context bound to it), for
 *     an nvcc-built kernel (FP8 quantize) and a JIT kernel (FP8 GEMM), and the
 *     results are right;
 *   - a thread whose current context is its own (cuCtxCreate) keeps it, and
 *     the work runs in it (buffers allocated in that context);
 *   - the EP layout called while its stream is being captured returns
 *     UNSUPPORTED and leaves the caller's capture intact.
 * Skipped, visibly, without a usable device; a failure under
 * DINF_REQUIRE_GPU=1 (tools/gpu-check).
 */
#define _GNU_SOURCE
#include <deepinfra.h>

#include <criterion/criterion.h>

#include "gpu_test.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(cuda_ctx_gpu, .init = require_gpu, .timeout = 300.0);

#if DINF_WITH_CUDA && defined(__has_include) && __has_include(<cuda_runtime_api.h>)
#include <cuda.h>
#include <cuda_runtime_api.h>

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        cr_assert_eq(err_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(err_));               \
    } while (0)

/* The driver functions the tests inspect contexts with (no -lcuda). */
typedef CUresult (*get_current_fn)(CUcontext *);
typedef CUresult (*set_current_fn)(CUcontext);
typedef CUresult (*create_fn)(CUcontext *, CUctxCreateParams *, unsigned, CUdevice);
typedef CUresult (*destroy_fn)(CUcontext);

static void *driver_fn(const char *name, unsigned version) {
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    cudaError_t err = cudaGetDriverEntryPointByVersion(name, &fn, version, cudaEnableDefault, &q);
    cr_assert(err == cudaSuccess && q == cudaDriverEntryPointSuccess && fn,
              "driver entry point %s: %s", name, cudaGetErrorString(err));
    return fn;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float rnd(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) & 0xffff) / 65536.0f * 8.0f - 4.0f;
}

/* ---------------------------------------------- FP8 quantize in a thread -- */

enum { QM = 64, QK = 512 };

typedef struct {
    get_current_fn get_current;
    const float *x;
    uint8_t *q;
    float *scales;
    int had_context_before, has_context_after;
    dinf_status st;
    char message[512];
} quantize_job;

static void *quantize_in_fresh_thread(void *arg) {
    quantize_job *j = arg;
    CUcontext ctx = NULL;
    j->get_current(&ctx);
    j->had_context_before = ctx != NULL;
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, NULL);
    j->st = dinf_fp8_quantize(j->x, DINF_DTYPE_FLOAT32, QM, QK, QK, 1, j->q, QK, j->scales, &exec);
    snprintf(j->message, sizeof j->message, "%s", dinf_last_error());
    ctx = NULL;
    j->get_current(&ctx);
    j->has_context_after = ctx != NULL;
    return NULL;
}

Test(cuda_ctx_gpu, a_thread_without_a_context_has_none_after_a_kernel_launch) {
    float *hx = malloc(QM * QK * 4);
    for (int i = 0; i < QM * QK; i++)
        hx[i] = rnd();
    float *x;
    uint8_t *q;
    float *scales;
    CUDA_OK(cudaMalloc((void **)&x, QM * QK * 4));
    CUDA_OK(cudaMalloc((void **)&q, QM * QK));
    CUDA_OK(cudaMalloc((void **)&scales, QM * (QK / 128) * 4));
    CUDA_OK(cudaMemcpy(x, hx, QM * QK * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(q, 0xAB, QM * QK));
    quantize_job j = {.get_current = (get_current_fn)driver_fn("cuCtxGetCurrent", 12000),
                      .x = x, .q = q, .scales = scales};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, quantize_in_fresh_thread, &j), 0);
    pthread_join(t, NULL);
    cr_assert_eq(j.st, DINF_STATUS_OK, "%s", j.message);
    cr_assert_eq(j.had_context_before, 0, "a new thread started with a current context");
    cr_assert_eq(j.has_context_after, 0,
                 "the call left a CUDA context current on a thread that had none");
    CUDA_OK(cudaDeviceSynchronize());
    uint8_t *got = malloc(QM * QK), *want = malloc(QM * QK);
    float *got_s = malloc(QM * 4 * 4), *want_s = malloc(QM * 4 * 4);
    CUDA_OK(cudaMemcpy(got, q, QM * QK, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(got_s, scales, QM * 4 * 4, cudaMemcpyDeviceToHost));
    cr_assert_eq(dinf_fp8_quantize(hx, DINF_DTYPE_FLOAT32, QM, QK, QK, 1, want, QK, want_s, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(memcmp(got, want, QM * QK), 0, "the GPU codes differ from the CPU's");
    cr_assert_eq(memcmp(got_s, want_s, QM * 4 * 4), 0, "the GPU scales differ from the CPU's");
    free(hx), free(got), free(want), free(got_s), free(want_s);
    cudaFree(x), cudaFree(q), cudaFree(scales);
}

/* ------------------------------------- FP8 GEMM (JIT) in a fresh thread -- */

enum { GM = 128, GN = 256, GK = 256 };

typedef struct {
    get_current_fn get_current;
    const uint8_t *a, *b;
    const float *sa, *sb;
    uint16_t *d;
    int has_context_after;
    dinf_status st;
    char message[512];
} gemm_job;

static void *gemm_in_fresh_thread(void *arg) {
    gemm_job *j = arg;
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, NULL);
    j->st = dinf_fp8_gemm_nt(GM, GN, GK, j->a, GK, j->sa, j->b, GK, j->sb, j->d, GN, &exec);
    snprintf(j->message, sizeof j->message, "%s", dinf_last_error());
    CUcontext ctx = NULL;
    j->get_current(&ctx);
    j->has_context_after = ctx != NULL;
    return NULL;
}

Test(cuda_ctx_gpu, a_thread_without_a_context_has_none_after_a_jit_gemm) {
    uint8_t *ha = malloc(GM * GK), *hb = malloc(GN * GK);
    float *hsa = malloc((GK / 128) * GM * 4), *hsb = malloc((GN / 128) * (GK / 128) * 4);
    for (int i = 0; i < GM * GK; i++)
        ha[i] = (uint8_t)((rng_state = rng_state * 6364136223846793005ull + 1) >> 56) & 0xbf;
    for (int i = 0; i < GN * GK; i++)
        hb[i] = (uint8_t)((rng_state = rng_state * 6364136223846793005ull + 1) >> 56) & 0xbf;
    for (int i = 0; i < (GK / 128) * GM; i++)
        hsa[i] = 0.002f * (float)(1 + i % 7);
    for (int i = 0; i < (GN / 128) * (GK / 128); i++)
        hsb[i] = 0.003f * (float)(1 + i % 5);
    uint8_t *a, *b;
    float *sa, *sb;
    uint16_t *d;
    CUDA_OK(cudaMalloc((void **)&a, GM * GK));
    CUDA_OK(cudaMalloc((void **)&b, GN * GK));
    CUDA_OK(cudaMalloc((void **)&sa, (GK / 128) * GM * 4));
    CUDA_OK(cudaMalloc((void **)&sb, (GN / 128) * (GK / 128) * 4));
    CUDA_OK(cudaMalloc((void **)&d, GM * GN * 2));
    CUDA_OK(cudaMemcpy(a, ha, GM * GK, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(b, hb, GN * GK, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(sa, hsa, (GK / 128) * GM * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(sb, hsb, (GN / 128) * (GK / 128) * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(d, 0xFF, GM * GN * 2));
    gemm_job j = {.get_current = (get_current_fn)driver_fn("cuCtxGetCurrent", 12000),
                  .a = a, .b = b, .sa = sa, .sb = sb, .d = d};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, gemm_in_fresh_thread, &j), 0);
    pthread_join(t, NULL);
    cr_assert_eq(j.st, DINF_STATUS_OK, "%s", j.message);
    cr_assert_eq(j.has_context_after, 0,
                 "the GEMM left a CUDA context current on a thread that had none");
    CUDA_OK(cudaDeviceSynchronize());
    uint16_t *got = malloc(GM * GN * 2), *want = malloc(GM * GN * 2);
    CUDA_OK(cudaMemcpy(got, d, GM * GN * 2, cudaMemcpyDeviceToHost));
    cr_assert_eq(dinf_fp8_gemm_nt(GM, GN, GK, ha, GK, hsa, hb, GK, hsb, want, GN, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    /* Same quantized inputs: DeepGEMM's calc_diff against the CPU oracle, as
     * the GEMM GPU suite's graph test does, and every element written. */
    double xy = 0.0, xx_yy = 0.0;
    for (int i = 0; i < GM * GN; i++) {
        cr_assert_neq(got[i], 0xFFFF, "element %d not written", i);
        union { uint32_t u; float f; } g = {.u = (uint32_t)got[i] << 16},
                                         w = {.u = (uint32_t)want[i] << 16};
        xy += (double)g.f * w.f;
        xx_yy += (double)g.f * g.f + (double)w.f * w.f;
    }
    const double diff = xx_yy > 0.0 ? 1.0 - 2.0 * xy / xx_yy : 0.0;
    cr_assert_gt(xx_yy, 0.0, "an all-zero product tests nothing");
    cr_assert_lt(diff, 1e-4, "calc_diff %g against the CPU", diff);
    free(ha), free(hb), free(hsa), free(hsb), free(got), free(want);
    cudaFree(a), cudaFree(b), cudaFree(sa), cudaFree(sb), cudaFree(d);
}

/* ------------------------------------------- a caller's own context -- */

typedef struct {
    int created, kept, ok_result;
    dinf_status st;
    char message[512];
} own_ctx_job;

static void *quantize_in_own_context(void *arg) {
    own_ctx_job *j = arg;
    create_fn create = (create_fn)driver_fn("cuCtxCreate", 13000);
    destroy_fn destroy = (destroy_fn)driver_fn("cuCtxDestroy", 12000);
    get_current_fn get_current = (get_current_fn)driver_fn("cuCtxGetCurrent", 12000);
    CUcontext mine = NULL;
    if (create(&mine, NULL, 0, 0) != CUDA_SUCCESS || !mine)
        return NULL;
    j->created = 1;
    float hx[QM * 128];
    for (int i = 0; i < QM * 128; i++)
        hx[i] = rnd();
    float *x = NULL, *scales = NULL;
    uint8_t *q = NULL;
    /* The runtime allocates in the thread's current context: mine. */
    if (cudaMalloc((void **)&x, sizeof hx) == cudaSuccess &&
        cudaMalloc((void **)&q, QM * 128) == cudaSuccess &&
        cudaMalloc((void **)&scales, QM * 4) == cudaSuccess &&
        cudaMemcpy(x, hx, sizeof hx, cudaMemcpyHostToDevice) == cudaSuccess) {
        dinf_exec exec = DINF_EXEC_CUDA_INIT(0, NULL);
        j->st = dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, QM, 128, 128, 1, q, 128, scales, &exec);
        snprintf(j->message, sizeof j->message, "%s", dinf_last_error());
        CUcontext now = NULL;
        get_current(&now);
        j->kept = now == mine;
        uint8_t got[QM * 128], want[QM * 128];
        float got_s[QM], want_s[QM];
        if (j->st == DINF_STATUS_OK && cudaDeviceSynchronize() == cudaSuccess &&
            cudaMemcpy(got, q, sizeof got, cudaMemcpyDeviceToHost) == cudaSuccess &&
            cudaMemcpy(got_s, scales, sizeof got_s, cudaMemcpyDeviceToHost) == cudaSuccess &&
            dinf_fp8_quantize(hx, DINF_DTYPE_FLOAT32, QM, 128, 128, 1, want, 128, want_s, NULL) ==
                DINF_STATUS_OK)
            j->ok_result = memcmp(got, want, sizeof got) == 0 &&
                           memcmp(got_s, want_s, sizeof got_s) == 0;
    }
    cudaFree(x), cudaFree(q), cudaFree(scales);
    destroy(mine);
    return NULL;
}

Test(cuda_ctx_gpu, a_callers_own_context_stays_current_and_runs_the_work) {
    own_ctx_job j;
    memset(&j, 0, sizeof j);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, quantize_in_own_context, &j), 0);
    pthread_join(t, NULL);
    cr_assert(j.created, "cuCtxCreate failed");
    cr_assert_eq(j.st, DINF_STATUS_OK, "%s", j.message);
    cr_assert(j.kept, "the call replaced the caller's own context");
    cr_assert(j.ok_result, "the quantized codes in the caller's context differ from the CPU's");
}

/* ------------------------------------------ EP layout under capture -- */

Test(cuda_ctx_gpu, ep_layout_refuses_stream_capture_and_leaves_it_intact) {
    enum { T = 16, K = 4, E = 16, R = 4 };
    int64_t htopk[T * K];
    for (int i = 0; i < T * K; i++)
        htopk[i] = (i * 7) % E;
    int64_t *topk;
    int32_t *per_rank, *per_expert;
    uint8_t *in_rank;
    CUDA_OK(cudaMalloc((void **)&topk, sizeof htopk));
    CUDA_OK(cudaMalloc((void **)&per_rank, R * 4));
    CUDA_OK(cudaMalloc((void **)&per_expert, E * 4));
    CUDA_OK(cudaMalloc((void **)&in_rank, T * R));
    CUDA_OK(cudaMemcpy(topk, htopk, sizeof htopk, cudaMemcpyHostToDevice));
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const dinf_status st =
        dinf_ep_get_dispatch_layout(topk, T, K, E, R, per_rank, per_expert, in_rank, &exec);
    const char *message = dinf_last_error();
    cudaGraph_t graph = NULL;
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    cr_assert_eq(st, DINF_STATUS_UNSUPPORTED, "status %d: %s", (int)st, message);
    cr_assert(strstr(message, "cannot be captured") != NULL, "message: %s", message);
    cr_assert_eq(end, cudaSuccess, "the capture was invalidated: %s", cudaGetErrorString(end));
    if (graph)
        CUDA_OK(cudaGraphDestroy(graph));
    /* Outside the capture the same call works. */
    cr_assert_eq(
        dinf_ep_get_dispatch_layout(topk, T, K, E, R, per_rank, per_expert, in_rank, &exec),
        DINF_STATUS_OK, "%s", dinf_last_error());
    CUDA_OK(cudaStreamDestroy(stream));
    cudaFree(topk), cudaFree(per_rank), cudaFree(per_expert), cudaFree(in_rank);
}

#else

Test(cuda_ctx_gpu, needs_a_cuda_build) { cr_skip_test("libdeepinfra was built without CUDA"); }

#endif
