"""deepinfra.dualpipe.Executor: whole training steps of a toy model (numpy,
float64) on 1..4 ranks, each a Python thread with its own executor and an
in-process mailbox, against a sequential single-rank reference; the tasks
and calls each rank gets; exceptions carried through the C executor; bad
engines and arguments; split()."""
import gc
import threading
import weakref

import numpy as np
import pytest

from deepinfra import dualpipe
from deepinfra._lib import DeepInfraError, InvalidArgumentError, Status

H = 4  # hidden size: stage = Linear(H, 4H) -> tanh -> Linear(4H, H), no biases


def stage_forward(w1, w2, x):
    z = np.tanh(x @ w1.T)
    return z, z @ w2.T


def stage_backward_input(w1, w2, z, dy):
    da = (dy @ w2) * (1.0 - z * z)
    return da, da @ w1


def mse(y, label):
    return float(np.mean((y - label) ** 2)), 2.0 * (y - label) / y.size


class Toy:
    """Weights, data and the sequential reference of one pipeline configuration."""

    def __init__(self, kind, R, N, batch, seed):
        rng = np.random.default_rng(seed)
        self.kind, self.R = kind, R
        self.S = 2 * R if kind == "dualpipev" else R
        self.num_batches = 2 if kind == "dualpipe" else 1
        self.M = N // 2 if kind == "dualpipe" else N
        self.w1 = rng.uniform(-1, 1, (self.S, 4 * H, H)) / np.sqrt(H)
        self.w2 = rng.uniform(-1, 1, (self.S, H, 4 * H)) / np.sqrt(4 * H)
        self.x = rng.uniform(-1, 1, (self.num_batches, batch, H))
        self.labels = 0.5 * rng.uniform(-1, 1, (self.num_batches, batch, H))
        # tensor_split, written out independently of the library
        self.offsets = [k * (batch // self.M) + min(k, batch % self.M) for k in range(self.M + 1)]
        self.ref_loss = {}
        self.ref_gw1 = np.zeros_like(self.w1)
        self.ref_gw2 = np.zeros_like(self.w2)
        for b in range(self.num_batches):
            for k in range(self.M):
                rows = slice(self.offsets[k], self.offsets[k + 1])
                xs, zs = [self.x[b, rows]], []
                for s in range(self.S):
                    z, y = stage_forward(self.w1[s], self.w2[s], xs[-1])
                    zs.append(z)
                    xs.append(y)
                self.ref_loss[b, k], dy = mse(xs[-1], self.labels[b, rows])
                for s in reversed(range(self.S)):
                    da, dx = stage_backward_input(self.w1[s], self.w2[s], zs[s], dy)
                    self.ref_gw2[s] += dy.T @ zs[s]
                    self.ref_gw1[s] += da.T @ xs[s]
                    dy = dx

    def stages_of(self, rank):
        """The stage each module slot of rank holds (dualpipe.h's placement)."""
        if self.kind == "dualpipe":
            return [rank, self.R - 1 - rank]
        if self.kind == "dualpipev":
            return [rank, 2 * self.R - 1 - rank]
        return [rank]


class World:
    """The ranks' mailbox: posted sends are delivered at commit; a commit waits
    for its posted receives, or stops when another rank failed."""

    def __init__(self, timeout=10.0):
        self.cond = threading.Condition()
        self.inbox = {}
        self.failed = False
        self.timeout = timeout

    def fail(self):
        with self.cond:
            self.failed = True
            self.cond.notify_all()


class ToyEngine:
    """One rank's engine: every Executor method, checking what it is asked."""

    def __init__(self, toy, world, rank, forward_backward=False):
        self.toy, self.world, self.rank = toy, world, rank
        self.state = {}
        self.gw1 = np.zeros_like(toy.w1)
        self.gw2 = np.zeros_like(toy.w2)
        self.losses = {}
        self.sends, self.recvs = [], []
        self.log = []
        if forward_backward:
            self.forward_backward = self._forward_backward

    def _check(self, t):
        assert t.rank == self.rank
        stages = self.toy.stages_of(self.rank)
        assert t.module < len(stages) and t.stage == stages[t.module], t
        assert t.module == t.dir, t
        k = t.mb
        assert (t.row_offset, t.row_count) == (self.toy.offsets[k],
                                               self.toy.offsets[k + 1] - self.toy.offsets[k]), t
        assert t.first_stage == (t.stage == 0) and t.last_stage == (t.stage == self.toy.S - 1), t
        return self.state.setdefault((t.dir, t.mb), {})

    def _batch(self, t):
        return t.dir if self.toy.kind == "dualpipe" else 0

    def forward(self, t):
        self.log.append("F%d.%d" % (t.dir, t.mb))
        s = self._check(t)
        assert "y" not in s, "F%d.%d runs twice" % (t.dir, t.mb)
        rows = slice(t.row_offset, t.row_offset + t.row_count)
        if t.first_stage:
            s["x"] = self.toy.x[self._batch(t), rows]
        elif t.local_input:
            s["x"] = self.state[1 - t.dir, t.mb]["y"]
        else:
            assert "x" in s, "F%d.%d: activation not received" % (t.dir, t.mb)
        s["z"], s["y"] = stage_forward(self.toy.w1[t.stage], self.toy.w2[t.stage], s["x"])
        if t.last_stage:
            self.losses[self._batch(t), t.mb], s["dy"] = mse(
                s["y"], self.toy.labels[self._batch(t), rows])

    def backward(self, t):
        self.log.append(("I%d.%d" if t.defer_weight_grad else "B%d.%d") % (t.dir, t.mb))
        s = self._check(t)
        assert "y" in s and "da" not in s
        if t.local_input and not t.last_stage:
            s["dy"] = self.state[1 - t.dir, t.mb]["dx"]
        assert "dy" in s, "B%d.%d: gradient not received" % (t.dir, t.mb)
        s["da"], dx = stage_backward_input(self.toy.w1[t.stage], self.toy.w2[t.stage], s["z"],
                                           s["dy"])
        if not t.first_stage:
            s["dx"] = dx
        if t.defer_weight_grad:
            s["deferred"] = True
        else:
            self._weights(t, s)

    def _weights(self, t, s):
        self.gw2[t.stage] += s["dy"].T @ s["z"]
        self.gw1[t.stage] += s["da"].T @ s["x"]

    def weight_grad(self, t):
        self.log.append("W")
        s = self._check(t)
        assert s.pop("deferred", False), "W of %d.%d was not deferred" % (t.dir, t.mb)
        assert t.defer_weight_grad
        self._weights(t, s)

    def _forward_backward(self, f, b):
        self.log.append("F%d.%d&B%d.%d" % (f.dir, f.mb, b.dir, b.mb))
        assert not b.defer_weight_grad
        self.forward(f)
        self.backward(b)
        del self.log[-2:]

    def post_send(self, rank, msg, d, mb, peer):
        assert rank == self.rank and isinstance(msg, dualpipe.Msg) and peer != rank
        self.log.append("S%s%d.%d@%d" % ("f" if msg == dualpipe.Msg.ACT else "b", d, mb, peer))
        s = self.state[d, mb]
        self.sends.append((peer, msg, d, mb, s["y"] if msg == dualpipe.Msg.ACT else s["dx"]))

    def post_recv(self, rank, msg, d, mb, peer):
        assert rank == self.rank and isinstance(msg, dualpipe.Msg) and peer != rank
        self.log.append("R%s%d.%d@%d" % ("f" if msg == dualpipe.Msg.ACT else "b", d, mb, peer))
        self.recvs.append((peer, msg, d, mb))

    def commit(self, rank):
        assert rank == self.rank
        self.log.append("|")
        w = self.world
        with w.cond:
            for peer, msg, d, mb, data in self.sends:
                w.inbox[peer, self.rank, msg, d, mb] = data.copy()
            w.cond.notify_all()
            for peer, msg, d, mb in self.recvs:
                key = (self.rank, peer, msg, d, mb)
                if not w.cond.wait_for(lambda: key in w.inbox or w.failed, w.timeout):
                    raise TimeoutError("rank %d: %s %d.%d from rank %d never came"
                                       % (self.rank, msg.name, d, mb, peer))
                if key not in w.inbox:
                    raise RuntimeError("rank %d: another rank failed" % self.rank)
                self.state.setdefault((d, mb), {})["x" if msg == dualpipe.Msg.ACT else "dy"] = \
                    w.inbox.pop(key)
        self.sends, self.recvs = [], []


def run_ranks(toy, engines, N, batch, steps=1):
    """Step every rank's executor on its own thread; the exceptions, by rank."""
    errors = {}
    executors = [dualpipe.Executor(toy.kind, toy.R, N, r, engines[r], batch_size=batch)
                 for r in range(toy.R)]

    def rank_main(r):
        try:
            for _ in range(steps):
                executors[r].step()
        except BaseException as e:  # noqa: B902
            errors[r] = e
            engines[r].world.fail()

    # daemon threads: a rank that hangs fails this test instead of blocking pytest's exit
    threads = [threading.Thread(target=rank_main, args=(r,), daemon=True) for r in range(toy.R)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    hung = [r for r, t in enumerate(threads) if t.is_alive()]
    if hung:
        engines[0].world.fail()
        pytest.fail("ranks %s hang" % hung)
    for ex in executors:
        ex.close()
    return errors


CASES = [("dualpipe", 2, 4, 9), ("dualpipe", 4, 10, 11), ("dualpipev", 1, 2, 5),
         ("dualpipev", 2, 5, 11), ("dualpipev", 3, 7, 15), ("1f1b", 1, 1, 3), ("1f1b", 3, 5, 7),
         ("zb1p", 2, 3, 7), ("zb1p", 3, 4, 9)]


@pytest.mark.parametrize("kind,R,N,batch", CASES)
@pytest.mark.parametrize("fb", [False, True], ids=["no_fb", "fb"])
def test_a_step_trains_like_the_sequential_reference(kind, R, N, batch, fb):
    toy = Toy(kind, R, N, batch, seed=R * 100 + N)
    world = World()
    engines = [ToyEngine(toy, world, r, forward_backward=fb) for r in range(R)]
    errors = run_ranks(toy, engines, N, batch)
    assert not errors, errors
    losses = {}
    for e in engines:
        assert not (losses.keys() & e.losses.keys())
        losses.update(e.losses)
    assert losses.keys() == toy.ref_loss.keys()
    for key, loss in losses.items():
        assert loss == pytest.approx(toy.ref_loss[key], rel=1e-13)
    gw1 = sum(e.gw1 for e in engines)
    gw2 = sum(e.gw2 for e in engines)
    np.testing.assert_allclose(gw1, toy.ref_gw1, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(gw2, toy.ref_gw2, rtol=1e-11, atol=1e-14)
    # each rank made exactly the calls its stream says, in its order
    for r, e in enumerate(engines):
        expected = dualpipe.schedule(kind, R, N, comm=True)[r]
        if not fb:  # without the overlap method an F&B is a forward, then a backward
            expected = [part for op in expected for part in op.split("&")]
        assert e.log == expected, "rank %d" % r
        assert not any(s for s in e.state.values() if s.get("deferred"))


class Compute:
    """An engine whose compute methods do nothing; tests override what they need."""

    def forward(self, t):
        pass

    def backward(self, t):
        pass


class Deferring(Compute):
    """Compute, with the weight_grad method zb1p, dualpipe and dualpipev need."""

    def weight_grad(self, t):
        pass


def test_rows_are_none_without_a_batch_size():
    seen = []

    class Engine:
        def forward(self, t):
            seen.append(t)

        def backward(self, t):
            seen.append(t)

    with dualpipe.Executor("1f1b", 1, 3, 0, Engine()) as ex:
        ex.step()
    assert [(t.mb, t.defer_weight_grad) for t in seen] == [(0, False), (0, False), (1, False),
                                                          (1, False), (2, False), (2, False)]
    assert all(t.row_offset is None and t.row_count is None for t in seen)
    assert all(isinstance(t, dualpipe.Task) and t.first_stage and t.last_stage for t in seen)


def test_an_engine_exception_is_raised_by_step_with_the_library_note():
    toy = Toy("dualpipev", 2, 4, 8, seed=7)
    world = World(timeout=20.0)
    engines = [ToyEngine(toy, world, r) for r in range(2)]
    boom = KeyError("no such expert")
    calls = []

    def failing_backward(t):
        calls.append(t)
        raise boom

    engines[1].backward = failing_backward
    errors = run_ranks(toy, engines, 4, 8)
    assert errors[1] is boom  # the very exception, not a wrapper
    notes = getattr(boom, "__notes__", [])
    if hasattr(boom, "add_note"):
        assert len(notes) == 1
        assert notes[0].startswith("dinf_pipe_executor_step: rank 1 op ")
        assert notes[0].endswith("backward failed: KeyError: 'no such expert'"), notes[0]
    assert len(calls) == 1  # the step stopped at the failure
    # the other rank stopped too (the mailbox saw the failure), it did not hang
    assert isinstance(errors[0], RuntimeError) and "another rank failed" in str(errors[0])


def test_an_executor_steps_again_after_a_failure():
    class Engine(Deferring):
        fail = True

        def forward(self, t):
            if self.fail:
                self.fail = False
                raise ValueError("first step fails")

    with dualpipe.Executor("zb1p", 1, 2, 0, Engine()) as ex:
        with pytest.raises(ValueError, match="first step fails"):
            ex.step()
        ex.step()  # the deferred FIFO was reset: a clean second step
        ex.step()


@pytest.mark.parametrize("exc,status", [
    (InvalidArgumentError("bad task"), Status.INVALID_ARGUMENT),
    (TimeoutError("slow peer"), Status.TIMEOUT),
    (MemoryError("no room"), Status.OUT_OF_MEMORY),
    (RuntimeError("engine bug"), Status.INTERNAL),
])
def test_the_status_the_c_executor_sees(exc, status):
    assert dualpipe._status_of(exc) == status

    class Engine(Compute):
        def forward(self, t):
            raise exc

    with dualpipe.Executor("1f1b", 1, 1, 0, Engine()) as ex:
        with pytest.raises(type(exc)) as info:
            ex.step()
        # what the C executor returned: that status and its account of the failure
        assert isinstance(ex.last_error, DeepInfraError) and ex.last_error.status == status
        assert ex.last_error.message == ("dinf_pipe_executor_step: rank 0 op 1 (F0.0): forward "
                                         "failed: %s: %s" % (type(exc).__name__, exc))
    assert info.value is exc


def test_last_error_is_none_after_a_step_that_succeeds():
    class Engine(Compute):
        fail = True

        def forward(self, t):
            if self.fail:
                raise ValueError("once")

    engine = Engine()
    with dualpipe.Executor("1f1b", 1, 1, 0, engine) as ex:
        assert ex.last_error is None
        with pytest.raises(ValueError):
            ex.step()
        assert ex.last_error is not None
        engine.fail = False
        ex.step()
        assert ex.last_error is None


def test_an_exception_whose_text_cannot_be_made_still_stops_the_step():
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no text")

    calls = []

    class Engine(Compute):
        def forward(self, t):
            calls.append(t.mb)
            if t.mb == 1:
                raise Unprintable()

    with dualpipe.Executor("1f1b", 1, 3, 0, Engine()) as ex:
        with pytest.raises(Unprintable):
            ex.step()
        assert calls == [0, 1]  # stopped at the failure, not carried on
        assert ex.last_error.message.endswith("forward failed: Unprintable: <unprintable>")


def test_the_same_exception_raised_twice_gets_one_note():
    boom = ValueError("again")

    class Engine(Compute):
        def forward(self, t):
            raise boom

    with dualpipe.Executor("1f1b", 1, 1, 0, Engine()) as ex:
        for _ in range(3):
            with pytest.raises(ValueError):
                ex.step()
    assert len(getattr(boom, "__notes__", [None])) == 1


def test_an_executor_left_unclosed_is_freed_without_the_garbage_collector():
    engine = Compute()
    ex = dualpipe.Executor("1f1b", 1, 2, 0, engine)
    ex.step()
    ref = weakref.ref(ex)
    enabled = gc.isenabled()
    gc.disable()
    try:
        del ex
        assert ref() is None, "a reference cycle keeps the executor (and its engine) alive"
    finally:
        if enabled:
            gc.enable()


def test_a_keyboard_interrupt_in_a_method_reaches_the_caller():
    class Engine(Compute):
        def forward(self, t):
            raise KeyboardInterrupt

    with dualpipe.Executor("1f1b", 1, 1, 0, Engine()) as ex:
        with pytest.raises(KeyboardInterrupt):
            ex.step()


def test_missing_or_bad_engine_methods_are_named():
    class NoBackward:
        def forward(self, t):
            pass

    with pytest.raises(InvalidArgumentError, match="the engine has no backward method"):
        dualpipe.Executor("1f1b", 1, 2, 0, NoBackward())
    with pytest.raises(InvalidArgumentError, match="the engine has no weight_grad method, but zb1p defers"):
        dualpipe.Executor("zb1p", 1, 2, 0, Compute())
    with pytest.raises(InvalidArgumentError, match="the engine has no post_send method .*num_ranks=2"):
        dualpipe.Executor("1f1b", 2, 2, 0, Compute())
    bad = Compute()
    bad.commit = 3
    with pytest.raises(InvalidArgumentError, match="engine.commit is int, not a method"):
        dualpipe.Executor("1f1b", 1, 2, 0, bad)
    with dualpipe.Executor("1f1b", 1, 2, 0, Compute()) as ex:  # 1F1B defers nothing
        ex.step()


def test_bad_arguments_raise_the_library_message():
    Engine = Deferring
    with pytest.raises(InvalidArgumentError, match="kind"):
        dualpipe.Executor("gpipe", 1, 2, 0, Engine())
    with pytest.raises(InvalidArgumentError, match="rank"):
        dualpipe.Executor("dualpipev", 1, 2, 1, Engine())
    with pytest.raises(InvalidArgumentError, match="batch_size=1 is smaller than the 2 micro-batches"):
        dualpipe.Executor("1f1b", 1, 2, 0, Engine(), batch_size=1)
    with pytest.raises(InvalidArgumentError, match="num_chunks"):
        dualpipe.Executor("1f1b", 1, 2 ** 31, 0, Engine())


def test_closed_and_reentered_executors_refuse_to_step():
    class Engine(Compute):
        ex = None

        def forward(self, t):
            self.ex.step()  # re-entered from its own callback

    engine = Engine()
    ex = dualpipe.Executor("1f1b", 1, 1, 0, engine)
    engine.ex = ex
    with pytest.raises(InvalidArgumentError, match="already stepping"):
        ex.step()
    ex.close()
    ex.close()
    with pytest.raises(InvalidArgumentError, match="closed"):
        ex.step()


def test_split_follows_tensor_split():
    for batch in range(0, 13):
        for chunks in range(1, 6):
            expected = np.cumsum([0] + [len(p) for p in np.array_split(np.arange(batch), chunks)])
            assert dualpipe.split(batch, chunks) == list(expected), (batch, chunks)
    with pytest.raises(InvalidArgumentError, match="num_chunks"):
        dualpipe.split(4, 0)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        dualpipe.split(-1, 2)
    with pytest.raises(DeepInfraError):
        dualpipe.split(2 ** 63, 2)
