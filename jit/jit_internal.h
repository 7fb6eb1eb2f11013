/*
 * The JIT runtime's internal API, for modules (gemm) and tests. Not installed.
 *
 * Layers, bottom up:
 *   jit_nvrtc.c     dlopen of NVRTC, compile one source to a cubin + ptxas log
 *   jit_source.c    template registry, config check, deterministic source text
 *   jit_cache.c     cache directory rules, entry format, atomic publish, hashes
 *   jit_runtime.c   the in-process table (get-or-build), stats, log, public API
 *   jit_load.c      cudaLibraryLoadData / cudaLibraryGetKernel / launch
 *
 * A module asks for a kernel with dinf__jit_get_kernel (compile + cache +
 * load) and launches it with dinf__jit_launch; CPU tests use
 * dinf__jit_get_cubin, which never touches the CUDA runtime.
 */
#ifndef DINF_JIT_INTERNAL_H
#define DINF_JIT_INTERNAL_H

#include "deepinfra/core.h"
#include "deepinfra/jit.h"
#include "core/internal.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------ embedded files -- */

/* A template file embedded at build time (tools/embed-templates.sh). */
typedef struct dinf__jit_embedded_file {
    const char *name; /* base name, as #included by the templates */
    const char *text; /* NUL-terminated */
    size_t bytes;     /* without the NUL */
} dinf__jit_embedded_file;

extern const dinf__jit_embedded_file dinf__jit_embedded_files[];
extern const int dinf__jit_embedded_count;

/* ------------------------------------------------------------ registry -- */

typedef struct dinf__jit_param_spec {
    const char *name;
    int64_t min, max; /* inclusive range checked before generation */
} dinf__jit_param_spec;

/* One kernel template. Adding a kernel = a .cuh file in jit/templates and a
 * row of the registry (jit_source.c). */
typedef struct dinf__jit_template {
    const char *name;     /* config name, e.g. "scale_rows" */
    const char *header;   /* the embedded file that defines it */
    const char *function; /* qualified C++ template name, e.g. "dinf_jit::scale_rows" */
    int num_params;
    dinf__jit_param_spec params[DINF_JIT_MAX_PARAMS];
} dinf__jit_template;

/* The template called name, or NULL. */
const dinf__jit_template *dinf__jit_find_template(const char *name);

/* Check a config against the registry (size, name, count, ranges); on
 * failure record "<func>: configs[index] ..." (index < 0: no index) and
 * return DINF_STATUS_INVALID_ARGUMENT. */
dinf_status dinf__jit_check_config(const char *func, int64_t index,
                                   const dinf_jit_kernel_config *config,
                                   const dinf__jit_template **tmpl);

/* The generated source of a checked config, and its NVRTC name expression
 * ("dinf_jit::scale_rows<256, 4, 0>"), as malloc'ed strings the caller frees.
 * Deterministic: the same config gives the same bytes. */
dinf_status dinf__jit_generate(const dinf__jit_template *tmpl, const dinf_jit_kernel_config *config,
                               char **source, char **name_expression);

/* "scale_rows<256,4,0>" into buf (for messages and logs). */
void dinf__jit_config_label(const dinf_jit_kernel_config *config, char *buf, size_t buf_bytes);

/* "sm_90a", "sm_89", ...: 1 if arch has that form, else 0. */
int dinf__jit_arch_valid(const char *arch);

/* -------------------------------------------------------------- NVRTC -- */

/* Resource usage of one kernel, from ptxas -v. -1 = not reported. */
typedef struct dinf__jit_resources {
    int32_t registers;
    int32_t stack_frame_bytes;
    int32_t spill_store_bytes;
    int32_t spill_load_bytes;
    int32_t shared_bytes; /* static shared memory ("smem") */
    int32_t barriers;
} dinf__jit_resources;

/* Load NVRTC once (thread-safe). UNSUPPORTED with a message if missing. */
dinf_status dinf__jit_nvrtc_load(const char *func, int *major, int *minor);

/* The options every compile uses for arch, in order (static storage until
 * the next call with another arch is not an issue: the list is rebuilt into
 * the caller's array). Returns the count; opts must hold 8 pointers and
 * arch_option 64 bytes. */
int dinf__jit_nvrtc_options(const char *arch, char arch_option[64], const char *opts[8]);

/* The result of one NVRTC compile, all malloc'ed (free with dinf__jit_build_free). */
typedef struct dinf__jit_build {
    unsigned char *cubin;
    size_t cubin_bytes;
    char *lowered_name; /* the kernel's symbol in the cubin */
    char *log;          /* NVRTC's log (ptxas -v output included) */
    dinf__jit_resources resources;
} dinf__jit_build;

void dinf__jit_build_free(dinf__jit_build *build);

/* Compile source (with every embedded file available to #include) for arch;
 * name_expression names the kernel to instantiate. On a compile error:
 * DINF_STATUS_JIT_ERROR, the message holds NVRTC's log (truncated to fit). */
dinf_status dinf__jit_nvrtc_compile(const char *func, const char *label, const char *source,
                                    const char *name_expression, const char *arch,
                                    dinf__jit_build *out);

/* Parse ptxas -v output for the entry function named symbol. Returns 0 when
 * its resource lines were found (fields not reported stay -1), -1 if not. */
int dinf__jit_parse_ptxas_log(const char *log, const char *symbol, dinf__jit_resources *out);

/* -------------------------------------------------------------- cache -- */

/* 128-bit content hash: two FNV-1a-64 passes with different offsets, each
 * finished with splitmix64 (the scheme of DeepGEMM's csrc/utils/hash.hpp).
 * Not cryptographic: integrity against torn or corrupted writes; the
 * ownership and mode checks keep other users out. */
typedef struct dinf__jit_key {
    uint64_t lo, hi;
} dinf__jit_key;

typedef struct dinf__jit_hasher {
    uint64_t a, b;
} dinf__jit_hasher;

void dinf__jit_hash_init(dinf__jit_hasher *h);
/* Hash bytes, then a length marker, so ("ab","c") != ("a","bc"). */
void dinf__jit_hash_field(dinf__jit_hasher *h, const void *data, size_t bytes);
dinf__jit_key dinf__jit_hash_final(const dinf__jit_hasher *h);
/* 64-bit checksum of a buffer (one pass of the same hash). */
uint64_t dinf__jit_checksum(const void *data, size_t bytes);

/* 32 lowercase hex digits + NUL. */
void dinf__jit_key_hex(dinf__jit_key key, char out[33]);

/* The cache directory as configured now (override or environment), into a
 * malloc'ed string. JIT_ERROR if none can be chosen. */
dinf_status dinf__jit_cache_dir_resolve(const char *func, char **dir);

/* Create dir (0700, parents too) if missing and check it: a directory, owned
 * by the effective uid, not group- or world-writable. JIT_ERROR otherwise,
 * with a message naming the path and the rule. */
dinf_status dinf__jit_cache_dir_prepare(const char *func, const char *dir);

/* Entry file path for (template name, key) in dir, malloc'ed. */
char *dinf__jit_entry_path(const char *dir, const char *template_name, dinf__jit_key key);

/* Read and verify an entry. Returns 1 and fills *out (malloc'ed) when the
 * entry is valid; 0 when absent; -1 when present but rejected (reason
 * written, NUL-terminated). Never fails otherwise. */
int dinf__jit_entry_read(const char *path, dinf__jit_key key, dinf__jit_build *out,
                         char *reason, size_t reason_bytes);

/* Write an entry atomically (temporary file, fsync, rename). JIT_ERROR with
 * the system error on failure; no temporary file is left behind. */
dinf_status dinf__jit_entry_write(const char *func, const char *dir, const char *path,
                                  dinf__jit_key key, const dinf__jit_build *build);

/* Entry file layout (host byte order; the cache is per machine). */
#define DINF_JIT_ENTRY_MAGIC "DINFJIT\0"
#define DINF_JIT_ENTRY_FORMAT 1u
typedef struct dinf__jit_entry_header {
    char magic[8];
    uint32_t format;
    uint32_t header_bytes;
    uint64_t key_lo, key_hi;
    uint64_t payload_bytes;
    uint64_t payload_checksum;
} dinf__jit_entry_header;
/* The payload: resources (6 x int32), name_bytes (uint32, NUL included),
 * cubin_bytes (uint64), the name, the cubin. */

/* ------------------------------------------------------------ runtime -- */

/* A compiled kernel: lives in the in-process table until dinf__jit_reset
 * (so pointers handed out stay valid for the life of the process). */
typedef struct dinf__jit_cubin {
    const unsigned char *data;
    size_t bytes;
    const char *lowered_name;
    dinf__jit_resources resources;
    dinf__jit_key key;
    int from_disk; /* 1 if read from the disk cache, 0 if compiled here */
} dinf__jit_cubin;

/* Get or build the cubin of config for arch ("sm_90a"): in-process table,
 * then disk cache, then NVRTC (publishing to the disk cache). Thread-safe;
 * concurrent callers for one kernel wait for the first. *out stays valid
 * until dinf__jit_reset. func names the public caller for messages. */
dinf_status dinf__jit_get_cubin(const char *func, const dinf_jit_kernel_config *config,
                                const char *arch, const dinf__jit_cubin **out);

/* A loaded kernel (CUDA builds). kernel is a cudaKernel_t, usable on every
 * device (cudaLibraryLoadData is context-independent). */
typedef struct dinf__jit_kernel {
    const dinf__jit_cubin *cubin;
    void *library; /* cudaLibrary_t */
    void *kernel;  /* cudaKernel_t */
    /* Devices (bit d: device d < 64) on which the kernel's dynamic shared
     * memory limit has been raised to the device maximum; updated atomically
     * by dinf__jit_launch so that later launches (CUDA-graph captures
     * included) make no attribute calls. */
    unsigned long long smem_optin_devices;
    /* What the runtime reports for the loaded kernel (cudaFuncGetAttributes:
     * numRegs, sharedSizeBytes), -1 when it could not be asked. Launch
     * checks prefer these to the ptxas log, whose format NVRTC may change. */
    int32_t loaded_registers;
    int32_t loaded_static_smem;
} dinf__jit_kernel;

/* The architecture to compile for on a device ("sm_90a" on compute 9.0,
 * "sm_100a" on 10.0, "sm_<maj><min>" otherwise). CUDA_ERROR without device. */
dinf_status dinf__jit_device_arch(const char *func, int device, char arch[16]);

/* Get or build, then load (once per process) config for device's arch. */
dinf_status dinf__jit_get_kernel(const char *func, const dinf_jit_kernel_config *config, int device,
                                 const dinf__jit_kernel **out);

/* dinf__jit_launch flags. PDL: add cudaLaunchAttributeProgrammaticStreamSerialization
 * (programmaticStreamSerializationAllowed = 1): the kernel may start while the
 * previous kernel on the stream is still running; it must execute
 * griddepcontrol.wait (dinf_sm90.cuh griddep_wait) in every thread before any
 * access to global memory that kernel may write (or read). Inside a CUDA-graph
 * capture the dependency is recorded as a programmatic edge when the capture
 * dependency is exactly one kernel node; otherwise dinf__jit_launch drops the
 * attribute (an ordinary edge). */
#define DINF__JIT_LAUNCH_PDL 1u

/* Launch a loaded kernel with cudaLaunchKernelExC. grid/block/cluster are
 * x,y,z (cluster {1,1,1} or {0,0,0}: no cluster attribute); flags: 0 or
 * DINF__JIT_LAUNCH_PDL (other bits: INTERNAL); for dynamic shared
 * memory above 48 KiB the kernel's limit on device is raised to the device's
 * opt-in maximum, once per (kernel, device). args: one pointer per
 * kernel parameter, as for cudaLaunchKernel. CUDA_ERROR on failure. */
dinf_status dinf__jit_launch(const char *func, const dinf__jit_kernel *kernel, int device,
                             const unsigned grid[3], const unsigned block[3],
                             const unsigned cluster[3], unsigned flags,
                             size_t dynamic_shared_bytes, dinf_stream_t stream, void **args);

/* Load a cubin (jit_load.c; called by the runtime once per table entry) on
 * the current device; *registers and *static_smem get the loaded kernel's
 * numRegs / sharedSizeBytes (-1 when the runtime cannot report them). The
 * load runs in relaxed stream-capture mode, so a first use inside a CUDA
 * graph capture does not invalidate the capture. */
dinf_status dinf__jit_load_cubin(const char *func, const dinf__jit_cubin *cubin, void **library,
                                 void **kernel, int32_t *registers, int32_t *static_smem);

/* The static shared memory of a loaded kernel (runtime's figure, else the
 * ptxas log's, else 0): the dynamic limit is the device's opt-in maximum
 * minus this. */
static inline int32_t dinf__jit_static_smem(const dinf__jit_kernel *kernel) {
    if (kernel->loaded_static_smem >= 0)
        return kernel->loaded_static_smem;
    if (kernel->cubin && kernel->cubin->resources.shared_bytes > 0)
        return kernel->cubin->resources.shared_bytes;
    return 0;
}

/* Tests: forget the in-process table (unloading nothing), zero the stats,
 * drop the cache-dir override and let NVRTC be looked up again. Not
 * thread-safe: no other JIT call may run; earlier pointers become invalid. */
void dinf__jit_reset(void);

/* Log one line to stderr if DINF_JIT_LOG=1. */
void dinf__jit_log(const char *fmt, ...) DINF_PRINTF(1, 2);

/* Stats counters (runtime), updated under the table lock. */
typedef enum dinf__jit_counter {
    DINF_JIT_COUNT_COMPILE,
    DINF_JIT_COUNT_COMPILE_ERROR,
    DINF_JIT_COUNT_MEMORY_HIT,
    DINF_JIT_COUNT_DISK_HIT,
    DINF_JIT_COUNT_DISK_REJECT,
    DINF_JIT_COUNT_LOAD,
} dinf__jit_counter;

double dinf__jit_now_seconds(void);

#ifdef __cplusplus
}
#endif

#endif /* DINF_JIT_INTERNAL_H */
