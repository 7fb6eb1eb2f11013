/*
 * Which vector instruction set the CPU paths' kernels use (internal.h:
 * dinf__cpu_isa). Detection runs once; DINF_CPU_ISA caps it on every call,
 * so that tests (and users chasing a difference between machines) can run
 * each variant on one machine.
 */
#include "internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const isa_names[] = {"base", "avx2", "avx512"};

const char *dinf__isa_name(int isa) {
    return isa >= DINF__ISA_BASE && isa <= DINF__ISA_AVX512 ? isa_names[isa] : "unknown";
}

static int detect(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    /* __builtin_cpu_supports checks the CPUID bits and, through XGETBV, that
     * the OS saves the YMM / ZMM state. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return DINF__ISA_AVX512;
    if (__builtin_cpu_supports("avx2"))
        return DINF__ISA_AVX2;
#endif
    return DINF__ISA_BASE;
}

int dinf__cpu_isa(char *msg, size_t cap) {
    static atomic_int detected = -1;
    int best = atomic_load_explicit(&detected, memory_order_relaxed);
    if (best < 0) {
        best = detect();
        atomic_store_explicit(&detected, best, memory_order_relaxed);
    }
    const char *v = getenv("DINF_CPU_ISA");
    if (!v || !*v)
        return best;
    for (int isa = DINF__ISA_BASE; isa <= DINF__ISA_AVX512; isa++)
        if (strcmp(v, isa_names[isa]) == 0)
            return isa < best ? isa : best;
    snprintf(msg, cap, "DINF_CPU_ISA=%.64s: must be base, avx2 or avx512 (or unset: the widest "
             "this CPU has, here %s)", v, isa_names[best]);
    return -1;
}
