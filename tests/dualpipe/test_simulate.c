/* The simulator reproduces the upstream README table (reference part 3). */
#include "pipe_test_util.h"

#include <math.h>
#include <string.h>

static const dinf_pipe_costs readme_costs = {1, 2, 1, 3, 0}; /* F, B, W, F&B, latency */

static dinf_pipe_sim_result simulate(dinf_pipe_kind kind, int R, int N, double *bubble,
                                     int32_t *peak) {
    pipe_set p;
    /* with and without comm ops alike (they are ignored) */
    pipe_set_make(&p, kind, R, N, (unsigned)((N / 2 + R) % 2));
    dinf_pipe_sim_result res = {0};
    res.bubble = bubble;
    res.peak_activations = peak;
    cr_assert_eq(dinf_pipe_simulate(kind, R, N, PIPE_STREAMS(&p), p.len, &readme_costs, &res, NULL,
                                    0, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    pipe_set_free(&p);
    return res;
}

static void expect_every_rank(int kind, int R, int N, double want_bubble, int want_peak,
                              const int32_t *peaks_override) {
    double bubble[64];
    int32_t peak[64];
    dinf_pipe_sim_result res = simulate((dinf_pipe_kind)kind, R, N, bubble, peak);
    for (int r = 0; r < R; r++) {
        cr_assert_float_eq(bubble[r], want_bubble, 1e-9, "kind=%d R=%d N=%d rank %d: bubble %g, want %g",
                           kind, R, N, r, bubble[r], want_bubble);
        int want = peaks_override ? peaks_override[r] : want_peak;
        cr_assert_eq(peak[r], want, "kind=%d R=%d N=%d rank %d: peak %d, want %d", kind, R, N, r,
                     peak[r], want);
    }
    cr_assert_float_eq(res.max_bubble, want_bubble, 1e-9);
}

Test(pipe_simulate, dualpipe_bubble_and_activations_match_the_readme) {
    for (int PP = 2; PP <= 16; PP += 2)
        for (int N = 2 * PP; N <= 2 * PP + 12; N += 4)
            expect_every_rank(DINF_PIPE_DUALPIPE, PP, N, (PP / 2 - 1) * (3 + 2 - 3 * 1), PP + 1,
                              NULL);
}

Test(pipe_simulate, dualpipev_bubble_and_activations_match_the_readme) {
    for (int P = 1; P <= 10; P++) /* PP = 2P stages on P devices */
        for (int N = 2 * P; N <= 2 * P + 7; N += 3)
            expect_every_rank(DINF_PIPE_DUALPIPEV, P, N, (P - 1) * (3 + 2 - 3 * 1), 2 * P + 1,
                              NULL);
}

Test(pipe_simulate, one_f_one_b_and_zb1p_match_the_readme) {
    int32_t peaks[64];
    for (int PP = 1; PP <= 16; PP++) {
        for (int r = 0; r < PP; r++)
            peaks[r] = PP - r; /* 1F1B keeps PP - r micro-batches in flight on rank r */
        for (int N = PP; N <= PP + 9; N += 3) {
            expect_every_rank(DINF_PIPE_1F1B, PP, N, (PP - 1) * (1 + 2), 0, peaks);
            expect_every_rank(DINF_PIPE_ZB1P, PP, N, (PP - 1) * (1 + 2 - 2 * 1), 0, peaks);
        }
    }
}

Test(pipe_simulate, events_makespan_latency_and_busy_time) {
    pipe_set p;
    pipe_set_make(&p, DINF_PIPE_DUALPIPEV, 4, 10, 0);
    int64_t total = 0;
    for (int r = 0; r < 4; r++)
        total += p.len[r];
    dinf_pipe_event *ev = malloc((size_t)total * sizeof *ev);
    dinf_pipe_costs costs = {1.5, 2.5, 1, 3.5, 0.25};
    double busy[4];
    dinf_pipe_sim_result res = {0};
    res.busy = busy;
    int64_t n;
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_DUALPIPEV, 4, 10, PIPE_STREAMS(&p), p.len, &costs,
                                    &res, ev, total, &n),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(n, total);
    double end = 0;
    for (int64_t i = 0; i < n; i++) {
        cr_assert_leq(ev[i].start, ev[i].end);
        if (i > 0 && ev[i].rank == ev[i - 1].rank)
            cr_assert_geq(ev[i].start, ev[i - 1].end, "ops of a rank do not overlap");
        end = ev[i].end > end ? ev[i].end : end;
    }
    cr_assert_float_eq(res.makespan, end, 1e-12);
    /* busy = the sum of each compute op's cost on the rank */
    for (int r = 0; r < 4; r++) {
        double want = 0;
        for (int64_t i = 0; i < p.len[r]; i++)
            switch (p.ops[r][i].type) {
            case DINF_PIPE_OP_F: want += costs.forward; break;
            case DINF_PIPE_OP_B: want += costs.backward; break;
            case DINF_PIPE_OP_I: want += costs.backward - costs.weight; break;
            case DINF_PIPE_OP_W: want += costs.weight; break;
            case DINF_PIPE_OP_FB: want += costs.forward_backward; break;
            }
        cr_assert_float_eq(busy[r], want, 1e-9, "rank %d busy %g, want %g", r, busy[r], want);
    }
    /* latency delays the first forward of rank 1 */
    for (int64_t i = 0; i < n; i++)
        if (ev[i].rank == 1) {
            cr_assert_float_eq(ev[i].start, 1.5 + 0.25, 1e-12);
            break;
        }
    /* too small an event buffer */
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_DUALPIPEV, 4, 10, PIPE_STREAMS(&p), p.len, &costs,
                                    &res, ev, 3, &n),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(n, total);
    free(ev);
    pipe_set_free(&p);
}

Test(pipe_simulate, bad_costs_and_invalid_streams_are_rejected) {
    pipe_set p;
    pipe_set_make(&p, DINF_PIPE_1F1B, 2, 2, 0);
    dinf_pipe_sim_result res = {0};
    dinf_pipe_costs bad = {1, 2, 3, 3, 0};
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_1F1B, 2, 2, PIPE_STREAMS(&p), p.len, &bad, &res,
                                    NULL, 0, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "costs->weight=3 exceeds costs->backward=2") != NULL);
    bad = (dinf_pipe_costs){1e308, 1e308, 0, 0, 0};
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_1F1B, 2, 2, PIPE_STREAMS(&p), p.len, &bad, &res,
                                    NULL, 0, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "overflow a double") != NULL, "%s", dinf_last_error());
    bad = (dinf_pipe_costs){NAN, 2, 1, 3, 0};
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_1F1B, 2, 2, PIPE_STREAMS(&p), p.len, &bad, &res,
                                    NULL, 0, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "costs->forward=nan") != NULL, "%s", dinf_last_error());
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_1F1B, 2, 2, PIPE_STREAMS(&p), p.len, &readme_costs,
                                    NULL, NULL, 0, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    /* rank 1 runs its backward of 0.0 before it can get the gradient: fine;
     * but a rank that waits for a forward that comes after its own backward
     * on the other rank is a data-flow deadlock */
    dinf_pipe_op r0[4], r1[4];
    int64_t n0, n1;
    dinf_pipe_stream_parse("F0.0 F0.1 B0.1 B0.0", r0, 4, &n0);
    dinf_pipe_stream_parse("F0.1 B0.1 F0.0 B0.0", r1, 4, &n1);
    const dinf_pipe_op *s[2] = {r0, r1};
    int64_t len[2] = {n0, n1};
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_1F1B, 2, 2, s, len, &readme_costs, &res, NULL, 0,
                                    NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_pipe_stream_parse("F0.0 B0.1 F0.1 B0.0", r0, 4, &n0);
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_1F1B, 2, 2, s, len, &readme_costs, &res, NULL, 0,
                                    NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "before its forward") != NULL, "%s", dinf_last_error());
    dinf_pipe_stream_parse("F0.0 F0.1 B0.0 B0.1", r0, 4, &n0);
    dinf_pipe_stream_parse("F0.1 B0.1 F0.0 B0.0", r1, 4, &n1);
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_1F1B, 2, 2, s, len, &readme_costs, &res, NULL, 0,
                                    NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    /* rank 0 waits for B0.0 from rank 1 before B0.1; rank 1 does F0.0 only after B0.1,
     * and F0.0 waits for rank 0's F0.0: fine. A real cycle: */
    dinf_pipe_stream_parse("F0.1 B0.1 F0.0 B0.0", r0, 4, &n0);
    dinf_pipe_stream_parse("F0.0 B0.0 F0.1 B0.1", r1, 4, &n1);
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_1F1B, 2, 2, s, len, &readme_costs, &res, NULL, 0,
                                    NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "deadlock") != NULL, "%s", dinf_last_error());
    pipe_set_free(&p);
}
