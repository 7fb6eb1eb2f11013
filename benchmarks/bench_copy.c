/*
 * The physical floor every memory-bound kernel is compared with: a
 * device-to-device copy on the GPU (bytes read + written per second). Only
 * registered when a usable CUDA device exists.
 */
#include "bench.h"

#include <stdio.h>

#if DINF_WITH_CUDA
#include <cuda_runtime_api.h>

typedef struct copy_case {
    void *src, *dst;
    size_t bytes;
    cudaStream_t stream;
    cudaEvent_t start, stop;
} copy_case;

static double run_copy(void *arg) {
    copy_case *c = arg;
    float ms = 0;
    cudaEventRecord(c->start, c->stream);
    cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, c->stream);
    cudaEventRecord(c->stop, c->stream);
    cudaError_t err = cudaEventSynchronize(c->stop);
    if (err == cudaSuccess)
        err = cudaEventElapsedTime(&ms, c->start, c->stop);
    if (err != cudaSuccess) {
        bench_set_error(cudaGetErrorString(err));
        return -1;
    }
    return ms / 1e3;
}

static void add_copy(const char *name, size_t bytes) {
    static copy_case cases[4];
    static int n;
    if (!bench_selected(name))
        return;
    copy_case *c = &cases[n++];
    c->bytes = bytes;
    if (cudaMalloc(&c->src, bytes) != cudaSuccess || cudaMalloc(&c->dst, bytes) != cudaSuccess ||
        cudaStreamCreate(&c->stream) != cudaSuccess || cudaEventCreate(&c->start) != cudaSuccess ||
        cudaEventCreate(&c->stop) != cudaSuccess) {
        fprintf(stderr, "%s: CUDA setup failed: %s\n", name, cudaGetErrorString(cudaGetLastError()));
        return;
    }
    cudaMemset(c->src, 1, bytes);
    bench_spec spec = {.name = name, .run = run_copy, .arg = c, .manual_time = 1,
                       .bytes = 2.0 * (double)bytes, .label = "measured floor: cudaMemcpyAsync device to device, read + "
                                "written bytes (the datasheet's 4.8 TB/s is the nominal peak)"};
    bench_register(&spec);
}

void bench_register_copy(void) {
    add_copy("copy/d2d/256MiB", (size_t)256 << 20);
    add_copy("copy/d2d/2GiB", (size_t)2 << 30);
}
#else
void bench_register_copy(void) {}
#endif
