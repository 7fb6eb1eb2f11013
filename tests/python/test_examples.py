"""examples/: each program builds with `make examples` (warning-free) and
passes its own check (exit status 0 and its summary line)."""
import os
import re
import subprocess
import sys

import pytest

from conftest import PYTHON_DIR, build_make_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("DINF_BUILD_DIR", "build"))


@pytest.fixture(scope="module")
def examples_dir():
    # A clean environment: under `make test` the parent make's jobserver
    # flags would reach this make and make it warn.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    res = subprocess.run(["make", "-s", "--no-print-directory", "examples", *build_make_args(BUILD)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not re.search(r"\.c:\d+:\d+: warning:", res.stderr), res.stderr
    return os.path.join(BUILD, "examples")


def run_example(exe, *args):
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_moe_layer_runs_and_checks_itself(examples_dir):
    exe = os.path.join(examples_dir, "moe_layer")
    # A smaller hidden than the default keeps this to about a second on 2 cores.
    res = run_example(exe, "--hidden", "512")
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"^moe_layer: OK calc_diff=(\S+) max_rel_err=(\S+) nan=0 \((\d+) expert rows",
                  res.stdout, re.M)
    assert m, res.stdout
    calc_diff, max_rel, rows = float(m.group(1)), float(m.group(2)), int(m.group(3))
    # FP8 e4m3 on both operands: about 6.6e-4; an exact pipeline would give ~0,
    # a wrong layout or scale ~1.
    assert 1e-5 < calc_diff <= 1e-3
    assert 0 < max_rel < 0.2
    assert rows > 0
    assert re.search(r"^eplb: max/mean GPU load \S+ as placed -> \S+ with 4 redundant slots",
                     res.stdout, re.M), res.stdout
    assert res.stdout.count("\nrank ") == 4


def test_moe_layer_reports_library_errors(examples_dir):
    exe = os.path.join(examples_dir, "moe_layer")
    # 18 experts cannot be split over 4 ranks: the library says so, exit status 1.
    res = run_example(exe, "--experts", "18")
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("dinf_ep_get_dispatch_layout failed: invalid argument: "
            "dinf_ep_get_dispatch_layout: num_experts=18 is not a multiple of num_ranks=4"
            in res.stderr), res.stderr
    # hidden must be a multiple of 128 for FP8 dispatch: every rank reports it.
    res = run_example(exe, "--hidden", "100")
    assert res.returncode == 1, res.stdout + res.stderr
    for r in range(4):
        assert ("moe_layer: rank %d: dinf_ep_low_latency_dispatch failed: invalid argument:" % r
                in res.stderr), res.stderr
    res = run_example(exe, "--bogus")
    assert res.returncode == 2 and "usage:" in res.stderr


def run_python_example(*args):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)  # DINF_BUILD_DIR: the library under test
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", "pipeline_train.py"),
                           *args], capture_output=True, text=True, timeout=120, env=env)


def test_pipeline_train_matches_its_sequential_run():
    res = run_python_example("--ranks", "3", "--chunks", "7", "--steps", "3")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("pipeline_train: DualPipeV, 3 ranks x 2 stages, 7 micro-batches")
    steps = re.findall(r"^step (\d): loss (\S+) \(sequential (\S+)\)$", res.stdout, re.M)
    assert [int(s) for s, _, _ in steps] == [0, 1, 2]
    assert all(a == b for _, a, b in steps)
    assert float(steps[-1][1]) < float(steps[0][1])  # it learns
    assert re.search(r"^pipeline_train: OK max_rel_loss_diff=\S+ over 3 steps$", res.stdout, re.M)


def test_pipeline_train_reports_library_errors():
    res = run_python_example("--ranks", "4", "--chunks", "6")
    assert res.returncode == 1, res.stdout + res.stderr
    assert ("pipeline_train: dinf_pipe_executor_create: dualpipev: num_chunks=6 must be >= "
            "2 * num_ranks = 8" in res.stderr), res.stderr


def run_fp8_train(*args, **env):
    e = dict(os.environ, PYTHONPATH=PYTHON_DIR, **env)  # DINF_BUILD_DIR: the library under test
    return subprocess.run([sys.executable, os.path.join(ROOT, "examples", "fp8_linear_train.py"),
                           *args], capture_output=True, text=True, timeout=120, env=e)


def test_fp8_linear_train_tracks_float64():
    """fprop, dgrad and wgrad all in FP8 (deepinfra.gemm): each GEMM within
    DeepGEMM's calc_diff bound, and the losses track a float64 run."""
    pytest.importorskip("ml_dtypes")
    res = run_fp8_train("--steps", "8", "--seed", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("fp8_linear_train: MLP 256 -> 512 -> 128, 8 steps")
    gemms = re.findall(r"(fprop|dgrad|wgrad) (W\d) ([0-9.e+-]+)", res.stdout)
    assert len(gemms) == 5 and all(float(v) < 1e-3 for _, _, v in gemms), res.stdout
    steps = re.findall(r"^step (\d+): loss (\S+) \(float64 (\S+)\)$", res.stdout, re.M)
    assert [int(s) for s, _, _ in steps] == list(range(8))
    assert all(abs(float(a) - float(b)) < 0.02 * float(b) for _, a, b in steps), res.stdout
    assert re.search(r"^fp8_linear_train: OK final loss ", res.stdout, re.M)


def test_fp8_linear_train_reports_library_errors():
    pytest.importorskip("ml_dtypes")
    res = run_fp8_train("--steps", "1", DINF_CPU_ISA="bogus")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "fp8_linear_train: " in res.stderr and "DINF_CPU_ISA=bogus" in res.stderr, res.stderr

