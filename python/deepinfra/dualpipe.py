"""Pipeline schedules (DualPipe, DualPipeV, 1F1B, ZB1P): generate, validate,
simulate and draw them, backed by libdeepinfra (include/deepinfra/dualpipe.h).

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

from . import _lib
from ._lib import InvalidArgumentError, PipeCosts, PipeEvent, PipeOp, PipeSimResult, PipeViolation

__all__ = ["KINDS", "schedule", "validate", "simulate", "timeline_svg", "chrome_trace"]

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
