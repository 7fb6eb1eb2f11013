/*
 * The CPU FP8 GEMM's k-block kernel (gemm.c: tile_block), one variant per
 * vector instruction set of internal.h's dinf__isa, exposed for the tests
 * (tests/gemm/test_gemm_cpu.c compares each with a scalar replay). Not
 * installed.
 */
#ifndef DINF_GEMM_CPU_H
#define DINF_GEMM_CPU_H

#include <stdint.h>

#define DINF__GEMM_CPU_BLOCK_K 128 /* floats between rows of a */
#define DINF__GEMM_CPU_TILE_N 128  /* floats between rows of bt and of total */
#define DINF__GEMM_CPU_PAD_M 8     /* rows_pad is a multiple of this */
#define DINF__GEMM_CPU_PAD_N 32    /* cols_pad is a multiple of this */

/* For every r < rows_pad and j < cols_pad: c = a[r][0] * bt[0][j] + ... +
 * a[r][kk - 1] * bt[kk - 1][j] (float32, added left to right from 0), then
 * total[r][j] += row_scale[r] * c. a is [rows][BLOCK_K], bt [kk][TILE_N],
 * total [rows][TILE_N]; nothing else is read or written. */
typedef void (*dinf__gemm_tile_block_fn)(const float *restrict a, const float *restrict bt,
                                         int64_t kk, int64_t rows_pad, int64_t cols_pad,
                                         const float *restrict row_scale, float *restrict total);

/* The variant of one instruction set (dinf__isa); a set this build has no
 * variant for (not x86-64) gives the baseline's. */
dinf__gemm_tile_block_fn dinf__gemm_tile_block_for(int isa);

#endif /* DINF_GEMM_CPU_H */
