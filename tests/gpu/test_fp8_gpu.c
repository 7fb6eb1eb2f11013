/*
 * GPU tests of core's FP8 operations: DINF_EXEC_CUDA results are bitwise
 * equal to the CPU implementation (the oracle) for dinf_convert,
 * dinf_fp8_quantize (both block sizes, DeepSeek-V3 shapes) and
 * dinf_fp8_scale_layout_mn_major. Skipped, visibly, without a usable device;
 * a failure under DINF_REQUIRE_GPU=1 (tools/gpu-check).
 */
#include <deepinfra.h>

#include <criterion/criterion.h>

#include "gpu_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


TestSuite(fp8_gpu, .init = require_gpu, .timeout = 120.0);

#if DINF_WITH_CUDA && defined(__has_include) && __has_include(<cuda_runtime_api.h>)
#include <cuda_runtime_api.h>

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        cr_assert_eq(err_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(err_));               \
    } while (0)

static void *to_device(const void *host, size_t bytes) {
    void *dev = NULL;
    CUDA_OK(cudaMalloc(&dev, bytes ? bytes : 1));
    if (bytes)
        CUDA_OK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    return dev;
}

/* Poisoned device buffer. */
static void *device_poisoned(size_t bytes) {
    void *dev = NULL;
    CUDA_OK(cudaMalloc(&dev, bytes ? bytes : 1));
    CUDA_OK(cudaMemset(dev, 0xa5, bytes ? bytes : 1));
    return dev;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Random values over many magnitudes, a few NaN, zeros and infinities. */
static void fill_random(float *x, int64_t n, uint64_t seed) {
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        const uint64_t r = rng_next(&s);
        const float u = (float)(r >> 40) / (float)(1u << 24);
        x[i] = ldexpf(2.0f * u - 1.0f, (int)(r % 24) - 12);
        if (r % 9973 == 0)
            x[i] = NAN;
        if (r % 7919 == 1)
            x[i] = 0.0f;
    }
}

Test(fp8_gpu, convert_matches_the_cpu_for_every_pair) {
    const dinf_dtype types[] = {DINF_DTYPE_FLOAT32, DINF_DTYPE_BFLOAT16, DINF_DTYPE_FP8_E4M3};
    const int64_t n = 1 << 20 | 12345;
    float *f32 = malloc((size_t)n * 4);
    fill_random(f32, n, 7);
    f32[0] = INFINITY;
    f32[1] = -1e30f;
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
    for (int si = 0; si < 3; si++) {
        size_t ssize;
        dinf_dtype_size(types[si], &ssize);
        void *src = malloc((size_t)n * ssize); /* the source in its dtype, made by the CPU */
        cr_assert_eq(dinf_convert(f32, DINF_DTYPE_FLOAT32, src, types[si], n, NULL),
                     DINF_STATUS_OK);
        if (types[si] == DINF_DTYPE_FP8_E4M3)
            for (int64_t i = 0; i < 256; i++)
                ((uint8_t *)src)[i] = (uint8_t)i; /* every code */
        void *d_src = to_device(src, (size_t)n * ssize);
        for (int di = 0; di < 3; di++) {
            size_t dsize;
            dinf_dtype_size(types[di], &dsize);
            void *want = malloc((size_t)n * dsize), *got = malloc((size_t)n * dsize);
            void *d_dst = device_poisoned((size_t)n * dsize);
            cr_assert_eq(dinf_convert(src, types[si], want, types[di], n, NULL), DINF_STATUS_OK);
            cr_assert_eq(dinf_convert(d_src, types[si], d_dst, types[di], n, &cuda),
                         DINF_STATUS_OK, "%s", dinf_last_error());
            CUDA_OK(cudaStreamSynchronize(stream));
            CUDA_OK(cudaMemcpy(got, d_dst, (size_t)n * dsize, cudaMemcpyDeviceToHost));
            cr_assert_eq(memcmp(got, want, (size_t)n * dsize), 0, "%s -> %s differs from the CPU",
                         dinf_dtype_name(types[si]), dinf_dtype_name(types[di]));
            CUDA_OK(cudaFree(d_dst));
            free(want);
            free(got);
        }
        CUDA_OK(cudaFree(d_src));
        free(src);
    }
    CUDA_OK(cudaStreamDestroy(stream));
    free(f32);
}

typedef struct shape {
    int64_t m, k, x_ld, q_ld;
} shape;

static void check_quantize(shape sh, dinf_dtype x_dtype, int block_rows, uint64_t seed) {
    const int64_t x_elems = (sh.m - 1) * sh.x_ld + sh.k, q_bytes = (sh.m - 1) * sh.q_ld + sh.k;
    const int64_t nscales = ((sh.m + block_rows - 1) / block_rows) * ((sh.k + 127) / 128);
    size_t esize;
    dinf_dtype_size(x_dtype, &esize);
    float *f32 = malloc((size_t)x_elems * 4);
    fill_random(f32, x_elems, seed);
    void *x = malloc((size_t)x_elems * esize);
    cr_assert_eq(dinf_convert(f32, DINF_DTYPE_FLOAT32, x, x_dtype, x_elems, NULL), DINF_STATUS_OK);
    uint8_t *q_cpu = malloc((size_t)q_bytes), *q_gpu = malloc((size_t)q_bytes);
    float *s_cpu = malloc((size_t)nscales * 4), *s_gpu = malloc((size_t)nscales * 4);
    memset(q_cpu, 0xa5, (size_t)q_bytes); /* the stride gaps must stay poisoned on both */
    cr_assert_eq(dinf_fp8_quantize(x, x_dtype, sh.m, sh.k, sh.x_ld, block_rows, q_cpu, sh.q_ld,
                                   s_cpu, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    void *d_x = to_device(x, (size_t)x_elems * esize);
    uint8_t *d_q = device_poisoned((size_t)q_bytes);
    float *d_s = device_poisoned((size_t)nscales * 4);
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
    cr_assert_eq(dinf_fp8_quantize(d_x, x_dtype, sh.m, sh.k, sh.x_ld, block_rows, d_q, sh.q_ld,
                                   d_s, &cuda),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(q_gpu, d_q, (size_t)q_bytes, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(s_gpu, d_s, (size_t)nscales * 4, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < nscales; i++)
        if (memcmp(&s_gpu[i], &s_cpu[i], 4) != 0)
            cr_assert_fail("m=%lld k=%lld %s block_rows=%d: scale %lld GPU %a CPU %a",
                           (long long)sh.m, (long long)sh.k, dinf_dtype_name(x_dtype), block_rows,
                           (long long)i, (double)s_gpu[i], (double)s_cpu[i]);
    for (int64_t i = 0; i < q_bytes; i++)
        if (q_gpu[i] != q_cpu[i])
            cr_assert_fail("m=%lld k=%lld x_ld=%lld q_ld=%lld %s block_rows=%d: q byte %lld GPU "
                           "0x%02X CPU 0x%02X",
                           (long long)sh.m, (long long)sh.k, (long long)sh.x_ld,
                           (long long)sh.q_ld, dinf_dtype_name(x_dtype), block_rows, (long long)i,
                           q_gpu[i], q_cpu[i]);
    CUDA_OK(cudaFree(d_x));
    CUDA_OK(cudaFree(d_q));
    CUDA_OK(cudaFree(d_s));
    free(f32);
    free(x);
    free(q_cpu);
    free(q_gpu);
    free(s_cpu);
    free(s_gpu);
}

Test(fp8_gpu, quantize_matches_the_cpu_bitwise) {
    const shape shapes[] = {
        {1, 1, 1, 1},          {3, 129, 131, 140},     {130, 300, 300, 301},
        {257, 1000, 1024, 1003}, {128, 7168, 7168, 7168}, /* DeepSeek-V3 activations */
        {7168, 2048, 2048, 2048},                         /* a DeepSeek-V3 weight */
        {4096, 7168, 7168, 7168},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int dt = 0; dt < 2; dt++) {
            check_quantize(shapes[i], dt ? DINF_DTYPE_BFLOAT16 : DINF_DTYPE_FLOAT32, 1, 100 + i);
            check_quantize(shapes[i], dt ? DINF_DTYPE_BFLOAT16 : DINF_DTYPE_FLOAT32, 128, 200 + i);
        }
}

Test(fp8_gpu, scale_layout_matches_the_cpu_bitwise) {
    const int64_t cases[][2] = {{1, 1}, {5, 3}, {130, 56}, {4097, 56}, {7, 16}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int64_t m = cases[c][0], kb = cases[c][1], am = (m + 3) / 4 * 4;
        float *in = malloc((size_t)(m * kb) * 4), *want = malloc((size_t)(am * kb) * 4);
        float *got = malloc((size_t)(am * kb) * 4);
        fill_random(in, m * kb, 31 + c);
        int64_t am_cpu = 0, am_gpu = 0;
        cr_assert_eq(dinf_fp8_scale_layout_mn_major(in, m, kb, want, &am_cpu, NULL),
                     DINF_STATUS_OK);
        float *d_in = to_device(in, (size_t)(m * kb) * 4);
        float *d_out = device_poisoned((size_t)(am * kb) * 4);
        const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
        cr_assert_eq(dinf_fp8_scale_layout_mn_major(d_in, m, kb, d_out, &am_gpu, &cuda),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        CUDA_OK(cudaDeviceSynchronize());
        CUDA_OK(cudaMemcpy(got, d_out, (size_t)(am * kb) * 4, cudaMemcpyDeviceToHost));
        cr_assert_eq(am_gpu, am_cpu);
        cr_assert_eq(memcmp(got, want, (size_t)(am * kb) * 4), 0, "m=%lld kb=%lld", (long long)m,
                     (long long)kb);
        CUDA_OK(cudaFree(d_in));
        CUDA_OK(cudaFree(d_out));
        free(in);
        free(want);
        free(got);
    }
}

#else
/* The tests above need <cuda_runtime_api.h> on the test include path. */
Test(fp8_gpu, compiled_with_the_cuda_runtime_header) {
    cr_assert_fail("tests/gpu/test_fp8_gpu.c was built without DINF_WITH_CUDA or without "
                   "<cuda_runtime_api.h> on the include path: its GPU checks did not compile");
}
#endif
