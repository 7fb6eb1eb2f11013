/* dinf_device_query: answers with or without CUDA, GPU or driver. */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#if DINF_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

/* The struct as version 0.1 defined it. Later versions add fields at the end
 * and keep accepting callers that pass this size. */
#define DEVICE_INFO_V1_SIZE ((size_t)824)
_Static_assert(sizeof(dinf_device_info) >= DEVICE_INFO_V1_SIZE, "dinf_device_info shrank");

#if DINF_WITH_CUDA
static void set_reason(dinf_device_info *info, const char *what, cudaError_t err) {
    snprintf(info->reason, sizeof info->reason, "%s failed: %s (error %d)", what,
             cudaGetErrorString(err), (int)err);
}
#endif

DINF_API dinf_status dinf_device_query(int device, dinf_device_info *info) {
    if (!info)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "info is NULL");
    if (info->size < DEVICE_INFO_V1_SIZE)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "info->size=%u is smaller than sizeof(dinf_device_info)=%zu "
                         "(initialise it with DINF_DEVICE_INFO_INIT)",
                         info->size, DEVICE_INFO_V1_SIZE);
    if (device < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "device=%d is negative", device);

    /* This version writes exactly its own struct; a larger caller struct
     * keeps its extra fields untouched. */
    uint32_t caller_size = info->size;
    memset(info, 0, DEVICE_INFO_V1_SIZE);
    info->size = caller_size;
    info->device = device;

#if !DINF_WITH_CUDA
    info->built_with_cuda = 0;
    snprintf(info->reason, sizeof info->reason, "libdeepinfra was built without CUDA (make CUDA=0)");
    return DINF_STATUS_OK;
#else
    info->built_with_cuda = 1;
    int runtime = 0, driver = 0;
    if (cudaRuntimeGetVersion(&runtime) == cudaSuccess)
        info->runtime_version = runtime;
    if (cudaDriverGetVersion(&driver) == cudaSuccess)
        info->driver_version = driver; /* 0 when no driver is installed */

    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();
        if (info->driver_version == 0)
            snprintf(info->reason, sizeof info->reason,
                     "no CUDA driver is installed (libcuda.so.1 not found); cudaGetDeviceCount: %s",
                     cudaGetErrorString(err));
        else
            set_reason(info, "no usable CUDA device: cudaGetDeviceCount", err);
        return DINF_STATUS_OK;
    }
    info->device_count = count;
    if (device >= count) {
        snprintf(info->reason, sizeof info->reason, "device %d does not exist (%d CUDA device%s visible)",
                 device, count, count == 1 ? "" : "s");
        return DINF_STATUS_OK;
    }

    struct cudaDeviceProp prop;
    err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) {
        cudaGetLastError();
        set_reason(info, "cudaGetDeviceProperties", err);
        return DINF_STATUS_OK;
    }
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    info->sm_count = prop.multiProcessorCount;
    info->total_memory_bytes = prop.totalGlobalMem;
    info->shared_memory_per_block_optin_bytes = prop.sharedMemPerBlockOptin;
    snprintf(info->name, sizeof info->name, "%.255s", prop.name);

    /* The kernels are sm_90a machine code, which runs on compute capability
     * 9.0 only (the compute_90 PTX would not have the Hopper instructions). */
    if (prop.major != 9 || prop.minor != 0) {
        snprintf(info->reason, sizeof info->reason,
                 "device %d (%.255s) has compute capability %d.%d; libdeepinfra's kernels are built "
                 "for sm_90a (Hopper, compute capability 9.0)",
                 device, prop.name, prop.major, prop.minor);
        return DINF_STATUS_OK;
    }
    info->usable = 1;
    return DINF_STATUS_OK;
#endif
}
