/*
 * FP8 GEMMs on the CPU (gemm.h): against an independent double-precision
 * reference of the block math, against a float32 replay of the documented
 * summation order (bit-exact), against the unquantized product (calc_diff),
 * thread-count independence, every vector instruction set (DINF_CPU_ISA),
 * the grouped layouts, and every rejected input.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <deepinfra.h>

#include "../core/cpu_isa_test.h"
#include "core/internal.h"
#include "core/numeric_hd.h"
#include "gemm/gemm_cpu.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POISON 0x7FC1u /* a bf16 NaN pattern no computation produces */

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* A usable CUDA device (then DINF_EXEC_CUDA runs kernels: never hand it host buffers). */
static int gpu_usable(void) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    return dinf_device_query(0, &info) == DINF_STATUS_OK && info.usable;
}

/* ---------------------------------------------------------------- random -- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1p-53; }
static double rng_normal(uint64_t *s) {
    double u = rng_uniform(s), v = rng_uniform(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}
/* A finite e4m3 code (never 0x7F / 0xFF). */
static uint8_t rng_e4m3(uint64_t *s) {
    uint8_t c;
    do
        c = (uint8_t)rng_next(s);
    while ((c & 0x7f) == 0x7f);
    return c;
}

/* --------------------------------------------------------------- problem -- */

/* One normal GEMM's operands, strided. Scales: A M-major [kb][aligned_m]. */
typedef struct problem {
    int64_t m, n, k, lda, ldb, ldd, kb, aligned_m;
    uint8_t *a, *b;
    float *sa, *sb;
    uint16_t *d;
} problem;

static void problem_alloc(problem *p, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                          int64_t ldd) {
    *p = (problem){.m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldd = ldd};
    p->kb = cdiv(k, 128);
    p->aligned_m = cdiv(m, 4) * 4;
    p->a = calloc((size_t)(m * lda + 1), 1);
    p->b = calloc((size_t)(n * ldb + 1), 1);
    p->sa = calloc((size_t)(p->kb * p->aligned_m + 1), sizeof(float));
    p->sb = calloc((size_t)(cdiv(n, 128) * p->kb + 1), sizeof(float));
    p->d = malloc((size_t)(m * ldd + 1) * 2);
    for (int64_t i = 0; i < m * ldd + 1; i++)
        p->d[i] = POISON;
}

static void problem_free(problem *p) {
    free(p->a);
    free(p->b);
    free(p->sa);
    free(p->sb);
    free(p->d);
}

/* Random codes and scales in [2^-8, 2^-4) (any finite values serve the
 * exactness tests; these keep products in bf16's comfortable range). */
static void problem_random(problem *p, uint64_t seed) {
    uint64_t s = seed;
    for (int64_t i = 0; i < p->m; i++)
        for (int64_t k = 0; k < p->k; k++)
            p->a[i * p->lda + k] = rng_e4m3(&s);
    for (int64_t j = 0; j < p->n; j++)
        for (int64_t k = 0; k < p->k; k++)
            p->b[j * p->ldb + k] = rng_e4m3(&s);
    for (int64_t kb = 0; kb < p->kb; kb++)
        for (int64_t i = 0; i < p->m; i++)
            p->sa[kb * p->aligned_m + i] = (float)ldexp(1.0 + rng_uniform(&s), -8 - (int)(rng_next(&s) % 4));
    for (int64_t i = 0; i < cdiv(p->n, 128) * p->kb; i++)
        p->sb[i] = (float)ldexp(1.0 + rng_uniform(&s), -8 - (int)(rng_next(&s) % 4));
}

static dinf_status problem_run(problem *p, const dinf_exec *exec) {
    return dinf_fp8_gemm_nt(p->m, p->n, p->k, p->a, p->lda, p->sa, p->b, p->ldb, p->sb, p->d,
                            p->ldd, exec);
}

/* -------------------------------------------------------------- oracles -- */

/*
 * Independent reference of one element in double: sum over blocks of
 * sa * sb * sum(a * b); also the sum of the absolute values of the terms
 * (the scale of float32 rounding errors).
 */
static double ref_element(const uint8_t *a, const float *sa, int64_t sa_stride,
                          const uint8_t *b, const float *sb, int64_t k, int64_t j,
                          double *abs_sum) {
    const int64_t kb_count = cdiv(k, 128);
    double sum = 0, mag = 0;
    for (int64_t kb = 0; kb < kb_count; kb++) {
        double part = 0, part_abs = 0;
        for (int64_t kk = kb * 128; kk < k && kk < kb * 128 + 128; kk++) {
            const double prod = (double)dinf__f32_from_e4m3(a[kk]) * dinf__f32_from_e4m3(b[kk]);
            part += prod;
            part_abs += fabs(prod);
        }
        const double scale = (double)sa[kb * sa_stride] * (double)sb[(j / 128) * kb_count + kb];
        sum += scale * part;
        mag += fabs(scale) * part_abs;
    }
    *abs_sum = mag;
    return sum;
}

/* The documented float32 order, replayed literally (gemm.c's top comment). */
static float replay_element(const uint8_t *a, const float *sa, int64_t sa_stride,
                            const uint8_t *b, const float *sb, int64_t k, int64_t j) {
    const int64_t kb_count = cdiv(k, 128);
    float total = 0.0f;
    for (int64_t kb = 0; kb < kb_count; kb++) {
        float partial = 0.0f;
        for (int64_t kk = kb * 128; kk < k && kk < kb * 128 + 128; kk++) {
            const float prod = dinf__f32_from_e4m3(a[kk]) * dinf__f32_from_e4m3(b[kk]);
            partial += prod;
        }
        const float scale = sa[kb * sa_stride] * sb[(j / 128) * kb_count + kb];
        const float scaled = scale * partial;
        total += scaled;
    }
    return total;
}

/*
 * Check rows [0, rows) of one GEMM (a: [rows][k], scales with stride, b for
 * the group) against both oracles. d must equal the replay bit for bit, and
 * be the bf16 rounding of a value within 1e-5 x the row's magnitude of the
 * double reference. Columns n..ldd of each row must still hold POISON.
 */
static void check_rows(const char *what, int64_t rows, int64_t n, int64_t k, const uint8_t *a,
                       int64_t lda, const float *sa, int64_t sa_stride, const uint8_t *b,
                       int64_t ldb, const float *sb, const uint16_t *d, int64_t ldd) {
    double *ref = malloc((size_t)(n > 0 ? n : 1) * sizeof *ref);
    for (int64_t i = 0; i < rows; i++) {
        double row_mag = 0;
        for (int64_t j = 0; j < n; j++) {
            double mag;
            ref[j] = ref_element(a + i * lda, sa + i, sa_stride, b + j * ldb, sb, k, j, &mag);
            if (mag > row_mag)
                row_mag = mag;
        }
        const double tol = 1e-5 * row_mag;
        for (int64_t j = 0; j < n; j++) {
            const uint16_t got = d[i * ldd + j];
            const float replay = replay_element(a + i * lda, sa + i, sa_stride, b + j * ldb, sb, k, j);
            cr_assert_eq(got, dinf__bf16_from_f32(replay),
                         "%s: d[%lld][%lld]=0x%04x but the documented float32 order gives 0x%04x "
                         "(%.9g)",
                         what, (long long)i, (long long)j, got, dinf__bf16_from_f32(replay), replay);
            const float lo = dinf__f32_from_bf16(dinf__bf16_from_f32((float)(ref[j] - tol)));
            const float hi = dinf__f32_from_bf16(dinf__bf16_from_f32((float)(ref[j] + tol)));
            const float g = dinf__f32_from_bf16(got);
            cr_assert(g >= lo && g <= hi,
                      "%s: d[%lld][%lld]=%.9g, double reference %.12g (+-%.3g): bf16 range "
                      "[%.9g, %.9g]",
                      what, (long long)i, (long long)j, g, ref[j], tol, lo, hi);
        }
        for (int64_t j = n; j < ldd; j++)
            cr_assert_eq(d[i * ldd + j], POISON, "%s: row padding d[%lld][%lld] was written",
                         what, (long long)i, (long long)j);
    }
    free(ref);
}

static void check_problem(const char *what, const problem *p) {
    check_rows(what, p->m, p->n, p->k, p->a, p->lda, p->sa, p->aligned_m, p->b, p->ldb, p->sb,
               p->d, p->ldd);
}

/* ------------------------------------------------- quantized random data -- */

/* Section 5 of the reference: amax over a block (>= 1e-4), scale = amax/448,
 * q = e4m3(clamp(x * 448/amax)). block_rows 1 (per token) or 128. Scales
 * row-major [ceil(m/block_rows)][ceil(k/128)]. */
static void quantize(const float *x, int64_t m, int64_t k, int block_rows, uint8_t *q,
                     float *scales) {
    const int64_t kb = cdiv(k, 128);
    for (int64_t bi = 0; bi < cdiv(m, block_rows); bi++)
        for (int64_t bj = 0; bj < kb; bj++) {
            float amax = 0;
            for (int64_t i = bi * block_rows; i < m && i < (bi + 1) * block_rows; i++)
                for (int64_t j = bj * 128; j < k && j < bj * 128 + 128; j++)
                    amax = fmaxf(amax, fabsf(x[i * k + j]));
            amax = fmaxf(amax, 1e-4f);
            scales[bi * kb + bj] = amax / 448.0f;
            for (int64_t i = bi * block_rows; i < m && i < (bi + 1) * block_rows; i++)
                for (int64_t j = bj * 128; j < k && j < bj * 128 + 128; j++)
                    q[i * k + j] = dinf__e4m3_from_f32(
                        fminf(fmaxf(x[i * k + j] * (448.0f / amax), -448.0f), 448.0f));
        }
}

static double calc_diff(const double *x, const double *y, int64_t count) {
    double xy = 0, sq = 0;
    for (int64_t i = 0; i < count; i++) {
        xy += x[i] * y[i];
        sq += x[i] * x[i] + y[i] * y[i];
    }
    return sq == 0 ? 0 : 1 - 2 * xy / sq;
}

/* x [rows][k] random normal (seeded), y = x @ w^T in double for the diff. */
static float *randn(int64_t count, uint64_t seed) {
    float *x = malloc((size_t)count * sizeof *x);
    for (int64_t i = 0; i < count; i++)
        x[i] = (float)rng_normal(&seed);
    return x;
}

static double *matmul_nt(const float *x, const float *w, int64_t m, int64_t n, int64_t k) {
    double *y = malloc((size_t)(m * n) * sizeof *y);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t kk = 0; kk < k; kk++)
                s += (double)x[i * k + kk] * w[j * k + kk];
            y[i * n + j] = s;
        }
    return y;
}

/* ----------------------------------------------------------------- tests -- */

Test(gemm_nt, matches_both_oracles_with_partial_blocks_and_strides) {
    const int64_t shapes[][6] = {
        /* m, n, k, lda, ldb, ldd */
        {1, 16, 128, 128, 128, 16},  {4, 1, 1, 1, 1, 1},          {7, 200, 300, 313, 305, 207},
        {130, 260, 1000, 1000, 1024, 263}, {5, 129, 129, 130, 140, 129}, {64, 128, 256, 300, 256, 130},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int64_t *sh = shapes[s];
        problem p;
        problem_alloc(&p, sh[0], sh[1], sh[2], sh[3], sh[4], sh[5]);
        problem_random(&p, 1000 + s);
        char what[128];
        snprintf(what, sizeof what, "m=%lld n=%lld k=%lld lda=%lld ldb=%lld ldd=%lld seed=%zu",
                 (long long)sh[0], (long long)sh[1], (long long)sh[2], (long long)sh[3],
                 (long long)sh[4], (long long)sh[5], 1000 + s);
        cr_assert_eq(problem_run(&p, NULL), DINF_STATUS_OK, "%s: %s", what, dinf_last_error());
        check_problem(what, &p);
        problem_free(&p);
    }
}

Test(gemm_nt, thread_counts_give_identical_bits) {
    problem p;
    problem_alloc(&p, 300, 700, 900, 900, 901, 700);
    problem_random(&p, 7);
    const size_t bytes = (size_t)(p.m * p.ldd) * 2;
    uint16_t *first = malloc(bytes);
    const int threads[] = {1, 2, 5, 0};
    for (int t = 0; t < 4; t++) {
        dinf_exec exec = DINF_EXEC_CPU_INIT;
        exec.num_threads = threads[t];
        cr_assert_eq(problem_run(&p, &exec), DINF_STATUS_OK, "%s", dinf_last_error());
        if (t == 0)
            memcpy(first, p.d, bytes);
        else
            cr_assert(memcmp(first, p.d, bytes) == 0, "threads=%d differs from threads=1",
                      threads[t]);
    }
    free(first);
    problem_free(&p);
}

/* the bits of *p, read as stored (a float value could quiet a signalling NaN) */
static uint32_t f32_bits(const float *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    return u;
}

/* the variants of one set, checked to be that set's */
static const dinf__gemm_cpu_kernels *kernels_of(int isa) {
    const dinf__gemm_cpu_kernels *k = dinf__gemm_cpu_kernels_for(isa);
    cr_assert_not_null(k);
    cr_assert_str_eq(k->isa, dinf__isa_name(isa));
    return k;
}

/* Random codes with every code present (rows 0 and 1 hold 0..255 in order
 * where kk allows), in a buffer that ends at the last code read, so that
 * SAN=1 catches a read past it. */
static uint8_t *random_codes(int64_t rows, int64_t ld, int64_t kk, uint64_t seed) {
    const size_t bytes = (size_t)((rows - 1) * ld + kk);
    uint8_t *p = malloc(bytes);
    cr_assert_not_null(p);
    uint64_t s = seed;
    for (size_t i = 0; i < bytes; i++)
        p[i] = (uint8_t)rng_next(&s);
    for (int64_t i = 0; i < 256 && i / kk < rows && i / kk < 2; i++)
        p[(i / kk) * ld + i % kk] = (uint8_t)i;
    return p;
}

#define POISON_F32 0x7fbadbadu /* a float32 NaN no decode produces */

/* The k-block kernel of every set this CPU has against a scalar replay of
 * gemm_cpu.h's order, float32 bit for bit (the scale step included, row and
 * column scales, which the bf16 outputs would hide), and nothing written
 * outside rows_pad x cols_pad. */
Test(gemm_cpu_isa, every_cpu_isa_kernel_follows_the_documented_order) {
    const int top = widest_cpu_isa();
    enum { BK = DINF__GEMM_CPU_BLOCK_K, TN = DINF__GEMM_CPU_TILE_N };
    const int64_t kk = 100, rows_pad = 24, cols_pad = 96;
    uint64_t s = 31;
    float *a = malloc(sizeof(float) * 128 * BK), *bt = malloc(sizeof(float) * BK * TN);
    float *t0 = malloc(sizeof(float) * 128 * TN), *t = malloc(sizeof(float) * 128 * TN);
    float scale[128], col_scale[TN];
    for (int i = 0; i < 128 * BK; i++)
        a[i] = (float)rng_normal(&s);
    for (int i = 0; i < BK * TN; i++)
        bt[i] = (float)rng_normal(&s);
    for (int i = 0; i < 128 * TN; i++)
        t0[i] = (float)rng_normal(&s);
    for (int i = 0; i < 128; i++)
        scale[i] = (float)rng_normal(&s) * 0.37f;
    for (int i = 0; i < TN; i++) /* the wgrad's per-column scales (1.0f for the 1D2D forms) */
        col_scale[i] = (float)rng_normal(&s) * 0.61f;
    for (int isa = DINF__ISA_BASE; isa <= top; isa++) {
        memcpy(t, t0, sizeof(float) * 128 * TN);
        for (int64_t r = rows_pad; r < 128; r++)
            for (int j = 0; j < TN; j++)
                t[r * TN + j] = NAN;
        for (int64_t r = 0; r < rows_pad; r++)
            for (int64_t j = cols_pad; j < TN; j++)
                t[r * TN + j] = NAN;
        kernels_of(isa)->tile_block(a, bt, kk, rows_pad, cols_pad, scale, col_scale, t);
        for (int64_t r = 0; r < 128; r++)
            for (int64_t j = 0; j < TN; j++) {
                const float got = t[r * TN + j];
                if (r >= rows_pad || j >= cols_pad) {
                    cr_assert(isnan(got), "%s wrote [%lld][%lld]", dinf__isa_name(isa), (long long)r,
                              (long long)j);
                    continue;
                }
                float c = 0.0f;
                for (int64_t k = 0; k < kk; k++)
                    c += a[r * BK + k] * bt[k * TN + j];
                volatile float both = scale[r] * col_scale[j]; /* each rounded on its own */
                volatile float prod = both * c;                 /* no FMA */
                const float want = t0[r * TN + j] + prod;
                cr_assert(memcmp(&got, &want, 4) == 0, "%s: total[%lld][%lld] = %a, want %a",
                          dinf__isa_name(isa), (long long)r, (long long)j, got, want);
            }
    }
    free(a);
    free(bt);
    free(t0);
    free(t);
}

/* load_a of every set this CPU has: each code decoded as
 * dinf__f32_from_e4m3, bit for bit (NaNs, signed zeros and subnormals
 * included), over vector bodies and scalar tails, and nothing written
 * outside rows x kk. */
Test(gemm_cpu_isa, every_cpu_isa_load_a_decodes_exactly) {
    const int top = widest_cpu_isa();
    enum { BK = DINF__GEMM_CPU_BLOCK_K };
    const int64_t kks[] = {128, 100, 13, 1}, rows_list[] = {128, 9, 2};
    float *dst = malloc(sizeof(float) * 128 * BK);
    cr_assert_not_null(dst);
    for (int isa = DINF__ISA_BASE; isa <= top; isa++)
        for (int ki = 0; ki < 4; ki++)
            for (int ri = 0; ri < 3; ri++) {
                const int64_t kk = kks[ki], rows = rows_list[ri], lda = kk + 173;
                uint8_t *src = random_codes(rows, lda, kk, 7 + (uint64_t)(ki * 3 + ri));
                for (int i = 0; i < 128 * BK; i++)
                    memcpy(&dst[i], &(uint32_t){POISON_F32}, 4);
                kernels_of(isa)->load_a(src, lda, rows, kk, dst);
                for (int64_t r = 0; r < 128; r++)
                    for (int64_t k = 0; k < BK; k++) {
                        const uint32_t got = f32_bits(&dst[r * BK + k]);
                        uint32_t want = POISON_F32;
                        if (r < rows && k < kk) {
                            const float dec = dinf__f32_from_e4m3(src[r * lda + k]);
                            want = f32_bits(&dec);
                        }
                        cr_assert_eq(got, want,
                                     "%s, kk=%lld rows=%lld: dst[%lld][%lld] = 0x%08x, want 0x%08x",
                                     dinf__isa_name(isa), (long long)kk, (long long)rows,
                                     (long long)r, (long long)k, got, want);
                    }
                free(src);
            }
    free(dst);
}

/* load_bt of every set this CPU has: bt[k][c] is column c's code k decoded
 * bit for bit, +0.0f in the padding columns up to cols_pad, over full and
 * partial 8 x 8 squares (cols and kk not multiples of 8), and nothing
 * written for k >= kk or c >= cols_pad. */
Test(gemm_cpu_isa, every_cpu_isa_load_bt_transposes_exactly) {
    const int top = widest_cpu_isa();
    enum { BK = DINF__GEMM_CPU_BLOCK_K, TN = DINF__GEMM_CPU_TILE_N };
    const int64_t kks[] = {128, 100, 13, 1};
    const int64_t cols_list[][2] = {{128, 128}, {97, 128}, {5, 32}, {16, 16}, {3, 8}};
    float *bt = malloc(sizeof(float) * BK * TN);
    cr_assert_not_null(bt);
    for (int isa = DINF__ISA_BASE; isa <= top; isa++)
        for (int ki = 0; ki < 4; ki++)
            for (int ci = 0; ci < 5; ci++) {
                const int64_t kk = kks[ki], cols = cols_list[ci][0], cols_pad = cols_list[ci][1];
                const int64_t ldb = kk + 301;
                uint8_t *src = random_codes(cols, ldb, kk, 91 + (uint64_t)(ki * 5 + ci));
                for (int i = 0; i < BK * TN; i++)
                    memcpy(&bt[i], &(uint32_t){POISON_F32}, 4);
                kernels_of(isa)->load_bt(src, ldb, cols, cols_pad, kk, bt);
                for (int64_t k = 0; k < BK; k++)
                    for (int64_t c = 0; c < TN; c++) {
                        const uint32_t got = f32_bits(&bt[k * TN + c]);
                        uint32_t want = POISON_F32;
                        if (k < kk && c < cols) {
                            const float dec = dinf__f32_from_e4m3(src[c * ldb + k]);
                            want = f32_bits(&dec);
                        } else if (k < kk && c < cols_pad) {
                            want = 0;
                        }
                        cr_assert_eq(got, want,
                                     "%s, kk=%lld cols=%lld/%lld: bt[%lld][%lld] = 0x%08x, "
                                     "want 0x%08x",
                                     dinf__isa_name(isa), (long long)kk, (long long)cols,
                                     (long long)cols_pad, (long long)k, (long long)c, got, want);
                    }
                free(src);
            }
    free(bt);
}

/* The k-block kernel in each vector set (a set above this CPU's gives its
 * widest): the documented order's bits in every one, tails of the 8-row and
 * 32-column register padding included; other DINF_CPU_ISA values fail. */
Test(gemm_cpu_isa, every_cpu_isa_gives_the_documented_bits) {
    problem p;
    problem_alloc(&p, 131, 203, 400, 400, 401, 205);
    problem_random(&p, 17);
    const char *const sets[] = {"base", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        setenv("DINF_CPU_ISA", sets[i], 1);
        for (int64_t j = 0; j < p.m * p.ldd; j++)
            p.d[j] = POISON;
        cr_assert_eq(problem_run(&p, NULL), DINF_STATUS_OK, "%s: %s", sets[i], dinf_last_error());
        check_problem(sets[i], &p);
    }
    setenv("DINF_CPU_ISA", "avx-512", 1);
    cr_assert_eq(problem_run(&p, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "dinf_fp8_gemm_nt: DINF_CPU_ISA=avx-512: must be base, avx2 or avx512"),
              "%s", dinf_last_error());
    unsetenv("DINF_CPU_ISA");
    problem_free(&p);
}

Test(gemm_nt, calc_diff_against_the_unquantized_product) {
    const int64_t shapes[][3] = {{128, 256, 1024}, {37, 200, 700}};
    for (int s = 0; s < 2; s++) {
        const int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2], kb = cdiv(k, 128);
        float *x = randn(m * k, 11 + s), *w = randn(n * k, 21 + s);
        problem p;
        problem_alloc(&p, m, n, k, k, k, n);
        float *sa_rows = malloc((size_t)(m * kb) * sizeof(float));
        quantize(x, m, k, 1, p.a, sa_rows);
        quantize(w, n, k, 128, p.b, p.sb);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < kb; j++)
                p.sa[j * p.aligned_m + i] = sa_rows[i * kb + j];
        cr_assert_eq(problem_run(&p, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
        double *want = matmul_nt(x, w, m, n, k), *got = malloc((size_t)(m * n) * sizeof *got);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                got[i * n + j] = dinf__f32_from_bf16(p.d[i * n + j]);
        const double diff = calc_diff(got, want, m * n);
        cr_assert(diff < 1e-3, "m=%lld n=%lld k=%lld: calc_diff=%g", (long long)m, (long long)n,
                  (long long)k, diff);

        /* The library's own quantizer and scale transpose give the same inputs. */
        uint8_t *qa = malloc((size_t)(m * k)), *qb = malloc((size_t)(n * k));
        float *lsa = malloc((size_t)(m * kb) * sizeof(float));
        float *lsb = malloc((size_t)(cdiv(n, 128) * kb) * sizeof(float));
        float *lsa_t = malloc((size_t)(p.aligned_m * kb) * sizeof(float));
        int64_t aligned = 0;
        cr_assert_eq(dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, m, k, k, 1, qa, k, lsa, NULL), 0,
                     "%s", dinf_last_error());
        cr_assert_eq(dinf_fp8_quantize(w, DINF_DTYPE_FLOAT32, n, k, k, 128, qb, k, lsb, NULL), 0,
                     "%s", dinf_last_error());
        cr_assert_eq(dinf_fp8_scale_layout_mn_major(lsa, m, kb, lsa_t, &aligned, NULL), 0, "%s",
                     dinf_last_error());
        cr_assert_eq(aligned, p.aligned_m);
        cr_assert(memcmp(qa, p.a, (size_t)(m * k)) == 0 && memcmp(qb, p.b, (size_t)(n * k)) == 0,
                  "dinf_fp8_quantize differs from the test's section-5 quantizer");
        cr_assert(memcmp(lsa_t, p.sa, (size_t)(kb * m) * sizeof(float)) == 0 || m % 4 != 0,
                  "scale layout differs");
        free(qa), free(qb), free(lsa), free(lsb), free(lsa_t);
        free(x), free(w), free(sa_rows), free(want), free(got);
        problem_free(&p);
    }
}

Test(gemm_nt, empty_products) {
    /* k == 0 writes zeros (NULL a/b/scales allowed: they hold nothing). */
    uint16_t d[3 * 5];
    for (int i = 0; i < 15; i++)
        d[i] = POISON;
    cr_assert_eq(dinf_fp8_gemm_nt(3, 4, 0, NULL, 0, NULL, NULL, 0, NULL, d, 5, NULL), 0, "%s",
                 dinf_last_error());
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++)
            cr_assert_eq(d[i * 5 + j], j < 4 ? 0 : POISON, "d[%d][%d]=0x%04x", i, j, d[i * 5 + j]);
    /* m == 0 / n == 0 write nothing. */
    cr_assert_eq(dinf_fp8_gemm_nt(0, 4, 256, NULL, 256, NULL, NULL, 256, NULL, NULL, 4, NULL), 0);
    cr_assert_eq(dinf_fp8_gemm_nt(3, 0, 256, NULL, 256, NULL, NULL, 256, NULL, d, 0, NULL), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(d[i * 5 + 4], POISON);
    int32_t idx = 0;
    cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_contiguous(0, 4, 128, 1, NULL, 128, NULL, NULL, 128,
                                                       NULL, NULL, 4, &idx, NULL), 0);
    int32_t mm[2] = {0, 0};
    cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_masked(2, 0, 4, 128, NULL, 128, NULL, NULL, 128, NULL,
                                                   NULL, 4, mm, 0, NULL), 0);
}

Test(gemm_grouped, contiguous_matches_reference_and_skips_minus_one_blocks) {
    const int64_t groups = 3, n = 300, k = 400, lda = 410, ldb = 400, ldd = 305, kb = cdiv(k, 128);
    const int32_t block_group[] = {0, -1, 2, 2, 1, -1};
    const int64_t m_sum = 128 * 6;
    uint64_t s = 5;
    uint8_t *a = malloc((size_t)(m_sum * lda)), *b = malloc((size_t)(groups * n * ldb));
    float *sa = malloc((size_t)(kb * m_sum) * sizeof(float));
    float *sb = malloc((size_t)(groups * cdiv(n, 128) * kb) * sizeof(float));
    uint16_t *d = malloc((size_t)(m_sum * ldd) * 2);
    int32_t *m_indices = malloc((size_t)m_sum * sizeof(int32_t));
    for (int64_t i = 0; i < m_sum * lda; i++)
        a[i] = rng_e4m3(&s);
    for (int64_t i = 0; i < groups * n * ldb; i++)
        b[i] = rng_e4m3(&s);
    for (int64_t i = 0; i < kb * m_sum; i++)
        sa[i] = (float)(0.01 + rng_uniform(&s) * 0.02);
    for (int64_t i = 0; i < groups * cdiv(n, 128) * kb; i++)
        sb[i] = (float)(0.01 + rng_uniform(&s) * 0.02);
    for (int64_t i = 0; i < m_sum * ldd; i++)
        d[i] = POISON;
    for (int64_t i = 0; i < m_sum; i++)
        m_indices[i] = block_group[i / 128];
    dinf_exec exec = DINF_EXEC_CPU_INIT;
    exec.num_threads = 3;
    cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_contiguous(m_sum, n, k, groups, a, lda, sa, b, ldb, sb,
                                                       d, ldd, m_indices, &exec),
                 0, "%s", dinf_last_error());
    for (int blk = 0; blk < 6; blk++) {
        const int64_t m0 = blk * 128, g = block_group[blk];
        char what[64];
        snprintf(what, sizeof what, "contiguous block %d (group %lld)", blk, (long long)g);
        if (g < 0) {
            for (int64_t i = m0 * ldd; i < (m0 + 128) * ldd; i++)
                cr_assert_eq(d[i], POISON, "%s: d[%lld][%lld] was written", what,
                             (long long)(i / ldd), (long long)(i % ldd));
            continue;
        }
        check_rows(what, 128, n, k, a + m0 * lda, lda, sa + m0, m_sum, b + g * n * ldb, ldb,
                   sb + g * cdiv(n, 128) * kb, d + m0 * ldd, ldd);
    }
    free(a), free(b), free(sa), free(sb), free(d), free(m_indices);
}

Test(gemm_grouped, masked_matches_reference_and_leaves_rows_beyond_untouched) {
    const int64_t groups = 4, m_max = 201, n = 140, k = 300, lda = 300, ldb = 310, ldd = 141;
    const int64_t kb = cdiv(k, 128), aligned = cdiv(m_max, 4) * 4;
    uint64_t s = 77;
    int32_t masked_m[4] = {0, 201, 0, 0};
    masked_m[2] = (int32_t)(1 + rng_next(&s) % 200);
    masked_m[3] = (int32_t)(rng_next(&s) % 130);
    uint8_t *a = malloc((size_t)(groups * m_max * lda)), *b = malloc((size_t)(groups * n * ldb));
    float *sa = malloc((size_t)(groups * kb * aligned) * sizeof(float));
    float *sb = malloc((size_t)(groups * cdiv(n, 128) * kb) * sizeof(float));
    uint16_t *d = malloc((size_t)(groups * m_max * ldd) * 2);
    for (int64_t i = 0; i < groups * m_max * lda; i++)
        a[i] = rng_e4m3(&s);
    for (int64_t i = 0; i < groups * n * ldb; i++)
        b[i] = rng_e4m3(&s);
    for (int64_t i = 0; i < groups * kb * aligned; i++)
        sa[i] = (float)(0.01 + rng_uniform(&s) * 0.02);
    for (int64_t i = 0; i < groups * cdiv(n, 128) * kb; i++)
        sb[i] = (float)(0.01 + rng_uniform(&s) * 0.02);
    for (int64_t i = 0; i < groups * m_max * ldd; i++)
        d[i] = POISON;
    cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_masked(groups, m_max, n, k, a, lda, sa, b, ldb, sb, d,
                                                   ldd, masked_m, 150, NULL),
                 0, "%s", dinf_last_error());
    for (int64_t g = 0; g < groups; g++) {
        char what[96];
        snprintf(what, sizeof what, "masked group %lld (masked_m=%d, seed 77)", (long long)g,
                 masked_m[g]);
        const uint16_t *dg = d + g * m_max * ldd;
        check_rows(what, masked_m[g], n, k, a + g * m_max * lda, lda, sa + g * kb * aligned,
                   aligned, b + g * n * ldb, ldb, sb + g * cdiv(n, 128) * kb, dg, ldd);
        for (int64_t i = masked_m[g] * ldd; i < m_max * ldd; i++)
            cr_assert_eq(dg[i], POISON, "%s: row %lld beyond masked_m was written", what,
                         (long long)(i / ldd));
    }
    free(a), free(b), free(sa), free(sb), free(d);
}

/* ---------------------------------------------------------------- errors -- */

#define EXPECT_FAIL(call, status, message)                                                          \
    do {                                                                                            \
        cr_assert_eq((call), (status), "%s", #call);                                                \
        cr_assert_str_eq(dinf_last_error(), (message));                                            \
    } while (0)

Test(gemm_errors, normal_gemm_rejects_each_rule_with_its_message) {
    static uint8_t a[4 * 256], b[4 * 256];
    static float sa[4 * 2], sb[2];
    static uint16_t d[4 * 4];
    const dinf_status INV = DINF_STATUS_INVALID_ARGUMENT;
#define G(m, n, k, a_, lda, sa_, b_, ldb, sb_, d_, ldd, exec)                                      \
    dinf_fp8_gemm_nt(m, n, k, a_, lda, sa_, b_, ldb, sb_, d_, ldd, exec)
    EXPECT_FAIL(G(-1, 4, 256, a, 256, sa, b, 256, sb, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: m=-1 is negative");
    EXPECT_FAIL(G(4, -2, 256, a, 256, sa, b, 256, sb, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: n=-2 is negative");
    EXPECT_FAIL(G(4, 4, -3, a, 256, sa, b, 256, sb, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: k=-3 is negative");
    EXPECT_FAIL(G(4, 4, 256, a, 255, sa, b, 256, sb, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: lda=255 is below k=256");
    EXPECT_FAIL(G(4, 4, 256, a, 256, sa, b, 100, sb, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: ldb=100 is below k=256");
    EXPECT_FAIL(G(4, 4, 256, a, 256, sa, b, 256, sb, d, 3, NULL), INV,
                "dinf_fp8_gemm_nt: ldd=3 is below n=4");
    EXPECT_FAIL(G(4, 4, 256, NULL, 256, sa, b, 256, sb, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: a is NULL");
    EXPECT_FAIL(G(4, 4, 256, a, 256, NULL, b, 256, sb, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: a_scales is NULL");
    EXPECT_FAIL(G(4, 4, 256, a, 256, sa, NULL, 256, sb, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: b is NULL");
    EXPECT_FAIL(G(4, 4, 256, a, 256, sa, b, 256, NULL, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: b_scales is NULL");
    EXPECT_FAIL(G(4, 4, 256, a, 256, sa, b, 256, sb, NULL, 4, NULL), INV,
                "dinf_fp8_gemm_nt: d is NULL");
    EXPECT_FAIL(G(4, 4, 256, a, 256, sa, b, 256, sb, (uint16_t *)(void *)a, 4, NULL), INV,
                "dinf_fp8_gemm_nt: d and a overlap: pass separate buffers");
    EXPECT_FAIL(G(4, 4, 256, a, 256, sa, b, 256, (const float *)(void *)(d + 2), d, 4, NULL),
                INV, "dinf_fp8_gemm_nt: d and b_scales overlap: pass separate buffers");
    EXPECT_FAIL(G(INT64_MAX / 2, 4, 256, a, 256, sa, b, 256, sb, d, 4, NULL), INV,
                "dinf_fp8_gemm_nt: buffer sizes overflow int64 (m=4611686018427387903, n=4, "
                "k=256, num_groups=1, lda=256, ldb=256, ldd=4)");
    dinf_exec bad = DINF_EXEC_CPU_INIT;
    bad.num_threads = -1;
    EXPECT_FAIL(G(4, 4, 256, a, 256, sa, b, 256, sb, d, 4, &bad), INV,
                "dinf_fp8_gemm_nt: exec->num_threads=-1 must be in [0, 1024] (0: all cores)");
    /* Without a usable device DINF_EXEC_CUDA is unsupported, with a message
     * (tests/gemm/test_gemm_sm90.c checks it in detail; with a device the
     * GPU suites run these host buffers' shapes on device memory). */
    if (!gpu_usable()) {
        dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
        cr_assert_eq(G(4, 4, 256, a, 256, sa, b, 256, sb, d, 4, &cuda), DINF_STATUS_UNSUPPORTED);
#if DINF_WITH_CUDA
        cr_assert(strstr(dinf_last_error(), "sm_90") != NULL, "%s", dinf_last_error());
#else
        cr_assert(strstr(dinf_last_error(), "built without CUDA") != NULL, "%s",
                  dinf_last_error());
#endif
    }
#undef G
}

Test(gemm_errors, contiguous_rejects_each_rule_with_its_message) {
    enum { M = 256, N = 8, K = 128 };
    static uint8_t a[M * K], b[2 * N * K];
    static float sa[M], sb[2];
    static uint16_t d[M * N];
    static int32_t idx[M];
    const dinf_status INV = DINF_STATUS_INVALID_ARGUMENT;
#define C(m_sum, groups, idx_, exec)                                                                 \
    dinf_fp8_m_grouped_gemm_nt_contiguous(m_sum, N, K, groups, a, K, sa, b, K, sb, d, N, idx_, exec)
    memset(idx, 0, sizeof idx);
    EXPECT_FAIL(C(-128, 2, idx, NULL), INV,
                "dinf_fp8_m_grouped_gemm_nt_contiguous: m_sum=-128 is negative");
    EXPECT_FAIL(C(200, 2, idx, NULL), INV,
                "dinf_fp8_m_grouped_gemm_nt_contiguous: m_sum=200 is not a multiple of 128");
    EXPECT_FAIL(C(M, 0, idx, NULL), INV,
                "dinf_fp8_m_grouped_gemm_nt_contiguous: num_groups=0 must be >= 1");
    EXPECT_FAIL(C(M, 2, NULL, NULL), INV,
                "dinf_fp8_m_grouped_gemm_nt_contiguous: m_indices is NULL");
    EXPECT_FAIL(dinf_fp8_m_grouped_gemm_nt_contiguous(M, N, K, 2, a, K, sa, b, K, sb,
                                                      (uint16_t *)(void *)idx, N, idx, NULL),
                INV, "dinf_fp8_m_grouped_gemm_nt_contiguous: d and m_indices overlap: pass "
                     "separate buffers");
    idx[200] = 2;
    EXPECT_FAIL(C(M, 2, idx, NULL), INV,
                "dinf_fp8_m_grouped_gemm_nt_contiguous: m_indices[200]=2 is outside [-1, "
                "num_groups=2)");
    idx[200] = -2;
    EXPECT_FAIL(C(M, 2, idx, NULL), INV,
                "dinf_fp8_m_grouped_gemm_nt_contiguous: m_indices[200]=-2 is outside [-1, "
                "num_groups=2)");
    idx[200] = 1;
    EXPECT_FAIL(C(M, 2, idx, NULL), INV,
                "dinf_fp8_m_grouped_gemm_nt_contiguous: m_indices[200]=1 differs from "
                "m_indices[128]=0: the group must be constant over each aligned block of 128 rows");
    idx[200] = 0;
    for (int i = 128; i < M; i++)
        idx[i] = -1;
    idx[129] = 1;
    EXPECT_FAIL(C(M, 2, idx, NULL), INV,
                "dinf_fp8_m_grouped_gemm_nt_contiguous: m_indices[129]=1 differs from "
                "m_indices[128]=-1: the group must be constant over each aligned block of 128 rows");
    idx[129] = -1;
    cr_assert_eq(C(M, 2, idx, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
    if (!gpu_usable()) {
        dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
        cr_assert_eq(C(M, 2, idx, &cuda), DINF_STATUS_UNSUPPORTED);
#if DINF_WITH_CUDA
        cr_assert(strstr(dinf_last_error(), "sm_90") != NULL, "%s", dinf_last_error());
#endif
    }
#undef C
}

Test(gemm_errors, masked_rejects_each_rule_with_its_message) {
    enum { G = 2, MMAX = 8, N = 8, K = 128 };
    static uint8_t a[G * MMAX * K], b[G * N * K];
    static float sa[G * MMAX], sb[G];
    static uint16_t d[G * MMAX * N];
    int32_t masked[G] = {3, 8};
    const dinf_status INV = DINF_STATUS_INVALID_ARGUMENT;
#define MK(groups, m_max, masked_, expected, ldd)                                                    \
    dinf_fp8_m_grouped_gemm_nt_masked(groups, m_max, N, K, a, K, sa, b, K, sb, d, ldd, masked_,     \
                                      expected, NULL)
    EXPECT_FAIL(MK(0, MMAX, masked, 4, N), INV,
                "dinf_fp8_m_grouped_gemm_nt_masked: num_groups=0 must be >= 1");
    EXPECT_FAIL(MK(G, -1, masked, 4, N), INV,
                "dinf_fp8_m_grouped_gemm_nt_masked: m_max=-1 is negative");
    EXPECT_FAIL(MK(G, MMAX, masked, -5, N), INV,
                "dinf_fp8_m_grouped_gemm_nt_masked: expected_m=-5 is negative");
    EXPECT_FAIL(MK(G, MMAX, masked, 4, N - 1), INV,
                "dinf_fp8_m_grouped_gemm_nt_masked: ldd=7 is below n=8");
    EXPECT_FAIL(MK(G, MMAX, NULL, 4, N), INV,
                "dinf_fp8_m_grouped_gemm_nt_masked: masked_m is NULL");
    masked[1] = 9;
    EXPECT_FAIL(MK(G, MMAX, masked, 4, N), INV,
                "dinf_fp8_m_grouped_gemm_nt_masked: masked_m[1]=9 is outside [0, m_max=8]");
    masked[1] = -1;
    EXPECT_FAIL(MK(G, MMAX, masked, 4, N), INV,
                "dinf_fp8_m_grouped_gemm_nt_masked: masked_m[1]=-1 is outside [0, m_max=8]");
    masked[1] = 8;
    EXPECT_FAIL(MK(INT64_MAX / 4, MMAX, masked, 4, N), INV,
                "dinf_fp8_m_grouped_gemm_nt_masked: num_groups=2305843009213693951 * m_max=8 "
                "overflows int64");
    cr_assert_eq(MK(G, MMAX, masked, 4, N), DINF_STATUS_OK, "%s", dinf_last_error());
#undef MK
}

/* Inputs may share memory (X * X^T); only the output must be apart. */
Test(gemm_nt, inputs_may_share_memory) {
    const int64_t m = 4, k = 128;
    uint8_t x[4 * 128];
    for (int i = 0; i < 4 * 128; i++)
        x[i] = (uint8_t)(0x30 + i % 9);
    float sa[4] = {1, 1, 1, 1}, sb[1] = {1};
    uint16_t d[16];
    cr_assert_eq(dinf_fp8_gemm_nt(m, m, k, x, k, sa, x, k, sb, d, m, NULL), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    cr_assert_eq(d[1], d[4], "X * X^T is symmetric");
    cr_assert_eq(dinf_fp8_gemm_nt(m, m, k, x, k, sa, x, k, sb, (uint16_t *)x, m, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "d and a overlap") != NULL, "%s", dinf_last_error());
}

Test(gemm_errors, extreme_sizes_are_rejected_without_overflow) {
    uint8_t a[1] = {0};
    float s[1] = {1};
    uint16_t d[1] = {0};
    cr_assert_eq(dinf_fp8_gemm_nt(INT64_MAX, 1, 1, a, 1, s, a, 1, s, d, 1, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_fp8_gemm_nt(1, INT64_MAX, 1, a, 1, s, a, 1, s, d, INT64_MAX, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_fp8_gemm_nt(1, 1, INT64_MAX, a, INT64_MAX, s, a, INT64_MAX, s, d, 1, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
}

/* ------------------------------------- the benchmark's peer check (T) -- */

#include "../../benchmarks/gemm_check.h"

/* The float64 element check the GPU benchmark applies to the cuBLASLt peer
 * (benchmarks/gemm_check.h: layouts and tolerance) passes every element of
 * the CPU GEMM's output in the three forms, with unit scales as the
 * per-tensor peer too, and fails when the output is another element's:
 * the same row and column against another group's B (a swapped group), or
 * the same row against a column 129 away (another B row and, across 128
 * columns, another B scale block). */
Test(gemm_bench_check, peer_element_check_passes_the_cpu_gemm_and_catches_wrong_outputs) {
    const gemm_check_shape shapes[] = {{GEMM_CHECK_NORMAL, 37, 200, 700, 1},
                                       {GEMM_CHECK_CONTIGUOUS, 128, 136, 300, 3},
                                       {GEMM_CHECK_MASKED, 45, 130, 257, 2}};
    uint64_t seed = 99;
    for (int si = 0; si < 3; si++) {
        const gemm_check_shape *s = &shapes[si];
        const int64_t rows = s->m * s->groups, n = s->n, k = s->k, kb = gemm_check_kb(s);
        const int64_t nsb = gemm_check_nsb(s), sa_count = gemm_check_sa_count(s);
        for (int blockwise = 1; blockwise >= 0; blockwise--) {
            uint8_t *a = malloc((size_t)(rows * k)), *b = malloc((size_t)(s->groups * n * k));
            float *sa = malloc((size_t)sa_count * 4), *sb = malloc((size_t)(s->groups * nsb * kb) * 4);
            float *af = malloc((size_t)(rows * k) * 4), *bf = malloc((size_t)(s->groups * n * k) * 4);
            uint16_t *d = malloc((size_t)(rows * n) * 2);
            int32_t *info = malloc((size_t)(rows > s->groups ? rows : s->groups) * 4);
            cr_assert(a && b && sa && sb && af && bf && d && info);
            for (int64_t i = 0; i < rows * k; i++)
                a[i] = rng_e4m3(&seed);
            for (int64_t i = 0; i < s->groups * n * k; i++)
                b[i] = rng_e4m3(&seed);
            for (int64_t i = 0; i < sa_count; i++)
                sa[i] = blockwise ? (float)(0.5 + rng_uniform(&seed)) / 64 : 1.0f;
            for (int64_t i = 0; i < s->groups * nsb * kb; i++)
                sb[i] = blockwise ? (float)(0.5 + rng_uniform(&seed)) / 64 : 1.0f;
            cr_assert_eq(dinf_convert(a, DINF_DTYPE_FP8_E4M3, af, DINF_DTYPE_FLOAT32, rows * k, NULL),
                         DINF_STATUS_OK);
            cr_assert_eq(dinf_convert(b, DINF_DTYPE_FP8_E4M3, bf, DINF_DTYPE_FLOAT32,
                                      s->groups * n * k, NULL),
                         DINF_STATUS_OK);
            dinf_status st;
            if (s->form == GEMM_CHECK_NORMAL) {
                st = dinf_fp8_gemm_nt(s->m, n, k, a, k, sa, b, k, sb, d, n, NULL);
            } else if (s->form == GEMM_CHECK_CONTIGUOUS) {
                for (int64_t i = 0; i < rows; i++)
                    info[i] = (int32_t)(i / s->m);
                st = dinf_fp8_m_grouped_gemm_nt_contiguous(rows, n, k, s->groups, a, k, sa, b, k, sb,
                                                           d, n, info, NULL);
            } else {
                for (int64_t g = 0; g < s->groups; g++)
                    info[g] = (int32_t)s->m;
                st = dinf_fp8_m_grouped_gemm_nt_masked(s->groups, s->m, n, k, a, k, sa, b, k, sb, d,
                                                       n, info, s->m, NULL);
            }
            cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
            double worst = 0, caught_group = 0, caught_column = 0;
            for (int64_t g = 0; g < s->groups; g++)
                for (int64_t row = 0; row < s->m; row++)
                    for (int64_t col = 0; col < n; col++) {
                        const int64_t drow = gemm_check_row(s, g, row);
                        const float *ar = af + drow * k, *br = bf + (g * n + col) * k;
                        double mag;
                        const double ref = gemm_check_ref(s, ar, br, sa, sb, g, row, col, blockwise, &mag);
                        const double got = dinf__f32_from_bf16(d[drow * n + col]);
                        const double ratio = gemm_check_ratio(got, ref, mag);
                        cr_assert(ratio <= 1.0, "form %d blockwise %d: [%lld][%lld][%lld] %g vs %g",
                                  s->form, blockwise, (long long)g, (long long)row, (long long)col,
                                  got, ref);
                        worst = ratio > worst ? ratio : worst;
                        /* wrong outputs it must catch: another group's B, a column's
                         * neighbour (another B row, and across 128: another scale) */
                        const int64_t og = (g + 1) % s->groups, oc = (col + 129) % n;
                        double mag2;
                        const double sw = gemm_check_ref(s, ar, bf + (og * n + col) * k, sa, sb, og,
                                                          row, col, blockwise, &mag2);
                        if (s->groups > 1)
                            caught_group += gemm_check_ratio(sw, ref, mag) > 1.0;
                        const double sh = gemm_check_ref(s, ar, bf + (g * n + oc) * k, sa, sb, g, row,
                                                          oc, blockwise, &mag2);
                        caught_column += gemm_check_ratio(sh, ref, mag) > 1.0;
                    }
            const double elements = (double)(s->groups * s->m * n);
            cr_log_info("form %d blockwise %d: worst %.3f of the tolerance; wrong group caught %.0f%%, "
                        "wrong column %.0f%%", s->form, blockwise, worst,
                        100 * caught_group / elements, 100 * caught_column / elements);
            if (s->groups > 1)
                cr_assert_gt(caught_group, 0.99 * elements, "a wrong group passes too often");
            cr_assert_gt(caught_column, 0.99 * elements, "a wrong column passes too often");
            free(a), free(b), free(sa), free(sb), free(af), free(bf), free(d), free(info);
        }
    }
}
