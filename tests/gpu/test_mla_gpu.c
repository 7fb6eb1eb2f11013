/*
 * GPU tests of the MLA decode (mla.h, kernels/mla): the FlashMLA reference
 * sweep on DINF_EXEC_CUDA against the CPU implementation (the oracle) with
 * the upstream tolerances (out: abs 8e-4 or rel 2.01/128 per element, cosine
 * difference 5e-6; lse: abs 1e-6 or rel 8.01/65536; +inf positions equal, no
 * NaN), BF16 and FP8 caches, causal and not, varlen with zero-length
 * requests, shuffled block tables, NaN in every unused cache slot, poisoned
 * outputs; the device metadata equal to the CPU's; the CUDA FP8 quantizer
 * byte-identical to the CPU's; a bad block table entry gives NaN, not a
 * crash; the FP8 L2 prefetch off and deep; metadata + decode captured in a
 * CUDA graph; the sparse decode (indices) against the CPU, with its device
 * plan, on the simple and (FP8) fast rungs, seesaw's refusal, NaN for bad
 * device values, the L2 prefetch off and deep. Skipped, visibly,
 * without a usable device; a failure under DINF_REQUIRE_GPU=1.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <deepinfra.h>

#include "core/numeric_hd.h"

#include <criterion/criterion.h>

#include "gpu_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


TestSuite(mla_gpu, .init = require_gpu, .timeout = 600.0);

#if DINF_WITH_CUDA && defined(__has_include) && __has_include(<cuda_runtime_api.h>)
#include <cuda_runtime_api.h>

#define DQK 576
#define DV 512
#define ENTRY DINF_MLA_FP8_ENTRY_BYTES
#define UNUSED_PAGE 2147480000

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        cr_assert_eq(err_, cudaSuccess, "%s: %s", #call, cudaGetErrorString(err_));               \
    } while (0)

/*
 * The kernel rungs every GPU check runs (DINF_MLA_KERNEL, read by the library
 * on each call): the simple reference rung, the fast TMA/wgmma rung and the
 * seesaw rung (the fast rung's producer with FlashMLA's seesaw consumers).
 * DINF_MLA_TEST_RUNGS (a comma-separated list such as "simple,seesaw")
 * narrows them; tools/mla-emu sets it from EMU_RUNGS.
 */
#define NUM_RUNGS 3
#define RUNG_FAST 1   /* the fast rung and the seesaw rung take 64-token pages only */
#define RUNG_SEESAW 2
static const char *const RUNGS[NUM_RUNGS] = {"simple", "fast", "seesaw"};
static int rung_enabled(int ri) {
    const char *only = getenv("DINF_MLA_TEST_RUNGS");
    if (!only)
        return 1;
    const size_t n = strlen(RUNGS[ri]);
    for (const char *s = only; (s = strstr(s, RUNGS[ri])) != NULL; s += n)
        if ((s == only || s[-1] == ',') && (s[n] == ',' || s[n] == 0))
            return 1;
    return 0;
}

static void *to_device(const void *host, size_t bytes) {
    void *dev = NULL;
    CUDA_OK(cudaMalloc(&dev, bytes ? bytes : 16));
    if (bytes)
        CUDA_OK(cudaMemcpy(dev, host, bytes, cudaMemcpyHostToDevice));
    return dev;
}

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_normal(uint64_t *s) {
    const double u = (double)(rng_next(s) >> 11) * 0x1p-53, v = (double)(rng_next(s) >> 11) * 0x1p-53;
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}
/* Four bf16 values per draw, roughly N(0, 0.1) clamped to [-1, 1] (sum of uniforms). */
static void fill_values(uint16_t *x, int64_t n, uint64_t *s) {
    for (int64_t i = 0; i < n; i += 4) {
        const uint64_t r = rng_next(s);
        for (int k = 0; k < 4 && i + k < n; k++) {
            const uint32_t u = (uint32_t)(r >> (16 * k)) & 0xffffu;
            const float v = ((float)(u & 0xff) + (float)(u >> 8) - 255.0f) * (0.1f / 104.0f);
            x[i + k] = dinf__bf16_from_f32(v);
        }
    }
}

/* One cache (lengths, shuffled pages, NaN where unused), shared by many
 * (s_q, h_q, causal) points. */
typedef struct kv_problem {
    int64_t b;
    int32_t h_kv, page;
    int64_t num_blocks, max_blocks;
    int32_t *seqlens, *bt;
    uint16_t *kc; /* [num_blocks][page][h_kv][576] */
    uint8_t *kc8; /* FP8 entries, quantized by the CPU */
    void *d_kc, *d_kc8, *d_seqlens, *d_bt;
} kv_problem;

static void kv_make(kv_problem *p, int64_t b, int32_t h_kv, int32_t s_k, int varlen, int zeros,
                    int32_t page, int32_t min_len, uint64_t seed) {
    uint64_t s = seed;
    *p = (kv_problem){.b = b, .h_kv = h_kv, .page = page};
    p->seqlens = malloc(sizeof(int32_t) * (size_t)b);
    int64_t max_len = 1;
    for (int64_t i = 0; i < b; i++) {
        int64_t len = s_k;
        if (varlen) {
            len = (int64_t)(s_k + rng_normal(&s) * s_k / 2);
            len = len < min_len ? min_len : len;
        }
        if (zeros && rng_next(&s) % 3 == 0)
            len = 0;
        p->seqlens[i] = (int32_t)len;
        max_len = len > max_len ? len : max_len;
    }
    p->max_blocks = (max_len + page - 1) / page + 1;
    p->num_blocks = b * p->max_blocks + 3;
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)p->num_blocks);
    for (int64_t i = 0; i < p->num_blocks; i++)
        perm[i] = (int32_t)i;
    for (int64_t i = p->num_blocks - 1; i > 0; i--) {
        const int64_t j = (int64_t)(rng_next(&s) % (uint64_t)(i + 1));
        const int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    p->bt = malloc(sizeof(int32_t) * (size_t)(b * p->max_blocks > 0 ? b * p->max_blocks : 1));
    int64_t next = 0;
    for (int64_t i = 0; i < b; i++)
        for (int64_t j = 0; j < p->max_blocks; j++)
            p->bt[i * p->max_blocks + j] = j * page < p->seqlens[i] ? perm[next++] : UNUSED_PAGE;
    free(perm);
    const int64_t row = (int64_t)h_kv * DQK, elems = p->num_blocks * page * row;
    p->kc = malloc(sizeof(uint16_t) * (size_t)elems);
    for (int64_t i = 0; i < elems; i++)
        p->kc[i] = 0x7FC0u; /* NaN everywhere a request does not use */
    int64_t n_tokens = 0;
    for (int64_t i = 0; i < b; i++)
        n_tokens += p->seqlens[i];
    uint16_t *tokens = malloc(sizeof(uint16_t) * (size_t)(n_tokens * row + 1));
    int64_t *slots = malloc(sizeof(int64_t) * (size_t)(n_tokens + 1));
    fill_values(tokens, n_tokens * row, &s);
    int64_t t = 0;
    for (int64_t i = 0; i < b; i++)
        for (int32_t key = 0; key < p->seqlens[i]; key++, t++) {
            slots[t] = (int64_t)p->bt[i * p->max_blocks + key / page] * page + key % page;
            memcpy(p->kc + slots[t] * row, tokens + t * row, sizeof(uint16_t) * (size_t)row);
        }
    /* FP8: CPU quantizer; the GPU quantizer must write the same bytes */
    const size_t bytes8 = (size_t)(p->num_blocks * page * h_kv * ENTRY);
    p->kc8 = aligned_alloc(64, (bytes8 + 63) / 64 * 64);
    memset(p->kc8, 0xFF, bytes8);
    cr_assert_eq(dinf_mla_quantize_kvcache_fp8(tokens, n_tokens, h_kv, row, slots, p->kc8,
                                               p->num_blocks, page, (int64_t)page * h_kv * ENTRY,
                                               (int64_t)h_kv * ENTRY, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    p->d_kc = to_device(p->kc, sizeof(uint16_t) * (size_t)elems);
    p->d_seqlens = to_device(p->seqlens, sizeof(int32_t) * (size_t)b);
    p->d_bt = to_device(p->bt, sizeof(int32_t) * (size_t)(b * p->max_blocks));
    void *d_tokens = to_device(tokens, sizeof(uint16_t) * (size_t)(n_tokens * row));
    void *d_slots = to_device(slots, sizeof(int64_t) * (size_t)n_tokens);
    CUDA_OK(cudaMalloc(&p->d_kc8, bytes8));
    CUDA_OK(cudaMemset(p->d_kc8, 0xFF, bytes8));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
    if (n_tokens > 0)
        cr_assert_eq(dinf_mla_quantize_kvcache_fp8(d_tokens, n_tokens, h_kv, row, d_slots, p->d_kc8,
                                                   p->num_blocks, page,
                                                   (int64_t)page * h_kv * ENTRY,
                                                   (int64_t)h_kv * ENTRY, &cuda),
                     DINF_STATUS_OK, "%s", dinf_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    uint8_t *back = malloc(bytes8);
    CUDA_OK(cudaMemcpy(back, p->d_kc8, bytes8, cudaMemcpyDeviceToHost));
    cr_assert_eq(memcmp(back, p->kc8, bytes8), 0, "the CUDA FP8 quantizer differs from the CPU's");
    free(back);
    CUDA_OK(cudaFree(d_tokens));
    CUDA_OK(cudaFree(d_slots));
    free(tokens);
    free(slots);
}

static void kv_free(kv_problem *p) {
    cudaFree(p->d_kc);
    cudaFree(p->d_kc8);
    cudaFree(p->d_seqlens);
    cudaFree(p->d_bt);
    free(p->seqlens);
    free(p->bt);
    free(p->kc);
    free(p->kc8);
}

/* Elementwise abs-or-rel check plus the cosine difference (upstream's kk.check_is_allclose). */
static void check_close(const char *what, const char *params, const float *got, const float *ref,
                        int64_t n, double abs_tol, double rel_tol, double cos_tol) {
    double gr = 0, gg = 0;
    for (int64_t i = 0; i < n; i++) {
        cr_assert(!isnan(got[i]) && !isnan(ref[i]), "%s %s: NaN at %lld (gpu %g, cpu %g)", what,
                  params, (long long)i, (double)got[i], (double)ref[i]);
        if (isinf(ref[i]) || isinf(got[i])) {
            cr_assert(got[i] == ref[i], "%s %s: [%lld] gpu %g vs cpu %g", what, params, (long long)i,
                      (double)got[i], (double)ref[i]);
            continue;
        }
        const double err = fabs((double)got[i] - ref[i]);
        cr_assert(err <= abs_tol || err <= rel_tol * fabs(ref[i]),
                  "%s %s: [%lld] gpu %.8g vs cpu %.8g (error %g)", what, params, (long long)i,
                  (double)got[i], (double)ref[i], err);
        gr += (double)got[i] * ref[i];
        gg += (double)got[i] * got[i] + (double)ref[i] * ref[i];
    }
    const double cos_diff = gg == 0 ? 0 : 1 - 2 * gr / gg;
    cr_assert(cos_diff <= cos_tol, "%s %s: cos_diff %g > %g", what, params, cos_diff, cos_tol);
}

/* Gain on Q's values (1: fill_values' std 0.1, scores std about 0.02 after
 * softmax_scale, a nearly flat softmax whose rescaling factors stay near 1). */
static float q_gain = 1.0f;

/* One (s_q, h_q, causal, dtype) point on a cache: device metadata = CPU
 * metadata, GPU decode (poisoned outputs) = CPU decode within tolerances. */
static void gpu_point(const kv_problem *p, int32_t s_q, int32_t h_q, int32_t causal, int fp8,
                      uint64_t seed, cudaStream_t stream) {
    char params[192];
    snprintf(params, sizeof params, "b=%lld s_q=%d h_q=%d h_kv=%d page=%d causal=%d %s seed=%llu",
             (long long)p->b, s_q, h_q, p->h_kv, p->page, causal, fp8 ? "fp8" : "bf16",
             (unsigned long long)seed);
    const int64_t b = p->b, rows = b * s_q * h_q;
    uint64_t s = seed;
    uint16_t *q = malloc(sizeof(uint16_t) * (size_t)(rows * DQK));
    fill_values(q, rows * DQK, &s);
    for (int64_t i = 0; q_gain != 1.0f && i < rows * DQK; i++)
        q[i] = dinf__bf16_from_f32(dinf__f32_from_bf16(q[i]) * q_gain);
    int32_t parts;
    cr_assert_eq(dinf_mla_num_sm_parts(s_q * h_q / p->h_kv, p->h_kv, 132, &parts), DINF_STATUS_OK);
    int32_t *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts), *splits = malloc(sizeof(int32_t) * (size_t)(b + 1));
    cr_assert_eq(dinf_mla_get_metadata(p->seqlens, b, parts, meta, splits, NULL), DINF_STATUS_OK);
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);

    /* device metadata */
    int32_t *d_meta, *d_splits;
    CUDA_OK(cudaMalloc((void **)&d_meta, sizeof(int32_t) * 8 * (size_t)parts));
    CUDA_OK(cudaMalloc((void **)&d_splits, sizeof(int32_t) * (size_t)(b + 1)));
    CUDA_OK(cudaMemsetAsync(d_meta, 0x5a, sizeof(int32_t) * 8 * (size_t)parts, stream));
    CUDA_OK(cudaMemsetAsync(d_splits, 0x5a, sizeof(int32_t) * (size_t)(b + 1), stream));
    cr_assert_eq(dinf_mla_get_metadata(p->d_seqlens, b, parts, d_meta, d_splits, &cuda), DINF_STATUS_OK,
                 "%s: %s", params, dinf_last_error());
    int32_t *g_meta = malloc(sizeof(int32_t) * 8 * (size_t)parts), *g_splits = malloc(sizeof(int32_t) * (size_t)(b + 1));
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(g_meta, d_meta, sizeof(int32_t) * 8 * (size_t)parts, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(g_splits, d_splits, sizeof(int32_t) * (size_t)(b + 1), cudaMemcpyDeviceToHost));
    cr_assert_eq(memcmp(g_meta, meta, sizeof(int32_t) * 8 * (size_t)parts), 0, "%s: device metadata differs", params);
    cr_assert_eq(memcmp(g_splits, splits, sizeof(int32_t) * (size_t)(b + 1)), 0, "%s: device num_splits differs", params);

    /* CPU oracle */
    size_t ws_cpu, ws_gpu;
    cr_assert_eq(dinf_mla_workspace_size(b, s_q, h_q, parts, &ws_cpu, NULL), DINF_STATUS_OK);
    cr_assert_eq(dinf_mla_workspace_size(b, s_q, h_q, parts, &ws_gpu, &cuda), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_cpu + 63) / 64 * 64 + 64);
    uint16_t *out_cpu = malloc(sizeof(uint16_t) * (size_t)(rows * DV + 1)), *out_gpu = malloc(sizeof(uint16_t) * (size_t)(rows * DV + 1));
    float *lse_cpu = malloc(sizeof(float) * (size_t)(rows + 1)), *lse_gpu = malloc(sizeof(float) * (size_t)(rows + 1));
    const float scale = 0.0721687836f; /* 1/sqrt(192), as DeepSeek passes */
    const int64_t tok8 = (int64_t)p->h_kv * ENTRY, blk8 = p->page * tok8;
    const int64_t tok16 = (int64_t)p->h_kv * DQK, blk16 = p->page * tok16;
    dinf_status st = fp8 ? dinf_mla_decode_with_kvcache_fp8(q, b, s_q, h_q, DQK, p->kc8, p->num_blocks, p->page, p->h_kv, blk8, tok8, p->bt,
                                                            p->max_blocks, p->seqlens, DV, meta, parts, splits, scale, causal, ws, ws_cpu,
                                                            out_cpu, lse_cpu, NULL)
                         : dinf_mla_decode_with_kvcache(q, b, s_q, h_q, DQK, p->kc, p->num_blocks, p->page, p->h_kv, blk16, tok16, p->bt,
                                                        p->max_blocks, p->seqlens, DV, meta, parts, splits, scale, causal, ws, ws_cpu,
                                                        out_cpu, lse_cpu, NULL);
    cr_assert_eq(st, DINF_STATUS_OK, "%s: %s", params, dinf_last_error());

    /* GPU, every rung under test (the fast rung refuses pages other than 64) */
    void *d_q = to_device(q, sizeof(uint16_t) * (size_t)(rows * DQK)), *d_ws, *d_out, *d_lse;
    CUDA_OK(cudaMalloc(&d_ws, ws_gpu));
    CUDA_OK(cudaMalloc(&d_out, sizeof(uint16_t) * (size_t)(rows * DV + 1)));
    CUDA_OK(cudaMalloc(&d_lse, sizeof(float) * (size_t)(rows + 1)));
    float *fo_gpu = malloc(sizeof(float) * (size_t)(rows * DV + 1)), *fo_cpu = malloc(sizeof(float) * (size_t)(rows * DV + 1));
    for (int64_t i = 0; i < rows * DV; i++)
        fo_cpu[i] = dinf__f32_from_bf16(out_cpu[i]);
    for (int ri = 0; ri < NUM_RUNGS; ri++) {
        if (!rung_enabled(ri))
            continue;
        char what[256];
        snprintf(what, sizeof what, "%s rung=%s", params, RUNGS[ri]);
        setenv("DINF_MLA_KERNEL", RUNGS[ri], 1);
        CUDA_OK(cudaMemsetAsync(d_ws, 0xFF, ws_gpu, stream));
        CUDA_OK(cudaMemsetAsync(d_out, 0xFF, sizeof(uint16_t) * (size_t)(rows * DV + 1), stream)); /* NaN */
        CUDA_OK(cudaMemsetAsync(d_lse, 0xFF, sizeof(float) * (size_t)(rows + 1), stream));
        st = fp8 ? dinf_mla_decode_with_kvcache_fp8(d_q, b, s_q, h_q, DQK, p->d_kc8, p->num_blocks, p->page, p->h_kv, blk8, tok8, p->d_bt,
                                                    p->max_blocks, p->d_seqlens, DV, d_meta, parts, d_splits, scale, causal, d_ws, ws_gpu,
                                                    d_out, d_lse, &cuda)
                 : dinf_mla_decode_with_kvcache(d_q, b, s_q, h_q, DQK, p->d_kc, p->num_blocks, p->page, p->h_kv, blk16, tok16, p->d_bt,
                                                p->max_blocks, p->d_seqlens, DV, d_meta, parts, d_splits, scale, causal, d_ws, ws_gpu,
                                                d_out, d_lse, &cuda);
        if (ri >= RUNG_FAST && p->page != 64) {
            char want[128];
            snprintf(want, sizeof want, "DINF_MLA_KERNEL=%s, but the %s rung cannot take this decode: page_block_size=",
                     RUNGS[ri], RUNGS[ri]);
            cr_assert_eq(st, DINF_STATUS_UNSUPPORTED, "%s: the %s rung took page_block_size=%d", what, RUNGS[ri],
                         p->page);
            cr_assert(strstr(dinf_last_error(), want), "%s: %s", what, dinf_last_error());
            continue;
        }
        cr_assert_eq(st, DINF_STATUS_OK, "%s: %s", what, dinf_last_error());
        CUDA_OK(cudaStreamSynchronize(stream));
        CUDA_OK(cudaMemcpy(out_gpu, d_out, sizeof(uint16_t) * (size_t)(rows * DV + 1), cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(lse_gpu, d_lse, sizeof(float) * (size_t)(rows + 1), cudaMemcpyDeviceToHost));
        cr_assert_eq(out_gpu[rows * DV], 0xFFFFu, "%s: write past out", what);
        uint32_t lse_end;
        memcpy(&lse_end, &lse_gpu[rows], 4);
        cr_assert_eq(lse_end, 0xFFFFFFFFu, "%s: write past lse", what);
        for (int64_t i = 0; i < rows * DV; i++)
            fo_gpu[i] = dinf__f32_from_bf16(out_gpu[i]);
        check_close("out", what, fo_gpu, fo_cpu, rows * DV, 8e-4, 2.01 / 128, 5e-6);
        check_close("lse", what, lse_gpu, lse_cpu, rows, 1e-6, 8.01 / 65536, 5e-6);
    }
    unsetenv("DINF_MLA_KERNEL");

    free(fo_gpu);
    free(fo_cpu);
    cudaFree(d_q);
    cudaFree(d_ws);
    cudaFree(d_out);
    cudaFree(d_lse);
    cudaFree(d_meta);
    cudaFree(d_splits);
    free(g_meta);
    free(g_splits);
    free(out_cpu);
    free(out_gpu);
    free(lse_cpu);
    free(lse_gpu);
    free(ws);
    free(meta);
    free(splits);
    free(q);
}

/*
 * The reference sweep for one batch size: s_q {1, 2, 4} x s_k {20, 140,
 * 4096} x h_q {1, 3, 16, 64, 128} x h_kv {1, 2} (h_q % h_kv == 0) x varlen
 * x causal (upstream's causal is on only with s_q > 1), BF16 every point,
 * FP8 on the varlen half. Zero-length requests in the varlen caches.
 */
static void sweep(int64_t b) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    const int32_t s_qs[] = {1, 2, 4}, s_ks[] = {20, 140, 4096}, h_qs[] = {1, 3, 16, 64, 128};
    uint64_t seed = (uint64_t)b * 1000;
    for (int ki = 0; ki < 3; ki++)
        for (int32_t h_kv = 1; h_kv <= 2; h_kv++)
            for (int varlen = 0; varlen <= 1; varlen++) {
                kv_problem p;
                kv_make(&p, b, h_kv, s_ks[ki], varlen, varlen, 64, 4, ++seed);
                for (int qi = 0; qi < 3; qi++)
                    for (int hi = 0; hi < 5; hi++) {
                        if (h_qs[hi] % h_kv)
                            continue;
                        for (int causal = 0; causal <= (s_qs[qi] > 1); causal++) {
                            gpu_point(&p, s_qs[qi], h_qs[hi], causal, 0, ++seed, stream);
                            if (varlen)
                                gpu_point(&p, s_qs[qi], h_qs[hi], causal, 1, ++seed, stream);
                        }
                    }
                kv_free(&p);
            }
    CUDA_OK(cudaStreamDestroy(stream));
}

Test(mla_gpu, sweep_batch_1) { sweep(1); }
Test(mla_gpu, sweep_batch_2) { sweep(2); }
Test(mla_gpu, sweep_batch_6) { sweep(6); }
Test(mla_gpu, sweep_batch_64) { sweep(64); }

Test(mla_gpu, page_sizes_16_and_32_and_the_corner_case) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    for (int32_t page = 16; page <= 32; page *= 2) {
        kv_problem p;
        kv_make(&p, 5, 1, 300, 1, 1, page, 2, 7000 + page);
        gpu_point(&p, 2, 64, 1, 0, 1, stream);
        gpu_point(&p, 1, 128, 0, 1, 2, stream);
        kv_free(&p);
    }
    /* upstream's corner case: b=128, s_q=2, s_k=4096 varlen, about half empty */
    kv_problem p;
    kv_make(&p, 128, 1, 4096, 1, 0, 64, 2, 7100);
    for (int64_t i = 0; i < 128; i += 2)
        p.seqlens[i] = 0;
    CUDA_OK(cudaMemcpy(p.d_seqlens, p.seqlens, sizeof(int32_t) * 128, cudaMemcpyHostToDevice));
    gpu_point(&p, 2, 128, 1, 0, 3, stream);
    gpu_point(&p, 2, 128, 1, 1, 4, stream);
    kv_free(&p);
    CUDA_OK(cudaStreamDestroy(stream));
}

/*
 * Query rows that are not a multiple of the 64-row m-block across several
 * m-blocks (s_q * h_q / h_kv = 189 and 126: the last tile is partial), two KV
 * heads (rows [s_q][h_q / h_kv] per KV head), pages of 32 and 16 tokens, and
 * of 64 tokens (both rungs).
 */
Test(mla_gpu, partial_m_blocks_two_kv_heads_small_pages) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    kv_problem p;
    kv_make(&p, 7, 2, 300, 1, 1, 32, 3, 7200);
    gpu_point(&p, 3, 126, 1, 0, 11, stream); /* 189 rows per KV head: 3 m-blocks */
    gpu_point(&p, 3, 126, 1, 1, 12, stream);
    gpu_point(&p, 1, 126, 0, 0, 13, stream); /* 63 rows */
    kv_free(&p);
    kv_make(&p, 4, 1, 500, 1, 1, 16, 2, 7300);
    gpu_point(&p, 2, 63, 1, 0, 14, stream); /* 126 rows: 2 m-blocks */
    gpu_point(&p, 2, 63, 1, 1, 15, stream);
    kv_free(&p);
    /* the same with 64-token pages, which the fast rung takes too */
    kv_make(&p, 7, 2, 300, 1, 1, 64, 3, 7250);
    gpu_point(&p, 3, 126, 1, 0, 16, stream); /* 189 rows per KV head: 3 m-blocks */
    gpu_point(&p, 3, 126, 1, 1, 17, stream);
    kv_free(&p);
    CUDA_OK(cudaStreamDestroy(stream));
}

/*
 * Scores as peaked as upstream's randn inputs (Q x 100: scores std about 1.7
 * after softmax_scale): the running max moves from block to block, so every
 * rescaling factor of the online softmax (the seesaw rung's a0 and a1, the
 * fast rung's alpha) is far from 1 and a wrong one shows far beyond the
 * tolerances. Varlen lengths around 4096 keys (odd and even block counts,
 * partial last blocks; pieces of several blocks, so the seesaw rung's steps
 * rescale accumulated output), 64-token pages, split requests, BF16 and FP8.
 */
Test(mla_gpu, peaked_scores_exercise_the_rescaling) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    kv_problem p;
    kv_make(&p, 8, 1, 4096, 1, 0, 64, 2, 7500); /* about 500 blocks: several per part (66 parts) */
    q_gain = 100.0f;
    gpu_point(&p, 1, 128, 0, 0, 21, stream);
    gpu_point(&p, 2, 64, 1, 1, 22, stream);
    q_gain = 1.0f;
    kv_free(&p);
    CUDA_OK(cudaStreamDestroy(stream));
}

/*
 * A part that begins with the rest of a cut request and ends by cutting the
 * next one: that last piece's workspace row is the next request's first
 * (num_splits[req] + 0), not the part's BEGIN_SPLIT. The sweeps rarely build
 * such parts (many parts, small budgets); s_q * h_q = 512 rows give 8 m-blocks
 * and 16 parts on 132 SMs, and the plan is checked to contain one.
 */
Test(mla_gpu, part_beginning_with_a_rest_and_ending_with_a_cut) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    kv_problem p;
    kv_make(&p, 12, 1, 700, 1, 0, 64, 4, 7400);
    int32_t parts;
    cr_assert_eq(dinf_mla_num_sm_parts(4 * 128, 1, 132, &parts), DINF_STATUS_OK);
    int32_t *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts), splits[13];
    cr_assert_eq(dinf_mla_get_metadata(p.seqlens, 12, parts, meta, splits, NULL), DINF_STATUS_OK);
    int found = 0;
    for (int32_t i = 0; i < parts; i++) {
        const int32_t *m = meta + 8 * i;
        found += m[DINF_MLA_META_BEGIN_REQ] >= 0 && m[DINF_MLA_META_BEGIN_SPLIT] > 0 &&
                 m[DINF_MLA_META_END_REQ] != m[DINF_MLA_META_BEGIN_REQ] && m[DINF_MLA_META_LAST_SPLIT];
    }
    cr_assert(found > 0, "the plan has no part that begins with a rest and ends with a cut");
    gpu_point(&p, 4, 128, 1, 0, 21, stream);
    gpu_point(&p, 4, 128, 1, 1, 22, stream);
    free(meta);
    kv_free(&p);
    CUDA_OK(cudaStreamDestroy(stream));
}

/*
 * The GPU path never checks device values on the host: a page outside
 * [0, num_blocks), a length beyond the block table's capacity and a negative
 * length must give NaN in out and lse of that request only, for an unsplit
 * plan (1 part: the decode's guard) and a split one (132 parts: pieces and
 * the combine's guard), BF16 and FP8 caches (FP8: the fast rungs' L2
 * prefetch must skip the bad page and requests); the healthy request
 * matches the CPU. Outputs are poisoned with a finite pattern so that NaN
 * can only come from the guards.
 */
Test(mla_gpu, bad_device_values_give_nan_for_their_request_only) {
    kv_problem p;
    kv_make(&p, 4, 1, 200, 0, 0, 64, 1, 8100);
    const int64_t b = 4, rows = b * 16, rows0 = 16;
    uint16_t *q = malloc(sizeof(uint16_t) * (size_t)(rows * DQK));
    uint64_t s = 6;
    fill_values(q, rows * DQK, &s);
    p.bt[1 * p.max_blocks + 2] = -7;                               /* request 1: page -7 */
    const int32_t lens[4] = {200, 200, (int32_t)(p.max_blocks * 64 + 1), -5}; /* 2: too long, 3: negative */
    CUDA_OK(cudaMemcpy(p.d_bt, p.bt, sizeof(int32_t) * (size_t)(b * p.max_blocks), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(p.d_seqlens, lens, sizeof lens, cudaMemcpyHostToDevice));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
    /* CPU oracle of request 0 alone, BF16 and FP8 caches */
    int32_t meta0[8], splits0[2];
    cr_assert_eq(dinf_mla_get_metadata(lens, 1, 1, meta0, splits0, NULL), DINF_STATUS_OK);
    size_t ws_cpu;
    cr_assert_eq(dinf_mla_workspace_size(1, 1, 16, 1, &ws_cpu, NULL), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_cpu + 63) / 64 * 64);
    uint16_t out_cpu[2][16 * DV];
    float lse_cpu[2][16];
    cr_assert_eq(dinf_mla_decode_with_kvcache(q, 1, 1, 16, DQK, p.kc, p.num_blocks, 64, 1, 64 * DQK, DQK, p.bt, p.max_blocks,
                                              lens, DV, meta0, 1, splits0, 0.1f, 0, ws, ws_cpu, out_cpu[0], lse_cpu[0], NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(dinf_mla_decode_with_kvcache_fp8(q, 1, 1, 16, DQK, p.kc8, p.num_blocks, 64, 1, 64 * ENTRY, ENTRY, p.bt,
                                                  p.max_blocks, lens, DV, meta0, 1, splits0, 0.1f, 0, ws, ws_cpu,
                                                  out_cpu[1], lse_cpu[1], NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    void *d_q = to_device(q, sizeof(uint16_t) * (size_t)(rows * DQK)), *d_out, *d_lse;
    CUDA_OK(cudaMalloc(&d_out, sizeof(uint16_t) * (size_t)(rows * DV)));
    CUDA_OK(cudaMalloc(&d_lse, sizeof(float) * (size_t)rows));
    uint16_t *out = malloc(sizeof(uint16_t) * (size_t)(rows * DV));
    float lse[64], *fg = malloc(sizeof(float) * 16 * DV), *fc = malloc(sizeof(float) * 16 * DV);
    const int32_t parts_list[2] = {1, 132};
    /* caches: BF16; FP8 with the default L2 prefetch; FP8 with the deepest
     * (with one part, one CTA walks all four requests: the prefetch passes
     * the bad page, the too-long and the negative request) */
    static const char *const caches[3] = {"bf16", "fp8", "fp8 prefetch 8"};
    for (int rv = 0; rv < 6 * NUM_RUNGS; rv++) {
        const int ri = rv / 6, v = rv % 2, kind = (rv / 2) % 3, fp8 = kind > 0;
        if (!rung_enabled(ri))
            continue;
        setenv("DINF_MLA_KERNEL", RUNGS[ri], 1);
        if (kind == 2)
            setenv("DINF_MLA_FP8_PREFETCH", "8", 1);
        else
            unsetenv("DINF_MLA_FP8_PREFETCH");
        const int32_t parts = parts_list[v];
        void *d_meta, *d_splits, *d_ws;
        size_t ws_bytes;
        cr_assert_eq(dinf_mla_workspace_size(b, 1, 16, parts, &ws_bytes, &cuda), DINF_STATUS_OK);
        CUDA_OK(cudaMalloc(&d_meta, sizeof(int32_t) * 8 * (size_t)parts));
        CUDA_OK(cudaMalloc(&d_splits, sizeof(int32_t) * (size_t)(b + 1)));
        CUDA_OK(cudaMalloc(&d_ws, ws_bytes));
        CUDA_OK(cudaMemset(d_ws, 0x11, ws_bytes));
        CUDA_OK(cudaMemset(d_out, 0x11, sizeof(uint16_t) * (size_t)(rows * DV))); /* finite */
        CUDA_OK(cudaMemset(d_lse, 0x11, sizeof(float) * (size_t)rows));
        /* the device plan counts the negative length as 0 */
        cr_assert_eq(dinf_mla_get_metadata(p.d_seqlens, b, parts, d_meta, d_splits, &cuda), DINF_STATUS_OK,
                     "%s", dinf_last_error());
        const dinf_status st =
            fp8 ? dinf_mla_decode_with_kvcache_fp8(d_q, b, 1, 16, DQK, p.d_kc8, p.num_blocks, 64, 1, 64 * ENTRY, ENTRY,
                                                   p.d_bt, p.max_blocks, p.d_seqlens, DV, d_meta, parts, d_splits, 0.1f,
                                                   0, d_ws, ws_bytes, d_out, d_lse, &cuda)
                : dinf_mla_decode_with_kvcache(d_q, b, 1, 16, DQK, p.d_kc, p.num_blocks, 64, 1, 64 * DQK, DQK, p.d_bt,
                                               p.max_blocks, p.d_seqlens, DV, d_meta, parts, d_splits, 0.1f, 0, d_ws,
                                               ws_bytes, d_out, d_lse, &cuda);
        cr_assert_eq(st, DINF_STATUS_OK, "rung %s parts=%d %s: %s", RUNGS[ri], parts, caches[kind], dinf_last_error());
        CUDA_OK(cudaDeviceSynchronize());
        CUDA_OK(cudaMemcpy(out, d_out, sizeof(uint16_t) * (size_t)(rows * DV), cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(lse, d_lse, sizeof lse, cudaMemcpyDeviceToHost));
        for (int64_t r = 1; r < b; r++)
            for (int h = 0; h < 16; h++) {
                cr_assert(isnan(lse[r * 16 + h]), "rung %s parts=%d %s request %lld head %d: lse %g, expected NaN",
                          RUNGS[ri], parts, caches[kind], (long long)r, h, (double)lse[r * 16 + h]);
                for (int d = 0; d < DV; d++)
                    cr_assert(isnan(dinf__f32_from_bf16(out[(r * 16 + h) * DV + d])),
                              "rung %s parts=%d %s request %lld head %d: out[%d] = %04x, expected NaN", RUNGS[ri],
                              parts, caches[kind], (long long)r, h, d, out[(r * 16 + h) * DV + d]);
            }
        for (int64_t i = 0; i < rows0 * DV; i++) {
            fg[i] = dinf__f32_from_bf16(out[i]);
            fc[i] = dinf__f32_from_bf16(out_cpu[fp8][i]);
        }
        char what[96];
        snprintf(what, sizeof what, "request 0, %d part(s), rung %s, %s", (int)parts, RUNGS[ri], caches[kind]);
        check_close("out", what, fg, fc, rows0 * DV, 8e-4, 2.01 / 128, 5e-6);
        check_close("lse", what, lse, lse_cpu[fp8], rows0, 1e-6, 8.01 / 65536, 5e-6);
        cudaFree(d_meta);
        cudaFree(d_splits);
        cudaFree(d_ws);
    }
    unsetenv("DINF_MLA_KERNEL");
    unsetenv("DINF_MLA_FP8_PREFETCH");
    free(fg);
    free(fc);
    free(out);
    free(ws);
    free(q);
    cudaFree(d_q);
    cudaFree(d_out);
    cudaFree(d_lse);
    kv_free(&p);
}

/*
 * The FP8 producer's L2 prefetch (DINF_MLA_FP8_PREFETCH) changes no result:
 * with it off (0) and at its deepest (8 blocks ahead) the fast rungs match
 * the CPU on caches where the prefetch walks across requests (many short
 * requests, several per CTA, zero lengths), partial last blocks, split
 * requests, two KV heads (one 656-byte range per row) and one (one range
 * per page, two m-blocks sharing it). The default (2) runs in every other
 * FP8 check. Small: a few milliseconds of GPU time.
 */
Test(mla_gpu, fp8_l2_prefetch_off_and_deep_match_the_cpu) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    static const char *const distances[2] = {"0", "8"};
    kv_problem p;
    kv_make(&p, 160, 2, 100, 1, 1, 64, 2, 7600); /* about 3 requests per part */
    for (int d = 0; d < 2; d++) {
        setenv("DINF_MLA_FP8_PREFETCH", distances[d], 1);
        gpu_point(&p, 1, 32, 0, 1, 31 + (uint64_t)d, stream);
    }
    kv_free(&p);
    kv_make(&p, 24, 1, 700, 1, 1, 64, 2, 7700); /* split requests, 2 m-blocks */
    for (int d = 0; d < 2; d++) {
        setenv("DINF_MLA_FP8_PREFETCH", distances[d], 1);
        gpu_point(&p, 2, 64, 1, 1, 33 + (uint64_t)d, stream);
    }
    kv_free(&p);
    unsetenv("DINF_MLA_FP8_PREFETCH");
    CUDA_OK(cudaStreamDestroy(stream));
}

/* The CUDA quantizer skips slots outside [0, num_blocks * page) (the CPU
 * rejects them): only the valid slots' entries change, byte-equal to the CPU's. */
Test(mla_gpu, fp8_quantizer_skips_out_of_range_slots) {
    const int32_t page = 16, h_kv = 2;
    const int64_t num_blocks = 3, n = 6, tok = (int64_t)h_kv * ENTRY, blk = page * tok;
    const size_t bytes = (size_t)(num_blocks * blk);
    const int64_t slots[6] = {5, -1, 48, 47, -100, (int64_t)1 << 40}; /* 48 = num_blocks * page */
    const int64_t cpu_slots[6] = {5, -1, -1, 47, -1, -1};
    uint16_t *kv = malloc(sizeof(uint16_t) * (size_t)(n * h_kv * DQK));
    uint64_t s = 77;
    fill_values(kv, n * h_kv * DQK, &s);
    uint8_t *want = aligned_alloc(64, (bytes + 63) / 64 * 64), *got = malloc(bytes);
    memset(want, 0xAB, bytes);
    cr_assert_eq(dinf_mla_quantize_kvcache_fp8(kv, n, h_kv, h_kv * DQK, cpu_slots, want, num_blocks, page, blk, tok, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    void *d_kv = to_device(kv, sizeof(uint16_t) * (size_t)(n * h_kv * DQK)), *d_slots = to_device(slots, sizeof slots), *d_cache;
    CUDA_OK(cudaMalloc(&d_cache, bytes));
    CUDA_OK(cudaMemset(d_cache, 0xAB, bytes));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
    cr_assert_eq(dinf_mla_quantize_kvcache_fp8(d_kv, n, h_kv, h_kv * DQK, d_slots, d_cache, num_blocks, page, blk, tok, &cuda),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(got, d_cache, bytes, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < bytes; i++)
        cr_assert_eq(got[i], want[i], "byte %zu: gpu %02x, cpu %02x", i, got[i], want[i]);
    cudaFree(d_kv);
    cudaFree(d_slots);
    cudaFree(d_cache);
    free(kv);
    free(want);
    free(got);
}

/* The MODEL1 quantizer on the GPU writes the CPU's bytes (codes, RoPE, the
 * 7 scale exponents, the pad byte) and skips out-of-range slots; odd page
 * size, padded pages, a zero and a huge 64-channel group. */
Test(mla_gpu, model1_quantizer_matches_the_cpu) {
    const int32_t page = 7;
    const int64_t num_blocks = 3, n = 8, ld = 520;
    const int64_t pb = ((int64_t)page * 584 + 575) / 576 * 576;
    const size_t bytes = (size_t)(num_blocks * pb);
    const int64_t slots[8] = {5, -1, 21, 20, -100, (int64_t)1 << 40, 0, 13}; /* 21 = num_blocks * page */
    const int64_t cpu_slots[8] = {5, -1, -1, 20, -1, -1, 0, 13};
    uint16_t *kv = malloc(sizeof(uint16_t) * (size_t)(n * ld));
    uint64_t s = 78;
    fill_values(kv, n * ld, &s);
    for (int d = 0; d < 64; d++) {
        kv[6 * ld + d] = 0;
        kv[7 * ld + 128 + d] = dinf__bf16_from_f32(2.0e4f);
    }
    kv[0 * ld + 300] = 0x7FC0;                          /* a NaN: its group's scale 255 */
    kv[3 * ld + 70] = dinf__bf16_from_f32(-INFINITY);  /* -inf: scale 255, codes 0 */
    uint8_t *want = aligned_alloc(64, (bytes + 63) / 64 * 64), *got = malloc(bytes);
    memset(want, 0xAB, bytes);
    cr_assert_eq(dinf_mla_quantize_kvcache_model1(kv, n, ld, cpu_slots, want, num_blocks, page, pb, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    void *d_kv = to_device(kv, sizeof(uint16_t) * (size_t)(n * ld)), *d_slots = to_device(slots, sizeof slots), *d_cache;
    CUDA_OK(cudaMalloc(&d_cache, bytes));
    CUDA_OK(cudaMemset(d_cache, 0xAB, bytes));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
    cr_assert_eq(dinf_mla_quantize_kvcache_model1(d_kv, n, ld, d_slots, d_cache, num_blocks, page, pb, &cuda),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(got, d_cache, bytes, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < bytes; i++)
        cr_assert_eq(got[i], want[i], "byte %zu: gpu %02x, cpu %02x", i, got[i], want[i]);
    cudaFree(d_kv);
    cudaFree(d_slots);
    cudaFree(d_cache);
    free(kv);
    free(want);
    free(got);
}

Test(mla_gpu, out_of_range_block_table_entry_gives_nan_not_a_crash) {
    kv_problem p;
    kv_make(&p, 3, 1, 200, 0, 0, 64, 1, 8000);
    const int64_t b = 3, rows = b * 16;
    uint16_t *q = malloc(sizeof(uint16_t) * (size_t)(rows * DQK));
    uint64_t s = 5;
    fill_values(q, rows * DQK, &s);
    int32_t meta[8 * 132], splits[4];
    cr_assert_eq(dinf_mla_get_metadata(p.seqlens, b, 132, meta, splits, NULL), DINF_STATUS_OK);
    p.bt[1 * p.max_blocks + 2] = -7; /* request 1, third page */
    CUDA_OK(cudaMemcpy(p.d_bt, p.bt, sizeof(int32_t) * (size_t)(b * p.max_blocks), cudaMemcpyHostToDevice));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
    size_t ws_bytes;
    cr_assert_eq(dinf_mla_workspace_size(b, 1, 16, 132, &ws_bytes, &cuda), DINF_STATUS_OK);
    void *d_q = to_device(q, sizeof(uint16_t) * (size_t)(rows * DQK)), *d_meta = to_device(meta, sizeof meta),
         *d_splits = to_device(splits, sizeof splits), *d_ws, *d_out, *d_lse;
    CUDA_OK(cudaMalloc(&d_ws, ws_bytes));
    CUDA_OK(cudaMalloc(&d_out, sizeof(uint16_t) * (size_t)(rows * DV)));
    CUDA_OK(cudaMalloc(&d_lse, sizeof(float) * (size_t)rows));
    for (int ri = 0; ri < NUM_RUNGS; ri++) {
        if (!rung_enabled(ri))
            continue;
        setenv("DINF_MLA_KERNEL", RUNGS[ri], 1);
        CUDA_OK(cudaMemset(d_lse, 0x11, sizeof(float) * (size_t)rows)); /* finite */
        cr_assert_eq(dinf_mla_decode_with_kvcache(d_q, b, 1, 16, DQK, p.d_kc, p.num_blocks, 64, 1, 64 * DQK, DQK, p.d_bt,
                                                  p.max_blocks, p.d_seqlens, DV, d_meta, 132, d_splits, 0.1f, 0, d_ws, ws_bytes,
                                                  d_out, d_lse, &cuda),
                     DINF_STATUS_OK, "rung %s: %s", RUNGS[ri], dinf_last_error());
        CUDA_OK(cudaDeviceSynchronize());
        float lse[48];
        CUDA_OK(cudaMemcpy(lse, d_lse, sizeof lse, cudaMemcpyDeviceToHost));
        for (int h = 0; h < 16; h++) {
            cr_assert(isfinite(lse[0 * 16 + h]) && isfinite(lse[2 * 16 + h]), "rung %s: healthy requests stay finite",
                      RUNGS[ri]);
            cr_assert(isnan(lse[1 * 16 + h]), "rung %s request 1 head %d: lse %g, expected NaN", RUNGS[ri], h,
                      (double)lse[16 + h]);
        }
    }
    unsetenv("DINF_MLA_KERNEL");
    cudaFree(d_q);
    cudaFree(d_meta);
    cudaFree(d_splits);
    cudaFree(d_ws);
    cudaFree(d_out);
    cudaFree(d_lse);
    free(q);
    kv_free(&p);
}

Test(mla_gpu, metadata_and_decode_in_a_cuda_graph) {
    kv_problem p;
    kv_make(&p, 9, 1, 700, 1, 1, 64, 2, 9000);
    const int64_t b = 9, rows = b * 2 * 32;
    uint16_t *q = malloc(sizeof(uint16_t) * (size_t)(rows * DQK));
    uint64_t s = 11;
    fill_values(q, rows * DQK, &s);
    const int32_t parts = 66;
    int32_t *meta = malloc(sizeof(int32_t) * 8 * parts), *splits = malloc(sizeof(int32_t) * (b + 1));
    cr_assert_eq(dinf_mla_get_metadata(p.seqlens, b, parts, meta, splits, NULL), DINF_STATUS_OK);
    size_t ws_cpu, ws_gpu;
    cr_assert_eq(dinf_mla_workspace_size(b, 2, 32, parts, &ws_cpu, NULL), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_cpu + 63) / 64 * 64);
    uint16_t *out_cpu = malloc(sizeof(uint16_t) * (size_t)(rows * DV)), *out_gpu = malloc(sizeof(uint16_t) * (size_t)(rows * DV));
    float *lse_cpu = malloc(sizeof(float) * (size_t)rows), *lse_gpu = malloc(sizeof(float) * (size_t)rows);
    cr_assert_eq(dinf_mla_decode_with_kvcache(q, b, 2, 32, DQK, p.kc, p.num_blocks, 64, 1, 64 * DQK, DQK, p.bt, p.max_blocks,
                                              p.seqlens, DV, meta, parts, splits, 0.1f, 1, ws, ws_cpu, out_cpu, lse_cpu, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
    cr_assert_eq(dinf_mla_workspace_size(b, 2, 32, parts, &ws_gpu, &cuda), DINF_STATUS_OK);
    void *d_q = to_device(q, sizeof(uint16_t) * (size_t)(rows * DQK)), *d_meta, *d_splits, *d_ws, *d_out, *d_lse;
    CUDA_OK(cudaMalloc(&d_meta, sizeof(int32_t) * 8 * parts));
    CUDA_OK(cudaMalloc(&d_splits, sizeof(int32_t) * (b + 1)));
    CUDA_OK(cudaMalloc(&d_ws, ws_gpu));
    CUDA_OK(cudaMalloc(&d_out, sizeof(uint16_t) * (size_t)(rows * DV)));
    CUDA_OK(cudaMalloc(&d_lse, sizeof(float) * (size_t)rows));
    float *fg = malloc(sizeof(float) * (size_t)(rows * DV)), *fc = malloc(sizeof(float) * (size_t)(rows * DV));
    for (int64_t i = 0; i < rows * DV; i++)
        fc[i] = dinf__f32_from_bf16(out_cpu[i]);
    /* each rung captured (the fast rung chains the combine by programmatic
     * dependent launch) on poisoned outputs, then replayed (capture runs
     * nothing on a GPU; tools/mla-emu's mock runs it eagerly, so the outputs
     * are poisoned before the capture, not between capture and replay) */
    for (int ri = 0; ri < NUM_RUNGS; ri++) {
        if (!rung_enabled(ri))
            continue;
        setenv("DINF_MLA_KERNEL", RUNGS[ri], 1);
        char what[64];
        snprintf(what, sizeof what, "graph, rung %s", RUNGS[ri]);
        CUDA_OK(cudaMemset(d_ws, 0xFF, ws_gpu));
        CUDA_OK(cudaMemset(d_out, 0xFF, sizeof(uint16_t) * (size_t)(rows * DV))); /* NaN */
        CUDA_OK(cudaMemset(d_lse, 0xFF, sizeof(float) * (size_t)rows));
        CUDA_OK(cudaMemset(d_meta, 0x5a, sizeof(int32_t) * 8 * parts));
        CUDA_OK(cudaMemset(d_splits, 0x5a, sizeof(int32_t) * (b + 1)));
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        const dinf_status st1 = dinf_mla_get_metadata(p.d_seqlens, b, parts, d_meta, d_splits, &cuda);
        const dinf_status st2 = dinf_mla_decode_with_kvcache(d_q, b, 2, 32, DQK, p.d_kc, p.num_blocks, 64, 1, 64 * DQK, DQK,
                                                             p.d_bt, p.max_blocks, p.d_seqlens, DV, d_meta, parts, d_splits,
                                                             0.1f, 1, d_ws, ws_gpu, d_out, d_lse, &cuda);
        CUDA_OK(cudaStreamEndCapture(stream, &graph));
        cr_assert_eq(st1, DINF_STATUS_OK, "%s: metadata under capture: %s", what, dinf_last_error());
        cr_assert_eq(st2, DINF_STATUS_OK, "%s: decode under capture: %s", what, dinf_last_error());
        CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
        for (int replay = 0; replay < 2; replay++) { /* replays are repeatable */
            CUDA_OK(cudaGraphLaunch(exec, stream));
            CUDA_OK(cudaStreamSynchronize(stream));
            CUDA_OK(cudaMemcpy(out_gpu, d_out, sizeof(uint16_t) * (size_t)(rows * DV), cudaMemcpyDeviceToHost));
            CUDA_OK(cudaMemcpy(lse_gpu, d_lse, sizeof(float) * (size_t)rows, cudaMemcpyDeviceToHost));
            for (int64_t i = 0; i < rows * DV; i++)
                fg[i] = dinf__f32_from_bf16(out_gpu[i]);
            check_close("out", what, fg, fc, rows * DV, 8e-4, 2.01 / 128, 5e-6);
            check_close("lse", what, lse_gpu, lse_cpu, rows, 1e-6, 8.01 / 65536, 5e-6);
        }
        CUDA_OK(cudaGraphExecDestroy(exec));
        CUDA_OK(cudaGraphDestroy(graph));
    }
    unsetenv("DINF_MLA_KERNEL");
    CUDA_OK(cudaStreamDestroy(stream));
    free(fg);
    free(fc);
    cudaFree(d_q);
    cudaFree(d_meta);
    cudaFree(d_splits);
    cudaFree(d_ws);
    cudaFree(d_out);
    cudaFree(d_lse);
    free(q);
    free(meta);
    free(splits);
    free(ws);
    free(out_cpu);
    free(out_gpu);
    free(lse_cpu);
    free(lse_gpu);
    kv_free(&p);
}

/* ------------------------------------------------------- sparse decode -- */

#include "../mla/mla_sparse_problem.h"

/* Device copies of a sparse problem's inputs, its plan on the device and
 * on the CPU, and the GPU workspace. */
typedef struct sp_device {
    int32_t parts;
    int32_t *meta, *splits;  /* CPU plan */
    sp_args a;               /* device pointers */
    size_t ws_gpu;
} sp_device;

static void sp_device_make(sp_device *d, const sp_problem *p, int32_t parts, const dinf_exec *cuda,
                           cudaStream_t stream, const char *params) {
    const int64_t reqs = p->b * p->s_q, rows = reqs * p->h_q;
    d->parts = parts;
    d->meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
    d->splits = malloc(sizeof(int32_t) * (size_t)(reqs + 1));
    const sp_args host = sp_host_args(p);
    dinf_mla_sparse_extras hx, dx;
    cr_assert_eq(dinf_mla_get_sparse_metadata(p->topk_length, p->b, p->s_q, p->topk, parts, d->meta,
                                              d->splits, sp_extras(p, &host, &hx), NULL),
                 DINF_STATUS_OK, "%s: %s", params, dinf_last_error());
    memset(&d->a, 0, sizeof d->a);
    if (p->sink)
        d->a.sink = to_device(p->sink, sizeof(float) * (size_t)p->h_q);
    if (p->etopk > 0) {
        d->a.ekc = to_device(p->kv_fp8 ? (const void *)p->ekc8 : (const void *)p->ekc, sp_extra_bytes(p));
        d->a.eindices = to_device(p->eindices, sizeof(int32_t) * (size_t)(reqs * p->etopk));
        d->a.etopk_length =
            p->etopk_length ? to_device(p->etopk_length, sizeof(int32_t) * (size_t)p->b) : NULL;
    }
    d->a.q = to_device(p->q, sizeof(uint16_t) * (size_t)(rows * sp_qd(p)));
    d->a.kc = to_device(p->kv_fp8 ? (const void *)p->kc8 : (const void *)p->kc, sp_cache_bytes(p));
    d->a.indices = to_device(p->indices, sizeof(int32_t) * (size_t)(reqs * p->topk));
    d->a.topk_length = p->topk_length ? to_device(p->topk_length, sizeof(int32_t) * (size_t)p->b) : NULL;
    CUDA_OK(cudaMalloc((void **)&d->a.meta, sizeof(int32_t) * 8 * (size_t)parts));
    CUDA_OK(cudaMalloc((void **)&d->a.splits, sizeof(int32_t) * (size_t)(reqs + 1)));
    CUDA_OK(cudaMemsetAsync(d->a.meta, 0x5a, sizeof(int32_t) * 8 * (size_t)parts, stream));
    CUDA_OK(cudaMemsetAsync(d->a.splits, 0x5a, sizeof(int32_t) * (size_t)(reqs + 1), stream));
    /* the device plan equals the CPU's */
    cr_assert_eq(dinf_mla_get_sparse_metadata(d->a.topk_length, p->b, p->s_q, p->topk, parts,
                                              d->a.meta, d->a.splits, sp_extras(p, &d->a, &dx),
                                              cuda),
                 DINF_STATUS_OK, "%s: %s", params, dinf_last_error());
    int32_t *g_meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
    int32_t *g_splits = malloc(sizeof(int32_t) * (size_t)(reqs + 1));
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(g_meta, d->a.meta, sizeof(int32_t) * 8 * (size_t)parts, cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(g_splits, d->a.splits, sizeof(int32_t) * (size_t)(reqs + 1), cudaMemcpyDeviceToHost));
    cr_assert_eq(memcmp(g_meta, d->meta, sizeof(int32_t) * 8 * (size_t)parts), 0,
                 "%s: device sparse metadata differs", params);
    cr_assert_eq(memcmp(g_splits, d->splits, sizeof(int32_t) * (size_t)(reqs + 1)), 0,
                 "%s: device sparse num_splits differs", params);
    free(g_meta);
    free(g_splits);
    cr_assert_eq(dinf_mla_workspace_size(reqs, 1, p->h_q, parts, &d->ws_gpu, cuda), DINF_STATUS_OK);
    CUDA_OK(cudaMalloc(&d->a.ws, d->ws_gpu));
    d->a.ws_bytes = d->ws_gpu;
    CUDA_OK(cudaMalloc((void **)&d->a.out, sizeof(uint16_t) * (size_t)(rows * SP_DV + 1)));
    CUDA_OK(cudaMalloc((void **)&d->a.lse, sizeof(float) * (size_t)(rows + 1)));
}

static void sp_device_free(sp_device *d) {
    cudaFree((void *)d->a.q);
    cudaFree((void *)d->a.kc);
    cudaFree((void *)d->a.indices);
    cudaFree((void *)d->a.topk_length);
    cudaFree((void *)d->a.sink);
    cudaFree((void *)d->a.ekc);
    cudaFree((void *)d->a.eindices);
    cudaFree((void *)d->a.etopk_length);
    cudaFree(d->a.meta);
    cudaFree(d->a.splits);
    cudaFree(d->a.ws);
    cudaFree(d->a.out);
    cudaFree(d->a.lse);
    free(d->meta);
    free(d->splits);
}

/* Poisoned outputs, the GPU decode, outputs copied back (with the guard
 * element past each checked). */
static void sp_device_run(const sp_problem *p, sp_device *d, const dinf_exec *cuda,
                          cudaStream_t stream, uint16_t *out, float *lse, const char *what) {
    const int64_t rows = p->b * p->s_q * p->h_q;
    CUDA_OK(cudaMemsetAsync(d->a.ws, 0xFF, d->ws_gpu, stream));
    CUDA_OK(cudaMemsetAsync(d->a.out, 0xFF, sizeof(uint16_t) * (size_t)(rows * SP_DV + 1), stream));
    CUDA_OK(cudaMemsetAsync(d->a.lse, 0xFF, sizeof(float) * (size_t)(rows + 1), stream));
    cr_assert_eq(sp_decode(p, &d->a, d->parts, cuda), DINF_STATUS_OK, "%s: %s", what, dinf_last_error());
    CUDA_OK(cudaStreamSynchronize(stream));
    CUDA_OK(cudaMemcpy(out, d->a.out, sizeof(uint16_t) * (size_t)(rows * SP_DV + 1), cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(lse, d->a.lse, sizeof(float) * (size_t)(rows + 1), cudaMemcpyDeviceToHost));
    cr_assert_eq(out[rows * SP_DV], 0xFFFFu, "%s: write past out", what);
    uint32_t lse_end;
    memcpy(&lse_end, &lse[rows], 4);
    cr_assert_eq(lse_end, 0xFFFFFFFFu, "%s: write past lse", what);
}

/* One sparse point: device plan = CPU plan, GPU decode = CPU decode within
 * the upstream tolerances on the simple rung and (FP8 cache) the fast rung;
 * seesaw, and fast with a BF16 cache, refuse it by name. */
/* The extras of a sparse point: an extra cache of etopk-long lists (0:
 * none) with its own page size, extra_topk_length or not, the sink or not. */
typedef struct sp_extra_opts {
    int32_t etopk, epage;
    int elengths, sink;
} sp_extra_opts;

static void sparse_point_ex(int64_t b, int32_t s_q, int32_t h_q, int32_t h_kv, int32_t page,
                            int32_t topk, int lengths, double skip, int kv_fp8, uint64_t seed,
                            sp_extra_opts ex) {
    char params[240];
    snprintf(params, sizeof params,
             "sparse b=%lld s_q=%d h_q=%d h_kv=%d page=%d topk=%d lengths=%d %s seed=%llu "
             "etopk=%d epage=%d elengths=%d sink=%d",
             (long long)b, s_q, h_q, h_kv, page, topk, lengths, kv_fp8 == 2 ? "model1" : kv_fp8 ? "fp8" : "bf16",
             (unsigned long long)seed, ex.etopk, ex.epage, ex.elengths, ex.sink);
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
    sp_problem p;
    sp_make(&p, b, s_q, h_q, h_kv, page, topk, lengths, skip, kv_fp8, seed);
    if (ex.etopk > 0)
        sp_add_extra(&p, ex.etopk, ex.epage, ex.elengths, skip, seed + 1000);
    if (ex.sink)
        sp_add_sink(&p, seed + 2000);
    const int32_t parts = sp_parts(&p, 132);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s: %s", params, dinf_last_error());
    const int64_t rows = b * s_q * h_q;
    sp_device d;
    sp_device_make(&d, &p, parts, &cuda, stream, params);
    uint16_t *out = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV + 1));
    float *lse = malloc(sizeof(float) * (size_t)(rows + 1));
    float *fo_gpu = malloc(sizeof(float) * (size_t)(rows * SP_DV)), *fo_cpu = malloc(sizeof(float) * (size_t)(rows * SP_DV));
    for (int64_t i = 0; i < rows * SP_DV; i++)
        fo_cpu[i] = dinf__f32_from_bf16(p.out[i]);
    for (int ri = 0; ri < NUM_RUNGS; ri++) {
        char what[300];
        snprintf(what, sizeof what, "%s rung=%s", params, RUNGS[ri]);
        setenv("DINF_MLA_KERNEL", RUNGS[ri], 1);
        /* the fast rung takes a sparse decode with the FP8 cache; seesaw none */
        const char *refusal = ri == RUNG_SEESAW ? "the seesaw rung takes dense decodes only"
                              : ri == RUNG_FAST && !kv_fp8 ? "a sparse decode on the fast rung needs the FP8 cache"
                                                           : NULL;
        if (refusal) {
            cr_assert_eq(sp_decode(&p, &d.a, parts, &cuda), DINF_STATUS_UNSUPPORTED, "%s", what);
            cr_assert(strstr(dinf_last_error(), refusal), "%s: %s", what, dinf_last_error());
            continue;
        }
        if (!rung_enabled(ri))
            continue;
        sp_device_run(&p, &d, &cuda, stream, out, lse, what);
        for (int64_t i = 0; i < rows * SP_DV; i++)
            fo_gpu[i] = dinf__f32_from_bf16(out[i]);
        check_close("out", what, fo_gpu, fo_cpu, rows * SP_DV, 8e-4, 2.01 / 128, 5e-6);
        check_close("lse", what, lse, p.lse, rows, 1e-6, 8.01 / 65536, 5e-6);
    }
    unsetenv("DINF_MLA_KERNEL");
    /* auto: the fast rung with the FP8 cache, else simple */
    sp_device_run(&p, &d, &cuda, stream, out, lse, params);
    for (int64_t i = 0; i < rows * SP_DV; i++)
        fo_gpu[i] = dinf__f32_from_bf16(out[i]);
    check_close("out", params, fo_gpu, fo_cpu, rows * SP_DV, 8e-4, 2.01 / 128, 5e-6);
    free(fo_gpu);
    free(fo_cpu);
    free(out);
    free(lse);
    sp_device_free(&d);
    sp_free(&p);
    CUDA_OK(cudaStreamDestroy(stream));
}

static void sparse_point(int64_t b, int32_t s_q, int32_t h_q, int32_t h_kv, int32_t page,
                         int32_t topk, int lengths, double skip, int kv_fp8, uint64_t seed) {
    sparse_point_ex(b, s_q, h_q, h_kv, page, topk, lengths, skip, kv_fp8, seed,
                    (sp_extra_opts){0, 0, 0, 0});
}

/* V3.2's decode (h_kv 1, h_q 128, s_q 2, FP8 cache, 64-token pages; topk
 * 2048 upstream, 640 here), smaller ones, odd pages, h_kv 2, skipped and
 * repeated slots, topk_length with zeros, a position listing -1 only. */
Test(mla_gpu, sparse_decode_matches_the_cpu) {
    sparse_point(2, 2, 128, 1, 64, 640, 1, 0.1, 1, 8801);
    sparse_point(3, 1, 64, 1, 7, 300, 0, 0.2, 0, 8802);
    sparse_point(2, 2, 16, 2, 1, 129, 1, 0.3, 1, 8803);
    sparse_point(4, 3, 16, 1, 64, 64, 1, 0.1, 0, 8804);
    sparse_point(3, 3, 32, 1, 16, 200, 1, 0.1, 1, 8805);
}

/* The fast rung's per-entry L2 prefetch off and at its deepest: the same results. */
Test(mla_gpu, sparse_fp8_prefetch_off_and_deep) {
    const char *const depths[2] = {"0", "8"};
    for (int i = 0; i < 2; i++) {
        setenv("DINF_MLA_FP8_PREFETCH", depths[i], 1);
        sparse_point(3, 2, 64, 1, 64, 300, 1, 0.15, 1, 8810 + (uint64_t)i);
    }
    unsetenv("DINF_MLA_FP8_PREFETCH");
}

/* FlashMLA's 2026 keywords: the attention sink (per head, with -inf and
 * +inf heads) and an extra cache (own page size, padded rows, lengths),
 * alone and together, on the simple rung and (FP8) the fast rung; with the
 * fast rung's prefetch off and deepest too (the extra entries are
 * prefetched from the extra cache). */
Test(mla_gpu, sparse_extras_match_the_cpu) {
    sparse_point_ex(2, 2, 128, 1, 64, 300, 1, 0.1, 1, 8831, (sp_extra_opts){130, 64, 1, 1});
    sparse_point_ex(3, 1, 64, 1, 7, 100, 0, 0.2, 1, 8832, (sp_extra_opts){70, 5, 0, 0});
    sparse_point_ex(2, 2, 16, 2, 3, 90, 1, 0.2, 0, 8833, (sp_extra_opts){65, 1, 1, 1});
    sparse_point_ex(2, 2, 64, 1, 64, 64, 1, 0.1, 1, 8834, (sp_extra_opts){0, 0, 0, 1});
    /* a main list of whole blocks (no padding) right before the extra list */
    sparse_point_ex(2, 2, 64, 1, 64, 128, 0, 0.1, 1, 8837, (sp_extra_opts){70, 5, 1, 1});
    const char *const depths[2] = {"0", "8"};
    for (int i = 0; i < 2; i++) {
        setenv("DINF_MLA_FP8_PREFETCH", depths[i], 1);
        sparse_point_ex(2, 2, 64, 1, 64, 150, 1, 0.15, 1, 8835 + (uint64_t)i,
                        (sp_extra_opts){100, 13, 1, 1});
    }
    unsetenv("DINF_MLA_FP8_PREFETCH");
}

/* The MODEL1 cache (head_dim 512): GPU = CPU on the simple and fast rungs
 * (the fast rung's MODEL1 kernel: 512-wide q, the tile's last 64 columns
 * zero, scales after the page's rows), odd and padded pages, V3.2's heads,
 * with the extras, and the fast rung's prefetch off and deepest. */
Test(mla_gpu, sparse_model1_matches_the_cpu) {
    sparse_point(2, 2, 128, 1, 64, 300, 1, 0.1, 2, 8861);
    sparse_point(3, 1, 64, 1, 61, 130, 0, 0.2, 2, 8862);
    sparse_point(2, 2, 16, 1, 1, 70, 1, 0.3, 2, 8863);
    sparse_point_ex(2, 2, 64, 1, 64, 150, 1, 0.1, 2, 8864, (sp_extra_opts){100, 53, 1, 1});
    const char *const depths[2] = {"0", "8"};
    for (int i = 0; i < 2; i++) {
        setenv("DINF_MLA_FP8_PREFETCH", depths[i], 1);
        sparse_point_ex(2, 2, 64, 1, 7, 120, 1, 0.15, 2, 8865 + (uint64_t)i,
                        (sp_extra_opts){70, 3, 1, 1});
    }
    unsetenv("DINF_MLA_FP8_PREFETCH");
    /* unpadded pages (stride page * 584 rounded to 16): the last row's scales end the cache */
    sp_m1_tight = 1;
    sparse_point_ex(2, 2, 64, 1, 64, 130, 1, 0.1, 2, 8867, (sp_extra_opts){60, 2, 1, 1});
    sparse_point(2, 1, 16, 1, 7, 90, 0, 0.1, 2, 8868);
    sp_m1_tight = 0;
}

/* A sparse decode with the extras (FP8 cache, extra cache, sink) captured
 * in a CUDA graph with its device plan, on the simple and fast rungs,
 * replayed twice: the CPU's results each time (tools/mla-emu's mock runs a
 * capture eagerly: the outputs are poisoned before it). */
Test(mla_gpu, sparse_metadata_and_decode_in_a_cuda_graph) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
    sp_problem p;
    sp_make(&p, 3, 2, 64, 1, 64, 300, 1, 0.1, 1, 8951);
    sp_add_extra(&p, 100, 13, 1, 0.1, 8952);
    sp_add_sink(&p, 8953);
    const int32_t parts = sp_parts(&p, 132);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    sp_device d;
    sp_device_make(&d, &p, parts, &cuda, stream, "sparse graph");
    const int64_t rows = p.b * p.s_q * p.h_q, reqs = p.b * p.s_q;
    uint16_t *out = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV));
    float *lse = malloc(sizeof(float) * (size_t)rows);
    float *fg = malloc(sizeof(float) * (size_t)(rows * SP_DV)), *fc = malloc(sizeof(float) * (size_t)(rows * SP_DV));
    for (int64_t i = 0; i < rows * SP_DV; i++)
        fc[i] = dinf__f32_from_bf16(p.out[i]);
    for (int ri = 0; ri < NUM_RUNGS; ri++) {
        if (ri == RUNG_SEESAW || !rung_enabled(ri))
            continue;
        setenv("DINF_MLA_KERNEL", RUNGS[ri], 1);
        char what[64];
        snprintf(what, sizeof what, "sparse graph, rung %s", RUNGS[ri]);
        CUDA_OK(cudaMemset(d.a.ws, 0xFF, d.ws_gpu));
        CUDA_OK(cudaMemset(d.a.out, 0xFF, sizeof(uint16_t) * (size_t)(rows * SP_DV)));
        CUDA_OK(cudaMemset(d.a.lse, 0xFF, sizeof(float) * (size_t)rows));
        CUDA_OK(cudaMemset(d.a.meta, 0x5a, sizeof(int32_t) * 8 * (size_t)parts));
        CUDA_OK(cudaMemset(d.a.splits, 0x5a, sizeof(int32_t) * (size_t)(reqs + 1)));
        dinf_mla_sparse_extras dx;
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        const dinf_status st1 = dinf_mla_get_sparse_metadata(
            d.a.topk_length, p.b, p.s_q, p.topk, parts, d.a.meta, d.a.splits, sp_extras(&p, &d.a, &dx), &cuda);
        const dinf_status st2 = sp_decode(&p, &d.a, parts, &cuda);
        CUDA_OK(cudaStreamEndCapture(stream, &graph));
        cr_assert_eq(st1, DINF_STATUS_OK, "%s: metadata under capture: %s", what, dinf_last_error());
        cr_assert_eq(st2, DINF_STATUS_OK, "%s: decode under capture: %s", what, dinf_last_error());
        CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
        for (int replay = 0; replay < 2; replay++) {
            CUDA_OK(cudaGraphLaunch(exec, stream));
            CUDA_OK(cudaStreamSynchronize(stream));
            CUDA_OK(cudaMemcpy(out, d.a.out, sizeof(uint16_t) * (size_t)(rows * SP_DV), cudaMemcpyDeviceToHost));
            CUDA_OK(cudaMemcpy(lse, d.a.lse, sizeof(float) * (size_t)rows, cudaMemcpyDeviceToHost));
            for (int64_t i = 0; i < rows * SP_DV; i++)
                fg[i] = dinf__f32_from_bf16(out[i]);
            check_close("out", what, fg, fc, rows * SP_DV, 8e-4, 2.01 / 128, 5e-6);
            check_close("lse", what, lse, p.lse, rows, 1e-6, 8.01 / 65536, 5e-6);
        }
        CUDA_OK(cudaGraphExecDestroy(exec));
        CUDA_OK(cudaGraphDestroy(graph));
    }
    unsetenv("DINF_MLA_KERNEL");
    free(fg);
    free(fc);
    free(out);
    free(lse);
    sp_device_free(&d);
    sp_free(&p);
    CUDA_OK(cudaStreamDestroy(stream));
}

/* Values the host cannot check: a slot past the cache makes its query
 * position NaN (every head), a topk_length outside [0, topk] its request's
 * positions; every other position matches the CPU. With `extra` the same
 * through the extra cache's list and extra_topk_length (the main list's
 * values are valid, and a sink is on). */
static void sparse_bad_values(int kv_fp8, const char *rung, int extra) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, (dinf_stream_t)stream);
    sp_problem p;
    sp_make(&p, 4, 2, 16, 1, 64, 100, 0, 0.1, kv_fp8, 8901);
    setenv("DINF_MLA_KERNEL", rung, 1);
    int32_t *lens = malloc(sizeof(int32_t) * 4);
    lens[0] = 90;
    lens[1] = 100;
    lens[2] = 77;
    lens[3] = 64;
    if (extra) {
        p.topk_length = malloc(sizeof(int32_t) * 4);
        for (int i = 0; i < 4; i++)
            p.topk_length[i] = 30 + 20 * i;
        sp_add_extra(&p, 100, 9, 0, 0.1, 8902);
        p.etopk_length = lens;
        sp_add_sink(&p, 8903);
    } else {
        p.topk_length = lens;
    }
    const int32_t parts = 5;
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    sp_device d;
    sp_device_make(&d, &p, parts, &cuda, stream, "bad values");
    /* position (0, 0): slot 5 past the cache; request 1: a length of -1; request 2: 101 */
    const int32_t bad_slot = (int32_t)(extra ? p.e_num_blocks * p.epage : p.num_blocks * p.page);
    CUDA_OK(cudaMemcpy((int32_t *)(extra ? d.a.eindices : d.a.indices) + 5, &bad_slot, 4,
                       cudaMemcpyHostToDevice));
    const int32_t bad_len = 101, neg_len = -1; /* request 1: a negative length */
    int32_t *d_lens = (int32_t *)(extra ? d.a.etopk_length : d.a.topk_length);
    CUDA_OK(cudaMemcpy(d_lens + 2, &bad_len, 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(d_lens + 1, &neg_len, 4, cudaMemcpyHostToDevice));
    const int64_t rows = p.b * p.s_q * p.h_q;
    uint16_t *out = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV + 1));
    float *lse = malloc(sizeof(float) * (size_t)(rows + 1));
    sp_device_run(&p, &d, &cuda, stream, out, lse, "bad values");
    for (int64_t b = 0; b < p.b; b++)
        for (int32_t t = 0; t < p.s_q; t++)
            for (int32_t h = 0; h < p.h_q; h++) {
                const int nan_expected = (b == 0 && t == 0) || b == 1 || b == 2;
                const int64_t row = (b * p.s_q + t) * p.h_q + h;
                const float l = lse[(b * p.h_q + h) * p.s_q + t];
                if (nan_expected) {
                    cr_assert(isnan(l), "b=%lld t=%d h=%d: lse %g, wanted NaN", (long long)b, t, h, l);
                    for (int c = 0; c < SP_DV; c++)
                        cr_assert(isnan(dinf__f32_from_bf16(out[row * SP_DV + c])),
                                  "b=%lld t=%d h=%d: out[%d] not NaN", (long long)b, t, h, c);
                    continue;
                }
                const float want = p.lse[(b * p.h_q + h) * p.s_q + t];
                cr_assert(l == want || fabsf(l - want) <= 1e-6f ||
                              fabsf(l - want) <= 8.01f / 65536 * fabsf(want),
                          "b=%lld t=%d h=%d: lse %g vs cpu %g", (long long)b, t, h, l, want);
                for (int c = 0; c < SP_DV; c++) {
                    const float g = dinf__f32_from_bf16(out[row * SP_DV + c]);
                    const float w = dinf__f32_from_bf16(p.out[row * SP_DV + c]);
                    cr_assert(fabsf(g - w) <= 8e-4f || fabsf(g - w) <= 2.01f / 128 * fabsf(w),
                              "b=%lld t=%d h=%d: out[%d] %g vs cpu %g", (long long)b, t, h, c, g, w);
                }
            }
    unsetenv("DINF_MLA_KERNEL");
    free(out);
    free(lse);
    sp_device_free(&d);
    sp_free(&p);
    CUDA_OK(cudaStreamDestroy(stream));
}

Test(mla_gpu, sparse_bad_device_values_give_nan_for_their_positions_only) {
    for (int extra = 0; extra < 2; extra++) {
        if (rung_enabled(0)) {
            sparse_bad_values(0, "simple", extra);
            sparse_bad_values(2, "simple", extra); /* the MODEL1 cache */
        }
        if (rung_enabled(RUNG_FAST)) {
            sparse_bad_values(1, "fast", extra);
            sparse_bad_values(2, "fast", extra);
        }
    }
}

#else
Test(mla_gpu, built_without_cuda) { cr_skip_test("libdeepinfra was built without CUDA (make CUDA=0)"); }
#endif
