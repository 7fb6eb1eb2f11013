/*
 * Internal helpers shared by every module: error reporting and checked size
 * arithmetic. Not installed.
 */
#ifndef DINF_INTERNAL_H
#define DINF_INTERNAL_H

#include "deepinfra/core.h"

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DINF_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))
#else
#define DINF_PRINTF(fmt_idx, arg_idx)
#endif

/* Capacity of the thread-local last-error message, NUL included. */
#define DINF_ERROR_MESSAGE_MAX DINF_ERROR_MESSAGE_BYTES

/* Record "<func>: <formatted message>" as the thread's last error and return
 * status. Every failing public entry point returns through this. */
dinf_status dinf__fail(dinf_status status, const char *func, const char *fmt, ...) DINF_PRINTF(3, 4);

#define DINF_FAIL(status, ...) dinf__fail((status), __func__, __VA_ARGS__)

/* Put back a message saved from dinf_last_error() (after an internal call
 * whose failure is not the caller's). */
void dinf__restore_error(const char *message);

/* Checked arithmetic: return 0 and set *out on success, -1 on overflow. */
static inline int dinf__mul_i64(int64_t a, int64_t b, int64_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}
static inline int dinf__mul_size(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out) ? -1 : 0;
}
static inline int dinf__add_size(size_t a, size_t b, size_t *out) {
    return __builtin_add_overflow(a, b, out) ? -1 : 0;
}

/* A caller buffer, for the overlap check below (NULL or 0 bytes: ignored). */
typedef struct dinf__buffer {
    const char *name;
    const void *ptr;
    size_t bytes;
} dinf__buffer;

/* Fail with "<a> and <b> overlap" if any two of the n buffers share a byte:
 * the library must never write through one buffer into another. */
dinf_status dinf__check_disjoint(const char *func, const dinf__buffer *buffers, int n);

/*
 * A bump allocator over a caller-provided block. With base == NULL it only
 * counts, so the same carving code computes the workspace size (dry run) and
 * lays out the real workspace: the two cannot drift apart.
 */
typedef struct dinf__arena {
    unsigned char *base; /* NULL: measuring pass */
    size_t capacity;
    size_t used;
    int overflow; /* a request did not fit in size_t */
} dinf__arena;

#define DINF__ARENA_ALIGN 64

/* Reserve count * elem bytes at an offset from base that is a multiple of 64
 * (the block itself must be at least 8-byte aligned). Returns NULL in a measuring
 * pass, on overflow, or when capacity is exceeded (check arena->overflow and
 * dinf__arena_fits before use). */
void *dinf__arena_take(dinf__arena *arena, size_t count, size_t elem);

/*
 * The instruction sets of the CPU paths' vector kernels (x86-64; elsewhere
 * only BASE). Every variant computes the same lane-wise float32 operations
 * in the same order (no FMA contraction: the library builds with
 * -ffp-contract=off), so all of them give the same bits; wider ones are
 * faster. BASE is the build's baseline (SSE2 on x86-64).
 */
typedef enum dinf__isa { DINF__ISA_BASE = 0, DINF__ISA_AVX2 = 1, DINF__ISA_AVX512 = 2 } dinf__isa;

/* The widest set this CPU and OS support (cached), capped by the
 * environment variable DINF_CPU_ISA=base|avx2|avx512 (read on every call;
 * asking for more than the CPU has gives what it has). Returns -1 with a
 * message in msg (at most cap bytes) for any other value, which the caller
 * reports as DINF_STATUS_INVALID_ARGUMENT. */
int dinf__cpu_isa(char *msg, size_t cap);
const char *dinf__isa_name(int isa);

#ifdef __cplusplus
}
#endif

#endif /* DINF_INTERNAL_H */
