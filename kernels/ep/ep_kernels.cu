/*
 * CUDA kernels of the GPU EP transports (lib/ep/ep_cuda.h): the local-work
 * ops (normal and low-latency planning, top-k localisation, low-latency
 * receive rows, the dispatch layout), the NCCL path's pack / unpack / reduce
 * of wire rows, and the peer-store step kernel of the CUDA IPC and
 * virtual-rank transports.
 *
 * Exactness: the planners produce exactly what lib/ep/ep_cpu.c produces
 * (same per-rank / per-expert orders: every position is computed by one
 * thread walking the tokens in ascending order; counts are integer atomics).
 * The reduction starts at float(bias0) + float(bias1) (upstream's order),
 * accumulates in float32 in term order with explicit __fmul_rn / __fadd_rn
 * (no FMA contraction; the file is also built with --fmad=false) and rounds
 * once, as dinf__ep_acc_bf16 and the threads transport do.
 *
 * Peer-store protocol: see lib/ep/ep_peer_hd.h. Flags are written with
 * st.release.sys / red.release.sys and read with ld.acquire.sys; every wait
 * is bounded by a %globaltimer (wall-time nanoseconds) budget and a timeout is
 * recorded for the host in the rank's host-mapped error record (never a
 * trap, never a hang).
 */
#include <cuda_runtime_api.h>

#include <time.h>

#include "../../lib/ep/ep_cuda.h"
#include "../../lib/ep/ep_hd.h"
#include "../../lib/ep/ep_plan_hd.h"
#include "../../lib/ep/ep_rows_hd.h"
#include "../../lib/core/cuda_guard.h"

namespace {

constexpr int kWarp = 32;
constexpr int kThreads = DINF__EP_PEER_THREADS;
constexpr int kWarps = kThreads / kWarp;
constexpr int kPlanThreads = 512;
constexpr int64_t kMaxGrid = 4096;

/* ------------------------------------------------------------ memory ops */

__device__ __forceinline__ uint64_t ld_acquire_sys(const uint64_t *p) {
    uint64_t v;
    asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ void st_release_sys(uint64_t *p, uint64_t v) {
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

__device__ __forceinline__ void red_add_release_sys(uint64_t *p, uint64_t v) {
    asm volatile("red.release.sys.global.add.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

/* Wall time in nanoseconds (the same clock on every SM, unlike clock64). */
__device__ __forceinline__ uint64_t global_ns() {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* Record an error for the host (host-mapped; the first one wins). */
__device__ __noinline__ void note_failure(int32_t *error, int32_t code, int32_t peer, uint64_t step) {
    if (!error)
        return;
    volatile int32_t *e = error;
    if (e[0] != 0)
        return;
    e[1] = peer;
    e[2] = int32_t(step & 0x7fffffff);
    __threadfence_system();
    e[0] = code;
    __threadfence_system();
}

/* ------------------------------------------------------- NCCL path */

/* The step descriptor in shared memory: its arrays are indexed at run time. */
__device__ __forceinline__ void load_step(dinf__ep_step *dst, const dinf__ep_step &src) {
    const uint32_t *from = reinterpret_cast<const uint32_t *>(&src);
    uint32_t *to = reinterpret_cast<uint32_t *>(dst);
    for (int i = threadIdx.x; i < int(sizeof(dinf__ep_step) / 4); i += blockDim.x)
        to[i] = from[i];
    __syncthreads();
}

__global__ void __launch_bounds__(kThreads) pack_kernel(const dinf__ep_step *param, char *stage) {
    __shared__ dinf__ep_step s;
    load_step(&s, *param);
    const int lane = threadIdx.x % kWarp;
    const int64_t total = s.send_offsets[s.num_ranks];
    for (int64_t j = int64_t(blockIdx.x) * kWarps + threadIdx.x / kWarp; j < total;
         j += int64_t(gridDim.x) * kWarps) {
        const int64_t row = s.send_rows ? s.send_rows[j] : j;
        dinf__ep_put_wire_row(&s, row, stage + j * s.row_bytes, lane, kWarp);
    }
}

__global__ void __launch_bounds__(kThreads) unpack_kernel(const dinf__ep_step *param,
                                                          const char *stage) {
    __shared__ dinf__ep_step s;
    load_step(&s, *param);
    const int lane = threadIdx.x % kWarp;
    const int64_t total = s.recv_offsets[s.num_ranks];
    for (int64_t j = int64_t(blockIdx.x) * kWarps + threadIdx.x / kWarp; j < total;
         j += int64_t(gridDim.x) * kWarps) {
        const int64_t q = s.recv_rows ? s.recv_rows[j] : j;
        dinf__ep_get_wire_row(&s, stage + j * s.row_bytes, q, lane, kWarp);
    }
}

__global__ void __launch_bounds__(kThreads) reduce_kernel(const dinf__ep_step *param,
                                                          const char *stage) {
    __shared__ dinf__ep_step s;
    load_step(&s, *param);
    const int lane = threadIdx.x % kWarp;
    int bad = 0;
    for (int64_t t = int64_t(blockIdx.x) * kWarps + threadIdx.x / kWarp; t < s.num_out_rows;
         t += int64_t(gridDim.x) * kWarps)
        bad |= dinf__ep_reduce_row(&s, t, stage, 0, lane, kWarp);
    if (bad)
        note_failure(s.error, DINF__EP_PEER_BAD_TERM, -1, 0);
}

/* ------------------------------------------------------- peer step */

__global__ void __launch_bounds__(kThreads, 1) peer_step_kernel(dinf__ep_peer_launch L) {
    __shared__ dinf__ep_step s;
    __shared__ int fail, fail_peer;
    const int32_t idx = int32_t(blockIdx.x) / L.blocks_per_rank;
    const int32_t b = int32_t(blockIdx.x) % L.blocks_per_rank;
    const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp;
    if (tid == 0) {
        fail = 0;
        fail_peer = -1;
    }
    load_step(&s, L.steps[idx]);
    const int32_t R = s.num_ranks, me = s.rank;
    const dinf__ep_peer_layout &lay = L.layout;
    char *mine = L.peers[me];
    const uint64_t *ready = reinterpret_cast<const uint64_t *>(mine + lay.ready_off);
    const uint64_t *arrive = reinterpret_cast<const uint64_t *>(mine + lay.arrive_off);
    const volatile int64_t *sent = reinterpret_cast<const volatile int64_t *>(mine + lay.sent_off);

    /* 1. enter the step: tell every rank (block 0), then wait until every
     *    rank has entered (its stage is free for this step's rows) */
    if (b == 0)
        for (int32_t d = tid; d < R; d += blockDim.x)
            st_release_sys(reinterpret_cast<uint64_t *>(L.peers[d] + lay.ready_off) + me, L.step);
    uint64_t t0 = global_ns();
    for (int32_t p = tid; p < R; p += blockDim.x)
        while (ld_acquire_sys(ready + p) < L.step)
            if (dinf__ep_wait_expired(t0, global_ns(), L.timeout_ns)) {
                atomicCAS(&fail, 0, DINF__EP_PEER_TIMEOUT_READY);
                fail_peer = p;
                break;
            }
    /* every segment must fit its slot (the same answer in every block) */
    if (tid == 0 && (s.kind == DINF__EP_STEP_A2A || s.kind == DINF__EP_STEP_REDUCE))
        for (int32_t d = 0; d < R; d++)
            if (!dinf__ep_peer_fits(&lay, s.send_offsets[d + 1] - s.send_offsets[d], s.row_bytes))
                atomicCAS(&fail, 0, DINF__EP_PEER_OVERFLOW);
    if (tid == 0 && s.kind == DINF__EP_STEP_GATHER && s.gather_bytes > lay.gather_bytes)
        atomicCAS(&fail, 0, DINF__EP_PEER_OVERFLOW);
    __syncthreads();
    if (fail) {
        if (tid == 0)
            note_failure(s.error, fail, fail_peer, L.step);
        return;
    }

    /* 2. store my rows into the destinations' stages */
    if (s.kind == DINF__EP_STEP_A2A || s.kind == DINF__EP_STEP_REDUCE) {
        const int64_t total = s.send_offsets[R];
        for (int64_t j = int64_t(b) * kWarps + warp; j < total;
             j += int64_t(L.blocks_per_rank) * kWarps) {
            const int32_t d = dinf__ep_source_of(s.send_offsets, R, j);
            const int64_t i = j - s.send_offsets[d];
            const int64_t row = s.send_rows ? s.send_rows[j] : j;
            char *wire =
                L.peers[d] + lay.stage_off + dinf__ep_peer_slot_row(&lay, me, i, s.row_bytes);
            dinf__ep_put_wire_row(&s, row, wire, lane, kWarp);
        }
    } else if (s.kind == DINF__EP_STEP_GATHER && b == 0) {
        for (int32_t d = warp; d < R; d += kWarps)
            dinf__ep_copy(L.peers[d] + lay.gather_off + int64_t(me) * lay.gather_bytes,
                          static_cast<const char *>(s.gather_in), s.gather_bytes, lane, kWarp);
    }
    if (b == 0)
        for (int32_t d = tid; d < R; d += blockDim.x) {
            int64_t word = 0;
            if (s.kind == DINF__EP_STEP_A2A || s.kind == DINF__EP_STEP_REDUCE)
                word = dinf__ep_sent_word(s.send_offsets[d + 1] - s.send_offsets[d], s.row_bytes);
            else if (s.kind == DINF__EP_STEP_GATHER)
                word = dinf__ep_sent_word(1, s.gather_bytes);
            *reinterpret_cast<volatile int64_t *>(L.peers[d] + lay.sent_off +
                                                  int64_t(me) * 8) = word;
        }
    __threadfence_system();
    __syncthreads();
    for (int32_t d = tid; d < R; d += blockDim.x)
        red_add_release_sys(reinterpret_cast<uint64_t *>(L.peers[d] + lay.arrive_off) + me, 1);

    /* 3. wait until every source's blocks have stored, check what they sent */
    const uint64_t target = dinf__ep_arrive_target(L.step, L.blocks_per_rank);
    t0 = global_ns();
    for (int32_t p = tid; p < R; p += blockDim.x) {
        int ok = 1;
        while (ld_acquire_sys(arrive + p) < target)
            if (dinf__ep_wait_expired(t0, global_ns(), L.timeout_ns)) {
                atomicCAS(&fail, 0, DINF__EP_PEER_TIMEOUT_ARRIVE);
                fail_peer = p;
                ok = 0;
                break;
            }
        if (!ok)
            continue;
        int64_t expected = 0;
        if (s.kind == DINF__EP_STEP_A2A || s.kind == DINF__EP_STEP_REDUCE)
            expected = dinf__ep_sent_word(s.recv_offsets[p + 1] - s.recv_offsets[p], s.row_bytes);
        else if (s.kind == DINF__EP_STEP_GATHER)
            expected = dinf__ep_sent_word(1, s.gather_bytes);
        if (sent[p] != expected) {
            atomicCAS(&fail, 0, DINF__EP_PEER_BAD_COUNT);
            fail_peer = p;
        }
    }
    __syncthreads();
    if (fail) {
        if (tid == 0)
            note_failure(s.error, fail, fail_peer, L.step);
        return;
    }

    /* 4. read my stage into the destinations */
    const char *stage = mine + lay.stage_off;
    int bad = 0;
    if (s.kind == DINF__EP_STEP_A2A) {
        const int64_t total = s.recv_offsets[R];
        for (int64_t j = int64_t(b) * kWarps + warp; j < total;
             j += int64_t(L.blocks_per_rank) * kWarps) {
            const int32_t p = dinf__ep_source_of(s.recv_offsets, R, j);
            const int64_t i = j - s.recv_offsets[p];
            const int64_t q = s.recv_rows ? s.recv_rows[j] : j;
            dinf__ep_get_wire_row(&s, stage + dinf__ep_peer_slot_row(&lay, p, i, s.row_bytes), q,
                                  lane, kWarp);
        }
    } else if (s.kind == DINF__EP_STEP_REDUCE) {
        for (int64_t t = int64_t(b) * kWarps + warp; t < s.num_out_rows;
             t += int64_t(L.blocks_per_rank) * kWarps)
            bad |= dinf__ep_reduce_row(&s, t, stage, lay.slot_bytes, lane, kWarp);
    }
    if (bad)
        note_failure(s.error, DINF__EP_PEER_BAD_TERM, -1, L.step);
}

/* ------------------------------------------------------- planners */

/* Smallest flat index of an entry outside [-1, E) into *bad (shared). */
__device__ __forceinline__ void find_bad(const int64_t *topk, int64_t count, int32_t E, unsigned long long *bad) {
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x)
        if (topk[i] < -1 || topk[i] >= E)
            atomicMin(bad, static_cast<unsigned long long>(i));
}

/*
 * Normal-mode plan (one block): result = {bad, mismatches, send_offsets[R + 1],
 * per_rank[R] (int32), per_expert[E] (int32)}. Thread r walks the tokens in
 * order for rank r, so positions equal the CPU's.
 */
__global__ void __launch_bounds__(kPlanThreads)
    plan_dispatch_kernel(const int64_t *topk, int64_t N, int32_t K, int32_t E, int32_t R,
                         int64_t *terms, int32_t *send_rows, int64_t *result,
                         const int32_t *c_rank, const int32_t *c_expert, const uint8_t *c_in) {
    __shared__ unsigned long long bad, mismatches;
    int64_t *offs = result + 2;
    int32_t *per_rank = reinterpret_cast<int32_t *>(offs + R + 1);
    int32_t *per_expert = per_rank + R;
    const int32_t L = E / R;
    if (threadIdx.x == 0) {
        bad = ~0ull;
        mismatches = 0;
    }
    __syncthreads();
    find_bad(topk, N * K, E, &bad);
    __syncthreads();
    if (bad != ~0ull) {
        if (threadIdx.x == 0) {
            result[0] = int64_t(bad);
            result[1] = 0;
        }
        return;
    }
    for (int32_t e = threadIdx.x; e < E; e += blockDim.x)
        per_expert[e] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < N * K; i += blockDim.x)
        if (topk[i] >= 0)
            atomicAdd(&per_expert[topk[i]], 1);
    for (int32_t r = threadIdx.x; r < R; r += blockDim.x)
        per_rank[r] = dinf__ep_plan_rank_column(topk, N, K, R, L, r, terms);
    __syncthreads();
    if (threadIdx.x == 0)
        dinf__ep_plan_offsets(per_rank, R, offs);
    __syncthreads();
    for (int32_t r = threadIdx.x; r < R; r += blockDim.x)
        dinf__ep_plan_rank_rows(terms, N, R, r, offs, send_rows);
    if (c_rank) {
        unsigned long long m = 0;
        for (int32_t r = threadIdx.x; r < R; r += blockDim.x)
            m += c_rank[r] != per_rank[r];
        for (int32_t e = threadIdx.x; e < E; e += blockDim.x)
            m += c_expert[e] != per_expert[e];
        for (int64_t i = threadIdx.x; i < N * R; i += blockDim.x)
            m += (c_in[i] != 0) != (terms[i] != -1);
        atomicAdd(&mismatches, m);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        result[0] = -1;
        result[1] = int64_t(mismatches);
    }
}

__global__ void __launch_bounds__(kThreads)
    localize_kernel(int64_t *topk, float *weights, int64_t count, int32_t rank, int32_t L) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t v = dinf__ep_local_expert(topk[i], rank, L);
        topk[i] = v;
        if (weights && v < 0)
            weights[i] = 0.0f;
    }
}

/*
 * Low-latency plan (one block): result = {bad, send_offsets[R + 1],
 * count[E] (int32)}; next [E] scratch. Thread e walks the selections in
 * order for expert e (positions equal the CPU's).
 */
__global__ void __launch_bounds__(kPlanThreads)
    plan_ll_kernel(const int64_t *topk, int64_t N, int32_t K, int32_t E, int32_t R, int64_t *terms,
                   int32_t *send_rows, int64_t *result, int64_t *next) {
    __shared__ unsigned long long bad;
    int64_t *offs = result + 1;
    int32_t *count = reinterpret_cast<int32_t *>(offs + R + 1);
    const int32_t L = E / R;
    if (threadIdx.x == 0)
        bad = ~0ull;
    __syncthreads();
    find_bad(topk, N * K, E, &bad);
    __syncthreads();
    if (bad != ~0ull) {
        if (threadIdx.x == 0)
            result[0] = int64_t(bad);
        return;
    }
    for (int32_t e = threadIdx.x; e < E; e += blockDim.x)
        count[e] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < N * K; i += blockDim.x) {
        if (topk[i] >= 0)
            atomicAdd(&count[topk[i]], 1);
        else
            terms[i] = -1;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        result[0] = -1;
        dinf__ep_ll_bases(count, R, L, next, offs);
    }
    __syncthreads();
    for (int32_t e = threadIdx.x; e < E; e += blockDim.x)
        if (count[e] > 0)
            dinf__ep_ll_expert_walk(topk, N, K, e, L, offs, next[e], terms, send_rows);
}

/* rows for the low-latency receive order: segment g = src * L + l starts at
 * start[g] and holds count[g] rows l * M + begin[g] + i. */
__global__ void __launch_bounds__(kThreads)
    ll_rows_kernel(const int64_t *begin, const int64_t *count, const int64_t *start, int32_t L,
                   int64_t segments, int64_t M, int32_t *rows) {
    for (int64_t g = blockIdx.x; g < segments; g += gridDim.x) {
        const int64_t l = g % L, b = begin[g], n = count[g], s0 = start[g];
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
            rows[s0 + i] = int32_t(dinf__ep_ll_row(l, M, b + i));
    }
}

__global__ void __launch_bounds__(kThreads)
    layout_kernel(const int64_t *topk, int64_t N, int32_t K, int32_t E, int32_t R,
                  int32_t *per_rank, int32_t *per_expert, uint8_t *in_rank,
                  unsigned long long *bad) {
    const int32_t L = E / R;
    for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < N;
         t += int64_t(gridDim.x) * blockDim.x) {
        const int64_t *row = topk + t * K;
        int valid = 1;
        for (int32_t k = 0; k < K; k++)
            if (row[k] < -1 || row[k] >= E) {
                atomicMin(bad, static_cast<unsigned long long>(t * K + k));
                valid = 0;
            }
        if (!valid)
            continue;
        if (in_rank)
            for (int32_t r = 0; r < R; r++)
                in_rank[t * R + r] = 0;
        for (int32_t k = 0; k < K; k++) {
            if (row[k] < 0)
                continue;
            atomicAdd(&per_expert[row[k]], 1);
            if (dinf__ep_first_slot_of_rank(row, k, L)) {
                const int32_t r = dinf__ep_rank_of_expert(row[k], L);
                atomicAdd(&per_rank[r], 1);
                if (in_rank)
                    in_rank[t * R + r] = 1;
            }
        }
    }
}

/* ------------------------------------------------------- host side */

unsigned grid_for(int64_t items, int64_t per_cta) {
    int64_t g = (items + per_cta - 1) / per_cta;
    return unsigned(g < 1 ? 1 : g > kMaxGrid ? kMaxGrid : g);
}

using dinf_cuda::device_guard;

dinf_status cuda_failed(const char *func, const char *what, int device, cudaError_t err) {
    cudaGetLastError(); /* clear a non-sticky error so that a later launch check is not blamed */
    return dinf__fail(DINF_STATUS_CUDA_ERROR, func, "%s on CUDA device %d failed: %s (%s)", what,
                      device, cudaGetErrorString(err), cudaGetErrorName(err));
}

#define GUARD(place)                                                                               \
    device_guard guard_;                                                                           \
    do {                                                                                           \
        cudaError_t e_ = guard_.enter((place)->device);                                            \
        if (e_ != cudaSuccess)                                                                     \
            return cuda_failed(func, "making the device current", (place)->device, e_);           \
        dinf_status s_ = dinf__cuda_check_stream(func, (int)(place)->device, (place)->stream);    \
        if (s_ != DINF_STATUS_OK)                                                                  \
            return s_;                                                                             \
    } while (0)

/* The planners and the layout read results back on the host (they validate
 * topk_idx and size the exchange), so they cannot run inside a CUDA graph
 * capture: refuse it with a clear status instead of invalidating the
 * caller's capture with a synchronisation. */
#define NO_CAPTURE(place, what)                                                                    \
    do {                                                                                           \
        if (dinf__cuda_stream_capturing((place)->stream) == 1)                                    \
            return dinf__fail(DINF_STATUS_UNSUPPORTED, func,                                       \
                              "%s waits on the host for its results and cannot be captured "      \
                              "into a CUDA graph; call it outside stream capture",                \
                              what);                                                               \
    } while (0)

#define CUDA_TRY(call, what)                                                                       \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            return cuda_failed(func, what, place->device, e_);                                     \
    } while (0)

cudaStream_t stream_of(const dinf__place *place) {
    return reinterpret_cast<cudaStream_t>(place->stream);
}

int64_t steady_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Wait until the stream is idle, at most timeout_ms, polling (never a
 * blocking cudaStreamSynchronize, never a copy to pageable memory before
 * it: both would wait without a bound). The planners run before the call's
 * first collective step, behind the previous call's steps on the same
 * stream; an NCCL step whose peer never comes never finishes on the device,
 * so only a bounded host wait keeps the call from hanging.
 */
dinf_status wait_idle(const char *func, const dinf__place *place, int64_t timeout_ms,
                      const char *what) {
    const int64_t deadline = steady_ms() + timeout_ms;
    for (;;) {
        const cudaError_t err = cudaStreamQuery(stream_of(place));
        if (err == cudaSuccess)
            return DINF_STATUS_OK;
        if (err != cudaErrorNotReady)
            return cuda_failed(func, what, place->device, err);
        if (steady_ms() > deadline)
            return dinf__fail(DINF_STATUS_TIMEOUT, func,
                              "%s on CUDA device %d did not finish within %lld ms (an earlier EP "
                              "step on the stream is waiting for a peer that does not come)",
                              what, place->device, (long long)timeout_ms);
        struct timespec nap = {0, 20000};
        nanosleep(&nap, nullptr);
    }
}

/* Planner scratch regions (dinf__ep_gpu.scratch). */
struct scratch_parts {
    int64_t *result; /* 2 + (R + 1) int64, then R + E int32 */
    int64_t *next;   /* [E] */
    int64_t *upload; /* 3 * [E] */
    size_t result_bytes;
};

size_t align256(size_t v) { return (v + 255) / 256 * 256; }

scratch_parts scratch_of(const dinf__ep_gpu *g, int32_t R, int32_t E) {
    scratch_parts p;
    char *base = static_cast<char *>(g->scratch);
    p.result_bytes = (2 + size_t(R) + 1) * 8 + (size_t(R) + size_t(E)) * 4;
    const size_t emax = size_t(g->max_experts);
    const size_t result_room = align256((2 + size_t(R) + 1) * 8 + (size_t(R) + emax) * 4);
    p.result = reinterpret_cast<int64_t *>(base);
    p.next = reinterpret_cast<int64_t *>(base + result_room);
    p.upload = reinterpret_cast<int64_t *>(base + result_room + align256(emax * 8));
    return p;
}

} // namespace

extern "C" size_t dinf__ep_gpu_scratch_bytes(int32_t num_ranks, int32_t max_experts) {
    const size_t R = size_t(num_ranks), E = size_t(max_experts);
    return align256((3 + R) * 8 + (R + E) * 4) + align256(E * 8) + align256(3 * E * 8);
}

extern "C" dinf_status dinf__ep_cuda_peer_capacity(const char *func, int32_t device,
                                                   int64_t *blocks) {
    int per_sm = 0, sms = 0;
    cudaError_t err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, peer_step_kernel,
                                                                    kThreads, 0);
    if (err == cudaSuccess)
        err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (err != cudaSuccess)
        return dinf__fail(DINF_STATUS_CUDA_ERROR, func,
                          "occupancy query on CUDA device %d failed: %s (%s)", (int)device,
                          cudaGetErrorString(err), cudaGetErrorName(err));
    *blocks = int64_t(per_sm) * sms;
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__ep_cuda_peer_step(const char *func, const dinf__place *place,
                                               const dinf__ep_peer_launch *launch) {
    GUARD(place);
    dinf__ep_peer_launch arg = *launch;
    void *args[] = {&arg};
    CUDA_TRY(cudaLaunchCooperativeKernel(reinterpret_cast<const void *>(peer_step_kernel),
                                         dim3(unsigned(launch->num_steps * launch->blocks_per_rank)),
                                         dim3(kThreads), args, 0, stream_of(place)),
             "the cooperative launch of the EP step kernel");
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__ep_cuda_pack(const char *func, const dinf__place *place,
                                          const dinf__ep_step *device_step, int64_t rows,
                                          char *stage) {
    GUARD(place);
    if (rows <= 0)
        return DINF_STATUS_OK;
    pack_kernel<<<grid_for(rows, kWarps), kThreads, 0, stream_of(place)>>>(device_step, stage);
    CUDA_TRY(cudaGetLastError(), "the EP pack kernel launch");
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__ep_cuda_unpack(const char *func, const dinf__place *place,
                                            const dinf__ep_step *device_step, int64_t rows,
                                            const char *stage) {
    GUARD(place);
    if (rows <= 0)
        return DINF_STATUS_OK;
    unpack_kernel<<<grid_for(rows, kWarps), kThreads, 0, stream_of(place)>>>(device_step, stage);
    CUDA_TRY(cudaGetLastError(), "the EP unpack kernel launch");
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__ep_cuda_reduce(const char *func, const dinf__place *place,
                                            const dinf__ep_step *device_step, int64_t rows,
                                            const char *stage) {
    GUARD(place);
    if (rows <= 0)
        return DINF_STATUS_OK;
    reduce_kernel<<<grid_for(rows, kWarps), kThreads, 0, stream_of(place)>>>(device_step, stage);
    CUDA_TRY(cudaGetLastError(), "the EP reduce kernel launch");
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__ep_gpu_plan_dispatch(
    dinf__ep_transport *t, const char *func, const int64_t *topk_idx, int64_t num_tokens,
    int32_t num_topk, int32_t num_experts, const int32_t *num_tokens_per_rank,
    const int32_t *num_tokens_per_expert, const uint8_t *is_token_in_rank, dinf__ep_plan *plan,
    int64_t *bad_entry, int64_t *layout_mismatches, const dinf__place *place) {
    GUARD(place);
    NO_CAPTURE(place, "the EP dispatch planner");
    const dinf__ep_gpu *g = reinterpret_cast<const dinf__ep_gpu *>(t);
    const int32_t R = t->num_ranks, E = num_experts;
    scratch_parts sp = scratch_of(g, R, E);
    cudaStream_t stream = stream_of(place);
    plan_dispatch_kernel<<<1, kPlanThreads, 0, stream>>>(
        topk_idx, num_tokens, num_topk, E, R, plan->terms, plan->send_rows, sp.result,
        num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank);
    CUDA_TRY(cudaGetLastError(), "the EP dispatch planner launch");
    dinf_status st = wait_idle(func, place, t->timeout_ms, "the EP dispatch planner");
    if (st != DINF_STATUS_OK)
        return st;
    int64_t head[2];
    CUDA_TRY(cudaMemcpyAsync(head, sp.result, sizeof head, cudaMemcpyDeviceToHost, stream),
             "copying the plan to the host");
    CUDA_TRY(cudaStreamSynchronize(stream), "the EP dispatch planner");
    *bad_entry = head[0];
    *layout_mismatches = head[1];
    if (head[0] >= 0)
        return DINF_STATUS_OK;
    const int64_t *offs = sp.result + 2;
    const int32_t *per_rank = reinterpret_cast<const int32_t *>(offs + R + 1);
    CUDA_TRY(cudaMemcpyAsync(plan->send_offsets, offs, size_t(R + 1) * 8, cudaMemcpyDeviceToHost,
                             stream),
             "copying the plan to the host");
    CUDA_TRY(cudaMemcpyAsync(plan->num_tokens_per_rank, per_rank, size_t(R) * 4,
                             cudaMemcpyDeviceToHost, stream),
             "copying the plan to the host");
    CUDA_TRY(cudaMemcpyAsync(plan->num_tokens_per_expert, per_rank + R, size_t(E) * 4,
                             cudaMemcpyDeviceToHost, stream),
             "copying the plan to the host");
    CUDA_TRY(cudaStreamSynchronize(stream), "copying the plan to the host");
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__ep_gpu_localize_topk(dinf__ep_transport *t, const char *func,
                                                  int64_t *topk_idx, float *topk_weights,
                                                  int64_t num_rows, int32_t num_topk,
                                                  int32_t num_experts, const dinf__place *place) {
    GUARD(place);
    const int64_t count = num_rows * num_topk;
    if (count <= 0)
        return DINF_STATUS_OK;
    localize_kernel<<<grid_for(count, kThreads), kThreads, 0, stream_of(place)>>>(
        topk_idx, topk_weights, count, t->rank, num_experts / t->num_ranks);
    CUDA_TRY(cudaGetLastError(), "the EP top-k localisation launch");
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__ep_gpu_plan_low_latency(dinf__ep_transport *t, const char *func,
                                                     const int64_t *topk_idx, int64_t num_tokens,
                                                     int32_t num_topk, int32_t num_experts,
                                                     dinf__ep_ll_plan *plan, int64_t *bad_entry,
                                                     const dinf__place *place) {
    GUARD(place);
    NO_CAPTURE(place, "the EP low-latency planner");
    const dinf__ep_gpu *g = reinterpret_cast<const dinf__ep_gpu *>(t);
    const int32_t R = t->num_ranks, E = num_experts;
    scratch_parts sp = scratch_of(g, R, E);
    cudaStream_t stream = stream_of(place);
    plan_ll_kernel<<<1, kPlanThreads, 0, stream>>>(topk_idx, num_tokens, num_topk, E, R,
                                                   plan->terms, plan->send_rows, sp.result, sp.next);
    CUDA_TRY(cudaGetLastError(), "the EP low-latency planner launch");
    dinf_status st = wait_idle(func, place, t->timeout_ms, "the EP low-latency planner");
    if (st != DINF_STATUS_OK)
        return st;
    CUDA_TRY(cudaMemcpyAsync(bad_entry, sp.result, 8, cudaMemcpyDeviceToHost, stream),
             "copying the plan to the host");
    CUDA_TRY(cudaStreamSynchronize(stream), "the EP low-latency planner");
    if (*bad_entry >= 0)
        return DINF_STATUS_OK;
    const int64_t *offs = sp.result + 1;
    CUDA_TRY(cudaMemcpyAsync(plan->send_offsets, offs, size_t(R + 1) * 8, cudaMemcpyDeviceToHost,
                             stream),
             "copying the plan to the host");
    CUDA_TRY(cudaMemcpyAsync(plan->num_selections_per_expert, offs + R + 1, size_t(E) * 4,
                             cudaMemcpyDeviceToHost, stream),
             "copying the plan to the host");
    CUDA_TRY(cudaStreamSynchronize(stream), "copying the plan to the host");
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__ep_gpu_ll_recv_rows(dinf__ep_transport *t, const char *func,
                                                 const int64_t *begin, const int64_t *count,
                                                 int32_t num_local_experts, int64_t m_rows,
                                                 int32_t *rows, const dinf__place *place) {
    GUARD(place);
    const dinf__ep_gpu *g = reinterpret_cast<const dinf__ep_gpu *>(t);
    const int32_t R = t->num_ranks, L = num_local_experts;
    const int64_t segments = int64_t(R) * L;
    if (segments == 0)
        return DINF_STATUS_OK;
    /* host: segments in receive order (src, then l) with their starts */
    int64_t *host = static_cast<int64_t *>(malloc(size_t(segments) * 3 * 8));
    if (!host)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "could not allocate %lld bytes",
                          (long long)(segments * 24));
    int64_t j = 0;
    for (int32_t src = 0; src < R; src++)
        for (int32_t l = 0; l < L; l++) {
            const int64_t gi = int64_t(src) * L + l;
            host[gi] = begin[int64_t(l) * R + src];
            host[segments + gi] = count[int64_t(l) * R + src];
            host[2 * segments + gi] = j;
            j += count[int64_t(l) * R + src];
        }
    scratch_parts sp = scratch_of(g, R, L * R);
    cudaStream_t stream = stream_of(place);
    /* pageable source: the copy has taken the bytes when it returns */
    cudaError_t err = cudaMemcpyAsync(sp.upload, host, size_t(segments) * 24,
                                      cudaMemcpyHostToDevice, stream);
    free(host);
    CUDA_TRY(err, "uploading the low-latency receive segments");
    ll_rows_kernel<<<grid_for(segments, 1), kThreads, 0, stream>>>(
        sp.upload, sp.upload + segments, sp.upload + 2 * segments, L, segments, m_rows, rows);
    CUDA_TRY(cudaGetLastError(), "the EP low-latency receive rows launch");
    return DINF_STATUS_OK;
}

extern "C" dinf_status dinf__ep_layout_cuda(const char *func, const dinf__place *place,
                                            const int64_t *topk_idx, int64_t num_tokens,
                                            int32_t num_topk, int32_t num_experts,
                                            int32_t num_ranks, int32_t *num_tokens_per_rank,
                                            int32_t *num_tokens_per_expert,
                                            uint8_t *is_token_in_rank) {
    GUARD(place);
    NO_CAPTURE(place, "the EP layout");
    cudaStream_t stream = stream_of(place);
    unsigned long long *bad = nullptr;
    CUDA_TRY(cudaMallocAsync(reinterpret_cast<void **>(&bad), 8, stream),
             "allocating the layout's error word");
    cudaError_t err = cudaMemsetAsync(bad, 0xff, 8, stream);
    if (err == cudaSuccess)
        err = cudaMemsetAsync(num_tokens_per_rank, 0, size_t(num_ranks) * 4, stream);
    if (err == cudaSuccess)
        err = cudaMemsetAsync(num_tokens_per_expert, 0, size_t(num_experts) * 4, stream);
    if (err == cudaSuccess && num_tokens > 0) {
        layout_kernel<<<grid_for(num_tokens, kThreads), kThreads, 0, stream>>>(
            topk_idx, num_tokens, num_topk, num_experts, num_ranks, num_tokens_per_rank,
            num_tokens_per_expert, is_token_in_rank, bad);
        err = cudaGetLastError();
    }
    unsigned long long flat = ~0ull;
    if (err == cudaSuccess)
        err = cudaMemcpyAsync(&flat, bad, 8, cudaMemcpyDeviceToHost, stream);
    const cudaError_t freed = cudaFreeAsync(bad, stream);
    if (err == cudaSuccess)
        err = freed;
    if (err == cudaSuccess)
        err = cudaStreamSynchronize(stream);
    if (err != cudaSuccess)
        return cuda_failed(func, "the EP layout kernel", place->device, err);
    if (flat != ~0ull) {
        int64_t value = 0;
        err = cudaMemcpy(&value, topk_idx + flat, 8, cudaMemcpyDeviceToHost);
        if (err != cudaSuccess)
            return cuda_failed(func, "reading topk_idx", place->device, err);
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "topk_idx[%lld][%lld]=%lld is outside [-1, num_experts=%d)",
                          (long long)(flat / num_topk), (long long)(flat % num_topk),
                          (long long)value, (int)num_experts);
    }
    return DINF_STATUS_OK;
}
