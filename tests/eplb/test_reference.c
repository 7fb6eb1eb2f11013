/*
 * EPLB against upstream: the README example, the global-policy variant, the
 * tie vectors (reference 8.10), and 400 generated cases
 * (tests/eplb/data/vectors.txt, from tools/gen_eplb_vectors.py running
 * upstream eplb.py on CPU torch). Every output must be identical.
 */
#include "eplb_test_util.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

typedef struct plan {
    int64_t *phy2log, *phy_replica, *logcnt, *log2phy, width, max_logcnt;
} plan;

static dinf_status make_plan(const float *w, int64_t L, int64_t E, int64_t R, int64_t G, int64_t N,
                             int64_t P, const dinf_eplb_options *opt, plan *out) {
    memset(out, 0, sizeof *out);
    dinf_status st = dinf_eplb_max_logcnt_bound(E, R, G, N, P, opt, &out->width);
    if (st != DINF_STATUS_OK)
        return st;
    out->phy2log = malloc((size_t)(L * R) * sizeof(int64_t));
    out->phy_replica = malloc((size_t)(L * R) * sizeof(int64_t));
    out->logcnt = malloc((size_t)(L * E) * sizeof(int64_t));
    out->log2phy = malloc((size_t)(L * E * out->width) * sizeof(int64_t));
    /* poison: an unwritten element must fail the comparison */
    memset(out->phy2log, 0x5a, (size_t)(L * R) * sizeof(int64_t));
    memset(out->logcnt, 0x5a, (size_t)(L * E) * sizeof(int64_t));
    memset(out->log2phy, 0x5a, (size_t)(L * E * out->width) * sizeof(int64_t));
    return dinf_eplb_rebalance_experts(w, L, E, R, G, N, P, opt, out->phy2log, out->phy_replica,
                                       out->logcnt, out->log2phy, out->width, &out->max_logcnt,
                                       NULL, 0);
}

static void free_plan(plan *p) {
    free(p->phy2log);
    free(p->phy_replica);
    free(p->logcnt);
    free(p->log2phy);
}

/* Compare log2phy of width p->width against the expected [L][E][M]. */
static int log2phy_equal(const plan *p, const int64_t *expected, int64_t L, int64_t E, int64_t M) {
    if (p->max_logcnt != M)
        return 0;
    for (int64_t r = 0; r < L * E; r++)
        for (int64_t k = 0; k < p->width; k++) {
            int64_t want = k < M ? expected[r * M + k] : -1;
            if (p->log2phy[r * p->width + k] != want)
                return 0;
        }
    return 1;
}

static void expect_i64_eq(const int64_t *got, const int64_t *want, int64_t n, const char *what,
                          const char *label) {
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s: %s[%lld] = %lld, want %lld", label, what, (long long)i,
                     (long long)got[i], (long long)want[i]);
}

static const float readme_weight[2 * 12] = {
    90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86,
    20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27,
};

Test(eplb_reference, readme_example) {
    plan p;
    cr_assert_eq(make_plan(readme_weight, 2, 12, 16, 4, 2, 8, NULL, &p), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    const int64_t phy2log[] = {5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1,
                               7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1};
    const int64_t logcnt[] = {1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1,
                              1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1};
    const int64_t log2phy[] = {12, -1, 15, 13, 11, -1, 6,  -1, 7, 5,  0, 2,
                               1,  -1, 3,  -1, 4,  -1, 9,  -1, 8, 10, 14, -1,
                               13, -1, 15, 11, 8,  -1, 14, -1, 9, -1, 10, 12,
                               2,  4,  0,  -1, 6,  3,  7,  -1, 1, -1, 5,  -1};
    expect_i64_eq(p.phy2log, phy2log, 32, "phy2log", "readme");
    expect_i64_eq(p.logcnt, logcnt, 24, "logcnt", "readme");
    cr_assert_eq(p.max_logcnt, 2);
    cr_assert(log2phy_equal(&p, log2phy, 2, 12, 2), "readme: log2phy differs");
    free_plan(&p);
}

Test(eplb_reference, global_policy_variant) {
    plan p;
    /* G=3 is not a multiple of 2 nodes: global policy. */
    cr_assert_eq(make_plan(readme_weight, 2, 12, 16, 3, 2, 8, NULL, &p), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    const int64_t phy2log[] = {10, 6, 10, 7, 0, 2, 11, 4, 5, 9, 5, 4, 8, 3, 1, 1,
                               1, 10, 2, 4, 5, 11, 5, 0, 6, 7, 6, 3, 8, 8, 9, 7};
    const int64_t logcnt[] = {1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1,
                              1, 1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 1};
    const int64_t log2phy[] = {4,  -1, 14, 15, 5,  -1, 13, -1, 11, 7,  8,  10,
                               1,  -1, 3,  -1, 12, -1, 9,  -1, 0,  2,  6,  -1,
                               7,  -1, 0,  -1, 2,  -1, 11, -1, 3,  -1, 4,  6,
                               8,  10, 15, 9,  12, 13, 14, -1, 1,  -1, 5,  -1};
    expect_i64_eq(p.phy2log, phy2log, 32, "phy2log", "global");
    expect_i64_eq(p.logcnt, logcnt, 24, "logcnt", "global");
    cr_assert(log2phy_equal(&p, log2phy, 2, 12, 2), "global: log2phy differs");
    free_plan(&p);
}

Test(eplb_reference, tie_vector_a_needs_introsort_order) {
    const float w[16] = {30, 20, 40, 10, 10, 10, 30, 10, 20, 10, 10, 40, 40, 10, 20, 10};
    plan p;
    cr_assert_eq(make_plan(w, 1, 16, 24, 4, 1, 4, NULL, &p), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    const int64_t phy2log[] = {11, 11, 2, 7, 10, 1, 12, 6, 6, 1, 13, 3,
                               12, 0,  2, 4, 5,  9, 14, 0, 2, 8, 15, 8};
    const int64_t logcnt[] = {2, 2, 3, 1, 1, 1, 2, 1, 2, 1, 1, 2, 2, 1, 1, 1};
    const int64_t log2phy[] = {19, 13, -1, 5,  9,  -1, 14, 2,  20, 11, -1, -1,
                               15, -1, -1, 16, -1, -1, 8,  7,  -1, 3,  -1, -1,
                               23, 21, -1, 17, -1, -1, 4,  -1, -1, 0,  1,  -1,
                               6,  12, -1, 10, -1, -1, 18, -1, -1, 22, -1, -1};
    expect_i64_eq(p.phy2log, phy2log, 24, "phy2log", "tie A");
    expect_i64_eq(p.logcnt, logcnt, 16, "logcnt", "tie A");
    cr_assert(log2phy_equal(&p, log2phy, 1, 16, 3), "tie A: log2phy differs");
    free_plan(&p);
}

Test(eplb_reference, tie_vector_b_two_nodes) {
    const float w[32] = {80, 5, 40, 10, 80, 5,  20, 40, 80, 10, 5,  40, 40, 5,  5,  5,
                         10, 40, 5, 40, 5,  80, 5,  80, 80, 5,  10, 10, 5,  10, 40, 40};
    plan p;
    cr_assert_eq(make_plan(w, 1, 32, 48, 8, 2, 8, NULL, &p), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    const int64_t phy2log[] = {12, 8,  23, 16, 13, 10, 19, 23, 17, 17, 15, 20, 21, 23, 21, 11,
                               9,  22, 8,  21, 8,  11, 18, 14, 31, 0,  4,  6,  25, 5,  30, 4,
                               7,  7,  26, 1,  24, 24, 24, 2,  27, 3,  4,  0,  0,  2,  29, 28};
    const int64_t logcnt[] = {3, 1, 2, 1, 3, 1, 1, 2, 3, 1, 1, 2, 1, 1, 1, 1,
                              1, 2, 1, 1, 1, 3, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    expect_i64_eq(p.phy2log, phy2log, 48, "phy2log", "tie B");
    expect_i64_eq(p.logcnt, logcnt, 32, "logcnt", "tie B");
    cr_assert_eq(p.max_logcnt, 3);
    const int64_t log2phy[] = {
        43, 25, 44, 35, -1, -1, 39, 45, -1, 41, -1, -1, 26, 31, 42, 29, -1, -1, 27, -1, -1, 33, 32, -1,
        20, 1,  18, 16, -1, -1, 5,  -1, -1, 15, 21, -1, 0,  -1, -1, 4,  -1, -1, 23, -1, -1, 10, -1, -1,
        3,  -1, -1, 8,  9,  -1, 22, -1, -1, 6,  -1, -1, 11, -1, -1, 12, 14, 19, 17, -1, -1, 2,  7,  13,
        38, 37, 36, 28, -1, -1, 34, -1, -1, 40, -1, -1, 47, -1, -1, 46, -1, -1, 30, -1, -1, 24, -1, -1};
    cr_assert(log2phy_equal(&p, log2phy, 1, 32, 3), "tie B: log2phy differs");
    const char *why = eplb_check_invariants(p.phy2log, p.phy_replica, p.logcnt, p.log2phy,
                                            p.width, 1, 32, 48);
    cr_assert_null(why, "tie B: %s", why);
    free_plan(&p);
}

Test(eplb_reference, upstream_generated_vectors, .timeout = 120) {
    eplb_vector *cases;
    int n = eplb_read_vectors(eplb_data_path("vectors.txt"), &cases);
    cr_assert_geq(n, 400, "expected at least 400 vectors, read %d", n);
    for (int i = 0; i < n; i++) {
        const eplb_vector *c = &cases[i];
        char label[160];
        snprintf(label, sizeof label, "case %d (L=%lld E=%lld R=%lld G=%lld N=%lld P=%lld)", c->id,
                 (long long)c->L, (long long)c->E, (long long)c->R, (long long)c->G,
                 (long long)c->N, (long long)c->P);
        plan p;
        cr_assert_eq(make_plan(c->w, c->L, c->E, c->R, c->G, c->N, c->P, NULL, &p), DINF_STATUS_OK,
                     "%s: %s", label, dinf_last_error());
        expect_i64_eq(p.phy2log, c->phy2log, c->L * c->R, "phy2log", label);
        expect_i64_eq(p.logcnt, c->logcnt, c->L * c->E, "logcnt", label);
        cr_assert_eq(p.max_logcnt, c->M, "%s: max_logcnt %lld, want %lld", label,
                     (long long)p.max_logcnt, (long long)c->M);
        cr_assert(log2phy_equal(&p, c->log2phy, c->L, c->E, c->M), "%s: log2phy differs", label);
        cr_assert_leq(c->M, p.width, "%s: bound %lld below max_logcnt", label, (long long)p.width);
        free_plan(&p);
    }
    eplb_free_vectors(cases, n);
}
