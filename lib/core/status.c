/* Status strings, the thread-local last-error message, version. */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[DINF_ERROR_MESSAGE_MAX];

dinf_status dinf__fail(dinf_status status, const char *func, const char *fmt, ...) {
    int prefix = snprintf(last_error, sizeof last_error, "%s: ", func);
    if (prefix < 0 || (size_t)prefix >= sizeof last_error)
        prefix = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error + prefix, sizeof last_error - (size_t)prefix, fmt, ap);
    va_end(ap);
    return status;
}

DINF_API const char *dinf_last_error(void) { return last_error; }

DINF_API void dinf_set_last_error(const char *message) {
    if (!message) {
        last_error[0] = '\0';
        return;
    }
    /* message may lie inside last_error (its own text, or a suffix of it) */
    size_t n = 0;
    while (n < sizeof last_error - 1 && message[n] != '\0')
        n++;
    memmove(last_error, message, n);
    last_error[n] = '\0';
}

void dinf__restore_error(const char *message) {
    snprintf(last_error, sizeof last_error, "%s", message);
}

DINF_API const char *dinf_status_string(dinf_status status) {
    switch (status) {
    case DINF_STATUS_OK: return "ok";
    case DINF_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case DINF_STATUS_UNSUPPORTED: return "unsupported";
    case DINF_STATUS_OUT_OF_MEMORY: return "out of memory";
    case DINF_STATUS_CUDA_ERROR: return "CUDA error";
    case DINF_STATUS_NCCL_ERROR: return "NCCL error";
    case DINF_STATUS_JIT_ERROR: return "JIT error";
    case DINF_STATUS_TIMEOUT: return "timeout";
    case DINF_STATUS_INTERNAL: return "internal error";
    }
    return "unknown status";
}

DINF_API int dinf_version(void) { return DINF_VERSION_CODE; }

#define DINF_STR2(x) #x
#define DINF_STR(x) DINF_STR2(x)
#if DINF_WITH_CUDA
#define DINF_BUILD_FLAVOUR "+cuda"
#else
#define DINF_BUILD_FLAVOUR "+cpu"
#endif

DINF_API const char *dinf_version_string(void) {
    return DINF_STR(DINF_VERSION_MAJOR) "." DINF_STR(DINF_VERSION_MINOR) "." DINF_STR(
        DINF_VERSION_PATCH) DINF_BUILD_FLAVOUR;
}

static const struct {
    const char *name;
    size_t bytes;
} dtype_table[DINF_DTYPE_COUNT] = {
    [DINF_DTYPE_FLOAT32] = {"float32", 4},     [DINF_DTYPE_FLOAT64] = {"float64", 8},
    [DINF_DTYPE_FLOAT16] = {"float16", 2},     [DINF_DTYPE_BFLOAT16] = {"bfloat16", 2},
    [DINF_DTYPE_FP8_E4M3] = {"float8_e4m3fn", 1}, [DINF_DTYPE_FP8_E5M2] = {"float8_e5m2", 1},
    [DINF_DTYPE_INT8] = {"int8", 1},           [DINF_DTYPE_UINT8] = {"uint8", 1},
    [DINF_DTYPE_INT32] = {"int32", 4},         [DINF_DTYPE_INT64] = {"int64", 8},
};

DINF_API dinf_status dinf_dtype_size(dinf_dtype dtype, size_t *bytes) {
    if ((unsigned)dtype >= DINF_DTYPE_COUNT)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "dtype=%d is not a dinf_dtype value (0..%d)",
                         (int)dtype, DINF_DTYPE_COUNT - 1);
    if (!bytes)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "bytes is NULL");
    *bytes = dtype_table[dtype].bytes;
    return DINF_STATUS_OK;
}

DINF_API const char *dinf_dtype_name(dinf_dtype dtype) {
    if ((unsigned)dtype >= DINF_DTYPE_COUNT)
        return "unknown";
    return dtype_table[dtype].name;
}

void *dinf__arena_take(dinf__arena *arena, size_t count, size_t elem) {
    size_t bytes, start, end;
    if (dinf__mul_size(count, elem, &bytes) ||
        dinf__add_size(arena->used, DINF__ARENA_ALIGN - 1, &start)) {
        arena->overflow = 1;
        return NULL;
    }
    start &= ~(size_t)(DINF__ARENA_ALIGN - 1);
    if (dinf__add_size(start, bytes, &end)) {
        arena->overflow = 1;
        return NULL;
    }
    arena->used = end;
    if (!arena->base || end > arena->capacity)
        return NULL;
    return arena->base + start;
}

dinf_status dinf__check_disjoint(const char *func, const dinf__buffer *buffers, int n) {
    for (int i = 0; i < n; i++) {
        if (!buffers[i].ptr || !buffers[i].bytes)
            continue;
        uintptr_t a = (uintptr_t)buffers[i].ptr, a_end = a + buffers[i].bytes;
        for (int j = i + 1; j < n; j++) {
            if (!buffers[j].ptr || !buffers[j].bytes)
                continue;
            uintptr_t b = (uintptr_t)buffers[j].ptr, b_end = b + buffers[j].bytes;
            if (a < b_end && b < a_end)
                return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                                  "%s and %s overlap: pass separate buffers", buffers[i].name,
                                  buffers[j].name);
        }
    }
    return DINF_STATUS_OK;
}
