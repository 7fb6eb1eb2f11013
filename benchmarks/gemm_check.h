/*
 * The float64 check of one FP8 GEMM output element from host copies of the
 * inputs, in the library's layouts (include/deepinfra/gemm.h): the GPU
 * benchmark checks the cuBLASLt peer's output with it at sampled elements
 * (benchmarks/bench_gemm_gpu.c), independently of our kernels; a CPU test
 * checks it against the CPU GEMM (tests/gemm/test_gemm_cpu.c). Header-only,
 * plain C, no CUDA.
 */
#ifndef DINF_BENCH_GEMM_CHECK_H
#define DINF_BENCH_GEMM_CHECK_H

#include <math.h>
#include <stdint.h>

enum { GEMM_CHECK_NORMAL = 0, GEMM_CHECK_CONTIGUOUS = 1, GEMM_CHECK_MASKED = 2 };

/* A problem: m rows per group (normal m, contiguous rows per group, masked
 * m_max), groups stacked along the rows of A and D and along B's rows. */
typedef struct gemm_check_shape {
    int form;
    int64_t m, n, k, groups;
} gemm_check_shape;

static inline int64_t gemm_check_kb(const gemm_check_shape *s) { return (s->k + 127) / 128; }
static inline int64_t gemm_check_nsb(const gemm_check_shape *s) { return (s->n + 127) / 128; }
/* The padded row count of a (group's) M-major A-scale block: normal and
 * masked ceil(m/4)*4; contiguous m_sum (a multiple of 128). */
static inline int64_t gemm_check_aligned(const gemm_check_shape *s) {
    return s->form == GEMM_CHECK_CONTIGUOUS ? s->m * s->groups : (s->m + 3) / 4 * 4;
}
/* Floats in the A scales: [kb][aligned] (normal, contiguous) or
 * [groups][kb][aligned] (masked). */
static inline int64_t gemm_check_sa_count(const gemm_check_shape *s) {
    return (s->form == GEMM_CHECK_MASKED ? s->groups : 1) * gemm_check_kb(s) *
           gemm_check_aligned(s);
}
/* Row of A and of D holding row `row` of group g. */
static inline int64_t gemm_check_row(const gemm_check_shape *s, int64_t g, int64_t row) {
    return s->form == GEMM_CHECK_NORMAL ? row : g * s->m + row;
}
/* The scale of A's row `row` of group g for k block b. */
static inline float gemm_check_sa(const gemm_check_shape *s, const float *sa, int64_t g,
                                  int64_t row, int64_t b) {
    const int64_t aligned = gemm_check_aligned(s);
    if (s->form == GEMM_CHECK_MASKED)
        return sa[(g * gemm_check_kb(s) + b) * aligned + row];
    return sa[b * aligned + gemm_check_row(s, g, row)];
}
/* The scale of B's column (row of B) `col` of group g for k block b. */
static inline float gemm_check_sb(const gemm_check_shape *s, const float *sb, int64_t g,
                                  int64_t col, int64_t b) {
    return sb[(g * gemm_check_nsb(s) + col / 128) * gemm_check_kb(s) + b];
}

/*
 * D[g][row][col] in float64: sum over k blocks of a_scale * b_scale * sum of
 * a * b (blockwise = 0: unit scales, the per-tensor peer), from a_row (the k
 * values of A's row, decoded) and b_row (B's row `col` of group g); *mag
 * gets the sum of the terms' magnitudes.
 */
static inline double gemm_check_ref(const gemm_check_shape *s, const float *a_row,
                                    const float *b_row, const float *sa, const float *sb,
                                    int64_t g, int64_t row, int64_t col, int blockwise,
                                    double *mag) {
    double ref = 0, total = 0;
    for (int64_t b = 0; b < gemm_check_kb(s); b++) {
        double part = 0, part_mag = 0;
        for (int64_t i = b * 128; i < s->k && i < b * 128 + 128; i++) {
            part += (double)a_row[i] * b_row[i];
            part_mag += fabs((double)a_row[i] * b_row[i]);
        }
        const double scale = blockwise ? (double)gemm_check_sa(s, sa, g, row, b) *
                                             gemm_check_sb(s, sb, g, col, b)
                                       : 1.0;
        ref += scale * part;
        total += fabs(scale) * part_mag;
    }
    *mag = total;
    return ref;
}

/* got (a bf16 result) against ref: within 2^-7 of |ref| (bf16 keeps 8
 * significant bits: its rounding moves a value by up to 2^-8 of it; twice
 * that) + 2e-5 of mag (float32 accumulation). Returns |got - ref| /
 * tolerance (NaN when got is NaN): <= 1 passes. */
static inline double gemm_check_ratio(double got, double ref, double mag) {
    const double tol = fabs(ref) / 128.0 + 2e-5 * mag;
    return fabs(got - ref) / (tol > 0 ? tol : 1e-300);
}

#endif /* DINF_BENCH_GEMM_CHECK_H */
