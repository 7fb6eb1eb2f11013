/*
 * The Hopper (sm_90a) path of the FP8 GEMMs, internal to lib/gemm: the
 * config heuristic (gemm_heuristic.c), the GPU argument rules and the launch
 * (gemm_cuda.c). The kernel itself is the JIT template jit/templates/
 * fp8_gemm.cuh; its index math is jit/templates/fp8_gemm_sched.cuh. Not
 * installed.
 */
#ifndef DINF_GEMM_SM90_H
#define DINF_GEMM_SM90_H

#include "../core/internal.h"
#include "../core/parallel.h"
#include "../../jit/templates/fp8_gemm_sched.cuh"

#include "deepinfra/gemm.h"
#include "deepinfra/jit.h"

/* One kernel choice: the template constants and the launch shape. */
typedef struct dinf__fp8_config {
    int gemm_type;   /* DINF_FP8_GEMM_NORMAL / _CONTIGUOUS / _MASKED */
    int block_m;     /* 64 or 128 */
    int block_n;     /* 16, 32, 64 or 128 */
    int stages;      /* pipeline depth */
    int cluster;     /* CTAs per cluster (1: no TMA multicast in this version) */
    int threads;     /* 128 * (1 + block_m / 64) */
    int smem_bytes;  /* DINF_FP8_SMEM_BYTES(block_m, block_n, stages) */
    long long tiles; /* output tiles of the problem as the heuristic saw it */
    int waves;       /* ceil(tiles / num_sms) */
} dinf__fp8_config;

/*
 * The heuristic (DeepGEMM v1.0's rule, restricted to this version's tiles):
 *   block_m = 128 for the contiguous layout (its alignment); otherwise 64 when
 *             the rows per group (masked: expected_m) are <= 64, else 128;
 *   block_n = the candidate in {16, 32, 64, 128} with the fewest waves
 *             (ceil(tiles / num_sms)), then the fullest last wave, then the
 *             largest block_n;
 *   stages  = the largest depth <= 8 whose shared memory fits 227 KiB;
 *   cluster = 1.
 * m: rows per group (normal m; contiguous m_sum, num_groups ignored for the
 * tile count; masked expected_m, with num_groups groups). All sizes > 0
 * except m (0 counts as 1). Pure function, no device needed.
 */
dinf__fp8_config dinf__fp8_heuristic(int gemm_type, int64_t m, int64_t n, int64_t k,
                                     int64_t num_groups, int num_sms);

/* The JIT config (template "fp8_gemm") of a choice. */
void dinf__fp8_jit_config(const dinf__fp8_config *c, dinf_jit_kernel_config *out);

/* One GPU problem, after the common checks of gemm.c. Pointers are device
 * pointers (never dereferenced on the host). */
typedef struct dinf__fp8_gpu_problem {
    int gemm_type;
    int64_t m;          /* normal m, contiguous m_sum, masked m_max */
    int64_t n, k;
    int64_t num_groups; /* 1 for normal */
    int64_t expected_m; /* masked only */
    const uint8_t *a;
    int64_t lda;
    const float *a_scales;
    const uint8_t *b;
    int64_t ldb;
    const float *b_scales;
    uint16_t *d;
    int64_t ldd;
    const int32_t *group_info; /* m_indices or masked_m */
} dinf__fp8_gpu_problem;

/* The rules of the Hopper kernels beyond the common checks (pure, CPU
 * testable): INVALID_ARGUMENT for misaligned pointers or strides,
 * UNSUPPORTED for sizes the kernels do not take (k == 0, sizes above int32,
 * strides beyond the tensor-map limit). Empty problems pass. */
dinf_status dinf__fp8_gpu_check(const char *func, const dinf__fp8_gpu_problem *p);

/* The geometry of one 3-D tiled tensor map (cuTensorMapEncodeTiled's
 * arguments): element (c0, c1, c2) lives at base + c0 * elem_bytes +
 * c1 * strides[0] + c2 * strides[1]; a box of box[0] x box[1] x box[2]
 * elements lands in shared memory, out-of-bounds elements as zeros. */
typedef struct dinf__fp8_tensor_map_geometry {
    const void *base;
    int elem_bytes;    /* 1 (e4m3) or 4 (float32) */
    int swizzle_128b;  /* 1: CU_TENSOR_MAP_SWIZZLE_128B, 0: none */
    uint64_t dims[3];
    uint64_t strides[2]; /* bytes */
    uint32_t box[3];
} dinf__fp8_tensor_map_geometry;

/* Everything one launch needs, computed on the host without a device. */
typedef struct dinf__fp8_launch_plan {
    dinf__fp8_config config;
    dinf_fp8_gemm_args args;
    dinf__fp8_tensor_map_geometry map_a, map_b, map_sa;
    unsigned grid; /* persistent CTAs: min(num_sms, tile bound) */
} dinf__fp8_launch_plan;

/* Plan a checked, non-empty problem for a device with num_sms SMs (pure). */
void dinf__fp8_plan(const dinf__fp8_gpu_problem *p, int num_sms, dinf__fp8_launch_plan *plan);

/* Run p on place (DINF_EXEC_CUDA): device check (sm_90, else UNSUPPORTED),
 * dinf__fp8_gpu_check, heuristic, JIT, tensor maps, launch on place->stream.
 * Asynchronous. */
dinf_status dinf__fp8_gemm_cuda(const char *func, const dinf__place *place,
                                const dinf__fp8_gpu_problem *p);

#endif
