/*
 * fp8_gemm: the Hopper FP8 GEMM of gemm.h (normal, M-grouped contiguous,
 * M-grouped masked), DeepGEMM v1 semantics:
 *
 *   D[m][n] = bf16( sum_kb  a_scale[m][kb] * b_scale[n/128][kb] * sum_{k in kb} A[m][k] B[n][k] )
 *
 * Compile-time constants (the config of template "fp8_gemm"):
 *   GEMM_TYPE   0 normal, 1 contiguous, 2 masked (DINF_FP8_GEMM_*)
 *   BLOCK_M     64 or 128 output rows per tile (one math warpgroup per 64 rows)
 *   BLOCK_N     16, 32, 64 or 128 output columns per tile (divides 128, so one
 *               tile uses one B scale per k block)
 *   NUM_STAGES  shared-memory pipeline depth, DINF_FP8_SMEM_BYTES <= 227 KiB
 *
 * Runtime params:
 *   map_a   3-D tensor map of A, e4m3, dims {k, rows per group, groups}
 *           (normal/contiguous: {k, m, 1}; masked: {k, m_max, G}), box
 *           {128, BLOCK_M, 1}, 128-byte swizzle, out-of-bounds elements zero
 *   map_b   3-D tensor map of B, e4m3, dims {k, n, groups}, box {128, BLOCK_N, 1},
 *           128-byte swizzle
 *   map_sa  3-D tensor map of the A scales, float32, dims {aligned_m, k_blocks,
 *           groups} (the M-major layout, per group for masked), box {BLOCK_M, 1, 1}
 *   args    dinf_fp8_gemm_args (fp8_gemm_sched.cuh): output, B scales,
 *           m_indices / masked_m, sizes
 * Launch: a persistent grid (any size; CTAs stride over the tiles in the order
 * of dinf_fp8_tile_at), 128 * (1 + BLOCK_M / 64) threads,
 * DINF_FP8_SMEM_BYTES(BLOCK_M, BLOCK_N, NUM_STAGES) bytes of dynamic shared
 * memory, no cluster.
 *
 * Structure. Warpgroup 0 is the producer: one thread walks the tiles and, for
 * each 128-wide k block, waits for a free stage (its "empty" mbarrier) and
 * issues three TMA loads (A tile, B tile, A scales) that complete on the
 * stage's "full" mbarrier. Warpgroups 1.. are the math warpgroups, each
 * owning 64 rows of the tile: per k block they wait for the stage, run four
 * wgmma m64nBLOCK_Nk32 (e4m3 x e4m3 -> f32, the first one overwriting the
 * accumulators), wait for them, read their rows' A scales, release the stage,
 * and promote: total += (a_scale * b_scale) * partial in float32 (the
 * tensor cores' accumulation covers one k block only, as DeepGEMM). At the
 * end of a tile each thread rounds its totals to bf16 and stores them
 * directly (row < row_limit, column < n), so rows a masked group does not
 * own are never written. Both roles walk the same tile sequence, so their
 * stage/phase counters agree (dinf_fp8_pipe_at; a CPU model of the mbarrier
 * protocol in tests/gemm checks it under random interleavings).
 */
#pragma once
#include "dinf_prelude.cuh"
#include "dinf_sm90.cuh"
#include "fp8_gemm_sched.cuh"

namespace dinf_jit {

template <int GEMM_TYPE, int BLOCK_M, int BLOCK_N, int NUM_STAGES>
__global__ void __launch_bounds__(128 * (1 + BLOCK_M / 64), 1)
fp8_gemm(const __grid_constant__ tensor_map_t map_a, const __grid_constant__ tensor_map_t map_b,
         const __grid_constant__ tensor_map_t map_sa, const dinf_fp8_gemm_args args) {
    static_assert(GEMM_TYPE >= 0 && GEMM_TYPE <= 2, "fp8_gemm: GEMM_TYPE must be 0, 1 or 2");
    static_assert(BLOCK_M == 64 || BLOCK_M == 128, "fp8_gemm: BLOCK_M must be 64 or 128");
    static_assert(GEMM_TYPE != DINF_FP8_GEMM_CONTIGUOUS || BLOCK_M == 128,
                  "fp8_gemm: the contiguous layout needs BLOCK_M = 128 (its alignment)");
    static_assert(BLOCK_N == 16 || BLOCK_N == 32 || BLOCK_N == 64 || BLOCK_N == 128,
                  "fp8_gemm: BLOCK_N must be 16, 32, 64 or 128");
    static_assert(NUM_STAGES >= 1 && DINF_FP8_SMEM_BYTES(BLOCK_M, BLOCK_N, NUM_STAGES) <=
                                         DINF_FP8_SMEM_LIMIT,
                  "fp8_gemm: NUM_STAGES stages do not fit in shared memory");

    constexpr int kMathWarpgroups = BLOCK_M / 64;
    constexpr int kAccum = BLOCK_N / 2; /* wgmma accumulators per thread */
    /* What the three TMA loads of a stage deliver (whole boxes). */
    constexpr uint32_t kStageTxBytes = dinf_fp8_stage_tx_bytes(BLOCK_M, BLOCK_N);

    /* Shared memory: [A tiles][B tiles][A scales][full barriers][empty barriers]
     * (dinf_fp8_smem_carve), from a 1024-byte aligned base (128-byte swizzled
     * tiles repeat every 1024 bytes). */
    extern __shared__ uint8_t smem_raw[];
    uint8_t *smem = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
    constexpr dinf_fp8_smem_layout lay = dinf_fp8_smem_carve(BLOCK_M, BLOCK_N, NUM_STAGES);
    static_assert(1024 + lay.end <= DINF_FP8_SMEM_BYTES(BLOCK_M, BLOCK_N, NUM_STAGES),
                  "fp8_gemm: the carve-up exceeds the dynamic shared memory size");
    uint8_t *a_tiles = smem + lay.a;
    uint8_t *b_tiles = smem + lay.b;
    float *sa_tiles = reinterpret_cast<float *>(smem + lay.sa);
    uint64_t *full = reinterpret_cast<uint64_t *>(smem + lay.full);
    uint64_t *empty = reinterpret_cast<uint64_t *>(smem + lay.empty);

    const int warpgroup = (int)(threadIdx.x / 128);
    if (threadIdx.x == 0) {
        for (int s = 0; s < NUM_STAGES; s++) {
            mbar_init(&full[s], 1);                       /* the producer's arrive + tx */
            mbar_init(&empty[s], kMathWarpgroups * 128);  /* every math thread */
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
        uint32_t it = 0;
        for (long long t = blockIdx.x;; t += gridDim.x) {
            dinf_fp8_tile tile;
            const int found = dinf_fp8_tile_at(&args, GEMM_TYPE, BLOCK_M, t, &tile);
            if (found < 0)
                break;
            if (found == 0)
                continue;
            const int m0 = tile.m_block * BLOCK_M, n0 = tile.n_block * BLOCK_N;
            const int a_group = GEMM_TYPE == DINF_FP8_GEMM_MASKED ? tile.group : 0;
            for (int kb = 0; kb < args.k_blocks; kb++, it++) {
                const dinf_fp8_pipe_slot slot = dinf_fp8_pipe_at(it, NUM_STAGES);
                const int s = slot.stage;
                mbar_wait(&empty[s], slot.empty_parity);
                mbar_arrive_expect_tx(&full[s], kStageTxBytes);
                const int k0 = kb * DINF_FP8_BLOCK_K;
                tma_load_3d(a_tiles + s * lay.a_stage, &map_a, &full[s], k0, m0, a_group);
                tma_load_3d(b_tiles + s * lay.b_stage, &map_b, &full[s], k0, n0, tile.group);
                tma_load_3d(sa_tiles + s * BLOCK_M, &map_sa, &full[s], m0, kb, a_group);
            }
        }
        /* Drain: wait, as the next NUM_STAGES fills would, until every stage
         * filled so far has been released: it bounds the math warpgroups'
         * unbounded waits on full stages (one stuck never releases its
         * stage, so this wait traps within DINF_JIT_WAIT_NS). */
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
    /* Tile rows of this thread's accumulators (wgmma's D fragment layout). */
    const int row0 = dinf_fp8_frag_row(math_wg, warp_in_wg, lane, 0);
    const int row1 = dinf_fp8_frag_row(math_wg, warp_in_wg, lane, 1);
    const float *b_scales = reinterpret_cast<const float *>(args.b_scales);
    uint16_t *d = reinterpret_cast<uint16_t *>(args.d);

    float acc[kAccum];
    float total[kAccum];
    uint32_t it = 0;
    for (long long t = blockIdx.x;; t += gridDim.x) {
        dinf_fp8_tile tile;
        const int found = dinf_fp8_tile_at(&args, GEMM_TYPE, BLOCK_M, t, &tile);
        if (found < 0)
            break;
        if (found == 0)
            continue;
        const int m0 = tile.m_block * BLOCK_M, n0 = tile.n_block * BLOCK_N;
#pragma unroll
        for (int i = 0; i < kAccum; i++)
            total[i] = 0.0f;

        for (int kb = 0; kb < args.k_blocks; kb++, it++) {
            const dinf_fp8_pipe_slot slot = dinf_fp8_pipe_at(it, NUM_STAGES);
            const int s = slot.stage;
            const float b_scale = b_scales[dinf_fp8_b_scale_index(&args, tile.group, n0, kb)];
            mbar_wait_unbounded(&full[s], slot.full_parity); /* bounded by the producer */

            /* partial = A[64 rows x 128] * B[BLOCK_N x 128]^T on the tensor cores. */
            const uint32_t a_base =
                smem_u32(a_tiles + s * lay.a_stage + math_wg * 64 * DINF_FP8_BLOCK_K);
            const uint32_t b_base = smem_u32(b_tiles + s * lay.b_stage);
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

            const float scale0 = sa_tiles[s * BLOCK_M + row0] * b_scale;
            const float scale1 = sa_tiles[s * BLOCK_M + row1] * b_scale;
            mbar_arrive(&empty[s]); /* this thread is done with the stage */

            /* Promotion into the float32 totals. */
#pragma unroll
            for (int i = 0; i < kAccum / 4; i++) {
                total[4 * i + 0] += scale0 * acc[4 * i + 0];
                total[4 * i + 1] += scale0 * acc[4 * i + 1];
                total[4 * i + 2] += scale1 * acc[4 * i + 2];
                total[4 * i + 3] += scale1 * acc[4 * i + 3];
            }
        }

        /* bf16 store, clipped to the valid rows and columns. */
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int row = m0 + (half ? row1 : row0);
            if (row >= tile.row_limit)
                continue;
#pragma unroll
            for (int i = 0; i < kAccum / 4; i++) {
                const int col = n0 + dinf_fp8_frag_col(i, lane);
                const float lo = total[4 * i + 2 * half], hi = total[4 * i + 2 * half + 1];
                uint16_t *out = d + dinf_fp8_d_offset(&args, GEMM_TYPE, tile.group, row, col);
                if (col + 1 < args.n)
                    *reinterpret_cast<uint32_t *>(out) = pack_bf16x2(lo, hi);
                else if (col < args.n)
                    *out = f32_to_bf16(lo).bits;
            }
        }
    }
}

} // namespace dinf_jit
