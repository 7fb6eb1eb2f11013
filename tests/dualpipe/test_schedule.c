/*
 * Schedules against the upstream golden streams (reference 1.6, 1.7, 2.4),
 * text round trips, and the bad arguments the generator rejects.
 */
#include <deepinfra.h>
#include <deepinfra/dualpipe.h>

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* rank's stream as text, ops separated by single spaces (caller frees). */
static char *stream_text(dinf_pipe_kind kind, int R, int N, unsigned flags, int rank) {
    int64_t n;
    cr_assert_eq(dinf_pipe_schedule(kind, R, N, flags, rank, NULL, 0, &n), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    dinf_pipe_op *ops = malloc((size_t)n * sizeof *ops);
    cr_assert_eq(dinf_pipe_schedule(kind, R, N, flags, rank, ops, n, &n), DINF_STATUS_OK);
    char *text = malloc((size_t)n * 24 + 1);
    size_t len = 0;
    text[0] = '\0';
    for (int64_t i = 0; i < n; i++) {
        char buf[32];
        cr_assert_eq(dinf_pipe_op_format(&ops[i], buf, sizeof buf), DINF_STATUS_OK);
        len += (size_t)sprintf(text + len, "%s%s", i ? " " : "", buf);
    }
    free(ops);
    return text;
}

/* Golden text (may use [F&B] brackets) normalised through parse + format. */
static char *normalise(const char *golden) {
    int64_t n;
    cr_assert_eq(dinf_pipe_stream_parse(golden, NULL, 0, &n), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    dinf_pipe_op *ops = malloc((size_t)(n ? n : 1) * sizeof *ops);
    cr_assert_eq(dinf_pipe_stream_parse(golden, ops, n, &n), DINF_STATUS_OK);
    char *text = malloc((size_t)n * 24 + 1);
    size_t len = 0;
    text[0] = '\0';
    for (int64_t i = 0; i < n; i++) {
        char buf[32];
        dinf_pipe_op_format(&ops[i], buf, sizeof buf);
        len += (size_t)sprintf(text + len, "%s%s", i ? " " : "", buf);
    }
    free(ops);
    return text;
}

static void expect_golden(dinf_pipe_kind kind, int R, int N, unsigned flags,
                          const char *const *golden) {
    for (int r = 0; r < R; r++) {
        char *got = stream_text(kind, R, N, flags, r), *want = normalise(golden[r]);
        cr_assert_str_eq(got, want, "kind=%d R=%d N=%d rank %d:\n got: %s\nwant: %s", kind, R, N,
                         r, got, want);
        free(got);
        free(want);
    }
}

Test(pipe_schedule, dualpipe_pp8_n20_compute_order_is_the_readme_picture) {
    static const char *const golden[8] = {
        "F0.0 F0.1 F0.2 F0.3 F0.4 F0.5 F0.6 F1.0 I1.0 W F1.1 I1.1 W F1.2 I1.2 W F1.3 F0.7&B1.3 F1.4&B0.0 F0.8&B1.4 F1.5&B0.1 F0.9&B1.5 F1.6&B0.2 B1.6 F1.7&B0.3 B1.7 F1.8&B0.4 B1.8 F1.9&B0.5 B1.9 I0.6 W I0.7 W I0.8 W I0.9 W",
        "F0.0 F0.1 F0.2 F0.3 F0.4 F1.0 F0.5 F1.1 I1.0 W F1.2 I1.1 W F1.3 F0.6&B1.2 F1.4&B0.0 F0.7&B1.3 F1.5&B0.1 F0.8&B1.4 F1.6&B0.2 F0.9&B1.5 F1.7&B0.3 B1.6 F1.8&B0.4 B1.7 F1.9&B0.5 B1.8 B0.6 I1.9 I0.7 W I0.8 W I0.9 W W",
        "F0.0 F0.1 F0.2 F1.0 F0.3 F1.1 F0.4 F1.2 I1.0 W F1.3 F0.5&B1.1 F1.4&B0.0 F0.6&B1.2 F1.5&B0.1 F0.7&B1.3 F1.6&B0.2 F0.8&B1.4 F1.7&B0.3 F0.9&B1.5 F1.8&B0.4 B1.6 F1.9&B0.5 B1.7 B0.6 B1.8 I0.7 I1.9 I0.8 W I0.9 W W W",
        "F0.0 F1.0 F0.1 F1.1 F0.2 F1.2 F0.3 F1.3 F0.4 B1.0 F1.4&B0.0 F0.5&B1.1 F1.5&B0.1 F0.6&B1.2 F1.6&B0.2 F0.7&B1.3 F1.7&B0.3 F0.8&B1.4 F1.8&B0.4 F0.9&B1.5 F1.9&B0.5 B1.6 B0.6 B1.7 B0.7 I1.8 I0.8 I1.9 I0.9 W W W W",
        "F1.0 F0.0 F1.1 F0.1 F1.2 F0.2 F1.3 F0.3 F1.4 B0.0 F0.4&B1.0 F1.5&B0.1 F0.5&B1.1 F1.6&B0.2 F0.6&B1.2 F1.7&B0.3 F0.7&B1.3 F1.8&B0.4 F0.8&B1.4 F1.9&B0.5 F0.9&B1.5 B0.6 B1.6 B0.7 B1.7 I0.8 I1.8 I0.9 I1.9 W W W W",
        "F1.0 F1.1 F1.2 F0.0 F1.3 F0.1 F1.4 F0.2 I0.0 W F0.3 F1.5&B0.1 F0.4&B1.0 F1.6&B0.2 F0.5&B1.1 F1.7&B0.3 F0.6&B1.2 F1.8&B0.4 F0.7&B1.3 F1.9&B0.5 F0.8&B1.4 B0.6 F0.9&B1.5 B0.7 B1.6 B0.8 I1.7 I0.9 I1.8 W I1.9 W W W",
        "F1.0 F1.1 F1.2 F1.3 F1.4 F0.0 F1.5 F0.1 I0.0 W F0.2 I0.1 W F0.3 F1.6&B0.2 F0.4&B1.0 F1.7&B0.3 F0.5&B1.1 F1.8&B0.4 F0.6&B1.2 F1.9&B0.5 F0.7&B1.3 B0.6 F0.8&B1.4 B0.7 F0.9&B1.5 B0.8 B1.6 I0.9 I1.7 W I1.8 W I1.9 W W",
        "F1.0 F1.1 F1.2 F1.3 F1.4 F1.5 F1.6 F0.0 I0.0 W F0.1 I0.1 W F0.2 I0.2 W F0.3 F1.7&B0.3 F0.4&B1.0 F1.8&B0.4 F0.5&B1.1 F1.9&B0.5 F0.6&B1.2 B0.6 F0.7&B1.3 B0.7 F0.8&B1.4 B0.8 F0.9&B1.5 B0.9 I1.6 W I1.7 W I1.8 W I1.9 W",
    };
    expect_golden(DINF_PIPE_DUALPIPE, 8, 20, 0, golden);
}

Test(pipe_schedule, dualpipe_pp4_n8_with_communication) {
    static const char *const golden[4] = {
        "| F0.0 Sf0.0@1 | F0.1 Sf0.1@1 | F0.2 Rf1.0@1 | F1.0 Sf0.2@1 | I1.0 Sb1.0@1 Rf1.1@1 | W | F1.1 | [F0.3&B1.1] Sf0.3@1 Sb1.1@1 Rf1.2@1 Rb0.0@1 | [F1.2&B0.0] | B1.2 Sb1.2@1 Rf1.3@1 Rb0.1@1 | [F1.3&B0.1] | B1.3 Sb1.3@1 Rb0.2@1 | I0.2 | W Rb0.3@1 | I0.3 | W |",
        "Rf0.0@0 | F0.0 Sf0.0@2 Rf0.1@0 Rf1.0@2 | F1.0 Sf1.0@0 | F0.1 Sf0.1@2 Rf0.2@0 Rf1.1@2 | F1.1 | F0.2 Sf1.1@0 Rb1.0@0 | B1.0 Sf0.2@2 Sb1.0@2 Rf1.2@2 Rb0.0@2 | [F1.2&B0.0] Sf1.2@0 Sb0.0@0 Rf0.3@0 Rb1.1@0 | [F0.3&B1.1] Sf0.3@2 Sb1.1@2 Rf1.3@2 Rb0.1@2 | [F1.3&B0.1] Sf1.3@0 Sb0.1@0 Rb1.2@0 | B1.2 Sb1.2@2 Rb0.2@2 | B0.2 Sb0.2@0 Rb1.3@0 | I1.3 Sb1.3@2 Rb0.3@2 | I0.3 Sb0.3@0 | W | W |",
        "Rf1.0@3 | F1.0 Sf1.0@1 Rf1.1@3 Rf0.0@1 | F0.0 Sf0.0@3 | F1.1 Sf1.1@1 Rf1.2@3 Rf0.1@1 | F0.1 | F1.2 Sf0.1@3 Rb0.0@3 | B0.0 Sf1.2@1 Sb0.0@1 Rf0.2@1 Rb1.0@1 | [F0.2&B1.0] Sf0.2@3 Sb1.0@3 Rf1.3@3 Rb0.1@3 | [F1.3&B0.1] Sf1.3@1 Sb0.1@1 Rf0.3@1 Rb1.1@1 | [F0.3&B1.1] Sf0.3@3 Sb1.1@3 Rb0.2@3 | B0.2 Sb0.2@1 Rb1.2@1 | B1.2 Sb1.2@3 Rb0.3@3 | I0.3 Sb0.3@1 Rb1.3@1 | I1.3 Sb1.3@3 | W | W |",
        "| F1.0 Sf1.0@2 | F1.1 Sf1.1@2 | F1.2 Rf0.0@2 | F0.0 Sf1.2@2 | I0.0 Sb0.0@2 Rf0.1@2 | W | F0.1 | [F1.3&B0.1] Sf1.3@2 Sb0.1@2 Rf0.2@2 Rb1.0@2 | [F0.2&B1.0] | B0.2 Sb0.2@2 Rf0.3@2 Rb1.1@2 | [F0.3&B1.1] | B0.3 Sb0.3@2 Rb1.2@2 | I1.2 | W Rb1.3@2 | I1.3 | W |",
    };
    expect_golden(DINF_PIPE_DUALPIPE, 4, 8, DINF_PIPE_WITH_COMM, golden);
}

Test(pipe_schedule, dualpipe_pp2_n4_both_ranks_middle) {
    static const char *const golden[2] = {
        "| F0.0 Sf0.0@1 Rf1.0@1 | F1.0 | F0.1 | B1.0 Sf0.1@1 Sb1.0@1 Rf1.1@1 Rb0.0@1 | [F1.1&B0.0] | B1.1 Sb1.1@1 Rb0.1@1 | I0.1 | W |",
        "| F1.0 Sf1.0@0 Rf0.0@0 | F0.0 | F1.1 | B0.0 Sf1.1@0 Sb0.0@0 Rf0.1@0 Rb1.0@0 | [F0.1&B1.0] | B0.1 Sb0.1@0 Rb1.1@0 | I1.1 | W |",
    };
    expect_golden(DINF_PIPE_DUALPIPE, 2, 4, DINF_PIPE_WITH_COMM, golden);
}

Test(pipe_schedule, dualpipev_p2_n4_with_communication) {
    static const char *const golden[2] = {
        "| F0.0 Sf0.0@1 | F0.1 Sf0.1@1 | F0.2 Rf1.0@1 | F1.0 Sf0.2@1 | I1.0 Sb1.0@1 Rf1.1@1 | W | F1.1 | [F0.3&B1.1] Sf0.3@1 Sb1.1@1 Rf1.2@1 Rb0.0@1 | [F1.2&B0.0] | B1.2 Sb1.2@1 Rf1.3@1 Rb0.1@1 | [F1.3&B0.1] | B1.3 Sb1.3@1 Rb0.2@1 | I0.2 | W Rb0.3@1 | I0.3 | W |",
        "Rf0.0@0 | F0.0 Rf0.1@0 | F1.0 Sf1.0@0 | F0.1 Rf0.2@0 | F1.1 | F0.2 Sf1.1@0 Rb1.0@0 | B1.0 | [F1.2&B0.0] Sf1.2@0 Sb0.0@0 Rf0.3@0 Rb1.1@0 | [F0.3&B1.1] | [F1.3&B0.1] Sf1.3@0 Sb0.1@0 Rb1.2@0 | B1.2 | B0.2 Sb0.2@0 Rb1.3@0 | I1.3 | I0.3 Sb0.3@0 | W | W |",
    };
    expect_golden(DINF_PIPE_DUALPIPEV, 2, 4, DINF_PIPE_WITH_COMM, golden);
}

Test(pipe_schedule, dualpipev_p1_n3_everything_local) {
    static const char *const golden[1] = {
        "| F0.0 | F1.0 | F0.1 | B1.0 | [F1.1&B0.0] | [F0.2&B1.1] | [F1.2&B0.1] | B1.2 | I0.2 | W |",
    };
    expect_golden(DINF_PIPE_DUALPIPEV, 1, 3, DINF_PIPE_WITH_COMM, golden);
}

Test(pipe_schedule, dualpipev_p3_n7_odd_chunks) {
    static const char *const golden[3] = {
        "F0.0 F0.1 F0.2 F0.3 F0.4 F1.0 I1.0 W F1.1 I1.1 W F1.2 [F0.5&B1.2] [F1.3&B0.0] [F0.6&B1.3] [F1.4&B0.1] B1.4 [F1.5&B0.2] B1.5 [F1.6&B0.3] B1.6 I0.4 W I0.5 W I0.6 W",
        "F0.0 F0.1 F0.2 F1.0 F0.3 F1.1 I1.0 W F1.2 [F0.4&B1.1] [F1.3&B0.0] [F0.5&B1.2] [F1.4&B0.1] [F0.6&B1.3] [F1.5&B0.2] B1.4 [F1.6&B0.3] B1.5 B0.4 I1.6 I0.5 W I0.6 W W",
        "F0.0 F1.0 F0.1 F1.1 F0.2 F1.2 F0.3 B1.0 [F1.3&B0.0] [F0.4&B1.1] [F1.4&B0.1] [F0.5&B1.2] [F1.5&B0.2] [F0.6&B1.3] [F1.6&B0.3] B1.4 B0.4 B1.5 I0.5 I1.6 I0.6 W W W",
    };
    expect_golden(DINF_PIPE_DUALPIPEV, 3, 7, 0, golden);
}

/* Reference 2.4: DualPipeV(P, N) on rank r computes what DualPipe(2P, 2N)
 * computes on rank r. */
Test(pipe_schedule, dualpipev_is_the_first_half_of_dualpipe) {
    for (int P = 1; P <= 8; P++)
        for (int N = 2 * P; N <= 2 * P + 9; N++)
            for (int r = 0; r < P; r++) {
                char *v = stream_text(DINF_PIPE_DUALPIPEV, P, N, 0, r);
                char *d = stream_text(DINF_PIPE_DUALPIPE, 2 * P, 2 * N, 0, r);
                cr_assert_str_eq(v, d, "P=%d N=%d rank %d", P, N, r);
                free(v);
                free(d);
            }
}

/* Rank PP-1-r runs rank r's stream with the directions swapped. */
Test(pipe_schedule, dualpipe_mirror_ranks_swap_directions) {
    for (int R = 2; R <= 12; R += 2)
        for (int N = 2 * R; N <= 2 * R + 8; N += 2)
            for (int r = 0; r < R; r++) {
                int64_t n1, n2;
                dinf_pipe_schedule(DINF_PIPE_DUALPIPE, R, N, 0, r, NULL, 0, &n1);
                dinf_pipe_schedule(DINF_PIPE_DUALPIPE, R, N, 0, R - 1 - r, NULL, 0, &n2);
                cr_assert_eq(n1, n2);
                dinf_pipe_op *a = malloc((size_t)n1 * sizeof *a), *b = malloc((size_t)n2 * sizeof *b);
                dinf_pipe_schedule(DINF_PIPE_DUALPIPE, R, N, 0, r, a, n1, &n1);
                dinf_pipe_schedule(DINF_PIPE_DUALPIPE, R, N, 0, R - 1 - r, b, n2, &n2);
                for (int64_t i = 0; i < n1; i++) {
                    cr_assert_eq(a[i].type, b[i].type);
                    if (a[i].dir >= 0)
                        cr_assert_eq(a[i].dir, 1 - b[i].dir, "R=%d N=%d r=%d op %lld", R, N, r,
                                     (long long)i);
                    cr_assert_eq(a[i].mb, b[i].mb);
                    if (a[i].dir2 >= 0)
                        cr_assert_eq(a[i].dir2, 1 - b[i].dir2);
                }
                free(a);
                free(b);
            }
}

Test(pipe_schedule, text_round_trips) {
    const char *ops[] = {"F0.3", "B1.2", "I0.2", "W", "F0.7&B1.3", "Sf0.0@1", "Sb1.12@3",
                         "Rf1.2@0", "Rb0.5@2", "|", "F12.345"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        dinf_pipe_op op;
        char buf[32];
        cr_assert_eq(dinf_pipe_op_parse(ops[i], &op), DINF_STATUS_OK, "%s: %s", ops[i],
                     dinf_last_error());
        cr_assert_eq(dinf_pipe_op_format(&op, buf, sizeof buf), DINF_STATUS_OK);
        cr_assert_str_eq(buf, ops[i]);
    }
    dinf_pipe_op op;
    cr_assert_eq(dinf_pipe_op_parse("[F0.3&B1.1]", &op), DINF_STATUS_OK);
    cr_assert_eq(op.type, DINF_PIPE_OP_FB);
    cr_assert_eq(op.dir2, 1);
    cr_assert_eq(op.mb2, 1);
}

Test(pipe_schedule, malformed_text_is_rejected_with_its_position) {
    const char *bad[] = {"", "X", "F", "F0", "F0.", "F.1", "F0.1x", "B0.1&B1.1", "[F0.1]",
                         "[F0.1&B1.1", "F0.1&I1.1", "Sx0.1@1", "Sf0.1", "Sf0.1@", "Sf0.1@2z",
                         "W1", "||", "F99999999999.1", "I0.1&B0.2", "F-1.2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dinf_pipe_op op;
        cr_assert_eq(dinf_pipe_op_parse(bad[i], &op), DINF_STATUS_INVALID_ARGUMENT,
                     "\"%s\" was accepted", bad[i]);
        cr_assert(strstr(dinf_last_error(), "dinf_pipe_op_parse") != NULL, "%s",
                  dinf_last_error());
    }
    dinf_pipe_op op;
    dinf_pipe_op_parse("F0.1x", &op);
    cr_assert(strstr(dinf_last_error(), "offset 4") != NULL, "%s", dinf_last_error());
    int64_t n;
    dinf_pipe_op two[2];
    cr_assert_eq(dinf_pipe_stream_parse("F0.0 | B0.0 W", two, 2, &n), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(n, 4, "the needed count is reported");
    cr_assert_eq(dinf_pipe_stream_parse("F0.0 | Q1", NULL, 0, &n), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "token 2") != NULL, "%s", dinf_last_error());
}

Test(pipe_schedule, invalid_sizes_are_rejected) {
    int64_t n;
    struct {
        dinf_pipe_kind kind;
        int R, N;
        const char *needle;
    } cases[] = {
        {DINF_PIPE_DUALPIPE, 3, 12, "num_ranks=3 must be even"},
        {DINF_PIPE_DUALPIPE, 4, 9, "num_chunks=9 must be even"},
        {DINF_PIPE_DUALPIPE, 4, 6, "num_chunks=6 must be >= 2 * num_ranks = 8"},
        {DINF_PIPE_DUALPIPEV, 3, 5, "num_chunks=5 must be >= 2 * num_ranks = 6"},
        {DINF_PIPE_ZB1P, 4, 3, "num_chunks=3 must be >= num_ranks=4"},
        {DINF_PIPE_1F1B, 0, 3, "num_ranks=0 must be in [1,"},
        {DINF_PIPE_1F1B, 2, 0, "num_chunks=0 must be in [1,"},
        {(dinf_pipe_kind)7, 2, 4, "kind=7 is not a dinf_pipe_kind"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(dinf_pipe_schedule(cases[i].kind, cases[i].R, cases[i].N, 0, 0, NULL, 0, &n),
                     DINF_STATUS_INVALID_ARGUMENT, "case %zu", i);
        cr_assert(strstr(dinf_last_error(), cases[i].needle) != NULL, "case %zu: %s", i,
                  dinf_last_error());
    }
    cr_assert_eq(dinf_pipe_schedule(DINF_PIPE_1F1B, 2, 4, 0, 2, NULL, 0, &n),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "rank=2 is not in [0, num_ranks=2)") != NULL);
    cr_assert_eq(dinf_pipe_schedule(DINF_PIPE_1F1B, 2, 4, 4, 0, NULL, 0, &n),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_pipe_schedule(DINF_PIPE_1F1B, 2, 4, 0, 0, NULL, 0, NULL),
                 DINF_STATUS_INVALID_ARGUMENT);
    dinf_pipe_op few[3];
    cr_assert_eq(dinf_pipe_schedule(DINF_PIPE_1F1B, 2, 4, 0, 0, few, 3, &n),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(n, 8, "the needed length is reported");
}
