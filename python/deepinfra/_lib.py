"""Loading of libdeepinfra, the C function table and error translation.

Standard library only. Nothing here runs at import time except class and
table definitions: the shared library is located and loaded on first use
(:func:`lib`), so ``import deepinfra`` never fails, and a missing or
mismatched library raises :class:`LibraryNotFoundError` /
:class:`LibraryVersionError` with the places that were tried.

Lookup order (the first location that exists is loaded; a file that exists
but does not load is an error, not a reason to try the next place):

1. ``DEEPINFRA_LIBRARY_PATH``: a file, or a directory holding
   ``libdeepinfra.so.0``. When set, it is the only place tried.
2. ``DINF_BUILD_DIR``: a build directory (absolute, or relative to the
   repository root, i.e. two levels above this package), library in
   ``<dir>/lib/libdeepinfra.so.0``. When set, it is the only build tree tried,
   and if the library is not there the lookup fails (so that a test run never
   silently picks up another build).
3. The default build tree ``<repo>/build/lib/libdeepinfra.so.0``.
4. ``libdeepinfra.so.0`` next to this package's files (a bundled library).
5. The installed library: ``make install`` writes ``deepinfra/_installed.py``
   with ``LIBDIR = "/prefix/lib"``; ``LIBDIR/libdeepinfra.so.0``.
6. ``ctypes.util.find_library("deepinfra")`` (the dynamic loader's paths).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import operator
import os
import threading

__all__ = [
    "PACKAGE_VERSION",
    "PACKAGE_VERSION_CODE",
    "SONAME",
    "Status",
    "DType",
    "DeepInfraError",
    "InvalidArgumentError",
    "UnsupportedError",
    "OutOfMemoryError",
    "CudaError",
    "NcclError",
    "JitError",
    "DeepInfraTimeoutError",
    "InternalError",
    "LibraryError",
    "LibraryNotFoundError",
    "LibraryVersionError",
    "DeviceInfo",
    "EplbOptions",
    "EpConfig",
    "EplbBalanceSummary",
    "EPLB_OPTIONS_MAGIC",
    "Exec",
    "JitKernelConfig",
    "JitStats",
    "MlaSparseExtras",
    "JIT_MAX_PARAMS",
    "JIT_NAME_MAX",
    "EXEC_CPU",
    "EXEC_CUDA",
    "error_from_status",
    "lib",
    "library_path",
    "int64_arg",
    "int32_arg",
    "INT64_MIN",
    "INT64_MAX",
]

# The version of the C library this package was written against
# (include/deepinfra/core.h: DINF_VERSION_MAJOR/MINOR/PATCH).
PACKAGE_VERSION = "0.1.0"
_MAJOR, _MINOR, _PATCH = (int(x) for x in PACKAGE_VERSION.split("."))
# NCCL's formula, as DINF_VERSION_CODE.
PACKAGE_VERSION_CODE = _MAJOR * 10000 + _MINOR * 100 + _PATCH
SONAME = "libdeepinfra.so.%d" % _MAJOR

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------
# Enums (values are part of the C ABI)
# --------------------------------------------------------------------------


class Status(enum.IntEnum):
    """dinf_status."""

    OK = 0
    INVALID_ARGUMENT = 1
    UNSUPPORTED = 2
    OUT_OF_MEMORY = 3
    CUDA_ERROR = 4
    NCCL_ERROR = 5
    JIT_ERROR = 6
    TIMEOUT = 7
    INTERNAL = 8


class DType(enum.IntEnum):
    """dinf_dtype."""

    FLOAT32 = 0
    FLOAT64 = 1
    FLOAT16 = 2
    BFLOAT16 = 3
    FP8_E4M3 = 4
    FP8_E5M2 = 5
    INT8 = 6
    UINT8 = 7
    INT32 = 8
    INT64 = 9


# --------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------


class DeepInfraError(RuntimeError):
    """Base of every error raised by the binding.

    Attributes:
        status: the :class:`Status` of the failed C call (a plain int for a
            value outside the enum), or None for errors raised by the
            binding itself before reaching C (library lookup).
        message: the C library's ``dinf_last_error()`` text, e.g.
            ``"dinf_eplb_rebalance_experts: num_replicas=10 is smaller than
            num_logical_experts=12"``, or the binding's own message.
    """

    default_status = None

    def __init__(self, message="", status=None):
        if status is None:
            status = self.default_status
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self):
        return self.message

    def __reduce__(self):
        return (type(self), (self.message, self.status))


class InvalidArgumentError(DeepInfraError, ValueError):
    """The caller broke a documented rule (status 1)."""

    default_status = Status.INVALID_ARGUMENT


class UnsupportedError(DeepInfraError):
    """Valid, but not available in this build / on this device (status 2)."""

    default_status = Status.UNSUPPORTED


class OutOfMemoryError(DeepInfraError, MemoryError):
    """A host or device allocation failed (status 3)."""

    default_status = Status.OUT_OF_MEMORY


class CudaError(DeepInfraError):
    """The CUDA runtime reported an error (status 4)."""

    default_status = Status.CUDA_ERROR


class NcclError(DeepInfraError):
    """NCCL reported an error (status 5)."""

    default_status = Status.NCCL_ERROR


class JitError(DeepInfraError):
    """Run-time compilation or loading failed (status 6)."""

    default_status = Status.JIT_ERROR


class DeepInfraTimeoutError(DeepInfraError, TimeoutError):
    """A wait exceeded its timeout (status 7)."""

    default_status = Status.TIMEOUT


class InternalError(DeepInfraError):
    """A bug in the library (status 8): please report it."""

    default_status = Status.INTERNAL


class LibraryError(DeepInfraError, ImportError):
    """libdeepinfra could not be used (not found, failed to load, wrong version)."""


class LibraryNotFoundError(LibraryError):
    """libdeepinfra.so.0 was not found or did not load; the message lists the places tried."""


class LibraryVersionError(LibraryError):
    """The loaded libdeepinfra is not the version this package expects."""


_STATUS_ERRORS = {
    Status.INVALID_ARGUMENT: InvalidArgumentError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.OUT_OF_MEMORY: OutOfMemoryError,
    Status.CUDA_ERROR: CudaError,
    Status.NCCL_ERROR: NcclError,
    Status.JIT_ERROR: JitError,
    Status.TIMEOUT: DeepInfraTimeoutError,
    Status.INTERNAL: InternalError,
}


def error_from_status(status, message):
    """The exception (not raised) for a non-zero dinf_status and its message."""
    status = int(status)
    try:
        status = Status(status)
    except ValueError:
        return DeepInfraError(message, status)
    cls = _STATUS_ERRORS.get(status, DeepInfraError)
    return cls(message, status)


# --------------------------------------------------------------------------
# Integer arguments: ctypes wraps silently, so range-check first.
# --------------------------------------------------------------------------


def _as_int(name, value):
    if isinstance(value, bool):
        raise InvalidArgumentError("%s=%r must be an integer, not a bool" % (name, value))
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidArgumentError(
            "%s=%r must be an integer, not %s" % (name, value, type(value).__name__)
        ) from None


def int64_arg(name, value):
    """``value`` as a Python int in int64 range, else InvalidArgumentError."""
    v = _as_int(name, value)
    if not INT64_MIN <= v <= INT64_MAX:
        raise InvalidArgumentError("%s=%d does not fit in int64" % (name, v))
    return v


def int32_arg(name, value):
    """``value`` as a Python int in C int range, else InvalidArgumentError."""
    v = _as_int(name, value)
    if not INT32_MIN <= v <= INT32_MAX:
        raise InvalidArgumentError("%s=%d does not fit in a C int" % (name, v))
    return v


# --------------------------------------------------------------------------
# Structures (mirror the C headers exactly)
# --------------------------------------------------------------------------


class DeviceInfo(ctypes.Structure):
    """dinf_device_info (core.h). Set ``size = ctypes.sizeof(DeviceInfo)``."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("built_with_cuda", ctypes.c_int32),
        ("usable", ctypes.c_int32),
        ("device_count", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("cc_major", ctypes.c_int32),
        ("cc_minor", ctypes.c_int32),
        ("sm_count", ctypes.c_int32),
        ("runtime_version", ctypes.c_int32),
        ("driver_version", ctypes.c_int32),
        ("total_memory_bytes", ctypes.c_uint64),
        ("shared_memory_per_block_optin_bytes", ctypes.c_uint64),
        ("name", ctypes.c_char * 256),
        ("reason", ctypes.c_char * 512),
    ]


EXEC_CPU = 0  # dinf_exec_kind
EXEC_CUDA = 1


class Exec(ctypes.Structure):
    """dinf_exec (core.h): where a compute call runs. A NULL pointer means the CPU
    with the library's default thread count; :func:`Exec.cpu` builds the CPU place
    with a thread count (0 = all cores)."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("kind", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("stream", ctypes.c_void_p),
    ]

    @classmethod
    def cpu(cls, num_threads=0):
        return cls(ctypes.sizeof(cls), EXEC_CPU, 0, int32_arg("num_threads", num_threads), None)


# jit.h: DINF_JIT_MAX_PARAMS, DINF_JIT_NAME_MAX (name capacity, NUL included).
JIT_MAX_PARAMS = 24
JIT_NAME_MAX = 64


class JitKernelConfig(ctypes.Structure):
    """dinf_jit_kernel_config (jit.h): a kernel template's name and constants."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("name", ctypes.c_char * JIT_NAME_MAX),
        ("num_params", ctypes.c_int32),
        ("params", ctypes.c_int64 * JIT_MAX_PARAMS),
    ]


class JitStats(ctypes.Structure):
    """dinf_jit_stats (jit.h): the JIT's counters."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("compiles", ctypes.c_uint64),
        ("compile_errors", ctypes.c_uint64),
        ("memory_hits", ctypes.c_uint64),
        ("disk_hits", ctypes.c_uint64),
        ("disk_rejects", ctypes.c_uint64),
        ("loads", ctypes.c_uint64),
        ("compile_seconds", ctypes.c_double),
    ]


EPLB_OPTIONS_MAGIC = 0x424C5045  # "EPLB"


class EplbOptions(ctypes.Structure):
    """dinf_eplb_options (eplb.h)."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("magic", ctypes.c_uint32),
        ("distinct_experts_per_gpu", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
    ]


class EplbBalanceSummary(ctypes.Structure):
    """dinf_eplb_balance_summary (eplb.h)."""

    _fields_ = [
        ("max_gpu_imbalance", ctypes.c_double),
        ("mean_gpu_imbalance", ctypes.c_double),
        ("max_node_imbalance", ctypes.c_double),
        ("mean_node_imbalance", ctypes.c_double),
        ("max_gpu_load", ctypes.c_double),
    ]


class PipeOp(ctypes.Structure):
    """dinf_pipe_op (dualpipe.h)."""

    _fields_ = [(name, ctypes.c_int32) for name in ("type", "dir", "mb", "dir2", "mb2", "peer")]


class PipeViolation(ctypes.Structure):
    """dinf_pipe_violation (dualpipe.h)."""

    _fields_ = [("rank", ctypes.c_int32), ("op_index", ctypes.c_int64), ("rule", ctypes.c_char * 192)]


class PipeCosts(ctypes.Structure):
    """dinf_pipe_costs (dualpipe.h)."""

    _fields_ = [(name, ctypes.c_double)
                for name in ("forward", "backward", "weight", "forward_backward", "latency")]


class MlaSparseExtras(ctypes.Structure):
    """dinf_mla_sparse_extras (mla.h): a sparse decode's attention sink and extra cache."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("attn_sink", ctypes.POINTER(ctypes.c_float)),
        ("extra_topk", ctypes.c_int32),
        ("extra_topk_length", ctypes.POINTER(ctypes.c_int32)),
        ("extra_indices", ctypes.POINTER(ctypes.c_int32)),
        ("extra_k_cache", ctypes.c_void_p),
        ("extra_num_blocks", ctypes.c_int64),
        ("extra_page_block_size", ctypes.c_int32),
        ("extra_kv_block_stride", ctypes.c_int64),
        ("extra_kv_token_stride", ctypes.c_int64),
    ]

    def __init__(self, **kwargs):  # DINF_MLA_SPARSE_EXTRAS_INIT: size set, the rest zero
        super().__init__(size=ctypes.sizeof(MlaSparseExtras), **kwargs)


class PipeEvent(ctypes.Structure):
    """dinf_pipe_event (dualpipe.h)."""

    _fields_ = [("rank", ctypes.c_int32), ("op_index", ctypes.c_int64), ("op", PipeOp),
                ("start", ctypes.c_double), ("end", ctypes.c_double)]


class PipeTask(ctypes.Structure):
    """dinf_pipe_task (dualpipe.h)."""

    _fields_ = [(name, ctypes.c_int32) for name in (
        "rank", "dir", "mb", "stage", "module", "first_stage", "last_stage", "local_input",
        "defer_weight_grad")] + [("row_offset", ctypes.c_int64), ("row_count", ctypes.c_int64)]


#: The dinf_pipe_callbacks function types (user first; statuses as int).
PipeTaskFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(PipeTask))
PipeTaskPairFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(PipeTask),
                                  ctypes.POINTER(PipeTask))
PipePostFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int,
                              ctypes.c_int32, ctypes.c_int32, ctypes.c_int32)
PipeCommitFn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32)
PIPE_CALLBACKS_MAGIC = 0x50495045


class PipeCallbacks(ctypes.Structure):
    """dinf_pipe_callbacks (dualpipe.h); unset entries are NULL."""

    _fields_ = [("size", ctypes.c_uint32), ("magic", ctypes.c_uint32), ("user", ctypes.c_void_p),
                ("forward", PipeTaskFn), ("backward", PipeTaskFn), ("weight_grad", PipeTaskFn),
                ("forward_backward", PipeTaskPairFn), ("post_send", PipePostFn),
                ("post_recv", PipePostFn), ("commit", PipeCommitFn)]


class PipeSimResult(ctypes.Structure):
    """dinf_pipe_sim_result (dualpipe.h)."""

    _fields_ = [("makespan", ctypes.c_double), ("max_bubble", ctypes.c_double),
                ("max_peak_activations", ctypes.c_int32),
                ("busy", ctypes.POINTER(ctypes.c_double)),
                ("bubble", ctypes.POINTER(ctypes.c_double)),
                ("peak_activations", ctypes.POINTER(ctypes.c_int32))]


# ---- ep (ep.h) ------------------------------------------------------------


class EpConfig(ctypes.Structure):
    """dinf_ep_config (ep.h)."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("max_hidden", ctypes.c_int32),
        ("max_tokens_per_rank", ctypes.c_int64),
        ("max_topk", ctypes.c_int32),
        ("max_num_experts", ctypes.c_int32),
        ("timeout_ms", ctypes.c_int64),
        ("num_threads", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
    ]


# --------------------------------------------------------------------------
# Function table: (name, restype, argtypes). "status" marks a dinf_status
# return, checked by _check. Follows the headers one to one.
# --------------------------------------------------------------------------

_i64 = ctypes.c_int64
_pi64 = ctypes.POINTER(ctypes.c_int64)
_pf32 = ctypes.POINTER(ctypes.c_float)
_pf64 = ctypes.POINTER(ctypes.c_double)
_popt = ctypes.POINTER(EplbOptions)
_pu8 = ctypes.POINTER(ctypes.c_uint8)
_pu16 = ctypes.POINTER(ctypes.c_uint16)
_pi32 = ctypes.POINTER(ctypes.c_int32)
_pexec = ctypes.POINTER(Exec)
_pextras = ctypes.POINTER(MlaSparseExtras)
_STATUS = "status"

_FUNCTIONS = [
    # int dinf_version(void);
    ("dinf_version", ctypes.c_int, []),
    # const char *dinf_version_string(void);
    ("dinf_version_string", ctypes.c_char_p, []),
    # const char *dinf_status_string(dinf_status status);
    ("dinf_status_string", ctypes.c_char_p, [ctypes.c_int]),
    # const char *dinf_last_error(void);
    ("dinf_last_error", ctypes.c_char_p, []),
    # void dinf_set_last_error(const char *message);
    ("dinf_set_last_error", None, [ctypes.c_char_p]),
    # dinf_status dinf_dtype_size(dinf_dtype dtype, size_t *bytes);
    ("dinf_dtype_size", _STATUS, [ctypes.c_int, ctypes.POINTER(ctypes.c_size_t)]),
    # const char *dinf_dtype_name(dinf_dtype dtype);
    ("dinf_dtype_name", ctypes.c_char_p, [ctypes.c_int]),
    # dinf_status dinf_device_query(int device, dinf_device_info *info);
    ("dinf_device_query", _STATUS, [ctypes.c_int, ctypes.POINTER(DeviceInfo)]),
    # dinf_status dinf_eplb_max_logcnt_bound(int64_t E, int64_t R, int64_t G, int64_t N,
    #     int64_t P, const dinf_eplb_options *options, int64_t *bound);
    ("dinf_eplb_max_logcnt_bound", _STATUS, [_i64, _i64, _i64, _i64, _i64, _popt, _pi64]),
    # dinf_status dinf_eplb_workspace_size(int64_t E, int64_t R, int64_t G, int64_t N,
    #     int64_t P, const dinf_eplb_options *options, size_t *bytes);
    (
        "dinf_eplb_workspace_size",
        _STATUS,
        [_i64, _i64, _i64, _i64, _i64, _popt, ctypes.POINTER(ctypes.c_size_t)],
    ),
    # dinf_status dinf_eplb_rebalance_experts(const float *weight, int64_t L, int64_t E,
    #     int64_t R, int64_t G, int64_t N, int64_t P, const dinf_eplb_options *options,
    #     int64_t *phy2log, int64_t *phy_replica, int64_t *logcnt, int64_t *log2phy,
    #     int64_t log2phy_width, int64_t *max_logcnt, void *workspace, size_t workspace_bytes);
    (
        "dinf_eplb_rebalance_experts",
        _STATUS,
        [_pf32, _i64, _i64, _i64, _i64, _i64, _i64, _popt, _pi64, _pi64, _pi64, _pi64, _i64,
         _pi64, ctypes.c_void_p, ctypes.c_size_t],
    ),
    # dinf_status dinf_eplb_log2phy(const int64_t *phy2log, const int64_t *phy_replica,
    #     int64_t L, int64_t E, int64_t R, int64_t *logcnt, int64_t *log2phy,
    #     int64_t log2phy_width, int64_t *max_logcnt);
    (
        "dinf_eplb_log2phy",
        _STATUS,
        [_pi64, _pi64, _i64, _i64, _i64, _pi64, _pi64, _i64, _pi64],
    ),
    # dinf_status dinf_eplb_rebalance_incremental(const float *weight, int64_t L, int64_t E,
    #     int64_t R, int64_t G, int64_t N, int64_t P, const dinf_eplb_options *options,
    #     double tolerance, const int64_t *current_phy2log, int64_t *phy2log,
    #     int64_t *phy_replica, int64_t *logcnt, int64_t *moved_per_layer, int64_t *num_moved,
    #     void *workspace, size_t workspace_bytes);
    (
        "dinf_eplb_rebalance_incremental",
        _STATUS,
        [_pf32, _i64, _i64, _i64, _i64, _i64, _i64, _popt, ctypes.c_double, _pi64, _pi64,
         _pi64, _pi64, _pi64, _pi64, ctypes.c_void_p, ctypes.c_size_t],
    ),
    # dinf_status dinf_eplb_incremental_workspace_size(int64_t E, int64_t R, int64_t G,
    #     int64_t N, int64_t P, const dinf_eplb_options *options, size_t *bytes);
    (
        "dinf_eplb_incremental_workspace_size",
        _STATUS,
        [_i64, _i64, _i64, _i64, _i64, _popt, ctypes.POINTER(ctypes.c_size_t)],
    ),
    # dinf_status dinf_eplb_balance_report(const float *weight, const int64_t *phy2log,
    #     int64_t L, int64_t E, int64_t R, int64_t N, int64_t P, double *gpu_load,
    #     double *node_load, double *gpu_imbalance, double *node_imbalance,
    #     dinf_eplb_balance_summary *summary);
    (
        "dinf_eplb_balance_report",
        _STATUS,
        [_pf32, _pi64, _i64, _i64, _i64, _i64, _i64, _pf64, _pf64, _pf64, _pf64,
         ctypes.POINTER(EplbBalanceSummary)],
    ),
    # dinf_status dinf_pipe_schedule(dinf_pipe_kind kind, int32_t num_ranks, int32_t num_chunks,
    #     uint32_t flags, int32_t rank, dinf_pipe_op *ops, int64_t capacity, int64_t *num_ops);
    (
        "dinf_pipe_schedule",
        _STATUS,
        [ctypes.c_int, ctypes.c_int32, ctypes.c_int32, ctypes.c_uint32, ctypes.c_int32,
         ctypes.POINTER(PipeOp), _i64, _pi64],
    ),
    # dinf_status dinf_pipe_op_format(const dinf_pipe_op *op, char *buf, size_t bytes);
    ("dinf_pipe_op_format", _STATUS, [ctypes.POINTER(PipeOp), ctypes.c_char_p, ctypes.c_size_t]),
    # dinf_status dinf_pipe_stream_parse(const char *text, dinf_pipe_op *ops, int64_t capacity,
    #     int64_t *num_ops);
    ("dinf_pipe_stream_parse", _STATUS, [ctypes.c_char_p, ctypes.POINTER(PipeOp), _i64, _pi64]),
    # dinf_status dinf_pipe_validate(dinf_pipe_kind kind, int32_t num_ranks, int32_t num_chunks,
    #     const dinf_pipe_op *const *streams, const int64_t *lengths,
    #     dinf_pipe_violation *violation, int32_t *valid);
    (
        "dinf_pipe_validate",
        _STATUS,
        [ctypes.c_int, ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(ctypes.POINTER(PipeOp)),
         _pi64, ctypes.POINTER(PipeViolation), ctypes.POINTER(ctypes.c_int32)],
    ),
    # dinf_status dinf_pipe_simulate(dinf_pipe_kind kind, int32_t num_ranks, int32_t num_chunks,
    #     const dinf_pipe_op *const *streams, const int64_t *lengths, const dinf_pipe_costs *costs,
    #     dinf_pipe_sim_result *result, dinf_pipe_event *events, int64_t capacity,
    #     int64_t *num_events);
    (
        "dinf_pipe_simulate",
        _STATUS,
        [ctypes.c_int, ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(ctypes.POINTER(PipeOp)),
         _pi64, ctypes.POINTER(PipeCosts), ctypes.POINTER(PipeSimResult),
         ctypes.POINTER(PipeEvent), _i64, _pi64],
    ),
    # dinf_status dinf_pipe_render_svg(const dinf_pipe_event *events, int64_t num_events,
    #     int32_t num_ranks, const char *title, char *buf, size_t bytes, size_t *written);
    (
        "dinf_pipe_render_svg",
        _STATUS,
        [ctypes.POINTER(PipeEvent), _i64, ctypes.c_int32, ctypes.c_char_p, ctypes.c_void_p,
         ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)],
    ),
    # dinf_status dinf_pipe_render_trace(const dinf_pipe_event *events, int64_t num_events,
    #     int32_t num_ranks, const char *title, double time_unit_us, char *buf, size_t bytes,
    #     size_t *written);
    (
        "dinf_pipe_render_trace",
        _STATUS,
        [ctypes.POINTER(PipeEvent), _i64, ctypes.c_int32, ctypes.c_char_p, ctypes.c_double,
         ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)],
    ),
    # dinf_status dinf_pipe_executor_create(dinf_pipe_kind kind, int32_t num_ranks,
    #     int32_t num_chunks, int32_t rank, int64_t batch_size,
    #     const dinf_pipe_callbacks *callbacks, dinf_pipe_executor **executor);
    (
        "dinf_pipe_executor_create",
        _STATUS,
        [ctypes.c_int, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _i64,
         ctypes.POINTER(PipeCallbacks), ctypes.POINTER(ctypes.c_void_p)],
    ),
    # dinf_status dinf_pipe_executor_step(dinf_pipe_executor *executor);
    ("dinf_pipe_executor_step", _STATUS, [ctypes.c_void_p]),
    # void dinf_pipe_executor_destroy(dinf_pipe_executor *executor);
    ("dinf_pipe_executor_destroy", None, [ctypes.c_void_p]),
    # dinf_status dinf_pipe_split(int64_t batch_size, int32_t num_chunks, int64_t *offsets);
    ("dinf_pipe_split", _STATUS, [_i64, ctypes.c_int32, _pi64]),
    # dinf_status dinf_convert(const void *src, dinf_dtype src_dtype, void *dst,
    #     dinf_dtype dst_dtype, int64_t count, const dinf_exec *exec);
    (
        "dinf_convert",
        _STATUS,
        [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, _i64, _pexec],
    ),
    # dinf_status dinf_fp8_quantize(const void *x, dinf_dtype x_dtype, int64_t m, int64_t k,
    #     int64_t x_ld, int32_t block_rows, uint8_t *q, int64_t q_ld, float *scales,
    #     const dinf_exec *exec);
    (
        "dinf_fp8_quantize",
        _STATUS,
        [ctypes.c_void_p, ctypes.c_int, _i64, _i64, _i64, ctypes.c_int32, _pu8, _i64, _pf32,
         _pexec],
    ),
    # dinf_status dinf_fp8_scale_layout_mn_major(const float *scales, int64_t m, int64_t kb,
    #     float *out, int64_t *aligned_m, const dinf_exec *exec);
    ("dinf_fp8_scale_layout_mn_major", _STATUS, [_pf32, _i64, _i64, _pf32, _pi64, _pexec]),
    # dinf_status dinf_fp8_gemm_nt(int64_t m, int64_t n, int64_t k, const uint8_t *a,
    #     int64_t lda, const float *a_scales, const uint8_t *b, int64_t ldb,
    #     const float *b_scales, uint16_t *d, int64_t ldd, const dinf_exec *exec);
    (
        "dinf_fp8_gemm_nt",
        _STATUS,
        [_i64, _i64, _i64, _pu8, _i64, _pf32, _pu8, _i64, _pf32, _pu16, _i64, _pexec],
    ),
    # dinf_status dinf_fp8_m_grouped_gemm_nt_contiguous(int64_t m_sum, int64_t n, int64_t k,
    #     int64_t num_groups, const uint8_t *a, int64_t lda, const float *a_scales,
    #     const uint8_t *b, int64_t ldb, const float *b_scales, uint16_t *d, int64_t ldd,
    #     const int32_t *m_indices, const dinf_exec *exec);
    (
        "dinf_fp8_m_grouped_gemm_nt_contiguous",
        _STATUS,
        [_i64, _i64, _i64, _i64, _pu8, _i64, _pf32, _pu8, _i64, _pf32, _pu16, _i64, _pi32,
         _pexec],
    ),
    # dinf_status dinf_fp8_m_grouped_gemm_nt_masked(int64_t num_groups, int64_t m_max,
    #     int64_t n, int64_t k, const uint8_t *a, int64_t lda, const float *a_scales,
    #     const uint8_t *b, int64_t ldb, const float *b_scales, uint16_t *d, int64_t ldd,
    #     const int32_t *masked_m, int64_t expected_m, const dinf_exec *exec);
    (
        "dinf_fp8_m_grouped_gemm_nt_masked",
        _STATUS,
        [_i64, _i64, _i64, _i64, _pu8, _i64, _pf32, _pu8, _i64, _pf32, _pu16, _i64, _pi32, _i64,
         _pexec],
    ),
    # dinf_status dinf_fp8_wgrad_gemm_nt(int64_t m, int64_t n, int64_t k, const uint8_t *a,
    #     int64_t lda, const float *a_scales, const uint8_t *b, int64_t ldb,
    #     const float *b_scales, float *d, int64_t ldd, const dinf_exec *exec);
    (
        "dinf_fp8_wgrad_gemm_nt",
        _STATUS,
        [_i64, _i64, _i64, _pu8, _i64, _pf32, _pu8, _i64, _pf32, _pf32, _i64, _pexec],
    ),
    # dinf_status dinf_fp8_k_grouped_wgrad_gemm_nt(int64_t num_groups, int64_t m, int64_t n,
    #     const int64_t *ks, const uint8_t *a, const float *a_scales, const uint8_t *b,
    #     const float *b_scales, float *d, const dinf_exec *exec);
    (
        "dinf_fp8_k_grouped_wgrad_gemm_nt",
        _STATUS,
        [_i64, _i64, _i64, _pi64, _pu8, _pf32, _pu8, _pf32, _pf32, _pexec],
    ),
    # dinf_status dinf_mla_num_sm_parts(int32_t q_rows_per_head_kv, int32_t num_heads_kv,
    #     int32_t num_sms, int32_t *num_sm_parts);
    (
        "dinf_mla_num_sm_parts",
        _STATUS,
        [ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _pi32],
    ),
    # dinf_status dinf_fp8_gemm_kernel_config(int32_t form, int64_t m, int64_t n, int64_t k,
    #     int64_t num_groups, int32_t num_sms, dinf_jit_kernel_config *config);
    (
        "dinf_fp8_gemm_kernel_config",
        _STATUS,
        [ctypes.c_int32, _i64, _i64, _i64, _i64, ctypes.c_int32, ctypes.POINTER(JitKernelConfig)],
    ),
    # dinf_status dinf_jit_set_cache_dir(const char *path);
    ("dinf_jit_set_cache_dir", _STATUS, [ctypes.c_char_p]),
    # dinf_status dinf_jit_get_cache_dir(char *buf, size_t buf_bytes, size_t *needed);
    (
        "dinf_jit_get_cache_dir",
        _STATUS,
        [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)],
    ),
    # dinf_status dinf_jit_precompile(const dinf_jit_kernel_config *configs, int64_t count,
    #     const char *arch);
    ("dinf_jit_precompile", _STATUS, [ctypes.POINTER(JitKernelConfig), _i64, ctypes.c_char_p]),
    # dinf_status dinf_jit_get_stats(dinf_jit_stats *stats);
    ("dinf_jit_get_stats", _STATUS, [ctypes.POINTER(JitStats)]),
    # dinf_status dinf_jit_nvrtc_version(int *major, int *minor);
    (
        "dinf_jit_nvrtc_version",
        _STATUS,
        [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)],
    ),
    # dinf_status dinf_mla_get_metadata(const int32_t *cache_seqlens, int64_t batch,
    #     int32_t num_sm_parts, int32_t *tile_scheduler_metadata, int32_t *num_splits,
    #     const dinf_exec *exec);
    ("dinf_mla_get_metadata", _STATUS, [_pi32, _i64, ctypes.c_int32, _pi32, _pi32, _pexec]),
    # dinf_status dinf_mla_workspace_size(int64_t batch, int32_t seq_len_q, int32_t num_heads_q,
    #     int32_t num_sm_parts, size_t *bytes, const dinf_exec *exec);
    (
        "dinf_mla_workspace_size",
        _STATUS,
        [_i64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(ctypes.c_size_t),
         _pexec],
    ),
    # dinf_status dinf_mla_decode_with_kvcache(const uint16_t *q, int64_t batch,
    #     int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim, const uint16_t *k_cache,
    #     int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    #     int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *block_table,
    #     int64_t max_blocks_per_seq, const int32_t *cache_seqlens, int32_t head_dim_v,
    #     const int32_t *tile_scheduler_metadata, int32_t num_sm_parts,
    #     const int32_t *num_splits, float softmax_scale, int32_t causal, void *workspace,
    #     size_t workspace_bytes, uint16_t *out, float *lse, const dinf_exec *exec);
    (
        "dinf_mla_decode_with_kvcache",
        _STATUS,
        [_pu16, _i64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _pu16, _i64,
         ctypes.c_int32, ctypes.c_int32, _i64, _i64, _pi32, _i64, _pi32, ctypes.c_int32, _pi32,
         ctypes.c_int32, _pi32, ctypes.c_float, ctypes.c_int32, ctypes.c_void_p,
         ctypes.c_size_t, _pu16, _pf32, _pexec],
    ),
    # dinf_mla_decode_with_kvcache_fp8: as above with const uint8_t *k_cache (byte strides).
    (
        "dinf_mla_decode_with_kvcache_fp8",
        _STATUS,
        [_pu16, _i64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _pu8, _i64,
         ctypes.c_int32, ctypes.c_int32, _i64, _i64, _pi32, _i64, _pi32, ctypes.c_int32, _pi32,
         ctypes.c_int32, _pi32, ctypes.c_float, ctypes.c_int32, ctypes.c_void_p,
         ctypes.c_size_t, _pu16, _pf32, _pexec],
    ),
    # dinf_status dinf_mla_get_sparse_metadata(const int32_t *topk_length, int64_t batch,
    #     int32_t seq_len_q, int32_t topk, int32_t num_sm_parts,
    #     int32_t *tile_scheduler_metadata, int32_t *num_splits,
    #     const dinf_mla_sparse_extras *extras, const dinf_exec *exec);
    (
        "dinf_mla_get_sparse_metadata",
        _STATUS,
        [_pi32, _i64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _pi32, _pi32, _pextras,
         _pexec],
    ),
    # dinf_status dinf_mla_sparse_decode_with_kvcache(const uint16_t *q, int64_t batch,
    #     int32_t seq_len_q, int32_t num_heads_q, int32_t head_dim, const uint16_t *k_cache,
    #     int64_t num_blocks, int32_t page_block_size, int32_t num_heads_kv,
    #     int64_t kv_block_stride, int64_t kv_token_stride, const int32_t *indices,
    #     int32_t topk, const int32_t *topk_length, int32_t head_dim_v,
    #     const int32_t *tile_scheduler_metadata, int32_t num_sm_parts,
    #     const int32_t *num_splits, float softmax_scale, void *workspace,
    #     size_t workspace_bytes, uint16_t *out, float *lse,
    #     const dinf_mla_sparse_extras *extras, const dinf_exec *exec);
    (
        "dinf_mla_sparse_decode_with_kvcache",
        _STATUS,
        [_pu16, _i64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _pu16, _i64,
         ctypes.c_int32, ctypes.c_int32, _i64, _i64, _pi32, ctypes.c_int32, _pi32,
         ctypes.c_int32, _pi32, ctypes.c_int32, _pi32, ctypes.c_float, ctypes.c_void_p,
         ctypes.c_size_t, _pu16, _pf32, _pextras, _pexec],
    ),
    # dinf_mla_sparse_decode_with_kvcache_fp8: as above with const uint8_t *k_cache (byte
    # strides).
    (
        "dinf_mla_sparse_decode_with_kvcache_fp8",
        _STATUS,
        [_pu16, _i64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _pu8, _i64,
         ctypes.c_int32, ctypes.c_int32, _i64, _i64, _pi32, ctypes.c_int32, _pi32,
         ctypes.c_int32, _pi32, ctypes.c_int32, _pi32, ctypes.c_float, ctypes.c_void_p,
         ctypes.c_size_t, _pu16, _pf32, _pextras, _pexec],
    ),
    # dinf_status dinf_mla_quantize_kvcache_fp8(const uint16_t *kv, int64_t num_tokens,
    #     int32_t num_heads_kv, int64_t kv_token_ld, const int64_t *slot_mapping,
    #     uint8_t *k_cache, int64_t num_blocks, int32_t page_block_size,
    #     int64_t kv_block_stride, int64_t kv_token_stride, const dinf_exec *exec);
    (
        "dinf_mla_quantize_kvcache_fp8",
        _STATUS,
        [_pu16, _i64, ctypes.c_int32, _i64, _pi64, _pu8, _i64, ctypes.c_int32, _i64, _i64,
         _pexec],
    ),
    # dinf_status dinf_mla_quantize_kvcache_model1(const uint16_t *kv, int64_t num_tokens,
    #     int64_t kv_token_ld, const int64_t *slot_mapping, uint8_t *k_cache,
    #     int64_t num_blocks, int32_t page_block_size, int64_t kv_block_stride,
    #     const dinf_exec *exec);
    (
        "dinf_mla_quantize_kvcache_model1",
        _STATUS,
        [_pu16, _i64, _i64, _pi64, _pu8, _i64, ctypes.c_int32, _i64, _pexec],
    ),
    # ---- ep (ep.h): the threads transport and the protocol. The GPU transports'
    # constructors (dinf_ep_group_create_nccl / _cuda_virtual) are added with them.
    # dinf_status dinf_ep_group_create_threads(int32_t num_ranks, const dinf_ep_config *config,
    #     dinf_ep_group **groups);
    (
        "dinf_ep_group_create_threads",
        _STATUS,
        [ctypes.c_int32, ctypes.POINTER(EpConfig), ctypes.POINTER(ctypes.c_void_p)],
    ),
    # GPU transports (ep.h). dinf_status dinf_ep_group_create_nccl(void *nccl_comm,
    #     int32_t device, const dinf_ep_config *config, dinf_ep_group **group);
    (
        "dinf_ep_group_create_nccl",
        _STATUS,
        [ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(EpConfig),
         ctypes.POINTER(ctypes.c_void_p)],
    ),
    # dinf_status dinf_ep_group_create_cuda_virtual(int32_t num_ranks, int32_t device,
    #     const dinf_ep_config *config, dinf_ep_group **groups);
    (
        "dinf_ep_group_create_cuda_virtual",
        _STATUS,
        [ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(EpConfig),
         ctypes.POINTER(ctypes.c_void_p)],
    ),
    # dinf_status dinf_ep_group_create_cuda_ipc(int32_t rank, int32_t num_ranks, int32_t device,
    #     const dinf_ep_config *config, dinf_ep_allgather_fn allgather, void *ctx,
    #     dinf_ep_group **group);  allgather: int (*)(void *ctx, const void *in, void *out,
    #     size_t bytes)
    (
        "dinf_ep_group_create_cuda_ipc",
        _STATUS,
        [ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(EpConfig),
         ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)],
    ),
    # dinf_status dinf_ep_group_destroy(dinf_ep_group *group);
    ("dinf_ep_group_destroy", _STATUS, [ctypes.c_void_p]),
    # dinf_status dinf_ep_group_info(const dinf_ep_group *group, int32_t *rank,
    #     int32_t *num_ranks, int32_t *memory, int32_t *device);
    ("dinf_ep_group_info", _STATUS, [ctypes.c_void_p, _pi32, _pi32, _pi32, _pi32]),
    # dinf_status dinf_ep_group_barrier(dinf_ep_group *group);
    ("dinf_ep_group_barrier", _STATUS, [ctypes.c_void_p]),
    # dinf_status dinf_ep_symmetric_buffer_bytes(const dinf_ep_config *config,
    #     int32_t num_ranks, size_t *normal_bytes, size_t *low_latency_bytes);
    (
        "dinf_ep_symmetric_buffer_bytes",
        _STATUS,
        [ctypes.POINTER(EpConfig), ctypes.c_int32, ctypes.POINTER(ctypes.c_size_t),
         ctypes.POINTER(ctypes.c_size_t)],
    ),
    # dinf_status dinf_ep_get_dispatch_layout(const int64_t *topk_idx, int64_t num_tokens,
    #     int32_t num_topk, int32_t num_experts, int32_t num_ranks, int32_t *num_tokens_per_rank,
    #     int32_t *num_tokens_per_expert, uint8_t *is_token_in_rank, const dinf_exec *exec);
    (
        "dinf_ep_get_dispatch_layout",
        _STATUS,
        [_pi64, _i64, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, _pi32, _pi32, _pu8,
         _pexec],
    ),
    # dinf_status dinf_ep_handle_create(dinf_ep_group *group, dinf_ep_handle **handle);
    ("dinf_ep_handle_create", _STATUS, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
    # dinf_status dinf_ep_handle_destroy(dinf_ep_handle *handle);
    ("dinf_ep_handle_destroy", _STATUS, [ctypes.c_void_p]),
    # dinf_status dinf_ep_notify_dispatch(dinf_ep_group *group, const int64_t *topk_idx,
    #     int64_t num_tokens, int32_t num_topk, int32_t num_experts,
    #     const int32_t *num_tokens_per_rank, const int32_t *num_tokens_per_expert,
    #     const uint8_t *is_token_in_rank, int32_t expert_alignment, dinf_ep_handle *handle,
    #     int64_t *num_recv_tokens, int32_t *num_recv_tokens_per_expert, const dinf_exec *exec);
    (
        "dinf_ep_notify_dispatch",
        _STATUS,
        [ctypes.c_void_p, _pi64, _i64, ctypes.c_int32, ctypes.c_int32, _pi32, _pi32, _pu8,
         ctypes.c_int32, ctypes.c_void_p, _pi64, _pi32, _pexec],
    ),
    # dinf_status dinf_ep_handle_info(const dinf_ep_handle *handle, int64_t *num_tokens,
    #     int32_t *num_topk, int32_t *num_experts, int64_t *num_recv_tokens,
    #     int32_t *rank_prefix_matrix, int32_t *num_recv_tokens_per_expert);
    (
        "dinf_ep_handle_info",
        _STATUS,
        [ctypes.c_void_p, _pi64, _pi32, _pi32, _pi64, _pi32, _pi32],
    ),
    # dinf_status dinf_ep_dispatch(dinf_ep_group *group, const dinf_ep_handle *handle,
    #     const void *x, dinf_dtype x_dtype, const float *x_scales, int32_t hidden,
    #     const int64_t *topk_idx, const float *topk_weights, dinf_dtype recv_dtype,
    #     void *recv_x, float *recv_x_scales, int64_t *recv_topk_idx, float *recv_topk_weights,
    #     int32_t *recv_src_idx, int64_t recv_capacity, const dinf_exec *exec);
    (
        "dinf_ep_dispatch",
        _STATUS,
        [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, _pf32,
         ctypes.c_int32, _pi64, _pf32, ctypes.c_int, ctypes.c_void_p, _pf32, _pi64, _pf32,
         _pi32, _i64, _pexec],
    ),
    # dinf_status dinf_ep_combine(dinf_ep_group *group, const dinf_ep_handle *handle,
    #     const uint16_t *x, int32_t hidden, const float *topk_weights, const uint16_t *bias0,
    #     const uint16_t *bias1, uint16_t *combined_x, float *combined_topk_weights,
    #     const dinf_exec *exec);
    (
        "dinf_ep_combine",
        _STATUS,
        [ctypes.c_void_p, ctypes.c_void_p, _pu16, ctypes.c_int32, _pf32, _pu16, _pu16, _pu16,
         _pf32, _pexec],
    ),
    # dinf_status dinf_ep_ll_handle_create(dinf_ep_group *group, dinf_ep_ll_handle **handle);
    ("dinf_ep_ll_handle_create", _STATUS, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
    # dinf_status dinf_ep_ll_handle_destroy(dinf_ep_ll_handle *handle);
    ("dinf_ep_ll_handle_destroy", _STATUS, [ctypes.c_void_p]),
    # dinf_status dinf_ep_ll_scale_rows(int32_t num_ranks,
    #     int64_t num_max_dispatch_tokens_per_rank, int64_t *rows);
    ("dinf_ep_ll_scale_rows", _STATUS, [ctypes.c_int32, _i64, _pi64]),
    # dinf_status dinf_ep_low_latency_dispatch(dinf_ep_group *group, const uint16_t *x,
    #     int64_t num_tokens, int32_t hidden, const int64_t *topk_idx, int32_t num_topk,
    #     int32_t num_experts, int64_t num_max_dispatch_tokens_per_rank, int32_t use_fp8,
    #     void *recv_x, float *recv_x_scales, int32_t *recv_count, int32_t *recv_src_info,
    #     int64_t *recv_layout_range, dinf_ep_ll_handle *handle, const dinf_exec *exec);
    (
        "dinf_ep_low_latency_dispatch",
        _STATUS,
        [ctypes.c_void_p, _pu16, _i64, ctypes.c_int32, _pi64, ctypes.c_int32, ctypes.c_int32,
         _i64, ctypes.c_int32, ctypes.c_void_p, _pf32, _pi32, _pi32, _pi64, ctypes.c_void_p,
         _pexec],
    ),
    # dinf_status dinf_ep_low_latency_combine(dinf_ep_group *group, const uint16_t *x,
    #     int32_t hidden, const int64_t *topk_idx, const float *topk_weights,
    #     int64_t num_tokens, int32_t num_topk, const dinf_ep_ll_handle *handle,
    #     uint16_t *combined_x, const dinf_exec *exec);
    (
        "dinf_ep_low_latency_combine",
        _STATUS,
        [ctypes.c_void_p, _pu16, ctypes.c_int32, _pi64, _pf32, _i64, ctypes.c_int32,
         ctypes.c_void_p, _pu16, _pexec],
    ),
]


def _decode(raw):
    if raw is None:
        return ""
    return raw.decode("utf-8", errors="replace")


class _Library:
    """The loaded CDLL with its functions declared; attributes are the C functions."""

    def __init__(self, cdll, path):
        self.cdll = cdll
        self.path = path
        for name, restype, argtypes in _FUNCTIONS:
            fn = getattr(cdll, name)
            fn.argtypes = argtypes
            if restype == _STATUS:
                fn.restype = ctypes.c_int
                fn.errcheck = self._check
            else:
                fn.restype = restype
            setattr(self, name, fn)

    def _check(self, result, func, args):
        # Runs on the calling thread right after the call: dinf_last_error()
        # is thread-local, so it is this call's message.
        if result != Status.OK:
            message = _decode(self.dinf_last_error())
            if not message:
                message = "%s failed: %s" % (
                    getattr(func, "__name__", "dinf call"),
                    _decode(self.dinf_status_string(result)),
                )
            raise error_from_status(result, message)
        return result


_LOCK = threading.Lock()
_LIB = None


def _repo_root():
    # python/deepinfra/_lib.py -> repository root
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def _candidates():
    """Yield (description, path or None, strict).

    A strict entry ends the lookup: its path is loaded or the lookup fails.
    A None path means "nothing to try here" (recorded for the message).
    """
    env = os.environ.get("DEEPINFRA_LIBRARY_PATH")
    if env:
        path = os.path.join(env, SONAME) if os.path.isdir(env) else env
        yield ("DEEPINFRA_LIBRARY_PATH=%s" % env, path, True)
        return
    build = os.environ.get("DINF_BUILD_DIR")
    if build:
        base = build if os.path.isabs(build) else os.path.join(_repo_root(), build)
        yield ("DINF_BUILD_DIR=%s" % build, os.path.join(base, "lib", SONAME), True)
        return
    yield ("build tree", os.path.join(_repo_root(), "build", "lib", SONAME), False)
    yield ("package directory", os.path.join(_package_dir(), SONAME), False)
    try:
        from . import _installed  # written by `make install`

        libdir = getattr(_installed, "LIBDIR", None)
    except ImportError:
        libdir = None
    if libdir:
        yield ("installed (deepinfra/_installed.py)", os.path.join(libdir, SONAME), False)
    else:
        yield ("installed (deepinfra/_installed.py: absent)", None, False)
    found = ctypes.util.find_library("deepinfra")
    yield ("ctypes.util.find_library('deepinfra')", found, False)


def _dladdr_path(cdll, fallback):
    """The file the dynamic loader actually opened for cdll (via dladdr)."""

    class _DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (AttributeError, OSError):
        try:
            dladdr = ctypes.CDLL(ctypes.util.find_library("dl") or "libdl.so.2").dladdr
        except (AttributeError, OSError):
            return fallback
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    dladdr.restype = ctypes.c_int
    info = _DlInfo()
    addr = ctypes.cast(cdll.dinf_version, ctypes.c_void_p)
    if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
        return os.path.abspath(os.fsdecode(info.dli_fname))
    return fallback


def _check_version(code, path):
    """Raise LibraryVersionError unless the library's dinf_version() is ours."""
    if code != PACKAGE_VERSION_CODE:
        got = "%d.%d.%d" % (code // 10000, code // 100 % 100, code % 100)
        raise LibraryVersionError(
            "%s is libdeepinfra %s (dinf_version()=%d), but this Python package "
            "(deepinfra %s) expects %d: point DEEPINFRA_LIBRARY_PATH at a matching "
            "build, or reinstall the package and library together"
            % (path, got, code, PACKAGE_VERSION, PACKAGE_VERSION_CODE)
        )


def _load():
    tried = []
    for what, path, strict in _candidates():
        if path is None:
            tried.append("%s: nothing" % what)
            continue
        is_bare_name = os.sep not in path  # find_library's soname
        if not is_bare_name and not os.path.exists(path):
            tried.append("%s: %s (not found)" % (what, path))
            if strict:
                break
            continue
        try:
            cdll = ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s: %s (failed to load: %s)" % (what, path, e))
            raise LibraryNotFoundError(
                "libdeepinfra could not be loaded; tried:\n  " + "\n  ".join(tried)
            ) from e
        real = _dladdr_path(cdll, path) if is_bare_name else os.path.abspath(path)
        try:
            library = _Library(cdll, real)
        except AttributeError as e:
            raise LibraryNotFoundError(
                "%s is not a usable libdeepinfra (missing symbol: %s)" % (real, e)
            ) from e
        _check_version(library.dinf_version(), real)
        return library
    raise LibraryNotFoundError(
        "libdeepinfra (%s) not found; build it with `make` or set "
        "DEEPINFRA_LIBRARY_PATH. Tried:\n  %s" % (SONAME, "\n  ".join(tried))
    )


def lib():
    """The loaded library (loaded and checked on first call, then cached).

    Raises LibraryNotFoundError or LibraryVersionError; a failure is not
    cached, so a later call tries again.
    """
    global _LIB
    library = _LIB
    if library is not None:
        return library
    with _LOCK:
        if _LIB is None:
            _LIB = _load()
        return _LIB


def library_path():
    """Absolute path of the loaded libdeepinfra (loads it if needed)."""
    return lib().path
