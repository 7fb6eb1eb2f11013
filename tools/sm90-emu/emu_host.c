/*
 * The host side of sm90-emu: the CUDA runtime functions the library's host
 * code calls (one emulated sm_90 device), cuTensorMapEncodeTiled through
 * cudaGetDriverEntryPointByVersion, the JIT runtime's get-kernel / launch
 * (dispatching to the kernel instances compiled into the emulator), and a
 * hook around dinf__fp8_heuristic so the harness can force a tile config.
 * Everything else (gemm.c's checks, gemm_cuda.c's plan, tensor-map
 * parameters and launch) is the library's own code, compiled from source.
 */
#include "emu_host.h"

#include "gemm/gemm_sm90.h"
#include "jit_internal.h"

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------- CUDA runtime -- */
static int emu_num_sms(void) {
    const char *e = getenv("EMU_NUM_SMS");
    const int v = e ? atoi(e) : 132;
    return v < 1 ? 1 : v;
}
static int current_device = 0;

cudaError_t cudaGetDeviceCount(int *count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *device) {
    *device = current_device;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
    if (device != 0)
        return cudaErrorInvalidDevice;
    current_device = device;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *value, enum cudaDeviceAttr attr, int device) {
    if (device != 0)
        return cudaErrorInvalidDevice;
    switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = emu_num_sms(); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 232448; return cudaSuccess;
    default: return cudaErrorInvalidValue;
    }
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int device) {
    if (device != 0)
        return cudaErrorInvalidDevice;
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "sm90-emu (host emulation of an sm_90a device)");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = emu_num_sms();
    prop->sharedMemPerBlockOptin = 232448;
    prop->totalGlobalMem = 1ull << 36;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) {
    *v = 13000;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorName(cudaError_t err) {
    return err == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated";
}
/* lib/core/cuda_ctx.c: the launch's stream checks (one device, no capture). */
cudaError_t cudaStreamGetDevice(cudaStream_t stream, int *device) {
    (void)stream;
    *device = 0;
    return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status) {
    (void)stream;
    *status = cudaStreamCaptureStatusNone;
    return cudaSuccess;
}
const char *cudaGetErrorString(cudaError_t err) {
    return err == cudaSuccess ? "no error" : "emulated CUDA error";
}

static CUresult CUDAAPI encode_tiled(CUtensorMap *map, CUtensorMapDataType dtype, cuuint32_t rank,
                                     void *base, const cuuint64_t *dims, const cuuint64_t *strides,
                                     const cuuint32_t *box, const cuuint32_t *element_strides,
                                     CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                     CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
    emu_host_stats.encodes++;
    return (CUresult)emu_encode_tiled(map, (int)dtype, rank, base, (const uint64_t *)dims,
                                      (const uint64_t *)strides, box, element_strides, (int)interleave,
                                      (int)swizzle, (int)l2, (int)oob);
}

cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **fn, unsigned int version,
                                             unsigned long long flags,
                                             enum cudaDriverEntryPointQueryResult *status) {
    (void)version;
    (void)flags;
    if (strcmp(symbol, "cuTensorMapEncodeTiled") == 0) {
        *fn = (void *)encode_tiled;
        if (status)
            *status = cudaDriverEntryPointSuccess;
        return cudaSuccess;
    }
    *fn = NULL;
    if (status)
        *status = cudaDriverEntryPointSymbolNotFound;
    return cudaSuccess;
}

/* ---------------------------------------------------------------- JIT -- */
emu_host_stats_t emu_host_stats;

dinf_status dinf__jit_get_kernel(const char *func, const dinf_jit_kernel_config *config, int device,
                                 const dinf__jit_kernel **out) {
    (void)device;
    static dinf__jit_kernel slots[256];
    static int used = 0;
    const void *entry = emu_find_kernel(config->name, config->num_params, (const long long *)config->params);
    if (!entry) {
        char label[256];
        int o = snprintf(label, sizeof label, "%s<", config->name);
        for (int i = 0; i < config->num_params && o < (int)sizeof label - 24; i++)
            o += snprintf(label + o, sizeof label - (size_t)o, "%s%lld", i ? "," : "",
                          (long long)config->params[i]);
        return dinf__fail(DINF_STATUS_JIT_ERROR, func,
                          "sm90-emu: kernel %s> is not compiled into the emulator (add it to "
                          "tools/sm90-emu/gen.py INSTANCES or EMU_EXTRA_CONFIGS)",
                          label);
    }
    for (int i = 0; i < used; i++)
        if (slots[i].kernel == entry) {
            *out = &slots[i];
            return DINF_STATUS_OK;
        }
    if (used == 256)
        return dinf__fail(DINF_STATUS_INTERNAL, func, "sm90-emu: kernel table full");
    memset(&slots[used], 0, sizeof slots[used]);
    slots[used].kernel = (void *)entry;
    slots[used].loaded_registers = slots[used].loaded_static_smem = -1; /* the cubin's figures */
    /* The cubin's ptxas report, as far as the launch reads it: the fast rung
     * at BLOCK_M 128 and 256 (384 threads) checks the registers at entry (its
     * setmaxnreg split needs the __launch_bounds__(384, 1) cap). */
    static dinf__jit_cubin cubins[256];
    memset(&cubins[used], 0, sizeof cubins[used]);
    cubins[used].resources.registers =
        strcmp(config->name, "fp8_gemm_fast") == 0 && config->num_params > 1 &&
                config->params[1] >= 128
            ? DINF_FP8_FAST_ENTRY_REGS
            : 255;
    cubins[used].key.lo = (uint64_t)used + 1; /* distinct per kernel, as a content hash is */
    slots[used].cubin = &cubins[used];
    *out = &slots[used++];
    return DINF_STATUS_OK;
}

#ifdef DINF__JIT_LAUNCH_PDL
int emu_has_pdl(void) { return 1; }
dinf_status dinf__jit_launch(const char *func, const dinf__jit_kernel *kernel, int device,
                             const unsigned grid[3], const unsigned block[3], const unsigned cluster[3],
                             unsigned flags, size_t dynamic_shared_bytes, dinf_stream_t stream,
                             void **args) {
#else
/* A checkout (EMU_ROOT) from before programmatic dependent launch: the
 * launch has no flags argument. */
#define DINF__JIT_LAUNCH_PDL 1u
int emu_has_pdl(void) { return 0; }
dinf_status dinf__jit_launch(const char *func, const dinf__jit_kernel *kernel, int device,
                             const unsigned grid[3], const unsigned block[3], const unsigned cluster[3],
                             size_t dynamic_shared_bytes, dinf_stream_t stream, void **args) {
    const unsigned flags = 0;
#endif
    (void)stream;
    /* jit_load.c's rule: unknown flag bits are the library's bug */
    if (flags & ~DINF__JIT_LAUNCH_PDL)
        return dinf__fail(DINF_STATUS_INTERNAL, func, "launch flags 0x%x: unknown bits", flags);
    if (device != 0)
        return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "sm90-emu: device %d", device);
    if (dynamic_shared_bytes > 232448)
        return dinf__fail(DINF_STATUS_CUDA_ERROR, func,
                          "sm90-emu: %zu bytes of dynamic shared memory exceed the sm_90 limit 232448",
                          dynamic_shared_bytes);
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0)
        return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "sm90-emu: empty grid");
    emu_host_stats.launches++;
    emu_host_stats.last_grid = grid[0] * grid[1] * grid[2];
    emu_host_stats.last_block = block[0];
    emu_host_stats.last_smem = dynamic_shared_bytes;
    emu_host_stats.last_cluster = cluster[0] ? cluster[0] * cluster[1] * cluster[2] : 1;
    emu_host_stats.last_pdl = (flags & DINF__JIT_LAUNCH_PDL) != 0;
    emu_launch_kernel(kernel->kernel, grid, block, cluster, dynamic_shared_bytes,
                      (flags & DINF__JIT_LAUNCH_PDL) != 0, args);
    return DINF_STATUS_OK;
}

/* -------------------------------------------------- heuristic override -- */
emu_force_config_t emu_force_config;

#ifdef DINF__FP8_KERNEL_FAST
/* Two rungs (fp8_gemm_fast.cuh and fp8_gemm.cuh): the hook is the rung's
 * choice for the device, dinf__fp8_choose_dev (renamed _lib in
 * gemm_heuristic.c by emu.mk), which the GPU path's plan calls. */
int emu_has_fast_rung(void) { return 1; }
dinf__fp8_config dinf__fp8_choose_dev_lib(int kernel, int gemm_type, int64_t m, int64_t n,
                                          int64_t k, int64_t num_groups,
                                          const dinf__fp8_device *dev);
dinf__fp8_config dinf__fp8_choose_dev(int kernel, int gemm_type, int64_t m, int64_t n, int64_t k,
                                      int64_t num_groups, const dinf__fp8_device *dev) {
    dinf__fp8_config c = dinf__fp8_choose_dev_lib(kernel, gemm_type, m, n, k, num_groups, dev);
    emu_host_stats.heuristic_block_m = c.block_m;
    emu_host_stats.heuristic_block_n = c.block_n;
    emu_host_stats.heuristic_stages = c.stages;
    if (emu_force_config.block_m)
        c.block_m = emu_force_config.block_m;
    if (emu_force_config.block_n)
        c.block_n = emu_force_config.block_n;
    if (emu_force_config.stages)
        c.stages = emu_force_config.stages;
    if (emu_force_config.cluster)
        c.cluster = emu_force_config.cluster;
    if (emu_force_config.split_k)
        c.split_k = emu_force_config.split_k;
    c.threads = dinf_fp8_threads(c.block_m);
    c.smem_bytes = kernel == DINF__FP8_KERNEL_SIMPLE
                       ? DINF_FP8_SMEM_BYTES(c.block_m, c.block_n, c.stages)
                       : DINF_FP8_FAST_SPLIT_SMEM_BYTES(c.block_m, c.block_n, c.stages, c.split_k);
#ifdef DINF__FP8_KERNEL_WGRAD
    if (kernel == DINF__FP8_KERNEL_WGRAD) /* fp8_gemm_1d1d.cuh */
        c.smem_bytes = DINF_FP8_WGRAD_SMEM_BYTES(c.block_m, c.block_n, c.stages);
#endif
    emu_host_stats.block_m = c.block_m;
    emu_host_stats.block_n = c.block_n;
    emu_host_stats.stages = c.stages;
    emu_host_stats.cluster = c.cluster;
    emu_host_stats.split_k = c.split_k;
    return c;
}

/* The fast rung's launch asks for these. */
cudaError_t cudaKernelSetAttributeForDevice(cudaKernel_t kernel, enum cudaFuncAttribute attr, int value,
                                            int device) {
    (void)kernel;
    (void)attr;
    (void)value;
    return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
/* Clusters of `size` CTAs the emulated device holds: EMU_NUM_SMS / size, or
 * fewer where $EMU_CLUSTER_SLOTS ("size:count,...", e.g. "4:1") says so (a
 * device whose GPCs leave clusters of 3 and 4 short). */
static int emu_cluster_slots(int size) {
    int slots = emu_num_sms() / (size > 0 ? size : 1);
    const char *e = getenv("EMU_CLUSTER_SLOTS");
    for (const char *q = e; q && *q;) {
        int sz = 0, count = 0, used = 0;
        if (sscanf(q, "%d:%d%n", &sz, &count, &used) != 2)
            break;
        if (sz == size && count >= 1 && count < slots)
            slots = count;
        q += used;
        if (*q == ',')
            q++;
    }
    return slots;
}
cudaError_t cudaOccupancyMaxActiveClusters(int *clusters, const void *func, const cudaLaunchConfig_t *config) {
    (void)func;
    unsigned size = 1;
    for (unsigned i = 0; i < config->numAttrs; i++)
        if (config->attrs[i].id == cudaLaunchAttributeClusterDimension)
            size = config->attrs[i].val.clusterDim.x * config->attrs[i].val.clusterDim.y *
                   config->attrs[i].val.clusterDim.z;
    *clusters = emu_cluster_slots((int)size);
    return cudaSuccess;
}
/* No stream capture in the emulator: the mode swap is accepted and changes nothing. */
cudaError_t cudaThreadExchangeStreamCaptureMode(enum cudaStreamCaptureMode *mode) {
    (void)mode;
    return cudaSuccess;
}
/* kernels/core/cluster_slots.cu's query (the library's device description). */
cudaError_t dinf__cuda_cluster_slots(int cluster, int *slots);
cudaError_t dinf__cuda_cluster_slots(int cluster, int *slots) {
    *slots = emu_cluster_slots(cluster);
    return cudaSuccess;
}
#else
/* One rung (fp8_gemm.cuh): the hook is dinf__fp8_heuristic (renamed _lib in
 * gemm_heuristic.c by emu.mk). */
int emu_has_fast_rung(void) { return 0; }
dinf__fp8_config dinf__fp8_heuristic_lib(int gemm_type, int64_t m, int64_t n, int64_t k,
                                         int64_t num_groups, int num_sms);

/* The library's choice, with the harness's forced block_m / block_n /
 * stages (0: keep) substituted; threads and shared memory follow from them
 * as fp8_gemm.cuh documents. */
dinf__fp8_config dinf__fp8_heuristic(int gemm_type, int64_t m, int64_t n, int64_t k,
                                     int64_t num_groups, int num_sms) {
    dinf__fp8_config c = dinf__fp8_heuristic_lib(gemm_type, m, n, k, num_groups, num_sms);
    emu_host_stats.heuristic_block_m = c.block_m;
    emu_host_stats.heuristic_block_n = c.block_n;
    emu_host_stats.heuristic_stages = c.stages;
    if (emu_force_config.block_m)
        c.block_m = emu_force_config.block_m;
    if (emu_force_config.block_n)
        c.block_n = emu_force_config.block_n;
    if (emu_force_config.stages)
        c.stages = emu_force_config.stages;
    c.threads = dinf_fp8_threads(c.block_m);
    c.smem_bytes = DINF_FP8_SMEM_BYTES(c.block_m, c.block_n, c.stages);
    emu_host_stats.block_m = c.block_m;
    emu_host_stats.block_n = c.block_n;
    emu_host_stats.stages = c.stages;
    emu_host_stats.cluster = 1;
    emu_host_stats.split_k = 1;
    return c;
}
#endif
