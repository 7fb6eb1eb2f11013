"""Pipeline schedules (DualPipe, DualPipeV, 1F1B, ZB1P): generate, validate,
simulate and draw them, backed by libdeepinfra (include/deepinfra/dualpipe.h).

An :class:`Executor` runs one rank's stream through an engine's own
methods (forward, backward, weight_grad, sends and receives): one training
step per :meth:`Executor.step`.

Ops are strings in the reference notation: ``F0.3`` forward of direction 0,
micro-batch 3; ``B1.2`` full backward; ``I0.2`` backward for inputs with the
weight gradient deferred; ``W`` the oldest deferred weight gradients;
``F0.7&B1.3`` an overlapped forward and backward; ``Sf0.0@1`` / ``Sb0.0@1``
post the send of an activation / gradient to rank 1; ``Rf1.2@0`` /
``Rb1.2@0`` the matching receives; ``|`` a commit. Standard library only.

    >>> from deepinfra import dualpipe
    >>> dualpipe.schedule("dualpipev", 2, 4)[0][:4]
    ['F0.0', 'F0.1', 'F0.2', 'F1.0']
"""

import ctypes
import enum
import threading
import typing

from . import _lib
from ._lib import (DeepInfraError, InvalidArgumentError, PipeCallbacks, PipeCosts, PipeEvent,
                   PipeOp, PipeSimResult, PipeTask, PipeViolation, Status)

__all__ = ["KINDS", "schedule", "validate", "simulate", "timeline_svg", "chrome_trace", "split",
           "Msg", "Task", "Executor"]

#: Schedule kinds, by name, with their dinf_pipe_kind values.
KINDS = {"dualpipe": 0, "dualpipev": 1, "1f1b": 2, "zb1p": 3}
_WITH_COMM = 1
_README_COSTS = {"F": 1.0, "B": 2.0, "W": 1.0, "FB": 3.0, "latency": 0.0}


def _kind(kind):
    """A kind name (or its dinf_pipe_kind value) -> the value."""
    if isinstance(kind, str) and kind.lower() in KINDS:
        return KINDS[kind.lower()]
    if isinstance(kind, int) and not isinstance(kind, bool) and kind in KINDS.values():
        return kind
    raise InvalidArgumentError("kind=%r is not one of %s" % (kind, ", ".join(KINDS)))


def _format(op):
    buf = ctypes.create_string_buffer(32)
    _lib.lib().dinf_pipe_op_format(ctypes.byref(op), buf, 32)
    return buf.value.decode()


def _generate(kind, num_ranks, num_chunks, comm):
    k = _kind(kind)
    R = _lib.int32_arg("num_ranks", num_ranks)
    N = _lib.int32_arg("num_chunks", num_chunks)
    lib = _lib.lib()
    streams = []
    for rank in range(max(R, 1)):  # R < 1: rank 0 lets the library name the error
        n = ctypes.c_int64(0)
        lib.dinf_pipe_schedule(k, R, N, _WITH_COMM if comm else 0, rank, None, 0, ctypes.byref(n))
        ops = (PipeOp * max(n.value, 1))()
        lib.dinf_pipe_schedule(k, R, N, _WITH_COMM if comm else 0, rank, ops, n.value,
                               ctypes.byref(n))
        streams.append((ops, n.value))
    return k, R, N, streams


def _parse(streams, num_ranks):
    """Op streams (one list of op strings, or one string, per rank) -> C arrays."""
    if isinstance(streams, (str, bytes)) or not hasattr(streams, "__len__"):
        raise InvalidArgumentError("streams must be a sequence of one op list per rank")
    if len(streams) != num_ranks:
        raise InvalidArgumentError("streams has %d rank(s) but num_ranks=%d"
                                   % (len(streams), num_ranks))
    lib = _lib.lib()
    out = []
    for r, stream in enumerate(streams):
        if isinstance(stream, bytes):
            stream = stream.decode()
        text = stream if isinstance(stream, str) else " ".join(str(op) for op in stream)
        raw = text.encode()
        n = ctypes.c_int64(0)
        try:
            lib.dinf_pipe_stream_parse(raw, None, 0, ctypes.byref(n))
        except InvalidArgumentError as e:
            raise type(e)("rank %d: %s" % (r, e.message), e.status) from None
        ops = (PipeOp * max(n.value, 1))()
        lib.dinf_pipe_stream_parse(raw, ops, n.value, ctypes.byref(n))
        out.append((ops, n.value))
    return out


def _arrays(streams):
    R = len(streams)
    ptrs = (ctypes.POINTER(PipeOp) * R)(*[ctypes.cast(ops, ctypes.POINTER(PipeOp))
                                          for ops, _ in streams])
    lengths = (ctypes.c_int64 * R)(*[n for _, n in streams])
    return ptrs, lengths


def schedule(kind, num_ranks, num_chunks, comm=False):
    """Every rank's op stream: a list (one per rank) of lists of op strings.

    kind: "dualpipe", "dualpipev", "1f1b" or "zb1p". Compute ops only unless
    ``comm=True``, which adds the send/receive posts and the commits ("|").
    DualPipe and DualPipeV equal upstream's scheduler op for op.
    """
    _, _, _, streams = _generate(kind, num_ranks, num_chunks, comm)
    return [[_format(ops[i]) for i in range(n)] for ops, n in streams]


def validate(kind, num_ranks, num_chunks, streams):
    """Check op streams (as :func:`schedule` returns them, or any text) for the
    rules of dinf_pipe_validate. Returns None when valid, else a dict
    ``{"rank", "op_index", "rule"}`` naming the first violation."""
    k = _kind(kind)
    R = _lib.int32_arg("num_ranks", num_ranks)
    N = _lib.int32_arg("num_chunks", num_chunks)
    parsed = _parse(streams, R)
    ptrs, lengths = _arrays(parsed)
    v = PipeViolation()
    valid = ctypes.c_int32(0)
    _lib.lib().dinf_pipe_validate(k, R, N, ptrs, lengths, ctypes.byref(v), ctypes.byref(valid))
    if valid.value:
        return None
    return {"rank": v.rank, "op_index": v.op_index, "rule": v.rule.decode(errors="replace")}


def _costs(costs):
    c = dict(_README_COSTS)
    for key, value in (costs or {}).items():
        if key not in c:
            raise InvalidArgumentError("unknown cost %r (expected %s)" % (key, ", ".join(c)))
        c[key] = float(value)
    return PipeCosts(c["F"], c["B"], c["W"], c["FB"], c["latency"])


def _simulate(kind, num_ranks, num_chunks, streams, costs):
    if streams is None:
        k, R, N, parsed = _generate(kind, num_ranks, num_chunks, False)
    else:
        k = _kind(kind)
        R = _lib.int32_arg("num_ranks", num_ranks)
        N = _lib.int32_arg("num_chunks", num_chunks)
        parsed = _parse(streams, R)
    ptrs, lengths = _arrays(parsed)
    c = _costs(costs)
    busy = (ctypes.c_double * R)()
    bubble = (ctypes.c_double * R)()
    peak = (ctypes.c_int32 * R)()
    res = PipeSimResult(0, 0, 0, busy, bubble, peak)
    capacity = sum(n for _, n in parsed)
    events = (PipeEvent * max(capacity, 1))()
    n_events = ctypes.c_int64(0)
    _lib.lib().dinf_pipe_simulate(k, R, N, ptrs, lengths, ctypes.byref(c), ctypes.byref(res),
                                  events, capacity, ctypes.byref(n_events))
    summary = {
        "makespan": res.makespan,
        "max_bubble": res.max_bubble,
        "max_peak_activations": res.max_peak_activations,
        "busy": list(busy),
        "bubble": list(bubble),
        "peak_activations": list(peak),
    }
    return summary, events, n_events.value, R


def simulate(kind, num_ranks, num_chunks, streams=None, costs=None, events=False):
    """Run the streams (default: :func:`schedule`'s) in the idealised cost model
    of dinf_pipe_simulate. costs: dict with any of F, B, W, FB (an overlapped
    pair) and latency (defaults: the upstream README's F=1, B=2, W=1, FB=3,
    latency=0). Returns a dict with makespan, max_bubble,
    max_peak_activations and per-rank lists busy, bubble and
    peak_activations; with ``events=True`` also ``events``: one dict per
    compute op (rank, op_index, op, start, end)."""
    summary, evs, n, _ = _simulate(kind, num_ranks, num_chunks, streams, costs)
    if events:
        summary["events"] = [{"rank": e.rank, "op_index": e.op_index, "op": _format(e.op),
                              "start": e.start, "end": e.end} for e in evs[:n]]
    return summary


def _render(fn, events, n, R, title, *extra):
    written = ctypes.c_size_t(0)
    if title is not None and "\0" in title:
        raise InvalidArgumentError("title contains a NUL character")
    t = None if title is None else title.encode()
    fn(events, n, R, t, *extra, None, 0, ctypes.byref(written))
    buf = ctypes.create_string_buffer(written.value + 1)
    fn(events, n, R, t, *extra, buf, written.value + 1, ctypes.byref(written))
    return buf.value.decode()


def timeline_svg(kind, num_ranks, num_chunks, streams=None, costs=None, title=None):
    """The simulated timeline as an SVG document (str): ranks as rows, ops as
    boxes coloured by kind and labelled with the micro-batch."""
    _, evs, n, R = _simulate(kind, num_ranks, num_chunks, streams, costs)
    return _render(_lib.lib().dinf_pipe_render_svg, evs, n, R, title)


def chrome_trace(kind, num_ranks, num_chunks, streams=None, costs=None, title=None,
                 time_unit_us=1000.0):
    """The simulated timeline as Chrome trace JSON (str) for Perfetto or
    chrome://tracing; one cost unit lasts time_unit_us microseconds."""
    _, evs, n, R = _simulate(kind, num_ranks, num_chunks, streams, costs)
    return _render(_lib.lib().dinf_pipe_render_trace, evs, n, R, title, float(time_unit_us))


def split(batch_size, num_chunks):
    """tensor_split boundaries (dinf_pipe_split): micro-batch k of a batch of
    batch_size rows is rows ``[offsets[k], offsets[k + 1])`` of the returned
    list of num_chunks + 1 ints; the first ``batch_size % num_chunks``
    micro-batches get one extra row (``numpy.array_split``'s rule)."""
    b = _lib.int64_arg("batch_size", batch_size)
    n = _lib.int32_arg("num_chunks", num_chunks)
    offsets = (ctypes.c_int64 * (max(n, 0) + 1))()
    _lib.lib().dinf_pipe_split(b, n, offsets)
    return list(offsets)


class Msg(enum.IntEnum):
    """What a post_send / post_recv carries (dinf_pipe_msg)."""

    ACT = 0   #: the activation of (dir, mb): the forward's output
    GRAD = 1  #: the input-gradient of (dir, mb): the backward's output


class Task(typing.NamedTuple):
    """What one compute call is asked to do (dinf_pipe_task)."""

    rank: int          #: this rank
    dir: int           #: direction (dualpipe) or phase (dualpipev); 0 otherwise
    mb: int            #: micro-batch within the direction
    stage: int         #: global stage index of the module that runs
    module: int        #: local module slot: 0 or 1 (dualpipe, dualpipev), else 0
    first_stage: bool  #: the input is the engine's own micro-batch (row_offset ...)
    last_stage: bool   #: forward: compute the loss here; backward: start from it
    local_input: bool  #: forward: the input is this rank's own output of the other
    #: module for the same mb; backward: the output-gradient is this rank's own
    #: input-gradient of the other module (dualpipev, last rank)
    defer_weight_grad: bool  #: backward: input gradients now, the weight gradient
    #: in a later weight_grad call (zero-bubble split)
    row_offset: typing.Optional[int]  #: first row of the micro-batch in its direction's
    #: batch; None when the executor was made with batch_size=0
    row_count: typing.Optional[int]   #: its rows; None likewise


def _task(p):
    t = p.contents
    rows = t.row_count >= 0
    return Task(t.rank, t.dir, t.mb, t.stage, t.module, bool(t.first_stage), bool(t.last_stage),
                bool(t.local_input), bool(t.defer_weight_grad),
                t.row_offset if rows else None, t.row_count if rows else None)


_FAILURE_STATUSES = frozenset(int(s) for s in Status if s != Status.OK)


def _status_of(exc):
    """The dinf_status a failing callback hands the C executor for exc."""
    status = getattr(exc, "status", None) if isinstance(exc, DeepInfraError) else None
    if isinstance(status, int) and int(status) in _FAILURE_STATUSES:
        return int(status)
    if isinstance(exc, TimeoutError):
        return int(Status.TIMEOUT)
    if isinstance(exc, MemoryError):
        return int(Status.OUT_OF_MEMORY)
    return int(Status.INTERNAL)


class _Step:
    """What a step's callbacks share with step(): the first exception. The
    callbacks hold this, not the Executor, so an executor dropped without
    close() is freed at once (no reference cycle)."""

    __slots__ = ("error",)

    def __init__(self):
        self.error = None


def _trampoline(state, call, set_last_error):
    """call wrapped for C: 0 when it returns; when it raises, the exception
    kept in state (the first one of the step), its text set as the thread's
    dinf_last_error() and a failure status returned. Nothing in the handler
    may raise: an exception escaping a ctypes callback is printed and lost,
    and C would read an undefined status."""

    def run(*args):
        try:
            call(*args)
            return 0
        except BaseException as e:  # noqa: B902 - carried across C, re-raised by step()
            try:
                if state.error is None:
                    state.error = e
                status = _status_of(e)
            except BaseException:  # noqa: B902
                status = int(Status.INTERNAL)
            try:
                text = "%s: %s" % (type(e).__name__, e)
            except BaseException:  # noqa: B902 - a __str__ that raises
                text = "%s: <unprintable>" % type(e).__name__
            try:
                set_last_error(text.replace("\0", "\\0").encode("utf-8", "replace"))
            except BaseException:  # noqa: B902
                pass
            return status

    return run


#: engine method -> (ctypes function type, adapter of the C arguments); the
#: method's name is the dinf_pipe_callbacks field
_METHODS = {
    "forward": (_lib.PipeTaskFn, lambda fn: lambda user, t: fn(_task(t))),
    "backward": (_lib.PipeTaskFn, lambda fn: lambda user, t: fn(_task(t))),
    "weight_grad": (_lib.PipeTaskFn, lambda fn: lambda user, t: fn(_task(t))),
    "forward_backward": (_lib.PipeTaskPairFn,
                         lambda fn: lambda user, f, b: fn(_task(f), _task(b))),
    "post_send": (_lib.PipePostFn, lambda fn: lambda user, rank, msg, d, mb, peer:
                  fn(rank, Msg(msg), d, mb, peer)),
    "post_recv": (_lib.PipePostFn, lambda fn: lambda user, rank, msg, d, mb, peer:
                  fn(rank, Msg(msg), d, mb, peer)),
    "commit": (_lib.PipeCommitFn, lambda fn: lambda user, rank: fn(rank)),
}


class Executor:
    """One rank's pipeline executor (dinf_pipe_executor_create): it generates
    the rank's op stream with communication once, and each :meth:`step` runs
    it through the engine's methods, in stream order, on the calling thread.

    kind, num_ranks, num_chunks, rank: as :func:`schedule`. batch_size: rows
    of the batch each first stage splits into micro-batches (then every
    :class:`Task` carries its ``row_offset`` and ``row_count``, as
    :func:`split` gives them), or 0 if the engine splits itself.

    engine: an object with these methods (dinf_pipe_callbacks, less the user
    pointer); what they return is ignored, and an exception stops the step:

    ============================== =============================================
    ``forward(task)``              required
    ``backward(task)``             required; ``task.defer_weight_grad``: the
                                   weight gradient waits for weight_grad
    ``weight_grad(task)``          required where the schedule defers weight
                                   gradients (dualpipe, dualpipev, zb1p): the
                                   deferred backward's task, in FIFO order
    ``forward_backward(f, b)``     optional: the overlapped pair (otherwise
                                   forward(f), then backward(b))
    ``post_send(rank, msg, dir,    required for num_ranks > 1: post the send of
    mb, peer)``                    :class:`Msg` ``msg`` of (dir, mb) to peer;
                                   nothing may block until commit
    ``post_recv(rank, msg, dir,    required for num_ranks > 1: post the receive
    mb, peer)``                    from peer
    ``commit(rank)``               required for num_ranks > 1: run what was
                                   posted since the last commit and wait for it
    ============================== =============================================

    Every rank of the pipeline must step for a step to complete: one
    executor per rank, each stepped on its own thread (the library releases
    the GIL while it runs) or in its own process. An executor is stepped by
    one thread at a time. Close it with :meth:`close` or a ``with`` block.

        >>> with Executor("dualpipev", 1, 2, 0, engine, batch_size=8) as ex:
        ...     ex.step()                                  # doctest: +SKIP

    With torch.distributed, the communication methods are what upstream
    DualPipe does between its commits (one process per rank)::

        def post_send(self, rank, msg, dir, mb, peer):
            t = self.out[dir, mb] if msg == Msg.ACT else self.grad_in[dir, mb]
            self.ops.append(dist.P2POp(dist.isend, t, peer))

        def post_recv(self, rank, msg, dir, mb, peer):
            t = torch.empty(self.shape(dir, mb), device="cuda")
            (self.inp if msg == Msg.ACT else self.grad_out)[dir, mb] = t
            self.ops.append(dist.P2POp(dist.irecv, t, peer))

        def commit(self, rank):
            for req in dist.batch_isend_irecv(self.ops) if self.ops else []:
                req.wait()
            self.ops = []
    """

    def __init__(self, kind, num_ranks, num_chunks, rank, engine, batch_size=0):
        k = _kind(kind)
        R = _lib.int32_arg("num_ranks", num_ranks)
        N = _lib.int32_arg("num_chunks", num_chunks)
        r = _lib.int32_arg("rank", rank)
        b = _lib.int64_arg("batch_size", batch_size)
        self._handle = None
        self._lock = threading.Lock()
        self._step = _Step()
        self._engine = engine
        self.last_error = None
        cb = PipeCallbacks()
        cb.size = ctypes.sizeof(PipeCallbacks)
        cb.magic = _lib.PIPE_CALLBACKS_MAGIC
        self._keep = []  # the C function pointers live as long as the executor
        for name, (fntype, adapt) in _METHODS.items():
            method = getattr(engine, name, None)
            if method is None:
                continue
            if not callable(method):
                raise InvalidArgumentError("engine.%s is %s, not a method"
                                           % (name, type(method).__name__))
            c_fn = fntype(_trampoline(self._step, adapt(method), _lib.lib().dinf_set_last_error))
            self._keep.append(c_fn)
            setattr(cb, name, c_fn)
        self._callbacks = cb
        handle = ctypes.c_void_p()
        try:
            _lib.lib().dinf_pipe_executor_create(k, R, N, r, b, ctypes.byref(cb),
                                                 ctypes.byref(handle))
        except InvalidArgumentError as e:
            # the C rule names the struct field; here it is the engine's method
            msg = e.message
            for name in _METHODS:
                msg = msg.replace("callbacks->%s is NULL" % name, "the engine has no %s method" % name)
            raise InvalidArgumentError(msg, e.status) from None
        self._handle = handle.value
        self.kind, self.num_ranks, self.num_chunks, self.rank = k, R, N, r

    def step(self):
        """Run one training step: the rank's whole stream (commits, posts,
        compute ops, the deferred weight gradients).

        Raises the first exception an engine method raised (the step stops
        there), as it was raised; on Python 3.11+ with the library's account
        added as a note (``dinf_pipe_executor_step: rank 1 op 7 (B0.2):
        backward failed: ValueError: ...``). That account, as a
        DeepInfraError with the status the C executor returned (an engine's
        DeepInfraError: its own; TimeoutError: TIMEOUT; MemoryError:
        OUT_OF_MEMORY; anything else: INTERNAL), is also
        :attr:`last_error`, None after a step that succeeded. The executor
        stays usable for the next step. Raises InvalidArgumentError when
        closed or already stepping (another thread, or an engine method of
        this executor calling step())."""
        if not self._lock.acquire(blocking=False):
            raise InvalidArgumentError("Executor.step: rank %d is already stepping (an executor is "
                                       "stepped by one thread at a time)" % self.rank)
        try:
            if self._handle is None:
                raise InvalidArgumentError("Executor.step: the executor is closed")
            self._step.error = None
            failure = None
            try:
                _lib.lib().dinf_pipe_executor_step(self._handle)
            except DeepInfraError as e:
                failure = e
            err, self._step.error = self._step.error, None
            self.last_error = failure
        finally:
            self._lock.release()
        if err is None:
            if failure is not None:
                raise failure
            return
        note = failure.message if failure is not None else (
            "Executor.step: rank %d: an engine method raised this, but the step went on"
            % self.rank)
        if hasattr(err, "add_note") and note not in getattr(err, "__notes__", ()):
            err.add_note(note)  # Python 3.11+
        raise err  # outside the except block: its own context and cause stay as they were

    def close(self):
        """Free the executor (dinf_pipe_executor_destroy); closing twice is a no-op."""
        if not self._lock.acquire(blocking=False):
            raise InvalidArgumentError("Executor.close: rank %d is stepping" % self.rank)
        try:
            handle, self._handle = self._handle, None
            if handle is not None:
                _lib.lib().dinf_pipe_executor_destroy(handle)
        finally:
            self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None:
            self._handle = None
            try:
                _lib.lib().dinf_pipe_executor_destroy(handle)
            except Exception:  # interpreter shutdown
                pass
