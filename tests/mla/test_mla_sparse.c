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
    cr_assert_eq(dinf_mla_get_sparse_metadata(tl, b, s_q, topk, parts, meta_s, splits_s, NULL),
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
                                                     ws_s, out_s, lse_s, NULL);
    else
        st = dinf_mla_sparse_decode_with_kvcache(q, b, s_q, h_q, SP_DQK, cache, num_blocks, page,
                                                 h_kv, (int64_t)page * e, e, idx, topk, tl, SP_DV,
                                                 meta_s, parts, splits_s, scale, wsp, ws_s, out_s,
                                                 lse_s, NULL);
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
        cr_assert_eq(dinf_mla_get_sparse_metadata(with_len ? tl : NULL, b, s_q, topk, parts, ms, ss,
                                                  NULL),
                     DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_arr_eq(md, ms, sizeof(int32_t) * 8 * (size_t)parts, "it %d", it);
        cr_assert_arr_eq(sd, ss, sizeof(int32_t) * (size_t)(b * s_q + 1), "it %d", it);
        free(md);
        free(ms);
    }
    /* batch 0: every part empty, num_splits = {0} */
    int32_t meta[16], splits[1] = {99};
    cr_assert_eq(dinf_mla_get_sparse_metadata(NULL, 0, 2, 64, 2, meta, splits, NULL), DINF_STATUS_OK);
    cr_assert(splits[0] == 0 && meta[0] == -1 && meta[8] == -1);
}

static void expect_fail(dinf_status st, dinf_status want, const char *needle) {
    cr_assert_eq(st, want, "status %d, wanted %d (%s)", st, want, dinf_last_error());
    cr_assert(strstr(dinf_last_error(), needle), "message '%s' lacks '%s'", dinf_last_error(), needle);
}

Test(mla_sparse, metadata_rejects) {
    int32_t meta[8 * 4], splits[16];
    const int32_t tl[3] = {5, 70, 64};
    expect_fail(dinf_mla_get_sparse_metadata(tl, 3, 2, 64, 4, meta, splits, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "topk_length[1]=70 must be in [0, topk=64]");
    const int32_t neg[1] = {-1};
    expect_fail(dinf_mla_get_sparse_metadata(neg, 1, 1, 64, 4, meta, splits, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "topk_length[0]=-1");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 0, 4, meta, splits, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "topk=0 must be in [1, 1048576]");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, DINF_MLA_MAX_TOPK + 1, 4, meta, splits, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "topk=1048577");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 0, 64, 4, meta, splits, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "seq_len_q=0");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, DINF_MLA_MAX_BATCH, 2, 64, 4, meta, splits, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "batch * seq_len_q <= 1048576");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, -1, 1, 64, 4, meta, splits, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "batch=-1");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 0, meta, splits, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "num_sm_parts=0");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, NULL, splits, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "tile_scheduler_metadata is NULL");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, NULL, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "num_splits is NULL");
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, (int32_t *)((char *)splits + 2), NULL),
                DINF_STATUS_INVALID_ARGUMENT, "4-byte aligned");
    int32_t tl_ok[3] = {5, 60, 64};
    expect_fail(dinf_mla_get_sparse_metadata(tl_ok, 3, 2, 64, 4, meta, tl_ok, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "overlap");
    /* num_splits and the metadata overlap */
    expect_fail(dinf_mla_get_sparse_metadata(NULL, 3, 2, 64, 4, meta, meta + 30, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "overlap");
}

/* --------------------------------------------------------------- rejects -- */

Test(mla_sparse, every_rejected_input) {
    sp_problem p;
    sp_make(&p, 2, 2, 16, 1, 64, 100, 1, 0.1, 0, 7801);
    const int32_t parts = 3;
    int32_t meta[8 * 3], splits[5];
    cr_assert_eq(dinf_mla_get_sparse_metadata(p.topk_length, p.b, p.s_q, p.topk, parts, meta, splits,
                                              NULL),
                 DINF_STATUS_OK);
    size_t ws_bytes = 0;
    cr_assert_eq(dinf_mla_workspace_size(p.b * p.s_q, 1, p.h_q, parts, &ws_bytes, NULL),
                 DINF_STATUS_OK);
    void *ws = aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
    sp_args a = {p.q, p.kc, p.indices, p.topk_length, meta, splits, ws, ws_bytes, p.out, p.lse};
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
    cr_assert_eq(dinf_mla_get_sparse_metadata(NULL, p.b, p.s_q, p.topk, parts, meta2, splits2, NULL),
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
                                                    p.lse, NULL),
                DINF_STATUS_UNSUPPORTED, "head_dim=512");
    /* a non-finite scale */
    expect_fail(dinf_mla_sparse_decode_with_kvcache(p.q, p.b, p.s_q, p.h_q, SP_DQK, p.kc,
                                                    p.num_blocks, p.page, p.h_kv, p.block_stride,
                                                    p.token_stride, p.indices, p.topk,
                                                    p.topk_length, SP_DV, meta, parts, splits,
                                                    NAN, ws, ws_bytes, p.out, p.lse, NULL),
                DINF_STATUS_INVALID_ARGUMENT, "softmax_scale");
    free(ws);
    sp_free(&p);
}
