"""MLA decode over a paged KV cache (FlashMLA's API), backed by libdeepinfra.

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

FP8 cache: ``is_fp8_kvcache=True`` with ``k_cache`` [num_blocks, page, h_kv, 656]
uint8 (or float8_e4m3fn) entries in FlashMLA's layout (512 e4m3, 4 float32
scales, 64 bfloat16 RoPE; see mla.h); ``quantize_kvcache_fp8`` writes tokens
into such a cache through a slot mapping.

MODEL1 cache (FlashMLA 2026's d_qk = 512 format, sparse decode only): q is
[b, s_q, h_q, 512] and ``k_cache`` FlashMLA's view [num_blocks, page, 1, 584]
bytes of a block-major cache whose pages may be padded (stride(0); stride(1)
584, the bytes contiguous); ``empty_model1_kvcache`` allocates one as
upstream does (pages padded to a multiple of 576 bytes) and
``quantize_kvcache_fp8`` with kv [n, 1, 512] writes it.

Sparse decode (DeepSeek Sparse Attention, FlashMLA's Sept-2025 API)::

    tile_scheduler_metadata, num_splits = get_mla_metadata(
        cache_seqlens, s_q * h_q // h_kv, h_kv, h_q, is_fp8_kvcache, topk)
    out, lse = flash_mla_with_kvcache(
        q, k_cache, None, None, 512, tile_scheduler_metadata, num_splits,
        softmax_scale, causal=False, is_fp8_kvcache=is_fp8_kvcache, indices=indices)

``indices`` [b, s_q, topk] int32 lists, per query position, the cache slots
it attends to (slot = physical_page * page_block_size + row, the block table
already applied; negative = skipped, a slot listed twice counts twice). Any
page size works, BF16 or FP8 caches, any h_kv. ``topk_length`` (keyword of
both calls, int32 [b], each in [0, topk]; FlashMLA's 2026 addition) limits
request b to its first topk_length[b] indices; the plan depends on it, so
pass the same array to both calls. block_table and cache_seqlens are not
used by the sparse decode (may be None); ``causal`` must be False.
``get_mla_metadata`` takes its batch from cache_seqlens (or topk_length when
cache_seqlens is None); is_fp8_kvcache does not change the plan.

The sparse decode also takes FlashMLA's 2026 keywords: ``attn_sink``
(float32 [h_q]: a per-head logit added to the softmax's denominator only;
lse is returned without it) and a second cache in the same softmax,
``extra_k_cache`` (k_cache's format, [num_blocks', page', h_kv, 576, 656 or
584], its own page size), ``extra_indices_in_kvcache`` (int32 [b, s_q, extra_topk], slots of
that cache) and ``extra_topk_length`` (int32 [b] or None). The extra list
changes the plan: with the lazy plan (below) nothing more is needed; the
eager ``get_mla_metadata(..., topk)`` takes ``extra_topk`` and
``extra_topk_length`` keywords (this library's addition).

GPU: when the arrays are torch CUDA tensors (or objects with
``__cuda_array_interface__``, viewed through torch), the calls run the
sm_90a kernels on torch's current stream of that device, asynchronously;
outputs and the workspace are torch tensors on the same device (the sparse
decode runs the fast rung with an FP8 cache, the simple rung with BF16; see
mla.h).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

from . import _lib
from ._lib import Exec, InvalidArgumentError, UnsupportedError

try:  # ml_dtypes is optional: without it, uint16 bits are returned.
    import ml_dtypes as _ml

    _BF16 = np.dtype(_ml.bfloat16)
except ImportError:  # pragma: no cover
    _BF16 = np.dtype(np.uint16)

__all__ = ["get_mla_metadata", "flash_mla_with_kvcache", "quantize_kvcache_fp8",
           "empty_model1_kvcache", "FlashMLASchedMeta"]

HEAD_DIM_QK = 576
HEAD_DIM_V = 512
METADATA_INTS = 8
DEFAULT_NUM_SMS = 132
FP8_ENTRY_BYTES = 656
MODEL1_HEAD_DIM = 512  # DINF_MLA_MODEL1_HEAD_DIM: q rows of the MODEL1 cache's decode
MODEL1_ROW_BYTES = 576  # DINF_MLA_MODEL1_ROW_BYTES
MODEL1_TOKEN_BYTES = 584  # DINF_MLA_MODEL1_TOKEN_BYTES
MAX_BATCH = 1048576  # DINF_MLA_MAX_BATCH: largest b (dense) or b * s_q (sparse)
MAX_TOPK = 1048576  # DINF_MLA_MAX_TOPK


# ----------------------------------------------------------------- devices --

def _is_torch(x):
    return type(x).__module__.split(".")[0] == "torch"


def _on_device(x):
    """True for torch CUDA tensors and objects exporting __cuda_array_interface__."""
    if _is_torch(x):
        return bool(getattr(x, "is_cuda", False))
    return hasattr(x, "__cuda_array_interface__")


def _as_torch_cuda(x, name):
    import torch

    if _is_torch(x):
        if not x.is_cuda:
            _fail("%s is a CPU tensor while other arguments are on the GPU" % name)
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return torch.as_tensor(x, device="cuda")
    _fail("%s must be on the GPU like the other arguments (a torch CUDA tensor or an object "
          "with __cuda_array_interface__)" % name)


def _cuda_exec(t):
    import torch

    device = t.device.index if t.device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(device).cuda_stream
    return Exec(ctypes.sizeof(Exec), _lib.EXEC_CUDA, device, 0, ctypes.c_void_p(stream))


def _dev(t, ctype):
    return ctypes.cast(ctypes.c_void_p(t.data_ptr()), ctypes.POINTER(ctype))


def _torch_check(t, name, dtypes, ndim, contiguous=True):
    if t.dtype not in dtypes:
        _fail("%s must be %s, got %s" % (name, " or ".join(str(d) for d in dtypes), t.dtype))
    if t.dim() != ndim:
        _fail("%s must be %d-D, got shape %s" % (name, ndim, tuple(t.shape)))
    if contiguous and not t.is_contiguous():
        _fail("%s must be contiguous" % name)
    return t


def _same_device(first_name, first, **others):
    """The kernels run on first's device; every other tensor must live there too."""
    for name, t in others.items():
        if t.device != first.device:
            _fail("%s is on %s but %s is on %s: every tensor must be on the same device"
                  % (name, t.device, first_name, first.device))


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


class FlashMLASchedMeta:
    """The lazy plan of FlashMLA's 2026 API: ``get_mla_metadata()`` (no
    arguments) returns ``(FlashMLASchedMeta(), None)``; the first
    ``flash_mla_with_kvcache`` call given it (with ``num_splits=None``)
    computes the plan for its arguments and keeps it, later calls reuse it
    and must have the same configuration (batch, s_q, h_q, h_kv, page size,
    causal, FP8 cache, topk, the extra cache's topk and page size, device).
    As upstream, reuse it across layers only while cache_seqlens,
    topk_length and extra_topk_length keep their values (on the CPU a stale
    plan is rejected by the library; on the GPU it is trusted).

    Attributes: num_sms (the SM count the plan is made for), config (None
    until the first call), tile_scheduler_metadata, num_splits.
    """

    def __init__(self, num_sms=DEFAULT_NUM_SMS):
        self.num_sms = num_sms
        self.config = None
        self.tile_scheduler_metadata = None
        self.num_splits = None

    def __repr__(self):
        return "FlashMLASchedMeta(num_sms=%d, config=%r)" % (self.num_sms, self.config)


def get_mla_metadata(cache_seqlens=None, num_heads_per_head_k=None, num_heads_k=None,
                     num_heads_q=None, is_fp8_kvcache=False, topk=None, *,
                     num_sms=DEFAULT_NUM_SMS, topk_length=None, extra_topk=None,
                     extra_topk_length=None):
    """The split-KV plan: (tile_scheduler_metadata int32 [num_sm_parts, 8],
    num_splits int32 [b + 1], or [b * s_q + 1] for a sparse decode).

    Called without cache_seqlens, num_heads_per_head_k, num_heads_k and
    topk_length (FlashMLA's 2026 API), it returns (FlashMLASchedMeta(num_sms),
    None): the plan is made by the first flash_mla_with_kvcache call.

    Dense (topk None): num_heads_per_head_k is s_q * h_q // h_kv and
    num_heads_k is h_kv, as upstream; num_sm_parts =
    max(num_sms // h_kv // ceil(num_heads_per_head_k / 64), 1); num_heads_q
    and is_fp8_kvcache are not used (topk_length is an error).

    Sparse (topk set, FlashMLA's Sept-2025 signature): num_heads_q (h_q) is
    required, s_q = num_heads_per_head_k * h_kv // h_q; each query position
    (b, t) is one request of topk_length[b] (or topk) keys and num_sm_parts =
    max(num_sms // h_kv // ceil((h_q // h_kv) / 64), 1). The batch is
    len(cache_seqlens) (its values are not used), or len(topk_length) when
    cache_seqlens is None. is_fp8_kvcache does not change the plan. With an
    extra cache pass extra_topk (extra_indices_in_kvcache.shape[2]) and the
    decode's extra_topk_length: request (b, t) then has
    ceil(n_b / 64) * 64 + e_b keys (mla.h, "Sparse decode").
    """
    if (cache_seqlens is None and num_heads_per_head_k is None and num_heads_k is None
            and topk_length is None):
        return FlashMLASchedMeta(num_sms), None
    if num_heads_per_head_k is None or num_heads_k is None:
        _fail("num_heads_per_head_k and num_heads_k are required with cache_seqlens or "
              "topk_length (call get_mla_metadata() without arguments for the lazy plan)")
    if topk is not None:
        return _sparse_metadata(cache_seqlens, num_heads_per_head_k, num_heads_k, num_heads_q,
                                topk, num_sms, topk_length, extra_topk, extra_topk_length)
    for name, value in (("topk_length", topk_length), ("extra_topk", extra_topk),
                        ("extra_topk_length", extra_topk_length)):
        if value is not None:
            _fail("%s is only used with topk (a sparse plan)" % name)
    if cache_seqlens is None:
        _fail("cache_seqlens is required for a dense plan (topk is None)")
    parts = ctypes.c_int32()
    if _on_device(cache_seqlens):
        import torch

        seqlens = _torch_check(_as_torch_cuda(cache_seqlens, "cache_seqlens"), "cache_seqlens",
                               (torch.int32,), 1)
        _lib.lib().dinf_mla_num_sm_parts(
            _lib.int32_arg("num_heads_per_head_k", num_heads_per_head_k),
            _lib.int32_arg("num_heads_k", num_heads_k),
            _lib.int32_arg("num_sms", num_sms), ctypes.byref(parts))
        b = seqlens.shape[0]
        meta = torch.empty((parts.value, METADATA_INTS), dtype=torch.int32, device=seqlens.device)
        splits = torch.empty((b + 1,), dtype=torch.int32, device=seqlens.device)
        _lib.lib().dinf_mla_get_metadata(
            _dev(seqlens, ctypes.c_int32), b, parts.value, _dev(meta, ctypes.c_int32),
            _dev(splits, ctypes.c_int32), ctypes.byref(_cuda_exec(seqlens)))
        return meta, splits
    seqlens = _int32_array(cache_seqlens, "cache_seqlens", 1)
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


def _plan_extras(extra_topk, extra_topk_length, b, on_device):
    """(MlaSparseExtras or None, the lengths array to keep alive) for a sparse plan."""
    if extra_topk is None:
        if extra_topk_length is not None:
            _fail("extra_topk_length needs extra_topk (the extra lists' length)")
        return None, None
    ex = _lib.MlaSparseExtras()
    ex.extra_topk = _lib.int32_arg("extra_topk", extra_topk)
    lengths = None
    if extra_topk_length is not None:
        if on_device:
            import torch

            lengths = _torch_check(_as_torch_cuda(extra_topk_length, "extra_topk_length"),
                                   "extra_topk_length", (torch.int32,), 1)
            ex.extra_topk_length = _dev(lengths, ctypes.c_int32)
        else:
            lengths = _int32_array(extra_topk_length, "extra_topk_length", 1)
            ex.extra_topk_length = _ptr(lengths, ctypes.c_int32)
        if lengths.shape[0] != b:
            _fail("extra_topk_length has %d entries, the batch is %d: it is [b]"
                  % (lengths.shape[0], b))
    return ex, lengths


def _sparse_metadata(cache_seqlens, num_heads_per_head_k, num_heads_k, num_heads_q, topk,
                     num_sms, topk_length, extra_topk=None, extra_topk_length=None):
    """get_mla_metadata with topk: dinf_mla_get_sparse_metadata."""
    if num_heads_q is None:
        _fail("num_heads_q is required with topk (a sparse plan): s_q = "
              "num_heads_per_head_k * num_heads_k // num_heads_q")
    rows = _lib.int32_arg("num_heads_per_head_k", num_heads_per_head_k)
    h_kv = _lib.int32_arg("num_heads_k", num_heads_k)
    h_q = _lib.int32_arg("num_heads_q", num_heads_q)
    topk = _lib.int32_arg("topk", topk)
    num_sms = _lib.int32_arg("num_sms", num_sms)
    if h_kv < 1 or h_q < 1 or rows < 1:
        _fail("num_heads_per_head_k=%d, num_heads_k=%d and num_heads_q=%d must be >= 1"
              % (rows, h_kv, h_q))
    if h_q % h_kv:
        _fail("num_heads_q=%d is not a multiple of num_heads_k=%d" % (h_q, h_kv))
    if rows * h_kv % h_q:
        _fail("num_heads_per_head_k=%d is not s_q * num_heads_q / num_heads_k for any s_q "
              "(num_heads_q=%d, num_heads_k=%d)" % (rows, h_q, h_kv))
    s_q = rows * h_kv // h_q
    parts = ctypes.c_int32()
    _lib.lib().dinf_mla_num_sm_parts(h_q // h_kv, h_kv, num_sms, ctypes.byref(parts))
    parts = parts.value
    if cache_seqlens is None and topk_length is None:
        _fail("a sparse plan needs the batch size: pass cache_seqlens or topk_length")
    if topk_length is not None:
        where = topk_length
    else:
        where = cache_seqlens
    b = None
    if cache_seqlens is not None:
        b = _batch_of(cache_seqlens, "cache_seqlens")
    if _on_device(where):
        import torch

        lengths = None
        if topk_length is not None:
            lengths = _torch_check(_as_torch_cuda(topk_length, "topk_length"), "topk_length",
                                   (torch.int32,), 1)
            device = lengths.device
        else:
            device = _as_torch_cuda(cache_seqlens, "cache_seqlens").device
    else:
        lengths = None if topk_length is None else _int32_array(topk_length, "topk_length", 1)
        device = None
    if lengths is not None:
        if b is not None and lengths.shape[0] != b:
            _fail("topk_length has %d entries but cache_seqlens %d: both are [b]"
                  % (lengths.shape[0], b))
        b = lengths.shape[0]
    if b * s_q > MAX_BATCH:  # before allocating num_splits
        _fail("batch * s_q = %d * %d exceeds %d (DINF_MLA_MAX_BATCH)" % (b, s_q, MAX_BATCH))
    n = b * s_q + 1
    ex, ex_lengths = _plan_extras(extra_topk, extra_topk_length, b, device is not None)
    if ex_lengths is not None and device is not None and ex_lengths.device != device:
        _fail("extra_topk_length is on %s but the plan's lengths are on %s"
              % (ex_lengths.device, device))
    pex = None if ex is None else ctypes.byref(ex)
    if device is not None:
        import torch

        meta = torch.empty((parts, METADATA_INTS), dtype=torch.int32, device=device)
        splits = torch.empty((n,), dtype=torch.int32, device=device)
        _lib.lib().dinf_mla_get_sparse_metadata(
            None if lengths is None else _dev(lengths, ctypes.c_int32), b, s_q, topk, parts,
            _dev(meta, ctypes.c_int32), _dev(splits, ctypes.c_int32), pex,
            ctypes.byref(_cuda_exec(meta)))
        return meta, splits
    meta = np.empty((parts, METADATA_INTS), np.int32)
    splits = np.empty((n,), np.int32)
    _lib.lib().dinf_mla_get_sparse_metadata(
        None if lengths is None else _ptr(lengths, ctypes.c_int32), b, s_q, topk, parts,
        _ptr(meta, ctypes.c_int32), _ptr(splits, ctypes.c_int32), pex, None)
    return meta, splits


def _batch_of(x, name):
    """len(x) of a 1-D array on either side (only the length is used)."""
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    if len(shape) != 1:
        _fail("%s must be 1-D, got shape %s" % (name, shape))
    return shape[0]


def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v,
                           tile_scheduler_metadata, num_splits, softmax_scale=None,
                           causal=False, is_fp8_kvcache=False, indices=None, *,
                           topk_length=None, num_threads=0, attn_sink=None, extra_k_cache=None,
                           extra_indices_in_kvcache=None, extra_topk_length=None):
    """MLA decode: (out bfloat16 [b, s_q, h_q, head_dim_v], lse float32 [b, h_q, s_q]).

    softmax_scale defaults to q.shape[-1] ** -0.5 (1/sqrt(576)), as upstream;
    causal is bottom-right aligned (no effect when s_q == 1). is_fp8_kvcache
    selects the FP8 cache ([num_blocks, page, h_kv, 656] bytes). On the CPU a
    non-contiguous k_cache is copied (the C API takes page and token strides;
    use it directly to avoid the copy); on the GPU its page and token strides
    are passed as they are (last two dimensions contiguous).

    indices (int32 [b, s_q, topk]) selects the sparse decode: each query
    position attends to the cache slots it lists (see the module docstring);
    block_table and cache_seqlens are then ignored (may be None), causal
    must be False, topk_length (int32 [b] or None) must be the one given to
    get_mla_metadata, and the metadata must come from get_mla_metadata with
    the same topk, num_heads_q and topk_length.

    The sparse decode also takes FlashMLA's 2026 keywords (module
    docstring): attn_sink (float32 [h_q]), extra_k_cache (the same dtype and
    h_kv as k_cache, any page size), extra_indices_in_kvcache (int32
    [b, s_q, extra_topk], required with extra_k_cache) and
    extra_topk_length (int32 [b] or None). The lazy plan (get_mla_metadata()
    without arguments) accounts for the extra lists by itself; an eager plan
    must be made with get_mla_metadata(..., extra_topk=, extra_topk_length=)
    (the CPU path rejects one made without; the GPU path trusts it and would
    stop at the keys it planned). The dense decode takes none of them
    (UnsupportedError, as upstream).
    """
    extras = dict(attn_sink=attn_sink, extra_k_cache=extra_k_cache,
                  extra_indices=extra_indices_in_kvcache, extra_topk_length=extra_topk_length)
    if indices is None:
        for name, value in (("attn_sink", attn_sink), ("extra_k_cache", extra_k_cache),
                            ("extra_indices_in_kvcache", extra_indices_in_kvcache),
                            ("extra_topk_length", extra_topk_length)):
            if value is not None:
                raise UnsupportedError("flash_mla_with_kvcache: %s is supported by the sparse "
                                       "decode only (pass indices), as upstream" % name)
    _check_extras_given(extras)  # before a lazy plan records the configuration
    if isinstance(tile_scheduler_metadata, FlashMLASchedMeta):
        tile_scheduler_metadata, num_splits = _lazy_plan(
            tile_scheduler_metadata, num_splits, q, k_cache, cache_seqlens, causal,
            is_fp8_kvcache, indices, topk_length, extra_indices_in_kvcache, extra_topk_length,
            extra_k_cache)
    if indices is not None:
        if causal:
            _fail("causal=True is not supported with indices: a sparse decode has no causal "
                  "mask (the indices decide which keys each query position sees)")
        if _on_device(q):
            return _sparse_device(q, k_cache, head_dim_v, tile_scheduler_metadata, num_splits,
                                  softmax_scale, is_fp8_kvcache, indices, topk_length, extras)
        return _sparse_cpu(q, k_cache, head_dim_v, tile_scheduler_metadata, num_splits,
                           softmax_scale, is_fp8_kvcache, indices, topk_length, num_threads,
                           extras)
    if topk_length is not None:
        _fail("topk_length is only used with indices (a sparse decode)")
    if _on_device(q):
        return _flash_mla_device(q, k_cache, block_table, cache_seqlens, head_dim_v,
                                 tile_scheduler_metadata, num_splits, softmax_scale, causal,
                                 is_fp8_kvcache)
    q = np.ascontiguousarray(_bf16_array(q, "q", 4))
    b, s_q, h_q, d = q.shape
    k_cache, (num_blocks, page, h_kv), block_stride, token_stride = \
        _cpu_cache(k_cache, is_fp8_kvcache, d)
    if block_table is None or cache_seqlens is None:
        _fail("block_table and cache_seqlens are required for a dense decode (no indices)")
    block_table = _int32_array(block_table, "block_table", 2)
    seqlens = _int32_array(cache_seqlens, "cache_seqlens", 1)
    meta = _int32_array(tile_scheduler_metadata, "tile_scheduler_metadata", 2)
    splits = _int32_array(num_splits, "num_splits", 1)
    _check_batch(b, block_table.shape, seqlens.shape, meta.shape, splits.shape)
    softmax_scale = _scale(softmax_scale, d)
    head_dim_v = _lib.int32_arg("head_dim_v", head_dim_v)
    parts = meta.shape[0]
    if parts < 1 or s_q < 1 or h_q < 1:
        _fail("tile_scheduler_metadata has %d parts, q has s_q=%d, h_q=%d: each must be >= 1"
              % (parts, s_q, h_q))
    place = Exec.cpu(num_threads)
    workspace, ws_ptr, ws_bytes = _cpu_workspace(b, s_q, h_q, parts, place)
    out = np.empty((b, s_q, h_q, max(head_dim_v, 0)), np.uint16)
    lse = np.empty((b, h_q, s_q), np.float32)
    if is_fp8_kvcache:
        fn, kc = (_lib.lib().dinf_mla_decode_with_kvcache_fp8,
                  ctypes.cast(k_cache.ctypes.data, ctypes.POINTER(ctypes.c_uint8)))
    else:
        fn, kc = (_lib.lib().dinf_mla_decode_with_kvcache,
                  ctypes.cast(k_cache.ctypes.data, ctypes.POINTER(ctypes.c_uint16)))
    fn(_ptr(q.view(np.uint16), ctypes.c_uint16), b, s_q, h_q, d, kc, num_blocks, page,
       h_kv, block_stride, token_stride, _ptr(block_table, ctypes.c_int32),
       block_table.shape[1], _ptr(seqlens, ctypes.c_int32), head_dim_v,
       _ptr(meta, ctypes.c_int32), parts, _ptr(splits, ctypes.c_int32),
       softmax_scale, 1 if causal else 0, ws_ptr, ws_bytes,
       _ptr(out, ctypes.c_uint16), _ptr(lse, ctypes.c_float), ctypes.byref(place))
    del workspace  # kept alive through the call
    return out.view(_BF16), lse


def _model1_strides(shape, strides, name):
    """(page stride) of a MODEL1 cache view [num_blocks, page, 1, 584] in bytes."""
    if len(shape) != 4 or shape[2] != 1 or shape[3] != MODEL1_TOKEN_BYTES:
        _fail("a MODEL1 %s (head_dim 512) must be [num_blocks, page_block_size, 1, %d] bytes, "
              "got shape %s" % (name, MODEL1_TOKEN_BYTES, tuple(shape)))
    if strides[1] != MODEL1_TOKEN_BYTES or strides[3] != 1:  # (the head dimension has size 1)
        _fail("a MODEL1 %s must have byte strides (page, 584, any, 1) (FlashMLA's view of the "
              "block-major pages), got %s" % (name, tuple(strides)))
    return strides[0]


def _cpu_cache(k_cache, is_fp8_kvcache, d, name="k_cache"):
    """The CPU k_cache (contiguous) with (num_blocks, page, h_kv) and its page and
    token strides (elements for BF16, bytes for FP8). The MODEL1 cache (d = 512,
    FP8) keeps its own strides (its pages may be padded)."""
    if is_fp8_kvcache and d == MODEL1_HEAD_DIM:
        k_cache = np.asarray(k_cache)
        if k_cache.dtype.itemsize != 1:
            _fail("a MODEL1 %s must be uint8 or float8_e4m3fn bytes, got %s"
                  % (name, k_cache.dtype))
        k_cache = k_cache.view(np.uint8)
        page_stride = _model1_strides(k_cache.shape, k_cache.strides, name)
        num_blocks, page, h_kv, _ = k_cache.shape
        return k_cache, (num_blocks, page, h_kv), page_stride, MODEL1_TOKEN_BYTES
    if is_fp8_kvcache:
        k_cache = _fp8_cache_array(k_cache, name)
        num_blocks, page, h_kv, entry = k_cache.shape
    else:
        k_cache = _bf16_array(k_cache, name, 4)
        num_blocks, page, h_kv, dk = k_cache.shape
        if dk == FP8_ENTRY_BYTES:
            _fail("%s has %d-wide rows: pass is_fp8_kvcache=True for an FP8 cache" % (name, dk))
        if dk != d:
            _fail("%s's last dimension %d differs from q's %d" % (name, dk, d))
        entry = dk
    k_cache = np.ascontiguousarray(k_cache)  # no copy when already contiguous
    token_stride = h_kv * entry
    return k_cache, (num_blocks, page, h_kv), page * token_stride, token_stride


def _cpu_workspace(batch, s_q, h_q, parts, place):
    """(owner array, 64-byte aligned pointer, bytes) of the decode's CPU workspace."""
    ws_bytes = ctypes.c_size_t()
    _lib.lib().dinf_mla_workspace_size(batch, s_q, h_q, parts, ctypes.byref(ws_bytes),
                                       ctypes.byref(place))
    workspace = np.empty((ws_bytes.value + 64,), np.uint8)
    ws_off = (-workspace.ctypes.data) % 64
    return workspace, ctypes.c_void_p(workspace.ctypes.data + ws_off), ws_bytes.value


def _check_sparse(q_shape, indices_shape, lengths_shape, meta_shape, splits_shape):
    b, s_q = q_shape[0], q_shape[1]
    if tuple(indices_shape[:2]) != (b, s_q) or indices_shape[2] < 1:
        _fail("indices must be [b, s_q, topk] = [%d, %d, topk >= 1] as q %s, got shape %s"
              % (b, s_q, tuple(q_shape), tuple(indices_shape)))
    if lengths_shape is not None and tuple(lengths_shape) != (b,):
        _fail("topk_length must have shape (%d,) (one length per request), got %s"
              % (b, tuple(lengths_shape)))
    if tuple(meta_shape[1:]) != (METADATA_INTS,) or meta_shape[0] < 1:
        _fail("tile_scheduler_metadata must be [num_sm_parts >= 1, %d], got shape %s"
              % (METADATA_INTS, tuple(meta_shape)))
    if tuple(splits_shape) != (b * s_q + 1,):
        _fail("num_splits must have shape (%d,) = (b * s_q + 1,) for a sparse decode, got %s "
              "(pass the plan of get_mla_metadata(..., num_heads_q, topk=...))"
              % (b * s_q + 1, tuple(splits_shape)))


def _check_extras_given(extras):
    if extras["extra_k_cache"] is None:
        if extras["extra_indices"] is not None or extras["extra_topk_length"] is not None:
            _fail("extra_indices_in_kvcache and extra_topk_length need extra_k_cache")
    elif extras["extra_indices"] is None:
        _fail("extra_indices_in_kvcache must be given with extra_k_cache")


def _cpu_extras(extras, is_fp8_kvcache, d, b, s_q, h_q, h_kv):
    """(MlaSparseExtras or None, arrays to keep alive) of a CPU sparse decode."""
    _check_extras_given(extras)
    if extras["attn_sink"] is None and extras["extra_k_cache"] is None:
        return None, []
    ex = _lib.MlaSparseExtras()
    keep = []
    if extras["attn_sink"] is not None:
        sink = np.asarray(extras["attn_sink"])
        if sink.dtype.kind != "f" or sink.shape != (h_q,):
            _fail("attn_sink must be a float array of shape (%d,) (one per query head), got %s %s"
                  % (h_q, sink.dtype, sink.shape))
        sink = np.ascontiguousarray(sink, dtype=np.float32)
        keep.append(sink)
        ex.attn_sink = _ptr(sink, ctypes.c_float)
    if extras["extra_k_cache"] is not None:
        ekc, (e_blocks, e_page, e_h_kv), e_bs, e_ts = \
            _cpu_cache(extras["extra_k_cache"], is_fp8_kvcache, d, "extra_k_cache")
        if e_h_kv != h_kv:
            _fail("extra_k_cache has %d KV heads, k_cache %d: they must agree" % (e_h_kv, h_kv))
        eidx = _int32_array(extras["extra_indices"], "extra_indices_in_kvcache", 3)
        if tuple(eidx.shape[:2]) != (b, s_q) or eidx.shape[2] < 1:
            _fail("extra_indices_in_kvcache must be [b, s_q, extra_topk] = [%d, %d, >= 1], got %s"
                  % (b, s_q, eidx.shape))
        keep += [ekc, eidx]
        ex.extra_topk = _lib.int32_arg("extra_topk (extra_indices_in_kvcache.shape[2])",
                                       eidx.shape[2])
        ex.extra_indices = _ptr(eidx, ctypes.c_int32)
        ex.extra_k_cache = ctypes.c_void_p(ekc.ctypes.data)
        ex.extra_num_blocks, ex.extra_page_block_size = e_blocks, e_page
        ex.extra_kv_block_stride, ex.extra_kv_token_stride = e_bs, e_ts
        if extras["extra_topk_length"] is not None:
            etl = _int32_array(extras["extra_topk_length"], "extra_topk_length", 1)
            if etl.shape != (b,):
                _fail("extra_topk_length must have shape (%d,), got %s" % (b, etl.shape))
            keep.append(etl)
            ex.extra_topk_length = _ptr(etl, ctypes.c_int32)
    return ex, keep


def _sparse_cpu(q, k_cache, head_dim_v, tile_scheduler_metadata, num_splits, softmax_scale,
                is_fp8_kvcache, indices, topk_length, num_threads, extras):
    q = np.ascontiguousarray(_bf16_array(q, "q", 4))
    b, s_q, h_q, d = q.shape
    k_cache, (num_blocks, page, h_kv), block_stride, token_stride = \
        _cpu_cache(k_cache, is_fp8_kvcache, d)
    indices = _int32_array(indices, "indices", 3)
    lengths = None if topk_length is None else _int32_array(topk_length, "topk_length", 1)
    meta = _int32_array(tile_scheduler_metadata, "tile_scheduler_metadata", 2)
    splits = _int32_array(num_splits, "num_splits", 1)
    _check_sparse(q.shape, indices.shape, None if lengths is None else lengths.shape,
                  meta.shape, splits.shape)
    topk = _lib.int32_arg("topk (indices.shape[2])", indices.shape[2])
    softmax_scale = _scale(softmax_scale, d)
    head_dim_v = _lib.int32_arg("head_dim_v", head_dim_v)
    parts = meta.shape[0]
    ex, keep = _cpu_extras(extras, is_fp8_kvcache, d, b, s_q, h_q, h_kv)
    place = Exec.cpu(num_threads)
    workspace, ws_ptr, ws_bytes = _cpu_workspace(b * s_q, 1, h_q, parts, place)
    out = np.empty((b, s_q, h_q, max(head_dim_v, 0)), np.uint16)
    lse = np.empty((b, h_q, s_q), np.float32)
    if is_fp8_kvcache:
        fn, kc = (_lib.lib().dinf_mla_sparse_decode_with_kvcache_fp8,
                  ctypes.cast(k_cache.ctypes.data, ctypes.POINTER(ctypes.c_uint8)))
    else:
        fn, kc = (_lib.lib().dinf_mla_sparse_decode_with_kvcache,
                  ctypes.cast(k_cache.ctypes.data, ctypes.POINTER(ctypes.c_uint16)))
    fn(_ptr(q.view(np.uint16), ctypes.c_uint16), b, s_q, h_q, d, kc, num_blocks, page, h_kv,
       block_stride, token_stride, _ptr(indices, ctypes.c_int32), topk,
       None if lengths is None else _ptr(lengths, ctypes.c_int32), head_dim_v,
       _ptr(meta, ctypes.c_int32), parts, _ptr(splits, ctypes.c_int32), softmax_scale,
       ws_ptr, ws_bytes, _ptr(out, ctypes.c_uint16), _ptr(lse, ctypes.c_float),
       None if ex is None else ctypes.byref(ex), ctypes.byref(place))
    del workspace, keep  # kept alive through the call
    return out.view(_BF16), lse


def _lazy_plan(sched, num_splits, q, k_cache, cache_seqlens, causal, is_fp8_kvcache, indices,
               topk_length, extra_indices=None, extra_topk_length=None, extra_k_cache=None):
    """The plan of a FlashMLASchedMeta: made on its first call, reused after
    (the configuration must not change)."""
    if num_splits is not None:
        _fail("num_splits must be None with a FlashMLASchedMeta (the plan is made by the call)")
    shape = tuple(int(d) for d in q.shape)
    kshape = tuple(int(d) for d in k_cache.shape)
    if len(shape) != 4 or len(kshape) != 4:
        _fail("q and k_cache must be 4-D, got shapes %s and %s" % (shape, kshape))
    b, s_q, h_q, _ = shape
    page, h_kv = kshape[1], kshape[2]
    if h_kv < 1 or h_q % h_kv:
        _fail("num_heads_q=%d is not a multiple of num_heads_k=%d" % (h_q, h_kv))
    topk = None if indices is None else int(indices.shape[-1])
    extra_topk = None if extra_indices is None else int(extra_indices.shape[-1])
    extra_page = None if extra_k_cache is None else int(extra_k_cache.shape[1])
    device = str(q.device) if _on_device(q) else "cpu"
    config = {"b": b, "s_q": s_q, "h_q": h_q, "h_kv": h_kv, "page_block_size": page,
              "causal": bool(causal), "is_fp8_kvcache": bool(is_fp8_kvcache), "topk": topk,
              "extra_topk": extra_topk, "extra_page_block_size": extra_page, "device": device}
    if sched.config is None:
        if indices is None:
            lengths = cache_seqlens
        else:  # the batch size only (the sparse plan reads topk_length)
            lengths = cache_seqlens
            if lengths is None and topk_length is None:
                if _on_device(q):
                    import torch

                    lengths = torch.zeros(b, dtype=torch.int32, device=q.device)
                else:
                    lengths = np.zeros(b, np.int32)
        meta, splits = get_mla_metadata(lengths, s_q * h_q // h_kv, h_kv, h_q, is_fp8_kvcache,
                                        topk, num_sms=sched.num_sms, topk_length=topk_length,
                                        **({} if indices is None else
                                           {"extra_topk": extra_topk,
                                            "extra_topk_length": extra_topk_length}))
        sched.config = config
        sched.tile_scheduler_metadata, sched.num_splits = meta, splits
    elif sched.config != config:
        changed = ", ".join("%s %r -> %r" % (k, sched.config[k], config[k])
                            for k in config if sched.config[k] != config[k])
        _fail("this FlashMLASchedMeta was made for another configuration (%s): use one per "
              "configuration" % changed)
    return sched.tile_scheduler_metadata, sched.num_splits


def _fp8_cache_array(k_cache, name="k_cache"):
    k_cache = np.asarray(k_cache)
    if k_cache.dtype.itemsize != 1 or k_cache.dtype.kind not in "uiV" and \
            "float8" not in str(k_cache.dtype):
        _fail("an FP8 %s must be uint8 or float8_e4m3fn bytes, got %s" % (name, k_cache.dtype))
    if k_cache.ndim != 4 or k_cache.shape[-1] != FP8_ENTRY_BYTES:
        _fail("an FP8 %s must be [num_blocks, page_block_size, h_kv, %d], got shape %s"
              % (name, FP8_ENTRY_BYTES, k_cache.shape))
    return k_cache.view(np.uint8)


def _check_batch(b, bt_shape, sl_shape, meta_shape, splits_shape):
    if bt_shape[0] != b or sl_shape[0] != b:
        _fail("block_table has %d rows and cache_seqlens %d entries; q has batch %d"
              % (bt_shape[0], sl_shape[0], b))
    if tuple(meta_shape[1:]) != (METADATA_INTS,):
        _fail("tile_scheduler_metadata must be [num_sm_parts, %d], got shape %s"
              % (METADATA_INTS, tuple(meta_shape)))
    if tuple(splits_shape) != (b + 1,):
        _fail("num_splits must have shape (%d,), got %s" % (b + 1, tuple(splits_shape)))


def _scale(softmax_scale, d):
    if softmax_scale is None:
        softmax_scale = d ** -0.5
    softmax_scale = float(softmax_scale)
    if not math.isfinite(softmax_scale):
        _fail("softmax_scale=%r is not finite" % softmax_scale)
    return softmax_scale


def _device_cache(k_cache, is_fp8_kvcache, d=HEAD_DIM_QK, name="k_cache"):
    """The GPU k_cache as a torch tensor (last two dimensions contiguous) and its
    C pointer (uint16 for BF16, uint8 for FP8). The MODEL1 cache (d = 512, FP8):
    FlashMLA's [num_blocks, page, 1, 584] byte view, strides (page, 584, 584, 1)."""
    import torch

    k_cache = _as_torch_cuda(k_cache, name)
    if is_fp8_kvcache and d == MODEL1_HEAD_DIM:
        if k_cache.element_size() != 1:
            _fail("a MODEL1 %s must be uint8 or float8_e4m3fn bytes, got %s"
                  % (name, k_cache.dtype))
        _model1_strides(tuple(k_cache.shape), tuple(k_cache.stride()), name)
        return k_cache, _dev(k_cache, ctypes.c_uint8)
    if is_fp8_kvcache:
        if k_cache.element_size() != 1:
            _fail("an FP8 %s must be uint8 or float8_e4m3fn bytes, got %s" % (name, k_cache.dtype))
        _torch_check(k_cache, name, (k_cache.dtype,), 4, contiguous=False)
        if k_cache.shape[-1] != FP8_ENTRY_BYTES:
            _fail("an FP8 %s must be [num_blocks, page_block_size, h_kv, %d], got shape %s"
                  % (name, FP8_ENTRY_BYTES, tuple(k_cache.shape)))
    else:
        _torch_check(k_cache, name, (torch.bfloat16,), 4, contiguous=False)
        if k_cache.shape[-1] != d:
            _fail("%s's last dimension %d differs from q's %d" % (name, k_cache.shape[-1], d))
    entry = k_cache.shape[-1]
    if k_cache.stride(3) != 1 or k_cache.stride(2) != entry:
        _fail("%s's last two dimensions must be contiguous, strides %s"
              % (name, k_cache.stride(),))
    return k_cache, _dev(k_cache, ctypes.c_uint8 if is_fp8_kvcache else ctypes.c_uint16)


def _flash_mla_device(q, k_cache, block_table, cache_seqlens, head_dim_v,
                      tile_scheduler_metadata, num_splits, softmax_scale, causal, is_fp8_kvcache):
    import torch

    q = _torch_check(_as_torch_cuda(q, "q"), "q", (torch.bfloat16,), 4)
    k_cache, kc = _device_cache(k_cache, is_fp8_kvcache, q.shape[-1])
    if block_table is None or cache_seqlens is None:
        _fail("block_table and cache_seqlens are required for a dense decode (no indices)")
    block_table = _torch_check(_as_torch_cuda(block_table, "block_table"), "block_table",
                               (torch.int32,), 2)
    seqlens = _torch_check(_as_torch_cuda(cache_seqlens, "cache_seqlens"), "cache_seqlens",
                           (torch.int32,), 1)
    meta = _torch_check(_as_torch_cuda(tile_scheduler_metadata, "tile_scheduler_metadata"),
                        "tile_scheduler_metadata", (torch.int32,), 2)
    splits = _torch_check(_as_torch_cuda(num_splits, "num_splits"), "num_splits",
                          (torch.int32,), 1)
    _same_device("q", q, k_cache=k_cache, block_table=block_table, cache_seqlens=seqlens,
                 tile_scheduler_metadata=meta, num_splits=splits)
    b, s_q, h_q, d = q.shape
    num_blocks, page, h_kv, _ = k_cache.shape
    _check_batch(b, block_table.shape, seqlens.shape, meta.shape, splits.shape)
    softmax_scale = _scale(softmax_scale, d)
    head_dim_v = _lib.int32_arg("head_dim_v", head_dim_v)
    parts = meta.shape[0]
    if parts < 1:
        _fail("tile_scheduler_metadata has no parts")
    place = _cuda_exec(q)
    workspace, ws_bytes = _device_workspace(b, s_q, h_q, parts, place, q.device)
    out = torch.empty((b, s_q, h_q, max(head_dim_v, 0)), dtype=torch.bfloat16, device=q.device)
    lse = torch.empty((b, h_q, s_q), dtype=torch.float32, device=q.device)
    fn = (_lib.lib().dinf_mla_decode_with_kvcache_fp8 if is_fp8_kvcache
          else _lib.lib().dinf_mla_decode_with_kvcache)
    fn(_dev(q, ctypes.c_uint16), b, s_q, h_q, d, kc, num_blocks, page, h_kv,
       k_cache.stride(0), k_cache.stride(1), _dev(block_table, ctypes.c_int32),
       block_table.shape[1], _dev(seqlens, ctypes.c_int32), head_dim_v,
       _dev(meta, ctypes.c_int32), parts, _dev(splits, ctypes.c_int32), softmax_scale,
       1 if causal else 0, ctypes.c_void_p(workspace.data_ptr()), ws_bytes,
       _dev(out, ctypes.c_uint16), _dev(lse, ctypes.c_float), ctypes.byref(place))
    return out, lse


def _device_workspace(batch, s_q, h_q, parts, place, device):
    import torch

    ws_bytes = ctypes.c_size_t()
    _lib.lib().dinf_mla_workspace_size(batch, s_q, h_q, parts, ctypes.byref(ws_bytes),
                                       ctypes.byref(place))
    workspace = torch.empty((max(ws_bytes.value, 1),), dtype=torch.uint8, device=device)
    return workspace, ws_bytes.value


def _device_extras(extras, is_fp8_kvcache, q, b, s_q, h_q, h_kv):
    """(MlaSparseExtras or None, tensors to keep alive) of a GPU sparse decode."""
    import torch

    _check_extras_given(extras)
    if extras["attn_sink"] is None and extras["extra_k_cache"] is None:
        return None, []
    ex = _lib.MlaSparseExtras()
    keep = []
    if extras["attn_sink"] is not None:
        sink = _torch_check(_as_torch_cuda(extras["attn_sink"], "attn_sink"), "attn_sink",
                            (torch.float32,), 1)
        if tuple(sink.shape) != (h_q,):
            _fail("attn_sink must have shape (%d,) (one per query head), got %s"
                  % (h_q, tuple(sink.shape)))
        keep.append(sink)
        ex.attn_sink = _dev(sink, ctypes.c_float)
    if extras["extra_k_cache"] is not None:
        ekc, _ = _device_cache(extras["extra_k_cache"], is_fp8_kvcache, q.shape[-1],
                                "extra_k_cache")
        if ekc.shape[2] != h_kv:
            _fail("extra_k_cache has %d KV heads, k_cache %d: they must agree"
                  % (ekc.shape[2], h_kv))
        eidx = _torch_check(_as_torch_cuda(extras["extra_indices"], "extra_indices_in_kvcache"),
                            "extra_indices_in_kvcache", (torch.int32,), 3)
        if tuple(eidx.shape[:2]) != (b, s_q) or eidx.shape[2] < 1:
            _fail("extra_indices_in_kvcache must be [b, s_q, extra_topk] = [%d, %d, >= 1], got %s"
                  % (b, s_q, tuple(eidx.shape)))
        keep += [ekc, eidx]
        ex.extra_topk = _lib.int32_arg("extra_topk (extra_indices_in_kvcache.shape[2])",
                                       eidx.shape[2])
        ex.extra_indices = _dev(eidx, ctypes.c_int32)
        ex.extra_k_cache = ekc.data_ptr()
        ex.extra_num_blocks, ex.extra_page_block_size = ekc.shape[0], ekc.shape[1]
        ex.extra_kv_block_stride, ex.extra_kv_token_stride = ekc.stride(0), ekc.stride(1)
        if extras["extra_topk_length"] is not None:
            etl = _torch_check(_as_torch_cuda(extras["extra_topk_length"], "extra_topk_length"),
                               "extra_topk_length", (torch.int32,), 1)
            if tuple(etl.shape) != (b,):
                _fail("extra_topk_length must have shape (%d,), got %s" % (b, tuple(etl.shape)))
            keep.append(etl)
            ex.extra_topk_length = _dev(etl, ctypes.c_int32)
    _same_device("q", q, **{"extra_%d" % i: t for i, t in enumerate(keep)})
    return ex, keep


def _sparse_device(q, k_cache, head_dim_v, tile_scheduler_metadata, num_splits, softmax_scale,
                   is_fp8_kvcache, indices, topk_length, extras):
    import torch

    q = _torch_check(_as_torch_cuda(q, "q"), "q", (torch.bfloat16,), 4)
    k_cache, kc = _device_cache(k_cache, is_fp8_kvcache, q.shape[-1])
    indices = _torch_check(_as_torch_cuda(indices, "indices"), "indices", (torch.int32,), 3)
    lengths = None
    if topk_length is not None:
        lengths = _torch_check(_as_torch_cuda(topk_length, "topk_length"), "topk_length",
                               (torch.int32,), 1)
    meta = _torch_check(_as_torch_cuda(tile_scheduler_metadata, "tile_scheduler_metadata"),
                        "tile_scheduler_metadata", (torch.int32,), 2)
    splits = _torch_check(_as_torch_cuda(num_splits, "num_splits"), "num_splits",
                          (torch.int32,), 1)
    others = dict(k_cache=k_cache, indices=indices, tile_scheduler_metadata=meta,
                  num_splits=splits)
    if lengths is not None:
        others["topk_length"] = lengths
    _same_device("q", q, **others)
    b, s_q, h_q, d = q.shape
    num_blocks, page, h_kv, _ = k_cache.shape
    _check_sparse(q.shape, indices.shape, None if lengths is None else lengths.shape,
                  meta.shape, splits.shape)
    topk = _lib.int32_arg("topk (indices.shape[2])", indices.shape[2])
    softmax_scale = _scale(softmax_scale, d)
    head_dim_v = _lib.int32_arg("head_dim_v", head_dim_v)
    parts = meta.shape[0]
    ex, keep = _device_extras(extras, is_fp8_kvcache, q, b, s_q, h_q, h_kv)
    place = _cuda_exec(q)
    workspace, ws_bytes = _device_workspace(b * s_q, 1, h_q, parts, place, q.device)
    out = torch.empty((b, s_q, h_q, max(head_dim_v, 0)), dtype=torch.bfloat16, device=q.device)
    lse = torch.empty((b, h_q, s_q), dtype=torch.float32, device=q.device)
    fn = (_lib.lib().dinf_mla_sparse_decode_with_kvcache_fp8 if is_fp8_kvcache
          else _lib.lib().dinf_mla_sparse_decode_with_kvcache)
    fn(_dev(q, ctypes.c_uint16), b, s_q, h_q, d, kc, num_blocks, page, h_kv,
       k_cache.stride(0), k_cache.stride(1), _dev(indices, ctypes.c_int32), topk,
       None if lengths is None else _dev(lengths, ctypes.c_int32), head_dim_v,
       _dev(meta, ctypes.c_int32), parts, _dev(splits, ctypes.c_int32), softmax_scale,
       ctypes.c_void_p(workspace.data_ptr()), ws_bytes, _dev(out, ctypes.c_uint16),
       _dev(lse, ctypes.c_float), None if ex is None else ctypes.byref(ex), ctypes.byref(place))
    del keep  # (the caller's tensors; the call has queued its kernels)
    return out, lse


def empty_model1_kvcache(num_blocks, page_block_size, device=None):
    """An uninitialised MODEL1 cache as FlashMLA allocates one: pages of
    page_block_size * 584 bytes padded to a multiple of 576, returned as the
    [num_blocks, page_block_size, 1, 584] uint8 view the decode takes (numpy;
    a torch tensor on `device` when given)."""
    num_blocks = int(num_blocks)
    page = int(page_block_size)
    if num_blocks < 1 or not 1 <= page <= 65536:
        _fail("num_blocks=%d must be >= 1 and page_block_size=%d in [1, 65536]"
              % (num_blocks, page))
    padded = -(-page * MODEL1_TOKEN_BYTES // MODEL1_ROW_BYTES) * MODEL1_ROW_BYTES
    if device is not None:
        import torch

        flat = torch.empty((num_blocks, padded), dtype=torch.uint8, device=device)
        return flat[:, :page * MODEL1_TOKEN_BYTES].view(num_blocks, page, 1, MODEL1_TOKEN_BYTES)
    flat = np.empty((num_blocks, padded), np.uint8)
    return np.lib.stride_tricks.as_strided(
        flat, (num_blocks, page, 1, MODEL1_TOKEN_BYTES),
        (padded, MODEL1_TOKEN_BYTES, MODEL1_TOKEN_BYTES, 1))


def _quantize_model1(kv, slot_mapping, k_cache, num_threads):
    """quantize_kvcache_fp8 into the MODEL1 cache (kv [n, 1, 512])."""
    if kv.shape[1] != 1:
        _fail("MODEL1 kv must be [num_tokens, 1, 512] (one KV head), got %s" % (tuple(kv.shape),))
    if _on_device(kv):
        import torch

        slots = _torch_check(_as_torch_cuda(slot_mapping, "slot_mapping"), "slot_mapping",
                             (torch.int64,), 1)
        cache, _ = _device_cache(k_cache, True, MODEL1_HEAD_DIM)
        _same_device("kv", kv, slot_mapping=slots, k_cache=cache)
        if slots.shape[0] != kv.shape[0]:
            _fail("kv %s and slot_mapping %s disagree" % (tuple(kv.shape), tuple(slots.shape)))
        _lib.lib().dinf_mla_quantize_kvcache_model1(
            _dev(kv, ctypes.c_uint16), kv.shape[0], kv.stride(0), _dev(slots, ctypes.c_int64),
            _dev(cache, ctypes.c_uint8), cache.shape[0], cache.shape[1], cache.stride(0),
            ctypes.byref(_cuda_exec(kv)))
        return k_cache
    slots = np.asarray(slot_mapping)
    if slots.dtype.kind not in "iu" or slots.ndim != 1 or slots.shape[0] != kv.shape[0]:
        _fail("slot_mapping must be a 1-D integer array of %d entries" % kv.shape[0])
    slots = np.ascontiguousarray(slots, dtype=np.int64)
    if not isinstance(k_cache, np.ndarray) or not k_cache.flags.writeable:
        _fail("k_cache must be a writable numpy array (it is written in place)")
    cache, (num_blocks, page, _), page_stride, _ = _cpu_cache(k_cache, True, MODEL1_HEAD_DIM)
    _lib.lib().dinf_mla_quantize_kvcache_model1(
        _ptr(kv.view(np.uint16), ctypes.c_uint16), kv.shape[0], MODEL1_HEAD_DIM,
        _ptr(slots, ctypes.c_int64), ctypes.cast(cache.ctypes.data, ctypes.POINTER(ctypes.c_uint8)),
        num_blocks, page, page_stride, ctypes.byref(Exec.cpu(num_threads)))
    return k_cache


def quantize_kvcache_fp8(kv, slot_mapping, k_cache, *, num_threads=0):
    """Quantize tokens into an FP8 paged cache, in place, and return k_cache.

    kv: [num_tokens, h_kv, 576] bfloat16; slot_mapping: [num_tokens] int64
    (page * page_block_size + row, -1 = skip); k_cache: [num_blocks,
    page_block_size, h_kv, 656] uint8 (or float8_e4m3fn), last two
    dimensions contiguous. With kv [num_tokens, 1, 512] it writes the MODEL1
    cache (k_cache as empty_model1_kvcache makes it). numpy arrays run on the
    CPU, torch CUDA tensors on the GPU (current stream).
    """
    if _on_device(kv):
        import torch

        kv_t = _torch_check(_as_torch_cuda(kv, "kv"), "kv", (torch.bfloat16,), 3)
        if kv_t.shape[2] == MODEL1_HEAD_DIM:
            return _quantize_model1(kv_t, slot_mapping, k_cache, num_threads)
    else:
        kv_np = np.asarray(kv)
        if kv_np.ndim == 3 and kv_np.shape[2] == MODEL1_HEAD_DIM:
            return _quantize_model1(np.ascontiguousarray(_bf16_array(kv_np, "kv", 3)),
                                    slot_mapping, k_cache, num_threads)
    if _on_device(kv):
        import torch

        kv = _torch_check(_as_torch_cuda(kv, "kv"), "kv", (torch.bfloat16,), 3)
        slots = _torch_check(_as_torch_cuda(slot_mapping, "slot_mapping"), "slot_mapping",
                             (torch.int64,), 1)
        cache = _as_torch_cuda(k_cache, "k_cache")
        if cache.element_size() != 1 or cache.dim() != 4 or cache.shape[-1] != FP8_ENTRY_BYTES:
            _fail("k_cache must be [num_blocks, page_block_size, h_kv, %d] bytes, got %s %s"
                  % (FP8_ENTRY_BYTES, cache.dtype, tuple(cache.shape)))
        if cache.stride(3) != 1 or cache.stride(2) != FP8_ENTRY_BYTES:
            _fail("k_cache's last two dimensions must be contiguous")
        _same_device("kv", kv, slot_mapping=slots, k_cache=cache)
        if slots.shape[0] != kv.shape[0] or kv.shape[1] != cache.shape[2]:
            _fail("kv %s, slot_mapping %s and k_cache %s disagree"
                  % (tuple(kv.shape), tuple(slots.shape), tuple(cache.shape)))
        _lib.lib().dinf_mla_quantize_kvcache_fp8(
            _dev(kv, ctypes.c_uint16), kv.shape[0], kv.shape[1], kv.stride(0),
            _dev(slots, ctypes.c_int64), _dev(cache, ctypes.c_uint8), cache.shape[0],
            cache.shape[1], cache.stride(0), cache.stride(1), ctypes.byref(_cuda_exec(kv)))
        return k_cache
    kv = np.ascontiguousarray(_bf16_array(kv, "kv", 3))
    slots = np.asarray(slot_mapping)
    if slots.dtype.kind not in "iu" or slots.ndim != 1:
        _fail("slot_mapping must be a 1-D integer array")
    slots = np.ascontiguousarray(slots, dtype=np.int64)
    if not isinstance(k_cache, np.ndarray) or not k_cache.flags.c_contiguous:
        _fail("k_cache must be a C-contiguous numpy array (it is written in place)")
    cache = _fp8_cache_array(k_cache)
    if slots.shape[0] != kv.shape[0] or kv.shape[1] != cache.shape[2] or kv.shape[2] != 576:
        _fail("kv %s, slot_mapping %s and k_cache %s disagree"
              % (kv.shape, slots.shape, cache.shape))
    _lib.lib().dinf_mla_quantize_kvcache_fp8(
        _ptr(kv.view(np.uint16), ctypes.c_uint16), kv.shape[0], kv.shape[1],
        kv.shape[1] * HEAD_DIM_QK, _ptr(slots, ctypes.c_int64),
        _ptr(cache, ctypes.c_uint8), cache.shape[0], cache.shape[1],
        cache.shape[1] * cache.shape[2] * FP8_ENTRY_BYTES, cache.shape[2] * FP8_ENTRY_BYTES,
        ctypes.byref(Exec.cpu(num_threads)))
    return k_cache
