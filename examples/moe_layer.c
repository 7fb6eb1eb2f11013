/*
 * moe_layer: one DeepSeek-style MoE layer forward on R expert-parallel ranks,
 * on the CPU, with the libdeepinfra modules working together:
 *
 *   eplb  dinf_eplb_rebalance_experts     a replication plan for the measured
 *                                         expert loads (printed, not applied)
 *   ep    dinf_ep_low_latency_dispatch    tokens -> experts, FP8 on the wire,
 *                                         into the masked [L][M][H] layout
 *   gemm  dinf_fp8_m_grouped_gemm_nt_masked
 *                                         every local expert's GEMM on that
 *                                         layout as it stands (no repacking)
 *   ep    dinf_ep_low_latency_combine     expert outputs -> token order,
 *                                         weighted by the router's top-k weights
 *
 * The R ranks are threads of this process (dinf_ep_group_create_threads):
 * the same calls drive a GPU group (NCCL, CUDA IPC) with device pointers and
 * a DINF_EXEC_CUDA exec. Each expert is a single square FP8 matrix
 * y = W_e x (W_e: hidden x hidden) to keep the example short; a real layer
 * runs gate/up, the activation and down here, each as one masked GEMM.
 *
 * The result is checked against a float64 reference computed here from the
 * unquantized inputs (bfloat16 x, float32 W, float32 top-k weights).
 *
 *   build/examples/moe_layer [--ranks 4] [--experts 16] [--topk 4]
 *                            [--hidden 1024] [--tokens 64] [--seed 1]
 *
 * Exit status: 0 checked OK; 1 a library call failed, the error is too large
 * (calc_diff > 1e-3) or the output has a NaN; 2 usage error.
 */
#include <deepinfra.h>

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Check a library call: on failure print where (`who`, a string each
 * function defines), the function, its status and the library's message,
 * then jump to the function's cleanup. dinf_last_error() is per thread: read
 * it on the thread that made the call. */
#define CHECK(call)                                                                      \
    do {                                                                                 \
        dinf_status st_ = (call);                                                        \
        if (st_ != DINF_STATUS_OK) {                                                     \
            fprintf(stderr, "%s: %.*s failed: %s: %s\n", who, (int)strcspn(#call, "("),  \
                    #call, dinf_status_string(st_), dinf_last_error());                  \
            goto fail;                                                                   \
        }                                                                                \
    } while (0)

#define ALLOC(ptr, count)                                                                \
    do {                                                                                 \
        (ptr) = calloc((size_t)(count), sizeof(*(ptr)));                                 \
        if (!(ptr)) {                                                                    \
            fprintf(stderr, "%s: out of memory (%s)\n", who, #ptr);                    \
            goto fail;                                                                   \
        }                                                                                \
    } while (0)

/* ------------------------------------------------------------- inputs -- */

/* splitmix64: reproducible random inputs without libm. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_uniform(uint64_t *s) { /* [0, 1) */
    return (float)(rng_next(s) >> 40) * (1.0f / 16777216.0f);
}
static float rng_normal(uint64_t *s) { /* mean 0, variance 1 (Irwin-Hall, 4 terms) */
    float u = rng_uniform(s) + rng_uniform(s) + rng_uniform(s) + rng_uniform(s);
    return (u - 2.0f) * 1.7320508f;
}

/* The router of one token: DeepSeek-V3 scores each expert, keeps the top-k
 * and normalises their scores into the combine weights. Here a score is
 * uniform in (0, 1) plus a per-expert popularity bias, so some experts are
 * hot, as in real traffic (which is what EPLB is for). */
static void route_token(uint64_t *s, const float *bias, int32_t num_experts, int32_t topk,
                        int64_t *idx, float *weight) {
    float score[1024]; /* num_experts <= 1024: checked in main */
    for (int32_t e = 0; e < num_experts; e++) score[e] = rng_uniform(s) + bias[e];
    float sum = 0.0f;
    for (int32_t k = 0; k < topk; k++) { /* selection: top-k is tiny */
        int32_t best = -1;
        for (int32_t e = 0; e < num_experts; e++)
            if (score[e] >= 0.0f && (best < 0 || score[e] > score[best])) best = e;
        idx[k] = best;
        weight[k] = score[best];
        sum += score[best];
        score[best] = -1.0f; /* taken */
    }
    for (int32_t k = 0; k < topk; k++) weight[k] /= sum;
}

/* ---------------------------------------------------------- one rank --- */

typedef struct rank_ctx {
    /* shared, read-only */
    dinf_ep_group *group;    /* this rank's endpoint */
    int32_t rank, num_ranks, num_experts, topk, hidden;
    int64_t max_tokens;      /* T = num_max_dispatch_tokens_per_rank, the same on every rank */
    int64_t num_tokens;      /* this rank's tokens, <= T (ranks may differ) */
    const uint16_t *x;       /* bfloat16 [num_tokens][hidden]: the layer input */
    const int64_t *topk_idx; /* int64 [num_tokens][topk]: global expert ids */
    const float *topk_w;     /* float32 [num_tokens][topk]: combine weights */
    const uint8_t *w_q;      /* e4m3 [num_experts][hidden][hidden]: all experts, 128x128 blocks */
    const float *w_s;        /* float32 [num_experts][hidden/128][hidden/128] */
    int32_t threads;         /* CPU threads for this rank's GEMM */
    /* outputs */
    uint16_t *out;           /* bfloat16 [num_tokens][hidden]: the layer output */
    int32_t *recv_count;     /* int32 [L]: rows received per local expert */
    int ok;
} rank_ctx;

/* Everything one rank does in a forward step. Each rank runs this on its own
 * thread: dispatch and combine are collective and wait for the peers. */
static void *rank_main(void *arg) {
    rank_ctx *c = arg;
    const int32_t R = c->num_ranks, H = c->hidden;
    const int32_t L = c->num_experts / R; /* local experts: [rank * L, (rank + 1) * L) */
    const int64_t M = (int64_t)R * c->max_tokens; /* rows per expert in the masked layout */
    const int64_t kb = (H + 127) / 128;          /* 128-channel blocks along hidden */
    dinf_exec cpu = DINF_EXEC_CPU_INIT;
    cpu.num_threads = c->threads;
    dinf_ep_ll_handle *handle = NULL;
    uint8_t *recv_x = NULL;
    float *recv_scales = NULL;
    uint16_t *y = NULL;
    int64_t scale_rows = 0;
    char who[48];
    snprintf(who, sizeof who, "moe_layer: rank %d", (int)c->rank);

    /* Receive buffers of the low-latency layout, allocated once per model in
     * an engine (their size depends only on R, T, L and H):
     *   recv_x      e4m3    [L][M][H]         rows >= recv_count[l] untouched
     *   recv_scales float32 [L][H/128][scale_rows], M-major per expert, which
     *               is exactly the a_scales layout of the masked GEMM with
     *               m_max = M (scale_rows = ceil(M/4)*4, 16-byte columns). */
    /* (A rank that fails before a collective call leaves its peers waiting
     * until config.timeout_ms, then they fail with DINF_STATUS_TIMEOUT.) */
    CHECK(dinf_ep_ll_scale_rows(R, c->max_tokens, &scale_rows));
    ALLOC(recv_x, (size_t)L * M * H);
    ALLOC(recv_scales, (size_t)L * kb * scale_rows);
    ALLOC(y, (size_t)L * M * H);
    CHECK(dinf_ep_ll_handle_create(c->group, &handle));

    /* 1. Dispatch. Each (token, selected expert) pair becomes one row of its
     * expert's block; with use_fp8 = 1 the sender quantizes each token per
     * 128 channels (the bits of dinf_fp8_quantize with block_rows = 1), so the
     * caller never quantizes activations itself. */
    CHECK(dinf_ep_low_latency_dispatch(c->group, c->x, c->num_tokens, H, c->topk_idx, c->topk,
                                       c->num_experts, c->max_tokens, /*use_fp8=*/1, recv_x,
                                       recv_scales, c->recv_count, /*recv_src_info=*/NULL,
                                       /*recv_layout_range=*/NULL, handle, &cpu));

    /* 2. Experts. One masked grouped GEMM over the L local experts: group l
     * multiplies its first recv_count[l] rows by expert (rank * L + l)'s
     * weights (B is [n][k] = [H][H], K-major: the "NT" layout). The output
     * y bfloat16 [L][M][H] is already the layout combine reads. The hint
     * expected_m picks the GPU tile shape; the CPU ignores it. */
    int64_t rows = 0;
    for (int32_t l = 0; l < L; l++) rows += c->recv_count[l];
    for (size_t i = 0; i < (size_t)L * M * H; i++) y[i] = 0x7FC0; /* NaN: unwritten rows show */
    const size_t w_elems = (size_t)H * H, ws_elems = (size_t)kb * kb;
    CHECK(dinf_fp8_m_grouped_gemm_nt_masked(
        L, M, /*n=*/H, /*k=*/H, recv_x, /*lda=*/H, recv_scales,
        c->w_q + (size_t)c->rank * L * w_elems, /*ldb=*/H, c->w_s + (size_t)c->rank * L * ws_elems,
        y, /*ldd=*/H, c->recv_count, /*expected_m=*/(rows + L - 1) / L, &cpu));

    /* 3. Combine. Every row goes back to its source rank, which sums
     * weight[t][k] * y(t, k) over k in float32 and rounds once to bfloat16.
     * topk_idx must be the one dispatched (the handle remembers the routes). */
    CHECK(dinf_ep_low_latency_combine(c->group, y, H, c->topk_idx, c->topk_w, c->num_tokens,
                                      c->topk, handle, c->out, &cpu));
    c->ok = 1;
fail:
    dinf_ep_ll_handle_destroy(handle);
    free(recv_x);
    free(recv_scales);
    free(y);
    return NULL;
}

/* ----------------------------------------------------------------- EPLB -- */

/* Show what EPLB would do with these loads: one redundant slot per GPU
 * (R + num_experts slots), a single node. The plan is printed, not applied:
 * applying it means loading the replicated experts' weights and mapping each
 * token's expert to one of its replicas (log2phy) before dispatch. */
static int show_eplb_plan(const int32_t *tokens_per_expert, int32_t E, int32_t R) {
    const char *who = "moe_layer: eplb";
    const int64_t slots = (int64_t)E + R;
    int ok = 0;
    float *load = NULL;
    int64_t *identity = NULL, *phy2log = NULL, *logcnt = NULL;
    dinf_eplb_balance_summary before, after;
    ALLOC(load, E);
    ALLOC(identity, E);
    ALLOC(phy2log, slots);
    ALLOC(logcnt, E);
    for (int32_t e = 0; e < E; e++) {
        load[e] = (float)tokens_per_expert[e];
        identity[e] = e; /* today: expert e on slot e, GPU e / (E / R) */
    }
    CHECK(dinf_eplb_balance_report(load, identity, 1, E, E, 1, R, NULL, NULL, NULL, NULL,
                                   &before));
    CHECK(dinf_eplb_rebalance_experts(load, /*layers=*/1, E, slots, /*groups=*/1, /*nodes=*/1,
                                      /*gpus=*/R, NULL, phy2log, NULL, logcnt, NULL, 0, NULL,
                                      NULL, 0));
    CHECK(dinf_eplb_balance_report(load, phy2log, 1, E, slots, 1, R, NULL, NULL, NULL, NULL,
                                   &after));
    printf("eplb: max/mean GPU load %.3f as placed -> %.3f with %d redundant slots (replicated:",
           before.max_gpu_imbalance, after.max_gpu_imbalance, R);
    for (int32_t e = 0; e < E; e++)
        if (logcnt[e] > 1) printf(" e%d x%lld", e, (long long)logcnt[e]);
    printf(")\n");
    ok = 1;
fail:
    free(load);
    free(identity);
    free(phy2log);
    free(logcnt);
    return ok;
}

/* ----------------------------------------------------------------- main -- */

static int parse_args(int argc, char **argv, int32_t *R, int32_t *E, int32_t *K, int32_t *H,
                      int32_t *T, int32_t *seed) {
    for (int i = 1; i < argc; i++) {
        int32_t *dst = !strcmp(argv[i], "--ranks")     ? R
                       : !strcmp(argv[i], "--experts") ? E
                       : !strcmp(argv[i], "--topk")    ? K
                       : !strcmp(argv[i], "--hidden")  ? H
                       : !strcmp(argv[i], "--tokens")  ? T
                       : !strcmp(argv[i], "--seed")    ? seed
                                                       : NULL;
        char *end = NULL;
        long v = (dst && i + 1 < argc) ? strtol(argv[i + 1], &end, 10) : 0;
        if (!dst || !end || *end || v < 1 || v > 1 << 20) {
            fprintf(stderr, "usage: %s [--ranks R] [--experts E] [--topk K] [--hidden H] "
                            "[--tokens T] [--seed S]  (positive integers)\n", argv[0]);
            return 0;
        }
        *dst = (int32_t)v;
        i++;
    }
    /* The library checks its own rules (E % R, H % 128, ...) and says which
     * one failed; these bound the example's own arrays. */
    if (*E > 1024 || *K > *E || *R > 64) {
        fprintf(stderr, "moe_layer: need experts <= 1024, topk <= experts, ranks <= 64\n");
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    int32_t R = 4, E = 16, K = 4, H = 1024, T = 64, seed = 1;
    if (!parse_args(argc, argv, &R, &E, &K, &H, &T, &seed)) return 2;
    const int32_t L = E / R > 0 ? E / R : 1;

    const char *who = "moe_layer";
    int rc = 1;
    uint64_t rng = 0x5eedull + (uint64_t)seed;
    dinf_ep_group *groups[64] = {0};
    pthread_t threads[64];
    rank_ctx ctx[64];
    int64_t ntok[64], first[64], total = 0; /* rank r's tokens are rows [first[r], +ntok[r]) */
    float *x_f32 = NULL, *w = NULL, *w_s = NULL, *topk_w = NULL, *bias = NULL, *out_f32 = NULL;
    uint16_t *x = NULL, *out = NULL;
    uint8_t *w_q = NULL;
    int64_t *topk_idx = NULL;
    int32_t *recv_count = NULL, *tokens_per_rank = NULL, *tokens_per_expert = NULL;
    double *ref = NULL;

    /* Ranks bring different numbers of tokens (at most T each). */
    for (int32_t r = 0; r < R; r++) {
        ntok[r] = T - (int64_t)(r * 5) % (T / 4 + 1);
        first[r] = total;
        total += ntok[r];
    }

    /* Inputs of the whole group, stored rank after rank (each rank reads only
     * its own rows; in a real deployment they live on its GPU). */
    ALLOC(x_f32, (size_t)total * H);
    ALLOC(x, (size_t)total * H);
    ALLOC(topk_idx, (size_t)total * K);
    ALLOC(topk_w, (size_t)total * K);
    ALLOC(bias, E);
    for (size_t i = 0; i < (size_t)total * H; i++) x_f32[i] = rng_normal(&rng);
    /* The layer input is bfloat16, as the hidden states of an engine. */
    CHECK(dinf_convert(x_f32, DINF_DTYPE_FLOAT32, x, DINF_DTYPE_BFLOAT16, total * H, NULL));
    CHECK(dinf_convert(x, DINF_DTYPE_BFLOAT16, x_f32, DINF_DTYPE_FLOAT32, total * H, NULL));
    /* Hot experts: the first 1.5 ranks' worth, so rank 0 (and 1) get the most rows. */
    for (int32_t e = 0; e < E; e++) bias[e] = rng_uniform(&rng) * 0.2f + (e < L + L / 2 ? 0.3f : 0);
    for (int64_t t = 0; t < total; t++)
        route_token(&rng, bias, E, K, topk_idx + t * K, topk_w + t * K);

    /* Expert weights: float32 [E][H][H] (row n = output channel, K-major),
     * quantized ONCE at load time to e4m3 with one scale per 128x128 block.
     * Quantizing the E matrices as one [E*H][H] matrix gives exactly the
     * b_scales layout [E][H/128][H/128] of the grouped GEMMs (H % 128 == 0,
     * so no block straddles two experts). */
    const int64_t kb = (H + 127) / 128; /* the library rejects H % 128 != 0 at dispatch */
    ALLOC(w, (size_t)E * H * H);
    ALLOC(w_q, (size_t)E * H * H);
    ALLOC(w_s, (size_t)E * kb * kb + 1);
    for (size_t i = 0; i < (size_t)E * H * H; i++)
        w[i] = (rng_uniform(&rng) * 2.0f - 1.0f) * 0.05f;
    CHECK(dinf_fp8_quantize(w, DINF_DTYPE_FLOAT32, (int64_t)E * H, H, H, /*block_rows=*/128, w_q,
                            H, w_s, NULL));

    /* Expert loads of this batch (dinf_ep_get_dispatch_layout also gives the
     * per-rank counts of normal mode), and the EPLB plan for them. */
    ALLOC(tokens_per_rank, R);
    ALLOC(tokens_per_expert, E);
    CHECK(dinf_ep_get_dispatch_layout(topk_idx, total, K, E, R, tokens_per_rank,
                                      tokens_per_expert, NULL, NULL));
    printf("moe_layer: %d ranks x %d local experts (%d experts), top-%d, hidden %d, "
           "%lld tokens (<= %d per rank)\n", R, L, E, K, H, (long long)total, T);
    if (!show_eplb_plan(tokens_per_expert, E, R)) goto fail;

    /* The group: R endpoints sharing host memory. Capacities are fixed here
     * (a GPU transport sizes its buffers from them). */
    dinf_ep_config cfg = DINF_EP_CONFIG_INIT;
    cfg.max_hidden = H;
    cfg.max_tokens_per_rank = T;
    cfg.max_topk = K;
    cfg.max_num_experts = E;
    cfg.timeout_ms = 30000; /* a rank that never arrives fails the step, no hang */
    cfg.num_threads = 1;
    CHECK(dinf_ep_group_create_threads(R, &cfg, groups));

    ALLOC(out, (size_t)total * H);
    ALLOC(recv_count, (size_t)R * L);
    for (size_t i = 0; i < (size_t)total * H; i++) out[i] = 0x7FC0; /* NaN poison */
    int started = 0;
    for (int32_t r = 0; r < R; r++) {
        ctx[r] = (rank_ctx){groups[r], r, R, E, K, H, T, ntok[r], x + first[r] * H,
                            topk_idx + first[r] * K, topk_w + first[r] * K, w_q, w_s,
                            /*threads=*/1, out + first[r] * H, recv_count + (size_t)r * L, 0};
        if (pthread_create(&threads[r], NULL, rank_main, &ctx[r]) != 0) {
            fprintf(stderr, "moe_layer: pthread_create failed for rank %d\n", r);
            break; /* the started ranks time out waiting for it and report */
        }
        started++;
    }
    int all_ok = started == R;
    for (int32_t r = 0; r < started; r++) {
        pthread_join(threads[r], NULL);
        all_ok &= ctx[r].ok;
    }
    if (!all_ok) goto fail;

    /* Every selection arrived exactly once somewhere. */
    int64_t received = 0, selected = 0;
    for (int32_t i = 0; i < R * L; i++) received += recv_count[i];
    for (int64_t i = 0; i < total * K; i++) selected += topk_idx[i] >= 0;
    if (received != selected) {
        fprintf(stderr, "moe_layer: FAIL: %lld rows received, %lld selected\n",
                (long long)received, (long long)selected);
        goto fail;
    }

    /* float64 reference from the unquantized inputs:
     *   ref[t][n] = sum_k w[t][k] * sum_j W_e[n][j] * x[t][j],  e = topk_idx[t][k]. */
    ALLOC(ref, (size_t)total * H);
    for (int64_t t = 0; t < total; t++)
        for (int32_t k = 0; k < K; k++) {
            const int64_t e = topk_idx[t * K + k];
            const float *xt = x_f32 + t * H;
            for (int32_t n = 0; n < H && e >= 0; n++) {
                const float *wn = w + ((size_t)e * H + n) * H;
                double acc = 0.0;
                for (int32_t j = 0; j < H; j++) acc += (double)wn[j] * xt[j];
                ref[t * H + n] += (double)topk_w[t * K + k] * acc;
            }
        }

    /* Errors: calc_diff as DeepGEMM's tests, 1 - 2<o,r> / (|o|^2 + |r|^2)
     * (0 when equal; FP8 GEMMs pass below 1e-3), and the largest absolute
     * error relative to the largest |ref|. */
    ALLOC(out_f32, (size_t)total * H);
    CHECK(dinf_convert(out, DINF_DTYPE_BFLOAT16, out_f32, DINF_DTYPE_FLOAT32, total * H, NULL));
    double dot = 0.0, norms = 0.0, max_err = 0.0, max_ref = 0.0;
    int64_t nans = 0;
    for (size_t i = 0; i < (size_t)total * H; i++) {
        const double o = out_f32[i], r = ref[i];
        if (o != o) { /* NaN: not written, or a broken computation */
            nans++;
            continue;
        }
        dot += o * r;
        norms += o * o + r * r;
        const double err = o > r ? o - r : r - o, mag = r < 0 ? -r : r;
        if (err > max_err) max_err = err;
        if (mag > max_ref) max_ref = mag;
    }
    const double calc_diff = norms > 0.0 ? 1.0 - 2.0 * dot / norms : 0.0;
    const double max_rel = max_ref > 0.0 ? max_err / max_ref : 0.0;
    for (int32_t r = 0; r < R; r++) {
        printf("rank %d: %lld tokens, rows per local expert:", r, (long long)ntok[r]);
        for (int32_t l = 0; l < L; l++) printf(" %d", recv_count[(size_t)r * L + l]);
        printf("\n");
    }
    const int pass = nans == 0 && calc_diff <= 1e-3;
    printf("moe_layer: %s calc_diff=%.3e max_rel_err=%.3e nan=%lld (%lld expert rows, "
           "tolerance calc_diff <= 1e-3)\n", pass ? "OK" : "FAIL", calc_diff, max_rel,
           (long long)nans, (long long)received);
    rc = pass ? 0 : 1;
fail:
    for (int32_t r = 0; r < R; r++) dinf_ep_group_destroy(groups[r]);
    free(x_f32);
    free(x);
    free(topk_idx);
    free(topk_w);
    free(bias);
    free(w);
    free(w_q);
    free(w_s);
    free(tokens_per_rank);
    free(tokens_per_expert);
    free(out);
    free(recv_count);
    free(ref);
    free(out_f32);
    return rc;
}
