/*
 * The EP transport interface: what the protocol (lib/ep/ep_protocol.c) needs
 * from a way of moving data between ranks. The protocol is written once over
 * this vtable; each transport implements it:
 *
 *   threads   (lib/ep/ep_threads.c)  ranks = threads of one process, host memory
 *   nccl      (GPU helper)           ncclAllGather + grouped ncclSend/ncclRecv
 *   cuda peer (GPU helper)           direct stores through a device pointer table
 *                                    (CUDA IPC across processes, or virtual ranks
 *                                    on one GPU with one cooperative launch)
 *
 * Design: communication is expressed as a few COARSE collective steps (an
 * all-gather of small host records, an all-to-all-v of rows with gather and
 * scatter index lists, and its reverse with an ordered float32 reduction), not
 * as single-row puts, so that NCCL (whole segments) and peer stores (rows
 * written straight into the peer's buffer) both fit; how a step is carried out
 * (staging, chunking, fused kernels) is the transport's choice. Local work
 * that must run where the data lives (planning from topk_idx, fixing up
 * received top-k rows) is in the same table, with CPU implementations in
 * lib/ep/ep_cpu.c that the GPU transports replace by kernels (the per-item
 * math is in ep_hd.h).
 *
 * Conventions for every op:
 * - `func` is the public function being served; failures return through
 *   dinf__fail(status, func, ...) so dinf_last_error() names it.
 * - "group memory" = host memory for host transports, device memory of the
 *   group's device for GPU transports; "host" = always host memory.
 * - Collective ops (allgather, alltoallv, reduce_a2a, barrier) are entered by
 *   every rank in the same order. Every wait for peers that might never come
 *   is bounded by t->timeout_ms: on expiry the op returns DINF_STATUS_TIMEOUT
 *   with a message naming the op and the missing ranks, and marks the
 *   transport broken. (Once every rank is known to be inside a step, waiting
 *   for its completion without a deadline is allowed when that completion is
 *   guaranteed; the threads transport does so, so that no rank returns while
 *   a peer still reads its buffers.) A broken transport
 *   fails every later collective op at once with the recorded status and
 *   message. Ops must never hang and never write outside the described rows.
 * - A collective op either succeeds on every rank or fails on every rank that
 *   returns (a rank that never arrives makes the others time out).
 * - GPU transports enqueue on `place->stream`; they may synchronise it inside
 *   allgather (the protocol reads the gathered counts on the host right after).
 */
#ifndef DINF_EP_TRANSPORT_H
#define DINF_EP_TRANSPORT_H

#include "../core/internal.h"
#include "../core/parallel.h"
#include "deepinfra/ep.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dinf__ep_transport dinf__ep_transport;

/* Most fields one all-to-all step moves (x, scales, topk_idx, weights, ...). */
#define DINF__EP_MAX_FIELDS 6

/*
 * One per-row payload of an all-to-all step. A row is `elems` elements of
 * `elem_bytes` bytes. Send side: local row s starts at send + s * send_stride
 * and is contiguous. Receive side: local row q is split into a group
 * g = q / recv_rows_per_group and a row i = q % recv_rows_per_group (g = 0,
 * i = q when recv_rows_per_group is 0), and element e is written at
 *     recv + g * recv_group_stride + i * recv_stride + e * recv_elem_stride
 * (recv_elem_stride == elem_bytes for a contiguous row; the low-latency FP8
 * scales [L][H/128][ceil(M/4)*4] use the group and element strides to land
 * M-major per expert). Both pointers are group memory, caller-owned.
 */
typedef struct dinf__ep_field {
    const void *send;
    int64_t send_stride; /* bytes */
    void *recv;
    int64_t recv_stride;         /* bytes */
    int64_t recv_elem_stride;    /* bytes */
    int64_t recv_rows_per_group; /* 0: no grouping */
    int64_t recv_group_stride;   /* bytes */
    int32_t elem_bytes;
    int32_t elems;
} dinf__ep_field;

/* Receive address of element e of local row q (see dinf__ep_field). */
static inline char *dinf__ep_field_recv_at(const dinf__ep_field *f, int64_t q, int64_t e) {
    const int64_t g = f->recv_rows_per_group > 0 ? q / f->recv_rows_per_group : 0;
    const int64_t i = f->recv_rows_per_group > 0 ? q % f->recv_rows_per_group : q;
    return (char *)f->recv + g * f->recv_group_stride + i * f->recv_stride + e * f->recv_elem_stride;
}

/*
 * An all-to-all-v of rows. Rank p's "send order" lists the rows it sends,
 * grouped by destination: rows [send_offsets[d], send_offsets[d + 1]) go to
 * rank d, and send-order row j is local row send_rows[j] (identity when
 * send_rows is NULL). Rank d's "receive order" lists what it receives, grouped
 * by source: rows [recv_offsets[p], recv_offsets[p + 1]) come from rank p, in
 * p's send order, and receive-order row j is stored at local row recv_rows[j]
 * (identity when NULL). The counts must agree: send_offsets[d+1] -
 * send_offsets[d] on rank p == recv_offsets[p+1] - recv_offsets[p] on rank d
 * (the protocol guarantees it; a transport that can check it cheaply returns
 * DINF_STATUS_INTERNAL on disagreement rather than writing out of range).
 * Every field moves with every row; fields[i] must describe the same payload
 * on every rank.
 */
typedef struct dinf__ep_a2a {
    int32_t num_fields;
    dinf__ep_field fields[DINF__EP_MAX_FIELDS];
    const int64_t *send_offsets; /* host [R + 1], send_offsets[0] == 0 */
    const int32_t *send_rows;    /* group memory [send_offsets[R]] or NULL */
    const int64_t *recv_offsets; /* host [R + 1], recv_offsets[0] == 0 */
    const int32_t *recv_rows;    /* group memory [recv_offsets[R]] or NULL */
    /* Optional: int32 group memory indexed by the receive-side LOCAL row: gets
     * the sender's local row index (send_rows[j] on the sender) of each
     * received row. Used for recv_src_idx / recv_src_info. NULL: not wanted. */
    int32_t *recv_src_row;
} dinf__ep_a2a;

/* Element type of a reduce field. */
typedef enum dinf__ep_elem { DINF__EP_ELEM_BF16 = 0, DINF__EP_ELEM_F32 = 1 } dinf__ep_elem;

/* One payload of a reducing step: in rows (send side, `elems` elements of
 * in_elem at in + row * in_stride) are summed into out rows (out_elem, at
 * out + row * out_stride). With apply_weights the term weights multiply the
 * values. bias0/bias1: out_elem rows that START the sum, before the terms
 * (or NULL). */
typedef struct dinf__ep_reduce_field {
    const void *in;
    int64_t in_stride; /* bytes */
    int32_t in_elem;   /* dinf__ep_elem */
    void *out;
    int64_t out_stride; /* bytes */
    int32_t out_elem;   /* dinf__ep_elem */
    int32_t elems;
    int32_t apply_weights;
    const void *bias0, *bias1; /* out_elem [num_out_rows][elems], stride out_stride */
} dinf__ep_reduce_field;

/*
 * A reducing all-to-all (combine). Send side: as dinf__ep_a2a (send_offsets,
 * send_rows; the rows are the reduce fields' `in` rows). Receive side: output
 * row t (0 <= t < num_out_rows) is
 *     acc = float(bias0[t]) + float(bias1[t])   (a NULL bias reads as +0;
 *                                               bias0 first, as upstream)
 *     for j in 0..num_terms-1 with terms[t][j] != -1:
 *         (src, pos) = unpack(terms[t][j]);
 *         acc = dinf__ep_acc_bf16-style: acc + w * float(row pos of src's segment for me)
 *     out[t] = round(acc)
 * in that order exactly (biases, then term order, float32, one rounding at
 * the end; w = weights[t][j] when the field applies weights, else 1;
 * normal-mode terms are by rank ascending). A row with no terms
 * gets the biases (0 without). Every output row is written.
 */
typedef struct dinf__ep_reduce {
    int32_t num_fields;
    dinf__ep_reduce_field fields[2];
    const int64_t *send_offsets; /* host [R + 1] */
    const int32_t *send_rows;    /* group memory or NULL */
    const int64_t *recv_offsets; /* host [R + 1]: rows expected from each source */
    int64_t num_out_rows;
    int32_t num_terms;
    const int64_t *terms;  /* group memory [num_out_rows][num_terms], packed (src, pos) or -1 */
    const float *weights;  /* group memory [num_out_rows][num_terms] or NULL */
} dinf__ep_reduce;

/* The normal-mode plan of one rank's tokens (outputs of ops.plan_dispatch). */
typedef struct dinf__ep_plan {
    /* host */
    int32_t *num_tokens_per_rank;   /* [R] */
    int32_t *num_tokens_per_expert; /* [E], = num_tokens_per_rank + R (one block: the
                                       notify sends [R + E] counts in one all-gather) */
    int64_t *send_offsets;          /* [R + 1] prefix of num_tokens_per_rank */
    /* group memory */
    int32_t *send_rows;  /* [N * R] capacity: token of each send-order row */
    int64_t *terms;      /* [N][R]: (r, send_slot[t][r]) or -1, columns by rank */
} dinf__ep_plan;

/* The low-latency plan of one rank's tokens (outputs of ops.plan_low_latency). */
typedef struct dinf__ep_ll_plan {
    /* host */
    int32_t *num_selections_per_expert; /* [E]: selections (t, k) of each expert */
    int64_t *send_offsets;              /* [R + 1] */
    int64_t *scratch;                   /* [E] host scratch for the CPU planner */
    /* group memory */
    int32_t *send_rows; /* [N * K] capacity: token of each send-order row */
    int64_t *terms;     /* [N][K]: (rank of expert, position in that rank's segment) or -1 */
} dinf__ep_ll_plan;

typedef struct dinf__ep_transport_ops {
    const char *name; /* "threads", "nccl", "cuda-ipc", "cuda-virtual" */

    /* ---- collective communication ---- */

    /* Every rank contributes `bytes` host bytes; out (host, [R][bytes]) gets
     * rank p's contribution at p * bytes, on every rank. The protocol's first
     * step of every public call, so it is also where mismatched calls meet. */
    dinf_status (*allgather)(dinf__ep_transport *t, const char *func, const void *in, void *out,
                             size_t bytes, const dinf__place *place);
    /* Move rows as described by a2a (see dinf__ep_a2a). */
    dinf_status (*alltoallv)(dinf__ep_transport *t, const char *func, const dinf__ep_a2a *a2a,
                             const dinf__place *place);
    /* Send rows back and reduce them in term order (see dinf__ep_reduce). */
    dinf_status (*reduce_a2a)(dinf__ep_transport *t, const char *func,
                              const dinf__ep_reduce *reduce, const dinf__place *place);
    /* Wait for every rank (group barrier). */
    dinf_status (*barrier)(dinf__ep_transport *t, const char *func, const dinf__place *place);

    /* ---- memory of the group's space ---- */

    /* Allocate / free group memory (NULL on failure, with an error recorded). */
    void *(*alloc)(dinf__ep_transport *t, const char *func, size_t bytes);
    void (*free)(dinf__ep_transport *t, void *ptr);
    /* Copy between host and group memory (kind: 0 host->group, 1 group->host,
     * 2 group->group). Synchronous for kind 1 (the host reads the result). */
    dinf_status (*copy)(dinf__ep_transport *t, const char *func, void *dst, const void *src,
                        size_t bytes, int kind, const dinf__place *place);

    /* ---- local work in group memory (CPU: lib/ep/ep_cpu.c) ---- */

    /* Normal-mode plan from topk_idx [N][K] (group memory): fills plan (see
     * dinf__ep_plan). *bad_entry (host) gets the smallest flat index t * K + k
     * of an entry outside [-1, E), or -1 when all are valid (then the plan is
     * not used). When the caller's layout arrays are given (group memory, all
     * three or none), counts the entries that differ from the plan into
     * *layout_mismatches (host; 0 when not given). */
    dinf_status (*plan_dispatch)(dinf__ep_transport *t, const char *func, const int64_t *topk_idx,
                                 int64_t num_tokens, int32_t num_topk, int32_t num_experts,
                                 const int32_t *num_tokens_per_rank,
                                 const int32_t *num_tokens_per_expert,
                                 const uint8_t *is_token_in_rank, dinf__ep_plan *plan,
                                 int64_t *bad_entry, int64_t *layout_mismatches,
                                 const dinf__place *place);
    /* Received top-k rows [num_rows][K] (group memory, global ids): ids become
     * local to `rank` (dinf__ep_local_expert) and weights (may be NULL) are
     * zeroed where the id became -1. */
    dinf_status (*localize_topk)(dinf__ep_transport *t, const char *func, int64_t *topk_idx,
                                 float *topk_weights, int64_t num_rows, int32_t num_topk,
                                 int32_t num_experts, const dinf__place *place);
    /* Low-latency plan from topk_idx [N][K]: fills plan (dinf__ep_ll_plan);
     * *bad_entry as plan_dispatch. */
    dinf_status (*plan_low_latency)(dinf__ep_transport *t, const char *func,
                                    const int64_t *topk_idx, int64_t num_tokens, int32_t num_topk,
                                    int32_t num_experts, dinf__ep_ll_plan *plan,
                                    int64_t *bad_entry, const dinf__place *place);
    /* Scan on a tiny host array uploaded to group memory: writes
     * rows[j] (group memory) for the low-latency receive order, given
     * begin/count [L][R] (host): source p's segment is, for l ascending,
     * rows l * m_rows + begin[l][p] + (0..count[l][p]-1). */
    dinf_status (*ll_recv_rows)(dinf__ep_transport *t, const char *func, const int64_t *begin,
                                const int64_t *count, int32_t num_local_experts,
                                int64_t m_rows, int32_t *rows, const dinf__place *place);

    /* Release the transport (one rank's endpoint). */
    void (*destroy)(dinf__ep_transport *t);
} dinf__ep_transport_ops;

/* One rank's endpoint. Transports embed it first in their own struct. */
struct dinf__ep_transport {
    const dinf__ep_transport_ops *ops;
    int32_t rank, num_ranks;
    int32_t memory; /* dinf_ep_memory */
    int32_t device; /* CUDA device, -1 for host */
    int64_t timeout_ms;
};

/* The public group object: the transport plus the protocol's state. */
struct dinf_ep_group {
    dinf__ep_transport *transport;
    dinf_ep_config config;
    uint64_t sequence; /* collective calls made so far on this rank */
    void *scratch;     /* host, for the protocol's small exchanges */
    size_t scratch_bytes;
};

/* Validated copy of a public config (defaults applied). */
dinf_status dinf__ep_config_check(const char *func, const dinf_ep_config *config,
                                  dinf_ep_config *out);

/* Wrap a transport into a group (takes ownership; destroys it on failure). */
dinf_status dinf__ep_group_wrap(const char *func, dinf__ep_transport *transport,
                                const dinf_ep_config *config, dinf_ep_group **group);

/* CPU implementations of the local-work ops, for host transports (and as the
 * reference the GPU kernels are tested against). */
dinf_status dinf__ep_cpu_plan_dispatch(dinf__ep_transport *t, const char *func,
                                       const int64_t *topk_idx, int64_t num_tokens,
                                       int32_t num_topk, int32_t num_experts,
                                       const int32_t *num_tokens_per_rank,
                                       const int32_t *num_tokens_per_expert,
                                       const uint8_t *is_token_in_rank, dinf__ep_plan *plan,
                                       int64_t *bad_entry, int64_t *layout_mismatches,
                                       const dinf__place *place);
dinf_status dinf__ep_cpu_localize_topk(dinf__ep_transport *t, const char *func, int64_t *topk_idx,
                                       float *topk_weights, int64_t num_rows, int32_t num_topk,
                                       int32_t num_experts, const dinf__place *place);
dinf_status dinf__ep_cpu_plan_low_latency(dinf__ep_transport *t, const char *func,
                                          const int64_t *topk_idx, int64_t num_tokens,
                                          int32_t num_topk, int32_t num_experts,
                                          dinf__ep_ll_plan *plan, int64_t *bad_entry,
                                          const dinf__place *place);
dinf_status dinf__ep_cpu_ll_recv_rows(dinf__ep_transport *t, const char *func,
                                      const int64_t *begin, const int64_t *count,
                                      int32_t num_local_experts, int64_t m_rows, int32_t *rows,
                                      const dinf__place *place);
/* The CPU layout (dinf_ep_get_dispatch_layout on host arrays, checked). */
void dinf__ep_cpu_layout(const int64_t *topk_idx, int64_t num_tokens, int32_t num_topk,
                         int32_t num_experts, int32_t num_ranks, int32_t *num_tokens_per_rank,
                         int32_t *num_tokens_per_expert, uint8_t *is_token_in_rank);

#ifdef __cplusplus
}
#endif

#endif /* DINF_EP_TRANSPORT_H */
