/*
 * The host-device index math of lib/ep/ep_hd.h, which the CUDA kernels of the
 * GPU transports reuse: expert -> rank, local ids, per-rank deduplication,
 * the rank prefix matrix, term / layout-range packing at the extremes, the
 * low-latency row and M-major scale indices, and the accumulation step.
 * Each against a direct statement of the rule.
 */
#include "ep/ep_hd.h"

#include <criterion/criterion.h>

Test(ep_hd, expert_ranks_and_local_ids) {
    for (int32_t L = 1; L <= 5; L++)
        for (int64_t e = -1; e < 6 * L; e++) {
            const int32_t r = dinf__ep_rank_of_expert(e, L);
            cr_assert_eq(r, e < 0 ? -1 : (int32_t)(e / L), "e=%lld L=%d", (long long)e, L);
            for (int32_t rank = 0; rank < 6; rank++) {
                const int64_t local = dinf__ep_local_expert(e, rank, L);
                cr_assert_eq(local, e >= 0 && r == rank ? e - (int64_t)rank * L : -1,
                             "e=%lld rank=%d L=%d", (long long)e, rank, L);
            }
        }
}

Test(ep_hd, first_slot_of_rank_deduplicates) {
    /* L = 2: experts 0,1 -> rank 0; 2,3 -> rank 1; 4,5 -> rank 2 */
    const int64_t row[6] = {3, -1, 2, 0, 5, 1};
    const int want[6] = {1, 0, 0, 1, 1, 0};
    for (int k = 0; k < 6; k++)
        cr_assert_eq(dinf__ep_first_slot_of_rank(row, k, 2), want[k], "slot %d", k);
    cr_assert(dinf__ep_token_in_rank(row, 6, 0, 2) && dinf__ep_token_in_rank(row, 6, 1, 2) &&
              dinf__ep_token_in_rank(row, 6, 2, 2) && !dinf__ep_token_in_rank(row, 6, 3, 2));
    cr_assert(!dinf__ep_token_in_rank(row, 1, 0, 2), "only the first slot (expert 3, rank 1)");
}

Test(ep_hd, prefix_matrix_and_alignment) {
    /* 3 ranks; rpm[i][j] = tokens sent to j by ranks 0..i */
    const int32_t rpm[9] = {1, 2, 3, 5, 7, 9, 6, 11, 9};
    cr_assert_eq(dinf__ep_recv_begin(rpm, 3, 0, 1), 0);
    cr_assert_eq(dinf__ep_recv_begin(rpm, 3, 1, 1), 2);
    cr_assert_eq(dinf__ep_recv_begin(rpm, 3, 2, 2), 9);
    for (int64_t a = 1; a <= 9; a++)
        for (int64_t v = 0; v < 40; v++) {
            const int64_t r = dinf__ep_align_up(v, a);
            cr_assert(r >= v && r - v < a && r % a == 0, "v=%lld a=%lld", (long long)v,
                      (long long)a);
        }
}

Test(ep_hd, packing_round_trips_at_the_extremes) {
    const int64_t his[] = {0, 1, 7, 1023, INT32_MAX};
    const int64_t los[] = {0, 1, 12345, INT32_MAX, (int64_t)UINT32_MAX};
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < 5; j++) {
            const int64_t p = dinf__ep_pack(his[i], los[j]);
            cr_assert_neq(p, -1, "a packed term is never the 'none' value");
            cr_assert_eq(dinf__ep_unpack_hi(p), his[i]);
            cr_assert_eq((uint32_t)dinf__ep_unpack_lo(p), (uint32_t)los[j]);
            if (los[j] <= INT32_MAX)
                cr_assert_eq(p, (his[i] << 32) | los[j], "upstream's (begin << 32) | count");
        }
}

Test(ep_hd, low_latency_indices) {
    const int64_t M = 6, KB = 3, SR = dinf__ep_ll_scale_rows(M);
    cr_assert_eq(SR, 8);
    cr_assert_eq(dinf__ep_ll_scale_rows(8), 8);
    cr_assert_eq(dinf__ep_ll_scale_rows(1), 4);
    /* every (l, kb, row) has its own slot inside [L][KB][SR] and rows of one
     * (l, kb) are contiguous (M-major) */
    uint8_t seen[2 * 3 * 8] = {0};
    for (int64_t l = 0; l < 2; l++)
        for (int64_t kb = 0; kb < KB; kb++)
            for (int64_t row = 0; row < M; row++) {
                const int64_t i = dinf__ep_ll_scale_index(l, kb, row, KB, SR);
                cr_assert(i >= 0 && i < 2 * KB * SR);
                cr_assert_eq(seen[i]++, 0);
                cr_assert_eq(i, (l * KB + kb) * SR + row);
            }
    cr_assert_eq(dinf__ep_ll_row(2, M, 5), 17);
}

Test(ep_hd, accumulation_is_weight_times_value_then_add) {
    const float acc = 1.25f, w = 0.3f;
    const uint16_t v = dinf__bf16_from_f32(-2.5f);
    volatile float product = w * -2.5f; /* rounded to float32 first: no FMA */
    cr_assert_eq(dinf__ep_acc_bf16(acc, v, w), acc + product);
    cr_assert_eq(dinf__ep_acc_bf16(acc, v, 1.0f), acc - 2.5f);
}
