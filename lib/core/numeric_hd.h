/*
 * Scalar number formats, host and device: float32 <-> bfloat16 and
 * float32 <-> float8_e4m3fn, the conversions core.h documents (round to
 * nearest even; e4m3 saturates at +-448 and keeps NaN; bf16 keeps NaN quiet).
 * One definition serves the CPU implementation, the CUDA kernels and the
 * tests. Not installed.
 */
#ifndef DINF_NUMERIC_HD_H
#define DINF_NUMERIC_HD_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define DINF_HD __host__ __device__ __forceinline__
#else
#define DINF_HD static inline
#endif

#define DINF_E4M3_MAX 448.0f

DINF_HD uint32_t dinf__f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

DINF_HD float dinf__f32_from_bits(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* float32 -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN. */
DINF_HD uint16_t dinf__bf16_from_f32(float x) {
    uint32_t u = dinf__f32_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* bfloat16 bits -> float32, exact. */
DINF_HD float dinf__f32_from_bf16(uint16_t b) { return dinf__f32_from_bits((uint32_t)b << 16); }

/*
 * float32 -> e4m3 bits. Normal results (|x| >= 2^-6) round the float's
 * 23-bit mantissa to 3 bits to nearest even on the bit pattern, which also
 * carries into the exponent; subnormal results are multiples of 2^-9, rounded
 * to nearest even in integer arithmetic. Anything at or
 * beyond 448 in magnitude, infinities included, saturates to 0x7E.
 */
DINF_HD uint8_t dinf__e4m3_from_f32(float x) {
    const uint32_t u = dinf__f32_bits(x);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint8_t)(sign | 0x7fu);
    if (a >= 0x43e00000u) /* 448.0f */
        return (uint8_t)(sign | 0x7eu);
    if (a < 0x3c800000u) { /* below 2^-6: subnormal (or zero) */
        /* q = |x| * 2^9 in [0, 8) is exact; round it to the nearest integer,
         * ties to even, in integer arithmetic (no dependence on the FPU's
         * rounding mode); 8 becomes 2^-6, code 0x08 */
        const float q = dinf__f32_from_bits(a) * 512.0f;
        uint32_t i = (uint32_t)q;
        const float frac = q - (float)i;
        i += frac > 0.5f || (frac == 0.5f && (i & 1u));
        return (uint8_t)(sign | i);
    }
    const uint32_t r = (a + 0x7ffffu + ((a >> 20) & 1u)) >> 20; /* biased exp << 3 | mant */
    uint32_t code = r - (120u << 3);                               /* rebias 127 -> 7 */
    if (code > 0x7eu)
        code = 0x7eu;
    return (uint8_t)(sign | code);
}

/* e4m3 bits -> float32, exact; 0x7F and 0xFF are NaN. */
DINF_HD float dinf__f32_from_e4m3(uint8_t c) {
    const uint32_t sign = (uint32_t)(c & 0x80u) << 24;
    const uint32_t exp = (c >> 3) & 0xfu, mant = c & 7u;
    if ((c & 0x7fu) == 0x7fu)
        return dinf__f32_from_bits(sign | 0x7fc00000u);
    if (exp == 0) /* subnormal: mant * 2^-9 */
        return dinf__f32_from_bits(sign | dinf__f32_bits((float)mant * (1.0f / 512.0f)));
    return dinf__f32_from_bits(sign | ((exp + 120u) << 23) | (mant << 20));
}

#endif
