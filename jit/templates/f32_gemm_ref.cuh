/*
 * f32_gemm_nt_ref: D[m][n] = sum_k A[m][k] * B[n][k], all float32, on CUDA
 * cores: the simple, obviously correct GPU GEMM that serves the GPU tests and
 * benchmarks as the reference for shapes too large for the CPU (the
 * unquantized product of DeepGEMM's calc_diff check). Not tuned.
 *
 * Compile-time constant (template "f32_gemm_nt_ref"):
 *   TILE   16 or 32: a TILE x TILE block computes a TILE x TILE output tile,
 *          staging TILE-wide k slices of A and B in shared memory
 * Runtime params:
 *   a  [m][k] float32, row stride lda elements
 *   b  [n][k] float32, row stride ldb elements
 *   d  [m][n] float32, row stride ldd elements
 * Launch: grid (ceil(n/TILE), ceil(m/TILE)), block (TILE, TILE), no dynamic
 * shared memory. Sums in k order, one fused multiply-add per term.
 */
#pragma once
#include "dinf_prelude.cuh"

namespace dinf_jit {

template <int TILE>
__global__ void __launch_bounds__(TILE * TILE)
f32_gemm_nt_ref(const float *__restrict__ a, long long lda, const float *__restrict__ b,
                long long ldb, float *__restrict__ d, long long ldd, int m, int n, int k) {
    static_assert(TILE == 16 || TILE == 32, "f32_gemm_nt_ref: TILE must be 16 or 32");
    __shared__ float a_tile[TILE][TILE + 1];
    __shared__ float b_tile[TILE][TILE + 1];
    const int tx = (int)threadIdx.x, ty = (int)threadIdx.y;
    const int row = (int)blockIdx.y * TILE + ty, col = (int)blockIdx.x * TILE + tx;
    const int b_row = (int)blockIdx.x * TILE + ty; /* B row this thread stages */
    float sum = 0.0f;
    for (int k0 = 0; k0 < k; k0 += TILE) {
        a_tile[ty][tx] = row < m && k0 + tx < k ? a[(long long)row * lda + k0 + tx] : 0.0f;
        b_tile[ty][tx] = b_row < n && k0 + tx < k ? b[(long long)b_row * ldb + k0 + tx] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE; kk++)
            sum += a_tile[ty][kk] * b_tile[tx][kk];
        __syncthreads();
    }
    if (row < m && col < n)
        d[(long long)row * ldd + col] = sum;
}

} // namespace dinf_jit
