/*
 * MLA decode, host and device: the split-KV scheduler, the causal key
 * limit and the log-sum-exp merge of split partials. One definition serves
 * the CPU implementation, the (future) CUDA kernels and the tests. Not
 * installed. Layouts and field meanings: include/deepinfra/mla.h.
 */
#ifndef DINF_MLA_HD_H
#define DINF_MLA_HD_H

#include "../core/numeric_hd.h" /* DINF_HD */
#include "deepinfra/mla.h"

#include <math.h>
#include <stdint.h>

/* 64-token scheduling blocks of a request of seqlen keys (seqlen >= 0). */
DINF_HD int32_t dinf__mla_num_blocks(int32_t seqlen) {
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
 * The split-KV plan (FlashMLA's get_mla_metadata, serial part): each
 * request costs nblk + FIXED blocks; every part gets a budget of
 * payload = ceil(total / parts) + FIXED and walks the requests in order,
 * taking a whole request when the rest of it fits (remain >= left + FIXED),
 * else remain - FIXED blocks of it (a split) and ending there.
 * Writes meta [parts][8] and num_splits [batch + 1]. Returns 0, or -1 if
 * some work was left unassigned (cannot happen; the caller reports it as an
 * internal error). Sizes were validated by the caller.
 */
DINF_HD int dinf__mla_plan(const int32_t *cache_seqlens, int64_t batch, int32_t num_parts,
                           int32_t *meta, int32_t *num_splits) {
    const int64_t fixed = DINF_MLA_FIXED_OVERHEAD_BLOCKS;
    int64_t total = 0;
    for (int64_t i = 0; i < batch; i++)
        total += dinf__mla_num_blocks(cache_seqlens[i]) + fixed;
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
            const int64_t left = dinf__mla_num_blocks(cache_seqlens[req]) - blk;
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

/*
 * Merge n split partials of one query row. lse2[i * stride] is partial i's
 * log-sum-exp in base 2 of the scaled scores (-inf: no keys in that piece).
 * With M = max lse2 and G = M + log2(sum 2^(lse2_i - M)), writes
 * weights[i] = 2^(lse2_i - G) (partial i's share; out = sum weights[i] * O_i)
 * and returns the natural-log lse G * ln 2, or +inf with all weights 0 when
 * every partial is empty.
 */
DINF_HD float dinf__mla_combine_weights(const float *lse2, int64_t stride, int32_t n,
                                        float *weights) {
    float max_lse = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        max_lse = lse2[i * stride] > max_lse ? lse2[i * stride] : max_lse;
    if (max_lse == -INFINITY) {
        for (int32_t i = 0; i < n; i++)
            weights[i] = 0.0f;
        return INFINITY;
    }
    float sum = 0.0f;
    for (int32_t i = 0; i < n; i++)
        sum += exp2f(lse2[i * stride] - max_lse);
    const float global = log2f(sum) + max_lse;
    for (int32_t i = 0; i < n; i++)
        weights[i] = exp2f(lse2[i * stride] - global);
    return global * 0.69314718055994530942f;
}

#endif
