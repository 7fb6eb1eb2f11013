/*
 * The GPU transports of ep (ep_transport.h), on device memory:
 *
 *   cuda-virtual  num_ranks ranks inside this process on ONE device (tests and
 *                 development on a single GPU). Each rank's symmetric buffer
 *                 is a slice of one cudaMalloc; the ranks' host threads meet
 *                 at every step (bounded wait), and the last one to arrive
 *                 enqueues ONE cooperative launch covering every rank's
 *                 blocks (rank = blockIdx.x / blocks_per_rank), ordered after
 *                 every rank's stream (events) and before their next work.
 *   cuda-ipc      one process per rank (any GPUs of one node, or several
 *                 processes on one GPU): symmetric buffers exchanged as CUDA
 *                 IPC handles through the caller's all-gather callback at
 *                 creation; a rank never opens its own handle (CUDA does not
 *                 allow it in the owning process): it uses its raw pointer.
 *                 Each step is one cooperative launch of this rank's blocks.
 *   nccl          one rank per ncclComm_t rank (across GPUs and nodes): counts
 *                 with ncclAllGather, rows packed into a send stage, moved with
 *                 grouped ncclSend/ncclRecv, unpacked or reduced from a
 *                 receive stage. NCCL is loaded at run time (ep_nccl.h).
 *
 * The two peer-store transports share the step kernel and its protocol
 * (lib/ep/ep_peer_hd.h): stores into the destination's stage, release/acquire
 * system-scope flags, %globaltimer-bounded waits with an error record in
 * host-mapped memory. Host waits (stream completion, peers at a rendezvous)
 * are bounded by config.timeout_ms. A timeout or a device error breaks the
 * endpoint: later collective ops fail at once with the recorded message.
 *
 * Ordering: a group's calls on one rank must be ordered on the device (one
 * stream, or streams the caller orders): step k + 1 reuses the buffers of
 * step k. Descriptors travel through a ring of pinned host slots copied to
 * device slots, each guarded by an event.
 */
#define _GNU_SOURCE
#include "ep_cuda.h"
#include "ep_nccl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Argument checks shared by the CPU-only build and the CUDA build            */
/* ------------------------------------------------------------------------ */

static dinf_status check_virtual_args(const char *func, int32_t num_ranks, int32_t device,
                                      const dinf_ep_config *config, dinf_ep_group **groups,
                                      dinf_ep_config *cfg) {
    if (!groups)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "groups is NULL");
    if (num_ranks < 1 || num_ranks > 8)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "num_ranks=%d must be in [1, 8]",
                          (int)num_ranks);
    for (int32_t r = 0; r < num_ranks; r++)
        groups[r] = NULL;
    if (device < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "device=%d is negative", (int)device);
    return dinf__ep_config_check(func, config, cfg);
}

static dinf_status check_nccl_args(const char *func, void *nccl_comm, int32_t device,
                                   const dinf_ep_config *config, dinf_ep_group **group,
                                   dinf_ep_config *cfg) {
    if (!group)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "group is NULL");
    *group = NULL;
    if (!nccl_comm)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "nccl_comm is NULL");
    if (device < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "device=%d is negative", (int)device);
    return dinf__ep_config_check(func, config, cfg);
}

static dinf_status check_ipc_args(const char *func, int32_t rank, int32_t num_ranks,
                                  int32_t device, const dinf_ep_config *config,
                                  dinf_ep_allgather_fn allgather, dinf_ep_group **group,
                                  dinf_ep_config *cfg) {
    if (!group)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "group is NULL");
    *group = NULL;
    if (num_ranks < 1 || num_ranks > DINF_EP_MAX_RANKS)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "num_ranks=%d must be in [1, %d]",
                          (int)num_ranks, DINF_EP_MAX_RANKS);
    if (rank < 0 || rank >= num_ranks)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "rank=%d must be in [0, %d)",
                          (int)rank, (int)num_ranks);
    if (device < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "device=%d is negative", (int)device);
    if (!allgather)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "allgather is NULL");
    return dinf__ep_config_check(func, config, cfg);
}

#if !DINF_WITH_CUDA

DINF_API dinf_status dinf_ep_group_create_cuda_virtual(int32_t num_ranks, int32_t device,
                                                       const dinf_ep_config *config,
                                                       dinf_ep_group **groups) {
    dinf_ep_config cfg;
    dinf_status st = check_virtual_args(__func__, num_ranks, device, config, groups, &cfg);
    if (st != DINF_STATUS_OK)
        return st;
    return DINF_FAIL(DINF_STATUS_UNSUPPORTED,
                     "libdeepinfra was built without CUDA (make CUDA=0): no GPU transports");
}

DINF_API dinf_status dinf_ep_group_create_nccl(void *nccl_comm, int32_t device,
                                               const dinf_ep_config *config,
                                               dinf_ep_group **group) {
    dinf_ep_config cfg;
    dinf_status st = check_nccl_args(__func__, nccl_comm, device, config, group, &cfg);
    if (st != DINF_STATUS_OK)
        return st;
    return DINF_FAIL(DINF_STATUS_UNSUPPORTED,
                     "libdeepinfra was built without CUDA (make CUDA=0): no GPU transports");
}

DINF_API dinf_status dinf_ep_group_create_cuda_ipc(int32_t rank, int32_t num_ranks,
                                                   int32_t device, const dinf_ep_config *config,
                                                   dinf_ep_allgather_fn allgather, void *ctx,
                                                   dinf_ep_group **group) {
    (void)ctx;
    dinf_ep_config cfg;
    dinf_status st =
        check_ipc_args(__func__, rank, num_ranks, device, config, allgather, group, &cfg);
    if (st != DINF_STATUS_OK)
        return st;
    return DINF_FAIL(DINF_STATUS_UNSUPPORTED,
                     "libdeepinfra was built without CUDA (make CUDA=0): no GPU transports");
}

#else /* DINF_WITH_CUDA */

#include <cuda_runtime_api.h>
#include "../core/cuda_ctx.h"
#include <errno.h>
#include <pthread.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* CUDA helpers                                                               */
/* ------------------------------------------------------------------------ */

/* The context-exact device guard (lib/core/cuda_ctx.h). */
typedef dinf__cuda_guard dev_guard;

static cudaError_t guard_enter(dev_guard *g, int device) { return dinf__cuda_guard_enter(g, device); }

static void guard_leave(dev_guard *g) { dinf__cuda_guard_leave(g); }

static dinf_status cuda_fail(const char *func, const char *what, int device, cudaError_t err) {
    cudaGetLastError(); /* clear a sticky-free error so later calls are not blamed */
    return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "%s on CUDA device %d failed: %s (%s)", what,
                      device, cudaGetErrorString(err), cudaGetErrorName(err));
}

static dinf_status require_device(const char *func, int32_t device) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    if (dinf_device_query(device, &info) != DINF_STATUS_OK)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "CUDA device %d cannot be queried",
                          (int)device);
    if (!info.usable)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "no usable CUDA device %d: %s",
                          (int)device, info.reason);
    return DINF_STATUS_OK;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap(void) {
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
}

/* Poll stream until idle, at most timeout_ms (never a blocking sync: a
 * step waiting for an absent peer must not freeze the host). */
static dinf_status wait_stream(const char *func, cudaStream_t stream, int device,
                               int64_t timeout_ms, const char *what) {
    const int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        cudaError_t err = cudaStreamQuery(stream);
        if (err == cudaSuccess)
            return DINF_STATUS_OK;
        if (err != cudaErrorNotReady)
            return cuda_fail(func, what, device, err);
        if (now_ms() > deadline)
            return dinf__fail(DINF_STATUS_TIMEOUT, func,
                              "%s on CUDA device %d did not finish within %lld ms", what,
                              device, (long long)timeout_ms);
        nap();
    }
}

static dinf_status wait_event(const char *func, cudaEvent_t ev, int device, int64_t timeout_ms,
                              const char *what) {
    const int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        cudaError_t err = cudaEventQuery(ev);
        if (err == cudaSuccess)
            return DINF_STATUS_OK;
        if (err != cudaErrorNotReady)
            return cuda_fail(func, what, device, err);
        if (now_ms() > deadline)
            return dinf__fail(DINF_STATUS_TIMEOUT, func,
                              "%s on CUDA device %d did not finish within %lld ms", what,
                              device, (long long)timeout_ms);
        nap();
    }
}

/* Copy the calling thread's last error message into buf. */
static void keep_message(char *buf) {
    snprintf(buf, DINF_ERROR_MESSAGE_MAX, "%s", dinf_last_error());
}

/* ---- descriptor ring: pinned host slots -> device slots, one event each ---- */

#define RING_SLOTS 8

typedef struct ring {
    char *host, *dev;
    size_t slot_bytes;
    int32_t next;
    int32_t used[RING_SLOTS];
    cudaEvent_t events[RING_SLOTS];
} ring;

static void ring_free(ring *r) {
    for (int i = 0; i < RING_SLOTS; i++)
        if (r->events[i])
            cudaEventDestroy(r->events[i]);
    if (r->host)
        cudaFreeHost(r->host);
    if (r->dev)
        cudaFree(r->dev);
    memset(r, 0, sizeof *r);
}

static dinf_status ring_init(const char *func, ring *r, size_t slot_bytes, int device) {
    memset(r, 0, sizeof *r);
    r->slot_bytes = (slot_bytes + 255) / 256 * 256;
    cudaError_t err = cudaHostAlloc((void **)&r->host, r->slot_bytes * RING_SLOTS,
                                    cudaHostAllocDefault);
    if (err == cudaSuccess)
        err = cudaMalloc((void **)&r->dev, r->slot_bytes * RING_SLOTS);
    for (int i = 0; i < RING_SLOTS && err == cudaSuccess; i++)
        err = cudaEventCreateWithFlags(&r->events[i], cudaEventDisableTiming);
    if (err != cudaSuccess) {
        ring_free(r);
        return cuda_fail(func, "allocating the EP descriptor ring", device, err);
    }
    return DINF_STATUS_OK;
}

/* The next slot, once the kernel that used it last has finished. */
static dinf_status ring_take(const char *func, ring *r, int device, int64_t timeout_ms,
                             int32_t *slot, char **host, char **dev) {
    const int32_t s = r->next;
    if (r->used[s]) {
        dinf_status st = wait_event(func, r->events[s], device, timeout_ms,
                                    "an earlier EP step (descriptor slot reuse)");
        if (st != DINF_STATUS_OK)
            return st;
    }
    r->next = (s + 1) % RING_SLOTS;
    *slot = s;
    *host = r->host + (size_t)s * r->slot_bytes;
    *dev = r->dev + (size_t)s * r->slot_bytes;
    return DINF_STATUS_OK;
}

static dinf_status ring_upload(const char *func, ring *r, int32_t slot, size_t bytes,
                               cudaStream_t stream, int device) {
    cudaError_t err = cudaMemcpyAsync(r->dev + (size_t)slot * r->slot_bytes,
                                      r->host + (size_t)slot * r->slot_bytes, bytes,
                                      cudaMemcpyHostToDevice, stream);
    return err == cudaSuccess ? DINF_STATUS_OK
                              : cuda_fail(func, "uploading an EP step descriptor", device, err);
}

static dinf_status ring_release(const char *func, ring *r, int32_t slot, cudaStream_t stream,
                                int device) {
    cudaError_t err = cudaEventRecord(r->events[slot], stream);
    if (err != cudaSuccess)
        return cuda_fail(func, "recording an EP step event", device, err);
    r->used[slot] = 1;
    return DINF_STATUS_OK;
}

/* Bytes of one step descriptor with its two offset arrays. */
static size_t step_blob_bytes(int32_t R) {
    return (sizeof(dinf__ep_step) + 15) / 16 * 16 + 2 * ((size_t)R + 1) * 8;
}

/* Write step s (with host offsets) into a blob at host / dev addresses:
 * the offsets follow the struct; the struct's pointers name the device copy. */
static void step_to_blob(const dinf__ep_step *s, const int64_t *send_offsets,
                         const int64_t *recv_offsets, int32_t R, char *host, char *dev) {
    const size_t head = (sizeof(dinf__ep_step) + 15) / 16 * 16;
    const size_t arr = ((size_t)R + 1) * 8;
    dinf__ep_step copy = *s;
    copy.send_offsets = (const int64_t *)(dev + head);
    copy.recv_offsets = (const int64_t *)(dev + head + arr);
    memcpy(host, &copy, sizeof copy);
    if (send_offsets)
        memcpy(host + head, send_offsets, arr);
    else
        memset(host + head, 0, arr);
    if (recv_offsets)
        memcpy(host + head + arr, recv_offsets, arr);
    else
        memset(host + head + arr, 0, arr);
}

/* ---- what GPU transports share ---- */

static void *gpu_alloc(dinf__ep_transport *t, const char *func, size_t bytes) {
    dev_guard g;
    void *p = NULL;
    cudaError_t err = guard_enter(&g, t->device);
    if (err == cudaSuccess)
        err = cudaMalloc(&p, bytes ? bytes : 1);
    guard_leave(&g);
    if (err != cudaSuccess) {
        cudaGetLastError();
        dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func,
                   "could not allocate %zu bytes on CUDA device %d: %s", bytes, (int)t->device,
                   cudaGetErrorString(err));
        return NULL;
    }
    return p;
}

static void gpu_free(dinf__ep_transport *t, void *ptr) {
    if (!ptr)
        return;
    dev_guard g;
    if (guard_enter(&g, t->device) == cudaSuccess)
        cudaFree(ptr);
    guard_leave(&g);
}

static dinf_status gpu_copy(dinf__ep_transport *t, const char *func, void *dst, const void *src,
                            size_t bytes, int kind, const dinf__place *place) {
    if (!bytes)
        return DINF_STATUS_OK;
    dev_guard g;
    cudaError_t err = guard_enter(&g, t->device);
    cudaStream_t stream = (cudaStream_t)place->stream;
    dinf_status st = DINF_STATUS_OK;
    if (err == cudaSuccess && kind == 1) {
        /* the host reads the result: wait (bounded) for the stream first, so
         * that the synchronous pageable copy cannot block on a stuck step */
        st = wait_stream(func, stream, t->device, t->timeout_ms, "the EP stream");
        if (st == DINF_STATUS_OK)
            err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream);
        if (st == DINF_STATUS_OK && err == cudaSuccess)
            err = cudaStreamSynchronize(stream);
    } else if (err == cudaSuccess) {
        err = cudaMemcpyAsync(dst, src, bytes, kind == 0 ? cudaMemcpyHostToDevice
                                                         : cudaMemcpyDeviceToDevice,
                              stream);
    }
    guard_leave(&g);
    if (st != DINF_STATUS_OK)
        return st;
    return err == cudaSuccess ? DINF_STATUS_OK : cuda_fail(func, "an EP copy", t->device, err);
}

static dinf_status gpu_common_init(const char *func, dinf__ep_gpu *g,
                                   const dinf__ep_transport_ops *ops, int32_t rank, int32_t R,
                                   int32_t device, const dinf_ep_config *cfg) {
    g->base = (dinf__ep_transport){ops, rank, R, DINF_EP_MEMORY_DEVICE, device, cfg->timeout_ms};
    g->max_experts = cfg->max_num_experts;
    g->scratch_bytes = dinf__ep_gpu_scratch_bytes(R, cfg->max_num_experts);
    cudaError_t err = cudaMalloc(&g->scratch, g->scratch_bytes);
    if (err != cudaSuccess) {
        g->scratch = NULL;
        return cuda_fail(func, "allocating the EP planner scratch", device, err);
    }
    return DINF_STATUS_OK;
}

static void gpu_common_free(dinf__ep_gpu *g) {
    if (g->scratch)
        cudaFree(g->scratch);
    g->scratch = NULL;
}

/* Stage bytes per rank: the larger of the two symmetric figures (a step
 * moves either normal-mode records or low-latency messages, never both). */
static dinf_status stage_bytes_for(const char *func, const dinf_ep_config *cfg, int32_t R,
                                   int64_t *bytes) {
    size_t normal = 0, ll = 0;
    dinf_status st = dinf_ep_symmetric_buffer_bytes(cfg, R, &normal, &ll);
    if (st != DINF_STATUS_OK)
        return st;
    const size_t b = normal > ll ? normal : ll;
    if (b > (size_t)INT64_MAX / 4)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "the EP buffers for this config are too large (%zu bytes)", b);
    *bytes = (int64_t)b;
    return DINF_STATUS_OK;
}

/* Gather bytes per rank: the largest all-gather the protocol makes. */
static int64_t gather_bytes_for(const dinf_ep_config *cfg, int32_t R) {
    const int64_t counts = ((int64_t)R + cfg->max_num_experts) * 4;
    return counts > 256 ? counts : 256;
}

/* The message for a device-side error record {code, peer, step}. */
static dinf_status device_error(const char *func, int32_t rank, const int32_t *rec,
                                int64_t timeout_ms) {
    switch (rec[0]) {
    case DINF__EP_PEER_TIMEOUT_READY:
        return dinf__fail(DINF_STATUS_TIMEOUT, func,
                          "rank %d waited %lld ms on the device for rank %d to enter step %d "
                          "(a rank skipped or reordered a collective call, or died)",
                          (int)rank, (long long)timeout_ms, (int)rec[1], (int)rec[2]);
    case DINF__EP_PEER_TIMEOUT_ARRIVE:
        return dinf__fail(DINF_STATUS_TIMEOUT, func,
                          "rank %d waited %lld ms on the device for rank %d's rows of step %d",
                          (int)rank, (long long)timeout_ms, (int)rec[1], (int)rec[2]);
    case DINF__EP_PEER_BAD_COUNT:
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "rank %d received another row count or row size from rank %d than it "
                          "expected at step %d",
                          (int)rank, (int)rec[1], (int)rec[2]);
    case DINF__EP_PEER_BAD_TERM:
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "a combine term on rank %d names a row outside its source's segment",
                          (int)rank);
    case DINF__EP_PEER_OVERFLOW:
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "rank %d's rows of step %d do not fit the symmetric buffer", (int)rank,
                          (int)rec[2]);
    default:
        return dinf__fail(DINF_STATUS_INTERNAL, func, "rank %d: unknown device error %d",
                          (int)rank, (int)rec[0]);
    }
}

/* Host-mapped error records [count][4]. */
static dinf_status error_records(const char *func, int32_t count, int device, int32_t **host,
                                 int32_t **dev) {
    cudaError_t err = cudaHostAlloc((void **)host, (size_t)count * 16, cudaHostAllocMapped);
    if (err == cudaSuccess) {
        memset(*host, 0, (size_t)count * 16);
        err = cudaHostGetDevicePointer((void **)dev, *host, 0);
    }
    if (err != cudaSuccess) {
        if (*host)
            cudaFreeHost(*host);
        *host = NULL;
        return cuda_fail(func, "allocating the EP error records", device, err);
    }
    return DINF_STATUS_OK;
}

/* Blocks per rank that num_steps ranks' blocks can share one cooperative launch with. */
static dinf_status pick_blocks(const char *func, int device, int32_t ranks_in_launch,
                               int32_t *bpr) {
    int coop = 0;
    cudaError_t err = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device);
    if (err != cudaSuccess)
        return cuda_fail(func, "querying cooperative launch support", device, err);
    if (!coop)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "CUDA device %d does not support cooperative launches", device);
    int64_t capacity = 0;
    dinf_status st = dinf__ep_cuda_peer_capacity(func, device, &capacity);
    if (st != DINF_STATUS_OK)
        return st;
    *bpr = dinf__ep_blocks_per_rank(capacity, ranks_in_launch);
    if (*bpr < 1)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "CUDA device %d holds %lld EP step blocks at once, fewer than the %d "
                          "ranks of one launch",
                          device, (long long)capacity, (int)ranks_in_launch);
    return DINF_STATUS_OK;
}

/* Host checks of a step against every rank's published offsets (virtual
 * transport: the leader sees them all). */
typedef struct vpub {
    int32_t tag; /* which transport op: 1 all-gather, 2 data step, 3 barrier */
    dinf__ep_step step;
    const int64_t *send_offsets, *recv_offsets; /* host [R + 1] */
    cudaStream_t stream;
    const void *gather; /* allgather: host bytes */
} vpub;

/* ------------------------------------------------------------------------ */
/* Virtual ranks                                                              */
/* ------------------------------------------------------------------------ */

typedef struct vhub {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int32_t num_ranks, refs, device;
    int64_t timeout_ms;
    uint64_t generation;
    int32_t arrived;
    const char *func;
    int32_t func_rank, tag;
    uint8_t *present;
    int32_t broken;
    dinf_status broken_status;
    char broken_message[DINF_ERROR_MESSAGE_MAX];
    const vpub **slots;
    /* the leader's action of the last generation */
    dinf_status action_status;
    char action_message[DINF_ERROR_MESSAGE_MAX];
    /* device */
    dinf__ep_peer_layout layout;
    char *buffer;
    char **peers_dev;
    int32_t *errors, *errors_dev; /* host-mapped [R][4] */
    cudaEvent_t *rank_events;
    cudaEvent_t done;
    ring ring;
    uint64_t step;
    int32_t blocks_per_rank;
    int64_t timeout_ns;
} vhub;

typedef struct virtual_transport {
    dinf__ep_gpu gpu; /* first */
    vhub *hub;
} virtual_transport;

static vhub *vhub_of(dinf__ep_transport *t) { return ((virtual_transport *)t)->hub; }

static void vbreak(vhub *h, dinf_status status, const char *message) {
    if (h->broken)
        return;
    h->broken = 1;
    h->broken_status = status;
    snprintf(h->broken_message, sizeof h->broken_message, "%s", message);
    pthread_cond_broadcast(&h->cond);
}

static dinf_status vfail_broken(vhub *h, const char *func) {
    return dinf__fail(h->broken_status, func, "the EP group is broken: %s", h->broken_message);
}

typedef dinf_status (*vaction)(vhub *h, const char *func, dinf__ep_transport *t);

/*
 * Rendezvous of every rank (bounded by timeout_ms). The last rank to arrive
 * runs action (under the mutex) and every rank returns its result.
 */
static dinf_status vbarrier(dinf__ep_transport *t, const char *func, const vpub *mine,
                            vaction action) {
    vhub *h = vhub_of(t);
    const int32_t rank = t->rank;
    pthread_mutex_lock(&h->mutex);
    if (h->broken) {
        dinf_status st = vfail_broken(h, func);
        pthread_mutex_unlock(&h->mutex);
        return st;
    }
    if (h->arrived == 0) {
        h->func = func;
        h->func_rank = rank;
        h->tag = mine->tag;
    } else if (strcmp(h->func, func) != 0 || h->tag != mine->tag) {
        char message[DINF_ERROR_MESSAGE_MAX];
        snprintf(message, sizeof message,
                 "mismatched collective calls: rank %d called %s (transport step %d) while rank "
                 "%d called %s (transport step %d)",
                 (int)h->func_rank, h->func, (int)h->tag, (int)rank, func, (int)mine->tag);
        vbreak(h, DINF_STATUS_INVALID_ARGUMENT, message);
        dinf_status st = vfail_broken(h, func);
        pthread_mutex_unlock(&h->mutex);
        return st;
    }
    const uint64_t my_generation = h->generation;
    h->present[rank] = 1;
    h->slots[rank] = mine;
    if (++h->arrived == h->num_ranks) {
        h->action_status = DINF_STATUS_OK;
        if (action) {
            h->action_status = action(h, func, t);
            if (h->action_status != DINF_STATUS_OK)
                keep_message(h->action_message);
        }
        h->arrived = 0;
        memset(h->present, 0, (size_t)h->num_ranks);
        h->generation++;
        pthread_cond_broadcast(&h->cond);
    } else {
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += (time_t)(t->timeout_ms / 1000);
        deadline.tv_nsec += (long)(t->timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        while (h->generation == my_generation && !h->broken) {
            if (pthread_cond_timedwait(&h->cond, &h->mutex, &deadline) == ETIMEDOUT &&
                h->generation == my_generation && !h->broken) {
                char missing[256] = "", message[DINF_ERROR_MESSAGE_MAX];
                size_t used = 0;
                int listed = 0;
                for (int32_t r = 0; r < h->num_ranks && used + 16 < sizeof missing; r++)
                    if (!h->present[r])
                        used += (size_t)snprintf(missing + used, sizeof missing - used, "%s%d",
                                                 listed++ ? ", " : "", (int)r);
                snprintf(message, sizeof message,
                         "%s on rank %d waited %lld ms for ranks [%s], which did not reach the "
                         "same step (a rank skipped or reordered a collective call, or died)",
                         func, (int)rank, (long long)t->timeout_ms, missing);
                vbreak(h, DINF_STATUS_TIMEOUT, message);
            }
        }
        if (h->generation == my_generation) {
            dinf_status st = vfail_broken(h, func);
            pthread_mutex_unlock(&h->mutex);
            return st;
        }
    }
    dinf_status st = h->action_status;
    if (st != DINF_STATUS_OK) /* the leader's message, already prefixed with func */
        dinf__restore_error(h->action_message);
    pthread_mutex_unlock(&h->mutex);
    return st;
}

/* Device errors recorded by earlier steps (call after this rank's stream is idle). */
static dinf_status vcheck_errors(dinf__ep_transport *t, const char *func) {
    vhub *h = vhub_of(t);
    for (int32_t r = 0; r < h->num_ranks; r++) {
        const volatile int32_t *rec = h->errors + 4 * r;
        if (rec[0] != 0) {
            int32_t copy[4] = {rec[0], rec[1], rec[2], rec[3]};
            dinf_status st = device_error(func, r, copy, t->timeout_ms);
            char message[DINF_ERROR_MESSAGE_MAX];
            keep_message(message);
            pthread_mutex_lock(&h->mutex);
            vbreak(h, st, message);
            pthread_mutex_unlock(&h->mutex);
            return st;
        }
    }
    return DINF_STATUS_OK;
}

static dinf_status v_allgather(dinf__ep_transport *t, const char *func, const void *in, void *out,
                               size_t bytes, const dinf__place *place) {
    /* the protocol reads host results right after: finish the device work
     * first (bounded) and surface what it recorded */
    dev_guard g;
    cudaError_t err = guard_enter(&g, t->device);
    dinf_status st = err != cudaSuccess
                         ? cuda_fail(func, "making the device current", t->device, err)
                         : wait_stream(func, (cudaStream_t)place->stream, t->device,
                                       t->timeout_ms, "the EP stream");
    guard_leave(&g);
    if (st == DINF_STATUS_OK)
        st = vcheck_errors(t, func);
    if (st != DINF_STATUS_OK) {
        char message[DINF_ERROR_MESSAGE_MAX];
        keep_message(message);
        vhub *h = vhub_of(t);
        pthread_mutex_lock(&h->mutex);
        vbreak(h, st, message);
        pthread_mutex_unlock(&h->mutex);
        return st;
    }
    vpub mine;
    memset(&mine, 0, sizeof mine);
    mine.tag = 1;
    mine.gather = in;
    st = vbarrier(t, func, &mine, NULL);
    if (st != DINF_STATUS_OK)
        return st;
    vhub *h = vhub_of(t);
    for (int32_t r = 0; r < t->num_ranks; r++)
        memcpy((char *)out + (size_t)r * bytes, h->slots[r]->gather, bytes);
    /* nobody leaves before everyone has read */
    return vbarrier(t, func, &mine, NULL);
}

static dinf_status v_barrier(dinf__ep_transport *t, const char *func, const dinf__place *place) {
    (void)place;
    vpub mine;
    memset(&mine, 0, sizeof mine);
    mine.tag = 3;
    return vbarrier(t, func, &mine, NULL);
}

/* The leader's action of a data step: check every rank's counts, then one
 * cooperative launch for all ranks, ordered after every rank's stream. */
static dinf_status v_launch_step(vhub *h, const char *func, dinf__ep_transport *leader) {
    const int32_t R = h->num_ranks;
    const vpub *const *pub = h->slots;
    for (int32_t p = 0; p < R; p++) {
        if (pub[p]->step.row_bytes != pub[0]->step.row_bytes ||
            pub[p]->step.num_fields != pub[0]->step.num_fields)
            return dinf__fail(DINF_STATUS_INTERNAL, func,
                              "rank %d moves %lld-byte rows (%d fields), rank 0 %lld-byte rows "
                              "(%d fields)",
                              (int)p, (long long)pub[p]->step.row_bytes,
                              (int)pub[p]->step.num_fields, (long long)pub[0]->step.row_bytes,
                              (int)pub[0]->step.num_fields);
        for (int32_t d = 0; d < R; d++) {
            const int64_t sent = pub[p]->send_offsets[d + 1] - pub[p]->send_offsets[d];
            const int64_t expected = pub[d]->recv_offsets[p + 1] - pub[d]->recv_offsets[p];
            if (sent != expected)
                return dinf__fail(DINF_STATUS_INTERNAL, func,
                                  "rank %d sends %lld rows to rank %d, which expects %lld",
                                  (int)p, (long long)sent, (int)d, (long long)expected);
            if (!dinf__ep_peer_fits(&h->layout, sent, pub[p]->step.row_bytes))
                return dinf__fail(DINF_STATUS_INTERNAL, func,
                                  "rank %d's %lld rows of %lld bytes for rank %d exceed its "
                                  "%lld-byte slot",
                                  (int)p, (long long)sent, (long long)pub[p]->step.row_bytes,
                                  (int)d, (long long)h->layout.slot_bytes);
        }
    }
    const cudaStream_t stream = pub[leader->rank]->stream;
    const int device = h->device;
    int32_t slot;
    char *host, *dev;
    dinf_status st = ring_take(func, &h->ring, device, h->timeout_ms, &slot, &host, &dev);
    if (st != DINF_STATUS_OK)
        return st;
    const size_t blob = step_blob_bytes(R);
    for (int32_t r = 0; r < R; r++) {
        dinf__ep_step s = pub[r]->step;
        s.error = h->errors_dev + 4 * r;
        step_to_blob(&s, pub[r]->send_offsets, pub[r]->recv_offsets, R, host + (size_t)r * blob,
                     dev + (size_t)r * blob);
    }
    /* the kernel indexes steps[idx]: a packed array of the patched structs
     * follows the R blobs (whose offset arrays the structs point to) */
    for (int32_t r = 0; r < R; r++) {
        dinf__ep_step s;
        memcpy(&s, host + (size_t)r * blob, sizeof s);
        memcpy(host + (size_t)R * blob + (size_t)r * sizeof s, &s, sizeof s);
    }
    for (int32_t r = 0; r < R; r++) {
        cudaError_t err = cudaStreamWaitEvent(stream, h->rank_events[r], 0);
        if (err != cudaSuccess)
            return cuda_fail(func, "ordering the EP step after every rank", device, err);
    }
    st = ring_upload(func, &h->ring, slot, (size_t)R * blob + (size_t)R * sizeof(dinf__ep_step),
                     stream, device);
    if (st != DINF_STATUS_OK)
        return st;
    h->step++;
    dinf__ep_peer_launch launch;
    memset(&launch, 0, sizeof launch);
    launch.peers = h->peers_dev;
    launch.layout = h->layout;
    launch.step = h->step;
    launch.timeout_ns = h->timeout_ns;
    launch.steps = (const dinf__ep_step *)(dev + (size_t)R * blob);
    launch.num_steps = R;
    launch.blocks_per_rank = h->blocks_per_rank;
    const dinf__place place = {DINF_EXEC_CUDA, device, 0, (dinf_stream_t)stream};
    st = dinf__ep_cuda_peer_step(func, &place, &launch);
    if (st == DINF_STATUS_OK)
        st = ring_release(func, &h->ring, slot, stream, device);
    if (st == DINF_STATUS_OK) {
        cudaError_t err = cudaEventRecord(h->done, stream);
        if (err != cudaSuccess)
            st = cuda_fail(func, "recording the EP step", device, err);
    }
    return st;
}

/* v_launch_step; any failure (a count disagreement, a descriptor slot whose
 * earlier step never finished, a CUDA error) breaks the group: every rank
 * gets it, and later collective calls fail at once. Runs under the mutex. */
static dinf_status v_launch(vhub *h, const char *func, dinf__ep_transport *leader) {
    const dinf_status st = v_launch_step(h, func, leader);
    if (st != DINF_STATUS_OK) {
        char message[DINF_ERROR_MESSAGE_MAX];
        keep_message(message);
        vbreak(h, st, message);
    }
    return st;
}

/* A data step: record my stream's point, meet, the leader launches, then my
 * stream waits for the launch. */
static dinf_status v_step(dinf__ep_transport *t, const char *func, vpub *mine,
                          const dinf__place *place) {
    vhub *h = vhub_of(t);
    dev_guard g;
    cudaError_t err = guard_enter(&g, t->device);
    if (err == cudaSuccess)
        err = cudaEventRecord(h->rank_events[t->rank], (cudaStream_t)place->stream);
    if (err != cudaSuccess) {
        guard_leave(&g);
        return cuda_fail(func, "recording the rank's EP event", t->device, err);
    }
    mine->stream = (cudaStream_t)place->stream;
    mine->tag = 2;
    dinf_status st = vbarrier(t, func, mine, v_launch);
    if (st == DINF_STATUS_OK) {
        err = cudaStreamWaitEvent((cudaStream_t)place->stream, h->done, 0);
        if (err != cudaSuccess)
            st = cuda_fail(func, "ordering the rank's stream after the EP step", t->device, err);
    }
    guard_leave(&g);
    return st;
}

static dinf_status v_alltoallv(dinf__ep_transport *t, const char *func, const dinf__ep_a2a *a2a,
                               const dinf__place *place) {
    vpub mine;
    memset(&mine, 0, sizeof mine);
    dinf_status st = dinf__ep_step_from_a2a(func, a2a, &mine.step);
    if (st != DINF_STATUS_OK)
        return st;
    mine.step.rank = t->rank;
    mine.step.num_ranks = t->num_ranks;
    mine.send_offsets = a2a->send_offsets;
    mine.recv_offsets = a2a->recv_offsets;
    return v_step(t, func, &mine, place);
}

static dinf_status v_reduce(dinf__ep_transport *t, const char *func, const dinf__ep_reduce *red,
                            const dinf__place *place) {
    vpub mine;
    memset(&mine, 0, sizeof mine);
    dinf_status st = dinf__ep_step_from_reduce(func, red, &mine.step);
    if (st != DINF_STATUS_OK)
        return st;
    mine.step.rank = t->rank;
    mine.step.num_ranks = t->num_ranks;
    mine.send_offsets = red->send_offsets;
    mine.recv_offsets = red->recv_offsets;
    return v_step(t, func, &mine, place);
}

static void vhub_free(vhub *h) {
    dev_guard g;
    guard_enter(&g, h->device);
    if (h->rank_events)
        for (int32_t r = 0; r < h->num_ranks; r++)
            if (h->rank_events[r])
                cudaEventDestroy(h->rank_events[r]);
    if (h->done)
        cudaEventDestroy(h->done);
    ring_free(&h->ring);
    if (h->errors)
        cudaFreeHost(h->errors);
    if (h->buffer)
        cudaFree(h->buffer);
    if (h->peers_dev)
        cudaFree(h->peers_dev);
    guard_leave(&g);
    pthread_mutex_destroy(&h->mutex);
    pthread_cond_destroy(&h->cond);
    free(h->rank_events);
    free(h->present);
    free(h->slots);
    free(h);
}

static void vhub_drop(vhub *h, int32_t n) {
    pthread_mutex_lock(&h->mutex);
    h->refs -= n;
    const int last = h->refs == 0;
    pthread_mutex_unlock(&h->mutex);
    if (last)
        vhub_free(h);
}

static void v_destroy(dinf__ep_transport *t) {
    virtual_transport *v = (virtual_transport *)t;
    dev_guard g;
    guard_enter(&g, t->device);
    gpu_common_free(&v->gpu);
    guard_leave(&g);
    vhub_drop(v->hub, 1);
    free(v);
}

static const dinf__ep_transport_ops virtual_ops = {
    .name = "cuda-virtual",
    .allgather = v_allgather,
    .alltoallv = v_alltoallv,
    .reduce_a2a = v_reduce,
    .barrier = v_barrier,
    .alloc = gpu_alloc,
    .free = gpu_free,
    .copy = gpu_copy,
    .plan_dispatch = dinf__ep_gpu_plan_dispatch,
    .localize_topk = dinf__ep_gpu_localize_topk,
    .plan_low_latency = dinf__ep_gpu_plan_low_latency,
    .ll_recv_rows = dinf__ep_gpu_ll_recv_rows,
    .destroy = v_destroy,
};

static dinf_status vhub_create(const char *func, int32_t R, int32_t device,
                               const dinf_ep_config *cfg, vhub **out) {
    vhub *h = calloc(1, sizeof *h);
    if (!h)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate the group state");
    pthread_mutex_init(&h->mutex, NULL);
    pthread_cond_init(&h->cond, NULL);
    h->num_ranks = R;
    h->device = device;
    h->timeout_ms = cfg->timeout_ms;
    h->present = calloc((size_t)R, 1);
    h->slots = calloc((size_t)R, sizeof *h->slots);
    h->rank_events = calloc((size_t)R, sizeof *h->rank_events);
    if (!h->present || !h->slots || !h->rank_events) {
        vhub_free(h);
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate the group state");
    }
    int64_t stage = 0;
    dinf_status st = stage_bytes_for(func, cfg, R, &stage);
    if (st == DINF_STATUS_OK && dinf__ep_peer_layout_init(&h->layout, R, 0, stage) != 0)
        st = dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                        "the symmetric buffers for this config overflow");
    if (st == DINF_STATUS_OK && (uint64_t)h->layout.total_bytes > SIZE_MAX / (uint64_t)R)
        st = dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                        "the symmetric buffers for this config overflow");
    if (st == DINF_STATUS_OK)
        st = pick_blocks(func, device, R, &h->blocks_per_rank);
    if (st != DINF_STATUS_OK) {
        vhub_free(h);
        return st;
    }
    const size_t total = (size_t)h->layout.total_bytes * (size_t)R;
    cudaError_t err = cudaMalloc((void **)&h->buffer, total);
    if (err != cudaSuccess) {
        h->buffer = NULL;
        cudaGetLastError();
        vhub_free(h);
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func,
                          "could not allocate %zu bytes of symmetric buffers (%d ranks x %lld) on "
                          "CUDA device %d",
                          total, (int)R, (long long)h->layout.total_bytes, (int)device);
    }
    char *peers[8];
    for (int32_t r = 0; r < R; r++)
        peers[r] = h->buffer + (size_t)r * (size_t)h->layout.total_bytes;
    err = cudaMemset(h->buffer, 0, total);
    if (err == cudaSuccess)
        err = cudaMalloc((void **)&h->peers_dev, (size_t)R * sizeof(char *));
    if (err == cudaSuccess)
        err = cudaMemcpy(h->peers_dev, peers, (size_t)R * sizeof(char *), cudaMemcpyHostToDevice);
    for (int32_t r = 0; r < R && err == cudaSuccess; r++)
        err = cudaEventCreateWithFlags(&h->rank_events[r], cudaEventDisableTiming);
    if (err == cudaSuccess)
        err = cudaEventCreateWithFlags(&h->done, cudaEventDisableTiming);
    if (err == cudaSuccess)
        err = cudaDeviceSynchronize();
    if (err != cudaSuccess) {
        st = cuda_fail(func, "setting up the virtual-rank buffers", device, err);
        vhub_free(h);
        return st;
    }
    st = error_records(func, R, device, &h->errors, &h->errors_dev);
    if (st == DINF_STATUS_OK)
        st = ring_init(func, &h->ring,
                       (size_t)R * (step_blob_bytes(R) + sizeof(dinf__ep_step)), device);
    if (st != DINF_STATUS_OK) {
        vhub_free(h);
        return st;
    }
    h->timeout_ns = dinf__ep_timeout_ns(cfg->timeout_ms);
    h->refs = R;
    *out = h;
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_group_create_cuda_virtual(int32_t num_ranks, int32_t device,
                                                       const dinf_ep_config *config,
                                                       dinf_ep_group **groups) {
    const char *func = __func__;
    dinf_ep_config cfg;
    dinf_status st = check_virtual_args(func, num_ranks, device, config, groups, &cfg);
    if (st != DINF_STATUS_OK)
        return st;
    if (cfg.max_tokens_per_rank > INT32_MAX / num_ranks)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "num_ranks=%d * max_tokens_per_rank=%lld exceeds 2^31-1 received rows",
                         (int)num_ranks, (long long)cfg.max_tokens_per_rank);
    st = require_device(func, device);
    if (st != DINF_STATUS_OK)
        return st;
    dev_guard g;
    cudaError_t err = guard_enter(&g, device);
    if (err != cudaSuccess)
        return cuda_fail(func, "making the device current", device, err);
    vhub *h = NULL;
    st = vhub_create(func, num_ranks, device, &cfg, &h);
    for (int32_t r = 0; r < num_ranks && st == DINF_STATUS_OK; r++) {
        /* the hub holds one reference per rank; rank r's is consumed when its
         * transport is destroyed (a failed wrap destroys it) */
        int consumed = 0;
        virtual_transport *v = calloc(1, sizeof *v);
        if (!v) {
            st = DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "could not allocate rank %d", (int)r);
        } else {
            v->hub = h;
            st = gpu_common_init(func, &v->gpu, &virtual_ops, r, num_ranks, device, &cfg);
            if (st != DINF_STATUS_OK) {
                gpu_common_free(&v->gpu);
                free(v);
            } else {
                st = dinf__ep_group_wrap(func, &v->gpu.base, &cfg, &groups[r]);
                consumed = st != DINF_STATUS_OK;
            }
        }
        if (st != DINF_STATUS_OK) {
            vhub_drop(h, num_ranks - r - consumed); /* ranks r.. that hold no endpoint */
            for (int32_t q = 0; q < r; q++) {       /* each drops its own reference */
                dinf_ep_group_destroy(groups[q]);
                groups[q] = NULL;
            }
        }
    }
    guard_leave(&g);
    return st;
}

/* ------------------------------------------------------------------------ */
/* CUDA IPC (one process per rank)                                            */
/* ------------------------------------------------------------------------ */

typedef struct ipc_transport {
    dinf__ep_gpu gpu; /* first */
    dinf__ep_peer_layout layout;
    char *buffer;      /* mine (cudaMalloc) */
    char **peers_host; /* [R]: mine or opened IPC mappings */
    char **peers_dev;  /* device copy */
    int32_t *error, *error_dev;
    char *gather_in; /* device: my all-gather contribution */
    char *gather_host; /* pinned: [R][gather_bytes] */
    ring ring;
    uint64_t step;
    int32_t blocks_per_rank;
    int64_t timeout_ns;
    int32_t broken;
    dinf_status broken_status;
    char broken_message[DINF_ERROR_MESSAGE_MAX];
} ipc_transport;

static dinf_status ipc_broken(ipc_transport *x, const char *func) {
    return dinf__fail(x->broken_status, func, "the EP group is broken: %s", x->broken_message);
}

static dinf_status ipc_break(ipc_transport *x, dinf_status st) {
    if (!x->broken) {
        x->broken = 1;
        x->broken_status = st;
        keep_message(x->broken_message);
    }
    return st;
}

/* Errors the device recorded (non-blocking look). */
static dinf_status ipc_check(ipc_transport *x, const char *func) {
    if (x->broken)
        return ipc_broken(x, func);
    const volatile int32_t *rec = x->error;
    if (rec[0] != 0) {
        int32_t copy[4] = {rec[0], rec[1], rec[2], rec[3]};
        return ipc_break(x, device_error(func, x->gpu.base.rank, copy, x->gpu.base.timeout_ms));
    }
    return DINF_STATUS_OK;
}

static dinf_status ipc_launch(ipc_transport *x, const char *func, const dinf__ep_step *s,
                              const int64_t *send_offsets, const int64_t *recv_offsets,
                              const dinf__place *place) {
    dinf__ep_transport *t = &x->gpu.base;
    dinf_status st = ipc_check(x, func);
    if (st != DINF_STATUS_OK)
        return st;
    /* every failure from here on breaks the endpoint: the peers launch this
     * step and wait for this rank on the device, and this rank's step count
     * would no longer match theirs */
    for (int32_t d = 0; send_offsets && d < t->num_ranks; d++)
        if (!dinf__ep_peer_fits(&x->layout, send_offsets[d + 1] - send_offsets[d], s->row_bytes))
            return ipc_break(x, dinf__fail(DINF_STATUS_INTERNAL, func,
                                           "rank %d's rows for rank %d exceed its %lld-byte slot",
                                           (int)t->rank, (int)d,
                                           (long long)x->layout.slot_bytes));
    dev_guard g;
    cudaError_t err = guard_enter(&g, t->device);
    if (err != cudaSuccess)
        return ipc_break(x, cuda_fail(func, "making the device current", t->device, err));
    cudaStream_t stream = (cudaStream_t)place->stream;
    int32_t slot;
    char *host, *dev;
    st = ring_take(func, &x->ring, t->device, t->timeout_ms, &slot, &host, &dev);
    if (st == DINF_STATUS_OK) {
        dinf__ep_step copy = *s;
        copy.rank = t->rank;
        copy.num_ranks = t->num_ranks;
        copy.error = x->error_dev;
        step_to_blob(&copy, send_offsets, recv_offsets, t->num_ranks, host, dev);
        st = ring_upload(func, &x->ring, slot, step_blob_bytes(t->num_ranks), stream, t->device);
    }
    if (st == DINF_STATUS_OK) {
        x->step++;
        dinf__ep_peer_launch launch;
        memset(&launch, 0, sizeof launch);
        launch.peers = x->peers_dev;
        launch.layout = x->layout;
        launch.step = x->step;
        launch.timeout_ns = x->timeout_ns;
        launch.steps = (const dinf__ep_step *)dev;
        launch.num_steps = 1;
        launch.blocks_per_rank = x->blocks_per_rank;
        st = dinf__ep_cuda_peer_step(func, place, &launch);
        if (st == DINF_STATUS_OK)
            st = ring_release(func, &x->ring, slot, stream, t->device);
    }
    if (st != DINF_STATUS_OK) /* also a descriptor slot that never freed (timeout) */
        ipc_break(x, st);
    guard_leave(&g);
    return st;
}

static dinf_status ipc_allgather(dinf__ep_transport *t, const char *func, const void *in,
                                 void *out, size_t bytes, const dinf__place *place) {
    ipc_transport *x = (ipc_transport *)t;
    if ((int64_t)bytes > x->layout.gather_bytes)
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "an all-gather of %zu bytes exceeds the %lld-byte area", bytes,
                          (long long)x->layout.gather_bytes);
    dinf_status st = ipc_check(x, func);
    if (st != DINF_STATUS_OK)
        return st;
    dev_guard g;
    cudaError_t err = guard_enter(&g, t->device);
    cudaStream_t stream = (cudaStream_t)place->stream;
    /* my contribution through the pinned buffer (row 0 is free before the step) */
    if (err == cudaSuccess) {
        memcpy(x->gather_host, in, bytes);
        err = cudaMemcpyAsync(x->gather_in, x->gather_host, bytes, cudaMemcpyHostToDevice, stream);
    }
    if (err != cudaSuccess) {
        guard_leave(&g);
        return ipc_break(x, cuda_fail(func, "the EP all-gather upload", t->device, err));
    }
    dinf__ep_step s;
    memset(&s, 0, sizeof s);
    s.kind = DINF__EP_STEP_GATHER;
    s.gather_in = x->gather_in;
    s.gather_bytes = (int64_t)bytes;
    st = ipc_launch(x, func, &s, NULL, NULL, place);
    if (st == DINF_STATUS_OK) {
        err = cudaMemcpyAsync(x->gather_host, x->buffer + x->layout.gather_off,
                              (size_t)t->num_ranks * (size_t)x->layout.gather_bytes,
                              cudaMemcpyDeviceToHost, stream);
        if (err != cudaSuccess)
            st = ipc_break(x, cuda_fail(func, "the EP all-gather download", t->device, err));
    }
    if (st == DINF_STATUS_OK) {
        st = wait_stream(func, stream, t->device, t->timeout_ms + 1000, "the EP all-gather");
        if (st != DINF_STATUS_OK)
            ipc_break(x, st);
    }
    guard_leave(&g);
    if (st == DINF_STATUS_OK)
        st = ipc_check(x, func);
    if (st != DINF_STATUS_OK)
        return st;
    for (int32_t r = 0; r < t->num_ranks; r++)
        memcpy((char *)out + (size_t)r * bytes,
               x->gather_host + (size_t)r * (size_t)x->layout.gather_bytes, bytes);
    return DINF_STATUS_OK;
}

static dinf_status ipc_barrier(dinf__ep_transport *t, const char *func, const dinf__place *place) {
    ipc_transport *x = (ipc_transport *)t;
    dinf__ep_step s;
    memset(&s, 0, sizeof s);
    s.kind = DINF__EP_STEP_NONE;
    dinf_status st = ipc_launch(x, func, &s, NULL, NULL, place);
    if (st == DINF_STATUS_OK) {
        st = wait_stream(func, (cudaStream_t)place->stream, t->device, t->timeout_ms + 1000,
                         "the EP barrier");
        if (st != DINF_STATUS_OK)
            ipc_break(x, st);
    }
    return st == DINF_STATUS_OK ? ipc_check(x, func) : st;
}

static dinf_status ipc_alltoallv(dinf__ep_transport *t, const char *func, const dinf__ep_a2a *a2a,
                                 const dinf__place *place) {
    dinf__ep_step s;
    dinf_status st = dinf__ep_step_from_a2a(func, a2a, &s);
    if (st != DINF_STATUS_OK)
        return st;
    return ipc_launch((ipc_transport *)t, func, &s, a2a->send_offsets, a2a->recv_offsets, place);
}

static dinf_status ipc_reduce(dinf__ep_transport *t, const char *func, const dinf__ep_reduce *red,
                              const dinf__place *place) {
    dinf__ep_step s;
    dinf_status st = dinf__ep_step_from_reduce(func, red, &s);
    if (st != DINF_STATUS_OK)
        return st;
    return ipc_launch((ipc_transport *)t, func, &s, red->send_offsets, red->recv_offsets, place);
}

static void ipc_free(ipc_transport *x) {
    dinf__ep_transport *t = &x->gpu.base;
    dev_guard g;
    guard_enter(&g, t->device);
    if (x->peers_host)
        for (int32_t r = 0; r < t->num_ranks; r++)
            if (r != t->rank && x->peers_host[r])
                cudaIpcCloseMemHandle(x->peers_host[r]);
    ring_free(&x->ring);
    if (x->error)
        cudaFreeHost(x->error);
    if (x->gather_host)
        cudaFreeHost(x->gather_host);
    if (x->gather_in)
        cudaFree(x->gather_in);
    if (x->peers_dev)
        cudaFree(x->peers_dev);
    if (x->buffer)
        cudaFree(x->buffer);
    gpu_common_free(&x->gpu);
    guard_leave(&g);
    free(x->peers_host);
    free(x);
}

static void ipc_destroy(dinf__ep_transport *t) { ipc_free((ipc_transport *)t); }

static const dinf__ep_transport_ops ipc_ops = {
    .name = "cuda-ipc",
    .allgather = ipc_allgather,
    .alltoallv = ipc_alltoallv,
    .reduce_a2a = ipc_reduce,
    .barrier = ipc_barrier,
    .alloc = gpu_alloc,
    .free = gpu_free,
    .copy = gpu_copy,
    .plan_dispatch = dinf__ep_gpu_plan_dispatch,
    .localize_topk = dinf__ep_gpu_localize_topk,
    .plan_low_latency = dinf__ep_gpu_plan_low_latency,
    .ll_recv_rows = dinf__ep_gpu_ll_recv_rows,
    .destroy = ipc_destroy,
};

/* What every rank contributes at creation. */
typedef struct ipc_record {
    uint32_t magic;
    int32_t ok, rank, blocks_per_rank;
    int64_t total_bytes;
    cudaIpcMemHandle_t handle;
} ipc_record;

#define IPC_MAGIC 0x45504950u /* "EPIP" */

/* The caller's all-gather of one record per rank; failures are this rank's. */
static dinf_status ipc_exchange(const char *func, dinf_ep_allgather_fn allgather, void *ctx,
                                const ipc_record *mine, ipc_record *all, int32_t R) {
    if (allgather(ctx, mine, all, sizeof *mine) != 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "the caller's allgather callback failed");
    for (int32_t p = 0; p < R; p++)
        if (all[p].magic != IPC_MAGIC || all[p].rank != p)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "the allgather callback returned garbage for rank %d (it must put "
                              "rank p's bytes at p * bytes)",
                              (int)p);
    return DINF_STATUS_OK;
}

DINF_API dinf_status dinf_ep_group_create_cuda_ipc(int32_t rank, int32_t num_ranks,
                                                   int32_t device, const dinf_ep_config *config,
                                                   dinf_ep_allgather_fn allgather, void *ctx,
                                                   dinf_ep_group **group) {
    const char *func = __func__;
    dinf_ep_config cfg;
    dinf_status st =
        check_ipc_args(func, rank, num_ranks, device, config, allgather, group, &cfg);
    if (st != DINF_STATUS_OK)
        return st;
    const int32_t R = num_ranks;
    /* local setup; its outcome travels in the first exchange so that every
     * rank fails together instead of waiting in a later one */
    ipc_transport *x = calloc(1, sizeof *x);
    ipc_record *all = calloc((size_t)R, sizeof *all);
    if (x)
        x->peers_host = calloc((size_t)R, sizeof(char *));
    dinf_status local = (x && all && x->peers_host)
                            ? DINF_STATUS_OK
                            : DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "could not allocate rank %d",
                                        (int)rank);
    if (local == DINF_STATUS_OK)
        local = require_device(func, device);
    dev_guard g = {0}; /* left untouched when enter is never reached */
    if (local == DINF_STATUS_OK) {
        cudaError_t err = guard_enter(&g, device);
        if (err != cudaSuccess)
            local = cuda_fail(func, "making the device current", device, err);
    }
    ipc_record mine;
    memset(&mine, 0, sizeof mine);
    mine.magic = IPC_MAGIC;
    mine.rank = rank;
    int64_t stage = 0;
    if (local == DINF_STATUS_OK)
        local = gpu_common_init(func, &x->gpu, &ipc_ops, rank, R, device, &cfg);
    if (local == DINF_STATUS_OK)
        local = stage_bytes_for(func, &cfg, R, &stage);
    if (local == DINF_STATUS_OK &&
        dinf__ep_peer_layout_init(&x->layout, R, gather_bytes_for(&cfg, R), stage) != 0)
        local = DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                          "the symmetric buffer for this config overflows");
    if (local == DINF_STATUS_OK)
        local = pick_blocks(func, device, 1, &x->blocks_per_rank);
    if (local == DINF_STATUS_OK) {
        cudaError_t err = cudaMalloc((void **)&x->buffer, (size_t)x->layout.total_bytes);
        if (err != cudaSuccess) {
            x->buffer = NULL;
            cudaGetLastError();
            local = DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY,
                              "could not allocate the %lld-byte symmetric buffer on CUDA device %d",
                              (long long)x->layout.total_bytes, (int)device);
        } else {
            err = cudaMemset(x->buffer, 0, (size_t)x->layout.total_bytes);
            if (err == cudaSuccess)
                err = cudaDeviceSynchronize(); /* zeroed before any peer can signal */
            if (err == cudaSuccess)
                err = cudaIpcGetMemHandle(&mine.handle, x->buffer);
            if (err != cudaSuccess)
                local = cuda_fail(func, "exporting the symmetric buffer (cudaIpcGetMemHandle)",
                                  device, err);
        }
    }
    mine.ok = local == DINF_STATUS_OK;
    mine.blocks_per_rank = x ? x->blocks_per_rank : 0;
    mine.total_bytes = x ? x->layout.total_bytes : 0;
    if (!all) { /* cannot even take part in the exchange */
        if (x)
            ipc_free(x);
        guard_leave(&g);
        return local;
    }
    st = ipc_exchange(func, allgather, ctx, &mine, all, R);
    if (st == DINF_STATUS_OK && local != DINF_STATUS_OK)
        st = local; /* this rank's own message */
    for (int32_t p = 0; p < R && st == DINF_STATUS_OK; p++) {
        if (!all[p].ok)
            st = DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                           "rank %d could not set up its CUDA IPC endpoint (see its "
                           "dinf_last_error())",
                           (int)p);
        else if (all[p].total_bytes != mine.total_bytes)
            st = DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                           "rank %d's symmetric buffer has %lld bytes, rank %d's %lld (the "
                           "configs differ)",
                           (int)p, (long long)all[p].total_bytes, (int)rank,
                           (long long)mine.total_bytes);
    }
    /* the same blocks per rank everywhere (arrive targets depend on it) */
    int32_t bpr = st == DINF_STATUS_OK ? all[0].blocks_per_rank : 0;
    for (int32_t p = 1; p < R && st == DINF_STATUS_OK; p++)
        if (all[p].blocks_per_rank < bpr)
            bpr = all[p].blocks_per_rank;
    /* open the peers' buffers (never our own: CUDA IPC cannot be opened in
     * the owning process; we use the raw pointer) */
    dinf_status opened = st;
    if (st == DINF_STATUS_OK) {
        x->blocks_per_rank = bpr;
        for (int32_t p = 0; p < R && opened == DINF_STATUS_OK; p++) {
            if (p == rank) {
                x->peers_host[p] = x->buffer;
                continue;
            }
            void *ptr = NULL;
            cudaError_t err =
                cudaIpcOpenMemHandle(&ptr, all[p].handle, cudaIpcMemLazyEnablePeerAccess);
            if (err != cudaSuccess)
                opened = cuda_fail(func, "opening a peer's symmetric buffer (cudaIpcOpenMemHandle)",
                                   device, err);
            else
                x->peers_host[p] = ptr;
        }
        if (opened == DINF_STATUS_OK) {
            cudaError_t err = cudaMalloc((void **)&x->peers_dev, (size_t)R * sizeof(char *));
            if (err == cudaSuccess)
                err = cudaMemcpy(x->peers_dev, x->peers_host, (size_t)R * sizeof(char *),
                                 cudaMemcpyHostToDevice);
            if (err == cudaSuccess)
                err = cudaMalloc((void **)&x->gather_in, (size_t)x->layout.gather_bytes);
            if (err == cudaSuccess)
                err = cudaHostAlloc((void **)&x->gather_host,
                                    (size_t)R * (size_t)x->layout.gather_bytes,
                                    cudaHostAllocDefault);
            if (err != cudaSuccess)
                opened = cuda_fail(func, "setting up the CUDA IPC endpoint", device, err);
        }
        if (opened == DINF_STATUS_OK)
            opened = error_records(func, 1, device, &x->error, &x->error_dev);
        if (opened == DINF_STATUS_OK)
            opened = ring_init(func, &x->ring, step_blob_bytes(R), device);
    }
    /* second exchange, made by every rank whatever happened so far (the
     * callback contract: twice per constructor on every rank, so that a rank
     * whose first exchange or setup failed never leaves its peers waiting in
     * the second): everyone opened everything (a barrier, too). The first
     * failure's message is the one reported. */
    char first_message[DINF_ERROR_MESSAGE_MAX] = "";
    if (opened != DINF_STATUS_OK)
        keep_message(first_message);
    ipc_record second = mine;
    second.ok = opened == DINF_STATUS_OK;
    const dinf_status ex = ipc_exchange(func, allgather, ctx, &second, all, R);
    if (opened != DINF_STATUS_OK) {
        st = opened;
        dinf__restore_error(first_message);
    } else {
        st = ex;
        for (int32_t p = 0; p < R && st == DINF_STATUS_OK; p++)
            if (!all[p].ok)
                st = DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                               "rank %d could not open the CUDA IPC buffers (see its "
                               "dinf_last_error())",
                               (int)p);
    }
    free(all);
    if (st != DINF_STATUS_OK) {
        if (x)
            ipc_free(x);
        guard_leave(&g);
        return st;
    }
    x->timeout_ns = dinf__ep_timeout_ns(cfg.timeout_ms);
    st = dinf__ep_group_wrap(func, &x->gpu.base, &cfg, group);
    guard_leave(&g);
    return st;
}

/* ------------------------------------------------------------------------ */
/* NCCL                                                                       */
/* ------------------------------------------------------------------------ */

typedef struct nccl_transport {
    dinf__ep_gpu gpu; /* first */
    const dinf__nccl_api *nccl;
    void *comm;
    char *send_stage, *recv_stage;
    int64_t stage_bytes;
    char *gather_dev;  /* [gather_bytes] in, then [R][gather_bytes] out */
    char *gather_host; /* pinned, same shape */
    int64_t gather_bytes;
    int32_t *error, *error_dev;
    ring ring;
    int32_t broken;
    dinf_status broken_status;
    char broken_message[DINF_ERROR_MESSAGE_MAX];
} nccl_transport;

static dinf_status n_break(nccl_transport *x, dinf_status st) {
    if (!x->broken) {
        x->broken = 1;
        x->broken_status = st;
        keep_message(x->broken_message);
    }
    return st;
}

static dinf_status n_check(nccl_transport *x, const char *func) {
    if (x->broken)
        return dinf__fail(x->broken_status, func, "the EP group is broken: %s",
                          x->broken_message);
    const volatile int32_t *rec = x->error;
    if (rec[0] != 0) {
        int32_t copy[4] = {rec[0], rec[1], rec[2], rec[3]};
        return n_break(x, device_error(func, x->gpu.base.rank, copy, x->gpu.base.timeout_ms));
    }
    return DINF_STATUS_OK;
}

/* The final result of an NCCL call: a nonblocking communicator answers
 * ncclInProgress while it enqueues, and ncclCommGetAsyncError then reports
 * ncclInProgress until the operation is enqueued (or its error); poll it,
 * bounded by timeout_ms (still in progress then: returned as such). A
 * blocking communicator never answers ncclInProgress (returned unchanged). */
static int nccl_settle(const dinf__nccl_api *nccl, void *comm, int64_t timeout_ms, int result) {
    if (result != DINF__NCCL_IN_PROGRESS)
        return result;
    const int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int async = 0;
        const int r = nccl->comm_get_async_error(comm, &async);
        if (r != 0 && r != DINF__NCCL_IN_PROGRESS)
            return r;
        if (r == 0 && async != DINF__NCCL_IN_PROGRESS)
            return async;
        if (now_ms() > deadline)
            return DINF__NCCL_IN_PROGRESS;
        nap();
    }
}

static dinf_status nccl_fail(nccl_transport *x, const char *func, const char *what, int result) {
    return n_break(x, dinf__fail(DINF_STATUS_NCCL_ERROR, func, "%s failed: %s (ncclResult %d)",
                                 what, x->nccl->get_error_string(result), result));
}

/* Wait (bounded) for the stream, watching NCCL's asynchronous errors. */
static dinf_status n_wait(nccl_transport *x, const char *func, cudaStream_t stream,
                          const char *what) {
    dinf__ep_transport *t = &x->gpu.base;
    const int64_t deadline = now_ms() + t->timeout_ms;
    for (;;) {
        cudaError_t err = cudaStreamQuery(stream);
        if (err == cudaSuccess)
            return DINF_STATUS_OK;
        if (err != cudaErrorNotReady)
            return n_break(x, cuda_fail(func, what, t->device, err));
        int async = 0;
        if (x->nccl->comm_get_async_error(x->comm, &async) == 0 && async != 0 &&
            async != DINF__NCCL_IN_PROGRESS)
            return nccl_fail(x, func, what, async);
        if (now_ms() > deadline)
            return n_break(x, dinf__fail(DINF_STATUS_TIMEOUT, func,
                                         "%s on rank %d did not finish within %lld ms (a peer "
                                         "skipped or reordered a collective call, or died; abort "
                                         "the communicator)",
                                         what, (int)t->rank, (long long)t->timeout_ms));
        nap();
    }
}

static dinf_status n_allgather(dinf__ep_transport *t, const char *func, const void *in, void *out,
                               size_t bytes, const dinf__place *place) {
    nccl_transport *x = (nccl_transport *)t;
    dinf_status st = n_check(x, func);
    if (st != DINF_STATUS_OK)
        return st;
    if ((int64_t)bytes > x->gather_bytes)
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "an all-gather of %zu bytes exceeds the %lld-byte area", bytes,
                          (long long)x->gather_bytes);
    dev_guard g;
    cudaError_t err = guard_enter(&g, t->device);
    cudaStream_t stream = (cudaStream_t)place->stream;
    /* the previous use of the pinned buffer has completed (we waited) */
    memcpy(x->gather_host, in, bytes);
    if (err == cudaSuccess)
        err = cudaMemcpyAsync(x->gather_dev, x->gather_host, bytes, cudaMemcpyHostToDevice,
                              stream);
    if (err != cudaSuccess) {
        guard_leave(&g);
        return n_break(x, cuda_fail(func, "the EP all-gather upload", t->device, err));
    }
    char *gathered = x->gather_dev + x->gather_bytes;
    int result = nccl_settle(x->nccl, x->comm, t->timeout_ms,
                             x->nccl->all_gather(x->gather_dev, gathered, bytes,
                                                 DINF__NCCL_UINT8, x->comm, stream));
    if (result != 0) {
        guard_leave(&g);
        return nccl_fail(x, func, "ncclAllGather", result);
    }
    err = cudaMemcpyAsync(x->gather_host + x->gather_bytes, gathered,
                          (size_t)t->num_ranks * bytes, cudaMemcpyDeviceToHost, stream);
    if (err != cudaSuccess) {
        guard_leave(&g);
        return n_break(x, cuda_fail(func, "the EP all-gather download", t->device, err));
    }
    st = n_wait(x, func, stream, "the EP all-gather");
    guard_leave(&g);
    if (st == DINF_STATUS_OK)
        st = n_check(x, func);
    if (st == DINF_STATUS_OK)
        memcpy(out, x->gather_host + x->gather_bytes, (size_t)t->num_ranks * bytes);
    return st;
}

static dinf_status n_barrier(dinf__ep_transport *t, const char *func, const dinf__place *place) {
    int32_t token = 1;
    int32_t *all = malloc((size_t)t->num_ranks * 4);
    if (!all)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate the barrier");
    dinf_status st = n_allgather(t, func, &token, all, 4, place);
    free(all);
    return st;
}

/* Move the wire rows of s: pack, grouped send/recv, then unpack or reduce. */
static dinf_status n_move(nccl_transport *x, const char *func, dinf__ep_step *s,
                          const int64_t *send_offsets, const int64_t *recv_offsets,
                          const dinf__place *place) {
    dinf__ep_transport *t = &x->gpu.base;
    const int32_t R = t->num_ranks;
    dinf_status st = n_check(x, func);
    if (st != DINF_STATUS_OK)
        return st;
    /* every failure from here on breaks the endpoint: the peers post their
     * sends and receives of this step, and a rank that skipped it would pair
     * its next step's transfers with them */
    const int64_t send_rows = send_offsets[R], recv_rows = recv_offsets[R];
    if (send_rows > x->stage_bytes / s->row_bytes || recv_rows > x->stage_bytes / s->row_bytes)
        return n_break(x, dinf__fail(DINF_STATUS_INTERNAL, func,
                                     "%lld / %lld rows of %lld bytes exceed the %lld-byte NCCL "
                                     "stages",
                                     (long long)send_rows, (long long)recv_rows,
                                     (long long)s->row_bytes, (long long)x->stage_bytes));
    dev_guard g;
    cudaError_t err = guard_enter(&g, t->device);
    if (err != cudaSuccess)
        return n_break(x, cuda_fail(func, "making the device current", t->device, err));
    cudaStream_t stream = (cudaStream_t)place->stream;
    int32_t slot;
    char *host, *dev;
    st = ring_take(func, &x->ring, t->device, t->timeout_ms, &slot, &host, &dev);
    if (st == DINF_STATUS_OK) {
        s->rank = t->rank;
        s->num_ranks = R;
        s->error = x->error_dev;
        step_to_blob(s, send_offsets, recv_offsets, R, host, dev);
        st = ring_upload(func, &x->ring, slot, step_blob_bytes(R), stream, t->device);
    }
    const dinf__ep_step *ds = (const dinf__ep_step *)dev;
    if (st == DINF_STATUS_OK)
        st = dinf__ep_cuda_pack(func, place, ds, send_rows, x->send_stage);
    if (st == DINF_STATUS_OK) {
        const dinf__nccl_api *nc = x->nccl;
        int result = nc->group_start();
        for (int32_t p = 0; p < R && result == 0; p++) {
            const size_t n_send = (size_t)(send_offsets[p + 1] - send_offsets[p]) * s->row_bytes;
            const size_t n_recv = (size_t)(recv_offsets[p + 1] - recv_offsets[p]) * s->row_bytes;
            /* inside the group an answer of ncclInProgress (nonblocking
             * communicator) is not a failure: the group end settles it */
            if (n_send)
                result = nc->send(x->send_stage + send_offsets[p] * s->row_bytes, n_send,
                                  DINF__NCCL_UINT8, p, x->comm, stream);
            if (result == DINF__NCCL_IN_PROGRESS)
                result = 0;
            if (result == 0 && n_recv)
                result = nc->recv(x->recv_stage + recv_offsets[p] * s->row_bytes, n_recv,
                                  DINF__NCCL_UINT8, p, x->comm, stream);
            if (result == DINF__NCCL_IN_PROGRESS)
                result = 0;
        }
        /* always closed, also after a failed call inside the group */
        const int end = nccl_settle(nc, x->comm, t->timeout_ms, nc->group_end());
        if (result == 0)
            result = end;
        if (result != 0)
            st = nccl_fail(x, func, "the grouped ncclSend/ncclRecv", result);
    }
    if (st == DINF_STATUS_OK)
        st = s->kind == DINF__EP_STEP_REDUCE
                 ? dinf__ep_cuda_reduce(func, place, ds, s->num_out_rows, x->recv_stage)
                 : dinf__ep_cuda_unpack(func, place, ds, recv_rows, x->recv_stage);
    if (st == DINF_STATUS_OK)
        st = ring_release(func, &x->ring, slot, stream, t->device);
    else
        n_break(x, st);
    guard_leave(&g);
    return st;
}

static dinf_status n_alltoallv(dinf__ep_transport *t, const char *func, const dinf__ep_a2a *a2a,
                               const dinf__place *place) {
    dinf__ep_step s;
    dinf_status st = dinf__ep_step_from_a2a(func, a2a, &s);
    if (st != DINF_STATUS_OK)
        return st;
    return n_move((nccl_transport *)t, func, &s, a2a->send_offsets, a2a->recv_offsets, place);
}

static dinf_status n_reduce(dinf__ep_transport *t, const char *func, const dinf__ep_reduce *red,
                            const dinf__place *place) {
    dinf__ep_step s;
    dinf_status st = dinf__ep_step_from_reduce(func, red, &s);
    if (st != DINF_STATUS_OK)
        return st;
    return n_move((nccl_transport *)t, func, &s, red->send_offsets, red->recv_offsets, place);
}

static void nccl_free(nccl_transport *x) {
    dev_guard g;
    guard_enter(&g, x->gpu.base.device);
    ring_free(&x->ring);
    if (x->error)
        cudaFreeHost(x->error);
    if (x->gather_host)
        cudaFreeHost(x->gather_host);
    if (x->gather_dev)
        cudaFree(x->gather_dev);
    if (x->send_stage)
        cudaFree(x->send_stage);
    if (x->recv_stage)
        cudaFree(x->recv_stage);
    gpu_common_free(&x->gpu);
    guard_leave(&g);
    free(x);
}

static void n_destroy(dinf__ep_transport *t) { nccl_free((nccl_transport *)t); }

static const dinf__ep_transport_ops nccl_ops = {
    .name = "nccl",
    .allgather = n_allgather,
    .alltoallv = n_alltoallv,
    .reduce_a2a = n_reduce,
    .barrier = n_barrier,
    .alloc = gpu_alloc,
    .free = gpu_free,
    .copy = gpu_copy,
    .plan_dispatch = dinf__ep_gpu_plan_dispatch,
    .localize_topk = dinf__ep_gpu_localize_topk,
    .plan_low_latency = dinf__ep_gpu_plan_low_latency,
    .ll_recv_rows = dinf__ep_gpu_ll_recv_rows,
    .destroy = n_destroy,
};

DINF_API dinf_status dinf_ep_group_create_nccl(void *nccl_comm, int32_t device,
                                               const dinf_ep_config *config,
                                               dinf_ep_group **group) {
    const char *func = __func__;
    dinf_ep_config cfg;
    dinf_status st = check_nccl_args(func, nccl_comm, device, config, group, &cfg);
    if (st != DINF_STATUS_OK)
        return st;
    st = require_device(func, device);
    if (st != DINF_STATUS_OK)
        return st;
    const dinf__nccl_api *nccl = NULL;
    st = dinf__nccl(func, &nccl);
    if (st != DINF_STATUS_OK)
        return st;
    int count = 0, rank = 0, cu_device = -1;
    /* a nonblocking communicator may still be initialising: wait (bounded) */
    int result = nccl_settle(nccl, nccl_comm, cfg.timeout_ms, DINF__NCCL_IN_PROGRESS);
    if (result == 0)
        result = nccl->comm_count(nccl_comm, &count);
    if (result == 0)
        result = nccl->comm_user_rank(nccl_comm, &rank);
    if (result == 0)
        result = nccl->comm_cu_device(nccl_comm, &cu_device);
    if (result != 0)
        return DINF_FAIL(DINF_STATUS_NCCL_ERROR, "querying the communicator failed: %s",
                         nccl->get_error_string(result));
    if (cu_device != device)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "device=%d but the communicator lives on CUDA device %d", (int)device,
                         cu_device);
    if (count < 1 || count > DINF_EP_MAX_RANKS)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "the communicator has %d ranks (1..%d supported)", count,
                         DINF_EP_MAX_RANKS);
    if (cfg.max_tokens_per_rank > INT32_MAX / count)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "%d ranks * max_tokens_per_rank=%lld exceeds 2^31-1 received rows", count,
                         (long long)cfg.max_tokens_per_rank);
    nccl_transport *x = calloc(1, sizeof *x);
    if (!x)
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "could not allocate the NCCL endpoint");
    dev_guard g;
    cudaError_t err = guard_enter(&g, device);
    if (err != cudaSuccess) {
        free(x);
        return cuda_fail(func, "making the device current", device, err);
    }
    x->nccl = nccl;
    x->comm = nccl_comm;
    st = gpu_common_init(func, &x->gpu, &nccl_ops, rank, count, device, &cfg);
    if (st == DINF_STATUS_OK)
        st = stage_bytes_for(func, &cfg, count, &x->stage_bytes);
    x->gather_bytes = dinf__ep_round_up(gather_bytes_for(&cfg, count), 16);
    const size_t gather_total = (size_t)x->gather_bytes * ((size_t)count + 1);
    if (st == DINF_STATUS_OK) {
        err = cudaMalloc((void **)&x->send_stage, (size_t)x->stage_bytes);
        if (err == cudaSuccess)
            err = cudaMalloc((void **)&x->recv_stage, (size_t)x->stage_bytes);
        if (err != cudaSuccess) {
            cudaGetLastError();
            st = DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY,
                           "could not allocate two %lld-byte NCCL stages on CUDA device %d",
                           (long long)x->stage_bytes, (int)device);
        }
    }
    if (st == DINF_STATUS_OK) {
        err = cudaMalloc((void **)&x->gather_dev, gather_total);
        if (err == cudaSuccess)
            err = cudaHostAlloc((void **)&x->gather_host, gather_total, cudaHostAllocDefault);
        if (err != cudaSuccess)
            st = cuda_fail(func, "allocating the NCCL all-gather buffers", device, err);
    }
    if (st == DINF_STATUS_OK)
        st = error_records(func, 1, device, &x->error, &x->error_dev);
    if (st == DINF_STATUS_OK)
        st = ring_init(func, &x->ring, step_blob_bytes(count), device);
    guard_leave(&g);
    if (st != DINF_STATUS_OK) {
        nccl_free(x);
        return st;
    }
    return dinf__ep_group_wrap(func, &x->gpu.base, &cfg, group);
}

#endif /* DINF_WITH_CUDA */
