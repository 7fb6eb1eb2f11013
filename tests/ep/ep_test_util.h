/* Helpers of the EP tests: random routing, one thread per rank, status capture. */
#ifndef EP_TEST_UTIL_H
#define EP_TEST_UTIL_H

#include <deepinfra.h>

#include "core/numeric_hd.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t ep_rng(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline double ep_uniform(uint64_t *s) { return (double)(ep_rng(s) >> 11) * 0x1p-53; }
static inline int64_t ep_below(uint64_t *s, int64_t n) { return (int64_t)(ep_rng(s) % (uint64_t)n); }

/* Random bf16 values in about [-2, 2], never all zero. */
static inline void ep_fill_bf16(uint16_t *x, size_t n, uint64_t *s) {
    for (size_t i = 0; i < n; i++)
        x[i] = dinf__bf16_from_f32((float)(ep_uniform(s) * 4.0 - 2.0));
}

/*
 * Random top-k rows: distinct experts per token (partial Fisher-Yates over
 * num_experts), then each slot masked to -1 with probability 1/5 and a
 * token masked entirely with probability 1/20 (tokens that go nowhere).
 */
static inline void ep_fill_topk(int64_t *topk, int64_t num_tokens, int32_t num_topk,
                                int32_t num_experts, uint64_t *s) {
    int32_t *perm = malloc((size_t)num_experts * sizeof *perm);
    for (int64_t t = 0; t < num_tokens; t++) {
        for (int32_t e = 0; e < num_experts; e++)
            perm[e] = e;
        const int none = ep_below(s, 20) == 0;
        for (int32_t k = 0; k < num_topk; k++) {
            const int32_t j = k + (int32_t)ep_below(s, num_experts - k);
            const int32_t tmp = perm[k];
            perm[k] = perm[j];
            perm[j] = tmp;
            topk[t * num_topk + k] = none || ep_below(s, 5) == 0 ? -1 : perm[k];
        }
    }
    free(perm);
}

static inline void ep_fill_weights(float *w, size_t n, uint64_t *s) {
    for (size_t i = 0; i < n; i++)
        w[i] = (float)(0.05 + ep_uniform(s));
}

/* Run fn(rank, ctx) on num_ranks threads and join them. */
typedef void (*ep_rank_fn)(int32_t rank, void *ctx);
typedef struct ep_thread_arg {
    ep_rank_fn fn;
    void *ctx;
    int32_t rank;
} ep_thread_arg;
static inline void *ep_thread_main(void *p) {
    ep_thread_arg *a = p;
    a->fn(a->rank, a->ctx);
    return NULL;
}
static inline void ep_run_ranks(int32_t num_ranks, ep_rank_fn fn, void *ctx) {
    pthread_t tid[64];
    ep_thread_arg args[64];
    for (int32_t r = 0; r < num_ranks; r++) {
        args[r] = (ep_thread_arg){fn, ctx, r};
        pthread_create(&tid[r], NULL, ep_thread_main, &args[r]);
    }
    for (int32_t r = 0; r < num_ranks; r++)
        pthread_join(tid[r], NULL);
}

/* Per-rank status and message of the last call, captured on the rank's thread. */
typedef struct ep_result {
    dinf_status status;
    char message[1024];
} ep_result;
static inline void ep_capture(ep_result *r, dinf_status st) {
    r->status = st;
    snprintf(r->message, sizeof r->message, "%s", st == DINF_STATUS_OK ? "" : dinf_last_error());
}

#endif
