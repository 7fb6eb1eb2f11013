#!/usr/bin/env python3
"""Generate test vectors for the C re-implementation of EPLB rebalance_experts.

The reference is DeepSeek's upstream implementation (github.com/deepseek-ai/EPLB,
file eplb.py).  That file is NOT part of this repository; pass its path on the
command line.  It needs CPU torch (e.g. Debian's python3-torch):

    /usr/bin/python3 tools/gen_eplb_vectors.py /tmp/eplb_upstream/eplb.py \
        tests/eplb/data/vectors.txt

Output format (whitespace separated; '#' comment lines only at the top):

    case <id> <L> <E> <R> <G> <Nn> <Ng> <M>
    w <L*E weights, row-major, float32 printed with %.9g (exact via strtof)>
    p <L*R phy2log, row-major>
    c <L*E logcnt, row-major>
    m <L*E*M log2phy, row-major, -1 padded>

L = layers, E = logical experts, R = num_replicas (physical experts),
G = num_groups, Nn = num_nodes, Ng = num_gpus, M = log2phy.shape[-1]
(upstream's maxlogcnt).  Hierarchical policy iff G % Nn == 0, else global.
"""

import importlib.util
import math
import random
import struct
import sys

import torch

SEED = 20250324
E_CHOICES = [4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]


def load_upstream(path):
    spec = importlib.util.spec_from_file_location("eplb_upstream", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def f32(x):
    """Round a Python float to the nearest float32 (returned as Python float)."""
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]


def fmt_f32(v):
    s = "%.9g" % v
    assert f32(float(s)) == v, (v, s)
    return s


# ----------------------------------------------------------------------------
# Load generators: each returns a list of E Python floats that are exactly
# representable as float32.
# ----------------------------------------------------------------------------

def row_int_range(rng, E, lo, hi):
    return [float(rng.randint(lo, hi)) for _ in range(E)]


def row_const(rng, E):
    v = rng.choice([0.0, 1.0, 7.0, 100.0, f32(0.1)])
    return [v] * E


def row_uniform(rng, E):
    return [f32(rng.random() * 1000.0) for _ in range(E)]


def row_exponential(rng, E):
    return [f32(rng.expovariate(1.0 / 200.0)) for _ in range(E)]


def row_pareto(rng, E):
    return [f32(rng.paretovariate(1.1) * 10.0) for _ in range(E)]


def row_lognormal(rng, E):
    return [f32(rng.lognormvariate(5.0, 1.5)) for _ in range(E)]


def row_float_zeros(rng, E):
    base = row_uniform(rng, E) if rng.random() < 0.5 else row_exponential(rng, E)
    frac = rng.choice([0.1, 0.3, 0.6])
    return [0.0 if rng.random() < frac else v for v in base]


def row_int_heavy(rng, E):
    # integer-ish token counts with a heavy tail: many small ties + a few hot experts
    out = []
    for _ in range(E):
        v = int(rng.paretovariate(1.2)) - 1  # mostly 0..3
        if rng.random() < 0.05:
            v += rng.randint(0, 20000)
        out.append(float(min(v, 50000)))
    return out


def row_int_tokens(rng, E):
    return [float(rng.randint(0, 20000)) for _ in range(E)]


ROW_KINDS = {
    "int0-1": lambda r, E: row_int_range(r, E, 0, 1),
    "int0-5": lambda r, E: row_int_range(r, E, 0, 5),
    "int1-3": lambda r, E: row_int_range(r, E, 1, 3),
    "int0-40": lambda r, E: row_int_range(r, E, 0, 40),
    "int-tokens": row_int_tokens,
    "int-heavy": row_int_heavy,
    "const": row_const,
    "uniform": row_uniform,
    "exponential": row_exponential,
    "pareto": row_pareto,
    "lognormal": row_lognormal,
    "float-zeros": row_float_zeros,
}

# weighted towards tie-heavy integer loads
KIND_POOL = (["int0-5"] * 3 + ["int1-3"] * 3 + ["int0-40"] * 3 + ["int0-1"] * 2 +
             ["int-heavy"] * 2 + ["int-tokens"] + ["const"] + ["mixed"] * 2 +
             ["uniform"] * 2 + ["exponential"] * 2 + ["pareto"] * 2 +
             ["lognormal"] + ["float-zeros"] * 2)


def make_weights(rng, kind, L, E):
    rows = []
    for _ in range(L):
        if kind == "mixed":
            k = rng.choice(list(ROW_KINDS))
        else:
            k = kind
        rows.append(ROW_KINDS[k](rng, E))
    if kind == "mixed" and L > 1:
        rows[rng.randrange(L)] = row_const(rng, E)  # make sure a constant row appears
    return rows


# ----------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------

def divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def valid_configs(E, policy):
    """All (R, G, Nn, Ng) valid for upstream with E <= R <= 3E, Ng <= 64, Nn <= 8."""
    out = []
    for G in divisors(E):
        for Nn in range(1, 9):
            hier = (G % Nn == 0)
            if hier != (policy == "hier"):
                continue
            for Ng in range(Nn, 65, Nn):
                for R in range(Ng, 3 * E + 1, Ng):
                    if R < E:
                        continue
                    out.append((R, G, Nn, Ng))
    return out


def build_case_list(rng):
    cases = []  # (L, E, R, G, Nn, Ng, kind)

    def add(L, E, R, G, Nn, Ng, kind=None):
        if kind is None:
            kind = rng.choice(KIND_POOL)
        cases.append((L, E, R, G, Nn, Ng, kind))

    # Hand-picked structural cases (each with several load kinds).
    special = [
        # R == E
        (8, 8, 4, 2, 4), (16, 16, 4, 2, 8), (32, 32, 8, 4, 8), (64, 64, 8, 2, 16),
        (12, 12, 3, 2, 4),            # global, R == E
        (48, 48, 6, 4, 8),            # global, R == E
        # R / Ng == 1 (one expert per GPU)
        (8, 16, 4, 2, 16), (16, 32, 8, 4, 32), (12, 24, 4, 4, 24), (6, 12, 3, 2, 12),
        (16, 16, 1, 1, 16),
        # long rows (> 16 items) in the GPU packing step
        (64, 96, 8, 2, 4), (64, 128, 16, 2, 8), (96, 144, 12, 3, 6), (48, 96, 4, 1, 4),
        (128, 192, 16, 4, 8), (128, 192, 8, 3, 12), (32, 64, 4, 1, 2), (96, 160, 8, 5, 10),
        # long rows (> 16 items) in the node packing step (many groups)
        (64, 96, 32, 2, 8), (128, 192, 64, 4, 16), (96, 144, 48, 2, 6), (48, 64, 24, 2, 8),
        # heavy redundancy R = 3E
        (16, 48, 4, 2, 8), (32, 96, 8, 4, 16), (8, 24, 2, 2, 4), (24, 72, 6, 4, 8),
        (64, 192, 8, 3, 12), (4, 12, 2, 1, 2), (6, 18, 3, 2, 6),
        # single node / single gpu
        (16, 24, 4, 1, 1), (8, 12, 1, 1, 1), (32, 40, 4, 1, 8),
        # global with G = 1 and many nodes
        (16, 32, 1, 2, 4), (24, 48, 1, 4, 8),
    ]
    special_kinds = ["int0-5", "int1-3", "const", "uniform"]
    for (E, R, G, Nn, Ng) in special:
        for k in special_kinds:
            add(rng.randint(1, 4), E, R, G, Nn, Ng, k)

    # Random sampling over the valid space, stratified by E and policy.
    for E in E_CHOICES:
        for policy in ("hier", "global"):
            cfgs = valid_configs(E, policy)
            if not cfgs:
                continue
            n = 12 if E <= 64 else 8
            for _ in range(n):
                R, G, Nn, Ng = rng.choice(cfgs)
                add(rng.randint(1, 4), E, R, G, Nn, Ng)

    # DeepSeek-V3-sized cases.
    for kind in ["int-heavy", "int-heavy", "int0-40", "lognormal", "uniform", "float-zeros"]:
        add(2, 256, 288, 8, 4, 32, kind)   # hierarchical
        add(2, 256, 320, 8, 5, 40, kind)   # global (8 % 5 != 0)
    return cases


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: %s <upstream eplb.py> <output vectors.txt>\n" % sys.argv[0])
        return 2
    upstream = load_upstream(sys.argv[1])
    out_path = sys.argv[2]
    torch.set_num_threads(1)
    rng = random.Random(SEED)
    cases = build_case_list(rng)

    lines = [
        "# EPLB rebalance_experts test vectors, generated by tools/gen_eplb_vectors.py",
        "# reference: github.com/deepseek-ai/EPLB eplb.py, torch %s (CPU), seed %d" % (torch.__version__, SEED),
        "# case <id> <L> <E> <R> <G> <Nn> <Ng> <M>; then lines w (L*E), p (L*R), c (L*E), m (L*E*M)",
        "# policy: hierarchical iff G % Nn == 0, else global",
    ]
    n_written = 0
    n_skipped = 0
    for (L, E, R, G, Nn, Ng, kind) in cases:
        rows = make_weights(rng, kind, L, E)
        weight = torch.tensor(rows, dtype=torch.float32)
        flat_w = [f32(v) for row in rows for v in row]
        assert weight.flatten().tolist() == flat_w
        try:
            phy2log, log2phy, logcnt = upstream.rebalance_experts(weight, R, G, Nn, Ng)
        except Exception as exc:  # upstream rejected this combination
            sys.stderr.write("skip L=%d E=%d R=%d G=%d Nn=%d Ng=%d: %r\n" % (L, E, R, G, Nn, Ng, exc))
            n_skipped += 1
            continue
        M = log2phy.shape[-1]
        assert tuple(phy2log.shape) == (L, R)
        assert tuple(logcnt.shape) == (L, E)
        assert tuple(log2phy.shape) == (L, E, M)
        lines.append("case %d %d %d %d %d %d %d %d" % (n_written, L, E, R, G, Nn, Ng, M))
        lines.append("w " + " ".join(fmt_f32(v) for v in flat_w))
        lines.append("p " + " ".join(str(int(v)) for v in phy2log.flatten().tolist()))
        lines.append("c " + " ".join(str(int(v)) for v in logcnt.flatten().tolist()))
        lines.append("m " + " ".join(str(int(v)) for v in log2phy.flatten().tolist()))
        n_written += 1
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    sys.stderr.write("wrote %d cases (%d skipped) to %s\n" % (n_written, n_skipped, out_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
