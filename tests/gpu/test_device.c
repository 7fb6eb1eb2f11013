/*
 * GPU tests: run by make gpu-check on a GPU machine; skipped, visibly, where
 * no usable device exists (CI, CPU-only builds).
 */
#include <deepinfra.h>

#include <criterion/criterion.h>

#include "gpu_test.h"

#include <stdlib.h>
#include <string.h>

/* Without a usable device the GPU suite is skipped, visibly; under
 * tools/gpu-check (DINF_REQUIRE_GPU=1) a missing device is a failure. */

#if DINF_WITH_CUDA
int dinf__probe_run(int device, char *reason, size_t reason_bytes);

Test(gpu, our_sm90a_kernel_runs_and_writes_its_result) {
    char reason[512] = "";
    cr_assert_eq(dinf__probe_run(0, reason, sizeof reason), 0, "%s", reason);
}
#endif

TestSuite(gpu, .init = require_gpu, .timeout = 60.0);

Test(gpu, device_is_a_hopper_that_runs_our_kernels) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    cr_assert_eq(dinf_device_query(0, &info), DINF_STATUS_OK);
    cr_assert_eq(info.usable, 1, "%s", info.reason);
    cr_assert_eq(info.cc_major, 9);
    cr_assert_eq(info.cc_minor, 0);
    cr_assert_geq(info.sm_count, 100, "an H100/H200 has 132 SMs, got %d", info.sm_count);
    cr_assert_gt(info.total_memory_bytes, (uint64_t)40 << 30);
    cr_assert_geq(info.shared_memory_per_block_optin_bytes, 200u * 1024);
    cr_assert_geq(info.driver_version, info.runtime_version,
                  "driver %d older than runtime %d", info.driver_version, info.runtime_version);
    cr_assert_str_eq(info.reason, "");
    cr_log_info("%s: %d SMs, %.1f GiB, runtime %d, driver %d", info.name, info.sm_count,
                (double)info.total_memory_bytes / (1 << 30), info.runtime_version,
                info.driver_version);
}
