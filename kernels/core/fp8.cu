/*
 * CUDA kernels of core's FP8 / BF16 operations and their launchers
 * (lib/core/fp8_cuda.h): dtype conversion, per-token (1x128) and per-block
 * (128x128) FP8 quantization, and the M-major scale layout transform.
 *
 * Every value is computed with the scalar functions of lib/core/numeric_hd.h
 * and the same float32 operations, in the same order, as lib/core/fp8.c, so
 * results are bit-identical to the CPU's: amax is a max (exact, any order),
 * then scale = amax / 448 and factor = 448 / amax (IEEE divisions: this file
 * is never built with fast math), q = e4m3(clamp(x * factor)).
 */
#include <cuda_runtime_api.h>

#include "../../lib/core/fp8_cuda.h"
#include "../../lib/core/internal.h"
#include "../../lib/core/cuda_guard.h"
#include "../../lib/core/numeric_hd.h"

namespace {

constexpr int kBlockK = 128;
constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = int64_t(1) << 20; /* larger problems loop (grid stride) */

__device__ __forceinline__ float load_f32(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f32(const uint16_t *p, int64_t i) {
    return dinf__f32_from_bf16(p[i]);
}
__device__ __forceinline__ float load_f32(const uint8_t *p, int64_t i) {
    return dinf__f32_from_e4m3(p[i]);
}

__device__ __forceinline__ void store_f32(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f32(uint16_t *p, int64_t i, float v) {
    p[i] = dinf__bf16_from_f32(v);
}
__device__ __forceinline__ void store_f32(uint8_t *p, int64_t i, float v) {
    p[i] = dinf__e4m3_from_f32(v);
}

/* The clamp of fp8.c: comparisons, so that NaN stays NaN. */
__device__ __forceinline__ float clamp_e4m3(float v) {
    return v > DINF_E4M3_MAX ? DINF_E4M3_MAX : v < -DINF_E4M3_MAX ? -DINF_E4M3_MAX : v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

template <typename Src, typename Dst>
__global__ void __launch_bounds__(kThreads) convert_kernel(const Src *src, Dst *dst, int64_t count) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride)
        store_f32(dst, i, load_f32(src, i));
}

/*
 * Per token (1 x 128): one warp per block (row r, k-block kb); lane l owns
 * columns kb*128 + l + 32*t, t = 0..3 (coalesced), keeping them in registers
 * between the amax and the quantization.
 */
template <typename Src>
__global__ void __launch_bounds__(kThreads)
    quantize_per_token_kernel(const Src *x, int64_t m, int64_t k, int64_t x_ld, uint8_t *q,
                              int64_t q_ld, float *scales, int64_t num_k_blocks) {
    const int lane = threadIdx.x % kWarp;
    const int64_t warps_per_grid = int64_t(gridDim.x) * (kThreads / kWarp);
    const int64_t num_blocks = m * num_k_blocks;
    for (int64_t b = int64_t(blockIdx.x) * (kThreads / kWarp) + threadIdx.x / kWarp;
         b < num_blocks; b += warps_per_grid) {
        const int64_t r = b / num_k_blocks, c0 = (b % num_k_blocks) * kBlockK;
        float v[kBlockK / kWarp];
        float amax = 0.0f;
#pragma unroll
        for (int t = 0; t < kBlockK / kWarp; t++) {
            const int64_t c = c0 + lane + t * kWarp;
            v[t] = c < k ? load_f32(x, r * x_ld + c) : 0.0f;
            amax = fmaxf(amax, fabsf(v[t]));
        }
        amax = fmaxf(warp_max(amax), 1e-4f);
        const float factor = DINF_E4M3_MAX / amax;
        if (lane == 0)
            scales[b] = amax / DINF_E4M3_MAX;
#pragma unroll
        for (int t = 0; t < kBlockK / kWarp; t++) {
            const int64_t c = c0 + lane + t * kWarp;
            if (c < k)
                q[r * q_ld + c] = dinf__e4m3_from_f32(clamp_e4m3(v[t] * factor));
        }
    }
}

/*
 * Per block (128 x 128): one CTA of 8 warps per block; warp w takes rows
 * w, w+8, ..., lane l columns l + 32*t. Two passes over x (the second hits
 * L1/L2): amax, reduced through shared memory, then the codes.
 */
template <typename Src>
__global__ void __launch_bounds__(kThreads)
    quantize_per_block_kernel(const Src *x, int64_t m, int64_t k, int64_t x_ld, uint8_t *q,
                              int64_t q_ld, float *scales, int64_t num_k_blocks,
                              int64_t num_blocks) {
    constexpr int kRows = 128, kWarps = kThreads / kWarp;
    __shared__ float warp_amax[kWarps];
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    for (int64_t b = blockIdx.x; b < num_blocks; b += gridDim.x) {
        const int64_t r0 = (b / num_k_blocks) * kRows, c0 = (b % num_k_blocks) * kBlockK;
        const int64_t r1 = r0 + kRows < m ? r0 + kRows : m;
        float amax = 0.0f;
        for (int64_t r = r0 + warp; r < r1; r += kWarps)
#pragma unroll
            for (int t = 0; t < kBlockK / kWarp; t++) {
                const int64_t c = c0 + lane + t * kWarp;
                if (c < k)
                    amax = fmaxf(amax, fabsf(load_f32(x, r * x_ld + c)));
            }
        amax = warp_max(amax);
        if (lane == 0)
            warp_amax[warp] = amax;
        __syncthreads();
        amax = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; w++)
            amax = fmaxf(amax, warp_amax[w]);
        amax = fmaxf(amax, 1e-4f);
        __syncthreads(); /* warp_amax is rewritten by the next block */
        const float factor = DINF_E4M3_MAX / amax;
        if (threadIdx.x == 0)
            scales[b] = amax / DINF_E4M3_MAX;
        for (int64_t r = r0 + warp; r < r1; r += kWarps)
#pragma unroll
            for (int t = 0; t < kBlockK / kWarp; t++) {
                const int64_t c = c0 + lane + t * kWarp;
                if (c < k)
                    q[r * q_ld + c] =
                        dinf__e4m3_from_f32(clamp_e4m3(load_f32(x, r * x_ld + c) * factor));
            }
    }
}

/* out[j * aligned_m + i] = scales[i * kb + j] for i < m, 0 for the padding. */
__global__ void __launch_bounds__(kThreads)
    scale_layout_kernel(const float *scales, int64_t m, int64_t kb, int64_t aligned_m, float *out) {
    const int64_t count = kb * aligned_m, stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < count; t += stride) {
        const int64_t j = t / aligned_m, i = t % aligned_m;
        out[t] = i < m ? scales[i * kb + j] : 0.0f;
    }
}

unsigned grid_for(int64_t items, int64_t items_per_cta) {
    int64_t grid = (items + items_per_cta - 1) / items_per_cta;
    return unsigned(grid < 1 ? 1 : grid > kMaxGrid ? kMaxGrid : grid);
}

using dinf_cuda::device_guard;

dinf_status launch_failed(const char *func, const dinf__place *place, cudaError_t err) {
    cudaGetLastError();
    return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "kernel launch on device %d failed: %s (%s)",
                      (int)place->device, cudaGetErrorString(err), cudaGetErrorName(err));
}

/* Make the place's device current and check that its stream belongs to it. */
dinf_status enter(const char *func, const dinf__place *place, device_guard &guard) {
    cudaError_t err = guard.enter(place->device);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return dinf__fail(DINF_STATUS_CUDA_ERROR, func,
                          "making CUDA device %d current failed: %s (%s)", (int)place->device,
                          cudaGetErrorString(err), cudaGetErrorName(err));
    }
    return dinf__cuda_check_stream(func, (int)place->device, place->stream);
}

template <typename Src, typename Dst>
void launch_convert(const void *src, void *dst, int64_t count, cudaStream_t stream) {
    convert_kernel<Src, Dst><<<grid_for(count, kThreads * 4), kThreads, 0, stream>>>(
        static_cast<const Src *>(src), static_cast<Dst *>(dst), count);
}

template <typename Src>
void launch_convert_from(dinf_dtype dst_dtype, const void *src, void *dst, int64_t count,
                         cudaStream_t stream) {
    switch (dst_dtype) {
    case DINF_DTYPE_BFLOAT16: launch_convert<Src, uint16_t>(src, dst, count, stream); break;
    case DINF_DTYPE_FP8_E4M3: launch_convert<Src, uint8_t>(src, dst, count, stream); break;
    default: launch_convert<Src, float>(src, dst, count, stream); break;
    }
    /* Same-dtype pairs never get here (dinf__fp8_copy_cuda): their
     * instantiations are dead but harmless. */
}

template <typename Src>
void launch_quantize(const void *x, int64_t m, int64_t k, int64_t x_ld, int32_t block_rows,
                     uint8_t *q, int64_t q_ld, float *scales, cudaStream_t stream) {
    const int64_t k_blocks = (k + kBlockK - 1) / kBlockK;
    const Src *xs = static_cast<const Src *>(x);
    if (block_rows == 1) {
        quantize_per_token_kernel<Src>
            <<<grid_for(m * k_blocks, kThreads / kWarp), kThreads, 0, stream>>>(
                xs, m, k, x_ld, q, q_ld, scales, k_blocks);
    } else {
        const int64_t num_blocks = (m + 127) / 128 * k_blocks;
        quantize_per_block_kernel<Src><<<grid_for(num_blocks, 1), kThreads, 0, stream>>>(
            xs, m, k, x_ld, q, q_ld, scales, k_blocks, num_blocks);
    }
}

} // namespace

extern "C" dinf_status dinf__fp8_convert_cuda(const char *func, const dinf__place *place,
                                              const void *src, dinf_dtype src_dtype, void *dst,
                                              dinf_dtype dst_dtype, int64_t count) {
    device_guard guard;
    dinf_status st = enter(func, place, guard);
    if (st != DINF_STATUS_OK)
        return st;
    cudaError_t err;
    cudaStream_t stream = reinterpret_cast<cudaStream_t>(place->stream);
    switch (src_dtype) {
    case DINF_DTYPE_BFLOAT16: launch_convert_from<uint16_t>(dst_dtype, src, dst, count, stream); break;
    case DINF_DTYPE_FP8_E4M3: launch_convert_from<uint8_t>(dst_dtype, src, dst, count, stream); break;
    default: launch_convert_from<float>(dst_dtype, src, dst, count, stream); break;
    }
    err = cudaGetLastError();
    return err == cudaSuccess ? DINF_STATUS_OK : launch_failed(func, place, err);
}

extern "C" dinf_status dinf__fp8_copy_cuda(const char *func, const dinf__place *place,
                                           const void *src, void *dst, size_t bytes) {
    device_guard guard;
    dinf_status st = enter(func, place, guard);
    if (st != DINF_STATUS_OK)
        return st;
    cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault,
                              reinterpret_cast<cudaStream_t>(place->stream));
    if (err != cudaSuccess)
        return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "copy on device %d failed: %s (%s)",
                          (int)place->device, cudaGetErrorString(err), cudaGetErrorName(err));
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__fp8_quantize_cuda(const char *func, const dinf__place *place,
                                               const void *x, dinf_dtype x_dtype, int64_t m,
                                               int64_t k, int64_t x_ld, int32_t block_rows,
                                               uint8_t *q, int64_t q_ld, float *scales) {
    device_guard guard;
    dinf_status st = enter(func, place, guard);
    if (st != DINF_STATUS_OK)
        return st;
    cudaError_t err;
    cudaStream_t stream = reinterpret_cast<cudaStream_t>(place->stream);
    if (x_dtype == DINF_DTYPE_BFLOAT16)
        launch_quantize<uint16_t>(x, m, k, x_ld, block_rows, q, q_ld, scales, stream);
    else
        launch_quantize<float>(x, m, k, x_ld, block_rows, q, q_ld, scales, stream);
    err = cudaGetLastError();
    return err == cudaSuccess ? DINF_STATUS_OK : launch_failed(func, place, err);
}

extern "C" dinf_status dinf__fp8_scale_layout_mn_major_cuda(const char *func,
                                                            const dinf__place *place,
                                                            const float *scales, int64_t m,
                                                            int64_t kb, int64_t aligned_m,
                                                            float *out) {
    device_guard guard;
    dinf_status st = enter(func, place, guard);
    if (st != DINF_STATUS_OK)
        return st;
    cudaError_t err;
    scale_layout_kernel<<<grid_for(kb * aligned_m, kThreads), kThreads, 0,
                          reinterpret_cast<cudaStream_t>(place->stream)>>>(scales, m, kb,
                                                                           aligned_m, out);
    err = cudaGetLastError();
    return err == cudaSuccess ? DINF_STATUS_OK : launch_failed(func, place, err);
}
