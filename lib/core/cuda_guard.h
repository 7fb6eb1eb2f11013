/*
 * Launch-side helpers shared by the nvcc-built kernel files (kernels/<module>/
 * *.cu; C++ only, not installed): the RAII form of the context-exact
 * device guard (cuda_ctx.h) and the sm_90 and stream checks of the Hopper
 * kernels.
 */
#ifndef DINF_CUDA_GUARD_H
#define DINF_CUDA_GUARD_H

#include <cuda_runtime_api.h>

#include "cuda_ctx.h"
#include "internal.h"

namespace dinf_cuda {

/* Makes a device current for a launch and puts back exactly the caller's
 * context when it goes out of scope (cuda_ctx.h: the context-exact guard). */
struct device_guard {
    dinf__cuda_guard g{};
    cudaError_t enter(int device) { return dinf__cuda_guard_enter(&g, device); }
    ~device_guard() { dinf__cuda_guard_leave(&g); }
};

/* Make `device` current (through guard), require compute capability 9.0
 * (UNSUPPORTED naming `kernels` on any other device or when there is no
 * usable device, CUDA_ERROR when the capability cannot be read), and check
 * that `stream` belongs to that device (INVALID_ARGUMENT). */
inline dinf_status enter_sm90(const char *func, int device, device_guard &guard,
                              const char *kernels, void *stream) {
    dinf_status st = dinf__cuda_enter_sm90(func, device, &guard.g, kernels);
    if (st == DINF_STATUS_OK)
        st = dinf__cuda_check_stream(func, device, stream);
    return st;
}

} // namespace dinf_cuda

#endif
