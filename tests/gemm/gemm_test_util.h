/*
 * Helpers shared by the GEMM kernel tests (test_gemm_sm90.c: the simple rung,
 * test_gemm_fast.c: the fast rung): random e4m3 codes and scales, one
 * tensor-map element read as TMA would, the CPU mbarrier model's barrier,
 * a throw-away JIT cache directory, the disassembler lookup, a kernel's SASS.
 */
#ifndef DINF_GEMM_TEST_UTIL_H
#define DINF_GEMM_TEST_UTIL_H

#include "gemm/gemm_sm90.h"
#include "jit_internal.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 1 when the tests are built with AddressSanitizer (make test SAN=1). */
#if defined(__SANITIZE_ADDRESS__)
#define DINF_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DINF_TEST_SANITIZED 1
#endif
#endif
#ifndef DINF_TEST_SANITIZED
#define DINF_TEST_SANITIZED 0
#endif

static inline int cdiv(long long a, long long b) { return (int)((a + b - 1) / b); }

/* The fast rung's cluster modes, 0 .. FAST_MODES - 1: (cluster, split_k) =
 * (1, 1), (2, 1) A multicast, (2, 2), (3, 3), (4, 4) split-K. */
enum { FAST_MODES = 5 };
static inline void fast_mode(int mode, int *cluster, int *split_k) {
    *cluster = mode == 0 ? 1 : mode <= 2 ? 2 : mode;
    *split_k = mode <= 1 ? 1 : *cluster;
}

/* Whether the fast rung takes {form, block_m, block_n, split_k}: its block_n
 * set, block_m 128 for the contiguous form, block_m 256 only with block_n <=
 * 128 and no split-K (the heuristics' space; fp8_gemm_fast.cuh's asserts). */
static inline int fast_config_in_space(int form, int block_m, int block_n, int split_k) {
    if (!dinf_fp8_fast_block_n_ok(block_n))
        return 0;
    if (form == DINF_FP8_GEMM_CONTIGUOUS && block_m != 128)
        return 0;
    return block_m != 256 || (block_n <= DINF_FP8_FAST_BM256_MAX_BLOCK_N && split_k == 1);
}

/* Kernel arguments of an m x n x k problem tiled block_m x block_n (ldd n + 8). */
static inline dinf_fp8_gemm_args make_args(int m, int n, int k, int groups, int block_m,
                                           int block_n, const int32_t *group_info) {
    dinf_fp8_gemm_args a;
    memset(&a, 0, sizeof a);
    a.m = m, a.n = n, a.k = k, a.num_groups = groups;
    a.k_blocks = cdiv(k, 128);
    a.n_scale_blocks = cdiv(n, 128);
    a.m_blocks = cdiv(m, block_m);
    a.n_blocks = cdiv(n, block_n);
    a.group_info = (unsigned long long)(uintptr_t)group_info;
    a.ldd = n + 8;
    return a;
}

static inline uint64_t rng(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void fill_codes(uint8_t *p, size_t n, uint64_t *s) {
    for (size_t i = 0; i < n; i++) {
        uint8_t c;
        do
            c = (uint8_t)rng(s);
        while ((c & 0x7f) == 0x7f);
        p[i] = c;
    }
}

static inline void fill_scales(float *p, size_t n, uint64_t *s) {
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(1.0 + (double)(rng(s) % 1000) / 1000.0) / 256.0f;
}

static inline void tma_element(const dinf__fp8_tensor_map_geometry *g, long long c0, long long c1,
                               long long c2, void *out) {
    if (c0 < 0 || c1 < 0 || c2 < 0 || (uint64_t)c0 >= g->dims[0] || (uint64_t)c1 >= g->dims[1] ||
        (uint64_t)c2 >= g->dims[2]) {
        memset(out, 0, (size_t)g->elem_bytes);
        return;
    }
    const unsigned char *p = (const unsigned char *)g->base + c0 * g->elem_bytes +
                             c1 * (long long)g->strides[0] + c2 * (long long)g->strides[1];
    memcpy(out, p, (size_t)g->elem_bytes);
}

/* An mbarrier as the PTX ISA defines it: arrivals expected per phase, arrivals
 * and transaction bytes pending in the current phase, phases completed. */
typedef struct model_bar {
    int count, pending;
    long long tx;
    unsigned completed;
} model_bar;

static inline void bar_init(model_bar *b, int count) {
    b->count = b->pending = count;
    b->tx = 0;
    b->completed = 0;
}

static char cache_dir[64]; /* the current test's JIT cache (setup_cache) */

static inline int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static inline void cleanup_cache(void) {
    dinf__jit_reset();
    if (cache_dir[0])
        nftw(cache_dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
    cache_dir[0] = '\0';
}

/* nvdisasm, if this machine has one: $DINF_NVDISASM, else the toolkit's. */
static inline const char *find_nvdisasm(void) {
    const char *env = getenv("DINF_NVDISASM");
    if (env && *env)
        return access(env, X_OK) == 0 ? env : NULL;
    static const char *candidates[] = {"/usr/local/cuda/bin/nvdisasm", "/usr/bin/nvdisasm"};
    for (size_t i = 0; i < 2; i++)
        if (access(candidates[i], X_OK) == 0)
            return candidates[i];
    return NULL;
}

#if DINF_WITH_CUDA
/* The SASS of JIT kernel `name` with `params`: compiled for sm_90a (into the
 * test's cache, setup_cache), the cubin written to cache_dir/k<index>.cubin
 * and nvdisasm started on it; returns the pipe to read the listing from,
 * with the command in cmd for messages. Close it with close_sass. */
static inline FILE *open_sass(const char *nvdisasm, const char *name, const long long *params,
                              int num_params, int index, char cmd[512]) {
    dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
    snprintf(c.name, sizeof c.name, "%s", name);
    c.num_params = num_params;
    memcpy(c.params, params, (size_t)num_params * sizeof params[0]);
    const dinf__jit_cubin *cubin;
    cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    char path[128];
    snprintf(path, sizeof path, "%s/k%d.cubin", cache_dir, index);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(cubin->data, 1, cubin->bytes, f), cubin->bytes);
    fclose(f);
    snprintf(cmd, 512, "'%s' '%s'", nvdisasm, path);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "%s", cmd);
    return p;
}

/* Closes open_sass's pipe: nvdisasm must have succeeded. */
static inline void close_sass(FILE *p, const char *cmd) {
    cr_assert_eq(pclose(p), 0, "%s failed", cmd);
}
#endif

/* A compiled kernel's resource report (ptxas): a report at all, no stack
 * frame and no spills, registers x threads within the SM's 64K (at entry:
 * __launch_bounds__(threads, 1) caps them), and dynamic + static shared
 * memory within the opt-in limit (the launch raises the dynamic limit to
 * opt-in minus the static bytes). */
static inline void assert_kernel_resources(const char *label, const dinf__jit_resources *r,
                                           int threads, int smem_bytes) {
    cr_assert_gt(r->registers, 0, "%s: no resource report", label);
    cr_assert(r->stack_frame_bytes == 0 && r->spill_store_bytes == 0 && r->spill_load_bytes == 0,
              "%s uses local memory: %d bytes stack, %d/%d bytes spill stores/loads, %d "
              "registers",
              label, r->stack_frame_bytes, r->spill_store_bytes, r->spill_load_bytes,
              r->registers);
    cr_assert_leq(r->registers * threads, 65536, "%s: %d registers x %d threads", label,
                  r->registers, threads);
    cr_assert_leq(smem_bytes + (r->shared_bytes > 0 ? r->shared_bytes : 0), DINF_FP8_SMEM_LIMIT,
                  "%s: %d dynamic + %d static bytes of shared memory", label, smem_bytes,
                  (int)r->shared_bytes);
}

/* A fresh cache directory (after the skip checks: no .fini runs after a skip). */
static inline void setup_cache(void) {
    dinf__jit_reset();
    snprintf(cache_dir, sizeof cache_dir, "/tmp/dinf-gemm-jit-XXXXXX");
    cr_assert_not_null(mkdtemp(cache_dir));
    cr_assert_eq(dinf_jit_set_cache_dir(cache_dir), DINF_STATUS_OK, "%s", dinf_last_error());
}

#endif
