/*
 * GPU test of the JIT runtime: compile, cache, load (cudaLibraryLoadData) and
 * launch (cudaLaunchKernelExC) the scale_rows template, float32 and bfloat16
 * outputs, against the CPU. Skipped, visibly, without a usable device; a
 * failure under DINF_REQUIRE_GPU=1 (tools/gpu-check).
 */
#define _GNU_SOURCE
#include <deepinfra.h>

#include "jit_internal.h"

#include <criterion/criterion.h>

#include "gpu_test.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char cache_dir[64];

static void require_gpu_and_cache(void) {
    require_gpu();
    dinf__jit_reset();
    snprintf(cache_dir, sizeof cache_dir, "/tmp/dinf-jit-gpu-XXXXXX");
    cr_assert_not_null(mkdtemp(cache_dir));
    cr_assert_eq(dinf_jit_set_cache_dir(cache_dir), DINF_STATUS_OK, "%s", dinf_last_error());
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup(void) {
    dinf__jit_reset();
    if (cache_dir[0])
        nftw(cache_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(jit_gpu, .init = require_gpu_and_cache, .fini = cleanup, .timeout = 120.0);

#if DINF_WITH_CUDA && defined(__has_include) && __has_include(<cuda_runtime_api.h>)
#include <cuda_runtime_api.h>

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        cr_assert_eq(err_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(err_));               \
    } while (0)

static void run_scale_rows(int block_threads, int elems, int bf16, int64_t rows, int64_t cols) {
    dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
    snprintf(c.name, sizeof c.name, "scale_rows");
    c.num_params = 3;
    c.params[0] = block_threads;
    c.params[1] = elems;
    c.params[2] = bf16;
    const dinf__jit_kernel *kernel = NULL;
    cr_assert_eq(dinf__jit_get_kernel("test", &c, 0, &kernel), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    cr_assert_not_null(kernel->kernel);

    int64_t ld_x = cols + 3, ld_y = cols + 5;
    size_t out_elem = bf16 ? 2 : 4;
    float *x = malloc((size_t)(rows * ld_x) * 4), *s = malloc((size_t)rows * 4);
    unsigned char *y = malloc((size_t)(rows * ld_y) * out_elem);
    unsigned char *want = malloc((size_t)(rows * ld_y) * out_elem);
    uint64_t seed = 12345;
    for (int64_t i = 0; i < rows * ld_x; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int64_t)(seed >> 40) - (1 << 23)) / (float)(1 << 20);
    }
    for (int64_t r = 0; r < rows; r++)
        s[r] = 0.5f + (float)r * 0.25f;
    memset(want, 0xAB, (size_t)(rows * ld_y) * out_elem);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t col = 0; col < cols; col++) {
            float v = x[r * ld_x + col] * s[r];
            if (bf16)
                cr_assert_eq(dinf_convert(&v, DINF_DTYPE_FLOAT32, want + (r * ld_y + col) * 2,
                                          DINF_DTYPE_BFLOAT16, 1, NULL),
                             DINF_STATUS_OK);
            else
                memcpy(want + (r * ld_y + col) * 4, &v, 4);
        }

    void *dx, *ds, *dy;
    CUDA_OK(cudaMalloc(&dx, (size_t)(rows * ld_x) * 4));
    CUDA_OK(cudaMalloc(&ds, (size_t)rows * 4));
    CUDA_OK(cudaMalloc(&dy, (size_t)(rows * ld_y) * out_elem));
    CUDA_OK(cudaMemcpy(dx, x, (size_t)(rows * ld_x) * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(ds, s, (size_t)rows * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(dy, 0xAB, (size_t)(rows * ld_y) * out_elem));
    void *args[] = {&dx, &ds, &dy, &rows, &cols, &ld_x, &ld_y};
    unsigned grid[3] = {(unsigned)(rows < 64 ? rows : 64), 1, 1};
    unsigned block[3] = {(unsigned)block_threads, 1, 1};
    unsigned cluster[3] = {1, 1, 1};
    cr_assert_eq(dinf__jit_launch("test", kernel, 0, grid, block, cluster, 0, 0, NULL, args),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(y, dy, (size_t)(rows * ld_y) * out_elem, cudaMemcpyDeviceToHost));
    cr_assert_eq(memcmp(y, want, (size_t)(rows * ld_y) * out_elem), 0,
                 "scale_rows<%d,%d,%d> rows=%lld cols=%lld differs from the CPU", block_threads,
                 elems, bf16, (long long)rows, (long long)cols);
    cudaFree(dx), cudaFree(ds), cudaFree(dy);
    free(x), free(s), free(y), free(want);
}

Test(jit_gpu, scale_rows_float32_matches_the_cpu) { run_scale_rows(256, 4, 0, 100, 1000); }

Test(jit_gpu, scale_rows_bf16_matches_the_cpu) { run_scale_rows(128, 8, 1, 37, 4099); }

Test(jit_gpu, loaded_kernel_comes_back_from_the_disk_cache) {
    run_scale_rows(256, 1, 0, 3, 77);
    dinf__jit_reset();
    cr_assert_eq(dinf_jit_set_cache_dir(cache_dir), DINF_STATUS_OK, "%s", dinf_last_error());
    run_scale_rows(256, 1, 0, 3, 77);
    dinf_jit_stats s = DINF_JIT_STATS_INIT;
    cr_assert_eq(dinf_jit_get_stats(&s), DINF_STATUS_OK);
    cr_assert_eq(s.compiles, 0);
    cr_assert_eq(s.disk_hits, 1);
    cr_assert_eq(s.loads, 1);
}

Test(jit_gpu, precompile_for_the_current_device_loads) {
    dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
    snprintf(c.name, sizeof c.name, "scale_rows");
    c.num_params = 3;
    c.params[0] = 512;
    c.params[1] = 2;
    c.params[2] = 1;
    cr_assert_eq(dinf_jit_precompile(&c, 1, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_jit_stats s = DINF_JIT_STATS_INIT;
    cr_assert_eq(dinf_jit_get_stats(&s), DINF_STATUS_OK);
    cr_assert_eq(s.loads, 1);
    char arch[16];
    cr_assert_eq(dinf__jit_device_arch("test", 0, arch), DINF_STATUS_OK);
    cr_assert_str_eq(arch, "sm_90a");
}
#endif
