/* Planner internals shared by eplb.c, incremental.c and report.c. */
#ifndef DINF_EPLB_PLAN_H
#define DINF_EPLB_PLAN_H

#include "deepinfra/eplb.h"

#include "../core/internal.h"
#include "eplb_internal.h"

/* Item indices are int32 inside the planner. */
#define DINF__EPLB_MAX_SIZE ((int64_t)1 << 30)

/* Sizes after the policy choice (the global policy is one group on one
 * node). */
typedef struct dinf__eplb_sizes {
    int64_t E, R, P;
    int hierarchical;
    int64_t groups, nodes; /* effective */
    int64_t group_size, groups_per_node, experts_per_node, replicas_per_node;
    int64_t gpus_per_node, slots_per_gpu;
    int distinct;
    int64_t replica_cap; /* most replicas one expert can get */
} dinf__eplb_sizes;

/* Per-layer scratch, carved from the workspace by dinf__eplb_plan_layout. */
typedef struct dinf__eplb_scratch {
    float *group_load;        /* [G] */
    int32_t *group_pack;      /* [G] node of each group */
    int32_t *group_rank;      /* [G] rank of the group in its node */
    int32_t *mlog2log;        /* [E] node-major position -> expert */
    float *node_load;         /* [En] loads of one node's experts */
    int32_t *replica_count;   /* [En] */
    int32_t *expert_tree;     /* [2 * pow2ceil(En)] tournament tree */
    float *expert_key;        /* [En + 1] load per replica, then a sentinel */
    int32_t *phy2mlog;        /* [Rn] */
    int32_t *phy_rank;        /* [Rn] */
    float *replica_load;      /* [Rn] */
    int32_t *replica_gpu;     /* [Rn] */
    int32_t *replica_pos;     /* [Rn] */
    int32_t *order;           /* [max(G, Rn)] */
    dinf__sort_pair *sort_scratch; /* [max(G, Rn)] */
    float *pack_sum;          /* [max(Pn, G) + 1] */
    int32_t *pack_count;      /* [max(Pn, G)] */
    int32_t *pack_tree;       /* [2 * pow2ceil(max(Pn, G))] tournament tree */
    int32_t *pack_members;    /* [Rn], distinct option only */
    uint8_t *pack_holds;      /* [En][Pn], distinct option only: GPU p holds expert c */
} dinf__eplb_scratch;

dinf_status dinf__eplb_check_options(const char *func, const dinf_eplb_options *options,
                                     int *distinct);
dinf_status dinf__eplb_check_sizes(const char *func, int64_t E, int64_t R, int64_t G, int64_t N,
                                   int64_t P, const dinf_eplb_options *options,
                                   dinf__eplb_sizes *sz);
dinf_status dinf__eplb_check_weights(const char *func, const float *weight, int64_t L, int64_t E);
dinf_status dinf__eplb_check_rows(const char *func, int64_t L, const int64_t *inner,
                                  const char *const *inner_names, int count);
dinf_status dinf__eplb_workspace_acquire(const char *func, size_t needed, void *workspace,
                                         size_t workspace_bytes, void **base, void **owned);

void dinf__eplb_plan_layout(dinf__arena *a, const dinf__eplb_sizes *sz, dinf__eplb_scratch *s);

/* Plan one layer: w [E] -> phy2log [R], phy_replica [R], logcnt [E]. */
void dinf__eplb_plan_layer(const float *w, const dinf__eplb_sizes *sz, const dinf__eplb_scratch *s,
                           int64_t *phy2log, int64_t *phy_replica, int64_t *logcnt);



/* Loads of one layer's GPUs: a replica of e carries w[e] / (slots holding e).
 * count [E] is scratch. */
void dinf__eplb_gpu_loads(const float *w, const int64_t *phy2log, int64_t E, int64_t R, int64_t P,
                          int64_t *count, double *gpu_load);
double dinf__eplb_max(const double *v, int64_t n);
#endif
