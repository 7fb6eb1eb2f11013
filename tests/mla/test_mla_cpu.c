/*
 * The CPU decode's vector kernels (lib/mla/mla_cpu.h) in every instruction
 * set this machine has: each against a scalar model of the order mla_cpu.h
 * documents, bit for bit, and whole decodes (dense, sparse with a sink and
 * an extra cache, FP8, MODEL1) bit-identical across the sets through
 * DINF_CPU_ISA, which is also checked for the values it refuses.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "mla_sparse_problem.h"

#include "../core/cpu_isa_test.h"
#include "core/internal.h"
#include "mla/mla_cpu.h"
#include "mla/mla_hd.h"

#define BN DINF_MLA_BLOCK_N
#define BM DINF_MLA_BLOCK_M

static uint32_t bits_of(float x) { return dinf__f32_bits(x); }

/* random float32 values with every exponent the decode meets, some zeros */
static float rand_value(uint64_t *s) {
    const uint64_t r = sp_next(s);
    if (r % 17 == 0)
        return 0.0f;
    return (float)((sp_uniform(s) - 0.5) * ldexp(1.0, (int)(r % 20) - 10));
}

/* The documented dot: 16 lanes, lane l over d = l, l + 16, ...; folded
 * (l, l + 8), (l, l + 4), then (0, 2) + (1, 3). */
static float model_dot(const float *q, const float *k) {
    float lane[16] = {0};
    for (int d = 0; d < 576; d++)
        lane[d % 16] += q[d] * k[d];
    float h8[8], h4[4];
    for (int l = 0; l < 8; l++)
        h8[l] = lane[l] + lane[l + 8];
    for (int l = 0; l < 4; l++)
        h4[l] = h8[l] + h8[l + 4];
    return (h4[0] + h4[2]) + (h4[1] + h4[3]);
}

Test(mla_cpu_isa, kernels_of_every_set_follow_the_documented_order) {
    const int top = widest_cpu_isa();
    uint64_t s = 4242;
    const int32_t rows = 13, keys = 37; /* both padded to 16 / 40 by the kernels */
    const int32_t rows_pad = 16, keys_pad = 40;
    float *q = malloc(sizeof(float) * BM * 576), *k = malloc(sizeof(float) * BN * 576);
    float *sc = malloc(sizeof(float) * BM * BN), *acc = malloc(sizeof(float) * BM * 512);
    float *acc0 = malloc(sizeof(float) * BM * 512), *p = malloc(sizeof(float) * BM * BN);
    float alpha[BM];
    for (int i = 0; i < BM * 576; i++)
        q[i] = i < rows * 576 ? rand_value(&s) : 0.0f;
    for (int i = 0; i < BN * 576; i++)
        k[i] = i < keys * 576 ? rand_value(&s) : 0.0f;
    for (int i = 0; i < BM * 512; i++)
        acc0[i] = i < rows_pad * 512 ? rand_value(&s) : 0.0f;
    for (int i = 0; i < BM * BN; i++)
        p[i] = (float)sp_uniform(&s);
    for (int r = 0; r < BM; r++)
        alpha[r] = (float)sp_uniform(&s);
    /* the order matters for these inputs: a plain left-to-right dot differs */
    int order_visible = 0;
    for (int32_t j = 0; j < keys && !order_visible; j++) {
        float plain = 0.0f;
        for (int d = 0; d < 576; d++)
            plain += q[d] * k[(int64_t)j * 576 + d];
        order_visible = bits_of(plain) != bits_of(model_dot(q, k + (int64_t)j * 576));
    }
    cr_assert(order_visible, "the test data cannot tell summation orders apart");

    for (int isa = DINF__ISA_BASE; isa <= top; isa++) {
        const dinf__mla_cpu_kernels *kern = dinf__mla_cpu_kernels_for(isa);
        cr_assert_str_eq(kern->isa, dinf__isa_name(isa));
        /* QK^T */
        for (int i = 0; i < BM * BN; i++)
            sc[i] = NAN;
        kern->qk(q, rows, k, keys, sc);
        for (int32_t r = 0; r < rows_pad; r++)
            for (int32_t j = 0; j < keys_pad; j++) {
                const float want = model_dot(q + (int64_t)r * 576, k + (int64_t)j * 576);
                cr_assert_eq(bits_of(sc[r * BN + j]), bits_of(want),
                             "%s qk: row %d key %d: %a, want %a", kern->isa, r, j, sc[r * BN + j], want);
            }
        for (int32_t r = 0; r < BM; r++)
            for (int32_t j = 0; j < BN; j++)
                if (r >= rows_pad || j >= keys_pad)
                    cr_assert(isnan(sc[r * BN + j]), "%s qk wrote row %d key %d", kern->isa, r, j);
        /* P V */
        memcpy(acc, acc0, sizeof(float) * BM * 512);
        for (int i = rows_pad * 512; i < BM * 512; i++)
            acc[i] = NAN;
        kern->pv(acc, alpha, p, rows, k, keys);
        for (int32_t r = 0; r < rows_pad; r++)
            for (int d = 0; d < 512; d++) {
                float want = acc0[r * 512 + d] * alpha[r];
                for (int32_t j = 0; j < keys; j++)
                    want += p[r * BN + j] * k[(int64_t)j * 576 + d];
                cr_assert_eq(bits_of(acc[r * 512 + d]), bits_of(want), "%s pv: row %d col %d: %a, want %a",
                             kern->isa, r, d, acc[r * 512 + d], want);
            }
        for (int i = rows_pad * 512; i < BM * 512; i++)
            cr_assert(isnan(acc[i]), "%s pv wrote past row %d", kern->isa, rows_pad);
    }
    free(q);
    free(k);
    free(sc);
    free(acc);
    free(acc0);
    free(p);
}

Test(mla_cpu_isa, dequantize_and_widen_equal_the_scalar_conversions) {
    const int top = widest_cpu_isa();
    /* every e4m3 code, twice, at an odd address; scales: powers of two (the
     * quantizers'), others (rounded to bf16), a subnormal result range,
     * overflow to inf, zero, inf and NaN */
    unsigned char codes[1 + 512];
    for (int i = 0; i < 512; i++)
        codes[1 + i] = (unsigned char)(i * 37 % 256);
    const float scales[] = {1.0f, 0x1p-7f, 0x1p20f, 3.0f, 0.7f, 1e-40f, 0x1p-130f, 0x1p120f, 0.0f,
                            -2.0f, INFINITY, NAN};
    uint64_t s = 99;
    unsigned char halves[1 + 2 * 576];
    for (int i = 0; i < 1 + 2 * 576; i++)
        halves[i] = (unsigned char)sp_next(&s);
    float out[576];
    for (int isa = DINF__ISA_BASE; isa <= top; isa++) {
        const dinf__mla_cpu_kernels *kern = dinf__mla_cpu_kernels_for(isa);
        for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++) {
            for (int i = 0; i < 512; i++)
                out[i] = -1.0f;
            kern->dequant(codes + 1, 512, scales[si], out);
            for (int i = 0; i < 512; i++) {
                const float want = dinf__mla_fp8_value(codes[1 + i], scales[si]);
                /* a NaN code times a NaN scale: IEEE leaves open which NaN
                 * (sign, payload) the product carries, and the compiler
                 * orders the operands */
                if (isnan(want) && isnan(out[i]) && isnan(scales[si]))
                    continue;
                cr_assert_eq(bits_of(out[i]), bits_of(want), "%s: code 0x%02x scale %a: %a, want %a",
                             kern->isa, codes[1 + i], scales[si], out[i], want);
            }
        }
        kern->widen(halves + 1, 576, out);
        for (int i = 0; i < 576; i++) {
            uint16_t b;
            memcpy(&b, halves + 1 + 2 * i, 2);
            cr_assert_eq(bits_of(out[i]), (uint32_t)b << 16, "%s widen: element %d", kern->isa, i);
        }
    }
}

Test(mla_cpu_isa, the_environment_caps_the_set_and_typos_fail) {
    const int top = widest_cpu_isa();
    char msg[160];
    setenv("DINF_CPU_ISA", "base", 1);
    cr_assert_eq(dinf__cpu_isa(msg, sizeof msg), DINF__ISA_BASE);
    setenv("DINF_CPU_ISA", "avx2", 1);
    cr_assert_eq(dinf__cpu_isa(msg, sizeof msg), top < DINF__ISA_AVX2 ? top : DINF__ISA_AVX2);
    setenv("DINF_CPU_ISA", "avx512", 1);
    cr_assert_eq(dinf__cpu_isa(msg, sizeof msg), top);
    setenv("DINF_CPU_ISA", "", 1);
    cr_assert_eq(dinf__cpu_isa(msg, sizeof msg), top);
    setenv("DINF_CPU_ISA", "AVX2", 1);
    cr_assert_eq(dinf__cpu_isa(msg, sizeof msg), -1);
    cr_assert(strstr(msg, "DINF_CPU_ISA=AVX2: must be base, avx2 or avx512"), "%s", msg);

    /* the decodes refuse it, with nothing to compute too */
    sp_problem p;
    sp_make(&p, 2, 1, 16, 1, 64, 40, 0, 0.1, 0, 11);
    setenv("DINF_CPU_ISA", "sse9", 1);
    cr_assert_eq(sp_run_cpu(&p, sp_parts(&p, 8), 2), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "dinf_mla_sparse_decode_with_kvcache: DINF_CPU_ISA=sse9: must be"),
              "%s", dinf_last_error());
    uint16_t q[576] = {0}, out[512];
    float lse[1];
    const int32_t seqlens[1] = {0}, bt[1] = {0};
    int32_t meta[8], splits[2];
    cr_assert_eq(dinf_mla_get_metadata(seqlens, 1, 1, meta, splits, NULL), DINF_STATUS_OK);
    cr_assert_eq(dinf_mla_decode_with_kvcache(q, 0, 1, 1, 576, p.kc, p.num_blocks, 64, 1, 64 * 576, 576, bt,
                                              1, seqlens, 512, meta, 1, splits, 0.1f, 0, NULL, 0, out, lse,
                                              NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "DINF_CPU_ISA=sse9"), "%s", dinf_last_error());
    unsetenv("DINF_CPU_ISA");
    sp_free(&p);
}

/* One sparse problem decoded under every set: the same bits. */
static void same_bits_every_set(sp_problem *p, const char *what) {
    const int top = widest_cpu_isa();
    const int64_t rows = p->b * p->s_q * p->h_q;
    uint16_t *out0 = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV));
    float *lse0 = malloc(sizeof(float) * (size_t)rows);
    for (int isa = DINF__ISA_BASE; isa <= top; isa++) {
        setenv("DINF_CPU_ISA", dinf__isa_name(isa), 1);
        sp_poison(p);
        cr_assert_eq(sp_run_cpu(p, sp_parts(p, 40), 2), DINF_STATUS_OK, "%s %s: %s", what,
                     dinf__isa_name(isa), dinf_last_error());
        if (isa == DINF__ISA_BASE) {
            sp_check_reference(p, what);
            memcpy(out0, p->out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
            memcpy(lse0, p->lse, sizeof(float) * (size_t)rows);
            continue;
        }
        cr_assert_arr_eq(p->out, out0, sizeof(uint16_t) * (size_t)(rows * SP_DV), "%s: out under %s",
                         what, dinf__isa_name(isa));
        cr_assert_arr_eq(p->lse, lse0, sizeof(float) * (size_t)rows, "%s: lse under %s", what,
                         dinf__isa_name(isa));
    }
    unsetenv("DINF_CPU_ISA");
    free(out0);
    free(lse0);
}

Test(mla_cpu_isa, sparse_decodes_give_the_same_bits_under_every_set) {
    const char *const names[] = {"bf16", "fp8", "model1"};
    for (int fmt = 0; fmt < 3; fmt++) {
        sp_problem p;
        /* h_q 23: row groups with a remainder; topk 150: a partial last block */
        sp_make(&p, 3, 2, fmt == 0 ? 23 : 64, 1, fmt == 1 ? 64 : 29, 150, 1, 0.15, fmt, 700 + fmt);
        sp_add_extra(&p, 45, 17, 1, 0.15, 800 + fmt);
        sp_add_sink(&p, 900 + fmt);
        same_bits_every_set(&p, names[fmt]);
        sp_free(&p);
    }
}
