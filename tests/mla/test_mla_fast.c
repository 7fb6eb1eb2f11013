/*
 * The fast MLA rung's host-device logic (lib/mla/mla_fast_hd.h) on the CPU:
 * the shared-memory carve, the 128-byte swizzle against CuTe's
 * Swizzle<3,4,3> on addresses, the wgmma descriptors interpreted with the
 * canonical SW128 layouts (every operand element of every wgmma the kernel
 * issues lands on the element the algorithm means), the accumulator
 * fragments, the mbarrier ring under random interleavings of a producer and
 * two consumers, the seesaw rung's carve, steps and protocol (its operation
 * lists against the producer under random interleavings, and planted bugs
 * the model must catch), the pieces of the plan against the CPU path's
 * reading of it, the FP8 producer's L2 prefetch (the ring order it walks,
 * the bytes it asks for, its distance from the environment), the
 * two-warpgroup online softmax against a float64 softmax, the row ends, and
 * the rung selection.
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
    cr_assert_geq(s.mask - s.bad, 2u * 4, "the two stages' bad flags");
    cr_assert_geq(s.full0 - s.mask, 2u * 64, "the two stages' 64 sparse-slot flags");
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

/* -------------------------------------------------------------- seesaw -- */

Test(mla_fast_hd, seesaw_shared_memory_carve) {
    const dinf__mla_fast_smem f = dinf__mla_fast_smem_carve(), s = dinf__mla_seesaw_smem_carve();
    /* Q and the two stages where the fast rung has them (same producer, same TMA boxes) */
    cr_assert_eq(s.q, f.q);
    cr_assert_eq(s.k0, f.k0);
    cr_assert_eq(s.k1, f.k1);
    cr_assert_eq(s.k0 % 1024 + s.k1 % 1024 + s.q % 1024, 0u);
    /* the P tile of a stage is its box 8: 1024-aligned (a swizzled wgmma operand),
     * inside the stage, and exactly the RoPE columns 512..575 of every key row */
    const uint32_t pt = dinf__mla_seesaw_p_tile();
    cr_assert_eq(pt % 1024, 0u);
    cr_assert_eq(pt + DINF_MLA_FAST_BOX_BYTES, (uint32_t)DINF_MLA_FAST_TILE_BYTES);
    for (uint32_t row = 0; row < 64; row++)
        for (uint32_t col = 0; col < 576; col++) {
            const uint32_t off = dinf__mla_fast_sw128(row, col);
            cr_assert_eq(off >= pt, col >= DINF_MLA_HEAD_DIM_V, "row %u col %u at %u", row, col, off);
        }
    /* every P element (64 q rows x 64 keys) the kernel stores lands in box 8 */
    for (int t = 0; t < 128; t++)
        for (int v = 0; v < 32; v++) {
            const uint32_t off =
                pt + dinf__mla_fast_sw128((uint32_t)dinf__mla_fast_acc_row(t, v), (uint32_t)dinf__mla_fast_acc_col(t, v));
            cr_assert(off >= pt && off + 2 <= pt + DINF_MLA_FAST_BOX_BYTES);
        }
    /* the per-row scalars: a0, a1, m0, m1 (4 x 64 floats), then the fast carve's tail */
    cr_assert_eq(s.sc, s.k1 + DINF_MLA_FAST_TILE_BYTES);
    cr_assert_eq(s.lsum - s.sc, 4u * 64 * 4);
    cr_assert_eq(s.bad - s.lsum, 2u * 2 * 64 * 4);
    cr_assert_geq(s.mask - s.bad, 2u * 4);
    cr_assert_geq(s.full0 - s.mask, 2u * 64);
    const uint32_t bars[6] = {s.full0, s.full1, s.empty0, s.empty1, s.q_full, s.q_empty};
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(bars[i] % 8, 0u);
        if (i)
            cr_assert_eq(bars[i], bars[i - 1] + 8);
    }
    cr_assert_eq(s.end, s.q_empty + 8);
    cr_assert_eq(s.bytes, s.end + 1024u);
    cr_assert_leq(s.bytes, (uint32_t)DINF_MLA_FAST_SMEM_LIMIT);
    cr_assert_lt(s.bytes, f.bytes, "the seesaw carve has no P tile of its own");
    cr_assert_eq(s.bytes, 224448u, "kernels/mla/NOTES.md quotes this size");
    /* registers: the seesaw kernel enters with the same 168 (launch bounds 384, 1) */
    cr_assert_leq(DINF_MLA_SEESAW_PRODUCER_REGS * 128 + DINF_MLA_SEESAW_CONSUMER_REGS * 256, 65536);
    cr_assert_eq((DINF_MLA_SEESAW_CONSUMER_REGS - 168) * 256, (168 - DINF_MLA_SEESAW_PRODUCER_REGS) * 128,
                 "the producer frees what the consumers take");
    cr_assert_eq(DINF_MLA_SEESAW_CONSUMER_REGS % 8 + DINF_MLA_SEESAW_PRODUCER_REGS % 8, 0);
    cr_assert_eq(64 * DINF_MLA_FAST_FP8_CHUNKS / 128 % DINF_MLA_SEESAW_FP8_BATCH, 0);
    /* named barriers: distinct, above the fast rung's and below 16 */
    const int ids[5] = {DINF_MLA_FAST_BAR_L, DINF_MLA_SEESAW_BAR_A0, DINF_MLA_SEESAW_BAR_A1, DINF_MLA_SEESAW_BAR_LOCAL,
                        DINF_MLA_SEESAW_BAR_LOCAL + 1};
    for (int i = 0; i < 5; i++) {
        cr_assert(ids[i] > 0 && ids[i] < 16);
        for (int j = 0; j < i; j++)
            cr_assert_neq(ids[i], ids[j]);
    }
}

Test(mla_fast_hd, seesaw_steps) {
    for (int32_t nblk = 0; nblk < 40; nblk++) {
        const int32_t steps = dinf__mla_seesaw_steps(nblk);
        int32_t covered = 0;
        for (int32_t k = 0; k < steps; k++)
            covered += 1 + dinf__mla_seesaw_has_b(nblk, k);
        cr_assert_eq(covered, nblk, "%d blocks", nblk);
        if (steps)
            cr_assert_eq(dinf__mla_seesaw_has_b(nblk, steps - 1), nblk % 2 == 0, "%d blocks: the last step", nblk);
    }
    cr_assert_eq(dinf__mla_seesaw_steps(-3), 0);
}

/*
 * The seesaw protocol (dinf__mla_seesaw_ops) against the producer, one
 * operation of a random actor at a time. State per stage: the ring index it
 * holds, box 8 (RoPE, or P of which block), which halves of V are zeroed,
 * whether its QK^T ran, the wgmma reading it in flight, which WGs hold it
 * (waited full, not yet released). Checked: the producer refills a stage
 * only when nobody holds it or reads it; a wgmma reads the block it wants
 * (at issue and at its wait: the hardware may read anywhere in between),
 * QK^T box 8 as RoPE and K rows intact, P V the P of its block and V rows
 * past the length zeroed by its own WG; P and zeros are written only after
 * the block's QK^T completed and while no wgmma reads them; the scalars a0, m0
 * / a1, m1 are read in the step they were written for and never overwritten
 * unread; a named barrier never sees a second bar.arrive before its waiter;
 * nobody deadlocks. Requests have 0..5 blocks, the last one partial at
 * random. bug != 0 plants a protocol bug (the operation lists edited); the
 * model must catch each. Returns NULL or what went wrong (msg).
 */
enum { SS_ROPE = -1 };
typedef struct ss_stage {
    int64_t it;     /* ring index held (-1: never filled) */
    int64_t box8;   /* SS_ROPE or the ring index whose P is there */
    int zeroed[2];  /* V half zeroed for this fill */
    int qk_done, qk_flight, pv_flight[2], holds[2];
    int partial;    /* the block's last key row is past the request's length */
} ss_stage;
typedef struct ss_wg {
    int r, k, op, nops;
    int64_t it, step;
    uint8_t ops[DINF_MLA_SEESAW_MAX_OPS];
    int pend_qk, pend_pv[2]; /* in-flight wgmma: QK stage (-1 none), PV on stage s */
} ss_wg;

enum {
    SS_BUG_NONE, SS_BUG_WG1_RELEASE_A_EARLY, SS_BUG_WG0_NO_SYNC_A1, SS_BUG_WG0_ARRIVE_BEFORE_P,
    SS_BUG_WG0_P_BEFORE_QK_WAIT, SS_BUG_WG0_NO_RELEASE_B, SS_BUG_WG1_ZERO_A_EARLY, SS_BUG_WG1_NO_PV_A_WAIT,
    SS_NUM_BUGS
};

static int ss_find(const uint8_t *ops, int n, int op) {
    for (int i = 0; i < n; i++)
        if (ops[i] == op)
            return i;
    return -1;
}
static void ss_move(uint8_t *ops, int n, int from, int to) { /* ops[from] to position to */
    const uint8_t x = ops[from];
    if (from < to)
        memmove(ops + from, ops + from + 1, (size_t)(to - from));
    else
        memmove(ops + to + 1, ops + to, (size_t)(from - to));
    ops[to] = x;
    (void)n;
}
static int ss_remove(uint8_t *ops, int n, int at) {
    memmove(ops + at, ops + at + 1, (size_t)(n - at - 1));
    return n - 1;
}

static int ss_ops(int wg, int has_b, int bug, uint8_t *ops) {
    int n = dinf__mla_seesaw_ops(wg, has_b, ops);
    if (wg == 1 && bug == SS_BUG_WG1_RELEASE_A_EARLY) /* release A right after issuing P0 V_A */
        ss_move(ops, n, ss_find(ops, n, DINF__SS_RELEASE_A), ss_find(ops, n, DINF__SS_PV_A) + 1);
    if (wg == 0 && bug == SS_BUG_WG0_NO_SYNC_A1)
        n = ss_remove(ops, n, ss_find(ops, n, DINF__SS_SYNC_A1));
    if (wg == 0 && bug == SS_BUG_WG0_ARRIVE_BEFORE_P) /* A0 published before P0 is stored */
        ss_move(ops, n, ss_find(ops, n, DINF__SS_ARRIVE_A0), ss_find(ops, n, DINF__SS_PUT_P_A));
    if (wg == 0 && bug == SS_BUG_WG0_P_BEFORE_QK_WAIT)
        ss_move(ops, n, ss_find(ops, n, DINF__SS_PUT_P_A), ss_find(ops, n, DINF__SS_QK_A) + 1);
    if (wg == 0 && bug == SS_BUG_WG0_NO_RELEASE_B && has_b)
        n = ss_remove(ops, n, ss_find(ops, n, DINF__SS_RELEASE_B));
    if (wg == 1 && bug == SS_BUG_WG1_ZERO_A_EARLY) /* zero A's V tail before WG 0's QK_A is known done */
        ss_move(ops, n, ss_find(ops, n, DINF__SS_ZERO_A), 0);
    if (wg == 1 && bug == SS_BUG_WG1_NO_PV_A_WAIT && has_b) { /* P V_B issued before the wait of P V_A */
        const int pv_a = ss_find(ops, n, DINF__SS_PV_A);
        ss_move(ops, n, pv_a + ss_find(ops + pv_a, n - pv_a, DINF__SS_MMA_WAIT), ss_find(ops, n, DINF__SS_PV_B));
    }
    return n;
}

#define SS_CHECK(cond, ...)                                                                                           \
    do {                                                                                                              \
        if (!(cond)) {                                                                                                \
            snprintf(msg, msg_n, __VA_ARGS__);                                                                        \
            return msg;                                                                                               \
        }                                                                                                             \
    } while (0)

static const char *ss_model(int bug, uint64_t seed, int trials, char *msg, size_t msg_n) {
    uint64_t s = seed;
    for (int trial = 0; trial < trials; trial++) {
        int nreq = 1 + (int)(rng_next(&s) % 6), blocks[6], partial_last[6];
        for (int r = 0; r < nreq; r++) {
            blocks[r] = (int)(rng_next(&s) % 6);
            partial_last[r] = (int)(rng_next(&s) % 2);
        }
        mbar full[2], empty[2];
        ss_stage st[2];
        for (int i = 0; i < 2; i++) {
            mbar_init_m(&full[i], 1);
            mbar_init_m(&empty[i], 2); /* the two WGs (256 threads in the kernel) */
            memset(&st[i], 0, sizeof st[i]);
            st[i].it = -1;
            st[i].box8 = SS_ROPE;
        }
        int arrived_a0 = 0, arrived_a1 = 0;
        int64_t sc0 = -1, sc1 = -1; /* step whose values are in the slots */
        int sc0_read = 1, sc1_read = 1;
        /* producer */
        int pr = 0, pb = 0;
        int64_t pit = 0;
        ss_wg w[2];
        memset(w, 0, sizeof w);
        for (int i = 0; i < 2; i++)
            w[i].pend_qk = -1, w[i].nops = -1;
        for (int steps = 0;; steps++) {
            SS_CHECK(steps < 200000, "trial %d: deadlock", trial);
            if (pr >= nreq && w[0].r >= nreq && w[1].r >= nreq)
                break;
            const int who = (int)(rng_next(&s) % 3);
            if (who == 2) { /* the producer: blocks in ring order */
                if (pr >= nreq)
                    continue;
                if (pb >= blocks[pr]) {
                    pr++, pb = 0;
                    continue;
                }
                const int sx = dinf__mla_fast_stage(pit);
                if (!mbar_ready(&empty[sx], dinf__mla_fast_empty_parity(pit)))
                    continue;
                SS_CHECK(!st[sx].holds[0] && !st[sx].holds[1], "trial %d: stage %d refilled while held", trial, sx);
                SS_CHECK(!st[sx].qk_flight && !st[sx].pv_flight[0] && !st[sx].pv_flight[1],
                         "trial %d: stage %d refilled while a wgmma reads it", trial, sx);
                memset(&st[sx], 0, sizeof st[sx]);
                st[sx].it = pit;
                st[sx].box8 = SS_ROPE;
                st[sx].partial = pb == blocks[pr] - 1 && partial_last[pr];
                mbar_arrive_m(&full[sx]);
                pb++, pit++;
                continue;
            }
            ss_wg *x = &w[who];
            if (x->r >= nreq)
                continue;
            const int32_t nblk = blocks[x->r];
            if (x->k >= dinf__mla_seesaw_steps(nblk)) {
                x->r++, x->k = 0, x->nops = -1;
                continue;
            }
            const int has_b = dinf__mla_seesaw_has_b(nblk, x->k);
            if (x->nops < 0) {
                x->nops = ss_ops(who, has_b, bug, x->ops);
                x->op = 0;
            }
            const int64_t it_x[2] = {x->it, x->it + 1};
            const int op = x->ops[x->op];
            int blocked = 0;
            int xb = -1; /* the block an operation is about: 0 = A, 1 = B */
            switch (op) {
            case DINF__SS_WAIT_A: case DINF__SS_QK_A: case DINF__SS_PV_A: case DINF__SS_ZERO_A:
            case DINF__SS_PUT_P_A: case DINF__SS_RELEASE_A: xb = 0; break;
            case DINF__SS_WAIT_B: case DINF__SS_QK_B: case DINF__SS_PV_B: case DINF__SS_ZERO_B:
            case DINF__SS_PUT_P_B: case DINF__SS_RELEASE_B: xb = 1; break;
            default: break;
            }
            const int sx = xb >= 0 ? dinf__mla_fast_stage(it_x[xb]) : -1;
            ss_stage *g = sx >= 0 ? &st[sx] : NULL;
            if (g && op != DINF__SS_WAIT_A && op != DINF__SS_WAIT_B)
                SS_CHECK(g->it == it_x[xb], "trial %d: WG %d op %d on block %lld finds stage %d holding %lld", trial,
                         who, op, (long long)it_x[xb], sx, (long long)g->it);
            switch (op) {
            case DINF__SS_WAIT_A:
            case DINF__SS_WAIT_B:
                if (!mbar_ready(&full[sx], dinf__mla_fast_full_parity(it_x[xb]))) {
                    blocked = 1;
                    break;
                }
                SS_CHECK(g->it == it_x[xb], "trial %d: WG %d waits block %lld, stage %d holds %lld", trial, who,
                         (long long)it_x[xb], sx, (long long)g->it);
                g->holds[who] = 1;
                break;
            case DINF__SS_QK_A:
            case DINF__SS_QK_B:
                SS_CHECK(g->holds[who], "trial %d: WG %d QK on a stage it did not wait for", trial, who);
                SS_CHECK(g->box8 == SS_ROPE && !g->zeroed[0] && !g->zeroed[1],
                         "trial %d: QK^T of block %lld reads a written-over K tile", trial, (long long)g->it);
                g->qk_flight = 1;
                x->pend_qk = sx;
                break;
            case DINF__SS_PV_A:
            case DINF__SS_PV_B:
                SS_CHECK(g->holds[who], "trial %d: WG %d P V on a stage it did not wait for", trial, who);
                SS_CHECK(g->box8 == g->it, "trial %d: WG %d P V of block %lld reads box 8 = %lld", trial, who,
                         (long long)g->it, (long long)g->box8);
                SS_CHECK(!g->partial || g->zeroed[who], "trial %d: WG %d P V of a partial block before its zeros",
                         trial, who);
                SS_CHECK(!x->pend_pv[sx], "trial %d: WG %d second P V on stage %d in flight", trial, who, sx);
                g->pv_flight[who] = 1;
                x->pend_pv[sx] = 1;
                break;
            case DINF__SS_MMA_WAIT: /* the wgmma read their operands somewhere since issue: check again */
                if (x->pend_qk >= 0) {
                    ss_stage *q = &st[x->pend_qk];
                    SS_CHECK(q->box8 == SS_ROPE && !q->zeroed[0] && !q->zeroed[1],
                             "trial %d: K tile written during WG %d's QK^T", trial, who);
                    q->qk_flight = 0;
                    q->qk_done = 1;
                    x->pend_qk = -1;
                }
                for (int i = 0; i < 2; i++)
                    if (x->pend_pv[i]) {
                        SS_CHECK(st[i].box8 == st[i].it, "trial %d: P of stage %d changed during WG %d's P V", trial,
                                 i, who);
                        st[i].pv_flight[who] = 0;
                        x->pend_pv[i] = 0;
                    }
                break;
            case DINF__SS_PUT_SC0:
                SS_CHECK(sc0_read, "trial %d: a0/m0 of step %lld overwritten unread", trial, (long long)sc0);
                sc0 = x->step, sc0_read = 0;
                break;
            case DINF__SS_GET_SC0:
                SS_CHECK(sc0 == x->step, "trial %d: WG 1 step %lld reads a0/m0 of step %lld", trial,
                         (long long)x->step, (long long)sc0);
                sc0_read = 1;
                break;
            case DINF__SS_PUT_SC1:
                SS_CHECK(sc1_read, "trial %d: a1/m1 of step %lld overwritten unread", trial, (long long)sc1);
                sc1 = x->step, sc1_read = 0;
                break;
            case DINF__SS_GET_SC1:
                SS_CHECK(sc1 == x->step, "trial %d: WG 0 step %lld reads a1/m1 of step %lld", trial,
                         (long long)x->step, (long long)sc1);
                sc1_read = 1;
                break;
            case DINF__SS_ZERO_A:
            case DINF__SS_ZERO_B:
                if (!g->partial)
                    break;
                SS_CHECK(g->qk_done && !g->qk_flight, "trial %d: WG %d zeroes V rows of block %lld before its QK^T",
                         trial, who, (long long)g->it);
                SS_CHECK(!g->pv_flight[who], "trial %d: WG %d zeroes V rows its P V reads", trial, who);
                g->zeroed[who] = 1;
                break;
            case DINF__SS_PUT_P_A:
            case DINF__SS_PUT_P_B:
                SS_CHECK(g->qk_done && !g->qk_flight, "trial %d: P of block %lld over RoPE columns QK^T still reads",
                         trial, (long long)g->it);
                SS_CHECK(!g->pv_flight[0] && !g->pv_flight[1], "trial %d: P written while P V reads it", trial);
                g->box8 = g->it;
                break;
            case DINF__SS_ARRIVE_A0:
                SS_CHECK(!arrived_a0, "trial %d: second bar.arrive A0 before WG 1's sync", trial);
                arrived_a0 = 1;
                break;
            case DINF__SS_ARRIVE_A1:
                SS_CHECK(!arrived_a1, "trial %d: second bar.arrive A1 before WG 0's sync", trial);
                arrived_a1 = 1;
                break;
            case DINF__SS_SYNC_A0:
                if (!arrived_a0)
                    blocked = 1;
                else
                    arrived_a0 = 0;
                break;
            case DINF__SS_SYNC_A1:
                if (!arrived_a1)
                    blocked = 1;
                else
                    arrived_a1 = 0;
                break;
            case DINF__SS_LOCAL:
                break;
            case DINF__SS_RELEASE_A:
            case DINF__SS_RELEASE_B:
                SS_CHECK(g->holds[who], "trial %d: WG %d releases a stage it does not hold", trial, who);
                g->holds[who] = 0;
                mbar_arrive_m(&empty[sx]);
                break;
            default:
                SS_CHECK(0, "unknown op %d", op);
            }
            if (blocked)
                continue;
            if (++x->op == x->nops) {
                SS_CHECK(x->pend_qk < 0 && !x->pend_pv[0] && !x->pend_pv[1], "trial %d: WG %d ends a step with wgmma in flight",
                         trial, who);
                x->it += has_b ? 2 : 1;
                x->step++, x->k++, x->nops = -1;
            }
        }
        int64_t total = 0;
        for (int r = 0; r < nreq; r++)
            total += blocks[r];
        SS_CHECK(w[0].it == total && w[1].it == total && pit == total, "trial %d: blocks walked %lld %lld %lld of %lld",
                 trial, (long long)w[0].it, (long long)w[1].it, (long long)pit, (long long)total);
        SS_CHECK(!arrived_a0 && !arrived_a1, "trial %d: a bar.arrive left unmatched", trial);
    }
    return NULL;
}

Test(mla_fast_hd, seesaw_protocol_under_random_interleavings) {
    char msg[256];
    const char *err = ss_model(SS_BUG_NONE, 1234, 3000, msg, sizeof msg);
    cr_assert_null(err, "%s", err);
}

Test(mla_fast_hd, seesaw_protocol_model_catches_planted_bugs) {
    static const char *const names[SS_NUM_BUGS] = {
        "", "WG 1 releases A before its P V wait", "WG 0 skips the A1 sync",
        "WG 0 arrives on A0 before storing P0", "WG 0 stores P0 before its QK^T wait",
        "WG 0 never releases B", "WG 1 zeroes A's V tail before the A0 sync",
        "WG 1 issues P V_B before waiting for P V_A"};
    for (int bug = 1; bug < SS_NUM_BUGS; bug++) {
        char msg[256];
        const char *err = ss_model(bug, 1234, 3000, msg, sizeof msg);
        cr_assert_not_null(err, "planted bug not caught: %s", names[bug]);
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

/* A sparse request (mla_hd.h): its key count is topk_length[b] (or topk), bad
 * outside [0, topk] whatever the table's size; slots map through the page
 * size, negative ones are skipped, ones past the cache are bad; lse lands at
 * [b][h][t]. */
Test(mla_fast_hd, sparse_requests_keys_slots_and_lse) {
    int32_t tl[2] = {100, 7}, splits[5], meta[8 * 3];
    cr_assert_eq(dinf_mla_get_sparse_metadata(tl, 2, 2, 120, 3, meta, splits, NULL, NULL), DINF_STATUS_OK);
    dinf__mla_params p;
    memset(&p, 0, sizeof p);
    p.batch = 4, p.parts = 3, p.h_kv = 1, p.h_q = 16, p.q_rows = 16, p.s_q = 1, p.page = 7;
    p.num_blocks = 10, p.max_blocks = 120, p.topk = 120, p.sparse_s_q = 2, p.topk_length = tl;
    p.kv_block_stride = 1000, p.kv_token_stride = 100;
    p.num_splits = splits;
    cr_assert_eq(dinf__mla_req_keys(&p, 0), 100);
    cr_assert_eq(dinf__mla_req_keys(&p, 1), 100, "request 1 is (b 0, t 1)");
    cr_assert_eq(dinf__mla_req_keys(&p, 3), 7);
    p.topk_length = NULL;
    cr_assert_eq(dinf__mla_req_keys(&p, 3), 120);
    cr_assert(!dinf__mla_req_keys_bad(&p, 0, 120) && dinf__mla_req_keys_bad(&p, 0, 121) &&
              dinf__mla_req_keys_bad(&p, 0, -1) && !dinf__mla_req_keys_bad(&p, 0, 0));
    /* the dense rule would allow max_blocks * page = 840 keys: the sparse one stops at topk */
    dinf__mla_piece pc = dinf__mla_fast_piece(&p, meta, 0, 121, 0, 0);
    cr_assert_eq(pc.bad, 1);
    cr_assert_eq(pc.blk_end, pc.blk_begin);
    pc = dinf__mla_fast_piece(&p, meta, 0, 120, 0, 0);
    cr_assert_eq(pc.bad, 0);
    /* slots: page 7, 10 pages = 70 slots */
    int64_t off = -1;
    int32_t row = -1;
    cr_assert_eq(dinf__mla_slot_loc(&p, 0, 0, &off, &row), 0);
    cr_assert_eq(off, 0);
    cr_assert_eq(dinf__mla_slot_loc(&p, 0, 69, &off, &row), 0);
    cr_assert_eq(off, 9 * 1000 + 6 * 100, "slot 69 = page 9 row 6, got %lld", (long long)off);
    cr_assert_eq(row, 6);
    cr_assert_eq(dinf__mla_slot_loc(&p, 0, -1, &off, &row), 1, "a skipped slot");
    cr_assert_eq(dinf__mla_slot_loc(&p, 0, 70, &off, &row), -1, "past the cache");
    cr_assert_eq(dinf__mla_slot_loc(&p, 0, 2147483647, &off, &row), -1);
    /* without an extra cache every block reads the main list of its request */
    int32_t idx[4 * 120];
    p.block_table = idx;
    p.topk_length = tl;
    int32_t valid = -1;
    int extra = -1;
    cr_assert_eq(dinf__mla_sparse_block(&p, 3, 0, &valid, &extra), idx + 3 * 120);
    cr_assert(valid == 7 && extra == 0);
    cr_assert_eq(dinf__mla_sparse_block(&p, 1, 1, &valid, &extra), idx + 120 + 64);
    cr_assert(valid == 36 && extra == 0, "valid %d", valid);
    /* lse [b][h_q][s_q]: request 3 = (b 1, t 1), head 5 */
    cr_assert_eq(dinf__mla_lse_index(&p, 3, 5, 0), (1 * 16 + 5) * 2 + 1);
    cr_assert_eq(dinf__mla_lse_index(&p, 0, 15, 0), 15 * 2);
    /* the dense forms are unchanged */
    p.sparse_s_q = 0, p.s_q = 3, p.page = 64, p.max_blocks = 4;
    int32_t lens[1] = {256};
    p.seqlens = lens;
    cr_assert_eq(dinf__mla_req_keys(&p, 0), 256);
    cr_assert(!dinf__mla_req_keys_bad(&p, 0, 256) && dinf__mla_req_keys_bad(&p, 0, 257));
    cr_assert_eq(dinf__mla_lse_index(&p, 2, 5, 1), (2 * 16 + 5) * 3 + 1);
    const int32_t bt[4] = {3, 9, -1, 10};
    cr_assert_eq(dinf__mla_key_loc(&p, bt, 70, &off), 0);
    cr_assert_eq(off, 9 * 1000 + 6 * 100);
    cr_assert_eq(dinf__mla_key_loc(&p, bt, 130, &off), -1, "a negative page is bad, not skipped");
    cr_assert_eq(dinf__mla_key_loc(&p, bt, 200, &off), -1);
}

/* The extra cache (mla_hd.h): a request's keys are the main list padded to
 * 64, then the extra list; each block reads one list; the plan's lengths,
 * the kernels' key counts and the bad rule agree; the extra cache's own
 * page size, pages and strides. */
Test(mla_fast_hd, sparse_extra_cache_blocks_and_lengths) {
    int32_t tl[2] = {100, 0}, etl[2] = {5, 70};
    dinf__mla_params p;
    memset(&p, 0, sizeof p);
    p.batch = 4, p.sparse_s_q = 2, p.topk = 120, p.topk_length = tl, p.page = 7;
    p.num_blocks = 10, p.kv_block_stride = 1000, p.kv_token_stride = 100;
    p.extra_topk = 80, p.extra_topk_length = etl, p.extra_page = 3, p.extra_num_blocks = 4;
    p.extra_block_stride = 50, p.extra_token_stride = 16;
    int32_t idx[4 * 120], eidx[4 * 80];
    p.block_table = idx, p.extra_indices = eidx;
    cr_assert_eq(dinf__mla_sparse_keys(100, 5), 128 + 5);
    cr_assert_eq(dinf__mla_sparse_keys(0, 70), 70, "an empty main list takes no block");
    cr_assert_eq(dinf__mla_sparse_keys(64, 0), 64);
    cr_assert_eq(dinf__mla_sparse_keys(-5, -3), 0, "device garbage clamps");
    cr_assert_eq(dinf__mla_sparse_keys(0x7fffffff, 0x7fffffff), 2 * DINF_MLA_MAX_TOPK);
    cr_assert_eq(dinf__mla_req_keys(&p, 1), 133);
    cr_assert_eq(dinf__mla_req_keys(&p, 2), 70);
    /* the plan splits the same counts */
    const dinf__mla_lengths L = {tl, 2, 120, etl, 80};
    for (int r = 0; r < 4; r++)
        cr_assert_eq(dinf__mla_length_at(&L, r), dinf__mla_req_keys(&p, r));
    /* request 1 = (b 0, t 1): blocks 0, 1 main (36 listed in block 1), block 2 extra */
    int32_t valid;
    int extra;
    cr_assert_eq(dinf__mla_sparse_block(&p, 1, 0, &valid, &extra), idx + 120);
    cr_assert(valid == 64 && extra == 0);
    cr_assert_eq(dinf__mla_sparse_block(&p, 1, 1, &valid, &extra), idx + 120 + 64);
    cr_assert(valid == 36 && extra == 0, "the main list's padding is skipped");
    cr_assert_eq(dinf__mla_sparse_block(&p, 1, 2, &valid, &extra), eidx + 80);
    cr_assert(valid == 5 && extra == 1);
    /* request 3 = (b 1, t 1): no main block; extra blocks 0 and 1 */
    cr_assert_eq(dinf__mla_sparse_block(&p, 3, 0, &valid, &extra), eidx + 3 * 80);
    cr_assert(valid == 64 && extra == 1);
    cr_assert_eq(dinf__mla_sparse_block(&p, 3, 1, &valid, &extra), eidx + 3 * 80 + 64);
    cr_assert(valid == 6 && extra == 1);
    /* the extra cache's slots: page 3, 4 pages = 12 slots */
    int64_t off;
    int32_t row;
    cr_assert_eq(dinf__mla_slot_loc(&p, 1, 11, &off, &row), 0);
    cr_assert_eq(off, 3 * 50 + 2 * 16);
    cr_assert_eq(row, 2);
    cr_assert_eq(dinf__mla_slot_loc(&p, 1, 12, &off, &row), -1);
    cr_assert_eq(dinf__mla_slot_loc(&p, 0, 12, &off, &row), 0, "the main cache has 70 slots");
    cr_assert_eq(off, 1 * 1000 + 5 * 100);
    cr_assert_eq(dinf__mla_slot_loc(&p, 1, -1, &off, &row), 1);
    int dummy_main, dummy_extra;
    p.k_cache = &dummy_main, p.extra_k_cache = &dummy_extra;
    cr_assert(dinf__mla_cache(&p, 0) == &dummy_main && dinf__mla_cache(&p, 1) == &dummy_extra);
    /* bad: either length out of its range */
    cr_assert(!dinf__mla_req_keys_bad(&p, 0, dinf__mla_req_keys(&p, 0)));
    etl[1] = 81;
    cr_assert(dinf__mla_req_keys_bad(&p, 2, dinf__mla_req_keys(&p, 2)));
    cr_assert(!dinf__mla_req_keys_bad(&p, 0, dinf__mla_req_keys(&p, 0)), "b 0 is still fine");
    etl[1] = -1;
    cr_assert(dinf__mla_req_keys_bad(&p, 3, dinf__mla_req_keys(&p, 3)));
    etl[1] = 70, tl[0] = 121;
    cr_assert(dinf__mla_req_keys_bad(&p, 0, dinf__mla_req_keys(&p, 0)));
    tl[0] = 100;
    p.extra_topk_length = NULL;
    cr_assert_eq(dinf__mla_req_keys(&p, 0), 128 + 80);
}

/* The attention sink's arithmetic (mla_hd.h): out_inv = 1 / (l + 2^(sink2 - m)),
 * exactly 1 / l without a sink; the combine's lse with the sink, exactly G
 * without one; the limits. */
Test(mla_fast_hd, attention_sink_arithmetic) {
    const float sink[2] = {0.5f, -INFINITY};
    cr_assert_eq(dinf__mla_sink2(NULL, 0), -INFINITY);
    cr_assert_float_eq(dinf__mla_sink2(sink, 0), 0.5f * 1.4426950408889634f, 1e-7);
    cr_assert_eq(dinf__mla_sink2(sink, 1), -INFINITY);
    uint64_t s = 5;
    for (int i = 0; i < 1000; i++) {
        const float l = 1.0f + (float)(rng_next(&s) % 10000) / 100.0f;
        const float m = (float)(rng_next(&s) % 2000) / 100.0f - 10.0f;
        cr_assert_eq(dinf__mla_out_inv(l, m, -INFINITY), 1.0f / l, "bit for bit without a sink");
        const float g = m + log2f(l);
        cr_assert_eq(dinf__mla_lse2_with_sink(g, -INFINITY), g);
        const float s2 = (float)(rng_next(&s) % 4000) / 100.0f - 20.0f;
        /* both forms scale the output by 1 / (sum + 2^s2) against 2^g = sum */
        const double want = 1.0 / (exp2((double)g) + exp2((double)s2));
        const double by_inv = dinf__mla_out_inv(l, m, s2) / exp2((double)m);
        const double by_lse = exp2(-(double)dinf__mla_lse2_with_sink(g, s2));
        cr_assert(fabs(by_inv - want) <= 1e-5 * want, "%g vs %g", by_inv, want);
        cr_assert(fabs(by_lse - want) <= 1e-5 * want, "%g vs %g", by_lse, want);
    }
    cr_assert_eq(dinf__mla_out_inv(0.0f, -INFINITY, 3.0f), 0.0f, "no keys: out 0");
    cr_assert_eq(dinf__mla_lse2_with_sink(-INFINITY, 3.0f), -INFINITY, "no keys: out 0");
    cr_assert_eq(dinf__mla_out_inv(2.0f, 1.0f, INFINITY), 0.0f, "an infinite sink takes all");
    cr_assert_eq(dinf__mla_lse2_with_sink(4.0f, INFINITY), INFINITY);
    cr_assert(isnan(dinf__mla_out_inv(2.0f, 1.0f, NAN)));
    cr_assert(isnan(dinf__mla_lse2_with_sink(4.0f, NAN)));
    /* the fast epilogue: inv for a partial, out_inv for out */
    const dinf__mla_row_end e = dinf__mla_fast_row_end(4.0f, 3.0f, 0, 3.0f);
    cr_assert_eq(e.inv, 0.25f);
    cr_assert_eq(e.out_inv, 0.2f, "1 / (4 + 2^0)");
    cr_assert(isnan(dinf__mla_fast_row_end(4.0f, 3.0f, 1, 3.0f).out_inv));
}

/* MODEL1 (mla_hd.h): ue8m0 scales, the quantizer's exponent rule, the scale
 * bytes' offset, and the 40 FP8 items of a row covering the 576-wide tile
 * exactly once (V3.2: codes then RoPE; MODEL1: codes, RoPE, zeros). */
Test(mla_fast_hd, model1_scales_items_and_offsets) {
    cr_assert_eq(dinf__mla_e8m0_scale(127), 1.0f);
    cr_assert_eq(dinf__mla_e8m0_scale(114), 0x1p-13f);
    cr_assert_eq(dinf__mla_e8m0_scale(254), 0x1p127f);
    cr_assert_eq(dinf__mla_e8m0_scale(0), 0x1p-127f, "the float32 subnormal");
    cr_assert(isnan(dinf__mla_e8m0_scale(255)));
    for (int e = 0; e < 255; e++)
        cr_assert_eq(dinf__mla_e8m0_scale((uint8_t)e), (float)ldexp(1.0, e - 127), "e=%d", e);
    cr_assert_eq(dinf__mla_model1_scale_exp(0.0f), 114, "clamped at 1e-4: 2^-13");
    cr_assert_eq(dinf__mla_model1_scale_exp(448.0f), 127, "amax 448: scale 1");
    cr_assert_eq(dinf__mla_model1_scale_exp(449.0f), 128);
    cr_assert_eq(dinf__mla_model1_scale_exp(0.0448f), 114, "1e-4 exactly-ish");
    cr_assert_eq(dinf__mla_model1_scale_exp(1.0f), 119, "1 / 448 -> 2^-8");
    cr_assert_eq(dinf__mla_model1_scale_exp(INFINITY), 255);
    cr_assert_eq(dinf__mla_model1_scale_exp(NAN), 255);
    uint64_t s = 77;
    for (int i = 0; i < 2000; i++) {
        const float amax = (float)ldexp((double)(rng_next(&s) % 100000) / 1000.0,
                                        (int)(rng_next(&s) % 40) - 20);
        const double want = ceil(log2(fmax((double)(amax / 448.0f), (double)1e-4f)));
        cr_assert_eq(dinf__mla_model1_scale_exp(amax), (int)want + 127, "amax %g", (double)amax);
    }
    /* row 3 of a 5-row page at data offset off: scales at page start + 5 * 576 + 3 * 8 */
    const int64_t page_start = 7 * 4096, off = page_start + 3 * 576;
    cr_assert_eq(dinf__mla_model1_scale_off(off, 3, 5), page_start + 5 * 576 + 3 * 8);
    for (int model1 = 0; model1 < 2; model1++) {
        int cover[576] = {0}, kinds[3] = {0, 0, 0};
        for (int ch = 0; ch < DINF_MLA_FP8_ITEMS; ch++) {
            int col;
            const int kind = dinf__mla_fp8_item(model1, ch, &col);
            kinds[kind]++;
            for (int c = col; c < col + (kind == 1 ? 8 : 16); c++)
                cover[c]++;
        }
        for (int c = 0; c < 576; c++)
            cr_assert_eq(cover[c], 1, "model1=%d column %d covered %d times", model1, c, cover[c]);
        cr_assert_eq(kinds[0], model1 ? 28 : 32);
        cr_assert_eq(kinds[1], 8);
        cr_assert_eq(kinds[2], model1 ? 4 : 0);
    }
}

/* ------------------------------------------------------ FP8 L2 prefetch -- */

/*
 * dinf__mla_fast_block_ahead against the ring order written out: for random
 * plans (zero lengths, and device values the host never checks: negative
 * lengths, lengths beyond the block table, split rows outside the
 * workspace), every part's blocks in the order the producer fills them
 * (pieces of first .. last, block by block); from every block, the block
 * `ahead` places later (0 .. DINF_MLA_FP8_PREFETCH_MAX + 1), with its
 * request and key count, or none past the part's last block or more than
 * DINF_MLA_FP8_PREFETCH_HOPS requests on (some plans mostly empty
 * requests, so that the bound is reached).
 */
Test(mla_fast_hd, fp8_prefetch_walks_the_ring_order) {
    uint64_t s = 11;
    enum { MAXB = 24, MAXL = 4096 };
    int32_t (*order)[5] = malloc(sizeof(int32_t[5]) * MAXB * (MAXL / 64 + 1)); /* req, blk, end, s_k, keys */
    int walked = 0, crossed = 0, ends = 0, hop_limited = 0;
    for (int trial = 0; trial < 300; trial++) {
        const int padded = trial % 7 == 6; /* mostly empty requests (a padded batch), few parts */
        const int64_t b = padded ? MAXB : 1 + (int64_t)(rng_next(&s) % MAXB);
        const int32_t parts = 1 + (int32_t)(rng_next(&s) % (padded ? 2 : 40));
        int32_t seqlens[MAXB], splits[MAXB + 1], far_splits[MAXB + 1];
        for (int64_t i = 0; i < b; i++)
            seqlens[i] = rng_next(&s) % 4 == 0 ? 0 : (int32_t)(rng_next(&s) % (trial % 3 ? 400 : 3000));
        if (padded)
            for (int64_t i = 0; i < b; i++)
                seqlens[i] = rng_next(&s) % 4 == 0 ? seqlens[i] : 0;
        int32_t *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
        cr_assert_eq(dinf_mla_get_metadata(seqlens, b, parts, meta, splits, NULL), DINF_STATUS_OK);
        dinf__mla_params p;
        memset(&p, 0, sizeof p);
        p.batch = b, p.parts = parts, p.h_kv = 1, p.q_rows = 16, p.page = 64, p.max_blocks = 50;
        p.num_splits = splits;
        if (trial % 5 == 4) { /* split rows outside the workspace: those pieces read nothing */
            for (int64_t i = 0; i <= b; i++)
                far_splits[i] = splits[i] + 100000;
            p.num_splits = far_splits;
        }
        if (trial % 2) /* device values the plan did not see */
            for (int64_t i = 0; i < b; i++) {
                const uint64_t r = rng_next(&s) % 8;
                seqlens[i] = r == 0 ? -5 : r == 1 ? 50 * 64 + 1 : seqlens[i];
            }
        p.seqlens = seqlens;
        for (int32_t part = 0; part < parts; part++) {
            const int32_t *m = meta + 8 * part;
            int32_t first, last, n = 0;
            dinf__mla_fast_requests(&p, m, &first, &last);
            for (int32_t r = first; r <= last; r++) {
                const dinf__mla_piece pc = dinf__mla_fast_piece(&p, m, r, seqlens[r], first, last);
                for (int32_t blk = pc.blk_begin; blk < pc.blk_end; blk++, n++) {
                    int32_t *o = order[n];
                    o[0] = r, o[1] = blk, o[2] = pc.blk_end, o[3] = pc.s_k;
                    o[4] = dinf__mla_fast_block_keys(pc.s_k, blk);
                    cr_assert(o[4] >= 1 && o[4] <= 64);
                }
            }
            for (int32_t i = 0; i < n; i++)
                for (int32_t ahead = 0; ahead <= DINF_MLA_FP8_PREFETCH_MAX + 1; ahead++) {
                    int32_t r = -1, blk = -1, keys = -1;
                    const int got = dinf__mla_fast_block_ahead(&p, m, first, last, order[i][0], order[i][1],
                                                               order[i][2], order[i][3], ahead, &r, &blk,
                                                               &keys);
                    const int in_part = i + ahead < n;
                    const int within = in_part && order[i + ahead][0] - order[i][0] <= DINF_MLA_FP8_PREFETCH_HOPS;
                    cr_assert_eq(got, within, "trial %d part %d block %d of %d, ahead %d", trial, part, i, n,
                                 ahead);
                    if (!got) {
                        ends += !in_part;
                        hop_limited += in_part;
                        continue;
                    }
                    const int32_t *w = order[i + ahead];
                    cr_assert(r == w[0] && blk == w[1] && keys == w[4],
                              "trial %d part %d block %d ahead %d: (req %d, blk %d, keys %d), expected "
                              "(%d, %d, %d)",
                              trial, part, i, ahead, r, blk, keys, w[0], w[1], w[4]);
                    walked++;
                    crossed += r != order[i][0];
                }
        }
        free(meta);
    }
    free(order);
    cr_assert(walked > 10000 && crossed > 1000 && ends > 1000 && hop_limited > 50,
              "walked %d, crossed %d, ends %d, stopped by the hop bound %d", walked, crossed, ends,
              hop_limited);
}

/*
 * The prefetch ranges of a page are exactly the bytes the producer loads
 * (entries (page, row < keys, hk) of 656 bytes at page * kv_block_stride +
 * row * kv_token_stride + hk * 656), 16-byte aligned and multiples of 16,
 * inside the cache's extent ((num_blocks - 1) * kv_block_stride +
 * 63 * kv_token_stride + h_kv * 656 bytes, what lib/mla/mla.c checks): one
 * range for an unpadded single-head cache, one per row otherwise.
 */
Test(mla_fast_hd, fp8_prefetch_ranges_are_the_bytes_the_producer_reads) {
    const int64_t entry = DINF_MLA_FP8_ENTRY_BYTES;
    for (int32_t h_kv = 1; h_kv <= 3; h_kv++)
        for (int pad_tok = 0; pad_tok <= 32; pad_tok += 32)
            for (int pad_blk = 0; pad_blk <= 48; pad_blk += 48) {
                dinf__mla_params p;
                memset(&p, 0, sizeof p);
                p.h_kv = h_kv, p.num_blocks = 3;
                p.kv_token_stride = h_kv * entry + pad_tok;
                p.kv_block_stride = 64 * p.kv_token_stride + pad_blk;
                const int64_t extent = (p.num_blocks - 1) * p.kv_block_stride + 63 * p.kv_token_stride + h_kv * entry;
                uint8_t *want = malloc((size_t)extent), *got = malloc((size_t)extent);
                for (int32_t page = 0; page < p.num_blocks; page++)
                    for (int32_t hk = 0; hk < h_kv; hk++)
                        for (int32_t keys = 1; keys <= 64; keys += keys < 3 || keys > 60 ? 1 : 13) {
                            memset(want, 0, (size_t)extent);
                            memset(got, 0, (size_t)extent);
                            for (int32_t r = 0; r < keys; r++)
                                memset(want + page * p.kv_block_stride + r * p.kv_token_stride + hk * entry, 1,
                                       (size_t)entry);
                            const dinf__mla_fp8_prefetch f = dinf__mla_fp8_prefetch_ranges(&p, page, keys, hk);
                            const int contiguous = h_kv == 1 && pad_tok == 0;
                            cr_assert_eq(f.count, contiguous ? 1 : keys, "h_kv=%d pad %d", h_kv, pad_tok);
                            cr_assert(f.bytes % 16 == 0 && f.first % 16 == 0 && f.step % 16 == 0);
                            for (int32_t i = 0; i < f.count; i++) {
                                const int64_t lo = f.first + i * f.step;
                                cr_assert(lo >= 0 && lo + f.bytes <= extent,
                                          "h_kv=%d page %d hk %d keys %d: range %d [%lld, +%u) outside %lld",
                                          h_kv, page, hk, keys, i, (long long)lo, f.bytes, (long long)extent);
                                memset(got + lo, 1, f.bytes);
                            }
                            cr_assert(memcmp(got, want, (size_t)extent) == 0,
                                      "h_kv=%d pad_tok=%d pad_blk=%d page %d hk %d keys %d: other bytes", h_kv,
                                      pad_tok, pad_blk, page, hk, keys);
                        }
                free(want);
                free(got);
            }
}

Test(mla_fast_hd, fp8_prefetch_distance_from_the_environment) {
    char msg[200];
    int32_t blocks = -1;
    cr_assert_eq(dinf__mla_fp8_prefetch_choice(NULL, &blocks, msg, sizeof msg), 0);
    cr_assert_eq(blocks, DINF_MLA_FP8_PREFETCH_DEFAULT);
    cr_assert_eq(DINF_MLA_FP8_PREFETCH_DEFAULT, 2);
    blocks = -1;
    cr_assert_eq(dinf__mla_fp8_prefetch_choice("", &blocks, msg, sizeof msg), 0);
    cr_assert_eq(blocks, 2, "empty = unset");
    static const char *const ok[] = {"0", "1", "2", "7", "8", "08"};
    static const int32_t ok_v[] = {0, 1, 2, 7, 8, 8};
    for (int i = 0; i < 6; i++) {
        blocks = -1;
        cr_assert_eq(dinf__mla_fp8_prefetch_choice(ok[i], &blocks, msg, sizeof msg), 0, "%s", ok[i]);
        cr_assert_eq(blocks, ok_v[i], "%s", ok[i]);
    }
    static const char *const bad[] = {"9", "10", "-1", "+2", " 2", "2 ", "2x", "abc", "0x2", "1e1",
                                      "99999999999999999999", "2.0"};
    for (int i = 0; i < 12; i++) {
        blocks = -1;
        cr_assert_eq(dinf__mla_fp8_prefetch_choice(bad[i], &blocks, msg, sizeof msg), -1, "'%s' accepted", bad[i]);
        cr_assert_eq(blocks, -1, "'%s' set the count", bad[i]);
        char want[200];
        snprintf(want, sizeof want,
                 "DINF_MLA_FP8_PREFETCH='%s' is not a block count in [0, 8] (0 = no L2 prefetch; unset = 2)",
                 bad[i]);
        cr_assert_str_eq(msg, want);
    }
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
        const dinf__mla_row_end e = dinf__mla_fast_row_end(l[0] + l[1], m, 0, -INFINITY);
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
    dinf__mla_row_end e = dinf__mla_fast_row_end(0.0f, -INFINITY, 0, -INFINITY);
    cr_assert_eq(e.inv, 0.0f);
    cr_assert(isinf(e.lse) && e.lse > 0);
    cr_assert(isinf(e.lse2) && e.lse2 < 0);
    e = dinf__mla_fast_row_end(4.0f, 3.0f, 0, -INFINITY);
    cr_assert_float_eq(e.inv, 0.25f, 0.0f);
    cr_assert_float_eq(e.lse2, 5.0f, 1e-6f);
    cr_assert_float_eq(e.lse, 5.0f * 0.6931472f, 1e-6f);
    e = dinf__mla_fast_row_end(4.0f, 3.0f, 1, -INFINITY);
    cr_assert(isnan(e.inv) && isnan(e.lse) && isnan(e.lse2));
    e = dinf__mla_fast_row_end(0.0f, -INFINITY, 1, -INFINITY);
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
    cr_assert_eq(dinf__mla_choose_rung(NULL, 0, 64, blk, tok, 100, 1, 0, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_FAST, "auto on 64-token pages: fast");
    cr_assert_eq(dinf__mla_choose_rung("", 1, 64, 64 * 656, 656, 100, 1, 0, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_FAST, "auto, FP8 cache: fast");
    cr_assert_eq(dinf__mla_choose_rung("auto", 0, 32, 32 * 576, 576, 100, 1, 0, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_SIMPLE, "auto on 32-token pages: simple");
    cr_assert_eq(dinf__mla_choose_rung("simple", 0, 64, blk, tok, 100, 1, 0, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_SIMPLE);
    cr_assert_eq(dinf__mla_choose_rung("fast", 0, 64, blk, tok, 100, 2, 0, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_FAST);
    cr_assert_eq(dinf__mla_choose_rung("fast", 1, 16, 16 * 656, 656, 100, 1, 0, &rung, msg, sizeof msg), -2);
    cr_assert_str_eq(msg, "DINF_MLA_KERNEL=fast, but the fast rung cannot take this decode: "
                          "page_block_size=16 (the fast rung takes 64-token pages only)");
    cr_assert_eq(dinf__mla_choose_rung("fast", 0, 64, (int64_t)1 << 39, tok, 100, 1, 0, &rung, msg, sizeof msg), -2);
    cr_assert(strstr(msg, "kv_block_stride=549755813888") && strstr(msg, "2^40 bytes"), "%s", msg);
    cr_assert_eq(dinf__mla_choose_rung("auto", 0, 64, (int64_t)1 << 39, tok, 100, 1, 0, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_SIMPLE, "auto falls back where the tensor map cannot reach");
    cr_assert_eq(dinf__mla_choose_rung("fast", 0, 64, blk, tok, 3000000000LL, 1, 0, &rung, msg, sizeof msg), -2);
    cr_assert(strstr(msg, "num_blocks=3000000000"), "%s", msg);
    cr_assert_eq(dinf__mla_choose_rung("Fast", 0, 64, blk, tok, 100, 1, 0, &rung, msg, sizeof msg), -1);
    cr_assert_str_eq(msg, "DINF_MLA_KERNEL='Fast' is not one of simple, fast, seesaw, auto");
    /* the seesaw rung: chosen only by name, with the fast rung's constraints */
    cr_assert_eq(dinf__mla_choose_rung("seesaw", 0, 64, blk, tok, 100, 2, 0, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_SEESAW);
    cr_assert_eq(dinf__mla_choose_rung("seesaw", 1, 64, 64 * 656, 656, 100, 1, 0, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_SEESAW);
    cr_assert_eq(dinf__mla_choose_rung("seesaw", 1, 16, 16 * 656, 656, 100, 1, 0, &rung, msg, sizeof msg), -2);
    cr_assert_str_eq(msg, "DINF_MLA_KERNEL=seesaw, but the seesaw rung cannot take this decode: "
                          "page_block_size=16 (the fast rung takes 64-token pages only)");
    cr_assert_eq(dinf__mla_choose_rung("seesaw", 0, 64, blk, tok, 3000000000LL, 1, 0, &rung, msg, sizeof msg), -2);
    cr_assert(strstr(msg, "DINF_MLA_KERNEL=seesaw") && strstr(msg, "num_blocks=3000000000"), "%s", msg);
    cr_assert_eq(dinf__mla_choose_rung("Seesaw", 0, 64, blk, tok, 100, 1, 0, &rung, msg, sizeof msg), -1);
    cr_assert_str_eq(msg, "DINF_MLA_KERNEL='Seesaw' is not one of simple, fast, seesaw, auto");
    cr_assert_eq(dinf__mla_choose_rung("seesaw ", 0, 64, blk, tok, 100, 1, 0, &rung, msg, sizeof msg), -1);
    /* auto stays the fast rung (the default is unchanged until a GPU run measures both) */
    cr_assert_eq(dinf__mla_choose_rung("auto", 1, 64, 64 * 656, 656, 100, 1, 0, &rung, msg, sizeof msg), 0);
    cr_assert_eq(rung, DINF__MLA_RUNG_FAST);
    /* a sparse decode: the fast rung with the FP8 cache (any page size: per-token
     * gathers), the simple rung with BF16; seesaw never */
    for (int fp8 = 0; fp8 < 2; fp8++) {
        const int64_t e = fp8 ? 656 : 576;
        rung = -1;
        cr_assert_eq(dinf__mla_choose_rung(NULL, fp8, 64, 64 * e, e, 100, 1, 1, &rung, msg, sizeof msg), 0);
        cr_assert_eq(rung, fp8 ? DINF__MLA_RUNG_FAST : DINF__MLA_RUNG_SIMPLE, "auto, sparse, fp8=%d", fp8);
        cr_assert_eq(dinf__mla_choose_rung("auto", fp8, 7, 7 * e, e, 100, 1, 1, &rung, msg, sizeof msg), 0);
        cr_assert_eq(rung, fp8 ? DINF__MLA_RUNG_FAST : DINF__MLA_RUNG_SIMPLE, "7-token pages too");
        cr_assert_eq(dinf__mla_choose_rung("simple", fp8, 7, 7 * e, e, 100, 1, 1, &rung, msg, sizeof msg), 0);
        cr_assert_eq(rung, DINF__MLA_RUNG_SIMPLE);
        const int rc = dinf__mla_choose_rung("fast", fp8, 64, 64 * e, e, 100, 1, 1, &rung, msg, sizeof msg);
        if (fp8) {
            cr_assert_eq(rc, 0);
            cr_assert_eq(rung, DINF__MLA_RUNG_FAST);
        } else {
            cr_assert_eq(rc, -2);
            cr_assert_str_eq(msg, "DINF_MLA_KERNEL=fast, but the fast rung cannot take this decode: "
                                  "a sparse decode on the fast rung needs the FP8 cache (a BF16 sparse "
                                  "decode runs on the simple rung)");
        }
        cr_assert_eq(dinf__mla_choose_rung("seesaw", fp8, 64, 64 * e, e, 100, 1, 1, &rung, msg, sizeof msg), -2);
        cr_assert_str_eq(msg, "DINF_MLA_KERNEL=seesaw, but the seesaw rung takes dense decodes only (a "
                              "sparse decode runs on the fast rung with the FP8 cache, else simple)");
        cr_assert_eq(dinf__mla_choose_rung("bogus", fp8, 64, 64 * e, e, 100, 1, 1, &rung, msg, sizeof msg), -1);
    }
}
