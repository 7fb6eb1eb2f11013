/*
 * MLA decode, host and device: the split-KV scheduler, the causal key
 * limit, the log-sum-exp merge of split partials, the FP8 cache entry and
 * the kernels' parameter block. One definition serves the CPU
 * implementation, the CUDA kernels (kernels/mla) and the tests. Not
 * installed. Layouts and field meanings: include/deepinfra/mla.h.
 */
#ifndef DINF_MLA_HD_H
#define DINF_MLA_HD_H

#include "../core/numeric_hd.h" /* DINF_HD */
#include "deepinfra/mla.h"

#include <math.h>
#include <stdint.h>

/* 64-token scheduling blocks of a request of seqlen keys (a negative
 * length, which only the unchecked device path can see, counts as 0). */
DINF_HD int32_t dinf__mla_num_blocks(int32_t seqlen) {
    if (seqlen <= 0)
        return 0;
    return seqlen / DINF_MLA_BLOCK_N + (seqlen % DINF_MLA_BLOCK_N != 0);
}

/*
 * Keys query position t (0 <= t < s_q) may attend to: s_k, or with the
 * bottom-right aligned causal mask s_k - (s_q - 1 - t), never below 0.
 */
DINF_HD int32_t dinf__mla_key_limit(int32_t s_k, int32_t s_q, int32_t t, int32_t causal) {
    const int32_t limit = causal ? s_k - (s_q - 1 - t) : s_k;
    return limit > 0 ? limit : 0;
}

/* The key counts the plan splits: request i has lens[i / group] keys
 * (dense: cache_seqlens, group 1; sparse: topk_length, group s_q, request
 * b * s_q + t), or `all` keys each when lens is NULL (sparse without
 * topk_length). */
typedef struct dinf__mla_lengths {
    const int32_t *lens;
    int32_t group;
    int32_t all;
} dinf__mla_lengths;

DINF_HD int32_t dinf__mla_length_at(const dinf__mla_lengths *L, int64_t i) {
    return L->lens ? L->lens[(int32_t)i / L->group] : L->all; /* i < DINF_MLA_MAX_BATCH */
}

/*
 * The split-KV plan (FlashMLA's get_mla_metadata, serial part): each
 * request costs nblk + FIXED blocks; every part gets a budget of
 * payload = ceil(total / parts) + FIXED and walks the requests in order,
 * taking a whole request when the rest of it fits (remain >= left + FIXED),
 * else remain - FIXED blocks of it (a split) and ending there.
 * Writes meta [parts][8] and num_splits [batch + 1]. Returns 0, or -1 if
 * some work was left unassigned (cannot happen; the caller reports it as an
 * internal error). Sizes were validated by the caller.
 */
DINF_HD int dinf__mla_plan_lengths(const dinf__mla_lengths *L, int64_t batch, int32_t num_parts,
                                   int32_t *meta, int32_t *num_splits) {
    const int64_t fixed = DINF_MLA_FIXED_OVERHEAD_BLOCKS;
    int64_t total = 0;
    for (int64_t i = 0; i < batch; i++)
        total += dinf__mla_num_blocks(dinf__mla_length_at(L, i)) + fixed;
    const int64_t payload = total / num_parts + (total % num_parts != 0) + fixed;

    int64_t req = 0;         /* current request */
    int64_t blk = 0;         /* its first block not yet assigned */
    int32_t split_idx = 0;   /* its pieces so far */
    int32_t cum_splits = 0;
    num_splits[0] = 0;
    for (int32_t p = 0; p < num_parts; p++) {
        int32_t *m = meta + (int64_t)p * DINF_MLA_METADATA_INTS;
        for (int f = 0; f < DINF_MLA_METADATA_INTS; f++)
            m[f] = 0;
        if (req >= batch) {
            m[DINF_MLA_META_BEGIN_REQ] = -1;
            m[DINF_MLA_META_END_REQ] = -1;
            continue;
        }
        m[DINF_MLA_META_BEGIN_REQ] = (int32_t)req;
        m[DINF_MLA_META_BEGIN_BLOCK] = (int32_t)blk;
        m[DINF_MLA_META_BEGIN_SPLIT] = split_idx;
        int64_t remain = payload;
        int64_t end_req = req, end_blk = blk;
        while (req < batch) {
            const int64_t left = dinf__mla_num_blocks(dinf__mla_length_at(L, req)) - blk;
            if (remain >= left + fixed) { /* the rest of the request fits */
                remain -= left + fixed;
                end_req = req;
                end_blk = blk + left;
                cum_splits += split_idx + 1;
                num_splits[req + 1] = cum_splits;
                req++;
                blk = 0;
                split_idx = 0;
            } else {
                if (remain - fixed > 0) { /* take part of it: a split */
                    blk += remain - fixed;
                    end_req = req;
                    end_blk = blk;
                    split_idx++;
                }
                break;
            }
        }
        m[DINF_MLA_META_END_REQ] = (int32_t)end_req;
        m[DINF_MLA_META_END_BLOCK] = (int32_t)end_blk;
    }
    if (req < batch)
        return -1;
    /* A request is cut when it has more than one piece. */
    for (int32_t p = 0; p < num_parts; p++) {
        int32_t *m = meta + (int64_t)p * DINF_MLA_METADATA_INTS;
        const int32_t b0 = m[DINF_MLA_META_BEGIN_REQ], b1 = m[DINF_MLA_META_END_REQ];
        if (b0 < 0)
            continue;
        m[DINF_MLA_META_FIRST_SPLIT] = num_splits[b0 + 1] - num_splits[b0] > 1;
        m[DINF_MLA_META_LAST_SPLIT] = num_splits[b1 + 1] - num_splits[b1] > 1;
    }
    return 0;
}

/* The dense plan: request i has cache_seqlens[i] keys. */
DINF_HD int dinf__mla_plan(const int32_t *cache_seqlens, int64_t batch, int32_t num_parts,
                           int32_t *meta, int32_t *num_splits) {
    const dinf__mla_lengths L = {cache_seqlens, 1, 0};
    return dinf__mla_plan_lengths(&L, batch, num_parts, meta, num_splits);
}

/*
 * The log-sum-exp of n split partials in base 2 (lse2[i * stride], -inf for
 * an empty piece): G = M + log2(sum 2^(lse2_i - M)), M = max lse2_i; -inf
 * when every piece is empty. Partial i's weight is 2^(lse2_i - G).
 */
DINF_HD float dinf__mla_combine_lse2(const float *lse2, int64_t stride, int32_t n) {
    float max_lse = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        max_lse = lse2[i * stride] > max_lse ? lse2[i * stride] : max_lse;
    if (max_lse == -INFINITY)
        return -INFINITY;
    float sum = 0.0f;
    for (int32_t i = 0; i < n; i++)
        sum += exp2f(lse2[i * stride] - max_lse);
    return log2f(sum) + max_lse;
}

/* ------------------------------------------------------- FP8 cache entry -- */

/*
 * Scale of 128 channels whose largest magnitude is amax: the smallest
 * power of two >= max(amax, 1e-4) / 448 (exact bit arithmetic after one IEEE
 * division, so the CPU and the GPU agree). An infinite or NaN amax gives an
 * infinite or NaN scale (the codes are then NaN or 0).
 */
DINF_HD float dinf__mla_fp8_scale(float amax) {
    const float a = amax > 1e-4f ? amax : (amax != amax ? amax : 1e-4f);
    const float s = a / DINF_E4M3_MAX;
    uint32_t u = dinf__f32_bits(s);
    if ((u & 0x7f800000u) == 0x7f800000u) /* inf or NaN */
        return s;
    if (u & 0x007fffffu)
        u = (u & 0x7f800000u) + 0x00800000u; /* round up to the next power of two */
    return dinf__f32_from_bits(u);
}

/* One code: e4m3(x / scale), with x / scale == x * (1 / scale) exactly (power of two). */
DINF_HD uint8_t dinf__mla_fp8_code(float x, float inv_scale) {
    const float v = x * inv_scale;
    return dinf__e4m3_from_f32(v > DINF_E4M3_MAX ? DINF_E4M3_MAX
                               : v < -DINF_E4M3_MAX ? -DINF_E4M3_MAX : v);
}

/*
 * The value of one latent channel of an FP8 entry: e4m3(code) * scale,
 * rounded to bfloat16 (nearest even), as float32. The kernels run bf16 tensor
 * cores, so they round the product to bf16; the CPU rounds the same way so
 * that both agree for any scale. With the power-of-two scales the quantizer
 * writes the product is already a bf16 value and the rounding changes nothing.
 */
DINF_HD float dinf__mla_fp8_value(uint8_t code, float scale) {
    return dinf__f32_from_bf16(dinf__bf16_from_f32(dinf__f32_from_e4m3(code) * scale));
}

/* ------------------------------------------------------- kernel params -- */

/* Everything the CUDA decode needs, checked by lib/mla/mla.c (shapes,
 * strides, pointers); the values behind the device pointers are not. */
typedef struct dinf__mla_params {
    const uint16_t *q;            /* [batch][s_q][h_q][576] bf16 */
    const void *k_cache;          /* bf16 elements or FP8 entry bytes, see kv_fp8 */
    const int32_t *block_table;   /* [batch][max_blocks] */
    const int32_t *seqlens;       /* [batch] */
    const int32_t *meta;          /* [parts][8] */
    const int32_t *num_splits;    /* [batch + 1] */
    float *lse2_acc;              /* [batch + parts][h_kv][q_rows] base-2 partial lse */
    float *o_acc;                 /* [batch + parts][h_kv][q_rows][512] partial outputs */
    uint16_t *out;                /* [batch][s_q][h_q][512] bf16 */
    float *lse;                   /* [batch][h_q][s_q] natural log */
    int64_t batch, num_blocks, max_blocks;
    int64_t kv_block_stride, kv_token_stride; /* in elements of the cache (bf16 or bytes) */
    int32_t s_q, h_q, h_kv, heads_per_kv, q_rows, m_blocks, page, causal, parts, kv_fp8;
    float scale_log2; /* softmax_scale * log2(e) */
    /* FP8 cache, fast and seesaw rungs: how many blocks of the CTA's ring
     * order the producer prefetches into L2 ahead of the block it fills
     * (0: no prefetch; DINF_MLA_FP8_PREFETCH, lib/mla/mla_fast_hd.h) */
    int32_t fp8_prefetch;
    /* Sparse decode (sparse_s_q > 0): the plan's requests are the (b, t)
     * query positions, r = b * sparse_s_q + t, each with s_q = 1 and
     * q_rows = heads_per_kv; block_table points at indices [r][topk]
     * (max_blocks = topk) holding slots instead of pages; the key count
     * is topk_length[b] or topk (dinf__mla_req_keys), no causal mask. */
    const int32_t *topk_length; /* [batch / sparse_s_q] or NULL */
    int32_t topk, sparse_s_q;
} dinf__mla_params;

/* Keys of the plan's request req (dense: cache_seqlens[req]). */
DINF_HD int32_t dinf__mla_req_keys(const dinf__mla_params *p, int64_t req) {
    if (p->sparse_s_q <= 0)
        return p->seqlens[req];
    /* 32-bit division (requests < DINF_MLA_MAX_BATCH): a 64-bit one is a
     * subroutine call on the GPU */
    return p->topk_length ? p->topk_length[(int32_t)req / p->sparse_s_q] : p->topk;
}

/* A key count the request cannot have: negative, past the block table's
 * capacity (dense) or past topk (sparse). Such a request gets NaN. */
DINF_HD int dinf__mla_req_keys_bad(const dinf__mla_params *p, int32_t keys) {
    if (keys < 0)
        return 1;
    return p->sparse_s_q > 0 ? keys > p->topk : (int64_t)keys > p->max_blocks * p->page;
}

/* Index of lse for query row (req, head h, position tq of the request):
 * [batch][h_q][s_q]; a sparse request r = (b, t) writes lse[b][h][t]. */
DINF_HD int64_t dinf__mla_lse_index(const dinf__mla_params *p, int64_t req, int32_t h,
                                    int32_t tq) {
    if (p->sparse_s_q > 0) {
        const int32_t b = (int32_t)req / p->sparse_s_q, t = (int32_t)req % p->sparse_s_q;
        return ((int64_t)b * p->h_q + h) * p->sparse_s_q + t;
    }
    return (req * p->h_q + h) * p->s_q + tq;
}

/* Where key `key` of a request lives, given the request's row of the table
 * (block_table + req * max_blocks): dense, page table[key / page] and row
 * key % page; sparse, slot = table[key], page slot / page, row slot % page.
 * Returns 0 (found), 1 (a sparse slot < 0: masked, adds nothing) or -1 (a
 * page outside [0, num_blocks): the request gets NaN). */
DINF_HD int dinf__mla_key_loc(const dinf__mla_params *p, const int32_t *table, int32_t key,
                              int64_t *page, int32_t *row) {
    int64_t pg;
    if (p->sparse_s_q > 0) {
        const int32_t slot = table[key];
        if (slot < 0)
            return 1;
        pg = slot / p->page;
        *row = slot % p->page;
    } else {
        pg = table[key / p->page];
        *row = key % p->page;
    }
    if (pg < 0 || pg >= p->num_blocks)
        return -1;
    *page = pg;
    return 0;
}

#endif
