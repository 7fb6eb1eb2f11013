/*
 * One variant of the CPU GEMM's per-k-block kernels (gemm_cpu.h: tile_block,
 * load_a, load_bt) and their dinf__gemm_cpu_kernels table kernels_NAME.
 * gemm.c includes this once per instruction set (internal.h: dinf__isa),
 * after defining:
 *   NAME    the variant's name (base, avx2, avx512)
 *   TARGET  its function attribute (empty for the build's baseline)
 *   VT, VW  a GCC vector type of VW floats, the set's register width
 *   MR, NV  tile_block's register tile: MR rows x NV registers of columns
 * and, once for all variants: BLOCK_K and TILE_N (gemm.c); v4f, v8f, CAT_STR
 * and DINF_CPU_SHUFFLE come from lib/core/cpu_vec.h. MR
 * divides PAD_M and NV * VW divides PAD_N (gemm.c). Every variant computes
 * each element the same way (gemm.c: tile_block), so all give the same bits;
 * the loads decode e4m3 exactly (lib/core/cpu_vec_body.h; SSE2 through
 * gemm.c's e4m3_table), so theirs are equal too. No include guard: included once per variant; it undefines its
 * parameters and its own helpers (PICK, VI, VU) at its end.
 */
#include "../core/cpu_vec_body.h" /* CAT, VI, VU, the loads and the decode */

TARGET static void CAT(tile_block, NAME)(const float *restrict a, const float *restrict bt,
                                         int64_t kk, int64_t rows_pad, int64_t cols_pad,
                                         const float *restrict row_scale,
                                         const float *restrict col_scale, float *restrict total) {
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
            VT cs[NV];
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++)
                memcpy(&cs[v], col_scale + j0 + v * VW, sizeof(VT));
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++)
#pragma GCC unroll 16
                for (int v = 0; v < NV; v++) {
                    float *t = total + (i0 + r) * TILE_N + j0 + v * VW;
                    VT acc;
                    memcpy(&acc, t, sizeof acc);
                    acc += (row_scale[i0 + r] * cs[v]) * c[r][v];
                    memcpy(t, &acc, sizeof acc);
                }
        }
}

/* kk codes -> float32, exactly numeric_hd.h's dinf__f32_from_e4m3 (VW at a
 * time, the tail one by one through it; with VW 4, one by one from gemm.c's
 * e4m3_table) */
TARGET static inline void CAT(decode_row, NAME)(const uint8_t *restrict src, int64_t kk,
                                                float *restrict dst) {
    int64_t k = 0;
#if VW == 4
    /* 4-float registers (SSE2): the table (gemm.c: e4m3_table) is faster */
    for (; k < kk; k++)
        memcpy(dst + k, &e4m3_table[src[k]], sizeof *dst);
#else
    for (; k + VW <= kk; k += VW) {
        const VU bits = CAT(e4m3_bits, NAME)(CAT(u8_u32, NAME)(src + k));
        memcpy(dst + k, &bits, sizeof bits);
    }
    for (; k < kk; k++)
        dst[k] = dinf__f32_from_e4m3(src[k]);
#endif
}

TARGET static void CAT(load_a, NAME)(const uint8_t *restrict src, int64_t lda, int64_t rows,
                                     int64_t kk, float *restrict dst) {
    for (int64_t r = 0; r < rows; r++)
        CAT(decode_row, NAME)(src + r * lda, kk, dst + r * BLOCK_K);
}

/* SQ columns at a time (8; 4 with 4-float registers): their codes decoded
 * into rows of tmp, then each SQ x SQ square transposed into bt (a data
 * move: the bits are the decode's). */
#if VW == 4
#define SQ 4
#else
#define SQ 8
#endif
TARGET static void CAT(load_bt, NAME)(const uint8_t *restrict src, int64_t ldb, int64_t cols,
                                      int64_t cols_pad, int64_t kk, float *restrict bt) {
    _Alignas(64) float tmp[SQ][BLOCK_K];
    const int64_t kk_sq = (kk + SQ - 1) / SQ * SQ;
    for (int64_t c0 = 0; c0 < cols_pad; c0 += SQ) {
        for (int64_t i = 0; i < SQ; i++) {
            int64_t done = 0;
            if (c0 + i < cols) {
                CAT(decode_row, NAME)(src + (c0 + i) * ldb, kk, tmp[i]);
                done = kk;
            }
            for (int64_t k = done; k < kk_sq; k++) /* padding columns; the k tail */
                tmp[i][k] = 0.0f;
        }
        for (int64_t k0 = 0; k0 < kk; k0 += SQ) {
            const int64_t rows_out = kk - k0 < SQ ? kk - k0 : SQ;
#if DINF_CPU_SHUFFLE && SQ == 8
            v8f r[8], t[8], u[8], o[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                memcpy(&r[i], &tmp[i][k0], sizeof r[i]);
            /* pairs interleaved, then pairs of pairs, then halves: o[j][i] = r[i][j] */
#pragma GCC unroll 4
            for (int i = 0; i < 8; i += 2) {
                t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
                t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
            }
#pragma GCC unroll 2
            for (int i = 0; i < 8; i += 4) {
                u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
                u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
                u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
                u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
            }
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                o[j] = __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
                o[j + 4] = __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
            }
            for (int64_t j = 0; j < rows_out; j++)
                memcpy(bt + (k0 + j) * TILE_N + c0, &o[j], sizeof o[j]);
#elif DINF_CPU_SHUFFLE && SQ == 4
            v4f r[4], t[4], o[4];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                memcpy(&r[i], &tmp[i][k0], sizeof r[i]);
            /* pairs interleaved, then halves: o[j][i] = r[i][j] */
#pragma GCC unroll 2
            for (int i = 0; i < 4; i += 2) {
                t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 4, 1, 5);
                t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 6, 3, 7);
            }
#pragma GCC unroll 2
            for (int j = 0; j < 2; j++) {
                o[2 * j] = __builtin_shufflevector(t[j], t[j + 2], 0, 1, 4, 5);
                o[2 * j + 1] = __builtin_shufflevector(t[j], t[j + 2], 2, 3, 6, 7);
            }
            for (int64_t j = 0; j < rows_out; j++)
                memcpy(bt + (k0 + j) * TILE_N + c0, &o[j], sizeof o[j]);
#else
            for (int64_t j = 0; j < rows_out; j++)
                for (int i = 0; i < SQ; i++)
                    bt[(k0 + j) * TILE_N + c0 + i] = tmp[i][k0 + j];
#endif
        }
    }
}
#undef SQ

static const dinf__gemm_cpu_kernels CAT(kernels, NAME) = {.isa = CAT_STR(NAME),
                                                          .tile_block = CAT(tile_block, NAME),
                                                          .load_a = CAT(load_a, NAME),
                                                          .load_bt = CAT(load_bt, NAME)};

#undef PICK
#undef VI
#undef VU
#undef CAT
#undef CAT_
/* the variant's parameters, for the next include */
#undef NAME
#undef TARGET
#undef VT
#undef VW
#undef MR
#undef NV
