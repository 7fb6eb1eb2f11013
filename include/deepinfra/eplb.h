/*
 * libdeepinfra eplb: expert-parallel load balancing (DeepSeek EPLB).
 *
 * Given a load estimate per logical expert of each MoE layer, decide how many
 * replicas each expert gets and which GPU slot holds each replica.
 *
 * Typical use (sizes of DeepSeek-V3 prefill: 58 layers, 256 experts in 8
 * groups, 288 slots on 32 GPUs in 4 nodes):
 *
 *     int64_t L = 58, E = 256, R = 288, G = 8, N = 4, P = 32, M, width;
 *     dinf_eplb_max_logcnt_bound(E, R, G, N, P, NULL, &width);
 *     // weight: float[L][E]; phy2log: int64[L][R]; logcnt: int64[L][E];
 *     // log2phy: int64[L][E][width]
 *     dinf_eplb_rebalance_experts(weight, L, E, R, G, N, P, NULL,
 *                                 phy2log, NULL, logcnt, log2phy, width, &M,
 *                                 NULL, 0);
 *     // Slot x of layer l lives on GPU x / (R / P), GPU g on node g / (P / N).
 *
 * THE CONTRACT. dinf_eplb_rebalance_experts with default options returns
 * exactly what upstream `eplb.rebalance_experts` (deepseek-ai/EPLB at
 * d52c72d, run with CPU torch) returns for the same float32 weights, ties
 * included: phy2log, logcnt, and log2phy with its width M = maxlogcnt. The
 * rules that make this hold are those of upstream's tensors: float32
 * arithmetic everywhere (group sums summed in index order, loads divided by
 * replica counts in float32), argmax takes the first maximal expert, packing
 * takes the lowest pack index among equal sums, and the descending sort orders
 * ties exactly as torch's CPU sort (libstdc++ introsort) does. Weights above
 * 2^24 are rounded to float32 first, as upstream's .float() does.
 *
 * Policy (as upstream): hierarchical when num_groups % num_nodes == 0 (groups
 * to nodes, replicas within each node, replicas to that node's GPUs), global
 * otherwise (the same with one group on one node).
 *
 * Beyond upstream:
 *   - options.distinct_experts_per_gpu: never two replicas of one expert on
 *     one GPU (upstream EPLB issue #22);
 *   - dinf_eplb_rebalance_incremental: a migration-aware plan that stays
 *     within a tolerance of a fresh plan's heaviest GPU and moves few replicas
 *     (upstream issue #25);
 *   - dinf_eplb_balance_report: load per GPU and node and max/mean ratios of
 *     any plan.
 *
 * All functions are pure CPU code: synchronous, thread-safe (no shared state;
 * calls on different threads with different buffers may run concurrently),
 * deterministic, and they write only the caller's buffers. Shapes are int64
 * and every array is dense, row-major, C-contiguous, at least 8-byte aligned.
 */
#ifndef DEEPINFRA_EPLB_H
#define DEEPINFRA_EPLB_H

#include "deepinfra/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DINF_EPLB_OPTIONS_MAGIC 0x424c5045u /* "EPLB" */

/* Options. NULL means defaults (upstream behaviour). Initialise a struct
 * with DINF_EPLB_OPTIONS_INIT and change the fields you need. */
typedef struct dinf_eplb_options {
    uint32_t size;  /* sizeof(dinf_eplb_options) */
    uint32_t magic; /* DINF_EPLB_OPTIONS_MAGIC */
    /* 0 (default): upstream behaviour, where two replicas of one expert may
     * share a GPU. 1: never. Replication then caps each expert at the number
     * of GPUs it can spread over (GPUs per node for the hierarchical policy,
     * all GPUs for the global one), and packing places replicas of one expert
     * on different GPUs (greedy as upstream, with a swap repair when the
     * greedy choice is blocked). When the upstream plan already has no such
     * duplicates, the result equals it exactly. Impossible when a GPU has more
     * slots than its node has experts (num_replicas / num_gpus >
     * num_logical_experts / nodes): DINF_STATUS_INVALID_ARGUMENT says so. */
    int32_t distinct_experts_per_gpu;
    int32_t reserved; /* must be 0 */
} dinf_eplb_options;

#define DINF_EPLB_OPTIONS_INIT {sizeof(dinf_eplb_options), DINF_EPLB_OPTIONS_MAGIC, 0, 0}

/*
 * The problem size shared by the functions below:
 *   num_layers           L >= 1   MoE layers (rows of weight)
 *   num_logical_experts  E >= 1   experts per layer
 *   num_replicas         R >= E   physical expert slots per layer; R % num_gpus == 0
 *   num_groups           G >= 1   expert groups (contiguous: group g = experts
 *                                 [g*E/G, (g+1)*E/G)); E % G == 0 when the
 *                                 hierarchical policy applies (G % num_nodes == 0)
 *   num_nodes            N >= 1   server nodes; num_gpus % N == 0
 *   num_gpus             P >= 1   GPUs; slot x lives on GPU x / (R / P)
 * E, R, G and P are at most 2^30 (the planner indexes items with int32).
 * Products such as L * R and L * E * width must fit in int64 and in size_t
 * bytes; otherwise DINF_STATUS_INVALID_ARGUMENT.
 */

/*
 * dinf_eplb_max_logcnt_bound - an upper bound on the maximum replica count
 * (maxlogcnt, the width of log2phy) that dinf_eplb_rebalance_experts can
 * return for this size, known before planning: R/N - E/N + 1 for the
 * hierarchical policy, R - E + 1 for the global one; with
 * distinct_experts_per_gpu, the smaller of that and the GPUs an expert can
 * spread over (P/N, or P for the global policy).
 *
 * Arguments:
 *   num_logical_experts, num_replicas, num_groups, num_nodes, num_gpus [IN]
 *                        as above
 *   options     [IN]  may be NULL (defaults)
 *   bound       [OUT] caller-owned int64, not NULL
 * Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT.
 */
DINF_API dinf_status dinf_eplb_max_logcnt_bound(int64_t num_logical_experts, int64_t num_replicas,
                                                int64_t num_groups, int64_t num_nodes,
                                                int64_t num_gpus, const dinf_eplb_options *options,
                                                int64_t *bound);

/*
 * dinf_eplb_workspace_size - bytes of workspace dinf_eplb_rebalance_experts
 * needs for this size (O(E + R), independent of L).
 *
 * Arguments: the problem size and options as above; bytes [OUT] not NULL.
 * Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT.
 */
DINF_API dinf_status dinf_eplb_workspace_size(int64_t num_logical_experts, int64_t num_replicas,
                                              int64_t num_groups, int64_t num_nodes,
                                              int64_t num_gpus, const dinf_eplb_options *options,
                                              size_t *bytes);

/*
 * dinf_eplb_rebalance_experts - the replication and placement plan of
 * upstream rebalance_experts (see THE CONTRACT above).
 *
 * Arguments:
 *   weight        [IN]  float32 [L][E]: load of each logical expert; finite
 *                       and >= 0 (NaN, inf and negative values are rejected)
 *   num_layers .. num_gpus [IN] the problem size (see above)
 *   options       [IN]  may be NULL
 *   phy2log       [OUT] int64 [L][R]: logical expert held by each physical slot
 *   phy_replica   [OUT] int64 [L][R]: replica number of each slot (replica k of
 *                       an expert is the k-th one created; the original is 0).
 *                       May be NULL.
 *   logcnt        [OUT] int64 [L][E]: replicas of each expert, >= 1
 *   log2phy       [OUT] int64 [L][E][log2phy_width]: log2phy[l][e][k] is the
 *                       slot of replica k of expert e, -1 for k >= logcnt. May
 *                       be NULL (then log2phy_width is ignored).
 *   log2phy_width [IN]  row width of log2phy; must be >= the resulting
 *                       max_logcnt (dinf_eplb_max_logcnt_bound is always
 *                       enough). Upstream's log2phy is the [:, :, :max_logcnt]
 *                       slice of this array.
 *   max_logcnt    [OUT] int64: maximum of logcnt over all layers and experts
 *                       (upstream's log2phy width). May be NULL.
 *   workspace     [IN]  scratch of workspace_bytes bytes, 8-byte aligned, from
 *                       dinf_eplb_workspace_size; or NULL, in which case the
 *                       library allocates and frees it itself.
 *   workspace_bytes [IN] size of workspace
 * All buffers are caller-owned and must not overlap (checked:
 * DINF_STATUS_INVALID_ARGUMENT). On failure the outputs are unspecified,
 * except that max_logcnt is set when log2phy_width was the only problem.
 * Returns DINF_STATUS_OK; DINF_STATUS_INVALID_ARGUMENT for a NULL required
 * pointer, a size rule broken, a bad load, bad options, a workspace that is too
 * small, or log2phy_width < max_logcnt; DINF_STATUS_OUT_OF_MEMORY when the
 * library-allocated workspace cannot be had.
 */
DINF_API dinf_status dinf_eplb_rebalance_experts(
    const float *weight, int64_t num_layers, int64_t num_logical_experts, int64_t num_replicas,
    int64_t num_groups, int64_t num_nodes, int64_t num_gpus, const dinf_eplb_options *options,
    int64_t *phy2log, int64_t *phy_replica, int64_t *logcnt, int64_t *log2phy,
    int64_t log2phy_width, int64_t *max_logcnt, void *workspace, size_t workspace_bytes);

/*
 * dinf_eplb_log2phy - build log2phy (and logcnt) from any plan.
 *
 * Arguments:
 *   phy2log       [IN]  int64 [L][R], every value in [0, E), every expert at
 *                       least once per layer
 *   phy_replica   [IN]  int64 [L][R] replica numbers (for each expert of each
 *                       layer, exactly 0..count-1); or NULL: replicas are
 *                       numbered in ascending slot order
 *   num_layers, num_logical_experts, num_replicas [IN]
 *   logcnt        [OUT] int64 [L][E]; may be NULL
 *   log2phy       [OUT] int64 [L][E][log2phy_width], -1 padded; or NULL to
 *                       check the plan and learn logcnt / max_logcnt only
 *   log2phy_width [IN]  >= the maximum replica count (ignored if log2phy is
 *                       NULL)
 *   max_logcnt    [OUT] int64, may be NULL
 * No two buffers may overlap. O(L (E + R)) time; allocates O(E + R) scratch.
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (naming the first
 * layer and slot that break a rule) or DINF_STATUS_OUT_OF_MEMORY.
 */
DINF_API dinf_status dinf_eplb_log2phy(const int64_t *phy2log, const int64_t *phy_replica,
                                       int64_t num_layers, int64_t num_logical_experts,
                                       int64_t num_replicas, int64_t *logcnt, int64_t *log2phy,
                                       int64_t log2phy_width, int64_t *max_logcnt);

/*
 * dinf_eplb_rebalance_incremental - migration-aware re-planning.
 *
 * Each layer gets a plan whose heaviest GPU load (under the new weights, a
 * replica carrying weight[e] / logcnt[e]) is at most (1 + tolerance) times
 * that of a fresh dinf_eplb_rebalance_experts plan, while moving few
 * replicas. A replica moves when its slot holds a different expert than in
 * current_phy2log (a weight transfer into that slot). Per layer it keeps the
 * better (fewer moves, then lower heaviest GPU) of:
 *   (a) the current plan repaired by greedy local moves (retarget one slot
 *       of the heaviest GPU to another expert, or swap two slots between
 *       GPUs), each step lowering the heaviest loads, until within tolerance;
 *   (b) the fresh plan with its nodes and GPUs relabelled (optimal assignment,
 *       Hungarian method) and slots reordered within each GPU so that as many
 *       slots as possible keep their current expert.
 * (b) always meets the tolerance, so the result does. A current plan already
 * within tolerance is returned unchanged (0 moves). Both candidates keep the
 * policy's structure: for the hierarchical policy, (a) only moves experts
 * within a node and only adds replicas of experts the node already holds,
 * and (b) keeps whole groups on nodes. With distinct_experts_per_gpu, both
 * keep one replica per expert per GPU ((a) is skipped if the current plan
 * has duplicates). Minimising moves exactly is NP-hard in general; this is a
 * heuristic with the guarantee above, deterministic. Cost per layer: a fresh
 * plan, O(N^3 + N (P/N)^3) for the assignments (Hungarian method), and the
 * local search (each step scans the heaviest GPU's slots against all experts
 * and all slots of its node).
 *
 * Arguments:
 *   weight           [IN]  float32 [L][E], finite and >= 0: the new loads
 *   num_layers .. num_gpus [IN] the problem size
 *   options          [IN]  may be NULL
 *   tolerance        [IN]  >= 0 and finite, e.g. 0.05 for 5%
 *   current_phy2log  [IN]  int64 [L][R]: the plan in service; values in
 *                          [0, E), every expert at least once per layer
 *   phy2log          [OUT] int64 [L][R]: the new plan
 * (no two buffers may overlap: checked)
 *   phy_replica      [OUT] int64 [L][R], may be NULL: replica numbers in
 *                          ascending slot order per expert
 *   logcnt           [OUT] int64 [L][E]
 *   moved_per_layer  [OUT] int64 [L], may be NULL: slots whose expert changed
 *   num_moved        [OUT] int64, may be NULL: total over layers
 *   workspace, workspace_bytes [IN] as for dinf_eplb_rebalance_experts, sized
 *                          by dinf_eplb_incremental_workspace_size; or NULL
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT or
 * DINF_STATUS_OUT_OF_MEMORY.
 */
DINF_API dinf_status dinf_eplb_rebalance_incremental(
    const float *weight, int64_t num_layers, int64_t num_logical_experts, int64_t num_replicas,
    int64_t num_groups, int64_t num_nodes, int64_t num_gpus, const dinf_eplb_options *options,
    double tolerance, const int64_t *current_phy2log, int64_t *phy2log, int64_t *phy_replica,
    int64_t *logcnt, int64_t *moved_per_layer, int64_t *num_moved, void *workspace,
    size_t workspace_bytes);

/*
 * dinf_eplb_incremental_workspace_size - bytes of workspace
 * dinf_eplb_rebalance_incremental needs: O(E + R + N*E + max(N, P/N)^2),
 * independent of L.
 * Arguments: the problem size and options as for dinf_eplb_workspace_size;
 * bytes [OUT] not NULL.
 * Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT.
 */
DINF_API dinf_status dinf_eplb_incremental_workspace_size(int64_t num_logical_experts,
                                                          int64_t num_replicas, int64_t num_groups,
                                                          int64_t num_nodes, int64_t num_gpus,
                                                          const dinf_eplb_options *options,
                                                          size_t *bytes);

/* Aggregates of a balance report. */
typedef struct dinf_eplb_balance_summary {
    double max_gpu_imbalance;   /* max over layers of (max GPU load / mean GPU load) */
    double mean_gpu_imbalance;  /* mean over layers of the same ratio */
    double max_node_imbalance;  /* max over layers of (max node load / mean node load) */
    double mean_node_imbalance; /* mean over layers of the same ratio */
    double max_gpu_load;        /* heaviest GPU load of any layer */
} dinf_eplb_balance_summary;

/*
 * dinf_eplb_balance_report - how balanced any plan is under given loads.
 *
 * A replica of expert e in layer l carries weight[l][e] / (number of slots
 * of layer l holding e); a GPU's load is the sum over its R/P slots, a node's
 * the sum over its P/N GPUs. A layer whose loads are all zero has ratio 1.
 * Sums are in double.
 *
 * Arguments:
 *   weight          [IN]  float32 [L][E], finite and >= 0
 *   phy2log         [IN]  int64 [L][R], values in [0, E) (experts may be
 *                         absent; their load is then not counted)
 *   num_layers, num_logical_experts, num_replicas, num_nodes, num_gpus [IN]
 *                         R % P == 0, P % N == 0
 *   gpu_load        [OUT] double [L][P], may be NULL
 *   node_load       [OUT] double [L][N], may be NULL
 *   gpu_imbalance   [OUT] double [L]: max/mean GPU load per layer, may be NULL
 *   node_imbalance  [OUT] double [L]: max/mean node load per layer, may be NULL
 *   summary         [OUT] may be NULL
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT or
 * DINF_STATUS_OUT_OF_MEMORY (it allocates O(E + P + N) scratch).
 */
DINF_API dinf_status dinf_eplb_balance_report(const float *weight, const int64_t *phy2log,
                                              int64_t num_layers, int64_t num_logical_experts,
                                              int64_t num_replicas, int64_t num_nodes,
                                              int64_t num_gpus, double *gpu_load,
                                              double *node_load, double *gpu_imbalance,
                                              double *node_imbalance,
                                              dinf_eplb_balance_summary *summary);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DEEPINFRA_EPLB_H */
