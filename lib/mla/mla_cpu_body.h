/*
 * One variant of the CPU decode's vector kernels (mla_cpu.h); mla_cpu.c
 * includes this once per instruction set, after defining:
 *   NAME    the variant's name (base, avx2, avx512)
 *   TARGET  its function attribute (empty for the build's baseline)
 *   VT, VW  a GCC vector type of VW floats, the set's register width
 *   QR, QKK the QK^T tile: QR rows x QKK keys, each dot a 16-lane
 *           accumulator of 16 / VW registers
 *   PR, PC  the P V tile: PR rows x PC registers of output columns
 * QR and PR divide DINF__MLA_CPU_PAD, QKK divides it too.
 * No include guard: included once per variant; it undefines them at its end.
 */
#define H (16 / VW)
#include "../core/cpu_vec_body.h" /* CAT, VI, VU, the loads and the decode */

TARGET ALWAYS_INLINE VT CAT(ld, NAME)(const float *p) {
    VT v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The 16 lanes of one dot, folded in halves: (l, l + 8), (l, l + 4), then
 * (0, 2) + (1, 3). x[h] holds lanes h * VW .. h * VW + VW - 1. */
TARGET ALWAYS_INLINE float CAT(fold, NAME)(const VT *x) {
#if !DINF_CPU_SHUFFLE
    /* compilers without the builtin (GCC < 12): the same sums, lane by lane */
    float h8[8], h4[4];
    for (int l = 0; l < 8; l++)
        h8[l] = x[l / VW][l % VW] + x[(l + 8) / VW][(l + 8) % VW];
    for (int l = 0; l < 4; l++)
        h4[l] = h8[l] + h8[l + 4];
#elif VW == 16
    const v8f h8 = __builtin_shufflevector(x[0], x[0], 0, 1, 2, 3, 4, 5, 6, 7) +
                   __builtin_shufflevector(x[0], x[0], 8, 9, 10, 11, 12, 13, 14, 15);
    const v4f h4 = __builtin_shufflevector(h8, h8, 0, 1, 2, 3) +
                   __builtin_shufflevector(h8, h8, 4, 5, 6, 7);
#elif VW == 8
    const v8f h8 = x[0] + x[1];
    const v4f h4 = __builtin_shufflevector(h8, h8, 0, 1, 2, 3) +
                   __builtin_shufflevector(h8, h8, 4, 5, 6, 7);
#elif VW == 4
    const v4f h4 = (x[0] + x[2]) + (x[1] + x[3]);
#else
#error "VW must be 4, 8 or 16"
#endif
    return (h4[0] + h4[2]) + (h4[1] + h4[3]);
}

TARGET static void CAT(qk, NAME)(const float *q, int32_t rows, const float *k, int32_t keys,
                                 float *s) {
    rows = (rows + DINF__MLA_CPU_PAD - 1) / DINF__MLA_CPU_PAD * DINF__MLA_CPU_PAD;
    keys = (keys + DINF__MLA_CPU_PAD - 1) / DINF__MLA_CPU_PAD * DINF__MLA_CPU_PAD;
    for (int32_t r0 = 0; r0 < rows; r0 += QR)
        for (int32_t j0 = 0; j0 < keys; j0 += QKK) {
            VT acc[QR][QKK][H];
#pragma GCC unroll 16
            for (int i = 0; i < QR; i++)
#pragma GCC unroll 16
                for (int c = 0; c < QKK; c++)
#pragma GCC unroll 16
                    for (int h = 0; h < H; h++)
                        acc[i][c][h] = (VT){0};
            for (int d = 0; d < DQK; d += 16)
#pragma GCC unroll 16
                for (int h = 0; h < H; h++) {
                    VT kv[QKK];
#pragma GCC unroll 16
                    for (int c = 0; c < QKK; c++)
                        kv[c] = CAT(ld, NAME)(k + (int64_t)(j0 + c) * DQK + d + h * VW);
#pragma GCC unroll 16
                    for (int i = 0; i < QR; i++) {
                        const VT qv = CAT(ld, NAME)(q + (int64_t)(r0 + i) * DQK + d + h * VW);
#pragma GCC unroll 16
                        for (int c = 0; c < QKK; c++)
                            acc[i][c][h] += qv * kv[c];
                    }
                }
#pragma GCC unroll 16
            for (int i = 0; i < QR; i++)
#pragma GCC unroll 16
                for (int c = 0; c < QKK; c++)
                    s[(int64_t)(r0 + i) * BN + j0 + c] = CAT(fold, NAME)(acc[i][c]);
        }
}

TARGET static void CAT(pv, NAME)(float *acc, const float *alpha, const float *p, int32_t rows,
                                 const float *k, int32_t nv) {
    rows = (rows + DINF__MLA_CPU_PAD - 1) / DINF__MLA_CPU_PAD * DINF__MLA_CPU_PAD;
    for (int32_t r0 = 0; r0 < rows; r0 += PR)
        for (int d0 = 0; d0 < DV; d0 += PC * VW) {
            VT a[PR][PC];
#pragma GCC unroll 16
            for (int i = 0; i < PR; i++)
#pragma GCC unroll 16
                for (int c = 0; c < PC; c++)
                    a[i][c] = CAT(ld, NAME)(acc + (int64_t)(r0 + i) * DV + d0 + c * VW) * alpha[r0 + i];
            for (int32_t j = 0; j < nv; j++) {
                VT y[PC];
#pragma GCC unroll 16
                for (int c = 0; c < PC; c++)
                    y[c] = CAT(ld, NAME)(k + (int64_t)j * DQK + d0 + c * VW);
#pragma GCC unroll 16
                for (int i = 0; i < PR; i++) {
                    const float pj = p[(int64_t)(r0 + i) * BN + j];
#pragma GCC unroll 16
                    for (int c = 0; c < PC; c++)
                        a[i][c] += pj * y[c];
                }
            }
#pragma GCC unroll 16
            for (int i = 0; i < PR; i++)
#pragma GCC unroll 16
                for (int c = 0; c < PC; c++)
                    memcpy(acc + (int64_t)(r0 + i) * DV + d0 + c * VW, &a[i][c], sizeof(VT));
        }
}

TARGET static void CAT(dequant, NAME)(const unsigned char *codes, int32_t n, float scale,
                                      float *dst) {
    for (int32_t i = 0; i < n; i += VW) {
        /* e4m3 -> float32 (numeric_hd.h: dinf__f32_from_e4m3) */
        const VU bits = CAT(e4m3_bits, NAME)(CAT(u8_u32, NAME)(codes + i));
        VT f;
        memcpy(&f, &bits, sizeof f);
        f = f * scale;
        /* rounded to bf16, to nearest even; NaN quiet (dinf__bf16_from_f32) */
        VU u;
        memcpy(&u, &f, sizeof u);
        u = PICK((VU)((u & 0x7fffffffu) > 0x7f800000u), (u & 0xffff0000u) | 0x00400000u,
                            (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u);
        memcpy(dst + i, &u, sizeof u);
    }
}

TARGET static void CAT(widen, NAME)(const unsigned char *src, int32_t n, float *dst) {
    for (int32_t i = 0; i < n; i += VW) {
        const VU u = CAT(u16_u32, NAME)(src + 2 * (int64_t)i) << 16;
        memcpy(dst + i, &u, sizeof u);
    }
}

static const dinf__mla_cpu_kernels CAT(kernels, NAME) = {.isa = CAT_STR(NAME),
                                                         .qk = CAT(qk, NAME),
                                                         .pv = CAT(pv, NAME),
                                                         .dequant = CAT(dequant, NAME),
                                                         .widen = CAT(widen, NAME)};

#undef PICK
#undef VI
#undef VU

#undef H
#undef CAT
#undef CAT_
/* the variant's parameters, for the next include */
#undef NAME
#undef TARGET
#undef VT
#undef VW
#undef QR
#undef QKK
#undef PR
#undef PC
