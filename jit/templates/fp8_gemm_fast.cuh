/*
 * fp8_gemm_fast: the fast rung of the Hopper FP8 GEMM of gemm.h. Same
 * function, same results as the simple rung (fp8_gemm.cuh, which stays the
 * reference: it documents the semantics and the pipeline both share):
 *
 *   D[m][n] = bf16( sum_kb  a_scale[m][kb] * b_scale[n/128][kb] * sum_{k in kb} A[m][k] B[n][k] )
 *
 * with float32 promotion per 128-wide k block in the same order, so both
 * rungs produce the same bits.
 *
 * Compile-time constants (the config of template "fp8_gemm_fast"):
 *   GEMM_TYPE   0 normal, 1 contiguous, 2 masked (DINF_FP8_GEMM_*)
 *   BLOCK_M     64 or 128 output rows per tile (one math warpgroup per 64 rows),
 *               or 256 (normal and masked forms, BLOCK_N <= 128, no split-K):
 *               two math warpgroups of 128 rows each, every one computing
 *               its rows as two 64-row wgmma "waves" per 128-K block that
 *               reuse one accumulator register set (DeepGEMM's WAVE_BLOCK_M):
 *               wave 0's four wgmma, wait, promotion into wave 0's float32
 *               totals, then wave 1's; the stage is released after the last
 *               wave. Per thread: 2 x BLOCK_N / 2 totals + BLOCK_N / 2
 *               accumulators (BLOCK_N 128: 192 of the 232 registers). Each
 *               element is still promoted once per k block in the same
 *               order: the results are the simple rung's bits. The contiguous
 *               layout aligns its segments to 128 rows only (a 256-row tile
 *               could span two groups, i.e. two B matrices): not taken there.
 *   BLOCK_N     16 .. 160, a multiple of 16 with dinf_fp8_fast_block_n_ok
 *               (16, 32, ..., 128, 144, 160); a tile may straddle one
 *               128-column B-scale boundary: columns before it use the first
 *               B scale, the rest the second (dinf_fp8_b_scale_former)
 *   NUM_STAGES  pipeline depth, DINF_FP8_FAST_SPLIT_SMEM_BYTES <= 227 KiB
 *   CLUSTER     1, or 2: CTAs 2c and 2c+1 form a cluster that computes two
 *               N-adjacent tiles of one M-block and shares their A tile by
 *               TMA multicast (each CTA loads half of A's rows into both)
 *   SPLIT_K     1, or 2..4 (with CLUSTER = SPLIT_K, no multicast): the
 *               CTAs of a cluster compute the same tile over consecutive runs
 *               of its k blocks (dinf_fp8_split_k_range). Every rank r > 0
 *               waits until rank 0 has read its previous partial (its own
 *               red_empty), writes its float32 totals into its own shared
 *               buffer and arrives, releasing at cluster scope, on rank 0's
 *               red_full (one arrival per warp, after __syncwarp); rank 0
 *               waits there (acquire), reads the partials of ranks 1, 2, ...
 *               in rank order through distributed shared memory
 *               (ld.shared::cluster), adds each to its own (own + r1 + r2 +
 *               ...: deterministic), arrives on every rank's red_empty (lane
 *               r of each warp for rank r) and stores. For one-wave
 *               problems (the heuristic's cost model).
 *
 * Runtime params:
 *   map_a   as fp8_gemm.cuh, but box {128, BLOCK_M / 2, 1} with the multicast
 *           (CLUSTER 2, SPLIT_K 1)
 *   map_b   as fp8_gemm.cuh (box {128, BLOCK_N, 1})
 *   map_sa  as fp8_gemm.cuh
 *   map_d   3-D tensor map of D, 16-bit elements, dims {n, rows per group,
 *           groups} (normal/contiguous: {n, m, 1}; masked {n, m_max, G}),
 *           strides {ldd * 2, ldd * 2 * rows}, box {S / 2, 64, 1},
 *           swizzle S bytes, S = dinf_fp8_d_swizzle_bytes(BLOCK_N)
 *   args    dinf_fp8_gemm_args
 * Launch: a persistent grid, a multiple of CLUSTER, cluster dims
 * (CLUSTER, 1, 1); dinf_fp8_threads(BLOCK_M) threads (128 * (1 + math
 * warpgroups): 256 for BLOCK_M 64, 384 for 128 and 256);
 * DINF_FP8_FAST_SPLIT_SMEM_BYTES(BLOCK_M, BLOCK_N, NUM_STAGES, SPLIT_K)
 * bytes of dynamic shared memory.
 *
 * What the fast rung adds to the simple one:
 *  - Register reallocation (BLOCK_M 128 and 256: 384 threads, 168 registers each at
 *    entry under __launch_bounds__(384, 1)): the producer warpgroup gives
 *    back down to 40, the two math warpgroups take 232
 *    (128 * 40 + 256 * 232 = 64512 <= 65536 = 384 * 168). BLOCK_M 64 (256
 *    threads) already has 255 per thread and does not reallocate.
 *  - The stage count the shared memory allows (heuristic), one empty-barrier
 *    arrival per math warp instead of per thread.
 *  - A TMA-store epilogue, per math warpgroup (its 64 or 128 rows): its threads
 *    write their bf16 pairs into a swizzled shared tile
 *    (dinf_fp8_d_smem_offset), fence the generic proxy against the async
 *    proxy, meet at the warpgroup's named barrier, and its first thread
 *    stores the rows with block_n * 2 / S bulk tensor stores per 64 rows
 *    (box {S / 2, 64}), which clip rows >= m (the tensor's row dim) and columns
 *    >= n. The rows are rewritten by the next tile only after that thread's
 *    cp.async.bulk.wait_group.read 0 and the named barrier, so the store of
 *    tile t overlaps the main loop of tile t+1. Where a TMA store would write
 *    rows the call does not own (a masked group's rows in [masked_m, m_max):
 *    the tensor map only knows m_max) the warpgroup stores directly, clipped
 *    per element, as the simple rung does.
 *  - CLUSTER 2: A multicast. Per stage, CTA rank r loads A rows
 *    [m0 + r * BLOCK_M / 2, + BLOCK_M / 2) into both CTAs (mask 0b11), its own
 *    B tile and its own A scales; each CTA's full barrier still expects the
 *    whole stage (A halves from both CTAs + B + scales). A stage may be
 *    refilled only when the consumers of BOTH CTAs have released it, so
 *    every math warp arrives on the empty barrier of both CTAs (lane 0 on
 *    rank 0's, lane 1 on rank 1's, through mapa), and the empty barriers count
 *    2 * math warps. The scheduler (dinf_fp8_unit_at) gives the two CTAs of a
 *    cluster the N-blocks 2u and 2u+1 of one M-block; when n_blocks is odd the
 *    last unit's rank-1 tile is a phantom (n_block == n_blocks): it runs the
 *    pipeline (its multicast half of A is needed by rank 0) on N-block 0's B
 *    and scales (in bounds) and is never stored. Skipped contiguous blocks are skipped by both CTAs
 *    alike (the group is a function of the M-block). A cluster barrier after
 *    the mbarrier init (the peer's barriers must exist before any multicast
 *    or remote arrive) and one before exit (no CTA may leave while its peer
 *    can still arrive on its barriers or multicast into it).
 *  - Programmatic dependent launch (gemm.h, DINF_FP8_GEMM_PDL): every thread
 *    passes griddepcontrol.wait after the prologue and before any global
 *    access (see the comment at the call), then signals launch_dependents.
 * The mbarrier protocol of both cluster sizes is modelled on the CPU under
 * random interleavings (tests/gemm/test_gemm_sm90.c, with planted bugs).
 */
#pragma once
#include "dinf_prelude.cuh"
#include "dinf_sm90.cuh"
#include "fp8_gemm_sched.cuh"

namespace dinf_jit {

template <int GEMM_TYPE, int BLOCK_M, int BLOCK_N, int NUM_STAGES, int CLUSTER, int SPLIT_K>
__global__ void __launch_bounds__(dinf_fp8_threads(BLOCK_M), 1)
fp8_gemm_fast(const __grid_constant__ tensor_map_t map_a, const __grid_constant__ tensor_map_t map_b,
              const __grid_constant__ tensor_map_t map_sa,
              const __grid_constant__ tensor_map_t map_d, const dinf_fp8_gemm_args args) {
    static_assert(GEMM_TYPE >= 0 && GEMM_TYPE <= 2, "fp8_gemm_fast: GEMM_TYPE must be 0, 1 or 2");
    static_assert(BLOCK_M == 64 || BLOCK_M == 128 || BLOCK_M == 256,
                  "fp8_gemm_fast: BLOCK_M must be 64, 128 or 256");
    /* Contiguous segments are aligned to 128 rows only: a 256-row tile could
     * span two groups (two B matrices), so BLOCK_M 256 is normal / masked. */
    static_assert(GEMM_TYPE != DINF_FP8_GEMM_CONTIGUOUS || BLOCK_M == 128,
                  "fp8_gemm_fast: the contiguous layout needs BLOCK_M = 128 (its alignment)");
    static_assert(BLOCK_M != 256 || (BLOCK_N <= DINF_FP8_FAST_BM256_MAX_BLOCK_N && SPLIT_K == 1),
                  "fp8_gemm_fast: BLOCK_M 256 takes BLOCK_N <= 128 (registers) and no split-K");
    static_assert(dinf_fp8_fast_block_n_ok(BLOCK_N),
                  "fp8_gemm_fast: BLOCK_N must be a multiple of 16 in 16..128, or 144 or 160");
    static_assert(SPLIT_K >= 1 && SPLIT_K <= DINF_FP8_FAST_MAX_SPLIT_K,
                  "fp8_gemm_fast: SPLIT_K must be 1 .. 4");
    static_assert(SPLIT_K == 1 ? (CLUSTER == 1 || CLUSTER == 2) : CLUSTER == SPLIT_K,
                  "fp8_gemm_fast: CLUSTER must be 1 or 2 (A multicast) without split-K, and "
                  "equal SPLIT_K with it");
    static_assert(NUM_STAGES >= 1 &&
                      DINF_FP8_FAST_SPLIT_SMEM_BYTES(BLOCK_M, BLOCK_N, NUM_STAGES, SPLIT_K) <=
                          DINF_FP8_SMEM_LIMIT,
                  "fp8_gemm_fast: NUM_STAGES stages do not fit in shared memory");

    constexpr int kMathWarpgroups = dinf_fp8_math_warpgroups(BLOCK_M);
    constexpr int kWaves = dinf_fp8_waves(BLOCK_M); /* 64-row waves per math warpgroup */
    constexpr int kWgRows = 64 * kWaves;            /* rows a math warpgroup owns */
    constexpr int kMathThreads = 128 * kMathWarpgroups;
    constexpr int kAccum = BLOCK_N / 2;
    constexpr uint32_t kStageTxBytes = dinf_fp8_stage_tx_bytes(BLOCK_M, BLOCK_N);
    constexpr int kSwizzleD = dinf_fp8_d_swizzle_bytes(BLOCK_N);
    constexpr int kStoresD = BLOCK_N * 2 / kSwizzleD;
    constexpr bool kOneScale = DINF_FP8_BLOCK_K % BLOCK_N == 0;
    /* A cluster either shares A by multicast (CLUSTER 2, SPLIT_K 1: N-adjacent
     * tiles) or splits one tile's k blocks (CLUSTER = SPLIT_K: no multicast,
     * the same tile). */
    constexpr bool kMulticast = CLUSTER > 1 && SPLIT_K == 1;
    constexpr int kTileCluster = SPLIT_K > 1 ? 1 : CLUSTER;
    constexpr int kAHalfRows = BLOCK_M / (kMulticast ? CLUSTER : 1);
    constexpr uint32_t kEpilogueBarrier = 1; /* + math warpgroup: its named barrier */

    extern __shared__ uint8_t smem_raw[];
    uint8_t *smem = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
    /* [output tile][split-K partial tile][stages ...][full][empty][red_full][red_empty] */
    constexpr unsigned kPartialOffset = (unsigned)(BLOCK_M * BLOCK_N * 2);
    constexpr dinf_fp8_smem_layout lay = dinf_fp8_smem_carve_d(
        BLOCK_M, BLOCK_N, NUM_STAGES,
        kPartialOffset + (SPLIT_K > 1 ? (unsigned)(BLOCK_M * BLOCK_N * 4) : 0u));
    static_assert(1024 + lay.end + (SPLIT_K > 1 ? 16 : 0) <=
                      DINF_FP8_FAST_SPLIT_SMEM_BYTES(BLOCK_M, BLOCK_N, NUM_STAGES, SPLIT_K),
                  "fp8_gemm_fast: the carve-up exceeds the dynamic shared memory size");
    uint8_t *d_tile = smem + lay.d;
    float *partial = reinterpret_cast<float *>(smem + kPartialOffset);
    uint64_t *red_full = reinterpret_cast<uint64_t *>(smem + lay.end);      /* used: rank 0's */
    uint64_t *red_empty = reinterpret_cast<uint64_t *>(smem + lay.end + 8); /* used: ranks > 0 */
    uint8_t *a_tiles = smem + lay.a;
    uint8_t *b_tiles = smem + lay.b;
    float *sa_tiles = reinterpret_cast<float *>(smem + lay.sa);
    uint64_t *full = reinterpret_cast<uint64_t *>(smem + lay.full);
    uint64_t *empty = reinterpret_cast<uint64_t *>(smem + lay.empty);

    const int warpgroup = (int)(threadIdx.x / 128);
    const int rank = CLUSTER > 1 ? (int)cluster_ctarank() : 0;
    const long long cluster_id = (long long)(blockIdx.x / CLUSTER);
    const long long num_clusters = (long long)(gridDim.x / CLUSTER);

    if (threadIdx.x == 0) {
        for (int s = 0; s < NUM_STAGES; s++) {
            mbar_init(&full[s], 1);                               /* own producer's arrive + tx */
            /* every math warp of the CTAs the stage's loads write into */
            mbar_init(&empty[s], (kMulticast ? CLUSTER : 1) * kMathWarpgroups * 4);
        }
        if (SPLIT_K > 1) {
            /* rank 0's: every math warp of ranks 1.. has published its partial */
            mbar_init(red_full, (SPLIT_K - 1) * (kMathThreads / 32));
            /* rank r's: every math warp of rank 0 has read r's partial */
            mbar_init(red_empty, kMathThreads / 32);
        }
        mbar_init_fence();
        /* The tensor maps are __grid_constant__ kernel parameters, not memory
         * an upstream kernel writes: prefetching them may precede the wait. */
        tma_prefetch_descriptor(&map_a);
        tma_prefetch_descriptor(&map_b);
        tma_prefetch_descriptor(&map_sa);
    }
    if (CLUSTER > 1) {
        cluster_arrive_release();
        cluster_wait_acquire();
    } else {
        __syncthreads();
    }

    /* Programmatic dependent launch (PDL; gemm.h): with
     * DINF_FP8_GEMM_PDL=1 the launch carries
     * cudaLaunchAttributeProgrammaticStreamSerialization, so this grid may
     * start while the previous kernel on the stream is still running. All
     * of the above (smem carve-up, mbarrier init, tensor-map prefetch,
     * cluster start barrier) touches no global memory; every thread passes
     * griddepcontrol.wait here, before the role split, so that every global
     * access of the kernel follows it on every path:
     *   producer (thread 0): the scheduler's reads of m_indices /
     *     masked_m (dinf_fp8_unit_at, args.group_info), the TMA loads of A
     *     (plain or multicast), B and the A scales;
     *   math warpgroups: the scheduler's reads (dinf_fp8_unit_at), the B
     *     scales (sb_first / sb_second, args.b_scales), the epilogue's TMA
     *     stores of D (map_d) and its direct stores (args.d, masked partial
     *     rows), bulk_wait_group on those stores;
     *   split-K reduction: distributed shared memory only (no global).
     * griddepcontrol.wait is a no-op without a programmatic dependency (PDL
     * off, or the first kernel of a stream / graph).
     * launch_dependents right after: it only lets the next kernel's CTAs be
     * scheduled (their prologue then overlaps this grid's tail on the SMs
     * this grid leaves free); it orders no memory, because the dependent's
     * own griddepcontrol.wait still waits for this whole grid to complete
     * and flush. All CTAs of this persistent grid are resident by the time
     * every one of them has issued it, so dependents never delay our CTAs'
     * start. The emulator (tools/sm90-emu) fails any global access or TMA
     * issue by a thread that has not passed the wait. */
    griddep_wait();
    griddep_launch_dependents();

    if (warpgroup == 0) {
        /* ------------------------------------------------------ producer -- */
        if (kMathWarpgroups == 2)
            setmaxnreg_dec<DINF_FP8_FAST_PRODUCER_REGS>();
        if (threadIdx.x == 0) {
            uint32_t it = 0;
            for (long long u = cluster_id;; u += num_clusters) {
                dinf_fp8_tile tile;
                const int found = dinf_fp8_unit_at(&args, GEMM_TYPE, BLOCK_M, kTileCluster,
                                                   kTileCluster > 1 ? rank : 0, u, &tile);
                if (found < 0)
                    break;
                if (found == 0)
                    continue;
                const int m0 = tile.m_block * BLOCK_M, n0 = tile.n_block * BLOCK_N;
                const int a_group = GEMM_TYPE == DINF_FP8_GEMM_MASKED ? tile.group : 0;
                int kb_begin = 0, kb_end = args.k_blocks;
                if (SPLIT_K > 1)
                    dinf_fp8_split_k_range(args.k_blocks, SPLIT_K, rank, &kb_begin, &kb_end);
                for (int kb = kb_begin; kb < kb_end; kb++, it++) {
                    const dinf_fp8_pipe_slot slot = dinf_fp8_pipe_at(it, NUM_STAGES);
                    const int s = slot.stage;
                    mbar_wait(&empty[s], slot.empty_parity);
                    mbar_arrive_expect_tx(&full[s], kStageTxBytes);
                    const int k0 = kb * DINF_FP8_BLOCK_K;
                    uint8_t *a_dst = a_tiles + s * lay.a_stage +
                                     (kMulticast ? rank : 0) * kAHalfRows * DINF_FP8_BLOCK_K;
                    /* A half wholly past the rows (the last M-block) loads rows
                     * from 0 instead: in bounds, and only output rows that are
                     * never stored depend on it. */
                    const int a_row = m0 + rank * kAHalfRows < args.m ? m0 + rank * kAHalfRows : 0;
                    if (kMulticast)
                        tma_load_3d_multicast(a_dst, &map_a, &full[s], k0, a_row, a_group,
                                              (uint16_t)((1u << CLUSTER) - 1u));
                    else
                        tma_load_3d(a_dst, &map_a, &full[s], k0, m0, a_group);
                    /* A phantom loads N-block 0's B (in bounds: its bytes land
                     * like any box; its result is never stored). */
                    tma_load_3d(b_tiles + s * lay.b_stage, &map_b, &full[s], k0,
                                tile.phantom ? 0 : n0, tile.group);
                    tma_load_3d(sa_tiles + s * BLOCK_M, &map_sa, &full[s], m0, kb, a_group);
                }
            }
            /* Drain: wait, as the next NUM_STAGES fills would, until every
             * stage filled so far has been released. The math warpgroups'
             * waits on full stages are unbounded (mbar_wait_unbounded: a
             * trap path there spills); one of them stuck never releases its
             * stage, so this bounded wait traps within DINF_JIT_WAIT_NS and
             * the launch fails instead of hanging. Free: this thread has
             * nothing left to do. */
            for (uint32_t j = it; j < it + NUM_STAGES; j++) {
                const dinf_fp8_pipe_slot slot = dinf_fp8_pipe_at(j, NUM_STAGES);
                mbar_wait(&empty[slot.stage], slot.empty_parity);
            }
        }
        if (CLUSTER > 1) { /* stay until the peer can no longer touch this CTA */
            cluster_arrive_release();
            cluster_wait_acquire();
        }
    } else {
        /* ---------------------------------------------------------- math -- */
        if (kMathWarpgroups == 2)
            setmaxnreg_inc<DINF_FP8_FAST_MATH_REGS>();
        const int math_wg = warpgroup - 1;
        const int lane = (int)(threadIdx.x % 32);
        const int warp_in_wg = (int)((threadIdx.x / 32) % 4);
        const bool store_thread = threadIdx.x % 128 == 0; /* one per math warpgroup */
        const int math_thread = (int)threadIdx.x - 128;
        uint32_t reductions = 0; /* split-K tiles reduced so far (the reduction barriers' phase) */
        const float *b_scales = reinterpret_cast<const float *>(args.b_scales);
        uint16_t *d = reinterpret_cast<uint16_t *>(args.d);

        /* One wgmma accumulator set, reused by every wave; the float32
         * totals of each wave (BLOCK_M 256: 2 x BLOCK_N / 2 + BLOCK_N / 2). */
        float acc[kAccum];
        float total[kWaves][kAccum];
        uint32_t it = 0;
        for (long long u = cluster_id;; u += num_clusters) {
            dinf_fp8_tile tile;
            const int found = dinf_fp8_unit_at(&args, GEMM_TYPE, BLOCK_M, kTileCluster,
                                               kTileCluster > 1 ? rank : 0, u, &tile);
            if (found < 0)
                break;
            if (found == 0)
                continue;
            const int m0 = tile.m_block * BLOCK_M, n0 = tile.n_block * BLOCK_N;
            /* B scales: columns [n0, n0 + former) use scale block n0 / 128, the
             * rest the next one (only when BLOCK_N does not divide 128). A
             * phantom tile starts at or past n: it reads column 0's scales
             * (in bounds; its result is never stored). */
            const int n0_scales = tile.phantom ? 0 : n0;
            const float *sb_first =
                b_scales + dinf_fp8_b_scale_index(&args, tile.group, n0_scales, 0);
            const float *sb_second =
                kOneScale ? sb_first
                          : b_scales + dinf_fp8_b_scale_index(
                                           &args, tile.group,
                                           dinf_fp8_b_scale_next_col(&args, n0_scales), 0);
            const int former = kOneScale ? BLOCK_N : dinf_fp8_b_scale_former(n0_scales, BLOCK_N);
#pragma unroll
            for (int w = 0; w < kWaves; w++)
#pragma unroll
                for (int i = 0; i < kAccum; i++)
                    total[w][i] = 0.0f;

            int kb_begin = 0, kb_end = args.k_blocks;
            if (SPLIT_K > 1)
                dinf_fp8_split_k_range(args.k_blocks, SPLIT_K, rank, &kb_begin, &kb_end);
            for (int kb = kb_begin; kb < kb_end; kb++, it++) {
                const dinf_fp8_pipe_slot slot = dinf_fp8_pipe_at(it, NUM_STAGES);
                const int s = slot.stage;
                const float b_scale0 = sb_first[kb];
                const float b_scale1 = kOneScale ? b_scale0 : sb_second[kb];
                mbar_wait_unbounded(&full[s], slot.full_parity); /* bounded by the producer */

                /* The A scales of every wave (rows half 0 / half 1 of this
                 * thread's fragment), read right after the full-barrier wait
                 * and before the k block's first wgmma (as DeepGEMM does: all
                 * shared-memory reads of the stage precede warpgroup_arrive):
                 * their latency hides behind the wgmma, and every read of the
                 * stage is issued long before the release after the last
                 * wave. 2 * kWaves registers. */
                float a_sc[kWaves][2];
#pragma unroll
                for (int w = 0; w < kWaves; w++)
#pragma unroll
                    for (int h = 0; h < 2; h++)
                        a_sc[w][h] = sa_tiles[s * BLOCK_M + dinf_fp8_frag_row_wave(
                                                                math_wg, kWaves, w, warp_in_wg,
                                                                lane, h)];

                const uint32_t b_base = smem_u32(b_tiles + s * lay.b_stage);
#pragma unroll
                for (int w = 0; w < kWaves; w++) {
                    /* Wave w: the warpgroup's rows [64 w, +64) of its kWgRows. */
                    const uint32_t a_base =
                        smem_u32(a_tiles + s * lay.a_stage +
                                 (math_wg * kWgRows + w * 64) * DINF_FP8_BLOCK_K);
#pragma unroll
                    for (int i = 0; i < kAccum; i++)
                        fence_operand(acc[i]);
                    wgmma_fence();
#pragma unroll
                    for (int ks = 0; ks < DINF_FP8_BLOCK_K / 32; ks++)
                        wgmma_e4m3<BLOCK_N>::mma(dinf_fp8_wgmma_desc_sw128(a_base + ks * 32),
                                                 dinf_fp8_wgmma_desc_sw128(b_base + ks * 32), acc,
                                                 ks > 0);
                    wgmma_commit();
                    wgmma_wait_all();
#pragma unroll
                    for (int i = 0; i < kAccum; i++)
                        fence_operand(acc[i]);

                    const float a_scale0 = a_sc[w][0];
                    const float a_scale1 = a_sc[w][1];
                    if (w == kWaves - 1) {
                        /* The warp is done with the stage (every wave's wgmma
                         * have completed and every lane read its A scales
                         * before the first wave): one arrival per warp on the
                         * empty barrier of every CTA of the cluster. */
                        __syncwarp();
                        if (kMulticast) {
                            if (lane < CLUSTER)
                                mbar_arrive_remote(
                                    cluster_map_shared(smem_u32(&empty[s]), (uint32_t)lane));
                        } else if (lane == 0) {
                            mbar_arrive(&empty[s]);
                        }
                    }

                    /* Promotion, the same float32 operations as the simple
                     * rung: scale = a_scale * b_scale, total += scale * partial
                     * (once per 128-K block per element, whatever the wave). */
                    const float scale00 = a_scale0 * b_scale0, scale10 = a_scale1 * b_scale0;
                    const float scale01 = a_scale0 * b_scale1, scale11 = a_scale1 * b_scale1;
#pragma unroll
                    for (int i = 0; i < kAccum / 4; i++) {
                        const bool first = kOneScale || 8 * i < former;
                        const float sc0 = first ? scale00 : scale01;
                        const float sc1 = first ? scale10 : scale11;
                        total[w][4 * i + 0] += sc0 * acc[4 * i + 0];
                        total[w][4 * i + 1] += sc0 * acc[4 * i + 1];
                        total[w][4 * i + 2] += sc1 * acc[4 * i + 2];
                        total[w][4 * i + 3] += sc1 * acc[4 * i + 3];
                    }
                }
            }

            if (SPLIT_K > 1) {
                /* Split-K reduction through distributed shared memory: ranks
                 * 1.. publish their partials in their own buffers once rank 0
                 * has read the previous ones; rank 0 adds them in rank order
                 * to its own, releases the buffers and stores. */
                const uint32_t phase = reductions & 1u;
                reductions++;
                if (rank != 0) {
                    mbar_wait_acquire_cluster(red_empty, phase ^ 1u);
#pragma unroll
                    for (int i = 0; i < kAccum; i++)
                        partial[dinf_fp8_split_slot(i, math_thread, kMathThreads)] = total[0][i];
                    /* one arrival per warp: __syncwarp orders the lanes' stores
                     * before lane 0's release (as the stage releases) */
                    __syncwarp();
                    if (lane == 0)
                        mbar_arrive_cluster(cluster_map_shared(smem_u32(red_full), 0));
                    continue; /* rank 0 stores the tile */
                }
                mbar_wait_acquire_cluster(red_full, phase);
#pragma unroll
                for (int r = 1; r < SPLIT_K; r++) {
                    const uint32_t remote = cluster_map_shared(smem_u32(partial), (uint32_t)r);
#pragma unroll
                    for (int i = 0; i < kAccum; i++)
                        total[0][i] =
                            total[0][i] +
                            ld_cluster_f32(remote + 4u * (uint32_t)dinf_fp8_split_slot(
                                                             i, math_thread, kMathThreads));
                }
                /* every lane's loads are done (their values are in
                 * registers); one arrival per warp on each rank's red_empty,
                 * lane r for rank r */
                __syncwarp();
                if (lane >= 1 && lane < SPLIT_K)
                    mbar_arrive_cluster(cluster_map_shared(smem_u32(red_empty), (uint32_t)lane));
            }

            if (tile.phantom)
                continue; /* the multicast partner of an odd last N-block: nothing to store */

            /* Each math warpgroup stores its own kWgRows rows (64, or two
             * 64-row waves with BLOCK_M 256), synchronising only its 128
             * threads (named barrier 1 + math_wg). */
            const int wg_row0 = m0 + math_wg * kWgRows;
            if (GEMM_TYPE != DINF_FP8_GEMM_MASKED || wg_row0 + kWgRows <= tile.row_limit) {
                /* TMA-store epilogue: the warpgroup's previous store must have
                 * read its part of the shared tile before it is overwritten. */
                if (store_thread)
                    bulk_wait_group_read_0();
                named_barrier_sync(kEpilogueBarrier + (uint32_t)math_wg, 128);
#pragma unroll
                for (int w = 0; w < kWaves; w++)
#pragma unroll
                    for (int half = 0; half < 2; half++) {
                        const int row =
                            dinf_fp8_frag_row_wave(math_wg, kWaves, w, warp_in_wg, lane, half);
                        /* Per-row parts of dinf_fp8_d_smem_offset; the opaque
                         * asm keeps the compiler from hoisting all BLOCK_N / 4
                         * offsets out of the tile loop (registers the
                         * accumulators need). */
                        uint32_t row_base = dinf_fp8_d_smem_row_base(row, lane, kSwizzleD);
                        asm volatile("" : "+r"(row_base));
                        const uint32_t row_xor = dinf_fp8_d_smem_row_xor(row, kSwizzleD);
#pragma unroll
                        for (int i = 0; i < kAccum / 4; i++)
                            *reinterpret_cast<uint32_t *>(
                                d_tile + dinf_fp8_d_smem_frag_offset(row_base, row_xor, i,
                                                                     BLOCK_M, kSwizzleD)) =
                                pack_bf16x2(total[w][4 * i + 2 * half],
                                            total[w][4 * i + 2 * half + 1]);
                    }
                fence_proxy_async_shared(); /* st.shared before the TMA store's reads */
                named_barrier_sync(kEpilogueBarrier + (uint32_t)math_wg, 128);
                if (store_thread) {
                    const int d_group = GEMM_TYPE == DINF_FP8_GEMM_MASKED ? tile.group : 0;
                    /* boxes of 64 rows: one per wave and swizzle-wide chunk */
#pragma unroll
                    for (int w = 0; w < kWaves; w++)
#pragma unroll
                        for (int j = 0; j < kStoresD; j++)
                            tma_store_3d(&map_d,
                                         d_tile + j * BLOCK_M * kSwizzleD +
                                             (math_wg * kWgRows + w * 64) * kSwizzleD,
                                         n0 + j * (kSwizzleD / 2), wg_row0 + w * 64, d_group);
                    bulk_commit_group();
                }
            } else {
                /* A masked group's last, partial rows: direct stores clipped to
                 * the owned rows (the tensor map would write up to m_max). */
#pragma unroll
                for (int w = 0; w < kWaves; w++)
#pragma unroll
                    for (int half = 0; half < 2; half++) {
                        const int row =
                            m0 + dinf_fp8_frag_row_wave(math_wg, kWaves, w, warp_in_wg, lane, half);
                        if (row >= tile.row_limit)
                            continue;
#pragma unroll
                        for (int i = 0; i < kAccum / 4; i++) {
                            const int col = n0 + dinf_fp8_frag_col(i, lane);
                            const float lo = total[w][4 * i + 2 * half];
                            const float hi = total[w][4 * i + 2 * half + 1];
                            uint16_t *out =
                                d + dinf_fp8_d_offset(&args, GEMM_TYPE, tile.group, row, col);
                            if (col + 1 < args.n)
                                *reinterpret_cast<uint32_t *>(out) = pack_bf16x2(lo, hi);
                            else if (col < args.n)
                                *out = f32_to_bf16(lo).bits;
                        }
                    }
            }
        }
        if (store_thread)
            bulk_wait_group_0(); /* the last stores complete before the CTA exits */
        if (CLUSTER > 1) {
            cluster_arrive_release();
            cluster_wait_acquire();
        }
    }
}

} // namespace dinf_jit
