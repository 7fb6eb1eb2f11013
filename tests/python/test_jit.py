"""deepinfra.jit and the GEMM warm-up (deepinfra.gemm.kernel_config / precompile).

Compiles run for "sm_90a" with NVRTC only (no GPU), each in a fresh process
with its own cache directory, so the counters and the disk cache start empty.
"""

import ast
import os
import re
import stat

import pytest

import deepinfra
from deepinfra import jit

from conftest import REPO, run_python


def _nvrtc_missing():
    try:
        jit.nvrtc_version()
    except deepinfra.UnsupportedError as e:
        return str(e)
    return None


NVRTC_MISSING = _nvrtc_missing()
needs_nvrtc = pytest.mark.skipif(NVRTC_MISSING is not None,
                                 reason="NVRTC not usable: %s" % NVRTC_MISSING)


def run_ok(code, tmp_path, **env):
    """Run code in a fresh interpreter with DINF_JIT_CACHE_DIR=tmp_path/cache."""
    overrides = {"DINF_JIT_CACHE_DIR": str(tmp_path / "cache"), "DINF_JIT_THREADS": "2",
                 "DEEPINFRA_LIBRARY_PATH": deepinfra.library_path()}  # the library under test
    overrides.update(env)
    p = run_python("import deepinfra\nfrom deepinfra import jit, gemm\n" + code, overrides)
    assert p.returncode == 0, "stdout:\n%s\nstderr:\n%s" % (p.stdout, p.stderr)
    return p.stdout


def test_template_constants_mirror_the_library_registry():
    """jit.TEMPLATE_CONSTANTS names every template of jit/jit_source.c with its
    constants in the registry's order."""
    src = open(os.path.join(REPO, "jit", "jit_source.c")).read()
    body = src[src.index("templates[] = {"):src.index("};", src.index("templates[] = {"))]
    registry = {}
    for m in re.finditer(r'\{"(\w+)", "[\w.]+", "[\w:]+", (\d+),\s*\{(.*?\})\}\}', body, re.S):
        names = tuple(re.findall(r'\{"(\w+)", -?\d+, -?\d+\}', m.group(3)))
        assert len(names) == int(m.group(2)), m.group(0)
        registry[m.group(1)] = names
    assert registry, "no template found in jit/jit_source.c"
    assert jit.TEMPLATE_CONSTANTS == registry


def test_kernel_config_value_semantics():
    a = jit.KernelConfig("fp8_gemm_fast", [0, 128, 112, 6, 2, 1])
    b = jit.KernelConfig("fp8_gemm_fast", (0, 128, 112, 6, 2, 1))
    c = jit.KernelConfig("fp8_gemm_fast", (0, 128, 112, 6, 1, 1))
    assert a == b and hash(a) == hash(b) and a != c and len({a, b, c}) == 2
    assert a.name == "fp8_gemm_fast" and a.params == (0, 128, 112, 6, 2, 1)
    assert str(a) == "fp8_gemm_fast<0,128,112,6,2,1>"
    assert repr(a) == "KernelConfig('fp8_gemm_fast', (0, 128, 112, 6, 2, 1))"
    assert a.constants == {"GEMM_TYPE": 0, "BLOCK_M": 128, "BLOCK_N": 112, "NUM_STAGES": 6,
                           "CLUSTER": 2, "SPLIT_K": 1}
    # Unknown template or count: positional names.
    assert jit.KernelConfig("mine", (3, 4)).constants == {"P0": 3, "P1": 4}
    assert jit.KernelConfig("scale_rows", (1,)).constants == {"P0": 1}
    # Round trip through the C struct.
    assert jit.KernelConfig._from_c(a._to_c()) == a


@pytest.mark.parametrize("name,params,match", [
    (b"scale_rows", (1,), "name must be a str"),
    ("", (), "must be 1..63 bytes"),
    ("x" * 64, (), "must be 1..63 bytes"),
    ("a\0b", (), "without NUL"),
    ("scale_rows", tuple(range(25)), "25 params: a kernel template takes at most 24"),
    ("scale_rows", (1, 2**63), r"params\[1\]"),
    ("scale_rows", (1, "2"), r"params\[1\]"),
])
def test_kernel_config_rejects_bad_values(name, params, match):
    with pytest.raises(deepinfra.InvalidArgumentError, match=match):
        jit.KernelConfig(name, params)


def test_gemm_kernel_config_is_the_heuristics_pick():
    """The DeepSeek-V3 picks pinned in tests/gemm/test_gemm_fast.c (132 SMs)."""
    kc = deepinfra.gemm.kernel_config
    got = kc("normal", 64, 2112, 7168, num_sms=132)
    assert got.name == "fp8_gemm_fast"
    c = got.constants
    assert (c["GEMM_TYPE"], c["BLOCK_M"], c["BLOCK_N"], c["CLUSTER"], c["SPLIT_K"]) == \
        (0, 64, 48, 3, 3)
    c = kc("normal", 128, 2112, 7168, num_sms=132).constants
    assert (c["BLOCK_M"], c["BLOCK_N"], c["SPLIT_K"]) == (128, 80, 4)
    c = kc("normal", 1, 2112, 7168, num_sms=132).constants
    assert (c["BLOCK_M"], c["BLOCK_N"], c["CLUSTER"], c["SPLIT_K"]) == (64, 16, 1, 1)
    # Forms by name or by value; the form lands in GEMM_TYPE.
    assert kc("contiguous", 8192, 4096, 7168, 4, num_sms=132) == \
        kc(1, 8192, 4096, 7168, 4, num_sms=132)
    assert kc("contiguous", 8192, 4096, 7168, 4, num_sms=132).constants["GEMM_TYPE"] == 1
    assert kc("masked", 256, 4096, 7168, 4, num_sms=132).constants["GEMM_TYPE"] == 2
    # Pure: the same answer every time.
    assert kc("normal", 4096, 7168, 2048, num_sms=132) == kc("normal", 4096, 7168, 2048,
                                                            num_sms=132)


def test_gemm_kernel_config_follows_the_rung_selected_by_the_environment(tmp_path):
    out = run_ok("print(gemm.kernel_config('normal', 64, 2112, 7168, num_sms=132))", tmp_path,
                 DINF_FP8_GEMM_KERNEL="simple")
    assert re.fullmatch(r"fp8_gemm<0,64,\d+,\d+>\n", out), out
    p = run_python("from deepinfra import gemm\ngemm.kernel_config('normal', 1, 16, 16, "
                   "num_sms=132)", {"DINF_FP8_GEMM_KERNEL": "fastest",
                                    "DEEPINFRA_LIBRARY_PATH": deepinfra.library_path()})
    assert p.returncode != 0 and "DINF_FP8_GEMM_KERNEL=\"fastest\"" in p.stderr, p.stderr


@pytest.mark.parametrize("args,kwargs,match", [
    (("sideways", 1, 16, 16), {}, "form='sideways' is not one of contiguous, masked, normal, wgrad"),
    ((4, 1, 16, 16), {}, "form=4 is not a dinf_fp8_gemm_form"),
    (("normal", -1, 16, 16), {}, "m=-1 is negative"),
    (("normal", 1, 0, 16), {}, "n=0 and k=16 must be >= 1"),
    (("normal", 1, 16, 0), {}, "n=16 and k=0 must be >= 1"),
    (("masked", 1, 16, 16, 0), {}, "num_groups"),
    (("normal", 1, 16, 16), {"num_sms": -1}, "num_sms"),
    (("normal", 1, 16, 16), {"num_sms": 2**31}, "num_sms"),
])
def test_gemm_kernel_config_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(deepinfra.InvalidArgumentError, match=match):
        deepinfra.gemm.kernel_config(*args, **kwargs)


def test_gemm_kernel_config_of_the_current_device_needs_one():
    info = deepinfra.device_query(0)
    if info["usable"] and (info["cc_major"], info["cc_minor"]) == (9, 0):
        c = deepinfra.gemm.kernel_config("normal", 64, 2112, 7168)  # num_sms=0: this device
        assert c.name == "fp8_gemm_fast"
    else:
        with pytest.raises(deepinfra.UnsupportedError):
            deepinfra.gemm.kernel_config("normal", 64, 2112, 7168)


@needs_nvrtc
def test_precompile_for_sm90a_fills_the_cache_and_a_second_process_reads_it(tmp_path):
    code = """
import ast
import os
cfgs = [jit.KernelConfig("scale_rows", (128, 4, 1)),
        gemm.kernel_config("normal", 128, 2112, 7168, num_sms=132)]
jit.precompile(cfgs, arch="sm_90a")
jit.precompile(cfgs[0], arch="sm_90a")      # a single config; now in memory
s = jit.stats()
print(s.compiles, s.compile_errors, s.memory_hits, s.disk_hits, s.loads, s.compile_seconds > 0)
print(jit.cache_dir())
print(sorted(os.listdir(jit.cache_dir())))
"""
    out = run_ok(code, tmp_path).splitlines()
    assert out[0] == "2 0 1 0 0 True", out
    assert out[1] == str(tmp_path / "cache")
    files = ast.literal_eval(out[2])
    assert len(files) == 2, files
    assert any(re.fullmatch(r"scale_rows-[0-9a-f]{32}\.cubin", f) for f in files), files
    assert any(re.fullmatch(r"fp8_gemm_fast-[0-9a-f]{32}\.cubin", f) for f in files), files
    mode = stat.S_IMODE(os.stat(tmp_path / "cache").st_mode)
    assert mode == 0o700, oct(mode)
    # A fresh process finds both on disk and compiles nothing.
    out = run_ok(code, tmp_path).splitlines()
    assert out[0] == "0 0 1 2 0 False", out


@needs_nvrtc
def test_gemm_precompile_compiles_each_distinct_kernel_once(tmp_path):
    code = """
ms = [1, 2, 33, 64, 64, 128, 100]
configs = gemm.precompile("normal", 7168, 2048, ms, num_sms=132, arch="sm_90a")
expected = []
for m in ms:
    c = gemm.kernel_config("normal", m, 7168, 2048, num_sms=132)
    if c not in expected:
        expected.append(c)
assert configs == expected, (configs, expected)
# One m: a list of its one kernel, already in memory.
assert gemm.precompile("normal", 7168, 2048, 64, num_sms=132, arch="sm_90a") == \\
    [gemm.kernel_config("normal", 64, 7168, 2048, num_sms=132)]
print(len(configs), jit.stats().compiles, jit.stats().memory_hits)
print(gemm.precompile("normal", 7168, 2048, [], num_sms=132, arch="sm_90a"))
"""
    out = run_ok(code, tmp_path).splitlines()
    n, compiles, hits = (int(x) for x in out[0].split())
    assert 2 <= n <= 7 and compiles == n and hits == 1, out
    assert out[1] == "[]"


@needs_nvrtc
def test_gemm_precompile_of_the_wgrad_form(tmp_path):
    """The weight-gradient GEMM's kernels (form "wgrad": template
    fp8_gemm_1d1d, whatever DINF_FP8_GEMM_KERNEL says) precompile for
    sm_90a without a GPU, one per distinct (m, n)."""
    code = """
configs = gemm.precompile("wgrad", 7168, 4096, [64, 2048, 7168], num_sms=132, arch="sm_90a")
assert all(c.name == "fp8_gemm_1d1d" and len(c.constants) == 3 for c in configs), configs
assert configs == list(dict.fromkeys(gemm.kernel_config("wgrad", m, 7168, 4096, num_sms=132)
                                     for m in [64, 2048, 7168])), configs
print(len(configs), jit.stats().compiles)
"""
    out = run_ok(code, tmp_path, DINF_FP8_GEMM_KERNEL="simple").split()
    assert int(out[0]) >= 2 and int(out[1]) == int(out[0]), out


@needs_nvrtc
def test_precompile_rejects_bad_configs_naming_the_index(tmp_path):
    code = """
good = jit.KernelConfig("scale_rows", (128, 4, 1))
cases = [
    ([good, jit.KernelConfig("nope", (1,))], None),
    ([good, jit.KernelConfig("scale_rows", (128, 4))], None),
    ([good, jit.KernelConfig("scale_rows", (0, 4, 1))], None),
    ([good], "sm90"),
    ([good, "scale_rows<1,1,1>"], None),
]
for configs, arch in cases:
    try:
        jit.precompile(configs, arch=arch or "sm_90a")
    except deepinfra.InvalidArgumentError as e:
        print(type(e).__name__, "|", e)
    else:
        print("accepted")
try:
    jit.precompile([good], arch=90)
except deepinfra.InvalidArgumentError as e:
    print(type(e).__name__, "|", e)
print(jit.stats().compiles)
"""
    out = run_ok(code, tmp_path).splitlines()
    assert len(out) == 7, out
    assert "configs[1].name=\"nope\" is not a kernel template" in out[0], out[0]
    assert "configs[1]" in out[1] and "params" in out[1], out[1]
    assert "configs[1]" in out[2] and "BLOCK_THREADS" in out[2], out[2]
    assert "sm90" in out[3], out[3]
    assert "configs[1] is a str, not a deepinfra.jit.KernelConfig" in out[4], out[4]
    assert "arch must be a str" in out[5], out[5]
    assert out[6] == "0", out  # a bad entry stops the batch before anything compiles


def test_cache_dir_follows_set_cache_dir_and_refuses_unsafe_directories(tmp_path):
    if deepinfra.version().endswith("+cpu"):
        pytest.skip("CPU-only build: the JIT answers UnsupportedError")
    unsafe = tmp_path / "open"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    afile = tmp_path / "file"
    afile.write_text("x")
    code = """
print(jit.cache_dir())
jit.set_cache_dir(%r)
print(jit.cache_dir())
jit.set_cache_dir(None)
print(jit.cache_dir())
for bad in ["relative/dir", %r, %r]:
    try:
        jit.set_cache_dir(bad)
    except deepinfra.DeepInfraError as e:
        print(type(e).__name__, "|", e)
print(jit.cache_dir())
""" % (str(tmp_path / "mine" / "deep"), str(unsafe), str(afile / "sub"))
    out = run_ok(code, tmp_path).splitlines()
    assert out[0] == str(tmp_path / "cache")
    assert out[1] == str(tmp_path / "mine" / "deep")
    assert stat.S_IMODE(os.stat(tmp_path / "mine" / "deep").st_mode) == 0o700
    assert out[2] == str(tmp_path / "cache")
    assert out[3].startswith("InvalidArgumentError |") and "relative" in out[3], out[3]
    assert out[4].startswith("JitError |") and "writable" in out[4], out[4]
    assert out[5].startswith("JitError |"), out[5]
    assert out[6] == str(tmp_path / "cache")


def test_nvrtc_missing_is_unsupported_with_the_reason(tmp_path):
    code = """
for f in (jit.nvrtc_version,
          lambda: jit.precompile(jit.KernelConfig("scale_rows", (128, 4, 1)), arch="sm_90a")):
    try:
        f()
    except deepinfra.UnsupportedError as e:
        print("UnsupportedError |", e)
"""
    out = run_ok(code, tmp_path, DINF_NVRTC_LIBRARY=str(tmp_path / "no-libnvrtc.so"))
    lines = out.splitlines()
    assert len(lines) == 2, out
    for line in lines:
        assert line.startswith("UnsupportedError |"), line
    if not deepinfra.version().endswith("+cpu"):
        assert "no-libnvrtc.so" in lines[0], lines[0]


@needs_nvrtc
def test_nvrtc_version_is_the_toolkits():
    major, minor = jit.nvrtc_version()
    assert major >= 12 and minor >= 0
