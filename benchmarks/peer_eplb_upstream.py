#!/usr/bin/env python3
"""Peer for the EPLB benchmarks: upstream eplb.py (deepseek-ai/EPLB, on CPU
torch) on the same DeepSeek-V3 sizes as benchmarks/bench_eplb.c, timed in
the same run, and checked to give exactly our plan on the same weights.

    make bench DINF_EPLB_UPSTREAM=/path/to/eplb.py [PEER_PYTHON=/usr/bin/python3]

eplb.py is not part of this repository; pass its path. It needs torch (e.g.
Debian's python3-torch) and numpy in the interpreter that runs this script.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
import deepinfra.eplb  # noqa: E402

SHAPES = [  # name, L, E, R, G, N, P
    ("hierarchical/L58_E256_R288_N4_P32", 58, 256, 288, 8, 4, 32),
    ("global/L58_E256_R320_N5_P40", 58, 256, 320, 8, 5, 40),
]


def token_counts(L, E, seed):
    """Zipf-like integer token counts, shuffled per layer (like bench_eplb.c)."""
    rng = np.random.default_rng(seed)
    base = np.floor(40000.0 / np.power(np.arange(1, E + 1, dtype=np.float64), 0.8))
    w = np.empty((L, E), dtype=np.float32)
    for l in range(L):
        w[l] = rng.permutation(base + rng.integers(0, 64, E))
    return w


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("eplb_py")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("eplb_upstream", args.eplb_py)
    upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream)
    torch.set_num_threads(1)
    print("peer: upstream eplb.py on torch %s, 1 thread" % torch.__version__)
    print("%-40s %14s %14s %9s  %s" % ("eplb/rebalance", "upstream", "libdeepinfra", "speed-up",
                                        "same plan"))
    for name, L, E, R, G, N, P in SHAPES:
        w = token_counts(L, E, 1)
        t_up, (p_up, l_up, c_up) = timed(
            lambda: upstream.rebalance_experts(torch.from_numpy(w), R, G, N, P), args.repeat)
        t_us, (p_us, l_us, c_us) = timed(
            lambda: deepinfra.eplb.rebalance_experts(w, R, G, N, P), max(args.repeat, 20))
        same = (np.array_equal(p_up.numpy(), p_us) and np.array_equal(c_up.numpy(), c_us)
                and np.array_equal(l_up.numpy(), l_us))
        print("%-40s %11.1f ms %11.3f ms %8.0fx  %s" % (name, t_up * 1e3, t_us * 1e3, t_up / t_us,
                                                        "yes" if same else "NO"))
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
