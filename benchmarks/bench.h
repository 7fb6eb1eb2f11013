/*
 * The benchmark shim: benchmarks are written in C and registered with Google
 * Benchmark through this small C interface (shim.cc).
 *
 * A benchmark is a function that runs ONE iteration. For CPU code, Google
 * Benchmark times it with its own clock (manual_time = 0; the return value
 * is only checked for < 0). For GPU code, set manual_time = 1 and return the
 * iteration's seconds measured with CUDA events. A negative return value
 * marks an error: the shim reports bench_error() and skips the benchmark.
 */
#ifndef DINF_BENCH_H
#define DINF_BENCH_H

#ifdef __cplusplus
extern "C" {
#endif

typedef double (*bench_fn)(void *arg);

typedef struct bench_spec {
    const char *name;   /* e.g. "eplb/rebalance/hierarchical/L58_E256_R288" */
    bench_fn run;       /* one iteration */
    void *arg;          /* passed to run; must outlive bench_main */
    int manual_time;    /* 1: run returns the iteration's seconds (GPU) */
    double flops;       /* per iteration, for a FLOP/s counter (0: none) */
    double bytes;       /* per iteration, for a B/s counter (0: none) */
    double items;       /* per iteration, for an items/s counter (0: none) */
    const char *items_name; /* counter name for items, e.g. "layers/s" */
    const char *label;  /* free text shown beside the row, may be NULL */
    const char *unit;   /* "ns", "us", "ms" or "s"; NULL: "us" */
    int iterations;     /* fixed iteration count; 0: Google Benchmark decides (min time) */
} bench_spec;

/* Register a benchmark (the spec is copied; strings must stay valid). */
void bench_register(const bench_spec *spec);

/* A user counter added to the current benchmark's row (call from run). */
void bench_set_counter(const char *name, double value);

/* Record a key=value in the JSON context (GPU name, driver, commit ...). */
void bench_add_context(const char *key, const char *value);

/* Set the message reported when run returns < 0. */
void bench_set_error(const char *message);

/* Remember the command line's --benchmark_filter (main calls this before any
 * registration). */
void bench_init(int argc, char **argv);

/* 1 when a row with this name will run: no --benchmark_filter, or the filter
 * (Google Benchmark's: a POSIX extended regex searched in the name, a leading
 * '-' negates) matches the name. The name tested is the one passed to
 * bench_register (without the "/iterations:N/manual_time" suffix Google
 * Benchmark appends). Registration code calls it to skip the device setup of
 * rows that will not run (tools/gpu-check runs one benchmark family at a time). */
int bench_selected(const char *name);

/* Parse Google Benchmark flags, run everything registered, return 0/1. */
int bench_main(int argc, char **argv);

/* Registration hooks of each benchmark file, called by main. */
void bench_register_eplb(void);
void bench_register_fp8(void);
void bench_register_dualpipe(void);
void bench_register_copy(void);
void bench_register_gemm(void);
void bench_register_mla(void);
void bench_register_ep(void);
void bench_register_ep_gpu(void);

#ifdef __cplusplus
}
#endif

#endif
