/*
 * Launch-side helpers shared by the nvcc-built kernel files (kernels/<module>/
 * *.cu; C++ only, not installed): the current-device guard every launcher
 * uses, and the sm_90 check of the Hopper kernels.
 */
#ifndef DINF_CUDA_GUARD_H
#define DINF_CUDA_GUARD_H

#include <cuda_runtime_api.h>

#include "internal.h"

namespace dinf_cuda {

/* Makes a device current for a launch and puts the caller's back when it
 * goes out of scope (nothing to restore when it already was current). */
struct device_guard {
    int previous = -1;
    cudaError_t enter(int device) {
        cudaError_t err = cudaGetDevice(&previous);
        if (err == cudaSuccess && previous != device)
            err = cudaSetDevice(device);
        else
            previous = -1; /* nothing to restore */
        return err;
    }
    ~device_guard() {
        if (previous >= 0)
            cudaSetDevice(previous);
    }
};

/* Make `device` current (through guard) and require compute capability 9.0:
 * UNSUPPORTED naming `kernels` on any other device or when there is no
 * usable device, CUDA_ERROR when the capability cannot be read. */
inline dinf_status enter_sm90(const char *func, int device, device_guard &guard,
                              const char *kernels) {
    cudaError_t err = guard.enter(device);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* not sticky: no context was made */
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "no usable CUDA device %d: %s (%s)",
                          device, cudaGetErrorString(err), cudaGetErrorName(err));
    }
    int major = 0, minor = 0;
    err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return dinf__fail(DINF_STATUS_CUDA_ERROR, func,
                          "reading the compute capability on device %d failed: %s (%s)", device,
                          cudaGetErrorString(err), cudaGetErrorName(err));
    }
    if (major != 9 || minor != 0)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "device %d has compute capability %d.%d; %s need sm_90 (Hopper)", device,
                          major, minor, kernels);
    return DINF_STATUS_OK;
}

} // namespace dinf_cuda

#endif
