/*
 * libdeepinfra ep: MoE expert-parallel dispatch and combine with the
 * semantics of DeepEP v1 (normal and low-latency modes, FP8 dispatch), over
 * pluggable transports.
 *
 * Ranks and groups. An expert-parallel group has num_ranks ranks; rank r
 * holds experts [r * L, (r + 1) * L) with L = num_experts / num_ranks local
 * experts. Each rank talks to the group through its own dinf_ep_group
 * object (like one ncclComm_t per rank). Every operation below that takes a
 * group is COLLECTIVE: every rank of the group must make the same sequence
 * of collective calls (same operation, compatible arguments), each from its
 * own thread. A rank whose peers do not arrive waits at most
 * config.timeout_ms, then fails with DINF_STATUS_TIMEOUT naming the missing
 * ranks. Calls that disagree fail on every rank with a message naming the
 * rank and the field: another operation (dispatch on one rank, combine on
 * another), or the same operation with another hidden size, num_experts,
 * num_max_dispatch_tokens_per_rank, dtype, handle... After a timeout, or
 * calls to different operations at the same step, the group is BROKEN:
 * every later collective call on any of its ranks fails at once with
 * DINF_STATUS_TIMEOUT or DINF_STATUS_INVALID_ARGUMENT and the original
 * message (no hang, no stale data); destroy and recreate it. Argument
 * errors found on one rank, and disagreeing arguments of the same
 * operation, fail the call on every rank (the others name the rank that
 * rejected its arguments) and do NOT break the group.
 * Handles belong to the group (endpoint) they were created on: destroy them
 * before it.
 *
 * Transports (constructors):
 *   dinf_ep_group_create_threads  num_ranks ranks as threads of this process,
 *                                 host memory: the CPU path and the oracle
 *   dinf_ep_group_create_nccl     (GPU; declared in this header, implemented
 *                                 by the NCCL transport) one rank per
 *                                 ncclComm_t rank, device memory
 *   dinf_ep_group_create_cuda_ipc / dinf_ep_group_create_cuda_virtual
 *                                 (GPU) intranode peers by direct stores
 *                                 through a device pointer table
 * Memory space: a group created by the threads constructor takes host
 * pointers everywhere and its calls take exec == NULL or DINF_EXEC_CPU; a
 * GPU group takes device pointers (its device) for every per-token array and
 * exec = DINF_EXEC_CUDA on its device (work is enqueued on exec->stream).
 * Small per-rank/per-expert outputs (counts, prefix matrices) are always
 * host memory. The normal-mode notify step and the low-latency count
 * exchange read counts on the host: on GPU groups these calls synchronise
 * exec->stream and are not CUDA-graph capturable in this version (called
 * while exec->stream is being captured, the layout and the planners return
 * DINF_STATUS_UNSUPPORTED and leave the capture intact).
 *
 * Normal mode (high throughput), per step:
 *
 *   dinf_ep_get_dispatch_layout(topk_idx, N, K, E, R, per_rank, per_expert, in_rank, exec);
 *   dinf_ep_handle *h; dinf_ep_handle_create(group, &h);          (once)
 *   dinf_ep_notify_dispatch(group, topk_idx, N, K, E, per_rank, per_expert, in_rank,
 *                           expert_alignment, h, &num_recv, recv_per_expert_list, exec);
 *   ... allocate recv buffers of num_recv rows ...
 *   dinf_ep_dispatch(group, h, x, x_dtype, x_scales, H, topk_idx, topk_weights,
 *                    recv_dtype, recv_x, recv_x_scales, recv_topk_idx,
 *                    recv_topk_weights, recv_src_idx, recv_capacity, exec);
 *   ... experts: reduce each received token's local experts into one row ...
 *   dinf_ep_combine(group, h, y, H, recv_topk_weights_or_NULL, NULL, NULL,
 *                   combined_x, combined_topk_weights, exec);
 *
 * Cached layout: calling dinf_ep_dispatch again with the same handle (and
 * topk_idx == NULL) moves new data along the same routes without a new
 * notify step (upstream's cached dispatch, e.g. combine's backward).
 *
 * Semantics (DeepEP v1, reference part 1):
 * - Rank of expert e: e / L. topk_idx entries of -1 select nothing.
 * - Normal dispatch sends token t of rank i ONCE to each rank r that holds at
 *   least one of its selected experts (is_token_in_rank[t][r]). Rank r
 *   receives the tokens ordered by source rank, then source token index:
 *   the rows from source i are [rank_prefix_matrix[i-1][r],
 *   rank_prefix_matrix[i][r]) (inclusive prefix over sources, as upstream).
 *   recv_topk_idx holds LOCAL expert ids (e - r * L, or -1 for experts on
 *   other ranks and unselected slots); recv_topk_weights is 0 wherever
 *   recv_topk_idx is -1.
 * - Combine is the reverse: combined[t] = the float32 sum that starts at
 *   float(bias0[t]) + float(bias1[t]) (a missing bias is +0) and then adds,
 *   over ranks r ascending with is_token_in_rank[t][r], the row rank r
 *   returns for token t; rounded once to bfloat16 (upstream's order). It does
 *   NOT apply topk weights (upstream: "addition without weights"); the caller
 *   weights its local experts before combine. combined_topk_weights[t][k] is
 *   the float32 sum of the returned weights, which reconstructs the original
 *   weights because dispatch zeroed the non-local ones.
 * - Low-latency dispatch sends one row per (token, selected expert) into
 *   the masked layout [L][num_ranks * T][H] (T = num_max_dispatch_tokens_per_rank)
 *   that dinf_fp8_m_grouped_gemm_nt_masked consumes (m_max = num_ranks * T,
 *   masked_m = recv_count). Local expert l's rows are packed from row 0:
 *   blocks by source rank ascending, within a block by source token index
 *   ascending (then by top-k slot). This order is deterministic (upstream's is
 *   arrival order). Low-latency combine returns
 *   combined[t] = sum over k ascending, topk_idx[t][k] >= 0, of
 *   float32(topk_weights[t][k]) * float32(y[row of (t, k)]), rounded once to
 *   bfloat16. Each term is a rounded float32 multiply followed by a rounded
 *   add, never a fused multiply-add, on every transport (CPU and CUDA).
 *   Upstream's CUDA kernel lets the compiler fuse them, so its results may
 *   differ from ours in the last bfloat16 ulp.
 * - FP8: x is quantized on the send side with dinf_fp8_quantize's 1x128
 *   per-token rule (same bits), receivers get e4m3 rows plus float32 scales.
 *   The scale is amax / 448 (a float32 division, as the gemm module and
 *   upstream's per_token_cast_to_fp8); upstream's low-latency dispatch
 *   kernel multiplies amax by 1/448 instead, so its scales may differ from
 *   ours in the last float32 ulp (the e4m3 codes are the same). On the CPU
 *   path that quantizer runs in the CPU's widest vector set, capped by
 *   DINF_CPU_ISA (another value fails the dispatch with its message).
 *
 * bfloat16 arrays are passed as uint16_t bits; bool arrays as uint8_t 0/1.
 */
#ifndef DEEPINFRA_EP_H
#define DEEPINFRA_EP_H

#include "deepinfra/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DINF_EP_MAX_RANKS 1024        /* ranks per group */
#define DINF_EP_MAX_TOPK 32           /* num_topk per token (upstream normal kernels: <= 32) */
#define DINF_EP_MAX_LOCAL_EXPERTS 1024 /* num_experts / num_ranks (upstream NUM_MAX_LOCAL_EXPERTS) */
#define DINF_EP_FP8_BLOCK 128         /* channels per FP8 scale (1x128 per-token blocks) */
#define DINF_EP_DEFAULT_TIMEOUT_MS 100000 /* upstream NUM_CPU_TIMEOUT_SECS = 100 */

/* One rank's endpoint of an expert-parallel group (opaque). */
typedef struct dinf_ep_group dinf_ep_group;
/* Normal-mode routing state of one dispatch, reused by combine and by cached
 * dispatches (opaque; upstream's `handle` tuple). */
typedef struct dinf_ep_handle dinf_ep_handle;
/* Low-latency routing state of one low_latency_dispatch, reused by
 * low_latency_combine (opaque). */
typedef struct dinf_ep_ll_handle dinf_ep_ll_handle;

/* Group configuration: capacities fixed at creation (GPU transports size
 * their symmetric buffers from them) and the timeout. Set .size =
 * sizeof(dinf_ep_config) (DINF_EP_CONFIG_INIT) so fields can be added. */
typedef struct dinf_ep_config {
    uint32_t size;               /* sizeof(dinf_ep_config) */
    int32_t max_hidden;          /* >= 1: largest hidden size H of any call */
    int64_t max_tokens_per_rank; /* >= 1: largest num_tokens any rank passes (normal mode) and
                                    largest num_max_dispatch_tokens_per_rank (low latency) */
    int32_t max_topk;            /* 1..DINF_EP_MAX_TOPK: largest num_topk of any call */
    int32_t max_num_experts;     /* >= 1: largest num_experts of any call */
    int64_t timeout_ms;          /* every wait for a peer; 0 = DINF_EP_DEFAULT_TIMEOUT_MS; < 0
                                    invalid */
    int32_t num_threads;         /* threads transport: CPU threads per rank for local work
                                    (0 = 1); other transports ignore it */
    int32_t reserved;            /* 0 */
} dinf_ep_config;

#define DINF_EP_CONFIG_INIT {sizeof(dinf_ep_config), 0, 0, 0, 0, 0, 0, 0}

/* Where a group's data lives (dinf_ep_group_info). */
typedef enum dinf_ep_memory {
    DINF_EP_MEMORY_HOST = 0,   /* host memory, calls run on the CPU (threads transport) */
    DINF_EP_MEMORY_DEVICE = 1, /* device memory of the group's CUDA device */
} dinf_ep_memory;

/* ------------------------------------------------------------------------ */
/* Groups                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * dinf_ep_group_create_threads - an in-process group of num_ranks ranks on
 * host memory; rank r is driven by groups[r], each from its own thread.
 * Arguments:
 *   num_ranks [IN]  1..DINF_EP_MAX_RANKS
 *   config    [IN]  capacities and timeout (see dinf_ep_config); not NULL
 *   groups    [OUT] caller-owned array of num_ranks pointers; on success
 *                   groups[r] is rank r's endpoint (destroy each with
 *                   dinf_ep_group_destroy); on failure every entry is NULL
 * The endpoints share state; the group's memory is freed when the last one
 * is destroyed. No symmetric buffers are allocated: ranks copy straight from
 * their peers' caller buffers during a call. Synchronous; thread-safe.
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL pointers,
 * num_ranks out of range, config fields out of range),
 * DINF_STATUS_OUT_OF_MEMORY.
 */
DINF_API dinf_status dinf_ep_group_create_threads(int32_t num_ranks, const dinf_ep_config *config,
                                                  dinf_ep_group **groups);

/*
 * dinf_ep_group_create_nccl - (GPU transport) rank ncclCommUserRank(comm) of
 * a group over an NCCL communicator the engine owns (passed as void * so
 * this header needs no nccl.h; the group does not destroy it). Counts are
 * exchanged with ncclAllGather, rows with grouped ncclSend/ncclRecv.
 * Blocking and nonblocking communicators are accepted (ncclInProgress is
 * awaited through ncclCommGetAsyncError, at most config.timeout_ms).
 * Collective over the communicator's ranks.
 * Arguments:
 *   nccl_comm [IN]  an initialised ncclComm_t of the caller
 *   device    [IN]  the communicator's CUDA device
 *   config    [IN]  as dinf_ep_group_create_threads
 *   group     [OUT] the rank's endpoint
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT,
 * DINF_STATUS_UNSUPPORTED (CPU-only build, NCCL not loadable),
 * DINF_STATUS_NCCL_ERROR, DINF_STATUS_CUDA_ERROR, DINF_STATUS_OUT_OF_MEMORY.
 */
DINF_API dinf_status dinf_ep_group_create_nccl(void *nccl_comm, int32_t device,
                                               const dinf_ep_config *config,
                                               dinf_ep_group **group);

/*
 * dinf_ep_group_create_cuda_virtual - (GPU transport) num_ranks virtual ranks
 * on ONE CUDA device inside this process, for tests and development on a
 * single GPU: each rank's buffers are slices of one allocation, peers are
 * reached through a device pointer table, and each collective step is one
 * cooperative launch covering every rank's blocks (so spin-waits between
 * ranks cannot deadlock). groups[r] is driven by its own host thread, as
 * with dinf_ep_group_create_threads.
 * Arguments: num_ranks [IN] 1..8; device [IN]; config [IN]; groups [OUT]
 * [num_ranks]. Returns as dinf_ep_group_create_nccl.
 *
 * The multi-process CUDA IPC constructor (one process per GPU, handles
 * exchanged by the caller) is declared by the GPU transport beside this one.
 */
DINF_API dinf_status dinf_ep_group_create_cuda_virtual(int32_t num_ranks, int32_t device,
                                                       const dinf_ep_config *config,
                                                       dinf_ep_group **groups);

/*
 * dinf_ep_allgather_fn - the caller's host all-gather (torch.distributed,
 * MPI, a socket...): every rank passes `bytes` bytes at `in`; `out`
 * [num_ranks][bytes] must receive rank p's bytes at p * bytes, on every rank.
 * Return 0 on success, nonzero on failure. Called from the creating thread,
 * twice per dinf_ep_group_create_cuda_ipc, on every rank (also when this
 * rank's setup failed, so that no rank is left waiting).
 */
typedef int (*dinf_ep_allgather_fn)(void *ctx, const void *in, void *out, size_t bytes);

/*
 * dinf_ep_group_create_cuda_ipc - (GPU transport) rank `rank` of num_ranks
 * processes on one node (one per GPU, or several on one GPU), peers reached
 * by direct stores into their symmetric buffers (dinf_ep_symmetric_buffer_bytes)
 * mapped with CUDA IPC. Collective over the ranks: each allocates its buffer
 * on `device`, exports a cudaIpcMemHandle_t, exchanges the handles through
 * `allgather` and opens every peer's. A rank never opens its own handle (CUDA
 * IPC handles cannot be opened in the process that owns the memory): it
 * uses its own pointer. Each collective step is one cooperative launch of
 * this rank's blocks on exec->stream; waits on peers are bounded by
 * config.timeout_ms on the device (%globaltimer, wall time) and on the host.
 * Arguments:
 *   rank, num_ranks [IN] 0 <= rank < num_ranks <= DINF_EP_MAX_RANKS
 *   device    [IN]  this rank's CUDA device
 *   config    [IN]  as dinf_ep_group_create_threads; the same on every rank
 *   allgather, ctx [IN] the caller's all-gather (see dinf_ep_allgather_fn)
 *   group     [OUT] the rank's endpoint (NULL on failure)
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (bad arguments, a
 * failed callback, another rank failed or has another config),
 * DINF_STATUS_UNSUPPORTED (CPU-only build, no usable device),
 * DINF_STATUS_CUDA_ERROR, DINF_STATUS_OUT_OF_MEMORY.
 */
DINF_API dinf_status dinf_ep_group_create_cuda_ipc(int32_t rank, int32_t num_ranks,
                                                   int32_t device, const dinf_ep_config *config,
                                                   dinf_ep_allgather_fn allgather, void *ctx,
                                                   dinf_ep_group **group);

/*
 * dinf_ep_group_destroy - release one rank's endpoint (and the shared state
 * with the last one). NULL is accepted. The rank must not be inside a call.
 * Returns DINF_STATUS_OK.
 */
DINF_API dinf_status dinf_ep_group_destroy(dinf_ep_group *group);

/*
 * dinf_ep_group_info - the endpoint's rank, the group size, where its data
 * lives (dinf_ep_memory) and its CUDA device (-1 for host groups). Any output
 * may be NULL. Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT (NULL
 * group).
 */
DINF_API dinf_status dinf_ep_group_info(const dinf_ep_group *group, int32_t *rank,
                                        int32_t *num_ranks, int32_t *memory, int32_t *device);

/*
 * dinf_ep_group_barrier - wait until every rank of the group has called it
 * (at most config.timeout_ms). Collective. Returns DINF_STATUS_OK,
 * DINF_STATUS_INVALID_ARGUMENT (NULL group; a peer made another call),
 * DINF_STATUS_TIMEOUT.
 */
DINF_API dinf_status dinf_ep_group_barrier(dinf_ep_group *group);

/*
 * dinf_ep_symmetric_buffer_bytes - the two receive-stage figures of the GPU
 * transports for config and num_ranks: normal_bytes = normal-mode receive
 * slots for num_ranks * max_tokens_per_rank tokens, low_latency_bytes = the
 * low-latency receive slots [L_max][num_ranks * T][row] with L_max =
 * max_num_experts / num_ranks (each + 4096). A step moves one kind of rows,
 * so the GPU transports allocate per rank: CUDA IPC and virtual ranks one
 * symmetric buffer of max(normal_bytes, low_latency_bytes) plus a header
 * (3 * num_ranks * 8 bytes of flags; CUDA IPC also num_ranks * max(256,
 * (num_ranks + max_num_experts) * 4) bytes of all-gather area), NCCL two
 * stages (send and receive) of max(normal_bytes, low_latency_bytes) each.
 * The threads transport allocates none.
 * Arguments: config [IN] not NULL; num_ranks [IN] 1..DINF_EP_MAX_RANKS;
 *   normal_bytes, low_latency_bytes [OUT] may be NULL.
 * Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT (bad config,
 * overflow).
 */
DINF_API dinf_status dinf_ep_symmetric_buffer_bytes(const dinf_ep_config *config,
                                                    int32_t num_ranks, size_t *normal_bytes,
                                                    size_t *low_latency_bytes);

/* ------------------------------------------------------------------------ */
/* Layout (no group: a pure function)                                        */
/* ------------------------------------------------------------------------ */

/*
 * dinf_ep_get_dispatch_layout - where each token goes (upstream
 * get_dispatch_layout).
 * Arguments:
 *   topk_idx    [IN]  int64 [num_tokens][num_topk], row-major; entries in
 *                     [-1, num_experts) (-1: no expert)
 *   num_tokens  [IN]  >= 0
 *   num_topk    [IN]  1..DINF_EP_MAX_TOPK
 *   num_experts [IN]  >= 1, a multiple of num_ranks
 *   num_ranks   [IN]  1..DINF_EP_MAX_RANKS
 *   num_tokens_per_rank   [OUT] int32 [num_ranks]: tokens with >= 1 expert on
 *                               the rank (each token counted once per rank)
 *   num_tokens_per_expert [OUT] int32 [num_experts]: selections of each expert
 *   is_token_in_rank      [OUT] uint8 [num_tokens][num_ranks], 0/1; may be
 *                               NULL (not written)
 *   exec        [IN]  NULL = CPU (every array host memory); DINF_EXEC_CUDA on a
 *                     GPU build with the GPU transport (device arrays, async)
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL pointers, sizes
 * out of range, num_experts % num_ranks != 0, an expert id outside
 * [-1, num_experts): the message names the token and slot), overlapping
 * outputs, DINF_STATUS_UNSUPPORTED.
 */
DINF_API dinf_status dinf_ep_get_dispatch_layout(const int64_t *topk_idx, int64_t num_tokens,
                                                 int32_t num_topk, int32_t num_experts,
                                                 int32_t num_ranks, int32_t *num_tokens_per_rank,
                                                 int32_t *num_tokens_per_expert,
                                                 uint8_t *is_token_in_rank, const dinf_exec *exec);

/* ------------------------------------------------------------------------ */
/* Normal mode                                                               */
/* ------------------------------------------------------------------------ */

/*
 * dinf_ep_handle_create - a normal-mode handle for group, with room for
 * config.max_tokens_per_rank source tokens and num_ranks *
 * max_tokens_per_rank received tokens (allocated here, in the group's memory
 * space; never on a hot path). Not collective. Returns DINF_STATUS_OK,
 * DINF_STATUS_INVALID_ARGUMENT, DINF_STATUS_OUT_OF_MEMORY,
 * DINF_STATUS_CUDA_ERROR.
 */
DINF_API dinf_status dinf_ep_handle_create(dinf_ep_group *group, dinf_ep_handle **handle);

/* dinf_ep_handle_destroy - free a handle; NULL accepted. Returns DINF_STATUS_OK. */
DINF_API dinf_status dinf_ep_handle_destroy(dinf_ep_handle *handle);

/*
 * dinf_ep_notify_dispatch - COLLECTIVE. Exchange the routing counts of one
 * dispatch and record the routes in handle (upstream's notify_dispatch and
 * its CPU wait for the receive counts).
 * Arguments:
 *   group       [IN]  this rank's endpoint
 *   topk_idx    [IN]  int64 [num_tokens][num_topk] (group memory), entries in
 *                     [-1, num_experts)
 *   num_tokens  [IN]  0..config.max_tokens_per_rank (may differ between ranks)
 *   num_topk    [IN]  1..config.max_topk, same on every rank
 *   num_experts [IN]  1..config.max_num_experts, a multiple of num_ranks, the same
 *                     on every rank; L = num_experts / num_ranks <=
 *                     DINF_EP_MAX_LOCAL_EXPERTS
 *   num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank
 *               [IN]  the outputs of dinf_ep_get_dispatch_layout for topk_idx
 *                     (group memory), or all three NULL (computed here); when
 *                     given they are checked against topk_idx (mismatch:
 *                     DINF_STATUS_INVALID_ARGUMENT on every rank). This is
 *                     stricter than upstream on purpose: upstream routes by
 *                     the given arrays and trusts them to match topk_idx;
 *                     here the routes always come from topk_idx. There is no
 *                     num_tokens_per_rdma_rank (one level of ranks; the
 *                     Python binding returns None for it)
 *   expert_alignment [IN] 1..2^20, the same on every rank: each
 *                     num_recv_tokens_per_expert entry is rounded up to a
 *                     multiple of it (an aligned count beyond 2^31-1 fails
 *                     the call on every rank)
 *   handle      [OUT] filled with the routes (previous contents replaced)
 *   num_recv_tokens [OUT] host int64: rows this rank will receive; may be NULL
 *   num_recv_tokens_per_expert [OUT] host int32 [L]: selections of each local
 *                     expert over all source tokens, rounded up to
 *                     expert_alignment; may be NULL
 *   exec        [IN]  the group's place (see the top)
 * Synchronous (GPU groups: synchronises exec->stream).
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (bad arguments on
 * this or another rank, mismatched calls), DINF_STATUS_TIMEOUT, and on GPU
 * groups DINF_STATUS_CUDA_ERROR / DINF_STATUS_NCCL_ERROR.
 */
DINF_API dinf_status dinf_ep_notify_dispatch(
    dinf_ep_group *group, const int64_t *topk_idx, int64_t num_tokens, int32_t num_topk,
    int32_t num_experts, const int32_t *num_tokens_per_rank, const int32_t *num_tokens_per_expert,
    const uint8_t *is_token_in_rank, int32_t expert_alignment, dinf_ep_handle *handle,
    int64_t *num_recv_tokens, int32_t *num_recv_tokens_per_expert, const dinf_exec *exec);

/*
 * dinf_ep_handle_info - what a notified handle holds (host outputs, any may
 * be NULL): num_tokens (this rank's source tokens), num_topk, num_experts,
 * num_recv_tokens, rank_prefix_matrix int32 [num_ranks][num_ranks] (entry
 * [i][j]: tokens sent to rank j by ranks 0..i, as upstream) and
 * num_recv_tokens_per_expert int32 [L] (aligned as notified). Returns
 * DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT (NULL handle, handle not
 * notified yet).
 */
DINF_API dinf_status dinf_ep_handle_info(const dinf_ep_handle *handle, int64_t *num_tokens,
                                         int32_t *num_topk, int32_t *num_experts,
                                         int64_t *num_recv_tokens, int32_t *rank_prefix_matrix,
                                         int32_t *num_recv_tokens_per_expert);

/*
 * dinf_ep_dispatch - COLLECTIVE. Move each token to the ranks that hold its
 * experts along the routes of handle (notified, or reused: cached mode).
 * Arguments (per-token arrays in group memory):
 *   group, handle [IN] the handle notified on this group
 *   x           [IN]  [num_tokens][hidden] row-major: bfloat16 bits
 *                     (x_dtype DINF_DTYPE_BFLOAT16) or e4m3 bytes
 *                     (DINF_DTYPE_FP8_E4M3, already quantized)
 *   x_dtype     [IN]  DINF_DTYPE_BFLOAT16 or DINF_DTYPE_FP8_E4M3
 *   x_scales    [IN]  float32 [num_tokens][hidden / 128] row-major, the 1x128
 *                     scales of an e4m3 x; NULL for bfloat16 x
 *   hidden      [IN]  1..config.max_hidden, same on every rank; a multiple of
 *                     128 when recv_dtype is e4m3; hidden * element size a
 *                     multiple of 16 bytes (upstream's rule)
 *   topk_idx    [IN]  int64 [num_tokens][num_topk], the notified one, or NULL
 *                     (cached mode: topk_weights, recv_topk_idx and
 *                     recv_topk_weights must all be NULL); NULL or not the same
 *                     on every rank
 *   topk_weights [IN] float32 [num_tokens][num_topk] or NULL (then
 *                     recv_topk_weights must be NULL); needs topk_idx; NULL or
 *                     not the same on every rank
 *   recv_dtype  [IN]  DINF_DTYPE_BFLOAT16 (x bfloat16, rows copied bitwise) or
 *                     DINF_DTYPE_FP8_E4M3 (x bfloat16: quantized on the send
 *                     side per token and 128 channels exactly as
 *                     dinf_fp8_quantize(block_rows = 1); x e4m3: rows and
 *                     scales copied bitwise)
 *   recv_x      [OUT] [recv_capacity][hidden] of recv_dtype; rows
 *                     [0, num_recv_tokens) written in the order of the top
 *   recv_x_scales [OUT] float32 [recv_capacity][hidden / 128] for e4m3, NULL
 *                     for bfloat16
 *   recv_topk_idx [OUT] int64 [recv_capacity][num_topk]: local expert ids or
 *                     -1; required with topk_idx, NULL in cached mode
 *   recv_topk_weights [OUT] float32 [recv_capacity][num_topk], 0 where
 *                     recv_topk_idx is -1; required with topk_weights, else NULL
 *   recv_src_idx [OUT] int32 [recv_capacity]: each received row's token index
 *                     on its source rank; NULL when not wanted
 *   recv_capacity [IN] rows of the receive buffers; must be >= this rank's
 *                     num_recv_tokens (else every rank fails with
 *                     DINF_STATUS_INVALID_ARGUMENT naming this rank)
 *   exec        [IN]  the group's place
 * All outputs are caller-owned and must not overlap the inputs. Synchronous
 * on the threads transport; GPU groups enqueue on exec->stream.
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT, DINF_STATUS_TIMEOUT,
 * DINF_STATUS_CUDA_ERROR, DINF_STATUS_NCCL_ERROR.
 */
DINF_API dinf_status dinf_ep_dispatch(dinf_ep_group *group, const dinf_ep_handle *handle,
                                      const void *x, dinf_dtype x_dtype, const float *x_scales,
                                      int32_t hidden, const int64_t *topk_idx,
                                      const float *topk_weights, dinf_dtype recv_dtype,
                                      void *recv_x, float *recv_x_scales, int64_t *recv_topk_idx,
                                      float *recv_topk_weights, int32_t *recv_src_idx,
                                      int64_t recv_capacity, const dinf_exec *exec);

/*
 * dinf_ep_combine - COLLECTIVE. Send every received row back to its source
 * rank and sum each token's rows in float32, ranks ascending (see the top).
 * Arguments (group memory):
 *   group, handle [IN] the handle of the dispatch being reversed
 *   x           [IN]  bfloat16 [num_recv_tokens][hidden]: one row per received
 *                     token, in the dispatch's receive order
 *   hidden      [IN]  1..config.max_hidden, same on every rank; hidden * 2
 *                     bytes a multiple of 16 (upstream's rule; else every
 *                     rank fails with DINF_STATUS_INVALID_ARGUMENT)
 *   topk_weights [IN] float32 [num_recv_tokens][num_topk] or NULL
 *   bias0, bias1 [IN] bfloat16 [num_tokens][hidden] or NULL: the sum starts at
 *                     float(bias0) + float(bias1), before the ranks' rows
 *   combined_x  [OUT] bfloat16 [num_tokens][hidden]; a token sent nowhere gets
 *                     bias0 + bias1 (0 without biases)
 *   combined_topk_weights [OUT] float32 [num_tokens][num_topk], the sum over
 *                     ranks of the returned weights; given exactly when
 *                     topk_weights is (and then on every rank)
 *   exec        [IN]  the group's place
 * Returns as dinf_ep_dispatch.
 */
DINF_API dinf_status dinf_ep_combine(dinf_ep_group *group, const dinf_ep_handle *handle,
                                     const uint16_t *x, int32_t hidden, const float *topk_weights,
                                     const uint16_t *bias0, const uint16_t *bias1,
                                     uint16_t *combined_x, float *combined_topk_weights,
                                     const dinf_exec *exec);

/* ------------------------------------------------------------------------ */
/* Low-latency mode                                                          */
/* ------------------------------------------------------------------------ */

/*
 * dinf_ep_ll_handle_create - a low-latency handle for group (room for
 * config.max_num_experts / num_ranks local experts x num_ranks x
 * config.max_tokens_per_rank rows). Not collective. Returns as
 * dinf_ep_handle_create.
 */
DINF_API dinf_status dinf_ep_ll_handle_create(dinf_ep_group *group, dinf_ep_ll_handle **handle);

/* dinf_ep_ll_handle_destroy - free a handle; NULL accepted. Returns DINF_STATUS_OK. */
DINF_API dinf_status dinf_ep_ll_handle_destroy(dinf_ep_ll_handle *handle);

/*
 * dinf_ep_ll_scale_rows - the padded row count of the low-latency FP8 scale
 * layout: ceil(num_ranks * num_max_dispatch_tokens_per_rank / 4) * 4 (the
 * aligned_m of dinf_fp8_scale_layout_mn_major for m = num_ranks * T).
 * Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT (out of range, NULL).
 */
DINF_API dinf_status dinf_ep_ll_scale_rows(int32_t num_ranks,
                                           int64_t num_max_dispatch_tokens_per_rank,
                                           int64_t *rows);

/*
 * dinf_ep_low_latency_dispatch - COLLECTIVE. One row per (token, selected
 * expert) into the masked per-expert layout (see the top).
 * Arguments (per-token arrays in group memory), T = num_max_dispatch_tokens_per_rank,
 * M = num_ranks * T, L = num_experts / num_ranks:
 *   x           [IN]  bfloat16 [num_tokens][hidden]
 *   num_tokens  [IN]  0..T (may differ between ranks)
 *   hidden      [IN]  a multiple of 128, <= config.max_hidden, same on every rank
 *   topk_idx    [IN]  int64 [num_tokens][num_topk], entries in [-1, num_experts)
 *   num_topk    [IN]  1..config.max_topk (may differ between ranks)
 *   num_experts [IN]  multiple of num_ranks, <= config.max_num_experts, same on every rank
 *   num_max_dispatch_tokens_per_rank [IN] T: 1..config.max_tokens_per_rank,
 *                     the same on every rank (upstream issue #208)
 *   use_fp8     [IN]  0: recv_x is bfloat16; 1: e4m3 with scales (1x128, the
 *                     bits of dinf_fp8_quantize)
 *   recv_x      [OUT] [L][M][hidden] bfloat16 or e4m3; rows of expert l past
 *                     recv_count[l] are not written
 *   recv_x_scales [OUT] float32 [L][hidden / 128][ceil(M / 4) * 4] (use_fp8):
 *                     each expert's scales M-major, exactly the a_scales of
 *                     dinf_fp8_m_grouped_gemm_nt_masked with m_max = M; rows
 *                     past recv_count[l] (and the padding) are not written.
 *                     NULL when use_fp8 == 0
 *   recv_count  [OUT] int32 [L]: valid rows per local expert (group memory)
 *   recv_src_info [OUT] int32 [L][M]: the source token index of each valid row;
 *                     may be NULL
 *   recv_layout_range [OUT] int64 [L][num_ranks]: (begin << 32) | count of the
 *                     rows that came from each source rank; may be NULL
 *   handle      [OUT] what low_latency_combine needs
 *   exec        [IN]  the group's place
 * Returns as dinf_ep_dispatch (INVALID_ARGUMENT also for num_tokens > T or a
 * T that differs between ranks).
 */
DINF_API dinf_status dinf_ep_low_latency_dispatch(
    dinf_ep_group *group, const uint16_t *x, int64_t num_tokens, int32_t hidden,
    const int64_t *topk_idx, int32_t num_topk, int32_t num_experts,
    int64_t num_max_dispatch_tokens_per_rank, int32_t use_fp8, void *recv_x,
    float *recv_x_scales, int32_t *recv_count, int32_t *recv_src_info,
    int64_t *recv_layout_range, dinf_ep_ll_handle *handle, const dinf_exec *exec);

/*
 * dinf_ep_low_latency_combine - COLLECTIVE. Return the expert outputs to the
 * source ranks and reduce them with the top-k weights (see the top).
 * Arguments (group memory):
 *   x           [IN]  bfloat16 [L][M][hidden]: expert outputs in the layout of
 *                     the dispatch (only rows < recv_count[l] are read)
 *   hidden      [IN]  as the dispatch
 *   topk_idx    [IN]  int64 [num_tokens][num_topk]: the same as the dispatch's
 *                     (checked: its per-expert counts must match)
 *   topk_weights [IN] float32 [num_tokens][num_topk]
 *   num_tokens, num_topk [IN] as the dispatch
 *   handle      [IN]  the dispatch's handle
 *   combined_x  [OUT] bfloat16 [num_tokens][hidden]; a token with no expert
 *                     gets 0
 *   exec        [IN]  the group's place
 * Returns as dinf_ep_dispatch.
 */
DINF_API dinf_status dinf_ep_low_latency_combine(dinf_ep_group *group, const uint16_t *x,
                                                 int32_t hidden, const int64_t *topk_idx,
                                                 const float *topk_weights, int64_t num_tokens,
                                                 int32_t num_topk,
                                                 const dinf_ep_ll_handle *handle,
                                                 uint16_t *combined_x, const dinf_exec *exec);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DEEPINFRA_EP_H */
