/*
 * sm90-emu runtime: runs the CTAs of one thread-block cluster on the host,
 * every CUDA thread a fiber, scheduled cooperatively in one OS thread.
 *
 * Fibers switch only at emulated synchronisation points (collectives,
 * __syncthreads, mbarrier waits, cluster barriers) and, with EMU_SKEW=1, at
 * random "yield" points inside the emulated PTX wrappers; ready fibers and
 * pending asynchronous operations (TMA loads/stores) are then picked at
 * random (seed EMU_SEED), so warps drift apart and copies land late.
 *
 * Everything here is our reading of the PTX ISA; see README.md for what the
 * emulation cannot tell.
 */
#pragma once
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace emu {

/* Abort with "EMU: <message> [cta, thread]" (an emulator-detected error). */
[[noreturn]] void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

struct U3 {
    unsigned x, y, z;
};

/* ------------------------------------------------------------ threads -- */
unsigned tid();          /* threadIdx.x (1-D blocks) */
U3 block_idx();          /* blockIdx */
U3 grid_dim();           /* gridDim */
U3 block_dim();          /* blockDim */
unsigned cluster_rank(); /* %cluster_ctarank */
unsigned cluster_size(); /* %cluster_nctarank */
extern int skew;         /* EMU_SKEW */
uint64_t rnd();          /* the scheduler's random stream (EMU_SEED) */

/* A random scheduling point (skew only): the fiber may be held back. */
void maybe_yield();
/* __syncthreads (bar.sync 0): every live thread of the CTA. */
void syncthreads();
/* bar.sync id, threads (named barrier; id 1..15). */
void named_barrier(unsigned id, unsigned threads);
/* bar.arrive id, threads (counts toward the named barrier, does not wait). */
void named_barrier_arrive(unsigned id, unsigned threads);
/* barrier.cluster.arrive / wait (aligned: every live thread of every CTA of the cluster). */
void cluster_arrive();
void cluster_wait();

/* Collective operations: a thread writes its slot, then waits until every
 * thread of its warp (32) or warpgroup (128) reached an operation with the
 * same opcode; slots are double-buffered per level. */
enum Level { WARP = 0, WARPGROUP = 1 };
struct Slot {
    uint64_t v[8];
};
Slot *coll_slots(Level level); /* this operation's slot array, indexed by thread */
void coll_wait(Level level, int opcode, const char *name);

/* ------------------------------------------------------ shared memory -- */
/* Shared-window addresses: bits 0..23 the offset in a CTA's window, bits
 * 24..27 zero for the executing CTA (shared::cta) or rank + 1
 * (shared::cluster address of CTA `rank`, from mapa). */
uint32_t smem_addr(const void *p);                  /* cvta.to.shared, checked */
uint8_t *smem_dynamic();                            /* the executing CTA's dynamic shared memory */
uint8_t *smem_host(uint32_t addr, size_t bytes, unsigned *cta_rank); /* checked, any CTA of the cluster */
uint32_t mapa(uint32_t addr, unsigned rank);        /* mapa.shared::cluster */
/* Fail when CTA `rank` of the cluster has exited (its shared memory is gone). */
void check_cta_alive(unsigned rank, const char *what);
/* Map a local host pointer into the same offset of CTA `rank`. */
uint8_t *smem_peer(const void *local, size_t bytes, unsigned rank);

/* -------------------------------------------------------- mbarriers -- */
/* bar: host pointer into any CTA's shared memory of the cluster. */
void mbar_init(uint64_t *bar, uint32_t count);
void mbar_arrive(uint64_t *bar, uint32_t count, const char *what);
void mbar_expect_tx(uint64_t *bar, uint32_t bytes);
void mbar_complete_tx(uint64_t *bar, uint32_t bytes);
bool mbar_test(uint64_t *bar, uint32_t parity); /* try_wait.parity, without blocking */
void mbar_wait(uint64_t *bar, uint32_t parity);
/* One try_wait.parity: blocks until the phase completes (a protocol bug is
 * a deadlock report, not a time-out); under skew sometimes returns 0 first. */
uint32_t mbar_try_wait(uint64_t *bar, uint32_t parity);
/* Scheduler steps so far (a monotonic clock for %globaltimer). */
unsigned long long steps();

/* --------------------------------------------------- asynchronous ops -- */
/* Run fn at a later scheduling point (never inside the issuing call).
 * may_outlive: it may still be pending when every thread has exited (the
 * global writes of TMA stores); otherwise that is an error. */
void post_async(std::function<void()> fn, bool may_outlive = false);
/* Pending asynchronous operations (for end-of-kernel checks). */
size_t async_pending();

/* ------------------------------------------------------ global memory -- */
void global_add(const void *p, size_t bytes, const char *name);
void global_clear();
/* p .. p+bytes inside one registered buffer, else fail(what). */
void global_check(const void *p, size_t bytes, const char *what);

/* ------------------------------------- programmatic dependent launch -- */
/* Global memory a kernel launched with programmatic dependent launch (PDL)
 * must not touch before its griddepcontrol.wait: p page-aligned, the range
 * rounded up to whole pages (the harness allocates it so). While a thread
 * that has not passed the wait runs, every guarded range is PROT_NONE (any
 * load or store of it faults and is reported as an access before
 * griddepcontrol.wait); otherwise, and outside launches, read-write.
 * Cleared by global_clear. */
void global_guard_add(const void *p, size_t bytes, const char *name);
/* griddepcontrol.wait: this thread may now access global memory. */
void griddep_wait();
/* fail(what ...) when the running thread of a PDL launch has not passed
 * griddepcontrol.wait (TMA issue: the copy itself runs later). */
void griddep_check(const char *what);
/* Threads (over all launches) that passed griddepcontrol.wait in a PDL launch. */
extern long long stat_griddep_waits;

/* --------------------------------------------------------- per thread -- */
/* One pointer of per-thread storage for the PTX emulation (emu_sm90.cpp). */
void *&thread_ext_slot();

/* -------------------------------------------------------------- launch -- */
/* Run body on every thread of grid x block, clusters of `cluster` CTAs run
 * together, `smem` bytes of dynamic shared memory per CTA (poisoned 0xFF).
 * pdl: launched with programmatic dependent launch (the global_guard_add
 * ranges are closed to threads that have not passed griddepcontrol.wait). */
void launch(U3 grid, U3 block, U3 cluster, size_t smem, const std::function<void()> &body,
            bool pdl = false);
/* Called when a thread leaves the kernel (wgmma bookkeeping checks). */
extern void (*on_thread_exit)();
extern long long stat_switches, stat_async;

} // namespace emu
