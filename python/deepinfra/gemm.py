"""FP8 GEMMs with fine-grained scaling (DeepGEMM v1 API), backed by libdeepinfra.

Drop-in names and argument order of upstream ``deep_gemm``::

    from deepinfra.gemm import (per_token_cast_to_fp8, per_block_cast_to_fp8,
                                get_col_major_tma_aligned_tensor, gemm_fp8_fp8_bf16_nt)
    a, sa = per_token_cast_to_fp8(x)        # x [m, k]  -> e4m3 [m, k], float32 [m, ceil(k/128)]
    b, sb = per_block_cast_to_fp8(w)        # w [n, k]  -> e4m3 [n, k], float32 [ceil(n/128), ceil(k/128)]
    out = np.empty((m, n), ml_dtypes.bfloat16)
    gemm_fp8_fp8_bf16_nt((a, sa), (b, sb), out)   # out written in place

Arrays are numpy arrays: e4m3 operands as ``ml_dtypes.float8_e4m3fn`` (or
``uint8`` codes), outputs as ``ml_dtypes.bfloat16`` (or ``uint16`` bits),
scales float32. The computation runs on the CPU (include/deepinfra/gemm.h
gives the exact arithmetic); ``num_threads`` (keyword, 0 = all cores) sets
the thread count. Errors raise :class:`~deepinfra.InvalidArgumentError` with
the C library's message, or the binding's own for shapes and dtypes.

A's scales may be passed plain (``[m, ceil(k/128)]`` row-major, as the
quantizer returns them) or already M-major (what
:func:`get_col_major_tma_aligned_tensor` returns); plain ones are transposed
on each call, as upstream does.
"""

from __future__ import annotations

import ctypes

import numpy as np

from . import _lib
from ._lib import DType, Exec, InvalidArgumentError, int64_arg

try:  # ml_dtypes is optional: without it, uint8 / uint16 views are returned.
    import ml_dtypes as _ml

    _E4M3 = np.dtype(_ml.float8_e4m3fn)
    _BF16 = np.dtype(_ml.bfloat16)
except ImportError:  # pragma: no cover
    _E4M3 = np.dtype(np.uint8)
    _BF16 = np.dtype(np.uint16)

__all__ = [
    "per_token_cast_to_fp8",
    "per_block_cast_to_fp8",
    "get_col_major_tma_aligned_tensor",
    "get_m_alignment_for_contiguous_layout",
    "get_tma_aligned_size",
    "ceil_div",
    "gemm_fp8_fp8_bf16_nt",
    "m_grouped_gemm_fp8_fp8_bf16_nt_contiguous",
    "m_grouped_gemm_fp8_fp8_bf16_nt_masked",
]

_BLOCK = 128


def ceil_div(x, y):
    return (x + y - 1) // y


def get_m_alignment_for_contiguous_layout():
    """Rows per group segment of the contiguous layout (DINF_FP8_GEMM_M_ALIGNMENT)."""
    return 128


def get_tma_aligned_size(x, element_size):
    """``x`` rounded up to a multiple of 16 bytes' worth of elements."""
    per = 16 // element_size
    return ceil_div(x, per) * per


def _exec(num_threads):
    return ctypes.byref(Exec.cpu(num_threads))


def _ptr(a, ctype):
    return a.ctypes.data_as(ctypes.POINTER(ctype))


def _fail(msg):
    raise InvalidArgumentError(msg)


# --------------------------------------------------------------------------
# Array conversions
# --------------------------------------------------------------------------


def _float_input(x, name):
    """x as a C-contiguous float32 or bfloat16 2-D array, and its DType."""
    x = np.asarray(x)
    if x.ndim != 2:
        _fail("%s must be 2-D [m, k], got shape %s" % (name, x.shape))
    if x.dtype == _BF16 and _BF16 != np.dtype(np.uint16):
        return np.ascontiguousarray(x), DType.BFLOAT16
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(x, dtype=np.float32), DType.FLOAT32


def _e4m3_input(x, name, ndim):
    """x (float8_e4m3fn or uint8 codes) as C-contiguous uint8 with ndim dims."""
    x = np.asarray(x)
    if x.dtype not in (_E4M3, np.dtype(np.uint8)):
        _fail("%s must be float8_e4m3fn or uint8, got %s" % (name, x.dtype))
    if x.ndim != ndim:
        _fail("%s must be %d-D, got shape %s" % (name, ndim, x.shape))
    return np.ascontiguousarray(x).view(np.uint8)


def _f32_input(x, name, shape):
    x = np.asarray(x)
    if x.dtype != np.float32:
        _fail("%s must be float32, got %s" % (name, x.dtype))
    if tuple(x.shape) != tuple(shape):
        _fail("%s has shape %s, expected %s" % (name, tuple(x.shape), tuple(shape)))
    return np.ascontiguousarray(x)


def _int32_input(x, name, shape):
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        _fail("%s must be an integer array, got %s" % (name, x.dtype))
    if tuple(x.shape) != tuple(shape):
        _fail("%s has shape %s, expected %s" % (name, tuple(x.shape), tuple(shape)))
    if x.size and (x.min() < -(2**31) or x.max() >= 2**31):
        _fail("%s has values outside int32" % name)
    return np.ascontiguousarray(x, dtype=np.int32)


def _bf16_output(out, shape):
    """out's uint16 view and its row stride in elements; written in place."""
    if not isinstance(out, np.ndarray):
        _fail("out must be a numpy array (written in place), got %s" % type(out).__name__)
    if out.dtype not in (_BF16, np.dtype(np.uint16)):
        _fail("out must be bfloat16 or uint16, got %s" % out.dtype)
    if tuple(out.shape) != tuple(shape):
        _fail("out has shape %s, expected %s" % (tuple(out.shape), tuple(shape)))
    if not out.flags.writeable:
        _fail("out is read-only")
    s = out.strides
    rows = shape[-2] if len(shape) >= 2 else 1
    if out.size and (
        (shape[-1] > 1 and s[-1] != 2)
        or (rows > 1 and (s[-2] % 2 or s[-2] < 2 * shape[-1]))
        or (len(shape) == 3 and shape[0] > 1 and s[0] != rows * s[-2])
    ):
        _fail("out must have unit element stride, a row stride >= n and groups stacked "
              "without gaps (strides %s)" % (s,))
    if rows > 1:
        ldd = s[-2] // 2
    elif len(shape) == 3 and shape[0] > 1:
        # one row per group: the group stride is the row stride the library uses
        if s[0] % 2 or s[0] < 2 * shape[-1]:
            _fail("out must have unit element stride and groups of n elements or more "
                  "(strides %s)" % (s,))
        ldd = s[0] // 2
    else:
        ldd = shape[-1]
    return out.view(np.uint16), max(ldd, shape[-1])


def _out_ptr(view):
    return ctypes.cast(view.ctypes.data, ctypes.POINTER(ctypes.c_uint16))


# --------------------------------------------------------------------------
# Quantization and the scale layout
# --------------------------------------------------------------------------


def _cast(x, block_rows, name):
    x, dtype = _float_input(x, name)
    m, k = x.shape
    q = np.empty((m, k), np.uint8)
    scales = np.empty((ceil_div(m, block_rows), ceil_div(k, _BLOCK)), np.float32)
    _lib.lib().dinf_fp8_quantize(
        x.ctypes.data_as(ctypes.c_void_p), int(dtype), m, k, k, block_rows,
        _ptr(q, ctypes.c_uint8), k, _ptr(scales, ctypes.c_float), None)
    return q.view(_E4M3), scales


def per_token_cast_to_fp8(x):
    """x [m, k] (float32 or bfloat16; other dtypes go through float32) -> (e4m3 [m, k],
    float32 scales [m, ceil(k/128)]): one scale per token per 128 channels."""
    return _cast(x, 1, "x")


def per_block_cast_to_fp8(x):
    """x [m, k] -> (e4m3 [m, k], float32 scales [ceil(m/128), ceil(k/128)]): one scale
    per 128x128 block."""
    return _cast(x, 128, "x")


def _is_mn_major(x):
    """x is [.., m, kb] float32 with strides (.., 4, 4 * aligned_m), groups stacked."""
    if x.dtype != np.float32 or x.ndim not in (2, 3):
        return False
    m, kb = x.shape[-2:]
    aligned = get_tma_aligned_size(m, 4)
    if m > 1 and x.strides[-2] != 4:
        return False
    if kb > 1 and x.strides[-1] != 4 * aligned:
        return False
    if x.ndim == 3 and x.shape[0] > 1 and x.strides[0] != 4 * aligned * kb:
        return False
    return True


def get_col_major_tma_aligned_tensor(x):
    """Scales [m, kb] (or [g, m, kb]) -> the same values, M-major and 16-byte aligned:
    a float32 view of logical shape [m, kb] with strides (4, 4 * aligned_m) (3-D:
    (4 * aligned_m * kb, 4, 4 * aligned_m)), aligned_m = ceil(m/4)*4, over a buffer
    [kb, aligned_m] whose padding rows are 0. Returned unchanged if already so."""
    x = np.asarray(x)
    if x.ndim not in (2, 3):
        _fail("x must be 2-D [m, kb] or 3-D [g, m, kb], got shape %s" % (x.shape,))
    if _is_mn_major(x):
        return x
    squeeze = x.ndim == 2
    x3 = np.ascontiguousarray(x[None] if squeeze else x, dtype=np.float32)
    g, m, kb = x3.shape
    aligned = get_tma_aligned_size(m, 4)
    buf = np.empty((g, kb, aligned), np.float32)
    for i in range(g):
        _lib.lib().dinf_fp8_scale_layout_mn_major(
            _ptr(x3[i], ctypes.c_float), m, kb, _ptr(buf[i], ctypes.c_float), None, None)
    view = np.lib.stride_tricks.as_strided(
        buf, shape=(g, m, kb), strides=(4 * aligned * kb, 4, 4 * aligned), writeable=False)
    return view[0] if squeeze else view


def _a_scales(sa, m, kb, groups=None):
    """A's scales as the M-major buffer pointer the C function reads."""
    sa = np.asarray(sa)
    want = (m, kb) if groups is None else (groups, m, kb)
    if sa.dtype != np.float32 or tuple(sa.shape) != want:
        _fail("lhs scales must be float32 of shape %s, got %s %s" % (want, sa.dtype, sa.shape))
    sa = get_col_major_tma_aligned_tensor(sa)
    return sa, ctypes.cast(sa.ctypes.data, ctypes.POINTER(ctypes.c_float))


# --------------------------------------------------------------------------
# GEMMs
# --------------------------------------------------------------------------


def gemm_fp8_fp8_bf16_nt(lhs, rhs, out, *, num_threads=0):
    """out[m, n] (bf16, in place) = A[m, k] @ B[n, k]^T with lhs = (A, sA [m, ceil(k/128)]),
    rhs = (B, sB [ceil(n/128), ceil(k/128)])."""
    a, sa = lhs
    b, sb = rhs
    a = _e4m3_input(a, "lhs[0]", 2)
    b = _e4m3_input(b, "rhs[0]", 2)
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        _fail("rhs[0] has k=%d but lhs[0] has k=%d" % (b.shape[1], k))
    kb = ceil_div(k, _BLOCK)
    sa_keep, sa_ptr = _a_scales(sa, m, kb)
    sb = _f32_input(sb, "rhs[1]", (ceil_div(n, _BLOCK), kb))
    d, ldd = _bf16_output(out, (m, n))
    _lib.lib().dinf_fp8_gemm_nt(
        m, n, k, _ptr(a, ctypes.c_uint8), k, sa_ptr, _ptr(b, ctypes.c_uint8), k,
        _ptr(sb, ctypes.c_float), _out_ptr(d), ldd, _exec(num_threads))
    del sa_keep
    return out


def m_grouped_gemm_fp8_fp8_bf16_nt_contiguous(lhs, rhs, out, m_indices, *, num_threads=0):
    """Groups stacked along m: A [m_sum, k] (sA [m_sum, ceil(k/128)]), B [g, n, k]
    (sB [g, ceil(n/128), ceil(k/128)]), out [m_sum, n]; row i uses group m_indices[i]
    (-1: the row is skipped and out's row left unchanged)."""
    a, sa = lhs
    b, sb = rhs
    a = _e4m3_input(a, "lhs[0]", 2)
    b = _e4m3_input(b, "rhs[0]", 3)
    m_sum, k = a.shape
    groups, n = b.shape[0], b.shape[1]
    if b.shape[2] != k:
        _fail("rhs[0] has k=%d but lhs[0] has k=%d" % (b.shape[2], k))
    kb = ceil_div(k, _BLOCK)
    sa_keep, sa_ptr = _a_scales(sa, m_sum, kb)
    sb = _f32_input(sb, "rhs[1]", (groups, ceil_div(n, _BLOCK), kb))
    idx = _int32_input(m_indices, "m_indices", (m_sum,))
    d, ldd = _bf16_output(out, (m_sum, n))
    _lib.lib().dinf_fp8_m_grouped_gemm_nt_contiguous(
        m_sum, n, k, groups, _ptr(a, ctypes.c_uint8), k, sa_ptr, _ptr(b, ctypes.c_uint8), k,
        _ptr(sb, ctypes.c_float), _out_ptr(d), ldd, _ptr(idx, ctypes.c_int32),
        _exec(num_threads))
    del sa_keep
    return out


def m_grouped_gemm_fp8_fp8_bf16_nt_masked(lhs, rhs, out, masked_m, expected_m, *,
                                          num_threads=0):
    """One GEMM per group on padded inputs: A [g, m_max, k] (sA [g, m_max, ceil(k/128)]),
    B [g, n, k], out [g, m_max, n]; only the first masked_m[i] rows of group i are
    computed (the others are left unchanged). expected_m is a hint (>= 0)."""
    a, sa = lhs
    b, sb = rhs
    a = _e4m3_input(a, "lhs[0]", 3)
    b = _e4m3_input(b, "rhs[0]", 3)
    groups, m_max, k = a.shape
    n = b.shape[1]
    if b.shape[0] != groups or b.shape[2] != k:
        _fail("rhs[0] has shape %s; expected [%d, n, %d]" % (b.shape, groups, k))
    kb = ceil_div(k, _BLOCK)
    sa_keep, sa_ptr = _a_scales(sa, m_max, kb, groups)
    sb = _f32_input(sb, "rhs[1]", (groups, ceil_div(n, _BLOCK), kb))
    mm = _int32_input(masked_m, "masked_m", (groups,))
    d, ldd = _bf16_output(out, (groups, m_max, n))
    _lib.lib().dinf_fp8_m_grouped_gemm_nt_masked(
        groups, m_max, n, k, _ptr(a, ctypes.c_uint8), k, sa_ptr, _ptr(b, ctypes.c_uint8), k,
        _ptr(sb, ctypes.c_float), _out_ptr(d), ldd, _ptr(mm, ctypes.c_int32),
        int64_arg("expected_m", expected_m), _exec(num_threads))
    del sa_keep
    return out
