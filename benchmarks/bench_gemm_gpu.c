/*
 * FP8 GEMMs on the GPU (issue 4 item 8): the Hopper kernels on the
 * DeepSeek-V3 shapes of deepgemm.md 4.2/4.4 (normal M in {64, 128, 4096};
 * contiguous and masked grouped tables), with cuBLASLt FP8 on the same shapes
 * in the same run as the peer row and the physical floor beside each row.
 *
 * Metrics (deepgemm.md 4.3): TFLOPS = 2*M*N*K / t (grouped: 2*G*M*N*K);
 * GB/s = (M*K + K*N + 2*M*N) / t (grouped: G*(...)), scales not counted.
 * Each timed call is preceded by an L2 flush (a 256 MiB memset, outside the
 * timed events), as DeepGEMM's bench_kineto; times come from CUDA events on
 * one stream, 30 timed calls per row (bench_kineto's count; a fixed count
 * keeps the flushes of microsecond kernels from costing minutes). The first call of each shape (JIT compile) is made at
 * registration, untimed.
 *
 * The peer: cuBLASLt, opened with dlopen at run time ("libcublasLt.so.13"
 * on the loader's path, then in $CUDA_HOME/lib64 and /usr/local/cuda, then
 * "libcublasLt.so", ".so.12"; never linked, never bundled). Blockwise scaling is
 * the same math as ours, and cuBLASLt 12.9+ offers it on sm_90 only:
 * activations with CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F (1x128, the
 * M-major layout our kernels read), weights with _BLK128x128_32F (128x128,
 * stored K-major with the k-block count padded to 4; copied once at setup).
 * D (row-major [M][N]) = A * B^T is cuBLAS's column-major D^T = op(B) op(A):
 * cuBLAS "A" = our B (TRANSA = T, K x N, ld K), cuBLAS "B" = our A (TRANSB = N,
 * K x M, ld K), D N x M with ld N, bf16, fp32 compute, no fast accumulation.
 * Two peer rows per shape: gemm/peer/cublaslt_blockwise/<shape> (the same
 * math as ours) and gemm/peer/cublaslt_per_tensor/<shape> (scalar scales of
 * 1.0: the speed of FP8 without fine-grained scaling, what DeepGEMM compares
 * with); a mode cuBLASLt cannot run (e.g. blockwise on an older cuBLASLt)
 * gets an error row saying why. The heuristic is asked for up to 8
 * algorithms; the first that runs is used (its output checked once against
 * a float64 CPU dot product at 64 sampled output elements per group, from
 * the same device data, benchmarks/gemm_check.h: the label says "checked"
 * or OUTPUT WRONG). The peer rows are a family of their own: tools/gpu-check
 * runs it in its own process before ours, so a fault of our kernels, which
 * poisons the process's CUDA context, cannot cost the peer figures; nothing
 * of ours runs in a process whose filter selects only peer rows. In one
 * process with both (make bench), every peer is set up after all of our
 * rows are registered, so its rows run after ours (a fault inside cuBLASLt
 * cannot take our rows with it); a peer row whose shape's own first call
 * failed in the same process says so in its error. tools/gpu-summary
 * compares ours with each peer from the rows' times. Grouped forms: cuBLASLt
 * is called once per group (equal-sized groups).
 *
 * Rows per shape: ours on the fast rung (the default; its label names the
 * config), ours on the simple reference rung (gemm/gpu/simple_...: what the
 * fast rung's features buy), and the two peers. For normal m = 64 and 128 at
 * n = 2112, k = 7168 also gemm/gpu/chain8_pdl_{on,off}/...: 8 back-to-back
 * fast-rung calls per timed iteration, time per call, with programmatic
 * dependent launch on (the default) and off (DINF_FP8_GEMM_PDL=0): the A/B
 * of the overlap of each call's prologue with the previous call's tail.
 * Forced-tile rows gemm/gpu/tile_<BM>x<BN>_c<cluster>[_s<split>]/... (the
 * fast rung with a forced config through the library's internal launch,
 * stages as many as fit; _s<split>: split-K): for the normal m = 4096 shapes the wave
 * model's neighbours (128x160, 128x128, 256x128, 256x112, all with the 2-CTA
 * A multicast); for m = 64 and 128 at n = 2112 and 4096 (k = 7168), where
 * the one-wave cost model replaced the fullest-last-wave pick (with split-K
 * over clusters of 2 to 4), that old pick (unsplit) and a split neighbour of
 * the model's pick. One run shows whether each model picks the fastest tile.
 *
 * Physical floor: the row's counter floor_us = max(FLOPs / 1979 TFLOP/s
 * (H200 dense FP8, datasheet), bytes / 4.8 TB/s (HBM3e, datasheet)); the
 * measured copy bandwidth row (copy/d2d) is beside it in the same table.
 * Registered only with a usable sm_90 device.
 */
#define _GNU_SOURCE
#include "bench.h"
#include "gemm_check.h"

#include <deepinfra.h>

#include "core/parallel.h"
#include "gemm/gemm_sm90.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void bench_register_gemm_gpu(void);

#if DINF_WITH_CUDA && defined(__has_include)
#if __has_include(<cublasLt.h>)
#define HAVE_LT_HEADER 1
#endif
#endif

#if DINF_WITH_CUDA && HAVE_LT_HEADER
#include <cublasLt.h> /* types and enums only: the functions come from dlopen */
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#define FP8_PEAK_FLOPS 1979e12 /* H200 SXM dense FP8, datasheet */
#define HBM_BYTES_PER_S 4.8e12 /* H200 HBM3e, datasheet */

/* ------------------------------------------------------------- cuBLASLt -- */

static struct {
    int tried, ok;
    char error[512];
    cublasLtHandle_t handle;
    cublasStatus_t (*Create)(cublasLtHandle_t *);
    cublasStatus_t (*MatmulDescCreate)(cublasLtMatmulDesc_t *, cublasComputeType_t, cudaDataType_t);
    cublasStatus_t (*MatmulDescSetAttribute)(cublasLtMatmulDesc_t, cublasLtMatmulDescAttributes_t,
                                             const void *, size_t);
    cublasStatus_t (*MatrixLayoutCreate)(cublasLtMatrixLayout_t *, cudaDataType, uint64_t,
                                         uint64_t, int64_t);
    cublasStatus_t (*PreferenceCreate)(cublasLtMatmulPreference_t *);
    cublasStatus_t (*PreferenceSetAttribute)(cublasLtMatmulPreference_t,
                                             cublasLtMatmulPreferenceAttributes_t, const void *,
                                             size_t);
    cublasStatus_t (*AlgoGetHeuristic)(cublasLtHandle_t, cublasLtMatmulDesc_t,
                                       cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                       cublasLtMatrixLayout_t, cublasLtMatrixLayout_t,
                                       cublasLtMatmulPreference_t, int,
                                       cublasLtMatmulHeuristicResult_t *, int *);
    cublasStatus_t (*Matmul)(cublasLtHandle_t, cublasLtMatmulDesc_t, const void *, const void *,
                             cublasLtMatrixLayout_t, const void *, cublasLtMatrixLayout_t,
                             const void *, const void *, cublasLtMatrixLayout_t, void *,
                             cublasLtMatrixLayout_t, const cublasLtMatmulAlgo_t *, void *, size_t,
                             cudaStream_t);
    size_t (*GetVersion)(void);
} lt;

static int lt_load(void) {
    if (lt.tried)
        return lt.ok;
    lt.tried = 1;
    /* the loader's path first, then the toolkit's own directory (often not on
     * the loader's path), then an older major version */
    char cuda_home[200];
    const char *ch = getenv("CUDA_HOME");
    snprintf(cuda_home, sizeof cuda_home, "%s/lib64/libcublasLt.so.13",
             ch && *ch ? ch : "/usr/local/cuda");
    const char *const names[] = {"libcublasLt.so.13", cuda_home,
                                 "/usr/local/cuda/lib64/libcublasLt.so.13",
                                 "/usr/local/cuda/targets/x86_64-linux/lib/libcublasLt.so.13",
                                 "libcublasLt.so", "libcublasLt.so.12"};
    void *h = NULL;
    for (size_t i = 0; !h && i < sizeof names / sizeof names[0]; i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(lt.error, sizeof lt.error,
                 "cuBLASLt not found (libcublasLt.so.13 on the loader's path, in %s, "
                 "libcublasLt.so, .so.12): %s", cuda_home, dlerror());
        return 0;
    }
#define SYM(field, name)                                                                           \
    if (!(*(void **)&lt.field = dlsym(h, name))) {                                                 \
        snprintf(lt.error, sizeof lt.error, "cuBLASLt lacks %s", name);                            \
        return 0;                                                                                  \
    }
    SYM(Create, "cublasLtCreate")
    SYM(MatmulDescCreate, "cublasLtMatmulDescCreate")
    SYM(MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute")
    SYM(MatrixLayoutCreate, "cublasLtMatrixLayoutCreate")
    SYM(PreferenceCreate, "cublasLtMatmulPreferenceCreate")
    SYM(PreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute")
    SYM(AlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic")
    SYM(Matmul, "cublasLtMatmul")
    SYM(GetVersion, "cublasLtGetVersion")
#undef SYM
    if (lt.Create(&lt.handle) != CUBLAS_STATUS_SUCCESS) {
        snprintf(lt.error, sizeof lt.error, "cublasLtCreate failed");
        return 0;
    }
    lt.ok = 1;
    return 1;
}

/* Candidates asked of cuBLASLt's heuristic; the first that runs is used. */
#define LT_ALGOS 8

/* One cuBLASLt plan: D[m][n] (bf16, row-major) = A[m][k] B[n][k]^T. */
typedef struct lt_plan {
    int blockwise; /* 1: VEC128 x BLK128x128; 0: per-tensor; LT_1D1D: VEC128 x VEC128, float32 D */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;             /* the one in use (algos[used]) */
    cublasLtMatmulAlgo_t algos[LT_ALGOS];  /* the heuristic's candidates, best first */
    int num_algos, used;
    void *workspace;
    size_t workspace_bytes;
    char why[160]; /* why blockwise is not used, if so */
} lt_plan;

static float *device_one; /* a device float 1.0 (per-tensor scales) */

/* The weight-gradient peer's mode of lt_plan_make: VEC128 scales on both
 * operands, D (and C) float32. */
#define LT_1D1D 2

/* Plan for the shape; scale pointers are set per call (they differ per group). */
static int lt_plan_make(lt_plan *p, int64_t m, int64_t n, int64_t k, int blockwise) {
    memset(p, 0, sizeof *p);
    p->blockwise = blockwise;
    if (lt.MatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS)
        return 0;
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const int8_t fast = 0;
    lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast);
    if (blockwise) {
        const int32_t weights = blockwise == LT_1D1D ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
                                                     : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
        const int32_t acts = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
        if (lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &weights,
                                      sizeof weights) != CUBLAS_STATUS_SUCCESS ||
            lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &acts,
                                      sizeof acts) != CUBLAS_STATUS_SUCCESS) {
            snprintf(p->why, sizeof p->why, "scale modes rejected");
            return 0;
        }
    }
    /* Representative scale pointers for the heuristic query. */
    lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &device_one,
                              sizeof device_one);
    lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &device_one,
                              sizeof device_one);
    if (lt.MatrixLayoutCreate(&p->la, CUDA_R_8F_E4M3, (uint64_t)k, (uint64_t)n, k) ||
        lt.MatrixLayoutCreate(&p->lb, CUDA_R_8F_E4M3, (uint64_t)k, (uint64_t)m, k) ||
        lt.MatrixLayoutCreate(&p->ld, blockwise == LT_1D1D ? CUDA_R_32F : CUDA_R_16BF,
                              (uint64_t)n, (uint64_t)m, n))
        return 0;
    p->workspace_bytes = (size_t)64 << 20;
    if (cudaMalloc(&p->workspace, p->workspace_bytes) != cudaSuccess)
        return 0;
    cublasLtMatmulPreference_t pref;
    if (lt.PreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS)
        return 0;
    lt.PreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &p->workspace_bytes,
                              sizeof p->workspace_bytes);
    cublasLtMatmulHeuristicResult_t results[LT_ALGOS];
    int count = 0;
    cublasStatus_t st = lt.AlgoGetHeuristic(lt.handle, p->desc, p->la, p->lb, p->ld, p->ld, pref,
                                            LT_ALGOS, results, &count);
    if (st != CUBLAS_STATUS_SUCCESS || count == 0) {
        snprintf(p->why, sizeof p->why, "no algorithm (status %d, %d results)", (int)st, count);
        return 0;
    }
    for (int i = 0; i < count && i < LT_ALGOS; i++)
        if (results[i].state == CUBLAS_STATUS_SUCCESS)
            p->algos[p->num_algos++] = results[i].algo;
    if (p->num_algos == 0) {
        snprintf(p->why, sizeof p->why, "no usable algorithm among %d results", count);
        return 0;
    }
    p->algo = p->algos[0];
    return 1;
}

static cublasStatus_t lt_run(lt_plan *p, const uint8_t *a, const float *sa, const uint8_t *b,
                             const float *sb_padded, uint16_t *d, cudaStream_t stream) {
    const float alpha = 1.0f, beta = 0.0f;
    const float *scale_w = p->blockwise ? sb_padded : device_one;
    const float *scale_a = p->blockwise ? sa : device_one;
    lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &scale_w,
                              sizeof scale_w);
    lt.MatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &scale_a,
                              sizeof scale_a);
    return lt.Matmul(lt.handle, p->desc, &alpha, b, p->la, a, p->lb, &beta, d, p->ld, d, p->ld,
                     &p->algo, p->workspace, p->workspace_bytes, stream);
}

/* ------------------------------------------------------------- the cases -- */

enum { NORMAL = 0, CONTIGUOUS = 1, MASKED = 2 };

typedef struct gpu_case {
    int form;
    int64_t m, n, k, groups; /* m: rows per group (normal m, contiguous M/group, masked m_max) */
    int64_t kb, nsb, aligned;
    uint8_t *a, *b;
    float *sa, *sb;
    float **sa_group;   /* cuBLASLt: per-group VEC128 scales [kb][m] */
    float *sb_padded;   /* cuBLASLt: per-group BLK128x128 scales [nsb][L4] */
    int64_t l4;
    uint16_t *d;
    int32_t *info;      /* m_indices or masked_m (device) */
    lt_plan plan[2];    /* cuBLASLt: [0] per-tensor, [1] blockwise (PEER_*) */
    char ours_error[256]; /* why our first call of the shape failed ("" if it ran or was not run) */
    char name[96], peer_name[2][128], peer_label[2][384], simple_name[128], label[160];
} gpu_case;

static struct {
    int ready;
    cudaStream_t stream;
    cudaEvent_t start, stop;
    void *flush;
    size_t flush_bytes;
    uint8_t *pool; /* random finite e4m3 codes */
    size_t pool_bytes;
    int num_sms; /* of device 0 (the fast rung's config in the row label) */
} g;

static uint64_t next_u64(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int setup(void) {
    if (g.ready)
        return g.ready > 0;
    g.ready = -1;
    g.flush_bytes = (size_t)256 << 20;
    g.pool_bytes = (size_t)64 << 20;
    if (cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking) != cudaSuccess ||
        cudaEventCreate(&g.start) != cudaSuccess || cudaEventCreate(&g.stop) != cudaSuccess ||
        cudaMalloc(&g.flush, g.flush_bytes) != cudaSuccess ||
        cudaMalloc((void **)&device_one, sizeof(float)) != cudaSuccess ||
        cudaDeviceGetAttribute(&g.num_sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess)
        return 0;
    const float one = 1.0f;
    cudaMemcpy(device_one, &one, sizeof one, cudaMemcpyHostToDevice);
    g.pool = malloc(g.pool_bytes);
    if (!g.pool)
        return 0;
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < g.pool_bytes; i += 8) {
        uint64_t r = next_u64(&s) & 0x7e7e7e7e7e7e7e7eull; /* exponent < 15: finite, no NaN */
        r |= next_u64(&s) & 0x8080808080808080ull;         /* random signs */
        memcpy(g.pool + i, &r, 8);
    }
    g.ready = 1;
    return 1;
}

static int fill_codes(uint8_t *dst, size_t bytes) {
    for (size_t off = 0; off < bytes; off += g.pool_bytes) {
        const size_t n = bytes - off < g.pool_bytes ? bytes - off : g.pool_bytes;
        if (cudaMemcpy(dst + off, g.pool, n, cudaMemcpyHostToDevice) != cudaSuccess)
            return 0;
    }
    return 1;
}

static int fill_scales(float *dst, size_t count, uint64_t seed) {
    float *h = malloc(count * sizeof(float));
    if (!h)
        return 0;
    uint64_t s = seed | 1;
    for (size_t i = 0; i < count; i++)
        h[i] = (1.0f + (float)(next_u64(&s) % 1024) / 1024.0f) * (1.0f / 256.0f);
    const int ok = cudaMemcpy(dst, h, count * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess;
    free(h);
    return ok;
}

static double flops_of(const gpu_case *c) { return 2.0 * (double)c->groups * (double)c->m * (double)c->n * (double)c->k; }
static double bytes_of(const gpu_case *c) {
    return (double)c->groups *
           ((double)c->m * (double)c->k + (double)c->k * (double)c->n + 2.0 * (double)c->m * (double)c->n);
}

/* The rung the next run_ours call runs: the fast kernel (the default) or the
 * simple reference kernel (DINF_FP8_GEMM_KERNEL=simple), whose row shows
 * what the fast rung's features buy. */
static void select_rung(int simple) {
    if (simple)
        setenv("DINF_FP8_GEMM_KERNEL", "simple", 1);
    else
        unsetenv("DINF_FP8_GEMM_KERNEL");
}

static dinf_status run_ours(gpu_case *c) {
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)g.stream);
    const int64_t rows = c->form == CONTIGUOUS ? c->m * c->groups : c->m;
    if (c->form == NORMAL)
        return dinf_fp8_gemm_nt(c->m, c->n, c->k, c->a, c->k, c->sa, c->b, c->k, c->sb, c->d,
                                c->n, &exec);
    if (c->form == CONTIGUOUS)
        return dinf_fp8_m_grouped_gemm_nt_contiguous(rows, c->n, c->k, c->groups, c->a, c->k,
                                                     c->sa, c->b, c->k, c->sb, c->d, c->n,
                                                     c->info, &exec);
    return dinf_fp8_m_grouped_gemm_nt_masked(c->groups, c->m, c->n, c->k, c->a, c->k, c->sa, c->b,
                                             c->k, c->sb, c->d, c->n, c->info, c->m, &exec);
}

/* The two cuBLASLt peer rows of a shape (the index of its plan). */
enum { PEER_PER_TENSOR = 0, PEER_BLOCKWISE = 1 };

static int run_peer_once(gpu_case *c, int mode) {
    for (int64_t gi = 0; gi < c->groups; gi++) {
        const int64_t row0 = gi * c->m;
        if (lt_run(&c->plan[mode], c->a + row0 * c->k, c->sa_group[gi], c->b + gi * c->n * c->k,
                   c->sb_padded + gi * c->nsb * c->l4, c->d + row0 * c->n, g.stream) !=
            CUBLAS_STATUS_SUCCESS)
            return 0;
    }
    return 1;
}

/* Record the stop event after the timed work and return the seconds since
 * the start event, or -1 with the error set. */
static double stop_timer(void) {
    cudaEventRecord(g.stop, g.stream);
    float ms = 0;
    cudaError_t err = cudaEventSynchronize(g.stop);
    if (err == cudaSuccess)
        err = cudaEventElapsedTime(&ms, g.start, g.stop);
    if (err != cudaSuccess) {
        bench_set_error(cudaGetErrorString(err));
        return -1;
    }
    return (double)ms * 1e-3;
}

/* A row's counters for one call of `seconds`: floor_us, TFLOPS, GBps (ours
 * against the peer: tools/gpu-summary compares the rows' times). */
static void set_row_counters(const gpu_case *c, double seconds) {
    const double floor_s = flops_of(c) / FP8_PEAK_FLOPS > bytes_of(c) / HBM_BYTES_PER_S
                               ? flops_of(c) / FP8_PEAK_FLOPS
                               : bytes_of(c) / HBM_BYTES_PER_S;
    bench_set_counter("floor_us", floor_s * 1e6);
    bench_set_counter("TFLOPS", flops_of(c) / seconds / 1e12);
    bench_set_counter("GBps", bytes_of(c) / seconds / 1e9);
}

/* One call timed: flush L2, then events around the call; seconds, or -1
 * with the error set. peer: 0 ours (fast rung), 1 cuBLASLt blockwise, 2 ours
 * on the simple rung, 3 cuBLASLt per-tensor. Sets no counters (callable at
 * registration). */
static double time_call(gpu_case *c, int peer) {
    select_rung(peer == 2);
    cudaMemsetAsync(g.flush, 0, g.flush_bytes, g.stream);
    cudaEventRecord(g.start, g.stream);
    if (peer == 1 || peer == 3) {
        if (!run_peer_once(c, peer == 1 ? PEER_BLOCKWISE : PEER_PER_TENSOR)) {
            bench_set_error("cublasLtMatmul failed");
            return -1;
        }
    } else if (run_ours(c) != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        return -1;
    }
    return stop_timer();
}

/* One timed iteration of a row, with its counters. */
static double timed(gpu_case *c, int peer) {
    const double seconds = time_call(c, peer);
    if (seconds > 0)
        set_row_counters(c, seconds);
    return seconds;
}

/* Programmatic dependent launch A/B (DINF_FP8_GEMM_PDL): CHAIN fast-rung
 * calls back-to-back on the stream between the events (one L2 flush before
 * them), seconds per call. A single timed call has no kernel right before it
 * (the flush is a memset, then an event), so PDL shows only here: each call's
 * CTAs may start their prologue while the previous call drains. */
#define CHAIN 8
typedef struct chain_case {
    gpu_case *c;
    int pdl;
    char name[160], label[200];
} chain_case;

static double run_chain(void *arg) {
    chain_case *cc = arg;
    gpu_case *c = cc->c;
    select_rung(0);
    setenv("DINF_FP8_GEMM_PDL", cc->pdl ? "1" : "0", 1);
    cudaMemsetAsync(g.flush, 0, g.flush_bytes, g.stream);
    cudaEventRecord(g.start, g.stream);
    for (int i = 0; i < CHAIN; i++)
        if (run_ours(c) != DINF_STATUS_OK) {
            bench_set_error(dinf_last_error());
            unsetenv("DINF_FP8_GEMM_PDL");
            return -1;
        }
    unsetenv("DINF_FP8_GEMM_PDL");
    const double total = stop_timer();
    if (total <= 0)
        return total;
    const double seconds = total / CHAIN;
    set_row_counters(c, seconds);
    return seconds;
}

/* The chain rows' names for a shape (PDL on, off). */
static void chain_names(const char *shape, char names[2][160]) {
    snprintf(names[0], 160, "gemm/gpu/chain%d_pdl_on/%s", CHAIN, shape);
    snprintf(names[1], 160, "gemm/gpu/chain%d_pdl_off/%s", CHAIN, shape);
}
/* The small-M DeepSeek-V3 shapes PDL is for get the A/B rows. */
static int has_chain_rows(int form, int64_t m, int64_t n, int64_t k) {
    return form == NORMAL && (m == 64 || m == 128) && n == 2112 && k == 7168;
}

/* ------------------------------------------------ forced-tile rows -- */

typedef struct tile_case {
    gpu_case *c;
    dinf__fp8_config config;
    char name[160], label[200];
} tile_case;

/* Forced tiles: rows of the normal shapes (m, n; 0 = any n) that get a row
 * of the fast rung with config {bm, bn, cluster, split_k}. */
typedef struct tile_alt {
    int64_t m, n;
    int bm, bn, cluster, split;
} tile_alt;
static const tile_alt tile_alternatives[] = {
    /* m = 4096: the wave model's neighbours, all with the A multicast */
    {4096, 0, 128, 160, 2, 1}, {4096, 0, 128, 128, 2, 1},
    {4096, 0, 256, 128, 2, 1}, {4096, 0, 256, 112, 2, 1},
    /* one-wave small-M shapes the cost model re-ranks (on 132 SMs whose
     * GPCs pack clusters fully it picks 64x48 split 3, 64x64 split 2,
     * 128x80 split 4, 128x96 split 3): the fullest-last-wave pick it
     * replaced (unsplit, 1 CTA) and a split neighbour of the pick */
    {64, 2112, 64, 16, 1, 1},    {64, 2112, 64, 48, 2, 2},
    {64, 4096, 64, 32, 1, 1},    {64, 4096, 64, 96, 3, 3},
    {128, 2112, 128, 16, 1, 1},  {128, 2112, 128, 48, 2, 2},
    {128, 4096, 128, 32, 1, 1},  {128, 4096, 128, 80, 2, 2},
};
#define NUM_TILE_ALTS (sizeof tile_alternatives / sizeof tile_alternatives[0])

static void tile_name(const char *shape, const tile_alt *t, char name[160]) {
    char split[16] = "";
    if (t->split > 1)
        snprintf(split, sizeof split, "_s%d", t->split);
    snprintf(name, 160, "gemm/gpu/tile_%dx%d_c%d%s/%s", t->bm, t->bn, t->cluster, split, shape);
}
/* Whether forced-tile row i belongs to a shape. */
static int tile_row_of(size_t i, int form, int64_t m, int64_t n, int64_t k) {
    const tile_alt *t = &tile_alternatives[i];
    return form == NORMAL && m == t->m && (t->n == 0 || (n == t->n && k == 7168));
}

static dinf__fp8_config tile_config(int form, const tile_alt *alt) {
    dinf__fp8_config c;
    memset(&c, 0, sizeof c);
    c.kernel = DINF__FP8_KERNEL_FAST;
    c.gemm_type = form, c.block_m = alt->bm, c.block_n = alt->bn;
    c.cluster = alt->cluster, c.split_k = alt->split;
    c.stages = 16;
    while (c.stages > 1 && DINF_FP8_FAST_SPLIT_SMEM_BYTES(c.block_m, c.block_n, c.stages,
                                                          c.split_k) > DINF_FP8_SMEM_LIMIT)
        c.stages--;
    c.threads = dinf_fp8_threads(c.block_m);
    c.smem_bytes = DINF_FP8_FAST_SPLIT_SMEM_BYTES(c.block_m, c.block_n, c.stages, c.split_k);
    return c;
}

static dinf_status run_tile_once(tile_case *t) {
    gpu_case *c = t->c;
    const dinf__place place = {DINF_EXEC_CUDA, 0, 1, (dinf_stream_t)g.stream};
    const dinf__fp8_gpu_problem p = {c->form, c->m, c->n, c->k, 1, 0, c->a, c->k, c->sa,
                                     c->b, c->k, c->sb, c->d, c->n, NULL, 0};
    return dinf__fp8_gemm_cuda_config("bench_gemm_gpu", &place, &p, &t->config);
}

static double run_tile(void *arg) {
    tile_case *t = arg;
    gpu_case *c = t->c;
    cudaMemsetAsync(g.flush, 0, g.flush_bytes, g.stream);
    cudaEventRecord(g.start, g.stream);
    if (run_tile_once(t) != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        return -1;
    }
    const double seconds = stop_timer();
    if (seconds > 0)
        set_row_counters(c, seconds);
    return seconds;
}

/* Register the forced-tile rows of a shape (its buffers are set up). */
static void add_tile_rows(gpu_case *c, const char *shape, const dinf_jit_kernel_config *picked) {
    for (size_t i = 0; i < NUM_TILE_ALTS; i++) {
        if (!tile_row_of(i, c->form, c->m, c->n, c->k))
            continue;
        char name[160];
        tile_name(shape, &tile_alternatives[i], name);
        if (!bench_selected(name))
            continue;
        tile_case *t = calloc(1, sizeof *t); /* lives until exit */
        if (!t)
            return;
        t->c = c;
        t->config = tile_config(c->form, &tile_alternatives[i]);
        snprintf(t->name, sizeof t->name, "%s", name);
        const long long tiles = (c->m + t->config.block_m - 1) / t->config.block_m *
                                ((c->n + t->config.block_n - 1) / t->config.block_n);
        const long long ctas = tiles * t->config.split_k;
        snprintf(t->label, sizeof t->label,
                 "deepinfra fast rung, forced %dx%d, %d stages, %s (%lld CTAs of work, "
                 "%.2f waves on %d SMs; the heuristic picks %lldx%lld, split-K %lld)",
                 t->config.block_m, t->config.block_n, t->config.stages,
                 t->config.split_k > 1     ? "split-K"
                 : t->config.cluster > 1 ? "2-CTA A multicast"
                                         : "1 CTA",
                 ctas, (double)ctas / g.num_sms, g.num_sms, (long long)picked->params[1],
                 (long long)picked->params[2], (long long)picked->params[5]);
        /* First call untimed (JIT compile); a failure is reported here. */
        if (run_tile_once(t) != DINF_STATUS_OK || cudaStreamSynchronize(g.stream) != cudaSuccess) {
            fprintf(stderr, "%s: %s\n", t->name, dinf_last_error());
            free(t);
            continue;
        }
        bench_spec spec = {.name = t->name, .run = run_tile, .arg = t, .manual_time = 1,
                           .flops = flops_of(c), .bytes = bytes_of(c), .label = t->label,
                           .unit = "us", .iterations = 30};
        bench_register(&spec);
    }
}

static double run_case(void *arg) { return timed(arg, 0); }
static double run_peer_blockwise(void *arg) { return timed(arg, 1); }
static double run_peer_per_tensor(void *arg) { return timed(arg, 3); }
static double run_simple(void *arg) { return timed(arg, 2); }

/* Shapes whose cuBLASLt peer is set up after every shape's own rows. */
static gpu_case *peer_cases[64];
static int num_peer_cases;

static void add_peer_error(const gpu_case *c, int mode, const char *why);

static void add_case(int form, int64_t groups, int64_t m, int64_t n, int64_t k) {
    gpu_case *c = calloc(1, sizeof *c); /* lives until exit */
    if (!c)
        return;
    c->form = form, c->groups = groups, c->m = m, c->n = n, c->k = k;
    c->kb = (k + 127) / 128, c->nsb = (n + 127) / 128, c->aligned = (m + 3) / 4 * 4;
    c->l4 = (c->kb + 3) / 4 * 4;
    const int64_t a_rows = m * groups;
    const int64_t sa_count = form == NORMAL ? c->kb * c->aligned
                             : form == CONTIGUOUS ? c->kb * a_rows
                                                  : groups * c->kb * c->aligned;
    const char *tag = form == NORMAL ? "fp8_nt" : form == CONTIGUOUS ? "fp8_contiguous" : "fp8_masked";
    if (form == NORMAL)
        snprintf(c->name, sizeof c->name, "gemm/gpu/%s/m%lld_n%lld_k%lld", tag, (long long)m,
                 (long long)n, (long long)k);
    else
        snprintf(c->name, sizeof c->name, "gemm/gpu/%s/g%lld_m%lld_n%lld_k%lld", tag,
                 (long long)groups, (long long)m, (long long)n, (long long)k);
    /* Skip the device setup of a shape none of whose rows will run. */
    const char *shape = c->name + strlen("gemm/gpu/");
    char probe[3][192];
    snprintf(probe[0], sizeof probe[0], "gemm/gpu/simple_%s", shape);
    snprintf(probe[1], sizeof probe[1], "gemm/peer/cublaslt_blockwise/%s", shape);
    snprintf(probe[2], sizeof probe[2], "gemm/peer/cublaslt_per_tensor/%s", shape);
    char chain[2][160];
    chain_names(shape, chain);
    const int chained = has_chain_rows(form, m, n, k);
    int tiles_selected = 0;
    for (size_t i = 0; i < NUM_TILE_ALTS; i++) {
        if (!tile_row_of(i, form, m, n, k))
            continue;
        char name[160];
        tile_name(shape, &tile_alternatives[i], name);
        tiles_selected |= bench_selected(name);
    }
    const int ours_selected = bench_selected(c->name) || bench_selected(probe[0]) ||
                              tiles_selected ||
                              (chained && (bench_selected(chain[0]) || bench_selected(chain[1])));
    const int peer_selected = bench_selected(probe[1]) || bench_selected(probe[2]);
    if (!ours_selected && !peer_selected) {
        free(c);
        return;
    }
    static int setup_state; /* 0 not tried, 1 ready, -1 failed */
    if (setup_state == 0) {
        setup_state = setup() ? 1 : -1;
        if (setup_state < 0)
            fprintf(stderr, "gemm GPU benchmarks skipped: setup failed: %s\n",
                    cudaGetErrorString(cudaGetLastError()));
    }
    if (setup_state < 0) {
        free(c);
        return;
    }
    int ok = cudaMalloc((void **)&c->a, (size_t)(a_rows * k)) == cudaSuccess &&
             cudaMalloc((void **)&c->b, (size_t)(groups * n * k)) == cudaSuccess &&
             cudaMalloc((void **)&c->sa, (size_t)sa_count * 4) == cudaSuccess &&
             cudaMalloc((void **)&c->sb, (size_t)(groups * c->nsb * c->kb) * 4) == cudaSuccess &&
             cudaMalloc((void **)&c->d, (size_t)(a_rows * n) * 2) == cudaSuccess;
    ok = ok && fill_codes(c->a, (size_t)(a_rows * k)) && fill_codes(c->b, (size_t)(groups * n * k)) &&
         fill_scales(c->sa, (size_t)sa_count, (uint64_t)(n + k)) &&
         fill_scales(c->sb, (size_t)(groups * c->nsb * c->kb), (uint64_t)(n * 3 + k));
    if (ok && form != NORMAL) {
        const int64_t count = form == CONTIGUOUS ? a_rows : groups;
        int32_t *h = malloc((size_t)count * 4);
        ok = h != NULL && cudaMalloc((void **)&c->info, (size_t)count * 4) == cudaSuccess;
        for (int64_t i = 0; ok && i < count; i++)
            h[i] = form == CONTIGUOUS ? (int32_t)(i / m) : (int32_t)m; /* equal, full groups */
        ok = ok && cudaMemcpy(c->info, h, (size_t)count * 4, cudaMemcpyHostToDevice) == cudaSuccess;
        free(h);
    }
    if (!ok) {
        fprintf(stderr, "%s: device setup failed: %s\n", c->name,
                cudaGetErrorString(cudaGetLastError()));
        if (peer_selected)
            for (int mode = 0; mode < 2; mode++)
                add_peer_error(c, mode, "the shape's device setup failed");
        return;
    }
    /* The cuBLASLt peer on the same data: set up after every shape's own rows
     * are registered (add_peers), so its warm-up inside cuBLASLt runs, and its
     * rows run, after ours; queued even when our first call below fails (its
     * row then says whether the device still works). */
    if (peer_selected && num_peer_cases < (int)(sizeof peer_cases / sizeof peer_cases[0]))
        peer_cases[num_peer_cases++] = c;
    if (!ours_selected)
        return; /* a peer-only run (the gemm/peer family): none of our kernels runs */
    /* The first call of each rung compiles its kernel (JIT): untimed, a
     * failure is reported here. The fast rung's row names its config. */
    const double flops = flops_of(c), bytes = bytes_of(c);
    for (int simple = 1; simple >= 0; simple--) {
        select_rung(simple);
        dinf_status st = run_ours(c);
        const cudaError_t err = st == DINF_STATUS_OK ? cudaStreamSynchronize(g.stream) : cudaSuccess;
        if (st != DINF_STATUS_OK || err != cudaSuccess) {
            snprintf(c->ours_error, sizeof c->ours_error, "our %s rung failed: %s",
                     simple ? "simple" : "fast",
                     st != DINF_STATUS_OK ? dinf_last_error() : cudaGetErrorString(err));
            fprintf(stderr, "%s: %s\n", c->name, c->ours_error);
            select_rung(0);
            return;
        }
    }
    dinf_jit_kernel_config kc = DINF_JIT_KERNEL_CONFIG_INIT;
    const int64_t hint_rows = form == CONTIGUOUS ? m * groups : m;
    /* num_sms 0: the device's own description (its cluster slots), as the GPU path */
    const int have_kc =
        dinf_fp8_gemm_kernel_config(form, hint_rows, n, k, groups, 0, &kc) == DINF_STATUS_OK;
    if (have_kc)
        add_tile_rows(c, shape, &kc);
    if (have_kc) {
        char mode[32];
        if (kc.params[5] > 1)
            snprintf(mode, sizeof mode, "split-K %lld", (long long)kc.params[5]);
        else
            snprintf(mode, sizeof mode, "%s", kc.params[4] == 2 ? "2-CTA A multicast" : "1 CTA");
        snprintf(c->label, sizeof c->label,
                 "deepinfra fast rung (JIT sm_90a, %lldx%lld, %lld stages, %s)",
                 (long long)kc.params[1], (long long)kc.params[2], (long long)kc.params[3], mode);
    } else {
        snprintf(c->label, sizeof c->label, "deepinfra fast rung (JIT, sm_90a)");
    }
    bench_spec spec = {.name = c->name, .run = run_case, .arg = c, .manual_time = 1,
                       .flops = flops, .bytes = bytes, .label = c->label,
                       .unit = "us", .iterations = 30};
    bench_register(&spec);
    snprintf(c->simple_name, sizeof c->simple_name, "gemm/gpu/simple_%s", c->name + strlen("gemm/gpu/"));
    bench_spec simple = {.name = c->simple_name, .run = run_simple, .arg = c, .manual_time = 1,
                         .flops = flops, .bytes = bytes,
                         .label = "deepinfra simple rung (the reference kernel)", .unit = "us",
                         .iterations = 30};
    bench_register(&simple);
    for (int on = 1; chained && on >= 0; on--) {
        chain_case *cc = calloc(1, sizeof *cc); /* lives until exit */
        if (!cc)
            break;
        cc->c = c, cc->pdl = on;
        snprintf(cc->name, sizeof cc->name, "%s", chain[on ? 0 : 1]);
        snprintf(cc->label, sizeof cc->label,
                 "deepinfra fast rung, %d back-to-back calls, PDL %s (DINF_FP8_GEMM_PDL=%d), "
                 "time per call",
                 CHAIN, on ? "on" : "off", on);
        bench_spec chain_spec = {.name = cc->name, .run = run_chain, .arg = cc,
                                 .manual_time = 1, .flops = flops, .bytes = bytes,
                                 .label = cc->label, .unit = "us", .iterations = 30};
        bench_register(&chain_spec);
    }
}

/* A peer row that only reports why there is no peer figure for its shape. */
typedef struct peer_error {
    char name[160], message[600];
} peer_error;

static double run_peer_error(void *arg) {
    bench_set_error(((peer_error *)arg)->message);
    return -1;
}

static void add_peer_error(const gpu_case *c, int mode, const char *why) {
    peer_error *e = calloc(1, sizeof *e); /* lives until exit */
    if (!e)
        return;
    snprintf(e->name, sizeof e->name, "gemm/peer/cublaslt_%s/%s",
             mode == PEER_BLOCKWISE ? "blockwise" : "per_tensor", c->name + strlen("gemm/gpu/"));
    snprintf(e->message, sizeof e->message, "no cuBLASLt peer: %s%s%s", why,
             c->ours_error[0] ? " (earlier in this process " : "", c->ours_error);
    if (c->ours_error[0])
        strncat(e->message, ")", sizeof e->message - strlen(e->message) - 1);
    fprintf(stderr, "%s: %s\n", c->name, e->message);
    if (!bench_selected(e->name))
        return;
    bench_spec spec = {.name = e->name, .run = run_peer_error, .arg = e, .manual_time = 1,
                       .label = "peer: cuBLASLt", .unit = "us", .iterations = 1};
    bench_register(&spec);
}

/* Run the peer once into D, trying the plan's algorithms in the heuristic's
 * order until one runs. Returns 1, or 0 when none runs. */
static int peer_warm_up(gpu_case *c, int mode) {
    lt_plan *p = &c->plan[mode];
    for (p->used = 0; p->used < p->num_algos; p->used++) {
        p->algo = p->algos[p->used];
        if (run_peer_once(c, mode) && cudaStreamSynchronize(g.stream) == cudaSuccess)
            return 1;
        cudaGetLastError();
    }
    return 0;
}

/* Samples per group of the peer's output check. */
#define PEER_CHECK_SAMPLES 64

/* The peer's output (in D after peer_warm_up) against a float64 CPU dot
 * product (gemm_check.h) at PEER_CHECK_SAMPLES (row, column) elements of
 * each group, from the same device data, read back: blockwise the same
 * math as ours, per-tensor with unit scales. Independent of our kernels.
 * Returns 1 with a note for the label, -1 with " [OUTPUT WRONG ...]" (the
 * row is still timed, its label says so), 0 when the data could not be read
 * (note: why). */
static int peer_check(const gpu_case *c, int blockwise, char *note, size_t note_bytes) {
    const gemm_check_shape sh = {c->form, c->m, c->n, c->k, c->groups};
    const int64_t k = c->k, sa_count = gemm_check_sa_count(&sh);
    const int64_t sb_count = c->groups * gemm_check_nsb(&sh) * gemm_check_kb(&sh);
    float *sa = malloc((size_t)sa_count * 4), *sb = malloc((size_t)sb_count * 4);
    uint8_t *codes = malloc((size_t)k * 2);
    float *x = malloc((size_t)k * 2 * sizeof(float));
    int ok = sa && sb && codes && x &&
             cudaMemcpy(sa, c->sa, (size_t)sa_count * 4, cudaMemcpyDeviceToHost) == cudaSuccess &&
             cudaMemcpy(sb, c->sb, (size_t)sb_count * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
    double worst = 0;
    uint64_t r = (uint64_t)(c->m * 131 + c->n * 7 + k) | 1;
    for (int64_t gi = 0; ok == 1 && gi < c->groups; gi++)
        for (int t = 0; ok == 1 && t < PEER_CHECK_SAMPLES; t++) {
            const int64_t row = (int64_t)(next_u64(&r) % (uint64_t)c->m);
            const int64_t col = (int64_t)(next_u64(&r) % (uint64_t)c->n);
            const int64_t drow = gemm_check_row(&sh, gi, row);
            uint16_t bits = 0;
            if (cudaMemcpy(codes, c->a + drow * k, (size_t)k, cudaMemcpyDeviceToHost) != cudaSuccess ||
                cudaMemcpy(codes + k, c->b + (gi * c->n + col) * k, (size_t)k,
                           cudaMemcpyDeviceToHost) != cudaSuccess ||
                cudaMemcpy(&bits, c->d + drow * c->n + col, 2, cudaMemcpyDeviceToHost) !=
                    cudaSuccess ||
                dinf_convert(codes, DINF_DTYPE_FP8_E4M3, x, DINF_DTYPE_FLOAT32, 2 * k, NULL) !=
                    DINF_STATUS_OK) {
                ok = 0;
                break;
            }
            double mag;
            const double ref = gemm_check_ref(&sh, x, x + k, sa, sb, gi, row, col, blockwise, &mag);
            const uint32_t u = (uint32_t)bits << 16;
            float got;
            memcpy(&got, &u, 4);
            const double ratio = gemm_check_ratio(got, ref, mag);
            if (!(ratio <= 1.0)) { /* NaN fails too */
                snprintf(note, note_bytes,
                         " [OUTPUT WRONG: group %lld row %lld column %lld is %.6g, float64 %.6g]",
                         (long long)gi, (long long)row, (long long)col, (double)got, ref);
                ok = -1;
            } else if (ratio > worst) {
                worst = ratio;
            }
        }
    if (ok == 0)
        snprintf(note, note_bytes, "could not read its inputs and output back: %s",
                 cudaGetErrorString(cudaGetLastError()));
    else if (ok == 1)
        snprintf(note, note_bytes, ", output checked (float64 at %d elements%s: worst %.2f of the "
                 "tolerance)", PEER_CHECK_SAMPLES, c->groups > 1 ? " per group" : "", worst);
    free(sa), free(sb), free(codes), free(x);
    return ok;
}

static void add_peer(gpu_case *c) {
    const int form = c->form;
    const int64_t groups = c->groups, m = c->m, n = c->n, k = c->k;
    const int64_t a_rows = m * groups;
    const double flops = flops_of(c), bytes = bytes_of(c);
    if (!lt_load()) {
        for (int mode = 0; mode < 2; mode++)
            add_peer_error(c, mode, lt.error);
        return;
    }
    c->sa_group = calloc((size_t)groups, sizeof *c->sa_group);
    int ok = c->sa_group != NULL &&
             cudaMalloc((void **)&c->sb_padded, (size_t)(groups * c->nsb * c->l4) * 4) ==
                 cudaSuccess &&
             cudaMemset(c->sb_padded, 0, (size_t)(groups * c->nsb * c->l4) * 4) == cudaSuccess &&
             cudaMemcpy2D(c->sb_padded, (size_t)c->l4 * 4, c->sb, (size_t)c->kb * 4,
                          (size_t)c->kb * 4, (size_t)(groups * c->nsb),
                          cudaMemcpyDeviceToDevice) == cudaSuccess;
    for (int64_t gi = 0; ok && gi < groups; gi++) {
        if (form == NORMAL) {
            c->sa_group[gi] = c->sa; /* [kb][aligned_m], aligned_m == m for these shapes */
        } else if (form == MASKED) {
            c->sa_group[gi] = c->sa + gi * c->kb * c->aligned;
        } else { /* contiguous: [kb][m_sum] -> per group [kb][m] */
            ok = cudaMalloc((void **)&c->sa_group[gi], (size_t)(c->kb * m) * 4) == cudaSuccess &&
                 cudaMemcpy2D(c->sa_group[gi], (size_t)m * 4, c->sa + gi * m, (size_t)a_rows * 4,
                              (size_t)m * 4, (size_t)c->kb, cudaMemcpyDeviceToDevice) == cudaSuccess;
        }
    }
    if (!ok) {
        for (int mode = 0; mode < 2; mode++)
            add_peer_error(c, mode, "its device setup failed");
        return;
    }
    /* Two rows: blockwise scaling (the same math as ours) and per-tensor
     * scaling (unit scales: the speed of FP8 without fine-grained scaling,
     * what DeepGEMM compares with). Each is checked against float64 after its
     * warm-up, which leaves its output in D. */
    const char *shape = c->name + strlen("gemm/gpu/");
    for (int mode = PEER_BLOCKWISE; mode >= PEER_PER_TENSOR; mode--) {
        const int blockwise = mode == PEER_BLOCKWISE;
        snprintf(c->peer_name[mode], sizeof c->peer_name[mode], "gemm/peer/cublaslt_%s/%s",
                 blockwise ? "blockwise" : "per_tensor", shape);
        if (!bench_selected(c->peer_name[mode]))
            continue;
        lt_plan *p = &c->plan[mode];
        if (blockwise && m % 4) {
            add_peer_error(c, mode, "blockwise scaling needs m a multiple of 4");
            continue;
        }
        if (!lt_plan_make(p, m, n, k, blockwise)) {
            char msg[256];
            snprintf(msg, sizeof msg, "cuBLASLt has no %s FP8 algorithm for it (%s)",
                     blockwise ? "blockwise" : "per-tensor", p->why);
            add_peer_error(c, mode, msg);
            continue;
        }
        if (!peer_warm_up(c, mode)) {
            char msg[256];
            snprintf(msg, sizeof msg, "none of its %d %s algorithms ran", p->num_algos,
                     blockwise ? "blockwise" : "per-tensor");
            add_peer_error(c, mode, msg);
            continue;
        }
        char check[256];
        if (peer_check(c, blockwise, check, sizeof check) == 0) {
            add_peer_error(c, mode, check);
            continue;
        }
        char *label = c->peer_label[mode];
        const size_t cap = sizeof c->peer_label[mode];
        snprintf(label, cap, "peer: cuBLASLt %zu FP8 %s%s", lt.GetVersion(),
                 blockwise ? "1x128 x 128x128 blockwise" : "per-tensor (unit scales)",
                 groups > 1 ? ", one call per group" : "");
        if (p->used > 0) {
            char note[64];
            snprintf(note, sizeof note, ", heuristic algorithm %d", p->used);
            strncat(label, note, cap - strlen(label) - 1);
        }
        strncat(label, check, cap - strlen(label) - 1);
        bench_spec peer = {.name = c->peer_name[mode],
                           .run = blockwise ? run_peer_blockwise : run_peer_per_tensor,
                           .arg = c, .manual_time = 1, .flops = flops, .bytes = bytes,
                           .label = label, .unit = "us", .iterations = 30};
        bench_register(&peer);
    }
}

/* ------------------------------------------------- weight-gradient GEMM -- */

/*
 * dinf_fp8_wgrad_gemm_nt (1x128 scales on both operands, float32 D += A B^T)
 * on DeepGEMM v1.3's wgrad shapes: gemm/gpu/fp8_wgrad_nt/<shape> (ours) and
 * gemm/peer/cublaslt_1d1d/fp8_wgrad_nt/<shape>: cuBLASLt with VEC128 scales on both
 * operands, float32 C = D, beta 1 (the same math), if this cuBLASLt offers
 * it (else an error row saying so); its output checked once against float64
 * at sampled elements after a run from D = 0. Bytes: A, B, and D read and
 * written (float32). Same timing as the rows above (L2 flush, events, 30
 * calls; D keeps accumulating: the values do not change the time).
 */
typedef struct wgrad_case {
    int64_t m, n, k, kb;
    uint8_t *a, *b;
    float *sa, *sb, *d; /* sa [kb][m], sb [kb][n] (m, n multiples of 4: no padding) */
    lt_plan plan;
    char name[96], peer_name[128], label[160], peer_label[384];
} wgrad_case;

static double wgrad_flops(const wgrad_case *c) { return 2.0 * (double)c->m * (double)c->n * (double)c->k; }
static double wgrad_bytes(const wgrad_case *c) {
    return (double)c->m * (double)c->k + (double)c->n * (double)c->k + 8.0 * (double)c->m * (double)c->n;
}

static cublasStatus_t wgrad_peer_call(wgrad_case *c) {
    const float alpha = 1.0f, beta = 1.0f;
    lt.MatmulDescSetAttribute(c->plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &c->sb,
                              sizeof c->sb);
    lt.MatmulDescSetAttribute(c->plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &c->sa,
                              sizeof c->sa);
    return lt.Matmul(lt.handle, c->plan.desc, &alpha, c->b, c->plan.la, c->a, c->plan.lb, &beta,
                     c->d, c->plan.ld, c->d, c->plan.ld, &c->plan.algo, c->plan.workspace,
                     c->plan.workspace_bytes, g.stream);
}

static double wgrad_timed(wgrad_case *c, int peer) {
    cudaMemsetAsync(g.flush, 0, g.flush_bytes, g.stream);
    cudaEventRecord(g.start, g.stream);
    if (peer) {
        if (wgrad_peer_call(c) != CUBLAS_STATUS_SUCCESS) {
            bench_set_error("cublasLtMatmul failed");
            return -1;
        }
    } else {
        dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)g.stream);
        if (dinf_fp8_wgrad_gemm_nt(c->m, c->n, c->k, c->a, c->k, c->sa, c->b, c->k, c->sb, c->d,
                                   c->n, &exec) != DINF_STATUS_OK) {
            bench_set_error(dinf_last_error());
            return -1;
        }
    }
    const double seconds = stop_timer();
    if (seconds > 0) {
        const double f = wgrad_flops(c) / FP8_PEAK_FLOPS, b = wgrad_bytes(c) / HBM_BYTES_PER_S;
        bench_set_counter("floor_us", (f > b ? f : b) * 1e6);
        bench_set_counter("TFLOPS", wgrad_flops(c) / seconds / 1e12);
        bench_set_counter("GBps", wgrad_bytes(c) / seconds / 1e9);
    }
    return seconds;
}
static double run_wgrad(void *arg) { return wgrad_timed(arg, 0); }
static double run_wgrad_peer(void *arg) { return wgrad_timed(arg, 1); }

static void wgrad_peer_error(const char *name, const char *why) {
    peer_error *e = calloc(1, sizeof *e); /* lives until exit */
    if (!e)
        return;
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->message, sizeof e->message, "no cuBLASLt peer: %s", why);
    fprintf(stderr, "%s: %s\n", name, e->message);
    bench_spec spec = {.name = e->name, .run = run_peer_error, .arg = e, .manual_time = 1,
                       .label = "peer: cuBLASLt", .unit = "us", .iterations = 1};
    bench_register(&spec);
}

/* The cuBLASLt plan of the 1D x 1D problem (lt_plan_make, LT_1D1D: cuBLAS
 * "A" = our B with VEC128 scales [kb][n], "B" = our A with VEC128 [kb][m],
 * C = D float32 N x M, ld N), warmed up from D = 0 with the heuristic's
 * algorithms in order. */
static int wgrad_plan(wgrad_case *c) {
    lt_plan *p = &c->plan;
    if (!lt_plan_make(p, c->m, c->n, c->k, LT_1D1D))
        return 0;
    for (p->used = 0; p->used < p->num_algos; p->used++) {
        p->algo = p->algos[p->used];
        if (cudaMemsetAsync(c->d, 0, (size_t)(c->m * c->n) * 4, g.stream) == cudaSuccess &&
            wgrad_peer_call(c) == CUBLAS_STATUS_SUCCESS &&
            cudaStreamSynchronize(g.stream) == cudaSuccess)
            return 1;
        cudaGetLastError();
    }
    snprintf(p->why, sizeof p->why, "none of its %d VEC128 x VEC128 algorithms ran", p->num_algos);
    return 0;
}

/* The peer's D (from 0) at sampled elements against float64; 1 with a note,
 * -1 (OUTPUT WRONG note), 0 (could not read). */
static int wgrad_peer_check(const wgrad_case *c, char *note, size_t note_bytes) {
    const int64_t k = c->k, kb = c->kb;
    float *sa = malloc((size_t)(kb * c->m) * 4), *sb = malloc((size_t)(kb * c->n) * 4);
    uint8_t *codes = malloc((size_t)k * 2);
    float *x = malloc((size_t)k * 2 * sizeof(float));
    int ok = sa && sb && codes && x &&
             cudaMemcpy(sa, c->sa, (size_t)(kb * c->m) * 4, cudaMemcpyDeviceToHost) == cudaSuccess &&
             cudaMemcpy(sb, c->sb, (size_t)(kb * c->n) * 4, cudaMemcpyDeviceToHost) == cudaSuccess;
    double worst = 0;
    uint64_t r = (uint64_t)(c->m * 131 + c->n * 7 + k) | 1;
    for (int t = 0; ok == 1 && t < PEER_CHECK_SAMPLES; t++) {
        const int64_t row = (int64_t)(next_u64(&r) % (uint64_t)c->m);
        const int64_t col = (int64_t)(next_u64(&r) % (uint64_t)c->n);
        float got = 0;
        if (cudaMemcpy(codes, c->a + row * k, (size_t)k, cudaMemcpyDeviceToHost) != cudaSuccess ||
            cudaMemcpy(codes + k, c->b + col * k, (size_t)k, cudaMemcpyDeviceToHost) != cudaSuccess ||
            cudaMemcpy(&got, c->d + row * c->n + col, 4, cudaMemcpyDeviceToHost) != cudaSuccess ||
            dinf_convert(codes, DINF_DTYPE_FP8_E4M3, x, DINF_DTYPE_FLOAT32, 2 * k, NULL) !=
                DINF_STATUS_OK) {
            ok = 0;
            break;
        }
        double ref = 0, mag = 0;
        for (int64_t b = 0; b < kb; b++) {
            double part = 0, part_mag = 0;
            for (int64_t i = b * 128; i < k && i < b * 128 + 128; i++) {
                part += (double)x[i] * x[k + i];
                part_mag += fabs((double)x[i] * x[k + i]);
            }
            const double scale = (double)sa[b * c->m + row] * sb[b * c->n + col];
            ref += scale * part;
            mag += fabs(scale) * part_mag;
        }
        /* float32 output: 2^-16 of |ref| (float32 keeps 24 bits; the peer may
         * round each 128-k block and the sum) + 2e-5 of the terms' magnitude
         * (the tensor cores' accumulation), NaN failing */
        const double tol = fabs(ref) * 0x1p-16 + 2e-5 * mag;
        const double ratio = fabs((double)got - ref) / (tol > 0 ? tol : 1e-300);
        if (!(ratio <= 1.0)) {
            snprintf(note, note_bytes, " [OUTPUT WRONG: row %lld column %lld is %.9g, float64 %.9g]",
                     (long long)row, (long long)col, (double)got, ref);
            ok = -1;
        } else if (ratio > worst) {
            worst = ratio;
        }
    }
    if (ok == 0)
        snprintf(note, note_bytes, "could not read its inputs and output back: %s",
                 cudaGetErrorString(cudaGetLastError()));
    else if (ok == 1)
        snprintf(note, note_bytes, ", output checked (float64 at %d elements: worst %.2f of the "
                 "tolerance)", PEER_CHECK_SAMPLES, worst);
    free(sa), free(sb), free(codes), free(x);
    return ok;
}

static wgrad_case *wgrad_cases[16];
static int num_wgrad_cases;

static void add_wgrad_case(int64_t m, int64_t n, int64_t k) {
    wgrad_case *c = calloc(1, sizeof *c); /* lives until exit */
    if (!c)
        return;
    c->m = m, c->n = n, c->k = k, c->kb = (k + 127) / 128;
    snprintf(c->name, sizeof c->name, "gemm/gpu/fp8_wgrad_nt/m%lld_n%lld_k%lld", (long long)m,
             (long long)n, (long long)k);
    snprintf(c->peer_name, sizeof c->peer_name, "gemm/peer/cublaslt_1d1d/fp8_wgrad_nt/m%lld_n%lld_k%lld",
             (long long)m, (long long)n, (long long)k);
    const int ours = bench_selected(c->name), peer = bench_selected(c->peer_name);
    if ((!ours && !peer) || !setup()) {
        free(c);
        return;
    }
    int ok = cudaMalloc((void **)&c->a, (size_t)(m * k)) == cudaSuccess &&
             cudaMalloc((void **)&c->b, (size_t)(n * k)) == cudaSuccess &&
             cudaMalloc((void **)&c->sa, (size_t)(c->kb * m) * 4) == cudaSuccess &&
             cudaMalloc((void **)&c->sb, (size_t)(c->kb * n) * 4) == cudaSuccess &&
             cudaMalloc((void **)&c->d, (size_t)(m * n) * 4) == cudaSuccess &&
             cudaMemset(c->d, 0, (size_t)(m * n) * 4) == cudaSuccess &&
             fill_codes(c->a, (size_t)(m * k)) && fill_codes(c->b, (size_t)(n * k)) &&
             fill_scales(c->sa, (size_t)(c->kb * m), (uint64_t)(m + k)) &&
             fill_scales(c->sb, (size_t)(c->kb * n), (uint64_t)(n * 3 + k));
    if (!ok) {
        fprintf(stderr, "%s: device setup failed: %s\n", c->name,
                cudaGetErrorString(cudaGetLastError()));
        return;
    }
    if (peer && num_wgrad_cases < (int)(sizeof wgrad_cases / sizeof wgrad_cases[0]))
        wgrad_cases[num_wgrad_cases++] = c;
    if (!ours)
        return;
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)g.stream);
    dinf_status st = dinf_fp8_wgrad_gemm_nt(m, n, k, c->a, k, c->sa, c->b, k, c->sb, c->d, n, &exec);
    if (st != DINF_STATUS_OK || cudaStreamSynchronize(g.stream) != cudaSuccess) { /* JIT, untimed */
        fprintf(stderr, "%s: the first call failed: %s\n", c->name,
                st != DINF_STATUS_OK ? dinf_last_error() : cudaGetErrorString(cudaGetLastError()));
        return;
    }
    dinf_jit_kernel_config kc = DINF_JIT_KERNEL_CONFIG_INIT;
    if (dinf_fp8_gemm_kernel_config(DINF_FP8_GEMM_FORM_WGRAD, m, n, k, 1, 0, &kc) == DINF_STATUS_OK)
        snprintf(c->label, sizeof c->label,
                 "deepinfra wgrad kernel (JIT sm_90a, %lldx%lld, %lld stages; float32 D +=)",
                 (long long)kc.params[0], (long long)kc.params[1], (long long)kc.params[2]);
    else
        snprintf(c->label, sizeof c->label, "deepinfra wgrad kernel (JIT sm_90a; float32 D +=)");
    bench_spec spec = {.name = c->name, .run = run_wgrad, .arg = c, .manual_time = 1,
                       .flops = wgrad_flops(c), .bytes = wgrad_bytes(c), .label = c->label,
                       .unit = "us", .iterations = 30};
    bench_register(&spec);
}

static void add_wgrad_peer(wgrad_case *c) {
    if (c->m % 4 || c->n % 4) { /* cuBLASLt's VEC128 scales are [kb][m] unpadded; ours [kb][aligned] */
        wgrad_peer_error(c->peer_name, "its scale layout matches ours only for m and n multiples of 4");
        return;
    }
    if (!lt_load()) {
        wgrad_peer_error(c->peer_name, lt.error);
        return;
    }
    if (!wgrad_plan(c)) {
        char msg[256];
        snprintf(msg, sizeof msg, "cuBLASLt has no 1x128 x 1x128 FP8 algorithm with float32 D "
                 "for it (%s)", c->plan.why);
        wgrad_peer_error(c->peer_name, msg);
        return;
    }
    char check[256];
    if (wgrad_peer_check(c, check, sizeof check) == 0) {
        wgrad_peer_error(c->peer_name, check);
        return;
    }
    snprintf(c->peer_label, sizeof c->peer_label,
             "peer: cuBLASLt %zu FP8 1x128 x 1x128 (VEC128 both), float32 C = D, beta 1%s",
             lt.GetVersion(), check);
    bench_spec spec = {.name = c->peer_name, .run = run_wgrad_peer, .arg = c, .manual_time = 1,
                       .flops = wgrad_flops(c), .bytes = wgrad_bytes(c), .label = c->peer_label,
                       .unit = "us", .iterations = 30};
    bench_register(&spec);
}

void bench_register_gemm_gpu(void) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    if (dinf_device_query(0, &info) != DINF_STATUS_OK || !info.usable || info.cc_major != 9 ||
        info.cc_minor != 0)
        return;
    /* setup() (stream, L2 flush buffer, cuBLASLt) runs with the first selected shape. */
    static const int64_t normal_nk[][2] = {{2112, 7168}, {24576, 1536}, {32768, 512},
                                           {7168, 16384}, {4096, 7168}, {7168, 2048}};
    static const int64_t normal_m[] = {64, 128, 4096};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++)
            add_case(NORMAL, 1, normal_m[i], normal_nk[j][0], normal_nk[j][1]);
    /* deepgemm.md 4.4 grouped tables: (G, M per group, N, K). */
    static const int64_t contiguous[][4] = {
        {4, 8192, 4096, 7168}, {4, 8192, 7168, 2048}, {8, 4096, 4096, 7168}, {8, 4096, 7168, 2048}};
    for (int i = 0; i < 4; i++)
        add_case(CONTIGUOUS, contiguous[i][0], contiguous[i][1], contiguous[i][2], contiguous[i][3]);
    static const int64_t masked[][4] = {{1, 1024, 4096, 7168}, {1, 1024, 7168, 2048},
                                        {2, 512, 4096, 7168},  {2, 512, 7168, 2048},
                                        {4, 256, 4096, 7168},  {4, 256, 7168, 2048}};
    for (int i = 0; i < 6; i++)
        add_case(MASKED, masked[i][0], masked[i][1], masked[i][2], masked[i][3]);
    /* DeepGEMM v1.3's wgrad shapes (m, n) at k = 4096 */
    static const int64_t wgrad_mn[][2] = {{7168, 2112}, {1536, 24576}, {512, 32768},
                                          {16384, 7168}, {7168, 4096}, {2048, 7168}};
    for (int i = 0; i < 6; i++)
        add_wgrad_case(wgrad_mn[i][0], wgrad_mn[i][1], 4096);
    /* the peers last: their set-up runs inside cuBLASLt, their rows after ours */
    for (int i = 0; i < num_peer_cases; i++)
        add_peer(peer_cases[i]);
    for (int i = 0; i < num_wgrad_cases; i++)
        add_wgrad_peer(wgrad_cases[i]);
}

#else
void bench_register_gemm_gpu(void) {}
#endif
