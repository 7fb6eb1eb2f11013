/*
 * The CPU decode's vector kernels (mla_cpu.h), compiled once per instruction
 * set from one body (mla_cpu_body.h, included once per set): each kernel
 * carries its set's target attribute, and a 16-lane accumulator is four SSE,
 * two AVX2 or one AVX-512 register. Only the register tiles differ between the
 * variants (how many rows and keys are computed together); each output
 * element's operations and their order are the same in all of them, and the
 * library builds with -ffp-contract=off (no FMA), so they give the same bits
 * (NaN signs and payloads aside: where both operands of an operation are
 * NaN, IEEE 754 leaves open which one the result carries, and the compiler
 * picks the operand order of commutative instructions).
 */
#include "mla_cpu.h"

#include "../core/cpu_vec.h"
#include "../core/internal.h"

#include <string.h>

/* v16f values never cross a function boundary (every helper is inlined):
 * no ABI note needed. */
#pragma GCC diagnostic ignored "-Wpsabi"
/* No FMA contraction (the variants' equal bits
 * rest on it): clang honours the pragma; GCC has none, and the Makefile's
 * -ffp-contract=off is checked by tests/python/test_build.py (no vfmadd in
 * these objects). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

#define DQK DINF_MLA_HEAD_DIM_QK
#define DV DINF_MLA_HEAD_DIM_V
#define BN DINF_MLA_BLOCK_N

#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static inline
#endif

/* SSE2 (the x86-64 baseline; or whatever the build's baseline is): 16
 * registers of 4 floats */
#define NAME base
#define TARGET
#define VT v4f
#define VW 4
#define QR 2
#define QKK 1
#define PR 4
#define PC 2
#include "mla_cpu_body.h"

#if DINF_CPU_X86
/* AVX2: 16 registers of 8 floats */
#define NAME avx2
#define TARGET __attribute__((target("avx2")))
#define VT v8f
#define VW 8
#define QR 2
#define QKK 2
#define PR 4
#define PC 2
#include "mla_cpu_body.h"

/* AVX-512: 32 registers of 16 floats */
#define NAME avx512
#define TARGET __attribute__((target("avx512f")))
#define VT v16f
#define VW 16
#define QR 4
#define QKK 4
#define PR 4
#define PC 4
#include "mla_cpu_body.h"
#endif

DINF_CPU_KERNELS_FOR(dinf__mla_cpu_kernels, dinf__mla_cpu_kernels_for)
