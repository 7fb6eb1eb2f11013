/*
 * Device probe: launch a trivial kernel from this library's fatbin and read
 * its result back, proving end to end that the sm_90a machine code loads and
 * runs on a device. Used by the GPU tests (tests/gpu), never by the API.
 */
#include <cuda_runtime_api.h>

#include <stdio.h>

__global__ void dinf_probe_kernel(int *out, int value) {
    if (threadIdx.x == 0 && blockIdx.x == 0)
        *out = value;
}

extern "C" int dinf__probe_run(int device, char *reason, size_t reason_bytes) {
    int previous = -1, *out = nullptr, got = 0;
    const int value = 0x5eed;
    cudaError_t err = cudaGetDevice(&previous);
    if (err == cudaSuccess)
        err = cudaSetDevice(device);
    if (err == cudaSuccess)
        err = cudaMalloc(&out, sizeof(int));
    if (err == cudaSuccess) {
        dinf_probe_kernel<<<1, 32>>>(out, value);
        err = cudaGetLastError();
    }
    if (err == cudaSuccess)
        err = cudaMemcpy(&got, out, sizeof(int), cudaMemcpyDeviceToHost);
    if (out)
        cudaFree(out);
    if (previous >= 0 && previous != device)
        cudaSetDevice(previous);
    if (err != cudaSuccess) {
        snprintf(reason, reason_bytes, "probe kernel on device %d: %s (%s)", device,
                 cudaGetErrorString(err), cudaGetErrorName(err));
        return -1;
    }
    if (got != value) {
        snprintf(reason, reason_bytes, "probe kernel on device %d wrote 0x%x, expected 0x%x",
                 device, got, value);
        return -1;
    }
    return 0;
}
