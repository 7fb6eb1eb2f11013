/*
 * sm90-emu harness for the Hopper FP8 GEMM (jit/templates/fp8_gemm.cuh):
 * calls the library's public FP8 GEMMs with DINF_EXEC_CUDA, so gemm.c's
 * checks and gemm_cuda.c's plan, tensor-map parameters and launch run as
 * they are; the launch runs the kernel on the emulator (emu_host.c). Each
 * result is compared with the same call on the CPU (exec NULL):
 *   EMU_MMA=seq     the emulated wgmma accumulates in float32 in k order,
 *                   the CPU GEMM's order: results must be bit-identical;
 *   EMU_MMA=double  (default) each wgmma sums exactly and rounds once:
 *                   |emu - cpu| <= (133 + 2 kb) 2^-24 E + 1 bf16 ulp, with
 *                   E = sum_kb |sa sb| sum_k |a b| (both paths' float32
 *                   rounding errors, see README.md);
 * and every output element the CPU does not write (padding columns, rows a
 * masked group does not own, skipped contiguous blocks, guard areas before
 * and after d) must keep its poison.
 *
 * usage: emu_gemm [CASE-SUBSTRING] ; env EMU_SEEDS (data seeds per case, 1),
 * EMU_SKEW / EMU_SEED (scheduling), EMU_MMA; EMU_RANDOM=N runs N random
 * cases instead (random form, sizes, strides, group data and SM count, on a
 * random compiled kernel instance; EMU_RANDOM_SEED picks the sequence).
 */
#define _GNU_SOURCE
#include "emu_host.h"

#include <deepinfra.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POISON 0x7FC1u /* a NaN bf16 pattern cvt.rn never produces */
#define GUARD 64       /* poisoned elements before and after d */

enum { NORMAL = 0, CONTIG = 1, MASKED = 2, WGRAD = 3 };

typedef struct gemm_case {
    const char *name;
    int form;
    int m;      /* normal m, contiguous m_sum, masked m_max */
    int n, k, groups;
    int lda_pad, ldb_pad, ldd_pad; /* extra bytes / bytes / elements per row */
    int num_sms;                   /* the emulated device's SM count (grid bound) */
    int block_m, block_n, stages;  /* forced config, 0: the library's heuristic */
    int expected_m;                /* masked */
    int group_spec[8];             /* contiguous: group of each 128-row block (-1 skip, >= G out of
                                      range); masked: masked_m per group (any int: clamped);
                                      wgrad with groups > 1: k of each group (the k-grouped form;
                                      k unused) */
    int fast;                      /* 1: the fast rung (fp8_gemm_fast.cuh, when the library has
                                      it; the config must be forced: gen.py builds these) */
    int cluster, split_k;          /* fast rung: CTAs per cluster, split-K */
} gemm_case;

static const gemm_case cases[] = {
    /* normal: odd m/n/k tails, padded strides, heuristic and forced configs */
    {"normal_heuristic", NORMAL, 100, 200, 300, 1, 16, 32, 8, 3, 0, 0, 0, 0, {0}},
    {"normal_bm64_bn32_s2", NORMAL, 40, 72, 129, 1, 0, 16, 0, 2, 0, 32, 2, 0, {0}},
    {"normal_bm128_bn64_s1", NORMAL, 130, 131, 256, 1, 48, 0, 24, 3, 128, 64, 1, 0, {0}},
    {"normal_bm128_bn16_s3", NORMAL, 129, 40, 520, 1, 0, 0, 0, 4, 128, 16, 3, 0, {0}},
    {"normal_bm64_bn128", NORMAL, 64, 256, 128, 1, 0, 0, 0, 1, 0, 128, 0, 0, {0}},
    {"normal_bm64_bn128_s2", NORMAL, 33, 250, 384, 1, 16, 16, 8, 2, 64, 128, 2, 0, {0}},
    /* contiguous: -1 blocks, an out-of-range index (skipped on the device) */
    {"contig_heuristic", CONTIG, 384, 96, 200, 2, 0, 16, 0, 2, 0, 0, 0, 0, {1, -1, 0}},
    {"contig_bn16_s3", CONTIG, 512, 40, 160, 3, 16, 0, 8, 3, 128, 16, 3, 0, {2, 3, -1, 0}},
    {"contig_bn64_s2", CONTIG, 256, 136, 300, 2, 0, 0, 0, 2, 128, 64, 2, 0, {0, 1}},
    /* masked: masked_m 0, m_max, partial, above m_max (clamped), negative */
    {"masked_heuristic", MASKED, 96, 80, 300, 3, 0, 0, 0, 3, 0, 0, 0, 50, {0, 96, 37}},
    {"masked_bm128_bn64_s2", MASKED, 200, 136, 128, 2, 16, 0, 8, 2, 128, 64, 2, 150, {250, 5}},
    {"masked_bm64_bn32_s1", MASKED, 70, 64, 257, 3, 0, 16, 0, 2, 64, 32, 1, 40, {-3, 70, 69}},
    /* the fast rung (fp8_gemm_fast.cuh): block_n not dividing 128, 2-CTA
     * clusters (A multicast; an odd N-block count leaves a phantom partner),
     * split-K pairs, TMA-store epilogue; one line each, gen.py reads them */
    {"fast_normal_bn96_c1", NORMAL, 150, 200, 300, 1, 16, 0, 8, 3, 128, 96, 3, 0, {0}, 1, 1, 1},
    {"fast_normal_bn64_c2", NORMAL, 200, 200, 400, 1, 0, 16, 0, 4, 128, 64, 2, 0, {0}, 1, 2, 1},
    {"fast_normal_bn48_split", NORMAL, 100, 150, 1100, 1, 0, 0, 8, 4, 128, 48, 2, 0, {0}, 1, 2, 2},
    /* the one-wave picks of the cost model at M = 64 and 128 (64x48, 128x80 split-K 2) */
    {"fast_normal_bm64_bn48_split", NORMAL, 60, 150, 1100, 1, 16, 0, 8, 4, 64, 48, 3, 0, {0}, 1, 2, 2},
    {"fast_normal_bn80_split", NORMAL, 130, 170, 900, 1, 0, 16, 0, 6, 128, 80, 2, 0, {0}, 1, 2, 2},
    /* split-K over clusters of 3 and 4: k blocks 9 (3 + 3 + 3; 3 + 3 + 3 + 0:
     * a rank without blocks), 2 (ranks 2.. without), persistent clusters
     * (fewer SMs than units), every form */
    {"fast_normal_bm64_bn96_split3", NORMAL, 60, 250, 1100, 1, 16, 0, 8, 6, 64, 96, 3, 0, {0}, 1, 3, 3},
    {"fast_normal_bn64_split4", NORMAL, 130, 136, 1100, 1, 0, 16, 0, 8, 128, 64, 2, 0, {0}, 1, 4, 4},
    {"fast_normal_bn32_split4_k2", NORMAL, 100, 72, 200, 1, 0, 0, 0, 4, 128, 32, 2, 0, {0}, 1, 4, 4},
    {"fast_contig_bn48_split3", CONTIG, 384, 100, 900, 2, 0, 16, 0, 6, 128, 48, 2, 0, {1, -1, 0}, 1, 3, 3},
    {"fast_masked_bm64_bn80_split4", MASKED, 70, 90, 1000, 3, 0, 0, 8, 8, 64, 80, 3, 40, {70, 0, 9}, 1, 4, 4},
    {"fast_masked_bn160_c2", MASKED, 100, 300, 256, 2, 0, 0, 0, 4, 64, 160, 2, 60, {100, 37}, 1, 2, 1},
    {"fast_contig_bn112_c1", CONTIG, 384, 230, 200, 2, 0, 0, 8, 3, 128, 112, 2, 0, {1, -1, 0}, 1, 1, 1},
    {"fast_masked_bn80_c1", MASKED, 70, 90, 300, 3, 0, 16, 0, 2, 64, 80, 3, 40, {70, 0, 9}, 1, 1, 1},
    /* BLOCK_M 256: two 64-row waves per math warpgroup; a partial last
     * M-block (rows past m in wave 1 of warpgroup 0, all of warpgroup 1),
     * the multicast halves of 128 rows with a phantom partner, masked groups
     * whose warpgroups store by TMA (all 128 rows owned) or directly */
    {"fast_normal_bm256_bn128_c1", NORMAL, 300, 200, 300, 1, 16, 0, 8, 3, 256, 128, 2, 0, {0}, 1, 1, 1},
    {"fast_normal_bm256_bn64_c2", NORMAL, 400, 150, 400, 1, 0, 16, 0, 4, 256, 64, 2, 0, {0}, 1, 2, 1},
    {"fast_masked_bm256_bn96_c2", MASKED, 300, 200, 256, 4, 0, 0, 8, 2, 256, 96, 2, 150, {300, 130, 0, 200}, 1, 2, 1},
    {"fast_masked_bm256_bn32_c1", MASKED, 260, 72, 300, 2, 16, 0, 0, 3, 256, 32, 3, 128, {128, 259}, 1, 1, 1},
    /* the weight-gradient kernel (fp8_gemm_1d1d.cuh, float32 d +=): per-column
     * B scales, odd tails, padded strides, shallow rings; the k-grouped form
     * (one launch per group with k_g > 0; k_g multiples of 16) */
    {"wgrad_heuristic", WGRAD, 100, 200, 300, 1, 16, 32, 4, 3, 0, 0, 0, 0, {0}},
    {"wgrad_bm64_bn32_s2", WGRAD, 40, 72, 129, 1, 0, 16, 0, 2, 64, 32, 2, 0, {0}},
    {"wgrad_bm128_bn64_s1", WGRAD, 130, 131, 256, 1, 48, 0, 12, 3, 128, 64, 1, 0, {0}},
    {"wgrad_bm128_bn128_s3", WGRAD, 129, 250, 520, 1, 0, 0, 0, 4, 128, 128, 3, 0, {0}},
    {"wgrad_bm64_bn16", WGRAD, 33, 40, 384, 1, 16, 16, 4, 2, 64, 16, 0, 0, {0}},
    {"wgrad_k_grouped", WGRAD, 70, 90, 0, 4, 0, 0, 0, 3, 0, 0, 0, 0, {160, 0, 48, 272}},
};

static uint64_t rng;
static uint64_t next_u64(void) {
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double uniform(void) { return (double)(next_u64() >> 11) / 9007199254740992.0; }
static uint8_t rand_e4m3(void) {
    for (;;) {
        const uint8_t c = (uint8_t)next_u64();
        if ((c & 0x7F) != 0x7F)
            return c;
    }
}
static float rand_scale(void) { return (float)(ldexp(1.0, (int)(next_u64() % 7) - 3) * (1.0 + uniform())); }
static float nanf_(void) { return NAN; }

/* e4m3 decode (independent of the library's table). */
static double e4m3(uint8_t c) {
    const int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    const double v = e == 0 ? ldexp(m, -9) : ldexp(8 + m, e - 10);
    return s ? -v : v;
}
static double bf16_val(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Page-aligned, whole pages: the emulator can close a buffer to threads of a
 * PDL launch that have not passed griddepcontrol.wait (emu_global_guard_add). */
static size_t xalloc_bytes(size_t bytes) { return (bytes + 4095) / 4096 * 4096 + 4096; }
static void *xalloc(size_t bytes) {
    void *p = aligned_alloc(4096, xalloc_bytes(bytes));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

static int run_case(const gemm_case *c, unsigned seed, int mode_seq) {
    rng = 0x1234567ull + seed * 7919ull + (uint64_t)(uintptr_t)c->name[0];
    const int G = c->groups, k = c->k, n = c->n, kb = ceil_div(k, 128), nsb = ceil_div(n, 128);
    const int rows = c->form == MASKED ? G * c->m : c->m;
    const int m_group = c->form == MASKED ? c->m : c->m;
    const int aligned = ceil_div(m_group, 4) * 4;
    const int a_groups = c->form == MASKED ? G : 1;
    /* strides: the kernels' alignment (16 bytes) plus the case's padding */
    const long long lda = (k + 15) / 16 * 16 + c->lda_pad, ldb = (k + 15) / 16 * 16 + c->ldb_pad;
    const long long ldd = (n + 7) / 8 * 8 + c->ldd_pad;
    const size_t a_bytes = (size_t)rows * lda, b_bytes = (size_t)G * n * ldb;
    const size_t sa_count = (size_t)a_groups * kb * aligned, sb_count = (size_t)G * nsb * kb;
    const size_t d_count = (size_t)rows * ldd;

    uint8_t *a = xalloc(a_bytes), *b = xalloc(b_bytes);
    float *sa = xalloc(sa_count * 4), *sb = xalloc(sb_count * 4);
    uint16_t *d_emu_all = xalloc((d_count + 2 * GUARD) * 2), *d_ref_all = xalloc((d_count + 2 * GUARD) * 2);
    uint16_t *d_emu = d_emu_all + GUARD, *d_ref = d_ref_all + GUARD;
    int32_t *info = xalloc(sizeof(int32_t) * (size_t)(c->form == CONTIG ? rows : G) + 4);
    int32_t *info_ref = xalloc(sizeof(int32_t) * (size_t)(c->form == CONTIG ? rows : G) + 4);

    /* inputs: random valid e4m3; the padding of each row NaN (never read) */
    for (int r = 0; r < rows; r++)
        for (long long j = 0; j < lda; j++)
            a[r * lda + j] = j < k ? rand_e4m3() : 0x7F;
    for (long long r = 0; r < (long long)G * n; r++)
        for (long long j = 0; j < ldb; j++)
            b[r * ldb + j] = j < k ? rand_e4m3() : 0xFF;
    for (int g = 0; g < a_groups; g++)
        for (int q = 0; q < kb; q++)
            for (int i = 0; i < aligned; i++)
                sa[((size_t)g * kb + q) * aligned + i] = i < m_group ? rand_scale() : nanf_();
    for (size_t i = 0; i < sb_count; i++)
        sb[i] = rand_scale();
    for (size_t i = 0; i < d_count + 2 * GUARD; i++)
        d_emu_all[i] = d_ref_all[i] = POISON;
    if (c->form == CONTIG)
        for (int r = 0; r < rows; r++) {
            const int g = c->group_spec[r / 128];
            info[r] = g;
            info_ref[r] = g >= 0 && g < G ? g : -1; /* the device skips what the CPU rejects */
        }
    if (c->form == MASKED)
        for (int g = 0; g < G; g++) {
            info[g] = c->group_spec[g];
            info_ref[g] = info[g] < 0 ? 0 : info[g] > c->m ? c->m : info[g]; /* the device clamps */
        }

    emu_global_clear();
    emu_global_add(a, a_bytes, "a");
    emu_global_add(b, b_bytes, "b");
    emu_global_add(sa, sa_count * 4, "a_scales");
    emu_global_add(sb, sb_count * 4, "b_scales");
    emu_global_add(d_emu, d_count * 2, "d");
    emu_global_add(info, sizeof(int32_t) * (size_t)(c->form == CONTIG ? rows : G), "group_info");
    /* Every buffer the kernel can reach, closed (PROT_NONE) to a thread of a
     * PDL launch until it passes griddepcontrol.wait. */
    emu_global_guard_add(a, a_bytes, "a");
    emu_global_guard_add(b, b_bytes, "b");
    emu_global_guard_add(sa, sa_count * 4, "a_scales");
    emu_global_guard_add(sb, sb_count * 4, "b_scales");
    emu_global_guard_add(d_emu_all, (d_count + 2 * GUARD) * 2, "d");
    emu_global_guard_add(info, sizeof(int32_t) * (size_t)(c->form == CONTIG ? rows : G) + 4,
                         "group_info (m_indices / masked_m)");

    dinf_status st;
    const dinf_exec gpu = DINF_EXEC_CUDA_INIT(0, NULL);
    emu_force_config.block_m = c->block_m;
    emu_force_config.block_n = c->block_n;
    emu_force_config.stages = c->stages;
    emu_force_config.cluster = c->fast ? c->cluster : 0;
    emu_force_config.split_k = c->fast ? c->split_k : 0;
    /* the rung (read by libraries with two; ignored by one with only fp8_gemm.cuh) */
    setenv("DINF_FP8_GEMM_KERNEL", c->fast ? "fast" : "simple", 1);
    char env[32];
    snprintf(env, sizeof env, "%d", c->num_sms);
    setenv("EMU_NUM_SMS", env, 1);
    const long long launches0 = emu_host_stats.launches, sw0 = emu_switches(),
                    waits0 = emu_griddep_waits();
    const clock_t t0 = clock();
    for (int pass = 0; pass < 2; pass++) {
        const dinf_exec *ex = pass ? &gpu : NULL;
        uint16_t *d = pass ? d_emu : d_ref;
        const int32_t *gi = pass ? info : info_ref;
        if (c->form == NORMAL)
            st = dinf_fp8_gemm_nt(c->m, n, k, a, lda, sa, b, ldb, sb, d, ldd, ex);
        else if (c->form == CONTIG)
            st = dinf_fp8_m_grouped_gemm_nt_contiguous(c->m, n, k, G, a, lda, sa, b, ldb, sb, d, ldd,
                                                       gi, ex);
        else
            st = dinf_fp8_m_grouped_gemm_nt_masked(G, c->m, n, k, a, lda, sa, b, ldb, sb, d, ldd, gi,
                                                   c->expected_m, ex);
        if (st != DINF_STATUS_OK) {
            printf("FAIL %s seed %u: %s run returned %s: %s\n", c->name, seed, pass ? "emulated" : "CPU",
                   dinf_status_string(st), dinf_last_error());
            return 1;
        }
    }
    const double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    if (emu_host_stats.launches != launches0 + 1) {
        printf("FAIL %s: expected one kernel launch, saw %lld\n", c->name,
               emu_host_stats.launches - launches0);
        return 1;
    }
    /* Programmatic dependent launch: the fast rung's launches carry it
     * unless DINF_FP8_GEMM_PDL=0, the simple rung's never; in a PDL launch
     * every thread of every CTA passes griddepcontrol.wait (the emulator
     * fails any global access or TMA issue before it). */
    const char *pdl_env = getenv("DINF_FP8_GEMM_PDL");
    const unsigned want_pdl =
        emu_has_pdl() && c->fast && !(pdl_env && strcmp(pdl_env, "0") == 0);
    if (emu_host_stats.last_pdl != want_pdl) {
        printf("FAIL %s: launched %s programmatic dependent launch, expected %s\n", c->name,
               emu_host_stats.last_pdl ? "with" : "without", want_pdl ? "with" : "without");
        return 1;
    }
    const long long waits = emu_griddep_waits() - waits0;
    if (want_pdl && waits != (long long)emu_host_stats.last_grid * emu_host_stats.last_block) {
        printf("FAIL %s: %lld threads passed griddepcontrol.wait, the grid has %u x %u\n", c->name,
               waits, emu_host_stats.last_grid, emu_host_stats.last_block);
        return 1;
    }
    /* tiles of the launch (masked: with the clamped counts) */
    long long tiles = 0;
    const int bm = emu_host_stats.block_m, bn = emu_host_stats.block_n;
    if (c->form == MASKED)
        for (int g = 0; g < G; g++)
            tiles += (long long)ceil_div(info_ref[g], bm) * ceil_div(n, bn);
    else
        tiles = (long long)ceil_div(c->m, bm) * ceil_div(n, bn);

    int bad = 0;
    double worst = 0;
    for (long long i = -GUARD; i < (long long)d_count + GUARD; i++) {
        const uint16_t e = d_emu[i], r = d_ref[i];
        const long long row = i < 0 ? -1 : i / ldd, col = i < 0 ? -1 : i % ldd;
        const char *why = NULL;
        double tol = 0, diff = 0;
        if (r == POISON) {
            if (e != POISON)
                why = "written, but the CPU leaves it alone (must not be written)";
        } else if (e == POISON) {
            why = "not written";
        } else {
            /* E = sum over k blocks of |sa sb| sum |a b|: the magnitude the
             * float32 roundings are relative to */
            const int g_row = (int)row;
            int grp = 0, arow = g_row, sa_g = 0, sa_row = g_row;
            if (c->form == CONTIG)
                grp = info_ref[g_row];
            if (c->form == MASKED) {
                grp = g_row / c->m;
                sa_g = grp;
                sa_row = g_row % c->m;
            }
            double E = 0;
            /* (seq mode: only where a split-K result differs) */
            const int need_e = !mode_seq || (e != r && c->fast && c->split_k > 1);
            for (int q = 0; need_e && q < kb; q++) {
                double s = 0;
                for (int j = q * 128; j < k && j < q * 128 + 128; j++)
                    s += fabs(e4m3(a[(long long)arow * lda + j]) * e4m3(b[((long long)grp * n + col) * ldb + j]));
                E += fabs((double)sa[((size_t)sa_g * kb + q) * aligned + sa_row] *
                          sb[((size_t)grp * nsb + col / 128) * kb + q]) * s;
            }
            const double ve = bf16_val(e), vr = bf16_val(r);
            diff = fabs(ve - vr);
            const double mag = fmax(fabs(ve), fabs(vr));
            const double ulp = mag > 0 ? ldexp(1.0, ilogb(mag) - 7) : 0;
            if (mode_seq) {
                /* bit for bit, except split-K (gemm.h): the same float32
                 * block values added in another order (per rank, then the
                 * ranks' partials), each order within kb 2^-24 E of the
                 * exact sum, then one bf16 unit: more than the last bf16
                 * place where the sum cancels */
                const int split = c->fast && c->split_k > 1;
                tol = split ? ulp + 2.0 * (kb + c->split_k) * ldexp(1.0, -24) * E : 0;
                if (e != r && !(split && diff <= tol))
                    why = split ? "differs by more than the split-K reassociation bound (EMU_MMA=seq)"
                                : "differs (EMU_MMA=seq must be bit-identical)";
            } else {
                tol = (133.0 + 2.0 * kb) * ldexp(1.0, -24) * E * 1.0001 + ulp;
                if (!(diff <= tol))
                    why = "outside the bound";
                else if (E > 0 && diff / (tol) > worst)
                    worst = diff / tol;
            }
        }
        if (why) {
            if (bad < 8)
                printf("  %s: d[%lld] (row %lld, col %lld) emu 0x%04x (%g) cpu 0x%04x (%g) tol %g: %s\n",
                       c->name, i, row, col, e, bf16_val(e), r, bf16_val(r), tol, why);
            bad++;
        }
    }
    printf("%s %s seed %u: form %d m %d n %d k %d G %d, config %dx%d/%d cluster %u split %d (heuristic "
           "%dx%d/%d), grid %u of %lld tiles, %u threads, smem %zu, pdl %u, %lld switches, %.2f s%s",
           bad ? "FAIL" : "ok  ", c->name, seed, c->form, c->m, n, k, G, bm, bn, emu_host_stats.stages,
           emu_host_stats.last_cluster, emu_host_stats.split_k,
           emu_host_stats.heuristic_block_m, emu_host_stats.heuristic_block_n,
           emu_host_stats.heuristic_stages, emu_host_stats.last_grid, tiles, emu_host_stats.last_block,
           emu_host_stats.last_smem, emu_host_stats.last_pdl, emu_switches() - sw0, secs,
           mode_seq ? ", bitwise" : "");
    if (!mode_seq)
        printf(", worst |diff|/tol %.3f", worst);
    printf("\n");
    if (bad)
        printf("FAIL %s seed %u: %d bad elements\n", c->name, seed, bad);
    free(a);
    free(b);
    free(sa);
    free(sb);
    free(d_emu_all);
    free(d_ref_all);
    free(info);
    free(info_ref);
    return bad != 0;
}

/* The weight-gradient GEMM (float32 d +=, 1x128 scales on both operands):
 * the same call on the CPU and on the emulated device from the same random
 * starting d; bit-identical in EMU_MMA=seq, else within the bound of the
 * bf16 forms on the added term plus one float32 rounding each side; the
 * padding columns and the guards keep their poison. groups > 1: the
 * k-grouped form with k_g = group_spec[g]. */
#define POISON_F32 0x7fbadbadu
static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static int run_wgrad_case(const gemm_case *c, unsigned seed, int mode_seq) {
    rng = 0x7654321ull + seed * 7919ull + (uint64_t)(uintptr_t)c->name[0];
    const int grouped = c->groups > 1, G = c->groups, m = c->m, n = c->n;
    int ks[8] = {c->k}, k_sum = 0, kb_sum = 0;
    for (int g = 0; g < G; g++) {
        if (grouped)
            ks[g] = c->group_spec[g];
        k_sum += ks[g];
        kb_sum += ceil_div(ks[g], 128);
    }
    const int am = ceil_div(m, 4) * 4, an = ceil_div(n, 4) * 4;
    /* strides: dense per group for the k-grouped form; else 16-byte rows + padding */
    const long long lda = grouped ? 0 : (ks[0] + 15) / 16 * 16 + c->lda_pad;
    const long long ldb = grouped ? 0 : (ks[0] + 15) / 16 * 16 + c->ldb_pad;
    const long long ldd = grouped ? n : (n + 3) / 4 * 4 + c->ldd_pad;
    const size_t a_bytes = grouped ? (size_t)m * k_sum : (size_t)m * lda;
    const size_t b_bytes = grouped ? (size_t)n * k_sum : (size_t)n * ldb;
    const size_t sa_count = (size_t)am * kb_sum, sb_count = (size_t)an * kb_sum;
    const size_t d_count = (size_t)G * m * ldd;
    uint8_t *a = xalloc(a_bytes), *b = xalloc(b_bytes);
    float *sa = xalloc(sa_count * 4), *sb = xalloc(sb_count * 4);
    float *d_emu_all = xalloc((d_count + 2 * GUARD) * 4), *d_ref_all = xalloc((d_count + 2 * GUARD) * 4);
    float *d_emu = d_emu_all + GUARD, *d_ref = d_ref_all + GUARD;
    for (size_t i = 0; i < a_bytes; i++)
        a[i] = grouped || (long long)(i % (size_t)lda) < ks[0] ? rand_e4m3() : 0x7F;
    for (size_t i = 0; i < b_bytes; i++)
        b[i] = grouped || (long long)(i % (size_t)ldb) < ks[0] ? rand_e4m3() : 0xFF;
    for (size_t i = 0; i < sa_count; i++)
        sa[i] = (int)(i % (size_t)am) < m ? rand_scale() : nanf_();
    for (size_t i = 0; i < sb_count; i++)
        sb[i] = (int)(i % (size_t)an) < n ? rand_scale() : nanf_();
    float poison;
    memcpy(&poison, &(uint32_t){POISON_F32}, 4);
    for (long long i = -GUARD; i < (long long)d_count + GUARD; i++) {
        const int inside = i >= 0 && i < (long long)d_count && i % ldd < n;
        d_emu[i] = d_ref[i] = inside ? (float)((uniform() - 0.5) * 64.0) : poison;
    }
    float *d0 = malloc(d_count * 4);
    memcpy(d0, d_ref, d_count * 4);

    emu_global_clear();
    emu_global_add(a, a_bytes, "a");
    emu_global_add(b, b_bytes, "b");
    emu_global_add(sa, sa_count * 4, "a_scales");
    emu_global_add(sb, sb_count * 4, "b_scales");
    emu_global_add(d_emu, d_count * 4, "d");
    emu_global_guard_add(a, a_bytes, "a");
    emu_global_guard_add(b, b_bytes, "b");
    emu_global_guard_add(sa, sa_count * 4, "a_scales");
    emu_global_guard_add(sb, sb_count * 4, "b_scales");
    emu_global_guard_add(d_emu_all, (d_count + 2 * GUARD) * 4, "d");

    const dinf_exec gpu = DINF_EXEC_CUDA_INIT(0, NULL);
    emu_force_config.block_m = c->block_m;
    emu_force_config.block_n = c->block_n;
    emu_force_config.stages = c->stages;
    emu_force_config.cluster = 0;
    emu_force_config.split_k = 0;
    /* the 1x128/128x128 rung switches do not concern this GEMM */
    setenv("DINF_FP8_GEMM_KERNEL", "bogus", 1);
    char env[32];
    snprintf(env, sizeof env, "%d", c->num_sms);
    setenv("EMU_NUM_SMS", env, 1);
    const long long launches0 = emu_host_stats.launches, sw0 = emu_switches();
    const clock_t t0 = clock();
    int64_t ks64[8];
    for (int g = 0; g < G; g++)
        ks64[g] = ks[g];
    for (int pass = 0; pass < 2; pass++) {
        const dinf_exec *ex = pass ? &gpu : NULL;
        float *d = pass ? d_emu : d_ref;
        const dinf_status st =
            grouped ? dinf_fp8_k_grouped_wgrad_gemm_nt(G, m, n, ks64, a, sa, b, sb, d, ex)
                    : dinf_fp8_wgrad_gemm_nt(m, n, ks[0], a, lda, sa, b, ldb, sb, d, ldd, ex);
        if (st != DINF_STATUS_OK) {
            printf("FAIL %s seed %u: %s run returned %s: %s\n", c->name, seed,
                   pass ? "emulated" : "CPU", dinf_status_string(st), dinf_last_error());
            return 1;
        }
    }
    unsetenv("DINF_FP8_GEMM_KERNEL");
    const double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    int want_launches = 0;
    for (int g = 0; g < G; g++)
        want_launches += ks[g] > 0;
    if (emu_host_stats.launches != launches0 + want_launches) {
        printf("FAIL %s: expected %d kernel launches, saw %lld\n", c->name, want_launches,
               emu_host_stats.launches - launches0);
        return 1;
    }
    if (emu_host_stats.last_pdl) {
        printf("FAIL %s: the wgrad kernel was launched with PDL\n", c->name);
        return 1;
    }
    int bad = 0;
    double worst = 0;
    for (long long i = -GUARD; i < (long long)d_count + GUARD; i++) {
        const float e = d_emu[i], r = d_ref[i];
        const char *why = NULL;
        double tol = 0;
        const long long g = i < 0 ? -1 : i / ((long long)m * ldd);
        const long long row = i < 0 ? -1 : (i / ldd) % m, col = i < 0 ? -1 : i % ldd;
        if (f32_bits(r) == POISON_F32) {
            if (f32_bits(e) != POISON_F32)
                why = "written, but the CPU leaves it alone (must not be written)";
        } else if (mode_seq) {
            if (f32_bits(e) != f32_bits(r))
                why = "differs (EMU_MMA=seq must be bit-identical)";
        } else {
            /* E over the group's k blocks */
            long long k_off = 0, kb_off = 0;
            for (long long h = 0; h < g; h++)
                k_off += ks[h], kb_off += ceil_div(ks[h], 128);
            const int kg = ks[g], kbg = ceil_div(kg, 128);
            const long long la = grouped ? kg : lda, lb = grouped ? kg : ldb;
            const uint8_t *ag = a + (size_t)m * k_off, *bg = b + (size_t)n * k_off;
            double E = 0;
            for (int q = 0; q < kbg; q++) {
                double s = 0;
                for (int j = q * 128; j < kg && j < q * 128 + 128; j++)
                    s += fabs(e4m3(ag[row * la + j]) * e4m3(bg[col * lb + j]));
                E += fabs((double)sa[(kb_off + q) * am + row] * sb[(kb_off + q) * an + col]) * s;
            }
            const double mag = fmax(fabs((double)e), fabs((double)r));
            const double ulp = mag > 0 ? ldexp(1.0, ilogb(mag) - 23) : 0;
            tol = (133.0 + 2.0 * kbg) * ldexp(1.0, -24) * E * 1.0001 + 2.0 * ulp;
            const double diff = fabs((double)e - (double)r);
            if (!(diff <= tol))
                why = "outside the bound";
            else if (tol > 0 && diff / tol > worst)
                worst = diff / tol;
            if (kg == 0 && f32_bits(e) != f32_bits(d0[i]))
                why = "changed by a group with k_g = 0";
        }
        if (why) {
            if (bad < 8)
                printf("  %s: d[%lld] (group %lld row %lld col %lld) emu %a cpu %a tol %g: %s\n",
                       c->name, i, g, row, col, e, r, tol, why);
            bad++;
        }
    }
    printf("%s %s seed %u: wgrad m %d n %d k %d G %d, config %dx%d/%d (heuristic %dx%d/%d), grid %u, "
           "%u threads, smem %zu, pdl %u, %lld launches, %lld switches, %.2f s%s",
           bad ? "FAIL" : "ok  ", c->name, seed, m, n, grouped ? k_sum : ks[0], G,
           emu_host_stats.block_m, emu_host_stats.block_n, emu_host_stats.stages,
           emu_host_stats.heuristic_block_m, emu_host_stats.heuristic_block_n,
           emu_host_stats.heuristic_stages, emu_host_stats.last_grid, emu_host_stats.last_block,
           emu_host_stats.last_smem, emu_host_stats.last_pdl,
           emu_host_stats.launches - launches0, emu_switches() - sw0, secs,
           mode_seq ? ", bitwise" : "");
    if (!mode_seq)
        printf(", worst |diff|/tol %.3f", worst);
    printf("\n");
    if (bad)
        printf("FAIL %s seed %u: %d bad elements\n", c->name, seed, bad);
    free(a);
    free(b);
    free(sa);
    free(sb);
    free(d_emu_all);
    free(d_ref_all);
    free(d0);
    return bad != 0;
}

/* Whether this library has the weight-gradient GEMM (gemm.h, fp8_gemm_1d1d.cuh). */
static int library_has_wgrad(void) {
    for (int i = 0; i < emu_kernel_count(); i++) {
        int np;
        long long pr[8];
        if (strcmp(emu_kernel_info(i, &np, pr), "fp8_gemm_1d1d") == 0)
            return 1;
    }
    return 0;
}

/* A random case on compiled instance `inst` (fills *c; name in buf). */
static void random_case(int index, gemm_case *c, char *buf, size_t buf_bytes) {
    int np;
    long long pr[8];
    const char *name;
    do /* the 1x128/128x128 kernels (the wgrad kernel has its own cases) */
        name = emu_kernel_info((int)(next_u64() % (uint64_t)emu_kernel_count()), &np, pr);
    while (strcmp(name, "fp8_gemm_1d1d") == 0);
    memset(c, 0, sizeof *c);
    c->fast = strcmp(name, "fp8_gemm_fast") == 0;
    c->form = (int)pr[0];
    c->block_m = (int)pr[1];
    c->block_n = (int)pr[2];
    c->stages = (int)pr[3];
    c->cluster = c->fast ? (int)pr[4] : 1;
    c->split_k = c->fast ? (int)pr[5] : 1;
    c->groups = c->form == NORMAL ? 1 : 1 + (int)(next_u64() % 3);
    c->n = 1 + (int)(next_u64() % 300);
    c->k = c->split_k > 1 ? 129 + (int)(next_u64() % 900) : 1 + (int)(next_u64() % 700);
    c->lda_pad = 16 * (int)(next_u64() % 3);
    c->ldb_pad = 16 * (int)(next_u64() % 3);
    c->ldd_pad = 8 * (int)(next_u64() % 3);
    /* clusters of c CTAs: room for 1 to 3 of them (a device with fewer SMs
     * than a forced cluster holds none; the heuristic never picks that) */
    c->num_sms = c->cluster > 1 ? c->cluster * (1 + (int)(next_u64() % 3)) : 1 + (int)(next_u64() % 6);
    if (c->form == NORMAL)
        c->m = 1 + (int)(next_u64() % 300);
    else if (c->form == CONTIG) {
        const int blocks = 1 + (int)(next_u64() % 4);
        c->m = 128 * blocks;
        for (int b = 0; b < blocks; b++) {
            const int r = (int)(next_u64() % 8);
            c->group_spec[b] = r == 0 ? -1 : r == 1 ? c->groups : (int)(next_u64() % (uint64_t)c->groups);
        }
    } else {
        c->m = 1 + (int)(next_u64() % 200);
        c->expected_m = 1 + (int)(next_u64() % (uint64_t)c->m);
        for (int g = 0; g < c->groups; g++) {
            const int r = (int)(next_u64() % 6);
            c->group_spec[g] = r == 0 ? 0 : r == 1 ? c->m : r == 2 ? c->m + 1 + (int)(next_u64() % 5)
                               : r == 3 ? -1 : 1 + (int)(next_u64() % (uint64_t)c->m);
        }
    }
    snprintf(buf, buf_bytes, "random_%d[%s %d,%d,%d,%d,%d,%d spec %d,%d,%d,%d pads %d,%d,%d sms %d]", index,
             name, c->form, c->block_m, c->block_n, c->stages, c->cluster, c->split_k, c->group_spec[0],
             c->group_spec[1], c->group_spec[2], c->group_spec[3], c->lda_pad, c->ldb_pad, c->ldd_pad,
             c->num_sms);
    c->name = buf;
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : "";
    const char *mm = getenv("EMU_MMA");
    const int mode_seq = mm && !strcmp(mm, "seq");
    if (getenv("EMU_RANDOM")) {
        const int count = atoi(getenv("EMU_RANDOM"));
        rng = getenv("EMU_RANDOM_SEED") ? strtoull(getenv("EMU_RANDOM_SEED"), NULL, 0) : 99;
        /* EMU_RANDOM_ONLY=i: run case i alone (the same case as in the full run) */
        const int only = getenv("EMU_RANDOM_ONLY") ? atoi(getenv("EMU_RANDOM_ONLY")) : -1;
        int failed = 0;
        for (int i = 0; i < count; i++) {
            static char name[256];
            gemm_case c;
            const uint64_t keep = rng;
            random_case(i, &c, name, sizeof name);
            const uint64_t after = rng;
            if (only < 0 || i == only)
                failed += run_case(&c, (unsigned)i, mode_seq);
            rng = after ^ keep; /* the next case does not depend on this one's data */
        }
        printf("%s: %d of %d random runs failed (EMU_SKEW=%d, EMU_MMA=%s)\n", failed ? "FAILED" : "PASSED",
               failed, count, emu_skew(), mode_seq ? "seq" : "double");
        return failed ? 1 : 0;
    }
    const int seeds = getenv("EMU_SEEDS") ? atoi(getenv("EMU_SEEDS")) : 1;
    int failed = 0, ran = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (!strstr(cases[i].name, filter))
            continue;
        if (cases[i].fast && !emu_has_fast_rung()) {
            printf("skip %s: this library has no fast rung (fp8_gemm_fast.cuh)\n", cases[i].name);
            continue;
        }
        if (cases[i].form == WGRAD && !library_has_wgrad()) {
            printf("skip %s: this library has no wgrad kernel (fp8_gemm_1d1d.cuh)\n", cases[i].name);
            continue;
        }
        for (int s = 0; s < seeds; s++) {
            failed += cases[i].form == WGRAD ? run_wgrad_case(&cases[i], (unsigned)s, mode_seq)
                                             : run_case(&cases[i], (unsigned)s, mode_seq);
            ran++;
        }
    }
    printf("%s: %d of %d runs failed (EMU_SKEW=%d, EMU_MMA=%s)\n", failed ? "FAILED" : "PASSED", failed,
           ran, emu_skew(), mode_seq ? "seq" : "double");
    if (!ran) {
        printf("no case matches '%s'\n", filter);
        return 2;
    }
    return failed ? 1 : 0;
}
