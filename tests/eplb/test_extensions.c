/*
 * Beyond upstream: distinct experts per GPU (issue #22), migration-aware
 * re-planning (issue #25), and the balance report.
 */
#include "eplb_test_util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const float readme_weight[2 * 12] = {
    90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86,
    20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27,
};

static dinf_eplb_options distinct_options(void) {
    dinf_eplb_options o = DINF_EPLB_OPTIONS_INIT;
    o.distinct_experts_per_gpu = 1;
    return o;
}

/* Plan with or without the option; returns max_logcnt. */
static int64_t plan(const float *w, int64_t L, int64_t E, int64_t R, int64_t G, int64_t N,
                    int64_t P, const dinf_eplb_options *opt, int64_t *phy2log, int64_t *logcnt) {
    int64_t width, max;
    cr_assert_eq(dinf_eplb_max_logcnt_bound(E, R, G, N, P, opt, &width), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    int64_t *rep = malloc((size_t)(L * R) * sizeof(int64_t));
    int64_t *log2phy = malloc((size_t)(L * E * width) * sizeof(int64_t));
    cr_assert_eq(dinf_eplb_rebalance_experts(w, L, E, R, G, N, P, opt, phy2log, rep, logcnt,
                                             log2phy, width, &max, NULL, 0),
                 DINF_STATUS_OK, "L=%lld E=%lld R=%lld G=%lld N=%lld P=%lld: %s", (long long)L,
                 (long long)E, (long long)R, (long long)G, (long long)N, (long long)P,
                 dinf_last_error());
    const char *why = eplb_check_invariants(phy2log, rep, logcnt, log2phy, width, L, E, R);
    cr_assert_null(why, "%s", why);
    free(rep);
    free(log2phy);
    return max;
}

/* ----------------------------------------------------- distinct experts --- */

Test(eplb_distinct, readme_example_global_variant_has_no_duplicates) {
    /* Upstream's global-policy plan holds expert 1 twice on GPU 7. */
    int64_t up[32], upc[24], d[32], dc[24];
    plan(readme_weight, 2, 12, 16, 3, 2, 8, NULL, up, upc);
    cr_assert_gt(eplb_count_gpu_duplicates(up, 2, 12, 16, 8), 0, "upstream has duplicates here");
    dinf_eplb_options o = distinct_options();
    plan(readme_weight, 2, 12, 16, 3, 2, 8, &o, d, dc);
    cr_assert_eq(eplb_count_gpu_duplicates(d, 2, 12, 16, 8), 0);
}

Test(eplb_distinct, equals_upstream_when_upstream_has_no_duplicates_else_removes_them,
     .timeout = 60) {
    uint64_t seed = 31337, st = seed;
    int with_dups = 0, without = 0;
    for (int trial = 0; trial < 1500; trial++) {
        int64_t N = 1 + (int64_t)(eplb_rand(&st) % 3);
        int64_t gpn = 1 + (int64_t)(eplb_rand(&st) % 4); /* GPUs per node */
        int64_t P = N * gpn;
        int64_t G = N * (1 + (int64_t)(eplb_rand(&st) % 3));
        if (eplb_rand(&st) % 3 == 0)
            G = N + 1; /* global policy when N > 1 */
        int64_t E = G * (1 + (int64_t)(eplb_rand(&st) % 4));
        int64_t En = (G % N == 0) ? E / N : E;
        int64_t ppg = 1 + (int64_t)(eplb_rand(&st) % (uint64_t)(En < 6 ? En : 6));
        int64_t R = P * ppg, L = 2;
        if (R < E)
            continue;
        float w[2 * 64];
        for (int64_t i = 0; i < L * E; i++)
            w[i] = (float)(eplb_rand(&st) % 6) * (eplb_rand(&st) % 4 == 0 ? 50.0f : 1.0f);
        int64_t up[2 * 512], upc[2 * 64], d[2 * 512], dc[2 * 64];
        plan(w, L, E, R, G, N, P, NULL, up, upc);
        dinf_eplb_options o = distinct_options();
        plan(w, L, E, R, G, N, P, &o, d, dc);
        char label[128];
        snprintf(label, sizeof label, "seed=%llu trial=%d L=%lld E=%lld R=%lld G=%lld N=%lld P=%lld",
                 (unsigned long long)seed, trial, (long long)L, (long long)E, (long long)R,
                 (long long)G, (long long)N, (long long)P);
        cr_assert_eq(eplb_count_gpu_duplicates(d, L, E, R, P), 0, "%s: duplicates remain", label);
        if (G % N == 0) {
            const char *why = eplb_check_groups_on_nodes(d, L, E, R, G, N);
            cr_assert_null(why, "%s: %s", label, why);
        }
        if (eplb_count_gpu_duplicates(up, L, E, R, P) == 0) {
            without++;
            cr_assert_eq(memcmp(up, d, (size_t)(L * R) * sizeof(int64_t)), 0,
                         "%s: differs from upstream although upstream has no duplicates", label);
        } else {
            with_dups++;
        }
    }
    cr_assert_gt(with_dups, 100, "too few cases exercised the constraint (%d)", with_dups);
    cr_assert_gt(without, 100, "too few cases compared with upstream (%d)", without);
}

Test(eplb_distinct, caps_a_hot_expert_at_one_replica_per_gpu) {
    /* 4 GPUs x 4 slots, 4 experts: every GPU must hold each expert once. */
    const float w[4] = {1000, 1, 1, 1};
    int64_t up[16], upc[4], d[16], dc[4];
    int64_t up_max = plan(w, 1, 4, 16, 1, 1, 4, NULL, up, upc);
    cr_assert_eq(up_max, 13, "upstream gives the hot expert all 12 extra slots");
    dinf_eplb_options o = distinct_options();
    int64_t bound;
    cr_assert_eq(dinf_eplb_max_logcnt_bound(4, 16, 1, 1, 4, &o, &bound), DINF_STATUS_OK);
    cr_assert_eq(bound, 4);
    int64_t d_max = plan(w, 1, 4, 16, 1, 1, 4, &o, d, dc);
    cr_assert_eq(d_max, 4);
    for (int e = 0; e < 4; e++)
        cr_assert_eq(dc[e], 4, "expert %d", e);
    cr_assert_eq(eplb_count_gpu_duplicates(d, 1, 4, 16, 4), 0);
}

Test(eplb_distinct, impossible_layout_is_rejected) {
    dinf_eplb_options o = distinct_options();
    int64_t bound;
    /* 5 slots per GPU but only 4 experts */
    cr_assert_eq(dinf_eplb_max_logcnt_bound(4, 20, 1, 1, 4, &o, &bound),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "impossible") != NULL, "%s", dinf_last_error());
    cr_assert(strstr(dinf_last_error(), "5 slots") != NULL, "%s", dinf_last_error());
    /* hierarchical: 8 experts over 2 nodes leaves 4 per node; 6 slots per GPU */
    cr_assert_eq(dinf_eplb_max_logcnt_bound(8, 24, 2, 2, 4, &o, &bound),
                 DINF_STATUS_INVALID_ARGUMENT);
    /* without the option the same sizes are fine */
    cr_assert_eq(dinf_eplb_max_logcnt_bound(8, 24, 2, 2, 4, NULL, &bound), DINF_STATUS_OK);
}

/* ------------------------------------------------------- balance report --- */

Test(eplb_report, readme_example_loads) {
    int64_t p[32], c[24];
    plan(readme_weight, 2, 12, 16, 4, 2, 8, NULL, p, c);
    double gpu[16], node[4], gi[2], ni[2];
    dinf_eplb_balance_summary s;
    cr_assert_eq(dinf_eplb_balance_report(readme_weight, p, 2, 12, 16, 2, 8, gpu, node, gi, ni, &s),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    const double want[16] = {121.5, 86.5, 125, 113,   147.5, 131.5, 156,   152,
                             173,   179.5, 120.5, 172, 123,  152,   118.5, 117.5};
    for (int i = 0; i < 16; i++)
        cr_assert_float_eq(gpu[i], want[i], 1e-9, "gpu_load[%d] = %g, want %g", i, gpu[i], want[i]);
    cr_assert_float_eq(node[0], 446.0, 1e-9);
    cr_assert_float_eq(node[1], 587.0, 1e-9);
    cr_assert_float_eq(gi[0], 156.0 / (1033.0 / 8), 1e-12);
    cr_assert_float_eq(ni[0], 587.0 / (1033.0 / 2), 1e-12);
    cr_assert_float_eq(s.max_gpu_load, 179.5, 1e-12);
    cr_assert_float_eq(s.max_gpu_imbalance, gi[0] > gi[1] ? gi[0] : gi[1], 1e-12);
    cr_assert_float_eq(s.mean_gpu_imbalance, (gi[0] + gi[1]) / 2, 1e-12);
    cr_assert_float_eq(s.max_node_imbalance, ni[0] > ni[1] ? ni[0] : ni[1], 1e-12);
    cr_assert(fabs(gi[0] - 1.208) < 1e-3 && fabs(gi[1] - 1.242) < 1e-3, "%g %g", gi[0], gi[1]);
}

Test(eplb_report, zero_loads_are_balanced_and_nulls_allowed) {
    const float w[4] = {0, 0, 0, 0};
    const int64_t p[4] = {0, 1, 2, 3};
    double gi;
    dinf_eplb_balance_summary s;
    cr_assert_eq(dinf_eplb_balance_report(w, p, 1, 4, 4, 1, 2, NULL, NULL, &gi, NULL, &s),
                 DINF_STATUS_OK);
    cr_assert_float_eq(gi, 1.0, 0);
    cr_assert_float_eq(s.max_node_imbalance, 1.0, 0);
    cr_assert_eq(dinf_eplb_balance_report(w, p, 1, 4, 4, 1, 2, NULL, NULL, NULL, NULL, NULL),
                 DINF_STATUS_OK);
}

/* ------------------------------------------------------------ migration --- */

static double max_load(const float *w, const int64_t *p, int64_t E, int64_t R, int64_t N,
                       int64_t P) {
    double *gpu = malloc((size_t)P * sizeof(double));
    cr_assert_eq(dinf_eplb_balance_report(w, p, 1, E, R, N, P, gpu, NULL, NULL, NULL, NULL),
                 DINF_STATUS_OK);
    double m = 0;
    for (int64_t g = 0; g < P; g++)
        m = gpu[g] > m ? gpu[g] : m;
    free(gpu);
    return m;
}

Test(eplb_incremental, unchanged_loads_move_nothing) {
    int64_t cur[32], cnt[24], out[32], rep[32], lc[24], moved[2], total;
    plan(readme_weight, 2, 12, 16, 4, 2, 8, NULL, cur, cnt);
    cr_assert_eq(dinf_eplb_rebalance_incremental(readme_weight, 2, 12, 16, 4, 2, 8, NULL, 0.0, cur,
                                                 out, rep, lc, moved, &total, NULL, 0),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(total, 0);
    cr_assert_eq(memcmp(out, cur, sizeof out), 0);
    cr_assert_eq(memcmp(lc, cnt, sizeof lc), 0);
}

Test(eplb_incremental, stays_within_tolerance_and_moves_fewer_than_a_fresh_plan, .timeout = 120) {
    uint64_t seed = 4242, st = seed;
    int64_t total_moved = 0, total_fresh = 0;
    static const struct {
        int64_t E, R, G, N, P;
    } shapes[] = {
        {12, 16, 4, 2, 8},  {32, 48, 8, 2, 8},  {64, 80, 8, 4, 16},
        {64, 96, 8, 3, 12}, {48, 64, 4, 1, 8},  {256, 288, 8, 4, 32},
        {256, 320, 8, 5, 40},
    };
    static const double tolerances[] = {0.0, 0.02, 0.1};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int64_t E = shapes[si].E, R = shapes[si].R, G = shapes[si].G, N = shapes[si].N,
                      P = shapes[si].P;
        for (int distinct = 0; distinct < 2; distinct++)
            for (size_t ti = 0; ti < 3; ti++) {
                dinf_eplb_options o = distinct_options();
                o.distinct_experts_per_gpu = distinct;
                float *w0 = malloc((size_t)E * sizeof(float)), *w1 = malloc((size_t)E * sizeof(float));
                for (int64_t e = 0; e < E; e++) {
                    w0[e] = (float)(1 + eplb_rand(&st) % 500);
                    /* drift: most experts change a little, a few a lot */
                    double f = (eplb_rand(&st) % 10 == 0) ? 0.2 + (double)(eplb_rand(&st) % 300) / 100
                                                           : 0.9 + (double)(eplb_rand(&st) % 21) / 100;
                    w1[e] = (float)floor(w0[e] * f + 1);
                }
                int64_t *cur = malloc((size_t)R * sizeof(int64_t)), *fresh = malloc((size_t)R * 8);
                int64_t *out = malloc((size_t)R * 8), *rep = malloc((size_t)R * 8);
                int64_t *lc = malloc((size_t)E * 8), *c0 = malloc((size_t)E * 8);
                plan(w0, 1, E, R, G, N, P, &o, cur, c0);
                plan(w1, 1, E, R, G, N, P, &o, fresh, c0);
                int64_t moved, total;
                size_t bytes;
                cr_assert_eq(dinf_eplb_incremental_workspace_size(E, R, G, N, P, &o, &bytes),
                             DINF_STATUS_OK);
                void *ws = malloc(bytes);
                cr_assert_eq(dinf_eplb_rebalance_incremental(w1, 1, E, R, G, N, P, &o,
                                                             tolerances[ti], cur, out, rep, lc,
                                                             &moved, &total, ws, bytes),
                             DINF_STATUS_OK, "%s", dinf_last_error());
                char label[160];
                snprintf(label, sizeof label, "seed=%llu E=%lld R=%lld G=%lld N=%lld P=%lld tol=%g distinct=%d",
                         (unsigned long long)seed, (long long)E, (long long)R, (long long)G,
                         (long long)N, (long long)P, tolerances[ti], distinct);
                /* a valid plan with replica numbers in slot order */
                int64_t *log2phy = malloc((size_t)(E * R) * 8);
                int64_t lc2[512];
                cr_assert_eq(dinf_eplb_log2phy(out, rep, 1, E, R, lc2, log2phy, R, NULL),
                             DINF_STATUS_OK, "%s: %s", label, dinf_last_error());
                const char *why = eplb_check_invariants(out, rep, lc, log2phy, R, 1, E, R);
                cr_assert_null(why, "%s: %s", label, why);
                /* within tolerance of a fresh plan's heaviest GPU */
                double m_out = max_load(w1, out, E, R, N, P), m_fresh = max_load(w1, fresh, E, R, N, P);
                cr_assert_leq(m_out, m_fresh * (1 + tolerances[ti]) * (1 + 1e-9),
                              "%s: heaviest GPU %g vs fresh %g", label, m_out, m_fresh);
                /* the reported count is the number of changed slots */
                int64_t changed = 0, naive = 0;
                for (int64_t x = 0; x < R; x++) {
                    changed += out[x] != cur[x];
                    naive += fresh[x] != cur[x];
                }
                cr_assert_eq(moved, changed, "%s", label);
                cr_assert_eq(total, changed, "%s", label);
                cr_assert_leq(moved, naive, "%s: moved %lld > fresh plan's %lld", label,
                              (long long)moved, (long long)naive);
                if (G % N == 0) {
                    why = eplb_check_groups_on_nodes(out, 1, E, R, G, N);
                    cr_assert_null(why, "%s: %s", label, why);
                }
                if (distinct)
                    cr_assert_eq(eplb_count_gpu_duplicates(out, 1, E, R, P), 0, "%s", label);
                total_moved += moved;
                total_fresh += naive;
                free(w0), free(w1), free(cur), free(fresh), free(out), free(rep), free(lc),
                    free(c0), free(ws), free(log2phy);
            }
    }
    cr_log_info("incremental moved %lld slots where fresh plans move %lld", (long long)total_moved,
                (long long)total_fresh);
    cr_assert_lt(total_moved * 2, total_fresh,
                 "migration-aware plans should move far fewer replicas: %lld vs %lld",
                 (long long)total_moved, (long long)total_fresh);
}

Test(eplb_incremental, large_tolerance_keeps_any_valid_plan) {
    /* A deliberately poor current plan: experts in order, extras on expert 0. */
    int64_t cur[16];
    for (int x = 0; x < 16; x++)
        cur[x] = x < 12 ? x : 0;
    int64_t out[16], lc[12], moved;
    cr_assert_eq(dinf_eplb_rebalance_incremental(readme_weight, 1, 12, 16, 4, 2, 8, NULL, 100.0,
                                                 cur, out, NULL, lc, NULL, &moved, NULL, 0),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(moved, 0);
    cr_assert_eq(memcmp(out, cur, sizeof out), 0);
    cr_assert_eq(lc[0], 5);
}
