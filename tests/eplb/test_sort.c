/* The sort replica orders ties exactly as libstdc++'s std::sort does. */
#include "eplb/eplb_internal.h"
#include "eplb_test_util.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

void oracle_std_sort_desc(const float *key, int32_t n, int32_t *order);

static void expect_same_order(const float *key, int32_t n, const char *what, uint64_t seed) {
    int32_t *got = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    int32_t *want = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    dinf__sort_pair *scratch = malloc((size_t)(n ? n : 1) * sizeof(dinf__sort_pair));
    dinf__sort_desc_indices(key, n, got, scratch);
    oracle_std_sort_desc(key, n, want);
    for (int32_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "%s n=%d seed=%llu: position %d holds index %d, std::sort %d",
                     what, n, (unsigned long long)seed, i, got[i], want[i]);
    free(got);
    free(want);
    free(scratch);
}

Test(eplb_sort, random_tie_heavy_rows_match_std_sort) {
    uint64_t seed = 0x5eed1234;
    uint64_t state = seed;
    float key[400];
    for (int trial = 0; trial < 3000; trial++) {
        int32_t n = (int32_t)(eplb_rand(&state) % 400);
        int distinct = 1 + (int)(eplb_rand(&state) % 8);
        for (int32_t i = 0; i < n; i++)
            key[i] = (float)(eplb_rand(&state) % (uint64_t)distinct);
        expect_same_order(key, n, "ties", seed);
    }
}

Test(eplb_sort, random_floats_and_nans_match_std_sort) {
    uint64_t seed = 77;
    uint64_t state = seed;
    float key[300];
    for (int trial = 0; trial < 1000; trial++) {
        int32_t n = 1 + (int32_t)(eplb_rand(&state) % 300);
        for (int32_t i = 0; i < n; i++) {
            uint64_t r = eplb_rand(&state);
            key[i] = (r % 13 == 0) ? NAN : (float)(r % 100000) / 7.0f;
        }
        expect_same_order(key, n, "floats+nan", seed);
    }
}

/* Inputs that drive introsort deep (sorted, reversed, organ pipe, sawtooth,
 * all equal): the depth limit and heapsort fallback must match too. */
Test(eplb_sort, adversarial_patterns_match_std_sort) {
    static float key[5000];
    for (int pattern = 0; pattern < 6; pattern++) {
        for (int32_t n = 0; n <= 5000; n += (n < 64 ? 1 : 331)) {
            for (int32_t i = 0; i < n; i++) {
                switch (pattern) {
                case 0: key[i] = (float)i; break;
                case 1: key[i] = (float)(n - i); break;
                case 2: key[i] = (float)(i < n / 2 ? i : n - i); break;
                case 3: key[i] = (float)(i % 17); break;
                case 4: key[i] = 3.0f; break;
                default: key[i] = (float)((i * 7919) % 101 < 50 ? i % 5 : n - i); break;
                }
            }
            expect_same_order(key, n, "pattern", (uint64_t)pattern);
        }
    }
}

void oracle_antiqsort_keys(int32_t n, float *key);

/* Adversarial input (McIlroy's killer, generated against std::sort) drives
 * introsort to its depth limit, so the heapsort fallback is compared too. */
Test(eplb_sort, quicksort_killer_input_matches_std_sort) {
    static float ascending[4096], key[4096];
    for (int32_t n = 17; n <= 4096; n = n * 2 + 1) {
        oracle_antiqsort_keys(n, ascending);
        for (int32_t i = 0; i < n; i++)
            key[i] = -ascending[i]; /* descending comparator: same comparisons */
        expect_same_order(key, n, "antiqsort", 0);
    }
}
