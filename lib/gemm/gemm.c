/*
 * FP8 GEMMs with 1x128 (A) / 128x128 (B) scaling: argument checks and the
 * CPU implementation (the oracle of the GPU kernels). DINF_EXEC_CUDA calls
 * leave after the common checks for gemm_cuda.c (the Hopper kernels, their
 * own rules; gemm_heuristic.c picks the tile configuration).
 *
 * Arithmetic, exactly (every operation float32, round to nearest even, no
 * fused multiply-add: the library is built with -ffp-contract=off):
 *
 *   for each output element (i, j), starting from total = +0.0f,
 *   for each k block kb = 0, 1, ... in increasing order:
 *       partial = +0.0f
 *       for k in the block, in increasing order:  partial += a[i][k] * b[j][k]
 *       total += (a_scale[i][kb] * b_scale[j/128][kb]) * partial
 *   d[i][j] = bf16(total)                         (one rounding, nearest even)
 *
 * with a and b decoded exactly from e4m3 (numeric_hd.h: dinf__f32_from_e4m3).
 * The order is the same for every element, whatever the tile or thread that
 * computes it, so results are bit-identical for any thread count and in
 * every vector instruction set (the kernels below: SSE2, AVX2 and AVX-512
 * variants of one body, gemm_cpu_body.h, chosen per call by dinf__cpu_isa /
 * DINF_CPU_ISA; NaN signs and payloads aside where two NaNs meet).
 *
 * Work is split into tiles of up to 128 rows x 128 columns (one B scale
 * block wide); for each k block a tile decodes its A rows (load_a) and its B
 * columns, transposed (load_bt), once into float buffers (a vector of codes
 * at a time; SSE2 a code at a time from a table, with 4 x 4 transposes), and
 * runs the register-blocked tile_block over them (4 x 8, 4 x 16 or 8 x 32
 * rows x columns in registers). Tiles are distributed over threads with
 * dinf__parallel_for; each worker owns a scratch slot allocated up front.
 *
 * Pointers: a buffer that holds no element (e.g. a and b when k == 0,
 * everything when m == 0 or n == 0) may be NULL; any other NULL is rejected.
 */
#include "gemm_cpu.h"
#include "../core/cpu_vec.h"
#include "../core/internal.h"
#include "../core/numeric_hd.h"
#include "../core/parallel.h"

#include "deepinfra/gemm.h"
#include "gemm_sm90.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_K 128
#define TILE_M 128
#define TILE_N 128 /* = the B scale block: one b_scale per tile and k block */

static int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); } /* no overflow */

/* p + off, keeping NULL (allowed for empty buffers, k == 0) free of arithmetic. */
#define OFFSET(p, off) ((p) ? (p) + (off) : (p))

/* One block of TILE_M (or fewer) rows sharing one B matrix. */
typedef struct row_block {
    const uint8_t *a;  /* first row of the block */
    const float *sa;   /* a_scales + first row; element (r, kb) at sa[kb * sa_stride + r] */
    int64_t sa_stride; /* aligned_m of the scale layout */
    const uint8_t *b;  /* [n][k] of the group */
    const float *sb;   /* 1x128/128x128: [ceil(n/128)][kblocks] of the group;
                          wgrad (sb_stride > 0): column j's scale of block kb at
                          sb[kb * sb_stride + j] */
    int64_t sb_stride; /* 0, or aligned_n of the wgrad's N-major B scales */
    uint16_t *d;       /* first output row (bf16), or NULL for wgrad: */
    float *df;         /* first output row of the wgrad's float32 accumulator */
    int64_t rows;      /* 1..TILE_M */
} row_block;

/* Per-worker scratch, 64-byte aligned floats. */
typedef struct scratch {
    float *a;     /* [TILE_M][BLOCK_K]  decoded A block, row-major */
    float *bt;    /* [BLOCK_K][TILE_N]  decoded B block, transposed */
    float *total; /* [TILE_M][TILE_N]   running sum over k blocks */
} scratch;

typedef struct gemm_job {
    int64_t n, k, kblocks, n_tiles;
    int64_t lda, ldb, ldd;
    const row_block *blocks;
    int64_t num_blocks;
    const dinf__gemm_cpu_kernels *kernels; /* the CPU's widest vector set (DINF_CPU_ISA) */
    scratch *slots;
    int64_t num_slots;
    atomic_llong next_slot;
} gemm_job;

/*
 * tile_block: for every row r < rows_pad and column j < cols_pad of the
 * tile, c = a[r][0] * bt[0][j] + ... + a[r][kk - 1] * bt[kk - 1][j] (added
 * left to right from 0), then total[r][j] += row_scale[r] * c. One variant
 * per vector instruction set (gemm_cpu_body.h); they differ only in how many
 * rows and columns share the registers, so all give the same bits (no FMA:
 * the library builds with -ffp-contract=off). rows_pad is a multiple of
 * PAD_M, cols_pad of PAD_N.
 */
#define PAD_M DINF__GEMM_CPU_PAD_M
#define PAD_N DINF__GEMM_CPU_PAD_N
_Static_assert(TILE_N == DINF__GEMM_CPU_TILE_N && BLOCK_K == DINF__GEMM_CPU_BLOCK_K,
               "gemm_cpu.h's strides");
_Static_assert(TILE_M % PAD_M == 0 && TILE_N % PAD_N == 0, "padding inside the scratch tiles");
_Static_assert(PAD_N % 8 == 0 && BLOCK_K % 8 == 0, "load_bt's squares of 8 (or 4) columns");
/* vectors of 16 floats never cross a call (the body is one function) */
#pragma GCC diagnostic ignored "-Wpsabi"
/* No FMA contraction (the variants' equal bits
 * rest on it): clang honours the pragma; GCC has none, and the Makefile's
 * -ffp-contract=off is checked by tests/python/test_build.py (no vfmadd in
 * these objects). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* e4m3 code -> float32 bits, as a constant expression (numeric_hd.h's
 * dinf__f32_from_e4m3; the tests compare every code): the SSE2 variant's
 * decode looks codes up here, as a table load beats its vector decode
 * (which lacks a blend and a widening load). */
#define E4M3_SIGN(c) (((uint32_t)(c) & 0x80u) << 24)
#define E4M3_EXP(c) (((uint32_t)(c) >> 3) & 0xfu)
#define E4M3_MAN(c) ((uint32_t)(c) & 7u)
/* m * 2^-9 for m = 0..7 */
#define E4M3_SUB(m)                                                                               \
    ((m) == 0u   ? 0u                                                                             \
     : (m) == 1u ? 0x3b000000u                                                                    \
     : (m) <= 3u ? 0x3b800000u | (((m) & 1u) << 22)                                               \
                 : 0x3c000000u | (((m) & 3u) << 21))
#define E4M3_BITS(c)                                                                              \
    (((uint32_t)(c) & 0x7fu) == 0x7fu ? E4M3_SIGN(c) | 0x7fc00000u                                \
     : E4M3_EXP(c) == 0u              ? E4M3_SIGN(c) | E4M3_SUB(E4M3_MAN(c))                      \
                                      : E4M3_SIGN(c) | ((E4M3_EXP(c) + 120u) << 23) | (E4M3_MAN(c) << 20))
#define E4M3_R4(c) E4M3_BITS(c), E4M3_BITS((c) + 1), E4M3_BITS((c) + 2), E4M3_BITS((c) + 3)
#define E4M3_R16(c) E4M3_R4(c), E4M3_R4((c) + 4), E4M3_R4((c) + 8), E4M3_R4((c) + 12)
#define E4M3_R64(c) E4M3_R16(c), E4M3_R16((c) + 16), E4M3_R16((c) + 32), E4M3_R16((c) + 48)
static const uint32_t e4m3_table[256] = {E4M3_R64(0), E4M3_R64(64), E4M3_R64(128), E4M3_R64(192)};

/* SSE2 (the x86-64 baseline; or whatever the build's is): 16 registers of 4 */
#define NAME base
#define TARGET
#define VT v4f
#define VW 4
#define MR 4
#define NV 2
#include "gemm_cpu_body.h"
#if DINF_CPU_X86
/* AVX2: 16 registers of 8 */
#define NAME avx2
#define TARGET __attribute__((target("avx2")))
#define VT v8f
#define VW 8
#define MR 4
#define NV 2
#include "gemm_cpu_body.h"
/* AVX-512: 32 registers of 16 */
#define NAME avx512
#define TARGET __attribute__((target("avx512f")))
#define VT v16f
#define VW 16
#define MR 8
#define NV 2
#include "gemm_cpu_body.h"
#endif

DINF_CPU_KERNELS_FOR(dinf__gemm_cpu_kernels, dinf__gemm_cpu_kernels_for)

static void run_tile(const gemm_job *job, scratch *s, const row_block *rb, int64_t nt) {
    const int64_t n0 = nt * TILE_N;
    const int64_t cols = job->n - n0 < TILE_N ? job->n - n0 : TILE_N;
    const int64_t rows = rb->rows;
    const int64_t rows_pad = ceil_div(rows, PAD_M) * PAD_M;
    const int64_t cols_pad = ceil_div(cols, PAD_N) * PAD_N;
    const dinf__gemm_cpu_kernels *kern = job->kernels;
    const int wgrad = rb->sb_stride > 0;
    _Alignas(64) float row_scale[TILE_M];
    _Alignas(64) float col_scale[TILE_N];
    if (!wgrad) /* one B scale per tile and k block: folded into row_scale */
        for (int64_t c = 0; c < cols_pad; c++)
            col_scale[c] = 1.0f;

    memset(s->total, 0, sizeof(float) * TILE_M * TILE_N);
    if (rows_pad != rows)
        memset(s->a + rows * BLOCK_K, 0, sizeof(float) * (size_t)(rows_pad - rows) * BLOCK_K);
    for (int64_t kb = 0; kb < job->kblocks; kb++) {
        const int64_t k0 = kb * BLOCK_K;
        const int64_t kk = job->k - k0 < BLOCK_K ? job->k - k0 : BLOCK_K;
        kern->load_a(rb->a + k0, job->lda, rows, kk, s->a);
        kern->load_bt(rb->b + n0 * job->ldb + k0, job->ldb, cols, cols_pad, kk, s->bt);
        if (wgrad) {
            for (int64_t r = 0; r < rows_pad; r++)
                row_scale[r] = r < rows ? rb->sa[kb * rb->sa_stride + r] : 0.0f;
            for (int64_t c = 0; c < cols_pad; c++)
                col_scale[c] = c < cols ? rb->sb[kb * rb->sb_stride + n0 + c] : 0.0f;
        } else {
            const float sb = rb->sb[nt * job->kblocks + kb];
            for (int64_t r = 0; r < rows_pad; r++)
                row_scale[r] = r < rows ? rb->sa[kb * rb->sa_stride + r] * sb : 0.0f;
        }
        kern->tile_block(s->a, s->bt, kk, rows_pad, cols_pad, row_scale, col_scale, s->total);
    }
    if (wgrad) { /* d += total: one float32 addition per element */
        for (int64_t r = 0; r < rows; r++) {
            float *out = rb->df + r * job->ldd + n0;
            const float *t = s->total + r * TILE_N;
            for (int64_t c = 0; c < cols; c++)
                out[c] = out[c] + t[c];
        }
        return;
    }
    for (int64_t r = 0; r < rows; r++) {
        uint16_t *out = rb->d + r * job->ldd + n0;
        const float *t = s->total + r * TILE_N;
        for (int64_t c = 0; c < cols; c++)
            out[c] = dinf__bf16_from_f32(t[c]);
    }
}

static void run_tiles(void *ctx, int64_t begin, int64_t end) {
    gemm_job *job = ctx;
    /* dinf__parallel_for makes at most min(threads, tiles) = num_slots calls,
     * each on its own thread: one slot per call. */
    long long slot = atomic_fetch_add(&job->next_slot, 1);
    scratch *s = &job->slots[slot % job->num_slots];
    for (int64_t t = begin; t < end; t++)
        run_tile(job, s, &job->blocks[t / job->n_tiles], t % job->n_tiles);
}

/* Run every (row block x n tile) of blocks on place->threads threads. */
static dinf_status run_gemm(const char *func, const dinf__place *place, int64_t n, int64_t k,
                            int64_t lda, int64_t ldb, int64_t ldd, const row_block *blocks,
                            int64_t num_blocks) {
    /* the vector set: the CPU's widest, or DINF_CPU_ISA (read on every call) */
    char isa_msg[160];
    const int isa = dinf__cpu_isa(isa_msg, sizeof isa_msg);
    if (isa < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%s", isa_msg);
    gemm_job *job = malloc(sizeof *job);
    if (!job)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "cannot allocate the job descriptor");
    job->kernels = dinf__gemm_cpu_kernels_for(isa);
    job->n = n;
    job->k = k;
    job->kblocks = ceil_div(k, BLOCK_K);
    job->n_tiles = ceil_div(n, TILE_N);
    job->lda = lda;
    job->ldb = ldb;
    job->ldd = ldd;
    job->blocks = blocks;
    job->num_blocks = num_blocks;
    const int64_t tiles = num_blocks * job->n_tiles;
    job->num_slots = tiles < place->threads ? tiles : place->threads;
    atomic_init(&job->next_slot, 0);
    job->slots = calloc((size_t)job->num_slots, sizeof *job->slots);
    const size_t slot_bytes = sizeof(float) * (size_t)(TILE_M * BLOCK_K + BLOCK_K * TILE_N + TILE_M * TILE_N);
    int ok = job->slots != NULL;
    for (int64_t i = 0; ok && i < job->num_slots; i++) {
        float *mem = aligned_alloc(64, slot_bytes);
        if (!mem) {
            ok = 0;
            break;
        }
        job->slots[i] = (scratch){mem, mem + TILE_M * BLOCK_K, mem + TILE_M * BLOCK_K + BLOCK_K * TILE_N};
    }
    dinf_status st = DINF_STATUS_OK;
    if (ok)
        dinf__parallel_for(place->threads, tiles, 1, run_tiles, job);
    else
        st = dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func,
                        "cannot allocate %lld scratch buffers of %zu bytes",
                        (long long)job->num_slots, slot_bytes);
    if (job->slots)
        for (int64_t i = 0; i < job->num_slots; i++)
            free(job->slots[i].a);
    free(job->slots);
    free(job);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Argument checks                                                           */
/* ------------------------------------------------------------------------ */

/* Bytes spanned by rows x cols elements of elem bytes with row stride ld
 * elements; 0 when empty; -1 on overflow. */
static int span_bytes(int64_t rows, int64_t cols, int64_t ld, int64_t elem, size_t *out) {
    int64_t v;
    if (rows == 0 || cols == 0) {
        *out = 0;
        return 0;
    }
    if (dinf__mul_i64(rows - 1, ld, &v) || __builtin_add_overflow(v, cols, &v) ||
        dinf__mul_i64(v, elem, &v))
        return -1;
    *out = (size_t)v;
    return 0;
}

typedef struct shape_check {
    const char *func;
    int64_t groups;  /* 1 for the plain GEMM */
    int64_t m_rows;  /* rows of a and d in total (m, m_sum, groups * m_max) */
    int64_t m_group; /* rows per A group (m_max) for the masked layout; else m_rows */
    int masked;
    int64_t n, k, lda, ldb, ldd;
    const uint8_t *a;
    const float *a_scales;
    const uint8_t *b;
    const float *b_scales;
    const void *d;
    int wgrad; /* float32 d; b_scales N-major [kblocks][aligned_n] */
} shape_check;

#define CHECK_PTR(ptr, name, needed)                                                              \
    do {                                                                                          \
        if ((needed) && (ptr) == NULL)                                                            \
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, c->func, "%s is NULL", name);         \
    } while (0)

static dinf_status check_common(const shape_check *c) {
    const char *func = c->func;
    if (c->n < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "n=%lld is negative", (long long)c->n);
    if (c->k < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "k=%lld is negative", (long long)c->k);
    if (c->lda < c->k)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "lda=%lld is below k=%lld",
                          (long long)c->lda, (long long)c->k);
    if (c->ldb < c->k)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "ldb=%lld is below k=%lld",
                          (long long)c->ldb, (long long)c->k);
    if (c->ldd < c->n)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "ldd=%lld is below n=%lld",
                          (long long)c->ldd, (long long)c->n);
    /* the wgrad with k == 0 adds nothing: d is not touched either */
    const int work = c->m_rows > 0 && c->n > 0 && (!c->wgrad || c->k > 0);
    CHECK_PTR(c->a, "a", work && c->k > 0);
    CHECK_PTR(c->a_scales, "a_scales", work && c->k > 0);
    CHECK_PTR(c->b, "b", work && c->k > 0);
    CHECK_PTR(c->b_scales, "b_scales", work && c->k > 0);
    CHECK_PTR(c->d, "d", work);

    /* Extents of every buffer, for overflow and overlap. */
    const int64_t kblocks = ceil_div(c->k, BLOCK_K), nblocks = ceil_div(c->n, TILE_N);
    const int64_t aligned = ceil_div(c->m_group, 4) * 4;
    /* B scales: [groups][nblocks][kblocks], or the wgrad's [kblocks][aligned_n]
     * (ceil_div(n, 4) * 4 <= n + 3: below INT64_MAX for the n that pass the
     * span check below) */
    const int64_t sb_rows = c->wgrad ? (c->n > INT64_MAX - 3 ? INT64_MAX : ceil_div(c->n, 4) * 4)
                                     : nblocks;
    size_t a_bytes, b_bytes, d_bytes, sa_bytes, sb_bytes;
    int64_t sa_count, sb_count, b_rows;
    if (span_bytes(c->m_rows, c->k, c->lda, 1, &a_bytes) ||
        dinf__mul_i64(c->groups, c->n, &b_rows) || span_bytes(b_rows, c->k, c->ldb, 1, &b_bytes) ||
        span_bytes(c->m_rows, c->n, c->ldd, c->wgrad ? 4 : 2, &d_bytes) ||
        dinf__mul_i64(kblocks, aligned, &sa_count) ||
        (c->masked && dinf__mul_i64(sa_count, c->groups, &sa_count)) ||
        dinf__mul_i64(sa_count, 4, &sa_count) || dinf__mul_i64(sb_rows, kblocks, &sb_count) ||
        dinf__mul_i64(sb_count, c->groups, &sb_count) || dinf__mul_i64(sb_count, 4, &sb_count))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "buffer sizes overflow int64 (m=%lld, n=%lld, k=%lld, num_groups=%lld, "
                          "lda=%lld, ldb=%lld, ldd=%lld)",
                          (long long)c->m_rows, (long long)c->n, (long long)c->k,
                          (long long)c->groups, (long long)c->lda, (long long)c->ldb,
                          (long long)c->ldd);
    if (!work)
        return DINF_STATUS_OK;
    sa_bytes = (size_t)sa_count;
    sb_bytes = (size_t)sb_count;
    /* Only the output must be apart from the inputs: inputs may share memory
     * (X * X^T, or operands carved from one allocation). */
    const dinf__buffer inputs[] = {
        {"a", c->a, a_bytes},
        {"a_scales", c->a_scales, sa_bytes},
        {"b", c->b, b_bytes},
        {"b_scales", c->b_scales, sb_bytes},
    };
    for (int i = 0; i < 4; i++) {
        const dinf__buffer pair[] = {{"d", c->d, d_bytes}, inputs[i]};
        dinf_status st = dinf__check_disjoint(func, pair, 2);
        if (st != DINF_STATUS_OK)
            return st;
    }
    return DINF_STATUS_OK;
}

/* Validate exec (DINF_EXEC_CUDA goes to gemm_cuda.c after the common checks). */
/* The place, and on the CPU the vector set (DINF_CPU_ISA is checked on every
 * CPU call, also when there is nothing to compute, as the MLA decode does). */
static dinf_status resolve_place(const char *func, const dinf_exec *exec, dinf__place *place) {
    const dinf_status st = dinf__place_resolve(func, exec, place);
    if (st != DINF_STATUS_OK || place->kind != DINF_EXEC_CPU)
        return st;
    char isa_msg[160];
    if (dinf__cpu_isa(isa_msg, sizeof isa_msg) < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%s", isa_msg);
    return DINF_STATUS_OK;
}

/* One ungrouped GEMM on the CPU, m > 0 and n > 0, in row blocks of TILE_M:
 * the 1x128/128x128 form (sb_stride 0, bf16 d16) or the wgrad (sb_stride =
 * aligned_n of its N-major B scales, float32 df accumulated into). */
static dinf_status run_rows(const char *func, const dinf__place *place, int64_t m, int64_t n,
                            int64_t k, const uint8_t *a, int64_t lda, const float *a_scales,
                            const uint8_t *b, int64_t ldb, const float *b_scales,
                            int64_t sb_stride, uint16_t *d16, float *df, int64_t ldd) {
    const int64_t num_blocks = ceil_div(m, TILE_M), aligned_m = ceil_div(m, 4) * 4;
    row_block *blocks = malloc((size_t)num_blocks * sizeof *blocks);
    if (!blocks)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "cannot allocate %lld row blocks",
                          (long long)num_blocks);
    for (int64_t i = 0; i < num_blocks; i++) {
        const int64_t m0 = i * TILE_M;
        blocks[i] = (row_block){OFFSET(a, m0 * lda), OFFSET(a_scales, m0), aligned_m, b,
                                b_scales, sb_stride, OFFSET(d16, m0 * ldd), OFFSET(df, m0 * ldd),
                                m - m0 < TILE_M ? m - m0 : TILE_M};
    }
    const dinf_status st = run_gemm(func, place, n, k, lda, ldb, ldd, blocks, num_blocks);
    free(blocks);
    return st;
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                              */
/* ------------------------------------------------------------------------ */

dinf_status dinf_fp8_gemm_nt(int64_t m, int64_t n, int64_t k, const uint8_t *a, int64_t lda,
                             const float *a_scales, const uint8_t *b, int64_t ldb,
                             const float *b_scales, uint16_t *d, int64_t ldd,
                             const dinf_exec *exec) {
    if (m < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld is negative", (long long)m);
    const shape_check c = {__func__, 1, m, m, 0, n, k, lda, ldb, ldd, a, a_scales, b, b_scales, d, 0};
    dinf_status st = check_common(&c);
    if (st != DINF_STATUS_OK)
        return st;
    dinf__place place;
    if ((st = resolve_place(__func__, exec, &place)) != DINF_STATUS_OK)
        return st;
    if (place.kind == DINF_EXEC_CUDA) {
        const dinf__fp8_gpu_problem p = {DINF_FP8_GEMM_NORMAL, m, n, k, 1, 0, a, lda, a_scales, b,
                                         ldb, b_scales, d, ldd, NULL, 0};
        return dinf__fp8_gemm_cuda(__func__, &place, &p);
    }
    if (m == 0 || n == 0)
        return DINF_STATUS_OK;
    return run_rows(__func__, &place, m, n, k, a, lda, a_scales, b, ldb, b_scales, 0, d, NULL,
                    ldd);
}

dinf_status dinf_fp8_m_grouped_gemm_nt_contiguous(int64_t m_sum, int64_t n, int64_t k,
                                                  int64_t num_groups, const uint8_t *a,
                                                  int64_t lda, const float *a_scales,
                                                  const uint8_t *b, int64_t ldb,
                                                  const float *b_scales, uint16_t *d, int64_t ldd,
                                                  const int32_t *m_indices,
                                                  const dinf_exec *exec) {
    if (m_sum < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m_sum=%lld is negative", (long long)m_sum);
    if (m_sum % DINF_FP8_GEMM_M_ALIGNMENT != 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m_sum=%lld is not a multiple of %d",
                         (long long)m_sum, DINF_FP8_GEMM_M_ALIGNMENT);
    if (num_groups < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_groups=%lld must be >= 1",
                         (long long)num_groups);
    const shape_check c = {__func__, num_groups, m_sum, m_sum, 0, n,        k,       lda,
                           ldb,      ldd,        a,     a_scales, b, b_scales, d, 0};
    dinf_status st = check_common(&c);
    if (st != DINF_STATUS_OK)
        return st;
    if (m_sum > 0 && !m_indices)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m_indices is NULL");
    if (m_sum > 0 && n > 0) {
        const dinf__buffer buffers[] = {{"d", d, (size_t)((m_sum - 1) * ldd + n) * 2},
                                        {"m_indices", m_indices, (size_t)m_sum * 4}};
        if ((st = dinf__check_disjoint(__func__, buffers, 2)) != DINF_STATUS_OK)
            return st;
    }
    dinf__place place;
    if ((st = resolve_place(__func__, exec, &place)) != DINF_STATUS_OK)
        return st;
    if (place.kind == DINF_EXEC_CUDA) { /* m_indices is device memory: a device-side contract */
        const dinf__fp8_gpu_problem p = {DINF_FP8_GEMM_CONTIGUOUS, m_sum, n, k, num_groups, 0, a,
                                         lda, a_scales, b, ldb, b_scales, d, ldd, m_indices, 0};
        return dinf__fp8_gemm_cuda(__func__, &place, &p);
    }
    for (int64_t i = 0; i < m_sum; i++) {
        const int32_t g = m_indices[i];
        if (g < -1 || g >= num_groups)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "m_indices[%lld]=%d is outside [-1, num_groups=%lld)", (long long)i,
                             (int)g, (long long)num_groups);
        const int64_t first = i - i % DINF_FP8_GEMM_M_ALIGNMENT;
        if (g != m_indices[first])
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "m_indices[%lld]=%d differs from m_indices[%lld]=%d: the group must "
                             "be constant over each aligned block of %d rows",
                             (long long)i, (int)g, (long long)first, (int)m_indices[first],
                             DINF_FP8_GEMM_M_ALIGNMENT);
    }
    if (m_sum == 0 || n == 0)
        return DINF_STATUS_OK;
    const int64_t total_blocks = m_sum / TILE_M, kblocks = ceil_div(k, BLOCK_K);
    const int64_t sb_group = ceil_div(n, TILE_N) * kblocks;
    row_block *blocks = malloc((size_t)total_blocks * sizeof *blocks);
    if (!blocks)
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "cannot allocate %lld row blocks",
                         (long long)total_blocks);
    int64_t num_blocks = 0;
    for (int64_t i = 0; i < total_blocks; i++) {
        const int64_t m0 = i * TILE_M, g = m_indices[m0];
        if (g < 0)
            continue; /* padding rows: not computed, not written */
        blocks[num_blocks++] = (row_block){OFFSET(a, m0 * lda), OFFSET(a_scales, m0), m_sum,
                                           OFFSET(b, g * n * ldb),
                                           OFFSET(b_scales, g * sb_group), 0, d + m0 * ldd, NULL,
                                           TILE_M};
    }
    st = run_gemm(__func__, &place, n, k, lda, ldb, ldd, blocks, num_blocks);
    free(blocks);
    return st;
}

dinf_status dinf_fp8_m_grouped_gemm_nt_masked(int64_t num_groups, int64_t m_max, int64_t n,
                                              int64_t k, const uint8_t *a, int64_t lda,
                                              const float *a_scales, const uint8_t *b,
                                              int64_t ldb, const float *b_scales, uint16_t *d,
                                              int64_t ldd, const int32_t *masked_m,
                                              int64_t expected_m, const dinf_exec *exec) {
    if (num_groups < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_groups=%lld must be >= 1",
                         (long long)num_groups);
    if (m_max < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m_max=%lld is negative", (long long)m_max);
    if (expected_m < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "expected_m=%lld is negative",
                         (long long)expected_m);
    int64_t m_rows;
    if (dinf__mul_i64(num_groups, m_max, &m_rows))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "num_groups=%lld * m_max=%lld overflows int64", (long long)num_groups,
                         (long long)m_max);
    const shape_check c = {__func__, num_groups, m_rows, m_max, 1, n,        k,       lda,
                           ldb,      ldd,        a,      a_scales, b, b_scales, d, 0};
    dinf_status st = check_common(&c);
    if (st != DINF_STATUS_OK)
        return st;
    if (!masked_m)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "masked_m is NULL");
    if (m_rows > 0 && n > 0) {
        const dinf__buffer buffers[] = {{"d", d, (size_t)((m_rows - 1) * ldd + n) * 2},
                                        {"masked_m", masked_m, (size_t)num_groups * 4}};
        if ((st = dinf__check_disjoint(__func__, buffers, 2)) != DINF_STATUS_OK)
            return st;
    }
    dinf__place place;
    if ((st = resolve_place(__func__, exec, &place)) != DINF_STATUS_OK)
        return st;
    if (place.kind == DINF_EXEC_CUDA) { /* masked_m is device memory: clamped on the device */
        const dinf__fp8_gpu_problem p = {DINF_FP8_GEMM_MASKED, m_max, n, k, num_groups, expected_m,
                                         a, lda, a_scales, b, ldb, b_scales, d, ldd, masked_m, 0};
        return dinf__fp8_gemm_cuda(__func__, &place, &p);
    }
    int64_t total_blocks = 0;
    for (int64_t g = 0; g < num_groups; g++) {
        if (masked_m[g] < 0 || masked_m[g] > m_max)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "masked_m[%lld]=%d is outside [0, m_max=%lld]", (long long)g,
                             (int)masked_m[g], (long long)m_max);
        total_blocks += ceil_div(masked_m[g], TILE_M);
    }
    if (total_blocks == 0 || n == 0)
        return DINF_STATUS_OK;
    const int64_t kblocks = ceil_div(k, BLOCK_K), aligned = ceil_div(m_max, 4) * 4;
    const int64_t sb_group = ceil_div(n, TILE_N) * kblocks;
    row_block *blocks = malloc((size_t)total_blocks * sizeof *blocks);
    if (!blocks)
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "cannot allocate %lld row blocks",
                         (long long)total_blocks);
    int64_t num_blocks = 0;
    for (int64_t g = 0; g < num_groups; g++)
        for (int64_t m0 = 0; m0 < masked_m[g]; m0 += TILE_M) {
            const int64_t row = g * m_max + m0;
            blocks[num_blocks++] = (row_block){
                OFFSET(a, row * lda), OFFSET(a_scales, g * kblocks * aligned + m0), aligned,
                OFFSET(b, g * n * ldb), OFFSET(b_scales, g * sb_group), 0, d + row * ldd, NULL,
                masked_m[g] - m0 < TILE_M ? masked_m[g] - m0 : TILE_M};
        }
    st = run_gemm(__func__, &place, n, k, lda, ldb, ldd, blocks, num_blocks);
    free(blocks);
    return st;
}

/* ------------------------------------------------------------------------ */
/* The weight-gradient GEMMs (1x128 scales on both operands, float32 d +=)   */
/* ------------------------------------------------------------------------ */

/* One checked wgrad GEMM on the CPU. */
static dinf_status wgrad_cpu(const char *func, const dinf__place *place, int64_t m, int64_t n,
                             int64_t k, const uint8_t *a, int64_t lda, const float *a_scales,
                             const uint8_t *b, int64_t ldb, const float *b_scales, float *d,
                             int64_t ldd) {
    if (m == 0 || n == 0 || k == 0)
        return DINF_STATUS_OK; /* nothing to add */
    return run_rows(func, place, m, n, k, a, lda, a_scales, b, ldb, b_scales,
                    ceil_div(n, 4) * 4, NULL, d, ldd);
}

dinf_status dinf_fp8_wgrad_gemm_nt(int64_t m, int64_t n, int64_t k, const uint8_t *a, int64_t lda,
                                   const float *a_scales, const uint8_t *b, int64_t ldb,
                                   const float *b_scales, float *d, int64_t ldd,
                                   const dinf_exec *exec) {
    if (m < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld is negative", (long long)m);
    const shape_check c = {__func__, 1,   m,   m,        0, n,        k, lda, ldb,
                           ldd,      a,   a_scales, b,   b_scales, d, 1};
    dinf_status st = check_common(&c);
    if (st != DINF_STATUS_OK)
        return st;
    dinf__place place;
    if ((st = resolve_place(__func__, exec, &place)) != DINF_STATUS_OK)
        return st;
    if (place.kind == DINF_EXEC_CUDA) {
        if (k == 0)
            return DINF_STATUS_OK; /* nothing to add (the device is not needed) */
        const dinf__fp8_gpu_problem p = {DINF_FP8_GEMM_NORMAL, m, n, k, 1, 0, a, lda, a_scales, b,
                                         ldb, b_scales, d, ldd, NULL, 1};
        return dinf__fp8_gemm_cuda(__func__, &place, &p);
    }
    return wgrad_cpu(__func__, &place, m, n, k, a, lda, a_scales, b, ldb, b_scales, d, ldd);
}

/* Group g of the K-grouped wgrad (its codes start k_off codes into each row
 * group of a and b, its scales kb_off scale rows in) as one wgrad problem. */
static dinf__fp8_gpu_problem k_group(int64_t m, int64_t n, int64_t kg, int64_t k_off,
                                     int64_t kb_off, int64_t g, const uint8_t *a,
                                     const float *a_scales, const uint8_t *b,
                                     const float *b_scales, float *d) {
    const int64_t aligned_m = ceil_div(m, 4) * 4, aligned_n = ceil_div(n, 4) * 4;
    return (dinf__fp8_gpu_problem){DINF_FP8_GEMM_NORMAL, m, n, kg, 1, 0, a + m * k_off, kg,
                                   a_scales + aligned_m * kb_off, b + n * k_off, kg,
                                   b_scales + aligned_n * kb_off, d + g * m * n, n, NULL, 1};
}

dinf_status dinf_fp8_k_grouped_wgrad_gemm_nt(int64_t num_groups, int64_t m, int64_t n,
                                             const int64_t *ks, const uint8_t *a,
                                             const float *a_scales, const uint8_t *b,
                                             const float *b_scales, float *d,
                                             const dinf_exec *exec) {
    if (num_groups < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_groups=%lld must be >= 1",
                         (long long)num_groups);
    if (m < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld is negative", (long long)m);
    if (n < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "n=%lld is negative", (long long)n);
    if (!ks)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "ks is NULL");
    if (m > INT64_MAX - 3 || n > INT64_MAX - 3)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld or n=%lld is too large",
                         (long long)m, (long long)n);
    /* the GPU path's row-stride rule, before any device work (so that it is
     * reported the same with or without a usable device) */
    const int on_gpu = exec != NULL && exec->size >= offsetof(dinf_exec, kind) + sizeof exec->kind &&
                       exec->kind == DINF_EXEC_CUDA;
    /* Totals: k_sum (codes per row of A and B over all groups) and kb_sum
     * (scale rows over all groups), with overflow checks. */
    int64_t k_sum = 0, kb_sum = 0;
    for (int64_t g = 0; g < num_groups; g++) {
        if (ks[g] < 0)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "ks[%lld]=%lld is negative",
                             (long long)g, (long long)ks[g]);
        if (on_gpu && ks[g] % 16 != 0)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "ks[%lld]=%lld is not a multiple of 16 (the row stride of A_g and "
                             "B_g in bytes; required on DINF_EXEC_CUDA)",
                             (long long)g, (long long)ks[g]);
        if (__builtin_add_overflow(k_sum, ks[g], &k_sum))
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "the sum of ks overflows int64 at group %lld", (long long)g);
        kb_sum += ceil_div(ks[g], BLOCK_K);
    }
    const int64_t aligned_m = ceil_div(m, 4) * 4, aligned_n = ceil_div(n, 4) * 4;
    int64_t a_bytes, b_bytes, sa_bytes, sb_bytes, d_bytes;
    if (dinf__mul_i64(m, k_sum, &a_bytes) || dinf__mul_i64(n, k_sum, &b_bytes) ||
        dinf__mul_i64(aligned_m, kb_sum, &sa_bytes) || dinf__mul_i64(sa_bytes, 4, &sa_bytes) ||
        dinf__mul_i64(aligned_n, kb_sum, &sb_bytes) || dinf__mul_i64(sb_bytes, 4, &sb_bytes) ||
        dinf__mul_i64(num_groups, m, &d_bytes) || dinf__mul_i64(d_bytes, n, &d_bytes) ||
        dinf__mul_i64(d_bytes, 4, &d_bytes))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "buffer sizes overflow int64 (num_groups=%lld, m=%lld, n=%lld, sum of "
                         "ks=%lld)",
                         (long long)num_groups, (long long)m, (long long)n, (long long)k_sum);
    const int work = m > 0 && n > 0 && k_sum > 0;
    if (work) {
        const struct {
            const char *name;
            const void *ptr;
        } ptrs[] = {{"a", a}, {"a_scales", a_scales}, {"b", b}, {"b_scales", b_scales}, {"d", d}};
        for (int i = 0; i < 5; i++)
            if (!ptrs[i].ptr)
                return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "%s is NULL", ptrs[i].name);
        const dinf__buffer inputs[] = {{"a", a, (size_t)a_bytes},
                                       {"a_scales", a_scales, (size_t)sa_bytes},
                                       {"b", b, (size_t)b_bytes},
                                       {"b_scales", b_scales, (size_t)sb_bytes}};
        for (int i = 0; i < 4; i++) {
            const dinf__buffer pair[] = {{"d", d, (size_t)d_bytes}, inputs[i]};
            dinf_status st = dinf__check_disjoint(__func__, pair, 2);
            if (st != DINF_STATUS_OK)
                return st;
        }
    }
    dinf__place place;
    dinf_status st = resolve_place(__func__, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    if (!work)
        return DINF_STATUS_OK;
    if (place.kind == DINF_EXEC_CUDA) {
        /* every group's GPU rules before the first launch: a rejected call
         * adds nothing to d */
        int64_t k_at = 0, kb_at = 0;
        for (int64_t g = 0; g < num_groups; g++) {
            const dinf__fp8_gpu_problem p =
                k_group(m, n, ks[g], k_at, kb_at, g, a, a_scales, b, b_scales, d);
            if (ks[g] > 0 && (st = dinf__fp8_gpu_check(__func__, &p)) != DINF_STATUS_OK)
                return st;
            k_at += ks[g];
            kb_at += ceil_div(ks[g], BLOCK_K);
        }
    }
    /* Group by group, on the CPU threaded inside each; on the GPU one launch
     * per group with k_g > 0, in group order on the stream. */
    int64_t k_off = 0, kb_off = 0;
    for (int64_t g = 0; g < num_groups && st == DINF_STATUS_OK; g++) {
        const dinf__fp8_gpu_problem p =
            k_group(m, n, ks[g], k_off, kb_off, g, a, a_scales, b, b_scales, d);
        if (ks[g] > 0)
            st = place.kind == DINF_EXEC_CUDA
                     ? dinf__fp8_gemm_cuda(__func__, &place, &p)
                     : wgrad_cpu(__func__, &place, m, n, p.k, p.a, p.lda, p.a_scales, p.b, p.ldb,
                                 p.b_scales, p.d, p.ldd);
        k_off += ks[g];
        kb_off += ceil_div(ks[g], BLOCK_K);
    }
    return st;
}
