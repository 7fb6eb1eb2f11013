/*
 * EP index math shared by the host protocol, the CPU transport and the CUDA
 * kernels (DINF_HD = __host__ __device__ under nvcc). Everything that decides
 * WHERE a row goes lives here, so the CPU tests exercise the same arithmetic
 * the GPU transports run. Not installed.
 *
 * Vocabulary (see include/deepinfra/ep.h for the semantics):
 *   R ranks, E experts, L = E / R local experts, expert e lives on rank e / L.
 *   Normal mode, rank i -> rank r: the "segment" of i for r is the list of
 *   i's tokens t with is_token_in_rank[t][r], ascending; send_slot[t][r] is
 *   t's position in it (-1: not sent). On r the segment lands at rows
 *   [recv_begin(i), recv_begin(i) + count) with recv_begin from the
 *   rank prefix matrix.
 *   Low-latency mode, rank i -> rank r: the segment is i's selections (t, k)
 *   of experts on r, ordered by local expert l, then t, then k. On r, the
 *   j-th selection of local expert l from source i lands at row
 *   l * M + begin[l][i] + j of the masked layout, M = R * T, begin[l][i] =
 *   sum over sources s < i of their selections of l.
 *   A combine "term" names one received row: (src rank, position in src's
 *   segment), packed in an int64 as (src << 32) | pos, or -1 for none.
 */
#ifndef DINF_EP_HD_H
#define DINF_EP_HD_H

#include "../core/numeric_hd.h"

#include <stdint.h>

/* Rank holding global expert e (L experts per rank), -1 for e < 0. */
DINF_HD int32_t dinf__ep_rank_of_expert(int64_t e, int32_t experts_per_rank) {
    return e < 0 ? -1 : (int32_t)(e / experts_per_rank);
}

/* Local id of global expert e on rank, or -1 when e lives elsewhere (or is -1). */
DINF_HD int64_t dinf__ep_local_expert(int64_t e, int32_t rank, int32_t experts_per_rank) {
    const int64_t first = (int64_t)rank * experts_per_rank;
    return e >= first && e < first + experts_per_rank ? e - first : -1;
}

/* 1 when slot k of a token's top-k row is the FIRST slot selecting an
 * expert of its rank (per-rank deduplication), 0 otherwise (or for -1). */
DINF_HD int dinf__ep_first_slot_of_rank(const int64_t *row, int32_t k, int32_t experts_per_rank) {
    const int32_t r = dinf__ep_rank_of_expert(row[k], experts_per_rank);
    if (r < 0)
        return 0;
    for (int32_t j = 0; j < k; j++)
        if (dinf__ep_rank_of_expert(row[j], experts_per_rank) == r)
            return 0;
    return 1;
}

/* 1 when the token's row selects an expert of rank r. */
DINF_HD int dinf__ep_token_in_rank(const int64_t *row, int32_t num_topk, int32_t r,
                                   int32_t experts_per_rank) {
    for (int32_t k = 0; k < num_topk; k++)
        if (dinf__ep_rank_of_expert(row[k], experts_per_rank) == r)
            return 1;
    return 0;
}

/* v rounded up to a multiple of alignment (>= 1). */
DINF_HD int64_t dinf__ep_align_up(int64_t v, int64_t alignment) {
    return (v + alignment - 1) / alignment * alignment;
}

/* First receive row of source src's tokens on rank dst, from upstream's
 * inclusive rank prefix matrix rpm [R][R]. */
DINF_HD int64_t dinf__ep_recv_begin(const int32_t *rank_prefix_matrix, int32_t num_ranks,
                                    int32_t src, int32_t dst) {
    return src == 0 ? 0 : rank_prefix_matrix[(int64_t)(src - 1) * num_ranks + dst];
}

/* Combine terms and low-latency layout ranges: (hi << 32) | lo, lo < 2^32. */
DINF_HD int64_t dinf__ep_pack(int64_t hi, int64_t lo) {
    return (int64_t)(((uint64_t)hi << 32) | (uint64_t)(uint32_t)lo);
}
DINF_HD int32_t dinf__ep_unpack_hi(int64_t v) { return (int32_t)((uint64_t)v >> 32); }
DINF_HD int32_t dinf__ep_unpack_lo(int64_t v) { return (int32_t)(uint32_t)((uint64_t)v & 0xffffffffu); }

/* Low-latency masked layout, M = R * T rows per local expert. */
DINF_HD int64_t dinf__ep_ll_row(int64_t local_expert, int64_t m_rows, int64_t row) {
    return local_expert * m_rows + row;
}
/* Padded rows of the M-major scale layout (dinf_fp8_scale_layout_mn_major). */
DINF_HD int64_t dinf__ep_ll_scale_rows(int64_t m_rows) { return (m_rows + 3) / 4 * 4; }
/* Element index of scale block kb of row `row` of local expert l in
 * recv_x_scales [L][num_k_blocks][scale_rows]. */
DINF_HD int64_t dinf__ep_ll_scale_index(int64_t local_expert, int64_t kb, int64_t row,
                                        int64_t num_k_blocks, int64_t scale_rows) {
    return (local_expert * num_k_blocks + kb) * scale_rows + row;
}

/* Float32 accumulation of one combine term, as every transport does it:
 * acc += weight * float(bf16 value), a rounded multiply then a rounded add,
 * NEVER contracted to an FMA (weight 1: a plain add, no rounding difference
 * because x * 1.0f == x). The host side is built with -ffp-contract=off;
 * device code spells the two roundings out so nvcc cannot contract them
 * whatever --fmad says. Upstream's low-latency combine kernel lets nvcc
 * contract to an FMA, so its weighted sums may differ from ours in the last
 * bfloat16 ulp (see include/deepinfra/ep.h). */
DINF_HD float dinf__ep_acc_bf16(float acc, uint16_t v, float weight) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(acc, __fmul_rn(weight, dinf__f32_from_bf16(v)));
#else
    return acc + weight * dinf__f32_from_bf16(v);
#endif
}

#endif /* DINF_EP_HD_H */
