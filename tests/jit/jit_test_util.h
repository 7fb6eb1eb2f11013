/* Shared helpers of the JIT tests: temp dirs, configs, skips. */
#ifndef DINF_JIT_TEST_UTIL_H
#define DINF_JIT_TEST_UTIL_H

#define _GNU_SOURCE
#include <deepinfra.h>

#include "jit_internal.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline dinf_jit_kernel_config scale_rows_config(int block_threads, int elems, int bf16) {
    dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
    snprintf(c.name, sizeof c.name, "scale_rows");
    c.num_params = 3;
    c.params[0] = block_threads;
    c.params[1] = elems;
    c.params[2] = bf16;
    return c;
}

/* A fresh directory under /tmp (path written to out, PATH_MAX). */
static inline void make_tmpdir(char *out, size_t bytes) {
    snprintf(out, bytes, "/tmp/dinf-jit-test-XXXXXX");
    cr_assert_not_null(mkdtemp(out), "mkdtemp failed");
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void rm_rf(const char *path) {
    chmod(path, 0700);
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The test's temporary directory: Criterion runs no .fini after a skip, so
 * JIT_SKIP removes it first. */
static char *jit_test_tmp_root;

#define JIT_SKIP(...)                                                                              \
    do {                                                                                           \
        if (jit_test_tmp_root)                                                                     \
            rm_rf(jit_test_tmp_root);                                                              \
        cr_skip_test(__VA_ARGS__);                                                                 \
    } while (0)

/* The JIT needs a CUDA build and NVRTC; say so, visibly, where they are missing. */
static inline void require_nvrtc(void) {
#if !DINF_WITH_CUDA
    JIT_SKIP("CPU-only build (make CUDA=0): the JIT is unsupported");
#else
    int major, minor;
    if (dinf_jit_nvrtc_version(&major, &minor) != DINF_STATUS_OK)
        JIT_SKIP("NVRTC is not available: %s", dinf_last_error());
#endif
}

/* Entries (*.cubin, not temporaries) and temporaries in dir. */
static inline void count_entries(const char *dir, int *entries, int *temporaries, char *last,
                                 size_t last_bytes) {
    *entries = *temporaries = 0;
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "opendir(%s)", dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, ".tmp-", 5) == 0)
            (*temporaries)++;
        else if (strstr(de->d_name, ".cubin")) {
            (*entries)++;
            if (last)
                snprintf(last, last_bytes, "%s/%s", dir, de->d_name);
        }
    }
    closedir(d);
}

static inline dinf_jit_stats jit_stats(void) {
    dinf_jit_stats s = DINF_JIT_STATS_INIT;
    cr_assert_eq(dinf_jit_get_stats(&s), DINF_STATUS_OK, "%s", dinf_last_error());
    return s;
}

#endif
