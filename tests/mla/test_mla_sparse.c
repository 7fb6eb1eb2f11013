/*
 * Sparse MLA decode on the CPU (mla.h, "Sparse decode"): against an
 * independent float64 reference over random index lists (skipped and
 * repeated slots, topk_length, odd page sizes, split plans, BF16 and FP8
 * caches), bit-identical to the dense decode where both describe the same
 * keys, the plan, thread-count invariance and every rejected input.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "mla_sparse_problem.h"

#include "mla/mla_hd.h"

#include <stddef.h>

/* ------------------------------------------------------------- reference -- */

static void point(int64_t b, int32_t s_q, int32_t h_q, int32_t h_kv, int32_t page, int32_t topk,
                  int lengths, double skip, int kv_fp8, int32_t num_sms, int32_t threads,
                  uint64_t seed) {
    char params[240];
    snprintf(params, sizeof params,
             "b=%lld s_q=%d h_q=%d h_kv=%d page=%d topk=%d lengths=%d skip=%.2f fp8=%d sms=%d "
             "threads=%d seed=%llu",
             (long long)b, s_q, h_q, h_kv, page, topk, lengths, skip, kv_fp8, num_sms, threads,
             (unsigned long long)seed);
    sp_problem p;
    sp_make(&p, b, s_q, h_q, h_kv, page, topk, lengths, skip, kv_fp8, seed);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, sp_parts(&p, num_sms), threads), DINF_STATUS_OK, "[%s] %s", params,
                 dinf_last_error());
    sp_check_reference(&p, params);
    sp_free(&p);
}

/* V3.2's shape (h_kv 1, h_q 64 / 128, s_q 1 / 2) and smaller ones, pages of
 * 64 and odd sizes, lists shorter and longer than one 64-key block. */
Test(mla_sparse, matches_the_float64_reference) {
    uint64_t seed = 7100;
    const int32_t pages[] = {64, 7, 1};
    const int32_t topks[] = {1, 37, 64, 150};
    for (int pi = 0; pi < 3; pi++)
        for (int ti = 0; ti < 4; ti++)
            for (int32_t s_q = 1; s_q <= 2; s_q++)
                point(3, s_q, 16, 1, pages[pi], topks[ti], (ti + pi) % 2, 0.15, 0, 16, 0, ++seed);
    point(2, 2, 64, 1, 64, 300, 1, 0.2, 0, 132, 0, ++seed);
    point(2, 1, 128, 1, 64, 200, 0, 0.1, 0, 132, 0, ++seed);
    point(2, 2, 6, 2, 5, 90, 1, 0.3, 0, 40, 0, ++seed); /* h_kv 2: both heads read each slot */
    point(1, 3, 1, 1, 3, 129, 0, 0.0, 0, 4, 0, ++seed);
}

Test(mla_sparse, fp8_cache_matches_the_reference) {
    uint64_t seed = 7200;
    point(3, 2, 16, 1, 64, 150, 1, 0.15, 1, 16, 0, ++seed);
    point(2, 1, 64, 1, 64, 100, 0, 0.1, 1, 132, 0, ++seed);
    point(2, 2, 8, 2, 11, 70, 1, 0.2, 1, 24, 0, ++seed);
}

/* Every list -1 (or topk_length 0): out 0, lse +inf, as a dense request without keys. */
Test(mla_sparse, positions_without_a_valid_slot) {
    sp_problem p;
    sp_make(&p, 3, 2, 16, 1, 64, 70, 1, 1.0, 0, 7301);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, 5, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    for (int64_t i = 0; i < p.b * p.s_q * p.h_q * SP_DV; i++)
        cr_assert_eq(p.out[i], 0, "out[%lld] = 0x%04x", (long long)i, p.out[i]);
    for (int64_t i = 0; i < p.b * p.s_q * p.h_q; i++)
        cr_assert(isinf(p.lse[i]) && p.lse[i] > 0, "lse[%lld] = %g", (long long)i, p.lse[i]);
    sp_free(&p);
}

/* ----------------------------------------------------- against the dense -- */

/*
 * A dense problem written as a sparse one: request b's list is the slots of
 * its keys 0 .. s_k - 1 through its block table, topk_length = s_k. With one
 * query position per request the plans are the same (same lengths), so the
 * results are the same bits; with s_q = 2 and one SM part (no splits) too.
 */
static void dense_vs_sparse(int32_t s_q, int32_t parts, int kv_fp8, uint64_t seed) {
    const int64_t b = 4;
    const int32_t h_q = 16, h_kv = 1, page = 64, e = kv_fp8 ? SP_ENTRY : SP_DQK;
    const int32_t lens[4] = {130, 1, 64, 201};
    const int32_t topk = 201, max_blocks = 4;
    const int64_t num_blocks = b * max_blocks;
    uint64_t s = seed;
    const int64_t slots = num_blocks * page;
    uint16_t *kc = malloc(sizeof(uint16_t) * (size_t)(slots * SP_DQK));
    for (int64_t i = 0; i < slots * SP_DQK; i++)
        kc[i] = sp_value(&s);
    uint8_t *kc8 = NULL;
    if (kv_fp8) {
        kc8 = malloc((size_t)(slots * SP_ENTRY));
        int64_t *map = malloc(sizeof(int64_t) * (size_t)slots);
        for (int64_t i = 0; i < slots; i++)
            map[i] = i;
        cr_assert_eq(dinf_mla_quantize_kvcache_fp8(kc, slots, 1, SP_DQK, map, kc8, num_blocks, page,
                                                   (int64_t)page * SP_ENTRY, SP_ENTRY, NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        free(map);
    }
    const void *cache = kv_fp8 ? (const void *)kc8 : (const void *)kc;
    /* pages in reverse order */
    int32_t bt[4 * 4];
    for (int64_t i = 0; i < b * max_blocks; i++)
        bt[i] = (int32_t)(num_blocks - 1 - i);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(b * s_q * topk));
    int32_t tl[4];
    for (int64_t i = 0; i < b; i++) {
        tl[i] = lens[i];
        for (int32_t t = 0; t < s_q; t++)
            for (int32_t j = 0; j < topk; j++)
                idx[(i * s_q + t) * topk + j] =
                    j < lens[i] ? bt[i * max_blocks + j / page] * page + j % page : SP_PAST_LENGTH;
    }
    uint16_t *q = malloc(sizeof(uint16_t) * (size_t)(b * s_q * h_q * SP_DQK));
    for (int64_t i = 0; i < b * s_q * h_q * SP_DQK; i++)
        q[i] = sp_value(&s);
    const int64_t rows = b * s_q * h_q;
    uint16_t *out_d = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV));
    uint16_t *out_s = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV));
    float lse_d[4 * 2 * 16], lse_s[4 * 2 * 16];
    for (int64_t i = 0; i < rows * SP_DV; i++)
        out_d[i] = out_s[i] = SP_POISON;
    for (int64_t i = 0; i < rows; i++)
        lse_d[i] = lse_s[i] = NAN;
    int32_t meta_d[8 * 64], splits_d[5], meta_s[8 * 64], splits_s[9];
    cr_assert_eq(dinf_mla_get_metadata(lens, b, parts, meta_d, splits_d, NULL), DINF_STATUS_OK);
    cr_assert_eq(dinf_mla_get_sparse_metadata(tl, b, s_q, topk, parts, meta_s, splits_s, NULL, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    if (s_q == 1) { /* the same lengths: the same plan */
        cr_assert_arr_eq(meta_d, meta_s, sizeof(int32_t) * 8 * (size_t)parts);
        cr_assert_arr_eq(splits_d, splits_s, sizeof(int32_t) * 5);
    }
    size_t ws_d = 0, ws_s = 0;
    cr_assert_eq(dinf_mla_workspace_size(b, s_q, h_q, parts, &ws_d, NULL), DINF_STATUS_OK);
    cr_assert_eq(dinf_mla_workspace_size(b * s_q, 1, h_q, parts, &ws_s, NULL), DINF_STATUS_OK);
    void *wd = aligned_alloc(64, (ws_d + 63) / 64 * 64), *wsp = aligned_alloc(64, (ws_s + 63) / 64 * 64);
    const float scale = 0.0417f;
    dinf_status st;
    if (kv_fp8)
        st = dinf_mla_decode_with_kvcache_fp8(q, b, s_q, h_q, SP_DQK, cache, num_blocks, page, h_kv,
                                              (int64_t)page * e, e, bt, max_blocks, lens, SP_DV,
                                              meta_d, parts, splits_d, scale, 0, wd, ws_d, out_d,
                                              lse_d, NULL);
    else
        st = dinf_mla_decode_with_kvcache(q, b, s_q, h_q, SP_DQK, cache, num_blocks, page, h_kv,
                                          (int64_t)page * e, e, bt, max_blocks, lens, SP_DV, meta_d,
                                          parts, splits_d, scale, 0, wd, ws_d, out_d, lse_d, NULL);
    cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
    if (kv_fp8)
        st = dinf_mla_sparse_decode_with_kvcache_fp8(q, b, s_q, h_q, SP_DQK, cache, num_blocks, page,
                                                     h_kv, (int64_t)page * e, e, idx, topk, tl,
                                                     SP_DV, meta_s, parts, splits_s, scale, wsp,
                                                     ws_s, out_s, lse_s, NULL, NULL);
    else
        st = dinf_mla_sparse_decode_with_kvcache(q, b, s_q, h_q, SP_DQK, cache, num_blocks, page,
                                                 h_kv, (int64_t)page * e, e, idx, topk, tl, SP_DV,
                                                 meta_s, parts, splits_s, scale, wsp, ws_s, out_s,
                                                 lse_s, NULL, NULL);
    cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
    for (int64_t i = 0; i < rows * SP_DV; i++)
        cr_assert_eq(out_s[i], out_d[i], "s_q=%d parts=%d fp8=%d: out[%lld] 0x%04x vs dense 0x%04x",
                     s_q, parts, kv_fp8, (long long)i, out_s[i], out_d[i]);
    for (int64_t i = 0; i < rows; i++)
        cr_assert(memcmp(&lse_s[i], &lse_d[i], 4) == 0, "lse[%lld] %.9g vs dense %.9g", (long long)i,
                  lse_s[i], lse_d[i]);
    free(wd);
    free(wsp);
    free(q);
    free(out_d);
    free(out_s);
    free(idx);
    free(kc);
    free(kc8);
}

Test(mla_sparse, same_bits_as_the_dense_decode_of_the_same_keys) {
    dense_vs_sparse(1, 1, 0, 7401);
    dense_vs_sparse(1, 5, 0, 7402); /* split requests, the same plan */
    dense_vs_sparse(1, 9, 1, 7403);
    dense_vs_sparse(2, 1, 0, 7404); /* two positions per request, no splits */
    dense_vs_sparse(2, 1, 1, 7405);
}

/* The FP8 sparse decode is the BF16 sparse decode of the dequantized cache, bit for bit. */
Test(mla_sparse, fp8_equals_bf16_of_the_dequantized_cache) {
    sp_problem p;
    sp_make(&p, 3, 2, 16, 1, 13, 120, 1, 0.2, 1, 7501);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, 7, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    const int64_t rows = p.b * p.s_q * p.h_q;
    uint16_t *out8 = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV));
    float *lse8 = malloc(sizeof(float) * (size_t)rows);
    memcpy(out8, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
    memcpy(lse8, p.lse, sizeof(float) * (size_t)rows);
    /* the same problem on the BF16 (dequantized) cache */
    p.kv_fp8 = 0;
    p.token_stride = (int64_t)p.h_kv * SP_DQK;
    p.block_stride = p.page * p.token_stride;
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, 7, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_arr_eq(out8, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
    cr_assert_arr_eq(lse8, p.lse, sizeof(float) * (size_t)rows);
    free(out8);
    free(lse8);
    sp_free(&p);
}

Test(mla_sparse, bit_identical_for_any_thread_count) {
    sp_problem p;
    sp_make(&p, 4, 2, 16, 1, 64, 200, 1, 0.1, 0, 7601);
    const int64_t rows = p.b * p.s_q * p.h_q;
    uint16_t *first = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV));
    float *first_lse = malloc(sizeof(float) * (size_t)rows);
    const int32_t threads[] = {1, 2, 5};
    for (int i = 0; i < 3; i++) {
        sp_poison(&p);
        cr_assert_eq(sp_run_cpu(&p, 11, threads[i]), DINF_STATUS_OK, "%s", dinf_last_error());
        if (i == 0) {
            memcpy(first, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
            memcpy(first_lse, p.lse, sizeof(float) * (size_t)rows);
        } else {
            cr_assert_arr_eq(first, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV),
                             "threads=%d", threads[i]);
            cr_assert_arr_eq(first_lse, p.lse, sizeof(float) * (size_t)rows);
        }
    }
    free(first);
    free(first_lse);
    sp_free(&p);
}

/* ------------------------------------------------------------------ plan -- */

/* The sparse plan is the dense plan of the expanded lengths. */
Test(mla_sparse, metadata_is_the_dense_plan_of_the_query_positions) {
    uint64_t s = 7701;
    for (int it = 0; it < 40; it++) {
        const int64_t b = 1 + (int64_t)(sp_next(&s) % 9);
        const int32_t s_q = 1 + (int32_t)(sp_next(&s) % 3);
        const int32_t topk = 1 + (int32_t)(sp_next(&s) % 3000);
        const int32_t parts = 1 + (int32_t)(sp_next(&s) % 70);
        const int with_len = it % 2;
        int32_t tl[9], lens[27];
        for (int64_t i = 0; i < b; i++)
            tl[i] = (int32_t)(sp_next(&s) % (uint64_t)(topk + 1));
        for (int64_t r = 0; r < b * s_q; r++)
            lens[r] = with_len ? tl[r / s_q] : topk;
        int32_t *md = malloc(sizeof(int32_t) * 8 * (size_t)parts), *ms = malloc(sizeof(int32_t) * 8 * (size_t)parts);
        int32_t sd[28], ss[28];
        cr_assert_eq(dinf_mla_get_metadata(lens, b * s_q, parts, md, sd, NULL), DINF_STATUS_OK);
        cr_assert_eq(dinf_mla_get_sparse_metadata(with_len ? tl : NULL, b, s_q, topk, parts, ms, ss, NULL,
                                                  NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_arr_eq(md, ms, sizeof(int32_t) * 8 * (size_t)parts, "it %d", it);
        cr_assert_arr_eq(sd, ss, sizeof(int32_t) * (size_t)(b * s_q + 1), "it %d", it);
        free(md);
        free(ms);
    }
    /* batch 0: every part empty, num_splits = {0} */
    int32_t meta[16], splits[1] = {99};
    cr_assert_eq(dinf_mla_get_sparse_metadata(NULL, 0, 2, 64, 2, meta, splits, NULL, NULL), DINF_STATUS_OK);
    cr_assert(splits[0] == 0 && meta[0] == -1 && meta[8] == -1);
}

static void expect_fail(dinf_status st, dinf_status want, const char *needle) {
    cr_assert_eq(st, want, "status %d, wanted %d (%s)", st, want, dinf_last_error());
    cr_assert(strstr(dinf_last_error(), needle), "message '%s' lacks '%s'", dinf_last_error(), needle);
}

Test(mla_sparse, metadata_rejects) {
    int32_t meta[8 * 4], splits[16];
    const int32_t tl[3] = {5, 70, 64};
    expect_fail(dinf_mla_get_sparse_metadata(tl, 3, 2, 64, 4, meta, splits, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "topk_length[1]=70 must be in [0, topk=64]");
    const int32_t neg[1] = {-1};
    expect_fail(dinf_mla_get_sparse_metadata(neg, 1, 1, 64, 4, meta, splits, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "topk_length[0]=-1");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 0, 4, meta, splits, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "topk=0 must be in [1, 1048576]");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, DINF_MLA_MAX_TOPK + 1, 4, meta, splits, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "topk=1048577");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 0, 64, 4, meta, splits, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "seq_len_q=0");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, DINF_MLA_MAX_BATCH, 2, 64, 4, meta, splits, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "batch * seq_len_q <= 1048576");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, -1, 1, 64, 4, meta, splits, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "batch=-1");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 0, meta, splits, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "num_sm_parts=0");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, NULL, splits, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "tile_scheduler_metadata is NULL");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, NULL, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "num_splits is NULL");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, (int32_t *)((char *)splits + 2), NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "4-byte aligned");
    int32_t tl_ok[3] = {5, 60, 64};
    expect_fail(dinf_mla_get_sparse_metadata(tl_ok, 3, 2, 64, 4, meta, tl_ok, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "overlap");
    /* num_splits and the metadata overlap */
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, meta + 30, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "overlap");
}

/* --------------------------------------------------------------- rejects -- */

Test(mla_sparse, every_rejected_input) {
    sp_problem p;
    sp_make(&p, 2, 2, 16, 1, 64, 100, 1, 0.1, 0, 7801);
    const int32_t parts = 3;
    int32_t meta[8 * 3], splits[5];
    cr_assert_eq(dinf_mla_get_sparse_metadata(p.topk_length, p.b, p.s_q, p.topk, parts, meta, splits, NULL,
                                              NULL),
                 DINF_STATUS_OK);
    size_t ws_bytes = 0;
    cr_assert_eq(dinf_mla_workspace_size(p.b * p.s_q, 1, p.h_q, parts, &ws_bytes, NULL),
                 DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
    sp_args a = sp_host_args(&p);
    a.meta = meta, a.splits = splits, a.ws = ws, a.ws_bytes = ws_bytes;
    cr_assert_eq(sp_decode(&p, &a, parts, NULL), DINF_STATUS_OK, "%s", dinf_last_error());

    sp_problem bad = p;
    sp_args ba = a;
    /* an index past the cache, inside the length */
    const int32_t n0 = p.topk_length[0];
    if (n0 > 0) {
        const int32_t keep = p.indices[n0 - 1];
        p.indices[n0 - 1] = (int32_t)(p.num_blocks * p.page);
        char want[96];
        snprintf(want, sizeof want, "indices[0][0][%d]=%d is outside the cache", n0 - 1,
                 (int)(p.num_blocks * p.page));
        expect_fail(sp_decode(&p, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, want);
        p.indices[n0 - 1] = keep;
    }
    /* entries past topk_length are never read, whatever they hold */
    cr_assert_eq(sp_decode(&p, &a, parts, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
    /* topk_length beyond topk */
    int32_t tl_bad[2] = {p.topk_length[0], p.topk + 1};
    ba.topk_length = tl_bad;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "topk_length[1]=101 must be in [0, topk=100]");
    ba = a;
    /* a plan made for other lengths (no topk_length) */
    int32_t meta2[8 * 3], splits2[5];
    cr_assert_eq(dinf_mla_get_sparse_metadata(NULL, p.b, p.s_q, p.topk, parts, meta2, splits2, NULL, NULL),
                 DINF_STATUS_OK);
    ba.meta = meta2;
    ba.splits = splits2;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "dinf_mla_get_sparse_metadata");
    ba = a;
    /* NULL indices */
    ba.indices = NULL;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "indices is NULL");
    ba.indices = (const int32_t *)((const char *)p.indices + 2);
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "not 4-byte aligned");
    ba = a;
    ba.topk_length = (const int32_t *)((const char *)p.topk_length + 1);
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "topk_length=");
    ba = a;
    /* topk out of range */
    bad.topk = 0;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "topk=0");
    bad = p;
    /* page sizes */
    bad.page = 0;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "page_block_size=0 must be in [1, 65536]");
    bad.page = DINF_MLA_MAX_SPARSE_PAGE + 1;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "page_block_size=65537");
    bad = p;
    /* a block stride below page * token stride */
    bad.block_stride = p.block_stride - 8;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "kv_block_stride");
    bad = p;
    /* more query positions than the plan has requests */
    bad.b = DINF_MLA_MAX_BATCH;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "batch * seq_len_q <= 1048576");
    bad = p;
    bad.h_q = 8192 * 2;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "DINF_MLA_MAX_Q_ROWS");
    bad = p;
    /* a workspace below dinf_mla_workspace_size(b * s_q, 1, h_q, parts): here one sized for a
     * single request */
    size_t dense_ws = 0;
    cr_assert_eq(dinf_mla_workspace_size(1, 1, p.h_q, parts, &dense_ws, NULL), DINF_STATUS_OK);
    ba.ws_bytes = dense_ws;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "dinf_mla_workspace_size");
    ba = a;
    /* the sparse branch's own range checks, through the decode call */
    expect_fail(sp_decode(&p, &a, 0, NULL), DINF_STATUS_INVALID_ARGUMENT, "num_sm_parts=0");
    expect_fail(sp_decode(&p, &a, DINF_MLA_MAX_SM_PARTS + 1, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "num_sm_parts=65537");
    bad.topk = DINF_MLA_MAX_TOPK + 1;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "topk=1048577");
    bad = p;
    bad.s_q = 0;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "seq_len_q=0");
    bad = p;
    bad.b = -1;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "batch=-1");
    bad = p;
    int32_t tl_neg[2] = {-3, p.topk_length[1]};
    ba.topk_length = tl_neg;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "topk_length[0]=-3 must be in [0, topk=100]");
    ba = a;
    /* num_splits alone not the plan's */
    int32_t splits_bad[5];
    memcpy(splits_bad, splits, sizeof splits_bad);
    splits_bad[4] += 1;
    ba.splits = splits_bad;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "num_splits[4]=");
    ba = a;
    /* outputs overlapping the index lists */
    ba.lse = (float *)p.indices;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "overlap");
    ba = a;
    /* head dims */
    expect_fail(dinf_mla_sparse_decode_with_kvcache(p.q, p.b, p.s_q, p.h_q, 512, p.kc, p.num_blocks,
                                                    p.page, p.h_kv, p.block_stride, p.token_stride,
                                                    p.indices, p.topk, p.topk_length, SP_DV, meta,
                                                    parts, splits, p.scale, ws, ws_bytes, p.out,
                                                    p.lse, NULL, NULL),
                DINF_STATUS_UNSUPPORTED, "head_dim=512");
    /* a non-finite scale */
    expect_fail(dinf_mla_sparse_decode_with_kvcache(p.q, p.b, p.s_q, p.h_q, SP_DQK, p.kc,
                                                    p.num_blocks, p.page, p.h_kv, p.block_stride,
                                                    p.token_stride, p.indices, p.topk,
                                                    p.topk_length, SP_DV, meta, parts, splits,
                                                    NAN, ws, ws_bytes, p.out, p.lse, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "softmax_scale");
    free(ws);
    sp_free(&p);
}

/* ---------------------------------------------------------------- extras -- */

/* The struct's layout, as python/deepinfra/_lib.py's MlaSparseExtras mirrors it
 * (tests/python/test_mla.py checks the same numbers there). */
_Static_assert(sizeof(dinf_mla_sparse_extras) == 80, "dinf_mla_sparse_extras size");
_Static_assert(offsetof(dinf_mla_sparse_extras, extra_page_block_size) == 56, "layout");
_Static_assert(offsetof(dinf_mla_sparse_extras, extra_kv_token_stride) == 72, "layout");

/* One problem with extras (sink, extra cache) against the float64 reference. */
static void point_ex(int64_t b, int32_t s_q, int32_t h_q, int32_t h_kv, int32_t page, int32_t topk,
                     int lengths, int32_t etopk, int32_t epage, int elengths, int sink, int kv_fp8,
                     int32_t num_sms, int32_t threads, uint64_t seed) {
    char params[300];
    snprintf(params, sizeof params,
             "b=%lld s_q=%d h_q=%d h_kv=%d page=%d topk=%d lengths=%d etopk=%d epage=%d "
             "elengths=%d sink=%d fp8=%d sms=%d threads=%d seed=%llu",
             (long long)b, s_q, h_q, h_kv, page, topk, lengths, etopk, epage, elengths, sink,
             kv_fp8, num_sms, threads, (unsigned long long)seed);
    sp_problem p;
    sp_make(&p, b, s_q, h_q, h_kv, page, topk, lengths, 0.15, kv_fp8, seed);
    if (etopk > 0)
        sp_add_extra(&p, etopk, epage, elengths, 0.15, seed + 1000);
    if (sink)
        sp_add_sink(&p, seed + 2000);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, sp_parts(&p, num_sms), threads), DINF_STATUS_OK, "[%s] %s", params,
                 dinf_last_error());
    sp_check_reference(&p, params);
    sp_free(&p);
}

/* The attention sink and the extra cache (FlashMLA's 2026 keywords), alone
 * and together, BF16 and FP8, odd page sizes for either cache, h_kv 2,
 * split plans (many SM parts) and threads. */
Test(mla_sparse, extras_match_the_float64_reference) {
    uint64_t seed = 9100;
    point_ex(3, 2, 16, 1, 64, 100, 1, 70, 5, 1, 1, 0, 132, 0, ++seed);
    point_ex(2, 1, 64, 1, 7, 37, 0, 150, 64, 0, 0, 0, 132, 0, ++seed); /* extra only */
    point_ex(2, 2, 16, 1, 64, 64, 1, 0, 0, 0, 1, 0, 40, 0, ++seed);    /* sink only */
    point_ex(2, 2, 6, 2, 3, 90, 1, 40, 1, 1, 1, 0, 40, 3, ++seed);     /* h_kv 2 */
    point_ex(1, 3, 4, 1, 1, 1, 0, 1, 1, 0, 1, 0, 8, 0, ++seed);        /* one key each */
    point_ex(3, 2, 16, 1, 64, 150, 1, 80, 64, 1, 1, 1, 132, 0, ++seed);
    point_ex(2, 1, 128, 1, 64, 200, 0, 130, 3, 1, 1, 1, 132, 0, ++seed); /* V3.2's heads */
    point_ex(2, 2, 8, 2, 11, 70, 1, 65, 13, 0, 1, 1, 24, 2, ++seed);
    point_ex(2, 2, 16, 1, 64, 128, 0, 70, 5, 1, 1, 1, 132, 0, ++seed); /* whole main blocks */
}

/*
 * A decode with an extra cache equals the decode of one list over one cache
 * holding both (the extra cache's pages after the main cache's, the main
 * list's padding written as -1): the same keys in the same order under the
 * same plan, so the same bits (with a sink too, BF16 and FP8, split plans).
 */
static void extra_vs_joined(int kv_fp8, int32_t num_sms, uint64_t seed) {
    const int32_t page = 5;
    sp_problem p;
    sp_make(&p, 3, 2, 16, 1, page, 90, 1, 0.15, kv_fp8, seed);
    sp_add_extra(&p, 70, page, 1, 0.15, seed + 1);
    sp_add_sink(&p, seed + 2);
    const int32_t parts = sp_parts(&p, num_sms);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    const int64_t rows = p.b * p.s_q * p.h_q, reqs = p.b * p.s_q;
    uint16_t *out_ex = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV));
    float *lse_ex = malloc(sizeof(float) * (size_t)rows);
    memcpy(out_ex, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
    memcpy(lse_ex, p.lse, sizeof(float) * (size_t)rows);

    /* the joined cache: the extra cache's (padded) row stride for both */
    const int64_t es = kv_fp8 ? 1 : 2;
    const int64_t T = p.e_token_stride, main_slots = p.num_blocks * page;
    const int64_t slots = main_slots + p.e_num_blocks * page;
    unsigned char *joined = calloc((size_t)(slots * T), (size_t)es);
    const unsigned char *mc = kv_fp8 ? (const unsigned char *)p.kc8 : (const unsigned char *)p.kc;
    const unsigned char *ec = kv_fp8 ? (const unsigned char *)p.ekc8 : (const unsigned char *)p.ekc;
    for (int64_t sl = 0; sl < main_slots; sl++)
        memcpy(joined + sl * T * es, mc + sl * p.token_stride * es, (size_t)(p.token_stride * es));
    for (int64_t sl = 0; sl < p.e_num_blocks * page; sl++)
        memcpy(joined + (main_slots + sl) * T * es, ec + sl * T * es, (size_t)(T * es));
    const int32_t topk_j = (p.topk + 63) / 64 * 64 + p.etopk;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(reqs * topk_j));
    int32_t *tl = malloc(sizeof(int32_t) * (size_t)p.b);
    for (int64_t b = 0; b < p.b; b++) {
        const int32_t n1 = p.topk_length[b], n2 = p.etopk_length[b], pad = (n1 + 63) / 64 * 64;
        tl[b] = pad + n2;
        for (int32_t t = 0; t < p.s_q; t++) {
            const int64_t r = b * p.s_q + t;
            for (int32_t j = 0; j < topk_j; j++) {
                int32_t v = -1;
                if (j < n1)
                    v = p.indices[r * p.topk + j];
                else if (j >= pad && j < pad + n2) {
                    const int32_t e = p.eindices[r * p.etopk + j - pad];
                    v = e < 0 ? -1 : (int32_t)(main_slots + e);
                }
                idx[r * topk_j + j] = v;
            }
        }
    }
    int32_t *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
    int32_t *splits = malloc(sizeof(int32_t) * (size_t)(reqs + 1));
    cr_assert_eq(dinf_mla_get_sparse_metadata(tl, p.b, p.s_q, topk_j, parts, meta, splits, NULL, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    size_t ws_bytes = 0;
    cr_assert_eq(dinf_mla_workspace_size(reqs, 1, p.h_q, parts, &ws_bytes, NULL), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
    const dinf_mla_sparse_extras sink_only = {.size = sizeof sink_only, .attn_sink = p.sink};
    sp_poison(&p);
    dinf_status st =
        kv_fp8 ? dinf_mla_sparse_decode_with_kvcache_fp8(
                     p.q, p.b, p.s_q, p.h_q, SP_DQK, joined, slots / page, page, p.h_kv, page * T, T,
                     idx, topk_j, tl, SP_DV, meta, parts, splits, p.scale, ws, ws_bytes, p.out,
                     p.lse, &sink_only, NULL)
               : dinf_mla_sparse_decode_with_kvcache(
                     p.q, p.b, p.s_q, p.h_q, SP_DQK, (const uint16_t *)joined, slots / page, page,
                     p.h_kv, page * T, T, idx, topk_j, tl, SP_DV, meta, parts, splits, p.scale, ws,
                     ws_bytes, p.out, p.lse, &sink_only, NULL);
    cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
    for (int64_t i = 0; i < rows * SP_DV; i++)
        cr_assert_eq(p.out[i], out_ex[i], "fp8=%d parts=%d: out[%lld] 0x%04x vs extra 0x%04x",
                     kv_fp8, parts, (long long)i, p.out[i], out_ex[i]);
    cr_assert_arr_eq(p.lse, lse_ex, sizeof(float) * (size_t)rows);
    free(ws);
    free(meta);
    free(splits);
    free(idx);
    free(tl);
    free(joined);
    free(out_ex);
    free(lse_ex);
    sp_free(&p);
}

Test(mla_sparse, extra_cache_equals_one_list_over_a_joined_cache) {
    extra_vs_joined(0, 4, 9201);
    extra_vs_joined(0, 132, 9202); /* split plans */
    extra_vs_joined(1, 132, 9203);
}

/* Extras that add nothing: NULL, all zero, every sink -inf: the plain decode, bit for bit. */
Test(mla_sparse, empty_extras_and_minus_inf_sinks_are_the_plain_decode) {
    sp_problem p;
    sp_make(&p, 3, 2, 16, 1, 64, 150, 1, 0.1, 1, 9301);
    const int32_t parts = sp_parts(&p, 132);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    const int64_t rows = p.b * p.s_q * p.h_q;
    uint16_t *out0 = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV));
    float *lse0 = malloc(sizeof(float) * (size_t)rows);
    memcpy(out0, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
    memcpy(lse0, p.lse, sizeof(float) * (size_t)rows);
    p.sink = malloc(sizeof(float) * (size_t)p.h_q);
    for (int32_t h = 0; h < p.h_q; h++)
        p.sink[h] = -INFINITY;
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_arr_eq(out0, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
    cr_assert_arr_eq(lse0, p.lse, sizeof(float) * (size_t)rows);
    /* all-zero extras through the raw call */
    int32_t *meta = malloc(sizeof(int32_t) * 8 * (size_t)parts);
    int32_t splits[7];
    const dinf_mla_sparse_extras zero = DINF_MLA_SPARSE_EXTRAS_INIT;
    cr_assert_eq(dinf_mla_get_sparse_metadata(p.topk_length, p.b, p.s_q, p.topk, parts, meta, splits,
                                              &zero, NULL),
                 DINF_STATUS_OK);
    size_t ws_bytes = 0;
    cr_assert_eq(dinf_mla_workspace_size(p.b * p.s_q, 1, p.h_q, parts, &ws_bytes, NULL), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
    sp_poison(&p);
    cr_assert_eq(dinf_mla_sparse_decode_with_kvcache_fp8(
                     p.q, p.b, p.s_q, p.h_q, SP_DQK, p.kc8, p.num_blocks, p.page, p.h_kv,
                     p.block_stride, p.token_stride, p.indices, p.topk, p.topk_length, SP_DV, meta,
                     parts, splits, p.scale, ws, ws_bytes, p.out, p.lse, &zero, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_arr_eq(out0, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
    cr_assert_arr_eq(lse0, p.lse, sizeof(float) * (size_t)rows);
    free(ws);
    free(meta);
    free(out0);
    free(lse0);
    sp_free(&p);
}

/* A sink never changes lse, and no valid slot in either list is out 0 and lse +inf. */
Test(mla_sparse, sink_leaves_lse_and_empty_positions_alone) {
    sp_problem p;
    sp_make(&p, 2, 2, 16, 1, 64, 100, 1, 0.1, 0, 9401);
    sp_add_extra(&p, 50, 7, 1, 0.1, 9402);
    const int32_t parts = sp_parts(&p, 132);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    const int64_t rows = p.b * p.s_q * p.h_q;
    float *lse0 = malloc(sizeof(float) * (size_t)rows);
    memcpy(lse0, p.lse, sizeof(float) * (size_t)rows);
    sp_add_sink(&p, 9403);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_arr_eq(lse0, p.lse, sizeof(float) * (size_t)rows);
    /* head 1's sink is +inf: its out is 0 everywhere (either sign) */
    for (int64_t r = 0; r < p.b * p.s_q; r++)
        for (int d = 0; d < SP_DV; d++)
            cr_assert_eq(dinf__f32_from_bf16(p.out[(r * p.h_q + 1) * SP_DV + d]), 0.0f);
    free(lse0);
    sp_free(&p);
    /* every slot of both lists skipped */
    sp_make(&p, 2, 2, 16, 1, 64, 70, 0, 1.0, 0, 9404);
    sp_add_extra(&p, 30, 3, 0, 1.0, 9405);
    sp_add_sink(&p, 9406);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, 5, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    for (int64_t i = 0; i < p.b * p.s_q * p.h_q * SP_DV; i++)
        cr_assert_eq(p.out[i], 0, "out[%lld] = 0x%04x", (long long)i, p.out[i]);
    for (int64_t i = 0; i < p.b * p.s_q * p.h_q; i++)
        cr_assert(isinf(p.lse[i]) && p.lse[i] > 0, "lse[%lld] = %g", (long long)i, p.lse[i]);
    sp_free(&p);
}

/* The plan with an extra cache is the dense plan of ceil(n1 / 64) * 64 + n2. */
Test(mla_sparse, metadata_with_an_extra_cache) {
    uint64_t s = 9501;
    for (int it = 0; it < 40; it++) {
        const int64_t b = 1 + (int64_t)(sp_next(&s) % 9);
        const int32_t s_q = 1 + (int32_t)(sp_next(&s) % 3);
        const int32_t topk = 1 + (int32_t)(sp_next(&s) % 2000);
        const int32_t etopk = 1 + (int32_t)(sp_next(&s) % 700);
        const int32_t parts = 1 + (int32_t)(sp_next(&s) % 70);
        int32_t tl[9], etl[9], lens[27];
        for (int64_t i = 0; i < b; i++) {
            tl[i] = (int32_t)(sp_next(&s) % (uint64_t)(topk + 1));
            etl[i] = (int32_t)(sp_next(&s) % (uint64_t)(etopk + 1));
        }
        const int with_len = it % 2, with_elen = it % 3 != 0;
        for (int64_t r = 0; r < b * s_q; r++) {
            const int32_t n1 = with_len ? tl[r / s_q] : topk;
            lens[r] = (n1 + 63) / 64 * 64 + (with_elen ? etl[r / s_q] : etopk);
        }
        const dinf_mla_sparse_extras ex = {.size = sizeof ex,
                                           .extra_topk = etopk,
                                           .extra_topk_length = with_elen ? etl : NULL};
        int32_t *md = malloc(sizeof(int32_t) * 8 * (size_t)parts), *ms = malloc(sizeof(int32_t) * 8 * (size_t)parts);
        int32_t sd[28], ss[28];
        cr_assert_eq(dinf_mla_get_metadata(lens, b * s_q, parts, md, sd, NULL), DINF_STATUS_OK);
        cr_assert_eq(dinf_mla_get_sparse_metadata(with_len ? tl : NULL, b, s_q, topk, parts, ms, ss,
                                                  &ex, NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_arr_eq(md, ms, sizeof(int32_t) * 8 * (size_t)parts, "it %d", it);
        cr_assert_arr_eq(sd, ss, sizeof(int32_t) * (size_t)(b * s_q + 1), "it %d", it);
        free(md);
        free(ms);
    }
    /* rejections of the extras the plan reads */
    int32_t meta[8 * 4], splits[16];
    const int32_t etl_bad[3] = {5, 31, 0};
    dinf_mla_sparse_extras ex = {.size = sizeof ex, .extra_topk = 30, .extra_topk_length = etl_bad};
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, splits, &ex, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "extras->extra_topk_length[1]=31 must be in [0, extra_topk=30]");
    ex.extra_topk = -1;
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, splits, &ex, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "extras->extra_topk=-1");
    ex.extra_topk = DINF_MLA_MAX_TOPK + 1;
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, splits, &ex, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "extras->extra_topk=1048577");
    ex.extra_topk = 0; /* lengths without an extra cache */
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, splits, &ex, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "extras->extra_topk=0 (no extra cache) but "
                                              "extra_topk_length=");
    /* the struct's size */
    ex = (dinf_mla_sparse_extras){.size = 0};
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, splits, &ex, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "extras->size=0 is smaller than");
    ex.size = sizeof ex - 8;
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, splits, &ex, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "start from DINF_MLA_SPARSE_EXTRAS_INIT");
    ex.size = sizeof ex + 64; /* a later version's larger struct: its known fields are read */
    cr_assert_eq(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, splits, &ex, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    int32_t etl_ok[3] = {1, 2, 3};
    ex = (dinf_mla_sparse_extras){.size = sizeof ex, .extra_topk = 30, .extra_topk_length = etl_ok};
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, etl_ok, &ex, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "overlap");
    ex.extra_topk_length = (const int32_t *)((const char *)etl_ok + 2);
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, splits, &ex, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "extras->extra_topk_length=");
    /* the decode's own pointers are not the plan's business */
    ex = (dinf_mla_sparse_extras){.size = sizeof ex, .extra_topk = 30};
    cr_assert_eq(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, splits, &ex, NULL), DINF_STATUS_OK,
                 "%s", dinf_last_error());
}

/* Every extras input the decode rejects, with its message. */
Test(mla_sparse, every_rejected_extra) {
    sp_problem p;
    sp_make(&p, 2, 2, 16, 1, 64, 100, 1, 0.1, 0, 9601);
    sp_add_extra(&p, 60, 7, 1, 0.1, 9602);
    sp_add_sink(&p, 9603);
    const int32_t parts = 3;
    sp_args a = sp_host_args(&p);
    dinf_mla_sparse_extras exs;
    int32_t meta[8 * 3], splits[5];
    cr_assert_eq(dinf_mla_get_sparse_metadata(p.topk_length, p.b, p.s_q, p.topk, parts, meta, splits,
                                              sp_extras(&p, &a, &exs), NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    size_t ws_bytes = 0;
    cr_assert_eq(dinf_mla_workspace_size(p.b * p.s_q, 1, p.h_q, parts, &ws_bytes, NULL), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
    a.meta = meta, a.splits = splits, a.ws = ws, a.ws_bytes = ws_bytes;
    cr_assert_eq(sp_decode(&p, &a, parts, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
    sp_problem bad = p;
    sp_args ba = a;
    /* an extra slot past the extra cache, inside its length */
    const int32_t n0 = p.etopk_length[0] > 0 ? p.etopk_length[0] : 1;
    p.etopk_length[0] = n0;
    int32_t meta2[8 * 3], splits2[5];
    cr_assert_eq(dinf_mla_get_sparse_metadata(p.topk_length, p.b, p.s_q, p.topk, parts, meta2, splits2,
                                              sp_extras(&p, &a, &exs), NULL),
                 DINF_STATUS_OK);
    ba.meta = meta2, ba.splits = splits2;
    const int32_t keep = p.eindices[n0 - 1];
    p.eindices[n0 - 1] = (int32_t)(p.e_num_blocks * p.epage);
    char want[128];
    snprintf(want, sizeof want, "extras->extra_indices[0][0][%d]=%d is outside the extra cache",
             n0 - 1, (int)(p.e_num_blocks * p.epage));
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, want);
    p.eindices[n0 - 1] = keep;
    cr_assert_eq(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
    /* the plan made without the extra cache */
    int32_t meta3[8 * 3], splits3[5];
    cr_assert_eq(dinf_mla_get_sparse_metadata(p.topk_length, p.b, p.s_q, p.topk, parts, meta3, splits3,
                                              NULL, NULL),
                 DINF_STATUS_OK);
    ba.meta = meta3, ba.splits = splits3;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "topk_length, topk, extras, batch, seq_len_q");
    ba = a;
    ba.meta = meta2, ba.splits = splits2;
    a = ba;
    /* extra lengths out of range */
    int32_t etl_bad[2] = {p.etopk_length[0], p.etopk + 1};
    ba.etopk_length = etl_bad;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_topk_length[1]=61 must be in [0, extra_topk=60]");
    ba = a;
    /* missing and inconsistent pointers */
    ba.ekc = NULL;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_topk=60 needs extra_k_cache=");
    ba = a;
    ba.eindices = NULL;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "needs extra_k_cache=");
    ba = a;
    /* pointers without an extra cache */
    {
        dinf_mla_sparse_extras ex = {.size = sizeof ex, .extra_k_cache = p.ekc};
        expect_fail(dinf_mla_sparse_decode_with_kvcache(
                        p.q, p.b, p.s_q, p.h_q, SP_DQK, p.kc, p.num_blocks, p.page, p.h_kv,
                        p.block_stride, p.token_stride, p.indices, p.topk, p.topk_length, SP_DV,
                        meta, parts, splits, p.scale, ws, ws_bytes, p.out, p.lse, &ex, NULL),
                    DINF_STATUS_INVALID_ARGUMENT, "extras->extra_topk=0 (no extra cache)");
        ex = (dinf_mla_sparse_extras){.attn_sink = p.sink}; /* size 0: not initialised */
        expect_fail(dinf_mla_sparse_decode_with_kvcache(
                        p.q, p.b, p.s_q, p.h_q, SP_DQK, p.kc, p.num_blocks, p.page, p.h_kv,
                        p.block_stride, p.token_stride, p.indices, p.topk, p.topk_length, SP_DV,
                        meta, parts, splits, p.scale, ws, ws_bytes, p.out, p.lse, &ex, NULL),
                    DINF_STATUS_INVALID_ARGUMENT, "extras->size=0 is smaller than");
    }
    bad = p;
    /* the extra cache's geometry */
    bad.epage = 0;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_page_block_size=0 must be in [1, 65536]");
    bad.epage = DINF_MLA_MAX_SPARSE_PAGE + 1;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_page_block_size=65537");
    bad = p;
    bad.e_num_blocks = 0;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_num_blocks=0 must be >= 1");
    bad = p;
    bad.e_token_stride = SP_DQK - 8;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_kv_token_stride=568");
    bad.e_token_stride = p.e_token_stride + 4; /* not a multiple of 8 elements */
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_kv_token_stride=");
    bad = p;
    bad.e_block_stride = p.e_block_stride - 8;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_kv_block_stride=");
    bad = p;
    bad.e_num_blocks = INT64_MAX / 4;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "the sizes overflow int64 (extras->extra_num_blocks=");
    bad = p;
    /* alignment */
    ba.sink = (const float *)((const char *)p.sink + 2);
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->attn_sink=");
    ba = a;
    ba.ekc = (const uint16_t *)p.ekc + 1;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_k_cache=");
    ba = a;
    ba.eindices = (const int32_t *)((const char *)p.eindices + 2);
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_indices=");
    ba = a;
    /* outputs overlapping an extra input */
    ba.lse = (float *)p.eindices;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "overlap");
    ba = a;
    ba.out = (uint16_t *)p.ekc;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "overlap");
    ba = a;
    ba.lse = p.sink;
    expect_fail(sp_decode(&p, &ba, parts, NULL), DINF_STATUS_INVALID_ARGUMENT, "overlap");
    ba = a;
    free(ws);
    sp_free(&p);
}

/* ---------------------------------------------------------------- MODEL1 -- */

/* The MODEL1 cache (head_dim 512): against float64 over the decoded rows,
 * pages of 64 and odd sizes (pages padded to 576-byte multiples), V3.2-like
 * heads, topk_length, split plans, with the extras (a MODEL1 extra cache
 * with its own page size, the sink). */
Test(mla_sparse, model1_matches_the_float64_reference) {
    uint64_t seed = 9700;
    point(3, 2, 16, 1, 64, 100, 1, 0.15, 2, 132, 0, ++seed);
    point(2, 1, 64, 1, 61, 200, 0, 0.1, 2, 132, 0, ++seed);
    point(2, 2, 128, 1, 1, 70, 1, 0.2, 2, 132, 3, ++seed);
    point(1, 3, 8, 1, 7, 1, 0, 0.0, 2, 4, 0, ++seed);
    point_ex(2, 2, 64, 1, 64, 150, 1, 90, 53, 1, 1, 2, 132, 0, ++seed);
    point_ex(3, 1, 16, 1, 2, 64, 0, 65, 69, 0, 1, 2, 24, 2, ++seed);
}

/*
 * The MODEL1 decode is the BF16 sparse decode of its decoded rows in the
 * 576-wide layout ([448 latent | 64 RoPE | 64 zeros]) with q padded by 64
 * zeros, bit for bit: the same keys, order, plan and arithmetic (the zero
 * columns add exact zeros; V is the first 512 columns either way).
 */
Test(mla_sparse, model1_equals_bf16_of_the_decoded_rows) {
    sp_problem p;
    sp_make(&p, 3, 2, 16, 1, 13, 120, 1, 0.2, 2, 9801);
    sp_add_extra(&p, 70, 5, 1, 0.1, 9802);
    sp_add_sink(&p, 9803);
    const int32_t parts = sp_parts(&p, 132);
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    const int64_t rows = p.b * p.s_q * p.h_q;
    uint16_t *out8 = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DV));
    float *lse8 = malloc(sizeof(float) * (size_t)rows);
    memcpy(out8, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
    memcpy(lse8, p.lse, sizeof(float) * (size_t)rows);
    /* q padded to 576, the decoded caches as BF16 */
    uint16_t *q576 = malloc(sizeof(uint16_t) * (size_t)(rows * SP_DQK));
    for (int64_t r = 0; r < rows; r++)
        for (int d = 0; d < SP_DQK; d++)
            q576[r * SP_DQK + d] = d < SP_M1_DIM ? p.q[r * SP_M1_DIM + d] : 0;
    free(p.q);
    p.q = q576;
    p.kv_fp8 = 0;
    p.token_stride = SP_DQK;
    p.block_stride = (int64_t)p.page * SP_DQK;
    p.e_token_stride = p.ekc_ld;
    p.e_block_stride = (int64_t)p.epage * p.ekc_ld;
    sp_poison(&p);
    cr_assert_eq(sp_run_cpu(&p, parts, 0), DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_arr_eq(out8, p.out, sizeof(uint16_t) * (size_t)(rows * SP_DV));
    cr_assert_arr_eq(lse8, p.lse, sizeof(float) * (size_t)rows);
    free(out8);
    free(lse8);
    sp_free(&p);
}

/* The MODEL1 quantizer's bytes against the format's definition written out
 * here: per 64 channels e = log2 of the smallest power of two >=
 * max(amax / 448, 1e-4) plus 127, codes e4m3(x / 2^(e-127)) (nearest even),
 * RoPE copied, the pad byte 0; rows at page * stride + row * 576, scales at
 * + page_size * 576 + row * 8; slot -1 and untouched slots keep their bytes;
 * zero, tiny and huge rows. */
Test(mla_sparse, model1_quantizer_writes_the_format) {
    const int32_t page = 5, num_blocks = 4;
    const int64_t pb = sp_m1_page_bytes(page), n = 9;
    uint64_t s = 9901;
    uint16_t *kv = aligned_alloc(64, (sizeof(uint16_t) * (size_t)(n * 520) + 63) / 64 * 64);
    for (int64_t i = 0; i < n * 520; i++)
        kv[i] = sp_value(&s);
    for (int d = 0; d < 64; d++) {
        kv[0 * 520 + d] = 0;                                  /* token 0: a zero group */
        kv[1 * 520 + 64 + d] = dinf__bf16_from_f32(1e-6f);    /* token 1: a tiny group */
        kv[2 * 520 + 128 + d] = dinf__bf16_from_f32(3.0e4f);  /* token 2: a huge group */
    }
    const int64_t slots[9] = {3, 19, 0, -1, 7, 12, 4, 15, 9};
    uint8_t *cache = aligned_alloc(64, (size_t)((num_blocks * pb + 63) / 64 * 64));
    memset(cache, 0xEE, (size_t)(num_blocks * pb));
    cr_assert_eq(dinf_mla_quantize_kvcache_model1(kv, n, 520, slots, cache, num_blocks, page, pb,
                                                  NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    int written[20] = {0};
    for (int64_t i = 0; i < n; i++) {
        if (slots[i] < 0)
            continue;
        written[slots[i]] = 1;
        const int64_t pg = slots[i] / page, row = slots[i] % page;
        const uint8_t *data = cache + pg * pb + row * SP_M1_ROW;
        const uint8_t *sc = cache + pg * pb + page * SP_M1_ROW + row * 8;
        const uint16_t *x = kv + i * 520;
        for (int g = 0; g < 7; g++) {
            double amax = 0;
            for (int d = 0; d < 64; d++)
                amax = fmax(amax, fabs((double)dinf__f32_from_bf16(x[g * 64 + d])));
            const double want_scale = exp2(ceil(log2(fmax((double)(float)(amax / 448.0), 1e-4))));
            cr_assert_eq(sc[g], (uint8_t)(log2(want_scale) + 127), "token %lld group %d: e=%d",
                         (long long)i, g, sc[g]);
            for (int d = 0; d < 64; d++) {
                const float v = dinf__f32_from_bf16(x[g * 64 + d]) / (float)want_scale;
                cr_assert_eq(data[g * 64 + d],
                             dinf__e4m3_from_f32(v > 448 ? 448 : v < -448 ? -448 : v),
                             "token %lld channel %d", (long long)i, g * 64 + d);
            }
        }
        cr_assert_eq(sc[7], 0, "the pad byte");
        cr_assert_eq(memcmp(data + 448, x + 448, 128), 0, "RoPE of token %lld", (long long)i);
    }
    for (int sl = 0; sl < num_blocks * page; sl++) /* untouched slots keep their bytes */
        if (!written[sl]) {
            const uint8_t *data = cache + (sl / page) * pb + (sl % page) * SP_M1_ROW;
            for (int k = 0; k < SP_M1_ROW; k++)
                cr_assert_eq(data[k], 0xEE, "slot %d byte %d", sl, k);
        }
    /* rejects */
    expect_fail(dinf_mla_quantize_kvcache_model1(kv, n, 520, slots, cache, num_blocks, page,
                                                 page * SP_M1_TOKEN - 16, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "page_block_size * 584");
    expect_fail(dinf_mla_quantize_kvcache_model1(kv, n, 520, slots, cache, num_blocks, page, pb + 8,
                                                 NULL),
                DINF_STATUS_INVALID_ARGUMENT, "a multiple of 16");
    expect_fail(dinf_mla_quantize_kvcache_model1(kv, n, 500, slots, cache, num_blocks, page, pb,
                                                 NULL),
                DINF_STATUS_INVALID_ARGUMENT, "kv_token_ld=500");
    expect_fail(dinf_mla_quantize_kvcache_model1(kv, n, 520, slots, cache, num_blocks, 0, pb, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "page_block_size=0");
    const int64_t bad_slots[2] = {3, 20};
    expect_fail(dinf_mla_quantize_kvcache_model1(kv, 2, 520, bad_slots, cache, num_blocks, page, pb,
                                                 NULL),
                DINF_STATUS_INVALID_ARGUMENT, "slot_mapping[1]=20 is outside");
    expect_fail(dinf_mla_quantize_kvcache_model1(kv, n, 520, slots, (uint8_t *)kv, num_blocks, page,
                                                 pb, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "overlap");
    free(kv);
    free(cache);
}

/* Unpadded MODEL1 pages (stride page * 584 rounded up to 16 only: even pages
 * end where the next begins, the last row's scales end the cache). */
Test(mla_sparse, model1_unpadded_pages) {
    sp_m1_tight = 1;
    point(3, 2, 16, 1, 64, 100, 1, 0.15, 2, 132, 0, 9760);
    point(2, 2, 16, 1, 7, 60, 0, 0.1, 2, 40, 0, 9761);
    point_ex(2, 2, 16, 1, 2, 64, 1, 40, 4, 1, 1, 2, 132, 0, 9762);
    sp_m1_tight = 0;
}

/* The MODEL1 quantizer on groups upstream's rule cannot scale: a NaN value
 * makes the group's scale byte 255 (NaN) and every code NaN; an infinite one
 * 255 too, codes 0 (signed) for the finite values and NaN for the infinite
 * one (x / inf); the decode then gives NaN for positions listing the row. */
Test(mla_sparse, model1_quantizer_nan_and_inf_groups) {
    const int32_t page = 4;
    const int64_t pb = sp_m1_page_bytes(page);
    uint16_t *kv = aligned_alloc(64, sizeof(uint16_t) * 2 * SP_M1_DIM);
    uint64_t s = 9771;
    for (int i = 0; i < 2 * SP_M1_DIM; i++)
        kv[i] = sp_value(&s);
    kv[70] = 0x7FC0;                                  /* token 0, group 1: NaN */
    kv[SP_M1_DIM + 200] = dinf__bf16_from_f32(-INFINITY); /* token 1, group 3: -inf */
    const int64_t slots[2] = {1, 2};
    uint8_t *cache = aligned_alloc(64, (size_t)((pb + 63) / 64 * 64));
    memset(cache, 0, (size_t)pb);
    cr_assert_eq(dinf_mla_quantize_kvcache_model1(kv, 2, SP_M1_DIM, slots, cache, 1, page, pb, NULL),
                 DINF_STATUS_OK, "%s", dinf_last_error());
    const uint8_t *d0 = cache + 1 * SP_M1_ROW, *s0 = cache + page * SP_M1_ROW + 1 * 8;
    const uint8_t *d1 = cache + 2 * SP_M1_ROW, *s1 = cache + page * SP_M1_ROW + 2 * 8;
    cr_assert_eq(s0[1], 255);
    for (int d = 64; d < 128; d++)
        cr_assert_eq(d0[d] & 0x7F, 0x7F, "token 0 channel %d: code 0x%02x, not NaN", d, d0[d]);
    cr_assert_neq(s0[0], 255, "the other groups keep their scales");
    cr_assert_eq(s1[3], 255);
    for (int d = 192; d < 256; d++) {
        const float x = dinf__f32_from_bf16(kv[SP_M1_DIM + d]);
        if (isinf(x))
            cr_assert_eq(d1[d] & 0x7F, 0x7F, "the infinite value: NaN");
        else
            cr_assert_eq(d1[d], x < 0 ? 0x80 : 0x00, "channel %d: 0x%02x for %g", d, d1[d], x);
    }
    free(kv);
    free(cache);
}

/* The MODEL1 cache's own rejections, and head_dim 512 elsewhere. */
Test(mla_sparse, model1_rejects) {
    sp_problem p;
    sp_make(&p, 2, 2, 16, 1, 7, 60, 1, 0.1, 2, 9951);
    const int32_t parts = 3;
    sp_args a = sp_host_args(&p);
    int32_t meta[8 * 3], splits[5];
    cr_assert_eq(dinf_mla_get_sparse_metadata(p.topk_length, p.b, p.s_q, p.topk, parts, meta, splits,
                                              NULL, NULL),
                 DINF_STATUS_OK);
    size_t ws_bytes = 0;
    cr_assert_eq(dinf_mla_workspace_size(p.b * p.s_q, 1, p.h_q, parts, &ws_bytes, NULL), DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
    a.meta = meta, a.splits = splits, a.ws = ws, a.ws_bytes = ws_bytes;
    cr_assert_eq(sp_decode(&p, &a, parts, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
    sp_problem bad = p;
    bad.token_stride = SP_ENTRY;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "kv_token_stride=656: the MODEL1 cache has 584 bytes per token");
    bad = p;
    bad.block_stride = (int64_t)p.page * SP_M1_TOKEN - 8;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "page_block_size * 584");
    bad.block_stride = p.block_stride + 8;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "a multiple of 16");
    bad = p;
    bad.h_kv = 2, bad.h_q = 16;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "num_heads_kv=2: the MODEL1 cache holds one KV head");
    /* head_dim 512 on the BF16 sparse decode and on the dense decodes */
    expect_fail(dinf_mla_sparse_decode_with_kvcache(p.q, p.b, p.s_q, p.h_q, 512, p.kc, p.num_blocks,
                                                    p.page, 1, (int64_t)p.page * SP_DQK, SP_DQK,
                                                    p.indices, p.topk, p.topk_length, SP_DV, meta,
                                                    parts, splits, p.scale, ws, ws_bytes, p.out,
                                                    p.lse, NULL, NULL),
                DINF_STATUS_UNSUPPORTED, "head_dim=512 (the MODEL1 cache) is supported by the "
                                         "sparse FP8 decode only");
    int32_t lens[2] = {5, 6}, bt[2] = {0, 1}, dmeta[8 * 3], dsplits[3];
    cr_assert_eq(dinf_mla_get_metadata(lens, 2, parts, dmeta, dsplits, NULL), DINF_STATUS_OK);
    expect_fail(dinf_mla_decode_with_kvcache_fp8(p.q, 2, 1, 16, 512, p.kc8, p.num_blocks, 16, 1,
                                                 16 * SP_ENTRY, SP_ENTRY, bt, 1, lens, SP_DV, dmeta,
                                                 parts, dsplits, p.scale, 0, ws, ws_bytes, p.out,
                                                 p.lse, NULL),
                DINF_STATUS_UNSUPPORTED, "head_dim=512 (the MODEL1 cache)");
    expect_fail(dinf_mla_sparse_decode_with_kvcache_fp8(p.q, p.b, p.s_q, p.h_q, 448, p.kc8,
                                                        p.num_blocks, p.page, 1, p.block_stride,
                                                        p.token_stride, p.indices, p.topk,
                                                        p.topk_length, SP_DV, meta, parts, splits,
                                                        p.scale, ws, ws_bytes, p.out, p.lse, NULL,
                                                        NULL),
                DINF_STATUS_UNSUPPORTED, "head_dim=448 is not supported (576, or 512 for the "
                                         "MODEL1 cache)");
    /* an extra cache in the V3.2 layout next to a MODEL1 main cache */
    sp_add_extra(&p, 30, 3, 0, 0.1, 9952);
    int32_t meta2[8 * 3], splits2[5];
    dinf_mla_sparse_extras ex;
    a = sp_host_args(&p);
    cr_assert_eq(dinf_mla_get_sparse_metadata(p.topk_length, p.b, p.s_q, p.topk, parts, meta2,
                                              splits2, sp_extras(&p, &a, &ex), NULL),
                 DINF_STATUS_OK);
    a.meta = meta2, a.splits = splits2, a.ws = ws, a.ws_bytes = ws_bytes;
    cr_assert_eq(sp_decode(&p, &a, parts, NULL), DINF_STATUS_OK, "%s", dinf_last_error());
    bad = p;
    bad.e_token_stride = SP_ENTRY;
    expect_fail(sp_decode(&bad, &a, parts, NULL), DINF_STATUS_INVALID_ARGUMENT,
                "extras->extra_kv_token_stride=656: the MODEL1 cache has 584 bytes per token");
    free(ws);
    sp_free(&p);
}
