/*
 * MLA decode on the CPU (mla.h): the split-KV scheduler's invariants on
 * random batches, the log-sum-exp merge against the unsplit computation,
 * the FlashMLA reference sweep (trimmed to the CPU, see mla_sweep) against
 * an independent double-precision reference with the upstream tolerances,
 * and every rejected input.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <deepinfra.h>

#include "core/numeric_hd.h"
#include "mla/mla_hd.h"
#include "mla_sparse_problem.h" /* sp_check_close: the upstream tolerance check */

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DQK 576
#define DV 512
#define POISON 0x7FC1u /* a bf16 NaN pattern no computation produces */
#define BF16_NAN 0x7FC0u
#define UNUSED_PAGE 2147480000 /* what the upstream test puts in unused block_table entries */

/* ---------------------------------------------------------------- random -- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1p-53; }
static double rng_normal(uint64_t *s) {
    double u = rng_uniform(s), v = rng_uniform(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}
/* randn / 10 clamped to [-1, 1], as bf16 (the HEAD test's data). */
static uint16_t rng_value(uint64_t *s) {
    double x = rng_normal(s) / 10;
    x = x < -1 ? -1 : x > 1 ? 1 : x;
    return dinf__bf16_from_f32((float)x);
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* ------------------------------------------------------------- scheduler -- */

static int32_t nblk(int32_t s) { return (int32_t)cdiv(s, 64); }

/*
 * Every invariant of a plan: pieces walk the requests in order; each
 * request's pieces tile [0, nblk) with split indices 0, 1, ...; their number
 * is num_splits' difference; flags say whether the first/last request is
 * cut; no part exceeds the budget; empty parts only at the end.
 */
static void check_plan(const int32_t *seqlens, int64_t b, int32_t parts, const int32_t *meta,
                       const int32_t *splits, uint64_t seed) {
    const int fixed = DINF_MLA_FIXED_OVERHEAD_BLOCKS;
    int64_t total = 0;
    for (int64_t i = 0; i < b; i++)
        total += nblk(seqlens[i]) + fixed;
    const int64_t payload = cdiv(total, parts) + fixed;
    cr_assert_eq(splits[0], 0, "seed %llu: num_splits[0]=%d", (unsigned long long)seed, splits[0]);
    for (int64_t i = 0; i < b; i++)
        cr_assert_geq(splits[i + 1] - splits[i], 1, "seed %llu b=%lld parts=%d: request %lld has "
                      "%d pieces", (unsigned long long)seed, (long long)b, parts, (long long)i,
                      splits[i + 1] - splits[i]);
    cr_assert_leq(splits[b], b + parts, "seed %llu: %d splits > b + parts", (unsigned long long)seed,
                  splits[b]);
    int64_t req = 0, blk = 0, piece_idx = 0;
    int seen_empty = 0;
    int32_t last_busy = -1;
    for (int32_t p = 0; p < parts; p++)
        if (meta[p * 8] >= 0)
            last_busy = p;
    for (int32_t p = 0; p < parts; p++) {
        const int32_t *m = meta + p * 8;
        if (m[0] < 0) {
            cr_assert(m[0] == -1 && m[2] == -1 && !m[1] && !m[3] && !m[4] && !m[5] && !m[6] && !m[7],
                      "seed %llu: empty part %d is not {-1,0,-1,0,...}", (unsigned long long)seed, p);
            seen_empty = 1;
            continue;
        }
        cr_assert(!seen_empty, "seed %llu: part %d has work after an empty part",
                  (unsigned long long)seed, p);
        cr_assert_eq(m[7], 0);
        cr_assert(m[0] == req && m[1] == blk && m[4] == piece_idx,
                  "seed %llu b=%lld parts=%d: part %d begins at (%d, %d, split %d), expected "
                  "(%lld, %lld, split %lld)", (unsigned long long)seed, (long long)b, parts, p,
                  m[0], m[1], m[4], (long long)req, (long long)blk, (long long)piece_idx);
        cr_assert(m[2] >= m[0] && m[2] < b, "seed %llu: part %d end_req=%d",
                  (unsigned long long)seed, p, m[2]);
        int64_t cost = 0;
        for (int32_t r = m[0]; r <= m[2]; r++) {
            const int32_t lo = r == m[0] ? m[1] : 0;
            const int32_t hi = r == m[2] ? m[3] : nblk(seqlens[r]);
            cr_assert(lo <= hi && hi <= nblk(seqlens[r]) && (hi > lo || nblk(seqlens[r]) == 0),
                      "seed %llu: part %d request %d range [%d, %d) of %d blocks",
                      (unsigned long long)seed, p, r, lo, hi, nblk(seqlens[r]));
            cost += hi - lo + fixed;
            const int cut = splits[r + 1] - splits[r] > 1;
            if (r == m[0])
                cr_assert_eq(m[5], cut, "seed %llu: part %d first flag", (unsigned long long)seed, p);
            if (r == m[2])
                cr_assert_eq(m[6], cut, "seed %llu: part %d last flag", (unsigned long long)seed, p);
            piece_idx++;
            blk = hi;
            if (hi == nblk(seqlens[r])) {
                cr_assert_eq(piece_idx, splits[r + 1] - splits[r],
                             "seed %llu: request %d has %lld pieces, num_splits says %d",
                             (unsigned long long)seed, r, (long long)piece_idx,
                             splits[r + 1] - splits[r]);
                req = r + 1;
                blk = 0;
                piece_idx = 0;
            } else {
                cr_assert_eq(r, m[2], "seed %llu: part %d leaves request %d unfinished mid-part",
                             (unsigned long long)seed, p, r);
            }
        }
        cr_assert_leq(cost, payload, "seed %llu: part %d costs %lld > payload %lld",
                      (unsigned long long)seed, p, (long long)cost, (long long)payload);
        /* balance: every part but the last busy one is filled to within one
         * split's overhead of the budget */
        if (p != last_busy)
            cr_assert_geq(cost, payload - fixed, "seed %llu: part %d costs %lld < payload %lld - %d",
                          (unsigned long long)seed, p, (long long)cost, (long long)payload, fixed);
    }
    cr_assert_eq(req, b, "seed %llu b=%lld parts=%d: only %lld requests covered",
                 (unsigned long long)seed, (long long)b, parts, (long long)req);
}

static void plan(const int32_t *seqlens, int64_t b, int32_t parts, int32_t **meta, int32_t **splits) {
    *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
    *splits = malloc(sizeof(int32_t) * (size_t)(b + 1));
    cr_assert_eq(dinf_mla_get_metadata(seqlens, b, parts, *meta, *splits, NULL), DINF_STATUS_OK,
                 "%s", dinf_last_error());
}

Test(mla_sched, worked_example_of_the_reference) {
    const int32_t seqlens[4] = {640, 192, 448, 1280}; /* 10, 3, 7, 20 blocks */
    int32_t *meta, *splits;
    plan(seqlens, 4, 4, &meta, &splits);
    const int32_t want_splits[5] = {0, 1, 2, 3, 5};
    const int32_t want[4][8] = {{0, 0, 0, 10, 0, 0, 0, 0},
                                {1, 0, 2, 7, 0, 0, 0, 0},
                                {3, 0, 3, 15, 0, 1, 1, 0},
                                {3, 15, 3, 20, 1, 1, 1, 0}};
    cr_assert_arr_eq(splits, want_splits, sizeof want_splits);
    cr_assert_arr_eq(meta, want, sizeof want);
    check_plan(seqlens, 4, 4, meta, splits, 0);
    free(meta);
    free(splits);
}

Test(mla_sched, invariants_on_random_batches) {
    for (uint64_t seed = 1; seed <= 3000; seed++) {
        uint64_t s = seed;
        const int64_t b = (int64_t)(rng_next(&s) % 300);
        const int32_t parts = 1 + (int32_t)(rng_next(&s) % (seed % 3 ? 140 : 600));
        const int kind = (int)(rng_next(&s) % 4);
        int32_t *seqlens = malloc(sizeof(int32_t) * (size_t)(b + 1));
        for (int64_t i = 0; i < b; i++) {
            const uint64_t r = rng_next(&s);
            seqlens[i] = kind == 0   ? (int32_t)(r % 64)                    /* tiny */
                         : kind == 1 ? (r % 2 ? 0 : (int32_t)(r % 40000))  /* half empty */
                         : kind == 2 ? 4096                                 /* uniform */
                                     : (int32_t)(r % 20000);
        }
        int32_t *meta, *splits;
        plan(seqlens, b, parts, &meta, &splits);
        check_plan(seqlens, b, parts, meta, splits, seed);
        free(meta);
        free(splits);
        free(seqlens);
    }
}

Test(mla_sched, balanced_parts_on_uniform_batches) {
    /* 128 requests of 4096 keys on 132 parts (payload 67 + 5 = 72): the
     * upstream greedy fills each part to the budget (check_plan), so the
     * last few parts stay empty; none costs more than the payload. */
    int32_t seqlens[128];
    for (int i = 0; i < 128; i++)
        seqlens[i] = 4096;
    int32_t *meta, *splits;
    plan(seqlens, 128, 132, &meta, &splits);
    check_plan(seqlens, 128, 132, meta, splits, 0);
    int busy = 0;
    for (int p = 0; p < 132; p++)
        busy += meta[p * 8] >= 0;
    cr_assert(busy >= 122 && busy <= 132, "%d busy parts", busy);
    free(meta);
    free(splits);
}

Test(mla_sched, num_sm_parts_formula) {
    int32_t parts;
    cr_assert_eq(dinf_mla_num_sm_parts(128, 1, 132, &parts), DINF_STATUS_OK);
    cr_assert_eq(parts, 66);
    cr_assert_eq(dinf_mla_num_sm_parts(64, 1, 132, &parts), DINF_STATUS_OK);
    cr_assert_eq(parts, 132);
    cr_assert_eq(dinf_mla_num_sm_parts(1, 2, 132, &parts), DINF_STATUS_OK);
    cr_assert_eq(parts, 66);
    cr_assert_eq(dinf_mla_num_sm_parts(8192, 8, 132, &parts), DINF_STATUS_OK);
    cr_assert_eq(parts, 1);
}

/* --------------------------------------------------------------- problem -- */

typedef struct problem {
    int64_t b;
    int32_t s_q, h_q, h_kv, page, causal;
    int64_t num_blocks, max_blocks, token_stride, block_stride;
    float scale;
    uint16_t *q, *kc, *out;
    int32_t *bt, *seqlens;
    float *lse;
} problem;

/*
 * Random problem: lengths s_k (or, varlen, max(N(s_k, s_k/2), s_q) with
 * some zero-length requests when zeros), pages shuffled, unused rows of used
 * pages and whole unused pages NaN, unused table entries 2147480000, padded
 * rows when pad_stride.
 */
static void problem_make(problem *p, int64_t b, int32_t s_q, int32_t h_q, int32_t h_kv, int32_t s_k,
                         int varlen, int zeros, int32_t causal, int32_t page, int pad_stride,
                         uint64_t seed) {
    uint64_t s = seed;
    *p = (problem){.b = b, .s_q = s_q, .h_q = h_q, .h_kv = h_kv, .page = page, .causal = causal};
    p->scale = (float)(1.0 / sqrt(576.0));
    p->seqlens = malloc(sizeof(int32_t) * (size_t)(b + 1));
    int64_t max_len = 0;
    for (int64_t i = 0; i < b; i++) {
        int64_t len = s_k;
        if (varlen) {
            len = (int64_t)(s_k + rng_normal(&s) * s_k / 2);
            len = len < s_q ? s_q : len;
        }
        if (zeros && rng_next(&s) % 3 == 0)
            len = 0;
        p->seqlens[i] = (int32_t)len;
        max_len = len > max_len ? len : max_len;
    }
    p->max_blocks = cdiv(max_len, page) + 1; /* one spare entry per row */
    p->num_blocks = b * p->max_blocks + 2;   /* some pages never used */
    p->token_stride = (int64_t)h_kv * DQK + (pad_stride ? 8 : 0);
    p->block_stride = page * p->token_stride + (pad_stride ? 16 : 0);
    const int64_t kc_elems = p->num_blocks * p->block_stride;
    p->kc = malloc(sizeof(uint16_t) * (size_t)kc_elems);
    for (int64_t i = 0; i < kc_elems; i++)
        p->kc[i] = BF16_NAN;
    /* a random permutation of the pages */
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)p->num_blocks);
    for (int64_t i = 0; i < p->num_blocks; i++)
        perm[i] = (int32_t)i;
    for (int64_t i = p->num_blocks - 1; i > 0; i--) {
        const int64_t j = (int64_t)(rng_next(&s) % (uint64_t)(i + 1));
        const int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    p->bt = malloc(sizeof(int32_t) * (size_t)(b * p->max_blocks + 1));
    int64_t next = 0;
    for (int64_t i = 0; i < b; i++)
        for (int64_t j = 0; j < p->max_blocks; j++) {
            const int used = j * page < p->seqlens[i];
            p->bt[i * p->max_blocks + j] = used ? perm[next++] : UNUSED_PAGE;
        }
    free(perm);
    for (int64_t i = 0; i < b; i++)
        for (int32_t key = 0; key < p->seqlens[i]; key++) {
            uint16_t *row = p->kc + (int64_t)p->bt[i * p->max_blocks + key / page] * p->block_stride +
                            (int64_t)(key % page) * p->token_stride;
            for (int64_t d = 0; d < (int64_t)h_kv * DQK; d++)
                row[d] = rng_value(&s);
        }
    const int64_t q_elems = b * s_q * h_q * DQK;
    p->q = malloc(sizeof(uint16_t) * (size_t)(q_elems + 8));
    for (int64_t i = 0; i < q_elems; i++)
        p->q[i] = rng_value(&s);
    p->out = malloc(sizeof(uint16_t) * (size_t)(b * s_q * h_q * DV + 8));
    p->lse = malloc(sizeof(float) * (size_t)(b * s_q * h_q + 1));
}

static void problem_poison(problem *p) {
    for (int64_t i = 0; i < p->b * p->s_q * p->h_q * DV; i++)
        p->out[i] = POISON;
    for (int64_t i = 0; i < p->b * p->s_q * p->h_q; i++)
        p->lse[i] = NAN;
}

static void problem_free(problem *p) {
    free(p->q);
    free(p->kc);
    free(p->out);
    free(p->bt);
    free(p->seqlens);
    free(p->lse);
}

/* Plan for parts SM parts, workspace, decode. */
static dinf_status problem_run(problem *p, int32_t parts, int32_t threads) {
    int32_t *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
    int32_t *splits = malloc(sizeof(int32_t) * (size_t)(p->b + 1));
    dinf_status st = dinf_mla_get_metadata(p->seqlens, p->b, parts, meta, splits, NULL);
    cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
    size_t ws_bytes;
    dinf_exec exec = DINF_EXEC_CPU_INIT;
    exec.num_threads = threads;
    cr_assert_eq(dinf_mla_workspace_size(p->b, p->s_q, p->h_q, parts, &ws_bytes, &exec),
                 DINF_STATUS_OK);
    void *ws = aligned_alloc(64, ws_bytes ? (ws_bytes + 63) / 64 * 64 : 64);
    st = dinf_mla_decode_with_kvcache(p->q, p->b, p->s_q, p->h_q, DQK, p->kc, p->num_blocks, p->page,
                                      p->h_kv, p->block_stride, p->token_stride, p->bt, p->max_blocks,
                                      p->seqlens, DV, meta, parts, splits, p->scale, p->causal, ws,
                                      ws_bytes, p->out, p->lse, &exec);
    free(ws);
    free(meta);
    free(splits);
    return st;
}

static int32_t default_parts(const problem *p) {
    int32_t parts;
    cr_assert_eq(dinf_mla_num_sm_parts(p->s_q * p->h_q / p->h_kv, p->h_kv, 132, &parts),
                 DINF_STATUS_OK);
    return parts;
}

/* -------------------------------------------------------------- reference -- */

/* Independent double-precision reference: out rounded to bf16 as upstream does. */
static void reference(const problem *p, double *ref_out, double *ref_lse) {
    const int32_t hpk = p->h_q / p->h_kv;
    double *sc = malloc(sizeof(double) * (size_t)(p->seqlens[0] + 1));
    int32_t cap = p->seqlens[0] + 1;
    for (int64_t b = 0; b < p->b; b++) {
        const int32_t s_k = p->seqlens[b];
        if (s_k + 1 > cap) {
            cap = s_k + 1;
            sc = realloc(sc, sizeof(double) * (size_t)cap);
        }
        for (int32_t t = 0; t < p->s_q; t++)
            for (int32_t h = 0; h < p->h_q; h++) {
                const int32_t hk = h / hpk;
                int32_t n = (p->causal && p->s_q > 1) ? s_k - (p->s_q - 1 - t) : s_k;
                n = n < 0 ? 0 : n;
                const uint16_t *qv = p->q + ((b * p->s_q + t) * p->h_q + h) * DQK;
                double *o = ref_out + ((b * p->s_q + t) * p->h_q + h) * DV;
                double *l = ref_lse + (b * p->h_q + h) * p->s_q + t;
                for (int d = 0; d < DV; d++)
                    o[d] = 0;
                if (n == 0) {
                    *l = INFINITY;
                    continue;
                }
                double mx = -INFINITY;
                for (int32_t j = 0; j < n; j++) {
                    const uint16_t *kr = p->kc + (int64_t)p->bt[b * p->max_blocks + j / p->page] * p->block_stride +
                                         (int64_t)(j % p->page) * p->token_stride + (int64_t)hk * DQK;
                    double dot = 0;
                    for (int d = 0; d < DQK; d++)
                        dot += (double)dinf__f32_from_bf16(qv[d]) * dinf__f32_from_bf16(kr[d]);
                    sc[j] = dot * p->scale;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                double sum = 0;
                for (int32_t j = 0; j < n; j++)
                    sum += exp(sc[j] - mx);
                *l = mx + log(sum);
                for (int32_t j = 0; j < n; j++) {
                    const uint16_t *kr = p->kc + (int64_t)p->bt[b * p->max_blocks + j / p->page] * p->block_stride +
                                         (int64_t)(j % p->page) * p->token_stride + (int64_t)hk * DQK;
                    const double w = exp(sc[j] - *l);
                    for (int d = 0; d < DV; d++)
                        o[d] += w * dinf__f32_from_bf16(kr[d]);
                }
                for (int d = 0; d < DV; d++)
                    o[d] = dinf__f32_from_bf16(dinf__bf16_from_f32((float)o[d]));
            }
    }
    free(sc);
}

static void check_against_reference(const problem *p, const char *params) {
    const int64_t rows = p->b * p->s_q * p->h_q;
    double *ref_out = malloc(sizeof(double) * (size_t)(rows * DV + 1));
    double *ref_lse = malloc(sizeof(double) * (size_t)(rows + 1));
    reference(p, ref_out, ref_lse);
    sp_check_close("out", params, ref_out, rows * DV, p->out, NULL, 8e-4, 2.01 / 128, 5e-6);
    sp_check_close("lse", params, ref_lse, rows, NULL, p->lse, 1e-6, 8.01 / 65536, 5e-6);
    free(ref_out);
    free(ref_lse);
}

static void sweep_point(int64_t b, int32_t s_q, int32_t s_k, int32_t h_q, int32_t h_kv, int varlen,
                        int32_t causal, int32_t page, uint64_t seed) {
    char params[200];
    snprintf(params, sizeof params,
             "b=%lld s_q=%d s_k=%d h_q=%d h_kv=%d varlen=%d causal=%d page=%d seed=%llu",
             (long long)b, s_q, s_k, h_q, h_kv, varlen, causal, page, (unsigned long long)seed);
    problem p;
    problem_make(&p, b, s_q, h_q, h_kv, s_k, varlen, varlen, causal, page, seed % 2, seed);
    problem_poison(&p);
    cr_assert_eq(problem_run(&p, default_parts(&p), 0), DINF_STATUS_OK, "[%s] %s", params,
                 dinf_last_error());
    check_against_reference(&p, params);
    problem_free(&p);
}

/*
 * The reference sweep, trimmed to the CPU: b {1, 2, 6} x s_q {1, 2} x
 * s_k {20, 140, 300} x h_q {1, 3, 16, 64, 128} x h_kv {1, 2} (h_q % h_kv == 0)
 * x varlen {no, yes (with zero-length requests)} x causal {no, yes (s_q = 2
 * only: it is a no-op for s_q = 1)}; page 64, shuffled pages, NaN in unused
 * rows. Points with b * s_q * h_q * s_k > 20000 run only varlen, h_kv = 1,
 * causal when s_q = 2 (and for s_q = 1 only s_k 20 and 300), instead of in
 * every combination.
 * Left to the GPU check: b = 64, s_q = 4, s_k = 4096.
 */
static void sweep(int64_t b) {
    const int32_t sks[] = {20, 140, 300}, hqs[] = {1, 3, 16, 64, 128};
    uint64_t seed = (uint64_t)b * 1000;
    for (int32_t s_q = 1; s_q <= 2; s_q++)
        for (int ki = 0; ki < 3; ki++)
            for (int hi = 0; hi < 5; hi++)
                for (int32_t h_kv = 1; h_kv <= 2; h_kv++)
                    for (int varlen = 0; varlen <= 1; varlen++)
                        for (int32_t causal = 0; causal <= (s_q > 1); causal++) {
                            const int32_t s_k = sks[ki], h_q = hqs[hi];
                            if (h_q % h_kv)
                                continue;
                            const int big = b * s_q * h_q * s_k > 20000;
                            if (big && !(varlen && causal == (s_q > 1) && h_kv == 1 &&
                                         (s_q == 2 || s_k != 140)))
                                continue;
                            sweep_point(b, s_q, s_k, h_q, h_kv, varlen, causal, 64, ++seed);
                        }
}

Test(mla_sweep, batch_1) { sweep(1); }
Test(mla_sweep, batch_2) { sweep(2); }
Test(mla_sweep, batch_6) { sweep(6); }

Test(mla_sweep, page_sizes_16_and_32) {
    sweep_point(3, 2, 140, 16, 1, 1, 1, 16, 11);
    sweep_point(3, 1, 300, 3, 1, 1, 0, 32, 12);
    sweep_point(2, 2, 100, 6, 2, 0, 1, 16, 13);
}

Test(mla_sweep, half_the_requests_empty) {
    /* The upstream corner case, scaled down: b=32, s_q=2, varlen, about a
     * third of the requests with seqlen_k = 0. */
    sweep_point(32, 2, 200, 16, 1, 1, 1, 64, 21);
}

Test(mla_sweep, causal_rows_without_keys) {
    /* s_q > s_k: the first query positions see no key (out 0, lse +inf). */
    problem p;
    problem_make(&p, 2, 4, 3, 1, 2, 0, 0, 1, 64, 0, 31);
    problem_poison(&p);
    cr_assert_eq(problem_run(&p, 5, 2), DINF_STATUS_OK, "%s", dinf_last_error());
    for (int h = 0; h < 3; h++)
        for (int t = 0; t < 2; t++)
            cr_assert(isinf(p.lse[h * 4 + t]) && p.lse[h * 4 + t] > 0, "h=%d t=%d lse=%g", h, t,
                      p.lse[h * 4 + t]);
    check_against_reference(&p, "s_q=4 s_k=2 causal");
    problem_free(&p);
}

/* ------------------------------------------------------------------ merge -- */

Test(mla_merge, split_equals_unsplit) {
    /* One part (nothing is split) against many parts (most requests cut into
     * several pieces): the same values within the tolerances. */
    const int32_t parts_list[] = {7, 64, 132, 500};
    for (int v = 0; v < 4; v++) {
        problem a, b;
        problem_make(&a, 5, 2, 16, 1, 700, 1, v % 2, 1, 64, 0, 40 + v);
        problem_make(&b, 5, 2, 16, 1, 700, 1, v % 2, 1, 64, 0, 40 + v);
        problem_poison(&a);
        problem_poison(&b);
        cr_assert_eq(problem_run(&a, 1, 0), DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_eq(problem_run(&b, parts_list[v], 0), DINF_STATUS_OK, "%s", dinf_last_error());
        const int64_t rows = a.b * a.s_q * a.h_q;
        double *ro = malloc(sizeof(double) * (size_t)(rows * DV));
        double *rl = malloc(sizeof(double) * (size_t)rows);
        for (int64_t i = 0; i < rows * DV; i++)
            ro[i] = dinf__f32_from_bf16(a.out[i]);
        for (int64_t i = 0; i < rows; i++)
            rl[i] = a.lse[i];
        char params[64];
        snprintf(params, sizeof params, "parts=%d vs 1", parts_list[v]);
        sp_check_close("out", params, ro, rows * DV, b.out, NULL, 8e-4, 2.01 / 128, 5e-6);
        sp_check_close("lse", params, rl, rows, NULL, b.lse, 1e-6, 8.01 / 65536, 5e-6);
        check_against_reference(&b, params);
        free(ro);
        free(rl);
        problem_free(&a);
        problem_free(&b);
    }
}

Test(mla_merge, bit_identical_for_any_thread_count) {
    problem a;
    problem_make(&a, 4, 2, 64, 1, 500, 1, 1, 1, 64, 1, 50);
    const int64_t rows = a.b * a.s_q * a.h_q;
    uint16_t *out1 = malloc(sizeof(uint16_t) * (size_t)(rows * DV));
    float *lse1 = malloc(sizeof(float) * (size_t)rows);
    cr_assert_eq(problem_run(&a, 40, 1), DINF_STATUS_OK, "%s", dinf_last_error());
    memcpy(out1, a.out, sizeof(uint16_t) * (size_t)(rows * DV));
    memcpy(lse1, a.lse, sizeof(float) * (size_t)rows);
    for (int32_t threads = 2; threads <= 5; threads += 3) {
        problem_poison(&a);
        cr_assert_eq(problem_run(&a, 40, threads), DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_arr_eq(a.out, out1, sizeof(uint16_t) * (size_t)(rows * DV), "threads=%d", threads);
        cr_assert_arr_eq(a.lse, lse1, sizeof(float) * (size_t)rows, "threads=%d", threads);
    }
    free(out1);
    free(lse1);
    problem_free(&a);
}

/* The CPU kernels' vector sets (DINF_CPU_ISA; a set above this CPU's gives
 * its widest): the same bits in every one, causal rows and h_kv 2 included. */
Test(mla_merge, bit_identical_for_every_cpu_isa) {
    problem a;
    problem_make(&a, 3, 4, 6, 2, 300, 1, 1, 1, 64, 1, 51);
    const int64_t rows = a.b * a.s_q * a.h_q;
    uint16_t *out1 = malloc(sizeof(uint16_t) * (size_t)(rows * DV));
    float *lse1 = malloc(sizeof(float) * (size_t)rows);
    const char *const sets[] = {"base", "avx2", "avx512"};
    for (int i = 0; i < 3; i++) {
        setenv("DINF_CPU_ISA", sets[i], 1);
        problem_poison(&a);
        cr_assert_eq(problem_run(&a, 20, 2), DINF_STATUS_OK, "%s", dinf_last_error());
        if (i == 0) {
            check_against_reference(&a, "DINF_CPU_ISA=base");
            memcpy(out1, a.out, sizeof(uint16_t) * (size_t)(rows * DV));
            memcpy(lse1, a.lse, sizeof(float) * (size_t)rows);
            continue;
        }
        cr_assert_arr_eq(a.out, out1, sizeof(uint16_t) * (size_t)(rows * DV), "DINF_CPU_ISA=%s", sets[i]);
        cr_assert_arr_eq(a.lse, lse1, sizeof(float) * (size_t)rows, "DINF_CPU_ISA=%s", sets[i]);
    }
    unsetenv("DINF_CPU_ISA");
    free(out1);
    free(lse1);
    problem_free(&a);
}

Test(mla_merge, empty_batch) {
    problem p;
    problem_make(&p, 0, 1, 16, 1, 10, 0, 0, 0, 64, 0, 60);
    cr_assert_eq(problem_run(&p, 3, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    problem_free(&p);
}

/* ----------------------------------------------------------------- errors -- */

typedef struct call {
    const uint16_t *q;
    int64_t b;
    int32_t s_q, h_q, head_dim;
    const uint16_t *kc;
    int64_t num_blocks;
    int32_t page, h_kv;
    int64_t block_stride, token_stride;
    const int32_t *bt;
    int64_t max_blocks;
    const int32_t *seqlens;
    int32_t head_dim_v;
    const int32_t *meta;
    int32_t parts;
    const int32_t *splits;
    float scale;
    int32_t causal;
    void *ws;
    size_t ws_bytes;
    uint16_t *out;
    float *lse;
    const dinf_exec *exec;
} call;

static dinf_status run_call(const call *c) {
    return dinf_mla_decode_with_kvcache(c->q, c->b, c->s_q, c->h_q, c->head_dim, c->kc, c->num_blocks,
                                        c->page, c->h_kv, c->block_stride, c->token_stride, c->bt,
                                        c->max_blocks, c->seqlens, c->head_dim_v, c->meta, c->parts,
                                        c->splits, c->scale, c->causal, c->ws, c->ws_bytes, c->out,
                                        c->lse, c->exec);
}

#define EXPECT_FAIL(c, status, text)                                                               \
    do {                                                                                           \
        const dinf_status st_ = run_call(&(c));                                                    \
        cr_assert_eq(st_, (status), "expected status %d for \"%s\", got %d (%s)", (status), (text), \
                     st_, dinf_last_error());                                                      \
        cr_assert(strstr(dinf_last_error(), (text)) != NULL, "message \"%s\" lacks \"%s\"",       \
                  dinf_last_error(), (text));                                                      \
        cr_assert(strncmp(dinf_last_error(), "dinf_mla_decode_with_kvcache: ", 30) == 0, "%s",   \
                  dinf_last_error());                                                              \
    } while (0)

Test(mla_errors, every_rejected_input) {
    problem p;
    problem_make(&p, 3, 2, 16, 1, 300, 0, 0, 1, 64, 0, 70);
    const int32_t parts = 8;
    int32_t *meta = calloc(8 * (parts + 1), sizeof(int32_t)), splits[4]; /* room for 9 parts */
    cr_assert_eq(dinf_mla_get_metadata(p.seqlens, 3, parts, meta, splits, NULL), DINF_STATUS_OK);
    size_t ws_bytes;
    cr_assert_eq(dinf_mla_workspace_size(3, 2, 16, parts, &ws_bytes, NULL), DINF_STATUS_OK);
    size_t ws9_bytes; /* room for the 9-part plan below */
    cr_assert_eq(dinf_mla_workspace_size(3, 2, 16, parts + 1, &ws9_bytes, NULL), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws9_bytes + 63) / 64 * 64);
    const call good = {p.q, 3, 2, 16, 576, p.kc, p.num_blocks, 64, 1, p.block_stride, p.token_stride,
                       p.bt, p.max_blocks, p.seqlens, 512, meta, parts, splits, p.scale, 1, ws,
                       ws_bytes, p.out, p.lse, NULL};
    cr_assert_eq(run_call(&good), DINF_STATUS_OK, "%s", dinf_last_error());
    call c;

    c = good; c.head_dim = 448;
    EXPECT_FAIL(c, DINF_STATUS_UNSUPPORTED, "head_dim=448 is not supported");
    c = good; c.head_dim = 512; /* the MODEL1 cache: sparse FP8 only */
    EXPECT_FAIL(c, DINF_STATUS_UNSUPPORTED, "head_dim=512 (the MODEL1 cache) is supported by the sparse");
    c = good; c.head_dim_v = 576;
    EXPECT_FAIL(c, DINF_STATUS_UNSUPPORTED, "head_dim_v=576 is not supported");
    c = good; c.page = 128;
    EXPECT_FAIL(c, DINF_STATUS_UNSUPPORTED, "page_block_size=128 is not supported");
    c = good; c.b = -1;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "batch=-1 must be in [0, 1048576]");
    c = good; c.parts = 0;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "num_sm_parts=0 must be in [1, 65536]");
    c = good; c.s_q = 0;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "seq_len_q=0 must be >= 1");
    c = good; c.h_kv = 3;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "num_heads_q=16 is not a multiple of num_heads_kv=3");
    c = good; c.s_q = 2; c.h_q = 8192;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "= 16384 exceeds DINF_MLA_MAX_Q_ROWS=8192");
    c = good; c.num_blocks = 0;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "num_blocks=0 must be >= 1");
    c = good; c.token_stride = 500;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "kv_token_stride=500 elements must be a multiple of 8 and >= num_heads_kv * 576 = 576");
    c = good; c.token_stride = 580;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "kv_token_stride=580 elements must be a multiple of 8");
    c = good; c.block_stride = 64 * 576 - 8;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "kv_block_stride=36856 elements must be a multiple of 8 and >= page_block_size * kv_token_stride = 64 * 576");
    c = good; c.max_blocks = -1;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "max_blocks_per_seq=-1 must be in");
    c = good; c.scale = INFINITY;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "softmax_scale=inf must be finite");
    c = good; c.scale = 3e38f; /* finite, but scale * log2(e) would overflow */
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "|softmax_scale| <= 1e+30");
    c = good; c.causal = 2;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "causal=2 must be 0 or 1");
    c = good; c.q = NULL;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "must not be NULL");
    c = good; c.kc = NULL;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "k_cache is NULL");
    c = good; c.meta = NULL;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "tile_scheduler_metadata is NULL");
    c = good; c.bt = NULL;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "block_table is NULL");
    c = good; c.seqlens = NULL;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "cache_seqlens is NULL");
    c = good; c.q = p.q + 1;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "is not 16-byte aligned");
    c = good; c.kc = p.kc + 4;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "k_cache=");
    c = good; c.out = p.out + 1;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "out=");
    c = good; c.ws = (char *)ws + 8;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "workspace=");
    c = good; c.lse = (float *)((char *)p.lse + 2);
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "is not 4-byte aligned");

    /* Lengths and the block table. */
    int32_t bad_len[3] = {p.seqlens[0], (int32_t)(p.max_blocks * 64 + 1), p.seqlens[2]};
    c = good; c.seqlens = bad_len;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "cache_seqlens[1]=385 exceeds the block table's capacity max_blocks_per_seq * page_block_size = 6 * 64");
    int32_t neg_len[3] = {p.seqlens[0], -5, p.seqlens[2]};
    c = good; c.seqlens = neg_len;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "cache_seqlens[1]=-5 is negative");
    const int32_t saved = p.bt[1 * p.max_blocks + 4];
    p.bt[1 * p.max_blocks + 4] = -1;
    EXPECT_FAIL(good, DINF_STATUS_INVALID_ARGUMENT, "block_table[1][4]=-1 is outside [0, num_blocks=20) (request 1 has 300 keys)");
    p.bt[1 * p.max_blocks + 4] = (int32_t)p.num_blocks;
    EXPECT_FAIL(good, DINF_STATUS_INVALID_ARGUMENT, "block_table[1][4]=20 is outside");
    p.bt[1 * p.max_blocks + 4] = saved;
    /* the spare entry past the sequence (2147480000) is never read */
    cr_assert_eq(p.bt[1 * p.max_blocks + 5], UNUSED_PAGE);
    cr_assert_eq(run_call(&good), DINF_STATUS_OK, "%s", dinf_last_error());

    /* The plan. */
    int32_t other_len[3] = {p.seqlens[0], 17, p.seqlens[2]};
    c = good; c.seqlens = other_len;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "does not match the plan for these cache_seqlens and num_sm_parts=8");
    c = good; c.parts = 9; c.ws_bytes = ws9_bytes;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "does not match the plan");
    int32_t bad_splits[4] = {splits[0], splits[1], splits[2], splits[3] + 1};
    c = good; c.splits = bad_splits;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "num_splits[3]=");
    c = good; c.ws_bytes = ws_bytes - 1;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "this call needs the");
    c = good; c.ws = NULL; c.ws_bytes = 0;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "workspace_bytes=0: this call needs the");
    /* the CPU scratch is sized for the exec's threads: one thread needs less */
    dinf_exec one = DINF_EXEC_CPU_INIT;
    one.num_threads = 1;
    size_t ws_one;
    cr_assert_eq(dinf_mla_workspace_size(3, 2, 16, parts, &ws_one, &one), DINF_STATUS_OK);
    dinf_exec many = DINF_EXEC_CPU_INIT;
    many.num_threads = 4;
    size_t ws_many;
    cr_assert_eq(dinf_mla_workspace_size(3, 2, 16, parts, &ws_many, &many), DINF_STATUS_OK);
    cr_assert_gt(ws_many, ws_one);
    c = good; c.ws_bytes = ws_one; c.exec = &many;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "for 4 CPU threads");
    c = good; c.ws_bytes = ws_one; c.exec = &one;
    cr_assert_eq(run_call(&c), DINF_STATUS_OK, "%s", dinf_last_error());

    /* Overlap. */
    c = good; c.out = (uint16_t *)p.q;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "out and q overlap");
    c = good; c.lse = (float *)ws;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "lse and workspace overlap");
    c = good; c.ws = p.kc; c.ws_bytes = 64;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "workspace and k_cache overlap");

    /* The execution place. */
    dinf_exec bad = DINF_EXEC_CPU_INIT;
    bad.num_threads = -1;
    c = good; c.exec = &bad;
    EXPECT_FAIL(c, DINF_STATUS_INVALID_ARGUMENT, "exec->num_threads=-1");
    /* Without a usable device the CUDA place is refused (with one, host
     * pointers must not be handed to it: tests/gpu covers that place). */
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    if (dinf_device_query(0, &info) != DINF_STATUS_OK || !info.usable) {
        const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
        c = good; c.exec = &cuda;
        const dinf_status st = run_call(&c);
        cr_assert_eq(st, DINF_STATUS_UNSUPPORTED, "%s", dinf_last_error());
        cr_assert(strstr(dinf_last_error(), "no usable CUDA device 0") ||
                      strstr(dinf_last_error(), "built without CUDA"),
                  "%s", dinf_last_error());
    }

    free(ws);
    free(meta);
    problem_free(&p);
}

/*
 * The GPU place chooses the kernel rung before touching the device
 * (DINF_MLA_KERNEL): an unknown value, and "fast" or "seesaw" on pages those
 * rungs cannot take, fail with their reason, with or without a device (the host
 * pointers below are never dereferenced on that path).
 */
Test(mla_errors, kernel_rung_choice_on_the_gpu_place) {
#if DINF_WITH_CUDA
    for (int32_t page = 32; page <= 64; page *= 2) {
        problem p;
        problem_make(&p, 3, 2, 16, 1, 300, 0, 0, 1, page, 0, 71);
        int32_t meta[8 * 4], splits[4];
        cr_assert_eq(dinf_mla_get_metadata(p.seqlens, 3, 4, meta, splits, NULL), DINF_STATUS_OK);
        const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
        size_t ws_bytes;
        cr_assert_eq(dinf_mla_workspace_size(3, 2, 16, 4, &ws_bytes, &cuda), DINF_STATUS_OK);
        void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
        const call good = {p.q, 3, 2, 16, 576, p.kc, p.num_blocks, page, 1, p.block_stride, p.token_stride,
                           p.bt, p.max_blocks, p.seqlens, 512, meta, 4, splits, p.scale, 1, ws,
                           ws_bytes, p.out, p.lse, &cuda};
        setenv("DINF_MLA_KERNEL", "bogus", 1);
        EXPECT_FAIL(good, DINF_STATUS_INVALID_ARGUMENT,
                    "DINF_MLA_KERNEL='bogus' is not one of simple, fast, seesaw, auto");
        setenv("DINF_MLA_KERNEL", "seesaw2", 1);
        EXPECT_FAIL(good, DINF_STATUS_INVALID_ARGUMENT,
                    "DINF_MLA_KERNEL='seesaw2' is not one of simple, fast, seesaw, auto");
        if (page != 64) {
            setenv("DINF_MLA_KERNEL", "fast", 1);
            EXPECT_FAIL(good, DINF_STATUS_UNSUPPORTED,
                        "DINF_MLA_KERNEL=fast, but the fast rung cannot take this decode: page_block_size=32 "
                        "(the fast rung takes 64-token pages only)");
            setenv("DINF_MLA_KERNEL", "seesaw", 1);
            EXPECT_FAIL(good, DINF_STATUS_UNSUPPORTED,
                        "DINF_MLA_KERNEL=seesaw, but the seesaw rung cannot take this decode: page_block_size=32 "
                        "(the fast rung takes 64-token pages only)");
        } else {
            dinf_device_info info = DINF_DEVICE_INFO_INIT;
            if (dinf_device_query(0, &info) != DINF_STATUS_OK || !info.usable) {
                /* the choice passes; the launcher finds no device */
                static const char *const rungs[3] = {"fast", "seesaw", "simple"};
                for (int r = 0; r < 3; r++) {
                    setenv("DINF_MLA_KERNEL", rungs[r], 1);
                    EXPECT_FAIL(good, DINF_STATUS_UNSUPPORTED, "no usable CUDA device 0");
                }
            }
        }
        unsetenv("DINF_MLA_KERNEL");
        free(ws);
        problem_free(&p);
    }
#else
    cr_skip_test("built without CUDA (make CUDA=0)");
#endif
}

Test(mla_errors, metadata_and_sizes) {
    int32_t seqlens[3] = {10, 0, 300}, meta[8 * 4], splits[4];
    cr_assert_eq(dinf_mla_get_metadata(seqlens, 3, 0, meta, splits, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_get_metadata: num_sm_parts=0 must be in [1, 65536]");
    cr_assert_eq(dinf_mla_get_metadata(seqlens, 3, 65537, meta, splits, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_get_metadata: num_sm_parts=65537 must be in [1, 65536]");
    cr_assert_eq(dinf_mla_get_metadata(seqlens, -2, 4, meta, splits, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_get_metadata: batch=-2 must be in [0, 1048576]");
    cr_assert_eq(dinf_mla_get_metadata(NULL, 3, 4, meta, splits, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_get_metadata: cache_seqlens is NULL");
    cr_assert_eq(dinf_mla_get_metadata(seqlens, 3, 4, NULL, splits, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_get_metadata: tile_scheduler_metadata is NULL");
    cr_assert_eq(dinf_mla_get_metadata(seqlens, 3, 4, meta, NULL, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_get_metadata: num_splits is NULL");
    seqlens[1] = -1;
    cr_assert_eq(dinf_mla_get_metadata(seqlens, 3, 4, meta, splits, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_get_metadata: cache_seqlens[1]=-1 is negative");
    seqlens[1] = 0;
    cr_assert_eq(dinf_mla_get_metadata(seqlens, 3, 4, meta, meta + 2, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_get_metadata: tile_scheduler_metadata and num_splits overlap: pass separate buffers");
    cr_assert_eq(dinf_mla_get_metadata(seqlens, 3, 4, meta, seqlens, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_get_metadata: num_splits and cache_seqlens overlap: pass separate buffers");
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    if (dinf_device_query(0, &info) != DINF_STATUS_OK || !info.usable) {
        const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
        cr_assert_eq(dinf_mla_get_metadata(seqlens, 3, 4, meta, splits, &cuda),
                     DINF_STATUS_UNSUPPORTED, "%s", dinf_last_error());
    }

    int32_t parts;
    cr_assert_eq(dinf_mla_num_sm_parts(0, 1, 132, &parts), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_num_sm_parts: q_rows_per_head_kv=0 (s_q * h_q / h_kv) must be in [1, 8192]");
    cr_assert_eq(dinf_mla_num_sm_parts(8193, 1, 132, &parts), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_mla_num_sm_parts(64, 0, 132, &parts), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_num_sm_parts: num_heads_kv=0 must be >= 1");
    cr_assert_eq(dinf_mla_num_sm_parts(64, 1, 0, &parts), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_num_sm_parts: num_sms=0 must be >= 1");
    cr_assert_eq(dinf_mla_num_sm_parts(64, 1, 132, NULL), DINF_STATUS_INVALID_ARGUMENT);

    size_t bytes;
    cr_assert_eq(dinf_mla_workspace_size(2, 1, 16, 3, &bytes, NULL), DINF_STATUS_OK);
    cr_assert_geq(bytes, (size_t)(5 * 16 * 513 * 4));
    cr_assert_eq(dinf_mla_workspace_size(2, 0, 16, 3, &bytes, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_workspace_size: seq_len_q=0, num_heads_q=16 and num_sm_parts=3 must be >= 1");
    cr_assert_eq(dinf_mla_workspace_size(-1, 1, 16, 3, &bytes, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_mla_workspace_size(2, 1, 16, 3, NULL, NULL), DINF_STATUS_INVALID_ARGUMENT);
}

/* ------------------------------------------------------------ FP8 cache -- */

#define FP8_ENTRY DINF_MLA_FP8_ENTRY_BYTES

typedef struct fp8_cache {
    uint8_t *bytes;
    int64_t token_stride, block_stride; /* bytes */
} fp8_cache;

/* Rows of request keys gathered as [tokens][h_kv][576] with their slots. */
static int64_t gather_tokens(const problem *p, uint16_t **kv, int64_t **slots) {
    int64_t n = 0;
    for (int64_t b = 0; b < p->b; b++)
        n += p->seqlens[b];
    *kv = malloc(sizeof(uint16_t) * (size_t)(n * p->h_kv * DQK + 8));
    *slots = malloc(sizeof(int64_t) * (size_t)(n + 1));
    int64_t i = 0;
    for (int64_t b = 0; b < p->b; b++)
        for (int32_t key = 0; key < p->seqlens[b]; key++, i++) {
            const int64_t page = p->bt[b * p->max_blocks + key / p->page];
            const uint16_t *row = p->kc + page * p->block_stride + (int64_t)(key % p->page) * p->token_stride;
            memcpy(*kv + i * p->h_kv * DQK, row, sizeof(uint16_t) * (size_t)(p->h_kv * DQK));
            (*slots)[i] = page * p->page + key % p->page;
        }
    return n;
}

/* Dequantize one entry independently of the library's loaders. */
static void dequant_entry(const uint8_t *e, float *x) {
    float scales[4];
    memcpy(scales, e + DINF_MLA_FP8_SCALE_OFFSET, sizeof scales);
    for (int d = 0; d < DV; d++)
        x[d] = dinf__f32_from_e4m3(e[d]) * scales[d / 128];
    for (int d = DV; d < DQK; d++) {
        uint16_t b;
        memcpy(&b, e + DINF_MLA_FP8_ROPE_OFFSET + 2 * (d - DV), 2);
        x[d] = dinf__f32_from_bf16(b);
    }
}

/*
 * Quantize every used row of p into a fresh FP8 cache (unused bytes 0xFF:
 * NaN codes and NaN scales), then replace p's bf16 rows by the dequantized
 * values (exact in bf16), so the BF16 decode of p is the oracle of the FP8 one.
 * odd_scales: multiply every scale by 1.37 first (not a power of two, as a
 * cache from another quantizer may have); the oracle rows are then the
 * products rounded to bf16, which is what the CPU and the kernels use.
 */
static void fp8_from_problem_scaled(problem *p, fp8_cache *c, int odd_scales) {
    c->token_stride = (int64_t)p->h_kv * FP8_ENTRY;
    c->block_stride = p->page * c->token_stride;
    const size_t bytes = (size_t)(p->num_blocks * c->block_stride);
    c->bytes = aligned_alloc(64, (bytes + 63) / 64 * 64);
    memset(c->bytes, 0xFF, bytes);
    uint16_t *kv;
    int64_t *slots;
    const int64_t n = gather_tokens(p, &kv, &slots);
    cr_assert_eq(dinf_mla_quantize_kvcache_fp8(kv, n, p->h_kv, (int64_t)p->h_kv * DQK, slots, c->bytes,
                                               p->num_blocks, p->page, c->block_stride,
                                               c->token_stride, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    float x[DQK];
    for (int64_t i = 0; i < n; i++) {
        const int64_t page = slots[i] / p->page, r = slots[i] % p->page;
        for (int32_t hk = 0; hk < p->h_kv; hk++) {
            uint8_t *e = c->bytes + page * c->block_stride + r * c->token_stride + hk * FP8_ENTRY;
            for (int g = 0; odd_scales && g < 4; g++) {
                float scale;
                memcpy(&scale, e + DINF_MLA_FP8_SCALE_OFFSET + 4 * g, 4);
                scale *= 1.37f;
                memcpy(e + DINF_MLA_FP8_SCALE_OFFSET + 4 * g, &scale, 4);
            }
            dequant_entry(e, x);
            uint16_t *row = p->kc + page * p->block_stride + r * p->token_stride + (int64_t)hk * DQK;
            for (int d = 0; d < DQK; d++) {
                row[d] = dinf__bf16_from_f32(x[d]);
                if (!odd_scales)
                    cr_assert_eq(dinf__f32_from_bf16(row[d]), x[d], "dequantized value not exact in bf16");
            }
        }
    }
    free(kv);
    free(slots);
}

static void fp8_from_problem(problem *p, fp8_cache *c) { fp8_from_problem_scaled(p, c, 0); }

static dinf_status problem_run_fp8(problem *p, const fp8_cache *c, int32_t parts, int32_t threads) {
    int32_t *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
    int32_t *splits = malloc(sizeof(int32_t) * (size_t)(p->b + 1));
    cr_assert_eq(dinf_mla_get_metadata(p->seqlens, p->b, parts, meta, splits, NULL), DINF_STATUS_OK);
    dinf_exec exec = DINF_EXEC_CPU_INIT;
    exec.num_threads = threads;
    size_t ws_bytes;
    cr_assert_eq(dinf_mla_workspace_size(p->b, p->s_q, p->h_q, parts, &ws_bytes, &exec), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64 + 64);
    const dinf_status st = dinf_mla_decode_with_kvcache_fp8(
        p->q, p->b, p->s_q, p->h_q, DQK, c->bytes, p->num_blocks, p->page, p->h_kv, c->block_stride,
        c->token_stride, p->bt, p->max_blocks, p->seqlens, DV, meta, parts, splits, p->scale,
        p->causal, ws, ws_bytes, p->out, p->lse, &exec);
    free(ws);
    free(meta);
    free(splits);
    return st;
}

Test(mla_fp8, quantize_round_trip_within_e4m3_bounds) {
    /* 300 tokens x 2 heads, magnitudes from 1e-6 to 1e3 per 128-channel
     * group, an outlier, an all-zero group; shuffled slots, some skipped. */
    const int32_t h_kv = 2, page = 16;
    const int64_t n = 300, num_blocks = 40, token_stride = h_kv * FP8_ENTRY + 16;
    const int64_t block_stride = page * token_stride + 32;
    uint64_t s = 99;
    uint16_t *kv = malloc(sizeof(uint16_t) * (size_t)(n * h_kv * DQK));
    for (int64_t i = 0; i < n * h_kv; i++) {
        for (int c = 0; c < 4; c++) {
            const double mag = pow(10.0, (double)(rng_next(&s) % 10) - 6.0);
            for (int d = 0; d < 128; d++)
                kv[i * DQK + c * 128 + d] = dinf__bf16_from_f32((float)(rng_normal(&s) * mag));
            if (i % 7 == 3 && c == 1)
                for (int d = 0; d < 128; d++)
                    kv[i * DQK + c * 128 + d] = 0;
        }
        kv[i * DQK + (int)(rng_next(&s) % DV)] = dinf__bf16_from_f32(3000.0f);
        for (int d = DV; d < DQK; d++)
            kv[i * DQK + d] = rng_value(&s);
    }
    int64_t *slots = malloc(sizeof(int64_t) * (size_t)n);
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)(num_blocks * page));
    for (int64_t i = 0; i < num_blocks * page; i++)
        perm[i] = i;
    for (int64_t i = num_blocks * page - 1; i > 0; i--) {
        const int64_t j = (int64_t)(rng_next(&s) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int64_t i = 0; i < n; i++)
        slots[i] = i % 11 == 5 ? -1 : perm[i];
    const size_t bytes = (size_t)(num_blocks * block_stride);
    uint8_t *cache = aligned_alloc(64, (bytes + 63) / 64 * 64);
    memset(cache, 0xEE, bytes);
    for (int threads = 1; threads <= 3; threads += 2) {
        dinf_exec exec = DINF_EXEC_CPU_INIT;
        exec.num_threads = threads;
        cr_assert_eq(dinf_mla_quantize_kvcache_fp8(kv, n, h_kv, h_kv * DQK, slots, cache, num_blocks,
                                                   page, block_stride, token_stride, &exec),
                     DINF_STATUS_OK, "%s", dinf_last_error());
    }
    /* bytes of slots nobody wrote keep their sentinel */
    uint8_t *written = calloc(bytes, 1);
    float x[DQK];
    for (int64_t i = 0; i < n; i++) {
        if (slots[i] < 0)
            continue;
        for (int32_t hk = 0; hk < h_kv; hk++) {
            const int64_t off = slots[i] / page * block_stride + slots[i] % page * token_stride + hk * FP8_ENTRY;
            memset(written + off, 1, FP8_ENTRY);
            const uint8_t *e = cache + off;
            const uint16_t *src = kv + (i * h_kv + hk) * DQK;
            dequant_entry(e, x);
            for (int c = 0; c < 4; c++) {
                float scale, amax = 0.0f;
                memcpy(&scale, e + DINF_MLA_FP8_SCALE_OFFSET + 4 * c, 4);
                for (int d = 0; d < 128; d++)
                    amax = fmaxf(amax, fabsf(dinf__f32_from_bf16(src[c * 128 + d])));
                int ex;
                cr_assert_eq(frexpf(scale, &ex), 0.5f, "token %lld head %d group %d: scale %g is not a power of two",
                             (long long)i, hk, c, (double)scale);
                const float lo = fmaxf(amax, 1e-4f) / 448.0f;
                cr_assert(scale >= lo && scale < 2.0f * lo, "token %lld group %d: scale %g for amax %g",
                          (long long)i, c, (double)scale, (double)amax);
                for (int d = 0; d < 128; d++) {
                    const float v = dinf__f32_from_bf16(src[c * 128 + d]);
                    const float err = fabsf(x[c * 128 + d] - v);
                    const float bound = fmaxf(fabsf(v) * 0x1p-4f, scale * 0x1p-10f);
                    cr_assert(err <= bound, "token %lld head %d channel %d: %g -> %g (error %g > %g)",
                              (long long)i, hk, c * 128 + d, (double)v, (double)x[c * 128 + d],
                              (double)err, (double)bound);
                }
            }
            for (int d = DV; d < DQK; d++)
                cr_assert_eq(x[d], dinf__f32_from_bf16(src[d]), "RoPE channel %d not copied", d);
        }
    }
    for (size_t i = 0; i < bytes; i++)
        if (!written[i])
            cr_assert_eq(cache[i], 0xEE, "byte %zu outside every written entry changed", i);
    free(written);
    free(cache);
    free(perm);
    free(slots);
    free(kv);
}

/* FP8 decode == BF16 decode of the dequantized cache, bit for bit; and both
 * within the reference tolerances of the float64 oracle. */
static void fp8_point_scaled(int64_t b, int32_t s_q, int32_t s_k, int32_t h_q, int32_t h_kv,
                             int varlen, int zeros, int32_t causal, int32_t page, uint64_t seed,
                             int odd_scales) {
    problem p;
    problem_make(&p, b, s_q, h_q, h_kv, s_k, varlen, zeros, causal, page, 0, seed);
    fp8_cache c;
    fp8_from_problem_scaled(&p, &c, odd_scales);
    const int64_t rows = b * s_q * h_q;
    char params[160];
    snprintf(params, sizeof params, "fp8 b=%lld s_q=%d s_k=%d h_q=%d h_kv=%d varlen=%d zeros=%d causal=%d page=%d seed=%llu",
             (long long)b, s_q, s_k, h_q, h_kv, varlen, zeros, causal, page, (unsigned long long)seed);
    const int32_t parts = default_parts(&p);
    problem_poison(&p);
    cr_assert_eq(problem_run(&p, parts, 2), DINF_STATUS_OK, "%s: %s", params, dinf_last_error());
    check_against_reference(&p, params);
    uint16_t *out_bf16 = malloc(sizeof(uint16_t) * (size_t)(rows * DV));
    float *lse_bf16 = malloc(sizeof(float) * (size_t)rows);
    memcpy(out_bf16, p.out, sizeof(uint16_t) * (size_t)(rows * DV));
    memcpy(lse_bf16, p.lse, sizeof(float) * (size_t)rows);
    problem_poison(&p);
    cr_assert_eq(problem_run_fp8(&p, &c, parts, 3), DINF_STATUS_OK, "%s: %s", params, dinf_last_error());
    for (int64_t i = 0; i < rows * DV; i++)
        cr_assert_eq(p.out[i], out_bf16[i], "%s: out[%lld] fp8 %04x vs bf16-on-dequantized %04x", params,
                     (long long)i, p.out[i], out_bf16[i]);
    for (int64_t i = 0; i < rows; i++)
        cr_assert(memcmp(&p.lse[i], &lse_bf16[i], 4) == 0, "%s: lse[%lld] %g vs %g", params, (long long)i,
                  (double)p.lse[i], (double)lse_bf16[i]);
    free(out_bf16);
    free(lse_bf16);
    free(c.bytes);
    problem_free(&p);
}

static void fp8_point(int64_t b, int32_t s_q, int32_t s_k, int32_t h_q, int32_t h_kv, int varlen,
                      int zeros, int32_t causal, int32_t page, uint64_t seed) {
    fp8_point_scaled(b, s_q, s_k, h_q, h_kv, varlen, zeros, causal, page, seed, 0);
}

/* Scales that are not powers of two (a cache from another quantizer): each
 * dequantized value is rounded to bf16, as the kernels' bf16 tensor cores
 * need, so the CPU oracle and the GPU agree on such caches too. */
Test(mla_fp8, other_scales_round_the_dequantized_values_to_bf16) {
    fp8_point_scaled(2, 1, 140, 16, 1, 0, 0, 0, 64, 511, 1);
    fp8_point_scaled(3, 2, 300, 6, 2, 1, 1, 1, 32, 512, 1);
}

Test(mla_fp8, decode_equals_bf16_decode_of_the_dequantized_cache) {
    fp8_point(2, 1, 140, 16, 1, 0, 0, 0, 64, 501);
    fp8_point(3, 2, 300, 3, 1, 1, 1, 1, 16, 502);
    fp8_point(2, 4, 200, 4, 2, 1, 0, 1, 32, 503);
    fp8_point(6, 1, 20, 64, 1, 1, 1, 0, 64, 504);
}

Test(mla_fp8, rejected_inputs) {
    problem p;
    problem_make(&p, 2, 1, 16, 1, 100, 0, 0, 0, 64, 0, 77);
    fp8_cache c;
    fp8_from_problem(&p, &c);
    const int32_t parts = 4;
    int32_t meta[8 * 4], splits[3];
    cr_assert_eq(dinf_mla_get_metadata(p.seqlens, 2, parts, meta, splits, NULL), DINF_STATUS_OK);
    size_t ws_bytes;
    cr_assert_eq(dinf_mla_workspace_size(2, 1, 16, parts, &ws_bytes, NULL), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
#define FP8_DECODE(kc, tok, blk)                                                                   \
    dinf_mla_decode_with_kvcache_fp8(p.q, 2, 1, 16, DQK, (kc), p.num_blocks, 64, 1, (blk), (tok), p.bt, \
                                     p.max_blocks, p.seqlens, DV, meta, parts, splits, p.scale, 0, ws, \
                                     ws_bytes, p.out, p.lse, NULL)
    cr_assert_eq(FP8_DECODE(c.bytes, c.token_stride, c.block_stride), DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(FP8_DECODE(c.bytes, 640, 640 * 64), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_decode_with_kvcache_fp8: kv_token_stride=640 bytes must be a "
                                        "multiple of 16 and >= num_heads_kv * 656 = 656");
    cr_assert_eq(FP8_DECODE(c.bytes, 664, 664 * 64), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "kv_token_stride=664 bytes must be a multiple of 16"), "%s", dinf_last_error());
    cr_assert_eq(FP8_DECODE(c.bytes, 656, 656 * 64 - 16), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "kv_block_stride=41968 bytes must be a multiple of 16 and >= page_block_size"),
              "%s", dinf_last_error());
    cr_assert_eq(FP8_DECODE(c.bytes + 8, 656, 656 * 64), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "k_cache=") && strstr(dinf_last_error(), "is not 16-byte aligned"), "%s",
              dinf_last_error());
    p.bt[0] = -3;
    cr_assert_eq(FP8_DECODE(c.bytes, 656, 656 * 64), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "block_table[0][0]=-3 is outside"), "%s", dinf_last_error());
    p.seqlens[1] = 5000;
    cr_assert_eq(FP8_DECODE(c.bytes, 656, 656 * 64), DINF_STATUS_INVALID_ARGUMENT);
#undef FP8_DECODE

    /* quantize */
    uint16_t *kv = aligned_alloc(64, 4 * DQK * 2);
    for (int i = 0; i < 4 * DQK; i++)
        kv[i] = rng_value(&(uint64_t){(uint64_t)i});
    int64_t slots[4] = {0, 5, -1, 64};
    const int64_t nb = p.num_blocks;
#define QUANT(kvp, n, hkv, ld, sl, cache, pg, blk, tok) \
    dinf_mla_quantize_kvcache_fp8((kvp), (n), (hkv), (ld), (sl), (cache), nb, (pg), (blk), (tok), NULL)
    cr_assert_eq(QUANT(kv, 4, 1, DQK, slots, c.bytes, 64, c.block_stride, c.token_stride), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    cr_assert_eq(QUANT(kv, 4, 1, DQK, slots, c.bytes, 128, c.block_stride, c.token_stride), DINF_STATUS_UNSUPPORTED);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_quantize_kvcache_fp8: page_block_size=128 is not supported (64, 32 or 16)");
    cr_assert_eq(QUANT(kv, -1, 1, DQK, slots, c.bytes, 64, c.block_stride, c.token_stride), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_quantize_kvcache_fp8: num_tokens=-1 must be >= 0");
    cr_assert_eq(QUANT(kv, 4, 0, DQK, slots, c.bytes, 64, c.block_stride, c.token_stride), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_str_eq(dinf_last_error(), "dinf_mla_quantize_kvcache_fp8: num_heads_kv=0 must be >= 1");
    cr_assert_eq(QUANT(kv, 4, 1, 570, slots, c.bytes, 64, c.block_stride, c.token_stride), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "kv_token_ld=570 must be a multiple of 8"), "%s", dinf_last_error());
    cr_assert_eq(QUANT(kv, 4, 1, DQK, slots, c.bytes, 64, c.block_stride, 648), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "kv_token_stride=648 bytes must be a multiple of 16 and >= num_heads_kv * 656"),
              "%s", dinf_last_error());
    cr_assert_eq(QUANT(kv, 4, 1, DQK, slots, c.bytes, 64, 100, c.token_stride), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "kv_block_stride=100 bytes"), "%s", dinf_last_error());
    cr_assert_eq(QUANT(NULL, 4, 1, DQK, slots, c.bytes, 64, c.block_stride, c.token_stride), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "must not be NULL"), "%s", dinf_last_error());
    cr_assert_eq(QUANT(kv, 4, 1, DQK, slots, c.bytes + 4, 64, c.block_stride, c.token_stride), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "must be 16-byte aligned"), "%s", dinf_last_error());
    cr_assert_eq(QUANT(kv + 1, 3, 1, DQK, slots, c.bytes, 64, c.block_stride, c.token_stride), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "must be 16-byte aligned"), "%s", dinf_last_error());
    int64_t bad_slots[4] = {0, nb * 64, 1, 2};
    cr_assert_eq(QUANT(kv, 4, 1, DQK, bad_slots, c.bytes, 64, c.block_stride, c.token_stride), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "slot_mapping[1]=") && strstr(dinf_last_error(), "is outside [-1, num_blocks"),
              "%s", dinf_last_error());
    bad_slots[1] = -2;
    cr_assert_eq(QUANT(kv, 4, 1, DQK, bad_slots, c.bytes, 64, c.block_stride, c.token_stride), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "slot_mapping[1]=-2 is outside"), "%s", dinf_last_error());
    cr_assert_eq(QUANT((const uint16_t *)c.bytes, 4, 1, DQK, slots, c.bytes, 64, c.block_stride, c.token_stride),
                 DINF_STATUS_INVALID_ARGUMENT);
    cr_assert(strstr(dinf_last_error(), "k_cache and kv overlap"), "%s", dinf_last_error());
    cr_assert_eq(QUANT(kv, 0, 1, DQK, NULL, NULL, 64, c.block_stride, c.token_stride), DINF_STATUS_OK,
                 "no tokens: nothing to check or write");
#undef QUANT
    free(kv);
    free(ws);
    free(c.bytes);
    problem_free(&p);
}

/*
 * DINF_MLA_FP8_PREFETCH (the FP8 producer's L2 prefetch distance) is read on
 * every GPU call, like DINF_MLA_KERNEL: a value other than 0..8 fails with
 * its reason before the device is touched (the host pointers below are
 * never dereferenced on that path), for the FP8 and the BF16 cache; valid
 * values pass on to the launcher. The CPU place does not read it.
 */
Test(mla_fp8, prefetch_distance_from_the_environment) {
    problem p;
    problem_make(&p, 2, 1, 16, 1, 100, 0, 0, 0, 64, 0, 78);
    fp8_cache c;
    fp8_from_problem(&p, &c);
    const int32_t parts = 4;
    int32_t meta[8 * 4], splits[3];
    cr_assert_eq(dinf_mla_get_metadata(p.seqlens, 2, parts, meta, splits, NULL), DINF_STATUS_OK);
    size_t ws_bytes;
    cr_assert_eq(dinf_mla_workspace_size(2, 1, 16, parts, &ws_bytes, NULL), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
#define FP8_DECODE(place)                                                                          \
    dinf_mla_decode_with_kvcache_fp8(p.q, 2, 1, 16, DQK, c.bytes, p.num_blocks, 64, 1, c.block_stride,      \
                                     c.token_stride, p.bt, p.max_blocks, p.seqlens, DV, meta, parts, splits, \
                                     p.scale, 0, ws, ws_bytes, p.out, p.lse, (place))
#define BF16_DECODE(place)                                                                         \
    dinf_mla_decode_with_kvcache(p.q, 2, 1, 16, DQK, p.kc, p.num_blocks, 64, 1, p.block_stride, p.token_stride, \
                                 p.bt, p.max_blocks, p.seqlens, DV, meta, parts, splits, p.scale, 0, ws,     \
                                 ws_bytes, p.out, p.lse, (place))
    static const char *const bad[] = {"9", "-1", "two", "2 ", "1e1"};
    for (int i = 0; i < 5; i++) {
        setenv("DINF_MLA_FP8_PREFETCH", bad[i], 1);
        cr_assert_eq(FP8_DECODE(NULL), DINF_STATUS_OK, "the CPU place ignores '%s': %s", bad[i],
                     dinf_last_error());
#if DINF_WITH_CUDA
        const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
        char want[200];
        for (int fp8 = 1; fp8 >= 0; fp8--) {
            snprintf(want, sizeof want,
                     "dinf_mla_decode_with_kvcache%s: DINF_MLA_FP8_PREFETCH='%s' is not a block count "
                     "in [0, 8] (0 = no L2 prefetch; unset = 2)",
                     fp8 ? "_fp8" : "", bad[i]);
            cr_assert_eq(fp8 ? FP8_DECODE(&cuda) : BF16_DECODE(&cuda), DINF_STATUS_INVALID_ARGUMENT,
                         "'%s' accepted (fp8=%d)", bad[i], fp8);
            cr_assert_str_eq(dinf_last_error(), want);
        }
#endif
    }
#if DINF_WITH_CUDA
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    if (dinf_device_query(0, &info) != DINF_STATUS_OK || !info.usable) {
        /* valid values pass the check; the launcher then finds no device */
        const dinf_exec cuda = DINF_EXEC_CUDA_INIT(0, NULL);
        static const char *const ok[] = {"0", "8", ""};
        for (int i = 0; i < 3; i++) {
            setenv("DINF_MLA_FP8_PREFETCH", ok[i], 1);
            cr_assert_eq(FP8_DECODE(&cuda), DINF_STATUS_UNSUPPORTED, "'%s': %s", ok[i], dinf_last_error());
            cr_assert(strstr(dinf_last_error(), "no usable CUDA device 0"), "'%s': %s", ok[i], dinf_last_error());
        }
    }
#endif
#undef FP8_DECODE
#undef BF16_DECODE
    unsetenv("DINF_MLA_FP8_PREFETCH");
    free(ws);
    free(c.bytes);
    problem_free(&p);
}

Test(mla_fp8, scale_rule_edge_cases) {
    /* smallest power of two >= max(amax, 1e-4) / 448 */
    cr_assert_eq(dinf__mla_fp8_scale(448.0f), 1.0f);
    cr_assert_eq(dinf__mla_fp8_scale(449.0f), 2.0f);
    cr_assert_eq(dinf__mla_fp8_scale(224.0f), 0.5f);
    cr_assert_eq(dinf__mla_fp8_scale(0.0f), ldexpf(1.0f, -22)); /* 1e-4 / 448 = 2.23e-7 -> 2^-22 */
    cr_assert_eq(dinf__mla_fp8_scale(1e-30f), ldexpf(1.0f, -22));
    cr_assert(isinf(dinf__mla_fp8_scale(INFINITY)));
    cr_assert(isnan(dinf__mla_fp8_scale(NAN)));
    /* codes: x / scale rounded to e4m3, saturating */
    cr_assert_eq(dinf__mla_fp8_code(448.0f, 1.0f), 0x7E);
    cr_assert_eq(dinf__mla_fp8_code(-1000.0f, 1.0f), 0xFE);
    cr_assert_eq(dinf__mla_fp8_code(1.0f, 1.0f), 0x38);
    /* the plan's block count never goes negative on unchecked device lengths */
    cr_assert_eq(dinf__mla_num_blocks(-5), 0);
    cr_assert_eq(dinf__mla_num_blocks(-64), 0);
    cr_assert_eq(dinf__mla_num_blocks(65), 2);
}
