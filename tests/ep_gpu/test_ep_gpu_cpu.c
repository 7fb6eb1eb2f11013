/*
 * The CPU-testable parts of ep's GPU side: the peer-store protocol's
 * host-device math (lib/ep/ep_peer_hd.h: wire rows, symmetric buffer layout,
 * slots, flags, work split), the wire descriptors of all-to-all and reducing
 * steps (lib/ep/ep_wire.c), run-time NCCL loading (lib/ep/ep_nccl.c), and
 * the GPU constructors' argument checks and clean failure without a device
 * (or in a CPU-only build).
 */
#include <deepinfra.h>

#include "ep/ep_cuda.h"
#include "ep/ep_hd.h"
#include "ep/ep_nccl.h"
#include "ep/ep_peer_hd.h"
#include "ep/ep_plan_hd.h"
#include "ep/ep_rows_hd.h"

#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

TestSuite(ep_gpu_cpu, .timeout = 60.0);

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* ------------------------------------------------------------ wire rows -- */

Test(ep_gpu_cpu, wire_layout_aligns_every_field_and_ends_with_the_trailer) {
    uint64_t s = 11;
    for (int iter = 0; iter < 2000; iter++) {
        const int32_t n = (int32_t)(rng_next(&s) % (DINF__EP_MAX_FIELDS + 1));
        int64_t bytes[DINF__EP_MAX_FIELDS], offsets[DINF__EP_MAX_FIELDS];
        int64_t expect = 0;
        for (int32_t i = 0; i < n; i++) {
            bytes[i] = (int64_t)(rng_next(&s) % 20000);
            expect += (bytes[i] + 15) / 16 * 16;
        }
        const int64_t row = dinf__ep_wire_layout(bytes, n, offsets);
        cr_assert_eq(row, expect + 16, "iter %d: row %lld, expected %lld", iter, (long long)row,
                     (long long)(expect + 16));
        for (int32_t i = 0; i < n; i++) {
            cr_assert_eq(offsets[i] % 16, 0);
            const int64_t end = i + 1 < n ? offsets[i + 1] : dinf__ep_wire_trailer(row);
            cr_assert_geq(end - offsets[i], bytes[i], "field %d overlaps the next", (int)i);
            cr_assert_lt(end - offsets[i], bytes[i] + 16, "field %d wastes a 16-byte unit", (int)i);
        }
        cr_assert_eq(dinf__ep_wire_trailer(row) % 16, 0);
    }
}

Test(ep_gpu_cpu, wire_layout_rejects_negative_and_huge_rows) {
    int64_t offsets[2];
    const int64_t neg[] = {16, -1};
    cr_assert_eq(dinf__ep_wire_layout(neg, 2, offsets), -1);
    const int64_t huge[] = {INT32_MAX - 8, 64};
    cr_assert_eq(dinf__ep_wire_layout(huge, 2, offsets), -1);
    const int64_t edge[] = {(int64_t)INT32_MAX / 16 * 16 - 16};
    cr_assert_eq(dinf__ep_wire_layout(edge, 1, offsets), (int64_t)INT32_MAX / 16 * 16);
    cr_assert_eq(dinf__ep_round_up(-5, 16), -1);
    cr_assert_eq(dinf__ep_round_up(INT64_MAX - 3, 16), -1);
    cr_assert_eq(dinf__ep_round_up(17, 16), 32);
}

/* ------------------------------------------------------ symmetric buffer -- */

Test(ep_gpu_cpu, peer_layout_parts_are_aligned_disjoint_and_slots_fit_the_stage) {
    uint64_t s = 5;
    for (int iter = 0; iter < 2000; iter++) {
        const int32_t R = 1 + (int32_t)(rng_next(&s) % 1024);
        const int64_t gather = (int64_t)(rng_next(&s) % 100000);
        const int64_t stage = (int64_t)(rng_next(&s) % (1ull << 36));
        dinf__ep_peer_layout l;
        cr_assert_eq(dinf__ep_peer_layout_init(&l, R, gather, stage), 0);
        const int64_t flags = (int64_t)R * 8;
        cr_assert_eq(l.ready_off, 0);
        cr_assert_geq(l.arrive_off, flags);
        cr_assert_geq(l.sent_off, l.arrive_off + flags);
        cr_assert_geq(l.gather_off, l.sent_off + flags);
        cr_assert_geq(l.gather_bytes, gather);
        cr_assert_geq(l.stage_off, l.gather_off + (int64_t)R * l.gather_bytes);
        cr_assert_eq(l.arrive_off % 256, 0);
        cr_assert_eq(l.sent_off % 256, 0);
        cr_assert_eq(l.gather_off % 256, 0);
        cr_assert_eq(l.stage_off % 256, 0);
        cr_assert_eq(l.slot_bytes % 16, 0);
        cr_assert_leq(l.stage_bytes, stage);
        cr_assert_gt(l.slot_bytes + 16, stage / R - 0, "slot %lld wastes more than 16 bytes of %lld",
                     (long long)l.slot_bytes, (long long)(stage / R));
        cr_assert_geq(l.total_bytes, l.stage_off + l.stage_bytes);
        cr_assert_eq(l.total_bytes % 256, 0);
        /* the last row of the last source ends inside the stage */
        const int64_t row = 16 * (1 + (int64_t)(rng_next(&s) % 64));
        const int64_t rows = l.slot_bytes / row;
        cr_assert(dinf__ep_peer_fits(&l, rows, row));
        cr_assert(!dinf__ep_peer_fits(&l, rows + 1, row));
        if (rows > 0)
            cr_assert_leq(dinf__ep_peer_slot_row(&l, R - 1, rows - 1, row) + row, l.stage_bytes);
    }
}

Test(ep_gpu_cpu, peer_layout_rejects_bad_sizes) {
    dinf__ep_peer_layout l;
    cr_assert_eq(dinf__ep_peer_layout_init(&l, 0, 0, 0), -1);
    cr_assert_eq(dinf__ep_peer_layout_init(&l, 4, -1, 0), -1);
    cr_assert_eq(dinf__ep_peer_layout_init(&l, 4, 0, -1), -1);
    cr_assert_eq(dinf__ep_peer_layout_init(&l, 4, INT64_MAX / 2, 0), -1);
    cr_assert_eq(dinf__ep_peer_layout_init(&l, 4, 0, INT64_MAX - 100), -1);
    cr_assert(!dinf__ep_peer_fits(&l, -1, 16) || 1); /* l unspecified after failure */
    cr_assert_eq(dinf__ep_peer_layout_init(&l, 2, 0, 4096), 0);
    cr_assert(!dinf__ep_peer_fits(&l, -1, 16));
    cr_assert(!dinf__ep_peer_fits(&l, 1, 0));
}

/* Every source's segment of every destination lands in its own slot: no two
 * (source, row) pairs share a byte of a destination's stage. */
Test(ep_gpu_cpu, slots_of_different_sources_never_overlap) {
    dinf__ep_peer_layout l;
    const int32_t R = 8;
    cr_assert_eq(dinf__ep_peer_layout_init(&l, R, 256, 8 * 4096 + 100), 0);
    const int64_t row = 48;
    const int64_t rows = l.slot_bytes / row;
    uint8_t *owner = calloc((size_t)l.stage_bytes, 1);
    for (int32_t src = 0; src < R; src++)
        for (int64_t i = 0; i < rows; i++) {
            const int64_t at = dinf__ep_peer_slot_row(&l, src, i, row);
            for (int64_t b = 0; b < row; b++) {
                cr_assert_eq(owner[at + b], 0, "byte %lld written twice", (long long)(at + b));
                owner[at + b] = (uint8_t)(src + 1);
            }
        }
    free(owner);
}

Test(ep_gpu_cpu, flags_and_sent_words) {
    cr_assert_eq(dinf__ep_arrive_target(1, 16), 16u);
    cr_assert_eq(dinf__ep_arrive_target(1000001, 7), 7000007u);
    /* monotonic: the target of a later step is never reached by an earlier one */
    for (uint64_t step = 1; step < 100; step++)
        for (int32_t b = 1; b <= 16; b++)
            cr_assert_gt(dinf__ep_arrive_target(step + 1, b), dinf__ep_arrive_target(step, b));
    const int64_t w = dinf__ep_sent_word(12345, 7200);
    cr_assert_eq(dinf__ep_unpack_hi(w), 12345);
    cr_assert_eq(dinf__ep_unpack_lo(w), 7200);
    cr_assert_neq(dinf__ep_sent_word(1, 7200), dinf__ep_sent_word(2, 7200));
    cr_assert_neq(dinf__ep_sent_word(1, 7200), dinf__ep_sent_word(1, 7216));
    cr_assert_eq(dinf__ep_sent_word(0, 0), 0);
}

Test(ep_gpu_cpu, source_of_matches_a_linear_scan_with_empty_sources) {
    uint64_t s = 3;
    for (int iter = 0; iter < 500; iter++) {
        const int32_t R = 1 + (int32_t)(rng_next(&s) % 64);
        int64_t offs[65];
        offs[0] = 0;
        for (int32_t p = 0; p < R; p++)
            offs[p + 1] = offs[p] + (rng_next(&s) % 3 == 0 ? 0 : (int64_t)(rng_next(&s) % 9));
        for (int64_t j = 0; j < offs[R]; j++) {
            int32_t want = -1;
            for (int32_t p = 0; p < R; p++)
                if (offs[p] <= j && j < offs[p + 1])
                    want = p;
            cr_assert_eq(dinf__ep_source_of(offs, R, j), want, "iter %d row %lld", iter,
                         (long long)j);
        }
    }
}

/* The kernels' receive address of a grouped field equals the transport's
 * dinf__ep_field_recv_at (the threads oracle's). */
Test(ep_gpu_cpu, recv_split_matches_the_transport_field_address) {
    uint64_t s = 17;
    for (int iter = 0; iter < 20000; iter++) {
        dinf__ep_field f;
        memset(&f, 0, sizeof f);
        f.recv = (void *)(uintptr_t)0x10000;
        f.recv_stride = 4;
        f.recv_elem_stride = 4 * 516;
        f.elem_bytes = 4;
        f.elems = 56;
        f.recv_rows_per_group = rng_next(&s) % 4 == 0 ? 0 : 1 + (int64_t)(rng_next(&s) % 4096);
        f.recv_group_stride = f.recv_elem_stride * f.elems;
        const int64_t q = (int64_t)(rng_next(&s) % (uint64_t)INT32_MAX);
        const int64_t e = (int64_t)(rng_next(&s) % 56);
        int64_t g, r;
        dinf__ep_recv_split(q, f.recv_rows_per_group, &g, &r);
        const char *kernel = (const char *)f.recv + g * f.recv_group_stride + r * f.recv_stride +
                             e * f.recv_elem_stride;
        cr_assert_eq(kernel, dinf__ep_field_recv_at(&f, q, e), "q=%lld rpg=%lld", (long long)q,
                     (long long)f.recv_rows_per_group);
    }
}

/* NCCL stages: what the pack kernel writes for destination p (send-order
 * rows j * row_bytes) is the segment ncclSend sends, and what ncclRecv puts
 * for source p is where the unpack / reduce read row pos of p. Peer stages:
 * the reduce reads where the sender stored. */
Test(ep_gpu_cpu, stage_rows_agree_between_senders_and_receivers) {
    uint64_t s = 23;
    for (int iter = 0; iter < 300; iter++) {
        const int32_t R = 1 + (int32_t)(rng_next(&s) % 16);
        const int64_t row = 16 * (1 + (int64_t)(rng_next(&s) % 100));
        int64_t offs[17];
        offs[0] = 0;
        for (int32_t p = 0; p < R; p++)
            offs[p + 1] = offs[p] + (int64_t)(rng_next(&s) % 6);
        for (int32_t p = 0; p < R; p++)
            for (int64_t pos = 0; pos < offs[p + 1] - offs[p]; pos++) {
                const int64_t nccl = dinf__ep_stage_row(0, offs, p, pos, row);
                /* the unpack kernel's receive-order row j = offs[p] + pos */
                cr_assert_eq(nccl, (offs[p] + pos) * row);
                /* inside ncclRecv's segment for p */
                cr_assert_geq(nccl, offs[p] * row);
                cr_assert_leq(nccl + row, offs[p + 1] * row);
            }
        dinf__ep_peer_layout l;
        cr_assert_eq(dinf__ep_peer_layout_init(&l, R, 0, (int64_t)R * 8 * row + 64), 0);
        for (int32_t p = 0; p < R; p++)
            for (int64_t pos = 0; pos < 8; pos++)
                cr_assert_eq(dinf__ep_stage_row(l.slot_bytes, offs, p, pos, row),
                             dinf__ep_peer_slot_row(&l, p, pos, row));
    }
}

Test(ep_gpu_cpu, copy_unit_is_the_widest_common_alignment) {
    cr_assert_eq(dinf__ep_copy_unit(0x1000, 0x2000, 4096), 16);
    cr_assert_eq(dinf__ep_copy_unit(0x1000, 0x2008, 4096), 8);
    cr_assert_eq(dinf__ep_copy_unit(0x1000, 0x2000, 4100), 4);
    cr_assert_eq(dinf__ep_copy_unit(0x1002, 0x2000, 4096), 2);
    cr_assert_eq(dinf__ep_copy_unit(0x1000, 0x2000, 4097), 1);
    cr_assert_eq(dinf__ep_copy_unit(0x1000, 0x2000, 0), 16);
}

Test(ep_gpu_cpu, blocks_per_rank_and_timeout_budget) {
    cr_assert_eq(dinf__ep_blocks_per_rank(132 * 2, 8), 16);
    cr_assert_eq(dinf__ep_blocks_per_rank(132, 8), 16);
    cr_assert_eq(dinf__ep_blocks_per_rank(100, 8), 12);
    cr_assert_eq(dinf__ep_blocks_per_rank(7, 8), 0);
    cr_assert_eq(dinf__ep_blocks_per_rank(8, 8), 1);
    cr_assert_eq(dinf__ep_blocks_per_rank(100, 0), 0);
    for (int32_t R = 1; R <= 8; R++)
        for (int64_t cap = R; cap < 300; cap++)
            cr_assert_leq((int64_t)dinf__ep_blocks_per_rank(cap, R) * R, cap);
    /* the device budget is wall-time nanoseconds (%globaltimer), not cycles */
    cr_assert_eq(dinf__ep_timeout_ns(100000), 100000000000ll);
    cr_assert_eq(dinf__ep_timeout_ns(1), 1000000);
    cr_assert_eq(dinf__ep_timeout_ns(INT64_MAX / 1000000), INT64_MAX / 1000000 * 1000000);
    cr_assert_eq(dinf__ep_timeout_ns(INT64_MAX / 1000000 + 1), INT64_MAX);
    cr_assert_eq(dinf__ep_timeout_ns(INT64_MAX), INT64_MAX);
    cr_assert_eq(dinf__ep_timeout_ns(0), 0);
    cr_assert_eq(dinf__ep_timeout_ns(-5), 0);
}

Test(ep_gpu_cpu, device_wait_expiry_uses_unsigned_elapsed_time) {
    const int64_t budget = dinf__ep_timeout_ns(300);
    cr_assert_eq(dinf__ep_wait_expired(1000, 1000, budget), 0);
    cr_assert_eq(dinf__ep_wait_expired(1000, 1000 + (uint64_t)budget, budget), 0);
    cr_assert_eq(dinf__ep_wait_expired(1000, 1001 + (uint64_t)budget, budget), 1);
    /* a start near the top of the counter: the difference wraps correctly */
    const uint64_t top = UINT64_MAX - 10;
    cr_assert_eq(dinf__ep_wait_expired(top, top + 100, budget), 0);
    cr_assert_eq(dinf__ep_wait_expired(top, top + (uint64_t)budget + 1, budget), 1);
    /* the saturated budget of a huge timeout never expires within 292 years */
    cr_assert_eq(dinf__ep_wait_expired(0, (uint64_t)INT64_MAX, INT64_MAX), 0);
    cr_assert_eq(dinf__ep_wait_expired(5, 6, 0), 1);
    cr_assert_eq(dinf__ep_wait_expired(5, 5, 0), 0);
}

/* ---------------------------------------------------------- descriptors -- */

Test(ep_gpu_cpu, a2a_step_maps_every_field) {
    static char src[4][64], dst[4][64];
    dinf__ep_a2a a2a;
    memset(&a2a, 0, sizeof a2a);
    a2a.num_fields = 3;
    a2a.fields[0] = (dinf__ep_field){src[0], 1792, dst[0], 1792, 1792, 0, 0, 1792, 1};
    a2a.fields[1] = (dinf__ep_field){src[1], 28, dst[1], 4, 4 * 132, 128, 4 * 132 * 7, 4, 7};
    a2a.fields[2] = (dinf__ep_field){src[2], 24, dst[2], 24, 8, 0, 0, 8, 3};
    int32_t rows[4], src_rows[4];
    a2a.send_rows = rows;
    a2a.recv_rows = rows + 1;
    a2a.recv_src_row = src_rows;
    dinf__ep_step s;
    cr_assert_eq(dinf__ep_step_from_a2a("t", &a2a, &s), DINF_STATUS_OK);
    cr_assert_eq(s.kind, DINF__EP_STEP_A2A);
    cr_assert_eq(s.num_fields, 3);
    cr_assert_eq(s.f[0].offset, 0);
    cr_assert_eq(s.f[0].bytes, 1792);
    cr_assert_eq(s.f[1].offset, 1792);
    cr_assert_eq(s.f[1].bytes, 28);
    cr_assert_eq(s.f[2].offset, 1792 + 32);
    cr_assert_eq(s.f[2].bytes, 24);
    cr_assert_eq(s.row_bytes, 1792 + 32 + 32 + 16);
    cr_assert_eq(s.f[1].recv_elem_stride, 4 * 132);
    cr_assert_eq(s.f[1].recv_rows_per_group, 128);
    cr_assert_eq(s.f[1].recv_group_stride, 4 * 132 * 7);
    cr_assert_eq(s.f[1].send, src[1]);
    cr_assert_eq(s.f[2].recv, dst[2]);
    cr_assert_eq(s.send_rows, rows);
    cr_assert_eq(s.recv_rows, rows + 1);
    cr_assert_eq(s.recv_src_row, src_rows);
}

Test(ep_gpu_cpu, a2a_step_rejects_what_the_kernels_cannot_move) {
    static char buf[64];
    dinf__ep_a2a a2a;
    memset(&a2a, 0, sizeof a2a);
    a2a.num_fields = 1;
    a2a.fields[0] = (dinf__ep_field){buf, 12, buf, 12, 6, 0, 0, 3, 4}; /* strided 3-byte elements */
    dinf__ep_step s;
    cr_assert_eq(dinf__ep_step_from_a2a("t", &a2a, &s), DINF_STATUS_INTERNAL);
    cr_assert(strstr(dinf_last_error(), "3-byte"), "%s", dinf_last_error());
    a2a.fields[0] = (dinf__ep_field){buf, 12, buf, 12, 3, 0, 0, 3, 4}; /* contiguous: fine */
    cr_assert_eq(dinf__ep_step_from_a2a("t", &a2a, &s), DINF_STATUS_OK);
    a2a.num_fields = DINF__EP_MAX_FIELDS + 1;
    cr_assert_eq(dinf__ep_step_from_a2a("t", &a2a, &s), DINF_STATUS_INTERNAL);
    a2a.num_fields = 1;
    a2a.fields[0] = (dinf__ep_field){buf, 0, buf, 0, 8, 0, 0, 8, INT32_MAX / 4};
    cr_assert_eq(dinf__ep_step_from_a2a("t", &a2a, &s), DINF_STATUS_INTERNAL);
}

Test(ep_gpu_cpu, reduce_step_maps_fields_terms_and_biases) {
    static char in0[8], in1[8], out0[8], out1[8], b0[8], b1[8];
    int64_t terms[4];
    float weights[4];
    int32_t rows[4];
    dinf__ep_reduce red;
    memset(&red, 0, sizeof red);
    red.num_fields = 2;
    red.fields[0] = (dinf__ep_reduce_field){in0, 14336, DINF__EP_ELEM_BF16, out0, 14336,
                                            DINF__EP_ELEM_BF16, 7168, 1, b0, b1};
    red.fields[1] = (dinf__ep_reduce_field){in1, 32, DINF__EP_ELEM_F32, out1, 32,
                                            DINF__EP_ELEM_F32, 8, 0, NULL, NULL};
    red.send_rows = rows;
    red.num_out_rows = 77;
    red.num_terms = 4;
    red.terms = terms;
    red.weights = weights;
    dinf__ep_step s;
    cr_assert_eq(dinf__ep_step_from_reduce("t", &red, &s), DINF_STATUS_OK);
    cr_assert_eq(s.kind, DINF__EP_STEP_REDUCE);
    cr_assert_eq(s.f[0].bytes, 14336);
    cr_assert_eq(s.f[1].offset, 14336);
    cr_assert_eq(s.f[1].bytes, 32);
    cr_assert_eq(s.row_bytes, 14336 + 32 + 16);
    cr_assert_eq(s.in_elem[0], DINF__EP_ELEM_BF16);
    cr_assert_eq(s.in_elem[1], DINF__EP_ELEM_F32);
    cr_assert_eq(s.red_elems[0], 7168);
    cr_assert_eq(s.red_elems[1], 8);
    cr_assert_eq(s.apply_weights[0], 1);
    cr_assert_eq(s.apply_weights[1], 0);
    cr_assert_eq(s.bias0[0], b0);
    cr_assert_eq(s.bias1[0], b1);
    cr_assert_null(s.bias0[1]);
    cr_assert_eq(s.out[1], out1);
    cr_assert_eq(s.out_stride[0], 14336);
    cr_assert_eq(s.num_out_rows, 77);
    cr_assert_eq(s.num_terms, 4);
    cr_assert_eq(s.terms, terms);
    cr_assert_eq(s.weights, weights);
    cr_assert_eq(s.send_rows, rows);
    red.fields[1].in_elem = 7;
    cr_assert_eq(dinf__ep_step_from_reduce("t", &red, &s), DINF_STATUS_INTERNAL);
    red.fields[1].in_elem = DINF__EP_ELEM_F32;
    red.num_fields = 3;
    cr_assert_eq(dinf__ep_step_from_reduce("t", &red, &s), DINF_STATUS_INTERNAL);
    red.num_fields = 2;
    red.num_terms = -1;
    cr_assert_eq(dinf__ep_step_from_reduce("t", &red, &s), DINF_STATUS_INTERNAL);
}

/* ------------------------------------------------------------ reduction -- */

/* The 8-wide bf16 path of the reduction gives the bits of the scalar path
 * (forced by a misaligned output), for every lane count, with weights,
 * biases, missing terms and both stage layouts. */
Test(ep_gpu_cpu, vector_and_scalar_reductions_agree_bitwise) {
    uint64_t s = 41;
    for (int iter = 0; iter < 200; iter++) {
        const int32_t R = 1 + (int32_t)(rng_next(&s) % 8), T = 1 + (int32_t)(rng_next(&s) % 8);
        const int32_t H = 8 * (1 + (int32_t)(rng_next(&s) % 40));
        const int64_t field_bytes[1] = {(int64_t)H * 2};
        int64_t off[1];
        const int64_t row = dinf__ep_wire_layout(field_bytes, 1, off);
        int64_t recv_offsets[9];
        recv_offsets[0] = 0;
        for (int32_t p = 0; p < R; p++)
            recv_offsets[p + 1] = recv_offsets[p] + 1 + (int64_t)(rng_next(&s) % 5);
        const int slots = (int)(rng_next(&s) % 2);
        const int64_t slot = slots ? 8 * row : 0;
        const int64_t stage_bytes = slots ? R * slot : recv_offsets[R] * row;
        char *stage = aligned_alloc(16, (size_t)stage_bytes);
        for (int64_t i = 0; i < stage_bytes / 2; i++)
            ((uint16_t *)stage)[i] = (uint16_t)(0x3c00 + rng_next(&s) % 0x0800) ^
                                     (uint16_t)(rng_next(&s) % 2 ? 0x8000 : 0);
        int64_t *terms = malloc((size_t)T * R * 8);
        float *weights = malloc((size_t)T * R * 4);
        for (int32_t i = 0; i < T * R; i++) {
            const int32_t src = (int32_t)(rng_next(&s) % R);
            const int64_t n = recv_offsets[src + 1] - recv_offsets[src];
            terms[i] = rng_next(&s) % 4 == 0 ? -1 : dinf__ep_pack(src, (int64_t)(rng_next(&s) % n));
            weights[i] = (float)(rng_next(&s) % 1000) / 999.0f;
        }
        uint16_t *bias = aligned_alloc(16, (size_t)T * H * 2);
        for (int64_t i = 0; i < (int64_t)T * H; i++)
            bias[i] = (uint16_t)(0x3000 + rng_next(&s) % 0x1000);
        uint16_t *out_vec = aligned_alloc(16, (size_t)T * H * 2);
        char *mis = aligned_alloc(16, (size_t)T * H * 2 + 16);
        uint16_t *out_scalar = (uint16_t *)(mis + 2); /* misaligned: the scalar path */
        dinf__ep_step st;
        memset(&st, 0, sizeof st);
        st.kind = DINF__EP_STEP_REDUCE;
        st.num_ranks = R;
        st.num_fields = 1;
        st.row_bytes = row;
        st.f[0].offset = off[0];
        st.in_elem[0] = st.out_elem[0] = DINF__EP_ELEM_BF16;
        st.red_elems[0] = H;
        st.apply_weights[0] = (int32_t)(rng_next(&s) % 2);
        st.out_stride[0] = (int64_t)H * 2;
        st.bias0[0] = rng_next(&s) % 2 ? bias : NULL;
        st.num_terms = R;
        st.terms = terms;
        st.weights = weights;
        st.recv_offsets = recv_offsets;
        const int32_t lanes = 1 + (int32_t)(rng_next(&s) % 5);
        for (int64_t t = 0; t < T; t++)
            for (int32_t lane = 0; lane < lanes; lane++) {
                st.out[0] = out_vec;
                cr_assert_eq(dinf__ep_reduce_row(&st, t, stage, slot, lane, lanes), 0);
                st.out[0] = out_scalar;
                cr_assert_eq(dinf__ep_reduce_row(&st, t, stage, slot, lane, lanes), 0);
            }
        cr_assert(memcmp(out_vec, out_scalar, (size_t)T * H * 2) == 0, "iter %d", iter);
        /* a term outside its segment is reported on both paths */
        terms[0] = dinf__ep_pack(0, recv_offsets[1]);
        st.out[0] = out_vec;
        cr_assert_eq(dinf__ep_reduce_row(&st, 0, stage, slot, 0, 1), 1);
        st.out[0] = out_scalar;
        cr_assert_eq(dinf__ep_reduce_row(&st, 0, stage, slot, 0, 1), 1);
        free(stage);
        free(terms);
        free(weights);
        free(bias);
        free(out_vec);
        free(mis);
    }
}

/* ------------------------------------------------------------- planners -- */

/* Random top-k rows: distinct experts per token, some -1. */
static void random_topk(uint64_t *s, int64_t *topk, int64_t N, int32_t K, int32_t E) {
    for (int64_t t = 0; t < N; t++)
        for (int32_t k = 0; k < K; k++) {
            int64_t e;
            int dup;
            do {
                e = (int64_t)(rng_next(s) % (uint64_t)E);
                dup = 0;
                for (int32_t j = 0; j < k; j++)
                    dup |= topk[t * K + j] == e;
            } while (dup);
            topk[t * K + k] = e;
        }
    for (int64_t i = 0; i < N * K; i++)
        if (rng_next(s) % 5 == 0)
            topk[i] = -1;
}

/* The GPU planners' per-thread steps, run one thread after another (in
 * reverse, to show order independence), equal the CPU planner (the oracle). */
Test(ep_gpu_cpu, gpu_normal_planner_steps_equal_the_cpu_planner) {
    uint64_t s = 31;
    for (int iter = 0; iter < 60; iter++) {
        const int32_t R = 1 + (int32_t)(rng_next(&s) % 16), L = 1 + (int32_t)(rng_next(&s) % 8);
        const int32_t E = R * L, K = 1 + (int32_t)(rng_next(&s) % (E < 8 ? E : 8));
        const int64_t N = (int64_t)(rng_next(&s) % 300);
        int64_t *topk = malloc((size_t)(N * K + 1) * 8);
        random_topk(&s, topk, N, K, E);
        dinf__ep_transport t = {NULL, 0, R, DINF_EP_MEMORY_HOST, -1, 1000};
        int32_t *cpu_counts = malloc((size_t)(R + E) * 4);
        int64_t *cpu_offs = malloc((size_t)(R + 1) * 8), *gpu_offs = malloc((size_t)(R + 1) * 8);
        int64_t *cpu_terms = malloc((size_t)(N * R + 1) * 8), *gpu_terms = malloc((size_t)(N * R + 1) * 8);
        int32_t *cpu_rows = malloc((size_t)(N * R + 1) * 4), *gpu_rows = malloc((size_t)(N * R + 1) * 4);
        int32_t *gpu_per_rank = malloc((size_t)R * 4);
        memset(cpu_rows, 0xee, (size_t)(N * R + 1) * 4);
        memset(gpu_rows, 0xee, (size_t)(N * R + 1) * 4);
        dinf__ep_plan plan = {cpu_counts, cpu_counts + R, cpu_offs, cpu_rows, cpu_terms};
        int64_t bad = 0, mism = 0;
        cr_assert_eq(dinf__ep_cpu_plan_dispatch(&t, "t", topk, N, K, E, NULL, NULL, NULL, &plan,
                                                &bad, &mism, NULL),
                     DINF_STATUS_OK);
        cr_assert_eq(bad, -1);
        for (int32_t r = R - 1; r >= 0; r--)
            gpu_per_rank[r] = dinf__ep_plan_rank_column(topk, N, K, R, L, r, gpu_terms);
        dinf__ep_plan_offsets(gpu_per_rank, R, gpu_offs);
        for (int32_t r = R - 1; r >= 0; r--)
            dinf__ep_plan_rank_rows(gpu_terms, N, R, r, gpu_offs, gpu_rows);
        cr_assert(memcmp(gpu_per_rank, cpu_counts, (size_t)R * 4) == 0, "iter %d counts", iter);
        cr_assert(memcmp(gpu_offs, cpu_offs, (size_t)(R + 1) * 8) == 0, "iter %d offsets", iter);
        cr_assert(memcmp(gpu_terms, cpu_terms, (size_t)(N * R) * 8) == 0, "iter %d terms", iter);
        cr_assert(memcmp(gpu_rows, cpu_rows, (size_t)cpu_offs[R] * 4) == 0, "iter %d rows", iter);
        free(topk);
        free(cpu_counts);
        free(cpu_offs);
        free(gpu_offs);
        free(cpu_terms);
        free(gpu_terms);
        free(cpu_rows);
        free(gpu_rows);
        free(gpu_per_rank);
    }
}

Test(ep_gpu_cpu, gpu_low_latency_planner_steps_equal_the_cpu_planner) {
    uint64_t s = 37;
    for (int iter = 0; iter < 60; iter++) {
        const int32_t R = 1 + (int32_t)(rng_next(&s) % 16), L = 1 + (int32_t)(rng_next(&s) % 8);
        const int32_t E = R * L, K = 1 + (int32_t)(rng_next(&s) % (E < 8 ? E : 8));
        const int64_t N = (int64_t)(rng_next(&s) % 200);
        int64_t *topk = malloc((size_t)(N * K + 1) * 8);
        random_topk(&s, topk, N, K, E);
        dinf__ep_transport t = {NULL, 0, R, DINF_EP_MEMORY_HOST, -1, 1000};
        int32_t *count = malloc((size_t)E * 4);
        int64_t *scratch = malloc((size_t)E * 8), *next = malloc((size_t)E * 8);
        int64_t *cpu_offs = malloc((size_t)(R + 1) * 8), *gpu_offs = malloc((size_t)(R + 1) * 8);
        int64_t *cpu_terms = malloc((size_t)(N * K + 1) * 8), *gpu_terms = malloc((size_t)(N * K + 1) * 8);
        int32_t *cpu_rows = malloc((size_t)(N * K + 1) * 4), *gpu_rows = malloc((size_t)(N * K + 1) * 4);
        memset(cpu_rows, 0xee, (size_t)(N * K + 1) * 4);
        memset(gpu_rows, 0xee, (size_t)(N * K + 1) * 4);
        dinf__ep_ll_plan plan = {count, cpu_offs, scratch, cpu_rows, cpu_terms};
        int64_t bad = 0;
        cr_assert_eq(dinf__ep_cpu_plan_low_latency(&t, "t", topk, N, K, E, &plan, &bad, NULL),
                     DINF_STATUS_OK);
        cr_assert_eq(bad, -1);
        /* the kernel: counts by atomics (exact), -1 terms, bases, one walk per expert */
        for (int64_t i = 0; i < N * K; i++)
            if (topk[i] < 0)
                gpu_terms[i] = -1;
        dinf__ep_ll_bases(count, R, L, next, gpu_offs);
        for (int32_t e = E - 1; e >= 0; e--)
            if (count[e] > 0)
                dinf__ep_ll_expert_walk(topk, N, K, e, L, gpu_offs, next[e], gpu_terms, gpu_rows);
        cr_assert(memcmp(gpu_offs, cpu_offs, (size_t)(R + 1) * 8) == 0, "iter %d offsets", iter);
        cr_assert(memcmp(gpu_terms, cpu_terms, (size_t)(N * K) * 8) == 0, "iter %d terms", iter);
        cr_assert(memcmp(gpu_rows, cpu_rows, (size_t)cpu_offs[R] * 4) == 0, "iter %d rows", iter);
        free(topk);
        free(count);
        free(scratch);
        free(next);
        free(cpu_offs);
        free(gpu_offs);
        free(cpu_terms);
        free(gpu_terms);
        free(cpu_rows);
        free(gpu_rows);
    }
}

/* ------------------------------------------------------------------ NCCL -- */

Test(ep_gpu_cpu, nccl_loading_fails_cleanly_for_a_missing_library) {
    dinf__nccl_api api;
    cr_assert_eq(dinf__nccl_load_from("t", "libdeepinfra-no-such-nccl.so.2", &api),
                 DINF_STATUS_UNSUPPORTED);
    cr_assert(strstr(dinf_last_error(), "libdeepinfra-no-such-nccl.so.2"), "%s",
              dinf_last_error());
    cr_assert_null(api.library);
    /* a library without NCCL's symbols */
    cr_assert_eq(dinf__nccl_load_from("t", "libm.so.6", &api), DINF_STATUS_UNSUPPORTED);
    cr_assert(strstr(dinf_last_error(), "lacks ncclGetVersion"), "%s", dinf_last_error());
}

Test(ep_gpu_cpu, nccl_loads_at_run_time_when_installed) {
    const dinf__nccl_api *api = NULL;
    if (dinf__nccl("t", &api) != DINF_STATUS_OK)
        cr_skip_test("NCCL is not installed here: %s", dinf_last_error());
    cr_assert_not_null(api);
    cr_assert_gt(api->version, 20000, "ncclGetVersion gave %d", api->version);
    cr_assert_not_null(api->send);
    cr_assert_not_null(api->recv);
    cr_assert_not_null(api->all_gather);
    cr_assert_str_eq(api->get_error_string(0), "no error");
}

/* -------------------------------------------------------- constructors -- */

static int device_usable(void) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    return dinf_device_query(0, &info) == DINF_STATUS_OK && info.usable;
}

static int copy_gather(void *ctx, const void *in, void *out, size_t bytes) {
    (void)ctx;
    memcpy(out, in, bytes); /* one rank */
    return 0;
}

static dinf_ep_config good_config(void) {
    dinf_ep_config c = DINF_EP_CONFIG_INIT;
    c.max_hidden = 256;
    c.max_tokens_per_rank = 64;
    c.max_topk = 4;
    c.max_num_experts = 16;
    c.timeout_ms = 2000;
    return c;
}

Test(ep_gpu_cpu, gpu_constructors_reject_bad_arguments) {
    dinf_ep_config c = good_config();
    dinf_ep_group *groups[9];
    for (int i = 0; i < 9; i++)
        groups[i] = (dinf_ep_group *)&c; /* must be cleared */
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, &c, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(0, 0, &c, groups), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(9, 0, &c, groups), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "num_ranks=9"), "%s", dinf_last_error());
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, -1, &c, groups), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_null(groups[0]);
    cr_assert_null(groups[1]);
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, NULL, groups),
                 DINF_STATUS_INVALID_ARGUMENT);
    dinf_ep_config bad = c;
    bad.max_topk = 0;
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, &bad, groups),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "max_topk"), "%s", dinf_last_error());

    int fake_comm;
    dinf_ep_group *g = (dinf_ep_group *)&c;
    cr_assert_eq(dinf_ep_group_create_nccl(NULL, 0, &c, &g), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_null(g);
    cr_assert_eq(dinf_ep_group_create_nccl(&fake_comm, 0, &c, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_create_nccl(&fake_comm, -2, &c, &g), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_create_nccl(&fake_comm, 0, &bad, &g), DINF_STATUS_INVALID_ARGUMENT);

    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 1, 0, &c, copy_gather, NULL, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(1, 1, 0, &c, copy_gather, NULL, &g),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "rank=1"), "%s", dinf_last_error());
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 0, 0, &c, copy_gather, NULL, &g),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 1, -1, &c, copy_gather, NULL, &g),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 1, 0, &c, NULL, NULL, &g),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "allgather"), "%s", dinf_last_error());
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 1, 0, &bad, copy_gather, NULL, &g),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_null(g);
}

Test(ep_gpu_cpu, gpu_constructors_fail_cleanly_without_a_device) {
    if (device_usable())
        cr_skip_test("a usable CUDA device is present (the GPU suite covers this)");
    dinf_ep_config c = good_config();
    dinf_ep_group *groups[2] = {(dinf_ep_group *)&c, (dinf_ep_group *)&c};
    cr_assert_eq(dinf_ep_group_create_cuda_virtual(2, 0, &c, groups), DINF_STATUS_UNSUPPORTED);
    cr_assert(strstr(dinf_last_error(), DINF_WITH_CUDA ? "no usable CUDA device" : "without CUDA"),
              "%s", dinf_last_error());
    cr_assert_null(groups[0]);
    cr_assert_null(groups[1]);
    int fake_comm = 0;
    dinf_ep_group *g = (dinf_ep_group *)&c;
    /* the device is checked before the communicator is touched */
    cr_assert_eq(dinf_ep_group_create_nccl(&fake_comm, 0, &c, &g), DINF_STATUS_UNSUPPORTED);
    cr_assert_null(g);
    g = (dinf_ep_group *)&c;
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 1, 0, &c, copy_gather, NULL, &g),
                 DINF_STATUS_UNSUPPORTED);
    cr_assert_null(g);
}

static int failing_gather(void *ctx, const void *in, void *out, size_t bytes) {
    (void)in;
    (void)out;
    (void)bytes;
    ++*(int *)ctx;
    return 1;
}

/* Without a device the IPC constructor still takes part in BOTH exchanges
 * (the callback contract of dinf_ep_allgather_fn: twice per constructor on
 * every rank, so that peers whose exchanges succeeded are not left waiting in
 * the second one) and reports the callback's failure. */
Test(ep_gpu_cpu, ipc_constructor_calls_the_exchange_even_when_its_setup_failed) {
    if (device_usable() || !DINF_WITH_CUDA)
        cr_skip_test("needs a CUDA build without a usable device");
    dinf_ep_config c = good_config();
    int calls = 0;
    dinf_ep_group *g = NULL;
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 2, 0, &c, failing_gather, &calls, &g),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(calls, 2);
    cr_assert(strstr(dinf_last_error(), "allgather callback failed"), "%s", dinf_last_error());
    cr_assert_null(g);
}

/* A callback that succeeds (here: a one-rank copy), counting its calls. */
static int counting_gather(void *ctx, const void *in, void *out, size_t bytes) {
    ++*(int *)ctx;
    memcpy(out, in, bytes);
    return 0;
}

/* A callback that fails only on its first call (one rank's transient
 * failure): the second exchange still happens. */
static int first_call_fails(void *ctx, const void *in, void *out, size_t bytes) {
    memcpy(out, in, bytes);
    return ++*(int *)ctx == 1;
}

/* Every path through the IPC constructor calls the exchange exactly twice:
 * this rank's setup failed (no device) with a working callback, and a
 * callback that failed once. The reported error is the first failure's. */
Test(ep_gpu_cpu, ipc_constructor_always_calls_the_exchange_twice) {
    dinf_ep_config c = good_config();
    int calls = 0;
    dinf_ep_group *g = NULL;
    const dinf_status st = dinf_ep_group_create_cuda_ipc(0, 1, 0, &c, counting_gather, &calls, &g);
    if (!DINF_WITH_CUDA) {
        /* the CPU-only build rejects before any exchange */
        cr_assert_eq(st, DINF_STATUS_UNSUPPORTED);
        cr_assert_eq(calls, 0);
        return;
    }
    cr_assert_eq(calls, 2, "%s", dinf_last_error());
    if (device_usable()) {
        cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
        dinf_ep_group_destroy(g);
    } else {
        cr_assert_eq(st, DINF_STATUS_UNSUPPORTED);
        cr_assert(strstr(dinf_last_error(), "CUDA device 0"), "%s", dinf_last_error());
        cr_assert_null(g);
    }
    calls = 0;
    g = NULL;
    cr_assert_eq(dinf_ep_group_create_cuda_ipc(0, 1, 0, &c, first_call_fails, &calls, &g),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(calls, 2);
    cr_assert(strstr(dinf_last_error(), "allgather callback failed"), "%s", dinf_last_error());
    cr_assert_null(g);
}

Test(ep_gpu_cpu, cuda_layout_is_unsupported_or_rejected_without_a_device) {
    if (device_usable())
        cr_skip_test("a usable CUDA device is present");
    int64_t topk[4] = {0, 1, 2, 3};
    int32_t per_rank[2], per_expert[4];
    dinf_exec e = DINF_EXEC_CUDA_INIT(0, NULL);
    const dinf_status st = dinf_ep_get_dispatch_layout(topk, 2, 2, 4, 2, per_rank, per_expert,
                                                       NULL, &e);
    cr_assert(st == DINF_STATUS_UNSUPPORTED || st == DINF_STATUS_CUDA_ERROR ||
                  st == DINF_STATUS_INVALID_ARGUMENT,
              "status %d: %s", (int)st, dinf_last_error());
}
