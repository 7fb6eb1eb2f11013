/*
 * FP8 GEMM (1x128 / 128x128 scaling) on the CPU: the DeepSeek-V3 normal
 * shapes at M = 128 (deepgemm.md section 4.2). TFLOPS = 2*M*N*K / t and
 * GB/s = (M*K + K*N + 2*M*N) / t, the reference's formulas (scales ignored).
 * Timed by the wall clock. Inputs are random e4m3 codes with random scales, prepared once at
 * registration.
 *
 * Also the JIT compile time of each distinct Hopper kernel the heuristic picks
 * for the DeepSeek-V3 shapes (gemm/jit/compile/...): one cold NVRTC compile for
 * sm_90a per row (a fresh disk cache, checked to be a real compile), no GPU
 * needed. Upstream reports about 0.4 s per kernel with precompiled headers.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <deepinfra.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct gemm_case {
    int64_t m, n, k, aligned_m;
    uint8_t *a, *b;
    float *sa, *sb;
    uint16_t *d;
    float *df; /* the weight-gradient rows: float32 d, accumulated into */
    char name[64];
} gemm_case;

/* Wall-clock seconds (manual time): the work runs on several threads, so the
 * calling thread's CPU time would overstate the rates. */
static double run_gemm(void *arg) {
    gemm_case *c = arg;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dinf_status st =
        c->df ? dinf_fp8_wgrad_gemm_nt(c->m, c->n, c->k, c->a, c->k, c->sa, c->b, c->k, c->sb,
                                       c->df, c->n, NULL)
              : dinf_fp8_gemm_nt(c->m, c->n, c->k, c->a, c->k, c->sa, c->b, c->k, c->sb, c->d,
                                 c->n, NULL);
    if (st != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
}

static uint64_t next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* wgrad 0: the 1x128/128x128 GEMM (bf16 out); 1: the weight-gradient GEMM
 * (1x128 on both operands, float32 d += ; its bytes count d twice: read and
 * written). */
static void add_case(int64_t m, int64_t n, int64_t k, int wgrad) {
    gemm_case *c = calloc(1, sizeof *c); /* lives until exit: the shim keeps the pointer */
    if (!c)
        return;
    const int64_t kb = (k + 127) / 128, nb = wgrad ? (n + 3) / 4 * 4 : (n + 127) / 128;
    c->m = m, c->n = n, c->k = k, c->aligned_m = (m + 3) / 4 * 4;
    c->a = malloc((size_t)(m * k));
    c->b = malloc((size_t)(n * k));
    c->sa = malloc((size_t)(kb * c->aligned_m) * sizeof(float));
    c->sb = malloc((size_t)(nb * kb) * sizeof(float));
    if (wgrad)
        c->df = calloc((size_t)(m * n), sizeof(float));
    else
        c->d = malloc((size_t)(m * n) * 2);
    if (!c->a || !c->b || !c->sa || !c->sb || !(c->d || c->df)) {
        fprintf(stderr, "bench_gemm: cannot allocate m=%lld n=%lld k=%lld\n", (long long)m,
                (long long)n, (long long)k);
        return;
    }
    uint64_t s = (uint64_t)(n * 31 + k);
    for (int64_t i = 0; i < m * k; i++)
        c->a[i] = (uint8_t)(next(&s) & 0x7e) | (uint8_t)(next(&s) & 0x80); /* finite codes */
    for (int64_t i = 0; i < n * k; i++)
        c->b[i] = (uint8_t)(next(&s) & 0x7e) | (uint8_t)(next(&s) & 0x80);
    for (int64_t i = 0; i < kb * c->aligned_m; i++)
        c->sa[i] = 1e-3f * (float)(1 + next(&s) % 8);
    for (int64_t i = 0; i < nb * kb; i++)
        c->sb[i] = 1e-3f * (float)(1 + next(&s) % 8);
    snprintf(c->name, sizeof c->name, "gemm/cpu/%s/m%lld_n%lld_k%lld",
             wgrad ? "fp8_wgrad_nt" : "fp8_nt", (long long)m, (long long)n, (long long)k);
    bench_spec spec = {.name = c->name,
                       .run = run_gemm,
                       .arg = c,
                       .manual_time = 1,
                       .flops = 2.0 * (double)m * (double)n * (double)k,
                       .bytes = (double)(m * k + k * n + (wgrad ? 8 : 2) * m * n),
                       .label = wgrad ? "CPU oracle, all cores (float32 d +=)"
                                      : "CPU oracle, all cores",
                       .unit = "ms"};
    bench_register(&spec);
}

/* ---- JIT compile time --------------------------------------------------- */

typedef struct jit_case {
    dinf_jit_kernel_config config;
    char name[160];
} jit_case;

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One cold compile: a fresh, empty disk cache, and the compile counter must
 * move (a kernel already compiled in this process would be a memory hit). */
static double run_jit_compile(void *arg) {
    jit_case *c = arg;
    char dir[] = "/tmp/dinf-bench-jit-XXXXXX";
    if (!mkdtemp(dir)) {
        bench_set_error("mkdtemp failed");
        return -1;
    }
    char previous[4096];
    size_t needed = 0;
    int had_dir = dinf_jit_get_cache_dir(previous, sizeof previous, &needed) == DINF_STATUS_OK;
    dinf_jit_stats before = DINF_JIT_STATS_INIT, after = DINF_JIT_STATS_INIT;
    double seconds = -1;
    if (dinf_jit_set_cache_dir(dir) != DINF_STATUS_OK || dinf_jit_get_stats(&before) != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        goto done;
    }
    const double t0 = seconds_now();
    if (dinf_jit_precompile(&c->config, 1, "sm_90a") != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        goto done;
    }
    seconds = seconds_now() - t0;
    if (dinf_jit_get_stats(&after) != DINF_STATUS_OK || after.compiles != before.compiles + 1) {
        bench_set_error("the kernel was already compiled in this process: not a cold compile");
        seconds = -1;
    }
done:
    dinf_jit_set_cache_dir(had_dir ? previous : NULL);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_gemm: could not remove %s\n", dir);
    return seconds;
}

static int jit_seen(const dinf_jit_kernel_config *c, jit_case **cases, int count) {
    for (int i = 0; i < count; i++)
        if (cases[i]->config.num_params == c->num_params &&
            memcmp(cases[i]->config.params, c->params, sizeof c->params[0] * (size_t)c->num_params) == 0 &&
            strcmp(cases[i]->config.name, c->name) == 0)
            return 1;
    return 0;
}

/* The distinct configs the heuristic picks for the shapes bench_gemm_gpu.c
 * runs (132 SMs, the H200's count), registered before the GPU rows so that
 * none of them is in the in-memory cache yet. */
static void add_jit_cases(void) {
    static const int64_t normal_nk[][2] = {{2112, 7168}, {24576, 1536}, {32768, 512},
                                           {7168, 16384}, {4096, 7168}, {7168, 2048}};
    static const int64_t normal_m[] = {64, 128, 4096};
    static const int64_t grouped[][5] = {/* form, groups, m per group, n, k */
                                         {1, 4, 8192, 4096, 7168}, {1, 4, 8192, 7168, 2048},
                                         {1, 8, 4096, 4096, 7168}, {1, 8, 4096, 7168, 2048},
                                         {2, 1, 1024, 4096, 7168}, {2, 1, 1024, 7168, 2048},
                                         {2, 2, 512, 4096, 7168},  {2, 2, 512, 7168, 2048},
                                         {2, 4, 256, 4096, 7168},  {2, 4, 256, 7168, 2048}};
    enum { MAX_CASES = 64 };
    static jit_case *cases[MAX_CASES];
    int count = 0;
    int64_t shapes[64][5];
    int num_shapes = 0;
    for (size_t i = 0; i < sizeof normal_m / sizeof normal_m[0]; i++)
        for (size_t j = 0; j < sizeof normal_nk / sizeof normal_nk[0]; j++) {
            const int64_t row[5] = {0, 1, normal_m[i], normal_nk[j][0], normal_nk[j][1]};
            memcpy(shapes[num_shapes++], row, sizeof row);
        }
    for (size_t i = 0; i < sizeof grouped / sizeof grouped[0]; i++)
        memcpy(shapes[num_shapes++], grouped[i], sizeof grouped[i]);
    /* the weight-gradient kernel on DeepGEMM v1.3's wgrad shapes (m, n; its
     * choice does not depend on k): form 3 */
    static const int64_t wgrad_mn[][2] = {{7168, 2112}, {1536, 24576}, {512, 32768},
                                          {16384, 7168}, {7168, 4096}, {2048, 7168}};
    for (size_t i = 0; i < sizeof wgrad_mn / sizeof wgrad_mn[0]; i++) {
        const int64_t row[5] = {3, 1, wgrad_mn[i][0], wgrad_mn[i][1], 4096};
        memcpy(shapes[num_shapes++], row, sizeof row);
    }
    for (int i = 0; i < num_shapes && count < MAX_CASES; i++) {
        const int64_t *sh = shapes[i];
        /* contiguous: m is the sum over the groups */
        const int64_t m = sh[0] == 1 ? sh[1] * sh[2] : sh[2];
        dinf_jit_kernel_config config = DINF_JIT_KERNEL_CONFIG_INIT;
        if (dinf_fp8_gemm_kernel_config((int32_t)sh[0], m, sh[3], sh[4], sh[1], 132, &config) !=
            DINF_STATUS_OK) {
            fprintf(stderr, "bench_gemm: %s\n", dinf_last_error());
            continue;
        }
        if (jit_seen(&config, cases, count))
            continue;
        jit_case *c = calloc(1, sizeof *c); /* lives until exit: the shim keeps the pointer */
        if (!c)
            return;
        c->config = config;
        int at = snprintf(c->name, sizeof c->name, "gemm/jit/compile/%s", config.name);
        for (int p = 0; p < config.num_params && at < (int)sizeof c->name; p++)
            at += snprintf(c->name + at, sizeof c->name - (size_t)at, "%s%lld", p ? "_" : "/",
                           (long long)config.params[p]);
        cases[count++] = c;
        bench_spec spec = {.name = c->name,
                           .run = run_jit_compile,
                           .arg = c,
                           .manual_time = 1,
                           .label = "cold NVRTC compile for sm_90a (params: the template's)",
                           .unit = "ms",
                           .iterations = 1};
        bench_register(&spec);
    }
}

void bench_register_gemm_gpu(void); /* bench_gemm_gpu.c: the Hopper kernels + cuBLASLt */

void bench_register_gemm(void) {
    add_jit_cases();
    bench_register_gemm_gpu();
    static const int64_t shapes[][2] = {{2112, 7168}, {24576, 1536}, {32768, 512},
                                        {7168, 16384}, {4096, 7168}, {7168, 2048}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        add_case(128, shapes[i][0], shapes[i][1], 0);
    /* the weight gradient of the first two: dW [n][k] += dy^T x over 4096 tokens */
    add_case(2112, 7168, 4096, 1);
    add_case(1536, 512, 4096, 1);
}
