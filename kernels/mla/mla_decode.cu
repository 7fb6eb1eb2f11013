/*
 * MLA decode on Hopper (sm_90a): the device-side split-KV plan, the split-KV
 * decode over a BF16 or FP8 paged cache, the log-sum-exp combine and the FP8
 * quantize-into-cache kernel, with their launchers (lib/mla/mla_cuda.h).
 *
 * This is the correctness rung (issue 5; speed is issue 8): plain loads into
 * shared memory, bf16 tensor cores through mma.sync.m16n8k16 (PTX ISA
 * "Warp-level matrix multiply-accumulate instructions", §9.7.14), float32
 * accumulation and online softmax in base 2 like the CPU path.
 *
 * Decode CTA: 256 threads = 8 warps over one 64-row m-block of one KV head
 * and one SM part of the plan (grid.x = m_block + m_blocks * part, m-block
 * fastest so the m-blocks of a part run together and share pages in L2;
 * grid.y = KV head). Warp w owns query rows 16 (w % 4) .. +16 and output
 * columns 256 (w / 4) .. +256 (128 float32 accumulators per thread). Both
 * column halves compute the same 16 x 64 score tile (same instructions, same
 * data, so bit-identical running max and sum). Per 64-key block:
 *   - every thread copies 16-byte chunks of the block's keys from their pages
 *     (block_table, dinf__mla_key_loc; a sparse decode's lists: slot = page *
 *     page_block_size + row of the block's cache, main or extra,
 *     dinf__mla_sparse_block / dinf__mla_slot_loc) into shared memory; keys at or past the
 *     request's length and skipped sparse slots (< 0) are zero-filled and
 *     never read from the cache, so NaN in unused slots cannot leak (the
 *     skipped ones are flagged in sMasked and their scores masked); an FP8 entry is dequantized to bf16 on the way
 *     (dinf__mla_fp8_value: the product rounded to nearest even, exact with
 *     power-of-two scales);
 *   - S = Q K^T (36 k-steps of 16), mask keys >= the row's causal limit,
 *     m' = max(m, rowmax), alpha = 2^(m - m'), P = 2^(S c - m'),
 *     O = alpha O + P V (P from registers as the A operand, V through
 *     ldmatrix.trans from the same shared tile).
 * An unsplit request writes out (bf16) and lse; a split piece writes its
 * float32 partial and base-2 lse to the workspace; the combine kernel merges.
 *
 * Guards for values in device memory (never checked on the host): a request
 * whose length is negative or exceeds the block table (sparse: topk), or
 * whose block table holds a page outside [0, num_blocks) (sparse: a slot past
 * the cache), gets NaN in out and lse; plan fields out of range are clamped
 * so nothing is read or written out of bounds.
 */
#include <cuda_runtime_api.h>

#include <string.h>

#include "../../lib/core/internal.h"
#include "../../lib/core/cuda_guard.h"
#include "../../lib/mla/mla_cuda.h"

namespace {

constexpr int kThreads = 256;
constexpr int kBM = DINF_MLA_BLOCK_M;
constexpr int kBN = DINF_MLA_BLOCK_N;
constexpr int kDqk = DINF_MLA_HEAD_DIM_QK;
constexpr int kDv = DINF_MLA_HEAD_DIM_V;
constexpr int kLd = kDqk + 8; /* shared row stride (bf16): 1168 B, conflict-free fragments */
constexpr int kChunks = kDqk / 8; /* 16-byte chunks per bf16 row */
constexpr int kSmemBytes = 2 * kBM * kLd * 2 + kBN; /* sQ, sK, sMasked */
constexpr float kLn2 = 0.69314718055994530942f;

/* ------------------------------------------------------------ PTX helpers -- */

/* D = A B + D, bf16 inputs, float32 accumulate (PTX ISA 9.7.14.5.14, m16n8k16). */
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four transposed 8x8 bf16 tiles (PTX ISA 9.7.9.25 ldmatrix). */
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t *smem) {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* Two floats -> bf16x2 (lo in the low half), round to nearest even. */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

__device__ __forceinline__ uint32_t ld_shared_u32(const uint16_t *p) {
    return *reinterpret_cast<const uint32_t *>(p);
}

/* griddepcontrol.wait (PTX ISA 9.7.13.13): wait for the prerequisite grid
 * (the fast decode, launched before a programmatic dependent combine) to
 * complete and its writes to be visible; a no-op without such a dependency. */
__device__ __forceinline__ void grid_dependency_wait() {
    asm volatile("griddepcontrol.wait;" ::: "memory");
}

/* ------------------------------------------------------------- metadata -- */

/* The plan of requests with lengths L (dense: cache_seqlens; sparse:
 * topk_length by query position; device memory or NULL). */
__global__ void __launch_bounds__(1) mla_metadata_kernel(const dinf__mla_lengths L,
                                                         int64_t requests, int32_t parts,
                                                         int32_t *meta, int32_t *num_splits) {
    dinf__mla_plan_lengths(&L, requests, parts, meta, num_splits);
}

/* ---------------------------------------------------------------- decode -- */

/* One 16-byte chunk of key row j of the block into shared memory (bf16).
 * Dense: key j0 + j of the request's block table row bt. Sparse (slots
 * non-NULL): slots[j] of the block's list, of the main or extra cache,
 * for j < valid (dinf__mla_sparse_block). sMasked[j] = 1 for a skipped
 * sparse slot (zero row, score -inf), else 0. An FP8 row is 40 items
 * (dinf__mla_fp8_item: codes, RoPE, and for the MODEL1 cache the zeros of
 * the tile's last 64 columns). */
template <bool kFp8>
__device__ __forceinline__ void load_key_chunks(const dinf__mla_params &p, const int32_t *bt,
                                                const int32_t *slots, int32_t valid, int extra,
                                                int32_t j0, int32_t n, int32_t hk, uint16_t *sK,
                                                uint8_t *sMasked, int &bad) {
    constexpr int kPerKey = kFp8 ? DINF_MLA_FP8_ITEMS : kChunks;
    const void *cache = dinf__mla_cache(&p, extra);
    const int32_t page_size = extra ? p.extra_page : p.page;
    for (int c = threadIdx.x; c < kBN * kPerKey; c += kThreads) {
        const int j = c / kPerKey, ch = c % kPerKey;
        uint16_t *dst_row = sK + j * kLd;
        int64_t off = 0;
        int32_t row = 0;
        const int loc = j >= n ? 1
                        : slots
                            ? (j < valid ? dinf__mla_slot_loc(&p, extra, slots[j], &off, &row) : 1)
                            : dinf__mla_key_loc(&p, bt, j0 + j, &off);
        if (loc < 0) {
            bad = 1;
            continue;
        }
        if (ch == 0)
            sMasked[j] = uint8_t(loc);
        const uint4 zero = make_uint4(0, 0, 0, 0);
        if (!kFp8) {
            *reinterpret_cast<uint4 *>(dst_row + 8 * ch) =
                loc ? zero /* past the request or a skipped slot: never the cache */
                    : __ldg(reinterpret_cast<const uint4 *>(static_cast<const uint16_t *>(cache) +
                                                            off + int64_t(hk) * kDqk) +
                            ch);
            continue;
        }
        int col;
        const int kind = dinf__mla_fp8_item(p.model1, ch, &col);
        uint4 *dst = reinterpret_cast<uint4 *>(dst_row + col);
        if (loc || kind == 2) { /* zeros: a skipped row, or MODEL1's last 64 columns */
            dst[0] = zero;
            if (kind != 1)
                dst[1] = zero;
            continue;
        }
        const uint8_t *entry = static_cast<const uint8_t *>(cache) + off;
        float scale;
        const uint8_t *src;
        if (p.model1) { /* data row at off, its 7 scale exponents after the page's rows */
            src = entry + (kind ? DINF_MLA_MODEL1_NOPE + 16 * (ch - DINF_MLA_MODEL1_NOPE / 16)
                                : 16 * ch);
            scale = kind ? 0.0f
                         : dinf__mla_e8m0_scale(__ldg(
                               static_cast<const uint8_t *>(cache) +
                               dinf__mla_model1_scale_off(off, row, page_size) + ch / 4));
        } else {
            entry += int64_t(hk) * DINF_MLA_FP8_ENTRY_BYTES;
            src = entry + (kind ? DINF_MLA_FP8_ROPE_OFFSET + 16 * (ch - kDv / 16) : 16 * ch);
            scale = kind ? 0.0f
                         : __ldg(reinterpret_cast<const float *>(entry + DINF_MLA_FP8_SCALE_OFFSET) +
                                 ch / 8);
        }
        const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(src));
        if (kind == 1) { /* RoPE: bf16 as stored */
            dst[0] = raw;
            continue;
        }
        /* 16 codes of channels [16 ch, 16 ch + 16) */
        const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
        uint32_t packed[8];
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const float lo = dinf__f32_from_e4m3(uint8_t(w[i] >> (16 * k))) * scale;
                const float hi = dinf__f32_from_e4m3(uint8_t(w[i] >> (16 * k + 8))) * scale;
                packed[2 * i + k] = pack_bf16(lo, hi);
            }
        dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
        dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
    }
}

template <bool kFp8>
__global__ void __launch_bounds__(kThreads, 1) mla_decode_kernel(const dinf__mla_params p) {
    extern __shared__ __align__(16) uint16_t smem[];
    uint16_t *sQ = smem;             /* [64][kLd] */
    uint16_t *sK = smem + kBM * kLd; /* [64][kLd] */
    /* [64]: key j of the block is a skipped sparse slot */
    uint8_t *sMasked = reinterpret_cast<uint8_t *>(smem + 2 * kBM * kLd);

    const int m_block = int(blockIdx.x % unsigned(p.m_blocks));
    const int part = int(blockIdx.x / unsigned(p.m_blocks));
    const int hk = int(blockIdx.y);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wr = warp % 4, wc = warp / 4;
    const int g = lane / 4, t = lane % 4;
    const int row0 = m_block * kBM;

    const int32_t *meta = p.meta + int64_t(part) * DINF_MLA_METADATA_INTS;
    const int32_t begin_req = meta[DINF_MLA_META_BEGIN_REQ];
    int32_t end_req = meta[DINF_MLA_META_END_REQ];
    if (begin_req < 0 || begin_req >= p.batch)
        return;
    if (end_req >= p.batch)
        end_req = int32_t(p.batch - 1);
    const int64_t max_rows = (p.batch + p.parts) * int64_t(p.h_kv) * p.q_rows;

    for (int32_t req = begin_req; req <= end_req; req++) {
        const int32_t s_k = dinf__mla_req_keys(&p, req);
        const int32_t nblk = dinf__mla_num_blocks(s_k);
        const bool first = req == begin_req, last = req == end_req;
        int32_t blk_begin = first ? meta[DINF_MLA_META_BEGIN_BLOCK] : 0;
        int32_t blk_end = last ? meta[DINF_MLA_META_END_BLOCK] : nblk;
        blk_begin = blk_begin < 0 ? 0 : blk_begin;
        blk_end = blk_end > nblk ? nblk : blk_end;
        const bool split = (first && meta[DINF_MLA_META_FIRST_SPLIT]) ||
                           (last && meta[DINF_MLA_META_LAST_SPLIT]);
        const int64_t split_row =
            split ? int64_t(p.num_splits[req]) + (first ? meta[DINF_MLA_META_BEGIN_SPLIT] : 0)
                  : -1;
        int bad = dinf__mla_req_keys_bad(&p, req, s_k) ||
                  (split && (split_row < 0 || (split_row + 1) * p.h_kv * p.q_rows > max_rows));

        __syncthreads(); /* the previous request is done with sQ and sK */
        const int32_t q_dim = dinf__mla_q_dim(&p); /* 576, or 512 (MODEL1: zeros after) */
        for (int c = threadIdx.x; c < kBM * kChunks; c += kThreads) {
            const int r = c / kChunks, ch = c % kChunks;
            const int qr = row0 + r;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (qr < p.q_rows && 8 * ch < q_dim) {
                const int tq = qr / p.heads_per_kv;
                const int h = hk * p.heads_per_kv + qr % p.heads_per_kv;
                v = __ldg(reinterpret_cast<const uint4 *>(
                              p.q + ((int64_t(req) * p.s_q + tq) * p.h_q + h) * q_dim) +
                          ch);
            }
            *reinterpret_cast<uint4 *>(sQ + r * kLd + 8 * ch) = v;
        }

        /* This thread's two rows: A = 16 wr + g, B = A + 8. */
        int32_t limit[2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int qr = row0 + 16 * wr + g + 8 * i;
            limit[i] = qr < p.q_rows ? dinf__mla_key_limit(s_k, p.s_q, qr / p.heads_per_kv,
                                                           p.causal)
                                     : 0;
        }
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
        float o[32][4];
#pragma unroll
        for (int nt = 0; nt < 32; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                o[nt][e] = 0.0f;

        const int32_t *bt = p.block_table + int64_t(req) * p.max_blocks;
        const bool sparse = p.sparse_s_q > 0;
        for (int32_t blk = blk_begin; blk < blk_end && !bad; blk++) {
            const int32_t j0 = blk * kBN;
            const int32_t n = s_k - j0 < kBN ? s_k - j0 : kBN;
            __syncthreads(); /* everyone is done with the previous block */
            int page_bad = 0;
            int32_t valid = n;
            int extra = 0;
            const int32_t *slots =
                sparse ? dinf__mla_sparse_block(&p, req, blk, &valid, &extra) : nullptr;
            load_key_chunks<kFp8>(p, bt, slots, valid, extra, j0, n, hk, sK, sMasked, page_bad);
            bad = __syncthreads_or(page_bad);
            if (bad)
                break;

            /* S = Q K^T: 16 rows x 64 keys per warp. */
            float s[8][4];
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    s[nt][e] = 0.0f;
            const uint16_t *qa = sQ + (16 * wr + g) * kLd + 2 * t;
#pragma unroll 4
            for (int k0 = 0; k0 < kDqk; k0 += 16) {
                const uint32_t a[4] = {ld_shared_u32(qa + k0), ld_shared_u32(qa + 8 * kLd + k0),
                                       ld_shared_u32(qa + k0 + 8),
                                       ld_shared_u32(qa + 8 * kLd + k0 + 8)};
#pragma unroll
                for (int nt = 0; nt < 8; nt++) {
                    const uint16_t *kb = sK + (nt * 8 + g) * kLd + k0 + 2 * t;
                    mma_bf16(s[nt], a, ld_shared_u32(kb), ld_shared_u32(kb + 8));
                }
            }

            /* Mask, online softmax (rows A: e < 2, rows B: e >= 2). */
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int j = nt * 8 + 2 * t + (e & 1);
                    const bool live = j0 + j < limit[e / 2] && !(sparse && sMasked[j]);
                    const float v = live ? s[nt][e] * p.scale_log2 : -INFINITY;
                    s[nt][e] = v;
                    mx[e / 2] = fmaxf(mx[e / 2], v);
                }
            float alpha[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                const float m_new = fmaxf(m[i], mx[i]);
                alpha[i] = m[i] == -INFINITY ? 0.0f : exp2f(m[i] - m_new);
                m[i] = m_new;
                l[i] *= alpha[i];
            }
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float v = s[nt][e];
                    const float pv = v == -INFINITY ? 0.0f : exp2f(v - m[e / 2]);
                    s[nt][e] = pv;
                    l[e / 2] += pv;
                }
#pragma unroll
            for (int nt = 0; nt < 32; nt++) {
                o[nt][0] *= alpha[0];
                o[nt][1] *= alpha[0];
                o[nt][2] *= alpha[1];
                o[nt][3] *= alpha[1];
            }

            /* O += P V over this warp's 256 columns. */
#pragma unroll
            for (int kk = 0; kk < kBN / 16; kk++) {
                const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                                       pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                       pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                       pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
                const int mat = lane / 8, r = lane % 8;
                const uint16_t *vb =
                    sK + (16 * kk + (mat & 1) * 8 + r) * kLd + 256 * wc + (mat >> 1) * 8;
#pragma unroll
                for (int np = 0; np < 16; np++) {
                    uint32_t b[4];
                    ldmatrix_x4_trans(b, vb + 16 * np);
                    mma_bf16(o[2 * np], a, b[0], b[1]);
                    mma_bf16(o[2 * np + 1], a, b[2], b[3]);
                }
            }
        }

        /* Epilogue: row sums over the quad, then out/lse or the partial. */
#pragma unroll
        for (int i = 0; i < 2; i++) {
            l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
            l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
        }
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int qr = row0 + 16 * wr + g + 8 * i;
            if (qr >= p.q_rows)
                continue;
            const int tq = qr / p.heads_per_kv;
            const int h = hk * p.heads_per_kv + qr % p.heads_per_kv;
            const float inv = bad ? NAN : (l[i] > 0.0f ? 1.0f / l[i] : 0.0f);
            if (split_row < 0) {
                uint16_t *dst = p.out + ((int64_t(req) * p.s_q + tq) * p.h_q + h) * kDv +
                                256 * wc + 2 * t;
                /* the whole softmax here: with the sink (1 / l without one) */
                const float out_inv =
                    bad ? NAN : dinf__mla_out_inv(l[i], m[i], dinf__mla_sink2(p.attn_sink, h));
#pragma unroll
                for (int nt = 0; nt < 32; nt++)
                    *reinterpret_cast<uint32_t *>(dst + 8 * nt) =
                        pack_bf16(o[nt][2 * i] * out_inv, o[nt][2 * i + 1] * out_inv);
                if (wc == 0 && t == 0)
                    p.lse[dinf__mla_lse_index(&p, req, h, tq)] =
                        bad ? NAN : (l[i] > 0.0f ? (log2f(l[i]) + m[i]) * kLn2 : INFINITY);
            } else if (!(split && (split_row < 0 ||
                                   (split_row + 1) * p.h_kv * p.q_rows > max_rows))) {
                const int64_t wrow = (split_row * p.h_kv + hk) * p.q_rows + qr;
                float *dst = p.o_acc + wrow * kDv + 256 * wc + 2 * t;
#pragma unroll
                for (int nt = 0; nt < 32; nt++)
                    *reinterpret_cast<float2 *>(dst + 8 * nt) =
                        make_float2(o[nt][2 * i] * inv, o[nt][2 * i + 1] * inv);
                if (wc == 0 && t == 0)
                    p.lse2_acc[wrow] = bad ? NAN : (l[i] > 0.0f ? log2f(l[i]) + m[i] : -INFINITY);
            }
        }
    }
}

/* --------------------------------------------------------------- combine -- */

/* One warp per (request, KV head, q row) of a split request; lane owns
 * columns 4 lane + 128 i, i < 4. */
__global__ void __launch_bounds__(kThreads) mla_combine_kernel(const dinf__mla_params p) {
    grid_dependency_wait();
    const int lane = threadIdx.x % 32;
    const int64_t rows_per_req = int64_t(p.h_kv) * p.q_rows;
    const int64_t items = p.batch * rows_per_req;
    const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
    const int64_t max_split = p.batch + p.parts;
    for (int64_t item = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; item < items;
         item += warps) {
        const int64_t req = item / rows_per_req;
        const int32_t first = p.num_splits[req];
        const int32_t n = p.num_splits[req + 1] - first;
        if (n <= 1)
            continue;
        const int64_t row = item % rows_per_req;
        const int hk = int(row / p.q_rows), qr = int(row % p.q_rows);
        const int tq = qr / p.heads_per_kv;
        const int h = hk * p.heads_per_kv + qr % p.heads_per_kv;
        uint16_t *dst = p.out + ((req * p.s_q + tq) * p.h_q + h) * kDv;
        float *lse = p.lse + dinf__mla_lse_index(&p, req, h, tq);
        if (first < 0 || first + int64_t(n) > max_split) { /* a plan that is not ours */
            for (int c = lane; c < kDv; c += 32)
                dst[c] = 0x7fc0u;
            if (lane == 0)
                *lse = NAN;
            continue;
        }
        const int64_t w0 = int64_t(first) * rows_per_req + row;
        const float *lse2 = p.lse2_acc + w0;
        bool poisoned = false; /* a piece that hit a bad block table entry */
        for (int32_t s = 0; s < n; s++)
            poisoned |= lse2[s * rows_per_req] != lse2[s * rows_per_req];
        if (poisoned) {
            for (int c = lane; c < kDv; c += 32)
                dst[c] = 0x7fc0u;
            if (lane == 0)
                *lse = NAN;
            continue;
        }
        const float global = dinf__mla_combine_lse2(lse2, rows_per_req, n);
        /* the partials' weights include the sink; lse does not */
        const float with_sink = dinf__mla_lse2_with_sink(global, dinf__mla_sink2(p.attn_sink, h));
        float4 acc[4];
#pragma unroll
        for (int i = 0; i < 4; i++)
            acc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (global != -INFINITY)
            for (int32_t s = 0; s < n; s++) {
                const float w = exp2f(lse2[s * rows_per_req] - with_sink);
                if (w == 0.0f)
                    continue;
                const float4 *src =
                    reinterpret_cast<const float4 *>(p.o_acc + (w0 + s * rows_per_req) * kDv);
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float4 v = src[lane + 32 * i];
                    acc[i].x += w * v.x;
                    acc[i].y += w * v.y;
                    acc[i].z += w * v.z;
                    acc[i].w += w * v.w;
                }
            }
#pragma unroll
        for (int i = 0; i < 4; i++)
            *reinterpret_cast<uint2 *>(dst + 4 * (lane + 32 * i)) =
                make_uint2(pack_bf16(acc[i].x, acc[i].y), pack_bf16(acc[i].z, acc[i].w));
        if (lane == 0)
            *lse = global == -INFINITY ? INFINITY : global * kLn2;
    }
}

/* -------------------------------------------------------- FP8 quantize -- */

/* One warp per (token, KV head): lane owns channels [16 lane, 16 lane + 16)
 * of the latent part (its 128-channel group: lanes 8c .. 8c + 7). */
__global__ void __launch_bounds__(kThreads)
    mla_quantize_fp8_kernel(const uint16_t *kv, int64_t num_tokens, int32_t h_kv,
                            int64_t kv_token_ld, const int64_t *slots, uint8_t *cache,
                            int64_t num_slots, int32_t page, int64_t block_stride,
                            int64_t token_stride) {
    const int lane = threadIdx.x % 32;
    const int64_t items = num_tokens * h_kv;
    const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
    for (int64_t item = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; item < items;
         item += warps) {
        const int64_t tok = item / h_kv;
        const int hk = int(item % h_kv);
        const int64_t slot = slots[tok];
        if (slot < 0 || slot >= num_slots)
            continue;
        const uint16_t *src = kv + tok * kv_token_ld + int64_t(hk) * kDqk;
        uint8_t *entry = cache + (slot / page) * block_stride + (slot % page) * token_stride +
                         int64_t(hk) * DINF_MLA_FP8_ENTRY_BYTES;
        float x[16];
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < 16; i++) {
            x[i] = dinf__f32_from_bf16(src[16 * lane + i]);
            const float a = fabsf(x[i]);
            amax = a > amax ? a : amax;
        }
#pragma unroll
        for (int off = 1; off < 8; off *= 2) {
            const float o = __shfl_xor_sync(0xffffffffu, amax, off);
            amax = o > amax ? o : amax;
        }
        const float scale = dinf__mla_fp8_scale(amax);
        const float inv = 1.0f / scale;
        uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
        for (int i = 0; i < 16; i++)
            w[i / 4] |= uint32_t(dinf__mla_fp8_code(x[i], inv)) << (8 * (i % 4));
        *reinterpret_cast<uint4 *>(entry + 16 * lane) = make_uint4(w[0], w[1], w[2], w[3]);
        if (lane % 8 == 0)
            reinterpret_cast<float *>(entry + DINF_MLA_FP8_SCALE_OFFSET)[lane / 8] = scale;
        if (lane < 8)
            reinterpret_cast<uint4 *>(entry + DINF_MLA_FP8_ROPE_OFFSET)[lane] =
                reinterpret_cast<const uint4 *>(src + kDv)[lane];
    }
}

/* One warp per token into the MODEL1 cache (mla.h, "MODEL1 cache"): lane
 * l < 28 owns latent channels [16 l, 16 l + 16) (its 64-channel group:
 * lanes 4g .. 4g + 3) and writes their codes and (l % 4 == 0) the group's
 * scale byte; lanes 28..31 copy the 128 RoPE bytes; lane 28 writes the
 * pad byte 0. Bytes equal the CPU's (dinf__mla_model1_scale_exp). */
__global__ void __launch_bounds__(kThreads)
    mla_quantize_model1_kernel(const uint16_t *kv, int64_t num_tokens, int64_t kv_token_ld,
                               const int64_t *slots, uint8_t *cache, int64_t num_slots,
                               int32_t page, int64_t block_stride) {
    const int lane = threadIdx.x % 32;
    const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
    for (int64_t tok = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; tok < num_tokens;
         tok += warps) {
        const int64_t slot = slots[tok];
        if (slot < 0 || slot >= num_slots)
            continue;
        const uint16_t *src = kv + tok * kv_token_ld;
        const int64_t row = slot % page;
        uint8_t *page_base = cache + (slot / page) * block_stride;
        uint8_t *data = page_base + row * DINF_MLA_MODEL1_ROW_BYTES;
        uint8_t *scales = page_base + int64_t(page) * DINF_MLA_MODEL1_ROW_BYTES + row * 8;
        const bool latent = lane < DINF_MLA_MODEL1_NOPE / 16;
        float x[16];
        float amax = 0.0f;
#pragma unroll
        for (int i = 0; i < 16; i++) {
            x[i] = latent ? dinf__f32_from_bf16(src[16 * lane + i]) : 0.0f;
            const float a = fabsf(x[i]);
            amax = a > amax || a != a ? a : amax; /* NaN wins, as on the CPU */
        }
#pragma unroll
        for (int off = 1; off < 4; off *= 2) { /* lanes 28..31 reduce among themselves */
            const float o = __shfl_xor_sync(0xffffffffu, amax, off);
            amax = o > amax || o != o ? o : amax;
        }
        if (latent) {
            const uint8_t e = dinf__mla_model1_scale_exp(amax);
            const float inv = dinf__mla_model1_inv_scale(amax, e);
            uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
            for (int i = 0; i < 16; i++)
                w[i / 4] |= uint32_t(dinf__mla_fp8_code(x[i], inv)) << (8 * (i % 4));
            *reinterpret_cast<uint4 *>(data + 16 * lane) = make_uint4(w[0], w[1], w[2], w[3]);
            if (lane % 4 == 0)
                scales[lane / 4] = e;
        } else {
            const int r = lane - DINF_MLA_MODEL1_NOPE / 16; /* 0..3: 32 bytes each */
            const uint4 *rope = reinterpret_cast<const uint4 *>(src + DINF_MLA_MODEL1_NOPE);
            uint4 *dst = reinterpret_cast<uint4 *>(data + DINF_MLA_MODEL1_NOPE);
            dst[2 * r] = rope[2 * r];
            dst[2 * r + 1] = rope[2 * r + 1];
            if (r == 0)
                scales[DINF_MLA_MODEL1_NOPE / 64] = 0;
        }
    }
}

/* ------------------------------------------------------------- launchers -- */

using dinf_cuda::device_guard;

dinf_status cuda_failed(const char *func, const dinf__place *place, const char *what,
                        cudaError_t err) {
    /* Clear a non-sticky error (a failed attribute call or launch) so that it
     * is not reported again by the next launch check of this or any caller. */
    (void)cudaGetLastError();
    return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "%s on device %d failed: %s (%s)", what,
                      (int)place->device, cudaGetErrorString(err), cudaGetErrorName(err));
}

/* Make the device current and require sm_90 (the kernels are sm_90a code). */
dinf_status enter_hopper(const char *func, const dinf__place *place, device_guard &guard) {
    return dinf_cuda::enter_sm90(func, (int)place->device, guard, "the MLA kernels",
                                 place->stream);
}

unsigned grid_for(int64_t items, int64_t per_cta) {
    const int64_t grid = (items + per_cta - 1) / per_cta;
    return unsigned(grid < 1 ? 1 : grid > (int64_t(1) << 20) ? (int64_t(1) << 20) : grid);
}

} // namespace

extern "C" dinf_status dinf__mla_metadata_cuda(const char *func, const dinf__place *place,
                                               const dinf__mla_lengths *L, int64_t requests,
                                               int32_t parts, int32_t *meta,
                                               int32_t *num_splits) {
    device_guard guard;
    dinf_status st = enter_hopper(func, place, guard);
    if (st != DINF_STATUS_OK)
        return st;
    mla_metadata_kernel<<<1, 1, 0, reinterpret_cast<cudaStream_t>(place->stream)>>>(
        *L, requests, parts, meta, num_splits);
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? DINF_STATUS_OK : cuda_failed(func, place, "metadata launch", err);
}

extern "C" dinf_status dinf__mla_decode_cuda(const char *func, const dinf__place *place,
                                             const dinf__mla_params *p) {
    device_guard guard;
    dinf_status st = enter_hopper(func, place, guard);
    if (st != DINF_STATUS_OK)
        return st;
    if (p->h_kv > 65535)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "num_heads_kv=%d exceeds the GPU grid limit 65535", (int)p->h_kv);
    cudaStream_t stream = reinterpret_cast<cudaStream_t>(place->stream);
    const dim3 grid(unsigned(int64_t(p->m_blocks) * p->parts), unsigned(p->h_kv));
    cudaError_t err;
    if (p->kv_fp8) {
        err = cudaFuncSetAttribute(mla_decode_kernel<true>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
        if (err == cudaSuccess)
            mla_decode_kernel<true><<<grid, kThreads, kSmemBytes, stream>>>(*p);
    } else {
        err = cudaFuncSetAttribute(mla_decode_kernel<false>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
        if (err == cudaSuccess)
            mla_decode_kernel<false><<<grid, kThreads, kSmemBytes, stream>>>(*p);
    }
    if (err == cudaSuccess)
        err = cudaGetLastError();
    if (err != cudaSuccess)
        return cuda_failed(func, place, "decode launch", err);
    return dinf__mla_combine_cuda(func, place, p, 0);
}

extern "C" dinf_status dinf__mla_combine_cuda(const char *func, const dinf__place *place,
                                              const dinf__mla_params *p, int pdl) {
    cudaLaunchConfig_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDim = dim3(grid_for(p->batch * p->h_kv * p->q_rows, kThreads / 32));
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = reinterpret_cast<cudaStream_t>(place->stream);
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    dinf__mla_params params = *p;
    void *args[1] = {&params};
    const cudaError_t err =
        cudaLaunchKernelExC(&cfg, reinterpret_cast<const void *>(mla_combine_kernel), args);
    return err == cudaSuccess ? DINF_STATUS_OK : cuda_failed(func, place, "combine launch", err);
}

extern "C" dinf_status dinf__mla_quantize_fp8_cuda(const char *func, const dinf__place *place,
                                                   const uint16_t *kv, int64_t num_tokens,
                                                   int32_t h_kv, int64_t kv_token_ld,
                                                   const int64_t *slot_mapping, uint8_t *k_cache,
                                                   int64_t num_slots, int32_t page,
                                                   int64_t kv_block_stride,
                                                   int64_t kv_token_stride) {
    device_guard guard;
    dinf_status st = enter_hopper(func, place, guard);
    if (st != DINF_STATUS_OK)
        return st;
    mla_quantize_fp8_kernel<<<grid_for(num_tokens * h_kv, kThreads / 32), kThreads, 0,
                              reinterpret_cast<cudaStream_t>(place->stream)>>>(
        kv, num_tokens, h_kv, kv_token_ld, slot_mapping, k_cache, num_slots, page,
        kv_block_stride, kv_token_stride);
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? DINF_STATUS_OK : cuda_failed(func, place, "quantize launch", err);
}

extern "C" dinf_status dinf__mla_quantize_model1_cuda(const char *func, const dinf__place *place,
                                                      const uint16_t *kv, int64_t num_tokens,
                                                      int64_t kv_token_ld,
                                                      const int64_t *slot_mapping, uint8_t *k_cache,
                                                      int64_t num_slots, int32_t page,
                                                      int64_t kv_block_stride) {
    device_guard guard;
    dinf_status st = enter_hopper(func, place, guard);
    if (st != DINF_STATUS_OK)
        return st;
    cudaStream_t stream = reinterpret_cast<cudaStream_t>(place->stream);
    mla_quantize_model1_kernel<<<grid_for(num_tokens, kThreads / 32), kThreads, 0, stream>>>(
        kv, num_tokens, kv_token_ld, slot_mapping, k_cache, num_slots, page, kv_block_stride);
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? DINF_STATUS_OK : cuda_failed(func, place, "quantize launch", err);
}
