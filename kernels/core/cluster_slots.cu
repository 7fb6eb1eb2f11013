/*
 * How many thread-block clusters of a given size the current device holds
 * at once with one CTA per SM (cudaOccupancyMaxActiveClusters): a cluster
 * lives inside one GPC, so a GPC of g SMs holds floor(g / size) of them and
 * the device total depends on how its SMs are spread over GPCs (a 132-SM
 * H100/H200 holds 66 pairs, but fewer than 33 clusters of 4 when some GPC's
 * SM count is not a multiple of 4). The FP8 GEMM heuristic sizes its split-K
 * clusters by it (lib/gemm/gemm_cuda.c).
 */
#include <cuda_runtime_api.h>

#include <string.h>

/* Never launched: the occupancy query's subject. One CTA per SM is forced by
 * the dynamic shared memory the query asks for (the device's opt-in maximum),
 * as the GEMM kernels' registers force it. */
__global__ void __launch_bounds__(128, 1) dinf_cluster_slots_kernel(int *unused) {
    if (unused && threadIdx.x == 0)
        *unused = 0;
}

/* Clusters of `cluster` CTAs (1..8) the current device holds at once, into
 * *slots. Returns the CUDA error of the attribute calls or the query. */
extern "C" cudaError_t dinf__cuda_cluster_slots(int cluster, int *slots) {
    *slots = 0;
    int device = 0, optin = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (err == cudaSuccess)
        err = cudaFuncSetAttribute(dinf_cluster_slots_kernel,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
    if (err != cudaSuccess)
        return err;
    cudaLaunchConfig_t lc;
    memset(&lc, 0, sizeof lc);
    lc.gridDim = dim3((unsigned)cluster, 1, 1);
    lc.blockDim = dim3(128, 1, 1);
    lc.dynamicSmemBytes = (size_t)optin;
    cudaLaunchAttribute attr;
    memset(&attr, 0, sizeof attr);
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = (unsigned)cluster;
    attr.val.clusterDim.y = attr.val.clusterDim.z = 1;
    lc.attrs = &attr;
    lc.numAttrs = 1;
    return cudaOccupancyMaxActiveClusters(slots, (const void *)dinf_cluster_slots_kernel, &lc);
}
