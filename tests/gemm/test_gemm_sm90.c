/*
 * The Hopper FP8 GEMM path, verified on the CPU (issue 4 items 4, 5 and the
 * bad-input rules): the kernel's index math (jit/templates/fp8_gemm_sched.cuh:
 * raster order, tile lookup of the three forms, scale and output addressing,
 * the wgmma fragment map, the shared-memory carve-up and its alignment rules,
 * the stage's expect_tx bytes against the planned tensor-map boxes, the wgmma
 * descriptor's bit fields), the heuristic, the GPU argument rules, the
 * behaviour without a usable device, and an NVRTC compile of every kernel
 * configuration the heuristic can pick (for sm_90a, no GPU needed) without
 * register spills or local memory.
 */
#define _GNU_SOURCE
#include <deepinfra.h>

#include "core/numeric_hd.h"
#include "gemm/gemm_sm90.h"
#include "jit_internal.h"
#include "gemm_test_util.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* ------------------------------------------------------------ raster -- */

Test(gemm_sched, raster_visits_every_tile_once_in_strips_of_16_n_blocks) {
    for (int mb = 1; mb <= 37; mb += 3)
        for (int nb = 1; nb <= 70; nb += 3) {
            char *seen = calloc((size_t)(mb * nb), 1);
            int prev_m = -1, prev_n = -1;
            for (long long t = 0; t < (long long)mb * nb; t++) {
                int m, n;
                dinf_fp8_raster(t, mb, nb, &m, &n);
                cr_assert(m >= 0 && m < mb && n >= 0 && n < nb,
                          "mb=%d nb=%d t=%lld -> (%d, %d) out of range", mb, nb, t, m, n);
                cr_assert_eq(seen[m * nb + n], 0, "mb=%d nb=%d: tile (%d, %d) visited twice", mb,
                             nb, m, n);
                seen[m * nb + n] = 1;
                /* Inside a strip N-blocks run fastest; strips are 16 N-blocks wide. */
                cr_assert_eq(n / 16, (int)(t / (16LL * mb)), "mb=%d nb=%d t=%lld: strip", mb, nb,
                             t);
                if (prev_m >= 0 && n / 16 == prev_n / 16)
                    cr_assert(m > prev_m || (m == prev_m && n == prev_n + 1),
                              "mb=%d nb=%d t=%lld: (%d,%d) after (%d,%d)", mb, nb, t, m, n,
                              prev_m, prev_n);
                prev_m = m, prev_n = n;
            }
            free(seen);
        }
}

/* -------------------------------------------------------- tile lookup -- */

Test(gemm_sched, normal_form_covers_every_tile_and_stops) {
    const int shapes[][3] = {{1, 16, 64}, {64, 2112, 64}, {129, 300, 128}, {4096, 7168, 128}};
    for (size_t s = 0; s < 4; s++) {
        const int m = shapes[s][0], n = shapes[s][1], bm = shapes[s][2] == 128 ? 128 : 64;
        const int bn = 32;
        dinf_fp8_gemm_args a = make_args(m, n, 256, 1, bm, bn, NULL);
        const long long count = dinf_fp8_tile_bound(&a, DINF_FP8_GEMM_NORMAL);
        cr_assert_eq(count, (long long)cdiv(m, bm) * cdiv(n, bn));
        char *seen = calloc((size_t)count, 1);
        for (long long t = 0; t < count; t++) {
            dinf_fp8_tile tile;
            cr_assert_eq(dinf_fp8_tile_at(&a, DINF_FP8_GEMM_NORMAL, bm, t, &tile), 1);
            cr_assert_eq(tile.group, 0);
            cr_assert_eq(tile.row_limit, m);
            const long long id = (long long)tile.m_block * a.n_blocks + tile.n_block;
            cr_assert_eq(seen[id], 0, "m=%d n=%d: tile %lld twice", m, n, id);
            seen[id] = 1;
        }
        dinf_fp8_tile tile;
        cr_assert_eq(dinf_fp8_tile_at(&a, DINF_FP8_GEMM_NORMAL, bm, count, &tile), -1);
        cr_assert_eq(dinf_fp8_tile_at(&a, DINF_FP8_GEMM_NORMAL, bm, count + 1000, &tile), -1);
        free(seen);
    }
}

Test(gemm_sched, contiguous_form_skips_minus_one_and_foreign_blocks_and_reads_first_rows) {
    uint64_t seed = 11;
    for (int trial = 0; trial < 50; trial++) {
        const int blocks = 1 + (int)(rng(&seed) % 40), groups = 1 + (int)(rng(&seed) % 8);
        const int m = blocks * 128, n = 16 + 8 * (int)(rng(&seed) % 100), bn = 64;
        int32_t *idx = malloc((size_t)m * 4);
        int *block_group = malloc((size_t)blocks * sizeof(int));
        for (int b = 0; b < blocks; b++) {
            const uint64_t r = rng(&seed) % 10;
            /* -1 (padding), out of range (a caller bug the kernel must survive), or a group */
            block_group[b] = r == 0 ? -1 : r == 1 ? groups + (int)(r % 3) : (int)(r % groups);
            for (int i = 0; i < 128; i++)
                idx[b * 128 + i] = block_group[b];
            idx[b * 128 + 77] = 12345; /* only the first row of a block is read */
        }
        dinf_fp8_gemm_args a = make_args(m, n, 128, groups, 128, bn, idx);
        const long long bound = dinf_fp8_tile_bound(&a, DINF_FP8_GEMM_CONTIGUOUS);
        cr_assert_eq(bound, (long long)blocks * a.n_blocks);
        long long computed = 0, expected = 0;
        for (int b = 0; b < blocks; b++)
            expected += block_group[b] >= 0 && block_group[b] < groups ? a.n_blocks : 0;
        for (long long t = 0; t < bound; t++) {
            dinf_fp8_tile tile;
            const int r = dinf_fp8_tile_at(&a, DINF_FP8_GEMM_CONTIGUOUS, 128, t, &tile);
            int mb, nb;
            dinf_fp8_raster(t, blocks, a.n_blocks, &mb, &nb);
            const int g = block_group[mb];
            if (g < 0 || g >= groups) {
                cr_assert_eq(r, 0, "trial %d tile %lld (block %d, group %d) not skipped", trial,
                             t, mb, g);
                continue;
            }
            cr_assert_eq(r, 1);
            cr_assert_eq(tile.m_block, mb);
            cr_assert_eq(tile.n_block, nb);
            cr_assert_eq(tile.group, g, "trial %d block %d: group %d, want %d", trial, mb,
                         tile.group, g);
            cr_assert_eq(tile.row_limit, m);
            computed++;
        }
        cr_assert_eq(computed, expected);
        dinf_fp8_tile tile;
        cr_assert_eq(dinf_fp8_tile_at(&a, DINF_FP8_GEMM_CONTIGUOUS, 128, bound, &tile), -1);
        free(idx);
        free(block_group);
    }
}

Test(gemm_sched, masked_form_clamps_counts_and_covers_each_valid_tile_once) {
    uint64_t seed = 5;
    for (int trial = 0; trial < 60; trial++) {
        const int groups = 1 + (int)(rng(&seed) % 9), m_max = 1 + (int)(rng(&seed) % 700);
        const int bm = rng(&seed) % 2 ? 64 : 128, bn = 16 << (rng(&seed) % 4);
        const int n = 1 + (int)(rng(&seed) % 900);
        int32_t masked[9];
        for (int g = 0; g < groups; g++) {
            const uint64_t r = rng(&seed) % 8;
            masked[g] = r == 0 ? -(int)(rng(&seed) % 5) - 1       /* negative: 0 rows */
                        : r == 1 ? m_max + 1 + (int)(rng(&seed) % 50) /* above m_max */
                        : r == 2 ? m_max
                                 : (int)(rng(&seed) % (uint64_t)(m_max + 1));
        }
        dinf_fp8_gemm_args a = make_args(m_max, n, 256, groups, bm, bn, masked);
        const long long bound = dinf_fp8_tile_bound(&a, DINF_FP8_GEMM_MASKED);
        cr_assert_eq(bound, (long long)groups * cdiv(m_max, bm) * cdiv(n, bn));
        const int per_group = cdiv(m_max, bm) * a.n_blocks;
        char *seen = calloc((size_t)(groups * per_group), 1);
        long long visited = 0, expected = 0;
        for (int g = 0; g < groups; g++) {
            const int rows = masked[g] < 0 ? 0 : masked[g] > m_max ? m_max : masked[g];
            cr_assert_eq(dinf_fp8_masked_rows(masked, g, m_max), rows);
            expected += (long long)cdiv(rows, bm) * a.n_blocks;
        }
        for (long long t = 0;; t++) {
            dinf_fp8_tile tile;
            const int r = dinf_fp8_tile_at(&a, DINF_FP8_GEMM_MASKED, bm, t, &tile);
            if (r < 0)
                break;
            cr_assert_eq(r, 1);
            cr_assert(t < bound);
            const int rows = dinf_fp8_masked_rows(masked, tile.group, m_max);
            cr_assert_eq(tile.row_limit, rows);
            cr_assert(tile.m_block * bm < rows, "trial %d: tile beyond group %d's %d rows", trial,
                      tile.group, rows);
            cr_assert(tile.n_block < a.n_blocks);
            const int id = tile.group * per_group + tile.m_block * a.n_blocks + tile.n_block;
            cr_assert_eq(seen[id], 0);
            seen[id] = 1;
            visited++;
        }
        cr_assert_eq(visited, expected, "trial %d: %lld tiles, want %lld", trial, visited,
                     expected);
        free(seen);
    }
}

Test(gemm_sched, scale_and_output_addressing) {
    dinf_fp8_gemm_args a = make_args(300, 7000, 1000, 5, 128, 64, NULL);
    a.ldd = 7008;
    cr_assert_eq(a.k_blocks, 8);
    cr_assert_eq(a.n_scale_blocks, 55);
    for (int g = 0; g < 5; g++)
        for (int n0 = 0; n0 < 7000; n0 += 64)
            for (int kb = 0; kb < 8; kb++)
                cr_assert_eq(dinf_fp8_b_scale_index(&a, g, n0, kb),
                             (long long)g * 55 * 8 + (n0 / 128) * 8 + kb);
    cr_assert_eq(dinf_fp8_d_offset(&a, DINF_FP8_GEMM_NORMAL, 0, 17, 5), 17LL * 7008 + 5);
    cr_assert_eq(dinf_fp8_d_offset(&a, DINF_FP8_GEMM_CONTIGUOUS, 3, 17, 5), 17LL * 7008 + 5);
    cr_assert_eq(dinf_fp8_d_offset(&a, DINF_FP8_GEMM_MASKED, 3, 17, 5),
                 (3LL * 300 + 17) * 7008 + 5);
}

Test(gemm_sched, wgmma_fragment_map_covers_the_tile_once) {
    const int bms[] = {64, 128}, bns[] = {16, 32, 64, 128};
    for (int x = 0; x < 2; x++)
        for (int y = 0; y < 4; y++) {
            const int bm = bms[x], bn = bns[y];
            char *seen = calloc((size_t)(bm * bn), 1);
            for (int wg = 0; wg < bm / 64; wg++)
                for (int warp = 0; warp < 4; warp++)
                    for (int lane = 0; lane < 32; lane++)
                        for (int i = 0; i < bn / 8; i++)
                            for (int half = 0; half < 2; half++)
                                for (int j = 0; j < 2; j++) {
                                    const int r = dinf_fp8_frag_row(wg, warp, lane, half);
                                    const int c = dinf_fp8_frag_col(i, lane) + j;
                                    cr_assert(r >= 0 && r < bm && c >= 0 && c < bn);
                                    /* each thread's rows stay inside its warpgroup */
                                    cr_assert_eq(r / 64, wg);
                                    cr_assert_eq(seen[r * bn + c], 0, "bm=%d bn=%d (%d,%d)", bm,
                                                 bn, r, c);
                                    seen[r * bn + c] = 1;
                                }
            for (int e = 0; e < bm * bn; e++)
                cr_assert_eq(seen[e], 1, "bm=%d bn=%d: element %d not covered", bm, bn, e);
            free(seen);
        }
}

Test(gemm_sched, wave_fragment_map_of_block_m_256_covers_the_tile_once) {
    /* BLOCK_M 256 (fast rung): 2 math warpgroups x 2 waves of 64 rows; each
     * warpgroup's rows are its own 128, each wave's its own 64; waves 1
     * reduces to dinf_fp8_frag_row. */
    cr_assert_eq(dinf_fp8_math_warpgroups(64), 1);
    cr_assert_eq(dinf_fp8_math_warpgroups(128), 2);
    cr_assert_eq(dinf_fp8_math_warpgroups(256), 2);
    cr_assert_eq(dinf_fp8_waves(64) + dinf_fp8_waves(128), 2);
    cr_assert_eq(dinf_fp8_waves(256), 2);
    cr_assert(dinf_fp8_threads(64) == 256 && dinf_fp8_threads(128) == 384 &&
              dinf_fp8_threads(256) == 384);
    for (int bn = 16; bn <= 128; bn += 16) {
        char *seen = calloc((size_t)(256 * bn), 1);
        for (int wg = 0; wg < 2; wg++)
            for (int wave = 0; wave < 2; wave++)
                for (int warp = 0; warp < 4; warp++)
                    for (int lane = 0; lane < 32; lane++)
                        for (int half = 0; half < 2; half++) {
                            const int r = dinf_fp8_frag_row_wave(wg, 2, wave, warp, lane, half);
                            cr_assert_eq(dinf_fp8_frag_row_wave(wg, 1, 0, warp, lane, half),
                                         dinf_fp8_frag_row(wg, warp, lane, half));
                            cr_assert_eq(r / 128, wg, "warpgroup %d owns rows [128 wg, +128)", wg);
                            cr_assert_eq(r / 64, 2 * wg + wave);
                            for (int i = 0; i < bn / 8; i++)
                                for (int j = 0; j < 2; j++) {
                                    const int c = dinf_fp8_frag_col(i, lane) + j;
                                    cr_assert(r < 256 && c < bn && !seen[r * bn + c]);
                                    seen[r * bn + c] = 1;
                                }
                        }
        for (int e = 0; e < 256 * bn; e++)
            cr_assert_eq(seen[e], 1, "bn=%d: element %d not covered", bn, e);
        free(seen);
    }
}

Test(gemm_sched, shared_memory_carve_up_meets_the_alignment_rules_and_fits) {
    /* Every (block_m, block_n, stages) the kernel accepts. */
    int checked = 0;
    for (int bm = 64; bm <= 128; bm += 64)
        for (int bn = 16; bn <= 128; bn *= 2)
            for (int stages = 1; stages <= 16; stages++) {
                const long long bytes = DINF_FP8_SMEM_BYTES(bm, bn, stages);
                if (bytes > DINF_FP8_SMEM_LIMIT)
                    continue;
                checked++;
                const dinf_fp8_smem_layout l = dinf_fp8_smem_carve(bm, bn, stages);
                cr_assert_eq(l.a_stage, (unsigned)bm * 128);
                cr_assert_eq(l.b_stage, (unsigned)bn * 128);
                cr_assert_eq(l.sa_stage, (unsigned)bm * 4);
                for (int s = 0; s < stages; s++) {
                    /* 128-byte swizzled TMA boxes and wgmma operands: 1024-aligned,
                     * both math warpgroups' 64-row halves of A included */
                    for (int wg = 0; wg < bm / 64; wg++)
                        cr_assert_eq((l.a + s * l.a_stage + wg * 64 * 128) % 1024, 0,
                                     "A stage %d of %dx%dx%d", s, bm, bn, stages);
                    cr_assert_eq((l.b + s * l.b_stage) % 1024, 0, "B stage %d of %dx%dx%d", s,
                                 bm, bn, stages);
                    /* plain TMA destination (A scales): 128-aligned */
                    cr_assert_eq((l.sa + s * l.sa_stage) % 128, 0, "scales stage %d of %dx%dx%d",
                                 s, bm, bn, stages);
                }
                cr_assert_eq(l.full % 8, 0);
                cr_assert_eq(l.empty % 8, 0);
                /* disjoint, in order, and within the dynamic size after 1024 bytes of
                 * alignment slack (the base is at least 16-byte aligned) */
                cr_assert_eq(l.a, 0u);
                cr_assert_eq(l.b, l.a + stages * l.a_stage);
                cr_assert_eq(l.sa, l.b + stages * l.b_stage);
                cr_assert_eq(l.full, l.sa + stages * l.sa_stage);
                cr_assert_eq(l.empty, l.full + 8u * stages);
                cr_assert_eq(l.end, l.empty + 8u * stages);
                cr_assert_leq(1024 + (long long)l.end, bytes, "%dx%dx%d", bm, bn, stages);
            }
    /* every depth that fits was visited: (227 KiB - 1024) / per-stage bytes, at most 16 */
    int expected = 0;
    for (int bm = 64; bm <= 128; bm += 64)
        for (int bn = 16; bn <= 128; bn *= 2) {
            const int depth = (DINF_FP8_SMEM_LIMIT - 1024) / (bm * 128 + bn * 128 + bm * 4 + 16);
            expected += depth < 16 ? depth : 16;
        }
    cr_assert_eq(checked, expected, "%d configs checked, %d fit", checked, expected);
}

Test(gemm_sched, stage_tx_bytes_equal_the_planned_tensor_map_boxes) {
    /* The producer's expect_tx must equal what the three TMA loads deliver:
     * whole boxes of the planned maps (out-of-bounds parts are filled and
     * counted). Checked on plans of each form and both block_m. */
    static const long long shapes[][3] = {
        {1, 16, 128}, {200, 520, 256}, {4096, 7168, 2048}, {4096, 4096, 7168}};
    int block_m_256 = 0; /* plans with BLOCK_M 256 (the last shape, normal and masked) */
    for (int form = 0; form < 3; form++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            int32_t info[4096];
            for (int r = 0; r < 4096; r++)
                info[r] = form == DINF_FP8_GEMM_CONTIGUOUS ? 0 : (int32_t)shapes[i][0];
            const int64_t rows = form == DINF_FP8_GEMM_CONTIGUOUS
                                     ? (shapes[i][0] + 127) / 128 * 128
                                     : shapes[i][0];
            const dinf__fp8_gpu_problem p = {form,
                                             rows,
                                             shapes[i][1],
                                             shapes[i][2],
                                             form == DINF_FP8_GEMM_NORMAL ? 1 : 2,
                                             rows,
                                             (const uint8_t *)(uintptr_t)0x10000,
                                             shapes[i][2],
                                             (const float *)(uintptr_t)0x20000,
                                             (const uint8_t *)(uintptr_t)0x30000,
                                             shapes[i][2],
                                             (const float *)(uintptr_t)0x40000,
                                             (uint16_t *)(uintptr_t)0x50000,
                                             shapes[i][1],
                                             form == DINF_FP8_GEMM_NORMAL ? NULL : info, 0};
            for (int rung = 0; rung < 2; rung++) {
            dinf__fp8_launch_plan plan;
            dinf__fp8_plan(&p, 132, rung, &plan);
            const dinf__fp8_tensor_map_geometry *maps[4] = {&plan.map_a, &plan.map_b,
                                                            &plan.map_sa, &plan.map_d};
            /* Each CTA's stage: its cluster's A boxes (its own and its peer's
             * multicast), its B box and its A-scales box. */
            unsigned delivered = 0;
            for (int j = 0; j < 3; j++)
                delivered += maps[j]->box[0] * maps[j]->box[1] * maps[j]->box[2] *
                             (unsigned)maps[j]->elem_bytes * (j == 0 ? (unsigned)plan.config.cluster : 1u);
            cr_assert_eq(delivered,
                         dinf_fp8_stage_tx_bytes(plan.config.block_m, plan.config.block_n),
                         "form %d shape %zu rung %d", form, i, rung);
            const int mc = plan.config.cluster > 1 && plan.config.split_k < 2;
            cr_assert_eq(plan.map_a.box[1] * (unsigned)(mc ? plan.config.cluster : 1),
                         (unsigned)plan.config.block_m);
            block_m_256 += plan.config.block_m == 256;
            cr_assert_eq(plan.config.threads, dinf_fp8_threads(plan.config.block_m));
            cr_assert_eq(plan.grid % (unsigned)plan.config.cluster, 0);
            /* and the TMA encoding rules the plan must meet (cuTensorMapEncodeTiled) */
            const int num_maps = rung == DINF__FP8_KERNEL_SIMPLE ? 3 : 4;
            for (int j = 0; j < num_maps; j++) {
                const dinf__fp8_tensor_map_geometry *g = maps[j];
                for (int d = 0; d < 3; d++) {
                    cr_assert(g->box[d] >= 1 && g->box[d] <= 256);
                    cr_assert(g->dims[d] >= 1 && g->dims[d] <= (1ull << 32));
                }
                cr_assert_eq(g->box[0] * (unsigned)g->elem_bytes % 16, 0);
                if (g->swizzle_bytes)
                    cr_assert_leq(g->box[0] * (unsigned)g->elem_bytes, (unsigned)g->swizzle_bytes);
                for (int d = 0; d < 2; d++)
                    cr_assert(g->strides[d] % 16 == 0 && g->strides[d] < (1ull << 40));
                cr_assert_eq((uintptr_t)g->base % 16, 0);
            }
            if (rung == DINF__FP8_KERNEL_FAST) {
                /* D: one box per swizzle-wide chunk, block_m rows, the output's own dims */
                const int sw = dinf_fp8_d_swizzle_bytes(plan.config.block_n);
                cr_assert_eq(plan.map_d.swizzle_bytes, sw);
                cr_assert_eq(plan.map_d.box[0] * 2, (unsigned)sw);
                cr_assert_eq(plan.map_d.box[1], 64u, "one store per math warpgroup's rows");
                cr_assert_eq(plan.map_d.dims[0], (uint64_t)shapes[i][1]);
                cr_assert_eq(plan.map_d.dims[1], (uint64_t)rows);
                cr_assert_eq(plan.map_d.strides[0], (uint64_t)shapes[i][1] * 2);
            }
            }
        }
    cr_assert_eq(block_m_256, 2, "4096 x 4096 x 7168, normal and masked, on the fast rung");
}

Test(gemm_sched, wgmma_descriptor_bit_fields) {
    /* Every stage start the carve-up produces, plus the three k32 advances. */
    for (unsigned base = 0; base < DINF_FP8_SMEM_LIMIT + 1024; base += 1024)
        for (unsigned ks = 0; ks < 4; ks++) {
            const unsigned addr = base + 32 * ks;
            const unsigned long long d = dinf_fp8_wgmma_desc_sw128(addr);
            cr_assert_eq(d & 0x3FFF, (addr >> 4) & 0x3FFF, "start address of %#x", addr);
            cr_assert_eq((d >> 14) & 0x3, 0);
            cr_assert_eq((d >> 16) & 0x3FFF, 0, "leading byte offset");
            cr_assert_eq((d >> 30) & 0x3, 0);
            cr_assert_eq((d >> 32) & 0x3FFF, 1024 >> 4, "stride byte offset");
            cr_assert_eq((d >> 46) & 0x7, 0);
            cr_assert_eq((d >> 49) & 0x7, 0, "base offset");
            cr_assert_eq((d >> 52) & 0x3FF, 0);
            cr_assert_eq(d >> 62, 1, "layout type 1 = 128-byte swizzle");
            /* advancing along K moves the start field only (no carry into other fields) */
            cr_assert_eq(d, dinf_fp8_wgmma_desc_sw128(base) + 2 * ks);
        }
    /* shared-window addresses of 227 KiB fit the 14-bit field (>> 4: 18 bits of address) */
    cr_assert_lt(DINF_FP8_SMEM_LIMIT + 1024, 1 << 18);
}

/* ---------------------------------------------- mbarrier pipeline model -- */

static void bar_settle(model_bar *b) {
    if (b->pending == 0 && b->tx == 0) {
        b->completed++;
        b->pending = b->count;
    }
}
/* mbarrier.try_wait.parity: true once the phase of that parity has completed,
 * i.e. while the current, incomplete phase has the other parity (a fresh
 * barrier is in phase 0: parity 1 passes, parity 0 waits). */
static int bar_passes(const model_bar *b, unsigned parity) { return (b->completed & 1u) != parity; }

typedef struct model_step {
    long long tile;
    int kb;
} model_step;

/* The k blocks one role of CTA `cta` handles, in order (the kernel's loops). */
static int model_steps(const dinf_fp8_gemm_args *a, int form, int bm, unsigned cta, unsigned grid,
                       model_step *out, int cap) {
    int n = 0;
    for (long long t = cta;; t += grid) {
        dinf_fp8_tile tile;
        const int found = dinf_fp8_tile_at(a, form, bm, t, &tile);
        if (found < 0)
            break;
        if (found == 0)
            continue;
        for (int kb = 0; kb < a->k_blocks; kb++) {
            cr_assert_lt(n, cap);
            out[n++] = (model_step){t, kb};
        }
    }
    return n;
}

/*
 * Run one CTA's n k blocks (model_steps: the same list for both roles, skipped
 * tiles counting nothing) through its producer, `consumers` math warpgroups
 * and the asynchronous TMA
 * completions under a random interleaving, with the kernel's barrier counts,
 * expect_tx bytes and dinf_fp8_pipe_at parities (or a deliberately broken
 * variant), the producer ending with its drain (the bounded waits, after the
 * last fill, for the releases of the last `stages` fills: they must pass in
 * every correct run, and only once every consumer is done). Returns NULL, or
 * what went wrong: a consumer reading a stage that does not hold its k block,
 * the producer refilling a stage a consumer still reads, the drain passing
 * early, or a deadlock.
 */
static const char *model_cta(int n, int stages, int consumers,
                             int bm, int bn, int broken, uint64_t seed) {
    enum { MAXS = 16, MAXC = 2, MAXQ = 3 * MAXS };
    model_bar full[MAXS], empty[MAXS];
    long long tag[MAXS][3]; /* iteration whose A / B / scales the stage holds */
    for (int s = 0; s < stages; s++) {
        bar_init(&full[s], 1);
        bar_init(&empty[s], consumers);
        tag[s][0] = tag[s][1] = tag[s][2] = -1;
    }
    const long long part_bytes[3] = {(long long)bm * 128, (long long)bn * 128, (long long)bm * 4};
    struct {
        int stage, part;
        long long it;
    } queue[MAXQ];
    int queued = 0, produced = 0, drained = 0, consumed[MAXC] = {0};
    uint64_t r = seed;
    for (;;) {
        int done = produced == n && drained == stages && queued == 0;
        for (int c = 0; c < consumers; c++)
            done = done && consumed[c] == n;
        if (done)
            return NULL;
        /* runnable agents: 0 = producer, 1..consumers, consumers + 1 + q = TMA load q */
        int runnable[1 + MAXC + MAXQ], count = 0;
        if (produced < n || drained < stages) {
            /* a fill, or after the last one the drain (the kernels' bounded
             * waits on the releases of the last `stages` fills, the waits the
             * next fills would make) */
            dinf_fp8_pipe_slot p = dinf_fp8_pipe_at((unsigned)(produced + drained), stages);
            const unsigned parity = broken == 1 || (broken == 5 && produced == n) ? p.full_parity
                                                                                  : p.empty_parity;
            if (bar_passes(&empty[p.stage], parity))
                runnable[count++] = 0;
        }
        for (int c = 0; c < consumers; c++)
            if (consumed[c] < n) {
                dinf_fp8_pipe_slot p = dinf_fp8_pipe_at((unsigned)consumed[c], stages);
                const unsigned parity = broken == 2 ? p.empty_parity : p.full_parity;
                if (bar_passes(&full[p.stage], parity))
                    runnable[count++] = 1 + c;
            }
        for (int q = 0; q < queued; q++)
            runnable[count++] = 1 + consumers + q;
        if (count == 0)
            return "deadlock: every agent waits";
        const int agent = runnable[rng(&r) % (uint64_t)count];
        if (agent == 0 && produced == n) { /* producer: one drain wait passed */
            const int j = n + drained++;
            if (j >= stages)
                for (int c = 0; c < consumers; c++)
                    if (consumed[c] <= j - stages)
                        return "the drain passed before a consumer released its stage";
        } else if (agent == 0) { /* producer: arrive.expect_tx, then three TMA loads */
            const int it = produced++;
            const int s = dinf_fp8_pipe_at((unsigned)it, stages).stage;
            if (it >= stages)
                for (int c = 0; c < consumers; c++)
                    if (consumed[c] <= it - stages)
                        return "the producer refills a stage a consumer has not released";
            const unsigned tx = dinf_fp8_stage_tx_bytes(bm, bn) - (broken == 3 ? 4 : 0);
            full[s].tx += tx;
            full[s].pending--;
            bar_settle(&full[s]);
            for (int part = 0; part < 3; part++) {
                queue[queued].stage = s, queue[queued].part = part, queue[queued].it = it;
                queued++;
            }
        } else if (agent <= consumers) { /* a math warpgroup reads the stage, releases it */
            const int c = agent - 1, it = consumed[c]++;
            const int s = dinf_fp8_pipe_at((unsigned)it, stages).stage;
            for (int part = 0; part < 3; part++)
                if (tag[s][part] != it)
                    return "a consumer reads a stage that does not hold its k block";
            if (broken != 4 || c != 0)
                empty[s].pending--, bar_settle(&empty[s]);
        } else { /* a TMA load lands: data, then complete_tx of its box bytes */
            const int q = agent - 1 - consumers;
            const int s = queue[q].stage, part = queue[q].part;
            tag[s][part] = queue[q].it;
            full[s].tx -= part_bytes[part];
            if (full[s].tx < 0)
                return "more bytes landed than the stage expected";
            bar_settle(&full[s]);
            queue[q] = queue[--queued];
        }
    }
}

Test(gemm_sched, mbarrier_pipeline_model_never_races_or_deadlocks) {
    /* m_indices with -1 and out-of-range blocks; masked counts with empty groups. */
    static int32_t idx[16 * 128];
    for (int b = 0; b < 16; b++)
        for (int r = 0; r < 128; r++)
            idx[b * 128 + r] = b % 5 == 1 ? -1 : b % 7 == 3 ? 9 : b % 3;
    static const int32_t masked[4] = {0, 77, 300, 1};
    static model_step steps[1 << 14];
    uint64_t seed = 7;
    int runs = 0;
    for (int form = 0; form < 3; form++)
        for (int stages = 1; stages <= 8; stages++)
            for (int kbs = 1; kbs <= 9; kbs += 4)
                for (unsigned grid = 1; grid <= 5; grid += 2) {
                    const int bm = form == DINF_FP8_GEMM_MASKED && stages % 2 ? 64 : 128;
                    const int bn = 16 << (stages % 4);
                    const int m = form == DINF_FP8_GEMM_CONTIGUOUS ? 16 * 128 : 300;
                    const int32_t *info = form == DINF_FP8_GEMM_CONTIGUOUS ? idx
                                          : form == DINF_FP8_GEMM_MASKED   ? masked
                                                                           : NULL;
                    dinf_fp8_gemm_args a = make_args(m, 200, kbs * 128 - 5,
                                                     form == DINF_FP8_GEMM_NORMAL ? 1 : 4, bm, bn,
                                                     info);
                    for (unsigned cta = 0; cta < grid; cta++) {
                        const int n = model_steps(&a, form, bm, cta, grid, steps, 1 << 14);
                        for (int trial = 0; trial < 3; trial++) {
                            const char *why = model_cta(n, stages, bm / 64, bm, bn, 0, seed++);
                            cr_assert_null(why, "form %d, %d stages, %d k blocks, CTA %u of %u: %s",
                                           form, stages, kbs, cta, grid, why);
                            runs++;
                        }
                    }
                }
    cr_log_info("%d pipeline runs", runs);
    /* The model catches the mistakes it is there for (so it can fail): the
     * producer waiting on the wrong parity, consumers waiting on the wrong
     * parity, expect_tx short of what lands, a warpgroup that never releases,
     * the drain alone waiting on the wrong parity (it would pass early, and a
     * stuck consumer would hang instead of trapping). */
    dinf_fp8_gemm_args a = make_args(300, 200, 9 * 128, 1, 128, 64, NULL);
    const int n = model_steps(&a, DINF_FP8_GEMM_NORMAL, 128, 0, 1, steps, 1 << 14);
    for (int broken = 1; broken <= 5; broken++) {
        int caught = 0;
        for (int trial = 0; trial < 20; trial++)
            caught += model_cta(n, 4, 2, 128, 64, broken, 1000 + (uint64_t)trial) != NULL;
        cr_assert_eq(caught, 20, "broken variant %d went unnoticed in %d of 20 runs", broken,
                     20 - caught);
    }
}

/* ---------------------------------------------------------- heuristic -- */

Test(gemm_heuristic, simple_rung_follows_the_documented_rule) {
    const int forms[] = {DINF_FP8_GEMM_NORMAL, DINF_FP8_GEMM_CONTIGUOUS, DINF_FP8_GEMM_MASKED};
    const int sms[] = {1, 78, 132};
    uint64_t seed = 3;
    for (int trial = 0; trial < 3000; trial++) {
        const int form = forms[trial % 3], num_sms = sms[(trial / 3) % 3];
        long long m = (long long)(rng(&seed) % 9000);
        if (form == DINF_FP8_GEMM_CONTIGUOUS)
            m = 128 * (1 + (long long)(rng(&seed) % 64));
        const long long n = 1 + (long long)(rng(&seed) % 40000), k = 1 + (long long)(rng(&seed) % 20000);
        const long long groups = 1 + (long long)(rng(&seed) % 32);
        const dinf__fp8_config c = dinf__fp8_heuristic_simple(form, m, n, k, groups, num_sms);
        const long long mm = m < 1 ? 1 : m;
        cr_assert_eq(c.gemm_type, form);
        cr_assert_eq(c.block_m, form == DINF_FP8_GEMM_CONTIGUOUS ? 128 : mm <= 64 ? 64 : 128,
                     "form %d m=%lld: block_m=%d", form, m, c.block_m);
        cr_assert(c.block_n == 16 || c.block_n == 32 || c.block_n == 64 || c.block_n == 128);
        /* Fewest waves, then the fullest last wave, then the largest block_n. */
        const long long g = form == DINF_FP8_GEMM_MASKED ? groups : 1;
        long long best_waves = -1, best_last = -1, best_bn = -1;
        for (int bn = 16; bn <= 128; bn *= 2) {
            const long long tiles = (long long)cdiv(mm, c.block_m) * cdiv(n, bn) * g;
            const long long waves = (tiles + num_sms - 1) / num_sms;
            const long long last = tiles % num_sms ? tiles % num_sms : num_sms;
            if (best_waves < 0 || waves < best_waves ||
                (waves == best_waves && last >= best_last))
                best_waves = waves, best_last = last, best_bn = bn;
        }
        cr_assert_eq(c.block_n, best_bn, "form %d m=%lld n=%lld sms=%d: block_n=%d, want %lld",
                     form, m, n, num_sms, c.block_n, best_bn);
        cr_assert_eq(c.waves, best_waves);
        cr_assert_eq(c.smem_bytes, DINF_FP8_SMEM_BYTES(c.block_m, c.block_n, c.stages));
        cr_assert_leq(c.smem_bytes, DINF_FP8_SMEM_LIMIT);
        cr_assert(c.stages == 8 ||
                  DINF_FP8_SMEM_BYTES(c.block_m, c.block_n, c.stages + 1) > DINF_FP8_SMEM_LIMIT);
        cr_assert_eq(c.threads, 128 * (1 + c.block_m / 64));
        cr_assert_eq(c.cluster, 1);
        cr_assert_eq(c.kernel, DINF__FP8_KERNEL_SIMPLE);
    }
    /* The README's example shapes on 132 SMs. */
    dinf__fp8_config c = dinf__fp8_heuristic_simple(DINF_FP8_GEMM_NORMAL, 4096, 7168, 16384, 1, 132);
    cr_assert(c.block_m == 128 && c.block_n == 128 && c.stages == 6, "%d %d %d", c.block_m,
              c.block_n, c.stages);
    c = dinf__fp8_heuristic_simple(DINF_FP8_GEMM_NORMAL, 64, 2112, 7168, 1, 132);
    cr_assert(c.block_m == 64 && c.block_n == 16, "%d %d", c.block_m, c.block_n);
}

Test(gemm_heuristic, public_kernel_config_and_its_checks) {
    dinf_jit_kernel_config c;
    cr_assert_eq(dinf_fp8_gemm_kernel_config(DINF_FP8_GEMM_FORM_MASKED, 192, 4096, 7168, 32, 132, &c),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_str_eq(c.name, "fp8_gemm_fast");
    cr_assert_eq(c.size, sizeof c);
    cr_assert_eq(c.num_params, 6);
    const dinf__fp8_config h = dinf__fp8_heuristic(DINF_FP8_GEMM_MASKED, 192, 4096, 7168, 32, 132);
    cr_assert(c.params[0] == 2 && c.params[1] == h.block_m && c.params[2] == h.block_n &&
              c.params[3] == h.stages && c.params[4] == h.cluster && c.params[5] == h.split_k);
    const dinf__jit_template *t;
    cr_assert_eq(dinf__jit_check_config("test", -1, &c, &t), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    /* DINF_FP8_GEMM_KERNEL picks the rung: "simple" gives the reference kernel's
     * config, "fast" and unset the fast one, anything else is refused. */
    cr_assert_eq(setenv("DINF_FP8_GEMM_KERNEL", "simple", 1), 0);
    cr_assert_eq(dinf_fp8_gemm_kernel_config(DINF_FP8_GEMM_FORM_MASKED, 192, 4096, 7168, 32, 132, &c),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    const dinf__fp8_config hs =
        dinf__fp8_heuristic_simple(DINF_FP8_GEMM_MASKED, 192, 4096, 7168, 32, 132);
    cr_assert_str_eq(c.name, "fp8_gemm");
    cr_assert(c.num_params == 4 && c.params[0] == 2 && c.params[1] == hs.block_m &&
              c.params[2] == hs.block_n && c.params[3] == hs.stages);
    cr_assert_eq(dinf__jit_check_config("test", -1, &c, &t), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    cr_assert_eq(setenv("DINF_FP8_GEMM_KERNEL", "fast", 1), 0);
    cr_assert_eq(dinf_fp8_gemm_kernel_config(0, 64, 2112, 7168, 1, 132, &c), DINF_STATUS_OK);
    cr_assert_str_eq(c.name, "fp8_gemm_fast");
    cr_assert_eq(setenv("DINF_FP8_GEMM_KERNEL", "Fast", 1), 0);
    cr_assert_eq(dinf_fp8_gemm_kernel_config(0, 64, 2112, 7168, 1, 132, &c),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_fp8_gemm_kernel_config: DINF_FP8_GEMM_KERNEL=\"Fast\" "
                                        "is not \"fast\" or \"simple\"");
    int rung = -1;
    cr_assert_eq(dinf__fp8_kernel_from_env("f", &rung), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(unsetenv("DINF_FP8_GEMM_KERNEL"), 0);
    cr_assert_eq(dinf__fp8_kernel_from_env("f", &rung), DINF_STATUS_OK);
    cr_assert_eq(rung, DINF__FP8_KERNEL_FAST);
    cr_assert_eq(setenv("DINF_FP8_GEMM_KERNEL", "", 1), 0);
    cr_assert_eq(dinf__fp8_kernel_from_env("f", &rung), DINF_STATUS_OK);
    cr_assert_eq(rung, DINF__FP8_KERNEL_FAST);
    cr_assert_eq(unsetenv("DINF_FP8_GEMM_KERNEL"), 0);
    struct {
        int form;
        long long m, n, k, g;
        int sms;
        int null_config;
        const char *message;
    } bad[] = {
        {4, 1, 1, 1, 1, 1, 0, "dinf_fp8_gemm_kernel_config: form=4 is not a dinf_fp8_gemm_form (0 normal, 1 contiguous, 2 masked, 3 wgrad)"},
        {0, -1, 1, 1, 1, 1, 0, "dinf_fp8_gemm_kernel_config: m=-1 is negative"},
        {0, 1, 0, 1, 1, 1, 0, "dinf_fp8_gemm_kernel_config: n=0 and k=1 must be >= 1"},
        {0, 1, 1, 0, 1, 1, 0, "dinf_fp8_gemm_kernel_config: n=1 and k=0 must be >= 1"},
        {1, 128, 1, 1, 0, 1, 0, "dinf_fp8_gemm_kernel_config: num_groups=0 must be >= 1"},
        {0, 1, 1, 1, 1, -1, 0, "dinf_fp8_gemm_kernel_config: num_sms=-1 must be >= 1, or 0 for the current CUDA device"},
        {0, 1, 1, 1, 1, 1, 1, "dinf_fp8_gemm_kernel_config: config is NULL"},
    };
    /* sizes the kernels do not take (above int32: the model's products would
     * overflow) are UNSUPPORTED, as on the GPU path */
    const long long big = (long long)INT32_MAX + 1;
    const long long huge[][4] = {{big, 1, 1, 1}, {1, big, 1, 1}, {1, 1, big, 1}, {1, 1, 1, big},
                                 {1, 1, 1LL << 50, 1}};
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(dinf_fp8_gemm_kernel_config(0, huge[i][0], huge[i][1], huge[i][2],
                                                 huge[i][3], 132, &c),
                     DINF_STATUS_UNSUPPORTED, "huge case %d", i);
        cr_assert(strstr(dinf_last_error(), "a size above 2^31 - 1"), "%s", dinf_last_error());
    }
    cr_assert_eq(dinf_fp8_gemm_kernel_config(0, INT32_MAX, INT32_MAX, INT32_MAX, 1, 132, &c),
                 DINF_STATUS_OK, "the largest sizes: %s", dinf_last_error());
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(dinf_fp8_gemm_kernel_config(bad[i].form, bad[i].m, bad[i].n, bad[i].k,
                                                 bad[i].g, bad[i].sms,
                                                 bad[i].null_config ? NULL : &c),
                     DINF_STATUS_INVALID_ARGUMENT, "case %zu", i);
        cr_assert_str_eq(dinf_last_error(), bad[i].message);
    }
    /* num_sms 0: the current CUDA device, as the GPU path sees it. Without
     * one (this machine, a CPU-only build) UNSUPPORTED naming why; with one
     * the same config as the heuristic on the device's own description. */
    const dinf_status st0 = dinf_fp8_gemm_kernel_config(0, 64, 2112, 7168, 1, 0, &c);
    char message0[512];
    snprintf(message0, sizeof message0, "%s", dinf_last_error());
#if DINF_WITH_CUDA
    dinf__fp8_device dev;
    if (dinf__fp8_device_query("test", -1, &dev) == DINF_STATUS_OK) {
        cr_assert_eq(st0, DINF_STATUS_OK, "%s", dinf_last_error());
        const dinf__fp8_config hd = dinf__fp8_heuristic_dev(0, 64, 2112, 7168, 1, &dev);
        cr_assert(c.params[1] == hd.block_m && c.params[2] == hd.block_n &&
                  c.params[4] == hd.cluster && c.params[5] == hd.split_k);
        return;
    }
#endif
    cr_assert_eq(st0, DINF_STATUS_UNSUPPORTED, "%s", message0);
    cr_assert(strstr(message0, "dinf_fp8_gemm_kernel_config: ") == message0 &&
                  (strstr(message0, "CUDA") || strstr(message0, "sm_90")),
              "%s", message0);
}

/* ------------------------------------------------------- GPU arguments -- */

/* A valid problem with fake, well-aligned device addresses (never dereferenced). */
static dinf__fp8_gpu_problem fake_problem(int form) {
    dinf__fp8_gpu_problem p;
    memset(&p, 0, sizeof p);
    p.gemm_type = form;
    p.m = 256, p.n = 512, p.k = 640, p.num_groups = form == DINF_FP8_GEMM_NORMAL ? 1 : 4;
    p.expected_m = 100;
    p.a = (const uint8_t *)(uintptr_t)0x10000000;
    p.lda = 640;
    p.a_scales = (const float *)(uintptr_t)0x20000000;
    p.b = (const uint8_t *)(uintptr_t)0x30000000;
    p.ldb = 656;
    p.b_scales = (const float *)(uintptr_t)0x40000004;
    p.d = (uint16_t *)(uintptr_t)0x50000000;
    p.ldd = 520;
    p.group_info = form == DINF_FP8_GEMM_NORMAL ? NULL : (const int32_t *)(uintptr_t)0x60000004;
    return p;
}

#define EXPECT_GPU(p, status, msg)                                                                  \
    do {                                                                                           \
        cr_assert_eq(dinf__fp8_gpu_check("f", &(p)), (status), "%s", dinf_last_error());          \
        cr_assert_str_eq(dinf_last_error(), (msg));                                                \
    } while (0)

/* DINF_FP8_GEMM_PDL: programmatic dependent launch of the fast rung, on by
 * default ("1", unset or empty), off with "0", anything else refused with a
 * message naming the value (the GPU path reads it at every call; the
 * emulator's harness checks the launch attribute each way). */
Test(gemm_heuristic, pdl_switch_from_env) {
    int pdl = -1;
    cr_assert_eq(unsetenv("DINF_FP8_GEMM_PDL"), 0);
    cr_assert_eq(dinf__fp8_pdl_from_env("f", &pdl), DINF_STATUS_OK);
    cr_assert_eq(pdl, 1);
    cr_assert_eq(setenv("DINF_FP8_GEMM_PDL", "", 1), 0);
    pdl = -1;
    cr_assert_eq(dinf__fp8_pdl_from_env("f", &pdl), DINF_STATUS_OK);
    cr_assert_eq(pdl, 1);
    cr_assert_eq(setenv("DINF_FP8_GEMM_PDL", "0", 1), 0);
    cr_assert_eq(dinf__fp8_pdl_from_env("f", &pdl), DINF_STATUS_OK);
    cr_assert_eq(pdl, 0);
    cr_assert_eq(setenv("DINF_FP8_GEMM_PDL", "1", 1), 0);
    cr_assert_eq(dinf__fp8_pdl_from_env("f", &pdl), DINF_STATUS_OK);
    cr_assert_eq(pdl, 1);
    const char *bad[] = {"2", "on", "true", "01", " 1", "1 ", "-1", "yes"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(setenv("DINF_FP8_GEMM_PDL", bad[i], 1), 0);
        pdl = -1;
        cr_assert_eq(dinf__fp8_pdl_from_env("dinf_fp8_gemm_nt", &pdl), DINF_STATUS_INVALID_ARGUMENT,
                     "\"%s\" accepted", bad[i]);
        cr_assert_eq(pdl, 1);
        char want[128];
        snprintf(want, sizeof want, "dinf_fp8_gemm_nt: DINF_FP8_GEMM_PDL=\"%s\" is not \"0\" or \"1\"",
                 bad[i]);
        cr_assert_str_eq(dinf_last_error(), want);
    }
    /* a long value is cut in the message, never overflows it */
    char longv[300];
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    cr_assert_eq(setenv("DINF_FP8_GEMM_PDL", longv, 1), 0);
    cr_assert_eq(dinf__fp8_pdl_from_env("f", &pdl), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(strlen(dinf_last_error()), strlen("f: DINF_FP8_GEMM_PDL=\"\" is not \"0\" or \"1\"") + 64);
    cr_assert_eq(unsetenv("DINF_FP8_GEMM_PDL"), 0);
}

Test(gemm_gpu_rules, each_rule_is_rejected_with_its_message) {
    const dinf_status INV = DINF_STATUS_INVALID_ARGUMENT, UNS = DINF_STATUS_UNSUPPORTED;
    for (int form = 0; form < 3; form++) {
        dinf__fp8_gpu_problem p = fake_problem(form);
        cr_assert_eq(dinf__fp8_gpu_check("f", &p), DINF_STATUS_OK, "%s", dinf_last_error());
        const char *mname = form == 0 ? "m" : form == 1 ? "m_sum" : "m_max";
        const char *gname = form == 2 ? "masked_m" : "m_indices";
        char msg[512];

        p = fake_problem(form), p.k = 0;
        EXPECT_GPU(p, UNS, "f: k=0: the Hopper kernels need k >= 1 (the CPU path writes zeros)");
        p.n = 0; /* empty problems pass whatever k is */
        cr_assert_eq(dinf__fp8_gpu_check("f", &p), DINF_STATUS_OK);
        p = fake_problem(form), p.m = 0;
        cr_assert_eq(dinf__fp8_gpu_check("f", &p), DINF_STATUS_OK);

        p = fake_problem(form), p.n = 1LL << 31;
        snprintf(msg, sizeof msg,
                 "f: %s=256, n=2147483648, k=640, num_groups=%lld: the Hopper kernels take sizes "
                 "below 2^31",
                 mname, (long long)p.num_groups);
        EXPECT_GPU(p, UNS, msg);
        p = fake_problem(form), p.k = (1LL << 31) - 100;
        p.lda = p.ldb = (1LL << 31);
        snprintf(msg, sizeof msg,
                 "f: %s=256, n=512, k=2147483548, num_groups=%lld: the Hopper kernels take sizes "
                 "below 2^31",
                 mname, (long long)p.num_groups);
        EXPECT_GPU(p, UNS, msg);

        p = fake_problem(form), p.a += 8;
        EXPECT_GPU(p, INV, "f: a=0x10000008 is not 16-byte aligned (required on DINF_EXEC_CUDA)");
        p = fake_problem(form), p.a_scales += 1;
        EXPECT_GPU(p, INV,
                   "f: a_scales=0x20000004 is not 16-byte aligned (required on DINF_EXEC_CUDA)");
        p = fake_problem(form), p.b += 1;
        EXPECT_GPU(p, INV, "f: b=0x30000001 is not 16-byte aligned (required on DINF_EXEC_CUDA)");
        p = fake_problem(form), p.b_scales = (const float *)(uintptr_t)0x40000002;
        EXPECT_GPU(p, INV,
                   "f: b_scales=0x40000002 is not 4-byte aligned (required on DINF_EXEC_CUDA)");
        p = fake_problem(form), p.d = (uint16_t *)p.d + 4;
        EXPECT_GPU(p, INV, "f: d=0x50000008 is not 16-byte aligned (required on DINF_EXEC_CUDA)");
        if (form != 0) {
            p = fake_problem(form), p.group_info = (const int32_t *)(uintptr_t)0x60000002;
            snprintf(msg, sizeof msg,
                     "f: %s=0x60000002 is not 4-byte aligned (required on DINF_EXEC_CUDA)", gname);
            EXPECT_GPU(p, INV, msg);
        }
        p = fake_problem(form), p.lda = 648;
        EXPECT_GPU(p, INV,
                   "f: lda=648 is not a multiple of 16 bytes (required on DINF_EXEC_CUDA)");
        p = fake_problem(form), p.ldb = 641;
        EXPECT_GPU(p, INV,
                   "f: ldb=641 is not a multiple of 16 bytes (required on DINF_EXEC_CUDA)");
        p = fake_problem(form), p.ldd = 516;
        EXPECT_GPU(p, INV,
                   "f: ldd=516 is not a multiple of 8 elements (16 bytes; required on "
                   "DINF_EXEC_CUDA)");
        p = fake_problem(form), p.lda = 1LL << 32, p.m = 1 << 9;
        snprintf(msg, sizeof msg,
                 "f: lda=4294967296, ldb=656, ldd=520, %s=512, n=512, k=640: a tensor-map stride "
                 "reaches 2^40 bytes (the Hopper kernels' limit)",
                 mname);
        EXPECT_GPU(p, UNS, msg);
        p = fake_problem(form), p.ldd = 1LL << 31, p.m = 1 << 9;
        snprintf(msg, sizeof msg,
                 "f: lda=640, ldb=656, ldd=2147483648, %s=512, n=512, k=640: a tensor-map stride "
                 "reaches 2^40 bytes (the Hopper kernels' limit)",
                 mname);
        EXPECT_GPU(p, UNS, msg);
    }
}

/* ---------------------------------------------------- without a device -- */

static int gpu_usable(void) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    return dinf_device_query(0, &info) == DINF_STATUS_OK && info.usable;
}

Test(gemm_gpu_rules, cuda_without_an_sm90_device_is_unsupported_and_the_cpu_path_still_works) {
    if (gpu_usable())
        cr_skip_test("a usable sm_90 device is present: the GPU suites cover DINF_EXEC_CUDA");
    enum { M = 128, N = 64, K = 256, G = 2 };
    static uint8_t a[G * M * K], b[G * N * K];
    static float sa[G * 2 * M], sb[G * 2];
    static uint16_t d[G * M * N];
    static int32_t idx[M], masked[G] = {5, 128};
    for (size_t i = 0; i < sizeof a; i++)
        a[i] = (uint8_t)(i * 7 % 0x70);
    for (size_t i = 0; i < sizeof b; i++)
        b[i] = (uint8_t)(i * 13 % 0x70);
    for (size_t i = 0; i < sizeof sa / 4; i++)
        sa[i] = 0.01f;
    sb[0] = sb[1] = sb[2] = sb[3] = 0.02f;
    dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
    const dinf_status st[3] = {
        dinf_fp8_gemm_nt(M, N, K, a, K, sa, b, K, sb, d, N, &cuda),
        dinf_fp8_m_grouped_gemm_nt_contiguous(M, N, K, G, a, K, sa, b, K, sb, d, N, idx, &cuda),
        dinf_fp8_m_grouped_gemm_nt_masked(G, M, N, K, a, K, sa, b, K, sb, d, N, masked, 64, &cuda)};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(st[i], DINF_STATUS_UNSUPPORTED, "form %d", i);
    }
#if DINF_WITH_CUDA
    cr_assert(strstr(dinf_last_error(), "needs an sm_90 device") &&
                  strstr(dinf_last_error(), "DINF_EXEC_CPU"),
              "%s", dinf_last_error());
#endif
    cr_assert_eq(dinf_fp8_gemm_nt(M, N, K, a, K, sa, b, K, sb, d, N, NULL), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_masked(G, M, N, K, a, K, sa, b, K, sb, d, N, masked,
                                                   64, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
}

/* ------------------------------------------------- NVRTC, no spills -- */

/* DeepSeek-V3 shapes of deepgemm.md 4.2 (v1.0 lists + v1.3's K=576 and
 * grouped additions): (form, rows hint, n, k, groups). */
static const long long dsv3_shapes[][5] = {
    /* normal: M in {64, 128, 4096} x (N, K) */
    {0, 64, 2112, 7168, 1},    {0, 64, 24576, 1536, 1},   {0, 64, 32768, 512, 1},
    {0, 64, 7168, 16384, 1},   {0, 64, 4096, 7168, 1},    {0, 64, 7168, 2048, 1},
    {0, 64, 7168, 576, 1},     {0, 128, 2112, 7168, 1},   {0, 128, 24576, 1536, 1},
    {0, 128, 32768, 512, 1},   {0, 128, 7168, 16384, 1},  {0, 128, 4096, 7168, 1},
    {0, 128, 7168, 2048, 1},   {0, 128, 7168, 576, 1},    {0, 4096, 2112, 7168, 1},
    {0, 4096, 24576, 1536, 1}, {0, 4096, 32768, 512, 1},  {0, 4096, 7168, 16384, 1},
    {0, 4096, 4096, 7168, 1},  {0, 4096, 7168, 2048, 1},  {0, 4096, 7168, 576, 1},
    /* contiguous: (G, M per group) x (N, K) -> m_sum = G * M */
    {1, 32768, 4096, 7168, 4}, {1, 32768, 7168, 2048, 4}, {1, 32768, 4096, 7168, 8},
    {1, 32768, 7168, 2048, 8}, {1, 8192, 4096, 7168, 32}, {1, 8192, 7168, 2048, 32},
    /* masked: expected_m hints for (G, m_max) in {(1,1024), (2,512), (4,256)} with
     * masked_m in [64, 384], and HEAD's (G, expected) sets */
    {2, 225, 4096, 7168, 1},   {2, 225, 7168, 2048, 1},   {2, 225, 4096, 7168, 2},
    {2, 225, 7168, 2048, 2},   {2, 225, 4096, 7168, 4},   {2, 225, 7168, 2048, 4},
    {2, 192, 4096, 7168, 32},  {2, 1024, 4096, 7168, 6},  {2, 20, 4096, 7168, 32},
    {2, 20, 7168, 2048, 6},
};

/* Dynamic shared memory of a config (its rung's formula). */
static int config_smem(const dinf__fp8_config *h) {
    return h->kernel == DINF__FP8_KERNEL_SIMPLE
               ? DINF_FP8_SMEM_BYTES(h->block_m, h->block_n, h->stages)
               : DINF_FP8_FAST_SPLIT_SMEM_BYTES(h->block_m, h->block_n, h->stages,
                                                h->split_k < 1 ? 1 : h->split_k);
}

/* Append c to configs unless an equal config (name and params) is there. */
static int add_config(dinf_jit_kernel_config *configs, int count, int cap,
                      const dinf_jit_kernel_config *c) {
    for (int j = 0; j < count; j++)
        if (strcmp(configs[j].name, c->name) == 0 &&
            memcmp(configs[j].params, c->params, sizeof c->params) == 0)
            return count;
    cr_assert_lt(count, cap);
    configs[count] = *c;
    return count + 1;
}

/* Whether configs[j] is the first of its kernel (name) and form (params[0]). */
static int first_of_kernel_and_form(const dinf_jit_kernel_config *configs, int j) {
    for (int i = 0; i < j; i++)
        if (strcmp(configs[i].name, configs[j].name) == 0 &&
            configs[i].params[0] == configs[j].params[0])
            return 0;
    return 1;
}

/* The sweep below runs as SWEEP_SHARDS tests, shard i compiling the configs
 * j with j % SWEEP_SHARDS == i: the test runner's workers share the ~300
 * compiles instead of one worker doing them all. */
enum { SWEEP_SHARDS = 4 };

static void compile_every_config(int shard) {
#if !DINF_WITH_CUDA
    (void)shard;
    cr_skip_test("CPU-only build (make CUDA=0): no JIT");
#else
    int major, minor;
    if (dinf_jit_nvrtc_version(&major, &minor) != DINF_STATUS_OK)
        cr_skip_test("NVRTC is not available: %s", dinf_last_error());
    setup_cache();

    /* Distinct configs over the shapes and three SM counts (H20 78, H100 PCIe
     * 114, H100/H200/H800 SXM 132), both rungs. */
    enum { CAP = 340 };
    static dinf_jit_kernel_config configs[CAP];
    int count = 0;
    const int sms[] = {78, 114, 132};
    for (int rung = 0; rung < 2; rung++)
        for (size_t s = 0; s < sizeof dsv3_shapes / sizeof dsv3_shapes[0]; s++)
            for (int i = 0; i < 3; i++) {
                const long long *x = dsv3_shapes[s];
                const dinf__fp8_config h = dinf__fp8_choose(rung, (int)x[0], x[1], x[2], x[3], x[4], sms[i]);
                dinf_jit_kernel_config c;
                dinf__fp8_jit_config(&h, &c);
                count = add_config(configs, count, CAP, &c);
            }
    const int dsv3_count = count;
    /* Every other config the heuristics can produce for any shape: simple (3
     * forms x block_m x block_n {16..128 pow2}, stages by its smem rule) and
     * fast (3 forms x block_m x its 10 block_n x {cluster 1, A multicast,
     * split-K 2, 3, 4}, stages by its smem rule; block_m 256: normal and
     * masked, block_n <= 128, cluster 1 or A multicast); the same compile
     * each, so cheap to cover. */
    int expected = 0;
    for (int rung = 0; rung < 2; rung++)
        for (int form = 0; form < 3; form++)
            for (int bm = 64; bm <= 256; bm *= 2)
                for (int bn = 16; bn <= 160; bn += 16)
                    for (int mode = 0; mode < FAST_MODES; mode++) {
                        int cluster, split;
                        fast_mode(mode, &cluster, &split);
                        if (rung == DINF__FP8_KERNEL_SIMPLE
                                ? (form == DINF_FP8_GEMM_CONTIGUOUS && bm != 128) || bm == 256 ||
                                      cluster != 1 || 128 % bn != 0
                                : !fast_config_in_space(form, bm, bn, split))
                            continue;
                        dinf__fp8_config h = dinf__fp8_choose(rung, form, bm == 64 ? 64 : 4096, 4096,
                                                              4096, 1, 132);
                        cr_assert_eq(h.block_m == 64, bm == 64);
                        h.block_m = bm;
                        h.block_n = bn;
                        h.cluster = cluster;
                        h.split_k = split;
                        h.stages = rung == DINF__FP8_KERNEL_SIMPLE ? 8 : 16;
                        while (config_smem(&h) > DINF_FP8_SMEM_LIMIT)
                            h.stages--;
                        dinf_jit_kernel_config c;
                        dinf__fp8_jit_config(&h, &c);
                        count = add_config(configs, count, CAP, &c);
                        expected++;
                    }
    cr_assert_eq(count, expected, "%d configs in the heuristics' space, %d expected (the "
                 "DeepSeek-V3 picks must be among them)", count, expected);
    cr_assert_eq(expected, 20 + 250 + 2 * 8 * 2);
    /* Under ASan + UBSan (make test SAN=1) only the first config of each kernel
     * and form is compiled: the library's host code (source, NVRTC call, ptxas
     * report, cache entry) takes the same path for every config, and the
     * compiled kernels do not depend on the sanitizers. The unsanitized build
     * (make test; CI runs both) compiles every config, about 300 NVRTC
     * compiles, 4 minutes of a 2-core CI machine under the sanitizers. */
    double t0 = dinf__jit_now_seconds(), slowest = 0;
    char slowest_label[128] = "";
    int compiled = 0, to_compile = 0, firsts = 0;
    for (int j = 0; j < count; j++) {
        firsts += first_of_kernel_and_form(configs, j);
        to_compile += j % SWEEP_SHARDS == shard &&
                      (!DINF_TEST_SANITIZED || first_of_kernel_and_form(configs, j));
    }
    cr_assert_eq(firsts, 6, "two kernels x three forms");
    for (int j = 0; j < count; j++) {
        if (j % SWEEP_SHARDS != shard ||
            (DINF_TEST_SANITIZED && !first_of_kernel_and_form(configs, j)))
            continue;
        compiled++;
        char label[128];
        dinf__jit_config_label(&configs[j], label, sizeof label);
        const dinf__jit_cubin *cubin;
        const double t1 = dinf__jit_now_seconds();
        cr_assert_eq(dinf__jit_get_cubin("test", &configs[j], "sm_90a", &cubin), DINF_STATUS_OK,
                     "%s: %s", label, dinf_last_error());
        const double took = dinf__jit_now_seconds() - t1;
        if (took > slowest)
            slowest = took, snprintf(slowest_label, sizeof slowest_label, "%s", label);
        const dinf__jit_resources *r = &cubin->resources;
        const int threads = dinf_fp8_threads((int)configs[j].params[1]);
        const int fast = strcmp(configs[j].name, "fp8_gemm_fast") == 0;
        if (fast && threads == 384) { /* the launch refuses any other entry count */
            cr_assert_eq(r->registers, DINF_FP8_FAST_ENTRY_REGS, "%s: %d registers at entry",
                         label, r->registers);
            cr_assert_leq(128 * DINF_FP8_FAST_PRODUCER_REGS + 256 * DINF_FP8_FAST_MATH_REGS,
                          384 * DINF_FP8_FAST_ENTRY_REGS, "the setmaxnreg split overdraws the pool");
        }
        dinf__fp8_config h;
        memset(&h, 0, sizeof h);
        h.kernel = fast ? DINF__FP8_KERNEL_FAST : DINF__FP8_KERNEL_SIMPLE;
        h.block_m = (int)configs[j].params[1], h.block_n = (int)configs[j].params[2];
        h.stages = (int)configs[j].params[3];
        h.split_k = fast ? (int)configs[j].params[5] : 1;
        /* (384 threads: 168 registers at entry; the fast rung's setmaxnreg
         * split 128 * 40 + 256 * 232 = 64512 stays inside the same budget) */
        assert_kernel_resources(label, r, threads, config_smem(&h));
        cr_log_info("%s: %d registers, %d bytes of shared memory, no spills, %.2f s", label,
                    r->registers, config_smem(&h), took);
    }
    cr_log_info("shard %d of %d: %d of %d fp8_gemm/fp8_gemm_fast configs (%d picked for the "
                "DeepSeek-V3 shapes) compiled in %.1f s%s; slowest %s %.2f s",
                shard + 1, SWEEP_SHARDS, compiled, count, dsv3_count,
                dinf__jit_now_seconds() - t0,
                DINF_TEST_SANITIZED ? " (sanitized build: one per kernel and form)" : "",
                slowest_label, slowest);
    cr_assert_eq(compiled, to_compile, "%d configs compiled", compiled);
    if (!DINF_TEST_SANITIZED)
        cr_assert_geq(compiled, count / SWEEP_SHARDS);
    cr_assert_geq(dsv3_count, 6, "the shapes exercise every form and both block_m");

    /* The reference kernel of the GPU tests compiles clean too. */
    for (int tile = 16; shard == 0 && tile <= 32; tile += 16) {
        dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
        snprintf(c.name, sizeof c.name, "f32_gemm_nt_ref");
        c.num_params = 1;
        c.params[0] = tile;
        const dinf__jit_cubin *cubin;
        cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_OK, "%s",
                     dinf_last_error());
        cr_assert_eq(cubin->resources.spill_store_bytes, 0);
        cr_assert_eq(cubin->resources.stack_frame_bytes, 0);
    }
#endif
}

#define SWEEP_TEST(i)                                                                              \
    Test(gemm_jit, every_config_the_heuristics_can_pick_compiles_for_sm90a_without_spills_##i,    \
         .fini = cleanup_cache, .timeout = 600.0) {                                                \
        compile_every_config(i - 1);                                                               \
    }
_Static_assert(SWEEP_SHARDS == 4, "one SWEEP_TEST per shard");
SWEEP_TEST(1)
SWEEP_TEST(2)
SWEEP_TEST(3)
SWEEP_TEST(4)

/* Occurrences of word in the text read from f. */
static void count_sass(FILE *f, int *qgmma, int *tma_loads, int *local, int *griddep,
                       int *traps) {
    char line[1024];
    *qgmma = *tma_loads = *local = *griddep = *traps = 0;
    while (fgets(line, sizeof line, f)) {
        *traps += strstr(line, "BPT.TRAP") != NULL; /* the producer's bounded waits */
        /* griddepcontrol.wait / launch_dependents (ACQBULK / PREEXIT) */
        *griddep += strstr(line, "ACQBULK") != NULL || strstr(line, "PREEXIT") != NULL;
        *qgmma += strstr(line, "QGMMA.64x") != NULL;
        *tma_loads += strstr(line, "UTMALDG.3D") != NULL;
        *local += strstr(line, " LDL") != NULL || strstr(line, " STL") != NULL;
    }
}

Test(gemm_jit, sass_uses_fp8_tensor_cores_and_tma_where_nvdisasm_exists, .fini = cleanup_cache) {
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
    const long long configs[][4] = {{0, 64, 16, 8}, {1, 128, 128, 6}, {2, 64, 128, 8}};
    for (int i = 0; i < 3; i++) {
        char cmd[512];
        FILE *p = open_sass(nvdisasm, "fp8_gemm", configs[i], 4, i, cmd);
        int qgmma, tma, local, griddep, traps;
        count_sass(p, &qgmma, &tma, &local, &griddep, &traps);
        close_sass(p, cmd);
        /* the hang guard: the producer's fill wait and drain trap after DINF_JIT_WAIT_NS */
        cr_assert_geq(traps, 2, "config %d: %d BPT.TRAP", i, traps);
        /* Four wgmma k32 steps per 128-k block (the loop body), three TMA loads per stage. */
        cr_assert_eq(qgmma, 4, "config %d: %d QGMMA instructions", i, qgmma);
        cr_assert_eq(tma, 3, "config %d: %d UTMALDG.3D instructions", i, tma);
        cr_assert_eq(local, 0, "config %d: local memory accesses in the SASS", i);
        /* the simple rung (the reference) is never launched with PDL */
        cr_assert_eq(griddep, 0, "config %d: griddepcontrol in the simple rung's SASS", i);
    }
#endif
}

Test(gemm_jit, kernel_rejects_configs_outside_its_rules, .fini = cleanup_cache) {
#if !DINF_WITH_CUDA
    cr_skip_test("CPU-only build (make CUDA=0): no JIT");
#else
    int major, minor;
    if (dinf_jit_nvrtc_version(&major, &minor) != DINF_STATUS_OK)
        cr_skip_test("NVRTC is not available: %s", dinf_last_error());
    setup_cache();
    const long long bad[][4] = {{1, 64, 128, 4},   /* contiguous needs BLOCK_M = 128 */
                                {0, 100, 128, 4},  /* BLOCK_M 64 or 128 */
                                {0, 128, 48, 4},   /* BLOCK_N divides 128 */
                                {0, 128, 128, 7}}; /* 7 stages do not fit */
    const char *why[] = {"BLOCK_M = 128", "BLOCK_M must be 64 or 128", "BLOCK_N must be",
                         "do not fit in shared memory"};
    for (int i = 0; i < 4; i++) {
        dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
        snprintf(c.name, sizeof c.name, "fp8_gemm");
        c.num_params = 4;
        memcpy(c.params, bad[i], sizeof bad[i]);
        const dinf__jit_cubin *cubin;
        cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_JIT_ERROR,
                     "case %d", i);
        cr_assert(strstr(dinf_last_error(), why[i]), "case %d: %s", i, dinf_last_error());
    }
    /* The fast rung's BLOCK_M 256 rules (and the range check of the registry). */
    const long long bad_fast[][6] = {{1, 256, 128, 3, 1, 1},  /* contiguous: 128-row segments */
                                     {0, 256, 144, 2, 1, 1},  /* two waves of 144 would spill */
                                     {2, 256, 128, 3, 2, 2},  /* no split-K */
                                     {0, 192, 64, 3, 1, 1},   /* 64, 128 or 256 */
                                     {0, 256, 128, 4, 1, 1},  /* 4 stages do not fit */
                                     {0, 512, 64, 2, 1, 1},   /* outside [64, 256] */
                                     {0, 128, 64, 2, 2, 3},   /* split-K 3 needs a cluster of 3 */
                                     {0, 128, 64, 2, 4, 1},   /* no multicast over 4 CTAs */
                                     {0, 128, 64, 2, 5, 5}};  /* outside [1, 4] */
    const char *why_fast[] = {"BLOCK_M = 128", "BLOCK_M 256 takes BLOCK_N <= 128",
                              "BLOCK_M 256 takes BLOCK_N <= 128", "BLOCK_M must be 64, 128 or 256",
                              "do not fit in shared memory", "outside [64, 256]",
                              "equal SPLIT_K with it", "CLUSTER must be 1 or 2", "outside [1, 4]"};
    for (int i = 0; i < 9; i++) {
        dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
        snprintf(c.name, sizeof c.name, "fp8_gemm_fast");
        c.num_params = 6;
        memcpy(c.params, bad_fast[i], sizeof bad_fast[i]);
        const dinf__jit_cubin *cubin;
        const dinf_status st = dinf__jit_get_cubin("test", &c, "sm_90a", &cubin);
        cr_assert(st == DINF_STATUS_JIT_ERROR || st == DINF_STATUS_INVALID_ARGUMENT,
                  "fast case %d", i);
        cr_assert(strstr(dinf_last_error(), why_fast[i]), "fast case %d: %s", i,
                  dinf_last_error());
    }
#endif
}

/* ------------------------------------------------- kernel emulation -- */

/*
 * A CPU replay of fp8_gemm.cuh's data flow on the host's launch plan
 * (dinf__fp8_plan): every CTA of the persistent grid walks its tiles with
 * dinf_fp8_tile_at, "TMA-loads" each stage from the planned tensor-map
 * geometry (out-of-bounds elements zero), reads the B scale with
 * dinf_fp8_b_scale_index, and every math thread accumulates its wgmma
 * fragment (dinf_fp8_frag_row/col) and stores it at dinf_fp8_d_offset, clipped
 * as the kernel clips. Arithmetic follows the CPU's documented order, so the
 * replay must equal the CPU implementation bit for bit: this checks the
 * plan (tensor-map dims, strides, boxes, args), the scheduler, the group
 * lookup, the scale and output addressing and the fragment map together.
 * (The tensor cores' own arithmetic and the swizzle are the GPU tests' part.)
 */

static void emulate_kernel(const dinf__fp8_launch_plan *plan, int gemm_type) {
    const int bm = plan->config.block_m, bn = plan->config.block_n;
    const dinf_fp8_gemm_args *args = &plan->args;
    cr_assert_eq(plan->map_a.box[0], 128);
    cr_assert_eq(plan->map_a.box[1], (uint32_t)bm);
    cr_assert_eq(plan->map_b.box[1], (uint32_t)bn);
    cr_assert_eq(plan->map_sa.box[0], (uint32_t)bm);
    float table[256];
    for (int c = 0; c < 256; c++)
        table[c] = dinf__f32_from_e4m3((uint8_t)c);
    uint8_t *a_tile = malloc((size_t)bm * 128), *b_tile = malloc((size_t)bn * 128);
    float *sa_tile = malloc((size_t)bm * 4), *total = malloc((size_t)bm * bn * 4);
    uint16_t *d = (uint16_t *)(uintptr_t)args->d;
    const float *b_scales = (const float *)(uintptr_t)args->b_scales;
    for (unsigned cta = 0; cta < plan->grid; cta++)
        for (long long t = cta;; t += plan->grid) {
            dinf_fp8_tile tile;
            const int found = dinf_fp8_tile_at(args, gemm_type, bm, t, &tile);
            if (found < 0)
                break;
            if (found == 0)
                continue;
            const int m0 = tile.m_block * bm, n0 = tile.n_block * bn;
            const int a_group = gemm_type == DINF_FP8_GEMM_MASKED ? tile.group : 0;
            memset(total, 0, (size_t)bm * bn * 4);
            for (int kb = 0; kb < args->k_blocks; kb++) {
                for (int r = 0; r < bm; r++) {
                    for (int kk = 0; kk < 128; kk++)
                        tma_element(&plan->map_a, kb * 128 + kk, m0 + r, a_group,
                                    &a_tile[r * 128 + kk]);
                    tma_element(&plan->map_sa, m0 + r, kb, a_group, &sa_tile[r]);
                }
                for (int c = 0; c < bn; c++)
                    for (int kk = 0; kk < 128; kk++)
                        tma_element(&plan->map_b, kb * 128 + kk, n0 + c, tile.group,
                                    &b_tile[c * 128 + kk]);
                const float b_scale = b_scales[dinf_fp8_b_scale_index(args, tile.group, n0, kb)];
                for (int wg = 0; wg < bm / 64; wg++)
                    for (int warp = 0; warp < 4; warp++)
                        for (int lane = 0; lane < 32; lane++)
                            for (int i = 0; i < bn / 8; i++)
                                for (int half = 0; half < 2; half++)
                                    for (int j = 0; j < 2; j++) {
                                        const int row = dinf_fp8_frag_row(wg, warp, lane, half);
                                        const int col = dinf_fp8_frag_col(i, lane) + j;
                                        float partial = 0.0f;
                                        for (int kk = 0; kk < 128; kk++)
                                            partial += table[a_tile[row * 128 + kk]] *
                                                       table[b_tile[col * 128 + kk]];
                                        const float scale = sa_tile[row] * b_scale;
                                        total[row * bn + col] += scale * partial;
                                    }
            }
            for (int row = 0; row < bm; row++)
                for (int col = 0; col < bn; col++) {
                    if (m0 + row >= tile.row_limit || n0 + col >= args->n)
                        continue;
                    d[dinf_fp8_d_offset(args, gemm_type, tile.group, m0 + row, n0 + col)] =
                        dinf__bf16_from_f32(total[row * bn + col]);
                }
        }
    free(a_tile), free(b_tile), free(sa_tile), free(total);
}

#define EMU_POISON 0x7FC1u

/* Emulate and run the CPU implementation on the same buffers; compare every
 * element of d (poison included). rows: m / m_sum / m_max. */
static void emulate_and_compare(int form, int64_t groups, int64_t rows, int64_t n, int64_t k,
                                int64_t lda, int64_t ldb, int64_t ldd, const int32_t *info,
                                const int32_t *cpu_info, int64_t expected_m, int num_sms,
                                uint64_t seed) {
    uint64_t s = seed;
    const int64_t a_rows = form == DINF_FP8_GEMM_MASKED ? groups * rows : rows;
    const int64_t kb = (k + 127) / 128, nsb = (n + 127) / 128, aligned = (rows + 3) / 4 * 4;
    const int64_t sa_count = form == DINF_FP8_GEMM_MASKED ? groups * kb * aligned : kb * aligned;
    uint8_t *a = malloc((size_t)(a_rows * lda)), *b = malloc((size_t)(groups * n * ldb));
    float *sa = malloc((size_t)sa_count * 4), *sb = malloc((size_t)(groups * nsb * kb) * 4);
    uint16_t *d_emu = malloc((size_t)(a_rows * ldd) * 2), *d_cpu = malloc((size_t)(a_rows * ldd) * 2);
    fill_codes(a, (size_t)(a_rows * lda), &s); /* junk in the stride padding too */
    fill_codes(b, (size_t)(groups * n * ldb), &s);
    fill_scales(sa, (size_t)sa_count, &s);
    fill_scales(sb, (size_t)(groups * nsb * kb), &s);
    for (int64_t i = 0; i < a_rows * ldd; i++)
        d_emu[i] = d_cpu[i] = EMU_POISON;

    const dinf__fp8_gpu_problem p = {form, rows, n, k, groups, expected_m, a, lda, sa, b, ldb, sb,
                                     d_emu, ldd, info, 0};
    cr_assert_eq(dinf__fp8_gpu_check("emu", &p), DINF_STATUS_OK, "%s", dinf_last_error());
    dinf__fp8_launch_plan plan;
    dinf__fp8_plan(&p, num_sms, DINF__FP8_KERNEL_SIMPLE, &plan);
    cr_assert_leq(plan.grid, (unsigned)num_sms);
    emulate_kernel(&plan, form);

    if (form == DINF_FP8_GEMM_NORMAL)
        cr_assert_eq(dinf_fp8_gemm_nt(rows, n, k, a, lda, sa, b, ldb, sb, d_cpu, ldd, NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
    else if (form == DINF_FP8_GEMM_CONTIGUOUS)
        cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_contiguous(rows, n, k, groups, a, lda, sa, b, ldb,
                                                           sb, d_cpu, ldd, cpu_info, NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
    else
        cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_masked(groups, rows, n, k, a, lda, sa, b, ldb, sb,
                                                       d_cpu, ldd, cpu_info, expected_m, NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
    for (int64_t i = 0; i < a_rows * ldd; i++)
        cr_assert_eq(d_emu[i], d_cpu[i],
                     "form %d rows=%lld n=%lld k=%lld sms=%d (block %dx%d): d[%lld][%lld] "
                     "emulated %#x, CPU %#x",
                     form, (long long)rows, (long long)n, (long long)k, num_sms,
                     plan.config.block_m, plan.config.block_n, (long long)(i / ldd),
                     (long long)(i % ldd), d_emu[i], d_cpu[i]);
    free(a), free(b), free(sa), free(sb), free(d_emu), free(d_cpu);
}

Test(gemm_emulation, normal_form_replays_the_cpu_implementation) {
    const int64_t shapes[][6] = {/* m, n, k, lda, ldb, ldd */
                                 {1, 16, 128, 128, 128, 16},     {5, 200, 100, 112, 128, 208},
                                 {64, 24, 300, 304, 320, 24},    {70, 136, 256, 256, 272, 144},
                                 {130, 520, 129, 144, 144, 520}, {200, 40, 640, 640, 656, 48}};
    const int sms[] = {1, 3, 132};
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 3; j++)
            emulate_and_compare(DINF_FP8_GEMM_NORMAL, 1, shapes[i][0], shapes[i][1], shapes[i][2],
                                shapes[i][3], shapes[i][4], shapes[i][5], NULL, NULL, 0, sms[j],
                                (uint64_t)(100 + 3 * i + j));
}

Test(gemm_emulation, contiguous_form_replays_the_cpu_implementation) {
    /* 6 blocks: groups 2, -1, 0, 0, 1, -1 (skipped blocks keep the poison). */
    const int32_t block_group[] = {2, -1, 0, 0, 1, -1};
    const int64_t m_sum = 6 * 128;
    int32_t *idx = malloc((size_t)m_sum * 4);
    for (int64_t r = 0; r < m_sum; r++)
        idx[r] = block_group[r / 128];
    emulate_and_compare(DINF_FP8_GEMM_CONTIGUOUS, 3, m_sum, 200, 300, 304, 320, 208, idx, idx, 0,
                        2, 7);
    emulate_and_compare(DINF_FP8_GEMM_CONTIGUOUS, 3, m_sum, 64, 128, 128, 128, 64, idx, idx, 0,
                        132, 8);
    /* A block whose index is out of range is skipped on the device (the CPU
     * rejects it): the replay equals the CPU run with that block at -1. */
    int32_t *cpu_idx = malloc((size_t)m_sum * 4);
    memcpy(cpu_idx, idx, (size_t)m_sum * 4);
    for (int r = 0; r < 128; r++)
        idx[r] = 7, cpu_idx[r] = -1;
    emulate_and_compare(DINF_FP8_GEMM_CONTIGUOUS, 3, m_sum, 136, 256, 256, 256, 136, idx, cpu_idx,
                        0, 5, 9);
    free(idx), free(cpu_idx);
}

Test(gemm_emulation, masked_form_replays_the_cpu_implementation) {
    /* masked_m: zero, ragged, full, above m_max and negative (clamped on the
     * device; the CPU gets the clamped counts). */
    const int32_t masked[] = {0, 77, 130, 630, -3, 1};
    const int32_t clamped[] = {0, 77, 130, 130, 0, 1};
    emulate_and_compare(DINF_FP8_GEMM_MASKED, 6, 130, 200, 300, 304, 320, 208, masked, clamped,
                        60, 4, 11);   /* expected_m 60: block_m 64 */
    emulate_and_compare(DINF_FP8_GEMM_MASKED, 6, 130, 72, 256, 256, 256, 80, masked, clamped, 100,
                        132, 12);     /* expected_m 100: block_m 128 */
    const int32_t small[] = {1, 64, 65};
    emulate_and_compare(DINF_FP8_GEMM_MASKED, 3, 68, 48, 576, 576, 576, 48, small, small, 40, 1,
                        13);
}
