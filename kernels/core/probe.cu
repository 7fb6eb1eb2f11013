/*
 * Device probe: a trivial kernel whose attributes tell whether this build's
 * machine code (sm_90a SASS, or the compute_90 PTX through the driver JIT)
 * can run on a device. Used by dinf_device_query.
 */
#include <cuda_runtime_api.h>

#include <stdio.h>

__global__ void dinf_probe_kernel(int *out) {
    if (out)
        *out = 1;
}

extern "C" int dinf__probe_kernel_image(int device, int *binary_version, char *reason,
                                        size_t reason_bytes) {
    int previous = -1;
    if (cudaGetDevice(&previous) != cudaSuccess)
        previous = -1;
    cudaError_t err = cudaSetDevice(device);
    if (err == cudaSuccess) {
        cudaFuncAttributes attr;
        err = cudaFuncGetAttributes(&attr, dinf_probe_kernel);
        if (err == cudaSuccess)
            *binary_version = attr.binaryVersion;
    }
    if (previous >= 0)
        cudaSetDevice(previous);
    if (err != cudaSuccess) {
        snprintf(reason, reason_bytes, "cannot load libdeepinfra's kernels on device %d: %s (%s)",
                 device, cudaGetErrorString(err), cudaGetErrorName(err));
        cudaGetLastError(); /* clear the sticky-free error state */
        return -1;
    }
    return 0;
}
