/*
 * Shared by the GPU suites (tests/gpu/): skip a test, visibly, without a
 * usable CUDA device — or fail it when DINF_REQUIRE_GPU=1 (tools/gpu-check
 * sets it, so a GPU machine that cannot run the kernels is a failure).
 */
#ifndef DINF_TEST_GPU_TEST_H
#define DINF_TEST_GPU_TEST_H

#include <deepinfra.h>

#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

static void require_gpu(void) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    if (dinf_device_query(0, &info) != DINF_STATUS_OK || !info.usable) {
        const char *require = getenv("DINF_REQUIRE_GPU");
        if (require && strcmp(require, "1") == 0)
            cr_assert_fail("DINF_REQUIRE_GPU=1 but no usable CUDA device: %s", info.reason);
        cr_skip_test("no usable CUDA device: %s", info.reason);
    }
}

#endif
