/*
 * The CPU quantizer's per-block kernels (fp8.c: dinf_fp8_quantize), one
 * variant per vector instruction set of internal.h's dinf__isa, exposed for
 * the tests (tests/core/test_fp8.c compares each with the scalar functions
 * of numeric_hd.h). Every variant gives the same bits. Not installed.
 */
#ifndef DINF_FP8_CPU_H
#define DINF_FP8_CPU_H

#include <stdint.h>

/* max |x[r * ld + j]| over r < rows, j < cols (x float32, or bfloat16 bits
 * when bf16 != 0), NaNs skipped (by comparison, as the GPU's max.f32), 0.0f
 * when every element is NaN or zero. Reads nothing else. */
typedef float (*dinf__fp8_amax_fn)(const void *x, int bf16, int64_t rows, int64_t cols,
                                   int64_t ld);

/* q[r * q_ld + j] = dinf__e4m3_from_f32(x[r * ld + j] * factor) for r < rows,
 * j < cols (x as above; the product in float32, saturating at +-448, NaN
 * kept: the clamp of dinf_fp8_quantize changes no code). Writes nothing
 * else. */
typedef void (*dinf__fp8_encode_fn)(const void *x, int bf16, int64_t rows, int64_t cols,
                                    int64_t ld, float factor, uint8_t *q, int64_t q_ld);

typedef struct dinf__fp8_cpu_kernels {
    const char *isa; /* "base", "avx2", "avx512" */
    dinf__fp8_amax_fn amax;
    dinf__fp8_encode_fn encode;
} dinf__fp8_cpu_kernels;

/* The variants of one instruction set (dinf__isa); a set this build has no
 * variant for (not x86-64) gives the baseline's. */
const dinf__fp8_cpu_kernels *dinf__fp8_cpu_kernels_for(int isa);

#endif /* DINF_FP8_CPU_H */
