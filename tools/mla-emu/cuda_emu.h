// Minimal host emulation of the CUDA features kernels/mla/mla_decode.cu and
// kernels/mla/mla_decode_fast.cu use (the latter's sm_90a PTX: sm90_emu.h).
// Threads of one CTA are ucontext fibers run cooperatively in one OS thread;
// warp-collective operations and barriers block until every participant arrived.
#pragma once
#include <ucontext.h>
#include <setjmp.h>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <vector>
#include <functional>

struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
static inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
static inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
static inline float2 make_float2(float a, float b) { return {a, b}; }
struct dim3v { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n)
#define __grid_constant__

namespace emu {
/* called with the address and size of every __ldg when set (the fast rungs'
 * launcher records the FP8 cache bytes each CTA reads: launchers_fast.inc) */
extern void (*ldg_hook)(const void *p, size_t bytes);
}
template <class T> static inline T __ldg(const T *p) {
    if (emu::ldg_hook)
        emu::ldg_hook(p, sizeof(T));
    return *p;
}
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }

namespace emu {
/* YIELD: a spin-wait (mbarrier try_wait) gave way, runnable again next pass;
 * NAMED_BAR: at bar.sync bar_id with bar_count participants */
enum Wait { RUN = 0, CTA_BAR = 1, WARP_OP = 2, DONE = 3, YIELD = 4, NAMED_BAR = 5 };
struct Fiber {
    ucontext_t ctx;
    jmp_buf jb;
    bool started = false;
    std::vector<char> stack;
    int wait = RUN;
    unsigned tid;
    unsigned bar_id = 0, bar_count = 0;
};
extern int cur;            // fiber index
extern std::vector<Fiber> fibers;
extern ucontext_t sched_ctx;
extern dim3v blockIdx_, gridDim_;
extern unsigned nthreads;
extern long long barrier_count;
// per-warp exchange area
struct WarpSlot { uint64_t v[8]; const void *addr; };
extern WarpSlot slots_buf[2][1024];
extern unsigned op_count[1024];
extern int or_accum;
extern bool progress_since_last_pass; /* a fiber did something but spin */
/* called by the scheduler after every pass over the fibers (asynchronous
 * copies complete there); returns whether it completed anything */
extern bool (*end_of_pass_hook)();
void block(int what);
void named_arrive(unsigned id, unsigned count); /* bar.arrive (emu_rt.cpp) */
}
static inline void __trap() {
    fprintf(stderr, "EMU: trap in block (%u,%u) thread %u\n", emu::blockIdx_.x, emu::blockIdx_.y,
            emu::fibers[emu::cur].tid);
    abort();
}
struct ThreadIdx { unsigned x, y, z; };
#define threadIdx (ThreadIdx{emu::fibers[emu::cur].tid, 0, 0})
#define blockIdx emu::blockIdx_
#define gridDim emu::gridDim_

static inline void __syncthreads() { emu::block(emu::CTA_BAR); }
static inline int __syncthreads_or(int p) {
    if (p) emu::or_accum = 1;
    emu::block(emu::CTA_BAR);
    int r = emu::or_accum;
    emu::block(emu::CTA_BAR);  // everyone has read it
    if (threadIdx.x == 0) emu::or_accum = 0;
    emu::block(emu::CTA_BAR);
    return r;
}
// warp exchange: publish, wait for the warp, read, wait again
static inline void warp_sync() { emu::block(emu::WARP_OP); }
/* double-buffered warp exchange: one warp barrier per collective op */
static inline emu::WarpSlot *warp_slots() { return emu::slots_buf[emu::op_count[threadIdx.x]++ & 1]; }
/* __ballot_sync with the full mask: bit l = lane l's predicate (every lane takes part) */
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    if (mask != 0xffffffffu) { fprintf(stderr, "EMU: __ballot_sync with a partial mask\n"); abort(); }
    unsigned t = threadIdx.x;
    emu::WarpSlot *sl = warp_slots();
    sl[t].v[0] = pred != 0;
    warp_sync();
    unsigned r = 0;
    for (unsigned l = 0; l < 32; l++)
        r |= (unsigned)sl[(t & ~31u) | l].v[0] << l;
    return r;
}
static inline float __shfl_xor_sync(unsigned, float v, int off) {
    unsigned t = threadIdx.x;
    uint32_t b; memcpy(&b, &v, 4);
    emu::WarpSlot *sl = warp_slots();
    sl[t].v[0] = b;
    warp_sync();
    uint32_t o = (uint32_t)sl[(t & ~31u) | ((t & 31u) ^ (unsigned)off)].v[0];
    float r; memcpy(&r, &o, 4);
    return r;
}
