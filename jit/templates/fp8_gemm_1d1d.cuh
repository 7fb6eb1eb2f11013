/*
 * fp8_gemm_1d1d: the Hopper weight-gradient GEMM of gemm.h
 * (dinf_fp8_wgrad_gemm_nt, and each group of dinf_fp8_k_grouped_wgrad_gemm_nt),
 * 1x128 scales on both operands, float32 output accumulated in place:
 *
 *   D[m][n] += sum_kb (a_scale[m][kb] * b_scale[n][kb]) * sum_{k in kb} A[m][k] B[n][k]
 *
 * Compile-time constants (the config of template "fp8_gemm_1d1d"):
 *   BLOCK_M     64 or 128 output rows per tile (one math warpgroup per 64 rows)
 *   BLOCK_N     16, 32, 64 or 128 output columns per tile
 *   NUM_STAGES  shared-memory pipeline depth, DINF_FP8_WGRAD_SMEM_BYTES <= 227 KiB
 *
 * Runtime params:
 *   map_a   3-D tensor map of A, e4m3, dims {k, m, 1}, box {128, BLOCK_M, 1},
 *           128-byte swizzle, out-of-bounds elements zero
 *   map_b   3-D tensor map of B, e4m3, dims {k, n, 1}, box {128, BLOCK_N, 1},
 *           128-byte swizzle
 *   map_sa  3-D tensor map of the A scales, float32, dims {aligned_m, k_blocks, 1}
 *           (M-major), box {BLOCK_M, 1, 1}
 *   map_sb  3-D tensor map of the B scales, float32, dims {aligned_n, k_blocks, 1}
 *           (N-major), box {BLOCK_N, 1, 1}
 *   args    dinf_fp8_gemm_args (fp8_gemm_sched.cuh) of the normal form: d is
 *           the float32 output [m][n] (row stride ldd elements); b_scales unused
 * Launch: a persistent grid (any size; CTAs stride over the tiles in the order
 * of dinf_fp8_tile_at, GEMM_TYPE normal), 128 * (1 + BLOCK_M / 64) threads,
 * DINF_FP8_WGRAD_SMEM_BYTES(BLOCK_M, BLOCK_N, NUM_STAGES) bytes of dynamic
 * shared memory, no cluster.
 *
 * Structure: the simple kernel's (fp8_gemm.cuh): one producer thread issues,
 * per 128-wide k block, four TMA loads (A tile, B tile, A scales, B scales)
 * completing on the stage's full mbarrier; each math warpgroup owns 64 rows,
 * runs four wgmma m64nBLOCK_Nk32 per stage into fresh accumulators, then
 * promotes them while the stage is still held: total += (a_scale[row] *
 * b_scale[col]) * partial, reading both scales from the stage, and releases
 * the stage. At the end of a tile each thread adds its totals to d
 * (read, add, write; row < m, column < n). Every output element belongs to
 * one thread of one tile, so the read-add-write needs no atomics; the result
 * is deterministic.
 */
#pragma once
#include "dinf_prelude.cuh"
#include "dinf_sm90.cuh"
#include "fp8_gemm_sched.cuh"

namespace dinf_jit {

template <int BLOCK_M, int BLOCK_N, int NUM_STAGES>
__global__ void __launch_bounds__(128 * (1 + BLOCK_M / 64), 1)
fp8_gemm_1d1d(const __grid_constant__ tensor_map_t map_a,
              const __grid_constant__ tensor_map_t map_b,
              const __grid_constant__ tensor_map_t map_sa,
              const __grid_constant__ tensor_map_t map_sb, const dinf_fp8_gemm_args args) {
    static_assert(BLOCK_M == 64 || BLOCK_M == 128, "fp8_gemm_1d1d: BLOCK_M must be 64 or 128");
    static_assert(BLOCK_N == 16 || BLOCK_N == 32 || BLOCK_N == 64 || BLOCK_N == 128,
                  "fp8_gemm_1d1d: BLOCK_N must be 16, 32, 64 or 128");
    static_assert(NUM_STAGES >= 1 && DINF_FP8_WGRAD_SMEM_BYTES(BLOCK_M, BLOCK_N, NUM_STAGES) <=
                                         DINF_FP8_SMEM_LIMIT,
                  "fp8_gemm_1d1d: NUM_STAGES stages do not fit in shared memory");

    constexpr int kMathWarpgroups = BLOCK_M / 64;
    constexpr int kAccum = BLOCK_N / 2; /* wgmma accumulators per thread */
    constexpr uint32_t kStageTxBytes = dinf_fp8_wgrad_stage_tx_bytes(BLOCK_M, BLOCK_N);

    /* Shared memory: the simple kernel's carve-up, then the B-scale ring
     * (dinf_fp8_wgrad_smem_carve), from a 1024-byte aligned base. */
    extern __shared__ uint8_t smem_raw[];
    uint8_t *smem = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
    constexpr dinf_fp8_wgrad_smem_layout lay = dinf_fp8_wgrad_smem_carve(BLOCK_M, BLOCK_N, NUM_STAGES);
    static_assert(1024 + lay.end <= DINF_FP8_WGRAD_SMEM_BYTES(BLOCK_M, BLOCK_N, NUM_STAGES),
                  "fp8_gemm_1d1d: the carve-up exceeds the dynamic shared memory size");
    uint8_t *a_tiles = smem + lay.l.a;
    uint8_t *b_tiles = smem + lay.l.b;
    float *sa_tiles = reinterpret_cast<float *>(smem + lay.l.sa);
    float *sb_tiles = reinterpret_cast<float *>(smem + lay.sb);
    uint64_t *full = reinterpret_cast<uint64_t *>(smem + lay.l.full);
    uint64_t *empty = reinterpret_cast<uint64_t *>(smem + lay.l.empty);
    constexpr unsigned kSbStride = lay.sb_stage / 4; /* floats between B-scale slots */

    const int warpgroup = (int)(threadIdx.x / 128);
    if (threadIdx.x == 0) {
        for (int s = 0; s < NUM_STAGES; s++) {
            mbar_init(&full[s], 1);                      /* the producer's arrive + tx */
            mbar_init(&empty[s], kMathWarpgroups * 128); /* every math thread */
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (warpgroup == 0) {
        /* ------------------------------------------------------ producer -- */
        if (threadIdx.x != 0)
            return;
        tma_prefetch_descriptor(&map_a);
        tma_prefetch_descriptor(&map_b);
        tma_prefetch_descriptor(&map_sa);
        tma_prefetch_descriptor(&map_sb);
        uint32_t it = 0;
        for (long long t = blockIdx.x;; t += gridDim.x) {
            dinf_fp8_tile tile;
            if (dinf_fp8_tile_at(&args, DINF_FP8_GEMM_NORMAL, BLOCK_M, t, &tile) < 0)
                break;
            const int m0 = tile.m_block * BLOCK_M, n0 = tile.n_block * BLOCK_N;
            for (int kb = 0; kb < args.k_blocks; kb++, it++) {
                const dinf_fp8_pipe_slot slot = dinf_fp8_pipe_at(it, NUM_STAGES);
                const int s = slot.stage;
                mbar_wait(&empty[s], slot.empty_parity);
                mbar_arrive_expect_tx(&full[s], kStageTxBytes);
                const int k0 = kb * DINF_FP8_BLOCK_K;
                tma_load_3d(a_tiles + s * lay.l.a_stage, &map_a, &full[s], k0, m0, 0);
                tma_load_3d(b_tiles + s * lay.l.b_stage, &map_b, &full[s], k0, n0, 0);
                tma_load_3d(sa_tiles + s * BLOCK_M, &map_sa, &full[s], m0, kb, 0);
                tma_load_3d(sb_tiles + s * kSbStride, &map_sb, &full[s], n0, kb, 0);
            }
        }
        /* Drain (as fp8_gemm.cuh): bounds the math warpgroups' waits. */
        for (uint32_t j = it; j < it + NUM_STAGES; j++) {
            const dinf_fp8_pipe_slot slot = dinf_fp8_pipe_at(j, NUM_STAGES);
            mbar_wait(&empty[slot.stage], slot.empty_parity);
        }
        return;
    }

    /* ----------------------------------------------------------- math -- */
    const int math_wg = warpgroup - 1;
    const int lane = (int)(threadIdx.x % 32);
    const int warp_in_wg = (int)((threadIdx.x / 32) % 4);
    const int row0 = dinf_fp8_frag_row(math_wg, warp_in_wg, lane, 0);
    const int row1 = dinf_fp8_frag_row(math_wg, warp_in_wg, lane, 1);
    float *d = reinterpret_cast<float *>(args.d);

    float acc[kAccum];
    float total[kAccum];
    uint32_t it = 0;
    for (long long t = blockIdx.x;; t += gridDim.x) {
        dinf_fp8_tile tile;
        if (dinf_fp8_tile_at(&args, DINF_FP8_GEMM_NORMAL, BLOCK_M, t, &tile) < 0)
            break;
        const int m0 = tile.m_block * BLOCK_M, n0 = tile.n_block * BLOCK_N;
#pragma unroll
        for (int i = 0; i < kAccum; i++)
            total[i] = 0.0f;

        for (int kb = 0; kb < args.k_blocks; kb++, it++) {
            const dinf_fp8_pipe_slot slot = dinf_fp8_pipe_at(it, NUM_STAGES);
            const int s = slot.stage;
            mbar_wait_unbounded(&full[s], slot.full_parity); /* bounded by the producer */

            const uint32_t a_base =
                smem_u32(a_tiles + s * lay.l.a_stage + math_wg * 64 * DINF_FP8_BLOCK_K);
            const uint32_t b_base = smem_u32(b_tiles + s * lay.l.b_stage);
#pragma unroll
            for (int i = 0; i < kAccum; i++)
                fence_operand(acc[i]);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < DINF_FP8_BLOCK_K / 32; ks++)
                wgmma_e4m3<BLOCK_N>::mma(dinf_fp8_wgmma_desc_sw128(a_base + ks * 32),
                                         dinf_fp8_wgmma_desc_sw128(b_base + ks * 32), acc, ks > 0);
            wgmma_commit();
            wgmma_wait_all();
#pragma unroll
            for (int i = 0; i < kAccum; i++)
                fence_operand(acc[i]);

            /* Promotion with the row's and the column's scales, read from the
             * stage before it is released. */
            const float sa0 = sa_tiles[s * BLOCK_M + row0];
            const float sa1 = sa_tiles[s * BLOCK_M + row1];
            const float *sb = sb_tiles + s * kSbStride;
#pragma unroll
            for (int i = 0; i < kAccum / 4; i++) {
                const int c = dinf_fp8_frag_col(i, lane);
                const float sb0 = sb[c], sb1 = sb[c + 1];
                total[4 * i + 0] += (sa0 * sb0) * acc[4 * i + 0];
                total[4 * i + 1] += (sa0 * sb1) * acc[4 * i + 1];
                total[4 * i + 2] += (sa1 * sb0) * acc[4 * i + 2];
                total[4 * i + 3] += (sa1 * sb1) * acc[4 * i + 3];
            }
            mbar_arrive(&empty[s]); /* this thread is done with the stage */
        }

        /* d += total, clipped to the valid rows and columns. */
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int row = m0 + (half ? row1 : row0);
            if (row >= args.m)
                continue;
#pragma unroll
            for (int i = 0; i < kAccum / 4; i++) {
                const int col = n0 + dinf_fp8_frag_col(i, lane);
                float *out = d + (long long)row * args.ldd + col;
                const float lo = total[4 * i + 2 * half], hi = total[4 * i + 2 * half + 1];
                if (col < args.n)
                    out[0] = out[0] + lo;
                if (col + 1 < args.n)
                    out[1] = out[1] + hi;
            }
        }
    }
}

} // namespace dinf_jit
