#include <deepinfra.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
dinf_status emu_device_query(int32_t device, dinf_device_info *info) {
    (void)device;
    info->usable = 1;
    return DINF_STATUS_OK;
}

/* The mock runtime's device allocations (mockinc/cuda_runtime_api.h:
 * cudaMalloc notes each with its requested size, cudaFree forgets it). */
typedef struct emu_alloc {
    const char *base;
    size_t bytes;
} emu_alloc;
static emu_alloc *allocs;
static size_t n_allocs, cap_allocs;

void emu_alloc_note(const void *p, size_t n) {
    if (n_allocs == cap_allocs) {
        cap_allocs = cap_allocs ? 2 * cap_allocs : 64;
        allocs = realloc(allocs, cap_allocs * sizeof *allocs);
        if (!allocs) {
            fprintf(stderr, "EMU: out of memory for the allocation table\n");
            abort();
        }
    }
    allocs[n_allocs++] = (emu_alloc){(const char *)p, n};
}

void emu_alloc_forget(const void *p) {
    for (size_t i = 0; p && i < n_allocs; i++)
        if (allocs[i].base == p) {
            allocs[i] = allocs[--n_allocs];
            return;
        }
}

/* The allocation holding address p: 1 with *base and *bytes set, or 0. */
int emu_alloc_find(const void *p, const char **base, size_t *bytes) {
    for (size_t i = 0; i < n_allocs; i++)
        if ((const char *)p >= allocs[i].base && (const char *)p < allocs[i].base + allocs[i].bytes) {
            *base = allocs[i].base;
            *bytes = allocs[i].bytes;
            return 1;
        }
    return 0;
}
