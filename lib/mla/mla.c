/*
 * MLA decode: argument checks, the split-KV plan and the CPU implementation
 * (the oracle of the GPU kernels).
 *
 * The CPU path executes the plan of dinf_mla_get_metadata exactly as the
 * kernels will: one task per (piece of a part, KV head, 64-row m-block),
 * where a piece is one request's block range inside one SM part. A task
 * loads its query rows once (bf16 -> float32), streams the piece's 64-token
 * blocks through the block table (only rows below the request's length; the
 * causal limit per query row), and keeps an online softmax in base 2:
 *
 *   c = softmax_scale * log2(e);  s_j = c * (q . k_j)   (float32, fixed order)
 *   m' = max(m, max_j s_j);  alpha = 2^(m - m');  p_j = 2^(s_j - m')
 *   l = alpha * l + sum_j p_j;  acc = alpha * acc + sum_j p_j * v_j
 *
 * An unsplit request is finished in the task (out = bf16(acc / l),
 * lse = (log2 l + m) * ln 2, or 0 / +inf without keys); a split one writes
 * acc / l and log2 l + m (-inf without keys) to its workspace row
 * num_splits[req] + split_idx, and a second pass merges the partials with
 * dinf__mla_combine_lse2. Every output element is computed by one task in
 * a fixed order, so results do not depend on the thread count. An FP8 cache
 * is dequantized row by row into the same float32 key buffer, each value
 * rounded to bf16 as the kernels do (dinf__mla_fp8_value; exact with
 * power-of-two scales), so the FP8 decode is the BF16 decode of the
 * dequantized cache.
 *
 * The CPU path never allocates: the plan copy, the pieces and each worker's
 * scratch are carved from the caller's workspace (dinf_mla_workspace_size
 * counts them for the exec's thread count). DINF_EXEC_CUDA goes to the
 * launchers of kernels/mla (lib/mla/mla_cuda.h).
 */
#include "../core/internal.h"
#include "../core/numeric_hd.h"
#include "../core/parallel.h"
#include "mla_cpu.h"
#include "mla_fast_hd.h"
#include "mla_hd.h"
#if DINF_WITH_CUDA
#include "mla_cuda.h"
#endif

#include "deepinfra/mla.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define DQK DINF_MLA_HEAD_DIM_QK
#define DV DINF_MLA_HEAD_DIM_V
#define BM DINF_MLA_BLOCK_M
#define BN DINF_MLA_BLOCK_N
#define LOG2E 1.44269504088896340736f
#define LN2 0.69314718055994530942f

static int misaligned(const void *p, uintptr_t align) { return ((uintptr_t)p & (align - 1)) != 0; }

/* Each output against each other buffer (inputs may share memory). */
static dinf_status check_outputs_disjoint(const char *func, const dinf__buffer *bufs, int n,
                                          int num_outputs) {
    for (int i = 0; i < num_outputs; i++)
        for (int j = 0; j < n; j++) {
            if (j == i || (j < num_outputs && j < i))
                continue;
            const dinf__buffer pair[2] = {bufs[i], bufs[j]};
            dinf_status st = dinf__check_disjoint(func, pair, 2);
            if (st != DINF_STATUS_OK)
                return st;
        }
    return DINF_STATUS_OK;
}

/* ------------------------------------------------------------ metadata -- */

dinf_status dinf_mla_num_sm_parts(int32_t q_rows_per_head_kv, int32_t num_heads_kv,
                                  int32_t num_sms, int32_t *num_sm_parts) {
    if (!num_sm_parts)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_sm_parts is NULL");
    if (q_rows_per_head_kv < 1 || q_rows_per_head_kv > DINF_MLA_MAX_Q_ROWS)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "q_rows_per_head_kv=%d (s_q * h_q / h_kv) must be in [1, %d]",
                         (int)q_rows_per_head_kv, DINF_MLA_MAX_Q_ROWS);
    if (num_heads_kv < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_heads_kv=%d must be >= 1",
                         (int)num_heads_kv);
    if (num_sms < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_sms=%d must be >= 1", (int)num_sms);
    const int32_t m_blocks = (q_rows_per_head_kv + BM - 1) / BM;
    const int32_t parts = num_sms / num_heads_kv / m_blocks;
    *num_sm_parts = parts > 1 ? parts : 1;
    return DINF_STATUS_OK;
}

/* Checks shared by get_metadata and decode: batch, parts, lengths (the
 * values only when they are host memory). */
static dinf_status check_seqlens(const char *func, const int32_t *cache_seqlens, int64_t batch,
                                 int32_t num_sm_parts, int read_values) {
    if (batch < 0 || batch > DINF_MLA_MAX_BATCH)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "batch=%lld must be in [0, %d]",
                          (long long)batch, DINF_MLA_MAX_BATCH);
    if (num_sm_parts < 1 || num_sm_parts > DINF_MLA_MAX_SM_PARTS)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "num_sm_parts=%d must be in [1, %d]",
                          (int)num_sm_parts, DINF_MLA_MAX_SM_PARTS);
    if (batch > 0 && !cache_seqlens)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "cache_seqlens is NULL");
    if (misaligned(cache_seqlens, 4))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "cache_seqlens=%p is not 4-byte aligned", (const void *)cache_seqlens);
    for (int64_t i = 0; read_values && i < batch; i++)
        if (cache_seqlens[i] < 0)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "cache_seqlens[%lld]=%d is negative", (long long)i,
                              (int)cache_seqlens[i]);
    return DINF_STATUS_OK;
}

/* Both metadata calls after their own checks: the output pointers, their
 * overlap with each other and with the lengths (lens_name, lens_bytes), then
 * the plan of `requests` requests with lengths L, on the place. */
static dinf_status plan_into(const char *func, const dinf__place *place,
                             const dinf__mla_lengths *L, const char *lens_name,
                             size_t lens_bytes, int64_t requests, int32_t num_sm_parts,
                             int32_t *tile_scheduler_metadata, int32_t *num_splits) {
    if (!tile_scheduler_metadata)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "tile_scheduler_metadata is NULL");
    if (!num_splits)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "num_splits is NULL");
    if (misaligned(tile_scheduler_metadata, 4) || misaligned(num_splits, 4))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "tile_scheduler_metadata=%p and num_splits=%p must be 4-byte aligned",
                          (void *)tile_scheduler_metadata, (void *)num_splits);
    const dinf__buffer bufs[4] = {
        {"tile_scheduler_metadata", tile_scheduler_metadata,
         (size_t)num_sm_parts * DINF_MLA_METADATA_INTS * sizeof(int32_t)},
        {"num_splits", num_splits, (size_t)(requests + 1) * sizeof(int32_t)},
        {lens_name, L->lens, L->lens ? lens_bytes : 0},
        {"extras->extra_topk_length", L->lens2, L->lens2 ? lens_bytes : 0},
    };
    dinf_status st = check_outputs_disjoint(func, bufs, 4, 2);
    if (st != DINF_STATUS_OK)
        return st;
#if DINF_WITH_CUDA
    if (place->kind == DINF_EXEC_CUDA)
        return dinf__mla_metadata_cuda(func, place, L, requests, num_sm_parts,
                                       tile_scheduler_metadata, num_splits);
#else
    (void)place;
#endif
    if (dinf__mla_plan_lengths(L, requests, num_sm_parts, tile_scheduler_metadata, num_splits))
        return dinf__fail(DINF_STATUS_INTERNAL, func,
                          "the plan left work unassigned (%lld requests, num_sm_parts=%d)",
                          (long long)requests, (int)num_sm_parts);
    return DINF_STATUS_OK;
}

dinf_status dinf_mla_get_metadata(const int32_t *cache_seqlens, int64_t batch,
                                  int32_t num_sm_parts, int32_t *tile_scheduler_metadata,
                                  int32_t *num_splits, const dinf_exec *exec) {
    dinf__place place;
    dinf_status st = dinf__place_resolve(__func__, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    st = check_seqlens(__func__, cache_seqlens, batch, num_sm_parts, place.kind == DINF_EXEC_CPU);
    if (st != DINF_STATUS_OK)
        return st;
    const dinf__mla_lengths lengths = {cache_seqlens, 1, 0, NULL, 0};
    return plan_into(__func__, &place, &lengths, "cache_seqlens", (size_t)batch * sizeof(int32_t),
                     batch, num_sm_parts, tile_scheduler_metadata, num_splits);
}

/* ----------------------------------------------------------- workspace -- */

/* One request's block range inside one SM part. */
typedef struct piece {
    int32_t req, blk_begin, blk_end;
    int32_t split_row; /* workspace row, or -1: write out/lse directly */
} piece;

/* Per-worker CPU scratch. */
typedef struct task_scratch {
    float q[BM * DQK];
    float k[BN * DQK];
    float acc[BM * DV];
    float m[BM], l[BM], s[BM][BN]; /* s: scores, then the block's softmax weights */
    unsigned char masked[BN]; /* sparse: key j of the block is a skipped slot */
} task_scratch;

typedef struct workspace_layout {
    float *lse2;          /* [batch + parts][h_kv][q_rows] base-2 partial lse */
    float *oacc;          /* [batch + parts][h_kv][q_rows][512] partial outputs */
    int32_t *plan_meta;   /* CPU: [parts][8], the plan recomputed for checking */
    int32_t *plan_splits; /* CPU: [batch + 1] */
    piece *pieces;        /* CPU: [batch + parts] */
    task_scratch *scratch; /* CPU: [threads] */
} workspace_layout;

/* Measure (base == NULL) or carve the workspace; cpu_threads = 0 for the
 * GPU (partials only). Returns -1 on overflow. */
static int carve_workspace(dinf__arena *arena, int64_t batch, int32_t s_q, int32_t h_q,
                           int32_t parts, int32_t cpu_threads, workspace_layout *layout) {
    size_t rows;
    if (dinf__mul_size((size_t)(batch + parts), (size_t)s_q * (size_t)h_q, &rows))
        return -1;
    layout->lse2 = dinf__arena_take(arena, rows, sizeof(float));
    size_t elems;
    if (dinf__mul_size(rows, DV, &elems))
        return -1;
    layout->oacc = dinf__arena_take(arena, elems, sizeof(float));
    layout->plan_meta = layout->plan_splits = NULL;
    layout->pieces = NULL;
    layout->scratch = NULL;
    if (cpu_threads > 0) {
        layout->plan_meta =
            dinf__arena_take(arena, (size_t)parts * DINF_MLA_METADATA_INTS, sizeof(int32_t));
        layout->plan_splits = dinf__arena_take(arena, (size_t)batch + 1, sizeof(int32_t));
        layout->pieces = dinf__arena_take(arena, (size_t)(batch + parts), sizeof(piece));
        layout->scratch = dinf__arena_take(arena, (size_t)cpu_threads, sizeof(task_scratch));
    }
    return arena->overflow ? -1 : 0;
}

static dinf_status workspace_bytes_for(const char *func, int64_t batch, int32_t s_q, int32_t h_q,
                                       int32_t parts, const dinf__place *place, size_t *bytes) {
    dinf__arena arena = {0};
    workspace_layout layout;
    const int32_t threads = place->kind == DINF_EXEC_CPU ? place->threads : 0;
    if (carve_workspace(&arena, batch, s_q, h_q, parts, threads, &layout))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "the workspace for batch=%lld, seq_len_q=%d, num_heads_q=%d, "
                          "num_sm_parts=%d overflows size_t",
                          (long long)batch, (int)s_q, (int)h_q, (int)parts);
    *bytes = arena.used;
    return DINF_STATUS_OK;
}

dinf_status dinf_mla_workspace_size(int64_t batch, int32_t seq_len_q, int32_t num_heads_q,
                                    int32_t num_sm_parts, size_t *bytes, const dinf_exec *exec) {
    if (!bytes)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "bytes is NULL");
    if (batch < 0 || batch > DINF_MLA_MAX_BATCH)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "batch=%lld must be in [0, %d]",
                         (long long)batch, DINF_MLA_MAX_BATCH);
    if (seq_len_q < 1 || num_heads_q < 1 || num_sm_parts < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "seq_len_q=%d, num_heads_q=%d and num_sm_parts=%d must be >= 1",
                         (int)seq_len_q, (int)num_heads_q, (int)num_sm_parts);
    if (num_sm_parts > DINF_MLA_MAX_SM_PARTS)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_sm_parts=%d must be <= %d",
                         (int)num_sm_parts, DINF_MLA_MAX_SM_PARTS);
    dinf__place place;
    dinf_status st = dinf__place_resolve(__func__, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    return workspace_bytes_for(__func__, batch, seq_len_q, num_heads_q, num_sm_parts, &place,
                               bytes);
}

/* -------------------------------------------------------------- decode -- */

typedef struct decode_job {
    dinf__mla_params prm; /* the request/key/lse addressing (mla_hd.h), dense or sparse */
    const dinf__mla_cpu_kernels *kern; /* QK^T and P V in the CPU's widest vector set */
    const uint16_t *q;
    int kv_fp8;
    const int32_t *block_table;
    int64_t max_blocks;
    int32_t s_q, h_q, h_kv, heads_per_kv, q_rows, m_blocks, page, causal;
    float scale_log2;
    const piece *pieces;
    int64_t num_tasks;
    int32_t workers;
    const int32_t *num_splits;
    workspace_layout ws;
    uint16_t *out;
    float *lse;
} decode_job;

/* One cache row (576 values) as float32: bf16 bits, or an FP8 entry dequantized. */
static void load_key(const dinf__mla_cpu_kernels *kern, const unsigned char *src, int kv_fp8,
                     float *dst) {
    if (!kv_fp8) {
        kern->widen(src, DQK, dst);
        return;
    }
    float scales[DV / 128];
    memcpy(scales, src + DINF_MLA_FP8_SCALE_OFFSET, sizeof scales);
    for (int g = 0; g < DV / 128; g++)
        kern->dequant(src + g * 128, 128, scales[g], dst + g * 128);
    kern->widen(src + DINF_MLA_FP8_ROPE_OFFSET, DQK - DV, dst + DV);
}

/* One MODEL1 cache row (mla.h, "MODEL1 cache") as float32 in the 576-wide
 * layout: 448 dequantized latent channels, the 64 RoPE values, 64 zeros
 * (q's columns 512..575 are zero too, so the score is the 512-wide dot and
 * V, the first 512 columns, is the whole row). */
static void load_key_model1(const dinf__mla_cpu_kernels *kern, const unsigned char *data,
                            const unsigned char *scales, float *dst) {
    for (int g = 0; g < DINF_MLA_MODEL1_NOPE / 64; g++)
        kern->dequant(data + g * 64, 64, dinf__mla_e8m0_scale(scales[g]), dst + g * 64);
    kern->widen(data + DINF_MLA_MODEL1_NOPE, DINF_MLA_MODEL1_HEAD_DIM - DINF_MLA_MODEL1_NOPE,
                dst + DINF_MLA_MODEL1_NOPE);
    memset(dst + DINF_MLA_MODEL1_HEAD_DIM, 0, sizeof(float) * (DQK - DINF_MLA_MODEL1_HEAD_DIM));
}

static void run_task(const decode_job *job, task_scratch *ts, int64_t task) {
    const int64_t per_piece = (int64_t)job->h_kv * job->m_blocks;
    const piece *pc = &job->pieces[task / per_piece];
    const int32_t hk = (int32_t)(task % per_piece / job->m_blocks);
    const int32_t mb = (int32_t)(task % job->m_blocks);
    const int32_t row0 = mb * BM;
    const int32_t rows = job->q_rows - row0 < BM ? job->q_rows - row0 : BM;
    const int32_t s_k = dinf__mla_req_keys(&job->prm, pc->req);
    const int64_t entry_bytes = job->kv_fp8 ? DINF_MLA_FP8_ENTRY_BYTES : 2 * DQK;
    int32_t limit[BM];

    const int32_t q_dim = dinf__mla_q_dim(&job->prm); /* 576, or 512 (MODEL1: zeros after) */
    for (int32_t r = 0; r < rows; r++) {
        const int32_t qr = row0 + r, t = qr / job->heads_per_kv;
        const int32_t h = hk * job->heads_per_kv + qr % job->heads_per_kv;
        const uint16_t *src = job->q + (((int64_t)pc->req * job->s_q + t) * job->h_q + h) * q_dim;
        for (int d = 0; d < DQK; d++)
            ts->q[r * DQK + d] = d < q_dim ? dinf__f32_from_bf16(src[d]) : 0.0f;
        limit[r] = dinf__mla_key_limit(s_k, job->s_q, t, job->causal);
        ts->m[r] = -INFINITY;
        ts->l[r] = 0.0f;
        memset(ts->acc + (int64_t)r * DV, 0, sizeof(float) * DV);
    }
    /* rows the kernels compute past the tile's last (mla_cpu.h): zeros, and
     * their results are never used */
    const int32_t rows_padded = (rows + DINF__MLA_CPU_PAD - 1) / DINF__MLA_CPU_PAD * DINF__MLA_CPU_PAD;
    memset(ts->q + (int64_t)rows * DQK, 0, sizeof(float) * (size_t)(rows_padded - rows) * DQK);
    memset(ts->acc + (int64_t)rows * DV, 0, sizeof(float) * (size_t)(rows_padded - rows) * DV);
    const int32_t *bt = job->block_table + (int64_t)pc->req * job->max_blocks;
    const int sparse = job->prm.sparse_s_q > 0;
    const int64_t elem_bytes = job->kv_fp8 ? 1 : 2;
    for (int32_t blk = pc->blk_begin; blk < pc->blk_end; blk++) {
        const int32_t j0 = blk * BN;
        const int32_t n = s_k - j0 < BN ? s_k - j0 : BN;
        /* sparse: the block's list and cache (main or extra) */
        int32_t valid = n;
        int extra = 0;
        const int32_t *slots =
            sparse ? dinf__mla_sparse_block(&job->prm, pc->req, blk, &valid, &extra) : NULL;
        const unsigned char *cache = dinf__mla_cache(&job->prm, extra);
        int any_masked = 0;
        const int32_t page_size = extra ? job->prm.extra_page : job->prm.page;
        for (int32_t j = 0; j < n; j++) {
            int64_t off = 0;
            int32_t row = 0;
            /* the host checked every page / slot: 0 (found) or 1 (a skipped
             * sparse slot, whose zero row adds nothing: its score is -inf) */
            ts->masked[j] = sparse ? (j >= valid || dinf__mla_slot_loc(&job->prm, extra, slots[j],
                                                                       &off, &row) != 0)
                                   : dinf__mla_key_loc(&job->prm, bt, j0 + j, &off) != 0;
            if (ts->masked[j]) {
                any_masked = 1;
                memset(ts->k + (int64_t)j * DQK, 0, sizeof(float) * DQK);
                continue;
            }
            if (job->prm.model1)
                load_key_model1(job->kern, cache + off,
                                cache + dinf__mla_model1_scale_off(off, row, page_size),
                                ts->k + (int64_t)j * DQK);
            else
                load_key(job->kern, cache + off * elem_bytes + (int64_t)hk * entry_bytes,
                         job->kv_fp8, ts->k + (int64_t)j * DQK);
        }
        /* the keys the kernels compute past the block's last: zeros */
        const int32_t n_padded = (n + DINF__MLA_CPU_PAD - 1) / DINF__MLA_CPU_PAD * DINF__MLA_CPU_PAD;
        if (n_padded > n)
            memset(ts->k + (int64_t)n * DQK, 0, sizeof(float) * (size_t)(n_padded - n) * DQK);
        int32_t nv[BM];
        int32_t nv_max = 0;
        for (int32_t r = 0; r < rows; r++) {
            nv[r] = limit[r] - j0 < n ? limit[r] - j0 : n;
            nv[r] = nv[r] > 0 ? nv[r] : 0;
            nv_max = nv[r] > nv_max ? nv[r] : nv_max;
        }
        if (nv_max == 0)
            continue;
        /* Every row's scores against the keys before nv_max, then each row's
         * online softmax (scalar), then P V: each row's arithmetic is the
         * same, in the same order, whatever the other rows are. */
        job->kern->qk(ts->q, rows, ts->k, nv_max, &ts->s[0][0]);
        float alpha[BM];
        for (int32_t r = 0; r < rows_padded; r++) {
            float *sr = ts->s[r];
            alpha[r] = 1.0f;
            if (r >= rows || nv[r] == 0) {
                for (int32_t j = 0; j < nv_max; j++)
                    sr[j] = 0.0f; /* adds exactly nothing */
                continue;
            }
            float mx = -INFINITY;
            for (int32_t j = 0; j < nv[r]; j++) {
                sr[j] = any_masked && ts->masked[j] ? -INFINITY : sr[j] * job->scale_log2;
                mx = sr[j] > mx ? sr[j] : mx;
            }
            const float m_new = mx > ts->m[r] ? mx : ts->m[r];
            alpha[r] = ts->m[r] == -INFINITY ? 0.0f : exp2f(ts->m[r] - m_new);
            float sum = 0.0f;
            for (int32_t j = 0; j < nv[r]; j++) {
                /* a masked key (-inf) weighs exactly 0, also while every key
                 * so far is masked (m_new = -inf) */
                sr[j] = sr[j] == -INFINITY ? 0.0f : exp2f(sr[j] - m_new);
                sum += sr[j];
            }
            for (int32_t j = nv[r]; j < nv_max; j++)
                sr[j] = 0.0f; /* past the row's limit: contributes exactly nothing */
            ts->l[r] = alpha[r] * ts->l[r] + sum;
            ts->m[r] = m_new;
        }
        /* P V per group of DINF__MLA_CPU_PAD rows over the group's keys only:
         * a key past every row's limit in the group is never multiplied in
         * (0 * inf would be NaN) */
        for (int32_t r0 = 0; r0 < rows; r0 += DINF__MLA_CPU_PAD) {
            int32_t nv_group = 0;
            for (int32_t r = r0; r < r0 + DINF__MLA_CPU_PAD && r < rows; r++)
                nv_group = nv[r] > nv_group ? nv[r] : nv_group;
            if (nv_group > 0)
                job->kern->pv(ts->acc + (int64_t)r0 * DV, alpha + r0, ts->s[r0],
                              DINF__MLA_CPU_PAD, ts->k, nv_group);
        }
    }
    for (int32_t r = 0; r < rows; r++) {
        const int32_t qr = row0 + r, t = qr / job->heads_per_kv;
        const int32_t h = hk * job->heads_per_kv + qr % job->heads_per_kv;
        const float l = ts->l[r];
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        const float *acc = ts->acc + (int64_t)r * DV;
        if (pc->split_row < 0) {
            uint16_t *o = job->out + (((int64_t)pc->req * job->s_q + t) * job->h_q + h) * DV;
            /* the whole softmax here: with the sink (1 / l without one) */
            const float out_inv =
                dinf__mla_out_inv(l, ts->m[r], dinf__mla_sink2(job->prm.attn_sink, h));
            for (int d = 0; d < DV; d++)
                o[d] = dinf__bf16_from_f32(acc[d] * out_inv);
            job->lse[dinf__mla_lse_index(&job->prm, pc->req, h, t)] =
                l > 0.0f ? (log2f(l) + ts->m[r]) * LN2 : INFINITY;
        } else {
            const int64_t wrow = ((int64_t)pc->split_row * job->h_kv + hk) * job->q_rows + qr;
            float *o = job->ws.oacc + wrow * DV;
            for (int d = 0; d < DV; d++)
                o[d] = acc[d] * inv;
            job->ws.lse2[wrow] = l > 0.0f ? log2f(l) + ts->m[r] : -INFINITY;
        }
    }
}

/* Worker w runs tasks [w * T / W, (w + 1) * T / W) with scratch slot w. */
static void run_workers(void *ctx, int64_t begin, int64_t end) {
    const decode_job *job = ctx;
    for (int64_t w = begin; w < end; w++) {
        const int64_t t0 = w * job->num_tasks / job->workers;
        const int64_t t1 = (w + 1) * job->num_tasks / job->workers;
        for (int64_t t = t0; t < t1; t++)
            run_task(job, &job->ws.scratch[w], t);
    }
}

/* Merge the partials of split requests: one item per (request, h_kv * q_rows row). */
static void run_combine(void *ctx, int64_t begin, int64_t end) {
    const decode_job *job = ctx;
    const int64_t rows_per_req = (int64_t)job->h_kv * job->q_rows;
    float sum[DV];
    for (int64_t item = begin; item < end; item++) {
        const int64_t req = item / rows_per_req;
        const int32_t first = job->num_splits[req];
        const int32_t n = job->num_splits[req + 1] - first;
        if (n <= 1)
            continue;
        const int64_t row = item % rows_per_req; /* hk * q_rows + qr */
        const int32_t hk = (int32_t)(row / job->q_rows), qr = (int32_t)(row % job->q_rows);
        const int32_t t = qr / job->heads_per_kv;
        const int32_t h = hk * job->heads_per_kv + qr % job->heads_per_kv;
        const int64_t w0 = (int64_t)first * rows_per_req + row;
        const float *lse2 = job->ws.lse2 + w0;
        const float global = dinf__mla_combine_lse2(lse2, rows_per_req, n);
        /* the partials' weights include the sink; lse does not */
        const float with_sink =
            dinf__mla_lse2_with_sink(global, dinf__mla_sink2(job->prm.attn_sink, h));
        for (int d = 0; d < DV; d++)
            sum[d] = 0.0f;
        if (global != -INFINITY)
            for (int32_t i = 0; i < n; i++) {
                const float w = exp2f(lse2[i * rows_per_req] - with_sink);
                if (w == 0.0f)
                    continue;
                const float *o = job->ws.oacc + (w0 + i * rows_per_req) * DV;
                for (int d = 0; d < DV; d++)
                    sum[d] += w * o[d];
            }
        uint16_t *o = job->out + ((req * job->s_q + t) * job->h_q + h) * DV;
        for (int d = 0; d < DV; d++)
            o[d] = dinf__bf16_from_f32(sum[d]);
        job->lse[dinf__mla_lse_index(&job->prm, req, h, t)] =
            global == -INFINITY ? INFINITY : global * LN2;
    }
}

/*
 * Both decode entry points: kv_fp8 = 0 for a bf16 cache (strides in
 * elements), 1 for FP8 entries (strides in bytes).
 */
/* The sparse decode's own arguments (NULL: a dense decode). */
typedef struct sparse_args {
    const int32_t *indices;     /* [batch][s_q][topk] slots */
    const int32_t *topk_length; /* [batch] or NULL */
    int32_t topk;
    dinf_mla_sparse_extras ex;  /* DINF_MLA_SPARSE_EXTRAS_INIT: none */
} sparse_args;

/* Sparse extras: consistent, extra_topk in range, the extra lengths in
 * [0, extra_topk] (host memory only). for_decode: also the pointers only
 * the decode reads (the metadata call reads extra_topk and
 * extra_topk_length). */
static dinf_status check_extras(const char *func, const dinf_mla_sparse_extras *ex,
                                int64_t batch, int read_values, int for_decode) {
    if (ex->size < sizeof(dinf_mla_sparse_extras))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "extras->size=%u is smaller than the %zu bytes of "
                          "dinf_mla_sparse_extras (start from DINF_MLA_SPARSE_EXTRAS_INIT)",
                          ex->size, sizeof(dinf_mla_sparse_extras));
    if (ex->extra_topk < 0 || ex->extra_topk > DINF_MLA_MAX_TOPK)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "extras->extra_topk=%d must be 0 (no extra cache) or in [1, %d]",
                          (int)ex->extra_topk, DINF_MLA_MAX_TOPK);
    if (ex->extra_topk == 0) {
        if (!for_decode && ex->extra_topk_length)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "extras->extra_topk=0 (no extra cache) but extra_topk_length=%p: "
                              "it must be NULL",
                              (const void *)ex->extra_topk_length);
        if (for_decode && (ex->extra_topk_length || ex->extra_indices || ex->extra_k_cache))
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "extras->extra_topk=0 (no extra cache) but extra_k_cache=%p, "
                              "extra_indices=%p, extra_topk_length=%p: all must be NULL",
                              ex->extra_k_cache, (const void *)ex->extra_indices,
                              (const void *)ex->extra_topk_length);
        return DINF_STATUS_OK;
    }
    if (misaligned(ex->extra_topk_length, 4))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "extras->extra_topk_length=%p is not 4-byte aligned",
                          (const void *)ex->extra_topk_length);
    for (int64_t b = 0; read_values && ex->extra_topk_length && b < batch; b++)
        if (ex->extra_topk_length[b] < 0 || ex->extra_topk_length[b] > ex->extra_topk)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "extras->extra_topk_length[%lld]=%d must be in [0, extra_topk=%d]",
                              (long long)b, (int)ex->extra_topk_length[b], (int)ex->extra_topk);
    if (for_decode && (!ex->extra_k_cache || (batch > 0 && !ex->extra_indices)))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "extras->extra_topk=%d needs extra_k_cache=%p and extra_indices=%p",
                          (int)ex->extra_topk, ex->extra_k_cache,
                          (const void *)ex->extra_indices);
    return DINF_STATUS_OK;
}

/* One cache's geometry (the main cache, or the extra cache with prefix
 * "extras->extra_"): pages, strides (in bf16 elements, multiple of 8, or
 * bytes, multiple of 16) against the entry and page size; *span = the
 * cache's extent in its elements. format: 0 BF16, 1 FP8 (656-byte
 * entries), 2 the MODEL1 cache (one KV head, a token stride of 584: the
 * format's; pages of page_block_size * 584 bytes or more). */
static dinf_status check_cache(const char *func, const char *prefix, int format,
                               int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
                               int64_t kv_block_stride, int64_t kv_token_stride, int64_t *span) {
    if (num_blocks < 1)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%snum_blocks=%lld must be >= 1",
                          prefix, (long long)num_blocks);
    if (format == 2) {
        if (kv_token_stride != DINF_MLA_MODEL1_TOKEN_BYTES)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "%skv_token_stride=%lld: the MODEL1 cache has %d bytes per token "
                              "(its layout is fixed)",
                              prefix, (long long)kv_token_stride, DINF_MLA_MODEL1_TOKEN_BYTES);
        const int64_t page_bytes = (int64_t)page_block_size * DINF_MLA_MODEL1_TOKEN_BYTES;
        if (kv_block_stride < page_bytes || kv_block_stride % 16)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "%skv_block_stride=%lld bytes must be a multiple of 16 and >= "
                              "%spage_block_size * 584 = %lld (the MODEL1 cache)",
                              prefix, (long long)kv_block_stride, prefix, (long long)page_bytes);
        if (dinf__mul_i64(num_blocks - 1, kv_block_stride, span) ||
            __builtin_add_overflow(*span, page_bytes, span) || *span > INT64_MAX / 2)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "the sizes overflow int64 (%snum_blocks=%lld, %skv_block_stride=%lld)",
                              prefix, (long long)num_blocks, prefix, (long long)kv_block_stride);
        return DINF_STATUS_OK;
    }
    const int kv_fp8 = format == 1;
    const int64_t entry = kv_fp8 ? DINF_MLA_FP8_ENTRY_BYTES : DQK;
    const int64_t stride_align = kv_fp8 ? 16 : 8;
    const char *unit = kv_fp8 ? "bytes" : "elements";
    if (kv_token_stride < (int64_t)num_heads_kv * entry || kv_token_stride % stride_align)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "%skv_token_stride=%lld %s must be a multiple of %lld and >= "
                          "num_heads_kv * %lld = %lld",
                          prefix, (long long)kv_token_stride, unit, (long long)stride_align,
                          (long long)entry, (long long)num_heads_kv * entry);
    int64_t page_elems, t1;
    if (dinf__mul_i64(kv_token_stride, page_block_size, &page_elems) ||
        kv_block_stride < page_elems || kv_block_stride % stride_align)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "%skv_block_stride=%lld %s must be a multiple of %lld and >= "
                          "%spage_block_size * %skv_token_stride = %d * %lld",
                          prefix, (long long)kv_block_stride, unit, (long long)stride_align,
                          prefix, prefix, (int)page_block_size, (long long)kv_token_stride);
    if (dinf__mul_i64(num_blocks - 1, kv_block_stride, span) ||
        dinf__mul_i64(page_block_size - 1, kv_token_stride, &t1) ||
        __builtin_add_overflow(*span, t1 + (int64_t)num_heads_kv * entry, span) ||
        *span > INT64_MAX / 2)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "the sizes overflow int64 (%snum_blocks=%lld, %skv_block_stride=%lld)",
                          prefix, (long long)num_blocks, prefix, (long long)kv_block_stride);
    return DINF_STATUS_OK;
}

/* Sparse: topk and the topk_length values (host memory only). */
static dinf_status check_sparse_lengths(const char *func, const int32_t *topk_length,
                                        int64_t batch, int32_t topk, int read_values) {
    if (topk < 1 || topk > DINF_MLA_MAX_TOPK)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "topk=%d must be in [1, %d]",
                          (int)topk, DINF_MLA_MAX_TOPK);
    if (misaligned(topk_length, 4))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "topk_length=%p is not 4-byte aligned", (const void *)topk_length);
    for (int64_t b = 0; read_values && topk_length && b < batch; b++)
        if (topk_length[b] < 0 || topk_length[b] > topk)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "topk_length[%lld]=%d must be in [0, topk=%d]", (long long)b,
                              (int)topk_length[b], (int)topk);
    return DINF_STATUS_OK;
}

/* Sparse: the plan's request count batch * s_q, in range. */
static dinf_status sparse_requests(const char *func, int64_t batch, int32_t seq_len_q,
                                   int64_t *reqs) {
    if (batch < 0 || seq_len_q < 1 || batch > DINF_MLA_MAX_BATCH / seq_len_q)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "batch=%lld and seq_len_q=%d: need batch >= 0, seq_len_q >= 1 and "
                          "batch * seq_len_q <= %d (each query position is one sparse request)",
                          (long long)batch, (int)seq_len_q, DINF_MLA_MAX_BATCH);
    *reqs = batch * seq_len_q;
    return DINF_STATUS_OK;
}

/* One request's sparse list: names for the messages. */
typedef struct slot_list {
    const char *name;   /* "indices" */
    const char *cache;  /* "cache" */
    const char *blocks; /* "num_blocks" */
    const char *page;   /* "page_block_size" */
} slot_list;

/* The first n entries of one request's list (request b, query t) are
 * negative (skipped) or below blocks * page, the cache's slots (the caller
 * checked that the product fits). */
static dinf_status check_slot_list(const char *func, const slot_list *l, const int32_t *row,
                                   int32_t n, int64_t b, int64_t t, int64_t blocks, int page) {
    const int64_t num_slots = blocks * page;
    for (int32_t j = 0; j < n; j++)
        if (row[j] >= num_slots)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "%s[%lld][%lld][%d]=%d is outside the %s: slots are below %s * %s = "
                              "%lld * %d (negative: skipped)",
                              l->name, (long long)b, (long long)t, (int)j, (int)row[j], l->cache,
                              l->blocks, l->page, (long long)blocks, page);
    return DINF_STATUS_OK;
}

static dinf_status decode(const char *func, int kv_fp8, const uint16_t *q, int64_t batch,
                          int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim,
                          const void *k_cache, int64_t num_blocks, int32_t page_block_size,
                          int32_t num_heads_kv, int64_t kv_block_stride, int64_t kv_token_stride,
                          const int32_t *block_table, int64_t max_blocks_per_seq,
                          const int32_t *cache_seqlens, int32_t head_dim_v,
                          const int32_t *tile_scheduler_metadata, int32_t num_sm_parts,
                          const int32_t *num_splits, float softmax_scale, int32_t causal,
                          void *workspace, size_t workspace_bytes, uint16_t *out, float *lse,
                          const dinf_exec *exec, const sparse_args *sp) {
    dinf__place place;
    dinf_status st = dinf__place_resolve(func, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    const int host = place.kind == DINF_EXEC_CPU;
    /* The plan's requests: the batch's, or (sparse) its query positions,
     * each one request with one query position. */
    int64_t reqs = batch;
    int32_t req_s_q = seq_len_q;
    const char *table_name = sp ? "indices" : "block_table";
    if (sp) {
        st = sparse_requests(func, batch, seq_len_q, &reqs);
        if (st != DINF_STATUS_OK)
            return st;
        req_s_q = 1;
        block_table = sp->indices;
        max_blocks_per_seq = sp->topk;
        causal = 0;
    }
    /* Shapes (head_dim 512: the MODEL1 cache, sparse FP8 decode only). */
    const int model1 = head_dim == DINF_MLA_MODEL1_HEAD_DIM && sp && kv_fp8;
    if (head_dim == DINF_MLA_MODEL1_HEAD_DIM && !model1)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "head_dim=512 (the MODEL1 cache) is supported by the sparse FP8 decode "
                          "only (dinf_mla_sparse_decode_with_kvcache_fp8)");
    if (head_dim != DQK && !model1)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "head_dim=%d is not supported (576, or 512 for the MODEL1 cache)",
                          (int)head_dim);
    if (model1 && num_heads_kv != 1)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "num_heads_kv=%d: the MODEL1 cache holds one KV head",
                          (int)num_heads_kv);
    const int32_t q_dim = model1 ? DINF_MLA_MODEL1_HEAD_DIM : DQK;
    if (head_dim_v != DV)
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "head_dim_v=%d is not supported (only %d)", (int)head_dim_v, DV);
    if (sp) {
        if (page_block_size < 1 || page_block_size > DINF_MLA_MAX_SPARSE_PAGE)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "page_block_size=%d must be in [1, %d]", (int)page_block_size,
                              DINF_MLA_MAX_SPARSE_PAGE);
        if (num_sm_parts < 1 || num_sm_parts > DINF_MLA_MAX_SM_PARTS)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "num_sm_parts=%d must be in [1, %d]", (int)num_sm_parts,
                              DINF_MLA_MAX_SM_PARTS);
        st = check_sparse_lengths(func, sp->topk_length, batch, sp->topk, host);
    } else if (page_block_size != 64 && page_block_size != 32 && page_block_size != 16) {
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                          "page_block_size=%d is not supported (64, 32 or 16)",
                          (int)page_block_size);
    } else {
        st = check_seqlens(func, cache_seqlens, batch, num_sm_parts, host);
    }
    if (st != DINF_STATUS_OK)
        return st;
    if (seq_len_q < 1)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "seq_len_q=%d must be >= 1",
                          (int)seq_len_q);
    if (num_heads_q < 1 || num_heads_kv < 1)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "num_heads_q=%d and num_heads_kv=%d must be >= 1", (int)num_heads_q,
                          (int)num_heads_kv);
    if (num_heads_q % num_heads_kv)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "num_heads_q=%d is not a multiple of num_heads_kv=%d", (int)num_heads_q,
                          (int)num_heads_kv);
    /* query rows of one request per KV head (sparse: one query position) */
    const int64_t q_rows = (int64_t)req_s_q * (num_heads_q / num_heads_kv);
    if (q_rows > DINF_MLA_MAX_Q_ROWS)
        return sp ? dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                               "num_heads_q / num_heads_kv = %d / %d = %lld exceeds "
                               "DINF_MLA_MAX_Q_ROWS=%d (a sparse request has one query position)",
                               (int)num_heads_q, (int)num_heads_kv, (long long)q_rows,
                               DINF_MLA_MAX_Q_ROWS)
                  : dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                               "seq_len_q * num_heads_q / num_heads_kv = %d * %d / %d = %lld "
                               "exceeds DINF_MLA_MAX_Q_ROWS=%d",
                               (int)seq_len_q, (int)num_heads_q, (int)num_heads_kv,
                               (long long)q_rows, DINF_MLA_MAX_Q_ROWS);
    int64_t kc_elems = 0;
    st = check_cache(func, "", kv_fp8 + model1, num_blocks, page_block_size, num_heads_kv,
                     kv_block_stride, kv_token_stride, &kc_elems);
    if (st != DINF_STATUS_OK)
        return st;
    /* The sparse extras: the extra cache's geometry (the same entry and
     * h_kv as the main cache). */
    const dinf_mla_sparse_extras *ex = sp ? &sp->ex : NULL;
    int64_t extra_elems = 0;
    if (ex) {
        st = check_extras(func, ex, batch, host, 1);
        if (st != DINF_STATUS_OK)
            return st;
        if (ex->extra_topk > 0) {
            if (ex->extra_page_block_size < 1 ||
                ex->extra_page_block_size > DINF_MLA_MAX_SPARSE_PAGE)
                return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                                  "extras->extra_page_block_size=%d must be in [1, %d]",
                                  (int)ex->extra_page_block_size, DINF_MLA_MAX_SPARSE_PAGE);
            st = check_cache(func, "extras->extra_", kv_fp8 + model1, ex->extra_num_blocks,
                             ex->extra_page_block_size, num_heads_kv, ex->extra_kv_block_stride,
                             ex->extra_kv_token_stride, &extra_elems);
            if (st != DINF_STATUS_OK)
                return st;
        }
    }
    if (max_blocks_per_seq < 0 || max_blocks_per_seq > INT32_MAX)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "max_blocks_per_seq=%lld must be in [0, %d]",
                          (long long)max_blocks_per_seq, INT32_MAX);
    if (!(fabsf(softmax_scale) <= DINF_MLA_MAX_SOFTMAX_SCALE))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "softmax_scale=%g must be finite with |softmax_scale| <= %g",
                          (double)softmax_scale, (double)DINF_MLA_MAX_SOFTMAX_SCALE);
    if (causal != 0 && causal != 1)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "causal=%d must be 0 or 1",
                          (int)causal);

    /* Sizes in bytes (int64 products checked). */
    const int64_t elem_bytes = kv_fp8 ? 1 : 2;
    int64_t q_elems, o_elems, bt_elems, q_tokens, extra_bt_elems = 0;
    if (dinf__mul_i64(batch, seq_len_q, &q_tokens) ||
        dinf__mul_i64(q_tokens, num_heads_q, &q_tokens) ||
        dinf__mul_i64(q_tokens, q_dim, &q_elems) || dinf__mul_i64(q_tokens, DV, &o_elems) ||
        dinf__mul_i64(reqs, max_blocks_per_seq, &bt_elems) ||
        (ex && dinf__mul_i64(reqs, ex->extra_topk, &extra_bt_elems)) ||
        q_elems > INT64_MAX / 2 || o_elems > INT64_MAX / 2)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "the sizes overflow int64 (batch=%lld, num_blocks=%lld, "
                          "kv_block_stride=%lld, %s=%lld)",
                          (long long)batch, (long long)num_blocks, (long long)kv_block_stride,
                          sp ? "topk" : "max_blocks_per_seq", (long long)max_blocks_per_seq);

    /* Pointers. */
    const int have_rows = batch > 0;
    if (have_rows && (!q || !out || !lse || !num_splits))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "q=%p, out=%p, lse=%p and num_splits=%p must not be NULL",
                          (const void *)q, (void *)out, (void *)lse, (const void *)num_splits);
    if (!k_cache)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "k_cache is NULL");
    if (!tile_scheduler_metadata)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "tile_scheduler_metadata is NULL");
    if (have_rows && max_blocks_per_seq > 0 && !block_table)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%s is NULL", table_name);
    const struct {
        const char *name;
        const void *ptr;
        uintptr_t align;
    } aligned[] = {
        {"q", q, 16},
        {"k_cache", k_cache, 16},
        {"out", out, 16},
        {"lse", lse, 4},
        {table_name, block_table, 4},
        {"tile_scheduler_metadata", tile_scheduler_metadata, 4},
        {"num_splits", num_splits, 4},
        {"workspace", workspace, 16},
        {"extras->attn_sink", ex ? ex->attn_sink : NULL, 4},
        {"extras->extra_k_cache", ex ? ex->extra_k_cache : NULL, 16},
        {"extras->extra_indices", ex ? ex->extra_indices : NULL, 4},
    };
    for (size_t i = 0; i < sizeof aligned / sizeof aligned[0]; i++)
        if (misaligned(aligned[i].ptr, aligned[i].align))
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%s=%p is not %u-byte aligned",
                              aligned[i].name, aligned[i].ptr, (unsigned)aligned[i].align);

    /* Sparse: every slot read (the first topk_length[b] of each list) is
     * negative (skipped) or in its cache (host memory only). No overflow in
     * blocks * page: check_cache bounded (blocks - 1) * block stride + one
     * page's extent for each cache, and both are at least page (a page is
     * page rows of at least one element each). */
    for (int64_t r = 0; sp && host && r < reqs; r++) {
        const int64_t b = r / seq_len_q, t = r % seq_len_q;
        const int32_t n = sp->topk_length ? sp->topk_length[b] : sp->topk;
        const slot_list main_list = {"indices", "cache", "num_blocks", "page_block_size"};
        st = check_slot_list(func, &main_list, sp->indices + r * sp->topk, n, b, t, num_blocks,
                             page_block_size);
        if (st != DINF_STATUS_OK)
            return st;
        if (ex->extra_topk <= 0)
            continue;
        const int32_t n2 = ex->extra_topk_length ? ex->extra_topk_length[b] : ex->extra_topk;
        const slot_list extra_list = {"extras->extra_indices", "extra cache", "extra_num_blocks",
                                      "extra_page_block_size"};
        st = check_slot_list(func, &extra_list, ex->extra_indices + r * ex->extra_topk, n2, b, t,
                             ex->extra_num_blocks, ex->extra_page_block_size);
        if (st != DINF_STATUS_OK)
            return st;
    }
    /* Lengths against the block table, and the table's entries (host memory only). */
    for (int64_t b = 0; !sp && host && b < batch; b++) {
        const int64_t s_k = cache_seqlens[b];
        if (s_k > max_blocks_per_seq * page_block_size)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "cache_seqlens[%lld]=%lld exceeds the block table's capacity "
                              "max_blocks_per_seq * page_block_size = %lld * %d",
                              (long long)b, (long long)s_k, (long long)max_blocks_per_seq,
                              (int)page_block_size);
        const int64_t pages = (s_k + page_block_size - 1) / page_block_size;
        for (int64_t i = 0; i < pages; i++) {
            const int32_t e = block_table[b * max_blocks_per_seq + i];
            if (e < 0 || e >= num_blocks)
                return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                                  "block_table[%lld][%lld]=%d is outside [0, num_blocks=%lld) "
                                  "(request %lld has %lld keys)",
                                  (long long)b, (long long)i, (int)e, (long long)num_blocks,
                                  (long long)b, (long long)s_k);
        }
    }

    /* Workspace. */
    size_t ws_needed;
    st = workspace_bytes_for(func, reqs, req_s_q, num_heads_q, num_sm_parts, &place, &ws_needed);
    if (st != DINF_STATUS_OK)
        return st;

    /* Overlap: outputs and workspace against everything. */
    const dinf__buffer bufs[] = {
        {"out", out, (size_t)o_elems * 2},
        {"lse", lse, (size_t)q_tokens * sizeof(float)},
        {"workspace", workspace, workspace_bytes},
        {"q", q, (size_t)q_elems * 2},
        {"k_cache", k_cache, (size_t)(kc_elems * elem_bytes)},
        {table_name, block_table, (size_t)bt_elems * sizeof(int32_t)},
        {sp ? "topk_length" : "cache_seqlens", sp ? sp->topk_length : cache_seqlens,
         (size_t)batch * sizeof(int32_t)},
        {"tile_scheduler_metadata", tile_scheduler_metadata,
         (size_t)num_sm_parts * DINF_MLA_METADATA_INTS * sizeof(int32_t)},
        {"num_splits", num_splits, (size_t)(reqs + 1) * sizeof(int32_t)},
        {"extras->attn_sink", ex ? ex->attn_sink : NULL,
         ex && ex->attn_sink ? (size_t)num_heads_q * sizeof(float) : 0},
        {"extras->extra_k_cache", ex ? ex->extra_k_cache : NULL,
         (size_t)(extra_elems * elem_bytes)},
        {"extras->extra_indices", ex ? ex->extra_indices : NULL,
         (size_t)extra_bt_elems * sizeof(int32_t)},
        {"extras->extra_topk_length", ex ? ex->extra_topk_length : NULL,
         ex && ex->extra_topk_length ? (size_t)batch * sizeof(int32_t) : 0},
    };
    st = check_outputs_disjoint(func, bufs, (int)(sizeof bufs / sizeof bufs[0]), 3);
    if (st != DINF_STATUS_OK)
        return st;

    dinf__mla_params params = {
        .q = q,
        .k_cache = k_cache,
        .block_table = block_table,
        .seqlens = cache_seqlens,
        .meta = tile_scheduler_metadata,
        .num_splits = num_splits,
        .out = out,
        .lse = lse,
        .batch = reqs,
        .num_blocks = num_blocks,
        .max_blocks = max_blocks_per_seq,
        .kv_block_stride = kv_block_stride,
        .kv_token_stride = kv_token_stride,
        .s_q = req_s_q,
        .h_q = num_heads_q,
        .h_kv = num_heads_kv,
        .heads_per_kv = num_heads_q / num_heads_kv,
        .q_rows = (int32_t)q_rows,
        .m_blocks = (int32_t)((q_rows + BM - 1) / BM),
        .page = page_block_size,
        .causal = causal && seq_len_q > 1,
        .parts = num_sm_parts,
        .kv_fp8 = kv_fp8,
        .scale_log2 = softmax_scale * LOG2E,
        .topk_length = sp ? sp->topk_length : NULL,
        .topk = sp ? sp->topk : 0,
        .sparse_s_q = sp ? seq_len_q : 0,
        .extra_k_cache = ex ? ex->extra_k_cache : NULL,
        .extra_indices = ex ? ex->extra_indices : NULL,
        .extra_topk_length = ex ? ex->extra_topk_length : NULL,
        .extra_num_blocks = ex ? ex->extra_num_blocks : 0,
        .extra_block_stride = ex ? ex->extra_kv_block_stride : 0,
        .extra_token_stride = ex ? ex->extra_kv_token_stride : 0,
        .extra_topk = ex ? ex->extra_topk : 0,
        .extra_page = ex ? ex->extra_page_block_size : 0,
        .attn_sink = ex ? ex->attn_sink : NULL,
        .model1 = model1,
    };
    if (model1) /* the data rows (mla_hd.h: dinf__mla_params.model1) */
        params.kv_token_stride = params.extra_token_stride = DINF_MLA_MODEL1_ROW_BYTES;
    if (!host) {
#if DINF_WITH_CUDA
        /* The kernel rung: DINF_MLA_KERNEL (read on every call) or the fast
         * rung wherever its constraints hold (mla_fast_hd.h). */
        int rung;
        char msg[320];
        const int rc = dinf__mla_choose_rung(getenv("DINF_MLA_KERNEL"), kv_fp8, page_block_size,
                                             kv_block_stride, kv_token_stride, num_blocks,
                                             num_heads_kv, sp != NULL, &rung, msg, sizeof msg);
        if (rc == -1)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%s", msg);
        if (rc == -2)
            return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "%s", msg);
        /* The FP8 producer's L2 prefetch distance (fast and seesaw rungs):
         * DINF_MLA_FP8_PREFETCH, read on every call like DINF_MLA_KERNEL and
         * checked whatever the cache and rung, so that a typo never passes
         * silently. */
        int32_t prefetch;
        if (dinf__mla_fp8_prefetch_choice(getenv("DINF_MLA_FP8_PREFETCH"), &prefetch, msg,
                                          sizeof msg))
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%s", msg);
        params.fp8_prefetch = kv_fp8 ? prefetch : 0;
        if (batch == 0)
            return DINF_STATUS_OK;
        if (workspace_bytes < ws_needed || !workspace)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "workspace=%p with workspace_bytes=%zu: the GPU path needs the "
                              "%zu bytes dinf_mla_workspace_size gives",
                              workspace, workspace_bytes, ws_needed);
        dinf__arena real = {.base = workspace, .capacity = workspace_bytes};
        workspace_layout ws;
        carve_workspace(&real, reqs, req_s_q, num_heads_q, num_sm_parts, 0, &ws);
        params.lse2_acc = ws.lse2;
        params.o_acc = ws.oacc;
        return rung == DINF__MLA_RUNG_SIMPLE
                   ? dinf__mla_decode_cuda(func, &place, &params)
                   : dinf__mla_decode_fast_cuda(func, &place, &params, rung == DINF__MLA_RUNG_SEESAW);
#endif
    }

    /* The CPU kernels' vector set: the widest this CPU has, or DINF_CPU_ISA
     * (read on every call, checked even when there is nothing to compute). */
    char isa_msg[160];
    const int isa = dinf__cpu_isa(isa_msg, sizeof isa_msg);
    if (isa < 0)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%s", isa_msg);
    if (batch == 0)
        return DINF_STATUS_OK;
    if (workspace_bytes < ws_needed || !workspace)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "workspace=%p with workspace_bytes=%zu: this call needs the %zu bytes "
                          "dinf_mla_workspace_size gives for %d CPU threads",
                          workspace, workspace_bytes, ws_needed, (int)place.threads);
    dinf__arena real = {.base = workspace, .capacity = workspace_bytes};
    decode_job job;
    carve_workspace(&real, reqs, req_s_q, num_heads_q, num_sm_parts, place.threads, &job.ws);

    /* The plan must be the one for these lengths: recompute and compare. */
    const dinf__mla_lengths lengths = {sp ? sp->topk_length : cache_seqlens, sp ? seq_len_q : 1,
                                       sp ? sp->topk : 0, ex ? ex->extra_topk_length : NULL,
                                       ex ? ex->extra_topk : 0};
    if (dinf__mla_plan_lengths(&lengths, reqs, num_sm_parts, job.ws.plan_meta,
                               job.ws.plan_splits))
        return dinf__fail(DINF_STATUS_INTERNAL, func, "the plan left work unassigned");
    for (int64_t i = 0; i < (int64_t)num_sm_parts * DINF_MLA_METADATA_INTS; i++)
        if (tile_scheduler_metadata[i] != job.ws.plan_meta[i])
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "tile_scheduler_metadata[%lld][%lld]=%d does not match the plan for "
                              "these %s and num_sm_parts=%d (expected %d): call %s again when "
                              "%s change",
                              (long long)(i / DINF_MLA_METADATA_INTS),
                              (long long)(i % DINF_MLA_METADATA_INTS),
                              (int)tile_scheduler_metadata[i],
                              sp ? "topk_length, topk, extras, batch, seq_len_q" : "cache_seqlens",
                              (int)num_sm_parts, (int)job.ws.plan_meta[i],
                              sp ? "dinf_mla_get_sparse_metadata" : "dinf_mla_get_metadata",
                              sp ? "they" : "cache_seqlens");
    for (int64_t i = 0; i <= reqs; i++)
        if (num_splits[i] != job.ws.plan_splits[i])
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "num_splits[%lld]=%d does not match the plan for these "
                              "%s and num_sm_parts=%d (expected %d)",
                              (long long)i, (int)num_splits[i],
                              sp ? "topk_length, topk, extras, batch, seq_len_q" : "cache_seqlens",
                              (int)num_sm_parts, (int)job.ws.plan_splits[i]);
    const int any_split = num_splits[reqs] > reqs;

    /* Pieces: every (part, request) overlap of the plan (at most batch + parts). */
    piece *pieces = job.ws.pieces;
    int64_t num_pieces = 0;
    for (int32_t p = 0; p < num_sm_parts; p++) {
        const int32_t *m = tile_scheduler_metadata + (int64_t)p * DINF_MLA_METADATA_INTS;
        if (m[DINF_MLA_META_BEGIN_REQ] < 0)
            continue;
        for (int32_t r = m[DINF_MLA_META_BEGIN_REQ]; r <= m[DINF_MLA_META_END_REQ]; r++) {
            const int is_first = r == m[DINF_MLA_META_BEGIN_REQ];
            const int is_last = r == m[DINF_MLA_META_END_REQ];
            piece *pc = &pieces[num_pieces++];
            pc->req = r;
            pc->blk_begin = is_first ? m[DINF_MLA_META_BEGIN_BLOCK] : 0;
            pc->blk_end = is_last ? m[DINF_MLA_META_END_BLOCK]
                                  : dinf__mla_num_blocks(dinf__mla_length_at(&lengths, r));
            const int split = (is_first && m[DINF_MLA_META_FIRST_SPLIT]) ||
                              (is_last && m[DINF_MLA_META_LAST_SPLIT]);
            pc->split_row =
                split ? num_splits[r] + (is_first ? m[DINF_MLA_META_BEGIN_SPLIT] : 0) : -1;
        }
    }

    job.prm = params;
    job.kern = dinf__mla_cpu_kernels_for(isa);
    job.q = q;
    job.kv_fp8 = kv_fp8;
    job.block_table = block_table;
    job.max_blocks = max_blocks_per_seq;
    job.s_q = req_s_q;
    job.h_q = num_heads_q;
    job.h_kv = num_heads_kv;
    job.heads_per_kv = params.heads_per_kv;
    job.q_rows = params.q_rows;
    job.m_blocks = params.m_blocks;
    job.page = page_block_size;
    job.causal = params.causal;
    job.scale_log2 = params.scale_log2;
    job.pieces = pieces;
    job.num_tasks = num_pieces * num_heads_kv * job.m_blocks;
    job.workers = job.num_tasks < place.threads ? (int32_t)job.num_tasks : place.threads;
    job.num_splits = num_splits;
    job.out = out;
    job.lse = lse;

    if (job.workers > 0)
        dinf__parallel_for(job.workers, job.workers, 1, run_workers, &job);
    if (any_split)
        dinf__parallel_for(place.threads, reqs * num_heads_kv * q_rows, 64, run_combine, &job);
    return DINF_STATUS_OK;
}

dinf_status dinf_mla_decode_with_kvcache(
    const uint16_t *q, int64_t batch, int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim,
    const uint16_t *k_cache, int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *block_table,
    int64_t max_blocks_per_seq, const int32_t *cache_seqlens, int32_t head_dim_v,
    const int32_t *tile_scheduler_metadata, int32_t num_sm_parts, const int32_t *num_splits,
    float softmax_scale, int32_t causal, void *workspace, size_t workspace_bytes, uint16_t *out,
    float *lse, const dinf_exec *exec) {
    return decode(__func__, 0, q, batch, seq_len_q, num_heads_q, head_dim, k_cache, num_blocks,
                  page_block_size, num_heads_kv, kv_block_stride, kv_token_stride, block_table,
                  max_blocks_per_seq, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                  num_sm_parts, num_splits, softmax_scale, causal, workspace, workspace_bytes,
                  out, lse, exec, NULL);
}

dinf_status dinf_mla_decode_with_kvcache_fp8(
    const uint16_t *q, int64_t batch, int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim,
    const uint8_t *k_cache, int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *block_table,
    int64_t max_blocks_per_seq, const int32_t *cache_seqlens, int32_t head_dim_v,
    const int32_t *tile_scheduler_metadata, int32_t num_sm_parts, const int32_t *num_splits,
    float softmax_scale, int32_t causal, void *workspace, size_t workspace_bytes, uint16_t *out,
    float *lse, const dinf_exec *exec) {
    return decode(__func__, 1, q, batch, seq_len_q, num_heads_q, head_dim, k_cache, num_blocks,
                  page_block_size, num_heads_kv, kv_block_stride, kv_token_stride, block_table,
                  max_blocks_per_seq, cache_seqlens, head_dim_v, tile_scheduler_metadata,
                  num_sm_parts, num_splits, softmax_scale, causal, workspace, workspace_bytes,
                  out, lse, exec, NULL);
}

/* ------------------------------------------------------ sparse decode -- */

dinf_status dinf_mla_get_sparse_metadata(const int32_t *topk_length, int64_t batch,
                                         int32_t seq_len_q, int32_t topk, int32_t num_sm_parts,
                                         int32_t *tile_scheduler_metadata, int32_t *num_splits,
                                         const dinf_mla_sparse_extras *extras,
                                         const dinf_exec *exec) {
    dinf__place place;
    dinf_status st = dinf__place_resolve(__func__, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    int64_t reqs = 0;
    st = sparse_requests(__func__, batch, seq_len_q, &reqs);
    if (st != DINF_STATUS_OK)
        return st;
    if (num_sm_parts < 1 || num_sm_parts > DINF_MLA_MAX_SM_PARTS)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_sm_parts=%d must be in [1, %d]",
                         (int)num_sm_parts, DINF_MLA_MAX_SM_PARTS);
    st = check_sparse_lengths(__func__, topk_length, batch, topk, place.kind == DINF_EXEC_CPU);
    if (st != DINF_STATUS_OK)
        return st;
    const dinf_mla_sparse_extras none = DINF_MLA_SPARSE_EXTRAS_INIT;
    const dinf_mla_sparse_extras *ex = extras ? extras : &none;
    st = check_extras(__func__, ex, batch, place.kind == DINF_EXEC_CPU, 0);
    if (st != DINF_STATUS_OK)
        return st;
    const dinf__mla_lengths lengths = {topk_length, seq_len_q, topk, ex->extra_topk_length,
                                       ex->extra_topk};
    return plan_into(__func__, &place, &lengths, "topk_length", (size_t)batch * sizeof(int32_t),
                     reqs, num_sm_parts, tile_scheduler_metadata, num_splits);
}

dinf_status dinf_mla_sparse_decode_with_kvcache(
    const uint16_t *q, int64_t batch, int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim,
    const uint16_t *k_cache, int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *indices, int32_t topk,
    const int32_t *topk_length, int32_t head_dim_v, const int32_t *tile_scheduler_metadata,
    int32_t num_sm_parts, const int32_t *num_splits, float softmax_scale, void *workspace,
    size_t workspace_bytes, uint16_t *out, float *lse, const dinf_mla_sparse_extras *extras,
    const dinf_exec *exec) {
    sparse_args sp = {indices, topk_length, topk, DINF_MLA_SPARSE_EXTRAS_INIT};
    if (extras) { /* no more than the caller's struct holds (a short one is rejected) */
        memcpy(&sp.ex, extras, extras->size < sizeof sp.ex ? extras->size : sizeof sp.ex);
        sp.ex.size = extras->size;
    }
    return decode(__func__, 0, q, batch, seq_len_q, num_heads_q, head_dim, k_cache, num_blocks,
                  page_block_size, num_heads_kv, kv_block_stride, kv_token_stride, NULL, 0, NULL,
                  head_dim_v, tile_scheduler_metadata, num_sm_parts, num_splits, softmax_scale,
                  0, workspace, workspace_bytes, out, lse, exec, &sp);
}

dinf_status dinf_mla_sparse_decode_with_kvcache_fp8(
    const uint16_t *q, int64_t batch, int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim,
    const uint8_t *k_cache, int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *indices, int32_t topk,
    const int32_t *topk_length, int32_t head_dim_v, const int32_t *tile_scheduler_metadata,
    int32_t num_sm_parts, const int32_t *num_splits, float softmax_scale, void *workspace,
    size_t workspace_bytes, uint16_t *out, float *lse, const dinf_mla_sparse_extras *extras,
    const dinf_exec *exec) {
    sparse_args sp = {indices, topk_length, topk, DINF_MLA_SPARSE_EXTRAS_INIT};
    if (extras) { /* no more than the caller's struct holds (a short one is rejected) */
        memcpy(&sp.ex, extras, extras->size < sizeof sp.ex ? extras->size : sizeof sp.ex);
        sp.ex.size = extras->size;
    }
    return decode(__func__, 1, q, batch, seq_len_q, num_heads_q, head_dim, k_cache, num_blocks,
                  page_block_size, num_heads_kv, kv_block_stride, kv_token_stride, NULL, 0, NULL,
                  head_dim_v, tile_scheduler_metadata, num_sm_parts, num_splits, softmax_scale,
                  0, workspace, workspace_bytes, out, lse, exec, &sp);
}

/* ------------------------------------------------------- FP8 quantize -- */

/* Both quantizers' pointers (num_tokens > 0): not NULL, kv and k_cache
 * 16-byte aligned, slot_mapping 8-byte aligned, k_cache (cache_bytes)
 * disjoint from kv (kv_elems bf16 values) and slot_mapping. */
static dinf_status check_quantize_io(const char *func, const uint16_t *kv, int64_t kv_elems,
                                     const int64_t *slot_mapping, int64_t num_tokens,
                                     const uint8_t *k_cache, int64_t cache_bytes) {
    if (!kv || !slot_mapping || !k_cache)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "kv=%p, slot_mapping=%p and k_cache=%p must not be NULL",
                          (const void *)kv, (const void *)slot_mapping, (const void *)k_cache);
    if (misaligned(kv, 16) || misaligned(k_cache, 16) || misaligned(slot_mapping, 8))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "kv=%p and k_cache=%p must be 16-byte aligned, slot_mapping=%p 8-byte "
                          "aligned",
                          (const void *)kv, (const void *)k_cache, (const void *)slot_mapping);
    const dinf__buffer bufs[] = {
        {"k_cache", k_cache, (size_t)cache_bytes},
        {"kv", kv, (size_t)kv_elems * 2},
        {"slot_mapping", slot_mapping, (size_t)num_tokens * sizeof(int64_t)},
    };
    return check_outputs_disjoint(func, bufs, 3, 1);
}

/* One token, one head: 576 bf16 values -> one 656-byte entry. */
static void quantize_entry(const uint16_t *src, unsigned char *dst) {
    float scales[DV / 128];
    for (int c = 0; c < DV / 128; c++) {
        float amax = 0.0f;
        for (int d = 0; d < 128; d++) {
            const float a = fabsf(dinf__f32_from_bf16(src[c * 128 + d]));
            amax = a > amax ? a : amax;
        }
        scales[c] = dinf__mla_fp8_scale(amax);
        const float inv = 1.0f / scales[c];
        for (int d = 0; d < 128; d++)
            dst[c * 128 + d] = dinf__mla_fp8_code(dinf__f32_from_bf16(src[c * 128 + d]), inv);
    }
    memcpy(dst + DINF_MLA_FP8_SCALE_OFFSET, scales, sizeof scales);
    memcpy(dst + DINF_MLA_FP8_ROPE_OFFSET, src + DV, 2 * (DQK - DV));
}

typedef struct quantize_job {
    const uint16_t *kv;
    int64_t kv_token_ld;
    const int64_t *slots;
    unsigned char *cache;
    int64_t block_bytes, token_bytes;
    int32_t h_kv, page;
} quantize_job;

static void run_quantize(void *ctx, int64_t begin, int64_t end) {
    const quantize_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        const int64_t slot = job->slots[i];
        if (slot < 0)
            continue;
        unsigned char *row = job->cache + (slot / job->page) * job->block_bytes +
                             (slot % job->page) * job->token_bytes;
        for (int32_t hk = 0; hk < job->h_kv; hk++)
            quantize_entry(job->kv + i * job->kv_token_ld + (int64_t)hk * DQK,
                           row + (int64_t)hk * DINF_MLA_FP8_ENTRY_BYTES);
    }
}

dinf_status dinf_mla_quantize_kvcache_fp8(const uint16_t *kv, int64_t num_tokens,
                                          int32_t num_heads_kv, int64_t kv_token_ld,
                                          const int64_t *slot_mapping, uint8_t *k_cache,
                                          int64_t num_blocks, int32_t page_block_size,
                                          int64_t kv_block_stride, int64_t kv_token_stride,
                                          const dinf_exec *exec) {
    dinf__place place;
    dinf_status st = dinf__place_resolve(__func__, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    if (page_block_size != 64 && page_block_size != 32 && page_block_size != 16)
        return DINF_FAIL(DINF_STATUS_UNSUPPORTED,
                         "page_block_size=%d is not supported (64, 32 or 16)",
                         (int)page_block_size);
    if (num_tokens < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_tokens=%lld must be >= 0",
                         (long long)num_tokens);
    if (num_heads_kv < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_heads_kv=%d must be >= 1",
                         (int)num_heads_kv);
    if (num_blocks < 1)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_blocks=%lld must be >= 1",
                         (long long)num_blocks);
    if (kv_token_ld < (int64_t)num_heads_kv * DQK || kv_token_ld % 8)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "kv_token_ld=%lld must be a multiple of 8 and >= num_heads_kv * 576 = "
                         "%lld",
                         (long long)kv_token_ld, (long long)num_heads_kv * DQK);
    const int64_t entry = DINF_MLA_FP8_ENTRY_BYTES;
    if (kv_token_stride < (int64_t)num_heads_kv * entry || kv_token_stride % 16)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "kv_token_stride=%lld bytes must be a multiple of 16 and >= "
                         "num_heads_kv * 656 = %lld",
                         (long long)kv_token_stride, (long long)num_heads_kv * entry);
    int64_t page_bytes, cache_bytes, t1, kv_elems, slots_total;
    if (dinf__mul_i64(kv_token_stride, page_block_size, &page_bytes) ||
        kv_block_stride < page_bytes || kv_block_stride % 16)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "kv_block_stride=%lld bytes must be a multiple of 16 and >= "
                         "page_block_size * kv_token_stride = %d * %lld",
                         (long long)kv_block_stride, (int)page_block_size,
                         (long long)kv_token_stride);
    if (dinf__mul_i64(num_blocks - 1, kv_block_stride, &cache_bytes) ||
        dinf__mul_i64(page_block_size - 1, kv_token_stride, &t1) ||
        __builtin_add_overflow(cache_bytes, t1 + (int64_t)num_heads_kv * entry, &cache_bytes) ||
        dinf__mul_i64(num_blocks, page_block_size, &slots_total) ||
        (num_tokens > 0 && (dinf__mul_i64(num_tokens - 1, kv_token_ld, &kv_elems) ||
                            __builtin_add_overflow(kv_elems, (int64_t)num_heads_kv * DQK,
                                                   &kv_elems) ||
                            kv_elems > INT64_MAX / 2)))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "the sizes overflow int64 (num_tokens=%lld, num_blocks=%lld, "
                         "kv_block_stride=%lld)",
                         (long long)num_tokens, (long long)num_blocks, (long long)kv_block_stride);
    if (num_tokens == 0)
        return DINF_STATUS_OK;
    st = check_quantize_io(__func__, kv, kv_elems, slot_mapping, num_tokens, k_cache, cache_bytes);
    if (st != DINF_STATUS_OK)
        return st;
#if DINF_WITH_CUDA
    if (place.kind == DINF_EXEC_CUDA)
        return dinf__mla_quantize_fp8_cuda(__func__, &place, kv, num_tokens, num_heads_kv,
                                           kv_token_ld, slot_mapping, k_cache, slots_total,
                                           page_block_size, kv_block_stride, kv_token_stride);
#endif
    for (int64_t i = 0; i < num_tokens; i++)
        if (slot_mapping[i] < -1 || slot_mapping[i] >= slots_total)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "slot_mapping[%lld]=%lld is outside [-1, num_blocks * "
                             "page_block_size = %lld)",
                             (long long)i, (long long)slot_mapping[i], (long long)slots_total);
    quantize_job job = {kv, kv_token_ld, slot_mapping, k_cache, kv_block_stride,
                              kv_token_stride, num_heads_kv, page_block_size};
    dinf__parallel_for(place.threads, num_tokens, 16, run_quantize, &job);
    return DINF_STATUS_OK;
}

/* ---------------------------------------------------- MODEL1 quantize -- */

/* One token: 512 bf16 values -> its 576 data bytes and 8 scale bytes. */
static void quantize_model1_row(const uint16_t *src, unsigned char *data, unsigned char *scales) {
    for (int c = 0; c < DINF_MLA_MODEL1_NOPE / 64; c++) {
        float amax = 0.0f;
        for (int d = 0; d < 64; d++) {
            const float a = fabsf(dinf__f32_from_bf16(src[c * 64 + d]));
            amax = a > amax || a != a ? a : amax; /* NaN wins, as torch's max */
        }
        scales[c] = dinf__mla_model1_scale_exp(amax);
        const float inv = dinf__mla_model1_inv_scale(amax, scales[c]);
        for (int d = 0; d < 64; d++)
            data[c * 64 + d] = dinf__mla_fp8_code(dinf__f32_from_bf16(src[c * 64 + d]), inv);
    }
    scales[DINF_MLA_MODEL1_NOPE / 64] = 0; /* the pad byte */
    memcpy(data + DINF_MLA_MODEL1_NOPE, src + DINF_MLA_MODEL1_NOPE,
           2 * (DINF_MLA_MODEL1_HEAD_DIM - DINF_MLA_MODEL1_NOPE));
}

typedef struct quantize_model1_job {
    const uint16_t *kv;
    int64_t kv_token_ld;
    const int64_t *slots;
    unsigned char *cache;
    int64_t block_bytes;
    int32_t page;
} quantize_model1_job;

static void run_quantize_model1(void *ctx, int64_t begin, int64_t end) {
    const quantize_model1_job *job = ctx;
    for (int64_t i = begin; i < end; i++) {
        const int64_t slot = job->slots[i];
        if (slot < 0)
            continue;
        unsigned char *page = job->cache + (slot / job->page) * job->block_bytes;
        const int64_t row = slot % job->page;
        quantize_model1_row(job->kv + i * job->kv_token_ld,
                            page + row * DINF_MLA_MODEL1_ROW_BYTES,
                            page + (int64_t)job->page * DINF_MLA_MODEL1_ROW_BYTES + row * 8);
    }
}

dinf_status dinf_mla_quantize_kvcache_model1(const uint16_t *kv, int64_t num_tokens,
                                             int64_t kv_token_ld, const int64_t *slot_mapping,
                                             uint8_t *k_cache, int64_t num_blocks,
                                             int32_t page_block_size, int64_t kv_block_stride,
                                             const dinf_exec *exec) {
    dinf__place place;
    dinf_status st = dinf__place_resolve(__func__, exec, &place);
    if (st != DINF_STATUS_OK)
        return st;
    if (num_tokens < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "num_tokens=%lld must be >= 0",
                         (long long)num_tokens);
    if (page_block_size < 1 || page_block_size > DINF_MLA_MAX_SPARSE_PAGE)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "page_block_size=%d must be in [1, %d]",
                         (int)page_block_size, DINF_MLA_MAX_SPARSE_PAGE);
    if (kv_token_ld < DINF_MLA_MODEL1_HEAD_DIM || kv_token_ld % 8)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "kv_token_ld=%lld must be a multiple of 8 and >= 512",
                         (long long)kv_token_ld);
    int64_t cache_bytes = 0, kv_elems = 0, slots_total;
    st = check_cache(__func__, "", 2, num_blocks, page_block_size, 1, kv_block_stride,
                     DINF_MLA_MODEL1_TOKEN_BYTES, &cache_bytes);
    if (st != DINF_STATUS_OK)
        return st;
    if (dinf__mul_i64(num_blocks, page_block_size, &slots_total) ||
        (num_tokens > 0 && (dinf__mul_i64(num_tokens - 1, kv_token_ld, &kv_elems) ||
                            __builtin_add_overflow(kv_elems, (int64_t)DINF_MLA_MODEL1_HEAD_DIM,
                                                   &kv_elems) ||
                            kv_elems > INT64_MAX / 2)))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "the sizes overflow int64 (num_tokens=%lld, num_blocks=%lld)",
                         (long long)num_tokens, (long long)num_blocks);
    if (num_tokens == 0)
        return DINF_STATUS_OK;
    st = check_quantize_io(__func__, kv, kv_elems, slot_mapping, num_tokens, k_cache, cache_bytes);
    if (st != DINF_STATUS_OK)
        return st;
#if DINF_WITH_CUDA
    if (place.kind == DINF_EXEC_CUDA)
        return dinf__mla_quantize_model1_cuda(__func__, &place, kv, num_tokens, kv_token_ld,
                                              slot_mapping, k_cache, slots_total,
                                              page_block_size, kv_block_stride);
#endif
    for (int64_t i = 0; i < num_tokens; i++)
        if (slot_mapping[i] < -1 || slot_mapping[i] >= slots_total)
            return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                             "slot_mapping[%lld]=%lld is outside [-1, num_blocks * "
                             "page_block_size = %lld)",
                             (long long)i, (long long)slot_mapping[i], (long long)slots_total);
    quantize_model1_job job = {kv, kv_token_ld, slot_mapping, k_cache, kv_block_stride,
                               page_block_size};
    dinf__parallel_for(place.threads, num_tokens, 16, run_quantize_model1, &job);
    return DINF_STATUS_OK;
}
