#!/usr/bin/env python3
"""Train a small MLP with FP8 GEMMs in all three passes, DeepSeek-V3's recipe:
deepinfra.gemm on numpy arrays (the CPU path).

Each linear layer y = x W^T runs its three GEMMs in e4m3 with fine-grained
float32 scales, as DeepSeek-V3 trains:

  fprop  y  = x W^T      gemm_fp8_fp8_bf16_nt(per_token_cast(x), per_block_cast(W))
  dgrad  dx = dy W       gemm_fp8_fp8_bf16_nt(per_token_cast(dy), per_block_cast(W^T))
  wgrad  dW += dy^T x    wgrad_gemm_fp8_fp8_fp32_nt(per_token_cast(dy^T), per_token_cast(x^T), dW)

activations and output gradients quantized per token per 128 channels
(1x128; for wgrad along the tokens), weights per 128x128 block, bf16 outputs
for fprop/dgrad and a float32 gradient accumulator for wgrad (two
micro-batches accumulate into it before each SGD step); the master weights
stay float32 and are quantized for each GEMM. The same model from
the same initial weights is trained in float64 on the same batches. The
program checks each of the five FP8 GEMMs of the first micro-batch on the
float64 run's own operands (DeepGEMM's calc_diff < 1e-3 against the float64
product), prints both runs' losses per step, and exits with status 0 only
when every GEMM passes and the FP8 run's losses track the float64 run's.

    PYTHONPATH=python python3 examples/fp8_linear_train.py [--steps 20] [--tokens 256]
"""
import argparse
import sys

import numpy as np

import deepinfra
from deepinfra import gemm

try:
    import ml_dtypes
except ImportError:  # pragma: no cover
    sys.exit("fp8_linear_train: needs ml_dtypes (pip install ml_dtypes)")

BF16 = ml_dtypes.bfloat16


def calc_diff(x, y):
    """DeepGEMM's test metric: 1 - 2<x,y> / (|x|^2 + |y|^2)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(1 - 2 * (x * y).sum() / (x * x + y * y).sum())


# ---------------------------------------------------------------- FP8 GEMMs --

def fprop(x, w):
    """x [t, in] @ w[out, in]^T in FP8 -> float32 (bf16 values)."""
    out = np.empty((x.shape[0], w.shape[0]), BF16)
    gemm.gemm_fp8_fp8_bf16_nt(gemm.per_token_cast_to_fp8(x), gemm.per_block_cast_to_fp8(w), out)
    return out.astype(np.float32)


def dgrad(dy, w):
    """dy [t, out] @ w [out, in] in FP8 (B = w^T, [in, out], 128x128 blocks)."""
    out = np.empty((dy.shape[0], w.shape[1]), BF16)
    gemm.gemm_fp8_fp8_bf16_nt(gemm.per_token_cast_to_fp8(dy),
                              gemm.per_block_cast_to_fp8(np.ascontiguousarray(w.T)), out)
    return out.astype(np.float32)


def wgrad(dy, x, acc):
    """acc [out, in] (float32) += dy^T x in FP8, both quantized 1x128 along the tokens."""
    gemm.wgrad_gemm_fp8_fp8_fp32_nt(gemm.per_token_cast_to_fp8(np.ascontiguousarray(dy.T)),
                                    gemm.per_token_cast_to_fp8(np.ascontiguousarray(x.T)), acc)


# -------------------------------------------------------------------- model --

class MLP:
    """Linear(d_in, d_hidden) -> ReLU -> Linear(d_hidden, d_out); MSE loss."""

    def __init__(self, w1, w2, fp8):
        self.w1, self.w2, self.fp8 = w1.copy(), w2.copy(), fp8

    def grads(self, batches):
        """Mean loss and summed weight gradients over the micro-batches."""
        if self.fp8:
            g1 = np.zeros(self.w1.shape, np.float32)
            g2 = np.zeros(self.w2.shape, np.float32)
        else:
            g1, g2 = np.zeros(self.w1.shape), np.zeros(self.w2.shape)
        losses = []
        for x, target in batches:
            if self.fp8:
                h = fprop(x, self.w1)
                a = np.maximum(h, 0)
                y = fprop(a, self.w2)
            else:
                h = x @ self.w1.T
                a = np.maximum(h, 0)
                y = a @ self.w2.T
            err = y - target
            losses.append(float(np.mean(np.asarray(err, np.float64) ** 2)))
            dy = (2.0 / err.size) * err  # d(mean squared error) / dy
            if self.fp8:
                dy = dy.astype(np.float32)
                wgrad(dy, a, g2)
                da = dgrad(dy, self.w2)
                dh = (da * (h > 0)).astype(np.float32)
                wgrad(dh, x, g1)
            else:
                g2 += dy.T @ a
                da = dy @ self.w2
                dh = da * (h > 0)
                g1 += dh.T @ x
        scale = 1.0 / len(batches)  # the mean over the micro-batches
        return float(np.mean(losses)), g1.astype(np.float64) * scale, g2.astype(np.float64) * scale

    def gemm_diffs(self, x, target):
        """calc_diff of each FP8 GEMM of one micro-batch against float64, on this
        (float64) model's operands: fprop of both layers, dgrad of layer 2,
        wgrad of both layers."""
        h = x @ self.w1.T
        a = np.maximum(h, 0)
        y = a @ self.w2.T
        dy = 2.0 * (y - target) / y.size
        da = dy @ self.w2
        dh = da * (h > 0)
        f32 = lambda v: np.ascontiguousarray(v, np.float32)  # noqa: E731
        g1 = np.zeros(self.w1.shape, np.float32)
        g2 = np.zeros(self.w2.shape, np.float32)
        wgrad(f32(dy), f32(a), g2)
        wgrad(f32(dh), f32(x), g1)
        return {"fprop W1": calc_diff(fprop(f32(x), f32(self.w1)), h),
                "fprop W2": calc_diff(fprop(f32(a), f32(self.w2)), y),
                "dgrad W2": calc_diff(dgrad(f32(dy), f32(self.w2)), da),
                "wgrad W2": calc_diff(g2, dy.T @ a),
                "wgrad W1": calc_diff(g1, dh.T @ x)}

    def step(self, g1, g2, lr):
        dt = np.float32 if self.fp8 else np.float64
        self.w1 = (self.w1 - lr * g1).astype(dt)
        self.w2 = (self.w2 - lr * g2).astype(dt)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--tokens", type=int, default=256, help="tokens per micro-batch")
    p.add_argument("--d-in", type=int, default=256)
    p.add_argument("--d-hidden", type=int, default=512)
    p.add_argument("--d-out", type=int, default=128)
    p.add_argument("--lr", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()

    rng = np.random.default_rng(a.seed)
    teacher = rng.standard_normal((a.d_out, a.d_in)) / np.sqrt(a.d_in)
    w1 = rng.standard_normal((a.d_hidden, a.d_in)) / np.sqrt(a.d_in)
    w2 = rng.standard_normal((a.d_out, a.d_hidden)) / np.sqrt(a.d_hidden)
    fp8 = MLP(w1.astype(np.float32), w2.astype(np.float32), fp8=True)
    ref = MLP(w1, w2, fp8=False)
    print("fp8_linear_train: MLP %d -> %d -> %d, %d steps of 2 micro-batches x %d tokens, "
          "every GEMM in FP8 (fprop, dgrad, wgrad)" % (a.d_in, a.d_hidden, a.d_out, a.steps,
                                                      a.tokens))
    first = last = None
    diffs = {}
    try:
        for step in range(a.steps):
            batches = []
            for _ in range(2):
                x = rng.standard_normal((a.tokens, a.d_in)).astype(np.float32)
                batches.append((x, (x @ teacher.T).astype(np.float32)))
            if step == 0:
                diffs = ref.gemm_diffs(*batches[0])
                print("step 0, each FP8 GEMM against float64 (calc_diff): " +
                      ", ".join("%s %.2e" % kv for kv in diffs.items()))
            loss8, g1_8, g2_8 = fp8.grads(batches)
            loss, g1, g2 = ref.grads(batches)
            if step == 0:  # the whole step: forward errors reach every gradient
                print("step 0 gradients: calc_diff dW1 %.2e, dW2 %.2e"
                      % (calc_diff(g1_8, g1), calc_diff(g2_8, g2)))
            print("step %d: loss %.6f (float64 %.6f)" % (step, loss8, loss))
            fp8.step(g1_8, g2_8, a.lr)
            ref.step(g1, g2, a.lr)
            first = first or (loss8, loss)
            last = (loss8, loss)
    except deepinfra.DeepInfraError as e:
        print("fp8_linear_train: %s" % e, file=sys.stderr)
        return 1
    # every FP8 GEMM within DeepGEMM's calc_diff bound; both runs learn (the
    # loss falls by 10% or more: by half in the default 20 steps); the final
    # losses within 2% of each other (measured: 0.4% or less for seeds 1-3)
    rel = abs(last[0] - last[1]) / last[1]
    ok = (all(v < 1e-3 for v in diffs.values()) and last[0] < 0.9 * first[0]
          and last[1] < 0.9 * first[1] and rel < 0.02)
    print("fp8_linear_train: %s final loss %.6f vs float64 %.6f (rel diff %.3f), first %.6f" % (
        "OK" if ok else "FAILED", last[0], last[1], rel, first[0]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
