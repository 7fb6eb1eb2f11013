/*
 * For the suites that run the CPU vector kernels in every instruction set
 * this machine has (mla_cpu_isa, gemm_cpu_isa, fp8_cpu_isa): the widest set,
 * with DINF_CPU_ISA cleared. The includer defines _POSIX_C_SOURCE (unsetenv).
 */
#ifndef DINF_CPU_ISA_TEST_H
#define DINF_CPU_ISA_TEST_H

#include "core/internal.h" /* dinf__cpu_isa, dinf__isa_name */

#include <criterion/criterion.h>
#include <stdlib.h>

/* The widest set this CPU has: the tests run DINF__ISA_BASE .. it. */
static inline int widest_cpu_isa(void) {
    unsetenv("DINF_CPU_ISA");
    char msg[160];
    const int top = dinf__cpu_isa(msg, sizeof msg);
    cr_assert_geq(top, DINF__ISA_BASE, "%s", msg);
    if (top < DINF__ISA_AVX512)
        /* info, not warn: Criterion exits 1 after a warning, all tests passed */
        cr_log_info("this CPU runs only the sets up to %s: the wider ones are not tested here",
                    dinf__isa_name(top));
    return top;
}

#endif /* DINF_CPU_ISA_TEST_H */
