"""The library as a built artifact: exported symbols, soname, dependencies,
self-contained headers, install + pkg-config consumers, kernel resources."""
import ctypes
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import build_make_args, library_has_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("DINF_BUILD_DIR", "build"))
SOFILE = glob.glob(os.path.join(BUILD, "lib", "libdeepinfra.so.*.*.*"))
HEADERS = ["deepinfra.h"] + ["deepinfra/" + os.path.basename(h)
                             for h in sorted(glob.glob(os.path.join(ROOT, "include/deepinfra/*.h")))]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def sofile():
    assert len(SOFILE) == 1, "expected one versioned library in %s/lib: %s" % (BUILD, SOFILE)
    return SOFILE[0]


def test_only_dinf_symbols_are_exported(sofile):
    out = run(["nm", "-D", "--defined-only", sofile]).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert names, "no exported symbols"
    others = [n for n in names if not n.startswith("dinf_")]
    assert not others, "symbols outside the dinf_ namespace are exported: %s" % others[:20]
    for api in ("dinf_last_error", "dinf_eplb_rebalance_experts", "dinf_device_query"):
        assert api in names


def test_soname_links_and_dependencies(sofile):
    dyn = run(["readelf", "-d", sofile]).stdout
    assert "Library soname: [libdeepinfra.so.0]" in dyn
    needed = re.findall(r"Shared library: \[([^\]]+)\]", dyn)
    for forbidden in ("libcuda.so", "libcudart", "libnvrtc", "libnccl"):
        assert not any(n.startswith(forbidden) for n in needed), (
            "libdeepinfra must load without %s (NEEDED: %s)" % (forbidden, needed))
    lib = os.path.join(BUILD, "lib")
    assert os.readlink(os.path.join(lib, "libdeepinfra.so.0")) == os.path.basename(sofile)
    assert os.readlink(os.path.join(lib, "libdeepinfra.so")) == "libdeepinfra.so.0"
    assert os.path.exists(os.path.join(lib, "libdeepinfra.a"))


def test_loads_and_answers_without_a_gpu_driver(sofile):
    lib = ctypes.CDLL(sofile)
    lib.dinf_version_string.restype = ctypes.c_char_p
    flavour = lib.dinf_version_string().decode().split("+")[1]
    # against the configuration make recorded for this build (config.stamp)
    assert flavour == ("cuda" if "CUDA=1" in build_make_args(BUILD) else "cpu")


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("lang", ["c11", "c++17"])
def test_public_header_compiles_alone(header, lang, tmp_path):
    """Each public header compiles by itself, without a CUDA include path."""
    src = tmp_path / ("h.c" if lang == "c11" else "h.cc")
    src.write_text("#include <%s>\nint main(void) { return 0; }\n" % header)
    compiler = ["gcc", "-std=c11"] if lang == "c11" else ["g++", "-std=c++17"]
    run(compiler + ["-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fsyntax-only",
                    "-I" + os.path.join(ROOT, "include"), str(src)])


CONSUMER = textwrap.dedent("""
    #include <deepinfra.h>
    #include <stdio.h>
    int main(void) {
        const float w[4] = {10, 1, 1, 1};
        int64_t phy2log[8], logcnt[4], max;
        if (dinf_version() != DINF_VERSION_CODE) return 1;
        if (dinf_eplb_rebalance_experts(w, 1, 4, 8, 1, 1, 2, NULL, phy2log, NULL, logcnt,
                                        NULL, 0, &max, NULL, 0) != DINF_STATUS_OK) {
            fprintf(stderr, "%s\\n", dinf_last_error());
            return 2;
        }
        printf("%s %lld %lld\\n", dinf_version_string(), (long long)logcnt[0], (long long)max);
        return 0;
    }
""")


@pytest.fixture(scope="module")
def staged_install(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    run(["make", "-s", "--no-print-directory", "install", *build_make_args(BUILD),
         "PREFIX=/usr/local", "DESTDIR=" + str(dest), "PYTHON=" + sys.executable], cwd=ROOT)
    return dest


def test_install_honours_destdir_and_prefix(staged_install):
    root = staged_install / "usr/local"
    for rel in ["include/deepinfra.h", "include/deepinfra/core.h", "include/deepinfra/eplb.h",
                "lib/libdeepinfra.a", "lib/libdeepinfra.so", "lib/libdeepinfra.so.0",
                "lib/pkgconfig/deepinfra.pc", "bin/deepinfra-pipe"]:
        assert (root / rel).exists(), rel
    pc = (root / "lib/pkgconfig/deepinfra.pc").read_text()
    assert "prefix=/usr/local" in pc and str(staged_install) not in pc, pc
    assert glob.glob(str(root / "lib/python3*/site-packages/deepinfra/__init__.py")) or \
        glob.glob(str(root / "lib/python3*/dist-packages/deepinfra/__init__.py"))


@pytest.mark.parametrize("static", [False, True])
def test_pkg_config_consumer_builds_and_runs(staged_install, tmp_path, static):
    env = dict(os.environ, PKG_CONFIG_PATH=str(staged_install / "usr/local/lib/pkgconfig"))
    relocate = "--define-variable=prefix=%s" % (staged_install / "usr/local")
    flags = run(["pkg-config", relocate, "--cflags", "--libs"] + (["--static"] if static else []) +
                ["deepinfra"], env=env).stdout.split()
    src = tmp_path / "consumer.c"
    src.write_text(CONSUMER)
    exe = tmp_path / "consumer"
    if static:
        # Prefer the archive: hide the shared library from this link.
        libdir = str(staged_install / "usr/local/lib")
        static_dir = tmp_path / "static"
        static_dir.mkdir()
        shutil.copy(os.path.join(libdir, "libdeepinfra.a"), static_dir)
        flags = ["-L" + str(static_dir)] + flags
    run(["gcc", "-std=c11", str(src), "-o", str(exe)] + flags)
    libdir = str(staged_install / "usr/local/lib")
    out = run([str(exe)], env=dict(os.environ, LD_LIBRARY_PATH=libdir)).stdout.split()
    assert out[0].startswith("0.1.0+") and out[1:] == ["5", "5"], out
    needed = run(["readelf", "-d", str(exe)]).stdout
    assert ("libdeepinfra.so.0" in needed) != static


def test_python_package_finds_the_installed_library(tmp_path):
    prefix = tmp_path / "prefix"
    run(["make", "-s", "--no-print-directory", "install", *build_make_args(BUILD),
         "PREFIX=" + str(prefix), "PYTHON=" + sys.executable], cwd=ROOT)
    site = glob.glob(str(prefix / "lib/python3*/*-packages"))
    assert site, "Python package not installed under %s" % prefix
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEEPINFRA_LIBRARY_PATH", "DINF_BUILD_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = site[0]
    code = "import deepinfra; print(deepinfra.library_path()); print(deepinfra.version())"
    out = run([sys.executable, "-c", code], env=env, cwd=str(tmp_path)).stdout.split()
    assert out[0].startswith(str(prefix / "lib")), out
    assert out[1].startswith("0.1.0+")


def test_cpu_vector_kernels_have_no_fma():
    """The CPU kernels' sets give the same bits only without FMA contraction
    (lib/mla/mla_cpu.c, lib/gemm/gemm.c, lib/core/fp8.c): the build's -ffp-contract=off must
    reach their AVX-512 and AVX2 variants (a fused multiply-add in any of
    them would make it differ from the others)."""
    objdump = shutil.which("objdump")
    if not objdump:
        pytest.skip("objdump not installed")
    for rel, widest in (("lib/mla/mla_cpu.o", "qk_avx512"), ("lib/gemm/gemm.o", "tile_block_avx512"),
                        ("lib/core/fp8.o", "encode_avx512")):
        obj = os.path.join(BUILD, "obj", rel)
        assert os.path.exists(obj), "%s not built" % obj
        dis = run([objdump, "-d", "--no-show-raw-insn", obj]).stdout
        if platform.machine() == "x86_64":
            assert "<%s>:" % widest in dis, "%s: no %s" % (rel, widest)
            assert "zmm" in dis, "%s: the AVX-512 variant uses no zmm register" % rel
        fma = [line for line in dis.splitlines() if "vfmadd" in line or "vfmsub" in line
               or "vfnmadd" in line]
        assert not fma, "%s has fused multiply-adds: %s" % (rel, fma[:3])


def test_kernel_resource_reports_have_no_spills_or_local_memory():
    if not library_has_cuda():
        pytest.skip("CPU-only build (make CUDA=0): no kernels")
    reports = glob.glob(os.path.join(BUILD, "obj", "kernels", "**", "*.resource"), recursive=True)
    assert reports, "no nvcc resource reports under %s/obj/kernels" % BUILD
    checked = 0
    seen = set()
    for path in reports:
        text = open(path).read()
        for func, arch, body in re.findall(
                r"Compiling entry function '([^']+)' for '([^']+)'(.*?)(?=Compiling entry|\Z)",
                text, re.S):
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill "
                          r"loads", body)
            assert m, "%s: no resource line for %s" % (path, func)
            assert m.groups() == ("0", "0", "0"), (
                "%s (%s) uses local memory: %s" % (func, arch, m.group(0)))
            checked += 1
            seen.add(func)
    assert checked > 0
    # every MLA kernel (kernels/mla) is among them: metadata, decode (BF16 and FP8 caches),
    # combine, FP8 quantize-into-cache, the fast and seesaw rungs (BF16 and FP8 caches), the
    # fast rung's sparse (FP8) kernels (the V3.2 and MODEL1 caches), the MODEL1 quantizer
    for kernel in ("mla_metadata_kernel", "mla_decode_kernelILb0E", "mla_decode_kernelILb1E",
                   "mla_combine_kernel", "mla_quantize_fp8_kernel", "mla_decode_fast_kernelILb0E",
                   "mla_decode_fast_kernelILb1E", "mla_decode_seesaw_kernelILb0E",
                   "mla_decode_seesaw_kernelILb1E", "mla_decode_fast_sparse_kernel",
                   "mla_decode_fast_sparse_model1_kernel", "mla_quantize_model1_kernel"):
        assert any(kernel in f for f in seen), "no resource report for %s" % kernel


def test_mla_fast_rung_register_budget():
    """The fast MLA rung starts every thread at the __launch_bounds__(384, 1) cap of
    168 registers; its producer warpgroup lowers itself to DINF_MLA_FAST_PRODUCER_REGS and
    its two consumer warpgroups raise themselves to DINF_MLA_FAST_CONSUMER_REGS
    (setmaxnreg, lib/mla/mla_fast_hd.h), a split that balances only from 168: with any
    other count at entry the consumers' setmaxnreg.inc would wait forever. The seesaw
    rung's kernels (DINF_MLA_SEESAW_PRODUCER_REGS / _CONSUMER_REGS) start at 168 too."""
    if not library_has_cuda():
        pytest.skip("CPU-only build (make CUDA=0): no kernels")
    path = os.path.join(BUILD, "obj", "kernels", "mla", "mla_decode_fast.o.resource")
    text = open(path).read()
    for kind in ("fast", "seesaw"):
        found = re.findall(r"Compiling entry function '[^']*mla_decode_%s_kernel[^']*' for 'sm_90a'"
                           r"[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*Used (\d+) registers" % kind, text)
        assert len(found) == 2, "expected the BF16 and FP8 %s kernels in %s" % (kind, path)
        assert found == ["168", "168"], (
            "%s MLA kernels use %s registers at entry, not 168" % (kind, found))
    for name in ("mla_decode_fast_sparse_kernel", "mla_decode_fast_sparse_model1_kernel"):
        found = re.findall(r"Compiling entry function '[^']*%s[^']*' for "
                           r"'sm_90a'[^\n]*\n[^\n]*\n[^\n]*\n[^\n]*Used (\d+) registers" % name,
                           text)
        assert found == ["168"], "%s uses %s registers at entry, not 168" % (name, found)


def test_mla_fast_rung_sass_uses_wgmma_and_tma():
    """The fast MLA kernels' SASS (sm_90a, the Makefile's nvcc flags) holds the bf16 wgmma
    of QK^T (m64n32k16; the seesaw rung m64n64k16) and PV (m64n256k16), register
    reallocation, and no local memory; the BF16-cache kernels load pages with 4-D TMA, the
    FP8-cache kernels (only they) prefetch pages into L2 (UBLKPF). Needs a disassembler (make deps
    installs nvdisasm from PyPI; tools/find-nvdisasm)."""
    if not library_has_cuda():
        pytest.skip("CPU-only build (make CUDA=0): no kernels")
    found = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "find-nvdisasm")],
                           capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip("no nvdisasm (make deps installs one): the SASS check needs a disassembler")
    nvcc = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    if not os.access(nvcc, os.X_OK):
        pytest.skip("no nvcc at %s" % nvcc)
    out = os.path.join(BUILD, "test-mla-fast.cubin")
    subprocess.run([nvcc, "-std=c++17", "-O3", "-cubin", "-arch=sm_90a", "-DDINF_BUILD",
                    "-I" + os.path.join(ROOT, "include"), "-o", out,
                    os.path.join(ROOT, "kernels", "mla", "mla_decode_fast.cu")],
                   check=True, cwd=ROOT, capture_output=True)
    sass = subprocess.run([found.stdout.strip(), out], check=True, capture_output=True,
                          text=True).stdout
    os.remove(out)
    # one function body per kernel instantiation (BF16 cache: b0, FP8 cache: b1)
    bodies = re.split(r"\.text\.", sass)
    for kind, qk in (("fast", "64x32x16"), ("seesaw", "64x64x16")):
        kernels = {("fp8" if "ILb1E" in b.split(":")[0] else "bf16"): b for b in bodies
                   if "mla_decode_%s_kernel" % kind in b.split("\n")[0]}
        assert set(kernels) == {"bf16", "fp8"}, "%s kernels not found in the SASS" % kind
        for name, body in kernels.items():
            name = kind + "/" + name
            assert re.search(r"HGMMA\.%s\.F32\.BF16" % qk, body), name + ": no QK^T wgmma " + qk
            assert re.search(r"HGMMA\.64x256x16\.F32\.BF16", body), name + ": no PV wgmma"
            assert "USETMAXREG" in body, name + ": no register reallocation"
            assert not re.search(r"\b(LDL|STL)\b", body), name + ": local memory in the SASS"
        assert "UTMALDG.4D" in kernels["bf16"], kind + ": the BF16-cache kernel issues no 4-D TMA load"
        # the FP8 producer's L2 prefetch of later pages (cp.async.bulk.prefetch.L2.global);
        # the BF16 cache's TMA path has none
        assert re.search(r"\bUBLKPF\.L2\b", kernels["fp8"]), kind + ": the FP8-cache kernel has no bulk L2 prefetch"
        assert "UBLKPF" not in kernels["bf16"], kind + ": the BF16-cache kernel issues a bulk L2 prefetch"
    # the fast rung's sparse kernels (FP8 caches: V3.2's entries and MODEL1's rows): the same
    # tensor-core work and per-entry L2 prefetches, no TMA (the listed entries are gathered
    # with 16-byte loads)
    for name in ("mla_decode_fast_sparse_kernel", "mla_decode_fast_sparse_model1_kernel"):
        sparse = [b for b in bodies if name in b.split("\n")[0]]
        assert sparse, "%s is not in the SASS" % name
        body = max(sparse, key=len)  # its code section (the others are its small data sections)
        assert re.search(r"HGMMA\.64x32x16\.F32\.BF16", body), name + ": no QK^T wgmma"
        assert re.search(r"HGMMA\.64x256x16\.F32\.BF16", body), name + ": no PV wgmma"
        assert "USETMAXREG" in body and re.search(r"\bUBLKPF\.L2\b", body)
        assert "UTMALDG" not in body, name + ": a TMA load in the gathering kernel"
        assert not re.search(r"\b(LDL|STL)\b", body), name + ": local memory in the SASS"


def test_every_kernel_directory_has_resource_reports():
    """The resource check above covers each kernels/<module>/*.cu (ep included)."""
    if not library_has_cuda():
        pytest.skip("CPU-only build (make CUDA=0): no kernels")
    for cu in glob.glob(os.path.join(ROOT, "kernels", "*", "*.cu")):
        rel = os.path.relpath(cu, ROOT)
        report = os.path.join(BUILD, "obj", rel[:-3] + ".o.resource")
        assert os.path.exists(report), "no resource report for %s" % rel
        assert "Compiling entry function" in open(report).read(), "%s has no kernels" % rel


def test_cpu_only_build_from_the_same_sources(tmp_path):
    """make CUDA=0 builds a library with no CUDA code in it: the library under
    test when it is such a build (make test CUDA=0), else one built here."""
    if library_has_cuda():
        build = tmp_path / "cpu"
        run(["make", "-s", "--no-print-directory", "lib", "CUDA=0", "BUILDDIR=" + str(build)],
            cwd=ROOT)
        so = glob.glob(str(build / "lib/libdeepinfra.so.*.*.*"))[0]
    else:
        assert len(SOFILE) == 1, SOFILE
        so = SOFILE[0]
    syms = run(["nm", so]).stdout
    assert "cudaGetDeviceCount" not in syms
    lib = ctypes.CDLL(so)
    lib.dinf_version_string.restype = ctypes.c_char_p
    assert lib.dinf_version_string().decode().endswith("+cpu")
