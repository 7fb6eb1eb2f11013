/* NVRTC, opened lazily with dlopen (never linked), and one compile. */
#define _GNU_SOURCE /* strdup, O_NOFOLLOW, getpwuid_r, clock_gettime */
#include "jit_internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The few NVRTC declarations we need (nvrtc.h, CUDA 12/13; a stable C ABI),
 * so that this file builds without the toolkit headers. */
typedef int nvrtc_result; /* NVRTC_SUCCESS = 0 */
typedef struct _nvrtcProgram *nvrtc_program;

static struct {
    pthread_mutex_t lock;
    int tried;
    dinf_status status;
    char message[768];
    void *handle;
    int major, minor;
    const char *(*GetErrorString)(nvrtc_result);
    nvrtc_result (*Version)(int *, int *);
    nvrtc_result (*CreateProgram)(nvrtc_program *, const char *, const char *, int,
                                  const char *const *, const char *const *);
    nvrtc_result (*DestroyProgram)(nvrtc_program *);
    nvrtc_result (*CompileProgram)(nvrtc_program, int, const char *const *);
    nvrtc_result (*GetProgramLogSize)(nvrtc_program, size_t *);
    nvrtc_result (*GetProgramLog)(nvrtc_program, char *);
    nvrtc_result (*GetCUBINSize)(nvrtc_program, size_t *);
    nvrtc_result (*GetCUBIN)(nvrtc_program, char *);
    nvrtc_result (*AddNameExpression)(nvrtc_program, const char *);
    nvrtc_result (*GetLoweredName)(nvrtc_program, const char *, const char **);
} nv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static dinf_status load_locked(void) {
    const char *override = getenv("DINF_NVRTC_LIBRARY");
    /* 13 first (the toolkit we build with); a runtime-only install ships no
     * unversioned link, so 12 is named too (NVRTC >= 12 is accepted below). */
    const char *names[3] = {"libnvrtc.so.13", "libnvrtc.so", "libnvrtc.so.12"};
    int count = 3;
    if (override && *override) {
        names[0] = override;
        count = 1;
    }
    char errors[512] = "";
    size_t used = 0;
    for (int i = 0; i < count && !nv.handle; i++) {
        nv.handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (!nv.handle) {
            const char *e = dlerror();
            int n = snprintf(errors + used, sizeof errors - used, "%s%s", used ? "; " : "",
                             e ? e : names[i]);
            if (n > 0 && used + (size_t)n < sizeof errors)
                used += (size_t)n;
        }
    }
    if (!nv.handle) {
        snprintf(nv.message, sizeof nv.message,
                 "NVRTC not found (%s); install the CUDA NVRTC library (libnvrtc.so.13) or set "
                 "DINF_NVRTC_LIBRARY to its path",
                 errors);
        return DINF_STATUS_UNSUPPORTED;
    }
#define SYM(field, name)                                                                           \
    do {                                                                                           \
        *(void **)&nv.field = dlsym(nv.handle, name);                                              \
        if (!nv.field) {                                                                           \
            snprintf(nv.message, sizeof nv.message, "NVRTC library lacks %s", name);               \
            dlclose(nv.handle);                                                                    \
            nv.handle = NULL;                                                                      \
            return DINF_STATUS_UNSUPPORTED;                                                        \
        }                                                                                          \
    } while (0)
    SYM(GetErrorString, "nvrtcGetErrorString");
    SYM(Version, "nvrtcVersion");
    SYM(CreateProgram, "nvrtcCreateProgram");
    SYM(DestroyProgram, "nvrtcDestroyProgram");
    SYM(CompileProgram, "nvrtcCompileProgram");
    SYM(GetProgramLogSize, "nvrtcGetProgramLogSize");
    SYM(GetProgramLog, "nvrtcGetProgramLog");
    SYM(GetCUBINSize, "nvrtcGetCUBINSize");
    SYM(GetCUBIN, "nvrtcGetCUBIN");
    SYM(AddNameExpression, "nvrtcAddNameExpression");
    SYM(GetLoweredName, "nvrtcGetLoweredName");
#undef SYM
    if (nv.Version(&nv.major, &nv.minor) != 0) {
        snprintf(nv.message, sizeof nv.message, "nvrtcVersion failed");
        dlclose(nv.handle);
        nv.handle = NULL;
        return DINF_STATUS_UNSUPPORTED;
    }
    /* cubins for sm_90a need CUDA 12.0+. */
    if (nv.major < 12) {
        snprintf(nv.message, sizeof nv.message, "NVRTC %d.%d is too old (12.0 or newer needed)",
                 nv.major, nv.minor);
        dlclose(nv.handle);
        nv.handle = NULL;
        return DINF_STATUS_UNSUPPORTED;
    }
    return DINF_STATUS_OK;
}

dinf_status dinf__jit_nvrtc_load(const char *func, int *major, int *minor) {
    pthread_mutex_lock(&nv.lock);
    if (!nv.tried) {
        nv.status = load_locked();
        nv.tried = 1;
    }
    dinf_status st = nv.status;
    char message[sizeof nv.message];
    memcpy(message, nv.message, sizeof message);
    if (major)
        *major = nv.major;
    if (minor)
        *minor = nv.minor;
    pthread_mutex_unlock(&nv.lock);
    if (st != DINF_STATUS_OK)
        return dinf__fail(st, func, "%s", message);
    return DINF_STATUS_OK;
}

/* Tests only (dinf__jit_reset): forget the lookup so that a changed
 * DINF_NVRTC_LIBRARY takes effect. The library stays mapped (programs may be
 * in flight in other tests' threads: never dlclose behind them). */
void dinf__jit_nvrtc_forget(void);
void dinf__jit_nvrtc_forget(void) {
    pthread_mutex_lock(&nv.lock);
    nv.tried = 0;
    nv.status = DINF_STATUS_OK;
    nv.message[0] = '\0';
    nv.handle = NULL;
    pthread_mutex_unlock(&nv.lock);
}

int dinf__jit_nvrtc_options(const char *arch, char arch_option[64], const char *opts[8]) {
    snprintf(arch_option, 64, "--gpu-architecture=%s", arch);
    int n = 0;
    opts[n++] = arch_option;
    opts[n++] = "-std=c++17";
    opts[n++] = "-default-device";
    /* The resource report (registers, stack, spills) goes to the log. */
    opts[n++] = "--ptxas-options=-v";
    opts[n++] = "-DDINF_JIT=1";
    return n;
}

void dinf__jit_build_free(dinf__jit_build *build) {
    if (!build)
        return;
    free(build->cubin);
    free(build->lowered_name);
    free(build->log);
    memset(build, 0, sizeof *build);
}

static void resources_unknown(dinf__jit_resources *r) {
    r->registers = r->stack_frame_bytes = r->spill_store_bytes = r->spill_load_bytes = -1;
    r->shared_bytes = r->barriers = -1;
}

/* The number just before `suffix` in [begin, end), or -1. */
static int32_t number_before(const char *begin, const char *end, const char *suffix) {
    size_t slen = strlen(suffix);
    for (const char *p = begin; p + slen <= end; p++) {
        if (memcmp(p, suffix, slen) != 0)
            continue;
        const char *q = p;
        while (q > begin && q[-1] == ' ')
            q--;
        const char *digits_end = q;
        while (q > begin && q[-1] >= '0' && q[-1] <= '9')
            q--;
        if (q == digits_end)
            continue;
        long v = strtol(q, NULL, 10);
        return v > INT32_MAX ? INT32_MAX : (int32_t)v;
    }
    return -1;
}

/* ptxas -v prints, per entry function:
 *   ptxas info    : Compiling entry function '<sym>' for 'sm_90a'
 *   ptxas info    : Function properties for <sym>
 *       0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
 *   ptxas info    : Used 16 registers, used 0 barriers, 400 bytes cmem[0]
 * (smem appears as "N bytes smem" when static shared memory is used). */
int dinf__jit_parse_ptxas_log(const char *log, const char *symbol, dinf__jit_resources *out) {
    resources_unknown(out);
    if (!log || !symbol)
        return -1;
    const char *marker = "Compiling entry function '";
    size_t mlen = strlen(marker), slen = strlen(symbol);
    for (const char *p = strstr(log, marker); p; p = strstr(p + 1, marker)) {
        const char *name = p + mlen;
        if (strncmp(name, symbol, slen) != 0 || name[slen] != '\'')
            continue;
        const char *begin = name + slen;
        const char *end = strstr(begin, marker);
        if (!end)
            end = begin + strlen(begin);
        out->stack_frame_bytes = number_before(begin, end, "bytes stack frame");
        out->spill_store_bytes = number_before(begin, end, "bytes spill stores");
        out->spill_load_bytes = number_before(begin, end, "bytes spill loads");
        out->registers = number_before(begin, end, "registers");
        out->barriers = number_before(begin, end, "barriers");
        out->shared_bytes = number_before(begin, end, "bytes smem");
        if (out->shared_bytes < 0 && out->registers >= 0)
            out->shared_bytes = 0; /* ptxas omits smem when there is none */
        return out->registers >= 0 && out->stack_frame_bytes >= 0 ? 0 : -1;
    }
    return -1;
}

dinf_status dinf__jit_nvrtc_compile(const char *func, const char *label, const char *source,
                                    const char *name_expression, const char *arch,
                                    dinf__jit_build *out) {
    memset(out, 0, sizeof *out);
    resources_unknown(&out->resources);
    dinf_status st = dinf__jit_nvrtc_load(func, NULL, NULL);
    if (st != DINF_STATUS_OK)
        return st;

    const char *names[64], *texts[64];
    int count = dinf__jit_embedded_count < 64 ? dinf__jit_embedded_count : 64;
    for (int i = 0; i < count; i++) {
        names[i] = dinf__jit_embedded_files[i].name;
        texts[i] = dinf__jit_embedded_files[i].text;
    }
    char file_name[96];
    snprintf(file_name, sizeof file_name, "%s.cu", label);
    nvrtc_program prog = NULL;
    nvrtc_result r = nv.CreateProgram(&prog, source, file_name, count, texts, names);
    if (r != 0)
        return dinf__fail(DINF_STATUS_JIT_ERROR, func, "nvrtcCreateProgram(%s): %s", label,
                         nv.GetErrorString(r));
    r = nv.AddNameExpression(prog, name_expression);
    if (r != 0) {
        nv.DestroyProgram(&prog);
        return dinf__fail(DINF_STATUS_JIT_ERROR, func, "nvrtcAddNameExpression(%s): %s", name_expression,
                         nv.GetErrorString(r));
    }
    char arch_option[64];
    const char *opts[8];
    int nopts = dinf__jit_nvrtc_options(arch, arch_option, opts);
    dinf_status result = DINF_STATUS_OK;
    nvrtc_result compiled = nv.CompileProgram(prog, nopts, opts);

    size_t log_bytes = 0;
    if (nv.GetProgramLogSize(prog, &log_bytes) == 0 && log_bytes > 0) {
        out->log = malloc(log_bytes + 1);
        if (out->log && nv.GetProgramLog(prog, out->log) == 0)
            out->log[log_bytes] = '\0';
        else if (out->log)
            out->log[0] = '\0';
    }
    if (compiled != 0) {
        /* The log is what the caller needs: the message keeps as much as fits. */
        result = dinf__fail(DINF_STATUS_JIT_ERROR, func, "NVRTC failed to compile %s for %s (%s): %s",
                           label, arch, nv.GetErrorString(compiled),
                           out->log && out->log[0] ? out->log : "(no log)");
        goto done;
    }
    const char *lowered = NULL;
    size_t cubin_bytes = 0;
    if (nv.GetLoweredName(prog, name_expression, &lowered) != 0 || !lowered ||
        nv.GetCUBINSize(prog, &cubin_bytes) != 0 || cubin_bytes == 0) {
        result = dinf__fail(DINF_STATUS_JIT_ERROR, func,
                           "NVRTC compiled %s for %s but gave no cubin or kernel symbol", label,
                           arch);
        goto done;
    }
    out->lowered_name = strdup(lowered);
    out->cubin = malloc(cubin_bytes);
    if (!out->lowered_name || !out->cubin) {
        result = dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "out of memory copying the cubin of %s",
                           label);
        goto done;
    }
    if (nv.GetCUBIN(prog, (char *)out->cubin) != 0) {
        result = dinf__fail(DINF_STATUS_JIT_ERROR, func, "nvrtcGetCUBIN(%s) failed", label);
        goto done;
    }
    out->cubin_bytes = cubin_bytes;
    dinf__jit_parse_ptxas_log(out->log, out->lowered_name, &out->resources);
done:
    nv.DestroyProgram(&prog);
    if (result != DINF_STATUS_OK) {
        free(out->cubin);
        free(out->lowered_name);
        out->cubin = NULL;
        out->lowered_name = NULL;
        out->cubin_bytes = 0;
    }
    return result;
}
