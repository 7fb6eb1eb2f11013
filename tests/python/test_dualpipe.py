"""deepinfra.dualpipe: schedules, validation, simulation, pictures."""
import json
import xml.etree.ElementTree as ET

import pytest

import deepinfra
from deepinfra import dualpipe

README_RANK0 = ("F0.0 F0.1 F0.2 F0.3 F0.4 F0.5 F0.6 F1.0 I1.0 W F1.1 I1.1 W F1.2 I1.2 W F1.3 "
                "F0.7&B1.3 F1.4&B0.0 F0.8&B1.4 F1.5&B0.1 F0.9&B1.5 F1.6&B0.2 B1.6 F1.7&B0.3 B1.7 "
                "F1.8&B0.4 B1.8 F1.9&B0.5 B1.9 I0.6 W I0.7 W I0.8 W I0.9 W").split()


def test_dualpipe_schedule_is_the_readme_picture():
    streams = dualpipe.schedule("dualpipe", 8, 20)
    assert len(streams) == 8
    assert streams[0] == README_RANK0
    # rank PP-1-r is rank r with the directions swapped
    swap = str.maketrans("01", "10")
    mirrored = [op if op == "W" else "&".join(
        part[0] + part[1:].split(".")[0].translate(swap) + "." + part.split(".")[1]
        for part in op.split("&")) for op in streams[0]]
    assert streams[7] == mirrored


def test_communication_ops_on_request():
    streams = dualpipe.schedule("dualpipev", 2, 4, comm=True)
    assert streams[1][:4] == ["Rf0.0@0", "|", "F0.0", "Rf0.1@0"]
    assert streams[0][-1] == "|"
    assert all("|" not in s for s in dualpipe.schedule("dualpipev", 2, 4))


@pytest.mark.parametrize("kind,R,N", [("dualpipe", 4, 8), ("dualpipev", 3, 7), ("1f1b", 4, 6),
                                      ("zb1p", 4, 6)])
@pytest.mark.parametrize("comm", [False, True])
def test_generated_schedules_validate(kind, R, N, comm):
    assert dualpipe.validate(kind, R, N, dualpipe.schedule(kind, R, N, comm=comm)) is None


def test_validate_names_the_first_violation():
    v = dualpipe.validate("1f1b", 1, 2, [["F0.0", "B0.1", "F0.1", "B0.0"]])
    assert v == {"rank": 0, "op_index": 1, "rule": "B0.1: backward of 0.1 before its forward"}
    v = dualpipe.validate("1f1b", 2, 1, ["| F0.0 Rb0.0@1 | Sf0.0@1 | B0.0 |",
                                         "Rf0.0@0 | F0.0 | B0.0 Sb0.0@0 |"])
    assert v["rank"] == 0 and "deadlock" in v["rule"]


def test_malformed_text_raises_with_the_rank():
    with pytest.raises(deepinfra.InvalidArgumentError, match="rank 1: .*token 1"):
        dualpipe.validate("1f1b", 2, 1, [["F0.0"], ["F0.0", "Q"]])
    with pytest.raises(deepinfra.InvalidArgumentError, match="streams has 1 rank"):
        dualpipe.validate("1f1b", 2, 1, [["F0.0"]])


@pytest.mark.parametrize("PP", [2, 4, 8, 12])
def test_simulated_bubbles_match_the_readme_table(PP):
    dp = dualpipe.simulate("dualpipe", PP, 2 * PP + 4)
    assert dp["bubble"] == [(PP / 2 - 1) * (3 + 2 - 3)] * PP
    assert dp["peak_activations"] == [PP + 1] * PP
    dv = dualpipe.simulate("dualpipev", PP // 2, PP + 2)
    assert dv["bubble"] == [(PP / 2 - 1) * (3 + 2 - 3)] * (PP // 2)
    assert dv["max_peak_activations"] == PP + 1
    assert dualpipe.simulate("1f1b", PP, PP + 3)["max_bubble"] == (PP - 1) * (1 + 2)
    assert dualpipe.simulate("zb1p", PP, PP + 3)["max_bubble"] == (PP - 1) * (1 + 2 - 2)


def test_simulate_costs_and_events():
    res = dualpipe.simulate("dualpipev", 2, 4, costs={"F": 2, "latency": 0.5}, events=True)
    ev = res["events"]
    assert len(ev) == sum(len(s) for s in dualpipe.schedule("dualpipev", 2, 4))
    assert ev[0] == {"rank": 0, "op_index": 0, "op": "F0.0", "start": 0.0, "end": 2.0}
    first_on_rank1 = next(e for e in ev if e["rank"] == 1)
    assert first_on_rank1["start"] == 2.5
    assert res["makespan"] == max(e["end"] for e in ev)
    with pytest.raises(deepinfra.InvalidArgumentError, match="unknown cost"):
        dualpipe.simulate("1f1b", 2, 2, costs={"X": 1})
    with pytest.raises(deepinfra.InvalidArgumentError, match="weight=5 exceeds"):
        dualpipe.simulate("1f1b", 2, 2, costs={"W": 5})


def test_bad_kinds_and_sizes():
    with pytest.raises(deepinfra.InvalidArgumentError, match="kind='vpp'"):
        dualpipe.schedule("vpp", 2, 4)
    with pytest.raises(deepinfra.InvalidArgumentError, match="num_ranks=3 must be even"):
        dualpipe.schedule("dualpipe", 3, 12)
    with pytest.raises(deepinfra.InvalidArgumentError, match="does not fit in a C int"):
        dualpipe.schedule("1f1b", 2**40, 4)


def test_pictures():
    svg = dualpipe.timeline_svg("dualpipev", 4, 10, title="DualPipeV <4 x 10>")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "DualPipeV &lt;4 x 10&gt;" in svg
    trace = json.loads(dualpipe.chrome_trace("dualpipe", 4, 8, time_unit_us=10))
    complete = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    assert len(complete) == sum(len(s) for s in dualpipe.schedule("dualpipe", 4, 8))
    assert {e["tid"] for e in complete} == {0, 1, 2, 3}
