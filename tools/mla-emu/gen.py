"""Turn kernels/mla/mla_decode.cu into host C++ for the emulator: the PTX
helpers (mma.sync, ldmatrix.trans, cvt.bf16x2) become warp-collective host
functions with the PTX ISA fragment layouts, the launchers run each CTA's 256
threads as fibers (emu_rt.cpp). MUT='old|||new' applies one textual mutation
first (to check that a test catches a planted bug).
usage: gen.py REPO_ROOT OUT.cpp"""
import os, sys
root, out = sys.argv[1], sys.argv[2]
src = open(os.path.join(root, 'kernels/mla/mla_decode.cu')).read()
here = os.path.dirname(os.path.abspath(__file__))
mut = os.environ.get('MUT')
if mut:
    old, new = mut.split('|||')
    assert src.count(old) == 1, ('mutation not unique', old, src.count(old))
    src = src.replace(old, new)
# includes
src = src.replace('#include <cuda_runtime_api.h>\n', '#include "cuda_emu.h"\n')
# the launchers' device guard (the launchers are replaced below)
src = src.replace('#include "../../lib/core/cuda_guard.h"\n', '')
src = src.replace('"../../lib/', '"' + os.path.join(root, 'lib') + '/')
# PTX helpers
a = src.index('/* ------------------------------------------------------------ PTX helpers -- */')
b = src.index('/* ------------------------------------------------------------- metadata -- */')
helpers = r'''
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    return (uint32_t)dinf__bf16_from_f32(lo) | ((uint32_t)dinf__bf16_from_f32(hi) << 16);
}
static inline float lo16(uint32_t v) { return dinf__f32_from_bf16((uint16_t)(v & 0xffffu)); }
static inline float hi16(uint32_t v) { return dinf__f32_from_bf16((uint16_t)(v >> 16)); }
/* mma.sync.m16n8k16.row.col f32 bf16: PTX ISA fragment layouts */
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    const unsigned t = threadIdx.x, lane = t & 31u, base = t & ~31u;
    emu::WarpSlot *sl = warp_slots();
    emu::WarpSlot &s = sl[t];
    for (int i = 0; i < 4; i++) s.v[i] = a[i];
    s.v[4] = b0; s.v[5] = b1;
    warp_sync();
    float A[16][16], B[16][8];
    for (unsigned L = 0; L < 32; L++) {
        const emu::WarpSlot &o = sl[base + L];
        const unsigned g = L / 4, q = L % 4;
        A[g][2 * q] = lo16(o.v[0]); A[g][2 * q + 1] = hi16(o.v[0]);
        A[g + 8][2 * q] = lo16(o.v[1]); A[g + 8][2 * q + 1] = hi16(o.v[1]);
        A[g][2 * q + 8] = lo16(o.v[2]); A[g][2 * q + 9] = hi16(o.v[2]);
        A[g + 8][2 * q + 8] = lo16(o.v[3]); A[g + 8][2 * q + 9] = hi16(o.v[3]);
        B[2 * q][g] = lo16(o.v[4]); B[2 * q + 1][g] = hi16(o.v[4]);
        B[2 * q + 8][g] = lo16(o.v[5]); B[2 * q + 9][g] = hi16(o.v[5]);
    }
    const unsigned g = lane / 4, q = lane % 4;
    for (int e = 0; e < 4; e++) {
        const unsigned row = g + 8 * (e / 2), col = 2 * q + (e & 1);
        double acc = 0;
        for (int k = 0; k < 16; k++) acc += (double)A[row][k] * (double)B[k][col];
        d[e] = (float)((double)d[e] + acc);
    }
}
/* ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 */
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const uint16_t *smem) {
    const unsigned t = threadIdx.x, lane = t & 31u, base = t & ~31u;
    if ((uintptr_t)smem % 16) { fprintf(stderr, "EMU: ldmatrix row address %p not 16-byte aligned\n", (const void *)smem); abort(); }
    if ((const char *)smem < emu_smem_lo || (const char *)smem + 16 > emu_smem_hi) { fprintf(stderr, "EMU: ldmatrix outside smem\n"); abort(); }
    emu::WarpSlot *sl = warp_slots();
    sl[t].addr = smem;
    warp_sync();
    for (unsigned i = 0; i < 4; i++) {
        const uint16_t *rlo = (const uint16_t *)sl[base + 8 * i + 2 * (lane % 4)].addr;
        const uint16_t *rhi = (const uint16_t *)sl[base + 8 * i + 2 * (lane % 4) + 1].addr;
        r[i] = (uint32_t)rlo[lane / 4] | ((uint32_t)rhi[lane / 4] << 16);
    }
}
/* griddepcontrol.wait: the emulated grids run one after the other */
__device__ __forceinline__ void grid_dependency_wait() {}
__device__ __forceinline__ uint32_t ld_shared_u32(const uint16_t *p) {
    if ((const char *)p < emu_smem_lo || (const char *)p + 4 > emu_smem_hi || (uintptr_t)p % 4) { fprintf(stderr, "EMU: bad shared load\n"); abort(); }
    return *reinterpret_cast<const uint32_t *>(p);
}
'''
src = src[:a] + helpers + src[b:]
src = src.replace('extern __shared__ __align__(16) uint16_t smem[];', 'uint16_t *smem = reinterpret_cast<uint16_t *>(emu_smem_lo);')
# launchers
c = src.index('/* ------------------------------------------------------------- launchers -- */')
src = src[:c] + open(os.path.join(here, 'launchers.inc')).read()
pre = '#include "cuda_emu.h"\nstatic char *emu_smem_lo, *emu_smem_hi;\n'
open(out, 'w').write(pre + src)
