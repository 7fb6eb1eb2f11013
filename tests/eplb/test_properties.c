/*
 * Properties of any plan (reference 8.11) on random inputs, the API's
 * optional outputs and workspace forms, and DeepSeek-V3-sized problems.
 */
#include "eplb_test_util.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

typedef struct problem {
    int64_t L, E, R, G, N, P;
} problem;

/* A random valid problem; hierarchical iff G % N == 0. */
static problem random_problem(uint64_t *st) {
    static const int64_t experts[] = {4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128};
    problem p;
    for (;;) {
        p.L = 1 + (int64_t)(eplb_rand(st) % 3);
        p.E = experts[eplb_rand(st) % (sizeof experts / sizeof experts[0])];
        /* groups: a divisor of E */
        do
            p.G = 1 + (int64_t)(eplb_rand(st) % (uint64_t)p.E);
        while (p.E % p.G);
        p.N = 1 + (int64_t)(eplb_rand(st) % 4);
        p.P = p.N * (1 + (int64_t)(eplb_rand(st) % 8));
        int64_t per_gpu_min = (p.E + p.P - 1) / p.P;
        p.R = p.P * (per_gpu_min + (int64_t)(eplb_rand(st) % 4));
        if (p.R >= p.E)
            return p;
    }
}

static void random_weights(float *w, int64_t n, uint64_t *st) {
    int kind = (int)(eplb_rand(st) % 3);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = eplb_rand(st);
        w[i] = kind == 0 ? (float)(r % 5) : kind == 1 ? (float)(r % 100000) / 3.0f
                                                       : (float)((r % 1000) * (r % 1000) % 9973);
    }
}

typedef struct outputs {
    int64_t *phy2log, *rep, *logcnt, *log2phy, width, max;
} outputs;

static void alloc_outputs(outputs *o, const problem *p, int64_t width) {
    o->width = width;
    o->phy2log = malloc((size_t)(p->L * p->R) * sizeof(int64_t));
    o->rep = malloc((size_t)(p->L * p->R) * sizeof(int64_t));
    o->logcnt = malloc((size_t)(p->L * p->E) * sizeof(int64_t));
    o->log2phy = malloc((size_t)(p->L * p->E * width) * sizeof(int64_t));
    memset(o->phy2log, 0x77, (size_t)(p->L * p->R) * sizeof(int64_t));
    memset(o->rep, 0x77, (size_t)(p->L * p->R) * sizeof(int64_t));
    memset(o->logcnt, 0x77, (size_t)(p->L * p->E) * sizeof(int64_t));
    memset(o->log2phy, 0x77, (size_t)(p->L * p->E * width) * sizeof(int64_t));
}

static void free_outputs(outputs *o) {
    free(o->phy2log);
    free(o->rep);
    free(o->logcnt);
    free(o->log2phy);
}

Test(eplb_properties, invariants_hold_on_random_problems, .timeout = 60) {
    uint64_t seed = 2024, st = seed;
    for (int trial = 0; trial < 600; trial++) {
        problem p = random_problem(&st);
        float *w = malloc((size_t)(p.L * p.E) * sizeof(float));
        random_weights(w, p.L * p.E, &st);
        int64_t width;
        cr_assert_eq(dinf_eplb_max_logcnt_bound(p.E, p.R, p.G, p.N, p.P, NULL, &width),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        outputs o;
        alloc_outputs(&o, &p, width);
        cr_assert_eq(dinf_eplb_rebalance_experts(w, p.L, p.E, p.R, p.G, p.N, p.P, NULL, o.phy2log,
                                                 o.rep, o.logcnt, o.log2phy, o.width, &o.max, NULL,
                                                 0),
                     DINF_STATUS_OK, "trial %d: %s", trial, dinf_last_error());
        const char *why =
            eplb_check_invariants(o.phy2log, o.rep, o.logcnt, o.log2phy, o.width, p.L, p.E, p.R);
        cr_assert_null(why, "seed=%llu trial %d (L=%lld E=%lld R=%lld G=%lld N=%lld P=%lld): %s",
                       (unsigned long long)seed, trial, (long long)p.L, (long long)p.E,
                       (long long)p.R, (long long)p.G, (long long)p.N, (long long)p.P, why);
        if (p.G % p.N == 0) {
            why = eplb_check_groups_on_nodes(o.phy2log, p.L, p.E, p.R, p.G, p.N);
            cr_assert_null(why, "trial %d: %s", trial, why);
        }
        int64_t max = 0;
        for (int64_t i = 0; i < p.L * p.E; i++)
            max = o.logcnt[i] > max ? o.logcnt[i] : max;
        cr_assert_eq(o.max, max, "trial %d: max_logcnt %lld, logcnt max %lld", trial,
                     (long long)o.max, (long long)max);
        cr_assert_leq(o.max, width, "trial %d: bound %lld < max_logcnt", trial, (long long)width);
        if (p.R == p.E)
            for (int64_t i = 0; i < p.L * p.E; i++)
                cr_assert_eq(o.logcnt[i], 1, "trial %d: R == E must give a permutation", trial);
        free_outputs(&o);
        free(w);
    }
}

Test(eplb_properties, optional_outputs_and_workspace_forms_agree) {
    uint64_t st = 99;
    for (int trial = 0; trial < 100; trial++) {
        problem p = random_problem(&st);
        float *w = malloc((size_t)(p.L * p.E) * sizeof(float));
        random_weights(w, p.L * p.E, &st);
        int64_t width;
        dinf_eplb_max_logcnt_bound(p.E, p.R, p.G, p.N, p.P, NULL, &width);
        outputs a, b;
        alloc_outputs(&a, &p, width);
        alloc_outputs(&b, &p, width + 3);
        cr_assert_eq(dinf_eplb_rebalance_experts(w, p.L, p.E, p.R, p.G, p.N, p.P, NULL, a.phy2log,
                                                 a.rep, a.logcnt, a.log2phy, a.width, &a.max, NULL,
                                                 0),
                     DINF_STATUS_OK);
        /* Caller workspace, no phy_replica, no log2phy, a wider log2phy later. */
        size_t bytes;
        cr_assert_eq(dinf_eplb_workspace_size(p.E, p.R, p.G, p.N, p.P, NULL, &bytes),
                     DINF_STATUS_OK);
        void *ws = malloc(bytes);
        cr_assert_eq(dinf_eplb_rebalance_experts(w, p.L, p.E, p.R, p.G, p.N, p.P, NULL, b.phy2log,
                                                 NULL, b.logcnt, NULL, 0, &b.max, ws, bytes),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_eq(memcmp(a.phy2log, b.phy2log, (size_t)(p.L * p.R) * sizeof(int64_t)), 0,
                     "trial %d: caller workspace changes phy2log", trial);
        cr_assert_eq(memcmp(a.logcnt, b.logcnt, (size_t)(p.L * p.E) * sizeof(int64_t)), 0);
        cr_assert_eq(a.max, b.max);
        /* log2phy rebuilt from (phy2log, phy_replica) equals the planner's,
         * and a wider row only adds -1 padding. */
        int64_t max2;
        cr_assert_eq(dinf_eplb_log2phy(a.phy2log, a.rep, p.L, p.E, p.R, b.logcnt, b.log2phy,
                                       b.width, &max2),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_eq(max2, a.max);
        for (int64_t r = 0; r < p.L * p.E; r++)
            for (int64_t k = 0; k < b.width; k++)
                cr_assert_eq(b.log2phy[r * b.width + k], k < a.width ? a.log2phy[r * a.width + k] : -1,
                             "trial %d row %lld col %lld", trial, (long long)r, (long long)k);
        /* Determinism: the same call gives the same plan. */
        cr_assert_eq(dinf_eplb_rebalance_experts(w, p.L, p.E, p.R, p.G, p.N, p.P, NULL, b.phy2log,
                                                 b.rep, b.logcnt, NULL, 0, NULL, ws, bytes),
                     DINF_STATUS_OK);
        cr_assert_eq(memcmp(a.phy2log, b.phy2log, (size_t)(p.L * p.R) * sizeof(int64_t)), 0);
        cr_assert_eq(memcmp(a.rep, b.rep, (size_t)(p.L * p.R) * sizeof(int64_t)), 0);
        free(ws);
        free_outputs(&a);
        free_outputs(&b);
        free(w);
    }
}

Test(eplb_properties, log2phy_without_replica_numbers_uses_slot_order) {
    const int64_t phy2log[] = {2, 0, 2, 1, 0, 2};
    int64_t log2phy[3 * 3], logcnt[3], max;
    cr_assert_eq(dinf_eplb_log2phy(phy2log, NULL, 1, 3, 6, logcnt, log2phy, 3, &max),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    const int64_t want[] = {1, 4, -1, 3, -1, -1, 0, 2, 5};
    for (int i = 0; i < 9; i++)
        cr_assert_eq(log2phy[i], want[i], "log2phy[%d]", i);
    cr_assert_eq(logcnt[0], 2);
    cr_assert_eq(logcnt[2], 3);
    cr_assert_eq(max, 3);
}

Test(eplb_properties, log2phy_null_checks_the_plan_and_counts_only) {
    const int64_t phy2log[] = {2, 0, 2, 1, 0, 2, 1, 1, 0, 2, 1, 1};
    int64_t logcnt[6], max = -1;
    cr_assert_eq(dinf_eplb_log2phy(phy2log, NULL, 2, 3, 6, logcnt, NULL, 0, &max), DINF_STATUS_OK,
                 "%s", dinf_last_error());
    const int64_t want[] = {2, 1, 3, 1, 4, 1};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(logcnt[i], want[i], "logcnt[%d]", i);
    cr_assert_eq(max, 4);
    const int64_t bad[] = {2, 0, 2, 2, 0, 2}; /* expert 1 missing */
    cr_assert_eq(dinf_eplb_log2phy(bad, NULL, 1, 3, 6, logcnt, NULL, 0, &max),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "dinf_eplb_log2phy: layer 0: expert 1 has no slot") != NULL,
              "%s", dinf_last_error());
}

Test(eplb_properties, distinct_bound_is_the_smaller_cap) {
    dinf_eplb_options o = DINF_EPLB_OPTIONS_INIT;
    o.distinct_experts_per_gpu = 1;
    int64_t bound;
    /* hierarchical: R/N - E/N + 1 = 3 < 4 GPUs per node */
    cr_assert_eq(dinf_eplb_max_logcnt_bound(12, 16, 4, 2, 8, &o, &bound), DINF_STATUS_OK);
    cr_assert_eq(bound, 3);
    /* global: 8 GPUs < R - E + 1 = 13 */
    cr_assert_eq(dinf_eplb_max_logcnt_bound(4, 16, 1, 1, 8, &o, &bound), DINF_STATUS_OK);
    cr_assert_eq(bound, 8);
}

/* DeepSeek-V3 sizes: prefill (hierarchical) and decode (global). */
static void deepseek_v3_case(int64_t R, int64_t N, int64_t P) {
    const int64_t L = 58, E = 256, G = 8;
    uint64_t st = 7;
    float *w = malloc((size_t)(L * E) * sizeof(float));
    for (int64_t i = 0; i < L * E; i++) /* heavy-tailed token counts */
        w[i] = (float)(1 + (eplb_rand(&st) % 1000) * (eplb_rand(&st) % 1000) / 100);
    problem p = {L, E, R, G, N, P};
    int64_t width;
    cr_assert_eq(dinf_eplb_max_logcnt_bound(E, R, G, N, P, NULL, &width), DINF_STATUS_OK);
    outputs o;
    alloc_outputs(&o, &p, width);
    cr_assert_eq(dinf_eplb_rebalance_experts(w, L, E, R, G, N, P, NULL, o.phy2log, o.rep, o.logcnt,
                                             o.log2phy, width, &o.max, NULL, 0),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    const char *why = eplb_check_invariants(o.phy2log, o.rep, o.logcnt, o.log2phy, width, L, E, R);
    cr_assert_null(why, "%s", why);
    if (G % N == 0) {
        why = eplb_check_groups_on_nodes(o.phy2log, L, E, R, G, N);
        cr_assert_null(why, "%s", why);
    }
    free_outputs(&o);
    free(w);
}

Test(eplb_properties, deepseek_v3_prefill_hierarchical) { deepseek_v3_case(288, 4, 32); }
Test(eplb_properties, deepseek_v3_decode_global) { deepseek_v3_case(320, 5, 40); }
