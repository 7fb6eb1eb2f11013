/* Kernel template registry, config checks and deterministic source text. */
#define _GNU_SOURCE /* strdup, O_NOFOLLOW, getpwuid_r, clock_gettime */
#include "jit_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every kernel template the library ships. Ranges are coarse sanity bounds;
 * finer rules live in the template as static_asserts (NVRTC reports them). */
static const dinf__jit_template templates[] = {
    {"scale_rows", "scale_rows.cuh", "dinf_jit::scale_rows", 3,
     {{"BLOCK_THREADS", 1, 1024}, {"ELEMS_PER_THREAD", 1, 16}, {"OUT_BF16", 0, 1}}},
    /* The Hopper FP8 GEMM (fp8_gemm.cuh documents the finer rules). */
    {"fp8_gemm", "fp8_gemm.cuh", "dinf_jit::fp8_gemm", 4,
     {{"GEMM_TYPE", 0, 2}, {"BLOCK_M", 64, 128}, {"BLOCK_N", 16, 128}, {"NUM_STAGES", 1, 16}}},
    /* Its fast rung (fp8_gemm_fast.cuh): TMA-store epilogue, setmaxnreg, 2-CTA
     * multicast or split-K over clusters of 2..4. */
    {"fp8_gemm_fast", "fp8_gemm_fast.cuh", "dinf_jit::fp8_gemm_fast", 6,
     {{"GEMM_TYPE", 0, 2}, {"BLOCK_M", 64, 256}, {"BLOCK_N", 16, 160}, {"NUM_STAGES", 1, 16},
      {"CLUSTER", 1, 4}, {"SPLIT_K", 1, 4}}},
    /* The weight-gradient GEMM, 1x128 scales on both operands, float32 d +=
     * (fp8_gemm_1d1d.cuh). */
    {"fp8_gemm_1d1d", "fp8_gemm_1d1d.cuh", "dinf_jit::fp8_gemm_1d1d", 3,
     {{"BLOCK_M", 64, 128}, {"BLOCK_N", 16, 128}, {"NUM_STAGES", 1, 16}}},
    /* The float32 reference GEMM of the GPU tests and benchmarks (f32_gemm_ref.cuh). */
    {"f32_gemm_nt_ref", "f32_gemm_ref.cuh", "dinf_jit::f32_gemm_nt_ref", 1, {{"TILE", 16, 32}}},
};

const dinf__jit_template *dinf__jit_find_template(const char *name) {
    for (size_t i = 0; i < sizeof templates / sizeof templates[0]; i++)
        if (strcmp(templates[i].name, name) == 0)
            return &templates[i];
    return NULL;
}

static int name_terminated(const dinf_jit_kernel_config *config) {
    return memchr(config->name, '\0', sizeof config->name) != NULL;
}

dinf_status dinf__jit_check_config(const char *func, int64_t index,
                                   const dinf_jit_kernel_config *config,
                                   const dinf__jit_template **tmpl) {
    char where[48] = "config";
    if (index >= 0)
        snprintf(where, sizeof where, "configs[%lld]", (long long)index);
    if (!config)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func, "%s is NULL", where);
    if (config->size != sizeof(dinf_jit_kernel_config))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "%s.size=%u is not sizeof(dinf_jit_kernel_config)=%zu "
                          "(initialise it with DINF_JIT_KERNEL_CONFIG_INIT)",
                          where, config->size, sizeof(dinf_jit_kernel_config));
    if (!name_terminated(config))
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "%s.name is not NUL-terminated within %d bytes", where,
                          DINF_JIT_NAME_MAX);
    const dinf__jit_template *t = dinf__jit_find_template(config->name);
    if (!t)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "%s.name=\"%s\" is not a kernel template of this library", where,
                          config->name);
    if (config->num_params != t->num_params)
        return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                          "%s: template %s takes %d params, num_params=%d", where, t->name,
                          t->num_params, (int)config->num_params);
    for (int i = 0; i < t->num_params; i++) {
        int64_t v = config->params[i];
        if (v < t->params[i].min || v > t->params[i].max)
            return dinf__fail(DINF_STATUS_INVALID_ARGUMENT, func,
                              "%s: %s param %d (%s)=%lld is outside [%lld, %lld]", where, t->name,
                              i, t->params[i].name, (long long)v, (long long)t->params[i].min,
                              (long long)t->params[i].max);
    }
    *tmpl = t;
    return DINF_STATUS_OK;
}

/* printf into a growing malloc'ed string; NULL on allocation failure. */
typedef struct strbuf {
    char *data;
    size_t len, cap;
    int failed;
} strbuf;

static void sb_printf(strbuf *sb, const char *fmt, ...) DINF_PRINTF(2, 3);

#include <stdarg.h>
static void sb_printf(strbuf *sb, const char *fmt, ...) {
    if (sb->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(sb->data ? sb->data + sb->len : NULL, sb->data ? sb->cap - sb->len : 0,
                          fmt, ap);
        va_end(ap);
        if (n < 0) {
            sb->failed = 1;
            return;
        }
        if (sb->data && sb->len + (size_t)n < sb->cap) {
            sb->len += (size_t)n;
            return;
        }
        size_t cap = (sb->cap ? sb->cap * 2 : 256) + (size_t)n;
        char *p = realloc(sb->data, cap);
        if (!p) {
            sb->failed = 1;
            return;
        }
        sb->data = p;
        sb->cap = cap;
    }
}

void dinf__jit_config_label(const dinf_jit_kernel_config *config, char *buf, size_t buf_bytes) {
    size_t used = 0;
    int n = snprintf(buf, buf_bytes, "%.*s<", DINF_JIT_NAME_MAX - 1, config->name);
    used = n > 0 ? (size_t)n : 0;
    int count = config->num_params < 0 ? 0
                : config->num_params > DINF_JIT_MAX_PARAMS ? DINF_JIT_MAX_PARAMS
                                                            : config->num_params;
    for (int i = 0; i < count && used < buf_bytes; i++) {
        n = snprintf(buf + used, buf_bytes - used, "%s%lld", i ? "," : "",
                     (long long)config->params[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    if (used < buf_bytes)
        snprintf(buf + used, buf_bytes - used, ">");
}

dinf_status dinf__jit_generate(const dinf__jit_template *tmpl, const dinf_jit_kernel_config *config,
                               char **source, char **name_expression) {
    strbuf expr = {0}, src = {0};
    sb_printf(&expr, "%s<", tmpl->function);
    for (int i = 0; i < tmpl->num_params; i++)
        sb_printf(&expr, "%s%lld", i ? ", " : "", (long long)config->params[i]);
    sb_printf(&expr, ">");

    sb_printf(&src, "// Generated by libdeepinfra's JIT runtime: kernel template %s\n", tmpl->name);
    for (int i = 0; i < tmpl->num_params; i++)
        sb_printf(&src, "//   %s = %lld\n", tmpl->params[i].name, (long long)config->params[i]);
    sb_printf(&src, "#include \"%s\"\n", tmpl->header);
    /* No explicit instantiation: NVRTC instantiates the name expression
     * (added by the compiler layer) and gives back its mangled symbol. */
    sb_printf(&src, "// kernel: %s\n", expr.failed ? "" : expr.data);
    if (expr.failed || src.failed) {
        free(expr.data);
        free(src.data);
        return DINF_FAIL(DINF_STATUS_OUT_OF_MEMORY, "out of memory generating kernel source");
    }
    *source = src.data;
    *name_expression = expr.data;
    return DINF_STATUS_OK;
}

int dinf__jit_arch_valid(const char *arch) {
    if (!arch || strncmp(arch, "sm_", 3) != 0)
        return 0;
    const char *p = arch + 3;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        p++;
        digits++;
    }
    if (digits < 2 || digits > 3)
        return 0;
    if (*p == 'a' || *p == 'f')
        p++;
    return *p == '\0';
}
