/*
 * The Hopper path of the FP8 GEMMs: GPU argument rules, tensor maps and the
 * launch of the JIT kernels (jit/templates/fp8_gemm_fast.cuh, the default,
 * and the reference rung jit/templates/fp8_gemm.cuh; DINF_FP8_GEMM_KERNEL picks).
 *
 * Tensor maps are encoded on the host with cuTensorMapEncodeTiled, a driver
 * function reached through cudaGetDriverEntryPointByVersion (the library
 * never links libcuda). cuda.h is used at build time for its types only.
 *
 * Device-side contracts (device memory is never read by the host, and the
 * call never synchronises):
 *   - contiguous: the kernel reads m_indices at the first row of each 128-row
 *     block; a block whose index is outside [0, num_groups) (-1 included) is
 *     skipped (not written); indices that change inside a block are the
 *     caller's bug: the block is computed with its first row's group.
 *   - masked: masked_m[g] is clamped to [0, m_max] on the device: a count
 *     above m_max computes and writes m_max rows, never beyond the group.
 * The CPU path rejects both with INVALID_ARGUMENT.
 */
#include "gemm_sm90.h"

#include "../../jit/jit_internal.h"
#include "../core/cuda_ctx.h"

#include <stdio.h>
#include <string.h>

static long long ceil_div_ll(long long a, long long b) { return a / b + (a % b != 0); }

#define INT32_LIMIT 2147483647LL
/* Tensor-map strides must stay below 2^40 bytes. */
#define TMA_STRIDE_LIMIT (1LL << 40)

static const char *form_name(int gemm_type) {
    return gemm_type == DINF_FP8_GEMM_CONTIGUOUS ? "m_sum"
           : gemm_type == DINF_FP8_GEMM_MASKED   ? "m_max"
                                                 : "m";
}

static int misaligned(const void *p, unsigned bytes) { return ((uintptr_t)p % bytes) != 0; }

dinf_status dinf__fp8_gpu_check(const char *func, const dinf__fp8_gpu_problem *p) {
    const int64_t rows = p->gemm_type == DINF_FP8_GEMM_MASKED ? p->m * p->num_groups : p->m;
    if (rows == 0 || p->n == 0)
        return DINF_STATUS_OK;
    if (p->k == 0)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "k=0: the Hopper kernels need k >= 1 (the CPU path writes zeros)");
    if (p->k > INT32_LIMIT - DINF_FP8_BLOCK_K || p->n > INT32_LIMIT || p->m > INT32_LIMIT ||
        p->num_groups > INT32_LIMIT)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "%s=%lld, n=%lld, k=%lld, num_groups=%lld: the Hopper kernels take "
                          "sizes below 2^31",
                          form_name(p->gemm_type), (long long)p->m, (long long)p->n,
                          (long long)p->k, (long long)p->num_groups);
    /* Alignment: TMA reads A, B and the A scales (16-byte aligned bases and
     * row strides); the output is stored in 16-byte-aligned rows. */
    struct {
        const char *name;
        const void *ptr;
        unsigned bytes;
    } ptrs[] = {{"a", p->a, 16},        {"a_scales", p->a_scales, 16}, {"b", p->b, 16},
                {"b_scales", p->b_scales, p->wgrad ? 16 : 4}, {"d", p->d, p->wgrad ? 4 : 16},
                {p->gemm_type == DINF_FP8_GEMM_MASKED ? "masked_m" : "m_indices", p->group_info, 4}};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        if (misaligned(ptrs[i].ptr, ptrs[i].bytes))
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "%s=%p is not %u-byte aligned (required on DINF_EXEC_CUDA)",
                              ptrs[i].name, ptrs[i].ptr, ptrs[i].bytes);
    if (p->lda % 16 != 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "lda=%lld is not a multiple of 16 bytes (required on DINF_EXEC_CUDA)",
                          (long long)p->lda);
    if (p->ldb % 16 != 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "ldb=%lld is not a multiple of 16 bytes (required on DINF_EXEC_CUDA)",
                          (long long)p->ldb);
    /* bf16 rows are stored in 16-byte units; the wgrad kernel reads and
     * writes float32 elements one by one (any ldd) */
    const int d_bytes = p->wgrad ? 4 : 2;
    if (!p->wgrad && p->ldd % 8 != 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "ldd=%lld is not a multiple of 8 elements (16 bytes; required on "
                          "DINF_EXEC_CUDA)",
                          (long long)p->ldd);
    /* Tensor-map strides (bytes) of the 3-D views. */
    const int64_t aligned_m = ceil_div_ll(p->m, 4) * 4, k_blocks = ceil_div_ll(p->k, 128);
    const long double strides[] = {(long double)p->lda, (long double)p->lda * (long double)p->m,
                                   (long double)p->ldb, (long double)p->ldb * (long double)p->n,
                                   (long double)aligned_m * 4.0L * (long double)k_blocks,
                                   (long double)p->ldd * d_bytes * (long double)p->m,
                                   /* the wgrad's N-major B scales */
                                   p->wgrad ? (long double)(ceil_div_ll(p->n, 4) * 4) * 4.0L *
                                                  (long double)k_blocks
                                            : 0.0L};
    for (size_t i = 0; i < sizeof strides / sizeof strides[0]; i++)
        if (strides[i] >= (long double)TMA_STRIDE_LIMIT)
            return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                              "lda=%lld, ldb=%lld, ldd=%lld, %s=%lld, n=%lld, k=%lld: a "
                              "tensor-map stride reaches 2^40 bytes (the Hopper kernels' limit)",
                              (long long)p->lda, (long long)p->ldb, (long long)p->ldd,
                              form_name(p->gemm_type), (long long)p->m, (long long)p->n,
                              (long long)p->k);
    return DINF_STATUS_OK;
}

void dinf__fp8_plan_config(const dinf__fp8_gpu_problem *p, int num_sms,
                           const dinf__fp8_config *config, dinf__fp8_launch_plan *plan) {
    dinf__fp8_device dev;
    dinf__fp8_device_ideal(num_sms, &dev);
    dinf__fp8_plan_config_dev(p, &dev, config, plan);
}

void dinf__fp8_plan_config_dev(const dinf__fp8_gpu_problem *p, const dinf__fp8_device *dev,
                               const dinf__fp8_config *config, dinf__fp8_launch_plan *plan) {
    memset(plan, 0, sizeof *plan);
    plan->config = *config;
    const dinf__fp8_config *cfg = &plan->config;
    const int64_t groups = p->num_groups;
    const int64_t k_blocks = ceil_div_ll(p->k, 128), aligned_m = ceil_div_ll(p->m, 4) * 4;
    /* A, its scales and D have one group per masked group, one in total otherwise. */
    const int64_t a_groups = p->gemm_type == DINF_FP8_GEMM_MASKED ? groups : 1;
    /* With the multicast each CTA loads (into both) its half of A's rows. */
    const int multicast = cfg->cluster > 1 && cfg->split_k < 2;
    const uint32_t a_box_rows = (uint32_t)(cfg->block_m / (multicast ? cfg->cluster : 1));
    plan->map_a = (dinf__fp8_tensor_map_geometry){
        p->a, 1, 128, {(uint64_t)p->k, (uint64_t)p->m, (uint64_t)a_groups},
        {(uint64_t)p->lda, (uint64_t)(p->lda * p->m)}, {DINF_FP8_BLOCK_K, a_box_rows, 1}};
    plan->map_b = (dinf__fp8_tensor_map_geometry){
        p->b, 1, 128, {(uint64_t)p->k, (uint64_t)p->n, (uint64_t)groups},
        {(uint64_t)p->ldb, (uint64_t)(p->ldb * p->n)}, {DINF_FP8_BLOCK_K, (uint32_t)cfg->block_n, 1}};
    plan->map_sa = (dinf__fp8_tensor_map_geometry){
        p->a_scales, 4, 0, {(uint64_t)aligned_m, (uint64_t)k_blocks, (uint64_t)a_groups},
        {(uint64_t)(aligned_m * 4), (uint64_t)(aligned_m * 4 * k_blocks)},
        {(uint32_t)cfg->block_m, 1, 1}};
    if (cfg->kernel == DINF__FP8_KERNEL_WGRAD) {
        const int64_t aligned_n = ceil_div_ll(p->n, 4) * 4;
        plan->map_sb = (dinf__fp8_tensor_map_geometry){
            p->b_scales, 4, 0, {(uint64_t)aligned_n, (uint64_t)k_blocks, 1},
            {(uint64_t)(aligned_n * 4), (uint64_t)(aligned_n * 4 * k_blocks)},
            {(uint32_t)cfg->block_n, 1, 1}};
    }
    if (cfg->kernel == DINF__FP8_KERNEL_FAST) {
        const int swizzle = dinf_fp8_d_swizzle_bytes(cfg->block_n);
        plan->map_d = (dinf__fp8_tensor_map_geometry){
            p->d, 2, swizzle, {(uint64_t)p->n, (uint64_t)p->m, (uint64_t)a_groups},
            {(uint64_t)(p->ldd * 2), (uint64_t)(p->ldd * 2 * p->m)},
            {(uint32_t)swizzle / 2, 64, 1}}; /* one store per math warpgroup's 64 rows */
    }
    dinf_fp8_gemm_args *args = &plan->args;
    args->d = (unsigned long long)(uintptr_t)p->d;
    args->b_scales = (unsigned long long)(uintptr_t)p->b_scales;
    args->group_info = (unsigned long long)(uintptr_t)p->group_info;
    args->ldd = p->ldd;
    args->m = (int)p->m;
    args->n = (int)p->n;
    args->k = (int)p->k;
    args->num_groups = (int)groups;
    args->k_blocks = (int)k_blocks;
    args->n_scale_blocks = (int)ceil_div_ll(p->n, 128);
    args->m_blocks = (int)ceil_div_ll(p->m, cfg->block_m);
    args->n_blocks = (int)ceil_div_ll(p->n, cfg->block_n);
    /* Persistent grid: a whole number of clusters, at most one CTA per SM,
     * no more clusters than units. The normal form (every unit a real tile of
     * equal work) also drops the SMs its last wave would leave idle anyway:
     * ceil(units / waves) clusters take the same number of waves (DeepGEMM
     * v1.3: less L2 pressure, less clock drop); the grouped forms' bounds
     * count skipped and absent tiles, so they keep every slot. */
    const long long bound = dinf_fp8_unit_bound(args, p->gemm_type, multicast ? cfg->cluster : 1);
    const int cluster_size = cfg->cluster >= 1 && cfg->cluster <= DINF_FP8_FAST_MAX_SPLIT_K
                                 ? cfg->cluster
                                 : 1;
    const long long slots = dev->slots[cluster_size];
    long long clusters = bound < slots ? bound : slots;
    if (p->gemm_type == DINF_FP8_GEMM_NORMAL && cfg->kernel == DINF__FP8_KERNEL_FAST &&
        clusters > 0) {
        const long long waves = (bound + clusters - 1) / clusters;
        clusters = (bound + waves - 1) / waves;
    }
    plan->grid = (unsigned)(clusters * cfg->cluster);
}

void dinf__fp8_plan(const dinf__fp8_gpu_problem *p, int num_sms, int kernel,
                    dinf__fp8_launch_plan *plan) {
    dinf__fp8_device dev;
    dinf__fp8_device_ideal(num_sms, &dev);
    dinf__fp8_plan_dev(p, &dev, kernel, plan);
}

void dinf__fp8_plan_dev(const dinf__fp8_gpu_problem *p, const dinf__fp8_device *dev, int kernel,
                        dinf__fp8_launch_plan *plan) {
    const int64_t hint = p->gemm_type == DINF_FP8_GEMM_MASKED ? p->expected_m : p->m;
    const dinf__fp8_config c = dinf__fp8_choose_dev(p->wgrad ? DINF__FP8_KERNEL_WGRAD : kernel,
                                                    p->gemm_type, hint, p->n, p->k,
                                                    p->num_groups, dev);
    dinf__fp8_plan_config_dev(p, dev, &c, plan);
}

#if DINF_WITH_CUDA
#include <cuda.h>
#include <cuda_runtime_api.h>

typedef CUresult (*encode_tiled_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *,
                                    const cuuint64_t *, const cuuint64_t *, const cuuint32_t *,
                                    const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                    CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

#include <pthread.h>

static struct {
    pthread_once_t once;
    encode_tiled_fn encode;
    char error[256];
} driver = {.once = PTHREAD_ONCE_INIT};

static void driver_load(void) {
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                                       cudaEnableDefault, &q);
    if (err != cudaSuccess || q != cudaDriverEntryPointSuccess || !fn) {
        cudaGetLastError();
        snprintf(driver.error, sizeof driver.error,
                 "cuTensorMapEncodeTiled is not available from the driver (%s, query result %d)",
                 cudaGetErrorString(err), (int)q);
        return;
    }
    driver.encode = (encode_tiled_fn)fn;
}

/* Encode a planned 3-D tiled tensor map (dims/strides as documented in fp8_gemm.cuh
 * and fp8_gemm_fast.cuh). */
static dinf_status encode(const char *func, const char *what, CUtensorMap *map,
                          const dinf__fp8_tensor_map_geometry *g) {
    const cuuint64_t dims[3] = {g->dims[0], g->dims[1], g->dims[2]};
    const cuuint64_t strides[2] = {g->strides[0], g->strides[1]};
    const cuuint32_t box[3] = {g->box[0], g->box[1], g->box[2]};
    const cuuint32_t element_strides[3] = {1, 1, 1};
    const CUtensorMapDataType type = g->elem_bytes == 1   ? CU_TENSOR_MAP_DATA_TYPE_UINT8
                                     : g->elem_bytes == 2 ? CU_TENSOR_MAP_DATA_TYPE_UINT16
                                                          : CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
    const CUtensorMapSwizzle swizzle = g->swizzle_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                       : g->swizzle_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                       : g->swizzle_bytes == 32 ? CU_TENSOR_MAP_SWIZZLE_32B
                                                                : CU_TENSOR_MAP_SWIZZLE_NONE;
    char name_buf[32];
    CUresult r = driver.encode(
        map, type, 3, (void *)g->base, dims, strides, box, element_strides,
        CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "cuTensorMapEncodeTiled(%s: dims %llu x %llu x %llu, strides %llu, "
                          "%llu bytes, box %u x %u x %u) failed: %s",
                          what, (unsigned long long)dims[0], (unsigned long long)dims[1],
                          (unsigned long long)dims[2], (unsigned long long)strides[0],
                          (unsigned long long)strides[1], box[0], box[1], box[2],
                          dinf__cu_result_name((int)r, name_buf));
    return DINF_STATUS_OK;
}

static dinf_status cuda_fail(const char *func, const char *what, cudaError_t err) {
    cudaGetLastError();
    return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "%s failed: %s (error %d)", what,
                      cudaGetErrorString(err), (int)err);
}

/* The device's compute capability must be 9.0 (the kernels use sm_90a
 * instructions: wgmma, setmaxnreg). */
static dinf_status check_device(const char *func, int device, int *num_sms) {
    int count = 0, major = 0, minor = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        cudaGetLastError();
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "no CUDA device (%s): the Hopper FP8 GEMM needs an sm_90 device; "
                          "DINF_EXEC_CPU computes the same GEMM on the CPU",
                          err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    }
    if (device >= count)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "exec->device=%d but only %d CUDA devices are visible", device, count);
    err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(num_sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess)
        return cuda_fail(func, "querying the device's attributes", err);
    if (major != 9 || minor != 0)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "device %d is sm_%d%d: the FP8 GEMM kernels need sm_90 (Hopper); "
                          "DINF_EXEC_CPU computes the same GEMM on the CPU",
                          device, major, minor);
    return DINF_STATUS_OK;
}

/* kernels/core/cluster_slots.cu: clusters of `cluster` CTAs the current
 * device holds at once, one CTA per SM. */
cudaError_t dinf__cuda_cluster_slots(int cluster, int *slots);

dinf_status dinf__fp8_device_query(const char *func, int device, dinf__fp8_device *dev) {
    enum { CACHED = 64 };
    static struct {
        int device;
        dinf__fp8_device dev;
    } cache[CACHED];
    static int used;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    int num_sms = 0;
    if (device < 0) {
        const cudaError_t err = cudaGetDevice(&device);
        if (err != cudaSuccess) {
            cudaGetLastError();
            return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "no current CUDA device: %s",
                              cudaGetErrorString(err));
        }
    }
    dinf_status st = check_device(func, device, &num_sms);
    if (st != DINF_STATUS_OK)
        return st;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < used; i++)
        if (cache[i].device == device && cache[i].dev.num_sms == num_sms) {
            *dev = cache[i].dev;
            pthread_mutex_unlock(&lock);
            return DINF_STATUS_OK;
        }
    pthread_mutex_unlock(&lock);
    dinf__fp8_device_ideal(num_sms, dev);
    /* The first query loads the probe kernel's module (lazy loading) and
     * sets its attribute: "potentially unsafe" calls while this thread's
     * stream is being captured in global mode (a first GEMM inside a graph
     * capture); relaxed mode makes them without invalidating the capture,
     * as the JIT's module load does (jit/jit_load.c). */
    enum cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    const int exchanged = cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess;
    if (!exchanged)
        cudaGetLastError();
    int answered = 0; /* cluster sizes the query answered */
    dinf__cuda_guard guard;
    if (dinf__cuda_guard_enter(&guard, device) == cudaSuccess) {
        for (int c = 2; c <= DINF_FP8_FAST_MAX_SPLIT_K; c++) {
            int slots = 0;
            if (dinf__cuda_cluster_slots(c, &slots) == cudaSuccess && slots > 0 &&
                slots <= dev->slots[c]) {
                dev->slots[c] = slots;
                answered++;
            } else { /* not the caller's failure: plan as if the GPCs packed fully */
                cudaGetLastError();
            }
        }
        dinf__cuda_guard_leave(&guard);
    } else {
        cudaGetLastError();
    }
    if (exchanged)
        cudaThreadExchangeStreamCaptureMode(&mode);
    /* a description with a failed query is used but not kept: the next
     * call asks again */
    pthread_mutex_lock(&lock);
    if (answered == DINF_FP8_FAST_MAX_SPLIT_K - 1 && used < CACHED) {
        cache[used].device = device;
        cache[used].dev = *dev;
        used++;
    }
    pthread_mutex_unlock(&lock);
    return DINF_STATUS_OK;
}

/*
 * Clusters of the kernel that can be resident at once on the device
 * (cudaOccupancyMaxActiveClusters), cached per (kernel, device): a GPC whose
 * SM count is odd leaves an SM out of 2-CTA clusters, and a persistent grid
 * larger than the resident clusters would run its last clusters as a second,
 * nearly empty wave. 0 when unknown (the grid is then left as planned: still
 * correct, as every cluster strides over the units).
 */
static int resident_clusters(const dinf__jit_kernel *kernel, int device,
                             const dinf__fp8_config *cfg, unsigned grid) {
    enum { SLOTS = 64 };
    static struct {
        dinf__jit_key key;
        int device, clusters;
    } cache[SLOTS];
    const dinf__jit_key key = kernel->cubin->key;
    static int used;
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < used; i++)
        if (cache[i].key.lo == key.lo && cache[i].key.hi == key.hi && cache[i].device == device) {
            const int n = cache[i].clusters;
            pthread_mutex_unlock(&lock);
            return n;
        }
    pthread_mutex_unlock(&lock);
    int clusters = 0, optin = 0;
    cudaError_t err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (err == cudaSuccess && optin >= cfg->smem_bytes + dinf__jit_static_smem(kernel))
        err = cudaKernelSetAttributeForDevice((cudaKernel_t)kernel->kernel,
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              optin - dinf__jit_static_smem(kernel), device);
    if (err == cudaSuccess) {
        cudaLaunchConfig_t lc;
        memset(&lc, 0, sizeof lc);
        lc.gridDim = (dim3){grid, 1, 1};
        lc.blockDim = (dim3){(unsigned)cfg->threads, 1, 1};
        lc.dynamicSmemBytes = (size_t)cfg->smem_bytes;
        cudaLaunchAttribute attr;
        attr.id = cudaLaunchAttributeClusterDimension;
        attr.val.clusterDim.x = (unsigned)cfg->cluster;
        attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
        lc.attrs = &attr;
        lc.numAttrs = 1;
        err = cudaOccupancyMaxActiveClusters(&clusters, (const void *)kernel->kernel, &lc);
    }
    if (err != cudaSuccess) {
        cudaGetLastError(); /* not the caller's failure: plan the grid as if unlimited */
        return 0;
    }
    pthread_mutex_lock(&lock);
    if (used < SLOTS) {
        cache[used].key = key;
        cache[used].device = device;
        cache[used].clusters = clusters;
        used++;
    }
    pthread_mutex_unlock(&lock);
    return clusters;
}

/* Load, encode and launch a planned GEMM on the current device (the caller's
 * guard made place->device current). */
static dinf_status launch_planned(const char *func, const dinf__place *place,
                                  dinf__fp8_launch_plan *plan, int pdl) {
    dinf_status st;
    const dinf__fp8_config *cfg = &plan->config;
    dinf_jit_kernel_config jc;
    dinf__fp8_jit_config(cfg, &jc);
    const dinf__jit_kernel *kernel = NULL;
    if ((st = dinf__jit_get_kernel(func, &jc, place->device, &kernel)) != DINF_STATUS_OK)
        return st;
    const int fast = cfg->kernel == DINF__FP8_KERNEL_FAST;
    const int wgrad = cfg->kernel == DINF__FP8_KERNEL_WGRAD;
    /* The runtime's count for the loaded kernel; the ptxas log's without it. */
    const int registers = kernel->loaded_registers >= 0 ? kernel->loaded_registers
                                                        : kernel->cubin->resources.registers;
    if (fast && cfg->block_m >= 128 && registers != DINF_FP8_FAST_ENTRY_REGS)
        return dinf__fail(DINF_STATUS_JIT_ERROR, func,
                          "the fast GEMM kernel (block_m %d) was built with %d registers per "
                          "thread, not %d: its register reallocation (%d/%d) would not balance "
                          "and the kernel would hang; DINF_FP8_GEMM_KERNEL=simple avoids it",
                          cfg->block_m, registers, DINF_FP8_FAST_ENTRY_REGS,
                          DINF_FP8_FAST_PRODUCER_REGS, DINF_FP8_FAST_MATH_REGS);
    /* The kernels' tensor-map parameters, in order: a, b, a_scales, then d
     * (fast) or b_scales (wgrad). */
    const int num_maps = fast || wgrad ? 4 : 3;
    CUtensorMap maps[4];
    memset(maps, 0, sizeof maps);
    const dinf__fp8_tensor_map_geometry *geoms[4] = {&plan->map_a, &plan->map_b, &plan->map_sa,
                                                     wgrad ? &plan->map_sb : &plan->map_d};
    const char *const names[4] = {"a", "b", "a_scales", wgrad ? "b_scales" : "d"};
    for (int i = 0; i < num_maps; i++)
        if ((st = encode(func, names[i], &maps[i], geoms[i])) != DINF_STATUS_OK)
            return st;
    unsigned grid[3] = {plan->grid, 1, 1};
    if (grid[0] == 0) /* a (forced) cluster size the device holds no cluster of */
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "the %dx%d tile config needs clusters of %d CTAs and device %d holds none",
                          cfg->block_m, cfg->block_n, cfg->cluster, place->device);
    const unsigned block[3] = {(unsigned)cfg->threads, 1, 1};
    const unsigned cluster[3] = {(unsigned)cfg->cluster, 1, 1};
    void *params[5] = {&maps[0], &maps[1], &maps[2],
                       num_maps == 4 ? (void *)&maps[3] : (void *)&plan->args, &plan->args};

    if (cfg->cluster > 1) {
        const int resident = resident_clusters(kernel, place->device, cfg, plan->grid);
        if (resident > 0 && (unsigned)resident * (unsigned)cfg->cluster < grid[0])
            grid[0] = (unsigned)resident * (unsigned)cfg->cluster;
    }
    /* The fast rung waits (griddepcontrol.wait) before its first global
     * access: it may be launched as a programmatic dependent of the previous
     * kernel on the stream. The simple rung (the reference) never is. */
    const unsigned flags = fast && pdl ? DINF__JIT_LAUNCH_PDL : 0u;
    return dinf__jit_launch(func, kernel, place->device, grid, block, cluster, flags,
                            (size_t)cfg->smem_bytes, place->stream, params);
}

dinf_status dinf__fp8_gemm_cuda(const char *func, const dinf__place *place,
                                const dinf__fp8_gpu_problem *p) {
    return dinf__fp8_gemm_cuda_config(func, place, p, NULL);
}

dinf_status dinf__fp8_gemm_cuda_config(const char *func, const dinf__place *place,
                                       const dinf__fp8_gpu_problem *p,
                                       const dinf__fp8_config *forced) {
    dinf__fp8_device dev;
    dinf_status st = dinf__fp8_device_query(func, place->device, &dev);
    if (st != DINF_STATUS_OK)
        return st;
    if ((st = dinf__fp8_gpu_check(func, p)) != DINF_STATUS_OK)
        return st;
    const int64_t groups = p->num_groups;
    const int64_t rows = p->gemm_type == DINF_FP8_GEMM_MASKED ? p->m * groups : p->m;
    if (rows == 0 || p->n == 0)
        return DINF_STATUS_OK;
    pthread_once(&driver.once, driver_load);
    if (!driver.encode)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "%s", driver.error);

    /* The rung and PDL switches concern the 1x128/128x128 forms only: the
     * wgrad GEMM has one kernel, without PDL. */
    int pdl = 0;
    if (!p->wgrad && (st = dinf__fp8_pdl_from_env(func, &pdl)) != DINF_STATUS_OK)
        return st;
    dinf__fp8_launch_plan plan;
    if (forced) {
        dinf__fp8_plan_config_dev(p, &dev, forced, &plan);
    } else {
        int kernel_rung = DINF__FP8_KERNEL_WGRAD;
        if (!p->wgrad && (st = dinf__fp8_kernel_from_env(func, &kernel_rung)) != DINF_STATUS_OK)
            return st;
        dinf__fp8_plan_dev(p, &dev, kernel_rung, &plan);
    }
    /* Everything from here runs on the target device: the JIT load, the
     * tensor-map encodes, the occupancy query and the launch. */
    dinf__cuda_guard guard;
    cudaError_t err = dinf__cuda_guard_enter(&guard, place->device);
    if (err != cudaSuccess)
        return cuda_fail(func, "making the device current", err);
    st = dinf__cuda_check_stream(func, place->device, place->stream);
    if (st == DINF_STATUS_OK)
        st = launch_planned(func, place, &plan, pdl);
    dinf__cuda_guard_leave(&guard);
    return st;
}

#else /* CPU-only build: dinf__place_resolve already refuses DINF_EXEC_CUDA */

dinf_status dinf__fp8_device_query(const char *func, int device, dinf__fp8_device *dev) {
    (void)device;
    memset(dev, 0, sizeof *dev);
    return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "libdeepinfra was built without CUDA");
}

dinf_status dinf__fp8_gemm_cuda(const char *func, const dinf__place *place,
                                const dinf__fp8_gpu_problem *p) {
    (void)place;
    (void)p;
    return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "libdeepinfra was built without CUDA");
}

dinf_status dinf__fp8_gemm_cuda_config(const char *func, const dinf__place *place,
                                       const dinf__fp8_gpu_problem *p,
                                       const dinf__fp8_config *forced) {
    (void)forced;
    return dinf__fp8_gemm_cuda(func, place, p);
}
#endif
