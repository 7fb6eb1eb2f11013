/*
 * libdeepinfra core: status codes, errors, version, dtypes, device query.
 *
 * Every public function of the library returns a dinf_status. On failure,
 * dinf_last_error() returns a message for the calling thread that names the
 * function, the argument and the rule it broke, with values, e.g.
 *
 *     dinf_status st = dinf_eplb_rebalance_experts(...);
 *     if (st != DINF_STATUS_OK)
 *         fprintf(stderr, "%s: %s\n", dinf_status_string(st), dinf_last_error());
 *
 * The library never aborts, exits or prints on bad input, and never writes
 * outside the buffers the caller passes.
 *
 * This header compiles alone in C11 and C++17 and needs no CUDA include path:
 * dinf_stream_t is the same type as cudaStream_t and CUstream.
 */
#ifndef DEEPINFRA_CORE_H
#define DEEPINFRA_CORE_H

#include <stddef.h>
#include <stdint.h>

/* Export macro: only dinf_* symbols leave the shared library. */
#if defined(DINF_BUILD)
#define DINF_API __attribute__((visibility("default")))
#else
#define DINF_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

#define DINF_VERSION_MAJOR 0
#define DINF_VERSION_MINOR 1
#define DINF_VERSION_PATCH 0
/* NCCL's formula: major * 10000 + minor * 100 + patch. */
#define DINF_VERSION_NUM(major, minor, patch) ((major) * 10000 + (minor) * 100 + (patch))
#define DINF_VERSION_CODE DINF_VERSION_NUM(DINF_VERSION_MAJOR, DINF_VERSION_MINOR, DINF_VERSION_PATCH)

/*
 * dinf_version - the version of the library actually loaded, as
 * DINF_VERSION_CODE (compare it with the header's DINF_VERSION_CODE to catch
 * a header/library mismatch). Never fails.
 */
DINF_API int dinf_version(void);

/*
 * dinf_version_string - "MAJOR.MINOR.PATCH+cuda" or "MAJOR.MINOR.PATCH+cpu"
 * (the suffix says whether the library was built with CUDA). Static storage;
 * never NULL.
 */
DINF_API const char *dinf_version_string(void);

/* ------------------------------------------------------------------------ */
/* Status and errors                                                         */
/* ------------------------------------------------------------------------ */

/* Values are part of the ABI: never renumbered. */
typedef enum dinf_status {
    DINF_STATUS_OK = 0,               /* success */
    DINF_STATUS_INVALID_ARGUMENT = 1, /* the caller broke a documented rule */
    DINF_STATUS_UNSUPPORTED = 2,      /* valid, but not available here (build, device, arch) */
    DINF_STATUS_OUT_OF_MEMORY = 3,    /* a host or device allocation failed */
    DINF_STATUS_CUDA_ERROR = 4,       /* the CUDA runtime reported an error */
    DINF_STATUS_NCCL_ERROR = 5,       /* NCCL reported an error */
    DINF_STATUS_JIT_ERROR = 6,        /* run-time compilation or loading failed */
    DINF_STATUS_TIMEOUT = 7,          /* a wait exceeded its timeout */
    DINF_STATUS_INTERNAL = 8,         /* a bug in the library: please report it */
} dinf_status;

#define DINF_STATUS_COUNT 9

/*
 * dinf_status_string - a short constant name for a status
 * ("invalid argument"); "unknown status" for values outside the enum.
 * Static storage; never NULL; thread-safe.
 */
DINF_API const char *dinf_status_string(dinf_status status);

/*
 * dinf_last_error - the message of the most recent failed call made by the
 * calling thread, e.g. "dinf_eplb_rebalance_experts: num_replicas=10 is
 * smaller than num_logical_experts=12". Empty ("") if no call on this thread
 * has failed. The pointer is to thread-local storage that stays valid until
 * the thread's next failing call into the library; never NULL.
 */
DINF_API const char *dinf_last_error(void);

/*
 * dinf_set_last_error - set the calling thread's dinf_last_error() text. For
 * code the library calls back (dinf_pipe_callbacks) that fails for a reason
 * of its own: the caller quotes the text in its own message, e.g.
 * "dinf_pipe_executor_step: rank 1 op 7 (B0.2): backward failed: <message>".
 *   message [IN] NUL-terminated, copied (its first DINF_ERROR_MESSAGE_BYTES
 *                - 1 bytes; it may be dinf_last_error()'s own text); NULL or
 *                "" clears the text
 * Thread-safe: each thread has its own text.
 */
DINF_API void dinf_set_last_error(const char *message);

/* Capacity of the dinf_last_error() text, its terminating NUL included. */
#define DINF_ERROR_MESSAGE_BYTES 1024

/* ------------------------------------------------------------------------ */
/* Data types                                                                */
/* ------------------------------------------------------------------------ */

/* Values are part of the ABI: never renumbered. */
typedef enum dinf_dtype {
    DINF_DTYPE_FLOAT32 = 0,
    DINF_DTYPE_FLOAT64 = 1,
    DINF_DTYPE_FLOAT16 = 2,
    DINF_DTYPE_BFLOAT16 = 3,
    DINF_DTYPE_FP8_E4M3 = 4, /* e4m3fn: no infinities, max finite 448, 0x7F/0xFF are NaN */
    DINF_DTYPE_FP8_E5M2 = 5,
    DINF_DTYPE_INT8 = 6,
    DINF_DTYPE_UINT8 = 7,
    DINF_DTYPE_INT32 = 8,
    DINF_DTYPE_INT64 = 9,
} dinf_dtype;

#define DINF_DTYPE_COUNT 10

/*
 * dinf_dtype_size - size in bytes of one element of dtype.
 * Arguments:
 *   dtype     [IN]  a dinf_dtype value
 *   bytes     [OUT] element size in bytes; caller-owned, not NULL
 * Returns DINF_STATUS_OK, or DINF_STATUS_INVALID_ARGUMENT for an unknown
 * dtype or a NULL pointer.
 */
DINF_API dinf_status dinf_dtype_size(dinf_dtype dtype, size_t *bytes);

/*
 * dinf_dtype_name - "float32", "bfloat16", "float8_e4m3fn", ... (the numpy /
 * ml_dtypes spelling); "unknown" for values outside the enum. Never NULL.
 */
DINF_API const char *dinf_dtype_name(dinf_dtype dtype);

/* ------------------------------------------------------------------------ */
/* Streams and devices                                                       */
/* ------------------------------------------------------------------------ */

/* The CUDA stream type (identical to cudaStream_t / CUstream). NULL is the
 * legacy default stream. GPU calls take it as their last argument. */
typedef struct CUstream_st *dinf_stream_t;

/* Where a computation runs. Values are part of the ABI. */
typedef enum dinf_exec_kind {
    DINF_EXEC_CPU = 0,  /* host threads; every buffer is host memory */
    DINF_EXEC_CUDA = 1, /* a CUDA device; every buffer is device memory of that device (or
                         * managed memory), work is enqueued on the stream and the call returns
                         * without waiting (no device-wide synchronisation) */
} dinf_exec_kind;

/*
 * The execution place of a compute call: its last argument. NULL means the
 * CPU with the library's default thread count. The library never guesses the
 * place from pointers. On DINF_EXEC_CUDA a non-NULL stream must belong to
 * `device` (else DINF_STATUS_INVALID_ARGUMENT); the call makes `device`
 * current for its own work and leaves the calling thread's CUDA context as it
 * found it (a thread without a current context has none afterwards; a
 * context of `device` that is current, the caller's own included, is used as
 * it is).
 */
typedef struct dinf_exec {
    uint32_t size;        /* sizeof(dinf_exec) (use the DINF_EXEC_*_INIT macros) */
    int32_t kind;         /* dinf_exec_kind */
    int32_t device;       /* CUDA device ordinal (DINF_EXEC_CUDA); ignored for the CPU */
    int32_t num_threads;  /* CPU worker threads, 0..1024; 0 = all online cores; ignored for CUDA */
    dinf_stream_t stream; /* CUDA stream (NULL = legacy default stream); ignored for the CPU */
} dinf_exec;

#define DINF_EXEC_CPU_INIT {sizeof(dinf_exec), DINF_EXEC_CPU, 0, 0, NULL}
#define DINF_EXEC_CUDA_INIT(device, stream) {sizeof(dinf_exec), DINF_EXEC_CUDA, (device), 0, (stream)}

/* ------------------------------------------------------------------------ */
/* Number formats and FP8 quantization                                       */
/* ------------------------------------------------------------------------ */

/*
 * Formats. float8_e4m3fn ("e4m3"): 1 sign, 4 exponent (bias 7), 3 mantissa
 * bits, no infinities, 0x7F/0xFF are NaN, largest finite 448 (0x7E), smallest
 * subnormal 2^-9 (0x01). bfloat16: the upper 16 bits of a float32.
 * Conversions from float32 round to nearest, ties to even; to e4m3 they
 * saturate (|x| > 448, infinities included, become +-448) and keep NaN a NaN
 * (0x7F, or 0xFF when the sign is set); to bfloat16 a NaN stays a quiet NaN.
 * Conversions to float32 are exact.
 */

/*
 * dinf_convert - convert count elements from one dtype to another.
 *
 * Supported pairs: float32 <-> bfloat16, float32 <-> float8_e4m3fn,
 * bfloat16 <-> float8_e4m3fn (through float32, which is exact from bf16),
 * and any dtype to itself (a copy).
 * Arguments:
 *   src, src_dtype [IN]  count elements, contiguous
 *   dst, dst_dtype [OUT] count elements, contiguous, caller-owned, not
 *                        overlapping src (unless src == dst with equal sizes)
 *   count          [IN]  >= 0
 *   exec           [IN]  where it runs; NULL = CPU
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL pointers with
 * count > 0, negative count, a pair not listed, overlap),
 * DINF_STATUS_UNSUPPORTED (DINF_EXEC_CUDA in a CPU-only build) or
 * DINF_STATUS_CUDA_ERROR (the launch failed).
 */
DINF_API dinf_status dinf_convert(const void *src, dinf_dtype src_dtype, void *dst,
                                  dinf_dtype dst_dtype, int64_t count, const dinf_exec *exec);

/*
 * dinf_fp8_quantize - cast a float32 or bfloat16 matrix to e4m3 with one
 * float32 scale per block, the reference math of DeepGEMM's
 * per_token_cast_to_fp8 (block 1 x 128, for activations) and
 * per_block_cast_to_fp8 (block 128 x 128, for weights):
 *   amax  = max(|x|) over the block (blocks at the edges are partial, as if
 *           zero-padded), clamped below at 1e-4;
 *   scale = amax / 448;
 *   q     = e4m3(clamp(x * (448 / amax), -448, 448)),  so  x ~ q * scale.
 * Arguments:
 *   x          [IN]  [m][k] float32 or bfloat16 (x_dtype), row stride x_ld >= k
 *                    elements; any float: amax skips NaNs (a NaN element
 *                    becomes the NaN code, the rest of its block is quantized
 *                    as if it were absent); an infinity makes the block's
 *                    scale inf, its finite elements 0 and itself NaN
 *   x_dtype    [IN]  DINF_DTYPE_FLOAT32 or DINF_DTYPE_BFLOAT16
 *   m, k       [IN]  >= 0 (m == 0 or k == 0: nothing to do)
 *   x_ld       [IN]  elements between rows of x
 *   block_rows [IN]  1 (per token, "1x128") or 128 (per block, "128x128");
 *                    the block is always 128 wide along k
 *   q          [OUT] [m][k] e4m3 bytes, row stride q_ld >= k bytes, caller-owned
 *   q_ld       [IN]  bytes between rows of q
 *   scales     [OUT] float32 [ceil(m/block_rows)][ceil(k/128)], row-major,
 *                    contiguous, caller-owned
 *   exec       [IN]  NULL = CPU
 * On the CPU it runs vector kernels in the widest set the CPU has (AVX-512,
 * AVX2 or the baseline), all giving the same bits; the environment variable
 * DINF_CPU_ISA=base|avx2|avx512 (read on every call) caps the set.
 * Returns DINF_STATUS_OK, DINF_STATUS_INVALID_ARGUMENT (NULL pointers,
 * negative sizes, strides below k, block_rows not 1 or 128, bad dtype,
 * overlapping buffers, products overflowing, another DINF_CPU_ISA value on
 * the CPU path), DINF_STATUS_UNSUPPORTED, DINF_STATUS_CUDA_ERROR.
 */
DINF_API dinf_status dinf_fp8_quantize(const void *x, dinf_dtype x_dtype, int64_t m, int64_t k,
                                       int64_t x_ld, int32_t block_rows, uint8_t *q, int64_t q_ld,
                                       float *scales, const dinf_exec *exec);

/*
 * dinf_fp8_scale_layout_mn_major - transpose per-token scales [m][kb]
 * (row-major, as dinf_fp8_quantize writes them) into the M-major,
 * 16-byte-aligned layout the GEMM kernels read ("TMA-aligned column-major"):
 * out[j * aligned_m + i] = scales[i * kb + j] with aligned_m = ceil(m/4)*4;
 * the padding rows i in [m, aligned_m) are written as 0.
 * Arguments:
 *   scales [IN]  float32 [m][kb]
 *   m, kb  [IN]  >= 0
 *   out    [OUT] float32 [kb][aligned_m], caller-owned, not overlapping scales
 *   aligned_m [OUT] ceil(m/4)*4, may be NULL (ask with out == NULL to learn it)
 *   exec   [IN]  NULL = CPU
 * Returns as dinf_fp8_quantize.
 */
DINF_API dinf_status dinf_fp8_scale_layout_mn_major(const float *scales, int64_t m, int64_t kb,
                                                    float *out, int64_t *aligned_m,
                                                    const dinf_exec *exec);

/* Output of dinf_device_query. Set .size = sizeof(dinf_device_info) (or use
 * DINF_DEVICE_INFO_INIT) so that later versions can add fields. */
typedef struct dinf_device_info {
    uint32_t size;               /* [IN] sizeof(dinf_device_info) as the caller knows it */
    int32_t built_with_cuda;     /* 1 if this library was built with CUDA (not make CUDA=0) */
    int32_t usable;              /* 1 if the device exists and runs this library's kernels */
    int32_t device_count;        /* CUDA devices visible to the process (0 without a driver) */
    int32_t device;              /* the device that was queried */
    int32_t cc_major, cc_minor;  /* compute capability, e.g. 9 and 0 for Hopper */
    int32_t sm_count;            /* streaming multiprocessors */
    int32_t runtime_version;     /* CUDA runtime version linked in, e.g. 13000 (0 if none) */
    int32_t driver_version;      /* CUDA driver version, 0 if no driver */
    uint64_t total_memory_bytes; /* global memory of the device */
    uint64_t shared_memory_per_block_optin_bytes; /* largest dynamic shared memory per block */
    char name[256];              /* device name, "" if none */
    char reason[512];            /* why usable is 0 ("" when usable) */
} dinf_device_info;

#define DINF_DEVICE_INFO_INIT                                                                      \
    {sizeof(dinf_device_info), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, {0}, {0}}

/*
 * dinf_device_query - describe CUDA device `device` and whether this library
 * can run its kernels on it (a device of compute capability 9.0, i.e. Hopper,
 * for the sm_90a kernels).
 *
 * It answers cleanly everywhere: on a machine with no GPU or no driver, or in
 * a CPU-only build (make CUDA=0), it returns DINF_STATUS_OK with usable = 0
 * and `reason` saying why. It reads device attributes only: it creates no
 * context and does not change the calling thread's current device.
 *
 * Arguments:
 *   device  [IN]     device ordinal, >= 0
 *   info    [IN,OUT] caller-owned; info->size must be set to the caller's
 *                    sizeof(dinf_device_info) (at least the size of this,
 *                    the first, version of the struct). Later library
 *                    versions never write past info->size.
 * Thread-safe. Synchronous; no stream.
 * Returns DINF_STATUS_OK, or DINF_STATUS_INVALID_ARGUMENT (NULL info,
 * info->size too small for the first fields, device < 0).
 */
DINF_API dinf_status dinf_device_query(int device, dinf_device_info *info);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DEEPINFRA_CORE_H */
