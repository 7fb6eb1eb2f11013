/*
 * Host implementations of the Hopper (sm_90a) PTX instructions that the JIT
 * kernels' wrappers (jit/templates/dinf_sm90.cuh) issue, written from the
 * PTX ISA (9.7.9.25 cp.async.bulk.tensor, 9.7.13.15 mbarrier, 9.7.15 wgmma)
 * and the driver API's cuTensorMapEncodeTiled. See README.md.
 */
#pragma once
#include "emu_rt.h"

namespace emu {

/* Our encoding of a CUtensorMap (128 bytes, 64-byte aligned): what
 * cuTensorMapEncodeTiled was given, after its checks (emu_encode_tiled). */
struct TensorMap {
    uint64_t magic; /* kTensorMapMagic */
    uint64_t base;
    uint64_t dims[5];
    uint64_t strides[4]; /* bytes, of dims 1..rank-1 */
    uint32_t box[5];
    uint8_t rank, elem_bytes, swizzle_bytes /* 0, 32, 64, 128 */, oob_nan, is_float;
};
static_assert(sizeof(TensorMap) <= 128, "TensorMap must fit a CUtensorMap");
constexpr uint64_t kTensorMapMagic = 0x70614D726F736E54ull; /* "TensorMap" */

/* Conversions (cvt.rn.bf16.f32, cvt.rn.bf16x2.f32, e4m3 decode). */
uint16_t cvt_rn_bf16_f32(float x);
uint32_t cvt_rn_bf16x2_f32(float a_hi, float b_lo); /* a -> upper half, b -> lower half */
float e4m3_to_f32(uint8_t c);
float bf16_to_f32(uint16_t b);

/* cp.async.bulk.tensor.Nd.shared::cluster.global.tile.mbarrier::complete_tx::bytes
 * [.multicast::cluster]: box at coords -> dst (shared memory of the
 * executing CTA, or of every CTA in mask at the same offset), complete_tx of
 * the box's bytes on bar (at the same offset in each destination CTA).
 * mask 0: no multicast. Delivered at a later scheduling point. */
void tma_load(void *dst, const void *map, uint64_t *bar, const int *coords, int rank, uint16_t mask);
/* cp.async.bulk.tensor.Nd.global.shared::cta.bulk_group: src (shared) -> the
 * box at coords of map; the shared memory is read and global memory written
 * at a later point; tracked by the thread's bulk async-groups. */
void tma_store(const void *map, const void *src, const int *coords, int rank);
void bulk_commit_group();
void bulk_wait_group(int n, bool read_only);
void tma_prefetch(const void *map);

/* wgmma (warpgroup): D[64 x n] (+)= A[64 x k] * B[n x k]^T from shared-memory
 * descriptors, A K-major, B K-major or (bf16) MN-major. */
enum WgType { WG_E4M3 = 0, WG_BF16 = 1 };
/* trans_b = 1 (bf16 only): B MN-major (imm-trans-b). */
void wgmma(WgType type, int n, uint64_t desc_a, uint64_t desc_b, float *d, int scale_d, int trans_b = 0);
void wgmma_fence();
void wgmma_commit();
void wgmma_wait(int n);
void thread_exit_checks();

/* Accumulation model of one wgmma (EMU_MMA): 0 "double" (default): each
 * instruction sums its k products exactly (in double; exact for e4m3) and
 * adds the incoming accumulator, one rounding to float. 1 "seq": float32,
 * sequential in k, one rounding per product (the CPU GEMM's order). */
extern int mma_mode;

} // namespace emu

/* cuTensorMapEncodeTiled's emulation (same signature, CUresult as int). */
extern "C" int emu_encode_tiled(void *map, int dtype, unsigned rank, void *base, const uint64_t *dims,
                                const uint64_t *strides, const uint32_t *box,
                                const uint32_t *element_strides, int interleave, int swizzle,
                                int l2_promotion, int oob_fill);
