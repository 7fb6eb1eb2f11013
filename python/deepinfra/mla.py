"""MLA decode over a paged KV cache (FlashMLA v1 API), backed by libdeepinfra.

Drop-in names and argument order of upstream ``flash_mla``::

    from deepinfra.mla import get_mla_metadata, flash_mla_with_kvcache
    tile_scheduler_metadata, num_splits = get_mla_metadata(
        cache_seqlens, s_q * h_q // h_kv, h_kv)
    for each layer:
        out, lse = flash_mla_with_kvcache(
            q, k_cache, block_table, cache_seqlens, 512,
            tile_scheduler_metadata, num_splits, softmax_scale=None, causal=True)

Arrays are numpy arrays on the CPU: ``q`` [b, s_q, h_q, 576] and ``k_cache``
[num_blocks, page_block_size, h_kv, 576] as ``ml_dtypes.bfloat16`` (or
``uint16`` bits), ``block_table`` [b, max_blocks] and ``cache_seqlens`` [b]
int32. Returns ``out`` [b, s_q, h_q, 512] bfloat16 and ``lse`` [b, h_q, s_q]
float32 (natural log, +inf for a query without keys). The semantics, the
plan and the arithmetic are documented in include/deepinfra/mla.h.

``get_mla_metadata`` sizes the plan for ``num_sms`` SMs (keyword, default
132 as on H100/H200; on the CPU it only decides how the work is split).
``num_threads`` (keyword, 0 = all cores) sets the CPU thread count. The
split workspace is allocated on each call, as upstream does.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

from . import _lib
from ._lib import Exec, InvalidArgumentError

try:  # ml_dtypes is optional: without it, uint16 bits are returned.
    import ml_dtypes as _ml

    _BF16 = np.dtype(_ml.bfloat16)
except ImportError:  # pragma: no cover
    _BF16 = np.dtype(np.uint16)

__all__ = ["get_mla_metadata", "flash_mla_with_kvcache"]

HEAD_DIM_QK = 576
HEAD_DIM_V = 512
METADATA_INTS = 8
DEFAULT_NUM_SMS = 132


def _fail(msg):
    raise InvalidArgumentError(msg)


def _ptr(a, ctype):
    return a.ctypes.data_as(ctypes.POINTER(ctype))


def _int32_array(x, name, ndim):
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        _fail("%s must be an integer array, got %s" % (name, x.dtype))
    if x.ndim != ndim:
        _fail("%s must be %d-D, got shape %s" % (name, ndim, x.shape))
    if x.size and (x.min() < -(2**31) or x.max() >= 2**31):
        _fail("%s has values outside int32" % name)
    return np.ascontiguousarray(x, dtype=np.int32)


def _bf16_array(x, name, ndim):
    x = np.asarray(x)
    if x.dtype not in (_BF16, np.dtype(np.uint16)):
        _fail("%s must be bfloat16 (ml_dtypes) or uint16 bits, got %s" % (name, x.dtype))
    if x.ndim != ndim:
        _fail("%s must be %d-D, got shape %s" % (name, ndim, x.shape))
    return x


def get_mla_metadata(cache_seqlens, num_heads_per_head_k, num_heads_k, *,
                     num_sms=DEFAULT_NUM_SMS):
    """The split-KV plan: (tile_scheduler_metadata int32 [num_sm_parts, 8],
    num_splits int32 [b + 1]).

    num_heads_per_head_k is s_q * h_q // h_kv and num_heads_k is h_kv, as
    upstream; num_sm_parts = max(num_sms // h_kv // ceil(num_heads_per_head_k / 64), 1).
    """
    seqlens = _int32_array(cache_seqlens, "cache_seqlens", 1)
    parts = ctypes.c_int32()
    _lib.lib().dinf_mla_num_sm_parts(
        _lib.int32_arg("num_heads_per_head_k", num_heads_per_head_k),
        _lib.int32_arg("num_heads_k", num_heads_k),
        _lib.int32_arg("num_sms", num_sms), ctypes.byref(parts))
    b = seqlens.shape[0]
    meta = np.empty((parts.value, METADATA_INTS), np.int32)
    splits = np.empty((b + 1,), np.int32)
    _lib.lib().dinf_mla_get_metadata(
        _ptr(seqlens, ctypes.c_int32), b, parts.value, _ptr(meta, ctypes.c_int32),
        _ptr(splits, ctypes.c_int32), None)
    return meta, splits


def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v,
                           tile_scheduler_metadata, num_splits, softmax_scale=None,
                           causal=False, *, num_threads=0):
    """MLA decode: (out bfloat16 [b, s_q, h_q, head_dim_v], lse float32 [b, h_q, s_q]).

    softmax_scale defaults to q.shape[-1] ** -0.5 (1/sqrt(576)), as upstream;
    causal is bottom-right aligned (no effect when s_q == 1). A non-contiguous
    k_cache is copied (the C API takes page and token strides; use it directly
    to avoid the copy).
    """
    q = np.ascontiguousarray(_bf16_array(q, "q", 4))
    k_cache = _bf16_array(k_cache, "k_cache", 4)
    b, s_q, h_q, d = q.shape
    num_blocks, page, h_kv, dk = k_cache.shape
    if dk != d:
        _fail("k_cache's last dimension %d differs from q's %d" % (dk, d))
    k_cache = np.ascontiguousarray(k_cache)  # no copy when already contiguous
    token_stride = h_kv * dk
    block_stride = page * token_stride
    block_table = _int32_array(block_table, "block_table", 2)
    seqlens = _int32_array(cache_seqlens, "cache_seqlens", 1)
    meta = _int32_array(tile_scheduler_metadata, "tile_scheduler_metadata", 2)
    splits = _int32_array(num_splits, "num_splits", 1)
    if block_table.shape[0] != b or seqlens.shape[0] != b:
        _fail("block_table has %d rows and cache_seqlens %d entries; q has batch %d"
              % (block_table.shape[0], seqlens.shape[0], b))
    if meta.shape[1:] != (METADATA_INTS,):
        _fail("tile_scheduler_metadata must be [num_sm_parts, %d], got shape %s"
              % (METADATA_INTS, meta.shape))
    if splits.shape != (b + 1,):
        _fail("num_splits must have shape (%d,), got %s" % (b + 1, splits.shape))
    if softmax_scale is None:
        softmax_scale = d ** -0.5
    softmax_scale = float(softmax_scale)
    if not math.isfinite(softmax_scale):
        _fail("softmax_scale=%r is not finite" % softmax_scale)
    head_dim_v = _lib.int32_arg("head_dim_v", head_dim_v)
    parts = meta.shape[0]
    ws_bytes = ctypes.c_size_t()
    if parts < 1 or s_q < 1 or h_q < 1:
        _fail("tile_scheduler_metadata has %d parts, q has s_q=%d, h_q=%d: each must be >= 1"
              % (parts, s_q, h_q))
    _lib.lib().dinf_mla_workspace_size(b, s_q, h_q, parts, ctypes.byref(ws_bytes))
    workspace = np.empty((ws_bytes.value + 64,), np.uint8)
    ws_off = (-workspace.ctypes.data) % 64
    out = np.empty((b, s_q, h_q, max(head_dim_v, 0)), np.uint16)
    lse = np.empty((b, h_q, s_q), np.float32)
    _lib.lib().dinf_mla_decode_with_kvcache(
        _ptr(q.view(np.uint16), ctypes.c_uint16), b, s_q, h_q, d,
        ctypes.cast(k_cache.ctypes.data, ctypes.POINTER(ctypes.c_uint16)), num_blocks, page,
        h_kv, block_stride, token_stride, _ptr(block_table, ctypes.c_int32),
        block_table.shape[1], _ptr(seqlens, ctypes.c_int32), head_dim_v,
        _ptr(meta, ctypes.c_int32), parts, _ptr(splits, ctypes.c_int32),
        softmax_scale, 1 if causal else 0,
        ctypes.c_void_p(workspace.ctypes.data + ws_off), ws_bytes.value,
        _ptr(out, ctypes.c_uint16), _ptr(lse, ctypes.c_float),
        ctypes.byref(Exec.cpu(num_threads)))
    return out.view(_BF16), lse
