/*
 * The current-device guard every CUDA launch path uses (C and C++; internal,
 * not installed), and small host-side checks shared by the launchers.
 *
 * Why not just cudaGetDevice + cudaSetDevice(previous): cudaSetDevice binds
 * the *primary* context of a device to the thread and initialises it. On a
 * thread that had no current context, cudaGetDevice reports device 0, and
 * "restoring" it creates device 0's primary context (hundreds of MB on GPU 0
 * in every process, the usual multi-GPU complaint); on a thread whose current
 * context is the caller's own (cuCtxCreate / cuCtxSetCurrent), it replaces
 * that context with a primary one. The guard therefore saves and restores the
 * exact driver context (cuCtxGetCurrent / cuCtxSetCurrent, reached through
 * cudaGetDriverEntryPointByVersion like the tensor-map encoder): a thread
 * that had no context has none again afterwards, a caller's context is put
 * back as it was, and nothing is switched when the current context already
 * belongs to the target device. Without those driver entry points (a runtime
 * that cannot reach the driver) it falls back to the device-number guard.
 */
#ifndef DINF_CUDA_CTX_H
#define DINF_CUDA_CTX_H

#include "internal.h"

#if defined(__CUDACC__) || DINF_WITH_CUDA
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dinf__cuda_guard {
    int switched;     /* 1 when enter changed the thread's context */
    int by_context;   /* restore through cuCtxSetCurrent(saved_ctx) */
    void *saved_ctx;  /* CUcontext current at enter (may be NULL) */
    int saved_device; /* the fallback's cudaGetDevice at enter */
} dinf__cuda_guard;

/* Make `device` current for the calling thread (its primary context, unless
 * the thread's current context already belongs to `device`, which is then
 * kept). Returns the runtime's error; on failure nothing is left switched and
 * dinf__cuda_guard_leave is a no-op. Always pair with dinf__cuda_guard_leave. */
cudaError_t dinf__cuda_guard_enter(dinf__cuda_guard *g, int device);

/* Put back exactly what enter found (no-op when it switched nothing). */
void dinf__cuda_guard_leave(dinf__cuda_guard *g);

/* Enter the guard and require compute capability 9.0: UNSUPPORTED naming
 * `kernels` on any other device or when there is no usable device,
 * CUDA_ERROR when the capability cannot be read. On a failure the guard is
 * already left. */
dinf_status dinf__cuda_enter_sm90(const char *func, int device, dinf__cuda_guard *g,
                                  const char *kernels);

/* INVALID_ARGUMENT when `stream` (a cudaStream_t; NULL, cudaStreamLegacy and
 * cudaStreamPerThread are accepted as they are) belongs to a device other
 * than `device`: the launch would otherwise fail with a bare "invalid
 * resource handle". A stream the runtime cannot query passes (the launch
 * then reports what is wrong with it). */
dinf_status dinf__cuda_check_stream(const char *func, int device, void *stream);

/* Whether `stream` is being captured into a graph (1), not (0), or the query
 * failed (-1, the runtime's error cleared). Calls that wait on the host use it
 * to refuse capture instead of invalidating the caller's capture. */
int dinf__cuda_stream_capturing(void *stream);

/* The driver's name for a CUresult ("CUDA_ERROR_INVALID_VALUE"), or
 * "CUresult <n>" in `buf` when the driver cannot be asked. */
const char *dinf__cu_result_name(int result, char buf[32]);

#ifdef __cplusplus
}
#endif

#endif /* DINF_WITH_CUDA */
#endif
