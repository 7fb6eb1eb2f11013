/* Interface between the harness (C), the emulated host runtime (emu_host.c)
 * and the C++ emulator (emu_jit.cpp). */
#ifndef EMU_HOST_H
#define EMU_HOST_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

typedef struct emu_host_stats_t {
    long long launches, encodes;
    unsigned last_grid, last_block, last_cluster, last_pdl;
    size_t last_smem;
    int heuristic_block_m, heuristic_block_n, heuristic_stages; /* the library's choice */
    int block_m, block_n, stages, cluster, split_k;             /* what ran */
} emu_host_stats_t;
extern emu_host_stats_t emu_host_stats;

/* Forced tile config for the next FP8 GEMM calls (0 = the heuristic's). */
typedef struct emu_force_config_t {
    int block_m, block_n, stages, cluster, split_k; /* cluster / split_k: fast rung only */
} emu_force_config_t;
extern emu_force_config_t emu_force_config;
/* 1 when the library has the fast rung (fp8_gemm_fast.cuh, DINF_FP8_GEMM_KERNEL). */
int emu_has_fast_rung(void);
/* 1 when the library's dinf__jit_launch takes flags (programmatic dependent launch). */
int emu_has_pdl(void);

/* emu_jit.cpp */
const void *emu_find_kernel(const char *name, int nparams, const long long *params);
/* The compiled kernel instances: count, and instance i's name and constants. */
int emu_kernel_count(void);
const char *emu_kernel_info(int i, int *nparams, long long params[8]);
/* pdl: launched with programmatic dependent launch (emu_global_guard_add). */
void emu_launch_kernel(const void *entry, const unsigned grid[3], const unsigned block[3],
                       const unsigned cluster[3], size_t smem, int pdl, void **args);
void emu_global_add(const void *p, size_t bytes, const char *name);
/* A page-aligned allocation a PDL launch may touch only after griddepcontrol.wait. */
void emu_global_guard_add(const void *p, size_t bytes, const char *name);
/* Threads (all launches so far) that passed griddepcontrol.wait in PDL launches. */
long long emu_griddep_waits(void);
void emu_global_clear(void);
int emu_skew(void);
long long emu_switches(void);
/* emu_sm90.cpp */
int emu_encode_tiled(void *map, int dtype, unsigned rank, void *base, const uint64_t *dims,
                     const uint64_t *strides, const uint32_t *box, const uint32_t *element_strides,
                     int interleave, int swizzle, int l2_promotion, int oob_fill);

#ifdef __cplusplus
}
#endif
#endif
