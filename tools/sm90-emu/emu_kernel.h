/*
 * What a CUDA kernel source needs to compile as host C++ under sm90-emu:
 * the CUDA keywords as no-ops and the built-in variables read from the
 * running fiber (emu_rt.h). Included by the emulated dinf_prelude.cuh.
 */
#pragma once
#include "emu_sm90.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __align__(n) alignas(n)
#define __restrict__

struct EmuIdx3 {
    unsigned x, y, z;
};
#define threadIdx (EmuIdx3{emu::tid(), 0u, 0u})
#define blockIdx (EmuIdx3{emu::block_idx().x, emu::block_idx().y, emu::block_idx().z})
#define gridDim (EmuIdx3{emu::grid_dim().x, emu::grid_dim().y, emu::grid_dim().z})
#define blockDim (EmuIdx3{emu::block_dim().x, emu::block_dim().y, emu::block_dim().z})

static inline void __syncthreads() { emu::syncthreads(); }
static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
/* __syncwarp (bar.warp.sync): every lane of the warp (full mask only). */
static inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) {
    if (mask != 0xFFFFFFFFu)
        emu::fail("__syncwarp(0x%x): only the full mask is emulated", mask);
    emu::coll_wait(emu::WARP, 301, "__syncwarp");
}
