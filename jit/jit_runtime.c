/* The in-process kernel table (get-or-build), stats, log, and the public API. */
#define _GNU_SOURCE /* strdup, O_NOFOLLOW, getpwuid_r, clock_gettime */
#include "jit_internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if DINF_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

void dinf__jit_cache_dir_set_override(char *dir);
void dinf__jit_nvrtc_forget(void);
void dinf__jit_unload(void *library);

#define UNSUPPORTED_CPU_BUILD "libdeepinfra was built without CUDA (make CUDA=0): no JIT"

/* One kernel of the table, keyed by (config, arch). Entries are never freed
 * before dinf__jit_reset, so the pointers handed out stay valid. */
typedef struct entry {
    struct entry *next;
    dinf_jit_kernel_config config;
    char arch[16];
    int busy;       /* a thread is compiling/reading/loading it (lock released) */
    int have_cubin; /* build and cubin are set */
    int loaded;     /* kernel is set */
    dinf__jit_build build;
    dinf__jit_cubin cubin;
    dinf__jit_kernel kernel;
} entry;

#define NUM_BUCKETS 256

static struct {
    pthread_mutex_t lock;
    pthread_cond_t done; /* an entry stopped being busy */
    entry *buckets[NUM_BUCKETS];
    uint64_t counters[6];
    double compile_seconds;
} table = {.lock = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

double dinf__jit_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dinf__jit_log(const char *fmt, ...) {
    const char *env = getenv("DINF_JIT_LOG");
    if (!env || strcmp(env, "1") != 0)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "deepinfra jit: %s\n", line); /* one write per line */
}

#if DINF_WITH_CUDA /* the table protocol; CPU-only builds answer UNSUPPORTED first */
static void count(dinf__jit_counter c) {
    pthread_mutex_lock(&table.lock);
    table.counters[c]++;
    pthread_mutex_unlock(&table.lock);
}

/* Bucket of (config, arch): the config's used bytes only (the rest of the
 * struct is ignored, as generation ignores it). */
static unsigned bucket_of(const dinf_jit_kernel_config *c, const char *arch) {
    dinf__jit_hasher h;
    dinf__jit_hash_init(&h);
    dinf__jit_hash_field(&h, c->name, strlen(c->name));
    dinf__jit_hash_field(&h, c->params, (size_t)c->num_params * sizeof c->params[0]);
    dinf__jit_hash_field(&h, arch, strlen(arch));
    return (unsigned)(dinf__jit_hash_final(&h).lo % NUM_BUCKETS);
}

static int same_kernel(const entry *e, const dinf_jit_kernel_config *c, const char *arch) {
    return strcmp(e->arch, arch) == 0 && strcmp(e->config.name, c->name) == 0 &&
           e->config.num_params == c->num_params &&
           memcmp(e->config.params, c->params, (size_t)c->num_params * sizeof c->params[0]) == 0;
}

/* Find or insert, under the lock. NULL on allocation failure. */
static entry *find_or_insert(const dinf_jit_kernel_config *c, const char *arch) {
    unsigned b = bucket_of(c, arch);
    for (entry *e = table.buckets[b]; e; e = e->next)
        if (same_kernel(e, c, arch))
            return e;
    entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->config = *c;
    memset(e->config.params + c->num_params, 0,
           (DINF_JIT_MAX_PARAMS - (size_t)c->num_params) * sizeof c->params[0]);
    snprintf(e->arch, sizeof e->arch, "%s", arch);
    e->next = table.buckets[b];
    table.buckets[b] = e;
    return e;
}

/* The content key: everything that determines the cubin. */
static dinf__jit_key content_key(const char *source, const char *name_expression, const char *arch,
                                 int nv_major, int nv_minor) {
    dinf__jit_hasher h;
    dinf__jit_hash_init(&h);
    const char *lib = dinf_version_string();
    char nvrtc[32];
    snprintf(nvrtc, sizeof nvrtc, "NVRTC %d.%d", nv_major, nv_minor);
    uint32_t format = DINF_JIT_ENTRY_FORMAT;
    dinf__jit_hash_field(&h, "libdeepinfra jit", 16);
    dinf__jit_hash_field(&h, lib, strlen(lib));
    dinf__jit_hash_field(&h, &format, sizeof format);
    dinf__jit_hash_field(&h, nvrtc, strlen(nvrtc));
    dinf__jit_hash_field(&h, arch, strlen(arch));
    char arch_option[64];
    const char *opts[8];
    int n = dinf__jit_nvrtc_options(arch, arch_option, opts);
    for (int i = 0; i < n; i++)
        dinf__jit_hash_field(&h, opts[i], strlen(opts[i]));
    dinf__jit_hash_field(&h, source, strlen(source));
    dinf__jit_hash_field(&h, name_expression, strlen(name_expression));
    for (int i = 0; i < dinf__jit_embedded_count; i++) {
        const dinf__jit_embedded_file *f = &dinf__jit_embedded_files[i];
        dinf__jit_hash_field(&h, f->name, strlen(f->name));
        dinf__jit_hash_field(&h, f->text, f->bytes);
    }
    return dinf__jit_hash_final(&h);
}

/* Disk cache, then NVRTC. Runs without the lock; fills *build and *key. */
static dinf_status build_kernel(const char *func, const dinf__jit_template *tmpl,
                                const dinf_jit_kernel_config *config, const char *arch,
                                dinf__jit_build *build, dinf__jit_key *key, int *from_disk) {
    int major = 0, minor = 0;
    dinf_status st = dinf__jit_nvrtc_load(func, &major, &minor);
    if (st != DINF_STATUS_OK)
        return st;
    char label[256];
    dinf__jit_config_label(config, label, sizeof label);
    char *source = NULL, *expr = NULL, *dir = NULL, *path = NULL;
    st = dinf__jit_generate(tmpl, config, &source, &expr);
    if (st != DINF_STATUS_OK)
        return st;
    *key = content_key(source, expr, arch, major, minor);
    char hex[33];
    dinf__jit_key_hex(*key, hex);

    st = dinf__jit_cache_dir_resolve(func, &dir);
    if (st == DINF_STATUS_OK)
        st = dinf__jit_cache_dir_prepare(func, dir);
    if (st == DINF_STATUS_OK && !(path = dinf__jit_entry_path(dir, tmpl->name, *key)))
        st = DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "out of memory");
    if (st != DINF_STATUS_OK)
        goto done;

    double t0 = dinf__jit_now_seconds();
    char reason[256];
    int found = dinf__jit_entry_read(path, *key, build, reason, sizeof reason);
    if (found == 1) {
        *from_disk = 1;
        count(DINF_JIT_COUNT_DISK_HIT);
        dinf__jit_log("disk hit %s for %s in %.1f ms (key %s)", label, arch,
                      1e3 * (dinf__jit_now_seconds() - t0), hex);
        goto done;
    }
    if (found < 0) {
        count(DINF_JIT_COUNT_DISK_REJECT);
        dinf__jit_log("rejected %s: %s; rebuilding", path, reason);
    }

    *from_disk = 0;
    t0 = dinf__jit_now_seconds();
    st = dinf__jit_nvrtc_compile(func, label, source, expr, arch, build);
    double seconds = dinf__jit_now_seconds() - t0;
    pthread_mutex_lock(&table.lock);
    table.counters[st == DINF_STATUS_OK ? DINF_JIT_COUNT_COMPILE : DINF_JIT_COUNT_COMPILE_ERROR]++;
    table.compile_seconds += seconds;
    pthread_mutex_unlock(&table.lock);
    if (st != DINF_STATUS_OK) {
        dinf__jit_log("compile error %s for %s after %.1f ms", label, arch, 1e3 * seconds);
        goto done;
    }
    dinf__jit_log("compiled %s for %s in %.1f ms (key %s, %zu bytes, %d registers, %d bytes "
                  "stack, %d/%d bytes spill stores/loads)",
                  label, arch, 1e3 * seconds, hex, build->cubin_bytes, build->resources.registers,
                  build->resources.stack_frame_bytes, build->resources.spill_store_bytes,
                  build->resources.spill_load_bytes);
    st = dinf__jit_entry_write(func, dir, path, *key, build);
    if (st != DINF_STATUS_OK)
        dinf__jit_build_free(build);
done:
    free(source);
    free(expr);
    free(dir);
    free(path);
    return st;
}

/* The table protocol: find the entry; if what we need is there, done; if
 * another thread is working on it, wait; else mark it busy, work without the
 * lock, publish, wake the waiters. A failure leaves the entry as it was, so
 * each waiter then tries (and reports) on its own. */
static dinf_status get_entry(const char *func, const dinf__jit_template *tmpl,
                             const dinf_jit_kernel_config *config, const char *arch,
                             int want_loaded, entry **out) {
    pthread_mutex_lock(&table.lock);
    entry *e = find_or_insert(config, arch);
    if (!e) {
        pthread_mutex_unlock(&table.lock);
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "out of memory");
    }
    int worked = 0;
    for (;;) {
        if (e->have_cubin && (!want_loaded || e->loaded)) {
            if (!worked)
                table.counters[DINF_JIT_COUNT_MEMORY_HIT]++;
            pthread_mutex_unlock(&table.lock);
            *out = e;
            return DINF_STATUS_OK;
        }
        if (e->busy) {
            pthread_cond_wait(&table.done, &table.lock);
            continue;
        }
        e->busy = 1;
        int need_cubin = !e->have_cubin;
        pthread_mutex_unlock(&table.lock);

        dinf_status st;
        dinf__jit_build build = {0};
        dinf__jit_key key = {0, 0};
        int from_disk = 0;
        void *library = NULL, *kernel = NULL;
        int32_t registers = -1, static_smem = -1;
        if (need_cubin)
            st = build_kernel(func, tmpl, config, arch, &build, &key, &from_disk);
        else
            st = dinf__jit_load_cubin(func, &e->cubin, &library, &kernel, &registers,
                                      &static_smem);

        pthread_mutex_lock(&table.lock);
        e->busy = 0;
        worked = 1;
        if (st == DINF_STATUS_OK && need_cubin) {
            e->build = build;
            e->cubin.data = build.cubin;
            e->cubin.bytes = build.cubin_bytes;
            e->cubin.lowered_name = build.lowered_name;
            e->cubin.resources = build.resources;
            e->cubin.key = key;
            e->cubin.from_disk = from_disk;
            e->have_cubin = 1;
        } else if (st == DINF_STATUS_OK) {
            e->kernel.cubin = &e->cubin;
            e->kernel.library = library;
            e->kernel.kernel = kernel;
            e->kernel.loaded_registers = registers;
            e->kernel.loaded_static_smem = static_smem;
            e->loaded = 1;
            table.counters[DINF_JIT_COUNT_LOAD]++;
        }
        pthread_cond_broadcast(&table.done);
        if (st != DINF_STATUS_OK) {
            pthread_mutex_unlock(&table.lock);
            dinf__jit_build_free(&build); /* a failed compile still leaves NVRTC's log */
            return st;
        }
    }
}

#endif /* DINF_WITH_CUDA */

dinf_status dinf__jit_get_cubin(const char *func, const dinf_jit_kernel_config *config,
                                const char *arch, const dinf__jit_cubin **out) {
    const dinf__jit_template *tmpl;
    dinf_status st = dinf__jit_check_config(func, -1, config, &tmpl);
    if (st != DINF_STATUS_OK)
        return st;
    if (!dinf__jit_arch_valid(arch))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "arch=\"%s\" is not an architecture like \"sm_90a\"",
                          arch ? arch : "(null)");
#if !DINF_WITH_CUDA
    (void)out;
    return dinf__fail(DINF_STATUS_UNSUPPORTED, func, UNSUPPORTED_CPU_BUILD);
#else
    entry *e;
    st = get_entry(func, tmpl, config, arch, 0, &e);
    if (st == DINF_STATUS_OK)
        *out = &e->cubin;
    return st;
#endif
}

dinf_status dinf__jit_get_kernel(const char *func, const dinf_jit_kernel_config *config, int device,
                                 const dinf__jit_kernel **out) {
    const dinf__jit_template *tmpl;
    dinf_status st = dinf__jit_check_config(func, -1, config, &tmpl);
    if (st != DINF_STATUS_OK)
        return st;
#if !DINF_WITH_CUDA
    (void)device;
    (void)out;
    return dinf__fail(DINF_STATUS_UNSUPPORTED, func, UNSUPPORTED_CPU_BUILD);
#else
    char arch[16];
    st = dinf__jit_device_arch(func, device, arch);
    if (st != DINF_STATUS_OK)
        return st;
    entry *e;
    st = get_entry(func, tmpl, config, arch, 1, &e);
    if (st == DINF_STATUS_OK)
        *out = &e->kernel;
    return st;
#endif
}

void dinf__jit_reset(void) {
    pthread_mutex_lock(&table.lock);
    for (int b = 0; b < NUM_BUCKETS; b++) {
        entry *e = table.buckets[b];
        while (e) {
            entry *next = e->next;
            if (e->loaded)
                dinf__jit_unload(e->kernel.library);
            dinf__jit_build_free(&e->build);
            free(e);
            e = next;
        }
        table.buckets[b] = NULL;
    }
    memset(table.counters, 0, sizeof table.counters);
    table.compile_seconds = 0.0;
    pthread_mutex_unlock(&table.lock);
    dinf__jit_cache_dir_set_override(NULL);
    dinf__jit_nvrtc_forget();
}

/* ----------------------------------------------------------- public API -- */

DINF_API dinf_status dinf_jit_set_cache_dir(const char *path) {
#if !DINF_WITH_CUDA
    (void)path;
    return DINF_FAIL(DINF_STATUS_UNSUPPORTED, UNSUPPORTED_CPU_BUILD);
#else
    if (!path) {
        dinf__jit_cache_dir_set_override(NULL);
        return DINF_STATUS_OK;
    }
    size_t len = strnlen(path, 4000);
    if (len >= 4000)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "path is 4000 bytes or longer");
    if (path[0] != '/')
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "path=\"%s\" is not absolute", path);
    dinf_status st = dinf__jit_cache_dir_prepare(__func__, path);
    if (st != DINF_STATUS_OK)
        return st;
    char *copy = strdup(path);
    if (!copy)
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "out of memory");
    dinf__jit_cache_dir_set_override(copy);
    return DINF_STATUS_OK;
#endif
}

DINF_API dinf_status dinf_jit_get_cache_dir(char *buf, size_t buf_bytes, size_t *needed) {
#if !DINF_WITH_CUDA
    (void)buf;
    (void)buf_bytes;
    (void)needed;
    return DINF_FAIL(DINF_STATUS_UNSUPPORTED, UNSUPPORTED_CPU_BUILD);
#else
    if (!buf && buf_bytes > 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "buf is NULL but buf_bytes=%zu", buf_bytes);
    char *dir = NULL;
    dinf_status st = dinf__jit_cache_dir_resolve(__func__, &dir);
    if (st != DINF_STATUS_OK) {
        char msg[DINF_ERROR_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "%s", dinf_last_error());
        return DINF_FAIL(st, "%s", msg);
    }
    size_t n = strlen(dir) + 1;
    if (needed)
        *needed = n;
    if (buf_bytes < n) {
        free(dir);
        if (!buf && !buf_bytes)
            return DINF_STATUS_OK; /* size query */
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "buf_bytes=%zu but the path needs %zu",
                         buf_bytes, n);
    }
    memcpy(buf, dir, n);
    free(dir);
    return DINF_STATUS_OK;
#endif
}

#if DINF_WITH_CUDA
/* --------------------------------------------------- parallel precompile -- */

#define DINF_JIT_MAX_THREADS 64

/* Compile threads for n kernels: $DINF_JIT_THREADS (1..64) if set, else the
 * online cores (at most 16); never more than n. */
static dinf_status precompile_threads(const char *func, int64_t n, int *out) {
    long want;
    const char *env = getenv("DINF_JIT_THREADS");
    if (env && *env) {
        char *end = NULL;
        want = strtol(env, &end, 10);
        if (*end != '\0' || want < 1 || want > DINF_JIT_MAX_THREADS)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "DINF_JIT_THREADS=\"%s\" is not a thread count in [1, %d]", env,
                              DINF_JIT_MAX_THREADS);
    } else {
        want = sysconf(_SC_NPROCESSORS_ONLN);
        want = want < 1 ? 1 : want > 16 ? 16 : want;
    }
    if (want > n)
        want = n < 1 ? 1 : (long)n;
    *out = (int)want;
    return DINF_STATUS_OK;
}

typedef struct precompile_job {
    const dinf_jit_kernel_config *configs;
    int64_t count;
    const char *arch;
    int64_t next;         /* the next index to take (atomic) */
    int stop;             /* a failure was recorded (atomic) */
    pthread_mutex_t lock; /* guards the failure record */
    int64_t failed_index; /* lowest failing index, -1 while none */
    dinf_status failed_status;
    char message[DINF_ERROR_MESSAGE_MAX];
} precompile_job;

static void precompile_record(precompile_job *job, int64_t index, dinf_status st,
                              const char *message) {
    pthread_mutex_lock(&job->lock);
    if (job->failed_index < 0 || index < job->failed_index) {
        job->failed_index = index;
        job->failed_status = st;
        snprintf(job->message, sizeof job->message, "%s", message);
    }
    pthread_mutex_unlock(&job->lock);
    __atomic_store_n(&job->stop, 1, __ATOMIC_RELEASE);
}

static void *precompile_worker(void *arg) {
    precompile_job *job = arg;
    while (!__atomic_load_n(&job->stop, __ATOMIC_ACQUIRE)) {
        const int64_t i = __atomic_fetch_add(&job->next, 1, __ATOMIC_ACQ_REL);
        if (i >= job->count)
            break;
        const dinf__jit_cubin *cubin;
        const dinf_status st = dinf__jit_get_cubin("dinf_jit_precompile", &job->configs[i],
                                                   job->arch, &cubin);
        if (st != DINF_STATUS_OK)
            precompile_record(job, i, st, dinf_last_error()); /* this thread's message */
    }
    return NULL;
}
#endif

DINF_API dinf_status dinf_jit_precompile(const dinf_jit_kernel_config *configs, int64_t count,
                                         const char *arch) {
    if (count < 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "count=%lld is negative", (long long)count);
    if (!configs && count > 0)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "configs is NULL but count=%lld",
                         (long long)count);
    if (arch && !dinf__jit_arch_valid(arch))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "arch=\"%s\" is not an architecture like \"sm_90a\"", arch);
    /* Every config is checked before anything is compiled. */
    for (int64_t i = 0; i < count; i++) {
        const dinf__jit_template *tmpl;
        dinf_status st = dinf__jit_check_config(__func__, i, &configs[i], &tmpl);
        if (st != DINF_STATUS_OK)
            return st;
    }
#if !DINF_WITH_CUDA
    return DINF_FAIL(DINF_STATUS_UNSUPPORTED, UNSUPPORTED_CPU_BUILD);
#else
    int threads;
    dinf_status st = precompile_threads(__func__, count, &threads);
    if (st != DINF_STATUS_OK)
        return st;
    int device = 0;
    char device_arch[16];
    if (!arch) {
        cudaError_t err = cudaGetDevice(&device);
        if (err != cudaSuccess) {
            cudaGetLastError();
            return DINF_FAIL(DINF_STATUS_CUDA_ERROR,
                             "arch=NULL needs the current CUDA device: cudaGetDevice: %s",
                             cudaGetErrorString(err));
        }
        if ((st = dinf__jit_device_arch(__func__, device, device_arch)) != DINF_STATUS_OK)
            return st;
    }
    /* Phase 1: the cubins, `threads` compiles at a time (NVRTC compiles
     * independent programs concurrently; the table makes concurrent requests
     * for one kernel wait for the first). Workers take indices in order and
     * stop taking new ones after a failure, so every index below a failure
     * has been attempted: the lowest failing index is the one a sequential
     * loop would have stopped at. */
    precompile_job job = {.configs = configs, .count = count,
                          .arch = arch ? arch : device_arch, .failed_index = -1,
                          .lock = PTHREAD_MUTEX_INITIALIZER};
    pthread_t workers[DINF_JIT_MAX_THREADS];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&workers[started], NULL, precompile_worker, &job) != 0)
            break; /* fewer helpers: the calling thread still does all the rest */
        started++;
    }
    precompile_worker(&job);
    for (int t = 0; t < started; t++)
        pthread_join(workers[t], NULL);
    if (job.failed_index < 0 && !arch) {
        /* Phase 2: load each kernel on the current device (cubins in memory). */
        for (int64_t i = 0; i < count && job.failed_index < 0; i++) {
            const dinf__jit_kernel *kernel;
            if ((st = dinf__jit_get_kernel(__func__, &configs[i], device, &kernel)) !=
                DINF_STATUS_OK)
                precompile_record(&job, i, st, dinf_last_error());
        }
    }
    if (job.failed_index >= 0) {
        char label[256];
        const char *inner = job.message;
        size_t prefix = strlen(__func__);
        if (strncmp(inner, __func__, prefix) == 0 && strncmp(inner + prefix, ": ", 2) == 0)
            inner += prefix + 2; /* the inner call already named us */
        dinf__jit_config_label(&configs[job.failed_index], label, sizeof label);
        return DINF_FAIL(job.failed_status, "configs[%lld] (%s): %s",
                         (long long)job.failed_index, label, inner);
    }
    return DINF_STATUS_OK;
#endif
}

DINF_API dinf_status dinf_jit_get_stats(dinf_jit_stats *stats) {
    if (!stats)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "stats is NULL");
    if (stats->size < sizeof(dinf_jit_stats))
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT,
                         "stats->size=%u is smaller than sizeof(dinf_jit_stats)=%zu "
                         "(initialise it with DINF_JIT_STATS_INIT)",
                         stats->size, sizeof(dinf_jit_stats));
#if !DINF_WITH_CUDA
    return DINF_FAIL(DINF_STATUS_UNSUPPORTED, UNSUPPORTED_CPU_BUILD);
#else
    uint32_t size = stats->size;
    memset(stats, 0, sizeof *stats);
    stats->size = size;
    pthread_mutex_lock(&table.lock);
    stats->compiles = table.counters[DINF_JIT_COUNT_COMPILE];
    stats->compile_errors = table.counters[DINF_JIT_COUNT_COMPILE_ERROR];
    stats->memory_hits = table.counters[DINF_JIT_COUNT_MEMORY_HIT];
    stats->disk_hits = table.counters[DINF_JIT_COUNT_DISK_HIT];
    stats->disk_rejects = table.counters[DINF_JIT_COUNT_DISK_REJECT];
    stats->loads = table.counters[DINF_JIT_COUNT_LOAD];
    stats->compile_seconds = table.compile_seconds;
    pthread_mutex_unlock(&table.lock);
    return DINF_STATUS_OK;
#endif
}

DINF_API dinf_status dinf_jit_nvrtc_version(int *major, int *minor) {
    if (!major || !minor)
        return DINF_FAIL(DINF_STATUS_INVALID_ARGUMENT, "major or minor is NULL");
#if !DINF_WITH_CUDA
    return DINF_FAIL(DINF_STATUS_UNSUPPORTED, UNSUPPORTED_CPU_BUILD);
#else
    return dinf__jit_nvrtc_load(__func__, major, minor);
#endif
}
