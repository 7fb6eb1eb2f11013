/* EPLB internals shared by the planner and its tests. Not installed. */
#ifndef DINF_EPLB_INTERNAL_H
#define DINF_EPLB_INTERNAL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Scratch element of the descending sort (a key and its original index). */
typedef uint64_t dinf__sort_pair;

/*
 * order[0..n) = indices of key[0..n) sorted by descending key, ties and all,
 * exactly as torch's CPU sort(descending=True) orders them: libstdc++'s
 * std::sort (introsort + final insertion sort) over (key, index) pairs with
 * the comparator "a before b iff a is NaN and b is not, or a > b". This is
 * the one source of exactness for tie handling in the planner (a stable sort
 * differs on rows longer than 16 with ties). scratch holds n pairs.
 */
void dinf__sort_desc_indices(const float *key, int32_t n, int32_t *order, dinf__sort_pair *scratch);

#ifdef __cplusplus
}
#endif

#endif
