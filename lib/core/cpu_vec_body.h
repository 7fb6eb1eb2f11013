/*
 * The start of every CPU vector kernel variant body (lib/mla/mla_cpu_body.h,
 * lib/gemm/gemm_cpu_body.h, lib/core/fp8_cpu_body.h): names, vector types,
 * loads and the e4m3 decode. A body includes this first, once per variant,
 * after its file defined
 *   NAME, TARGET, VT, VW   as its own (internal.h: one per dinf__isa)
 * with <stdint.h> and <string.h> included and -Wpsabi silenced (GNU C: the
 * vector extensions), and gets, for that variant (always inlined: no vector
 * crosses a call):
 *   CAT(a, b)              a##_##b, expanded
 *   VI, VU                 the types of VW int32 / uint32 (vi_NAME, vu_NAME)
 *   CAT(u8_u32, NAME)(p)   VW bytes at p, zero-extended to VU
 *   CAT(u16_u32, NAME)(p)  VW uint16 at p (any alignment), zero-extended to VU
 *   CAT(e4m3_bits, NAME)(c) the float32 bits of VW e4m3 codes (one per
 *                          lane of c, its low 8 bits), exactly numeric_hd.h's
 *                          dinf__f32_from_e4m3, NaNs included
 *   PICK(m, a, b)          m ? a : b lane by lane (m all ones or all zeros)
 * The widening loads are x86 instructions where the set has them (GCC 12
 * turns __builtin_convertvector of bytes into byte-by-byte inserts); the
 * generic form elsewhere gives the same values. No include guard; it
 * undefines nothing (the body's own end undefines CAT, CAT_, VI, VU, PICK).
 */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
typedef int32_t CAT(vi, NAME) __attribute__((vector_size(4 * VW)));
typedef uint32_t CAT(vu, NAME) __attribute__((vector_size(4 * VW)));
#define VI CAT(vi, NAME)
#define VU CAT(vu, NAME)

#ifndef PICK
#define PICK(m, a, b) (((a) & (m)) | ((b) & ~(m)))
#endif

TARGET static inline __attribute__((always_inline)) VU CAT(u8_u32, NAME)(const unsigned char *p) {
#if defined(__x86_64__) && defined(__GNUC__) && VW == 16
    return (VU)_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i_u *)(const void *)p));
#elif defined(__x86_64__) && defined(__GNUC__) && VW == 8
    return (VU)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i_u *)(const void *)p));
#elif defined(__x86_64__) && defined(__GNUC__) && VW == 4
    int32_t w;
    memcpy(&w, p, sizeof w);
    const __m128i z = _mm_setzero_si128();
    return (VU)_mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(w), z), z);
#else
    unsigned char b __attribute__((vector_size(VW)));
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(b, VU);
#endif
}

TARGET static inline __attribute__((always_inline)) VU CAT(u16_u32, NAME)(const unsigned char *p) {
#if defined(__x86_64__) && defined(__GNUC__) && VW == 16
    return (VU)_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i_u *)(const void *)p));
#elif defined(__x86_64__) && defined(__GNUC__) && VW == 8
    return (VU)_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i_u *)(const void *)p));
#elif defined(__x86_64__) && defined(__GNUC__) && VW == 4
    return (VU)_mm_unpacklo_epi16(_mm_loadl_epi64((const __m128i_u *)(const void *)p),
                                  _mm_setzero_si128());
#else
    uint16_t h __attribute__((vector_size(2 * VW)));
    memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, VU);
#endif
}

TARGET static inline __attribute__((always_inline)) VU CAT(e4m3_bits, NAME)(VU c) {
    const VU mag = c & 0x7fu;
    /* exponent field e >= 1: the bits of 2^(e-7) * (1 + m/8) */
    const VU normal = (mag << 20) + (120u << 23);
    /* e == 0 (mag < 8): the same bits give 2^-7 + m * 2^-10, and m * 2^-9 =
     * (that - 2^-7) * 2, both steps exact (Sterbenz; a power of two) */
    VT f;
    memcpy(&f, &normal, sizeof f);
    f = (f - 0x1p-7f) * 2.0f;
    VU sub;
    memcpy(&sub, &f, sizeof sub);
    VU bits = PICK((VU)((VI)mag < 8), sub, normal);
    bits = PICK((VU)(mag == 0x7fu), (VU){0} + 0x7fc00000u, bits); /* NaN */
    return bits | (c & 0x80u) << 24;
}
