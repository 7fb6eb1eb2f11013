/* NCCL loaded at run time (lib/ep/ep_nccl.h). */
#include "ep_nccl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

dinf_status dinf__nccl_load_from(const char *func, const char *name, dinf__nccl_api *api) {
    memset(api, 0, sizeof *api);
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "NCCL is not loadable: dlopen(\"%s\"): %s",
                          name, why ? why : "unknown error");
    }
    struct {
        const char *symbol;
        void **slot;
    } table[] = {
        {"ncclGetVersion", (void **)&api->get_version},
        {"ncclGetErrorString", (void **)&api->get_error_string},
        {"ncclCommCount", (void **)&api->comm_count},
        {"ncclCommUserRank", (void **)&api->comm_user_rank},
        {"ncclCommCuDevice", (void **)&api->comm_cu_device},
        {"ncclCommGetAsyncError", (void **)&api->comm_get_async_error},
        {"ncclAllGather", (void **)&api->all_gather},
        {"ncclSend", (void **)&api->send},
        {"ncclRecv", (void **)&api->recv},
        {"ncclGroupStart", (void **)&api->group_start},
        {"ncclGroupEnd", (void **)&api->group_end},
        {"ncclGetUniqueId", (void **)&api->get_unique_id},
        {"ncclCommInitRank", (void **)&api->comm_init_rank},
        {"ncclCommDestroy", (void **)&api->comm_destroy},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        void *p = dlsym(lib, table[i].symbol);
        if (!p) {
            dlclose(lib);
            memset(api, 0, sizeof *api);
            return dinf__fail(DINF_STATUS_UNSUPPORTED, func,
                              "NCCL library \"%s\" lacks %s (NCCL >= 2.7 is needed)", name,
                              table[i].symbol);
        }
        memcpy(table[i].slot, &p, sizeof p);
    }
    int version = 0;
    if (api->get_version(&version) != 0) {
        dlclose(lib);
        memset(api, 0, sizeof *api);
        return dinf__fail(DINF_STATUS_UNSUPPORTED, func, "ncclGetVersion failed in \"%s\"", name);
    }
    api->library = lib;
    api->version = version;
    return DINF_STATUS_OK;
}

static pthread_mutex_t nccl_mutex = PTHREAD_MUTEX_INITIALIZER;
static dinf__nccl_api nccl_api;
static int nccl_loaded;

dinf_status dinf__nccl(const char *func, const dinf__nccl_api **api) {
    pthread_mutex_lock(&nccl_mutex);
    dinf_status st = DINF_STATUS_OK;
    if (!nccl_loaded) {
        const char *name = getenv("DINF_NCCL_LIBRARY");
        st = dinf__nccl_load_from(func, name && *name ? name : "libnccl.so.2", &nccl_api);
        nccl_loaded = st == DINF_STATUS_OK;
    }
    pthread_mutex_unlock(&nccl_mutex);
    *api = st == DINF_STATUS_OK ? &nccl_api : NULL;
    return st;
}
