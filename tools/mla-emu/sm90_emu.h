/*
 * Host stand-ins for the sm_90a wrappers of jit/templates/dinf_sm90.cuh that
 * kernels/mla/mla_decode_fast.cu calls, written from the PTX ISA as each
 * wrapper's comment states it (our reading of the ISA: what this cannot
 * check is exactly that reading). Included instead of dinf_sm90.cuh by
 * gen_fast.py; CTA threads are the fibers of emu_rt.cpp.
 *
 *   mbarrier     phase / pending arrivals / transaction count per barrier
 *                (a side table keyed by address); try_wait.parity passes iff
 *                the current phase's parity differs; a spinning thread yields;
 *                an arrival on a completed count aborts (a protocol bug)
 *   TMA          the box is copied later (end of a scheduling pass, at random),
 *                out-of-range elements zero, the 128-byte swizzle applied on
 *                the shared address, its bytes completed on the barrier
 *   wgmma        executed at wgmma_wait after a scheduling pass (the latest
 *                point the hardware may read its operands, other threads and
 *                copies having run meanwhile): each thread computes its own accumulator
 *                fragment from shared memory through the descriptor's canonical
 *                layout, products summed in double, one rounding to float
 *   bulk L2 prefetch  no data effect; checked: 16-byte aligned address,
 *                a nonzero multiple of 16 bytes, inside the k_cache allocation
 *                and inside the cache's extent (as lib/mla/mla.c computes it),
 *                and every prefetched 16-byte chunk read (__ldg) later by the
 *                same CTA (launchers_fast.inc): never a byte the decode does
 *                not read
 *   bar.sync     a named barrier of bar_count fibers (emu_rt.cpp)
 *   others       setmaxnreg, fences, griddepcontrol: no effect here;
 *                %globaltimer: a counter (waits never time out: the
 *                scheduler reports a deadlock instead); trap: abort
 */
#pragma once
#include "cuda_emu.h"

#include <map>
#include <vector>

#include "core/numeric_hd.h"

extern char *emu_fast_smem_lo, *emu_fast_smem_hi; /* this CTA's shared memory (1024-aligned) */
/* What the emulated launcher (launchers_fast.inc) knows of each cache the
 * decode reads (k_cache, and a sparse decode's extra cache): the mock
 * allocation holding it, and its extent (the bytes the decode may read:
 * (num_blocks - 1) * kv_block_stride + (page - 1) * kv_token_stride +
 * h_kv * 656 for an FP8 cache); the prefetches checked against them. */
struct emu_cache_region {
    const char *alloc_lo, *alloc_hi, *lo, *hi;
};
extern emu_cache_region emu_caches[2];
extern int emu_num_caches;
extern long long emu_prefetch_count, emu_prefetch_bytes;

namespace dinf_jit {

typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;

struct alignas(64) tensor_map_t {
    uint64_t opaque[16];
};

/* Our encoding of a tensor map in tensor_map_t (the emulated launcher writes it). */
struct emu_tmap {
    const char *base;
    uint64_t dims[4], strides[4]; /* strides[0] = element bytes; then bytes of dims 1..3 */
    uint32_t box[4];
    uint32_t swizzle128;
};
static_assert(sizeof(emu_tmap) <= sizeof(tensor_map_t), "emu_tmap fits");

static inline void emu_check_smem(const void *p, size_t bytes, const char *what) {
    if ((const char *)p < emu_fast_smem_lo || (const char *)p + bytes > emu_fast_smem_hi) {
        fprintf(stderr, "EMU: %s outside shared memory (%p)\n", what, p);
        abort();
    }
}

static inline uint32_t smem_u32(const void *p) {
    emu_check_smem(p, 0, "shared address");
    return (uint32_t)((const char *)p - emu_fast_smem_lo);
}
static inline char *smem_ptr(uint32_t a) { return emu_fast_smem_lo + a; }

/* ---------------------------------------------------------- mbarrier -- */

struct emu_mbar {
    long long phase = 0, tx = 0;
    int count = 0, pending = 0;
    bool init = false;
};
static std::map<const void *, emu_mbar> &mbars() {
    static std::map<const void *, emu_mbar> m;
    return m;
}
static inline emu_mbar &mbar_of(const void *bar) {
    emu_check_smem(bar, 8, "mbarrier");
    if ((uintptr_t)bar % 8) {
        fprintf(stderr, "EMU: mbarrier %p not 8-byte aligned\n", bar);
        abort();
    }
    emu_mbar &b = mbars()[bar];
    if (!b.init) {
        fprintf(stderr, "EMU: mbarrier %p used before mbarrier.init\n", bar);
        abort();
    }
    return b;
}
static inline void mbar_settle(emu_mbar &b) {
    emu::progress_since_last_pass = true;
    if (b.pending == 0 && b.tx == 0) {
        b.phase++;
        b.pending = b.count;
    }
}
static inline void mbar_init(uint64_t *bar, uint32_t count) {
    emu_check_smem(bar, 8, "mbarrier");
    emu_mbar &b = mbars()[bar];
    b = emu_mbar();
    b.init = true;
    b.count = b.pending = (int)count;
}
static inline void mbar_init_fence() {}
static inline void mbar_arrive(uint64_t *bar) {
    emu_mbar &b = mbar_of(bar);
    if (b.pending <= 0) {
        fprintf(stderr, "EMU: arrival on mbarrier %p beyond its count %d (thread %u)\n", (void *)bar, b.count,
                threadIdx.x);
        abort();
    }
    b.pending--;
    mbar_settle(b);
}
static inline void mbar_arrive_expect_tx(uint64_t *bar, uint32_t tx_bytes) {
    emu_mbar &b = mbar_of(bar);
    b.tx += tx_bytes;
    mbar_arrive(bar);
}
static inline void emu_complete_tx(uint64_t *bar, uint32_t bytes) {
    emu_mbar &b = mbar_of(bar);
    b.tx -= bytes;
    mbar_settle(b);
}
static inline uint32_t mbar_try_wait(uint64_t *bar, uint32_t parity) {
    emu_mbar &b = mbar_of(bar);
    if ((uint32_t)(b.phase & 1) != parity)
        return 1;
    emu::block(emu::YIELD);
    return 0;
}
static inline void mbar_wait(uint64_t *bar, uint32_t parity) {
    while (!mbar_try_wait(bar, parity)) {
    }
}
static inline uint64_t globaltimer_ns() {
    static uint64_t t = 0;
    return ++t;
}
static inline void trap() { __trap(); }

/* --------------------------------------------------------------- TMA -- */

static inline uint32_t swizzle128(uint32_t a) { return a ^ (((a >> 7) & 7u) << 4); }

static inline void tma_prefetch_descriptor(const tensor_map_t *) {}

static inline void tma_copy_now(void *dst, const emu_tmap *m, uint64_t *bar, int c0, int c1, int c2, int c3) {
    const uint32_t d0 = smem_u32(dst);
    if (d0 % (m->swizzle128 ? 1024 : 128)) {
        fprintf(stderr, "EMU: TMA destination %u misaligned\n", d0);
        abort();
    }
    const int c[4] = {c0, c1, c2, c3};
    const uint32_t eb = (uint32_t)m->strides[0];
    if (m->swizzle128 && m->box[0] * eb != 128) {
        fprintf(stderr, "EMU: 128-byte swizzle needs a 128-byte inner box\n");
        abort();
    }
    uint32_t lin = 0;
    for (uint32_t i3 = 0; i3 < m->box[3]; i3++)
        for (uint32_t i2 = 0; i2 < m->box[2]; i2++)
            for (uint32_t i1 = 0; i1 < m->box[1]; i1++)
                for (uint32_t i0 = 0; i0 < m->box[0]; i0++, lin += eb) {
                    const long long g[4] = {(long long)c[0] + i0, (long long)c[1] + i1, (long long)c[2] + i2,
                                            (long long)c[3] + i3};
                    bool in = true;
                    for (int k = 0; k < 4; k++)
                        in = in && g[k] >= 0 && g[k] < (long long)m->dims[k];
                    const uint32_t a = m->swizzle128 ? swizzle128(d0 + lin) : d0 + lin;
                    char *to = smem_ptr(a);
                    emu_check_smem(to, eb, "TMA write");
                    if (!in) {
                        memset(to, 0, eb);
                        continue;
                    }
                    const char *from = m->base + g[0] * eb + g[1] * (long long)m->strides[1] +
                                       g[2] * (long long)m->strides[2] + g[3] * (long long)m->strides[3];
                    memcpy(to, from, eb);
                }
    emu_complete_tx(bar, lin);
}

/* Issued copies complete later: at the end of a scheduling pass, each with
 * probability 1/2 (so consumers run between issue and completion). */
struct emu_tma_op {
    void *dst;
    emu_tmap map;
    uint64_t *bar;
    int c[4];
};
static std::vector<emu_tma_op> &tma_pending() {
    static std::vector<emu_tma_op> v;
    return v;
}
static inline bool tma_deliver() {
    static unsigned long long rng = 0x9E3779B97F4A7C15ull;
    bool any = false;
    std::vector<emu_tma_op> &v = tma_pending();
    for (size_t i = 0; i < v.size();) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        if (rng & 1) {
            const emu_tma_op op = v[i];
            v.erase(v.begin() + (long)i);
            tma_copy_now(op.dst, &op.map, op.bar, op.c[0], op.c[1], op.c[2], op.c[3]);
            any = true;
        } else {
            i++;
        }
    }
    return any || !v.empty(); /* pending copies are progress still to come */
}
static inline void tma_load_4d(void *dst, const tensor_map_t *map, uint64_t *bar, int c0, int c1, int c2,
                               int c3) {
    emu::end_of_pass_hook = tma_deliver;
    mbar_of(bar); /* initialised */
    tma_pending().push_back({dst, *reinterpret_cast<const emu_tmap *>(map), bar, {c0, c1, c2, c3}});
}

/* ------------------------------------------------- bulk L2 prefetch -- */

/* this CTA's prefetched ranges, checked against its reads at its end */
struct emu_prefetch {
    const char *lo;
    uint32_t bytes;
};
static std::vector<emu_prefetch> &cta_prefetches() {
    static std::vector<emu_prefetch> v;
    return v;
}
/* cp.async.bulk.prefetch.L2.global [src], bytes: a hint without effect here;
 * the operands are checked as the PTX ISA states them (16-byte aligned
 * source, size a multiple of 16), and the range against the cache. */
static inline void bulk_prefetch_l2(const void *src, uint32_t bytes) {
    const char *lo = (const char *)src;
    if ((uintptr_t)lo % 16 || bytes % 16 || bytes == 0) {
        fprintf(stderr, "EMU: bulk prefetch [%p, +%u): address not 16-byte aligned or size not a nonzero "
                        "multiple of 16 (block %u,%u thread %u)\n",
                src, bytes, emu::blockIdx_.x, emu::blockIdx_.y, threadIdx.x);
        abort();
    }
    /* inside the extent of a cache (chosen by extent: both caches may be
     * slices of one allocation); the extents lie inside their allocations */
    const emu_cache_region *c = nullptr;
    for (int i = 0; i < emu_num_caches && !c; i++)
        if (lo >= emu_caches[i].lo && lo < emu_caches[i].hi)
            c = &emu_caches[i];
    if (!c || bytes > (size_t)(c->hi - lo)) {
        fprintf(stderr, "EMU: bulk prefetch [%p, +%u) outside the cache's extent%s (block %u,%u thread %u)\n",
                src, bytes, c ? "" : "s", emu::blockIdx_.x, emu::blockIdx_.y, threadIdx.x);
        abort();
    }
    cta_prefetches().push_back({lo, bytes});
    emu_prefetch_count++;
    emu_prefetch_bytes += bytes;
}

/* ------------------------------------------------------------ others -- */

static inline void fence_proxy_async_shared() {}
static inline void named_barrier_sync(uint32_t id, uint32_t count) {
    emu::fibers[emu::cur].bar_id = id;
    emu::fibers[emu::cur].bar_count = count;
    emu::block(emu::NAMED_BAR);
}
/* bar.arrive: counts toward the barrier's arrivals without waiting
 * (emu_rt.cpp releases the bar.sync waiters once arrivals + waiters reach
 * the count; more than the count aborts, as does a count that arrivals alone
 * reach: our kernels always have waiters, so that is a protocol bug). */
static inline void named_barrier_arrive(uint32_t id, uint32_t count) {
    emu::named_arrive(id, count);
}
template <int N> static inline void setmaxnreg_inc() {}
template <int N> static inline void setmaxnreg_dec() {}
static inline void griddep_wait() {}
static inline void griddep_launch_dependents() {}
static inline void fence_operand(float &) {}

static inline void e4m3x2_to_f32x2(uint16_t codes, float &lo, float &hi) {
    lo = dinf__f32_from_e4m3((uint8_t)(codes & 0xffu));
    hi = dinf__f32_from_e4m3((uint8_t)(codes >> 8));
}
static inline uint32_t pack_bf16x2(float lo, float hi) {
    return (uint32_t)dinf__bf16_from_f32(lo) | ((uint32_t)dinf__bf16_from_f32(hi) << 16);
}

/* ------------------------------------------------------------- wgmma -- */

struct emu_wgmma {
    uint64_t desc_a, desc_b;
    float *d;
    int n, trans_b, scale_d;
};
static std::vector<emu_wgmma> &pending_wgmma() {
    static std::vector<emu_wgmma> v[1024];
    return v[threadIdx.x];
}

/* Element (mn, k) of a k16 slice through a descriptor (PTX ISA "Matrix
 * Descriptor Format", canonical 128-byte-swizzled layouts): K-major, row mn
 * at (mn / 8) SBO + (mn % 8) 128 with k contiguous; MN-major, 64 mn
 * contiguous, the next 64 at LBO, rows of k at 128, the next 8 at SBO. */
static inline float desc_elem(uint64_t desc, int mn_major, uint32_t mn, uint32_t k) {
    const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4, lbo = (uint32_t)((desc >> 16) & 0x3FFF) << 4,
                   sbo = (uint32_t)((desc >> 32) & 0x3FFF) << 4, layout = (uint32_t)(desc >> 62),
                   base_off = (uint32_t)((desc >> 49) & 7);
    if (layout != 1 || base_off != 0) {
        fprintf(stderr, "EMU: descriptor %llx: only the 128-byte swizzle with base offset 0 is emulated\n",
                (unsigned long long)desc);
        abort();
    }
    const uint32_t a = mn_major ? start + (mn / 64) * lbo + (k / 8) * sbo + (k % 8) * 128 + (mn % 64) * 2
                                : start + (mn / 8) * sbo + (mn % 8) * 128 + k * 2;
    const char *p = smem_ptr(swizzle128(a));
    emu_check_smem(p, 2, "wgmma operand");
    uint16_t bits;
    memcpy(&bits, p, 2);
    return dinf__f32_from_bf16(bits);
}

static inline void wgmma_fence() {}
static inline void wgmma_commit() {}
template <int N> static inline void wgmma_wait() {
    static_assert(N == 0, "the emulation waits for all groups");
    const unsigned t = threadIdx.x % 128;
    if (!pending_wgmma().empty())
        emu::block(emu::YIELD); /* other threads (and copies) run before the operands are read */
    for (const emu_wgmma &op : pending_wgmma()) {
        for (int v = 0; v < op.n / 2; v++) {
            /* PTX ISA wgmma D fragment (m64nNk16, f32): */
            const uint32_t row = 16 * (t / 32) + (t % 32) / 4 + 8 * ((v / 2) % 2);
            const uint32_t col = 8 * (v / 4) + 2 * (t % 4) + v % 2;
            double acc = 0;
            for (uint32_t k = 0; k < 16; k++)
                acc += (double)desc_elem(op.desc_a, 0, row, k) * (double)desc_elem(op.desc_b, op.trans_b, col, k);
            op.d[v] = (float)((op.scale_d ? (double)op.d[v] : 0.0) + acc);
        }
    }
    pending_wgmma().clear();
}
static inline void wgmma_bf16_m64n32k16_kk(uint64_t desc_a, uint64_t desc_b, float (&d)[16], int scale_d) {
    pending_wgmma().push_back({desc_a, desc_b, d, 32, 0, scale_d});
}
static inline void wgmma_bf16_m64n64k16_kk(uint64_t desc_a, uint64_t desc_b, float (&d)[32], int scale_d) {
    pending_wgmma().push_back({desc_a, desc_b, d, 64, 0, scale_d});
}
static inline void wgmma_bf16_m64n256k16_kt(uint64_t desc_a, uint64_t desc_b, float (&d)[128], int scale_d) {
    pending_wgmma().push_back({desc_a, desc_b, d, 256, 1, scale_d});
}

/* the MLA block of dinf_sm90.cuh (dinf_jit::mla) */
namespace mla {
using dinf_jit::fence_proxy_async_shared;
using dinf_jit::named_barrier_sync;
using dinf_jit::griddep_wait;
using dinf_jit::griddep_launch_dependents;
using dinf_jit::tma_load_4d;
using dinf_jit::e4m3x2_to_f32x2;
using dinf_jit::pack_bf16x2;
using dinf_jit::mbar_try_wait;
using dinf_jit::globaltimer_ns;
using dinf_jit::trap;
using dinf_jit::wgmma_bf16_m64n32k16_kk;
using dinf_jit::wgmma_bf16_m64n256k16_kt;
using dinf_jit::wgmma_bf16_m64n64k16_kk;
using dinf_jit::named_barrier_arrive;
using dinf_jit::bulk_prefetch_l2;
template <int N> static inline void setmaxnreg_inc() {}
template <int N> static inline void setmaxnreg_dec() {}
template <int N> static inline void wgmma_wait() { dinf_jit::wgmma_wait<N>(); }
} // namespace mla

} // namespace dinf_jit
