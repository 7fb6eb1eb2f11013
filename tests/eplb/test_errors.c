/* Every bad input the EPLB API rejects: a status, a precise message, no crash. */
#include "eplb_test_util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const float w12[12] = {90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86};
static int64_t phy2log[64], rep[64], logcnt[64], log2phy[256], max_logcnt;

/* Run the planner on the README layer with the given sizes. */
static dinf_status run(const float *w, int64_t L, int64_t E, int64_t R, int64_t G, int64_t N,
                       int64_t P, const dinf_eplb_options *opt) {
    return dinf_eplb_rebalance_experts(w, L, E, R, G, N, P, opt, phy2log, rep, logcnt, log2phy, 4,
                                       &max_logcnt, NULL, 0);
}

static void expect_error(dinf_status st, dinf_status want, const char *needle) {
    cr_assert_eq(st, want, "status %d (%s), want %d; message: %s", st, dinf_status_string(st), want,
                 dinf_last_error());
    cr_assert(strstr(dinf_last_error(), needle) != NULL, "message \"%s\" lacks \"%s\"",
              dinf_last_error(), needle);
}

#define INVALID DINF_STATUS_INVALID_ARGUMENT

Test(eplb_errors, divisibility_rules) {
    expect_error(run(w12, 1, 12, 16, 4, 3, 8, NULL), INVALID,
                 "num_gpus=8 is not a multiple of num_nodes=3");
    expect_error(run(w12, 1, 12, 18, 4, 2, 8, NULL), INVALID,
                 "num_replicas=18 is not a multiple of num_gpus=8");
    expect_error(run(w12, 1, 12, 16, 8, 2, 8, NULL), INVALID,
                 "num_logical_experts=12 is not a multiple of num_groups=8");
    /* The global policy (5 % 2 != 0) does not need E % G == 0, as upstream. */
    char before[1024];
    snprintf(before, sizeof before, "%s", dinf_last_error());
    cr_assert_eq(run(w12, 1, 12, 16, 5, 2, 8, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_str_eq(dinf_last_error(), before, "a success must leave the message alone");
}

Test(eplb_errors, fewer_replicas_than_experts) {
    expect_error(run(w12, 1, 12, 8, 4, 2, 8, NULL), INVALID,
                 "dinf_eplb_rebalance_experts: num_replicas=8 is smaller than num_logical_experts=12");
}

Test(eplb_errors, zero_or_negative_sizes) {
    expect_error(run(w12, 0, 12, 16, 4, 2, 8, NULL), INVALID, "num_layers=0 must be >= 1");
    expect_error(run(w12, 1, 0, 16, 4, 2, 8, NULL), INVALID, "num_logical_experts=0 must be >= 1");
    expect_error(run(w12, 1, 12, 16, 0, 2, 8, NULL), INVALID, "num_groups=0 must be >= 1");
    expect_error(run(w12, 1, 12, 16, 4, -2, 8, NULL), INVALID, "num_nodes=-2 must be >= 1");
    expect_error(run(w12, 1, 12, 16, 4, 2, 0, NULL), INVALID, "num_gpus=0 must be >= 1");
    expect_error(run(w12, -1, 12, 16, 4, 2, 8, NULL), INVALID, "num_layers=-1");
}

Test(eplb_errors, bad_loads_name_their_position) {
    float w[24];
    memcpy(w, w12, sizeof w12);
    memcpy(w + 12, w12, sizeof w12);
    w[17] = -1.0f;
    expect_error(run(w, 2, 12, 16, 4, 2, 8, NULL), INVALID, "weight[1][5]=-1");
    w[17] = NAN;
    expect_error(run(w, 2, 12, 16, 4, 2, 8, NULL), INVALID, "weight[1][5]=nan");
    w[17] = INFINITY;
    expect_error(run(w, 2, 12, 16, 4, 2, 8, NULL), INVALID, "weight[1][5]=inf");
    w[17] = -INFINITY;
    expect_error(run(w, 2, 12, 16, 4, 2, 8, NULL), INVALID, "must be finite and >= 0");
    w[17] = -0.0f; /* negative zero is zero */
    cr_assert_eq(run(w, 2, 12, 16, 4, 2, 8, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
}

Test(eplb_errors, null_pointers) {
    expect_error(run(NULL, 1, 12, 16, 4, 2, 8, NULL), INVALID, "weight is NULL");
    expect_error(dinf_eplb_rebalance_experts(w12, 1, 12, 16, 4, 2, 8, NULL, NULL, rep, logcnt,
                                             log2phy, 4, NULL, NULL, 0),
                 INVALID, "phy2log is NULL");
    expect_error(dinf_eplb_rebalance_experts(w12, 1, 12, 16, 4, 2, 8, NULL, phy2log, rep, NULL,
                                             log2phy, 4, NULL, NULL, 0),
                 INVALID, "logcnt is NULL");
    int64_t bound;
    size_t bytes;
    expect_error(dinf_eplb_max_logcnt_bound(12, 16, 4, 2, 8, NULL, NULL), INVALID, "bound is NULL");
    expect_error(dinf_eplb_workspace_size(12, 16, 4, 2, 8, NULL, NULL), INVALID, "bytes is NULL");
    expect_error(dinf_eplb_log2phy(NULL, NULL, 1, 12, 16, NULL, log2phy, 4, NULL), INVALID,
                 "phy2log is NULL");
    expect_error(dinf_eplb_balance_report(w12, NULL, 1, 12, 16, 2, 8, NULL, NULL, NULL, NULL, NULL),
                 INVALID, "phy2log is NULL");
    (void)bound;
    (void)bytes;
}

Test(eplb_errors, products_that_overflow) {
    /* L * R overflows int64 */
    expect_error(dinf_eplb_rebalance_experts(w12, INT64_MAX / 4, 12, 16, 4, 2, 8, NULL, phy2log,
                                             rep, logcnt, log2phy, 4, NULL, NULL, 0),
                 INVALID, "overflows");
    /* L * E * width overflows */
    expect_error(dinf_eplb_rebalance_experts(w12, 1, 12, 16, 4, 2, 8, NULL, phy2log, rep, logcnt,
                                             log2phy, INT64_MAX / 8, NULL, NULL, 0),
                 INVALID, "overflows");
    /* sizes beyond the planner's int32 indices */
    expect_error(run(w12, 1, 12, (int64_t)1 << 40, 4, 2, 8, NULL), INVALID, "must each be <=");
    int64_t bound;
    expect_error(dinf_eplb_max_logcnt_bound(INT64_MAX, INT64_MAX, 1, 1, 1, NULL, &bound), INVALID,
                 "must each be <=");
}

Test(eplb_errors, bad_options) {
    dinf_eplb_options o = DINF_EPLB_OPTIONS_INIT;
    o.size = 4;
    expect_error(run(w12, 1, 12, 16, 4, 2, 8, &o), INVALID, "options->size=4");
    o = (dinf_eplb_options)DINF_EPLB_OPTIONS_INIT;
    o.magic = 0;
    expect_error(run(w12, 1, 12, 16, 4, 2, 8, &o), INVALID, "options->magic=0x00000000");
    o = (dinf_eplb_options)DINF_EPLB_OPTIONS_INIT;
    o.distinct_experts_per_gpu = 2;
    expect_error(run(w12, 1, 12, 16, 4, 2, 8, &o), INVALID,
                 "options->distinct_experts_per_gpu=2 must be 0 or 1");
    o = (dinf_eplb_options)DINF_EPLB_OPTIONS_INIT;
    o.reserved = 1;
    expect_error(run(w12, 1, 12, 16, 4, 2, 8, &o), INVALID, "options->reserved=1 must be 0");
}

Test(eplb_errors, workspace_too_small_or_misaligned) {
    size_t bytes;
    cr_assert_eq(dinf_eplb_workspace_size(12, 16, 4, 2, 8, NULL, &bytes), DINF_STATUS_OK);
    cr_assert_gt(bytes, 0);
    uint64_t *ws = malloc(bytes + 16);
    char expect[96];
    snprintf(expect, sizeof expect, "workspace_bytes=%zu is smaller than the %zu bytes", bytes - 1,
             bytes);
    expect_error(dinf_eplb_rebalance_experts(w12, 1, 12, 16, 4, 2, 8, NULL, phy2log, rep, logcnt,
                                             log2phy, 4, NULL, ws, bytes - 1),
                 INVALID, expect);
    expect_error(dinf_eplb_rebalance_experts(w12, 1, 12, 16, 4, 2, 8, NULL, phy2log, rep, logcnt,
                                             log2phy, 4, NULL, (char *)ws + 4, bytes),
                 INVALID, "is not 8-byte aligned");
    free(ws);
}

Test(eplb_errors, log2phy_too_narrow_reports_the_width_needed) {
    max_logcnt = -1;
    expect_error(dinf_eplb_rebalance_experts(w12, 1, 12, 16, 4, 2, 8, NULL, phy2log, rep, logcnt,
                                             log2phy, 1, &max_logcnt, NULL, 0),
                 INVALID, "log2phy_width=1 is smaller than the plan's max_logcnt=2");
    cr_assert_eq(max_logcnt, 2, "max_logcnt must be reported when the width was the only problem");
    expect_error(dinf_eplb_rebalance_experts(w12, 1, 12, 16, 4, 2, 8, NULL, phy2log, rep, logcnt,
                                             log2phy, 0, &max_logcnt, NULL, 0),
                 INVALID, "log2phy_width=0 must be >= 1");
}

Test(eplb_errors, log2phy_rejects_inconsistent_plans) {
    int64_t p[6] = {0, 1, 2, 0, 1, 2}, r[6] = {0, 0, 0, 1, 1, 1}, out[3 * 2], big[3 * 4];
    cr_assert_eq(dinf_eplb_log2phy(p, r, 1, 3, 6, NULL, out, 2, NULL), DINF_STATUS_OK);
    p[4] = 3;
    expect_error(dinf_eplb_log2phy(p, r, 1, 3, 6, NULL, out, 2, NULL), INVALID,
                 "phy2log[0][4]=3 is not an expert in [0, 3)");
    p[4] = 0; /* expert 0 now has 3 replicas (numbers 0, 1, 1), expert 1 one */
    expect_error(dinf_eplb_log2phy(p, r, 1, 3, 6, NULL, big, 4, NULL), INVALID,
                 "layer 0: replica 1 of expert 0 appears twice (slots 3 and 4)");
    cr_assert(strstr(dinf_last_error(), "dinf_eplb_log2phy") != NULL);
    expect_error(dinf_eplb_log2phy(p, r, 1, 3, 6, NULL, out, 2, NULL), INVALID,
                 "layer 0: expert 0 has 3 replicas, more than log2phy_width=2");
    int64_t p2[6] = {0, 0, 0, 1, 2, 2};
    int64_t r2b[6] = {0, 1, 1, 0, 0, 1};
    expect_error(dinf_eplb_log2phy(p2, r2b, 1, 3, 6, NULL, big, 4, NULL), INVALID,
                 "layer 0: replica 1 of expert 0 appears twice (slots 1 and 2)");
    int64_t p3[6] = {0, 0, 0, 0, 1, 1};
    expect_error(dinf_eplb_log2phy(p3, NULL, 1, 3, 6, NULL, big, 4, NULL), INVALID,
                 "layer 0: expert 2 has no slot in phy2log");
    int64_t p4[6] = {0, 0, 1, 2, 1, 2}, r4[6] = {0, 2, 0, 0, 1, 1};
    expect_error(dinf_eplb_log2phy(p4, r4, 1, 3, 6, NULL, big, 4, NULL), INVALID,
                 "phy_replica[0][1]=2: expert 0 has 2 replicas, so its replica numbers are 0..1");
    int64_t r5[6] = {0, -1, 0, 0, 1, 1};
    expect_error(dinf_eplb_log2phy(p4, r5, 1, 3, 6, NULL, big, 4, NULL), INVALID,
                 "phy_replica[0][1]=-1");
    /* counts only: log2phy NULL still checks the plan */
    int64_t counts[3], max;
    expect_error(dinf_eplb_log2phy(p4, r4, 1, 3, 6, counts, NULL, 0, &max), INVALID,
                 "phy_replica[0][1]=2");
    cr_assert_eq(dinf_eplb_log2phy(p4, NULL, 1, 3, 6, counts, NULL, 0, &max), DINF_STATUS_OK);
    cr_assert_eq(max, 2);
}

Test(eplb_errors, overlapping_buffers_are_rejected_before_any_write) {
    static int64_t buf[4096];
    const float w[12] = {90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86};
    for (int i = 0; i < 4096; i++)
        buf[i] = 77;
    /* log2phy overlapping phy2log, as the reviewer's reproduction did */
    expect_error(dinf_eplb_rebalance_experts(w, 1, 12, 16, 4, 2, 8, NULL, buf, NULL, logcnt, buf,
                                             4, NULL, NULL, 0),
                 INVALID, "phy2log and log2phy overlap");
    expect_error(dinf_eplb_rebalance_experts(w, 1, 12, 16, 4, 2, 8, NULL, buf, buf + 8, logcnt,
                                             NULL, 0, NULL, NULL, 0),
                 INVALID, "phy2log and phy_replica overlap");
    expect_error(dinf_eplb_rebalance_experts(w, 1, 12, 16, 4, 2, 8, NULL, phy2log, NULL, logcnt,
                                             NULL, 0, NULL, logcnt, 8),
                 INVALID, "logcnt and workspace overlap");
    expect_error(dinf_eplb_rebalance_experts((const float *)buf, 1, 12, 16, 4, 2, 8, NULL, buf + 2,
                                             NULL, logcnt, NULL, 0, NULL, NULL, 0),
                 INVALID, "weight and phy2log overlap");
    for (int i = 0; i < 4096; i++)
        cr_assert_eq(buf[i], i < 6 ? buf[i] : 77, "nothing written on failure (index %d)", i);
    int64_t cur[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2, 3};
    expect_error(dinf_eplb_rebalance_incremental(w, 1, 12, 16, 4, 2, 8, NULL, 0.1, cur, buf, NULL,
                                                 buf + 10, NULL, NULL, NULL, 0),
                 INVALID, "phy2log and logcnt overlap");
    int64_t p[6] = {0, 1, 2, 0, 1, 2};
    expect_error(dinf_eplb_log2phy(p, NULL, 1, 3, 6, buf, buf + 1, 2, NULL), INVALID,
                 "logcnt and log2phy overlap");
    double loads[64];
    expect_error(dinf_eplb_balance_report(w, cur, 1, 12, 16, 2, 8, loads, loads + 4, NULL, NULL,
                                          NULL),
                 INVALID, "gpu_load and node_load overlap");
}

Test(eplb_errors, incremental_rejects_bad_current_plans_and_tolerances) {
    int64_t cur[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2, 3}, out[16], lc[12];
    cr_assert_eq(dinf_eplb_rebalance_incremental(w12, 1, 12, 16, 4, 2, 8, NULL, 0.1, cur, out,
                                                 NULL, lc, NULL, NULL, NULL, 0),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    expect_error(dinf_eplb_rebalance_incremental(w12, 1, 12, 16, 4, 2, 8, NULL, -0.1, cur, out,
                                                 NULL, lc, NULL, NULL, NULL, 0),
                 INVALID, "tolerance=-0.1 must be finite and >= 0");
    expect_error(dinf_eplb_rebalance_incremental(w12, 1, 12, 16, 4, 2, 8, NULL, NAN, cur, out,
                                                 NULL, lc, NULL, NULL, NULL, 0),
                 INVALID, "tolerance=nan");
    expect_error(dinf_eplb_rebalance_incremental(w12, 1, 12, 16, 4, 2, 8, NULL, 0.1, cur, cur,
                                                 NULL, lc, NULL, NULL, NULL, 0),
                 INVALID, "current_phy2log and phy2log overlap");
    cur[5] = 12;
    expect_error(dinf_eplb_rebalance_incremental(w12, 1, 12, 16, 4, 2, 8, NULL, 0.1, cur, out,
                                                 NULL, lc, NULL, NULL, NULL, 0),
                 INVALID, "current_phy2log[0][5]=12 is not an expert in [0, 12)");
    cur[5] = 4; /* expert 5 now has no replica */
    expect_error(dinf_eplb_rebalance_incremental(w12, 1, 12, 16, 4, 2, 8, NULL, 0.1, cur, out,
                                                 NULL, lc, NULL, NULL, NULL, 0),
                 INVALID, "current_phy2log layer 0 has no replica of expert 5");
    expect_error(dinf_eplb_rebalance_incremental(NULL, 1, 12, 16, 4, 2, 8, NULL, 0.1, cur, out,
                                                 NULL, lc, NULL, NULL, NULL, 0),
                 INVALID, "weight is NULL");
}

Test(eplb_errors, balance_report_rejects_bad_plans) {
    int64_t p[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 1, 2, 99};
    expect_error(dinf_eplb_balance_report(w12, p, 1, 12, 16, 2, 8, NULL, NULL, NULL, NULL, NULL),
                 INVALID, "phy2log[0][15]=99 is not an expert in [0, 12)");
    expect_error(dinf_eplb_balance_report(w12, p, 1, 12, 16, 3, 8, NULL, NULL, NULL, NULL, NULL),
                 INVALID, "num_gpus=8 is not a multiple of num_nodes=3");
    expect_error(dinf_eplb_balance_report(w12, p, 1, 12, 15, 1, 8, NULL, NULL, NULL, NULL, NULL),
                 INVALID, "num_replicas=15 is not a multiple of num_gpus=8");
}
