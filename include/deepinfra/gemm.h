/*
 * libdeepinfra gemm: DeepGEMM-style FP8 GEMMs with fine-grained scaling.
 *
 *   D[m][n] (bfloat16) = sum over 128-wide k blocks kb of
 *       a_scale[m][kb] * b_scale[n/128][kb] * sum_{k in kb} A[m][k] * B[n][k]
 *
 * A is e4m3 [m][k] with one float32 scale per token per 128 channels
 * ("1x128", dinf_fp8_quantize with block_rows = 1), B is e4m3 [n][k] (the
 * "NT" layout: both operands K-major) with one scale per 128x128 block
 * (block_rows = 128). A's scales are passed in the M-major, 16-byte-aligned
 * layout the GPU kernels read (dinf_fp8_scale_layout_mn_major):
 * a_scales[kb * aligned_m + i], aligned_m = ceil(m/4)*4. Products of each
 * 128-k block are summed in float32, scaled, accumulated in float32 across
 * blocks (in block order), and rounded once to bfloat16 (nearest even).
 *
 * Three forms, as DeepGEMM v1:
 *   dinf_fp8_gemm_nt                         one GEMM
 *   dinf_fp8_m_grouped_gemm_nt_contiguous    MoE experts stacked along m: row i uses
 *                                            group m_indices[i] (-1: skip the row)
 *   dinf_fp8_m_grouped_gemm_nt_masked        [G][m_max] rows, only the first masked_m[g]
 *                                            rows of group g are computed
 * and the weight-gradient GEMMs of training (1x128 scales on both operands,
 * float32 output accumulated in place; described before their declarations):
 *   dinf_fp8_wgrad_gemm_nt                   one GEMM
 *   dinf_fp8_k_grouped_wgrad_gemm_nt         one per MoE expert, k_g tokens each
 *
 * Typical use on the GPU (all buffers device memory; x [m][k], w [n][k] float32):
 *
 *     dinf_exec gpu = DINF_EXEC_CUDA_INIT(0, stream);
 *     dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, m, k, k, 1, a, k, sa_rows, &gpu);
 *     dinf_fp8_scale_layout_mn_major(sa_rows, m, kb, a_scales, NULL, &gpu);
 *     dinf_fp8_quantize(w, DINF_DTYPE_FLOAT32, n, k, k, 128, b, k, b_scales, &gpu);
 *     dinf_fp8_gemm_nt(m, n, k, a, k, a_scales, b, k, b_scales, d, n, &gpu);
 *
 * (kb = ceil(k/128); pass NULL as exec for the same on the CPU.) The first
 * GPU call of a tile configuration compiles its kernel; to do that ahead:
 *
 *     dinf_jit_kernel_config c;
 *     dinf_fp8_gemm_kernel_config(DINF_FP8_GEMM_FORM_NORMAL, m, n, k, 1, num_sms, &c);
 *     dinf_jit_precompile(&c, 1, NULL);
 *
 * Where it runs (exec, the last argument): the CPU implementation (threaded)
 * follows the semantics above in a fixed, documented order, bit for bit for
 * any thread count and in every vector instruction set it runs in (the
 * widest the CPU and OS support: AVX-512, AVX2 or the build's baseline;
 * only a NaN's sign and payload may differ where two NaNs meet; the
 * environment variable DINF_CPU_ISA=base|avx2|avx512, read on every CPU
 * call, caps it, and any other value is INVALID_ARGUMENT); it is the oracle of the
 * GPU kernels, which are compared with it within a tolerance (tensor-core
 * accumulation is not sequential float32).
 *
 * DINF_EXEC_CUDA runs Hopper kernels (sm_90a: TMA loads, an mbarrier
 * pipeline, wgmma e4m3 with each 128-k block promoted into float32 with its
 * scales), compiled at run time by the JIT (deepinfra/jit.h) for the shape's
 * tile configuration on first use (dinf_fp8_gemm_kernel_config +
 * dinf_jit_precompile compile ahead). Two rungs: the fast kernel (the
 * default: register reallocation, a deep pipeline, a TMA-store epilogue,
 * block_n up to 160, 256-row tiles for large normal and masked problems
 * (two 64-row wgmma waves per math warpgroup; same bits as 128-row tiles),
 * 2-CTA clusters that multicast A or, for one-wave
 * problems, clusters of 2 to 4 CTAs that split K and add their float32
 * partials in a fixed order) and the
 * simple reference kernel; the environment variable DINF_FP8_GEMM_KERNEL
 * ("fast" or unset, "simple") picks one at every call, anything else is
 * DINF_STATUS_INVALID_ARGUMENT. Both are deterministic. A split-K result
 * adds the same float32 block values in another order (each rank's run of k
 * blocks, then the ranks' partials), so it may differ from the unsplit
 * result by the float32 rounding of that order, which is relative to the
 * magnitudes of the terms, not of the result: usually the last bf16 place,
 * more where the sum cancels (a result far smaller than its terms). Every
 * buffer is device memory of
 * exec->device (exec->stream, when not NULL, must belong to that device:
 * else DINF_STATUS_INVALID_ARGUMENT); the call enqueues on exec->stream and
 * returns without synchronising. It is CUDA-graph capturable; a first call
 * inside a capture compiles (NVRTC, seconds) and loads the kernel there
 * (the load runs in relaxed capture mode and leaves the capture intact), so
 * warm up with dinf_jit_precompile or one eager call to keep compilation
 * out of the captured region. The calling thread's CUDA context is left as
 * it was (a thread without one has none afterwards).
 *
 * Programmatic dependent launch (fast kernel; DINF_FP8_GEMM_PDL = "1" or
 * unset: on, "0": off, anything else DINF_STATUS_INVALID_ARGUMENT naming the
 * value; read at every call): the GEMM is launched with
 * cudaLaunchAttributeProgrammaticStreamSerialization, so its thread blocks
 * may start (set up shared memory, barriers, tensor maps) while the previous
 * kernel on exec->stream is still running; every thread then waits
 * (griddepcontrol.wait) until that kernel has completed and its writes are
 * visible before it reads or writes any global memory: a, b, the scales,
 * m_indices / masked_m and d may be produced by the kernel right before the
 * call, exactly as without PDL. Stream order is otherwise unchanged (memory
 * copies, events and kernels of other streams order the GEMM as usual). In a
 * CUDA-graph capture the dependency is recorded as a programmatic edge when
 * the GEMM follows exactly one kernel node (after a memset, a copy or a join
 * of several branches it is captured as an ordinary edge), and the graph
 * replays with the same guarantee. The GEMM also signals early
 * (griddepcontrol.launch_dependents): a kernel of yours launched after it
 * with the programmatic attribute may start while the GEMM runs, and must
 * itself execute griddepcontrol.wait (cudaGridDependencySynchronize) before
 * touching memory the GEMM reads or writes, as the PDL rules require. The
 * simple kernel never uses PDL.
 *
 * Hang guard (both kernels): every mbarrier wait of the producer (and of the
 * split-K reduction) gives up after 4 s and executes trap, so a pipeline
 * that stops (a TMA load that never lands, a stage never released, a
 * reduction partner that never arrives) fails the launch with a sticky CUDA
 * error, reported by the next synchronising call, instead of hanging the
 * stream. The math warpgroups' waits on loaded stages are covered through
 * the producer, which waits (bounded) for every stage it filled to be
 * released; not covered: named and cluster barriers (hardware waits
 * without a time-out) and a math warpgroup waiting for a stage the producer
 * never fills (a scheduler disagreement; the CPU models and the emulator
 * check it never happens). The clock starts after griddepcontrol.wait, so a
 * long upstream kernel never counts; a debugger or an instrumenting tool
 * pausing the kernel for more than 4 s trips it.
 * Extra rules on this path:
 *   - the device must be compute capability 9.0, else DINF_STATUS_UNSUPPORTED
 *     (the CPU path stays available);
 *   - k >= 1 and m, n, k, num_groups below 2^31, else UNSUPPORTED;
 *   - a, b, a_scales and d 16-byte aligned, lda and ldb multiples of 16 bytes,
 *     ldd a multiple of 8 elements, b_scales and m_indices/masked_m 4-byte
 *     aligned, else DINF_STATUS_INVALID_ARGUMENT;
 *   - m_indices and masked_m are device memory and are not read by the host:
 *     the kernel reads m_indices at the first row of each 128-row block and
 *     skips a block whose index is outside [0, num_groups) (-1 included);
 *     indices changing inside a block are not detected (the block uses its
 *     first row's group). masked_m[g] is clamped to [0, m_max] on the device,
 *     so a count above m_max writes m_max rows and never beyond the group.
 *     The CPU path rejects both with DINF_STATUS_INVALID_ARGUMENT.
 *
 * Sizes: m, n, k >= 0 (an empty product writes nothing; k == 0 writes zeros);
 * partial blocks at the edges of k and n are allowed. Leading dimensions are
 * in elements (bytes for e4m3) and at least the row length. The output may
 * not overlap an input (inputs may share memory).
 */
#ifndef DEEPINFRA_GEMM_H
#define DEEPINFRA_GEMM_H

#include "deepinfra/core.h"
#include "deepinfra/jit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows per group of the contiguous layout: each group's segment of m_indices
 * is padded to a multiple of this many rows. */
#define DINF_FP8_GEMM_M_ALIGNMENT 128

/*
 * dinf_fp8_gemm_nt - D = A * B^T with 1x128 / 128x128 scaling.
 * Arguments:
 *   m, n, k   [IN]  sizes, >= 0
 *   a         [IN]  e4m3 [m][k], row stride lda bytes
 *   a_scales  [IN]  float32 [ceil(k/128)][aligned_m], M-major (see the top)
 *   b         [IN]  e4m3 [n][k], row stride ldb bytes
 *   b_scales  [IN]  float32 [ceil(n/128)][ceil(k/128)], row-major
 *   d         [OUT] bfloat16 bits [m][n], row stride ldd elements, caller-owned
 *   exec      [IN]  NULL = CPU
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL pointers,
 * negative sizes, leading dimensions below the row length, overlapping
 * buffers, products overflowing), DINF_STATUS_UNSUPPORTED (DINF_EXEC_CUDA),
 * DINF_STATUS_OUT_OF_MEMORY.
 */
DINF_API dinf_status dinf_fp8_gemm_nt(int64_t m, int64_t n, int64_t k, const uint8_t *a,
                                      int64_t lda, const float *a_scales, const uint8_t *b,
                                      int64_t ldb, const float *b_scales, uint16_t *d, int64_t ldd,
                                      const dinf_exec *exec);

/*
 * dinf_fp8_m_grouped_gemm_nt_contiguous - grouped along m, groups stacked.
 * Arguments:
 *   m_sum, n, k [IN]  total rows, columns, depth; m_sum % 128 == 0
 *   num_groups  [IN]  >= 1
 *   a, lda, a_scales [IN] as dinf_fp8_gemm_nt with m = m_sum
 *   b           [IN]  e4m3 [num_groups][n][k], row stride ldb, group stride n*ldb
 *   b_scales    [IN]  float32 [num_groups][ceil(n/128)][ceil(k/128)]
 *   d, ldd      [OUT] bfloat16 [m_sum][n]; rows whose m_indices is -1 are not written
 *   m_indices   [IN]  int32 [m_sum]: group of each row, or -1; constant over each
 *                     aligned block of 128 rows
 *   exec        [IN]  NULL = CPU
 * Returns as dinf_fp8_gemm_nt; INVALID_ARGUMENT also for m_sum % 128 != 0,
 * and on the CPU for an index outside [-1, num_groups) or one that changes
 * inside a 128-row block (the message names the row); on DINF_EXEC_CUDA
 * m_indices is device memory: see the device-side contract at the top.
 */
DINF_API dinf_status dinf_fp8_m_grouped_gemm_nt_contiguous(
    int64_t m_sum, int64_t n, int64_t k, int64_t num_groups, const uint8_t *a, int64_t lda,
    const float *a_scales, const uint8_t *b, int64_t ldb, const float *b_scales, uint16_t *d,
    int64_t ldd, const int32_t *m_indices, const dinf_exec *exec);

/*
 * dinf_fp8_m_grouped_gemm_nt_masked - one GEMM per group on padded inputs.
 * Arguments:
 *   num_groups, m_max, n, k [IN] >= 0 (num_groups >= 1)
 *   a           [IN]  e4m3 [num_groups][m_max][k], row stride lda, group stride m_max*lda
 *   a_scales    [IN]  float32 [num_groups][ceil(k/128)][aligned_m_max], each group
 *                     M-major (aligned_m_max = ceil(m_max/4)*4)
 *   b, ldb, b_scales [IN] as the contiguous form
 *   d, ldd      [OUT] bfloat16 [num_groups][m_max][n]; rows >= masked_m[g] not written
 *   masked_m    [IN]  int32 [num_groups], 0 <= masked_m[g] <= m_max (device memory
 *                     for DINF_EXEC_CUDA)
 *   expected_m  [IN]  a hint of the typical masked_m for the GPU kernel choice; >= 0
 *   exec        [IN]  NULL = CPU
 * Returns as dinf_fp8_gemm_nt; INVALID_ARGUMENT also for masked_m out of range
 * on the CPU (the message names the group); on DINF_EXEC_CUDA masked_m is
 * device memory, clamped to [0, m_max] by the kernel (see the top).
 */
DINF_API dinf_status dinf_fp8_m_grouped_gemm_nt_masked(
    int64_t num_groups, int64_t m_max, int64_t n, int64_t k, const uint8_t *a, int64_t lda,
    const float *a_scales, const uint8_t *b, int64_t ldb, const float *b_scales, uint16_t *d,
    int64_t ldd, const int32_t *masked_m, int64_t expected_m, const dinf_exec *exec);

/*
 * The weight-gradient GEMMs ("1D1D" scaling; DeepGEMM v1.3's
 * wgrad_gemm_fp8_fp8_fp32_nt and k_grouped_wgrad_gemm_fp8_fp8_fp32_nt):
 * both operands carry one float32 scale per row per 128 k (dinf_fp8_quantize
 * with block_rows = 1 on each), and the float32 output is accumulated in
 * place:
 *
 *   D[i][j] (float32) += sum over 128-wide k blocks kb of
 *       a_scale[i][kb] * b_scale[j][kb] * sum_{k in kb} A[i][k] * B[j][k]
 *
 * In training k is the token dimension: for a layer y = x W^T (W [n_out][n_in]),
 * dW += dy^T x is this GEMM with A = dy^T [n_out][tokens] and B = x^T
 * [n_in][tokens], each quantized 1x128 along the tokens, and D = dW, the
 * float32 gradient accumulator (zero it first for a plain product).
 *
 * Order (the CPU path, exactly; the GPU within a tolerance, as the forms
 * above): total is summed from +0.0f block by block as at the top, with
 * (a_scale[i][kb] * b_scale[j][kb]) as the block's scale, then
 * d[i][j] = d[i][j] + total, one float32 addition (nearest even). A sum with
 * no k (k == 0, or a group with k_g == 0) leaves d as it is. Both scale
 * tensors are M-major / N-major as A's scales above
 * (dinf_fp8_scale_layout_mn_major): a_scales[kb * aligned_m + i],
 * b_scales[kb * aligned_n + j], aligned_x = ceil(x/4)*4.
 *
 * DINF_EXEC_CUDA: a Hopper kernel of its own (JIT template "fp8_gemm_1d1d":
 * TMA loads of A, B and both scale tiles into an mbarrier pipeline, wgmma
 * e4m3, each 128-k block promoted with its row and column scales, float32
 * read-add-write of d), on the stream, asynchronous, graph-capturable, the
 * hang guard as above; no PDL, no clusters; DINF_FP8_GEMM_KERNEL and
 * DINF_FP8_GEMM_PDL do not apply. Extra rules there: as the forms above
 * (sm_90, k >= 1 (k == 0 returns at once), sizes below 2^31; a, b and both
 * scale tensors 16-byte aligned, lda and ldb multiples of 16 bytes) but d
 * only 4-byte aligned (a float32 array), any ldd; the k-grouped form runs
 * one launch per group with k_g > 0, in group order, after checking every
 * group's rules (a rejected call adds nothing), and every k_g must be a
 * multiple of 16 (the row stride of A_g and B_g), else
 * DINF_STATUS_INVALID_ARGUMENT (checked before any device work).
 */

/*
 * dinf_fp8_wgrad_gemm_nt - D += A * B^T with 1x128 scales on both operands.
 * Arguments:
 *   m, n, k   [IN]     sizes, >= 0
 *   a         [IN]     e4m3 [m][k], row stride lda bytes
 *   a_scales  [IN]     float32 [ceil(k/128)][aligned_m], M-major
 *   b         [IN]     e4m3 [n][k], row stride ldb bytes
 *   b_scales  [IN]     float32 [ceil(k/128)][aligned_n], N-major
 *   d         [IN/OUT] float32 [m][n], row stride ldd elements, caller-owned;
 *                      accumulated into (read, then written)
 *   exec      [IN]     NULL = CPU
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL pointers,
 * negative sizes, leading dimensions below the row length, d overlapping an
 * input, products overflowing, a bad DINF_CPU_ISA), DINF_STATUS_UNSUPPORTED
 * (DINF_EXEC_CUDA without an sm_90 device or in a CPU-only build),
 * DINF_STATUS_OUT_OF_MEMORY.
 */
DINF_API dinf_status dinf_fp8_wgrad_gemm_nt(int64_t m, int64_t n, int64_t k, const uint8_t *a,
                                            int64_t lda, const float *a_scales, const uint8_t *b,
                                            int64_t ldb, const float *b_scales, float *d,
                                            int64_t ldd, const dinf_exec *exec);

/*
 * dinf_fp8_k_grouped_wgrad_gemm_nt - one weight-gradient GEMM per group, the
 * groups differing in k (MoE experts: k_g = the tokens routed to expert g):
 *   D[g] += A_g * B_g^T, for g < num_groups.
 * Arguments:
 *   num_groups [IN]     >= 1
 *   m, n       [IN]     rows of every A_g and B_g, >= 0
 *   ks         [IN]     host int64 [num_groups]: k_g >= 0 (0: group g adds nothing)
 *   a          [IN]     e4m3, the groups one after another, each dense: A_g [m][k_g]
 *                       (row stride k_g) at byte offset m * (k_0 + ... + k_{g-1})
 *   a_scales   [IN]     float32, per group [ceil(k_g/128)][aligned_m] (M-major) at
 *                       offset aligned_m * (ceil(k_0/128) + ... + ceil(k_{g-1}/128))
 *   b          [IN]     e4m3, B_g [n][k_g] at byte offset n * (k_0 + ... + k_{g-1})
 *   b_scales   [IN]     float32, per group [ceil(k_g/128)][aligned_n] at offset
 *                       aligned_n * (ceil(k_0/128) + ... + ceil(k_{g-1}/128))
 *   d          [IN/OUT] float32 [num_groups][m][n], dense, accumulated into
 *   exec       [IN]     NULL = CPU
 * Returns as dinf_fp8_wgrad_gemm_nt; INVALID_ARGUMENT also for a NULL ks, a
 * negative k_g (the message names the group) and totals overflowing.
 */
DINF_API dinf_status dinf_fp8_k_grouped_wgrad_gemm_nt(int64_t num_groups, int64_t m, int64_t n,
                                                      const int64_t *ks, const uint8_t *a,
                                                      const float *a_scales, const uint8_t *b,
                                                      const float *b_scales, float *d,
                                                      const dinf_exec *exec);

/* The forms, for dinf_fp8_gemm_kernel_config. */
typedef enum dinf_fp8_gemm_form {
    DINF_FP8_GEMM_FORM_NORMAL = 0,     /* dinf_fp8_gemm_nt */
    DINF_FP8_GEMM_FORM_CONTIGUOUS = 1, /* dinf_fp8_m_grouped_gemm_nt_contiguous */
    DINF_FP8_GEMM_FORM_MASKED = 2,     /* dinf_fp8_m_grouped_gemm_nt_masked */
    DINF_FP8_GEMM_FORM_WGRAD = 3,      /* dinf_fp8_wgrad_gemm_nt, and each group of
                                          dinf_fp8_k_grouped_wgrad_gemm_nt (its k_g) */
} dinf_fp8_gemm_form;

/*
 * dinf_fp8_gemm_kernel_config - the JIT kernel the GPU path would choose for
 * a shape, to compile it ahead of serving with dinf_jit_precompile (warm-up,
 * or on a machine without a GPU with arch "sm_90a"); the rung
 * DINF_FP8_GEMM_KERNEL selects now (template "fp8_gemm_fast" by default);
 * form DINF_FP8_GEMM_FORM_WGRAD: template "fp8_gemm_1d1d" {BLOCK_M, BLOCK_N,
 * NUM_STAGES}, whatever DINF_FP8_GEMM_KERNEL says (one kernel).
 * Arguments:
 *   form       [IN]  a dinf_fp8_gemm_form
 *   m          [IN]  rows: m (normal, wgrad), m_sum (contiguous), expected_m (masked); >= 0
 *   n, k       [IN]  >= 1
 *   num_groups [IN]  >= 1 (1 for normal and wgrad)
 *   num_sms    [IN]  streaming multiprocessors of the device (132 on H100/H200 SXM), >= 1;
 *                    or 0: the current CUDA device, as the GPU path sees it (its SM
 *                    count and how many clusters of 2, 3 and 4 CTAs it holds at once;
 *                    a positive count assumes its clusters pack every SM, which
 *                    H100/H200 GPCs do for pairs but not always for the split-K
 *                    clusters of 3 and 4 small-M shapes may get: pass 0 on the
 *                    serving machine to precompile exactly what it will run)
 *   config     [OUT] caller-owned; written on success
 * Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT (bad form, sizes,
 * negative num_sms, NULL config, an unknown DINF_FP8_GEMM_KERNEL for forms
 * 0-2); with
 * num_sms 0 also DINF_STATUS_UNSUPPORTED (no current CUDA device, not sm_90,
 * or a build without CUDA). num_sms > 0: pure function, no device, no JIT;
 * num_sms 0: queries the device once (cached; like any GPU call of the
 * library it initialises the device's primary context, leaving the thread's
 * current context as it was, and it loads the library's small probe
 * kernel). Thread-safe.
 */
DINF_API dinf_status dinf_fp8_gemm_kernel_config(int32_t form, int64_t m, int64_t n, int64_t k,
                                                 int64_t num_groups, int32_t num_sms,
                                                 dinf_jit_kernel_config *config);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DEEPINFRA_GEMM_H */
