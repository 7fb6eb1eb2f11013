/*
 * The fast MLA rung's host-device logic (lib/mla/mla_fast_hd.h) on the CPU:
 * the shared-memory carve, the 128-byte swizzle against CuTe's
 * Swizzle<3,4,3> on addresses, the wgmma descriptors interpreted with the
 * canonical SW128 layouts (every operand element of every wgmma the kernel
 * issues lands on the element the algorithm means), the accumulator
 * fragments, the mbarrier ring under random interleavings of a producer and
 * two consumers, the pieces of the plan against the CPU path's reading of
 * it, the two-warpgroup online softmax against a float64 softmax, the row
 * ends, and the rung selection.
 */
#include <deepinfra.h>

#include "core/numeric_hd.h"
#include "mla/mla_fast_hd.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- carve -- */

Test(mla_fast_hd, shared_memory_carve) {
    const dinf__mla_fast_smem s = dinf__mla_fast_smem_carve();
    const uint32_t tiles[4] = {s.q, s.k0, s.k1, s.p};
    for (int i = 0; i < 4; i++)
        cr_assert_eq(tiles[i] % 1024, 0u, "tile %d at %u is not 1024-byte aligned", i, tiles[i]);
    cr_assert_eq(s.k0 - s.q, (uint32_t)DINF_MLA_FAST_TILE_BYTES);
    cr_assert_eq(s.k1 - s.k0, (uint32_t)DINF_MLA_FAST_TILE_BYTES);
    cr_assert_eq(s.p - s.k1, (uint32_t)DINF_MLA_FAST_TILE_BYTES);
    cr_assert_eq(s.max - s.p, (uint32_t)DINF_MLA_FAST_BOX_BYTES);
    cr_assert_eq(s.lsum - s.max, 2u * 64 * 4);
    cr_assert_eq(s.bad - s.lsum, 2u * 2 * 64 * 4);
    cr_assert_geq(s.full0 - s.bad, 2u * 4);
    const uint32_t bars[6] = {s.full0, s.full1, s.empty0, s.empty1, s.q_full, s.q_empty};
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(bars[i] % 8, 0u, "mbarrier %d at %u", i, bars[i]);
        if (i)
            cr_assert_eq(bars[i], bars[i - 1] + 8);
    }
    cr_assert_eq(s.end, s.q_empty + 8);
    cr_assert_eq(s.bytes, s.end + 1024u, "the launcher's slack for aligning the base");
    cr_assert_leq(s.bytes, (uint32_t)DINF_MLA_FAST_SMEM_LIMIT, "%u bytes exceed the sm_90 limit", s.bytes);
    cr_assert_eq(DINF_MLA_FAST_TILE_BYTES, DINF_MLA_FAST_BOXES * DINF_MLA_FAST_BOX_BYTES);
    cr_assert_eq(DINF_MLA_FAST_BOXES * DINF_MLA_FAST_BOX_COLS, DINF_MLA_HEAD_DIM_QK);
    cr_assert_eq(dinf__mla_fast_stage_tx_bytes(), (uint32_t)DINF_MLA_FAST_TILE_BYTES,
                 "one stage's TMA bytes are one tile");
    cr_assert_eq(DINF_MLA_FAST_PRODUCER_REGS * 128 + DINF_MLA_FAST_CONSUMER_REGS * 256 <= 65536, 1,
                 "setmaxnreg allotments exceed the register file");
    /* at launch every thread holds the __launch_bounds__(384, 1) cap: 65536 / 384 rounded down to 8 */
    cr_assert_eq((DINF_MLA_FAST_CONSUMER_REGS - 168) * 256, (168 - DINF_MLA_FAST_PRODUCER_REGS) * 128,
                 "the producer frees what the consumers take");
    cr_assert_eq(DINF_MLA_FAST_CONSUMER_REGS % 8 + DINF_MLA_FAST_PRODUCER_REGS % 8, 0);
}

/* -------------------------------------------------------------- swizzle -- */

/* CuTe Swizzle<3,4,3> on a byte address: bits [4,7) ^= bits [7,10). */
static uint32_t swz(uint32_t a) { return a ^ (((a >> 7) & 7u) << 4); }

Test(mla_fast_hd, sw128_is_the_tma_swizzle_and_a_bijection) {
    static unsigned char seen[DINF_MLA_FAST_TILE_BYTES];
    memset(seen, 0, sizeof seen);
    for (uint32_t row = 0; row < 64; row++)
        for (uint32_t col = 0; col < 576; col++) {
            const uint32_t off = dinf__mla_fast_sw128(row, col);
            const uint32_t box = col / 64;
            cr_assert_eq(off, box * 8192 + swz(row * 128 + (col % 64) * 2),
                         "row %u col %u: %u", row, col, off);
            cr_assert_lt(off + 1, (uint32_t)DINF_MLA_FAST_TILE_BYTES);
            cr_assert_eq(off % 2, 0u);
            cr_assert_eq(seen[off] + seen[off + 1], 0, "row %u col %u overlaps", row, col);
            seen[off] = seen[off + 1] = 1;
            /* 16-byte chunks stay whole: 8 consecutive columns are 16 contiguous bytes */
            if (col % 8)
                cr_assert_eq(off, dinf__mla_fast_sw128(row, col - col % 8) + 2 * (col % 8));
        }
    for (uint32_t i = 0; i < DINF_MLA_FAST_TILE_BYTES; i++)
        cr_assert_eq(seen[i], 1, "byte %u never written", i);
}

/* ----------------------------------------------------------- descriptors -- */

typedef struct desc_fields {
    uint32_t start, lbo, sbo, base_offset, layout;
} desc_fields;

static desc_fields decode_desc(uint64_t d) {
    desc_fields f;
    f.start = (uint32_t)(d & 0x3FFFu) << 4;
    f.lbo = (uint32_t)((d >> 16) & 0x3FFFu) << 4;
    f.sbo = (uint32_t)((d >> 32) & 0x3FFFu) << 4;
    f.base_offset = (uint32_t)((d >> 49) & 7u);
    f.layout = (uint32_t)(d >> 62);
    cr_assert_eq(d & ((3ull << 14) | (3ull << 30) | (7ull << 46) | (0x3FFull << 52)), 0ull,
                 "reserved descriptor bits set: %llx", (unsigned long long)d);
    return f;
}

/* The shared address wgmma reads for element (mn, k) of a k16 slice, with
 * the canonical 128-byte-swizzled layouts (CuTe make_gmma_desc, units of
 * 16 bytes): K-major ((8,m),2):((8,SBO),1) — row mn at (mn / 8) SBO +
 * (mn % 8) 128, k contiguous; MN-major ((8,n),(8,k)):((1,LBO),(8,SBO)) —
 * 64 mn contiguous, next 64 at LBO, k rows of 128 bytes, next 8 at SBO;
 * then the swizzle on the address. */
static uint32_t wgmma_addr_k(const desc_fields *f, uint32_t mn, uint32_t k) {
    return swz(f->start + (mn / 8) * f->sbo + (mn % 8) * 128 + k * 2);
}
static uint32_t wgmma_addr_mn(const desc_fields *f, uint32_t mn, uint32_t k) {
    return swz(f->start + (mn / 64) * f->lbo + (k / 8) * f->sbo + (k % 8) * 128 + (mn % 64) * 2);
}

Test(mla_fast_hd, descriptor_fields) {
    const desc_fields k = decode_desc(dinf__mla_fast_desc_k(0x12340u));
    cr_assert_eq(k.start, 0x12340u);
    cr_assert_eq(k.lbo, 16u);
    cr_assert_eq(k.sbo, 1024u);
    cr_assert_eq(k.base_offset, 0u);
    cr_assert_eq(k.layout, 1u, "128-byte swizzle");
    const desc_fields mn = decode_desc(dinf__mla_fast_desc_mn(0x2000u));
    cr_assert_eq(mn.start, 0x2000u);
    cr_assert_eq(mn.lbo, 8192u);
    cr_assert_eq(mn.sbo, 1024u);
    cr_assert_eq(mn.layout, 1u);
    /* the start field holds 14 bits of address >> 4: shared addresses below 256 KiB */
    cr_assert_eq(decode_desc(dinf__mla_fast_desc_k(0x3FFF0u)).start, 0x3FFF0u);
}

/*
 * Every operand element of every wgmma of the kernel, for tiles at a
 * 1024-aligned shared base: S = Q K^T step ks reads Q[row][16 ks + k] and
 * K[32 w + n][16 ks + k]; O += P V step kk reads P[row][16 kk + k] and
 * V[16 kk + k][256 w + n] (the K tile's row 16 kk + k, column 256 w + n).
 */
Test(mla_fast_hd, every_wgmma_reads_the_intended_elements) {
    const dinf__mla_fast_smem s = dinf__mla_fast_smem_carve();
    const uint32_t base = 0x400; /* a 1024-aligned shared window address */
    for (int w = 0; w < 2; w++) {
        for (int ks = 0; ks < 36; ks++) {
            const desc_fields a = decode_desc(dinf__mla_fast_desc_k(base + s.q + dinf__mla_fast_qk_a(ks)));
            const desc_fields b = decode_desc(dinf__mla_fast_desc_k(base + s.k1 + dinf__mla_fast_qk_b(ks, w)));
            for (uint32_t k = 0; k < 16; k++) {
                for (uint32_t row = 0; row < 64; row++)
                    cr_assert_eq(wgmma_addr_k(&a, row, k), base + s.q + dinf__mla_fast_sw128(row, 16 * ks + k),
                                 "QK A ks=%d row %u k %u", ks, row, k);
                for (uint32_t n = 0; n < 32; n++)
                    cr_assert_eq(wgmma_addr_k(&b, n, k),
                                 base + s.k1 + dinf__mla_fast_sw128(32 * w + n, 16 * ks + k),
                                 "QK B wg %d ks=%d n %u k %u", w, ks, n, k);
            }
        }
        for (int kk = 0; kk < 4; kk++) {
            const desc_fields a = decode_desc(dinf__mla_fast_desc_k(base + s.p + dinf__mla_fast_pv_a(kk)));
            const desc_fields b = decode_desc(dinf__mla_fast_desc_mn(base + s.k0 + dinf__mla_fast_pv_b(kk, w)));
            for (uint32_t k = 0; k < 16; k++) {
                for (uint32_t row = 0; row < 64; row++)
                    cr_assert_eq(wgmma_addr_k(&a, row, k), base + s.p + dinf__mla_fast_sw128(row, 16 * kk + k),
                                 "PV A kk=%d row %u k %u", kk, row, k);
                for (uint32_t n = 0; n < 256; n++)
                    cr_assert_eq(wgmma_addr_mn(&b, n, k),
                                 base + s.k0 + dinf__mla_fast_sw128(16 * kk + k, 256 * w + n),
                                 "PV B wg %d kk=%d n %u k %u", w, kk, n, k);
            }
        }
    }
}

/* ------------------------------------------------------------- fragments -- */

static void check_fragment(int n_cols) {
    char *seen = calloc((size_t)(64 * n_cols), 1);
    for (int t = 0; t < 128; t++)
        for (int v = 0; v < n_cols / 2; v++) {
            const int row = dinf__mla_fast_acc_row(t, v), col = dinf__mla_fast_acc_col(t, v);
            cr_assert(row >= 0 && row < 64 && col >= 0 && col < n_cols, "t %d v %d: (%d, %d)", t, v, row, col);
            cr_assert_eq(seen[row * n_cols + col], 0, "N=%d: (%d, %d) twice", n_cols, row, col);
            seen[row * n_cols + col] = 1;
            /* pairs (v, v + 1), v even: one row, adjacent columns (one bf16x2 word) */
            if (v % 2 == 0) {
                cr_assert_eq(dinf__mla_fast_acc_row(t, v + 1), row);
                cr_assert_eq(dinf__mla_fast_acc_col(t, v + 1), col + 1);
            }
            /* the two rows of a thread: (v / 2) % 2 = 0 and 1 */
            cr_assert_eq(row, dinf__mla_fast_acc_row(t, 2 * ((v / 2) % 2)));
            /* warp w of the warpgroup owns rows [16 w, 16 w + 16) */
            cr_assert_eq(row / 16, t / 32);
        }
    for (int i = 0; i < 64 * n_cols; i++)
        cr_assert_eq(seen[i], 1, "N=%d: element %d not held", n_cols, i);
    free(seen);
}

Test(mla_fast_hd, accumulator_fragments_cover_the_tiles_once) {
    check_fragment(32);
    check_fragment(256);
    /* the two WGs' key halves and output halves tile the block and the 512 columns */
    cr_assert_eq(2 * DINF_MLA_FAST_KEYS_PER_WG, DINF_MLA_BLOCK_N);
    cr_assert_eq(2 * DINF_MLA_FAST_COLS_PER_WG, DINF_MLA_HEAD_DIM_V);
}

/* ------------------------------------------------------------------ ring -- */

/* mbarrier model (PTX ISA 9.7.13.15): phase counter, pending arrivals, and
 * pending transactions; try_wait.parity(P) passes iff the current phase's
 * parity differs from P. */
typedef struct mbar {
    int64_t phase;
    int32_t count, pending;
} mbar;
static void mbar_init_m(mbar *b, int32_t count) { b->phase = 0, b->count = count, b->pending = count; }
static int mbar_ready(const mbar *b, uint32_t parity) { return (uint32_t)(b->phase & 1) != parity; }
static void mbar_arrive_m(mbar *b) {
    cr_assert_gt(b->pending, 0, "arrival on a completed phase");
    if (--b->pending == 0) {
        b->phase++;
        b->pending = b->count;
    }
}

/*
 * A producer and two consumers walk a random piece list (requests with
 * 0..5 blocks) through the kernel's protocol, one step of a random actor at
 * a time: per request the producer fills the first block, then Q (q_full /
 * q_empty), then the other blocks, through the 2-stage ring (full / empty). Every consumer sees the Q of its request and the block it
 * expects in the stage, the producer never overwrites a stage or Q still in
 * use, and nobody deadlocks.
 */
typedef struct actor {
    int r, b, step; /* request, block within it, step of the protocol */
    int64_t it;     /* blocks done (the ring's global block index) */
} actor;

Test(mla_fast_hd, ring_protocol_under_random_interleavings) {
    uint64_t s = 99;
    for (int trial = 0; trial < 300; trial++) {
        int nreq = 1 + (int)(rng_next(&s) % 6), blocks[6];
        int64_t total = 0;
        for (int r = 0; r < nreq; r++)
            total += blocks[r] = (int)(rng_next(&s) % 6);
        mbar full[2], empty[2], q_full, q_empty;
        for (int i = 0; i < 2; i++) {
            mbar_init_m(&full[i], 1);
            mbar_init_m(&empty[i], 2);
        }
        mbar_init_m(&q_full, 1);
        mbar_init_m(&q_empty, 2);
        int64_t stage_data[2] = {-1, -1};
        int q_data = -1;
        int readers[2] = {0, 0}, q_readers = 0; /* consumers currently inside a stage / Q */
        /* actor state: request r, block b within it, global block it, phase of the step */
        actor a[3] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}};
        int done[3] = {0, 0, 0};
        for (int steps = 0; !(done[0] && done[1] && done[2]); steps++) {
            cr_assert_lt(steps, 100000, "trial %d: deadlock", trial);
            const int who = (int)(rng_next(&s) % 3);
            if (done[who])
                continue;
            actor *x = &a[who];
            if (x->r >= nreq) {
                done[who] = 1;
                continue;
            }
            if (who == 0) { /* producer: the first block, then Q, then the other blocks */
                if (x->step == 0) {
                    if (blocks[x->r] > 0) {
                        const int st = dinf__mla_fast_stage(x->it);
                        if (!mbar_ready(&empty[st], dinf__mla_fast_empty_parity(x->it)))
                            continue;
                        cr_assert_eq(readers[st], 0, "trial %d: stage %d overwritten while read", trial, st);
                        stage_data[st] = x->it;
                        mbar_arrive_m(&full[st]);
                        x->b++, x->it++;
                    }
                    x->step = 1;
                } else if (x->step == 1) { /* Q of request r */
                    if (!mbar_ready(&q_empty, dinf__mla_fast_q_empty_parity(x->r)))
                        continue;
                    cr_assert_eq(q_readers, 0, "trial %d: Q overwritten while read", trial);
                    q_data = x->r;
                    mbar_arrive_m(&q_full);
                    x->step = 2;
                } else if (x->b < blocks[x->r]) {
                    const int st = dinf__mla_fast_stage(x->it);
                    if (!mbar_ready(&empty[st], dinf__mla_fast_empty_parity(x->it)))
                        continue;
                    cr_assert_eq(readers[st], 0, "trial %d: stage %d overwritten while read", trial, st);
                    stage_data[st] = x->it;
                    mbar_arrive_m(&full[st]);
                    x->b++, x->it++;
                } else {
                    x->r++, x->b = 0, x->step = 0;
                }
            } else { /* consumer */
                const int c = who - 1;
                if (x->step == 0) {
                    if (!mbar_ready(&q_full, dinf__mla_fast_q_full_parity(x->r)))
                        continue;
                    cr_assert_eq(q_data, x->r, "trial %d: consumer %d sees Q of %d, wants %d", trial, c, q_data, x->r);
                    q_readers++;
                    x->step = 1;
                } else if (x->b < blocks[x->r]) {
                    const int st = dinf__mla_fast_stage(x->it);
                    if (x->step == 1) {
                        if (!mbar_ready(&full[st], dinf__mla_fast_full_parity(x->it)))
                            continue;
                        cr_assert_eq(stage_data[st], x->it, "trial %d: consumer %d block %lld sees %lld", trial, c,
                                     (long long)x->it, (long long)stage_data[st]);
                        readers[st]++;
                        x->step = 2;
                    } else {
                        readers[st]--;
                        mbar_arrive_m(&empty[st]);
                        x->b++, x->it++, x->step = 1;
                    }
                } else {
                    q_readers--;
                    mbar_arrive_m(&q_empty);
                    x->r++, x->b = 0, x->step = 0;
                }
            }
        }
        cr_assert_eq(a[0].it, total);
        cr_assert_eq(a[1].it, total);
        cr_assert_eq(a[2].it, total);
    }
}

/* ---------------------------------------------------------------- pieces -- */

/* The plan's pieces of part `part` as the CPU path reads them (lib/mla/mla.c). */
Test(mla_fast_hd, pieces_follow_the_plan) {
    uint64_t s = 7;
    for (int trial = 0; trial < 200; trial++) {
        const int64_t b = 1 + (int64_t)(rng_next(&s) % 20);
        const int32_t parts = 1 + (int32_t)(rng_next(&s) % 40);
        int32_t seqlens[20], splits[21];
        for (int64_t i = 0; i < b; i++)
            seqlens[i] = rng_next(&s) % 4 == 0 ? 0 : (int32_t)(rng_next(&s) % 3000);
        int32_t *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
        cr_assert_eq(dinf_mla_get_metadata(seqlens, b, parts, meta, splits, NULL), DINF_STATUS_OK);
        dinf__mla_params p;
        memset(&p, 0, sizeof p);
        p.batch = b, p.parts = parts, p.h_kv = 1, p.q_rows = 16, p.page = 64, p.max_blocks = 64;
        p.num_splits = splits;
        int64_t covered[20] = {0};
        for (int32_t part = 0; part < parts; part++) {
            const int32_t *m = meta + 8 * part;
            int32_t first, last;
            dinf__mla_fast_requests(&p, m, &first, &last);
            if (m[DINF_MLA_META_BEGIN_REQ] < 0) {
                cr_assert_gt(first, last, "an empty part has no requests");
                continue;
            }
            cr_assert_eq(first, m[DINF_MLA_META_BEGIN_REQ]);
            cr_assert_eq(last, m[DINF_MLA_META_END_REQ]);
            for (int32_t r = first; r <= last; r++) {
                const dinf__mla_piece pc = dinf__mla_fast_piece(&p, m, r, seqlens[r], first, last);
                const int is_first = r == first, is_last = r == last;
                const int32_t b0 = is_first ? m[DINF_MLA_META_BEGIN_BLOCK] : 0;
                const int32_t b1 = is_last ? m[DINF_MLA_META_END_BLOCK] : dinf__mla_num_blocks(seqlens[r]);
                const int split = splits[r + 1] - splits[r] > 1;
                cr_assert_eq(pc.bad, 0);
                cr_assert_eq(pc.blk_begin, b0, "trial %d part %d req %d", trial, part, r);
                cr_assert_eq(pc.blk_end, b1, "trial %d part %d req %d", trial, part, r);
                cr_assert_eq(pc.dest, split ? 1 : 0);
                cr_assert_eq(pc.split_row, split ? splits[r] + (is_first ? m[DINF_MLA_META_BEGIN_SPLIT] : 0) : -1);
                covered[r] += b1 - b0;
            }
        }
        for (int64_t r = 0; r < b; r++)
            cr_assert_eq(covered[r], dinf__mla_num_blocks(seqlens[r]), "trial %d req %lld", trial, (long long)r);
        free(meta);
    }
}

Test(mla_fast_hd, pieces_guard_bad_device_values) {
    int32_t seqlens[3] = {200, 200, 200}, splits[4], meta[8 * 4];
    cr_assert_eq(dinf_mla_get_metadata(seqlens, 3, 4, meta, splits, NULL), DINF_STATUS_OK);
    dinf__mla_params p;
    memset(&p, 0, sizeof p);
    p.batch = 3, p.parts = 4, p.h_kv = 1, p.q_rows = 16, p.page = 64, p.max_blocks = 4;
    p.num_splits = splits;
    /* a length beyond the block table (4 * 64) or negative: bad, no block */
    dinf__mla_piece pc = dinf__mla_fast_piece(&p, meta, 0, 257, 0, 0);
    cr_assert_eq(pc.bad, 1);
    cr_assert_eq(pc.blk_end, pc.blk_begin);
    pc = dinf__mla_fast_piece(&p, meta, 0, -5, 0, 0);
    cr_assert_eq(pc.bad, 1);
    cr_assert_eq(pc.blk_end, pc.blk_begin);
    /* a plan that is not ours: end blocks past the request are clamped */
    int32_t m2[8] = {0, -3, 0, 99, 0, 0, 0, 0};
    pc = dinf__mla_fast_piece(&p, m2, 0, 200, 0, 0);
    cr_assert_eq(pc.blk_begin, 0);
    cr_assert_eq(pc.blk_end, 4);
    cr_assert_eq(pc.dest, 0);
    /* a split row outside the workspace: bad and written nowhere */
    int32_t far_splits[4] = {0, 1000, 1001, 1002};
    int32_t m3[8] = {1, 0, 1, 2, 0, 1, 1, 0};
    p.num_splits = far_splits;
    pc = dinf__mla_fast_piece(&p, m3, 1, 200, 1, 1);
    cr_assert_eq(pc.bad, 1);
    cr_assert_eq(pc.dest, -1);
    /* request ranges: begin outside the batch = no work; end clamped */
    int32_t first, last;
    int32_t m4[8] = {5, 0, 7, 0, 0, 0, 0, 0};
    dinf__mla_fast_requests(&p, m4, &first, &last);
    cr_assert_gt(first, last);
    int32_t m5[8] = {1, 0, 9, 0, 0, 0, 0, 0};
    dinf__mla_fast_requests(&p, m5, &first, &last);
    cr_assert_eq(first, 1);
    cr_assert_eq(last, 2);
    /* keys of a block */
    cr_assert_eq(dinf__mla_fast_block_keys(200, 0), 64);
    cr_assert_eq(dinf__mla_fast_block_keys(200, 3), 8);
    cr_assert_eq(dinf__mla_fast_block_keys(200, 4), 0);
    cr_assert_eq(dinf__mla_fast_block_keys(128, 1), 64);
}

/* --------------------------------------------------------------- softmax -- */

/*
 * One row over several 64-key blocks with random masks (the causal limit and
 * the length), computed as the kernel does: each WG takes 32 keys of the
 * block, the block max is the max of the halves, both WGs update the same
 * running max and rescale their own row-sum partial and output columns;
 * l = l_0 + l_1 at the end. Against float64 softmax and its weighted sum.
 */
Test(mla_fast_hd, two_warpgroup_online_softmax_equals_softmax) {
    uint64_t s = 3;
    for (int trial = 0; trial < 500; trial++) {
        const int nblk = 1 + (int)(rng_next(&s) % 6);
        const int limit = (int)(rng_next(&s) % (64 * nblk + 1)); /* keys < limit are visible */
        float score[6 * 64], value[6 * 64];
        for (int j = 0; j < 64 * nblk; j++) {
            score[j] = (float)((double)(rng_next(&s) % 20001) / 1000.0 - 10.0) * (trial % 7 == 0 ? 30.0f : 1.0f);
            value[j] = (float)((double)(rng_next(&s) % 2001) / 1000.0 - 1.0);
        }
        float m = -INFINITY, l[2] = {0, 0}, o[2] = {0, 0}; /* o: one output column per WG */
        for (int blk = 0; blk < nblk; blk++) {
            float half_max[2] = {-INFINITY, -INFINITY}, x[64];
            for (int j = 0; j < 64; j++) {
                const int key = 64 * blk + j;
                x[j] = key < limit ? score[key] : -INFINITY;
                half_max[j / 32] = fmaxf(half_max[j / 32], x[j]);
            }
            float alpha;
            const float m_new = dinf__mla_fast_max_update(m, fmaxf(half_max[0], half_max[1]), &alpha);
            cr_assert(!isnan(alpha), "trial %d: alpha NaN", trial);
            float pr[64];
            for (int w = 0; w < 2; w++) {
                l[w] *= alpha;
                for (int j = 32 * w; j < 32 * w + 32; j++) {
                    pr[j] = dinf__mla_fast_prob(x[j], m_new);
                    l[w] += pr[j];
                }
            }
            for (int w = 0; w < 2; w++) { /* both output columns see every key's P */
                o[w] *= alpha;
                for (int j = 0; j < 64; j++)
                    o[w] += pr[j] * (w ? -value[64 * blk + j] : value[64 * blk + j]);
            }
            m = m_new;
        }
        const dinf__mla_row_end e = dinf__mla_fast_row_end(l[0] + l[1], m, 0);
        if (limit == 0) {
            cr_assert_eq(e.inv, 0.0f);
            cr_assert(isinf(e.lse) && e.lse > 0);
            cr_assert(isinf(e.lse2) && e.lse2 < 0);
            cr_assert_eq(o[0], 0.0f);
            continue;
        }
        double mx = -INFINITY, sum = 0, acc = 0;
        for (int j = 0; j < limit; j++)
            mx = fmax(mx, (double)score[j]);
        for (int j = 0; j < limit; j++) {
            const double w = exp2((double)score[j] - mx);
            sum += w;
            acc += w * value[j];
        }
        const double lse2 = log2(sum) + mx;
        cr_assert(fabs(e.lse2 - lse2) <= 1e-5 * fmax(1.0, fabs(lse2)), "trial %d: lse2 %g vs %g", trial,
                  (double)e.lse2, lse2);
        cr_assert(fabs(e.lse - lse2 * 0.6931471805599453) <= 1e-5 * fmax(1.0, fabs(lse2)), "trial %d lse", trial);
        cr_assert(fabs(o[0] * e.inv - acc / sum) <= 1e-5, "trial %d: out %g vs %g", trial, (double)(o[0] * e.inv),
                  acc / sum);
        cr_assert(fabs(o[1] * e.inv + acc / sum) <= 1e-5, "trial %d: out (WG 1)", trial);
    }
}

Test(mla_fast_hd, row_end_cases) {
    dinf__mla_row_end e = dinf__mla_fast_row_end(0.0f, -INFINITY, 0);
    cr_assert_eq(e.inv, 0.0f);
    cr_assert(isinf(e.lse) && e.lse > 0);
    cr_assert(isinf(e.lse2) && e.lse2 < 0);
    e = dinf__mla_fast_row_end(4.0f, 3.0f, 0);
    cr_assert_float_eq(e.inv, 0.25f, 0.0f);
    cr_assert_float_eq(e.lse2, 5.0f, 1e-6f);
    cr_assert_float_eq(e.lse, 5.0f * 0.6931472f, 1e-6f);
    e = dinf__mla_fast_row_end(4.0f, 3.0f, 1);
    cr_assert(isnan(e.inv) && isnan(e.lse) && isnan(e.lse2));
    e = dinf__mla_fast_row_end(0.0f, -INFINITY, 1);
    cr_assert(isnan(e.inv) && isnan(e.lse) && isnan(e.lse2));
    /* the update from an empty running max, and a fully masked block */
    float alpha;
    cr_assert_eq(dinf__mla_fast_max_update(-INFINITY, -INFINITY, &alpha), -INFINITY);
    cr_assert_eq(alpha, 0.0f);
    cr_assert_eq(dinf__mla_fast_max_update(2.0f, -INFINITY, &alpha), 2.0f);
    cr_assert_eq(alpha, 1.0f);
    cr_assert_eq(dinf__mla_fast_prob(-INFINITY, -INFINITY), 0.0f);
    cr_assert_eq(dinf__mla_fast_prob(1.0f, 1.0f), 1.0f);
}

/* ------------------------------------------------------------- selection -- */

Test(mla_fast_hd, rung_selection) {
    char msg[320];
    int rung = -1;
    const int64_t blk = 64 * 576, tok = 576;
    cr_assert_eq(dinf__mla_choose_rung(NULL, 0, 64, blk, tok, 100, 1, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_FAST, "auto on 64-token pages: fast");
    cr_assert_eq(dinf__mla_choose_rung("", 1, 64, 64 * 656, 656, 100, 1, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_FAST, "auto, FP8 cache: fast");
    cr_assert_eq(dinf__mla_choose_rung("auto", 0, 32, 32 * 576, 576, 100, 1, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_SIMPLE, "auto on 32-token pages: simple");
    cr_assert_eq(dinf__mla_choose_rung("simple", 0, 64, blk, tok, 100, 1, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_SIMPLE);
    cr_assert_eq(dinf__mla_choose_rung("fast", 0, 64, blk, tok, 100, 2, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_FAST);
    cr_assert_eq(dinf__mla_choose_rung("fast", 1, 16, 16 * 656, 656, 100, 1, &rung, msg, sizeof msg), -2);
    cr_assert_str_eq(msg, "DINF_MLA_KERNEL=fast, but the fast rung cannot take this decode: "
                          "page_block_size=16 (the fast rung takes 64-token pages only)");
    cr_assert_eq(dinf__mla_choose_rung("fast", 0, 64, (int64_t)1 << 39, tok, 100, 1, &rung, msg, sizeof msg), -2);
    cr_assert(strstr(msg, "kv_block_stride=549755813888") && strstr(msg, "2^40 bytes"), "%s", msg);
    cr_assert_eq(dinf__mla_choose_rung("auto", 0, 64, (int64_t)1 << 39, tok, 100, 1, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_SIMPLE, "auto falls back where the tensor map cannot reach");
    cr_assert_eq(dinf__mla_choose_rung("fast", 0, 64, blk, tok, 3000000000LL, 1, &rung, msg, sizeof msg), -2);
    cr_assert(strstr(msg, "num_blocks=3000000000"), "%s", msg);
    cr_assert_eq(dinf__mla_choose_rung("Fast", 0, 64, blk, tok, 100, 1, &rung, msg, sizeof msg), -1);
    cr_assert_str_eq(msg, "DINF_MLA_KERNEL='Fast' is not one of simple, fast, auto");
}
