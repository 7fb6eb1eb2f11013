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

Device arrays. When the operands are CUDA device arrays -- torch CUDA tensors
(read through ``data_ptr()``, ``stride()`` and ``dtype``) or any object with
``__cuda_array_interface__`` -- the call runs the Hopper kernels
(``DINF_EXEC_CUDA``) on the arrays' device, enqueued on torch's current stream
when torch is importable (else the legacy default stream), and returns without
synchronising. All arrays of a call must then be device arrays of one device;
dtypes: e4m3 operands ``torch.float8_e4m3fn`` or ``uint8`` (``|u1``), scales
float32, the output ``torch.bfloat16`` or 16-bit integers (``<u2``/``<i2``),
indices int32; element strides 1, row strides as the C API requires (16-byte
multiples for the operands, 8 elements for the output). A's scales: plain
torch tensors are transposed on the GPU on each call (as upstream;
``get_col_major_tma_aligned_tensor`` does it once), other device arrays must
already be M-major and TMA-aligned; ``masked_m`` and ``m_indices`` stay on the
device (gemm.h documents the device-side contract).
``per_token_cast_to_fp8`` / ``per_block_cast_to_fp8`` of a torch CUDA tensor
quantize on the GPU and return torch tensors.

Warm-up. The GPU path compiles each tile configuration's kernel on first use
(NVRTC, about 0.15-0.4 s; up to 0.8 s for the largest configurations). :func:`precompile` compiles every distinct kernel a list
of batch sizes will run, ahead of serving; :func:`kernel_config` names one
shape's kernel; :mod:`deepinfra.jit` holds the cache directory and counters.

Weight gradients (training). :func:`wgrad_gemm_fp8_fp8_fp32_nt` and
:func:`k_grouped_wgrad_gemm_fp8_fp8_fp32_nt` (DeepGEMM v1.3's names) take 1x128
scales on both operands (``per_token_cast_to_fp8`` of each) and accumulate into
a float32 output in place: ``out += A @ B^T``. For a layer ``y = x @ W^T``,
``dW += dy^T @ x`` is ``wgrad_gemm_fp8_fp8_fp32_nt(per_token_cast_to_fp8(dy.T),
per_token_cast_to_fp8(x.T), dW)``. Host and device arrays as above, except
that the output is float32 (``torch.float32`` / ``<f4``) with any row stride
(element stride 1), and the operands' rows need no padding on the host; on
the device ``lda``/``ldb`` (each ``k_g`` of the K-grouped form) are multiples
of 16 bytes, and the K-grouped form's scales must already be contiguous
``[sum ceil(k_g/128), ceil(rows/4)*4]`` arrays (the host path also takes
``[sum ceil(k_g/128), rows]``).

A's scales may be passed plain (``[m, ceil(k/128)]`` row-major, as the
quantizer returns them) or already M-major (what
:func:`get_col_major_tma_aligned_tensor` returns); plain ones are transposed
on each call, as upstream does.
"""

from __future__ import annotations

import ctypes

import numpy as np

from . import _lib
from ._lib import EXEC_CUDA, DType, Exec, InvalidArgumentError, int64_arg

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
    "wgrad_gemm_fp8_fp8_fp32_nt",
    "k_grouped_wgrad_gemm_fp8_fp8_fp32_nt",
    "FORMS",
    "kernel_config",
    "precompile",
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
    if _is_torch_cuda(x):
        return _cast_device(x, block_rows, name)
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
    [kb, aligned_m] whose padding rows are 0. Returned unchanged if already so.
    A torch CUDA tensor is transposed on its GPU (current stream) into a new tensor."""
    if _is_torch_cuda(x):
        return _col_major_device(x)
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


def _a_scales(sa, m, kb, groups=None, name="lhs scales"):
    """A's (or the wgrad's B) scales as the M-major buffer pointer the C function reads."""
    sa = np.asarray(sa)
    want = (m, kb) if groups is None else (groups, m, kb)
    if sa.dtype != np.float32 or tuple(sa.shape) != want:
        _fail("%s must be float32 of shape %s, got %s %s" % (name, want, sa.dtype, sa.shape))
    sa = get_col_major_tma_aligned_tensor(sa)
    return sa, ctypes.cast(sa.ctypes.data, ctypes.POINTER(ctypes.c_float))


# --------------------------------------------------------------------------
# GEMMs
# --------------------------------------------------------------------------


def _nt_operands(a, b):
    """A [m, k] and B [n, k] (e4m3 or uint8 codes) as contiguous uint8, and m, n, k."""
    a = _e4m3_input(a, "lhs[0]", 2)
    b = _e4m3_input(b, "rhs[0]", 2)
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        _fail("rhs[0] has k=%d but lhs[0] has k=%d" % (b.shape[1], k))
    return a, b, m, n, k


def gemm_fp8_fp8_bf16_nt(lhs, rhs, out, *, num_threads=0):
    """out[m, n] (bf16, in place) = A[m, k] @ B[n, k]^T with lhs = (A, sA [m, ceil(k/128)]),
    rhs = (B, sB [ceil(n/128), ceil(k/128)])."""
    a, sa = lhs
    b, sb = rhs
    if _route_device((a, sa, b, sb, out)):
        return _gemm_device(NORMAL, a, sa, b, sb, out, None, 0)
    a, b, m, n, k = _nt_operands(a, b)
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
    if _route_device((a, sa, b, sb, out, m_indices)):
        return _gemm_device(CONTIGUOUS, a, sa, b, sb, out, m_indices, 0)
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
    if _route_device((a, sa, b, sb, out, masked_m)):
        return _gemm_device(MASKED, a, sa, b, sb, out, masked_m,
                            int64_arg("expected_m", expected_m))
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


def _f32_output(out, shape):
    """out (float32, written in place: read and accumulated into) and its row stride."""
    if not isinstance(out, np.ndarray):
        _fail("out must be a numpy array (accumulated into in place), got %s"
              % type(out).__name__)
    if out.dtype != np.float32:
        _fail("out must be float32, got %s" % out.dtype)
    if tuple(out.shape) != tuple(shape):
        _fail("out has shape %s, expected %s" % (tuple(out.shape), tuple(shape)))
    if not out.flags.writeable:
        _fail("out is read-only")
    s = out.strides
    if len(shape) == 3:
        if not out.flags.c_contiguous:
            _fail("out must be C-contiguous [num_groups, m, n] (strides %s)" % (s,))
        return shape[-1]
    if out.size and ((shape[1] > 1 and s[1] != 4) or (shape[0] > 1 and (s[0] % 4 or s[0] < 4 * shape[1]))):
        _fail("out must have unit element stride and a row stride >= n (strides %s)" % (s,))
    return max(s[0] // 4 if shape[0] > 1 else shape[1], shape[1])


def wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, out, *, num_threads=0):
    """out[m, n] (float32) += A[m, k] @ B[n, k]^T with lhs = (A, sA [m, ceil(k/128)]) and
    rhs = (B, sB [n, ceil(k/128)]): 1x128 scales on both operands (each from
    per_token_cast_to_fp8), plain or already M-/N-major. k is the token dimension of
    a weight gradient; out is read and accumulated into (zero it for a plain product)."""
    a, sa = lhs
    b, sb = rhs
    if _route_device((a, sa, b, sb, out)):
        return _wgrad_device(a, sa, b, sb, out, None)
    a, b, m, n, k = _nt_operands(a, b)
    kb = ceil_div(k, _BLOCK)
    sa_keep, sa_ptr = _a_scales(sa, m, kb)
    sb_keep, sb_ptr = _a_scales(sb, n, kb, name="rhs scales")
    ldd = _f32_output(out, (m, n))
    _lib.lib().dinf_fp8_wgrad_gemm_nt(
        m, n, k, _ptr(a, ctypes.c_uint8), k, sa_ptr, _ptr(b, ctypes.c_uint8), k, sb_ptr,
        ctypes.cast(out.ctypes.data, ctypes.POINTER(ctypes.c_float)), ldd, _exec(num_threads))
    del sa_keep, sb_keep
    return out


def _k_grouped_sizes(batch_sizes):
    ks = np.asarray(batch_sizes)
    if ks.size and ks.dtype.kind not in "iu":
        _fail("batch_sizes must be integers, got %s" % ks.dtype)
    ks = np.ascontiguousarray(ks, dtype=np.int64)
    if ks.ndim != 1 or ks.size == 0:
        _fail("batch_sizes must be a non-empty 1-D sequence of k per group, got shape %s"
              % (ks.shape,))
    if (ks < 0).any():
        _fail("batch_sizes has a negative k: %s" % ks.tolist())
    return ks, int(ks.sum()), sum(ceil_div(int(v), _BLOCK) for v in ks)


def _k_grouped_scales(s, rows, kb_sum, name):
    """Scales [sum ceil(k_g/128), rows] (each group's [kb_g][rows] after the last, as
    upstream) -> a buffer [kb_sum, aligned_rows] (padding 0) and its pointer."""
    s = np.asarray(s)
    aligned = get_tma_aligned_size(rows, 4)
    if s.dtype != np.float32 or s.ndim != 2 or s.shape[0] != kb_sum or s.shape[1] not in (rows, aligned):
        _fail("%s must be float32 of shape (%d, %d) (sum of ceil(k_g/128), rows), got %s %s"
              % (name, kb_sum, rows, s.dtype, s.shape))
    buf = np.zeros((kb_sum, aligned), np.float32)
    buf[:, :rows] = s[:, :rows]
    return buf, ctypes.cast(buf.ctypes.data, ctypes.POINTER(ctypes.c_float))


def k_grouped_wgrad_gemm_fp8_fp8_fp32_nt(lhs, rhs, out, batch_sizes, *, num_threads=0):
    """One weight gradient per group (MoE experts), the groups differing in k:
    out[g] (float32 [m, n]) += A_g [m, k_g] @ B_g [n, k_g]^T for k_g = batch_sizes[g].
    lhs = (A, sA): A e4m3 of m * sum(k_g) codes, read flat (group g's [m][k_g] after the
    previous groups'), sA float32 [sum ceil(k_g/128), m] (group g's [ceil(k_g/128)][m] after the
    previous ones'); rhs = (B, sB) likewise with n; out [num_groups, m, n] C-contiguous.
    A group with k_g = 0 adds nothing."""
    a, sa = lhs
    b, sb = rhs
    if _route_device((a, sa, b, sb, out)):
        return _wgrad_device(a, sa, b, sb, out, batch_sizes)
    ks, k_sum, kb_sum = _k_grouped_sizes(batch_sizes)
    out_arr = out if isinstance(out, np.ndarray) else None
    if out_arr is None or out_arr.ndim != 3:
        _fail("out must be a 3-D numpy array [num_groups, m, n], got %s"
              % (type(out).__name__ if out_arr is None else out_arr.shape,))
    groups, m, n = out_arr.shape
    if groups != ks.size:
        _fail("out has %d groups but batch_sizes has %d" % (groups, ks.size))
    # any shape, read flat (upstream views them with .view(-1))
    a = _e4m3_input(np.ravel(np.asarray(a)), "lhs[0]", 1)
    b = _e4m3_input(np.ravel(np.asarray(b)), "rhs[0]", 1)
    if a.size != m * k_sum or b.size != n * k_sum:
        _fail("lhs[0] / rhs[0] hold %d / %d codes; m * sum(k) = %d, n * sum(k) = %d"
              % (a.size, b.size, m * k_sum, n * k_sum))
    sa_keep, sa_ptr = _k_grouped_scales(sa, m, kb_sum, "lhs[1]")
    sb_keep, sb_ptr = _k_grouped_scales(sb, n, kb_sum, "rhs[1]")
    _f32_output(out_arr, (groups, m, n))
    _lib.lib().dinf_fp8_k_grouped_wgrad_gemm_nt(
        groups, m, n, _ptr(ks, ctypes.c_int64), _ptr(a, ctypes.c_uint8), sa_ptr,
        _ptr(b, ctypes.c_uint8), sb_ptr,
        ctypes.cast(out_arr.ctypes.data, ctypes.POINTER(ctypes.c_float)), _exec(num_threads))
    del sa_keep, sb_keep
    return out


# --------------------------------------------------------------------------
# Device arrays (DINF_EXEC_CUDA)
# --------------------------------------------------------------------------

NORMAL, CONTIGUOUS, MASKED = 0, 1, 2

_TORCH_KINDS = {
    "torch.float8_e4m3fn": "e4m3", "torch.uint8": "u8", "torch.float32": "f32",
    "torch.bfloat16": "bf16", "torch.int16": "i16", "torch.int32": "i32",
}
_CAI_KINDS = {"|u1": "u8", "<u1": "u8", "<f4": "f32", "<u2": "u16", "<i2": "i16", "<i4": "i32"}
_ITEMSIZE = {"e4m3": 1, "u8": 1, "f32": 4, "bf16": 2, "u16": 2, "i16": 2, "i32": 4}


class _Dev:
    """A device array as the C API sees it: address, shape, element strides, kind."""

    __slots__ = ("ptr", "shape", "strides", "kind", "device", "torch")

    def __init__(self, ptr, shape, strides, kind, device, torch):
        self.ptr, self.shape, self.strides = int(ptr), tuple(shape), tuple(strides)
        self.kind, self.device, self.torch = kind, device, torch


def _is_torch_cuda(x):
    return type(x).__module__.split(".")[0] == "torch" and bool(getattr(x, "is_cuda", False))


def _device_view(x, name):
    """x as a _Dev if it is a device array, None for host arrays."""
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "data_ptr"):
        if not getattr(x, "is_cuda", False):
            _fail("%s is a torch CPU tensor: pass numpy arrays for the CPU path, or CUDA "
                  "tensors" % name)
        kind = _TORCH_KINDS.get(str(x.dtype))
        if kind is None:
            _fail("%s has dtype %s, which the device path does not take" % (name, x.dtype))
        return _Dev(x.data_ptr(), x.shape, x.stride(), kind, x.device.index, True)
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is None:
        return None
    kind = _CAI_KINDS.get(cai.get("typestr"))
    if kind is None:
        _fail("%s has __cuda_array_interface__ typestr %r, which the device path does not "
              "take" % (name, cai.get("typestr")))
    shape = tuple(int(v) for v in cai["shape"])
    item = _ITEMSIZE[kind]
    if cai.get("strides") is None:  # C-contiguous
        strides, acc = [], 1
        for dim in reversed(shape):
            strides.append(acc)
            acc *= dim
        strides = tuple(reversed(strides))
    else:
        if any(v % item for v in cai["strides"]):
            _fail("%s has byte strides %s that are not multiples of its element size %d"
                  % (name, tuple(cai["strides"]), item))
        strides = tuple(int(v) // item for v in cai["strides"])
    dev = getattr(x, "device", None)
    device = getattr(dev, "id", None)
    return _Dev(cai["data"][0], shape, strides, kind, device, False)


_NAMES = ("lhs[0]", "lhs[1]", "rhs[0]", "rhs[1]", "out", "m_indices / masked_m")


def _route_device(objs):
    """True when the call's arrays are device arrays (all of them); False when none is."""
    views = [_device_view(o, _NAMES[i]) for i, o in enumerate(objs)]
    on_device = [v is not None for v in views]
    if any(on_device) and not all(on_device):
        host = [_NAMES[i] for i, d in enumerate(on_device) if not d]
        _fail("a mix of device and host arrays: %s on the host, the rest on a CUDA device "
              "(all arrays of a call must live on one side)" % ", ".join(host))
    return all(on_device)


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return torch


def _cuda_exec(device):
    """DINF_EXEC_CUDA on device, on torch's current stream when torch is importable."""
    stream = None
    torch = _torch()
    if torch is not None and torch.cuda.is_available():
        stream = torch.cuda.current_stream(device).cuda_stream or None
    return Exec(ctypes.sizeof(Exec), EXEC_CUDA, int(device), 0, stream)


def _dptr(view, ctype):
    return ctypes.cast(ctypes.c_void_p(view.ptr), ctypes.POINTER(ctype))


def _check_dev(view, name, kinds, shape):
    if view.kind not in kinds:
        _fail("%s must be %s on the device, got %s" % (name, " or ".join(kinds), view.kind))
    if tuple(shape) != view.shape:
        _fail("%s has shape %s, expected %s" % (name, view.shape, tuple(shape)))


def _unit_rows(view, name):
    """Row stride (elements) of a [.., rows, cols] array with unit element stride."""
    if view.shape[-1] > 1 and view.strides[-1] != 1:
        _fail("%s must have unit element stride on the device (strides %s)"
              % (name, view.strides))
    rows = view.shape[-2]
    return view.strides[-2] if rows > 1 else view.shape[-1]


def _stacked(view, name, rows, ld):
    """3-D arrays: groups stacked without gaps (group stride rows * row stride)."""
    if view.shape[0] > 1 and view.strides[0] != rows * ld:
        _fail("%s must stack its groups without gaps: group stride %d, expected %d "
              "elements" % (name, view.strides[0], rows * ld))


def _gemm_device(form, a, sa, b, sb, out, info, expected_m):
    a_v, b_v, out_v = (_device_view(x, n) for x, n in ((a, "lhs[0]"), (b, "rhs[0]"), (out, "out")))
    ndim = 3 if form == MASKED else 2
    if len(a_v.shape) != ndim or len(b_v.shape) != (2 if form == NORMAL else 3):
        _fail("lhs[0] / rhs[0] have shapes %s / %s: wrong rank for this GEMM"
              % (a_v.shape, b_v.shape))
    k = a_v.shape[-1]
    if b_v.shape[-1] != k:
        _fail("rhs[0] has k=%d but lhs[0] has k=%d" % (b_v.shape[-1], k))
    groups = 1 if form == NORMAL else b_v.shape[0]
    n = b_v.shape[-2]
    rows = a_v.shape[-2]  # m, m_sum or m_max
    if form == MASKED and a_v.shape[0] != groups:
        _fail("lhs[0] has %d groups but rhs[0] has %d" % (a_v.shape[0], groups))
    kb = ceil_div(k, _BLOCK)
    _check_dev(a_v, "lhs[0]", ("e4m3", "u8"), a_v.shape)
    _check_dev(b_v, "rhs[0]", ("e4m3", "u8"), b_v.shape)
    lda, ldb = _unit_rows(a_v, "lhs[0]"), _unit_rows(b_v, "rhs[0]")
    if form == MASKED:
        _stacked(a_v, "lhs[0]", rows, lda)
    if form != NORMAL:
        _stacked(b_v, "rhs[0]", n, ldb)

    # A scales: M-major, TMA-aligned (transposed on the GPU for torch tensors).
    sa_shape = (rows, kb) if form != MASKED else (groups, rows, kb)
    sa_v = _device_view(sa, "lhs[1]")
    aligned = get_tma_aligned_size(rows, 4)
    want = (1, aligned) if form != MASKED else (aligned * kb, 1, aligned)

    def mn_major(v):
        # Exact strides, size-1 dimensions included: the kernel reads [kb][aligned_m]
        # floats (TMA boxes cover the padding rows), so a plain [m, 1] buffer of m
        # floats would be read past its end when m % 4 != 0.
        return tuple(v.strides) == want

    _check_dev(sa_v, "lhs[1]", ("f32",), sa_shape)
    if not mn_major(sa_v):
        if not sa_v.torch:
            _fail("lhs[1] (A's scales) on the device must be M-major and TMA-aligned "
                  "(element strides %s, got %s): use get_col_major_tma_aligned_tensor"
                  % (want, sa_v.strides))
        sa = _col_major_device(sa)
        sa_v = _device_view(sa, "lhs[1]")
    sb_v = _device_view(sb, "rhs[1]")
    sb_shape = (ceil_div(n, _BLOCK), kb) if form == NORMAL else (groups, ceil_div(n, _BLOCK), kb)
    _check_dev(sb_v, "rhs[1]", ("f32",), sb_shape)
    contiguous = 1
    for dim, st in zip(reversed(sb_v.shape), reversed(sb_v.strides)):
        if dim > 1 and st != contiguous:
            _fail("rhs[1] (B's scales) must be contiguous on the device (strides %s)"
                  % (sb_v.strides,))
        contiguous *= dim

    out_shape = (rows, n) if form != MASKED else (groups, rows, n)
    _check_dev(out_v, "out", ("bf16", "u16", "i16"), out_shape)
    ldd = _unit_rows(out_v, "out")
    if form == MASKED:
        _stacked(out_v, "out", rows, ldd)

    devices = {v.device for v in (a_v, sa_v, b_v, sb_v, out_v) if v.device is not None}
    info_v = None
    if form != NORMAL:
        info_v = _device_view(info, "m_indices" if form == CONTIGUOUS else "masked_m")
        _check_dev(info_v, "m_indices" if form == CONTIGUOUS else "masked_m", ("i32",),
                   (rows,) if form == CONTIGUOUS else (groups,))
        if info_v.shape[0] > 1 and info_v.strides[0] != 1:
            _fail("m_indices / masked_m must be contiguous on the device")
        if info_v.device is not None:
            devices.add(info_v.device)
    if len(devices) > 1:
        _fail("the arrays live on different CUDA devices: %s" % sorted(devices))
    device = devices.pop() if devices else 0
    ex = _cuda_exec(device)
    L = _lib.lib()
    if form == NORMAL:
        L.dinf_fp8_gemm_nt(rows, n, k, _dptr(a_v, ctypes.c_uint8), lda,
                           _dptr(sa_v, ctypes.c_float), _dptr(b_v, ctypes.c_uint8), ldb,
                           _dptr(sb_v, ctypes.c_float), _dptr(out_v, ctypes.c_uint16), ldd,
                           ctypes.byref(ex))
    elif form == CONTIGUOUS:
        L.dinf_fp8_m_grouped_gemm_nt_contiguous(
            rows, n, k, groups, _dptr(a_v, ctypes.c_uint8), lda, _dptr(sa_v, ctypes.c_float),
            _dptr(b_v, ctypes.c_uint8), ldb, _dptr(sb_v, ctypes.c_float),
            _dptr(out_v, ctypes.c_uint16), ldd, _dptr(info_v, ctypes.c_int32), ctypes.byref(ex))
    else:
        L.dinf_fp8_m_grouped_gemm_nt_masked(
            groups, rows, n, k, _dptr(a_v, ctypes.c_uint8), lda, _dptr(sa_v, ctypes.c_float),
            _dptr(b_v, ctypes.c_uint8), ldb, _dptr(sb_v, ctypes.c_float),
            _dptr(out_v, ctypes.c_uint16), ldd, _dptr(info_v, ctypes.c_int32), expected_m,
            ctypes.byref(ex))
    del sa  # kept alive until the call is enqueued (torch's caching allocator is stream-ordered)
    return out


def _mn_major_device(s, name, rows, kb):
    """A 1x128 scale tensor [rows, kb] on the device, M-major and TMA-aligned
    (transposed on the GPU for torch tensors): the view and the object to keep."""
    v = _device_view(s, name)
    _check_dev(v, name, ("f32",), (rows, kb))
    if tuple(v.strides) != (1, get_tma_aligned_size(rows, 4)):
        if not v.torch:
            _fail("%s on the device must be M-major and TMA-aligned (element strides %s, got "
                  "%s): use get_col_major_tma_aligned_tensor"
                  % (name, (1, get_tma_aligned_size(rows, 4)), v.strides))
        s = _col_major_device(s)
        v = _device_view(s, name)
    return v, s


def _wgrad_device(a, sa, b, sb, out, batch_sizes):
    """The weight-gradient GEMMs on device arrays (batch_sizes None: the plain one)."""
    a_v, b_v, out_v = (_device_view(x, n) for x, n in ((a, "lhs[0]"), (b, "rhs[0]"), (out, "out")))
    _check_dev(a_v, "lhs[0]", ("e4m3", "u8"), a_v.shape)
    _check_dev(b_v, "rhs[0]", ("e4m3", "u8"), b_v.shape)
    _check_dev(out_v, "out", ("f32",), out_v.shape)
    keep = []
    if batch_sizes is None:
        if len(a_v.shape) != 2 or len(b_v.shape) != 2 or a_v.shape[1] != b_v.shape[1]:
            _fail("lhs[0] / rhs[0] must be [m, k] / [n, k], got %s / %s" % (a_v.shape, b_v.shape))
        m, k = a_v.shape
        n = b_v.shape[0]
        kb = ceil_div(k, _BLOCK)
        lda, ldb = _unit_rows(a_v, "lhs[0]"), _unit_rows(b_v, "rhs[0]")
        sa_v, s1 = _mn_major_device(sa, "lhs[1]", m, kb)
        sb_v, s2 = _mn_major_device(sb, "rhs[1]", n, kb)
        keep += [s1, s2]
        _check_dev(out_v, "out", ("f32",), (m, n))
        ldd = _unit_rows(out_v, "out")
    else:
        ks, k_sum, kb_sum = _k_grouped_sizes(batch_sizes)
        if len(out_v.shape) != 3 or out_v.shape[0] != ks.size:
            _fail("out must be [num_groups=%d, m, n] on the device, got %s"
                  % (ks.size, out_v.shape))
        groups, m, n = out_v.shape
        if out_v.strides != (m * n, n, 1) and out_v.shape[0] * m * n > 0:
            _fail("out must be C-contiguous on the device (strides %s)" % (out_v.strides,))
        for v, nm, rows in ((a_v, "lhs[0]", m), (b_v, "rhs[0]", n)):
            if len(v.shape) != 1 or v.shape[0] != rows * k_sum or (v.shape[0] > 1 and v.strides[0] != 1):
                _fail("%s must be a contiguous 1-D array of %d codes (rows * sum(k)), got shape %s"
                      % (nm, rows * k_sum, v.shape))
        views = []
        for s, nm, rows in ((sa, "lhs[1]", m), (sb, "rhs[1]", n)):
            v = _device_view(s, nm)
            aligned = get_tma_aligned_size(rows, 4)
            if v.kind != "f32" or v.shape != (kb_sum, aligned) or (
                    v.shape[0] > 1 and v.strides[0] != aligned) or (
                    aligned > 1 and v.strides[1] != 1):
                _fail("%s must be a contiguous float32 [%d, %d] array on the device (sum of "
                      "ceil(k_g/128), the TMA-aligned rows), got %s %s strides %s"
                      % (nm, kb_sum, aligned, v.kind, v.shape, v.strides))
            views.append(v)
        sa_v, sb_v = views
    devices = {v.device for v in (a_v, sa_v, b_v, sb_v, out_v) if v.device is not None}
    if len(devices) > 1:
        _fail("the arrays live on different CUDA devices: %s" % sorted(devices))
    ex = _cuda_exec(devices.pop() if devices else 0)
    L = _lib.lib()
    if batch_sizes is None:
        L.dinf_fp8_wgrad_gemm_nt(m, n, k, _dptr(a_v, ctypes.c_uint8), lda,
                                 _dptr(sa_v, ctypes.c_float), _dptr(b_v, ctypes.c_uint8), ldb,
                                 _dptr(sb_v, ctypes.c_float), _dptr(out_v, ctypes.c_float), ldd,
                                 ctypes.byref(ex))
    else:
        L.dinf_fp8_k_grouped_wgrad_gemm_nt(
            groups, m, n, _ptr(ks, ctypes.c_int64), _dptr(a_v, ctypes.c_uint8),
            _dptr(sa_v, ctypes.c_float), _dptr(b_v, ctypes.c_uint8), _dptr(sb_v, ctypes.c_float),
            _dptr(out_v, ctypes.c_float), ctypes.byref(ex))
    del keep  # kept alive until the call is enqueued
    return out


def _cast_device(x, block_rows, name):
    """Quantize a torch CUDA tensor on its GPU: (e4m3 tensor, float32 scales tensor)."""
    torch = _torch()
    if str(x.dtype) not in ("torch.float32", "torch.bfloat16") or x.dim() != 2:
        _fail("%s must be a 2-D float32 or bfloat16 tensor, got %s %s"
              % (name, x.dtype, tuple(x.shape)))
    x = x.contiguous()
    m, k = x.shape
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    scales = torch.empty((ceil_div(m, block_rows), ceil_div(k, _BLOCK)), dtype=torch.float32,
                         device=x.device)
    dtype = DType.FLOAT32 if str(x.dtype) == "torch.float32" else DType.BFLOAT16
    ex = _cuda_exec(x.device.index)
    _lib.lib().dinf_fp8_quantize(
        ctypes.c_void_p(x.data_ptr()), int(dtype), m, k, k, block_rows,
        ctypes.cast(ctypes.c_void_p(q.data_ptr()), ctypes.POINTER(ctypes.c_uint8)), k,
        ctypes.cast(ctypes.c_void_p(scales.data_ptr()), ctypes.POINTER(ctypes.c_float)),
        ctypes.byref(ex))
    return q, scales


def _col_major_device(x):
    """get_col_major_tma_aligned_tensor for a torch CUDA tensor, on the GPU."""
    torch = _torch()
    if str(x.dtype) != "torch.float32" or x.dim() not in (2, 3):
        _fail("x must be a 2-D or 3-D float32 tensor, got %s %s" % (x.dtype, tuple(x.shape)))
    squeeze = x.dim() == 2
    x3 = (x[None] if squeeze else x).contiguous()
    g, m, kb = x3.shape
    aligned = get_tma_aligned_size(m, 4)
    buf = torch.empty((g, kb, aligned), dtype=torch.float32, device=x.device)
    ex = _cuda_exec(x.device.index)
    f32p = ctypes.POINTER(ctypes.c_float)
    for i in range(g):
        _lib.lib().dinf_fp8_scale_layout_mn_major(
            ctypes.cast(ctypes.c_void_p(x3[i].data_ptr()), f32p), m, kb,
            ctypes.cast(ctypes.c_void_p(buf[i].data_ptr()), f32p), None, ctypes.byref(ex))
    view = buf.as_strided((g, m, kb), (aligned * kb, 1, aligned))
    return view[0] if squeeze else view


# --------------------------------------------------------------------------
# Warm-up: the JIT kernels a shape will run (include/deepinfra/gemm.h,
# dinf_fp8_gemm_kernel_config; deepinfra.jit compiles them)
# --------------------------------------------------------------------------

# dinf_fp8_gemm_form: the call each form stands for.
FORMS = {
    "normal": 0,      # gemm_fp8_fp8_bf16_nt
    "contiguous": 1,  # m_grouped_gemm_fp8_fp8_bf16_nt_contiguous
    "masked": 2,      # m_grouped_gemm_fp8_fp8_bf16_nt_masked
    "wgrad": 3,       # wgrad_gemm_fp8_fp8_fp32_nt, and each group of the k-grouped one
}


def _form(form):
    if isinstance(form, str):
        if form not in FORMS:
            _fail("form=%r is not one of %s" % (form, ", ".join(sorted(FORMS))))
        return FORMS[form]
    return _lib.int32_arg("form", form)


def kernel_config(form, m, n, k, num_groups=1, *, num_sms=0):
    """The JIT kernel the GPU path runs for a shape (dinf_fp8_gemm_kernel_config),
    as a :class:`deepinfra.jit.KernelConfig` (``.constants``: GEMM_TYPE,
    BLOCK_M, BLOCK_N, NUM_STAGES, CLUSTER, SPLIT_K of the fast rung, the first
    four of the simple one).

    ``form``: ``"normal"``, ``"contiguous"``, ``"masked"`` or ``"wgrad"`` (the
    weight-gradient GEMMs: template ``fp8_gemm_1d1d``, BLOCK_M, BLOCK_N,
    NUM_STAGES; or its dinf_fp8_gemm_form value); ``m``: rows (normal,
    wgrad), m_sum (contiguous) or expected_m (masked), >= 0; ``n``, ``k`` >= 1; ``num_groups`` >= 1 (1 for
    normal). ``num_sms``: 0 asks the current CUDA device (its SM count and
    how many clusters of 2, 3 and 4 CTAs it holds: exactly what it will run;
    needs a GPU), or the SM count of the target (132 on H100/H200 SXM), which
    assumes its clusters pack every SM. The rung is the one
    ``DINF_FP8_GEMM_KERNEL`` selects now. Raises InvalidArgumentError, or
    UnsupportedError for ``num_sms=0`` without a usable sm_90 device."""
    from . import jit

    c = _lib.JitKernelConfig()
    c.size = ctypes.sizeof(_lib.JitKernelConfig)
    _lib.lib().dinf_fp8_gemm_kernel_config(
        _form(form), int64_arg("m", m), int64_arg("n", n), int64_arg("k", k),
        int64_arg("num_groups", num_groups), _lib.int32_arg("num_sms", num_sms),
        ctypes.byref(c))
    return jit.KernelConfig._from_c(c)


def precompile(form, n, k, m, num_groups=1, *, num_sms=0, arch=None):
    """Compile ahead of serving every kernel that the shapes (``form``, ``m``,
    ``n``, ``k``, ``num_groups``) run, for each ``m`` of an int or an iterable
    of ints (e.g. ``range(1, 4097)``: every batch size an engine may see; many
    share a kernel). Returns the distinct :class:`deepinfra.jit.KernelConfig`
    compiled, in order of first use.

    ``arch=None`` (with ``num_sms=0``: the current device) compiles and loads
    for this process's GPU; ``arch="sm_90a"`` with the target's ``num_sms``
    compiles into the disk cache without a GPU (a build box, a container
    image). Arguments as :func:`kernel_config`; raises as it and
    :func:`deepinfra.jit.precompile`. Synchronous; kernels compile in
    parallel."""
    from . import jit

    ms = [m] if isinstance(m, int) or not hasattr(m, "__iter__") else list(m)
    seen = {}
    for mi in ms:
        cfg = kernel_config(form, mi, n, k, num_groups, num_sms=num_sms)
        seen.setdefault(cfg, None)
    configs = list(seen)
    if configs:
        jit.precompile(configs, arch=arch)
    return configs
