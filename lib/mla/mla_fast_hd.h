/*
 * The fast MLA decode rung (kernels/mla/mla_decode_fast.cu), host and
 * device: everything of that kernel that is not a tensor-core or copy-engine
 * instruction. The shared-memory carve, the 128-byte swizzle that TMA writes
 * and wgmma reads, the wgmma shared-memory descriptors, the accumulator
 * fragment coordinates (which thread holds which row and column, which
 * warpgroup owns which keys and output columns), the mbarrier ring's stage
 * and parity sequence, the transaction byte counts, the piece of the plan a
 * CTA works on (identical for the producer and the consumers), the online
 * softmax step and its two-warpgroup merge, and the rung selection. The CPU
 * tests (tests/mla/test_mla_fast.c) exercise every function here; the
 * kernel calls them unchanged. Not installed.
 *
 * Kernel design (the numbers below are the constants of this header):
 *   CTA = 384 threads = 3 warpgroups, one CTA per SM (about 226 KiB of
 *   shared memory), grid (m_blocks * parts, h_kv) as the simple rung.
 *   WG 0 and WG 1 are consumers (setmaxnreg 200 registers). Per 64-key block
 *   consumer WG w computes S_w = Q K_w^T for keys [32 w, 32 w + 32) of the
 *   block (wgmma m64n32k16, Q and K from shared memory, 36 k-steps over 576),
 *   exchanges the row maxima with the other WG through shared memory (named
 *   barrier), so both hold the same running max m; computes its probabilities,
 *   rescales its output half, writes P_w (bf16) into the shared 64 x 64 P
 *   tile, and after a second named barrier accumulates
 *   O[:, 256 w, 256 w + 256) += P V (wgmma m64n256k16, P K-major and V
 *   MN-major from the same shared K tile, 4 k-steps). Each WG keeps its own
 *   row-sum partial (same rescaling factors), summed at the end.
 *   WG 2 is the producer (setmaxnreg 104): per request it loads the 64 x 576
 *   Q tile with 16-byte loads into the swizzled layout; per block it fills
 *   one stage of a 2-deep ring: BF16 cache: one thread issues 9 TMA boxes of
 *   64 dims x 64 tokens (128-byte swizzle) completing on the stage's full
 *   barrier; FP8 cache: the 128 threads load the 656-byte entries with
 *   16-byte loads and write the dequantized bf16 values (dinf__mla_fp8_value)
 *   into the same swizzled layout, then arrive; before each FP8 fill one
 *   producer thread asks the copy engine to bring the page of a later block
 *   into L2 (cp.async.bulk.prefetch, "FP8 L2 prefetch" below), so those
 *   16-byte loads hit L2. Consumers release a stage on
 *   its empty barrier after their P V of it completed, and the Q tile on
 *   q_empty after their last block of the request.
 */
#ifndef DINF_MLA_FAST_HD_H
#define DINF_MLA_FAST_HD_H

#include "mla_hd.h"

#include <math.h>
#include <stdint.h>

/* ---------------------------------------------------------- constants -- */

#define DINF_MLA_FAST_THREADS 384         /* 3 warpgroups */
#define DINF_MLA_FAST_CONSUMERS 256       /* WG 0 and WG 1 */
#define DINF_MLA_FAST_PRODUCER_WG 2
#define DINF_MLA_FAST_CONSUMER_REGS 200   /* setmaxnreg.inc (ptxas spills below about 190) */
#define DINF_MLA_FAST_PRODUCER_REGS 104   /* setmaxnreg.dec: 168 - 2 (200 - 168) */
#ifndef DINF_MLA_SEESAW_CONSUMER_REGS
#define DINF_MLA_SEESAW_CONSUMER_REGS 224 /* the seesaw consumers: O 128 + S 32 (ptxas spills at 216) */
#endif
#ifndef DINF_MLA_SEESAW_PRODUCER_REGS
#define DINF_MLA_SEESAW_PRODUCER_REGS 56  /* 168 - 2 (224 - 168): 128 x 56 + 256 x 224 = 168 x 384 */
#endif
#ifndef DINF_MLA_SEESAW_FP8_BATCH
#define DINF_MLA_SEESAW_FP8_BATCH 4       /* FP8 chunks in flight per producer thread (5 spills at 56 registers) */
#endif
#define DINF_MLA_FAST_FP8_CHUNKS 40       /* 16-byte chunks of an FP8 entry's row: 32 code + 8 RoPE */
#define DINF_MLA_FAST_FP8_BATCH 10        /* FP8 chunks a producer thread loads before converting */
#define DINF_MLA_FAST_STAGES 2            /* K ring depth */
#define DINF_MLA_FAST_PAGE 64             /* the only page size of the fast rung */
#define DINF_MLA_FAST_BOX_COLS 64         /* bf16 per 128-byte swizzled row */
#define DINF_MLA_FAST_BOXES 9             /* 576 / 64 column boxes per tile */
#define DINF_MLA_FAST_BOX_BYTES 8192      /* 64 rows x 128 bytes */
#define DINF_MLA_FAST_TILE_BYTES 73728    /* 9 boxes: a 64 x 576 bf16 tile */
#define DINF_MLA_FAST_KEYS_PER_WG 32      /* QK^T: keys [32 w, 32 w + 32) of a block */
#define DINF_MLA_FAST_COLS_PER_WG 256     /* PV: output columns [256 w, 256 w + 256) */
#define DINF_MLA_FAST_SMEM_ALIGN 1024     /* swizzled tiles start 1024-byte aligned */
#define DINF_MLA_FAST_SMEM_LIMIT 232448   /* sm_90 opt-in dynamic shared memory per block */
/* longest mbarrier wait before the kernel traps (a hang fails the launch) */
#define DINF_MLA_FAST_WAIT_NS 4000000000ull
/* named barriers (0 is __syncthreads), each over the 256 consumer threads */
#define DINF_MLA_FAST_BAR_MAX 1           /* both WGs' block row maxima are in sMax */
#define DINF_MLA_FAST_BAR_P 2             /* both halves of P are in sP */
#define DINF_MLA_FAST_BAR_L 3             /* both WGs' row sums are in sL */
/* the seesaw rung's named barriers (see "seesaw" below): WG 0 arrives and
 * WG 1 syncs (A0) or the reverse (A1), 256 threads each; LOCAL + w: the 128
 * threads of WG w (their own shared-memory stores before their wgmma) */
#define DINF_MLA_SEESAW_BAR_A0 4          /* WG 0 -> 1: a0, m0 in sc, P0 stored; block A's QK^T done */
#define DINF_MLA_SEESAW_BAR_A1 5          /* WG 1 -> 0: a1, m1 in sc, P1 stored; block B's QK^T done */
#define DINF_MLA_SEESAW_BAR_LOCAL 6       /* 6 + w: warpgroup w alone */
#define DINF_MLA_SEESAW_P_BOX 8           /* block i's P lives in box 8 (RoPE columns) of its stage */

/* ------------------------------------------------------- shared memory -- */

/*
 * Byte offsets from the 1024-aligned base of the dynamic shared memory:
 *   q       Q tile, 9 swizzled boxes [64 rows][128 B]           73,728
 *   k[s]    K/V stage s (the same layout, 64 tokens)       2 x 73,728
 *   p       P tile, one swizzled box [64 rows][64 keys]          8,192
 *   max     float [2 WGs][64 rows]: block row maxima               512
 *   lsum    float [2 request parities][2 WGs][64 rows]           1,024
 *   bad     int32 [2 stages]: the stage's page (sparse: a slot) was
 *           out of range                                              16
 *   mask    uint8 [2 stages][64 keys]: a skipped sparse slot       128
 *   full[s], empty[s], q_full, q_empty: mbarriers (8 B each)        48
 * bytes = end + 1024 (the launcher's slack for aligning the base).
 */
typedef struct dinf__mla_fast_smem {
    uint32_t q, k0, k1, p, max, lsum, bad, full0, full1, empty0, empty1, q_full, q_empty, end;
    uint32_t bytes;
    uint32_t sc; /* seesaw carve only: float [4][64] alpha0, alpha1, m0, m1 (fast carve: = max) */
    uint32_t mask; /* uint8 [2][64]: key j of stage s is a skipped sparse slot (sparse kernel) */
} dinf__mla_fast_smem;

/* Both carves end alike: after lsum, the bad flags, the mbarriers, the end
 * and the byte count with the alignment slack. */
DINF_HD void dinf__mla_fast_carve_tail(dinf__mla_fast_smem *s) {
    s->bad = s->lsum + 2 * 2 * DINF_MLA_BLOCK_M * 4;
    s->mask = s->bad + 16;
    s->full0 = s->mask + DINF_MLA_FAST_STAGES * DINF_MLA_BLOCK_N;
    s->full1 = s->full0 + 8;
    s->empty0 = s->full1 + 8;
    s->empty1 = s->empty0 + 8;
    s->q_full = s->empty1 + 8;
    s->q_empty = s->q_full + 8;
    s->end = s->q_empty + 8;
    s->bytes = s->end + DINF_MLA_FAST_SMEM_ALIGN;
}

DINF_HD dinf__mla_fast_smem dinf__mla_fast_smem_carve(void) {
    dinf__mla_fast_smem s;
    s.q = 0;
    s.k0 = s.q + DINF_MLA_FAST_TILE_BYTES;
    s.k1 = s.k0 + DINF_MLA_FAST_TILE_BYTES;
    s.p = s.k1 + DINF_MLA_FAST_TILE_BYTES;
    s.max = s.p + DINF_MLA_FAST_BOX_BYTES;
    s.lsum = s.max + 2 * DINF_MLA_BLOCK_M * 4;
    dinf__mla_fast_carve_tail(&s);
    s.sc = s.max;
    return s;
}

/*
 * The seesaw rung's carve (smem plan choice: P in the RoPE box, not Q's RoPE
 * tile in registers). It needs two P tiles per step (P0 of block A for WG 1,
 * P1 of block B for WG 0). Columns 512..575 of a K stage (its box 8) are read
 * by Q K^T only, so once the one warpgroup that computes S_i = Q K_i^T has
 * waited for its wgmma, box 8 of stage i holds P_i (64 rows x 64 keys, the
 * same swizzled box layout as the fast rung's P tile) until both
 * warpgroups release the stage (empty[s] counts all 256 consumer threads,
 * the producer refills it only then). So the fast carve's separate P tile
 * goes and the per-row scalars take its place:
 *   q, k[s]   as the fast carve                                3 x 73,728
 *   sc        float [4][64]: alpha0, alpha1, m0, m1 of the step      1,024
 *   lsum      float [2 request parities][2 WGs][64 rows]            1,024
 *   bad, mask, full[s], empty[s], q_full, q_empty                   192
 * p = max = sc (no P tile of its own). tests/mla/test_mla_fast.c checks the
 * carve and (in the protocol model) that no P_i is written before S_i's read of
 * box 8 or read after the stage's refill.
 */
DINF_HD dinf__mla_fast_smem dinf__mla_seesaw_smem_carve(void) {
    dinf__mla_fast_smem s;
    s.q = 0;
    s.k0 = s.q + DINF_MLA_FAST_TILE_BYTES;
    s.k1 = s.k0 + DINF_MLA_FAST_TILE_BYTES;
    s.sc = s.k1 + DINF_MLA_FAST_TILE_BYTES;
    s.p = s.max = s.sc;
    s.lsum = s.sc + 4 * DINF_MLA_BLOCK_M * 4;
    dinf__mla_fast_carve_tail(&s);
    return s;
}

/* Offset, from the tile base of a stage, of the P tile of the seesaw rung. */
DINF_HD uint32_t dinf__mla_seesaw_p_tile(void) {
    return DINF_MLA_SEESAW_P_BOX * DINF_MLA_FAST_BOX_BYTES;
}

/*
 * The 128-byte swizzle (TMA CU_TENSOR_MAP_SWIZZLE_128B, wgmma layout type 1,
 * CuTe Swizzle<3,4,3>): inside a 1024-byte-aligned box of rows of 128 bytes,
 * the 16-byte chunk c of row r lives at chunk position c ^ (r % 8).
 * Byte offset, from the tile base, of element (row, col) of a tile of
 * 64-column boxes (bf16: box col / 64, chunk (col % 64) / 8, byte 2 (col % 8)).
 */
DINF_HD uint32_t dinf__mla_fast_sw128(uint32_t row, uint32_t col) {
    const uint32_t box = col / DINF_MLA_FAST_BOX_COLS, c = col % DINF_MLA_FAST_BOX_COLS;
    return box * DINF_MLA_FAST_BOX_BYTES + row * 128u + (((c / 8u) ^ (row % 8u)) * 16u) +
           (c % 8u) * 2u;
}

/*
 * wgmma shared-memory matrix descriptors (PTX ISA 9.7.15.5.1, "Matrix
 * Descriptor Format"): bits 0-13 start address >> 4, 16-29 leading byte
 * offset >> 4, 32-45 stride byte offset >> 4, 49-51 base offset (0: every
 * pattern starts 1024-byte aligned), 62-63 layout type (1 = 128-byte swizzle).
 *
 * K-major operand (Q and K for S = Q K^T, P for P V): rows of 128 bytes,
 * 8-row groups 1024 bytes apart (SBO); LBO is unused with the swizzle (1, as
 * CuTe encodes it). A k16 step inside the 64-column box adds 32 bytes to the
 * start address; the next box is + 8192.
 */
DINF_HD uint64_t dinf__mla_fast_desc_k(uint32_t smem_addr) {
    return (uint64_t)((smem_addr & 0x3FFFFu) >> 4) | ((uint64_t)1 << 16) |
           ((uint64_t)(1024u >> 4) << 32) | ((uint64_t)1 << 62);
}

/*
 * MN-major operand (V for P V, a transposed view of the K tile: N = output
 * columns are contiguous inside a row, K = keys are the rows). CuTe's
 * canonical SW128 MN-major layout ((8,n),(8,k)) : ((1,LBO),(8,SBO)) in
 * 16-byte units: 64 columns contiguous, the next 64 columns (the next box)
 * LBO = 8192 bytes away, 8 key rows of 128 bytes then the next 8 rows
 * SBO = 1024 bytes away. A k16 step (16 keys) adds 2048 bytes.
 */
DINF_HD uint64_t dinf__mla_fast_desc_mn(uint32_t smem_addr) {
    return (uint64_t)((smem_addr & 0x3FFFFu) >> 4) |
           ((uint64_t)(DINF_MLA_FAST_BOX_BYTES >> 4) << 16) | ((uint64_t)(1024u >> 4) << 32) |
           ((uint64_t)1 << 62);
}

/* Byte offsets inside a tile of the operands of one wgmma:
 * S = Q K^T k-step ks (0..35): Q at qk_a, the WG's 32 key rows at qk_b;
 * O += P V k-step kk (0..3): P at pv_a (inside the P box), V at pv_b. */
DINF_HD uint32_t dinf__mla_fast_qk_a(int ks) {
    return (uint32_t)(ks / 4) * DINF_MLA_FAST_BOX_BYTES + (uint32_t)(ks % 4) * 32u;
}
DINF_HD uint32_t dinf__mla_fast_qk_b(int ks, int wg) {
    return dinf__mla_fast_qk_a(ks) + (uint32_t)wg * DINF_MLA_FAST_KEYS_PER_WG * 128u;
}
DINF_HD uint32_t dinf__mla_fast_pv_a(int kk) { return (uint32_t)kk * 32u; }
DINF_HD uint32_t dinf__mla_fast_pv_b(int kk, int wg) {
    return (uint32_t)wg * 4u * DINF_MLA_FAST_BOX_BYTES + (uint32_t)kk * 16u * 128u;
}

/*
 * wgmma accumulator fragment (PTX ISA 9.7.15.5.2, "Register Fragments",
 * m64nNk16 with float32 D): thread t of the warpgroup (0..127) holds N / 2
 * values; value v is row 16 (t / 32) + (t % 32) / 4 + 8 ((v / 2) % 2) and
 * column 8 (v / 4) + 2 (t % 4) + v % 2.
 */
DINF_HD int dinf__mla_fast_acc_row(int t, int v) { return 16 * (t / 32) + (t % 32) / 4 + 8 * ((v / 2) % 2); }
DINF_HD int dinf__mla_fast_acc_col(int t, int v) { return 8 * (v / 4) + 2 * (t % 4) + v % 2; }

/* ------------------------------------------------------------ the ring -- */

/*
 * Block it (counted over the CTA's whole piece list, from 0) uses stage
 * it % 2. mbarrier phases (PTX ISA 9.7.13.15.16 try_wait.parity): a barrier
 * starts in phase 0; waiting for parity P passes once the phase of parity P
 * has completed, and a fresh barrier counts as having completed parity 1.
 * Consumers wait full[stage] for parity (it / 2) % 2 (the (it / 2)-th fill);
 * the producer waits empty[stage] for parity ((it / 2) % 2) ^ 1 (passes at
 * once for the first two blocks, then waits for the consumers' release of
 * block it - 2). The Q tile follows the same rule with the request count.
 */
DINF_HD int dinf__mla_fast_stage(int64_t it) { return (int)(it & 1); }
DINF_HD uint32_t dinf__mla_fast_full_parity(int64_t it) { return (uint32_t)((it >> 1) & 1); }
DINF_HD uint32_t dinf__mla_fast_empty_parity(int64_t it) { return (uint32_t)(((it >> 1) & 1) ^ 1); }
DINF_HD uint32_t dinf__mla_fast_q_full_parity(int64_t r) { return (uint32_t)(r & 1); }
DINF_HD uint32_t dinf__mla_fast_q_empty_parity(int64_t r) { return (uint32_t)((r & 1) ^ 1); }

/* Arrival counts: full = 1 (the TMA thread's arrive.expect_tx) for BF16,
 * 128 (every producer thread after its stores) for FP8; empty = 256
 * (every consumer thread after its P V of the stage completed); q_full =
 * 128; q_empty = 256. */
DINF_HD uint32_t dinf__mla_fast_full_count(int kv_fp8) { return kv_fp8 ? 128u : 1u; }

/* Bytes one BF16 stage's TMA boxes complete on full[s] (expect_tx): nine
 * boxes of 64 columns x 64 tokens of bf16. */
DINF_HD uint32_t dinf__mla_fast_stage_tx_bytes(void) {
    return DINF_MLA_FAST_BOXES * DINF_MLA_FAST_BOX_COLS * DINF_MLA_FAST_PAGE * 2u;
}

/* --------------------------------------------------------------- pieces -- */

/*
 * One request's piece inside the CTA's SM part, exactly as the simple rung
 * reads the plan (kernels/mla/mla_decode.cu): block range [blk_begin,
 * blk_end) clamped to the request's blocks, the workspace row (-1: write
 * out/lse), and bad = 1 (NaN for the request, no block read) when the length
 * is negative or beyond the block table or the split row is outside the
 * workspace (a sparse request: a length outside [0, topk]). The producer
 * and the consumers call this with the same values (s_k =
 * dinf__mla_req_keys) and so walk the same blocks.
 */
typedef struct dinf__mla_piece {
    int32_t s_k, blk_begin, blk_end, bad;
    int32_t dest;      /* 0: out/lse, 1: workspace row split_row, -1: nothing (a bad split row) */
    int64_t split_row;
} dinf__mla_piece;

/* The CTA's request range [*first, *last] of part meta (empty: *first > *last). */
DINF_HD void dinf__mla_fast_requests(const dinf__mla_params *p, const int32_t *meta,
                                     int32_t *first, int32_t *last) {
    const int32_t begin_req = meta[DINF_MLA_META_BEGIN_REQ];
    int32_t end_req = meta[DINF_MLA_META_END_REQ];
    if (begin_req < 0 || begin_req >= p->batch) {
        *first = 0;
        *last = -1;
        return;
    }
    if (end_req >= p->batch)
        end_req = (int32_t)(p->batch - 1);
    *first = begin_req;
    *last = end_req;
}

/* (sparse: p->sparse_s_q > 0, see dinf__mla_req_keys_in) */
DINF_HD dinf__mla_piece dinf__mla_fast_piece_in(const dinf__mla_params *p, int sparse,
                                                const int32_t *meta, int32_t req, int32_t s_k,
                                                int32_t begin_req, int32_t end_req) {
    dinf__mla_piece pc;
    const int32_t nblk = dinf__mla_num_blocks(s_k);
    const int first = req == begin_req, last = req == end_req;
    int32_t b0 = first ? meta[DINF_MLA_META_BEGIN_BLOCK] : 0;
    int32_t b1 = last ? meta[DINF_MLA_META_END_BLOCK] : nblk;
    b0 = b0 < 0 ? 0 : b0;
    b1 = b1 > nblk ? nblk : b1;
    const int split = (first && meta[DINF_MLA_META_FIRST_SPLIT]) ||
                      (last && meta[DINF_MLA_META_LAST_SPLIT]);
    const int64_t max_rows = (p->batch + p->parts) * (int64_t)p->h_kv * p->q_rows;
    pc.split_row = split ? (int64_t)p->num_splits[req] + (first ? meta[DINF_MLA_META_BEGIN_SPLIT] : 0)
                         : -1;
    const int row_bad =
        split && (pc.split_row < 0 || (pc.split_row + 1) * p->h_kv * p->q_rows > max_rows);
    pc.s_k = s_k;
    pc.bad = dinf__mla_req_keys_bad_in(p, req, s_k, sparse) || row_bad;
    pc.dest = !split ? 0 : row_bad ? -1 : 1;
    pc.blk_begin = b0;
    pc.blk_end = pc.bad || b1 < b0 ? b0 : b1;
    return pc;
}
DINF_HD dinf__mla_piece dinf__mla_fast_piece(const dinf__mla_params *p, const int32_t *meta,
                                             int32_t req, int32_t s_k, int32_t begin_req,
                                             int32_t end_req) {
    return dinf__mla_fast_piece_in(p, p->sparse_s_q > 0, meta, req, s_k, begin_req, end_req);
}

/* Keys of block blk that exist (< s_k): rows at or past this are zeroed in V. */
DINF_HD int32_t dinf__mla_fast_block_keys(int32_t s_k, int32_t blk) {
    const int32_t n = s_k - blk * DINF_MLA_BLOCK_N;
    return n < DINF_MLA_BLOCK_N ? (n > 0 ? n : 0) : DINF_MLA_BLOCK_N;
}

/* -------------------------------------------------- FP8 L2 prefetch -- */

/*
 * The FP8 producer's L2 prefetch. BF16 pages come in as nine TMA boxes per
 * stage, all in flight at once; the FP8 producer loads its pages with
 * 16-byte register loads, DINF_MLA_FAST_FP8_BATCH (fast rung) or
 * DINF_MLA_SEESAW_FP8_BATCH (seesaw rung, 56 registers) per thread in flight,
 * 20 KiB or 8 KiB per SM, in serialized batches: below the ~25 KiB per SM
 * that Little's law asks of HBM (4.8 TB/s x ~0.7 us / 132 SMs). So before it
 * waits for a stage, the producer asks the copy engine to bring a later
 * block's page into L2 (cp.async.bulk.prefetch.L2.global: no register, no
 * shared memory, no completion to wait for), and its register loads of that
 * page hit L2 when its turn comes.
 *
 * How far: `ahead` blocks of the CTA's own ring order (the order the
 * producer fills and the consumers drain: the pieces of requests c.first ..
 * c.last, block by block, across request boundaries); the first fill of a
 * CTA also prefetches blocks 0 .. ahead (its own page included, so its
 * first page's bytes are all requested at once). Runtime: the params'
 * fp8_prefetch, from DINF_MLA_FP8_PREFETCH (default DINF_MLA_FP8_PREFETCH_DEFAULT, 0 = off,
 * at most DINF_MLA_FP8_PREFETCH_MAX). A page takes 64 x 656 = 41 KiB, about
 * 1.2 us of one SM's HBM share, so 2 blocks ahead is about 2.4 us ahead,
 * past the HBM latency, with up to 3 pages (123 KiB) per SM requested;
 * 132 SMs x (8 + 1) pages = 50 MB is the whole L2 of an H200, hence the bound.
 *
 * Sparse decode: no page to fetch whole; producer threads 0..63 each ask
 * for the 656-byte entry of one listed slot of the block ahead
 * (prefetch_fp8_sparse_row in the kernel), skipped and out-of-range slots
 * not. Dense:
 * Who: producer thread 0, for a page in [0, num_blocks) (a bad page is
 * not read: its stage reads page 0 and is flagged bad), the rows below the
 * block's key count, of the CTA's KV head (dinf__mla_fp8_prefetch_ranges):
 * one range when those rows are contiguous (h_kv = 1, unpadded: the usual
 * MLA cache), else one 656-byte range per row (a range over whole tokens
 * would fetch the other heads' entries too, which other CTAs read). One
 * thread: the instruction (SASS UBLKPF) takes its operands from uniform
 * registers, so per-lane addresses would be issued one lane at a time
 * anyway. Exactly the bytes the producer will load, never a byte outside
 * the cache.
 */
#define DINF_MLA_FP8_PREFETCH_DEFAULT 2 /* blocks ahead when DINF_MLA_FP8_PREFETCH is unset */
#define DINF_MLA_FP8_PREFETCH_MAX 8     /* (8 + 1) pages x 132 SMs: the whole 50 MB L2 */
#define DINF_MLA_FP8_PREFETCH_HOPS 8    /* requests the walk may step to (empties included) */

/*
 * The block `ahead` (>= 0) blocks after block blk in the CTA's ring order:
 * blk is a block of request req's piece, which ends at blk_end, with s_k
 * keys; first, last the CTA's request range (dinf__mla_fast_requests) and
 * meta its part of the plan. Returns 1 with *req_out, *blk_out and *keys
 * (the block's key count, 1..64) set, or 0 when the CTA's work ends before.
 * Empty pieces (zero or bad lengths, bad split rows) hold no block: the walk
 * passes them, as the producer does, but steps to at most
 * DINF_MLA_FP8_PREFETCH_HOPS later requests (returning 0 past them: a
 * prefetch is only a hint): each step is a dependent load by the one
 * prefetching thread, and a batch padded with empty requests (CUDA-graph
 * engines pad to the graph's size) would otherwise be walked again by each
 * of the last fills before it.
 */
DINF_HD int dinf__mla_fast_block_ahead_in(const dinf__mla_params *p, int sparse,
                                          const int32_t *meta, int32_t first, int32_t last,
                                          int32_t req, int32_t blk, int32_t blk_end, int32_t s_k,
                                          int32_t ahead, int32_t *req_out, int32_t *blk_out,
                                          int32_t *keys) {
    int32_t b = blk + ahead; /* blk < 2^31 / 64 and ahead <= 8: no overflow */
    int32_t hops = 0;
    while (b >= blk_end) {
        if (req >= last || ++hops > DINF_MLA_FP8_PREFETCH_HOPS)
            return 0;
        req++;
        const dinf__mla_piece pc = dinf__mla_fast_piece_in(
            p, sparse, meta, req, dinf__mla_req_keys_in(p, req, sparse), first, last);
        b = pc.blk_begin + (b - blk_end);
        blk_end = pc.blk_end;
        s_k = pc.s_k;
    }
    *req_out = req;
    *blk_out = b;
    *keys = dinf__mla_fast_block_keys(s_k, b);
    return 1;
}
DINF_HD int dinf__mla_fast_block_ahead(const dinf__mla_params *p, const int32_t *meta,
                                       int32_t first, int32_t last, int32_t req, int32_t blk,
                                       int32_t blk_end, int32_t s_k, int32_t ahead,
                                       int32_t *req_out, int32_t *blk_out, int32_t *keys) {
    return dinf__mla_fast_block_ahead_in(p, p->sparse_s_q > 0, meta, first, last, req, blk,
                                         blk_end, s_k, ahead, req_out, blk_out, keys);
}

/*
 * The prefetches of the first `keys` rows of FP8 page `page`, KV head hk:
 * `count` ranges of `bytes` bytes, range i at byte offset first + i * step
 * from k_cache. Rows of one head are contiguous when kv_token_stride is
 * one entry (h_kv = 1, no padding: the usual MLA cache): one range of
 * keys x 656 bytes; else one 656-byte range per row. Exactly the bytes
 * load_fp8_page reads (entry (page, row, hk) at page * kv_block_stride +
 * row * kv_token_stride + hk * 656); 16-byte aligned offsets and sizes, as
 * the bulk prefetch asks (k_cache, the strides and 656 are multiples of 16).
 */
typedef struct dinf__mla_fp8_prefetch {
    int64_t first, step;
    uint32_t bytes;
    int32_t count;
} dinf__mla_fp8_prefetch;

DINF_HD dinf__mla_fp8_prefetch dinf__mla_fp8_prefetch_ranges(const dinf__mla_params *p,
                                                             int32_t page, int32_t keys,
                                                             int32_t hk) {
    dinf__mla_fp8_prefetch r;
    r.first = (int64_t)page * p->kv_block_stride + (int64_t)hk * DINF_MLA_FP8_ENTRY_BYTES;
    const int contiguous = p->kv_token_stride == DINF_MLA_FP8_ENTRY_BYTES;
    r.step = p->kv_token_stride;
    r.bytes = (uint32_t)(contiguous ? keys : 1) * DINF_MLA_FP8_ENTRY_BYTES;
    r.count = contiguous ? 1 : keys;
    return r;
}

/* ------------------------------------------------------------- softmax -- */

/*
 * One block of the online softmax for one row (base 2, scores already
 * scaled by softmax_scale * log2 e, masked scores -inf), split over the two
 * consumer WGs: both see the same block maximum (max of the two halves'
 * maxima), so both compute the same new running max and rescaling factor;
 * each WG rescales its own row-sum partial and output columns by alpha and
 * adds its own keys' probabilities. The simple rung's arithmetic: alpha = 0
 * from an empty (-inf) running max, p = 0 for a masked score.
 */
DINF_HD float dinf__mla_fast_max_update(float m_old, float block_max, float *alpha) {
    const float m_new = fmaxf(m_old, block_max);
    *alpha = m_old == -INFINITY ? 0.0f : exp2f(m_old - m_new);
    return m_new;
}
DINF_HD float dinf__mla_fast_prob(float s, float m_new) {
    return s == -INFINITY ? 0.0f : exp2f(s - m_new);
}

/*
 * The end of a piece for one row: l = l_wg0 + l_wg1, then (as the simple
 * rung) inv = 1 / l for a partial and out_inv = dinf__mla_out_inv (1 / l
 * without a sink, sink2 = -inf) for an unsplit request's out (0 without
 * keys, NaN when bad), the natural-log lse of an unsplit request
 * ((log2 l + m) ln 2, +inf without keys) and the base-2 lse of a partial
 * (log2 l + m, -inf without keys); NaN when bad.
 */
typedef struct dinf__mla_row_end {
    float inv, out_inv, lse, lse2;
} dinf__mla_row_end;

DINF_HD dinf__mla_row_end dinf__mla_fast_row_end(float l, float m, int bad, float sink2) {
    dinf__mla_row_end e;
    const float ln2 = 0.69314718055994530942f;
    e.inv = bad ? NAN : (l > 0.0f ? 1.0f / l : 0.0f);
    e.out_inv = bad ? NAN : dinf__mla_out_inv(l, m, sink2);
    e.lse = bad ? NAN : (l > 0.0f ? (log2f(l) + m) * ln2 : INFINITY);
    e.lse2 = bad ? NAN : (l > 0.0f ? log2f(l) + m : -INFINITY);
    return e;
}

/* -------------------------------------------------------------- seesaw -- */

/*
 * The seesaw rung (FlashMLA's schedule, reference 3.1) on the fast rung's
 * producer, ring, plan and epilogue. A request's piece [blk_begin, blk_end)
 * is walked in steps of two blocks: step k takes block A = blk_begin + 2k
 * (ring index it, stage it % 2) and, when it exists, block B = A + 1 (it + 1,
 * the other stage); the last step of a piece with an odd block count has A
 * only. The ring index keeps counting over the CTA's pieces, so a step's A
 * may sit in stage 1. Both warpgroups hold the running max m, WG 0 the
 * output columns 0..255 (O_L) and WG 1 256..511 (O_R), each a row-sum partial.
 *   WG 0: S0 = Q K_A^T (wgmma m64n64k16, all 64 keys); m0 = max(m, rowmax S0),
 *         a0 = 2^(m - m0), P0 = 2^(S0 - m0); l_L = a0 l_L + sum P0;
 *         O_L = a0 O_L + P0 V_A[:, L]; publishes a0, m0 and P0 (BAR_A0); after
 *         BAR_A1: O_L *= a1, l_L *= a1, O_L += P1 V_B[:, L].
 *   WG 1: S1 = Q K_B^T (while WG 0 does its softmax); after BAR_A0:
 *         O_R = a0 O_R + P0 V_A[:, R] (issued, and while it runs:) m1 = max(m0,
 *         rowmax S1), a1 = 2^(m0 - m1), P1 = 2^(S1 - m1), publishes a1, m1 and
 *         P1 (BAR_A1); then O_R *= a1, l_R = a1 a0 l_R + sum P1,
 *         O_R += P1 V_B[:, R].
 * Without B, WG 1 takes rowmax S1 = -inf (m1 = m0, a1 = 1, or 0 when m0 = -inf)
 * and skips everything of B. After a step both WGs hold m = m1 and
 * O = a1 (a0 O_old + P0 V_A) + P1 V_B at the scale of m1: per block exactly
 * the online softmax of the simple and fast rungs (each P rounded to bf16 at
 * its own block's running max, the rescaling in fp32). FlashMLA's order
 * (reference 3.1: WG 1 first P1 V_B, then the cross term with a1 P0 rounded
 * to bf16 again) measured cos_diff 5.2e-6..7.6e-6 against the oracle in
 * tools/mla-emu, over upstream's 5e-6 tolerance; WG 1's cross term first
 * keeps the rounding of the other rungs, needs no second store of P0 nor a
 * third barrier, and still overlaps WG 1's softmax with P V on the tensor cores.
 *
 * The protocol, as the ordered operations each warpgroup performs per step
 * (dinf__mla_seesaw_ops; the kernel follows these lists in this order, and
 * tests/mla/test_mla_fast.c runs them against the producer under random
 * interleavings, with planted bugs):
 *   WAIT_X     wait full[stage of X] (and read the stage's bad flag)
 *   QK_X       issue S = Q K_X^T (reads Q and boxes 0..8 of X's stage)
 *   PV_X       issue O_w += P_X V_X[:, w] (reads box 8 and this WG's 4 V boxes)
 *   MMA_WAIT   wgmma.wait_group 0: this WG's issued wgmma have read their operands
 *   PUT_SC0/1, GET_SC0/1  write / read the step's (a0, m0) / (a1, m1) rows
 *   ZERO_X     V rows of X past the request's length set to 0 (this WG's boxes)
 *   PUT_P_X    P (bf16) of X into box 8 of X's stage
 *   ARRIVE_/SYNC_A0, A1   the named barriers above (bar.arrive / bar.sync)
 *   LOCAL      the WG's own barrier after its stores, before its wgmma reads them
 *   RELEASE_X  arrive on empty[stage of X] (the WG will not touch X again)
 * Every thread of a WG performs its WG's list; each shared-memory store is
 * followed by fence.proxy.async before the barrier that publishes it.
 */
enum {
    DINF__SS_WAIT_A, DINF__SS_WAIT_B, DINF__SS_QK_A, DINF__SS_QK_B, DINF__SS_PV_A, DINF__SS_PV_B,
    DINF__SS_MMA_WAIT, DINF__SS_PUT_SC0, DINF__SS_GET_SC0, DINF__SS_PUT_SC1, DINF__SS_GET_SC1,
    DINF__SS_ZERO_A, DINF__SS_ZERO_B, DINF__SS_PUT_P_A, DINF__SS_PUT_P_B,
    DINF__SS_ARRIVE_A0, DINF__SS_SYNC_A0, DINF__SS_ARRIVE_A1, DINF__SS_SYNC_A1,
    DINF__SS_LOCAL, DINF__SS_RELEASE_A, DINF__SS_RELEASE_B,
    DINF__SS_NUM_OPS
};
#define DINF_MLA_SEESAW_MAX_OPS 24

/* The operations of warpgroup wg (0 or 1) in a step with (has_b = 1) or
 * without block B, in order, into ops (DINF_MLA_SEESAW_MAX_OPS entries);
 * returns their count. WG 0's list without B is its first 13 operations. */
DINF_HD int dinf__mla_seesaw_ops(int wg, int has_b, uint8_t *ops) {
    static const uint8_t wg0[] = {
        DINF__SS_WAIT_A, DINF__SS_QK_A, DINF__SS_MMA_WAIT, DINF__SS_PUT_SC0, DINF__SS_ZERO_A,
        DINF__SS_PUT_P_A, DINF__SS_ARRIVE_A0, DINF__SS_LOCAL, DINF__SS_PV_A, DINF__SS_SYNC_A1,
        DINF__SS_GET_SC1, DINF__SS_MMA_WAIT, DINF__SS_RELEASE_A,
        /* with B: */
        DINF__SS_WAIT_B, DINF__SS_ZERO_B, DINF__SS_LOCAL, DINF__SS_PV_B, DINF__SS_MMA_WAIT,
        DINF__SS_RELEASE_B};
    static const uint8_t wg1_ab[] = {
        DINF__SS_WAIT_B, DINF__SS_QK_B, DINF__SS_MMA_WAIT, DINF__SS_SYNC_A0, DINF__SS_GET_SC0,
        DINF__SS_WAIT_A, DINF__SS_ZERO_A, DINF__SS_LOCAL, DINF__SS_PV_A, DINF__SS_PUT_SC1,
        DINF__SS_ZERO_B, DINF__SS_PUT_P_B, DINF__SS_ARRIVE_A1, DINF__SS_MMA_WAIT,
        DINF__SS_RELEASE_A, DINF__SS_LOCAL, DINF__SS_PV_B, DINF__SS_MMA_WAIT, DINF__SS_RELEASE_B};
    static const uint8_t wg1_a[] = {
        DINF__SS_SYNC_A0, DINF__SS_GET_SC0, DINF__SS_WAIT_A, DINF__SS_ZERO_A, DINF__SS_LOCAL,
        DINF__SS_PV_A, DINF__SS_PUT_SC1, DINF__SS_ARRIVE_A1, DINF__SS_MMA_WAIT,
        DINF__SS_RELEASE_A};
    const uint8_t *src = wg == 0 ? wg0 : (has_b ? wg1_ab : wg1_a);
    const int n = wg == 0 ? (has_b ? (int)sizeof wg0 : 13)
                          : (has_b ? (int)sizeof wg1_ab : (int)sizeof wg1_a);
    for (int i = 0; i < n; i++)
        ops[i] = src[i];
    return n;
}

/* Steps of a piece of nblk blocks, and whether step k has a block B. */
DINF_HD int32_t dinf__mla_seesaw_steps(int32_t nblk) { return nblk > 0 ? (nblk + 1) / 2 : 0; }
DINF_HD int dinf__mla_seesaw_has_b(int32_t nblk, int32_t k) { return 2 * k + 1 < nblk; }

/* --------------------------------------------------------- selection -- */

#if !defined(__CUDACC__)
#include <stdio.h>
#include <string.h>

enum { DINF__MLA_RUNG_SIMPLE = 0, DINF__MLA_RUNG_FAST = 1, DINF__MLA_RUNG_SEESAW = 2 };

/*
 * Why the fast rung cannot take a decode (NULL: it can). Its constraints:
 * a sparse decode only with the FP8 cache (its producer gathers the
 * listed entries with 16-byte loads: any page size), else
 * page_block_size 64 (one TMA box row range and one FP8 block per page),
 * and for the BF16 cache the tensor map over the paged cache (4-D: 576
 * dims, 64 tokens, h_kv heads, num_blocks pages; strides kv_token_stride,
 * 576 and kv_block_stride elements): a 16-byte-aligned base and strides
 * (already required of every call), byte strides below 2^40 and dimensions
 * that fit in 32 bits (num_blocks below 2^31: the block table is int32).
 */
static inline const char *dinf__mla_fast_unsupported(int kv_fp8, int32_t page,
                                                     int64_t kv_block_stride,
                                                     int64_t kv_token_stride, int64_t num_blocks,
                                                     int32_t h_kv, int sparse, char *buf,
                                                     size_t n) {
    if (sparse) { /* per-token gathers: any page size, no tensor map */
        if (kv_fp8)
            return NULL;
        snprintf(buf, n, "a sparse decode on the fast rung needs the FP8 cache (a BF16 sparse "
                         "decode runs on the simple rung)");
        return buf;
    }
    if (page != DINF_MLA_FAST_PAGE) {
        snprintf(buf, n, "page_block_size=%d (the fast rung takes 64-token pages only)", (int)page);
        return buf;
    }
    if (kv_fp8)
        return NULL;
    const int64_t limit = (int64_t)1 << 40;
    if (kv_block_stride >= limit / 2 || kv_token_stride >= limit / 2) {
        snprintf(buf, n,
                 "kv_block_stride=%lld / kv_token_stride=%lld elements reach 2^40 bytes (the "
                 "TMA tensor map's stride limit)",
                 (long long)kv_block_stride, (long long)kv_token_stride);
        return buf;
    }
    if (num_blocks > 2147483647LL || h_kv > 65535) {
        snprintf(buf, n, "num_blocks=%lld or num_heads_kv=%d exceeds the TMA tensor map's range",
                 (long long)num_blocks, (int)h_kv);
        return buf;
    }
    return NULL;
}

/*
 * The FP8 L2 prefetch distance of a GPU decode from DINF_MLA_FP8_PREFETCH
 * (env: NULL or "" = DINF_MLA_FP8_PREFETCH_DEFAULT; else a decimal block
 * count 0 .. DINF_MLA_FP8_PREFETCH_MAX, 0 = off, digits only). Returns 0 with
 * *blocks set, or -1 with msg saying why the value is not one.
 */
static inline int dinf__mla_fp8_prefetch_choice(const char *env, int32_t *blocks, char *msg,
                                                size_t n) {
    if (!env || !*env) {
        *blocks = DINF_MLA_FP8_PREFETCH_DEFAULT;
        return 0;
    }
    int32_t v = 0;
    const char *c = env;
    for (; *c >= '0' && *c <= '9' && v <= DINF_MLA_FP8_PREFETCH_MAX; c++)
        v = 10 * v + (*c - '0');
    if (*c || v > DINF_MLA_FP8_PREFETCH_MAX) {
        snprintf(msg, n,
                 "DINF_MLA_FP8_PREFETCH='%.40s' is not a block count in [0, %d] (0 = no L2 "
                 "prefetch; unset = %d)",
                 env, DINF_MLA_FP8_PREFETCH_MAX, DINF_MLA_FP8_PREFETCH_DEFAULT);
        return -1;
    }
    *blocks = v;
    return 0;
}

/*
 * The rung of a GPU decode from DINF_MLA_KERNEL (env: NULL or "" = auto,
 * "simple", "fast", "seesaw") and the fast rungs' constraints (the seesaw
 * rung has the fast rung's: same producer, pages and tensor map). auto is
 * the fast rung where it can take the decode, else simple. Returns 0 with
 * *rung set; -1 for an unknown value (msg says so); -2 when "fast" or
 * "seesaw" is forced on a decode it cannot take (msg says why).
 */
static inline int dinf__mla_choose_rung(const char *env, int kv_fp8, int32_t page,
                                        int64_t kv_block_stride, int64_t kv_token_stride,
                                        int64_t num_blocks, int32_t h_kv, int sparse, int *rung,
                                        char *msg, size_t n) {
    char why[160];
    const char *no = dinf__mla_fast_unsupported(kv_fp8, page, kv_block_stride, kv_token_stride,
                                                num_blocks, h_kv, sparse, why, sizeof why);
    if (!env || !*env || !strcmp(env, "auto")) {
        *rung = no ? DINF__MLA_RUNG_SIMPLE : DINF__MLA_RUNG_FAST;
        return 0;
    }
    if (!strcmp(env, "simple")) {
        *rung = DINF__MLA_RUNG_SIMPLE;
        return 0;
    }
    if (!strcmp(env, "seesaw") && sparse) {
        snprintf(msg, n, "DINF_MLA_KERNEL=seesaw, but the seesaw rung takes dense decodes only "
                         "(a sparse decode runs on the fast rung with the FP8 cache, else simple)");
        return -2;
    }
    if (!strcmp(env, "fast") || !strcmp(env, "seesaw")) {
        if (no) {
            snprintf(msg, n, "DINF_MLA_KERNEL=%s, but the %s rung cannot take this decode: %s",
                     env, env, no);
            return -2;
        }
        *rung = !strcmp(env, "fast") ? DINF__MLA_RUNG_FAST : DINF__MLA_RUNG_SEESAW;
        return 0;
    }
    snprintf(msg, n, "DINF_MLA_KERNEL='%.40s' is not one of simple, fast, seesaw, auto", env);
    return -1;
}
#endif

#endif
