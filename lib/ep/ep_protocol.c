/*
 * The EP protocol, written once over the transport interface
 * (ep_transport.h): argument checks, the agreement step that every
 * collective call begins with, the count exchanges, and the normal and
 * low-latency dispatch/combine expressed as transport steps.
 *
 * Every collective public call runs:
 *   1. local checks (and local planning: topk_idx validation, FP8
 *      quantization on the send side); a failure is remembered, not returned;
 *   2. the agreement: an all-gather of one record per rank (operation,
 *      collective sequence number, ok flag, the arguments that must be equal).
 *      Every rank then sees every rank's record and fails the same way when
 *      any rank failed its checks or disagrees, so no rank is left waiting
 *      in a later step;
 *   3. the data steps (all-gather of counts, alltoallv, reduce_a2a).
 */
#include "ep_cuda.h"
#include "ep_hd.h"
#include "ep_transport.h"

#include <stdlib.h>
#include <string.h>

#define EP_CONFIG_V1_SIZE ((uint32_t)sizeof(dinf_ep_config))
#define EP_MAX_HIDDEN (1 << 20)
#define EP_MAX_EXPERTS (1 << 20)
#define EP_MAX_ALIGNMENT (1 << 20)

/* --------------------------------------------------------------- config -- */

dinf_status dinf__ep_config_check(const char *func, const dinf_ep_config *config,
                                  dinf_ep_config *out) {
    if (!config)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "config is NULL");
    if (config->size < EP_CONFIG_V1_SIZE)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "config->size=%u is smaller than sizeof(dinf_ep_config)=%u (use "
                          "DINF_EP_CONFIG_INIT)",
                          config->size, EP_CONFIG_V1_SIZE);
    dinf_ep_config c = *config;
    if (c.max_hidden < 1 || c.max_hidden > EP_MAX_HIDDEN)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "config->max_hidden=%d must be in [1, %d]", (int)c.max_hidden,
                          EP_MAX_HIDDEN);
    if (c.max_tokens_per_rank < 1 || c.max_tokens_per_rank > INT32_MAX)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "config->max_tokens_per_rank=%lld must be in [1, 2^31-1]",
                          (long long)c.max_tokens_per_rank);
    if (c.max_topk < 1 || c.max_topk > DINF_EP_MAX_TOPK)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "config->max_topk=%d must be in [1, %d]", (int)c.max_topk,
                          DINF_EP_MAX_TOPK);
    if (c.max_num_experts < 1 || c.max_num_experts > EP_MAX_EXPERTS)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "config->max_num_experts=%d must be in [1, %d]",
                          (int)c.max_num_experts, EP_MAX_EXPERTS);
    if (c.timeout_ms < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "config->timeout_ms=%lld is negative (0 = the default %d ms)",
                          (long long)c.timeout_ms, DINF_EP_DEFAULT_TIMEOUT_MS);
    if (c.num_threads < 0 || c.num_threads > 1024)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "config->num_threads=%d must be in [0, 1024]", (int)c.num_threads);
    if (c.reserved != 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "config->reserved=%d must be 0",
                          (int)c.reserved);
    /* low-latency rows (E * T) and normal selections (T * K) stay int32 */
    if ((int64_t)c.max_num_experts * c.max_tokens_per_rank > INT32_MAX ||
        (int64_t)c.max_topk * c.max_tokens_per_rank > INT32_MAX)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "config->max_tokens_per_rank=%lld times max_num_experts=%d or "
                          "max_topk=%d exceeds 2^31-1 rows",
                          (long long)c.max_tokens_per_rank, (int)c.max_num_experts,
                          (int)c.max_topk);
    if (c.timeout_ms == 0)
        c.timeout_ms = DINF_EP_DEFAULT_TIMEOUT_MS;
    c.size = EP_CONFIG_V1_SIZE;
    *out = c;
    return DINF_STATUS_OK;
}

/* Bytes of one normal-mode record and one low-latency message (16-byte
 * aligned parts): what a peer-store transport keeps per received row. */
static size_t align16(size_t v) { return (v + 15) / 16 * 16; }

DINF_API dinf_status dinf_ep_symmetric_buffer_bytes(const dinf_ep_config *config,
                                                    int32_t num_ranks, size_t *normal_bytes,
                                                    size_t *low_latency_bytes) {
    dinf_ep_config c;
    dinf_status st = dinf__ep_config_check(__func__, config, &c);
    if (st != DINF_STATUS_OK)
        return st;
    if (num_ranks < 1 || num_ranks > DINF_EP_MAX_RANKS)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_ranks=%d must be in [1, %d]",
                         (int)num_ranks, DINF_EP_MAX_RANKS);
    const size_t hidden = (size_t)c.max_hidden, kb = (hidden + 127) / 128;
    const size_t topk = (size_t)c.max_topk;
    const size_t record = align16(hidden * 2) + align16(kb * 4) + align16(topk * 8) +
                          align16(topk * 4) + 16;
    const size_t message = align16(hidden * 2) + align16(kb * 4) + 16;
    const size_t rows = (size_t)num_ranks * (size_t)c.max_tokens_per_rank;
    const size_t local_experts = (size_t)(c.max_num_experts / num_ranks);
    size_t normal, ll, ll_rows;
    if (dinf__mul_size(rows, record, &normal) || dinf__mul_size(rows, local_experts, &ll_rows) ||
        dinf__mul_size(ll_rows, message, &ll) || dinf__add_size(normal, 4096, &normal) ||
        dinf__add_size(ll, 4096, &ll))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "the buffer sizes for num_ranks=%d overflow size_t", (int)num_ranks);
    if (normal_bytes)
        *normal_bytes = normal;
    if (low_latency_bytes)
        *low_latency_bytes = ll;
    return DINF_STATUS_OK;
}

/* ---------------------------------------------------------------- group -- */

/* One agreement record per rank (see the top). */
#define AGREE_PARAMS 6
typedef struct agree_rec {
    int32_t op;
    int32_t ok;
    uint64_t sequence;
    int64_t params[AGREE_PARAMS];
} agree_rec;

enum { OP_BARRIER = 1, OP_NOTIFY, OP_DISPATCH, OP_COMBINE, OP_LL_DISPATCH, OP_LL_COMBINE };

static const char *op_name(int32_t op) {
    switch (op) {
    case OP_BARRIER: return "dinf_ep_group_barrier";
    case OP_NOTIFY: return "dinf_ep_notify_dispatch";
    case OP_DISPATCH: return "dinf_ep_dispatch";
    case OP_COMBINE: return "dinf_ep_combine";
    case OP_LL_DISPATCH: return "dinf_ep_low_latency_dispatch";
    case OP_LL_COMBINE: return "dinf_ep_low_latency_combine";
    default: return "an unknown operation";
    }
}

dinf_status dinf__ep_group_wrap(const char *func, dinf__ep_transport *transport,
                                const dinf_ep_config *config, dinf_ep_group **group) {
    const int32_t R = transport->num_ranks;
    /* scratch: the agreement records, or the count exchange of a notify /
     * low-latency dispatch ([R][R + E] int32) */
    size_t agree_bytes = (size_t)R * sizeof(agree_rec);
    size_t count_bytes = (size_t)R * ((size_t)R + (size_t)config->max_num_experts) * 4;
    size_t bytes = agree_bytes > count_bytes ? agree_bytes : count_bytes;
    dinf_ep_group *g = calloc(1, sizeof *g);
    void *scratch = malloc(bytes);
    if (!g || !scratch) {
        free(g);
        free(scratch);
        transport->ops->destroy(transport);
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate the EP group");
    }
    g->transport = transport;
    g->config = *config;
    g->scratch = scratch;
    g->scratch_bytes = bytes;
    *group = g;
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_group_destroy(dinf_ep_group *group) {
    if (!group)
        return DINF_STATUS_OK;
    group->transport->ops->destroy(group->transport);
    free(group->scratch);
    free(group);
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_group_info(const dinf_ep_group *group, int32_t *rank,
                                        int32_t *num_ranks, int32_t *memory, int32_t *device) {
    if (!group)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "group is NULL");
    if (rank)
        *rank = group->transport->rank;
    if (num_ranks)
        *num_ranks = group->transport->num_ranks;
    if (memory)
        *memory = group->transport->memory;
    if (device)
        *device = group->transport->device;
    return DINF_STATUS_OK;
}

/* Resolve exec for a call on group: host groups run on the CPU (threads per
 * rank from exec->num_threads, else config.num_threads, else 1); device
 * groups need DINF_EXEC_CUDA on their device. */
static dinf_status group_place(const char *func, const dinf_ep_group *group,
                               const dinf_exec *exec, dinf__place *place) {
    const dinf__ep_transport *t = group->transport;
    /* the memory-space mismatch first: it is the caller's error in every build
     * (a CPU-only build would otherwise only say that it has no CUDA) */
    if (t->memory == DINF_EP_MEMORY_HOST && exec && exec->size >= sizeof(dinf_exec) &&
        exec->kind == DINF_EXEC_CUDA)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "exec is DINF_EXEC_CUDA but the group (%s transport) lives in host "
                          "memory: pass NULL or DINF_EXEC_CPU",
                          t->ops->name);
    dinf_status st = dinf__place_resolve(func, exec, place);
    if (st != DINF_STATUS_OK)
        return st;
    if (t->memory == DINF_EP_MEMORY_HOST) {
        if (place->kind != DINF_EXEC_CPU)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "exec is DINF_EXEC_CUDA but the group (%s transport) lives in host "
                              "memory: pass NULL or DINF_EXEC_CPU",
                              t->ops->name);
        place->threads = exec && exec->num_threads > 0 ? exec->num_threads
                         : group->config.num_threads > 0 ? group->config.num_threads
                                                         : 1;
    } else if (place->kind != DINF_EXEC_CUDA || place->device != t->device) {
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "the group (%s transport) lives on CUDA device %d: exec must be "
                          "DINF_EXEC_CUDA on that device",
                          t->ops->name, (int)t->device);
    }
    return DINF_STATUS_OK;
}

/* A place for calls without exec (barrier). */
static dinf__place default_place(const dinf_ep_group *group) {
    dinf__place p = {DINF_EXEC_CPU, 0, 1, NULL};
    if (group->transport->memory == DINF_EP_MEMORY_DEVICE) {
        p.kind = DINF_EXEC_CUDA;
        p.device = group->transport->device;
    }
    return p;
}

static dinf_exec exec_of(const dinf__place *place) {
    dinf_exec e = DINF_EXEC_CPU_INIT;
    e.kind = place->kind;
    e.device = place->device;
    e.num_threads = place->kind == DINF_EXEC_CPU ? place->threads : 0;
    e.stream = place->stream;
    return e;
}

/*
 * The agreement step. local is this rank's status so far (its message is
 * already recorded when it is not OK); params[i] (named names[i]) must be
 * equal on every rank. Returns OK only when every rank is OK and agrees.
 */
static dinf_status agree(dinf_ep_group *group, const char *func, int32_t op, dinf_status local,
                         const int64_t *params, const char *const *names, int num_params,
                         const dinf__place *place) {
    dinf__ep_transport *t = group->transport;
    agree_rec mine;
    memset(&mine, 0, sizeof mine);
    mine.op = op;
    mine.ok = local == DINF_STATUS_OK;
    mine.sequence = group->sequence++;
    for (int i = 0; i < num_params; i++)
        mine.params[i] = params[i];
    agree_rec *all = group->scratch;
    dinf_status st = t->ops->allgather(t, func, &mine, all, sizeof mine, place);
    if (st != DINF_STATUS_OK)
        return st;
    for (int32_t r = 0; r < t->num_ranks; r++) {
        if (all[r].op != op)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "mismatched collective calls: rank %d called %s while rank %d "
                              "called %s",
                              (int)r, op_name(all[r].op), (int)t->rank, op_name(op));
        if (all[r].sequence != mine.sequence)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "mismatched collective calls: rank %d is at its collective call "
                              "#%llu, rank %d at #%llu",
                              (int)r, (unsigned long long)all[r].sequence, (int)t->rank,
                              (unsigned long long)mine.sequence);
    }
    if (local != DINF_STATUS_OK)
        return local; /* this rank's own message stays */
    for (int32_t r = 0; r < t->num_ranks; r++)
        if (!all[r].ok)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "rank %d rejected its arguments of this collective call (see its "
                              "dinf_last_error()); nothing was exchanged",
                              (int)r);
    for (int32_t r = 0; r < t->num_ranks; r++)
        for (int i = 0; i < num_params; i++)
            if (all[r].params[i] != params[i])
                return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                                  "ranks disagree: rank %d passed %s=%lld, rank %d passed %lld",
                                  (int)r, names[i], (long long)all[r].params[i], (int)t->rank,
                                  (long long)params[i]);
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_group_barrier(dinf_ep_group *group) {
    if (!group)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "group is NULL");
    const dinf__place place = default_place(group);
    return agree(group, __func__, OP_BARRIER, DINF_STATUS_OK, NULL, NULL, 0, &place);
}

/* --------------------------------------------------------------- checks -- */

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, __VA_ARGS__);                  \
    } while (0)

static dinf_status check_experts(const char *func, int32_t num_experts, int32_t num_ranks,
                                 int32_t max_num_experts) {
    CHECK(num_experts >= 1 && num_experts <= max_num_experts,
          "num_experts=%d must be in [1, config.max_num_experts=%d]", (int)num_experts,
          (int)max_num_experts);
    CHECK(num_experts % num_ranks == 0,
          "num_experts=%d is not a multiple of num_ranks=%d (experts are split evenly)",
          (int)num_experts, (int)num_ranks);
    CHECK(num_experts / num_ranks <= DINF_EP_MAX_LOCAL_EXPERTS,
          "num_experts=%d / num_ranks=%d = %d local experts exceeds %d", (int)num_experts,
          (int)num_ranks, (int)(num_experts / num_ranks), DINF_EP_MAX_LOCAL_EXPERTS);
    return DINF_STATUS_OK;
}

/* The message for an invalid expert id (reads the value from group memory). */
static dinf_status bad_expert(const char *func, dinf__ep_transport *t, const int64_t *topk_idx,
                              int64_t flat, int32_t num_topk, int32_t num_experts,
                              const dinf__place *place) {
    int64_t value = 0;
    dinf_status st = t->ops->copy(t, func, &value, topk_idx + flat, sizeof value, 1, place);
    if (st != DINF_STATUS_OK)
        return st;
    return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                      "topk_idx[%lld][%lld]=%lld is outside [-1, num_experts=%d)",
                      (long long)(flat / num_topk), (long long)(flat % num_topk),
                      (long long)value, (int)num_experts);
}

/* --------------------------------------------------------------- layout -- */

/* The CUDA layout (dinf__ep_layout_cuda, kernels/ep/ep_kernels.cu) is
 * declared in ep_cuda.h and referenced plainly in CUDA builds, so that static
 * links pull the kernels in. */

DINF_API dinf_status dinf_ep_get_dispatch_layout(const int64_t *topk_idx, int64_t num_tokens,
                                                 int32_t num_topk, int32_t num_experts,
                                                 int32_t num_ranks, int32_t *num_tokens_per_rank,
                                                 int32_t *num_tokens_per_expert,
                                                 uint8_t *is_token_in_rank,
                                                 const dinf_exec *exec) {
    const char *func = __func__;
    CHECK(num_tokens >= 0 && num_tokens <= INT32_MAX, "num_tokens=%lld must be in [0, 2^31-1]",
          (long long)num_tokens);
    CHECK(num_topk >= 1 && num_topk <= DINF_EP_MAX_TOPK, "num_topk=%d must be in [1, %d]",
          (int)num_topk, DINF_EP_MAX_TOPK);
    CHECK(num_ranks >= 1 && num_ranks <= DINF_EP_MAX_RANKS, "num_ranks=%d must be in [1, %d]",
          (int)num_ranks, DINF_EP_MAX_RANKS);
    dinf_status st = check_experts(func, num_experts, num_ranks, EP_MAX_EXPERTS);
    if (st != DINF_STATUS_OK)
        return st;
    CHECK(num_tokens == 0 || topk_idx, "topk_idx is NULL with num_tokens=%lld",
          (long long)num_tokens);
    CHECK(num_tokens_per_rank, "num_tokens_per_rank is NULL");
    CHECK(num_tokens_per_expert, "num_tokens_per_expert is NULL");
    const dinf__buffer buffers[] = {
        {"topk_idx", topk_idx, (size_t)num_tokens * (size_t)num_topk * 8},
        {"num_tokens_per_rank", num_tokens_per_rank, (size_t)num_ranks * 4},
        {"num_tokens_per_expert", num_tokens_per_expert, (size_t)num_experts * 4},
        {"is_token_in_rank", is_token_in_rank, (size_t)num_tokens * (size_t)num_ranks}};
    st = dinf__check_disjoint(func, buffers, 4);
    if (st != DINF_STATUS_OK)
        return st;
    dinf__place place;
    st = dinf__place_resolve(func, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    if (place.kind == DINF_EXEC_CUDA) {
#if DINF_WITH_CUDA
        return dinf__ep_layout_cuda(func, &place, topk_idx, num_tokens, num_topk, num_experts,
                                    num_ranks, num_tokens_per_rank, num_tokens_per_expert,
                                    is_token_in_rank);
#else
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "libdeepinfra was built without CUDA (make CUDA=0)");
#endif
    }
    for (int64_t i = 0; i < num_tokens * num_topk; i++)
        CHECK(topk_idx[i] >= -1 && topk_idx[i] < num_experts,
              "topk_idx[%lld][%lld]=%lld is outside [-1, num_experts=%d)",
              (long long)(i / num_topk), (long long)(i % num_topk), (long long)topk_idx[i],
              (int)num_experts);
    dinf__ep_cpu_layout(topk_idx, num_tokens, num_topk, num_experts, num_ranks,
                        num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank);
    return DINF_STATUS_OK;
}

/* ---------------------------------------------------------- normal mode -- */

struct dinf_ep_handle {
    dinf_ep_group *group;
    int32_t notified;
    uint64_t notify_sequence;
    int64_t num_tokens, num_recv;
    int32_t num_topk, num_experts, expert_alignment;
    /* host */
    int32_t *rank_prefix_matrix;         /* [R][R] */
    int32_t *num_recv_tokens_per_expert; /* [L_max] aligned */
    int64_t *recv_offsets;               /* [R + 1] */
    dinf__ep_plan plan;                  /* host counts + group-memory rows/terms */
    /* group memory: FP8 quantization on the send side */
    uint8_t *q_stage; /* [T][max_hidden] */
    float *s_stage;   /* [T][ceil(max_hidden / 128)] */
};

static void *alloc_host(size_t count, size_t elem) { return calloc(count ? count : 1, elem); }

DINF_API dinf_status dinf_ep_handle_destroy(dinf_ep_handle *h) {
    if (!h)
        return DINF_STATUS_OK;
    dinf__ep_transport *t = h->group->transport;
    free(h->rank_prefix_matrix);
    free(h->num_recv_tokens_per_expert);
    free(h->recv_offsets);
    free(h->plan.num_tokens_per_rank); /* num_tokens_per_expert lives in the same block */
    free(h->plan.send_offsets);
    t->ops->free(t, h->plan.send_rows);
    t->ops->free(t, h->plan.terms);
    t->ops->free(t, h->q_stage);
    t->ops->free(t, h->s_stage);
    free(h);
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_handle_create(dinf_ep_group *group, dinf_ep_handle **handle) {
    const char *func = __func__;
    CHECK(group, "group is NULL");
    CHECK(handle, "handle is NULL");
    *handle = NULL;
    dinf__ep_transport *t = group->transport;
    const dinf_ep_config *c = &group->config;
    const size_t R = (size_t)t->num_ranks, T = (size_t)c->max_tokens_per_rank;
    const size_t H = (size_t)c->max_hidden, KB = (H + 127) / 128;
    dinf_ep_handle *h = calloc(1, sizeof *h);
    if (!h)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate the handle");
    h->group = group;
    h->rank_prefix_matrix = alloc_host(R * R, 4);
    h->num_recv_tokens_per_expert = alloc_host((size_t)c->max_num_experts / R, 4);
    h->recv_offsets = alloc_host(R + 1, 8);
    /* per-rank then per-expert counts, contiguous: the row this rank contributes to
     * the notify's count exchange */
    h->plan.num_tokens_per_rank = alloc_host(R + (size_t)c->max_num_experts, 4);
    h->plan.num_tokens_per_expert = h->plan.num_tokens_per_rank ? h->plan.num_tokens_per_rank + R
                                                                : NULL;
    h->plan.send_offsets = alloc_host(R + 1, 8);
    if (!h->rank_prefix_matrix || !h->num_recv_tokens_per_expert || !h->recv_offsets ||
        !h->plan.num_tokens_per_rank || !h->plan.num_tokens_per_expert ||
        !h->plan.send_offsets) {
        dinf_ep_handle_destroy(h);
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate the handle");
    }
    h->plan.send_rows = t->ops->alloc(t, func, T * R * 4);
    h->plan.terms = h->plan.send_rows ? t->ops->alloc(t, func, T * R * 8) : NULL;
    h->q_stage = h->plan.terms ? t->ops->alloc(t, func, T * H) : NULL;
    h->s_stage = h->q_stage ? t->ops->alloc(t, func, T * KB * 4) : NULL;
    if (!h->s_stage) { /* the failing alloc recorded the error */
        dinf_ep_handle_destroy(h);
        return DINF_STATUS_OUT_OF_MEMORY;
    }
    *handle = h;
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_handle_info(const dinf_ep_handle *h, int64_t *num_tokens,
                                         int32_t *num_topk, int32_t *num_experts,
                                         int64_t *num_recv_tokens, int32_t *rank_prefix_matrix,
                                         int32_t *num_recv_tokens_per_expert) {
    const char *func = __func__;
    CHECK(h, "handle is NULL");
    CHECK(h->notified, "the handle has not been notified (call dinf_ep_notify_dispatch)");
    const int32_t R = h->group->transport->num_ranks;
    if (num_tokens)
        *num_tokens = h->num_tokens;
    if (num_topk)
        *num_topk = h->num_topk;
    if (num_experts)
        *num_experts = h->num_experts;
    if (num_recv_tokens)
        *num_recv_tokens = h->num_recv;
    if (rank_prefix_matrix)
        memcpy(rank_prefix_matrix, h->rank_prefix_matrix, (size_t)R * (size_t)R * 4);
    if (num_recv_tokens_per_expert)
        memcpy(num_recv_tokens_per_expert, h->num_recv_tokens_per_expert,
               (size_t)(h->num_experts / R) * 4);
    return DINF_STATUS_OK;
}

/* Local checks and planning of a notify. */
static dinf_status notify_local(dinf_ep_group *group, const char *func, const int64_t *topk_idx,
                                int64_t num_tokens, int32_t num_topk, int32_t num_experts,
                                const int32_t *num_tokens_per_rank,
                                const int32_t *num_tokens_per_expert,
                                const uint8_t *is_token_in_rank, int32_t expert_alignment,
                                dinf_ep_handle *h, const dinf__place *place) {
    dinf__ep_transport *t = group->transport;
    const dinf_ep_config *c = &group->config;
    CHECK(h, "handle is NULL");
    CHECK(h->group == group, "the handle was created on another group endpoint");
    CHECK(num_tokens >= 0 && num_tokens <= c->max_tokens_per_rank,
          "num_tokens=%lld must be in [0, config.max_tokens_per_rank=%lld]",
          (long long)num_tokens, (long long)c->max_tokens_per_rank);
    CHECK(num_topk >= 1 && num_topk <= c->max_topk,
          "num_topk=%d must be in [1, config.max_topk=%d]", (int)num_topk, (int)c->max_topk);
    dinf_status st = check_experts(func, num_experts, t->num_ranks, c->max_num_experts);
    if (st != DINF_STATUS_OK)
        return st;
    CHECK(expert_alignment >= 1 && expert_alignment <= EP_MAX_ALIGNMENT,
          "expert_alignment=%d must be in [1, %d]", (int)expert_alignment, EP_MAX_ALIGNMENT);
    CHECK(num_tokens == 0 || topk_idx, "topk_idx is NULL with num_tokens=%lld",
          (long long)num_tokens);
    const int given = (num_tokens_per_rank != NULL) + (num_tokens_per_expert != NULL) +
                      (is_token_in_rank != NULL);
    CHECK(given == 0 || given == 3,
          "num_tokens_per_rank, num_tokens_per_expert and is_token_in_rank must be given "
          "together or all be NULL (%d of 3 given)",
          given);
    int64_t bad = -1, mismatches = 0;
    st = t->ops->plan_dispatch(t, func, topk_idx, num_tokens, num_topk, num_experts,
                               num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank,
                               &h->plan, &bad, &mismatches, place);
    if (st != DINF_STATUS_OK)
        return st;
    if (bad >= 0)
        return bad_expert(func, t, topk_idx, bad, num_topk, num_experts, place);
    CHECK(mismatches == 0,
          "the layout arrays (num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank) "
          "differ from the layout of topk_idx in %lld entries",
          (long long)mismatches);
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_notify_dispatch(
    dinf_ep_group *group, const int64_t *topk_idx, int64_t num_tokens, int32_t num_topk,
    int32_t num_experts, const int32_t *num_tokens_per_rank, const int32_t *num_tokens_per_expert,
    const uint8_t *is_token_in_rank, int32_t expert_alignment, dinf_ep_handle *handle,
    int64_t *num_recv_tokens, int32_t *num_recv_tokens_per_expert, const dinf_exec *exec) {
    const char *func = __func__;
    CHECK(group, "group is NULL");
    dinf__ep_transport *t = group->transport;
    if (handle && handle->group == group)
        handle->notified = 0;
    dinf__place place;
    dinf_status local = group_place(func, group, exec, &place);
    if (local == DINF_STATUS_OK)
        local = notify_local(group, func, topk_idx, num_tokens, num_topk, num_experts,
                             num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank,
                             expert_alignment, handle, &place);
    if (local != DINF_STATUS_OK)
        place = default_place(group);
    const int64_t params[] = {num_topk, num_experts, expert_alignment};
    static const char *const names[] = {"num_topk", "num_experts", "expert_alignment"};
    dinf_status st = agree(group, func, OP_NOTIFY, local, params, names, 3, &place);
    if (st != DINF_STATUS_OK)
        return st;
    /* exchange [R][R + E] counts: tokens per destination rank, selections per expert */
    const int32_t R = t->num_ranks, me = t->rank, L = num_experts / R;
    const size_t row = (size_t)R + (size_t)num_experts;
    int32_t *all = group->scratch;
    st = t->ops->allgather(t, func, handle->plan.num_tokens_per_rank, all, row * 4, &place);
    if (st != DINF_STATUS_OK)
        return st;
    for (int32_t j = 0; j < R; j++) {
        int64_t sum = 0;
        for (int32_t i = 0; i < R; i++) {
            sum += all[(size_t)i * row + (size_t)j];
            handle->rank_prefix_matrix[(size_t)i * R + j] = (int32_t)sum;
        }
    }
    handle->recv_offsets[0] = 0;
    for (int32_t i = 0; i < R; i++)
        handle->recv_offsets[i + 1] = handle->rank_prefix_matrix[(size_t)i * R + me];
    /* Every rank checks EVERY expert's aligned count (all hold the same
     * gathered counts and the agreed expert_alignment), so an overflow fails
     * all ranks alike, not only the expert's: no rank goes on alone. */
    for (int32_t e = 0; e < num_experts; e++) {
        int64_t sum = 0;
        for (int32_t i = 0; i < R; i++)
            sum += all[(size_t)i * row + (size_t)R + (size_t)e];
        sum = dinf__ep_align_up(sum, expert_alignment);
        CHECK(sum <= INT32_MAX,
              "expert %d (local expert %d of rank %d) receives %lld rows after alignment to "
              "%d, beyond int32",
              (int)e, (int)(e % L), (int)(e / L), (long long)sum, (int)expert_alignment);
        if (e / L == me)
            handle->num_recv_tokens_per_expert[e % L] = (int32_t)sum;
    }
    handle->num_tokens = num_tokens;
    handle->num_recv = handle->recv_offsets[R];
    handle->num_topk = num_topk;
    handle->num_experts = num_experts;
    handle->expert_alignment = expert_alignment;
    handle->notify_sequence = group->sequence;
    handle->notified = 1;
    if (num_recv_tokens)
        *num_recv_tokens = handle->num_recv;
    if (num_recv_tokens_per_expert)
        memcpy(num_recv_tokens_per_expert, handle->num_recv_tokens_per_expert, (size_t)L * 4);
    return DINF_STATUS_OK;
}

static size_t elem_size(dinf_dtype d) { return d == DINF_DTYPE_BFLOAT16 ? 2 : 1; }

typedef struct dispatch_args {
    const dinf_ep_handle *h;
    const void *x;
    dinf_dtype x_dtype;
    const float *x_scales;
    int32_t hidden;
    const int64_t *topk_idx;
    const float *topk_weights;
    dinf_dtype recv_dtype;
    void *recv_x;
    float *recv_x_scales;
    int64_t *recv_topk_idx;
    float *recv_topk_weights;
    int32_t *recv_src_idx;
    int64_t recv_capacity;
} dispatch_args;

static dinf_status dispatch_local(dinf_ep_group *group, const char *func, dispatch_args *a,
                                  const dinf__place *place) {
    const dinf_ep_handle *h = a->h;
    CHECK(h, "handle is NULL");
    CHECK(h->group == group, "the handle was created on another group endpoint");
    CHECK(h->notified, "the handle has not been notified (call dinf_ep_notify_dispatch first)");
    CHECK(a->hidden >= 1 && a->hidden <= group->config.max_hidden,
          "hidden=%d must be in [1, config.max_hidden=%d]", (int)a->hidden,
          (int)group->config.max_hidden);
    CHECK(a->x_dtype == DINF_DTYPE_BFLOAT16 || a->x_dtype == DINF_DTYPE_FP8_E4M3,
          "x_dtype=%d (%s) is not DINF_DTYPE_BFLOAT16 or DINF_DTYPE_FP8_E4M3", (int)a->x_dtype,
          dinf_dtype_name(a->x_dtype));
    CHECK(a->recv_dtype == DINF_DTYPE_BFLOAT16 || a->recv_dtype == DINF_DTYPE_FP8_E4M3,
          "recv_dtype=%d (%s) is not DINF_DTYPE_BFLOAT16 or DINF_DTYPE_FP8_E4M3",
          (int)a->recv_dtype, dinf_dtype_name(a->recv_dtype));
    CHECK(!(a->x_dtype == DINF_DTYPE_FP8_E4M3 && a->recv_dtype == DINF_DTYPE_BFLOAT16),
          "x is float8_e4m3fn but recv_dtype is bfloat16 (e4m3 input is received as e4m3)");
    const int fp8 = a->recv_dtype == DINF_DTYPE_FP8_E4M3;
    CHECK(!fp8 || a->hidden % DINF_EP_FP8_BLOCK == 0,
          "hidden=%d is not a multiple of 128, required for float8_e4m3fn rows (1x128 scales)",
          (int)a->hidden);
    CHECK((a->hidden * (int64_t)elem_size(a->recv_dtype)) % 16 == 0,
          "hidden=%d * %d bytes is not a multiple of 16 bytes", (int)a->hidden,
          (int)elem_size(a->recv_dtype));
    const int64_t N = h->num_tokens, num_recv = h->num_recv, K = h->num_topk;
    const int64_t KB = a->hidden / DINF_EP_FP8_BLOCK;
    CHECK(N == 0 || a->x, "x is NULL with num_tokens=%lld", (long long)N);
    CHECK(a->x_dtype != DINF_DTYPE_FP8_E4M3 || N == 0 || a->x_scales,
          "x_scales is NULL for a float8_e4m3fn x");
    CHECK(a->x_dtype == DINF_DTYPE_FP8_E4M3 || !a->x_scales,
          "x_scales must be NULL for a bfloat16 x");
    if (!a->topk_idx) {
        CHECK(!a->topk_weights && !a->recv_topk_idx && !a->recv_topk_weights,
              "cached dispatch (topk_idx NULL): topk_weights, recv_topk_idx and "
              "recv_topk_weights must be NULL");
    } else {
        CHECK(num_recv == 0 || a->recv_topk_idx, "recv_topk_idx is NULL but topk_idx is given");
        CHECK((a->topk_weights != NULL) == (a->recv_topk_weights != NULL),
              "recv_topk_weights must be given exactly when topk_weights is");
    }
    CHECK(a->recv_capacity >= num_recv,
          "recv_capacity=%lld is smaller than the %lld tokens rank %d receives",
          (long long)a->recv_capacity, (long long)num_recv, (int)group->transport->rank);
    CHECK(num_recv == 0 || a->recv_x, "recv_x is NULL with %lld tokens to receive",
          (long long)num_recv);
    CHECK(!fp8 || num_recv == 0 || a->recv_x_scales,
          "recv_x_scales is NULL with float8_e4m3fn rows to receive");
    CHECK(fp8 || !a->recv_x_scales, "recv_x_scales must be NULL for bfloat16 rows");
    const size_t xs = elem_size(a->x_dtype), rs = elem_size(a->recv_dtype);
    const size_t n = (size_t)N, cap = (size_t)num_recv, H = (size_t)a->hidden;
    const dinf__buffer buffers[] = {
        {"x", a->x, n * H * xs},
        {"x_scales", a->x_scales, n * (size_t)KB * 4},
        {"topk_idx", a->topk_idx, n * (size_t)K * 8},
        {"topk_weights", a->topk_weights, n * (size_t)K * 4},
        {"recv_x", a->recv_x, cap * H * rs},
        {"recv_x_scales", a->recv_x_scales, cap * (size_t)KB * 4},
        {"recv_topk_idx", a->recv_topk_idx, cap * (size_t)K * 8},
        {"recv_topk_weights", a->recv_topk_weights, cap * (size_t)K * 4},
        {"recv_src_idx", a->recv_src_idx, cap * 4}};
    dinf_status st = dinf__check_disjoint(func, buffers, 9);
    if (st != DINF_STATUS_OK)
        return st;
    if (fp8 && a->x_dtype == DINF_DTYPE_BFLOAT16 && N > 0) {
        /* quantize on the send side: the bits of dinf_fp8_quantize 1x128 */
        const dinf_exec e = exec_of(place);
        st = dinf_fp8_quantize(a->x, DINF_DTYPE_BFLOAT16, N, a->hidden, a->hidden, 1,
                               h->q_stage, a->hidden, h->s_stage, &e);
        if (st != DINF_STATUS_OK)
            return st;
    }
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_dispatch(dinf_ep_group *group, const dinf_ep_handle *handle,
                                      const void *x, dinf_dtype x_dtype, const float *x_scales,
                                      int32_t hidden, const int64_t *topk_idx,
                                      const float *topk_weights, dinf_dtype recv_dtype,
                                      void *recv_x, float *recv_x_scales, int64_t *recv_topk_idx,
                                      float *recv_topk_weights, int32_t *recv_src_idx,
                                      int64_t recv_capacity, const dinf_exec *exec) {
    const char *func = __func__;
    CHECK(group, "group is NULL");
    dinf__ep_transport *t = group->transport;
    dispatch_args a = {handle,      x,         x_dtype,      x_scales,      hidden,
                       topk_idx,    topk_weights, recv_dtype, recv_x,      recv_x_scales,
                       recv_topk_idx, recv_topk_weights, recv_src_idx, recv_capacity};
    dinf__place place;
    dinf_status local = group_place(func, group, exec, &place);
    if (local == DINF_STATUS_OK)
        local = dispatch_local(group, func, &a, &place);
    if (local != DINF_STATUS_OK)
        place = default_place(group);
    const int64_t params[] = {hidden, recv_dtype, topk_idx != NULL, topk_weights != NULL,
                              local == DINF_STATUS_OK ? (int64_t)handle->notify_sequence : 0};
    static const char *const names[] = {"hidden", "recv_dtype", "topk_idx given",
                                        "topk_weights given", "handle (notify call #)"};
    dinf_status st = agree(group, func, OP_DISPATCH, local, params, names, 5, &place);
    if (st != DINF_STATUS_OK)
        return st;
    const int fp8 = recv_dtype == DINF_DTYPE_FP8_E4M3;
    const int32_t K = handle->num_topk, KB = hidden / DINF_EP_FP8_BLOCK;
    const int64_t row_bytes = (int64_t)hidden * (int64_t)elem_size(recv_dtype);
    const int quantized_here = fp8 && x_dtype == DINF_DTYPE_BFLOAT16;
    dinf__ep_a2a a2a;
    memset(&a2a, 0, sizeof a2a);
    dinf__ep_field *f = a2a.fields;
    f[a2a.num_fields++] = (dinf__ep_field){quantized_here ? (const void *)handle->q_stage : x,
                                           row_bytes, recv_x, row_bytes, row_bytes, 0, 0,
                                           (int32_t)row_bytes, 1};
    if (fp8)
        f[a2a.num_fields++] = (dinf__ep_field){
            quantized_here ? (const void *)handle->s_stage : (const void *)x_scales,
            (int64_t)KB * 4, recv_x_scales, (int64_t)KB * 4, 4, 0, 0, 4, KB};
    if (topk_idx)
        f[a2a.num_fields++] = (dinf__ep_field){topk_idx, (int64_t)K * 8, recv_topk_idx,
                                               (int64_t)K * 8, 8, 0, 0, 8, K};
    if (topk_weights)
        f[a2a.num_fields++] = (dinf__ep_field){topk_weights, (int64_t)K * 4, recv_topk_weights,
                                               (int64_t)K * 4, 4, 0, 0, 4, K};
    a2a.send_offsets = handle->plan.send_offsets;
    a2a.send_rows = handle->plan.send_rows;
    a2a.recv_offsets = handle->recv_offsets;
    a2a.recv_rows = NULL;
    a2a.recv_src_row = recv_src_idx;
    st = t->ops->alltoallv(t, func, &a2a, &place);
    if (st != DINF_STATUS_OK)
        return st;
    if (topk_idx && handle->num_recv > 0)
        st = t->ops->localize_topk(t, func, recv_topk_idx, recv_topk_weights, handle->num_recv,
                                   K, handle->num_experts, &place);
    return st;
}

static dinf_status combine_local(dinf_ep_group *group, const char *func,
                                 const dinf_ep_handle *h, const uint16_t *x, int32_t hidden,
                                 const float *topk_weights, const uint16_t *bias0,
                                 const uint16_t *bias1, uint16_t *combined_x,
                                 float *combined_topk_weights) {
    CHECK(h, "handle is NULL");
    CHECK(h->group == group, "the handle was created on another group endpoint");
    CHECK(h->notified, "the handle has not been notified (call dinf_ep_notify_dispatch first)");
    CHECK(hidden >= 1 && hidden <= group->config.max_hidden,
          "hidden=%d must be in [1, config.max_hidden=%d]", (int)hidden,
          (int)group->config.max_hidden);
    CHECK((hidden * (int64_t)2) % 16 == 0,
          "hidden=%d * 2 bytes (bfloat16) is not a multiple of 16 bytes", (int)hidden);
    const int64_t N = h->num_tokens, num_recv = h->num_recv, K = h->num_topk;
    CHECK(num_recv == 0 || x, "x is NULL with %lld received tokens", (long long)num_recv);
    CHECK(N == 0 || combined_x, "combined_x is NULL with num_tokens=%lld", (long long)N);
    CHECK((topk_weights != NULL) == (combined_topk_weights != NULL),
          "combined_topk_weights must be given exactly when topk_weights is");
    const size_t n = (size_t)N, r = (size_t)num_recv, H = (size_t)hidden;
    const dinf__buffer buffers[] = {{"x", x, r * H * 2},
                                    {"topk_weights", topk_weights, r * (size_t)K * 4},
                                    {"combined_x", combined_x, n * H * 2},
                                    {"combined_topk_weights", combined_topk_weights,
                                     n * (size_t)K * 4}};
    dinf_status st = dinf__check_disjoint(func, buffers, 4);
    if (st != DINF_STATUS_OK)
        return st;
    /* biases are inputs: they may alias other inputs but not the outputs */
    const dinf__buffer b0[] = {{"bias0", bias0, n * H * 2},
                               {"combined_x", combined_x, n * H * 2},
                               {"combined_topk_weights", combined_topk_weights,
                                n * (size_t)K * 4}};
    st = dinf__check_disjoint(func, b0, 3);
    if (st != DINF_STATUS_OK)
        return st;
    const dinf__buffer b1[] = {{"bias1", bias1, n * H * 2},
                               {"combined_x", combined_x, n * H * 2},
                               {"combined_topk_weights", combined_topk_weights,
                                n * (size_t)K * 4}};
    return dinf__check_disjoint(func, b1, 3);
}

DINF_API dinf_status dinf_ep_combine(dinf_ep_group *group, const dinf_ep_handle *handle,
                                     const uint16_t *x, int32_t hidden, const float *topk_weights,
                                     const uint16_t *bias0, const uint16_t *bias1,
                                     uint16_t *combined_x, float *combined_topk_weights,
                                     const dinf_exec *exec) {
    const char *func = __func__;
    CHECK(group, "group is NULL");
    dinf__ep_transport *t = group->transport;
    dinf__place place;
    dinf_status local = group_place(func, group, exec, &place);
    if (local == DINF_STATUS_OK)
        local = combine_local(group, func, handle, x, hidden, topk_weights, bias0, bias1,
                              combined_x, combined_topk_weights);
    if (local != DINF_STATUS_OK)
        place = default_place(group);
    const int64_t params[] = {hidden, topk_weights != NULL,
                              local == DINF_STATUS_OK ? (int64_t)handle->notify_sequence : 0};
    static const char *const names[] = {"hidden", "topk_weights given",
                                        "handle (notify call #)"};
    dinf_status st = agree(group, func, OP_COMBINE, local, params, names, 3, &place);
    if (st != DINF_STATUS_OK)
        return st;
    const int32_t K = handle->num_topk;
    dinf__ep_reduce red;
    memset(&red, 0, sizeof red);
    red.fields[red.num_fields++] = (dinf__ep_reduce_field){
        x, (int64_t)hidden * 2, DINF__EP_ELEM_BF16, combined_x, (int64_t)hidden * 2,
        DINF__EP_ELEM_BF16, hidden, 0, bias0, bias1};
    if (topk_weights)
        red.fields[red.num_fields++] = (dinf__ep_reduce_field){
            topk_weights, (int64_t)K * 4, DINF__EP_ELEM_F32, combined_topk_weights,
            (int64_t)K * 4, DINF__EP_ELEM_F32, K, 0, NULL, NULL};
    red.send_offsets = handle->recv_offsets; /* what I received, back to its sources */
    red.send_rows = NULL;
    red.recv_offsets = handle->plan.send_offsets; /* what I sent, coming back */
    red.num_out_rows = handle->num_tokens;
    red.num_terms = t->num_ranks;
    red.terms = handle->plan.terms;
    red.weights = NULL;
    return t->ops->reduce_a2a(t, func, &red, &place);
}

/* ----------------------------------------------------- low-latency mode -- */

struct dinf_ep_ll_handle {
    dinf_ep_group *group;
    int32_t dispatched;
    uint64_t dispatch_sequence;
    int64_t num_tokens, T, M;
    int32_t num_topk, num_experts, hidden, use_fp8;
    dinf__ep_ll_plan plan;  /* of the dispatch's topk_idx */
    dinf__ep_ll_plan check; /* of the combine's topk_idx */
    /* receive side, host */
    int64_t *begin, *count; /* [L_max][R] */
    int64_t *recv_offsets;  /* [R + 1] */
    int32_t *recv_count;    /* [L_max] */
    int64_t *layout_range;  /* [L_max][R] */
    /* group memory */
    int32_t *recv_rows; /* [E_max * T] */
    uint8_t *q_stage;
    float *s_stage;
};

static void ll_plan_free(dinf__ep_transport *t, dinf__ep_ll_plan *p) {
    free(p->num_selections_per_expert);
    free(p->send_offsets);
    free(p->scratch);
    t->ops->free(t, p->send_rows);
    t->ops->free(t, p->terms);
}

static int ll_plan_alloc(dinf__ep_transport *t, const char *func, const dinf_ep_config *c,
                         dinf__ep_ll_plan *p) {
    const size_t E = (size_t)c->max_num_experts, TK = (size_t)c->max_tokens_per_rank * c->max_topk;
    p->num_selections_per_expert = alloc_host(E, 4);
    p->send_offsets = alloc_host((size_t)t->num_ranks + 1, 8);
    p->scratch = alloc_host(E, 8);
    if (!p->num_selections_per_expert || !p->send_offsets || !p->scratch) {
        dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate the handle");
        return -1;
    }
    p->send_rows = t->ops->alloc(t, func, TK * 4);
    p->terms = p->send_rows ? t->ops->alloc(t, func, TK * 8) : NULL;
    return p->terms ? 0 : -1;
}

DINF_API dinf_status dinf_ep_ll_handle_destroy(dinf_ep_ll_handle *h) {
    if (!h)
        return DINF_STATUS_OK;
    dinf__ep_transport *t = h->group->transport;
    ll_plan_free(t, &h->plan);
    ll_plan_free(t, &h->check);
    free(h->begin);
    free(h->count);
    free(h->recv_offsets);
    free(h->recv_count);
    free(h->layout_range);
    t->ops->free(t, h->recv_rows);
    t->ops->free(t, h->q_stage);
    t->ops->free(t, h->s_stage);
    free(h);
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_ll_handle_create(dinf_ep_group *group, dinf_ep_ll_handle **handle) {
    const char *func = __func__;
    CHECK(group, "group is NULL");
    CHECK(handle, "handle is NULL");
    *handle = NULL;
    dinf__ep_transport *t = group->transport;
    const dinf_ep_config *c = &group->config;
    const size_t R = (size_t)t->num_ranks, L = (size_t)c->max_num_experts / R;
    const size_t T = (size_t)c->max_tokens_per_rank, H = (size_t)c->max_hidden;
    dinf_ep_ll_handle *h = calloc(1, sizeof *h);
    if (!h)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate the handle");
    h->group = group;
    h->begin = alloc_host(L * R, 8);
    h->count = alloc_host(L * R, 8);
    h->recv_offsets = alloc_host(R + 1, 8);
    h->recv_count = alloc_host(L, 4);
    h->layout_range = alloc_host(L * R, 8);
    if (!h->begin || !h->count || !h->recv_offsets || !h->recv_count || !h->layout_range) {
        dinf_ep_ll_handle_destroy(h);
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate the handle");
    }
    if (ll_plan_alloc(t, func, c, &h->plan) || ll_plan_alloc(t, func, c, &h->check)) {
        dinf_ep_ll_handle_destroy(h);
        return DINF_STATUS_OUT_OF_MEMORY;
    }
    h->recv_rows = t->ops->alloc(t, func, (size_t)c->max_num_experts * T * 4);
    h->q_stage = h->recv_rows ? t->ops->alloc(t, func, T * H) : NULL;
    h->s_stage = h->q_stage ? t->ops->alloc(t, func, T * ((H + 127) / 128) * 4) : NULL;
    if (!h->s_stage) {
        dinf_ep_ll_handle_destroy(h);
        return DINF_STATUS_OUT_OF_MEMORY;
    }
    *handle = h;
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_ll_scale_rows(int32_t num_ranks,
                                           int64_t num_max_dispatch_tokens_per_rank,
                                           int64_t *rows) {
    const char *func = __func__;
    CHECK(rows, "rows is NULL");
    CHECK(num_ranks >= 1 && num_ranks <= DINF_EP_MAX_RANKS, "num_ranks=%d must be in [1, %d]",
          (int)num_ranks, DINF_EP_MAX_RANKS);
    CHECK(num_max_dispatch_tokens_per_rank >= 1 &&
              num_max_dispatch_tokens_per_rank <= INT32_MAX,
          "num_max_dispatch_tokens_per_rank=%lld must be in [1, 2^31-1]",
          (long long)num_max_dispatch_tokens_per_rank);
    *rows = dinf__ep_ll_scale_rows((int64_t)num_ranks * num_max_dispatch_tokens_per_rank);
    return DINF_STATUS_OK;
}

typedef struct ll_dispatch_args {
    const uint16_t *x;
    int64_t num_tokens;
    int32_t hidden;
    const int64_t *topk_idx;
    int32_t num_topk, num_experts;
    int64_t T;
    int32_t use_fp8;
    void *recv_x;
    float *recv_x_scales;
    int32_t *recv_count, *recv_src_info;
    int64_t *recv_layout_range;
    dinf_ep_ll_handle *h;
} ll_dispatch_args;

static dinf_status ll_dispatch_local(dinf_ep_group *group, const char *func, ll_dispatch_args *a,
                                     const dinf__place *place) {
    dinf__ep_transport *t = group->transport;
    const dinf_ep_config *c = &group->config;
    dinf_ep_ll_handle *h = a->h;
    CHECK(h, "handle is NULL");
    CHECK(h->group == group, "the handle was created on another group endpoint");
    CHECK(a->T >= 1 && a->T <= c->max_tokens_per_rank,
          "num_max_dispatch_tokens_per_rank=%lld must be in [1, config.max_tokens_per_rank=%lld]",
          (long long)a->T, (long long)c->max_tokens_per_rank);
    CHECK(a->num_tokens >= 0 && a->num_tokens <= a->T,
          "num_tokens=%lld must be in [0, num_max_dispatch_tokens_per_rank=%lld]",
          (long long)a->num_tokens, (long long)a->T);
    CHECK(a->hidden >= DINF_EP_FP8_BLOCK && a->hidden <= c->max_hidden &&
              a->hidden % DINF_EP_FP8_BLOCK == 0,
          "hidden=%d must be a multiple of 128 in [128, config.max_hidden=%d]", (int)a->hidden,
          (int)c->max_hidden);
    CHECK(a->num_topk >= 1 && a->num_topk <= c->max_topk,
          "num_topk=%d must be in [1, config.max_topk=%d]", (int)a->num_topk, (int)c->max_topk);
    dinf_status st = check_experts(func, a->num_experts, t->num_ranks, c->max_num_experts);
    if (st != DINF_STATUS_OK)
        return st;
    CHECK(a->use_fp8 == 0 || a->use_fp8 == 1, "use_fp8=%d must be 0 or 1", (int)a->use_fp8);
    CHECK(a->num_tokens == 0 || (a->x && a->topk_idx),
          "%s is NULL with num_tokens=%lld", a->x ? "topk_idx" : "x", (long long)a->num_tokens);
    CHECK(a->recv_x && a->recv_count, "%s is NULL", a->recv_x ? "recv_count" : "recv_x");
    CHECK(!a->use_fp8 || a->recv_x_scales, "recv_x_scales is NULL with use_fp8=1");
    CHECK(a->use_fp8 || !a->recv_x_scales, "recv_x_scales must be NULL with use_fp8=0");
    const int32_t R = t->num_ranks;
    const size_t L = (size_t)(a->num_experts / R), M = (size_t)R * (size_t)a->T;
    const size_t H = (size_t)a->hidden, KB = H / DINF_EP_FP8_BLOCK;
    const size_t n = (size_t)a->num_tokens, K = (size_t)a->num_topk;
    const dinf__buffer buffers[] = {
        {"x", a->x, n * H * 2},
        {"topk_idx", a->topk_idx, n * K * 8},
        {"recv_x", a->recv_x, L * M * H * (a->use_fp8 ? 1 : 2)},
        {"recv_x_scales", a->recv_x_scales,
         L * KB * (size_t)dinf__ep_ll_scale_rows((int64_t)M) * 4},
        {"recv_count", a->recv_count, L * 4},
        {"recv_src_info", a->recv_src_info, L * M * 4},
        {"recv_layout_range", a->recv_layout_range, L * (size_t)R * 8}};
    st = dinf__check_disjoint(func, buffers, 7);
    if (st != DINF_STATUS_OK)
        return st;
    int64_t bad = -1;
    st = t->ops->plan_low_latency(t, func, a->topk_idx, a->num_tokens, a->num_topk,
                                  a->num_experts, &h->plan, &bad, place);
    if (st != DINF_STATUS_OK)
        return st;
    if (bad >= 0)
        return bad_expert(func, t, a->topk_idx, bad, a->num_topk, a->num_experts, place);
    for (int32_t e = 0; e < a->num_experts; e++)
        CHECK(h->plan.num_selections_per_expert[e] <= a->T,
              "expert %d is selected %d times by this rank's tokens, more than "
              "num_max_dispatch_tokens_per_rank=%lld (a token selects it twice?)",
              (int)e, (int)h->plan.num_selections_per_expert[e], (long long)a->T);
    if (a->use_fp8 && a->num_tokens > 0) {
        const dinf_exec e = exec_of(place);
        st = dinf_fp8_quantize(a->x, DINF_DTYPE_BFLOAT16, a->num_tokens, a->hidden, a->hidden,
                               1, h->q_stage, a->hidden, h->s_stage, &e);
        if (st != DINF_STATUS_OK)
            return st;
    }
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_low_latency_dispatch(
    dinf_ep_group *group, const uint16_t *x, int64_t num_tokens, int32_t hidden,
    const int64_t *topk_idx, int32_t num_topk, int32_t num_experts,
    int64_t num_max_dispatch_tokens_per_rank, int32_t use_fp8, void *recv_x,
    float *recv_x_scales, int32_t *recv_count, int32_t *recv_src_info,
    int64_t *recv_layout_range, dinf_ep_ll_handle *handle, const dinf_exec *exec) {
    const char *func = __func__;
    CHECK(group, "group is NULL");
    dinf__ep_transport *t = group->transport;
    if (handle && handle->group == group)
        handle->dispatched = 0;
    ll_dispatch_args a = {x,         num_tokens, hidden,        topk_idx,
                          num_topk,  num_experts, num_max_dispatch_tokens_per_rank,
                          use_fp8,   recv_x,     recv_x_scales, recv_count,
                          recv_src_info, recv_layout_range, handle};
    dinf__place place;
    dinf_status local = group_place(func, group, exec, &place);
    if (local == DINF_STATUS_OK)
        local = ll_dispatch_local(group, func, &a, &place);
    if (local != DINF_STATUS_OK)
        place = default_place(group);
    const int64_t params[] = {hidden, num_experts, num_max_dispatch_tokens_per_rank, use_fp8};
    static const char *const names[] = {"hidden", "num_experts",
                                        "num_max_dispatch_tokens_per_rank", "use_fp8"};
    dinf_status st = agree(group, func, OP_LL_DISPATCH, local, params, names, 4, &place);
    if (st != DINF_STATUS_OK)
        return st;
    const int32_t R = t->num_ranks, me = t->rank, L = num_experts / R;
    const int64_t T = num_max_dispatch_tokens_per_rank, M = (int64_t)R * T;
    /* exchange [R][E] selection counts */
    int32_t *all = group->scratch;
    st = t->ops->allgather(t, func, handle->plan.num_selections_per_expert, all,
                           (size_t)num_experts * 4, &place);
    if (st != DINF_STATUS_OK)
        return st;
    handle->recv_offsets[0] = 0;
    for (int32_t l = 0; l < L; l++) {
        int64_t b = 0;
        for (int32_t src = 0; src < R; src++) {
            const int64_t n = all[(size_t)src * num_experts + (size_t)me * L + l];
            handle->begin[(size_t)l * R + src] = b;
            handle->count[(size_t)l * R + src] = n;
            handle->layout_range[(size_t)l * R + src] = dinf__ep_pack(b, n);
            b += n;
        }
        handle->recv_count[l] = (int32_t)b; /* <= R * T: each count <= T (checked by its sender) */
    }
    for (int32_t src = 0; src < R; src++) {
        int64_t n = 0;
        for (int32_t l = 0; l < L; l++)
            n += handle->count[(size_t)l * R + src];
        handle->recv_offsets[src + 1] = handle->recv_offsets[src] + n;
    }
    st = t->ops->ll_recv_rows(t, func, handle->begin, handle->count, L, M, handle->recv_rows,
                              &place);
    if (st != DINF_STATUS_OK)
        return st;
    const int64_t row_bytes = (int64_t)hidden * (use_fp8 ? 1 : 2);
    const int32_t KB = hidden / DINF_EP_FP8_BLOCK;
    const int64_t scale_rows = dinf__ep_ll_scale_rows(M);
    dinf__ep_a2a a2a;
    memset(&a2a, 0, sizeof a2a);
    dinf__ep_field *f = a2a.fields;
    f[a2a.num_fields++] = (dinf__ep_field){use_fp8 ? (const void *)handle->q_stage : x,
                                           row_bytes, recv_x, row_bytes, row_bytes, 0, 0,
                                           (int32_t)row_bytes, 1};
    if (use_fp8)
        f[a2a.num_fields++] = (dinf__ep_field){handle->s_stage, (int64_t)KB * 4, recv_x_scales,
                                               4, scale_rows * 4, M, (int64_t)KB * scale_rows * 4,
                                               4, KB};
    a2a.send_offsets = handle->plan.send_offsets;
    a2a.send_rows = handle->plan.send_rows;
    a2a.recv_offsets = handle->recv_offsets;
    a2a.recv_rows = handle->recv_rows;
    a2a.recv_src_row = recv_src_info;
    st = t->ops->alltoallv(t, func, &a2a, &place);
    if (st != DINF_STATUS_OK)
        return st;
    st = t->ops->copy(t, func, recv_count, handle->recv_count, (size_t)L * 4, 0, &place);
    if (st == DINF_STATUS_OK && recv_layout_range)
        st = t->ops->copy(t, func, recv_layout_range, handle->layout_range,
                          (size_t)L * (size_t)R * 8, 0, &place);
    if (st != DINF_STATUS_OK)
        return st;
    handle->num_tokens = num_tokens;
    handle->num_topk = num_topk;
    handle->num_experts = num_experts;
    handle->hidden = hidden;
    handle->T = T;
    handle->M = M;
    handle->use_fp8 = use_fp8;
    handle->dispatch_sequence = group->sequence;
    handle->dispatched = 1;
    return DINF_STATUS_OK;
}

static dinf_status ll_combine_local(dinf_ep_group *group, const char *func, const uint16_t *x,
                                    int32_t hidden, const int64_t *topk_idx,
                                    const float *topk_weights, int64_t num_tokens,
                                    int32_t num_topk, const dinf_ep_ll_handle *hc,
                                    uint16_t *combined_x, const dinf__place *place) {
    dinf__ep_transport *t = group->transport;
    CHECK(hc, "handle is NULL");
    CHECK(hc->group == group, "the handle was created on another group endpoint");
    CHECK(hc->dispatched, "the handle holds no low-latency dispatch");
    dinf_ep_ll_handle *h = (dinf_ep_ll_handle *)hc; /* the check plan is scratch */
    CHECK(hidden == h->hidden, "hidden=%d differs from the dispatch's %d", (int)hidden,
          (int)h->hidden);
    CHECK(num_tokens == h->num_tokens, "num_tokens=%lld differs from the dispatch's %lld",
          (long long)num_tokens, (long long)h->num_tokens);
    CHECK(num_topk == h->num_topk, "num_topk=%d differs from the dispatch's %d", (int)num_topk,
          (int)h->num_topk);
    CHECK(x, "x is NULL");
    CHECK(num_tokens == 0 || (topk_idx && topk_weights && combined_x),
          "%s is NULL with num_tokens=%lld",
          !topk_idx ? "topk_idx" : !topk_weights ? "topk_weights" : "combined_x",
          (long long)num_tokens);
    const int32_t R = t->num_ranks;
    const size_t L = (size_t)(h->num_experts / R), n = (size_t)num_tokens;
    const size_t H = (size_t)hidden, K = (size_t)num_topk;
    const dinf__buffer buffers[] = {{"x", x, L * (size_t)h->M * H * 2},
                                    {"topk_idx", topk_idx, n * K * 8},
                                    {"topk_weights", topk_weights, n * K * 4},
                                    {"combined_x", combined_x, n * H * 2}};
    dinf_status st = dinf__check_disjoint(func, buffers, 4);
    if (st != DINF_STATUS_OK)
        return st;
    int64_t bad = -1;
    st = t->ops->plan_low_latency(t, func, topk_idx, num_tokens, num_topk, h->num_experts,
                                  &h->check, &bad, place);
    if (st != DINF_STATUS_OK)
        return st;
    if (bad >= 0)
        return bad_expert(func, t, topk_idx, bad, num_topk, h->num_experts, place);
    for (int32_t e = 0; e < h->num_experts; e++)
        CHECK(h->check.num_selections_per_expert[e] == h->plan.num_selections_per_expert[e],
              "topk_idx differs from the dispatch's: expert %d is selected %d times, %d at "
              "dispatch",
              (int)e, (int)h->check.num_selections_per_expert[e],
              (int)h->plan.num_selections_per_expert[e]);
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_low_latency_combine(dinf_ep_group *group, const uint16_t *x,
                                                 int32_t hidden, const int64_t *topk_idx,
                                                 const float *topk_weights, int64_t num_tokens,
                                                 int32_t num_topk,
                                                 const dinf_ep_ll_handle *handle,
                                                 uint16_t *combined_x, const dinf_exec *exec) {
    const char *func = __func__;
    CHECK(group, "group is NULL");
    dinf__ep_transport *t = group->transport;
    dinf__place place;
    dinf_status local = group_place(func, group, exec, &place);
    if (local == DINF_STATUS_OK)
        local = ll_combine_local(group, func, x, hidden, topk_idx, topk_weights, num_tokens,
                                 num_topk, handle, combined_x, &place);
    if (local != DINF_STATUS_OK)
        place = default_place(group);
    const int64_t params[] = {hidden,
                              local == DINF_STATUS_OK ? (int64_t)handle->dispatch_sequence : 0};
    static const char *const names[] = {"hidden", "handle (dispatch call #)"};
    dinf_status st = agree(group, func, OP_LL_COMBINE, local, params, names, 2, &place);
    if (st != DINF_STATUS_OK)
        return st;
    dinf__ep_reduce red;
    memset(&red, 0, sizeof red);
    red.fields[red.num_fields++] = (dinf__ep_reduce_field){
        x, (int64_t)hidden * 2, DINF__EP_ELEM_BF16, combined_x, (int64_t)hidden * 2,
        DINF__EP_ELEM_BF16, hidden, 1, NULL, NULL};
    red.send_offsets = handle->recv_offsets;
    red.send_rows = handle->recv_rows;
    red.recv_offsets = handle->check.send_offsets;
    red.num_out_rows = num_tokens;
    red.num_terms = num_topk;
    red.terms = handle->check.terms;
    red.weights = topk_weights;
    return t->ops->reduce_a2a(t, func, &red, &place);
}
