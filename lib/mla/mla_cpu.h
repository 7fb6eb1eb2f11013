/*
 * The CPU decode's two products (mla.c's run_task), as vector kernels in
 * each instruction set of internal.h's dinf__isa. Every variant gives the
 * same bits (mla_cpu.c says why, and the one exception: NaN signs and
 * payloads where two NaNs meet);
 * tests/mla/test_mla_cpu.c runs each one this machine has and compares. Not
 * installed.
 */
#ifndef DINF_MLA_CPU_H
#define DINF_MLA_CPU_H

#include <stdint.h>

#include "deepinfra/mla.h"

/* Rows and keys the kernels may compute past the caller's counts: q, s, acc,
 * alpha and p hold rows up to a multiple of this, k keys up to one. */
#define DINF__MLA_CPU_PAD 4

typedef struct dinf__mla_cpu_kernels {
    const char *isa;
    /* s[r * 64 + j] = q_r . k_j for r < rows, j < keys, both rounded up to
     * DINF__MLA_CPU_PAD (the padding rows and keys must be readable; their
     * scores are not used): q rows and k rows are 576 floats apart. Each dot is a 16-lane sum, lane l adding
     * q[d] * k[d] for d = l, l + 16, ... in order, then the lanes folded
     * in halves: (l, l + 8), then (l, l + 4), (l, l + 2), (0, 1). */
    void (*qk)(const float *q, int32_t rows, const float *k, int32_t keys, float *s);
    /* acc[r][d] = alpha[r] * acc[r][d] + p[r][0] * k[0][d] + ... + p[r][nv - 1] * k[nv - 1][d],
     * added left to right, for r < rows rounded up to DINF__MLA_CPU_PAD and
     * d < 512; acc rows are 512 floats apart, p rows 64, k rows 576. */
    void (*pv)(float *acc, const float *alpha, const float *p, int32_t rows, const float *k,
               int32_t nv);
    /* dst[i] = dinf__mla_fp8_value(codes[i], scale) (mla_hd.h: the e4m3
     * value times scale, rounded to bf16) for i < n, n a multiple of 16 */
    void (*dequant)(const unsigned char *codes, int32_t n, float scale, float *dst);
    /* dst[i] = the bf16 value at src + 2 i (any alignment) for i < n, n a
     * multiple of 16 */
    void (*widen)(const unsigned char *src, int32_t n, float *dst);
} dinf__mla_cpu_kernels;

/* The kernels of one instruction set (dinf__isa); an ISA this build has no
 * variant for (not x86-64) gives the BASE kernels. */
const dinf__mla_cpu_kernels *dinf__mla_cpu_kernels_for(int isa);

#endif /* DINF_MLA_CPU_H */
