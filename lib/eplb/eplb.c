/*
 * EPLB planner: upstream rebalance_experts, exactly (see eplb.h for the
 * contract), plus the distinct-experts-per-GPU option and log2phy.
 *
 * The plan is computed layer by layer with O(E + R) scratch that is reused
 * for every layer. Each step follows the reference algorithm:
 *   1. balanced_packing of group loads onto nodes (hierarchical policy);
 *   2. replicate_experts inside each node (argmax of load per replica);
 *   3. balanced_packing of the node's replicas onto its GPUs.
 * Selection steps that are linear scans upstream use tournament trees here
 * with the same tie rules (lowest index among equal keys), so the results are
 * the same and the cost is O(log) per choice.
 */
#include "deepinfra/eplb.h"

#include "../core/internal.h"
#include "eplb_internal.h"
#include "eplb_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Argument checks                                                           */
/* ------------------------------------------------------------------------ */

/* dinf_eplb_options as version 0.1 defined it; later fields are read only
 * when options->size covers them. */
#define EPLB_OPTIONS_V1_SIZE ((size_t)16)
_Static_assert(sizeof(dinf_eplb_options) >= EPLB_OPTIONS_V1_SIZE, "dinf_eplb_options shrank");

dinf_status dinf__eplb_check_options(const char *func, const dinf_eplb_options *options,
                                     int *distinct) {
    *distinct = 0;
    if (!options)
        return DINF_STATUS_OK;
    if (options->size < EPLB_OPTIONS_V1_SIZE)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "options->size=%u is smaller than the %zu bytes of the first "
                          "dinf_eplb_options (initialise options with DINF_EPLB_OPTIONS_INIT)",
                          options->size, EPLB_OPTIONS_V1_SIZE);
    if (options->magic != DINF_EPLB_OPTIONS_MAGIC)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "options->magic=0x%08x is not DINF_EPLB_OPTIONS_MAGIC (0x%08x): "
                          "initialise options with DINF_EPLB_OPTIONS_INIT",
                          options->magic, DINF_EPLB_OPTIONS_MAGIC);
    if (options->distinct_experts_per_gpu != 0 && options->distinct_experts_per_gpu != 1)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "options->distinct_experts_per_gpu=%d must be 0 or 1",
                          (int)options->distinct_experts_per_gpu);
    if (options->reserved != 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "options->reserved=%d must be 0",
                          (int)options->reserved);
    *distinct = options->distinct_experts_per_gpu;
    return DINF_STATUS_OK;
}

dinf_status dinf__eplb_check_sizes(const char *func, int64_t E, int64_t R, int64_t G, int64_t N,
                                   int64_t P, const dinf_eplb_options *options,
                                   dinf__eplb_sizes *sz) {
    int distinct;
    dinf_status st = dinf__eplb_check_options(func, options, &distinct);
    if (st != DINF_STATUS_OK)
        return st;
    const struct {
        const char *name;
        int64_t value;
    } positive[] = {{"num_logical_experts", E}, {"num_replicas", R}, {"num_groups", G},
                    {"num_nodes", N},           {"num_gpus", P}};
    for (size_t i = 0; i < sizeof positive / sizeof positive[0]; i++)
        if (positive[i].value < 1)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%s=%lld must be >= 1",
                              positive[i].name, (long long)positive[i].value);
    if (R > DINF__EPLB_MAX_SIZE || E > DINF__EPLB_MAX_SIZE || G > DINF__EPLB_MAX_SIZE ||
        P > DINF__EPLB_MAX_SIZE)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "num_replicas=%lld, num_logical_experts=%lld, num_groups=%lld and "
                          "num_gpus=%lld must each be <= %lld",
                          (long long)R, (long long)E, (long long)G, (long long)P,
                          (long long)DINF__EPLB_MAX_SIZE);
    if (P % N != 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "num_gpus=%lld is not a multiple of num_nodes=%lld", (long long)P,
                          (long long)N);
    if (R % P != 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "num_replicas=%lld is not a multiple of num_gpus=%lld", (long long)R,
                          (long long)P);
    if (R < E)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "num_replicas=%lld is smaller than num_logical_experts=%lld: every "
                          "expert needs at least one slot",
                          (long long)R, (long long)E);
    sz->E = E;
    sz->R = R;
    sz->P = P;
    sz->hierarchical = (G % N == 0);
    if (sz->hierarchical) {
        if (E % G != 0)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "num_logical_experts=%lld is not a multiple of num_groups=%lld "
                              "(required by the hierarchical policy, which applies because "
                              "num_groups %% num_nodes == 0)",
                              (long long)E, (long long)G);
        sz->groups = G;
        sz->nodes = N;
    } else {
        /* Global policy: one group on one node, as upstream. */
        sz->groups = 1;
        sz->nodes = 1;
    }
    sz->group_size = E / sz->groups;
    sz->groups_per_node = sz->groups / sz->nodes;
    sz->experts_per_node = E / sz->nodes;
    sz->replicas_per_node = R / sz->nodes;
    sz->gpus_per_node = P / sz->nodes;
    sz->slots_per_gpu = R / P;
    sz->distinct = distinct;
    if (distinct) {
        if (sz->slots_per_gpu > sz->experts_per_node)
            return dinf__fail(
                DINF_STATUS_INVALID_ARGUMENT, func,
                "options->distinct_experts_per_gpu=1 is impossible: each GPU has "
                "num_replicas/num_gpus=%lld slots but only %lld distinct experts can reach it "
                "(num_logical_experts=%lld%s)",
                (long long)sz->slots_per_gpu, (long long)sz->experts_per_node, (long long)E,
                sz->nodes > 1 ? " split over the nodes by the hierarchical policy" : "");
    }
    /* Most replicas one expert can get: all of its node's redundant slots,
     * and with the distinct option no more than the GPUs it can spread over. */
    sz->replica_cap = sz->replicas_per_node - sz->experts_per_node + 1;
    if (distinct && sz->gpus_per_node < sz->replica_cap)
        sz->replica_cap = sz->gpus_per_node;
    return DINF_STATUS_OK;
}

dinf_status dinf__eplb_check_weights(const char *func, const float *weight, int64_t L, int64_t E) {
    for (int64_t l = 0; l < L; l++) {
        const float *row = weight + l * E;
        for (int64_t e = 0; e < E; e++) {
            float x = row[e];
            if (!(x >= 0.0f) || isinf(x))
                return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                                  "weight[%lld][%lld]=%g: loads must be finite and >= 0",
                                  (long long)l, (long long)e, (double)x);
        }
    }
    return DINF_STATUS_OK;
}

/* Checks L >= 1 and that n_inner * L elements of elem bytes fit. */
dinf_status dinf__eplb_check_rows(const char *func, int64_t L, const int64_t *inner,
                                  const char *const *inner_names, int count) {
    if (L < 1)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "num_layers=%lld must be >= 1",
                          (long long)L);
    for (int i = 0; i < count; i++) {
        int64_t elems;
        if (dinf__mul_i64(L, inner[i], &elems) || (uint64_t)elems > SIZE_MAX / 8)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "num_layers=%lld times %s=%lld overflows the addressable size",
                              (long long)L, inner_names[i], (long long)inner[i]);
    }
    return DINF_STATUS_OK;
}

/* ------------------------------------------------------------------------ */
/* Workspace layout                                                          */
/* ------------------------------------------------------------------------ */

static size_t pow2_ceil(size_t n) {
    size_t p = 1;
    while (p < n)
        p *= 2;
    return p;
}

void dinf__eplb_plan_layout(dinf__arena *a, const dinf__eplb_sizes *sz, dinf__eplb_scratch *s) {
    size_t G = (size_t)sz->groups, E = (size_t)sz->E, En = (size_t)sz->experts_per_node;
    size_t Rn = (size_t)sz->replicas_per_node, Pn = (size_t)sz->gpus_per_node;
    size_t sort_n = G > Rn ? G : Rn;
    s->group_load = dinf__arena_take(a, G, sizeof(float));
    s->group_pack = dinf__arena_take(a, G, sizeof(int32_t));
    s->group_rank = dinf__arena_take(a, G, sizeof(int32_t));
    s->mlog2log = dinf__arena_take(a, E, sizeof(int32_t));
    s->node_load = dinf__arena_take(a, En, sizeof(float));
    s->replica_count = dinf__arena_take(a, En, sizeof(int32_t));
    s->expert_tree = dinf__arena_take(a, 2 * pow2_ceil(En), sizeof(int32_t));
    s->expert_key = dinf__arena_take(a, En + 1, sizeof(float));
    s->phy2mlog = dinf__arena_take(a, Rn, sizeof(int32_t));
    s->phy_rank = dinf__arena_take(a, Rn, sizeof(int32_t));
    s->replica_load = dinf__arena_take(a, Rn, sizeof(float));
    s->replica_gpu = dinf__arena_take(a, Rn, sizeof(int32_t));
    s->replica_pos = dinf__arena_take(a, Rn, sizeof(int32_t));
    s->order = dinf__arena_take(a, sort_n, sizeof(int32_t));
    s->sort_scratch = dinf__arena_take(a, sort_n, sizeof(dinf__sort_pair));
    size_t packs = Pn > G ? Pn : G;
    s->pack_sum = dinf__arena_take(a, packs + 1, sizeof(float));
    s->pack_count = dinf__arena_take(a, packs, sizeof(int32_t));
    s->pack_tree = dinf__arena_take(a, 2 * pow2_ceil(packs), sizeof(int32_t));
    s->pack_members = sz->distinct ? dinf__arena_take(a, Rn, sizeof(int32_t)) : NULL;
    s->pack_holds = sz->distinct ? dinf__arena_take(a, En * Pn, 1) : NULL;
}

/* ------------------------------------------------------------------------ */
/* balanced_packing                                                          */
/* ------------------------------------------------------------------------ */

/*
 * Selection by tournament tree: the argmin (or argmax) of key[0..m) with the
 * lowest index on ties, in O(log m) branch-free steps per update (a binary
 * heap's data-dependent branches cost more here). Leaves hold the items in
 * index order, so on equal keys the left child, holding the lower indices,
 * wins. A retired item's leaf holds the sentinel m, whose key (key[m]) loses
 * every comparison with a finite key.
 */
static inline int32_t pick(const float *key, int32_t left, int32_t right, int max_mode) {
    return (max_mode ? key[right] > key[left] : key[right] < key[left]) ? right : left;
}

static void tournament_init(int32_t *tree, int32_t leaves, const float *key, int32_t m,
                            int max_mode) {
    for (int32_t i = 0; i < leaves; i++)
        tree[leaves + i] = i < m ? i : m;
    for (int32_t i = leaves - 1; i >= 1; i--)
        tree[i] = pick(key, tree[2 * i], tree[2 * i + 1], max_mode);
}

/* Replace item's leaf by value and replay the matches on its path. The path's
 * winner stays in registers; only the siblings' winners are loaded, and they
 * do not depend on this update, so each level costs a compare and a select. */
static inline void tournament_update(int32_t *tree, int32_t leaves, const float *key, int32_t item,
                                     int32_t value, int max_mode) {
    int32_t i = leaves + item, win = value;
    float win_key = key[value];
    tree[i] = value;
    for (; i > 1; i >>= 1) {
        const int32_t sib = tree[i ^ 1];
        const float sib_key = key[sib];
        const int sib_better = max_mode ? sib_key > win_key : sib_key < win_key;
        const int win_better = max_mode ? win_key > sib_key : win_key < sib_key;
        /* the sibling is the left child when i is odd: it wins ties
         * (bit arithmetic, not a branch: the path's parity is random) */
        const int odd = i & 1;
        const int take_sib = (odd & (win_better ^ 1)) | ((odd ^ 1) & sib_better);
        win = take_sib ? sib : win;
        win_key = take_sib ? sib_key : win_key;
        tree[i >> 1] = win;
    }
}

static int32_t tournament_leaves(int32_t m) { return (int32_t)pow2_ceil((size_t)m); }

/*
 * Pack n items of weight w into m packs of n/m items each (upstream
 * balanced_packing for one row): items in descending weight order (torch's
 * tie order) go to the open pack of least float32 sum, lowest index first.
 * pack[j], rank[j] = pack of item j and its arrival rank in that pack.
 */
static void balanced_packing(const float *w, int32_t n, int32_t m, int32_t *pack, int32_t *rank,
                             const dinf__eplb_scratch *s) {
    int32_t per_pack = n / m;
    if (per_pack == 1) {
        for (int32_t j = 0; j < n; j++) {
            pack[j] = j;
            rank[j] = 0;
        }
        return;
    }
    dinf__sort_desc_indices(w, n, s->order, s->sort_scratch);
    float *sum = s->pack_sum; /* [m + 1]: sum[m] is the sentinel's */
    int32_t *count = s->pack_count, *tree = s->pack_tree;
    const int32_t leaves = tournament_leaves(m);
    for (int32_t p = 0; p < m; p++) {
        sum[p] = 0.0f;
        count[p] = 0;
    }
    sum[m] = INFINITY;
    tournament_init(tree, leaves, sum, m, 0);
    for (int32_t k = 0; k < n; k++) {
        const int32_t j = s->order[k];
        int32_t p = tree[1];
        if (!(sum[p] < INFINITY)) /* sums overflowed to +inf: lowest open index */
            for (p = 0; count[p] == per_pack; p++)
                ;
        pack[j] = p;
        rank[j] = count[p];
        sum[p] = sum[p] + w[j];
        tournament_update(tree, leaves, sum, p, ++count[p] == per_pack ? m : p, 0);
    }
}

/*
 * The same packing under the constraint that items of one color (expert)
 * never share a pack. Greedy as above over the packs that are open and free
 * of the item's color (so it equals balanced_packing whenever that never puts
 * two items of a color together). When every open pack already holds the
 * color, a swap repairs it: an item y of a full pack Q without the color
 * moves to the open pack P, whose colors y does not share, and the item takes
 * y's place in Q. Such a y always exists when no color has more than m items
 * (P holds at most per_pack-2 other colors, Q per_pack distinct ones). Among
 * the candidates the swap minimising max(new sum of P, new sum of Q) wins,
 * ties to the lowest Q, then the lowest position.
 */
static void balanced_packing_distinct(const float *w, const int32_t *color, int32_t n,
                                      int32_t num_colors, int32_t m, int32_t *pack, int32_t *rank,
                                      const dinf__eplb_scratch *s) {
    int32_t per_pack = n / m;
    if (per_pack == 1) {
        for (int32_t j = 0; j < n; j++) {
            pack[j] = j;
            rank[j] = 0;
        }
        return;
    }
    dinf__sort_desc_indices(w, n, s->order, s->sort_scratch);
    float *sum = s->pack_sum;
    int32_t *count = s->pack_count;
    int32_t *members = s->pack_members; /* [m][per_pack] item ids by rank */
    uint8_t *holds = s->pack_holds;     /* [num_colors][m]: pack p holds color c */
    memset(holds, 0, (size_t)num_colors * (size_t)m);
    for (int32_t p = 0; p < m; p++) {
        sum[p] = 0.0f;
        count[p] = 0;
    }
#define HOLDS(p, c) holds[(size_t)(c) * (size_t)m + (size_t)(p)]
    for (int32_t k = 0; k < n; k++) {
        const int32_t j = s->order[k], c = color[j];
        int32_t best = -1, open = -1;
        for (int32_t p = 0; p < m; p++) {
            if (count[p] >= per_pack)
                continue;
            if (open < 0 || sum[p] < sum[open])
                open = p;
            if (!HOLDS(p, c) && (best < 0 || sum[p] < sum[best]))
                best = p;
        }
        if (best >= 0) {
            members[best * per_pack + count[best]] = j;
            pack[j] = best;
            rank[j] = count[best];
            sum[best] = sum[best] + w[j];
            count[best]++;
            HOLDS(best, c) = 1;
            continue;
        }
        /* Repair: every open pack holds color c; `open` is the lightest. */
        int32_t P = open, best_q = -1, best_pos = -1;
        float best_cost = 0.0f;
        for (int32_t q = 0; q < m; q++) {
            if (q == P || HOLDS(q, c))
                continue;
            for (int32_t pos = 0; pos < count[q]; pos++) {
                int32_t y = members[q * per_pack + pos];
                if (HOLDS(P, color[y]))
                    continue;
                float new_p = sum[P] + w[y];
                float new_q = (sum[q] - w[y]) + w[j];
                float cost = new_p > new_q ? new_p : new_q;
                if (best_q < 0 || cost < best_cost) {
                    best_q = q;
                    best_pos = pos;
                    best_cost = cost;
                }
            }
        }
        /* best_q >= 0 is guaranteed by the replica cap (see above). */
        int32_t y = members[best_q * per_pack + best_pos];
        members[P * per_pack + count[P]] = y;
        pack[y] = P;
        rank[y] = count[P];
        sum[P] = sum[P] + w[y];
        count[P]++;
        HOLDS(P, color[y]) = 1;
        HOLDS(best_q, color[y]) = 0;
        members[best_q * per_pack + best_pos] = j;
        pack[j] = best_q;
        rank[j] = best_pos;
        sum[best_q] = (sum[best_q] - w[y]) + w[j];
        HOLDS(best_q, c) = 1;
    }
#undef HOLDS
}

/* ------------------------------------------------------------------------ */
/* replicate_experts                                                         */
/* ------------------------------------------------------------------------ */

/*
 * Upstream replicate_experts for one row: slots 0..n-1 hold experts 0..n-1;
 * each further slot goes to the expert of largest float32 w/count (first
 * index on ties). With a cap, experts at the cap leave the competition.
 */
static void replicate_experts(const float *w, int32_t n, int32_t num_slots, int32_t cap,
                              int32_t *phy2log, int32_t *phy_rank, int32_t *count,
                              const dinf__eplb_scratch *s) {
    float *key = s->expert_key; /* [n + 1]: key[n] is the sentinel's */
    int32_t *tree = s->expert_tree;
    const int32_t leaves = tournament_leaves(n);
    for (int32_t e = 0; e < n; e++) {
        phy2log[e] = e;
        phy_rank[e] = 0;
        count[e] = 1;
        key[e] = w[e];
    }
    key[n] = -INFINITY;
    tournament_init(tree, leaves, key, n, 1);
    if (cap <= 1)
        for (int32_t e = 0; e < n; e++)
            tournament_update(tree, leaves, key, e, n, 1);
    for (int32_t slot = n; slot < num_slots; slot++) {
        const int32_t e = tree[1]; /* never the sentinel: guaranteed by the size checks */
        phy2log[slot] = e;
        phy_rank[slot] = count[e];
        count[e]++;
        key[e] = w[e] / (float)count[e];
        tournament_update(tree, leaves, key, e, count[e] >= cap ? n : e, 1);
    }
}

/* ------------------------------------------------------------------------ */
/* One layer                                                                 */
/* ------------------------------------------------------------------------ */

void dinf__eplb_plan_layer(const float *w, const dinf__eplb_sizes *sz, const dinf__eplb_scratch *s,
                           int64_t *phy2log, int64_t *phy_replica, int64_t *logcnt) {
    const int32_t G = (int32_t)sz->groups, N = (int32_t)sz->nodes;
    const int32_t S = (int32_t)sz->group_size, gpn = (int32_t)sz->groups_per_node;
    const int32_t En = (int32_t)sz->experts_per_node, Rn = (int32_t)sz->replicas_per_node;
    const int32_t Pn = (int32_t)sz->gpus_per_node, ppg = (int32_t)sz->slots_per_gpu;

    /* Step 1: whole groups to nodes, balancing float32 group sums. */
    for (int32_t g = 0; g < G; g++) {
        float t = 0.0f;
        for (int32_t j = 0; j < S; j++)
            t = t + w[g * S + j];
        s->group_load[g] = t;
    }
    balanced_packing(s->group_load, G, N, s->group_pack, s->group_rank, s);
    /* Node-major order: node n owns positions [n*En, (n+1)*En). */
    for (int32_t g = 0; g < G; g++) {
        int32_t base = (s->group_pack[g] * gpn + s->group_rank[g]) * S;
        for (int32_t j = 0; j < S; j++)
            s->mlog2log[base + j] = g * S + j;
    }

    for (int32_t n = 0; n < N; n++) {
        const int32_t *node_experts = s->mlog2log + (size_t)n * En;
        /* Step 2: replicate within the node. */
        for (int32_t k = 0; k < En; k++)
            s->node_load[k] = w[node_experts[k]];
        replicate_experts(s->node_load, En, Rn, (int32_t)sz->replica_cap, s->phy2mlog, s->phy_rank,
                          s->replica_count, s);
        /* Step 3: the node's replicas onto its GPUs, by load per replica. */
        for (int32_t p = 0; p < Rn; p++) {
            int32_t k = s->phy2mlog[p];
            s->replica_load[p] = s->node_load[k] / (float)s->replica_count[k];
        }
        if (sz->distinct)
            balanced_packing_distinct(s->replica_load, s->phy2mlog, Rn, En, Pn, s->replica_gpu,
                                      s->replica_pos, s);
        else
            balanced_packing(s->replica_load, Rn, Pn, s->replica_gpu, s->replica_pos, s);
        for (int32_t p = 0; p < Rn; p++) {
            int64_t slot = (int64_t)n * Rn + (int64_t)s->replica_gpu[p] * ppg + s->replica_pos[p];
            phy2log[slot] = node_experts[s->phy2mlog[p]];
            phy_replica[slot] = s->phy_rank[p];
        }
        for (int32_t k = 0; k < En; k++)
            logcnt[node_experts[k]] = s->replica_count[k];
    }
}

/* ------------------------------------------------------------------------ */
/* Public entry points                                                       */
/* ------------------------------------------------------------------------ */

DINF_API dinf_status dinf_eplb_max_logcnt_bound(int64_t num_logical_experts, int64_t num_replicas,
                                                int64_t num_groups, int64_t num_nodes,
                                                int64_t num_gpus, const dinf_eplb_options *options,
                                                int64_t *bound) {
    dinf__eplb_sizes sz;
    dinf_status st = dinf__eplb_check_sizes(__func__, num_logical_experts, num_replicas, num_groups,
                                            num_nodes, num_gpus, options, &sz);
    if (st != DINF_STATUS_OK)
        return st;
    if (!bound)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "bound is NULL");
    *bound = sz.replica_cap;
    return DINF_STATUS_OK;
}

/* Workspace bytes of dinf_eplb_rebalance_experts for checked sizes: the
 * per-layer scratch plus one layer's replica numbers. */
static dinf_status plan_workspace_bytes(const char *func, const dinf__eplb_sizes *sz,
                                        size_t *bytes) {
    dinf__arena a = {0};
    dinf__eplb_scratch s;
    dinf__eplb_plan_layout(&a, sz, &s);
    size_t extra = (size_t)sz->R * sizeof(int64_t);
    if (a.overflow || dinf__add_size(a.used, extra + DINF__ARENA_ALIGN, &a.used))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "the workspace size overflows size_t");
    *bytes = a.used;
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_eplb_workspace_size(int64_t num_logical_experts, int64_t num_replicas,
                                              int64_t num_groups, int64_t num_nodes,
                                              int64_t num_gpus, const dinf_eplb_options *options,
                                              size_t *bytes) {
    dinf__eplb_sizes sz;
    dinf_status st = dinf__eplb_check_sizes(__func__, num_logical_experts, num_replicas, num_groups,
                                            num_nodes, num_gpus, options, &sz);
    if (st != DINF_STATUS_OK)
        return st;
    if (!bytes)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "bytes is NULL");
    return plan_workspace_bytes(__func__, &sz, bytes);
}

dinf_status dinf__eplb_workspace_acquire(const char *func, size_t needed, void *workspace,
                                         size_t workspace_bytes, void **base, void **owned) {
    *owned = NULL;
    if (workspace) {
        if (workspace_bytes < needed)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "workspace_bytes=%zu is smaller than the %zu bytes needed "
                              "(ask the matching *_workspace_size function)",
                              workspace_bytes, needed);
        if ((uintptr_t)workspace % 8 != 0)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "workspace=%p is not 8-byte aligned", workspace);
        *base = workspace;
        return DINF_STATUS_OK;
    }
    *owned = malloc(needed ? needed : 1);
    if (!*owned)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func,
                          "cannot allocate %zu bytes of workspace", needed);
    *base = *owned;
    return DINF_STATUS_OK;
}

/* log2phy's row width and the products of the [L][R], [L][E] and
 * [L][E][width] arrays (width only when log2phy is given). */
static dinf_status check_log2phy_shape(const char *func, int64_t L, int64_t E, int64_t R,
                                       const int64_t *log2phy, int64_t log2phy_width,
                                       int64_t *width_elems) {
    *width_elems = 0;
    if (log2phy) {
        if (log2phy_width < 1)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "log2phy_width=%lld must be >= 1", (long long)log2phy_width);
        if (dinf__mul_i64(E, log2phy_width, width_elems))
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "num_logical_experts=%lld times log2phy_width=%lld overflows",
                              (long long)E, (long long)log2phy_width);
    }
    const int64_t inner[] = {R, E, *width_elems};
    const char *const names[] = {"num_replicas", "num_logical_experts",
                                 "num_logical_experts*log2phy_width"};
    return dinf__eplb_check_rows(func, L, inner, names, log2phy ? 3 : 2);
}

DINF_API dinf_status dinf_eplb_rebalance_experts(
    const float *weight, int64_t num_layers, int64_t num_logical_experts, int64_t num_replicas,
    int64_t num_groups, int64_t num_nodes, int64_t num_gpus, const dinf_eplb_options *options,
    int64_t *phy2log, int64_t *phy_replica, int64_t *logcnt, int64_t *log2phy,
    int64_t log2phy_width, int64_t *max_logcnt, void *workspace, size_t workspace_bytes) {
    dinf__eplb_sizes sz;
    dinf_status st = dinf__eplb_check_sizes(__func__, num_logical_experts, num_replicas, num_groups,
                                            num_nodes, num_gpus, options, &sz);
    if (st != DINF_STATUS_OK)
        return st;
    const int64_t L = num_layers, E = num_logical_experts, R = num_replicas;
    if (!weight)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "weight is NULL");
    if (!phy2log)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "phy2log is NULL");
    if (!logcnt)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "logcnt is NULL");
    int64_t width_elems = 0;
    st = check_log2phy_shape(__func__, L, E, R, log2phy, log2phy_width, &width_elems);
    if (st != DINF_STATUS_OK)
        return st;
    st = dinf__eplb_check_weights(__func__, weight, L, E);
    if (st != DINF_STATUS_OK)
        return st;

    size_t needed;
    st = plan_workspace_bytes(__func__, &sz, &needed); /* sizes already checked */
    if (st != DINF_STATUS_OK)
        return st;
    const size_t lr = (size_t)(L * R) * 8, le = (size_t)(L * E) * 8;
    const dinf__buffer buffers[] = {
        {"weight", weight, le / 2},
        {"phy2log", phy2log, lr},
        {"phy_replica", phy_replica, lr},
        {"logcnt", logcnt, le},
        {"log2phy", log2phy, log2phy ? (size_t)(L * width_elems) * 8 : 0},
        {"workspace", workspace, workspace ? workspace_bytes : 0},
    };
    st = dinf__check_disjoint(__func__, buffers, (int)(sizeof buffers / sizeof buffers[0]));
    if (st != DINF_STATUS_OK)
        return st;
    void *base, *owned;
    st = dinf__eplb_workspace_acquire(__func__, needed, workspace, workspace_bytes, &base, &owned);
    if (st != DINF_STATUS_OK)
        return st;
    dinf__arena a = {.base = base, .capacity = needed};
    dinf__eplb_scratch s;
    dinf__eplb_plan_layout(&a, &sz, &s);
    int64_t *replica_buf = dinf__arena_take(&a, (size_t)R, sizeof(int64_t));

    int64_t max_count = 0;
    for (int64_t l = 0; l < L; l++) {
        int64_t *p2l = phy2log + l * R;
        int64_t *rep = phy_replica ? phy_replica + l * R : replica_buf;
        int64_t *cnt = logcnt + l * E;
        dinf__eplb_plan_layer(weight + l * E, &sz, &s, p2l, rep, cnt);
        for (int64_t e = 0; e < E; e++)
            if (cnt[e] > max_count)
                max_count = cnt[e];
        if (log2phy && max_count <= log2phy_width) {
            int64_t *rows = log2phy + l * width_elems;
            for (int64_t i = 0; i < width_elems; i++)
                rows[i] = -1;
            for (int64_t x = 0; x < R; x++)
                rows[p2l[x] * log2phy_width + rep[x]] = x;
        }
    }
    free(owned);
    if (max_logcnt)
        *max_logcnt = max_count;
    if (log2phy && max_count > log2phy_width)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "log2phy_width=%lld is smaller than the plan's max_logcnt=%lld "
                         "(dinf_eplb_max_logcnt_bound gives a width that always fits)",
                         (long long)log2phy_width, (long long)max_count);
    return DINF_STATUS_OK;
}

/*
 * dinf_eplb_log2phy, per layer in O(E + R): count each expert's slots, turn
 * the counts into offsets, and place every slot at offset[e] + replica number
 * in a table of R entries (which checks that the numbers are exactly
 * 0..count-1); then copy the rows out, -1 padded.
 */
DINF_API dinf_status dinf_eplb_log2phy(const int64_t *phy2log, const int64_t *phy_replica,
                                       int64_t num_layers, int64_t num_logical_experts,
                                       int64_t num_replicas, int64_t *logcnt, int64_t *log2phy,
                                       int64_t log2phy_width, int64_t *max_logcnt) {
    const int64_t L = num_layers, E = num_logical_experts, R = num_replicas;
    if (E < 1 || R < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "num_logical_experts=%lld and num_replicas=%lld must be >= 1",
                         (long long)E, (long long)R);
    if (R < E)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "num_replicas=%lld is smaller than num_logical_experts=%lld",
                         (long long)R, (long long)E);
    if (!phy2log)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "phy2log is NULL");
    int64_t width_elems = 0;
    dinf_status st = check_log2phy_shape(__func__, L, E, R, log2phy, log2phy_width, &width_elems);
    if (st != DINF_STATUS_OK)
        return st;
    const size_t lr = (size_t)(L * R) * 8, le = (size_t)(L * E) * 8;
    const dinf__buffer buffers[] = {
        {"phy2log", phy2log, lr},
        {"phy_replica", phy_replica, lr},
        {"logcnt", logcnt, le},
        {"log2phy", log2phy, (size_t)(L * width_elems) * 8},
    };
    st = dinf__check_disjoint(__func__, buffers, 4);
    if (st != DINF_STATUS_OK)
        return st;
    int64_t *count = malloc((size_t)(2 * E + 1 + R) * sizeof(int64_t));
    if (!count)
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "cannot allocate %lld counters",
                         (long long)(2 * E + 1 + R));
    int64_t *offset = count + E, *slots = offset + E + 1;
    int64_t max_count = 0;
    for (int64_t l = 0; l < L && st == DINF_STATUS_OK; l++) {
        const int64_t *p2l = phy2log + l * R;
        const int64_t *rep = phy_replica ? phy_replica + l * R : NULL;
        for (int64_t e = 0; e < E; e++)
            count[e] = 0;
        for (int64_t x = 0; x < R; x++) {
            int64_t e = p2l[x];
            if (e < 0 || e >= E) {
                st = DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                               "phy2log[%lld][%lld]=%lld is not an expert in [0, %lld)",
                               (long long)l, (long long)x, (long long)e, (long long)E);
                goto done;
            }
            count[e]++;
        }
        offset[0] = 0;
        for (int64_t e = 0; e < E; e++) {
            if (count[e] == 0) {
                st = DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                               "layer %lld: expert %lld has no slot in phy2log", (long long)l,
                               (long long)e);
                goto done;
            }
            if (log2phy && count[e] > log2phy_width) {
                st = DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                               "layer %lld: expert %lld has %lld replicas, more than "
                               "log2phy_width=%lld",
                               (long long)l, (long long)e, (long long)count[e],
                               (long long)log2phy_width);
                goto done;
            }
            offset[e + 1] = offset[e] + count[e];
            if (count[e] > max_count)
                max_count = count[e];
            if (logcnt)
                logcnt[l * E + e] = count[e];
        }
        for (int64_t x = 0; x < R; x++)
            slots[x] = -1;
        for (int64_t e = 0; e < E; e++)
            count[e] = 0; /* now: next replica number in slot order */
        for (int64_t x = 0; x < R; x++) {
            int64_t e = p2l[x], k = rep ? rep[x] : count[e]++;
            int64_t n = offset[e + 1] - offset[e];
            if (k < 0 || k >= n) {
                st = DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                               "phy_replica[%lld][%lld]=%lld: expert %lld has %lld replicas, so "
                               "its replica numbers are 0..%lld",
                               (long long)l, (long long)x, (long long)k, (long long)e,
                               (long long)n, (long long)(n - 1));
                goto done;
            }
            if (slots[offset[e] + k] != -1) {
                st = DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                               "layer %lld: replica %lld of expert %lld appears twice (slots "
                               "%lld and %lld)",
                               (long long)l, (long long)k, (long long)e,
                               (long long)slots[offset[e] + k], (long long)x);
                goto done;
            }
            slots[offset[e] + k] = x;
        }
        if (log2phy) {
            int64_t *rows = log2phy + l * width_elems;
            for (int64_t e = 0; e < E; e++)
                for (int64_t k = 0; k < log2phy_width; k++)
                    rows[e * log2phy_width + k] =
                        k < offset[e + 1] - offset[e] ? slots[offset[e] + k] : -1;
        }
    }
    if (max_logcnt)
        *max_logcnt = max_count;
done:
    free(count);
    return st;
}
