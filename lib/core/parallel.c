/* CPU parallel loops (one pthread per chunk, joined before returning) and
 * the execution-place argument. */
#define _GNU_SOURCE
#include "parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define DINF_MAX_THREADS 1024
#define EXEC_V1_SIZE ((size_t)24)
_Static_assert(sizeof(dinf_exec) >= EXEC_V1_SIZE, "dinf_exec shrank");

dinf_status dinf__place_resolve(const char *func, const dinf_exec *exec, dinf__place *place) {
    place->kind = DINF_EXEC_CPU;
    place->device = 0;
    place->stream = NULL;
    place->threads = 0;
    if (exec) {
        if (exec->size < EXEC_V1_SIZE)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "exec->size=%u is smaller than the %zu bytes of the first "
                              "dinf_exec (initialise it with DINF_EXEC_CPU_INIT or "
                              "DINF_EXEC_CUDA_INIT)",
                              exec->size, EXEC_V1_SIZE);
        if (exec->kind != DINF_EXEC_CPU && exec->kind != DINF_EXEC_CUDA)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "exec->kind=%d is not DINF_EXEC_CPU (0) or DINF_EXEC_CUDA (1)",
                              (int)exec->kind);
        place->kind = exec->kind;
        if (exec->kind == DINF_EXEC_CUDA) {
#if !DINF_WITH_CUDA
            return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                              "exec->kind is DINF_EXEC_CUDA but libdeepinfra was built without "
                              "CUDA (make CUDA=0)");
#else
            if (exec->device < 0)
                return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                                  "exec->device=%d is negative", (int)exec->device);
            place->device = exec->device;
            place->stream = exec->stream;
            return DINF_STATUS_OK;
#endif
        }
        if (exec->num_threads < 0 || exec->num_threads > DINF_MAX_THREADS)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "exec->num_threads=%d must be in [0, %d] (0: all cores)",
                              (int)exec->num_threads, DINF_MAX_THREADS);
        place->threads = exec->num_threads;
    }
    if (place->threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        place->threads = cores < 1 ? 1 : cores > DINF_MAX_THREADS ? DINF_MAX_THREADS : (int32_t)cores;
    }
    return DINF_STATUS_OK;
}

typedef struct chunk {
    void (*body)(void *, int64_t, int64_t);
    void *ctx;
    int64_t begin, end;
} chunk;

static void *run_chunk(void *arg) {
    chunk *c = arg;
    c->body(c->ctx, c->begin, c->end);
    return NULL;
}

dinf_status dinf__parallel_for(int32_t threads, int64_t n, int64_t min_chunk,
                               void (*body)(void *ctx, int64_t begin, int64_t end), void *ctx) {
    if (n <= 0)
        return DINF_STATUS_OK;
    if (min_chunk < 1)
        min_chunk = 1;
    int64_t parts = (n + min_chunk - 1) / min_chunk;
    if (parts > threads)
        parts = threads;
    if (parts <= 1) {
        body(ctx, 0, n);
        return DINF_STATUS_OK;
    }
    chunk *chunks = malloc((size_t)parts * sizeof *chunks);
    pthread_t *tids = malloc((size_t)parts * sizeof *tids);
    if (!chunks || !tids) {
        free(chunks);
        free(tids);
        body(ctx, 0, n);
        return DINF_STATUS_OK;
    }
    int64_t started = 0;
    for (int64_t p = 0; p < parts; p++) {
        chunks[p] = (chunk){body, ctx, n * p / parts, n * (p + 1) / parts};
        if (p == 0)
            continue; /* the calling thread's share */
        if (pthread_create(&tids[p], NULL, run_chunk, &chunks[p]) != 0)
            break;
        started = p;
    }
    body(ctx, chunks[0].begin, chunks[0].end);
    for (int64_t p = 1; p <= started; p++)
        pthread_join(tids[p], NULL);
    for (int64_t p = started + 1; p < parts; p++) /* threads that could not start */
        body(ctx, chunks[p].begin, chunks[p].end);
    free(chunks);
    free(tids);
    return DINF_STATUS_OK;
}
