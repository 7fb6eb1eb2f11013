/*
 * scale_rows: y[r][c] = x[r][c] * scales[r]   (the JIT runtime's test kernel)
 *
 * Compile-time constants (the config of template "scale_rows"):
 *   BLOCK_THREADS     threads per block, a multiple of 32 (checked here, so
 *                     that a bad config is an NVRTC error the caller sees)
 *   ELEMS_PER_THREAD  consecutive columns one thread handles per step
 *   OUT_BF16          0: y is float32; 1: y is bfloat16 (round to nearest even)
 *
 * Runtime params:
 *   x       [rows][cols] float32, row stride ld_x elements
 *   scales  [rows] float32
 *   y       [rows][cols] float32 or bfloat16 (OUT_BF16), row stride ld_y elements
 * Launch: any grid (blocks stride over rows), BLOCK_THREADS threads, no
 * dynamic shared memory.
 */
#pragma once
#include "dinf_prelude.cuh"

namespace dinf_jit {

template <int BLOCK_THREADS, int ELEMS_PER_THREAD, int OUT_BF16>
__global__ void __launch_bounds__(BLOCK_THREADS)
scale_rows(const float *__restrict__ x, const float *__restrict__ scales, void *__restrict__ y,
           int64_t rows, int64_t cols, int64_t ld_x, int64_t ld_y) {
    static_assert(BLOCK_THREADS % 32 == 0, "scale_rows: BLOCK_THREADS must be a multiple of 32");
    static_assert(ELEMS_PER_THREAD >= 1, "scale_rows: ELEMS_PER_THREAD must be positive");
    constexpr int64_t kStep = (int64_t)BLOCK_THREADS * ELEMS_PER_THREAD;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const float s = scales[row];
        const float *x_row = x + row * ld_x;
        for (int64_t c0 = (int64_t)threadIdx.x * ELEMS_PER_THREAD; c0 < cols; c0 += kStep) {
#pragma unroll
            for (int i = 0; i < ELEMS_PER_THREAD; i++) {
                const int64_t c = c0 + i;
                if (c < cols) {
                    const float v = x_row[c] * s;
                    if (OUT_BF16)
                        static_cast<bf16_t *>(y)[row * ld_y + c] = f32_to_bf16(v);
                    else
                        static_cast<float *>(y)[row * ld_y + c] = v;
                }
            }
        }
    }
}

} // namespace dinf_jit
