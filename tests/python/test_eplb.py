"""deepinfra.eplb: exactness against upstream DeepSeek EPLB, conversions, errors, extensions."""

import os
import threading

import numpy as np
import pytest

import deepinfra
from deepinfra import eplb
from deepinfra.eplb import balance_report, max_logcnt_bound, rebalance_experts, rebalance_incremental
from conftest import REPO

# ----------------------------------------------------------------- README example
# github.com/deepseek-ai/EPLB README: 2 layers, 12 experts in 4 groups, 16 slots,
# 2 nodes, 8 GPUs.

README_WEIGHT = [
    [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
    [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
]
README_ARGS = (16, 4, 2, 8)  # num_replicas, num_groups, num_nodes, num_gpus
README_PHY2LOG = [
    [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
    [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1],
]
README_LOGCNT = [
    [1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1],
    [1, 2, 1, 1, 1, 2, 2, 1, 2, 1, 1, 1],
]
README_LOG2PHY = [
    [[12, -1], [15, 13], [11, -1], [6, -1], [7, 5], [0, 2], [1, -1], [3, -1], [4, -1],
     [9, -1], [8, 10], [14, -1]],
    [[13, -1], [15, 11], [8, -1], [14, -1], [9, -1], [10, 12], [2, 4], [0, -1], [6, 3],
     [7, -1], [1, -1], [5, -1]],
]


def assert_readme_result(result):
    phy2log, log2phy, logcnt = result
    for a in (phy2log, log2phy, logcnt):
        assert isinstance(a, np.ndarray) and a.dtype == np.int64 and a.flags.c_contiguous
    assert phy2log.shape == (2, 16) and log2phy.shape == (2, 12, 2) and logcnt.shape == (2, 12)
    np.testing.assert_array_equal(phy2log, README_PHY2LOG)
    np.testing.assert_array_equal(logcnt, README_LOGCNT)
    np.testing.assert_array_equal(log2phy, README_LOG2PHY)


def test_readme_example():
    assert_readme_result(rebalance_experts(np.array(README_WEIGHT, dtype=np.float32), *README_ARGS))


@pytest.mark.parametrize(
    "convert",
    [
        lambda w: w,  # nested lists of Python ints
        lambda w: [[float(x) for x in row] for row in w],
        lambda w: np.array(w, dtype=np.int32),
        lambda w: np.array(w, dtype=np.int64),
        lambda w: np.array(w, dtype=np.uint8),
        lambda w: np.array(w, dtype=np.float16),
        lambda w: np.array(w, dtype=np.float64),
        lambda w: np.array(w, dtype=">f4"),  # big-endian
        lambda w: np.asfortranarray(np.array(w, dtype=np.float32)),  # not C-contiguous
        lambda w: np.array(w, dtype=np.float32)[:, ::-1][:, ::-1],  # negative-stride view
        lambda w: np.frombuffer(  # 4-byte but not 8-byte aligned
            np.array([0] + sum(w, []), dtype=np.float32).tobytes(), dtype=np.float32, offset=4
        ).reshape(2, 12),
        lambda w: tuple(tuple(row) for row in w),
    ],
    ids=["list", "float-list", "int32", "int64", "uint8", "float16", "float64", "big-endian",
         "fortran", "strided", "unaligned", "tuple"],
)
def test_readme_example_input_types(convert):
    assert_readme_result(rebalance_experts(convert(README_WEIGHT), *README_ARGS))


def test_readme_example_ml_dtypes_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    w = np.array(README_WEIGHT, dtype=ml_dtypes.bfloat16)  # all values are exact in bf16
    assert_readme_result(rebalance_experts(w, *README_ARGS))


def test_readme_example_torch_tensor():
    torch = pytest.importorskip("torch")
    t = torch.tensor(README_WEIGHT)  # int64 tensor, as in upstream's README
    assert_readme_result(rebalance_experts(t, *README_ARGS))
    assert_readme_result(rebalance_experts(t.float().requires_grad_(True), *README_ARGS))
    assert_readme_result(rebalance_experts(t.t().contiguous().t(), *README_ARGS))


def test_numpy_integer_sizes():
    sizes = tuple(np.int64(x) for x in README_ARGS)
    assert_readme_result(rebalance_experts(README_WEIGHT, *sizes))


def test_input_is_not_modified_and_may_be_read_only():
    w = np.array(README_WEIGHT, dtype=np.float32)
    w.setflags(write=False)
    before = w.copy()
    assert_readme_result(rebalance_experts(w, *README_ARGS))
    np.testing.assert_array_equal(w, before)


def test_weights_rounded_to_float32_first():
    # 2**24 + 1 is not a float32: it rounds to 2**24, as upstream's .float() does.
    w64 = np.array([[2**24 + 1, 2**24, 3, 1]], dtype=np.int64)
    w32 = w64.astype(np.float32)
    for a, b in zip(rebalance_experts(w64, 8, 1, 1, 2), rebalance_experts(w32, 8, 1, 1, 2)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- generated vectors

VECTORS = os.path.join(REPO, "tests", "eplb", "data", "vectors.txt")


def load_vectors(path=VECTORS):
    """Cases of vectors.txt: 'case id L E R G Nn Ng M', then lines w, p, c, m."""
    cases = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if parts[0] == "case":
                cid, L, E, R, G, Nn, Ng, M = (int(x) for x in parts[1:9])
                cases.append(dict(id=cid, L=L, E=E, R=R, G=G, N=Nn, P=Ng, M=M))
            elif parts[0] == "w":
                c = cases[-1]
                c["w"] = np.array([np.float32(x) for x in parts[1:]], dtype=np.float32).reshape(
                    c["L"], c["E"])
            elif parts[0] in ("p", "c", "m"):
                c = cases[-1]
                shape = {"p": (c["L"], c["R"]), "c": (c["L"], c["E"]),
                         "m": (c["L"], c["E"], c["M"])}[parts[0]]
                c[parts[0]] = np.array([int(x) for x in parts[1:]], dtype=np.int64).reshape(shape)
            else:
                raise ValueError("unexpected line in %s: %r" % (path, line[:40]))
    return cases


CASES = load_vectors()


def test_vectors_file_is_complete():
    assert len(CASES) >= 100
    assert [c["id"] for c in CASES] == list(range(len(CASES)))
    for c in CASES:
        assert all(k in c for k in "wpcm"), c["id"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "case%d" % c["id"])
def test_vector(case):
    c = case
    phy2log, log2phy, logcnt = rebalance_experts(c["w"], c["R"], c["G"], c["N"], c["P"])
    np.testing.assert_array_equal(phy2log, c["p"])
    np.testing.assert_array_equal(logcnt, c["c"])
    assert log2phy.shape == c["m"].shape
    np.testing.assert_array_equal(log2phy, c["m"])
    assert c["M"] <= max_logcnt_bound(c["E"], c["R"], c["G"], c["N"], c["P"])


# ----------------------------------------------------------------- bad inputs

W = np.array(README_WEIGHT, dtype=np.float32)


def with_value(value):
    w = W.copy()
    w[1, 3] = value
    return w


BAD_CALLS = {
    "nan": (lambda: rebalance_experts(with_value(np.nan), *README_ARGS), "weight[1][3]=nan"),
    "inf": (lambda: rebalance_experts(with_value(np.inf), *README_ARGS), "weight[1][3]=inf"),
    "negative": (lambda: rebalance_experts(with_value(-1.0), *README_ARGS), "weight[1][3]=-1"),
    "float64-overflow": (
        lambda: rebalance_experts(with_value(0).astype(np.float64) + np.eye(2, 12) * 1e300,
                                 *README_ARGS), "inf"),
    "1-D": (lambda: rebalance_experts(W[0], *README_ARGS), "must be 2-D"),
    "3-D": (lambda: rebalance_experts(W[None], *README_ARGS), "must be 2-D"),
    "scalar": (lambda: rebalance_experts(3.0, *README_ARGS), "must be 2-D"),
    "ragged": (lambda: rebalance_experts([[1, 2], [3]], *README_ARGS), "weight"),
    "strings": (lambda: rebalance_experts([["a", "b"]], *README_ARGS), "dtype"),
    "complex": (lambda: rebalance_experts(W.astype(np.complex64), *README_ARGS), "dtype"),
    "object": (lambda: rebalance_experts([[2**80, 1]], 2, 1, 1, 1), "dtype"),
    "no-layers": (lambda: rebalance_experts(np.zeros((0, 12)), *README_ARGS), "num_layers=0"),
    "no-experts": (lambda: rebalance_experts(np.zeros((2, 0)), *README_ARGS),
                   "num_logical_experts=0"),
    "R<E": (lambda: rebalance_experts(W, 10, 4, 2, 2), "num_replicas=10"),
    "R%P": (lambda: rebalance_experts(W, 20, 4, 2, 8), "num_replicas=20 is not a multiple"),
    "P%N": (lambda: rebalance_experts(W, 16, 4, 2, 5), "num_gpus=5 is not a multiple"),
    "E%G": (lambda: rebalance_experts(W, 16, 8, 2, 8), "num_logical_experts=12 is not a multiple"),
    "G=0": (lambda: rebalance_experts(W, 16, 0, 2, 8), "num_groups=0"),
    "N=0": (lambda: rebalance_experts(W, 16, 4, 0, 8), "num_nodes=0"),
    "R=-1": (lambda: rebalance_experts(W, -1, 4, 2, 8), "num_replicas=-1"),
    "P=-8": (lambda: rebalance_experts(W, 16, 4, 2, -8), "num_gpus=-8"),
    "R=2**63": (lambda: rebalance_experts(W, 2**63, 4, 2, 8), "does not fit in int64"),
    "R=2**64+16": (lambda: rebalance_experts(W, 2**64 + 16, 4, 2, 8), "does not fit in int64"),
    "G=-2**63-1": (lambda: rebalance_experts(W, 16, -(2**63) - 1, 2, 8), "does not fit in int64"),
    "R=2**62": (lambda: rebalance_experts(W, 2**62, 1, 1, 1), "num_replicas=4611686018427387904"),
    "R=float": (lambda: rebalance_experts(W, 16.0, 4, 2, 8), "must be an integer"),
    "R=bool": (lambda: rebalance_experts(W, True, 4, 2, 8), "must be an integer"),
    "R=str": (lambda: rebalance_experts(W, "16", 4, 2, 8), "must be an integer"),
    "distinct=2": (lambda: rebalance_experts(W, *README_ARGS, distinct_experts_per_gpu=2),
                   "distinct_experts_per_gpu"),
    "distinct-impossible": (
        lambda: rebalance_experts(W[:, :4], 16, 4, 1, 2, distinct_experts_per_gpu=True),
        "distinct_experts_per_gpu=1 is impossible"),
    "bound-R<E": (lambda: max_logcnt_bound(12, 10, 4, 2, 2), "num_replicas=10"),
    "bound-huge": (lambda: max_logcnt_bound(2**63, 16, 4, 2, 8), "does not fit in int64"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_input(name):
    call, fragment = BAD_CALLS[name]
    with pytest.raises(deepinfra.InvalidArgumentError) as info:
        call()
    assert fragment in str(info.value)
    assert info.value.status == deepinfra.Status.INVALID_ARGUMENT
    assert isinstance(info.value, ValueError)


def test_replicas_smaller_than_experts_message():
    with pytest.raises(deepinfra.InvalidArgumentError) as info:
        rebalance_experts(README_WEIGHT, 10, 4, 2, 2)
    e = info.value
    assert e.message.startswith("dinf_eplb_rebalance_experts: num_replicas=10 is smaller than "
                                "num_logical_experts=12"), e.message
    # The rule was checked before allocating outputs, by the size check that
    # applies the same rules; the message carries the C text unchanged.
    assert deepinfra.last_error().split(": ", 1)[1] == e.message.split(": ", 1)[1]


def test_rejected_sizes_reach_no_allocation():
    # Valid under every rule but absurdly large outputs: the library's own
    # cap on sizes answers before any buffer is allocated.
    with pytest.raises(deepinfra.InvalidArgumentError, match="must each be <="):
        rebalance_experts(np.ones((1, 1)), 2**40, 1, 1, 1)


# ----------------------------------------------------------------- max_logcnt_bound


def test_max_logcnt_bound():
    assert max_logcnt_bound(12, 16, 4, 2, 8) == 16 // 2 - 12 // 2 + 1  # hierarchical
    assert max_logcnt_bound(12, 16, 3, 2, 8) == 16 - 12 + 1  # global: 3 % 2 != 0
    assert max_logcnt_bound(256, 288, 8, 4, 32) == 288 // 4 - 256 // 4 + 1
    # distinct: at most one replica per GPU the expert can reach.
    assert max_logcnt_bound(4, 8, 4, 1, 2) == 5
    assert max_logcnt_bound(4, 8, 4, 1, 2, distinct_experts_per_gpu=True) == 2
    assert max_logcnt_bound(64, 96, 3, 2, 8, distinct_experts_per_gpu=True) <= 8
    assert isinstance(max_logcnt_bound(12, 16, 4, 2, 8), int)


def test_max_logcnt_bound_distinct_is_the_minimum():
    assert max_logcnt_bound(12, 16, 4, 2, 8, distinct_experts_per_gpu=True) == 3


def test_max_logcnt_bound_holds_on_random_plans():
    rng = np.random.default_rng(20250324)
    for E, R, G, N, P in [(64, 80, 8, 2, 16), (64, 96, 3, 2, 8), (16, 48, 4, 2, 8)]:
        w = (rng.exponential(size=(6, E)) ** 3).astype(np.float32)
        for distinct in (False, True):
            _, log2phy, logcnt = rebalance_experts(w, R, G, N, P,
                                                   distinct_experts_per_gpu=distinct)
            bound = max_logcnt_bound(E, R, G, N, P, distinct_experts_per_gpu=distinct)
            assert log2phy.shape[2] == logcnt.max() <= bound


# ----------------------------------------------------------------- plan invariants


def assert_valid_plan(phy2log, log2phy, logcnt, E, R, P):
    L = phy2log.shape[0]
    assert phy2log.shape == (L, R) and logcnt.shape == (L, E)
    assert log2phy.shape == (L, E, logcnt.max())
    for l in range(L):
        np.testing.assert_array_equal(np.bincount(phy2log[l], minlength=E), logcnt[l])
        for e in range(E):
            k = logcnt[l, e]
            slots = log2phy[l, e, :k]
            assert (log2phy[l, e, k:] == -1).all()
            assert sorted(slots.tolist()) == np.flatnonzero(phy2log[l] == e).tolist()


def gpu_duplicates(phy2log, P):
    L, R = phy2log.shape
    per_gpu = phy2log.reshape(L, P, R // P)
    return sum(len(set(g)) < len(g) for g in per_gpu.reshape(L * P, R // P).tolist())


def test_random_plans_are_valid():
    rng = np.random.default_rng(1)
    for E, R, G, N, P in [(64, 80, 8, 2, 16), (64, 96, 3, 2, 8), (16, 48, 4, 2, 8), (7, 9, 1, 1, 3)]:
        w = (rng.exponential(size=(5, E)) ** 2).astype(np.float32)
        assert_valid_plan(*rebalance_experts(w, R, G, N, P), E, R, P)


def test_concurrent_calls_match_serial():
    rng = np.random.default_rng(2)
    ws = [(rng.exponential(size=(8, 64)) ** 2).astype(np.float32) for _ in range(8)]
    serial = [rebalance_experts(w, 96, 8, 2, 16) for w in ws]
    results = [None] * len(ws)

    def work(i):
        for _ in range(5):
            results[i] = rebalance_experts(ws[i], 96, 8, 2, 16)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(ws))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- distinct experts per GPU


def test_distinct_on_readme_example():
    phy2log, log2phy, logcnt = rebalance_experts(README_WEIGHT, *README_ARGS,
                                                 distinct_experts_per_gpu=True)
    assert gpu_duplicates(phy2log, 8) == 0
    # Upstream's plan already has no duplicate on a GPU, so it is returned as is.
    assert_readme_result((phy2log, log2phy, logcnt))


def test_distinct_removes_duplicates():
    w = [[100, 1, 1, 1]]
    p, _, c = rebalance_experts(w, 8, 4, 1, 2)
    assert gpu_duplicates(p, 2) > 0  # upstream: expert 0 gets 5 replicas on 2 GPUs
    p, l2p, c = rebalance_experts(w, 8, 4, 1, 2, distinct_experts_per_gpu=True)
    assert gpu_duplicates(p, 2) == 0
    np.testing.assert_array_equal(c, [[2, 2, 2, 2]])
    assert_valid_plan(p, l2p, c, 4, 8, 2)
    rng = np.random.default_rng(3)
    for E, R, G, N, P in [(64, 80, 8, 2, 16), (64, 96, 3, 2, 8), (16, 32, 4, 2, 8)]:
        w = (rng.exponential(size=(6, E)) ** 3).astype(np.float32)
        assert gpu_duplicates(rebalance_experts(w, R, G, N, P)[0], P) > 0
        p, l2p, c = rebalance_experts(w, R, G, N, P, distinct_experts_per_gpu=True)
        assert gpu_duplicates(p, P) == 0
        assert_valid_plan(p, l2p, c, E, R, P)


def test_distinct_false_is_upstream():
    a = rebalance_experts(README_WEIGHT, *README_ARGS, distinct_experts_per_gpu=False)
    b = rebalance_experts(README_WEIGHT, *README_ARGS, distinct_experts_per_gpu=np.bool_(False))
    assert_readme_result(a)
    assert_readme_result(b)


def test_distinct_is_keyword_only():
    with pytest.raises(TypeError):
        rebalance_experts(README_WEIGHT, *README_ARGS, True)


# ----------------------------------------------------------------- incremental


def groups_stay_on_one_node(phy2log, E, G, N):
    L, R = phy2log.shape
    node_of_slot = np.arange(R) // (R // N)
    group_of_slot = phy2log // (E // G)
    return all(
        len(set(node_of_slot[group_of_slot[l] == g].tolist())) == 1
        for l in range(L) for g in range(G)
    )


def test_incremental_unchanged_weights_move_nothing():
    for tol in (0.0, 0.05):
        p0, _, c0 = rebalance_experts(README_WEIGHT, *README_ARGS)
        phy2log, log2phy, logcnt, moved = rebalance_incremental(README_WEIGHT, p0, *README_ARGS,
                                                                tolerance=tol)
        for a in (phy2log, log2phy, logcnt, moved):
            assert a.dtype == np.int64 and a.flags.c_contiguous
        np.testing.assert_array_equal(moved, [0, 0])
        np.testing.assert_array_equal(phy2log, p0)
        np.testing.assert_array_equal(logcnt, c0)
        assert_valid_plan(phy2log, log2phy, logcnt, 12, 16, 8)
        # Replicas are numbered in ascending slot order.
        for l in range(2):
            for e in range(12):
                k = logcnt[l, e]
                assert (np.diff(log2phy[l, e, :k]) > 0).all()


INCREMENTAL_SIZES = [
    # E, R, G, N, P, distinct
    (12, 16, 4, 2, 8, False),
    (64, 80, 8, 2, 16, False),
    (64, 96, 8, 4, 16, True),
    (64, 96, 3, 2, 8, False),  # global policy
    (16, 32, 4, 2, 8, True),
]


@pytest.mark.parametrize("size", INCREMENTAL_SIZES, ids=lambda s: "E%d-R%d-G%d-N%d-P%d-%s" % s)
@pytest.mark.parametrize("tol", [0.0, 0.05, 0.2])
def test_incremental_within_tolerance(size, tol):
    E, R, G, N, P, distinct = size
    rng = np.random.default_rng(100 + E + R + int(tol * 100))
    L = 6
    w = (rng.exponential(size=(L, E)) ** 2).astype(np.float32)
    current, _, _ = rebalance_experts(w, R, G, N, P, distinct_experts_per_gpu=distinct)
    w2 = (w * rng.uniform(0.3, 2.0, size=w.shape)).astype(np.float32)
    phy2log, log2phy, logcnt, moved = rebalance_incremental(
        w2, current, R, G, N, P, tolerance=tol, distinct_experts_per_gpu=distinct)
    assert phy2log.shape == (L, R) and moved.shape == (L,)
    assert_valid_plan(phy2log, log2phy, logcnt, E, R, P)
    np.testing.assert_array_equal(moved, (phy2log != current).sum(axis=1))

    fresh = rebalance_experts(w2, R, G, N, P, distinct_experts_per_gpu=distinct)[0]
    inc_load = balance_report(w2, phy2log, N, P)["gpu_load"].max(axis=1)
    fresh_load = balance_report(w2, fresh, N, P)["gpu_load"].max(axis=1)
    assert (inc_load <= fresh_load * (1 + tol) * (1 + 1e-6)).all()
    if distinct:
        assert gpu_duplicates(phy2log, P) == 0
    if G % N == 0:
        assert groups_stay_on_one_node(phy2log, E, G, N)
    # Re-planning the result with the same weights moves nothing.
    again = rebalance_incremental(w2, phy2log, R, G, N, P, tolerance=tol + 1e-3,
                                  distinct_experts_per_gpu=distinct)
    np.testing.assert_array_equal(again[3], np.zeros(L, dtype=np.int64))
    np.testing.assert_array_equal(again[0], phy2log)


def test_incremental_accepts_lists_and_int32_plans():
    p0, _, _ = rebalance_experts(README_WEIGHT, *README_ARGS)
    for current in (p0.tolist(), p0.astype(np.int32), np.asfortranarray(p0)):
        phy2log, _, _, moved = rebalance_incremental(README_WEIGHT, current, *README_ARGS)
        np.testing.assert_array_equal(phy2log, p0)
        np.testing.assert_array_equal(moved, [0, 0])


INCREMENTAL_BAD = {
    "shape": (lambda p0: dict(current_phy2log=p0[:, :15]), "current_phy2log has shape"),
    "layers": (lambda p0: dict(current_phy2log=p0[:1]), "current_phy2log has shape"),
    "1-D": (lambda p0: dict(current_phy2log=p0[0]), "must be 2-D"),
    "float-plan": (lambda p0: dict(current_phy2log=p0.astype(np.float64)), "integer dtype"),
    "out-of-range": (lambda p0: dict(current_phy2log=np.where(p0 == 3, 12, p0)), "current_phy2log"),
    "missing-expert": (lambda p0: dict(current_phy2log=np.zeros_like(p0)), "no replica of expert"),
    "huge-uint": (lambda p0: dict(current_phy2log=p0.astype(np.uint64) + np.uint64(2**63)),
                  "does not fit in int64"),
    "tol-negative": (lambda p0: dict(tolerance=-0.1), "tolerance=-0.1"),
    "tol-nan": (lambda p0: dict(tolerance=float("nan")), "tolerance=nan"),
    "tol-inf": (lambda p0: dict(tolerance=float("inf")), "tolerance=inf"),
    "tol-str": (lambda p0: dict(tolerance="0.05"), "tolerance"),
    "R<E": (lambda p0: dict(num_replicas=10, num_gpus=2), "num_replicas=10"),
    "R-huge": (lambda p0: dict(num_replicas=2**63), "does not fit in int64"),
    "weight-nan": (lambda p0: dict(weight=with_value(np.nan)), "weight[1][3]=nan"),
}


@pytest.mark.parametrize("name", sorted(INCREMENTAL_BAD))
def test_incremental_bad_input(name):
    p0, _, _ = rebalance_experts(README_WEIGHT, *README_ARGS)
    kwargs = dict(weight=README_WEIGHT, current_phy2log=p0, num_replicas=16, num_groups=4,
                  num_nodes=2, num_gpus=8)
    make, fragment = INCREMENTAL_BAD[name]
    kwargs.update(make(p0))
    with pytest.raises(deepinfra.InvalidArgumentError) as info:
        rebalance_incremental(**kwargs)
    assert fragment in str(info.value)


# ----------------------------------------------------------------- balance report


def test_balance_report_readme():
    p, _, _ = rebalance_experts(README_WEIGHT, *README_ARGS)
    r = balance_report(README_WEIGHT, p, 2, 8)
    for key in ("gpu_load", "node_load", "gpu_imbalance", "node_imbalance"):
        assert r[key].dtype == np.float64
    assert r["gpu_load"].shape == (2, 8) and r["node_load"].shape == (2, 2)
    assert r["gpu_imbalance"].shape == (2,) and r["node_imbalance"].shape == (2,)
    np.testing.assert_array_equal(r["gpu_load"][0], [121.5, 86.5, 125, 113, 147.5, 131.5, 156, 152])
    np.testing.assert_array_equal(r["node_load"][0], [446, 587])
    w = np.array(README_WEIGHT, dtype=np.float64)
    np.testing.assert_allclose(r["gpu_load"].sum(axis=1), w.sum(axis=1))
    np.testing.assert_allclose(r["node_load"].sum(axis=1), w.sum(axis=1))
    np.testing.assert_allclose(r["gpu_imbalance"],
                               r["gpu_load"].max(axis=1) / r["gpu_load"].mean(axis=1))
    np.testing.assert_allclose(r["node_imbalance"],
                               r["node_load"].max(axis=1) / r["node_load"].mean(axis=1))
    assert r["gpu_imbalance"][0] == pytest.approx(156 / (1033 / 8))
    for key in ("max_gpu_imbalance", "mean_gpu_imbalance", "max_node_imbalance",
                "mean_node_imbalance", "max_gpu_load"):
        assert isinstance(r[key], float)
    assert r["max_gpu_imbalance"] == pytest.approx(r["gpu_imbalance"].max())
    assert r["mean_gpu_imbalance"] == pytest.approx(r["gpu_imbalance"].mean())
    assert r["max_node_imbalance"] == pytest.approx(r["node_imbalance"].max())
    assert r["mean_node_imbalance"] == pytest.approx(r["node_imbalance"].mean())
    assert r["max_gpu_load"] == r["gpu_load"].max()


def test_balance_report_zero_loads_and_absent_experts():
    r = balance_report(np.zeros((1, 12)), np.zeros((1, 16), dtype=np.int64), 2, 8)
    np.testing.assert_array_equal(r["gpu_load"], np.zeros((1, 8)))
    np.testing.assert_array_equal(r["gpu_imbalance"], [1.0])
    np.testing.assert_array_equal(r["node_imbalance"], [1.0])
    # Only expert 0 placed (once per GPU): each slot carries 90 / 8.
    r = balance_report(README_WEIGHT[:1], [[0] * 8 + [0] * 8], 2, 8)
    np.testing.assert_allclose(r["gpu_load"][0], [90 / 8] * 8)


REPORT_BAD = {
    "layers": (lambda p: (README_WEIGHT, p[:1], 2, 8), "phy2log has 1 layers"),
    "1-D": (lambda p: (README_WEIGHT, p[0], 2, 8), "must be 2-D"),
    "float-plan": (lambda p: (README_WEIGHT, p * 1.0, 2, 8), "integer dtype"),
    "value": (lambda p: (README_WEIGHT, p + 1, 2, 8), "is not an expert in [0, 12)"),
    "negative-value": (lambda p: (README_WEIGHT, p - 1, 2, 8), "is not an expert"),
    "P%N": (lambda p: (README_WEIGHT, p, 3, 8), "not a multiple of num_nodes=3"),
    "R%P": (lambda p: (README_WEIGHT, p, 1, 3), "num_replicas=16 is not a multiple"),
    "P>R": (lambda p: (README_WEIGHT, p, 1, 32), "num_replicas=16 is not a multiple"),
    "P-huge": (lambda p: (README_WEIGHT, p, 2**40, 2**50), "num_gpus=1125899906842624"),
    "P=0": (lambda p: (README_WEIGHT, p, 1, 0), ">= 1"),
    "N=-1": (lambda p: (README_WEIGHT, p, -1, 8), ">= 1"),
    "N=2**63": (lambda p: (README_WEIGHT, p, 2**63, 8), "does not fit in int64"),
    "weight-nan": (lambda p: (with_value(np.nan), p, 2, 8), "weight[1][3]=nan"),
    "no-slots": (lambda p: (README_WEIGHT, p[:, :0], 2, 8), ">= 1"),
}


@pytest.mark.parametrize("name", sorted(REPORT_BAD))
def test_balance_report_bad_input(name):
    p, _, _ = rebalance_experts(README_WEIGHT, *README_ARGS)
    make, fragment = REPORT_BAD[name]
    with pytest.raises(deepinfra.InvalidArgumentError) as info:
        balance_report(*make(p))
    assert fragment in str(info.value)


def test_module_reachable_from_package():
    assert deepinfra.eplb is eplb
    assert set(eplb.__all__) == {"rebalance_experts", "rebalance_incremental", "balance_report",
                                 "max_logcnt_bound"}
