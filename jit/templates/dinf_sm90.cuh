/*
 * Hopper (sm_90a) building blocks of the JIT kernels, as inline PTX (no CUDA
 * headers at run time). Each wrapper names the PTX ISA section it implements
 * (PTX ISA 8.x, "Parallel Synchronization and Communication Instructions" and
 * "Warpgroup Level Matrix Multiply-Accumulate Instructions").
 *
 *   shared-memory addresses    cvta.to.shared
 *   mbarrier                   9.7.13.15 mbarrier.{init,arrive,arrive.expect_tx,try_wait.parity}
 *   TMA (bulk tensor copy)     9.7.9.25 cp.async.bulk.tensor (global -> shared, mbarrier completion)
 *   wgmma                      9.7.15 wgmma.fence / mma_async / commit_group / wait_group,
 *                              (the matrix descriptor: fp8_gemm_sched.cuh)
 */
#pragma once
#include "dinf_prelude.cuh"

namespace dinf_jit {

/* ------------------------------------------------------------- shared -- */

/* The 32-bit shared-window address of a pointer into shared memory. */
__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    uint64_t a;
    asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
    return (uint32_t)a;
}

/* ----------------------------------------------------------- mbarrier -- */

__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count)
                 : "memory");
}

/* Make initialised barriers visible to the other threads and to the async
 * proxy (TMA) before first use; a __syncthreads must follow. */
__device__ __forceinline__ void mbar_init_fence() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_u32(bar)) : "memory");
}

/* Arrive and announce tx_bytes that asynchronous copies will complete. */
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, uint32_t tx_bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_u32(bar)),
                 "r"(tx_bytes)
                 : "memory");
}

/* One mbarrier.try_wait.parity.shared::cta.b64 (PTX ISA 9.7.13.15.16): 1 if
 * the phase of parity `parity` has completed (a fresh barrier counts as
 * having completed parity 1), else 0 after the instruction's own bounded
 * wait. Acquire semantics at CTA scope when it returns 1. */
__device__ __forceinline__ uint32_t mbar_try_wait(uint64_t *bar, uint32_t parity) {
    uint32_t done;
    asm volatile("{\n.reg .pred p;\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                 "selp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(done)
                 : "r"(smem_u32(bar)), "r"(parity)
                 : "memory");
    return done;
}

/* mov.u64 %globaltimer (PTX ISA 10 special registers): nanoseconds of a
 * global wall clock (coarse ticks), for bounding waits. */
__device__ __forceinline__ uint64_t globaltimer_ns() {
    uint64_t t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}

/* trap (PTX ISA 9.7.19.6): abort the kernel (the launch fails with an
 * unspecified launch failure). */
__device__ __forceinline__ void trap() { asm volatile("trap;"); }

/* The bound of every mbarrier wait of the JIT kernels, in nanoseconds of
 * %globaltimer: a wait still unfinished after it traps, so a protocol bug,
 * a wrong expect_tx byte count or a hardware fault fails the launch ("an
 * illegal instruction / unspecified launch failure" at the next
 * synchronisation) within seconds instead of hanging the stream. Every
 * thread of a GEMM kernel passes griddepcontrol.wait before its first
 * mbarrier wait, so the time an upstream kernel runs (PDL) never counts;
 * a tile's longest legitimate wait is microseconds. A debugger stopping the
 * kernel for longer than this makes the next wait trap. */
#ifndef DINF_JIT_WAIT_NS
#define DINF_JIT_WAIT_NS 4000000000ull
#endif

/* Wait until the phase of parity `parity` has completed. A fresh barrier
 * counts as having completed the phase of parity 1 (so producers start
 * waiting on empty slots with parity 1 and pass at once). Traps after
 * DINF_JIT_WAIT_NS (the clock is read only once the first try has failed,
 * then every 64 tries). */
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
    if (mbar_try_wait(bar, parity))
        return;
    const uint64_t start = globaltimer_ns();
    for (uint32_t tries = 1;; tries++) {
        if (mbar_try_wait(bar, parity))
            return;
        if (tries % 64 == 0 && globaltimer_ns() - start > DINF_JIT_WAIT_NS)
            trap();
    }
}

/* As mbar_wait without the time bound: for the math warpgroups' waits on
 * full stages, inside loops whose accumulators leave no registers for a
 * trap path (ptxas spills with it). Each such wait is covered by a bounded
 * one: the producer's waits on the empty stages, which cannot complete
 * while a math warpgroup is stuck, and its drain after the last fill
 * (mbar_wait on the releases of its last NUM_STAGES fills), so a math
 * warpgroup stuck on a stage the producer filled still makes the kernel trap
 * within DINF_JIT_WAIT_NS (one waiting for a fill the producer never makes,
 * a scheduler disagreement, is not covered). */
__device__ __forceinline__ void mbar_wait_unbounded(uint64_t *bar, uint32_t parity) {
    while (!mbar_try_wait(bar, parity)) {
    }
}

/* ---------------------------------------------------------------- TMA -- */

/* A CUtensorMap (encoded on the host by cuTensorMapEncodeTiled), passed to
 * kernels by value as a __grid_constant__ parameter. */
struct alignas(64) tensor_map_t {
    uint64_t opaque[16];
};

__device__ __forceinline__ void tma_prefetch_descriptor(const tensor_map_t *map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"((uint64_t)map) : "memory");
}

/* 3-D tile load global -> shared, completing tx bytes on bar. c0 is the
 * innermost (contiguous) coordinate, in elements. */
__device__ __forceinline__ void tma_load_3d(void *dst, const tensor_map_t *map, uint64_t *bar,
                                            int c0, int c1, int c2) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%3, %4, %5}], [%2];" ::"r"(smem_u32(dst)),
                 "l"((uint64_t)map), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2)
                 : "memory");
}

/* -------------------------------------------------------------- wgmma -- */

/* The shared memory matrix descriptors of the FP8 GEMM's operands are built
 * by dinf_fp8_wgmma_desc_sw128 (fp8_gemm_sched.cuh), host-device code whose
 * bit fields the CPU tests check. */

__device__ __forceinline__ void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
}
/* Keep the compiler from moving accesses of an accumulator register across
 * the asynchronous wgmma (CUTLASS's warpgroup_fence_operand). */
__device__ __forceinline__ void fence_operand(float &r) { asm volatile("" : "+f"(r)::"memory"); }

/*
 * D[64 x N] (+)= A[64 x 32] * B[N x 32]^T, e4m3 x e4m3 -> f32, both operands
 * K-major in shared memory (descriptors). accumulate = 0 overwrites d. The
 * thread's N/2 accumulators: for column group i (8 columns), d[4i], d[4i+1]
 * are row warp*16 + lane/4, columns 8i + 2*(lane%4) + {0, 1}; d[4i+2],
 * d[4i+3] the same columns of row + 8.
 */
template <int N> struct wgmma_e4m3;

// GENERATED by tools/gen-wgmma.py: begin
template <> struct wgmma_e4m3<16> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7}, "
                     "%8, %9, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
template <> struct wgmma_e4m3<32> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
                     "%16, %17, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
template <> struct wgmma_e4m3<64> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                     "%32, %33, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     , "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
template <> struct wgmma_e4m3<128> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                     "%64, %65, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     , "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     , "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
                     , "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
// GENERATED by tools/gen-wgmma.py: end


/* =========================================================================
 * Added for the fast FP8 GEMM (fp8_gemm_fast.cuh): register reallocation,
 * thread-block clusters (2-CTA TMA multicast, remote mbarrier arrive),
 * the TMA-store epilogue (bulk tensor store, bulk async-groups, proxy fence,
 * named barriers), and wgmma e4m3 for the block_n values that do not divide
 * 128. One PTX instruction per wrapper; PTX ISA 8.x sections named.
 * ========================================================================= */

/* 9.7.17.1 setmaxnreg: every thread of the executing warpgroup (all 128
 * threads must execute it, .sync.aligned) lowers its maximum register count
 * to N (24..256, a multiple of 8), returning the registers above N to the
 * CTA's pool. Takes effect only in kernels with a register cap at entry
 * (__launch_bounds__(threads, 1)). */
template <int N> __device__ __forceinline__ void setmaxnreg_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N));
}

/* 9.7.17.1 setmaxnreg: every thread of the executing warpgroup raises its
 * maximum register count to N, waiting until the CTA's pool (registers
 * released by setmaxnreg_dec) can supply them. */
template <int N> __device__ __forceinline__ void setmaxnreg_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N));
}

/* 10.12 special register %cluster_ctarank: this CTA's rank in its cluster,
 * 0 .. cluster size - 1 (for a cluster of (2,1,1): blockIdx.x % 2). */
__device__ __forceinline__ uint32_t cluster_ctarank() {
    uint32_t r;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
    return r;
}

/* 9.7.13.4 barrier.cluster.arrive.release: the calling thread arrives on
 * the cluster-wide barrier; its prior memory accesses (shared memory of any
 * CTA of the cluster included) are released to the threads that complete
 * the matching cluster_wait_acquire. Every thread of every CTA of the cluster
 * must arrive once per barrier phase. Not .aligned: callable from diverged
 * code (a warp whose lane 0 ran a loop alone). */
__device__ __forceinline__ void cluster_arrive_release() {
    asm volatile("barrier.cluster.arrive.release;" ::: "memory");
}

/* 9.7.13.4 barrier.cluster.wait.acquire: wait until every thread of the
 * cluster has arrived (cluster_arrive_release) on the current phase; their
 * released accesses are visible afterwards. Not .aligned (as above). */
__device__ __forceinline__ void cluster_wait_acquire() {
    asm volatile("barrier.cluster.wait.acquire;" ::: "memory");
}

/* 9.7.9.21 mapa: the shared::cluster address of the variable at shared::cta
 * address `smem_addr` (smem_u32) in the CTA of cluster rank `rank` (the same
 * offset in that CTA's shared memory). */
__device__ __forceinline__ uint32_t cluster_map_shared(uint32_t smem_addr, uint32_t rank) {
    uint32_t r;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem_addr), "r"(rank));
    return r;
}

/* 9.7.13.15.13 mbarrier.arrive.release.cluster.shared::cluster: arrive once
 * on the mbarrier at shared::cluster address `cluster_addr`
 * (cluster_map_shared; may be this CTA's own or a peer's), releasing the
 * caller's prior memory accesses at cluster scope. */
__device__ __forceinline__ void mbar_arrive_cluster(uint32_t cluster_addr) {
    asm volatile("mbarrier.arrive.release.cluster.shared::cluster.b64 _, [%0];" ::"r"(cluster_addr)
                 : "memory");
}

/* 9.7.13.15.13 mbarrier.arrive.shared::cluster (.release.cta, the defaults):
 * arrive once on the mbarrier at shared::cluster address `cluster_addr`
 * (this CTA's or a peer's) without a cluster-scope release. For signals
 * that publish no data, only "I am done reading": a consumer freeing a
 * pipeline stage whose reads have completed (wgmma waited for, loads
 * consumed). ptxas emits a bare SYNCS arrive for it, where the .cluster
 * release form costs a GPU-scope MEMBAR per call (DeepGEMM/CUTLASS's
 * ClusterBarrier::arrive(cta_id) is this form). */
__device__ __forceinline__ void mbar_arrive_remote(uint32_t cluster_addr) {
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];" ::"r"(cluster_addr) : "memory");
}

/* 9.7.9.25 cp.async.bulk.tensor (.multicast::cluster): 3-D tile load global
 * -> shared into every CTA of the cluster whose rank bit is set in cta_mask,
 * each at the same CTA-relative offset as dst, each completing the tx bytes
 * of the box on its own mbarrier at the same offset as bar. c0 innermost, in
 * elements. Out-of-bounds elements are zero-filled and counted. */
__device__ __forceinline__ void tma_load_3d_multicast(void *dst, const tensor_map_t *map,
                                                      uint64_t *bar, int c0, int c1, int c2,
                                                      uint16_t cta_mask) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 ".multicast::cluster [%0], [%1, {%3, %4, %5}], [%2], %6;" ::"r"(smem_u32(dst)),
                 "l"((uint64_t)map), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "h"(cta_mask)
                 : "memory");
}

/* 9.7.9.25 cp.async.bulk.tensor (shared -> global, .bulk_group): 3-D tile
 * store of the box at src (laid out, and swizzled, as the tensor map says) to
 * the tensor at coordinates (c0, c1, c2); elements outside the tensor's dims
 * are not written. Asynchronous: src must not be overwritten until
 * bulk_wait_group_read says the store has read it. The caller must have
 * made its shared-memory writes visible to the async proxy
 * (fence_proxy_async_shared) first. */
__device__ __forceinline__ void tma_store_3d(const tensor_map_t *map, const void *src, int c0,
                                             int c1, int c2) {
    asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];"
                 ::"l"((uint64_t)map), "r"(smem_u32(src)), "r"(c0), "r"(c1), "r"(c2)
                 : "memory");
}

/* 9.7.9.26 cp.async.bulk.commit_group: close the calling thread's pending
 * bulk async operations (tma_store_3d) into one bulk async-group. */
__device__ __forceinline__ void bulk_commit_group() {
    asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}

/* 9.7.9.27 cp.async.bulk.wait_group.read 0: wait until every bulk
 * async-group of the calling thread has finished reading its source (shared
 * memory may be reused; the global writes may still be in flight). */
__device__ __forceinline__ void bulk_wait_group_read_0() {
    asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
}

/* 9.7.9.27 cp.async.bulk.wait_group 0: wait until every bulk async-group of
 * the calling thread has completed (its global writes done). */
__device__ __forceinline__ void bulk_wait_group_0() {
    asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

/* 9.7.13.6 fence.proxy.async.shared::cta: order the calling thread's prior
 * generic-proxy shared-memory accesses (ordinary stores) before later
 * async-proxy accesses (TMA store, wgmma operand reads) of shared memory. */
__device__ __forceinline__ void fence_proxy_async_shared() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/* 9.7.13.1 bar.sync id, threads: named barrier `id` (1..15; 0 is
 * __syncthreads) for `threads` threads (a multiple of 32) of the CTA;
 * orders their shared-memory accesses like __syncthreads. */
__device__ __forceinline__ void named_barrier_sync(uint32_t id, uint32_t threads) {
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

/* 9.7.9.8 ld.shared::cluster: load the float at shared::cluster address
 * cluster_addr (cluster_map_shared: another CTA's shared memory). Weak load:
 * order it after the owner's stores with an acquire
 * (mbar_wait_acquire_cluster on a barrier the owner arrived on with
 * mbar_arrive_cluster). */
__device__ __forceinline__ float ld_cluster_f32(uint32_t cluster_addr) {
    float v;
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(cluster_addr) : "memory");
    return v;
}

/* 9.7.13.15.16 mbarrier.try_wait.parity.acquire.cluster: as mbar_wait (wait
 * until the phase of parity `parity` of this CTA's barrier has completed),
 * with acquire semantics at cluster scope: memory accesses that other CTAs
 * of the cluster released by arriving (mbar_arrive_cluster), their stores
 * into this CTA's shared memory included, are visible afterwards. Traps
 * after DINF_JIT_WAIT_NS, as mbar_wait. */
__device__ __forceinline__ void mbar_wait_acquire_cluster(uint64_t *bar, uint32_t parity) {
    const uint32_t addr = smem_u32(bar);
    uint64_t start = 0;
    for (uint32_t tries = 0;; tries++) {
        uint32_t done;
        asm volatile("{\n.reg .pred p;\n"
                     "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(addr), "r"(parity)
                     : "memory");
        if (done)
            return;
        if (tries == 0)
            start = globaltimer_ns();
        else if (tries % 64 == 0 && globaltimer_ns() - start > DINF_JIT_WAIT_NS)
            trap(); /* bounded as mbar_wait */
    }
}

/* wgmma e4m3 for N = 48, 80, 96, 112, 144, 160 (same contract as above). */
// GENERATED by tools/gen-wgmma.py 48 80 96 112 144 160: begin
template <> struct wgmma_e4m3<48> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %26, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n48k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23}, "
                     "%24, %25, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     , "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
template <> struct wgmma_e4m3<80> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %42, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n80k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39}, "
                     "%40, %41, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     , "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     , "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
template <> struct wgmma_e4m3<96> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %50, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n96k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, "
                     "%48, %49, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     , "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     , "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
template <> struct wgmma_e4m3<112> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %58, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n112k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                     "%48, %49, %50, %51, %52, %53, %54, %55}, "
                     "%56, %57, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     , "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     , "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
                     , "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
template <> struct wgmma_e4m3<144> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %74, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n144k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
                     "%64, %65, %66, %67, %68, %69, %70, %71}, "
                     "%72, %73, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     , "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     , "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
                     , "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                     , "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
template <> struct wgmma_e4m3<160> {
    __device__ __forceinline__ static void mma(uint64_t desc_a, uint64_t desc_b, float *d, int accumulate) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %82, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n160k32.f32.e4m3.e4m3 "
                     "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                     "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                     "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                     "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
                     "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79}, "
                     "%80, %81, p, 1, 1;\n}\n"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                     , "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                     , "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
                     , "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                     , "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79])
                     : "l"(desc_a), "l"(desc_b), "r"(accumulate));
    }
};
// GENERATED by tools/gen-wgmma.py 48 80 96 112 144 160: end

/* cvt.rn.bf16x2.f32 (PTX ISA 9.7.9.21 cvt): two float32 to a bf16x2 word,
 * round to nearest even (NaN stays NaN); lo in bits 0-15, hi in 16-31. */
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* ------------------------------------------ programmatic dependent launch -- */

/* griddepcontrol (PTX ISA 9.7.13.13, sm_90; programmatic dependent launch,
 * cudaLaunchAttributeProgrammaticStreamSerialization on the host):
 * griddep_wait blocks until every prerequisite grid has completed and its
 * memory operations are visible to this grid (a no-op when the grid was
 * launched without a programmatic dependency); griddep_launch_dependents
 * signals that the dependent grid may be scheduled once every CTA of this
 * grid has signalled or exited (it orders nothing: the dependent still waits
 * with griddep_wait before reading this grid's results). Shared by the fast
 * FP8 GEMM (fp8_gemm_fast.cuh) and the MLA block below. */
__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void griddep_launch_dependents() {
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

} // namespace dinf_jit

/* ======================================================================
 * MLA fast decode rung (kernels/mla/mla_decode_fast.cu): wrappers added for
 * it. Appended block: the wrappers above are unchanged. Each is one PTX
 * instruction (or a fixed short sequence) with the semantics stated in its
 * comment, so that a host emulator can implement each on its own. They live
 * in dinf_jit::mla; the generic ones it shares with the GEMM (setmaxnreg,
 * fences, named barriers, pack_bf16x2) are brought in by using-declarations.
 * ====================================================================== */
namespace dinf_jit {
namespace mla {

/* The generic wrappers above, under the names this block's kernel calls
 * them by (ptx::...): fence_proxy_async_shared (a thread that writes an
 * operand wgmma will read fences after its stores and before the barrier or
 * mbarrier arrive that publishes them), named_barrier_sync, setmaxnreg_*. */
using dinf_jit::fence_proxy_async_shared;
using dinf_jit::named_barrier_sync;
using dinf_jit::pack_bf16x2;
using dinf_jit::setmaxnreg_dec;
using dinf_jit::setmaxnreg_inc;

using dinf_jit::griddep_launch_dependents;
using dinf_jit::griddep_wait;

/* Defined above (they bound the GEMM kernels' waits too): mbar_try_wait,
 * globaltimer_ns, trap. */
using dinf_jit::globaltimer_ns;
using dinf_jit::mbar_try_wait;
using dinf_jit::trap;

/* 4-D tile load global -> shared (PTX ISA 9.7.9.25.5.2 cp.async.bulk.tensor,
 * .tile mode): the box of the tensor map at coordinates {c0, c1, c2, c3}
 * (c0 innermost, in elements) is written to dst (the map's swizzle applied,
 * out-of-range elements zero-filled) and its full byte count is completed
 * as transactions on the mbarrier bar (complete_tx::bytes). */
__device__ __forceinline__ void tma_load_4d(void *dst, const tensor_map_t *map, uint64_t *bar,
                                            int c0, int c1, int c2, int c3) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%3, %4, %5, %6}], [%2];" ::"r"(smem_u32(dst)),
                 "l"((uint64_t)map), "r"(smem_u32(bar)), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
                 : "memory");
}

/* cp.async.bulk.prefetch.L2.global [src], bytes (PTX ISA, data movement
 * instructions, "cp.async.bulk.prefetch"; PTX ISA 8.0, sm_90; SASS
 * UBLKPF.L2): ask for the global memory [src, src + bytes) to be brought
 * into L2, asynchronously, as a hint (no completion, no register or
 * shared-memory destination, nothing to wait for). src 16-byte aligned,
 * bytes a multiple of 16; the range must lie inside an allocation (the
 * callers guarantee it). */
__device__ __forceinline__ void bulk_prefetch_l2(const void *src, uint32_t bytes) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"(bytes) : "memory");
}

/* cvt.rn.f16x2.e4m3x2 then cvt.f32.f16 (PTX ISA 9.7.9.21 cvt, sm_89+): two
 * float8_e4m3fn codes (low byte = lo) to float32, exactly (every e4m3 value,
 * NaN included, is a half value). */
__device__ __forceinline__ void e4m3x2_to_f32x2(uint16_t codes, float &lo, float &hi) {
    uint32_t h2;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(codes));
    asm("{\n.reg .f16 a, b;\nmov.b32 {a, b}, %2;\ncvt.f32.f16 %0, a;\ncvt.f32.f16 %1, b;\n}"
        : "=f"(lo), "=f"(hi)
        : "r"(h2));
}

/* wgmma.wait_group.sync.aligned N (PTX ISA 9.7.15.7): wait until at most N
 * of this warpgroup's committed wgmma groups are pending. */
template <int N> __device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

/*
 * wgmma.mma_async bf16 x bf16 -> f32 (PTX ISA 9.7.15.5), both operands in
 * shared memory through descriptors: D[64 x N] = A[64 x 16] B[16 x N]
 * (+ D when scale_d != 0, else D is overwritten). The accumulator fragment:
 * thread t of the warpgroup, value v: row 16 (t / 32) + (t % 32) / 4 +
 * 8 ((v / 2) % 2), column 8 (v / 4) + 2 (t % 4) + v % 2.
 * _kk: A and B K-major (imm-trans-a = imm-trans-b = 0: A row m holds its 16
 * k values contiguously, B column n holds its 16 k values contiguously).
 * _kt: A K-major, B MN-major (imm-trans-b = 1: B row k holds N values
 * contiguously). Asynchronous: issue after wgmma_fence, then wgmma_commit
 * and wgmma_wait before touching d.
 */
/* S block of one consumer WG: 64 rows x 32 keys. */
__device__ __forceinline__ void wgmma_bf16_m64n32k16_kk(uint64_t desc_a, uint64_t desc_b, float (&d)[16],
                                                       int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
                 "{"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
                 "}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

/* S block of one seesaw consumer WG: 64 rows x 64 keys (the whole block). */
__device__ __forceinline__ void wgmma_bf16_m64n64k16_kk(uint64_t desc_a, uint64_t desc_b, float (&d)[32],
                                                       int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                 "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

/* bar.arrive id, threads (PTX ISA 9.7.13.4 bar, barrier): the calling
 * thread counts as one of the `threads` arrivals at named barrier id and goes
 * on without waiting; the threads that bar.sync id with the same count are
 * released once `threads` threads arrived in all. Shared-memory writes before
 * the arrive are visible to the waiters after their bar.sync (the
 * producer -> consumer use of a named barrier). A warp's threads all arrive. */
__device__ __forceinline__ void named_barrier_arrive(uint32_t id, uint32_t threads) {
    asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

/* O half of one consumer WG: 64 rows x 256 output columns. */
__device__ __forceinline__ void wgmma_bf16_m64n256k16_kt(uint64_t desc_a, uint64_t desc_b, float (&d)[128],
                                                        int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
                 "{"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
                 "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
                 "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
                 "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
                 "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
                 "}, %128, %129, p, 1, 1, 0, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
                   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
                   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
                   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
                   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
                   "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
                   "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
                   "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
                   "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
                   "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
                   "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
                   "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
                   "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
                 : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

} // namespace mla
} // namespace dinf_jit (MLA block)
