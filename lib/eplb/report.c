/* Balance report of any plan: loads per GPU and node, max/mean ratios. */
#include "eplb_plan.h"

#include <stdlib.h>

void dinf__eplb_gpu_loads(const float *w, const int64_t *phy2log, int64_t E, int64_t R, int64_t P,
                          int64_t *count, double *gpu_load) {
    const int64_t ppg = R / P;
    for (int64_t e = 0; e < E; e++)
        count[e] = 0;
    for (int64_t x = 0; x < R; x++)
        count[phy2log[x]]++;
    for (int64_t g = 0; g < P; g++) {
        double sum = 0.0;
        for (int64_t i = 0; i < ppg; i++) {
            int64_t e = phy2log[g * ppg + i];
            sum += (double)w[e] / (double)count[e];
        }
        gpu_load[g] = sum;
    }
}

double dinf__eplb_max(const double *v, int64_t n) {
    double m = v[0];
    for (int64_t i = 1; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

static double imbalance(const double *load, int64_t n) {
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += load[i];
    if (total <= 0.0)
        return 1.0;
    return dinf__eplb_max(load, n) / (total / (double)n);
}

DINF_API dinf_status dinf_eplb_balance_report(const float *weight, const int64_t *phy2log,
                                              int64_t num_layers, int64_t num_logical_experts,
                                              int64_t num_replicas, int64_t num_nodes,
                                              int64_t num_gpus, double *gpu_load,
                                              double *node_load, double *gpu_imbalance,
                                              double *node_imbalance,
                                              dinf_eplb_balance_summary *summary) {
    const int64_t L = num_layers, E = num_logical_experts, R = num_replicas, N = num_nodes,
                  P = num_gpus;
    if (E < 1 || R < 1 || N < 1 || P < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "num_logical_experts=%lld, num_replicas=%lld, num_nodes=%lld and "
                         "num_gpus=%lld must be >= 1",
                         (long long)E, (long long)R, (long long)N, (long long)P);
    if (P % N != 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "num_gpus=%lld is not a multiple of num_nodes=%lld", (long long)P,
                         (long long)N);
    if (R % P != 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "num_replicas=%lld is not a multiple of num_gpus=%lld", (long long)R,
                         (long long)P);
    if (!weight)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "weight is NULL");
    if (!phy2log)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "phy2log is NULL");
    const int64_t inner[] = {R, E, P};
    const char *const names[] = {"num_replicas", "num_logical_experts", "num_gpus"};
    dinf_status st = dinf__eplb_check_rows(__func__, L, inner, names, 3);
    if (st != DINF_STATUS_OK)
        return st;
    st = dinf__eplb_check_weights(__func__, weight, L, E);
    if (st != DINF_STATUS_OK)
        return st;
    const dinf__buffer buffers[] = {
        {"weight", weight, (size_t)(L * E) * 4},
        {"phy2log", phy2log, (size_t)(L * R) * 8},
        {"gpu_load", gpu_load, (size_t)(L * P) * 8},
        {"node_load", node_load, (size_t)(L * N) * 8},
        {"gpu_imbalance", gpu_imbalance, (size_t)L * 8},
        {"node_imbalance", node_imbalance, (size_t)L * 8},
        {"summary", summary, sizeof *summary},
    };
    st = dinf__check_disjoint(__func__, buffers, (int)(sizeof buffers / sizeof buffers[0]));
    if (st != DINF_STATUS_OK)
        return st;
    for (int64_t i = 0; i < L * R; i++)
        if (phy2log[i] < 0 || phy2log[i] >= E)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "phy2log[%lld][%lld]=%lld is not an expert in [0, %lld)",
                             (long long)(i / R), (long long)(i % R), (long long)phy2log[i],
                             (long long)E);

    int64_t *count = malloc((size_t)E * sizeof(int64_t));
    double *gpu = malloc((size_t)P * sizeof(double));
    double *node = malloc((size_t)N * sizeof(double));
    if (!count || !gpu || !node) {
        free(count);
        free(gpu);
        free(node);
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "cannot allocate scratch for E=%lld, P=%lld",
                         (long long)E, (long long)P);
    }
    dinf_eplb_balance_summary sum = {0};
    const int64_t gpn = P / N;
    for (int64_t l = 0; l < L; l++) {
        dinf__eplb_gpu_loads(weight + l * E, phy2log + l * R, E, R, P, count, gpu);
        for (int64_t n = 0; n < N; n++) {
            double s = 0.0;
            for (int64_t g = 0; g < gpn; g++)
                s += gpu[n * gpn + g];
            node[n] = s;
        }
        double gi = imbalance(gpu, P), ni = imbalance(node, N), gmax = dinf__eplb_max(gpu, P);
        if (gpu_load)
            for (int64_t g = 0; g < P; g++)
                gpu_load[l * P + g] = gpu[g];
        if (node_load)
            for (int64_t n = 0; n < N; n++)
                node_load[l * N + n] = node[n];
        if (gpu_imbalance)
            gpu_imbalance[l] = gi;
        if (node_imbalance)
            node_imbalance[l] = ni;
        if (l == 0 || gi > sum.max_gpu_imbalance)
            sum.max_gpu_imbalance = gi;
        if (l == 0 || ni > sum.max_node_imbalance)
            sum.max_node_imbalance = ni;
        if (l == 0 || gmax > sum.max_gpu_load)
            sum.max_gpu_load = gmax;
        sum.mean_gpu_imbalance += gi / (double)L;
        sum.mean_node_imbalance += ni / (double)L;
    }
    if (summary)
        *summary = sum;
    free(count);
    free(gpu);
    free(node);
    return DINF_STATUS_OK;
}
