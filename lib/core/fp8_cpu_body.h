/*
 * One variant of the CPU quantizer's kernels (fp8_cpu.h: amax, encode) and
 * their table kernels_NAME. fp8.c includes this once per instruction set
 * (internal.h: dinf__isa), after defining NAME, TARGET, VT and VW as
 * lib/core/cpu_vec_body.h describes (cpu_vec.h included). Whole vectors of
 * VW columns go through the vector code, a row's last cols % VW columns
 * through numeric_hd.h's scalar functions; both give the same bits. No
 * include guard: included once per variant; it undefines its parameters and
 * helpers at its end.
 */
#include "cpu_vec_body.h" /* CAT, VI, VU, the loads and the decode */

/* VW elements of row p (float32, or bf16 widened exactly) as floats */
TARGET static inline __attribute__((always_inline)) VT CAT(load_x, NAME)(const void *p, int bf16) {
    VT v;
    if (bf16) {
        const VU w = CAT(u16_u32, NAME)((const unsigned char *)p) << 16;
        memcpy(&v, &w, sizeof v);
    } else {
        memcpy(&v, p, sizeof v);
    }
    return v;
}

TARGET static float CAT(amax, NAME)(const void *x, int bf16, int64_t rows, int64_t cols,
                                    int64_t ld) {
    const size_t elem = bf16 ? 2 : 4;
    const int64_t whole = cols - cols % VW;
    VT m = (VT){0};
    float tail = 0.0f;
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *row = (const unsigned char *)x + (size_t)(r * ld) * elem;
        for (int64_t j = 0; j < whole; j += VW) {
            VU u;
            const VT v = CAT(load_x, NAME)(row + (size_t)j * elem, bf16);
            memcpy(&u, &v, sizeof u);
            u &= 0x7fffffffu; /* |v|, NaN stays NaN */
            VT a;
            memcpy(&a, &u, sizeof a);
            m = (VT)PICK((VU)(a > m), (VU)a, (VU)m); /* a NaN compares false: skipped */
        }
        for (int64_t j = whole; j < cols; j++) {
            const float v = fabsf(bf16 ? dinf__f32_from_bf16(((const uint16_t *)(const void *)row)[j])
                                       : ((const float *)(const void *)row)[j]);
            if (v > tail)
                tail = v;
        }
    }
    /* max over lanes and the tail: the order does not matter (no NaN here,
     * and +0 is the only zero) */
    float out = tail;
    for (int l = 0; l < VW; l++)
        if (m[l] > out)
            out = m[l];
    return out;
}

/* dinf__e4m3_from_f32 of every lane (numeric_hd.h's steps, lane by lane) */
TARGET static inline __attribute__((always_inline)) VU CAT(encode_e4m3, NAME)(VT v) {
    VU u;
    memcpy(&u, &v, sizeof u);
    const VU sign = (u >> 24) & 0x80u;
    const VU a = u & 0x7fffffffu;
    /* normal: round the mantissa to 3 bits, nearest even, on the pattern;
     * saturate (also catches 448 and beyond, infinities included) */
    VU code = ((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - (120u << 3);
    code = PICK((VU)(code > 0x7eu), (VU){0} + 0x7eu, code);
    code = PICK((VU)(a >= 0x43e00000u), (VU){0} + 0x7eu, code);
    /* subnormal (below 2^-6): |x| * 2^9 in [0, 8) exactly, rounded to the
     * nearest integer, ties to even, by truncation and the fraction */
    const VU subnormal = (VU)(a < 0x3c800000u);
    const VU a_sub = a & subnormal; /* the other lanes 0: every conversion in range */
    VT q;
    memcpy(&q, &a_sub, sizeof q);
    q = q * 512.0f;
    VI i = __builtin_convertvector(q, VI);
    const VT frac = q - __builtin_convertvector(i, VT);
    i -= (VI)((frac > 0.5f) | ((frac == 0.5f) & ((i & 1) != 0)));
    code = PICK(subnormal, (VU)i, code);
    code = PICK((VU)(a > 0x7f800000u), (VU){0} + 0x7fu, code); /* NaN */
    return code | sign;
}

/* VW codes (each < 256) stored as VW bytes at p */
TARGET static inline __attribute__((always_inline)) void CAT(store_u8, NAME)(uint8_t *p, VU c) {
#if defined(__x86_64__) && defined(__GNUC__) && VW == 16
    _mm_storeu_si128((__m128i_u *)(void *)p, _mm512_cvtepi32_epi8((__m512i)c));
#elif defined(__x86_64__) && defined(__GNUC__) && VW == 8
    const __m256i w = (__m256i)c;
    const __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storel_epi64((__m128i_u *)(void *)p, _mm_packus_epi16(h, h));
#elif defined(__x86_64__) && defined(__GNUC__) && VW == 4
    const __m128i h = _mm_packs_epi32((__m128i)c, (__m128i)c); /* 0..255: no saturation */
    const int32_t w = _mm_cvtsi128_si32(_mm_packus_epi16(h, h));
    memcpy(p, &w, sizeof w);
#else
    unsigned char b __attribute__((vector_size(VW)));
    b = __builtin_convertvector(c, __typeof__(b));
    memcpy(p, &b, sizeof b);
#endif
}

TARGET static void CAT(encode, NAME)(const void *x, int bf16, int64_t rows, int64_t cols,
                                     int64_t ld, float factor, uint8_t *q, int64_t q_ld) {
    const size_t elem = bf16 ? 2 : 4;
    const int64_t whole = cols - cols % VW;
    for (int64_t r = 0; r < rows; r++) {
        const unsigned char *row = (const unsigned char *)x + (size_t)(r * ld) * elem;
        uint8_t *out = q + r * q_ld;
        for (int64_t j = 0; j < whole; j += VW)
            CAT(store_u8, NAME)(out + j, CAT(encode_e4m3, NAME)(
                                             CAT(load_x, NAME)(row + (size_t)j * elem, bf16) * factor));
        for (int64_t j = whole; j < cols; j++)
            out[j] = dinf__e4m3_from_f32(
                (bf16 ? dinf__f32_from_bf16(((const uint16_t *)(const void *)row)[j])
                      : ((const float *)(const void *)row)[j]) *
                factor);
    }
}

static const dinf__fp8_cpu_kernels CAT(kernels, NAME) = {
    .isa = CAT_STR(NAME), .amax = CAT(amax, NAME), .encode = CAT(encode, NAME)};

#undef NAME
#undef TARGET
#undef VT
#undef VW
#undef VI
#undef VU
#undef PICK
#undef CAT
#undef CAT_
