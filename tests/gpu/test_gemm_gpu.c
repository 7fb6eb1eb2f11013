/*
 * GPU tests of the Hopper FP8 GEMMs (issue 4 item 6), run by make gpu-check:
 *   - DeepGEMM's check: calc_diff(D, x * y^T) < 1e-3 against the unquantized
 *     float32 product (computed on the GPU by the f32_gemm_nt_ref template,
 *     the simple reference kernel), for the DeepSeek-V3 shape lists of
 *     deepgemm.md 4.2, all three forms; contiguous with -1 blocks; masked
 *     with random masked_m;
 *   - the GPU against the CPU implementation (the oracle) on the same
 *     quantized inputs, on odd shapes (partial k and n blocks, padded strides);
 *   - outputs poisoned first: every row the call owns is written, every row it
 *     does not own (-1 blocks, rows >= masked_m, rows beyond a clamped
 *     masked_m) keeps the poison;
 *   - bad input on a real device: misaligned pointers and strides, k = 0;
 *   - every correctness test above on both rungs of the kernel (the fast one,
 *     fp8_gemm_fast.cuh, and the simple reference rung, fp8_gemm.cuh, picked
 *     with DINF_FP8_GEMM_KERNEL), and the fast rung with configs the
 *     heuristic does not pick on these shapes (every block_n, 1- and 2-CTA
 *     clusters, phantom partners, masked partial tiles) against the CPU.
 *   - programmatic dependent launch (DINF_FP8_GEMM_PDL, on and off): GEMMs
 *     launched right behind the kernels that produce their inputs, many
 *     rounds back-to-back, each against the CPU (small m, and m = 4096,
 *     n = 8448 behind a full-GPU BLOCK_M 256 multicast GEMM); captured into a graph
 *     as a programmatic edge.
 * Inputs are quantized on the GPU by dinf_fp8_quantize (1x128 for A, 128x128
 * for B) and A's scales transposed by dinf_fp8_scale_layout_mn_major.
 * Skipped, visibly, without a usable device; a failure under
 * DINF_REQUIRE_GPU=1 (tools/gpu-check).
 */
#define _GNU_SOURCE
#include <deepinfra.h>

#include "jit_internal.h"
#include "gemm/gemm_sm90.h"

#include <criterion/criterion.h>

#include "gpu_test.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char cache_dir[256];
static int shared_cache; /* $DINF_TEST_JIT_CACHE_DIR: kept, shared by the tests */

/* A fresh cache directory per test, or the one tools/gpu-check shares
 * between every test process of the run (so each kernel compiles once). */
static void require_gpu_and_cache(void) {
    require_gpu();
    const char *shared = getenv("DINF_TEST_JIT_CACHE_DIR");
    shared_cache = shared && shared[0] == '/';
    if (shared_cache) {
        snprintf(cache_dir, sizeof cache_dir, "%s", shared);
    } else {
        snprintf(cache_dir, sizeof cache_dir, "/tmp/dinf-gemm-gpu-XXXXXX");
        cr_assert_not_null(mkdtemp(cache_dir));
    }
    cr_assert_eq(dinf_jit_set_cache_dir(cache_dir), DINF_STATUS_OK, "%s", dinf_last_error());
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void) {
    dinf_jit_set_cache_dir(NULL);
    if (cache_dir[0] && !shared_cache)
        nftw(cache_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(gemm_gpu, .init = require_gpu_and_cache, .fini = cleanup, .timeout = 600.0);

#if DINF_WITH_CUDA && defined(__has_include) && __has_include(<cuda_runtime_api.h>)
#include <cuda_runtime_api.h>

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        cr_assert_eq(err_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(err_));               \
    } while (0)

#define DINF_OK(call)                                                                              \
    do {                                                                                           \
        dinf_status st_ = (call);                                                                  \
        cr_assert_eq(st_, DINF_STATUS_OK, "%s: %s", #call, dinf_last_error());                    \
    } while (0)

#define POISON_BYTE 0xFF /* bf16 0xFFFF: a NaN no finite input produces */
#define POISON 0xFFFFu

enum { NORMAL = 0, CONTIGUOUS = 1, MASKED = 2 };

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}
/* Uniform in [-1, 1). */
static float rng_float(uint64_t *s) {
    return (float)(rng_next(s) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static void *dmalloc(size_t bytes) {
    void *p = NULL;
    CUDA_OK(cudaMalloc(&p, bytes ? bytes : 16));
    return p;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* DeepGEMM's calc_diff, in double: 1 - 2 sum(xy) / sum(x^2 + y^2). */
typedef struct diff_acc {
    double xy, xx_yy;
} diff_acc;
static void diff_add(diff_acc *d, double x, double y) {
    d->xy += x * y;
    d->xx_yy += x * x + y * y;
}
static double diff_value(const diff_acc *d) {
    return d->xx_yy == 0 ? 0.0 : 1.0 - 2.0 * d->xy / d->xx_yy;
}

/*
 * calc_diff is a global measure: one wrong element among n moves it by about
 * 1/n, so a localised bug (a wrong tile corner, the last column of an odd n,
 * one skipped row) can pass it. Every element is also checked on its own:
 * |got - want| <= rel * |want| + abs_rms * rms(want), rms over the elements
 * compared. The bounds are per call site (documented there).
 */
typedef struct elem_check {
    double rel, abs_rms;   /* the bound's coefficients */
    double sum_sq;         /* first pass: sum of want^2 */
    long long count;
    double rms;            /* computed at the first elem_second */
    double worst;          /* second pass: max |got - want| / bound */
    long long worst_index;
    double worst_got, worst_want;
} elem_check;
static void elem_first(elem_check *e, double want) {
    e->sum_sq += want * want;
    e->count++;
}
static void elem_second(elem_check *e, long long index, double got, double want) {
    if (e->rms < 0)
        e->rms = e->count ? sqrt(e->sum_sq / (double)e->count) : 0.0;
    const double bound = e->rel * fabs(want) + e->abs_rms * e->rms + 1e-30;
    const double r = fabs(got - want) / bound;
    if (!(r <= e->worst)) { /* NaN counts as worst */
        e->worst = isnan(r) ? INFINITY : r;
        e->worst_index = index, e->worst_got = got, e->worst_want = want;
    }
}

/* GPU against the CPU on the same quantized inputs: they differ only by the
 * tensor cores' accumulation inside each 128-k block (~14 bits kept, far
 * below 1e-3 of the output rms), fused multiply-adds in the promotion and
 * then one bf16 rounding each (a 2^-8 relative step): 1/32 of |want| plus
 * 1/64 of the rms leaves a wide margin, while a wrong element (another row's
 * data, a wrong scale, a missing k block) is off by a large part of the rms. */
#define ORACLE_ELEM_CHECK {.rel = 1.0 / 32, .abs_rms = 1.0 / 64, .rms = -1, .worst_index = -1}

/* Launch the float32 reference GEMM: d[m][n] = a[m][k] * b[n][k]^T. */
static void ref_gemm(const float *a, int64_t lda, const float *b, int64_t ldb, float *d,
                     int64_t ldd, int m, int n, int k, cudaStream_t stream) {
    if (m == 0 || n == 0)
        return;
    dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
    snprintf(c.name, sizeof c.name, "f32_gemm_nt_ref");
    c.num_params = 1;
    c.params[0] = 32;
    const dinf__jit_kernel *kernel = NULL;
    DINF_OK(dinf__jit_get_kernel("test", &c, 0, &kernel));
    void *args[] = {&a, &lda, &b, &ldb, &d, &ldd, &m, &n, &k};
    const unsigned grid[3] = {(unsigned)cdiv(n, 32), (unsigned)cdiv(m, 32), 1};
    const unsigned block[3] = {32, 32, 1}, cluster[3] = {1, 1, 1};
    DINF_OK(dinf__jit_launch("test", kernel, 0, grid, block, cluster, 0, 0,
                             (dinf_stream_t)stream, args));
}

/*
 * One GEMM problem on the GPU.
 *   rows: normal m, contiguous m_sum, masked m_max (per group)
 *   group_info: host m_indices [m_sum] or masked_m [groups] (copied to the device)
 */
typedef struct problem {
    int form, groups;
    int64_t rows, n, k, lda, ldb, ldd, expected_m;
    const int32_t *group_info;
    uint64_t seed;
    int check_cpu;      /* also compare with the CPU implementation */
    double max_diff;    /* calc_diff bound against the unquantized product */
    const dinf__fp8_config *forced; /* run this config (fast rung) instead of the heuristic's */
} problem;

/* The rung run_problem_once is running (for messages). */
static const char *current_rung = "fast";

/* Rows of the output the call owns (computed and written). */
static int row_owned(const problem *p, int64_t row, int *group, int64_t *row_in_group) {
    if (p->form == NORMAL) {
        *group = 0, *row_in_group = row;
        return 1;
    }
    if (p->form == CONTIGUOUS) {
        const int32_t g = p->group_info[row];
        *group = g, *row_in_group = row;
        return g >= 0 && g < p->groups;
    }
    const int g = (int)(row / p->rows);
    const int64_t r = row % p->rows;
    int32_t limit = p->group_info[g];
    limit = limit < 0 ? 0 : limit > p->rows ? (int32_t)p->rows : limit;
    *group = g, *row_in_group = r;
    return r < limit;
}

static void run_problem_once(const problem *p) {
    const int64_t a_rows = p->form == MASKED ? p->rows * p->groups : p->rows;
    const int64_t b_rows = p->n * p->groups, kb = cdiv(p->k, 128), nsb = cdiv(p->n, 128);
    const int64_t aligned = cdiv(p->rows, 4) * 4;
    const int64_t sa_count = p->form == MASKED ? p->groups * kb * aligned : kb * aligned;
    char what[160];

    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);

    /* Unquantized inputs: x [a_rows][k], y [groups][n][k]. */
    float *hx = malloc((size_t)(a_rows * p->k) * 4), *hy = malloc((size_t)(b_rows * p->k) * 4);
    cr_assert(hx && hy);
    uint64_t s = p->seed | 1;
    for (int64_t i = 0; i < a_rows * p->k; i++)
        hx[i] = rng_float(&s);
    for (int64_t i = 0; i < b_rows * p->k; i++)
        hy[i] = rng_float(&s);
    float *dx = dmalloc((size_t)(a_rows * p->k) * 4), *dy = dmalloc((size_t)(b_rows * p->k) * 4);
    CUDA_OK(cudaMemcpy(dx, hx, (size_t)(a_rows * p->k) * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dy, hy, (size_t)(b_rows * p->k) * 4, cudaMemcpyHostToDevice));
    free(hx), free(hy);

    /* Quantize on the GPU (padded strides), A scales into the M-major layout. */
    uint8_t *da = dmalloc((size_t)(a_rows * p->lda)), *db = dmalloc((size_t)(b_rows * p->ldb));
    CUDA_OK(cudaMemset(da, 0x5a, (size_t)(a_rows * p->lda))); /* junk in the stride padding */
    CUDA_OK(cudaMemset(db, 0x5a, (size_t)(b_rows * p->ldb)));
    float *sa_rows = dmalloc((size_t)(a_rows * kb) * 4), *dsa = dmalloc((size_t)sa_count * 4);
    float *dsb = dmalloc((size_t)(p->groups * nsb * kb) * 4);
    DINF_OK(dinf_fp8_quantize(dx, DINF_DTYPE_FLOAT32, a_rows, p->k, p->k, 1, da, p->lda, sa_rows,
                              &exec));
    for (int g = 0; g < p->groups; g++)
        DINF_OK(dinf_fp8_quantize(dy + g * p->n * p->k, DINF_DTYPE_FLOAT32, p->n, p->k, p->k, 128,
                                  db + g * p->n * p->ldb, p->ldb, dsb + g * nsb * kb, &exec));
    if (p->form == MASKED)
        for (int g = 0; g < p->groups; g++)
            DINF_OK(dinf_fp8_scale_layout_mn_major(sa_rows + g * p->rows * kb, p->rows, kb,
                                                   dsa + g * kb * aligned, NULL, &exec));
    else
        DINF_OK(dinf_fp8_scale_layout_mn_major(sa_rows, p->rows, kb, dsa, NULL, &exec));

    int32_t *dinfo = NULL;
    const int64_t info_count = p->form == CONTIGUOUS ? p->rows : p->form == MASKED ? p->groups : 0;
    if (info_count) {
        dinfo = dmalloc((size_t)info_count * 4);
        CUDA_OK(cudaMemcpy(dinfo, p->group_info, (size_t)info_count * 4, cudaMemcpyHostToDevice));
    }

    /* The unquantized reference, per owned 128-row segment (or per group). */
    float *dref = dmalloc((size_t)(a_rows * p->n) * 4);
    if (p->form == NORMAL)
        ref_gemm(dx, p->k, dy, p->k, dref, p->n, (int)p->rows, (int)p->n, (int)p->k, stream);
    else if (p->form == CONTIGUOUS)
        for (int64_t r0 = 0; r0 < p->rows; r0 += 128) {
            const int g = p->group_info[r0];
            if (g >= 0 && g < p->groups)
                ref_gemm(dx + r0 * p->k, p->k, dy + g * p->n * p->k, p->k, dref + r0 * p->n,
                         p->n, 128, (int)p->n, (int)p->k, stream);
        }
    else
        for (int g = 0; g < p->groups; g++)
            ref_gemm(dx + g * p->rows * p->k, p->k, dy + g * p->n * p->k, p->k,
                     dref + g * p->rows * p->n, p->n, (int)p->rows, (int)p->n, (int)p->k, stream);
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaGetLastError());
    float *href = malloc((size_t)(a_rows * p->n) * 4);
    cr_assert(href);
    CUDA_OK(cudaMemcpy(href, dref, (size_t)(a_rows * p->n) * 4, cudaMemcpyDeviceToHost));
    const size_t d_bytes = (size_t)(a_rows * p->ldd) * 2;
    uint16_t *dd = dmalloc(d_bytes);
    uint16_t *hd = malloc(d_bytes);
    cr_assert(hd);

    /* Each rung in turn: the GEMM into a poisoned output, then the checks. */
    static const char *const rungs[2] = {"fast", "simple"};
    for (int rung_i = 0; rung_i < (p->forced ? 1 : 2); rung_i++) {
        if (!p->forced)
            cr_assert_eq(setenv("DINF_FP8_GEMM_KERNEL", rungs[rung_i], 1), 0);
        current_rung = rungs[rung_i];
        char rung[64];
        if (p->forced)
            snprintf(rung, sizeof rung, "fast %dx%d s%d c%d k%d", p->forced->block_m,
                     p->forced->block_n, p->forced->stages, p->forced->cluster,
                     p->forced->split_k);
        else
            snprintf(rung, sizeof rung, "%s", current_rung);
        snprintf(what, sizeof what,
                 "[%s] form=%d groups=%d rows=%lld n=%lld k=%lld lda=%lld ldb=%lld ldd=%lld", rung,
                 p->form, p->groups, (long long)p->rows, (long long)p->n, (long long)p->k,
                 (long long)p->lda, (long long)p->ldb, (long long)p->ldd);

        /* The GEMM, into a poisoned output. */
        CUDA_OK(cudaMemsetAsync(dd, POISON_BYTE, d_bytes, stream));
        if (p->forced) {
            const dinf__place place = {DINF_EXEC_CUDA, 0, 1, (dinf_stream_t)stream};
            const dinf__fp8_gpu_problem gp = {p->form, p->rows, p->n, p->k, p->groups, p->expected_m,
                                              da, p->lda, dsa, db, p->ldb, dsb, dd, p->ldd, dinfo, 0};
            DINF_OK(dinf__fp8_gemm_cuda_config("test", &place, &gp, p->forced));
        } else if (p->form == NORMAL)
            DINF_OK(dinf_fp8_gemm_nt(p->rows, p->n, p->k, da, p->lda, dsa, db, p->ldb, dsb, dd,
                                     p->ldd, &exec));
        else if (p->form == CONTIGUOUS)
            DINF_OK(dinf_fp8_m_grouped_gemm_nt_contiguous(p->rows, p->n, p->k, p->groups, da, p->lda,
                                                          dsa, db, p->ldb, dsb, dd, p->ldd, dinfo,
                                                          &exec));
        else
            DINF_OK(dinf_fp8_m_grouped_gemm_nt_masked(p->groups, p->rows, p->n, p->k, da, p->lda, dsa,
                                                      db, p->ldb, dsb, dd, p->ldd, dinfo,
                                                      p->expected_m, &exec));

        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaGetLastError());

        CUDA_OK(cudaMemcpy(hd, dd, d_bytes, cudaMemcpyDeviceToHost));

        /* Per element against the unquantized product: the e4m3 rounding of A and
         * B (relative error up to 2^-4 per value, ~2.5% rms) puts an output ~3.5%
         * of the rms output away from it on random inputs; 0.5 rms + 0.1 |want|
         * is over 10 sigma of that, while a wrong element (a wrong row, column,
         * scale, group) is off by about the rms itself. */
        elem_check unq = {.rel = 0.1, .abs_rms = 0.5, .rms = -1, .worst_index = -1};
        for (int64_t row = 0; row < a_rows; row++) {
            int g;
            int64_t r;
            if (row_owned(p, row, &g, &r))
                for (int64_t c = 0; c < p->n; c++)
                    elem_first(&unq, href[row * p->n + c]);
        }
        diff_acc acc = {0, 0};
        int64_t owned_rows = 0;
        for (int64_t row = 0; row < a_rows; row++) {
            int g;
            int64_t r;
            const int owned = row_owned(p, row, &g, &r);
            owned_rows += owned;
            for (int64_t c = 0; c < p->ldd; c++) {
                const uint16_t v = hd[row * p->ldd + c];
                if (!owned || c >= p->n) {
                    cr_assert_eq(v, POISON, "%s: d[%lld][%lld]=%#x written, outside the output",
                                 what, (long long)row, (long long)c, v);
                    continue;
                }
                const float x = bf16_to_f32(v);
                cr_assert(isfinite(x), "%s: d[%lld][%lld]=%#x is not finite (not written?)", what,
                          (long long)row, (long long)c, v);
                diff_add(&acc, x, href[row * p->n + c]);
                elem_second(&unq, row * p->ldd + c, x, href[row * p->n + c]);
            }
        }
        cr_assert_leq(unq.worst, 1.0,
                      "%s: d[%lld][%lld]=%g is %.3g bounds away from the unquantized %g", what,
                      unq.worst_index / p->ldd, unq.worst_index % p->ldd, unq.worst_got, unq.worst,
                      unq.worst_want);
        const double diff = diff_value(&acc);
        cr_log_info("%s: calc_diff vs unquantized = %.3g over %lld rows", what, diff,
                    (long long)owned_rows);
        cr_assert_lt(diff, p->max_diff, "%s: calc_diff=%g against the unquantized product", what,
                     diff);

        if (p->check_cpu) { /* the CPU oracle on the same quantized inputs */
            uint8_t *ha = malloc((size_t)(a_rows * p->lda)), *hb = malloc((size_t)(b_rows * p->ldb));
            float *hsa = malloc((size_t)sa_count * 4), *hsb = malloc((size_t)(p->groups * nsb * kb) * 4);
            uint16_t *hc = malloc(d_bytes);
            cr_assert(ha && hb && hsa && hsb && hc);
            CUDA_OK(cudaMemcpy(ha, da, (size_t)(a_rows * p->lda), cudaMemcpyDeviceToHost));
            CUDA_OK(cudaMemcpy(hb, db, (size_t)(b_rows * p->ldb), cudaMemcpyDeviceToHost));
            CUDA_OK(cudaMemcpy(hsa, dsa, (size_t)sa_count * 4, cudaMemcpyDeviceToHost));
            CUDA_OK(cudaMemcpy(hsb, dsb, (size_t)(p->groups * nsb * kb) * 4, cudaMemcpyDeviceToHost));
            memset(hc, POISON_BYTE, d_bytes);
            if (p->form == NORMAL)
                DINF_OK(dinf_fp8_gemm_nt(p->rows, p->n, p->k, ha, p->lda, hsa, hb, p->ldb, hsb, hc,
                                         p->ldd, NULL));
            else if (p->form == CONTIGUOUS)
                DINF_OK(dinf_fp8_m_grouped_gemm_nt_contiguous(p->rows, p->n, p->k, p->groups, ha,
                                                              p->lda, hsa, hb, p->ldb, hsb, hc,
                                                              p->ldd, p->group_info, NULL));
            else {
                /* The CPU rejects masked_m outside [0, m_max]: give it the clamped counts. */
                int32_t clamped[64];
                cr_assert_leq(p->groups, 64);
                for (int g = 0; g < p->groups; g++) {
                    const int32_t v = p->group_info[g];
                    clamped[g] = v < 0 ? 0 : v > p->rows ? (int32_t)p->rows : v;
                }
                DINF_OK(dinf_fp8_m_grouped_gemm_nt_masked(p->groups, p->rows, p->n, p->k, ha, p->lda,
                                                          hsa, hb, p->ldb, hsb, hc, p->ldd, clamped,
                                                          p->expected_m, NULL));
            }
            diff_acc oracle = {0, 0};
            elem_check ec = ORACLE_ELEM_CHECK;
            for (size_t i = 0; i < d_bytes / 2; i++)
                if (hc[i] != POISON)
                    elem_first(&ec, bf16_to_f32(hc[i]));
            for (size_t i = 0; i < d_bytes / 2; i++) {
                cr_assert_eq(hc[i] == POISON, hd[i] == POISON,
                             "%s: element %zu written by one of GPU/CPU only", what, i);
                if (hc[i] != POISON) {
                    diff_add(&oracle, bf16_to_f32(hd[i]), bf16_to_f32(hc[i]));
                    elem_second(&ec, (long long)i, bf16_to_f32(hd[i]), bf16_to_f32(hc[i]));
                }
            }
            const double od = diff_value(&oracle);
            cr_log_info("%s: calc_diff vs the CPU oracle = %.3g, worst element %.3g bounds", what,
                        od, ec.worst);
            cr_assert_lt(od, 1e-4, "%s: calc_diff=%g against the CPU implementation", what, od);
            cr_assert_leq(ec.worst, 1.0,
                          "%s: d[%lld][%lld] GPU %g, CPU %g: %.3g bounds apart", what,
                          ec.worst_index / p->ldd, ec.worst_index % p->ldd, ec.worst_got,
                          ec.worst_want, ec.worst);
            free(ha), free(hb), free(hsa), free(hsb), free(hc);
        }
    }
    unsetenv("DINF_FP8_GEMM_KERNEL");
    current_rung = "fast";

    free(hd), free(href);
    cudaFree(dx), cudaFree(dy), cudaFree(da), cudaFree(db), cudaFree(sa_rows), cudaFree(dsa);
    cudaFree(dsb), cudaFree(dd), cudaFree(dref);
    if (dinfo)
        cudaFree(dinfo);
    CUDA_OK(cudaStreamDestroy(stream));
}

/* Every correctness check runs on both rungs (run_problem_once loops over
 * them: the fast kernel, the default, and the simple reference kernel,
 * DINF_FP8_GEMM_KERNEL=simple) on the same inputs and reference. */
static void run_problem(const problem *p) { run_problem_once(p); }

static int64_t round16(int64_t x) { return (x + 15) / 16 * 16; }

/* ------------------------------------------------- the reference kernel -- */

Test(gemm_gpu, f32_reference_kernel_matches_a_double_cpu_product) {
    /* The reference of the large-shape checks is itself checked against the CPU. */
    const int m = 77, n = 131, k = 1000;
    float *x = malloc((size_t)m * k * 4), *y = malloc((size_t)n * k * 4);
    float *got = malloc((size_t)m * n * 4);
    uint64_t s = 99;
    for (int i = 0; i < m * k; i++)
        x[i] = rng_float(&s);
    for (int i = 0; i < n * k; i++)
        y[i] = rng_float(&s);
    float *dx = dmalloc((size_t)m * k * 4), *dy = dmalloc((size_t)n * k * 4);
    float *dd = dmalloc((size_t)m * n * 4);
    CUDA_OK(cudaMemcpy(dx, x, (size_t)m * k * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dy, y, (size_t)n * k * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(dd, POISON_BYTE, (size_t)m * n * 4));
    ref_gemm(dx, k, dy, k, dd, n, m, n, k, NULL);
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(got, dd, (size_t)m * n * 4, cudaMemcpyDeviceToHost));
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double want = 0, mag = 0;
            for (int q = 0; q < k; q++) {
                want += (double)x[i * k + q] * y[j * k + q];
                mag += fabs((double)x[i * k + q] * y[j * k + q]);
            }
            cr_assert(fabs(got[i * n + j] - want) <= 1e-5 * mag + 1e-30,
                      "ref[%d][%d]=%g, double %g", i, j, got[i * n + j], want);
        }
    free(x), free(y), free(got);
    cudaFree(dx), cudaFree(dy), cudaFree(dd);
}

/* ------------------------------------------------- device description -- */

Test(gemm_gpu, device_cluster_slots_bound_the_split_k_plans) {
    /* What the GPU path knows of the device: the SM count and how many
     * clusters of 2, 3, 4 CTAs it holds at once (its GPCs); every one-wave
     * split-K plan fits them, so no split-K cluster waits for a second wave. */
    int sms = 0;
    CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    dinf__fp8_device dev;
    DINF_OK(dinf__fp8_device_query("test", 0, &dev));
    cr_assert_eq(dev.num_sms, sms);
    cr_assert_eq(dev.slots[1], sms);
    for (int c = 2; c <= DINF_FP8_FAST_MAX_SPLIT_K; c++)
        cr_assert(dev.slots[c] >= 1 && dev.slots[c] <= sms / c, "clusters of %d: %d", c,
                  dev.slots[c]);
    cr_log_info("device 0: %d SMs; resident clusters of 2, 3, 4 CTAs: %d, %d, %d", sms,
                dev.slots[2], dev.slots[3], dev.slots[4]);
    static const int64_t shapes[][3] = {{64, 2112, 7168}, {64, 4096, 7168}, {128, 2112, 7168},
                                        {128, 4096, 7168}, {64, 7168, 2048}, {1, 576, 7168}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int64_t m = shapes[i][0], n = shapes[i][1], k = shapes[i][2];
        const dinf__fp8_gpu_problem p = {DINF_FP8_GEMM_NORMAL, m, n, k, 1, 0,
                                         (const uint8_t *)(uintptr_t)0x10000, k,
                                         (const float *)(uintptr_t)0x20000,
                                         (const uint8_t *)(uintptr_t)0x30000, k,
                                         (const float *)(uintptr_t)0x40000,
                                         (uint16_t *)(uintptr_t)0x50000, n, NULL, 0};
        dinf__fp8_launch_plan plan;
        dinf__fp8_plan_dev(&p, &dev, DINF__FP8_KERNEL_FAST, &plan);
        const dinf__fp8_config *c = &plan.config;
        cr_log_info("m %lld n %lld k %lld: %dx%d, %d stages, cluster %d, split-K %d, grid %u",
                    (long long)m, (long long)n, (long long)k, c->block_m, c->block_n, c->stages,
                    c->cluster, c->split_k, plan.grid);
        if (c->split_k > 1) {
            cr_assert_leq(c->tiles, dev.slots[c->cluster], "m %lld n %lld", (long long)m,
                          (long long)n);
            cr_assert_eq(plan.grid, (unsigned)(c->tiles * c->split_k), "one wave of clusters");
            /* the probe's count holds for the GEMM kernel itself: its own
             * resident clusters (what the launch clamps the grid to) fit the
             * plan, so every cluster runs one unit at once */
            dinf_jit_kernel_config kc;
            dinf__fp8_jit_config(c, &kc);
            const dinf__jit_kernel *kernel = NULL;
            DINF_OK(dinf__jit_get_kernel("test", &kc, 0, &kernel));
            int optin = 0, resident = 0;
            CUDA_OK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
            CUDA_OK(cudaKernelSetAttributeForDevice((cudaKernel_t)kernel->kernel,
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                    optin - dinf__jit_static_smem(kernel), 0));
            cudaLaunchConfig_t lc;
            memset(&lc, 0, sizeof lc);
            lc.gridDim = (dim3){plan.grid, 1, 1};
            lc.blockDim = (dim3){(unsigned)c->threads, 1, 1};
            lc.dynamicSmemBytes = (size_t)c->smem_bytes;
            cudaLaunchAttribute attr;
            memset(&attr, 0, sizeof attr);
            attr.id = cudaLaunchAttributeClusterDimension;
            attr.val.clusterDim.x = (unsigned)c->cluster;
            attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
            lc.attrs = &attr;
            lc.numAttrs = 1;
            CUDA_OK(cudaOccupancyMaxActiveClusters(&resident, (const void *)kernel->kernel, &lc));
            cr_log_info("  the kernel itself: %d resident clusters of %d (probe: %d)", resident,
                        c->cluster, dev.slots[c->cluster]);
            cr_assert_geq(resident, dev.slots[c->cluster],
                          "m %lld n %lld: the kernel holds %d clusters of %d, the probe said %d",
                          (long long)m, (long long)n, resident, c->cluster,
                          dev.slots[c->cluster]);
        }
        /* the public query with num_sms 0 names the same kernel */
        dinf_jit_kernel_config jc;
        DINF_OK(dinf_fp8_gemm_kernel_config(DINF_FP8_GEMM_FORM_NORMAL, m, n, k, 1, 0, &jc));
        cr_assert(jc.params[1] == c->block_m && jc.params[2] == c->block_n &&
                  jc.params[3] == c->stages && jc.params[4] == c->cluster &&
                  jc.params[5] == c->split_k);
    }
}

/* ----------------------------------------------------------- normal -- */

Test(gemm_gpu, normal_deepseek_v3_shapes_match_the_unquantized_product) {
    const int64_t ms[] = {64, 128, 4096};
    const int64_t nk[][2] = {{2112, 7168}, {24576, 1536}, {32768, 512}, {7168, 16384},
                             {4096, 7168}, {7168, 2048},  {7168, 576}};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 7; j++) {
            const problem p = {NORMAL, 1, ms[i], nk[j][0], nk[j][1], nk[j][1], nk[j][1], nk[j][0],
                               0, NULL, 1000 + (uint64_t)(7 * i + j), 0, 1e-3, NULL};
            run_problem(&p);
        }
}

Test(gemm_gpu, normal_odd_shapes_match_the_cpu_oracle) {
    /* m, n, k: partial k blocks, n not a multiple of the tile, tiny and ragged m. */
    const int64_t shapes[][3] = {{1, 16, 128},   {5, 200, 100},  {64, 2112, 576},
                                 {65, 136, 1000}, {200, 520, 256}, {257, 1000, 1544},
                                 {128, 24, 7168}};
    for (int i = 0; i < 7; i++) {
        const int64_t m = shapes[i][0], n = shapes[i][1], k = shapes[i][2];
        const problem p = {NORMAL, 1, m, n, k, round16(k) + 16 * (i % 2), round16(k) + 32,
                           (n + 7) / 8 * 8 + 8 * (i % 3), 0, NULL, 77 + (uint64_t)i, 1, 1e-3, NULL};
        run_problem(&p);
    }
}

/* ------------------------------------------------------- contiguous -- */

/* m_indices for groups of ~m_per_group * U(0.7, 1.3) rows each, rounded up to
 * whole 128-row blocks, with a -1 block after every third group. */
static int32_t *contiguous_indices(int groups, int64_t m_per_group, uint64_t seed,
                                   int64_t *m_sum) {
    uint64_t s = seed | 1;
    int64_t total = 0;
    int64_t *rows = malloc((size_t)groups * sizeof *rows);
    for (int g = 0; g < groups; g++) {
        const double u = 0.7 + 0.6 * (double)(rng_next(&s) >> 11) * 0x1p-53;
        rows[g] = cdiv((int64_t)(u * (double)m_per_group), 128) * 128;
        total += rows[g] + (g % 3 == 2 ? 128 : 0);
    }
    int32_t *idx = malloc((size_t)total * 4);
    int64_t r = 0;
    for (int g = 0; g < groups; g++) {
        for (int64_t i = 0; i < rows[g]; i++)
            idx[r++] = g;
        if (g % 3 == 2)
            for (int i = 0; i < 128; i++)
                idx[r++] = -1;
    }
    free(rows);
    *m_sum = total;
    return idx;
}

Test(gemm_gpu, contiguous_deepseek_v3_shapes_with_minus_one_blocks) {
    /* (G, M per group, K, N) of deepgemm.md 4.2 (v1.0 + v1.3's 32 x 256). */
    const int64_t shapes[][4] = {{4, 8192, 7168, 4096}, {4, 8192, 2048, 7168},
                                 {8, 4096, 7168, 4096}, {8, 4096, 2048, 7168},
                                 {32, 256, 2048, 4096}};
    for (int i = 0; i < 5; i++) {
        int64_t m_sum;
        int32_t *idx = contiguous_indices((int)shapes[i][0], shapes[i][1], 31 + (uint64_t)i, &m_sum);
        const problem p = {CONTIGUOUS, (int)shapes[i][0], m_sum, shapes[i][3], shapes[i][2],
                           shapes[i][2], shapes[i][2], shapes[i][3], 0, idx, 500 + (uint64_t)i, 0,
                           1e-3, NULL};
        run_problem(&p);
        free(idx);
    }
}

Test(gemm_gpu, contiguous_odd_shapes_and_out_of_range_blocks_match_the_cpu_oracle) {
    int64_t m_sum;
    int32_t *idx = contiguous_indices(5, 300, 9, &m_sum);
    /* A block whose index is out of range is skipped on the device (the CPU
     * rejects it): compare without it first, then check the skip alone. */
    const problem p = {CONTIGUOUS, 5, m_sum, 328, 700, 720, 704, 336, 0, idx, 4242, 1, 1e-3, NULL};
    run_problem(&p);
    for (int i = 0; i < 128; i++)
        idx[i] = 99; /* group 99 of 5: the first block is not computed, not written */
    const problem q = {CONTIGUOUS, 5, m_sum, 136, 256, 256, 256, 136, 0, idx, 4243, 0, 1e-3, NULL};
    run_problem(&q);
    free(idx);
}

/* ----------------------------------------------------------- masked -- */

Test(gemm_gpu, masked_deepseek_v3_shapes_with_random_masked_m) {
    /* (G, m_max) x (K, N) of deepgemm.md 4.2 v1.0, masked_m random in
     * [64, 384] capped at m_max, several trials; HEAD's (G, expected_m). */
    const int64_t gm[][2] = {{1, 1024}, {2, 512}, {4, 256}};
    const int64_t kn[][2] = {{7168, 4096}, {2048, 7168}};
    uint64_t s = 17;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            for (int trial = 0; trial < 3; trial++) {
                int32_t masked[4];
                int64_t sum = 0;
                for (int g = 0; g < gm[i][0]; g++) {
                    int64_t v = 64 + (int64_t)(rng_next(&s) % 321);
                    masked[g] = (int32_t)(v > gm[i][1] ? gm[i][1] : v);
                    sum += masked[g];
                }
                const problem p = {MASKED, (int)gm[i][0], gm[i][1], kn[j][1], kn[j][0], kn[j][0],
                                   kn[j][0], kn[j][1], sum / gm[i][0] + 1, masked,
                                   (uint64_t)(900 + 10 * i + 3 * j + trial), 0, 1e-3, NULL};
                run_problem(&p);
            }
    /* HEAD's (G, expected_m), masked_m = expected * U(0.7, 1.3), m_max just above the
     * largest count (HEAD's 4096 would only add untouched rows); (N, K) = (7168, 2048)
     * for 32 groups and (4096, 7168) for 6, to keep the host data to a few GB. */
    const int64_t head[][2] = {{32, 192}, {6, 1024}, {32, 20}, {6, 20}};
    for (int i = 0; i < 4; i++) {
        int32_t masked[32];
        const int groups = (int)head[i][0];
        const int64_t m_max = ((int64_t)(1.3 * (double)head[i][1]) + 4) / 4 * 4;
        for (int g = 0; g < groups; g++) {
            const double u = 0.7 + 0.6 * (double)(rng_next(&s) >> 11) * 0x1p-53;
            masked[g] = (int32_t)(u * (double)head[i][1]);
        }
        const int64_t n = groups == 32 ? 7168 : 4096, k = groups == 32 ? 2048 : 7168;
        const problem p = {MASKED, groups, m_max, n, k, k, k, n,
                           (int64_t)(1.2 * (double)head[i][1]), masked, 950 + (uint64_t)i, 0, 1e-3, NULL};
        run_problem(&p);
    }
}

Test(gemm_gpu, masked_odd_shapes_clamped_counts_and_the_cpu_oracle) {
    /* masked_m: zero, full, ragged, above m_max (clamped on the device to
     * m_max: never writes past the group) and negative (nothing written). */
    int32_t masked[6] = {0, 77, 130, 130 + 500, -3, 1};
    const problem p = {MASKED, 6, 130, 200, 300, 304, 320, 208, 60, masked, 31337, 1, 1e-3, NULL};
    run_problem(&p);
    int32_t small[3] = {1, 64, 65};
    const problem q = {MASKED, 3, 68, 2112, 576, 576, 576, 2112, 40, small, 31338, 1, 1e-3, NULL};
    run_problem(&q);
}

/* ---------------------------------------- fast rung, forced configs -- */

/* A fast-rung config as the heuristic would finish it (stages, threads, smem). */
static dinf__fp8_config fast_config(int form, int block_m, int block_n, int cluster, int split_k) {
    dinf__fp8_config c;
    memset(&c, 0, sizeof c);
    c.kernel = DINF__FP8_KERNEL_FAST;
    c.gemm_type = form, c.block_m = block_m, c.block_n = block_n, c.cluster = cluster;
    c.split_k = split_k;
    c.stages = 16;
    while (DINF_FP8_FAST_SPLIT_SMEM_BYTES(block_m, block_n, c.stages, split_k) > DINF_FP8_SMEM_LIMIT)
        c.stages--;
    c.threads = dinf_fp8_threads(block_m);
    c.smem_bytes = DINF_FP8_FAST_SPLIT_SMEM_BYTES(block_m, block_n, c.stages, split_k);
    return c;
}

/* The sweep below runs twice: first collecting its configs (compiled up
 * front by one parallel dinf_jit_precompile), then running the problems. */
enum { SWEEP_MAX = 128 };
static dinf_jit_kernel_config sweep_jit[SWEEP_MAX];
static int sweep_count;
static void sweep(int run);

Test(gemm_gpu, fast_rung_every_block_n_and_cluster_size_matches_the_cpu_oracle) {
    sweep_count = 0;
    sweep(0);
    const double t0 = dinf__jit_now_seconds();
    DINF_OK(dinf_jit_precompile(sweep_jit, sweep_count, NULL));
    cr_log_info("%d sweep kernels compiled and loaded in %.1f s", sweep_count,
                dinf__jit_now_seconds() - t0);
    sweep(1);
}

static void sweep_problem(int run, const problem *p) {
    if (run) {
        run_problem_once(p);
        return;
    }
    cr_assert_lt(sweep_count, SWEEP_MAX);
    dinf__fp8_jit_config(p->forced, &sweep_jit[sweep_count++]);
}

static void sweep(int run) {
    /* n = 5 N-blocks minus a ragged edge: an odd count, so 2-CTA clusters run
     * a phantom partner; non-power-of-two block_n straddle B-scale blocks;
     * masked counts leave partial tiles (direct stores) beside full ones;
     * split-K clusters reduce through distributed shared memory. */
    static const int bns[] = {16, 32, 48, 64, 80, 96, 112, 128, 144, 160};
    int32_t masked[5] = {130, 64, 1, 0, 129};
    for (int i = 0; i < 10; i++)
        for (int form = 0; form < 3; form++) {
            /* each block_n on each form; over the forms: one CTA, the A multicast
             * pair, the split-K pair (k = 1000: 8 blocks, 4 + 4) */
            const int bn = bns[i], mode = (i + form) % 3;
            const int cluster = mode == 0 ? 1 : 2, split = mode == 2 ? 2 : 1;
            const int bm = form == CONTIGUOUS ? 128 : (i + cluster) % 2 ? 64 : 128;
            const dinf__fp8_config c = fast_config(form, bm, bn, cluster, split);
            const int64_t n = 5 * bn - 8, k = 1000;
            int64_t rows = 300;
            int32_t *idx = NULL;
            if (form == CONTIGUOUS)
                idx = contiguous_indices(3, 200, 70 + (uint64_t)i, &rows);
            const problem p = {form, form == NORMAL ? 1 : form == CONTIGUOUS ? 3 : 5,
                               form == MASKED ? 130 : rows, n, k, 1008, 1024, n + 8,
                               form == MASKED ? 100 : 0,
                               form == CONTIGUOUS ? idx : form == MASKED ? masked : NULL,
                               6000 + (uint64_t)(60 * i + 3 * cluster + form), 1, 1e-3, &c};
            sweep_problem(run, &p);
            free(idx);
        }
    /* BLOCK_M 256 (two 64-row waves per math warpgroup): normal (300 rows: a
     * partial second M-block) and masked (counts filling one tile, one
     * warpgroup, part of either, none), every block_n it takes, one CTA and
     * the A-multicast pair (128-row halves; an odd N-block count: phantom). */
    int32_t masked256[5] = {300, 256, 130, 0, 77};
    for (int bn = 16; bn <= DINF_FP8_FAST_BM256_MAX_BLOCK_N; bn += 16)
        for (int form = 0; form < 3; form += 2)
            for (int cluster = 1; cluster <= 2; cluster++) {
                const dinf__fp8_config c = fast_config(form, 256, bn, cluster, 1);
                const int64_t n = 5 * bn - 8, k = 1000;
                const problem p = {form, form == NORMAL ? 1 : 5, 300, n, k, 1008, 1024, n + 8,
                                   form == MASKED ? 150 : 0, form == MASKED ? masked256 : NULL,
                                   7000 + (uint64_t)(10 * bn + 3 * cluster + form), 1, 1e-3, &c};
                sweep_problem(run, &p);
            }
    /* Split-K over clusters of 3 and 4 (rank 0 adds the other ranks'
     * partials in rank order through distributed shared memory): every form,
     * BLOCK_M 64 and 128, k = 1000 (8 blocks: 3 + 3 + 2, 2 + 2 + 2 + 2) and
     * k = 300 (3 blocks: split 4 leaves rank 3 none). */
    static const int split_bns[] = {16, 48, 96, 160};
    int32_t masked_split[5] = {130, 64, 1, 0, 129};
    for (int i = 0; i < 4; i++)
        for (int form = 0; form < 3; form++)
            for (int split = 3; split <= 4; split++) {
                const int bn = split_bns[i];
                const int bm = form == CONTIGUOUS ? 128 : (i + split) % 2 ? 64 : 128;
                const dinf__fp8_config c = fast_config(form, bm, bn, split, split);
                const int64_t n = 5 * bn - 8, k = (i + form) % 2 ? 300 : 1000;
                int64_t rows = 300;
                int32_t *idx = NULL;
                if (form == CONTIGUOUS)
                    idx = contiguous_indices(3, 200, 90 + (uint64_t)i, &rows);
                const problem p = {form, form == NORMAL ? 1 : form == CONTIGUOUS ? 3 : 5,
                                   form == MASKED ? 130 : rows, n, k, (k + 15) / 16 * 16 + 16,
                                   (k + 15) / 16 * 16 + 32, n + 8,
                                   form == MASKED ? 100 : 0,
                                   form == CONTIGUOUS ? idx : form == MASKED ? masked_split : NULL,
                                   8000 + (uint64_t)(60 * i + 3 * split + form), 1, 1e-3, &c};
                sweep_problem(run, &p);
                free(idx);
            }
}

/* ------------------------------------------------------ CUDA graphs -- */

static void graph_replay(int eager_first);

Test(gemm_gpu, masked_gemm_replays_in_a_cuda_graph_with_new_counts) {
    static const char *const rungs[2] = {"fast", "simple"};
    for (int r = 0; r < 2; r++) {
        cr_assert_eq(setenv("DINF_FP8_GEMM_KERNEL", rungs[r], 1), 0);
        cr_log_info("rung %s", rungs[r]);
        graph_replay(1);
    }
    unsetenv("DINF_FP8_GEMM_KERNEL");
}

Test(gemm_gpu, first_call_inside_a_cuda_graph_capture_compiles_loads_and_replays) {
    /* No warm-up: the first call of each rung compiles (NVRTC), loads
     * (cudaLibraryLoadData, in relaxed capture mode), sets the shared-memory
     * attribute and queries occupancy while the stream is being captured in
     * global mode; the capture must survive and the graph compute right. */
    static const char *const rungs[2] = {"fast", "simple"};
    for (int r = 0; r < 2; r++) {
        dinf__jit_reset(); /* an empty in-process table (and a fresh NVRTC lookup) */
        DINF_OK(dinf_jit_set_cache_dir(cache_dir));
        cr_assert_eq(setenv("DINF_FP8_GEMM_KERNEL", rungs[r], 1), 0);
        cr_log_info("rung %s", rungs[r]);
        graph_replay(0);
    }
    unsetenv("DINF_FP8_GEMM_KERNEL");
}

static void graph_replay(int eager_first) {
    /* The decode use: capture once, change masked_m in device memory, replay. */
    enum { G = 3, MMAX = 96, N = 256, K = 512, KB = 4 };
    const int64_t aligned = MMAX;
    uint64_t s = 4242;
    uint8_t *ha = malloc(G * MMAX * K), *hb = malloc(G * N * K);
    float *hsa = malloc(G * KB * aligned * 4), *hsb = malloc(G * 2 * KB * 4);
    for (int i = 0; i < G * MMAX * K; i++)
        ha[i] = (uint8_t)(rng_next(&s) & 0x7e) | (uint8_t)(rng_next(&s) & 0x80);
    for (int i = 0; i < G * N * K; i++)
        hb[i] = (uint8_t)(rng_next(&s) & 0x7e) | (uint8_t)(rng_next(&s) & 0x80);
    for (int i = 0; i < G * KB * aligned; i++)
        hsa[i] = 0.001f * (float)(1 + rng_next(&s) % 16);
    for (int i = 0; i < G * 2 * KB; i++)
        hsb[i] = 0.001f * (float)(1 + rng_next(&s) % 16);
    uint8_t *a = dmalloc(G * MMAX * K), *b = dmalloc(G * N * K);
    float *sa = dmalloc(G * KB * aligned * 4), *sb = dmalloc(G * 2 * KB * 4);
    uint16_t *d = dmalloc(G * MMAX * N * 2);
    int32_t *mm = dmalloc(G * 4);
    CUDA_OK(cudaMemcpy(a, ha, G * MMAX * K, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(b, hb, G * N * K, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(sa, hsa, G * KB * aligned * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(sb, hsb, G * 2 * KB * 4, cudaMemcpyHostToDevice));
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
    int32_t counts[2][G] = {{96, 0, 17}, {5, 96, 64}};
    CUDA_OK(cudaMemcpy(mm, counts[0], sizeof counts[0], cudaMemcpyHostToDevice));
    if (eager_first) { /* compiles and loads the kernel outside the capture */
        DINF_OK(dinf_fp8_m_grouped_gemm_nt_masked(G, MMAX, N, K, a, K, sa, b, K, sb, d, N, mm, 48,
                                                  &exec));
        CUDA_OK(cudaStreamSynchronize(stream));
    }
    cudaGraph_t graph;
    cudaGraphExec_t instance;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    DINF_OK(dinf_fp8_m_grouped_gemm_nt_masked(G, MMAX, N, K, a, K, sa, b, K, sb, d, N, mm, 48,
                                              &exec));
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    CUDA_OK(cudaGraphInstantiate(&instance, graph, 0));
    uint16_t *got = malloc(G * MMAX * N * 2), *want = malloc(G * MMAX * N * 2);
    for (int round = 0; round < 2; round++) {
        CUDA_OK(cudaMemcpyAsync(mm, counts[round], sizeof counts[round], cudaMemcpyHostToDevice,
                                stream));
        CUDA_OK(cudaMemsetAsync(d, POISON_BYTE, G * MMAX * N * 2, stream));
        CUDA_OK(cudaGraphLaunch(instance, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaMemcpy(got, d, G * MMAX * N * 2, cudaMemcpyDeviceToHost));
        memset(want, POISON_BYTE, G * MMAX * N * 2);
        DINF_OK(dinf_fp8_m_grouped_gemm_nt_masked(G, MMAX, N, K, ha, K, hsa, hb, K, hsb, want, N,
                                                  counts[round], 48, NULL));
        diff_acc acc = {0, 0};
        elem_check ec = ORACLE_ELEM_CHECK;
        for (int i = 0; i < G * MMAX * N; i++)
            if (want[i] != POISON)
                elem_first(&ec, bf16_to_f32(want[i]));
        for (int i = 0; i < G * MMAX * N; i++) {
            cr_assert_eq(got[i] == POISON, want[i] == POISON,
                         "round %d: element %d written by one of graph/CPU only", round, i);
            if (want[i] != POISON) {
                diff_add(&acc, bf16_to_f32(got[i]), bf16_to_f32(want[i]));
                elem_second(&ec, i, bf16_to_f32(got[i]), bf16_to_f32(want[i]));
            }
        }
        cr_assert_lt(diff_value(&acc), 1e-4, "round %d: calc_diff %g against the CPU", round,
                     diff_value(&acc));
        cr_assert_leq(ec.worst, 1.0, "round %d: element %lld graph %g, CPU %g: %.3g bounds apart",
                      round, ec.worst_index, ec.worst_got, ec.worst_want, ec.worst);
    }
    CUDA_OK(cudaGraphExecDestroy(instance));
    CUDA_OK(cudaGraphDestroy(graph));
    CUDA_OK(cudaStreamDestroy(stream));
    free(ha), free(hb), free(hsa), free(hsb), free(got), free(want);
    cudaFree(a), cudaFree(b), cudaFree(sa), cudaFree(sb), cudaFree(d), cudaFree(mm);
}

/* ----------------------------------------- programmatic dependent launch -- */

/*
 * With PDL (DINF_FP8_GEMM_PDL=1, the default) the fast GEMM's CTAs may start
 * while the previous kernel on the stream is still running; they must read
 * nothing before it has completed. Each round quantizes fresh A and B on the
 * stream (dinf_fp8_quantize, dinf_fp8_scale_layout_mn_major) into buffers
 * that start as NaN codes, the B quantize immediately before GEMM 1 (its
 * direct predecessor writes B and the B scales; A and its scales were written
 * two and one kernels before); then GEMM 2 = A B^T again, but with its A and
 * B scales read from GEMM 1's output d1 (its float32 view; d1 starts as NaN):
 * GEMM 1 signals launch_dependents at its start, so GEMM 2's CTAs really run
 * beside GEMM 1 on the SMs it leaves idle (small m: few tiles) and only the
 * wait keeps their TMA loads of the A scales and plain loads of the B scales
 * behind GEMM 1's stores. Rounds go back-to-back with no synchronisation,
 * each into its own poisoned outputs; then every output is compared with the
 * CPU GEMM on the data the GPU produced: a read before the wait sees NaN (or
 * a partial result) and the round fails. Run with PDL on and off.
 * N is PDL_N (m 64 / 128) or 8448 (the full-GPU BLOCK_M 256 round, m 4096).
 */
enum { PDL_N = 512, PDL_K = 1024, PDL_KB = PDL_K / 128 };

typedef struct pdl_bufs {
    int64_t m, n, nsb, aligned; /* nsb = n / 128 B-scale blocks */
    int rounds;
    int64_t scales2;          /* GEMM 2's scales: float index into d1's float32 view */
    float *dx, *dy;           /* unquantized inputs, one slice per round */
    uint8_t *da, *db;         /* [rounds][m][K], [rounds][n][K] */
    float *sa_rows, *dsa, *dsb;
    uint16_t *dd, *dd2;       /* [rounds][m][n]: GEMM 1, GEMM 2 */
} pdl_bufs;

/* GEMM 2's scales inside round r's d1 (its float32 view): A's [KB][aligned],
 * then B's [NSB][KB], at float b->scales2 (the start of d1, or its end). */
static float *pdl_scales2(const pdl_bufs *b, int r, int which_b) {
    float *base = (float *)(void *)(b->dd + r * b->m * b->n) + b->scales2;
    return which_b ? base + PDL_KB * b->aligned : base;
}

/* at_end: GEMM 2's scales in the last bytes of d1 (16-byte aligned: GEMM 1's
 * last rows), else at its start (GEMM 1's first rows). */
static void pdl_setup_shape(pdl_bufs *b, int64_t m, int64_t n, int rounds, int at_end,
                            uint64_t seed) {
    cr_assert_eq(n % 128, 0);
    b->m = m, b->n = n, b->nsb = n / 128, b->rounds = rounds, b->aligned = cdiv(m, 4) * 4;
    const int64_t need = PDL_KB * b->aligned + b->nsb * PDL_KB; /* floats */
    cr_assert_leq(need * 4, m * n * 2, "GEMM 2's scales fit in d1");
    b->scales2 = at_end ? (m * n * 2 / 4 - need) / 4 * 4 : 0;
    const size_t xs = (size_t)(rounds * m * PDL_K), ys = (size_t)(rounds * n * PDL_K);
    float *hx = malloc(xs * 4), *hy = malloc(ys * 4);
    cr_assert(hx && hy);
    uint64_t s = seed | 1;
    for (size_t i = 0; i < xs; i++)
        hx[i] = rng_float(&s);
    for (size_t i = 0; i < ys; i++)
        hy[i] = rng_float(&s);
    b->dx = dmalloc(xs * 4), b->dy = dmalloc(ys * 4);
    CUDA_OK(cudaMemcpy(b->dx, hx, xs * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(b->dy, hy, ys * 4, cudaMemcpyHostToDevice));
    free(hx), free(hy);
    b->da = dmalloc(xs), b->db = dmalloc(ys);
    b->sa_rows = dmalloc((size_t)(rounds * m * PDL_KB) * 4);
    b->dsa = dmalloc((size_t)(rounds * PDL_KB * b->aligned) * 4);
    b->dsb = dmalloc((size_t)(rounds * b->nsb * PDL_KB) * 4);
    b->dd = dmalloc((size_t)(rounds * m * n) * 2);
    b->dd2 = dmalloc((size_t)(rounds * m * n) * 2);
    /* NaN codes everywhere a producer writes (e4m3 0x7F, float 0xFFFFFFFF) */
    CUDA_OK(cudaMemset(b->da, 0x7F, xs));
    CUDA_OK(cudaMemset(b->db, 0x7F, ys));
    CUDA_OK(cudaMemset(b->sa_rows, 0xFF, (size_t)(rounds * m * PDL_KB) * 4));
    CUDA_OK(cudaMemset(b->dsa, 0xFF, (size_t)(rounds * PDL_KB * b->aligned) * 4));
    CUDA_OK(cudaMemset(b->dsb, 0xFF, (size_t)(rounds * b->nsb * PDL_KB) * 4));
    CUDA_OK(cudaMemset(b->dd, POISON_BYTE, (size_t)(rounds * m * n) * 2));
    CUDA_OK(cudaMemset(b->dd2, POISON_BYTE, (size_t)(rounds * m * n) * 2));
    CUDA_OK(cudaDeviceSynchronize());
}

static void pdl_setup(pdl_bufs *b, int64_t m, int rounds, uint64_t seed) {
    pdl_setup_shape(b, m, PDL_N, rounds, 0, seed);
}

static void pdl_free(pdl_bufs *b) {
    cudaFree(b->dx), cudaFree(b->dy), cudaFree(b->da), cudaFree(b->db), cudaFree(b->sa_rows);
    cudaFree(b->dsa), cudaFree(b->dsb), cudaFree(b->dd), cudaFree(b->dd2);
}

/* Round r's producers and two GEMMs, enqueued on exec's stream. */
static void pdl_enqueue_round(const pdl_bufs *b, int r, const dinf_exec *exec) {
    const int64_t m = b->m, n = b->n;
    uint8_t *a = b->da + r * m * PDL_K, *bq = b->db + r * n * PDL_K;
    float *sa_rows = b->sa_rows + r * m * PDL_KB, *sa = b->dsa + r * PDL_KB * b->aligned;
    float *sb = b->dsb + r * b->nsb * PDL_KB;
    DINF_OK(dinf_fp8_quantize(b->dx + r * m * PDL_K, DINF_DTYPE_FLOAT32, m, PDL_K, PDL_K, 1, a,
                              PDL_K, sa_rows, exec));
    DINF_OK(dinf_fp8_scale_layout_mn_major(sa_rows, m, PDL_KB, sa, NULL, exec));
    DINF_OK(dinf_fp8_quantize(b->dy + r * n * PDL_K, DINF_DTYPE_FLOAT32, n, PDL_K, PDL_K, 128, bq,
                              PDL_K, sb, exec));
    DINF_OK(dinf_fp8_gemm_nt(m, n, PDL_K, a, PDL_K, sa, bq, PDL_K, sb, b->dd + r * m * n, n,
                             exec));
    DINF_OK(dinf_fp8_gemm_nt(m, n, PDL_K, a, PDL_K, pdl_scales2(b, r, 0), bq, PDL_K,
                             pdl_scales2(b, r, 1), b->dd2 + r * m * n, n, exec));
}

/* got against want (the CPU's), every element written. */
static void pdl_compare(const uint16_t *got, const uint16_t *want, int64_t count,
                        const char *what, int r, int gemm) {
    diff_acc acc = {0, 0};
    elem_check ec = ORACLE_ELEM_CHECK;
    for (int64_t i = 0; i < count; i++)
        elem_first(&ec, bf16_to_f32(want[i]));
    for (int64_t i = 0; i < count; i++) {
        cr_assert_neq(got[i], POISON, "%s round %d GEMM %d: d[%lld] not written", what, r, gemm,
                      (long long)i);
        diff_add(&acc, bf16_to_f32(got[i]), bf16_to_f32(want[i]));
        elem_second(&ec, (long long)i, bf16_to_f32(got[i]), bf16_to_f32(want[i]));
    }
    cr_assert_lt(diff_value(&acc), 1e-4, "%s round %d GEMM %d: calc_diff %g against the CPU",
                 what, r, gemm, diff_value(&acc));
    cr_assert_leq(ec.worst, 1.0, "%s round %d GEMM %d: d[%lld] GPU %g, CPU %g: %.3g bounds apart",
                  what, r, gemm, ec.worst_index, ec.worst_got, ec.worst_want, ec.worst);
}

/* Rows compared with the CPU: all of them up to 1024 rows; beyond, the
 * first and the last 256-row M-blocks whole (every warpgroup, wave and
 * fragment row of a BLOCK_M 256 tile, both CTAs' multicast halves) and every
 * 61st row between (61 is prime to 256: every row position of a tile, across
 * the M-blocks). Every element of d is still checked to be written. */
static int64_t pdl_sample_rows(int64_t m, int64_t *rows) {
    int64_t count = 0;
    for (int64_t r = 0; r < m; r++)
        if (m <= 1024 || r < 256 || r >= m - 256 || r % 61 == 0)
            rows[count++] = r;
    return count;
}

/* The CPU GEMM of the sampled rows: A and its MN-major scales [KB][aligned]
 * gathered into a problem of `count` rows (each output element depends on
 * its row's data only: the same bits as the full product's rows). */
static void pdl_cpu_rows(const pdl_bufs *b, const int64_t *rows, int64_t count, const uint8_t *ha,
                         const float *hsa, const uint8_t *hb, const float *hsb, uint16_t *want) {
    const int64_t aligned = cdiv(count, 4) * 4;
    uint8_t *sa_rows = malloc((size_t)(count * PDL_K));
    float *ssa = malloc((size_t)(PDL_KB * aligned) * 4);
    cr_assert(sa_rows && ssa);
    for (int64_t i = 0; i < count; i++) {
        memcpy(sa_rows + i * PDL_K, ha + rows[i] * PDL_K, PDL_K);
        for (int kb = 0; kb < PDL_KB; kb++)
            ssa[kb * aligned + i] = hsa[kb * b->aligned + rows[i]];
    }
    memset(want, POISON_BYTE, (size_t)(count * b->n) * 2);
    DINF_OK(dinf_fp8_gemm_nt(count, b->n, PDL_K, sa_rows, PDL_K, ssa, hb, PDL_K, hsb, want, b->n,
                             NULL));
    free(sa_rows), free(ssa);
}

/* Every round's output against the CPU GEMM on that round's quantized data
 * (the sampled rows; every element checked written). */
static void pdl_check_rounds(const pdl_bufs *b, int first, int count, const char *what) {
    const int64_t m = b->m, n = b->n, nsb = b->nsb;
    uint8_t *ha = malloc((size_t)(m * PDL_K)), *hb = malloc((size_t)(n * PDL_K));
    float *hsa = malloc((size_t)(PDL_KB * b->aligned) * 4), *hsb = malloc((size_t)(nsb * PDL_KB) * 4);
    uint16_t *got = malloc((size_t)(m * n) * 2);
    int64_t *rows = malloc((size_t)m * sizeof *rows);
    cr_assert(ha && hb && hsa && hsb && got && rows);
    const int64_t nrows = pdl_sample_rows(m, rows);
    uint16_t *want = malloc((size_t)(nrows * n) * 2), *got_rows = malloc((size_t)(nrows * n) * 2);
    cr_assert(want && got_rows);
    for (int r = first; r < first + count; r++) {
        CUDA_OK(cudaMemcpy(ha, b->da + r * m * PDL_K, (size_t)(m * PDL_K), cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(hb, b->db + r * n * PDL_K, (size_t)(n * PDL_K), cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(hsa, b->dsa + r * PDL_KB * b->aligned,
                           (size_t)(PDL_KB * b->aligned) * 4, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(hsb, b->dsb + r * nsb * PDL_KB, (size_t)(nsb * PDL_KB) * 4,
                           cudaMemcpyDeviceToHost));
        for (int gemm = 1; gemm <= 2; gemm++) {
            if (gemm == 2) {
                /* the same A and B, its scales the float32 view of d1 (got) */
                const float *scales = (const float *)(const void *)got + b->scales2;
                memcpy(hsa, scales, (size_t)(PDL_KB * b->aligned) * 4);
                memcpy(hsb, scales + PDL_KB * b->aligned, (size_t)(nsb * PDL_KB) * 4);
            }
            CUDA_OK(cudaMemcpy(got, (gemm == 1 ? b->dd : b->dd2) + r * m * n,
                               (size_t)(m * n) * 2, cudaMemcpyDeviceToHost));
            if (nrows < m) { /* the rows not compared: written, and finite (a GEMM 2
                              * that read its scales early, NaN poison, gives NaN
                              * rows the sampling may miss; every correct value is
                              * finite, |d| below about 1e12) */
                int64_t bad = 0, first_bad = -1;
                for (int64_t i = 0; i < m * n; i++)
                    if ((got[i] & 0x7F80u) == 0x7F80u && bad++ == 0)
                        first_bad = i;
                cr_assert_eq(bad, 0, "%s round %d GEMM %d: %lld elements unwritten or not "
                             "finite, first d[%lld] (row %lld, column %lld) = 0x%04x", what, r,
                             gemm, (long long)bad, (long long)first_bad,
                             (long long)(first_bad / n), (long long)(first_bad % n),
                             first_bad >= 0 ? got[first_bad] : 0);
            }
            for (int64_t i = 0; i < nrows; i++)
                memcpy(got_rows + i * n, got + rows[i] * n, (size_t)n * 2);
            pdl_cpu_rows(b, rows, nrows, ha, hsa, hb, hsb, want);
            pdl_compare(got_rows, want, nrows * n, what, r, gemm);
        }
    }
    free(ha), free(hb), free(hsa), free(hsb), free(got), free(rows), free(want), free(got_rows);
}

/* All of b's rounds back-to-back on a fresh stream, after one untimed call
 * that compiles and loads the kernel (on scratch output, so that the
 * rounds' launches follow one another), then checked against the CPU. */
static void pdl_run_rounds(pdl_bufs *b, const char *what) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
    uint16_t *scratch = dmalloc((size_t)(b->m * b->n) * 2);
    DINF_OK(dinf_fp8_gemm_nt(b->m, b->n, PDL_K, b->da, PDL_K, b->dsa, b->db, PDL_K, b->dsb,
                             scratch, b->n, &exec));
    CUDA_OK(cudaStreamSynchronize(stream));
    for (int r = 0; r < b->rounds; r++)
        pdl_enqueue_round(b, r, &exec);
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaGetLastError());
    pdl_check_rounds(b, 0, b->rounds, what);
    cr_log_info("%s: %d back-to-back rounds match the CPU", what, b->rounds);
    cudaFree(scratch);
    CUDA_OK(cudaStreamDestroy(stream));
}

Test(gemm_gpu, pdl_gemm_right_behind_its_producers_reads_only_their_finished_output) {
    const int64_t ms[] = {64, 128}; /* the small-M DeepSeek-V3 decode sizes PDL is for */
    const char *const settings[] = {"1", "0"};
    enum { ROUNDS = 12 };
    for (int si = 0; si < 2; si++)
        for (int mi = 0; mi < 2; mi++) {
            cr_assert_eq(setenv("DINF_FP8_GEMM_PDL", settings[si], 1), 0);
            char what[64];
            snprintf(what, sizeof what, "PDL=%s m=%lld", settings[si], (long long)ms[mi]);
            pdl_bufs b;
            pdl_setup(&b, ms[mi], ROUNDS, 777 + (uint64_t)(10 * si + mi));
            pdl_run_rounds(&b, what);
            pdl_free(&b);
        }
    unsetenv("DINF_FP8_GEMM_PDL");
}

Test(gemm_gpu, pdl_gemm_behind_a_full_gpu_block_m_256_multicast_gemm_reads_only_its_output,
     .timeout = 90.0) {
    /* The same rounds at m = 4096, n = 8448, k = 1024: on 132 SMs the
     * heuristic picks BLOCK_M 256 x BLOCK_N 128 with the 2-CTA A multicast,
     * 1056 tiles = 528 cluster units = 8 full waves of 66 clusters, so the
     * persistent grid is every SM (test_gemm_fast.c pins that choice; m = n
     * = 4096 gets the same tile but a 128-CTA grid: 4 waves of 64 clusters).
     * GEMM 2 (PDL) runs behind a primary that fills the GPU at one CTA per SM
     * in 2-CTA clusters and signals launch_dependents at its start (review
     * T1 / D3: its CTAs can only start on the SMs the primary's CTAs free at
     * its tail, then wait). GEMM 2's scales are the last ~133 KB of d1 (its
     * last 8 rows): GEMM 1 stores their right quarter (raster strips 3 and 4:
     * N-blocks 48..65), which holds all of GEMM 2's B scales, in its last
     * wave. Two rounds back-to-back, PDL on and off; outputs poisoned; the
     * sampled rows (pdl_sample_rows) against the CPU, every element checked
     * written. */
    enum { M = 4096, N = 8448, ROUNDS = 2 };
    const char *const settings[] = {"1", "0"};
    int sms = 0;
    CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    for (int si = 0; si < 2; si++) {
        cr_assert_eq(setenv("DINF_FP8_GEMM_PDL", settings[si], 1), 0);
        char what[64];
        snprintf(what, sizeof what, "PDL=%s m=%d n=%d", settings[si], M, N);
        pdl_bufs b;
        pdl_setup_shape(&b, M, N, ROUNDS, 1, 909 + (uint64_t)si);
        /* the heuristic's plan for this shape on this device */
        const dinf__fp8_gpu_problem gp = {NORMAL, M, N, PDL_K, 1, 0, b.da, PDL_K, b.dsa,
                                          b.db, PDL_K, b.dsb, b.dd, N, NULL, 0};
        dinf__fp8_launch_plan plan;
        dinf__fp8_plan(&gp, sms, DINF__FP8_KERNEL_FAST, &plan);
        cr_log_info("%s on %d SMs: %dx%d, %d stages, cluster %d, split %d, grid %u of %lld tiles",
                    what, sms, plan.config.block_m, plan.config.block_n, plan.config.stages,
                    plan.config.cluster, plan.config.split_k, plan.grid, plan.config.tiles);
        if (sms == 132) /* H100/H200/H800 SXM: the case this test is for */
            cr_assert(plan.config.block_m == 256 && plan.config.block_n == 128 &&
                          plan.config.cluster == 2 && plan.config.split_k == 1 &&
                          plan.grid == 132,
                      "%s: the heuristic no longer picks BLOCK_M 256, multicast, a full grid "
                      "(%dx%d cluster %d split %d grid %u): pick another shape",
                      what, plan.config.block_m, plan.config.block_n, plan.config.cluster,
                      plan.config.split_k, plan.grid);
        else
            /* info, not warn: Criterion exits 1 after a warning, all tests passed */
            cr_log_info("%d SMs: the shape was chosen for 132 (this device gets %dx%d cluster "
                        "%d); the rounds still run", sms, plan.config.block_m,
                        plan.config.block_n, plan.config.cluster);
        pdl_run_rounds(&b, what);
        pdl_free(&b);
    }
    unsetenv("DINF_FP8_GEMM_PDL");
}

Test(gemm_gpu, pdl_gemm_in_a_graph_capture_is_a_programmatic_edge_and_replays) {
    /* Captured into a CUDA graph, each PDL launch becomes a programmatic
     * edge: the B quantize -> GEMM 1, GEMM 1 -> GEMM 2 (none with
     * DINF_FP8_GEMM_PDL=0); the graph replays and matches the CPU. */
    const char *const settings[] = {"1", "0"};
    for (int si = 0; si < 2; si++) {
        cr_assert_eq(setenv("DINF_FP8_GEMM_PDL", settings[si], 1), 0);
        pdl_bufs b;
        pdl_setup(&b, 128, 1, 4242 + (uint64_t)si);
        cudaStream_t stream;
        CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
        /* first call outside the capture (compile and load) */
        pdl_enqueue_round(&b, 0, &exec);
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaMemset(b.dd, POISON_BYTE, (size_t)(b.m * PDL_N) * 2));
        CUDA_OK(cudaMemset(b.dd2, POISON_BYTE, (size_t)(b.m * PDL_N) * 2));
        CUDA_OK(cudaMemset(b.da, 0x7F, (size_t)(b.m * PDL_K)));
        CUDA_OK(cudaMemset(b.db, 0x7F, (size_t)PDL_N * PDL_K));
        CUDA_OK(cudaDeviceSynchronize());
        cudaGraph_t graph;
        cudaGraphExec_t instance;
        CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        pdl_enqueue_round(&b, 0, &exec);
        CUDA_OK(cudaStreamEndCapture(stream, &graph));
        size_t edges = 0;
        CUDA_OK(cudaGraphGetEdges(graph, NULL, NULL, NULL, &edges));
        cr_assert_gt(edges, 0);
        cudaGraphNode_t *from = calloc(edges, sizeof *from), *to = calloc(edges, sizeof *to);
        cudaGraphEdgeData *data = calloc(edges, sizeof *data);
        cr_assert(from && to && data);
        CUDA_OK(cudaGraphGetEdges(graph, from, to, data, &edges));
        int programmatic = 0;
        for (size_t e = 0; e < edges; e++)
            if (data[e].type == cudaGraphDependencyTypeProgrammatic) {
                programmatic++;
                cr_log_info("PDL=%s: programmatic edge, from port %u", settings[si],
                            (unsigned)data[e].from_port);
            }
        cr_assert_eq(programmatic, si == 0 ? 2 : 0, "PDL=%s: %d programmatic edges of %zu",
                     settings[si], programmatic, edges);
        free(from), free(to), free(data);
        CUDA_OK(cudaGraphInstantiate(&instance, graph, 0));
        CUDA_OK(cudaGraphLaunch(instance, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        pdl_check_rounds(&b, 0, 1, si == 0 ? "graph PDL=1" : "graph PDL=0");
        CUDA_OK(cudaGraphExecDestroy(instance));
        CUDA_OK(cudaGraphDestroy(graph));
        CUDA_OK(cudaStreamDestroy(stream));
        pdl_free(&b);
    }
    unsetenv("DINF_FP8_GEMM_PDL");
}

/* Programmatic edges of a captured graph (counted), the graph instantiated. */
static int count_programmatic_edges(cudaGraph_t graph) {
    size_t edges = 0;
    CUDA_OK(cudaGraphGetEdges(graph, NULL, NULL, NULL, &edges));
    cudaGraphNode_t *from = calloc(edges + 1, sizeof *from), *to = calloc(edges + 1, sizeof *to);
    cudaGraphEdgeData *data = calloc(edges + 1, sizeof *data);
    cr_assert(from && to && data);
    CUDA_OK(cudaGraphGetEdges(graph, from, to, data, &edges));
    int programmatic = 0;
    for (size_t e = 0; e < edges; e++)
        programmatic += data[e].type == cudaGraphDependencyTypeProgrammatic;
    free(from), free(to), free(data);
    return programmatic;
}

Test(gemm_gpu, pdl_gemm_captured_after_a_memset_or_a_join_gets_an_ordinary_edge) {
    /* A programmatic edge joins two kernel nodes only: captured right after
     * a memset (case 0) or after a join of two branches (case 1), GEMM 1 is
     * launched without the PDL attribute (an ordinary, full dependency);
     * GEMM 2, right after GEMM 1, keeps its programmatic edge. The capture
     * must survive, and the graph replay match the CPU. */
    cr_assert_eq(setenv("DINF_FP8_GEMM_PDL", "1", 1), 0);
    for (int kind = 0; kind < 2; kind++) {
        pdl_bufs b;
        pdl_setup(&b, 128, 1, 5151 + (uint64_t)kind);
        cudaStream_t stream, side;
        cudaEvent_t fork, join;
        CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        CUDA_OK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
        CUDA_OK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
        CUDA_OK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
        dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
        pdl_enqueue_round(&b, 0, &exec); /* compile and load outside the capture */
        CUDA_OK(cudaStreamSynchronize(stream));
        const int64_t m = b.m;
        uint8_t *a = b.da, *bq = b.db;
        float *sa = b.dsa, *sb = b.dsb;
        cudaGraph_t graph;
        cudaGraphExec_t instance;
        CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        DINF_OK(dinf_fp8_quantize(b.dx, DINF_DTYPE_FLOAT32, m, PDL_K, PDL_K, 1, a, PDL_K,
                                  b.sa_rows, &exec));
        DINF_OK(dinf_fp8_scale_layout_mn_major(b.sa_rows, m, PDL_KB, sa, NULL, &exec));
        DINF_OK(dinf_fp8_quantize(b.dy, DINF_DTYPE_FLOAT32, PDL_N, PDL_K, PDL_K, 128, bq, PDL_K,
                                  sb, &exec));
        if (kind == 0) {
            CUDA_OK(cudaMemsetAsync(b.dd, POISON_BYTE, (size_t)(m * PDL_N) * 2, stream));
        } else {
            CUDA_OK(cudaEventRecord(fork, stream));
            CUDA_OK(cudaStreamWaitEvent(side, fork, 0));
            CUDA_OK(cudaMemsetAsync(b.dd2, POISON_BYTE, (size_t)(m * PDL_N) * 2, side));
            CUDA_OK(cudaEventRecord(join, side));
            CUDA_OK(cudaStreamWaitEvent(stream, join, 0));
        }
        DINF_OK(dinf_fp8_gemm_nt(m, PDL_N, PDL_K, a, PDL_K, sa, bq, PDL_K, sb, b.dd, PDL_N,
                                 &exec));
        DINF_OK(dinf_fp8_gemm_nt(m, PDL_N, PDL_K, a, PDL_K, pdl_scales2(&b, 0, 0), bq, PDL_K,
                                 pdl_scales2(&b, 0, 1), b.dd2, PDL_N, &exec));
        CUDA_OK(cudaStreamEndCapture(stream, &graph));
        const int programmatic = count_programmatic_edges(graph);
        /* The producers' kernels and GEMM 1 -> GEMM 2; B's quantize -> GEMM 1
         * is not there (a memset or a join sits between them). */
        cr_assert_eq(programmatic, 1, "%s: %d programmatic edges, want 1 (GEMM 1 -> GEMM 2)",
                     kind == 0 ? "after a memset" : "after a join", programmatic);
        CUDA_OK(cudaMemset(b.dd, POISON_BYTE, (size_t)(m * PDL_N) * 2));
        CUDA_OK(cudaMemset(b.dd2, POISON_BYTE, (size_t)(m * PDL_N) * 2));
        CUDA_OK(cudaMemset(b.da, 0x7F, (size_t)(m * PDL_K)));
        CUDA_OK(cudaGraphInstantiate(&instance, graph, 0));
        CUDA_OK(cudaGraphLaunch(instance, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        pdl_check_rounds(&b, 0, 1, kind == 0 ? "graph after a memset" : "graph after a join");
        CUDA_OK(cudaGraphExecDestroy(instance));
        CUDA_OK(cudaGraphDestroy(graph));
        CUDA_OK(cudaEventDestroy(fork));
        CUDA_OK(cudaEventDestroy(join));
        CUDA_OK(cudaStreamDestroy(side));
        CUDA_OK(cudaStreamDestroy(stream));
        pdl_free(&b);
    }
    unsetenv("DINF_FP8_GEMM_PDL");
}

/* -------------------------------------------------------- bad input -- */

Test(gemm_gpu, bad_input_on_the_device_path_is_rejected_before_any_launch) {
    enum { M = 128, N = 128, K = 256 };
    uint8_t *a = dmalloc(M * K + 64), *b = dmalloc(N * K + 64);
    float *sa = dmalloc(2 * M * 4 + 64), *sb = dmalloc(8 * 4 + 64);
    uint16_t *d = dmalloc(M * N * 2 + 64);
    int32_t *idx = dmalloc(M * 4 + 64);
    CUDA_OK(cudaMemset(d, POISON_BYTE, M * N * 2 + 64));
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, NULL);
    cr_assert_eq(dinf_fp8_gemm_nt(M, N, K, a + 1, K, sa, b, K, sb, d, N, &exec),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "a=") && strstr(dinf_last_error(), "16-byte aligned"),
              "%s", dinf_last_error());
    cr_assert_eq(dinf_fp8_gemm_nt(M, N, K - 8, a, K - 8, sa, b, K, sb, d, N, &exec),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "lda=248 is not a multiple of 16"), "%s",
              dinf_last_error());
    cr_assert_eq(dinf_fp8_gemm_nt(M, N - 4, K, a, K, sa, b, K, sb, d, N - 4, &exec),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "ldd=124 is not a multiple of 8"), "%s",
              dinf_last_error());
    cr_assert_eq(dinf_fp8_gemm_nt(M, N, 0, a, 0, sa, b, 0, sb, d, N, &exec),
                 DINF_STATUS_UNSUPPORTED);
    cr_assert(strstr(dinf_last_error(), "k=0"), "%s", dinf_last_error());
    cr_assert_eq(dinf_fp8_m_grouped_gemm_nt_contiguous(M, N, K, 1, a, K, sa, b, K, sb, d, N,
                                                       (int32_t *)((char *)idx + 2), &exec),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "m_indices="), "%s", dinf_last_error());
    exec.device = 4096;
    cr_assert_eq(dinf_fp8_gemm_nt(M, N, K, a, K, sa, b, K, sb, d, N, &exec),
                 DINF_STATUS_INVALID_ARGUMENT);
    CUDA_OK(cudaDeviceSynchronize());
    uint16_t *hd = malloc(M * N * 2);
    CUDA_OK(cudaMemcpy(hd, d, M * N * 2, cudaMemcpyDeviceToHost));
    for (int i = 0; i < M * N; i++)
        cr_assert_eq(hd[i], POISON, "a rejected call wrote d[%d]", i);
    free(hd);
    cudaFree(a), cudaFree(b), cudaFree(sa), cudaFree(sb), cudaFree(d), cudaFree(idx);
}

/* ------------------------------------------------- weight-gradient GEMM -- */

/*
 * One wgrad problem (dinf_fp8_wgrad_gemm_nt, or the k-grouped form when
 * num_ks > 1): x [m][k_g], y [n][k_g] per group quantized 1x128 on the CPU
 * (the same bytes go to both paths); d starts from random values, its padding
 * columns poisoned (float32 NaN 0x7fbadbad). Checks: the GPU's added term
 * against the CPU oracle's (calc_diff < 1e-4, every element within
 * ORACLE_ELEM_CHECK), against the unquantized product from the f32 reference
 * kernel (calc_diff < 1e-3), padding untouched; k_g == 0 groups unchanged.
 */
#define POISON_F32_BITS 0x7fbadbadu
static void run_wgrad(const char *what, int64_t m, int64_t n, const int64_t *ks, int num_ks,
                      int64_t ldd, const dinf__fp8_config *forced, uint64_t seed) {
    const int grouped = num_ks > 1;
    int64_t k_sum = 0, kb_sum = 0;
    for (int g = 0; g < num_ks; g++)
        k_sum += ks[g], kb_sum += cdiv(ks[g], 128);
    const int64_t am = cdiv(m, 4) * 4, an = cdiv(n, 4) * 4;
    const int64_t d_count = num_ks * m * ldd;
    uint8_t *ha = malloc((size_t)(m * k_sum + 1)), *hb = malloc((size_t)(n * k_sum + 1));
    float *hsa = calloc((size_t)(am * kb_sum + 1), 4), *hsb = calloc((size_t)(an * kb_sum + 1), 4);
    float *x = malloc((size_t)(m * k_sum + 1) * 4), *y = malloc((size_t)(n * k_sum + 1) * 4);
    float *d0 = malloc((size_t)d_count * 4), *hc = malloc((size_t)d_count * 4);
    float *hg = malloc((size_t)d_count * 4), *href = malloc((size_t)(m * n + 1) * 4);
    float *rows = malloc((size_t)((m > n ? m : n) * 4 + 4) * cdiv(k_sum > 0 ? k_sum : 1, 128));
    cr_assert(ha && hb && hsa && hsb && x && y && d0 && hc && hg && href && rows);
    uint64_t s = seed | 1;
    /* group by group: x_g [m][k_g] then quantized in place of its slice */
    int64_t k_off = 0, kb_off = 0;
    for (int g = 0; g < num_ks; g++) {
        const int64_t kg = ks[g], kbg = cdiv(kg, 128);
        float *xg = x + m * k_off, *yg = y + n * k_off;
        for (int64_t i = 0; i < m * kg; i++)
            xg[i] = rng_float(&s) * ((i % 13) == 0 ? 20.0f : 1.0f);
        for (int64_t i = 0; i < n * kg; i++)
            yg[i] = rng_float(&s);
        if (kg > 0) {
            DINF_OK(dinf_fp8_quantize(xg, DINF_DTYPE_FLOAT32, m, kg, kg, 1, ha + m * k_off, kg, rows,
                                      NULL));
            DINF_OK(dinf_fp8_scale_layout_mn_major(rows, m, kbg, hsa + am * kb_off, NULL, NULL));
            DINF_OK(dinf_fp8_quantize(yg, DINF_DTYPE_FLOAT32, n, kg, kg, 1, hb + n * k_off, kg, rows,
                                      NULL));
            DINF_OK(dinf_fp8_scale_layout_mn_major(rows, n, kbg, hsb + an * kb_off, NULL, NULL));
        }
        k_off += kg, kb_off += kbg;
    }
    for (int64_t i = 0; i < d_count; i++) {
        if (i % ldd < n) {
            d0[i] = rng_float(&s) * 4.0f;
        } else {
            const uint32_t u = POISON_F32_BITS;
            memcpy(&d0[i], &u, 4);
        }
    }
    uint8_t *da = dmalloc((size_t)(m * k_sum + 16)), *db = dmalloc((size_t)(n * k_sum + 16));
    float *dsa = dmalloc((size_t)(am * kb_sum + 4) * 4), *dsb = dmalloc((size_t)(an * kb_sum + 4) * 4);
    float *dd = dmalloc((size_t)d_count * 4);
    CUDA_OK(cudaMemcpy(da, ha, (size_t)(m * k_sum), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(db, hb, (size_t)(n * k_sum), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dsa, hsa, (size_t)(am * kb_sum) * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dsb, hsb, (size_t)(an * kb_sum) * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dd, d0, (size_t)d_count * 4, cudaMemcpyHostToDevice));
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
    if (grouped) {
        DINF_OK(dinf_fp8_k_grouped_wgrad_gemm_nt(num_ks, m, n, ks, da, dsa, db, dsb, dd, &exec));
    } else if (forced) {
        const dinf__place place = {DINF_EXEC_CUDA, 0, 1, (dinf_stream_t)stream};
        const dinf__fp8_gpu_problem gp = {NORMAL, m, n, ks[0], 1, 0, da, ks[0], dsa, db, ks[0], dsb,
                                          dd, ldd, NULL, 1};
        DINF_OK(dinf__fp8_gemm_cuda_config("test", &place, &gp, forced));
    } else {
        DINF_OK(dinf_fp8_wgrad_gemm_nt(m, n, ks[0], da, ks[0], dsa, db, ks[0], dsb, dd, ldd, &exec));
    }
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(hg, dd, (size_t)d_count * 4, cudaMemcpyDeviceToHost));
    memcpy(hc, d0, (size_t)d_count * 4);
    if (grouped)
        DINF_OK(dinf_fp8_k_grouped_wgrad_gemm_nt(num_ks, m, n, ks, ha, hsa, hb, hsb, hc, NULL));
    else
        DINF_OK(dinf_fp8_wgrad_gemm_nt(m, n, ks[0], ha, ks[0], hsa, hb, ks[0], hsb, hc, ldd, NULL));

    k_off = 0;
    float *dx = dmalloc((size_t)(m * k_sum + 1) * 4), *dy = dmalloc((size_t)(n * k_sum + 1) * 4);
    float *dref = dmalloc((size_t)(m * n + 1) * 4);
    CUDA_OK(cudaMemcpy(dx, x, (size_t)(m * k_sum) * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dy, y, (size_t)(n * k_sum) * 4, cudaMemcpyHostToDevice));
    for (int g = 0; g < num_ks; g++) {
        const int64_t kg = ks[g];
        const float *G = hg + g * m * ldd, *C = hc + g * m * ldd, *D0 = d0 + g * m * ldd;
        for (int64_t i = 0; i < m * ldd; i++) /* padding untouched; k_g == 0 leaves d as it is */
            if (i % ldd >= n || kg == 0)
                cr_assert(memcmp(&G[i], &D0[i], 4) == 0, "%s: group %d element %lld changed", what,
                          g, (long long)i);
        if (kg == 0) {
            k_off += kg;
            continue;
        }
        ref_gemm(dx + m * k_off, kg, dy + n * k_off, kg, dref, n, (int)m, (int)n, (int)kg, stream);
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaMemcpy(href, dref, (size_t)(m * n) * 4, cudaMemcpyDeviceToHost));
        diff_acc oracle = {0, 0}, unq = {0, 0};
        elem_check ec = ORACLE_ELEM_CHECK;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                elem_first(&ec, (double)C[i * ldd + j] - D0[i * ldd + j]);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                const double got = (double)G[i * ldd + j] - D0[i * ldd + j];
                const double want = (double)C[i * ldd + j] - D0[i * ldd + j];
                diff_add(&oracle, got, want);
                diff_add(&unq, got, href[i * n + j]);
                elem_second(&ec, (long long)(i * ldd + j), got, want);
            }
        const double od = diff_value(&oracle), ud = diff_value(&unq);
        cr_log_info("%s group %d (%lldx%lldx%lld): calc_diff vs the CPU oracle %.3g, vs unquantized "
                    "%.3g, worst element %.3g bounds",
                    what, g, (long long)m, (long long)n, (long long)kg, od, ud, ec.worst);
        cr_assert_lt(od, 1e-4, "%s group %d: calc_diff=%g against the CPU implementation", what, g, od);
        cr_assert_lt(ud, 1e-3, "%s group %d: calc_diff=%g against the unquantized product", what, g, ud);
        cr_assert_leq(ec.worst, 1.0, "%s group %d: d[%lld][%lld] GPU %g, CPU %g: %.3g bounds apart",
                      what, g, ec.worst_index / ldd, ec.worst_index % ldd, ec.worst_got,
                      ec.worst_want, ec.worst);
        k_off += kg;
    }
    CUDA_OK(cudaStreamDestroy(stream));
    cudaFree(da), cudaFree(db), cudaFree(dsa), cudaFree(dsb), cudaFree(dd), cudaFree(dx),
        cudaFree(dy), cudaFree(dref);
    free(ha), free(hb), free(hsa), free(hsb), free(x), free(y), free(d0), free(hc), free(hg),
        free(href), free(rows);
}

Test(gemm_gpu, wgrad_matches_the_cpu_oracle_and_the_unquantized_product) {
    /* DeepGEMM v1.3's wgrad shapes at K = 4096 (two), odd tails with padded
     * rows of D, small m (k: multiples of 16, the rows of A and B being dense) */
    const int64_t shapes[][4] = {{7168, 2112, 4096, 2112}, {2048, 7168, 4096, 7168},
                                 {129, 250, 528, 253},     {64, 7168, 256, 7168},
                                 {33, 40, 16, 41}};
    for (int i = 0; i < 5; i++) {
        char what[64];
        snprintf(what, sizeof what, "wgrad %lldx%lldx%lld", (long long)shapes[i][0],
                 (long long)shapes[i][1], (long long)shapes[i][2]);
        run_wgrad(what, shapes[i][0], shapes[i][1], &shapes[i][2], 1, shapes[i][3], NULL,
                  77 + (uint64_t)i);
    }
    /* every block_m x block_n of the kernel, and 1- and 3-stage rings */
    for (int bm = 64; bm <= 128; bm *= 2)
        for (int bn = 16; bn <= 128; bn *= 2)
            for (int st = 1; st <= 3; st += 2) {
                dinf__fp8_config c = dinf__fp8_heuristic_wgrad(bm == 64 ? 64 : 4096, 4096, 4096, 132);
                c.block_n = bn;
                c.stages = st;
                c.smem_bytes = DINF_FP8_WGRAD_SMEM_BYTES(bm, bn, st);
                char what[64];
                snprintf(what, sizeof what, "wgrad forced %dx%d/%d", bm, bn, st);
                const int64_t k = 400; /* 3 blocks and 16: lda = k, a multiple of 16 */
                run_wgrad(what, 200, 300, &k, 1, 301, &c, 900 + (uint64_t)(bm + bn + st));
            }
}

Test(gemm_gpu, k_grouped_wgrad_matches_the_cpu_oracle) {
    const int64_t ks[] = {512, 0, 128, 1024, 48, 256};
    run_wgrad("k-grouped wgrad", 7168 / 4, 2048, ks, 6, 2048, NULL, 4242);
    const int64_t ks2[] = {4096, 4096, 8192, 0};
    run_wgrad("k-grouped wgrad dsv3", 2048, 7168, ks2, 4, 7168, NULL, 4243);
}
#endif
