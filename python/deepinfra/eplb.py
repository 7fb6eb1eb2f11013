"""Expert-parallel load balancing (DeepSeek EPLB), backed by libdeepinfra.

Drop-in for upstream ``eplb.rebalance_experts`` (deepseek-ai/EPLB)::

    from deepinfra.eplb import rebalance_experts
    phy2log, log2phy, logcnt = rebalance_experts(weight, num_replicas, num_groups,
                                                 num_nodes, num_gpus)

The results are exactly upstream's for the same float32 weights (see
include/deepinfra/eplb.h, THE CONTRACT), returned as int64 numpy arrays
instead of torch tensors. Sizes used below:

    L  num_layers           rows of ``weight``
    E  num_logical_experts  columns of ``weight``
    R  num_replicas         physical expert slots per layer
    G  num_groups, N num_nodes, P num_gpus; slot x lives on GPU x // (R // P),
       GPU g on node g // (P // N).

Inputs: ``weight`` is any 2-D real numeric array-like (numpy array of any
integer/float dtype, nested lists, a CPU or CUDA torch tensor) and is
converted to C-contiguous float32, as upstream's ``.float()`` does. Plans
(``phy2log``) are 2-D integer array-likes, converted to int64. Every size is
a Python int (or numpy integer) that must fit in int64; the C library checks
the rules (R >= E, R % P == 0, ...) and its message is carried by the
raised :class:`~deepinfra.InvalidArgumentError`.
"""

from __future__ import annotations

import ctypes
import numbers

import numpy as np

from . import _lib
from ._lib import EPLB_OPTIONS_MAGIC, EplbBalanceSummary, EplbOptions, InvalidArgumentError
from ._lib import OutOfMemoryError, int64_arg

__all__ = [
    "rebalance_experts",
    "rebalance_incremental",
    "balance_report",
    "max_logcnt_bound",
]

_P_I64 = ctypes.POINTER(ctypes.c_int64)
_P_F32 = ctypes.POINTER(ctypes.c_float)
_P_F64 = ctypes.POINTER(ctypes.c_double)


# --------------------------------------------------------------------------
# Argument conversion
# --------------------------------------------------------------------------


def _from_tensor(x, to_float):
    """A torch-like tensor (duck-typed; torch is never imported) as numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):
        x = x.detach().cpu()
        if to_float and hasattr(x, "float"):
            x = x.float()  # as upstream; also makes bfloat16 tensors convertible
        x = x.numpy()
    return x


def _asarray(x, name):
    try:
        return np.asarray(x)
    except (ValueError, TypeError, OverflowError) as e:
        raise InvalidArgumentError("%s is not a numeric array: %s" % (name, e)) from None


def _c_array(a, dtype):
    """``a`` as a C-contiguous, 8-byte aligned array of ``dtype`` (copy if needed)."""
    a = np.require(a, dtype=dtype, requirements=["C", "A"])
    if a.ctypes.data % 8:
        a = a.copy()
    return a


def _is_ml_dtypes_float(dtype):
    return dtype.kind == "V" and getattr(dtype.type, "__module__", "").startswith("ml_dtypes")


def _weight_array(weight, name="weight"):
    """weight -> float32 [L][E] C-contiguous numpy array."""
    a = _asarray(_from_tensor(weight, to_float=True), name)
    if not (a.dtype.kind in "biuf" or _is_ml_dtypes_float(a.dtype)):
        raise InvalidArgumentError(
            "%s has dtype %s; expected a real numeric dtype (integer or floating)" % (name, a.dtype)
        )
    if a.ndim != 2:
        raise InvalidArgumentError(
            "%s must be 2-D [num_layers, num_logical_experts], got shape %s" % (name, a.shape)
        )
    # Values beyond float32 become inf, which the library rejects with a message.
    with np.errstate(over="ignore", invalid="ignore"):
        return _c_array(a, np.float32)


def _plan_array(plan, name):
    """An integer plan (e.g. phy2log [L][R]) -> int64 2-D C-contiguous numpy array."""
    a = _asarray(_from_tensor(plan, to_float=False), name)
    if a.dtype.kind not in "iu":
        raise InvalidArgumentError("%s has dtype %s; expected an integer dtype" % (name, a.dtype))
    if a.ndim != 2:
        raise InvalidArgumentError(
            "%s must be 2-D [num_layers, num_replicas], got shape %s" % (name, a.shape)
        )
    if a.dtype.kind == "u" and a.size and int(a.max()) > _lib.INT64_MAX:
        raise InvalidArgumentError("%s has a value %d that does not fit in int64" % (name, int(a.max())))
    return _c_array(a, np.int64)


def _empty(shape, dtype, name):
    """np.empty with the library's rule on sizes: the byte size must fit in int64."""
    count = 1
    for n in shape:
        count *= n
    nbytes = count * np.dtype(dtype).itemsize
    if nbytes > _lib.INT64_MAX:
        raise InvalidArgumentError(
            "%s of shape %s would take %d bytes, more than fits in int64" % (name, tuple(shape), nbytes)
        )
    try:
        return np.empty(shape, dtype=dtype)
    except (MemoryError, ValueError) as e:
        raise OutOfMemoryError("cannot allocate %s of shape %s: %s" % (name, tuple(shape), e)) from None


def _options(distinct_experts_per_gpu):
    """A dinf_eplb_options (kept alive by the caller) or None for the defaults."""
    d = distinct_experts_per_gpu
    if isinstance(d, (bool, np.bool_)):
        d = bool(d)
    elif isinstance(d, numbers.Integral) and int(d) in (0, 1):
        d = bool(int(d))
    else:
        raise InvalidArgumentError("distinct_experts_per_gpu=%r must be a bool" % (d,))
    if not d:
        return None
    return EplbOptions(ctypes.sizeof(EplbOptions), EPLB_OPTIONS_MAGIC, 1, 0)


def _opt_ptr(opts):
    return None if opts is None else ctypes.byref(opts)


def _tolerance(tolerance):
    if isinstance(tolerance, (bool, np.bool_)) or not isinstance(tolerance, numbers.Real):
        raise InvalidArgumentError("tolerance=%r must be a real number" % (tolerance,))
    return float(tolerance)


def _ptr(a, ptype):
    return None if a is None else a.ctypes.data_as(ptype)


def _sizes(num_replicas, num_groups, num_nodes, num_gpus):
    return (
        int64_arg("num_replicas", num_replicas),
        int64_arg("num_groups", num_groups),
        int64_arg("num_nodes", num_nodes),
        int64_arg("num_gpus", num_gpus),
    )


def _check_sizes_for(entry_point, check, *args):
    """Run a size check (a *_bound or *_workspace_size call, which applies the
    same rules as entry_point) before outputs are allocated; on failure the
    error names entry_point, the function the caller's request maps to."""
    try:
        check(*args)
    except InvalidArgumentError as e:
        prefix = check.__name__ + ": "
        if e.message.startswith(prefix):
            raise type(e)(entry_point + ": " + e.message[len(prefix):], e.status) from None
        raise


def _log2phy(phy2log, phy_replica, L, E, R, width):
    """log2phy int64 [L][E][width] of a plan (dinf_eplb_log2phy)."""
    log2phy = _empty((L, E, width), np.int64, "log2phy")
    _lib.lib().dinf_eplb_log2phy(
        _ptr(phy2log, _P_I64), _ptr(phy_replica, _P_I64), L, E, R, None,
        _ptr(log2phy, _P_I64), width, None,
    )
    return log2phy


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def max_logcnt_bound(num_logical_experts, num_replicas, num_groups, num_nodes, num_gpus, *,
                     distinct_experts_per_gpu=False):
    """Upper bound on the replica count of any expert (the width of log2phy)
    that :func:`rebalance_experts` can return for this size, known before
    planning (dinf_eplb_max_logcnt_bound): R/N - E/N + 1 for the hierarchical
    policy, R - E + 1 for the global one, further capped by the GPUs an expert
    can spread over with ``distinct_experts_per_gpu``.

    Returns an int. Raises InvalidArgumentError if the size breaks a rule.
    """
    E = int64_arg("num_logical_experts", num_logical_experts)
    R, G, N, P = _sizes(num_replicas, num_groups, num_nodes, num_gpus)
    opts = _options(distinct_experts_per_gpu)
    bound = ctypes.c_int64(0)
    _lib.lib().dinf_eplb_max_logcnt_bound(E, R, G, N, P, _opt_ptr(opts), ctypes.byref(bound))
    return int(bound.value)


def rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus, *,
                      distinct_experts_per_gpu=False):
    """Replication and placement plan of DeepSeek EPLB (upstream ``rebalance_experts``).

    Args:
        weight: [L, E] load of each logical expert of each layer; any real
            numeric 2-D array-like (converted to float32). Values must be
            finite and >= 0.
        num_replicas: R, physical expert slots per layer (R >= E, R % P == 0).
        num_groups: G, expert groups (hierarchical policy when G % N == 0,
            which needs E % G == 0).
        num_nodes: N, server nodes (P % N == 0).
        num_gpus: P, GPUs.
        distinct_experts_per_gpu: keyword-only extension: never place two
            replicas of one expert on one GPU (upstream EPLB issue #22).
            When the upstream plan has no such duplicates, the result equals it.

    Returns:
        ``(phy2log, log2phy, logcnt)``, numpy int64 arrays:

        - phy2log [L, R]: logical expert of each physical slot;
        - log2phy [L, E, M]: slot of replica k of expert e, -1 for
          k >= logcnt[l, e]; M = logcnt.max() (upstream's maxlogcnt);
        - logcnt [L, E]: replica count of each expert (>= 1).

    Raises:
        InvalidArgumentError: bad shape, dtype, size or load (the message
            names the rule, e.g. ``num_replicas=10 is smaller than
            num_logical_experts=12``).
        OutOfMemoryError: the outputs or the workspace cannot be allocated.
    """
    w = _weight_array(weight)
    L, E = w.shape
    R, G, N, P = _sizes(num_replicas, num_groups, num_nodes, num_gpus)
    opts = _options(distinct_experts_per_gpu)
    lib = _lib.lib()
    # Checks the size rules before anything is allocated.
    bound = ctypes.c_int64(0)
    _check_sizes_for("dinf_eplb_rebalance_experts", lib.dinf_eplb_max_logcnt_bound,
                     E, R, G, N, P, _opt_ptr(opts), ctypes.byref(bound))

    phy2log = _empty((L, R), np.int64, "phy2log")
    phy_replica = _empty((L, R), np.int64, "phy_replica")
    logcnt = _empty((L, E), np.int64, "logcnt")
    max_logcnt = ctypes.c_int64(0)
    lib.dinf_eplb_rebalance_experts(
        _ptr(w, _P_F32), L, E, R, G, N, P, _opt_ptr(opts),
        _ptr(phy2log, _P_I64), _ptr(phy_replica, _P_I64), _ptr(logcnt, _P_I64),
        None, 0, ctypes.byref(max_logcnt), None, 0,
    )
    log2phy = _log2phy(phy2log, phy_replica, L, E, R, int(max_logcnt.value))
    return phy2log, log2phy, logcnt


def rebalance_incremental(weight, current_phy2log, num_replicas, num_groups, num_nodes, num_gpus,
                          *, tolerance=0.05, distinct_experts_per_gpu=False):
    """Migration-aware re-planning (dinf_eplb_rebalance_incremental).

    Each layer gets a plan whose heaviest GPU load under the new ``weight``
    is at most ``(1 + tolerance)`` times that of a fresh
    :func:`rebalance_experts` plan, while moving few replicas away from
    ``current_phy2log``. A current plan already within tolerance is returned
    unchanged (0 moves).

    Args:
        weight: [L, E] new loads (converted to float32; finite, >= 0).
        current_phy2log: [L, R] integer plan in service (values in [0, E),
            every expert at least once per layer).
        num_replicas, num_groups, num_nodes, num_gpus: as for
            :func:`rebalance_experts`.
        tolerance: keyword-only, >= 0 and finite (0.05 = 5%).
        distinct_experts_per_gpu: keyword-only, as for :func:`rebalance_experts`.

    Returns:
        ``(phy2log, log2phy, logcnt, moved_per_layer)``, numpy int64 arrays:
        phy2log [L, R]; log2phy [L, E, M] with replicas numbered in ascending
        slot order, -1 padded, M = logcnt.max(); logcnt [L, E];
        moved_per_layer [L]: slots whose expert changed.
    """
    w = _weight_array(weight)
    L, E = w.shape
    cur = _plan_array(current_phy2log, "current_phy2log")
    R, G, N, P = _sizes(num_replicas, num_groups, num_nodes, num_gpus)
    tol = _tolerance(tolerance)
    opts = _options(distinct_experts_per_gpu)
    lib = _lib.lib()
    # Checks the size rules before anything is allocated.
    ws = ctypes.c_size_t(0)
    _check_sizes_for("dinf_eplb_rebalance_incremental", lib.dinf_eplb_incremental_workspace_size,
                     E, R, G, N, P, _opt_ptr(opts), ctypes.byref(ws))
    if cur.shape != (L, R):
        raise InvalidArgumentError(
            "current_phy2log has shape %s; expected [num_layers, num_replicas] = (%d, %d)"
            % (cur.shape, L, R)
        )

    phy2log = _empty((L, R), np.int64, "phy2log")
    logcnt = _empty((L, E), np.int64, "logcnt")
    moved = _empty((L,), np.int64, "moved_per_layer")
    lib.dinf_eplb_rebalance_incremental(
        _ptr(w, _P_F32), L, E, R, G, N, P, _opt_ptr(opts), tol,
        _ptr(cur, _P_I64), _ptr(phy2log, _P_I64), None, _ptr(logcnt, _P_I64),
        _ptr(moved, _P_I64), None, None, 0,
    )
    width = int(logcnt.max()) if logcnt.size else 1
    log2phy = _log2phy(phy2log, None, L, E, R, width)
    return phy2log, log2phy, logcnt, moved


def balance_report(weight, phy2log, num_nodes, num_gpus):
    """How balanced a plan is under given loads (dinf_eplb_balance_report).

    A replica of expert e in layer l carries weight[l, e] / (slots of layer l
    holding e); a GPU's load is the sum over its R/P slots, a node's over its
    P/N GPUs; sums in float64. A layer whose loads are all zero has ratio 1.

    Args:
        weight: [L, E] loads (converted to float32; finite, >= 0).
        phy2log: [L, R] integer plan, values in [0, E) (experts may be absent).
        num_nodes: N (P % N == 0).
        num_gpus: P (R % P == 0).

    Returns:
        dict with numpy float64 arrays ``gpu_load`` [L, P], ``node_load``
        [L, N], ``gpu_imbalance`` [L] (max / mean GPU load per layer),
        ``node_imbalance`` [L], and floats ``max_gpu_imbalance``,
        ``mean_gpu_imbalance``, ``max_node_imbalance``,
        ``mean_node_imbalance`` (over layers) and ``max_gpu_load`` (heaviest
        GPU of any layer).
    """
    w = _weight_array(weight)
    L, E = w.shape
    plan = _plan_array(phy2log, "phy2log")
    if plan.shape[0] != L:
        raise InvalidArgumentError(
            "phy2log has %d layers (shape %s) but weight has %d (shape %s)"
            % (plan.shape[0], plan.shape, L, w.shape)
        )
    R = plan.shape[1]
    N = int64_arg("num_nodes", num_nodes)
    P = int64_arg("num_gpus", num_gpus)
    # The library accepts only 1 <= N <= P <= R; for other values it fails
    # before writing anything, so the outputs are allocated empty rather than
    # at a size that may be absurd.
    Pa = P if 1 <= P <= R else 0
    Na = N if 1 <= N <= Pa else 0
    gpu_load = _empty((L, Pa), np.float64, "gpu_load")
    node_load = _empty((L, Na), np.float64, "node_load")
    gpu_imbalance = _empty((L,), np.float64, "gpu_imbalance")
    node_imbalance = _empty((L,), np.float64, "node_imbalance")
    summary = EplbBalanceSummary()
    _lib.lib().dinf_eplb_balance_report(
        _ptr(w, _P_F32), _ptr(plan, _P_I64), L, E, R, N, P,
        _ptr(gpu_load, _P_F64), _ptr(node_load, _P_F64), _ptr(gpu_imbalance, _P_F64),
        _ptr(node_imbalance, _P_F64), ctypes.byref(summary),
    )
    return {
        "gpu_load": gpu_load,
        "node_load": node_load,
        "gpu_imbalance": gpu_imbalance,
        "node_imbalance": node_imbalance,
        "max_gpu_imbalance": float(summary.max_gpu_imbalance),
        "mean_gpu_imbalance": float(summary.mean_gpu_imbalance),
        "max_node_imbalance": float(summary.max_node_imbalance),
        "mean_node_imbalance": float(summary.mean_node_imbalance),
        "max_gpu_load": float(summary.max_gpu_load),
    }
