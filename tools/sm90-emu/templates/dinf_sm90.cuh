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

#ifdef EMU_HAVE_mbar_wait_unbounded
/* The same wait without the real header's time bound (the emulator's waits
 * never time out: a protocol bug is a deadlock report). */
__device__ __forceinline__ void mbar_wait_unbounded(uint64_t *bar, uint32_t parity) {
    emu::mbar_wait(reinterpret_cast<::uint64_t *>(bar), parity);
}
#endif

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

#if defined(EMU_HAVE_setmaxnreg_dec) || defined(EMU_HAVE_setmaxnreg_inc)
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
#endif

#ifdef EMU_HAVE_cluster_ctarank
/* %cluster_ctarank */
__device__ __forceinline__ uint32_t cluster_ctarank() { return emu::cluster_rank(); }
#endif

#ifdef EMU_HAVE_cluster_arrive_release
/* barrier.cluster.arrive.release / wait.acquire (per thread, not .aligned):
 * every live thread of every CTA of the cluster arrives once per phase. */
__device__ __forceinline__ void cluster_arrive_release() { emu::cluster_arrive(); }
#endif
#ifdef EMU_HAVE_cluster_wait_acquire
__device__ __forceinline__ void cluster_wait_acquire() { emu::cluster_wait(); }
#endif

#ifdef EMU_HAVE_cluster_map_shared
/* mapa.shared::cluster.u32: the same offset in CTA `rank`'s shared memory. */
__device__ __forceinline__ uint32_t cluster_map_shared(uint32_t smem_addr, uint32_t rank) {
    return emu::mapa(smem_addr, rank);
}
#endif

#ifdef EMU_HAVE_mbar_arrive_remote
/* mbarrier.arrive.shared::cluster.b64 (release.cta) on a (possibly remote) barrier. */
__device__ __forceinline__ void mbar_arrive_remote(uint32_t cluster_addr) {
    emu::mbar_arrive(reinterpret_cast<::uint64_t *>(emu::smem_host(cluster_addr, 8, nullptr)), 1,
                     "mbarrier.arrive.shared::cluster");
    emu::maybe_yield();
}
#endif

#ifdef EMU_HAVE_mbar_arrive_cluster
/* mbarrier.arrive.release.cluster.shared::cluster.b64 on a (possibly remote) barrier. */
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t cluster_addr) {
    emu::mbar_arrive(reinterpret_cast<::uint64_t *>(emu::smem_host(cluster_addr, 8, nullptr)), 1,
                     "mbarrier.arrive.release.cluster.shared::cluster");
    emu::maybe_yield();
}
#endif

#ifdef EMU_HAVE_tma_load_3d_multicast
/* cp.async.bulk.tensor.3d ... .multicast::cluster: the box lands in every CTA
 * of cta_mask at dst's offset and completes tx on each one's barrier at bar's offset. */
__device__ __forceinline__ void tma_load_3d_multicast(void *dst, const tensor_map_t *map, uint64_t *bar,
                                                      int c0, int c1, int c2, uint16_t cta_mask) {
    const int c[3] = {c0, c1, c2};
    if (cta_mask == 0)
        emu::fail("tma_load_3d_multicast with an empty CTA mask");
    emu::tma_load(dst, map, reinterpret_cast<::uint64_t *>(bar), c, 3, cta_mask);
}
#endif

#ifdef EMU_HAVE_tma_store_3d
/* cp.async.bulk.tensor.3d.global.shared::cta.bulk_group: shared memory read
 * at a later point (no later than the covering wait_group.read), global
 * writes after that; out-of-bounds elements not written. */
__device__ __forceinline__ void tma_store_3d(const tensor_map_t *map, const void *src, int c0, int c1, int c2) {
    const int c[3] = {c0, c1, c2};
    emu::tma_store(map, src, c, 3);
}
#endif
#ifdef EMU_HAVE_bulk_commit_group
__device__ __forceinline__ void bulk_commit_group() { emu::bulk_commit_group(); }
#endif
#ifdef EMU_HAVE_bulk_wait_group_read_0
__device__ __forceinline__ void bulk_wait_group_read_0() { emu::bulk_wait_group(0, true); }
#endif
#ifdef EMU_HAVE_bulk_wait_group_0
__device__ __forceinline__ void bulk_wait_group_0() { emu::bulk_wait_group(0, false); }
#endif

#ifdef EMU_HAVE_fence_proxy_async_shared
/* fence.proxy.async.shared::cta: ordering only (not modelled). */
__device__ __forceinline__ void fence_proxy_async_shared() { emu::maybe_yield(); }
#endif

#ifdef EMU_HAVE_named_barrier_sync
/* bar.sync id, threads */
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
    emu::named_barrier(id, threads);
}
#endif

#ifdef EMU_HAVE_ld_cluster_f32
/* ld.shared::cluster.f32 */
__device__ __forceinline__ float ld_cluster_f32(uint32_t cluster_addr) {
    float v;
    memcpy(&v, emu::smem_host(cluster_addr, 4, nullptr), 4);
    emu::maybe_yield();
    return v;
}
#endif

#ifdef EMU_HAVE_mbar_wait_acquire_cluster
/* mbarrier.try_wait.parity.acquire.cluster loop (as mbar_wait). */
__device__ __forceinline__ void mbar_wait_acquire_cluster(uint64_t *bar, uint32_t parity) {
    emu::mbar_wait(reinterpret_cast<::uint64_t *>(bar), parity);
}
#endif

#ifdef EMU_HAVE_griddep_wait
/* griddepcontrol.wait: the emulator runs grids one after another, so the
 * prerequisite grid has always completed (a no-op for memory); the thread is
 * marked as having passed it: in a launch with programmatic dependent launch
 * a global access or TMA issue by a thread that has not is an error. */
__device__ __forceinline__ void griddep_wait() { emu::griddep_wait(); }
#endif
#ifdef EMU_HAVE_griddep_launch_dependents
/* griddepcontrol.launch_dependents: nothing to schedule early here (no-op). */
__device__ __forceinline__ void griddep_launch_dependents() { emu::maybe_yield(); }
#endif

/* ==========================================================================
 * The fast MLA decode's wrappers (kernels/mla/mla_decode_fast.cu), in
 * dinf_jit::mla as in the real header (pack_bf16x2 is a generic one above).
 * ========================================================================== */
#ifdef EMU_HAVE_pack_bf16x2
/* cvt.rn.bf16x2.f32 (lo in bits 0-15) */
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) { return emu::cvt_rn_bf16x2_f32(hi, lo); }
#endif

namespace mla {

#ifdef EMU_HAVE_named_bar_sync
/* bar.sync id, count */
__device__ __forceinline__ void named_bar_sync(uint32_t id, uint32_t count) { emu::named_barrier(id, count); }
#endif

#ifdef EMU_HAVE_griddep_wait
using dinf_jit::griddep_wait;
#endif
#ifdef EMU_HAVE_griddep_launch_dependents
using dinf_jit::griddep_launch_dependents;
#endif

#ifdef EMU_HAVE_tma_load_4d
/* cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes */
__device__ __forceinline__ void tma_load_4d(void *dst, const tensor_map_t *map, uint64_t *bar, int c0, int c1,
                                            int c2, int c3) {
    const int c[4] = {c0, c1, c2, c3};
    emu::tma_load(dst, map, reinterpret_cast<::uint64_t *>(bar), c, 4, 0);
}
#endif

#ifdef EMU_HAVE_bulk_prefetch_l2
/* cp.async.bulk.prefetch.L2.global [src], bytes: a hint, no effect here; the
 * operand rules are checked (16-byte aligned address, a nonzero multiple of
 * 16 bytes). tools/mla-emu, which runs the MLA kernels that issue it, also
 * checks the range against the cache. */
__device__ __forceinline__ void bulk_prefetch_l2(const void *src, uint32_t bytes) {
    if (reinterpret_cast<uintptr_t>(src) % 16 || bytes % 16 || bytes == 0)
        emu::fail("cp.async.bulk.prefetch.L2 with a misaligned address or a size not a nonzero multiple of 16");
}
#endif

#ifdef EMU_HAVE_e4m3x2_to_f32x2
/* cvt.rn.f16x2.e4m3x2 + cvt.f32.f16: exact (low byte = lo). */
__device__ __forceinline__ void e4m3x2_to_f32x2(uint16_t codes, float &lo, float &hi) {
    lo = emu::e4m3_to_f32((unsigned char)(codes & 0xFF));
    hi = emu::e4m3_to_f32((unsigned char)(codes >> 8));
}
#endif

#ifdef EMU_HAVE_pack_bf16x2
using dinf_jit::pack_bf16x2;
#endif

#ifdef EMU_HAVE_mbar_try_wait
/* One mbarrier.try_wait.parity: 1 once the phase of that parity has
 * completed. The emulator blocks the thread until then (a protocol bug is a
 * reported deadlock, never a time-out) and, under EMU_SKEW, sometimes
 * returns 0 once first, as the instruction may. */
__device__ __forceinline__ uint32_t mbar_try_wait(uint64_t *bar, uint32_t parity) {
    return emu::mbar_try_wait(reinterpret_cast<::uint64_t *>(bar), parity);
}
#endif

#ifdef EMU_HAVE_globaltimer_ns
/* %globaltimer: the scheduler's step count (waits never time out here). */
__device__ __forceinline__ uint64_t globaltimer_ns() { return emu::steps(); }
#endif

#ifdef EMU_HAVE_trap
__device__ __forceinline__ void trap() { emu::fail("trap"); }
#endif

#ifdef EMU_HAVE_wgmma_wait
/* wgmma.wait_group.sync.aligned N */
template <int N> __device__ __forceinline__ void wgmma_wait() { emu::wgmma_wait(N); }
#endif

#ifdef EMU_HAVE_wgmma_bf16_m64n32k16_kk
/* wgmma m64n32k16 bf16, A and B K-major */
__device__ __forceinline__ void wgmma_bf16_m64n32k16_kk(uint64_t desc_a, uint64_t desc_b, float (&d)[16],
                                                       int scale_d) {
    emu::wgmma(emu::WG_BF16, 32, desc_a, desc_b, d, scale_d, 0);
}
#endif

#ifdef EMU_HAVE_wgmma_bf16_m64n64k16_kk
/* wgmma m64n64k16 bf16, A and B K-major (the seesaw rung's QK^T) */
__device__ __forceinline__ void wgmma_bf16_m64n64k16_kk(uint64_t desc_a, uint64_t desc_b, float (&d)[32],
                                                       int scale_d) {
    emu::wgmma(emu::WG_BF16, 64, desc_a, desc_b, d, scale_d, 0);
}
#endif

#ifdef EMU_HAVE_named_barrier_arrive
/* bar.arrive id, threads */
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t threads) {
    emu::named_barrier_arrive(id, threads);
}
#endif

#ifdef EMU_HAVE_wgmma_bf16_m64n256k16_kt
/* wgmma m64n256k16 bf16, A K-major, B MN-major (imm-trans-b = 1) */
__device__ __forceinline__ void wgmma_bf16_m64n256k16_kt(uint64_t desc_a, uint64_t desc_b, float (&d)[128],
                                                        int scale_d) {
    emu::wgmma(emu::WG_BF16, 256, desc_a, desc_b, d, scale_d, 1);
}
#endif

} // namespace mla

} // namespace dinf_jit
