/*
 * NCCL, loaded at run time (dlopen of libnccl.so.2, or $DINF_NCCL_LIBRARY):
 * the library never links NCCL, so it loads on machines without it. The
 * handful of entry points the NCCL transport (and the tests) use are
 * declared here with NCCL's C ABI (nccl.h of NCCL 2.x): results are ints
 * (ncclSuccess = 0), communicators and streams opaque pointers. Not
 * installed.
 */
#ifndef DINF_EP_NCCL_H
#define DINF_EP_NCCL_H

#include "../core/internal.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DINF__NCCL_UINT8 1 /* ncclUint8 */
#define DINF__NCCL_IN_PROGRESS 7 /* ncclInProgress (nonblocking communicators) */
#define DINF__NCCL_UNIQUE_ID_BYTES 128

typedef struct dinf__nccl_unique_id {
    char internal[DINF__NCCL_UNIQUE_ID_BYTES];
} dinf__nccl_unique_id;

typedef struct dinf__nccl_api {
    void *library; /* dlopen handle */
    int version;   /* ncclGetVersion: e.g. 22703 for 2.27.3 */
    int (*get_version)(int *version);
    const char *(*get_error_string)(int result);
    int (*comm_count)(void *comm, int *count);
    int (*comm_user_rank)(void *comm, int *rank);
    int (*comm_cu_device)(void *comm, int *device);
    int (*comm_get_async_error)(void *comm, int *async_error);
    int (*all_gather)(const void *send, void *recv, size_t count, int datatype, void *comm,
                      void *stream);
    int (*send)(const void *buf, size_t count, int datatype, int peer, void *comm, void *stream);
    int (*recv)(void *buf, size_t count, int datatype, int peer, void *comm, void *stream);
    int (*group_start)(void);
    int (*group_end)(void);
    /* for tests and tools (single-rank communicators) */
    int (*get_unique_id)(dinf__nccl_unique_id *id);
    int (*comm_init_rank)(void **comm, int nranks, dinf__nccl_unique_id id, int rank);
    int (*comm_destroy)(void *comm);
} dinf__nccl_api;

/* Load NCCL from `name` (a file name for dlopen) into *api (not cached; the
 * handle stays open). Returns DINF_STATUS_OK or DINF_STATUS_UNSUPPORTED with
 * the dlopen/dlsym message naming the library. */
dinf_status dinf__nccl_load_from(const char *func, const char *name, dinf__nccl_api *api);

/* The process-wide NCCL (loaded once, thread-safe; $DINF_NCCL_LIBRARY or
 * libnccl.so.2). Returns as dinf__nccl_load_from (a failure is retried on
 * the next call). */
dinf_status dinf__nccl(const char *func, const dinf__nccl_api **api);

#ifdef __cplusplus
}
#endif

#endif /* DINF_EP_NCCL_H */
