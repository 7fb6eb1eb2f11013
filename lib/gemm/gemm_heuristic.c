/*
 * Kernel choice of the Hopper FP8 GEMMs (the rules are documented at
 * dinf__fp8_heuristic / dinf__fp8_heuristic_simple in gemm_sm90.h). Kept
 * apart from the kernels and the launch, as DeepGEMM keeps its heuristics.
 */
#include "gemm_sm90.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long long ceil_div_ll(long long a, long long b) { return a / b + (a % b != 0); }

static const int simple_block_n[] = {16, 32, 64, 128};
static const int fast_block_n[] = {16, 32, 48, 64, 80, 96, 112, 128, 144, 160};

/* Rows per group at or above which a multi-wave problem multicasts A. */
#define MULTICAST_MIN_ROWS 512
/* K blocks (of 128) from which a one-wave problem may split K. */
#define SPLIT_K_MIN_K_BLOCKS 8
/* One-wave candidates whose modelled cycles are within 1/32 of the fewest
 * count as equal (then more CTAs win). */
#define ONE_WAVE_TOLERANCE 32
/* Deepest pipeline either rung compiles (the template's range). */
#define FAST_MAX_STAGES 16
#define SIMPLE_MAX_STAGES 8

static int pick_block_m(int gemm_type, int64_t m) {
    return gemm_type == DINF_FP8_GEMM_CONTIGUOUS ? DINF_FP8_GEMM_M_ALIGNMENT : m <= 64 ? 64 : 128;
}

static void waves_of(long long tiles, int num_sms, int *waves, int *last) {
    *waves = (int)ceil_div_ll(tiles, num_sms);
    *last = (int)(tiles % num_sms == 0 ? num_sms : tiles % num_sms);
}

dinf__fp8_config dinf__fp8_heuristic_simple(int gemm_type, int64_t m, int64_t n, int64_t k,
                                            int64_t num_groups, int num_sms) {
    (void)k; /* K is a runtime argument of the kernel; it does not change the tile choice */
    if (m < 1)
        m = 1;
    if (num_sms < 1)
        num_sms = 1;
    dinf__fp8_config best;
    memset(&best, 0, sizeof best);
    best.kernel = DINF__FP8_KERNEL_SIMPLE;
    best.gemm_type = gemm_type;
    best.block_m = pick_block_m(gemm_type, m);
    const long long groups = gemm_type == DINF_FP8_GEMM_MASKED ? num_groups : 1;
    best.last_wave = -1;
    for (size_t i = 0; i < sizeof simple_block_n / sizeof simple_block_n[0]; i++) {
        const int bn = simple_block_n[i];
        const long long tiles = ceil_div_ll(m, best.block_m) * ceil_div_ll(n, bn) * groups;
        int waves, last;
        waves_of(tiles, num_sms, &waves, &last);
        /* fewer waves; then a fuller last wave; then (ascending order) the larger block */
        if (best.last_wave < 0 || waves < best.waves ||
            (waves == best.waves && last >= best.last_wave)) {
            best.block_n = bn;
            best.waves = waves;
            best.tiles = tiles;
            best.last_wave = last;
        }
    }
    best.stages = SIMPLE_MAX_STAGES;
    while (best.stages > 1 &&
           DINF_FP8_SMEM_BYTES(best.block_m, best.block_n, best.stages) > DINF_FP8_SMEM_LIMIT)
        best.stages--;
    best.cluster = 1;
    best.split_k = 1;
    best.threads = dinf_fp8_threads(best.block_m);
    best.smem_bytes = DINF_FP8_SMEM_BYTES(best.block_m, best.block_n, best.stages);
    return best;
}

dinf__fp8_config dinf__fp8_heuristic_wgrad(int64_t m, int64_t n, int64_t k, int num_sms) {
    dinf__fp8_config c = dinf__fp8_heuristic_simple(DINF_FP8_GEMM_NORMAL, m, n, k, 1, num_sms);
    c.kernel = DINF__FP8_KERNEL_WGRAD;
    c.stages = SIMPLE_MAX_STAGES;
    while (c.stages > 1 &&
           DINF_FP8_WGRAD_SMEM_BYTES(c.block_m, c.block_n, c.stages) > DINF_FP8_SMEM_LIMIT)
        c.stages--;
    c.smem_bytes = DINF_FP8_WGRAD_SMEM_BYTES(c.block_m, c.block_n, c.stages);
    return c;
}

static int fast_stages(int block_m, int block_n, int split_k) {
    int stages = FAST_MAX_STAGES;
    while (stages > 1 && DINF_FP8_FAST_SPLIT_SMEM_BYTES(block_m, block_n, stages, split_k) >
                             DINF_FP8_SMEM_LIMIT)
        stages--;
    return stages;
}

long long dinf__fp8_hbm_cycles(int gemm_type, int64_t m, int64_t n, int64_t k,
                               int64_t num_groups) {
    const long long rows = gemm_type == DINF_FP8_GEMM_MASKED ? (long long)m * num_groups : m;
    const long long b_mats = gemm_type == DINF_FP8_GEMM_NORMAL ? 1 : num_groups;
    const long long bytes = b_mats * n * k + rows * k + 2 * rows * n;
    return bytes / DINF__FP8_MODEL_HBM_BYTES_PER_CYCLE;
}

long long dinf__fp8_one_wave_cycles(int block_m, int block_n, int split_k, long long k_blocks,
                                    long long a_rows, long long ctas, long long hbm_cycles) {
    const long long kc = ceil_div_ll(k_blocks, split_k); /* rank 0's share, the largest */
    /* TMA reads only the rows inside the tensor (the rest of the box is
     * zero-filled): A costs min(block_m, rows) rows of L2 traffic */
    const long long rows = a_rows < 1 ? 1 : a_rows < block_m ? a_rows : block_m;
    const long long per_cta = kc * DINF_FP8_BLOCK_K * (rows + block_n);
    long long l2_rate = DINF__FP8_MODEL_SM_BYTES_PER_CYCLE * ctas;
    if (l2_rate > DINF__FP8_MODEL_L2_BYTES_PER_CYCLE)
        l2_rate = DINF__FP8_MODEL_L2_BYTES_PER_CYCLE;
    const long long l2 = ctas * per_cta / l2_rate;
    /* wgmma reads A once and B once per 64-row wave, 128 bytes per cycle */
    const long long smem = kc * (block_m + (long long)(block_m / 64) * block_n);
    /* block_m x block_n x 128 multiply-adds at 4096 per cycle */
    const long long mma = kc * block_m * block_n / 32;
    /* the other ranks' float32 partials over distributed shared memory: a
     * tail after the last loads */
    const long long reduce = (long long)(split_k - 1) * block_m * block_n * 4 /
                             DINF__FP8_MODEL_DSMEM_BYTES_PER_CYCLE;
    long long t = l2 > smem ? l2 : smem;
    t = t > mma ? t : mma;
    t = t > hbm_cycles ? t : hbm_cycles;
    return t + reduce;
}

/* The block_n search of one block_m (block_n <= max_bn): the fewest waves,
 * the fullest last wave, the most stages, multicast legal, the smaller
 * block_n. Fills block_m, block_n, waves, last_wave, tiles, stages, cluster. */
static void search_block_n(int block_m, int max_bn, int64_t m, int64_t n, long long groups,
                           int num_sms, dinf__fp8_config *best) {
    const long long m_blocks = ceil_div_ll(m, block_m);
    int found = 0;
    best->block_m = block_m;
    for (size_t i = 0; i < sizeof fast_block_n / sizeof fast_block_n[0]; i++) {
        const int bn = fast_block_n[i];
        if (bn > max_bn)
            break;
        const long long n_blocks = ceil_div_ll(n, bn);
        const long long tiles = m_blocks * n_blocks * groups;
        int waves, last;
        waves_of(tiles, num_sms, &waves, &last);
        const int stages = fast_stages(block_m, bn, 1);
        const int multicast = num_sms % 2 == 0 && n_blocks % 2 == 0 && m >= MULTICAST_MIN_ROWS &&
                              waves > 1;
        /* fewer waves; a fuller last wave; more stages; multicast; the smaller
         * block_n (ascending order: only a strictly better candidate wins) */
        int better = !found;
        if (found) {
            if (waves != best->waves)
                better = waves < best->waves;
            else if (last != best->last_wave)
                better = last > best->last_wave;
            else if (stages != best->stages)
                better = stages > best->stages;
            else
                better = multicast > (best->cluster == 2);
        }
        if (better) {
            found = 1;
            best->block_n = bn;
            best->waves = waves;
            best->last_wave = last;
            best->tiles = tiles;
            best->stages = stages;
            best->cluster = multicast ? 2 : 1;
        }
    }
}

void dinf__fp8_device_ideal(int num_sms, dinf__fp8_device *dev) {
    memset(dev, 0, sizeof *dev);
    dev->num_sms = num_sms < 1 ? 1 : num_sms;
    for (int c = 1; c <= DINF_FP8_FAST_MAX_SPLIT_K; c++)
        dev->slots[c] = dev->num_sms / c;
}

dinf__fp8_config dinf__fp8_heuristic(int gemm_type, int64_t m, int64_t n, int64_t k,
                                     int64_t num_groups, int num_sms) {
    dinf__fp8_device dev;
    dinf__fp8_device_ideal(num_sms, &dev);
    return dinf__fp8_heuristic_dev(gemm_type, m, n, k, num_groups, &dev);
}

dinf__fp8_config dinf__fp8_heuristic_dev(int gemm_type, int64_t m, int64_t n, int64_t k,
                                         int64_t num_groups, const dinf__fp8_device *dev) {
    if (m < 1)
        m = 1;
    const int num_sms = dev->num_sms < 1 ? 1 : dev->num_sms;
    dinf__fp8_config best;
    memset(&best, 0, sizeof best);
    best.kernel = DINF__FP8_KERNEL_FAST;
    best.gemm_type = gemm_type;
    const long long groups = gemm_type == DINF_FP8_GEMM_MASKED ? num_groups : 1;
    search_block_n(pick_block_m(gemm_type, m), fast_block_n[sizeof fast_block_n /
                                                            sizeof fast_block_n[0] - 1],
                   m, n, groups, num_sms, &best);
    best.split_k = 1;
    /* A one-wave problem: re-rank every one-wave candidate, unsplit or
     * split-K 2..4, by its modelled time (dinf__fp8_one_wave_cycles). */
    const long long k_blocks = ceil_div_ll(k < 1 ? 1 : k, DINF_FP8_BLOCK_K);
    if (best.waves == 1) {
        const long long m_blocks = ceil_div_ll(m, best.block_m);
        const long long hbm = dinf__fp8_hbm_cycles(gemm_type, m, n, k, num_groups);
        /* Two passes over the candidates: the fewest modelled cycles, then,
         * among those within 1/ONE_WAVE_TOLERANCE of it (the model cannot
         * tell them apart), more CTAs; then the smaller split; then more
         * stages; then (ascending order) the smaller block_n. */
        long long fewest = -1, b_ctas = 0;
        int found = 0;
        for (int pass = 0; pass < 2; pass++)
            for (int split = 1; split <= DINF_FP8_FAST_MAX_SPLIT_K; split++) {
                if (split > 1 && k_blocks < SPLIT_K_MIN_K_BLOCKS)
                    break;
                /* every rank gets k blocks ((split - 1) runs of ceil(kb / split)
                 * leave some for the last) */
                if (split > 1 && (split - 1) * ceil_div_ll(k_blocks, split) >= k_blocks)
                    continue;
                /* one wave: a unit per resident cluster at most (unsplit: per SM) */
                const long long slots = split == 1 ? num_sms : dev->slots[split];
                for (size_t i = 0; i < sizeof fast_block_n / sizeof fast_block_n[0]; i++) {
                    const int bn = fast_block_n[i];
                    const long long tiles = m_blocks * ceil_div_ll(n, bn) * groups;
                    if (tiles > slots)
                        continue;
                    const long long ctas = split * tiles;
                    const long long cycles = dinf__fp8_one_wave_cycles(best.block_m, bn, split,
                                                                       k_blocks, m, ctas, hbm);
                    if (pass == 0) {
                        if (fewest < 0 || cycles < fewest)
                            fewest = cycles;
                        continue;
                    }
                    if (cycles > fewest + fewest / ONE_WAVE_TOLERANCE)
                        continue;
                    const int stages = fast_stages(best.block_m, bn, split);
                    int better = !found;
                    if (found) {
                        if (ctas != b_ctas)
                            better = ctas > b_ctas;
                        else if (split != best.split_k)
                            better = split < best.split_k;
                        else
                            better = stages > best.stages;
                    }
                    if (better) {
                        found = 1, b_ctas = ctas;
                        best.block_n = bn;
                        best.stages = stages;
                        best.cluster = split;
                        best.split_k = split;
                        best.tiles = tiles;
                        best.waves = 1;
                        best.last_wave = (int)ctas;
                    }
                }
            }
    }
    /* BLOCK_M 256 (normal and masked, more than 128 rows per group, no
     * split-K): the same block_n search over block_n <= 128, taken when its
     * wave time, waves x 256 x block_n (the tile area an SM computes one
     * tile after another), is strictly below the 128-row choice's: it never
     * loses SM fill, and the larger tile loads fewer A and B bytes per
     * output. */
    if (gemm_type != DINF_FP8_GEMM_CONTIGUOUS && best.block_m == 128 && best.split_k == 1 &&
        m > 128) {
        dinf__fp8_config big = best;
        search_block_n(256, DINF_FP8_FAST_BM256_MAX_BLOCK_N, m, n, groups, num_sms, &big);
        if ((long long)big.waves * 256 * big.block_n < (long long)best.waves * 128 * best.block_n)
            best = big;
    }
    best.threads = dinf_fp8_threads(best.block_m);
    best.smem_bytes =
        DINF_FP8_FAST_SPLIT_SMEM_BYTES(best.block_m, best.block_n, best.stages, best.split_k);
    return best;
}

dinf__fp8_config dinf__fp8_choose(int kernel, int gemm_type, int64_t m, int64_t n, int64_t k,
                                  int64_t num_groups, int num_sms) {
    dinf__fp8_device dev;
    dinf__fp8_device_ideal(num_sms, &dev);
    return dinf__fp8_choose_dev(kernel, gemm_type, m, n, k, num_groups, &dev);
}

dinf__fp8_config dinf__fp8_choose_dev(int kernel, int gemm_type, int64_t m, int64_t n, int64_t k,
                                      int64_t num_groups, const dinf__fp8_device *dev) {
    if (kernel == DINF__FP8_KERNEL_WGRAD)
        return dinf__fp8_heuristic_wgrad(m, n, k, dev->num_sms);
    return kernel == DINF__FP8_KERNEL_SIMPLE
               ? dinf__fp8_heuristic_simple(gemm_type, m, n, k, num_groups, dev->num_sms)
               : dinf__fp8_heuristic_dev(gemm_type, m, n, k, num_groups, dev);
}

dinf_status dinf__fp8_kernel_from_env(const char *func, int *kernel) {
    const char *v = getenv("DINF_FP8_GEMM_KERNEL");
    if (!v || !*v || strcmp(v, "fast") == 0) {
        *kernel = DINF__FP8_KERNEL_FAST;
        return DINF_STATUS_OK;
    }
    if (strcmp(v, "simple") == 0) {
        *kernel = DINF__FP8_KERNEL_SIMPLE;
        return DINF_STATUS_OK;
    }
    *kernel = DINF__FP8_KERNEL_FAST;
    return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                      "DINF_FP8_GEMM_KERNEL=\"%.64s\" is not \"fast\" or \"simple\"", v);
}

dinf_status dinf__fp8_pdl_from_env(const char *func, int *pdl) {
    const char *v = getenv("DINF_FP8_GEMM_PDL");
    *pdl = 1;
    if (!v || !*v || strcmp(v, "1") == 0)
        return DINF_STATUS_OK;
    if (strcmp(v, "0") == 0) {
        *pdl = 0;
        return DINF_STATUS_OK;
    }
    return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                      "DINF_FP8_GEMM_PDL=\"%.64s\" is not \"0\" or \"1\"", v);
}

void dinf__fp8_jit_config(const dinf__fp8_config *c, dinf_jit_kernel_config *out) {
    memset(out, 0, sizeof *out);
    out->size = sizeof *out;
    if (c->kernel == DINF__FP8_KERNEL_WGRAD) {
        snprintf(out->name, sizeof out->name, "fp8_gemm_1d1d");
        out->num_params = 3;
        out->params[0] = c->block_m;
        out->params[1] = c->block_n;
        out->params[2] = c->stages;
        return;
    }
    const int fast = c->kernel == DINF__FP8_KERNEL_FAST;
    snprintf(out->name, sizeof out->name, fast ? "fp8_gemm_fast" : "fp8_gemm");
    out->num_params = fast ? 6 : 4;
    out->params[0] = c->gemm_type;
    out->params[1] = c->block_m;
    out->params[2] = c->block_n;
    out->params[3] = c->stages;
    if (fast) {
        out->params[4] = c->cluster;
        out->params[5] = c->split_k < 1 ? 1 : c->split_k;
    }
}

DINF_API dinf_status dinf_fp8_gemm_kernel_config(int32_t form, int64_t m, int64_t n, int64_t k,
                                                 int64_t num_groups, int32_t num_sms,
                                                 dinf_jit_kernel_config *config) {
    static const char func[] = "dinf_fp8_gemm_kernel_config";
    if (form != DINF_FP8_GEMM_FORM_NORMAL && form != DINF_FP8_GEMM_FORM_CONTIGUOUS &&
        form != DINF_FP8_GEMM_FORM_MASKED && form != DINF_FP8_GEMM_FORM_WGRAD)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "form=%d is not a dinf_fp8_gemm_form (0 normal, 1 contiguous, 2 masked, "
                         "3 wgrad)",
                         (int)form);
    if (m < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "m=%lld is negative", (long long)m);
    if (n < 1 || k < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "n=%lld and k=%lld must be >= 1",
                         (long long)n, (long long)k);
    if (num_groups < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_groups=%lld must be >= 1",
                         (long long)num_groups);
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX || num_groups > INT32_MAX)
        return DINF_FAIL(DINF_STATUS_UNSUPPORTED,
                         "m=%lld, n=%lld, k=%lld, num_groups=%lld: a size above 2^31 - 1 (the "
                         "Hopper kernels' limit)",
                         (long long)m, (long long)n, (long long)k, (long long)num_groups);
    if (num_sms < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "num_sms=%d must be >= 1, or 0 for the current CUDA device", (int)num_sms);
    if (!config)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "config is NULL");
    int kernel = DINF__FP8_KERNEL_WGRAD; /* the wgrad GEMM has one kernel */
    dinf_status st = DINF_STATUS_OK;
    if (form != DINF_FP8_GEMM_FORM_WGRAD &&
        (st = dinf__fp8_kernel_from_env(func, &kernel)) != DINF_STATUS_OK)
        return st;
    dinf__fp8_device dev;
    if (num_sms > 0) {
        dinf__fp8_device_ideal(num_sms, &dev);
    } else {
        if ((st = dinf__fp8_device_query(func, -1, &dev)) != DINF_STATUS_OK)
            return st;
    }
    const dinf__fp8_config c = dinf__fp8_choose_dev(
        kernel, form == DINF_FP8_GEMM_FORM_WGRAD ? DINF_FP8_GEMM_NORMAL : form, m, n, k,
        num_groups, &dev);
    dinf__fp8_jit_config(&c, config);
    return DINF_STATUS_OK;
}
