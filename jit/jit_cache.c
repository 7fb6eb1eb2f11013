/* The disk cache: directory rules, content hash, entry format, atomic publish. */
#define _GNU_SOURCE /* strdup, O_NOFOLLOW, getpwuid_r, clock_gettime */
#include "jit_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* -------------------------------------------------------------- hashing -- */

#define FNV_PRIME 0x100000001b3ull
#define SEED_A 0xc6a4a7935bd1e995ull
#define SEED_B 0x9e3779b97f4a7c15ull

static uint64_t splitmix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t bytes) {
    const unsigned char *p = data;
    for (size_t i = 0; i < bytes; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

void dinf__jit_hash_init(dinf__jit_hasher *h) {
    h->a = SEED_A;
    h->b = SEED_B;
}

void dinf__jit_hash_field(dinf__jit_hasher *h, const void *data, size_t bytes) {
    uint64_t len = bytes;
    h->a = fnv1a(fnv1a(h->a, data, bytes), &len, sizeof len);
    h->b = fnv1a(fnv1a(h->b, data, bytes), &len, sizeof len);
}

dinf__jit_key dinf__jit_hash_final(const dinf__jit_hasher *h) {
    dinf__jit_key k = {splitmix64(h->a), splitmix64(h->b ^ 0x5851f42d4c957f2dull)};
    return k;
}

uint64_t dinf__jit_checksum(const void *data, size_t bytes) {
    return splitmix64(fnv1a(SEED_A, data, bytes));
}

void dinf__jit_key_hex(dinf__jit_key key, char out[33]) {
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)key.hi, (unsigned long long)key.lo);
}

/* ------------------------------------------------------------ directory -- */

static pthread_mutex_t dir_lock = PTHREAD_MUTEX_INITIALIZER;
static char *dir_override; /* dinf_jit_set_cache_dir */

void dinf__jit_cache_dir_set_override(char *dir); /* takes ownership; NULL clears */
void dinf__jit_cache_dir_set_override(char *dir) {
    pthread_mutex_lock(&dir_lock);
    free(dir_override);
    dir_override = dir;
    pthread_mutex_unlock(&dir_lock);
}

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (s) {
        memcpy(s, a, la);
        s[la] = '/';
        memcpy(s + la + 1, b, lb + 1);
    }
    return s;
}

dinf_status dinf__jit_cache_dir_resolve(const char *func, char **dir) {
    *dir = NULL;
    pthread_mutex_lock(&dir_lock);
    if (dir_override)
        *dir = strdup(dir_override);
    pthread_mutex_unlock(&dir_lock);
    if (!*dir) {
        const char *env = getenv("DINF_JIT_CACHE_DIR");
        const char *xdg = getenv("XDG_CACHE_HOME");
        const char *home = getenv("HOME");
        if (env && *env)
            *dir = strdup(env);
        else if (xdg && xdg[0] == '/') /* the XDG spec ignores relative values */
            *dir = join(xdg, "deepinfra");
        else {
            if (!home || !*home) {
                struct passwd pw, *found = NULL;
                char buf[4096];
                if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &found) == 0 && found)
                    home = found->pw_dir;
            }
            if (!home || !*home)
                return dinf__fail(DINF_STATUS_JIT_ERROR, func,
                                 "no JIT cache directory: set DINF_JIT_CACHE_DIR (neither "
                                 "XDG_CACHE_HOME nor a home directory is known)");
            *dir = join(home, ".cache/deepinfra");
        }
    }
    if (!*dir)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "out of memory");
    return DINF_STATUS_OK;
}

dinf_status dinf__jit_cache_dir_prepare(const char *func, const char *dir) {
    if (dir[0] != '/')
        return dinf__fail(DINF_STATUS_JIT_ERROR, func,
                          "JIT cache directory \"%s\" is not an absolute path", dir);
    size_t len = strlen(dir);
    char *path = malloc(len + 1);
    if (!path)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "out of memory");
    memcpy(path, dir, len + 1);
    /* mkdir -p, every missing level 0700 (the XDG spec's mode for cache dirs). */
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char saved = path[i];
        path[i] = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST) {
            int err = errno;
            dinf_status st = dinf__fail(
                DINF_STATUS_JIT_ERROR, func, "cannot create JIT cache directory %s: mkdir(%s): %s%s",
                dir, path, strerror(err),
                err == ENOTDIR ? " (a component of the path is a file, not a directory)" : "");
            free(path);
            return st;
        }
        path[i] = saved;
    }
    free(path);
    struct stat st;
    if (stat(dir, &st) != 0)
        return dinf__fail(DINF_STATUS_JIT_ERROR, func, "JIT cache directory %s: stat: %s", dir,
                          strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return dinf__fail(DINF_STATUS_JIT_ERROR, func,
                          "JIT cache directory %s exists but is not a directory", dir);
    if (st.st_uid != geteuid())
        return dinf__fail(DINF_STATUS_JIT_ERROR, func,
                          "refusing JIT cache directory %s: owned by uid %u, not by this process's "
                          "uid %u (another user could place kernels there)",
                          dir, (unsigned)st.st_uid, (unsigned)geteuid());
    if (st.st_mode & (S_IWGRP | S_IWOTH))
        return dinf__fail(DINF_STATUS_JIT_ERROR, func,
                          "refusing JIT cache directory %s: mode %04o is group- or world-writable "
                          "(another user could place kernels there); chmod 700 it",
                          dir, (unsigned)(st.st_mode & 07777));
    return DINF_STATUS_OK;
}

char *dinf__jit_entry_path(const char *dir, const char *template_name, dinf__jit_key key) {
    char hex[33];
    dinf__jit_key_hex(key, hex);
    size_t n = strlen(dir) + strlen(template_name) + 48;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s-%s.cubin", dir, template_name, hex);
    return p;
}

/* ---------------------------------------------------------------- entry -- */

#define PAYLOAD_FIXED_BYTES (6 * 4 + 4 + 8)
#define ENTRY_MAX_BYTES ((size_t)1 << 30)

static void put32(unsigned char *p, int32_t v) { memcpy(p, &v, 4); }
static int32_t get32(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

int dinf__jit_entry_read(const char *path, dinf__jit_key key, dinf__jit_build *out,
                         char *reason, size_t reason_bytes) {
    memset(out, 0, sizeof *out);
    reason[0] = '\0';
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(reason, reason_bytes, "open: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    unsigned char *buf = NULL;
    int result = -1;
    if (fstat(fd, &st) != 0) {
        snprintf(reason, reason_bytes, "fstat: %s", strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(reason, reason_bytes, "not a regular file");
        goto done;
    }
    if (st.st_uid != geteuid()) {
        snprintf(reason, reason_bytes, "owned by uid %u, not by this process's uid %u",
                 (unsigned)st.st_uid, (unsigned)geteuid());
        goto done;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(reason, reason_bytes, "mode %04o is group- or world-writable",
                 (unsigned)(st.st_mode & 07777));
        goto done;
    }
    size_t size = (size_t)st.st_size;
    if (st.st_size < (off_t)(sizeof(dinf__jit_entry_header) + PAYLOAD_FIXED_BYTES) ||
        size > ENTRY_MAX_BYTES) {
        snprintf(reason, reason_bytes, "size %lld bytes is not a valid entry size (truncated?)",
                 (long long)st.st_size);
        goto done;
    }
    buf = malloc(size);
    if (!buf) {
        snprintf(reason, reason_bytes, "out of memory reading %zu bytes", size);
        goto done;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got != size) {
        snprintf(reason, reason_bytes, "short read (%zu of %zu bytes)", got, size);
        goto done;
    }
    dinf__jit_entry_header h;
    memcpy(&h, buf, sizeof h);
    if (memcmp(h.magic, DINF_JIT_ENTRY_MAGIC, 8) != 0) {
        snprintf(reason, reason_bytes, "bad magic");
        goto done;
    }
    if (h.format != DINF_JIT_ENTRY_FORMAT || h.header_bytes != sizeof h) {
        snprintf(reason, reason_bytes, "format %u (header %u bytes), expected %u (%zu bytes)",
                 h.format, h.header_bytes, DINF_JIT_ENTRY_FORMAT, sizeof h);
        goto done;
    }
    if (h.key_lo != key.lo || h.key_hi != key.hi) {
        snprintf(reason, reason_bytes, "key mismatch (the file holds another kernel)");
        goto done;
    }
    if (h.payload_bytes != size - sizeof h) {
        snprintf(reason, reason_bytes, "payload %llu bytes but the file holds %zu (truncated?)",
                 (unsigned long long)h.payload_bytes, size - sizeof h);
        goto done;
    }
    const unsigned char *payload = buf + sizeof h;
    size_t payload_bytes = size - sizeof h;
    if (dinf__jit_checksum(payload, payload_bytes) != h.payload_checksum) {
        snprintf(reason, reason_bytes, "checksum mismatch (corrupted)");
        goto done;
    }
    dinf__jit_resources r;
    r.registers = get32(payload + 0);
    r.stack_frame_bytes = get32(payload + 4);
    r.spill_store_bytes = get32(payload + 8);
    r.spill_load_bytes = get32(payload + 12);
    r.shared_bytes = get32(payload + 16);
    r.barriers = get32(payload + 20);
    uint32_t name_bytes;
    uint64_t cubin_bytes;
    memcpy(&name_bytes, payload + 24, 4);
    memcpy(&cubin_bytes, payload + 28, 8);
    if (name_bytes < 2 || name_bytes > payload_bytes - PAYLOAD_FIXED_BYTES ||
        cubin_bytes != payload_bytes - PAYLOAD_FIXED_BYTES - name_bytes || cubin_bytes < 4 ||
        payload[PAYLOAD_FIXED_BYTES + name_bytes - 1] != '\0') {
        snprintf(reason, reason_bytes, "inconsistent payload layout");
        goto done;
    }
    const unsigned char *cubin = payload + PAYLOAD_FIXED_BYTES + name_bytes;
    if (memcmp(cubin, "\177ELF", 4) != 0) {
        snprintf(reason, reason_bytes, "payload is not an ELF cubin");
        goto done;
    }
    out->lowered_name = strdup((const char *)payload + PAYLOAD_FIXED_BYTES);
    out->cubin = malloc(cubin_bytes);
    if (!out->lowered_name || !out->cubin) {
        dinf__jit_build_free(out);
        snprintf(reason, reason_bytes, "out of memory");
        goto done;
    }
    memcpy(out->cubin, cubin, cubin_bytes);
    out->cubin_bytes = cubin_bytes;
    out->resources = r;
    result = 1;
done:
    free(buf);
    close(fd);
    return result;
}

static int write_all(int fd, const void *data, size_t bytes) {
    const unsigned char *p = data;
    while (bytes) {
        ssize_t n = write(fd, p, bytes);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        bytes -= (size_t)n;
    }
    return 0;
}

dinf_status dinf__jit_entry_write(const char *func, const char *dir, const char *path,
                                  dinf__jit_key key, const dinf__jit_build *build) {
    size_t name_bytes = strlen(build->lowered_name) + 1;
    size_t payload_bytes = PAYLOAD_FIXED_BYTES + name_bytes + build->cubin_bytes;
    unsigned char *payload = malloc(payload_bytes);
    if (!payload)
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "out of memory");
    const dinf__jit_resources *r = &build->resources;
    put32(payload + 0, r->registers);
    put32(payload + 4, r->stack_frame_bytes);
    put32(payload + 8, r->spill_store_bytes);
    put32(payload + 12, r->spill_load_bytes);
    put32(payload + 16, r->shared_bytes);
    put32(payload + 20, r->barriers);
    uint32_t nb = (uint32_t)name_bytes;
    uint64_t cb = build->cubin_bytes;
    memcpy(payload + 24, &nb, 4);
    memcpy(payload + 28, &cb, 8);
    memcpy(payload + PAYLOAD_FIXED_BYTES, build->lowered_name, name_bytes);
    memcpy(payload + PAYLOAD_FIXED_BYTES + name_bytes, build->cubin, build->cubin_bytes);

    dinf__jit_entry_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, DINF_JIT_ENTRY_MAGIC, 8);
    h.format = DINF_JIT_ENTRY_FORMAT;
    h.header_bytes = sizeof h;
    h.key_lo = key.lo;
    h.key_hi = key.hi;
    h.payload_bytes = payload_bytes;
    h.payload_checksum = dinf__jit_checksum(payload, payload_bytes);

    /* A unique temporary name in the same directory (same file system, so
     * rename is atomic): pid + a process-wide counter, created exclusively. */
    static unsigned long counter;
    unsigned long n = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    size_t tmp_len = strlen(dir) + 64;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        free(payload);
        return dinf__fail(DINF_STATUS_OUT_OF_MEMORY, func, "out of memory");
    }
    snprintf(tmp, tmp_len, "%s/.tmp-%ld-%lu.cubin", dir, (long)getpid(), n);
    dinf_status status = DINF_STATUS_OK;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        status = dinf__fail(DINF_STATUS_JIT_ERROR, func, "cannot write to JIT cache: open(%s): %s",
                            tmp, strerror(errno));
        goto done;
    }
    if (write_all(fd, &h, sizeof h) != 0 || write_all(fd, payload, payload_bytes) != 0 ||
        fsync(fd) != 0) {
        status = dinf__fail(DINF_STATUS_JIT_ERROR, func, "cannot write to JIT cache: %s: %s", tmp,
                            strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    if (close(fd) != 0) {
        status = dinf__fail(DINF_STATUS_JIT_ERROR, func, "cannot write to JIT cache: close(%s): %s",
                            tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        status = dinf__fail(DINF_STATUS_JIT_ERROR, func,
                            "cannot publish JIT cache entry: rename(%s, %s): %s", tmp, path,
                            strerror(errno));
        unlink(tmp);
        goto done;
    }
    /* Make the rename itself durable (best effort). */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
done:
    free(tmp);
    free(payload);
    return status;
}
