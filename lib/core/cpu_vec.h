/*
 * What the CPU vector kernels (lib/gemm/gemm.c, lib/mla/mla_cpu.c,
 * lib/core/fp8.c) share ahead of their per-variant bodies: the GNU C vector types of 4, 8 and 16
 * floats, DINF_CPU_SHUFFLE (1 where __builtin_shufflevector exists: GCC 12,
 * clang), DINF_CPU_X86, DINF_CPU_KERNELS_FOR and CAT_STR (a macro argument,
 * expanded, as a string). Each variant body then includes
 * lib/core/cpu_vec_body.h. Not installed.
 *
 * The files that include this keep their own pragmas (no -Wpsabi note; no FMA
 * contraction), as those apply to the rest of their translation unit.
 */
#ifndef DINF_CPU_VEC_H
#define DINF_CPU_VEC_H

typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));

/* The two tests nested: a compiler without __has_builtin cannot parse the
 * second. Where it is 0 the kernels use scalar loops (same bits). */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define DINF_CPU_SHUFFLE 1
#endif
#endif
#ifndef DINF_CPU_SHUFFLE
#define DINF_CPU_SHUFFLE 0
#endif

#define DINF_CPU_STR_(x) #x
#define CAT_STR(x) DINF_CPU_STR_(x)

/* 1 where the files compile their AVX2 and AVX-512 variants (x86-64, GNU C:
 * the target attribute), defining kernels_avx2 and kernels_avx512 beside
 * kernels_base. */
#if defined(__x86_64__) && defined(__GNUC__)
#define DINF_CPU_X86 1
#else
#define DINF_CPU_X86 0
#endif

/* Defines `const type *func(int isa)`: the table of one set of internal.h's
 * dinf__isa (kernels_avx512, kernels_avx2 or kernels_base of the including
 * file); a set the build has no variant for gives the baseline's. */
#if DINF_CPU_X86
#define DINF_CPU_KERNELS_FOR(type, func)                                                           \
    const type *func(int isa) {                                                                    \
        return isa == DINF__ISA_AVX512 ? &kernels_avx512                                           \
               : isa == DINF__ISA_AVX2 ? &kernels_avx2                                             \
                                       : &kernels_base;                                            \
    }
#else
#define DINF_CPU_KERNELS_FOR(type, func)                                                           \
    const type *func(int isa) {                                                                    \
        (void)isa;                                                                                 \
        return &kernels_base;                                                                      \
    }
#endif

#endif /* DINF_CPU_VEC_H */
