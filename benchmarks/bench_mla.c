/*
 * MLA decode (mla.h). Metrics are FlashMLA's (flashmla.md 7.1), with
 * N = sum of s_k over the batch, S = s_q, H = h_q, h_kv = 1:
 *   FLOP  = 2 * S * H * N * (576 + 512)
 *   bytes = N * 576 * 2 + B * S * H * (576 + 512) * 2   (BF16 cache)
 *         = N * 656     + B * S * H * (576 + 512) * 2   (FP8 cache, 656-byte entries)
 * (split partials, block table and lse not counted). Every row's label
 * carries the H200 floor max(bytes / 4.8 TB/s, FLOP / 989.4 TFLOPS) and the
 * reference's projection max(bytes / (0.9 * 4.8 TB/s), FLOP / 660 TFLOPS).
 *
 * GPU rows (a usable sm_90 device): the reference grid, b = 128,
 * h_q {16, 64, 128}, s_q {1, 2}, s_k {4096, 8192, 16384} (uniform lengths,
 * causal as upstream's benchmark), BF16 and FP8 caches, each shape on both
 * kernel rungs side by side (.../simple: the mma.sync reference rung,
 * .../fast: the TMA + wgmma rung; chosen with DINF_MLA_KERNEL), and the
 * h_q = 64 and 128 shapes (where the tensor cores matter) on the seesaw rung
 * too (.../seesaw), registered after every other row (a seesaw launch that
 * traps would poison the CUDA context for the rows after it), and for the
 * FP8 cache's memory-bound shapes at s_k = 8192 (s_q h_q <= 64: 3 shapes)
 * the fast and seesaw rungs again with the producer's L2 prefetch off
 * (.../fast_nopf, .../seesaw_nopf: DINF_MLA_FP8_PREFETCH=0; the other rows
 * run the default), timed with
 * CUDA events around one dinf_mla_decode_with_kvcache[_fp8] call (split-KV
 * kernel + combine; the metadata is computed once, as an engine does per
 * step), one untimed warm-up call, then GPU_ITERATIONS timed calls (fixed, so
 * that the 100 rows fit tools/gpu-check's benchmark budget: a fast-rung row
 * is at most about 21 x 1 ms). The PyTorch peer
 * (gather pages, then attention) is benchmarks/peer_mla_torch.py, run by
 * tools/gpu-check with the same shapes.
 *
 * Sparse rows (dinf_mla_sparse_decode_with_kvcache_fp8, DeepSeek V3.2's
 * decode): FLOP = 2 * H * (B * S * topk) * (576 + 512), bytes = B * S * topk
 * * 656 + B * S * H * (576 + 512) * 2; on the GPU b {64, 128}, s_q 2,
 * h_q 128, topk 2048 (FlashMLA's sparse benchmark; upstream's H800 figure,
 * 410 TFLOPS, is in the label), slots spread over the FP8 cache of the dense
 * rows, the simple and the fast rung side by side; on the CPU b 2, s_q 2,
 * h_q 64, topk 2048.
 *
 * CPU rows: the CPU path at b = 4, s_k = 4096, s_q = 1, h_q {16, 128}, BF16
 * and FP8 (the b = 128 grid would take minutes per iteration on a CPU:
 * b = 128, h_q = 128, s_k = 16384 is 584 GFLOP), wall clock, all cores.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, setenv */
#include "bench.h"

#include <deepinfra.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if DINF_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#define DQK 576
#define DV 512
#define ENTRY DINF_MLA_FP8_ENTRY_BYTES
#define PAGE 64
#define GPU_ITERATIONS 20

typedef struct mla_case {
    int64_t b;
    int32_t s_q, h_q, s_k, fp8, causal, parts, gpu, warmed;
    int32_t topk; /* sparse rows: indices per query position (s_k unused); 0 = dense */
    int32_t *indices; /* sparse rows: [b][s_q][topk] slots */
    /* sparse extras rows: an extra list of etopk slots of the same cache
     * (0: none) and a sink per head (NULL: none); device pointers */
    int32_t etopk;
    int32_t *eindices;
    float *sink;
    int32_t model1; /* sparse rows over the MODEL1 cache (head_dim 512, 584-byte tokens) */
    const char *rung;     /* GPU rows: DINF_MLA_KERNEL for this row */
    const char *prefetch; /* GPU rows: DINF_MLA_FP8_PREFETCH for this row (NULL: unset, the default) */
    int64_t max_blocks, num_blocks;
    /* host (CPU rows) or device (GPU rows) pointers */
    uint16_t *q, *out;
    void *kc;
    int32_t *bt, *seqlens, *meta, *splits;
    float *lse;
    void *ws;
    size_t ws_bytes;
    char name[96], label[160];
#if DINF_WITH_CUDA
    cudaStream_t stream;
    cudaEvent_t start, stop;
#endif
} mla_case;

#if DINF_WITH_CUDA
static double run_gpu(void *arg);
#endif

static uint64_t next(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static uint16_t value(uint64_t *s) { /* about N(0, 0.1) as bf16 */
    const float v = ((float)(next(s) % 1024) + (float)(next(s) % 1024) - 1023.0f) * (0.1f / 418.0f);
    uint32_t u;
    memcpy(&u, &v, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static double seconds(const struct timespec *a, const struct timespec *b) {
    return (double)(b->tv_sec - a->tv_sec) + 1e-9 * (double)(b->tv_nsec - a->tv_nsec);
}

/* A sparse row's extras (NULL: none): the extra list reads the same cache. */
static const dinf_mla_sparse_extras *extras_of(const mla_case *c, dinf_mla_sparse_extras *ex) {
    if (!c->etopk && !c->sink)
        return NULL;
    *ex = (dinf_mla_sparse_extras){.size = sizeof *ex, .attn_sink = c->sink};
    if (c->etopk) {
        ex->extra_topk = c->etopk;
        ex->extra_indices = c->eindices;
        ex->extra_k_cache = c->kc;
        ex->extra_num_blocks = c->num_blocks;
        ex->extra_page_block_size = PAGE;
        ex->extra_kv_block_stride = PAGE * ENTRY;
        ex->extra_kv_token_stride = ENTRY;
    }
    return ex;
}

static dinf_status decode(mla_case *c, const dinf_exec *exec) {
    dinf_mla_sparse_extras ex;
    if (c->topk && c->model1) /* the MODEL1 cache: q rows of 512, unpadded 64-token pages */
        return dinf_mla_sparse_decode_with_kvcache_fp8(
            c->q, c->b, c->s_q, c->h_q, DINF_MLA_MODEL1_HEAD_DIM, c->kc, c->num_blocks, PAGE, 1,
            PAGE * DINF_MLA_MODEL1_TOKEN_BYTES, DINF_MLA_MODEL1_TOKEN_BYTES, c->indices, c->topk,
            NULL, DV, c->meta, c->parts, c->splits, 0.0441941738f, c->ws, c->ws_bytes, c->out,
            c->lse, NULL, exec);
    if (c->topk) /* sparse rows: FP8 cache, 64-token pages, every list full */
        return dinf_mla_sparse_decode_with_kvcache_fp8(
            c->q, c->b, c->s_q, c->h_q, DQK, c->kc, c->num_blocks, PAGE, 1, PAGE * ENTRY, ENTRY,
            c->indices, c->topk, NULL, DV, c->meta, c->parts, c->splits, 0.0721687836f, c->ws,
            c->ws_bytes, c->out, c->lse, extras_of(c, &ex), exec);
    if (c->fp8)
        return dinf_mla_decode_with_kvcache_fp8(
            c->q, c->b, c->s_q, c->h_q, DQK, c->kc, c->num_blocks, PAGE, 1, PAGE * ENTRY, ENTRY,
            c->bt, c->max_blocks, c->seqlens, DV, c->meta, c->parts, c->splits,
            0.0721687836f, c->causal, c->ws, c->ws_bytes, c->out, c->lse, exec);
    return dinf_mla_decode_with_kvcache(c->q, c->b, c->s_q, c->h_q, DQK, c->kc, c->num_blocks, PAGE,
                                        1, PAGE * DQK, DQK, c->bt, c->max_blocks, c->seqlens, DV,
                                        c->meta, c->parts, c->splits, 0.0721687836f, c->causal,
                                        c->ws, c->ws_bytes, c->out, c->lse, exec);
}

static double run_cpu(void *arg) {
    mla_case *c = arg;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (decode(c, NULL) != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return seconds(&t0, &t1);
}

static void metrics(const mla_case *c, double *flops, double *bytes) {
    const double bsh = (double)c->b * c->s_q * c->h_q;
    /* keys read: dense, s_k per request (shared by its s_q positions); sparse,
     * topk (+ extra_topk) per query position (FlashMLA's sparse metric) */
    const double n =
        c->topk ? (double)c->b * c->s_q * (c->topk + c->etopk) : (double)c->b * c->s_k;
    const double d_qk = c->model1 ? DINF_MLA_MODEL1_HEAD_DIM : DQK;
    *flops = 2.0 * (c->topk ? 1 : c->s_q) * c->h_q * n * (d_qk + DV);
    *bytes = n * (c->model1 ? DINF_MLA_MODEL1_TOKEN_BYTES : c->fp8 ? ENTRY : 2.0 * DQK) +
             bsh * (d_qk + DV) * 2.0;
}

static void register_case(mla_case *c) {
    double flops, bytes;
    metrics(c, &flops, &bytes);
    const double t_mem = bytes / 4.8e12, t_comp = flops / 989.4e12;
    const double proj = fmax(bytes / (0.9 * 4.8e12), flops / 660e12);
    snprintf(c->label, sizeof c->label, "H200 floor %.1f us (%s), proj. %.1f us%s%s%s",
             1e6 * fmax(t_mem, t_comp), t_mem >= t_comp ? "mem" : "compute", 1e6 * proj,
             c->topk ? (c->gpu ? "; sparse, upstream H800: 410 TFLOPS (b128 topk2048)"
                               : "; sparse, CPU path")
             : c->gpu ? "; peer: mla/torch/* rows (peer_mla_torch.py)" : "; CPU path",
             c->prefetch ? "; DINF_MLA_FP8_PREFETCH=" : "", c->prefetch ? c->prefetch : "");
    bench_spec spec = {.name = c->name,
                       .run = c->gpu ? NULL : run_cpu,
                       .arg = c,
                       .manual_time = 1,
                       .flops = flops,
                       .bytes = bytes,
                       .label = c->label,
                       .unit = "us",
                       .iterations = c->gpu ? GPU_ITERATIONS : 0};
#if DINF_WITH_CUDA
    if (c->gpu)
        spec.run = run_gpu;
#endif
    if (spec.run)
        bench_register(&spec);
}

/* Lengths, block table (pages shuffled), random q and cache. */
static int32_t *make_block_table(int64_t b, int64_t max_blocks, uint64_t *s) {
    const int64_t n = b * max_blocks;
    int32_t *bt = malloc(sizeof(int32_t) * (size_t)n);
    if (!bt)
        return NULL;
    for (int64_t i = 0; i < n; i++)
        bt[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)(next(s) % (uint64_t)(i + 1));
        const int32_t t = bt[i];
        bt[i] = bt[j];
        bt[j] = t;
    }
    return bt;
}

static int plan(mla_case *c, int32_t num_sms) {
    if (c->topk) { /* one request per query position */
        if (dinf_mla_num_sm_parts(c->h_q, 1, num_sms, &c->parts) != DINF_STATUS_OK)
            return -1;
        c->meta = malloc(sizeof(int32_t) * 8 * (size_t)c->parts);
        c->splits = malloc(sizeof(int32_t) * (size_t)(c->b * c->s_q + 1));
        return c->meta && c->splits &&
                       dinf_mla_get_sparse_metadata(NULL, c->b, c->s_q, c->topk, c->parts, c->meta,
                                                    c->splits,
                                                    &(dinf_mla_sparse_extras){.size = sizeof(dinf_mla_sparse_extras),
                                                                              .extra_topk = c->etopk},
                                                    NULL) == DINF_STATUS_OK
                   ? 0
                   : -1;
    }
    if (dinf_mla_num_sm_parts(c->s_q * c->h_q, 1, num_sms, &c->parts) != DINF_STATUS_OK)
        return -1;
    c->meta = malloc(sizeof(int32_t) * 8 * (size_t)c->parts);
    c->splits = malloc(sizeof(int32_t) * (size_t)(c->b + 1));
    return c->meta && c->splits &&
                   dinf_mla_get_metadata(c->seqlens, c->b, c->parts, c->meta, c->splits, NULL) ==
                       DINF_STATUS_OK
               ? 0
               : -1;
}

static void add_cpu(int32_t h_q, int fp8) {
    char probe[96]; /* the name registered below: skip the setup of a row that will not run */
    snprintf(probe, sizeof probe, "mla/cpu/%s/b4_sq1_hq%d_sk4096", fp8 ? "fp8" : "bf16", h_q);
    if (!bench_selected(probe))
        return;
    mla_case *c = calloc(1, sizeof *c); /* lives until exit */
    if (!c)
        return;
    c->b = 4, c->s_q = 1, c->h_q = h_q, c->s_k = 4096, c->fp8 = fp8, c->causal = 1;
    c->max_blocks = c->s_k / PAGE, c->num_blocks = c->b * c->max_blocks;
    uint64_t s = (uint64_t)h_q * 7 + (uint64_t)fp8;
    c->seqlens = malloc(sizeof(int32_t) * (size_t)c->b);
    for (int64_t i = 0; i < c->b; i++)
        c->seqlens[i] = c->s_k;
    c->bt = make_block_table(c->b, c->max_blocks, &s);
    const int64_t tokens = c->num_blocks * PAGE, rows = c->b * c->s_q * h_q;
    uint16_t *kv = malloc(sizeof(uint16_t) * (size_t)(tokens * DQK));
    c->q = malloc(sizeof(uint16_t) * (size_t)(rows * DQK));
    c->out = malloc(sizeof(uint16_t) * (size_t)(rows * DV));
    c->lse = malloc(sizeof(float) * (size_t)rows);
    if (!c->seqlens || !c->bt || !kv || !c->q || !c->out || !c->lse || plan(c, 132)) {
        fprintf(stderr, "bench_mla: cannot set up the CPU case h_q=%d\n", h_q);
        return;
    }
    for (int64_t i = 0; i < tokens * DQK; i++)
        kv[i] = value(&s);
    for (int64_t i = 0; i < rows * DQK; i++)
        c->q[i] = value(&s);
    if (fp8) {
        int64_t *slots = malloc(sizeof(int64_t) * (size_t)tokens);
        c->kc = aligned_alloc(64, (size_t)(tokens * ENTRY));
        for (int64_t i = 0; slots && i < tokens; i++)
            slots[i] = i;
        if (!slots || !c->kc ||
            dinf_mla_quantize_kvcache_fp8(kv, tokens, 1, DQK, slots, c->kc, c->num_blocks, PAGE,
                                          PAGE * ENTRY, ENTRY, NULL) != DINF_STATUS_OK) {
            fprintf(stderr, "bench_mla: FP8 setup failed: %s\n", dinf_last_error());
            return;
        }
        free(slots);
        free(kv);
    } else {
        c->kc = kv;
    }
    dinf_mla_workspace_size(c->b, c->s_q, h_q, c->parts, &c->ws_bytes, NULL);
    c->ws = aligned_alloc(64, (c->ws_bytes + 63) / 64 * 64);
    snprintf(c->name, sizeof c->name, "mla/cpu/%s/b%lld_sq%d_hq%d_sk%d", fp8 ? "fp8" : "bf16",
             (long long)c->b, c->s_q, h_q, c->s_k);
    register_case(c);
}

/* Random slots of a cache of `slots` tokens: [b][s_q][topk], a random walk
 * with steps 1..2 * slots / topk from a random start, modulo slots (so a
 * list repeats a slot only where the walk wraps). */
static int32_t *make_indices(int64_t b, int32_t s_q, int32_t topk, int64_t slots, uint64_t *s) {
    const int64_t n = b * s_q * topk;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)n);
    const uint64_t step = (uint64_t)(slots / topk > 1 ? slots / topk : 1);
    for (int64_t r = 0; idx && r < b * s_q; r++) {
        int64_t at = (int64_t)(next(s) % (uint64_t)slots);
        for (int32_t j = 0; j < topk; j++) {
            idx[r * topk + j] = (int32_t)(at % slots);
            at += 1 + (int64_t)(next(s) % (2 * step - 1));
        }
    }
    return idx;
}

/* The sparse decode on the CPU: V3.2's FP8 cache, h_q 64, s_q 2, topk 2048. */
static void add_cpu_sparse(void) {
    const char *name = "mla/cpu/sparse_fp8/b2_sq2_hq64_topk2048";
    if (!bench_selected(name))
        return;
    mla_case *c = calloc(1, sizeof *c); /* lives until exit */
    if (!c)
        return;
    c->b = 2, c->s_q = 2, c->h_q = 64, c->topk = 2048, c->fp8 = 1;
    c->num_blocks = 256; /* 16384 tokens */
    const int64_t tokens = c->num_blocks * PAGE, rows = c->b * c->s_q * c->h_q;
    uint64_t s = 4242;
    uint16_t *kv = malloc(sizeof(uint16_t) * (size_t)(tokens * DQK));
    int64_t *slots = malloc(sizeof(int64_t) * (size_t)tokens);
    c->kc = aligned_alloc(64, (size_t)(tokens * ENTRY));
    c->q = malloc(sizeof(uint16_t) * (size_t)(rows * DQK));
    c->out = malloc(sizeof(uint16_t) * (size_t)(rows * DV));
    c->lse = malloc(sizeof(float) * (size_t)rows);
    c->indices = make_indices(c->b, c->s_q, c->topk, tokens, &s);
    if (!kv || !slots || !c->kc || !c->q || !c->out || !c->lse || !c->indices || plan(c, 132)) {
        fprintf(stderr, "bench_mla: cannot set up the CPU sparse case\n");
        return;
    }
    for (int64_t i = 0; i < tokens * DQK; i++)
        kv[i] = value(&s);
    for (int64_t i = 0; i < tokens; i++)
        slots[i] = i;
    for (int64_t i = 0; i < rows * DQK; i++)
        c->q[i] = value(&s);
    if (dinf_mla_quantize_kvcache_fp8(kv, tokens, 1, DQK, slots, c->kc, c->num_blocks, PAGE,
                                      PAGE * ENTRY, ENTRY, NULL) != DINF_STATUS_OK) {
        fprintf(stderr, "bench_mla: FP8 setup failed: %s\n", dinf_last_error());
        return;
    }
    free(kv);
    free(slots);
    dinf_mla_workspace_size(c->b * c->s_q, 1, c->h_q, c->parts, &c->ws_bytes, NULL);
    c->ws = aligned_alloc(64, (c->ws_bytes + 63) / 64 * 64);
    snprintf(c->name, sizeof c->name, "%s", name);
    register_case(c);
}

#if DINF_WITH_CUDA
static double run_gpu(void *arg) {
    mla_case *c = arg;
    const dinf_exec exec = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)c->stream);
    float ms = 0;
    setenv("DINF_MLA_KERNEL", c->rung, 1);
    if (c->prefetch)
        setenv("DINF_MLA_FP8_PREFETCH", c->prefetch, 1);
    else
        unsetenv("DINF_MLA_FP8_PREFETCH");
    if (!c->warmed) { /* module load, attributes, tensor-map lookup: untimed */
        if (decode(c, &exec) != DINF_STATUS_OK || cudaStreamSynchronize(c->stream) != cudaSuccess) {
            bench_set_error(dinf_last_error());
            return -1;
        }
        c->warmed = 1;
    }
    cudaEventRecord(c->start, c->stream);
    if (decode(c, &exec) != DINF_STATUS_OK) {
        bench_set_error(dinf_last_error());
        return -1;
    }
    cudaEventRecord(c->stop, c->stream);
    cudaError_t err = cudaEventSynchronize(c->stop);
    if (err == cudaSuccess)
        err = cudaEventElapsedTime(&ms, c->start, c->stop);
    if (err != cudaSuccess) {
        bench_set_error(cudaGetErrorString(err));
        return -1;
    }
    return ms / 1e3;
}

/* One device cache per dtype at the largest s_k, shared by every GPU row. */
typedef struct gpu_cache {
    void *kc;
    int32_t *bt;
    int64_t max_blocks, num_blocks;
} gpu_cache;

static int make_gpu_cache(gpu_cache *g, int fp8, int64_t b, int32_t s_k_max) {
    g->max_blocks = s_k_max / PAGE, g->num_blocks = b * g->max_blocks;
    /* one random chunk of tokens, copied over the whole cache (pages are
     * shuffled anyway): generating 2M random rows on the host would cost
     * the GPU machine's minutes */
    const int64_t tokens = g->num_blocks * PAGE, chunk = 1 << 16;
    uint64_t s = 12345u + (uint64_t)fp8;
    int32_t *bt = make_block_table(b, g->max_blocks, &s);
    uint16_t *host = malloc(sizeof(uint16_t) * (size_t)(chunk * DQK));
    if (!bt || !host)
        return -1;
    if (cudaMalloc((void **)&g->bt, sizeof(int32_t) * (size_t)g->num_blocks) != cudaSuccess ||
        cudaMemcpy(g->bt, bt, sizeof(int32_t) * (size_t)g->num_blocks, cudaMemcpyHostToDevice) !=
            cudaSuccess ||
        cudaMalloc(&g->kc, (size_t)tokens * (fp8 ? ENTRY : 2 * DQK)) != cudaSuccess)
        return -1;
    uint16_t *d_tokens = NULL;
    int64_t *d_slots = NULL, *slots = malloc(sizeof(int64_t) * (size_t)chunk);
    if (fp8 && (!slots || cudaMalloc((void **)&d_tokens, sizeof(uint16_t) * (size_t)(chunk * DQK)) != cudaSuccess ||
                cudaMalloc((void **)&d_slots, sizeof(int64_t) * (size_t)chunk) != cudaSuccess))
        return -1;
    const dinf_exec exec = DINF_EXEC_CUDA_INIT(0, NULL);
    for (int64_t i = 0; i < chunk * DQK; i++)
        host[i] = value(&s);
    for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
        const int64_t n = tokens - t0 < chunk ? tokens - t0 : chunk;
        if (!fp8) {
            if (cudaMemcpy((uint16_t *)g->kc + t0 * DQK, host, sizeof(uint16_t) * (size_t)(n * DQK),
                           cudaMemcpyHostToDevice) != cudaSuccess)
                return -1;
            continue;
        }
        for (int64_t i = 0; i < n; i++)
            slots[i] = t0 + i;
        if (cudaMemcpy(d_tokens, host, sizeof(uint16_t) * (size_t)(n * DQK), cudaMemcpyHostToDevice) != cudaSuccess ||
            cudaMemcpy(d_slots, slots, sizeof(int64_t) * (size_t)n, cudaMemcpyHostToDevice) != cudaSuccess ||
            dinf_mla_quantize_kvcache_fp8(d_tokens, n, 1, DQK, d_slots, g->kc, g->num_blocks, PAGE,
                                          PAGE * ENTRY, ENTRY, &exec) != DINF_STATUS_OK ||
            cudaDeviceSynchronize() != cudaSuccess)
            return -1;
    }
    cudaFree(d_tokens);
    cudaFree(d_slots);
    free(slots);
    free(host);
    free(bt);
    return 0;
}

/* The rows of a GPU shape: one per rung (the seesaw rung only for h_q >=
 * SEESAW_MIN_HQ), then, for the FP8 cache's memory-bound shapes at s_k =
 * NOPF_S_K (s_q h_q <= NOPF_MAX_ROWS), the fast rungs again with the L2
 * prefetch off (DINF_MLA_FP8_PREFETCH=0, name suffix _nopf): the A/B of
 * the FP8 producer's prefetch (lib/mla/mla_fast_hd.h), 4 rows. */
#define NUM_GPU_RUNGS 3
#define SEESAW_MIN_HQ 64
#define NOPF_S_K 8192
#define NOPF_MAX_ROWS 64
static const char *const gpu_rungs[NUM_GPU_RUNGS] = {"simple", "fast", "seesaw"};
typedef struct gpu_row {
    const char *rung, *prefetch, *suffix;
} gpu_row;
static int gpu_rows(int fp8, int32_t s_q, int32_t h_q, int32_t s_k, gpu_row *rows) {
    int n = 0;
    for (int r = 0; r < NUM_GPU_RUNGS; r++)
        if (r < 2 || h_q >= SEESAW_MIN_HQ)
            rows[n++] = (gpu_row){gpu_rungs[r], NULL, ""};
    if (fp8 && s_k == NOPF_S_K && s_q * h_q <= NOPF_MAX_ROWS)
        for (int r = 1; r < NUM_GPU_RUNGS; r++)
            if (r < 2 || h_q >= SEESAW_MIN_HQ)
                rows[n++] = (gpu_row){gpu_rungs[r], "0", "_nopf"};
    return n;
}
static void gpu_row_name(char *name, size_t n, int fp8, int32_t s_q, int32_t h_q, int32_t s_k,
                         const gpu_row *row) {
    snprintf(name, n, "mla/gpu/%s/b128_sq%d_hq%d_sk%d/%s%s", fp8 ? "fp8" : "bf16", s_q, h_q, s_k,
             row->rung, row->suffix);
}

/* Whether the filter selects any row of this shape (the names add_gpu registers). */
static int gpu_selected(int fp8, int32_t s_q, int32_t h_q, int32_t s_k) {
    gpu_row rows[2 * NUM_GPU_RUNGS];
    const int n = gpu_rows(fp8, s_q, h_q, s_k, rows);
    for (int r = 0; r < n; r++) {
        char name[128];
        gpu_row_name(name, sizeof name, fp8, s_q, h_q, s_k, &rows[r]);
        if (bench_selected(name))
            return 1;
    }
    return 0;
}

/* Row r of a shape whose inputs and outputs case c holds: c itself for the
 * first row, else a copy with its own stream and events; the row's rung and
 * prefetch setting. NULL when a CUDA object cannot be made. */
static mla_case *row_case(mla_case *c, int r, const gpu_row *row) {
    mla_case *rc = r ? calloc(1, sizeof *rc) : c;
    if (!rc)
        return NULL;
    if (r) {
        *rc = *c;
        if (cudaStreamCreate(&rc->stream) != cudaSuccess || cudaEventCreate(&rc->start) != cudaSuccess ||
            cudaEventCreate(&rc->stop) != cudaSuccess)
            return NULL;
    }
    rc->rung = row->rung;
    rc->prefetch = row->prefetch;
    return rc;
}

/* seesaw rows, registered after all the others (register_gpu) */
static mla_case *deferred[2 * NUM_GPU_RUNGS * 2 * 2 * 3 * 3];
static int num_deferred;

static void add_gpu(const gpu_cache *g, int fp8, int32_t s_q, int32_t h_q, int32_t s_k, int32_t num_sms) {
    if (!gpu_selected(fp8, s_q, h_q, s_k))
        return;
    mla_case *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->gpu = 1, c->b = 128, c->s_q = s_q, c->h_q = h_q, c->s_k = s_k, c->fp8 = fp8, c->causal = 1;
    c->max_blocks = g->max_blocks, c->num_blocks = g->num_blocks;
    c->kc = g->kc, c->bt = g->bt;
    int32_t *seqlens = malloc(sizeof(int32_t) * (size_t)c->b);
    for (int64_t i = 0; seqlens && i < c->b; i++)
        seqlens[i] = s_k;
    c->seqlens = seqlens;
    const int64_t rows = c->b * s_q * h_q;
    if (!seqlens || plan(c, num_sms)) {
        fprintf(stderr, "bench_mla: plan failed: %s\n", dinf_last_error());
        return;
    }
    const dinf_exec exec = DINF_EXEC_CUDA_INIT(0, NULL);
    dinf_mla_workspace_size(c->b, s_q, h_q, c->parts, &c->ws_bytes, &exec);
    uint64_t s = (uint64_t)(s_q * 1000 + h_q);
    uint16_t *q = malloc(sizeof(uint16_t) * (size_t)(rows * DQK));
    for (int64_t i = 0; q && i < rows * DQK; i++)
        q[i] = value(&s);
    void *d_seqlens, *d_meta, *d_splits;
    if (!q || cudaMalloc(&d_seqlens, sizeof(int32_t) * (size_t)c->b) != cudaSuccess ||
        cudaMalloc(&d_meta, sizeof(int32_t) * 8 * (size_t)c->parts) != cudaSuccess ||
        cudaMalloc(&d_splits, sizeof(int32_t) * (size_t)(c->b + 1)) != cudaSuccess ||
        cudaMalloc((void **)&c->q, sizeof(uint16_t) * (size_t)(rows * DQK)) != cudaSuccess ||
        cudaMalloc((void **)&c->out, sizeof(uint16_t) * (size_t)(rows * DV)) != cudaSuccess ||
        cudaMalloc((void **)&c->lse, sizeof(float) * (size_t)rows) != cudaSuccess ||
        cudaMalloc(&c->ws, c->ws_bytes) != cudaSuccess ||
        cudaMemcpy(d_seqlens, seqlens, sizeof(int32_t) * (size_t)c->b, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(d_meta, c->meta, sizeof(int32_t) * 8 * (size_t)c->parts, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(d_splits, c->splits, sizeof(int32_t) * (size_t)(c->b + 1), cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(c->q, q, sizeof(uint16_t) * (size_t)(rows * DQK), cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaStreamCreate(&c->stream) != cudaSuccess || cudaEventCreate(&c->start) != cudaSuccess ||
        cudaEventCreate(&c->stop) != cudaSuccess) {
        fprintf(stderr, "bench_mla: CUDA setup failed: %s\n", cudaGetErrorString(cudaGetLastError()));
        return;
    }
    free(q);
    c->seqlens = d_seqlens, c->meta = d_meta, c->splits = d_splits;
    /* the same inputs and outputs on every row, registered side by side (seesaw: later) */
    gpu_row rows_of[2 * NUM_GPU_RUNGS];
    const int n_rows = gpu_rows(fp8, s_q, h_q, s_k, rows_of);
    for (int r = 0; r < n_rows; r++) {
        mla_case *rc = row_case(c, r, &rows_of[r]);
        if (!rc)
            return;
        gpu_row_name(rc->name, sizeof rc->name, fp8, s_q, h_q, s_k, &rows_of[r]);
        if (strcmp(rc->rung, "seesaw") || num_deferred == (int)(sizeof deferred / sizeof deferred[0]))
            register_case(rc);
        else
            deferred[num_deferred++] = rc;
    }
}

/* Sparse decode rows (V3.2: FP8 cache, h_q 128, s_q 2, topk 2048; FlashMLA's
 * sparse benchmark batches 64 and 128) over the FP8 cache of the dense rows,
 * slots spread over all of it; the simple rung, the fast rung, and the fast
 * rung without its L2 prefetch (fast_nopf). Then the fast rung with the
 * 2026 extras (an extra list of 512 slots of the same cache and a sink per
 * head: .../topk2048_extra512_sink/fast), whose cost per key the A/B
 * compares with the plain row's. */
static const int64_t sparse_batches[2] = {64, 128};
#define NUM_SPARSE_ROWS 3
static const gpu_row sparse_rows[NUM_SPARSE_ROWS] = {
    {"simple", NULL, ""}, {"fast", NULL, ""}, {"fast", "0", "_nopf"}};
static void sparse_gpu_name(char *name, size_t n, int64_t b, const gpu_row *row) {
    snprintf(name, n, "mla/gpu/sparse_fp8/b%lld_sq2_hq128_topk2048/%s%s", (long long)b, row->rung,
             row->suffix);
}
static int sparse_selected(int64_t b) {
    char name[96];
    int any = 0;
    for (int r = 0; r < NUM_SPARSE_ROWS; r++) {
        sparse_gpu_name(name, sizeof name, b, &sparse_rows[r]);
        any |= bench_selected(name);
    }
    return any;
}
#define SPARSE_EXTRA_TOPK 512
static void sparse_extra_name(char *name, size_t n, int64_t b) {
    snprintf(name, n, "mla/gpu/sparse_fp8/b%lld_sq2_hq128_topk2048_extra%d_sink/fast",
             (long long)b, SPARSE_EXTRA_TOPK);
}
/* The MODEL1 cache's rows (FlashMLA 2026, head_dim 512): the same shape on
 * the simple and fast rungs, over a MODEL1 cache of its own. */
static const gpu_row model1_rows[2] = {{"simple", NULL, ""}, {"fast", NULL, ""}};
static void sparse_model1_name(char *name, size_t n, int64_t b, const gpu_row *row) {
    snprintf(name, n, "mla/gpu/sparse_model1/b%lld_sq2_hq128_topk2048/%s", (long long)b,
             row->rung);
}
static int model1_selected(int64_t b) {
    char name[96];
    int any = 0;
    for (int r = 0; r < 2; r++) {
        sparse_model1_name(name, sizeof name, b, &model1_rows[r]);
        any |= bench_selected(name);
    }
    return any;
}
#define MODEL1_BLOCKS 4096 /* 262,144 tokens, 153 MB: three times the L2 */
/* A MODEL1 cache of MODEL1_BLOCKS unpadded 64-token pages on the device,
 * quantized there from one random chunk of rows. */
static void *make_model1_cache(void) {
    const int64_t tokens = (int64_t)MODEL1_BLOCKS * PAGE, chunk = 1 << 15;
    uint64_t s = 4242u;
    void *kc = NULL;
    uint16_t *host = malloc(sizeof(uint16_t) * (size_t)(chunk * DINF_MLA_MODEL1_HEAD_DIM)), *d_rows;
    int64_t *slots = malloc(sizeof(int64_t) * (size_t)chunk), *d_slots;
    if (!host || !slots ||
        cudaMalloc(&kc, (size_t)tokens * DINF_MLA_MODEL1_TOKEN_BYTES) != cudaSuccess ||
        cudaMalloc((void **)&d_rows, sizeof(uint16_t) * (size_t)(chunk * DINF_MLA_MODEL1_HEAD_DIM)) != cudaSuccess ||
        cudaMalloc((void **)&d_slots, sizeof(int64_t) * (size_t)chunk) != cudaSuccess)
        return NULL;
    for (int64_t i = 0; i < chunk * DINF_MLA_MODEL1_HEAD_DIM; i++)
        host[i] = value(&s);
    const dinf_exec exec = DINF_EXEC_CUDA_INIT(0, NULL);
    if (cudaMemcpy(d_rows, host, sizeof(uint16_t) * (size_t)(chunk * DINF_MLA_MODEL1_HEAD_DIM),
                   cudaMemcpyHostToDevice) != cudaSuccess)
        return NULL;
    for (int64_t t0 = 0; t0 < tokens; t0 += chunk) {
        for (int64_t i = 0; i < chunk; i++)
            slots[i] = t0 + i;
        if (cudaMemcpy(d_slots, slots, sizeof(int64_t) * (size_t)chunk, cudaMemcpyHostToDevice) != cudaSuccess ||
            dinf_mla_quantize_kvcache_model1(d_rows, chunk, DINF_MLA_MODEL1_HEAD_DIM, d_slots, kc,
                                             MODEL1_BLOCKS, PAGE, PAGE * DINF_MLA_MODEL1_TOKEN_BYTES,
                                             &exec) != DINF_STATUS_OK ||
            cudaDeviceSynchronize() != cudaSuccess)
            return NULL;
    }
    cudaFree(d_rows);
    cudaFree(d_slots);
    free(host);
    free(slots);
    return kc;
}

/* kind: 0 the plain rows, 1 the extras row, 2 the MODEL1 rows */
static void add_gpu_sparse(const gpu_cache *g, int64_t b, int32_t num_sms, int kind) {
    char probe[96];
    sparse_extra_name(probe, sizeof probe, b);
    if (kind == 1 ? !bench_selected(probe) : kind == 2 ? !model1_selected(b) : !sparse_selected(b))
        return;
    const int extras = kind == 1;
    mla_case *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->gpu = 1, c->b = b, c->s_q = 2, c->h_q = 128, c->topk = 2048, c->fp8 = 1;
    c->etopk = extras ? SPARSE_EXTRA_TOPK : 0;
    if (kind == 2) {
        static void *model1_kc;
        if (!model1_kc && !(model1_kc = make_model1_cache())) {
            fprintf(stderr, "bench_mla: MODEL1 cache setup failed: %s / %s\n",
                    cudaGetErrorString(cudaGetLastError()), dinf_last_error());
            return;
        }
        c->model1 = 1;
        c->kc = model1_kc;
        c->num_blocks = MODEL1_BLOCKS;
    }
    if (kind != 2) {
        c->max_blocks = g->max_blocks, c->num_blocks = g->num_blocks;
        c->kc = g->kc;
    }
    uint64_t s = 777u + (uint64_t)b;
    const int64_t rows = b * c->s_q * c->h_q, n_idx = b * c->s_q * c->topk;
    int32_t *idx = make_indices(b, c->s_q, c->topk, c->num_blocks * PAGE, &s);
    uint16_t *q = malloc(sizeof(uint16_t) * (size_t)(rows * DQK));
    if (!idx || !q || plan(c, num_sms)) {
        fprintf(stderr, "bench_mla: sparse setup failed: %s\n", dinf_last_error());
        return;
    }
    for (int64_t i = 0; i < rows * DQK; i++)
        q[i] = value(&s);
    const dinf_exec exec = DINF_EXEC_CUDA_INIT(0, NULL);
    dinf_mla_workspace_size(b * c->s_q, 1, c->h_q, c->parts, &c->ws_bytes, &exec);
    void *d_meta, *d_splits, *d_idx;
    if (cudaMalloc(&d_meta, sizeof(int32_t) * 8 * (size_t)c->parts) != cudaSuccess ||
        cudaMalloc(&d_splits, sizeof(int32_t) * (size_t)(b * c->s_q + 1)) != cudaSuccess ||
        cudaMalloc(&d_idx, sizeof(int32_t) * (size_t)n_idx) != cudaSuccess ||
        cudaMalloc((void **)&c->q, sizeof(uint16_t) * (size_t)(rows * DQK)) != cudaSuccess ||
        cudaMalloc((void **)&c->out, sizeof(uint16_t) * (size_t)(rows * DV)) != cudaSuccess ||
        cudaMalloc((void **)&c->lse, sizeof(float) * (size_t)rows) != cudaSuccess ||
        cudaMalloc(&c->ws, c->ws_bytes) != cudaSuccess ||
        cudaMemcpy(d_meta, c->meta, sizeof(int32_t) * 8 * (size_t)c->parts, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(d_splits, c->splits, sizeof(int32_t) * (size_t)(b * c->s_q + 1), cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(d_idx, idx, sizeof(int32_t) * (size_t)n_idx, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(c->q, q, sizeof(uint16_t) * (size_t)(rows * DQK), cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaStreamCreate(&c->stream) != cudaSuccess || cudaEventCreate(&c->start) != cudaSuccess ||
        cudaEventCreate(&c->stop) != cudaSuccess) {
        fprintf(stderr, "bench_mla: CUDA setup failed: %s\n", cudaGetErrorString(cudaGetLastError()));
        return;
    }
    free(q);
    free(idx);
    c->meta = d_meta, c->splits = d_splits, c->indices = d_idx;
    if (extras) {
        const int64_t n_e = b * c->s_q * c->etopk;
        int32_t *eidx = make_indices(b, c->s_q, c->etopk, g->num_blocks * PAGE, &s);
        float sink[128];
        for (int h = 0; h < c->h_q; h++)
            sink[h] = (float)(next(&s) % 1000) / 100.0f; /* 0 .. 10: about the scores' lse */
        if (!eidx || cudaMalloc((void **)&c->eindices, sizeof(int32_t) * (size_t)n_e) != cudaSuccess ||
            cudaMalloc((void **)&c->sink, sizeof sink) != cudaSuccess ||
            cudaMemcpy(c->eindices, eidx, sizeof(int32_t) * (size_t)n_e, cudaMemcpyHostToDevice) != cudaSuccess ||
            cudaMemcpy(c->sink, sink, sizeof sink, cudaMemcpyHostToDevice) != cudaSuccess) {
            fprintf(stderr, "bench_mla: sparse extras setup failed\n");
            return;
        }
        free(eidx);
        mla_case *rc = row_case(c, 0, &sparse_rows[1]); /* the fast rung */
        sparse_extra_name(rc->name, sizeof rc->name, b);
        register_case(rc);
        return;
    }
    if (kind == 2) { /* (q holds 576-wide rows; the MODEL1 decode reads 512-wide ones) */
        for (int r = 0; r < 2; r++) {
            mla_case *rc = row_case(c, r, &model1_rows[r]);
            if (!rc)
                return;
            sparse_model1_name(rc->name, sizeof rc->name, b, &model1_rows[r]);
            register_case(rc);
        }
        return;
    }
    /* the same inputs and outputs on every row, side by side */
    for (int r = 0; r < NUM_SPARSE_ROWS; r++) {
        mla_case *rc = row_case(c, r, &sparse_rows[r]);
        if (!rc)
            return;
        sparse_gpu_name(rc->name, sizeof rc->name, b, &sparse_rows[r]);
        register_case(rc);
    }
}

static void register_gpu(void) {
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    if (dinf_device_query(0, &info) != DINF_STATUS_OK || !info.usable)
        return;
    static gpu_cache caches[2];
    const int32_t s_qs[] = {1, 2}, h_qs[] = {16, 64, 128}, s_ks[] = {4096, 8192, 16384};
    for (int fp8 = 0; fp8 <= 1; fp8++) {
        int any = 0; /* build the 2.4 GB cache only for a dtype with selected rows */
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < 3; k++)
                    any |= gpu_selected(fp8, s_qs[i], h_qs[j], s_ks[k]);
        char probe[96];
        for (int i = 0; fp8 && i < 2; i++) { /* the sparse rows read the FP8 cache */
            sparse_extra_name(probe, sizeof probe, sparse_batches[i]);
            any |= sparse_selected(sparse_batches[i]) || bench_selected(probe);
        }
        for (int i = 0; fp8 && i < 2; i++) /* the MODEL1 rows have their own cache */
            add_gpu_sparse(&caches[fp8], sparse_batches[i], info.sm_count, 2);
        if (!any)
            continue;
        if (make_gpu_cache(&caches[fp8], fp8, 128, 16384)) {
            fprintf(stderr, "bench_mla: GPU cache setup failed: %s / %s\n",
                    cudaGetErrorString(cudaGetLastError()), dinf_last_error());
            return;
        }
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < 3; k++)
                    add_gpu(&caches[fp8], fp8, s_qs[i], h_qs[j], s_ks[k], info.sm_count);
        for (int i = 0; fp8 && i < 2; i++)
            add_gpu_sparse(&caches[fp8], sparse_batches[i], info.sm_count, 0);
        for (int i = 0; fp8 && i < 2; i++)
            add_gpu_sparse(&caches[fp8], sparse_batches[i], info.sm_count, 1);
    }
    for (int i = 0; i < num_deferred; i++)
        register_case(deferred[i]);
}
#endif

void bench_register_mla(void) {
    add_cpu(16, 0);
    add_cpu(128, 0);
    add_cpu(16, 1);
    add_cpu(128, 1);
    add_cpu_sparse();
#if DINF_WITH_CUDA
    register_gpu();
#endif
}
