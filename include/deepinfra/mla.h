/*
 * libdeepinfra mla: FlashMLA-style decode of DeepSeek's multi-head latent
 * attention over a paged KV cache, with split-KV scheduling (FlashMLA v1
 * semantics; the scheduling metadata layout is this library's own, see below),
 * and its sparse form (FlashMLA's indices API, DeepSeek V3.2, with the
 * 2026 API's attention sink and extra cache: "Sparse decode" below).
 *
 * MLA decode runs in its "absorbed" form, which is multi-query attention:
 * every cache row holds d_qk = 576 values (512 latent + 64 RoPE key), and V is
 * the first d_v = 512 columns of the same row. For request b, query position
 * t (0 <= t < s_q) and query head h (KV head hk = h / (h_q / h_kv)):
 *
 *   S[j]    = softmax_scale * sum_d q[b][t][h][d] * K[b][j][hk][d],  j < n_keys
 *   lse     = ln sum_j exp(S[j])              (+inf when n_keys == 0)
 *   out[d]  = sum_j exp(S[j] - lse) * K[b][j][hk][d],  d < 512   (0 when n_keys == 0)
 *
 * with n_keys = s_k (= cache_seqlens[b]) without causal masking and
 * s_k - (s_q - 1 - t) with it (bottom-right aligned: the last query position
 * sees every key; clamped at 0). Key j of request b lives in physical page
 * block_table[b][j / page_block_size], row j % page_block_size.
 *
 * Typical call sequence (once per decode step, the metadata shared by every
 * layer while cache_seqlens is unchanged):
 *
 *   int32_t parts;
 *   dinf_mla_num_sm_parts(s_q * h_q / h_kv, h_kv, num_sms, &parts);
 *   int32_t *meta = malloc(parts * DINF_MLA_METADATA_INTS * 4), *splits = malloc((b + 1) * 4);
 *   dinf_mla_get_metadata(cache_seqlens, b, parts, meta, splits, exec);
 *   size_t ws_bytes;
 *   dinf_mla_workspace_size(b, s_q, h_q, parts, &ws_bytes, exec);
 *   void *ws = aligned_alloc(64, ws_bytes);
 *   for each layer:
 *       dinf_mla_decode_with_kvcache(q, b, s_q, h_q, 576, kcache, num_blocks, 64, h_kv,
 *                                    kv_block_stride, kv_token_stride, block_table, max_blocks,
 *                                    cache_seqlens, 512, meta, parts, splits, scale, causal,
 *                                    ws, ws_bytes, out, lse, exec);
 *
 * Split-KV plan. The work of the batch is cut into num_sm_parts contiguous
 * ranges of (request, 64-token block) work in request order, one per
 * "SM part" (a persistent CTA on the GPU, a task on the CPU); each request
 * costs ceil(s_k/64) blocks + DINF_MLA_FIXED_OVERHEAD_BLOCKS. A request cut
 * across k parts yields k partial results (fp32 output and base-2 log-sum-exp
 * in the workspace), merged by a log-sum-exp combine; a request done by one
 * part is written straight to out/lse. The CPU path executes exactly this
 * plan, so the scheduler and the merge are exercised on every CPU call.
 *
 * Where it runs (exec, the last argument; NULL = CPU): the CPU
 * implementation accumulates in float32, reads pages through the block
 * table, never reads cache rows past a request's length (so stale or NaN
 * rows never reach a result), and gives bit-identical results for any
 * thread count. DINF_EXEC_CUDA runs the sm_90a kernels of kernels/mla on
 * the caller's stream (a Hopper device is required): device-side metadata
 * (one thread, no host synchronisation, CUDA-graph capturable, equal to the
 * CPU's plan), the split-KV decode and the log-sum-exp combine. The decode
 * has two rungs with the same plan, numerics (float32 online softmax in base
 * 2, P rounded to bf16) and guards:
 *   - fast (kernels/mla/mla_decode_fast.cu): TMA page loads into a
 *     two-stage shared-memory ring completed on mbarriers, wgmma for Q K^T and
 *     P V, a producer warpgroup (TMA for a BF16 cache; 16-byte loads and
 *     dequantization to bf16 for an FP8 cache) and two consumer warpgroups
 *     splitting the keys of Q K^T and the columns of the output; the combine
 *     is chained by programmatic dependent launch. It takes 64-token pages
 *     (BF16 cache: strides below 2^40 bytes, num_blocks below 2^31), and a
 *     sparse decode with the FP8 cache (any page size; "Sparse decode");
 *   - seesaw (same file): the fast rung's producer, ring, plan and combine
 *     with FlashMLA's "seesaw" consumers: two 64-key blocks per step, each
 *     consumer warpgroup computing one block's whole Q K^T (so one
 *     warpgroup's softmax overlaps the other's tensor-core work), P kept in
 *     the RoPE columns of its K stage; same constraints as fast;
 *   - simple (kernels/mla/mla_decode.cu): mma.sync m16n8k16, every page size;
 *     the reference rung.
 * The fast rung runs wherever its constraints hold, the simple one
 * otherwise (seesaw only when asked for, until measured). The environment
 * variable DINF_MLA_KERNEL (read on every call) forces one: "simple", "fast"
 * or "seesaw" (UNSUPPORTED, with the reason, on a decode those rungs cannot
 * take), or "auto"/unset. With an FP8 cache the fast and seesaw rungs'
 * producer also prefetches the pages of the blocks it will fill next into
 * L2 (cp.async.bulk.prefetch; its 16-byte register loads then hit L2); the
 * environment variable DINF_MLA_FP8_PREFETCH (read on every call) sets how
 * many blocks ahead: a decimal count 0..8, 0 = no prefetch, unset or empty
 * = 2 (anything else: INVALID_ARGUMENT on DINF_EXEC_CUDA, whatever the
 * cache; the BF16 cache and the simple rung ignore the count). The
 * prefetch asks for exactly the bytes the decode reads, never outside the
 * cache. On the GPU the values of cache_seqlens, block_table and the plan
 * stay in device memory
 * and are not checked on the host (that would synchronise): the kernels
 * never read or write outside the buffers, and a request whose block_table
 * entries are out of range, or whose length exceeds the table, gets NaN in
 * out and lse instead of an error.
 * On the CPU the decode runs its products as vector kernels in the widest
 * instruction set the CPU and OS support (AVX-512, AVX2, or the build's
 * baseline), all giving the same bits (NaN signs and payloads aside); the
 * environment
 * variable DINF_CPU_ISA (read on every call) caps it: "base", "avx2" or
 * "avx512" (a set above the CPU's gives the CPU's widest), unset or empty =
 * the widest (anything else: INVALID_ARGUMENT on the CPU).
 *
 * FP8 cache (dinf_mla_decode_with_kvcache_fp8, dinf_mla_quantize_kvcache_fp8).
 * FlashMLA ships FP8 only with sparse attention; this library also decodes
 * a dense FP8 cache. Its entry (one token, one KV head) is FlashMLA's own
 * "V32" layout, so that caches quantized by upstream tools work as is:
 *
 *   bytes [0, 512)    512 float8_e4m3fn codes of the latent (NoPE) part
 *   bytes [512, 528)  4 float32 scales, scale i for channels [128 i, 128 i + 128)
 *   bytes [528, 656)  64 bfloat16 RoPE values, unquantized
 *
 * = DINF_MLA_FP8_ENTRY_BYTES = 656 bytes. The value of channel d < 512 is
 * e4m3(code[d]) * scale[d / 128] rounded to bfloat16 (exact, no rounding,
 * with the power-of-two scales the quantizer writes; a cache with other
 * scales is rounded the same way on the CPU and the GPU); channels 512..575
 * are the bf16 RoPE values. Why this layout: per-128-channel scales keep the error of one
 * outlier local (DeepSeek's own granularity, also FlashInfer's
 * ckv_scale_arr), the RoPE part stays bf16 because it is small (128 B of
 * 656) and sensitive, and the format is the one upstream already produces.
 * The quantizer (dinf_mla_quantize_kvcache_fp8) picks, per 128 channels,
 * scale = the smallest power of two >= max(amax, 1e-4) / 448 (power-of-two
 * scales, as upstream's: they make dequantization exact in bf16, so the
 * kernels dequantize to bf16 and run the BF16 math unchanged; upstream's
 * test quantizer clamps amax / 448 at 1e-4 instead, a coarser scale where
 * amax < 0.0448, and a cache from either decodes alike: the decode reads
 * the stored scales), and
 * code = e4m3(x / scale) rounded to nearest even. A decode on an FP8 cache
 * is therefore exactly the BF16 decode on the dequantized cache.
 *
 * MODEL1 cache (FlashMLA 2026's second FP8 format, d_qk = 512: the sparse
 * FP8 decode with head_dim 512 reads it; upstream names the model only
 * "MODEL1"). q rows are 512 bf16 values (448 latent + 64 RoPE) and V is the
 * whole 512-wide key row (the RoPE part included), so out stays 512 wide.
 * One KV head. Page p (byte p * kv_block_stride) holds, for its rows r < P
 * (P = page_block_size): at byte r * 576, 448 e4m3 codes then 64 bf16 RoPE
 * values; at byte P * 576 + r * 8, seven ue8m0 scale exponents (channel c's
 * scale is 2^(e[c / 64] - 127); 255 is NaN) and a pad byte. That is 584
 * bytes per token (upstream views the cache as [num_blocks, P, 1, 584]
 * bytes, pages padded to a multiple of 576 bytes). Channel c < 448 is
 * e4m3(code[c]) * scale rounded to bfloat16 (exact for these scales).
 * dinf_mla_quantize_kvcache_model1 writes it: per 64 channels scale = the
 * smallest power of two >= max(amax / 448, 1e-4) (upstream's rule for this
 * format), code = e4m3(x / scale).
 *
 * bfloat16 arrays are passed as uint16_t bits. Rounding to bfloat16 is to
 * nearest, ties to even.
 */
#ifndef DEEPINFRA_MLA_H
#define DEEPINFRA_MLA_H

#include "deepinfra/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DINF_MLA_HEAD_DIM_QK 576 /* q and cache row width: 512 latent + 64 RoPE */
#define DINF_MLA_HEAD_DIM_V 512  /* V = the first 512 columns of a cache row */
#define DINF_MLA_BLOCK_M 64      /* query rows per tile (kernel m-block) */
#define DINF_MLA_BLOCK_N 64      /* keys per scheduling block (kernel n-block) */
#define DINF_MLA_METADATA_INTS 8 /* int32 per SM part in tile_scheduler_metadata */
#define DINF_MLA_FIXED_OVERHEAD_BLOCKS 5 /* scheduler cost of one split, in blocks */
#define DINF_MLA_MAX_Q_ROWS 8192 /* largest s_q * h_q / h_kv (sparse: h_q / h_kv; 128 m-blocks) */
#define DINF_MLA_MAX_BATCH 1048576
#define DINF_MLA_MAX_SM_PARTS 65536
#define DINF_MLA_MAX_TOPK 1048576 /* largest sparse topk */
#define DINF_MLA_MAX_SPARSE_PAGE 65536 /* largest page_block_size of a sparse decode */
/* |softmax_scale| bound: scale * log2(e) must stay a finite float */
#define DINF_MLA_MAX_SOFTMAX_SCALE 1e30f
/* FP8 cache entry: 512 e4m3 + 4 float32 scales + 64 bfloat16 (see above) */
#define DINF_MLA_FP8_ENTRY_BYTES 656
#define DINF_MLA_FP8_SCALE_OFFSET 512
#define DINF_MLA_FP8_ROPE_OFFSET 528
/* MODEL1 FP8 cache (sparse decode with head_dim 512; "MODEL1 cache" below) */
#define DINF_MLA_MODEL1_HEAD_DIM 512    /* d_qk = d_v: 448 latent + 64 RoPE */
#define DINF_MLA_MODEL1_NOPE 448        /* e4m3 latent channels, 7 scales of 64 */
#define DINF_MLA_MODEL1_ROW_BYTES 576   /* a row's 448 codes + 64 bf16 RoPE values */
#define DINF_MLA_MODEL1_TOKEN_BYTES 584 /* + its 8 scale bytes (7 ue8m0, 1 pad) */

/*
 * Fields of one SM part's row of tile_scheduler_metadata (int32 each).
 * Block indices count DINF_MLA_BLOCK_N-token blocks of the request.
 * A part without work has BEGIN_REQ = END_REQ = -1 and every other field 0.
 * This layout is libdeepinfra's own (v1's field order, counted in blocks,
 * with HEAD's first/last-split flags): metadata made by upstream FlashMLA is
 * not interchangeable with it; pass what dinf_mla_get_metadata produced.
 */
enum dinf_mla_metadata_field {
    DINF_MLA_META_BEGIN_REQ = 0,   /* first request of the part */
    DINF_MLA_META_BEGIN_BLOCK = 1, /* first block of BEGIN_REQ (inclusive) */
    DINF_MLA_META_END_REQ = 2,     /* last request of the part (inclusive) */
    DINF_MLA_META_END_BLOCK = 3,   /* end block of END_REQ (exclusive) */
    DINF_MLA_META_BEGIN_SPLIT = 4, /* split index of BEGIN_REQ's piece (0: it starts there) */
    DINF_MLA_META_FIRST_SPLIT = 5, /* 1 if BEGIN_REQ is cut across parts, else 0 */
    DINF_MLA_META_LAST_SPLIT = 6,  /* 1 if END_REQ is cut across parts, else 0 */
    DINF_MLA_META_RESERVED = 7,    /* 0 */
};

/*
 * dinf_mla_num_sm_parts - how many SM parts the scheduler should use:
 * max(num_sms / h_kv / ceil(q_rows_per_head_kv / 64), 1), as FlashMLA (the
 * GPU grid is m-blocks x h_kv x parts, one CTA per SM).
 * Arguments:
 *   q_rows_per_head_kv [IN]  s_q * h_q / h_kv, in [1, DINF_MLA_MAX_Q_ROWS]
 *   num_heads_kv       [IN]  h_kv >= 1
 *   num_sms            [IN]  >= 1: the device's SM count (132 on H100/H200);
 *                            on the CPU any value (it fixes the plan only)
 *   num_sm_parts       [OUT] caller-owned, not NULL
 * Pure; thread-safe. Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT.
 */
DINF_API dinf_status dinf_mla_num_sm_parts(int32_t q_rows_per_head_kv, int32_t num_heads_kv,
                                           int32_t num_sms, int32_t *num_sm_parts);

/*
 * dinf_mla_get_metadata - the split-KV plan for one batch (FlashMLA's
 * get_mla_metadata): a pure function of cache_seqlens and num_sm_parts.
 * Arguments:
 *   cache_seqlens [IN]  int32 [batch], contiguous, each >= 0 (0: empty request)
 *   batch         [IN]  0 <= batch <= DINF_MLA_MAX_BATCH
 *   num_sm_parts  [IN]  in [1, DINF_MLA_MAX_SM_PARTS] (dinf_mla_num_sm_parts)
 *   tile_scheduler_metadata [OUT] int32 [num_sm_parts][DINF_MLA_METADATA_INTS],
 *                       contiguous, caller-owned (fields: dinf_mla_metadata_field)
 *   num_splits    [OUT] int32 [batch + 1], caller-owned: num_splits[0] = 0 and
 *                       num_splits[i+1] - num_splits[i] = the number of pieces of
 *                       request i (>= 1); num_splits[batch] <= batch + num_sm_parts
 *   exec          [IN]  NULL = CPU
 * The outputs must not overlap cache_seqlens or each other. Every request,
 * empty ones included, is covered by exactly one piece or by consecutive
 * pieces whose block ranges tile [0, ceil(s_k/64)).
 * On DINF_EXEC_CUDA every array is device memory; the plan is computed by
 * one GPU thread on exec's stream (asynchronous, graph-capturable; the
 * lengths are not checked on the host, a negative length counts as 0).
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL pointers,
 * sizes out of range, a negative length, overlap), DINF_STATUS_UNSUPPORTED
 * (CUDA in a CPU-only build, a device that is not sm_90), DINF_STATUS_CUDA_ERROR.
 */
DINF_API dinf_status dinf_mla_get_metadata(const int32_t *cache_seqlens, int64_t batch,
                                           int32_t num_sm_parts, int32_t *tile_scheduler_metadata,
                                           int32_t *num_splits, const dinf_exec *exec);

/*
 * dinf_mla_workspace_size - bytes of the workspace dinf_mla_decode_with_kvcache
 * (and _fp8) needs on exec: the split partials, float32 log-sum-exp
 * [batch + num_sm_parts][h_q * s_q] and float32 outputs
 * [batch + num_sm_parts][h_q * s_q][512]; on the CPU also the call's own
 * scratch (a copy of the plan, the list of pieces and about 0.44 MB per
 * worker thread of exec), so that a decode call never allocates. Each area is
 * 64-byte aligned inside the workspace.
 * Arguments:
 *   batch, seq_len_q, num_heads_q, num_sm_parts [IN] as the decode call (>= 1, batch >= 0)
 *   bytes         [OUT] caller-owned, not NULL
 *   exec          [IN]  where the decode will run (NULL = CPU with all cores);
 *                       pass the same place to the decode call
 * Pure; thread-safe. Returns DINF_STATUS_OK or DINF_STATUS_INVALID_ARGUMENT
 * (ranges, overflow, a bad exec), DINF_STATUS_UNSUPPORTED (CUDA place in a
 * CPU-only build).
 */
DINF_API dinf_status dinf_mla_workspace_size(int64_t batch, int32_t seq_len_q, int32_t num_heads_q,
                                             int32_t num_sm_parts, size_t *bytes,
                                             const dinf_exec *exec);

/*
 * dinf_mla_decode_with_kvcache - MLA decode over a paged KV cache
 * (FlashMLA's flash_mla_with_kvcache), following the plan of
 * dinf_mla_get_metadata. Semantics: the top of this header.
 * Arguments:
 *   q               [IN]  bfloat16 [batch][seq_len_q][num_heads_q][576], contiguous,
 *                         16-byte aligned
 *   batch           [IN]  0 <= batch <= DINF_MLA_MAX_BATCH
 *   seq_len_q       [IN]  s_q >= 1 (query tokens per request, the same for all)
 *   num_heads_q     [IN]  h_q >= 1, a multiple of num_heads_kv; s_q * h_q / h_kv
 *                         at most DINF_MLA_MAX_Q_ROWS
 *   head_dim        [IN]  576 (anything else: UNSUPPORTED)
 *   k_cache         [IN]  bfloat16 [num_blocks][page_block_size][num_heads_kv][576]:
 *                         element (p, r, hk, d) at p * kv_block_stride +
 *                         r * kv_token_stride + hk * 576 + d; 16-byte aligned.
 *                         Rows past a request's length never reach a result (may
 *                         be NaN; the fast GPU rung copies whole 64-token pages
 *                         and masks and zeroes those rows in shared memory)
 *   num_blocks      [IN]  physical pages in k_cache, >= 1
 *   page_block_size [IN]  tokens per page: 64 (FlashMLA), 32 or 16 (else UNSUPPORTED)
 *   num_heads_kv    [IN]  h_kv >= 1 (1 for DeepSeek MLA)
 *   kv_block_stride [IN]  elements between pages, a multiple of 8,
 *                         >= page_block_size * kv_token_stride
 *   kv_token_stride [IN]  elements between rows of a page, a multiple of 8, >= h_kv * 576
 *   block_table     [IN]  int32 [batch][max_blocks_per_seq], contiguous: the physical
 *                         page of each logical page; entries past
 *                         ceil(s_k / page_block_size) are never read, the others must
 *                         be in [0, num_blocks)
 *   max_blocks_per_seq [IN] >= 0; s_k <= max_blocks_per_seq * page_block_size
 *   cache_seqlens   [IN]  int32 [batch], each >= 0: s_k per request
 *   head_dim_v      [IN]  512 (anything else: UNSUPPORTED)
 *   tile_scheduler_metadata, num_sm_parts, num_splits [IN] what
 *                         dinf_mla_get_metadata returned for these cache_seqlens and
 *                         num_sm_parts (the CPU path recomputes and compares them:
 *                         a stale plan is rejected; the GPU path cannot read them
 *                         on the host and trusts them, clamping every index)
 *   softmax_scale   [IN]  finite, |scale| <= DINF_MLA_MAX_SOFTMAX_SCALE (FlashMLA's default is 1/sqrt(576); DeepSeek models
 *                         pass their own)
 *   causal          [IN]  0 or 1; bottom-right aligned mask (no effect when s_q == 1)
 *   workspace       [IN,OUT] caller-owned scratch of workspace_bytes >=
 *                         dinf_mla_workspace_size(...), 16-byte aligned (always
 *                         needed when batch > 0; may be NULL when batch == 0)
 *   out             [OUT] bfloat16 [batch][seq_len_q][num_heads_q][512], contiguous,
 *                         16-byte aligned, caller-owned
 *   lse             [OUT] float32 [batch][num_heads_q][seq_len_q], contiguous,
 *                         caller-owned: natural-log log-sum-exp of the scaled scores,
 *                         +inf for a query position without keys
 *   exec            [IN]  NULL = CPU; DINF_EXEC_CUDA: every array is device memory
 *                         and the call is asynchronous on exec->stream
 *                         (graph-capturable; see "Where it runs")
 * Outputs and workspace must not overlap each other or any input (inputs may
 * share memory). Not graph-capturable on the CPU (it runs synchronously).
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL pointers,
 * sizes or strides out of range, misaligned pointers, a block_table entry
 * out of range inside a sequence, a length beyond the block table's
 * capacity, a plan that does not match, a workspace too small, overlap),
 * DINF_STATUS_UNSUPPORTED (head dims, page size, CUDA in a CPU-only build or
 * on a device that is not sm_90, DINF_MLA_KERNEL=fast or seesaw on a decode
 * those rungs cannot take), DINF_STATUS_CUDA_ERROR (a failed launch); on
 * DINF_EXEC_CUDA an unknown DINF_MLA_KERNEL value or a DINF_MLA_FP8_PREFETCH
 * value other than 0..8 is INVALID_ARGUMENT, on the CPU an unknown
 * DINF_CPU_ISA value.
 * The call never allocates: the CPU scratch is part of the workspace.
 */
DINF_API dinf_status dinf_mla_decode_with_kvcache(
    const uint16_t *q, int64_t batch, int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim,
    const uint16_t *k_cache, int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *block_table,
    int64_t max_blocks_per_seq, const int32_t *cache_seqlens, int32_t head_dim_v,
    const int32_t *tile_scheduler_metadata, int32_t num_sm_parts, const int32_t *num_splits,
    float softmax_scale, int32_t causal, void *workspace, size_t workspace_bytes, uint16_t *out,
    float *lse, const dinf_exec *exec);

/*
 * dinf_mla_decode_with_kvcache_fp8 - dinf_mla_decode_with_kvcache over an FP8
 * cache (the entry layout at the top of this header). Every argument is as
 * there, except:
 *   k_cache         [IN]  bytes [num_blocks][page_block_size][num_heads_kv][656]:
 *                         entry (p, r, hk) at byte p * kv_block_stride +
 *                         r * kv_token_stride + hk * 656; 16-byte aligned
 *   kv_block_stride [IN]  bytes between pages, a multiple of 16,
 *                         >= page_block_size * kv_token_stride
 *   kv_token_stride [IN]  bytes between rows of a page, a multiple of 16, >= h_kv * 656
 * The result equals dinf_mla_decode_with_kvcache on the dequantized cache
 * (bit for bit on the CPU). Same statuses.
 */
DINF_API dinf_status dinf_mla_decode_with_kvcache_fp8(
    const uint16_t *q, int64_t batch, int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim,
    const uint8_t *k_cache, int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *block_table,
    int64_t max_blocks_per_seq, const int32_t *cache_seqlens, int32_t head_dim_v,
    const int32_t *tile_scheduler_metadata, int32_t num_sm_parts, const int32_t *num_splits,
    float softmax_scale, int32_t causal, void *workspace, size_t workspace_bytes, uint16_t *out,
    float *lse, const dinf_exec *exec);

/*
 * Sparse decode (DeepSeek Sparse Attention, FlashMLA's
 * flash_mla_with_kvcache(..., indices=...)). Query position t of request b
 * attends only to the cache slots listed in indices[b][t][0 .. n_b), where a
 * slot is physical_page * page_block_size + row (the block table already
 * applied, as upstream) and n_b = topk_length[b] (topk when topk_length is
 * NULL). A negative slot (upstream writes -1) is invalid and skipped: it
 * adds nothing to the softmax. With the valid slots j of the list:
 *
 *   S[j]  = softmax_scale * sum_d q[b][t][h][d] * K[slot j][hk][d]
 *   lse   = ln sum_j exp(S[j])        (+inf when no slot is valid)
 *   out   = sum_j exp(S[j] - lse) * K[slot j][hk][0..512)   (0 when none)
 *
 * A slot listed twice counts twice (as upstream). There is no causal mask:
 * the list decides what each position sees. Every query head of a KV head
 * shares the list (upstream has h_kv = 1; any h_kv works here).
 *
 * Optional extras (dinf_mla_sparse_extras, FlashMLA's 2026 keywords):
 *
 *   attn_sink[h]: a per-head sink logit in the softmax's denominator only:
 *     out = sum_j exp(S[j]) * V[j] / (sum_j exp(S[j]) + exp(attn_sink[h])),
 *     i.e. out times exp(lse) / (exp(lse) + exp(sink)); lse is returned
 *     without the sink (as upstream). -inf is no sink; no valid slot: out 0.
 *   a second ("extra") cache with its own lists: position t of request b
 *     also attends to extra_indices[b][t][0 .. e_b) of extra_k_cache
 *     (e_b = extra_topk_length[b], or extra_topk), in the same softmax.
 *     Its slots use its own page size and strides; skipped the same way.
 *
 * Scheduling: each (b, t) is one "sparse request" of n_b keys, numbered
 * b * seq_len_q + t, split across SM parts like a dense request of n_b keys
 * (dinf_mla_get_sparse_metadata). With an extra cache the request has
 * ceil(n_b / 64) * 64 + e_b keys: the main list's slots, skipped keys up to
 * the next multiple of 64 (each 64-key block reads one cache), then the
 * extra list's (as upstream). Sizes for the calls it shares with the
 * dense decode:
 *   dinf_mla_num_sm_parts(num_heads_q / num_heads_kv, num_heads_kv, num_sms, &parts)
 *   dinf_mla_workspace_size(batch * seq_len_q, 1, num_heads_q, parts, &bytes, exec)
 * On the GPU (any page size: the slots are gathered per token) an FP8 cache
 * runs the fast rung (kernels/mla/mla_decode_fast.cu: its producer gathers
 * the listed 656-byte entries with 16-byte loads, after asking for them in L2
 * DINF_MLA_FP8_PREFETCH blocks ahead, and dequantizes them into the same
 * shared-memory ring; the consumers mask skipped slots), a BF16 cache the
 * simple rung (kernels/mla/mla_decode.cu). DINF_MLA_KERNEL=simple forces the
 * simple rung; fast with a BF16 cache, and seesaw, are UNSUPPORTED with the
 * reason.
 */

/*
 * Optional inputs of a sparse decode: start from DINF_MLA_SPARSE_EXTRAS_INIT
 * (size set, everything else zero) and set what you use, or pass NULL for
 * none. Pointers are host memory for a CPU call and device memory on
 * DINF_EXEC_CUDA, like the call's other arrays.
 *   size              [IN] sizeof(dinf_mla_sparse_extras) as the caller knows it
 *                          (later versions append fields and read only those
 *                          within size; smaller than this version's is rejected)
 *   attn_sink         [IN] float32 [num_heads_q], contiguous, 4-byte aligned, or
 *                          NULL: each query head's sink logit, in the units of
 *                          the scaled scores (softmax_scale * q.k); -inf = none,
 *                          +inf gives out 0, NaN gives NaN for that head (where a
 *                          position has no valid key, out stays 0)
 *   extra_topk        [IN] 0 (no extra cache: every extra_* pointer NULL) or the
 *                          extra lists' length, in [1, DINF_MLA_MAX_TOPK]
 *   extra_topk_length [IN] int32 [batch], each in [0, extra_topk], or NULL
 *                          (= extra_topk); 4-byte aligned
 *   extra_indices     [IN] int32 [batch][seq_len_q][extra_topk], contiguous,
 *                          4-byte aligned: slots of the extra cache (page *
 *                          extra_page_block_size + row), negative = skipped,
 *                          each below extra_num_blocks * extra_page_block_size;
 *                          entries at or past extra_topk_length[b] never read
 *   extra_k_cache     [IN] the extra cache, the same element type and entry
 *                          layout as k_cache (bfloat16 rows of 576 for the BF16
 *                          call, 656-byte FP8 entries for the _fp8 call) and the
 *                          same num_heads_kv: row (p, r, hk) at p *
 *                          extra_kv_block_stride + r * extra_kv_token_stride +
 *                          hk * (576 elements or 656 bytes); 16-byte aligned
 *   extra_num_blocks  [IN] pages of extra_k_cache, >= 1
 *   extra_page_block_size [IN] rows per page, in [1, DINF_MLA_MAX_SPARSE_PAGE]
 *   extra_kv_block_stride, extra_kv_token_stride [IN] as k_cache's strides (in
 *                          elements for BF16, bytes for FP8; the same rules)
 * dinf_mla_get_sparse_metadata reads only size, extra_topk and
 * extra_topk_length.
 * Differences from upstream FlashMLA (whose SM90 kernels take the extra
 * cache and topk_length only with the MODEL1 cache): here every sparse
 * decode takes them (BF16, V3.2 FP8, MODEL1); any negative slot is skipped
 * (upstream: -1); an empty main list (n_b = 0) takes no block (upstream pads
 * it to one), so the plan differs while the results agree.
 */
typedef struct dinf_mla_sparse_extras {
    uint32_t size;
    const float *attn_sink;
    int32_t extra_topk;
    const int32_t *extra_topk_length;
    const int32_t *extra_indices;
    const void *extra_k_cache;
    int64_t extra_num_blocks;
    int32_t extra_page_block_size;
    int64_t extra_kv_block_stride;
    int64_t extra_kv_token_stride;
} dinf_mla_sparse_extras;
#define DINF_MLA_SPARSE_EXTRAS_INIT {sizeof(dinf_mla_sparse_extras), NULL, 0, NULL, NULL, NULL, 0, 0, 0, 0}

/*
 * dinf_mla_get_sparse_metadata - the split-KV plan of a sparse decode.
 * Arguments:
 *   topk_length   [IN]  int32 [batch], each in [0, topk], or NULL (every
 *                       position has topk keys)
 *   batch         [IN]  0 <= batch; batch * seq_len_q <= DINF_MLA_MAX_BATCH
 *   seq_len_q     [IN]  s_q >= 1
 *   topk          [IN]  indices per query position, in [1, DINF_MLA_MAX_TOPK]
 *   num_sm_parts  [IN]  in [1, DINF_MLA_MAX_SM_PARTS]
 *   tile_scheduler_metadata [OUT] int32 [num_sm_parts][DINF_MLA_METADATA_INTS]
 *   num_splits    [OUT] int32 [batch * seq_len_q + 1], caller-owned
 *   extras        [IN]  NULL, or the decode's extras (only extra_topk and
 *                       extra_topk_length are read; the same values as the
 *                       decode call's)
 *   exec          [IN]  NULL = CPU
 * The plan is dinf_mla_get_metadata's for cache_seqlens'[b * s_q + t] =
 * n_b = topk_length[b] (or topk), with an extra cache ceil(n_b / 64) * 64 +
 * e_b. On DINF_EXEC_CUDA every array is device memory and the plan is
 * computed by one GPU thread on the stream (lengths not checked on the
 * host). Returns as dinf_mla_get_metadata (a length outside [0, topk] or
 * [0, extra_topk] is INVALID_ARGUMENT on the CPU).
 */
DINF_API dinf_status dinf_mla_get_sparse_metadata(const int32_t *topk_length, int64_t batch,
                                                  int32_t seq_len_q, int32_t topk,
                                                  int32_t num_sm_parts,
                                                  int32_t *tile_scheduler_metadata,
                                                  int32_t *num_splits,
                                                  const dinf_mla_sparse_extras *extras,
                                                  const dinf_exec *exec);

/*
 * dinf_mla_sparse_decode_with_kvcache - sparse MLA decode over a BF16 paged
 * cache, following the plan of dinf_mla_get_sparse_metadata. Arguments as
 * dinf_mla_decode_with_kvcache, except:
 *   batch           [IN]  0 <= batch, batch * seq_len_q <= DINF_MLA_MAX_BATCH
 *   num_heads_q     [IN]  a multiple of num_heads_kv, h_q / h_kv <= DINF_MLA_MAX_Q_ROWS
 *   page_block_size [IN]  tokens per page, in [1, 65536] (any: the gathers are
 *                         per token)
 *   indices         [IN]  int32 [batch][seq_len_q][topk], contiguous, 4-byte
 *                         aligned: slots (page * page_block_size + row), each
 *                         negative (skipped) or below num_blocks * page_block_size;
 *                         entries at or past topk_length[b] are never read
 *   topk            [IN]  in [1, DINF_MLA_MAX_TOPK]
 *   topk_length     [IN]  int32 [batch] in [0, topk], or NULL (= topk)
 *   tile_scheduler_metadata, num_sm_parts, num_splits [IN] what
 *                         dinf_mla_get_sparse_metadata returned for the same
 *                         topk_length, batch, seq_len_q, topk and num_sm_parts
 *                         (num_splits has batch * seq_len_q + 1 entries; the CPU
 *                         path recomputes and compares them)
 *   workspace       [IN,OUT] >= dinf_mla_workspace_size(batch * seq_len_q, 1,
 *                         num_heads_q, num_sm_parts) bytes, 16-byte aligned
 *   extras          [IN]  NULL or the attention sink and extra cache
 *                         (dinf_mla_sparse_extras; pass the same extra_topk and
 *                         extra_topk_length to dinf_mla_get_sparse_metadata)
 * (no block_table, max_blocks_per_seq, cache_seqlens or causal).
 * out [b][t][h][512] and lse [b][h][t] as the dense decode. On the GPU,
 * where values are not checked on the host, a query position whose list
 * holds a slot at or past num_blocks * page_block_size (an extra list: past
 * extra_num_blocks * extra_page_block_size), or whose request's topk_length
 * is outside [0, topk] (extra_topk_length outside [0, extra_topk]), gets NaN
 * in out and lse (all its heads);
 * the plan is trusted as in the dense decode (its indices are clamped, so a
 * plan made for other topk_length values reads nothing out of bounds but
 * covers the keys it was made for).
 * Returns as dinf_mla_decode_with_kvcache (an index out of range or a
 * topk_length outside [0, topk], in either list, is INVALID_ARGUMENT on the
 * CPU; so are extras that are inconsistent: extra_topk 0 with an extra
 * pointer set, or extra_topk > 0 without extra_k_cache or extra_indices).
 */
DINF_API dinf_status dinf_mla_sparse_decode_with_kvcache(
    const uint16_t *q, int64_t batch, int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim,
    const uint16_t *k_cache, int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *indices, int32_t topk,
    const int32_t *topk_length, int32_t head_dim_v, const int32_t *tile_scheduler_metadata,
    int32_t num_sm_parts, const int32_t *num_splits, float softmax_scale, void *workspace,
    size_t workspace_bytes, uint16_t *out, float *lse, const dinf_mla_sparse_extras *extras,
    const dinf_exec *exec);

/*
 * dinf_mla_sparse_decode_with_kvcache_fp8 - the sparse decode over an FP8
 * cache (656-byte entries, strides in bytes as
 * dinf_mla_decode_with_kvcache_fp8): FlashMLA's V3.2 configuration. Equals
 * the BF16 sparse decode of the dequantized cache (bit for bit on the CPU).
 * With head_dim = 512 it reads the MODEL1 cache (top of this header): q is
 * bfloat16 [batch][seq_len_q][num_heads_q][512], num_heads_kv must be 1,
 * kv_token_stride must be 584 (DINF_MLA_MODEL1_TOKEN_BYTES: the cache's
 * layout is fixed, this only confirms it), kv_block_stride a multiple of 16
 * and >= page_block_size * 584; an extra cache has the same format (its
 * extra_kv_token_stride 584). out is [..][512] as always: V is the whole
 * dequantized key row. On the GPU both rungs take it (fast: the default).
 */
DINF_API dinf_status dinf_mla_sparse_decode_with_kvcache_fp8(
    const uint16_t *q, int64_t batch, int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim,
    const uint8_t *k_cache, int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *indices, int32_t topk,
    const int32_t *topk_length, int32_t head_dim_v, const int32_t *tile_scheduler_metadata,
    int32_t num_sm_parts, const int32_t *num_splits, float softmax_scale, void *workspace,
    size_t workspace_bytes, uint16_t *out, float *lse, const dinf_mla_sparse_extras *extras,
    const dinf_exec *exec);

/*
 * dinf_mla_quantize_kvcache_fp8 - quantize new tokens' cache rows into an
 * FP8 paged cache (vLLM's reshape_and_cache with FlashMLA's FP8 entry):
 * token i's row of every KV head goes to slot slot_mapping[i] =
 * page * page_block_size + row of the cache; slot -1 skips the token.
 * Arguments:
 *   kv              [IN]  bfloat16 [num_tokens][num_heads_kv][576], token i at
 *                         kv + i * kv_token_ld, heads contiguous; 16-byte aligned
 *   num_tokens      [IN]  >= 0
 *   num_heads_kv    [IN]  >= 1
 *   kv_token_ld     [IN]  elements between tokens of kv, a multiple of 8, >= h_kv * 576
 *   slot_mapping    [IN]  int64 [num_tokens], each -1 or in
 *                         [0, num_blocks * page_block_size); distinct slots
 *   k_cache         [OUT] the FP8 cache as in dinf_mla_decode_with_kvcache_fp8
 *                         (num_blocks, page_block_size 16/32/64, strides in
 *                         bytes); only the entries of the given slots are written
 *   exec            [IN]  NULL = CPU; DINF_EXEC_CUDA: device memory, asynchronous
 *                         on the stream (slots are not checked on the host there:
 *                         out-of-range slots are skipped)
 * The scale of each 128 channels: smallest power of two >= max(amax, 1e-4) / 448;
 * codes e4m3(x / scale), RoPE copied. CPU and GPU write identical bytes.
 * k_cache must not overlap kv or slot_mapping.
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL, alignment,
 * strides, a slot out of range on the CPU, overlap), DINF_STATUS_UNSUPPORTED
 * (page size, CUDA unavailable), DINF_STATUS_CUDA_ERROR.
 */
DINF_API dinf_status dinf_mla_quantize_kvcache_fp8(const uint16_t *kv, int64_t num_tokens,
                                                   int32_t num_heads_kv, int64_t kv_token_ld,
                                                   const int64_t *slot_mapping, uint8_t *k_cache,
                                                   int64_t num_blocks, int32_t page_block_size,
                                                   int64_t kv_block_stride,
                                                   int64_t kv_token_stride, const dinf_exec *exec);

/*
 * dinf_mla_quantize_kvcache_model1 - quantize new tokens into a MODEL1 FP8
 * cache (top of this header; FlashMLA's quantizer for that format): token
 * i goes to slot slot_mapping[i] = page * page_block_size + row, -1 skips it.
 * Arguments:
 *   kv              [IN]  bfloat16 [num_tokens][512] (448 latent + 64 RoPE), token i
 *                         at kv + i * kv_token_ld; 16-byte aligned
 *   num_tokens      [IN]  >= 0
 *   kv_token_ld     [IN]  elements between tokens, a multiple of 8, >= 512
 *   slot_mapping    [IN]  int64 [num_tokens], each -1 or in [0, num_blocks *
 *                         page_block_size); distinct slots
 *   k_cache         [OUT] the MODEL1 cache: num_blocks pages of page_block_size
 *                         (1..65536) rows, page p at byte p * kv_block_stride (a
 *                         multiple of 16, >= page_block_size * 584); 16-byte
 *                         aligned; only the given slots' bytes are written (codes,
 *                         RoPE, the 7 scales and the pad byte, written 0)
 *   exec            [IN]  NULL = CPU; DINF_EXEC_CUDA: device memory, asynchronous
 *                         (slots not checked on the host there: out-of-range
 *                         slots are skipped)
 * CPU and GPU write identical bytes. k_cache must not overlap kv or
 * slot_mapping. Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL,
 * alignment, sizes, a slot out of range on the CPU, overlap),
 * DINF_STATUS_UNSUPPORTED (CUDA unavailable), DINF_STATUS_CUDA_ERROR.
 */
DINF_API dinf_status dinf_mla_quantize_kvcache_model1(const uint16_t *kv, int64_t num_tokens,
                                                      int64_t kv_token_ld,
                                                      const int64_t *slot_mapping,
                                                      uint8_t *k_cache, int64_t num_blocks,
                                                      int32_t page_block_size,
                                                      int64_t kv_block_stride,
                                                      const dinf_exec *exec);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DEEPINFRA_MLA_H */
