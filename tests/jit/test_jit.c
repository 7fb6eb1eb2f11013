/*
 * The JIT runtime without a GPU: template registry and config checks,
 * deterministic source generation, NVRTC compiles for sm_90a (ELF, arch,
 * kernel section), the ptxas resource report (no spills, no local memory),
 * compile errors, a missing NVRTC, loading that fails cleanly, and the
 * public API's argument checks.
 */
#include "jit_test_util.h"

#include <elf.h>

static char cache_dir[256];

static void setup(void) {
    dinf__jit_reset();
    make_tmpdir(cache_dir, sizeof cache_dir);
    jit_test_tmp_root = cache_dir;
    setenv("DINF_JIT_CACHE_DIR", cache_dir, 1);
    unsetenv("DINF_JIT_LOG");
}

static void teardown(void) {
    dinf__jit_reset();
    rm_rf(cache_dir);
}

TestSuite(jit_source, .init = setup, .fini = teardown);
TestSuite(jit_compile, .init = setup, .fini = teardown, .timeout = 120.0);
TestSuite(jit_api, .init = setup, .fini = teardown, .timeout = 60.0);

/* --------------------------------------------------------------- source -- */

Test(jit_source, generated_source_is_deterministic_and_names_every_constant) {
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 1);
    const dinf__jit_template *t = dinf__jit_find_template("scale_rows");
    cr_assert_not_null(t);
    char *s1, *e1, *s2, *e2;
    cr_assert_eq(dinf__jit_generate(t, &c, &s1, &e1), DINF_STATUS_OK);
    cr_assert_eq(dinf__jit_generate(t, &c, &s2, &e2), DINF_STATUS_OK);
    cr_assert_str_eq(s1, s2);
    cr_assert_str_eq(e1, "dinf_jit::scale_rows<256, 4, 1>");
    cr_assert_not_null(strstr(s1, "#include \"scale_rows.cuh\""), "%s", s1);
    cr_assert_not_null(strstr(s1, "BLOCK_THREADS = 256"), "%s", s1);
    cr_assert_not_null(strstr(s1, "ELEMS_PER_THREAD = 4"), "%s", s1);
    cr_assert_not_null(strstr(s1, "OUT_BF16 = 1"), "%s", s1);
    /* Unused params do not change anything. */
    c.params[5] = 77;
    char *s3, *e3;
    cr_assert_eq(dinf__jit_generate(t, &c, &s3, &e3), DINF_STATUS_OK);
    cr_assert_str_eq(s1, s3);
    c = scale_rows_config(128, 4, 1);
    char *s4, *e4;
    cr_assert_eq(dinf__jit_generate(t, &c, &s4, &e4), DINF_STATUS_OK);
    cr_assert_str_neq(s1, s4);
    free(s1), free(e1), free(s2), free(e2), free(s3), free(e3), free(s4), free(e4);
}

Test(jit_source, templates_need_no_cuda_headers_and_no_include_path) {
    /* Every #include of every embedded file names another embedded file. */
    cr_assert_geq(dinf__jit_embedded_count, 2);
    for (int i = 0; i < dinf__jit_embedded_count; i++) {
        const dinf__jit_embedded_file *f = &dinf__jit_embedded_files[i];
        cr_assert_eq(strlen(f->text), f->bytes, "%s holds a NUL", f->name);
        for (const char *p = strstr(f->text, "#include"); p; p = strstr(p + 1, "#include")) {
            const char *q = p + 8;
            while (*q == ' ')
                q++;
            cr_assert_eq(*q, '"', "%s: #include <...> of a system/CUDA header", f->name);
            int found = 0;
            for (int j = 0; j < dinf__jit_embedded_count; j++) {
                size_t n = strlen(dinf__jit_embedded_files[j].name);
                if (strncmp(q + 1, dinf__jit_embedded_files[j].name, n) == 0 && q[1 + n] == '"')
                    found = 1;
            }
            cr_assert(found, "%s includes a file that is not embedded: %.40s", f->name, q);
        }
    }
    char arch_option[64];
    const char *opts[8];
    int n = dinf__jit_nvrtc_options("sm_90a", arch_option, opts);
    cr_assert_gt(n, 0);
    for (int i = 0; i < n; i++)
        cr_assert(strncmp(opts[i], "-I", 2) != 0 && strncmp(opts[i], "--include-path", 14) != 0,
                  "NVRTC option %s adds an include path", opts[i]);
}

Test(jit_source, config_checks_name_the_rule) {
    struct {
        dinf_jit_kernel_config c;
        const char *message;
    } cases[6];
    for (int i = 0; i < 6; i++)
        cases[i].c = scale_rows_config(256, 4, 0);
    cases[0].c.size = 12;
    cases[0].message = "configs[0].size=12 is not sizeof(dinf_jit_kernel_config)";
    snprintf(cases[1].c.name, DINF_JIT_NAME_MAX, "nope");
    cases[1].message = "configs[0].name=\"nope\" is not a kernel template";
    cases[2].c.num_params = 2;
    cases[2].message = "template scale_rows takes 3 params, num_params=2";
    cases[3].c.params[1] = 17;
    cases[3].message = "param 1 (ELEMS_PER_THREAD)=17 is outside [1, 16]";
    cases[4].c.params[2] = -1;
    cases[4].message = "param 2 (OUT_BF16)=-1 is outside [0, 1]";
    memset(cases[5].c.name, 'x', DINF_JIT_NAME_MAX);
    cases[5].message = "is not NUL-terminated";
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(dinf_jit_precompile(&cases[i].c, 1, "sm_90a"), DINF_STATUS_INVALID_ARGUMENT,
                     "case %d", i);
        cr_assert_not_null(strstr(dinf_last_error(), cases[i].message), "case %d: %s", i,
                           dinf_last_error());
        cr_assert_not_null(strstr(dinf_last_error(), "dinf_jit_precompile: "), "%s",
                           dinf_last_error());
    }
    /* A bad config anywhere in the list stops everything before compiling. */
    dinf_jit_kernel_config two[2] = {scale_rows_config(256, 4, 0), scale_rows_config(256, 99, 0)};
    cr_assert_eq(dinf_jit_precompile(two, 2, "sm_90a"), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_not_null(strstr(dinf_last_error(), "configs[1]"), "%s", dinf_last_error());
}

Test(jit_source, arch_strings) {
    const char *good[] = {"sm_90a", "sm_90", "sm_89", "sm_100a", "sm_100f", "sm_120"};
    const char *bad[] = {"", "sm90a", "sm_9", "compute_90a", "sm_90ab", "sm_1000", "SM_90"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        cr_assert(dinf__jit_arch_valid(good[i]), "%s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert(!dinf__jit_arch_valid(bad[i]), "%s", bad[i]);
    cr_assert(!dinf__jit_arch_valid(NULL));
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 0);
    cr_assert_eq(dinf_jit_precompile(&c, 1, "compute_90a"), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_not_null(strstr(dinf_last_error(), "arch=\"compute_90a\""), "%s", dinf_last_error());
}

Test(jit_source, hash_separates_fields_and_is_stable) {
    dinf__jit_hasher a, b;
    dinf__jit_hash_init(&a);
    dinf__jit_hash_init(&b);
    dinf__jit_hash_field(&a, "ab", 2);
    dinf__jit_hash_field(&a, "c", 1);
    dinf__jit_hash_field(&b, "a", 1);
    dinf__jit_hash_field(&b, "bc", 2);
    dinf__jit_key ka = dinf__jit_hash_final(&a), kb = dinf__jit_hash_final(&b);
    cr_assert(ka.lo != kb.lo && ka.hi != kb.hi);
    cr_assert_neq(ka.lo, ka.hi, "the two halves must be independent");
    /* Pinned: a cache written by one build is found by the next. */
    dinf__jit_hasher e;
    dinf__jit_hash_init(&e);
    dinf__jit_key ke = dinf__jit_hash_final(&e);
    char hex[33];
    dinf__jit_key_hex(ke, hex);
    cr_assert_eq(strlen(hex), 32);
    dinf__jit_hash_init(&e);
    dinf__jit_key ke2 = dinf__jit_hash_final(&e);
    cr_assert(ke.lo == ke2.lo && ke.hi == ke2.hi);
    cr_assert_neq(dinf__jit_checksum("abc", 3), dinf__jit_checksum("abd", 3));
}

Test(jit_source, ptxas_report_parser) {
    const char *log =
        "ptxas info    : 0 bytes gmem\n"
        "ptxas info    : Compiling entry function '_Z1av' for 'sm_90a'\n"
        "ptxas info    : Function properties for _Z1av\n"
        "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 32 registers, used 0 barriers\n"
        "ptxas info    : Compiling entry function '_Z1bv' for 'sm_90a'\n"
        "ptxas info    : Function properties for _Z1bv\n"
        "ptxas         .     40 bytes stack frame, 24 bytes spill stores, 16 bytes spill loads\n"
        "ptxas info    : Used 255 registers, used 1 barriers, 1024 bytes smem\n";
    dinf__jit_resources r;
    cr_assert_eq(dinf__jit_parse_ptxas_log(log, "_Z1av", &r), 0);
    cr_assert_eq(r.registers, 32);
    cr_assert_eq(r.stack_frame_bytes, 0);
    cr_assert_eq(r.spill_store_bytes, 0);
    cr_assert_eq(r.spill_load_bytes, 0);
    cr_assert_eq(r.barriers, 0);
    cr_assert_eq(r.shared_bytes, 0);
    cr_assert_eq(dinf__jit_parse_ptxas_log(log, "_Z1bv", &r), 0);
    cr_assert_eq(r.registers, 255);
    cr_assert_eq(r.stack_frame_bytes, 40);
    cr_assert_eq(r.spill_store_bytes, 24);
    cr_assert_eq(r.spill_load_bytes, 16);
    cr_assert_eq(r.barriers, 1);
    cr_assert_eq(r.shared_bytes, 1024);
    cr_assert_eq(dinf__jit_parse_ptxas_log(log, "_Z1", &r), -1, "prefix of a name must not match");
    cr_assert_eq(r.registers, -1);
    cr_assert_eq(dinf__jit_parse_ptxas_log(NULL, "_Z1av", &r), -1);
}

/* -------------------------------------------------------------- compile -- */

/* The section header named name, or NULL. */
static const Elf64_Shdr *elf_section(const unsigned char *elf, size_t bytes, const char *name) {
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)elf;
    if (eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > bytes ||
        eh->e_shstrndx >= eh->e_shnum)
        return NULL;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(elf + eh->e_shoff);
    const char *names = (const char *)elf + sh[eh->e_shstrndx].sh_offset;
    for (int i = 0; i < eh->e_shnum; i++)
        if (strcmp(names + sh[i].sh_name, name) == 0)
            return &sh[i];
    return NULL;
}

Test(jit_compile, sm90a_cubin_is_a_cuda_elf_with_the_kernel) {
    require_nvrtc();
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 0);
    const dinf__jit_cubin *cubin;
    cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    cr_assert_gt(cubin->bytes, sizeof(Elf64_Ehdr));
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)cubin->data;
    cr_assert_eq(memcmp(eh->e_ident, ELFMAG, SELFMAG), 0, "not an ELF file");
    cr_assert_eq(eh->e_ident[EI_CLASS], ELFCLASS64);
    cr_assert_eq(eh->e_machine, EM_CUDA, "e_machine=%d", eh->e_machine);
    /* CUDA ELF: the SM version sits in bits 8..15 of e_flags (0x5a = 90). */
    cr_assert_eq((eh->e_flags >> 8) & 0xff, 90, "e_flags=%#x", eh->e_flags);
    cr_assert_not_null(strstr(cubin->lowered_name, "scale_rows"), "%s", cubin->lowered_name);
    char section[256];
    snprintf(section, sizeof section, ".text.%s", cubin->lowered_name);
    const Elf64_Shdr *text = elf_section(cubin->data, cubin->bytes, section);
    cr_assert_not_null(text, "no section %s", section);
    cr_assert_gt(text->sh_size, 0, "%s is empty", section);
    cr_assert_eq(cubin->from_disk, 0);

    /* sm_90 (no "a") is another kernel (another key, another entry). */
    const dinf__jit_cubin *plain;
    cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90", &plain), DINF_STATUS_OK, "%s",
                 dinf_last_error());
    cr_assert(plain->key.lo != cubin->key.lo || plain->key.hi != cubin->key.hi);
    cr_assert_eq((((const Elf64_Ehdr *)plain->data)->e_flags >> 8) & 0xff, 90);
}

/* Issue 4 item 5: every configuration the library can pick compiles for
 * sm_90a without register spills or local memory: scale_rows here; the FP8
 * GEMM heuristic's configs in tests/gemm/test_gemm_sm90.c (gemm_jit). */
Test(jit_compile, every_config_compiles_for_sm90a_without_spills_or_local_memory) {
    require_nvrtc();
    const int threads[] = {128, 256, 512, 1024};
    const int elems[] = {1, 4, 8, 16};
    int checked = 0;
    for (size_t t = 0; t < 4; t++)
        for (size_t e = 0; e < 4; e++)
            for (int bf16 = 0; bf16 < 2; bf16++) {
                dinf_jit_kernel_config c = scale_rows_config(threads[t], elems[e], bf16);
                const dinf__jit_cubin *cubin;
                cr_assert_eq(dinf__jit_get_cubin("test", &c, "sm_90a", &cubin), DINF_STATUS_OK,
                             "scale_rows<%d,%d,%d>: %s", threads[t], elems[e], bf16,
                             dinf_last_error());
                const dinf__jit_resources *r = &cubin->resources;
                cr_assert_gt(r->registers, 0, "scale_rows<%d,%d,%d>: no resource report",
                             threads[t], elems[e], bf16);
                cr_assert(r->stack_frame_bytes == 0 && r->spill_store_bytes == 0 &&
                              r->spill_load_bytes == 0,
                          "scale_rows<%d,%d,%d> uses local memory: %d bytes stack, %d/%d bytes "
                          "spill stores/loads, %d registers",
                          threads[t], elems[e], bf16, r->stack_frame_bytes, r->spill_store_bytes,
                          r->spill_load_bytes, r->registers);
                cr_assert_leq(r->registers * threads[t], 65536, "registers do not fit the block");
                checked++;
            }
    cr_log_info("%d scale_rows configs: no spills, no local memory", checked);
    dinf_jit_stats s = jit_stats();
    cr_assert_eq(s.compiles, (uint64_t)checked);
}

Test(jit_compile, nvrtc_compile_error_gives_jit_error_with_the_log) {
    require_nvrtc();
    dinf_jit_kernel_config c = scale_rows_config(48, 4, 0); /* not a multiple of 32 */
    const dinf__jit_cubin *cubin = NULL;
    cr_assert_eq(dinf__jit_get_cubin("test_caller", &c, "sm_90a", &cubin), DINF_STATUS_JIT_ERROR);
    const char *msg = dinf_last_error();
    cr_assert_not_null(strstr(msg, "test_caller: NVRTC failed to compile scale_rows<48,4,0> for "
                                   "sm_90a"),
                       "%s", msg);
    cr_assert_not_null(strstr(msg, "BLOCK_THREADS must be a multiple of 32"), "%s", msg);
    dinf_jit_stats s = jit_stats();
    cr_assert_eq(s.compile_errors, 1);
    cr_assert_eq(s.compiles, 0);
    int entries, temporaries;
    count_entries(cache_dir, &entries, &temporaries, NULL, 0);
    cr_assert_eq(entries + temporaries, 0, "a failed compile left files");
    /* The public entry point reports the same, with the index. */
    cr_assert_eq(dinf_jit_precompile(&c, 1, "sm_90a"), DINF_STATUS_JIT_ERROR);
    cr_assert_not_null(strstr(dinf_last_error(), "dinf_jit_precompile: configs[0] "
                                                 "(scale_rows<48,4,0>): NVRTC failed"),
                       "%s", dinf_last_error());
    /* A failure is not cached: the next call tries again (and fails again). */
    cr_assert_eq(jit_stats().compile_errors, 2);
}

Test(jit_compile, missing_nvrtc_is_unsupported_with_a_message) {
#if !DINF_WITH_CUDA
    JIT_SKIP("CPU-only build");
#endif
    setenv("DINF_NVRTC_LIBRARY", "/nonexistent/libnvrtc.so.13", 1);
    dinf__jit_reset();
    int major = -1, minor = -1;
    cr_assert_eq(dinf_jit_nvrtc_version(&major, &minor), DINF_STATUS_UNSUPPORTED);
    cr_assert_not_null(strstr(dinf_last_error(), "NVRTC not found"), "%s", dinf_last_error());
    cr_assert_not_null(strstr(dinf_last_error(), "/nonexistent/libnvrtc.so.13"), "%s",
                       dinf_last_error());
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 0);
    cr_assert_eq(dinf_jit_precompile(&c, 1, "sm_90a"), DINF_STATUS_UNSUPPORTED);
    cr_assert_not_null(strstr(dinf_last_error(), "NVRTC not found"), "%s", dinf_last_error());
    unsetenv("DINF_NVRTC_LIBRARY");
    dinf__jit_reset();
}

/* Loading needs a GPU: without one it fails with a status and a message. */
Test(jit_compile, loading_without_a_usable_device_fails_cleanly) {
    require_nvrtc();
    dinf_device_info info = DINF_DEVICE_INFO_INIT;
    cr_assert_eq(dinf_device_query(0, &info), DINF_STATUS_OK);
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 0);
    const dinf__jit_kernel *kernel = NULL;
    dinf_status st = dinf__jit_get_kernel("test", &c, 0, &kernel);
    dinf_status pre = dinf_jit_precompile(&c, 1, NULL);
    if (info.device_count > 0) {
        cr_assert_eq(st, DINF_STATUS_OK, "%s", dinf_last_error());
        cr_assert_not_null(kernel->kernel);
        cr_assert_eq(pre, DINF_STATUS_OK, "%s", dinf_last_error());
        return;
    }
    cr_assert(st == DINF_STATUS_CUDA_ERROR || st == DINF_STATUS_JIT_ERROR, "status %d", st);
    cr_assert_eq(pre, DINF_STATUS_CUDA_ERROR, "%s", dinf_last_error());
    cr_assert_gt(strlen(dinf_last_error()), 20, "%s", dinf_last_error());
    cr_log_info("without a device: %s", dinf_last_error());
}

/* ------------------------------------------------------------------ API -- */

Test(jit_api, argument_checks) {
    cr_assert_eq(dinf_jit_get_stats(NULL), DINF_STATUS_INVALID_ARGUMENT);
    dinf_jit_stats s = DINF_JIT_STATS_INIT;
    s.size = 8;
    cr_assert_eq(dinf_jit_get_stats(&s), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_not_null(strstr(dinf_last_error(), "DINF_JIT_STATS_INIT"), "%s", dinf_last_error());
    int major;
    cr_assert_eq(dinf_jit_nvrtc_version(&major, NULL), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(dinf_jit_precompile(NULL, 1, "sm_90a"), DINF_STATUS_INVALID_ARGUMENT);
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 0);
    cr_assert_eq(dinf_jit_precompile(&c, -1, "sm_90a"), DINF_STATUS_INVALID_ARGUMENT);
#if DINF_WITH_CUDA
    cr_assert_eq(dinf_jit_precompile(NULL, 0, "sm_90a"), DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(dinf_jit_set_cache_dir("relative/dir"), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_not_null(strstr(dinf_last_error(), "not absolute"), "%s", dinf_last_error());
    char buf[8];
    cr_assert_eq(dinf_jit_get_cache_dir(NULL, 4, NULL), DINF_STATUS_INVALID_ARGUMENT);
    size_t needed = 0;
    cr_assert_eq(dinf_jit_get_cache_dir(buf, sizeof buf, &needed), DINF_STATUS_INVALID_ARGUMENT);
    cr_assert_eq(needed, strlen(cache_dir) + 1);
#else
    cr_assert_eq(dinf_jit_precompile(&c, 1, "sm_90a"), DINF_STATUS_UNSUPPORTED);
    cr_assert_eq(dinf_jit_set_cache_dir("/tmp"), DINF_STATUS_UNSUPPORTED);
    cr_assert_eq(dinf_jit_get_stats(&(dinf_jit_stats)DINF_JIT_STATS_INIT), DINF_STATUS_UNSUPPORTED);
    cr_assert_not_null(strstr(dinf_last_error(), "without CUDA"), "%s", dinf_last_error());
#endif
}

/* dinf__jit_launch flags: DINF__JIT_LAUNCH_PDL only (the attribute itself is
 * exercised by the GPU suites and the sm90-emu harness); an unknown bit is
 * the library's bug, refused before any CUDA call. */
Test(jit_api, launch_refuses_unknown_flag_bits_before_any_cuda_call) {
    dinf__jit_kernel fake;
    memset(&fake, 0, sizeof fake);
    fake.kernel = &fake; /* never dereferenced: the flags are checked first */
    fake.loaded_registers = fake.loaded_static_smem = -1;
    const unsigned grid[3] = {1, 1, 1}, block[3] = {32, 1, 1}, cluster[3] = {1, 1, 1};
    cr_assert_eq(DINF__JIT_LAUNCH_PDL, 1u);
    const unsigned bad[] = {2u, 4u, 0x80000000u, DINF__JIT_LAUNCH_PDL | 8u};
    for (int i = 0; i < 4; i++) {
        const dinf_status st =
            dinf__jit_launch("test", &fake, 0, grid, block, cluster, bad[i], 0, NULL, NULL);
#if DINF_WITH_CUDA
        cr_assert_eq(st, DINF_STATUS_INTERNAL, "flags 0x%x: %s", bad[i], dinf_last_error());
        char want[64];
        snprintf(want, sizeof want, "test: launch flags 0x%x: unknown bits", bad[i]);
        cr_assert_str_eq(dinf_last_error(), want);
#else
        cr_assert_eq(st, DINF_STATUS_UNSUPPORTED);
#endif
    }
}

Test(jit_api, nvrtc_version_and_stats) {
    require_nvrtc();
    int major = 0, minor = -1;
    cr_assert_eq(dinf_jit_nvrtc_version(&major, &minor), DINF_STATUS_OK);
    cr_assert_geq(major, 12);
    cr_assert_geq(minor, 0);
    dinf_jit_kernel_config c[2] = {scale_rows_config(256, 4, 0), scale_rows_config(128, 2, 1)};
    cr_assert_eq(dinf_jit_precompile(c, 2, "sm_90a"), DINF_STATUS_OK, "%s", dinf_last_error());
    cr_assert_eq(dinf_jit_precompile(c, 2, "sm_90a"), DINF_STATUS_OK, "%s", dinf_last_error());
    dinf_jit_stats s = jit_stats();
    cr_assert_eq(s.compiles, 2);
    cr_assert_eq(s.memory_hits, 2);
    cr_assert_eq(s.disk_hits, 0);
    cr_assert_eq(s.loads, 0);
    cr_assert_gt(s.compile_seconds, 0.0);
}

/* ------------------------------------------------- parallel precompile -- */

Test(jit_api, precompile_runs_in_parallel_and_names_the_lowest_failing_index) {
    require_nvrtc();
    cr_assert_eq(setenv("DINF_JIT_THREADS", "3", 1), 0);
    /* Two configs that do not compile (BLOCK_THREADS not a multiple of 32),
     * at indices 2 and 4, among valid ones: whatever the interleaving of the
     * three compile threads, the error names configs[2], as a sequential
     * loop would. */
    dinf_jit_kernel_config c[6] = {scale_rows_config(256, 4, 0), scale_rows_config(128, 2, 1),
                                   scale_rows_config(48, 4, 0),  scale_rows_config(64, 1, 0),
                                   scale_rows_config(80, 2, 0),  scale_rows_config(32, 3, 1)};
    cr_assert_eq(dinf_jit_precompile(c, 6, "sm_90a"), DINF_STATUS_JIT_ERROR);
    cr_assert_not_null(strstr(dinf_last_error(), "dinf_jit_precompile: configs[2] "
                                                 "(scale_rows<48,4,0>): NVRTC failed"),
                       "%s", dinf_last_error());
    /* Indices 0..2 were certainly attempted: 0 and 1 compiled. */
    dinf_jit_stats s = jit_stats();
    cr_assert_geq(s.compiles, 2);
    cr_assert_geq(s.compile_errors, 1);
    /* The valid ones, in parallel: every one ends up compiled exactly once
     * over both calls (the table and the disk cache serve the rest). */
    dinf_jit_kernel_config good[4] = {c[0], c[1], c[3], c[5]};
    cr_assert_eq(dinf_jit_precompile(good, 4, "sm_90a"), DINF_STATUS_OK, "%s", dinf_last_error());
    s = jit_stats();
    cr_assert_eq(s.compiles, 4, "%llu compiles", (unsigned long long)s.compiles);
    for (int i = 0; i < 4; i++) {
        const dinf__jit_cubin *cubin = NULL;
        cr_assert_eq(dinf__jit_get_cubin("test", &good[i], "sm_90a", &cubin), DINF_STATUS_OK);
        cr_assert_gt(cubin->bytes, 0);
    }
    unsetenv("DINF_JIT_THREADS");
}

Test(jit_api, precompile_thread_count_from_the_environment_is_checked) {
    dinf_jit_kernel_config c = scale_rows_config(256, 4, 0);
    static const char *const bad[] = {"0", "65", "-2", "abc", "4x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(setenv("DINF_JIT_THREADS", bad[i], 1), 0);
#if DINF_WITH_CUDA
        cr_assert_eq(dinf_jit_precompile(&c, 1, "sm_90a"), DINF_STATUS_INVALID_ARGUMENT, "%s",
                     bad[i]);
        cr_assert_not_null(strstr(dinf_last_error(), "DINF_JIT_THREADS="), "%s",
                           dinf_last_error());
        cr_assert_not_null(strstr(dinf_last_error(), bad[i]), "%s", dinf_last_error());
#else
        cr_assert_eq(dinf_jit_precompile(&c, 1, "sm_90a"), DINF_STATUS_UNSUPPORTED);
#endif
    }
    unsetenv("DINF_JIT_THREADS");
}
