/*
 * libdeepinfra JIT prelude: the few types and intrinsics the kernel templates
 * need, written here so that run-time compilation needs no CUDA headers.
 *
 * Templates are compiled by NVRTC with no include path at all: only the files
 * embedded in the library (the .cuh files of jit/templates) can be included, by their
 * base name. NVRTC predefines the built-in variables (threadIdx, blockIdx,
 * ...) and the __global__/__device__ keywords; everything else that the
 * CUDA headers would bring (fixed-width integers, bf16/fp8 storage types and
 * conversions) is defined below, with conversions as inline PTX (PTX ISA
 * "cvt" section). Keep this file small and free of host-only constructs.
 */
#pragma once

namespace dinf_jit {

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;

static_assert(sizeof(int64_t) == 8 && sizeof(uint32_t) == 4, "unexpected integer sizes");

/* bfloat16 and float8_e4m3fn as raw storage (no arithmetic on them). */
struct bf16_t { uint16_t bits; };
struct e4m3_t { uint8_t bits; };

/* float32 -> bfloat16, round to nearest even (PTX cvt.rn.bf16.f32, sm_80+). */
__device__ __forceinline__ bf16_t f32_to_bf16(float x) {
    uint16_t r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return bf16_t{r};
}

/* bfloat16 -> float32 (exact): the upper 16 bits of a float32. */
__device__ __forceinline__ float bf16_to_f32(bf16_t x) {
    return __uint_as_float((uint32_t)x.bits << 16);
}

} // namespace dinf_jit
