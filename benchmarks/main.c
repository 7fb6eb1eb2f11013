/* make bench: every benchmark of the library, one table, JSON beside it. */
#include "bench.h"

#include <deepinfra.h>

#include <stdio.h>

int main(int argc, char **argv) {
    bench_init(argc, argv);
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    dinf_device_query(0, &info);
    bench_add_context("deepinfra_version", dinf_version_string());
    bench_add_context("gpu", info.usable ? info.name : "none");
    if (!info.usable)
        fprintf(stderr, "GPU benchmarks skipped: %s\n", info.reason);
    bench_register_eplb();
    bench_register_fp8();
    bench_register_dualpipe();
    bench_register_gemm();
    bench_register_mla();
    bench_register_ep();
    if (info.usable) {
        bench_register_copy();
        bench_register_ep_gpu();
    }
    return bench_main(argc, argv);
}
