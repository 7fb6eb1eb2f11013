/* The kernel-instance registry and the launch bridge (see emu_host.h). */
#include "emu_host.h"
#include "emu_kernels.h"
#include "emu_rt.h"

#include <cstring>
#include <vector>

static std::vector<const EmuKernel *> &registry() {
    static std::vector<const EmuKernel *> r;
    return r;
}
EmuKernelRegistrar::EmuKernelRegistrar(const EmuKernel *table, int n) {
    for (int i = 0; i < n; i++)
        registry().push_back(&table[i]);
}

extern "C" const void *emu_find_kernel(const char *name, int nparams, const long long *params) {
    for (const EmuKernel *k : registry()) {
        if (strcmp(k->name, name) || k->nparams != nparams)
            continue;
        bool same = true;
        for (int i = 0; i < nparams; i++)
            same &= k->params[i] == params[i];
        if (same)
            return k;
    }
    return nullptr;
}

extern "C" int emu_kernel_count(void) { return (int)registry().size(); }
extern "C" const char *emu_kernel_info(int i, int *nparams, long long params[8]) {
    const EmuKernel *k = registry()[(size_t)i];
    *nparams = k->nparams;
    for (int j = 0; j < 8; j++)
        params[j] = j < k->nparams ? k->params[j] : 0;
    return k->name;
}

extern "C" void emu_launch_kernel(const void *entry, const unsigned grid[3], const unsigned block[3],
                                  const unsigned cluster[3], size_t smem, int pdl, void **args) {
    const EmuKernel *k = (const EmuKernel *)entry;
    emu::launch({grid[0], grid[1], grid[2]}, {block[0], block[1], block[2]},
                {cluster[0], cluster[1], cluster[2]}, smem, [k, args] { k->run(args); }, pdl != 0);
}
extern "C" void emu_global_guard_add(const void *p, size_t bytes, const char *name) {
    emu::global_guard_add(p, bytes, name);
}
extern "C" long long emu_griddep_waits(void) { return emu::stat_griddep_waits; }
extern "C" void emu_global_add(const void *p, size_t bytes, const char *name) { emu::global_add(p, bytes, name); }
extern "C" void emu_global_clear(void) { emu::global_clear(); }
extern "C" int emu_skew(void) { return emu::skew; }
extern "C" long long emu_switches(void) { return emu::stat_switches; }
