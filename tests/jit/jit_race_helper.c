/*
 * Helper of the JIT cache race test (tests/jit/test_jit_cache.c), a program
 * of its own: waits until the start file exists, then compiles (or reads)
 * scale_rows<256,4,0> for sm_90a in the given cache directory, and writes
 * "ok compiles=N disk_hits=N" or the error to the output file.
 *   jit_race_helper CACHE_DIR START_FILE OUTPUT_FILE
 */
#define _GNU_SOURCE
#include <deepinfra.h>

#include "jit_internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    FILE *out = fopen(argv[3], "w");
    if (!out)
        return 3;
    if (dinf_jit_set_cache_dir(argv[1]) != DINF_STATUS_OK) {
        fprintf(out, "set_cache_dir: %s\n", dinf_last_error());
        return 1;
    }
    dinf_jit_kernel_config c = DINF_JIT_KERNEL_CONFIG_INIT;
    snprintf(c.name, sizeof c.name, "scale_rows");
    c.num_params = 3;
    c.params[0] = 256;
    c.params[1] = 4;
    c.params[2] = 0;
    /* Load NVRTC before the start line, so both racers compile at once. */
    int major, minor;
    dinf_jit_nvrtc_version(&major, &minor);
    struct timespec pause = {0, 1000 * 1000};
    for (int i = 0; i < 20000 && access(argv[2], F_OK) != 0; i++)
        nanosleep(&pause, NULL);
    const dinf__jit_cubin *cubin;
    if (dinf__jit_get_cubin("jit_race_helper", &c, "sm_90a", &cubin) != DINF_STATUS_OK) {
        fprintf(out, "get_cubin: %s\n", dinf_last_error());
        return 1;
    }
    dinf_jit_stats s = DINF_JIT_STATS_INIT;
    dinf_jit_get_stats(&s);
    fprintf(out, "ok compiles=%llu disk_hits=%llu\n", (unsigned long long)s.compiles,
            (unsigned long long)s.disk_hits);
    return fclose(out) == 0 ? 0 : 1;
}
