"""The GEMM JIT from an installed library (issue 4): a program built against the
staged install (pkg-config, no CUDA include path) compiles the FP8 GEMM kernel
with NVRTC for sm_90a, with the CUDA toolkit's headers hidden (a private mount
namespace puts an empty directory over them), proving that run-time
compilation needs no toolkit headers and no source tree. No GPU needed."""

import glob
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import build_make_args, library_has_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("DINF_BUILD_DIR", "build"))
CUDA_HOME = os.environ.get("CUDA_HOME", "/usr/local/cuda")

CONSUMER = textwrap.dedent("""
    #include <deepinfra.h>
    #include <stdio.h>
    int main(int argc, char **argv) {
        if (argc != 2) return 64;
        dinf_jit_kernel_config c;
        if (dinf_fp8_gemm_kernel_config(DINF_FP8_GEMM_FORM_NORMAL, 4096, 7168, 2048, 1, 132,
                                        &c) != DINF_STATUS_OK ||
            dinf_jit_set_cache_dir(argv[1]) != DINF_STATUS_OK ||
            dinf_jit_precompile(&c, 1, "sm_90a") != DINF_STATUS_OK) {
            fprintf(stderr, "%s\\n", dinf_last_error());
            return 2;
        }
        dinf_jit_stats s = DINF_JIT_STATS_INIT;
        if (dinf_jit_get_stats(&s) != DINF_STATUS_OK) return 3;
        printf("%s %lld %lld %lld %lld %llu\\n", c.name, (long long)c.params[0],
               (long long)c.params[1], (long long)c.params[2], (long long)c.params[3],
               (unsigned long long)s.compiles);
        return 0;
    }
""")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def hidden_headers_runner(include_dir):
    """The argv prefix that runs a command with include_dir masked by an empty
    tmpfs (unshare -m), or None where mount namespaces are not permitted."""
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            "mount -t tmpfs none %s && test ! -e %s/cuda_runtime.h"
                            % (include_dir, include_dir)], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c",
            'mount -t tmpfs none "$0" && test ! -e "$0/cuda_runtime.h" && exec "$@"',
            include_dir]


def test_installed_library_jit_compiles_a_gemm_kernel_without_toolkit_headers(tmp_path):
    if not library_has_cuda():
        pytest.skip("CPU-only build (make CUDA=0): no JIT")
    dest = tmp_path / "destdir"
    run(["make", "-s", "--no-print-directory", "install", *build_make_args(BUILD),
         "PREFIX=/usr/local", "DESTDIR=" + str(dest), "PYTHON=" + sys.executable], cwd=ROOT)
    prefix = dest / "usr/local"
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib/pkgconfig"))
    flags = run(["pkg-config", "--define-variable=prefix=%s" % prefix, "--cflags", "--libs",
                 "deepinfra"], env=env).stdout.split()
    assert not [f for f in flags if f.startswith("-I") and "cuda" in f], flags
    src = tmp_path / "jit_consumer.c"
    src.write_text(CONSUMER)
    exe = tmp_path / "jit_consumer"
    run(["gcc", "-std=c11", "-Wall", "-Werror", str(src), "-o", str(exe)] + flags)

    cache = tmp_path / "cache"
    run_env = {k: v for k, v in os.environ.items()
               if k not in ("CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH", "CUDA_HOME",
                            "CUDA_PATH", "DINF_JIT_CACHE_DIR", "DINF_FP8_GEMM_KERNEL")}
    run_env["LD_LIBRARY_PATH"] = str(prefix / "lib") + (
        ":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH") else "")
    include_dir = os.path.realpath(os.path.join(CUDA_HOME, "include"))
    prefix_argv = hidden_headers_runner(include_dir) if os.path.isdir(include_dir) else []
    if prefix_argv is None:
        prefix_argv = []
        print("note: mount namespaces not permitted here; the CUDA headers stay visible "
              "(NVRTC still gets no include path)")
    proc = subprocess.run(prefix_argv + [str(exe), str(cache)], capture_output=True, text=True,
                          env=run_env, cwd=str(tmp_path))
    if proc.returncode == 2 and "NVRTC not found" in proc.stderr:
        pytest.skip("NVRTC is not available: " + proc.stderr.strip())
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    name, *params, compiles = proc.stdout.split()
    # the GPU path's default rung (fp8_gemm_fast.cuh; DINF_FP8_GEMM_KERNEL=simple: fp8_gemm)
    assert name == "fp8_gemm_fast" and params[0] == "0" and compiles == "1", proc.stdout
    entries = glob.glob(str(cache / "fp8_gemm_fast-*.cubin"))
    assert len(entries) == 1, os.listdir(cache)
    assert os.path.getsize(entries[0]) > 10000
