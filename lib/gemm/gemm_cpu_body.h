/*
 * One variant of the CPU GEMM's k-block kernel (gemm.c); gemm.c includes
 * this once per instruction set (internal.h: dinf__isa), after defining:
 *   NAME    the variant's name (base, avx2, avx512)
 *   TARGET  its function attribute (empty for the build's baseline)
 *   VT, VW  a GCC vector type of VW floats, the set's register width
 *   MR, NV  the register tile: MR rows x NV registers of columns
 * MR divides PAD_M and NV * VW divides PAD_N (gemm.c). Every variant computes
 * each element the same way (gemm.c: tile_block), so all give the same bits.
 * No include guard: included once per variant; it undefines them at its end.
 */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)

TARGET static void CAT(tile_block, NAME)(const float *restrict a, const float *restrict bt,
                                         int64_t kk, int64_t rows_pad, int64_t cols_pad,
                                         const float *restrict row_scale, float *restrict total) {
    for (int64_t i0 = 0; i0 < rows_pad; i0 += MR)
        for (int64_t j0 = 0; j0 < cols_pad; j0 += NV * VW) {
            VT c[MR][NV];
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++)
#pragma GCC unroll 16
                for (int v = 0; v < NV; v++)
                    c[r][v] = (VT){0};
            const float *bp = bt + j0;
            for (int64_t k = 0; k < kk; k++, bp += TILE_N) {
                VT b[NV];
#pragma GCC unroll 16
                for (int v = 0; v < NV; v++)
                    memcpy(&b[v], bp + v * VW, sizeof(VT));
#pragma GCC unroll 16
                for (int r = 0; r < MR; r++) {
                    const float ar = a[(i0 + r) * BLOCK_K + k];
#pragma GCC unroll 16
                    for (int v = 0; v < NV; v++)
                        c[r][v] += ar * b[v];
                }
            }
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++)
#pragma GCC unroll 16
                for (int v = 0; v < NV; v++) {
                    float *t = total + (i0 + r) * TILE_N + j0 + v * VW;
                    VT acc;
                    memcpy(&acc, t, sizeof acc);
                    acc += row_scale[i0 + r] * c[r][v];
                    memcpy(t, &acc, sizeof acc);
                }
        }
}

#undef CAT
#undef CAT_
/* the variant's parameters, for the next include */
#undef NAME
#undef TARGET
#undef VT
#undef VW
#undef MR
#undef NV
