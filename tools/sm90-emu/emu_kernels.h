/* The kernel instances compiled into the emulator (gen.py writes them). */
#pragma once
struct EmuKernel {
    const char *name;     /* JIT template name */
    int nparams;
    long long params[8];  /* template constants */
    void (*run)(void **args); /* one thread's kernel body; args as for cudaLaunchKernel */
};
struct EmuKernelRegistrar {
    EmuKernelRegistrar(const EmuKernel *table, int n);
};
