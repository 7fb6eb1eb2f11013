/*
 * The GPU planners' per-thread work, host-device (kernels/ep/ep_kernels.cu
 * runs one rank / one expert per thread; tests/ep_gpu/test_ep_gpu_cpu.c runs
 * the same functions one after another and compares every output with the
 * CPU planners of lib/ep/ep_cpu.c, the oracle). Positions come from walking
 * the tokens (then slots) in ascending order, as the CPU does, so the plans
 * are identical whatever the thread count. Not installed.
 */
#ifndef DINF_EP_PLAN_HD_H
#define DINF_EP_PLAN_HD_H

#include "ep_hd.h"

/* Normal mode, rank r's column of the terms [N][R]: (r, position in r's
 * segment) for every token with an expert on r, -1 otherwise. Returns r's
 * token count. */
DINF_HD int32_t dinf__ep_plan_rank_column(const int64_t *topk, int64_t num_tokens,
                                          int32_t num_topk, int32_t num_ranks,
                                          int32_t experts_per_rank, int32_t r, int64_t *terms) {
    int32_t count = 0;
    for (int64_t t = 0; t < num_tokens; t++)
        terms[t * num_ranks + r] =
            dinf__ep_token_in_rank(topk + t * num_topk, num_topk, r, experts_per_rank)
                ? dinf__ep_pack(r, count++)
                : (int64_t)-1;
    return count;
}

/* send_offsets [R + 1] from the per-rank counts. */
DINF_HD void dinf__ep_plan_offsets(const int32_t *per_rank, int32_t num_ranks, int64_t *offsets) {
    offsets[0] = 0;
    for (int32_t r = 0; r < num_ranks; r++)
        offsets[r + 1] = offsets[r] + per_rank[r];
}

/* Rank r's send rows: send_rows[offsets[r] + position] = token. */
DINF_HD void dinf__ep_plan_rank_rows(const int64_t *terms, int64_t num_tokens, int32_t num_ranks,
                                     int32_t r, const int64_t *offsets, int32_t *send_rows) {
    for (int64_t t = 0; t < num_tokens; t++) {
        const int64_t term = terms[t * num_ranks + r];
        if (term != -1)
            send_rows[offsets[r] + dinf__ep_unpack_lo(term)] = (int32_t)t;
    }
}

/* Low latency: next[e] = first position of expert e's selections in its
 * rank's segment (experts of a rank ascending), offsets [R + 1]. */
DINF_HD void dinf__ep_ll_bases(const int32_t *count, int32_t num_ranks, int32_t experts_per_rank,
                               int64_t *next, int64_t *offsets) {
    offsets[0] = 0;
    for (int32_t r = 0; r < num_ranks; r++) {
        int64_t pos = 0;
        for (int32_t l = 0; l < experts_per_rank; l++) {
            const int64_t e = (int64_t)r * experts_per_rank + l;
            next[e] = pos;
            pos += count[e];
        }
        offsets[r + 1] = offsets[r] + pos;
    }
}

/* Low latency, expert e (its rank's segment starts at offsets[e / L], its
 * own selections at position first): terms and send rows of its selections,
 * tokens then slots ascending. num_tokens * num_topk < 2^31. */
DINF_HD void dinf__ep_ll_expert_walk(const int64_t *topk, int64_t num_tokens, int32_t num_topk,
                                     int32_t e, int32_t experts_per_rank, const int64_t *offsets,
                                     int64_t first, int64_t *terms, int32_t *send_rows) {
    const int32_t r = e / experts_per_rank;
    const int64_t base = offsets[r];
    int64_t pos = first;
    for (int32_t t = 0; t < (int32_t)num_tokens; t++)
        for (int32_t k = 0; k < num_topk; k++) {
            const int64_t i = (int64_t)t * num_topk + k;
            if (topk[i] == e) {
                terms[i] = dinf__ep_pack(r, pos);
                send_rows[base + pos] = t;
                pos++;
            }
        }
}

#endif /* DINF_EP_PLAN_HD_H */
