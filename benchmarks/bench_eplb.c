/*
 * EPLB planner at DeepSeek-V3 sizes (58 MoE layers, 256 experts in 8 groups):
 *   hierarchical (prefill): 288 slots, 4 nodes, 32 GPUs
 *   global (decode):        320 slots, 5 nodes, 40 GPUs (8 % 5 != 0)
 * The peer is upstream eplb.py on CPU torch: about 0.4 s and 1.0 s for these
 * on a 2-core machine (benchmarks/RESULTS.md records what we measured).
 * Single-threaded; the workspace is allocated once, outside the timed loop.
 */
#include "bench.h"

#include <deepinfra.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct eplb_case {
    const char *name;
    int64_t L, E, R, G, N, P;
    int distinct;
    int kind; /* 0 rebalance, 1 incremental, 2 balance report */
    float *weight, *drifted;
    int64_t *phy2log, *current, *phy_replica, *logcnt, *log2phy, width, moved;
    void *workspace;
    size_t workspace_bytes;
    dinf_eplb_options options;
    char label[96];
} eplb_case;

static uint64_t lcg(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* Token counts per expert: Zipf-like popularity, shuffled per layer, so that
 * loads are heavy-tailed and integer (ties happen, as in real statistics). */
static void token_counts(float *w, int64_t L, int64_t E, uint64_t seed) {
    uint64_t s = seed;
    for (int64_t l = 0; l < L; l++) {
        float *row = w + l * E;
        for (int64_t e = 0; e < E; e++)
            row[e] = floorf(40000.0f / powf((float)(e + 1), 0.8f)) + (float)(lcg(&s) % 64);
        for (int64_t e = E - 1; e > 0; e--) {
            int64_t j = (int64_t)(lcg(&s) % (uint64_t)(e + 1));
            float t = row[e];
            row[e] = row[j];
            row[j] = t;
        }
    }
}

static double run_case(void *arg) {
    eplb_case *c = arg;
    dinf_status st;
    const dinf_eplb_options *opt = c->distinct ? &c->options : NULL;
    if (c->kind == 0) {
        int64_t max;
        st = dinf_eplb_rebalance_experts(c->weight, c->L, c->E, c->R, c->G, c->N, c->P, opt,
                                         c->phy2log, c->phy_replica, c->logcnt, c->log2phy,
                                         c->width, &max, c->workspace, c->workspace_bytes);
    } else if (c->kind == 1) {
        st = dinf_eplb_rebalance_incremental(c->drifted, c->L, c->E, c->R, c->G, c->N, c->P, opt,
                                             0.05, c->current, c->phy2log, c->phy_replica,
                                             c->logcnt, NULL, &c->moved, c->workspace,
                                             c->workspace_bytes);
        bench_set_counter("moved", (double)c->moved);
    } else {
        dinf_eplb_balance_summary s;
        st = dinf_eplb_balance_report(c->weight, c->current, c->L, c->E, c->R, c->N, c->P, NULL,
                                      NULL, NULL, NULL, &s);
    }
    if (st != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        return -1;
    }
    return 0;
}

static void add(const char *name, int64_t R, int64_t N, int64_t P, int distinct, int kind) {
    eplb_case *c = calloc(1, sizeof *c);
    c->name = name;
    c->L = 58, c->E = 256, c->G = 8, c->R = R, c->N = N, c->P = P;
    c->distinct = distinct;
    c->kind = kind;
    c->options = (dinf_eplb_options)DINF_EPLB_OPTIONS_INIT;
    c->options.distinct_experts_per_gpu = distinct;
    const dinf_eplb_options *opt = distinct ? &c->options : NULL;
    size_t le = (size_t)(c->L * c->E), lr = (size_t)(c->L * c->R);
    c->weight = malloc(le * sizeof(float));
    c->drifted = malloc(le * sizeof(float));
    token_counts(c->weight, c->L, c->E, 1);
    uint64_t s = 2;
    for (size_t i = 0; i < le; i++) /* the next window's statistics: +-20% drift */
        c->drifted[i] = floorf(c->weight[i] * (0.8f + (float)(lcg(&s) % 41) / 100.0f));
    c->phy2log = malloc(lr * sizeof(int64_t));
    c->current = malloc(lr * sizeof(int64_t));
    c->phy_replica = malloc(lr * sizeof(int64_t));
    c->logcnt = malloc(le * sizeof(int64_t));
    size_t a = 0, b = 0;
    dinf_eplb_workspace_size(c->E, c->R, c->G, c->N, c->P, opt, &a);
    dinf_eplb_incremental_workspace_size(c->E, c->R, c->G, c->N, c->P, opt, &b);
    c->workspace_bytes = a > b ? a : b;
    c->workspace = malloc(c->workspace_bytes);
    /* The plan in service, made from the previous window; its max_logcnt is
     * the log2phy width upstream returns, which the timed calls fill. */
    if (dinf_eplb_rebalance_experts(c->weight, c->L, c->E, c->R, c->G, c->N, c->P, opt, c->current,
                                    NULL, c->logcnt, NULL, 0, &c->width, c->workspace,
                                    c->workspace_bytes) != DINF_STATUS_OK) {
        fprintf(stderr, "%s: setup failed: %s\n", name, dinf_last_error());
        exit(1);
    }
    c->log2phy = malloc(le * (size_t)c->width * sizeof(int64_t));
    dinf_eplb_balance_summary sum;
    dinf_eplb_balance_report(c->weight, c->current, c->L, c->E, c->R, c->N, c->P, NULL, NULL, NULL,
                             NULL, &sum);
    snprintf(c->label, sizeof c->label, "GPU max/mean %.3f (mean over layers)",
             sum.mean_gpu_imbalance);
    bench_spec spec = {.name = name, .run = run_case, .arg = c, .items = (double)c->L,
                       .items_name = "layers/s", .label = c->label, .unit = "us"};
    bench_register(&spec);
}

void bench_register_eplb(void) {
    add("eplb/rebalance/hierarchical/L58_E256_R288_N4_P32", 288, 4, 32, 0, 0);
    add("eplb/rebalance/global/L58_E256_R320_N5_P40", 320, 5, 40, 0, 0);
    add("eplb/rebalance_distinct/hierarchical/L58_E256_R288_N4_P32", 288, 4, 32, 1, 0);
    add("eplb/rebalance_distinct/global/L58_E256_R320_N5_P40", 320, 5, 40, 1, 0);
    add("eplb/incremental_tol0.05/hierarchical/L58_E256_R288_N4_P32", 288, 4, 32, 0, 1);
    add("eplb/incremental_tol0.05/global/L58_E256_R320_N5_P40", 320, 5, 40, 0, 1);
    add("eplb/balance_report/hierarchical/L58_E256_R288_N4_P32", 288, 4, 32, 0, 2);
}
