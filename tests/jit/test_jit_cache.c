/*
 * The JIT disk cache: directory choice and creation, refusal of unsafe or
 * unusable directories, disk hits in a fresh process table, entries that are
 * truncated, corrupted, foreign-owned, unsafe or symlinked (rebuilt, never
 * loaded), threads and two processes racing for one kernel, and the
 * DINF_JIT_LOG lines.
 */
#include "jit_test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static char tmp_root[256];  /* removed at the end */
static char cache_dir[512]; /* tmp_root/cache */

static void setup(void) {
    dinf__jit_reset();
    make_tmpdir(tmp_root, sizeof tmp_root);
    jit_test_tmp_root = tmp_root;
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", tmp_root);
    setenv("DINF_JIT_CACHE_DIR", cache_dir, 1);
    unsetenv("DINF_JIT_LOG");
}

static void teardown(void) {
    dinf__jit_reset();
    rm_rf(tmp_root);
}

TestSuite(jit_cache, .init = setup, .fini = teardown, .timeout = 120.0);
TestSuite(jit_cache_dir, .init = setup, .fini = teardown, .timeout = 60.0);
TestSuite(jit_log, .init = setup, .fini = teardown, .timeout = 60.0);

static const dinf__jit_cubin *get(dinf_jit_kernel_config c) {
    const dinf__jit_cubin *cubin = NULL;
    cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    return cubin;
}

/* Compile once, forget the process table, and return the entry's path and
 * a copy of the cubin. */
static char entry_path[1024];
static unsigned char *first_cubin;
static size_t first_bytes;
static void compile_and_forget(void) {
    const dinf__jit_cubin *c = get(scale_rows_config(256, 4, 0));
    first_bytes = c->bytes;
    first_cubin = malloc(first_bytes);
    memcpy(first_cubin, c->data, first_bytes);
    int entries, temporaries;
    count_entries(cache_dir, &entries, &temporaries, entry_path, sizeof entry_path);
    cr_assert_eq(entries, 1);
    cr_assert_eq(temporaries, 0);
    dinf__jit_reset();
}

/* After a bad entry: the next request compiles again, counts a reject, and
 * leaves one valid entry that a fresh table reads as a disk hit. */
static void expect_rebuilt(const char *what) {
    const dinf__jit_cubin *c = get(scale_rows_config(256, 4, 0));
    dinf_jit_stats s = jit_stats();
    cr_assert_eq(s.disk_hits, 0, "%s: the bad entry was loaded", what);
    cr_assert_eq(s.disk_rejects, 1, "%s: not counted as rejected", what);
    cr_assert_eq(s.compiles, 1, "%s: not rebuilt", what);
    cr_assert_eq(c->bytes, first_bytes, "%s", what);
    cr_assert_eq(memcmp(c->data, first_cubin, first_bytes), 0, "%s: cubin differs", what);
    struct stat st;
    cr_assert_eq(lstat(entry_path, &st), 0);
    cr_assert(S_ISREG(st.st_mode), "%s: the entry is not a regular file again", what);
    cr_assert_eq(st.st_uid, geteuid(), "%s: the entry was not replaced", what);
    cr_assert_eq(st.st_mode & 0777, 0600, "%s: mode %o", what, st.st_mode & 0777);
    dinf__jit_reset();
    get(scale_rows_config(256, 4, 0));
    s = jit_stats();
    cr_assert_eq(s.disk_hits, 1, "%s: the rebuilt entry is not a valid disk hit", what);
    cr_assert_eq(s.compiles, 0);
    free(first_cubin);
}

/* ----------------------------------------------------------- disk hits -- */

Test(jit_cache, second_process_table_reads_the_entry_from_disk) {
    require_nvrtc();
    const dinf__jit_cubin *a = get(scale_rows_config(256, 4, 0));
    cr_assert_eq(a->from_disk, 0);
    dinf__jit_resources ra = a->resources;
    char name[256];
    snprintf(name, sizeof name, "%s", a->lowered_name);
    size_t bytes = a->bytes;
    unsigned char *copy = malloc(bytes);
    memcpy(copy, a->data, bytes);
    /* Same table: a memory hit, the same pointer. */
    cr_assert_eq(get(scale_rows_config(256, 4, 0)), a);
    dinf_jit_stats s = jit_stats();
    cr_assert_eq(s.compiles, 1);
    cr_assert_eq(s.memory_hits, 1);

    dinf__jit_reset(); /* as a new process */
    const dinf__jit_cubin *b = get(scale_rows_config(256, 4, 0));
    s = jit_stats();
    cr_assert_eq(s.compiles, 0);
    cr_assert_eq(s.disk_hits, 1);
    cr_assert_eq(b->from_disk, 1);
    cr_assert_eq(b->bytes, bytes);
    cr_assert_eq(memcmp(b->data, copy, bytes), 0);
    cr_assert_str_eq(b->lowered_name, name);
    cr_assert_eq(memcmp(&b->resources, &ra, sizeof ra), 0, "resources not kept in the entry");
    free(copy);
}

Test(jit_cache, entries_are_owner_only_and_content_named) {
    require_nvrtc();
    get(scale_rows_config(256, 4, 0));
    get(scale_rows_config(128, 4, 0));
    int entries, temporaries;
    char last[1024];
    count_entries(cache_dir, &entries, &temporaries, last, sizeof last);
    cr_assert_eq(entries, 2);
    cr_assert_eq(temporaries, 0);
    struct stat st;
    cr_assert_eq(stat(cache_dir, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700, "cache dir mode %o", st.st_mode & 0777);
    cr_assert_eq(stat(last, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "entry mode %o", st.st_mode & 0777);
    regex_t re;
    cr_assert_eq(regcomp(&re, "/scale_rows-[0-9a-f]{32}\\.cubin$", REG_EXTENDED), 0);
    cr_assert_eq(regexec(&re, last, 0, NULL, 0), 0, "entry name %s", last);
    regfree(&re);
}

/* ------------------------------------------------------------ bad entries -- */

Test(jit_cache, truncated_entry_is_rebuilt) {
    require_nvrtc();
    compile_and_forget();
    struct stat st;
    cr_assert_eq(stat(entry_path, &st), 0);
    cr_assert_eq(truncate(entry_path, st.st_size / 2), 0);
    expect_rebuilt("truncated");
}

Test(jit_cache, entry_truncated_inside_the_header_is_rebuilt) {
    require_nvrtc();
    compile_and_forget();
    cr_assert_eq(truncate(entry_path, 10), 0);
    expect_rebuilt("truncated to 10 bytes");
}

static void flip_byte(const char *path, long offset_from_end_or_start, int from_end) {
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    struct stat st;
    fstat(fd, &st);
    off_t at = from_end ? st.st_size - offset_from_end_or_start : offset_from_end_or_start;
    unsigned char b;
    cr_assert_eq(pread(fd, &b, 1, at), 1);
    b ^= 0x10;
    cr_assert_eq(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

Test(jit_cache, flipped_byte_in_the_cubin_is_rebuilt) {
    require_nvrtc();
    compile_and_forget();
    flip_byte(entry_path, 100, 1);
    expect_rebuilt("cubin byte flipped");
}

Test(jit_cache, bad_magic_is_rebuilt) {
    require_nvrtc();
    compile_and_forget();
    flip_byte(entry_path, 0, 0);
    expect_rebuilt("magic byte flipped");
}

Test(jit_cache, entry_of_another_kernel_under_this_name_is_rebuilt) {
    require_nvrtc();
    compile_and_forget(); /* entry_path names scale_rows<256,4,0> */
    get(scale_rows_config(128, 8, 1));
    char other[1100] = "";
    DIR *d = opendir(cache_dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        char p[1100];
        snprintf(p, sizeof p, "%s/%s", cache_dir, de->d_name);
        if (strstr(de->d_name, ".cubin") && strcmp(p, entry_path) != 0)
            snprintf(other, sizeof other, "%s", p);
    }
    closedir(d);
    cr_assert_neq(other[0], '\0', "no second entry");
    dinf__jit_reset();
    cr_assert_eq(rename(other, entry_path), 0);
    expect_rebuilt("key mismatch");
}

Test(jit_cache, foreign_owned_entry_is_rebuilt) {
    require_nvrtc();
    if (geteuid() != 0)
        JIT_SKIP("needs root to give the entry to another user (uid 65534)");
    compile_and_forget();
    cr_assert_eq(chown(entry_path, 65534, 65534), 0, "chown: %s", strerror(errno));
    expect_rebuilt("owned by uid 65534");
}

Test(jit_cache, group_writable_entry_is_rebuilt) {
    require_nvrtc();
    compile_and_forget();
    cr_assert_eq(chmod(entry_path, 0620), 0);
    expect_rebuilt("group-writable");
}

Test(jit_cache, symlinked_entry_is_rebuilt) {
    require_nvrtc();
    compile_and_forget();
    char target[1100];
    snprintf(target, sizeof target, "%s/elsewhere.bin", tmp_root);
    cr_assert_eq(rename(entry_path, target), 0);
    cr_assert_eq(symlink(target, entry_path), 0);
    expect_rebuilt("symlink");
}

/* ------------------------------------------------------------ directory -- */

Test(jit_cache_dir, resolution_order) {
#if !DINF_WITH_CUDA
    JIT_SKIP("CPU-only build");
#endif
    char buf[1024];
    setenv("HOME", "/home/someone", 1);
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    setenv("DINF_JIT_CACHE_DIR", "/explicit/dir", 1);
    cr_assert_eq(dinf_jit_get_cache_dir(buf, sizeof buf, NULL), DINF_STATUS_OK);
    cr_assert_str_eq(buf, "/explicit/dir");
    unsetenv("DINF_JIT_CACHE_DIR");
    cr_assert_eq(dinf_jit_get_cache_dir(buf, sizeof buf, NULL), DINF_STATUS_OK);
    cr_assert_str_eq(buf, "/xdg/deepinfra");
    setenv("XDG_CACHE_HOME", "relative", 1); /* ignored, as the XDG spec says */
    cr_assert_eq(dinf_jit_get_cache_dir(buf, sizeof buf, NULL), DINF_STATUS_OK);
    cr_assert_str_eq(buf, "/home/someone/.cache/deepinfra");
    unsetenv("XDG_CACHE_HOME");
    cr_assert_eq(dinf_jit_get_cache_dir(buf, sizeof buf, NULL), DINF_STATUS_OK);
    cr_assert_str_eq(buf, "/home/someone/.cache/deepinfra");
    /* The API's choice wins over the environment, until reset with NULL. */
    char chosen[600];
    snprintf(chosen, sizeof chosen, "%s/chosen/by/api", tmp_root);
    cr_assert_eq(dinf_jit_set_cache_dir(chosen), DINF_STATUS_OK, "%s", dinf_last_error());
    size_t needed = 0;
    cr_assert_eq(dinf_jit_get_cache_dir(NULL, 0, &needed), DINF_STATUS_OK);
    cr_assert_eq(needed, strlen(chosen) + 1);
    cr_assert_eq(dinf_jit_get_cache_dir(buf, sizeof buf, NULL), DINF_STATUS_OK);
    cr_assert_str_eq(buf, chosen);
    struct stat st;
    cr_assert_eq(stat(chosen, &st), 0, "set_cache_dir did not create the directory");
    cr_assert_eq(st.st_mode & 0777, 0700);
    char parent[600];
    snprintf(parent, sizeof parent, "%s/chosen", tmp_root);
    cr_assert_eq(stat(parent, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0700, "missing parents are created 0700 too");
    cr_assert_eq(dinf_jit_set_cache_dir(NULL), DINF_STATUS_OK);
    cr_assert_eq(dinf_jit_get_cache_dir(buf, sizeof buf, NULL), DINF_STATUS_OK);
    cr_assert_str_eq(buf, "/home/someone/.cache/deepinfra");
}

Test(jit_cache_dir, group_or_world_writable_directory_is_refused) {
#if !DINF_WITH_CUDA
    JIT_SKIP("CPU-only build");
#endif
    cr_assert_eq(mkdir(cache_dir, 0700), 0);
    const mode_t modes[] = {0770, 0702, 0777};
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(chmod(cache_dir, modes[i]), 0);
        cr_assert_eq(dinf_jit_set_cache_dir(cache_dir), DINF_STATUS_JIT_ERROR, "mode %o",
                     modes[i]);
        const char *msg = dinf_last_error();
        cr_assert_not_null(strstr(msg, "refusing JIT cache directory"), "%s", msg);
        cr_assert_not_null(strstr(msg, "group- or world-writable"), "%s", msg);
        cr_assert_not_null(strstr(msg, cache_dir), "%s", msg);
    }
    /* The same through the environment, at the first compile. */
    require_nvrtc();
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 0);
    const dinf__jit_cubin *cubin;
    cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_JIT_ERROR);
    cr_assert_not_null(strstr(dinf_last_error(), "group- or world-writable"), "%s",
                       dinf_last_error());
    cr_assert_eq(chmod(cache_dir, 0700), 0);
    cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_OK, "%s",
                 dinf_last_error());
}

Test(jit_cache_dir, foreign_owned_directory_is_refused) {
#if !DINF_WITH_CUDA
    JIT_SKIP("CPU-only build");
#endif
    if (geteuid() != 0)
        JIT_SKIP("needs root to give the directory to another user (uid 65534)");
    cr_assert_eq(mkdir(cache_dir, 0700), 0);
    cr_assert_eq(chown(cache_dir, 65534, 65534), 0);
    cr_assert_eq(dinf_jit_set_cache_dir(cache_dir), DINF_STATUS_JIT_ERROR);
    cr_assert_not_null(strstr(dinf_last_error(), "owned by uid 65534"), "%s", dinf_last_error());
    require_nvrtc();
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 0);
    cr_assert_eq(dinf_jit_precompile(&c, 1, "sm_90a"), DINF_STATUS_JIT_ERROR);
    cr_assert_not_null(strstr(dinf_last_error(), "owned by uid 65534"), "%s", dinf_last_error());
}

/* An unwritable location (as root every mode is writable, so: a parent that
 * is a regular file) is a clear error, not a crash or a silent fallback. */
Test(jit_cache_dir, directory_under_a_regular_file_is_a_clear_error) {
#if !DINF_WITH_CUDA
    JIT_SKIP("CPU-only build");
#endif
    char file[600], below[700];
    snprintf(file, sizeof file, "%s/plainfile", tmp_root);
    FILE *f = fopen(file, "w");
    cr_assert_not_null(f);
    fclose(f);
    snprintf(below, sizeof below, "%s/cache", file);
    cr_assert_eq(dinf_jit_set_cache_dir(below), DINF_STATUS_JIT_ERROR);
    const char *msg = dinf_last_error();
    cr_assert_not_null(strstr(msg, "cannot create JIT cache directory"), "%s", msg);
    cr_assert_not_null(strstr(msg, strerror(ENOTDIR)), "%s", msg);
    cr_assert_not_null(strstr(msg, "is a file, not a directory"), "%s", msg);
    require_nvrtc();
    setenv("DINF_JIT_CACHE_DIR", below, 1);
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 0);
    cr_assert_eq(dinf_jit_precompile(&c, 1, "sm_90a"), DINF_STATUS_JIT_ERROR);
    cr_assert_not_null(strstr(dinf_last_error(), strerror(ENOTDIR)), "%s", dinf_last_error());
    /* The cache dir is itself a regular file. */
    setenv("DINF_JIT_CACHE_DIR", file, 1);
    cr_assert_eq(dinf_jit_precompile(&c, 1, "sm_90a"), DINF_STATUS_JIT_ERROR);
    cr_assert_not_null(strstr(dinf_last_error(), "not a directory"), "%s", dinf_last_error());
    setenv("DINF_JIT_CACHE_DIR", "relative/cache", 1);
    cr_assert_eq(dinf_jit_precompile(&c, 1, "sm_90a"), DINF_STATUS_JIT_ERROR);
    cr_assert_not_null(strstr(dinf_last_error(), "not an absolute path"), "%s", dinf_last_error());
}

/* ----------------------------------------------------------- concurrency -- */

static dinf_jit_kernel_config shared_config;
static void *thread_get(void *out) {
    const dinf__jit_cubin *cubin = NULL;
    if (dinf__jit_get_cubin("test", &shared_config, "sm_90a", &cubin) != DINF_STATUS_OK)
        cubin = NULL;
    *(const dinf__jit_cubin **)out = cubin;
    return NULL;
}

Test(jit_cache, threads_asking_for_one_kernel_compile_it_once) {
    require_nvrtc();
    shared_config = scale_rows_config(512, 2, 1);
    enum { N = 8 };
    pthread_t threads[N];
    const dinf__jit_cubin *got[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, thread_get, &got[i]), 0);
    for (int i = 0; i < N; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < N; i++) {
        cr_assert_not_null(got[i], "thread %d failed", i);
        cr_assert_eq(got[i], got[0], "thread %d got another entry", i);
    }
    dinf_jit_stats s = jit_stats();
    cr_assert_eq(s.compiles, 1);
    cr_assert_eq(s.memory_hits, N - 1);
}

static void helper_path(char *out, size_t bytes) {
    char exe[1024];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    cr_assert_gt(n, 0);
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    *slash = '\0';
    snprintf(out, bytes, "%s/jit_race_helper", exe);
    cr_assert_eq(access(out, X_OK), 0, "%s is missing (built by make with the test runner)", out);
}

/* Two processes compile the same kernel at the same moment: both succeed and
 * exactly one valid entry remains (atomic rename; no temporaries left). */
Test(jit_cache, two_processes_compiling_one_kernel_leave_one_valid_entry) {
    require_nvrtc();
    char helper[1100], go[600], out[2][600];
    helper_path(helper, sizeof helper);
    snprintf(go, sizeof go, "%s/go", tmp_root);
    pid_t pids[2];
    for (int i = 0; i < 2; i++) {
        snprintf(out[i], sizeof out[i], "%s/helper%d.out", tmp_root, i);
        char *argv[] = {helper, cache_dir, go, out[i], NULL};
        cr_assert_eq(posix_spawn(&pids[i], helper, NULL, NULL, argv, environ), 0);
    }
    /* Let both reach the start line, then release them together. */
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    FILE *f = fopen(go, "w");
    cr_assert_not_null(f);
    fclose(f);
    int compiled = 0;
    for (int i = 0; i < 2; i++) {
        int status = 0;
        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        char text[1024] = "";
        FILE *o = fopen(out[i], "r");
        if (o) {
            size_t n = fread(text, 1, sizeof text - 1, o);
            text[n] = '\0';
            fclose(o);
        }
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "helper %d failed: %s", i, text);
        int compiles = -1, disk_hits = -1;
        cr_assert_eq(sscanf(text, "ok compiles=%d disk_hits=%d", &compiles, &disk_hits), 2, "%s",
                     text);
        cr_assert_eq(compiles + disk_hits, 1, "%s", text);
        compiled += compiles;
    }
    cr_log_info("%d of 2 processes compiled (the other read the entry)", compiled);
    int entries, temporaries;
    count_entries(cache_dir, &entries, &temporaries, NULL, 0);
    cr_assert_eq(entries, 1);
    cr_assert_eq(temporaries, 0);
    /* The entry is valid: this process reads it. */
    get(scale_rows_config(256, 4, 0));
    dinf_jit_stats s = jit_stats();
    cr_assert_eq(s.disk_hits, 1);
    cr_assert_eq(s.disk_rejects, 0);
    cr_assert_eq(s.compiles, 0);
}

/* ------------------------------------------------------------------ log -- */

/* Run fn with stderr captured into buf. */
static void capture_stderr(void (*fn)(void), char *buf, size_t bytes) {
    char path[600];
    snprintf(path, sizeof path, "%s/stderr.txt", tmp_root);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    dup2(fd, 2);
    close(fd);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "r");
    size_t n = fread(buf, 1, bytes - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void compile_hit_corrupt(void) {
    get(scale_rows_config(256, 4, 0));
    get(scale_rows_config(256, 4, 0)); /* memory hit: not logged */
    dinf__jit_reset();
    get(scale_rows_config(256, 4, 0)); /* disk hit */
    int entries, temporaries;
    char path[1024];
    count_entries(cache_dir, &entries, &temporaries, path, sizeof path);
    cr_assert_eq(truncate(path, 100), 0);
    dinf__jit_reset();
    get(scale_rows_config(256, 4, 0)); /* rejected, compiled */
}

static int matches(const char *text, const char *pattern) {
    regex_t re;
    cr_assert_eq(regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE), 0, "%s", pattern);
    int ok = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

Test(jit_log, dinf_jit_log_prints_compiles_and_hits_with_timings) {
    require_nvrtc();
    setenv("DINF_JIT_LOG", "1", 1);
    char text[8192];
    capture_stderr(compile_hit_corrupt, text, sizeof text);
    const char *compiled = "^deepinfra jit: compiled scale_rows<256,4,0> for sm_90a in "
                           "[0-9]+\\.[0-9] ms \\(key [0-9a-f]{32}, [0-9]+ bytes, [0-9]+ registers, "
                           "0 bytes stack, 0/0 bytes spill stores/loads\\)$";
    cr_assert(matches(text, compiled), "no compile line in:\n%s", text);
    cr_assert(matches(text, "^deepinfra jit: disk hit scale_rows<256,4,0> for sm_90a in "
                            "[0-9]+\\.[0-9] ms \\(key [0-9a-f]{32}\\)$"),
              "no disk-hit line in:\n%s", text);
    cr_assert(matches(text, "^deepinfra jit: rejected /.*/scale_rows-[0-9a-f]{32}\\.cubin: .*"
                            "truncated.*; rebuilding$"),
              "no rejected line in:\n%s", text);
    int lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, 4, "expected compile, disk hit, reject, compile:\n%s", text);
}

Test(jit_log, silent_without_dinf_jit_log) {
    require_nvrtc();
    setenv("DINF_JIT_LOG", "0", 1);
    char text[4096];
    capture_stderr(compile_hit_corrupt, text, sizeof text);
    cr_assert_str_eq(text, "");
}
