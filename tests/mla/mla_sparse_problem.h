/*
 * Sparse MLA decode test problems, shared by the CPU suite
 * (tests/mla/test_mla_sparse.c) and the GPU suite (tests/gpu/test_mla_gpu.c):
 * a random paged cache (BF16, and its FP8 quantization), random index lists
 * with skipped (-1) and repeated slots, an independent float64 reference of
 * the semantics in mla.h ("Sparse decode") and the upstream tolerance check
 * (sp_check_close, which the dense suite tests/mla/test_mla.c uses too).
 * Header-only (static functions); include it once per test file.
 */
#ifndef DINF_TEST_MLA_SPARSE_PROBLEM_H
#define DINF_TEST_MLA_SPARSE_PROBLEM_H

#include <deepinfra.h>

#include "core/numeric_hd.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SP_DQK 576
#define SP_DV 512
#define SP_POISON 0x7FC1u  /* a bf16 NaN no computation produces */
#define SP_NAN_ROW 0x7FC0u /* bf16 NaN in cache rows no index lists */
#define SP_PAST_LENGTH 2147480000 /* entries past topk_length: never read */
#define SP_ENTRY 656
#define SP_M1_DIM 512  /* MODEL1: q rows, V */
#define SP_M1_ROW 576  /* MODEL1: a row's codes + RoPE bytes */
#define SP_M1_TOKEN 584 /* MODEL1: bytes per token (the API's token stride) */

static inline uint64_t sp_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline double sp_uniform(uint64_t *s) { return (double)(sp_next(s) >> 11) * 0x1p-53; }
/* randn / 10 clamped to [-1, 1], as bf16 (the upstream tests' data) */
static inline uint16_t sp_value(uint64_t *s) {
    const double u = sp_uniform(s), v = sp_uniform(s);
    double x = sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v) / 10;
    x = x < -1 ? -1 : x > 1 ? 1 : x;
    return dinf__bf16_from_f32((float)x);
}

typedef struct sp_problem {
    int64_t b;
    int32_t s_q, h_q, h_kv, page, topk;
    int32_t kv_fp8; /* 0 BF16, 1 FP8 (V3.2's 656-byte entries), 2 the MODEL1 cache (h_kv 1) */
    int64_t num_blocks, token_stride, block_stride; /* strides in elements (bf16) or bytes (fp8) */
    float scale;
    uint16_t *q, *kc;       /* the BF16 cache (dequantized FP8 cache when kv_fp8; MODEL1:
                             * 576-wide rows, [448 latent | 64 RoPE | 64 zeros]) */
    uint8_t *kc8;           /* the FP8 cache when kv_fp8 */
    int32_t *indices;       /* [b][s_q][topk] */
    int32_t *topk_length;   /* [b] or NULL */
    uint16_t *out;
    float *lse;
    /* extras (sp_add_sink, sp_add_extra): the attention sink and an extra
     * cache with its own page size and padded rows (etopk 0: none) */
    float *sink;            /* [h_q] or NULL */
    int32_t etopk, epage;
    int64_t e_num_blocks, e_token_stride, e_block_stride; /* elements (bf16) or bytes (fp8) */
    int64_t ekc_ld;         /* elements between slots of ekc */
    uint16_t *ekc;          /* the extra BF16 cache (dequantized when kv_fp8) */
    uint8_t *ekc8;          /* the extra FP8 cache when kv_fp8 */
    int32_t *eindices;      /* [b][s_q][etopk] */
    int32_t *etopk_length;  /* [b] or NULL */
} sp_problem;

/*
 * Random problem: num_blocks pages of `page` rows, one in four rows NaN
 * (never listed); each list holds random live slots, with probability
 * `skip` a -1, and repeats; with `lengths`, topk_length[b] random in
 * [0, topk] (some 0, some topk) and entries past it alternately a NaN row's
 * slot and SP_PAST_LENGTH (never read); one
 * query position of a multi-position problem lists -1 only. kv_fp8: the
 * cache is quantized by dinf_mla_quantize_kvcache_fp8 and the BF16 copy is
 * replaced by its dequantized values (the reference's input). kv_fp8 = 2:
 * the MODEL1 cache (dinf_mla_quantize_kvcache_model1, pages padded to a
 * multiple of 576 bytes as upstream's), q rows of 512; the BF16 copy holds
 * the dequantized rows decoded here from the bytes (sp_model1_value).
 */
/* MODEL1: the q / V width, and the page stride the tests use: upstream's
 * (page * 584 bytes rounded up to a multiple of 576), or with sp_m1_tight
 * the smallest the API takes (rounded up to 16 bytes: no padding for even
 * pages, so the last row's scales end the allocation). */
static int sp_m1_tight = 0;
static inline int32_t sp_qd(const sp_problem *p) { return p->kv_fp8 == 2 ? SP_M1_DIM : SP_DQK; }
static inline int64_t sp_m1_page_bytes(int32_t page) {
    const int64_t unit = sp_m1_tight ? 16 : SP_M1_ROW;
    return ((int64_t)page * SP_M1_TOKEN + unit - 1) / unit * unit;
}

/* MODEL1: channel c < 448 of the row at `data` whose scales are at `scales`,
 * decoded from the format's definition (mla.h): e4m3(code) * 2^(e - 127),
 * rounded to bfloat16. */
static inline uint16_t sp_model1_value(const uint8_t *data, const uint8_t *scales, int c) {
    const uint8_t e = scales[c / 64];
    const double scale = e == 255 ? NAN : ldexp(1.0, (int)e - 127);
    return dinf__bf16_from_f32((float)(dinf__f32_from_e4m3(data[c]) * scale));
}

/* MODEL1: quantize rows [slots][ld] (512 values used, h_kv 1) into a new
 * cache of num_blocks pages of `page` rows (stride sp_m1_page_bytes), then
 * overwrite the rows with their decoded values (576 wide, zeros after 512). */
static inline uint8_t *sp_model1_quantize(uint16_t *rows, int64_t ld, int64_t num_blocks,
                                          int32_t page) {
    const int64_t slots = num_blocks * page, pb = sp_m1_page_bytes(page);
    uint8_t *cache = aligned_alloc(64, (size_t)((num_blocks * pb + 63) / 64 * 64));
    memset(cache, 0xEE, (size_t)(num_blocks * pb)); /* bytes the quantizer must write differ */
    uint16_t *kv = aligned_alloc(64, sizeof(uint16_t) * (size_t)(slots * SP_M1_DIM));
    int64_t *map = malloc(sizeof(int64_t) * (size_t)slots);
    for (int64_t sl = 0; sl < slots; sl++) {
        map[sl] = sl;
        memcpy(kv + sl * SP_M1_DIM, rows + sl * ld, sizeof(uint16_t) * SP_M1_DIM);
    }
    const dinf_status st = dinf_mla_quantize_kvcache_model1(kv, slots, SP_M1_DIM, map, cache,
                                                            num_blocks, page, pb, NULL);
    cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
    /* the extreme exponents the quantizer never writes for these values: the
     * first finite row's last group scaled by 2^-127 (e = 0, the float32
     * subnormal) and its group 5 by 2^-126 (e = 1); the decode must read them */
    for (int64_t sl = 0; sl < slots; sl++)
        if (dinf__f32_from_bf16(rows[sl * ld]) == dinf__f32_from_bf16(rows[sl * ld])) {
            uint8_t *sc = cache + (sl / page) * pb + (int64_t)page * SP_M1_ROW + (sl % page) * 8;
            sc[6] = 0;
            sc[5] = 1;
            break;
        }
    for (int64_t sl = 0; sl < slots; sl++) {
        const uint8_t *pg = cache + (sl / page) * pb;
        const uint8_t *data = pg + (sl % page) * SP_M1_ROW;
        const uint8_t *scales = pg + (int64_t)page * SP_M1_ROW + (sl % page) * 8;
        uint16_t *row = rows + sl * ld;
        for (int c = 0; c < 448; c++)
            row[c] = sp_model1_value(data, scales, c);
        memcpy(row + 448, data + 448, 128);
        for (int c = SP_M1_DIM; c < SP_DQK; c++)
            row[c] = 0;
    }
    free(kv);
    free(map);
    return cache;
}

static inline void sp_make(sp_problem *p, int64_t b, int32_t s_q, int32_t h_q, int32_t h_kv, int32_t page,
                    int32_t topk, int lengths, double skip, int kv_fp8, uint64_t seed) {
    uint64_t s = seed;
    *p = (sp_problem){.b = b, .s_q = s_q, .h_q = h_q, .h_kv = h_kv, .page = page, .topk = topk,
                      .kv_fp8 = kv_fp8};
    p->scale = (float)(1.0 / sqrt(kv_fp8 == 2 ? 512.0 : 576.0));
    const int64_t want = (int64_t)topk * 2 + 8; /* slots to draw from */
    p->num_blocks = (want + page - 1) / page + 1;
    p->token_stride = (int64_t)h_kv * SP_DQK;
    p->block_stride = page * p->token_stride;
    const int64_t slots = p->num_blocks * page;
    const int64_t kc_elems = p->num_blocks * p->block_stride;
    p->kc = malloc(sizeof(uint16_t) * (size_t)kc_elems);
    unsigned char *live = malloc((size_t)slots);
    int64_t n_live = 0;
    for (int64_t sl = 0; sl < slots; sl++) {
        live[sl] = sp_next(&s) % 4 != 0;
        n_live += live[sl];
        for (int64_t d = 0; d < p->token_stride; d++)
            p->kc[sl * p->token_stride + d] = live[sl] ? sp_value(&s) : SP_NAN_ROW;
    }
    cr_assert_gt(n_live, 0);
    int32_t *live_list = malloc(sizeof(int32_t) * (size_t)n_live);
    int32_t nan_slot = SP_PAST_LENGTH; /* a NaN row inside the cache, if any */
    for (int64_t sl = 0, k = 0; sl < slots; sl++) {
        if (live[sl])
            live_list[k++] = (int32_t)sl;
        else if (nan_slot == SP_PAST_LENGTH)
            nan_slot = (int32_t)sl;
    }
    p->topk_length = NULL;
    if (lengths) {
        p->topk_length = malloc(sizeof(int32_t) * (size_t)(b + 1));
        for (int64_t i = 0; i < b; i++) {
            const uint64_t r = sp_next(&s) % 6;
            p->topk_length[i] = r == 0 ? 0 : r == 1 ? topk : (int32_t)(sp_next(&s) % (uint64_t)(topk + 1));
        }
    }
    const int64_t n_idx = b * s_q * topk;
    p->indices = malloc(sizeof(int32_t) * (size_t)(n_idx + 1));
    for (int64_t r = 0; r < b * s_q; r++) {
        const int32_t n = p->topk_length ? p->topk_length[r / s_q] : topk;
        const int all_skipped = s_q > 1 && r == 1;
        for (int32_t j = 0; j < topk; j++) {
            int32_t *e = &p->indices[r * topk + j];
            if (j >= n) /* never read: a NaN row in the cache (a stray read or
                         * prefetch of it shows), else a slot past the cache */
                *e = j % 2 ? nan_slot : SP_PAST_LENGTH;
            else if (all_skipped || sp_uniform(&s) < skip)
                *e = -1;
            else if (j > 0 && sp_next(&s) % 8 == 0 && p->indices[r * topk + j - 1] >= 0)
                *e = p->indices[r * topk + j - 1]; /* a repeat */
            else
                *e = live_list[sp_next(&s) % (uint64_t)n_live];
        }
    }
    free(live);
    free(live_list);
    const int64_t q_elems = b * s_q * h_q * sp_qd(p);
    p->q = malloc(sizeof(uint16_t) * (size_t)(q_elems + 8));
    for (int64_t i = 0; i < q_elems; i++)
        p->q[i] = sp_value(&s);
    p->out = malloc(sizeof(uint16_t) * (size_t)(b * s_q * h_q * SP_DV + 8));
    p->lse = malloc(sizeof(float) * (size_t)(b * s_q * h_q + 1));
    p->kc8 = NULL;
    if (kv_fp8 == 2) { /* MODEL1: one KV head, rows of 512 */
        cr_assert_eq(h_kv, 1, "the MODEL1 cache holds one KV head");
        p->kc8 = sp_model1_quantize(p->kc, SP_DQK, p->num_blocks, page);
        p->token_stride = SP_M1_TOKEN;
        p->block_stride = sp_m1_page_bytes(page);
    } else if (kv_fp8) {
        /* quantize every slot (NaN rows too: their entries are never read) */
        p->kc8 = malloc((size_t)(((slots + 63) / 64 * 64) * h_kv * SP_ENTRY));
        int64_t *map = malloc(sizeof(int64_t) * (size_t)slots);
        for (int64_t sl = 0; sl < slots; sl++)
            map[sl] = sl;
        const int64_t pages64 = (slots + 63) / 64; /* the same bytes seen as 64-slot pages */
        const dinf_status st = dinf_mla_quantize_kvcache_fp8(
            p->kc, slots, h_kv, p->token_stride, map, p->kc8, pages64, 64,
            (int64_t)64 * h_kv * SP_ENTRY, (int64_t)h_kv * SP_ENTRY, NULL);
        cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
        free(map);
        p->token_stride = (int64_t)h_kv * SP_ENTRY;
        p->block_stride = page * p->token_stride;
        /* the BF16 copy becomes the dequantized cache */
        for (int64_t sl = 0; sl < slots; sl++)
            for (int32_t hk = 0; hk < h_kv; hk++) {
                const uint8_t *e = p->kc8 + (sl * h_kv + hk) * SP_ENTRY;
                uint16_t *row = p->kc + (sl * h_kv + hk) * SP_DQK;
                float sc[4];
                memcpy(sc, e + 512, sizeof sc);
                for (int d = 0; d < SP_DV; d++)
                    row[d] = dinf__bf16_from_f32(dinf__f32_from_e4m3(e[d]) * sc[d / 128]);
                memcpy(row + SP_DV, e + 528, 128);
            }
    }
}

/* A sink per query head: random in [-2, 8] (the scores' lse is about
 * ln(topk)), head 0 -inf (no sink), head 1 +inf (out 0) when h_q > 2. */
static inline void sp_add_sink(sp_problem *p, uint64_t seed) {
    uint64_t s = seed;
    p->sink = malloc(sizeof(float) * (size_t)p->h_q);
    for (int32_t h = 0; h < p->h_q; h++)
        p->sink[h] = (float)(-2.0 + 10.0 * sp_uniform(&s));
    if (p->h_q > 2) {
        p->sink[0] = -INFINITY;
        p->sink[1] = INFINITY;
    }
}

/*
 * An extra cache of etopk-long lists, page size epage, rows padded by 16
 * bytes (so its strides differ from the main cache's), one row in four NaN
 * (never listed); lists as sp_make's (skips, repeats, with `lengths`
 * extra_topk_length random in [0, etopk], entries past it never read); the
 * FP8 form quantized like the main cache.
 */
static inline void sp_add_extra(sp_problem *p, int32_t etopk, int32_t epage, int lengths,
                                double skip, uint64_t seed) {
    uint64_t s = seed;
    const int32_t h_kv = p->h_kv;
    p->etopk = etopk;
    p->epage = epage;
    const int64_t want = (int64_t)etopk + 8;
    /* whole 64-slot groups too, so that the quantizer can write every slot */
    p->e_num_blocks = ((want + epage - 1) / epage + 1 + 63) / 64 * 64;
    const int64_t slots = p->e_num_blocks * epage;
    p->ekc_ld = (int64_t)h_kv * SP_DQK + 8;
    p->ekc = malloc(sizeof(uint16_t) * (size_t)(slots * p->ekc_ld));
    unsigned char *live = malloc((size_t)slots);
    int64_t n_live = 0;
    int32_t nan_slot = SP_PAST_LENGTH;
    for (int64_t sl = 0; sl < slots; sl++) {
        live[sl] = sp_next(&s) % 4 != 0;
        n_live += live[sl];
        if (!live[sl] && nan_slot == SP_PAST_LENGTH)
            nan_slot = (int32_t)sl;
        for (int64_t d = 0; d < p->ekc_ld; d++)
            p->ekc[sl * p->ekc_ld + d] = live[sl] ? sp_value(&s) : SP_NAN_ROW;
    }
    cr_assert_gt(n_live, 0);
    int32_t *live_list = malloc(sizeof(int32_t) * (size_t)n_live);
    for (int64_t sl = 0, k = 0; sl < slots; sl++)
        if (live[sl])
            live_list[k++] = (int32_t)sl;
    p->etopk_length = NULL;
    if (lengths) {
        p->etopk_length = malloc(sizeof(int32_t) * (size_t)(p->b + 1));
        for (int64_t i = 0; i < p->b; i++) {
            const uint64_t r = sp_next(&s) % 5;
            p->etopk_length[i] =
                r == 0 ? 0 : r == 1 ? etopk : (int32_t)(sp_next(&s) % (uint64_t)(etopk + 1));
        }
    }
    p->eindices = malloc(sizeof(int32_t) * (size_t)(p->b * p->s_q * etopk + 1));
    for (int64_t r = 0; r < p->b * p->s_q; r++) {
        const int32_t n = p->etopk_length ? p->etopk_length[r / p->s_q] : etopk;
        for (int32_t j = 0; j < etopk; j++) {
            int32_t *e = &p->eindices[r * etopk + j];
            if (j >= n)
                *e = j % 2 ? nan_slot : SP_PAST_LENGTH;
            else if (sp_uniform(&s) < skip)
                *e = -1;
            else if (j > 0 && sp_next(&s) % 8 == 0 && p->eindices[r * etopk + j - 1] >= 0)
                *e = p->eindices[r * etopk + j - 1];
            else
                *e = live_list[sp_next(&s) % (uint64_t)n_live];
        }
    }
    free(live);
    free(live_list);
    p->e_token_stride = p->ekc_ld;
    p->e_block_stride = epage * p->e_token_stride;
    p->ekc8 = NULL;
    if (p->kv_fp8 == 2) {
        p->ekc8 = sp_model1_quantize(p->ekc, p->ekc_ld, p->e_num_blocks, epage);
        p->e_token_stride = SP_M1_TOKEN;
        p->e_block_stride = sp_m1_page_bytes(epage);
    } else if (p->kv_fp8) {
        const int64_t ld8 = (int64_t)h_kv * SP_ENTRY + 16;
        p->ekc8 = malloc((size_t)(slots * ld8));
        int64_t *map = malloc(sizeof(int64_t) * (size_t)slots);
        for (int64_t sl = 0; sl < slots; sl++)
            map[sl] = sl;
        const dinf_status st = dinf_mla_quantize_kvcache_fp8(
            p->ekc, slots, h_kv, p->ekc_ld, map, p->ekc8, slots / 64, 64, 64 * ld8, ld8, NULL);
        cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
        free(map);
        p->e_token_stride = ld8;
        p->e_block_stride = epage * ld8;
        for (int64_t sl = 0; sl < slots; sl++)
            for (int32_t hk = 0; hk < h_kv; hk++) {
                const uint8_t *e = p->ekc8 + sl * ld8 + (int64_t)hk * SP_ENTRY;
                uint16_t *row = p->ekc + sl * p->ekc_ld + (int64_t)hk * SP_DQK;
                float sc[4];
                memcpy(sc, e + 512, sizeof sc);
                for (int d = 0; d < SP_DV; d++)
                    row[d] = dinf__bf16_from_f32(dinf__f32_from_e4m3(e[d]) * sc[d / 128]);
                memcpy(row + SP_DV, e + 528, 128);
            }
    }
}

/* Bytes of the caches as the calls read them (for device copies). */
static inline size_t sp_cache_bytes(const sp_problem *p) {
    const int64_t slots = p->num_blocks * p->page;
    return p->kv_fp8 == 2 ? (size_t)(p->num_blocks * p->block_stride)
           : p->kv_fp8    ? (size_t)(slots * p->h_kv * SP_ENTRY)
                          : sizeof(uint16_t) * (size_t)(slots * p->h_kv * SP_DQK);
}
static inline size_t sp_extra_bytes(const sp_problem *p) {
    const int64_t e_slots = p->e_num_blocks * p->epage;
    return p->kv_fp8 == 2 ? (size_t)(p->e_num_blocks * p->e_block_stride)
           : p->kv_fp8    ? (size_t)(e_slots * p->e_token_stride)
                          : sizeof(uint16_t) * (size_t)(e_slots * p->ekc_ld);
}

static inline void sp_free(sp_problem *p) {
    free(p->sink);
    free(p->ekc);
    free(p->ekc8);
    free(p->eindices);
    free(p->etopk_length);
    free(p->q);
    free(p->kc);
    free(p->kc8);
    free(p->indices);
    free(p->topk_length);
    free(p->out);
    free(p->lse);
}

static inline void sp_poison(sp_problem *p) {
    for (int64_t i = 0; i < p->b * p->s_q * p->h_q * SP_DV; i++)
        p->out[i] = SP_POISON;
    for (int64_t i = 0; i < p->b * p->s_q * p->h_q; i++)
        p->lse[i] = NAN;
}

static inline int32_t sp_parts(const sp_problem *p, int32_t num_sms) {
    int32_t parts = 0;
    cr_assert_eq(dinf_mla_num_sm_parts(p->h_q / p->h_kv, p->h_kv, num_sms, &parts), DINF_STATUS_OK);
    return parts;
}

/* The float64 reference: out rounded to bf16 as upstream does, lse natural log. */
static inline void sp_reference(const sp_problem *p, double *ref_out, double *ref_lse) {
    const int32_t hpk = p->h_q / p->h_kv;
    /* the keys of one position: the main list's, then the extra list's */
    const int32_t most = p->topk + p->etopk;
    double *sc = malloc(sizeof(double) * (size_t)most);
    const uint16_t **rows = malloc(sizeof(uint16_t *) * (size_t)most);
    for (int64_t b = 0; b < p->b; b++)
        for (int32_t t = 0; t < p->s_q; t++) {
            const int64_t r = b * p->s_q + t;
            const int32_t n1 = p->topk_length ? p->topk_length[b] : p->topk;
            const int32_t n2 = p->etopk == 0 ? 0 : p->etopk_length ? p->etopk_length[b] : p->etopk;
            for (int32_t h = 0; h < p->h_q; h++) {
                const int32_t hk = h / hpk;
                const uint16_t *qv = p->q + (r * p->h_q + h) * sp_qd(p);
                double *o = ref_out + (r * p->h_q + h) * SP_DV;
                double *l = ref_lse + (b * p->h_q + h) * p->s_q + t;
                for (int d = 0; d < SP_DV; d++)
                    o[d] = 0;
                double mx = -INFINITY;
                for (int32_t j = 0; j < n1 + n2; j++) {
                    const int32_t slot = j < n1 ? p->indices[r * p->topk + j]
                                                : p->eindices[r * p->etopk + j - n1];
                    sc[j] = -INFINITY;
                    rows[j] = NULL;
                    if (slot < 0)
                        continue;
                    rows[j] = j < n1 ? p->kc + ((int64_t)slot * p->h_kv + hk) * SP_DQK
                                     : p->ekc + (int64_t)slot * p->ekc_ld + (int64_t)hk * SP_DQK;
                    double dot = 0;
                    for (int d = 0; d < sp_qd(p); d++)
                        dot += (double)dinf__f32_from_bf16(qv[d]) * dinf__f32_from_bf16(rows[j][d]);
                    sc[j] = dot * p->scale;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                if (mx == -INFINITY) {
                    *l = INFINITY;
                    continue;
                }
                double sum = 0;
                for (int32_t j = 0; j < n1 + n2; j++)
                    sum += sc[j] == -INFINITY ? 0 : exp(sc[j] - mx);
                *l = mx + log(sum);
                /* the sink joins the denominator only: weights exp(S - lse') */
                const double sink = p->sink ? p->sink[h] : -INFINITY;
                const double den = sink == -INFINITY ? *l
                                   : sink == INFINITY ? INFINITY
                                   : mx + log(sum + exp(sink - mx));
                for (int32_t j = 0; j < n1 + n2; j++) {
                    if (!rows[j])
                        continue;
                    const double w = exp(sc[j] - den);
                    for (int d = 0; d < SP_DV; d++)
                        o[d] += w * dinf__f32_from_bf16(rows[j][d]);
                }
                for (int d = 0; d < SP_DV; d++)
                    o[d] = dinf__f32_from_bf16(dinf__bf16_from_f32((float)o[d]));
            }
        }
    free(rows);
    free(sc);
}

/* The upstream (FlashMLA HEAD) test's check: per element abs or rel,
 * inf/NaN positions equal, and the cosine difference over all elements
 * (also the dense suite's, tests/mla/test_mla.c). */
static inline void sp_check_close(const char *what, const char *params, const double *ref, int64_t n,
                           const uint16_t *got_bf16, const float *got_f32, double abs_tol,
                           double rel_tol, double cos_tol) {
    double xy = 0, xx_yy = 0;
    for (int64_t i = 0; i < n; i++) {
        const double g = got_bf16 ? dinf__f32_from_bf16(got_bf16[i]) : got_f32[i];
        const double r = ref[i];
        if (!isfinite(r) || !isfinite(g)) {
            cr_assert(g == r, "%s [%s]: element %lld got %g, reference %g", what, params,
                      (long long)i, g, r);
            continue;
        }
        const double err = fabs(g - r);
        cr_assert(err <= abs_tol || err <= rel_tol * fabs(r),
                  "%s [%s]: element %lld got %.9g, reference %.9g", what, params, (long long)i, g, r);
        xy += g * r;
        xx_yy += g * g + r * r;
    }
    const double cos_diff = xx_yy == 0 ? 0 : 1 - 2 * xy / xx_yy;
    cr_assert_leq(cos_diff, cos_tol, "%s [%s]: cos_diff %g", what, params, cos_diff);
}

static inline void sp_check_reference(const sp_problem *p, const char *params) {
    const int64_t rows = p->b * p->s_q * p->h_q;
    double *ref_out = malloc(sizeof(double) * (size_t)(rows * SP_DV + 1));
    double *ref_lse = malloc(sizeof(double) * (size_t)(rows + 1));
    sp_reference(p, ref_out, ref_lse);
    sp_check_close("out", params, ref_out, rows * SP_DV, p->out, NULL, 8e-4, 2.01 / 128, 5e-6);
    sp_check_close("lse", params, ref_lse, rows, NULL, p->lse, 1e-6, 8.01 / 65536, 5e-6);
    free(ref_out);
    free(ref_lse);
}

/*
 * Plan (on exec's place) and decode with the given pointers (host or device
 * copies of the problem's arrays). out/lse are the problem's own on the CPU.
 */
typedef struct sp_args {
    const uint16_t *q;
    const void *kc; /* bf16 or fp8 */
    const int32_t *indices, *topk_length;
    int32_t *meta, *splits;
    void *ws;
    size_t ws_bytes;
    uint16_t *out;
    float *lse;
    /* the extras' arrays (NULL where the problem has none) */
    const float *sink;
    const void *ekc; /* bf16 or fp8 */
    const int32_t *eindices, *etopk_length;
} sp_args;

/* The problem's extras with a's pointers; NULL when it has none. */
static inline const dinf_mla_sparse_extras *sp_extras(const sp_problem *p, const sp_args *a,
                                                      dinf_mla_sparse_extras *ex) {
    if (!p->sink && p->etopk == 0)
        return NULL;
    *ex = (dinf_mla_sparse_extras){.size = sizeof *ex, .attn_sink = a->sink};
    if (p->etopk > 0) {
        ex->extra_topk = p->etopk;
        ex->extra_topk_length = a->etopk_length;
        ex->extra_indices = a->eindices;
        ex->extra_k_cache = a->ekc;
        ex->extra_num_blocks = p->e_num_blocks;
        ex->extra_page_block_size = p->epage;
        ex->extra_kv_block_stride = p->e_block_stride;
        ex->extra_kv_token_stride = p->e_token_stride;
    }
    return ex;
}

/* The problem's host arrays as sp_args (plan, workspace and outputs unset). */
static inline sp_args sp_host_args(const sp_problem *p) {
    return (sp_args){.q = p->q,
                     .kc = p->kv_fp8 ? (const void *)p->kc8 : (const void *)p->kc,
                     .indices = p->indices,
                     .topk_length = p->topk_length,
                     .out = p->out,
                     .lse = p->lse,
                     .sink = p->sink,
                     .ekc = p->kv_fp8 ? (const void *)p->ekc8 : (const void *)p->ekc,
                     .eindices = p->eindices,
                     .etopk_length = p->etopk_length};
}

static inline dinf_status sp_decode(const sp_problem *p, const sp_args *a, int32_t parts,
                             const dinf_exec *exec) {
    dinf_mla_sparse_extras ex_storage;
    const dinf_mla_sparse_extras *ex = sp_extras(p, a, &ex_storage);
    return p->kv_fp8
               ? dinf_mla_sparse_decode_with_kvcache_fp8(
                     a->q, p->b, p->s_q, p->h_q, sp_qd(p), (const uint8_t *)a->kc, p->num_blocks,
                     p->page, p->h_kv, p->block_stride, p->token_stride, a->indices, p->topk,
                     a->topk_length, SP_DV, a->meta, parts, a->splits, p->scale, a->ws,
                     a->ws_bytes, a->out, a->lse, ex, exec)
               : dinf_mla_sparse_decode_with_kvcache(
                     a->q, p->b, p->s_q, p->h_q, SP_DQK, (const uint16_t *)a->kc, p->num_blocks,
                     p->page, p->h_kv, p->block_stride, p->token_stride, a->indices, p->topk,
                     a->topk_length, SP_DV, a->meta, parts, a->splits, p->scale, a->ws,
                     a->ws_bytes, a->out, a->lse, ex, exec);
}

/* The whole CPU call: metadata, workspace, decode into p->out / p->lse. */
static inline dinf_status sp_run_cpu(sp_problem *p, int32_t parts, int32_t threads) {
    int32_t *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
    int32_t *splits = malloc(sizeof(int32_t) * (size_t)(p->b * p->s_q + 1));
    sp_args a = sp_host_args(p);
    dinf_mla_sparse_extras ex_storage;
    dinf_status st = dinf_mla_get_sparse_metadata(p->topk_length, p->b, p->s_q, p->topk, parts, meta,
                                                  splits, sp_extras(p, &a, &ex_storage), NULL);
    cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_exec exec = DINF_EXEC_CPU_INIT;
    exec.num_threads = threads;
    size_t ws_bytes = 0;
    cr_assert_eq(dinf_mla_workspace_size(p->b * p->s_q, 1, p->h_q, parts, &ws_bytes, &exec),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    void *ws = aligned_alloc(64, ws_bytes ? (ws_bytes + 63) / 64 * 64 : 64);
    a.meta = meta;
    a.splits = splits;
    a.ws = ws;
    a.ws_bytes = ws_bytes;
    st = sp_decode(p, &a, parts, &exec);
    free(ws);
    free(meta);
    free(splits);
    return st;
}

#endif
