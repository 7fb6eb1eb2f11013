/*
 * The fast rung of the Hopper FP8 GEMM (jit/templates/fp8_gemm_fast.cuh),
 * verified on the CPU: its scheduler (2-CTA cluster units, phantom partners),
 * the B-scale split of block_n values that do not divide 128, the swizzled
 * output tile of the TMA-store epilogue, its shared-memory carve-up, the
 * mbarrier protocol of 1- and 2-CTA clusters under random interleavings
 * (with planted bugs it must catch), the heuristic (its rule, and its
 * choices for every DeepSeek-V3 shape of deepgemm.md 4.2/4.4 on 132 SMs),
 * and a replay of the kernel's whole data flow (multicast halves of A, the
 * two B scales, the swizzled tile and its clipped TMA stores, the direct
 * stores of masked partial tiles) on the host's launch plan, bit for bit
 * against the CPU implementation. The SASS checks run where nvdisasm exists:
 * instruction counts, and (sass_waves.h) the order of the math loop's wgmma
 * windows, accumulator accesses, A-scale loads and stage release; the
 * latter's checker is itself tested on planted violations.
 */
#define _GNU_SOURCE
#include <deepinfra.h>

#include "core/numeric_hd.h"
#include "gemm/gemm_sm90.h"
#include "jit_internal.h"
#include "gemm_test_util.h"
#include "sass_waves.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static const int fast_bns[] = {16, 32, 48, 64, 80, 96, 112, 128, 144, 160};
#define NUM_FAST_BNS ((int)(sizeof fast_bns / sizeof fast_bns[0]))

/* ------------------------------------------------------- block sizes -- */

Test(gemm_fast_sched, block_n_set_is_16_to_128_and_144_160) {
    int count = 0;
    for (int bn = 0; bn <= 300; bn++)
        if (dinf_fp8_fast_block_n_ok(bn)) {
            cr_assert(count < NUM_FAST_BNS && fast_bns[count] == bn, "block_n %d accepted", bn);
            count++;
        }
    cr_assert_eq(count, NUM_FAST_BNS);
}

Test(gemm_fast_sched, b_scale_split_touches_at_most_two_scale_blocks_at_a_multiple_of_16) {
    for (int i = 0; i < NUM_FAST_BNS; i++) {
        const int bn = fast_bns[i];
        for (int n = 1; n <= 3000; n += (n < 300 ? 1 : 37)) {
            dinf_fp8_gemm_args a = make_args(64, n, 256, 3, 64, bn, NULL);
            for (int nb = 0; nb < a.n_blocks; nb++) {
                const int n0 = nb * bn;
                const int former = dinf_fp8_b_scale_former(n0, bn);
                const int next = dinf_fp8_b_scale_next_col(&a, n0);
                cr_assert(former >= 16 && former <= bn && former % 16 == 0,
                          "bn=%d n0=%d: former %d", bn, n0, former);
                if (128 % bn == 0)
                    cr_assert_eq(former, bn, "bn=%d divides 128: one scale", bn);
                cr_assert(next % 128 == 0 && next / 128 < a.n_scale_blocks);
                /* every stored column's true scale block is the one the split gives it */
                for (int c = 0; c < bn && n0 + c < n; c++) {
                    const int col = n0 + c;
                    const int want = col / 128;
                    const int got = c < former ? n0 / 128 : next / 128;
                    cr_assert_eq(got, want, "bn=%d n=%d n0=%d col %d: scale block %d, want %d", bn,
                                 n, n0, col, got, want);
                    for (int kb = 0; kb < 2; kb++)
                        cr_assert_eq(dinf_fp8_b_scale_index(&a, 2, c < former ? n0 : next, kb),
                                     (2LL * a.n_scale_blocks + want) * a.k_blocks + kb);
                }
            }
        }
    }
}

/* ---------------------------------------------------- cluster schedule -- */

Test(gemm_fast_sched, cluster_units_pair_adjacent_n_blocks_of_one_m_block_with_phantoms) {
    uint64_t seed = 21;
    for (int trial = 0; trial < 300; trial++) {
        const int form = trial % 3, cluster = 1 + (trial / 3) % 2;
        const int bm = form == DINF_FP8_GEMM_CONTIGUOUS ? 128 : 64 << (rng(&seed) % 3);
        const int bn = fast_bns[rng(&seed) % (bm == 256 ? 8 : NUM_FAST_BNS)];
        const int n = 1 + (int)(rng(&seed) % 2500);
        const int groups = form == DINF_FP8_GEMM_NORMAL ? 1 : 1 + (int)(rng(&seed) % 6);
        int m = 1 + (int)(rng(&seed) % 900);
        static int32_t info[8 * 128];
        int32_t masked[6];
        const int32_t *gi = NULL;
        if (form == DINF_FP8_GEMM_CONTIGUOUS) {
            const int blocks = 1 + (int)(rng(&seed) % 8);
            m = blocks * 128;
            for (int b = 0; b < blocks; b++) {
                const int g = rng(&seed) % 4 == 0 ? -1 : (int)(rng(&seed) % (uint64_t)groups);
                for (int r = 0; r < 128; r++)
                    info[b * 128 + r] = g;
            }
            gi = info;
        } else if (form == DINF_FP8_GEMM_MASKED) {
            for (int g = 0; g < groups; g++)
                masked[g] = (int)(rng(&seed) % (uint64_t)(m + 40)) - 20;
            gi = masked;
        }
        dinf_fp8_gemm_args a = make_args(m, n, 256, groups, bm, bn, gi);
        const int units = dinf_fp8_n_units(&a, cluster);
        cr_assert_eq(units, cdiv(a.n_blocks, cluster));
        const long long bound = dinf_fp8_unit_bound(&a, form, cluster);
        const long long tiles = dinf_fp8_tile_bound(&a, form);
        char *seen = calloc((size_t)tiles, 1);
        long long real = 0, phantoms = 0, expected_real = 0;
        for (long long u = 0;; u++) {
            dinf_fp8_tile t[2];
            int found[2];
            for (int r = 0; r < cluster; r++)
                found[r] = dinf_fp8_unit_at(&a, form, bm, cluster, r, u, &t[r]);
            if (cluster == 2)
                cr_assert_eq(found[0], found[1], "trial %d unit %lld: ranks disagree", trial, u);
            if (found[0] < 0)
                break;
            cr_assert_lt(u, bound, "trial %d: unit %lld beyond the bound %lld", trial, u, bound);
            if (found[0] == 0)
                continue;
            for (int r = 0; r < cluster; r++) {
                cr_assert_eq(t[r].m_block, t[0].m_block, "the pair shares its M-block (A)");
                cr_assert_eq(t[r].group, t[0].group);
                cr_assert_eq(t[r].row_limit, t[0].row_limit);
                cr_assert_eq(t[r].n_block, t[0].n_block + r, "adjacent N-blocks");
                cr_assert_eq(t[r].n_block % cluster, r);
                cr_assert_eq(t[r].phantom, t[r].n_block >= a.n_blocks);
                cr_assert_leq(t[r].n_block, a.n_blocks, "at most one phantom past the end");
                if (t[r].phantom) {
                    cr_assert_eq(r, 1, "only rank 1 can be a phantom");
                    phantoms++;
                    continue;
                }
                const long long gid = form == DINF_FP8_GEMM_MASKED ? t[r].group : 0;
                const long long id = (gid * a.m_blocks + t[r].m_block) * a.n_blocks + t[r].n_block;
                cr_assert(id >= 0 && id < tiles);
                cr_assert_eq(seen[id], 0, "trial %d: tile visited twice", trial);
                seen[id] = 1;
                real++;
            }
        }
        /* every owned tile exactly once: the simple kernel's tile set */
        for (long long t = 0;; t++) {
            dinf_fp8_tile tile;
            const int r = dinf_fp8_tile_at(&a, form, bm, t, &tile);
            if (r < 0)
                break;
            if (r == 0)
                continue;
            cr_assert_eq(tile.phantom, 0);
            const long long gid = form == DINF_FP8_GEMM_MASKED ? tile.group : 0;
            const long long id = (gid * a.m_blocks + tile.m_block) * a.n_blocks + tile.n_block;
            cr_assert_eq(seen[id], 1, "trial %d: tile (%d,%d,%d) not visited by the clusters", trial,
                         tile.group, tile.m_block, tile.n_block);
            expected_real++;
        }
        cr_assert_eq(real, expected_real);
        if (cluster == 1 || a.n_blocks % 2 == 0)
            cr_assert_eq(phantoms, 0);
        free(seen);
    }
}

Test(gemm_fast_sched, cluster_raster_keeps_the_16_n_block_band) {
    /* Units of 2 N-blocks in strips of 8 units: the same band of B as the
     * simple order, M-blocks in order inside a strip. */
    for (int mb = 1; mb <= 20; mb += 3)
        for (int nb = 1; nb <= 70; nb += 5) {
            dinf_fp8_gemm_args a = make_args(mb * 128, nb * 64, 128, 1, 128, 64, NULL);
            const int units = dinf_fp8_n_units(&a, 2);
            for (long long u = 0; u < (long long)mb * units; u++) {
                dinf_fp8_tile t;
                cr_assert_eq(dinf_fp8_unit_at(&a, DINF_FP8_GEMM_NORMAL, 128, 2, 0, u, &t), 1);
                cr_assert_eq(t.n_block / 16, (int)(u / (8LL * mb)), "mb=%d nb=%d u=%lld", mb, nb, u);
            }
        }
}

/* ---------------------------------------------------- output swizzle -- */

/* The TMA swizzle pattern, written from its definition (the 16-byte unit
 * bits 4.. of a shared address XORed with the bits 7.. above it), not from
 * the kernel's helper. */
static unsigned tma_swizzle(unsigned addr, int swizzle) {
    const unsigned mask = (unsigned)swizzle / 16u - 1u;
    return addr ^ (((addr >> 7) & mask) << 4);
}

Test(gemm_fast_sched, output_tile_swizzle_is_the_tma_pattern_bijective_and_conflict_free) {
    for (int bm = 64; bm <= 128; bm += 64)
        for (int i = 0; i < NUM_FAST_BNS; i++) {
            const int bn = fast_bns[i], sw = dinf_fp8_d_swizzle_bytes(bn);
            cr_assert((bn * 2) % sw == 0 && (sw == 128 || (bn * 2) % (2 * sw) != 0),
                      "bn=%d: swizzle %d is the widest dividing a row", bn, sw);
            cr_assert_eq((bm * sw) % 1024, 0, "chunks start 1024-byte aligned");
            const int bytes = bm * bn * 2;
            unsigned char *hit = calloc((size_t)bytes, 1);
            for (int row = 0; row < bm; row++)
                for (int col = 0; col < bn; col += 2) {
                    const unsigned off = dinf_fp8_d_smem_offset(row, col, bm, sw);
                    cr_assert_lt(off + 3, (unsigned)bytes);
                    cr_assert_eq(off % 4, 0);
                    /* what the TMA store of chunk col*2/sw reads for box element (row, col) */
                    const int chunk = col * 2 / sw, in_row = (col * 2) % sw;
                    cr_assert_eq(off, tma_swizzle((unsigned)(chunk * bm * sw + row * sw + in_row), sw),
                                 "bm=%d bn=%d (%d,%d)", bm, bn, row, col);
                    for (int b = 0; b < 4; b++) {
                        cr_assert_eq(hit[off + b], 0, "bm=%d bn=%d: byte %u twice", bm, bn, off + b);
                        hit[off + b] = 1;
                    }
                }
            free(hit);
            /* The kernel's split form equals it for every fragment element, and
             * each warp store (fixed half and i) hits 32 distinct banks. */
            for (int wg = 0; wg < bm / 64; wg++)
                for (int warp = 0; warp < 4; warp++)
                    for (int half = 0; half < 2; half++)
                        for (int fi = 0; fi < bn / 8; fi++) {
                            unsigned banks = 0;
                            for (int lane = 0; lane < 32; lane++) {
                                const int row = dinf_fp8_frag_row(wg, warp, lane, half);
                                const int col = dinf_fp8_frag_col(fi, lane);
                                const unsigned off = dinf_fp8_d_smem_frag_offset(
                                    dinf_fp8_d_smem_row_base(row, lane, sw),
                                    dinf_fp8_d_smem_row_xor(row, sw), fi, bm, sw);
                                cr_assert_eq(off, dinf_fp8_d_smem_offset(row, col, bm, sw),
                                             "bm=%d bn=%d row %d col %d", bm, bn, row, col);
                                banks |= 1u << ((off / 4) % 32);
                            }
                            cr_assert_eq(banks, 0xFFFFFFFFu, "bm=%d bn=%d i=%d: bank conflicts",
                                         bm, bn, fi);
                        }
        }
}

Test(gemm_fast_sched, shared_memory_carve_up_with_the_output_tile) {
    int checked = 0, checked256 = 0;
    for (int bm = 64; bm <= 256; bm *= 2)
        for (int i = 0; i < NUM_FAST_BNS; i++)
            for (int stages = 1; stages <= 16; stages++) {
                const int bn = fast_bns[i];
                if (bm == 256 && bn > DINF_FP8_FAST_BM256_MAX_BLOCK_N)
                    continue;
                const long long bytes = DINF_FP8_FAST_SMEM_BYTES(bm, bn, stages);
                if (bytes > DINF_FP8_SMEM_LIMIT)
                    continue;
                checked++;
                const dinf_fp8_smem_layout l =
                    dinf_fp8_smem_carve_d(bm, bn, stages, (unsigned)(bm * bn * 2));
                cr_assert_eq(l.d, 0u);
                cr_assert_eq(l.a, (unsigned)(bm * bn * 2), "the tile is a multiple of 1024");
                for (int s = 0; s < stages; s++) {
                    /* wgmma halves / waves (64 rows) and multicast halves of A */
                    for (int h = 0; h < 4; h++)
                        cr_assert_eq((l.a + s * l.a_stage + h * bm / 4 * 128) % 1024, 0,
                                     "A stage %d quarter %d of %dx%dx%d", s, h, bm, bn, stages);
                    for (int wave = 0; wave < bm / 64; wave++)
                        cr_assert_eq((l.a + s * l.a_stage + wave * 64 * 128) % 1024, 0);
                    cr_assert_eq((l.b + s * l.b_stage) % 1024, 0);
                    cr_assert_eq((l.sa + s * l.sa_stage) % 128, 0);
                }
                cr_assert_eq(l.full % 8, 0);
                cr_assert_eq(l.empty, l.full + 8u * stages);
                cr_assert_leq(1024 + (long long)l.end, bytes, "%dx%dx%d", bm, bn, stages);
                checked256 += bm == 256;
            }
    cr_assert_geq(checked, 2 * NUM_FAST_BNS * 5);
    /* BLOCK_M 256: A 32 KiB + B + 1 KiB of scales per stage beside a 256 x block_n output
     * tile: block_n 16 fits 6 stages, 32-48 5, 64-80 4, 96-128 3 */
    cr_assert_eq(checked256, 6 + 5 + 5 + 4 + 4 + 3 + 3 + 3);
    cr_assert_leq(DINF_FP8_FAST_SMEM_BYTES(256, 128, 3), DINF_FP8_SMEM_LIMIT);
    cr_assert_gt(DINF_FP8_FAST_SMEM_BYTES(256, 128, 4), DINF_FP8_SMEM_LIMIT);
}

Test(gemm_fast_sched, split_k_ranges_partition_the_k_blocks_and_the_partial_buffer_fits) {
    for (int kb = 1; kb <= 300; kb++)
        for (int split = 1; split <= DINF_FP8_FAST_MAX_SPLIT_K; split++) {
            /* consecutive runs from 0 to kb, ceil(kb / split) each until the
             * blocks run out (rank 0 the largest share) */
            int prev_end = 0;
            for (int r = 0; r < split; r++) {
                int b, e;
                dinf_fp8_split_k_range(kb, split, r, &b, &e);
                const int per = (kb + split - 1) / split;
                const int want = kb - prev_end < per ? kb - prev_end : per;
                cr_assert(b == prev_end && e - b == want,
                          "k_blocks %d split %d rank %d: [%d,%d)", kb, split, r, b, e);
                prev_end = e;
            }
            cr_assert_eq(prev_end, kb, "k_blocks %d split %d: every block once", kb, split);
        }
    for (int bm = 64; bm <= 128; bm += 64)
        for (int i = 0; i < NUM_FAST_BNS; i++) {
            const int bn = fast_bns[i], threads = 128 * (bm / 64);
            /* the i-major slots cover the tile once, a warp writes 32 consecutive words */
            char *seen = calloc((size_t)(bm * bn), 1);
            for (int t = 0; t < threads; t++)
                for (int a = 0; a < bn / 2; a++) {
                    const int slot = dinf_fp8_split_slot(a, t, threads);
                    cr_assert(slot >= 0 && slot < bm * bn && !seen[slot]);
                    seen[slot] = 1;
                    if (t % 32)
                        cr_assert_eq(slot, dinf_fp8_split_slot(a, t - 1, threads) + 1);
                }
            free(seen);
            for (int stages = 1; stages <= 16; stages++) {
                const long long bytes = DINF_FP8_FAST_SPLIT_SMEM_BYTES(bm, bn, stages, 2);
                /* one partial buffer per CTA whatever the split */
                cr_assert(bytes == DINF_FP8_FAST_SPLIT_SMEM_BYTES(bm, bn, stages, 3) &&
                          bytes == DINF_FP8_FAST_SPLIT_SMEM_BYTES(bm, bn, stages, 4));
                if (bytes > DINF_FP8_SMEM_LIMIT)
                    break;
                const unsigned partial = (unsigned)(bm * bn * 2);
                const dinf_fp8_smem_layout l =
                    dinf_fp8_smem_carve_d(bm, bn, stages, partial + (unsigned)(bm * bn * 4));
                cr_assert_eq(partial % 16, 0);
                cr_assert_geq(l.a, partial + (unsigned)(bm * bn * 4), "stages after the partial");
                cr_assert_eq(l.a % 1024, 0);
                cr_assert_leq(1024 + (long long)l.end + 16, bytes, "the reduction barriers fit");
            }
        }
}

/* ---------------------------------------- mbarrier protocol, 1-2 CTAs -- */

/* A phase completes when its arrivals are in and its transaction count is
 * back to zero; bytes may land before the expect_tx (the count goes below
 * zero meanwhile: a peer's multicast can beat this CTA's producer). */
static const char *bar_settle(model_bar *b) {
    if (b->pending == 0 && b->tx < 0)
        return "more bytes landed than the stage expected";
    if (b->pending == 0 && b->tx == 0) {
        b->completed++;
        b->pending = b->count;
    }
    return NULL;
}
static int bar_passes(const model_bar *b, unsigned parity) { return (b->completed & 1u) != parity; }

enum { MAXS = 16, MAXW = 8, MAXQ = 4 * MAXS * 2 * 2 };

/*
 * One cluster of `cluster` CTAs: per CTA a producer, `warps` math warps (one
 * empty-barrier arrival each, on every CTA of the cluster) and the TMA
 * landings, under a random interleaving; CTA c runs steps[c] k blocks, its
 * producer then drains (bounded waits, as its next `stages` fills would make,
 * for the releases of its last fills: they must pass in every correct run,
 * and only once every warp arriving there is done). The
 * kernel's counts: full barriers 1 arrival + the stage's bytes (A halves from
 * every CTA of the cluster, own B, own scales), empty barriers cluster * warps.
 * broken: 0 none; 1 producer waits on the full parity; 2 consumers wait on
 * the empty parity; 3 expect_tx 4 bytes short; 4 one warp never releases;
 * 5 empty barriers count only the CTA's own warps; 6 warps arrive only on
 * their own CTA; 7 (steps) a partner skipping its phantom; 8 the A half is
 * loaded into the issuing CTA only (no multicast); 9 the drain alone waits on
 * the full parity (it passes early).
 */
/* model_cluster: every warp of the cluster's CTAs (own_only: CTA c's alone)
 * has released fill j - stages, the one a pass of the empty wait for
 * iteration j stands for (trivially so for j < stages). */
static int released_by_all(int (*consumed)[MAXW], int cluster, int warps, int c,
                           int own_only, int j, int stages) {
    for (int d = 0; d < cluster; d++) {
        if (d != c && own_only)
            continue;
        for (int w = 0; w < warps; w++)
            if (j >= stages && consumed[d][w] <= j - stages)
                return 0;
    }
    return 1;
}

static const char *model_cluster(const int steps[2], int cluster, int stages, int warps, int bm,
                                 int bn, int broken, uint64_t seed) {
    model_bar full[2][MAXS], empty[2][MAXS];
    long long tag[2][MAXS][4]; /* A half 0, A half 1, B, scales: the k block held */
    const int parts = cluster + 2;
    for (int c = 0; c < cluster; c++)
        for (int s = 0; s < stages; s++) {
            bar_init(&full[c][s], 1);
            bar_init(&empty[c][s], broken == 5 ? warps : cluster * warps);
            for (int p = 0; p < 4; p++)
                tag[c][s][p] = -1;
        }
    struct {
        int cta, stage, part;
        long long it, bytes;
    } queue[MAXQ];
    int queued = 0, produced[2] = {0, 0}, drained[2] = {0, 0}, consumed[2][MAXW];
    memset(consumed, 0, sizeof consumed);
    const long long a_half = (long long)bm / cluster * 128;
    uint64_t r = seed;
    for (;;) {
        int done = queued == 0;
        for (int c = 0; c < cluster; c++) {
            done = done && produced[c] == steps[c] && drained[c] == stages;
            for (int w = 0; w < warps; w++)
                done = done && consumed[c][w] == steps[c];
        }
        if (done)
            return NULL;
        int runnable[2 * (1 + MAXW) + MAXQ], count = 0;
        for (int c = 0; c < cluster; c++) {
            if (produced[c] < steps[c] || drained[c] < stages) { /* a fill, or the drain */
                const dinf_fp8_pipe_slot p =
                    dinf_fp8_pipe_at((unsigned)(produced[c] + drained[c]), stages);
                const int wrong = broken == 1 || (broken == 9 && produced[c] == steps[c]);
                if (bar_passes(&empty[c][p.stage], wrong ? p.full_parity : p.empty_parity))
                    runnable[count++] = c * (1 + MAXW);
            }
            for (int w = 0; w < warps; w++)
                if (consumed[c][w] < steps[c]) {
                    const dinf_fp8_pipe_slot p = dinf_fp8_pipe_at((unsigned)consumed[c][w], stages);
                    if (bar_passes(&full[c][p.stage], broken == 2 ? p.empty_parity : p.full_parity))
                        runnable[count++] = c * (1 + MAXW) + 1 + w;
                }
        }
        for (int q = 0; q < queued; q++)
            runnable[count++] = 2 * (1 + MAXW) + q;
        if (count == 0)
            return "deadlock: every agent waits";
        const int agent = runnable[rng(&r) % (uint64_t)count];
        if (agent >= 2 * (1 + MAXW)) { /* a TMA box lands: data, then complete_tx */
            const int q = agent - 2 * (1 + MAXW);
            const int c = queue[q].cta, s = queue[q].stage;
            tag[c][s][queue[q].part] = queue[q].it;
            full[c][s].tx -= queue[q].bytes;
            const char *why = bar_settle(&full[c][s]);
            if (why)
                return why;
            queue[q] = queue[--queued];
            continue;
        }
        const int c = agent / (1 + MAXW), role = agent % (1 + MAXW);
        if (role == 0 && produced[c] == steps[c]) {
            /* producer of CTA c, after its last fill: one drain wait passed
             * (the kernel's bounded waits on the releases of its last
             * `stages` fills, by every warp arriving on its empty barriers) */
            const int j = steps[c] + drained[c]++;
            if (!released_by_all(consumed, cluster, warps, c, broken == 6, j, stages))
                return "a drain passed before a consumer released its stage";
        } else if (role == 0) { /* producer of CTA c */
            const int it = produced[c]++;
            const int s = dinf_fp8_pipe_at((unsigned)it, stages).stage;
            /* every CTA its loads write into must have released the stage */
            if (!released_by_all(consumed, cluster, warps, c, broken == 8, it, stages))
                return "a producer refills a stage a consumer has not released";
            full[c][s].tx += dinf_fp8_stage_tx_bytes(bm, bn) - (broken == 3 ? 4 : 0);
            full[c][s].pending--;
            const char *why = bar_settle(&full[c][s]);
            if (why)
                return why;
            for (int d = 0; d < cluster; d++) {
                if (d != c && broken == 8)
                    continue;
                cr_assert_lt(queued, MAXQ);
                queue[queued].cta = d, queue[queued].stage = s, queue[queued].part = c;
                queue[queued].it = it, queue[queued].bytes = a_half;
                queued++;
            }
            cr_assert_lt(queued + 2, MAXQ);
            queue[queued].cta = c, queue[queued].stage = s, queue[queued].part = cluster;
            queue[queued].it = it, queue[queued].bytes = (long long)bn * 128;
            queued++;
            queue[queued].cta = c, queue[queued].stage = s, queue[queued].part = cluster + 1;
            queue[queued].it = it, queue[queued].bytes = (long long)bm * 4;
            queued++;
        } else { /* math warp w of CTA c: read the stage, release it on every CTA */
            const int w = role - 1, it = consumed[c][w]++;
            const int s = dinf_fp8_pipe_at((unsigned)it, stages).stage;
            for (int p = 0; p < parts; p++)
                if (tag[c][s][p] != it)
                    return "a consumer reads a stage that does not hold its k block";
            if (broken == 4 && c == 0 && w == 0)
                continue;
            for (int d = 0; d < cluster; d++) {
                if (d != c && broken == 6)
                    continue;
                empty[d][s].pending--;
                if (empty[d][s].pending < 0)
                    return "an empty barrier got more arrivals than it counts";
                bar_settle(&empty[d][s]);
            }
        }
    }
}

/* The k blocks CTA `rank` of cluster `cid` runs (the kernel's loop). */
static int model_steps(const dinf_fp8_gemm_args *a, int form, int bm, int cluster, int rank,
                       long long cid, long long num_clusters, int skip_phantoms) {
    int n = 0;
    for (long long u = cid;; u += num_clusters) {
        dinf_fp8_tile tile;
        const int found = dinf_fp8_unit_at(a, form, bm, cluster, rank, u, &tile);
        if (found < 0)
            break;
        if (found == 0 || (skip_phantoms && tile.phantom))
            continue;
        n += a->k_blocks;
    }
    return n;
}

Test(gemm_fast_model, mbarrier_protocol_of_1_and_2_cta_clusters_never_races_or_deadlocks) {
    static int32_t idx[12 * 128];
    for (int b = 0; b < 12; b++)
        for (int r = 0; r < 128; r++)
            idx[b * 128 + r] = b % 5 == 1 ? -1 : b % 7 == 3 ? 9 : b % 3;
    static const int32_t masked[4] = {0, 77, 300, 1};
    uint64_t seed = 17;
    int runs = 0;
    for (int form = 0; form < 3; form++)
        for (int cluster = 1; cluster <= 2; cluster++)
            for (int stages = 1; stages <= 7; stages += 2)
                for (int kbs = 1; kbs <= 5; kbs += 4)
                    for (int clusters = 1; clusters <= 3; clusters++) {
                        /* BLOCK_M 256 (normal, masked) at 5 stages: block_n 112 or 16 */
                        const int bm = form == DINF_FP8_GEMM_MASKED && stages % 3 == 0 ? 64
                                       : form != DINF_FP8_GEMM_CONTIGUOUS && stages == 5 ? 256
                                                                                        : 128;
                        const int bn = fast_bns[(stages + kbs) % NUM_FAST_BNS];
                        const int m = form == DINF_FP8_GEMM_CONTIGUOUS ? 12 * 128 : 300;
                        const int32_t *info = form == DINF_FP8_GEMM_CONTIGUOUS ? idx
                                              : form == DINF_FP8_GEMM_MASKED   ? masked
                                                                               : NULL;
                        /* n = 5 N-blocks: an odd count, the last unit has a phantom */
                        dinf_fp8_gemm_args a = make_args(m, 5 * bn - 3, kbs * 128 - 5,
                                                         form == DINF_FP8_GEMM_NORMAL ? 1 : 4, bm,
                                                         bn, info);
                        for (long long cid = 0; cid < clusters; cid++) {
                            int steps[2];
                            for (int rk = 0; rk < cluster; rk++)
                                steps[rk] = model_steps(&a, form, bm, cluster, rk, cid, clusters, 0);
                            if (cluster == 2)
                                cr_assert_eq(steps[0], steps[1], "the pair runs the same k blocks");
                            for (int trial = 0; trial < 3; trial++) {
                                const char *why =
                                    model_cluster(steps, cluster, stages,
                                                  dinf_fp8_math_warpgroups(bm) * 4, bm, bn, 0, seed++);
                                cr_assert_null(why,
                                               "form %d cluster %d, %d stages, %d k blocks, "
                                               "cluster %lld of %d: %s",
                                               form, cluster, stages, kbs, cid, clusters, why);
                                runs++;
                            }
                        }
                    }
    /* Split-K pairs: each CTA's pipeline is its own (no multicast), over its
     * half of every tile's k blocks. */
    for (int kbs = 1; kbs <= 9; kbs += 2)
        for (int stages = 1; stages <= 6; stages += 5) {
            dinf_fp8_gemm_args a = make_args(300, 5 * 64, kbs * 128, 1, 128, 64, NULL);
            for (int rk = 0; rk < 2; rk++) {
                int steps[2] = {0, 0};
                for (long long u = 0;; u++) {
                    dinf_fp8_tile tile;
                    const int f = dinf_fp8_unit_at(&a, DINF_FP8_GEMM_NORMAL, 128, 1, 0, u, &tile);
                    if (f < 0)
                        break;
                    int b, e;
                    dinf_fp8_split_k_range(a.k_blocks, 2, rk, &b, &e);
                    steps[0] += e - b;
                }
                for (int trial = 0; trial < 3; trial++, runs++)
                    cr_assert_null(model_cluster(steps, 1, stages, 8, 128, 64, 0, seed++),
                                   "split-K rank %d, %d k blocks", rk, kbs);
            }
        }
    cr_log_info("%d protocol runs", runs);
    /* Each planted bug is caught (so the model can fail), at BLOCK_M 128 and
     * 256 (its 128-row multicast halves, 50176-byte stages). */
    for (int bm = 128; bm <= 256; bm *= 2) {
        dinf_fp8_gemm_args a = make_args(bm == 256 ? 600 : 300, 5 * 64, 9 * 128, 1, bm, 64, NULL);
        for (int broken = 1; broken <= 9; broken++)
            for (int cluster = 1; cluster <= 2; cluster++) {
                if (broken >= 5 && broken <= 8 && cluster == 1)
                    continue; /* cluster-only mistakes */
                int steps[2];
                for (int rk = 0; rk < cluster; rk++)
                    steps[rk] = model_steps(&a, DINF_FP8_GEMM_NORMAL, bm, cluster, rk, 0, 1,
                                            broken == 7 && rk == 1);
                int caught = 0;
                for (int trial = 0; trial < 20; trial++)
                    caught += model_cluster(steps, cluster, 3, 8, bm, bm == 256 ? 128 : 64,
                                            broken, 1000 + (uint64_t)trial) != NULL;
                cr_assert_eq(caught, 20,
                             "broken variant %d (cluster %d, block_m %d) went unnoticed in %d of 20",
                             broken, cluster, bm, 20 - caught);
            }
    }
}

/*
 * The split-K reduction handshake of fp8_gemm_fast.cuh: a cluster of `ranks`
 * CTAs, `threads` math warps each (the kernel arrives once per warp after
 * __syncwarp, so a warp is one agent here), `tiles` reductions in order. Rank
 * r > 0's warp t waits on its own red_empty for parity (j & 1) ^ 1, writes
 * its slots of its own buffer, arrives on rank 0's red_full (count (ranks -
 * 1) * warps); rank 0's warp t waits on red_full for parity j & 1, reads its
 * slots of every other rank's buffer in rank order, then arrives on every
 * such rank's red_empty (count warps). broken: 1 ranks > 0 wait the wrong
 * parity; 2 rank 0 waits the wrong parity; 3 red_full counts one arrival
 * short; 4 rank 0 never releases the buffers; 5 rank 0 releases rank 1's
 * buffer only; 6 red_full counts one rank's threads only.
 */
static const char *model_split_reduction(int ranks, int threads, int tiles, int broken,
                                         uint64_t seed) {
    enum { MAXT = 16, MAXR = 4 };
    model_bar red_full, red_empty[MAXR];
    const int full_count = broken == 6 ? threads : (ranks - 1) * threads;
    bar_init(&red_full, broken == 3 ? full_count - 1 : full_count);
    for (int r = 1; r < ranks; r++)
        bar_init(&red_empty[r], threads);
    int written[MAXR][MAXT], read[MAXT], slot[MAXR][MAXT];
    for (int t = 0; t < threads; t++) {
        read[t] = 0;
        for (int r = 0; r < ranks; r++)
            written[r][t] = 0, slot[r][t] = -1;
    }
    uint64_t rs = seed;
    for (;;) {
        int runnable[MAXR * MAXT], count = 0, done = 1;
        for (int t = 0; t < threads; t++) {
            done = done && read[t] == tiles;
            for (int r = 1; r < ranks; r++) {
                done = done && written[r][t] == tiles;
                if (written[r][t] < tiles) {
                    const unsigned parity = ((unsigned)written[r][t] & 1u) ^ (broken == 1 ? 0u : 1u);
                    if (bar_passes(&red_empty[r], parity))
                        runnable[count++] = r * MAXT + t;
                }
            }
            if (read[t] < tiles) {
                const unsigned parity = ((unsigned)read[t] & 1u) ^ (broken == 2 ? 1u : 0u);
                if (bar_passes(&red_full, parity))
                    runnable[count++] = t;
            }
        }
        if (done)
            return NULL;
        if (count == 0)
            return "deadlock: every thread waits";
        const int agent = runnable[rng(&rs) % (uint64_t)count];
        const int r = agent / MAXT, t = agent % MAXT;
        if (r > 0) { /* rank r's thread: write its own slot, arrive on rank 0's red_full */
            const int j = written[r][t]++;
            if (slot[r][t] >= 0 && read[t] < j)
                return "a rank overwrites a partial rank 0 has not read";
            slot[r][t] = j;
            red_full.pending--;
            bar_settle(&red_full);
        } else { /* rank 0's thread: read every rank's slot, release the buffers */
            const int j = read[t]++;
            for (int q = 1; q < ranks; q++) {
                if (written[q][t] <= j)
                    return "rank 0 reads a partial before it has landed";
                if (slot[q][t] != j)
                    return "rank 0 reads another tile's partial";
            }
            for (int q = 1; q < ranks && broken != 4; q++) {
                if (broken == 5 && q > 1)
                    break;
                red_empty[q].pending--;
                bar_settle(&red_empty[q]);
            }
        }
    }
}

Test(gemm_fast_model, split_k_reduction_handshake_never_races_or_deadlocks) {
    int runs = 0;
    for (int ranks = 2; ranks <= 4; ranks++)
        for (int threads = 1; threads <= 8; threads++)
            for (int tiles = 0; tiles <= 9; tiles++)
                for (int trial = 0; trial < 5; trial++, runs++) {
                    const char *why =
                        model_split_reduction(ranks, threads, tiles, 0, 77 + (uint64_t)runs);
                    cr_assert_null(why, "%d ranks, %d threads, %d tiles: %s", ranks, threads,
                                   tiles, why);
                }
    for (int broken = 1; broken <= 6; broken++)
        for (int ranks = 2; ranks <= 4; ranks++) {
            if ((broken == 5 || broken == 6) && ranks == 2)
                continue; /* the same protocol as the correct one with two ranks */
            int caught = 0;
            for (int trial = 0; trial < 20; trial++)
                caught += model_split_reduction(ranks, 4, 6, broken, 500 + (uint64_t)trial) != NULL;
            cr_assert_eq(caught, 20, "broken variant %d with %d ranks went unnoticed in %d of 20",
                         broken, ranks, 20 - caught);
        }
}

/* ---------------------------------------------------------- heuristic -- */

Test(gemm_fast_heuristic, follows_the_documented_rule) {
    const int forms[] = {DINF_FP8_GEMM_NORMAL, DINF_FP8_GEMM_CONTIGUOUS, DINF_FP8_GEMM_MASKED};
    const int sms[] = {1, 78, 114, 132};
    uint64_t seed = 5;
    int picked256 = 0, picked_split = 0, remodelled = 0, picked_split34[2] = {0, 0};
    for (int trial = 0; trial < 4000; trial++) {
        const int form = forms[trial % 3], num_sms = sms[(trial / 3) % 4];
        /* every other trial small (mostly one wave: the cost model's ground) */
        const int small = trial % 2;
        long long m = (long long)(rng(&seed) % (small ? 300 : 9000));
        if (form == DINF_FP8_GEMM_CONTIGUOUS)
            m = 128 * (1 + (long long)(rng(&seed) % (small ? 2 : 64)));
        const long long n = 1 + (long long)(rng(&seed) % (small ? 8000 : 40000)),
                        k = 1 + (long long)(rng(&seed) % 20000);
        const long long groups = 1 + (long long)(rng(&seed) % 32);
        /* half the trials on a device whose GPCs leave clusters of 3 and 4
         * short of num_sms / c (random counts below the ideal) */
        dinf__fp8_device dev;
        dinf__fp8_device_ideal(num_sms, &dev);
        if (trial % 4 >= 2)
            for (int cs = 3; cs <= 4; cs++)
                dev.slots[cs] -= (int)(rng(&seed) % (uint64_t)(dev.slots[cs] / 4 + 1));
        const dinf__fp8_config c =
            trial % 4 >= 2 ? dinf__fp8_heuristic_dev(form, m, n, k, groups, &dev)
                           : dinf__fp8_heuristic(form, m, n, k, groups, num_sms);
        const long long mm = m < 1 ? 1 : m;
        cr_assert_eq(c.kernel, DINF__FP8_KERNEL_FAST);
        const int bm128 = form == DINF_FP8_GEMM_CONTIGUOUS ? 128 : mm <= 64 ? 64 : 128;
        cr_assert(c.block_m == bm128 || (c.block_m == 256 && bm128 == 128),
                  "block_m %d", c.block_m);
        /* Rank every candidate by (waves, -last wave, -stages, -multicast, block_n). */
        const long long g = form == DINF_FP8_GEMM_MASKED ? groups : 1;
        long long best[5] = {0};
        int have = 0, best_bn = 0, best_stages = 0, best_cluster = 0;
        for (int i = 0; i < NUM_FAST_BNS; i++) {
            const int bn = fast_bns[i];
            const long long nb = cdiv(n, bn);
            const long long tiles = (long long)cdiv(mm, bm128) * nb * g;
            const long long waves = (tiles + num_sms - 1) / num_sms;
            const long long last = tiles % num_sms ? tiles % num_sms : num_sms;
            int stages = 0;
            while (stages < 16 &&
                   DINF_FP8_FAST_SMEM_BYTES(bm128, bn, stages + 1) <= DINF_FP8_SMEM_LIMIT)
                stages++;
            const int mc = num_sms % 2 == 0 && nb % 2 == 0 && mm >= 512 && waves > 1;
            const long long key[5] = {waves, -last, -stages, -mc, bn};
            int less = !have;
            for (int j = 0; j < 5 && have; j++)
                if (key[j] != best[j]) {
                    less = key[j] < best[j];
                    break;
                }
            if (less) {
                memcpy(best, key, sizeof key);
                have = 1, best_bn = bn, best_stages = stages, best_cluster = mc ? 2 : 1;
            }
        }
        /* One wave: every one-wave candidate, unsplit (tiles <= num_sms) or
         * split-K s = 2..4 (>= 8 k blocks, every rank with some, tiles <= the
         * slots of clusters of s: num_sms / s here, or the device's), by the
         * modelled cycles (recomputed here from the documented terms) within
         * 1/32 of the fewest, then more CTAs, the smaller split, more stages,
         * the smaller block_n. */
        int best_split = 1;
        long long best_waves = best[0], best_last = -best[1];
        if (best[0] == 1) {
            const long long kb = cdiv(k, 128);
            const long long rows = form == DINF_FP8_GEMM_MASKED ? mm * groups : mm;
            const long long mats = form == DINF_FP8_GEMM_NORMAL ? 1 : groups;
            const long long hbm = (mats * n * k + rows * k + 2 * rows * n) / 2600;
            /* pass 0: the fewest cycles; pass 1: among those within 1/32 of
             * it, rank by (-CTAs, split, -stages, block_n) */
            long long fewest = -1, key1[4] = {0};
            int have1 = 0;
            for (int pass = 0; pass < 2; pass++)
            for (int split = 1; split <= 4; split++) {
                if (split > 1 && (kb < 8 || (split - 1) * cdiv(kb, split) >= kb))
                    continue; /* too few k blocks, or a rank without any */
                for (int i = 0; i < NUM_FAST_BNS; i++) {
                    const int bn = fast_bns[i];
                    const long long tiles = cdiv(mm, bm128) * cdiv(n, bn) * g;
                    if (tiles > (split == 1 ? num_sms : dev.slots[split]))
                        continue;
                    const long long ctas = split * tiles, kc = cdiv(kb, split);
                    const long long rate = 64 * ctas < 6144 ? 64 * ctas : 6144;
                    const long long a_rows = mm < bm128 ? mm : bm128; /* TMA reads no more */
                    long long t = ctas * kc * 128 * (a_rows + bn) / rate;
                    const long long smem = kc * (bm128 + (bm128 / 64) * bn);
                    const long long mma = kc * bm128 * bn / 32;
                    t = t > smem ? t : smem;
                    t = t > mma ? t : mma;
                    t = (t > hbm ? t : hbm) + (split - 1) * bm128 * bn * 4 / 64;
                    if (pass == 0) {
                        fewest = fewest < 0 || t < fewest ? t : fewest;
                        continue;
                    }
                    if (t > fewest + fewest / 32)
                        continue;
                    int stages = 0;
                    while (stages < 16 && DINF_FP8_FAST_SPLIT_SMEM_BYTES(bm128, bn, stages + 1,
                                                                         split) <=
                                              DINF_FP8_SMEM_LIMIT)
                        stages++;
                    const long long key[4] = {-ctas, split, -stages, bn};
                    int less = !have1;
                    for (int j = 0; j < 4 && have1; j++)
                        if (key[j] != key1[j]) {
                            less = key[j] < key1[j];
                            break;
                        }
                    if (less) {
                        memcpy(key1, key, sizeof key);
                        have1 = 1, best_split = split, best_bn = bn, best_stages = stages;
                        best_cluster = split, best_waves = 1, best_last = ctas;
                    }
                }
            }
            cr_assert(have1, "a one-wave choice has a one-wave candidate");
        }
        /* BLOCK_M 256: normal / masked, > 128 rows, unsplit; the same ranking over
         * block_n <= 128; taken when waves x 256 x block_n is strictly below the
         * 128-row choice's waves x 128 x block_n. */
        int best_bm = bm128;
        if (form != DINF_FP8_GEMM_CONTIGUOUS && bm128 == 128 && best_split == 1 && mm > 128) {
            long long key256[5] = {0};
            int have256 = 0, bn256 = 0, st256 = 0, cl256 = 0;
            for (int i = 0; i < NUM_FAST_BNS && fast_bns[i] <= 128; i++) {
                const int bn = fast_bns[i];
                const long long nb = cdiv(n, bn);
                const long long tiles = (long long)cdiv(mm, 256) * nb * g;
                const long long waves = (tiles + num_sms - 1) / num_sms;
                const long long last = tiles % num_sms ? tiles % num_sms : num_sms;
                int stages = 0;
                while (stages < 16 &&
                       DINF_FP8_FAST_SMEM_BYTES(256, bn, stages + 1) <= DINF_FP8_SMEM_LIMIT)
                    stages++;
                const int mc = num_sms % 2 == 0 && nb % 2 == 0 && mm >= 512 && waves > 1;
                const long long key[5] = {waves, -last, -stages, -mc, bn};
                int less = !have256;
                for (int j = 0; j < 5 && have256; j++)
                    if (key[j] != key256[j]) {
                        less = key[j] < key256[j];
                        break;
                    }
                if (less) {
                    memcpy(key256, key, sizeof key);
                    have256 = 1, bn256 = bn, st256 = stages, cl256 = mc ? 2 : 1;
                }
            }
            if (have256 && key256[0] * 256 * bn256 < best_waves * 128 * best_bn) {
                best_bm = 256, best_bn = bn256, best_stages = st256, best_cluster = cl256;
                best_waves = key256[0], best_last = -key256[1];
            }
        }
        cr_assert_eq(c.block_m, best_bm, "form %d m=%lld n=%lld k=%lld sms=%d: block_m %d, want %d",
                     form, m, n, k, num_sms, c.block_m, best_bm);
        cr_assert_eq(c.block_n, best_bn, "form %d m=%lld n=%lld k=%lld sms=%d: block_n %d, want %d",
                     form, m, n, k, num_sms, c.block_n, best_bn);
        picked256 += c.block_m == 256;
        picked_split += c.split_k == 2;
        picked_split34[c.split_k >= 3 ? c.split_k - 3 : 0] += c.split_k >= 3;
        cr_assert_eq(c.cluster, c.split_k > 1 ? c.split_k : c.cluster);
        if (c.split_k > 1)
            cr_assert_leq(c.tiles, dev.slots[c.split_k], "one unit per resident cluster");
        /* a one-wave choice the fullest-last-wave rule alone would not make */
        remodelled += best[0] == 1 && (c.split_k == 2 || c.block_n != (int)best[4]);
        cr_assert_eq(c.split_k, best_split, "form %d m=%lld n=%lld k=%lld sms=%d", form, m, n, k,
                     num_sms);
        cr_assert_eq(c.stages, best_stages);
        cr_assert_eq(c.cluster, best_cluster);
        cr_assert_eq(c.waves, best_waves);
        cr_assert_eq(c.last_wave, best_last);
        cr_assert_eq(c.smem_bytes,
                     DINF_FP8_FAST_SPLIT_SMEM_BYTES(c.block_m, c.block_n, c.stages, c.split_k));
        cr_assert_leq(c.smem_bytes, DINF_FP8_SMEM_LIMIT);
        cr_assert_eq(c.threads, c.block_m == 64 ? 256 : 384);
    }
    cr_assert_gt(picked256, 100, "the random shapes reach BLOCK_M 256 (%d)", picked256);
    cr_assert_gt(picked_split, 100, "the random shapes reach split-K 2 (%d)", picked_split);
    cr_assert_gt(picked_split34[0], 50, "... split-K 3 (%d)", picked_split34[0]);
    cr_assert_gt(picked_split34[1], 50, "... split-K 4 (%d)", picked_split34[1]);
    cr_assert_gt(remodelled, 100, "the cost model moves one-wave choices (%d)", remodelled);
}

Test(gemm_fast_heuristic, choices_for_the_deepseek_v3_shapes_on_132_sms) {
    /* (form, rows hint, n, k, groups) -> (block_m, block_n, stages, cluster, split_k),
     * reviewed against the wave arithmetic (comments: tiles, waves, last
     * wave; the simple rung's tiles and waves beside). */
    static const long long table[][10] = {
        /* normal, M = 64 */
        /* one wave, re-ranked by the cost model (132 SMs, clusters packing fully;
         * modelled cycles): 64x48 split-K 3, 44 tiles = 132 CTAs, 6487 (the HBM floor
         * 6103 + the reduction tail; 64x48 split 2's 88 CTAs model 6464, within 1/32)
         * against the fullest wave's 64x16, 132 CTAs: 12320 (each CTA streams all of A
         * for 16 columns: L2-bound) */
        {0, 64, 2112, 7168, 1, 64, 48, 14, 3, 3},
        {0, 64, 24576, 1536, 1, 64, 96, 10, 1, 1},  /* 256, 2 waves, last 124 (simple 192, last 60) */
        {0, 64, 32768, 512, 1, 64, 128, 8, 1, 1},   /* 256, 2, 124 */
        {0, 64, 7168, 16384, 1, 64, 112, 8, 2, 2}, /* split-K: 64 tiles x 2 = 128 CTAs (unsplit 112) */
        {0, 64, 4096, 7168, 1, 64, 64, 12, 2, 2},   /* 128 CTAs: 11926 vs 64x32's 14336 */
        /* 112 CTAs at the HBM floor, 6049; 64x112 split 2's 128 CTAs add a 448-cycle
         * reduction tail (7%, beyond the 1/32 tolerance) */
        {0, 64, 7168, 2048, 1, 64, 64, 13, 1, 1},
        {0, 64, 7168, 576, 1, 64, 64, 13, 1, 1},    /* 112, 1 */
        /* normal, M = 128 */
        {0, 128, 2112, 7168, 1, 128, 80, 6, 4, 4},   /* 108 CTAs: 8472 vs 128x16's 132: 22176 */
        {0, 128, 24576, 1536, 1, 128, 96, 7, 1, 1},
        {0, 128, 32768, 512, 1, 128, 128, 5, 1, 1},
        {0, 128, 7168, 16384, 1, 128, 112, 4, 2, 2}, /* split-K, 128 CTAs */
        {0, 128, 4096, 7168, 1, 128, 96, 5, 3, 3},   /* 129 CTAs: 13584 vs 128x32's 23893 */
        {0, 128, 7168, 2048, 1, 128, 80, 7, 1, 1},   /* 90 CTAs: 6656 vs 128x112 split 2's 7348 */
        {0, 128, 7168, 576, 1, 128, 64, 8, 1, 1},
        /* normal, M = 4096: the non-power-of-two tiles cut the waves */
        {0, 4096, 2112, 7168, 1, 128, 144, 5, 1, 1},  /* 480 tiles, 4 waves (simple 544, 5) */
        {0, 4096, 24576, 1536, 1, 128, 160, 5, 2, 1}, /* 4928, 38 (simple 6144, 47); 154 N-blocks */
        {0, 4096, 32768, 512, 1, 128, 160, 5, 1, 1},  /* 6560, 50; 205 N-blocks: odd */
        /* 1440, 11, last 120 (simple 1792, 14); 256x128 would take 896 tiles, 7 waves:
         * 229376 > 11 x 128 x 160 = 225280 (it loses SM fill: kept at 128 rows, like the
         * other N = 7168 shapes) */
        {0, 4096, 7168, 16384, 1, 128, 160, 5, 1, 1},
        /* 256x128: 512 tiles, 4 waves, last 116: wave time 4 x 256 x 128 = 131072 < 128x160's
         * 832 tiles, 7 waves, last 40: 143360 (simple 1024, 8); 32 N-blocks: multicast */
        {0, 4096, 4096, 7168, 1, 256, 128, 3, 2, 1},
        {0, 4096, 7168, 2048, 1, 128, 160, 5, 1, 1},
        {0, 4096, 7168, 576, 1, 128, 160, 5, 1, 1},
        /* contiguous (m_sum = G * M per group) */
        {1, 32768, 4096, 7168, 4, 128, 160, 5, 2, 1}, /* 6656, 51 (simple 8192, 63) */
        {1, 32768, 7168, 2048, 4, 128, 160, 5, 1, 1}, /* 11520, 88 (simple 14336, 109) */
        {1, 32768, 4096, 7168, 8, 128, 160, 5, 2, 1},
        {1, 32768, 7168, 2048, 8, 128, 160, 5, 1, 1},
        {1, 8192, 4096, 7168, 32, 128, 160, 5, 2, 1},
        {1, 8192, 7168, 2048, 32, 128, 160, 5, 1, 1},
        /* masked: v1.0's (G, m_max) sets by their expected rows, HEAD's (G, expected) */
        {2, 1024, 4096, 7168, 1, 128, 128, 5, 2, 1},  /* 256, 2 waves, last 124 */
        /* 256x112: 256 tiles, 2 waves, last 124: 57344 < 128x160's 360, 3: 61440 (simple 448, 4) */
        {2, 1024, 7168, 2048, 1, 256, 112, 3, 2, 1},
        {2, 512, 4096, 7168, 2, 128, 128, 5, 2, 1},
        {2, 512, 7168, 2048, 2, 256, 112, 3, 2, 1},   /* as above: 256 tiles, 2 waves vs 360, 3 */
        {2, 256, 4096, 7168, 4, 128, 128, 5, 1, 1},   /* rows < 512: no multicast */
        {2, 256, 7168, 2048, 4, 256, 112, 3, 1, 1},   /* the same counts; rows < 512: no multicast */
        /* 256x128: 1024 tiles (one M-block per group), 8 waves: 262144 < 128x160's 1664, 13:
         * 266240 (simple 2048, 16) */
        {2, 192, 4096, 7168, 32, 256, 128, 3, 1, 1},
        /* 256x128: 768, 6 waves: 196608 < 128x160's 1248, 10: 204800 (simple 1536, 12) */
        {2, 1024, 4096, 7168, 6, 256, 128, 3, 2, 1},
        {2, 20, 4096, 7168, 32, 64, 160, 7, 1, 1},    /* 832, 7 (simple 1024, 8) */
        {2, 20, 7168, 2048, 6, 64, 112, 9, 1, 1},     /* 384, 3, last 120 (simple 336, last 72) */
        /* HEAD's lists: normal M = 1 and (N, K) = (576, 7168); contiguous (G, M) in
         * {(4, 8192), (8, 4096)} x (N, K) in {(6144,7168), (7168,3072), (4096,4096), (4096,2048)} */
        /* one row of A: the fullest wave's 64x16 is at the HBM floor (5827) already */
        {0, 1, 2112, 7168, 1, 64, 16, 16, 1, 1},
        {0, 1, 576, 7168, 1, 64, 16, 16, 3, 3},       /* 36 tiles x 3 = 108 CTAs: 1719 vs 4480 */
        {0, 1, 24576, 1536, 1, 64, 96, 10, 1, 1},
        {0, 1, 32768, 512, 1, 64, 128, 8, 1, 1},
        {0, 1, 7168, 16384, 1, 64, 112, 8, 2, 2},
        {0, 1, 4096, 7168, 1, 64, 32, 16, 1, 1},      /* 128 CTAs at the HBM floor */
        {0, 1, 7168, 2048, 1, 64, 64, 13, 1, 1},
        {0, 128, 576, 7168, 1, 128, 32, 9, 4, 4},     /* 72 CTAs: 5248 */
        {0, 4096, 576, 7168, 1, 128, 144, 5, 1, 1},   /* 128 tiles, 1 wave (simple 160, 2 waves) */
        {1, 32768, 6144, 7168, 4, 128, 160, 5, 1, 1}, /* 9984 tiles, 76 waves; 39 N-blocks */
        {1, 32768, 7168, 3072, 4, 128, 160, 5, 1, 1},
        {1, 32768, 4096, 4096, 4, 128, 160, 5, 2, 1},
        {1, 32768, 4096, 2048, 4, 128, 160, 5, 2, 1},
        {1, 32768, 6144, 7168, 8, 128, 160, 5, 1, 1},
        {1, 32768, 7168, 3072, 8, 128, 160, 5, 1, 1},
        {1, 32768, 4096, 4096, 8, 128, 160, 5, 2, 1},
        {1, 32768, 4096, 2048, 8, 128, 160, 5, 2, 1},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const long long *t = table[i];
        const dinf__fp8_config c = dinf__fp8_heuristic((int)t[0], t[1], t[2], t[3], t[4], 132);
        const dinf__fp8_config s = dinf__fp8_heuristic_simple((int)t[0], t[1], t[2], t[3], t[4], 132);
        cr_assert(c.block_m == t[5] && c.block_n == t[6] && c.stages == t[7] && c.cluster == t[8] &&
                      c.split_k == t[9],
                  "shape %zu (form %lld, %lld x %lld x %lld, G %lld): %dx%d, %d stages, cluster %d, "
                  "split %d; want %lldx%lld, %lld, %lld, %lld",
                  i, t[0], t[1], t[2], t[3], t[4], c.block_m, c.block_n, c.stages, c.cluster,
                  c.split_k, t[5], t[6], t[7], t[8], t[9]);
        /* never more waves than the simple rung's choice */
        cr_assert_leq(c.waves, s.waves, "shape %zu", i);
        if (c.cluster == 2 && c.split_k == 1)
            cr_assert_eq(cdiv(t[2], c.block_n) % 2, 0, "multicast only without phantoms");
        if (c.waves == 1 && s.waves == 1) {
            /* one wave: the simple rung's choice (the fullest last wave, the
             * old rule's kind of pick) never models faster than the choice
             * beyond the heuristic's 1/32 tolerance */
            const long long kb = cdiv(t[3], 128);
            const long long hbm = dinf__fp8_hbm_cycles((int)t[0], t[1], t[2], t[3], t[4]);
            const long long mine = dinf__fp8_one_wave_cycles(c.block_m, c.block_n, c.split_k, kb,
                                                             t[1], c.split_k * c.tiles, hbm);
            const long long simple_cycles =
                dinf__fp8_one_wave_cycles(s.block_m, s.block_n, 1, kb, t[1], s.tiles, hbm);
            cr_assert_leq(mine, simple_cycles + simple_cycles / 32,
                          "shape %zu", i);
            cr_assert_leq(c.split_k * c.tiles, 132, "shape %zu", i);
        }
    }
}

Test(gemm_fast_heuristic, split_k_clusters_fit_the_devices_cluster_slots) {
    /* A 132-SM device whose GPCs hold 42 clusters of 3 and 32 of 4 (e.g. two
     * GPCs of 18 SMs and six of 16): a split-K cluster per unit, every unit
     * resident at once, so the persistent grid is one wave. */
    dinf__fp8_device dev;
    dinf__fp8_device_ideal(132, &dev);
    cr_assert(dev.num_sms == 132 && dev.slots[1] == 132 && dev.slots[2] == 66 &&
              dev.slots[3] == 44 && dev.slots[4] == 33);
    dev.slots[3] = 42, dev.slots[4] = 32;
    static const long long table[][9] = {
        /* m, n, k -> block_m, block_n, stages, cluster, split_k, grid */
        {64, 2112, 7168, 64, 64, 12, 3, 3, 99},    /* 64x48 would need 44 threes */
        {128, 2112, 7168, 128, 80, 6, 4, 4, 108},  /* 27 fours fit: as packed fully */
        {128, 4096, 7168, 128, 80, 6, 2, 2, 104},  /* 128x96 would need 43 threes */
        {64, 4096, 7168, 64, 64, 12, 2, 2, 128},   /* pairs: as packed fully */
        {64, 7168, 16384, 64, 112, 8, 2, 2, 128},  /* pairs: as packed fully */
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const long long *t = table[i];
        const dinf__fp8_gpu_problem p = {DINF_FP8_GEMM_NORMAL, t[0], t[1], t[2], 1, 0,
                                         (const uint8_t *)(uintptr_t)0x10000, t[2],
                                         (const float *)(uintptr_t)0x20000,
                                         (const uint8_t *)(uintptr_t)0x30000, t[2],
                                         (const float *)(uintptr_t)0x40000,
                                         (uint16_t *)(uintptr_t)0x50000, t[1], NULL, 0};
        dinf__fp8_launch_plan plan;
        dinf__fp8_plan_dev(&p, &dev, DINF__FP8_KERNEL_FAST, &plan);
        const dinf__fp8_config *c = &plan.config;
        cr_assert(c->block_m == t[3] && c->block_n == t[4] && c->stages == t[5] &&
                      c->cluster == t[6] && c->split_k == t[7] && plan.grid == (unsigned)t[8],
                  "%lld x %lld x %lld: %dx%d, %d stages, cluster %d, split %d, grid %u", t[0],
                  t[1], t[2], c->block_m, c->block_n, c->stages, c->cluster, c->split_k,
                  plan.grid);
        cr_assert_leq(c->tiles, dev.slots[c->cluster]);
        cr_assert_eq(plan.grid, (unsigned)(c->tiles * c->split_k), "one wave of clusters");
        /* a forced split-K 4 config on this device: the grid stays within its 32 fours */
        dinf__fp8_config forced = *c;
        forced.block_n = 16, forced.cluster = forced.split_k = 4;
        dinf__fp8_plan_config_dev(&p, &dev, &forced, &plan);
        cr_assert_leq(plan.grid, 4u * 32u);
        cr_assert_eq(plan.grid % 4u, 0u);
    }
}

Test(gemm_fast_heuristic, the_gpu_pdl_round_at_m_4096_gets_block_m_256_multicast_and_every_sm) {
    /* tests/gpu/test_gemm_gpu.c runs a PDL round at m = 4096, n = 8448,
     * k = 1024 (pdl_gemm_behind_a_full_gpu_block_m_256_...) to put a PDL GEMM
     * behind a BLOCK_M 256 multicast primary on every SM; its premise on 132
     * SMs: 1056 tiles, 528 units = 8 full waves of 66 clusters. (m = n =
     * 4096 gets the same tile, but 256 units = 4 waves of 64 clusters: a
     * 128-CTA grid.) */
    const dinf__fp8_gpu_problem p = {DINF_FP8_GEMM_NORMAL, 4096, 8448, 1024, 1, 0,
                                     (const uint8_t *)(uintptr_t)0x10000, 1024,
                                     (const float *)(uintptr_t)0x20000,
                                     (const uint8_t *)(uintptr_t)0x30000, 1024,
                                     (const float *)(uintptr_t)0x40000,
                                     (uint16_t *)(uintptr_t)0x50000, 8448, NULL, 0};
    dinf__fp8_launch_plan plan;
    dinf__fp8_plan(&p, 132, DINF__FP8_KERNEL_FAST, &plan);
    cr_assert(plan.config.block_m == 256 && plan.config.block_n == 128 &&
                  plan.config.cluster == 2 && plan.config.split_k == 1,
              "%dx%d cluster %d split %d", plan.config.block_m, plan.config.block_n,
              plan.config.cluster, plan.config.split_k);
    cr_assert_eq(plan.grid, 132u, "a persistent grid of every SM: %u", plan.grid);
    cr_assert_eq(plan.config.tiles, 1056, "%lld tiles", plan.config.tiles);
    cr_assert_eq(plan.config.waves, 8, "%d waves", plan.config.waves);
    /* the 4096 x 4096 shape of the reviewer's example: not every SM */
    dinf__fp8_gpu_problem square = p;
    square.n = square.ldd = 4096;
    dinf__fp8_plan(&square, 132, DINF__FP8_KERNEL_FAST, &plan);
    cr_assert(plan.config.block_m == 256 && plan.config.cluster == 2 && plan.grid == 128,
              "4096 x 4096: %dx%d cluster %d grid %u", plan.config.block_m, plan.config.block_n,
              plan.config.cluster, plan.grid);
}

Test(gemm_fast_heuristic, persistent_grid_keeps_the_waves_and_drops_idle_slots) {
    uint64_t seed = 91;
    for (int trial = 0; trial < 2000; trial++) {
        const int form = trial % 3, num_sms = 1 + (int)(rng(&seed) % 140);
        int32_t info[4 * 128];
        const int groups = form == DINF_FP8_GEMM_NORMAL ? 1 : 4;
        int64_t m = 1 + (int64_t)(rng(&seed) % 3000);
        if (form == DINF_FP8_GEMM_CONTIGUOUS) {
            m = 4 * 128;
            for (int r = 0; r < 4 * 128; r++)
                info[r] = r / 128;
        } else if (form == DINF_FP8_GEMM_MASKED) {
            m = 1 + m % 500;
            for (int g = 0; g < 4; g++)
                info[g] = (int32_t)m;
        }
        const int64_t n = 16 + 16 * (int64_t)(rng(&seed) % 600), k = 128 * (1 + (int64_t)(rng(&seed) % 20));
        const dinf__fp8_gpu_problem p = {form, m, n, k, groups, m,
                                         (const uint8_t *)(uintptr_t)0x10000, k,
                                         (const float *)(uintptr_t)0x20000,
                                         (const uint8_t *)(uintptr_t)0x30000, k,
                                         (const float *)(uintptr_t)0x40000,
                                         (uint16_t *)(uintptr_t)0x50000, n,
                                         form == DINF_FP8_GEMM_NORMAL ? NULL : info, 0};
        dinf__fp8_launch_plan plan;
        dinf__fp8_plan(&p, num_sms, DINF__FP8_KERNEL_FAST, &plan);
        const int cl = plan.config.cluster;
        const int tile_cluster = plan.config.split_k > 1 ? 1 : cl;
        const long long bound = dinf_fp8_unit_bound(&plan.args, form, tile_cluster);
        const long long slots = num_sms / cl;
        const long long full = bound < slots ? bound : slots;
        cr_assert_eq(plan.grid % (unsigned)cl, 0);
        const long long clusters = plan.grid / (unsigned)cl;
        cr_assert(clusters >= 1 && clusters <= full, "trial %d: %lld clusters of %lld", trial,
                  clusters, full);
        if (form == DINF_FP8_GEMM_NORMAL) /* as many waves as with every slot */
            cr_assert_eq((bound + clusters - 1) / clusters, (bound + full - 1) / full,
                         "trial %d: bound %lld, %lld clusters, %lld slots", trial, bound, clusters,
                         full);
        else
            cr_assert_eq(clusters, full);
    }
}

/* ------------------------------------------------------------- replay -- */

/* A TMA store of one box: element (c0 + x, c1 + y, c2) from the swizzled
 * shared box at smem (rows of swizzle bytes), skipped outside the dims. */
static void tma_store_box(const dinf__fp8_tensor_map_geometry *g, const unsigned char *smem,
                          unsigned smem_offset, long long c0, long long c1, long long c2) {
    for (unsigned y = 0; y < g->box[1]; y++)
        for (unsigned x = 0; x < g->box[0]; x++) {
            const unsigned addr = tma_swizzle(smem_offset + y * g->box[0] * (unsigned)g->elem_bytes +
                                                  x * (unsigned)g->elem_bytes,
                                              g->swizzle_bytes);
            const long long e0 = c0 + x, e1 = c1 + y;
            if (e0 >= (long long)g->dims[0] || e1 >= (long long)g->dims[1] ||
                c2 >= (long long)g->dims[2])
                continue;
            unsigned char *dst = (unsigned char *)g->base + e0 * g->elem_bytes +
                                 e1 * (long long)g->strides[0] + c2 * (long long)g->strides[1];
            memcpy(dst, smem + addr, (size_t)g->elem_bytes);
        }
}

typedef struct replay_stats { /* tma_tiles, direct_tiles: per math warpgroup's 64 rows */
    long long tma_tiles, direct_tiles, phantom_tiles, straddling_tiles, split_tiles;
    long long split_ranks[DINF_FP8_FAST_MAX_SPLIT_K + 1]; /* split tiles by split_k */
} replay_stats;

/*
 * The fast kernel's data flow on a plan: clusters of plan->config.cluster
 * CTAs walk units (dinf_fp8_unit_at); every CTA's A tile is assembled from
 * the halves the CTAs of its cluster load (each with its own tile's
 * coordinates: a wrong pairing mixes rows), B and scales from its own tile;
 * promotion with the kernel's B-scale choice per column group; the epilogue
 * writes the swizzled tile (the kernel's split offsets) and stores it with the
 * planned D map's boxes, or stores directly (masked partial tiles), or drops
 * a phantom.
 */
static void replay_fast(const dinf__fp8_launch_plan *plan, int gemm_type, replay_stats *st) {
    const int bm = plan->config.block_m, bn = plan->config.block_n, cl = plan->config.cluster;
    /* math warpgroups, 64-row waves per warpgroup, rows per warpgroup */
    const int mwg = dinf_fp8_math_warpgroups(bm), nw = dinf_fp8_waves(bm), wg_rows = 64 * nw;
    const int split = plan->config.split_k < 1 ? 1 : plan->config.split_k;
    const int multicast = cl > 1 && split == 1, tile_cluster = multicast ? cl : 1;
    const dinf_fp8_gemm_args *args = &plan->args;
    cr_assert_eq(plan->grid % (unsigned)cl, 0);
    const int sw = dinf_fp8_d_swizzle_bytes(bn);
    cr_assert_eq(plan->map_d.swizzle_bytes, sw);
    float table[256];
    for (int c = 0; c < 256; c++)
        table[c] = dinf__f32_from_e4m3((uint8_t)c);
    uint8_t *a_tile = malloc((size_t)bm * 128), *b_tile = malloc((size_t)bn * 128);
    float *sa_tile = malloc((size_t)bm * 4), *total = malloc((size_t)cl * bm * bn * 4);
    unsigned char *d_smem = malloc((size_t)bm * bn * 2);
    uint16_t *d = (uint16_t *)(uintptr_t)args->d;
    const float *b_scales = (const float *)(uintptr_t)args->b_scales;
    const long long num_clusters = plan->grid / (unsigned)cl;
    const int one_scale = 128 % bn == 0;
    for (long long cid = 0; cid < num_clusters; cid++)
        for (long long u = cid;; u += num_clusters) {
            dinf_fp8_tile tiles[DINF_FP8_FAST_MAX_SPLIT_K];
            int found = 0;
            cr_assert_leq(cl, DINF_FP8_FAST_MAX_SPLIT_K);
            for (int r = 0; r < cl; r++) {
                const int f = dinf_fp8_unit_at(args, gemm_type, bm, tile_cluster,
                                               tile_cluster > 1 ? r : 0, u, &tiles[r]);
                if (r > 0)
                    cr_assert_eq(f, found, "the CTAs of a cluster disagree on unit %lld", u);
                found = f;
            }
            if (found < 0)
                break;
            if (found == 0)
                continue;
            memset(total, 0, (size_t)cl * bm * bn * 4);
            for (int r = 0; r < cl; r++) {
                int kb_begin = 0, kb_end = args->k_blocks;
                if (split > 1)
                    dinf_fp8_split_k_range(args->k_blocks, split, r, &kb_begin, &kb_end);
                for (int kb = kb_begin; kb < kb_end; kb++) {
                    /* A: with the multicast, CTA h's half of the rows, with CTA h's
                     * coordinates, lands in every CTA; else the CTA's own box */
                    const int parts = multicast ? cl : 1, part_rows = bm / parts;
                    cr_assert_eq(plan->map_a.box[1], (unsigned)part_rows);
                    for (int h = 0; h < parts; h++) {
                        const dinf_fp8_tile *th = &tiles[multicast ? h : r];
                        const int a_group = gemm_type == DINF_FP8_GEMM_MASKED ? th->group : 0;
                        /* a multicast half wholly past the rows loads from row 0 */
                        int row0 = th->m_block * bm + h * part_rows;
                        if (multicast && row0 >= args->m)
                            row0 = 0;
                        for (int rr = 0; rr < part_rows; rr++)
                            for (int kk = 0; kk < 128; kk++)
                                tma_element(&plan->map_a, kb * 128 + kk, row0 + rr, a_group,
                                            &a_tile[(h * part_rows + rr) * 128 + kk]);
                    }
                    const dinf_fp8_tile *t = &tiles[r];
                    const int m0 = t->m_block * bm, n0 = t->n_block * bn;
                    const int a_group = gemm_type == DINF_FP8_GEMM_MASKED ? t->group : 0;
                    for (int row = 0; row < bm; row++)
                        tma_element(&plan->map_sa, m0 + row, kb, a_group, &sa_tile[row]);
                    for (int c = 0; c < bn; c++)
                        for (int kk = 0; kk < 128; kk++)
                            tma_element(&plan->map_b, kb * 128 + kk, (t->phantom ? 0 : n0) + c,
                                        t->group, &b_tile[c * 128 + kk]);
                    const int n0s = t->phantom ? 0 : n0;
                    const float sb0 = b_scales[dinf_fp8_b_scale_index(args, t->group, n0s, kb)];
                    const float sb1 =
                        one_scale ? sb0
                                  : b_scales[dinf_fp8_b_scale_index(
                                        args, t->group, dinf_fp8_b_scale_next_col(args, n0s), kb)];
                    const int former = one_scale ? bn : dinf_fp8_b_scale_former(n0s, bn);
                    float *tot = total + (size_t)r * bm * bn;
                    for (int wg = 0; wg < mwg * nw; wg++) /* (warpgroup, wave) pairs */
                        for (int warp = 0; warp < 4; warp++)
                            for (int lane = 0; lane < 32; lane++)
                                for (int i = 0; i < bn / 8; i++)
                                    for (int half = 0; half < 2; half++)
                                        for (int j = 0; j < 2; j++) {
                                            const int row = dinf_fp8_frag_row_wave(
                                                wg / nw, nw, wg % nw, warp, lane, half);
                                            const int col = dinf_fp8_frag_col(i, lane) + j;
                                            float partial = 0.0f;
                                            for (int kk = 0; kk < 128; kk++)
                                                partial += table[a_tile[row * 128 + kk]] *
                                                           table[b_tile[col * 128 + kk]];
                                            const float scale =
                                                sa_tile[row] * (8 * i < former ? sb0 : sb1);
                                            tot[row * bn + col] += scale * partial;
                                        }
                }
            }
            if (split > 1) { /* rank 0: own + rank 1's + rank 2's ..., per accumulator */
                cr_assert_eq(cl, split, "a split-K cluster is its ranks");
                for (int r = 1; r < split; r++) {
                    cr_assert(tiles[0].m_block == tiles[r].m_block &&
                                  tiles[0].n_block == tiles[r].n_block &&
                                  tiles[0].group == tiles[r].group,
                              "split-K ranks compute the same tile");
                    for (int e = 0; e < bm * bn; e++)
                        total[e] = total[e] + total[(size_t)r * bm * bn + e];
                }
                st->split_tiles++;
                st->split_ranks[split]++;
            }
            for (int r = 0; r < (split > 1 ? 1 : cl); r++) {
                const dinf_fp8_tile *t = &tiles[r];
                const int m0 = t->m_block * bm, n0 = t->n_block * bn;
                const float *tot = total + (size_t)r * bm * bn;
                if (t->phantom) {
                    st->phantom_tiles++;
                    continue;
                }
                if (!one_scale && dinf_fp8_b_scale_former(n0, bn) < bn && n0 + dinf_fp8_b_scale_former(n0, bn) < args->n)
                    st->straddling_tiles++;
                /* each math warpgroup stores its wg_rows rows (64, or two
                 * waves of 64): by TMA unless they reach past a masked
                 * group's count */
                memset(d_smem, 0xEE, (size_t)bm * bn * 2);
                for (int wg = 0; wg < mwg; wg++) {
                    const int wg_row0 = m0 + wg * wg_rows;
                    if (gemm_type != DINF_FP8_GEMM_MASKED || wg_row0 + wg_rows <= t->row_limit) {
                        st->tma_tiles++;
                        for (int w = 0; w < nw; w++)
                        for (int warp = 0; warp < 4; warp++)
                            for (int lane = 0; lane < 32; lane++)
                                for (int half = 0; half < 2; half++) {
                                    const int row =
                                        dinf_fp8_frag_row_wave(wg, nw, w, warp, lane, half);
                                    const unsigned base = dinf_fp8_d_smem_row_base(row, lane, sw);
                                    const unsigned x = dinf_fp8_d_smem_row_xor(row, sw);
                                    for (int i = 0; i < bn / 8; i++) {
                                        const int col = dinf_fp8_frag_col(i, lane);
                                        const unsigned off =
                                            dinf_fp8_d_smem_frag_offset(base, x, i, bm, sw);
                                        const uint16_t lo = dinf__bf16_from_f32(tot[row * bn + col]);
                                        const uint16_t hi =
                                            dinf__bf16_from_f32(tot[row * bn + col + 1]);
                                        memcpy(d_smem + off, &lo, 2);
                                        memcpy(d_smem + off + 2, &hi, 2);
                                    }
                                }
                        const int d_group = gemm_type == DINF_FP8_GEMM_MASKED ? t->group : 0;
                        cr_assert_eq(plan->map_d.box[1], 64u);
                        for (int w = 0; w < nw; w++)
                            for (int j = 0; j < bn * 2 / sw; j++)
                                tma_store_box(&plan->map_d, d_smem,
                                              (unsigned)(j * bm * sw + (wg * wg_rows + w * 64) * sw),
                                              n0 + j * (sw / 2), wg_row0 + w * 64, d_group);
                    } else {
                        st->direct_tiles++;
                        for (int row = wg * wg_rows; row < wg * wg_rows + wg_rows; row++)
                            for (int col = 0; col < bn; col++) {
                                if (m0 + row >= t->row_limit || n0 + col >= args->n)
                                    continue;
                                d[dinf_fp8_d_offset(args, gemm_type, t->group, m0 + row,
                                                    n0 + col)] =
                                    dinf__bf16_from_f32(tot[row * bn + col]);
                            }
                    }
                }
            }
        }
    free(a_tile), free(b_tile), free(sa_tile), free(total), free(d_smem);
}

#define EMU_POISON 0x7FC1u

typedef struct replay_case {
    int form;
    int64_t groups, rows, n, k, lda, ldb, ldd;
    const int32_t *info, *cpu_info;
    int64_t expected_m;
    int num_sms;
    int block_m, block_n, cluster; /* 0: the heuristic's choice */
    int split_k;                   /* with a forced config: 1 .. 4 (0 counts as 1) */
} replay_case;

/*
 * How far a split-K result may be from the CPU's sequential sum. Both add
 * the same float32 block values t_q = a_scale * b_scale * (sum of a b over
 * block q) over the kb k blocks, in another order (per rank, then rank 0 +
 * rank 1 + ...), so each is within kb * 2^-24 * sum_q |t_q| of the exact sum
 * (and sum_q |t_q| <= E = sum_q |a_scale b_scale| sum |a b|); after the bf16
 * rounding of both, one bf16 unit more. Where the sum cancels (|result| much
 * below E) this exceeds the last bf16 place.
 */
static double split_k_allowance(double got, double want, double e, int64_t kb, int split) {
    const double big = fabs(got) > fabs(want) ? fabs(got) : fabs(want);
    const double ulp = big > 0 ? ldexp(1.0, ilogb(big) - 7) : 0x1p-133;
    return ulp + 2.0 * (double)(kb + split) * 0x1p-24 * e;
}

/* E of element (row, col) (row: of A and D as laid out) for split_k_allowance. */
static double split_k_magnitude(const replay_case *rc, const uint8_t *a, const float *sa,
                                const uint8_t *b, const float *sb, int64_t row, int64_t col) {
    const int64_t k = rc->k, kb = (k + 127) / 128, nsb = (rc->n + 127) / 128;
    const int64_t aligned = (rc->rows + 3) / 4 * 4;
    int64_t grp = 0, sa_base = 0, sa_row = row;
    if (rc->form == DINF_FP8_GEMM_CONTIGUOUS)
        grp = rc->cpu_info[row];
    if (rc->form == DINF_FP8_GEMM_MASKED) {
        grp = row / rc->rows;
        sa_row = row % rc->rows;
        sa_base = grp * kb * aligned;
    }
    double e = 0;
    for (int64_t q = 0; q < kb; q++) {
        double block = 0;
        for (int64_t j = q * 128; j < k && j < q * 128 + 128; j++)
            block += fabs((double)dinf__f32_from_e4m3(a[row * rc->lda + j]) *
                          dinf__f32_from_e4m3(b[(grp * rc->n + col) * rc->ldb + j]));
        e += fabs((double)sa[sa_base + q * aligned + sa_row] * sb[(grp * nsb + col / 128) * kb + q]) *
             block;
    }
    return e;
}

static replay_stats replay_and_compare(const replay_case *rc, uint64_t seed) {
    uint64_t s = seed;
    const int form = rc->form;
    const int64_t groups = rc->groups, rows = rc->rows, n = rc->n, k = rc->k;
    const int64_t lda = rc->lda, ldb = rc->ldb, ldd = rc->ldd;
    const int64_t a_rows = form == DINF_FP8_GEMM_MASKED ? groups * rows : rows;
    const int64_t kb = (k + 127) / 128, nsb = (n + 127) / 128, aligned = (rows + 3) / 4 * 4;
    const int64_t sa_count = form == DINF_FP8_GEMM_MASKED ? groups * kb * aligned : kb * aligned;
    uint8_t *a = malloc((size_t)(a_rows * lda)), *b = malloc((size_t)(groups * n * ldb));
    float *sa = malloc((size_t)sa_count * 4), *sb = malloc((size_t)(groups * nsb * kb) * 4);
    uint16_t *d_emu = malloc((size_t)(a_rows * ldd) * 2), *d_cpu = malloc((size_t)(a_rows * ldd) * 2);
    fill_codes(a, (size_t)(a_rows * lda), &s);
    fill_codes(b, (size_t)(groups * n * ldb), &s);
    fill_scales(sa, (size_t)sa_count, &s);
    fill_scales(sb, (size_t)(groups * nsb * kb), &s);
    for (int64_t i = 0; i < a_rows * ldd; i++)
        d_emu[i] = d_cpu[i] = EMU_POISON;

    const dinf__fp8_gpu_problem p = {form, rows, n, k, groups, rc->expected_m, a, lda, sa, b, ldb,
                                     sb, d_emu, ldd, rc->info, 0};
    cr_assert_eq(dinf__fp8_gpu_check("emu", &p), DINF_STATUS_OK, "%s", dinf_last_error());
    dinf__fp8_launch_plan plan;
    dinf__fp8_plan(&p, rc->num_sms, DINF__FP8_KERNEL_FAST, &plan);
    if (rc->block_n) { /* a forced config (the shapes the heuristic would not pick) */
        dinf__fp8_config c = plan.config;
        c.block_m = rc->block_m, c.block_n = rc->block_n, c.cluster = rc->cluster;
        c.split_k = rc->split_k < 1 ? 1 : rc->split_k;
        c.stages = 1;
        while (c.stages < 16 && DINF_FP8_FAST_SPLIT_SMEM_BYTES(c.block_m, c.block_n, c.stages + 1,
                                                                c.split_k) <= DINF_FP8_SMEM_LIMIT)
            c.stages++;
        c.threads = dinf_fp8_threads(c.block_m);
        c.smem_bytes = DINF_FP8_FAST_SPLIT_SMEM_BYTES(c.block_m, c.block_n, c.stages, c.split_k);
        dinf__fp8_plan_config(&p, rc->num_sms, &c, &plan);
    }
    cr_assert_leq(plan.grid, (unsigned)rc->num_sms);
    replay_stats st = {0};
    replay_fast(&plan, form, &st);

    if (form == DINF_FP8_GEMM_NORMAL)
        cr_assert_eq(dinf_fp8_gemm_nt(rows, n, k, a, lda, sa, b, ldb, sb, d_cpu, ldd, NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
    else if (form == DINF_FP8_GEMM_CONTIGUOUS)
        cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_contiguous(rows, n, k, groups, a, lda, sa, b, ldb,
                                                           sb, d_cpu, ldd, rc->cpu_info, NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
    else
        cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_masked(groups, rows, n, k, a, lda, sa, b, ldb, sb,
                                                       d_cpu, ldd, rc->cpu_info, rc->expected_m,
                                                       NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
    /* Bit for bit, except split-K: its float32 sum runs in another order
     * (per rank, then the ranks' partials), so the results may differ by the
     * float32 rounding of that order plus one bf16 unit (split_k_allowance);
     * poison stays exact. */
    const int split = plan.config.split_k > 1;
    for (int64_t i = 0; i < a_rows * ldd; i++) {
        const int same = d_emu[i] == d_cpu[i];
        int close = 0;
        if (!same && split && d_emu[i] != EMU_POISON && d_cpu[i] != EMU_POISON) {
            const double got = dinf__f32_from_bf16(d_emu[i]), want = dinf__f32_from_bf16(d_cpu[i]);
            const double e = split_k_magnitude(rc, a, sa, b, sb, i / ldd, i % ldd);
            close = fabs(got - want) <= split_k_allowance(got, want, e, kb, plan.config.split_k);
        }
        cr_assert(same || close,
                  "form %d rows=%lld n=%lld k=%lld sms=%d (block %dx%d, cluster %d, split %d): "
                  "d[%lld][%lld] replayed %#x, CPU %#x",
                  form, (long long)rows, (long long)n, (long long)k, rc->num_sms,
                  plan.config.block_m, plan.config.block_n, plan.config.cluster,
                  plan.config.split_k, (long long)(i / ldd), (long long)(i % ldd), d_emu[i],
                  d_cpu[i]);
    }
    free(a), free(b), free(sa), free(sb), free(d_emu), free(d_cpu);
    return st;
}

Test(gemm_fast_replay, normal_form_every_block_n_both_cluster_sizes) {
    replay_stats total = {0};
    uint64_t seed = 300;
    for (int i = 0; i < NUM_FAST_BNS; i++)
        for (int cluster = 1; cluster <= 2; cluster++) {
            const int bn = fast_bns[i], bm = (i % 2) ? 64 : 128;
            /* n: 5 N-blocks minus a ragged edge (odd: a phantom with cluster 2),
             * k with a partial block, rows ragged. */
            const int64_t n = 5 * bn - 8, k = 300, m = bm + 37;
            const replay_case rc = {DINF_FP8_GEMM_NORMAL, 1, m, n, k, 304, 320, n + 8,
                                    NULL, NULL, 0, 3 + cluster, bm, bn, cluster, 1};
            const replay_stats st = replay_and_compare(&rc, seed++);
            total.tma_tiles += st.tma_tiles, total.phantom_tiles += st.phantom_tiles;
            total.straddling_tiles += st.straddling_tiles;
        }
    cr_assert_gt(total.phantom_tiles, 0, "phantom partners were exercised");
    cr_assert_gt(total.straddling_tiles, 0, "tiles with two B scales were exercised");
    /* heuristic picks, every SM count parity */
    const int64_t shapes[][6] = {{1, 16, 128, 128, 128, 16},     {64, 520, 256, 256, 272, 528},
                                 {130, 600, 129, 144, 144, 600}, {600, 320, 256, 256, 256, 320}};
    const int sms[] = {1, 3, 8, 132};
    for (int s = 0; s < 4; s++)
        for (int j = 0; j < 4; j++) {
            const replay_case rc = {DINF_FP8_GEMM_NORMAL, 1, shapes[s][0], shapes[s][1],
                                    shapes[s][2], shapes[s][3], shapes[s][4], shapes[s][5],
                                    NULL, NULL, 0, sms[j], 0, 0, 0, 0};
            replay_and_compare(&rc, seed++);
        }
}

Test(gemm_fast_replay, contiguous_form_with_skipped_blocks_and_multicast) {
    const int32_t block_group[] = {2, -1, 0, 0, 1, -1};
    const int64_t m_sum = 6 * 128;
    int32_t *idx = malloc((size_t)m_sum * 4), *cpu_idx = malloc((size_t)m_sum * 4);
    for (int64_t r = 0; r < m_sum; r++)
        idx[r] = cpu_idx[r] = block_group[r / 128];
    for (int r = 0; r < 128; r++) /* out of range on the device: skipped; the CPU gets -1 */
        idx[256 + r] = 7, cpu_idx[256 + r] = -1;
    const int bns[] = {80, 144, 160, 128};
    for (int i = 0; i < 4; i++)
        for (int cluster = 1; cluster <= 2; cluster++) {
            const replay_case rc = {DINF_FP8_GEMM_CONTIGUOUS, 3, m_sum, 3 * bns[i] + 16, 256, 256,
                                    256, 3 * bns[i] + 24, idx, cpu_idx, 0, 4, 128, bns[i], cluster, 1};
            replay_and_compare(&rc, 400 + (uint64_t)(2 * i + cluster));
        }
    free(idx), free(cpu_idx);
}

Test(gemm_fast_replay, masked_form_partial_tiles_store_directly_full_tiles_by_tma) {
    /* zero, ragged, full, above m_max and negative counts (clamped on the device) */
    const int32_t masked[] = {0, 77, 130, 630, -3, 1, 64};
    const int32_t clamped[] = {0, 77, 130, 130, 0, 1, 64};
    replay_stats total = {0};
    /* n = 200: 3 N-blocks of 96 with a phantom partner; 2 of 160 and 112 */
    const int cfgs[][3] = {{64, 96, 2}, {64, 160, 1}, {128, 112, 2}, {128, 48, 1}, {0, 0, 0}};
    for (int i = 0; i < 5; i++) {
        const replay_case rc = {DINF_FP8_GEMM_MASKED, 7, 130, 200, 300, 304, 320, 208, masked,
                                clamped, 100, 5, cfgs[i][0], cfgs[i][1], cfgs[i][2], 1};
        const replay_stats st = replay_and_compare(&rc, 500 + (uint64_t)i);
        total.tma_tiles += st.tma_tiles, total.direct_tiles += st.direct_tiles;
        total.phantom_tiles += st.phantom_tiles;
    }
    cr_assert_gt(total.tma_tiles, 0);
    cr_assert_gt(total.direct_tiles, 0, "masked partial tiles were exercised");
    cr_assert_gt(total.phantom_tiles, 0);
}

Test(gemm_fast_replay, block_m_256_two_waves_per_warpgroup_normal_and_masked) {
    /* Normal: a partial second M-block (293 rows: wave 1 of warpgroup 0 and
     * all of warpgroup 1 past m), 5 N-blocks (a phantom partner with the
     * multicast of 128-row halves), block_n dividing 128 or not. */
    replay_stats total = {0};
    uint64_t seed = 900;
    const int bns[] = {16, 48, 96, 128};
    for (int i = 0; i < 4; i++)
        for (int cluster = 1; cluster <= 2; cluster++) {
            const int bn = bns[i];
            const int64_t n = 5 * bn - 8, k = 300, m = 256 + 37;
            const replay_case rc = {DINF_FP8_GEMM_NORMAL, 1, m, n, k, 304, 320, n + 8,
                                    NULL, NULL, 0, 2 + cluster, 256, bn, cluster, 1};
            const replay_stats st = replay_and_compare(&rc, seed++);
            total.tma_tiles += st.tma_tiles, total.phantom_tiles += st.phantom_tiles;
        }
    cr_assert_gt(total.phantom_tiles, 0);
    /* Masked, m_max 300: counts 0, inside warpgroup 0's rows (77), inside
     * warpgroup 1's (200), exactly one tile (256: both TMA), two M-blocks
     * (300, and 630 clamped to 300), negative: each warpgroup stores its 128
     * rows by TMA only when all are owned, else directly. */
    const int32_t masked[] = {0, 77, 200, 256, 300, 630, -3};
    const int32_t clamped[] = {0, 77, 200, 256, 300, 300, 0};
    const int cfgs[][2] = {{96, 2}, {128, 1}, {32, 2}};
    replay_stats mt = {0};
    for (int i = 0; i < 3; i++) {
        const replay_case rc = {DINF_FP8_GEMM_MASKED, 7, 300, 200, 260, 272, 272, 208, masked,
                                clamped, 150, 4, 256, cfgs[i][0], cfgs[i][1], 1};
        const replay_stats st = replay_and_compare(&rc, seed++);
        mt.tma_tiles += st.tma_tiles, mt.direct_tiles += st.direct_tiles;
        mt.phantom_tiles += st.phantom_tiles;
    }
    cr_assert_gt(mt.tma_tiles, 0);
    cr_assert_gt(mt.direct_tiles, 0, "masked partial warpgroups were exercised");
    cr_assert_gt(mt.phantom_tiles, 0);
}

Test(gemm_fast_replay, split_k_clusters_add_the_ranks_partials_every_form) {
    /* k: 9 blocks (split 2: 5 + 4; 3: 3 + 3 + 3; 4: 3 + 3 + 3 + 0), 1 block
     * (only rank 0 has any), and the heuristic's split pick for M = 64,
     * N = 7168-like widths. */
    replay_stats total;
    memset(&total, 0, sizeof total);
    const int32_t masked[] = {0, 77, 130, 129};
    const int32_t block_group[] = {1, -1, 0, 2};
    int32_t idx[4 * 128];
    for (int r = 0; r < 4 * 128; r++)
        idx[r] = block_group[r / 128];
    const int64_t ks[] = {9 * 128 - 7, 100};
    for (int kk = 0; kk < 2; kk++) {
        const int64_t k = ks[kk], ld = (k + 15) / 16 * 16;
        const replay_case cases[] = {
            {DINF_FP8_GEMM_NORMAL, 1, 100, 200, k, ld, ld, 208, NULL, NULL, 0, 6, 64, 112, 2, 2},
            {DINF_FP8_GEMM_NORMAL, 1, 130, 136, k, ld, ld, 136, NULL, NULL, 0, 4, 128, 48, 2, 2},
            {DINF_FP8_GEMM_CONTIGUOUS, 3, 4 * 128, 160, k, ld, ld, 168, idx, idx, 0, 8, 128, 80,
             2, 2},
            {DINF_FP8_GEMM_MASKED, 4, 130, 200, k, ld, ld, 200, masked, masked, 90, 6, 128, 144,
             2, 2},
            /* clusters of 3 and 4 (the grid a multiple of the cluster: 6 / 4 / 8 SMs) */
            {DINF_FP8_GEMM_NORMAL, 1, 100, 200, k, ld, ld, 208, NULL, NULL, 0, 7, 64, 80, 3, 3},
            {DINF_FP8_GEMM_NORMAL, 1, 130, 136, k, ld, ld, 136, NULL, NULL, 0, 9, 128, 64, 4, 4},
            {DINF_FP8_GEMM_CONTIGUOUS, 3, 4 * 128, 160, k, ld, ld, 168, idx, idx, 0, 8, 128, 96,
             4, 4},
            {DINF_FP8_GEMM_MASKED, 4, 130, 200, k, ld, ld, 200, masked, masked, 90, 6, 64, 160,
             3, 3},
        };
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            const replay_stats st = replay_and_compare(&cases[c], 700 + 10 * (uint64_t)kk + c);
            total.split_tiles += st.split_tiles, total.direct_tiles += st.direct_tiles;
            for (int sk = 2; sk <= DINF_FP8_FAST_MAX_SPLIT_K; sk++)
                total.split_ranks[sk] += st.split_ranks[sk];
        }
    }
    cr_assert_gt(total.split_tiles, 0);
    for (int sk = 2; sk <= DINF_FP8_FAST_MAX_SPLIT_K; sk++)
        cr_assert_gt(total.split_ranks[sk], 0, "split-K %d replayed", sk);
    cr_assert_gt(total.direct_tiles, 0, "a masked partial tile went through the split path");
    /* the heuristic's own split pick on a small-M shape */
    const replay_case pick = {DINF_FP8_GEMM_NORMAL, 1, 64, 1792, 1024, 1024, 1024, 1792,
                              NULL, NULL, 0, 32, 0, 0, 0, 0};
    const replay_stats st = replay_and_compare(&pick, 799);
    cr_assert_gt(st.split_tiles, 0, "the heuristic split this one-wave shape");
}

/* ---------------------------------------------------------------- SASS -- */

Test(gemm_fast_jit,
     sass_has_fp8_wgmma_tma_multicast_stores_setmaxnreg_and_griddep_where_nvdisasm_exists,
     .fini = cleanup_cache) {
#if !DINF_WITH_CUDA
    cr_skip_test("CPU-only build (make CUDA=0): no JIT");
#else
    int major, minor;
    if (dinf_jit_nvrtc_version(&major, &minor) != DINF_STATUS_OK)
        cr_skip_test("NVRTC is not available: %s", dinf_last_error());
    const char *nvdisasm = find_nvdisasm();
    if (!nvdisasm)
        cr_skip_test("no nvdisasm (set DINF_NVDISASM): the SASS check needs a disassembler");
    setup_cache();
    /* {form, block_m, block_n, stages, cluster, split_k}: stores = block_n * 2 / swizzle
     * per 64-row wave (block_m 256: two per math warpgroup, and 2 x 4 wgmma) */
    const long long configs[][6] = {{0, 128, 160, 5, 2, 1}, {2, 64, 112, 9, 1, 1},
                                    {1, 128, 128, 5, 1, 1}, {0, 64, 112, 8, 2, 2},
                                    {0, 256, 128, 3, 2, 1}, {2, 256, 96, 3, 1, 1},
                                    {0, 128, 80, 6, 4, 4},  {2, 64, 96, 9, 3, 3}};
    const int stores[] = {5, 7, 2, 7, 2 * 2, 2 * 3, 5, 3};
    for (int i = 0; i < 8; i++) {
        char cmd[512], line[1024];
        FILE *p = open_sass(nvdisasm, "fp8_gemm_fast", configs[i], 6, i, cmd);
        int qgmma = 0, loads = 0, multicast = 0, tma_stores = 0, local = 0, setmaxreg = 0;
        int remote_stores = 0, remote_loads = 0;
        /* griddepcontrol.wait is ACQBULK in the SASS, launch_dependents
         * PREEXIT (nvdisasm of CUDA 13). Global accesses (TMA, LDG/STG,
         * generic LD/ST, atomics) listed before the ACQBULK: none (the
         * kernel's straight-line prologue precedes the role split). */
        int acqbulk = 0, preexit = 0, global_before_wait = 0;
        char first_global[256] = "";
        /* The hang guard (DINF_JIT_WAIT_NS): BPT.TRAP in the producer's
         * fill wait and drain, and in both split-K reduction waits (without
         * them, none: the kernel has no other trap); their
         * clock (SR_GLOBALTIMER) read only after griddepcontrol.wait. */
        int traps = 0, timer_reads = 0, timer_before_wait = 0;
        while (fgets(line, sizeof line, p)) {
            traps += strstr(line, "BPT.TRAP") != NULL;
            timer_reads += strstr(line, "SR_GLOBALTIMER") != NULL;
            timer_before_wait += !acqbulk && strstr(line, "SR_GLOBALTIMER") != NULL;
            acqbulk += strstr(line, "ACQBULK") != NULL;
            preexit += strstr(line, "PREEXIT") != NULL;
            if (!acqbulk && (strstr(line, "UTMALDG") || strstr(line, "UTMASTG") ||
                             strstr(line, "UBLKCP") || strstr(line, " LDG") ||
                             strstr(line, " STG") || strstr(line, " LD.E") ||
                             strstr(line, " ST.E") || strstr(line, " RED") ||
                             strstr(line, " ATOM"))) {
                if (!global_before_wait++)
                    snprintf(first_global, sizeof first_global, "%.200s", line);
            }
            qgmma += strstr(line, "QGMMA.64x") != NULL;
            loads += strstr(line, "UTMALDG.3D") != NULL;
            multicast += strstr(line, "UTMALDG.3D.MULTICAST") != NULL;
            tma_stores += strstr(line, "UTMASTG.3D") != NULL;
            local += strstr(line, " LDL") != NULL || strstr(line, " STL") != NULL;
            setmaxreg += strstr(line, "SETMAXREG") != NULL;
            remote_stores += strstr(line, " ST.E") != NULL || strstr(line, " STS") != NULL;
            remote_loads += strstr(line, " LD.E ") != NULL;
        }
        close_sass(p, cmd);
        cr_assert_eq(qgmma, 4 * dinf_fp8_waves((int)configs[i][1]), "config %d: %d QGMMA", i,
                     qgmma);
        cr_assert_eq(loads, 3, "config %d: %d UTMALDG.3D", i, loads);
        cr_assert_eq(multicast, configs[i][4] == 2 && configs[i][5] == 1 ? 1 : 0,
                     "config %d: %d multicast loads", i, multicast);
        cr_assert_gt(remote_stores, 0, "config %d: no shared/cluster stores", i);
        /* split-K: rank 0 reads each other rank's partial (block_n / 2 floats
         * per thread) through distributed shared memory, generic LD.E in the
         * SASS; no generic loads otherwise */
        cr_assert_eq(remote_loads, (int)((configs[i][5] - 1) * configs[i][2] / 2),
                     "config %d: %d LD.E", i, remote_loads);
        cr_assert_eq(tma_stores, stores[i], "config %d: %d UTMASTG.3D", i, tma_stores);
        cr_assert_eq(local, 0, "config %d: local memory in the SASS", i);
        cr_assert_eq(setmaxreg, configs[i][1] >= 128 ? 2 : 0, "config %d: %d SETMAXREG", i,
                     setmaxreg);
        cr_assert_eq(acqbulk, 1, "config %d: %d ACQBULK (griddepcontrol.wait)", i, acqbulk);
        cr_assert_eq(preexit, 1, "config %d: %d PREEXIT (griddepcontrol.launch_dependents)", i,
                     preexit);
        cr_assert_eq(global_before_wait, 0,
                     "config %d: %d global accesses listed before griddepcontrol.wait, first: %s",
                     i, global_before_wait, first_global);
        /* at least one per wait site (ptxas may duplicate a loop's copy) */
        cr_assert_geq(traps, configs[i][5] > 1 ? 4 : 2, "config %d: %d BPT.TRAP", i, traps);
        cr_assert_geq(timer_reads, traps, "config %d: %d SR_GLOBALTIMER reads", i, timer_reads);
        cr_assert_eq(timer_before_wait, 0, "config %d: the wait clock is read before ACQBULK", i);
    }
#endif
}

/* ------------------------------------------- SASS: wgmma waves (T2) -- */

/* A k-block loop as nvdisasm prints it for BLOCK_M 256, BLOCK_N 64
 * (accumulators R40..R71, to show the range is parsed, not assumed), two
 * waves. Tokens {P0}..{P5} mark where the planted violations go. */
static const char wave_loop[] =
    "        /*1200*/                   MOV R40, RZ ;\n"
    ".L_x_15:\n"
    "        /*1270*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR19], R28 ;\n"
    "        /*1280*/              @!P0 BRA `(.L_x_14) ;\n"
    ".L_x_50:\n"
    "        /*1290*/                   LDS R225, [R220] ;\n"
    "        /*12a0*/                   LDS R223, [R220+0x20] ;\n"
    "        /*12b0*/                   LDS R219, [R220+0x100] ;\n"
    "        /*12c0*/                   LDS R218, [R220+0x120] ;\n"
    "        /*12d0*/                   WARPGROUP.ARRIVE ;\n"
    "        /*12e0*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R40, gdesc[UR32], RZ, !UPT ;\n"
    "        /*12f0*/                   IADD3 R24, R72, UR40, RZ ;\n"
    "{P0}"
    "        /*1300*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R40, gdesc[UR28], R40 ;\n"
    ".L_x_53:\n"
    "        /*1310*/                   LDG.E.128 R36, desc[UR36][R2.64] ;\n"
    "        /*1320*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R40, gdesc[UR24], R40 ;\n"
    "{P1}"
    "        /*1330*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R40, gdesc[UR20], R40, gsb0 ;\n"
    "        /*1340*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;\n"
    "        /*1350*/                   FMUL R225, R217, R225 ;\n"
    "        /*1360*/                   FFMA R153, R40, R225, R153 ;\n"
    "        /*1370*/                   FFMA R154, R71, R225, R154 ;\n"
    "{P2}"
    "        /*1380*/                   WARPGROUP.ARRIVE ;\n"
    "        /*1390*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R40, gdesc[UR32], RZ, !UPT ;\n"
    "        /*13a0*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R40, gdesc[UR28], R40 ;\n"
    "        /*13b0*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R40, gdesc[UR24], R40 ;\n"
    "{P3}"
    "        /*13c0*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R40, gdesc[UR20], R40, gsb0 ;\n"
    "        /*13d0*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;\n"
    "{P4}"
    "        /*13e0*/              @!P0 SYNCS.ARRIVE.TRANS64.RED.A1T0 RZ, [R221+URZ], RZ ;\n"
    "        /*13f0*/                   FFMA R155, R41, R219, R155 ;\n"
    "{P5}"
    "        /*1400*/              @!P1 BRA `(.L_x_15) ;\n"
    "        /*1410*/                   EXIT ;\n"
    ".L_x_14:\n"
    "        /*1420*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR19], R28 ;\n"
    "        /*1430*/              @!P0 BRA `(.L_x_14) ;\n"
    "        /*1440*/                   BRA `(.L_x_50) ;\n";

/* wave_loop with `plant` at marker {P<at>} (the other markers removed). */
static char *planted_loop(int at, const char *plant) {
    const size_t cap = sizeof wave_loop + strlen(plant) + 1;
    char *out = malloc(cap);
    cr_assert_not_null(out);
    size_t o = 0;
    for (const char *p = wave_loop; *p;) {
        if (p[0] == '{' && p[1] == 'P' && p[3] == '}') {
            if (p[2] - '0' == at) {
                memcpy(out + o, plant, strlen(plant));
                o += strlen(plant);
            }
            p += 4;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
    return out;
}

static void expect_wave_check(const char *sass, int waves, const char *want_error,
                              const char *what) {
    sass_wave_report rep;
    char err[1024];
    const int rc = sass_check_waves(sass, waves, 4, &rep, err, sizeof err);
    if (!want_error) {
        cr_assert_eq(rc, 0, "%s: the clean loop failed: %s", what, err);
        return;
    }
    cr_assert_neq(rc, 0, "%s: not caught", what);
    cr_assert_not_null(strstr(err, want_error), "%s: reported \"%s\", expected \"%s\"", what, err,
                       want_error);
}

Test(gemm_fast_sass, wave_checker_passes_the_clean_loop_and_catches_planted_violations) {
    char *clean = planted_loop(-1, "");
    sass_wave_report rep;
    char err[1024];
    cr_assert_eq(sass_check_waves(clean, 2, 4, &rep, err, sizeof err), 0, "%s", err);
    cr_assert_eq(rep.acc_lo, 40, "the QGMMA destination is parsed: R%d", rep.acc_lo);
    cr_assert_eq(rep.acc_hi, 71, "QGMMA.64x64x32: 32 registers: R%d", rep.acc_hi);
    cr_assert_eq(rep.windows, 2);
    cr_assert_eq(rep.k_blocks, 1);
    cr_assert_eq(rep.qgmma, 8);
    cr_assert_eq(rep.releases, 1);
    cr_assert_eq(rep.loads_hoisted, 4);
    free(clean);

    static const struct {
        int at;
        const char *plant, *error, *what;
    } cases[] = {
        /* an accumulator read inside wave 0's window (wave 0's promotion
         * moved past the wgmma issue) */
        {1, "        /*1325*/                   FFMA R153, R40, R225, R153 ;\n",
         "names R40 of the accumulators R40..R71", "read of R40 in wave 0's window"},
        /* wave 0's promotion sinking into wave 1's window (the wave-order
         * hazard of the shared accumulators), last register of the range */
        {3, "        /*13b5*/                   FFMA R154, R71, R225, R154 ;\n",
         "names R71 of the accumulators R40..R71", "read of R71 in wave 1's window"},
        /* a write of an accumulator while the wgmma runs */
        {0, "        /*12f5*/                   MOV R55, RZ ;\n", "names R55",
         "write of R55 in a window"},
        /* a 64-bit pair whose second half is the first accumulator */
        {0, "        /*12f5*/                   STS.64 [R1], R39 ;\n", "names R40",
         "a .64 operand reaching into the range"},
        /* the release after wave 0 (before wave 1's wgmma) */
        {2, "        /*1375*/              @!P0 SYNCS.ARRIVE.TRANS64.RED.A1T0 RZ, [R221+URZ], RZ ;\n",
         "before the DEPBAR of its last wave", "release after wave 0"},
        /* a second release after the last wave */
        {5, "        /*13f5*/                   SYNCS.ARRIVE.TRANS64.A1T0 RZ, [R3+URZ], RZ ;\n",
         "2 SYNCS.ARRIVE after its last wave's DEPBAR", "two releases"},
        /* an A-scale load between the first wgmma and the release (B1) */
        {4, "        /*13d5*/                   LDS R219, [R220+0x100] ;\n",
         "between its first WARPGROUP.ARRIVE and the release", "a late A-scale load"},
        /* control flow out of a window */
        {1, "        /*1325*/              @P3 BRA `(.L_x_15) ;\n", "control flow inside it",
         "a branch in a window"},
        /* control flow into a window (.L_x_53 becomes a branch target) */
        {5, "        /*13f5*/              @P3 BRA `(.L_x_53) ;\n", "label .L_x_53 inside it",
         "a branch into a window"},
        /* a serialised wave (ptxas's own fix for an accumulator read: a
         * wait after the first wgmma) */
        {0, "        /*12f5*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;\n"
            "        /*12f6*/                   WARPGROUP.ARRIVE ;\n",
         "1 QGMMA, expected 4", "a serialised wave"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = planted_loop(cases[i].at, cases[i].plant);
        expect_wave_check(text, 2, cases[i].error, cases[i].what);
        free(text);
    }
    /* a DEPBAR that leaves one wgmma group running (count 1, not 0) */
    {
        char *text = planted_loop(-1, "");
        char *dep = strstr(text, "WARPGROUP.DEPBAR.LE gsb0, 0x0");
        cr_assert_not_null(dep);
        dep[strlen("WARPGROUP.DEPBAR.LE gsb0, 0x")] = '1';
        expect_wave_check(text, 2, "window 0: the DEPBAR does not wait for every wgmma group",
                          "DEPBAR.LE gsb0, 0x1");
        free(text);
    }
    /* not violations: uniform registers and registers next to the range */
    char *near = planted_loop(0, "        /*12f5*/                   IMAD.WIDE R36, R72, UR40, R38 ;\n"
                                 "        /*12f6*/                   MOV R72, UR55 ;\n");
    expect_wave_check(near, 2, NULL, "R36..R39, R72 and UR40/UR55 in a window");
    free(near);
    /* the wave count is checked: read as a one-wave loop, these two windows
     * are two k blocks, and the first has no release of its own */
    clean = planted_loop(-1, "");
    expect_wave_check(clean, 1, "k block 0: 0 SYNCS.ARRIVE after its last wave's DEPBAR",
                      "two windows read as one wave each");
    free(clean);
}

#if DINF_WITH_CUDA
/* The whole nvdisasm output of one fast-rung config's cubin (malloc'ed). */
static char *fast_rung_sass(const char *nvdisasm, const long long params[6], int index) {
    char cmd[512];
    FILE *p = open_sass(nvdisasm, "fp8_gemm_fast", params, 6, index, cmd);
    size_t cap = 1 << 16, len = 0;
    char *text = malloc(cap);
    cr_assert_not_null(text);
    for (size_t got; (got = fread(text + len, 1, cap - len - 1, p)) > 0;) {
        len += got;
        if (cap - len - 1 == 0) {
            cap *= 2;
            text = realloc(text, cap);
            cr_assert_not_null(text);
        }
    }
    text[len] = '\0';
    close_sass(p, cmd);
    return text;
}
#endif

Test(gemm_fast_jit, sass_wave_order_no_accumulator_access_in_flight_one_release_per_k_block,
     .fini = cleanup_cache, .timeout = 900.0) {
#if !DINF_WITH_CUDA
    cr_skip_test("CPU-only build (make CUDA=0): no JIT");
#else
    int major, minor;
    if (dinf_jit_nvrtc_version(&major, &minor) != DINF_STATUS_OK)
        cr_skip_test("NVRTC is not available: %s", dinf_last_error());
    const char *nvdisasm = find_nvdisasm();
    if (!nvdisasm)
        cr_skip_test("no nvdisasm (set DINF_NVDISASM): the SASS check needs a disassembler");
    setup_cache();
    /* {form, block_m, block_n, stages, cluster, split_k}: BLOCK_M 256 (two
     * waves) normal and masked, with and without the multicast (remote
     * release), the widest and a narrower BLOCK_N; one-wave configs too
     * (BLOCK_M 128 multicast, BLOCK_M 64 split-K 2, BLOCK_M 128 split-K 4,
     * BLOCK_M 64 split-K 3). DINF_SASS_WAVES_ALL=1: every fast-rung config
     * of the heuristics' space instead (282, the stages by the shared-memory
     * rule; ~1 s of CPU each). */
    enum { CAP = 300 };
    static long long configs[CAP][6] = {{0, 256, 128, 3, 2, 1}, {0, 256, 128, 3, 1, 1},
                                        {2, 256, 96, 3, 2, 1},  {2, 256, 112, 3, 1, 1},
                                        {0, 128, 160, 5, 2, 1}, {0, 64, 112, 8, 2, 2},
                                        {0, 128, 80, 6, 4, 4},  {2, 64, 96, 9, 3, 3}};
    int count = 8;
    const char *all = getenv("DINF_SASS_WAVES_ALL");
    if (all && strcmp(all, "1") == 0) {
        count = 0;
        for (int form = 0; form < 3; form++)
            for (int bm = 64; bm <= 256; bm *= 2)
                for (int i = 0; i < NUM_FAST_BNS; i++)
                    for (int mode = 0; mode < FAST_MODES; mode++) {
                        const int bn = fast_bns[i];
                        int cluster, split;
                        fast_mode(mode, &cluster, &split);
                        if (!fast_config_in_space(form, bm, bn, split))
                            continue;
                        int stages = 16;
                        while (DINF_FP8_FAST_SPLIT_SMEM_BYTES(bm, bn, stages, split) >
                               DINF_FP8_SMEM_LIMIT)
                            stages--;
                        cr_assert_lt(count, CAP);
                        const long long c[6] = {form, bm, bn, stages, cluster, split};
                        memcpy(configs[count++], c, sizeof c);
                    }
        cr_assert_eq(count, 250 + 32);
    }
    for (int i = 0; i < count; i++) {
        const int waves = dinf_fp8_waves((int)configs[i][1]);
        char *sass = fast_rung_sass(nvdisasm, configs[i], i);
        sass_wave_report rep;
        char err[1024];
        const int rc = sass_check_waves(sass, waves, 4, &rep, err, sizeof err);
        cr_assert_eq(rc, 0, "config %d <%lld,%lld,%lld,%lld,%lld,%lld>: %s", i, configs[i][0],
                     configs[i][1], configs[i][2], configs[i][3], configs[i][4], configs[i][5],
                     err);
        cr_assert_eq(rep.acc_hi - rep.acc_lo + 1, (int)configs[i][2] / 2,
                     "config %d: accumulators R%d..R%d for BLOCK_N %lld", i, rep.acc_lo,
                     rep.acc_hi, configs[i][2]);
        cr_assert_eq(rep.qgmma, 4 * waves * rep.k_blocks, "config %d: %d QGMMA", i, rep.qgmma);
        cr_assert_eq(rep.releases, rep.k_blocks, "config %d", i);
        cr_assert_eq(rep.loads_hoisted, 2 * waves * rep.k_blocks,
                     "config %d: %d A-scale loads before the first wgmma", i, rep.loads_hoisted);
        cr_log_info("config %d: %d k block(s) per loop turn, %d windows, accumulators R%d..R%d",
                    i, rep.k_blocks, rep.windows, rep.acc_lo, rep.acc_hi);
        /* The same text with an accumulator read planted before the last
         * DEPBAR (inside the last wave's window) must fail. */
        char *last = NULL;
        for (char *q = strstr(sass, "WARPGROUP.DEPBAR"); q; q = strstr(q + 1, "WARPGROUP.DEPBAR"))
            last = q;
        cr_assert_not_null(last);
        while (last > sass && last[-1] != '\n')
            last--;
        char plant[96];
        snprintf(plant, sizeof plant, "        /*ffff*/                   FADD R0, R%d, R0 ;\n",
                 rep.acc_hi);
        const size_t at = (size_t)(last - sass), pl = strlen(plant), len = strlen(sass);
        char *mutated = malloc(len + pl + 1);
        cr_assert_not_null(mutated);
        memcpy(mutated, sass, at);
        memcpy(mutated + at, plant, pl);
        memcpy(mutated + at + pl, sass + at, len - at + 1);
        cr_assert_neq(sass_check_waves(mutated, waves, 4, &rep, err, sizeof err), 0,
                      "config %d: a planted accumulator read inside the window passed", i);
        cr_assert_not_null(strstr(err, "between WARPGROUP.ARRIVE and WARPGROUP.DEPBAR"), "%s",
                           err);
        free(mutated);
        free(sass);
    }
#endif
}
