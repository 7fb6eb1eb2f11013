#!/usr/bin/env python3
"""Train a small MLP with a DualPipeV pipeline from Python: deepinfra.dualpipe.Executor.

Each of R ranks is a thread with its own executor and its own engine: the
engine holds the two stages DualPipeV places on its rank (stage r and stage
2R-1-r of 2R), runs their forward and backward in numpy (float64), and moves
activations and gradients between ranks through an in-process mailbox (a
real engine would post torch.distributed P2P ops and wait for them in
commit). After every step the ranks' gradients are all-reduced per stage and
SGD updates the weights. The same model trained sequentially on one rank
must give the same losses; the program checks that and exits with status 0
only when it holds.

    PYTHONPATH=python python3 examples/pipeline_train.py [--ranks 4] [--chunks 8] [--steps 5]
"""
import argparse
import sys
import threading

import numpy as np

import deepinfra
from deepinfra import dualpipe


class Model:
    """2R stages, each Linear(h, 4h) -> tanh -> Linear(4h, h); MSE loss."""

    def __init__(self, num_stages, hidden, seed):
        rng = np.random.default_rng(seed)
        self.w1 = [rng.standard_normal((4 * hidden, hidden)) / np.sqrt(hidden)
                   for _ in range(num_stages)]
        self.w2 = [rng.standard_normal((hidden, 4 * hidden)) / np.sqrt(4 * hidden)
                   for _ in range(num_stages)]

    def forward(self, s, x):
        z = np.tanh(x @ self.w1[s].T)
        return z, z @ self.w2[s].T

    def backward_input(self, s, z, dy):
        da = (dy @ self.w2[s]) * (1.0 - z * z)
        return da, da @ self.w1[s]


def loss_and_grad(y, label):
    return float(np.mean((y - label) ** 2)), 2.0 * (y - label) / y.size


class Mailbox:
    def __init__(self):
        self.cond = threading.Condition()
        self.box = {}
        self.failed = False


class Engine:
    """One rank of the pipeline: what the executor calls."""

    def __init__(self, model, mailbox, rank, x, labels):
        self.model, self.mailbox, self.rank = model, mailbox, rank
        self.x, self.labels = x, labels
        self.reset()

    def reset(self):
        self.acts = {}  # (phase, mb) -> x, z, y, dy, da, dx of this rank's stage
        self.grads = {}  # stage -> [gw1, gw2]
        self.losses = {}
        self.sends, self.recvs = [], []

    def forward(self, t):
        a = self.acts.setdefault((t.dir, t.mb), {})
        rows = slice(t.row_offset, t.row_offset + t.row_count)
        if t.first_stage:
            a["x"] = self.x[rows]
        elif t.local_input:  # the last rank: phase 1 starts from its own phase-0 output
            a["x"] = self.acts[0, t.mb]["y"]
        a["z"], a["y"] = self.model.forward(t.stage, a["x"])
        if t.last_stage:
            self.losses[t.mb], a["dy"] = loss_and_grad(a["y"], self.labels[rows])

    def backward(self, t):
        a = self.acts[t.dir, t.mb]
        if t.local_input and not t.last_stage:  # phase 0 ends where phase 1's gradient starts
            a["dy"] = self.acts[1, t.mb]["dx"]
        a["da"], a["dx"] = self.model.backward_input(t.stage, a["z"], a["dy"])
        if not t.defer_weight_grad:
            self.weight_grad(t)

    def weight_grad(self, t):
        a = self.acts[t.dir, t.mb]
        g = self.grads.setdefault(t.stage, [0.0, 0.0])
        g[0] = g[0] + a["da"].T @ a["x"]
        g[1] = g[1] + a["dy"].T @ a["z"]

    def post_send(self, rank, msg, d, mb, peer):
        a = self.acts[d, mb]
        self.sends.append(((peer, rank, msg, d, mb), a["y"] if msg == dualpipe.Msg.ACT else a["dx"]))

    def post_recv(self, rank, msg, d, mb, peer):
        self.recvs.append((rank, peer, msg, d, mb))

    def commit(self, rank):
        box = self.mailbox
        with box.cond:
            for key, data in self.sends:
                box.box[key] = data
            box.cond.notify_all()
            for key in self.recvs:
                if not box.cond.wait_for(lambda: key in box.box or box.failed, timeout=30):
                    raise TimeoutError("rank %d: no %s from rank %d" % (rank, key[2].name, key[1]))
                if box.failed:
                    raise RuntimeError("rank %d: another rank failed" % rank)
                _, _, msg, d, mb = key
                self.acts.setdefault((d, mb), {})["x" if msg == dualpipe.Msg.ACT else "dy"] = \
                    box.box.pop(key)
        self.sends, self.recvs = [], []


def pipeline_step(executors, engines, mailbox):
    errors = []

    def run(r):
        try:
            executors[r].step()
        except BaseException as e:  # noqa: B902 - reported below
            errors.append((r, e))
            with mailbox.cond:
                mailbox.failed = True
                mailbox.cond.notify_all()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(executors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        # the first cause, not the other ranks' "another rank failed"
        r, e = min(errors, key=lambda x: isinstance(x[1], RuntimeError))
        raise SystemExit("pipeline_train: rank %d failed: %s: %s" % (r, type(e).__name__, e))


def sequential_step(model, x, labels, offsets):
    """The reference: every micro-batch through all stages on one rank."""
    S = len(model.w1)
    grads = [[0.0, 0.0] for _ in range(S)]
    losses = []
    for k in range(len(offsets) - 1):
        rows = slice(offsets[k], offsets[k + 1])
        xs, zs = [x[rows]], []
        for s in range(S):
            z, y = model.forward(s, xs[-1])
            zs.append(z)
            xs.append(y)
        loss, dy = loss_and_grad(xs[-1], labels[rows])
        losses.append(loss)
        for s in reversed(range(S)):
            da, dx = model.backward_input(s, zs[s], dy)
            grads[s][0] = grads[s][0] + da.T @ xs[s]
            grads[s][1] = grads[s][1] + dy.T @ zs[s]
            dy = dx
    return losses, grads


def sgd(model, grads, lr):
    for s, (g1, g2) in enumerate(grads):
        model.w1[s] -= lr * g1
        model.w2[s] -= lr * g2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--chunks", type=int, default=8, help="micro-batches per step (>= 2 x ranks)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=61, help="rows per step")
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    R, N = args.ranks, args.chunks

    rng = np.random.default_rng(args.seed + 1)
    x = rng.standard_normal((args.batch, args.hidden))
    labels = 0.5 * np.sin(x)  # something for the MLP to learn
    model = Model(2 * R, args.hidden, args.seed)
    reference = Model(2 * R, args.hidden, args.seed)
    offsets = dualpipe.split(args.batch, N)

    mailbox = Mailbox()
    engines = [Engine(model, mailbox, r, x, labels) for r in range(R)]
    executors = []
    try:
        for r in range(R):  # the library checks the sizes and the engine's methods here
            executors.append(dualpipe.Executor("dualpipev", R, N, r, engines[r], batch_size=args.batch))
    except deepinfra.InvalidArgumentError as e:
        raise SystemExit("pipeline_train: %s" % e)
    print("pipeline_train: DualPipeV, %d ranks x 2 stages, %d micro-batches of %d rows, hidden %d"
          % (R, N, args.batch, args.hidden))

    worst = 0.0
    for step in range(args.steps):
        for e in engines:
            e.reset()
        pipeline_step(executors, engines, mailbox)
        losses = {}
        grads = [[0.0, 0.0] for _ in range(2 * R)]
        for e in engines:  # the all-reduce of a real engine
            losses.update(e.losses)
            for s, (g1, g2) in e.grads.items():
                grads[s][0] = grads[s][0] + g1
                grads[s][1] = grads[s][1] + g2
        ref_losses, ref_grads = sequential_step(reference, x, labels, offsets)
        got = [losses[k] for k in range(N)]
        diff = max(abs(a - b) / max(abs(b), 1e-300) for a, b in zip(got, ref_losses))
        worst = max(worst, diff)
        print("step %d: loss %.6f (sequential %.6f)" % (step, sum(got) / N, sum(ref_losses) / N))
        sgd(model, grads, args.lr)
        sgd(reference, ref_grads, args.lr)
    for ex in executors:
        ex.close()
    if not worst <= 1e-10:
        print("pipeline_train: FAILED: the losses differ from the sequential run by %.3e" % worst)
        return 1
    print("pipeline_train: OK max_rel_loss_diff=%.3e over %d steps" % (worst, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
