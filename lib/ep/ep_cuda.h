/*
 * The GPU side of ep: what the GPU transports (lib/ep/ep_cuda.c: CUDA IPC,
 * virtual ranks, NCCL) share with their kernels (kernels/ep/ep_kernels.cu).
 * Only built with DINF_WITH_CUDA. Not installed.
 *
 * Every GPU transport struct starts with dinf__ep_gpu (which starts with
 * dinf__ep_transport), so the local-work ops below serve all of them.
 * Launchers enqueue on place->stream (making place->device current for the
 * launch) and report a failed launch as DINF_STATUS_CUDA_ERROR; the ops
 * whose results the host reads (planners) synchronise the stream.
 */
#ifndef DINF_EP_CUDA_H
#define DINF_EP_CUDA_H

#include "ep_peer_hd.h"
#include "ep_transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* State common to the GPU transports (first member of each). */
typedef struct dinf__ep_gpu {
    dinf__ep_transport base;
    int32_t max_experts;   /* config.max_num_experts */
    void *scratch;         /* device: planner counters and uploads (dinf__ep_gpu_scratch_bytes) */
    size_t scratch_bytes;
} dinf__ep_gpu;

/* Device scratch the planners need for num_ranks ranks and max_experts experts. */
size_t dinf__ep_gpu_scratch_bytes(int32_t num_ranks, int32_t max_experts);

/* One field of a wire row (ep_peer_hd.h). Send side: local row s is
 * `bytes` bytes at send + s * send_stride. Receive side (all-to-all): as
 * dinf__ep_field (recv, strides, grouping; elems of elem_bytes). */
typedef struct dinf__ep_wire_field {
    const char *send;
    int64_t send_stride;
    int64_t bytes;
    int64_t offset; /* in the wire row */
    char *recv;
    int64_t recv_stride, recv_elem_stride, recv_rows_per_group, recv_group_stride;
    int32_t elem_bytes, elems;
} dinf__ep_wire_field;

enum { DINF__EP_STEP_A2A = 0, DINF__EP_STEP_REDUCE = 1, DINF__EP_STEP_GATHER = 2,
       DINF__EP_STEP_NONE = 3 };

/* One rank's part of one collective step, as the kernels read it (device
 * copy; every pointer is device memory). */
typedef struct dinf__ep_step {
    int32_t rank, num_ranks, kind, num_fields;
    int64_t row_bytes;
    dinf__ep_wire_field f[DINF__EP_MAX_FIELDS];
    const int64_t *send_offsets; /* [R + 1] */
    const int32_t *send_rows;    /* or NULL */
    const int64_t *recv_offsets; /* [R + 1] */
    const int32_t *recv_rows;    /* all-to-all, or NULL */
    int32_t *recv_src_row;       /* all-to-all, or NULL */
    /* reduce: field i's send side is f[i] (bytes = elems * in element size) */
    int32_t in_elem[2], out_elem[2], red_elems[2], apply_weights[2];
    void *out[2];
    int64_t out_stride[2];
    const void *bias0[2], *bias1[2];
    int64_t num_out_rows;
    int32_t num_terms, pad0;
    const int64_t *terms;
    const float *weights;
    /* gather: gather_bytes bytes at gather_in (device) to every peer */
    const void *gather_in;
    int64_t gather_bytes;
    /* host-mapped error record of this rank: {code, peer, 0, 0} (first wins) */
    int32_t *error;
} dinf__ep_step;

/* Fill the wire layout of a step from an all-to-all / reduce descriptor:
 * s->f, s->num_fields, s->row_bytes and (reduce) the element fields. The
 * offsets/rows pointers are left to the caller (they need device copies).
 * Returns DINF_STATUS_OK or DINF_STATUS_INTERNAL (row too large). */
dinf_status dinf__ep_step_from_a2a(const char *func, const dinf__ep_a2a *a2a, dinf__ep_step *s);
dinf_status dinf__ep_step_from_reduce(const char *func, const dinf__ep_reduce *red,
                                      dinf__ep_step *s);

/* A peer-store step: one cooperative launch of num_steps * blocks_per_rank
 * blocks; block b serves steps[b / blocks_per_rank] (device array). */
typedef struct dinf__ep_peer_launch {
    char *const *peers; /* device [R]: symmetric buffer base of every rank */
    dinf__ep_peer_layout layout;
    uint64_t step;
    int64_t timeout_ns; /* every device-side wait, %globaltimer (dinf__ep_timeout_ns) */
    const dinf__ep_step *steps; /* device [num_steps] */
    int32_t num_steps, blocks_per_rank;
} dinf__ep_peer_launch;

dinf_status dinf__ep_cuda_peer_step(const char *func, const dinf__place *place,
                                    const dinf__ep_peer_launch *launch);
/* Blocks of the step kernel the device can hold at once (all SMs). */
dinf_status dinf__ep_cuda_peer_capacity(const char *func, int32_t device, int64_t *blocks);

/* NCCL path: pack this rank's send rows (send order) into stage (row j at
 * j * row_bytes; rows = send_offsets[R]); unpack the receive stage (rows by
 * source, in order: receive-order row j at j * row_bytes; rows =
 * recv_offsets[R]) or reduce it (rows = num_out_rows). step is a
 * device-readable copy of the descriptor (every pointer in it device
 * memory), unchanged until the kernel has run. */
dinf_status dinf__ep_cuda_pack(const char *func, const dinf__place *place,
                               const dinf__ep_step *step, int64_t rows, char *stage);
dinf_status dinf__ep_cuda_unpack(const char *func, const dinf__place *place,
                                 const dinf__ep_step *step, int64_t rows, const char *stage);
dinf_status dinf__ep_cuda_reduce(const char *func, const dinf__place *place,
                                 const dinf__ep_step *step, int64_t rows, const char *stage);

/* The local-work ops of the vtable for GPU groups (t is a dinf__ep_gpu). */
dinf_status dinf__ep_gpu_plan_dispatch(dinf__ep_transport *t, const char *func,
                                       const int64_t *topk_idx, int64_t num_tokens,
                                       int32_t num_topk, int32_t num_experts,
                                       const int32_t *num_tokens_per_rank,
                                       const int32_t *num_tokens_per_expert,
                                       const uint8_t *is_token_in_rank, dinf__ep_plan *plan,
                                       int64_t *bad_entry, int64_t *layout_mismatches,
                                       const dinf__place *place);
dinf_status dinf__ep_gpu_localize_topk(dinf__ep_transport *t, const char *func, int64_t *topk_idx,
                                       float *topk_weights, int64_t num_rows, int32_t num_topk,
                                       int32_t num_experts, const dinf__place *place);
dinf_status dinf__ep_gpu_plan_low_latency(dinf__ep_transport *t, const char *func,
                                          const int64_t *topk_idx, int64_t num_tokens,
                                          int32_t num_topk, int32_t num_experts,
                                          dinf__ep_ll_plan *plan, int64_t *bad_entry,
                                          const dinf__place *place);
dinf_status dinf__ep_gpu_ll_recv_rows(dinf__ep_transport *t, const char *func,
                                      const int64_t *begin, const int64_t *count,
                                      int32_t num_local_experts, int64_t m_rows, int32_t *rows,
                                      const dinf__place *place);

/* The CUDA layout (dinf_ep_get_dispatch_layout with DINF_EXEC_CUDA). */
dinf_status dinf__ep_layout_cuda(const char *func, const dinf__place *place,
                                 const int64_t *topk_idx, int64_t num_tokens, int32_t num_topk,
                                 int32_t num_experts, int32_t num_ranks,
                                 int32_t *num_tokens_per_rank, int32_t *num_tokens_per_expert,
                                 uint8_t *is_token_in_rank);

#ifdef __cplusplus
}
#endif

#endif /* DINF_EP_CUDA_H */
