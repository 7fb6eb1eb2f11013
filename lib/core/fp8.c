/*
 * FP8 / BF16 conversions, FP8 block quantization and the scale layout
 * transform of core.h: argument checks, the CPU implementations (threaded
 * with dinf__parallel_for; every output element is computed by exactly one
 * thread from the same inputs, so results never depend on the thread count)
 * and the dispatch to the CUDA launchers of kernels/core/fp8.cu.
 *
 * Choices the header leaves open, shared bit for bit with the kernels:
 * - amax ignores NaN (by comparison, signalling NaNs too): a NaN element becomes a NaN code (0x7F/0xFF)
 *   and the rest of its block is quantized as if it were absent; a block of
 *   only NaN and zeros gets the 1e-4 floor. An infinity makes amax infinite,
 *   the block's factor 448/amax zero, its finite elements 0 and the infinity
 *   itself NaN (inf * 0), as torch's reference would.
 * - the clamp to +-448 keeps NaN (comparisons, not fminf/fmaxf).
 */
#include "cpu_vec.h"
#include "fp8_cpu.h"
#include "internal.h"
#include "numeric_hd.h"
#include "parallel.h"
#if DINF_WITH_CUDA
#include "fp8_cuda.h"
#endif

#include <string.h>

#define FP8_BLOCK_K 128

/* ------------------------------------------- the quantizer's CPU kernels -- */

/* vectors never cross a call (the kernels inline their helpers) */
#pragma GCC diagnostic ignored "-Wpsabi"

/* SSE2 (the x86-64 baseline; or whatever the build's is) */
#define NAME base
#define TARGET
#define VT v4f
#define VW 4
#include "fp8_cpu_body.h"
#if DINF_CPU_X86
#define NAME avx2
#define TARGET __attribute__((target("avx2")))
#define VT v8f
#define VW 8
#include "fp8_cpu_body.h"
#define NAME avx512
#define TARGET __attribute__((target("avx512f")))
#define VT v16f
#define VW 16
#include "fp8_cpu_body.h"
#endif

DINF_CPU_KERNELS_FOR(dinf__fp8_cpu_kernels, dinf__fp8_cpu_kernels_for)

/* ----------------------------------------------------------- convert ---- */

static size_t dtype_bytes(dinf_dtype dtype) {
    size_t bytes = 0;
    (void)dinf_dtype_size(dtype, &bytes); /* dtype already checked */
    return bytes;
}

static int is_float_format(dinf_dtype d) {
    return d == DINF_DTYPE_FLOAT32 || d == DINF_DTYPE_BFLOAT16 || d == DINF_DTYPE_FP8_E4M3;
}

typedef struct convert_ctx {
    const void *src;
    void *dst;
    dinf_dtype src_dtype, dst_dtype;
} convert_ctx;

static float load_f32(const void *p, dinf_dtype dtype, int64_t i) {
    switch (dtype) {
    case DINF_DTYPE_BFLOAT16: return dinf__f32_from_bf16(((const uint16_t *)p)[i]);
    case DINF_DTYPE_FP8_E4M3: return dinf__f32_from_e4m3(((const uint8_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static void convert_range(void *arg, int64_t begin, int64_t end) {
    const convert_ctx *c = arg;
    for (int64_t i = begin; i < end; i++) {
        const float v = load_f32(c->src, c->src_dtype, i);
        switch (c->dst_dtype) {
        case DINF_DTYPE_BFLOAT16: ((uint16_t *)c->dst)[i] = dinf__bf16_from_f32(v); break;
        case DINF_DTYPE_FP8_E4M3: ((uint8_t *)c->dst)[i] = dinf__e4m3_from_f32(v); break;
        default: ((float *)c->dst)[i] = v; break;
        }
    }
}

static void copy_range(void *arg, int64_t begin, int64_t end) {
    const convert_ctx *c = arg; /* begin/end in bytes */
    memcpy((char *)c->dst + begin, (const char *)c->src + begin, (size_t)(end - begin));
}

DINF_API dinf_status dinf_convert(const void *src, dinf_dtype src_dtype, void *dst,
                                  dinf_dtype dst_dtype, int64_t count, const dinf_exec *exec) {
    if ((unsigned)src_dtype >= DINF_DTYPE_COUNT)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "src_dtype=%d is not a dinf_dtype value (0..%d)", (int)src_dtype,
                         DINF_DTYPE_COUNT - 1);
    if ((unsigned)dst_dtype >= DINF_DTYPE_COUNT)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "dst_dtype=%d is not a dinf_dtype value (0..%d)", (int)dst_dtype,
                         DINF_DTYPE_COUNT - 1);
    if (src_dtype != dst_dtype && !(is_float_format(src_dtype) && is_float_format(dst_dtype)))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "converting %s to %s is not supported (float32, bfloat16 and "
                         "float8_e4m3fn convert among themselves; any dtype to itself)",
                         dinf_dtype_name(src_dtype), dinf_dtype_name(dst_dtype));
    if (count < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "count=%lld is negative", (long long)count);
    const size_t src_elem = dtype_bytes(src_dtype), dst_elem = dtype_bytes(dst_dtype);
    size_t src_bytes, dst_bytes;
    if (dinf__mul_size((size_t)count, src_elem, &src_bytes) ||
        dinf__mul_size((size_t)count, dst_elem, &dst_bytes) || src_bytes > INT64_MAX ||
        dst_bytes > INT64_MAX)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "count=%lld elements overflow the byte size",
                         (long long)count);
    if (count > 0 && !src)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "src is NULL with count=%lld",
                         (long long)count);
    if (count > 0 && !dst)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "dst is NULL with count=%lld",
                         (long long)count);
    const int in_place = src == dst && src_elem == dst_elem;
    if (!in_place) {
        const dinf__buffer buffers[] = {{"src", src, src_bytes}, {"dst", dst, dst_bytes}};
        dinf_status st = dinf__check_disjoint(__func__, buffers, 2);
        if (st != DINF_STATUS_OK)
            return st;
    }
    dinf__place place;
    dinf_status st = dinf__place_resolve(__func__, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    if (count == 0 || (in_place && src_dtype == dst_dtype))
        return DINF_STATUS_OK;
#if DINF_WITH_CUDA
    if (place.kind == DINF_EXEC_CUDA && src_dtype == dst_dtype)
        return dinf__fp8_copy_cuda(__func__, &place, src, dst, src_bytes);
    if (place.kind == DINF_EXEC_CUDA)
        return dinf__fp8_convert_cuda(__func__, &place, src, src_dtype, dst, dst_dtype, count);
#endif
    convert_ctx ctx = {src, dst, src_dtype, dst_dtype};
    if (src_dtype == dst_dtype)
        return dinf__parallel_for(place.threads, (int64_t)src_bytes, (int64_t)1 << 20, copy_range,
                                  &ctx);
    return dinf__parallel_for(place.threads, count, (int64_t)1 << 16, convert_range, &ctx);
}

/* ---------------------------------------------------------- quantize ---- */

typedef struct quantize_ctx {
    const void *x;
    dinf_dtype x_dtype;
    int64_t m, k, x_ld, q_ld, num_k_blocks;
    int32_t block_rows;
    uint8_t *q;
    float *scales;
    const dinf__fp8_cpu_kernels *kernels;
} quantize_ctx;

/* One block [rows r0..r1) x [cols c0..c1): its amax, scale and codes. The
 * amax skips every NaN by comparison, signalling ones too (glibc's fmaxf
 * does not), as the GPU's max.f32 does; the kernels (fp8_cpu.h) encode
 * x * factor, whose clamp to +-448 would change no code. */
static void quantize_block(const quantize_ctx *c, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                           float *scale) {
    const int bf16 = c->x_dtype == DINF_DTYPE_BFLOAT16;
    const void *x = (const char *)c->x + (size_t)(r0 * c->x_ld + c0) * (bf16 ? 2 : 4);
    float amax = c->kernels->amax(x, bf16, r1 - r0, c1 - c0, c->x_ld);
    if (!(amax > 1e-4f))
        amax = 1e-4f;
    *scale = amax / DINF_E4M3_MAX;
    c->kernels->encode(x, bf16, r1 - r0, c1 - c0, c->x_ld, DINF_E4M3_MAX / amax,
                       c->q + r0 * c->q_ld + c0, c->q_ld);
}

/* Items are blocks, numbered row-block-major like the scales. */
static void quantize_range(void *arg, int64_t begin, int64_t end) {
    const quantize_ctx *c = arg;
    for (int64_t b = begin; b < end; b++) {
        const int64_t rb = b / c->num_k_blocks, kb = b % c->num_k_blocks;
        const int64_t r0 = rb * c->block_rows, c0 = kb * FP8_BLOCK_K;
        const int64_t r1 = r0 + c->block_rows < c->m ? r0 + c->block_rows : c->m;
        const int64_t c1 = c0 + FP8_BLOCK_K < c->k ? c0 + FP8_BLOCK_K : c->k;
        quantize_block(c, r0, r1, c0, c1, &c->scales[b]);
    }
}

/* Bytes spanned by rows x cols elements of elem bytes at row stride ld
 * elements: ((rows - 1) * ld + cols) * elem, or 0 for an empty matrix. */
static int matrix_bytes(int64_t rows, int64_t cols, int64_t ld, size_t elem, size_t *bytes) {
    int64_t span;
    if (rows == 0 || cols == 0) {
        *bytes = 0;
        return 0;
    }
    if (dinf__mul_i64(rows - 1, ld, &span) || __builtin_add_overflow(span, cols, &span))
        return -1;
    return dinf__mul_size((size_t)span, elem, bytes);
}

DINF_API dinf_status dinf_fp8_quantize(const void *x, dinf_dtype x_dtype, int64_t m, int64_t k,
                                       int64_t x_ld, int32_t block_rows, uint8_t *q, int64_t q_ld,
                                       float *scales, const dinf_exec *exec) {
    if (x_dtype != DINF_DTYPE_FLOAT32 && x_dtype != DINF_DTYPE_BFLOAT16)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "x_dtype=%d (%s) is not DINF_DTYPE_FLOAT32 or DINF_DTYPE_BFLOAT16",
                         (int)x_dtype, dinf_dtype_name(x_dtype));
    if (m < 0 || k < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld and k=%lld must be >= 0",
                         (long long)m, (long long)k);
    if (x_ld < k)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "x_ld=%lld is smaller than k=%lld",
                         (long long)x_ld, (long long)k);
    if (q_ld < k)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "q_ld=%lld is smaller than k=%lld",
                         (long long)q_ld, (long long)k);
    if (block_rows != 1 && block_rows != 128)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "block_rows=%d is not 1 (per token) or 128 (per block)", (int)block_rows);
    const int64_t row_blocks = m / block_rows + (m % block_rows != 0);
    const int64_t k_blocks = k / FP8_BLOCK_K + (k % FP8_BLOCK_K != 0);
    size_t x_bytes, q_bytes, scales_bytes;
    int64_t num_blocks;
    if (matrix_bytes(m, k, x_ld, dtype_bytes(x_dtype), &x_bytes) ||
        matrix_bytes(m, k, q_ld, 1, &q_bytes) || dinf__mul_i64(row_blocks, k_blocks, &num_blocks) ||
        dinf__mul_size((size_t)num_blocks, sizeof(float), &scales_bytes))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "m=%lld, k=%lld, x_ld=%lld, q_ld=%lld overflow the buffer sizes",
                         (long long)m, (long long)k, (long long)x_ld, (long long)q_ld);
    const int empty = m == 0 || k == 0;
    if (!empty && (!x || !q || !scales))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "%s is NULL with m=%lld, k=%lld",
                         !x ? "x" : !q ? "q" : "scales", (long long)m, (long long)k);
    const dinf__buffer buffers[] = {
        {"x", x, x_bytes}, {"q", q, q_bytes}, {"scales", scales, scales_bytes}};
    dinf_status st = dinf__check_disjoint(__func__, buffers, 3);
    if (st != DINF_STATUS_OK)
        return st;
    dinf__place place;
    st = dinf__place_resolve(__func__, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    /* the CPU's vector set: its widest, or DINF_CPU_ISA (read on every call;
     * a bad value fails the call even when there is nothing to do) */
    char isa_msg[160];
    const int isa = place.kind == DINF_EXEC_CPU ? dinf__cpu_isa(isa_msg, sizeof isa_msg) : 0;
    if (isa < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "%s", isa_msg);
    if (empty)
        return DINF_STATUS_OK;
#if DINF_WITH_CUDA
    if (place.kind == DINF_EXEC_CUDA)
        return dinf__fp8_quantize_cuda(__func__, &place, x, x_dtype, m, k, x_ld, block_rows, q,
                                       q_ld, scales);
#endif
    quantize_ctx ctx = {x,  x_dtype, m,      k, x_ld, q_ld, k_blocks, block_rows,
                        q,  scales,  dinf__fp8_cpu_kernels_for(isa)};
    /* ~64 K elements per chunk at least: per-token blocks are 128 elements. */
    const int64_t min_chunk = block_rows == 1 ? 512 : 4;
    return dinf__parallel_for(place.threads, num_blocks, min_chunk, quantize_range, &ctx);
}

/* ------------------------------------------------------ scale layout ---- */

typedef struct layout_ctx {
    const float *scales;
    int64_t m, kb, aligned_m;
    float *out;
} layout_ctx;

/* Items are output elements t = j * aligned_m + i. */
static void layout_range(void *arg, int64_t begin, int64_t end) {
    const layout_ctx *c = arg;
    for (int64_t t = begin; t < end; t++) {
        const int64_t j = t / c->aligned_m, i = t % c->aligned_m;
        c->out[t] = i < c->m ? c->scales[i * c->kb + j] : 0.0f;
    }
}

DINF_API dinf_status dinf_fp8_scale_layout_mn_major(const float *scales, int64_t m, int64_t kb,
                                                    float *out, int64_t *aligned_m,
                                                    const dinf_exec *exec) {
    if (m < 0 || kb < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld and kb=%lld must be >= 0",
                         (long long)m, (long long)kb);
    if (m > INT64_MAX - 3)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld overflows aligned_m", (long long)m);
    const int64_t padded_m = (m + 3) / 4 * 4;
    size_t scales_bytes, out_bytes;
    int64_t in_count, out_count;
    if (dinf__mul_i64(m, kb, &in_count) || dinf__mul_i64(padded_m, kb, &out_count) ||
        dinf__mul_size((size_t)in_count, sizeof(float), &scales_bytes) ||
        dinf__mul_size((size_t)out_count, sizeof(float), &out_bytes))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld, kb=%lld overflow the buffer sizes",
                         (long long)m, (long long)kb);
    if (!out) {
        if (!aligned_m)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "out and aligned_m are both NULL: nothing to compute or report");
        *aligned_m = padded_m; /* the size query */
        return DINF_STATUS_OK;
    }
    if (in_count > 0 && !scales)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "scales is NULL with m=%lld, kb=%lld",
                         (long long)m, (long long)kb);
    const dinf__buffer buffers[] = {{"scales", scales, scales_bytes}, {"out", out, out_bytes},
                                    {"aligned_m", aligned_m, aligned_m ? sizeof *aligned_m : 0}};
    dinf_status st = dinf__check_disjoint(__func__, buffers, 3);
    if (st != DINF_STATUS_OK)
        return st;
    dinf__place place;
    st = dinf__place_resolve(__func__, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    if (aligned_m)
        *aligned_m = padded_m;
    if (out_count == 0)
        return DINF_STATUS_OK;
#if DINF_WITH_CUDA
    if (place.kind == DINF_EXEC_CUDA)
        return dinf__fp8_scale_layout_mn_major_cuda(__func__, &place, scales, m, kb, padded_m, out);
#endif
    layout_ctx ctx = {scales, m, kb, padded_m, out};
    return dinf__parallel_for(place.threads, out_count, (int64_t)1 << 16, layout_range, &ctx);
}
