"""tools/gpu-check's own logic, on this machine, with stand-in binaries: each
suite and benchmark family runs as its own command under its share of the
phase budget; one that runs long is reported as TIMEOUT and the others keep
their results; the summary table lists every suite, failures included."""
import os
import stat
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A stand-in for the Criterion runner: --list, and --filter SUITE/* writing
# the XML Criterion writes; gemm_gpu fails one test, slow_gpu never ends.
FAKE_TESTS = r'''#!/usr/bin/env python3
import os, sys, time
args = sys.argv[1:]
if "--list" in args:
    print("core: 5 tests\n|-- a\ngpu: 1 test\nfp8_gpu: 2 tests\ngemm_gpu: 3 tests\nslow_gpu: 1 test\n"
          "gemm_cpu_isa: 1 test\nfp8_cpu_isa: 1 test")
    sys.exit(0)
suite = [a for a in args if a.startswith("--filter")] and args[args.index("--filter") + 1].split("/")[0]
xml = [a.split(":", 1)[1] for a in args if a.startswith("--output=xml:")][0]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(suite + "\n")
if suite == "slow_gpu":
    time.sleep(60)
n = {"gpu": 1, "fp8_gpu": 2, "gemm_gpu": 3, "gemm_cpu_isa": 1, "fp8_cpu_isa": 1}[suite]
fail = 1 if suite == "gemm_gpu" else 0
cases = "".join('<testcase name="t%d">%s</testcase>' % (i, "<failure/>" if i < fail else "")
                for i in range(n))
# as Criterion does, the file also lists every suite the filter left out (all skipped)
others = '<testsuite name="core" tests="5" failures="0" skipped="5"></testsuite>' \
         '<testsuite name="fp8_gpu" tests="2" failures="0" skipped="2"></testsuite>' \
    if suite != "fp8_gpu" else ''
open(xml, "w").write('<testsuites>%s<testsuite name="%s" tests="%d" failures="%d" skipped="0">%s'
                     '</testsuite></testsuites>' % (others, suite, n, fail, cases))
print("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d | Crashing: 0" % (n, n - fail, fail))
sys.exit(1 if fail else 0)
'''

# A stand-in for the benchmark binary: one row per family; mla/gpu finishes
# one row (written to DINF_BENCH_ROWS as the shim does, then half a line) and
# never ends; crash/ finishes one row, leaves its JSON cut short and dies.
FAKE_BENCH = r'''#!/usr/bin/env python3
import json, os, sys, time
flt = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--benchmark_filter=")][0]
out = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--benchmark_out=")][0]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write("bench " + flt + "\n")
if flt in ("^mla/gpu/", "^crash/"):
    rows = open(os.environ["DINF_BENCH_ROWS"], "a")
    rows.write(json.dumps({"name": flt.strip("^") + "row0/manual_time", "run_type": "iteration",
                           "real_time": 7.25, "time_unit": "us", "FLOP/s": 6.5e14}) + "\n")
    rows.write('{"name": "' + flt.strip("^") + 'row1", "real_ti')
    rows.flush()
    if flt == "^crash/":
        open(out, "w").write('{"context": {}, "benchmarks": [')
        os.kill(os.getpid(), 11)
    time.sleep(60)
name = flt.strip("^") + "row"
print(name + "   1.0 us")
json.dump({"benchmarks": [{"name": name, "real_time": 1.5, "time_unit": "us",
                           "B/s": 2.0e12}]}, open(out, "w"))
'''


def write_exe(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


@pytest.fixture()
def fake_build(tmp_path):
    build = tmp_path / "build"
    write_exe(str(build / "tests" / "deepinfra_tests"), FAKE_TESTS)
    write_exe(str(build / "bench" / "deepinfra_bench"), FAKE_BENCH)
    return build


def run_check(build, tmp_path, **budgets):
    env = dict(os.environ)
    env.update({"GPU_CHECK_PY_S": "0", "GPU_CHECK_PEER_S": "0",
                "FAKE_CALLS": str(tmp_path / "calls.log")})
    env.update({k: str(v) for k, v in budgets.items()})
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run([os.path.join(ROOT, "tools", "gpu-check"), "--build-dir", str(build),
                           "--out", str(out)], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, out, time.monotonic() - t0


def table(stdout):
    return stdout[stdout.index("gpu-check summary"):]


def run_summary(out):
    """tools/gpu-summary on an output directory."""
    return subprocess.run([os.path.join(ROOT, "tools", "gpu-summary"), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)


def test_a_long_suite_and_family_time_out_alone(fake_build, tmp_path):
    proc, out, seconds = run_check(fake_build, tmp_path, GPU_CHECK_C_S=8, GPU_CHECK_BENCH_S=8,
                                   GPU_CHECK_RESERVE_S=2)
    assert proc.returncode != 0
    t = table(proc.stdout)
    lines = {l.split()[0] + " " + l.split()[1]: l for l in t.splitlines() if l.startswith("C ")}
    assert "ok" in lines["C gpu"] and "1 tests" in lines["C gpu"]
    assert "ok" in lines["C fp8_gpu"]
    assert "FAIL" in lines["C gemm_gpu"] and "1 failed" in lines["C gemm_gpu"]
    assert "TIMEOUT" in lines["C slow_gpu"]
    assert "ok" in lines["C gemm_cpu_isa"] and "ok" in lines["C fp8_cpu_isa"]
    assert "core" not in " ".join(lines)  # a CPU suite is not run by default
    # one row per suite, from its own file, in the order they ran
    assert [l.split()[1] for l in t.splitlines() if l.startswith("C ")] == \
        ["gemm_cpu_isa", "fp8_cpu_isa", "gpu", "fp8_gpu", "gemm_gpu", "slow_gpu"]
    rows = [l for l in t.splitlines() if "row" in l or "TIMEOUT" in l]
    assert any(l.startswith("copy/row") and "2.00 TB/s" in l for l in rows)
    assert any(l.startswith("gemm/gpu/row") for l in rows)
    assert any(l.startswith("mla/gpu") and "TIMEOUT" in l and "after 1 finished rows" in l
               for l in rows)
    # the row mla/gpu finished before its stop is kept (its half-written next one is not)
    assert any(l.startswith("mla/gpu/row0 ") and "7.2 us" in l and "650.00 TFLOP/s" in l
               for l in rows)
    assert not any("row1" in l for l in rows)
    assert any(l.startswith("ep/virtual/row") for l in rows)  # after the one that ran long
    # the oracles' vector-set suite first (of the two, the one listed), then the
    # known GPU suites in their order (quick ones first), then the others; the
    # CPU-only suite "core" is not run; each long one was stopped within its
    # phase budget
    calls = (tmp_path / "calls.log").read_text().split("\n")
    assert calls[:6] == ["gemm_cpu_isa", "fp8_cpu_isa", "gpu", "fp8_gpu", "gemm_gpu", "slow_gpu"]
    assert calls[6:11] == ["bench ^copy/", "bench ^gemm/peer/", "bench ^gemm/gpu/", "bench ^mla/gpu/",
                          "bench ^ep/virtual/"]
    assert seconds < 8 + 8 + 25
    assert (out / "c-tests-gemm_gpu.xml").exists() and not (out / "c-tests-slow_gpu.xml").exists()
    assert "TIMEOUT" in (out / "summary.txt").read_text()


def test_selected_suites_and_families_only(fake_build, tmp_path):
    proc, out, _ = run_check(fake_build, tmp_path, GPU_CHECK_SUITES="fp8_gpu",
                             GPU_CHECK_BENCH="copy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t = table(proc.stdout)
    assert "C fp8_gpu" in t and "C gemm_gpu" not in t and "C gpu " not in t
    assert "copy/row" in t and "gemm/gpu/row" not in t
    assert "Python" in t and "not run" in t


def test_a_spent_budget_reports_the_suites_not_run(fake_build, tmp_path):
    proc, out, _ = run_check(fake_build, tmp_path, GPU_CHECK_SUITES="slow_gpu fp8_gpu",
                             GPU_CHECK_C_S=3, GPU_CHECK_RESERVE_S=0, GPU_CHECK_BENCH_S=0)
    t = table(proc.stdout)
    assert "C slow_gpu" in t and "TIMEOUT" in t
    assert "not run: GPU_CHECK_C_S was spent" in t  # fp8_gpu had nothing left


def test_a_crashed_family_keeps_its_finished_rows(fake_build, tmp_path):
    proc, out, _ = run_check(fake_build, tmp_path, GPU_CHECK_SUITES="fp8_gpu",
                             GPU_CHECK_BENCH="crash copy")
    assert proc.returncode != 0
    t = table(proc.stdout)
    lines = t.splitlines()
    assert any(l.startswith("crash/row0 ") and "650.00 TFLOP/s" in l for l in lines)
    assert any(l.startswith("crash ") and "ERROR" in l and "after 1 finished rows" in l
               for l in lines), t
    assert not any("unreadable JSON" in l for l in lines)  # its cut JSON is not read
    assert any(l.startswith("copy/row") for l in lines)  # the next family still ran
    assert (out / "bench-exit.txt").read_text().split()[0] == "crash"


def test_summary_answers_the_ab_questions(tmp_path):
    """tools/gpu-summary ends with one line per A/B the benchmark rows answer:
    the GEMM heuristic's pick against each forced tile (and which is
    fastest), ours against cuBLASLt, PDL on/off, the MLA rungs side by side
    and against PyTorch, the FP8 prefetch on/off."""
    import json
    rows = [("gemm/gpu/fp8_nt/m64_n2112_k7168", 10.0),
            ("gemm/gpu/tile_64x16_c1/fp8_nt/m64_n2112_k7168", 12.0),
            ("gemm/gpu/tile_64x48_c2_s2/fp8_nt/m64_n2112_k7168", 9.0),
            ("gemm/gpu/fp8_nt/m4096_n7168_k2048", 100.0),
            ("gemm/gpu/tile_128x128_c2/fp8_nt/m4096_n7168_k2048", 130.0),
            ("gemm/gpu/chain8_pdl_on/fp8_nt/m64_n2112_k7168", 8.0),
            ("gemm/gpu/chain8_pdl_off/fp8_nt/m64_n2112_k7168", 10.0),
            ("mla/gpu/fp8/b128_sq1_hq64_sk8192/simple", 500.0),
            ("mla/gpu/fp8/b128_sq1_hq64_sk8192/fast", 300.0),
            ("mla/gpu/fp8/b128_sq1_hq64_sk8192/seesaw", 290.0),
            ("mla/gpu/fp8/b128_sq1_hq64_sk8192/fast_nopf", 330.0),
            ("mla/gpu/sparse_fp8/b64_sq2_hq128_topk2048/simple", 900.0),
            ("mla/gpu/sparse_fp8/b64_sq2_hq128_topk2048/fast", 450.0),
            ("gemm/gpu/fp8_wgrad_nt/m7168_n2112_k4096", 400.0)]
    peer_rows = [("gemm/peer/cublaslt_blockwise/fp8_nt/m64_n2112_k7168", 12.5),
                 ("gemm/peer/cublaslt_per_tensor/fp8_nt/m64_n2112_k7168", 9.5),
                 ("gemm/peer/cublaslt_1d1d/fp8_wgrad_nt/m7168_n2112_k4096", 500.0)]
    out = tmp_path / "out"
    out.mkdir()
    # named as Google Benchmark names rows with a fixed iteration count and manual
    # time; the cuBLASLt rows come from their own family's file (gpu-check runs
    # gemm/peer in its own process)
    for fname, rs in (("bench-gemm_gpu.json", rows), ("bench-gemm_peer.json", peer_rows)):
        json.dump({"benchmarks": [{"name": n + "/iterations:30/manual_time",
                                   "real_time": t * 1000.0, "time_unit": "ns",
                                   "run_type": "iteration"} for n, t in rs]},
                  open(str(out / fname), "w"))
    # the PyTorch peer's file (benchmarks/peer_mla_torch.py)
    json.dump({"benchmarks": [{"name": "mla/torch/fp8/b128_sq1_hq64_sk8192", "real_time": 580.0,
                               "time_unit": "us"},
                              {"name": "mla/torch/sparse_fp8/b64_sq2_hq128_topk2048",
                               "real_time": 1800.0, "time_unit": "us"}]},
              open(str(out / "peer-mla-torch.json"), "w"))
    proc = run_summary(out)
    assert proc.returncode == 0, proc.stderr
    ab = proc.stdout[proc.stdout.index("A/B"):]
    assert ("gemm fp8_nt/m64_n2112_k7168: pick 10.0 us; 64x48_c2_s2 0.90x, 64x16_c1 1.20x; "
            "FORCED 64x48_c2_s2 IS FASTER (0.90x the pick's time)") in ab, ab
    assert "gemm fp8_nt/m4096_n7168_k2048: pick 100.0 us; 128x128_c2 1.30x; the pick is fastest" in ab
    assert "gemm PDL fp8_nt/m64_n2112_k7168: on 8.00 us, off 10.00 us per call (on/off 0.80x)" in ab
    assert ("mla fp8 b128_sq1_hq64_sk8192: simple 500.0 us, fast 300.0 us, seesaw 290.0 us "
            "-> seesaw") in ab
    assert "mla fp8 b128_sq1_hq64_sk8192: fast prefetch on 300.0 us, off 330.0 us (on/off 0.91x)" in ab
    assert ("gemm fp8_nt/m64_n2112_k7168: ours 10.0 us, cuBLASLt blockwise 12.5 us "
            "(ours/peer 0.80x: ours faster)") in ab, ab
    assert ("gemm fp8_nt/m64_n2112_k7168: ours 10.0 us, cuBLASLt per_tensor 9.5 us "
            "(ours/peer 1.05x: PEER FASTER)") in ab, ab
    # the weight-gradient GEMM against cuBLASLt's 1x128 x 1x128 (not one of issue 7's goals)
    assert ("gemm fp8_wgrad_nt/m7168_n2112_k4096: ours 400.0 us, cuBLASLt 1d1d 500.0 us "
            "(ours/peer 0.80x: ours faster)") in ab, ab
    assert ("mla fp8 b128_sq1_hq64_sk8192: ours (fastest rung) 290.0 us, PyTorch 580.0 us "
            "(ours/peer 0.50x)") in ab, ab
    # the sparse decode: its rungs side by side and against PyTorch; not a goal row
    assert "mla sparse_fp8 b64_sq2_hq128_topk2048: simple 900.0 us, fast 450.0 us -> fast" in ab, ab
    assert ("mla sparse_fp8 b64_sq2_hq128_topk2048: ours (fastest rung) 450.0 us, PyTorch "
            "1800.0 us (ours/peer 0.25x)") in ab, ab
    assert "goal mla sparse" not in proc.stdout
    # the table's own rows carry the names without Google Benchmark's suffixes
    assert "gemm/gpu/fp8_nt/m64_n2112_k7168 " in proc.stdout and "iterations:" not in proc.stdout


def test_summary_names_an_empty_peer_file(tmp_path):
    """A peer script that ran but measured nothing (no torch, no device, or
    stopped by its budget before its first row) leaves an ERROR row naming
    its log instead of silence."""
    import json
    out = tmp_path / "out"
    out.mkdir()
    json.dump({"benchmarks": []}, open(str(out / "peer-mla-torch.json"), "w"))
    proc = run_summary(out)
    assert proc.returncode == 0, proc.stderr
    assert "peer-mla-torch" in proc.stdout and "no peer rows" in proc.stdout, proc.stdout
    assert "peer-mla-torch.log" in proc.stdout


def test_summary_states_the_issue_goals(tmp_path):
    """The Goals block: ours against each cuBLASLt mode over every shape with
    both rows; per MLA shape, on its fastest rung, the memory-bound ones
    against 90% of the measured copy bandwidth, the compute-bound (h_q = 128)
    against 600 TFLOPS, and FP8 against 1.5x BF16's tokens/s."""
    import json
    rows = [  # (name, us, FLOP/s, B/s)
        ("copy/d2d/2GiB", 1000.0, None, 4.0e12),
        ("gemm/gpu/fp8_nt/m64_n2112_k7168", 10.0, None, None),
        ("gemm/gpu/fp8_nt/m128_n2112_k7168", 20.0, None, None),
        ("gemm/peer/cublaslt_blockwise/fp8_nt/m64_n2112_k7168", 12.0, None, None),
        ("gemm/peer/cublaslt_blockwise/fp8_nt/m128_n2112_k7168", 18.0, None, None),
        ("gemm/peer/cublaslt_per_tensor/fp8_nt/m64_n2112_k7168", 11.0, None, None),
        # memory-bound (s_q h_q = 16): bf16 fast is its fastest rung, 3.8 TB/s = 95%
        ("mla/gpu/bf16/b128_sq1_hq16_sk8192/simple", 400.0, 1e14, 2.0e12),
        ("mla/gpu/bf16/b128_sq1_hq16_sk8192/fast", 200.0, 2e14, 3.8e12),
        # fp8 of that shape: 1.6x faster, 2.9 TB/s of its (smaller) bytes = 72%
        ("mla/gpu/fp8/b128_sq1_hq16_sk8192/fast", 125.0, 3e14, 2.9e12),
        ("mla/gpu/fp8/b128_sq1_hq16_sk8192/fast_nopf", 100.0, 3e14, 3.5e12),  # not a rung row
        # compute-bound: seesaw fastest at 610 TFLOPS; the other shape at 500
        ("mla/gpu/bf16/b128_sq2_hq128_sk16384/fast", 900.0, 5.0e14, 1e12),
        ("mla/gpu/bf16/b128_sq2_hq128_sk16384/seesaw", 750.0, 6.1e14, 1e12),
        ("mla/gpu/fp8/b128_sq1_hq128_sk4096/fast", 300.0, 5.0e14, 1e12),
    ]
    out = tmp_path / "out"
    out.mkdir()
    bench = []
    for n, us, flops, bps in rows:
        b = {"name": n + "/iterations:20/manual_time", "real_time": us, "time_unit": "us",
             "run_type": "iteration"}
        if flops is not None:
            b["FLOP/s"] = flops
        if bps is not None:
            b["B/s"] = bps
        bench.append(b)
    json.dump({"benchmarks": bench}, open(str(out / "bench-all.json"), "w"))
    proc = run_summary(out)
    assert proc.returncode == 0, proc.stderr
    g = proc.stdout[proc.stdout.index("Goals"):]
    assert ("goal gemm vs cuBLASLt blockwise: ours faster on 1 of 2 shapes; peer faster on "
            "fp8_nt/m128_n2112_k7168") in g, g
    assert "goal gemm vs cuBLASLt per_tensor: ours faster on 1 of 1 shapes" in g, g
    assert ("goal mla bf16 b128_sq1_hq16_sk8192 (memory-bound, fast): 3800 GB/s = 95% of the "
            "copy bandwidth 4000 GB/s (goal 90%): met") in g, g
    assert ("goal mla fp8 b128_sq1_hq16_sk8192 (memory-bound, fast): 2900 GB/s = 72% of the "
            "copy bandwidth 4000 GB/s (goal 90%): NOT MET") in g, g
    assert ("goal mla bf16 b128_sq2_hq128_sk16384 (compute-bound, seesaw): 610 TFLOPS "
            "(goal 600): met") in g, g
    assert ("goal mla fp8 b128_sq1_hq128_sk4096 (compute-bound, fast): 500 TFLOPS (goal 600): "
            "NOT MET") in g, g
    assert ("goal mla b128_sq1_hq16_sk8192: FP8 cache 1.60x the BF16 cache's tokens/s "
            "(goal 1.5x): met") in g, g
