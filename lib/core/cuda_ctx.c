/* The context-exact device guard and the launchers' host-side checks
 * (cuda_ctx.h). */
#include "cuda_ctx.h"

#if DINF_WITH_CUDA
#include <cuda.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

typedef CUresult (*ctx_get_current_fn)(CUcontext *);
typedef CUresult (*ctx_set_current_fn)(CUcontext);
typedef CUresult (*ctx_get_device_fn)(CUdevice *);
typedef CUresult (*get_error_name_fn)(CUresult, const char **);

static struct {
    pthread_once_t once;
    ctx_get_current_fn get_current;
    ctx_set_current_fn set_current;
    ctx_get_device_fn get_device;
    get_error_name_fn error_name;
} drv = {.once = PTHREAD_ONCE_INIT};

static void *entry(const char *name) {
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    cudaError_t err = cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &q);
    if (err != cudaSuccess || q != cudaDriverEntryPointSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return fn;
}

static void drv_load(void) {
    drv.get_current = (ctx_get_current_fn)entry("cuCtxGetCurrent");
    drv.set_current = (ctx_set_current_fn)entry("cuCtxSetCurrent");
    drv.get_device = (ctx_get_device_fn)entry("cuCtxGetDevice");
    drv.error_name = (get_error_name_fn)entry("cuGetErrorName");
}

cudaError_t dinf__cuda_guard_enter(dinf__cuda_guard *g, int device) {
    g->switched = 0;
    g->by_context = 0;
    g->saved_ctx = NULL;
    g->saved_device = -1;
    pthread_once(&drv.once, drv_load);
    if (drv.get_current && drv.set_current && drv.get_device) {
        CUcontext ctx = NULL;
        if (drv.get_current(&ctx) == CUDA_SUCCESS) {
            CUdevice current = -1;
            if (ctx && drv.get_device(&current) == CUDA_SUCCESS && (int)current == device)
                return cudaSuccess; /* the thread's context (maybe the caller's own) serves */
            cudaError_t err = cudaSetDevice(device);
            if (err != cudaSuccess) {
                drv.set_current(ctx); /* a failed cudaSetDevice may still have switched */
                return err;
            }
            g->switched = 1;
            g->by_context = 1;
            g->saved_ctx = (void *)ctx;
            return cudaSuccess;
        }
    }
    /* Fallback: the runtime's device number only. */
    int previous = -1;
    cudaError_t err = cudaGetDevice(&previous);
    if (err != cudaSuccess)
        return err;
    if (previous == device)
        return cudaSuccess;
    err = cudaSetDevice(device);
    if (err != cudaSuccess)
        return err;
    g->switched = 1;
    g->saved_device = previous;
    return cudaSuccess;
}

void dinf__cuda_guard_leave(dinf__cuda_guard *g) {
    if (!g->switched)
        return;
    g->switched = 0;
    if (g->by_context)
        drv.set_current((CUcontext)g->saved_ctx); /* NULL: the thread had none */
    else if (cudaSetDevice(g->saved_device) != cudaSuccess)
        cudaGetLastError();
}

dinf_status dinf__cuda_enter_sm90(const char *func, int device, dinf__cuda_guard *g,
                                  const char *kernels) {
    cudaError_t err = dinf__cuda_guard_enter(g, device);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* not sticky: no context was made */
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "no usable CUDA device %d: making it current failed: %s (%s)", device,
                          cudaGetErrorString(err), cudaGetErrorName(err));
    }
    int major = 0, minor = 0;
    err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    if (err != cudaSuccess) {
        cudaGetLastError();
        dinf__cuda_guard_leave(g);
        return dinf__fail(DINF_STATUS_CUDA_ERROR, func,
                          "reading the compute capability on device %d failed: %s (%s)", device,
                          cudaGetErrorString(err), cudaGetErrorName(err));
    }
    if (major != 9 || minor != 0) {
        dinf__cuda_guard_leave(g);
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "device %d has compute capability %d.%d; %s need sm_90 (Hopper)", device,
                          major, minor, kernels);
    }
    return DINF_STATUS_OK;
}

dinf_status dinf__cuda_check_stream(const char *func, int device, void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    if (s == NULL || s == cudaStreamLegacy || s == cudaStreamPerThread)
        return DINF_STATUS_OK; /* the current device's default stream */
    int owner = -1;
    cudaError_t err = cudaStreamGetDevice(s, &owner);
    if (err != cudaSuccess) {
        cudaGetLastError(); /* cannot tell: the launch reports what is wrong */
        return DINF_STATUS_OK;
    }
    if (owner != device)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "exec->stream belongs to CUDA device %d but exec->device is %d", owner,
                          device);
    return DINF_STATUS_OK;
}

int dinf__cuda_stream_capturing(void *stream) {
    enum cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    cudaError_t err = cudaStreamIsCapturing((cudaStream_t)stream, &status);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return status != cudaStreamCaptureStatusNone;
}

const char *dinf__cu_result_name(int result, char buf[32]) {
    pthread_once(&drv.once, drv_load);
    const char *name = NULL;
    if (drv.error_name && drv.error_name((CUresult)result, &name) == CUDA_SUCCESS && name)
        return name;
    snprintf(buf, 32, "CUresult %d", result);
    return buf;
}

#else
typedef int dinf__cuda_ctx_unused; /* a CPU-only build has no guard */
#endif /* DINF_WITH_CUDA */
