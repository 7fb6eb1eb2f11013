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

} // namespace dinf_jit
