"""The benchmark binary's row log (benchmarks/shim.cc): with DINF_BENCH_ROWS
every finished row is appended at once as one JSON line holding what Google
Benchmark's own JSON says of it, and the console table is flushed row by row,
so a run stopped part-way (tools/gpu-check's time limits) keeps its rows.
Runs the real binary on CPU rows (make test builds it)."""
import json
import os
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DINF_BUILD_DIR") or os.path.join(ROOT, "build")
BENCH = os.path.join(BUILD if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD),
                     "bench", "deepinfra_bench")


def env_with(**kv):
    env = dict(os.environ)
    runtime = os.path.join(os.path.dirname(os.path.dirname(BENCH)), "runtime")
    env["LD_LIBRARY_PATH"] = runtime + (":" + env["LD_LIBRARY_PATH"]
                                        if env.get("LD_LIBRARY_PATH") else "")
    env.update(kv)
    return env


@pytest.fixture(scope="module")
def bench():
    if not os.access(BENCH, os.X_OK):
        pytest.fail("%s is missing: `make test` builds it (make %s)" % (BENCH, BENCH),
                    pytrace=False)
    return BENCH


def test_rows_file_says_what_the_json_says(bench, tmp_path):
    rows_path, json_path = tmp_path / "rows.jsonl", tmp_path / "out.json"
    proc = subprocess.run([bench, "--benchmark_filter=^dualpipe/", "--benchmark_min_time=0.01",
                           "--benchmark_out=%s" % json_path, "--benchmark_out_format=json",
                           "--benchmark_counters_tabular=true"],
                          env=env_with(DINF_BENCH_ROWS=str(rows_path)), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    want = json.load(open(json_path))["benchmarks"]
    got = [json.loads(line) for line in open(rows_path)]
    assert len(want) >= 4 and len(got) == len(want)
    for w, g in zip(want, got):
        assert g["name"] == w["name"] and g["run_type"] == w["run_type"]
        assert g["iterations"] == w["iterations"] and g["time_unit"] == w["time_unit"]
        assert g["real_time"] == pytest.approx(w["real_time"], rel=1e-12)
        assert g.get("label") == w.get("label")
        counters = {k for k in w if k not in (
            "name", "family_index", "per_family_instance_index", "run_name", "run_type",
            "repetitions", "repetition_index", "threads", "iterations", "real_time", "cpu_time",
            "time_unit", "label")}
        assert counters and counters == {k for k in g if k not in (
            "name", "run_type", "iterations", "real_time", "time_unit", "label")}
        for k in counters:
            assert g[k] == pytest.approx(w[k], rel=1e-12), k
        assert w["name"] in proc.stdout  # the console table too
    # appended, not replaced: a second run adds its rows after the first's
    subprocess.run([bench, "--benchmark_filter=^dualpipe/schedule\\+simulate/dualpipe/",
                    "--benchmark_min_time=0.01"], env=env_with(DINF_BENCH_ROWS=str(rows_path)),
                   capture_output=True, timeout=300, check=True)
    assert len(open(rows_path).read().splitlines()) == len(want) + 1


def test_a_stopped_run_keeps_its_finished_rows(bench, tmp_path):
    """SIGTERM (what `timeout` sends) after the first row: the rows file and the
    console log hold every row finished before the stop; Google Benchmark's
    own --benchmark_out file, closed only at the end, is not valid JSON."""
    rows_path, log_path = tmp_path / "rows.jsonl", tmp_path / "log.txt"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([bench, "--benchmark_filter=^(dualpipe|eplb)/",
                                 "--benchmark_min_time=0.5",
                                 "--benchmark_out=%s" % (tmp_path / "out.json"),
                                 "--benchmark_out_format=json"],
                                env=env_with(DINF_BENCH_ROWS=str(rows_path)), stdout=log,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and \
                not (rows_path.exists() and rows_path.read_text().count("\n") >= 1):
            time.sleep(0.05)
        stopped = proc.poll() is None
        if stopped:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert stopped, "the run ended before it could be stopped (it has about 20 rows of 0.5 s)"
    rows = [json.loads(line) for line in open(rows_path)]
    assert rows, "no row was kept"
    log = open(log_path).read()
    for r in rows:
        assert r["name"] in log, "row %s finished but is not in the console log" % r["name"]
        assert r["real_time"] > 0 and r["iterations"] >= 1
    with pytest.raises(ValueError):  # Google Benchmark closes its JSON only at the end
        json.load(open(tmp_path / "out.json"))


def test_an_unwritable_rows_file_is_refused(bench, tmp_path):
    proc = subprocess.run([bench, "--benchmark_filter=^dualpipe/", "--benchmark_min_time=0.01"],
                          env=env_with(DINF_BENCH_ROWS=str(tmp_path / "no" / "such" / "f")),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "cannot open DINF_BENCH_ROWS=%s" % (tmp_path / "no" / "such" / "f") in proc.stderr
    assert "No such file or directory" in proc.stderr
