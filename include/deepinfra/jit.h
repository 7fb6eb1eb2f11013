/*
 * libdeepinfra jit: the run-time compilation cache behind the GEMM kernels.
 *
 * Some kernels (the FP8 GEMMs) are compiled at run time for the exact shape
 * constants they serve. A kernel is named by a small config: the name of a
 * kernel template embedded in the library and the values of its compile-time
 * constants. The library generates the kernel's source, compiles it with
 * NVRTC, keeps the cubin in a disk cache and in memory, and loads it with the
 * CUDA runtime. Modules do this on their own the first time a shape is used;
 * this header lets an application choose the cache directory, compile ahead
 * of serving (warm-up), and read counters.
 *
 * Typical use (before the first request):
 *
 *     dinf_jit_set_cache_dir("/var/cache/myengine/deepinfra");  // optional
 *     dinf_jit_kernel_config configs[2] = {DINF_JIT_KERNEL_CONFIG_INIT,
 *                                          DINF_JIT_KERNEL_CONFIG_INIT};
 *     ... fill configs (a module's heuristic gives them) ...
 *     if (dinf_jit_precompile(configs, 2, NULL) != DINF_STATUS_OK)
 *         fprintf(stderr, "%s\n", dinf_last_error());
 *
 * Run-time dependencies. NVRTC is opened lazily with dlopen
 * ("libnvrtc.so.13", then "libnvrtc.so", then "libnvrtc.so.12";
 * DINF_NVRTC_LIBRARY=<path> names another file), never linked: without it,
 * the JIT functions return DINF_STATUS_UNSUPPORTED and say why (the NVRTC version is part of every
 * cache key, so even cached kernels need it). The
 * templates and the few types and intrinsics they use are part of the
 * library binary: no source tree and no CUDA headers are needed at run time
 * (NVRTC gets no include path at all). In a CPU-only build (make CUDA=0)
 * every function here returns DINF_STATUS_UNSUPPORTED.
 *
 * The disk cache. Directory, first that applies: dinf_jit_set_cache_dir,
 * $DINF_JIT_CACHE_DIR, $XDG_CACHE_HOME/deepinfra, $HOME/.cache/deepinfra.
 * It is created (with missing parents) with mode 0700. A directory that is
 * not owned by the calling user (effective uid) or that is group- or
 * world-writable is refused with DINF_STATUS_JIT_ERROR: another user could
 * plant a cubin there that this process would run. One file per kernel,
 * "<template>-<32 hex digits>.cubin", named by a 128-bit hash of everything
 * that determines the cubin: the generated source and every embedded header,
 * the NVRTC version, the compile options, the architecture and the library
 * version. A file holds a header (magic, format version, key, payload size,
 * payload checksum), the kernel's resource usage, its symbol name and the
 * cubin; it is written under a temporary name (created exclusively, mode
 * 0600), flushed to disk and renamed into place, so readers see a whole entry
 * or none, and processes that compile the same kernel at once both succeed.
 * An entry that is truncated, fails its checksum or key, is not a regular
 * file, is owned by another user or is group/world-writable is never loaded:
 * it is rebuilt and replaced. Entries are never deleted by the library;
 * removing the directory's files is always safe.
 *
 * Each kernel is compiled (or read from disk) once per process: an in-memory
 * table, thread-safe; concurrent callers asking for the same kernel wait for
 * the first. With DINF_JIT_LOG=1 in the environment the library prints one
 * line per compile, disk hit and rejected entry to stderr, e.g.
 *     deepinfra jit: compiled scale_rows<256,4,0> for sm_90a in 143.2 ms (key 3f..., 5320 bytes)
 *     deepinfra jit: disk hit scale_rows<256,4,0> for sm_90a in 0.1 ms (key 3f...)
 *     deepinfra jit: rejected /path/x.cubin: checksum mismatch; rebuilding
 * (the only output the library ever prints, and only when asked).
 */
#ifndef DEEPINFRA_JIT_H
#define DEEPINFRA_JIT_H

#include "deepinfra/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most compile-time constants a kernel template takes. */
#define DINF_JIT_MAX_PARAMS 24
/* Capacity of dinf_jit_kernel_config.name, NUL included. */
#define DINF_JIT_NAME_MAX 64

/*
 * A kernel: a template name and its compile-time constants, in the order the
 * template declares them (each template's header in jit/templates documents
 * its constants and their valid values; a value the template rejects is a
 * DINF_STATUS_JIT_ERROR carrying NVRTC's message). Modules build these from
 * their heuristics; applications usually get them from a module.
 * Initialise with DINF_JIT_KERNEL_CONFIG_INIT.
 */
typedef struct dinf_jit_kernel_config {
    uint32_t size;                       /* sizeof(dinf_jit_kernel_config) */
    char name[DINF_JIT_NAME_MAX];        /* template name, e.g. "scale_rows" */
    int32_t num_params;                  /* how many entries of params are used */
    int64_t params[DINF_JIT_MAX_PARAMS]; /* compile-time constants, template order */
} dinf_jit_kernel_config;

#define DINF_JIT_KERNEL_CONFIG_INIT {sizeof(dinf_jit_kernel_config), {0}, 0, {0}}

/*
 * dinf_jit_set_cache_dir - use path as the disk cache directory of this
 * process from now on (NULL: back to the environment's choice, see the top of
 * this header). The directory is created now (mode 0700, with missing
 * parents) and checked, so a bad choice fails here rather than at the first
 * compile. Kernels already in memory stay usable.
 * Arguments:
 *   path [IN] absolute path, shorter than 4000 bytes, or NULL; copied
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (relative or too long
 * path), DINF_STATUS_JIT_ERROR (cannot be created: the message gives the
 * system error, e.g. a parent that is a regular file; owned by another user;
 * group- or world-writable), DINF_STATUS_UNSUPPORTED (CPU-only build).
 * Thread-safe; calls racing with compiles may see either directory.
 */
DINF_API dinf_status dinf_jit_set_cache_dir(const char *path);

/*
 * dinf_jit_get_cache_dir - the directory the disk cache uses now (resolved
 * from dinf_jit_set_cache_dir or the environment; not created or checked by
 * this call).
 * Arguments:
 *   buf       [OUT] caller-owned, receives the NUL-terminated path; may be
 *                   NULL when buf_bytes is 0 (a size query)
 *   buf_bytes [IN]  capacity of buf
 *   needed    [OUT] bytes needed including the NUL; may be NULL
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (buf too small: needed
 * is still written; NULL buf with buf_bytes > 0), DINF_STATUS_JIT_ERROR (no
 * directory can be chosen: no variable set and no home directory),
 * DINF_STATUS_UNSUPPORTED (CPU-only build). Thread-safe.
 */
DINF_API dinf_status dinf_jit_get_cache_dir(char *buf, size_t buf_bytes, size_t *needed);

/*
 * dinf_jit_precompile - compile (or read from the disk cache) every kernel
 * of a list now, ahead of serving, so that the first requests do not wait for
 * NVRTC.
 * Arguments:
 *   configs [IN] count kernel configs (DINF_JIT_KERNEL_CONFIG_INIT)
 *   count   [IN] >= 0
 *   arch    [IN] "sm_90a" style target: the kernels are compiled and cached
 *                for it but not loaded (no GPU or driver needed); NULL: the
 *                architecture of the current CUDA device, and the kernels
 *                are loaded too (ready to launch)
 * Kernels not yet cached compile in parallel: $DINF_JIT_THREADS threads
 * (1..64) if set, else one per online core up to 16 (never more than count);
 * the loads (arch NULL) follow on the calling thread. After a failure no new
 * kernel is started; the message names the lowest failing index and its
 * config (the one a one-by-one loop would have stopped at), and kernels
 * already compiled stay cached.
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL configs with
 * count > 0, negative count, a bad size, unknown template name, wrong number
 * of params, a value outside the template's range, a malformed arch,
 * DINF_JIT_THREADS not a count in [1, 64]), DINF_STATUS_UNSUPPORTED
 * (CPU-only build, NVRTC missing), DINF_STATUS_JIT_ERROR
 * (compile error with NVRTC's log, cache directory refused or unwritable,
 * cubin rejected by the driver), DINF_STATUS_CUDA_ERROR (no usable device for
 * arch NULL), DINF_STATUS_OUT_OF_MEMORY.
 * Synchronous; thread-safe; may take seconds per kernel that is not cached.
 */
DINF_API dinf_status dinf_jit_precompile(const dinf_jit_kernel_config *configs, int64_t count,
                                         const char *arch);

/* Counters since the process started (or, in tests, since the last reset).
 * Initialise .size with DINF_JIT_STATS_INIT. */
typedef struct dinf_jit_stats {
    uint32_t size;                   /* [IN] sizeof(dinf_jit_stats) */
    uint32_t reserved;
    uint64_t compiles;               /* NVRTC compilations that produced a cubin */
    uint64_t compile_errors;         /* NVRTC compilations that failed */
    uint64_t memory_hits;            /* requests answered by the in-process table */
    uint64_t disk_hits;              /* kernels read from the disk cache */
    uint64_t disk_rejects;           /* cache entries ignored (corrupt, foreign, unsafe) */
    uint64_t loads;                  /* cubins loaded into the CUDA runtime */
    double compile_seconds;          /* wall time spent in NVRTC */
} dinf_jit_stats;

#define DINF_JIT_STATS_INIT {sizeof(dinf_jit_stats), 0, 0, 0, 0, 0, 0, 0, 0.0}

/*
 * dinf_jit_get_stats - read the counters.
 * Arguments:
 *   stats [OUT] caller-owned; stats->size = sizeof(dinf_jit_stats)
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL, size too
 * small), DINF_STATUS_UNSUPPORTED (CPU-only build). Thread-safe.
 */
DINF_API dinf_status dinf_jit_get_stats(dinf_jit_stats *stats);

/*
 * dinf_jit_nvrtc_version - the NVRTC the library would compile with.
 * Arguments:
 *   major, minor [OUT] not NULL
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL),
 * DINF_STATUS_UNSUPPORTED (NVRTC not found, the message says which names were
 * tried; CPU-only build). Thread-safe.
 */
DINF_API dinf_status dinf_jit_nvrtc_version(int *major, int *minor);

#ifdef __cplusplus
}
#endif

#endif /* DEEPINFRA_JIT_H */
