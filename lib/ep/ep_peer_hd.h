/*
 * Index, offset and flag math of the GPU EP transports (lib/ep/ep_cuda.c and
 * kernels/ep/ep_kernels.cu), host-device so that the CPU tests
 * (tests/ep_gpu/test_ep_peer_hd.c) exercise exactly what the kernels run.
 * Not installed.
 *
 * Wire rows. Every row an all-to-all step moves travels as one "wire row":
 * the step's fields one after another, each starting at a 16-byte aligned
 * offset, then a 16-byte trailer whose first int32 is the sender's local row
 * index (recv_src_idx / recv_src_info). The same wire row is used by the NCCL
 * transport (rows packed by destination into a send stage, moved with
 * ncclSend/ncclRecv, unpacked from a receive stage) and by the peer-store
 * transports (rows stored straight into the destination's stage).
 *
 * Symmetric buffer of one rank (peer-store transports: CUDA IPC and virtual
 * ranks), all parts 256-byte aligned:
 *   ready  [R] uint64   ready[p] = last step rank p entered (p may now write my stage)
 *   arrive [R] uint64   arrive[p] = blocks of rank p that finished storing into
 *                       my stage, summed over all steps (monotonic)
 *   sent   [R] int64    sent[p] = (rows << 32 | wire row bytes) p stored in my
 *                       stage at the current step, written before its arrive increments
 *   gather [R][ag_bytes] the all-gather area: rank p's contribution at p * ag_bytes
 *   stage  [stage_bytes] wire rows; source p owns the slot
 *                       [p * slot_bytes, (p + 1) * slot_bytes), its i-th row for me at
 *                       p * slot_bytes + i * row_bytes
 * Step s (1, 2, ...; every rank counts the transport's collective steps the
 * same way) of a rank with B blocks: each block waits for ready[d] >= s on
 * every destination d it stores into (the destination finished reading its
 * stage at step s - 1: its step-s kernel started after its step-(s - 1)
 * kernel on the same stream), stores its rows, fences (system scope), then
 * adds 1 to arrive[me] on every peer (release). The receiver waits until
 * arrive[p] >= s * B for every source p (acquire), checks sent[p], and reads
 * its stage. Every wait is bounded by a %globaltimer (wall-time) budget; on
 * expiry the kernel records an error for the host and skips the rest of the
 * step.
 */
#ifndef DINF_EP_PEER_HD_H
#define DINF_EP_PEER_HD_H

#include "../core/numeric_hd.h"

#include <stdint.h>

#define DINF__EP_WIRE_ALIGN 16
#define DINF__EP_WIRE_TRAILER 16
#define DINF__EP_PEER_ALIGN 256
/* Blocks per rank of a peer-store step (upper bound; fewer when the
 * device cannot hold R * B co-resident blocks). Every rank of a group uses
 * the same B (the arrive targets depend on it). */
#define DINF__EP_PEER_MAX_BLOCKS 16
#define DINF__EP_PEER_THREADS 512

/* v rounded up to a multiple of a (a power of two); returns -1 on overflow
 * (v < 0 or too large). */
DINF_HD int64_t dinf__ep_round_up(int64_t v, int64_t a) {
    if (v < 0 || v > INT64_MAX - a)
        return -1;
    return (v + a - 1) & ~(a - 1);
}

/* Wire row layout of num_fields fields of field_bytes[i] bytes each: writes
 * the offset of each field into offsets[i] and returns the row bytes
 * (fields 16-byte aligned + the 16-byte trailer), or -1 when a size is
 * negative or the row would exceed 2^31 - 1 bytes. */
DINF_HD int64_t dinf__ep_wire_layout(const int64_t *field_bytes, int32_t num_fields,
                                     int64_t *offsets) {
    int64_t at = 0;
    for (int32_t i = 0; i < num_fields; i++) {
        offsets[i] = at;
        const int64_t b = dinf__ep_round_up(field_bytes[i], DINF__EP_WIRE_ALIGN);
        if (b < 0 || b > INT32_MAX - at)
            return -1;
        at += b;
    }
    if (at > INT32_MAX - DINF__EP_WIRE_TRAILER)
        return -1;
    return at + DINF__EP_WIRE_TRAILER;
}

/* Byte offset of the trailer (source row index) of a wire row. */
DINF_HD int64_t dinf__ep_wire_trailer(int64_t row_bytes) { return row_bytes - DINF__EP_WIRE_TRAILER; }

/* The symmetric buffer of one rank (see the top). */
typedef struct dinf__ep_peer_layout {
    int32_t num_ranks;
    int64_t ready_off, arrive_off, sent_off;
    int64_t gather_off, gather_bytes; /* per rank */
    int64_t stage_off, stage_bytes, slot_bytes;
    int64_t total_bytes;
} dinf__ep_peer_layout;

/* Fill *l for num_ranks >= 1 ranks, gather_bytes per rank's all-gather
 * contribution and stage_bytes of wire rows. Returns 0, or -1 when a size is
 * out of range or overflows. */
DINF_HD int dinf__ep_peer_layout_init(dinf__ep_peer_layout *l, int32_t num_ranks,
                                      int64_t gather_bytes, int64_t stage_bytes) {
    if (num_ranks < 1 || gather_bytes < 0 || stage_bytes < 0)
        return -1;
    const int64_t R = num_ranks, A = DINF__EP_PEER_ALIGN;
    l->num_ranks = num_ranks;
    l->ready_off = 0;
    l->arrive_off = dinf__ep_round_up(R * 8, A);
    l->sent_off = l->arrive_off + l->arrive_off; /* each array takes the same room */
    l->gather_off = l->sent_off + l->arrive_off;
    l->gather_bytes = dinf__ep_round_up(gather_bytes, 16);
    if (l->gather_bytes < 0 || l->gather_bytes > (INT64_MAX / 4) / R)
        return -1;
    l->stage_off = dinf__ep_round_up(l->gather_off + R * l->gather_bytes, A);
    /* every source's slot starts 16-byte aligned */
    l->slot_bytes = stage_bytes / R / DINF__EP_WIRE_ALIGN * DINF__EP_WIRE_ALIGN;
    l->stage_bytes = l->slot_bytes * R;
    if (l->stage_off < 0 || l->stage_bytes > INT64_MAX / 2 - l->stage_off)
        return -1;
    l->total_bytes = dinf__ep_round_up(l->stage_off + l->stage_bytes, A);
    return l->total_bytes < 0 ? -1 : 0;
}

/* Byte offset, inside its owner's stage, of row i that source src sends. */
DINF_HD int64_t dinf__ep_peer_slot_row(const dinf__ep_peer_layout *l, int32_t src, int64_t i,
                                       int64_t row_bytes) {
    return (int64_t)src * l->slot_bytes + i * row_bytes;
}

/* 1 when rows wire rows of row_bytes fit in one source slot. */
DINF_HD int dinf__ep_peer_fits(const dinf__ep_peer_layout *l, int64_t rows, int64_t row_bytes) {
    return rows >= 0 && row_bytes > 0 && rows <= l->slot_bytes / row_bytes;
}

/* The arrive count a receiver waits for after step `step` (>= 1) when every
 * rank runs blocks_per_rank blocks. */
DINF_HD uint64_t dinf__ep_arrive_target(uint64_t step, int32_t blocks_per_rank) {
    return step * (uint64_t)blocks_per_rank;
}

/* The sent[] word: rows and wire row bytes, checked by the receiver. */
DINF_HD int64_t dinf__ep_sent_word(int64_t rows, int64_t row_bytes) {
    return (int64_t)(((uint64_t)rows << 32) | (uint64_t)(uint32_t)row_bytes);
}

/* Receive row q of a grouped field (rows_per_group > 0): group *g, row *r
 * in it, as dinf__ep_field_recv_at splits it. Receive rows are < 2^31 (the
 * protocol's rows are int32), so the kernels divide in 32 bits. */
DINF_HD void dinf__ep_recv_split(int64_t q, int64_t rows_per_group, int64_t *g, int64_t *r) {
    if (rows_per_group > 0) {
        const uint32_t rpg = (uint32_t)rows_per_group, qq = (uint32_t)q;
        *g = (int64_t)(qq / rpg);
        *r = (int64_t)(qq % rpg);
    } else {
        *g = 0;
        *r = q;
    }
}

/* Byte offset in a receive stage of row pos from source src: the peer
 * stage's slot (slot_bytes > 0) or the NCCL receive stage, where the rows of
 * every source follow each other in receive order (slot_bytes == 0). */
DINF_HD int64_t dinf__ep_stage_row(int64_t slot_bytes, const int64_t *recv_offsets, int32_t src,
                                   int64_t pos, int64_t row_bytes) {
    return slot_bytes > 0 ? (int64_t)src * slot_bytes + pos * row_bytes
                          : (recv_offsets[src] + pos) * row_bytes;
}

/* Source rank of receive-order row j: the p with recv_offsets[p] <= j <
 * recv_offsets[p + 1] (recv_offsets [R + 1] non-decreasing, 0 <= j <
 * recv_offsets[R]); empty sources are skipped. */
DINF_HD int32_t dinf__ep_source_of(const int64_t *recv_offsets, int32_t num_ranks, int64_t j) {
    int32_t lo = 0, hi = num_ranks - 1; /* answer in [lo, hi] */
    while (lo < hi) {
        const int32_t mid = lo + (hi - lo + 1) / 2;
        if (recv_offsets[mid] <= j)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Widest unit (16, 8, 4, 2 or 1 bytes) that divides both addresses and the
 * byte count: the vector width of a row copy. */
DINF_HD int32_t dinf__ep_copy_unit(uint64_t dst, uint64_t src, int64_t bytes) {
    const uint64_t m = dst | src | (uint64_t)bytes;
    return (m & 15) == 0 ? 16 : (m & 7) == 0 ? 8 : (m & 3) == 0 ? 4 : (m & 1) == 0 ? 2 : 1;
}

/* Blocks per rank for num_ranks ranks sharing one cooperative launch on a
 * device that holds max_resident blocks of the step kernel at once:
 * min(DINF__EP_PEER_MAX_BLOCKS, max_resident / num_ranks), or 0 when not even
 * one block per rank fits. */
DINF_HD int32_t dinf__ep_blocks_per_rank(int64_t max_resident, int32_t num_ranks) {
    if (num_ranks < 1 || max_resident < num_ranks)
        return 0;
    const int64_t b = max_resident / num_ranks;
    return (int32_t)(b < DINF__EP_PEER_MAX_BLOCKS ? b : DINF__EP_PEER_MAX_BLOCKS);
}

/* Nanoseconds of the device-side wait budget for timeout_ms (saturating at
 * INT64_MAX; 0 for timeout_ms <= 0). The step kernel measures its waits with
 * %globaltimer (nanoseconds of wall time, the same on every SM), not clock64
 * (cycles of one SM's clock, which runs slower than the rated clock when the
 * GPU is idle or throttled, so a cycle budget would overshoot the host's
 * timeout several times over). */
DINF_HD int64_t dinf__ep_timeout_ns(int64_t timeout_ms) {
    if (timeout_ms <= 0)
        return 0;
    if (timeout_ms > INT64_MAX / 1000000)
        return INT64_MAX;
    return timeout_ms * 1000000;
}

/* 1 when a wait that started at start_ns (a %globaltimer reading) has
 * exceeded budget_ns at now_ns (unsigned difference: no overflow). */
DINF_HD int dinf__ep_wait_expired(uint64_t start_ns, uint64_t now_ns, int64_t budget_ns) {
    return now_ns - start_ns > (uint64_t)(budget_ns < 0 ? 0 : budget_ns);
}

/* Error codes a step kernel records for the host (first one wins). */
enum {
    DINF__EP_PEER_OK = 0,
    DINF__EP_PEER_TIMEOUT_READY = 1,  /* a destination never entered the step */
    DINF__EP_PEER_TIMEOUT_ARRIVE = 2, /* a source never finished storing */
    DINF__EP_PEER_BAD_COUNT = 3,      /* a source sent another row count / row size */
    DINF__EP_PEER_BAD_TERM = 4,       /* a combine term names a row outside its segment */
    DINF__EP_PEER_OVERFLOW = 5        /* a segment does not fit in its stage slot */
};

#endif /* DINF_EP_PEER_HD_H */
