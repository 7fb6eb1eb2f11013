/*
 * FP8 / BF16 number formats and quantization (core.h): the scalar
 * conversions against ml_dtypes' table and exhaustive rounding properties,
 * dinf_convert, dinf_fp8_quantize against an independent straightforward
 * implementation, the quantizer's per-set vector kernels against the scalar
 * functions, dinf_fp8_scale_layout_mn_major, and every rejected input.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <deepinfra.h>

#include "core/fp8_cpu.h"
#include "cpu_isa_test.h"
#include "core/internal.h"
#include "core/numeric_hd.h"

#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if DINF_WITH_CUDA && defined(__has_include)
#if __has_include(<cuda_fp8.h>)
#include <cuda_fp8.h>
#define HAVE_CUDA_FP8 1
#endif
#endif

static uint32_t bits(float x) { return dinf__f32_bits(x); }

/* xorshift64*: reproducible random inputs (the seed is in every message). */
static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}
static float rng_uniform(uint64_t *s) { return (float)(rng_next(s) >> 40) / (float)(1u << 24); }

/* ----------------------------------------------------------- decoding --- */

static FILE *open_data(const char *rel) {
    const char *roots[] = {getenv("DINF_SOURCE_DIR"), DINF_SOURCE_DIR, "."};
    char path[4096];
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        if (!roots[i])
            continue;
        snprintf(path, sizeof path, "%s/%s", roots[i], rel);
        FILE *f = fopen(path, "r");
        if (f)
            return f;
    }
    return NULL;
}

Test(fp8_e4m3, all_256_codes_decode_as_ml_dtypes_does) {
    FILE *f = open_data("tests/core/data/e4m3_values.txt");
    cr_assert_not_null(f, "tests/core/data/e4m3_values.txt not found (set DINF_SOURCE_DIR)");
    char line[256];
    int seen = 0;
    uint8_t codes[256];
    float decoded[256];
    for (int c = 0; c < 256; c++)
        codes[c] = (uint8_t)c;
    cr_assert_eq(dinf_convert(codes, DINF_DTYPE_FP8_E4M3, decoded, DINF_DTYPE_FLOAT32, 256, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    while (fgets(line, sizeof line, f)) {
        unsigned code, expected;
        if (line[0] == '#')
            continue;
        cr_assert_eq(sscanf(line, "%x %x", &code, &expected), 2, "bad line: %s", line);
        cr_assert_eq(code, (unsigned)seen, "table out of order at %s", line);
        cr_assert_eq(bits(dinf__f32_from_e4m3((uint8_t)code)), expected,
                     "code 0x%02X: got 0x%08X, ml_dtypes 0x%08X", code,
                     bits(dinf__f32_from_e4m3((uint8_t)code)), expected);
        cr_assert_eq(bits(decoded[code]), expected, "dinf_convert, code 0x%02X", code);
        seen++;
    }
    fclose(f);
    cr_assert_eq(seen, 256);
}

/* ----------------------------------------------------------- encoding --- */

static void expect_e4m3(float x, uint8_t expected) {
    const uint8_t got = dinf__e4m3_from_f32(x);
    cr_assert_eq(got, expected, "e4m3(%a = 0x%08X) = 0x%02X, expected 0x%02X", (double)x, bits(x),
                 got, expected);
#ifdef HAVE_CUDA_FP8
    if (!isnan(x)) {
        const uint8_t nv = (uint8_t)__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
        cr_assert_eq(got, nv, "e4m3(%a): ours 0x%02X, CUDA's __nv_cvt_float_to_fp8 0x%02X",
                     (double)x, got, nv);
    }
#endif
}

Test(fp8_e4m3, every_finite_value_encodes_to_its_code) {
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f)
            continue;
        expect_e4m3(dinf__f32_from_e4m3((uint8_t)c), (uint8_t)c);
    }
}

/* Adjacent finite codes c, c+1 of one sign: the midpoint goes to the even
 * code, one float above to c+1, one float below to c. */
Test(fp8_e4m3, midpoints_round_to_even_and_neighbours_to_nearest) {
    for (int sign = 0; sign < 2; sign++)
        for (int c = 0; c < 0x7e; c++) {
            const uint8_t lo = (uint8_t)(c | sign << 7), hi = (uint8_t)((c + 1) | sign << 7);
            const float a = dinf__f32_from_e4m3(lo), b = dinf__f32_from_e4m3(hi);
            const float mid = (a + b) / 2; /* exact: one more mantissa bit */
            cr_assert_eq((double)mid, ((double)a + (double)b) / 2);
            expect_e4m3(mid, (c & 1) ? hi : lo);
            expect_e4m3(nextafterf(mid, sign ? -INFINITY : INFINITY), hi);
            expect_e4m3(nextafterf(mid, 0.0f), lo);
        }
}

Test(fp8_e4m3, saturates_at_448_infinities_included) {
    const float big[] = {448.0f, nextafterf(448.0f, INFINITY), 449.0f, 463.99f, 464.0f,
                         nextafterf(464.0f, INFINITY), 480.0f, 1e6f, 1e30f, FLT_MAX, INFINITY};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        expect_e4m3(big[i], 0x7e);
        expect_e4m3(-big[i], 0xfe);
    }
    expect_e4m3(nextafterf(448.0f, 0.0f), 0x7e);   /* above 432, the midpoint below 448 */
    expect_e4m3(432.0f, 0x7e);                     /* tie 416|448: 0x7E is even */
    expect_e4m3(nextafterf(432.0f, 0.0f), 0x7d);
}

Test(fp8_e4m3, nan_stays_nan_with_its_sign_and_zeros_keep_theirs) {
    expect_e4m3(NAN, 0x7f);
    expect_e4m3(-NAN, 0xff);
    expect_e4m3(dinf__f32_from_bits(0x7f800001u), 0x7f); /* signalling */
    expect_e4m3(dinf__f32_from_bits(0xffbfffffu), 0xff);
    expect_e4m3(0.0f, 0x00);
    expect_e4m3(-0.0f, 0x80);
    cr_assert(isnan(dinf__f32_from_e4m3(0x7f)) && isnan(dinf__f32_from_e4m3(0xff)));
    cr_assert(signbit(dinf__f32_from_e4m3(0xff)) && signbit(dinf__f32_from_e4m3(0x80)));
}

Test(fp8_e4m3, subnormals_and_underflow) {
    const float s = 1.0f / 512.0f; /* 2^-9, code 0x01 */
    expect_e4m3(s, 0x01);
    expect_e4m3(7 * s, 0x07);
    expect_e4m3(8 * s, 0x08); /* 2^-6, the smallest normal */
    expect_e4m3(s / 2, 0x00); /* tie 0|1 -> 0 (even) */
    expect_e4m3(nextafterf(s / 2, 1.0f), 0x01);
    expect_e4m3(-s / 2, 0x80);
    expect_e4m3(1.5f * s, 0x02); /* tie 1|2 -> 2 */
    expect_e4m3(7.5f * s, 0x08); /* tie 7|8 -> 8, across the normal boundary */
    expect_e4m3(1e-30f, 0x00);
    expect_e4m3(-1e-30f, 0x80);
    expect_e4m3(dinf__f32_from_bits(1), 0x00); /* smallest float subnormal */
}

#ifdef HAVE_CUDA_FP8
/* A sample of every float32 exponent and mantissa region (bit patterns in
 * steps of 2^9 + 1) against CUDA's own host conversion. */
Test(fp8_e4m3, matches_cuda_host_conversion_on_a_bit_pattern_sweep) {
    for (uint64_t u = 0; u <= 0xffffffffu; u += 513) {
        const float x = dinf__f32_from_bits((uint32_t)u);
        if (isnan(x))
            continue;
        const uint8_t ours = dinf__e4m3_from_f32(x);
        const uint8_t nv = (uint8_t)__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
        if (ours != nv)
            cr_assert_fail("0x%08X: ours 0x%02X, CUDA 0x%02X", (unsigned)u, ours, nv);
    }
}
#endif

/* ----------------------------------------------------------- bfloat16 --- */

Test(fp8_bf16, every_bf16_round_trips_and_nan_is_quieted) {
    for (uint32_t b = 0; b < 0x10000u; b++) {
        const float x = dinf__f32_from_bf16((uint16_t)b);
        cr_assert_eq(bits(x), b << 16);
        const uint16_t back = dinf__bf16_from_f32(x);
        const int nan = (b & 0x7fffu) > 0x7f80u;
        cr_assert_eq(back, nan ? (uint16_t)(b | 0x40u) : (uint16_t)b, "0x%04X -> 0x%04X", b, back);
    }
}

Test(fp8_bf16, rounds_to_nearest_even) {
    const struct { uint32_t f32; uint16_t bf16; } cases[] = {
        {0x3f808000u, 0x3f80}, /* tie, even below */
        {0x3f818000u, 0x3f82}, /* tie, odd below: up */
        {0x3f808001u, 0x3f81}, {0x3f807fffu, 0x3f80}, {0xbf818000u, 0xbf82},
        {0x7f7f8000u, 0x7f80}, /* largest bf16 + half an ulp: to infinity */
        {0x7f7f7fffu, 0x7f7f}, {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80},
        {0x00008000u, 0x0000}, {0x00018000u, 0x0002}, /* subnormal ties */
        {0x80000000u, 0x8000}, {0x7f800001u, 0x7fc0}, {0xffc00000u, 0xffc0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_assert_eq(dinf__bf16_from_f32(dinf__f32_from_bits(cases[i].f32)), cases[i].bf16,
                     "0x%08X -> 0x%04X, expected 0x%04X", cases[i].f32,
                     dinf__bf16_from_f32(dinf__f32_from_bits(cases[i].f32)), cases[i].bf16);
}

/* ------------------------------------------------------- dinf_convert --- */

#define CONVERT_N 5003

static float special_or_random(uint64_t *s, int64_t i) {
    static const float specials[] = {0.0f, -0.0f, 448.0f, -448.0f, 464.0f, 1e30f, INFINITY,
                                     -INFINITY, NAN, 1.0f / 1024, 3.0f / 1024, 1e-30f};
    if (i < (int64_t)(sizeof specials / sizeof specials[0]))
        return specials[i];
    /* random signs, mantissas and exponents around the e4m3 range */
    const float mag = ldexpf(1.0f + rng_uniform(s), (int)(rng_next(s) % 40) - 20);
    return (rng_next(s) & 1) ? -mag : mag;
}

static void fill_source(dinf_dtype dtype, void *buf, int64_t n, uint64_t seed) {
    uint64_t s = seed;
    for (int64_t i = 0; i < n; i++) {
        const float v = special_or_random(&s, i);
        if (dtype == DINF_DTYPE_FLOAT32)
            ((float *)buf)[i] = v;
        else if (dtype == DINF_DTYPE_BFLOAT16)
            ((uint16_t *)buf)[i] = dinf__bf16_from_f32(v);
        else
            ((uint8_t *)buf)[i] = (uint8_t)rng_next(&s); /* e4m3: every code */
    }
}

static float scalar_load(dinf_dtype dtype, const void *p, int64_t i) {
    if (dtype == DINF_DTYPE_BFLOAT16)
        return dinf__f32_from_bf16(((const uint16_t *)p)[i]);
    if (dtype == DINF_DTYPE_FP8_E4M3)
        return dinf__f32_from_e4m3(((const uint8_t *)p)[i]);
    return ((const float *)p)[i];
}

Test(fp8_convert, every_pair_matches_the_scalar_functions_at_any_thread_count) {
    const dinf_dtype types[] = {DINF_DTYPE_FLOAT32, DINF_DTYPE_BFLOAT16, DINF_DTYPE_FP8_E4M3};
    const int32_t threads[] = {1, 2, 7};
    for (int si = 0; si < 3; si++)
        for (int di = 0; di < 3; di++) {
            const dinf_dtype st = types[si], dt = types[di];
            size_t dsize;
            dinf_dtype_size(dt, &dsize);
            float src_storage[CONVERT_N];
            unsigned char expected[CONVERT_N * 4], got[CONVERT_N * 4 + 1];
            fill_source(st, src_storage, CONVERT_N, 42 + (uint64_t)si);
            for (int64_t i = 0; i < CONVERT_N; i++) {
                const float v = scalar_load(st, src_storage, i);
                if (st == dt)
                    memcpy(expected + i * dsize, (const char *)src_storage + i * dsize, dsize);
                else if (dt == DINF_DTYPE_FLOAT32)
                    memcpy(expected + i * 4, &v, 4);
                else if (dt == DINF_DTYPE_BFLOAT16) {
                    const uint16_t b = dinf__bf16_from_f32(v);
                    memcpy(expected + i * 2, &b, 2);
                } else
                    expected[i] = dinf__e4m3_from_f32(v);
            }
            for (int t = 0; t < 3; t++) {
                dinf_exec exec = DINF_EXEC_CPU_INIT;
                exec.num_threads = threads[t];
                memset(got, 0xa5, sizeof got);
                cr_assert_eq(dinf_convert(src_storage, st, got, dt, CONVERT_N, &exec),
                             DINF_STATUS_OK, "%s", dinf_last_error());
                cr_assert_eq(memcmp(got, expected, CONVERT_N * dsize), 0, "%s -> %s, threads=%d",
                             dinf_dtype_name(st), dinf_dtype_name(dt), threads[t]);
                cr_assert_eq(got[CONVERT_N * dsize], 0xa5, "wrote past the end");
            }
        }
}

Test(fp8_convert, count_zero_and_in_place_copy) {
    cr_assert_eq(dinf_convert(NULL, DINF_DTYPE_FLOAT32, NULL, DINF_DTYPE_FP8_E4M3, 0, NULL),
                 DINF_STATUS_OK);
    int32_t v[3] = {1, -2, 3};
    cr_assert_eq(dinf_convert(v, DINF_DTYPE_INT32, v, DINF_DTYPE_INT32, 3, NULL), DINF_STATUS_OK);
    cr_assert(v[0] == 1 && v[1] == -2 && v[2] == 3);
    int64_t w[3];
    cr_assert_eq(dinf_convert(v, DINF_DTYPE_INT32, w, DINF_DTYPE_INT32, 0, NULL), DINF_STATUS_OK);
    double d[2] = {1.5, -2.25}, e[2] = {0, 0};
    cr_assert_eq(dinf_convert(d, DINF_DTYPE_FLOAT64, e, DINF_DTYPE_FLOAT64, 2, NULL),
                 DINF_STATUS_OK);
    cr_assert(e[0] == 1.5 && e[1] == -2.25);
}

/* ---------------------------------------------------- dinf_fp8_quantize --- */

/* The documented math, written out plainly: per block, amax over the
 * non-NaN |x| (NaN compares false), floored at 1e-4; scale = amax / 448;
 * q = e4m3(clamp(x * (448 / amax))). */
static void reference_quantize(const float *x, int64_t m, int64_t k, int64_t x_ld,
                               int block_rows, uint8_t *q, int64_t q_ld, float *scales) {
    const int64_t kb = (k + 127) / 128;
    for (int64_t r0 = 0; r0 < m; r0 += block_rows)
        for (int64_t c0 = 0; c0 < k; c0 += 128) {
            float amax = 0.0f;
            for (int64_t r = r0; r < r0 + block_rows && r < m; r++)
                for (int64_t c = c0; c < c0 + 128 && c < k; c++) {
                    const float a = fabsf(x[r * x_ld + c]);
                    if (a > amax)
                        amax = a;
                }
            if (amax < 1e-4f)
                amax = 1e-4f;
            scales[(r0 / block_rows) * kb + c0 / 128] = amax / 448.0f;
            const float factor = 448.0f / amax;
            for (int64_t r = r0; r < r0 + block_rows && r < m; r++)
                for (int64_t c = c0; c < c0 + 128 && c < k; c++) {
                    float v = x[r * x_ld + c] * factor;
                    if (v > 448.0f)
                        v = 448.0f;
                    if (v < -448.0f)
                        v = -448.0f;
                    q[r * q_ld + c] = dinf__e4m3_from_f32(v);
                }
        }
}

typedef struct qcase {
    int64_t m, k, x_ld, q_ld;
} qcase;

/* Runs one shape in float32 and bfloat16, both block sizes, three thread
 * counts; outputs poisoned, stride gaps and a guard after the scales must
 * survive. `special` plants NaN, infinities-free zero rows and extremes. */
static void check_quantize(qcase cs, uint64_t seed, int special) {
    const int64_t x_elems = cs.m ? (cs.m - 1) * cs.x_ld + cs.k : 0;
    const int64_t q_bytes = cs.m ? (cs.m - 1) * cs.q_ld + cs.k : 0;
    float *x = malloc((size_t)(x_elems + 1) * sizeof *x);
    uint16_t *xb = malloc((size_t)(x_elems + 1) * sizeof *xb);
    float *xb_f32 = malloc((size_t)(x_elems + 1) * sizeof *xb_f32);
    uint64_t s = seed;
    for (int64_t r = 0; r < cs.m; r++) {
        const int exponent = (int)(rng_next(&s) % 30) - 15; /* per-row magnitude */
        for (int64_t c = 0; c < cs.x_ld && r * cs.x_ld + c < x_elems; c++) {
            float v = ldexpf(2.0f * rng_uniform(&s) - 1.0f, exponent);
            if (special && r % 5 == 1)
                v = (c & 1) ? -0.0f : 0.0f; /* all-zero row: amax floor 1e-4 */
            if (special && r % 7 == 2 && c % 37 == 3)
                v = (c & 4) ? -NAN : NAN;
            if (special && r % 11 == 3 && c == 0)
                v = 1e-6f; /* tiny block: below the floor */
            x[r * cs.x_ld + c] = v;
        }
    }
    for (int64_t i = 0; i < x_elems; i++) {
        xb[i] = dinf__bf16_from_f32(x[i]);
        xb_f32[i] = dinf__f32_from_bf16(xb[i]);
    }
    const int block_sizes[] = {1, 128};
    for (int bi = 0; bi < 2; bi++)
        for (int dt = 0; dt < 2; dt++) {
            const int br = block_sizes[bi];
            const int64_t nscales = ((cs.m + br - 1) / br) * ((cs.k + 127) / 128);
            uint8_t *q_ref = malloc((size_t)q_bytes + 1), *q = malloc((size_t)q_bytes + 1);
            float *s_ref = malloc((size_t)(nscales + 1) * sizeof(float));
            float *sc = malloc((size_t)(nscales + 4) * sizeof(float));
            memset(q_ref, 0xa5, (size_t)q_bytes + 1);
            reference_quantize(dt ? xb_f32 : x, cs.m, cs.k, cs.x_ld, br, q_ref, cs.q_ld, s_ref);
            const int32_t threads[] = {1, 2, 7};
            for (int t = 0; t < 3; t++) {
                dinf_exec exec = DINF_EXEC_CPU_INIT;
                exec.num_threads = threads[t];
                memset(q, 0xa5, (size_t)q_bytes + 1);
                for (int64_t i = 0; i < nscales + 4; i++)
                    sc[i] = dinf__f32_from_bits(0x7fbadbadu);
                cr_assert_eq(dinf_fp8_quantize(dt ? (const void *)xb : (const void *)x,
                                               dt ? DINF_DTYPE_BFLOAT16 : DINF_DTYPE_FLOAT32, cs.m,
                                               cs.k, cs.x_ld, br, q, cs.q_ld, sc, &exec),
                             DINF_STATUS_OK, "%s", dinf_last_error());
                for (int64_t i = 0; i <= q_bytes; i++)
                    if (q[i] != q_ref[i])
                        cr_assert_fail("m=%lld k=%lld x_ld=%lld q_ld=%lld block_rows=%d %s "
                                       "threads=%d seed=%llu: q byte %lld = 0x%02X, expected "
                                       "0x%02X",
                                       (long long)cs.m, (long long)cs.k, (long long)cs.x_ld,
                                       (long long)cs.q_ld, br, dt ? "bf16" : "f32", threads[t],
                                       (unsigned long long)seed, (long long)i, q[i], q_ref[i]);
                for (int64_t i = 0; i < nscales; i++)
                    if (bits(sc[i]) != bits(s_ref[i]))
                        cr_assert_fail("m=%lld k=%lld block_rows=%d %s threads=%d seed=%llu: "
                                       "scale %lld = %a, expected %a",
                                       (long long)cs.m, (long long)cs.k, br, dt ? "bf16" : "f32",
                                       threads[t], (unsigned long long)seed, (long long)i,
                                       (double)sc[i], (double)s_ref[i]);
                for (int64_t i = nscales; i < nscales + 4; i++)
                    cr_assert_eq(bits(sc[i]), 0x7fbadbadu, "wrote scale %lld past the end",
                                 (long long)i);
            }
            free(q_ref);
            free(q);
            free(s_ref);
            free(sc);
        }
    free(x);
    free(xb);
    free(xb_f32);
}

Test(fp8_quantize, matches_the_reference_on_odd_shapes_and_strides) {
    const qcase cases[] = {{1, 1, 1, 1},     {3, 129, 131, 140}, {130, 300, 300, 301},
                           {257, 128, 129, 128}, {5, 1000, 1024, 1003}, {129, 7, 9, 8},
                           {128, 256, 256, 256}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_quantize(cases[i], 1000 + i, 0);
}

Test(fp8_quantize, nan_zero_rows_and_tiny_blocks_follow_the_reference) {
    const qcase cases[] = {{23, 300, 301, 305}, {140, 257, 260, 257}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_quantize(cases[i], 77 + i, 1);
}

/* Spec properties independent of any oracle: a block's largest element
 * becomes +-448, a zero block gets scale 1e-4/448 and zero codes, NaN gives
 * the NaN code, and q * scale approximates x within e4m3's precision. */
Test(fp8_quantize, block_maximum_maps_to_448_and_dequantizes_close) {
    float x[2][256];
    uint64_t s = 5;
    for (int c = 0; c < 256; c++) {
        x[0][c] = 3.0f * (2.0f * rng_uniform(&s) - 1.0f);
        x[1][c] = 0.0f;
    }
    x[0][17] = -7.25f; /* amax of block 0 */
    x[0][130] = NAN;
    x[0][200] = 5.0f; /* amax of block 1 */
    uint8_t q[2][256];
    float scales[4];
    cr_assert_eq(dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, 2, 256, 256, 1, &q[0][0], 256, scales,
                                   NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(q[0][17], 0xfe);
    cr_assert_eq(q[0][200], 0x7e);
    cr_assert_eq(q[0][130], 0x7f);
    cr_assert_eq(bits(scales[0]), bits(7.25f / 448.0f));
    cr_assert_eq(bits(scales[1]), bits(5.0f / 448.0f));
    cr_assert_eq(bits(scales[2]), bits(1e-4f / 448.0f));
    for (int c = 0; c < 256; c++) {
        cr_assert_eq(q[1][c], 0);
        if (c == 130)
            continue;
        const float back = dinf__f32_from_e4m3(q[0][c]) * scales[c / 128];
        /* 3 mantissa bits: relative error <= 2^-4, or half the subnormal step */
        cr_assert_leq(fabsf(back - x[0][c]),
                      fmaxf(fabsf(x[0][c]) / 16.0f, scales[c / 128] / 1024.0f) * 1.0001f,
                      "c=%d x=%g back=%g", c, (double)x[0][c], (double)back);
    }
}

Test(fp8_quantize, empty_matrices_do_nothing) {
    cr_assert_eq(dinf_fp8_quantize(NULL, DINF_DTYPE_FLOAT32, 0, 128, 128, 1, NULL, 128, NULL, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(dinf_fp8_quantize(NULL, DINF_DTYPE_BFLOAT16, 5, 0, 0, 128, NULL, 0, NULL, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
}

/* ------------------------------------------------------- scale layout --- */

Test(fp8_scale_layout, transposes_and_zero_pads_to_a_multiple_of_4) {
    const int64_t ms[] = {0, 1, 3, 4, 5, 130};
    const int64_t kbs[] = {1, 3, 56};
    for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++)
        for (size_t b = 0; b < sizeof kbs / sizeof kbs[0]; b++) {
            const int64_t m = ms[a], kb = kbs[b], am = (m + 3) / 4 * 4;
            int64_t queried = -1;
            cr_assert_eq(dinf_fp8_scale_layout_mn_major(NULL, m, kb, NULL, &queried, NULL),
                         DINF_STATUS_OK);
            cr_assert_eq(queried, am, "m=%lld", (long long)m);
            float *in = malloc((size_t)(m * kb + 1) * sizeof *in);
            float *out = malloc((size_t)(am * kb + 1) * sizeof *out);
            for (int64_t i = 0; i < m * kb; i++)
                in[i] = (float)i + 0.5f;
            const int32_t threads[] = {1, 2, 7};
            for (int t = 0; t < 3; t++) {
                dinf_exec exec = DINF_EXEC_CPU_INIT;
                exec.num_threads = threads[t];
                for (int64_t i = 0; i <= am * kb; i++)
                    out[i] = NAN;
                queried = -1;
                cr_assert_eq(dinf_fp8_scale_layout_mn_major(in, m, kb, out, &queried, &exec),
                             DINF_STATUS_OK, "%s", dinf_last_error());
                cr_assert_eq(queried, am);
                for (int64_t j = 0; j < kb; j++)
                    for (int64_t i = 0; i < am; i++) {
                        const float expected = i < m ? in[i * kb + j] : 0.0f;
                        cr_assert_eq(bits(out[j * am + i]), bits(expected),
                                     "m=%lld kb=%lld threads=%d out[%lld][%lld]", (long long)m,
                                     (long long)kb, threads[t], (long long)j, (long long)i);
                    }
                cr_assert(isnan(out[am * kb]), "wrote past the end");
            }
            cr_assert_eq(dinf_fp8_scale_layout_mn_major(in, m, kb, out, NULL, NULL),
                         DINF_STATUS_OK);
            free(in);
            free(out);
        }
}

/* ---------------------------------------------------- rejected inputs --- */

static void expect_fail(dinf_status st, dinf_status expected, const char *func,
                        const char *fragment) {
    const char *msg = dinf_last_error();
    cr_assert_eq(st, expected, "status %s, expected %s: %s", dinf_status_string(st),
                 dinf_status_string(expected), msg);
    cr_assert_eq(strncmp(msg, func, strlen(func)), 0, "message '%s' must name %s", msg, func);
    cr_assert_not_null(strstr(msg, fragment), "message '%s' lacks '%s'", msg, fragment);
}

#define INV DINF_STATUS_INVALID_ARGUMENT

Test(fp8_errors, convert_rejects_bad_arguments) {
    float f[8] = {0};
    uint16_t h[8];
    const char *fn = "dinf_convert";
    expect_fail(dinf_convert(f, (dinf_dtype)99, h, DINF_DTYPE_BFLOAT16, 8, NULL), INV, fn,
                "src_dtype=99");
    expect_fail(dinf_convert(f, DINF_DTYPE_FLOAT32, h, (dinf_dtype)-1, 8, NULL), INV, fn,
                "dst_dtype=-1");
    expect_fail(dinf_convert(f, DINF_DTYPE_FLOAT32, h, DINF_DTYPE_FLOAT16, 8, NULL), INV, fn,
                "converting float32 to float16 is not supported");
    expect_fail(dinf_convert(f, DINF_DTYPE_INT32, h, DINF_DTYPE_FLOAT32, 8, NULL), INV, fn,
                "converting int32 to float32");
    expect_fail(dinf_convert(f, DINF_DTYPE_FP8_E5M2, h, DINF_DTYPE_FP8_E4M3, 8, NULL), INV, fn,
                "not supported");
    expect_fail(dinf_convert(f, DINF_DTYPE_FLOAT32, h, DINF_DTYPE_BFLOAT16, -1, NULL), INV, fn,
                "count=-1 is negative");
    expect_fail(dinf_convert(NULL, DINF_DTYPE_FLOAT32, h, DINF_DTYPE_BFLOAT16, 8, NULL), INV, fn,
                "src is NULL");
    expect_fail(dinf_convert(f, DINF_DTYPE_FLOAT32, NULL, DINF_DTYPE_BFLOAT16, 8, NULL), INV, fn,
                "dst is NULL");
    expect_fail(dinf_convert(f, DINF_DTYPE_FLOAT32, (char *)f + 2, DINF_DTYPE_BFLOAT16, 4, NULL),
                INV, fn, "src and dst overlap");
    expect_fail(dinf_convert(f, DINF_DTYPE_FLOAT32, f, DINF_DTYPE_BFLOAT16, 4, NULL), INV, fn,
                "src and dst overlap");
    expect_fail(dinf_convert(f, DINF_DTYPE_FLOAT32, f + 1, DINF_DTYPE_FLOAT32, 4, NULL), INV, fn,
                "overlap");
    expect_fail(dinf_convert(f, DINF_DTYPE_FLOAT32, h, DINF_DTYPE_BFLOAT16, INT64_MAX / 2, NULL),
                INV, fn, "overflow");
}

Test(fp8_errors, quantize_rejects_bad_arguments) {
    float x[256] = {0};
    uint8_t q[256];
    float s[4];
    const char *fn = "dinf_fp8_quantize";
    const dinf_dtype F = DINF_DTYPE_FLOAT32;
    expect_fail(dinf_fp8_quantize(x, DINF_DTYPE_FP8_E4M3, 1, 128, 128, 1, q, 128, s, NULL), INV,
                fn, "x_dtype=4 (float8_e4m3fn)");
    expect_fail(dinf_fp8_quantize(x, F, -1, 128, 128, 1, q, 128, s, NULL), INV, fn,
                "m=-1 and k=128 must be >= 0");
    expect_fail(dinf_fp8_quantize(x, F, 1, -128, 128, 1, q, 128, s, NULL), INV, fn, "k=-128");
    expect_fail(dinf_fp8_quantize(x, F, 2, 128, 100, 1, q, 128, s, NULL), INV, fn,
                "x_ld=100 is smaller than k=128");
    expect_fail(dinf_fp8_quantize(x, F, 2, 128, 128, 1, q, 127, s, NULL), INV, fn,
                "q_ld=127 is smaller than k=128");
    expect_fail(dinf_fp8_quantize(x, F, 2, 128, 128, 3, q, 128, s, NULL), INV, fn,
                "block_rows=3 is not 1 (per token) or 128 (per block)");
    expect_fail(dinf_fp8_quantize(x, F, 2, 128, 128, 0, q, 128, s, NULL), INV, fn,
                "block_rows=0");
    expect_fail(dinf_fp8_quantize(NULL, F, 2, 128, 128, 1, q, 128, s, NULL), INV, fn,
                "x is NULL with m=2, k=128");
    expect_fail(dinf_fp8_quantize(x, F, 2, 128, 128, 1, NULL, 128, s, NULL), INV, fn, "q is NULL");
    expect_fail(dinf_fp8_quantize(x, F, 2, 128, 128, 1, q, 128, NULL, NULL), INV, fn,
                "scales is NULL");
    expect_fail(dinf_fp8_quantize(x, F, 2, 128, 128, 1, (uint8_t *)x, 128, s, NULL), INV, fn,
                "x and q overlap");
    expect_fail(dinf_fp8_quantize(x, F, 2, 128, 128, 1, q, 128, (float *)(q + 200), NULL), INV,
                fn, "q and scales overlap");
    expect_fail(dinf_fp8_quantize(x, F, INT64_MAX / 64, 128, 128, 1, q, 128, s, NULL), INV, fn,
                "overflow");
}

Test(fp8_errors, scale_layout_rejects_bad_arguments) {
    float in[8] = {0}, out[8];
    int64_t am;
    const char *fn = "dinf_fp8_scale_layout_mn_major";
    expect_fail(dinf_fp8_scale_layout_mn_major(in, -1, 2, out, &am, NULL), INV, fn,
                "m=-1 and kb=2 must be >= 0");
    expect_fail(dinf_fp8_scale_layout_mn_major(in, 2, -2, out, &am, NULL), INV, fn, "kb=-2");
    expect_fail(dinf_fp8_scale_layout_mn_major(in, 2, 2, NULL, NULL, NULL), INV, fn,
                "out and aligned_m are both NULL");
    expect_fail(dinf_fp8_scale_layout_mn_major(NULL, 2, 2, out, &am, NULL), INV, fn,
                "scales is NULL with m=2, kb=2");
    expect_fail(dinf_fp8_scale_layout_mn_major(in, 2, 2, in + 2, &am, NULL), INV, fn,
                "scales and out overlap");
    expect_fail(dinf_fp8_scale_layout_mn_major(in, INT64_MAX, 2, out, &am, NULL), INV, fn,
                "overflows aligned_m");
    expect_fail(dinf_fp8_scale_layout_mn_major(in, INT64_MAX / 8, 4, out, &am, NULL), INV, fn,
                "overflow");
}

Test(fp8_errors, bad_exec_is_rejected_by_every_function) {
    float x[128] = {0}, s[1], out[4];
    uint8_t q[128];
    uint16_t h[128];
    int64_t am;
    dinf_exec bad[4] = {DINF_EXEC_CPU_INIT, DINF_EXEC_CPU_INIT, DINF_EXEC_CPU_INIT,
                        DINF_EXEC_CPU_INIT};
    const char *why[4] = {"exec->size=0", "exec->kind=7", "exec->num_threads=-1",
                          "exec->num_threads=5000"};
    bad[0].size = 0;
    bad[1].kind = 7;
    bad[2].num_threads = -1;
    bad[3].num_threads = 5000;
    for (int i = 0; i < 4; i++) {
        expect_fail(dinf_convert(x, DINF_DTYPE_FLOAT32, h, DINF_DTYPE_BFLOAT16, 128, &bad[i]),
                    INV, "dinf_convert", why[i]);
        expect_fail(dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, 1, 128, 128, 1, q, 128, s, &bad[i]),
                    INV, "dinf_fp8_quantize", why[i]);
        expect_fail(dinf_fp8_scale_layout_mn_major(x, 1, 1, out, &am, &bad[i]), INV,
                    "dinf_fp8_scale_layout_mn_major", why[i]);
    }
}

/* DINF_EXEC_CUDA: UNSUPPORTED in a CPU-only build; in a CUDA build on a
 * machine without a usable device, a clean CUDA error (never a crash). With a
 * device present these host pointers must not reach a kernel: skipped (the
 * GPU suite covers that case). */
Test(fp8_errors, cuda_exec_without_a_device_fails_cleanly) {
    float x[128] = {0}, s[1], out[4];
    uint8_t q[128];
    uint16_t h[128];
    int64_t am;
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
#if DINF_WITH_CUDA
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    cr_assert_eq(dinf_device_query(0, &info), DINF_STATUS_OK);
    if (info.usable)
        cr_skip_test("a usable CUDA device is present: the GPU suite tests DINF_EXEC_CUDA");
    const dinf_status expected = DINF_STATUS_CUDA_ERROR;
    const char *fragment = "device 0";
    dinf_exec negative = DINF_EXEC_CUDA_INIT(-1, NULL);
    expect_fail(dinf_convert(x, DINF_DTYPE_FLOAT32, h, DINF_DTYPE_BFLOAT16, 128, &negative), INV,
                "dinf_convert", "exec->device=-1 is negative");
#else
    const dinf_status expected = DINF_STATUS_UNSUPPORTED;
    const char *fragment = "built without CUDA";
#endif
    expect_fail(dinf_convert(x, DINF_DTYPE_FLOAT32, h, DINF_DTYPE_BFLOAT16, 128, &cuda), expected,
                "dinf_convert", fragment);
    expect_fail(dinf_convert(x, DINF_DTYPE_FLOAT32, out, DINF_DTYPE_FLOAT32, 4, &cuda), expected,
                "dinf_convert", fragment);
    expect_fail(dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, 1, 128, 128, 1, q, 128, s, &cuda),
                expected, "dinf_fp8_quantize", fragment);
    expect_fail(dinf_fp8_quantize(x, DINF_DTYPE_BFLOAT16, 1, 64, 64, 128, q, 128, s, &cuda),
                expected, "dinf_fp8_quantize", fragment);
    expect_fail(dinf_fp8_scale_layout_mn_major(x, 1, 1, out, &am, &cuda), expected,
                "dinf_fp8_scale_layout_mn_major", fragment);
}

/* ------------------------------------------------- review regressions ---- */

/* A signalling NaN is skipped by amax like a quiet one (glibc's fmaxf would
 * not), so the CPU agrees with the GPU's max.f32. */
Test(fp8_quantize, signalling_nan_does_not_disturb_amax) {
    float x[128];
    for (int i = 0; i < 128; i++)
        x[i] = 1.0f;
    x[0] = 100.0f;
    for (int where = 1; where < 128; where += 126) {
        float y[128];
        memcpy(y, x, sizeof y);
        y[where] = dinf__f32_from_bits(0x7f800001u); /* sNaN */
        uint8_t q[128];
        float scale;
        cr_assert_eq(dinf_fp8_quantize(y, DINF_DTYPE_FLOAT32, 1, 128, 128, 1, q, 128, &scale, NULL),
                     DINF_STATUS_OK);
        cr_assert_eq(scale, 100.0f / 448.0f, "sNaN at %d: scale %g", where, scale);
        cr_assert_eq(q[0], 0x7e);
        cr_assert_eq(q[where] & 0x7f, 0x7f, "the sNaN itself is a NaN code");
        int other = where == 1 ? 2 : 1;
        cr_assert_eq(q[other], dinf__e4m3_from_f32(1.0f * (448.0f / 100.0f)));
    }
    uint16_t b[128];
    for (int i = 0; i < 128; i++)
        b[i] = dinf__bf16_from_f32(i == 0 ? 100.0f : 1.0f);
    b[127] = 0x7f81; /* bf16 sNaN */
    uint8_t q[128];
    float scale;
    cr_assert_eq(dinf_fp8_quantize(b, DINF_DTYPE_BFLOAT16, 1, 128, 128, 128, q, 128, &scale, NULL),
                 DINF_STATUS_OK);
    cr_assert_eq(scale, 100.0f / 448.0f);
}

Test(fp8_quantize, an_infinity_makes_its_block_nan_and_zero) {
    float x[256];
    for (int i = 0; i < 256; i++)
        x[i] = (float)(i % 7) - 3.0f;
    x[5] = INFINITY;
    uint8_t q[256];
    float scale[2];
    cr_assert_eq(dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, 1, 256, 256, 1, q, 256, scale, NULL),
                 DINF_STATUS_OK);
    cr_assert(isinf(scale[0]), "scale %g", scale[0]);
    cr_assert_eq(q[5] & 0x7f, 0x7f, "inf * 0 is NaN");
    for (int i = 0; i < 128; i++)
        if (i != 5)
            cr_assert_eq(q[i] & 0x7f, 0, "element %d of the inf block is zero", i);
    cr_assert_float_eq(scale[1], 3.0f / 448.0f, 1e-12, "the next block is untouched by the inf");
}

/* Sizes above the parallel thresholds, so that more than one thread runs. */
Test(fp8_convert, large_arrays_split_over_threads_give_identical_bits) {
    const int64_t n = 7 * 65536 + 3, nx = 600000; /* nx covers all three uses below */
    float *x = malloc((size_t)nx * sizeof(float));
    uint8_t *a = malloc((size_t)n), *b = malloc((size_t)n);
    uint64_t s = 99;
    for (int64_t i = 0; i < nx; i++)
        x[i] = (rng_uniform(&s) - 0.5f) * 1000.0f;
    dinf_exec one = DINF_EXEC_CPU_INIT, seven = DINF_EXEC_CPU_INIT;
    one.num_threads = 1;
    seven.num_threads = 7;
    cr_assert_eq(dinf_convert(x, DINF_DTYPE_FLOAT32, a, DINF_DTYPE_FP8_E4M3, n, &one), DINF_STATUS_OK);
    cr_assert_eq(dinf_convert(x, DINF_DTYPE_FLOAT32, b, DINF_DTYPE_FP8_E4M3, n, &seven),
                 DINF_STATUS_OK);
    cr_assert_eq(memcmp(a, b, (size_t)n), 0);
    /* per-token quantization of 4001 x 130: 8002 blocks */
    const int64_t m = 4001, k = 130;
    uint8_t *qa = malloc((size_t)(m * k)), *qb = malloc((size_t)(m * k));
    float *sa = malloc((size_t)(m * 2) * sizeof(float)), *sb = malloc((size_t)(m * 2) * sizeof(float));
    cr_assert_eq(dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, m, k, k, 1, qa, k, sa, &one), DINF_STATUS_OK);
    cr_assert_eq(dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, m, k, k, 1, qb, k, sb, &seven),
                 DINF_STATUS_OK);
    cr_assert_eq(memcmp(qa, qb, (size_t)(m * k)), 0);
    cr_assert_eq(memcmp(sa, sb, (size_t)(m * 2) * sizeof(float)), 0);
    /* scale layout of 8200 x 57 */
    const int64_t lm = 8200, kb = 57;
    float *la = malloc((size_t)(kb * lm) * sizeof(float)), *lb = malloc((size_t)(kb * lm) * sizeof(float));
    int64_t aligned;
    cr_assert_eq(dinf_fp8_scale_layout_mn_major(x, lm, kb, la, &aligned, &one), DINF_STATUS_OK);
    cr_assert_eq(dinf_fp8_scale_layout_mn_major(x, lm, kb, lb, &aligned, &seven), DINF_STATUS_OK);
    cr_assert_eq(memcmp(la, lb, (size_t)(kb * lm) * sizeof(float)), 0);
    free(x), free(a), free(b), free(qa), free(qb), free(sa), free(sb), free(la), free(lb);
}

/* ------------------------------------------ the quantizer's CPU kernels --- */

static const dinf__fp8_cpu_kernels *fp8_kernels_of(int isa) {
    const dinf__fp8_cpu_kernels *k = dinf__fp8_cpu_kernels_for(isa);
    cr_assert_not_null(k);
    cr_assert_str_eq(k->isa, dinf__isa_name(isa));
    return k;
}

/* Inputs that reach every branch of the encoder: every e4m3 value, the
 * midpoints between neighbours and one float ulp either side, the
 * subnormal range, 448 and beyond, infinities, NaNs (quiet, signalling,
 * both signs), zeros, and a sweep of bit patterns. */
static int64_t encoder_inputs(float *v, int64_t cap) {
    int64_t n = 0;
#define PUT(x)                                                                                     \
    do {                                                                                           \
        cr_assert_lt(n, cap);                                                                      \
        v[n++] = (x);                                                                              \
    } while (0)
    for (int c = 0; c < 256; c++) {
        const float a = dinf__f32_from_e4m3((uint8_t)c);
        if (isnan(a))
            continue;
        const float b = dinf__f32_from_e4m3((uint8_t)(c + 1 < 256 ? c + 1 : c));
        PUT(a);
        PUT(nextafterf(a, INFINITY));
        PUT(nextafterf(a, -INFINITY));
        if (!isnan(b)) {
            const float mid = (a + b) / 2;
            PUT(mid);
            PUT(nextafterf(mid, INFINITY));
            PUT(nextafterf(mid, -INFINITY));
        }
    }
    const float specials[] = {0.0f, -0.0f, 448.0f, -448.0f, 464.0f, 480.0f, 1e30f, -1e30f,
                              INFINITY, -INFINITY, NAN, -NAN, FLT_MIN, -FLT_MIN, 1e-45f,
                              0x1p-10f, 0x1p-9f, 0x1.8p-9f, 0x1p-7f, 0x1.fp-7f, 0x1.fffffep-7f};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        PUT(specials[i]);
    PUT(dinf__f32_from_bits(0x7fa00001u)); /* signalling NaNs */
    PUT(dinf__f32_from_bits(0xff800001u));
    for (uint64_t u = 0; u < (1ull << 32); u += 0x10003ull) /* a sweep of patterns */
        PUT(dinf__f32_from_bits((uint32_t)u));
#undef PUT
    return n;
}

Test(fp8_cpu_isa, every_set_encodes_as_the_scalar_function) {
    enum { CAP = 70000, ROWS = 3, LD = 53 };
    static float v[CAP];
    const int64_t n = encoder_inputs(v, CAP);
    const float factors[] = {1.0f, 0.75f, 3.5f, 448.0f / 3.1f, 0.0f};
    static float x[ROWS * LD];
    static uint16_t xb[ROWS * LD];
    static uint8_t q[ROWS * LD];
    const int top = widest_cpu_isa();
    for (int isa = DINF__ISA_BASE; isa <= top; isa++) {
        const dinf__fp8_cpu_kernels *k = fp8_kernels_of(isa);
        /* pass 0: 48 columns, a multiple of every set's width: each input goes
         * through a vector lane; pass 1: ragged 1 .. 37 columns, the tails */
        for (int pass = 0; pass < 2; pass++)
            for (int64_t at = 0, iter = 0, cols = 48; at < n;
                 at += ROWS * cols, iter++, cols = pass == 0 ? 48 : 1 + iter % 37)
            for (size_t fi = 0; fi < sizeof factors / sizeof factors[0]; fi++)
                for (int bf16 = 0; bf16 < 2; bf16++) {
                    /* row r's first cols elements are inputs at + r * cols ..; the
                     * rest of the row (never read) more inputs */
                    for (int64_t i = 0; i < ROWS * LD; i++) {
                        const int64_t r = i / LD, j = i % LD;
                        const float e = v[(at + (j < cols ? r * cols + j : i)) % n];
                        xb[i] = dinf__bf16_from_f32(e);
                        x[i] = bf16 ? dinf__f32_from_bf16(xb[i]) : e;
                    }
                    memset(q, 0xA5, sizeof q);
                    k->encode(bf16 ? (const void *)xb : (const void *)x, bf16, ROWS, cols, LD,
                              factors[fi], q, LD);
                    for (int64_t r = 0; r < ROWS; r++)
                        for (int64_t j = 0; j < LD; j++) {
                            const int64_t i = r * LD + j;
                            const uint8_t want =
                                j < cols ? dinf__e4m3_from_f32(x[i] * factors[fi]) : 0xA5;
                            cr_assert_eq(q[i], want,
                                         "%s pass %d %s factor %g: x=%a (bits %08x) at [%lld][%lld] "
                                         "gave 0x%02x, want 0x%02x",
                                         k->isa, pass, bf16 ? "bf16" : "f32", (double)factors[fi],
                                         (double)x[i], bits(x[i]), (long long)r, (long long)j,
                                         q[i], want);
                        }
                }
    }
}

Test(fp8_cpu_isa, every_set_finds_the_scalar_amax) {
    enum { ROWS = 5, LD = 141 };
    static float x[ROWS * LD];
    static uint16_t xb[ROWS * LD];
    const int top = widest_cpu_isa();
    uint64_t seed = 99;
    for (int trial = 0; trial < 400; trial++) {
        const int64_t rows = 1 + trial % ROWS, cols = 1 + (trial * 7) % 128;
        for (int64_t i = 0; i < ROWS * LD; i++) {
            const uint64_t r = rng_next(&seed);
            float e = (float)((double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0) *
                      ldexpf(1.0f, (int)(r % 40) - 20);
            if (r % 97 == 0)
                e = (r & 1) ? NAN : -NAN; /* skipped */
            else if (r % 89 == 0)
                e = -0.0f;
            else if (trial % 50 == 7 && r % 83 == 0)
                e = (r & 2) ? INFINITY : -INFINITY;
            /* outside the block: larger than anything inside, must not be read */
            if (i % LD >= cols || i / LD >= rows)
                e = 1e30f;
            xb[i] = dinf__bf16_from_f32(e);
            x[i] = e;
        }
        if (trial % 40 == 3) /* a block of only NaN and zeros */
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < cols; j++)
                    x[r * LD + j] = (j & 1) ? NAN : 0.0f, xb[r * LD + j] = dinf__bf16_from_f32(x[r * LD + j]);
        for (int bf16 = 0; bf16 < 2; bf16++) {
            float want = 0.0f;
            for (int64_t r = 0; r < rows; r++)
                for (int64_t j = 0; j < cols; j++) {
                    const float e = fabsf(bf16 ? dinf__f32_from_bf16(xb[r * LD + j]) : x[r * LD + j]);
                    if (e > want)
                        want = e;
                }
            for (int isa = DINF__ISA_BASE; isa <= top; isa++) {
                const float got = fp8_kernels_of(isa)->amax(bf16 ? (const void *)xb : (const void *)x,
                                                            bf16, rows, cols, LD);
                cr_assert_eq(bits(got), bits(want), "%s %s trial %d (%lld x %lld): %a, want %a",
                             dinf__isa_name(isa), bf16 ? "bf16" : "f32", trial, (long long)rows,
                             (long long)cols, (double)got, (double)want);
            }
        }
    }
}

/* dinf_fp8_quantize with each DINF_CPU_ISA gives the same bits (the widest
 * this CPU lacks falls back to what it has), and a bad value is refused. */
Test(fp8_cpu_isa, quantize_gives_the_same_bits_in_every_set) {
    enum { M = 131, K = 300, LD = 307 };
    static float x[M * LD];
    static uint16_t xb[M * LD];
    static uint8_t q[3][M * LD];
    static float sc[3][12 * 3]; /* per token: 12 rows x 3 k blocks; per block: 2 x 3 */
    uint64_t seed = 5;
    for (int i = 0; i < M * LD; i++) {
        x[i] = (float)((double)(rng_next(&seed) >> 11) / 9007199254740992.0 - 0.5) * 37.0f;
        xb[i] = dinf__bf16_from_f32(x[i] * 3.0f);
    }
    const char *const sets[] = {"base", "avx2", "avx512"};
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (int br = 1; br <= 128; br += 127) {
            for (int i = 0; i < 3; i++) {
                setenv("DINF_CPU_ISA", sets[i], 1);
                memset(q[i], 0xA5, sizeof q[i]);
                memset(sc[i], 0xA5, sizeof sc[i]);
                cr_assert_eq(dinf_fp8_quantize(bf16 ? (const void *)xb : (const void *)x,
                                               bf16 ? DINF_DTYPE_BFLOAT16 : DINF_DTYPE_FLOAT32,
                                               br == 1 ? 12 : M, K, LD, br, q[i], LD, sc[i], NULL),
                             DINF_STATUS_OK, "%s", dinf_last_error());
            }
            for (int i = 1; i < 3; i++) {
                cr_assert_eq(memcmp(q[i], q[0], sizeof q[0]), 0, "%s codes differ from base (%s)",
                             sets[i], bf16 ? "bf16" : "f32");
                cr_assert_eq(memcmp(sc[i], sc[0], sizeof sc[0]), 0, "%s scales differ (%s)",
                             sets[i], bf16 ? "bf16" : "f32");
            }
        }
    setenv("DINF_CPU_ISA", "avx1024", 1);
    cr_assert_eq(dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, 1, K, LD, 1, q[0], LD, sc[0], NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "dinf_fp8_quantize: ") == dinf_last_error() &&
                  strstr(dinf_last_error(), "avx1024"),
              "%s", dinf_last_error());
    /* refused even when there is nothing to quantize, as the GEMM does */
    cr_assert_eq(dinf_fp8_quantize(x, DINF_DTYPE_FLOAT32, 0, K, LD, 1, q[0], LD, sc[0], NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    unsetenv("DINF_CPU_ISA");
}
