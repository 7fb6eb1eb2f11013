/*
 * sm90-emu replacement of jit/templates/dinf_sm90.cuh: every wrapper of the
 * real header under the same name and signature, implemented on the host
 * (emu_sm90.cpp / emu_rt.cpp) from the PTX ISA sections the real wrappers
 * cite. tools/sm90-emu/gen.py refuses to build when the real header has a
 * wrapper that is missing here.
 */
#pragma once
#include "dinf_prelude.cuh"

namespace dinf_jit {

/* cvta.to.shared: the 32-bit shared-window address (checked: in this CTA's
 * dynamic shared memory). */
__device__ __forceinline__ uint32_t smem_u32(const void *p) { return emu::smem_addr(p); }

/* mbarrier.init.shared::cta.b64: count in [1, 2^20 - 1]; phase 0. */
__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count) {
    emu::mbar_init(reinterpret_cast<::uint64_t *>(bar), count);
}

/* fence.mbarrier_init.release.cluster + fence.proxy.async.shared::cta:
 * ordering only (the emulator's memory is sequentially consistent). */
__device__ __forceinline__ void mbar_init_fence() { emu::maybe_yield(); }

/* mbarrier.arrive.shared::cta.b64 (one arrival; more than pending = error). */
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    emu::mbar_arrive(reinterpret_cast<::uint64_t *>(bar), 1, "mbarrier.arrive");
    emu::maybe_yield();
}

/* mbarrier.arrive.expect_tx: expect-tx(tx_bytes) then arrive-on. */
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, uint32_t tx_bytes) {
    emu::mbar_expect_tx(reinterpret_cast<::uint64_t *>(bar), tx_bytes);
    emu::mbar_arrive(reinterpret_cast<::uint64_t *>(bar), 1, "mbarrier.arrive.expect_tx");
    emu::maybe_yield();
}

/* mbarrier.try_wait.parity loop: returns once the phase of parity `parity`
 * has completed (a fresh barrier counts parity 1 as completed). */
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
    emu::mbar_wait(reinterpret_cast<::uint64_t *>(bar), parity);
}

/* A CUtensorMap as the harness's cuTensorMapEncodeTiled emulation encoded it. */
struct alignas(64) tensor_map_t {
    uint64_t opaque[16];
};

__device__ __forceinline__ void tma_prefetch_descriptor(const tensor_map_t *map) { emu::tma_prefetch(map); }

/* cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes */
__device__ __forceinline__ void tma_load_3d(void *dst, const tensor_map_t *map, uint64_t *bar, int c0,
                                            int c1, int c2) {
    const int c[3] = {c0, c1, c2};
    emu::tma_load(dst, map, reinterpret_cast<::uint64_t *>(bar), c, 3, 0);
}

/* wgmma.fence / commit_group / wait_group 0 (warp-collective, .sync.aligned). */
__device__ __forceinline__ void wgmma_fence() { emu::wgmma_fence(); }
__device__ __forceinline__ void wgmma_commit() { emu::wgmma_commit(); }
__device__ __forceinline__ void wgmma_wait_all() { emu::wgmma_wait(0); }
__device__ __forceinline__ void fence_operand(float &r) { (void)r; }

/* wgmma.mma_async.sync.aligned.m64nNk32.f32.e4m3.e4m3 d, desc_a, desc_b,
 * scale-d = accumulate != 0, imm-scale-a = imm-scale-b = 1. Any N the PTX
 * ISA allows (multiples of 8 up to 256). */
template <int N> struct wgmma_e4m3 {
    static_assert(N >= 8 && N <= 256 && N % 8 == 0, "wgmma e4m3: N must be a multiple of 8 in [8, 256]");
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        emu::wgmma(emu::WG_E4M3, N, desc_a, desc_b, d, accumulate);
    }
};

/* ==========================================================================
 * The fast FP8 GEMM's wrappers (register reallocation, clusters, TMA-store
 * epilogue, named barriers), emulated under the same names.
 * ========================================================================== */

/* setmaxnreg.{dec,inc}.sync.aligned.u32 N: warpgroup-collective (all 128
 * threads), N in [24, 256] and a multiple of 8; registers are not modelled. */
template <int N> __device__ __forceinline__ void setmaxnreg_dec() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: N in [24, 256], multiple of 8");
    emu::coll_wait(emu::WARPGROUP, 201, "setmaxnreg.dec");
}
template <int N> __device__ __forceinline__ void setmaxnreg_inc() {
    static_assert(N >= 24 && N <= 256 && N % 8 == 0, "setmaxnreg: N in [24, 256], multiple of 8");
    emu::coll_wait(emu::WARPGROUP, 202, "setmaxnreg.inc");
}

/* %cluster_ctarank */
__device__ __forceinline__ uint32_t cluster_ctarank() { return emu::cluster_rank(); }

/* barrier.cluster.arrive.release / wait.acquire (per thread, not .aligned):
 * every live thread of every CTA of the cluster arrives once per phase. */
__device__ __forceinline__ void cluster_arrive_release() { emu::cluster_arrive(); }
__device__ __forceinline__ void cluster_wait_acquire() { emu::cluster_wait(); }

/* mapa.shared::cluster.u32: the same offset in CTA `rank`'s shared memory. */
__device__ __forceinline__ uint32_t cluster_map_shared(uint32_t smem_addr, uint32_t rank) {
    return emu::mapa(smem_addr, rank);
}

/* mbarrier.arrive.release.cluster.shared::cluster.b64 on a (possibly remote) barrier. */
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t cluster_addr) {
    emu::mbar_arrive(reinterpret_cast<::uint64_t *>(emu::smem_host(cluster_addr, 8, nullptr)), 1,
                     "mbarrier.arrive.release.cluster.shared::cluster");
    emu::maybe_yield();
}

/* cp.async.bulk.tensor.3d ... .multicast::cluster: the box lands in every CTA
 * of cta_mask at dst's offset and completes tx on each one's barrier at bar's offset. */
__device__ __forceinline__ void tma_load_3d_multicast(void *dst, const tensor_map_t *map, uint64_t *bar,
                                                      int c0, int c1, int c2, uint16_t cta_mask) {
    const int c[3] = {c0, c1, c2};
    if (cta_mask == 0)
        emu::fail("tma_load_3d_multicast with an empty CTA mask");
    emu::tma_load(dst, map, reinterpret_cast<::uint64_t *>(bar), c, 3, cta_mask);
}

/* cp.async.bulk.tensor.3d.global.shared::cta.bulk_group: shared memory read
 * at a later point (no later than the covering wait_group.read), global
 * writes after that; out-of-bounds elements not written. */
__device__ __forceinline__ void tma_store_3d(const tensor_map_t *map, const void *src, int c0, int c1, int c2) {
    const int c[3] = {c0, c1, c2};
    emu::tma_store(map, src, c, 3);
}
__device__ __forceinline__ void bulk_commit_group() { emu::bulk_commit_group(); }
__device__ __forceinline__ void bulk_wait_group_read_0() { emu::bulk_wait_group(0, true); }
__device__ __forceinline__ void bulk_wait_group_0() { emu::bulk_wait_group(0, false); }

/* fence.proxy.async.shared::cta: ordering only (not modelled). */
__device__ __forceinline__ void fence_proxy_async_shared() { emu::maybe_yield(); }

/* bar.sync id, threads */
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
    emu::named_barrier(id, threads);
}

/* st.shared::cluster.f32 */
__device__ __forceinline__ void st_cluster_f32(uint32_t cluster_addr, float v) {
    memcpy(emu::smem_host(cluster_addr, 4, nullptr), &v, 4);
    emu::maybe_yield();
}

/* mbarrier.try_wait.parity.acquire.cluster loop (as mbar_wait). */
__device__ __forceinline__ void mbar_wait_acquire_cluster(uint64_t *bar, uint32_t parity) {
    emu::mbar_wait(reinterpret_cast<::uint64_t *>(bar), parity);
}

} // namespace dinf_jit
