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

/* The two rungs of the Hopper kernel. */
#define DINF__FP8_KERNEL_FAST 0   /* fp8_gemm_fast.cuh (the default) */
#define DINF__FP8_KERNEL_SIMPLE 1 /* fp8_gemm.cuh, the reference rung */
#define DINF__FP8_KERNEL_WGRAD 2  /* fp8_gemm_1d1d.cuh: the weight-gradient GEMM (its only
                                     kernel; gemm_type normal) */

/* What the heuristic and the plan know of the device: its SM count and how
 * many clusters of c CTAs (c = 1 .. DINF_FP8_FAST_MAX_SPLIT_K; slots[0]
 * unused) it holds at once, one CTA per SM. A cluster lives in one GPC, so
 * clusters of 3 and 4 may not pack all SMs (a 132-SM H100/H200 holds 66
 * pairs but, depending on its GPCs, fewer than 33 fours). */
typedef struct dinf__fp8_device {
    int num_sms;
    int slots[DINF_FP8_FAST_MAX_SPLIT_K + 1];
} dinf__fp8_device;

/* A device of num_sms SMs (< 1 counts as 1) whose GPCs pack every cluster
 * size fully: slots[c] = num_sms / c. */
void dinf__fp8_device_ideal(int num_sms, dinf__fp8_device *dev);

/* The CUDA device `device` (-1: the current one) as the GPU path sees it
 * (cached per device and SM count once every query answered):
 * UNSUPPORTED / INVALID_ARGUMENT as the GPU path's device check (not sm_90,
 * no such device); slots from cudaOccupancyMaxActiveClusters
 * (kernels/core/cluster_slots.cu), the ideal count where the query fails.
 * CPU-only build: UNSUPPORTED. */
dinf_status dinf__fp8_device_query(const char *func, int device, dinf__fp8_device *dev);

/* One kernel choice: the template constants and the launch shape. */
typedef struct dinf__fp8_config {
    int kernel;      /* DINF__FP8_KERNEL_FAST or _SIMPLE */
    int gemm_type;   /* DINF_FP8_GEMM_NORMAL / _CONTIGUOUS / _MASKED */
    int block_m;     /* 64 or 128; fast rung also 256 (normal / masked, block_n <= 128, split_k 1) */
    int block_n;     /* simple: 16, 32, 64, 128; fast: dinf_fp8_fast_block_n_ok */
    int stages;      /* pipeline depth */
    int cluster;     /* CTAs per cluster: 1, 2 (fast only: A multicast), or split_k */
    int split_k;     /* 1, or 2..4 (fast only, cluster = split_k: the cluster splits each
                        tile's k blocks) */
    int threads;     /* dinf_fp8_threads(block_m): 256 (block_m 64) or 384 */
    int smem_bytes;  /* DINF_FP8_SMEM_BYTES / DINF_FP8_FAST_SPLIT_SMEM_BYTES */
    long long tiles; /* output tiles of the problem as the heuristic saw it */
    int waves;       /* ceil(split_k * tiles / num_sms) */
    int last_wave;   /* CTAs in the last wave (num_sms when they fill it) */
} dinf__fp8_config;

/*
 * The fast rung's heuristic (gemm_heuristic.c), DeepGEMM's v1 rule widened
 * to its block sizes:
 *   block_m = 128 for the contiguous layout (its alignment); otherwise 64 when
 *             the rows per group (masked: expected_m) are <= 64, else 128;
 *   block_n, in {16, 32, ..., 128, 144, 160} (dinf_fp8_fast_block_n_ok): the
 *             fewest waves (ceil(tiles / num_sms)); then the fullest last
 *             wave; then the most stages; then multicast legal (below); then
 *             the smaller block_n (equal tile counts: less wasted width);
 *   stages  = the most that fit 227 KiB with the output tile, at most 16;
 *   cluster = 2 (A multicast) when num_sms is even, the N-blocks are even in
 *             number (no phantom partner), the rows per group (masked:
 *             expected_m) are >= 512 and there is more than one wave;
 *             else 1;
 *   one wave: when that choice is a single wave, every one-wave candidate
 *             is re-ranked by its modelled time (dinf__fp8_one_wave_cycles):
 *             each block_n unsplit (tiles <= num_sms, cluster 1) and, when
 *             k has at least 8 blocks of 128, with split-K s = 2, 3, 4
 *             (cluster s, tiles <= the device's slots for clusters of s;
 *             only when every rank gets k blocks); among the candidates
 *             within 1/32 of the fewest modelled cycles (the model cannot
 *             rank them) more CTAs win, then the smaller split, then more
 *             stages, then the smaller block_n. (The fullest-last-wave rule
 *             alone picks block_n 16 for N = 2112 at M <= 128: every CTA then
 *             streams all of A for a 16-column tile, and the SMs load 4-8x
 *             the bytes of B from L2.)
 *   block_m 256: when the choice so far has block_m 128 and no split, the
 *             form is normal or masked and the rows per group exceed 128,
 *             the same block_n ranking (waves, last wave, stages, multicast
 *             by the same rule, smaller block_n) over block_n <= 128 (the
 *             register budget of two waves) gives the 256-row candidate; it
 *             replaces the choice when its wave time waves x 256 x block_n
 *             is strictly below waves x 128 x block_n of the 128-row choice
 *             (never loses SM fill; larger tiles load fewer A/B bytes per
 *             output). Contiguous stays at 128 (its segments align to 128
 *             rows only: a 256-row tile could span two groups).
 * m: rows per group (normal m; contiguous m_sum, num_groups ignored for the
 * tile count; masked expected_m, with num_groups groups). Sizes > 0 except m
 * (0 counts as 1). Pure function, no device needed: dinf__fp8_heuristic
 * assumes fully packed clusters (dinf__fp8_device_ideal), _dev takes the
 * device's slots.
 */
dinf__fp8_config dinf__fp8_heuristic(int gemm_type, int64_t m, int64_t n, int64_t k,
                                     int64_t num_groups, int num_sms);
dinf__fp8_config dinf__fp8_heuristic_dev(int gemm_type, int64_t m, int64_t n, int64_t k,
                                         int64_t num_groups, const dinf__fp8_device *dev);

/*
 * The cost model of the one-wave choice, in SM clock cycles (constants: the
 * H100/H200 datasheets and DeepGEMM HEAD's own L2 model; leads, not
 * measurements). A candidate (block_m, block_n, split_k) runs `ctas` CTAs,
 * each over kc = ceil(k_blocks / split_k) k blocks (rank 0's share); a_rows
 * is the rows per group (the hint m):
 *   L2     ctas * kc * 128 * (min(block_m, a_rows) + block_n) bytes loaded
 *          from L2 (TMA fetches no rows past the tensor), at
 *          min(64 * ctas, 6144) bytes per cycle (an SM ingests at most 64,
 *          the L2 delivers about 6 KiB per cycle, ~11 TB/s at 1.8 GHz);
 *   smem   kc * (block_m + block_m / 64 * block_n): the bytes the wgmma read
 *          from shared memory (A once, B once per 64-row wave), 128 per cycle;
 *   mma    kc * block_m * block_n / 32: 128-K multiply-adds at 4096 per cycle;
 *   reduce (split_k - 1) * block_m * block_n * 4 / 64: the other ranks'
 *          float32 partials through distributed shared memory at 64 bytes
 *          per cycle, after the last loads;
 *   time   max(hbm_cycles, L2, smem, mma) + reduce.
 * dinf__fp8_hbm_cycles: the problem's unique bytes (B of every group once,
 * the A rows and the bf16 D rows once; masked rows = m * num_groups) at
 * 2600 bytes per cycle (the H200's 4.8 TB/s at ~1.85 GHz). Candidates at
 * the HBM floor differ by their reduction tails only, within the heuristic's
 * 1/32 tolerance: the tie goes to more CTAs (more loads in flight).
 * Pure functions.
 */
#define DINF__FP8_MODEL_SM_BYTES_PER_CYCLE 64
#define DINF__FP8_MODEL_L2_BYTES_PER_CYCLE 6144
#define DINF__FP8_MODEL_DSMEM_BYTES_PER_CYCLE 64
#define DINF__FP8_MODEL_HBM_BYTES_PER_CYCLE 2600
long long dinf__fp8_hbm_cycles(int gemm_type, int64_t m, int64_t n, int64_t k,
                               int64_t num_groups);
long long dinf__fp8_one_wave_cycles(int block_m, int block_n, int split_k, long long k_blocks,
                                    long long a_rows, long long ctas, long long hbm_cycles);

/* The simple rung's rule (unchanged from part 1): block_m as above; block_n
 * in {16, 32, 64, 128} with the fewest waves, then the fullest last wave,
 * then the larger block_n; stages the most <= 8 that fit; cluster 1, no
 * split. */
dinf__fp8_config dinf__fp8_heuristic_simple(int gemm_type, int64_t m, int64_t n, int64_t k,
                                            int64_t num_groups, int num_sms);

/* The weight-gradient kernel's rule (fp8_gemm_1d1d.cuh): the simple rung's
 * block_m and block_n for the normal form; stages the most <= 8 that fit
 * DINF_FP8_WGRAD_SMEM_BYTES; cluster 1, no split. */
dinf__fp8_config dinf__fp8_heuristic_wgrad(int64_t m, int64_t n, int64_t k, int num_sms);

/* The rung the GPU path runs: $DINF_FP8_GEMM_KERNEL = "fast" (or unset or
 * empty) -> DINF__FP8_KERNEL_FAST, "simple" -> DINF__FP8_KERNEL_SIMPLE,
 * anything else INVALID_ARGUMENT naming the value. Read at every call (tests
 * switch rungs in one process). */
dinf_status dinf__fp8_kernel_from_env(const char *func, int *kernel);

/* Programmatic dependent launch of the fast rung: $DINF_FP8_GEMM_PDL = "1"
 * (or unset or empty) -> *pdl = 1, "0" -> 0, anything else INVALID_ARGUMENT
 * naming the value (*pdl = 1). Read at every GPU call (an A/B switch). */
dinf_status dinf__fp8_pdl_from_env(const char *func, int *pdl);

/* The heuristic of a rung (ideal cluster packing; _dev: the device's);
 * kernel DINF__FP8_KERNEL_WGRAD: dinf__fp8_heuristic_wgrad (gemm_type and
 * num_groups ignored). */
dinf__fp8_config dinf__fp8_choose(int kernel, int gemm_type, int64_t m, int64_t n, int64_t k,
                                  int64_t num_groups, int num_sms);
dinf__fp8_config dinf__fp8_choose_dev(int kernel, int gemm_type, int64_t m, int64_t n, int64_t k,
                                      int64_t num_groups, const dinf__fp8_device *dev);

/* The JIT config of a choice: template "fp8_gemm_fast" {GEMM_TYPE, BLOCK_M,
 * BLOCK_N, NUM_STAGES, CLUSTER, SPLIT_K}, "fp8_gemm" {GEMM_TYPE, BLOCK_M,
 * BLOCK_N, NUM_STAGES} or "fp8_gemm_1d1d" {BLOCK_M, BLOCK_N, NUM_STAGES}. */
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
    void *d;                   /* bf16 bits; float32 for wgrad */
    int64_t ldd;
    const int32_t *group_info; /* m_indices or masked_m */
    int wgrad;                 /* 1: the weight-gradient GEMM (gemm_type normal; b_scales
                                  N-major [k_blocks][aligned_n]; d float32, accumulated) */
} dinf__fp8_gpu_problem;

/* The rules of the Hopper kernels beyond the common checks (pure, CPU
 * testable): INVALID_ARGUMENT for misaligned pointers or strides,
 * UNSUPPORTED for sizes the kernels do not take (k == 0, sizes above int32,
 * strides beyond the tensor-map limit). Empty problems pass. */
dinf_status dinf__fp8_gpu_check(const char *func, const dinf__fp8_gpu_problem *p);

/* The geometry of one 3-D tiled tensor map (cuTensorMapEncodeTiled's
 * arguments): element (c0, c1, c2) lives at base + c0 * elem_bytes +
 * c1 * strides[0] + c2 * strides[1]; a box of box[0] x box[1] x box[2]
 * elements moves between the tensor and shared memory (loads: out-of-bounds
 * elements as zeros; stores: out-of-bounds elements not written). */
typedef struct dinf__fp8_tensor_map_geometry {
    const void *base;
    int elem_bytes;    /* 1 (e4m3), 2 (bf16, stored as 16-bit) or 4 (float32) */
    int swizzle_bytes; /* 0 (none), 32, 64 or 128: CU_TENSOR_MAP_SWIZZLE_<n>B */
    uint64_t dims[3];
    uint64_t strides[2]; /* bytes */
    uint32_t box[3];
} dinf__fp8_tensor_map_geometry;

/* Everything one launch needs, computed on the host without a device. */
typedef struct dinf__fp8_launch_plan {
    dinf__fp8_config config;
    dinf_fp8_gemm_args args;
    dinf__fp8_tensor_map_geometry map_a, map_b, map_sa;
    dinf__fp8_tensor_map_geometry map_d;  /* fast rung only (TMA-store epilogue) */
    dinf__fp8_tensor_map_geometry map_sb; /* wgrad only: the N-major B scales */
    unsigned grid; /* persistent CTAs: cluster * min(slots[cluster], unit bound) */
} dinf__fp8_launch_plan;

/* Plan a checked, non-empty problem for a device with num_sms SMs (ideal
 * cluster packing; _dev: the device's slots) on rung `kernel` (pure; a wgrad
 * problem always gets the wgrad kernel). */
void dinf__fp8_plan(const dinf__fp8_gpu_problem *p, int num_sms, int kernel,
                    dinf__fp8_launch_plan *plan);
void dinf__fp8_plan_dev(const dinf__fp8_gpu_problem *p, const dinf__fp8_device *dev, int kernel,
                        dinf__fp8_launch_plan *plan);

/* Plan with a given config (tests force configs the heuristic would not pick:
 * phantom partners, every block_n). */
void dinf__fp8_plan_config(const dinf__fp8_gpu_problem *p, int num_sms,
                           const dinf__fp8_config *config, dinf__fp8_launch_plan *plan);
void dinf__fp8_plan_config_dev(const dinf__fp8_gpu_problem *p, const dinf__fp8_device *dev,
                               const dinf__fp8_config *config, dinf__fp8_launch_plan *plan);

/* Run p on place (DINF_EXEC_CUDA): device check (sm_90, else UNSUPPORTED),
 * dinf__fp8_gpu_check, heuristic, JIT, tensor maps, launch on place->stream.
 * Asynchronous. */
dinf_status dinf__fp8_gemm_cuda(const char *func, const dinf__place *place,
                                const dinf__fp8_gpu_problem *p);

/* The same with a given config (GPU tests: every fast-rung block_n and cluster
 * size, phantom partners) instead of the heuristic's; NULL: the heuristic.
 * The config must be one its template accepts (the JIT reports the rest). */
dinf_status dinf__fp8_gemm_cuda_config(const char *func, const dinf__place *place,
                                       const dinf__fp8_gpu_problem *p,
                                       const dinf__fp8_config *forced);

#endif
