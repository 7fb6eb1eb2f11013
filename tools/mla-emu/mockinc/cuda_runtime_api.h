/* Host mock of the CUDA runtime calls tests/gpu/test_mla_gpu.c makes: device
 * memory is host memory, streams and graphs run eagerly. */
#ifndef EMU_CUDA_RUNTIME_API_H
#define EMU_CUDA_RUNTIME_API_H
#include <stdlib.h>
#include <string.h>
typedef int cudaError_t;
#define cudaSuccess 0
typedef void *cudaStream_t;
typedef void *cudaGraph_t;
typedef void *cudaGraphExec_t;
enum { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaStreamCaptureModeGlobal = 0 };
static inline const char *cudaGetErrorString(cudaError_t e) { (void)e; return "emu"; }
/* the allocation table (emu_device.c): the emulated kernels check that what
 * they touch lies inside an allocation (the FP8 L2 prefetch) */
void emu_alloc_note(const void *p, size_t n);
void emu_alloc_forget(const void *p);
static inline cudaError_t cudaMalloc(void **p, size_t n) {
    *p = aligned_alloc(256, (n + 255) / 256 * 256);
    if (!*p)
        return 2;
    memset(*p, 0xA5, (n + 255) / 256 * 256);
    emu_alloc_note(*p, n);
    return 0;
}
static inline cudaError_t cudaFree(void *p) { emu_alloc_forget(p); free(p); return 0; }
static inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, int k) { (void)k; memcpy(d, s, n); return 0; }
static inline cudaError_t cudaMemset(void *d, int v, size_t n) { memset(d, v, n); return 0; }
static inline cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t s) { (void)s; memset(d, v, n); return 0; }
static inline cudaError_t cudaStreamCreate(cudaStream_t *s) { *s = (void *)0x1234; return 0; }
static inline cudaError_t cudaStreamDestroy(cudaStream_t s) { (void)s; return 0; }
static inline cudaError_t cudaStreamSynchronize(cudaStream_t s) { (void)s; return 0; }
static inline cudaError_t cudaDeviceSynchronize(void) { return 0; }
static inline cudaError_t cudaStreamBeginCapture(cudaStream_t s, int m) { (void)s; (void)m; return 0; }
static inline cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g) { (void)s; *g = (void *)1; return 0; }
static inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long f) { (void)g; (void)f; *e = (void *)1; return 0; }
static inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s) { (void)e; (void)s; return 0; }
static inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { (void)e; return 0; }
static inline cudaError_t cudaGraphDestroy(cudaGraph_t g) { (void)g; return 0; }
#endif
