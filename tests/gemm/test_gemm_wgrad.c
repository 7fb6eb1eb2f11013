/*
 * The weight-gradient FP8 GEMMs (gemm.h: dinf_fp8_wgrad_gemm_nt,
 * dinf_fp8_k_grouped_wgrad_gemm_nt; 1x128 scales on both operands, float32
 * d +=): on the CPU against a double-precision reference and a float32 replay
 * of the documented order (bit-exact), accumulation into existing values,
 * thread-count and vector-set independence, the k-grouped layout, the
 * unquantized product (calc_diff); every rejected input; the GPU path's
 * pure parts (heuristic, plan, argument rules, precompile config) and its
 * kernel template through NVRTC (every config compiles for sm_90a without
 * spills; the SASS has the wgmma and the four TMA loads).
 */
#define _GNU_SOURCE /* setenv, nftw */
#include <deepinfra.h>

#include "../core/cpu_isa_test.h"
#include "core/internal.h"
#include "core/numeric_hd.h"
#include "gemm/gemm_sm90.h"
#include "gemm_test_util.h"
#include "jit_internal.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POISON_F32 0x7fbadbadu /* a float32 NaN no computation produces */

static int64_t cdiv64(int64_t a, int64_t b) { return (a + b - 1) / b; }

static double uniform(uint64_t *s) { return (double)(rng(s) >> 11) * 0x1p-53; }
static uint8_t finite_e4m3(uint64_t *s) {
    uint8_t c;
    do
        c = (uint8_t)rng(s);
    while ((c & 0x7f) == 0x7f);
    return c;
}
static float random_scale(uint64_t *s) {
    return (float)ldexp(1.0 + uniform(s), -8 - (int)(rng(s) % 4));
}
static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float poison_f32(void) {
    float f;
    const uint32_t u = POISON_F32;
    memcpy(&f, &u, 4);
    return f;
}

/* ------------------------------------------------------------- problem -- */

/* One wgrad GEMM, strided; scales M-major / N-major [kb][aligned]. d holds
 * random starting values (the accumulator), the padding columns poison. */
typedef struct wproblem {
    int64_t m, n, k, lda, ldb, ldd, kb, aligned_m, aligned_n;
    uint8_t *a, *b;
    float *sa, *sb, *d, *d0;
} wproblem;

static void wp_alloc(wproblem *p, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                     int64_t ldd, uint64_t seed) {
    *p = (wproblem){.m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldd = ldd};
    p->kb = cdiv64(k, 128);
    p->aligned_m = cdiv64(m, 4) * 4;
    p->aligned_n = cdiv64(n, 4) * 4;
    p->a = calloc((size_t)(m * lda + 1), 1);
    p->b = calloc((size_t)(n * ldb + 1), 1);
    p->sa = calloc((size_t)(p->kb * p->aligned_m + 1), sizeof(float));
    p->sb = calloc((size_t)(p->kb * p->aligned_n + 1), sizeof(float));
    p->d = malloc((size_t)(m * ldd + 1) * sizeof(float));
    p->d0 = malloc((size_t)(m * ldd + 1) * sizeof(float));
    uint64_t s = seed;
    for (int64_t i = 0; i < m; i++)
        for (int64_t kk = 0; kk < k; kk++)
            p->a[i * lda + kk] = finite_e4m3(&s);
    for (int64_t j = 0; j < n; j++)
        for (int64_t kk = 0; kk < k; kk++)
            p->b[j * ldb + kk] = finite_e4m3(&s);
    for (int64_t kb = 0; kb < p->kb; kb++) {
        for (int64_t i = 0; i < m; i++)
            p->sa[kb * p->aligned_m + i] = random_scale(&s);
        for (int64_t j = 0; j < n; j++)
            p->sb[kb * p->aligned_n + j] = random_scale(&s);
    }
    for (int64_t i = 0; i < m * ldd + 1; i++)
        p->d0[i] = (i % ldd) < n && i < m * ldd ? (float)((uniform(&s) - 0.5) * 8.0) : poison_f32();
    memcpy(p->d, p->d0, (size_t)(m * ldd + 1) * sizeof(float));
}

static void wp_reset(wproblem *p) {
    memcpy(p->d, p->d0, (size_t)(p->m * p->ldd + 1) * sizeof(float));
}

static void wp_free(wproblem *p) {
    free(p->a);
    free(p->b);
    free(p->sa);
    free(p->sb);
    free(p->d);
    free(p->d0);
}

static dinf_status wp_run(wproblem *p, const dinf_exec *exec) {
    return dinf_fp8_wgrad_gemm_nt(p->m, p->n, p->k, p->a, p->lda, p->sa, p->b, p->ldb, p->sb,
                                  p->d, p->ldd, exec);
}

/* The documented float32 order, literally: total from +0 block by block,
 * (sa * sb) * partial, then d0 + total. */
static float replay(const uint8_t *a, const float *sa, int64_t sa_stride, const uint8_t *b,
                    const float *sb, int64_t sb_stride, int64_t k, float d0) {
    float total = 0.0f;
    for (int64_t kb = 0; kb < cdiv64(k, 128); kb++) {
        float partial = 0.0f;
        for (int64_t kk = kb * 128; kk < k && kk < kb * 128 + 128; kk++) {
            const float prod = dinf__f32_from_e4m3(a[kk]) * dinf__f32_from_e4m3(b[kk]);
            partial += prod;
        }
        const float scale = sa[kb * sa_stride] * sb[kb * sb_stride];
        const float scaled = scale * partial;
        total += scaled;
    }
    return d0 + total;
}

/* Independent double reference of the added term, and the magnitude of its
 * terms (the scale of float32 rounding). */
static double reference(const uint8_t *a, const float *sa, int64_t sa_stride, const uint8_t *b,
                        const float *sb, int64_t sb_stride, int64_t k, double *mag) {
    double sum = 0, abs_sum = 0;
    for (int64_t kb = 0; kb < cdiv64(k, 128); kb++) {
        double part = 0, part_abs = 0;
        for (int64_t kk = kb * 128; kk < k && kk < kb * 128 + 128; kk++) {
            const double prod = (double)dinf__f32_from_e4m3(a[kk]) * dinf__f32_from_e4m3(b[kk]);
            part += prod;
            part_abs += fabs(prod);
        }
        const double scale = (double)sa[kb * sa_stride] * sb[kb * sb_stride];
        sum += scale * part;
        abs_sum += fabs(scale) * part_abs;
    }
    *mag = abs_sum;
    return sum;
}

/* Every element: the replay's bits, and within float32 rounding of d0 + the
 * double reference; padding columns still poison. */
static void wp_check_rows(const char *what, int64_t m, int64_t n, int64_t k, const uint8_t *a,
                          int64_t lda, const float *sa, int64_t aligned_m, const uint8_t *b,
                          int64_t ldb, const float *sb, int64_t aligned_n, const float *d,
                          const float *d0, int64_t ldd) {
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            const float got = d[i * ldd + j];
            const float want = replay(a + i * lda, sa + i, aligned_m, b + j * ldb, sb + j,
                                      aligned_n, k, d0[i * ldd + j]);
            cr_assert_eq(bits_of(got), bits_of(want),
                         "%s: d[%lld][%lld] = %a, the documented order gives %a", what,
                         (long long)i, (long long)j, got, want);
            double mag;
            const double ref = (double)d0[i * ldd + j] + reference(a + i * lda, sa + i, aligned_m,
                                                                   b + j * ldb, sb + j, aligned_n,
                                                                   k, &mag);
            const double tol = 1e-5 * (mag + fabs(d0[i * ldd + j])) + 1e-30;
            cr_assert(fabs(got - ref) <= tol, "%s: d[%lld][%lld] = %.9g, double reference %.12g",
                      what, (long long)i, (long long)j, got, ref);
        }
        for (int64_t j = n; j < ldd; j++)
            cr_assert_eq(bits_of(d[i * ldd + j]), POISON_F32,
                         "%s: padding d[%lld][%lld] was written", what, (long long)i,
                         (long long)j);
    }
}

static void wp_check(const char *what, const wproblem *p) {
    wp_check_rows(what, p->m, p->n, p->k, p->a, p->lda, p->sa, p->aligned_m, p->b, p->ldb, p->sb,
                  p->aligned_n, p->d, p->d0, p->ldd);
    cr_assert_eq(bits_of(p->d[p->m * p->ldd]), POISON_F32, "%s: written past the end", what);
}

/* ----------------------------------------------------------- CPU tests -- */

Test(gemm_wgrad, accumulates_the_documented_order_with_partial_blocks_and_strides) {
    /* (m, n, k, lda, ldb, ldd): partial k blocks, partial 128-column tiles,
     * rows beyond one 128-row block, n below the 32-column padding, k < 128 */
    const int64_t shapes[][6] = {{131, 203, 400, 400, 401, 205}, {7, 5, 129, 144, 129, 8},
                                 {64, 256, 256, 256, 256, 256},  {1, 1, 1, 1, 1, 1},
                                 {200, 33, 100, 128, 100, 40}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int64_t *s = shapes[i];
        wproblem p;
        wp_alloc(&p, s[0], s[1], s[2], s[3], s[4], s[5], 11 + i);
        cr_assert_eq(wp_run(&p, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
        char what[64];
        snprintf(what, sizeof what, "%lldx%lldx%lld", (long long)s[0], (long long)s[1],
                 (long long)s[2]);
        wp_check(what, &p);
        wp_free(&p);
    }
}

Test(gemm_wgrad, thread_counts_and_vector_sets_give_identical_bits) {
    wproblem p;
    wp_alloc(&p, 257, 300, 520, 520, 520, 300, 5);
    float *first = malloc(sizeof(float) * (size_t)(p.m * p.ldd));
    const int threads[] = {1, 2, 3, 7};
    for (int t = 0; t < 4; t++) {
        wp_reset(&p);
        dinf_exec cpu = DINF_EXEC_CPU_INIT;
        cpu.num_threads = threads[t];
        cr_assert_eq(wp_run(&p, &cpu), DINF_STATUS_OK, "%s", dinf_last_error());
        if (t == 0) {
            wp_check("1 thread", &p);
            memcpy(first, p.d, sizeof(float) * (size_t)(p.m * p.ldd));
        } else {
            cr_assert(memcmp(first, p.d, sizeof(float) * (size_t)(p.m * p.ldd)) == 0,
                      "%d threads differ from 1", threads[t]);
        }
    }
    const char *const sets[] = {"base", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        setenv("DINF_CPU_ISA", sets[i], 1);
        wp_reset(&p);
        cr_assert_eq(wp_run(&p, NULL), DINF_STATUS_OK, "%s: %s", sets[i], dinf_last_error());
        cr_assert(memcmp(first, p.d, sizeof(float) * (size_t)(p.m * p.ldd)) == 0,
                  "DINF_CPU_ISA=%s differs (this CPU's widest set: %s)", sets[i],
                  dinf__isa_name(widest_cpu_isa()));
    }
    setenv("DINF_CPU_ISA", "sse", 1);
    cr_assert_eq(wp_run(&p, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "dinf_fp8_wgrad_gemm_nt: DINF_CPU_ISA=sse"), "%s",
              dinf_last_error());
    unsetenv("DINF_CPU_ISA");
    free(first);
    wp_free(&p);
}

/* k == 0 adds nothing: d keeps its bits (-0.0 included; + 0.0 would make it
 * +0.0); m == 0 / n == 0 touch nothing; NULL operands are fine when empty. */
Test(gemm_wgrad, empty_sums_leave_d_as_it_is) {
    float d[6] = {-0.0f, 1.5f, -2.0f, 3.0f, -0.0f, 7.0f};
    const float d0[6] = {-0.0f, 1.5f, -2.0f, 3.0f, -0.0f, 7.0f};
    cr_assert_eq(dinf_fp8_wgrad_gemm_nt(2, 3, 0, NULL, 0, NULL, NULL, 0, NULL, d, 3, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert(memcmp(d, d0, sizeof d) == 0, "k == 0 changed d");
    cr_assert_eq(dinf_fp8_wgrad_gemm_nt(0, 3, 5, NULL, 5, NULL, NULL, 5, NULL, NULL, 3, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(dinf_fp8_wgrad_gemm_nt(2, 0, 5, NULL, 5, NULL, NULL, 5, NULL, NULL, 0, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    const int64_t ks[3] = {0, 0, 0};
    cr_assert_eq(dinf_fp8_k_grouped_wgrad_gemm_nt(1, 2, 3, ks, NULL, NULL, NULL, NULL, d, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert(memcmp(d, d0, sizeof d) == 0, "ks all 0 changed d");
}

/* The k-grouped form equals one wgrad call per group on its slices (same
 * bits), with empty groups, k_g not multiples of 128, and every group's d
 * checked against the replay. */
Test(gemm_wgrad, k_grouped_equals_one_call_per_group) {
    const int64_t G = 5, m = 70, n = 45;
    const int64_t ks[5] = {300, 0, 128, 1, 260};
    int64_t k_sum = 0, kb_sum = 0;
    for (int g = 0; g < G; g++)
        k_sum += ks[g], kb_sum += cdiv64(ks[g], 128);
    const int64_t am = cdiv64(m, 4) * 4, an = cdiv64(n, 4) * 4;
    uint64_t s = 77;
    uint8_t *a = malloc((size_t)(m * k_sum)), *b = malloc((size_t)(n * k_sum));
    float *sa = malloc(sizeof(float) * (size_t)(am * kb_sum));
    float *sb = malloc(sizeof(float) * (size_t)(an * kb_sum));
    float *d = malloc(sizeof(float) * (size_t)(G * m * n + 1));
    float *d0 = malloc(sizeof(float) * (size_t)(G * m * n + 1));
    float *dg = malloc(sizeof(float) * (size_t)(m * n));
    for (int64_t i = 0; i < m * k_sum; i++)
        a[i] = finite_e4m3(&s);
    for (int64_t i = 0; i < n * k_sum; i++)
        b[i] = finite_e4m3(&s);
    for (int64_t i = 0; i < am * kb_sum; i++)
        sa[i] = random_scale(&s);
    for (int64_t i = 0; i < an * kb_sum; i++)
        sb[i] = random_scale(&s);
    for (int64_t i = 0; i < G * m * n; i++)
        d0[i] = (float)(uniform(&s) - 0.5);
    d0[G * m * n] = poison_f32();
    memcpy(d, d0, sizeof(float) * (size_t)(G * m * n + 1));
    cr_assert_eq(dinf_fp8_k_grouped_wgrad_gemm_nt(G, m, n, ks, a, sa, b, sb, d, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(bits_of(d[G * m * n]), POISON_F32, "written past the last group");
    int64_t k_off = 0, kb_off = 0;
    for (int64_t g = 0; g < G; g++) {
        const uint8_t *ag = a + m * k_off, *bg = b + n * k_off;
        const float *sag = sa + am * kb_off, *sbg = sb + an * kb_off;
        char what[32];
        snprintf(what, sizeof what, "group %lld", (long long)g);
        wp_check_rows(what, m, n, ks[g], ag, ks[g], sag, am, bg, ks[g], sbg, an, d + g * m * n,
                      d0 + g * m * n, n);
        memcpy(dg, d0 + g * m * n, sizeof(float) * (size_t)(m * n));
        cr_assert_eq(dinf_fp8_wgrad_gemm_nt(m, n, ks[g], ks[g] ? ag : NULL, ks[g],
                                            ks[g] ? sag : NULL, ks[g] ? bg : NULL, ks[g],
                                            ks[g] ? sbg : NULL, dg, n, NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert(memcmp(dg, d + g * m * n, sizeof(float) * (size_t)(m * n)) == 0,
                  "group %lld differs from its own wgrad call", (long long)g);
        if (ks[g] == 0)
            cr_assert(memcmp(d0 + g * m * n, d + g * m * n, sizeof(float) * (size_t)(m * n)) == 0,
                      "empty group %lld changed", (long long)g);
        k_off += ks[g];
        kb_off += cdiv64(ks[g], 128);
    }
    free(a);
    free(b);
    free(sa);
    free(sb);
    free(d);
    free(d0);
    free(dg);
}

/* End to end as a trainer uses it: dW += dy^T x with dy, x quantized 1x128
 * along the tokens by the library, over two micro-batches accumulated into
 * one float32 gradient, against the unquantized double product (calc_diff
 * < 0.001, DeepGEMM's bound for every FP8 test). */
Test(gemm_wgrad, calc_diff_against_the_unquantized_weight_gradient) {
    const int64_t n_out = 96, n_in = 160, tokens = 384;
    const int64_t kb = cdiv64(tokens, 128), am = cdiv64(n_out, 4) * 4, an = cdiv64(n_in, 4) * 4;
    uint64_t s = 2024;
    float *dyT = malloc(sizeof(float) * (size_t)(2 * n_out * tokens));
    float *xT = malloc(sizeof(float) * (size_t)(2 * n_in * tokens));
    for (int64_t i = 0; i < 2 * n_out * tokens; i++)
        dyT[i] = (float)((uniform(&s) - 0.5) * 2.0);
    for (int64_t i = 0; i < 2 * n_in * tokens; i++)
        xT[i] = (float)((uniform(&s) - 0.5) * 2.0) * (i % 7 == 0 ? 30.0f : 1.0f);
    uint8_t *qa = malloc((size_t)(n_out * tokens)), *qb = malloc((size_t)(n_in * tokens));
    float *sa_rows = malloc(sizeof(float) * (size_t)(n_out * kb));
    float *sb_rows = malloc(sizeof(float) * (size_t)(n_in * kb));
    float *sa = malloc(sizeof(float) * (size_t)(am * kb)), *sb = malloc(sizeof(float) * (size_t)(an * kb));
    float *dw = calloc((size_t)(n_out * n_in), sizeof(float));
    double *ref = calloc((size_t)(n_out * n_in), sizeof(double));
    double *got = malloc(sizeof(double) * (size_t)(n_out * n_in));
    for (int mb = 0; mb < 2; mb++) {
        const float *A = dyT + mb * n_out * tokens, *B = xT + mb * n_in * tokens;
        cr_assert_eq(dinf_fp8_quantize(A, DINF_DTYPE_FLOAT32, n_out, tokens, tokens, 1, qa, tokens,
                                       sa_rows, NULL), DINF_STATUS_OK);
        cr_assert_eq(dinf_fp8_quantize(B, DINF_DTYPE_FLOAT32, n_in, tokens, tokens, 1, qb, tokens,
                                       sb_rows, NULL), DINF_STATUS_OK);
        cr_assert_eq(dinf_fp8_scale_layout_mn_major(sa_rows, n_out, kb, sa, NULL, NULL), DINF_STATUS_OK);
        cr_assert_eq(dinf_fp8_scale_layout_mn_major(sb_rows, n_in, kb, sb, NULL, NULL), DINF_STATUS_OK);
        cr_assert_eq(dinf_fp8_wgrad_gemm_nt(n_out, n_in, tokens, qa, tokens, sa, qb, tokens, sb, dw,
                                            n_in, NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        for (int64_t i = 0; i < n_out; i++)
            for (int64_t j = 0; j < n_in; j++) {
                double acc = 0;
                for (int64_t t = 0; t < tokens; t++)
                    acc += (double)A[i * tokens + t] * B[j * tokens + t];
                ref[i * n_in + j] += acc;
            }
    }
    for (int64_t i = 0; i < n_out * n_in; i++)
        got[i] = dw[i];
    double xy = 0, sq = 0;
    for (int64_t i = 0; i < n_out * n_in; i++) {
        xy += got[i] * ref[i];
        sq += got[i] * got[i] + ref[i] * ref[i];
    }
    const double diff = 1 - 2 * xy / sq;
    cr_assert(diff < 0.001 && diff > -0.001, "calc_diff %.3g", diff);
    cr_log_info("wgrad calc_diff over two accumulated micro-batches: %.3g", diff);
    free(dyT);
    free(xT);
    free(qa);
    free(qb);
    free(sa_rows);
    free(sb_rows);
    free(sa);
    free(sb);
    free(dw);
    free(ref);
    free(got);
}

Test(gemm_wgrad, inputs_may_share_memory) {
    /* X X^T-style: a and b the same bytes, the scales too */
    wproblem p;
    wp_alloc(&p, 40, 40, 300, 300, 300, 40, 3);
    cr_assert_eq(dinf_fp8_wgrad_gemm_nt(p.m, p.m, p.k, p.a, p.lda, p.sa, p.a, p.lda, p.sa, p.d,
                                        p.ldd, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    wp_check_rows("a = b", p.m, p.m, p.k, p.a, p.lda, p.sa, p.aligned_m, p.a, p.lda, p.sa,
                  p.aligned_m, p.d, p.d0, p.ldd);
    wp_free(&p);
}

/* --------------------------------------------------------- bad inputs -- */

#define EXPECT_FAIL(call, status, text)                                                          \
    do {                                                                                         \
        cr_assert_eq((call), (status), "%s: %s", #call, dinf_last_error());                      \
        cr_assert(strstr(dinf_last_error(), (text)), "%s: message \"%s\" lacks \"%s\"", #call,     \
                  dinf_last_error(), (text));                                                    \
    } while (0)

Test(gemm_wgrad, wgrad_rejects_each_rule_with_its_message) {
    wproblem p;
    wp_alloc(&p, 16, 24, 200, 208, 208, 24, 9);
    const dinf_status BAD = DINF_STATUS_INVALID_ARGUMENT;
#define W(m, n, k, a, lda, sa, b, ldb, sb, d, ldd) \
    dinf_fp8_wgrad_gemm_nt(m, n, k, a, lda, sa, b, ldb, sb, d, ldd, NULL)
    EXPECT_FAIL(W(-1, 24, 200, p.a, 208, p.sa, p.b, 208, p.sb, p.d, 24), BAD,
                "dinf_fp8_wgrad_gemm_nt: m=-1 is negative");
    EXPECT_FAIL(W(16, -2, 200, p.a, 208, p.sa, p.b, 208, p.sb, p.d, 24), BAD, "n=-2 is negative");
    EXPECT_FAIL(W(16, 24, -3, p.a, 208, p.sa, p.b, 208, p.sb, p.d, 24), BAD, "k=-3 is negative");
    EXPECT_FAIL(W(16, 24, 200, p.a, 199, p.sa, p.b, 208, p.sb, p.d, 24), BAD,
                "lda=199 is below k=200");
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, p.sa, p.b, 100, p.sb, p.d, 24), BAD,
                "ldb=100 is below k=200");
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, p.sa, p.b, 208, p.sb, p.d, 23), BAD,
                "ldd=23 is below n=24");
    EXPECT_FAIL(W(16, 24, 200, NULL, 208, p.sa, p.b, 208, p.sb, p.d, 24), BAD, "a is NULL");
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, NULL, p.b, 208, p.sb, p.d, 24), BAD, "a_scales is NULL");
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, p.sa, NULL, 208, p.sb, p.d, 24), BAD, "b is NULL");
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, p.sa, p.b, 208, NULL, p.d, 24), BAD, "b_scales is NULL");
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, p.sa, p.b, 208, p.sb, NULL, 24), BAD, "d is NULL");
    /* d over an input: the float32 output overlapping B's scales (N-major,
     * 2 x 24 floats: d's bytes are 16 x 24 x 4) */
    float *shared = malloc(sizeof(float) * 16 * 24);
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, p.sa, p.b, 208, shared + 8, shared, 24), BAD, "overlap");
    EXPECT_FAIL(W(16, 24, 200, (const uint8_t *)shared, 208, p.sa, p.b, 208, p.sb, shared, 24),
                BAD, "overlap");
    free(shared);
    /* The extents at their edges: d is 16 x 24 float32 (384 floats), the
     * scales 2 k blocks x aligned 16 / 24 floats. An input ending exactly
     * where d starts, or starting right after its last element, is fine;
     * one element more overlaps. */
    float *buf = calloc(1000, sizeof(float));
    float *dd = buf + 200;
    cr_assert_eq(W(16, 24, 200, p.a, 208, p.sa, p.b, 208, dd - 48, dd, 24), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, p.sa, p.b, 208, dd - 47, dd, 24), BAD, "overlap");
    cr_assert_eq(W(16, 24, 200, p.a, 208, p.sa, p.b, 208, dd + 384, dd, 24), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, p.sa, p.b, 208, dd + 383, dd, 24), BAD, "overlap");
    cr_assert_eq(W(16, 24, 200, p.a, 208, dd - 32, p.b, 208, p.sb, dd, 24), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    EXPECT_FAIL(W(16, 24, 200, p.a, 208, dd - 31, p.b, 208, p.sb, dd, 24), BAD, "overlap");
    /* d's bytes are 4 per element: A's codes right after d's last float */
    const uint8_t *after = (const uint8_t *)(dd + 384);
    cr_assert_eq(W(16, 24, 1, after, 1, p.sa, p.b, 1, p.sb, dd, 24), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    EXPECT_FAIL(W(16, 24, 200, after - 1, 208, p.sa, p.b, 208, p.sb, dd, 24), BAD, "overlap");
    free(buf);
    EXPECT_FAIL(W(INT64_MAX / 2, 24, 200, p.a, 208, p.sa, p.b, 208, p.sb, p.d, 24), BAD,
                "overflow");
    EXPECT_FAIL(W(16, INT64_MAX, 200, p.a, 208, p.sa, p.b, 208, p.sb, p.d, INT64_MAX), BAD,
                "overflow");
#undef W
    for (int64_t i = 0; i < p.m * p.ldd; i++) /* nothing was written by a rejected call */
        cr_assert_eq(bits_of(p.d[i]), bits_of(p.d0[i]), "d[%lld] changed", (long long)i);
#if !DINF_WITH_CUDA
    dinf_exec gpu = DINF_EXEC_CUDA_INIT(0, NULL);
    EXPECT_FAIL(wp_run(&p, &gpu), DINF_STATUS_UNSUPPORTED, "without CUDA");
#endif
    wp_free(&p);
}

Test(gemm_wgrad, k_grouped_rejects_each_rule_with_its_message) {
    const int64_t ks[3] = {128, 64, 32};
    uint8_t a[8 * 224], b[8 * 224];
    float sa[8 * 3], sb[8 * 3], d[3 * 8 * 8];
    memset(a, 0x38, sizeof a);
    memset(b, 0x38, sizeof b);
    for (int i = 0; i < 24; i++)
        sa[i] = sb[i] = 1.0f;
    const dinf_status BAD = DINF_STATUS_INVALID_ARGUMENT;
#define K(G, m, n, ks_, a_, sa_, b_, sb_, d_) \
    dinf_fp8_k_grouped_wgrad_gemm_nt(G, m, n, ks_, a_, sa_, b_, sb_, d_, NULL)
    EXPECT_FAIL(K(0, 8, 8, ks, a, sa, b, sb, d), BAD,
                "dinf_fp8_k_grouped_wgrad_gemm_nt: num_groups=0 must be >= 1");
    EXPECT_FAIL(K(3, -1, 8, ks, a, sa, b, sb, d), BAD, "m=-1 is negative");
    EXPECT_FAIL(K(3, 8, -1, ks, a, sa, b, sb, d), BAD, "n=-1 is negative");
    EXPECT_FAIL(K(3, 8, 8, NULL, a, sa, b, sb, d), BAD, "ks is NULL");
    const int64_t neg[3] = {128, -5, 32};
    EXPECT_FAIL(K(3, 8, 8, neg, a, sa, b, sb, d), BAD, "ks[1]=-5 is negative");
    const int64_t huge[3] = {INT64_MAX, 1, 0};
    EXPECT_FAIL(K(3, 8, 8, huge, a, sa, b, sb, d), BAD, "the sum of ks overflows int64 at group 1");
    const int64_t big[3] = {INT64_MAX / 4, 0, 0};
    EXPECT_FAIL(K(3, 8, 8, big, a, sa, b, sb, d), BAD, "buffer sizes overflow");
    EXPECT_FAIL(K(3, 8, 8, ks, NULL, sa, b, sb, d), BAD, "a is NULL");
    EXPECT_FAIL(K(3, 8, 8, ks, a, NULL, b, sb, d), BAD, "a_scales is NULL");
    EXPECT_FAIL(K(3, 8, 8, ks, a, sa, NULL, sb, d), BAD, "b is NULL");
    EXPECT_FAIL(K(3, 8, 8, ks, a, sa, b, NULL, d), BAD, "b_scales is NULL");
    EXPECT_FAIL(K(3, 8, 8, ks, a, sa, b, sb, NULL), BAD, "d is NULL");
    /* d over A's scales (the k-grouped extents: 8 x 3 floats) */
    EXPECT_FAIL(K(3, 8, 8, ks, a, d + 4, b, sb, d), BAD, "overlap");
    /* The extents at their edges: d is 3 groups x 8 x 8 float32 (192), A's
     * scales 3 k blocks x 8 (24 floats). */
    float *buf = calloc(600, sizeof(float));
    float *dd = buf + 100;
    for (int i = 0; i < 600; i++)
        buf[i] = 1.0f;
    cr_assert_eq(K(3, 8, 8, ks, a, dd - 24, b, sb, dd), DINF_STATUS_OK, "%s", dinf_last_error());
    EXPECT_FAIL(K(3, 8, 8, ks, a, dd - 23, b, sb, dd), BAD, "overlap");
    cr_assert_eq(K(3, 8, 8, ks, a, dd + 192, b, sb, dd), DINF_STATUS_OK, "%s", dinf_last_error());
    EXPECT_FAIL(K(3, 8, 8, ks, a, dd + 191, b, sb, dd), BAD, "overlap");
    EXPECT_FAIL(K(3, 8, 8, ks, a, sa, b, dd + 191, dd), BAD, "overlap");
    free(buf);
    /* The GPU's row-stride rule is checked before any device work: the same
     * message with or without a usable device, in a CPU-only build too. */
    dinf_exec gpu = DINF_EXEC_CUDA_INIT(0, NULL);
    const int64_t odd[3] = {128, 56, 40}; /* the same 224 codes per row */
    EXPECT_FAIL(dinf_fp8_k_grouped_wgrad_gemm_nt(3, 8, 8, odd, a, sa, b, sb, d, &gpu), BAD,
                "ks[1]=56 is not a multiple of 16 (the row stride of A_g and B_g in bytes; "
                "required on DINF_EXEC_CUDA)");
    /* on the CPU any k_g is fine */
    cr_assert_eq(K(3, 8, 8, odd, a, sa, b, sb, d), DINF_STATUS_OK, "%s", dinf_last_error());
#undef K
}

/* ------------------------------------------- the GPU path, pure parts -- */

/* DeepGEMM v1.3's wgrad test shapes (m, n, k): reference 4 of deepgemm.md. */
static const long long wgrad_shapes[][3] = {
    {7168, 2112, 4096}, {1536, 24576, 4096}, {512, 32768, 4096}, {16384, 7168, 4096},
    {7168, 4096, 4096}, {2048, 7168, 4096},  {7168, 2112, 8192}, {1536, 24576, 8192},
    {512, 32768, 8192}, {16384, 7168, 8192}, {7168, 4096, 8192}, {2048, 7168, 8192},
    {64, 7168, 4096},   {8, 100, 300}};

Test(gemm_wgrad_sm90, heuristic_fits_and_fills_the_device) {
    for (size_t i = 0; i < sizeof wgrad_shapes / sizeof wgrad_shapes[0]; i++) {
        const long long *x = wgrad_shapes[i];
        for (int sms = 78; sms <= 132; sms += 54) {
            const dinf__fp8_config c = dinf__fp8_heuristic_wgrad(x[0], x[1], x[2], sms);
            cr_assert_eq(c.kernel, DINF__FP8_KERNEL_WGRAD);
            cr_assert_eq(c.block_m, x[0] <= 64 ? 64 : 128);
            cr_assert(c.block_n == 16 || c.block_n == 32 || c.block_n == 64 || c.block_n == 128);
            cr_assert_eq(c.smem_bytes, DINF_FP8_WGRAD_SMEM_BYTES(c.block_m, c.block_n, c.stages));
            cr_assert_leq(c.smem_bytes, DINF_FP8_SMEM_LIMIT);
            cr_assert(c.stages == 8 ||
                          DINF_FP8_WGRAD_SMEM_BYTES(c.block_m, c.block_n, c.stages + 1) >
                              DINF_FP8_SMEM_LIMIT,
                      "stages %d is not the most that fit", c.stages);
            cr_assert_geq(c.stages, 4);
            cr_assert_eq(c.cluster, 1);
            cr_assert_eq(c.split_k, 1);
            cr_assert_eq(c.threads, dinf_fp8_threads(c.block_m));
            /* no other block_n of the space takes fewer waves */
            for (int bn = 16; bn <= 128; bn *= 2) {
                const long long tiles = cdiv64(x[0], c.block_m) * cdiv64(x[1], bn);
                cr_assert_geq(cdiv64(tiles, sms), c.waves, "%lldx%lld: block_n %d has fewer waves",
                              x[0], x[1], bn);
            }
            /* the choice and its JIT config agree, whatever DINF_FP8_GEMM_KERNEL says */
            setenv("DINF_FP8_GEMM_KERNEL", "simple", 1);
            dinf_jit_kernel_config jc;
            cr_assert_eq(dinf_fp8_gemm_kernel_config(DINF_FP8_GEMM_FORM_WGRAD, x[0], x[1], x[2], 1,
                                                     sms, &jc),
                         DINF_STATUS_OK, "%s", dinf_last_error());
            setenv("DINF_FP8_GEMM_KERNEL", "bogus", 1);
            dinf_jit_kernel_config jc2;
            cr_assert_eq(dinf_fp8_gemm_kernel_config(DINF_FP8_GEMM_FORM_WGRAD, x[0], x[1], x[2], 1,
                                                     sms, &jc2),
                         DINF_STATUS_OK, "%s", dinf_last_error());
            unsetenv("DINF_FP8_GEMM_KERNEL");
            cr_assert_str_eq(jc.name, "fp8_gemm_1d1d");
            cr_assert_eq(jc.num_params, 3);
            cr_assert(jc.params[0] == c.block_m && jc.params[1] == c.block_n &&
                      jc.params[2] == c.stages);
            cr_assert(memcmp(&jc, &jc2, sizeof jc) == 0);
        }
    }
    dinf_jit_kernel_config jc;
    EXPECT_FAIL(dinf_fp8_gemm_kernel_config(4, 64, 64, 64, 1, 132, &jc),
                DINF_STATUS_INVALID_ARGUMENT, "form=4 is not a dinf_fp8_gemm_form (0 normal, 1 "
                                              "contiguous, 2 masked, 3 wgrad)");
}

/* The B-scale ring: after the simple kernel's carve-up, 128-byte aligned
 * slots, inside the dynamic size; the stage's expected bytes are the four
 * boxes. */
Test(gemm_wgrad_sm90, shared_memory_carve_up) {
    for (int bm = 64; bm <= 128; bm *= 2)
        for (int bn = 16; bn <= 128; bn *= 2)
            for (int st = 1; st <= 8; st++) {
                const dinf_fp8_wgrad_smem_layout w = dinf_fp8_wgrad_smem_carve(bm, bn, st);
                const dinf_fp8_smem_layout l = dinf_fp8_smem_carve(bm, bn, st);
                cr_assert(memcmp(&w.l, &l, sizeof l) == 0);
                cr_assert_eq(w.sb % 128, 0);
                cr_assert_geq(w.sb, l.end);
                cr_assert_eq(w.sb_stage % 128, 0);
                cr_assert_geq(w.sb_stage, (unsigned)bn * 4);
                cr_assert_eq(w.end, w.sb + (unsigned)st * w.sb_stage);
                cr_assert_leq(1024 + w.end, (unsigned)DINF_FP8_WGRAD_SMEM_BYTES(bm, bn, st));
                cr_assert_eq(dinf_fp8_wgrad_stage_tx_bytes(bm, bn),
                             dinf_fp8_stage_tx_bytes(bm, bn) + (unsigned)bn * 4);
            }
}

/* The plan: the wgrad kernel with its heuristic's choice; A, B and A-scale
 * maps as the normal form's; the B-scale map N-major with a block_n box; a
 * grid of at most one CTA per SM and tile. */
Test(gemm_wgrad_sm90, plan_maps_the_n_major_b_scales) {
    static uint8_t a[16], b[16];
    static float sa[4], sb[4], d[4];
    /* n = 301: the B scales' rows are aligned_n = 304 floats apart */
    const dinf__fp8_gpu_problem p = {DINF_FP8_GEMM_NORMAL, 1000, 301, 520, 1, 0, a, 528, sa, b,
                                     544, sb, d, 304, NULL, 1};
    dinf__fp8_launch_plan plan;
    dinf__fp8_plan(&p, 132, DINF__FP8_KERNEL_FAST, &plan); /* the rung is ignored for wgrad */
    const dinf__fp8_config c = dinf__fp8_heuristic_wgrad(1000, 301, 520, 132);
    cr_assert(memcmp(&plan.config, &c, sizeof c) == 0);
    const dinf__fp8_tensor_map_geometry *g = &plan.map_sb;
    cr_assert_eq(g->base, sb);
    cr_assert_eq(g->elem_bytes, 4);
    cr_assert_eq(g->swizzle_bytes, 0);
    cr_assert(g->dims[0] == 304 && g->dims[1] == 5 && g->dims[2] == 1, "dims %llu %llu %llu",
              (unsigned long long)g->dims[0], (unsigned long long)g->dims[1],
              (unsigned long long)g->dims[2]);
    cr_assert(g->strides[0] == 304 * 4 && g->strides[1] == 304 * 4 * 5, "strides %llu %llu",
              (unsigned long long)g->strides[0], (unsigned long long)g->strides[1]);
    cr_assert(g->box[0] == (unsigned)c.block_n && g->box[1] == 1 && g->box[2] == 1);
    cr_assert(plan.map_a.dims[0] == 520 && plan.map_a.dims[1] == 1000 && plan.map_a.strides[0] == 528);
    cr_assert(plan.map_b.dims[0] == 520 && plan.map_b.dims[1] == 301 && plan.map_b.strides[0] == 544);
    cr_assert(plan.map_sa.dims[0] == 1000 && plan.map_sa.dims[1] == 5);
    cr_assert_eq(plan.map_d.base, NULL, "the wgrad kernel has no TMA-store map");
    cr_assert_eq(plan.args.d, (unsigned long long)(uintptr_t)d);
    cr_assert_eq(plan.args.ldd, 304);
    cr_assert_eq(plan.args.k_blocks, 5);
    const long long tiles = cdiv64(1000, c.block_m) * cdiv64(301, c.block_n);
    cr_assert_eq(plan.grid, (unsigned)(tiles < 132 ? tiles : 132));
    /* The scale the kernel reads for column j of k block kb (box {block_n}
     * at coordinates (n0, kb), element j - n0) is the one gemm.h places at
     * b_scales[kb * aligned_n + j], for every column of every N-block, and a
     * box never reads a row of another k block (TMA zero-fills past dims[0]) */
    for (int nb = 0; nb < plan.args.n_blocks; nb++)
        for (int kb = 0; kb < 5; kb++)
            for (int j = 0; j < c.block_n; j++) {
                const unsigned long long col = (unsigned long long)nb * c.block_n + j;
                if (col >= g->dims[0])
                    continue; /* zero fill */
                const unsigned long long byte = col * 4 + (unsigned long long)kb * g->strides[0];
                cr_assert_eq(byte, ((unsigned long long)kb * 304 + col) * 4);
            }
}

Test(gemm_wgrad_sm90, gpu_argument_rules) {
    _Alignas(16) static uint8_t a[64], b[64];
    _Alignas(16) static float sa[64], sb[64], d[64];
    dinf__fp8_gpu_problem p = {DINF_FP8_GEMM_NORMAL, 8, 8, 32, 1, 0, a, 32, sa, b, 32, sb, d, 8,
                               NULL, 1};
    cr_assert_eq(dinf__fp8_gpu_check("t", &p), DINF_STATUS_OK, "%s", dinf_last_error());
    p.ldd = 9; /* float32 elements one by one: any ldd, d 4-byte aligned */
    p.d = d + 1;
    cr_assert_eq(dinf__fp8_gpu_check("t", &p), DINF_STATUS_OK, "%s", dinf_last_error());
    p.d = (char *)d + 2;
    EXPECT_FAIL(dinf__fp8_gpu_check("t", &p), DINF_STATUS_INVALID_ARGUMENT, "is not 4-byte aligned");
    p.ldd = 8;
    p.d = d;
    p.wgrad = 0; /* the bf16 forms keep their 16-byte rule */
    p.ldd = 9;
    EXPECT_FAIL(dinf__fp8_gpu_check("t", &p), DINF_STATUS_INVALID_ARGUMENT,
                "ldd=9 is not a multiple of 8 elements");
    p.ldd = 8;
    p.wgrad = 1;
    p.b_scales = sb + 1; /* TMA reads the B scales: 16-byte aligned */
    EXPECT_FAIL(dinf__fp8_gpu_check("t", &p), DINF_STATUS_INVALID_ARGUMENT,
                "b_scales=");
    cr_assert(strstr(dinf_last_error(), "is not 16-byte aligned"), "%s", dinf_last_error());
    p.b_scales = sb;
    p.a_scales = sa + 2;
    EXPECT_FAIL(dinf__fp8_gpu_check("t", &p), DINF_STATUS_INVALID_ARGUMENT, "a_scales=");
    p.a_scales = sa;
    p.lda = 40;
    EXPECT_FAIL(dinf__fp8_gpu_check("t", &p), DINF_STATUS_INVALID_ARGUMENT,
                "lda=40 is not a multiple of 16 bytes");
    p.lda = 32;
    p.n = 1LL << 31;
    EXPECT_FAIL(dinf__fp8_gpu_check("t", &p), DINF_STATUS_UNSUPPORTED, "sizes below 2^31");
}

/* ------------------------------------------------ the kernel via NVRTC -- */

/* Occurrences in the SASS of the wgmma, the TMA loads and local memory. */
static void count_wgrad_sass(FILE *f, int *qgmma, int *tma, int *local, int *traps) {
    char line[1024];
    *qgmma = *tma = *local = *traps = 0;
    while (fgets(line, sizeof line, f)) {
        *traps += strstr(line, "BPT.TRAP") != NULL;
        *qgmma += strstr(line, "QGMMA.64x") != NULL;
        *tma += strstr(line, "UTMALDG.3D") != NULL;
        *local += strstr(line, " LDL") != NULL || strstr(line, " STL") != NULL;
    }
}

/* Every config the wgrad heuristic can pick (block_m 64/128 x block_n
 * 16..128, stages by its rule), plus 1-3 stage rings, compiles for sm_90a
 * with no local memory inside the register and shared-memory budgets; the
 * heuristic's picks for the v1.3 shapes are among them; the SASS (where
 * nvdisasm exists) has four wgmma k32 steps, four TMA loads per stage and
 * the producer's trap guards. Under the sanitizers one config (see
 * test_gemm_sm90.c's sweep). */
Test(gemm_wgrad_jit, every_config_compiles_for_sm90a_without_spills, .fini = cleanup_cache,
     .timeout = 600.0) {
#if !DINF_WITH_CUDA
    cr_skip_test("CPU-only build (make CUDA=0): no JIT");
#else
    int major, minor;
    if (dinf_jit_nvrtc_version(&major, &minor) != DINF_STATUS_OK)
        cr_skip_test("NVRTC is not available: %s", dinf_last_error());
    setup_cache();
    long long configs[16][3];
    int count = 0;
    for (int bm = 64; bm <= 128; bm *= 2)
        for (int bn = 16; bn <= 128; bn *= 2) {
            dinf__fp8_config h = dinf__fp8_heuristic_wgrad(bm == 64 ? 64 : 4096, 4096, 4096, 132);
            cr_assert_eq(h.block_m, bm);
            int st = 8;
            while (DINF_FP8_WGRAD_SMEM_BYTES(bm, bn, st) > DINF_FP8_SMEM_LIMIT)
                st--;
            configs[count][0] = bm, configs[count][1] = bn, configs[count][2] = st;
            count++;
        }
    for (size_t i = 0; i < sizeof wgrad_shapes / sizeof wgrad_shapes[0]; i++) {
        const long long *x = wgrad_shapes[i];
        const dinf__fp8_config h = dinf__fp8_heuristic_wgrad(x[0], x[1], x[2], 132);
        int found = 0;
        for (int j = 0; j < count; j++)
            found |= configs[j][0] == h.block_m && configs[j][1] == h.block_n &&
                     configs[j][2] == h.stages;
        cr_assert(found, "%lldx%lldx%lld: the pick %dx%d/%d is outside the compiled space", x[0],
                  x[1], x[2], h.block_m, h.block_n, h.stages);
    }
    const long long shallow[][3] = {{128, 64, 1}, {64, 32, 2}, {128, 128, 3}};
    for (int j = 0; j < 3; j++, count++)
        memcpy(configs[count], shallow[j], sizeof shallow[j]);
    const char *nvdisasm = find_nvdisasm();
    for (int j = 0; j < count; j++) {
        if (DINF_TEST_SANITIZED && j > 0)
            break;
        dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
        snprintf(c.name, sizeof c.name, "fp8_gemm_1d1d");
        c.num_params = 3;
        memcpy(c.params, configs[j], sizeof configs[j]);
        char label[128];
        dinf__jit_config_label(&c, label, sizeof label);
        const dinf__jit_cubin *cubin;
        const double t0 = dinf__jit_now_seconds();
        cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_OK, "%s: %s",
                     label, dinf_last_error());
        const dinf__jit_resources *r = &cubin->resources;
        const int threads = dinf_fp8_threads((int)configs[j][0]);
        const int smem = DINF_FP8_WGRAD_SMEM_BYTES((int)configs[j][0], (int)configs[j][1],
                                                   (int)configs[j][2]);
        assert_kernel_resources(label, r, threads, smem);
        cr_log_info("%s: %d registers, %d bytes of shared memory, no spills, %.2f s", label,
                    r->registers, smem, dinf__jit_now_seconds() - t0);
        if (nvdisasm && j < 2) {
            char cmd[512];
            FILE *p = open_sass(nvdisasm, "fp8_gemm_1d1d", configs[j], 3, j, cmd);
            int qgmma, tma, local, traps;
            count_wgrad_sass(p, &qgmma, &tma, &local, &traps);
            close_sass(p, cmd);
            cr_assert_eq(qgmma, 4, "%s: %d QGMMA instructions", label, qgmma);
            cr_assert_eq(tma, 4, "%s: %d UTMALDG.3D instructions", label, tma);
            cr_assert_eq(local, 0, "%s: local memory in the SASS", label);
            cr_assert_geq(traps, 2, "%s: %d BPT.TRAP", label, traps);
        }
    }
#endif
}

Test(gemm_wgrad_jit, kernel_rejects_configs_outside_its_rules, .fini = cleanup_cache) {
#if !DINF_WITH_CUDA
    cr_skip_test("CPU-only build (make CUDA=0): no JIT");
#else
    int major, minor;
    if (dinf_jit_nvrtc_version(&major, &minor) != DINF_STATUS_OK)
        cr_skip_test("NVRTC is not available: %s", dinf_last_error());
    setup_cache();
    const long long bad[][3] = {{96, 64, 4}, {128, 48, 4}, {128, 128, 7}};
    const char *why[] = {"BLOCK_M must be 64 or 128", "BLOCK_N must be 16, 32, 64 or 128",
                         "do not fit in shared memory"};
    for (int i = 0; i < 3; i++) {
        dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
        snprintf(c.name, sizeof c.name, "fp8_gemm_1d1d");
        c.num_params = 3;
        memcpy(c.params, bad[i], sizeof bad[i]);
        const dinf__jit_cubin *cubin;
        cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_JIT_ERROR,
                     "case %d", i);
        cr_assert(strstr(dinf_last_error(), why[i]), "case %d: %s", i, dinf_last_error());
    }
#endif
}
