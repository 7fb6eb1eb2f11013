"""MoE expert-parallel dispatch and combine (DeepEP v1 API), backed by libdeepinfra.

Upstream's ``deep_ep.Buffer`` is one object per rank process; here a
:class:`Group` holds the in-process ranks of the CPU (threads) transport and
``group.buffers[r]`` is rank ``r``'s :class:`Buffer`, with upstream's method
names and return tuples::

    from deepinfra import ep
    group = ep.Group(num_ranks=4, max_hidden=7168, max_tokens_per_rank=128,
                     max_topk=8, max_num_experts=256)

    def step(buffer):                     # runs on one thread per rank
        (num_tokens_per_rank, _, num_tokens_per_expert,
         is_token_in_rank, _) = buffer.get_dispatch_layout(topk_idx, num_experts)
        recv_x, recv_topk_idx, recv_topk_weights, counts, handle, _ = buffer.dispatch(
            x, num_tokens_per_rank=num_tokens_per_rank, is_token_in_rank=is_token_in_rank,
            num_tokens_per_expert=num_tokens_per_expert, topk_idx=topk_idx,
            topk_weights=topk_weights)
        ...
        combined_x, combined_weights, _ = buffer.combine(y, handle, topk_weights=recv_topk_weights)

    results = group.run(step)             # one result per rank; the first error is raised

Every Buffer method is collective: all ranks call it (each from its own
thread; ctypes releases the GIL during the C call). A rank whose peers never
come fails after ``timeout_ms`` with :class:`deepinfra.DeepInfraTimeoutError`.
An argument this binding rejects on one rank (a bad shape or dtype, an
unsupported option) still makes that rank's collective C call, with a NULL
handle, so every rank fails the call at once (the others name the rank that
rejected its arguments) and the group stays usable, as the C contract says;
then the rank raises its own error.

Arrays are numpy arrays on the CPU: bfloat16 as ``ml_dtypes.bfloat16`` (or
``uint16`` bits), e4m3 as ``ml_dtypes.float8_e4m3fn`` (or ``uint8`` codes),
``topk_idx`` int64 with -1 for "no expert". Semantics (receive order,
unweighted normal combine, weighted low-latency combine, FP8 1x128 scales,
the masked low-latency layout) are documented in include/deepinfra/ep.h.
Upstream's async flags and previous events are accepted and ignored: the CPU
path is synchronous, so where upstream returns an ``EventOverlap`` this returns
an :class:`EventOverlap` that is already complete (``current_stream_wait()``
and ``with event:`` do nothing), and ``return_recv_hook=True`` returns a hook
that does nothing (the receive already happened). Handles index like
upstream's tuples (``handle[0]`` is the rank prefix matrix; entries this
design does not have are ``None``). ``num_tokens_per_rdma_rank`` is always
``None`` (one level of ranks).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import weakref

import numpy as np

from . import _lib
from ._lib import DType, EpConfig, Exec, InvalidArgumentError

try:  # ml_dtypes is optional: without it, bits are returned as uint16 / uint8.
    import ml_dtypes as _ml

    _BF16 = np.dtype(_ml.bfloat16)
    _E4M3 = np.dtype(_ml.float8_e4m3fn)
except ImportError:  # pragma: no cover
    _BF16 = np.dtype(np.uint16)
    _E4M3 = np.dtype(np.uint8)

__all__ = ["Group", "Buffer", "Handle", "LowLatencyHandle", "EventOverlap",
           "get_dispatch_layout"]

DEFAULT_TIMEOUT_MS = 100000


def _fail(msg):
    raise InvalidArgumentError(msg)


def _ptr(a, ctype):
    return None if a is None else a.ctypes.data_as(ctypes.POINTER(ctype))


def _vptr(a):
    return None if a is None else ctypes.c_void_p(a.ctypes.data)


def _bf16(x, name, ndim):
    x = np.asarray(x)
    if x.dtype not in (_BF16, np.dtype(np.uint16)):
        _fail("%s must be bfloat16 (ml_dtypes) or uint16 bits, got %s" % (name, x.dtype))
    if x.ndim != ndim:
        _fail("%s must be %d-D, got shape %s" % (name, ndim, x.shape))
    return np.ascontiguousarray(x).view(np.uint16)


def _e4m3(x, name):
    x = np.asarray(x)
    if x.dtype not in (_E4M3, np.dtype(np.uint8)):
        _fail("%s must be float8_e4m3fn (ml_dtypes) or uint8 codes, got %s" % (name, x.dtype))
    if x.ndim != 2:
        _fail("%s must be 2-D, got shape %s" % (name, x.shape))
    return np.ascontiguousarray(x).view(np.uint8)


def _topk(topk_idx):
    t = np.asarray(topk_idx)
    if t.dtype.kind not in "iu" or t.ndim != 2:
        _fail("topk_idx must be a 2-D integer array, got %s %s" % (t.dtype, t.shape))
    return np.ascontiguousarray(t, dtype=np.int64)


def _f32(x, name, shape):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape != tuple(shape):
        _fail("%s must have shape %s, got %s" % (name, tuple(shape), x.shape))
    return x


class EventOverlap:
    """Upstream's ``deep_ep.EventOverlap`` for a call that has already
    completed (every call here is synchronous): waiting does nothing."""

    def __init__(self):
        self.event = None
        self.extra_tensors = None

    def current_stream_wait(self):
        """Make the current stream wait for the event: nothing to wait for."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        return False


def _recv_hook():
    """The receive half of a low-latency call made with return_recv_hook=True:
    the data has already arrived, so calling it does nothing."""


def get_dispatch_layout(topk_idx, num_experts, num_ranks, *, num_threads=0):
    """(num_tokens_per_rank int32 [R], None, num_tokens_per_expert int32 [E],
    is_token_in_rank bool [N, R], EventOverlap): upstream's layout (None stands
    for num_tokens_per_rdma_rank: one level of ranks)."""
    t = _topk(topk_idx)
    n, k = t.shape
    per_rank = np.empty((_lib.int32_arg("num_ranks", num_ranks),), np.int32)
    per_expert = np.empty((max(_lib.int32_arg("num_experts", num_experts), 0),), np.int32)
    in_rank = np.empty((n, num_ranks), np.uint8)
    _lib.lib().dinf_ep_get_dispatch_layout(
        _ptr(t, ctypes.c_int64), n, k, num_experts, num_ranks, _ptr(per_rank, ctypes.c_int32),
        _ptr(per_expert, ctypes.c_int32), _ptr(in_rank, ctypes.c_uint8),
        ctypes.byref(Exec.cpu(num_threads)))
    return per_rank, None, per_expert, in_rank.view(np.bool_), EventOverlap()


class Group:
    """An in-process expert-parallel group of ``num_ranks`` ranks on the CPU
    (the threads transport). ``buffers[r]`` is rank r's :class:`Buffer`."""

    def __init__(self, num_ranks, *, max_hidden, max_tokens_per_rank, max_topk,
                 max_num_experts, timeout_ms=DEFAULT_TIMEOUT_MS, num_threads_per_rank=0):
        cfg = EpConfig(ctypes.sizeof(EpConfig), _lib.int32_arg("max_hidden", max_hidden),
                       _lib.int64_arg("max_tokens_per_rank", max_tokens_per_rank),
                       _lib.int32_arg("max_topk", max_topk),
                       _lib.int32_arg("max_num_experts", max_num_experts),
                       _lib.int64_arg("timeout_ms", timeout_ms),
                       _lib.int32_arg("num_threads_per_rank", num_threads_per_rank), 0)
        num_ranks = _lib.int32_arg("num_ranks", num_ranks)
        if num_ranks < 1 or num_ranks > 1024:
            _fail("num_ranks=%d must be in [1, 1024]" % num_ranks)
        ptrs = (ctypes.c_void_p * num_ranks)()
        _lib.lib().dinf_ep_group_create_threads(num_ranks, ctypes.byref(cfg), ptrs)
        self.num_ranks = num_ranks
        self.config = cfg
        self.buffers = [Buffer(self, r, ptrs[r]) for r in range(num_ranks)]

    def run(self, fn, *args):
        """Call fn(buffers[r], *args) on one thread per rank; return the list of
        results. If any rank raised, the exception of the lowest such rank is
        re-raised after every thread has finished."""
        results = [None] * self.num_ranks
        errors = [None] * self.num_ranks

        def main(r):
            try:
                results[r] = fn(self.buffers[r], *args)
            except BaseException as exc:  # re-raised on the caller's thread
                errors[r] = exc

        threads = [threading.Thread(target=main, args=(r,)) for r in range(self.num_ranks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e in errors:
            if e is not None:
                raise e
        return results


def _destroy(fn, ptr, _owner):
    fn(ptr)


class Handle:
    """A normal-mode dispatch's routes (upstream's ``handle``): pass it to
    :meth:`Buffer.combine` and to cached :meth:`Buffer.dispatch` calls.
    Indexes and unpacks as upstream's intranode 6-tuple (rank_prefix_matrix
    int32 [R, R], channel_prefix_matrix, recv_channel_prefix_matrix,
    recv_src_idx int32 [num_recv], is_token_in_rank bool [N, R], send_head),
    with None for the channel and send-head entries, which this design does
    not have. The same arrays are attributes, with num_recv_tokens."""

    def __init__(self, buffer, ptr):
        self._ptr = ptr
        self._buffer = buffer  # the endpoint outlives its handles
        self._finalizer = weakref.finalize(self, _destroy, _lib.lib().dinf_ep_handle_destroy,
                                           ptr, buffer)
        self.num_tokens = 0
        self.num_topk = 0
        self.num_recv_tokens = 0
        self.rank_prefix_matrix = None
        self.recv_src_idx = None
        self.is_token_in_rank = None

    def _tuple(self):
        return (self.rank_prefix_matrix, None, None, self.recv_src_idx, self.is_token_in_rank,
                None)

    def __len__(self):
        return 6

    def __getitem__(self, index):
        return self._tuple()[index]

    def __iter__(self):  # unpacks like upstream's tuple
        return iter(self._tuple())


class LowLatencyHandle:
    """A low-latency dispatch's state: indexes and unpacks as upstream's
    5-tuple ``(src_info int32 [L, R*T], layout_range int64 [L, R],
    num_max_dispatch_tokens_per_rank, hidden, num_experts)``; the same values
    are attributes."""

    def __init__(self, buffer, ptr):
        self._ptr = ptr
        self._buffer = buffer
        self._finalizer = weakref.finalize(self, _destroy, _lib.lib().dinf_ep_ll_handle_destroy,
                                           ptr, buffer)
        self.src_info = None
        self.layout_range = None
        self.num_max_dispatch_tokens_per_rank = 0
        self.hidden = 0
        self.num_experts = 0

    def _tuple(self):
        return (self.src_info, self.layout_range, self.num_max_dispatch_tokens_per_rank,
                self.hidden, self.num_experts)

    def __len__(self):
        return 5

    def __getitem__(self, index):
        return self._tuple()[index]

    def __iter__(self):  # unpacks like upstream's tuple
        return iter(self._tuple())


class Buffer:
    """One rank's endpoint with upstream ``deep_ep.Buffer``'s methods."""

    def __init__(self, group, rank, ptr):
        self.group = group
        self.rank = rank
        self.group_size = group.num_ranks
        self._ptr = ctypes.c_void_p(ptr)
        self._finalizer = weakref.finalize(self, _lib.lib().dinf_ep_group_destroy, self._ptr)

    def _exec(self):
        return ctypes.byref(Exec.cpu(0))

    # Python-side argument errors on one rank. The rank still makes the C
    # call its peers are making (same operation, same step) with a NULL
    # handle: the C checks reject it before anything moves and the
    # agreement step fails the call on EVERY rank at once, without breaking
    # the group; then the rank's own error is raised.
    def _fail_collective(self, op):
        lib, ex = _lib.lib(), self._exec()
        bf16 = DType.BFLOAT16
        calls = {
            "notify": lambda: lib.dinf_ep_notify_dispatch(
                self._ptr, None, 0, 1, 1, None, None, None, 1, None, None, None, ex),
            "dispatch": lambda: lib.dinf_ep_dispatch(
                self._ptr, None, None, bf16, None, 1, None, None, bf16, None, None, None, None,
                None, 0, ex),
            "combine": lambda: lib.dinf_ep_combine(
                self._ptr, None, None, 1, None, None, None, None, None, ex),
            "low_latency_dispatch": lambda: lib.dinf_ep_low_latency_dispatch(
                self._ptr, None, 0, 128, None, 1, 1, 1, 0, None, None, None, None, None, None,
                ex),
            "low_latency_combine": lambda: lib.dinf_ep_low_latency_combine(
                self._ptr, None, 128, None, None, 0, 1, None, None, ex),
        }
        try:
            calls[op]()
        except _lib.DeepInfraError:
            return  # expected: rejected here, and on every peer
        raise _lib.DeepInfraError(  # pragma: no cover - a NULL handle is always rejected
            "internal error: the failing %s call was accepted" % op)

    @contextlib.contextmanager
    def _checks(self, op):
        """Run the Python-side checks (and allocations) of collective op; if
        they raise, fail op on every rank first (see _fail_collective)."""
        try:
            yield
        except Exception:
            self._fail_collective(op)
            raise

    def barrier(self):
        _lib.lib().dinf_ep_group_barrier(self._ptr)

    def get_dispatch_layout(self, topk_idx, num_experts, previous_event=None,
                            async_finish=False, allocate_on_comm_stream=False):
        """Not collective: upstream's layout of this rank's topk_idx."""
        return get_dispatch_layout(topk_idx, num_experts, self.group_size)

    # ------------------------------------------ upstream's no-op settings --
    @staticmethod
    def set_num_sms(new_num_sms):
        """Upstream sets the SMs of the normal kernels; the CPU path has none."""

    @staticmethod
    def capture():
        """An event on the current stream: complete at once here."""
        return EventOverlap()

    @staticmethod
    def get_dispatch_config(num_ranks):
        """Upstream's tuned kernel config; None here (config= is ignored)."""
        return None

    @staticmethod
    def get_combine_config(num_ranks):
        """Upstream's tuned kernel config; None here (config= is ignored)."""
        return None

    @staticmethod
    def get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank, hidden, num_ranks,
                                       num_experts):
        """Bytes of symmetric memory per rank for low-latency mode on a
        peer-store GPU transport (dinf_ep_symmetric_buffer_bytes); the threads
        transport itself allocates none."""
        cfg = EpConfig(ctypes.sizeof(EpConfig), _lib.int32_arg("hidden", hidden),
                       _lib.int64_arg("num_max_dispatch_tokens_per_rank",
                                      num_max_dispatch_tokens_per_rank),
                       1, _lib.int32_arg("num_experts", num_experts), 0, 0, 0)
        ll = ctypes.c_size_t()
        _lib.lib().dinf_ep_symmetric_buffer_bytes(ctypes.byref(cfg),
                                                  _lib.int32_arg("num_ranks", num_ranks), None,
                                                  ctypes.byref(ll))
        return ll.value

    def clean_low_latency_buffer(self, num_max_dispatch_tokens_per_rank, hidden, num_experts):
        """Upstream zeroes its receive signals; there are none to clean here."""

    # ------------------------------------------------------------- normal --
    def dispatch(self, x, handle=None, num_tokens_per_rank=None, num_tokens_per_rdma_rank=None,
                 is_token_in_rank=None, num_tokens_per_expert=None, topk_idx=None,
                 topk_weights=None, expert_alignment=1, num_worst_tokens=0, config=None,
                 previous_event=None, async_finish=False, allocate_on_comm_stream=False, *,
                 use_fp8=False, num_experts=None):
        """(recv_x, recv_topk_idx, recv_topk_weights, num_recv_tokens_per_expert_list,
        handle, event). x is bfloat16 [N, H], or a tuple (e4m3 [N, H], float32 scales
        [N, H/128]); use_fp8=True quantizes a bfloat16 x on the send side (1x128).
        FP8 recv_x is a tuple (e4m3 [num_recv, H], scales [num_recv, H/128]).
        Cached mode: pass handle (and no topk_idx); it returns (recv_x, None, None,
        None, None, event) as upstream. Without the layout arrays (upstream always
        passes them) give num_experts. expert_alignment must be the same on every
        rank."""
        lib = _lib.lib()
        cached = handle is not None
        with self._checks("dispatch" if cached else "notify"):
            if num_worst_tokens:
                _fail("num_worst_tokens is not supported: receive buffers are sized exactly")
            if isinstance(x, tuple):
                xq, xs = x
                xq = _e4m3(xq, "x[0]")
                n, hidden = xq.shape
                xs = _f32(xs, "x[1]", (n, hidden // 128))
                x_ptr, x_dtype, xs_ptr, recv_fp8 = _vptr(xq), DType.FP8_E4M3, xs, True
            else:
                xb = _bf16(x, "x", 2)
                n, hidden = xb.shape
                x_ptr, x_dtype, xs_ptr, recv_fp8 = _vptr(xb), DType.BFLOAT16, None, bool(use_fp8)
            if cached:
                if topk_idx is not None or topk_weights is not None:
                    _fail("cached dispatch (handle given) takes no topk_idx / topk_weights")
                if not isinstance(handle, Handle) or handle._buffer is not self:
                    _fail("handle was not made by this rank's dispatch")
                if n != handle.num_tokens:
                    _fail("x has %d tokens, the handle %d" % (n, handle.num_tokens))
                k = handle.num_topk
            else:
                if topk_idx is None:
                    _fail("topk_idx is required without a handle")
                t = _topk(topk_idx)
                if t.shape[0] != n:
                    _fail("topk_idx has %d rows, x %d" % (t.shape[0], n))
                k = t.shape[1]
                w = None if topk_weights is None else _f32(topk_weights, "topk_weights",
                                                           t.shape)
                layout = (num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank)
                if any(a is None for a in layout) and any(a is not None for a in layout):
                    _fail("num_tokens_per_rank, num_tokens_per_expert and is_token_in_rank go "
                          "together")
                pr = pe = ir = None
                if layout[0] is not None:
                    pr = np.ascontiguousarray(num_tokens_per_rank, dtype=np.int32)
                    pe = np.ascontiguousarray(num_tokens_per_expert, dtype=np.int32)
                    ir = np.ascontiguousarray(is_token_in_rank, dtype=np.uint8)
                    if pr.shape != (self.group_size,) or ir.shape != (n, self.group_size):
                        _fail("layout arrays have shapes %s / %s, expected (%d,) / (%d, %d)"
                              % (pr.shape, ir.shape, self.group_size, n, self.group_size))
                if pe is not None:
                    num_experts = pe.shape[0]
                elif num_experts is None:
                    _fail("pass the layout arrays of get_dispatch_layout or num_experts")
                num_experts = _lib.int32_arg("num_experts", num_experts)
                alignment = _lib.int32_arg("expert_alignment", expert_alignment)
                raw = ctypes.c_void_p()
                lib.dinf_ep_handle_create(self._ptr, ctypes.byref(raw))
                handle = Handle(self, raw.value)
                num_recv = ctypes.c_int64()
                local = num_experts // self.group_size if num_experts else 0
                counts = np.zeros((max(local, 0),), np.int32)
        if not cached:
            lib.dinf_ep_notify_dispatch(
                self._ptr, _ptr(t, ctypes.c_int64), n, k, num_experts, _ptr(pr, ctypes.c_int32),
                _ptr(pe, ctypes.c_int32), _ptr(ir, ctypes.c_uint8), alignment, handle._ptr,
                ctypes.byref(num_recv), _ptr(counts, ctypes.c_int32), self._exec())
        with self._checks("dispatch"):
            if not cached:
                handle.num_tokens, handle.num_topk = n, k
                handle.num_recv_tokens = num_recv.value
                rpm = np.empty((self.group_size, self.group_size), np.int32)
                lib.dinf_ep_handle_info(handle._ptr, None, None, None, None,
                                        _ptr(rpm, ctypes.c_int32), None)
                handle.rank_prefix_matrix = rpm
                if ir is None:  # the notify accepted topk_idx: its layout is valid
                    ir = get_dispatch_layout(t, num_experts, self.group_size)[3]
                handle.is_token_in_rank = ir.view(np.bool_)
                handle.num_recv_tokens_per_expert_list = counts.tolist()
            nr = handle.num_recv_tokens
            if recv_fp8:
                recv_x = np.empty((nr, hidden), np.uint8)
                recv_s = np.empty((nr, hidden // 128 if hidden % 128 == 0 else 0), np.float32)
            else:
                recv_x = np.empty((nr, hidden), np.uint16)
                recv_s = None
            recv_topk = None if cached else np.empty((nr, k), np.int64)
            recv_w = None if cached or topk_weights is None else np.empty((nr, k), np.float32)
            recv_src = np.empty((nr,), np.int32)
        lib.dinf_ep_dispatch(
            self._ptr, handle._ptr, x_ptr, x_dtype, _ptr(xs_ptr, ctypes.c_float), hidden,
            None if cached else _ptr(t, ctypes.c_int64),
            None if cached else _ptr(w, ctypes.c_float),
            DType.FP8_E4M3 if recv_fp8 else DType.BFLOAT16, _vptr(recv_x),
            _ptr(recv_s, ctypes.c_float), _ptr(recv_topk, ctypes.c_int64),
            _ptr(recv_w, ctypes.c_float), _ptr(recv_src, ctypes.c_int32), nr, self._exec())
        if not cached:
            handle.recv_src_idx = recv_src
        out_x = (recv_x.view(_E4M3), recv_s) if recv_fp8 else recv_x.view(_BF16)
        if cached:
            return out_x, None, None, None, None, EventOverlap()
        return (out_x, recv_topk, recv_w, list(handle.num_recv_tokens_per_expert_list), handle,
                EventOverlap())

    def combine(self, x, handle, topk_weights=None, bias=None, config=None, previous_event=None,
                async_finish=False, allocate_on_comm_stream=False):
        """(combined_x bfloat16 [N, H], combined_topk_weights or None, event): the sum
        without weights, in fp32 starting at bias0 + bias1, then the ranks' rows
        ascending, one rounding (upstream's order)."""
        with self._checks("combine"):
            if not isinstance(handle, Handle) or handle._buffer is not self:
                _fail("handle was not made by this rank's dispatch")
            xb = _bf16(x, "x", 2)
            nr, hidden = xb.shape
            if nr != handle.num_recv_tokens:
                _fail("x has %d rows; the dispatch received %d" % (nr, handle.num_recv_tokens))
            n, k = handle.num_tokens, handle.num_topk
            w = None if topk_weights is None else _f32(topk_weights, "topk_weights", (nr, k))
            biases = [] if bias is None else (list(bias) if isinstance(bias, (tuple, list))
                                              else [bias])
            if len(biases) > 2:
                _fail("bias takes at most two arrays, got %d" % len(biases))
            biases = [_bf16(b, "bias", 2) for b in biases]
            for b in biases:
                if b.shape != (n, hidden):
                    _fail("bias must have shape (%d, %d), got %s" % (n, hidden, b.shape))
            biases += [None] * (2 - len(biases))
            out = np.empty((n, hidden), np.uint16)
            out_w = None if w is None else np.empty((n, k), np.float32)
        _lib.lib().dinf_ep_combine(
            self._ptr, handle._ptr, _ptr(xb, ctypes.c_uint16), hidden, _ptr(w, ctypes.c_float),
            _ptr(biases[0], ctypes.c_uint16), _ptr(biases[1], ctypes.c_uint16),
            _ptr(out, ctypes.c_uint16), _ptr(out_w, ctypes.c_float), self._exec())
        return out.view(_BF16), out_w, EventOverlap()

    # -------------------------------------------------------- low latency --
    def low_latency_dispatch(self, x, topk_idx, num_max_dispatch_tokens_per_rank, num_experts,
                             cumulative_local_expert_recv_stats=None,
                             dispatch_wait_recv_cost_stats=None, use_fp8=True,
                             round_scale=False, use_ue8m0=False, async_finish=False,
                             return_recv_hook=False):
        """(recv_x, recv_count, handle, event, hook). recv_x is bfloat16
        [L, R*T, H] or, with use_fp8, (e4m3 [L, R*T, H], float32 scales
        [L, R*T, H/128] as a view of the M-major [L, H/128, ceil(R*T/4)*4] array
        the masked FP8 GEMM consumes). hook is None, or with return_recv_hook a
        callable that does nothing (the data has arrived)."""
        lib = _lib.lib()
        with self._checks("low_latency_dispatch"):
            if round_scale or use_ue8m0:
                _fail("round_scale / use_ue8m0 (UE8M0 scales) are not supported")
            xb = _bf16(x, "x", 2)
            t = _topk(topk_idx)
            n, hidden = xb.shape
            if t.shape[0] != n:
                _fail("topk_idx has %d rows, x %d" % (t.shape[0], n))
            k = t.shape[1]
            T = _lib.int64_arg("num_max_dispatch_tokens_per_rank",
                               num_max_dispatch_tokens_per_rank)
            E = _lib.int32_arg("num_experts", num_experts)
            R = self.group_size
            if E < R or E % R or T < 1:
                _fail("num_experts=%d must be a positive multiple of num_ranks=%d and "
                      "num_max_dispatch_tokens_per_rank=%d >= 1" % (E, R, T))
            L, M = E // R, R * T
            raw = ctypes.c_void_p()
            lib.dinf_ep_ll_handle_create(self._ptr, ctypes.byref(raw))
            handle = LowLatencyHandle(self, raw.value)
            if use_fp8:
                rows = ctypes.c_int64()
                lib.dinf_ep_ll_scale_rows(R, T, ctypes.byref(rows))
                recv_x = np.empty((L, M, hidden), np.uint8)
                scales = np.empty((L, hidden // 128, rows.value), np.float32)
            else:
                recv_x = np.empty((L, M, hidden), np.uint16)
                scales = None
            count = np.empty((L,), np.int32)
            src_info = np.empty((L, M), np.int32)
            layout_range = np.empty((L, R), np.int64)
        lib.dinf_ep_low_latency_dispatch(
            self._ptr, _ptr(xb, ctypes.c_uint16), n, hidden, _ptr(t, ctypes.c_int64), k, E, T,
            1 if use_fp8 else 0, _vptr(recv_x), _ptr(scales, ctypes.c_float),
            _ptr(count, ctypes.c_int32), _ptr(src_info, ctypes.c_int32),
            _ptr(layout_range, ctypes.c_int64), handle._ptr, self._exec())
        handle.src_info, handle.layout_range = src_info, layout_range
        handle.num_max_dispatch_tokens_per_rank, handle.hidden, handle.num_experts = T, hidden, E
        handle.num_tokens, handle.num_topk = n, k
        if cumulative_local_expert_recv_stats is not None:
            cumulative_local_expert_recv_stats += count
        if use_fp8:
            out = (recv_x.view(_E4M3), scales.transpose(0, 2, 1)[:, :M, :])
            handle.packed_scales = scales
        else:
            out = recv_x.view(_BF16)
        return out, count, handle, EventOverlap(), _recv_hook if return_recv_hook else None

    def low_latency_combine(self, x, topk_idx, topk_weights, handle, use_logfmt=False,
                            zero_copy=False, async_finish=False, return_recv_hook=False,
                            out=None, combine_wait_recv_cost_stats=None):
        """(combined_x bfloat16 [N, H], event, hook): sum over k of
        topk_weights[t, k] * x[row of (t, k)] in fp32 (a rounded multiply, then
        a rounded add: no FMA), one rounding. hook as in low_latency_dispatch."""
        with self._checks("low_latency_combine"):
            if use_logfmt or zero_copy:
                _fail("use_logfmt / zero_copy are not supported")
            if not isinstance(handle, LowLatencyHandle) or handle._buffer is not self:
                _fail("handle was not made by this rank's low_latency_dispatch")
            xb = _bf16(x, "x", 3)
            t = _topk(topk_idx)
            n, k = t.shape
            w = _f32(topk_weights, "topk_weights", (n, k))
            R = self.group_size
            L, M = handle.num_experts // R, R * handle.num_max_dispatch_tokens_per_rank
            if xb.shape != (L, M, handle.hidden):
                _fail("x must have shape (%d, %d, %d), got %s" % (L, M, handle.hidden,
                                                                  xb.shape))
            if out is None:
                out = np.empty((n, handle.hidden), np.uint16)
            else:
                out = np.asarray(out)
                if out.shape != (n, handle.hidden) or \
                        out.dtype not in (_BF16, np.dtype(np.uint16)) or \
                        not out.flags.c_contiguous:
                    _fail("out must be a contiguous bfloat16 (%d, %d) array" % (n,
                                                                               handle.hidden))
                out = out.view(np.uint16)
        _lib.lib().dinf_ep_low_latency_combine(
            self._ptr, _ptr(xb, ctypes.c_uint16), handle.hidden, _ptr(t, ctypes.c_int64),
            _ptr(w, ctypes.c_float), n, k, handle._ptr, _ptr(out, ctypes.c_uint16),
            self._exec())
        return out.view(_BF16), EventOverlap(), _recv_hook if return_recv_hook else None
