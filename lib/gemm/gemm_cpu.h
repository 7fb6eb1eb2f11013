/*
 * The CPU FP8 GEMM's per-k-block kernels (gemm.c), one variant per vector
 * instruction set of internal.h's dinf__isa, exposed for the tests
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
 * total[r][j] += (row_scale[r] * col_scale[j]) * c (each operation rounded
 * on its own). a is [rows][BLOCK_K], bt [kk][TILE_N], col_scale [cols_pad],
 * total [rows][TILE_N]; nothing else is read or written. (The 1x128/128x128
 * GEMMs pass col_scale all 1.0f: row_scale[r] * 1.0f is row_scale[r].) */
typedef void (*dinf__gemm_tile_block_fn)(const float *restrict a, const float *restrict bt,
                                         int64_t kk, int64_t rows_pad, int64_t cols_pad,
                                         const float *restrict row_scale,
                                         const float *restrict col_scale, float *restrict total);

/* A's k block: the rows x kk e4m3 codes src[r * lda + k] (r < rows, k < kk
 * <= BLOCK_K), each decoded exactly as numeric_hd.h's dinf__f32_from_e4m3
 * (same bits, NaNs included) into dst[r * BLOCK_K + k]; nothing else is
 * read or written. */
typedef void (*dinf__gemm_load_a_fn)(const uint8_t *restrict src, int64_t lda, int64_t rows,
                                     int64_t kk, float *restrict dst);

/* B's k block, transposed: column c < cols of the tile is the row of codes
 * src[c * ldb + k] (k < kk <= BLOCK_K); writes bt[k * TILE_N + c] =
 * dinf__f32_from_e4m3(src[c * ldb + k]) for c < cols and +0.0f for cols <= c
 * < cols_pad, for every k < kk (cols <= cols_pad; cols_pad a multiple of 8,
 * at most TILE_N); nothing else is read or written. */
typedef void (*dinf__gemm_load_bt_fn)(const uint8_t *restrict src, int64_t ldb, int64_t cols,
                                      int64_t cols_pad, int64_t kk, float *restrict bt);

typedef struct dinf__gemm_cpu_kernels {
    const char *isa; /* "base", "avx2", "avx512" */
    dinf__gemm_tile_block_fn tile_block;
    dinf__gemm_load_a_fn load_a;
    dinf__gemm_load_bt_fn load_bt;
} dinf__gemm_cpu_kernels;

/* The variants of one instruction set (dinf__isa); a set this build has no
 * variant for (not x86-64) gives the baseline's. */
const dinf__gemm_cpu_kernels *dinf__gemm_cpu_kernels_for(int isa);

#endif /* DINF_GEMM_CPU_H */
