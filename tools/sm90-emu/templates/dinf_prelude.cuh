/*
 * sm90-emu replacement of jit/templates/dinf_prelude.cuh: the same names,
 * host implementations (cvt.rn.bf16.f32 from emu_sm90.cpp).
 */
#pragma once
#include "emu_kernel.h"

namespace dinf_jit {

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;

struct bf16_t { uint16_t bits; };
struct e4m3_t { uint8_t bits; };

__device__ __forceinline__ bf16_t f32_to_bf16(float x) { return bf16_t{emu::cvt_rn_bf16_f32(x)}; }
__device__ __forceinline__ float bf16_to_f32(bf16_t x) { return emu::bf16_to_f32(x.bits); }

} // namespace dinf_jit
