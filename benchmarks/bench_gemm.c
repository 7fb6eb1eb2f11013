/*
 * FP8 GEMM (1x128 / 128x128 scaling) on the CPU: the DeepSeek-V3 normal
 * shapes at M = 128 (deepgemm.md section 4.2). TFLOPS = 2*M*N*K / t and
 * GB/s = (M*K + K*N + 2*M*N) / t, the reference's formulas (scales ignored).
 * Timed by the wall clock. Inputs are random e4m3 codes with random scales, prepared once at
 * registration.
 */
#define _POSIX_C_SOURCE 199309L
#include "bench.h"

#include <deepinfra.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct gemm_case {
    int64_t m, n, k, aligned_m;
    uint8_t *a, *b;
    float *sa, *sb;
    uint16_t *d;
    char name[64];
} gemm_case;

/* Wall-clock seconds (manual time): the work runs on several threads, so the
 * calling thread's CPU time would overstate the rates. */
static double run_gemm(void *arg) {
    gemm_case *c = arg;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dinf_status st = dinf_fp8_gemm_nt(c->m, c->n, c->k, c->a, c->k, c->sa, c->b, c->k, c->sb,
                                      c->d, c->n, NULL);
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

static void add_case(int64_t m, int64_t n, int64_t k) {
    gemm_case *c = calloc(1, sizeof *c); /* lives until exit: the shim keeps the pointer */
    if (!c)
        return;
    const int64_t kb = (k + 127) / 128, nb = (n + 127) / 128;
    c->m = m, c->n = n, c->k = k, c->aligned_m = (m + 3) / 4 * 4;
    c->a = malloc((size_t)(m * k));
    c->b = malloc((size_t)(n * k));
    c->sa = malloc((size_t)(kb * c->aligned_m) * sizeof(float));
    c->sb = malloc((size_t)(nb * kb) * sizeof(float));
    c->d = malloc((size_t)(m * n) * 2);
    if (!c->a || !c->b || !c->sa || !c->sb || !c->d) {
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
    snprintf(c->name, sizeof c->name, "gemm/cpu/fp8_nt/m%lld_n%lld_k%lld", (long long)m,
             (long long)n, (long long)k);
    bench_spec spec = {.name = c->name,
                       .run = run_gemm,
                       .arg = c,
                       .manual_time = 1,
                       .flops = 2.0 * (double)m * (double)n * (double)k,
                       .bytes = (double)(m * k + k * n + 2 * m * n),
                       .label = "CPU oracle, all cores",
                       .unit = "ms"};
    bench_register(&spec);
}

void bench_register_gemm_gpu(void); /* bench_gemm_gpu.c: the Hopper kernels + cuBLASLt */

void bench_register_gemm(void) {
    bench_register_gemm_gpu();
    static const int64_t shapes[][2] = {{2112, 7168}, {24576, 1536}, {32768, 512},
                                        {7168, 16384}, {4096, 7168}, {7168, 2048}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        add_case(128, shapes[i][0], shapes[i][1]);
}
