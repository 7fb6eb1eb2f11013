/* Helpers shared by the EPLB tests: plan invariants and vector files. */
#ifndef EPLB_TEST_UTIL_H
#define EPLB_TEST_UTIL_H

#include <deepinfra.h>

#include <stdint.h>
#include <stdio.h>

/* Checks the invariants that hold for any plan (reference 8.11): logcnt >= 1
 * summing to R, each expert appearing logcnt times in phy2log, log2phy rows
 * covering exactly the expert's slots with replica numbers 0..logcnt-1, and
 * -1 padding. Returns NULL if all hold, else a static description. */
const char *eplb_check_invariants(const int64_t *phy2log, const int64_t *phy_replica,
                                  const int64_t *logcnt, const int64_t *log2phy, int64_t width,
                                  int64_t L, int64_t E, int64_t R);

/* Hierarchical structure: each group's replicas on one node only, each node
 * holding num_groups/num_nodes whole groups. NULL if it holds. */
const char *eplb_check_groups_on_nodes(const int64_t *phy2log, int64_t L, int64_t E, int64_t R,
                                       int64_t G, int64_t N);

/* Number of (layer, GPU, expert) with more than one replica on that GPU. */
int64_t eplb_count_gpu_duplicates(const int64_t *phy2log, int64_t L, int64_t E, int64_t R,
                                  int64_t P);

/* xorshift64* generator: deterministic, seed printed by the tests. */
static inline uint64_t eplb_rand(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* One case of tests/eplb/data/vectors.txt. */
typedef struct eplb_vector {
    int id;
    int64_t L, E, R, G, N, P, M;
    float *w;
    int64_t *phy2log, *logcnt, *log2phy;
} eplb_vector;

/* Path of a file under tests/eplb/data/: $DINF_SOURCE_DIR, else the source
 * tree this runner was built from, else relative to the working directory
 * (a build carried to another machine runs from its checkout's root). */
const char *eplb_data_path(const char *name);

/* Read all cases; returns the count (or -1 with a message on stderr). The
 * caller frees with eplb_free_vectors. */
int eplb_read_vectors(const char *path, eplb_vector **cases);
void eplb_free_vectors(eplb_vector *cases, int count);

#endif
