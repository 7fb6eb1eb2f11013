"""The pipeline CLI (build/bin/deepinfra-pipe) end to end: schedules of every
kind, validated and simulated, written as Chrome trace JSON (parsed with json)
and SVG (parsed with xml.etree), and its usage and library errors."""
import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, os.environ.get("DINF_BUILD_DIR", "build"))
CLI = os.path.join(BUILD, "bin", "deepinfra-pipe")
SVG_NS = "{http://www.w3.org/2000/svg}"

pytestmark = pytest.mark.skipif(
    not os.access(CLI, os.X_OK),
    reason="%s is not built (run `make` or `make tools`)" % CLI)

COMPUTE = re.compile(r"^(F\d+\.\d+(&B\d+\.\d+)?|[BI]\d+\.\d+|W)$")


def cli(*args, check=True):
    proc = subprocess.run([CLI] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=120)
    if check:
        assert proc.returncode == 0, "%s exited %d:\n%s%s" % (
            " ".join(map(str, args)), proc.returncode, proc.stdout, proc.stderr)
    return proc


def printed_streams(stdout):
    """{rank: [op, ...]} from --print lines 'rank r: op op ...'."""
    streams = {}
    for line in stdout.splitlines():
        m = re.match(r"^rank (\d+):(.*)$", line)
        if m:
            streams[int(m.group(1))] = m.group(2).split()
    return streams


def summary_value(stdout, key):
    m = re.search(r"^%s: (\S+)" % re.escape(key), stdout, re.M)
    assert m, "no '%s:' line in:\n%s" % (key, stdout)
    return float(m.group(1))


def rank_table(stdout):
    """{rank: (busy, bubble, peak)} from the summary table."""
    rows = {}
    for line in stdout.splitlines():
        m = re.match(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\d+)$", line)
        if m:
            rows[int(m.group(1))] = (float(m.group(2)), float(m.group(3)), int(m.group(4)))
    return rows


CASES = [("dualpipe", 8, 20), ("dualpipev", 4, 10), ("1f1b", 4, 8), ("zb1p", 4, 8),
         ("dualpipe", 2, 4), ("dualpipev", 1, 3)]


@pytest.mark.parametrize("kind,ranks,chunks", CASES)
def test_trace_has_one_event_per_printed_op(kind, ranks, chunks, tmp_path):
    trace = tmp_path / "t.json"
    unit = 2.5
    out = cli("--kind", kind, "--ranks", ranks, "--chunks", chunks, "--print",
              "--trace", trace, "--time-unit-us", unit).stdout
    streams = printed_streams(out)
    assert sorted(streams) == list(range(ranks))
    data = json.loads(trace.read_text())
    assert data["displayTimeUnit"] == "ms"
    events = data["traceEvents"]
    meta = [e for e in events if e["ph"] == "M"]
    xs = [e for e in events if e["ph"] == "X"]
    assert len(meta) + len(xs) == len(events)
    names = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert names == {r: "rank %d" % r for r in range(ranks)}
    process = [e for e in meta if e["name"] == "process_name"]
    assert len(process) == 1 and kind.lower()[:4] in process[0]["args"]["name"].lower()

    makespan = summary_value(out, "makespan")
    table = rank_table(out)
    for r in range(ranks):
        ops = [op for op in streams[r] if COMPUTE.match(op)]
        assert ops == streams[r], "without --comm the streams hold compute ops only"
        mine = [e for e in xs if e["tid"] == r]
        # rank order then stream order, names as the text notation prints them
        assert [e["name"] for e in mine] == ops, "rank %d" % r
        assert [e["args"]["op_index"] for e in mine] == list(range(len(ops)))
        for e in mine:
            assert e["pid"] == 0
            assert e["cat"] == ("FB" if "&" in e["name"] else e["name"][0])
            if e["name"] != "W":
                d, k = map(int, re.match(r"[FBI](\d+)\.(\d+)", e["name"]).groups())
                assert (e["args"]["dir"], e["args"]["mb"]) == (d, k)
            assert e["dur"] >= 0
        # one op at a time on a rank
        for a, b in zip(mine, mine[1:]):
            assert a["ts"] + a["dur"] <= b["ts"] + 1e-9, (r, a, b)
        busy = sum(e["dur"] for e in mine) / unit
        assert busy == pytest.approx(table[r][0]), "rank %d busy" % r
    assert max(e["ts"] + e["dur"] for e in xs) == pytest.approx(makespan * unit)


@pytest.mark.parametrize("kind,ranks,chunks", CASES[:4])
def test_svg_parses_and_draws_every_op(kind, ranks, chunks, tmp_path):
    svg = tmp_path / "t.svg"
    out = cli("--kind", kind, "--ranks", ranks, "--chunks", chunks, "--print",
              "--svg", svg, "--title", "T <%s> & co" % kind).stdout
    ops = sum(len(s) for s in printed_streams(out).values())
    root = ET.parse(svg).getroot()
    assert root.tag == SVG_NS + "svg"
    rects = list(root.iter(SVG_NS + "rect"))
    classes = [r.get("class", "") for r in rects]
    assert sum(c.startswith("op ") for c in classes) == ops
    assert classes.count("row") == ranks
    fb = sum(c == "op FB" for c in classes)
    assert sum(c.startswith("half ") for c in classes) == 2 * fb
    if kind.startswith("dualpipe"):
        assert fb > 0
    texts = ["".join(t.itertext()) for t in root.iter(SVG_NS + "text")]
    assert "T <%s> & co" % kind in texts
    for r in range(ranks):
        assert "rank %d" % r in texts


def test_dualpipe_bubble_matches_the_readme_formula():
    # reference 1.8 item 4: F=1, B=2, W=1, F&B=3, zero latency: every rank idles
    # exactly (PP/2-1)(F&B+B-3W) = 6 for PP=8; peak activations PP+1.
    out = cli("--kind", "dualpipe", "--ranks", 8, "--chunks", 20).stdout
    assert summary_value(out, "max bubble") == 6
    assert re.search(r"^README bubble \(PP/2-1\)\(F&B\+B-3W\) with PP=8: 6$", out, re.M), out
    table = rank_table(out)
    assert sorted(table) == list(range(8))
    assert all(bubble == 6 and peak == 9 for _, bubble, peak in table.values()), table


def test_costs_and_comm(tmp_path):
    out = cli("--kind", "dualpipev", "--ranks", 3, "--chunks", 7, "--comm", "--print",
              "--costs", "F=2,B=3,W=1,FB=4.5,latency=0.25").stdout
    assert "costs F=2 B=3 W=1 F&B=4.5 latency=0.25" in out
    assert "send/receive matching" in out
    streams = printed_streams(out)
    assert all("|" in s for s in streams.values())
    assert re.search(r"^README bubble \(PP/2-1\)\(F&B\+B-3W\) with PP=6: 9$", out, re.M), out


@pytest.mark.parametrize("args,message", [
    ([], "--kind is required"),
    (["--kind", "dualpipe", "--chunks", "8"], "--ranks is required"),
    (["--kind", "gpipe", "--ranks", "2", "--chunks", "4"], "is not one of"),
    (["--kind", "1f1b", "--ranks", "x", "--chunks", "4"], "--ranks expects a whole number"),
    (["--kind", "1f1b", "--ranks", "2", "--chunks", "0"], "--chunks expects a whole number"),
    (["--kind", "1f1b", "--ranks", "2", "--chunks", "4", "--bogus"], "unknown option"),
    (["--kind", "1f1b", "--ranks", "2", "--chunks", "4", "--costs", "F=-1"], "F=\"-1\""),
    (["--kind", "1f1b", "--ranks", "2", "--chunks", "4", "--costs", "X=1"], "unknown key"),
    (["--kind", "1f1b", "--ranks", "2", "--chunks"], "--chunks needs a value"),
    (["--kind", "1f1b", "--ranks", "2", "--chunks", "4", "--time-unit-us", "0"],
     "--time-unit-us expects a number > 0"),
])
def test_usage_errors_exit_2(args, message):
    proc = cli(*args, check=False)
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    assert message in proc.stderr, proc.stderr
    assert "usage: deepinfra-pipe" in proc.stderr


def test_library_errors_exit_1_with_the_library_message():
    proc = cli("--kind", "dualpipe", "--ranks", 3, "--chunks", 6, check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "dinf_pipe_schedule" in proc.stderr and "must be even" in proc.stderr, proc.stderr


def test_unwritable_output_exits_1(tmp_path):
    proc = cli("--kind", "1f1b", "--ranks", 2, "--chunks", 2,
               "--svg", tmp_path / "missing" / "x.svg", check=False)
    assert proc.returncode == 1 and "cannot write" in proc.stderr, proc.stderr


def test_help_exits_0():
    proc = cli("--help")
    assert "usage: deepinfra-pipe" in proc.stdout
