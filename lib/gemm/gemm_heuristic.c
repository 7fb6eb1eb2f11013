/*
 * Kernel choice of the Hopper FP8 GEMMs (the rule is documented at
 * dinf__fp8_heuristic in gemm_sm90.h). Kept apart from the kernel and the
 * launch, as DeepGEMM keeps its heuristics: part 2 (performance) replaces
 * this file's rule without touching either.
 */
#include "gemm_sm90.h"

#include <stdio.h>
#include <string.h>

static long long ceil_div_ll(long long a, long long b) { return a / b + (a % b != 0); }

static const int block_n_candidates[] = {16, 32, 64, 128};

dinf__fp8_config dinf__fp8_heuristic(int gemm_type, int64_t m, int64_t n, int64_t k,
                                     int64_t num_groups, int num_sms) {
    (void)k; /* K is a runtime argument of the kernel; it does not change the tile choice */
    if (m < 1)
        m = 1;
    if (num_sms < 1)
        num_sms = 1;
    dinf__fp8_config best;
    memset(&best, 0, sizeof best);
    best.gemm_type = gemm_type;
    best.block_m = gemm_type == DINF_FP8_GEMM_CONTIGUOUS ? DINF_FP8_GEMM_M_ALIGNMENT
                   : m <= 64                            ? 64
                                                        : 128;
    const long long groups = gemm_type == DINF_FP8_GEMM_MASKED ? num_groups : 1;
    int best_last = -1;
    for (size_t i = 0; i < sizeof block_n_candidates / sizeof block_n_candidates[0]; i++) {
        const int bn = block_n_candidates[i];
        const long long tiles = ceil_div_ll(m, best.block_m) * ceil_div_ll(n, bn) * groups;
        const int waves = (int)ceil_div_ll(tiles, num_sms);
        const int last = (int)(tiles % num_sms == 0 ? num_sms : tiles % num_sms);
        /* fewer waves; then a fuller last wave; then (ascending order) the larger block */
        if (best_last < 0 || waves < best.waves || (waves == best.waves && last >= best_last)) {
            best.block_n = bn;
            best.waves = waves;
            best.tiles = tiles;
            best_last = last;
        }
    }
    best.stages = 8;
    while (best.stages > 1 &&
           DINF_FP8_SMEM_BYTES(best.block_m, best.block_n, best.stages) > DINF_FP8_SMEM_LIMIT)
        best.stages--;
    best.cluster = 1;
    best.threads = 128 * (1 + best.block_m / 64);
    best.smem_bytes = DINF_FP8_SMEM_BYTES(best.block_m, best.block_n, best.stages);
    return best;
}

void dinf__fp8_jit_config(const dinf__fp8_config *c, dinf_jit_kernel_config *out) {
    memset(out, 0, sizeof *out);
    out->size = sizeof *out;
    snprintf(out->name, sizeof out->name, "fp8_gemm");
    out->num_params = 4;
    out->params[0] = c->gemm_type;
    out->params[1] = c->block_m;
    out->params[2] = c->block_n;
    out->params[3] = c->stages;
}

DINF_API dinf_status dinf_fp8_gemm_kernel_config(int32_t form, int64_t m, int64_t n, int64_t k,
                                                 int64_t num_groups, int32_t num_sms,
                                                 dinf_jit_kernel_config *config) {
    if (form != DINF_FP8_GEMM_FORM_NORMAL && form != DINF_FP8_GEMM_FORM_CONTIGUOUS &&
        form != DINF_FP8_GEMM_FORM_MASKED)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "form=%d is not a dinf_fp8_gemm_form (0 normal, 1 contiguous, 2 masked)",
                         (int)form);
    if (m < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld is negative", (long long)m);
    if (n < 1 || k < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "n=%lld and k=%lld must be >= 1",
                         (long long)n, (long long)k);
    if (num_groups < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_groups=%lld must be >= 1",
                         (long long)num_groups);
    if (num_sms < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_sms=%d must be >= 1", (int)num_sms);
    if (!config)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "config is NULL");
    const dinf__fp8_config c = dinf__fp8_heuristic(form, m, n, k, num_groups, num_sms);
    dinf__fp8_jit_config(&c, config);
    return DINF_STATUS_OK;
}
