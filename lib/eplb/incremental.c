/*
 * Migration-aware re-planning (upstream EPLB issue #25): per layer, the
 * better of a greedy local repair of the current plan and the fresh plan
 * relabelled to overlap the current one as much as possible. See eplb.h.
 */
#include "eplb_plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Relative slack for "load <= target" and "strictly lower" comparisons of
 * double sums that are equal in exact arithmetic. */
#define REL_EPS 1e-12

typedef struct inc_scratch {
    dinf__eplb_scratch plan;
    int64_t *fresh, *fresh_replica, *fresh_count; /* [R], [R], [E] */
    int64_t *aligned;                             /* [R] candidate (b) */
    int64_t *search;                              /* [R] candidate (a) */
    int64_t *count64;                             /* [E] scratch for loads */
    double *gpu_load;                             /* [P] */
    /* local search */
    int32_t *count;        /* [E] replicas per expert */
    double *replica_load;  /* [E] */
    int32_t *next_slot;    /* [R] slots of one expert, linked */
    int32_t *first_slot;   /* [E] */
    int32_t *gpu_order;    /* [P] GPUs by load, heaviest first */
    double *delta;         /* [P] */
    uint8_t *touched;      /* [P] */
    int32_t *touched_list; /* [P] */
    uint8_t *node_has;     /* [nodes][E] experts a node may add replicas of */
    /* alignment */
    int32_t *node_count_fresh, *node_count_old; /* [nodes][E] */
    int64_t *score;                             /* [M][M], M = max(nodes, Pn) */
    int64_t *hu, *hv, *hminv;                   /* [M+1] */
    int32_t *hp, *hway;                         /* [M+1] */
    uint8_t *hused;                             /* [M+1] */
    int32_t *node_map, *gpu_map;                /* [nodes], [Pn] */
    uint8_t *slot_taken;                        /* [ppg] */
} inc_scratch;

static void inc_layout(dinf__arena *a, const dinf__eplb_sizes *sz, inc_scratch *s) {
    size_t E = (size_t)sz->E, R = (size_t)sz->R, P = (size_t)sz->P, N = (size_t)sz->nodes;
    size_t Pn = (size_t)sz->gpus_per_node, M = N > Pn ? N : Pn;
    dinf__eplb_plan_layout(a, sz, &s->plan);
    s->fresh = dinf__arena_take(a, R, sizeof(int64_t));
    s->fresh_replica = dinf__arena_take(a, R, sizeof(int64_t));
    s->fresh_count = dinf__arena_take(a, E, sizeof(int64_t));
    s->aligned = dinf__arena_take(a, R, sizeof(int64_t));
    s->search = dinf__arena_take(a, R, sizeof(int64_t));
    s->count64 = dinf__arena_take(a, E, sizeof(int64_t));
    s->gpu_load = dinf__arena_take(a, P, sizeof(double));
    s->count = dinf__arena_take(a, E, sizeof(int32_t));
    s->replica_load = dinf__arena_take(a, E, sizeof(double));
    s->next_slot = dinf__arena_take(a, R, sizeof(int32_t));
    s->first_slot = dinf__arena_take(a, E, sizeof(int32_t));
    s->gpu_order = dinf__arena_take(a, P, sizeof(int32_t));
    s->delta = dinf__arena_take(a, P, sizeof(double));
    s->touched = dinf__arena_take(a, P, 1);
    s->touched_list = dinf__arena_take(a, P, sizeof(int32_t));
    s->node_has = dinf__arena_take(a, N * E, 1);
    s->node_count_fresh = dinf__arena_take(a, N * E, sizeof(int32_t));
    s->node_count_old = dinf__arena_take(a, N * E, sizeof(int32_t));
    s->score = dinf__arena_take(a, M * M, sizeof(int64_t));
    s->hu = dinf__arena_take(a, M + 1, sizeof(int64_t));
    s->hv = dinf__arena_take(a, M + 1, sizeof(int64_t));
    s->hminv = dinf__arena_take(a, M + 1, sizeof(int64_t));
    s->hp = dinf__arena_take(a, M + 1, sizeof(int32_t));
    s->hway = dinf__arena_take(a, M + 1, sizeof(int32_t));
    s->hused = dinf__arena_take(a, M + 1, 1);
    s->node_map = dinf__arena_take(a, N, sizeof(int32_t));
    s->gpu_map = dinf__arena_take(a, Pn, sizeof(int32_t));
    s->slot_taken = dinf__arena_take(a, (size_t)sz->slots_per_gpu, 1);
}

/* ------------------------------------------------------------------------ */
/* Optimal assignment (Hungarian method, potentials form), O(n^3).           */
/* ------------------------------------------------------------------------ */

/* Maximise sum of score[i][assign[i]] over permutations; score is n x n. */
static void max_assignment(int32_t n, const int64_t *score, const inc_scratch *s, int32_t *assign) {
    int64_t *u = s->hu, *v = s->hv, *minv = s->hminv;
    int32_t *p = s->hp, *way = s->hway;
    uint8_t *used = s->hused;
    const int64_t INF = INT64_MAX / 4;
    for (int32_t j = 0; j <= n; j++) {
        u[j] = v[j] = 0;
        p[j] = 0;
        way[j] = 0;
    }
    for (int32_t i = 1; i <= n; i++) {
        p[0] = i;
        int32_t j0 = 0;
        for (int32_t j = 0; j <= n; j++) {
            minv[j] = INF;
            used[j] = 0;
        }
        do {
            used[j0] = 1;
            int32_t i0 = p[j0], j1 = 0;
            int64_t delta = INF;
            for (int32_t j = 1; j <= n; j++) {
                if (used[j])
                    continue;
                int64_t cur = -score[(size_t)(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
                if (cur < minv[j]) {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if (minv[j] < delta) {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for (int32_t j = 0; j <= n; j++) {
                if (used[j]) {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
        } while (p[j0] != 0);
        do {
            int32_t j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0);
    }
    for (int32_t j = 1; j <= n; j++)
        assign[p[j] - 1] = j - 1;
}

/* ------------------------------------------------------------------------ */
/* Candidate (b): the fresh plan relabelled onto the current one.            */
/* ------------------------------------------------------------------------ */

/* Size of the multiset intersection of two GPUs' slot lists. */
static int64_t gpu_overlap(const int64_t *a, const int64_t *b, int64_t ppg, uint8_t *taken) {
    memset(taken, 0, (size_t)ppg);
    int64_t common = 0;
    for (int64_t i = 0; i < ppg; i++)
        for (int64_t k = 0; k < ppg; k++)
            if (!taken[k] && b[k] == a[i]) {
                taken[k] = 1;
                common++;
                break;
            }
    return common;
}

static void align_fresh(const int64_t *fresh, const int64_t *old, const dinf__eplb_sizes *sz,
                        const inc_scratch *s, int64_t *out) {
    const int64_t E = sz->E, N = sz->nodes, Pn = sz->gpus_per_node, ppg = sz->slots_per_gpu;
    const int64_t Rn = sz->replicas_per_node;
    /* Nodes: maximise the experts (with multiplicity) a node keeps. */
    if (N > 1) {
        memset(s->node_count_fresh, 0, (size_t)(N * E) * sizeof(int32_t));
        memset(s->node_count_old, 0, (size_t)(N * E) * sizeof(int32_t));
        for (int64_t x = 0; x < sz->R; x++) {
            s->node_count_fresh[(x / Rn) * E + fresh[x]]++;
            s->node_count_old[(x / Rn) * E + old[x]]++;
        }
        for (int64_t a = 0; a < N; a++)
            for (int64_t b = 0; b < N; b++) {
                int64_t common = 0;
                for (int64_t e = 0; e < E; e++) {
                    int32_t fa = s->node_count_fresh[a * E + e], ob = s->node_count_old[b * E + e];
                    common += fa < ob ? fa : ob;
                }
                s->score[a * N + b] = common;
            }
        max_assignment((int32_t)N, s->score, s, s->node_map);
    } else {
        s->node_map[0] = 0;
    }
    for (int64_t fn = 0; fn < N; fn++) {
        const int64_t on = s->node_map[fn];
        /* GPUs of the node pair: maximise the experts a GPU keeps. */
        for (int64_t a = 0; a < Pn; a++)
            for (int64_t b = 0; b < Pn; b++)
                s->score[a * Pn + b] = gpu_overlap(fresh + (fn * Pn + a) * ppg,
                                                   old + (on * Pn + b) * ppg, ppg, s->slot_taken);
        max_assignment((int32_t)Pn, s->score, s, s->gpu_map);
        for (int64_t a = 0; a < Pn; a++) {
            const int64_t *src = fresh + (fn * Pn + a) * ppg;
            const int64_t *cur = old + (on * Pn + s->gpu_map[a]) * ppg;
            int64_t *dst = out + (on * Pn + s->gpu_map[a]) * ppg;
            uint8_t *taken = s->slot_taken; /* fresh slots already placed */
            memset(taken, 0, (size_t)ppg);
            for (int64_t i = 0; i < ppg; i++) {
                dst[i] = -1;
                for (int64_t k = 0; k < ppg; k++)
                    if (!taken[k] && src[k] == cur[i]) {
                        taken[k] = 1;
                        dst[i] = cur[i];
                        break;
                    }
            }
            int64_t k = 0;
            for (int64_t i = 0; i < ppg; i++) {
                if (dst[i] != -1)
                    continue;
                while (taken[k])
                    k++;
                taken[k] = 1;
                dst[i] = src[k];
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Candidate (a): greedy local repair of the current plan.                   */
/* ------------------------------------------------------------------------ */

static _Thread_local const double *sort_loads;

static int by_load_desc(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    if (sort_loads[a] != sort_loads[b])
        return sort_loads[a] > sort_loads[b] ? -1 : 1;
    return a - b;
}

typedef struct move {
    int kind; /* 0 none, 1 retarget slot s to expert f, 2 swap slots s and t */
    int64_t s, t, f;
    double new_max, affected_max;
    int64_t moves_delta;
} move;

static int move_better(const move *a, const move *b) {
    if (b->kind == 0)
        return 1;
    if (a->new_max != b->new_max)
        return a->new_max < b->new_max;
    if (a->moves_delta != b->moves_delta)
        return a->moves_delta < b->moves_delta;
    return a->affected_max < b->affected_max;
}

static int gpu_holds(const int64_t *plan, int64_t g, int64_t ppg, int64_t e) {
    for (int64_t i = 0; i < ppg; i++)
        if (plan[g * ppg + i] == e)
            return 1;
    return 0;
}

static void touch(const inc_scratch *s, int32_t *n_touched, int64_t g, double d) {
    if (!s->touched[g]) {
        s->touched[g] = 1;
        s->delta[g] = 0.0;
        s->touched_list[(*n_touched)++] = (int32_t)g;
    }
    s->delta[g] += d;
}

/* Heaviest GPU load not marked touched (or not in {skip_a, skip_b}). */
static double other_max(const inc_scratch *s, int64_t P, int64_t skip_a, int64_t skip_b) {
    for (int64_t i = 0; i < P; i++) {
        int32_t g = s->gpu_order[i];
        if (!s->touched[g] && g != skip_a && g != skip_b)
            return s->gpu_load[g];
    }
    return 0.0;
}

static void rebuild_state(const float *w, const int64_t *plan, const dinf__eplb_sizes *sz,
                          const inc_scratch *s) {
    const int64_t E = sz->E, R = sz->R, P = sz->P, ppg = sz->slots_per_gpu;
    for (int64_t e = 0; e < E; e++) {
        s->count[e] = 0;
        s->first_slot[e] = -1;
    }
    for (int64_t x = R - 1; x >= 0; x--) {
        int64_t e = plan[x];
        s->count[e]++;
        s->next_slot[x] = s->first_slot[e];
        s->first_slot[e] = (int32_t)x;
    }
    for (int64_t e = 0; e < E; e++)
        s->replica_load[e] = (double)w[e] / (double)s->count[e];
    for (int64_t g = 0; g < P; g++) {
        double sum = 0.0;
        for (int64_t i = 0; i < ppg; i++)
            sum += s->replica_load[plan[g * ppg + i]];
        s->gpu_load[g] = sum;
        s->gpu_order[g] = (int32_t)g;
    }
    sort_loads = s->gpu_load;
    qsort(s->gpu_order, (size_t)P, sizeof(int32_t), by_load_desc);
}

/* Returns the number of moved slots if the plan reaches target within
 * budget moves, -1 otherwise. plan starts as a copy of old. */
static int64_t local_repair(const float *w, const int64_t *old, int64_t *plan, double target,
                            int64_t budget, const dinf__eplb_sizes *sz, const inc_scratch *s) {
    const int64_t E = sz->E, R = sz->R, P = sz->P, ppg = sz->slots_per_gpu;
    const int64_t Pn = sz->gpus_per_node, Rn = sz->replicas_per_node;
    memcpy(plan, old, (size_t)R * sizeof(int64_t));
    if (sz->distinct)
        for (int64_t g = 0; g < P; g++)
            for (int64_t i = 0; i < ppg; i++)
                for (int64_t j = 0; j < i; j++)
                    if (plan[g * ppg + i] == plan[g * ppg + j])
                        return -1; /* starts with duplicates: leave it to (b) */
    memset(s->node_has, 0, (size_t)(sz->nodes * E));
    for (int64_t x = 0; x < R; x++)
        s->node_has[(sz->nodes > 1 ? x / Rn : 0) * E + old[x]] = 1;
    memset(s->touched, 0, (size_t)P);

    int64_t moves = 0;
    for (int64_t iter = 0; iter < 4 * R; iter++) {
        rebuild_state(w, plan, sz, s);
        const int64_t h = s->gpu_order[0];
        const double cur_max = s->gpu_load[h];
        if (cur_max <= target * (1.0 + REL_EPS))
            return moves;
        if (moves >= budget)
            return -1;
        const double accept_below = cur_max * (1.0 - REL_EPS);
        const int64_t node = sz->nodes > 1 ? h / Pn : 0;
        move best = {0};

        /* Retarget one slot of the heaviest GPU to another expert. */
        for (int64_t i = 0; i < ppg; i++) {
            const int64_t slot = h * ppg + i, e = plan[slot];
            if (s->count[e] < 2)
                continue;
            const double e_new = (double)w[e] / (double)(s->count[e] - 1);
            for (int64_t f = 0; f < E; f++) {
                if (f == e || !s->node_has[node * E + f])
                    continue;
                if (sz->distinct && gpu_holds(plan, h, ppg, f))
                    continue;
                const double f_new = (double)w[f] / (double)(s->count[f] + 1);
                int32_t n_touched = 0;
                for (int32_t y = s->first_slot[e]; y >= 0; y = s->next_slot[y])
                    touch(s, &n_touched, y / ppg,
                          y == slot ? -s->replica_load[e] : e_new - s->replica_load[e]);
                for (int32_t y = s->first_slot[f]; y >= 0; y = s->next_slot[y])
                    touch(s, &n_touched, y / ppg, f_new - s->replica_load[f]);
                touch(s, &n_touched, h, f_new);
                double affected = 0.0;
                for (int32_t k = 0; k < n_touched; k++) {
                    int32_t g = s->touched_list[k];
                    double v = s->gpu_load[g] + s->delta[g];
                    if (v > affected)
                        affected = v;
                }
                double others = other_max(s, P, -1, -1);
                for (int32_t k = 0; k < n_touched; k++)
                    s->touched[s->touched_list[k]] = 0;
                if (!(affected < accept_below))
                    continue;
                move m = {1, slot, -1, f, affected > others ? affected : others, affected,
                          (int64_t)(f != old[slot]) - (int64_t)(e != old[slot])};
                if (move_better(&m, &best))
                    best = m;
            }
        }
        /* Swap a slot of the heaviest GPU with a slot of another GPU. */
        const int64_t g_lo = sz->nodes > 1 ? node * Pn : 0, g_hi = sz->nodes > 1 ? g_lo + Pn : P;
        for (int64_t i = 0; i < ppg; i++) {
            const int64_t slot = h * ppg + i, e = plan[slot];
            for (int64_t g = g_lo; g < g_hi; g++) {
                if (g == h)
                    continue;
                for (int64_t j = 0; j < ppg; j++) {
                    const int64_t t = g * ppg + j, f = plan[t];
                    if (f == e)
                        continue;
                    if (sz->distinct && (gpu_holds(plan, h, ppg, f) || gpu_holds(plan, g, ppg, e)))
                        continue;
                    double nh = s->gpu_load[h] - s->replica_load[e] + s->replica_load[f];
                    double ng = s->gpu_load[g] - s->replica_load[f] + s->replica_load[e];
                    double affected = nh > ng ? nh : ng;
                    if (!(affected < accept_below))
                        continue;
                    double others = other_max(s, P, h, g);
                    move m = {2, slot, t, -1, affected > others ? affected : others, affected,
                              (int64_t)(f != old[slot]) + (int64_t)(e != old[t]) -
                                  (int64_t)(e != old[slot]) - (int64_t)(f != old[t])};
                    if (move_better(&m, &best))
                        best = m;
                }
            }
        }
        if (best.kind == 0)
            return -1;
        if (best.kind == 1) {
            plan[best.s] = best.f;
        } else {
            int64_t tmp = plan[best.s];
            plan[best.s] = plan[best.t];
            plan[best.t] = tmp;
        }
        moves += best.moves_delta;
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                              */
/* ------------------------------------------------------------------------ */

/* Workspace bytes of dinf_eplb_rebalance_incremental for checked sizes. */
static dinf_status inc_workspace_bytes(const char *func, const dinf__eplb_sizes *sz,
                                       size_t *bytes) {
    dinf__arena a = {0};
    inc_scratch s;
    inc_layout(&a, sz, &s);
    if (a.overflow)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "the workspace size overflows size_t");
    *bytes = a.used;
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_eplb_incremental_workspace_size(int64_t num_logical_experts,
                                                          int64_t num_replicas, int64_t num_groups,
                                                          int64_t num_nodes, int64_t num_gpus,
                                                          const dinf_eplb_options *options,
                                                          size_t *bytes) {
    dinf__eplb_sizes sz;
    dinf_status st = dinf__eplb_check_sizes(__func__, num_logical_experts, num_replicas, num_groups,
                                            num_nodes, num_gpus, options, &sz);
    if (st != DINF_STATUS_OK)
        return st;
    if (!bytes)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "bytes is NULL");
    return inc_workspace_bytes(__func__, &sz, bytes);
}

static int64_t count_moves(const int64_t *a, const int64_t *b, int64_t R) {
    int64_t moved = 0;
    for (int64_t x = 0; x < R; x++)
        moved += a[x] != b[x];
    return moved;
}

DINF_API dinf_status dinf_eplb_rebalance_incremental(
    const float *weight, int64_t num_layers, int64_t num_logical_experts, int64_t num_replicas,
    int64_t num_groups, int64_t num_nodes, int64_t num_gpus, const dinf_eplb_options *options,
    double tolerance, const int64_t *current_phy2log, int64_t *phy2log, int64_t *phy_replica,
    int64_t *logcnt, int64_t *moved_per_layer, int64_t *num_moved, void *workspace,
    size_t workspace_bytes) {
    dinf__eplb_sizes sz;
    dinf_status st = dinf__eplb_check_sizes(__func__, num_logical_experts, num_replicas, num_groups,
                                            num_nodes, num_gpus, options, &sz);
    if (st != DINF_STATUS_OK)
        return st;
    const int64_t L = num_layers, E = num_logical_experts, R = num_replicas, P = num_gpus;
    if (!weight)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "weight is NULL");
    if (!current_phy2log)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "current_phy2log is NULL");
    if (!phy2log)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "phy2log is NULL");
    if (!logcnt)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "logcnt is NULL");
    if (!(tolerance >= 0.0) || isinf(tolerance))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "tolerance=%g must be finite and >= 0",
                         tolerance);
    const int64_t inner[] = {R, E};
    const char *const names[] = {"num_replicas", "num_logical_experts"};
    st = dinf__eplb_check_rows(__func__, L, inner, names, 2);
    if (st != DINF_STATUS_OK)
        return st;
    st = dinf__eplb_check_weights(__func__, weight, L, E);
    if (st != DINF_STATUS_OK)
        return st;

    size_t needed = 0;
    st = inc_workspace_bytes(__func__, &sz, &needed); /* sizes already checked */
    if (st != DINF_STATUS_OK)
        return st;
    const size_t lr = (size_t)(L * R) * 8, le = (size_t)(L * E) * 8;
    const dinf__buffer buffers[] = {
        {"weight", weight, le / 2},           {"current_phy2log", current_phy2log, lr},
        {"phy2log", phy2log, lr},             {"phy_replica", phy_replica, lr},
        {"logcnt", logcnt, le},               {"moved_per_layer", moved_per_layer, (size_t)L * 8},
        {"num_moved", num_moved, 8},          {"workspace", workspace, workspace ? workspace_bytes : 0},
    };
    st = dinf__check_disjoint(__func__, buffers, (int)(sizeof buffers / sizeof buffers[0]));
    if (st != DINF_STATUS_OK)
        return st;
    void *base, *owned;
    st = dinf__eplb_workspace_acquire(__func__, needed, workspace, workspace_bytes, &base, &owned);
    if (st != DINF_STATUS_OK)
        return st;
    dinf__arena a = {.base = base, .capacity = needed};
    inc_scratch s;
    inc_layout(&a, &sz, &s);

    /* The current plan must be a plan: experts in range, each present. */
    for (int64_t l = 0; l < L; l++) {
        const int64_t *old = current_phy2log + l * R;
        memset(s.count, 0, (size_t)E * sizeof(int32_t));
        for (int64_t x = 0; x < R; x++) {
            if (old[x] < 0 || old[x] >= E) {
                free(owned);
                return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                                 "current_phy2log[%lld][%lld]=%lld is not an expert in [0, %lld)",
                                 (long long)l, (long long)x, (long long)old[x], (long long)E);
            }
            s.count[old[x]]++;
        }
        for (int64_t e = 0; e < E; e++)
            if (s.count[e] == 0) {
                free(owned);
                return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                                 "current_phy2log layer %lld has no replica of expert %lld",
                                 (long long)l, (long long)e);
            }
    }

    int64_t total = 0;
    for (int64_t l = 0; l < L; l++) {
        const float *w = weight + l * E;
        const int64_t *old = current_phy2log + l * R;
        int64_t *out = phy2log + l * R;
        dinf__eplb_plan_layer(w, &sz, &s.plan, s.fresh, s.fresh_replica, s.fresh_count);
        dinf__eplb_gpu_loads(w, s.fresh, E, R, P, s.count64, s.gpu_load);
        const double target = dinf__eplb_max(s.gpu_load, P) * (1.0 + tolerance);
        dinf__eplb_gpu_loads(w, old, E, R, P, s.count64, s.gpu_load);
        const double old_max = dinf__eplb_max(s.gpu_load, P);

        int64_t moved = 0;
        if (old_max <= target * (1.0 + REL_EPS)) {
            memcpy(out, old, (size_t)R * sizeof(int64_t));
        } else {
            align_fresh(s.fresh, old, &sz, &s, s.aligned);
            const int64_t moved_aligned = count_moves(s.aligned, old, R);
            dinf__eplb_gpu_loads(w, s.aligned, E, R, P, s.count64, s.gpu_load);
            const double max_aligned = dinf__eplb_max(s.gpu_load, P);
            const int64_t moved_search =
                local_repair(w, old, s.search, target, moved_aligned, &sz, &s);
            int use_search = 0;
            if (moved_search >= 0) {
                dinf__eplb_gpu_loads(w, s.search, E, R, P, s.count64, s.gpu_load);
                const double max_search = dinf__eplb_max(s.gpu_load, P);
                use_search = moved_search < moved_aligned ||
                             (moved_search == moved_aligned && max_search < max_aligned);
            }
            memcpy(out, use_search ? s.search : s.aligned, (size_t)R * sizeof(int64_t));
            moved = use_search ? moved_search : moved_aligned;
        }
        /* logcnt and replica numbers in ascending slot order. */
        int64_t *cnt = logcnt + l * E;
        for (int64_t e = 0; e < E; e++)
            cnt[e] = 0;
        for (int64_t x = 0; x < R; x++) {
            if (phy_replica)
                phy_replica[l * R + x] = cnt[out[x]];
            cnt[out[x]]++;
        }
        if (moved_per_layer)
            moved_per_layer[l] = moved;
        total += moved;
    }
    free(owned);
    if (num_moved)
        *num_moved = total;
    return DINF_STATUS_OK;
}
