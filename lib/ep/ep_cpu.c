/*
 * CPU implementations of the EP local-work ops (ep_transport.h): layout,
 * normal and low-latency planning, top-k localisation, low-latency receive
 * rows. They serve the threads transport and are the oracle of the GPU
 * kernels. All index math comes from ep_hd.h. Sequential per rank: they are
 * O(num_tokens * num_topk) and the ranks already run on their own threads.
 */
#include "ep_hd.h"
#include "ep_transport.h"

#include <string.h>

/* Smallest flat index of an entry outside [-1, num_experts), or -1. */
static int64_t first_bad_entry(const int64_t *topk_idx, int64_t count, int32_t num_experts) {
    for (int64_t i = 0; i < count; i++)
        if (topk_idx[i] < -1 || topk_idx[i] >= num_experts)
            return i;
    return -1;
}

void dinf__ep_cpu_layout(const int64_t *topk_idx, int64_t num_tokens, int32_t num_topk,
                         int32_t num_experts, int32_t num_ranks, int32_t *num_tokens_per_rank,
                         int32_t *num_tokens_per_expert, uint8_t *is_token_in_rank) {
    const int32_t experts_per_rank = num_experts / num_ranks;
    memset(num_tokens_per_rank, 0, (size_t)num_ranks * sizeof *num_tokens_per_rank);
    memset(num_tokens_per_expert, 0, (size_t)num_experts * sizeof *num_tokens_per_expert);
    for (int64_t t = 0; t < num_tokens; t++) {
        const int64_t *row = topk_idx + t * num_topk;
        uint8_t *in_rank = is_token_in_rank ? is_token_in_rank + t * num_ranks : NULL;
        if (in_rank)
            memset(in_rank, 0, (size_t)num_ranks);
        for (int32_t k = 0; k < num_topk; k++) {
            if (row[k] < 0)
                continue;
            num_tokens_per_expert[row[k]]++;
            if (dinf__ep_first_slot_of_rank(row, k, experts_per_rank)) {
                const int32_t r = dinf__ep_rank_of_expert(row[k], experts_per_rank);
                num_tokens_per_rank[r]++;
                if (in_rank)
                    in_rank[r] = 1;
            }
        }
    }
}

dinf_status dinf__ep_cpu_plan_dispatch(dinf__ep_transport *t, const char *func,
                                       const int64_t *topk_idx, int64_t num_tokens,
                                       int32_t num_topk, int32_t num_experts,
                                       const int32_t *num_tokens_per_rank,
                                       const int32_t *num_tokens_per_expert,
                                       const uint8_t *is_token_in_rank, dinf__ep_plan *plan,
                                       int64_t *bad_entry, int64_t *layout_mismatches,
                                       const dinf__place *place) {
    (void)func;
    (void)place;
    const int32_t num_ranks = t->num_ranks, experts_per_rank = num_experts / num_ranks;
    *layout_mismatches = 0;
    *bad_entry = first_bad_entry(topk_idx, num_tokens * num_topk, num_experts);
    if (*bad_entry >= 0)
        return DINF_STATUS_OK;
    int32_t *per_rank = plan->num_tokens_per_rank, *per_expert = plan->num_tokens_per_expert;
    memset(per_rank, 0, (size_t)num_ranks * sizeof *per_rank);
    memset(per_expert, 0, (size_t)num_experts * sizeof *per_expert);
    for (int64_t tok = 0; tok < num_tokens; tok++) {
        const int64_t *row = topk_idx + tok * num_topk;
        int64_t *terms = plan->terms + tok * num_ranks;
        for (int32_t r = 0; r < num_ranks; r++)
            terms[r] = -1;
        for (int32_t k = 0; k < num_topk; k++) {
            if (row[k] < 0)
                continue;
            per_expert[row[k]]++;
            if (dinf__ep_first_slot_of_rank(row, k, experts_per_rank)) {
                const int32_t r = dinf__ep_rank_of_expert(row[k], experts_per_rank);
                terms[r] = dinf__ep_pack(r, per_rank[r]++);
            }
        }
    }
    plan->send_offsets[0] = 0;
    for (int32_t r = 0; r < num_ranks; r++)
        plan->send_offsets[r + 1] = plan->send_offsets[r] + per_rank[r];
    for (int64_t tok = 0; tok < num_tokens; tok++)
        for (int32_t r = 0; r < num_ranks; r++) {
            const int64_t term = plan->terms[tok * num_ranks + r];
            if (term != -1)
                plan->send_rows[plan->send_offsets[r] + dinf__ep_unpack_lo(term)] = (int32_t)tok;
        }
    if (num_tokens_per_rank) {
        int64_t mismatches = 0;
        for (int32_t r = 0; r < num_ranks; r++)
            mismatches += num_tokens_per_rank[r] != per_rank[r];
        for (int32_t e = 0; e < num_experts; e++)
            mismatches += num_tokens_per_expert[e] != per_expert[e];
        for (int64_t tok = 0; tok < num_tokens; tok++)
            for (int32_t r = 0; r < num_ranks; r++)
                mismatches += (is_token_in_rank[tok * num_ranks + r] != 0) !=
                              (plan->terms[tok * num_ranks + r] != -1);
        *layout_mismatches = mismatches;
    }
    return DINF_STATUS_OK;
}

dinf_status dinf__ep_cpu_localize_topk(dinf__ep_transport *t, const char *func, int64_t *topk_idx,
                                       float *topk_weights, int64_t num_rows, int32_t num_topk,
                                       int32_t num_experts, const dinf__place *place) {
    (void)func;
    (void)place;
    const int32_t experts_per_rank = num_experts / t->num_ranks;
    for (int64_t i = 0; i < num_rows * num_topk; i++) {
        topk_idx[i] = dinf__ep_local_expert(topk_idx[i], t->rank, experts_per_rank);
        if (topk_weights && topk_idx[i] < 0)
            topk_weights[i] = 0.0f;
    }
    return DINF_STATUS_OK;
}

dinf_status dinf__ep_cpu_plan_low_latency(dinf__ep_transport *t, const char *func,
                                          const int64_t *topk_idx, int64_t num_tokens,
                                          int32_t num_topk, int32_t num_experts,
                                          dinf__ep_ll_plan *plan, int64_t *bad_entry,
                                          const dinf__place *place) {
    (void)func;
    (void)place;
    const int32_t num_ranks = t->num_ranks, experts_per_rank = num_experts / num_ranks;
    *bad_entry = first_bad_entry(topk_idx, num_tokens * num_topk, num_experts);
    if (*bad_entry >= 0)
        return DINF_STATUS_OK;
    int32_t *count = plan->num_selections_per_expert;
    memset(count, 0, (size_t)num_experts * sizeof *count);
    for (int64_t i = 0; i < num_tokens * num_topk; i++)
        if (topk_idx[i] >= 0)
            count[topk_idx[i]]++;
    /* scratch[e]: next position of expert e's selections inside its rank's
     * segment (experts of a rank ascending, then tokens, then slots) */
    int64_t *next = plan->scratch;
    plan->send_offsets[0] = 0;
    for (int32_t r = 0; r < num_ranks; r++) {
        int64_t pos = 0;
        for (int32_t l = 0; l < experts_per_rank; l++) {
            const int64_t e = (int64_t)r * experts_per_rank + l;
            next[e] = pos;
            pos += count[e];
        }
        plan->send_offsets[r + 1] = plan->send_offsets[r] + pos;
    }
    for (int64_t tok = 0; tok < num_tokens; tok++)
        for (int32_t k = 0; k < num_topk; k++) {
            const int64_t e = topk_idx[tok * num_topk + k];
            int64_t *term = &plan->terms[tok * num_topk + k];
            if (e < 0) {
                *term = -1;
                continue;
            }
            const int32_t r = dinf__ep_rank_of_expert(e, experts_per_rank);
            const int64_t pos = next[e]++;
            *term = dinf__ep_pack(r, pos);
            plan->send_rows[plan->send_offsets[r] + pos] = (int32_t)tok;
        }
    return DINF_STATUS_OK;
}

dinf_status dinf__ep_cpu_ll_recv_rows(dinf__ep_transport *t, const char *func,
                                      const int64_t *begin, const int64_t *count,
                                      int32_t num_local_experts, int64_t m_rows, int32_t *rows,
                                      const dinf__place *place) {
    (void)func;
    (void)place;
    int64_t j = 0;
    for (int32_t src = 0; src < t->num_ranks; src++)
        for (int32_t l = 0; l < num_local_experts; l++) {
            const int64_t b = begin[(int64_t)l * t->num_ranks + src];
            const int64_t n = count[(int64_t)l * t->num_ranks + src];
            for (int64_t i = 0; i < n; i++)
                rows[j++] = (int32_t)dinf__ep_ll_row(l, m_rows, b + i);
        }
    return DINF_STATUS_OK;
}
