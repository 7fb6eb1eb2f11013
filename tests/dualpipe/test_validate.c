/* The validator accepts every generated schedule and names the first rule a
 * broken one violates; a brief fuzz of the parser and validator. */
#include "pipe_test_util.h"

#include <string.h>

static void expect_valid(dinf_pipe_kind kind, int R, int N, unsigned flags) {
    pipe_set p;
    pipe_set_make(&p, kind, R, N, flags);
    dinf_pipe_violation v;
    int32_t valid = -1;
    cr_assert_eq(dinf_pipe_validate(kind, R, N, PIPE_STREAMS(&p), p.len, &v, &valid),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(valid, 1, "kind=%d R=%d N=%d flags=%u: rank %d op %lld: %s", kind, R, N, flags,
                 v.rank, (long long)v.op_index, v.rule);
    pipe_set_free(&p);
}

/* The deadlock model and the simulator use work lists: linear, not
 * quadratic, in the ranks (a 1F1B wave over 16384 ranks). */
Test(pipe_validate, long_pipelines_stay_linear, .timeout = 30) {
    pipe_set *p = malloc(sizeof *p);
    const int R = 16384;
    dinf_pipe_op **ops = malloc((size_t)R * sizeof *ops);
    int64_t *len = malloc((size_t)R * sizeof *len);
    for (int r = 0; r < R; r++) {
        int64_t n;
        dinf_pipe_schedule(DINF_PIPE_1F1B, R, 1, DINF_PIPE_WITH_COMM, r, NULL, 0, &n);
        ops[r] = malloc((size_t)n * sizeof(dinf_pipe_op));
        cr_assert_eq(dinf_pipe_schedule(DINF_PIPE_1F1B, R, 1, DINF_PIPE_WITH_COMM, r, ops[r], n,
                                        &len[r]),
                     DINF_STATUS_OK);
    }
    dinf_pipe_violation v;
    int32_t valid;
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_1F1B, R, 1, (const dinf_pipe_op *const *)ops, len, &v,
                                    &valid),
                 DINF_STATUS_OK);
    cr_assert_eq(valid, 1, "%s", v.rule);
    dinf_pipe_costs costs = {1, 2, 1, 3, 0};
    dinf_pipe_sim_result res = {0};
    cr_assert_eq(dinf_pipe_simulate(DINF_PIPE_1F1B, R, 1, (const dinf_pipe_op *const *)ops, len,
                                    &costs, &res, NULL, 0, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_float_eq(res.makespan, (double)R * 3, 1e-9);
    for (int r = 0; r < R; r++)
        free(ops[r]);
    free(ops), free(len), free(p);
}

Test(pipe_validate, every_generated_schedule_is_valid, .timeout = 60) {
    for (unsigned flags = 0; flags <= DINF_PIPE_WITH_COMM; flags++) {
        for (int R = 2; R <= 18; R += 2)
            for (int N = 2 * R; N <= 2 * R + 18; N += 6)
                expect_valid(DINF_PIPE_DUALPIPE, R, N, flags);
        for (int R = 1; R <= 11; R++)
            for (int N = 2 * R; N <= 2 * R + 9; N += 3)
                expect_valid(DINF_PIPE_DUALPIPEV, R, N, flags);
        for (int R = 1; R <= 12; R++)
            for (int N = 1; N <= R + 6; N += 2) {
                expect_valid(DINF_PIPE_1F1B, R, N, flags);
                if (N >= R)
                    expect_valid(DINF_PIPE_ZB1P, R, N, flags);
            }
    }
}

/* Parse one rank's text per line and validate. */
static int32_t validate_text(dinf_pipe_kind kind, int R, int N, const char *const *lines,
                             dinf_pipe_violation *v) {
    dinf_pipe_op *ops[8];
    int64_t len[8];
    for (int r = 0; r < R; r++) {
        ops[r] = malloc(256 * sizeof(dinf_pipe_op));
        cr_assert_eq(dinf_pipe_stream_parse(lines[r], ops[r], 256, &len[r]), DINF_STATUS_OK, "%s",
                     dinf_last_error());
    }
    int32_t valid = -1;
    cr_assert_eq(dinf_pipe_validate(kind, R, N, (const dinf_pipe_op *const *)ops, len, v, &valid),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    for (int r = 0; r < R; r++)
        free(ops[r]);
    return valid;
}

static void expect_violation(dinf_pipe_kind kind, int R, int N, const char *const *lines,
                             int rank, long long index, const char *needle) {
    dinf_pipe_violation v;
    cr_assert_eq(validate_text(kind, R, N, lines, &v), 0, "expected a violation: %s", needle);
    cr_assert(strstr(v.rule, needle) != NULL, "rule \"%s\" lacks \"%s\"", v.rule, needle);
    cr_assert_eq(v.rank, rank, "rank %d, want %d (%s)", v.rank, rank, v.rule);
    cr_assert_eq(v.op_index, index, "op %lld, want %lld (%s)", (long long)v.op_index, index,
                 v.rule);
}

Test(pipe_validate, a_correct_hand_written_1f1b) {
    const char *ok[2] = {"| F0.0 Sf0.0@1 Rb0.0@1 | B0.0 |", "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"};
    dinf_pipe_violation v;
    cr_assert_eq(validate_text(DINF_PIPE_1F1B, 2, 1, ok, &v), 1, "%s", v.rule);
}

Test(pipe_validate, compute_rules) {
    const char *b_first[1] = {"B0.0 F0.0"};
    expect_violation(DINF_PIPE_1F1B, 1, 1, b_first, 0, 0, "before its forward");
    const char *two_f[1] = {"F0.0 F0.0 B0.0"};
    expect_violation(DINF_PIPE_1F1B, 1, 1, two_f, 0, 1, "second forward");
    const char *missing[1] = {"F0.0 B0.0"};
    expect_violation(DINF_PIPE_1F1B, 1, 2, missing, 0, -1, "F0.1 never runs");
    const char *no_b[1] = {"F0.0 F0.1 B0.0"};
    expect_violation(DINF_PIPE_1F1B, 1, 2, no_b, 0, -1, "backward of 0.1 never runs");
    const char *w_early[1] = {"F0.0 W I0.0"};
    expect_violation(DINF_PIPE_ZB1P, 1, 1, w_early, 0, 1, "W with no deferred backward");
    const char *w_missing[1] = {"F0.0 I0.0"};
    expect_violation(DINF_PIPE_ZB1P, 1, 1, w_missing, 0, -1, "never get their W");
    const char *range[1] = {"F0.0 F0.5 B0.0"};
    expect_violation(DINF_PIPE_1F1B, 1, 1, range, 0, 1, "outside 1 direction(s) of 1");
    const char *dir[1] = {"F1.0 B0.0"};
    expect_violation(DINF_PIPE_1F1B, 1, 1, dir, 0, 0, "direction 1");
    const char *second_b[1] = {"F0.0 B0.0 B0.0"};
    expect_violation(DINF_PIPE_1F1B, 1, 1, second_b, 0, 2, "second backward of 0.0");
    const char *self_fb[1] = {"F0.0 F1.0&B1.0 B0.0"};
    expect_violation(DINF_PIPE_DUALPIPEV, 1, 2, self_fb, 0, 1, "cannot overlap its own");
}

Test(pipe_validate, communication_rules) {
    const char *unmatched[2] = {"| F0.0 Sf0.0@1 Rb0.0@1 | B0.0 |", "| F0.0 | B0.0 Sb0.0@0 |"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, unmatched, 1, 1, "activation was never received");
    const char *wrong_peer[2] = {"| F0.0 Sf0.0@0 Rb0.0@1 | B0.0 |", "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, wrong_peer, 0, 2, "not rank 0's neighbour");
    const char *end_send[2] = {"| F0.0 Sf0.0@1 Rb0.0@1 | B0.0 Sb0.0@1 |",
                               "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, end_send, 0, 6, "first stage of direction 0");
    const char *early_send[2] = {"| Sf0.0@1 F0.0 Rb0.0@1 | B0.0 |", "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, early_send, 0, 1, "before its forward ran");
    const char *uncommitted[2] = {"| F0.0 Sf0.0@1 Rb0.0@1 B0.0 |", "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, uncommitted, 0, 4, "posted but not yet committed");
    const char *never[2] = {"| F0.0 Sf0.0@1 Rb0.0@1 | B0.0 |", "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, never, 1, 5, "never committed");
    const char *twice[2] = {"| F0.0 Sf0.0@1 Sf0.0@1 Rb0.0@1 | B0.0 |",
                            "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, twice, 0, 3, "sent twice");
    const char *no_send[2] = {"| F0.0 Rb0.0@1 | B0.0 |", "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, no_send, 1, 0, "Rf0.0@0: no matching send is posted");
    const char *recv_twice[2] = {"| F0.0 Sf0.0@1 Rb0.0@1 | B0.0 |",
                                 "Rf0.0@0 | Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, recv_twice, 1, 2, "received twice");
    /* each rank waits in a batch whose partner sits in a later batch of the other */
    const char *deadlock[2] = {"| F0.0 Rb0.0@1 | Sf0.0@1 | B0.0 |", "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"};
    expect_violation(DINF_PIPE_1F1B, 2, 1, deadlock, 0, 3, "deadlock");
}

Test(pipe_validate, dualpipev_local_hand_off) {
    /* phase 1 on the last (here only) rank needs phase 0's forward first */
    const char *bad[1] = {"F1.0 F0.0 F0.1 F1.1 B1.0 B0.0 B1.1 B0.1"};
    expect_violation(DINF_PIPE_DUALPIPEV, 1, 2, bad, 0, 0, "phase 1's input is phase 0's output F0.0");
    const char *bad_b[1] = {"F0.0 F1.0 F0.1 F1.1 B0.0 B1.0 B1.1 B0.1"};
    expect_violation(DINF_PIPE_DUALPIPEV, 1, 2, bad_b, 0, 4, "comes from phase 1's backward of 0");
    const char *bad_comm[1] = {"| F1.0 | F0.0 | F0.1 | F1.1 | B1.0 | B0.0 | B1.1 | B0.1 |"};
    expect_violation(DINF_PIPE_DUALPIPEV, 1, 2, bad_comm, 0, 1,
                     "phase 1's input is phase 0's output F0.0");
}

Test(pipe_validate, unused_fields_must_be_minus_one) {
    dinf_pipe_op ops[3] = {{DINF_PIPE_OP_F, 0, 0, -1, -1, -1},
                           {DINF_PIPE_OP_B, 0, 0, -1, -1, -1},
                           {DINF_PIPE_OP_W, -1, -1, -1, -1, -1}};
    const dinf_pipe_op *streams[1] = {ops};
    int64_t len[1] = {2};
    dinf_pipe_violation v;
    int32_t valid;
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_1F1B, 1, 1, streams, len, &v, &valid), DINF_STATUS_OK);
    cr_assert_eq(valid, 1, "%s", v.rule);
    ops[0].peer = 5;
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_1F1B, 1, 1, streams, len, &v, &valid), DINF_STATUS_OK);
    cr_assert_eq(valid, 0);
    cr_assert(strstr(v.rule, "unused fields must be -1") != NULL, "%s", v.rule);
    ops[0].peer = -1;
    ops[1].dir2 = 0;
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_1F1B, 1, 1, streams, len, &v, &valid), DINF_STATUS_OK);
    cr_assert_eq(valid, 0);
    cr_assert_eq(v.op_index, 1);
}

Test(pipe_validate, bad_arguments) {
    int32_t valid;
    int64_t len[2] = {1, 1};
    dinf_pipe_op op = {DINF_PIPE_OP_W, -1, -1, -1, -1, -1};
    const dinf_pipe_op *streams[2] = {&op, NULL};
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_1F1B, 2, 1, NULL, len, NULL, &valid),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_1F1B, 2, 1, streams, NULL, NULL, &valid),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_1F1B, 2, 1, streams, len, NULL, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_1F1B, 2, 1, streams, len, NULL, &valid),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "streams[1] is NULL but lengths[1]=1") != NULL, "%s",
              dinf_last_error());
    len[1] = -3;
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_1F1B, 2, 1, streams, len, NULL, &valid),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "lengths[1]=-3 is negative") != NULL);
    cr_assert_eq(dinf_pipe_validate(DINF_PIPE_DUALPIPE, 3, 6, streams, len, NULL, &valid),
                 DINF_STATUS_INVALID_ARGUMENT);
}

/* Random mutations of valid streams and random byte soup for the parser:
 * statuses only, never a crash (the sanitizer build checks memory). */
Test(pipe_validate, fuzz_parser_and_validator, .timeout = 60) {
    uint64_t state = 12345;
#define RND() (state = state * 6364136223846793005ULL + 1442695040888963407ULL, state >> 33)
    const char alphabet[] = "FBIWSRfb.@&[]|0123456789 -x";
    char text[96];
    for (int i = 0; i < 20000; i++) {
        int n = (int)(RND() % 40);
        for (int k = 0; k < n; k++)
            text[k] = alphabet[RND() % (sizeof alphabet - 1)];
        text[n] = '\0';
        dinf_pipe_op ops[64];
        int64_t count;
        dinf_status st = dinf_pipe_stream_parse(text, ops, 64, &count);
        cr_assert(st == DINF_STATUS_OK || st == DINF_STATUS_INVALID_ARGUMENT);
        dinf_pipe_op one;
        st = dinf_pipe_op_parse(text, &one);
        cr_assert(st == DINF_STATUS_OK || st == DINF_STATUS_INVALID_ARGUMENT);
    }
    static const dinf_pipe_kind kinds[] = {DINF_PIPE_DUALPIPE, DINF_PIPE_DUALPIPEV, DINF_PIPE_1F1B,
                                           DINF_PIPE_ZB1P};
    int caught = 0, trials = 0;
    for (int i = 0; i < 400; i++) {
        dinf_pipe_kind kind = kinds[RND() % 4];
        int R = kind == DINF_PIPE_DUALPIPE ? 2 * (1 + (int)(RND() % 3)) : 1 + (int)(RND() % 4);
        int N = kind == DINF_PIPE_1F1B || kind == DINF_PIPE_ZB1P ? R + (int)(RND() % 4)
                                                                 : 2 * R + 2 * (int)(RND() % 2);
        pipe_set p;
        pipe_set_make(&p, kind, R, N, (unsigned)(RND() % 2));
        int r = (int)(RND() % (uint64_t)R);
        if (p.len[r] < 2) {
            pipe_set_free(&p);
            continue;
        }
        int64_t a = (int64_t)(RND() % (uint64_t)p.len[r]), b = (int64_t)(RND() % (uint64_t)p.len[r]);
        switch (RND() % 4) {
        case 0: { /* swap two ops */
            dinf_pipe_op t = p.ops[r][a];
            p.ops[r][a] = p.ops[r][b];
            p.ops[r][b] = t;
            break;
        }
        case 1: /* drop an op */
            memmove(&p.ops[r][a], &p.ops[r][a + 1], (size_t)(p.len[r] - a - 1) * sizeof(dinf_pipe_op));
            p.len[r]--;
            break;
        case 2: { /* garble a field */
            int field = (int)(RND() % 6);
            ((int32_t *)&p.ops[r][a])[field] = (int32_t)(RND() % 7) - 2;
            break;
        }
        default: /* duplicate an op */
            memmove(&p.ops[r][a + 1], &p.ops[r][a], (size_t)(p.len[r] - a) * sizeof(dinf_pipe_op));
            p.len[r]++;
            break;
        }
        dinf_pipe_violation v;
        int32_t valid = -1;
        cr_assert_eq(dinf_pipe_validate(kind, R, N, PIPE_STREAMS(&p), p.len, &v, &valid),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        trials++;
        caught += !valid;
        if (!valid)
            cr_assert(v.rule[0] != '\0');
        dinf_pipe_costs costs = {1, 2, 1, 3, 0};
        dinf_pipe_sim_result res = {0};
        dinf_status st = dinf_pipe_simulate(kind, R, N, PIPE_STREAMS(&p), p.len, &costs, &res,
                                            NULL, 0, NULL);
        cr_assert(st == DINF_STATUS_OK || st == DINF_STATUS_INVALID_ARGUMENT);
        /* a set the validator accepts must run in the data-flow model too */
        if (valid)
            cr_assert_eq(st, DINF_STATUS_OK, "valid streams failed to simulate: %s",
                         dinf_last_error());
        pipe_set_free(&p);
    }
    cr_assert_gt(caught, trials / 2, "only %d of %d mutations were caught", caught, trials);
#undef RND
}
