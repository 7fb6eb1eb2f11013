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

/*
 * Keys of a sparse request with an extra cache (mla.h, "Sparse decode"):
 * the main list's n1 padded to whole 64-key blocks, then the extra list's
 * n2 (each clamped to [0, DINF_MLA_MAX_TOPK]: only the unchecked device
 * path sees other values, and its request gets NaN without reading).
 */
DINF_HD int32_t dinf__mla_clamp_topk(int32_t n) {
    return n < 0 ? 0 : n > DINF_MLA_MAX_TOPK ? DINF_MLA_MAX_TOPK : n;
}
DINF_HD int32_t dinf__mla_main_span(int32_t n1) {
    return dinf__mla_num_blocks(dinf__mla_clamp_topk(n1)) * DINF_MLA_BLOCK_N;
}
DINF_HD int32_t dinf__mla_sparse_keys(int32_t n1, int32_t n2) {
    return dinf__mla_main_span(n1) + dinf__mla_clamp_topk(n2);
}

/* The key counts the plan splits: request i has lens[i / group] keys
 * (dense: cache_seqlens, group 1; sparse: topk_length, group s_q, request
 * b * s_q + t), or `all` keys each when lens is NULL (sparse without
 * topk_length); with all2 > 0 (a sparse extra cache of extra_topk = all2)
 * dinf__mla_sparse_keys of that and lens2[i / group] (or all2). */
typedef struct dinf__mla_lengths {
    const int32_t *lens;
    int32_t group;
    int32_t all;
    const int32_t *lens2;
    int32_t all2;
} dinf__mla_lengths;

DINF_HD int32_t dinf__mla_length_at(const dinf__mla_lengths *L, int64_t i) {
    const int32_t g = (int32_t)i / L->group; /* i < DINF_MLA_MAX_BATCH */
    const int32_t n = L->lens ? L->lens[g] : L->all;
    if (L->all2 <= 0)
        return n;
    return dinf__mla_sparse_keys(n, L->lens2 ? L->lens2[g] : L->all2);
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
    const dinf__mla_lengths L = {cache_seqlens, 1, 0, 0, 0};
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

/*
 * Attention sink (sparse extras): sink2 = attn_sink[h] * log2(e), or -inf
 * without one. An unsplit row ends with out = acc / (l + 2^(sink2 - m))
 * (FlashMLA's o_scale; l > 0 with running max m; 0 without keys); a split
 * row's combine weighs partial i by 2^(lse2_i - G'), G' the base-2 lse with
 * the sink, while lse keeps G. With sink2 = -inf both are the plain 1 / l
 * and G bit for bit.
 */
DINF_HD float dinf__mla_sink2(const float *attn_sink, int32_t h) {
    return attn_sink ? attn_sink[h] * 1.44269504088896340736f : -INFINITY;
}
DINF_HD float dinf__mla_out_inv(float l, float m, float sink2) {
    if (sink2 == -INFINITY) /* (a constant -inf folds this to 1 / l in the kernels) */
        return l > 0.0f ? 1.0f / l : 0.0f;
    return l > 0.0f ? 1.0f / (l + exp2f(sink2 - m)) : 0.0f;
}
DINF_HD float dinf__mla_lse2_with_sink(float g, float sink2) {
    if (g == -INFINITY || sink2 == -INFINITY)
        return g;
    if (sink2 == INFINITY) /* takes all the weight: out 0 */
        return INFINITY;
    const float mx = g > sink2 ? g : sink2; /* a NaN sink2 gives NaN */
    return mx + log2f(exp2f(g - mx) + exp2f(sink2 - mx));
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

/* ---------------------------------------------------- MODEL1 FP8 cache -- */

/* The scale a ue8m0 exponent byte stands for: 2^(e - 127) (e = 0: the
 * float32 subnormal 2^-127), NaN for 255. */
DINF_HD float dinf__mla_e8m0_scale(uint8_t e) {
    if (e == 255)
        return NAN;
    return dinf__f32_from_bits(e ? (uint32_t)e << 23 : 0x00400000u);
}

/* The exponent byte the MODEL1 quantizer stores for 64 channels whose
 * largest magnitude is amax (NaN if any channel is NaN): scale = the
 * smallest power of two >= max(amax / 448, 1e-4) (exact bit arithmetic
 * after one IEEE division); 255 (NaN) for an infinite or NaN amax. */
DINF_HD uint8_t dinf__mla_model1_scale_exp(float amax) {
    float s = amax / DINF_E4M3_MAX;
    if (s != s || s == INFINITY)
        return 255;
    s = s > 1e-4f ? s : 1e-4f;
    uint32_t u = dinf__f32_bits(s);
    if (u & 0x007fffffu)
        u = (u & 0x7f800000u) + 0x00800000u; /* round up to the next power of two */
    return (uint8_t)(u >> 23); /* s <= 2^128 / 448: below 255 */
}

/*
 * The kernels' FP8 items: a key row is 40 16-byte items. V3.2 entry: item
 * ch < 32 is codes [16 ch, + 16) (2 x 16 bytes of bf16 after dequantizing,
 * at column 16 ch), 32..39 RoPE values [8 (ch - 32), + 8) at column 512 +
 * 8 (ch - 32). MODEL1 row: ch < 28 codes at column 16 ch, 28..35 RoPE at
 * column 448 + 8 (ch - 28), 36..39 zeros at column 512 + 16 (ch - 36)
 * (2 x 16 bytes: the 576-wide tile's last 64 columns). Returns the item's
 * kind (0 codes, 1 RoPE, 2 zeros) and its first bf16 column.
 */
#define DINF_MLA_FP8_ITEMS 40
DINF_HD int dinf__mla_fp8_item(int model1, int ch, int *col) {
    const int codes = model1 ? DINF_MLA_MODEL1_NOPE / 16 : DINF_MLA_HEAD_DIM_V / 16;
    if (ch < codes) {
        *col = 16 * ch;
        return 0;
    }
    if (ch < codes + 8) {
        *col = 16 * codes + 8 * (ch - codes);
        return 1;
    }
    *col = DINF_MLA_HEAD_DIM_V + 16 * (ch - codes - 8);
    return 2;
}

/* The MODEL1 quantizer's multiplier for the codes of a group with scale
 * byte e and largest magnitude amax: 1 / scale, or as upstream's x / scale
 * for the groups its scale cannot represent: a NaN amax gives NaN codes, an
 * infinite one 0 codes (NaN for the infinite values). */
DINF_HD float dinf__mla_model1_inv_scale(float amax, uint8_t e) {
    if (e == 255)
        return amax != amax ? amax : 0.0f;
    return 1.0f / dinf__mla_e8m0_scale(e);
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
    /* Sparse extras (dinf_mla_sparse_extras): extra_topk > 0 adds the extra
     * cache's keys after the main list's, padded to 64 (dinf__mla_sparse_keys);
     * attn_sink [h_q] or NULL (either decode may carry one). */
    const void *extra_k_cache;
    const int32_t *extra_indices;     /* [batch][s_q][extra_topk] */
    const int32_t *extra_topk_length; /* [batch / sparse_s_q] or NULL */
    int64_t extra_num_blocks, extra_block_stride, extra_token_stride;
    int32_t extra_topk, extra_page;
    const float *attn_sink;
    /* MODEL1 cache (sparse FP8 decode with head_dim 512): q rows of 512
     * values; kv_token_stride and extra_token_stride are the data rows' 576
     * bytes (the API's 584 is the format's), a row's scale bytes at page
     * byte page_size * 576 + row * 8 (dinf__mla_model1_scale_off). */
    int32_t model1;
} dinf__mla_params;

/* Elements per q row: 576, or 512 for the MODEL1 cache. */
DINF_HD int32_t dinf__mla_q_dim(const dinf__mla_params *p) {
    return p->model1 ? DINF_MLA_MODEL1_HEAD_DIM : DINF_MLA_HEAD_DIM_QK;
}

/* MODEL1: the byte offset of the scale bytes of the row at data offset off
 * (dinf__mla_slot_loc: page * block stride + row * 576), row `row` of a
 * page of page_size rows. */
DINF_HD int64_t dinf__mla_model1_scale_off(int64_t off, int32_t row, int32_t page_size) {
    return off + (int64_t)(page_size - row) * DINF_MLA_MODEL1_ROW_BYTES + (int64_t)row * 8;
}

/* The main and extra list lengths of sparse request req (b = req / s_q).
 * 32-bit division (requests < DINF_MLA_MAX_BATCH): a 64-bit one is a
 * subroutine call on the GPU. */
DINF_HD int32_t dinf__mla_sparse_n1(const dinf__mla_params *p, int64_t req) {
    return p->topk_length ? p->topk_length[(int32_t)req / p->sparse_s_q] : p->topk;
}
DINF_HD int32_t dinf__mla_sparse_n2(const dinf__mla_params *p, int64_t req) {
    return p->extra_topk_length ? p->extra_topk_length[(int32_t)req / p->sparse_s_q]
                                : p->extra_topk;
}

/*
 * Keys of the plan's request req (dense: cache_seqlens[req]). The _in
 * forms take `sparse` (= p->sparse_s_q > 0) from a caller that knows it at
 * compile time, so that the fast dense kernels carry no sparse code.
 */
DINF_HD int32_t dinf__mla_req_keys_in(const dinf__mla_params *p, int64_t req, int sparse) {
    if (!sparse)
        return p->seqlens[req];
    const int32_t n1 = dinf__mla_sparse_n1(p, req);
    return p->extra_topk > 0 ? dinf__mla_sparse_keys(n1, dinf__mla_sparse_n2(p, req)) : n1;
}
DINF_HD int32_t dinf__mla_req_keys(const dinf__mla_params *p, int64_t req) {
    return dinf__mla_req_keys_in(p, req, p->sparse_s_q > 0);
}

/* A request that cannot be: a negative key count or one past the block
 * table's capacity (dense), a list length outside [0, topk] or
 * [0, extra_topk] (sparse; keys = dinf__mla_req_keys). It gets NaN. */
DINF_HD int dinf__mla_req_keys_bad_in(const dinf__mla_params *p, int64_t req, int32_t keys,
                                      int sparse) {
    if (!sparse)
        return keys < 0 || (int64_t)keys > p->max_blocks * p->page;
    const int32_t n1 = p->extra_topk > 0 ? dinf__mla_sparse_n1(p, req) : keys;
    if (n1 < 0 || n1 > p->topk)
        return 1;
    if (p->extra_topk <= 0)
        return 0;
    const int32_t n2 = dinf__mla_sparse_n2(p, req);
    return n2 < 0 || n2 > p->extra_topk;
}
DINF_HD int dinf__mla_req_keys_bad(const dinf__mla_params *p, int64_t req, int32_t keys) {
    return dinf__mla_req_keys_bad_in(p, req, keys, p->sparse_s_q > 0);
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

/* Dense: where key `key` of a request lives, given the request's row of
 * the block table (block_table + req * max_blocks): page table[key / page],
 * row key % page. Returns 0 (found, *off = page * kv_block_stride + row *
 * kv_token_stride, in cache elements) or -1 (a page outside [0,
 * num_blocks): the request gets NaN). */
DINF_HD int dinf__mla_key_loc(const dinf__mla_params *p, const int32_t *table, int32_t key,
                              int64_t *off) {
    const int64_t pg = table[key / p->page];
    if (pg < 0 || pg >= p->num_blocks)
        return -1;
    *off = pg * p->kv_block_stride + (int64_t)(key % p->page) * p->kv_token_stride;
    return 0;
}

/*
 * Sparse: the keys of 64-key block blk of request req (0 <= blk <
 * dinf__mla_num_blocks(dinf__mla_req_keys(p, req)), a request that is not
 * dinf__mla_req_keys_bad) all come from one list. Returns its slots for the
 * block's keys (table[r] is key blk * 64 + r) with *valid = how many of
 * them are listed (rows r >= *valid are skipped: past the list, or the
 * main list's padding) and *extra = 0 (main cache) or 1 (extra cache).
 */
DINF_HD const int32_t *dinf__mla_sparse_block(const dinf__mla_params *p, int64_t req,
                                              int32_t blk, int32_t *valid, int *extra) {
    const int32_t j0 = blk * DINF_MLA_BLOCK_N;
    int32_t n1 = dinf__mla_sparse_n1(p, req), span = 0x7fffffff;
    if (p->extra_topk > 0)
        span = dinf__mla_main_span(n1);
    int32_t v;
    const int32_t *t;
    if (j0 < span) {
        *extra = 0;
        v = n1 - j0;
        t = p->block_table + req * p->topk + j0;
    } else {
        *extra = 1;
        v = dinf__mla_sparse_n2(p, req) - (j0 - span);
        t = p->extra_indices + req * p->extra_topk + (j0 - span);
    }
    *valid = v < 0 ? 0 : v > DINF_MLA_BLOCK_N ? DINF_MLA_BLOCK_N : v;
    return t;
}

/* Sparse: where slot `slot` of the main (extra = 0) or extra cache lives:
 * 0 (found, *off = page * block stride + row * token stride of that cache,
 * in its elements, and *row = the row in its page), 1 (slot < 0: skipped,
 * adds nothing) or -1 (past the cache: the request gets NaN). */
DINF_HD int dinf__mla_slot_loc(const dinf__mla_params *p, int extra, int32_t slot, int64_t *off,
                               int32_t *row) {
    if (slot < 0)
        return 1;
    const int32_t page_size = extra ? p->extra_page : p->page;
    const int64_t pg = slot / page_size;
    if (pg >= (extra ? p->extra_num_blocks : p->num_blocks))
        return -1;
    *row = slot % page_size;
    *off = pg * (extra ? p->extra_block_stride : p->kv_block_stride) +
           (int64_t)*row * (extra ? p->extra_token_stride : p->kv_token_stride);
    return 0;
}

/* The cache a sparse block reads (dinf__mla_sparse_block's *extra). */
DINF_HD const void *dinf__mla_cache(const dinf__mla_params *p, int extra) {
    return extra ? p->extra_k_cache : p->k_cache;
}

#endif
