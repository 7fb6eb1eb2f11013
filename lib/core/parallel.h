/* CPU parallel loops and the execution-place argument. Not installed. */
#ifndef DINF_PARALLEL_H
#define DINF_PARALLEL_H

#include "internal.h"

/* A validated dinf_exec: kind, CUDA device and stream, CPU thread count. */
typedef struct dinf__place {
    int32_t kind; /* dinf_exec_kind */
    int32_t device;
    int32_t threads; /* CPU: >= 1 */
    dinf_stream_t stream;
} dinf__place;

/* Check exec (NULL = CPU, default threads) and resolve it. Fails with
 * INVALID_ARGUMENT for a bad size/kind/device/thread count, UNSUPPORTED for
 * DINF_EXEC_CUDA in a CPU-only build. */
dinf_status dinf__place_resolve(const char *func, const dinf_exec *exec, dinf__place *place);

/* Run body(ctx, begin, end) over [0, n) split into contiguous chunks of at
 * least min_chunk items on up to threads threads (the calling thread takes
 * the first chunk). Chunks whose thread cannot be started run on the calling
 * thread, so the work is always done and results never depend on the thread
 * count as long as body's results do not. Always DINF_STATUS_OK. */
dinf_status dinf__parallel_for(int32_t threads, int64_t n, int64_t min_chunk,
                               void (*body)(void *ctx, int64_t begin, int64_t end), void *ctx);

#endif
