/*
 * A replica of libstdc++'s std::sort (GCC's bits/stl_algo.h and
 * bits/stl_heap.h behaviour), specialised to (float key, index) pairs with a
 * descending comparator. A pair is one uint64: the key mapped to an unsigned
 * integer of the same order in the high half, the index in the low half, so
 * that a comparison is one integer compare. Restated from the algorithm's description; the
 * point is to order ties exactly as torch's CPU sort does, which runs
 * std::sort. Each helper names the libstdc++ routine whose behaviour it
 * reproduces.
 */
#include "eplb_internal.h"

#include <math.h>
#include <string.h>

typedef uint64_t pair;

enum { INSERTION_THRESHOLD = 16 }; /* _S_threshold */

/* The comparator: a is ordered before b. */
static inline int before(pair a, pair b) { return (a >> 32) > (b >> 32); }

/* Map a float to a uint32 whose unsigned order is the comparator's: NaN
 * highest (all NaNs equal), then +inf, positive numbers, zeros (both signs
 * equal), negative numbers, -inf. */
static inline uint32_t order_bits(float x) {
    if (isnan(x))
        return UINT32_MAX;
    if (x == 0.0f)
        x = 0.0f;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline void swap_pairs(pair *a, pair *b) {
    pair t = *a;
    *a = *b;
    *b = t;
}

/* __move_median_to_first */
static void median_to_first(pair *result, pair *a, pair *b, pair *c) {
    if (before(*a, *b)) {
        if (before(*b, *c))
            swap_pairs(result, b);
        else if (before(*a, *c))
            swap_pairs(result, c);
        else
            swap_pairs(result, a);
    } else if (before(*a, *c)) {
        swap_pairs(result, a);
    } else if (before(*b, *c)) {
        swap_pairs(result, c);
    } else {
        swap_pairs(result, b);
    }
}

/* __unguarded_partition: Hoare partition around *pivot, no bound checks
 * (the median-of-three guarantees sentinels on both sides). */
static pair *unguarded_partition(pair *first, pair *last, const pair *pivot) {
    for (;;) {
        while (before(*first, *pivot))
            ++first;
        --last;
        while (before(*pivot, *last))
            --last;
        if (!(first < last))
            return first;
        swap_pairs(first, last);
        ++first;
    }
}

/* __adjust_heap followed by __push_heap. */
static void adjust_heap(pair *first, long hole, long len, pair value) {
    const long top = hole;
    long child = hole;
    while (child < (len - 1) / 2) {
        child = 2 * (child + 1);
        if (before(first[child], first[child - 1]))
            child--;
        first[hole] = first[child];
        hole = child;
    }
    if ((len & 1) == 0 && child == (len - 2) / 2) {
        child = 2 * (child + 1);
        first[hole] = first[child - 1];
        hole = child - 1;
    }
    long parent = (hole - 1) / 2;
    while (hole > top && before(first[parent], value)) {
        first[hole] = first[parent];
        hole = parent;
        parent = (hole - 1) / 2;
    }
    first[hole] = value;
}

/* __partial_sort(first, last, last): make_heap, then sort_heap. */
static void heap_sort(pair *first, pair *last) {
    long len = last - first;
    if (len >= 2) {
        for (long parent = (len - 2) / 2;; parent--) {
            adjust_heap(first, parent, len, first[parent]);
            if (parent == 0)
                break;
        }
    }
    while (last - first > 1) {
        --last;
        pair value = *last;
        *last = *first;
        adjust_heap(first, 0, last - first, value);
    }
}

/* __introsort_loop */
static void introsort_loop(pair *first, pair *last, long depth_limit) {
    while (last - first > INSERTION_THRESHOLD) {
        if (depth_limit == 0) {
            heap_sort(first, last);
            return;
        }
        --depth_limit;
        pair *mid = first + (last - first) / 2;
        median_to_first(first, first + 1, mid, last - 1);
        pair *cut = unguarded_partition(first + 1, last, first);
        introsort_loop(cut, last, depth_limit);
        last = cut;
    }
}

/* __unguarded_linear_insert */
static void unguarded_linear_insert(pair *last) {
    pair value = *last;
    pair *next = last - 1;
    while (before(value, *next)) {
        *last = *next;
        last = next;
        --next;
    }
    *last = value;
}

/* __insertion_sort */
static void insertion_sort(pair *first, pair *last) {
    if (first == last)
        return;
    for (pair *i = first + 1; i != last; ++i) {
        if (before(*i, *first)) {
            pair value = *i;
            for (pair *j = i; j != first; --j)
                *j = *(j - 1);
            *first = value;
        } else {
            unguarded_linear_insert(i);
        }
    }
}

/* __final_insertion_sort */
static void final_insertion_sort(pair *first, pair *last) {
    if (last - first > INSERTION_THRESHOLD) {
        insertion_sort(first, first + INSERTION_THRESHOLD);
        for (pair *i = first + INSERTION_THRESHOLD; i != last; ++i)
            unguarded_linear_insert(i);
    } else {
        insertion_sort(first, last);
    }
}

static long floor_log2(long n) {
    long k = 0;
    while (n > 1) {
        n >>= 1;
        k++;
    }
    return k;
}

void dinf__sort_desc_indices(const float *key, int32_t n, int32_t *order, dinf__sort_pair *scratch) {
    pair *a = scratch;
    for (int32_t i = 0; i < n; i++)
        a[i] = ((uint64_t)order_bits(key[i]) << 32) | (uint32_t)i;
    if (n > 1) {
        introsort_loop(a, a + n, 2 * floor_log2(n));
        final_insertion_sort(a, a + n);
    }
    for (int32_t i = 0; i < n; i++)
        order[i] = (int32_t)(uint32_t)a[i];
}
