/* Loading and launching JIT cubins with the CUDA runtime (context-independent
 * libraries: cudaLibraryLoadData + cudaLibraryGetKernel, ecosystem.md 2.5). */
#include "jit_internal.h"

#include <stdio.h>
#include <string.h>

#if DINF_WITH_CUDA
#include <cuda_runtime_api.h>

static dinf_status cuda_fail(const char *func, const char *what, cudaError_t err) {
    cudaGetLastError(); /* clear a sticky-free error so later calls start clean */
    return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "%s failed: %s (error %d)", what,
                      cudaGetErrorString(err), (int)err);
}

dinf_status dinf__jit_device_arch(const char *func, int device, char arch[16]) {
    int major = 0, minor = 0;
    cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    if (err != cudaSuccess)
        return cuda_fail(func, "querying the device's compute capability", err);
    /* Architecture-specific targets (wgmma, setmaxnreg, ...) where they exist. */
    const char *suffix = (major == 9 && minor == 0) || (major >= 10 && minor == 0) ? "a" : "";
    snprintf(arch, 16, "sm_%d%d%s", major, minor, suffix);
    return DINF_STATUS_OK;
}

dinf_status dinf__jit_load_cubin(const char *func, const dinf__jit_cubin *cubin, void **library,
                                 void **kernel, int32_t *registers, int32_t *static_smem) {
    cudaLibrary_t lib = NULL;
    cudaKernel_t k = NULL;
    *registers = *static_smem = -1;
    /* Loading a module is a "potentially unsafe" call while this thread's
     * stream is being captured in global mode; relaxed mode is the runtime's
     * documented way to make it anyway without invalidating the capture. */
    enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    const int exchanged = cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess;
    if (!exchanged)
        cudaGetLastError();
    const char *failed = NULL;
    cudaError_t err = cudaLibraryLoadData(&lib, cubin->data, NULL, NULL, 0, NULL, NULL, 0);
    if (err != cudaSuccess) {
        failed = "cudaLibraryLoadData rejected the cubin";
    } else if ((err = cudaLibraryGetKernel(&k, lib, cubin->lowered_name)) != cudaSuccess) {
        failed = "cudaLibraryGetKernel could not find the kernel in the cubin";
        cudaGetLastError();
        cudaLibraryUnload(lib);
    } else {
        struct cudaFuncAttributes fa;
        if (cudaFuncGetAttributes(&fa, (const void *)k) == cudaSuccess) {
            *registers = fa.numRegs;
            *static_smem = (int32_t)fa.sharedSizeBytes;
        } else {
            cudaGetLastError(); /* the ptxas log's figures stand in */
        }
    }
    if (exchanged)
        cudaThreadExchangeStreamCaptureMode(&mode);
    if (failed) {
        cudaGetLastError();
        return dinf__fail(DINF_STATUS_JIT_ERROR, func, "%s of %s (%zu bytes): %s (%s)", failed,
                          cubin->lowered_name, cubin->bytes, cudaGetErrorString(err),
                          cudaGetErrorName(err));
    }
    *library = lib;
    *kernel = k;
    return DINF_STATUS_OK;
}

void dinf__jit_unload(void *library);
void dinf__jit_unload(void *library) {
    if (library && cudaLibraryUnload((cudaLibrary_t)library) != cudaSuccess)
        cudaGetLastError();
}

/* Whether a PDL launch on `stream` may carry the programmatic attribute.
 * Outside capture: always (the runtime orders it after any predecessor).
 * Under capture a programmatic edge may only join two kernel nodes
 * (cudaGraphKernelNodePortProgrammatic / cudaGraphDependencyTypeProgrammatic,
 * driver_types.h): the launch keeps the attribute only when its capture
 * dependency is exactly one kernel node; after a memset, a copy, a join of
 * several branches or nothing it is launched without it (an ordinary full
 * dependency: the same results, no overlap). */
static int pdl_fits_capture(cudaStream_t stream) {
    enum cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    const cudaGraphNode_t *deps = NULL;
    size_t count = 0;
    if (cudaStreamGetCaptureInfo(stream, &status, NULL, NULL, &deps, NULL, &count) !=
        cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (status == cudaStreamCaptureStatusNone)
        return 1;
    if (status != cudaStreamCaptureStatusActive || count != 1 || !deps)
        return 0;
    enum cudaGraphNodeType type = cudaGraphNodeTypeEmpty;
    if (cudaGraphNodeGetType(deps[0], &type) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return type == cudaGraphNodeTypeKernel;
}

dinf_status dinf__jit_launch(const char *func, const dinf__jit_kernel *kernel, int device,
                             const unsigned grid[3], const unsigned block[3],
                             const unsigned cluster[3], unsigned flags,
                             size_t dynamic_shared_bytes, dinf_stream_t stream, void **args) {
    if (!kernel || !kernel->kernel)
        return dinf__fail(DINF_STATUS_INTERNAL, func, "launch of a kernel that is not loaded");
    if (flags & ~DINF__JIT_LAUNCH_PDL)
        return dinf__fail(DINF_STATUS_INTERNAL, func, "launch flags 0x%x: unknown bits", flags);
    cudaKernel_t k = (cudaKernel_t)kernel->kernel;
    cudaError_t err;
    if (dynamic_shared_bytes > 48 * 1024) {
        /* Once per (kernel, device): raise the limit to the device's opt-in maximum. */
        dinf__jit_kernel *mutable_kernel = (dinf__jit_kernel *)kernel; /* the table's storage */
        const unsigned long long bit = device >= 0 && device < 64 ? 1ull << device : 0;
        if (!bit ||
            !(__atomic_load_n(&mutable_kernel->smem_optin_devices, __ATOMIC_ACQUIRE) & bit)) {
            int optin = 0;
            err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
            if (err != cudaSuccess)
                return cuda_fail(func, "querying the device's shared memory limit", err);
            const int32_t static_smem = dinf__jit_static_smem(kernel);
            if ((size_t)optin < dynamic_shared_bytes + (size_t)static_smem)
                return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                                  "the kernel needs %zu bytes of dynamic and %d of static shared "
                                  "memory per block; device %d allows %d in all",
                                  dynamic_shared_bytes, (int)static_smem, device, optin);
            /* The dynamic limit plus the static shared memory may not exceed opt-in. */
            err = cudaKernelSetAttributeForDevice(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                  optin - dinf__jit_static_smem(kernel), device);
            if (err != cudaSuccess)
                return cuda_fail(func,
                                 "cudaKernelSetAttributeForDevice(max dynamic shared memory)", err);
            if (bit)
                __atomic_fetch_or(&mutable_kernel->smem_optin_devices, bit, __ATOMIC_RELEASE);
        }
    }
    cudaLaunchConfig_t config;
    memset(&config, 0, sizeof config);
    config.gridDim = (dim3){grid[0], grid[1], grid[2]};
    config.blockDim = (dim3){block[0], block[1], block[2]};
    config.dynamicSmemBytes = dynamic_shared_bytes;
    config.stream = (cudaStream_t)stream;
    cudaLaunchAttribute attrs[2];
    memset(attrs, 0, sizeof attrs);
    unsigned num_attrs = 0;
    if (cluster && cluster[0] * cluster[1] * cluster[2] > 1) {
        attrs[num_attrs].id = cudaLaunchAttributeClusterDimension;
        attrs[num_attrs].val.clusterDim.x = cluster[0];
        attrs[num_attrs].val.clusterDim.y = cluster[1];
        attrs[num_attrs].val.clusterDim.z = cluster[2];
        num_attrs++;
    }
    if ((flags & DINF__JIT_LAUNCH_PDL) && pdl_fits_capture((cudaStream_t)stream)) {
        /* Programmatic dependent launch: the kernel's griddepcontrol.wait
         * orders it after the previous kernel on the stream. */
        attrs[num_attrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attrs[num_attrs].val.programmaticStreamSerializationAllowed = 1;
        num_attrs++;
    }
    if (num_attrs) {
        config.attrs = attrs;
        config.numAttrs = num_attrs;
    }
    err = cudaLaunchKernelExC(&config, (const void *)k, args);
    if (err != cudaSuccess)
        return cuda_fail(func, "cudaLaunchKernelExC", err);
    return DINF_STATUS_OK;
}

#else /* CPU-only build */

dinf_status dinf__jit_device_arch(const char *func, int device, char arch[16]) {
    (void)device;
    arch[0] = '\0';
    return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "libdeepinfra was built without CUDA");
}

dinf_status dinf__jit_load_cubin(const char *func, const dinf__jit_cubin *cubin, void **library,
                                 void **kernel, int32_t *registers, int32_t *static_smem) {
    (void)cubin;
    *library = *kernel = NULL;
    *registers = *static_smem = -1;
    return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "libdeepinfra was built without CUDA");
}

void dinf__jit_unload(void *library);
void dinf__jit_unload(void *library) { (void)library; }

dinf_status dinf__jit_launch(const char *func, const dinf__jit_kernel *kernel, int device,
                             const unsigned grid[3], const unsigned block[3],
                             const unsigned cluster[3], unsigned flags,
                             size_t dynamic_shared_bytes, dinf_stream_t stream, void **args) {
    (void)flags;
    return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "libdeepinfra was built without CUDA");
}
#endif
