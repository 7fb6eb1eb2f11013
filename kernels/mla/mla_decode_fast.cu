/*
 * MLA decode on Hopper (sm_90a), the fast rung (issue 8): the same split-KV
 * plan, numerics and guards as the simple rung (mla_decode.cu), with TMA page
 * loads into a 2-stage shared-memory ring completed on mbarriers, wgmma for
 * Q K^T and P V, a producer warpgroup and two consumer warpgroups, and the
 * combine chained by programmatic dependent launch. Design, layouts and every
 * piece of index math: lib/mla/mla_fast_hd.h (CPU-tested). PTX wrappers:
 * jit/templates/dinf_sm90.cuh (the MLA block at its end).
 *
 * FP8 cache: the producer dequantizes pages it loads with 16-byte loads, and
 * prefetches the pages of the next blocks of its ring order into L2 first
 * (cp.async.bulk.prefetch, DINF_MLA_FP8_PREFETCH blocks ahead; lib/mla/
 * mla_fast_hd.h "FP8 L2 prefetch"). The BF16 cache's TMA path has none.
 *
 * Three kernels share the CTA (fast_cta: carve, barriers, producer): the fast
 * rung (mla_decode_fast_kernel: consume, the two WGs split each block's keys),
 * the seesaw rung (mla_decode_seesaw_kernel: consume_seesaw, two blocks per
 * step, FlashMLA's schedule; lib/mla/mla_fast_hd.h "seesaw",
 * kernels/mla/NOTES.md), and the fast rung on a sparse decode
 * (mla_decode_fast_sparse_kernel, FP8 cache: load_fp8_sparse gathers the
 * listed entries, the consumers mask skipped slots). The launcher takes one
 * (DINF_MLA_KERNEL, the params' sparse_s_q).
 *
 * Constraints (checked by lib/mla/mla.c before launching,
 * dinf__mla_fast_unsupported): a dense decode takes 64-token pages, BF16
 * cache strides below 2^40 bytes and num_blocks below 2^31 (the tensor map);
 * a sparse decode the FP8 cache (any page size); the alignments every GPU
 * decode already has (16-byte base and strides).
 *
 * Guards (as the simple rung): a request whose length is negative or beyond
 * its block table (sparse: outside [0, topk]), or whose split row is outside
 * the workspace, reads no block and gets NaN (or, for a bad split row, writes
 * nothing); a block table entry outside [0, num_blocks) makes the request NaN
 * and its TMA box is read from page 0 instead (never out of bounds), a sparse
 * slot past the cache makes it NaN and is not read; keys at or past a row's
 * limit are masked by selection (stale NaN rows of the last page never reach
 * the max or the sums) and V rows past the request's length are zeroed in
 * shared memory before P V (0 * NaN would be NaN).
 */
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <string.h>

#include "../../lib/core/internal.h"
#include "../../lib/core/cuda_guard.h"
#include "../../lib/mla/mla_cuda.h"
#include "../../lib/mla/mla_fast_hd.h"
#include "../../jit/templates/dinf_sm90.cuh"

/* Device code exists for sm_90a (and the host pass); the portable compute_90
 * PTX pass compiles the kernel to a trap (see the kernel). */
#if !defined(__CUDA_ARCH__) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DINF_MLA_FAST_DEVICE_CODE 1
#else
#define DINF_MLA_FAST_DEVICE_CODE 0
#endif

namespace {

namespace jit = dinf_jit;      /* the shared sm_90a wrappers */
namespace ptx = dinf_jit::mla; /* the wrappers added for this kernel */
typedef unsigned long long mbar_t;

constexpr int kDqk = DINF_MLA_HEAD_DIM_QK;

#if DINF_MLA_FAST_DEVICE_CODE
constexpr int kBM = DINF_MLA_BLOCK_M;
constexpr int kBN = DINF_MLA_BLOCK_N;
constexpr int kDv = DINF_MLA_HEAD_DIM_V;
constexpr int kChunks = kDqk / 8; /* 16-byte chunks of a bf16 row */
constexpr int kWgThreads = 128;

/*
 * Wait for the phase of parity `parity` of bar, at most DINF_MLA_FAST_WAIT_NS
 * of wall time: a protocol bug (or a hardware fault) must fail the launch
 * in seconds, not hang the stream (tools/gpu-check's budgets).
 */
__device__ __forceinline__ void mbar_wait_bounded(mbar_t *bar, uint32_t parity) {
    if (ptx::mbar_try_wait(bar, parity))
        return;
    const uint64_t start = ptx::globaltimer_ns();
    for (uint32_t spins = 1;; spins++) {
        if (ptx::mbar_try_wait(bar, parity))
            return;
        if (spins % 256 == 0 && ptx::globaltimer_ns() - start > DINF_MLA_FAST_WAIT_NS)
            ptx::trap();
    }
}

/* The CTA's view of its shared memory (1024-aligned base) and its place in the grid. */
struct cta_ctx {
    uint8_t *smem;
    uint32_t smem_addr; /* shared-window address of smem */
    dinf__mla_fast_smem lay;
    int m_block, hk, row0;
    const int32_t *meta;
    int32_t first, last; /* request range of the part (empty: first > last) */

    __device__ __forceinline__ uint8_t *k_tile(int s) const {
        return smem + (s ? lay.k1 : lay.k0);
    }
    __device__ __forceinline__ uint32_t k_addr(int s) const {
        return smem_addr + (s ? lay.k1 : lay.k0);
    }
    __device__ __forceinline__ mbar_t *bar(uint32_t off) const {
        return reinterpret_cast<mbar_t *>(smem + off);
    }
    __device__ __forceinline__ mbar_t *full(int s) const { return bar(s ? lay.full1 : lay.full0); }
    __device__ __forceinline__ mbar_t *empty(int s) const {
        return bar(s ? lay.empty1 : lay.empty0);
    }
    __device__ __forceinline__ volatile int32_t *bad_flag(int s) const {
        return reinterpret_cast<volatile int32_t *>(smem + lay.bad) + s;
    }
};

/* ------------------------------------------------------------ producer -- */

/* The Q tile of request req (rows [row0, row0 + 64) of KV head hk; rows past
 * q_rows zero) into the swizzled layout, by the 128 producer threads. The
 * MODEL1 cache's q rows are 512 wide: the tile's last 64 columns zero. */
template <bool kModel1 = false>
__device__ __forceinline__ void load_q(const dinf__mla_params &p, const cta_ctx &c, int32_t req,
                                       int t) {
    constexpr int kQDim = kModel1 ? DINF_MLA_MODEL1_HEAD_DIM : kDqk;
    for (int i = t; i < kBM * kChunks; i += kWgThreads) {
        const int r = i / kChunks, ch = i % kChunks;
        const int qr = c.row0 + r;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (qr < p.q_rows && 8 * ch < kQDim) {
            const int tq = qr / p.heads_per_kv;
            const int h = c.hk * p.heads_per_kv + qr % p.heads_per_kv;
            v = __ldg(reinterpret_cast<const uint4 *>(
                          p.q + ((int64_t(req) * p.s_q + tq) * p.h_q + h) * kQDim) +
                      ch);
        }
        *reinterpret_cast<uint4 *>(c.smem + c.lay.q + dinf__mla_fast_sw128(r, 8 * ch)) = v;
    }
}

/* One 16-byte item of an FP8 entry (656 bytes at `entry`): chunk ch < 32
 * is codes [16 ch, 16 ch + 16) and the scale of their 128 channels; chunk
 * 32..39 is RoPE values [8 (ch - 32), + 8). */
__device__ __forceinline__ void fp8_chunk_load(const uint8_t *entry, int ch, uint4 &raw,
                                               float &scale) {
    if (ch < kDv / 16) {
        raw = __ldg(reinterpret_cast<const uint4 *>(entry) + ch);
        scale = __ldg(reinterpret_cast<const float *>(entry + DINF_MLA_FP8_SCALE_OFFSET) + ch / 8);
    } else {
        raw = __ldg(reinterpret_cast<const uint4 *>(entry + DINF_MLA_FP8_ROPE_OFFSET) +
                    (ch - kDv / 16));
    }
}

/* 16 e4m3 codes (raw) times scale, rounded to bf16, into row r of the
 * swizzled bf16 tile at columns [col, col + 16). */
__device__ __forceinline__ void fp8_codes_store(uint8_t *tile, int r, int col, const uint4 &raw,
                                                float scale) {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
    uint32_t packed[8];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        float lo, hi;
        ptx::e4m3x2_to_f32x2(uint16_t(w[k / 2] >> (16 * (k % 2))), lo, hi);
        packed[k] = ptx::pack_bf16x2(lo * scale, hi * scale);
    }
    *reinterpret_cast<uint4 *>(tile + dinf__mla_fast_sw128(r, col)) =
        make_uint4(packed[0], packed[1], packed[2], packed[3]);
    *reinterpret_cast<uint4 *>(tile + dinf__mla_fast_sw128(r, col + 8)) =
        make_uint4(packed[4], packed[5], packed[6], packed[7]);
}

/* That item into row r of the swizzled bf16 tile: codes as e4m3 * scale
 * rounded to bf16 (channels [16 ch, 16 ch + 16)), RoPE as stored. */
__device__ __forceinline__ void fp8_chunk_store(uint8_t *tile, int r, int ch, const uint4 &raw,
                                                float scale) {
    if (ch < kDv / 16) {
        fp8_codes_store(tile, r, 16 * ch, raw, scale);
    } else {
        *reinterpret_cast<uint4 *>(tile + dinf__mla_fast_sw128(r, kDv + 8 * (ch - kDv / 16))) = raw;
    }
}

/* MODEL1 cache: item ch of a row (dinf__mla_fp8_item: codes, RoPE, zeros)
 * whose 576 data bytes are at `data` and 8 scale bytes at `scales`: its
 * 16 bytes (none for the zero items) and, for codes, the scale of their 64
 * channels. */
__device__ __forceinline__ void model1_chunk_load(const uint8_t *data, const uint8_t *scales,
                                                  int ch, uint4 &raw, float &scale) {
    int col;
    const int kind = dinf__mla_fp8_item(1, ch, &col);
    if (kind == 0) {
        raw = __ldg(reinterpret_cast<const uint4 *>(data) + ch);
        scale = dinf__mla_e8m0_scale(__ldg(scales + ch / 4));
    } else if (kind == 1) {
        raw = __ldg(reinterpret_cast<const uint4 *>(data + DINF_MLA_MODEL1_NOPE) +
                    (ch - DINF_MLA_MODEL1_NOPE / 16));
    }
}

/* That item into row r of the swizzled bf16 tile: codes dequantized as
 * fp8_chunk_store's, RoPE as stored; the zero items store nothing (the
 * MODEL1 kernel's QK^T stops at column 512 and PV reads columns < 512, so
 * the tile's last 64 columns are never read). */
__device__ __forceinline__ void model1_chunk_store(uint8_t *tile, int r, int ch, const uint4 &raw,
                                                   float scale) {
    int col;
    const int kind = dinf__mla_fp8_item(1, ch, &col);
    if (kind == 2)
        return;
    if (kind == 1)
        *reinterpret_cast<uint4 *>(tile + dinf__mla_fast_sw128(r, col)) = raw;
    else
        fp8_codes_store(tile, r, col, raw, scale);
}

/* One 64-token FP8 page dequantized into stage s (rows >= n and a bad page:
 * zeros). Thread t takes items t + 128 j (item i: row i / 40, 16-byte chunk
 * i % 40: 32 chunks of 16 codes, then 8 RoPE chunks) in batches whose loads
 * are all issued before the first conversion (memory-level parallelism). */
template <int kBatch>
__device__ __forceinline__ void load_fp8_page(const dinf__mla_params &p, const cta_ctx &c, int s,
                                              int32_t page, int32_t n, int bad, int t) {
    constexpr int kPerRow = DINF_MLA_FAST_FP8_CHUNKS;
    constexpr int kItems = kBN * kPerRow / kWgThreads;
    static_assert(kBN * kPerRow % kWgThreads == 0 && kItems % kBatch == 0, "FP8 page items");
    uint8_t *tile = c.k_tile(s);
    const uint8_t *base = static_cast<const uint8_t *>(p.k_cache) +
                          int64_t(page) * p.kv_block_stride +
                          int64_t(c.hk) * DINF_MLA_FP8_ENTRY_BYTES;
#pragma unroll 1
    for (int b0 = 0; b0 < kItems; b0 += kBatch) {
        uint4 raw[kBatch];
        float scale[kBatch];
#pragma unroll
        for (int j = 0; j < kBatch; j++) {
            const int i = t + kWgThreads * (b0 + j);
            const int r = i / kPerRow, ch = i % kPerRow;
            const uint8_t *entry = base + int64_t(r) * p.kv_token_stride;
            raw[j] = make_uint4(0, 0, 0, 0);
            scale[j] = 0.0f;
            if (!bad && r < n) {
                fp8_chunk_load(entry, ch, raw[j], scale[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < kBatch; j++) {
            const int i = t + kWgThreads * (b0 + j);
            fp8_chunk_store(tile, i / kPerRow, i % kPerRow, raw[j], scale[j]);
        }
    }
}

/* L2 prefetch of the FP8 page of the block `ahead` blocks after block blk
 * of request req (piece pc) in this CTA's ring order, by one thread
 * (lib/mla/mla_fast_hd.h, "FP8 L2 prefetch"): the rows the block has, of
 * this CTA's KV head, if its page is in [0, num_blocks) (a bad page is not
 * read: its stage reads page 0 and is flagged bad).
 * The params are read through an opaque copy of their address: otherwise
 * ptxas hoists the walk's loop invariants (pointers and products of the
 * params) out of the producer's loop into registers held by all 128
 * producer threads, and the seesaw rung's 56-register producer spills (in
 * load_q); the parameter space is read by generic loads instead, a few
 * per fill, cached. */
__device__ __forceinline__ void prefetch_fp8_block(const dinf__mla_params &params,
                                                   const cta_ctx &c, int32_t req,
                                                   const dinf__mla_piece &pc, int32_t blk,
                                                   int32_t ahead) {
    const dinf__mla_params *p = &params; /* __grid_constant__: addressable */
    asm volatile("" : "+l"(p));
    int32_t r, b, keys;
    if (!dinf__mla_fast_block_ahead_in(p, 0, c.meta, c.first, c.last, req, blk, pc.blk_end, pc.s_k,
                                    ahead, &r, &b, &keys))
        return;
    const int32_t page = __ldg(p->block_table + int64_t(r) * p->max_blocks + b);
    if (page < 0 || page >= p->num_blocks)
        return;
    const dinf__mla_fp8_prefetch f = dinf__mla_fp8_prefetch_ranges(p, page, keys, c.hk);
    const uint8_t *src = static_cast<const uint8_t *>(p->k_cache) + f.first;
    for (int32_t i = 0; i < f.count; i++, src += f.step)
        ptx::bulk_prefetch_l2(src, f.bytes);
}

/* Sparse (FP8 cache): block blk's listed entries of request req into stage
 * s, as load_fp8_page does a page: the block's keys all come from one list
 * and cache, main or extra (dinf__mla_sparse_block), row r from slot
 * slots[r] for r < valid; rows past valid and skipped slots (< 0) are zeros
 * with mask[s][r] = 1 (their scores are masked, their V rows add nothing);
 * a slot past its cache reads nothing and sets the stage's bad flag (the
 * request gets NaN; the consumers clear the flag once both warpgroups have
 * read it, before they release the stage). kModel1: the MODEL1 cache's
 * rows (model1_chunk_load / _store; one KV head). */
template <int kBatch, bool kModel1>
__device__ __forceinline__ void load_fp8_sparse(const dinf__mla_params &p, const cta_ctx &c, int s,
                                                int32_t req, int32_t blk, int t) {
    constexpr int kPerRow = DINF_MLA_FAST_FP8_CHUNKS;
    constexpr int kItems = kBN * kPerRow / kWgThreads;
    static_assert(kBN * kPerRow % kWgThreads == 0 && kItems % kBatch == 0, "FP8 page items");
    int32_t valid;
    int extra;
    const int32_t *slots = dinf__mla_sparse_block(&p, req, blk, &valid, &extra);
    uint8_t *tile = c.k_tile(s);
    uint8_t *mask = c.smem + c.lay.mask + s * kBN;
    const uint8_t *cache = static_cast<const uint8_t *>(dinf__mla_cache(&p, extra)) +
                           int64_t(c.hk) * DINF_MLA_FP8_ENTRY_BYTES; /* MODEL1: hk = 0 */
    const int32_t page_size = extra ? p.extra_page : p.page;
    int bad = 0;
#pragma unroll 1
    for (int b0 = 0; b0 < kItems; b0 += kBatch) {
        uint4 raw[kBatch];
        float scale[kBatch];
#pragma unroll
        for (int j = 0; j < kBatch; j++) {
            const int i = t + kWgThreads * (b0 + j);
            const int r = i / kPerRow, ch = i % kPerRow;
            raw[j] = make_uint4(0, 0, 0, 0);
            scale[j] = 0.0f;
            int64_t off = 0;
            int32_t row = 0;
            const int loc =
                r < valid ? dinf__mla_slot_loc(&p, extra, __ldg(slots + r), &off, &row) : 1;
            bad |= loc < 0;
            if (ch == 0)
                mask[r] = uint8_t(loc != 0);
            if (loc == 0 && kModel1)
                model1_chunk_load(cache + off, cache + dinf__mla_model1_scale_off(off, row, page_size),
                                  ch, raw[j], scale[j]);
            else if (loc == 0)
                fp8_chunk_load(cache + off, ch, raw[j], scale[j]);
        }
#pragma unroll
        for (int j = 0; j < kBatch; j++) {
            const int i = t + kWgThreads * (b0 + j);
            if (kModel1)
                model1_chunk_store(tile, i / kPerRow, i % kPerRow, raw[j], scale[j]);
            else
                fp8_chunk_store(tile, i / kPerRow, i % kPerRow, raw[j], scale[j]);
        }
    }
    if (bad)
        *c.bad_flag(s) = 1;
}

/* Sparse: the L2 prefetch of row t (< 64) of the block `ahead` blocks after
 * block blk in the CTA's ring order: its listed entry (656 bytes of this
 * CTA's KV head, of the block's cache, main or extra), if the slot is in
 * that cache. One entry per producer
 * thread t < 64 (the slots are scattered: no page to fetch whole). Exactly
 * the bytes load_fp8_sparse will read. The params through an opaque copy
 * of their address, as prefetch_fp8_block. */
template <bool kModel1>
__device__ __forceinline__ void prefetch_fp8_sparse_row(const dinf__mla_params &params,
                                                        const cta_ctx &c, int32_t req,
                                                        const dinf__mla_piece &pc, int32_t blk,
                                                        int32_t ahead, int t) {
    const dinf__mla_params *p = &params;
    asm volatile("" : "+l"(p));
    int32_t r, b, keys;
    if (!dinf__mla_fast_block_ahead_in(p, 1, c.meta, c.first, c.last, req, blk, pc.blk_end, pc.s_k,
                                    ahead, &r, &b, &keys) ||
        t >= keys)
        return;
    int32_t valid;
    int extra;
    const int32_t *slots = dinf__mla_sparse_block(p, r, b, &valid, &extra);
    int64_t off;
    int32_t row;
    if (t >= valid || dinf__mla_slot_loc(p, extra, __ldg(slots + t), &off, &row) != 0)
        return;
    const uint8_t *cache = static_cast<const uint8_t *>(dinf__mla_cache(p, extra));
    if (kModel1) { /* the data row, and the 16 bytes holding its scales */
        ptx::bulk_prefetch_l2(cache + off, DINF_MLA_MODEL1_ROW_BYTES);
        const int32_t page_size = extra ? p->extra_page : p->page;
        const int64_t so = dinf__mla_model1_scale_off(off, row, page_size) & ~int64_t(15);
        /* not past the page's 584-byte rows (the last even row of an odd-sized
         * page: its 16-byte chunk would reach 8 bytes into what may be the end
         * of the allocation) */
        if (so + 16 <= off + (int64_t)(page_size - row) * DINF_MLA_MODEL1_ROW_BYTES +
                           (int64_t)page_size * 8)
            ptx::bulk_prefetch_l2(cache + so, 16);
        return;
    }
    ptx::bulk_prefetch_l2(cache + off + int64_t(c.hk) * DINF_MLA_FP8_ENTRY_BYTES,
                          DINF_MLA_FP8_ENTRY_BYTES);
}

/* Block blk of request req (piece pc, block table row bt) into stage it % 2,
 * once the consumers released it: BF16, thread 0 issues the nine TMA boxes;
 * FP8, first the L2 prefetch of the block p.fp8_prefetch blocks ahead (of
 * blocks 0 .. p.fp8_prefetch at the CTA's first fill), then the 128 threads
 * dequantize the page. A page outside [0, num_blocks) flags the stage bad
 * and page 0 is read instead. Sparse (FP8): threads 0..63 prefetch one
 * listed entry each of the block ahead, then load_fp8_sparse gathers the
 * block's entries (bt is the request's indices row). */
template <bool kFp8, int kBatch, int kSparse>
__device__ __forceinline__ void fill_stage(const dinf__mla_params &p, const jit::tensor_map_t *kmap,
                                           const cta_ctx &c, int32_t req,
                                           const dinf__mla_piece &pc, const int32_t *bt,
                                           int32_t blk, int64_t it, int t) {
    const int s = dinf__mla_fast_stage(it);
    const int32_t s_k = pc.s_k;
    if (!kFp8) {
        if (t != 0)
            return;
        mbar_wait_bounded(c.empty(s), dinf__mla_fast_empty_parity(it));
        int32_t page = __ldg(bt + blk); /* 64-token pages: logical page = block */
        const int bad = page < 0 || page >= p.num_blocks;
        *c.bad_flag(s) = bad;
        page = bad ? 0 : page;
        jit::mbar_arrive_expect_tx(c.full(s), dinf__mla_fast_stage_tx_bytes());
#pragma unroll
        for (int box = 0; box < DINF_MLA_FAST_BOXES; box++)
            ptx::tma_load_4d(c.k_tile(s) + box * DINF_MLA_FAST_BOX_BYTES, kmap, c.full(s),
                             box * DINF_MLA_FAST_BOX_COLS, 0, c.hk, page);
    } else if (kSparse) {
        if (t < kBN && p.fp8_prefetch > 0) /* before the wait: the stage is not touched */
            for (int32_t a = it == 0 ? 0 : p.fp8_prefetch; a <= p.fp8_prefetch; a++)
                prefetch_fp8_sparse_row<kSparse == 2>(p, c, req, pc, blk, a, t);
        mbar_wait_bounded(c.empty(s), dinf__mla_fast_empty_parity(it));
        load_fp8_sparse<kBatch, kSparse == 2>(p, c, s, req, blk, t);
        ptx::fence_proxy_async_shared();
        jit::mbar_arrive(c.full(s));
    } else {
        if (t == 0 && p.fp8_prefetch > 0) /* before the wait: the stage is not touched */
            for (int32_t a = it == 0 ? 0 : p.fp8_prefetch; a <= p.fp8_prefetch; a++)
                prefetch_fp8_block(p, c, req, pc, blk, a);
        mbar_wait_bounded(c.empty(s), dinf__mla_fast_empty_parity(it));
        const int32_t page = __ldg(bt + blk);
        const int bad = page < 0 || page >= p.num_blocks;
        if (t == 0)
            *c.bad_flag(s) = bad;
        load_fp8_page<kBatch>(p, c, s, bad ? 0 : page, dinf__mla_fast_block_keys(s_k, blk), bad, t);
        ptx::fence_proxy_async_shared();
        jit::mbar_arrive(c.full(s));
    }
}

/* Per request: its first block (which waits only for the consumers'
 * release of block it - 2, a block of an earlier request: no cycle), then
 * the Q tile once the consumers are done with the previous one, then the
 * other blocks. The ring's order is the consumers' order. */
template <bool kFp8, int kBatch, int kSparse>
__device__ __forceinline__ void produce(const dinf__mla_params &p, const jit::tensor_map_t *kmap,
                                        const cta_ctx &c) {
    const int t = int(threadIdx.x) - DINF_MLA_FAST_PRODUCER_WG * kWgThreads;
    int64_t it = 0, rq = 0;
    for (int32_t req = c.first; req <= c.last; req++, rq++) {
        const dinf__mla_piece pc =
            dinf__mla_fast_piece_in(&p, kSparse, c.meta, req,
                                    dinf__mla_req_keys_in(&p, req, kSparse), c.first, c.last);
        const int32_t *bt = p.block_table + int64_t(req) * p.max_blocks;
        int32_t blk = pc.blk_begin;
        if (blk < pc.blk_end)
            fill_stage<kFp8, kBatch, kSparse>(p, kmap, c, req, pc, bt, blk++, it++, t);
        mbar_wait_bounded(c.bar(c.lay.q_empty), dinf__mla_fast_q_empty_parity(rq));
        load_q<kSparse == 2>(p, c, req, t);
        ptx::fence_proxy_async_shared();
        jit::mbar_arrive(c.bar(c.lay.q_full));
        for (; blk < pc.blk_end; blk++, it++)
            fill_stage<kFp8, kBatch, kSparse>(p, kmap, c, req, pc, bt, blk, it, t);
    }
    ptx::griddep_launch_dependents();
    /* Drain: the waits the next two fills and the next Q load would make,
     * i.e. until the consumers have released every stage this CTA filled and
     * the last Q tile. The consumers meet at named barriers, which have no
     * time bound; if they deadlock there, this bounded wait traps within
     * DINF_MLA_FAST_WAIT_NS and the launch fails instead of hanging. */
    mbar_wait_bounded(c.empty(dinf__mla_fast_stage(it)), dinf__mla_fast_empty_parity(it));
    mbar_wait_bounded(c.empty(dinf__mla_fast_stage(it + 1)), dinf__mla_fast_empty_parity(it + 1));
    mbar_wait_bounded(c.bar(c.lay.q_empty), dinf__mla_fast_q_empty_parity(rq));
}

/* ------------------------------------------------------------ consumers -- */

/* After wgmma_wait: later reads of the accumulators depend on these (the
 * compiler sees the wgmma's register results at its issue, not at the wait). */
template <int N> __device__ __forceinline__ void fence_acc(float (&a)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++)
        jit::fence_operand(a[i]);
}

/* The consumers' bounded wait: a trap inside the block loop costs the loop
 * registers (ptxas spills), so a timed-out wait sets hung, later waits
 * return at once (the WGs still meet at every named barrier and finish
 * their blocks with garbage), and consume() traps after its loop. */
__device__ __forceinline__ void mbar_wait_or_flag(mbar_t *bar, uint32_t parity, uint32_t &hung) {
    if (hung || ptx::mbar_try_wait(bar, parity))
        return;
    const uint64_t start = ptx::globaltimer_ns();
    for (uint32_t spins = 1;; spins++) {
        if (ptx::mbar_try_wait(bar, parity))
            return;
        if (spins % 256 == 0 && ptx::globaltimer_ns() - start > DINF_MLA_FAST_WAIT_NS) {
            hung = 1;
            return;
        }
    }
}

/* The key limits of this thread's two rows (0 for rows past q_rows). */
__device__ __forceinline__ void row_limits(const dinf__mla_params &p, const cta_ctx &c,
                                           const dinf__mla_piece &pc, const int (&rows)[2],
                                           int32_t (&limit)[2]) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int qr = c.row0 + rows[i];
        limit[i] = qr < p.q_rows ? dinf__mla_key_limit(pc.s_k, p.s_q, qr / p.heads_per_kv,
                                                       p.causal)
                                 : 0;
    }
}

/* V rows [n, 64) of stage s set to zero in output columns [256 half, 256 half + 256)
 * (boxes 4 half .. 4 half + 3), by the 128 threads of one WG (0 * NaN would be NaN). */
__device__ __forceinline__ void zero_v_tail(const cta_ctx &c, int s, int32_t n, int half, int t) {
    uint8_t *tile = c.k_tile(s);
    for (int i = t; i < (kBN - n) * 32; i += kWgThreads) {
        const int row = n + i / 32, box = 4 * half + (i % 32) / 8, chunk = i % 8;
        *reinterpret_cast<uint4 *>(tile + box * DINF_MLA_FAST_BOX_BYTES + row * 128 + chunk * 16) =
            make_uint4(0, 0, 0, 0);
    }
}

/* The end of a request: row sums over the quad, then over the two WGs
 * (named barrier BAR_L; sums double-buffered by request parity), then this
 * WG's 256 output columns (and WG 0 the lse) to out / the workspace. The
 * attention sink is a sparse decode's (kSink: the sparse kernel; the dense
 * kernels never carry one, and the seesaw consumers have no registers for
 * it). */
template <bool kSink>
__device__ __forceinline__ void finish_request(const dinf__mla_params &p, const cta_ctx &c,
                                               const dinf__mla_piece &pc, int32_t req, int64_t rq,
                                               int wg, int t, const int (&rows)[2], float (&l)[2],
                                               const float (&m)[2], int bad, float (&o)[128]) {
    float *s_lsum = reinterpret_cast<float *>(c.smem + c.lay.lsum); /* [2][2][64] */
    float *lsum = s_lsum + (rq & 1) * 2 * kBM;
#pragma unroll
    for (int i = 0; i < 2; i++) {
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
        l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        if (t % 4 == 0)
            lsum[wg * kBM + rows[i]] = l[i];
    }
    ptx::named_barrier_sync(DINF_MLA_FAST_BAR_L, DINF_MLA_FAST_CONSUMERS);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int qr = c.row0 + rows[i];
        if (qr >= p.q_rows || pc.dest < 0)
            continue;
        const float l_total = l[i] + lsum[(1 - wg) * kBM + rows[i]];
        const int tq = qr / p.heads_per_kv;
        const int h = c.hk * p.heads_per_kv + qr % p.heads_per_kv;
        const dinf__mla_row_end e = dinf__mla_fast_row_end(
            l_total, m[i], bad, kSink ? dinf__mla_sink2(p.attn_sink, h) : -INFINITY);
        const int col0 = wg * DINF_MLA_FAST_COLS_PER_WG + 2 * (t % 4);
        if (pc.dest == 0) {
            uint16_t *dst = p.out + ((int64_t(req) * p.s_q + tq) * p.h_q + h) * kDv + col0;
#pragma unroll
            for (int nt = 0; nt < 32; nt++)
                *reinterpret_cast<uint32_t *>(dst + 8 * nt) =
                    ptx::pack_bf16x2(o[4 * nt + 2 * i] * e.out_inv,
                                     o[4 * nt + 2 * i + 1] * e.out_inv);
            if (wg == 0 && t % 4 == 0)
                p.lse[dinf__mla_lse_index(&p, req, h, tq)] = e.lse;
        } else {
            const int64_t wrow = (pc.split_row * p.h_kv + c.hk) * p.q_rows + qr;
            float *dst = p.o_acc + wrow * kDv + col0;
#pragma unroll
            for (int nt = 0; nt < 32; nt++)
                *reinterpret_cast<float2 *>(dst + 8 * nt) =
                    make_float2(o[4 * nt + 2 * i] * e.inv, o[4 * nt + 2 * i + 1] * e.inv);
            if (wg == 0 && t % 4 == 0)
                p.lse2_acc[wrow] = e.lse2;
        }
    }
}

template <bool kFp8, int kSparse>
__device__ __forceinline__ void consume(const dinf__mla_params &p, const cta_ctx &c) {
    const int wg = int(threadIdx.x) / kWgThreads; /* 0 or 1 */
    const int t = int(threadIdx.x) % kWgThreads;
    /* this thread's two rows of the tile (accumulator values v with (v / 2) % 2 = i) */
    const int rows[2] = {dinf__mla_fast_acc_row(t, 0), dinf__mla_fast_acc_row(t, 2)};
    float *s_max = reinterpret_cast<float *>(c.smem + c.lay.max);   /* [2][64] */
    const uint32_t q_addr = c.smem_addr + c.lay.q, p_addr = c.smem_addr + c.lay.p;
    int64_t it = 0, rq = 0;
    uint32_t hung = 0;
    for (int32_t req = c.first; req <= c.last; req++, rq++) {
        const dinf__mla_piece pc =
            dinf__mla_fast_piece_in(&p, kSparse, c.meta, req,
                                    dinf__mla_req_keys_in(&p, req, kSparse), c.first, c.last);
        int bad = pc.bad;
        int32_t limit[2];
        row_limits(p, c, pc, rows, limit);
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
        float o[128];
#pragma unroll
        for (int v = 0; v < 128; v++)
            o[v] = 0.0f;
        mbar_wait_or_flag(c.bar(c.lay.q_full), dinf__mla_fast_q_full_parity(rq), hung);

        for (int32_t blk = pc.blk_begin; blk < pc.blk_end; blk++, it++) {
            const int s = dinf__mla_fast_stage(it);
            const int32_t j0 = blk * kBN;
            const int32_t n = dinf__mla_fast_block_keys(pc.s_k, blk);
            const uint32_t k_addr = c.k_addr(s);
            mbar_wait_or_flag(c.full(s), dinf__mla_fast_full_parity(it), hung);
            bad |= *c.bad_flag(s);

            /* S_w = Q K_w^T: 64 rows x this WG's 32 keys */
            float sacc[16];
#pragma unroll
            for (int v = 0; v < 16; v++)
                sacc[v] = 0.0f;
            fence_acc(sacc); /* the zeroing stays before the fence (wgmma.fence orders register accesses) */
            jit::wgmma_fence();
            /* (the MODEL1 cache: its 512 columns; the K tile's last 64 are never written) */
            constexpr int kQkSteps = (kSparse == 2 ? DINF_MLA_MODEL1_HEAD_DIM : kDqk) / 16;
#pragma unroll
            for (int ks = 0; ks < kQkSteps; ks++)
                ptx::wgmma_bf16_m64n32k16_kk(
                    dinf__mla_fast_desc_k(q_addr + dinf__mla_fast_qk_a(ks)),
                    dinf__mla_fast_desc_k(k_addr + dinf__mla_fast_qk_b(ks, wg)), sacc, ks > 0);
            jit::wgmma_commit();
            ptx::wgmma_wait<0>();
            fence_acc(sacc);

            /* sparse: this WG's 32 keys' skipped-slot flags as one word, bit k
             * for key 32 wg + k (lane k of each warp reads one flag), shifted
             * so that bit 8 (v / 4) + v % 2 is this thread's value v */
            uint32_t skipped = 0;
            if (kSparse)
                skipped = __ballot_sync(0xffffffffu, c.smem[c.lay.mask + s * kBN +
                                                             wg * DINF_MLA_FAST_KEYS_PER_WG +
                                                             t % 32] != 0) >>
                          (2 * (t % 4));
            /* scale, mask, this WG's row maxima, then both WGs' */
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int v = 0; v < 16; v++) {
                const int i = (v / 2) % 2;
                const int32_t key = j0 + wg * DINF_MLA_FAST_KEYS_PER_WG + dinf__mla_fast_acc_col(t, v);
                /* sparse: a skipped slot's score is masked like a key past the limit */
                const bool live = key < limit[i] && !(kSparse && ((skipped >> (8 * (v / 4) + v % 2)) & 1u));
                const float x = live ? sacc[v] * p.scale_log2 : -INFINITY;
                sacc[v] = x;
                mx[i] = fmaxf(mx[i], x);
            }
            float alpha[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                if (t % 4 == 0)
                    s_max[wg * kBM + rows[i]] = mx[i];
            }
            ptx::named_barrier_sync(DINF_MLA_FAST_BAR_MAX, DINF_MLA_FAST_CONSUMERS);
            /* sparse: both WGs read the stage's bad flag before this barrier;
             * clear it for the stage's next fill (the producer sets it only
             * when a slot is bad, after the release below) */
            if (kSparse && wg == 0 && t == 0)
                *c.bad_flag(s) = 0;
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const float both = fmaxf(mx[i], s_max[(1 - wg) * kBM + rows[i]]);
                m[i] = dinf__mla_fast_max_update(m[i], both, &alpha[i]);
                l[i] *= alpha[i];
            }
#pragma unroll
            for (int v = 0; v < 16; v++) {
                const int i = (v / 2) % 2;
                const float pv = dinf__mla_fast_prob(sacc[v], m[i]);
                sacc[v] = pv;
                l[i] += pv;
            }
#pragma unroll
            for (int v = 0; v < 128; v++)
                o[v] *= alpha[(v / 2) % 2];

            /* V rows past the request's length: zeros (this WG's columns only) */
            if (n < kBN)
                zero_v_tail(c, s, n, wg, t);
            /* P_w (bf16) into the shared P tile, keys [32 w, 32 w + 32) */
#pragma unroll
            for (int v = 0; v < 16; v += 2) {
                const int row = dinf__mla_fast_acc_row(t, v);
                const int key = wg * DINF_MLA_FAST_KEYS_PER_WG + dinf__mla_fast_acc_col(t, v);
                *reinterpret_cast<uint32_t *>(c.smem + c.lay.p + dinf__mla_fast_sw128(row, key)) =
                    ptx::pack_bf16x2(sacc[v], sacc[v + 1]);
            }
            ptx::fence_proxy_async_shared();
            ptx::named_barrier_sync(DINF_MLA_FAST_BAR_P, DINF_MLA_FAST_CONSUMERS);

            /* O_w += P V_w: 64 rows x this WG's 256 output columns */
            fence_acc(o); /* the alpha rescale of o stays before the fence */
            jit::wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < kBN / 16; kk++)
                ptx::wgmma_bf16_m64n256k16_kt(
                    dinf__mla_fast_desc_k(p_addr + dinf__mla_fast_pv_a(kk)),
                    dinf__mla_fast_desc_mn(k_addr + dinf__mla_fast_pv_b(kk, wg)), o, 1);
            jit::wgmma_commit();
            ptx::wgmma_wait<0>();
            fence_acc(o);
            jit::mbar_arrive(c.empty(s));
        }
        jit::mbar_arrive(c.bar(c.lay.q_empty));
        finish_request<kSparse != 0>(p, c, pc, req, rq, wg, t, rows, l, m, bad, o);
    }
    if (hung)
        ptx::trap();
    ptx::griddep_launch_dependents();
}

/* ------------------------------------------------- seesaw consumers -- */

/* S = Q K^T over the whole 64-key block of the stage at k_addr (wgmma
 * m64n64k16, 36 k-steps), waited for. */
__device__ __forceinline__ void qk_block(uint32_t q_addr, uint32_t k_addr, float (&sacc)[32]) {
#pragma unroll
    for (int v = 0; v < 32; v++)
        sacc[v] = 0.0f;
    fence_acc(sacc);
    jit::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kDqk / 16; ks++)
        ptx::wgmma_bf16_m64n64k16_kk(dinf__mla_fast_desc_k(q_addr + dinf__mla_fast_qk_a(ks)),
                                     dinf__mla_fast_desc_k(k_addr + dinf__mla_fast_qk_a(ks)), sacc,
                                     ks > 0);
    jit::wgmma_commit();
    ptx::wgmma_wait<0>();
    fence_acc(sacc);
}

/* Scale by softmax_scale log2 e, mask keys at or past each row's limit
 * (-inf), and the rows' maxima over the quad (both rows of this thread). */
__device__ __forceinline__ void mask_scores(float (&sacc)[32], int32_t j0,
                                            const int32_t (&limit)[2], float scale_log2, int t,
                                            float (&mx)[2]) {
    mx[0] = mx[1] = -INFINITY;
#pragma unroll
    for (int v = 0; v < 32; v++) {
        const int i = (v / 2) % 2;
        const float x = j0 + dinf__mla_fast_acc_col(t, v) < limit[i] ? sacc[v] * scale_log2 : -INFINITY;
        sacc[v] = x;
        mx[i] = fmaxf(mx[i], x);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
        mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
    }
}

/* Probabilities against the running max m, added to the row sums l. */
__device__ __forceinline__ void probs(float (&sacc)[32], const float (&m)[2], float (&l)[2]) {
#pragma unroll
    for (int v = 0; v < 32; v++) {
        const int i = (v / 2) % 2;
        const float pv = dinf__mla_fast_prob(sacc[v], m[i]);
        sacc[v] = pv;
        l[i] += pv;
    }
}

/* This thread's 32 probabilities as bf16 pairs (pk[w]: values 2w, 2w + 1). */
__device__ __forceinline__ void pack_p(const float (&pr)[32], uint32_t (&pk)[16]) {
#pragma unroll
    for (int w = 0; w < 16; w++)
        pk[w] = ptx::pack_bf16x2(pr[2 * w], pr[2 * w + 1]);
}

/* The packed pairs into the P tile at byte offset p_off of the CTA's shared
 * memory (64 rows x 64 keys, one swizzled box, K-major for the P V wgmma). */
__device__ __forceinline__ void store_p(const cta_ctx &c, uint32_t p_off, int t,
                                        const uint32_t (&pk)[16]) {
#pragma unroll
    for (int w = 0; w < 16; w++)
        *reinterpret_cast<uint32_t *>(c.smem + p_off +
                                      dinf__mla_fast_sw128(dinf__mla_fast_acc_row(t, 2 * w),
                                                           dinf__mla_fast_acc_col(t, 2 * w))) = pk[w];
}

/* Issue O_w += P V_w (4 x wgmma m64n256k16; P in box 8 of the stage at
 * k_addr, V the MN-major view of this WG's four boxes of it); the caller
 * waits (ptx::wgmma_wait<0>, then fence_acc). */
__device__ __forceinline__ void pv_issue(uint32_t k_addr, int half, float (&o)[128]) {
    const uint32_t p_addr = k_addr + dinf__mla_seesaw_p_tile();
    fence_acc(o);
    jit::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBN / 16; kk++)
        ptx::wgmma_bf16_m64n256k16_kt(dinf__mla_fast_desc_k(p_addr + dinf__mla_fast_pv_a(kk)),
                                      dinf__mla_fast_desc_mn(k_addr + dinf__mla_fast_pv_b(kk, half)),
                                      o, 1);
    jit::wgmma_commit();
}

/*
 * The seesaw consumers (lib/mla/mla_fast_hd.h, "seesaw"): per step of two
 * blocks A (stage sa) and B (stage sb, when the piece has it), WG 0 owns
 * S0 and O_L, WG 1 owns S1 and O_R; the comments name the operations of
 * dinf__mla_seesaw_ops, in its order.
 */
template <int wg> /* the warpgroup: each has its own copy of the loops (registers) */
__device__ __forceinline__ void consume_seesaw_wg(const dinf__mla_params &p, const cta_ctx &c) {
    const int t = int(threadIdx.x) % kWgThreads;
    const int rows[2] = {dinf__mla_fast_acc_row(t, 0), dinf__mla_fast_acc_row(t, 2)};
    float *s_a0 = reinterpret_cast<float *>(c.smem + c.lay.sc); /* [4][64]: a0, a1, m0, m1 */
    float *s_a1 = s_a0 + kBM, *s_m0 = s_a0 + 2 * kBM, *s_m1 = s_a0 + 3 * kBM;
    const uint32_t q_addr = c.smem_addr + c.lay.q;
    const uint32_t p_tile = dinf__mla_seesaw_p_tile();
    int64_t it = 0, rq = 0;
    uint32_t hung = 0;
    for (int32_t req = c.first; req <= c.last; req++, rq++) {
        const dinf__mla_piece pc =
            dinf__mla_fast_piece_in(&p, 0, c.meta, req, dinf__mla_req_keys_in(&p, req, 0),
                                    c.first, c.last);
        int bad = pc.bad;
        int32_t limit[2];
        row_limits(p, c, pc, rows, limit);
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
        float o[128];
#pragma unroll
        for (int v = 0; v < 128; v++)
            o[v] = 0.0f;
        mbar_wait_or_flag(c.bar(c.lay.q_full), dinf__mla_fast_q_full_parity(rq), hung);

        const int32_t nblk = pc.blk_end - pc.blk_begin;
        const int32_t steps = dinf__mla_seesaw_steps(nblk);
        for (int32_t k = 0; k < steps; k++) {
            const int has_b = dinf__mla_seesaw_has_b(nblk, k);
            const int32_t blk_a = pc.blk_begin + 2 * k;
            const int sa = dinf__mla_fast_stage(it), sb = dinf__mla_fast_stage(it + 1);
            const uint32_t ka = c.k_addr(sa), kb = c.k_addr(sb);
            const uint32_t pa = (sa ? c.lay.k1 : c.lay.k0) + p_tile;
            const uint32_t pb = (sb ? c.lay.k1 : c.lay.k0) + p_tile;
            const int32_t n_a = dinf__mla_fast_block_keys(pc.s_k, blk_a);
            const int32_t n_b = dinf__mla_fast_block_keys(pc.s_k, blk_a + 1);
            float sacc[32];
            uint32_t pk[16];
            float mx[2], a0[2], a1[2];
            if (wg == 0) {
                /* WAIT_A, QK_A, MMA_WAIT */
                mbar_wait_or_flag(c.full(sa), dinf__mla_fast_full_parity(it), hung);
                bad |= *c.bad_flag(sa);
                qk_block(q_addr, ka, sacc);
                mask_scores(sacc, blk_a * kBN, limit, p.scale_log2, t, mx);
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    m[i] = dinf__mla_fast_max_update(m[i], mx[i], &a0[i]);
                    l[i] *= a0[i];
                }
                probs(sacc, m, l);
#pragma unroll
                for (int v = 0; v < 128; v++)
                    o[v] *= a0[(v / 2) % 2];
                /* PUT_SC0 */
                if (t % 4 == 0)
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        s_a0[rows[i]] = a0[i];
                        s_m0[rows[i]] = m[i];
                    }
                /* ZERO_A, PUT_P_A */
                if (n_a < kBN)
                    zero_v_tail(c, sa, n_a, 0, t);
                pack_p(sacc, pk);
                store_p(c, pa, t, pk);
                ptx::fence_proxy_async_shared();
                /* ARRIVE_A0, LOCAL, PV_A (P0 V_A[:, L]) */
                ptx::named_barrier_arrive(DINF_MLA_SEESAW_BAR_A0, DINF_MLA_FAST_CONSUMERS);
                ptx::named_barrier_sync(DINF_MLA_SEESAW_BAR_LOCAL, kWgThreads);
                pv_issue(ka, 0, o);
                /* SYNC_A1, GET_SC1 (m becomes m1), MMA_WAIT, RELEASE_A */
                ptx::named_barrier_sync(DINF_MLA_SEESAW_BAR_A1, DINF_MLA_FAST_CONSUMERS);
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    a1[i] = s_a1[rows[i]];
                    m[i] = s_m1[rows[i]];
                    l[i] *= a1[i];
                }
                ptx::wgmma_wait<0>();
                fence_acc(o);
                jit::mbar_arrive(c.empty(sa));
#pragma unroll
                for (int v = 0; v < 128; v++)
                    o[v] *= a1[(v / 2) % 2];
                if (has_b) { /* WAIT_B, ZERO_B, LOCAL, PV_B (P1 V_B[:, L]), MMA_WAIT, RELEASE_B */
                    mbar_wait_or_flag(c.full(sb), dinf__mla_fast_full_parity(it + 1), hung);
                    bad |= *c.bad_flag(sb);
                    if (n_b < kBN) {
                        zero_v_tail(c, sb, n_b, 0, t);
                        ptx::fence_proxy_async_shared();
                    }
                    ptx::named_barrier_sync(DINF_MLA_SEESAW_BAR_LOCAL, kWgThreads);
                    pv_issue(kb, 0, o);
                    ptx::wgmma_wait<0>();
                    fence_acc(o);
                    jit::mbar_arrive(c.empty(sb));
                }
            } else {
                mx[0] = mx[1] = -INFINITY; /* no block B: m1 = m0 */
                if (has_b) { /* WAIT_B, QK_B, MMA_WAIT */
                    mbar_wait_or_flag(c.full(sb), dinf__mla_fast_full_parity(it + 1), hung);
                    bad |= *c.bad_flag(sb);
                    qk_block(q_addr, kb, sacc);
                    mask_scores(sacc, (blk_a + 1) * kBN, limit, p.scale_log2, t, mx);
                }
                /* SYNC_A0, GET_SC0: O_R and l_R at the scale of m0 */
                ptx::named_barrier_sync(DINF_MLA_SEESAW_BAR_A0, DINF_MLA_FAST_CONSUMERS);
                float m0[2];
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    a0[i] = s_a0[rows[i]];
                    m0[i] = s_m0[rows[i]];
                    l[i] *= a0[i];
                }
#pragma unroll
                for (int v = 0; v < 128; v++)
                    o[v] *= a0[(v / 2) % 2];
                /* WAIT_A, ZERO_A, LOCAL, PV_A (P0 V_A[:, R], WG 0's P0 as stored) */
                mbar_wait_or_flag(c.full(sa), dinf__mla_fast_full_parity(it), hung);
                bad |= *c.bad_flag(sa);
                if (n_a < kBN) {
                    zero_v_tail(c, sa, n_a, 1, t);
                    ptx::fence_proxy_async_shared();
                }
                ptx::named_barrier_sync(DINF_MLA_SEESAW_BAR_LOCAL + 1, kWgThreads);
                pv_issue(ka, 1, o);
                /* meanwhile the softmax of block B: m1, a1, P1 */
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    m[i] = dinf__mla_fast_max_update(m0[i], mx[i], &a1[i]);
                    l[i] *= a1[i];
                }
                /* PUT_SC1 */
                if (t % 4 == 0)
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        s_a1[rows[i]] = a1[i];
                        s_m1[rows[i]] = m[i];
                    }
                if (has_b) { /* ZERO_B, PUT_P_B */
                    probs(sacc, m, l);
                    if (n_b < kBN)
                        zero_v_tail(c, sb, n_b, 1, t);
                    pack_p(sacc, pk);
                    store_p(c, pb, t, pk);
                }
                ptx::fence_proxy_async_shared();
                /* ARRIVE_A1, MMA_WAIT, RELEASE_A */
                ptx::named_barrier_arrive(DINF_MLA_SEESAW_BAR_A1, DINF_MLA_FAST_CONSUMERS);
                ptx::wgmma_wait<0>();
                fence_acc(o);
                jit::mbar_arrive(c.empty(sa));
#pragma unroll
                for (int v = 0; v < 128; v++)
                    o[v] *= a1[(v / 2) % 2];
                if (has_b) { /* LOCAL, PV_B (P1 V_B[:, R]), MMA_WAIT, RELEASE_B */
                    ptx::named_barrier_sync(DINF_MLA_SEESAW_BAR_LOCAL + 1, kWgThreads);
                    pv_issue(kb, 1, o);
                    ptx::wgmma_wait<0>();
                    fence_acc(o);
                    jit::mbar_arrive(c.empty(sb));
                }
            }
            it += has_b ? 2 : 1;
        }
        jit::mbar_arrive(c.bar(c.lay.q_empty));
        finish_request<false>(p, c, pc, req, rq, wg, t, rows, l, m, bad, o);
    }
    if (hung)
        ptx::trap();
    ptx::griddep_launch_dependents();
}

__device__ __forceinline__ void consume_seesaw(const dinf__mla_params &p, const cta_ctx &c) {
    if (threadIdx.x < kWgThreads)
        consume_seesaw_wg<0>(p, c);
    else
        consume_seesaw_wg<1>(p, c);
}

#endif /* DINF_MLA_FAST_DEVICE_CODE */

/* The CTA of either rung: the same carve but for the P tile and scalars
 * (dinf__mla_seesaw_smem_carve), barriers, producer; the consumers of the
 * rung. */
template <bool kFp8, bool kSeesaw, int kSparse>
__device__ __forceinline__ void fast_cta(const dinf__mla_params &p, const jit::tensor_map_t &kmap) {
#if DINF_MLA_FAST_DEVICE_CODE
    extern __shared__ __align__(1024) uint8_t smem_raw[];
    cta_ctx c;
    const uint32_t raw = jit::smem_u32(smem_raw);
    const uint32_t pad = (DINF_MLA_FAST_SMEM_ALIGN - raw % DINF_MLA_FAST_SMEM_ALIGN) %
                         DINF_MLA_FAST_SMEM_ALIGN;
    c.smem = smem_raw + pad;
    c.smem_addr = raw + pad;
    c.lay = kSeesaw ? dinf__mla_seesaw_smem_carve() : dinf__mla_fast_smem_carve();
    c.m_block = int(blockIdx.x % unsigned(p.m_blocks));
    const int part = int(blockIdx.x / unsigned(p.m_blocks));
    c.hk = int(blockIdx.y);
    c.row0 = c.m_block * kBM;
    c.meta = p.meta + int64_t(part) * DINF_MLA_METADATA_INTS;
    dinf__mla_fast_requests(&p, c.meta, &c.first, &c.last);

    if (threadIdx.x == 0) {
        const uint32_t full_count = dinf__mla_fast_full_count(kFp8);
        jit::mbar_init(c.full(0), full_count);
        jit::mbar_init(c.full(1), full_count);
        jit::mbar_init(c.empty(0), DINF_MLA_FAST_CONSUMERS);
        jit::mbar_init(c.empty(1), DINF_MLA_FAST_CONSUMERS);
        jit::mbar_init(c.bar(c.lay.q_full), kWgThreads);
        jit::mbar_init(c.bar(c.lay.q_empty), DINF_MLA_FAST_CONSUMERS);
        jit::mbar_init_fence();
        if (kSparse) { /* the sparse producer only ever sets the flags (load_fp8_sparse) */
            *c.bad_flag(0) = 0;
            *c.bad_flag(1) = 0;
        }
    }
    if (!kFp8 && threadIdx.x == DINF_MLA_FAST_PRODUCER_WG * kWgThreads)
        jit::tma_prefetch_descriptor(&kmap);
    __syncthreads();

    if (int(threadIdx.x) / kWgThreads == DINF_MLA_FAST_PRODUCER_WG) {
        ptx::setmaxnreg_dec<kSeesaw ? DINF_MLA_SEESAW_PRODUCER_REGS : DINF_MLA_FAST_PRODUCER_REGS>();
        produce<kFp8, kSeesaw ? DINF_MLA_SEESAW_FP8_BATCH : DINF_MLA_FAST_FP8_BATCH, kSparse>(
            p, &kmap, c);
    } else {
        ptx::setmaxnreg_inc<kSeesaw ? DINF_MLA_SEESAW_CONSUMER_REGS : DINF_MLA_FAST_CONSUMER_REGS>();
        if (kSeesaw)
            consume_seesaw(p, c);
        else
            consume<kFp8, kSparse>(p, c);
    }
#else
    /* wgmma and setmaxnreg exist only on sm_90a: the portable compute_90 PTX
     * of this file has no body (the launcher runs on sm_90 devices only,
     * where the sm_90a code is chosen). */
    __trap();
#endif
}

template <bool kFp8>
__global__ void __launch_bounds__(DINF_MLA_FAST_THREADS, 1)
    mla_decode_fast_kernel(const __grid_constant__ dinf__mla_params p,
                           const __grid_constant__ jit::tensor_map_t kmap) {
    fast_cta<kFp8, false, 0>(p, kmap);
}

/* The fast rung on a sparse decode (FP8 cache): the same CTA, the producer
 * gathering the listed entries (load_fp8_sparse), the consumers masking
 * skipped slots. */
__global__ void __launch_bounds__(DINF_MLA_FAST_THREADS, 1)
    mla_decode_fast_sparse_kernel(const __grid_constant__ dinf__mla_params p,
                                  const __grid_constant__ jit::tensor_map_t kmap) {
    fast_cta<true, false, 1>(p, kmap);
}

/* The same over the MODEL1 cache (q rows of 512 and QK^T over them, V the
 * first 512 columns, scales per 64 channels after the page's rows). */
__global__ void __launch_bounds__(DINF_MLA_FAST_THREADS, 1)
    mla_decode_fast_sparse_model1_kernel(const __grid_constant__ dinf__mla_params p,
                                         const __grid_constant__ jit::tensor_map_t kmap) {
    fast_cta<true, false, 2>(p, kmap);
}

/* The seesaw rung (DINF_MLA_KERNEL=seesaw): the same CTA with the seesaw consumers. */
template <bool kFp8>
__global__ void __launch_bounds__(DINF_MLA_FAST_THREADS, 1)
    mla_decode_seesaw_kernel(const __grid_constant__ dinf__mla_params p,
                             const __grid_constant__ jit::tensor_map_t kmap) {
    fast_cta<kFp8, true, 0>(p, kmap);
}

/* ------------------------------------------------------------- launcher -- */

using dinf_cuda::device_guard;

dinf_status cuda_failed(const char *func, const dinf__place *place, const char *what,
                        cudaError_t err) {
    (void)cudaGetLastError();
    return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "%s on device %d failed: %s (%s)", what,
                      (int)place->device, cudaGetErrorString(err), cudaGetErrorName(err));
}

typedef CUresult (*encode_tiled_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                    const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                    const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                    CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/* cuTensorMapEncodeTiled from the driver (no libcuda link), looked up once. */
encode_tiled_fn encoder(cudaError_t *err_out) {
    static cudaError_t err = cudaSuccess;
    static encode_tiled_fn fn = [] {
        void *f = nullptr;
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
        err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                               cudaEnableDefault, &q);
        if (err == cudaSuccess && (q != cudaDriverEntryPointSuccess || !f))
            err = cudaErrorSymbolNotFound;
        (void)cudaGetLastError();
        return err == cudaSuccess ? reinterpret_cast<encode_tiled_fn>(f) : nullptr;
    }();
    *err_out = err;
    return fn;
}

/*
 * The BF16 cache as a 4-D tensor (dims innermost first): 576 columns, 64
 * tokens of a page (stride kv_token_stride), h_kv heads (stride 576), the
 * pages (stride kv_block_stride); box 64 columns x 64 tokens, 128-byte swizzle.
 */
dinf_status encode_kv_map(const char *func, const dinf__mla_params *p, jit::tensor_map_t *out) {
    cudaError_t err;
    const encode_tiled_fn encode = encoder(&err);
    if (!encode)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "cuTensorMapEncodeTiled is not available from the driver (%s): the "
                          "fast MLA rung needs it (DINF_MLA_KERNEL=simple avoids it)",
                          cudaGetErrorString(err));
    CUtensorMap map;
    const cuuint64_t dims[4] = {cuuint64_t(kDqk), cuuint64_t(DINF_MLA_FAST_PAGE),
                                cuuint64_t(p->h_kv), cuuint64_t(p->num_blocks)};
    const cuuint64_t strides[3] = {cuuint64_t(p->kv_token_stride) * 2, cuuint64_t(kDqk) * 2,
                                   cuuint64_t(p->kv_block_stride) * 2};
    const cuuint32_t box[4] = {DINF_MLA_FAST_BOX_COLS, DINF_MLA_FAST_PAGE, 1, 1};
    const cuuint32_t element_strides[4] = {1, 1, 1, 1};
    const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4,
                              const_cast<void *>(p->k_cache), dims, strides, box, element_strides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "cuTensorMapEncodeTiled(k_cache=%p: dims 576 x 64 x %d x %lld, strides "
                          "%lld, 1152, %lld bytes) failed with CUresult %d",
                          p->k_cache, (int)p->h_kv, (long long)p->num_blocks,
                          (long long)p->kv_token_stride * 2, (long long)p->kv_block_stride * 2,
                          (int)r);
    static_assert(sizeof(CUtensorMap) == sizeof(jit::tensor_map_t), "tensor map size");
    memcpy(out, &map, sizeof map);
    return DINF_STATUS_OK;
}

} // namespace

extern "C" dinf_status dinf__mla_decode_fast_cuda(const char *func, const dinf__place *place,
                                                  const dinf__mla_params *p, int seesaw) {
    device_guard guard;
    dinf_status st = dinf_cuda::enter_sm90(func, (int)place->device, guard, "the MLA kernels",
                                           place->stream);
    if (st != DINF_STATUS_OK)
        return st;
    if (p->h_kv > 65535)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "num_heads_kv=%d exceeds the GPU grid limit 65535", (int)p->h_kv);
    const int sparse = p->sparse_s_q > 0;
    if (sparse && (seesaw || !p->kv_fp8))
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "a sparse decode reached the %s rung with a %s cache",
                          seesaw ? "seesaw" : "fast", p->kv_fp8 ? "FP8" : "BF16");
    jit::tensor_map_t kmap;
    memset(&kmap, 0, sizeof kmap);
    if (!p->kv_fp8 && (st = encode_kv_map(func, p, &kmap)) != DINF_STATUS_OK)
        return st;
    const unsigned smem_bytes =
        (seesaw ? dinf__mla_seesaw_smem_carve() : dinf__mla_fast_smem_carve()).bytes;
    cudaStream_t stream = reinterpret_cast<cudaStream_t>(place->stream);
    const dim3 grid(unsigned(int64_t(p->m_blocks) * p->parts), unsigned(p->h_kv));
    void (*kernel)(dinf__mla_params, jit::tensor_map_t) =
        sparse ? (p->model1 ? mla_decode_fast_sparse_model1_kernel : mla_decode_fast_sparse_kernel)
        : p->kv_fp8 ? (seesaw ? mla_decode_seesaw_kernel<true> : mla_decode_fast_kernel<true>)
                    : (seesaw ? mla_decode_seesaw_kernel<false> : mla_decode_fast_kernel<false>);
    cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes));
    if (err == cudaSuccess)
        kernel<<<grid, DINF_MLA_FAST_THREADS, smem_bytes, stream>>>(*p, kmap);
    if (err == cudaSuccess)
        err = cudaGetLastError();
    if (err != cudaSuccess)
        return cuda_failed(func, place, seesaw ? "seesaw decode launch" : "fast decode launch", err);
    /* the combine, launched as a programmatic dependent of the decode */
    return dinf__mla_combine_cuda(func, place, p, 1);
}
